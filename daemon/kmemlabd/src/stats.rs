//! What the daemon counts for its `stats` and `summary` lines, in bounded memory: per
//! kind, allocations, frees, errors and requested bytes, and alloc/free latencies in
//! kmemlab's one log-linear histogram ([`kmemlab::histogram`]: fixed size, so memory does
//! not grow with presses; its percentiles are those every kmemlab tool prints).

use kmemlab::spec::Kind;
use serde::Serialize;

use kmemlab::Histogram;

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
            alloc_ns_p50: s.alloc_ns.p50(),
            alloc_ns_p99: s.alloc_ns.p99(),
            free_ns_p50: s.free_ns.p50(),
            free_ns_p99: s.free_ns.p99(),
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
    fn percentiles_are_kmemlabs_one_rule() {
        let mut s = Stats::default();
        for v in 1..=1000u64 {
            s.alloc(Kind::Kmalloc, 8, v * 100);
        }
        let r = s.report();
        let h = kmemlab::Histogram::of((1..=1000u64).map(|v| v * 100));
        assert_eq!(r.kmalloc.alloc_ns_p50, h.p50());
        assert_eq!(r.kmalloc.alloc_ns_p99, h.p99());
        // Nearest rank, within 1/32 either side: the 990th value is 99,000.
        let p99 = r.kmalloc.alloc_ns_p99.unwrap();
        assert!(
            (99_000 - 99_000 / 32..=99_000 + 99_000 / 32).contains(&p99),
            "{p99}"
        );
        assert_eq!(r.kmalloc.free_ns_p99, None);
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
