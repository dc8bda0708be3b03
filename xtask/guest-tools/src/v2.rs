//! Issue 11's guest-side programs (module v2): the heap as ordinary pages (a mapping that
//! outlives its device node, unbind and rmmod; a zero sysfs address), the ring exact under
//! a mixed burst, the unprivileged opener's quotas and hidden addresses, BENCH stopped by a
//! signal, and close() next to a long DMA batch.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, IntoRawFd};
use std::path::Path;
use std::sync::atomic::{fence, AtomicBool, AtomicI32, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kmemlab_uapi::*;
use serde_json::json;

use crate::{errno_name, live_total, outcome, Dev, Errno, DEVICE};

const UIO: &str = "/dev/uio0";
const MAP0: &str = "/sys/class/uio/uio0/maps/map0";
const DRIVER: &str = "/sys/bus/platform/drivers/kmemlab";

fn open_err(path: &str, e: std::io::Error) -> String {
    format!("cannot open {path}: {e}")
}

/// A sysfs attribute printed as hex (`0x...`).
fn sysfs_hex(path: &str) -> Result<(String, u64), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let text = text.trim().to_owned();
    let value = u64::from_str_radix(text.trim_start_matches("0x"), 16)
        .map_err(|_| format!("{path}: not hex: {text:?}"))?;
    Ok((text, value))
}

/// The heap's size, as UIO publishes it for map 0.
fn map0_size() -> Result<usize, String> {
    let (_, size) = sysfs_hex(&format!("{MAP0}/size"))?;
    usize::try_from(size).map_err(|e| e.to_string())
}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}

fn open_rw(path: impl AsRef<Path>) -> std::io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

/// A shared read-only mapping of a UIO map, unmapped on drop.
pub(crate) struct Mapping {
    addr: *mut libc::c_void,
    len: usize,
}

impl Mapping {
    /// Maps `len` bytes of UIO map 0 (offset 0) of `file`, MAP_SHARED.
    pub(crate) fn map0(file: &File, len: usize) -> Result<Self, Errno> {
        // SAFETY: a fresh shared mapping at an address the kernel picks; nothing of this
        // process is at that address before.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
        Ok(Self { addr, len })
    }

    /// The `u32` at `offset`, read once from the shared memory.
    pub(crate) fn u32_at(&self, offset: usize) -> u32 {
        assert!(offset + 4 <= self.len, "read past the mapping");
        // SAFETY: inside the live mapping (checked above), 4-byte aligned by the ABI's
        // layout; the kernel may write it concurrently, hence the volatile read.
        unsafe { std::ptr::read_volatile(self.addr.cast::<u8>().add(offset).cast::<u32>()) }
    }

    /// Reads every byte of the mapping (a fault on any page kills the process).
    fn checksum(&self) -> u64 {
        let words = self.len / 8;
        let base = self.addr.cast::<u64>();
        (0..words).fold(0u64, |acc, i| {
            // SAFETY: word `i` is inside the live mapping, which is page-aligned.
            acc.wrapping_add(unsafe { std::ptr::read_volatile(base.add(i)) })
        })
    }

    /// The ring record with sequence number `seq`, read seqlock-style (seq, fields, seq
    /// again); `None` when the slot holds another record (overwritten) or is being written.
    fn ring_record(&self, seq: u64) -> Option<IrqRecord> {
        if seq == 0 {
            return None;
        }
        let size = std::mem::size_of::<IrqRecord>();
        let slot = ((seq - 1) % u64::from(RING_SLOTS)) as usize;
        let offset = RING_RECORDS_OFFSET + slot * size;
        assert!(offset + size <= self.len, "ring slot past the mapping");
        // SAFETY: inside the live mapping (checked above), aligned as the ABI lays the
        // records out (64 + 32 * slot).
        let rec = unsafe { self.addr.cast::<u8>().add(offset).cast::<IrqRecord>() };
        for _ in 0..3 {
            // SAFETY: `rec` points at a whole record inside the mapping; the kernel may
            // write it concurrently, hence volatile reads and the seq check around them.
            let (first, copy, again) = unsafe {
                let first = std::ptr::read_volatile(std::ptr::addr_of!((*rec).seq));
                fence(Ordering::Acquire);
                let copy = std::ptr::read_volatile(rec);
                fence(Ordering::Acquire);
                let again = std::ptr::read_volatile(std::ptr::addr_of!((*rec).seq));
                (first, copy, again)
            };
            if first == seq && again == seq && copy.seq == seq {
                return Some(copy);
            }
            if first != 0 && first != seq {
                return None;
            }
        }
        None
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `addr`/`len` is a mapping this value owns.
        unsafe { libc::munmap(self.addr, self.len) };
    }
}

