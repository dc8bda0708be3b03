//! The unsafe half of the VFIO backend: the VFIO ioctls on the container, group and device
//! descriptors, and 32-bit volatile accesses to a mapped register window, each behind a
//! safe wrapper; an ioctl's error names the failing command.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use memmap2::MmapRaw;

use super::{check, Shared};
use crate::error::Result;
use crate::vfio::abi::{
    VfioDeviceInfo, VfioGroupStatus, VfioIrqInfo, VfioIrqSet, VfioIrqSetEventfd, VfioRegionInfo,
};

/// The raw ioctls. Every VFIO command number is `_IO(';', 100 + n)` without a size
/// (`crate::vfio::abi`), so each is declared with a `_bad` macro and the argument type the
/// kernel's handler takes.
mod ioctl {
    use nix::libc::{c_char, c_int};

    use crate::vfio::abi::{
        VfioDeviceInfo, VfioGroupStatus, VfioIrqInfo, VfioIrqSet, VfioIrqSetEventfd,
        VfioRegionInfo, VFIO_CHECK_EXTENSION, VFIO_DEVICE_GET_INFO, VFIO_DEVICE_GET_IRQ_INFO,
        VFIO_DEVICE_GET_REGION_INFO, VFIO_DEVICE_SET_IRQS, VFIO_GET_API_VERSION,
        VFIO_GROUP_GET_DEVICE_FD, VFIO_GROUP_GET_STATUS, VFIO_GROUP_SET_CONTAINER, VFIO_SET_IOMMU,
    };

    nix::ioctl_none_bad!(vfio_get_api_version, VFIO_GET_API_VERSION);
    nix::ioctl_write_int_bad!(vfio_check_extension, VFIO_CHECK_EXTENSION);
    nix::ioctl_write_int_bad!(vfio_set_iommu, VFIO_SET_IOMMU);
    nix::ioctl_readwrite_bad!(
        vfio_group_get_status,
        VFIO_GROUP_GET_STATUS,
        VfioGroupStatus
    );
    nix::ioctl_write_ptr_bad!(vfio_group_set_container, VFIO_GROUP_SET_CONTAINER, c_int);
    nix::ioctl_write_ptr_bad!(vfio_group_get_device_fd, VFIO_GROUP_GET_DEVICE_FD, c_char);
    nix::ioctl_readwrite_bad!(vfio_device_get_info, VFIO_DEVICE_GET_INFO, VfioDeviceInfo);
    nix::ioctl_readwrite_bad!(
        vfio_device_get_region_info,
        VFIO_DEVICE_GET_REGION_INFO,
        VfioRegionInfo
    );
    nix::ioctl_readwrite_bad!(
        vfio_device_get_irq_info,
        VFIO_DEVICE_GET_IRQ_INFO,
        VfioIrqInfo
    );
    nix::ioctl_write_ptr_bad!(vfio_device_set_irqs, VFIO_DEVICE_SET_IRQS, VfioIrqSet);
    nix::ioctl_write_ptr_bad!(
        vfio_device_set_irqs_eventfd,
        VFIO_DEVICE_SET_IRQS,
        VfioIrqSetEventfd
    );
}

/// `VFIO_GET_API_VERSION` on the container: the API version (`VFIO_API_VERSION`, 0).
pub(crate) fn get_api_version(container: BorrowedFd<'_>) -> Result<i32> {
    // SAFETY: `_IO` without an argument: the kernel reads and writes no memory of ours
    // (drivers/vfio/container.c:339 returns the version). `container` is borrowed, so it
    // stays open for the call.
    check("VFIO_GET_API_VERSION", unsafe {
        ioctl::vfio_get_api_version(container.as_raw_fd())
    })
}

/// `VFIO_CHECK_EXTENSION` on the container: > 0 when `extension` (an IOMMU type) is
/// offered.
pub(crate) fn check_extension(container: BorrowedFd<'_>, extension: u32) -> Result<i32> {
    let arg = extension as nix::libc::c_int;
    // SAFETY: the argument is passed by value, not as a pointer: the kernel reads and
    // writes no memory of ours. `container` is borrowed, so it stays open for the call.
    check("VFIO_CHECK_EXTENSION", unsafe {
        ioctl::vfio_check_extension(container.as_raw_fd(), arg)
    })
}

