// SPDX-License-Identifier: GPL-2.0

//! kmemlab: a platform driver for the `yang,mydevice` device-tree node.
//!
//! On probe it sets the device's DMA mask, allocates the heap (size from `yang,heap-size`; its
//! first page holds the interrupt ring), takes the node's interrupt (the board's button), hands
//! both to userspace as UIO device `kmemlab` (the handler masks the line, writes the event's
//! ring record and counts the event; a write of 1 to `/dev/uioN` unmasks it; the heap is map 0),
//! and registers the misc device `/dev/kmemlab`, whose ioctls are defined in `uapi/src/abi.rs`,
//! and the debugfs files `kmemlab/pfns` and `kmemlab/profile`.
//!
//! One concept per file: `dt` (the device-tree node), `heap`, `uio` and `gpio` (the C glue's
//! wrappers), `file` (open, dispatch, release) and `ioctl` (the commands), `batch` (a file's
//! batch buffers), `privilege`, `limits`, `request` (an ALLOC request checked), `shared` (the
//! allocations open files share), `mem`
//! (the allocation kinds), `report`, `table`, `stats`, `bench`, `pfns` and `profile` (debugfs).

use kernel::{
    debugfs,
    device::{
        Bound,
        Core, //
    },
    dma::{
        Device as _,
        DmaMask, //
    },
    ioctl::{
        _IOR,
        _IOWR, //
    },
    miscdevice::{
        MiscDeviceOptions,
        MiscDeviceRegistration, //
    },
    of,
    platform,
    prelude::*,
    sync::{
        atomic::{
            Acquire,
            Atomic,
            Release, //
        },
        Arc, //
    },
    transmute::{
        AsBytes,
        FromBytes, //
    }, //
};

mod batch;
mod bench;
mod dt;
mod file;
mod glue;
mod gpio;
mod heap;
mod ioctl;
mod limits;
mod mem;
mod pfns;
mod profile;
mod privilege;
mod report;
mod request;
mod shared;
mod stats;
mod swdev;
mod table;
mod uio;

/// The ioctl ABI, shared with userspace through the `kmemlab-uapi` crate.
#[path = "uapi/src/abi.rs"]
#[allow(
    dead_code,
    unreachable_pub,
    reason = "the ABI file is written for the userspace crate, which uses all of it"
)]
mod uapi;

use file::KmemlabFile;
use heap::Heap;
use shared::Shared;

/// UIO device name; kmemlabd finds its device by this name in `/sys/class/uio`.
const UIO_NAME: &CStr = c"kmemlab";
/// UIO device version (`/sys/class/uio/uioN/version`).
const UIO_VERSION: &CStr = c"2";
/// Misc device name: `/dev/kmemlab`.
const MISC_NAME: &CStr = c"kmemlab";

// The ABI structs carry no padding the compiler added: each size is the sum of its fields.
static_assert!(
    size_of::<uapi::Info>()
        == 4 + 4 + 8 + 4 + 4 + 8 * uapi::MAX_KINDS + 8 + 4 + 4 + 4 + 4 + 8 * 3 + 4 + 4 + 8 * 2 + 8
);
static_assert!(size_of::<uapi::Alloc>() == 4 + 4 + 8 * 7 + 4 * 4 + 8 * 2);
static_assert!(size_of::<uapi::Free>() == 8 * 4);
static_assert!(size_of::<uapi::List>() == 8 + 8 + 4 * 4);
static_assert!(size_of::<uapi::KindStats>() == 8 * 5);
static_assert!(size_of::<uapi::Stats>() == 40 * uapi::MAX_KINDS + 8 + 8 * 3);
static_assert!(size_of::<uapi::Timing>() == 8 * 6);
static_assert!(size_of::<uapi::Bench>() == 4 + 4 + 8 + 4 + 4 + 48 * 2 + 8 * 2);
static_assert!(size_of::<uapi::Trigger>() == 4 + 4 + 8);
static_assert!(size_of::<uapi::AllocBatch>() == 8 + 4 * 4 + 8 * 2);
static_assert!(size_of::<uapi::FreeBatch>() == 8 + 4 * 4 + 8 * 2);
static_assert!(size_of::<uapi::RingHeader>() == uapi::RING_RECORDS_OFFSET);
static_assert!(size_of::<uapi::IrqRecord>() == 32);
static_assert!(
    uapi::RING_RECORDS_OFFSET + uapi::RING_SLOTS as usize * size_of::<uapi::IrqRecord>()
        <= kernel::page::PAGE_SIZE
);

