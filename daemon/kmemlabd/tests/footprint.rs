//! kmemlabd's heap over many presses, measured with a counting global allocator: after
//! a warm-up, presses keep no memory, their transient memory does not grow with
//! `/proc/vmallocinfo`, and a press makes a small, fixed number of allocations. Once
//! for the per-press logic ([`Daemon::on_readable`]), once through the event loop.
//!
//! Linux lists the vmalloc areas it freed lazily ("unpurged vm_area") at the end of
//! `/proc/vmallocinfo` until it purges them, which a 2-CPU board does only after 64 MiB
//! of them (`lazy_max_pages()`): each vmalloc press of the default plan, once freed, adds
//! a line, and the file grows for tens of thousands of presses. The test's
//! vmallocinfo grows the same way.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;

use kmemlab::uapi::{self, Alloc, Bench, Free, Info, Stats, Trigger};
use kmemlab::{BatchOutcome, Device, Flags, IrqSource, Kind, ListPage, MockDevice, Uio};
use kmemlabd::{run, Daemon, EventWriter, Signals, StartInfo, StopReason};
use nix::sys::pthread::{pthread_kill, pthread_self};
use nix::sys::signal::Signal;

/// What the current thread asked of the allocator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Counts {
    /// `alloc`, `alloc_zeroed` and `realloc` calls.
    calls: u64,
    /// Bytes allocated and not freed.
    live_bytes: i64,
    /// Blocks allocated and not freed.
    live_blocks: i64,
    /// The most `live_bytes` has been since [`reset_peak`].
    peak_bytes: i64,
}

thread_local! {
    static COUNTS: Cell<Counts> = const {
        Cell::new(Counts { calls: 0, live_bytes: 0, live_blocks: 0, peak_bytes: 0 })
    };
    static PAUSED: Cell<bool> = const { Cell::new(false) };
}

/// Counts for the current thread, unless paused: `call` is an allocation call, `blocks`
/// and `bytes` are what it adds to the live ones. Thread-local, so that the two tests
/// and the harness's threads do not disturb each other's figures; const-initialized
/// cells without destructors, so that counting never allocates.
fn count(call: bool, blocks: i64, bytes: i64) {
    let _ = COUNTS.try_with(|c| {
        if PAUSED.try_with(Cell::get).unwrap_or(true) {
            return;
        }
        let mut n = c.get();
        n.calls += u64::from(call);
        n.live_blocks += blocks;
        n.live_bytes += bytes;
        n.peak_bytes = n.peak_bytes.max(n.live_bytes);
        c.set(n);
    });
}

fn counts() -> Counts {
    COUNTS.with(Cell::get)
}

fn reset_peak() {
    COUNTS.with(|c| {
        let mut n = c.get();
        n.peak_bytes = n.live_bytes;
        c.set(n);
    });
}

/// Runs `f` without counting what it allocates and frees.
fn uncounted<T>(f: impl FnOnce() -> T) -> T {
    PAUSED.with(|p| p.set(true));
    let r = f();
    PAUSED.with(|p| p.set(false));
    r
}

/// The system allocator, counted.
struct Counting;

// SAFETY: every call goes to `System` unchanged; the counting beside it only touches
// const-initialized thread-local cells, which neither allocate nor unwind.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller keeps `alloc`'s contract, which is `System.alloc`'s.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(true, 1, layout.size() as i64);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller keeps `alloc_zeroed`'s contract, which is `System`'s.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count(true, 1, layout.size() as i64);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller keeps `dealloc`'s contract, which is `System.dealloc`'s.
        unsafe { System.dealloc(ptr, layout) };
        count(false, -1, -(layout.size() as i64));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller keeps `realloc`'s contract, which is `System.realloc`'s.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(true, 0, new_size as i64 - layout.size() as i64);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Presses in one round of the default plan: three steps, each allocated and freed.
const ROUND: u64 = 6;
/// Presses before the measured window: whatever the daemon keeps from press to press
/// reaches its size in them.
const WARM_UP: u64 = 1_000 * ROUND;
/// Rounds measured.
const ROUNDS: u64 = 4_000;

/// Where the test's vmalloc areas start. The mock never reuses an address; here every
/// vmalloc press gets the area that the vmallocinfo fixture lists.
const AREA: u64 = 0xffff_8000_8200_0000;

/// The module: the mock, run with counting paused (it logs every command in a
/// `Vec<String>` for tests to look at, which grows with presses by design; the real
/// device keeps nothing), with vmalloc areas at [`AREA`], and with a freed vmalloc area
/// added to the end of `vmallocinfo` as an unpurged area, as Linux does.
struct Module {
    mock: MockDevice,
    vmallocinfo: PathBuf,
    vmalloc_handle: Cell<u64>,
}

impl Device for Module {
    fn info(&self) -> kmemlab::Result<Info> {
        uncounted(|| self.mock.info())
    }

    fn alloc(&self, kind: Kind, size: u64, flags: Flags) -> kmemlab::Result<Alloc> {
        let mut a = uncounted(|| self.mock.alloc(kind, size, flags))?;
        if a.kind == uapi::KIND_VMALLOC {
            a.vaddr = AREA;
            self.vmalloc_handle.set(a.handle);
        }
        Ok(a)
    }

