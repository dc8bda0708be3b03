//! The VFIO backend: kmemlabd as the userspace driver of the board's PL061 GPIO
//! controller, through VFIO in no-IOMMU mode, instead of waiting on the module's UIO
//! device.
//!
//! [`VfioButton::open`] takes the device the way Linux 7.3's VFIO group interface wants
//! it: the container (`/dev/vfio/vfio`, API version 0, `VFIO_NOIOMMU_IOMMU`), the device's
//! no-IOMMU group (`/dev/vfio/noiommu-N`, viable, put into the container), the device
//! descriptor, its register region 0 (mapped shared) and its interrupt 0, which signals an
//! eventfd. It programs one line as a falling-edge interrupt ([`pl061`]). Each interrupt
//! is then read from the eventfd, acknowledged in the controller (`GPIOMIS` to `GPIOIC`)
//! and unmasked (the interrupt is level at the GIC, so VFIO masks it after each signal;
//! clearing comes first or it would fire again at once). Dropping it turns the line's
//! interrupt off in the controller and detaches the eventfd.
//!
//! Before any of that, [`locate`] reads sysfs so that each reason it cannot work is its
//! own error: no VFIO in the kernel, no-IOMMU mode off, no such device, the device bound
//! to another driver; opening then tells a busy group or device and a missing
//! `CAP_SYS_RAWIO` apart. The sysfs and `/dev` roots are parameters ([`VfioTarget`]), so
//! the checks run on a temporary tree in tests.
//!
//! The ioctls and the volatile register accesses are in the private `sys` module;
//! the ABI structs in [`abi`]. Host tests cover everything but the ioctls' success (they
//! need the kernel side); [`VfioIrq`] is generic over its registers and its interrupt
//! control so that its logic runs against the recording doubles of `vfio::testing`
//! (built for tests and with the `test-util` feature).

pub mod abi;
pub mod pl061;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use memmap2::{MmapOptions, MmapRaw};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sys::eventfd::{EfdFlags, EventFd};

use self::abi::{
    VfioDeviceInfo, VfioGroupStatus, VfioIrqInfo, VfioIrqSet, VfioIrqSetEventfd, VfioRegionInfo,
    VFIO_API_VERSION, VFIO_DEVICE_FLAGS_AMBA, VFIO_DEVICE_FLAGS_PLATFORM, VFIO_GROUP_FLAGS_VIABLE,
    VFIO_IRQ_INFO_AUTOMASKED, VFIO_IRQ_INFO_EVENTFD, VFIO_IRQ_INFO_MASKABLE,
    VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_ACTION_UNMASK, VFIO_NOIOMMU_IOMMU,
    VFIO_REGION_INFO_FLAG_MMAP, VFIO_REGION_INFO_FLAG_READ, VFIO_REGION_INFO_FLAG_WRITE,
};
use crate::error::{Error, Result};
use crate::sys;
use crate::uio::IrqSource;

/// The default bus: the virt board's PL061 is an AMBA (PrimeCell) device.
pub const DEFAULT_VFIO_BUS: &str = "amba";
/// The default device: the virt board's PL061 at 0x9030000.
pub const DEFAULT_VFIO_DEVICE: &str = "9030000.pl061";
/// The default line: QEMU's power button is line 3 of the virt board's PL061.
pub const DEFAULT_VFIO_LINE: u32 = 3;
/// The drivers that give a device to VFIO: `vfio-amba` (drivers/vfio/platform/
/// vfio_amba.c:139) and `vfio-platform` (vfio_platform.c:118).
pub const VFIO_DRIVERS: [&str; 2] = ["vfio-amba", "vfio-platform"];
/// The region of the registers: a vfio-amba or vfio-platform device's regions are its
/// memory resources in order, and the PL061 has one.
const REGION: u32 = 0;
/// The interrupt index: a vfio-amba or vfio-platform device's interrupts in order, and
/// the PL061 has one.
const IRQ_INDEX: u32 = 0;

/// Which device to drive, and where sysfs and `/dev` are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VfioTarget {
    /// The bus in sysfs, `amba` or `platform`.
    pub bus: String,
    /// The device's name on the bus, e.g. `9030000.pl061`.
    pub device: String,
    /// The GPIO line whose falling edge is a press, 0 to 7.
    pub line: u32,
    /// `/sys`.
    pub sysfs_root: PathBuf,
    /// `/dev`.
    pub dev_root: PathBuf,
}

