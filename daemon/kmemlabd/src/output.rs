//! Where the JSON lines go: the log file or stdout.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::Path;

use kmemlab::error::{Error, Result};

use crate::event::Event;

/// Opens the output anew for a log path (`None`: stdout), as [`open_output`] does.
pub type Reopen<W> = fn(Option<&Path>) -> Result<W>;

/// Opens where the JSON lines go: the log file (appending, created if missing) or a
/// duplicate of stdout as an unbuffered `File`.
pub fn open_output(log: Option<&std::path::Path>) -> Result<File> {
    match log {
        Some(path) => OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .map_err(|source| Error::Open {
                path: path.to_path_buf(),
                source,
            }),
        None => io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .map(File::from)
            .map_err(|source| Error::Open {
                path: "stdout".into(),
                source,
            }),
    }
}

/// Writes events as JSON lines, each with a single `write_all` of the whole line.
///
/// Give it an unbuffered writer (a `File`, including a dup of stdout), so each line is
/// one write(2) and a crash never leaves a torn line.
///
/// Each line is serialized into one buffer kept from line to line (the bytes of
/// [`Event::to_line`]), so that once it has grown to the longest line, writing a line
/// allocates nothing.
pub struct EventWriter<W: Write> {
    out: W,
    line: Vec<u8>,
}

impl<W: Write + fmt::Debug> fmt::Debug for EventWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventWriter")
            .field("out", &self.out)
            .finish_non_exhaustive()
    }
}

/// Room the line buffer starts with: more than the longest line a press writes (an
/// `alloc` line with its vmallocinfo line, about 600 bytes), so that it is not grown,
/// by doubling, only when a later line crosses a power of two.
const LINE_CAPACITY: usize = 1024;

impl<W: Write> EventWriter<W> {
    /// Wraps `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            line: Vec::with_capacity(LINE_CAPACITY),
        }
    }

    /// Writes one event line.
    pub fn emit(&mut self, event: &Event) -> Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, event).map_err(|source| Error::Json { source })?;
        self.line.push(b'\n');
        self.out
            .write_all(&self.line)
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
    use kmemlab::device::Device;
    use kmemlab::report::AllocReport;
    use kmemlab::spec::{Flags, Kind};
    use kmemlab::MockDevice;

    use super::*;
    use crate::event::StopReason;
    use crate::testing::press;

    #[test]
    fn log_file_is_appended() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("kmemlabd.log");
        std::fs::write(&path, "old\n").unwrap();
        let mut w = EventWriter::new(open_output(Some(&path)).unwrap());
        w.emit(&Event::Stop {
            ts_ns: 1,
            irq_count: 2,
            reason: StopReason::Sigterm,
        })
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("old\n{\"event\":\"stop\""));
        assert!(open_output(Some(&tmp.path().join("no/such/dir.log"))).is_err());
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
            w.emit(&Event::Stop {
                ts_ns: n,
                irq_count: n as u32,
                reason: StopReason::Sigterm,
            })
            .unwrap();
        }
        let writes = &w.get_ref().writes;
        assert_eq!(writes.len(), 3);
        assert!(writes.iter().all(|l| l.ends_with(b"}\n")));
    }

    #[test]
    fn the_reused_buffer_writes_each_line_as_to_line_does() {
        let dev = MockDevice::new();
        let a = dev.alloc(Kind::Kmalloc, 64, Flags::GFP_KERNEL).unwrap();
        // Long, short, then in between: nothing of a longer line stays behind.
        let events = [
            Event::Error {
                ts_ns: 1,
                error: "EIO".into(),
                message: "x".repeat(2000),
            },
            Event::Stop {
                ts_ns: 2,
                irq_count: 3,
                reason: StopReason::Sigint,
            },
            Event::Alloc {
                press: press(Some(4)),
                alloc: AllocReport::from(&a),
                vmallocinfo: None,
            },
        ];
        let mut w = EventWriter::new(CountingWriter { writes: vec![] });
        for ev in &events {
            w.emit(ev).unwrap();
        }
        let want: Vec<Vec<u8>> = events
            .iter()
            .map(|ev| ev.to_line().unwrap().into_bytes())
            .collect();
        assert_eq!(w.get_ref().writes, want);
    }
}
