//! What the daemon counts for its `stats` and `summary` lines, in bounded memory: per
//! kind, allocations, frees, errors and requested bytes, and alloc/free latencies in
//! log-linear histograms of fixed size (memory does not grow with presses).

use kmemlab::spec::Kind;
use serde::Serialize;

/// Sub-buckets per power of two: quantiles are exact below 16 ns and within 1/16
/// (6.25 %) above.
const SUB_BITS: u32 = 4;
const SUB: usize = 1 << SUB_BITS;
/// Buckets: 16 exact values, then 16 sub-buckets for each exponent 4..=63.
const BUCKETS: usize = SUB + (64 - SUB_BITS as usize) * SUB;

/// A log-linear histogram of nanosecond latencies (HdrHistogram's idea, 16 sub-buckets
/// per power of two): fixed size, O(1) record.
#[derive(Clone)]
pub struct Histogram {
    counts: Box<[u64; BUCKETS]>,
    n: u64,
    max: u64,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("n", &self.n)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: Box::new([0; BUCKETS]),
            n: 0,
            max: 0,
        }
    }
}

impl Histogram {
    fn index(v: u64) -> usize {
        if v < SUB as u64 {
            return v as usize;
        }
        let e = 63 - v.leading_zeros();
        let sub = ((v >> (e - SUB_BITS)) as usize) & (SUB - 1);
        SUB + (e - SUB_BITS) as usize * SUB + sub
    }

    /// The largest value that falls in bucket `i`.
    fn upper(i: usize) -> u64 {
        if i < SUB {
            return i as u64;
        }
        let e = ((i - SUB) / SUB) as u32 + SUB_BITS;
        let sub = ((i - SUB) % SUB) as u64;
        let shift = e - SUB_BITS;
        ((SUB as u64 + sub) << shift) + ((1u64 << shift) - 1)
    }

    /// Counts one value.
    pub fn record(&mut self, v: u64) {
        self.counts[Self::index(v)] += 1;
        self.n += 1;
        self.max = self.max.max(v);
    }

    /// Values recorded.
    pub fn len(&self) -> u64 {
        self.n
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The `q` quantile (0 < q <= 1): the upper bound of the bucket holding the value of
    /// rank ceil(q n), capped at the largest value seen; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.n == 0 {
            return None;
        }
        let rank = ((q * self.n as f64).ceil() as u64).clamp(1, self.n);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Self::upper(i).min(self.max));
            }
        }
        Some(self.max)
    }
}

/// Counts for one kind.
#[derive(Clone, Debug, Default)]
pub struct KindStats {
    /// Allocations done.
    pub count: u64,
    /// Frees done.
    pub frees: u64,
    /// Failed allocs and frees.
    pub errors: u64,
    /// Requested bytes allocated, summed.
    pub bytes: u64,
    /// Time in the alloc call (the module's `alloc_ns`).
    pub alloc_ns: Histogram,
    /// Time in the free call (the module's `free_ns`).
    pub free_ns: Histogram,
}

/// Per kind counts, as a `stats` or `summary` line shows them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KindReport {
    /// Allocations done.
    pub count: u64,
    /// Frees done.
    pub frees: u64,
    /// Failed allocs and frees.
    pub errors: u64,
    /// Requested bytes allocated, summed.
    pub bytes: u64,
    /// Median alloc latency, ns (null: none yet).
    pub alloc_ns_p50: Option<u64>,
    /// 99th percentile alloc latency, ns.
    pub alloc_ns_p99: Option<u64>,
    /// Median free latency, ns.
    pub free_ns_p50: Option<u64>,
    /// 99th percentile free latency, ns.
    pub free_ns_p99: Option<u64>,
}

impl From<&KindStats> for KindReport {
    fn from(s: &KindStats) -> Self {
        Self {
            count: s.count,
            frees: s.frees,
            errors: s.errors,
            bytes: s.bytes,
            alloc_ns_p50: s.alloc_ns.quantile(0.5),
            alloc_ns_p99: s.alloc_ns.quantile(0.99),
            free_ns_p50: s.free_ns.quantile(0.5),
            free_ns_p99: s.free_ns.quantile(0.99),
        }
    }
}

/// Every kind's report, keyed by kind name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KindsReport {
    /// `kmalloc`.
    pub kmalloc: KindReport,
    /// `vmalloc`.
    pub vmalloc: KindReport,
    /// `dma_coherent`.
    pub dma_coherent: KindReport,
    /// `kvmalloc`.
    pub kvmalloc: KindReport,
    /// `pages`.
    pub pages: KindReport,
}

