// SPDX-License-Identifier: GPL-2.0

//! UIO device registration, through the C glue in `uio_glue.c`.
//!
//! Linux 7.3 has no Rust binding for `linux/uio_driver.h`; the glue registers the device,
//! requests its interrupt and handles it as `uio_pdrv_genirq` does (mask in the handler,
//! userspace unmasks by writing 1 to `/dev/uioN`), counting each event together with its
//! interrupt-ring record (`uapi::IrqRecord`). It also exposes the heap ([`Heap`]) as map 0. This
//! file wraps the glue's handle in [`Registration`].

use core::ptr::NonNull;
use kernel::{
    device::{
        Bound,
        Device, //
    },
    error::from_err_ptr,
    prelude::*, //
};

use crate::glue::raw_device;
use crate::heap::Heap;
use crate::uapi;

/// The glue's `struct kmemlab_uio`, known to Rust only by pointer.
#[repr(C)]
struct RawUio {
    _private: [u8; 0],
}

// The functions of `uio_glue.h`; keep in step with it. `parent` is a `struct device *` and
// `pages` a `struct page **`, declared with `void` because `bindings::device` and
// `bindings::page` are not FFI-safe by rustc's lint (a zero-sized lockdep field when lockdep is
// off).
extern "C" {
    fn kmemlab_uio_register(
        parent: *mut c_void,
        irq: c_uint,
        irq_flags: c_ulong,
        name: *const c_char,
        version: *const c_char,
        pages: *mut *mut c_void,
        nr_pages: c_ulong,
        slots: u32,
    ) -> *mut RawUio;
    fn kmemlab_uio_unregister(uio: *mut RawUio) -> u32;
    fn kmemlab_uio_trigger(uio: *mut RawUio) -> u64;
    fn kmemlab_uio_event_count(uio: *const RawUio) -> u32;
    fn kmemlab_uio_irq_count(uio: *const RawUio) -> u32;
}

/// A UIO device for one interrupt line of a bound device, with the heap as map 0.
///
/// Once it is unregistered (drop, or [`Registration::unregister`]) the heap may be dropped:
/// mappings of the heap hold references to its pages of their own.
///
/// # Invariants
///
/// `uio` was returned by a successful `kmemlab_uio_register()` and is unregistered exactly once,
/// in [`Drop`] or [`Registration::unregister`]; until then the UIO device exists, its interrupt
/// is requested and its handler writes to the heap.
pub(crate) struct Registration {
    uio: NonNull<RawUio>,
}

// SAFETY: The glue's functions may be called from any thread; the handle is not tied to the thread
// that registered it.
unsafe impl Send for Registration {}

// SAFETY: `trigger` takes the glue's spinlock around the ring write and `uio_event_notify()`, and
// the counters only read atomics; all may run concurrently from any context.
unsafe impl Sync for Registration {}

impl Registration {
    /// Registers UIO device `name` for interrupt `irq` of `parent`, with `heap` as map 0.
    ///
    /// The interrupt is requested with `irq_flags` (`IRQF_TRIGGER_*`), or with the trigger type
    /// the firmware gave it when that is 0. At most one registration exists at a time (`EBUSY`).
    /// The registration must be dropped before `parent` is unbound, as for any resource of a
    /// bound device: keep it in the driver's bus device private data.
    ///
    /// # Safety
    ///
    /// `heap` outlives the registration. (Userspace may write the heap through its mappings,
    /// the ring page included; the kernel only writes the ring and never reads it back.)
    pub(crate) unsafe fn register(
        parent: &Device<Bound>,
        irq: u32,
        irq_flags: c_ulong,
        name: &'static CStr,
        version: &'static CStr,
        heap: &Heap,
    ) -> Result<Self> {
        // SAFETY:
        // - `raw_device(parent)` is a valid `struct device`, bound to a driver, for the duration
        //   of this call; `uio_register_device()` takes its own reference for the UIO device.
        // - `name` and `version` are NUL-terminated and `'static`, so they outlive the device.
        // - The heap's page array and pages outlive the registration, by the caller's
        //   guarantee; it has at least one page, whose first bytes are the ring header.
        let uio = from_err_ptr(unsafe {
            kmemlab_uio_register(
                raw_device(parent).cast(),
                irq,
                irq_flags,
                name.as_char_ptr(),
                version.as_char_ptr(),
                heap.raw_pages().cast(),
                heap.nr_pages() as c_ulong,
                uapi::RING_SLOTS,
            )
        })?;

        // INVARIANT: `kmemlab_uio_register()` succeeded, so `uio` is a live handle.
        NonNull::new(uio).map(|uio| Self { uio }).ok_or(EINVAL)
    }

    /// Raises a UIO event as the interrupt does, without touching the interrupt line: writes a
    /// `SOURCE_TRIGGER` ring record, then counts the event and wakes readers. Returns the
    /// event's sequence number.
    pub(crate) fn trigger(&self) -> u64 {
        // SAFETY: By the type invariants, `self.uio` is registered.
        unsafe { kmemlab_uio_trigger(self.uio.as_ptr()) }
    }

    /// The UIO event count, the value a read of `/dev/uioN` returns.
    pub(crate) fn event_count(&self) -> u32 {
        // SAFETY: By the type invariants, `self.uio` is registered.
        unsafe { kmemlab_uio_event_count(self.uio.as_ptr()) }
    }

    /// Unregisters the device (as dropping it does) and returns the final UIO event count.
    pub(crate) fn unregister(self) -> u32 {
        let uio = self.uio;
        core::mem::forget(self);
        // SAFETY: By the type invariants, `uio` is registered; `self` was forgotten, so `Drop`
        // will not unregister it again. Called in process context (unbind).
        unsafe { kmemlab_uio_unregister(uio.as_ptr()) }
    }

    /// The number of interrupts the handler has taken.
    pub(crate) fn irq_count(&self) -> u32 {
        // SAFETY: By the type invariants, `self.uio` is registered.
        unsafe { kmemlab_uio_irq_count(self.uio.as_ptr()) }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // SAFETY: By the type invariants, `self.uio` is registered and this is the only place that
        // unregisters it; drop runs in process context, as the driver's private data is dropped at
        // unbind.
        let _ = unsafe { kmemlab_uio_unregister(self.uio.as_ptr()) };
    }
}
