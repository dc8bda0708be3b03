//! `kmemlabctl bench` as a sweep: for each kind and size, the in-kernel floor (BENCH),
//! the userspace single-call path (ALLOC then FREE, one ioctl each) and the batched path
//! (ALLOC_BATCH then FREE_BATCH of up to [`uapi::BATCH_MAX`]), with the same number of
//! pairs for all three, and the ratios of the userspace paths to the floor.
//!
//! With `rounds` above 1 the three paths take turns: each round measures all three on its
//! share of the pairs, so that a slow stretch of the machine (under emulation, the host taking
//! the guest's CPU away) weighs on the floor and the userspace paths alike. The ratios are then
//! of the totals over all rounds.
//!
//! Each round also times bare round trips through the module: NOP ioctls (nothing done,
//! nothing copied) and INFO ioctls (a struct copied out), as many as the round's pairs. A
//! single ALLOC+FREE pair cannot cost less than the floor plus two NOPs: the `single_bound`
//! figures say how far the single path is from that bound. A module older than NOP
//! (`ENOTTY`) leaves them out.

use std::path::{Path, PathBuf};

use kmemlab::uapi;
use kmemlab::uapi::{Alloc, Free, Info};
use nix::errno::Errno;
use plotters::prelude::*;
use serde::Serialize;

use crate::logreport::{bounds, chart_error, short, write_file, CHART_WIDTH};
use crate::table::table;
use kmemlab::clock::monotonic_ns;
use kmemlab::device::Device;
use kmemlab::error::{Error, Result};
use kmemlab::report::TimingReport;
use kmemlab::spec::{format_size, Flags, Kind};

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
/// Bytes of each allocation `--live` holds (kmalloc).
pub const LIVE_SIZE: u64 = 64;

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
    /// Rounds the pairs of a point are split into (`--rounds`; see the module documentation).
    pub rounds: u32,
    /// Whether a progress bar may be drawn (`--no-progress` clears it).
    pub progress: bool,
    /// Allocations (kmalloc, [`LIVE_SIZE`] bytes) held for the whole sweep (`--live`).
    pub live: u32,
    /// Where to draw the chart after the sweep (`--chart`).
    pub chart: Option<PathBuf>,
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
            rounds: 1,
            progress: true,
            live: 0,
            chart: None,
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
    /// Rounds asked for ([`measure`] makes at most `iters` of them).
    pub rounds: u32,
    /// The kind's largest allocation, when `size` is above it (the point is skipped).
    pub too_big: Option<u64>,
    /// Allocations held in the module while the point is measured.
    pub live: u32,
}