impl Default for VfioTarget {
    fn default() -> Self {
        Self::new(DEFAULT_VFIO_BUS, DEFAULT_VFIO_DEVICE, DEFAULT_VFIO_LINE)
    }
}

impl VfioTarget {
    /// `device` on `bus`, line `line`, under `/sys` and `/dev`.
    pub fn new(bus: impl Into<String>, device: impl Into<String>, line: u32) -> Self {
        Self {
            bus: bus.into(),
            device: device.into(),
            line,
            sysfs_root: "/sys".into(),
            dev_root: "/dev".into(),
        }
    }

    /// The same target under other roots (tests).
    #[must_use]
    pub fn with_roots(
        mut self,
        sysfs_root: impl Into<PathBuf>,
        dev_root: impl Into<PathBuf>,
    ) -> Self {
        self.sysfs_root = sysfs_root.into();
        self.dev_root = dev_root.into();
        self
    }

    /// The VFIO container node, `/dev/vfio/vfio`.
    pub fn container_path(&self) -> PathBuf {
        self.dev_root.join("vfio/vfio")
    }

    /// The device's sysfs folder, `/sys/bus/<bus>/devices/<device>`.
    pub fn device_dir(&self) -> PathBuf {
        self.sysfs_root
            .join("bus")
            .join(&self.bus)
            .join("devices")
            .join(&self.device)
    }

    /// The no-IOMMU switch, `/sys/module/vfio/parameters/enable_unsafe_noiommu_mode`
    /// (drivers/vfio/vfio_main.c:59).
    pub fn noiommu_param(&self) -> PathBuf {
        self.sysfs_root
            .join("module/vfio/parameters/enable_unsafe_noiommu_mode")
    }

    /// The node of no-IOMMU group `id`, `/dev/vfio/noiommu-<id>`
    /// (drivers/vfio/group.c:565).
    pub fn group_path(&self, id: u32) -> PathBuf {
        self.dev_root.join(format!("vfio/noiommu-{id}"))
    }

    /// Checks the names given (they become paths and an ioctl's string) and the line.
    pub fn validate(&self) -> Result<()> {
        for (what, name) in [("vfio bus", &self.bus), ("vfio device", &self.device)] {
            if name.is_empty() || name.contains(['/', '\0']) || name == "." || name == ".." {
                return Err(Error::Invalid {
                    what,
                    input: name.clone(),
                    reason: "want a name as sysfs lists it, without '/'".into(),
                });
            }
        }
        pl061::line_bit(self.line).map(drop)
    }
}

/// What [`locate`] found in sysfs and `/dev`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VfioLocation {
    /// `/dev/vfio/vfio`.
    pub container: PathBuf,
    /// `/dev/vfio/noiommu-N`.
    pub group: PathBuf,
    /// `N`.
    pub group_id: u32,
    /// `vfio-amba` or `vfio-platform`.
    pub driver: String,
}

/// Reads the no-IOMMU switch: `Some(true)` for `Y`, `Some(false)` for `N`, `None` when
/// the file does not exist (VFIO without `CONFIG_VFIO_NOIOMMU`, or no VFIO at all).
pub fn read_noiommu_param(path: &Path) -> Result<Option<bool>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Sysfs {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    match text.trim() {
        "Y" | "y" | "1" => Ok(Some(true)),
        "N" | "n" | "0" => Ok(Some(false)),
        other => Err(Error::Sysfs {
            path: path.to_path_buf(),
            source: io::Error::new(ErrorKind::InvalidData, format!("{other:?} is not Y or N")),
        }),
    }
}

/// The name a sysfs link points to (its target's last component), or `None` when there
/// is no link: the `driver` link of an unbound device, the `iommu_group` link of a device
/// without a group.
pub fn link_name(link: &Path) -> Result<Option<String>> {
    match fs::read_link(link) {
        Ok(target) => Ok(target
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Sysfs {
            path: link.to_path_buf(),
            source,
        }),
    }
}

/// Accepts `driver` if it gives the device to VFIO ([`VFIO_DRIVERS`]).
pub fn check_driver(device: &str, driver: Option<String>) -> Result<String> {
    match driver {
        Some(d) if VFIO_DRIVERS.contains(&d.as_str()) => Ok(d),
        driver => Err(Error::VfioNotBound {
            device: device.to_owned(),
            driver,
        }),
    }
}

