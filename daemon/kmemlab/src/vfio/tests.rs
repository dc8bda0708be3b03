use std::fs;
use std::os::unix::fs::symlink;
use std::path::PathBuf;

use super::abi::{
    VfioGroupStatus, VFIO_DEVICE_FLAGS_AMBA, VFIO_DEVICE_FLAGS_PLATFORM, VFIO_GROUP_FLAGS_VIABLE,
    VFIO_IRQ_INFO_AUTOMASKED, VFIO_IRQ_INFO_EVENTFD, VFIO_IRQ_INFO_MASKABLE,
    VFIO_REGION_INFO_FLAG_MMAP, VFIO_REGION_INFO_FLAG_READ, VFIO_REGION_INFO_FLAG_WRITE,
};
use super::*;

/// A sysfs and `/dev` tree as a kernel with VFIO, no-IOMMU mode on and the PL061 bound
/// to vfio-amba in no-IOMMU group 0 shows it.
struct Tree {
    tmp: tempfile::TempDir,
}

impl Tree {
    fn new() -> Self {
        let tree = Self {
            tmp: tempfile::tempdir().unwrap(),
        };
        let dev = tree.dev();
        fs::create_dir_all(dev.join("vfio")).unwrap();
        fs::write(dev.join("vfio/vfio"), "").unwrap();
        fs::write(dev.join("vfio/noiommu-0"), "").unwrap();
        tree.set_param("Y\n");
        let sys = tree.sys();
        fs::create_dir_all(sys.join("bus/amba/drivers/vfio-amba")).unwrap();
        fs::create_dir_all(sys.join("bus/amba/drivers/pl061_gpio")).unwrap();
        fs::create_dir_all(sys.join("kernel/iommu_groups/0")).unwrap();
        fs::create_dir_all(sys.join("devices/platform/9030000.pl061")).unwrap();
        fs::create_dir_all(sys.join("bus/amba/devices")).unwrap();
        symlink(
            "../../../devices/platform/9030000.pl061",
            sys.join("bus/amba/devices/9030000.pl061"),
        )
        .unwrap();
        tree.bind(Some("vfio-amba"));
        symlink(
            "../../../kernel/iommu_groups/0",
            sys.join("devices/platform/9030000.pl061/iommu_group"),
        )
        .unwrap();
        tree
    }

    fn sys(&self) -> PathBuf {
        self.tmp.path().join("sys")
    }

    fn dev(&self) -> PathBuf {
        self.tmp.path().join("dev")
    }

    fn target(&self) -> VfioTarget {
        VfioTarget::default().with_roots(self.sys(), self.dev())
    }

    fn device_dir(&self) -> PathBuf {
        self.sys().join("devices/platform/9030000.pl061")
    }

    fn set_param(&self, value: &str) {
        let dir = self.sys().join("module/vfio/parameters");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("enable_unsafe_noiommu_mode"), value).unwrap();
    }

    /// Binds the device to `driver` (or unbinds it).
    fn bind(&self, driver: Option<&str>) {
        let link = self.device_dir().join("driver");
        let _ = fs::remove_file(&link);
        if let Some(driver) = driver {
            symlink(format!("../../../bus/amba/drivers/{driver}"), link).unwrap();
        }
    }
}

#[test]
fn locates_the_group_of_a_bound_device() {
    let tree = Tree::new();
    let loc = locate(&tree.target()).unwrap();
    assert_eq!(
        loc,
        VfioLocation {
            container: tree.dev().join("vfio/vfio"),
            group: tree.dev().join("vfio/noiommu-0"),
            group_id: 0,
            driver: "vfio-amba".into(),
        }
    );
}

