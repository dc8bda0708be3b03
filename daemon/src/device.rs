//! The seam between the daemon's logic and `/dev/kmemlab`.
//!
//! [`Device`] is what the daemon and `kmemlabctl` need from the module; [`KmemlabDevice`]
//! implements it with ioctls, [`MockDevice`] in memory so the logic runs on a laptop.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use kmemlab_uapi as uapi;
use kmemlab_uapi::{
    Alloc, AllocBatch, Bench, Free, FreeBatch, Info, KindStats, Stats, Timing, Trigger,
    ABI_VERSION, MAX_KINDS,
};
use nix::errno::Errno;
use nix::fcntl::OFlag;

use crate::error::{Error, Result};
use crate::spec::{Flags, Kind};
use crate::sys;

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
            &Bench {
                kind: kind.abi(),
                flags: flags.bits(),
                size,
                iters,
                ..Bench::default()
            },
        )
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

/// The state behind a [`MockDevice`]: one open file's view of a module.
#[derive(Debug, Default)]
struct MockState {
    next_handle: u64,
    live: BTreeMap<u64, Alloc>,
    stats: [KindStats; MAX_KINDS],
    events: u64,
    outstanding_bytes: u64,
    fail_next: VecDeque<Errno>,
    calls: Vec<String>,
}

/// An in-memory [`Device`] for tests, modelled on the module's rules: handles start at 1
/// and are never reused; an unknown handle or a second free is `ENOENT`; size 0, unknown
/// kinds and flags, and flags a kind refuses are `EINVAL`; a size over the kind's limit
/// is `E2BIG`, past the outstanding limits `ENOSPC`. Addresses are made up but shaped
/// like arm64 ones.
///
/// The opener's privileges are `Info::privileges` (all of them by default; see
/// [`MockDevice::with_privileges`]): without `PRIV_KADDR` the virtual address is hidden
/// (`RESULT_HIDDEN`), without `PRIV_PHYS` the physical and DMA addresses
/// (`RESULT_PHYS_HIDDEN`); without `PRIV_ADMIN`, `FLAG_PERSIST`, atomic allocations beyond
/// `atomic_quota_bytes` and BENCH beyond `bench_max_bytes` are `EPERM`, and this file's
/// allocations beyond `file_max_bytes` or `file_max_count` are `EDQUOT`.
#[derive(Debug)]
pub struct MockDevice {
    info: Info,
    fail: Option<Errno>,
    info_calls: Cell<usize>,
    nop_supported: bool,
    nop_calls: Cell<usize>,
    state: RefCell<MockState>,
}

/// The flags the mock (like the test kernel, without ZONE_DMA) accepts.
const MOCK_FLAGS: u32 = uapi::FLAG_ALL & !(uapi::FLAG_DMA | uapi::FLAG_DMA32);

/// Every `PRIV_*` bit: root with CAP_SYSLOG, `kptr_restrict` 0 or 1.
pub const PRIV_ALL: u32 = uapi::PRIV_ADMIN | uapi::PRIV_KADDR | uapi::PRIV_PHYS;

/// The module's default `file_max_bytes` parameter (16 MiB).
pub const DEFAULT_FILE_MAX_BYTES: u64 = 16 << 20;
/// The module's default `file_max_count` parameter.
pub const DEFAULT_FILE_MAX_COUNT: u32 = 1024;
/// The module's default `atomic_quota_bytes` parameter (64 KiB).
pub const DEFAULT_ATOMIC_QUOTA_BYTES: u64 = 64 << 10;
/// The module's default `bench_max_bytes` parameter (64 MiB).
pub const DEFAULT_BENCH_MAX_BYTES: u64 = 64 << 20;

/// GFP_ATOMIC and GFP_NOWAIT: the allocations the atomic quota counts.
const ATOMIC_FLAGS: u32 = uapi::FLAG_GFP_ATOMIC | uapi::FLAG_GFP_NOWAIT;

