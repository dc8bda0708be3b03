//! The part of the VFIO ABI that kmemlabd uses, written by hand from Linux 7.3's
//! `include/uapi/linux/vfio.h` (line numbers below are that file's, from Debian's
//! `linux-source-7.3` 7.3.4). Fixed-width fields only; sizes, offsets and command numbers
//! are pinned by the tests at the bottom.
//!
//! Not the `vfio-bindings` crate: kmemlabd needs six structs and a dozen constants, and
//! that crate has no ioctl numbers anyway.

use std::mem::size_of;

/// `VFIO_API_VERSION` (vfio.h:19): what `VFIO_GET_API_VERSION` returns.
pub const VFIO_API_VERSION: i32 = 0;
/// `VFIO_NOIOMMU_IOMMU` (vfio.h:48): the no-IOMMU "IOMMU" of `VFIO_CHECK_EXTENSION` and
/// `VFIO_SET_IOMMU`.
pub const VFIO_NOIOMMU_IOMMU: u32 = 8;

/// `VFIO_TYPE` (vfio.h:71): the ioctl type, `';'`.
pub const VFIO_TYPE: u8 = b';';
/// `VFIO_BASE` (vfio.h:72): the first ioctl number.
pub const VFIO_BASE: u8 = 100;

/// The type of an ioctl request number, as nix's `request_code_*!` macros give it.
pub type IoctlNr = nix::sys::ioctl::ioctl_num_type;

// Every VFIO ioctl is `_IO(VFIO_TYPE, VFIO_BASE + n)`: no direction and no size in the
// number, whatever the argument (the header's comments give the `_IOW`/`_IOR` that the
// numbers do not encode).

/// `VFIO_GET_API_VERSION` (vfio.h:112), on the container; no argument.
pub const VFIO_GET_API_VERSION: IoctlNr = nix::request_code_none!(VFIO_TYPE, VFIO_BASE);
/// `VFIO_CHECK_EXTENSION` (vfio.h:121), on the container; the extension as the argument's
/// value.
pub const VFIO_CHECK_EXTENSION: IoctlNr = nix::request_code_none!(VFIO_TYPE, VFIO_BASE + 1);
/// `VFIO_SET_IOMMU` (vfio.h:134), on the container; the IOMMU type as the argument's value.
pub const VFIO_SET_IOMMU: IoctlNr = nix::request_code_none!(VFIO_TYPE, VFIO_BASE + 2);
/// `VFIO_GROUP_GET_STATUS` (vfio.h:153), on the group; a [`VfioGroupStatus`].
pub const VFIO_GROUP_GET_STATUS: IoctlNr = nix::request_code_none!(VFIO_TYPE, VFIO_BASE + 3);
/// `VFIO_GROUP_SET_CONTAINER` (vfio.h:167), on the group; a pointer to the container's
/// descriptor (`int`).
pub const VFIO_GROUP_SET_CONTAINER: IoctlNr = nix::request_code_none!(VFIO_TYPE, VFIO_BASE + 4);
/// `VFIO_GROUP_UNSET_CONTAINER` (vfio.h:182); not used (closing the group does it).
pub const VFIO_GROUP_UNSET_CONTAINER: IoctlNr = nix::request_code_none!(VFIO_TYPE, VFIO_BASE + 5);
/// `VFIO_GROUP_GET_DEVICE_FD` (vfio.h:194), on the group; a pointer to the device's name
/// (a C string). Returns a new descriptor.
pub const VFIO_GROUP_GET_DEVICE_FD: IoctlNr = nix::request_code_none!(VFIO_TYPE, VFIO_BASE + 6);
/// `VFIO_DEVICE_GET_INFO` (vfio.h:223), on the device; a [`VfioDeviceInfo`].
pub const VFIO_DEVICE_GET_INFO: IoctlNr = nix::request_code_none!(VFIO_TYPE, VFIO_BASE + 7);
/// `VFIO_DEVICE_GET_REGION_INFO` (vfio.h:284), on the device; a [`VfioRegionInfo`].
pub const VFIO_DEVICE_GET_REGION_INFO: IoctlNr = nix::request_code_none!(VFIO_TYPE, VFIO_BASE + 8);
/// `VFIO_DEVICE_GET_IRQ_INFO` (vfio.h:545), on the device; a [`VfioIrqInfo`].
pub const VFIO_DEVICE_GET_IRQ_INFO: IoctlNr = nix::request_code_none!(VFIO_TYPE, VFIO_BASE + 9);
/// `VFIO_DEVICE_SET_IRQS` (vfio.h:599), on the device; a [`VfioIrqSet`] or a
/// [`VfioIrqSetEventfd`].
pub const VFIO_DEVICE_SET_IRQS: IoctlNr = nix::request_code_none!(VFIO_TYPE, VFIO_BASE + 10);
/// `VFIO_DEVICE_RESET` (vfio.h:612); not used (the PL061 has no reset).
pub const VFIO_DEVICE_RESET: IoctlNr = nix::request_code_none!(VFIO_TYPE, VFIO_BASE + 11);

