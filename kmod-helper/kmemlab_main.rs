// SPDX-License-Identifier: GPL-2.0

//! kmemlab: a platform driver for the `yang,mydevice` device-tree node.
//!
//! On probe it allocates the DMA-coherent heap (size from `yang,heap-size`), takes the node's
//! interrupt (the board's button), hands both to userspace as UIO device `kmemlab` (the handler
//! masks the line and writes an interrupt-ring record into the heap, a write of 1 to `/dev/uioN`
//! unmasks it, the heap is map 0), and registers the misc device `/dev/kmemlab`, whose ioctls are
//! defined in `uapi/src/abi.rs`, and the debugfs file `kmemlab/pfns`.

use core::ptr;
use kernel::{
    debugfs,
    device::{
        Bound,
        Core, //
    },
    dma::Coherent,
    fs::File,
    miscdevice::{
        MiscDevice,
        MiscDeviceOptions,
        MiscDeviceRegistration, //
    },
    new_mutex,
    of,
    platform,
    prelude::*,
    sync::{
        atomic::{
            Acquire,
            Atomic,
            Relaxed,
            Release, //
        },
        Arc,
        Mutex, //
    },
    transmute::{
        AsBytes,
        FromBytes, //
    },
    uaccess::{
        UserSlice,
        UserSliceReader,
        UserSliceWriter, //
    }, //
};

mod bench;
mod gpio;
mod mem;
mod state;
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

use state::{
    Owner,
    Shared, //
};

/// UIO device name; kmemlabd finds its device by this name in `/sys/class/uio`.
const UIO_NAME: &CStr = c"kmemlab";
/// UIO device version (`/sys/class/uio/uioN/version`).
const UIO_VERSION: &CStr = c"1";
/// Misc device name: `/dev/kmemlab`.
const MISC_NAME: &CStr = c"kmemlab";
/// Device-tree property with the heap size in bytes (u32).
const HEAP_SIZE_PROP: &CStr = c"yang,heap-size";
/// Device-tree property with the button's GPIO line (the consumer name is "button").
const BUTTON_GPIOS_PROP: &CStr = c"button-gpios";
/// Device-tree property with the button line's debounce time in ms (u32).
const DEBOUNCE_PROP: &CStr = c"debounce-interval";
/// Largest heap size accepted from the device tree.
const HEAP_MAX_SIZE: u64 = 64 << 20;

// The ABI structs carry no padding the compiler added: each size is the sum of its fields.
static_assert!(
    size_of::<uapi::Info>() == 4 + 4 + 8 + 4 + 4 + 8 * uapi::MAX_KINDS + 8 + 4 + 4 + 4 + 4 + 8 * 7
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
    },
}

/// Whether a `yang,mydevice` device is bound; see [`Claim`].
static CLAIMED: Atomic<bool> = Atomic::new(false);

/// Ids of open files, never reused.
static NEXT_FILE_ID: Atomic<u64> = Atomic::new(1);

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
/// interrupt, user mappings of the heap), then the button's GPIO line, then the heap.
#[pin_data]
struct KmemlabDriver {
    /// `/dev/kmemlab`. [`KmemlabFile::open`] relies on every registration of this type being
    /// this field of a `KmemlabDriver`, registered after `shared` was written.
    #[pin]
    miscdev: MiscDeviceRegistration<KmemlabFile>,
    /// `kmemlab/pfns` in debugfs.
    #[pin]
    pfns: debugfs::File<Arc<Shared>>,
    /// `kmemlab/` in debugfs.
    _debugfs: debugfs::Dir,
    /// Frees allocations and unregisters the UIO device (freeing its interrupt).
    _unbind: Unbind,
    /// The `button-gpios` line, when the button is wired that way; put after its interrupt
    /// was freed.
    _button: Option<gpio::Button>,
    /// The DMA-coherent heap (UIO map 0); freed after the UIO device is gone.
    _heap: Coherent<[u8]>,
    /// What open files need of the device.
    shared: Arc<Shared>,
    /// Dropped last, when everything that exists once is gone.
    _claim: Claim,
}