impl MockDevice {
    /// A device that reports our ABI version, 4 KiB pages, a 1 MiB heap, irq 42, every
    /// kind, the flags of a kernel without ZONE_DMA, 32-bit DMA masks, the module's
    /// default limits, and an opener with every privilege (no per-opener quota).
    pub fn new() -> Self {
        let mut max_size = [0u64; MAX_KINDS];
        for k in Kind::ALL {
            max_size[k.abi() as usize] = match k {
                Kind::Vmalloc | Kind::Kvmalloc => 64 << 20,
                _ => 4 << 20,
            };
        }
        Self::with_info(Info {
            abi_version: ABI_VERSION,
            page_size: 4096,
            heap_size: 1 << 20,
            kinds: Kind::ALL.iter().fold(0, |m, k| m | 1 << k.abi()),
            flags: MOCK_FLAGS,
            max_size,
            max_outstanding_bytes: 64 << 20,
            max_outstanding_count: 65536,
            irq: 42,
            max_bench_iters: 1_000_000,
            max_trigger_count: 100_000,
            dma_mask: 0xffff_ffff,
            coherent_dma_mask: 0xffff_ffff,
            file_max_bytes: u64::MAX,
            file_max_count: u32::MAX,
            privileges: PRIV_ALL,
            atomic_quota_bytes: DEFAULT_ATOMIC_QUOTA_BYTES,
            bench_max_bytes: DEFAULT_BENCH_MAX_BYTES,
            ..Info::default()
        })
    }

    /// A device that reports `info` and enforces its kinds, flags and limits.
    pub fn with_info(info: Info) -> Self {
        Self {
            info,
            fail: None,
            info_calls: Cell::new(0),
            nop_supported: true,
            nop_calls: Cell::new(0),
            state: RefCell::new(MockState {
                next_handle: 1,
                ..MockState::default()
            }),
        }
    }

    /// A device whose every command fails with `errno`.
    pub fn failing(errno: Errno) -> Self {
        Self {
            fail: Some(errno),
            ..Self::new()
        }
    }

    /// A module older than NOP: [`Device::nop`] fails with `ENOTTY`, as the module does
    /// for a command it does not know.
    #[must_use]
    pub fn without_nop(mut self) -> Self {
        self.nop_supported = false;
        self
    }

    /// An opener with the `PRIV_*` bits `privileges`, as the module decides them at
    /// open(): without `PRIV_ADMIN` the per-opener quota is the module's default
    /// (`file_max_bytes`, `file_max_count`), with it unlimited.
    #[must_use]
    pub fn with_privileges(mut self, privileges: u32) -> Self {
        self.info.privileges = privileges;
        if privileges & uapi::PRIV_ADMIN != 0 {
            self.info.file_max_bytes = u64::MAX;
            self.info.file_max_count = u32::MAX;
        } else {
            self.info.file_max_bytes = DEFAULT_FILE_MAX_BYTES;
            self.info.file_max_count = DEFAULT_FILE_MAX_COUNT;
        }
        self
    }

    /// Reports addresses as the module does to an opener without CAP_SYSLOG and
    /// CAP_SYS_ADMIN (no privileges): zero, with the hidden bits; the per-opener quotas
    /// apply.
    #[must_use]
    pub fn hiding_addresses(self) -> Self {
        self.with_privileges(0)
    }

    /// Whether the opener has the `PRIV_*` bit `bit`.
    fn has(&self, bit: u32) -> bool {
        self.info.privileges & bit != 0
    }

    /// The module's privilege and quota checks for an ALLOC of `size` bytes with `flags`
    /// by this opener, holding `st`'s allocations.
    fn check_quota(&self, st: &MockState, size: u64, flags: Flags) -> Option<Errno> {
        if self.has(uapi::PRIV_ADMIN) {
            return None;
        }
        if flags.contains(Flags::PERSIST) {
            return Some(Errno::EPERM);
        }
        // This file's own allocations (device-owned ones are not its).
        let own = || {
            st.live
                .values()
                .filter(|a| a.result & uapi::RESULT_OWN != 0)
        };
        if flags.bits() & ATOMIC_FLAGS != 0 {
            let atomic: u64 = own()
                .filter(|a| a.flags & ATOMIC_FLAGS != 0)
                .map(|a| a.size)
                .sum();
            if atomic.saturating_add(size) > self.info.atomic_quota_bytes {
                return Some(Errno::EPERM);
            }
        }
        let bytes: u64 = own().map(|a| a.size).sum();
        if own().count() >= self.info.file_max_count as usize
            || bytes.saturating_add(size) > self.info.file_max_bytes
        {
            return Some(Errno::EDQUOT);
        }
        None
    }

