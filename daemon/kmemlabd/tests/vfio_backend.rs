//! The VFIO backend's interrupt source in the daemon's event loop, on the host: a real
//! eventfd signalled by the test as VFIO's interrupt handler would, recording doubles for
//! the PL061's registers and the VFIO interrupt control, and a mock `/dev/kmemlab`. What
//! this cannot show (the ioctls, the mapping, a real interrupt) is the VM tests' part.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use kmemlab::vfio::pl061::{GPIOIC, GPIOIE, GPIOMIS};
use kmemlab::vfio::testing::{Access, FakeControl, FakeRegs, Log};
use kmemlab::vfio::VfioIrq;
use kmemlab::MockDevice;
use kmemlabd::{run, Daemon, EventWriter, Signals, StartInfo, StopReason, VfioStart};
use nix::sys::pthread::{pthread_kill, pthread_self, Pthread};
use nix::sys::signal::Signal;
use serde_json::Value;

struct Harness {
    /// A second descriptor of the daemon's eventfd: writing 1 is one interrupt.
    eventfd: File,
    /// The PL061's registers, shared with the daemon's source.
    regs: FakeRegs,
    /// Register accesses and interrupt controls, in order.
    log: Log,
    lines: BufReader<UnixStream>,
    thread: thread::JoinHandle<kmemlab::Result<StopReason>>,
    tid: Pthread,
}

impl Harness {
    fn start() -> Self {
        let (lines, out_daemon) = UnixStream::pair().unwrap();
        let (tx, rx) = mpsc::channel();
        let thread = thread::spawn(move || {
            let mut signals = Signals::new()?;
            let log = Log::default();
            let regs = FakeRegs::with_log(&log);
            let mut irq = VfioIrq::new(
                regs.clone(),
                FakeControl::with_log(&log),
                3,
                "9030000.pl061 line 3",
            )?;
            irq.attach()?;
            let eventfd = irq.as_fd().try_clone_to_owned().unwrap();
            tx.send((pthread_self(), eventfd, regs, log)).unwrap();
            let out = EventWriter::new(File::from(OwnedFd::from(out_daemon)));
            let start = StartInfo {
                uio: String::new(),
                device: "/dev/kmemlab".into(),
                irq_count: irq.count(),
            };
            let mut daemon = Daemon::new(MockDevice::new(), irq, out, start).with_vfio(VfioStart {
                group: "/dev/vfio/noiommu-0".into(),
                bus: "amba".into(),
                device: "9030000.pl061".into(),
                driver: "vfio-amba".into(),
                line: 3,
            });
            run(&mut daemon, &mut signals)
        });
        let (tid, eventfd, regs, log) = rx.recv().unwrap();
        Self {
            eventfd: File::from(eventfd),
            regs,
            log,
            lines: BufReader::new(lines),
            thread,
            tid,
        }
    }

    fn line(&mut self) -> Value {
        let mut line = String::new();
        self.lines.read_line(&mut line).unwrap();
        assert!(line.ends_with('\n'), "torn or missing line: {line:?}");
        serde_json::from_str(&line).unwrap()
    }

    /// One interrupt with `mis` in the controller's masked status.
    fn interrupt(&mut self, mis: u32) {
        self.regs.set(GPIOMIS, mis);
        self.eventfd.write_all(&1u64.to_ne_bytes()).unwrap();
    }

    /// The accesses until `last` is among them (the daemon thread runs on meanwhile).
    fn accesses_until(&self, last: Access) -> Vec<Access> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        while !seen.contains(&last) {
            assert!(Instant::now() < deadline, "no {last:?} in {seen:?}");
            seen.extend(self.log.take());
            thread::sleep(Duration::from_millis(1));
        }
        seen
    }
}

#[test]
fn presses_through_the_eventfd_then_sigterm() {
    let mut h = Harness::start();
    let start = h.line();
    assert_eq!(start["event"], "start");
    assert_eq!(start["backend"], "vfio");
    assert!(start["uio"].is_null());
    assert_eq!(start["vfio"]["device"], "9030000.pl061");
    assert_eq!(start["vfio"]["line"], 3);
    assert_eq!(start["ring"], false);
    assert_eq!(start["irq_count"], 0);
    // Attached before the start: line 3 programmed, then the eventfd attached; the start
    // unmasks nothing (nothing was masked).
    let attach = h.log.take();
    assert_eq!(attach[8], Access::Write(GPIOIC, 0x08));
    assert_eq!(attach[10], Access::Write(GPIOIE, 0x08));
    assert!(matches!(attach[11], Access::SetTrigger(_)), "{attach:?}");
    assert_eq!(attach.len(), 12, "{attach:?}");

    for (count, event, kind) in [(1, "alloc", "kmalloc"), (2, "free", "kmalloc")] {
        h.interrupt(0x08);
        let v = h.line();
        assert_eq!(v["event"], event);
        assert_eq!(v["kind"], kind);
        assert_eq!(v["seq"], count);
        assert_eq!(v["irq_count"], count);
        assert_eq!(v["missed"], 0);
        // No kernel timestamp reaches the daemon through VFIO.
        assert!(v["irq_to_wake_ns"].is_null());
        assert!(v["irq_ktime_ns"].is_null());
        assert!(v["source"].is_null());
        // Acknowledged in the controller, then unmasked, before the line was written.
        assert_eq!(
            h.log.take(),
            [
                Access::Read(GPIOMIS, 0x08),
                Access::Write(GPIOIC, 0x08),
                Access::Unmask
            ]
        );
    }

    // Another line's interrupt: acknowledged and unmasked, no line, no count.
    h.interrupt(0x10);
    assert_eq!(
        h.accesses_until(Access::Unmask),
        [
            Access::Read(GPIOMIS, 0x10),
            Access::Write(GPIOIC, 0x10),
            Access::Unmask
        ]
    );
    h.interrupt(0x08);
    let v = h.line();
    assert_eq!(
        (v["event"].as_str(), v["seq"].as_u64()),
        (Some("alloc"), Some(3))
    );
    assert_eq!(v["irq_count"], 3);
    assert_eq!(v["kind"], "vmalloc");

    pthread_kill(h.tid, Signal::SIGTERM).unwrap();
    let free = h.line();
    assert_eq!(free["event"], "free");
    assert!(free["seq"].is_null());
    let summary = h.line();
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["presses"], 3);
    assert_eq!(summary["events"], 3);
    let stop = h.line();
    assert_eq!(stop["event"], "stop");
    assert_eq!(stop["reason"], "SIGTERM");
    assert_eq!(h.thread.join().unwrap().unwrap(), StopReason::Sigterm);
    // The daemon dropped its source: line 3's interrupt off in the controller, then the
    // VFIO interrupt disabled.
    let tail = h.log.take();
    assert_eq!(
        tail[tail.len() - 4..],
        [
            Access::Read(GPIOIE, 0x08),
            Access::Write(GPIOIE, 0),
            Access::Write(GPIOIC, 0x08),
            Access::Disable,
        ],
        "{tail:?}"
    );
}
