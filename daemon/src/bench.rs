//! `kmemlabctl bench` as a sweep: for each kind and size, the in-kernel floor (BENCH),
//! the userspace single-call path (ALLOC then FREE, one ioctl each) and the batched path
//! (ALLOC_BATCH then FREE_BATCH of up to [`uapi::BATCH_MAX`]), with the same number of
//! pairs for all three, and the ratios of the userspace paths to the floor.

use kmemlab_uapi as uapi;
use kmemlab_uapi::{Alloc, Free, Info};
use serde::Serialize;

use crate::device::Device;
use crate::error::{Error, Result};
use crate::event::monotonic_ns;
use crate::report::{table, TimingReport};
use crate::spec::{format_size, Flags, Kind};

/// Smallest size of the default sweep.
pub const SWEEP_MIN: u64 = 8;
/// Largest size of the default sweep (included as the last point).
pub const SWEEP_MAX: u64 = 4 << 20;
/// Sizes from this one on are slow to allocate: their iterations are capped.
pub const BIG_SIZE: u64 = 1 << 20;
/// Most pairs measured for a size of at least [`BIG_SIZE`].
pub const BIG_SIZE_ITERS: u32 = 50;
/// Sweeps of at least this many points draw a progress bar.
pub const PROGRESS_POINTS: usize = 8;
/// Default pairs per point and path.
pub const DEFAULT_SWEEP_ITERS: u32 = 2000;

/// The default sizes from `min` to `max`: 8 B times powers of 4, then [`SWEEP_MAX`] as
/// the last point (8, 32, 128, 512, 2K, ... 2M, 4M), keeping those in `min..=max`.
pub fn default_sizes(min: u64, max: u64) -> Vec<u64> {
    let mut sizes = Vec::new();
    let mut s = SWEEP_MIN;
    while s <= SWEEP_MAX {
        sizes.push(s);
        s *= 4;
    }
    if sizes.last() != Some(&SWEEP_MAX) {
        sizes.push(SWEEP_MAX);
    }
    sizes.retain(|s| (min..=max).contains(s));
    sizes
}

/// Pairs measured at `size` when `iters` were asked for: capped at [`BIG_SIZE_ITERS`]
/// for big sizes and at the module's `max_bench_iters`.
pub fn iters_for(size: u64, iters: u32, max_bench_iters: u32) -> u32 {
    let iters = if size >= BIG_SIZE {
        iters.min(BIG_SIZE_ITERS)
    } else {
        iters
    };
    iters.min(max_bench_iters.max(1)).max(1)
}

/// Entries per ALLOC_BATCH at `size`: at most [`uapi::BATCH_MAX`], `iters`, and what the
/// module lets one opener hold at once (half its outstanding limits, leaving room for
/// others such as the daemon).
pub fn batch_for(size: u64, iters: u32, info: &Info) -> usize {
    let by_bytes = (info.max_outstanding_bytes / 2 / size.max(1)).max(1);
    let by_count = u64::from(info.max_outstanding_count / 2).max(1);
    [
        u64::from(uapi::BATCH_MAX),
        u64::from(iters),
        by_bytes,
        by_count,
    ]
    .into_iter()
    .min()
    .unwrap_or(1)
    .max(1) as usize
}

/// What to sweep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SweepSpec {
    /// Kinds, in order; `None`: every kind the module supports.
    pub kinds: Option<Vec<Kind>>,
    /// Sizes, in order; `None`: [`default_sizes`] between `min` and `max`.
    pub sizes: Option<Vec<u64>>,
    /// `--min`.
    pub min: u64,
    /// `--max`.
    pub max: u64,
    /// Gfp flags for every allocation.
    pub flags: Flags,
    /// Pairs per point and path, before the caps of [`iters_for`].
    pub iters: u32,
    /// Whether a progress bar may be drawn (`--no-progress` clears it).
    pub progress: bool,
}

impl Default for SweepSpec {
    fn default() -> Self {
        Self {
            kinds: None,
            sizes: None,
            min: SWEEP_MIN,
            max: SWEEP_MAX,
            flags: Flags::GFP_KERNEL,
            iters: DEFAULT_SWEEP_ITERS,
            progress: true,
        }
    }
}

/// One point of a sweep, before it is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PointSpec {
    /// The kind.
    pub kind: Kind,
    /// Bytes per allocation.
    pub size: u64,
    /// Pairs per path.
    pub iters: u32,
    /// Entries per batch.
    pub batch: usize,
    /// The kind's largest allocation, when `size` is above it (the point is skipped).
    pub too_big: Option<u64>,
}

