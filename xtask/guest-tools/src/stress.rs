//! Issue 7's guest-side programs: the ioctl fuzzer, the permission check and the load.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kmemlab_uapi::*;
use serde_json::json;

use crate::{errno_name, live_total, Dev, Errno, Page};

/// xorshift64*: a small deterministic generator (the seed is printed, so a run repeats).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Memory a fuzzing thread points the kernel at. The "bad" addresses are never mapped
/// by this process (page 0, a kernel address) or stay mapped without write access for
/// the whole run (so no later mapping of another thread can land there).
struct Targets {
    buf: Vec<u8>,
    no_access: Page,
    read_only: Page,
}

/// Room for LIST_MAX entries, the largest array the kernel may write.
const BUF_LEN: usize = LIST_MAX as usize * std::mem::size_of::<Alloc>();

impl Targets {
    fn new() -> Self {
        Self {
            buf: vec![0; BUF_LEN],
            no_access: Page::new(libc::PROT_NONE),
            read_only: Page::new(libc::PROT_READ),
        }
    }

    /// A pointer for the kernel and the number of bytes it may write there.
    fn pick(&mut self, rng: &mut Rng) -> (usize, usize) {
        match rng.below(20) {
            0 => (0, 0),
            1 => (0xffff_0000_0000_0000, 0),
            2 => (self.no_access.addr as usize, 0),
            3 => (self.read_only.addr as usize, 0),
            _ => (self.buf.as_mut_ptr() as usize, self.buf.len()),
        }
    }
}

fn random_flags(rng: &mut Rng) -> u32 {
    if rng.chance(10) {
        return rng.next() as u32;
    }
    let base = [FLAG_GFP_KERNEL, FLAG_GFP_ATOMIC, FLAG_GFP_NOWAIT][rng.below(3) as usize];
    let mut flags = base;
    for f in [
        FLAG_ZERO,
        FLAG_NORETRY,
        FLAG_NOWARN,
        FLAG_DMA,
        FLAG_DMA32,
        FLAG_PERSIST,
    ] {
        if rng.chance(if f == FLAG_PERSIST { 3 } else { 15 }) {
            flags |= f;
        }
    }
    flags
}

fn random_size(rng: &mut Rng) -> u64 {
    match rng.below(10) {
        0 => 0,
        1 => rng.next(),
        2 => 1 << rng.below(27),
        3..=5 => 1 + rng.below(256),
        6 | 7 => 1 + rng.below(16384),
        _ => 1 + rng.below(1 << 20),
    }
}

fn random_kind(rng: &mut Rng) -> u32 {
    if rng.chance(5) {
        rng.next() as u32
    } else {
        rng.below(u64::from(KIND_COUNT) + 1) as u32
    }
}

/// What one fuzzing thread saw.
#[derive(Default)]
struct Tally {
    calls: u64,
    reopens: u64,
    errnos: BTreeMap<String, u64>,
}

