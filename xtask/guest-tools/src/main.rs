//! `kmemlab-abi-probe`: sends `/dev/kmemlab` the requests that `kmemlabctl` never sends
//! (bad sizes, unknown commands, bad pointers, foreign handles) and checks each errno.
//! The VM tests run it in the guest.
//!
//! ```text
//! kmemlab-abi-probe errnos                 every bad-input case; one JSON line each
//! kmemlab-abi-probe hold N KIND SIZE       N allocations on one fd, then close it
//! kmemlab-abi-probe fuzz THREADS CALLS SEED random requests from THREADS threads
//! kmemlab-abi-probe as-user UID GID GROUPS  what /dev/kmemlab allows that user
//! kmemlab-abi-probe load THREADS SECS SEED  every kind allocated and freed for SECS
//! kmemlab-abi-probe module-range NAME       "0xSTART 0xEND" of a module's memory
//! kmemlab-abi-probe trigger-pair GAP_MS     two software presses GAP_MS apart
//! kmemlab-abi-probe presses N GAP_US        N software presses GAP_US apart
//! kmemlab-abi-probe keep N                  hold N kmalloc 64 B allocations until killed
//! kmemlab-abi-probe unbind-live             unbind the device under a mapping and allocations
//! kmemlab-abi-probe notify-test KMEMLABD    READY=1 only once kmemlabd has its devices;
//!                                          RELOADING=1 + MONOTONIC_USEC=, READY=1 on SIGHUP
//! kmemlab-abi-probe as UID GID GROUPS PROG ARGS...  run PROG as that user (no capabilities)
//! kmemlab-abi-probe heap-map                map0's sysfs addr and size; map it, check the magic
//! kmemlab-abi-probe trigger-burst N GAP_US  N TRIGGERs, each with its ring record
//! kmemlab-abi-probe quotas                  an unprivileged opener's quotas and EPERMs
//! kmemlab-abi-probe addrs                   one kmalloc(64)'s addresses and result bits
//! kmemlab-abi-probe bench-interrupt         SIGINT to a long BENCH: EINTR within 1 s
//! kmemlab-abi-probe close-during-batch      close() while another file runs DMA batches
//! kmemlab-abi-probe tmpfs-node DIR          heap mapped via a tmpfs node, kept past rmmod
//! ```

mod stress;
mod v2;
mod vfio;

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::process::ExitCode;

use kmemlab_uapi::errnos::Request;
use kmemlab_uapi::*;
use serde_json::json;

const DEVICE: &str = "/dev/kmemlab";

/// An open `/dev/kmemlab`.
struct Dev(File);

/// The errno of a failed call, or 0.
type Errno = i32;

