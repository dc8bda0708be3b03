// SPDX-License-Identifier: GPL-2.0

//! kmemlab: a platform driver for the `yang,mydevice` device-tree node.
//!
//! On probe it takes the node's interrupt (the board's button), hands it to userspace as UIO
//! device `kmemlab` (the handler masks the line, a write of 1 to `/dev/uioN` unmasks it), and
//! registers the misc device `/dev/kmemlab`, whose ioctls are defined in `uapi/src/abi.rs`.

use core::ptr;
use kernel::{
    device::{
        Bound,
        Core, //
    },
    fs::File,
    miscdevice::{
        MiscDevice,
        MiscDeviceOptions,
        MiscDeviceRegistration, //
    },
    of,
    page::PAGE_SIZE,
    platform,
    prelude::*,
    sync::{
        aref::ARef,
        atomic::{
            Acquire,
            Atomic,
            Release, //
        },
        Arc, //
    },
    transmute::AsBytes,
    uaccess::{
        UserSlice,
        UserSliceWriter, //
    },
};

mod uio;

/// The ioctl ABI, shared with userspace through the `kmemlab-uapi` crate.
#[path = "uapi/src/abi.rs"]
#[allow(
    dead_code,
    unreachable_pub,
    reason = "the ABI file is written for the userspace crate, which uses all of it"
)]
mod uapi;

/// UIO device name; kmemlabd finds its device by this name in `/sys/class/uio`.
const UIO_NAME: &CStr = c"kmemlab";
/// UIO device version (`/sys/class/uio/uioN/version`).
const UIO_VERSION: &CStr = c"0.1";
/// Misc device name: `/dev/kmemlab`.
const MISC_NAME: &CStr = c"kmemlab";

// SAFETY: `Info` is `#[repr(C)]` with fixed-width integer fields only, laid out without padding
// (checked below), so all of its bytes are initialized; it has no interior mutability.
unsafe impl AsBytes for uapi::Info {}

// `Info` has no padding: its size is the sum of its fields.
static_assert!(
    size_of::<uapi::Info>()
        == 4 + 4 + 8 + 4 + 4 + 8 * uapi::MAX_KINDS + 8 + 4 + 4 + size_of::<[u64; 8]>()
);

kernel::of_device_table!(
    OF_TABLE,
    <KmemlabDriver as platform::Driver>::IdInfo,
    [(of::DeviceId::new(c"yang,mydevice"), ())]
);

kernel::module_platform_driver! {
    type: KmemlabDriver,
    name: "kmemlab",
    authors: ["kmemlab authors"],
    description: "kmemlab: kernel memory allocation lab (UIO button interrupt, ioctl interface)",
    license: "GPL v2",
}

/// Whether a `yang,mydevice` device is bound; see [`Claim`].
static CLAIMED: Atomic<bool> = Atomic::new(false);

/// The right to be the one bound device: `/dev/kmemlab` and the UIO name exist once.
///
/// # Invariants
///
/// While a `Claim` exists, `CLAIMED` is true and no other `Claim` exists.
struct Claim(());

impl Claim {
    /// Takes the claim, or returns `None` when another device holds it.
    fn new() -> Option<Self> {
        if CLAIMED.xchg(true, Acquire) {
            None
        } else {
            // INVARIANT: `CLAIMED` was false, and this call set it.
            Some(Self(()))
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        CLAIMED.store(false, Release);
    }
}

/// State of a bound device that open files share, and may keep after it is unbound.
struct Shared {
    /// The platform device, for messages and, later, DMA allocations.
    pdev: ARef<platform::Device>,
    /// Linux interrupt number of the UIO device.
    irq: u32,
}

/// The driver's private data for a bound `yang,mydevice` device.
///
/// Fields drop in declaration order: `/dev/kmemlab` goes first, so no file can be opened on a
/// half-removed device, then the UIO device and its interrupt.
#[pin_data(PinnedDrop)]
struct KmemlabDriver {
    /// `/dev/kmemlab`. [`KmemlabFile::open`] relies on every registration of this type being
    /// this field of a `KmemlabDriver`, registered after `shared` was written.
    #[pin]
    miscdev: MiscDeviceRegistration<KmemlabFile>,
    /// The UIO device for the button interrupt.
    uio: uio::Registration,
    /// What open files need of the device.
    shared: Arc<Shared>,
    /// Dropped last, when everything that exists once is gone.
    _claim: Claim,
}

impl platform::Driver for KmemlabDriver {
    type IdInfo = ();
    type Data<'bound> = Self;
    const OF_ID_TABLE: Option<of::IdTable<Self::IdInfo>> = Some(&OF_TABLE);

