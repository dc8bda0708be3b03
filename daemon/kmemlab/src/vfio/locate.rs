//! Where the VFIO device is, and the checks that name each reason it cannot be used:
//! sysfs and `/dev` read before anything is opened, and the answers of the ioctls.

use std::fs::{self};
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use super::abi::{
    VfioDeviceInfo, VfioGroupStatus, VfioIrqInfo, VfioRegionInfo, VFIO_API_VERSION,
    VFIO_DEVICE_FLAGS_AMBA, VFIO_DEVICE_FLAGS_PLATFORM, VFIO_GROUP_FLAGS_VIABLE,
    VFIO_IRQ_INFO_AUTOMASKED, VFIO_IRQ_INFO_EVENTFD, VFIO_IRQ_INFO_MASKABLE,
    VFIO_REGION_INFO_FLAG_MMAP, VFIO_REGION_INFO_FLAG_READ, VFIO_REGION_INFO_FLAG_WRITE,
};
use super::*;
use crate::error::{Error, Result};

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
pub(crate) const REGION: u32 = 0;
/// The interrupt index: a vfio-amba or vfio-platform device's interrupts in order, and
/// the PL061 has one.
pub(crate) const IRQ_INDEX: u32 = 0;

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
