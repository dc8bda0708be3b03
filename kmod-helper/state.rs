// SPDX-License-Identifier: GPL-2.0

//! The state open files share with the bound device: live allocations, counters, limits, and the
//! UIO device for TRIGGER.
//!
//! # Ownership and unbind
//!
//! Every live allocation is in one tree, keyed by handle, with its owner: an open file, or the
//! device (`FLAG_PERSIST`). A file's allocations are freed when the file is released; the device's
//! when the device is unbound (which module unload does). `Shared` itself is reference-counted
//! and outlives the unbind while files are open, so a file's kmalloc, vmalloc, kvmalloc and pages
//! allocations stay valid (and freeable) until the file is closed.
//!
//! dma_coherent allocations must not outlive the binding: they are freed against the device. So
//! unbind frees *every* dma_coherent allocation, whoever owns it, while the device is still
//! bound, and a later FREE of one gets `ENOENT`. A DMA gate (a mutex around a `bound` flag)
//! is held across every `dma_alloc_attrs()` and `dma_free_attrs()` and by unbind, so none of them
//! can run once unbind has begun. After unbind, ALLOC, BENCH and TRIGGER give `ENODEV`.
//!
//! Lock order: DMA gate, then `inner`. No spinlock is held across an allocation; the allocator
//! call itself runs outside `inner` (limits are reserved before it, the result inserted after).

use core::fmt;
use kernel::{
    bindings,
    device::Device,
    new_mutex,
    page::PAGE_SIZE,
    platform,
    prelude::*,
    rbtree::{
        RBTree,
        RBTreeNodeReservation, //
    },
    sync::{
        aref::ARef,
        atomic::{
            Atomic,
            Relaxed, //
        },
        Arc,
        Mutex, //
    }, //
};

use crate::bench::Series;
use crate::mem::{
    cond_resched,
    fatal_signal_pending,
    gfp_for,
    Kind,
    Mem, //
};
use crate::uapi;
use crate::uio;

/// The next allocation handle: module-wide, so handles are never reused while the module is
/// loaded, not even across an unbind and a new bind.
static NEXT_HANDLE: Atomic<u64> = Atomic::new(1);

/// Who owns an allocation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// The open file with this id.
    File(u64),
    /// The device (`FLAG_PERSIST`).
    Device,
}

/// The limits, from the module parameters, clamped to what each allocator API accepts.
pub(crate) struct Limits {
    pub(crate) max_size: [u64; uapi::MAX_KINDS],
    pub(crate) max_outstanding_bytes: u64,
    pub(crate) max_outstanding_count: u32,
    pub(crate) max_bench_iters: u32,
    pub(crate) max_trigger_count: u32,
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
        }
    }
}

/// One live allocation.
struct Allocation {
    owner: Owner,
    kind: Kind,
    mem: Mem,
    /// The report ALLOC returned, before hiding addresses and adding ownership bits.
    report: uapi::Alloc,
}

/// Counters under `Shared::inner`.
struct Counters {
    stats: [uapi::KindStats; uapi::MAX_KINDS],
    /// Bytes and allocations counted against the limits: live ones, and reservations of
    /// allocations in progress.
    outstanding_bytes: u64,
    outstanding_count: u32,
}

impl Counters {
    /// Removes the accounting of a live allocation that is being freed.
    fn account_free(&mut self, a: &Allocation) {
        let s = &mut self.stats[a.kind.index()];
        s.frees += 1;
        s.live_count -= 1;
        s.live_bytes -= a.report.size;
        self.outstanding_bytes -= a.report.size;
        self.outstanding_count -= 1;
    }

    /// Returns a reservation that did not become a live allocation.
    fn unreserve(&mut self, size: u64) {
        self.outstanding_bytes -= size;
        self.outstanding_count -= 1;
    }
}

/// State under `Shared::inner`.
struct Inner {
    /// False from unbind on.
    bound: bool,
    allocs: RBTree<u64, Allocation>,
    counters: Counters,
}

impl Inner {
    /// Frees every allocation for which `pred` holds.
    fn free_where(&mut self, pred: impl Fn(&Allocation) -> bool) {
        let mut cursor = self.allocs.cursor_front_mut();
        while let Some(cur) = cursor {
            let (_, a) = cur.current();
            if pred(a) {
                let (next, node) = cur.remove_current();
                let (_, a) = node.to_key_value();
                self.counters.account_free(&a);
                drop(a);
                cursor = next;
            } else {
                cursor = cur.move_next();
            }
        }
    }
}

