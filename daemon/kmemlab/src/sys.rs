//! The only `unsafe` code of the crate: the ioctls of `/dev/kmemlab` and atomic loads
//! from memory shared with the kernel (the interrupt ring in the mapped heap), each behind
//! a safe wrapper; an ioctl's error names the failing command. The VFIO backend's ioctls
//! and register accesses are in the submodule [`vfio`].

use std::mem::{align_of, size_of};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use kmemlab_uapi::{
    Alloc, AllocBatch, Bench, Free, FreeBatch, Info, List, Stats, Trigger, HIST_BUCKETS, LIST_MAX,
};
use memmap2::MmapRaw;
use nix::errno::Errno;

use crate::error::{Error, Result};

pub(crate) mod vfio;

/// The raw ioctls. Command numbers come from `kmemlab_uapi`, which computes them once
/// for both sides; the `_bad` macro variants take that number as it is.
mod ioctl {
    use kmemlab_uapi::{
        Alloc, AllocBatch, Bench, Free, FreeBatch, Info, List, Stats, Trigger, IOCTL_ALLOC,
        IOCTL_ALLOC_BATCH, IOCTL_BENCH, IOCTL_FREE, IOCTL_FREE_BATCH, IOCTL_INFO, IOCTL_LIST,
        IOCTL_NOP, IOCTL_STATS, IOCTL_TRIGGER,
    };

    nix::ioctl_read_bad!(kmemlab_info, IOCTL_INFO, Info);
    nix::ioctl_readwrite_bad!(kmemlab_alloc, IOCTL_ALLOC, Alloc);
    nix::ioctl_readwrite_bad!(kmemlab_free, IOCTL_FREE, Free);
    nix::ioctl_readwrite_bad!(kmemlab_list, IOCTL_LIST, List);
    nix::ioctl_read_bad!(kmemlab_stats, IOCTL_STATS, Stats);
    nix::ioctl_readwrite_bad!(kmemlab_bench, IOCTL_BENCH, Bench);
    nix::ioctl_readwrite_bad!(kmemlab_trigger, IOCTL_TRIGGER, Trigger);
    nix::ioctl_readwrite_bad!(kmemlab_alloc_batch, IOCTL_ALLOC_BATCH, AllocBatch);
    nix::ioctl_readwrite_bad!(kmemlab_free_batch, IOCTL_FREE_BATCH, FreeBatch);
    nix::ioctl_none_bad!(kmemlab_nop, IOCTL_NOP);
}

/// Turns an ioctl's result into ours, naming the command.
fn check(cmd: &'static str, res: nix::Result<nix::libc::c_int>) -> Result<nix::libc::c_int> {
    res.map_err(|source: Errno| Error::Ioctl { cmd, source })
}

/// Runs one ioctl whose argument is a single struct `T` that the kernel reads and/or
/// writes in place, naming `cmd` in the error.
///
/// # Safety
///
/// `f` must be one of the functions of [`ioctl`], declared with a command number that
/// encodes `size_of::<T>()`, and the command must touch no memory but `*arg` (no user
/// pointers inside `T`).
unsafe fn call<T>(
    cmd: &'static str,
    fd: BorrowedFd<'_>,
    arg: &mut T,
    f: unsafe fn(nix::libc::c_int, *mut T) -> nix::Result<nix::libc::c_int>,
) -> Result<()> {
    // SAFETY: by the caller's guarantee the kernel reads and writes at most
    // `size_of::<T>()` bytes through the pointer, and nothing else. The pointer comes
    // from `&mut T`: valid, aligned and exclusively ours for the call. `fd` is borrowed,
    // so it stays open for the call. The ABI structs are `#[repr(C)]` integers only, so
    // any bytes the kernel writes form a valid `T`.
    check(cmd, unsafe { f(fd.as_raw_fd(), arg) })?;
    Ok(())
}

/// `KMEMLAB_INFO`: what the module is and what it accepts.
pub(crate) fn info(fd: BorrowedFd<'_>) -> Result<Info> {
    let mut info = Info::default();
    // SAFETY: `kmemlab_info` is declared with `IOCTL_INFO`, which encodes the size of
    // `Info`; INFO only writes that struct.
    unsafe { call("KMEMLAB_INFO", fd, &mut info, ioctl::kmemlab_info) }?;
    Ok(info)
}