/// `VFIO_GROUP_FLAGS_VIABLE` (vfio.h:150): every device of the group is bound to a VFIO
/// driver (or to none), so the group can be used.
pub const VFIO_GROUP_FLAGS_VIABLE: u32 = 1 << 0;
/// `VFIO_GROUP_FLAGS_CONTAINER_SET` (vfio.h:151).
pub const VFIO_GROUP_FLAGS_CONTAINER_SET: u32 = 1 << 1;

/// `VFIO_DEVICE_FLAGS_RESET` (vfio.h:209).
pub const VFIO_DEVICE_FLAGS_RESET: u32 = 1 << 0;
/// `VFIO_DEVICE_FLAGS_PLATFORM` (vfio.h:211): a `vfio-platform` device.
pub const VFIO_DEVICE_FLAGS_PLATFORM: u32 = 1 << 2;
/// `VFIO_DEVICE_FLAGS_AMBA` (vfio.h:212): a `vfio-amba` device.
pub const VFIO_DEVICE_FLAGS_AMBA: u32 = 1 << 3;

/// `VFIO_REGION_INFO_FLAG_READ` (vfio.h:275).
pub const VFIO_REGION_INFO_FLAG_READ: u32 = 1 << 0;
/// `VFIO_REGION_INFO_FLAG_WRITE` (vfio.h:276).
pub const VFIO_REGION_INFO_FLAG_WRITE: u32 = 1 << 1;
/// `VFIO_REGION_INFO_FLAG_MMAP` (vfio.h:277). vfio-platform sets it only for a region
/// whose address and size are whole pages
/// (drivers/vfio/platform/vfio_platform_common.c:166-172).
pub const VFIO_REGION_INFO_FLAG_MMAP: u32 = 1 << 2;

/// `VFIO_IRQ_INFO_EVENTFD` (vfio.h:538): the interrupt can signal an eventfd.
pub const VFIO_IRQ_INFO_EVENTFD: u32 = 1 << 0;
/// `VFIO_IRQ_INFO_MASKABLE` (vfio.h:539): it takes `ACTION_MASK` and `ACTION_UNMASK`.
pub const VFIO_IRQ_INFO_MASKABLE: u32 = 1 << 1;
/// `VFIO_IRQ_INFO_AUTOMASKED` (vfio.h:540): VFIO masks it after each signal (a level
/// interrupt); userspace unmasks it.
pub const VFIO_IRQ_INFO_AUTOMASKED: u32 = 1 << 2;
/// `VFIO_IRQ_INFO_NORESIZE` (vfio.h:541).
pub const VFIO_IRQ_INFO_NORESIZE: u32 = 1 << 3;

/// `VFIO_IRQ_SET_DATA_NONE` (vfio.h:588): no data after the header.
pub const VFIO_IRQ_SET_DATA_NONE: u32 = 1 << 0;
/// `VFIO_IRQ_SET_DATA_BOOL` (vfio.h:589): one `u8` per interrupt.
pub const VFIO_IRQ_SET_DATA_BOOL: u32 = 1 << 1;
/// `VFIO_IRQ_SET_DATA_EVENTFD` (vfio.h:590): one `s32` eventfd per interrupt.
pub const VFIO_IRQ_SET_DATA_EVENTFD: u32 = 1 << 2;
/// `VFIO_IRQ_SET_ACTION_MASK` (vfio.h:591).
pub const VFIO_IRQ_SET_ACTION_MASK: u32 = 1 << 3;
/// `VFIO_IRQ_SET_ACTION_UNMASK` (vfio.h:592).
pub const VFIO_IRQ_SET_ACTION_UNMASK: u32 = 1 << 4;
/// `VFIO_IRQ_SET_ACTION_TRIGGER` (vfio.h:593).
pub const VFIO_IRQ_SET_ACTION_TRIGGER: u32 = 1 << 5;

