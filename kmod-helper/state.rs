// SPDX-License-Identifier: GPL-2.0

//! The state open files share with the bound device: live allocations, counters, limits, and the
//! UIO device for TRIGGER.
//!
//! # Ownership and unbind
//!
//! Every live allocation is in one table ([`Table`]), keyed by handle, with its owner: an open
//! file, or the device (`FLAG_PERSIST`). A file's allocations are freed when the file is released;
//! the device's when the device is unbound (which module unload does). `Shared` itself is
//! reference-counted and outlives the unbind while files are open, so a file's kmalloc, vmalloc,
//! kvmalloc and pages allocations stay valid (and freeable) until the file is closed.
//!
//! dma_coherent allocations must not outlive the binding: they are freed against the device. So
//! unbind frees *every* dma_coherent allocation, whoever owns it, while the device is still
//! bound, and a later FREE of one gets `ENOENT`. A DMA gate (a mutex around a `bound` flag)
//! is held across every `dma_alloc_attrs()` and `dma_free_attrs()` and by unbind, so none of them
//! can run once unbind has begun. After unbind, ALLOC, BENCH and TRIGGER give `ENODEV`.
//!
//! Lock order: DMA gate, then `inner`. No spinlock is held across an allocation; the allocator
//! calls run outside `inner` (limits are reserved before them, the results inserted after).
//!
//! # Batches and the cost per allocation
//!
//! ALLOC and FREE are batches of one: [`Shared::alloc`] and [`Shared::free`] take a slice of
//! requests, so a batch of 256 takes `inner` twice (reserve, insert) for ALLOC and once for
//! FREE, like a single request does, and allocates no memory of its own per request: the table
//! makes room for the whole batch at once, and the counters are added once per batch. The
//! allocator calls of a batch run back to back, timed with one clock read between two
//! ([`Lap`]); each report (page walk, `ksize()`) is written after them, under `inner` as its
//! allocation goes into the table: one pass over the batch instead of two, which under
//! emulation saved more than the walk costs the lock (1,024 steps for a 4 MiB vmalloc area).
//!
//! # Counters
//!
//! The per-kind counters of STATS are module-global ([`COUNTERS`]): they count since the module
//! was loaded, across unbinds and rebinds. Live counts drop when an allocation is freed, by FREE,
//! by a file's release or by unbind, whichever binding it was made under.

use core::fmt;
use kernel::{
    bindings,
    device::Device,
    new_mutex,
    page::PAGE_SIZE,
    platform,
    prelude::*,
    sync::{
        aref::ARef,
        atomic::{
            Atomic,
            Relaxed, //
        },
        Arc,
        Mutex, //
        MutexGuard,
    }, //
};

use crate::bench::Series;
use crate::mem::{
    cond_resched,
    fatal_signal_pending,
    gfp_for,
    Kind,
    Lap,
    Mem, //
};
use crate::table::Table;
use crate::uapi;
use crate::uio;

/// The next allocation handle: module-wide, so handles are never reused while the module is
/// loaded, not even across an unbind and a new bind.
static NEXT_HANDLE: Atomic<u64> = Atomic::new(1);

/// Counters of one kind since the module was loaded; STATS reads them as `uapi::KindStats`.
struct KindCounters {
    live_count: Atomic<u64>,
    live_bytes: Atomic<u64>,
    allocs: Atomic<u64>,
    frees: Atomic<u64>,
    failures: Atomic<u64>,
}

impl KindCounters {
    const fn new() -> Self {
        Self {
            live_count: Atomic::new(0),
            live_bytes: Atomic::new(0),
            allocs: Atomic::new(0),
            frees: Atomic::new(0),
            failures: Atomic::new(0),
        }
    }

    fn snapshot(&self) -> uapi::KindStats {
        uapi::KindStats {
            live_count: self.live_count.load(Relaxed),
            live_bytes: self.live_bytes.load(Relaxed),
            allocs: self.allocs.load(Relaxed),
            frees: self.frees.load(Relaxed),
            failures: self.failures.load(Relaxed),
        }
    }
}

/// STATS counters per kind, module-global so that they count since load (see the module
/// documentation).
static COUNTERS: [KindCounters; uapi::MAX_KINDS] = [const { KindCounters::new() }; uapi::MAX_KINDS];