/// Reads the u32 property `name`: `None` when absent. Anything but one 32-bit cell is an error,
/// logged as one line that names the property (the OF core's own readers would silently take the
/// first four bytes of a longer value).
fn read_u32_prop(dev: &kernel::device::Device, name: &CStr) -> Result<Option<u32>> {
    let Some(node) = dev.fwnode() else {
        return Ok(None);
    };
    if !node.property_present(name) {
        return Ok(None);
    }
    let len = node.property_count_elem::<u8>(name).unwrap_or(0);
    if len != size_of::<u32>() {
        dev_err!(
            dev,
            "{} is malformed: want one 32-bit cell (4 bytes), found {} bytes\n",
            name,
            len
        );
        return Err(EINVAL);
    }
    node.property_read::<u32>(name)
        .optional()
        .map(Some)
        .ok_or_else(|| {
            dev_err!(dev, "{} is malformed: cannot read it as a u32\n", name);
            EINVAL
        })
}

/// Reads and checks `yang,heap-size`: absent gives [`uapi::HEAP_DEFAULT_SIZE`].
fn heap_size(dev: &kernel::device::Device) -> Result<usize> {
    let size = read_u32_prop(dev, HEAP_SIZE_PROP)?.map_or(uapi::HEAP_DEFAULT_SIZE, u64::from);
    let page = kernel::page::PAGE_SIZE as u64;
    if size < page || size % page != 0 || size > HEAP_MAX_SIZE {
        dev_err!(
            dev,
            "{} {} is invalid: want a multiple of the page size {} from {} to {}\n",
            HEAP_SIZE_PROP,
            size,
            page,
            page,
            HEAP_MAX_SIZE
        );
        return Err(EINVAL);
    }
    Ok(usize::try_from(size)?)
}

/// How the button is wired, from the device-tree node.
enum Wiring {
    /// `interrupts` or `interrupts-extended`.
    Interrupt,
    /// `button-gpios`, with `debounce-interval` in ms (0: none).
    Gpio { debounce_ms: u32 },
}