/// How a forked child that read the whole mapping ended: "ok", "magic changed" (no ring
/// magic at offset 0 any more), or the signal that killed it ("SIGBUS").
pub(crate) fn read_in_child(map: &Mapping) -> String {
    // SAFETY: fork in a process with no other thread (callers spawn none).
    let child = unsafe { libc::fork() };
    if child == 0 {
        let _ = map.checksum();
        let code = if map.u32_at(0) == RING_MAGIC { 0 } else { 3 };
        // SAFETY: the child only read the mapping; it exits without unwinding.
        unsafe { libc::_exit(code) }
    }
    if child < 0 {
        return format!("fork: {}", std::io::Error::last_os_error());
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    unsafe { libc::waitpid(child, &mut status, 0) };
    if libc::WIFSIGNALED(status) {
        match libc::WTERMSIG(status) {
            libc::SIGBUS => "SIGBUS".to_owned(),
            libc::SIGSEGV => "SIGSEGV".to_owned(),
            sig => format!("signal {sig}"),
        }
    } else {
        match libc::WEXITSTATUS(status) {
            0 => "ok".to_owned(),
            3 => "magic changed".to_owned(),
            rc => format!("exit {rc}"),
        }
    }
}

/// `as UID GID GROUPS PROGRAM ARGS...`: drops to `uid`/`gid` with the supplementary
/// `groups` (no capabilities left) and execs PROGRAM; only returns on failure.
pub fn as_user_exec(uid: u32, gid: u32, groups: &[u32], program: &[&str]) -> String {
    use std::os::unix::process::CommandExt;
    if let Err(e) = crate::stress::drop_privileges(uid, gid, groups) {
        return e;
    }
    let Some((first, rest)) = program.split_first() else {
        return "as: no program".to_owned();
    };
    let err = std::process::Command::new(first).args(rest).exec();
    format!("cannot run {first}: {err}")
}

/// `heap-map`: map0's sysfs address and size as this user reads them, and a mapping of
/// that size: it must show the ring's magic; one page more must be refused.
pub fn heap_map() -> Result<bool, String> {
    let (addr_text, addr) = sysfs_hex(&format!("{MAP0}/addr"))?;
    let size = map0_size()?;
    let uio = open_rw(UIO).map_err(|e| open_err(UIO, e))?;
    let (mapped, magic_ok) = match Mapping::map0(&uio, size) {
        Ok(map) => ("ok".to_owned(), map.u32_at(0) == RING_MAGIC),
        Err(e) => (errno_name(e), false),
    };
    let past = Mapping::map0(&uio, size + page_size()).map(|_| ());
    let past = outcome(past);
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let pass = addr == 0 && size > 0 && mapped == "ok" && magic_ok && past != "ok";
    println!(
        "{}",
        json!({"uid": uid, "addr": addr_text, "addr_value": addr, "size": size,
               "mapped": mapped, "ring_magic": magic_ok, "map_past_size": past, "pass": pass})
    );
    Ok(pass)
}

/// `trigger-burst N GAP_US`: N TRIGGERs of one event each (GAP_US apart; 0: as fast as
/// it can); after each, the ring record with the returned sequence number, read from the
/// mapped heap. One JSON line per trigger, then a summary line.
pub fn trigger_burst(n: u64, gap_us: u64) -> Result<bool, String> {
    use std::io::Write;
    let dev = Dev::open().map_err(|e| open_err(DEVICE, e))?;
    let uio = open_rw(UIO).map_err(|e| open_err(UIO, e))?;
    let map = Mapping::map0(&uio, map0_size()?)
        .map_err(|e| format!("mmap of map 0: {}", errno_name(e)))?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let (mut missing, mut wrong_source, mut not_increasing) = (0u64, 0u64, 0u64);
    let mut last = 0;
    let start = Instant::now();
    for _ in 0..n {
        let mut t = Trigger {
            count: 1,
            ..Trigger::default()
        };
        dev.call(IOCTL_TRIGGER, &mut t)
            .map_err(|e| format!("TRIGGER: {}", errno_name(e)))?;
        let seq = t.events;
        not_increasing += u64::from(seq <= last);
        last = seq;
        let line = match map.ring_record(seq) {
            Some(r) => {
                wrong_source += u64::from(r.source != SOURCE_TRIGGER);
                json!({"seq": seq, "ktime_ns": r.ktime_ns, "source": r.source})
            }
            None => {
                missing += 1;
                json!({"seq": seq, "missing": true})
            }
        };
        writeln!(out, "{line}").map_err(|e| e.to_string())?;
        if gap_us > 0 {
            std::thread::sleep(Duration::from_micros(gap_us));
        }
    }
    let pass = missing == 0 && wrong_source == 0 && not_increasing == 0;
    writeln!(
        out,
        "{}",
        json!({"triggers": n, "gap_us": gap_us, "last_seq": last, "missing": missing,
               "wrong_source": wrong_source, "not_increasing": not_increasing,
               "seconds": start.elapsed().as_secs_f64(), "pass": pass})
    )
    .map_err(|e| e.to_string())?;
    Ok(pass)
}

/// One checked case: what was wanted, what came back.
struct Case {
    name: String,
    want: String,
    got: String,
}

fn case(name: impl Into<String>, want: &str, got: impl Into<String>) -> Case {
    Case {
        name: name.into(),
        want: want.to_owned(),
        got: got.into(),
    }
}

fn print_cases(cases: &[Case]) -> bool {
    let mut all = true;
    for c in cases {
        let pass = c.want == c.got;
        all &= pass;
        println!(
            "{}",
            json!({"case": c.name, "want": c.want, "got": c.got, "pass": pass})
        );
    }
    all
}

/// `quotas`: run as an unprivileged member of group kmemlab. INFO shows no privileges and
/// finite quotas; kmalloc 64 KiB until refused: EDQUOT, and only at the quota; PERSIST,
/// BENCH beyond `bench_max_bytes` and a GFP_ATOMIC allocation beyond
/// `atomic_quota_bytes` are EPERM, while the same requests within the limits work.
pub fn quotas() -> Result<bool, String> {
    const CHUNK: u64 = 64 << 10;
    let dev = Dev::open().map_err(|e| open_err(DEVICE, e))?;
    let info = dev.info().map_err(|e| format!("INFO: {}", errno_name(e)))?;
    let mut cases = vec![case(
        "privileges of an unprivileged opener",
        "0",
        info.privileges.to_string(),
    )];
    cases.push(case(
        "file_max_bytes is finite",
        "true",
        (info.file_max_bytes != u64::MAX).to_string(),
    ));

    // Fill the quota on one file.
    let cap = (info.file_max_bytes / CHUNK + 2).min(u64::from(info.file_max_count) + 2);
    let mut held = 0u64;
    let mut count = 0u64;
    let mut refusal = None;
    for _ in 0..cap {
        match dev.alloc(KIND_KMALLOC, FLAG_GFP_KERNEL, CHUNK) {
            Ok(_) => {
                held += CHUNK;
                count += 1;
            }
            Err(e) => {
                refusal = Some(e);
                break;
            }
        }
    }
    let refusal = refusal.map_or_else(|| format!("none in {cap} allocations"), errno_name);
    cases.push(case(
        "kmalloc 64K past the quota",
        "EDQUOT",
        refusal.clone(),
    ));
    cases.push(case(
        "bytes held at the refusal <= file_max_bytes",
        "true",
        (held <= info.file_max_bytes).to_string(),
    ));
    let at_limit = held + CHUNK > info.file_max_bytes || count >= u64::from(info.file_max_count);
    cases.push(case(
        "refused only at the quota (bytes or count)",
        "true",
        at_limit.to_string(),
    ));
    println!(
        "{}",
        json!({"file_max_bytes": info.file_max_bytes, "file_max_count": info.file_max_count,
               "held_bytes": held, "held_count": count, "refusal": refusal,
               "atomic_quota_bytes": info.atomic_quota_bytes,
               "bench_max_bytes": info.bench_max_bytes, "max_bench_iters": info.max_bench_iters,
               "privileges": info.privileges})
    );
    drop(dev);

    let dev = Dev::open().map_err(|e| open_err(DEVICE, e))?;
    cases.push(case(
        "FLAG_PERSIST",
        "EPERM",
        outcome(dev.alloc(KIND_KMALLOC, FLAG_GFP_KERNEL | FLAG_PERSIST, 64)),
    ));

    // BENCH: iters * size just over bench_max_bytes, with a size the kind allows.
    let iters = info.max_bench_iters.clamp(1, 64);
    let size = info.bench_max_bytes / u64::from(iters) + 4096;
    if size > info.max_size[KIND_VMALLOC as usize] {
        return Err(format!(
            "cannot build a BENCH over bench_max_bytes: {size} bytes > vmalloc's maximum"
        ));
    }
    let mut over = Bench {
        kind: KIND_VMALLOC,
        flags: FLAG_GFP_KERNEL,
        size,
        iters,
        ..Bench::default()
    };
    cases.push(case(
        format!("BENCH {iters} x {size} bytes (over bench_max_bytes)"),
        "EPERM",
        outcome(dev.call(IOCTL_BENCH, &mut over)),
    ));
    let mut within = Bench {
        kind: KIND_KMALLOC,
        flags: FLAG_GFP_KERNEL,
        size: 64,
        iters: 10,
        ..Bench::default()
    };
    cases.push(case(
        "BENCH 10 x 64 bytes (within the limits)",
        "ok",
        outcome(dev.call(IOCTL_BENCH, &mut within)),
    ));

    // GFP_ATOMIC beyond the atomic quota, and within it.
    cases.push(case(
        "GFP_ATOMIC kmalloc of atomic_quota_bytes + 1",
        "EPERM",
        outcome(dev.alloc(KIND_KMALLOC, FLAG_GFP_ATOMIC, info.atomic_quota_bytes + 1)),
    ));
    let small = dev.alloc(KIND_KMALLOC, FLAG_GFP_ATOMIC, 1024);
    cases.push(case("GFP_ATOMIC kmalloc of 1 KiB", "ok", outcome(small)));
    if let Ok(a) = small {
        let _ = dev.free(a.handle);
    }
    Ok(print_cases(&cases))
}

/// `addrs`: on a new file, INFO's privileges and one kmalloc(64)'s addresses and result
/// bits, with the kptr_restrict in force.
pub fn addrs() -> Result<bool, String> {
    let kptr = std::fs::read_to_string("/proc/sys/kernel/kptr_restrict")
        .map_err(|e| format!("kptr_restrict: {e}"))?;
    let dev = Dev::open().map_err(|e| open_err(DEVICE, e))?;
    let info = dev.info().map_err(|e| format!("INFO: {}", errno_name(e)))?;
    let a = dev
        .alloc(KIND_KMALLOC, FLAG_GFP_KERNEL, 64)
        .map_err(|e| format!("kmalloc 64: {}", errno_name(e)))?;
    let _ = dev.free(a.handle);
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    println!(
        "{}",
        json!({"uid": uid, "kptr_restrict": kptr.trim().parse::<u32>().ok(),
               "privileges": info.privileges, "vaddr": a.vaddr, "phys": a.phys,
               "hidden": a.result & RESULT_HIDDEN != 0,
               "phys_hidden": a.result & RESULT_PHYS_HIDDEN != 0})
    );
    Ok(true)
}

extern "C" fn ignore_signal(_: libc::c_int) {}

/// Installs a handler for `sig` that does nothing, without SA_RESTART: a blocking call
/// that the signal interrupts returns EINTR instead of being restarted.
fn install_noop_handler(sig: libc::c_int) -> Result<(), String> {
    // SAFETY: a zeroed sigaction is a valid starting point; the handler is async-signal
    // safe (it does nothing) and lives for the whole program.
    let rc = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = ignore_signal as *const () as usize;
        sa.sa_flags = 0;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut())
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!("sigaction: {}", std::io::Error::last_os_error()))
    }
}