impl Dev {
    fn open() -> std::io::Result<Self> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(DEVICE)
            .map(Self)
    }

    /// Issues `cmd` with `arg` as the raw argument.
    ///
    /// # Safety
    ///
    /// The kernel may write up to `ioc_size(cmd)` bytes at `arg`: `arg` must be valid for
    /// that many bytes, or be an address that no memory of this process is mapped at.
    unsafe fn raw(&self, cmd: u32, arg: usize) -> Result<i32, Errno> {
        // SAFETY: the fd is open; the caller guarantees what `arg` points at.
        let rc = unsafe { libc::ioctl(self.0.as_raw_fd(), cmd as _, arg) };
        if rc < 0 {
            Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
        } else {
            Ok(rc)
        }
    }

    /// Issues `cmd` on a buffer at least as large as the command's encoded size.
    fn with_buf(&self, cmd: u32, buf: &mut [u8]) -> Result<i32, Errno> {
        assert!(
            ioc_size(cmd) <= buf.len(),
            "buffer smaller than the command's size"
        );
        // SAFETY: `buf` is valid for `ioc_size(cmd)` bytes, checked above.
        unsafe { self.raw(cmd, buf.as_mut_ptr() as usize) }
    }

    /// Issues `cmd` on a value of type `T`, whose size must match the command.
    fn call<T: Copy>(&self, cmd: u32, value: &mut T) -> Result<i32, Errno> {
        assert_eq!(
            ioc_size(cmd),
            std::mem::size_of::<T>(),
            "command and type differ"
        );
        // SAFETY: `value` is valid for `size_of::<T>()` bytes, which equals the command's
        // size; `T` is one of the ABI's plain-integer structs, valid for any bytes.
        unsafe { self.raw(cmd, value as *mut T as usize) }
    }

    fn alloc(&self, kind: u32, flags: u32, size: u64) -> Result<Alloc, Errno> {
        let mut a = Alloc {
            kind,
            flags,
            size,
            ..Alloc::default()
        };
        self.call(IOCTL_ALLOC, &mut a).map(|_| a)
    }

    fn free(&self, handle: u64) -> Result<Free, Errno> {
        let mut f = Free {
            handle,
            ..Free::default()
        };
        self.call(IOCTL_FREE, &mut f).map(|_| f)
    }

    fn stats(&self) -> Result<Stats, Errno> {
        let mut s = Stats::default();
        self.call(IOCTL_STATS, &mut s).map(|_| s)
    }

    fn info(&self) -> Result<Info, Errno> {
        let mut i = Info::default();
        self.call(IOCTL_INFO, &mut i).map(|_| i)
    }
}

fn errno_name(e: Errno) -> String {
    let name = match e {
        0 => "ok",
        libc::EINVAL => "EINVAL",
        libc::ENOENT => "ENOENT",
        libc::ENOTTY => "ENOTTY",
        libc::EFAULT => "EFAULT",
        libc::E2BIG => "E2BIG",
        libc::ENOSPC => "ENOSPC",
        libc::ENOMEM => "ENOMEM",
        libc::EPERM => "EPERM",
        libc::EACCES => "EACCES",
        libc::ENODEV => "ENODEV",
        libc::EINTR => "EINTR",
        libc::EDQUOT => "EDQUOT",
        libc::EBUSY => "EBUSY",
        other => return format!("errno {other}"),
    };
    name.to_owned()
}

fn outcome<T>(r: Result<T, Errno>) -> String {
    errno_name(r.err().unwrap_or(0))
}

/// A page mapped with `prot`, unmapped on drop.
struct Page {
    addr: *mut libc::c_void,
    len: usize,
}

impl Page {
    fn new(prot: i32) -> Self {
        // SAFETY: sysconf has no memory-safety preconditions.
        let len = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        // SAFETY: an anonymous private mapping at an address the kernel picks.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(addr, libc::MAP_FAILED, "mmap failed");
        Self { addr, len }
    }

    /// An address where nothing is mapped: a page mapped and unmapped again.
    fn hole() -> usize {
        let page = Page::new(libc::PROT_NONE);
        page.addr as usize
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // SAFETY: `addr`/`len` is a mapping this value owns.
        unsafe { libc::munmap(self.addr, self.len) };
    }
}

fn live_total(s: &Stats) -> u64 {
    s.kinds.iter().map(|k| k.live_count).sum()
}

