//! Test doubles of the daemon's unit tests: a scripted interrupt source and an output
//! that records each line.

mod daemon_tests;
mod press_tests;
mod reload_tests;
mod vmallocinfo_tests;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Write};
use std::rc::Rc;

use kmemlab::error::{Error, Result};
use kmemlab::uio::IrqSource;
use kmemlab::MockDevice;
use nix::errno::Errno;
use serde_json::Value;

use crate::daemon::{Daemon, StartInfo};
use crate::output::EventWriter;

/// What happened, in order, across the interrupt source and the output.
pub(crate) type Log = Rc<RefCell<Vec<String>>>;

/// Every JSON line written, parsed.
pub(crate) type Lines = Rc<RefCell<Vec<Value>>>;

/// A scripted interrupt source: `Some(count)` reads, `None` would block.
pub(crate) struct MockIrq {
    pub(crate) reads: VecDeque<Option<u32>>,
    pub(crate) fail_enable: bool,
    pub(crate) log: Log,
}

impl IrqSource for MockIrq {
    fn read_count(&mut self) -> Result<Option<u32>> {
        let r = self.reads.pop_front().flatten();
        self.log.borrow_mut().push(match r {
            Some(c) => format!("read {c}"),
            None => "would block".into(),
        });
        Ok(r)
    }

    fn enable(&mut self) -> Result<()> {
        if self.fail_enable {
            return Err(Error::IrqEnable {
                path: "/dev/uio0".into(),
                source: io::Error::from(Errno::EIO),
            });
        }
        self.log.borrow_mut().push("enable".into());
        Ok(())
    }
}

/// An output that logs a summary of each line (each write is one whole line) and
/// keeps the parsed line.
pub(crate) struct LogWriter(Log, Lines);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let line = std::str::from_utf8(buf).unwrap();
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let v: Value = serde_json::from_str(line).unwrap();
        let mut s = format!("line {}", v["event"].as_str().unwrap());
        for key in [
            "seq",
            "irq_count",
            "missed",
            "kind",
            "handle",
            "op",
            "reason",
            "abi_version",
            "error",
        ] {
            if let Some(x) = v.get(key) {
                let x = match x {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                s.push_str(&format!(" {key}={x}"));
            }
        }
        self.0.borrow_mut().push(s);
        self.1.borrow_mut().push(v);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub(crate) type TestDaemon = Daemon<MockDevice, MockIrq, LogWriter>;

pub(crate) fn daemon_with(
    device: MockDevice,
    initial: u32,
    reads: &[Option<u32>],
) -> (TestDaemon, Log, Lines) {
    let log = Log::default();
    let lines = Lines::default();
    let irq = MockIrq {
        reads: reads.iter().copied().collect(),
        fail_enable: false,
        log: log.clone(),
    };
    let start = StartInfo {
        uio: "/dev/uio0".into(),
        device: "/dev/kmemlab".into(),
        irq_count: initial,
    };
    let out = EventWriter::new(LogWriter(log.clone(), lines.clone()));
    let d = Daemon::new(device, irq, out, start)
        .with_vmallocinfo(None)
        .with_clock(|| 1_000_000);
    (d, log, lines)
}

pub(crate) fn take(log: &Log) -> Vec<String> {
    std::mem::take(&mut *log.borrow_mut())
}

pub(crate) fn take_lines(log: &Log) -> Vec<String> {
    take(log)
        .into_iter()
        .filter(|l| l.starts_with("line"))
        .collect()
}