/// Reads and checks the button's wiring: exactly one of an interrupt and `button-gpios`, and
/// `debounce-interval` only with `button-gpios`.
fn wiring(dev: &kernel::device::Device) -> Result<Wiring> {
    let present = |name: &CStr| dev.fwnode().is_some_and(|n| n.property_present(name));
    let irq = present(c"interrupts") || present(c"interrupts-extended");
    let gpio = present(BUTTON_GPIOS_PROP);
    let debounce = read_u32_prop(dev, DEBOUNCE_PROP)?;
    match (irq, gpio) {
        (true, true) => {
            dev_err!(
                dev,
                "both interrupts and {} are set: the button is wired one way, give one\n",
                BUTTON_GPIOS_PROP
            );
            Err(EINVAL)
        }
        (false, false) => {
            dev_err!(
                dev,
                "no button: the node needs interrupts, interrupts-extended or {}\n",
                BUTTON_GPIOS_PROP
            );
            Err(EINVAL)
        }
        (true, false) if debounce.is_some() => {
            dev_err!(
                dev,
                "{} needs {}: an interrupt cannot be debounced\n",
                DEBOUNCE_PROP,
                BUTTON_GPIOS_PROP
            );
            Err(EINVAL)
        }
        (true, false) => Ok(Wiring::Interrupt),
        (false, true) => {
            let debounce_ms = debounce.unwrap_or(0);
            if debounce_ms > gpio::DEBOUNCE_MAX_MS {
                dev_err!(
                    dev,
                    "{} {} ms is invalid: want at most {} ms\n",
                    DEBOUNCE_PROP,
                    debounce_ms,
                    gpio::DEBOUNCE_MAX_MS
                );
                return Err(EINVAL);
            }
            Ok(Wiring::Gpio { debounce_ms })
        }
    }
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
            let size = heap_size(dev)?;
            let wiring = wiring(dev)?;

            let claim = Claim::new().ok_or_else(|| {
                dev_err!(dev, "only one yang,mydevice device is supported\n");
                EBUSY
            })?;

            let (irq, irq_flags, button) = match wiring {
                Wiring::Interrupt => match bound.optional_irq_by_index(0) {
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
                Wiring::Gpio { debounce_ms } => {
                    let button = gpio::Button::get(bound.as_ref(), debounce_ms)?;
                    (button.irq, button.irq_flags, Some(button))
                }
            };

            let heap = Coherent::<u8>::zeroed_slice(bound.as_ref(), size, GFP_KERNEL).inspect_err(
                |e| {
                    dev_err!(
                        dev,
                        "failed to allocate the {} byte DMA-coherent heap: error {}\n",
                        size,
                        e.to_errno()
                    );
                },
            )?;
            let ring = uapi::RingHeader {
                magic: uapi::RING_MAGIC,
                version: uapi::RING_VERSION,
                slots: uapi::RING_SLOTS,
                record_size: size_of::<uapi::IrqRecord>() as u32,
                ..Default::default()
            };
            // SAFETY: The heap is at least a page, page aligned, and not yet shared with anyone
            // (no UIO device, no device DMA), so this write races with nothing.
            unsafe { ptr::write_volatile(heap.as_mut_ptr().cast::<uapi::RingHeader>(), ring) };
            // The glue maps the heap to userspace as one run of page frames from its first
            // one. Behind an IOMMU, dma_alloc_coherent() may join scattered pages with a
            // remap; mapping "the pages after the first" would then hand out whatever
            // memory follows it. Refuse such a heap.
            // SAFETY: The heap is a live DMA-coherent allocation of `size` bytes, mapped in
            // the linear map or (remapped) in vmalloc space.
            if !unsafe { mem::phys_contiguous(heap.as_ptr().cast(), size) } {
                dev_err!(
                    dev,
                    "the {} byte DMA-coherent heap is not physically contiguous (an IOMMU?): it cannot be mapped to userspace\n",
                    size
                );
                return Err(ENXIO);
            }
            let heap_desc = uio::Heap {
                cpu: heap.as_mut_ptr().cast(),
                // SAFETY: The heap is a live DMA-coherent allocation, mapped in the linear map or
                // (remapped for a non-coherent device) in vmalloc space.
                phys: unsafe { mem::phys_of(heap.as_ptr().cast()) },
                size,
                slots: uapi::RING_SLOTS,
            };

            // SAFETY: `heap` was allocated against this device with `dma_alloc_coherent()`; it is
            // dropped after `_unbind`, which drops the registration, and only the glue writes it.
            let uio = unsafe {
                uio::Registration::register(
                    bound.as_ref(),
                    irq,
                    irq_flags,
                    UIO_NAME,
                    UIO_VERSION,
                    &heap_desc,
                )
            }
            .inspect_err(|e| {
                dev_err!(
                    dev,
                    "failed to register UIO device for irq {}: error {}\n",
                    irq,
                    e.to_errno()
                );
            })?;

            let state = Shared::new(pdev.into(), irq, size as u64, uio)?;
            let dir = debugfs::Dir::new(c"kmemlab");
            let has_button = button.is_some();

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
                    &Shared::write_pfns,
                ),
                _debugfs: dir,
                miscdev <- MiscDeviceRegistration::register(MiscDeviceOptions { name: MISC_NAME }),
            })
            .pin_chain(move |_| {
                dev_info!(
                    dev,
                    "probed: irq {}{}, heap {} bytes, UIO device \"{}\", /dev/{}\n",
                    irq,
                    if has_button { " (button-gpios)" } else { "" },
                    size,
                    UIO_NAME,
                    MISC_NAME
                );
                Ok(())
            }))
        })
    }
}

/// An open file of `/dev/kmemlab`.
#[pin_data(PinnedDrop)]
struct KmemlabFile {
    shared: Arc<Shared>,
    /// This file's id: the owner of its allocations.
    id: u64,
    /// The opener lacked CAP_SYSLOG: addresses are reported as 0.
    hidden: bool,
    /// Scratch space of ALLOC_BATCH and FREE_BATCH, from the file's first batch call to its
    /// release; batch calls on one file take turns on it.
    #[pin]
    batch: Mutex<Option<BatchBuffers>>,
}

