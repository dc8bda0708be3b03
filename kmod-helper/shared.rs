// SPDX-License-Identifier: GPL-2.0

//! The state open files share with the bound device: live allocations with their owners, what
//! counts against the limits and quotas, and the UIO device for TRIGGER.
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
//! bound, and a later FREE of one gets `ENOENT`. Every `dma_alloc_attrs()` and
//! `dma_free_attrs()` runs inside an SRCU read-side section that found the device bound
//! ([`Shared::dma_section`]); unbind clears `bound`, waits for the sections in flight
//! (`synchronize_srcu()`), and only then frees what is left. Readers never wait for each other:
//! an opener's close() does not wait for another opener's batch of DMA allocations.
//!
//! No lock is held across long work: the allocator calls run outside `inner` (limits are
//! reserved before them, the results inserted after), and release and unbind detach their
//! allocations from the table a bounded number at a time ([`DETACH_CHUNK`]) and free them after
//! dropping `inner`.
//!
//! # Batches and the cost per allocation
//!
//! ALLOC and FREE are batches of one: [`Shared::alloc`] and [`Shared::free`] take a slice of
//! requests, so a batch of 256 takes `inner` twice (reserve, insert) for ALLOC and once for
//! FREE, like a single request does, and allocates no memory of its own per request: the table
//! makes room for the whole batch at once, the batch is charged against the limits and quotas
//! as one sum (entry by entry only when the sum does not fit, to find the first entry that does
//! not), and the counters are added once per batch. The allocator calls of a batch run back to
//! back, timed with one clock read between two ([`Lap`]); the reports (page walk, usable size)
//! are written after them, before `inner` is taken to insert the allocations. Where the time of
//! each phase goes is in the debugfs file `kmemlab/profile` (`profile.rs`).

use kernel::{
    device::Device,
    new_mutex,
    new_srcu,
    platform,
    prelude::*,
    sync::{
        aref::ARef,
        atomic::{
            Atomic,
            Relaxed, //
        },
        Arc,
        Mutex,
        Srcu, //
    }, //
};

use crate::limits::{
    Charge,
    Limits,
    Usage, //
};
use crate::mem::{
    Kind,
    Lap,
    Mem, //
};
use crate::privilege::Privileges;
use crate::profile::{
    Phase,
    Probe, //
};
use crate::report::write_report;
use crate::request::Request;
use crate::stats::{
    self,
    count_failure,
    Tally, //
};
use crate::table::Table;
use crate::uapi;
use crate::uio;

/// The next allocation handle: module-wide, so handles are never reused while the module is
/// loaded, not even across an unbind and a new bind.
static NEXT_HANDLE: Atomic<u64> = Atomic::new(1);

/// Most allocations release and unbind detach in one hold of `inner`.
const DETACH_CHUNK: usize = 256;

/// Most events TRIGGER raises in one hold of the UIO lock.
const TRIGGER_CHUNK: u32 = 1024;

/// Who owns an allocation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// The open file with this id.
    File(u64),
    /// The device (`FLAG_PERSIST`).
    Device,
}

/// An open file as the shared state sees it: its id and its privileges.
#[derive(Clone, Copy)]
pub(crate) struct Opener {
    pub(crate) id: u64,
    pub(crate) privs: Privileges,
}

/// One live allocation.
///
/// Only what cannot be found again is kept: LIST rebuilds the rest of the report from the memory
/// (see [`write_report`]), which keeps the table's slots small.
pub(crate) struct Allocation {
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

impl Allocation {
    /// What the allocation counts against the limits and its owner's quota.
    fn charge(&self) -> Charge {
        Charge::one(self.size, is_atomic(self.flags))
    }
}

/// Whether `flags` ask for a non-blocking allocation, which may draw on the atomic reserves.
pub(crate) fn is_atomic(flags: u32) -> bool {
    flags & (uapi::FLAG_GFP_ATOMIC | uapi::FLAG_GFP_NOWAIT) != 0
}

/// State under `Shared::inner`.
struct Inner {
    /// False from unbind on.
    bound: bool,
    allocs: Table<Allocation>,
    /// Everything counted against the global limits (no quota applies).
    total: Usage,
    /// What each open file holds, by file id; few entries (one per open file).
    files: KVVec<(u64, Usage)>,
}

impl Inner {
    fn usage(&mut self, id: u64) -> Option<&mut Usage> {
        self.files
            .iter_mut()
            .find(|(f, _)| *f == id)
            .map(|(_, usage)| usage)
    }