    fn probe<'bound>(
        pdev: &'bound platform::Device<Core<'_>>,
        _info: Option<&'bound Self::IdInfo>,
    ) -> impl PinInit<Self, Error> + 'bound {
        pin_init::pin_init_scope(move || {
            let bound: &platform::Device<Bound> = pdev;
            let dev = pdev.as_ref();

            let claim = Claim::new().ok_or_else(|| {
                dev_err!(dev, "only one yang,mydevice device is supported\n");
                EBUSY
            })?;

            let irq = match bound.irq_by_index(0) {
                Ok(request) => request.irq(),
                Err(e) => {
                    if e != EPROBE_DEFER {
                        dev_err!(
                            dev,
                            "no interrupt in the device-tree node: error {}\n",
                            e.to_errno()
                        );
                    }
                    return Err(e);
                }
            };

            let uio = uio::Registration::register(bound.as_ref(), irq, UIO_NAME, UIO_VERSION)
                .inspect_err(|e| {
                    dev_err!(
                        dev,
                        "failed to register UIO device for irq {}: error {}\n",
                        irq,
                        e.to_errno()
                    );
                })?;

            let shared = Arc::new(
                Shared {
                    pdev: pdev.into(),
                    irq,
                },
                GFP_KERNEL,
            )?;

            Ok(try_pin_init!(Self {
                // `shared` is written before `miscdev` is registered, see `KmemlabFile::open`.
                _claim: claim,
                shared,
                uio,
                miscdev <- MiscDeviceRegistration::register(MiscDeviceOptions { name: MISC_NAME }),
            })
            .pin_chain(move |_| {
                dev_info!(
                    dev,
                    "probed: irq {}, UIO device \"{}\", /dev/{}\n",
                    irq,
                    UIO_NAME,
                    MISC_NAME
                );
                Ok(())
            }))
        })
    }
}

#[pinned_drop]
impl PinnedDrop for KmemlabDriver {
    fn drop(self: Pin<&mut Self>) {
        dev_info!(
            self.shared.pdev.as_ref(),
            "removed: {} interrupts, {} UIO events\n",
            self.uio.irq_count(),
            self.uio.event_count()
        );
    }
}

/// An open file of `/dev/kmemlab`.
struct KmemlabFile {
    shared: Arc<Shared>,
}

#[vtable]
impl MiscDevice for KmemlabFile {
    type Ptr = Pin<KBox<Self>>;

    fn open(_file: &File, misc: &MiscDeviceRegistration<Self>) -> Result<Pin<KBox<Self>>> {
        // The 7.3 `MiscDevice` API hands `open` only the registration; reach the driver data
        // around it as C drivers do with `container_of(file->private_data, ...)`.
        //
        // SAFETY: A `MiscDeviceRegistration<KmemlabFile>` only exists as the `miscdev` field of
        // a `KmemlabDriver` (this file's types are private), so stepping back by the field's
        // offset stays within that allocation.
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

        Ok(KBox::pin(
            Self {
                shared: shared.clone(),
            },
            GFP_KERNEL,
        )?)
    }

    fn ioctl(me: Pin<&KmemlabFile>, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        if uapi::ioc_type(cmd) != uapi::IOC_MAGIC {
            return Err(ENOTTY);
        }

        match uapi::ioc_nr(cmd) {
            uapi::NR_INFO => me.cmd_info(user_arg(cmd, arg, uapi::IOCTL_INFO)?.writer()),
            _ => Err(ENOTTY),
        }
    }
}

impl KmemlabFile {
    /// INFO: what the module is and what it accepts.
    fn cmd_info(&self, mut writer: UserSliceWriter) -> Result<isize> {
        let info = uapi::Info {
            abi_version: uapi::ABI_VERSION,
            page_size: u32::try_from(PAGE_SIZE)?,
            irq: self.shared.irq,
            ..Default::default()
        };
        writer.write(&info)?;
        Ok(0)
    }
}

/// The user buffer of command `cmd`, whose number matched that of `expected`.
///
/// A known command number with another argument size or direction is `EINVAL`.
fn user_arg(cmd: u32, arg: usize, expected: u32) -> Result<UserSlice> {
    if cmd != expected {
        return Err(EINVAL);
    }
    Ok(UserSlice::new(UserPtr::from_addr(arg), uapi::ioc_size(cmd)))
}
