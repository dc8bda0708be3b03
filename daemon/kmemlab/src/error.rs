//! The crate's one error type.

use std::io;
use std::path::PathBuf;

use nix::errno::Errno;

/// Everything that can go wrong in kmemlab userspace.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No UIO device carries the expected name.
    #[error("no uio device named {name:?} in {}", root.display())]
    UioNotFound {
        /// The name looked for.
        name: String,
        /// The sysfs folder searched.
        root: PathBuf,
    },
    /// A sysfs attribute could not be read or parsed.
    #[error("failed to read {}", path.display())]
    Sysfs {
        /// The attribute file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A device or file could not be opened.
    #[error("failed to open {}", path.display())]
    Open {
        /// What was opened.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Writing a file (a chart, a page) failed.
    #[error("failed to write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Another process holds the exclusive lock on the UIO device (another kmemlabd).
    #[error(
        "{} is in use: another kmemlabd holds its lock (flock LOCK_EX); \
         one kmemlabd per device",
        path.display()
    )]
    UioLocked {
        /// The UIO device.
        path: PathBuf,
    },
    /// Reading the UIO interrupt count failed.
    #[error("failed to read the interrupt count from {}", path.display())]
    IrqRead {
        /// The UIO device.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Writing 1 to re-enable the UIO interrupt failed.
    #[error("failed to re-enable the interrupt on {}", path.display())]
    IrqEnable {
        /// The UIO device.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// An ioctl failed (on `/dev/kmemlab`, or a VFIO descriptor); `cmd` names the
    /// command.
    #[error("ioctl {cmd} failed")]
    Ioctl {
        /// The command, e.g. `KMEMLAB_INFO`, `VFIO_GROUP_GET_STATUS`.
        cmd: &'static str,
        /// The errno the kernel returned.
        #[source]
        source: Errno,
    },
    /// The module speaks another ABI version.
    #[error("module abi version {found} does not match ours ({expected})")]
    AbiMismatch {
        /// The version the module reported.
        found: u32,
        /// [`kmemlab_uapi::ABI_VERSION`].
        expected: u32,
    },
    /// Mapping a UIO region failed.
    #[error("failed to map {what}")]
    Map {
        /// Which mapping, e.g. `/dev/uio0 map 0`.
        what: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// VFIO backend: the kernel has no VFIO container interface (`/dev/vfio/vfio`).
    #[error(
        "the kernel has no VFIO: {} does not exist (it needs CONFIG_VFIO with \
         CONFIG_VFIO_GROUP and CONFIG_VFIO_CONTAINER, CONFIG_VFIO_NOIOMMU, and \
         CONFIG_VFIO_AMBA or CONFIG_VFIO_PLATFORM; as modules, loaded)",
        path.display()
    )]
    VfioMissing {
        /// The container node looked for.
        path: PathBuf,
    },
    /// VFIO backend: no-IOMMU mode is off, or the device has no no-IOMMU group.
    #[error("vfio no-iommu mode is off: {reason}")]
    VfioNoiommuOff {
        /// What shows it, e.g. which file reads `N`.
        reason: String,
    },
    /// VFIO backend: the device is not in sysfs.
    #[error("no device {device} on bus {bus}: {} does not exist", path.display())]
    VfioNoDevice {
        /// The bus, e.g. `amba`.
        bus: String,
        /// The device, e.g. `9030000.pl061`.
        device: String,
        /// Its sysfs folder.
        path: PathBuf,
    },
    /// VFIO backend: the device is bound to another driver than vfio-amba or
    /// vfio-platform, or to none.
    #[error(
        "{device} is not bound to vfio: its driver is {} (want vfio-amba or vfio-platform)",
        driver.as_deref().unwrap_or("none")
    )]
    VfioNotBound {
        /// The device, e.g. `9030000.pl061`.
        device: String,
        /// The driver it is bound to (the `driver` link's name), if any.
        driver: Option<String>,
    },
    /// VFIO backend: the group or the device is in use (`EBUSY`, or the group's flock is
    /// held).
    #[error(
        "{what} is busy: another process has it open (another kmemlabd, a VMM); one \
         user per vfio group"
    )]
    VfioBusy {
        /// What was busy, e.g. `/dev/vfio/noiommu-0` or `VFIO_GROUP_GET_DEVICE_FD`.
        what: String,
        /// The errno (`EBUSY`, or `EWOULDBLOCK` from the flock).
        #[source]
        source: Errno,
    },
    /// VFIO backend: the kernel refused with `EPERM`: no-IOMMU mode needs
    /// `CAP_SYS_RAWIO`.
    #[error("{what} was refused: vfio no-iommu mode needs CAP_SYS_RAWIO")]
    VfioPermission {
        /// What was refused, e.g. `opening /dev/vfio/noiommu-0` or `VFIO_SET_IOMMU`.
        what: String,
        /// The errno (`EPERM`).
        #[source]
        source: Errno,
    },
    /// VFIO backend: the device or the kernel answered something kmemlabd cannot use (an
    /// API version, a group that is not viable, a region that cannot be mapped, an
    /// interrupt without eventfd).
    #[error("vfio device {device}: {reason}")]
    VfioUnsupported {
        /// The device, e.g. `9030000.pl061`.
        device: String,
        /// What is wrong.
        reason: String,
    },
    /// VFIO backend: a register access outside the mapped window, or misaligned.
    #[error(
        "register offset {offset:#x} is outside the {len:#x}-byte register window or misaligned"
    )]
    Register {
        /// The register's offset.
        offset: usize,
        /// The window's length.
        len: usize,
    },
    /// Blocking signals or creating the signalfd failed.
    #[error("failed to set up signal handling")]
    Signals {
        /// The cause.
        #[source]
        source: Errno,
    },
    /// Creating, registering or waiting on the `mio::Poll` failed.
    #[error("failed to poll for events")]
    Poll {
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Writing an event line failed.
    #[error("failed to write an event line")]
    Output {
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A name, number or size given on the command line (or in a plan) is not valid.
    #[error("invalid {what} {input:?}: {reason}")]
    Invalid {
        /// What was being parsed, e.g. `size`.
        what: &'static str,
        /// The text given.
        input: String,
        /// Why it was refused.
        reason: String,
    },
    /// One step of a `--plan` is not valid.
    #[error("invalid plan step {index} {step:?}")]
    PlanStep {
        /// The step's position, from 1.
        index: usize,
        /// The step's text.
        step: String,
        /// What is wrong with it.
        #[source]
        source: Box<Error>,
    },
    /// `kmemlabctl bench --live`: the module refused one of the allocations to hold.
    #[error(
        "failed to hold {wanted} live allocations of kmalloc 64 B: the module refused \
         after {held}"
    )]
    LiveFill {
        /// Allocations asked for.
        wanted: u32,
        /// Allocations made before the refusal (freed again).
        held: usize,
        /// The refusal.
        #[source]
        source: Box<Error>,
    },
    /// The config file is not valid.
    #[error("invalid config {}: {message}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Serializing an event or report failed.
    #[error("failed to serialize json")]
    Json {
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The errno that best describes this error, for the `error` field of JSON reports.
    pub fn errno(&self) -> Errno {
        let io_errno = |e: &io::Error| e.raw_os_error().map_or(Errno::EIO, Errno::from_raw);
        match self {
            Error::UioNotFound { .. } => Errno::ENODEV,
            Error::Sysfs { source, .. }
            | Error::Open { source, .. }
            | Error::Write { source, .. }
            | Error::IrqRead { source, .. }
            | Error::IrqEnable { source, .. }
            | Error::Map { source, .. }
            | Error::Poll { source }
            | Error::Output { source } => io_errno(source),
            Error::Ioctl { source, .. }
            | Error::Signals { source }
            | Error::VfioBusy { source, .. }
            | Error::VfioPermission { source, .. } => *source,
            Error::VfioMissing { .. }
            | Error::VfioNoiommuOff { .. }
            | Error::VfioNoDevice { .. }
            | Error::VfioNotBound { .. } => Errno::ENODEV,
            Error::VfioUnsupported { .. } => Errno::EOPNOTSUPP,
            Error::Register { .. } => Errno::EFAULT,
            Error::AbiMismatch { .. } => Errno::EPROTO,
            Error::UioLocked { .. } => Errno::EWOULDBLOCK,
            Error::LiveFill { source, .. } => source.errno(),
            Error::Json { .. }
            | Error::Invalid { .. }
            | Error::PlanStep { .. }
            | Error::Config { .. } => Errno::EINVAL,
        }
    }

    /// The errno's symbolic name, e.g. `"ENOENT"`.
    pub fn errno_name(&self) -> String {
        errno_name(self.errno())
    }

    /// The message with all its causes, joined by `": "`.
    pub fn report(&self) -> String {
        let mut msg = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            msg.push_str(": ");
            msg.push_str(&c.to_string());
            cause = c.source();
        }
        msg
    }
}