impl SweepSpec {
    /// The points to measure, kind by kind, given the module's INFO.
    pub fn points(&self, info: &Info) -> Vec<PointSpec> {
        let kinds: Vec<Kind> = self.kinds.clone().unwrap_or_else(|| {
            Kind::ALL
                .into_iter()
                .filter(|k| info.kinds & (1 << k.abi()) != 0)
                .collect()
        });
        let sizes = self
            .sizes
            .clone()
            .unwrap_or_else(|| default_sizes(self.min, self.max));
        let mut points = Vec::new();
        for kind in kinds {
            let max = info.max_size[kind.abi() as usize];
            for &size in &sizes {
                let iters = iters_for(size, self.iters, info.max_bench_iters);
                points.push(PointSpec {
                    kind,
                    size,
                    iters,
                    batch: batch_for(size, iters, info),
                    too_big: (size > max).then_some(max),
                });
            }
        }
        points
    }
}

/// The BENCH figures of a point.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Floor {
    /// Allocation latency.
    pub alloc: TimingReport,
    /// Free latency.
    pub free: TimingReport,
    /// `alloc.mean_ns + free.mean_ns`: the floor of one pair.
    pub pair_mean_ns: u64,
}

/// One measured (or skipped, or failed) point, as `--json` prints it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PointReport {
    /// The kind.
    pub kind: String,
    /// Bytes per allocation.
    pub size: u64,
    /// Gfp flags.
    pub gfp: Vec<&'static str>,
    /// Pairs per path.
    pub iters: u32,
    /// Entries per ALLOC_BATCH/FREE_BATCH.
    pub batch: usize,
    /// In-kernel figures (BENCH).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub floor: Option<Floor>,
    /// Single-call path, ns per alloc+free pair.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub single_ns_per_pair: Option<f64>,
    /// Batched path, ns per alloc+free pair.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batched_ns_per_pair: Option<f64>,
    /// `single_ns_per_pair / floor.pair_mean_ns`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub single_ratio: Option<f64>,
    /// `batched_ns_per_pair / floor.pair_mean_ns`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batched_ratio: Option<f64>,
    /// Why the point was not measured: `"above max size N"`, or the error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// The errno name when a measurement failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Rounds to two decimals, so JSON and tables agree.
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// `ns / floor`, or `None` for a zero floor.
fn ratio(ns: f64, floor: u64) -> Option<f64> {
    (floor > 0).then(|| round2(ns / floor as f64))
}

/// Measures one point: BENCH, then `iters` single pairs, then `iters` pairs in
/// batches. A failure is reported in the point, not returned.
pub fn measure<D: Device + ?Sized>(dev: &D, p: &PointSpec, flags: Flags) -> PointReport {
    let mut r = PointReport {
        kind: p.kind.name().to_owned(),
        size: p.size,
        gfp: flags.gfp_names(),
        iters: p.iters,
        batch: p.batch,
        floor: None,
        single_ns_per_pair: None,
        batched_ns_per_pair: None,
        single_ratio: None,
        batched_ratio: None,
        skipped: None,
        error: None,
    };
    if let Some(max) = p.too_big {
        r.skipped = Some(format!("above max size {}", format_size(max)));
        return r;
    }
    let result = (|| -> Result<()> {
        let b = dev.bench(p.kind, p.size, flags, p.iters)?;
        let floor = b.alloc.mean_ns + b.free.mean_ns;
        r.floor = Some(Floor {
            alloc: TimingReport::from(&b.alloc),
            free: TimingReport::from(&b.free),
            pair_mean_ns: floor,
        });
        let single = single_path(dev, p.kind, p.size, flags, p.iters)?;
        r.single_ns_per_pair = Some(round2(single));
        r.single_ratio = ratio(single, floor);
        let batched = batched_path(dev, p.kind, p.size, flags, p.iters, p.batch)?;
        r.batched_ns_per_pair = Some(round2(batched));
        r.batched_ratio = ratio(batched, floor);
        Ok(())
    })();
    if let Err(e) = result {
        r.error = Some(e.errno_name());
        r.skipped = Some(e.report());
    }
    r
}

/// `iters` ALLOC+FREE ioctl pairs, timed with CLOCK_MONOTONIC around the whole loop;
/// ns per pair.
pub fn single_path<D: Device + ?Sized>(
    dev: &D,
    kind: Kind,
    size: u64,
    flags: Flags,
    iters: u32,
) -> Result<f64> {
    let start = monotonic_ns();
    for _ in 0..iters {
        let a = dev.alloc(kind, size, flags)?;
        dev.free(a.handle)?;
    }
    let elapsed = monotonic_ns().saturating_sub(start);
    Ok(elapsed as f64 / f64::from(iters.max(1)))
}

