//! The sweep as an SVG chart.

use std::path::Path;

use kmemlab::error::Result;
use kmemlab::spec::format_size;
use plotters::prelude::*;

use super::measure::PointReport;
use crate::chart::{bounds, chart_error, short, write_file, CHART_WIDTH};

/// Height of the sweep chart's title, px.
const CHART_TITLE_HEIGHT: u32 = 50;
/// Height of one kind's panel in the sweep chart, px.
const CHART_PANEL_HEIGHT: u32 = 360;
/// A chart series: its name, its colour, and its figure of a measured point.
type Series = (&'static str, (u8, u8, u8), fn(&PointReport) -> Option<f64>);

/// The three series of a panel.
const CHART_SERIES: [Series; 3] = [
    ("in-kernel floor (BENCH)", (0x40, 0x40, 0x40), |r| {
        r.floor.as_ref().map(|f| f.pair_mean_ns as f64)
    }),
    ("single path (ALLOC+FREE)", (0xd6, 0x27, 0x28), |r| {
        r.single_ns_per_pair
    }),
    (
        "batched path (ALLOC_BATCH+FREE_BATCH)",
        (0x1f, 0x77, 0xb4),
        |r| r.batched_ns_per_pair,
    ),
];

/// The sweep as an SVG chart: one panel per kind measured, ns per alloc+free pair
/// against size (both log scale), the floor and both userspace paths. Skipped and failed
/// points are left out.
pub fn chart_svg(points: &[PointReport]) -> Result<String> {
    let measured: Vec<&PointReport> = points.iter().filter(|r| r.floor.is_some()).collect();
    let mut kinds: Vec<&str> = Vec::new();
    for r in &measured {
        if !kinds.contains(&r.kind.as_str()) {
            kinds.push(&r.kind);
        }
    }
    let panels = kinds.len().max(1) as u32;
    let height = CHART_TITLE_HEIGHT + panels * CHART_PANEL_HEIGHT;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (CHART_WIDTH, height)).into_drawing_area();
        draw_chart(&root, &measured, &kinds).map_err(chart_error)?;
        root.present().map_err(chart_error)?;
    }
    Ok(svg)
}

/// Draws [`chart_svg`]'s panels on `root`, all with the same axes.
fn draw_chart<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    measured: &[&PointReport],
    kinds: &[&str],
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let root = root.titled(
        "ns per alloc+free pair against size: in-kernel floor, single and batched path",
        ("sans-serif", 22),
    )?;
    let (xs, ys) = bounds(
        measured.iter().map(|r| r.size as f64),
        measured
            .iter()
            .flat_map(|r| CHART_SERIES.iter().filter_map(|(_, _, f)| f(r))),
    );
    // Ticks at powers of 8: 8, 64, 512, 4K, 32K, 256K, 2M...
    let ticks: Vec<f64> = (0..=21)
        .map(|i| 8f64.powi(i))
        .filter(|v| xs.contains(v))
        .collect();
    if kinds.is_empty() {
        root.draw(&Text::new(
            "no points measured",
            (20, 20),
            ("sans-serif", 18).into_font(),
        ))?;
        return Ok(());
    }
    for (area, &kind) in root.split_evenly((kinds.len(), 1)).iter().zip(kinds) {
        let mut chart = ChartBuilder::on(area)
            .caption(kind, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(
                xs.clone().log_scale().with_key_points(ticks.clone()),
                ys.clone().log_scale(),
            )?;
        chart
            .configure_mesh()
            .x_desc("size (bytes)")
            .y_desc("ns per alloc+free pair")
            .x_label_formatter(&|v| format_size(v.round() as u64))
            .y_label_formatter(&|v| short(*v))
            .draw()?;
        let of_kind: Vec<&&PointReport> = measured.iter().filter(|r| r.kind == kind).collect();
        for (name, (r, g, b), figure) in CHART_SERIES {
            let color = RGBColor(r, g, b);
            let mut line: Vec<(f64, f64)> = of_kind
                .iter()
                .filter_map(|p| figure(p).map(|v| (p.size as f64, v.max(1.0))))
                .collect();
            line.sort_by(|a, b| a.0.total_cmp(&b.0));
            chart.draw_series(line.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
            chart
                .draw_series(LineSeries::new(line, color.stroke_width(2)))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()?;
    }
    Ok(())
}

/// Writes [`chart_svg`] of `points` to `path`.
pub fn write_chart(path: &Path, points: &[PointReport]) -> Result<()> {
    write_file(path, &chart_svg(points)?)
}

#[cfg(test)]
mod tests {
    use kmemlab::MockDevice;

    use kmemlab::device::Device;
    use kmemlab::spec::{Flags, Kind};
    use kmemlab::uapi;

    use super::*;
    use crate::bench::measure::measure;
    use crate::bench::spec::SweepSpec;

    #[test]
    fn the_chart_has_a_panel_per_kind_measured() {
        let dev = MockDevice::new();
        let spec = SweepSpec {
            kinds: Some(vec![Kind::Kmalloc, Kind::Vmalloc, Kind::Kvmalloc]),
            sizes: Some(vec![64, 4096, 8 << 20]),
            iters: 20,
            ..SweepSpec::default()
        };
        let points: Vec<PointReport> = spec
            .points(&dev.info().unwrap())
            .iter()
            // kvmalloc only at 8M: failed points are left out, and its panel too.
            .filter(|p| p.kind != Kind::Kvmalloc || p.size == 8 << 20)
            .map(|p| {
                let flags = if p.kind == Kind::Kvmalloc {
                    Flags(uapi::FLAG_GFP_KERNEL | uapi::FLAG_DMA32)
                } else {
                    Flags::GFP_KERNEL
                };
                measure(&dev, p, flags)
            })
            .collect();
        assert!(points.last().unwrap().error.is_some(), "{points:?}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sweep.svg");
        write_chart(&path, &points).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(
            svg.starts_with("<svg") || svg.starts_with("<?xml"),
            "{svg:.100}"
        );
        assert!(svg.contains("ns per alloc+free pair"));
        // plotters writes each text on a line of its own.
        let text = |t: &str| svg.lines().any(|l| l.trim() == t);
        assert!(text("kmalloc") && text("vmalloc"), "kinds named");
        assert!(
            !svg.contains("kvmalloc"),
            "no panel for a kind without a measured point"
        );
        for (name, _, _) in CHART_SERIES {
            assert!(svg.contains(name.split(' ').next().unwrap()), "{name}");
        }
        assert!(text("4K") && text("64"), "sizes labelled like 4K");
        resvg::usvg::Tree::from_str(&svg, &resvg::usvg::Options::default()).expect("a valid SVG");
        // Nothing measured: still an SVG.
        assert!(chart_svg(&[]).unwrap().contains("no points measured"));
        // A file that cannot be written.
        let err = write_chart(&dir.path().join("no/such/dir.svg"), &points).unwrap_err();
        assert!(
            err.report().starts_with("failed to write"),
            "{}",
            err.report()
        );
    }
}
