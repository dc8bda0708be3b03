//! The daemon's JSON lines: one object per line, tagged by `"event"`, keys in
//! snake_case. Every event carries `ts_ns`: `CLOCK_REALTIME` in nanoseconds since the
//! Unix epoch, as an integer (it exceeds 2^53: parse it as a 64-bit integer, not a
//! double).
//!
//! ```text
//! {"event":"start","ts_ns":1767225600000000000,"pid":81,"uio":"/dev/uio0","device":"/dev/kmemlab","abi_version":1,"irq_count":0}
//! {"event":"irq","ts_ns":1767225601000000000,"irq_count":1,"missed":0}
//! {"event":"stop","ts_ns":1767225602000000000,"irq_count":1,"reason":"SIGTERM"}
//! {"event":"error","ts_ns":1767225602000000000,"error":"EIO","message":"failed to read the interrupt count from /dev/uio0: Input/output error (os error 5)"}
//! ```

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::error::{Error, Result};

/// Why the daemon stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum StopReason {
    /// `SIGTERM` (systemd stop, `kill`).
    #[serde(rename = "SIGTERM")]
    Sigterm,
    /// `SIGINT` (Ctrl-C).
    #[serde(rename = "SIGINT")]
    Sigint,
}

/// One line of the daemon's JSON stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The daemon is set up and about to wait for interrupts.
    Start {
        /// Timestamp, `CLOCK_REALTIME` ns.
        ts_ns: u64,
        /// The daemon's process id.
        pid: u32,
        /// The UIO device node, e.g. `/dev/uio0`.
        uio: String,
        /// The misc device node, e.g. `/dev/kmemlab`.
        device: String,
        /// The module's ABI version (INFO).
        abi_version: u32,
        /// The UIO interrupt count at start; later counts are relative to it.
        irq_count: u32,
    },
    /// An interrupt, read from the UIO device.
    Irq {
        /// Timestamp, `CLOCK_REALTIME` ns.
        ts_ns: u64,
        /// The UIO event count (the kernel's, wrapping at 2^32).
        irq_count: u32,
        /// Interrupts that came and went since the previous line without a read of
        /// their own (coalesced).
        missed: u32,
    },
    /// The daemon stopped cleanly.
    Stop {
        /// Timestamp, `CLOCK_REALTIME` ns.
        ts_ns: u64,
        /// The last UIO event count read.
        irq_count: u32,
        /// The signal that stopped it.
        reason: StopReason,
    },
    /// A fatal error; the daemon exits after this line.
    Error {
        /// Timestamp, `CLOCK_REALTIME` ns.
        ts_ns: u64,
        /// The errno name, e.g. `ENOENT`.
        error: String,
        /// The error message with its causes.
        message: String,
    },
}

impl Event {
    /// The `error` event for `err`.
    pub fn error(ts_ns: u64, err: &Error) -> Self {
        Event::Error {
            ts_ns,
            error: err.errno_name(),
            message: err.report(),
        }
    }

    /// The event as one JSON line, newline included.
    pub fn to_line(&self) -> Result<String> {
        let mut line = serde_json::to_string(self).map_err(|source| Error::Json { source })?;
        line.push('\n');
        Ok(line)
    }
}

/// `CLOCK_REALTIME` now, in nanoseconds since the Unix epoch (0 before 1970).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Writes events as JSON lines, each with a single `write_all` of the whole line.
///
/// Give it an unbuffered writer (a `File`, including a dup of stdout), so each line is
/// one write(2) and a crash never leaves a torn line.
#[derive(Debug)]
pub struct EventWriter<W: Write> {
    out: W,
}

impl<W: Write> EventWriter<W> {
    /// Wraps `out`.
    pub fn new(out: W) -> Self {
        Self { out }
    }

    /// Writes one event line.
    pub fn emit(&mut self, event: &Event) -> Result<()> {
        let line = event.to_line()?;
        self.out
            .write_all(line.as_bytes())
            .map_err(|source| Error::Output { source })
    }

    /// The underlying writer.
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// Unwraps the writer.
    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use serde_json::{json, Value};

    use super::*;

    fn parse(ev: &Event) -> Value {
        let line = ev.to_line().unwrap();
        assert!(line.ends_with('\n'));
        assert_eq!(line.matches('\n').count(), 1);
        serde_json::from_str(&line).unwrap()
    }

    #[test]
    fn start_shape() {
        let ev = Event::Start {
            ts_ns: 1_767_225_600_000_000_000,
            pid: 81,
            uio: "/dev/uio0".into(),
            device: "/dev/kmemlab".into(),
            abi_version: 1,
            irq_count: 0,
        };
        assert_eq!(
            ev.to_line().unwrap(),
            "{\"event\":\"start\",\"ts_ns\":1767225600000000000,\"pid\":81,\
             \"uio\":\"/dev/uio0\",\"device\":\"/dev/kmemlab\",\"abi_version\":1,\
             \"irq_count\":0}\n"
        );
    }

    #[test]
    fn irq_shape() {
        let ev = Event::Irq {
            ts_ns: 5,
            irq_count: 3,
            missed: 1,
        };
        assert_eq!(
            parse(&ev),
            json!({"event": "irq", "ts_ns": 5, "irq_count": 3, "missed": 1})
        );
    }

    #[test]
    fn stop_shape() {
        for (reason, name) in [
            (StopReason::Sigterm, "SIGTERM"),
            (StopReason::Sigint, "SIGINT"),
        ] {
            let ev = Event::Stop {
                ts_ns: 9,
                irq_count: u32::MAX,
                reason,
            };
            assert_eq!(
                parse(&ev),
                json!({"event": "stop", "ts_ns": 9, "irq_count": u32::MAX, "reason": name})
            );
        }
    }

    #[test]
    fn error_shape() {
        let err = Error::IrqRead {
            path: "/dev/uio0".into(),
            source: io::Error::from_raw_os_error(nix::errno::Errno::EIO as i32),
        };
        let v = parse(&Event::error(7, &err));
        assert_eq!(v["event"], "error");
        assert_eq!(v["ts_ns"], 7);
        assert_eq!(v["error"], "EIO");
        assert!(v["message"]
            .as_str()
            .unwrap()
            .starts_with("failed to read the interrupt count from /dev/uio0: "));
        assert_eq!(v.as_object().unwrap().len(), 4);
    }

    #[test]
    fn messages_with_newlines_stay_on_one_line() {
        let ev = Event::Error {
            ts_ns: 1,
            error: "EIO".into(),
            message: "a\nb\"c".into(),
        };
        assert_eq!(ev.to_line().unwrap().matches('\n').count(), 1);
    }

    /// Counts write calls, to check one write per line.
    struct CountingWriter {
        writes: Vec<Vec<u8>>,
    }

    impl Write for CountingWriter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.writes.push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn one_write_per_line() {
        let mut w = EventWriter::new(CountingWriter { writes: vec![] });
        for n in 1..=3 {
            w.emit(&Event::Irq {
                ts_ns: n,
                irq_count: n as u32,
                missed: 0,
            })
            .unwrap();
        }
        let writes = &w.get_ref().writes;
        assert_eq!(writes.len(), 3);
        assert!(writes.iter().all(|l| l.ends_with(b"}\n")));
    }

    #[test]
    fn clock_is_realtime_ns() {
        // After 2020-01-01 and before 2200.
        let t = now_ns();
        assert!(t > 1_577_836_800_000_000_000 && t < 7_258_118_400_000_000_000);
    }
}
