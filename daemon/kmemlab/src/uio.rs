//! The kmemlab UIO device: found by name in sysfs, read for interrupt counts, written to
//! re-enable the interrupt, and mapped for the module's heap.
//!
//! Done with std and nix rather than the `uio` crate: that crate opens devices only by
//! number under a fixed `/dev` and `/sys` (no lookup by name, no injectable sysfs root to
//! test with), takes an exclusive `flock` and panics in `Drop` if releasing it fails,
//! returns raw mapping pointers sized with a hard-coded 4096-byte page, and pulls in a
//! second major version of nix.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use memmap2::{MmapOptions, MmapRaw};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, Flock, FlockArg, OFlag};

use crate::error::{Error, Result};
use crate::sys;

/// A source of interrupts the daemon waits on: the UIO device, the VFIO backend's
/// eventfd ([`crate::vfio::VfioIrq`]), or a test double.
pub trait IrqSource {
    /// Reads the interrupt count if it changed since the last read; `Ok(None)` when
    /// nothing new is there (the descriptor would block). Retries on `EINTR`.
    fn read_count(&mut self) -> Result<Option<u32>>;

    /// Re-enables the interrupt (UIO: writes a native-endian `1u32`; VFIO: unmasks it).
    fn enable(&mut self) -> Result<()>;
}

/// A UIO device found in sysfs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UioInfo {
    /// `N` of `uioN`.
    pub index: u32,
    /// Its name attribute.
    pub name: String,
    /// `<sysfs root>/uioN`.
    pub sysfs_dir: PathBuf,
    /// `/dev/uioN`.
    pub dev_path: PathBuf,
}

/// Finds the UIO device whose `<root>/uioN/name` is `name` (`root` is normally
/// `/sys/class/uio`). With several matches, the lowest `N` wins.
pub fn find_uio(root: &Path, name: &str) -> Result<UioInfo> {
    let not_found = || Error::UioNotFound {
        name: name.to_owned(),
        root: root.to_path_buf(),
    };
    let entries = match fs::read_dir(root) {
        Ok(entries) => entries,
        // No UIO class at all: UIO is not built or no driver registered yet.
        Err(e) if e.kind() == ErrorKind::NotFound => return Err(not_found()),
        Err(source) => {
            return Err(Error::Sysfs {
                path: root.to_path_buf(),
                source,
            })
        }
    };
    let mut found: Vec<UioInfo> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::Sysfs {
            path: root.to_path_buf(),
            source,
        })?;
        let file_name = entry.file_name();
        let Some(index) = file_name
            .to_str()
            .and_then(|s| s.strip_prefix("uio"))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let sysfs_dir = root.join(&file_name);
        let dev_name = match read_attr(&sysfs_dir.join("name")) {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!("skipping uio{index}: {}", e.report());
                continue;
            }
        };
        if dev_name == name {
            found.push(UioInfo {
                index,
                name: dev_name,
                sysfs_dir,
                dev_path: PathBuf::from(format!("/dev/uio{index}")),
            });
        }
    }
    found.sort_by_key(|u| u.index);
    if found.len() > 1 {
        tracing::warn!(
            "{} uio devices are named {name:?}; using uio{}",
            found.len(),
            found[0].index
        );
    }
    found.into_iter().next().ok_or_else(not_found)
}

/// Reads a sysfs attribute without its trailing newline.
fn read_attr(path: &Path) -> Result<String> {
    fs::read_to_string(path)
        .map(|s| s.trim_end_matches('\n').to_owned())
        .map_err(|source| Error::Sysfs {
            path: path.to_path_buf(),
            source,
        })
}

/// Reads a sysfs attribute holding a number, decimal or `0x` hex.
fn read_num_attr(path: &Path) -> Result<u64> {
    let text = read_attr(path)?;
    let t = text.trim();
    let parsed = match t.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => t.parse(),
    };
    parsed.map_err(|e| Error::Sysfs {
        path: path.to_path_buf(),
        source: io::Error::new(ErrorKind::InvalidData, format!("{t:?}: {e}")),
    })
}

/// An open UIO device, non-blocking.
#[derive(Debug)]
pub struct Uio {
    file: File,
    path: PathBuf,
    sysfs_dir: Option<PathBuf>,
    initial_count: u32,
    /// The exclusive lock of [`Uio::lock_exclusive`], held through a duplicate of `file`
    /// (the same open file, so the same lock); released when dropped.
    lock: Option<Flock<File>>,
}