/// Reads sysfs and `/dev` to find the device's container and group nodes, or says
/// what is missing, in this order: the container node (no VFIO in the kernel), the
/// no-IOMMU switch (off, or not built), the device, its driver (must be vfio-amba or
/// vfio-platform), its no-IOMMU group.
pub fn locate(target: &VfioTarget) -> Result<VfioLocation> {
    target.validate()?;
    let container = target.container_path();
    if !exists(&container)? {
        return Err(Error::VfioMissing { path: container });
    }
    let param = target.noiommu_param();
    match read_noiommu_param(&param)? {
        Some(true) => {}
        Some(false) => {
            return Err(Error::VfioNoiommuOff {
                reason: format!(
                    "{} reads N (write 1 to it, then bind {} to vfio)",
                    param.display(),
                    target.device
                ),
            })
        }
        None => {
            return Err(Error::VfioNoiommuOff {
                reason: format!(
                    "{} does not exist (a kernel without CONFIG_VFIO_NOIOMMU)",
                    param.display()
                ),
            })
        }
    }
    let dir = target.device_dir();
    if !exists(&dir)? {
        return Err(Error::VfioNoDevice {
            bus: target.bus.clone(),
            device: target.device.clone(),
            path: dir,
        });
    }
    let driver = check_driver(&target.device, link_name(&dir.join("driver"))?)?;
    let group_link = dir.join("iommu_group");
    let Some(group_name) = link_name(&group_link)? else {
        return Err(Error::VfioNoiommuOff {
            reason: format!(
                "{} has no iommu group ({} does not exist)",
                target.device,
                group_link.display()
            ),
        });
    };
    let group_id: u32 = group_name.parse().map_err(|_| Error::Sysfs {
        path: group_link.clone(),
        source: io::Error::new(
            ErrorKind::InvalidData,
            format!("group {group_name:?} is not a number"),
        ),
    })?;
    let group = target.group_path(group_id);
    if !exists(&group)? {
        let iommu_group = target.dev_root.join(format!("vfio/{group_id}"));
        let reason = if exists(&iommu_group)? {
            format!(
                "{} is in iommu group {group_id} of a real iommu ({}); kmemlabd drives it \
                 in no-iommu mode only",
                target.device,
                iommu_group.display()
            )
        } else {
            format!(
                "{} has no no-iommu group ({} does not exist)",
                target.device,
                group.display()
            )
        };
        return Err(Error::VfioNoiommuOff { reason });
    }
    Ok(VfioLocation {
        container,
        group,
        group_id,
        driver,
    })
}