    fn free(&self, handle: u64) -> kmemlab::Result<Free> {
        uncounted(|| {
            let free = self.mock.free(handle)?;
            if handle == self.vmalloc_handle.get() {
                let start = 0xffff_8000_9000_0000 + handle * 0x2000;
                let mut f = OpenOptions::new()
                    .append(true)
                    .open(&self.vmallocinfo)
                    .unwrap();
                writeln!(
                    f,
                    "{start:#x}-{:#x}    8192 unpurged vm_area",
                    start + 0x2000
                )
                .unwrap();
            }
            Ok(free)
        })
    }

    fn list_page(&self, after: u64, entries: &mut [Alloc]) -> kmemlab::Result<ListPage> {
        uncounted(|| self.mock.list_page(after, entries))
    }

    fn stats(&self) -> kmemlab::Result<Stats> {
        uncounted(|| self.mock.stats())
    }

    fn bench(&self, kind: Kind, size: u64, flags: Flags, iters: u32) -> kmemlab::Result<Bench> {
        uncounted(|| self.mock.bench(kind, size, flags, iters))
    }

    fn bench_hist(
        &self,
        kind: Kind,
        size: u64,
        flags: Flags,
        iters: u32,
    ) -> kmemlab::Result<(Bench, kmemlab::histogram::BenchHistograms)> {
        uncounted(|| self.mock.bench_hist(kind, size, flags, iters))
    }

    fn trigger(&self, count: u32) -> kmemlab::Result<Trigger> {
        uncounted(|| self.mock.trigger(count))
    }

    fn alloc_batch(&self, entries: &mut [Alloc]) -> kmemlab::Result<BatchOutcome> {
        uncounted(|| self.mock.alloc_batch(entries))
    }

    fn free_batch(&self, entries: &mut [Free]) -> kmemlab::Result<BatchOutcome> {
        uncounted(|| self.mock.free_batch(entries))
    }

    fn nop(&self) -> kmemlab::Result<()> {
        uncounted(|| self.mock.nop())
    }
}

/// The button: every wake-up reads the next count, then would block.
struct Button {
    count: u32,
    pressed: bool,
}

impl IrqSource for Button {
    fn read_count(&mut self) -> kmemlab::Result<Option<u32>> {
        self.pressed = !self.pressed;
        if self.pressed {
            self.count += 1;
            Ok(Some(self.count))
        } else {
            Ok(None)
        }
    }

    fn enable(&mut self) -> kmemlab::Result<()> {
        Ok(())
    }
}

