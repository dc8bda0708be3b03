//! The log report's charts: allocation latency against size per kind, and a per-press
//! timeline, as SVG or a self-contained HTML page.

use kmemlab::error::Result;
use kmemlab::spec::Kind;
use plotters::prelude::*;

use super::summary::{kind_order, LogReport};
use crate::chart::{bounds, chart_error, short, CHART_WIDTH};

/// Height of the chart image (both panels), px.
pub const CHART_HEIGHT: u32 = 900;

/// The colour of each kind in the charts, in [`Kind::ALL`] order.
pub const KIND_COLORS: [(u8, u8, u8); 5] = [
    (0x1f, 0x77, 0xb4), // kmalloc: blue
    (0xff, 0x7f, 0x0e), // vmalloc: orange
    (0x2c, 0xa0, 0x2c), // dma_coherent: green
    (0xd6, 0x27, 0x28), // kvmalloc: red
    (0x94, 0x67, 0xbd), // pages: purple
];

/// The colour of interrupt latency in the timeline.
pub const IRQ_COLOR: (u8, u8, u8) = (0x40, 0x40, 0x40);

/// The chart colour of kind `name` (grey for a kind this version does not know).
pub fn kind_color(name: &str) -> RGBColor {
    let (r, g, b) = Kind::ALL
        .iter()
        .position(|k| k.name() == name)
        .map_or((0x7f, 0x7f, 0x7f), |i| KIND_COLORS[i]);
    RGBColor(r, g, b)
}