/// `KMEMLAB_ALLOC`: allocates as `req` asks (`kind`, `flags`, `size`) and returns the
/// report.
pub(crate) fn alloc(fd: BorrowedFd<'_>, req: &Alloc) -> Result<Alloc> {
    let mut arg = *req;
    // SAFETY: `kmemlab_alloc` is declared with `IOCTL_ALLOC`, which encodes the size of
    // `Alloc`; ALLOC reads and writes only that struct.
    unsafe { call("KMEMLAB_ALLOC", fd, &mut arg, ioctl::kmemlab_alloc) }?;
    Ok(arg)
}

/// `KMEMLAB_FREE`: frees `handle`.
pub(crate) fn free(fd: BorrowedFd<'_>, handle: u64) -> Result<Free> {
    let mut arg = Free {
        handle,
        ..Free::default()
    };
    // SAFETY: `kmemlab_free` is declared with `IOCTL_FREE`, which encodes the size of
    // `Free`; FREE reads and writes only that struct.
    unsafe { call("KMEMLAB_FREE", fd, &mut arg, ioctl::kmemlab_free) }?;
    Ok(arg)
}

/// `KMEMLAB_LIST`: one page of the allocations with handles above `after`, written to
/// the front of `entries` (at most [`LIST_MAX`] of them are used). Returns the `List`
/// the kernel wrote back (`count` entries written, `total` visible).
pub(crate) fn list_page(fd: BorrowedFd<'_>, after: u64, entries: &mut [Alloc]) -> Result<List> {
    let capacity = entries.len().min(LIST_MAX as usize);
    let mut arg = List {
        after,
        entries: entries.as_mut_ptr() as u64,
        capacity: capacity as u32,
        ..List::default()
    };
    // SAFETY: `arg` is a valid, exclusively borrowed `List`, the type whose size
    // `IOCTL_LIST` encodes, and `fd` is open for the call. The kernel writes at most
    // `arg.capacity` `Alloc` entries (plain integers) to `arg.entries`, which points to
    // `entries`, exclusively borrowed for the call and at least `capacity` long.
    check("KMEMLAB_LIST", unsafe {
        ioctl::kmemlab_list(fd.as_raw_fd(), &mut arg)
    })?;
    if arg.count as usize > capacity {
        // The kernel broke its word; do not trust the entries.
        return Err(Error::Ioctl {
            cmd: "KMEMLAB_LIST",
            source: Errno::EPROTO,
        });
    }
    Ok(arg)
}

/// `KMEMLAB_STATS`: counters per kind and the event count.
pub(crate) fn stats(fd: BorrowedFd<'_>) -> Result<Stats> {
    let mut arg = Stats::default();
    // SAFETY: `kmemlab_stats` is declared with `IOCTL_STATS`, which encodes the size of
    // `Stats`; STATS only writes that struct.
    unsafe { call("KMEMLAB_STATS", fd, &mut arg, ioctl::kmemlab_stats) }?;
    Ok(arg)
}

/// `KMEMLAB_BENCH`: `req.iters` alloc+free pairs in the kernel; with `hist`, the kernel
/// also writes the run's two histograms there (`hist_addr`).
pub(crate) fn bench(
    fd: BorrowedFd<'_>,
    req: &Bench,
    hist: Option<&mut [u32; 2 * HIST_BUCKETS]>,
) -> Result<Bench> {
    let mut arg = *req;
    arg.hist_addr = hist.map_or(0, |h| h.as_mut_ptr() as u64);
    // SAFETY: `kmemlab_bench` is declared with `IOCTL_BENCH`, which encodes the size of
    // `Bench`; BENCH reads and writes that struct and, when `hist_addr` is not 0, writes
    // `BENCH_HIST_BYTES` (= size of `[u32; 2 * HIST_BUCKETS]`) at `hist_addr`: the buffer
    // `hist` borrows mutably for this call, so nothing else reads or writes it meanwhile,
    // and any bit pattern is a valid `u32`.
    unsafe { call("KMEMLAB_BENCH", fd, &mut arg, ioctl::kmemlab_bench) }?;
    Ok(arg)
}

/// `KMEMLAB_TRIGGER`: raises `count` UIO events.
pub(crate) fn trigger(fd: BorrowedFd<'_>, count: u32) -> Result<Trigger> {
    let mut arg = Trigger {
        count,
        ..Trigger::default()
    };
    // SAFETY: `kmemlab_trigger` is declared with `IOCTL_TRIGGER`, which encodes the size
    // of `Trigger`; TRIGGER reads and writes only that struct.
    unsafe { call("KMEMLAB_TRIGGER", fd, &mut arg, ioctl::kmemlab_trigger) }?;
    Ok(arg)
}