/// A file's kernel copy of a batch's entries and its scratch space: about 50 KiB, allocated
/// once rather than per call (allocating, zeroing and filling them cost about 230 ns per entry
/// under emulation, and freeing them more).
struct BatchBuffers {
    allocs: KVVec<uapi::Alloc>,
    frees: KVVec<uapi::Free>,
    slots: KVVec<state::Slot>,
}

impl BatchBuffers {
    fn new() -> Result<Self> {
        let max = uapi::BATCH_MAX as usize;
        let mut slots = KVVec::with_capacity(max, GFP_KERNEL)?;
        for _ in 0..max {
            // Cannot fail: there is room for `max` entries.
            let _ = slots.push_within_capacity(state::Slot::EMPTY);
        }
        Ok(Self {
            allocs: KVVec::from_elem(uapi::Alloc::default(), max, GFP_KERNEL)?,
            frees: KVVec::from_elem(uapi::Free::default(), max, GFP_KERNEL)?,
            slots,
        })
    }

    /// The first `count` ALLOC entries and slots; `EINVAL` above `BATCH_MAX`.
    fn allocs(&mut self, count: usize) -> Result<(&mut [uapi::Alloc], &mut [state::Slot])> {
        let Self { allocs, slots, .. } = self;
        let slots = slots.get_mut(..count).ok_or(EINVAL)?;
        Ok((allocs.get_mut(..count).ok_or(EINVAL)?, slots))
    }

    /// The first `count` FREE entries and slots; `EINVAL` above `BATCH_MAX`.
    fn frees(&mut self, count: usize) -> Result<(&mut [uapi::Free], &mut [state::Slot])> {
        let Self { frees, slots, .. } = self;
        let slots = slots.get_mut(..count).ok_or(EINVAL)?;
        Ok((frees.get_mut(..count).ok_or(EINVAL)?, slots))
    }

    /// The buffers of `guard`, allocated on first use. The slots need no emptying between
    /// calls: `Shared::alloc` and `Shared::free` leave no memory in them.
    fn get(guard: &mut Option<BatchBuffers>) -> Result<&mut Self> {
        match guard {
            Some(buf) => Ok(buf),
            None => Ok(guard.insert(Self::new()?)),
        }
    }
}

#[vtable]
impl MiscDevice for KmemlabFile {
    type Ptr = Pin<KBox<Self>>;

    fn open(file: &File, misc: &MiscDeviceRegistration<Self>) -> Result<Pin<KBox<Self>>> {
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

        KBox::pin_init(
            try_pin_init!(Self {
                shared: shared.clone(),
                id: NEXT_FILE_ID.fetch_add(1, Relaxed),
                hidden: !state::file_has_syslog(file),
                batch <- new_mutex!(None),
            }),
            GFP_KERNEL,
        )
    }

    fn ioctl(me: Pin<&KmemlabFile>, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        if uapi::ioc_type(cmd) != uapi::IOC_MAGIC {
            return Err(ENOTTY);
        }

        match uapi::ioc_nr(cmd) {
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
            _ => Err(ENOTTY),
        }
    }
}

impl KmemlabFile {
    fn owner(&self) -> Owner {
        Owner::File(self.id)
    }

    /// INFO: what the module is and what it accepts.
    fn cmd_info(&self, mut writer: UserSliceWriter) -> Result<isize> {
        let limits = state::Limits::get();
        let info = uapi::Info {
            abi_version: uapi::ABI_VERSION,
            page_size: state::page_size(),
            heap_size: self.shared.heap_size,
            kinds: mem::Kind::ALL
                .iter()
                .fold(0, |k, kind| k | 1 << kind.index()),
            flags: mem::supported_flags(),
            max_size: limits.max_size,
            max_outstanding_bytes: limits.max_outstanding_bytes,
            max_outstanding_count: limits.max_outstanding_count,
            irq: self.shared.irq,
            max_bench_iters: limits.max_bench_iters,
            max_trigger_count: limits.max_trigger_count,
            ..Default::default()
        };
        writer.write(&info)?;
        Ok(0)
    }