fn gettid() -> libc::pid_t {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as libc::pid_t }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// `bench-interrupt`: a BENCH of `max_bench_iters` kmalloc(4096) pairs in a thread, hit
/// with SIGINT (a no-op handler, no SA_RESTART) after 300 ms: it must return EINTR (or 0)
/// within 1 s of the signal, and nothing may stay allocated.
pub fn bench_interrupt() -> Result<bool, String> {
    const DELAY: Duration = Duration::from_millis(300);
    install_noop_handler(libc::SIGINT)?;
    let dev = Dev::open().map_err(|e| open_err(DEVICE, e))?;
    let info = dev.info().map_err(|e| format!("INFO: {}", errno_name(e)))?;
    // A short run first: what the whole run would take, as a figure.
    let probe_iters = info.max_bench_iters.min(10_000);
    let mut short = Bench {
        kind: KIND_KMALLOC,
        flags: FLAG_GFP_KERNEL,
        size: 4096,
        iters: probe_iters,
        ..Bench::default()
    };
    let t = Instant::now();
    dev.call(IOCTL_BENCH, &mut short)
        .map_err(|e| format!("short BENCH: {}", errno_name(e)))?;
    let projected =
        t.elapsed().as_secs_f64() * f64::from(info.max_bench_iters) / f64::from(probe_iters.max(1));

    let tid = Arc::new(AtomicI32::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let worker = {
        let (tid, done) = (Arc::clone(&tid), Arc::clone(&done));
        let iters = info.max_bench_iters;
        std::thread::spawn(move || {
            let dev = Dev::open().map_err(|e| open_err(DEVICE, e))?;
            let mut b = Bench {
                kind: KIND_KMALLOC,
                flags: FLAG_GFP_KERNEL,
                size: 4096,
                iters,
                ..Bench::default()
            };
            tid.store(gettid(), Ordering::SeqCst);
            let started = Instant::now();
            let r = dev.call(IOCTL_BENCH, &mut b);
            let returned = Instant::now();
            done.store(true, Ordering::SeqCst);
            Ok::<_, String>((r, b, started, returned))
        })
    };
    while tid.load(Ordering::SeqCst) == 0 && !worker.is_finished() {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(DELAY);
    let finished_before = done.load(Ordering::SeqCst);
    let sent = Instant::now();
    // SAFETY: tgkill to a thread of this process that has not been joined yet; SIGINT
    // has a handler, so it does not end the process.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_tgkill,
            libc::getpid(),
            tid.load(Ordering::SeqCst),
            libc::SIGINT,
        )
    };
    let (r, b, started, returned) = worker
        .join()
        .map_err(|_| "the BENCH thread panicked".to_owned())??;
    let to_return = returned.saturating_duration_since(sent);
    let stats = dev.stats().map_err(errno_name)?;
    let live = live_total(&stats);
    let result = outcome(r);
    let pass = rc == 0
        && !finished_before
        && (result == "EINTR" || result == "ok")
        && to_return < Duration::from_secs(1)
        && live == 0;
    println!(
        "{}",
        json!({"iters": info.max_bench_iters, "projected_full_run_ms": (projected * 1e3).round(),
               "signal_after_ms": ms(sent.saturating_duration_since(started)),
               "finished_before_signal": finished_before, "tgkill_rc": rc,
               "result": result, "signal_to_return_ms": ms(to_return),
               "bench_ms": ms(returned.saturating_duration_since(started)),
               "alloc_max_ns": b.alloc.max_ns, "live_after": live, "pass": pass})
    );
    Ok(pass)
}