/// `VFIO_SET_IOMMU` on the container: uses IOMMU type `kind` for its groups.
pub(crate) fn set_iommu(container: BorrowedFd<'_>, kind: u32) -> Result<()> {
    let arg = kind as nix::libc::c_int;
    // SAFETY: the argument is passed by value, not as a pointer: the kernel reads and
    // writes no memory of ours. `container` is borrowed, so it stays open for the call.
    check("VFIO_SET_IOMMU", unsafe {
        ioctl::vfio_set_iommu(container.as_raw_fd(), arg)
    })?;
    Ok(())
}

/// `VFIO_GROUP_GET_STATUS` on the group.
pub(crate) fn group_get_status(group: BorrowedFd<'_>) -> Result<VfioGroupStatus> {
    let mut status = VfioGroupStatus::new();
    // SAFETY: the kernel reads and writes `offsetofend(vfio_group_status, flags)` bytes,
    // the whole struct (drivers/vfio/group.c:328), through a pointer made from
    // `&mut status`: valid, aligned and exclusively ours for the call. The struct is two
    // `u32`, so any bytes written form a valid value. `group` stays open for the call.
    check("VFIO_GROUP_GET_STATUS", unsafe {
        ioctl::vfio_group_get_status(group.as_raw_fd(), &mut status)
    })?;
    Ok(status)
}

/// `VFIO_GROUP_SET_CONTAINER` on the group: puts it into `container`.
pub(crate) fn group_set_container(group: BorrowedFd<'_>, container: BorrowedFd<'_>) -> Result<()> {
    let fd: nix::libc::c_int = container.as_raw_fd();
    // SAFETY: the kernel reads one `int` through the pointer (`get_user`,
    // drivers/vfio/group.c:115), which points to `fd`, alive for the call. Both
    // descriptors are borrowed, so they stay open for the call.
    check("VFIO_GROUP_SET_CONTAINER", unsafe {
        ioctl::vfio_group_set_container(group.as_raw_fd(), &fd)
    })?;
    Ok(())
}

