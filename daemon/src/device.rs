//! The seam between the daemon's logic and `/dev/kmemlab`.
//!
//! [`Device`] is what the daemon and `kmemlabctl` need from the module; [`KmemlabDevice`]
//! implements it with ioctls, [`MockDevice`] in memory so the logic runs on a laptop.
//! Later commands (ALLOC, FREE, LIST, STATS, BENCH, TRIGGER) become further methods.

use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use kmemlab_uapi::{Info, ABI_VERSION};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::sys;

/// What userspace asks of the kmemlab module.
pub trait Device {
    /// The INFO command: ABI version, page size, heap size, limits, irq.
    fn info(&self) -> Result<Info>;
}

/// Fails unless the module speaks our [`ABI_VERSION`].
pub fn check_abi(info: &Info) -> Result<()> {
    if info.abi_version == ABI_VERSION {
        Ok(())
    } else {
        Err(Error::AbiMismatch {
            found: info.abi_version,
            expected: ABI_VERSION,
        })
    }
}

/// The real device: an open `/dev/kmemlab`.
#[derive(Debug)]
pub struct KmemlabDevice {
    file: File,
    path: PathBuf,
}

impl KmemlabDevice {
    /// Opens the misc device read-write (close-on-exec).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(OFlag::O_CLOEXEC.bits())
            .open(&path)
            .map_err(|source| Error::Open {
                path: path.clone(),
                source,
            })?;
        Ok(Self { file, path })
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Device for KmemlabDevice {
    fn info(&self) -> Result<Info> {
        sys::info(self.file.as_fd())
    }
}

/// An in-memory [`Device`] for tests: answers INFO from a fixed [`Info`], or fails with
/// a fixed errno, and counts the calls.
#[derive(Debug)]
pub struct MockDevice {
    info: Info,
    fail: Option<Errno>,
    info_calls: Cell<usize>,
}

impl MockDevice {
    /// A device that reports our ABI version, 4 KiB pages, a 1 MiB heap and irq 42.
    pub fn new() -> Self {
        Self::with_info(Info {
            abi_version: ABI_VERSION,
            page_size: 4096,
            heap_size: 1 << 20,
            irq: 42,
            ..Info::default()
        })
    }

    /// A device that reports `info`.
    pub fn with_info(info: Info) -> Self {
        Self {
            info,
            fail: None,
            info_calls: Cell::new(0),
        }
    }

    /// A device whose every command fails with `errno`.
    pub fn failing(errno: Errno) -> Self {
        Self {
            fail: Some(errno),
            ..Self::new()
        }
    }

    /// How many times [`Device::info`] was called.
    pub fn info_calls(&self) -> usize {
        self.info_calls.get()
    }
}

impl Default for MockDevice {
    fn default() -> Self {
        Self::new()
    }
}

impl Device for MockDevice {
    fn info(&self) -> Result<Info> {
        self.info_calls.set(self.info_calls.get() + 1);
        match self.fail {
            Some(source) => Err(Error::Ioctl {
                cmd: "KMEMLAB_INFO",
                source,
            }),
            None => Ok(self.info),
        }
    }
}

impl<D: Device + ?Sized> Device for &D {
    fn info(&self) -> Result<Info> {
        (**self).info()
    }
}

/// [`Info`] as `kmemlabctl info` reports it (the uapi crate is `no_std` and has no serde).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InfoReport {
    /// The module's ABI version.
    pub abi_version: u32,
    /// The kernel's page size in bytes.
    pub page_size: u32,
    /// Size of the DMA-coherent heap in bytes (0: none).
    pub heap_size: u64,
    /// Bit `1 << kind` per supported allocation kind.
    pub kinds: u32,
    /// The allocation flags the module accepts.
    pub flags: u32,
    /// Largest single allocation per kind, in bytes.
    pub max_size: Vec<u64>,
    /// Most bytes outstanding at once.
    pub max_outstanding_bytes: u64,
    /// Most allocations outstanding at once.
    pub max_outstanding_count: u32,
    /// The Linux irq number the UIO device uses (0: not bound).
    pub irq: u32,
}