/// The symbolic name of an errno, e.g. `"ENOENT"`.
pub fn errno_name(errno: Errno) -> String {
    format!("{errno:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_names_and_reports() {
        let e = Error::Open {
            path: "/dev/kmemlab".into(),
            source: io::Error::from_raw_os_error(libc_enoent()),
        };
        assert_eq!(e.errno_name(), "ENOENT");
        assert!(e.report().starts_with("failed to open /dev/kmemlab: "));

        let e = Error::Ioctl {
            cmd: "KMEMLAB_INFO",
            source: Errno::ENOTTY,
        };
        assert_eq!(e.errno_name(), "ENOTTY");
        assert!(e.report().starts_with("ioctl KMEMLAB_INFO failed: ENOTTY"));

        let e = Error::UioNotFound {
            name: "kmemlab".into(),
            root: "/sys/class/uio".into(),
        };
        assert_eq!(e.errno_name(), "ENODEV");
        assert_eq!(
            e.report(),
            "no uio device named \"kmemlab\" in /sys/class/uio"
        );

        let e = Error::Output {
            source: io::Error::other("boom"),
        };
        assert_eq!(e.errno_name(), "EIO");
    }

    /// The errnos of ABI v2's refusals have their names.
    #[test]
    fn quota_and_privilege_errnos() {
        for (errno, name) in [
            (Errno::EDQUOT, "EDQUOT"),
            (Errno::EPERM, "EPERM"),
            (Errno::ENOSPC, "ENOSPC"),
        ] {
            let e = Error::Ioctl {
                cmd: "KMEMLAB_ALLOC",
                source: errno,
            };
            assert_eq!(e.errno_name(), name);
            assert_eq!(errno_name(errno), name);
            assert!(e
                .report()
                .starts_with(&format!("ioctl KMEMLAB_ALLOC failed: {name}")));
        }
    }

    fn libc_enoent() -> i32 {
        Errno::ENOENT as i32
    }
}
