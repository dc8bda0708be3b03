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
mod irq;
mod locate;
pub mod pl061;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use memmap2::{MmapOptions, MmapRaw};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};

use self::abi::{
    VfioDeviceInfo, VfioIrqInfo, VfioIrqSet, VfioIrqSetEventfd, VfioRegionInfo,
    VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_ACTION_UNMASK, VFIO_NOIOMMU_IOMMU,
};
use crate::error::{Error, Result};
use crate::sys;

pub use self::irq::{IrqControl, VfioButton, VfioIrq, VfioIrqLine};
pub use self::locate::*;

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

#[cfg(test)]
mod tests;