/// One fuzzing thread: `calls` random requests on its own files.
fn fuzz_thread(
    seed: u64,
    calls: u64,
    peers: Arc<std::sync::Mutex<Vec<u64>>>,
) -> Result<Tally, String> {
    let mut rng = Rng::new(seed);
    let mut t = Targets::new();
    let mut dev = Dev::open().map_err(|e| format!("open: {e}"))?;
    let mut mine: Vec<u64> = Vec::new();
    let mut tally = Tally::default();
    for _ in 0..calls {
        let op = rng.below(100);
        if op < 2 {
            // Close with whatever is allocated, and open again.
            dev = Dev::open().map_err(|e| format!("reopen: {e}"))?;
            mine.clear();
            tally.reopens += 1;
            tally.calls += 1;
            continue;
        }
        let r: Result<i32, Errno> = match op {
            2..=39 => {
                // ALLOC, mostly well-formed.
                let a = Alloc {
                    kind: random_kind(&mut rng),
                    flags: random_flags(&mut rng),
                    size: random_size(&mut rng),
                    ..Alloc::default()
                };
                let (ptr, room) = t.pick(&mut rng);
                if room >= std::mem::size_of::<Alloc>() {
                    let slot = &mut t.buf[..std::mem::size_of::<Alloc>()];
                    // SAFETY: `slot` is exactly one `Alloc` long, and Alloc is plain data.
                    unsafe { std::ptr::write_unaligned(slot.as_mut_ptr().cast::<Alloc>(), a) };
                }
                // SAFETY: `ptr` is our buffer (room for the struct) or an address that
                // stays unwritable for the whole run.
                let r = unsafe { dev.raw(IOCTL_ALLOC, ptr) };
                if r.is_ok() && room > 0 {
                    // SAFETY: as above; the kernel wrote one `Alloc` there.
                    let out = unsafe { std::ptr::read_unaligned(t.buf.as_ptr().cast::<Alloc>()) };
                    mine.push(out.handle);
                    if let Ok(mut p) = peers.lock() {
                        p.push(out.handle);
                        if p.len() > 4096 {
                            p.drain(..2048);
                        }
                    }
                }
                r
            }
            40..=64 => {
                // FREE: mine, someone else's, or made up.
                let handle = match rng.below(4) {
                    0 | 1 if !mine.is_empty() => {
                        let i = rng.below(mine.len() as u64) as usize;
                        mine.swap_remove(i)
                    }
                    2 => peers
                        .lock()
                        .ok()
                        .and_then(|p| p.get(rng.below(p.len() as u64 + 1) as usize).copied())
                        .unwrap_or(0),
                    _ => rng.next() % 1_000_000,
                };
                dev.free(handle).map(|_| 0)
            }
            65..=69 => {
                let (ptr, room) = t.pick(&mut rng);
                let max = (room / std::mem::size_of::<Alloc>()) as u64;
                let mut list = List {
                    after: rng.below(1000),
                    entries: ptr as u64,
                    capacity: if max > 0 && rng.chance(90) {
                        1 + rng.below(max.min(u64::from(LIST_MAX))) as u32
                    } else {
                        rng.next() as u32
                    },
                    ..List::default()
                };
                if max > 0 && u64::from(list.capacity) > max {
                    list.entries = t.no_access.addr as u64;
                }
                dev.call(IOCTL_LIST, &mut list)
            }
            70..=74 => dev.stats().map(|_| 0),
            75..=77 => dev.info().map(|_| 0),
            78..=80 => {
                let mut b = Bench {
                    kind: random_kind(&mut rng),
                    flags: random_flags(&mut rng),
                    size: random_size(&mut rng) % (1 << 16),
                    iters: rng.below(32) as u32,
                    ..Bench::default()
                };
                dev.call(IOCTL_BENCH, &mut b)
            }
            81..=82 => {
                let mut tr = Trigger {
                    count: rng.below(4) as u32,
                    ..Trigger::default()
                };
                dev.call(IOCTL_TRIGGER, &mut tr)
            }
            83..=88 => {
                // ALLOC_BATCH of random requests, into the buffer or a bad pointer.
                let count = rng.below(u64::from(BATCH_MAX) + 2) as u32;
                let (ptr, room) = t.pick(&mut rng);
                let fits = room >= count as usize * std::mem::size_of::<Alloc>();
                if fits {
                    for i in 0..count as usize {
                        let a = Alloc {
                            kind: random_kind(&mut rng),
                            flags: random_flags(&mut rng) & !FLAG_PERSIST,
                            size: 1 + rng.below(4096),
                            ..Alloc::default()
                        };
                        let off = i * std::mem::size_of::<Alloc>();
                        // SAFETY: `fits` checked that entry `i` is inside the buffer.
                        unsafe {
                            std::ptr::write_unaligned(
                                t.buf.as_mut_ptr().add(off).cast::<Alloc>(),
                                a,
                            )
                        };
                    }
                }
                let mut b = AllocBatch {
                    entries: if fits {
                        ptr as u64
                    } else {
                        t.no_access.addr as u64
                    },
                    count,
                    ..AllocBatch::default()
                };
                let r = dev.call(IOCTL_ALLOC_BATCH, &mut b);
                if r.is_ok() && fits {
                    for i in 0..b.done.min(count) as usize {
                        let off = i * std::mem::size_of::<Alloc>();
                        // SAFETY: entry `i` is inside the buffer; the kernel wrote it.
                        let a = unsafe {
                            std::ptr::read_unaligned(t.buf.as_ptr().add(off).cast::<Alloc>())
                        };
                        mine.push(a.handle);
                    }
                }
                r
            }
            89..=91 => {
                // FREE_BATCH of some of mine and some made-up handles.
                let count = (1 + rng.below(mine.len() as u64 + 2)).min(u64::from(BATCH_MAX)) as u32;
                for i in 0..count as usize {
                    let h = if rng.chance(80) && !mine.is_empty() {
                        mine.swap_remove(rng.below(mine.len() as u64) as usize)
                    } else {
                        rng.next() % 1_000_000
                    };
                    let f = Free {
                        handle: h,
                        ..Free::default()
                    };
                    let off = i * std::mem::size_of::<Free>();
                    // SAFETY: at most BATCH_MAX `Free` entries, far inside the buffer.
                    unsafe {
                        std::ptr::write_unaligned(t.buf.as_mut_ptr().add(off).cast::<Free>(), f)
                    };
                }
                let mut b = FreeBatch {
                    entries: t.buf.as_mut_ptr() as u64,
                    count,
                    ..FreeBatch::default()
                };
                dev.call(IOCTL_FREE_BATCH, &mut b)
            }
            _ => {
                // A raw command: random number, size and direction, on the buffer.
                let nr = rng.below(16) as u32;
                let size = rng.below(512) as usize;
                let dir = rng.below(4) as u32;
                let cmd = if rng.chance(10) {
                    (rng.next() as u32) & !(0x3fff << 16) | ((size as u32) << 16)
                } else {
                    ioc(dir, nr, size)
                };
                let cmd = cmd & !(0x3fff << 16) | ((size as u32) << 16);
                dev.with_buf(cmd, &mut t.buf[..512])
            }
        };
        tally.calls += 1;
        *tally
            .errnos
            .entry(errno_name(r.err().unwrap_or(0)))
            .or_default() += 1;
    }
    Ok(tally)
}

