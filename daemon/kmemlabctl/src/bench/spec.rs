//! What a sweep measures: its kinds, sizes and pairs per point.

use std::path::PathBuf;

use kmemlab::spec::{Flags, Kind};
use kmemlab::uapi;
use kmemlab::uapi::Info;

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
    /// Rounds asked for ([`super::measure::measure`] makes at most `iters` of them).
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

/// The one point of a sweep of kmalloc 64 B.
#[cfg(test)]
pub(super) fn kmalloc_64(dev: &kmemlab::MockDevice, iters: u32, rounds: u32) -> PointSpec {
    use kmemlab::device::Device;

    let spec = SweepSpec {
        kinds: Some(vec![Kind::Kmalloc]),
        sizes: Some(vec![64]),
        iters,
        rounds,
        ..SweepSpec::default()
    };
    spec.points(&dev.info().unwrap())[0]
}

#[cfg(test)]
mod tests {
    use kmemlab::device::Device;
    use kmemlab::MockDevice;

    use super::*;

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
}
