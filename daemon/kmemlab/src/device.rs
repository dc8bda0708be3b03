//! The seam between the daemon's logic and `/dev/kmemlab`.
//!
//! [`Device`] is what the daemon and `kmemlabctl` need from the module; [`KmemlabDevice`]
//! implements it with ioctls; `mock::MockDevice` (with the `test-util` feature) in memory, so
//! the logic runs on a laptop.

use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use kmemlab_uapi as uapi;
use kmemlab_uapi::{
    Alloc, AllocBatch, Bench, Free, FreeBatch, Info, Stats, Trigger, ABI_VERSION, HIST_BUCKETS,
};

use crate::histogram::{BenchHistograms, Histogram};
use nix::errno::Errno;
use nix::fcntl::OFlag;

use crate::error::{Error, Result};
use crate::spec::{Flags, Kind};
use crate::sys;

#[cfg(any(test, feature = "test-util"))]
pub mod mock;

/// Entries per LIST call when [`Device::list`] pages through the allocations.
pub const LIST_PAGE: usize = 256;

/// One page of LIST: `count` entries were written, `total` are visible in all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListPage {
    /// Entries written to the front of the buffer.
    pub count: usize,
    /// Allocations visible to this opener, on every page.
    pub total: usize,
}

/// How far a batch got: the first `done` entries succeeded; `error` is the errno of
/// entry `done`, if one failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Entries that succeeded, always the first ones.
    pub done: usize,
    /// Why entry `done` failed; `None` when all are done.
    pub error: Option<Errno>,
}

impl From<(u32, i32)> for BatchOutcome {
    fn from((done, error): (u32, i32)) -> Self {
        Self {
            done: done as usize,
            error: (error != 0).then(|| Errno::from_raw(error)),
        }
    }
}

/// What userspace asks of the kmemlab module. Every method is one command (LIST, one
/// per page) on the open file; allocations belong to that file unless
/// [`Flags::PERSIST`] is given.
pub trait Device {
    /// INFO: ABI version, page size, heap size, limits, irq.
    fn info(&self) -> Result<Info>;

    /// ALLOC: `size` bytes of `kind` with `flags` (gfp flags, and perhaps
    /// [`Flags::PERSIST`]); returns the kernel's report.
    fn alloc(&self, kind: Kind, size: u64, flags: Flags) -> Result<Alloc>;

    /// FREE: frees `handle`; `ENOENT` for an unknown, foreign or already freed handle.
    fn free(&self, handle: u64) -> Result<Free>;

    /// LIST, one page: allocations with a handle above `after`, in handle order, written
    /// to the front of `entries` (at most [`uapi::LIST_MAX`] per call).
    fn list_page(&self, after: u64, entries: &mut [Alloc]) -> Result<ListPage>;

    /// Every allocation this opener can see, paging through LIST with the `after` cursor
    /// ([`LIST_PAGE`] entries per call).
    fn list(&self) -> Result<Vec<Alloc>> {
        list_paged(self, LIST_PAGE)
    }

    /// STATS: counters per kind and the UIO event count.
    fn stats(&self) -> Result<Stats>;

    /// BENCH: `iters` alloc+free pairs of `kind`, `size`, `flags` timed in the kernel.
    fn bench(&self, kind: Kind, size: u64, flags: Flags, iters: u32) -> Result<Bench>;

    /// BENCH as [`Device::bench`], with the run's allocation and free latency histograms
    /// (`hist_addr`), so that runs can be merged ([`Histogram::merge`]).
    fn bench_hist(
        &self,
        kind: Kind,
        size: u64,
        flags: Flags,
        iters: u32,
    ) -> Result<(Bench, BenchHistograms)>;

    /// TRIGGER: raises `count` UIO events as if the button were pressed.
    fn trigger(&self, count: u32) -> Result<Trigger>;

    /// ALLOC_BATCH: the requests in `entries` (`kind`, `flags`, `size` set) in one call;
    /// the first `done` are written back with their reports.
    fn alloc_batch(&self, entries: &mut [Alloc]) -> Result<BatchOutcome>;

    /// FREE_BATCH: the handles in `entries` in one call; the first `done` are written
    /// back with `free_ns`.
    fn free_batch(&self, entries: &mut [Free]) -> Result<BatchOutcome>;

    /// NOP: a round trip that does nothing; `ENOTTY` from a module older than it.
    fn nop(&self) -> Result<()>;
}

/// BENCH's input for `iters` pairs of `kind`, `size`, `flags`.
fn bench_request(kind: Kind, size: u64, flags: Flags, iters: u32) -> Bench {
    Bench {
        kind: kind.abi(),
        flags: flags.bits(),
        size,
        iters,
        ..Bench::default()
    }
}