/// `iters` pairs as ALLOC_BATCH of `batch` entries then FREE_BATCH of them, repeated;
/// timed with CLOCK_MONOTONIC around the whole loop; ns per pair. The entry arrays are
/// filled before the clock starts and refilled inside the loop, as a client would.
pub fn batched_path<D: Device + ?Sized>(
    dev: &D,
    kind: Kind,
    size: u64,
    flags: Flags,
    iters: u32,
    batch: usize,
) -> Result<f64> {
    let batch = batch.clamp(1, uapi::BATCH_MAX as usize);
    let request = Alloc {
        kind: kind.abi(),
        flags: flags.bits(),
        size,
        ..Alloc::default()
    };
    let mut allocs = vec![request; batch];
    let mut frees = vec![Free::default(); batch];
    let mut left = iters as usize;
    let start = monotonic_ns();
    while left > 0 {
        let n = left.min(batch);
        allocs[..n].fill(request);
        let got = dev.alloc_batch(&mut allocs[..n])?;
        for (f, a) in frees.iter_mut().zip(&allocs[..got.done]) {
            *f = Free {
                handle: a.handle,
                ..Free::default()
            };
        }
        if got.done > 0 {
            let freed = dev.free_batch(&mut frees[..got.done])?;
            if let Some(source) = freed.error {
                return Err(Error::Ioctl {
                    cmd: "KMEMLAB_FREE_BATCH",
                    source,
                });
            }
        }
        if let Some(source) = got.error {
            return Err(Error::Ioctl {
                cmd: "KMEMLAB_ALLOC_BATCH",
                source,
            });
        }
        left -= n;
    }
    let elapsed = monotonic_ns().saturating_sub(start);
    Ok(elapsed as f64 / iters.max(1) as f64)
}

/// Column headers of the sweep table.
pub const HEADERS: [&str; 19] = [
    "KIND", "SIZE", "ITERS", "A_MIN", "A_P50", "A_P99", "A_MAX", "A_SD", "F_MIN", "F_P50", "F_P99",
    "F_MAX", "F_SD", "FLOOR", "SINGLE", "BATCH", "SINGLE_X", "BATCH_X", "NOTE",
];

/// Fixed column widths, so rows can be printed as they are measured.
const WIDTHS: [usize; 19] = [12, 5, 5, 8, 8, 9, 9, 9, 8, 8, 9, 9, 9, 9, 9, 9, 8, 7, 0];

fn row_cells(r: &PointReport) -> Vec<String> {
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
                  ALLOC_BATCH+FREE_BATCH); _X = ratio to FLOOR\n";
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
    use super::*;
    use crate::device::MockDevice;

    #[test]
    fn default_sizes_are_powers_of_four_from_8_then_4m() {
        assert_eq!(
            default_sizes(SWEEP_MIN, SWEEP_MAX),
            [
                8,
                32,
                128,
                512,
                2 << 10,
                8 << 10,
                32 << 10,
                128 << 10,
                512 << 10,
                2 << 20,
                4 << 20
            ]
        );
        assert_eq!(default_sizes(100, 10_000), [128, 512, 2048, 8192]);
        assert_eq!(default_sizes(4 << 20, 4 << 20), [4 << 20]);
        assert!(default_sizes(9, 31).is_empty());
    }

    #[test]
    fn big_sizes_get_fewer_iterations_and_smaller_batches() {
        assert_eq!(iters_for(64, 2000, 100_000), 2000);
        assert_eq!(iters_for(1 << 20, 2000, 100_000), BIG_SIZE_ITERS);
        assert_eq!(iters_for(64, 2000, 500), 500);
        let info = MockDevice::new().info().unwrap();
        assert_eq!(batch_for(64, 2000, &info), 256);
        assert_eq!(batch_for(64, 10, &info), 10);
        let b = batch_for(4 << 20, 50, &info) as u64;
        assert!(b >= 1 && b * (4 << 20) <= info.max_outstanding_bytes, "{b}");
    }

    #[test]
    fn points_skip_sizes_above_the_kinds_limit() {
        let dev = MockDevice::new();
        let info = dev.info().unwrap();
        let points = SweepSpec::default().points(&info);
        let kinds = Kind::ALL
            .iter()
            .filter(|k| info.kinds & (1 << k.abi()) != 0)
            .count();
        assert_eq!(points.len(), kinds * 11);
        for p in &points {
            let max = info.max_size[p.kind.abi() as usize];
            assert_eq!(p.too_big.is_some(), p.size > max, "{p:?}");
        }
    }

    #[test]
    fn a_point_has_floor_paths_and_ratios() {
        let dev = MockDevice::new();
        let info = dev.info().unwrap();
        let spec = SweepSpec {
            kinds: Some(vec![Kind::Kmalloc]),
            sizes: Some(vec![64]),
            iters: 600,
            ..SweepSpec::default()
        };
        let p = spec.points(&info)[0];
        assert_eq!((p.iters, p.batch), (600, 256));
        let r = measure(&dev, &p, Flags::GFP_KERNEL);
        assert_eq!(r.error, None, "{r:?}");
        assert_eq!(r.floor.as_ref().unwrap().pair_mean_ns, 120 + 70);
        assert!(r.single_ns_per_pair.unwrap() > 0.0);
        assert!(r.batched_ratio.unwrap() > 0.0);
        assert!(dev.live().is_empty(), "every allocation is freed");
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["floor"]["alloc"]["p99_ns"], 300);
        assert_eq!(v["kind"], "kmalloc");
        assert!(v.get("skipped").is_none());
        let text = to_table(std::slice::from_ref(&r));
        assert!(text.starts_with("KIND"), "{text}");
        assert!(table_row(&r).starts_with("kmalloc"));
    }
}
