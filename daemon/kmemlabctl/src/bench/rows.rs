//! The sweep as a table, a row printed as each point is measured.

use kmemlab::report::TimingReport;
use kmemlab::spec::format_size;

use super::measure::PointReport;
use crate::table::table;

/// Column headers of the sweep table.
pub const HEADERS: [&str; 21] = [
    "KIND", "SIZE", "ITERS", "A_MIN", "A_P50", "A_P99", "A_MAX", "A_SD", "F_MIN", "F_P50", "F_P99",
    "F_MAX", "F_SD", "FLOOR", "SINGLE", "BATCH", "SINGLE_X", "BATCH_X", "NOP", "SINGLE_B", "NOTE",
];

/// Fixed column widths, so rows can be printed as they are measured.
const WIDTHS: [usize; 21] = [
    12, 5, 5, 8, 8, 9, 9, 9, 8, 8, 9, 9, 9, 9, 9, 9, 8, 7, 6, 8, 0,
];

pub(super) fn row_cells(r: &PointReport) -> Vec<String> {
    let dash = || "-".to_owned();
    let t = |f: Option<&TimingReport>| -> Vec<String> {
        match f {
            Some(t) => vec![
                t.min_ns.to_string(),
                t.p50_ns.to_string(),
                t.p99_ns.to_string(),
                t.max_ns.to_string(),
                t.stddev_ns.to_string(),
            ],
            None => vec![dash(); 5],
        }
    };
    let mut cells = vec![r.kind.clone(), format_size(r.size), r.iters.to_string()];
    cells.extend(t(r.floor.as_ref().map(|f| &f.alloc)));
    cells.extend(t(r.floor.as_ref().map(|f| &f.free)));
    cells.push(
        r.floor
            .as_ref()
            .map_or_else(dash, |f| f.pair_mean_ns.to_string()),
    );
    let ns = |v: Option<f64>| v.map_or_else(dash, |v| format!("{v:.0}"));
    let x = |v: Option<f64>| v.map_or_else(dash, |v| format!("{v:.2}x"));
    cells.push(ns(r.single_ns_per_pair));
    cells.push(ns(r.batched_ns_per_pair));
    cells.push(x(r.single_ratio));
    cells.push(x(r.batched_ratio));
    cells.push(ns(r.round_trip.map(|t| t.nop_ns)));
    cells.push(x(r.single_bound_ratio));
    cells.push(r.skipped.clone().unwrap_or_default());
    cells
}

fn fixed_line(cells: &[String]) -> String {
    let mut line = String::new();
    for (i, (cell, w)) in cells.iter().zip(WIDTHS).enumerate() {
        if i > 0 {
            line.push(' ');
        }
        if i == 0 || i == WIDTHS.len() - 1 {
            line.push_str(&format!("{cell:<w$}"));
        } else {
            line.push_str(&format!("{cell:>w$}"));
        }
    }
    line.trim_end().to_owned() + "\n"
}

/// The header lines of the sweep table: a legend, then the column names.
pub fn table_header() -> String {
    let legend = "# ns; A_/F_ = in-kernel alloc/free (BENCH); FLOOR = alloc mean + free mean per \
                  pair;\n# SINGLE/BATCH = userspace ns per pair (ALLOC+FREE ioctls / \
                  ALLOC_BATCH+FREE_BATCH); _X = ratio to FLOOR;\n# NOP = ns per bare ioctl \
                  round trip; SINGLE_B = SINGLE / (FLOOR + 2 NOP), the single path against \
                  its bound\n";
    let names: Vec<String> = HEADERS.iter().map(|s| s.to_string()).collect();
    legend.to_owned() + &fixed_line(&names)
}

/// One row of the sweep table.
pub fn table_row(r: &PointReport) -> String {
    fixed_line(&row_cells(r))
}

/// The whole sweep as an aligned table (for tests and non-streaming use).
pub fn to_table(points: &[PointReport]) -> String {
    let names: Vec<&str> = HEADERS.to_vec();
    table(&names, points.iter().map(row_cells).collect())
}

#[cfg(test)]
mod tests {
    use kmemlab::device::Device;
    use kmemlab::spec::{Flags, Kind};
    use kmemlab::MockDevice;

    use super::*;
    use crate::bench::measure::{bound_ratio, measure, round2, single_bound};
    use crate::bench::spec::kmalloc_64;