/// Every bad-input case with the errno the ABI documents for it.
fn errnos() -> Result<bool, String> {
    let dev = Dev::open().map_err(|e| format!("cannot open {DEVICE}: {e}"))?;
    let other = Dev::open().map_err(|e| format!("cannot open {DEVICE}: {e}"))?;
    let info = dev
        .info()
        .map_err(|e| format!("INFO failed: {}", errno_name(e)))?;
    let live_before = live_total(&dev.stats().map_err(errno_name)?);
    let k = FLAG_GFP_KERNEL;
    // The ABI's errno table, which the mock device's unit tests replay too.
    let mut cases: Vec<(&str, &str, String)> = Vec::new();
    for case in kmemlab_uapi::errnos::cases(&info) {
        match case.request {
            Request::Alloc(req) => {
                cases.push((case.name, case.errno, alloc_case(&dev, req, false)));
                cases.push((case.name, case.errno, alloc_case(&dev, req, true)));
            }
            Request::Free(handle) => cases.push((case.name, case.errno, outcome(dev.free(handle)))),
            Request::DoubleFree => {
                let got = match dev.alloc(KIND_KMALLOC, k, 64) {
                    Ok(a) => {
                        let _ = dev.free(a.handle);
                        outcome(dev.free(a.handle))
                    }
                    Err(e) => format!("alloc failed: {}", errno_name(e)),
                };
                cases.push((case.name, case.errno, got));
            }
            Request::Bench(mut req) => cases.push((
                case.name,
                case.errno,
                outcome(dev.call(IOCTL_BENCH, &mut req)),
            )),
            Request::Trigger(count) => {
                let mut req = Trigger {
                    count,
                    ..Trigger::default()
                };
                cases.push((
                    case.name,
                    case.errno,
                    outcome(dev.call(IOCTL_TRIGGER, &mut req)),
                ));
            }
        }
    }
    bench_histogram_cases(&dev, &mut cases);
    match dev.alloc(KIND_KMALLOC, k, 64) {
        Ok(a) => {
            cases.push((
                "free of another file's handle",
                "ENOENT",
                outcome(other.free(a.handle)),
            ));
            cases.push(("free by its owner", "ok", outcome(dev.free(a.handle))));
        }
        Err(e) => cases.push(("alloc for foreign free", "ok", errno_name(e))),
    }
    // Struct size encoded in the command differs from the struct's.
    let mut buf = [0u8; 512];
    let short = ioc(
        IOC_READ | IOC_WRITE,
        NR_ALLOC,
        std::mem::size_of::<Alloc>() - 8,
    );
    cases.push((
        "ALLOC with a short struct size",
        "EINVAL",
        outcome(dev.with_buf(short, &mut buf)),
    ));
    let long = ioc(IOC_READ, NR_INFO, std::mem::size_of::<Info>() + 8);
    cases.push((
        "INFO with a long struct size",
        "EINVAL",
        outcome(dev.with_buf(long, &mut buf)),
    ));
    let wrong_dir = ioc(IOC_WRITE, NR_STATS, std::mem::size_of::<Stats>());
    cases.push((
        "STATS with the wrong direction",
        "EINVAL",
        outcome(dev.with_buf(wrong_dir, &mut buf)),
    ));
    cases.push((
        "unknown command number",
        "ENOTTY",
        outcome(dev.with_buf(ioc(IOC_READ | IOC_WRITE, 0x7f, 16), &mut buf)),
    ));
    let foreign_magic = IOCTL_INFO ^ (0x01 << 8);
    cases.push((
        "another driver's magic",
        "ENOTTY",
        outcome(dev.with_buf(foreign_magic, &mut buf)),
    ));
    // SAFETY: address 0 is never mapped in this process.
    cases.push((
        "NULL argument",
        "EFAULT",
        outcome(unsafe { dev.raw(IOCTL_ALLOC, 0) }),
    ));
    let hole = Page::hole();
    // SAFETY: `hole` was unmapped and this thread maps nothing in between.
    cases.push((
        "unmapped argument",
        "EFAULT",
        outcome(unsafe { dev.raw(IOCTL_ALLOC, hole) }),
    ));
    // A valid request in read-only memory: the kernel allocates, cannot write the report
    // back, and must undo the allocation.
    let page = Page::new(libc::PROT_READ | libc::PROT_WRITE);
    let req = Alloc {
        kind: KIND_KMALLOC,
        flags: k,
        size: 64,
        ..Alloc::default()
    };
    // SAFETY: the page is mapped read-write and large enough for one `Alloc`.
    unsafe { std::ptr::write(page.addr.cast::<Alloc>(), req) };
    // SAFETY: `page` is a mapping this function owns.
    unsafe { libc::mprotect(page.addr, page.len, libc::PROT_READ) };
    // SAFETY: the page is mapped; the kernel cannot write to it, so nothing changes.
    let ro = unsafe { dev.raw(IOCTL_ALLOC, page.addr as usize) };
    cases.push(("ALLOC into read-only memory", "EFAULT", outcome(ro)));
    let mut list = List {
        capacity: LIST_MAX + 1,
        entries: buf.as_mut_ptr() as u64,
        ..List::default()
    };
    cases.push((
        "LIST over its maximum",
        "EINVAL",
        outcome(dev.call(IOCTL_LIST, &mut list)),
    ));
    let mut list = List {
        capacity: 4,
        entries: hole as u64,
        ..List::default()
    };
    // One visible allocation, so LIST has something to write.
    let held = dev.alloc(KIND_KMALLOC, k, 64);
    cases.push((
        "LIST into an unmapped array",
        "EFAULT",
        outcome(dev.call(IOCTL_LIST, &mut list)),
    ));
    if let Ok(a) = held {
        let _ = dev.free(a.handle);
    }

    let live_after = live_total(&dev.stats().map_err(errno_name)?);
    cases.push((
        "nothing left allocated",
        "ok",
        if live_after == live_before {
            "ok".to_owned()
        } else {
            format!(
                "{} allocations left",
                live_after.saturating_sub(live_before)
            )
        },
    ));

    let mut all = true;
    for (case, want, got) in &cases {
        let pass = want == got;
        all &= pass;
        println!(
            "{}",
            json!({"case": case, "want": want, "got": got, "pass": pass})
        );
    }
    Ok(all)
}