    /// Charges allocations of `owner` (one, or a batch's sum) against the global limits
    /// (`ENOSPC`) and, for a file, its quota (`quota`: the opener is unprivileged). Charges
    /// nothing when it fails.
    fn charge(&mut self, owner: Owner, c: Charge, limits: &Limits, quota: bool) -> Result {
        if self.total.count.saturating_add(c.count) > limits.max_outstanding_count
            || self.total.bytes.saturating_add(c.bytes) > limits.max_outstanding_bytes
        {
            return Err(ENOSPC);
        }
        if let Owner::File(id) = owner {
            self.usage(id).ok_or(EINVAL)?.charge(c, limits, quota)?;
        }
        // Within the global limits, checked above.
        self.total.charge(c, limits, false)
    }

    /// Takes back a charge made by [`Inner::charge`] (a reservation, or a live allocation that
    /// was freed).
    fn uncharge(&mut self, owner: Owner, c: Charge) {
        uncharge(&mut self.total, &mut self.files, owner, c);
    }

    /// Takes allocation `handle` out of the table if `owner` may see it; returns it, to be
    /// uncharged ([`Inner::uncharge`]) and freed after the lock is dropped. Returns `None`,
    /// leaving it in place, for a dma_coherent one when the caller is not in a DMA section
    /// (`dma_ok`), which must last across its free.
    fn take(&mut self, owner: Owner, handle: u64, dma_ok: bool) -> Result<Option<Allocation>> {
        let entry = self.allocs.entry(handle).ok_or(ENOENT)?;
        let a = entry.get().ok_or(ENOENT)?;
        if a.owner != owner && a.owner != Owner::Device {
            return Err(ENOENT);
        }
        if a.kind == Kind::DmaCoherent && !dma_ok {
            return Ok(None);
        }
        Ok(Some(entry.remove().ok_or(ENOENT)?))
    }
}

/// Takes back a charge from the global counters `total` and from `owner`'s usage in `files`,
/// which is gone when the file was released first.
fn uncharge(total: &mut Usage, files: &mut KVVec<(u64, Usage)>, owner: Owner, c: Charge) {
    total.uncharge(c);
    if let Owner::File(id) = owner {
        if let Some((_, usage)) = files.iter_mut().find(|(f, _)| *f == id) {
            usage.uncharge(c);
        }
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
    /// Size of the heap (UIO map 0).
    pub(crate) heap_size: u64,
    /// The DMA mask set at probe (streaming and coherent).
    pub(crate) dma_mask: u64,
    /// The limits, read from the module parameters at probe (they cannot change after load).
    pub(crate) limits: Limits,
    /// True until unbind begins; read inside DMA sections.
    bound: Atomic<bool>,
    /// Readers: DMA allocations and frees; unbind waits for them.
    #[pin]
    dma_srcu: Srcu,
    #[pin]
    inner: Mutex<Inner>,
    #[pin]
    uio: Mutex<UioState>,
}

/// A DMA section: while it exists, the device stays bound (see [`Shared::dma_section`]).
pub(crate) struct DmaSection<'a> {
    _guard: kernel::sync::srcu::Guard<'a>,
}

impl Shared {
    pub(crate) fn new(
        pdev: ARef<platform::Device>,
        irq: u32,
        heap_size: u64,
        dma_mask: u64,
        reg: uio::Registration,
    ) -> Result<Arc<Self>> {
        Arc::pin_init(
            try_pin_init!(Self {
                pdev,
                irq,
                heap_size,
                dma_mask,
                limits: Limits::get(),
                bound: Atomic::new(true),
                dma_srcu <- new_srcu!("kmemlab_dma"),
                inner <- new_mutex!(Inner {
                    bound: true,
                    allocs: Table::new(),
                    total: Usage::default(),
                    files: KVVec::new(),
                }),
                uio <- new_mutex!(UioState { reg: Some(reg) }),
            }),
            GFP_KERNEL,
        )
    }

    pub(crate) fn dev(&self) -> &Device {
        self.pdev.as_ref()
    }

    /// Enters a DMA section if the device is still bound: DMA allocations and frees made while
    /// it exists happen before unbind frees the rest and returns. `None` once unbind began.
    pub(crate) fn dma_section(&self) -> Option<DmaSection<'_>> {
        let guard = self.dma_srcu.read_lock();
        // A reader that still sees `bound` began before unbind's `synchronize_srcu()` returned,
        // which therefore waits for it; one that began after sees `false` (SRCU orders the
        // store before the grace period against the reader's load).
        if self.bound.load(Relaxed) {
            Some(DmaSection { _guard: guard })
        } else {
            None
        }
    }

