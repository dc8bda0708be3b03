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

/// Writes events as JSON lines, each handed whole to one `write(2)`.
///
/// Give it an unbuffered writer (a `File`, including a dup of stdout), so each line is
/// one write(2). What the kernel makes of that write depends on the file: to a pipe, a
/// line of at most `PIPE_BUF` (4096) bytes is written at once, never interleaved with
/// another writer's (pipe(7)); a longer one may be split. To a file opened `O_APPEND`
/// (`--log`), each write lands at the end of the file as one piece. A write can still be
/// short (a full disk, a signal): the rest of the line is written by the next call, so
/// the line is finished, in two pieces. If a write fails part-way, the stream is left in
/// the middle of a line; the writer remembers that and starts its next line with a
/// newline, so that no line is glued onto the torn one (the torn piece stays, as a line
/// that is not JSON).
///
/// Each line is serialized into one buffer kept from line to line (the bytes of
/// [`Event::to_line`]), so that once it has grown to the longest line, writing a line
/// allocates nothing.
pub struct EventWriter<W: Write> {
    out: W,
    line: Vec<u8>,
    /// The last write failed part-way: the stream ends in the middle of a line.
    torn: bool,
}

impl<W: Write + fmt::Debug> fmt::Debug for EventWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventWriter")
            .field("out", &self.out)
            .field("torn", &self.torn)
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
            torn: false,
        }
    }

    /// Writes one event line (after a newline that ends a torn line, if the last write
    /// failed part-way).
    pub fn emit(&mut self, event: &Event) -> Result<()> {
        self.line.clear();
        if self.torn {
            self.line.push(b'\n');
        }
        serde_json::to_writer(&mut self.line, event).map_err(|source| Error::Json { source })?;
        self.line.push(b'\n');
        let mut written = 0;
        let result = loop {
            if written == self.line.len() {
                break Ok(());
            }
            match self.out.write(&self.line[written..]) {
                Ok(0) => break Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        // The stream now ends where the last byte written left it.
        if written > 0 {
            self.torn = self.line[written - 1] != b'\n';
        }
        result.map_err(|source| Error::Output { source })
    }

    /// Whether the last write failed part-way, leaving a line unfinished.
    pub fn is_torn(&self) -> bool {
        self.torn
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
    use crate::event::test_press as press;
    use crate::event::StopReason;

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

    /// A writer that answers each write(2) as scripted: `Ok(n)` takes at most n bytes,
    /// `Err` fails; once the script is used up, it takes everything.
    struct ScriptedWriter {
        script: std::collections::VecDeque<io::Result<usize>>,
        bytes: Vec<u8>,
        calls: usize,
    }

    impl ScriptedWriter {
        fn new(script: Vec<io::Result<usize>>) -> Self {
            Self {
                script: script.into(),
                bytes: Vec::new(),
                calls: 0,
            }
        }
    }

    impl Write for ScriptedWriter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.calls += 1;
            let n = match self.script.pop_front() {
                Some(Ok(n)) => n.min(buf.len()),
                Some(Err(e)) => return Err(e),
                None => buf.len(),
            };
            self.bytes.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn stop(n: u64) -> Event {
        Event::Stop {
            ts_ns: n,
            irq_count: n as u32,
            reason: StopReason::Sigterm,
        }
    }

    #[test]
    fn a_short_write_is_finished() {
        let mut w = EventWriter::new(ScriptedWriter::new(vec![
            Ok(10),
            Err(io::Error::from(io::ErrorKind::Interrupted)),
        ]));
        w.emit(&stop(1)).unwrap();
        w.emit(&stop(2)).unwrap();
        let out = w.get_ref();
        // 10 bytes, EINTR, the rest, then the next line whole.
        assert_eq!(out.calls, 4);
        let want = [stop(1), stop(2)].map(|e| e.to_line().unwrap()).concat();
        assert_eq!(String::from_utf8(out.bytes.clone()).unwrap(), want);
        assert!(!w.is_torn());
    }

    #[test]
    fn after_a_write_failed_part_way_the_next_line_starts_on_a_new_line() {
        let mut w = EventWriter::new(ScriptedWriter::new(vec![
            Ok(usize::MAX),
            Ok(10),
            Err(io::Error::from_raw_os_error(28)),
        ]));
        w.emit(&stop(1)).unwrap();
        let err = w.emit(&stop(2)).unwrap_err();
        assert_eq!(err.errno_name(), "ENOSPC");
        assert!(w.is_torn());
        w.emit(&stop(3)).unwrap();
        assert!(!w.is_torn());
        let text = String::from_utf8(w.get_ref().bytes.clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        // The whole first line, the torn piece of the second on its own, the third whole.
        assert_eq!(lines.len(), 3, "{text:?}");
        assert_eq!(lines[1], &stop(2).to_line().unwrap()[..10]);
        for line in [lines[0], lines[2]] {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn a_write_that_fails_before_any_byte_leaves_no_torn_line() {
        let mut w = EventWriter::new(ScriptedWriter::new(vec![Err(
            io::Error::from_raw_os_error(32),
        )]));
        assert_eq!(w.emit(&stop(1)).unwrap_err().errno_name(), "EPIPE");
        assert!(!w.is_torn());
        w.emit(&stop(2)).unwrap();
        assert_eq!(
            String::from_utf8(w.get_ref().bytes.clone()).unwrap(),
            stop(2).to_line().unwrap()
        );
        // Torn, then a write that fails again before any byte: still torn, and the
        // newline still comes first.
        let mut w = EventWriter::new(ScriptedWriter::new(vec![
            Ok(5),
            Err(io::Error::from_raw_os_error(5)),
            Err(io::Error::from_raw_os_error(5)),
            Ok(1),
            Err(io::Error::from_raw_os_error(5)),
        ]));
        w.emit(&stop(1)).unwrap_err();
        w.emit(&stop(2)).unwrap_err();
        assert!(w.is_torn());
        // Only the newline went out: the torn line is ended, nothing new is torn.
        w.emit(&stop(3)).unwrap_err();
        assert!(!w.is_torn());
        w.emit(&stop(4)).unwrap();
        let text = String::from_utf8(w.get_ref().bytes.clone()).unwrap();
        assert_eq!(
            text,
            format!(
                "{}\n{}",
                &stop(1).to_line().unwrap()[..5],
                stop(4).to_line().unwrap()
            )
        );
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
