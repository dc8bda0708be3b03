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
        Arc, //
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
mod mem;
mod state;
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
/// interrupt), then the heap the UIO device exposed.
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
    /// Frees allocations and unregisters the UIO device.
    _unbind: Unbind,
    /// The DMA-coherent heap (UIO map 0); freed after the UIO device is gone.
    _heap: Coherent<[u8]>,
    /// What open files need of the device.
    shared: Arc<Shared>,
    /// Dropped last, when everything that exists once is gone.
    _claim: Claim,
}

/// Reads and checks `yang,heap-size`: absent gives [`uapi::HEAP_DEFAULT_SIZE`].
fn heap_size(dev: &kernel::device::Device) -> Result<usize> {
    let size = match dev.fwnode() {
        Some(node) if node.property_present(HEAP_SIZE_PROP) => {
            u64::from(node.property_read::<u32>(HEAP_SIZE_PROP).required_by(dev)?)
        }
        _ => uapi::HEAP_DEFAULT_SIZE,
    };
    let page = kernel::page::PAGE_SIZE as u64;
    if size < page || size % page != 0 || size > HEAP_MAX_SIZE {
        dev_err!(
            dev,
            "yang,heap-size {} is invalid: want a multiple of the page size {} from {} to {}\n",
            size,
            page,
            page,
            HEAP_MAX_SIZE
        );
        return Err(EINVAL);
    }
    Ok(usize::try_from(size)?)
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

            let size = heap_size(dev)?;
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
                uio::Registration::register(bound.as_ref(), irq, UIO_NAME, UIO_VERSION, &heap_desc)
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

            Ok(try_pin_init!(Self {
                // `shared` is written before `miscdev` is registered, see `KmemlabFile::open`.
                _claim: claim,
                shared: state.clone(),
                _heap: heap,
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
                    "probed: irq {}, heap {} bytes, UIO device \"{}\", /dev/{}\n",
                    irq,
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
struct KmemlabFile {
    shared: Arc<Shared>,
    /// This file's id: the owner of its allocations.
    id: u64,
    /// The opener lacked CAP_SYSLOG: addresses are reported as 0.
    hidden: bool,
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

        Ok(KBox::pin(
            Self {
                shared: shared.clone(),
                id: NEXT_FILE_ID.fetch_add(1, Relaxed),
                hidden: !state::file_has_syslog(file),
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
            uapi::NR_ALLOC => me.cmd_alloc(user_arg(cmd, arg, uapi::IOCTL_ALLOC)?),
            uapi::NR_FREE => me.cmd_free(user_arg(cmd, arg, uapi::IOCTL_FREE)?),
            uapi::NR_LIST => me.cmd_list(user_arg(cmd, arg, uapi::IOCTL_LIST)?),
            uapi::NR_STATS => me.cmd_stats(user_arg(cmd, arg, uapi::IOCTL_STATS)?.writer()),
            uapi::NR_BENCH => me.cmd_bench(user_arg(cmd, arg, uapi::IOCTL_BENCH)?),
            uapi::NR_TRIGGER => me.cmd_trigger(user_arg(cmd, arg, uapi::IOCTL_TRIGGER)?),
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
        let req: uapi::Alloc = read_in(&mut reader)?;
        let input_only = uapi::Alloc {
            kind: req.kind,
            flags: req.flags,
            size: req.size,
            ..Default::default()
        };
        if req != input_only {
            return Err(EINVAL);
        }
        let owner = if req.flags & uapi::FLAG_PERSIST != 0 {
            Owner::Device
        } else {
            self.owner()
        };
        let done = self.shared.alloc(owner, &req)?;
        let mut report = done.report;
        report.result |= uapi::RESULT_OWN;
        if owner == Owner::Device {
            report.result |= uapi::RESULT_PERSIST;
        }
        if self.hidden {
            state::hide(&mut report);
        }
        if let Err(e) = writer.write(&report) {
            // The caller cannot learn the handle: undo the allocation.
            let _ = self.shared.free(owner, done.handle);
            return Err(e);
        }
        Ok(0)
    }

    /// FREE: frees a handle this file may see.
    fn cmd_free(&self, arg: UserSlice) -> Result<isize> {
        let (mut reader, mut writer) = arg.reader_writer();
        let mut req: uapi::Free = read_in(&mut reader)?;
        if req.free_ns != 0 || req.reserved != [0; 2] {
            return Err(EINVAL);
        }
        req.free_ns = self.shared.free(self.owner(), req.handle)?;
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

impl Drop for KmemlabFile {
    fn drop(&mut self) {
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

/// Reads an ioctl's input struct.
fn read_in<T: FromBytes>(reader: &mut UserSliceReader) -> Result<T> {
    reader.read()
}