/// [`Device::list`] with `page` entries per LIST call. Stops at a short or empty page,
/// and when the kernel hands back a handle that does not move the cursor on (which
/// would loop forever).
pub fn list_paged<D: Device + ?Sized>(dev: &D, page: usize) -> Result<Vec<Alloc>> {
    let mut buf = vec![Alloc::default(); page.clamp(1, uapi::LIST_MAX as usize)];
    let mut all = Vec::new();
    let mut after = 0u64;
    loop {
        let got = dev.list_page(after, &mut buf)?;
        let entries = &buf[..got.count.min(buf.len())];
        let Some(last) = entries.last() else { break };
        if last.handle <= after {
            return Err(Error::Ioctl {
                cmd: "KMEMLAB_LIST",
                source: Errno::EPROTO,
            });
        }
        all.extend_from_slice(entries);
        after = last.handle;
        if got.count < buf.len() {
            break;
        }
    }
    Ok(all)
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

    fn alloc(&self, kind: Kind, size: u64, flags: Flags) -> Result<Alloc> {
        sys::alloc(
            self.file.as_fd(),
            &Alloc {
                kind: kind.abi(),
                flags: flags.bits(),
                size,
                ..Alloc::default()
            },
        )
    }

    fn free(&self, handle: u64) -> Result<Free> {
        sys::free(self.file.as_fd(), handle)
    }

    fn list_page(&self, after: u64, entries: &mut [Alloc]) -> Result<ListPage> {
        let l = sys::list_page(self.file.as_fd(), after, entries)?;
        Ok(ListPage {
            count: l.count as usize,
            total: l.total as usize,
        })
    }

    fn stats(&self) -> Result<Stats> {
        sys::stats(self.file.as_fd())
    }

    fn bench(&self, kind: Kind, size: u64, flags: Flags, iters: u32) -> Result<Bench> {
        sys::bench(
            self.file.as_fd(),
            &bench_request(kind, size, flags, iters),
            None,
        )
    }

    fn bench_hist(
        &self,
        kind: Kind,
        size: u64,
        flags: Flags,
        iters: u32,
    ) -> Result<(Bench, BenchHistograms)> {
        let mut counts = Box::new([0u32; 2 * HIST_BUCKETS]);
        let b = sys::bench(
            self.file.as_fd(),
            &bench_request(kind, size, flags, iters),
            Some(&mut counts),
        )?;
        let (alloc, free) = counts.split_at(HIST_BUCKETS);
        let hist = |counts, timing| {
            Histogram::from_kernel(counts, timing).expect("HIST_BUCKETS counts per side")
        };
        Ok((b, [hist(alloc, &b.alloc), hist(free, &b.free)]))
    }

    fn trigger(&self, count: u32) -> Result<Trigger> {
        sys::trigger(self.file.as_fd(), count)
    }

    fn alloc_batch(&self, entries: &mut [Alloc]) -> Result<BatchOutcome> {
        let b: AllocBatch = sys::alloc_batch(self.file.as_fd(), entries)?;
        Ok((b.done, b.error).into())
    }

    fn free_batch(&self, entries: &mut [Free]) -> Result<BatchOutcome> {
        let b: FreeBatch = sys::free_batch(self.file.as_fd(), entries)?;
        Ok((b.done, b.error).into())
    }

    fn nop(&self) -> Result<()> {
        sys::nop(self.file.as_fd())
    }
}

