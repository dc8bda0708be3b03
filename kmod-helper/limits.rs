// SPDX-License-Identifier: GPL-2.0

//! The limits, from the module parameters, clamped to what each allocator API accepts. They are
//! read once, when a device is bound ([`Limits::get`] from `Shared::new`): 7.3's Rust module
//! parameters have no sysfs file (`perm: 0` in `rust/macros/module.rs`), so they cannot change
//! after load. Reading the thirteen of them took about 3.5 us per request under emulation.
//!
//! Global limits bind everyone (`E2BIG` for a size, `ENOSPC` for what is outstanding). The
//! per-opener quota (`EDQUOT`), the atomic quota and the BENCH budget (`EPERM` beyond them) bind
//! openers without CAP_SYS_ADMIN; see `privilege.rs`.

use crate::mem::Kind;
use crate::uapi;

/// The limits of the module's requests.
#[derive(Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_size: [u64; uapi::MAX_KINDS],
    pub(crate) max_outstanding_bytes: u64,
    pub(crate) max_outstanding_count: u32,
    pub(crate) max_bench_iters: u32,
    pub(crate) max_trigger_count: u32,
    pub(crate) file_max_bytes: u64,
    pub(crate) file_max_count: u32,
    pub(crate) atomic_quota_bytes: u64,
    pub(crate) bench_max_bytes: u64,
}

impl Limits {
    pub(crate) fn get() -> Self {
        use crate::module_parameters as p;
        let params = [
            p::max_size_kmalloc.value(),
            p::max_size_vmalloc.value(),
            p::max_size_dma_coherent.value(),
            p::max_size_kvmalloc.value(),
            p::max_size_pages.value(),
        ];
        let mut max_size = [0u64; uapi::MAX_KINDS];
        for kind in Kind::ALL {
            max_size[kind.index()] = params[kind.index()].min(kind.api_max_size());
        }
        Self {
            max_size,
            max_outstanding_bytes: p::max_outstanding_bytes.value(),
            max_outstanding_count: p::max_outstanding_count.value(),
            max_bench_iters: p::max_bench_iters.value(),
            max_trigger_count: p::max_trigger_count.value(),
            file_max_bytes: p::file_max_bytes.value(),
            file_max_count: p::file_max_count.value(),
            atomic_quota_bytes: p::atomic_quota_bytes.value(),
            bench_max_bytes: p::bench_max_bytes.value(),
        }
    }
}

/// What one opener holds, counted against its quota: live allocations it owns, and
/// reservations of allocations (or a BENCH allocation) in progress.
#[derive(Default, Clone, Copy)]
pub(crate) struct Usage {
    pub(crate) bytes: u64,
    pub(crate) count: u32,
    /// Bytes of `GFP_ATOMIC`/`GFP_NOWAIT` allocations among `bytes`.
    pub(crate) atomic_bytes: u64,
}

/// A charge against an opener's [`Usage`] and the global counters: one allocation, or the sum
/// of a batch's.
#[derive(Clone, Copy, Default)]
pub(crate) struct Charge {
    pub(crate) count: u32,
    pub(crate) bytes: u64,
    /// Bytes of `GFP_ATOMIC`/`GFP_NOWAIT` allocations among `bytes`.
    pub(crate) atomic_bytes: u64,
}

impl Charge {
    /// One allocation of `bytes`, atomic or not.
    pub(crate) fn one(bytes: u64, atomic: bool) -> Self {
        Self {
            count: 1,
            bytes,
            atomic_bytes: if atomic { bytes } else { 0 },
        }
    }

    /// Adds `c` to this sum.
    pub(crate) fn add(&mut self, c: Charge) {
        self.count = self.count.saturating_add(c.count);
        self.bytes = self.bytes.saturating_add(c.bytes);
        self.atomic_bytes = self.atomic_bytes.saturating_add(c.atomic_bytes);
    }
}

impl Usage {
    /// Adds `c` if the quota allows it: `EDQUOT` beyond `file_max_*`, `EPERM` beyond the atomic
    /// quota. `quota` is false for a privileged opener, which only has the global limits.
    pub(crate) fn charge(
        &mut self,
        c: Charge,
        limits: &Limits,
        quota: bool,
    ) -> kernel::error::Result {
        if quota {
            if self.count.saturating_add(c.count) > limits.file_max_count
                || self.bytes.saturating_add(c.bytes) > limits.file_max_bytes
            {
                return Err(kernel::error::code::EDQUOT);
            }
            if self.atomic_bytes.saturating_add(c.atomic_bytes) > limits.atomic_quota_bytes {
                return Err(kernel::error::code::EPERM);
            }
        }
        self.count = self.count.saturating_add(c.count);
        self.bytes = self.bytes.saturating_add(c.bytes);
        self.atomic_bytes = self.atomic_bytes.saturating_add(c.atomic_bytes);
        Ok(())
    }

    /// Takes back a charge made by [`Usage::charge`] (or several, summed).
    pub(crate) fn uncharge(&mut self, c: Charge) {
        self.count = self.count.saturating_sub(c.count);
        self.bytes = self.bytes.saturating_sub(c.bytes);
        self.atomic_bytes = self.atomic_bytes.saturating_sub(c.atomic_bytes);
    }
}