/// The log. It keeps nothing; it counts whole lines, and the alloc lines that carry the
/// vmallocinfo line of [`AREA`]. From press [`WARM_UP`] on, at the last line of each
/// round (a free line, which holds no memory of its own), it reads the counts of the
/// thread that writes, the daemon's.
#[derive(Clone, Default)]
struct Log {
    lines: u64,
    found_area: u64,
    first: Option<Counts>,
    last: Option<Counts>,
    most_calls: u64,
}

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        assert_eq!(buf.iter().filter(|b| **b == b'\n').count(), 1);
        assert_eq!(buf.last(), Some(&b'\n'));
        self.lines += 1;
        let found = b"\"vmallocinfo\":\"0xffff800082000000-0xffff800082002000    8192 kmemlab";
        if buf.windows(found.len()).any(|w| w == found) {
            self.found_area += 1;
        }
        // The first line is `start`; then one line per press.
        let press = self.lines - 1;
        if (WARM_UP..=WARM_UP + ROUNDS * ROUND).contains(&press) && press % ROUND == 0 {
            let now = counts();
            match self.last {
                Some(last) => self.most_calls = self.most_calls.max(now.calls - last.calls),
                None => {
                    self.first = Some(now);
                    reset_peak();
                }
            }
            self.last = Some(now);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A `/proc/vmallocinfo` of 300 live areas, [`AREA`] among them, about 20 KiB.
fn vmallocinfo(dir: &Path) -> PathBuf {
    let mut text = String::new();
    for i in 0..300u64 {
        let start = 0xffff_8000_8000_0000 + i * 0x3000;
        if i == 150 {
            text.push_str(&format!(
                "{AREA:#x}-{:#x}    8192 kmemlab_alloc+0x1c/0x40 [kmemlab] pages=1 vmalloc N0=1\n",
                AREA + 0x2000
            ));
        }
        text.push_str(&format!(
            "{start:#x}-{:#x}   12288 bpf_prog_alloc+0x44/0xd0 pages=2 vmalloc N0=2\n",
            start + 0x3000
        ));
    }
    let path = dir.join("vmallocinfo");
    std::fs::write(&path, text).unwrap();
    path
}

fn start_info() -> StartInfo {
    StartInfo {
        uio: "/dev/uio0".into(),
        device: "/dev/kmemlab".into(),
        irq_count: 0,
    }
}

fn module(vmallocinfo: &Path) -> Module {
    Module {
        mock: MockDevice::new(),
        vmallocinfo: vmallocinfo.to_path_buf(),
        vmalloc_handle: Cell::new(0),
    }
}

/// Checks what the log saw of the measured window; `grown` is how much vmallocinfo grew.
fn check(what: &str, log: &Log, grown: u64) {
    let (first, last) = (log.first.unwrap(), log.last.unwrap());
    let presses = ROUNDS * ROUND;
    let calls = last.calls - first.calls;
    let transient = last.peak_bytes - first.live_bytes;
    eprintln!(
        "{what}: {presses} presses after {WARM_UP}, while vmallocinfo grew by {grown} bytes:\n  \
         live bytes {} -> {}, live blocks {} -> {}\n  peak above live: {transient} bytes\n  \
         allocation calls: {calls} ({:.2} per press, at most {} per round of {ROUND})",
        first.live_bytes,
        last.live_bytes,
        first.live_blocks,
        last.live_blocks,
        calls as f64 / presses as f64,
        log.most_calls,
    );

    // Every vmalloc line (one press in six) found its area in vmallocinfo.
    assert_eq!(log.found_area, (WARM_UP + presses) / ROUND);
    // The fixture grew as Linux's does, by one unpurged area per vmalloc press.
    assert!(grown >= presses / ROUND * 60, "{grown}");
    // Nothing is kept from press to press: not one byte, not one block. No slack: what
    // the daemon reuses (its line buffers) grew to the longest line in the warm-up, and
    // the lines of the window are at most a digit or two longer.
    assert_eq!(last.live_bytes, first.live_bytes);
    assert_eq!(last.live_blocks, first.live_blocks);
    // A press's transient memory is its event's strings and at most one vmallocinfo
    // line: about 200 bytes, with room here for longer lines, however long vmallocinfo
    // has grown (300 KB by the end; a press that read it whole held all of it).
    assert!(
        transient <= 2_048,
        "{transient} bytes above live at the peak"
    );
    // The same number of allocation calls in every round, at most 14: each alloc
    // line's strings, one allocation each (kind, gfp names, vaddr, phys, and dma for
    // dma_coherent), and the vmallocinfo line of the vmalloc one. No free line and
    // nothing else in a press allocates.
    assert!(
        log.most_calls <= 14,
        "{} calls in one round",
        log.most_calls
    );
    assert_eq!(calls, ROUNDS * log.most_calls);
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// The daemon's reaction to each press ([`Daemon::on_readable`]), driven directly.
#[test]
fn presses_keep_no_memory_and_allocate_a_fixed_amount() {
    let tmp = tempfile::tempdir().unwrap();
    let path = vmallocinfo(tmp.path());
    let button = Button {
        count: 0,
        pressed: false,
    };
    let mut d = Daemon::new(
        module(&path),
        button,
        EventWriter::new(Log::default()),
        start_info(),
    )
    .with_vmallocinfo(Some(path.clone()))
    .with_clock(|| 1_000_000);
    d.start().unwrap();
    let size = file_size(&path);
    for _ in 0..WARM_UP + ROUNDS * ROUND {
        assert_eq!(d.on_readable().unwrap(), 1);
    }
    check(
        "Daemon::on_readable",
        d.out().get_ref(),
        file_size(&path) - size,
    );
}

/// The same through the event loop ([`run`]) that kmemlabd runs: `mio`, the interrupt
/// count read from a socket standing in for the UIO device, the re-enable written back,
/// and systemd notifications off, as in the benchmark. Each count is written once the
/// previous one's re-enable is read, so that no press coalesces with the next.
#[test]
fn the_event_loop_keeps_no_memory_either() {
    let tmp = tempfile::tempdir().unwrap();
    let path = vmallocinfo(tmp.path());
    let size = file_size(&path);
    let (mut uio, uio_daemon) = UnixStream::pair().unwrap();
    let (tx, rx) = mpsc::channel();
    let vmallocinfo = path.clone();
    let daemon = thread::spawn(move || {
        let mut signals = Signals::new().unwrap();
        tx.send(pthread_self()).unwrap();
        let uio = Uio::from_file(File::from(OwnedFd::from(uio_daemon)), "/dev/uio0", 0).unwrap();
        let mut d = Daemon::new(
            module(&vmallocinfo),
            uio,
            EventWriter::new(Log::default()),
            start_info(),
        )
        .with_vmallocinfo(Some(vmallocinfo));
        assert_eq!(run(&mut d, &mut signals).unwrap(), StopReason::Sigterm);
        d.out().get_ref().clone()
    });
    let tid = rx.recv().unwrap();
    let mut enable = [0u8; 4];
    // The first re-enable comes with the start line.
    uio.read_exact(&mut enable).unwrap();
    for count in 1..=(WARM_UP + ROUNDS * ROUND) as u32 {
        uio.write_all(&count.to_ne_bytes()).unwrap();
        uio.read_exact(&mut enable).unwrap();
        assert_eq!(u32::from_ne_bytes(enable), 1);
    }
    pthread_kill(tid, Signal::SIGTERM).unwrap();
    let log = daemon.join().unwrap();
    check("run", &log, file_size(&path) - size);
}
