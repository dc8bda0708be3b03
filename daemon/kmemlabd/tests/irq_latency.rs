//! Interrupt-to-wake latency and the press's source end to end: the daemon's event loop
//! maps a "heap" (a regular file behind a fake sysfs UIO entry, shared with this test
//! through the page cache) and reads the interrupt ring the test writes, as the kernel
//! would.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc;
use std::thread;

use kmemlab::ring::builder::RingBuilder;
use kmemlab::uapi::{SOURCE_IRQ, SOURCE_TRIGGER};
use kmemlab::{monotonic_ns, MockDevice, Uio, UioInfo};
use kmemlabd::{run, Daemon, EventWriter, Signals, StartInfo};
use nix::sys::pthread::{pthread_kill, pthread_self};
use nix::sys::signal::Signal;
use serde_json::Value;

/// A fake `/sys/class/uio/uio0` whose map 0 is `heap`.
fn fake_uio(root: &Path, heap: &Path, len: usize) -> UioInfo {
    let dir = root.join("uio0");
    fs::create_dir_all(dir.join("maps/map0")).unwrap();
    fs::write(dir.join("name"), "kmemlab\n").unwrap();
    fs::write(dir.join("event"), "0\n").unwrap();
    fs::write(dir.join("maps/map0/size"), format!("{len:#x}\n")).unwrap();
    UioInfo {
        index: 0,
        name: "kmemlab".into(),
        sysfs_dir: dir,
        dev_path: heap.to_path_buf(),
    }
}

#[test]
fn irq_to_wake_comes_from_the_mapped_ring() {
    let tmp = tempfile::tempdir().unwrap();
    let heap_path = tmp.path().join("heap");
    let len = 64 << 10;
    let mut ring = RingBuilder::standard();
    let mut bytes = ring.bytes().to_vec();
    bytes.resize(len, 0);
    fs::write(&heap_path, &bytes).unwrap();
    let heap = OpenOptions::new().write(true).open(&heap_path).unwrap();
    let info = fake_uio(tmp.path(), &heap_path, len);

    let (mut uio, uio_daemon) = UnixStream::pair().unwrap();
    let (lines, out_daemon) = UnixStream::pair().unwrap();
    let (tx, rx) = mpsc::channel();
    let daemon = thread::spawn(move || {
        let mut signals = Signals::new()?;
        tx.send(pthread_self()).unwrap();
        // As kmemlabd maps it: writable, for the atomic loads.
        let map = Uio::open(&info)?.map(0)?;
        let irq = Uio::from_file(File::from(OwnedFd::from(uio_daemon)), "/dev/uio0", 0)?;
        let out = EventWriter::new(File::from(OwnedFd::from(out_daemon)));
        let start = StartInfo {
            uio: "/dev/uio0".into(),
            device: "/dev/kmemlab".into(),
            irq_count: 0,
        };
        let mut d = Daemon::new(MockDevice::new(), irq, out, start)
            .with_vmallocinfo(None)
            .with_ring(Box::new(map));
        run(&mut d, &mut signals)
    });
    let tid = rx.recv().unwrap();
    let mut lines = BufReader::new(lines);
    let mut line = || -> Value {
        let mut l = String::new();
        lines.read_line(&mut l).unwrap();
        serde_json::from_str(&l).unwrap()
    };
    let start = line();
    assert_eq!(start["ring"], true);
    let mut buf = [0u8; 4];
    std::io::Read::read_exact(&mut uio, &mut buf).unwrap(); // the start's enable

    for (seq, source, name) in [
        (1u64, SOURCE_TRIGGER, "trigger"),
        (2, SOURCE_IRQ, "button"),
        (3, SOURCE_TRIGGER, "trigger"),
    ] {
        // The "kernel": record, then head, then the count.
        let t = monotonic_ns();
        ring.push(seq, t, source);
        heap.write_all_at(ring.bytes(), 0).unwrap();
        uio.write_all(&(seq as u32).to_ne_bytes()).unwrap();
        std::io::Read::read_exact(&mut uio, &mut buf).unwrap();
        let v = line();
        assert_eq!(v["seq"], seq);
        let lat = v["irq_to_wake_ns"]
            .as_u64()
            .unwrap_or_else(|| panic!("no latency: {v}"));
        assert!(lat < 10_000_000_000, "{lat}");
        assert!(monotonic_ns() - t >= lat);
        // Source, timestamp and latency all from the record of this count.
        assert_eq!(v["source"], name, "{v}");
        assert_eq!(v["irq_ktime_ns"].as_u64(), Some(t), "{v}");
    }

    // A count the ring has no record of: null, and the daemon goes on.
    uio.write_all(&5u32.to_ne_bytes()).unwrap();
    std::io::Read::read_exact(&mut uio, &mut buf).unwrap();
    let c = line();
    assert_eq!(
        (c["event"].as_str(), c["missed"].as_u64()),
        (Some("coalesced"), Some(1))
    );
    let v = line();
    assert_eq!(
        (v["seq"].as_u64(), v["missed"].as_u64()),
        (Some(4), Some(1))
    );
    for key in ["irq_to_wake_ns", "source", "irq_ktime_ns"] {
        assert!(v[key].is_null(), "{key}: {v}");
    }

    pthread_kill(tid, Signal::SIGTERM).unwrap();
    loop {
        if line()["event"] == "stop" {
            break;
        }
    }
    daemon.join().unwrap().unwrap();
}