/// UIO events counted by UIO devices that have been unregistered since load.
static PAST_EVENTS: Atomic<u64> = Atomic::new(0);

/// Counts a refused or failed allocation.
fn count_failure(kind: Kind) {
    COUNTERS[kind.index()].failures.add(1u64, Relaxed);
}

/// Allocations or frees of a batch, per kind, added to [`COUNTERS`] at once.
#[derive(Default)]
struct Tally([(u64, u64); uapi::MAX_KINDS]);

impl Tally {
    fn add(&mut self, kind: Kind, bytes: u64) {
        let t = &mut self.0[kind.index()];
        t.0 += 1;
        t.1 += bytes;
    }

    fn count_allocs(&self) {
        for (c, &(n, bytes)) in COUNTERS.iter().zip(self.0.iter()) {
            if n != 0 {
                c.allocs.add(n, Relaxed);
                c.live_count.add(n, Relaxed);
                c.live_bytes.add(bytes, Relaxed);
            }
        }
    }

    fn count_frees(&self) {
        for (c, &(n, bytes)) in COUNTERS.iter().zip(self.0.iter()) {
            if n != 0 {
                c.frees.add(n, Relaxed);
                c.live_count.fetch_sub(n, Relaxed);
                c.live_bytes.fetch_sub(bytes, Relaxed);
            }
        }
    }
}

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
///
/// Only what cannot be found again is kept: LIST rebuilds the rest of the report from the memory
/// (see [`write_report`]), which keeps the table's slots small.
struct Allocation {
    owner: Owner,
    kind: Kind,
    /// The request's `FLAG_*` bits.
    flags: u32,
    /// The requested size.
    size: u64,
    /// Time in the allocator call.
    alloc_ns: u64,
    mem: Mem,
}

/// Counters under `Shared::inner`: what counts against the limits.
struct Counters {
    /// Bytes and allocations counted against the limits: live ones, and reservations of
    /// allocations in progress.
    outstanding_bytes: u64,
    outstanding_count: u32,
}

impl Counters {
    /// Returns a reservation, or the accounting of a live allocation that was freed.
    fn unreserve(&mut self, size: u64) {
        self.outstanding_bytes -= size;
        self.outstanding_count -= 1;
    }
}

/// State under `Shared::inner`.
struct Inner {
    /// False from unbind on.
    bound: bool,
    allocs: Table<Allocation>,
    counters: Counters,
}

impl Inner {
    /// Frees every allocation for which `pred` holds.
    fn free_where(&mut self, pred: impl Fn(&Allocation) -> bool) {
        let mut tally = Tally::default();
        let counters = &mut self.counters;
        self.allocs.remove_where(pred, |a| {
            counters.unreserve(a.size);
            tally.add(a.kind, a.size);
            drop(a);
        });
        tally.count_frees();
    }

    /// Takes allocation `handle` out of the table if `owner` may see it; returns its kind, size
    /// and memory, to be freed after the lock is dropped. Returns `None`, leaving it in place,
    /// for a dma_coherent one when the caller does not hold the DMA gate (`gated`), which must
    /// be held across its free.
    fn take(&mut self, owner: Owner, handle: u64, gated: bool) -> Result<Option<(Kind, u64, Mem)>> {
        let entry = self.allocs.entry(handle).ok_or(ENOENT)?;
        let a = entry.get().ok_or(ENOENT)?;
        if a.owner != owner && a.owner != Owner::Device {
            return Err(ENOENT);
        }
        if a.kind == Kind::DmaCoherent && !gated {
            return Ok(None);
        }
        let a = entry.remove().ok_or(ENOENT)?;
        self.counters.unreserve(a.size);
        Ok(Some((a.kind, a.size, a.mem)))
    }
}

/// An ALLOC request that passed the checks.
#[derive(Clone, Copy)]
struct Request {
    kind: Kind,
    gfp: bindings::gfp_t,
    size: usize,
}