/// Implements `AsBytes` and `FromBytes` for ABI structs.
macro_rules! plain_abi_struct {
    ($($t:ty),*) => {$(
        // SAFETY: `$t` is `#[repr(C)]` with fixed-width integer fields (and arrays and structs of
        // them) only and no padding (asserted above), so every byte is initialized and any bytes
        // are a valid value; it has no interior mutability.
        unsafe impl AsBytes for $t {}
        // SAFETY: As above.
        unsafe impl FromBytes for $t {}
    )*};
}
plain_abi_struct!(
    uapi::Info,
    uapi::Alloc,
    uapi::Free,
    uapi::List,
    uapi::Stats,
    uapi::Bench,
    uapi::Trigger,
    uapi::AllocBatch,
    uapi::FreeBatch,
    uapi::RingHeader
);

// The hand-written encoding of uapi/src/abi.rs (shared with userspace) is the kernel's.
static_assert!(uapi::IOCTL_INFO == _IOR::<uapi::Info>(uapi::IOC_MAGIC, uapi::NR_INFO));
static_assert!(uapi::IOCTL_ALLOC == _IOWR::<uapi::Alloc>(uapi::IOC_MAGIC, uapi::NR_ALLOC));
static_assert!(uapi::IOCTL_FREE == _IOWR::<uapi::Free>(uapi::IOC_MAGIC, uapi::NR_FREE));
static_assert!(uapi::IOCTL_LIST == _IOWR::<uapi::List>(uapi::IOC_MAGIC, uapi::NR_LIST));
static_assert!(uapi::IOCTL_STATS == _IOR::<uapi::Stats>(uapi::IOC_MAGIC, uapi::NR_STATS));
static_assert!(uapi::IOCTL_BENCH == _IOWR::<uapi::Bench>(uapi::IOC_MAGIC, uapi::NR_BENCH));
static_assert!(uapi::IOCTL_TRIGGER == _IOWR::<uapi::Trigger>(uapi::IOC_MAGIC, uapi::NR_TRIGGER));
static_assert!(
    uapi::IOCTL_ALLOC_BATCH == _IOWR::<uapi::AllocBatch>(uapi::IOC_MAGIC, uapi::NR_ALLOC_BATCH)
);
static_assert!(
    uapi::IOCTL_FREE_BATCH == _IOWR::<uapi::FreeBatch>(uapi::IOC_MAGIC, uapi::NR_FREE_BATCH)
);

kernel::of_device_table!(
    OF_TABLE,
    <KmemlabDriver as platform::Driver>::IdInfo,
    [(of::DeviceId::new(c"yang,mydevice"), ())]
);

/// The module: the platform driver, and the software device when `software_device=1`.
///
/// Fields drop in declaration order: the software device goes first (which unbinds it), then
/// the driver.
#[pin_data]
struct KmemlabModule {
    _swdev: Option<swdev::SoftwareDevice>,
    #[pin]
    _driver: kernel::driver::Registration<platform::Adapter<KmemlabDriver>>,
}

impl kernel::InPlaceModule for KmemlabModule {
    fn init(module: &'static kernel::ThisModule) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            _driver <- kernel::driver::Registration::new(MODULE_NAME, module),
            // After the driver, so that the device binds at once.
            _swdev: match module_parameters::software_device.value() {
                0 => None,
                1 => Some(swdev::SoftwareDevice::register(MODULE_NAME)?),
                _ => {
                    pr_err!("software_device must be 0 or 1\n");
                    return Err(EINVAL);
                }
            },
        })
    }
}

/// The module's and the driver's name; the software device has it too.
const MODULE_NAME: &CStr = c"kmemlab";