impl Uio {
    /// Opens `info.dev_path` read-write and non-blocking. The interrupt count the daemon
    /// counts from is read from sysfs (`event`) just before, so an interrupt that lands
    /// between the two shows up as missed rather than being lost.
    pub fn open(info: &UioInfo) -> Result<Self> {
        let initial_count = read_num_attr(&info.sysfs_dir.join("event"))? as u32;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags((OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).bits())
            .open(&info.dev_path)
            .map_err(|source| Error::Open {
                path: info.dev_path.clone(),
                source,
            })?;
        Ok(Self {
            file,
            path: info.dev_path.clone(),
            sysfs_dir: Some(info.sysfs_dir.clone()),
            initial_count,
            lock: None,
        })
    }

    /// Wraps an already open UIO-like descriptor (tests use a socket), making it
    /// non-blocking; counting starts from `initial_count`. It has no maps.
    pub fn from_file(file: File, path: impl Into<PathBuf>, initial_count: u32) -> Result<Self> {
        let path = path.into();
        let open_err = |errno: nix::errno::Errno| Error::Open {
            path: path.clone(),
            source: io::Error::from(errno),
        };
        let flags = fcntl(file.as_raw_fd(), FcntlArg::F_GETFL).map_err(open_err)?;
        let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
        fcntl(file.as_raw_fd(), FcntlArg::F_SETFL(flags)).map_err(open_err)?;
        Ok(Self {
            file,
            path,
            sysfs_dir: None,
            initial_count,
            lock: None,
        })
    }

    /// Takes an exclusive, non-blocking `flock(2)` on the open device, so that a second
    /// kmemlabd on the same device fails here ([`Error::UioLocked`]) instead of sharing
    /// its interrupts. The lock belongs to the open file (Linux keeps flock locks per
    /// open file description, on the inode of the node: the node's path does not matter,
    /// a `/dev/kmemlab-uio` symlink locks the same inode); it is released when `self` is
    /// dropped or the process exits. Readers that do not ask for the lock (`kmemlabctl
    /// watch`) are not stopped by it.
    ///
    /// `Ok(true)` once locked; `Ok(false)` on a kernel without file locking
    /// (`CONFIG_FILE_LOCKING=n`, where flock(2) is `ENOSYS`): nothing can be locked
    /// there, and the caller decides whether to run without the lock.
    pub fn lock_exclusive(&mut self) -> Result<bool> {
        if self.lock.is_some() {
            return Ok(true);
        }
        let dup = self.file.try_clone().map_err(|source| Error::Open {
            path: self.path.clone(),
            source,
        })?;
        match Flock::lock(dup, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => {
                self.lock = Some(lock);
                Ok(true)
            }
            Err((_, Errno::EWOULDBLOCK)) => Err(Error::UioLocked {
                path: self.path.clone(),
            }),
            Err((_, Errno::ENOSYS)) => Ok(false),
            Err((_, errno)) => Err(Error::Open {
                path: self.path.clone(),
                source: io::Error::from(errno),
            }),
        }
    }

    /// Whether [`Uio::lock_exclusive`] holds the lock.
    pub fn is_locked(&self) -> bool {
        self.lock.is_some()
    }

    /// The device node, e.g. `/dev/uio0`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The interrupt count when the device was opened.
    pub fn initial_count(&self) -> u32 {
        self.initial_count
    }

    /// Maps UIO map `index` shared and read-write (its size from sysfs; its offset
    /// `index` pages, the UIO convention, with the page size from `sysconf`).
    pub fn map(&self, index: usize) -> Result<UioMap> {
        self.map_with(index, true)
    }

    /// Maps UIO map `index` shared and read-only, as [`Uio::map`] does otherwise.
    pub fn map_read_only(&self, index: usize) -> Result<UioMap> {
        self.map_with(index, false)
    }

    fn map_with(&self, index: usize, writable: bool) -> Result<UioMap> {
        let what = format!("{} map {index}", self.path.display());
        let map_err = |source: io::Error| Error::Map {
            what: what.clone(),
            source,
        };
        let dir = self.sysfs_dir.as_ref().ok_or_else(|| {
            map_err(io::Error::new(
                ErrorKind::NotFound,
                "device has no sysfs maps",
            ))
        })?;
        let size = read_num_attr(&dir.join(format!("maps/map{index}/size")))?;
        let len = usize::try_from(size)
            .ok()
            .filter(|len| *len > 0)
            .ok_or_else(|| {
                map_err(io::Error::new(
                    ErrorKind::InvalidData,
                    format!("size {size}"),
                ))
            })?;
        let offset = (index * sys::page_size()) as u64;
        let mut options = MmapOptions::new();
        options.offset(offset).len(len);
        // MmapRaw hands out raw pointers only, never references: the kernel may write the
        // memory at any time.
        let raw = if writable {
            options.map_raw(&self.file)
        } else {
            options.map_raw_read_only(&self.file)
        }
        .map_err(map_err)?;
        Ok(UioMap {
            raw,
            index,
            writable,
        })
    }
}

