// SPDX-License-Identifier: GPL-2.0

//! An open file of `/dev/kmemlab`: open (which decides the opener's privileges), the ioctl
//! dispatch (each command is a `cmd_*` method in `ioctl.rs`) and release (which frees what the
//! file owns).

use core::ptr;
use kernel::{
    fs::File,
    ioctl::{
        _IOC_NR,
        _IOC_SIZE,
        _IOC_TYPE, //
    },
    miscdevice::{
        MiscDevice,
        MiscDeviceRegistration, //
    },
    new_mutex,
    prelude::*,
    sync::{
        atomic::{
            Atomic,
            Relaxed, //
        },
        Arc,
        Mutex, //
    },
    uaccess::UserSlice, //
};

use crate::batch::BatchBuffers;
use crate::privilege::Privileges;
use crate::shared::{
    Opener,
    Shared, //
};
use crate::uapi;
use crate::KmemlabDriver;

/// Ids of open files, never reused.
static NEXT_FILE_ID: Atomic<u64> = Atomic::new(1);

/// An open file of `/dev/kmemlab`.
#[pin_data(PinnedDrop)]
pub(crate) struct KmemlabFile {
    pub(crate) shared: Arc<Shared>,
    /// This file's id (the owner of its allocations) and its opener's privileges.
    pub(crate) opener: Opener,
    /// Scratch space of ALLOC_BATCH and FREE_BATCH, from the file's first batch call to its
    /// release; batch calls on one file take turns on it.
    #[pin]
    pub(crate) batch: Mutex<Option<BatchBuffers>>,
}

#[vtable]
impl MiscDevice for KmemlabFile {
    type Ptr = Pin<KBox<Self>>;

    fn open(_file: &File, misc: &MiscDeviceRegistration<Self>) -> Result<Pin<KBox<Self>>> {
        // The 7.3 `MiscDevice` API hands `open` only the registration; reach the driver data
        // around it as C drivers do with `container_of(file->private_data, ...)`.
        //
        // SAFETY: A `MiscDeviceRegistration<KmemlabFile>` only exists as the `miscdev` field of
        // a `KmemlabDriver` (both types are private to this crate, and only `probe` registers
        // one), so stepping back by the field's offset stays within that allocation.
        let drv = unsafe {
            kernel::container_of!(ptr::from_ref(misc).cast_mut(), KmemlabDriver, miscdev)
        };

        // SAFETY: `drv` points to a live `KmemlabDriver` whose `shared` field is initialized:
        // - `try_pin_init!` in `probe` writes `shared` before it registers `miscdev`, and fields
        //   drop in declaration order, so `miscdev` is deregistered before `shared` is dropped.
        // - `misc_open()` holds `misc_mtx` across this call, and `misc_deregister()` takes it, so
        //   the registration (hence the driver data) outlives this call.
        // Only the `shared` field is borrowed, never the whole (possibly still initializing)
        // struct.
        let shared = unsafe { &*ptr::addr_of!((*drv).shared) };

        // `open()` runs in the opener's context: its credentials decide once what it may do.
        let opener = Opener {
            id: NEXT_FILE_ID.fetch_add(1, Relaxed),
            privs: Privileges::of_current(),
        };
        shared.open_file(opener.id)?;
        let this = KBox::pin_init(
            try_pin_init!(Self {
                shared: shared.clone(),
                opener,
                batch <- new_mutex!(None),
            }),
            GFP_KERNEL,
        );
        if this.is_err() {
            shared.release_file(opener.id);
        }
        this
    }

    fn ioctl(me: Pin<&KmemlabFile>, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        if _IOC_TYPE(cmd) != uapi::IOC_MAGIC {
            return Err(ENOTTY);
        }

        match _IOC_NR(cmd) {
            uapi::NR_INFO => me.cmd_info(user_arg(cmd, arg, uapi::IOCTL_INFO)?.writer()),
            uapi::NR_ALLOC => me.cmd_alloc(user_arg(cmd, arg, uapi::IOCTL_ALLOC)?),
            uapi::NR_FREE => me.cmd_free(user_arg(cmd, arg, uapi::IOCTL_FREE)?),
            uapi::NR_LIST => me.cmd_list(user_arg(cmd, arg, uapi::IOCTL_LIST)?),
            uapi::NR_STATS => me.cmd_stats(user_arg(cmd, arg, uapi::IOCTL_STATS)?.writer()),
            uapi::NR_BENCH => me.cmd_bench(user_arg(cmd, arg, uapi::IOCTL_BENCH)?),
            uapi::NR_TRIGGER => me.cmd_trigger(user_arg(cmd, arg, uapi::IOCTL_TRIGGER)?),
            uapi::NR_ALLOC_BATCH => {
                me.cmd_alloc_batch(user_arg(cmd, arg, uapi::IOCTL_ALLOC_BATCH)?)
            }
            uapi::NR_FREE_BATCH => me.cmd_free_batch(user_arg(cmd, arg, uapi::IOCTL_FREE_BATCH)?),
            uapi::NR_NOP if cmd == uapi::IOCTL_NOP => Ok(0),
            uapi::NR_NOP => Err(EINVAL),
            _ => Err(ENOTTY),
        }
    }
}

#[pinned_drop]
impl PinnedDrop for KmemlabFile {
    fn drop(self: Pin<&mut Self>) {
        // A crashed client leaks nothing: its allocations go with its file.
        self.shared.release_file(self.opener.id);
    }
}

/// The user buffer of command `cmd`, whose number matched that of `expected`.
///
/// A known command number with another argument size or direction is `EINVAL`.
fn user_arg(cmd: u32, arg: usize, expected: u32) -> Result<UserSlice> {
    if cmd != expected {
        return Err(EINVAL);
    }
    Ok(UserSlice::new(UserPtr::from_addr(arg), _IOC_SIZE(cmd)))
}