    /// Makes the next command other than INFO fail with `errno` (queued: call it again
    /// for the command after).
    pub fn fail_next(&self, errno: Errno) {
        self.state.borrow_mut().fail_next.push_back(errno);
    }

    /// How many times [`Device::info`] was called.
    pub fn info_calls(&self) -> usize {
        self.info_calls.get()
    }

    /// How many times [`Device::nop`] was called (failed calls too).
    pub fn nop_calls(&self) -> usize {
        self.nop_calls.get()
    }

    /// The commands run so far other than INFO, e.g. `alloc kmalloc 1` or `free 3`.
    pub fn calls(&self) -> Vec<String> {
        self.state.borrow().calls.clone()
    }

    /// The live allocations, in handle order.
    pub fn live(&self) -> Vec<Alloc> {
        self.state.borrow().live.values().copied().collect()
    }

    /// Runs `cmd`: records it and fails it if a failure is set or queued.
    fn enter(&self, cmd: &'static str, what: String) -> Result<std::cell::RefMut<'_, MockState>> {
        let mut st = self.state.borrow_mut();
        st.calls.push(what);
        let injected = st.fail_next.pop_front();
        match self.fail.or(injected) {
            Some(source) => Err(Error::Ioctl { cmd, source }),
            None => Ok(st),
        }
    }

    /// The module's flag and size checks for ALLOC and BENCH.
    fn check(&self, kind: Kind, size: u64, flags: Flags, persist_ok: bool) -> Option<Errno> {
        let f = flags.bits();
        let zone_ok = match kind {
            Kind::Kmalloc => uapi::FLAG_DMA,
            Kind::Pages => uapi::FLAG_DMA | uapi::FLAG_DMA32,
            _ => 0,
        };
        if self.info.kinds & (1 << kind.abi()) == 0
            || f & !self.info.flags != 0
            || (f & uapi::FLAG_BASE_MASK).count_ones() != 1
            || (f & uapi::FLAG_PERSIST != 0 && !persist_ok)
            || f & (uapi::FLAG_DMA | uapi::FLAG_DMA32) & !zone_ok != 0
            || size == 0
        {
            return Some(Errno::EINVAL);
        }
        if size > self.info.max_size[kind.abi() as usize] {
            return Some(Errno::E2BIG);
        }
        None
    }
}

/// `ksize()` of a kmalloc request: the size of its slab cache.
fn kmalloc_usable(size: u64) -> u64 {
    match size {
        0..=8 => 8,
        9..=96 if size > 64 => 96,
        129..=192 => 192,
        _ => size.next_power_of_two(),
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

    fn alloc(&self, kind: Kind, size: u64, flags: Flags) -> Result<Alloc> {
        let mut st = self.enter("KMEMLAB_ALLOC", format!("alloc {kind} {size}"))?;
        let fail = |st: &mut MockState, errno: Errno| {
            if errno != Errno::EINVAL {
                st.stats[kind.abi() as usize].failures += 1;
            }
            Err(Error::Ioctl {
                cmd: "KMEMLAB_ALLOC",
                source: errno,
            })
        };
        if let Some(errno) = self.check(kind, size, flags, true) {
            return fail(&mut st, errno);
        }
        if let Some(errno) = self.check_quota(&st, size, flags) {
            return fail(&mut st, errno);
        }
        if st.live.len() >= self.info.max_outstanding_count as usize
            || st.outstanding_bytes.saturating_add(size) > self.info.max_outstanding_bytes
        {
            return fail(&mut st, Errno::ENOSPC);
        }
        let page = u64::from(self.info.page_size);
        let handle = st.next_handle;
        st.next_handle += 1;
        let page_backed = size.div_ceil(page) * page;
        let (usable_size, base) = match kind {
            Kind::Kmalloc => (kmalloc_usable(size), 0xffff_0000_c000_0000),
            Kind::Kvmalloc if size <= page => (kmalloc_usable(size), 0xffff_0000_c000_0000),
            Kind::Vmalloc | Kind::Kvmalloc => (page_backed, 0xffff_8000_8000_0000),
            Kind::DmaCoherent => (page_backed, 0xffff_0000_d000_0000),
            Kind::Pages => (
                size.div_ceil(page).next_power_of_two() * page,
                0xffff_0000_e000_0000,
            ),
        };
        let pages = usable_size.div_ceil(page).max(1) as u32;
        let vaddr = base + handle * 0x10_0000;
        // As the module marks them: this file's own, or the device's.
        let mut result = if flags.contains(Flags::PERSIST) {
            uapi::RESULT_PERSIST
        } else {
            uapi::RESULT_OWN
        };
        if flags.contains(Flags(uapi::FLAG_ZERO)) || kind == Kind::DmaCoherent {
            result |= uapi::RESULT_ZEROED;
        }
        let phys = 0x4000_0000 + handle * 0x10_0000;
        let mut report = Alloc {
            kind: kind.abi(),
            flags: flags.bits(),
            size,
            handle,
            vaddr,
            phys,
            dma: 0,
            usable_size,
            alloc_ns: 100 + handle,
            pages,
            // vmalloc-backed memory is scattered in the mock: one run per page.
            phys_segments: if matches!(kind, Kind::Vmalloc)
                || (kind == Kind::Kvmalloc && size > page)
            {
                pages
            } else {
                1
            },
            result,
            ..Alloc::default()
        };
        if kind == Kind::DmaCoherent {
            report.dma = phys;
            report.result |= uapi::RESULT_DMA;
        }
        if !self.has(uapi::PRIV_KADDR) {
            report.vaddr = 0;
            report.result |= uapi::RESULT_HIDDEN;
        }
        if !self.has(uapi::PRIV_PHYS) {
            report.phys = 0;
            report.dma = 0;
            report.result |= uapi::RESULT_PHYS_HIDDEN;
        }
        st.live.insert(handle, report);
        st.outstanding_bytes += size;
        let s = &mut st.stats[kind.abi() as usize];
        s.live_count += 1;
        s.live_bytes += size;
        s.allocs += 1;
        Ok(report)
    }

    fn free(&self, handle: u64) -> Result<Free> {
        let mut st = self.enter("KMEMLAB_FREE", format!("free {handle}"))?;
        let Some(a) = st.live.remove(&handle) else {
            return Err(Error::Ioctl {
                cmd: "KMEMLAB_FREE",
                source: Errno::ENOENT,
            });
        };
        st.outstanding_bytes -= a.size;
        let s = &mut st.stats[a.kind as usize];
        s.live_count -= 1;
        s.live_bytes -= a.size;
        s.frees += 1;
        Ok(Free {
            handle,
            free_ns: 50 + handle,
            ..Free::default()
        })
    }

    fn list_page(&self, after: u64, entries: &mut [Alloc]) -> Result<ListPage> {
        let st = self.enter("KMEMLAB_LIST", format!("list {after}"))?;
        let cap = entries.len().min(uapi::LIST_MAX as usize);
        let mut count = 0;
        for (slot, a) in entries
            .iter_mut()
            .zip(st.live.range(after.saturating_add(1)..).map(|(_, a)| a))
            .take(cap)
        {
            // As the module marks them: own unless device-owned.
            let own = if a.result & uapi::RESULT_PERSIST != 0 {
                0
            } else {
                uapi::RESULT_OWN
            };
            *slot = Alloc {
                result: (a.result & !uapi::RESULT_OWN) | own,
                ..*a
            };
            count += 1;
        }
        Ok(ListPage {
            count,
            total: st.live.len(),
        })
    }

    fn stats(&self) -> Result<Stats> {
        let st = self.enter("KMEMLAB_STATS", "stats".into())?;
        Ok(Stats {
            kinds: st.stats,
            events: st.events,
            ..Stats::default()
        })
    }

    fn bench(&self, kind: Kind, size: u64, flags: Flags, iters: u32) -> Result<Bench> {
        let _st = self.enter("KMEMLAB_BENCH", format!("bench {kind} {size} {iters}"))?;
        let errno = self
            .check(kind, size, flags, false)
            .or_else(|| (iters == 0 || iters > self.info.max_bench_iters).then_some(Errno::EINVAL))
            .or_else(|| {
                let atomic = flags.bits() & ATOMIC_FLAGS != 0;
                let too_much = (atomic && size > self.info.atomic_quota_bytes)
                    || u64::from(iters).saturating_mul(size) > self.info.bench_max_bytes;
                (too_much && !self.has(uapi::PRIV_ADMIN)).then_some(Errno::EPERM)
            });
        if let Some(source) = errno {
            return Err(Error::Ioctl {
                cmd: "KMEMLAB_BENCH",
                source,
            });
        }
        let timing = |base: u64| Timing {
            min_ns: base,
            mean_ns: base + 20,
            max_ns: base * 10,
            stddev_ns: 7,
            p50_ns: base + 10,
            p99_ns: base * 3,
        };
        Ok(Bench {
            kind: kind.abi(),
            flags: flags.bits(),
            size,
            iters,
            alloc: timing(100),
            free: timing(50),
            ..Bench::default()
        })
    }

    fn trigger(&self, count: u32) -> Result<Trigger> {
        let mut st = self.enter("KMEMLAB_TRIGGER", format!("trigger {count}"))?;
        if count == 0 || count > self.info.max_trigger_count {
            return Err(Error::Ioctl {
                cmd: "KMEMLAB_TRIGGER",
                source: Errno::EINVAL,
            });
        }
        st.events += u64::from(count);
        Ok(Trigger {
            count,
            events: st.events,
            ..Trigger::default()
        })
    }

    fn alloc_batch(&self, entries: &mut [Alloc]) -> Result<BatchOutcome> {
        if entries.is_empty() || entries.len() > uapi::BATCH_MAX as usize {
            return Err(Error::Ioctl {
                cmd: "KMEMLAB_ALLOC_BATCH",
                source: Errno::EINVAL,
            });
        }
        for (i, e) in entries.iter_mut().enumerate() {
            let kind = Kind::from_abi(e.kind);
            let r = match kind {
                Some(kind) => self.alloc(kind, e.size, Flags(e.flags)),
                None => Err(Error::Ioctl {
                    cmd: "KMEMLAB_ALLOC",
                    source: Errno::EINVAL,
                }),
            };
            match r {
                Ok(a) => *e = a,
                Err(err) => {
                    return Ok(BatchOutcome {
                        done: i,
                        error: Some(err.errno()),
                    })
                }
            }
        }
        Ok(BatchOutcome {
            done: entries.len(),
            error: None,
        })
    }

    fn free_batch(&self, entries: &mut [Free]) -> Result<BatchOutcome> {
        if entries.is_empty() || entries.len() > uapi::BATCH_MAX as usize {
            return Err(Error::Ioctl {
                cmd: "KMEMLAB_FREE_BATCH",
                source: Errno::EINVAL,
            });
        }
        for (i, e) in entries.iter_mut().enumerate() {
            match self.free(e.handle) {
                Ok(f) => *e = f,
                Err(err) => {
                    return Ok(BatchOutcome {
                        done: i,
                        error: Some(err.errno()),
                    })
                }
            }
        }
        Ok(BatchOutcome {
            done: entries.len(),
            error: None,
        })
    }

    fn nop(&self) -> Result<()> {
        self.nop_calls.set(self.nop_calls.get() + 1);
        let _st = self.enter("KMEMLAB_NOP", "nop".into())?;
        if self.nop_supported {
            Ok(())
        } else {
            Err(Error::Ioctl {
                cmd: "KMEMLAB_NOP",
                source: Errno::ENOTTY,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errno_of<T: std::fmt::Debug>(r: Result<T>) -> Errno {
        r.unwrap_err().errno()
    }

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
        let err = dev.free(1).unwrap_err();
        assert_eq!(err.to_string(), "ioctl KMEMLAB_FREE failed");
        assert_eq!(err.errno_name(), "ENOTTY");
    }

    #[test]
    fn nop_is_counted_and_enottys_on_an_older_module() {
        let dev = MockDevice::new();
        dev.nop().unwrap();
        fn nop_of(d: impl Device) -> Result<()> {
            d.nop()
        }
        nop_of(&dev).unwrap();
        assert_eq!(dev.nop_calls(), 2);
        assert_eq!(dev.calls(), ["nop", "nop"]);
        let old = MockDevice::new().without_nop();
        let err = old.nop().unwrap_err();
        assert_eq!(err.errno(), Errno::ENOTTY);
        assert_eq!(err.to_string(), "ioctl KMEMLAB_NOP failed");
        assert_eq!(old.nop_calls(), 1);
        dev.fail_next(Errno::EIO);
        assert_eq!(errno_of(dev.nop()), Errno::EIO);
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
    fn mock_handles_increase_and_are_never_reused() {
        let dev = MockDevice::new();
        let a = dev.alloc(Kind::Kmalloc, 1, Flags::GFP_ATOMIC).unwrap();
        let b = dev.alloc(Kind::Vmalloc, 1, Flags::GFP_KERNEL).unwrap();
        assert_eq!((a.handle, b.handle), (1, 2));
        dev.free(2).unwrap();
        let c = dev.alloc(Kind::Vmalloc, 1, Flags::GFP_KERNEL).unwrap();
        assert_eq!(c.handle, 3);
        assert_eq!(a.usable_size, 8);
        assert_eq!((a.pages, a.phys_segments), (1, 1));
        assert_eq!((b.usable_size, b.pages), (4096, 1));
        assert_eq!(a.result & uapi::RESULT_OWN, uapi::RESULT_OWN);
        assert_eq!(
            dev.calls(),
            [
                "alloc kmalloc 1",
                "alloc vmalloc 1",
                "free 2",
                "alloc vmalloc 1"
            ]
        );
    }

    #[test]
    fn mock_free_of_unknown_or_freed_handle_is_enoent() {
        let dev = MockDevice::new();
        assert_eq!(errno_of(dev.free(1)), Errno::ENOENT);
        let a = dev.alloc(Kind::Pages, 4096, Flags::GFP_KERNEL).unwrap();
        assert_eq!(dev.free(a.handle).unwrap().handle, a.handle);
        let err = dev.free(a.handle).unwrap_err();
        assert_eq!(err.errno(), Errno::ENOENT);
        assert_eq!(err.to_string(), "ioctl KMEMLAB_FREE failed");
    }

    #[test]
    fn mock_enforces_the_module_rules() {
        let dev = MockDevice::new();
        let k = Flags::GFP_KERNEL;
        assert_eq!(errno_of(dev.alloc(Kind::Kmalloc, 0, k)), Errno::EINVAL);
        assert_eq!(errno_of(dev.alloc(Kind::Kmalloc, 8 << 20, k)), Errno::E2BIG);
        assert_eq!(
            errno_of(dev.alloc(Kind::Kmalloc, 1, Flags(0))),
            Errno::EINVAL
        );
        assert_eq!(
            errno_of(dev.alloc(Kind::Kmalloc, 1, Flags(1 << 12 | 1))),
            Errno::EINVAL
        );
        assert_eq!(
            errno_of(dev.alloc(
                Kind::Kmalloc,
                1,
                Flags(uapi::FLAG_GFP_KERNEL | uapi::FLAG_GFP_ATOMIC)
            )),
            Errno::EINVAL
        );
        // GFP_DMA needs ZONE_DMA, which the mock kernel lacks.
        assert_eq!(
            errno_of(dev.alloc(Kind::Kmalloc, 1, k.with(Flags(uapi::FLAG_DMA)))),
            Errno::EINVAL
        );
        assert_eq!(
            errno_of(dev.bench(Kind::Kmalloc, 1, k.with(Flags::PERSIST), 10)),
            Errno::EINVAL
        );
        assert_eq!(errno_of(dev.bench(Kind::Kmalloc, 1, k, 0)), Errno::EINVAL);
        assert_eq!(errno_of(dev.trigger(0)), Errno::EINVAL);
        assert_eq!(errno_of(dev.trigger(100_001)), Errno::EINVAL);
        // E2BIG counts as a failure, EINVAL does not.
        assert_eq!(dev.stats().unwrap().kinds[0].failures, 1);

        let small = MockDevice::with_info(Info {
            max_outstanding_count: 1,
            ..MockDevice::new().info
        });
        small.alloc(Kind::Kmalloc, 1, k).unwrap();
        assert_eq!(errno_of(small.alloc(Kind::Kmalloc, 1, k)), Errno::ENOSPC);
    }

    #[test]
    fn mock_reports_like_the_module() {
        let dev = MockDevice::new();
        let d = dev
            .alloc(
                Kind::DmaCoherent,
                1024,
                Flags::GFP_ATOMIC.with(Flags::PERSIST),
            )
            .unwrap();
        assert_eq!(d.dma % 4096, 0);
        assert_ne!(d.dma, 0);
        let r = d.result;
        assert_eq!(
            r & (uapi::RESULT_DMA | uapi::RESULT_ZEROED | uapi::RESULT_PERSIST),
            uapi::RESULT_DMA | uapi::RESULT_ZEROED | uapi::RESULT_PERSIST
        );
        let v = dev
            .alloc(Kind::Vmalloc, 4 << 20, Flags::GFP_KERNEL)
            .unwrap();
        assert_eq!((v.pages, v.phys_segments), (1024, 1024));
        assert_eq!(v.result & uapi::RESULT_ZEROED, 0);

        let hidden = MockDevice::new().hiding_addresses();
        let h = hidden
            .alloc(Kind::DmaCoherent, 1, Flags::GFP_KERNEL)
            .unwrap();
        assert_eq!((h.vaddr, h.phys, h.dma), (0, 0, 0));
        let both = uapi::RESULT_HIDDEN | uapi::RESULT_PHYS_HIDDEN;
        assert_eq!(h.result & both, both);
    }

    #[test]
    fn mock_hides_addresses_per_privilege() {
        let hidden_bits = |privileges: u32| {
            let dev = MockDevice::new().with_privileges(privileges);
            let a = dev.alloc(Kind::DmaCoherent, 1, Flags::GFP_KERNEL).unwrap();
            let shown = (a.vaddr != 0, a.phys != 0, a.dma != 0);
            let bits = a.result & (uapi::RESULT_HIDDEN | uapi::RESULT_PHYS_HIDDEN);
            (shown, bits)
        };
        assert_eq!(hidden_bits(PRIV_ALL), ((true, true, true), 0));
        assert_eq!(
            hidden_bits(uapi::PRIV_KADDR),
            ((true, false, false), uapi::RESULT_PHYS_HIDDEN)
        );
        assert_eq!(
            hidden_bits(uapi::PRIV_ADMIN | uapi::PRIV_PHYS),
            ((false, true, true), uapi::RESULT_HIDDEN)
        );
        assert_eq!(
            hidden_bits(0),
            (
                (false, false, false),
                uapi::RESULT_HIDDEN | uapi::RESULT_PHYS_HIDDEN
            )
        );
        // LIST reports them as ALLOC did.
        let dev = MockDevice::new().with_privileges(uapi::PRIV_KADDR);
        let a = dev.alloc(Kind::Kmalloc, 1, Flags::GFP_KERNEL).unwrap();
        assert_eq!(dev.list().unwrap(), [a]);
    }

    #[test]
    fn mock_info_per_privilege() {
        let root = MockDevice::new().info().unwrap();
        assert_eq!(root.privileges, PRIV_ALL);
        assert_eq!(
            (root.file_max_bytes, root.file_max_count),
            (u64::MAX, u32::MAX)
        );
        assert_eq!(
            (root.dma_mask, root.coherent_dma_mask),
            (0xffff_ffff, 0xffff_ffff)
        );
        assert_eq!(
            (root.atomic_quota_bytes, root.bench_max_bytes),
            (DEFAULT_ATOMIC_QUOTA_BYTES, DEFAULT_BENCH_MAX_BYTES)
        );
        let user = MockDevice::new().hiding_addresses().info().unwrap();
        assert_eq!(user.privileges, 0);
        assert_eq!(
            (user.file_max_bytes, user.file_max_count),
            (DEFAULT_FILE_MAX_BYTES, DEFAULT_FILE_MAX_COUNT)
        );
        // Admin again: unlimited again.
        let admin = MockDevice::new()
            .with_privileges(0)
            .with_privileges(uapi::PRIV_ADMIN)
            .info()
            .unwrap();
        assert_eq!(
            (admin.file_max_bytes, admin.file_max_count),
            (u64::MAX, u32::MAX)
        );
    }

    #[test]
    fn mock_quotas_without_admin() {
        let k = Flags::GFP_KERNEL;
        let atomic = Flags::GFP_ATOMIC;
        let user = MockDevice::with_info(Info {
            file_max_count: 3,
            ..MockDevice::new().hiding_addresses().info().unwrap()
        });
        // Device-owned allocations need CAP_SYS_ADMIN.
        assert_eq!(
            errno_of(user.alloc(Kind::Kmalloc, 1, k.with(Flags::PERSIST))),
            Errno::EPERM
        );
        // Atomic bytes up to the atomic quota, live ones counted.
        let a = user.alloc(Kind::Kmalloc, 60 << 10, atomic).unwrap();
        assert_eq!(
            errno_of(user.alloc(Kind::Kmalloc, 8 << 10, Flags(uapi::FLAG_GFP_NOWAIT))),
            Errno::EPERM
        );
        user.free(a.handle).unwrap();
        let a = user.alloc(Kind::Kmalloc, 64 << 10, atomic).unwrap();
        // Count and bytes of this opener's own allocations.
        let b = user.alloc(Kind::Vmalloc, 15 << 20, k).unwrap();
        assert_eq!(
            errno_of(user.alloc(Kind::Vmalloc, 2 << 20, k)),
            Errno::EDQUOT
        );
        user.alloc(Kind::Kmalloc, 1, k).unwrap();
        assert_eq!(errno_of(user.alloc(Kind::Kmalloc, 1, k)), Errno::EDQUOT);
        user.free(a.handle).unwrap();
        user.free(b.handle).unwrap();
        user.alloc(Kind::Vmalloc, 15 << 20, k).unwrap();
        // Refusals count as failures.
        let failures: u64 = user.stats().unwrap().kinds.iter().map(|s| s.failures).sum();
        assert_eq!(failures, 4);
        // BENCH: atomic size and total bytes limited.
        assert_eq!(
            errno_of(user.bench(Kind::Kmalloc, (64 << 10) + 1, atomic, 1)),
            Errno::EPERM
        );
        assert_eq!(
            errno_of(user.bench(Kind::Kmalloc, 1 << 20, k, 65)),
            Errno::EPERM
        );
        user.bench(Kind::Kmalloc, 1 << 20, k, 64).unwrap();

        // With CAP_SYS_ADMIN none of it applies.
        let root = MockDevice::new();
        root.alloc(Kind::Kmalloc, 1, k.with(Flags::PERSIST))
            .unwrap();
        root.alloc(Kind::Kmalloc, 1 << 20, atomic).unwrap();
        root.alloc(Kind::Vmalloc, 32 << 20, k).unwrap();
        root.bench(Kind::Kmalloc, 1 << 20, atomic, 1000).unwrap();
    }

    #[test]
    fn mock_stats_and_trigger() {
        let dev = MockDevice::new();
        let a = dev.alloc(Kind::Vmalloc, 100, Flags::GFP_KERNEL).unwrap();
        dev.alloc(Kind::Vmalloc, 20, Flags::GFP_KERNEL).unwrap();
        dev.free(a.handle).unwrap();
        let s = dev.stats().unwrap();
        let v = s.kinds[uapi::KIND_VMALLOC as usize];
        assert_eq!(
            (v.live_count, v.live_bytes, v.allocs, v.frees, v.failures),
            (1, 20, 2, 1, 0)
        );
        assert_eq!(dev.trigger(3).unwrap().events, 3);
        assert_eq!(dev.trigger(2).unwrap().events, 5);
        assert_eq!(dev.stats().unwrap().events, 5);
    }

    #[test]
    fn injected_failures_hit_the_next_command_only() {
        let dev = MockDevice::new();
        dev.fail_next(Errno::ENOMEM);
        let err = dev.alloc(Kind::Kmalloc, 1, Flags::GFP_KERNEL).unwrap_err();
        assert_eq!(err.errno_name(), "ENOMEM");
        assert_eq!(
            dev.alloc(Kind::Kmalloc, 1, Flags::GFP_KERNEL)
                .unwrap()
                .handle,
            1
        );
        assert!(dev.info().is_ok());
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