impl IrqSource for Uio {
    fn read_count(&mut self) -> Result<Option<u32>> {
        let mut buf = [0u8; 4];
        loop {
            return match self.file.read(&mut buf) {
                Ok(4) => Ok(Some(u32::from_ne_bytes(buf))),
                Ok(n) => Err(Error::IrqRead {
                    path: self.path.clone(),
                    source: io::Error::new(
                        ErrorKind::UnexpectedEof,
                        format!("read {n} bytes, expected 4"),
                    ),
                }),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(None),
                Err(source) => Err(Error::IrqRead {
                    path: self.path.clone(),
                    source,
                }),
            };
        }
    }

    fn enable(&mut self) -> Result<()> {
        // write_all retries on EINTR; UIO takes the 4 bytes in one write.
        self.file
            .write_all(&1u32.to_ne_bytes())
            .map_err(|source| Error::IrqEnable {
                path: self.path.clone(),
                source,
            })
    }
}

impl AsFd for Uio {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl AsRawFd for Uio {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// A mapped UIO region; unmapped on drop.
///
/// Its bytes are shared with the kernel and may change at any time, so it hands out no
/// Rust references to them: the crate reads them with atomic loads (the `sys` module)
/// and treats what it reads as untrusted data.
#[derive(Debug)]
pub struct UioMap {
    raw: MmapRaw,
    index: usize,
    writable: bool,
}

impl UioMap {
    /// The UIO map number.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.raw.len() == 0
    }

    /// Whether it was mapped writable.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// The first byte; valid for [`UioMap::len`] bytes while `self` lives.
    pub fn as_ptr(&self) -> *const u8 {
        self.raw.as_ptr()
    }

    /// The mapping as `sys`'s atomic loads take it.
    pub(crate) fn shared(&self) -> sys::Shared<'_> {
        sys::Shared {
            map: &self.raw,
            writable: self.writable,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;

    use super::*;

    fn add_uio(root: &Path, n: u32, name: &str, event: u32) -> PathBuf {
        let dir = root.join(format!("uio{n}"));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("name"), format!("{name}\n")).unwrap();
        fs::write(dir.join("event"), format!("{event}\n")).unwrap();
        dir
    }

    #[test]
    fn finds_the_device_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        add_uio(tmp.path(), 0, "uio_pdrv_genirq", 0);
        let dir = add_uio(tmp.path(), 3, "kmemlab", 7);
        add_uio(tmp.path(), 5, "kmemlab", 0);
        fs::create_dir(tmp.path().join("not-a-uio")).unwrap();
        fs::create_dir(tmp.path().join("uio9")).unwrap(); // no name attribute

        let info = find_uio(tmp.path(), "kmemlab").unwrap();
        assert_eq!(
            info,
            UioInfo {
                index: 3,
                name: "kmemlab".into(),
                sysfs_dir: dir,
                dev_path: "/dev/uio3".into(),
            }
        );
        assert_eq!(find_uio(tmp.path(), "uio_pdrv_genirq").unwrap().index, 0);
    }

    #[test]
    fn name_must_match_exactly() {
        let tmp = tempfile::tempdir().unwrap();
        add_uio(tmp.path(), 0, "kmemlab2", 0);
        add_uio(tmp.path(), 1, "kmem", 0);
        let err = find_uio(tmp.path(), "kmemlab").unwrap_err();
        assert!(matches!(err, Error::UioNotFound { .. }));
        assert_eq!(err.errno_name(), "ENODEV");
    }