impl Request {
    /// Checks an ALLOC entry: only `kind`, `flags` and `size` may be set (`EINVAL`), the kind
    /// and flags must be valid (`EINVAL`), the size from 1 to the kind's limit (`EINVAL`,
    /// `E2BIG`, which counts as a failure).
    fn check(req: &uapi::Alloc, limits: &Limits) -> Result<Self> {
        let input_only = uapi::Alloc {
            kind: req.kind,
            flags: req.flags,
            size: req.size,
            ..Default::default()
        };
        if *req != input_only {
            return Err(EINVAL);
        }
        let kind = Kind::from_abi(req.kind)?;
        let gfp = gfp_for(kind, req.flags, true)?;
        if req.size == 0 {
            return Err(EINVAL);
        }
        if req.size > limits.max_size[kind.index()] {
            count_failure(kind);
            return Err(E2BIG);
        }
        Ok(Self {
            kind,
            gfp,
            size: usize::try_from(req.size)?,
        })
    }
}

/// Scratch space for one entry of a batch: its checked request and, between the allocator
/// call and the table (or the table and the free), its memory and how long the allocator took.
pub(crate) struct Slot {
    req: Option<Request>,
    mem: Option<Mem>,
    alloc_ns: u64,
}

impl Slot {
    pub(crate) const EMPTY: Slot = Slot {
        req: None,
        mem: None,
        alloc_ns: 0,
    };
}

/// How far a batch got: the first `done` entries succeeded; `error` is that of entry `done`.
pub(crate) struct Outcome {
    pub(crate) done: usize,
    pub(crate) error: Option<Error>,
}

impl Outcome {
    /// Stops the batch at entry `at` with `error`, if it has not stopped earlier.
    fn stop(&mut self, at: usize, error: Error) {
        if at < self.done {
            self.done = at;
            self.error = Some(error);
        }
    }
}