/// Whether `path` exists (a link is followed); other errors than "not found" are errors.
fn exists(path: &Path) -> Result<bool> {
    match fs::metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(source) => Err(Error::Sysfs {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The error of opening a VFIO node: `EBUSY` is a busy group (it opens once,
/// drivers/vfio/group.c:433-444), `EPERM` a missing `CAP_SYS_RAWIO` (group.c:428).
pub fn open_error(path: &Path, source: io::Error) -> Error {
    match source.raw_os_error().map(Errno::from_raw) {
        Some(errno @ Errno::EBUSY) => Error::VfioBusy {
            what: path.display().to_string(),
            source: errno,
        },
        Some(errno @ Errno::EPERM) => Error::VfioPermission {
            what: format!("opening {}", path.display()),
            source: errno,
        },
        _ => Error::Open {
            path: path.to_path_buf(),
            source,
        },
    }
}

/// The error of a VFIO ioctl: `EPERM` is a missing `CAP_SYS_RAWIO` (SET_CONTAINER,
/// SET_IOMMU and GET_DEVICE_FD check it in no-IOMMU mode: drivers/vfio/container.c:36,
/// 424 and 514), `EBUSY` a device in use; other errors stay as they are.
pub fn ioctl_error(err: Error) -> Error {
    match err {
        Error::Ioctl {
            cmd,
            source: source @ Errno::EPERM,
        } => Error::VfioPermission {
            what: cmd.to_owned(),
            source,
        },
        Error::Ioctl {
            cmd,
            source: source @ Errno::EBUSY,
        } => Error::VfioBusy {
            what: cmd.to_owned(),
            source,
        },
        err => err,
    }
}

fn unsupported(device: &str, reason: String) -> Error {
    Error::VfioUnsupported {
        device: device.to_owned(),
        reason,
    }
}

/// Accepts the container's API version ([`VFIO_API_VERSION`]).
pub fn check_api_version(device: &str, version: i32) -> Result<()> {
    if version == VFIO_API_VERSION {
        Ok(())
    } else {
        Err(unsupported(
            device,
            format!("the container speaks vfio api version {version}, not {VFIO_API_VERSION}"),
        ))
    }
}

/// Accepts `VFIO_CHECK_EXTENSION(VFIO_NOIOMMU_IOMMU)`'s answer (> 0: offered; the kernel
/// offers it only while the switch is on, drivers/vfio/container.c:50).
pub fn check_noiommu_extension(answer: i32) -> Result<()> {
    if answer > 0 {
        Ok(())
    } else {
        Err(Error::VfioNoiommuOff {
            reason: "the vfio container does not offer VFIO_NOIOMMU_IOMMU".into(),
        })
    }
}

/// Accepts a viable group: every device in it is bound to VFIO.
pub fn check_group_status(device: &str, group: &Path, status: &VfioGroupStatus) -> Result<()> {
    if status.flags & VFIO_GROUP_FLAGS_VIABLE != 0 {
        Ok(())
    } else {
        Err(unsupported(
            device,
            format!(
                "group {} is not viable (flags {:#x}): every device in it must be bound to \
                 vfio",
                group.display(),
                status.flags
            ),
        ))
    }
}

/// Accepts a vfio-amba or vfio-platform device with a region and an interrupt.
pub fn check_device_info(device: &str, info: &VfioDeviceInfo) -> Result<()> {
    if info.flags & (VFIO_DEVICE_FLAGS_AMBA | VFIO_DEVICE_FLAGS_PLATFORM) == 0 {
        return Err(unsupported(
            device,
            format!(
                "not a vfio-amba or vfio-platform device (flags {:#x})",
                info.flags
            ),
        ));
    }
    if info.num_regions == 0 || info.num_irqs == 0 {
        return Err(unsupported(
            device,
            format!(
                "{} regions and {} interrupts; kmemlabd needs region 0 and interrupt 0",
                info.num_regions, info.num_irqs
            ),
        ));
    }
    Ok(())
}

/// Accepts a region that can be mapped read-write and holds at least `need` bytes.
/// vfio-platform allows `mmap` only for a region of whole pages
/// (drivers/vfio/platform/vfio_platform_common.c:166-172, 558): the PL061's 4 KiB
/// cannot be mapped on a kernel with 16K or 64K pages.
pub fn check_region(device: &str, info: &VfioRegionInfo, need: usize, page: usize) -> Result<()> {
    let want = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
    if info.flags & want != want {
        return Err(unsupported(
            device,
            format!(
                "region {} is not readable and writable (flags {:#x})",
                info.index, info.flags
            ),
        ));
    }
    if info.flags & VFIO_REGION_INFO_FLAG_MMAP == 0 {
        return Err(unsupported(
            device,
            format!(
                "region {} ({:#x} bytes) cannot be mmapped (flags {:#x}): vfio maps only \
                 whole pages, and a page is {page:#x} bytes",
                info.index, info.size, info.flags
            ),
        ));
    }
    if info.size < need as u64 {
        return Err(unsupported(
            device,
            format!(
                "region {} has {:#x} bytes; the registers need {need:#x}",
                info.index, info.size
            ),
        ));
    }
    Ok(())
}

/// How an interrupt behaves after it signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqMode {
    /// Level (`MASKABLE | AUTOMASKED`): VFIO masks it after each signal; it is unmasked
    /// after the acknowledgement. The virt board's PL061 interrupt is level high.
    Level,
    /// Edge: nothing to unmask.
    Edge,
}

/// The mode of an interrupt from its info; it must signal an eventfd.
pub fn irq_mode(device: &str, info: &VfioIrqInfo) -> Result<IrqMode> {
    if info.flags & VFIO_IRQ_INFO_EVENTFD == 0 || info.count == 0 {
        return Err(unsupported(
            device,
            format!(
                "interrupt {} cannot signal an eventfd (flags {:#x}, count {})",
                info.index, info.flags, info.count
            ),
        ));
    }
    let level = VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED;
    Ok(if info.flags & level == level {
        IrqMode::Level
    } else {
        IrqMode::Edge
    })
}

/// Opens a VFIO node read-write, close-on-exec.
fn open_node(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(OFlag::O_CLOEXEC.bits())
        .open(path)
        .map_err(|e| open_error(path, e))
}

/// An open VFIO device: its container, its group and its descriptor.
///
/// # Invariants
///
/// The group is in the container, the container uses `VFIO_NOIOMMU_IOMMU`, and `device`
/// is the descriptor `VFIO_GROUP_GET_DEVICE_FD` returned for [`Vfio::name`]. Closing the
/// three (on drop, device first) releases the device, its interrupt and the group.
#[derive(Debug)]
pub struct Vfio {
    device: File,
    group: File,
    /// The container the group is in, kept open as long as the group.
    _container: File,
    lock: Option<Flock<File>>,
    info: VfioDeviceInfo,
    location: VfioLocation,
    name: String,
}

impl Vfio {
    /// Finds ([`locate`]) and opens the device of `target`: container, API version,
    /// no-IOMMU extension, group (viable), group into container, no-IOMMU, device
    /// descriptor, device info.
    pub fn open(target: &VfioTarget) -> Result<Self> {
        let location = locate(target)?;
        let name = target.device.clone();
        let container = open_node(&location.container)?;
        check_api_version(&name, sys::vfio::get_api_version(container.as_fd())?)?;
        check_noiommu_extension(sys::vfio::check_extension(
            container.as_fd(),
            VFIO_NOIOMMU_IOMMU,
        )?)?;
        let group = open_node(&location.group)?;
        let status = sys::vfio::group_get_status(group.as_fd())?;
        check_group_status(&name, &location.group, &status)?;
        sys::vfio::group_set_container(group.as_fd(), container.as_fd()).map_err(ioctl_error)?;
        sys::vfio::set_iommu(container.as_fd(), VFIO_NOIOMMU_IOMMU).map_err(ioctl_error)?;
        let c_name = CString::new(name.clone()).map_err(|_| Error::Invalid {
            what: "vfio device",
            input: name.clone(),
            reason: "contains a NUL byte".into(),
        })?;
        let device = File::from(
            sys::vfio::group_get_device_fd(group.as_fd(), &c_name).map_err(ioctl_error)?,
        );
        let info = sys::vfio::device_get_info(device.as_fd())?;
        check_device_info(&name, &info)?;
        Ok(Self {
            device,
            group,
            _container: container,
            lock: None,
            info,
            location,
            name,
        })
    }

    /// Takes an exclusive, non-blocking `flock(2)` on the open group, as the UIO backend
    /// does on its node (the lock is on the inode). VFIO opens a group only once
    /// (drivers/vfio/group.c:441-444), so a second kmemlabd already stops at the open
    /// with `EBUSY`; the lock keeps the one-instance rule the same for both backends.
    /// `Ok(false)` on a kernel without file locking.
    pub fn lock_exclusive(&mut self) -> Result<bool> {
        if self.lock.is_some() {
            return Ok(true);
        }
        let dup = self.group.try_clone().map_err(|source| Error::Open {
            path: self.location.group.clone(),
            source,
        })?;
        match Flock::lock(dup, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => {
                self.lock = Some(lock);
                Ok(true)
            }
            Err((_, Errno::EWOULDBLOCK)) => Err(Error::VfioBusy {
                what: self.location.group.display().to_string(),
                source: Errno::EWOULDBLOCK,
            }),
            Err((_, Errno::ENOSYS)) => Ok(false),
            Err((_, errno)) => Err(Error::Open {
                path: self.location.group.clone(),
                source: io::Error::from(errno),
            }),
        }
    }

    /// Whether [`Vfio::lock_exclusive`] holds the lock.
    pub fn is_locked(&self) -> bool {
        self.lock.is_some()
    }

    /// The device's name, e.g. `9030000.pl061`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the container and group are.
    pub fn location(&self) -> &VfioLocation {
        &self.location
    }

    /// `VFIO_DEVICE_GET_INFO`'s answer.
    pub fn info(&self) -> &VfioDeviceInfo {
        &self.info
    }

    /// `VFIO_DEVICE_GET_REGION_INFO` of region `index`.
    pub fn region_info(&self, index: u32) -> Result<VfioRegionInfo> {
        sys::vfio::device_get_region_info(self.device.as_fd(), index)
    }

    /// Maps region `index` shared and read-write ([`check_region`] with `need` bytes).
    pub fn map_region(&self, index: u32, need: usize) -> Result<VfioRegion> {
        let info = self.region_info(index)?;
        check_region(&self.name, &info, need, sys::page_size())?;
        let what = format!("{} region {index}", self.name);
        let len = usize::try_from(info.size).map_err(|_| Error::Map {
            what: what.clone(),
            source: io::Error::new(ErrorKind::InvalidData, format!("size {}", info.size)),
        })?;
        // MAP_SHARED, PROT_READ | PROT_WRITE (vfio-platform refuses a private mapping,
        // vfio_platform_common.c:578); raw pointers only, never references.
        let raw = MmapOptions::new()
            .offset(info.offset)
            .len(len)
            .map_raw(&self.device)
            .map_err(|source| Error::Map { what, source })?;
        Ok(VfioRegion { raw, info })
    }

    /// `VFIO_DEVICE_GET_IRQ_INFO` of interrupt index `index`.
    pub fn irq_info(&self, index: u32) -> Result<VfioIrqInfo> {
        sys::vfio::device_get_irq_info(self.device.as_fd(), index)
    }

    /// Signals `eventfd` on interrupt 0 of `index`, which enables it
    /// (`DATA_EVENTFD | ACTION_TRIGGER`).
    pub fn set_irq_trigger(&self, index: u32, eventfd: BorrowedFd<'_>) -> Result<()> {
        sys::vfio::device_set_irqs_eventfd(
            "VFIO_DEVICE_SET_IRQS (trigger)",
            self.device.as_fd(),
            &VfioIrqSetEventfd::trigger(index, eventfd.as_raw_fd()),
        )
    }

    /// Unmasks interrupt 0 of `index` (`DATA_NONE | ACTION_UNMASK`, count 1).
    pub fn unmask_irq(&self, index: u32) -> Result<()> {
        sys::vfio::device_set_irqs(
            "VFIO_DEVICE_SET_IRQS (unmask)",
            self.device.as_fd(),
            &VfioIrqSet::data_none(VFIO_IRQ_SET_ACTION_UNMASK, index, 1),
        )
    }

    /// Disables the whole index and detaches its eventfd (`DATA_NONE | ACTION_TRIGGER`,
    /// count 0; drivers/vfio/platform/vfio_platform_irq.c:228).
    pub fn disable_irq(&self, index: u32) -> Result<()> {
        sys::vfio::device_set_irqs(
            "VFIO_DEVICE_SET_IRQS (disable)",
            self.device.as_fd(),
            &VfioIrqSet::data_none(VFIO_IRQ_SET_ACTION_TRIGGER, index, 0),
        )
    }
}

/// 32-bit registers at byte offsets: the mapped region, or a test double.
pub trait Registers {
    /// Reads the register at `offset`.
    fn read32(&mut self, offset: usize) -> Result<u32>;
    /// Writes `value` to the register at `offset`.
    fn write32(&mut self, offset: usize, value: u32) -> Result<()>;
}

/// A mapped device region; unmapped on drop. Its registers are read and written with
/// volatile accesses (the `sys` module); it hands out no references to them.
#[derive(Debug)]
pub struct VfioRegion {
    raw: MmapRaw,
    info: VfioRegionInfo,
}

impl VfioRegion {
    /// What `VFIO_DEVICE_GET_REGION_INFO` said of it.
    pub fn info(&self) -> &VfioRegionInfo {
        &self.info
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.raw.len() == 0
    }

    /// The mapping as `sys`'s volatile accesses take it: `map_region` maps it read-write.
    fn shared(&self) -> sys::Shared<'_> {
        sys::Shared {
            map: &self.raw,
            writable: true,
        }
    }

    fn out_of_window(&self, offset: usize) -> Error {
        Error::Register {
            offset,
            len: self.raw.len(),
        }
    }
}

impl Registers for VfioRegion {
    fn read32(&mut self, offset: usize) -> Result<u32> {
        sys::vfio::mmio_read32(self.shared(), offset).ok_or_else(|| self.out_of_window(offset))
    }

    fn write32(&mut self, offset: usize, value: u32) -> Result<()> {
        sys::vfio::mmio_write32(self.shared(), offset, value)
            .ok_or_else(|| self.out_of_window(offset))
    }
}

/// The device interrupt as [`VfioIrq`] drives it: attach an eventfd, unmask, disable.
pub trait IrqControl {
    /// Signals `eventfd` on each interrupt, and enables it.
    fn set_trigger(&mut self, eventfd: BorrowedFd<'_>) -> Result<()>;
    /// Unmasks it after an interrupt (nothing to do for an edge interrupt).
    fn unmask(&mut self) -> Result<()>;
    /// Disables it and detaches the eventfd.
    fn disable(&mut self) -> Result<()>;
}

/// The real [`IrqControl`]: interrupt index 0 of an open [`Vfio`] device.
#[derive(Debug)]
pub struct VfioIrqLine {
    vfio: Vfio,
    index: u32,
    mode: IrqMode,
}

impl VfioIrqLine {
    /// The device.
    pub fn vfio(&self) -> &Vfio {
        &self.vfio
    }

    /// Level or edge.
    pub fn mode(&self) -> IrqMode {
        self.mode
    }
}

impl IrqControl for VfioIrqLine {
    fn set_trigger(&mut self, eventfd: BorrowedFd<'_>) -> Result<()> {
        self.vfio.set_irq_trigger(self.index, eventfd)
    }

    fn unmask(&mut self) -> Result<()> {
        match self.mode {
            IrqMode::Level => self.vfio.unmask_irq(self.index),
            IrqMode::Edge => Ok(()),
        }
    }

    fn disable(&mut self) -> Result<()> {
        self.vfio.disable_irq(self.index)
    }
}

/// A GPIO line's falling edges as an [`IrqSource`]: the device interrupt signals an
/// eventfd; each read of the eventfd acknowledges the controller and adds the eventfd's
/// value to a cumulative, wrapping 32-bit count (the UIO count's semantics);
/// [`IrqSource::enable`] unmasks. A signal without the line's bit in `GPIOMIS` is
/// acknowledged and unmasked but not counted ([`VfioIrq::spurious`]). The eventfd is the
/// descriptor to poll ([`AsRawFd`]).
///
/// Dropping it turns the line's interrupt off in the controller (`GPIOIE`, then
/// `GPIOIC`), then disables the device interrupt and detaches the eventfd.
#[derive(Debug)]
pub struct VfioIrq<R: Registers, C: IrqControl> {
    eventfd: EventFd,
    regs: R,
    ctl: C,
    line: u32,
    count: u32,
    spurious: u64,
    /// A signal was read since the last unmask: VFIO masked the (level) interrupt when it
    /// signalled, and [`IrqSource::enable`] unmasks it.
    masked: bool,
    name: PathBuf,
}

/// The real thing: the mapped PL061 and its VFIO interrupt.
pub type VfioButton = VfioIrq<VfioRegion, VfioIrqLine>;

impl<R: Registers, C: IrqControl> VfioIrq<R, C> {
    /// A source over `regs` and `ctl` for `line`, with a new non-blocking eventfd; its
    /// count starts at 0. Nothing is programmed until [`VfioIrq::attach`]. `name` names
    /// the source in errors (e.g. `9030000.pl061 line 3`).
    pub fn new(regs: R, ctl: C, line: u32, name: impl Into<PathBuf>) -> Result<Self> {
        pl061::line_bit(line)?;
        let name = name.into();
        let eventfd = EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC).map_err(
            |errno| Error::Open {
                path: "eventfd".into(),
                source: io::Error::from(errno),
            },
        )?;
        Ok(Self {
            eventfd,
            regs,
            ctl,
            line,
            count: 0,
            spurious: 0,
            masked: false,
            name,
        })
    }

    /// Programs the line as a falling-edge interrupt, then attaches the eventfd to the
    /// device interrupt (which enables it). On an error, dropping `self` undoes both.
    pub fn attach(&mut self) -> Result<()> {
        pl061::program_falling_edge(&mut self.regs, self.line)?;
        self.ctl.set_trigger(self.eventfd.as_fd())
    }

    /// The eventfd, for tests that signal it by hand.
    pub fn eventfd(&self) -> &EventFd {
        &self.eventfd
    }

    /// The registers.
    pub fn regs(&self) -> &R {
        &self.regs
    }

    /// The interrupt control.
    pub fn control(&self) -> &C {
        &self.ctl
    }

    /// The GPIO line.
    pub fn line(&self) -> u32 {
        self.line
    }

    /// Interrupts counted so far.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Signals that came without the line's bit in `GPIOMIS`, not counted.
    pub fn spurious(&self) -> u64 {
        self.spurious
    }
}

impl VfioButton {
    /// Opens `target`'s device ([`Vfio::open`]), takes the group's lock
    /// ([`Vfio::lock_exclusive`]; see [`VfioButton::is_locked`]), maps its registers,
    /// checks its interrupt and attaches: the line is a falling-edge interrupt that
    /// signals the eventfd from here on.
    pub fn open(target: &VfioTarget) -> Result<Self> {
        let mut vfio = Vfio::open(target)?;
        vfio.lock_exclusive()?;
        let regs = vfio.map_region(REGION, pl061::WINDOW)?;
        let mode = irq_mode(&target.device, &vfio.irq_info(IRQ_INDEX)?)?;
        let ctl = VfioIrqLine {
            vfio,
            index: IRQ_INDEX,
            mode,
        };
        let name = format!("{} line {}", target.device, target.line);
        let mut irq = Self::new(regs, ctl, target.line, name)?;
        irq.attach()?;
        Ok(irq)
    }

    /// Whether the group's lock is held (`false` on a kernel without file locking).
    pub fn is_locked(&self) -> bool {
        self.ctl.vfio.is_locked()
    }

    /// The open device.
    pub fn vfio(&self) -> &Vfio {
        &self.ctl.vfio
    }
}

impl<R: Registers, C: IrqControl> IrqSource for VfioIrq<R, C> {
    fn read_count(&mut self) -> Result<Option<u32>> {
        loop {
            return match self.eventfd.read() {
                // The eventfd's value: interrupts signalled since the last read (one, as
                // VFIO masks a level interrupt until it is unmasked).
                Ok(n) => {
                    let pending = pl061::ack(&mut self.regs)?;
                    if pending & (1 << self.line) == 0 {
                        // Not the line's edge (another line's, or the level the
                        // controller was still driving when the interrupt was
                        // unmasked): acknowledged, unmasked again, not counted.
                        self.spurious += 1;
                        tracing::debug!(
                            "interrupt on {} without line {} pending (GPIOMIS {pending:#x}); \
                             not counted",
                            self.name.display(),
                            self.line
                        );
                        self.ctl.unmask()?;
                        continue;
                    }
                    // Wrapping, as the UIO count does.
                    self.count = self.count.wrapping_add(n as u32);
                    self.masked = true;
                    Ok(Some(self.count))
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => Ok(None),
                Err(errno) => Err(Error::IrqRead {
                    path: self.name.clone(),
                    source: io::Error::from(errno),
                }),
            };
        }
    }

    /// Unmasks the device interrupt if a read took a signal since the last unmask (the
    /// read acknowledged the controller first). Otherwise the interrupt is not masked,
    /// and the unmask is left out: at the daemon's start, an unmask while an interrupt
    /// waits unread in the eventfd, not yet acknowledged, would raise it a second time.
    fn enable(&mut self) -> Result<()> {
        if self.masked {
            self.ctl.unmask()?;
            self.masked = false;
        }
        Ok(())
    }
}

impl<R: Registers, C: IrqControl> Drop for VfioIrq<R, C> {
    fn drop(&mut self) {
        if let Err(e) = pl061::disable(&mut self.regs, self.line) {
            tracing::warn!(
                "leaving {} with its interrupt enabled: {}",
                self.name.display(),
                e.report()
            );
        }
        if let Err(e) = self.ctl.disable() {
            tracing::warn!("{}: {}", self.name.display(), e.report());
        }
    }
}

impl<R: Registers, C: IrqControl> AsFd for VfioIrq<R, C> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.eventfd.as_fd()
    }
}

impl<R: Registers, C: IrqControl> AsRawFd for VfioIrq<R, C> {
    fn as_raw_fd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests;
