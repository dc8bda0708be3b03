//! [`MockDevice`]: an in-memory [`Device`] for tests, built with the `test-util` feature.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};

use kmemlab_uapi as uapi;
use kmemlab_uapi::{
    Alloc, Bench, Free, Info, KindStats, Stats, Timing, Trigger, ABI_VERSION, MAX_KINDS,
};
use nix::errno::Errno;

use super::{BatchOutcome, Device, ListPage};
use crate::error::{Error, Result};
use crate::histogram::{BenchHistograms, Histogram};
use crate::spec::{Flags, Kind};

#[cfg(test)]
mod errnos;
mod rules;

use rules::{kmalloc_usable, ATOMIC_FLAGS};
pub use rules::{
    DEFAULT_ATOMIC_QUOTA_BYTES, DEFAULT_BENCH_MAX_BYTES, DEFAULT_FILE_MAX_BYTES,
    DEFAULT_FILE_MAX_COUNT, PRIV_ALL,
};

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
    pub(super) info: Info,
    fail: Option<Errno>,
    info_calls: Cell<usize>,
    nop_supported: bool,
    nop_calls: Cell<usize>,
    state: RefCell<MockState>,
}

/// The flags the mock (like the test kernel, without ZONE_DMA) accepts.
const MOCK_FLAGS: u32 = uapi::FLAG_ALL & !(uapi::FLAG_DMA | uapi::FLAG_DMA32);

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
        if let Some(errno) = rules::check(&self.info, kind, size, flags, true) {
            return fail(&mut st, errno);
        }
        if let Some(errno) = rules::check_quota(&self.info, &st.live, size, flags) {
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
        if !rules::has(&self.info, uapi::PRIV_KADDR) {
            report.vaddr = 0;
            report.result |= uapi::RESULT_HIDDEN;
        }
        if !rules::has(&self.info, uapi::PRIV_PHYS) {
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
        let errno = rules::check(&self.info, kind, size, flags, false)
            .or_else(|| (iters == 0 || iters > self.info.max_bench_iters).then_some(Errno::EINVAL))
            .or_else(|| {
                let atomic = flags.bits() & ATOMIC_FLAGS != 0;
                let too_much = (atomic && size > self.info.atomic_quota_bytes)
                    || u64::from(iters).saturating_mul(size) > self.info.bench_max_bytes;
                (too_much && !rules::has(&self.info, uapi::PRIV_ADMIN)).then_some(Errno::EPERM)
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

    /// [`Device::bench`], with histograms of `iters` made-up samples per side (`base + i % 40`
    /// ns for pair `i`, and one pair in a hundred 10 times slower) and the timings' min, max,
    /// p50 and p99 taken from them, as the module takes its own.
    fn bench_hist(
        &self,
        kind: Kind,
        size: u64,
        flags: Flags,
        iters: u32,
    ) -> Result<(Bench, BenchHistograms)> {
        let mut b = self.bench(kind, size, flags, iters)?;
        let side = |base: u64, t: &mut Timing| {
            let h = Histogram::of((0..u64::from(iters)).map(|i| {
                let v = base + i % 40;
                if i % 100 == 99 {
                    v * 10
                } else {
                    v
                }
            }));
            t.min_ns = h.min().unwrap_or(0);
            t.max_ns = h.max().unwrap_or(0);
            t.p50_ns = h.p50().unwrap_or(0);
            t.p99_ns = h.p99().unwrap_or(0);
            h
        };
        let alloc = side(100, &mut b.alloc);
        let free = side(50, &mut b.free);
        Ok((b, [alloc, free]))
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
            // As the module: an entry sets kind, flags and size, every other field zero.
            let only_inputs = *e
                == Alloc {
                    kind: e.kind,
                    flags: e.flags,
                    size: e.size,
                    ..Alloc::default()
                };
            let kind = Kind::from_abi(e.kind).filter(|_| only_inputs);
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
mod tests;