/// The body of a `stats` or `summary` line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// The last UIO count read.
    pub irq_count: u32,
    /// Interrupts since start: `presses + bounces + coalesced`, always equal to
    /// `irq_count` minus the start line's `irq_count` (modulo 2^32).
    pub events: u64,
    /// Accepted presses (each ran one plan step).
    pub presses: u64,
    /// Presses refused by the debounce.
    pub bounces: u64,
    /// Interrupts that came without a read of their own.
    pub coalesced: u64,
    /// Allocations the daemon holds now (0 or 1).
    pub live: u64,
    /// Failed steps, all kinds.
    pub errors: u64,
    /// Per kind.
    pub kinds: KindsReport,
}

/// All kinds' counts.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    kinds: [KindStats; 5],
}

impl Stats {
    fn slot(kind: Kind) -> usize {
        Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0)
    }

    /// The counts of `kind`.
    pub fn kind(&self, kind: Kind) -> &KindStats {
        &self.kinds[Self::slot(kind)]
    }

    /// Counts an allocation of `bytes` that took `ns`.
    pub fn alloc(&mut self, kind: Kind, bytes: u64, ns: u64) {
        let k = &mut self.kinds[Self::slot(kind)];
        k.count += 1;
        k.bytes = k.bytes.saturating_add(bytes);
        k.alloc_ns.record(ns);
    }

    /// Counts a free that took `ns`.
    pub fn free(&mut self, kind: Kind, ns: u64) {
        let k = &mut self.kinds[Self::slot(kind)];
        k.frees += 1;
        k.free_ns.record(ns);
    }

    /// Counts a failed alloc or free.
    pub fn error(&mut self, kind: Kind) {
        self.kinds[Self::slot(kind)].errors += 1;
    }

    /// Failed steps, all kinds.
    pub fn errors(&self) -> u64 {
        self.kinds.iter().map(|k| k.errors).sum()
    }

    /// The per-kind reports.
    pub fn report(&self) -> KindsReport {
        let r = |k: Kind| KindReport::from(self.kind(k));
        KindsReport {
            kmalloc: r(Kind::Kmalloc),
            vmalloc: r(Kind::Vmalloc),
            dma_coherent: r(Kind::DmaCoherent),
            kvmalloc: r(Kind::Kvmalloc),
            pages: r(Kind::Pages),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_in_order() {
        let mut last = 0;
        for i in 0..BUCKETS {
            let up = Histogram::upper(i);
            assert!(i == 0 || up > last, "bucket {i}");
            assert_eq!(Histogram::index(up), i);
            last = up;
        }
        assert_eq!(Histogram::upper(BUCKETS - 1), u64::MAX);
        for v in [0, 1, 15, 16, 17, 31, 32, 1000, 123_456_789, u64::MAX] {
            let i = Histogram::index(v);
            assert!(Histogram::upper(i) >= v);
            assert!(i == 0 || Histogram::upper(i - 1) < v);
        }
    }

    #[test]
    fn quantiles_within_a_sixteenth() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        for v in 1..=1000u64 {
            h.record(v * 100);
        }
        let p50 = h.quantile(0.5).unwrap();
        let p99 = h.quantile(0.99).unwrap();
        assert!((50_000..=50_000 + 50_000 / 16).contains(&p50), "{p50}");
        assert!((99_000..=100_000).contains(&p99), "{p99}");
        assert_eq!(h.quantile(1.0), Some(100_000));
        assert_eq!(h.len(), 1000);
        // Exact below 16.
        let mut h = Histogram::default();
        h.record(3);
        h.record(7);
        assert_eq!(h.quantile(0.5), Some(3));
        assert_eq!(h.quantile(0.99), Some(7));
    }

    #[test]
    fn stats_per_kind() {
        let mut s = Stats::default();
        s.alloc(Kind::Vmalloc, 4096, 900);
        s.free(Kind::Vmalloc, 300);
        s.error(Kind::Pages);
        let r = s.report();
        assert_eq!(r.vmalloc.count, 1);
        assert_eq!(r.vmalloc.bytes, 4096);
        assert_eq!(r.vmalloc.alloc_ns_p50, Some(900));
        assert_eq!(r.vmalloc.free_ns_p99, Some(300));
        assert_eq!(r.pages.errors, 1);
        assert_eq!(r.kmalloc.alloc_ns_p50, None);
        assert_eq!(s.errors(), 1);
    }
}