kernel::prelude::module! {
    type: KmemlabModule,
    name: "kmemlab",
    authors: ["kmemlab authors"],
    description: "kmemlab: kernel memory allocation lab (UIO button interrupt, ioctl interface)",
    license: "GPL v2",
    params: {
        max_size_kmalloc: u64 {
            default: 4 << 20,
            description: "Largest kmalloc allocation in bytes (at most KMALLOC_MAX_SIZE)",
        },
        max_size_vmalloc: u64 {
            default: 64 << 20,
            description: "Largest vmalloc allocation in bytes",
        },
        max_size_dma_coherent: u64 {
            default: 4 << 20,
            description: "Largest dma_coherent allocation in bytes",
        },
        max_size_kvmalloc: u64 {
            default: 64 << 20,
            description: "Largest kvmalloc allocation in bytes (at most INT_MAX)",
        },
        max_size_pages: u64 {
            default: 4 << 20,
            description: "Largest pages allocation in bytes (at most PAGE_SIZE << MAX_PAGE_ORDER)",
        },
        max_outstanding_bytes: u64 {
            default: 64 << 20,
            description: "Most bytes allocated at once, over all kinds and owners",
        },
        max_outstanding_count: u32 {
            default: 65536,
            description: "Most allocations live at once, over all kinds and owners",
        },
        max_bench_iters: u32 {
            default: 1_000_000,
            description: "Most alloc+free pairs one BENCH may run",
        },
        max_trigger_count: u32 {
            default: 100_000,
            description: "Most events one TRIGGER may raise",
        },
        software_device: u32 {
            default: 0,
            description: "1: also create a kmemlab device without a device-tree node and without an interrupt (TRIGGER is its button), for PCs and boards whose device tree cannot be edited",
        },
        file_max_bytes: u64 {
            default: 16 << 20,
            description: "Most bytes one opener without CAP_SYS_ADMIN may hold (EDQUOT beyond)",
        },
        file_max_count: u32 {
            default: 1024,
            description: "Most allocations one opener without CAP_SYS_ADMIN may hold (EDQUOT beyond)",
        },
        atomic_quota_bytes: u64 {
            default: 64 << 10,
            description: "Most bytes of GFP_ATOMIC/GFP_NOWAIT allocations one opener without CAP_SYS_ADMIN may hold (EPERM beyond)",
        },
        bench_max_bytes: u64 {
            default: 64 << 20,
            description: "Most bytes (iters times size) one BENCH of an opener without CAP_SYS_ADMIN may allocate (EPERM beyond)",
        },
    },
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

/// Runs [`Shared::unbind`] when dropped: frees the device's and all DMA allocations and
/// unregisters the UIO device, while the device is still bound.
struct Unbind(Arc<Shared>);

impl Drop for Unbind {
    fn drop(&mut self) {
        self.0.unbind();
    }
}

/// The driver's private data for a bound `yang,mydevice` device.
///
/// Fields drop in declaration order: `/dev/kmemlab` goes first, so no file can be opened on a
/// half-removed device, then the debugfs file, then [`Unbind`] (allocations, UIO device and its
/// interrupt), then the button's GPIO line, then the heap (whose pages live on in mappings).
#[pin_data]
pub(crate) struct KmemlabDriver {
    /// `/dev/kmemlab`. [`KmemlabFile::open`] relies on every registration of this type being
    /// this field of a `KmemlabDriver`, registered after `shared` was written.
    #[pin]
    pub(crate) miscdev: MiscDeviceRegistration<KmemlabFile>,
    /// `kmemlab/pfns` in debugfs.
    #[pin]
    pfns: debugfs::File<Arc<Shared>>,
    /// `kmemlab/profile` in debugfs.
    #[pin]
    profile: debugfs::File<()>,
    /// `kmemlab/` in debugfs.
    _debugfs: debugfs::Dir,
    /// Frees allocations and unregisters the UIO device (freeing its interrupt).
    _unbind: Unbind,
    /// The `button-gpios` line, when the button is wired that way; put after its interrupt
    /// was freed.
    _button: Option<gpio::Button>,
    /// The heap (UIO map 0); dropped after the UIO device is gone.
    _heap: Heap,
    /// What open files need of the device.
    pub(crate) shared: Arc<Shared>,
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

            // The properties first: a bad node fails with one line, before anything is taken.
            let size = dt::heap_size(dev)?;
            let wiring = dt::wiring(dev)?;
            let bits = dt::dma_bits(dev)?;

            let claim = Claim::new().ok_or_else(|| {
                dev_err!(dev, "only one yang,mydevice device is supported\n");
                EBUSY
            })?;

            let (irq, irq_flags, button) = match wiring {
                // No interrupt: the glue registers the UIO device without one.
                dt::Wiring::None => (0, 0, None),
                dt::Wiring::Interrupt => match bound.optional_irq_by_index(0) {
                    // The trigger type is the one the interrupt specifier gave.
                    Ok(request) => (request.irq(), 0, None),
                    Err(e) => {
                        if e != EPROBE_DEFER {
                            dev_err!(
                                dev,
                                "cannot get the interrupt of interrupts/interrupts-extended: \
                                 error {}\n",
                                e.to_errno()
                            );
                        }
                        return Err(e);
                    }
                },
                dt::Wiring::Gpio { debounce_ms } => {
                    let button = gpio::Button::get(bound.as_ref(), debounce_ms)?;
                    (button.irq, button.irq_flags, Some(button))
                }
            };

            let mask = DmaMask::try_new(bits)?;
            // SAFETY: Called in probe, before this driver makes any DMA allocation or mapping
            // for the device.
            unsafe { pdev.dma_set_mask_and_coherent(mask) }.inspect_err(|e| {
                dev_err!(
                    dev,
                    "cannot set a {}-bit DMA mask: error {}\n",
                    bits,
                    e.to_errno()
                );
            })?;

            let heap = Heap::new(size, uapi::RING_SLOTS).inspect_err(|e| {
                dev_err!(
                    dev,
                    "failed to allocate the {} byte heap: error {}\n",
                    size,
                    e.to_errno()
                );
            })?;

            // SAFETY: `heap` is dropped after `_unbind`, which drops the registration.
            let uio = unsafe {
                uio::Registration::register(
                    bound.as_ref(),
                    irq,
                    irq_flags,
                    UIO_NAME,
                    UIO_VERSION,
                    &heap,
                )
            }?;

            let state = Shared::new(pdev.into(), irq, size as u64, mask.value(), uio)?;
            let dir = debugfs::Dir::new(c"kmemlab");
            let wired = match (button.is_some(), irq) {
                (true, _) => " (button-gpios)",
                (false, 0) => " (none: software device, TRIGGER is the button)",
                _ => "",
            };

            Ok(try_pin_init!(Self {
                // `shared` is written before `miscdev` is registered, see `KmemlabFile::open`.
                _claim: claim,
                shared: state.clone(),
                _heap: heap,
                // `_button` before `_unbind`: if a later field fails, the fields written so
                // far are dropped in reverse, and the interrupt (freed by `Unbind`) must go
                // before its GPIO line is put, as in the declaration order used on removal.
                _button: button,
                _unbind: Unbind(state.clone()),
                pfns <- dir.read_callback_file::<Arc<Shared>, core::convert::Infallible, _>(
                    c"pfns",
                    state,
                    &pfns::write_pfns,
                ),
                profile <- dir.read_write_callback_file::<(), core::convert::Infallible, _, _>(
                    c"profile",
                    (),
                    &profile::write_profile,
                    &profile::write_control,
                ),
                _debugfs: dir,
                miscdev <- MiscDeviceRegistration::register(MiscDeviceOptions { name: MISC_NAME }),
            })
            .pin_chain(move |_| {
                dev_info!(
                    dev,
                    "probed: irq {}{}, heap {} bytes, {}-bit DMA mask, UIO device \"{}\", /dev/{}\n",
                    irq,
                    wired,
                    size,
                    bits,
                    UIO_NAME,
                    MISC_NAME
                );
                Ok(())
            }))
        })
    }
}
