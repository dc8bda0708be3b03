//! Measuring one point: BENCH, the single and batched userspace paths, and bare round
//! trips, in rounds that take turns.

use super::spec::PointSpec;
use kmemlab::clock::monotonic_ns;
use kmemlab::device::Device;
use kmemlab::error::{Error, Result};
use kmemlab::report::TimingReport;
use kmemlab::spec::{format_size, Flags, Kind};
use kmemlab::uapi;
use kmemlab::uapi::{Alloc, Free};
use kmemlab::Histogram;
use nix::errno::Errno;
use serde::Serialize;

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
    /// In-kernel figures (BENCH). Over several rounds, every figure is that of all the pairs
    /// (p50 and p99 from the rounds' histograms merged).
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
pub(super) fn round2(x: f64) -> f64 {
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
            let (b, [alloc_hist, free_hist]) = dev.bench_hist(p.kind, p.size, flags, n)?;
            allocs.push((n, b.alloc, alloc_hist));
            frees.push((n, b.free, free_hist));
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

/// The figures of BENCH calls of `n` pairs each, with their histograms, as one: min, max,
/// mean and standard deviation of all their pairs, and p50 and p99 of all their pairs, from
/// the calls' histograms merged (the module's percentile rule, [`kmemlab::histogram`]).
pub fn merge(parts: &[(u32, uapi::Timing, Histogram)]) -> TimingReport {
    if let [(_, t, _)] = parts {
        return TimingReport::from(t);
    }
    let n: f64 = parts.iter().map(|(n, _, _)| f64::from(*n)).sum();
    if n == 0.0 {
        return TimingReport::from(&uapi::Timing::default());
    }
    let mean = parts
        .iter()
        .map(|(k, t, _)| f64::from(*k) * t.mean_ns as f64)
        .sum::<f64>()
        / n;
    let mean_sq = parts
        .iter()
        .map(|(k, t, _)| {
            let (m, sd) = (t.mean_ns as f64, t.stddev_ns as f64);
            f64::from(*k) * (sd * sd + m * m)
        })
        .sum::<f64>()
        / n;
    let mut all = Histogram::new();
    for (_, _, h) in parts {
        all.merge(h);
    }
    TimingReport {
        min_ns: parts.iter().map(|(_, t, _)| t.min_ns).min().unwrap_or(0),
        p50_ns: all.p50().unwrap_or(0),
        p99_ns: all.p99().unwrap_or(0),
        max_ns: parts.iter().map(|(_, t, _)| t.max_ns).max().unwrap_or(0),
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

#[cfg(test)]
mod tests {
    use kmemlab::MockDevice;

    use super::*;
    use crate::bench::spec::kmalloc_64;

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
    fn merge_takes_every_figure_over_all_pairs() {
        let t = |min, mean, max, stddev| uapi::Timing {
            min_ns: min,
            mean_ns: mean,
            max_ns: max,
            stddev_ns: stddev,
            ..uapi::Timing::default()
        };
        // Two pairs with mean 2 and sd 1, four with mean 8 and sd 2: mean (4 + 32) / 6 = 6,
        // mean square (2 * (1 + 4) + 4 * (4 + 64)) / 6 = 47, sd sqrt(47 - 36) = 3.3.
        let m = merge(&[
            (2, t(1, 2, 3, 1), Histogram::of([1, 3])),
            (4, t(5, 8, 11, 2), Histogram::of([5, 7, 9, 11])),
        ]);
        assert_eq!((m.min_ns, m.max_ns, m.mean_ns), (1, 11, 6));
        assert_eq!(m.stddev_ns, 3);
        // Percentiles of all six pairs: rank 3 of 1, 3, 5, 7, 9, 11 is 5; rank 6 is 11.
        assert_eq!((m.p50_ns, m.p99_ns), (5, 11));
        let one = t(4, 5, 6, 1);
        assert_eq!(
            merge(&[(9, one, Histogram::of([4, 6]))]),
            TimingReport::from(&one)
        );
    }

    /// 98 fast rounds and 2 slow ones: the p99 of all pairs is in the slow tail, where the
    /// median of the rounds' p99s (the old figure) was not.
    #[test]
    fn a_p99_over_rounds_is_the_p99_of_all_their_pairs() {
        let parts: Vec<(u32, uapi::Timing, Histogram)> = (0..100u64)
            .map(|r| {
                let base = if r >= 98 { 50_000 } else { 100 };
                let h = Histogram::of((0..100).map(|i| base + i));
                let t = uapi::Timing {
                    min_ns: base,
                    mean_ns: base + 50,
                    max_ns: base + 99,
                    p50_ns: h.p50().unwrap(),
                    p99_ns: h.p99().unwrap(),
                    ..uapi::Timing::default()
                };
                (100, t, h)
            })
            .collect();
        let m = merge(&parts);
        assert!(m.p99_ns >= 48_000, "{m:?}");
        assert!(m.p50_ns < 200, "{m:?}");
    }
}