/// The `argsz` of a struct: its size, which always fits a `u32`.
const fn argsz<T>() -> u32 {
    size_of::<T>() as u32
}

/// `struct vfio_group_status` (vfio.h:147).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VfioGroupStatus {
    /// The size of this struct; the caller sets it.
    pub argsz: u32,
    /// `VFIO_GROUP_FLAGS_*`.
    pub flags: u32,
}

impl VfioGroupStatus {
    /// A status to be filled in, `argsz` set.
    pub fn new() -> Self {
        Self {
            argsz: argsz::<Self>(),
            flags: 0,
        }
    }
}

/// `struct vfio_device_info` (vfio.h:206).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VfioDeviceInfo {
    /// The size of this struct; the caller sets it.
    pub argsz: u32,
    /// `VFIO_DEVICE_FLAGS_*`.
    pub flags: u32,
    /// Highest region index + 1.
    pub num_regions: u32,
    /// Highest interrupt index + 1.
    pub num_irqs: u32,
    /// Offset of the first capability in the struct (with `VFIO_DEVICE_FLAGS_CAPS`).
    pub cap_offset: u32,
    /// Padding.
    pub pad: u32,
}

impl VfioDeviceInfo {
    /// An info to be filled in, `argsz` set.
    pub fn new() -> Self {
        Self {
            argsz: argsz::<Self>(),
            ..Self::default()
        }
    }
}

/// `struct vfio_region_info` (vfio.h:272). `size` and `offset` are `__aligned_u64`, so
/// the struct is 8-aligned on every architecture (`align(8)`; `u64` alone is 4-aligned
/// on i386).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VfioRegionInfo {
    /// The size of this struct; the caller sets it.
    pub argsz: u32,
    /// `VFIO_REGION_INFO_FLAG_*`.
    pub flags: u32,
    /// The region asked for; the caller sets it.
    pub index: u32,
    /// Offset of the first capability in the struct.
    pub cap_offset: u32,
    /// The region's size in bytes.
    pub size: u64,
    /// Where the region starts in the device descriptor (for `mmap` and `pread`).
    pub offset: u64,
}

impl VfioRegionInfo {
    /// The info of region `index`, to be filled in, `argsz` set.
    pub fn new(index: u32) -> Self {
        Self {
            argsz: argsz::<Self>(),
            index,
            ..Self::default()
        }
    }
}

/// `struct vfio_irq_info` (vfio.h:535).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VfioIrqInfo {
    /// The size of this struct; the caller sets it.
    pub argsz: u32,
    /// `VFIO_IRQ_INFO_*`.
    pub flags: u32,
    /// The interrupt index asked for; the caller sets it.
    pub index: u32,
    /// Interrupts within the index.
    pub count: u32,
}

impl VfioIrqInfo {
    /// The info of interrupt index `index`, to be filled in, `argsz` set.
    pub fn new(index: u32) -> Self {
        Self {
            argsz: argsz::<Self>(),
            index,
            ..Self::default()
        }
    }
}

/// `struct vfio_irq_set` (vfio.h:585) without data (`VFIO_IRQ_SET_DATA_NONE`): the
/// header up to `count`, which is all the kernel reads then (`minsz` in
/// `vfio_set_irqs_validate_and_prepare`, drivers/vfio/vfio_main.c:1665).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VfioIrqSet {
    /// The size of this struct.
    pub argsz: u32,
    /// One `VFIO_IRQ_SET_DATA_*` and one `VFIO_IRQ_SET_ACTION_*`.
    pub flags: u32,
    /// The interrupt index.
    pub index: u32,
    /// The first interrupt within the index.
    pub start: u32,
    /// How many interrupts from `start` (0 with `DATA_NONE | ACTION_TRIGGER`: disable the
    /// whole index).
    pub count: u32,
}

