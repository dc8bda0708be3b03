//! The one latency histogram of kmemlab: every percentile the project prints (the daemon's
//! `stats` and `summary` lines, `kmemlabctl report`, `kmemlabctl bench`, and BENCH in the
//! module) uses the ABI's bucket layout ([`uapi::hist_bucket`]) and percentile rule
//! ([`uapi::hist_percentile`]): the sample of rank ceil(n p), nearest rank, given as the
//! midpoint of its bucket (within about 3% of it), clamped to the least and greatest sample.
//!
//! Histograms merge exactly (bucket counts add), so a p99 over several BENCH runs, threads or
//! rounds is the p99 of all their samples, not a statistic of the parts' p99s. Fixed size:
//! memory does not grow with the samples.

use crate::uapi::{hist_bucket, hist_percentile, Timing, HIST_BUCKETS};

/// A histogram of nanosecond values.
#[derive(Clone, PartialEq, Eq)]
pub struct Histogram {
    counts: Box<[u64]>,
    n: u64,
    min: u64,
    max: u64,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("n", &self.n)
            .field("min", &self.min)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; HIST_BUCKETS].into_boxed_slice(),
            n: 0,
            min: u64::MAX,
            max: 0,
        }
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one value.
    pub fn record(&mut self, v: u64) {
        self.counts[hist_bucket(v)] += 1;
        self.n += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    /// A histogram of `values`.
    pub fn of(values: impl IntoIterator<Item = u64>) -> Self {
        let mut h = Self::new();
        for v in values {
            h.record(v);
        }
        h
    }

    /// The histogram BENCH copied out (`counts`, [`HIST_BUCKETS`] of them) for a side whose
    /// figures are `timing` (for its least and greatest sample). `None` when the counts are
    /// not [`HIST_BUCKETS`] long.
    pub fn from_kernel(counts: &[u32], timing: &Timing) -> Option<Self> {
        if counts.len() != HIST_BUCKETS {
            return None;
        }
        let counts: Box<[u64]> = counts.iter().map(|c| u64::from(*c)).collect();
        let n = counts.iter().sum();
        Some(Self {
            counts,
            n,
            min: if n == 0 { u64::MAX } else { timing.min_ns },
            max: timing.max_ns,
        })
    }

    /// Adds `other`'s samples.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.n += other.n;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Values recorded.
    pub fn len(&self) -> u64 {
        self.n
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The least value; `None` when empty.
    pub fn min(&self) -> Option<u64> {
        (self.n > 0).then_some(self.min)
    }

    /// The greatest value; `None` when empty.
    pub fn max(&self) -> Option<u64> {
        (self.n > 0).then_some(self.max)
    }

    /// The `per_mille`/1000 percentile (500: median, 990: p99) by the ABI's rule; `None`
    /// when empty.
    pub fn percentile(&self, per_mille: u64) -> Option<u64> {
        (self.n > 0).then(|| {
            hist_percentile(
                self.counts.iter().copied(),
                self.n,
                per_mille,
                self.min,
                self.max,
            )
        })
    }

    /// The median; `None` when empty.
    pub fn p50(&self) -> Option<u64> {
        self.percentile(500)
    }

    /// The 99th percentile; `None` when empty.
    pub fn p99(&self) -> Option<u64> {
        self.percentile(990)
    }
}

/// The two histograms BENCH copies out: allocation latency, then free latency.
pub type BenchHistograms = [Histogram; 2];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_below_sixteen_and_midpoints_above() {
        let h = Histogram::of(1..=10);
        assert_eq!(h.p50(), Some(5));
        assert_eq!(h.percentile(1000), Some(10));
        // 1..=100: the 90th value (90) is in the bucket 88..=91, reported as 89.
        let h = Histogram::of(1..=100);
        assert_eq!(h.percentile(900), Some(89));
        assert_eq!(h.p50(), Some(50));
        // 99 is in 96..=99, reported as 97.
        assert_eq!(h.p99(), Some(97));
    }

    #[test]
    fn percentiles_are_clamped_to_the_samples() {
        // One sample: every percentile is that sample, not its bucket's midpoint.
        let h = Histogram::of([1001]);
        assert_eq!((h.p50(), h.p99()), (Some(1001), Some(1001)));
        assert_eq!((h.min(), h.max()), (Some(1001), Some(1001)));
        assert_eq!(Histogram::new().p99(), None);
        assert_eq!(Histogram::new().min(), None);
    }

    #[test]
    fn within_three_percent_of_the_exact_rank() {
        let values: Vec<u64> = (0..10_000u64).map(|i| 1_000 + i * 37 % 90_001).collect();
        let h = Histogram::of(values.iter().copied());
        let mut sorted = values.clone();
        sorted.sort_unstable();
        for per_mille in [10, 500, 900, 990, 999] {
            let rank = (sorted.len() as u64 * per_mille).div_ceil(1000) as usize;
            let exact = sorted[rank - 1] as f64;
            let got = h.percentile(per_mille).unwrap() as f64;
            assert!(
                (got - exact).abs() / exact < 0.035,
                "{per_mille}: {got} vs {exact}"
            );
        }
    }

    #[test]
    fn merged_percentiles_are_those_of_all_the_samples() {
        // 98 fast runs and two slow ones: the p99 of all the samples is in the slow tail,
        // the median of the parts' p99s would not be.
        let mut all = Histogram::new();
        let mut merged = Histogram::new();
        for run in 0..100u64 {
            let part: Vec<u64> = (0..100)
                .map(|i| if run >= 98 { 50_000 + i } else { 100 + i })
                .collect();
            all = {
                let mut a = all;
                for v in &part {
                    a.record(*v);
                }
                a
            };
            merged.merge(&Histogram::of(part));
        }
        assert_eq!(merged, all);
        assert!(merged.p99().unwrap() >= 48_000, "{:?}", merged.p99());
        assert_eq!(merged.len(), 10_000);
    }

    #[test]
    fn from_kernel_takes_counts_and_the_timings_range() {
        let mut counts = vec![0u32; HIST_BUCKETS];
        counts[hist_bucket(1000)] = 3;
        counts[hist_bucket(5000)] = 1;
        let t = Timing {
            min_ns: 990,
            max_ns: 5100,
            ..Timing::default()
        };
        let h = Histogram::from_kernel(&counts, &t).unwrap();
        assert_eq!(h.len(), 4);
        assert_eq!(h.max(), Some(5100));
        assert!((990..=1032).contains(&h.p50().unwrap()));
        assert!(Histogram::from_kernel(&counts[1..], &t).is_none());
    }
}