/// `threads` fuzzing threads of `calls` each; afterwards STATS must be consistent and
/// nothing may stay allocated.
pub fn fuzz(threads: u64, calls: u64, seed: u64) -> Result<bool, String> {
    let peers = Arc::new(std::sync::Mutex::new(Vec::new()));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let peers = Arc::clone(&peers);
            std::thread::spawn(move || {
                fuzz_thread(seed.wrapping_add(i * 0x9e37_79b9), calls, peers)
            })
        })
        .collect();
    let mut total = Tally::default();
    for h in handles {
        let t = h
            .join()
            .map_err(|_| "a fuzzing thread panicked".to_owned())??;
        total.calls += t.calls;
        total.reopens += t.reopens;
        for (k, v) in t.errnos {
            *total.errnos.entry(k).or_default() += v;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    // Device-owned allocations outlive their files by design: free them, then nothing
    // may be left.
    let dev = Dev::open().map_err(|e| format!("open: {e}"))?;
    let persisted = free_everything_visible(&dev)?;
    let stats = dev.stats().map_err(errno_name)?;
    let consistent = stats
        .kinds
        .iter()
        .all(|k| k.allocs - k.frees == k.live_count);
    let live = live_total(&stats);
    println!(
        "{}",
        json!({
            "calls": total.calls,
            "threads": threads,
            "seconds": (secs * 10.0).round() / 10.0,
            "calls_per_second": (total.calls as f64 / secs).round(),
            "reopens": total.reopens,
            "seed": seed,
            "errnos": total.errnos,
            "persist_freed_after": persisted,
            "stats_consistent": consistent,
            "live_after": live,
        })
    );
    Ok(consistent && live == 0)
}

/// Frees every allocation this opener can see (its own and device-owned ones).
fn free_everything_visible(dev: &Dev) -> Result<u64, String> {
    let mut freed = 0;
    loop {
        let mut entries = vec![Alloc::default(); 256];
        let mut list = List {
            entries: entries.as_mut_ptr() as u64,
            capacity: entries.len() as u32,
            ..List::default()
        };
        dev.call(IOCTL_LIST, &mut list).map_err(errno_name)?;
        if list.count == 0 {
            return Ok(freed);
        }
        for a in &entries[..list.count as usize] {
            dev.free(a.handle).map_err(errno_name)?;
            freed += 1;
        }
    }
}

/// Becomes `uid`/`gid` with supplementary `groups`; a non-root uid keeps no capability.
pub fn drop_privileges(uid: u32, gid: u32, groups: &[u32]) -> Result<(), String> {
    let gids: Vec<libc::gid_t> = groups.to_vec();
    // SAFETY: plain system calls on values owned here; order: groups, gid, then uid.
    let rc = unsafe {
        if libc::setgroups(gids.len(), gids.as_ptr()) != 0 || libc::setgid(gid) != 0 {
            -1
        } else {
            libc::setuid(uid)
        }
    };
    if rc != 0 {
        return Err(format!(
            "cannot drop privileges: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Drops to `uid`/`gid` with supplementary `groups`, then reports what /dev/kmemlab
/// allows: the open's errno, and for an allocation whether addresses are hidden.
pub fn as_user(uid: u32, gid: u32, groups: &[u32]) -> Result<bool, String> {
    drop_privileges(uid, gid, groups)?;
    let report = match Dev::open() {
        Err(e) => json!({"uid": uid, "gid": gid, "groups": groups,
                          "open": errno_name(e.raw_os_error().unwrap_or(0))}),
        Ok(dev) => match dev.alloc(KIND_VMALLOC, FLAG_GFP_KERNEL, 4096) {
            Err(e) => json!({"uid": uid, "open": "ok", "alloc": errno_name(e)}),
            Ok(a) => json!({"uid": uid, "gid": gid, "groups": groups, "open": "ok",
                            "alloc": "ok", "hidden": a.result & RESULT_HIDDEN != 0,
                            "vaddr": a.vaddr, "phys": a.phys}),
        },
    };
    println!("{report}");
    Ok(true)
}

/// What a refused allocation of the load counts as: [`LIMIT`], [`REFUSED`], or anything else
/// named with its request (which fails the test).
fn load_error(e: Errno, kind: u32, size: u64) -> String {
    match e {
        libc::ENOSPC => LIMIT.to_owned(),
        libc::ENOMEM => REFUSED.to_owned(),
        _ => format!("{} (kind {kind}, {size} bytes)", errno_name(e)),
    }
}

/// The module's limits refused an allocation.
const LIMIT: &str = "ENOSPC";
/// The allocator itself returned NULL. Under this load (8 threads, 64 MiB outstanding in a
/// 256 MiB guest, sizes up to 1 MiB) this was seen now and then for dma_coherent, vmalloc and
/// kvmalloc requests of 0.2 to 1 MiB, while the debug kernel logged its CMA area busy.
const REFUSED: &str = "ENOMEM";

/// `threads` threads allocating and freeing every kind for `seconds`; only limit errors
/// (ENOSPC) and the allocators' own refusals (ENOMEM) are allowed, each counted by the module
/// as a failure, and the counts must add up at the end.
pub fn load(threads: u64, seconds: u64, seed: u64) -> Result<bool, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || -> Result<(u64, BTreeMap<String, u64>), String> {
                let mut rng = Rng::new(seed.wrapping_add(i + 1));
                let dev = Dev::open().map_err(|e| format!("open: {e}"))?;
                let mut live: Vec<u64> = Vec::new();
                let mut ops = 0;
                let mut errs: BTreeMap<String, u64> = BTreeMap::new();
                while !stop.load(Ordering::Relaxed) {
                    if live.len() < 64 && (live.is_empty() || rng.chance(55)) {
                        let kind = rng.below(u64::from(KIND_COUNT)) as u32;
                        let size = 1 + rng.below(if kind == KIND_KMALLOC { 8192 } else { 1 << 20 });
                        match dev.alloc(kind, FLAG_GFP_KERNEL, size) {
                            Ok(a) => live.push(a.handle),
                            Err(e) => *errs.entry(load_error(e, kind, size)).or_default() += 1,
                        }
                    } else {
                        let h = live.swap_remove(rng.below(live.len() as u64) as usize);
                        if let Err(e) = dev.free(h) {
                            *errs.entry(format!("free {}", errno_name(e))).or_default() += 1;
                        }
                    }
                    ops += 1;
                }
                for h in live {
                    if let Err(e) = dev.free(h) {
                        *errs.entry(format!("free {}", errno_name(e))).or_default() += 1;
                    }
                }
                Ok((ops, errs))
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    let mut ops = 0;
    let mut errs: BTreeMap<String, u64> = BTreeMap::new();
    for h in handles {
        let (o, e) = h
            .join()
            .map_err(|_| "a load thread panicked".to_owned())??;
        ops += o;
        for (k, v) in e {
            *errs.entry(k).or_default() += v;
        }
    }
    let dev = Dev::open().map_err(|e| format!("open: {e}"))?;
    let stats = dev.stats().map_err(errno_name)?;
    let consistent = stats
        .kinds
        .iter()
        .all(|k| k.allocs - k.frees == k.live_count);
    let live = live_total(&stats);
    // Every refusal the threads saw is a failure the module counted (kmemlabd's add to those).
    let refused = errs.get(LIMIT).unwrap_or(&0) + errs.get(REFUSED).unwrap_or(&0);
    let failures: u64 = stats.kinds.iter().map(|k| k.failures).sum();
    let only_limits = errs.keys().all(|k| k == LIMIT || k == REFUSED) && failures >= refused;
    println!(
        "{}",
        json!({"threads": threads, "seconds": seconds, "ops": ops, "errors": errs,
               "stats_consistent": consistent, "live_after": live,
               "failures_per_kind": stats.kinds.iter().map(|k| k.failures).collect::<Vec<_>>(),
               "allocs": stats.kinds.iter().map(|k| k.allocs).sum::<u64>()})
    );
    // `live_after` counts other openers too (kmemlabd may hold one); the caller checks
    // it once they are gone.
    Ok(consistent && only_limits)
}
