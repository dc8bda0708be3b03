// SPDX-License-Identifier: GPL-2.0

//! The button as a GPIO line (`button-gpios`), through the C glue in `gpio_glue.c`: Linux 7.3
//! has no Rust binding for GPIO consumers. [`Button`] owns the line.

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

/// The C `struct gpio_desc`, known to Rust only by pointer.
#[repr(C)]
struct RawGpio {
    _private: [u8; 0],
}

// The functions of `gpio_glue.h`; keep in step with it. `dev` is a `struct device *`, declared as
// `void *` as in `uio.rs`.
extern "C" {
    fn kmemlab_button_get(
        dev: *mut c_void,
        debounce_ms: u32,
        irq: *mut c_uint,
        irq_flags: *mut c_ulong,
    ) -> *mut RawGpio;
    fn kmemlab_button_put(desc: *mut RawGpio);
}

/// Largest `debounce-interval` in ms: the glue passes it on in µs, as a `u32`.
pub(crate) const DEBOUNCE_MAX_MS: u32 = u32::MAX / 1000;

/// The `button-gpios` line, requested as an input, and its interrupt.
///
/// # Invariants
///
/// `desc` came from a successful `kmemlab_button_get()` and is put exactly once, in [`Drop`].
pub(crate) struct Button {
    desc: NonNull<RawGpio>,
    /// Linux interrupt number of the line.
    pub(crate) irq: u32,
    /// `IRQF_TRIGGER_*` to request `irq` with: the edge into the line's active level.
    pub(crate) irq_flags: c_ulong,
}

// SAFETY: A GPIO descriptor may be used and put from any thread.
unsafe impl Send for Button {}

// SAFETY: `&Button` gives access to no C state, only to plain fields.
unsafe impl Sync for Button {}

impl Button {
    /// Takes the `button-gpios` line of `dev` and applies `debounce_ms` (at most
    /// [`DEBOUNCE_MAX_MS`]; 0 for none) where the controller can. Failures are logged by the
    /// glue, `EPROBE_DEFER` silently. Must be dropped before `dev` is unbound (keep it in the
    /// driver's private data), after the interrupt was freed.
    pub(crate) fn get(dev: &Device<Bound>, debounce_ms: u32) -> Result<Self> {
        if debounce_ms > DEBOUNCE_MAX_MS {
            return Err(EINVAL);
        }
        let mut irq: c_uint = 0;
        let mut irq_flags: c_ulong = 0;
        // SAFETY: `raw_device(dev)` is a valid device, bound (being probed), so it may take
        // GPIOs; `irq` and `irq_flags` are valid for writes.
        let desc = from_err_ptr(unsafe {
            kmemlab_button_get(
                raw_device(dev).cast(),
                debounce_ms,
                &mut irq,
                &mut irq_flags,
            )
        })?;
        // INVARIANT: `kmemlab_button_get()` succeeded.
        let desc = NonNull::new(desc).ok_or(EINVAL)?;
        Ok(Self {
            desc,
            irq,
            irq_flags,
        })
    }
}

impl Drop for Button {
    fn drop(&mut self) {
        // SAFETY: By the type invariants, `desc` is a live descriptor, put only here.
        unsafe { kmemlab_button_put(self.desc.as_ptr()) };
    }
}