    #[test]
    fn a_point_has_floor_paths_and_ratios() {
        let dev = MockDevice::new();
        let p = kmalloc_64(&dev, 600, 1);
        assert_eq!((p.iters, p.batch), (600, 256));
        let r = measure(&dev, &p, Flags::GFP_KERNEL);
        assert_eq!(r.error, None, "{r:?}");
        assert_eq!(r.floor.as_ref().unwrap().pair_mean_ns, 120 + 70);
        assert!(r.single_ns_per_pair.unwrap() > 0.0);
        assert!(r.batched_ratio.unwrap() > 0.0);
        assert!(dev.live().is_empty(), "every allocation is freed");
        let v = serde_json::to_value(&r).unwrap();
        let (b, [alloc, _]) = MockDevice::new()
            .bench_hist(Kind::Kmalloc, 64, Flags::GFP_KERNEL, 600)
            .unwrap();
        assert_eq!(v["floor"]["alloc"]["p99_ns"], b.alloc.p99_ns);
        assert_eq!(Some(b.alloc.p99_ns), alloc.p99());
        assert_eq!(v["kind"], "kmalloc");
        assert!(v.get("skipped").is_none());
        let text = to_table(std::slice::from_ref(&r));
        assert!(text.starts_with("KIND"), "{text}");
        assert!(table_row(&r).starts_with("kmalloc"));
    }

    #[test]
    fn round_trips_and_the_single_bound_add_up() {
        // The arithmetic: floor 190, NOP 25.5: the pair cannot go below 241 ns.
        assert_eq!(single_bound(190, 25.5), 241.0);
        assert_eq!(bound_ratio(482.0, 241.0), Some(2.0));
        assert_eq!(bound_ratio(100.0, 300.0), Some(0.33));
        assert_eq!(bound_ratio(100.0, 0.0), None);

        let dev = MockDevice::new();
        let p = kmalloc_64(&dev, 1000, 3);
        let infos = dev.info_calls();
        let r = measure(&dev, &p, Flags::GFP_KERNEL);
        assert_eq!(r.error, None, "{r:?}");
        // As many NOPs and INFOs as pairs, between the BENCH calls, round by round.
        assert_eq!((dev.nop_calls(), dev.info_calls() - infos), (1000, 1000));
        let calls = dev.calls();
        let at: Vec<usize> = (0..calls.len())
            .filter(|&i| calls[i].starts_with("bench"))
            .collect();
        let nops = calls[at[0]..at[1]].iter().filter(|c| *c == "nop").count();
        assert_eq!(nops, 334);
        let rt = r.round_trip.unwrap();
        assert!(rt.nop_ns > 0.0 && rt.info_ns > 0.0, "{rt:?}");
        assert_eq!(rt.nop_ns, round2(rt.nop_ns));
        let floor = r.floor.as_ref().unwrap().pair_mean_ns;
        let bound = r.single_bound_ns.unwrap();
        assert!(
            (bound - (floor as f64 + 2.0 * rt.nop_ns)).abs() < 1e-9,
            "{r:?}"
        );
        let single = r.single_ns_per_pair.unwrap();
        let want = single / bound;
        assert!(
            (r.single_bound_ratio.unwrap() - want).abs() <= 0.006,
            "{r:?}"
        );
        // In the JSON, and in the table.
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["round_trip"]["nop_ns"].as_f64(), Some(rt.nop_ns));
        assert_eq!(v["round_trip"]["info_ns"].as_f64(), Some(rt.info_ns));
        assert_eq!(v["single_bound_ns"].as_f64(), Some(bound));
        assert_eq!(v["live"], 0);
        let header = table_header();
        assert!(header.contains(" NOP SINGLE_B"), "{header}");
        assert!(
            header.contains("SINGLE_B = SINGLE / (FLOOR + 2 NOP)"),
            "{header}"
        );
        let row = table_row(&r);
        let ratio = format!("{:.2}x", r.single_bound_ratio.unwrap());
        assert!(row.trim_end().ends_with(&ratio), "{row}");
        assert!(dev.live().is_empty());
    }

    #[test]
    fn without_nop_the_point_is_measured_without_round_trips() {
        let dev = MockDevice::new().without_nop();
        let p = kmalloc_64(&dev, 300, 3);
        let infos = dev.info_calls();
        let r = measure(&dev, &p, Flags::GFP_KERNEL);
        assert_eq!((r.error.as_deref(), r.skipped.as_deref()), (None, None));
        assert!(r.floor.is_some() && r.single_ratio.is_some() && r.batched_ratio.is_some());
        assert_eq!(r.round_trip, None);
        assert_eq!((r.single_bound_ns, r.single_bound_ratio), (None, None));
        // Asked once; no INFO loop without NOP.
        assert_eq!((dev.nop_calls(), dev.info_calls() - infos), (1, 0));
        let v = serde_json::to_value(&r).unwrap();
        for key in ["round_trip", "single_bound_ns", "single_bound_ratio"] {
            assert!(v.get(key).is_none(), "{key}: {v}");
        }
        let cells = row_cells(&r);
        assert_eq!(cells[HEADERS.len() - 3..HEADERS.len() - 1], ["-", "-"]);
    }
}