/// `close-during-batch`: thread A allocates 256 dma_coherent 64 KiB entries per
/// ALLOC_BATCH and frees them, round after round; meanwhile this thread opens
/// /dev/kmemlab, allocates one dma_coherent 4 KiB and closes the file while A is inside a
/// batch. The close must take less than half of A's median batch.
pub fn close_during_batch() -> Result<bool, String> {
    const ENTRIES: usize = BATCH_MAX as usize;
    const MAX_ROUNDS: u32 = 40;
    // Round number of the batch A is in (0: none).
    let in_batch = Arc::new(AtomicU32::new(0));
    let b_done = Arc::new(AtomicBool::new(false));
    let a = {
        let (in_batch, b_done) = (Arc::clone(&in_batch), Arc::clone(&b_done));
        std::thread::spawn(move || -> Result<Vec<(u64, u32, i32, u64)>, String> {
            let dev = Dev::open().map_err(|e| open_err(DEVICE, e))?;
            let mut rounds = Vec::new();
            for round in 1..=MAX_ROUNDS {
                let mut entries = vec![
                    Alloc {
                        kind: KIND_DMA_COHERENT,
                        flags: FLAG_GFP_KERNEL,
                        size: 64 << 10,
                        ..Alloc::default()
                    };
                    ENTRIES
                ];
                let mut batch = AllocBatch {
                    entries: entries.as_mut_ptr() as u64,
                    count: ENTRIES as u32,
                    ..AllocBatch::default()
                };
                in_batch.store(round, Ordering::SeqCst);
                let t = Instant::now();
                let r = dev.call(IOCTL_ALLOC_BATCH, &mut batch);
                let alloc_ns = t.elapsed().as_nanos() as u64;
                in_batch.store(0, Ordering::SeqCst);
                r.map_err(|e| format!("ALLOC_BATCH: {}", errno_name(e)))?;
                let done = batch.done.min(ENTRIES as u32) as usize;
                let mut frees: Vec<Free> = entries[..done]
                    .iter()
                    .map(|e| Free {
                        handle: e.handle,
                        ..Free::default()
                    })
                    .collect();
                let t = Instant::now();
                if !frees.is_empty() {
                    let mut fb = FreeBatch {
                        entries: frees.as_mut_ptr() as u64,
                        count: frees.len() as u32,
                        ..FreeBatch::default()
                    };
                    dev.call(IOCTL_FREE_BATCH, &mut fb)
                        .map_err(|e| format!("FREE_BATCH: {}", errno_name(e)))?;
                }
                let free_ns = t.elapsed().as_nanos() as u64;
                rounds.push((alloc_ns, batch.done, batch.error, free_ns));
                if b_done.load(Ordering::SeqCst) && rounds.len() >= 3 {
                    break;
                }
            }
            Ok(rounds)
        })
    };
    let wait_for_batch = || {
        while in_batch.load(Ordering::SeqCst) == 0 && !a.is_finished() {
            std::thread::yield_now();
        }
    };
    wait_for_batch();
    let t = Instant::now();
    let file = open_rw(DEVICE).map_err(|e| open_err(DEVICE, e))?;
    let open_ns = t.elapsed().as_nanos() as u64;
    let dev = Dev(file);
    let t = Instant::now();
    let small = dev.alloc(KIND_DMA_COHERENT, FLAG_GFP_KERNEL, 4096);
    let alloc_ns = t.elapsed().as_nanos() as u64;
    let small = outcome(small);
    wait_for_batch();
    let round_at_close = in_batch.load(Ordering::SeqCst);
    let fd = dev.0.into_raw_fd();
    let t = Instant::now();
    // SAFETY: `fd` was just taken out of its File, so it is closed exactly once here.
    let rc = unsafe { libc::close(fd) };
    let close_ns = t.elapsed().as_nanos() as u64;
    let round_after_close = in_batch.load(Ordering::SeqCst);
    b_done.store(true, Ordering::SeqCst);
    let rounds = a.join().map_err(|_| "thread A panicked".to_owned())??;
    let mut batch_ns: Vec<u64> = rounds.iter().map(|r| r.0).collect();
    batch_ns.sort_unstable();
    let median = batch_ns.get(batch_ns.len() / 2).copied().unwrap_or(0);
    let allocated_something = rounds.iter().all(|r| r.1 > 0);
    let errors: Vec<String> = rounds
        .iter()
        .filter(|r| r.2 != 0)
        .map(|r| format!("{} after {}", errno_name(r.2), r.1))
        .collect();
    let pass = rc == 0
        && small == "ok"
        && round_at_close != 0
        && allocated_something
        && close_ns < median / 2;
    println!(
        "{}",
        json!({"close_ns": close_ns, "batch_ns_median": median, "batch_ns": batch_ns,
               "free_batch_ns": rounds.iter().map(|r| r.3).collect::<Vec<_>>(),
               "rounds": rounds.len(), "entries_done": rounds.iter().map(|r| r.1).collect::<Vec<_>>(),
               "batch_errors": errors, "b_open_ns": open_ns, "b_alloc_ns": alloc_ns,
               "b_alloc": small, "a_round_at_close": round_at_close,
               "a_round_after_close": round_after_close, "close_rc": rc, "pass": pass})
    );
    Ok(pass)
}