#[test]
fn default_paths_are_the_kernels() {
    let t = VfioTarget::default();
    assert_eq!(
        (t.bus.as_str(), t.device.as_str(), t.line),
        ("amba", "9030000.pl061", 3)
    );
    assert_eq!(t.container_path(), Path::new("/dev/vfio/vfio"));
    assert_eq!(t.group_path(4), Path::new("/dev/vfio/noiommu-4"));
    assert_eq!(
        t.device_dir(),
        Path::new("/sys/bus/amba/devices/9030000.pl061")
    );
    assert_eq!(
        t.noiommu_param(),
        Path::new("/sys/module/vfio/parameters/enable_unsafe_noiommu_mode")
    );
}

#[test]
fn no_container_node_is_no_vfio_in_the_kernel() {
    let tree = Tree::new();
    fs::remove_file(tree.dev().join("vfio/vfio")).unwrap();
    let err = locate(&tree.target()).unwrap_err();
    assert!(matches!(err, Error::VfioMissing { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with(&format!(
            "the kernel has no VFIO: {} does not exist",
            tree.dev().join("vfio/vfio").display()
        )),
        "{err}"
    );
    assert_eq!(err.errno_name(), "ENODEV");
}

#[test]
fn noiommu_mode_off_or_not_built() {
    let tree = Tree::new();
    tree.set_param("N\n");
    let err = locate(&tree.target()).unwrap_err();
    assert!(matches!(err, Error::VfioNoiommuOff { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "vfio no-iommu mode is off: {} reads N (write 1 to it, then bind 9030000.pl061 \
             to vfio)",
            tree.target().noiommu_param().display()
        )
    );

    fs::remove_file(tree.target().noiommu_param()).unwrap();
    let err = locate(&tree.target()).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("(a kernel without CONFIG_VFIO_NOIOMMU)"),
        "{err}"
    );

    tree.set_param("maybe");
    let err = locate(&tree.target()).unwrap_err();
    assert!(matches!(err, Error::Sysfs { .. }), "{err:?}");
    assert!(
        err.report().contains("\"maybe\" is not Y or N"),
        "{}",
        err.report()
    );
}

#[test]
fn the_noiommu_switch_reads_y_or_n() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("param");
    assert_eq!(read_noiommu_param(&p).unwrap(), None);
    for (text, want) in [("Y\n", true), ("N\n", false), ("1", true), ("0\n", false)] {
        fs::write(&p, text).unwrap();
        assert_eq!(read_noiommu_param(&p).unwrap(), Some(want), "{text:?}");
    }
}

#[test]
fn no_such_device() {
    let tree = Tree::new();
    let target = VfioTarget {
        device: "9040000.pl061".into(),
        ..tree.target()
    };
    let err = locate(&target).unwrap_err();
    assert!(matches!(err, Error::VfioNoDevice { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("no device 9040000.pl061 on bus amba: "),
        "{err}"
    );
}

#[test]
fn a_device_bound_elsewhere_names_its_driver() {
    let tree = Tree::new();
    tree.bind(Some("pl061_gpio"));
    let err = locate(&tree.target()).unwrap_err();
    assert!(matches!(err, Error::VfioNotBound { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "9030000.pl061 is not bound to vfio: its driver is pl061_gpio (want vfio-amba or \
         vfio-platform)"
    );
    tree.bind(None);
    let err = locate(&tree.target()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "9030000.pl061 is not bound to vfio: its driver is none (want vfio-amba or \
         vfio-platform)"
    );
    assert_eq!(err.errno_name(), "ENODEV");
    // vfio-platform will do as well.
    assert_eq!(
        check_driver("x", Some("vfio-platform".into())).unwrap(),
        "vfio-platform"
    );
}

#[test]
fn a_device_without_a_noiommu_group() {
    let tree = Tree::new();
    fs::remove_file(tree.device_dir().join("iommu_group")).unwrap();
    let err = locate(&tree.target()).unwrap_err();
    assert!(matches!(err, Error::VfioNoiommuOff { .. }), "{err:?}");
    assert!(err.to_string().contains("has no iommu group"), "{err}");

    // A group whose node is not there.
    symlink(
        "../../../kernel/iommu_groups/5",
        tree.device_dir().join("iommu_group"),
    )
    .unwrap();
    let err = locate(&tree.target()).unwrap_err();
    assert!(
        err.to_string().ends_with(&format!(
            "9030000.pl061 has no no-iommu group ({} does not exist)",
            tree.dev().join("vfio/noiommu-5").display()
        )),
        "{err}"
    );
    // A real IOMMU's group.
    fs::write(tree.dev().join("vfio/5"), "").unwrap();
    let err = locate(&tree.target()).unwrap_err();
    assert!(err.to_string().contains("in no-iommu mode only"), "{err}");
}

#[test]
fn names_that_are_not_sysfs_names_are_refused() {
    let tree = Tree::new();
    for (bus, device) in [("amba", "../x"), ("am/ba", "9030000.pl061"), ("amba", "")] {
        let target = VfioTarget {
            bus: bus.into(),
            device: device.into(),
            ..tree.target()
        };
        let err = locate(&target).unwrap_err();
        assert!(matches!(err, Error::Invalid { .. }), "{err:?}");
    }
    let target = VfioTarget {
        line: 8,
        ..tree.target()
    };
    assert!(locate(&target).is_err());
}

/// The whole open runs on the temporary tree up to the first ioctl, which fails on the
/// regular file standing in for the container and names itself.
#[test]
fn open_reaches_the_first_ioctl() {
    let tree = Tree::new();
    let err = Vfio::open(&tree.target()).unwrap_err();
    assert!(
        err.report()
            .starts_with("ioctl VFIO_GET_API_VERSION failed: ENOTTY"),
        "{}",
        err.report()
    );
    let err = VfioButton::open(&tree.target()).unwrap_err();
    assert_eq!(err.errno_name(), "ENOTTY");
}

#[test]
fn busy_and_permission_errors_say_so() {
    let group = Path::new("/dev/vfio/noiommu-0");
    let err = open_error(group, io::Error::from_raw_os_error(Errno::EBUSY as i32));
    assert!(matches!(err, Error::VfioBusy { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "/dev/vfio/noiommu-0 is busy: another process has it open (another kmemlabd, a \
         VMM); one user per vfio group"
    );
    assert_eq!(err.errno_name(), "EBUSY");
    let err = open_error(group, io::Error::from_raw_os_error(Errno::EPERM as i32));
    assert_eq!(
        err.to_string(),
        "opening /dev/vfio/noiommu-0 was refused: vfio no-iommu mode needs CAP_SYS_RAWIO"
    );
    assert_eq!(err.errno_name(), "EPERM");
    let err = open_error(group, io::Error::from_raw_os_error(Errno::EACCES as i32));
    assert!(matches!(err, Error::Open { .. }), "{err:?}");

    let ioctl = |source| Error::Ioctl {
        cmd: "VFIO_GROUP_GET_DEVICE_FD",
        source,
    };
    let err = ioctl_error(ioctl(Errno::EPERM));
    assert_eq!(
        err.to_string(),
        "VFIO_GROUP_GET_DEVICE_FD was refused: vfio no-iommu mode needs CAP_SYS_RAWIO"
    );
    let err = ioctl_error(ioctl(Errno::EBUSY));
    assert!(matches!(err, Error::VfioBusy { .. }), "{err:?}");
    let err = ioctl_error(ioctl(Errno::ENODEV));
    assert!(matches!(err, Error::Ioctl { .. }), "{err:?}");
}

#[test]
fn the_flock_on_the_group_refuses_a_second_holder() {
    // The lock logic on a regular file: a Vfio cannot be built without the kernel, so
    // the same flock calls run on two opens of one file.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("noiommu-0");
    fs::write(&path, "").unwrap();
    let first = Flock::lock(File::open(&path).unwrap(), FlockArg::LockExclusiveNonblock).unwrap();
    let second = Flock::lock(File::open(&path).unwrap(), FlockArg::LockExclusiveNonblock);
    assert!(matches!(second, Err((_, Errno::EWOULDBLOCK))));
    drop(first);
}

#[test]
fn protocol_checks() {
    let d = "9030000.pl061";
    check_api_version(d, 0).unwrap();
    assert_eq!(
        check_api_version(d, 1).unwrap_err().to_string(),
        "vfio device 9030000.pl061: the container speaks vfio api version 1, not 0"
    );
    check_noiommu_extension(1).unwrap();
    assert!(matches!(
        check_noiommu_extension(0).unwrap_err(),
        Error::VfioNoiommuOff { .. }
    ));

    let group = Path::new("/dev/vfio/noiommu-0");
    let viable = VfioGroupStatus {
        flags: VFIO_GROUP_FLAGS_VIABLE,
        ..VfioGroupStatus::new()
    };
    check_group_status(d, group, &viable).unwrap();
    let err = check_group_status(d, group, &VfioGroupStatus::new()).unwrap_err();
    assert!(err.to_string().contains("is not viable"), "{err}");
    assert_eq!(err.errno_name(), "EOPNOTSUPP");

    let amba = VfioDeviceInfo {
        flags: VFIO_DEVICE_FLAGS_AMBA,
        num_regions: 1,
        num_irqs: 1,
        ..VfioDeviceInfo::new()
    };
    check_device_info(d, &amba).unwrap();
    let platform = VfioDeviceInfo {
        flags: VFIO_DEVICE_FLAGS_PLATFORM,
        ..amba
    };
    check_device_info(d, &platform).unwrap();
    let pci = VfioDeviceInfo { flags: 2, ..amba };
    assert!(check_device_info(d, &pci)
        .unwrap_err()
        .to_string()
        .contains("not a vfio-amba or vfio-platform device (flags 0x2)"));
    let no_irq = VfioDeviceInfo {
        num_irqs: 0,
        ..amba
    };
    assert!(check_device_info(d, &no_irq).is_err());
}

#[test]
fn region_checks() {
    let d = "9030000.pl061";
    let rw_mmap =
        VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE | VFIO_REGION_INFO_FLAG_MMAP;
    let region = VfioRegionInfo {
        flags: rw_mmap,
        size: 0x1000,
        ..VfioRegionInfo::new(0)
    };
    check_region(d, &region, pl061::WINDOW, 0x1000).unwrap();
    // 4 KiB of registers on a 64K-page kernel: vfio-platform does not offer mmap.
    let no_mmap = VfioRegionInfo {
        flags: VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE,
        ..region
    };
    assert_eq!(
        check_region(d, &no_mmap, pl061::WINDOW, 0x10000)
            .unwrap_err()
            .to_string(),
        "vfio device 9030000.pl061: region 0 (0x1000 bytes) cannot be mmapped (flags 0x3): \
         vfio maps only whole pages, and a page is 0x10000 bytes"
    );
    let read_only = VfioRegionInfo {
        flags: VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_MMAP,
        ..region
    };
    assert!(check_region(d, &read_only, pl061::WINDOW, 0x1000).is_err());
    let small = VfioRegionInfo {
        size: 0x400,
        ..region
    };
    assert!(check_region(d, &small, pl061::WINDOW, 0x1000)
        .unwrap_err()
        .to_string()
        .contains("has 0x400 bytes; the registers need 0x420"));
}

#[test]
fn irq_modes() {
    let d = "9030000.pl061";
    let info = |flags, count| VfioIrqInfo {
        flags,
        count,
        ..VfioIrqInfo::new(0)
    };
    let level = VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED;
    assert_eq!(irq_mode(d, &info(level, 1)).unwrap(), IrqMode::Level);
    assert_eq!(
        irq_mode(d, &info(VFIO_IRQ_INFO_EVENTFD, 1)).unwrap(),
        IrqMode::Edge
    );
    assert!(irq_mode(d, &info(level & !VFIO_IRQ_INFO_EVENTFD, 1)).is_err());
    assert!(irq_mode(d, &info(level, 0)).is_err());
}