/// The UIO device, until unbind.
struct UioState {
    reg: Option<uio::Registration>,
    /// The event count when the device was unregistered.
    last_events: u64,
}

/// State that open files share with the bound device; see the module documentation.
#[pin_data]
pub(crate) struct Shared {
    /// The platform device, for messages and DMA allocations.
    pub(crate) pdev: ARef<platform::Device>,
    /// Linux interrupt number of the UIO device.
    pub(crate) irq: u32,
    /// Size of the DMA-coherent heap (UIO map 0).
    pub(crate) heap_size: u64,
    /// The DMA gate: true while the device is bound; held across DMA allocations and frees.
    #[pin]
    dma_gate: Mutex<bool>,
    #[pin]
    inner: Mutex<Inner>,
    #[pin]
    uio: Mutex<UioState>,
}

/// Result of an ALLOC.
pub(crate) struct Allocated {
    pub(crate) handle: u64,
    pub(crate) report: uapi::Alloc,
}

impl Shared {
    pub(crate) fn new(
        pdev: ARef<platform::Device>,
        irq: u32,
        heap_size: u64,
        reg: uio::Registration,
    ) -> Result<Arc<Self>> {
        Arc::pin_init(
            try_pin_init!(Self {
                pdev,
                irq,
                heap_size,
                dma_gate <- new_mutex!(true),
                inner <- new_mutex!(Inner {
                    bound: true,
                    allocs: RBTree::new(),
                    counters: Counters {
                        stats: [uapi::KindStats::default(); uapi::MAX_KINDS],
                        outstanding_bytes: 0,
                        outstanding_count: 0,
                    },
                }),
                uio <- new_mutex!(UioState {
                    reg: Some(reg),
                    last_events: 0,
                }),
            }),
            GFP_KERNEL,
        )
    }

    fn dev(&self) -> &Device {
        self.pdev.as_ref()
    }

    /// Counts a refused or failed allocation.
    fn count_failure(&self, kind: Kind) {
        self.inner.lock().counters.stats[kind.index()].failures += 1;
    }

    /// ALLOC: allocates for `owner`; see `uapi::Alloc`.
    pub(crate) fn alloc(&self, owner: Owner, req: &uapi::Alloc) -> Result<Allocated> {
        let kind = Kind::from_abi(req.kind)?;
        let gfp = gfp_for(kind, req.flags, true)?;
        if req.size == 0 {
            return Err(EINVAL);
        }
        let limits = Limits::get();
        if req.size > limits.max_size[kind.index()] {
            self.count_failure(kind);
            return Err(E2BIG);
        }
        let size = usize::try_from(req.size)?;
        let node = RBTreeNodeReservation::new(GFP_KERNEL)?;

        let gate = if kind == Kind::DmaCoherent {
            let gate = self.dma_gate.lock();
            if !*gate {
                return Err(ENODEV);
            }
            Some(gate)
        } else {
            None
        };

        // Reserve against the limits.
        {
            let mut inner = self.inner.lock();
            if !inner.bound {
                return Err(ENODEV);
            }
            let c = &mut inner.counters;
            if c.outstanding_count >= limits.max_outstanding_count
                || c.outstanding_bytes.saturating_add(req.size) > limits.max_outstanding_bytes
            {
                c.stats[kind.index()].failures += 1;
                return Err(ENOSPC);
            }
            c.outstanding_count += 1;
            c.outstanding_bytes += req.size;
        }

        // SAFETY: For dma_coherent, the DMA gate is held and says the device is bound; it stays
        // held until the allocation is in the tree, from where unbind frees it under the gate.
        let allocated = unsafe { Mem::alloc(kind, size, gfp, self.dev()) };
        let (mem, alloc_ns) = match allocated {
            Ok(m) => m,
            Err(e) => {
                let mut inner = self.inner.lock();
                inner.counters.unreserve(req.size);
                inner.counters.stats[kind.index()].failures += 1;
                return Err(e);
            }
        };
        let layout = mem.layout(size);

        let mut result = 0;
        if req.flags & uapi::FLAG_ZERO != 0 || mem.always_zeroed() {
            result |= uapi::RESULT_ZEROED;
        }
        if mem.dma().is_some() {
            result |= uapi::RESULT_DMA;
        }
        let mut report = uapi::Alloc {
            kind: req.kind,
            flags: req.flags,
            size: req.size,
            vaddr: mem.vaddr() as u64,
            phys: layout.phys,
            dma: mem.dma().unwrap_or(0),
            usable_size: layout.usable_size,
            alloc_ns,
            pages: layout.pages,
            phys_segments: layout.phys_segments,
            result,
            ..Default::default()
        };

        let mut inner = self.inner.lock();
        if owner == Owner::Device && !inner.bound {
            // Unbound while allocating: nobody would free a device-owned allocation.
            inner.counters.unreserve(req.size);
            drop(inner);
            drop(mem);
            return Err(ENODEV);
        }
        let handle = NEXT_HANDLE.fetch_add(1, Relaxed);
        report.handle = handle;
        let s = &mut inner.counters.stats[kind.index()];
        s.allocs += 1;
        s.live_count += 1;
        s.live_bytes += req.size;
        inner.allocs.insert(node.into_node(
            handle,
            Allocation {
                owner,
                kind,
                mem,
                report,
            },
        ));
        drop(inner);
        drop(gate);
        Ok(Allocated { handle, report })
    }