/// The UIO device, until unbind.
struct UioState {
    reg: Option<uio::Registration>,
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
                    allocs: Table::new(),
                    counters: Counters {
                        outstanding_bytes: 0,
                        outstanding_count: 0,
                    },
                }),
                uio <- new_mutex!(UioState { reg: Some(reg) }),
            }),
            GFP_KERNEL,
        )
    }

    fn dev(&self) -> &Device {
        self.pdev.as_ref()
    }

    /// ALLOC and ALLOC_BATCH: allocates `entries` in order, stopping at the first that fails,
    /// and writes each allocated entry's report (without the `RESULT_OWN`/`RESULT_PERSIST` bits
    /// and unhidden) into it. `FLAG_PERSIST` entries belong to the device, the others to `file`.
    /// `slots` is scratch space, one per entry, without memory in it (as each call leaves them).
    pub(crate) fn alloc(
        &self,
        file: Owner,
        entries: &mut [uapi::Alloc],
        slots: &mut [Slot],
    ) -> Outcome {
        let limits = Limits::get();
        let mut out = Outcome {
            done: entries.len().min(slots.len()),
            error: None,
        };

        // Check every entry first, so that the batch reserves only what it may allocate. An entry
        // equal to the one before it passes as that one did.
        let mut dma = false;
        let mut prev: Option<(&uapi::Alloc, Request)> = None;
        for (i, (e, slot)) in entries
            .iter()
            .zip(slots.iter_mut())
            .enumerate()
            .take(out.done)
        {
            let checked = match prev {
                Some((p, r)) if p == e => Ok(r),
                _ => Request::check(e, &limits),
            };
            match checked {
                Ok(r) => {
                    dma |= r.kind == Kind::DmaCoherent;
                    slot.req = Some(r);
                    prev = Some((e, r));
                }
                Err(err) => {
                    out.stop(i, err);
                    break;
                }
            }
        }
        if out.done == 0 {
            return out;
        }

        let gate = if dma {
            let gate = self.dma_gate.lock();
            if !*gate {
                out.stop(0, ENODEV);
                return out;
            }
            Some(gate)
        } else {
            None
        };

        // Reserve against the limits, for the whole batch at once.
        {
            let mut inner = self.inner.lock();
            if !inner.bound {
                out.stop(0, ENODEV);
                return out;
            }
            if let Err(err) = inner.allocs.reserve(out.done) {
                out.stop(0, err);
                return out;
            }
            let c = &mut inner.counters;
            for (i, (e, slot)) in entries.iter().zip(slots.iter()).enumerate().take(out.done) {
                if c.outstanding_count >= limits.max_outstanding_count
                    || c.outstanding_bytes.saturating_add(e.size) > limits.max_outstanding_bytes
                {
                    if let Some(r) = &slot.req {
                        count_failure(r.kind);
                    }
                    out.stop(i, ENOSPC);
                    break;
                }
                c.outstanding_count += 1;
                c.outstanding_bytes += e.size;
            }
        }
        let reserved = out.done;

        // The allocator calls, without a lock and back to back, one clock read between two.
        let mut lap = Lap::start();
        for (i, slot) in slots.iter_mut().enumerate().take(reserved) {
            let Some(r) = slot.req else {
                out.stop(i, EINVAL);
                break;
            };
            // SAFETY: For dma_coherent, the caller holds the DMA gate, which says the device is
            // bound, until the allocation is in the table (from where unbind frees it under the
            // gate) or freed.
            let mem = unsafe { Mem::alloc(r.kind, r.size, r.gfp, self.dev()) };
            slot.alloc_ns = lap.lap();
            match mem {
                Ok(mem) => slot.mem = Some(mem),
                Err(err) => {
                    count_failure(r.kind);
                    out.stop(i, err);
                    break;
                }
            }
        }

        // Insert what was allocated, return the rest of the reservation. The room made in the
        // table above may have gone to another batch, or to a compaction, while the lock was
        // dropped: make it again, in this hold.
        let mut tally = Tally::default();
        let mut inner = self.inner.lock();
        if let Err(err) = inner.allocs.reserve(out.done) {
            out.stop(0, err);
        }
        let first = NEXT_HANDLE.fetch_add(out.done as u64, Relaxed);
        for (i, (e, slot)) in entries
            .iter_mut()
            .zip(slots.iter_mut())
            .enumerate()
            .take(out.done)
        {
            let owner = if e.flags & uapi::FLAG_PERSIST != 0 {
                Owner::Device
            } else {
                file
            };
            if owner == Owner::Device && !inner.bound {
                // Unbound while allocating: nobody would free a device-owned allocation.
                out.stop(i, ENODEV);
                break;
            }
            // Every entry below `out.done` was allocated: the slot is full.
            let (Some(mem), Some(r)) = (slot.mem.take(), slot.req) else {
                out.stop(i, EINVAL);
                break;
            };
            // The report, untimed. `e` passed `Request::check`: its out fields are zero.
            write_report(e, slot.alloc_ns, &mem);
            let handle = first + i as u64;
            let a = Allocation {
                owner,
                kind: r.kind,
                flags: e.flags,
                size: e.size,
                alloc_ns: slot.alloc_ns,
                mem,
            };
            if let Err(a) = inner.allocs.push(handle, a) {
                // No room (made in this hold of the lock, so this does not happen): free it below.
                slot.mem = Some(a.mem);
                out.stop(i, ENOMEM);
                break;
            }
            e.handle = handle;
            tally.add(r.kind, e.size);
        }
        for (e, slot) in entries
            .iter()
            .zip(slots.iter())
            .take(reserved)
            .skip(out.done)
        {
            inner.counters.unreserve(e.size);
            if let (Some(_), Some(r)) = (&slot.mem, &slot.req) {
                // Allocated, but not inserted: a failure of its kind.
                count_failure(r.kind);
            }
        }
        drop(inner);
        tally.count_allocs();
        // Free what was allocated but not inserted, under the DMA gate for dma_coherent.
        for slot in slots.iter_mut().take(reserved).skip(out.done) {
            drop(slot.mem.take());
        }
        drop(gate);
        out
    }

    /// FREE and FREE_BATCH: frees the handles of `entries` that `owner` may see, in order,
    /// stopping at the first that fails (`EINVAL` for an entry with a nonzero out or reserved
    /// field, `ENOENT` for an unknown handle), and writes each freed entry's `free_ns`.
    /// `slots` is scratch space, one per entry, without memory in it (as each call leaves them).
    pub(crate) fn free(
        &self,
        owner: Owner,
        entries: &mut [uapi::Free],
        slots: &mut [Slot],
    ) -> Outcome {
        let mut out = Outcome {
            done: entries.len().min(slots.len()),
            error: None,
        };
        let mut tally = Tally::default();
        let mut gate: Option<MutexGuard<'_, bool>> = None;
        let mut i = 0;
        let mut inner = self.inner.lock();
        while i < out.done {
            let (Some(e), Some(slot)) = (entries.get(i), slots.get_mut(i)) else {
                break;
            };
            if e.free_ns != 0 || e.reserved != [0; 2] {
                out.stop(i, EINVAL);
                break;
            }
            match inner.take(owner, e.handle, gate.is_some()) {
                Ok(Some((kind, size, mem))) => {
                    tally.add(kind, size);
                    slot.mem = Some(mem);
                }
                Ok(None) => {
                    // dma_coherent: the gate comes before `inner`; take both again, then look
                    // again (the handle may be gone by then).
                    drop(inner);
                    gate = Some(self.dma_gate.lock());
                    inner = self.inner.lock();
                    continue;
                }
                Err(err) => {
                    out.stop(i, err);
                    break;
                }
            }
            i += 1;
        }
        inner.allocs.compact();
        drop(inner);

        // The frees, back to back, one clock read between two.
        let mut lap = Lap::start();
        for (e, slot) in entries.iter_mut().zip(slots.iter_mut()).take(out.done) {
            drop(slot.mem.take());
            e.free_ns = lap.lap();
        }
        drop(gate);
        tally.count_frees();
        out
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
            let irqs = reg.irq_count();
            // Also revokes the user mappings of the heap, which the driver frees next.
            let events = u64::from(reg.unregister());
            PAST_EVENTS.add(events, Relaxed);
            dev_info!(
                self.dev(),
                "removed: {} interrupts, {} UIO events\n",
                irqs,
                events
            );
        }
    }

    /// LIST: the allocations `owner` can see with handles above `after`, at most `capacity`;
    /// and how many it can see in all. Each report is rebuilt under `inner` with a page walk:
    /// for all the listed allocations together, at most one step per page of
    /// `max_outstanding_bytes` (16,384 with the defaults).
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
            if handle > after && out.len() < capacity {
                let mut entry = uapi::Alloc {
                    handle,
                    kind: a.kind.abi(),
                    flags: a.flags,
                    size: a.size,
                    ..Default::default()
                };
                write_report(&mut entry, a.alloc_ns, &a.mem);
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

    /// STATS: the module-global counters, and the UIO events since load.
    pub(crate) fn stats(&self) -> uapi::Stats {
        let mut kinds = [uapi::KindStats::default(); uapi::MAX_KINDS];
        for (k, c) in kinds.iter_mut().zip(COUNTERS.iter()) {
            *k = c.snapshot();
        }
        let uio = self.uio.lock();
        let current = match &uio.reg {
            Some(reg) => u64::from(reg.event_count()),
            None => 0,
        };
        uapi::Stats {
            kinds,
            events: PAST_EVENTS.load(Relaxed) + current,
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
            let mut lap = Lap::start();
            // SAFETY: For dma_coherent, the DMA gate is held and says the device is bound, until
            // after the free below.
            let mem = unsafe { Mem::alloc(kind, size, gfp, self.dev()) };
            let a_ns = lap.lap();
            drop(mem?);
            let f_ns = lap.lap();
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
            let layout = a.mem.layout(usize::try_from(a.size).unwrap_or(usize::MAX));
            writeln!(f, "{} {} {}", handle, a.kind.name(), layout.pages)?;
            let mut res = Ok(());
            a.mem.walk_pfns(layout.usable_size, |pfn| {
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

/// Writes the report of an allocation into `e`, which holds its request (`kind`, `flags`,
/// `size`) and zeros: the allocator's time and where `mem` is (a page walk, which finds the same
/// pages each time: none of these allocators moves its memory). Only the out fields are written:
/// the request's are in place already.
fn write_report(e: &mut uapi::Alloc, alloc_ns: u64, mem: &Mem) {
    let layout = mem.layout(usize::try_from(e.size).unwrap_or(usize::MAX));
    let mut result = 0;
    if e.flags & uapi::FLAG_ZERO != 0 || mem.always_zeroed() {
        result |= uapi::RESULT_ZEROED;
    }
    if mem.dma().is_some() {
        result |= uapi::RESULT_DMA;
    }
    e.vaddr = mem.vaddr() as u64;
    e.phys = layout.phys;
    e.dma = mem.dma().unwrap_or(0);
    e.usable_size = layout.usable_size;
    e.alloc_ns = alloc_ns;
    e.pages = layout.pages;
    e.phys_segments = layout.phys_segments;
    e.result = result;
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