    /// ALLOC: allocates as asked and reports where the memory is.
    fn cmd_alloc(&self, arg: UserSlice) -> Result<isize> {
        let (mut reader, mut writer) = arg.reader_writer();
        let mut entry: uapi::Alloc = read_in(&mut reader)?;
        let mut slot = [state::Slot::EMPTY];
        let out = self
            .shared
            .alloc(self.owner(), core::slice::from_mut(&mut entry), &mut slot);
        if let Some(err) = out.error {
            return Err(err);
        }
        let handle = entry.handle;
        self.finish_report(&mut entry);
        if let Err(err) = writer.write(&entry) {
            // The caller cannot learn the handle: undo the allocation.
            self.undo([handle]);
            return Err(err);
        }
        Ok(0)
    }

    /// ALLOC_BATCH: ALLOC for each entry of an array, in one call; see `uapi::AllocBatch`.
    fn cmd_alloc_batch(&self, arg: UserSlice) -> Result<isize> {
        let (mut reader, mut writer) = arg.reader_writer();
        let mut req: uapi::AllocBatch = read_in(&mut reader)?;
        let count = batch_count(req.count, req.done, req.error, req._pad, req.reserved)?;
        let (mut array_in, mut array_out) = batch_array::<uapi::Alloc>(req.entries, count)?;
        let mut guard = self.batch.lock();
        let buf = BatchBuffers::get(&mut guard)?;
        let (entries, slots) = buf.allocs(count)?;
        array_in.read_slice(entries.as_bytes_mut())?;
        let out = self.shared.alloc(self.owner(), entries, slots);
        let done = entries.get_mut(..out.done).unwrap_or_default();
        for e in done.iter_mut() {
            self.finish_report(e);
        }
        req.done = out.done as u32;
        req.error = out.error.map_or(0, |e| -e.to_errno());
        let written = array_out
            .write_slice(done.as_bytes())
            .and_then(|()| writer.write(&req));
        if let Err(err) = written {
            // The caller cannot learn the handles (which hiding leaves in place): undo the
            // allocations.
            self.undo(done.iter().map(|e| e.handle));
            return Err(err);
        }
        Ok(0)
    }

    /// Adds the ownership bits to a fresh allocation report and hides its addresses from an
    /// opener without CAP_SYSLOG.
    fn finish_report(&self, report: &mut uapi::Alloc) {
        // As LIST marks them: this file's own, or the device's.
        report.result |= if report.flags & uapi::FLAG_PERSIST != 0 {
            uapi::RESULT_PERSIST
        } else {
            uapi::RESULT_OWN
        };
        if self.hidden {
            state::hide(report);
        }
    }

    /// Frees allocations this file just made and could not report.
    fn undo(&self, handles: impl IntoIterator<Item = u64>) {
        for handle in handles {
            let mut entry = uapi::Free {
                handle,
                ..Default::default()
            };
            let mut slot = [state::Slot::EMPTY];
            let _ = self
                .shared
                .free(self.owner(), core::slice::from_mut(&mut entry), &mut slot);
        }
    }

    /// FREE: frees a handle this file may see.
    fn cmd_free(&self, arg: UserSlice) -> Result<isize> {
        let (mut reader, mut writer) = arg.reader_writer();
        let mut entry: uapi::Free = read_in(&mut reader)?;
        let mut slot = [state::Slot::EMPTY];
        let out = self
            .shared
            .free(self.owner(), core::slice::from_mut(&mut entry), &mut slot);
        if let Some(err) = out.error {
            return Err(err);
        }
        writer.write(&entry)?;
        Ok(0)
    }

    /// FREE_BATCH: FREE for each entry of an array, in one call; see `uapi::FreeBatch`.
    fn cmd_free_batch(&self, arg: UserSlice) -> Result<isize> {
        let (mut reader, mut writer) = arg.reader_writer();
        let mut req: uapi::FreeBatch = read_in(&mut reader)?;
        let count = batch_count(req.count, req.done, req.error, req._pad, req.reserved)?;
        let (mut array_in, mut array_out) = batch_array::<uapi::Free>(req.entries, count)?;
        let mut guard = self.batch.lock();
        let buf = BatchBuffers::get(&mut guard)?;
        let (entries, slots) = buf.frees(count)?;
        array_in.read_slice(entries.as_bytes_mut())?;

        let out = self.shared.free(self.owner(), entries, slots);
        req.done = out.done as u32;
        req.error = out.error.map_or(0, |e| -e.to_errno());
        array_out.write_slice(entries.get(..out.done).unwrap_or_default().as_bytes())?;
        writer.write(&req)?;
        Ok(0)
    }