/// An ALLOC request of the errno table, sent as ALLOC or as the one entry of an ALLOC_BATCH
/// (whose `error` is then the errno); an allocation made is freed again.
fn alloc_case(dev: &Dev, req: Alloc, batch: bool) -> String {
    let mut entry = req;
    let result = if batch {
        let mut b = AllocBatch {
            entries: std::ptr::from_mut(&mut entry) as u64,
            count: 1,
            ..AllocBatch::default()
        };
        match dev.call(IOCTL_ALLOC_BATCH, &mut b) {
            Ok(_) if b.error != 0 => Err(b.error),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        }
    } else {
        dev.call(IOCTL_ALLOC, &mut entry).map(drop)
    };
    match result {
        Ok(()) => outcome(dev.free(entry.handle)),
        Err(e) => errno_name(e),
    }
}

/// BENCH's histograms (ABI v3): they count every pair on each side, and an unwritable
/// `hist_addr` is EFAULT with nothing left allocated.
fn bench_histogram_cases(dev: &Dev, cases: &mut Vec<(&'static str, &'static str, String)>) {
    let mut counts = vec![0u32; 2 * HIST_BUCKETS];
    let mut req = Bench {
        kind: KIND_KMALLOC,
        flags: FLAG_GFP_KERNEL,
        size: 64,
        iters: 1000,
        hist_addr: counts.as_mut_ptr() as u64,
        ..Bench::default()
    };
    let got = match dev.call(IOCTL_BENCH, &mut req) {
        Ok(_) => {
            let (alloc, free) = counts.split_at(HIST_BUCKETS);
            let sum = |c: &[u32]| c.iter().map(|n| u64::from(*n)).sum::<u64>();
            let p99 = hist_percentile(
                alloc.iter().map(|n| u64::from(*n)),
                1000,
                990,
                req.alloc.min_ns,
                req.alloc.max_ns,
            );
            if (sum(alloc), sum(free)) != (1000, 1000) {
                format!("histograms count {} and {} pairs", sum(alloc), sum(free))
            } else if p99 != req.alloc.p99_ns {
                format!(
                    "p99 {p99} from the histogram, {} in the timing",
                    req.alloc.p99_ns
                )
            } else {
                "ok".to_owned()
            }
        }
        Err(e) => errno_name(e),
    };
    cases.push((
        "BENCH histograms count every pair and give its p99",
        "ok",
        got,
    ));
    req.hist_addr = Page::hole() as u64;
    req.alloc = Timing::default();
    req.free = Timing::default();
    cases.push((
        "BENCH with an unmapped hist_addr",
        "EFAULT",
        outcome(dev.call(IOCTL_BENCH, &mut req)),
    ));
}

