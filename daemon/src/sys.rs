//! The only `unsafe` code of the crate: ioctl declarations and memory mappings, each
//! behind a safe wrapper whose error names the failing command or mapping.

use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd};

use kmemlab_uapi::Info;
use memmap2::{MmapMut, MmapOptions};
use nix::errno::Errno;

use crate::error::{Error, Result};

/// The raw ioctls. Command numbers come from `kmemlab_uapi`, which computes them once
/// for both sides; the `_bad` macro variants take that number as it is.
mod ioctl {
    use kmemlab_uapi::Info;

    nix::ioctl_read_bad!(kmemlab_info, kmemlab_uapi::IOCTL_INFO, Info);
}

/// Turns an ioctl's result into ours, naming the command.
fn check(cmd: &'static str, res: nix::Result<nix::libc::c_int>) -> Result<nix::libc::c_int> {
    res.map_err(|source: Errno| Error::Ioctl { cmd, source })
}

/// `KMEMLAB_INFO`: what the module is and what it accepts.
pub(crate) fn info(fd: BorrowedFd<'_>) -> Result<Info> {
    let mut info = Info::default();
    // SAFETY: `fd` is an open descriptor for the whole call (it is borrowed), and
    // `&mut info` is a valid, exclusively borrowed `Info`, the exact type whose size is
    // encoded in `IOCTL_INFO`; the kernel writes at most `size_of::<Info>()` bytes to it.
    check("KMEMLAB_INFO", unsafe {
        ioctl::kmemlab_info(fd.as_raw_fd(), &mut info)
    })?;
    Ok(info)
}

/// Maps `len` bytes of `file` at `offset`, shared and read-write.
///
/// `what` names the mapping in the error (e.g. `/dev/uio0 map 0`).
pub(crate) fn map_shared(file: &File, offset: u64, len: usize, what: &str) -> Result<MmapMut> {
    // SAFETY: the mapping is owned by the returned `MmapMut`, which unmaps it on drop, and
    // no reference into it outlives that value. Its contents may change underneath us
    // (the kernel or another process writes shared memory); callers access it through
    // `MmapMut`'s byte slices only and must treat the bytes as untrusted data, not as
    // Rust values with invariants.
    unsafe { MmapOptions::new().offset(offset).len(len).map_mut(file) }.map_err(|source| {
        Error::Map {
            what: what.to_owned(),
            source,
        }
    })
}

/// The system's page size, from `sysconf(_SC_PAGESIZE)` (arm64 boards may use 16K/64K).
pub(crate) fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn info_on_a_regular_file_names_the_command() {
        let file = tempfile::tempfile().unwrap();
        let err = info(file.as_fd()).unwrap_err();
        assert!(matches!(
            err,
            Error::Ioctl {
                cmd: "KMEMLAB_INFO",
                source: Errno::ENOTTY
            }
        ));
    }

    #[test]
    fn page_size_is_a_power_of_two() {
        assert!(page_size().is_power_of_two());
        assert!(page_size() >= 4096);
    }

    #[test]
    fn map_shared_at_a_page_offset() {
        let ps = page_size();
        let mut file = tempfile::tempfile().unwrap();
        let mut data = vec![0u8; 2 * ps];
        data[ps..ps + 5].copy_from_slice(b"hello");
        file.write_all(&data).unwrap();

        let mut map = map_shared(&file, ps as u64, ps, "test map").unwrap();
        assert_eq!(&map[..5], b"hello");
        map[0] = b'j';
        map.flush().unwrap();
        drop(map);

        let map = map_shared(&file, ps as u64, ps, "test map").unwrap();
        assert_eq!(&map[..5], b"jello");
    }

    #[test]
    fn map_shared_error_names_the_mapping() {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.write_all(&[0u8; 16]).unwrap();
        // A shared writable mapping of a read-only descriptor is EACCES.
        let file = File::open(tmp.path()).unwrap();
        let err = map_shared(&file, 0, 16, "/dev/uio9 map 0").unwrap_err();
        assert_eq!(err.errno(), Errno::EACCES);
        assert_eq!(
            err.report().split(':').next(),
            Some("failed to map /dev/uio9 map 0")
        );
    }
}
