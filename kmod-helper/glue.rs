// SPDX-License-Identifier: GPL-2.0

//! What the C glue needs of Rust objects: the C `struct device` of a [`Device`].

use kernel::{
    bindings,
    device::{
        Device,
        DeviceContext, //
    },
};

/// Returns the C `struct device` that `dev` is.
///
/// `Device::as_raw` is `pub(crate)` in 7.3, so the kernel crate gives no public way from a
/// `&Device` to its `struct device *`. None is needed: a `&Device` is made only from the address
/// of a live `struct device` (`Device::from_raw` and `Device::get_device`, rust/kernel/device.rs,
/// turn the pointer into a reference of the same address; `ARef<Device>` keeps that address),
/// so the reference's address is the C object's. This relies on that address identity, which
/// every C-to-Rust conversion of the kernel crate provides, not on the layout of `Device`'s
/// private fields.
pub(crate) fn raw_device<Ctx: DeviceContext>(dev: &Device<Ctx>) -> *mut bindings::device {
    core::ptr::from_ref(dev).cast_mut().cast()
}