/// `KMEMLAB_ALLOC_BATCH`: the requests in `entries`, in one call; the first `done` of
/// them are written back with their reports.
pub(crate) fn alloc_batch(fd: BorrowedFd<'_>, entries: &mut [Alloc]) -> Result<AllocBatch> {
    let count = u32::try_from(entries.len()).map_err(|_| Error::Ioctl {
        cmd: "KMEMLAB_ALLOC_BATCH",
        source: Errno::EINVAL,
    })?;
    let mut arg = AllocBatch {
        entries: entries.as_mut_ptr() as u64,
        count,
        ..AllocBatch::default()
    };
    // SAFETY: `arg` is a valid, exclusively borrowed `AllocBatch`, the type whose size
    // `IOCTL_ALLOC_BATCH` encodes, and `fd` is open for the call. The kernel reads and
    // writes at most `arg.count` `Alloc` entries (plain integers) at `arg.entries`, which
    // points to `entries`, exclusively borrowed for the call and exactly that long.
    check("KMEMLAB_ALLOC_BATCH", unsafe {
        ioctl::kmemlab_alloc_batch(fd.as_raw_fd(), &mut arg)
    })?;
    Ok(arg)
}

/// `KMEMLAB_FREE_BATCH`: the frees in `entries`, in one call; the first `done` of them
/// are written back with `free_ns`.
pub(crate) fn free_batch(fd: BorrowedFd<'_>, entries: &mut [Free]) -> Result<FreeBatch> {
    let count = u32::try_from(entries.len()).map_err(|_| Error::Ioctl {
        cmd: "KMEMLAB_FREE_BATCH",
        source: Errno::EINVAL,
    })?;
    let mut arg = FreeBatch {
        entries: entries.as_mut_ptr() as u64,
        count,
        ..FreeBatch::default()
    };
    // SAFETY: as for `alloc_batch`: the kernel reads and writes at most `arg.count`
    // `Free` entries (plain integers) at `arg.entries`, which points to `entries`,
    // exclusively borrowed for the call and exactly that long; `arg` is a valid
    // `FreeBatch`, the type `IOCTL_FREE_BATCH` encodes; `fd` is open for the call.
    check("KMEMLAB_FREE_BATCH", unsafe {
        ioctl::kmemlab_free_batch(fd.as_raw_fd(), &mut arg)
    })?;
    Ok(arg)
}

/// `KMEMLAB_NOP`: a round trip that does nothing (`ENOTTY` from a module older than it).
pub(crate) fn nop(fd: BorrowedFd<'_>) -> Result<()> {
    // SAFETY: `kmemlab_nop` is declared with `IOCTL_NOP`, an `_IO` command without an
    // argument: the call passes no pointer, so the kernel reads and writes no memory of
    // ours. `fd` is borrowed, so it stays open for the call.
    check("KMEMLAB_NOP", unsafe { ioctl::kmemlab_nop(fd.as_raw_fd()) })?;
    Ok(())
}

/// A shared mapping of device memory as the atomic loads see it: the `MmapRaw` of a
/// `UioMap` and whether it was mapped writable.
#[derive(Clone, Copy)]
pub(crate) struct Shared<'a> {
    pub(crate) map: &'a MmapRaw,
    pub(crate) writable: bool,
}

/// Where an atomic of `size` bytes and alignment `align` at `offset` of `map` lies, or
/// `None` when it would not lie wholly inside the map, would be misaligned, or the map is
/// not writable (see [`load_u64`]).
fn atomic_at(map: Shared<'_>, offset: usize, size: usize, align: usize) -> Option<*mut u8> {
    let end = offset.checked_add(size)?;
    if !map.writable || end > map.map.len() {
        return None;
    }
    let p = map.map.as_mut_ptr().wrapping_add(offset);
    (p as usize % align == 0).then_some(p)
}

