//! The daemon's event loop end to end, with a socket standing in for the UIO device and
//! a mock `/dev/kmemlab`: start line, presses running the plan, re-enables, SIGTERM and
//! errors.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::thread;

use kmemlab::{MockDevice, Uio};
use kmemlabd::{run, Daemon, EventWriter, Signals, StartInfo, StopReason};
use nix::sys::pthread::{pthread_kill, pthread_self};
use nix::sys::signal::Signal;
use serde_json::Value;

struct Harness {
    /// Our end of the UIO stand-in: we write counts, the daemon writes 1s.
    uio: UnixStream,
    /// The daemon's JSON lines.
    lines: BufReader<UnixStream>,
    thread: thread::JoinHandle<kmemlab::Result<StopReason>>,
    tid: nix::sys::pthread::Pthread,
}

impl Harness {
    fn start(initial: u32) -> Self {
        let (uio, uio_daemon) = UnixStream::pair().unwrap();
        let (lines, out_daemon) = UnixStream::pair().unwrap();
        let (tx, rx) = mpsc::channel();
        let thread = thread::spawn(move || {
            // Blocks SIGTERM/SIGINT in this thread only; pthread_kill targets it.
            let mut signals = Signals::new()?;
            tx.send(pthread_self()).unwrap();
            let uio = Uio::from_file(File::from(OwnedFd::from(uio_daemon)), "/dev/uio0", initial)?;
            let out = EventWriter::new(File::from(OwnedFd::from(out_daemon)));
            let start = StartInfo {
                uio: "/dev/uio0".into(),
                device: "/dev/kmemlab".into(),
                irq_count: initial,
            };
            let mut daemon = Daemon::new(MockDevice::new(), uio, out, start);
            run(&mut daemon, &mut signals)
        });
        let tid = rx.recv().unwrap();
        Self {
            uio,
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

    fn interrupt(&mut self, count: u32) {
        self.uio.write_all(&count.to_ne_bytes()).unwrap();
    }

    fn expect_enable(&mut self) {
        let mut buf = [0u8; 4];
        self.uio.read_exact(&mut buf).unwrap();
        assert_eq!(u32::from_ne_bytes(buf), 1);
    }
}

#[test]
fn presses_then_sigterm() {
    let mut h = Harness::start(0);
    let start = h.line();
    assert_eq!(start["event"], "start");
    assert_eq!(start["abi_version"], kmemlab::uapi::ABI_VERSION);
    assert_eq!(start["uio"], "/dev/uio0");
    assert_eq!(start["backend"], "uio");
    assert!(start["vfio"].is_null());
    assert_eq!(start["pid"], std::process::id());
    assert_eq!(start["irq_count"], 0);
    h.expect_enable();

    for (count, missed, event, kind) in [
        (1, 0, "alloc", "kmalloc"),
        (2, 0, "free", "kmalloc"),
        (5, 2, "alloc", "vmalloc"),
    ] {
        h.interrupt(count);
        // The interrupt is re-enabled before the line is written.
        h.expect_enable();
        if missed > 0 {
            let c = h.line();
            assert_eq!(c["event"], "coalesced");
            assert_eq!(c["missed"], missed);
        }
        let v = h.line();
        assert_eq!(v["event"], event);
        assert_eq!(v["kind"], kind);
        assert_eq!(v["irq_count"], count);
        assert_eq!(v["missed"], missed);
        assert!(v["seq"].as_u64().is_some());
        // No heap mapped in this harness.
        assert!(v["irq_to_wake_ns"].is_null());
        assert!(v["ts_ns"].as_u64().unwrap() >= start["ts_ns"].as_u64().unwrap());
    }

    pthread_kill(h.tid, Signal::SIGTERM).unwrap();
    // The vmalloc step is still held: freed at shutdown, outside any press.
    let free = h.line();
    assert_eq!(free["event"], "free");
    assert_eq!(free["kind"], "vmalloc");
    assert!(free["seq"].is_null());
    let summary = h.line();
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["presses"], 3);
    assert_eq!(summary["coalesced"], 2);
    assert_eq!(summary["events"], 5);
    assert_eq!(summary["kinds"]["vmalloc"]["frees"], 1);
    let stop = h.line();
    assert_eq!(stop["event"], "stop");
    assert_eq!(stop["reason"], "SIGTERM");
    assert_eq!(stop["irq_count"], 5);
    assert_eq!(h.thread.join().unwrap().unwrap(), StopReason::Sigterm);
}

#[test]
fn sigint_before_any_interrupt() {
    let mut h = Harness::start(7);
    assert_eq!(h.line()["irq_count"], 7);
    pthread_kill(h.tid, Signal::SIGINT).unwrap();
    assert_eq!(h.line()["event"], "summary");
    let stop = h.line();
    assert_eq!(stop["reason"], "SIGINT");
    assert_eq!(stop["irq_count"], 7);
    assert_eq!(h.thread.join().unwrap().unwrap(), StopReason::Sigint);
}

#[test]
fn uio_failure_ends_with_error_summary_and_stop() {
    let mut h = Harness::start(0);
    assert_eq!(h.line()["event"], "start");
    h.expect_enable();
    h.interrupt(1);
    h.expect_enable();
    assert_eq!(h.line()["event"], "alloc");
    // A 2-byte read is not an event count.
    h.uio.write_all(&[1, 0]).unwrap();
    let v = h.line();
    assert_eq!(v["event"], "error");
    assert_eq!(v["error"], "EIO");
    assert!(v["message"]
        .as_str()
        .unwrap()
        .starts_with("failed to read the interrupt count from /dev/uio0"));
    // Then what it held is freed, and the summary and stop lines say it ended.
    let free = h.line();
    assert_eq!(
        (&free["event"], &free["seq"]),
        (&"free".into(), &Value::Null)
    );
    let summary = h.line();
    assert_eq!(
        (&summary["event"], &summary["presses"]),
        (&"summary".into(), &1.into())
    );
    let stop = h.line();
    assert_eq!(
        (&stop["event"], &stop["reason"]),
        (&"stop".into(), &"error".into())
    );
    assert!(h.thread.join().unwrap().is_err());
}

/// The device going away (the stand-in's other end closed: a read of 0 bytes, as a
/// vanished device's read fails) is an error line, summary and stop, never silence.
#[test]
fn device_gone_ends_with_error_summary_and_stop() {
    let mut h = Harness::start(3);
    assert_eq!(h.line()["event"], "start");
    h.expect_enable();
    h.uio.shutdown(std::net::Shutdown::Both).unwrap();
    let events: Vec<String> = (0..3)
        .map(|_| h.line()["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(events, ["error", "summary", "stop"]);
    assert!(h.thread.join().unwrap().is_err());
}

/// An interrupt storm (the UIO stand-in never runs dry while a writer keeps it full)
/// does not hold off SIGTERM: the daemon stops while the storm goes on. Without the
/// batches of `UIO_BATCH` reads it would read until the writer gives up.
#[test]
fn a_storm_does_not_starve_sigterm() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let mut h = Harness::start(0);
    assert_eq!(h.line()["event"], "start");
    // Drains the daemon's re-enables, so that its writes never block.
    let mut enables = h.uio.try_clone().unwrap();
    let drain = thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while matches!(enables.read(&mut buf), Ok(n) if n > 0) {}
    });
    let giving_up = Arc::new(AtomicBool::new(false));
    let mut storm = h.uio.try_clone().unwrap();
    let stop_storm = giving_up.clone();
    let writer = thread::spawn(move || {
        let mut count = 0u32;
        let mut chunk = Vec::with_capacity(4 * 1024);
        while !stop_storm.load(Ordering::Relaxed) {
            chunk.clear();
            for _ in 0..1024 {
                count += 1;
                chunk.extend(count.to_ne_bytes());
            }
            if storm.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    // Well into the storm.
    for _ in 0..100 {
        assert!(h.line()["seq"].as_u64().is_some());
    }
    pthread_kill(h.tid, Signal::SIGTERM).unwrap();
    // Lines already written wait in the socket (a few hundred at most); then summary
    // and stop must come while the writer still keeps the device readable.
    let mut after = 0;
    let stop = loop {
        let v = h.line();
        if v["event"] == "stop" {
            break v;
        }
        after += 1;
        assert!(after < 5000, "no stop line 5000 lines after SIGTERM");
    };
    assert_eq!(stop["reason"], "SIGTERM");
    assert_eq!(h.thread.join().unwrap().unwrap(), StopReason::Sigterm);
    giving_up.store(true, Ordering::Relaxed);
    h.uio.shutdown(std::net::Shutdown::Both).unwrap();
    writer.join().unwrap();
    drain.join().unwrap();
}