impl LogReport {
    /// Both charts, as one SVG document: allocation latency against size per kind
    /// (log-log) above, the per-press timeline below.
    pub fn to_svg(&self) -> Result<String> {
        let mut svg = String::new();
        {
            let root =
                SVGBackend::with_string(&mut svg, (CHART_WIDTH, CHART_HEIGHT)).into_drawing_area();
            self.draw(&root).map_err(chart_error)?;
            root.present().map_err(chart_error)?;
        }
        Ok(svg)
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, plotters::coord::Shift>,
    ) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        root.fill(&WHITE)?;
        let (top, bottom) = root.split_vertically(CHART_HEIGHT / 2);
        self.draw_sizes(&top)?;
        self.draw_timeline(&bottom)
    }

    /// The kinds that have allocations, in chart order.
    fn alloc_kinds(&self) -> Vec<String> {
        let mut kinds: Vec<String> = self.allocs.iter().map(|a| a.kind.clone()).collect();
        kinds.sort_by_key(|n| (kind_order(n), n.clone()));
        kinds.dedup();
        kinds
    }

    fn draw_sizes<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, plotters::coord::Shift>,
    ) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        let (xs, ys) = bounds(
            self.allocs.iter().map(|a| a.size as f64),
            self.allocs.iter().map(|a| a.alloc_ns as f64),
        );
        let mut chart = ChartBuilder::on(area)
            .caption("allocation latency against size", ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(xs.log_scale(), ys.log_scale())?;
        chart
            .configure_mesh()
            .x_desc("size (bytes)")
            .y_desc("alloc latency (ns)")
            .x_label_formatter(&|v| short(*v))
            .y_label_formatter(&|v| short(*v))
            .draw()?;
        for kind in self.alloc_kinds() {
            let color = kind_color(&kind);
            chart
                .draw_series(
                    self.allocs.iter().filter(|a| a.kind == kind).map(|a| {
                        Circle::new((a.size as f64, a.alloc_ns as f64), 4, color.filled())
                    }),
                )?
                .label(kind)
                .legend(move |(x, y)| Circle::new((x + 10, y), 4, color.filled()));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
    }

    fn draw_timeline<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, plotters::coord::Shift>,
    ) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        let (_, ys) = bounds(
            self.presses.iter().map(|p| p.seq as f64),
            self.presses.iter().flat_map(|p| {
                [p.irq_to_wake_ns, p.alloc_ns, p.free_ns]
                    .into_iter()
                    .flatten()
                    .map(|v| v as f64)
            }),
        );
        // The press axis is linear: from 0 to one past the last press.
        let last = self.presses.iter().map(|p| p.seq).max().unwrap_or(1);
        let xs = 0.0..(last + 1) as f64;
        let mut chart = ChartBuilder::on(area)
            .caption("per-press timeline", ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            // Headroom above the data for the legend.
            .build_cartesian_2d(xs, (ys.start..ys.end * 8.0).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("press (seq)")
            .y_desc("latency (ns)")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| short(*v))
            .draw()?;
        let irq: Vec<(f64, f64)> = self
            .presses
            .iter()
            .filter_map(|p| p.irq_to_wake_ns.map(|v| (p.seq as f64, v as f64)))
            .collect();
        let (r, g, b) = IRQ_COLOR;
        let grey = RGBColor(r, g, b);
        chart
            .draw_series(LineSeries::new(irq.clone(), grey.stroke_width(2)))?
            .label("irq_to_wake_ns")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], grey.stroke_width(2))
            });
        chart.draw_series(irq.iter().map(|&p| Circle::new(p, 3, grey.filled())))?;
        let mut kinds: Vec<String> = self.presses.iter().map(|p| p.kind.clone()).collect();
        kinds.sort_by_key(|n| (kind_order(n), n.clone()));
        kinds.dedup();
        for kind in kinds {
            let color = kind_color(&kind);
            let of_kind = || self.presses.iter().filter(|p| p.kind == kind);
            chart
                .draw_series(of_kind().filter_map(|p| {
                    p.alloc_ns
                        .map(|v| Circle::new((p.seq as f64, v as f64), 5, color.filled()))
                }))?
                .label(format!("{kind} alloc_ns"))
                .legend(move |(x, y)| Circle::new((x + 10, y), 5, color.filled()));
            chart
                .draw_series(of_kind().filter_map(|p| {
                    p.free_ns
                        .map(|v| TriangleMarker::new((p.seq as f64, v as f64), 6, color.filled()))
                }))?
                .label(format!("{kind} free_ns"))
                .legend(move |(x, y)| TriangleMarker::new((x + 10, y), 6, color.filled()));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
    }

    /// A self-contained HTML page: the summary table and the charts inline.
    pub fn to_html(&self, title: &str) -> Result<String> {
        let svg = self.to_svg()?;
        let svg = svg
            .find("<svg")
            .map_or(svg.as_str(), |i| &svg[i..])
            .to_owned();
        let mut rows = String::new();
        for k in &self.kinds {
            rows.push_str("<tr>");
            for cell in k.cells() {
                rows.push_str(&format!("<td>{}</td>", escape(&cell)));
            }
            rows.push_str("</tr>\n");
        }
        let head: String = Self::HEADERS
            .iter()
            .map(|h| format!("<th>{}</th>", h.to_lowercase().replace('_', " ")))
            .collect();
        Ok(format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <title>kmemlab report: {title}</title>\n<style>\n\
             body {{ font-family: sans-serif; margin: 2em; }}\n\
             table {{ border-collapse: collapse; }}\n\
             th, td {{ border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }}\n\
             td:first-child {{ text-align: left; }}\n\
             </style>\n</head>\n<body>\n<h1>kmemlab report: {title}</h1>\n\
             <table>\n<tr>{head}</tr>\n{rows}</table>\n<p>{footer}</p>\n{svg}\n</body>\n</html>\n",
            title = escape(title),
            footer = escape(self.footer().trim_end()),
        ))
    }
}

/// Escapes text for HTML.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::logreport::summary::tests::LOG;

    #[test]
    fn svg_and_html_hold_the_charts() {
        let r = LogReport::parse(LOG);
        let svg = r.to_svg().unwrap();
        assert!(svg.contains("<svg"));
        assert!(svg.contains("allocation latency against size"));
        assert!(svg.contains("per-press timeline"));
        let html = r.to_html("x.jsonl").unwrap();
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("<svg"));
        assert!(html.contains("<td>kmalloc</td>"));
        // An empty log still draws empty axes.
        assert!(LogReport::parse("").to_svg().unwrap().contains("<svg"));
    }
}