    /// Whether unbind has begun; a DMA section checks it between allocations to stop early.
    pub(crate) fn unbinding(&self) -> bool {
        !self.bound.load(Relaxed)
    }

    /// Registers a new open file's usage; `ENOMEM` when there is no room.
    pub(crate) fn open_file(&self, id: u64) -> Result {
        let mut inner = self.inner.lock();
        inner.files.push((id, Usage::default()), GFP_KERNEL)?;
        Ok(())
    }

    /// ALLOC and ALLOC_BATCH: allocates `entries` in order, stopping at the first that fails,
    /// and writes each allocated entry's report (without the `RESULT_OWN`/`RESULT_PERSIST` bits
    /// and unhidden) into it. `FLAG_PERSIST` entries belong to the device, the others to `file`.
    /// `slots` is scratch space, one per entry, without memory in it (as each call leaves them).
    pub(crate) fn alloc(
        &self,
        file: Opener,
        entries: &mut [uapi::Alloc],
        slots: &mut [Slot],
        probe: &mut Probe,
    ) -> Outcome {
        let limits = &self.limits;
        let mut out = Outcome {
            done: entries.len().min(slots.len()),
            error: None,
        };

        // Check every entry first, so that the batch reserves only what it may allocate. An entry
        // with the kind and flags of the one before it needs only its other fields checked.
        let mut dma = false;
        let mut prev: Option<(u32, u32, Request)> = None;
        for (i, (e, slot)) in entries
            .iter()
            .zip(slots.iter_mut())
            .enumerate()
            .take(out.done)
        {
            let checked = match &prev {
                Some((kind, flags, r)) if *kind == e.kind && *flags == e.flags => {
                    r.like(e, limits)
                }
                _ => Request::check(e, limits, file.privs),
            };
            match checked {
                Ok(r) => {
                    dma |= r.kind == Kind::DmaCoherent;
                    slot.req = Some(r);
                    prev = Some((e.kind, e.flags, r));
                }
                Err(err) => {
                    out.stop(i, err);
                    break;
                }
            }
        }
        probe.mark(Phase::Check);
        if out.done == 0 {
            return out;
        }

        let section = if dma {
            match self.dma_section() {
                Some(s) => Some(s),
                None => {
                    out.stop(0, ENODEV);
                    return out;
                }
            }
        } else {
            None
        };
        let owner_of = |e: &uapi::Alloc| {
            if e.flags & uapi::FLAG_PERSIST != 0 {
                Owner::Device
            } else {
                Owner::File(file.id)
            }
        };

        // Reserve against the limits and the quota, for the whole batch at once: its sums for
        // the file and for the device, or, when they do not fit, entry by entry up to the first
        // that does not.
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
            let quota = !file.privs.admin;
            let (mut mine, mut device) = (Charge::default(), Charge::default());
            for (e, slot) in entries.iter().zip(slots.iter()).take(out.done) {
                if let Some(r) = &slot.req {
                    match owner_of(e) {
                        Owner::Device => device.add(r.charge),
                        Owner::File(_) => mine.add(r.charge),
                    }
                }
            }
            let whole = match inner.charge(Owner::File(file.id), mine, limits, quota) {
                Ok(()) => match inner.charge(Owner::Device, device, limits, quota) {
                    Ok(()) => true,
                    Err(_) => {
                        inner.uncharge(Owner::File(file.id), mine);
                        false
                    }
                },
                Err(_) => false,
            };
            if !whole {
                for (i, (e, slot)) in entries.iter().zip(slots.iter()).enumerate().take(out.done) {
                    let Some(r) = &slot.req else {
                        out.stop(i, EINVAL);
                        break;
                    };
                    if let Err(err) = inner.charge(owner_of(e), r.charge, limits, quota) {
                        count_failure(r.kind);
                        out.stop(i, err);
                        break;
                    }
                }
            }
        }
        let reserved = out.done;
        probe.mark(Phase::Reserve);