    #[test]
    fn missing_sysfs_class_is_not_found() {
        let tmp = tempfile::tempdir().unwrap();
        let err = find_uio(&tmp.path().join("uio"), "kmemlab").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "no uio device named \"kmemlab\" in {}",
                tmp.path().join("uio").display()
            )
        );
    }

    #[test]
    fn open_reads_the_initial_count_and_counts() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = add_uio(tmp.path(), 0, "kmemlab", 12);
        // A regular file stands in for /dev/uio0: two counts, then end of file.
        let dev = tmp.path().join("uio0-dev");
        let mut bytes = 13u32.to_ne_bytes().to_vec();
        bytes.extend(14u32.to_ne_bytes());
        fs::write(&dev, &bytes).unwrap();
        let info = UioInfo {
            index: 0,
            name: "kmemlab".into(),
            sysfs_dir: dir,
            dev_path: dev.clone(),
        };
        let mut uio = Uio::open(&info).unwrap();
        assert_eq!(uio.initial_count(), 12);
        assert_eq!(uio.path(), dev);
        assert_eq!(uio.read_count().unwrap(), Some(13));
        assert_eq!(uio.read_count().unwrap(), Some(14));
        let err = uio.read_count().unwrap_err();
        assert!(
            err.report().contains("read 0 bytes, expected 4"),
            "{}",
            err.report()
        );
    }

    #[test]
    fn a_second_exclusive_lock_on_the_device_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = add_uio(tmp.path(), 0, "kmemlab", 0);
        let dev = tmp.path().join("uio0-dev");
        fs::write(&dev, [0u8; 4]).unwrap();
        let info = UioInfo {
            index: 0,
            name: "kmemlab".into(),
            sysfs_dir: dir,
            dev_path: dev.clone(),
        };
        let mut first = Uio::open(&info).unwrap();
        assert!(first.lock_exclusive().unwrap());
        assert!(first.is_locked());
        // Locking again through the same open file is a no-op, not a refusal.
        assert!(first.lock_exclusive().unwrap());
        // A second open of the node (another daemon) is refused, and says why.
        let mut second = Uio::open(&info).unwrap();
        let err = second.lock_exclusive().unwrap_err();
        assert!(matches!(err, Error::UioLocked { .. }), "{err:?}");
        assert_eq!(err.errno_name(), "EAGAIN");
        assert!(
            err.report()
                .contains("in use: another kmemlabd holds its lock"),
            "{}",
            err.report()
        );
        assert!(!second.is_locked());
        // An open without the lock (kmemlabctl watch) still reads.
        let mut reader = Uio::open(&info).unwrap();
        assert_eq!(reader.read_count().unwrap(), Some(0));
        // Once the first is gone, the lock is free.
        drop(first);
        assert!(second.lock_exclusive().unwrap());
    }

    #[test]
    fn open_missing_device_names_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = add_uio(tmp.path(), 0, "kmemlab", 0);
        let info = UioInfo {
            index: 0,
            name: "kmemlab".into(),
            sysfs_dir: dir,
            dev_path: tmp.path().join("nope"),
        };
        let err = Uio::open(&info).unwrap_err();
        assert_eq!(err.errno_name(), "ENOENT");
        assert!(err.to_string().starts_with("failed to open "));
    }

    #[test]
    fn socket_stand_in_reads_would_block_and_enables() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let mut uio = Uio::from_file(
            File::from(std::os::fd::OwnedFd::from(theirs)),
            "/dev/uio7",
            0,
        )
        .unwrap();
        assert_eq!(uio.read_count().unwrap(), None);
        (&ours).write_all(&5u32.to_ne_bytes()).unwrap();
        assert_eq!(uio.read_count().unwrap(), Some(5));
        assert_eq!(uio.read_count().unwrap(), None);

        uio.enable().unwrap();
        let mut buf = [0u8; 4];
        (&ours).read_exact(&mut buf).unwrap();
        assert_eq!(u32::from_ne_bytes(buf), 1);

        let err = uio.map(0).unwrap_err();
        assert!(err.report().starts_with("failed to map /dev/uio7 map 0"));
    }

    /// A fake sysfs entry whose map 0 is `dev` (a regular file) of `size` bytes.
    fn fake_mapped_uio(tmp: &Path, size: &str, data: &[u8]) -> Uio {
        let dir = add_uio(tmp, 0, "kmemlab", 0);
        fs::create_dir_all(dir.join("maps/map0")).unwrap();
        fs::write(dir.join("maps/map0/size"), size).unwrap();
        let dev = tmp.join("uio0-dev");
        fs::write(&dev, data).unwrap();
        let info = UioInfo {
            index: 0,
            name: "kmemlab".into(),
            sysfs_dir: dir,
            dev_path: dev,
        };
        Uio::open(&info).unwrap()
    }

    #[test]
    fn maps_size_from_sysfs() {
        let tmp = tempfile::tempdir().unwrap();
        let uio = fake_mapped_uio(tmp.path(), "0x00002000\n", &[0xa5u8; 0x2000]);
        let map = uio.map(0).unwrap();
        assert_eq!(map.index(), 0);
        assert_eq!(map.len(), 0x2000);
        assert!(map.is_writable() && !map.is_empty());
        let ro = uio.map_read_only(0).unwrap();
        assert_eq!(ro.len(), 0x2000);
        assert!(!ro.is_writable());
        assert!(!ro.as_ptr().is_null());
        // No map1 in sysfs.
        assert!(uio.map(1).is_err());
    }

    #[test]
    fn map_error_names_the_mapping() {
        let tmp = tempfile::tempdir().unwrap();
        // Larger than the file behind it is fine for mmap; size 0 is not.
        let uio = fake_mapped_uio(tmp.path(), "0\n", &[0u8; 16]);
        let err = uio.map_read_only(0).unwrap_err();
        assert_eq!(
            err.report(),
            format!("failed to map {} map 0: size 0", uio.path().display())
        );
    }
}
