// SPDX-License-Identifier: GPL-2.0

//! BENCH: alloc+free pairs timed in the kernel, and their latency statistics, in integer
//! arithmetic (as `dma_map_benchmark` does).
//!
//! One BENCH holds one allocation at a time; it is reserved against the global limits and the
//! opener's quota for the whole run. Without CAP_SYS_ADMIN, `iters * size` is bounded by
//! `bench_max_bytes` and an atomic BENCH's size by `atomic_quota_bytes` (`EPERM` beyond). A
//! pending signal stops the run with `EINTR`, checked before each pair.
//!
//! min, max and mean are exact. The standard deviation is `sqrt(E[x^2] - E[x]^2)` over samples
//! capped at `u32::MAX` ns (4.3 s), with the sum of squares kept in 128 bits as two `u64` limbs
//! (the kernel's Rust has no `u128` division). p50 and p99 come from a log-linear histogram
//! whose layout and percentile rule are the ABI's (`uapi::hist_bucket`,
//! `uapi::hist_percentile`), the ones userspace uses for every percentile it prints: values
//! below 16 ns have a bucket each; above, every power of two is split into 16 buckets, so a
//! bucket spans at most 1/16 (6.25%) of its lower bound and the reported value, the bucket's
//! midpoint, is within about 3% of any sample in it. With `hist_addr` set, BENCH copies the two
//! histograms out, so that userspace can merge runs and take percentiles over all their
//! samples.

use kernel::{
    bindings,
    prelude::*, //
};

use crate::limits::Charge;
use crate::mem::{
    cond_resched,
    gfp_for,
    Kind,
    Lap,
    Mem, //
};
use crate::shared::{
    is_atomic,
    Opener,
    Shared, //
};
use crate::uapi;

/// A 128-bit unsigned accumulator.
#[derive(Default, Clone, Copy)]
struct U128 {
    hi: u64,
    lo: u64,
}

impl U128 {
    fn add(&mut self, v: u64) {
        let (lo, carry) = self.lo.overflowing_add(v);
        self.lo = lo;
        self.hi = self.hi.wrapping_add(u64::from(carry));
    }

    /// `self / d`, saturated to `u64::MAX`; long division in 32-bit limbs.
    fn div(self, d: u32) -> u64 {
        if d == 0 {
            return 0;
        }
        let d = u64::from(d);
        let limbs = [
            self.hi >> 32,
            self.hi & 0xffff_ffff,
            self.lo >> 32,
            self.lo & 0xffff_ffff,
        ];
        let mut rem = 0u64;
        let mut q = [0u64; 4];
        for (i, limb) in limbs.iter().enumerate() {
            let cur = (rem << 32) | limb;
            q[i] = cur / d;
            rem = cur % d;
        }
        if q[0] != 0 || q[1] != 0 {
            return u64::MAX;
        }
        (q[2] << 32) | q[3]
    }
}

/// Integer square root (floor).
fn isqrt(v: u64) -> u64 {
    if v < 2 {
        return v;
    }
    let mut x = 1u64 << (64 - v.leading_zeros()).div_ceil(2);
    loop {
        let y = (x + v / x) / 2;
        if y >= x {
            return x;
        }
        x = y;
    }
}

/// Samples of one side (alloc or free).
pub(crate) struct Series {
    n: u32,
    min: u64,
    max: u64,
    sum: u64,
    sum_sq: U128,
    hist: KVec<u32>,
}

impl Series {
    pub(crate) fn new() -> Result<Self> {
        Ok(Self {
            n: 0,
            min: u64::MAX,
            max: 0,
            sum: 0,
            sum_sq: U128::default(),
            hist: KVec::from_elem(0u32, uapi::HIST_BUCKETS, GFP_KERNEL)?,
        })
    }

    pub(crate) fn record(&mut self, ns: u64) {
        self.n = self.n.saturating_add(1);
        self.min = self.min.min(ns);
        self.max = self.max.max(ns);
        let capped = ns.min(u64::from(u32::MAX));
        self.sum = self.sum.saturating_add(capped);
        self.sum_sq.add(capped * capped);
        if let Some(slot) = self.hist.get_mut(uapi::hist_bucket(ns)) {
            *slot = slot.saturating_add(1);
        }
    }

    /// The `per_mille`/1000 percentile, by the ABI's rule (`uapi::hist_percentile`).
    fn percentile(&self, per_mille: u64) -> u64 {
        uapi::hist_percentile(
            self.hist.iter().map(|c| u64::from(*c)),
            u64::from(self.n),
            per_mille,
            self.min,
            self.max,
        )
    }

    /// The bucket counts, as BENCH copies them out.
    pub(crate) fn hist(&self) -> &[u32] {
        &self.hist
    }

    pub(crate) fn timing(&self) -> uapi::Timing {
        if self.n == 0 {
            return uapi::Timing::default();
        }
        let mean = self.sum / u64::from(self.n);
        let mean_sq = self.sum_sq.div(self.n);
        let variance = mean_sq.saturating_sub(mean.saturating_mul(mean));
        uapi::Timing {
            min_ns: self.min,
            mean_ns: mean,
            max_ns: self.max,
            stddev_ns: isqrt(variance),
            p50_ns: self.percentile(500),
            p99_ns: self.percentile(990),
        }
    }
}

impl Shared {
    /// BENCH: `iters` alloc+free pairs of `size` bytes of `kind` with `flags`, for `file`.
    pub(crate) fn bench(
        &self,
        file: Opener,
        kind: u32,
        flags: u32,
        size: u64,
        iters: u32,
    ) -> Result<[Series; 2]> {
        let kind = Kind::from_abi(kind)?;
        let gfp = gfp_for(kind, flags, false)?;
        let limits = self.limits;
        if size == 0 || iters == 0 || iters > limits.max_bench_iters {
            return Err(EINVAL);
        }
        if size > limits.max_size[kind.index()] {
            return Err(E2BIG);
        }
        let atomic = is_atomic(flags);
        if !file.privs.admin
            && (u64::from(iters).saturating_mul(size) > limits.bench_max_bytes
                || (atomic && size > limits.atomic_quota_bytes))
        {
            return Err(EPERM);
        }
        let charge = Charge::one(size, atomic);
        self.bench_reserve(file, charge, &limits)?;
        let res = self.bench_run(kind, gfp, usize::try_from(size)?, iters);
        self.bench_unreserve(file, charge);
        res
    }

    /// The pairs of a BENCH whose allocation is reserved.
    fn bench_run(
        &self,
        kind: Kind,
        gfp: bindings::gfp_t,
        size: usize,
        iters: u32,
    ) -> Result<[Series; 2]> {
        let dma = kind == Kind::DmaCoherent;
        let section = if dma {
            Some(self.dma_section().ok_or(ENODEV)?)
        } else {
            None
        };
        let mut alloc = Series::new()?;
        let mut free = Series::new()?;
        let task = kernel::current!();
        for i in 0..iters {
            if task.signal_pending() {
                return Err(EINTR);
            }
            if i % 256 == 255 {
                cond_resched();
            }
            if dma && self.unbinding() {
                return Err(ENODEV);
            }
            let mut lap = Lap::start();
            // SAFETY: For dma_coherent, `section` is a DMA section: the device stays bound until
            // after the free below.
            let mem = unsafe { Mem::alloc(kind, size, gfp, self.dev()) };
            let a_ns = lap.lap();
            drop(mem?);
            let f_ns = lap.lap();
            alloc.record(a_ns);
            free.record(f_ns);
        }
        drop(section);
        Ok([alloc, free])
    }
}