    /// FREE: frees `handle` if `owner` may see it; returns the free call's time in ns.
    pub(crate) fn free(&self, owner: Owner, handle: u64) -> Result<u64> {
        let visible = |a: &Allocation| a.owner == owner || a.owner == Owner::Device;
        let kind = {
            let inner = self.inner.lock();
            match inner.allocs.get(&handle) {
                Some(a) if visible(a) => a.kind,
                _ => return Err(ENOENT),
            }
        };
        // The gate first (lock order); then look the handle up again, it may be gone.
        let gate = (kind == Kind::DmaCoherent).then(|| self.dma_gate.lock());
        let a = {
            let mut inner = self.inner.lock();
            match inner.allocs.get(&handle) {
                Some(a) if visible(a) => {}
                _ => return Err(ENOENT),
            }
            let a = inner.allocs.remove(&handle).ok_or(ENOENT)?;
            inner.counters.account_free(&a);
            a
        };
        let ns = a.mem.free();
        drop(gate);
        Ok(ns)
    }

    /// Frees everything file `id` owns (its release).
    pub(crate) fn release_file(&self, id: u64) {
        let _gate = self.dma_gate.lock();
        self.inner.lock().free_where(|a| a.owner == Owner::File(id));
    }

    /// Unbind: frees the device's allocations and every dma_coherent one, refuses new ones, and
    /// unregisters the UIO device. Called while the device is still bound.
    pub(crate) fn unbind(&self) {
        let mut gate = self.dma_gate.lock();
        *gate = false;
        let mut inner = self.inner.lock();
        inner.bound = false;
        inner.free_where(|a| a.owner == Owner::Device || a.kind == Kind::DmaCoherent);
        drop(inner);
        drop(gate);

        let mut uio = self.uio.lock();
        if let Some(reg) = uio.reg.take() {
            uio.last_events = u64::from(reg.event_count());
            dev_info!(
                self.dev(),
                "removed: {} interrupts, {} UIO events\n",
                reg.irq_count(),
                uio.last_events
            );
            drop(reg);
        }
    }

    /// LIST: the allocations `owner` can see with handles above `after`, at most `capacity`;
    /// and how many it can see in all.
    pub(crate) fn list(
        &self,
        owner: Owner,
        hidden: bool,
        after: u64,
        capacity: usize,
    ) -> Result<(KVVec<uapi::Alloc>, u32)> {
        let mut out = KVVec::with_capacity(capacity, GFP_KERNEL)?;
        let inner = self.inner.lock();
        let mut total = 0u32;
        for (handle, a) in inner.allocs.iter() {
            if a.owner != owner && a.owner != Owner::Device {
                continue;
            }
            total += 1;
            if *handle > after && out.len() < capacity {
                let mut entry = a.report;
                if a.owner == owner {
                    entry.result |= uapi::RESULT_OWN;
                }
                if a.owner == Owner::Device {
                    entry.result |= uapi::RESULT_PERSIST;
                }
                if hidden {
                    hide(&mut entry);
                }
                // Cannot fail: `out` has room for `capacity` entries.
                let _ = out.push_within_capacity(entry);
            }
        }
        Ok((out, total))
    }