/// Loads the `u64` at `offset` of `map` atomically with `order` (`Relaxed` or `Acquire`;
/// a store ordering panics, as [`AtomicU64::load`] does). `None` when it is out of bounds
/// or misaligned, or when `map` was mapped read-only: the atomic types are only promised to
/// work on memory that is valid for writes, so the ring is read through a writable mapping
/// (that this crate never writes through).
///
/// The kernel writes these bytes with `WRITE_ONCE()`/`smp_store_release()` of the same
/// width at any time: an atomic load pairs with such a store (an `Acquire` load with a
/// release store), which a volatile read does not in Rust's memory model.
pub(crate) fn load_u64(map: Shared<'_>, offset: usize, order: Ordering) -> Option<u64> {
    let p = atomic_at(map, offset, size_of::<u64>(), align_of::<AtomicU64>())?;
    // SAFETY:
    // - `p` is aligned to `align_of::<AtomicU64>()` and the 8 bytes from it lie inside the
    //   mapping (both checked by `atomic_at`).
    // - The mapping is `MAP_SHARED` with `PROT_READ | PROT_WRITE` (`atomic_at` checked
    //   `writable`) and page aligned, and stays mapped while `map` is borrowed
    //   (`MmapRaw`, owned by a `UioMap`, unmaps it only on drop); the `&AtomicU64` made here does not outlive
    //   this statement. So `p` is valid for reads and writes for the reference's lifetime.
    // - This crate accesses the mapped bytes only here and in `load_u32`, with atomic
    //   loads, and never writes them (no Rust reference to the mapping exists: `UioMap`
    //   hands out raw pointers only).
    //   The ring's fields are always loaded at their own width (`ring` loads the `u64`
    //   fields with this function, the `u32` fields with `load_u32`); differently sized
    //   loads of the same bytes would not conflict anyway, as none of them writes. The
    //   kernel's stores are the other side's atomic accesses of the same width.
    Some(unsafe { AtomicU64::from_ptr(p.cast::<u64>()) }.load(order))
}

/// Loads the `u32` at `offset` of `map` atomically with `order`, as [`load_u64`] does.
pub(crate) fn load_u32(map: Shared<'_>, offset: usize, order: Ordering) -> Option<u32> {
    let p = atomic_at(map, offset, size_of::<u32>(), align_of::<AtomicU32>())?;
    // SAFETY: as for `load_u64`, with 4 bytes aligned to `align_of::<AtomicU32>()`
    // (checked by `atomic_at`) inside a writable shared mapping that outlives the
    // reference, accessed from Rust by atomic loads only.
    Some(unsafe { AtomicU32::from_ptr(p.cast::<u32>()) }.load(order))
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
    use std::fs::File;
    use std::os::fd::AsFd;

    use kmemlab_uapi::KIND_KMALLOC;

    use super::*;

    fn file() -> File {
        tempfile::tempfile().unwrap()
    }

    /// Every wrapper names its command when the descriptor is not /dev/kmemlab.
    #[test]
    fn every_command_names_itself() {
        let f = file();
        let fd = f.as_fd();
        let mut allocs = [Alloc::default(); 2];
        let mut frees = [Free::default(); 2];
        let errors = [
            info(fd).map(drop).unwrap_err(),
            alloc(
                fd,
                &Alloc {
                    kind: KIND_KMALLOC,
                    size: 1,
                    ..Alloc::default()
                },
            )
            .map(drop)
            .unwrap_err(),
            free(fd, 1).map(drop).unwrap_err(),
            list_page(fd, 0, &mut allocs).map(drop).unwrap_err(),
            stats(fd).map(drop).unwrap_err(),
            bench(fd, &Bench::default(), None).map(drop).unwrap_err(),
            trigger(fd, 1).map(drop).unwrap_err(),
            alloc_batch(fd, &mut allocs).map(drop).unwrap_err(),
            free_batch(fd, &mut frees).map(drop).unwrap_err(),
            nop(fd).unwrap_err(),
        ];
        let names: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            names,
            [
                "ioctl KMEMLAB_INFO failed",
                "ioctl KMEMLAB_ALLOC failed",
                "ioctl KMEMLAB_FREE failed",
                "ioctl KMEMLAB_LIST failed",
                "ioctl KMEMLAB_STATS failed",
                "ioctl KMEMLAB_BENCH failed",
                "ioctl KMEMLAB_TRIGGER failed",
                "ioctl KMEMLAB_ALLOC_BATCH failed",
                "ioctl KMEMLAB_FREE_BATCH failed",
                "ioctl KMEMLAB_NOP failed",
            ]
        );
        for e in &errors {
            assert_eq!(e.errno(), Errno::ENOTTY, "{e}");
        }
        assert!(errors[0]
            .report()
            .starts_with("ioctl KMEMLAB_INFO failed: ENOTTY"));
    }

    #[test]
    fn page_size_is_a_power_of_two() {
        assert!(page_size().is_power_of_two());
        assert!(page_size() >= 4096);
    }
}