impl From<&Info> for InfoReport {
    fn from(i: &Info) -> Self {
        Self {
            abi_version: i.abi_version,
            page_size: i.page_size,
            heap_size: i.heap_size,
            kinds: i.kinds,
            flags: i.flags,
            max_size: i.max_size.to_vec(),
            max_outstanding_bytes: i.max_outstanding_bytes,
            max_outstanding_count: i.max_outstanding_count,
            irq: i.irq,
        }
    }
}

impl InfoReport {
    /// One JSON object on one line (no trailing newline).
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string(self).map_err(|source| Error::Json { source })
    }

    /// Readable text, one `name: value` per line, each line ending in `\n`.
    pub fn to_text(&self) -> String {
        let mut rows: Vec<(String, String)> = vec![
            ("abi version".into(), self.abi_version.to_string()),
            ("page size".into(), self.page_size.to_string()),
            ("heap size".into(), self.heap_size.to_string()),
            ("kinds".into(), format!("{:#x}", self.kinds)),
            ("flags".into(), format!("{:#x}", self.flags)),
        ];
        for (kind, max) in self.max_size.iter().enumerate().filter(|(_, m)| **m != 0) {
            rows.push((format!("max size (kind {kind})"), max.to_string()));
        }
        rows.push((
            "max outstanding bytes".into(),
            self.max_outstanding_bytes.to_string(),
        ));
        rows.push((
            "max outstanding count".into(),
            self.max_outstanding_count.to_string(),
        ));
        rows.push(("irq".into(), self.irq.to_string()));
        if self.abi_version != ABI_VERSION {
            rows.push((
                "warning".into(),
                format!("this kmemlabctl speaks abi version {ABI_VERSION}"),
            ));
        }
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
        rows.iter()
            .map(|(k, v)| format!("{:<width$} {v}\n", format!("{k}:")))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mock_answers_and_counts() {
        let dev = MockDevice::new();
        assert_eq!(dev.info().unwrap().abi_version, ABI_VERSION);
        fn irq_of(d: impl Device) -> u32 {
            d.info().unwrap().irq
        }
        assert_eq!(irq_of(&dev), 42);
        assert_eq!(dev.info_calls(), 2);

        let dev = MockDevice::failing(Errno::ENOTTY);
        let err = dev.info().unwrap_err();
        assert_eq!(err.errno_name(), "ENOTTY");
        assert_eq!(err.to_string(), "ioctl KMEMLAB_INFO failed");
    }

    #[test]
    fn abi_check() {
        assert!(check_abi(&MockDevice::new().info().unwrap()).is_ok());
        let old = Info {
            abi_version: ABI_VERSION + 1,
            ..Info::default()
        };
        let err = check_abi(&old).unwrap_err();
        assert_eq!(err.errno_name(), "EPROTO");
        assert_eq!(
            err.to_string(),
            format!(
                "module abi version {} does not match ours ({ABI_VERSION})",
                ABI_VERSION + 1
            )
        );
    }

    #[test]
    fn open_missing_device() {
        let err = KmemlabDevice::open("/nonexistent/kmemlab").unwrap_err();
        assert_eq!(err.errno_name(), "ENOENT");
        assert!(err
            .report()
            .starts_with("failed to open /nonexistent/kmemlab: "));
    }

    #[test]
    fn info_report_json_and_text() {
        let mut info = MockDevice::new().info().unwrap();
        info.max_size[1] = 4 << 20;
        let report = InfoReport::from(&info);
        let v: serde_json::Value = serde_json::from_str(&report.to_json().unwrap()).unwrap();
        assert_eq!(v["abi_version"], ABI_VERSION);
        assert_eq!(v["page_size"], 4096);
        assert_eq!(v["heap_size"], 1 << 20);
        assert_eq!(v["irq"], 42);
        assert_eq!(v["max_size"].as_array().unwrap().len(), 8);
        assert_eq!(v["max_size"][1], 4 << 20);

        let text = report.to_text();
        assert!(text.contains(&format!("abi version:           {ABI_VERSION}\n")));
        assert!(text.contains("max size (kind 1):     4194304\n"));
        assert!(!text.contains("kind 0"));
        assert!(!text.contains("warning"));
    }
}