        // The allocator calls, without a lock and back to back, one clock read between two.
        let mut lap = Lap::start();
        for (i, slot) in slots.iter_mut().enumerate().take(reserved) {
            let Some(r) = slot.req else {
                out.stop(i, EINVAL);
                break;
            };
            if r.kind == Kind::DmaCoherent && self.unbinding() {
                out.stop(i, ENODEV);
                break;
            }
            // SAFETY: For dma_coherent, `section` is a DMA section, so the device stays bound
            // until the allocation is in the table (from where unbind frees it, after the
            // section ends) or freed below, inside the section.
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
        probe.mark(Phase::Allocate);

        // The reports, untimed and outside the lock: the memory is this call's alone until it
        // is in the table. An entry written here that is not inserted below is not copied back
        // (only the first `out.done` are). `e` passed `Request::check`: its out fields are zero.
        for (e, slot) in entries.iter_mut().zip(slots.iter()).take(out.done) {
            if let Some(mem) = &slot.mem {
                write_report(e, slot.alloc_ns, mem);
            }
        }
        probe.mark(Phase::Report);

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
            let owner = owner_of(e);
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
            if let Some(r) = &slot.req {
                inner.uncharge(owner_of(e), r.charge);
                if slot.mem.is_some() {
                    // Allocated, but not inserted: a failure of its kind.
                    count_failure(r.kind);
                }
            }
        }
        drop(inner);
        tally.count_allocs();
        // Free what was allocated but not inserted, inside the DMA section for dma_coherent.
        for slot in slots.iter_mut().take(reserved).skip(out.done) {
            drop(slot.mem.take());
        }
        drop(section);
        probe.mark(Phase::Insert);
        out
    }

    /// FREE and FREE_BATCH: frees the handles of `entries` that `owner` may see, in order,
    /// stopping at the first that fails (`EINVAL` for an entry with a nonzero out or reserved
    /// field, `ENOENT` for an unknown handle, `ENODEV` for a dma_coherent one while unbind frees
    /// it), and writes each freed entry's `free_ns`. `slots` is scratch space, one per entry,
    /// without memory in it (as each call leaves them).
    pub(crate) fn free(
        &self,
        owner: Owner,
        entries: &mut [uapi::Free],
        slots: &mut [Slot],
        probe: &mut Probe,
    ) -> Outcome {
        let mut out = Outcome {
            done: entries.len().min(slots.len()),
            error: None,
        };
        let mut tally = Tally::default();
        let (mut mine, mut device) = (Charge::default(), Charge::default());
        // Entered at the first dma_coherent entry (`tried`); SRCU readers never block, so it
        // may be entered under `inner`. `None` after trying: unbind has begun.
        let mut section: Option<DmaSection<'_>> = None;
        let mut tried = false;
        let mut inner = self.inner.lock();
        let mut i = 0;
        while i < out.done {
            let (Some(e), Some(slot)) = (entries.get(i), slots.get_mut(i)) else {
                break;
            };
            if e.free_ns != 0 || e.reserved != [0; 2] {
                out.stop(i, EINVAL);
                break;
            }
            match inner.take(owner, e.handle, section.is_some()) {
                Ok(Some(a)) => {
                    tally.add(a.kind, a.size);
                    match a.owner {
                        Owner::Device => device.add(a.charge()),
                        Owner::File(_) => mine.add(a.charge()),
                    }
                    slot.mem = Some(a.mem);
                }
                Ok(None) if !tried => {
                    // dma_coherent: enter a DMA section, then look again.
                    tried = true;
                    section = self.dma_section();
                    continue;
                }
                Ok(None) => {
                    // Unbind has begun and frees it itself.
                    out.stop(i, ENODEV);
                    break;
                }
                Err(err) => {
                    out.stop(i, err);
                    break;
                }
            }
            i += 1;
        }
        // Uncharged once for the batch: `take` found each either the caller's or the device's.
        inner.uncharge(owner, mine);
        inner.uncharge(Owner::Device, device);
        inner.allocs.compact();
        drop(inner);
        probe.mark(Phase::Take);

        // The frees, back to back, one clock read between two.
        let mut lap = Lap::start();
        for (e, slot) in entries.iter_mut().zip(slots.iter_mut()).take(out.done) {
            drop(slot.mem.take());
            e.free_ns = lap.lap();
        }
        drop(section);
        tally.count_frees();
        probe.mark(Phase::Free);
        out
    }

    /// Detaches the allocations for which `pred` holds, at most [`DETACH_CHUNK`] per hold of
    /// `inner`, and frees each chunk after dropping it. Without memory for a chunk (a 16 KiB
    /// allocation), they are freed under `inner` as a last resort.
    fn free_where(&self, pred: impl Fn(&Allocation) -> bool) {
        let mut chunk = KVec::<Allocation>::with_capacity(DETACH_CHUNK, GFP_KERNEL).ok();
        let mut after = 0u64;
        loop {
            let mut tally = Tally::default();
            let mut full = false;
            let mut inner = self.inner.lock();
            let Inner {
                allocs,
                total,
                files,
                ..
            } = &mut *inner;
            let last = allocs.take_after(after, &pred, |_, slot| {
                if chunk.as_ref().is_some_and(|c| c.len() >= c.capacity()) {
                    full = true;
                    return false;
                }
                if let Some(a) = slot.take() {
                    uncharge(total, files, a.owner, a.charge());
                    tally.add(a.kind, a.size);
                    match &mut chunk {
                        // Cannot fail: there is room, checked above.
                        Some(c) => drop(c.push_within_capacity(a)),
                        None => drop(a),
                    }
                }
                true
            });
            allocs.compact();
            drop(inner);
            tally.count_frees();
            if let Some(c) = &mut chunk {
                c.clear();
            }
            match last {
                Some(handle) if full => after = handle,
                _ => break,
            }
        }
    }

    /// Frees everything file `id` owns and forgets its usage (its release).
    pub(crate) fn release_file(&self, id: u64) {
        // Its dma_coherent allocations are freed here only inside a DMA section; without one,
        // unbind has begun and frees them itself.
        let section = self.dma_section();
        let dma_ok = section.is_some();
        self.free_where(|a| a.owner == Owner::File(id) && (dma_ok || a.kind != Kind::DmaCoherent));
        drop(section);
        let mut inner = self.inner.lock();
        inner.files.retain(|(f, _)| *f != id);
    }

    /// Unbind: refuses new allocations, waits for the DMA sections in flight, frees the device's
    /// allocations and every dma_coherent one, and unregisters the UIO device. Called while the
    /// device is still bound.
    pub(crate) fn unbind(&self) {
        self.bound.store(false, Relaxed);
        self.inner.lock().bound = false;
        self.dma_srcu.synchronize();
        self.free_where(|a| a.owner == Owner::Device || a.kind == Kind::DmaCoherent);

        let mut uio = self.uio.lock();
        if let Some(reg) = uio.reg.take() {
            let irqs = reg.irq_count();
            let events = u64::from(reg.unregister());
            stats::add_past_events(events);
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
        file: Opener,
        after: u64,
        capacity: usize,
    ) -> Result<(KVVec<uapi::Alloc>, u32)> {
        let owner = Owner::File(file.id);
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
                file.privs.hide(&mut entry);
                // Cannot fail: `out` has room for `capacity` entries.
                let _ = out.push_within_capacity(entry);
            }
        }
        Ok((out, total))
    }

    /// STATS: the module-global counters, and the UIO events since load.
    pub(crate) fn stats(&self) -> uapi::Stats {
        let uio = self.uio.lock();
        let current = match &uio.reg {
            Some(reg) => u64::from(reg.event_count()),
            None => 0,
        };
        stats::snapshot(current)
    }

    /// TRIGGER: raises `count` events; returns the sequence number of the last one. Holds the
    /// UIO lock for at most [`TRIGGER_CHUNK`] events at a time, and stops with `EINTR` at a
    /// pending signal between two chunks.
    pub(crate) fn trigger(&self, count: u32) -> Result<u64> {
        let mut seq = 0;
        let mut left = count;
        while left > 0 {
            let n = left.min(TRIGGER_CHUNK);
            {
                let uio = self.uio.lock();
                let reg = uio.reg.as_ref().ok_or(ENODEV)?;
                for _ in 0..n {
                    seq = reg.trigger();
                }
            }
            left -= n;
            if left > 0 {
                if kernel::current!().signal_pending() {
                    return Err(EINTR);
                }
                crate::mem::cond_resched();
            }
        }
        Ok(seq)
    }

    /// Reserves one allocation of `c` for a BENCH run of `file` against the limits and its
    /// quota; [`Shared::bench_unreserve`] gives it back. `ENODEV` after unbind.
    pub(crate) fn bench_reserve(&self, file: Opener, c: Charge, limits: &Limits) -> Result {
        let mut inner = self.inner.lock();
        if !inner.bound {
            return Err(ENODEV);
        }
        inner.charge(Owner::File(file.id), c, limits, !file.privs.admin)
    }

    /// Gives back a reservation of [`Shared::bench_reserve`].
    pub(crate) fn bench_unreserve(&self, file: Opener, c: Charge) {
        self.inner.lock().uncharge(Owner::File(file.id), c);
    }

    /// Calls `f` with every live allocation (debugfs), under `inner`.
    pub(crate) fn for_each(
        &self,
        mut f: impl FnMut(u64, Kind, u64, &Mem) -> core::fmt::Result,
    ) -> core::fmt::Result {
        let inner = self.inner.lock();
        for (handle, a) in inner.allocs.iter() {
            f(handle, a.kind, a.size, &a.mem)?;
        }
        Ok(())
    }
}