    /// STATS.
    pub(crate) fn stats(&self) -> uapi::Stats {
        let kinds = self.inner.lock().counters.stats;
        let uio = self.uio.lock();
        let events = match &uio.reg {
            Some(reg) => u64::from(reg.event_count()),
            None => uio.last_events,
        };
        uapi::Stats {
            kinds,
            events,
            ..Default::default()
        }
    }

    /// TRIGGER: raises `count` events; returns the event count after the last one.
    pub(crate) fn trigger(&self, count: u32) -> Result<u64> {
        let uio = self.uio.lock();
        let reg = uio.reg.as_ref().ok_or(ENODEV)?;
        for i in 0..count {
            if i % 1024 == 1023 {
                if fatal_signal_pending() {
                    return Err(EINTR);
                }
                cond_resched();
            }
            reg.trigger();
        }
        Ok(u64::from(reg.event_count()))
    }

    /// BENCH: `iters` alloc+free pairs.
    pub(crate) fn bench(
        &self,
        kind: u32,
        flags: u32,
        size: u64,
        iters: u32,
    ) -> Result<[uapi::Timing; 2]> {
        let kind = Kind::from_abi(kind)?;
        let gfp = gfp_for(kind, flags, false)?;
        let limits = Limits::get();
        if size == 0 || iters == 0 || iters > limits.max_bench_iters {
            return Err(EINVAL);
        }
        if size > limits.max_size[kind.index()] {
            return Err(E2BIG);
        }
        let size = usize::try_from(size)?;
        if !self.inner.lock().bound {
            return Err(ENODEV);
        }
        let mut alloc = Series::new()?;
        let mut free = Series::new()?;
        for i in 0..iters {
            if i % 256 == 255 {
                if fatal_signal_pending() {
                    return Err(EINTR);
                }
                cond_resched();
            }
            let gate = if kind == Kind::DmaCoherent {
                let gate = self.dma_gate.lock();
                if !*gate {
                    return Err(ENODEV);
                }
                Some(gate)
            } else {
                None
            };
            // SAFETY: For dma_coherent, the DMA gate is held and says the device is bound, until
            // after the free below.
            let (mem, a_ns) = unsafe { Mem::alloc(kind, size, gfp, self.dev()) }?;
            let f_ns = mem.free();
            drop(gate);
            alloc.record(a_ns);
            free.record(f_ns);
        }
        Ok([alloc.timing(), free.timing()])
    }

    /// The debugfs `pfns` file: for each live allocation a line `handle kind pages`, then the
    /// page frame number of each page (hex, one a line, from the kernel's page walk), then a
    /// blank line.
    pub(crate) fn write_pfns(this: &Arc<Shared>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = this.inner.lock();
        for (handle, a) in inner.allocs.iter() {
            writeln!(f, "{} {} {}", handle, a.kind.name(), a.report.pages)?;
            let mut res = Ok(());
            a.mem.walk_pfns(a.report.usable_size, |pfn| {
                if res.is_ok() {
                    res = writeln!(f, "{:#x}", pfn);
                }
            });
            res?;
            writeln!(f)?;
        }
        Ok(())
    }
}

/// Clears the addresses of a report for an opener without CAP_SYSLOG.
pub(crate) fn hide(report: &mut uapi::Alloc) {
    report.vaddr = 0;
    report.phys = 0;
    report.dma = 0;
    report.result |= uapi::RESULT_HIDDEN;
}

/// `PAGE_SIZE` for INFO.
pub(crate) fn page_size() -> u32 {
    PAGE_SIZE as u32
}

/// Whether `file` was opened with CAP_SYSLOG in the initial user namespace (the test that
/// `kptr_restrict=1` applies to `%pK`, made on the opener's credentials).
pub(crate) fn file_has_syslog(file: &kernel::fs::File) -> bool {
    // SAFETY: `file.as_ptr()` is a valid file for the duration of this call, and `init_user_ns`
    // is a static that lives forever; `file_ns_capable()` only reads them.
    unsafe {
        bindings::file_ns_capable(
            file.as_ptr(),
            &raw mut bindings::init_user_ns,
            bindings::CAP_SYSLOG as i32,
        )
    }
}