impl SweepSpec {
    /// The points to measure, kind by kind, given the module's INFO. Batches leave room
    /// for the `live` allocations held.
    pub fn points(&self, info: &Info) -> Vec<PointSpec> {
        let room = Info {
            max_outstanding_count: info.max_outstanding_count.saturating_sub(self.live),
            max_outstanding_bytes: info
                .max_outstanding_bytes
                .saturating_sub(u64::from(self.live) * LIVE_SIZE),
            ..*info
        };
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
                    batch: batch_for(size, iters, &room),
                    rounds: self.rounds,
                    too_big: (size > max).then_some(max),
                    live: self.live,
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

/// Bare round trips of a point, timed from userspace: ns per call over all rounds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct RoundTrip {
    /// NOP: system call, file and the module's dispatch, nothing done.
    pub nop_ns: f64,
    /// INFO: the same and a struct copied out to userspace.
    pub info_ns: f64,
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
    /// Rounds the pairs were split into: as asked, but at least 1 and at most `iters`.
    pub rounds: u32,
    /// Live allocations the sweep held in the module while the point was measured
    /// (`--live`; 0 without).
    pub live: u32,
    /// In-kernel figures (BENCH). Over several rounds, min, max, mean and standard deviation
    /// are those of all the pairs; p50 and p99 are the medians of the rounds' own.
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
    /// Bare round trips, ns per call; `None` when the module has no NOP (`ENOTTY`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub round_trip: Option<RoundTrip>,
    /// `floor.pair_mean_ns + 2 * round_trip.nop_ns`: what one ALLOC+FREE pair cannot go
    /// below (the allocator's own cost and two bare round trips).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub single_bound_ns: Option<f64>,
    /// `single_ns_per_pair / single_bound_ns`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub single_bound_ratio: Option<f64>,
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

/// `pair_mean_ns + 2 * nop_ns`: the least one ALLOC+FREE ioctl pair can cost.
pub fn single_bound(pair_mean_ns: u64, nop_ns: f64) -> f64 {
    pair_mean_ns as f64 + 2.0 * nop_ns
}

/// `single / bound`, or `None` for a bound that is not positive.
pub fn bound_ratio(single: f64, bound: f64) -> Option<f64> {
    (bound > 0.0).then(|| round2(single / bound))
}

/// Measures one point: in each round BENCH, the single pairs, the pairs in batches, then
/// as many NOP and INFO round trips. A failure is reported in the point, not returned;
/// `ENOTTY` from NOP only leaves the round-trip figures out.
pub fn measure<D: Device + ?Sized>(dev: &D, p: &PointSpec, flags: Flags) -> PointReport {
    let mut r = PointReport {
        kind: p.kind.name().to_owned(),
        size: p.size,
        gfp: flags.gfp_names(),
        iters: p.iters,
        batch: p.batch,
        rounds: p.rounds.clamp(1, p.iters.max(1)),
        live: p.live,
        floor: None,
        single_ns_per_pair: None,
        batched_ns_per_pair: None,
        single_ratio: None,
        batched_ratio: None,
        round_trip: None,
        single_bound_ns: None,
        single_bound_ratio: None,
        skipped: None,
        error: None,
    };
    if let Some(max) = p.too_big {
        r.skipped = Some(format!("above max size {}", format_size(max)));
        return r;
    }
    let result = (|| -> Result<()> {
        let rounds = r.rounds;
        let (mut allocs, mut frees) = (Vec::new(), Vec::new());
        let (mut single, mut batched) = (0.0, 0.0);
        // Round trips, while the module answers NOP.
        let (mut nop, mut info, mut has_nop) = (0.0, 0.0, true);
        for round in 0..rounds {
            // This round's share of the pairs.
            let n = p.iters / rounds + u32::from(round < p.iters % rounds);
            let b = dev.bench(p.kind, p.size, flags, n)?;
            allocs.push((n, b.alloc));
            frees.push((n, b.free));
            single += single_path(dev, p.kind, p.size, flags, n)? * f64::from(n);
            let batch = p.batch.min(n as usize);
            batched += batched_path(dev, p.kind, p.size, flags, n, batch)? * f64::from(n);
            if has_nop {
                match nop_path(dev, n) {
                    Ok(ns) => {
                        nop += ns * f64::from(n);
                        info += info_path(dev, n)? * f64::from(n);
                    }
                    Err(e) if e.errno() == Errno::ENOTTY => has_nop = false,
                    Err(e) => return Err(e),
                }
            }
        }
        let (alloc, free) = (merge(&allocs), merge(&frees));
        let floor = alloc.mean_ns + free.mean_ns;
        r.floor = Some(Floor {
            alloc,
            free,
            pair_mean_ns: floor,
        });
        let pairs = f64::from(p.iters.max(1));
        let (single, batched) = (single / pairs, batched / pairs);
        r.single_ns_per_pair = Some(round2(single));
        r.single_ratio = ratio(single, floor);
        r.batched_ns_per_pair = Some(round2(batched));
        r.batched_ratio = ratio(batched, floor);
        if has_nop {
            let rt = RoundTrip {
                nop_ns: round2(nop / pairs),
                info_ns: round2(info / pairs),
            };
            // From the rounded figure, so that the JSON adds up.
            let bound = single_bound(floor, rt.nop_ns);
            r.round_trip = Some(rt);
            r.single_bound_ns = Some(round2(bound));
            r.single_bound_ratio = bound_ratio(single, bound);
        }
        Ok(())
    })();
    if let Err(e) = result {
        r.error = Some(e.errno_name());
        r.skipped = Some(e.report());
    }
    r
}

/// The figures of BENCH calls of `n` pairs each, as one: min, max, mean and standard deviation
/// of all their pairs; p50 and p99 the medians of the calls' own (upper median for an even
/// count).
pub fn merge(parts: &[(u32, uapi::Timing)]) -> TimingReport {
    if let [(_, t)] = parts {
        return TimingReport::from(t);
    }
    let n: f64 = parts.iter().map(|(n, _)| f64::from(*n)).sum();
    if n == 0.0 {
        return TimingReport::from(&uapi::Timing::default());
    }
    let mean = parts
        .iter()
        .map(|(k, t)| f64::from(*k) * t.mean_ns as f64)
        .sum::<f64>()
        / n;
    let mean_sq = parts
        .iter()
        .map(|(k, t)| {
            let (m, sd) = (t.mean_ns as f64, t.stddev_ns as f64);
            f64::from(*k) * (sd * sd + m * m)
        })
        .sum::<f64>()
        / n;
    let median = |f: fn(&uapi::Timing) -> u64| {
        let mut v: Vec<u64> = parts.iter().map(|(_, t)| f(t)).collect();
        v.sort_unstable();
        v[v.len() / 2]
    };
    TimingReport {
        min_ns: parts.iter().map(|(_, t)| t.min_ns).min().unwrap_or(0),
        p50_ns: median(|t| t.p50_ns),
        p99_ns: median(|t| t.p99_ns),
        max_ns: parts.iter().map(|(_, t)| t.max_ns).max().unwrap_or(0),
        mean_ns: mean.round() as u64,
        stddev_ns: (mean_sq - mean * mean).max(0.0).sqrt().round() as u64,
    }
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

/// `iters` NOP ioctls, timed with CLOCK_MONOTONIC around the whole loop; ns per call.
/// `ENOTTY` from a module older than NOP.
pub fn nop_path<D: Device + ?Sized>(dev: &D, iters: u32) -> Result<f64> {
    let start = monotonic_ns();
    for _ in 0..iters {
        dev.nop()?;
    }
    let elapsed = monotonic_ns().saturating_sub(start);
    Ok(elapsed as f64 / f64::from(iters.max(1)))
}

/// `iters` INFO ioctls, timed with CLOCK_MONOTONIC around the whole loop; ns per call.
pub fn info_path<D: Device + ?Sized>(dev: &D, iters: u32) -> Result<f64> {
    let start = monotonic_ns();
    for _ in 0..iters {
        dev.info()?;
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

/// The allocations `--live N` holds for a sweep: N kmalloc allocations of [`LIVE_SIZE`]
/// bytes, made with ALLOC_BATCH, freed with FREE_BATCH by [`LiveSet::release`], or on drop
/// when the sweep ends early.
#[derive(Debug)]
pub struct LiveSet<'a, D: Device + ?Sized> {
    dev: &'a D,
    handles: Vec<u64>,
}

impl<'a, D: Device + ?Sized> LiveSet<'a, D> {
    /// Allocates `count` of them, [`uapi::BATCH_MAX`] per call (none for 0). When the
    /// module refuses one, those made so far are freed and the error says how many
    /// there were.
    pub fn hold(dev: &'a D, count: u32) -> Result<Self> {
        let mut set = Self {
            dev,
            handles: Vec::with_capacity(count as usize),
        };
        let request = Alloc {
            kind: Kind::Kmalloc.abi(),
            flags: Flags::GFP_KERNEL.bits(),
            size: LIVE_SIZE,
            ..Alloc::default()
        };
        let mut entries = vec![request; (uapi::BATCH_MAX as usize).min(count as usize)];
        let fail = |held: usize, source: Error| Error::LiveFill {
            wanted: count,
            held,
            source: Box::new(source),
        };
        while set.handles.len() < count as usize {
            let n = entries.len().min(count as usize - set.handles.len());
            entries[..n].fill(request);
            let got = match dev.alloc_batch(&mut entries[..n]) {
                Ok(got) => got,
                Err(e) => return Err(fail(set.handles.len(), e)),
            };
            set.handles
                .extend(entries[..got.done.min(n)].iter().map(|a| a.handle));
            if let Some(source) = got.error {
                let cmd = "KMEMLAB_ALLOC_BATCH";
                return Err(fail(set.handles.len(), Error::Ioctl { cmd, source }));
            }
            if got.done == 0 {
                // No progress and no error: the module broke its word.
                let e = Error::Ioctl {
                    cmd: "KMEMLAB_ALLOC_BATCH",
                    source: Errno::EPROTO,
                };
                return Err(fail(set.handles.len(), e));
            }
        }
        Ok(set)
    }

    /// How many are held.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Frees them all, [`uapi::BATCH_MAX`] per FREE_BATCH; the first failure is returned
    /// after trying the rest.
    pub fn release(mut self) -> Result<()> {
        self.free_all()
    }

    fn free_all(&mut self) -> Result<()> {
        let handles = std::mem::take(&mut self.handles);
        let mut first = None;
        for chunk in handles.chunks(uapi::BATCH_MAX as usize) {
            let mut frees: Vec<Free> = chunk
                .iter()
                .map(|&handle| Free {
                    handle,
                    ..Free::default()
                })
                .collect();
            let res = self
                .dev
                .free_batch(&mut frees)
                .and_then(|got| match got.error {
                    Some(source) => Err(Error::Ioctl {
                        cmd: "KMEMLAB_FREE_BATCH",
                        source,
                    }),
                    None => Ok(()),
                });
            if let Err(e) = res {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl<D: Device + ?Sized> Drop for LiveSet<'_, D> {
    fn drop(&mut self) {
        if let Err(e) = self.free_all() {
            tracing::warn!("failed to free the --live allocations: {}", e.report());
        }
    }
}

/// Column headers of the sweep table.
pub const HEADERS: [&str; 21] = [
    "KIND", "SIZE", "ITERS", "A_MIN", "A_P50", "A_P99", "A_MAX", "A_SD", "F_MIN", "F_P50", "F_P99",
    "F_MAX", "F_SD", "FLOOR", "SINGLE", "BATCH", "SINGLE_X", "BATCH_X", "NOP", "SINGLE_B", "NOTE",
];

/// Fixed column widths, so rows can be printed as they are measured.
const WIDTHS: [usize; 21] = [
    12, 5, 5, 8, 8, 9, 9, 9, 8, 8, 9, 9, 9, 9, 9, 9, 8, 7, 6, 8, 0,
];

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
    use super::*;
    use kmemlab::device::MockDevice;

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

    /// The one point of a sweep of kmalloc 64 B.
    fn kmalloc_64(dev: &MockDevice, iters: u32, rounds: u32) -> PointSpec {
        let spec = SweepSpec {
            kinds: Some(vec![Kind::Kmalloc]),
            sizes: Some(vec![64]),
            iters,
            rounds,
            ..SweepSpec::default()
        };
        spec.points(&dev.info().unwrap())[0]
    }

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
        assert_eq!(v["floor"]["alloc"]["p99_ns"], 300);
        assert_eq!(v["kind"], "kmalloc");
        assert!(v.get("skipped").is_none());
        let text = to_table(std::slice::from_ref(&r));
        assert!(text.starts_with("KIND"), "{text}");
        assert!(table_row(&r).starts_with("kmalloc"));
    }

    #[test]
    fn rounds_split_the_pairs_and_every_path_takes_turns() {
        let dev = MockDevice::new();
        let p = kmalloc_64(&dev, 1000, 3);
        let r = measure(&dev, &p, Flags::GFP_KERNEL);
        assert_eq!((r.error.as_deref(), r.rounds), (None, 3), "{r:?}");
        let benches: Vec<String> = dev
            .calls()
            .into_iter()
            .filter(|c| c.starts_with("bench"))
            .collect();
        assert_eq!(
            benches,
            [
                "bench kmalloc 64 334",
                "bench kmalloc 64 333",
                "bench kmalloc 64 333"
            ]
        );
        // Between the first two BENCH calls, the single and the batched path of round one.
        let calls = dev.calls();
        let at: Vec<usize> = (0..calls.len())
            .filter(|&i| calls[i].starts_with("bench"))
            .collect();
        let allocs = calls[at[0]..at[1]]
            .iter()
            .filter(|c| c.starts_with("alloc "))
            .count();
        assert_eq!(allocs, 2 * 334);
        assert!(dev.live().is_empty(), "every allocation is freed");
        // More rounds than pairs: one pair a round.
        let dev = MockDevice::new();
        let r = measure(&dev, &kmalloc_64(&dev, 2, 5), Flags::GFP_KERNEL);
        assert_eq!((r.error.as_deref(), r.rounds), (None, 2), "{r:?}");
        let benches = dev.calls().into_iter().filter(|c| c.starts_with("bench"));
        assert!(benches.eq(["bench kmalloc 64 1", "bench kmalloc 64 1"]));
    }

    #[test]
    fn merged_figures_are_those_of_all_the_pairs() {
        let t = |min, mean, max, stddev, p50, p99| uapi::Timing {
            min_ns: min,
            mean_ns: mean,
            max_ns: max,
            stddev_ns: stddev,
            p50_ns: p50,
            p99_ns: p99,
        };
        // Two pairs with mean 2 and sd 1, four with mean 8 and sd 2: mean (4 + 32) / 6 = 6,
        // mean square (2 * (1 + 4) + 4 * (4 + 64)) / 6 = 47, sd sqrt(47 - 36) = 3.3.
        let m = merge(&[(2, t(1, 2, 3, 1, 1, 3)), (4, t(5, 8, 11, 2, 7, 11))]);
        assert_eq!((m.min_ns, m.max_ns, m.mean_ns), (1, 11, 6));
        assert_eq!(m.stddev_ns, 3);
        // Percentiles: the median of the parts' own (upper for two).
        assert_eq!((m.p50_ns, m.p99_ns), (7, 11));
        let one = t(4, 5, 6, 1, 5, 6);
        assert_eq!(merge(&[(9, one)]), TimingReport::from(&one));
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

    #[test]
    fn live_allocations_are_held_in_batches_and_freed() {
        let dev = MockDevice::new();
        let set = LiveSet::hold(&dev, 300).unwrap();
        assert_eq!(set.len(), 300);
        let live = dev.live();
        assert_eq!(live.len(), 300);
        assert!(live
            .iter()
            .all(|a| a.kind == uapi::KIND_KMALLOC && a.size == LIVE_SIZE));
        set.release().unwrap();
        assert!(dev.live().is_empty());
        // Dropped without release (a sweep that ends early): freed all the same.
        drop(LiveSet::hold(&dev, 5).unwrap());
        assert!(dev.live().is_empty());
        assert!(LiveSet::hold(&dev, 0).unwrap().is_empty());

        // Refused after the quota: what was held is freed, the error says how many.
        let dev = MockDevice::new().with_privileges(0);
        let err = LiveSet::hold(&dev, 2000).unwrap_err();
        assert_eq!(err.errno(), Errno::EDQUOT);
        let msg = err.report();
        assert!(
            msg.contains("failed to hold 2000 live allocations"),
            "{msg}"
        );
        assert!(msg.contains("refused after 1024"), "{msg}");
        assert!(msg.contains("EDQUOT"), "{msg}");
        assert!(dev.live().is_empty());

        // Batches leave room for the held allocations.
        let mut info = MockDevice::new().info().unwrap();
        info.max_outstanding_count = 1000;
        let spec = SweepSpec {
            kinds: Some(vec![Kind::Kmalloc]),
            sizes: Some(vec![64]),
            live: 600,
            ..SweepSpec::default()
        };
        let p = spec.points(&info)[0];
        assert_eq!((p.batch, p.live), (200, 600));
    }

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