impl<D: Device + ?Sized> Device for &D {
    fn info(&self) -> Result<Info> {
        (**self).info()
    }
    fn alloc(&self, kind: Kind, size: u64, flags: Flags) -> Result<Alloc> {
        (**self).alloc(kind, size, flags)
    }
    fn free(&self, handle: u64) -> Result<Free> {
        (**self).free(handle)
    }
    fn list_page(&self, after: u64, entries: &mut [Alloc]) -> Result<ListPage> {
        (**self).list_page(after, entries)
    }
    fn list(&self) -> Result<Vec<Alloc>> {
        (**self).list()
    }
    fn stats(&self) -> Result<Stats> {
        (**self).stats()
    }
    fn bench(&self, kind: Kind, size: u64, flags: Flags, iters: u32) -> Result<Bench> {
        (**self).bench(kind, size, flags, iters)
    }
    fn bench_hist(
        &self,
        kind: Kind,
        size: u64,
        flags: Flags,
        iters: u32,
    ) -> Result<(Bench, BenchHistograms)> {
        (**self).bench_hist(kind, size, flags, iters)
    }
    fn trigger(&self, count: u32) -> Result<Trigger> {
        (**self).trigger(count)
    }
    fn alloc_batch(&self, entries: &mut [Alloc]) -> Result<BatchOutcome> {
        (**self).alloc_batch(entries)
    }
    fn free_batch(&self, entries: &mut [Free]) -> Result<BatchOutcome> {
        (**self).free_batch(entries)
    }
    fn nop(&self) -> Result<()> {
        (**self).nop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::mock::MockDevice;

    fn errno_of<T: std::fmt::Debug>(r: Result<T>) -> Errno {
        r.unwrap_err().errno()
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
    fn real_device_names_each_command() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let dev = KmemlabDevice::open(file.path()).unwrap();
        let err = dev.alloc(Kind::Kmalloc, 1, Flags::GFP_KERNEL).unwrap_err();
        assert_eq!(err.to_string(), "ioctl KMEMLAB_ALLOC failed");
        assert_eq!(err.errno_name(), "ENOTTY");
        assert_eq!(
            dev.list().unwrap_err().to_string(),
            "ioctl KMEMLAB_LIST failed"
        );
    }

    #[test]
    fn list_pages_through_with_the_cursor() {
        let dev = MockDevice::new();
        for _ in 0..10 {
            dev.alloc(Kind::Kmalloc, 16, Flags::GFP_KERNEL).unwrap();
        }
        dev.free(4).unwrap();
        let all = list_paged(&dev, 3).unwrap();
        let handles: Vec<u64> = all.iter().map(|a| a.handle).collect();
        assert_eq!(handles, [1, 2, 3, 5, 6, 7, 8, 9, 10]);
        // 3 full pages, then an empty one.
        assert_eq!(dev.calls()[11..], ["list 0", "list 3", "list 7", "list 10"]);
        assert_eq!(dev.list().unwrap().len(), 9);

        // The mock is one open file: its allocations are its own, unless persistent.
        assert!(all.iter().all(|a| a.result & uapi::RESULT_OWN != 0));
        let p = dev
            .alloc(Kind::Kmalloc, 1, Flags::GFP_KERNEL.with(Flags::PERSIST))
            .unwrap();
        let listed = dev.list().unwrap();
        let last = listed.last().unwrap();
        assert_eq!(last.handle, p.handle);
        assert_eq!(last.result & uapi::RESULT_OWN, 0);

        let empty = MockDevice::new();
        assert!(empty.list().unwrap().is_empty());
        assert_eq!(empty.calls(), ["list 0"]);
    }

    /// A LIST that never moves on must not loop forever.
    struct StuckList;

    impl Device for StuckList {
        fn info(&self) -> Result<Info> {
            unimplemented!()
        }
        fn alloc(&self, _: Kind, _: u64, _: Flags) -> Result<Alloc> {
            unimplemented!()
        }
        fn free(&self, _: u64) -> Result<Free> {
            unimplemented!()
        }
        fn list_page(&self, _after: u64, entries: &mut [Alloc]) -> Result<ListPage> {
            for e in entries.iter_mut() {
                e.handle = 1;
            }
            Ok(ListPage {
                count: entries.len(),
                total: 1,
            })
        }
        fn stats(&self) -> Result<Stats> {
            unimplemented!()
        }
        fn bench(&self, _: Kind, _: u64, _: Flags, _: u32) -> Result<Bench> {
            unimplemented!()
        }
        fn bench_hist(
            &self,
            _: Kind,
            _: u64,
            _: Flags,
            _: u32,
        ) -> Result<(Bench, BenchHistograms)> {
            unimplemented!()
        }
        fn trigger(&self, _: u32) -> Result<Trigger> {
            unimplemented!()
        }
        fn alloc_batch(&self, _: &mut [Alloc]) -> Result<BatchOutcome> {
            unimplemented!()
        }
        fn free_batch(&self, _: &mut [Free]) -> Result<BatchOutcome> {
            unimplemented!()
        }
        fn nop(&self) -> Result<()> {
            unimplemented!()
        }
    }

    #[test]
    fn list_stops_when_the_cursor_does_not_move() {
        let err = list_paged(&StuckList, 4).unwrap_err();
        assert_eq!(err.errno_name(), "EPROTO");
    }

    #[test]
    fn batches_stop_at_the_first_failure() {
        let dev = MockDevice::new();
        let req = |size| Alloc {
            kind: uapi::KIND_KMALLOC,
            flags: uapi::FLAG_GFP_KERNEL,
            size,
            ..Alloc::default()
        };
        let mut entries = [req(8), req(16), req(0), req(32)];
        let out = dev.alloc_batch(&mut entries).unwrap();
        assert_eq!(
            out,
            BatchOutcome {
                done: 2,
                error: Some(Errno::EINVAL)
            }
        );
        assert_eq!((entries[0].handle, entries[1].handle), (1, 2));
        assert_eq!(entries[2].handle, 0);
        let mut frees = [1, 2, 2].map(|handle| Free {
            handle,
            ..Free::default()
        });
        let out = dev.free_batch(&mut frees).unwrap();
        assert_eq!(
            out,
            BatchOutcome {
                done: 2,
                error: Some(Errno::ENOENT)
            }
        );
        assert!(frees[0].free_ns > 0);
        assert_eq!(errno_of(dev.alloc_batch(&mut [])), Errno::EINVAL);
        assert_eq!(BatchOutcome::from((3, 0)).error, None);
        assert_eq!(BatchOutcome::from((0, 12)).error, Some(Errno::ENOMEM));
    }
}