/// The device bound to the kmemlab driver: its entry under the driver's sysfs folder.
fn bound_device() -> Result<String, String> {
    std::fs::read_dir(DRIVER)
        .map_err(|e| format!("{DRIVER}: {e}"))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_symlink()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n != "module")
        .ok_or_else(|| format!("no device bound under {DRIVER}"))
}

/// `tmpfs-node DIR`: DIR is a tmpfs holding `uio0` and `kmemlab`, device nodes made with
/// mknod. Maps the heap through DIR/uio0 (magic checked), uses DIR/kmemlab, closes both
/// files but keeps the mapping; then lazily unmounts DIR and unbinds the device: the mapping
/// must stay readable (read in a child), unchanged. rmmod must be refused while it is mapped
/// (the mapping holds the UIO file, which holds the module) and succeed once it is unmapped.
pub fn tmpfs_node(dir: &str) -> Result<bool, String> {
    let uio_path = format!("{dir}/uio0");
    let dev_path = format!("{dir}/kmemlab");
    let size = map0_size()?;
    let uio = open_rw(&uio_path).map_err(|e| open_err(&uio_path, e))?;
    let map = Mapping::map0(&uio, size)
        .map_err(|e| format!("mmap of map 0 via {uio_path}: {}", errno_name(e)))?;
    let magic_before = map.u32_at(0) == RING_MAGIC;
    let before = map.checksum();
    let dev = open_rw(&dev_path)
        .map(Dev)
        .map_err(|e| open_err(&dev_path, e))?;
    let abi = dev.info().map(|i| i.abi_version).unwrap_or(0);
    let alloc = outcome(
        dev.alloc(KIND_KMALLOC, FLAG_GFP_KERNEL, 64)
            .and_then(|a| dev.free(a.handle)),
    );
    drop(dev);
    drop(uio);

    let c_dir = std::ffi::CString::new(dir).map_err(|e| e.to_string())?;
    // SAFETY: a NUL-terminated path; MNT_DETACH only detaches the mount.
    let umount = if unsafe { libc::umount2(c_dir.as_ptr(), libc::MNT_DETACH) } == 0 {
        "ok".to_owned()
    } else {
        std::io::Error::last_os_error().to_string()
    };
    let device = bound_device()?;
    let unbind = match std::fs::write(format!("{DRIVER}/unbind"), &device) {
        Ok(()) => "ok".to_owned(),
        Err(e) => e.to_string(),
    };
    let read_after_unbind = read_in_child(&map);
    let unchanged = read_after_unbind == "ok" && map.checksum() == before;
    // While mapped, the module stays: the mapping holds the UIO file, and UIO's open took a
    // reference on the registering module (drivers/uio/uio.c, uio_open()). rmmod is refused,
    // the documented, non-fatal outcome; once the mapping goes, it succeeds.
    let rmmod = |what: &str| {
        std::process::Command::new("rmmod")
            .arg("kmemlab")
            .output()
            .map_err(|e| format!("cannot run rmmod ({what}): {e}"))
    };
    let mapped = rmmod("mapped")?;
    let refused_while_mapped = !mapped.status.success();
    let read_after_refusal = read_in_child(&map);
    drop(map);
    let unmapped = rmmod("unmapped")?;
    let rmmod_ok = unmapped.status.success();
    let pass = magic_before
        && abi == ABI_VERSION
        && alloc == "ok"
        && umount == "ok"
        && unbind == "ok"
        && read_after_unbind == "ok"
        && unchanged
        && refused_while_mapped
        && read_after_refusal == "ok"
        && rmmod_ok;
    println!(
        "{}",
        json!({"map_size": size, "ring_magic_before": magic_before,
               "abi_version_via_node": abi, "alloc_free_via_node": alloc,
               "umount_lazy": umount, "device": device, "unbind": unbind,
               "read_after_unbind": read_after_unbind, "contents_unchanged": unchanged,
               "rmmod_refused_while_mapped": refused_while_mapped,
               "rmmod_mapped_stderr": String::from_utf8_lossy(&mapped.stderr).trim(),
               "read_after_refusal": read_after_refusal, "rmmod_ok": rmmod_ok,
               "rmmod_stderr": String::from_utf8_lossy(&unmapped.stderr).trim(),
               "pass": pass})
    );
    Ok(pass)
}