impl VfioIrqSet {
    /// `flags` (with `VFIO_IRQ_SET_DATA_NONE`) on `count` interrupts of `index` from 0.
    pub fn data_none(action: u32, index: u32, count: u32) -> Self {
        Self {
            argsz: argsz::<Self>(),
            flags: VFIO_IRQ_SET_DATA_NONE | action,
            index,
            start: 0,
            count,
        }
    }
}

/// `struct vfio_irq_set` (vfio.h:585) with one `__s32` of data: the eventfd of interrupt
/// `start` (`VFIO_IRQ_SET_DATA_EVENTFD`, count 1). -1 detaches it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VfioIrqSetEventfd {
    /// The size of this struct (header and the one `fd`).
    pub argsz: u32,
    /// `VFIO_IRQ_SET_DATA_EVENTFD` and one `VFIO_IRQ_SET_ACTION_*`.
    pub flags: u32,
    /// The interrupt index.
    pub index: u32,
    /// The interrupt within the index.
    pub start: u32,
    /// 1.
    pub count: u32,
    /// The eventfd (`data[0..4]`).
    pub fd: i32,
}

impl VfioIrqSetEventfd {
    /// Signals `fd` on interrupt 0 of `index` (`DATA_EVENTFD | ACTION_TRIGGER`).
    pub fn trigger(index: u32, fd: i32) -> Self {
        Self {
            argsz: argsz::<Self>(),
            flags: VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
            index,
            start: 0,
            count: 1,
            fd,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::mem::{align_of, offset_of};

    use super::*;

    /// Sizes and offsets as the header lays them out (all fields `__u32` but the two
    /// `__aligned_u64` of `vfio_region_info`).
    #[test]
    fn struct_layouts_match_the_header() {
        assert_eq!(size_of::<VfioGroupStatus>(), 8);
        assert_eq!(offset_of!(VfioGroupStatus, argsz), 0);
        assert_eq!(offset_of!(VfioGroupStatus, flags), 4);

        assert_eq!(size_of::<VfioDeviceInfo>(), 24);
        assert_eq!(offset_of!(VfioDeviceInfo, argsz), 0);
        assert_eq!(offset_of!(VfioDeviceInfo, flags), 4);
        assert_eq!(offset_of!(VfioDeviceInfo, num_regions), 8);
        assert_eq!(offset_of!(VfioDeviceInfo, num_irqs), 12);
        assert_eq!(offset_of!(VfioDeviceInfo, cap_offset), 16);
        assert_eq!(offset_of!(VfioDeviceInfo, pad), 20);

        assert_eq!(size_of::<VfioRegionInfo>(), 32);
        assert_eq!(align_of::<VfioRegionInfo>(), 8);
        assert_eq!(offset_of!(VfioRegionInfo, argsz), 0);
        assert_eq!(offset_of!(VfioRegionInfo, flags), 4);
        assert_eq!(offset_of!(VfioRegionInfo, index), 8);
        assert_eq!(offset_of!(VfioRegionInfo, cap_offset), 12);
        assert_eq!(offset_of!(VfioRegionInfo, size), 16);
        assert_eq!(offset_of!(VfioRegionInfo, offset), 24);

        assert_eq!(size_of::<VfioIrqInfo>(), 16);
        assert_eq!(offset_of!(VfioIrqInfo, argsz), 0);
        assert_eq!(offset_of!(VfioIrqInfo, flags), 4);
        assert_eq!(offset_of!(VfioIrqInfo, index), 8);
        assert_eq!(offset_of!(VfioIrqInfo, count), 12);

        // offsetofend(struct vfio_irq_set, count) = 20: data[] starts there.
        assert_eq!(size_of::<VfioIrqSet>(), 20);
        assert_eq!(offset_of!(VfioIrqSet, argsz), 0);
        assert_eq!(offset_of!(VfioIrqSet, flags), 4);
        assert_eq!(offset_of!(VfioIrqSet, index), 8);
        assert_eq!(offset_of!(VfioIrqSet, start), 12);
        assert_eq!(offset_of!(VfioIrqSet, count), 16);

        assert_eq!(size_of::<VfioIrqSetEventfd>(), 24);
        assert_eq!(offset_of!(VfioIrqSetEventfd, count), 16);
        assert_eq!(offset_of!(VfioIrqSetEventfd, fd), 20);
    }

    /// The constructors set `argsz` to the struct's size.
    #[test]
    fn argsz_is_the_size() {
        assert_eq!(VfioGroupStatus::new().argsz, 8);
        assert_eq!(VfioDeviceInfo::new().argsz, 24);
        assert_eq!(VfioRegionInfo::new(0).argsz, 32);
        assert_eq!(VfioIrqInfo::new(0).argsz, 16);
        assert_eq!(
            VfioIrqSet::data_none(VFIO_IRQ_SET_ACTION_UNMASK, 0, 1).argsz,
            20
        );
        let trigger = VfioIrqSetEventfd::trigger(0, 7);
        assert_eq!((trigger.argsz, trigger.count, trigger.fd), (24, 1, 7));
        assert_eq!(trigger.flags, 0x24);
    }

    /// `_IO(';', 100 + n)` = `0x3b00 | (0x64 + n)`, worked out by hand from vfio.h:71-72
    /// and `_IO`'s zero direction and size.
    #[test]
    fn ioctl_numbers_are_pinned() {
        let pinned: [(IoctlNr, u32); 12] = [
            (VFIO_GET_API_VERSION, 0x3b64),
            (VFIO_CHECK_EXTENSION, 0x3b65),
            (VFIO_SET_IOMMU, 0x3b66),
            (VFIO_GROUP_GET_STATUS, 0x3b67),
            (VFIO_GROUP_SET_CONTAINER, 0x3b68),
            (VFIO_GROUP_UNSET_CONTAINER, 0x3b69),
            (VFIO_GROUP_GET_DEVICE_FD, 0x3b6a),
            (VFIO_DEVICE_GET_INFO, 0x3b6b),
            (VFIO_DEVICE_GET_REGION_INFO, 0x3b6c),
            (VFIO_DEVICE_GET_IRQ_INFO, 0x3b6d),
            (VFIO_DEVICE_SET_IRQS, 0x3b6e),
            (VFIO_DEVICE_RESET, 0x3b6f),
        ];
        for (nr, want) in pinned {
            assert_eq!(nr as u32, want, "{nr:#x}");
        }
    }

    /// The flag values of the header.
    #[test]
    fn flags_match_the_header() {
        assert_eq!(VFIO_API_VERSION, 0);
        assert_eq!(VFIO_NOIOMMU_IOMMU, 8);
        assert_eq!(
            (VFIO_GROUP_FLAGS_VIABLE, VFIO_GROUP_FLAGS_CONTAINER_SET),
            (1, 2)
        );
        assert_eq!(
            (
                VFIO_DEVICE_FLAGS_RESET,
                VFIO_DEVICE_FLAGS_PLATFORM,
                VFIO_DEVICE_FLAGS_AMBA
            ),
            (1, 4, 8)
        );
        assert_eq!(
            (
                VFIO_REGION_INFO_FLAG_READ,
                VFIO_REGION_INFO_FLAG_WRITE,
                VFIO_REGION_INFO_FLAG_MMAP
            ),
            (1, 2, 4)
        );
        assert_eq!(
            (
                VFIO_IRQ_INFO_EVENTFD,
                VFIO_IRQ_INFO_MASKABLE,
                VFIO_IRQ_INFO_AUTOMASKED,
                VFIO_IRQ_INFO_NORESIZE
            ),
            (1, 2, 4, 8)
        );
        assert_eq!(
            [
                VFIO_IRQ_SET_DATA_NONE,
                VFIO_IRQ_SET_DATA_BOOL,
                VFIO_IRQ_SET_DATA_EVENTFD,
                VFIO_IRQ_SET_ACTION_MASK,
                VFIO_IRQ_SET_ACTION_UNMASK,
                VFIO_IRQ_SET_ACTION_TRIGGER
            ],
            [1, 2, 4, 8, 16, 32]
        );
    }
}