    /// LIST: a page of the allocations this file can see.
    fn cmd_list(&self, arg: UserSlice) -> Result<isize> {
        let (mut reader, mut writer) = arg.reader_writer();
        let mut req: uapi::List = read_in(&mut reader)?;
        if req.count != 0 || req.total != 0 || req._pad != 0 || req.capacity > uapi::LIST_MAX {
            return Err(EINVAL);
        }
        let capacity = req.capacity as usize;
        let (entries, total) = self
            .shared
            .list(self.owner(), self.hidden, req.after, capacity)?;
        let array = UserSlice::new(
            UserPtr::from_addr(usize::try_from(req.entries)?),
            capacity * size_of::<uapi::Alloc>(),
        );
        let mut out = array.writer();
        for entry in entries.iter() {
            out.write(entry)?;
        }
        req.count = entries.len() as u32;
        req.total = total;
        writer.write(&req)?;
        Ok(0)
    }

    /// STATS: counters per kind and the UIO event count.
    fn cmd_stats(&self, mut writer: UserSliceWriter) -> Result<isize> {
        writer.write(&self.shared.stats())?;
        Ok(0)
    }

    /// BENCH: alloc+free pairs timed in the kernel.
    fn cmd_bench(&self, arg: UserSlice) -> Result<isize> {
        let (mut reader, mut writer) = arg.reader_writer();
        let mut req: uapi::Bench = read_in(&mut reader)?;
        let input_only = uapi::Bench {
            kind: req.kind,
            flags: req.flags,
            size: req.size,
            iters: req.iters,
            ..Default::default()
        };
        if req != input_only {
            return Err(EINVAL);
        }
        let [alloc, free] = self
            .shared
            .bench(req.kind, req.flags, req.size, req.iters)?;
        req.alloc = alloc;
        req.free = free;
        writer.write(&req)?;
        Ok(0)
    }

    /// TRIGGER: raises UIO events from the kernel.
    fn cmd_trigger(&self, arg: UserSlice) -> Result<isize> {
        let (mut reader, mut writer) = arg.reader_writer();
        let mut req: uapi::Trigger = read_in(&mut reader)?;
        let max = state::Limits::get().max_trigger_count;
        if req._pad != 0 || req.events != 0 || req.count == 0 || req.count > max {
            return Err(EINVAL);
        }
        req.events = self.shared.trigger(req.count)?;
        writer.write(&req)?;
        Ok(0)
    }
}

#[pinned_drop]
impl PinnedDrop for KmemlabFile {
    fn drop(self: Pin<&mut Self>) {
        // A crashed client leaks nothing: its allocations go with its file.
        self.shared.release_file(self.id);
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

/// Checks a batch header's input (`count` from 1 to `BATCH_MAX`, the out, padding and reserved
/// fields zero) and returns `count`.
fn batch_count(count: u32, done: u32, error: i32, pad: u32, reserved: [u64; 2]) -> Result<usize> {
    if count == 0 || count > uapi::BATCH_MAX || done != 0 || error != 0 || pad != 0 {
        return Err(EINVAL);
    }
    if reserved != [0; 2] {
        return Err(EINVAL);
    }
    Ok(count as usize)
}

/// The user array of a batch: `count` entries of `T` at `addr`.
fn batch_array<T>(addr: u64, count: usize) -> Result<(UserSliceReader, UserSliceWriter)> {
    let array = UserSlice::new(
        UserPtr::from_addr(usize::try_from(addr)?),
        count * size_of::<T>(),
    );
    Ok(array.reader_writer())
}

/// Reads an ioctl's input struct.
fn read_in<T: FromBytes>(reader: &mut UserSliceReader) -> Result<T> {
    reader.read()
}