/// `VFIO_GROUP_GET_DEVICE_FD` on the group: a new descriptor for the device `name`
/// (e.g. `9030000.pl061`), owned by the caller.
pub(crate) fn group_get_device_fd(group: BorrowedFd<'_>, name: &CStr) -> Result<OwnedFd> {
    // SAFETY: the kernel reads a NUL-terminated string of at most a page through the
    // pointer (`strndup_user`, drivers/vfio/group.c:310): `name` is a `CStr`, so it is
    // NUL-terminated and stays alive for the call. `group` stays open for the call.
    let fd = check("VFIO_GROUP_GET_DEVICE_FD", unsafe {
        ioctl::vfio_group_get_device_fd(group.as_raw_fd(), name.as_ptr())
    })?;
    // SAFETY: on success the ioctl returns a new descriptor, installed for this process
    // (`FD_ADD`, drivers/vfio/group.c:319) and owned by no one else: ownership passes to
    // the `OwnedFd`, which closes it once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `VFIO_DEVICE_GET_INFO` on the device.
pub(crate) fn device_get_info(device: BorrowedFd<'_>) -> Result<VfioDeviceInfo> {
    let mut info = VfioDeviceInfo::new();
    // SAFETY: the kernel reads and writes at most `argsz` bytes (here the whole struct;
    // vfio-platform copies `offsetofend(vfio_device_info, num_irqs)`,
    // drivers/vfio/platform/vfio_platform_common.c:304) through a pointer made from
    // `&mut info`: valid, aligned and exclusively ours for the call. The struct is plain
    // `u32`s, so any bytes written form a valid value. `device` stays open for the call.
    check("VFIO_DEVICE_GET_INFO", unsafe {
        ioctl::vfio_device_get_info(device.as_raw_fd(), &mut info)
    })?;
    Ok(info)
}

/// `VFIO_DEVICE_GET_REGION_INFO` on the device, for region `index`.
pub(crate) fn device_get_region_info(device: BorrowedFd<'_>, index: u32) -> Result<VfioRegionInfo> {
    let mut info = VfioRegionInfo::new(index);
    // SAFETY: the kernel reads and writes `offsetofend(vfio_region_info, offset)` bytes,
    // the whole struct; it writes capabilities after it only when `argsz` leaves room
    // for them, and here `argsz` is the struct's size (drivers/vfio/vfio_main.c:1327-1357).
    // The pointer is made from `&mut info`: valid, 8-aligned as `__aligned_u64` needs,
    // and exclusively ours for the call. Plain integers: any bytes written form a valid
    // value. `device` stays open for the call.
    check("VFIO_DEVICE_GET_REGION_INFO", unsafe {
        ioctl::vfio_device_get_region_info(device.as_raw_fd(), &mut info)
    })?;
    Ok(info)
}

/// `VFIO_DEVICE_GET_IRQ_INFO` on the device, for interrupt index `index`.
pub(crate) fn device_get_irq_info(device: BorrowedFd<'_>, index: u32) -> Result<VfioIrqInfo> {
    let mut info = VfioIrqInfo::new(index);
    // SAFETY: the kernel reads and writes `offsetofend(vfio_irq_info, count)` bytes, the
    // whole struct (drivers/vfio/platform/vfio_platform_common.c:324), through a pointer
    // made from `&mut info`: valid, aligned and exclusively ours for the call. Plain
    // `u32`s: any bytes written form a valid value. `device` stays open for the call.
    check("VFIO_DEVICE_GET_IRQ_INFO", unsafe {
        ioctl::vfio_device_get_irq_info(device.as_raw_fd(), &mut info)
    })?;
    Ok(info)
}

/// `VFIO_DEVICE_SET_IRQS` on the device without data (`VFIO_IRQ_SET_DATA_NONE`): unmask,
/// or disable the index; `cmd` names the action in the error.
pub(crate) fn device_set_irqs(
    cmd: &'static str,
    device: BorrowedFd<'_>,
    set: &VfioIrqSet,
) -> Result<()> {
    // SAFETY: with `DATA_NONE` the kernel reads the header, `argsz` = 20 bytes = the
    // struct, and no data after it (`vfio_set_irqs_validate_and_prepare`,
    // drivers/vfio/vfio_main.c:1680), through a pointer made from `&VfioIrqSet`, valid
    // and aligned for the call; it writes nothing. `device` stays open for the call.
    check(cmd, unsafe {
        ioctl::vfio_device_set_irqs(device.as_raw_fd(), set)
    })?;
    Ok(())
}

/// `VFIO_DEVICE_SET_IRQS` on the device with one eventfd (`VFIO_IRQ_SET_DATA_EVENTFD`,
/// count 1); `cmd` names the action in the error.
pub(crate) fn device_set_irqs_eventfd(
    cmd: &'static str,
    device: BorrowedFd<'_>,
    set: &VfioIrqSetEventfd,
) -> Result<()> {
    // SAFETY: the kernel reads the 20-byte header, then `count * 4` = 4 bytes of data
    // (drivers/vfio/vfio_main.c:1686-1700; `argsz` = 24 covers them): the whole struct,
    // through a pointer made from `&VfioIrqSetEventfd`, valid and aligned for the call; it
    // writes nothing. The descriptor inside is a plain integer to the kernel, which takes
    // its own reference to the eventfd. `device` stays open for the call.
    check(cmd, unsafe {
        ioctl::vfio_device_set_irqs_eventfd(device.as_raw_fd(), set)
    })?;
    Ok(())
}

/// Where the 4-byte register at `offset` of `map` lies, or `None` when it would not lie
/// wholly inside the map or would be misaligned.
fn register_at(map: &MmapRaw, offset: usize) -> Option<*mut u32> {
    let end = offset.checked_add(4)?;
    if end > map.len() || offset % 4 != 0 {
        return None;
    }
    // The mapping is page aligned, so a 4-aligned offset is a 4-aligned address.
    Some(map.as_mut_ptr().wrapping_add(offset).cast::<u32>())
}

/// Reads the 32-bit register at `offset` of the device mapping `map` with one volatile
/// load. `None` when it lies outside the mapping or is misaligned.
pub(crate) fn mmio_read32(map: Shared<'_>, offset: usize) -> Option<u32> {
    let p = register_at(map.map, offset)?;
    // SAFETY:
    // - `p` is 4-aligned and its 4 bytes lie inside the mapping (checked by
    //   `register_at`); the mapping stays mapped while `map` is borrowed (`MmapRaw`
    //   unmaps only on drop), and it is readable (every `MmapRaw` of the crate is).
    // - It is a shared mapping of a device's register window, which is not Rust-owned
    //   memory: no reference to it exists (`VfioRegion` hands out no pointer into it), so
    //   a volatile load of a `u32`, for which every bit pattern is valid, is the access
    //   (vfio-platform maps it uncached, `pgprot_noncached`,
    //   drivers/vfio/platform/vfio_platform_common.c:561).
    Some(unsafe { p.read_volatile() })
}

/// Writes `value` to the 32-bit register at `offset` of the device mapping `map` with one
/// volatile store. `None` (and no write) when it lies outside the mapping, is misaligned,
/// or the mapping is not writable.
pub(crate) fn mmio_write32(map: Shared<'_>, offset: usize, value: u32) -> Option<()> {
    if !map.writable {
        return None;
    }
    let p = register_at(map.map, offset)?;
    // SAFETY: as for `mmio_read32`: 4 aligned bytes inside a live shared mapping that no
    // Rust reference covers; it was mapped `PROT_READ | PROT_WRITE` (`writable`, checked
    // above, records how its owner mapped it), so the store is allowed. Device registers
    // have side effects: the store happens exactly once, as a volatile access does.
    unsafe { p.write_volatile(value) };
    Some(())
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use memmap2::MmapOptions;
    use nix::errno::Errno;

    use super::*;
    use crate::vfio::abi::{VFIO_IRQ_SET_ACTION_UNMASK, VFIO_NOIOMMU_IOMMU};

    /// On a descriptor that is not VFIO's, every wrapper fails with ENOTTY and names its
    /// command.
    #[test]
    fn every_command_names_itself() {
        let f = tempfile::tempfile().unwrap();
        let fd = f.as_fd();
        let name = c"9030000.pl061";
        let errors = [
            get_api_version(fd).map(drop).unwrap_err(),
            check_extension(fd, VFIO_NOIOMMU_IOMMU)
                .map(drop)
                .unwrap_err(),
            set_iommu(fd, VFIO_NOIOMMU_IOMMU).unwrap_err(),
            group_get_status(fd).map(drop).unwrap_err(),
            group_set_container(fd, fd).unwrap_err(),
            group_get_device_fd(fd, name).map(drop).unwrap_err(),
            device_get_info(fd).map(drop).unwrap_err(),
            device_get_region_info(fd, 0).map(drop).unwrap_err(),
            device_get_irq_info(fd, 0).map(drop).unwrap_err(),
            device_set_irqs(
                "VFIO_DEVICE_SET_IRQS (unmask)",
                fd,
                &VfioIrqSet::data_none(VFIO_IRQ_SET_ACTION_UNMASK, 0, 1),
            )
            .unwrap_err(),
            device_set_irqs_eventfd(
                "VFIO_DEVICE_SET_IRQS (trigger)",
                fd,
                &VfioIrqSetEventfd::trigger(0, -1),
            )
            .unwrap_err(),
        ];
        let names: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            names,
            [
                "ioctl VFIO_GET_API_VERSION failed",
                "ioctl VFIO_CHECK_EXTENSION failed",
                "ioctl VFIO_SET_IOMMU failed",
                "ioctl VFIO_GROUP_GET_STATUS failed",
                "ioctl VFIO_GROUP_SET_CONTAINER failed",
                "ioctl VFIO_GROUP_GET_DEVICE_FD failed",
                "ioctl VFIO_DEVICE_GET_INFO failed",
                "ioctl VFIO_DEVICE_GET_REGION_INFO failed",
                "ioctl VFIO_DEVICE_GET_IRQ_INFO failed",
                "ioctl VFIO_DEVICE_SET_IRQS (unmask) failed",
                "ioctl VFIO_DEVICE_SET_IRQS (trigger) failed",
            ]
        );
        for e in &errors {
            assert_eq!(e.errno(), Errno::ENOTTY, "{e}");
        }
    }

    /// Volatile accesses stay inside the mapping and at 4-aligned offsets; a file stands
    /// in for the register window.
    #[test]
    fn register_accesses_are_bounded_and_aligned() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(0x1000).unwrap();
        let raw = MmapOptions::new().len(0x1000).map_raw(&f).unwrap();
        let map = Shared {
            map: &raw,
            writable: true,
        };
        assert_eq!(mmio_read32(map, 0x418), Some(0));
        assert_eq!(mmio_write32(map, 0x418, 0x08), Some(()));
        assert_eq!(mmio_read32(map, 0x418), Some(0x08));
        assert_eq!(mmio_read32(map, 0xffc), Some(0));
        assert_eq!(mmio_read32(map, 0x1000), None);
        assert_eq!(mmio_read32(map, 0xffe), None);
        assert_eq!(mmio_read32(map, 0x402), None);
        assert_eq!(mmio_write32(map, 0x1000, 1), None);
        assert_eq!(mmio_write32(map, usize::MAX - 1, 1), None);
        // A read-only mapping is never written.
        let ro = MmapOptions::new()
            .len(0x1000)
            .map_raw_read_only(&f)
            .unwrap();
        let ro = Shared {
            map: &ro,
            writable: false,
        };
        assert_eq!(mmio_write32(ro, 0x418, 0), None);
        assert_eq!(mmio_read32(ro, 0x418), Some(0x08));
    }
}
