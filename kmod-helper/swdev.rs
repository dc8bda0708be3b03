// SPDX-License-Identifier: GPL-2.0

//! The software kmemlab device (module parameter `software_device=1`), through the C glue in
//! `swdev_glue.c`: Linux 7.3 has no Rust binding for creating platform devices. It binds to the
//! driver by name, has no interrupt (TRIGGER is its button) and otherwise works as a
//! device-tree device: the heap, UIO, every allocation kind, an explicit DMA mask.

use core::ptr::NonNull;
use kernel::{
    error::from_err_ptr,
    prelude::*, //
};

/// The C `struct platform_device`, known to Rust only by pointer.
#[repr(C)]
struct RawPlatformDevice {
    _private: [u8; 0],
}

// The functions of `swdev_glue.h`; keep in step with it.
extern "C" {
    fn kmemlab_swdev_register(name: *const c_char) -> *mut RawPlatformDevice;
    fn kmemlab_swdev_unregister(pdev: *mut RawPlatformDevice);
}

/// The registered software device.
///
/// # Invariants
///
/// `pdev` came from a successful `kmemlab_swdev_register()` and is unregistered exactly once,
/// in [`Drop`].
pub(crate) struct SoftwareDevice {
    pdev: NonNull<RawPlatformDevice>,
}

// SAFETY: A platform device may be unregistered from any thread.
unsafe impl Send for SoftwareDevice {}

// SAFETY: `&SoftwareDevice` gives access to nothing.
unsafe impl Sync for SoftwareDevice {}

impl SoftwareDevice {
    /// Registers a platform device named `name` (the driver's name, so that it binds to it).
    pub(crate) fn register(name: &'static CStr) -> Result<Self> {
        // SAFETY: `name` is NUL-terminated; the glue copies it. Process context (module init).
        let pdev = from_err_ptr(unsafe { kmemlab_swdev_register(name.as_char_ptr()) })?;
        // INVARIANT: `kmemlab_swdev_register()` succeeded.
        NonNull::new(pdev).map(|pdev| Self { pdev }).ok_or(EINVAL)
    }
}

impl Drop for SoftwareDevice {
    fn drop(&mut self) {
        // SAFETY: By the type invariants, `pdev` is registered and unregistered only here;
        // drop runs in process context (module exit or a failed init).
        unsafe { kmemlab_swdev_unregister(self.pdev.as_ptr()) };
    }
}