/// `n` allocations on one fd; STATS from a second fd before and after closing it.
fn hold(n: u64, kind: u32, size: u64) -> Result<bool, String> {
    let watcher = Dev::open().map_err(|e| format!("cannot open {DEVICE}: {e}"))?;
    let base = watcher.stats().map_err(errno_name)?.kinds[kind as usize].live_count;
    let holder = Dev::open().map_err(|e| format!("cannot open {DEVICE}: {e}"))?;
    for i in 0..n {
        holder
            .alloc(kind, FLAG_GFP_KERNEL, size)
            .map_err(|e| format!("allocation {i} failed: {}", errno_name(e)))?;
    }
    let during = watcher.stats().map_err(errno_name)?.kinds[kind as usize].live_count - base;
    drop(holder);
    let stats = watcher.stats().map_err(errno_name)?;
    let after = stats.kinds[kind as usize].live_count - base;
    println!(
        "{}",
        json!({"held": n, "live_while_open": during, "live_after_close": after,
               "frees": stats.kinds[kind as usize].frees})
    );
    Ok(during == n && after == 0)
}

/// Allocates `n` kmalloc 64 B allocations, says so on stdout, and holds them until killed
/// (the kernel frees them when the file closes): the live allocations of `cargo xtask
/// bench`'s profiled scaling runs, made and freed outside the profiled window.
fn keep(n: u64) -> Result<bool, String> {
    use std::io::Write;
    let dev = Dev::open().map_err(|e| format!("cannot open {DEVICE}: {e}"))?;
    for i in 0..n {
        dev.alloc(KIND_KMALLOC, FLAG_GFP_KERNEL, 64)
            .map_err(|e| format!("allocation {i} failed: {}", errno_name(e)))?;
    }
    println!("{}", json!({ "kept": n }));
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

/// Prints the address range a loaded module occupies (from /proc/modules, which shows
/// real addresses to a CAP_SYSLOG reader with kptr_restrict=1): the fault-injection
/// stack filter's require-start and require-end.
fn module_range(name: &str) -> Result<bool, String> {
    let text = std::fs::read_to_string("/proc/modules").map_err(|e| e.to_string())?;
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .ok_or_else(|| format!("module {name} is not loaded"))?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    let size: u64 = fields
        .get(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no size")?;
    let base = fields
        .get(5)
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .filter(|b| *b != 0)
        .ok_or("no address (hidden by kptr_restrict?)")?;
    println!("0x{base:x} 0x{:x}", base + size);
    Ok(true)
}

/// Two TRIGGERs from one process, `gap_ms` apart (a bouncing button).
fn trigger_pair(gap_ms: u64) -> Result<bool, String> {
    let dev = Dev::open().map_err(|e| format!("cannot open {DEVICE}: {e}"))?;
    let mut t = Trigger {
        count: 1,
        ..Trigger::default()
    };
    dev.call(IOCTL_TRIGGER, &mut t).map_err(errno_name)?;
    let first = t.events;
    std::thread::sleep(std::time::Duration::from_millis(gap_ms));
    let mut t = Trigger {
        count: 1,
        ..Trigger::default()
    };
    dev.call(IOCTL_TRIGGER, &mut t).map_err(errno_name)?;
    println!(
        "{}",
        serde_json::json!({"gap_ms": gap_ms, "events": [first, t.events]})
    );
    Ok(true)
}

/// Unbinds the device while this process holds allocations of every kind and has the
/// heap mapped: the mapping stays readable with the ring's magic (v2: the heap is ordinary
/// pages the mapping keeps; no SIGBUS), new requests get ENODEV, the dma_coherent
/// allocation is gone (freed at unbind, ENOENT), the others can still be freed; then the
/// device binds again and works.
fn unbind_live() -> Result<bool, String> {
    const DRIVER: &str = "/sys/bus/platform/drivers/kmemlab";
    let dev = Dev::open().map_err(|e| format!("cannot open {DEVICE}: {e}"))?;
    let mut handles = Vec::new();
    for kind in 0..KIND_COUNT {
        let a = dev
            .alloc(kind, FLAG_GFP_KERNEL, 4096)
            .map_err(|e| format!("alloc kind {kind}: {}", errno_name(e)))?;
        handles.push((kind, a.handle));
    }
    let uio = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/uio0")
        .map_err(|e| format!("/dev/uio0: {e}"))?;
    let map =
        v2::Mapping::map0(&uio, 4096).map_err(|e| format!("mmap of map 0: {}", errno_name(e)))?;
    let magic = map.u32_at(0);
    std::fs::write(format!("{DRIVER}/unbind"), "kmemlab").map_err(|e| format!("unbind: {e}"))?;
    // A child reads the whole mapping after unbind: no fault, and the magic stays.
    let read_after = v2::read_in_child(&map);
    let alloc_after = outcome(dev.alloc(KIND_KMALLOC, FLAG_GFP_KERNEL, 64));
    let mut trig = Trigger {
        count: 1,
        ..Trigger::default()
    };
    let trigger_after = outcome(dev.call(IOCTL_TRIGGER, &mut trig));
    let mut frees = Vec::new();
    for (kind, handle) in &handles {
        frees.push((*kind, outcome(dev.free(*handle))));
    }
    drop(map);
    drop(uio);
    drop(dev);
    std::fs::write(format!("{DRIVER}/bind"), "kmemlab").map_err(|e| format!("bind: {e}"))?;
    let again = Dev::open().map_err(|e| format!("reopen after bind: {e}"))?;
    let rebound = again
        .alloc(KIND_DMA_COHERENT, FLAG_GFP_KERNEL, 4096)
        .and_then(|a| again.free(a.handle));
    let dma_free = frees
        .iter()
        .find(|(k, _)| *k == KIND_DMA_COHERENT)
        .map(|(_, r)| r.clone())
        .unwrap_or_default();
    let others_freed = frees
        .iter()
        .filter(|(k, _)| *k != KIND_DMA_COHERENT)
        .all(|(_, r)| r == "ok");
    let pass = magic == RING_MAGIC
        && read_after == "ok"
        && alloc_after == "ENODEV"
        && trigger_after == "ENODEV"
        && dma_free == "ENOENT"
        && others_freed
        && rebound.is_ok();
    println!(
        "{}",
        serde_json::json!({"ring_magic_before": magic == RING_MAGIC, "read_after_unbind": read_after,
            "alloc_after_unbind": alloc_after, "trigger_after_unbind": trigger_after,
            "dma_free_after_unbind": dma_free, "other_kinds_freed": others_freed,
            "works_after_rebind": rebound.is_ok(), "pass": pass})
    );
    Ok(pass)
}

/// `n` TRIGGERs of one event each, `gap_us` apart.
fn presses(n: u64, gap_us: u64) -> Result<bool, String> {
    let dev = Dev::open().map_err(|e| format!("cannot open {DEVICE}: {e}"))?;
    let mut last = 0;
    for _ in 0..n {
        let mut t = Trigger {
            count: 1,
            ..Trigger::default()
        };
        dev.call(IOCTL_TRIGGER, &mut t).map_err(errno_name)?;
        last = t.events;
        std::thread::sleep(std::time::Duration::from_micros(gap_us));
    }
    println!("{}", serde_json::json!({"presses": n, "events": last}));
    Ok(true)
}

/// Starts `daemon` with NOTIFY_SOCKET set to a datagram socket owned here; when READY=1
/// arrives, checks that the daemon already holds /dev/kmemlab, the UIO device and the
/// heap mapping and has written its start line; sends SIGHUP and checks for RELOADING=1
/// with MONOTONIC_USEC= (a CLOCK_MONOTONIC time between the signal and its receipt) in
/// one datagram, then READY=1 once the reload line is written; then stops it and waits
/// for STOPPING=1.
fn notify_test(daemon: &str) -> Result<bool, String> {
    use std::os::unix::net::UnixDatagram;
    let sock_path = "/tmp/kmemlab-notify.sock";
    let log = "/tmp/kmemlab-notify.log";
    let _ = std::fs::remove_file(sock_path);
    let _ = std::fs::remove_file(log);
    let sock = UnixDatagram::bind(sock_path).map_err(|e| format!("bind: {e}"))?;
    sock.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    let mut child = std::process::Command::new(daemon)
        .args(["--log", log])
        .env("NOTIFY_SOCKET", sock_path)
        .spawn()
        .map_err(|e| format!("cannot start {daemon}: {e}"))?;
    let pid = child.id();
    let mut buf = [0u8; 4096];
    let mut messages = Vec::new();
    let mut at_ready = None;
    while at_ready.is_none() {
        let n = sock
            .recv(&mut buf)
            .map_err(|e| format!("no READY=1: {e}"))?;
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        if msg.lines().any(|l| l == "READY=1") {
            // What the daemon holds at the moment it says it is ready.
            let fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
                .map_err(|e| e.to_string())?
                .filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|p| p.display().to_string())
                .collect();
            let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
            let started = std::fs::read_to_string(log)
                .unwrap_or_default()
                .contains("\"event\":\"start\"");
            at_ready = Some((
                fds.iter().any(|f| f == DEVICE),
                fds.iter().any(|f| f.starts_with("/dev/uio")),
                maps.lines().any(|l| l.contains("/dev/uio")),
                started,
            ));
        }
        messages.push(msg);
    }
    // SIGHUP (what Type=notify-reload sends): RELOADING=1 and MONOTONIC_USEC= in one
    // datagram, then READY=1, and by then the reload line is written.
    let before_usec = monotonic_usec();
    // SAFETY: kill(2) with a pid this process started and has not reaped.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) };
    let mut reloading = None;
    let mut reloaded = None;
    while reloaded.is_none() {
        let n = sock
            .recv(&mut buf)
            .map_err(|e| format!("no READY=1 after SIGHUP: {e}"))?;
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        let lines: Vec<&str> = msg.lines().collect();
        if lines.contains(&"RELOADING=1") {
            let usec = lines
                .iter()
                .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
                .and_then(|v| v.parse::<u64>().ok());
            let after_usec = monotonic_usec();
            reloading = Some(usec.is_some_and(|u| before_usec <= u && u <= after_usec));
        } else if lines.contains(&"READY=1") {
            reloaded = Some(
                reloading.is_some()
                    && std::fs::read_to_string(log)
                        .unwrap_or_default()
                        .contains("\"event\":\"reload\""),
            );
        }
        messages.push(msg);
    }
    let reloading_with_usec = reloading.unwrap_or(false);
    let reload_line_before_ready = reloaded.unwrap_or(false);
    // SAFETY: kill(2) with a pid this process started and has not reaped.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    let mut stopping = false;
    while let Ok(n) = sock.recv(&mut buf) {
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        stopping |= msg.lines().any(|l| l == "STOPPING=1");
        messages.push(msg);
        if stopping {
            break;
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    let (kmemlab, uio, heap, started) = at_ready.unwrap_or_default();
    println!(
        "{}",
        serde_json::json!({"ready": true, "device_open_at_ready": kmemlab,
            "uio_open_at_ready": uio, "heap_mapped_at_ready": heap,
            "start_line_before_ready": started,
            "reloading_with_monotonic_usec": reloading_with_usec,
            "reload_line_before_ready": reload_line_before_ready, "stopping": stopping,
            "exit": status.code(), "messages": messages})
    );
    Ok(kmemlab
        && uio
        && heap
        && started
        && reloading_with_usec
        && reload_line_before_ready
        && stopping
        && status.success())
}

/// CLOCK_MONOTONIC in µs, as `MONOTONIC_USEC=` carries it.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime(2) writes one timespec through a valid, exclusive pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

/// A user id, a group id and a comma-separated list of supplementary groups.
fn ids(uid: &str, gid: &str, groups: &str) -> Result<(u32, u32, Vec<u32>), String> {
    let id = |s: &str| s.parse::<u32>().map_err(|_| format!("bad id {s}"));
    let groups = groups
        .split(',')
        .filter(|g| !g.is_empty())
        .map(id)
        .collect::<Result<_, _>>()?;
    Ok((id(uid)?, id(gid)?, groups))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let num = |s: &str| s.parse::<u64>().map_err(|_| format!("not a number: {s}"));
    let result = match args.as_slice() {
        ["errnos"] => errnos(),
        ["hold", n, kind, size] => (|| {
            let kind = u32::try_from(num(kind)?).map_err(|e| e.to_string())?;
            if kind >= KIND_COUNT {
                return Err(format!("no kind {kind}"));
            }
            hold(num(n)?, kind, num(size)?)
        })(),
        ["fuzz", threads, calls, seed] => {
            (|| stress::fuzz(num(threads)?, num(calls)?, num(seed)?))()
        }
        ["module-range", name] => module_range(name),
        ["trigger-pair", gap_ms] => (|| trigger_pair(num(gap_ms)?))(),
        ["presses", n, gap_us] => (|| presses(num(n)?, num(gap_us)?))(),
        ["keep", n] => (|| keep(num(n)?))(),
        ["unbind-live"] => unbind_live(),
        ["notify-test", daemon] => notify_test(daemon),
        ["load", threads, secs, seed] => (|| stress::load(num(threads)?, num(secs)?, num(seed)?))(),
        ["as-user", uid, gid, groups] => (|| {
            let (uid, gid, groups) = ids(uid, gid, groups)?;
            stress::as_user(uid, gid, &groups)
        })(),
        ["as", uid, gid, groups, program @ ..] => (|| {
            let (uid, gid, groups) = ids(uid, gid, groups)?;
            Err(v2::as_user_exec(uid, gid, &groups, program))
        })(),
        ["heap-map"] => v2::heap_map(),
        ["trigger-burst", n, gap_us] => (|| v2::trigger_burst(num(n)?, num(gap_us)?))(),
        ["quotas"] => v2::quotas(),
        ["addrs"] => v2::addrs(),
        ["bench-interrupt"] => v2::bench_interrupt(),
        ["close-during-batch"] => v2::close_during_batch(),
        ["tmpfs-node", dir] => v2::tmpfs_node(dir),
        ["vfio-regs"] => vfio::regs(),
        _ => Err(
            "usage: kmemlab-abi-probe errnos | hold N KIND SIZE | fuzz THREADS CALLS SEED | \
                  load THREADS SECS SEED | as-user UID GID GROUP,GROUP | \
                  as UID GID GROUP,GROUP PROGRAM ARGS... | heap-map | trigger-burst N GAP_US | \
                  quotas | addrs | bench-interrupt | close-during-batch | tmpfs-node DIR | vfio-regs \
                  (see the source's header for the rest)"
                .to_owned(),
        ),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(msg) => {
            eprintln!("kmemlab-abi-probe: {msg}");
            ExitCode::from(2)
        }
    }
}
