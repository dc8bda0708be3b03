//! Diagnostics (tracing) on stderr, with the journal's priorities when stderr is the
//! journal.
//!
//! systemd connects a service's stderr to journald and says so in `$JOURNAL_STREAM`
//! (`DEVICE:INODE` of that stream, systemd.exec(5)). journald reads a `<N>` prefix on
//! each line as its syslog priority (`SyslogLevelPrefix=yes`, the default), so when
//! `$JOURNAL_STREAM` names the file stderr is (what `sd_journal_stream_fd()` users
//! check, so that a child that inherited the variable but writes elsewhere is not
//! fooled), each line is `<N>message`: errors `<3>`, warnings `<4>`, info `<6>`, debug
//! and trace `<7>`, and `journalctl -p warning` shows the warnings and errors. Without
//! it, lines are the library's plain format (time, level, message).

use std::ffi::OsStr;
use std::fmt;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The variable systemd sets to the device and inode of the journal stream.
pub const JOURNAL_STREAM: &str = "JOURNAL_STREAM";

/// The syslog priority journald files a line of `level` under.
pub fn syslog_priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// Whether `value` (`DEVICE:INODE`, decimal) names the file with `dev` and `ino`.
pub fn names_file(value: &OsStr, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    d.parse() == Ok(dev) && i.parse() == Ok(ino)
}

/// Whether stderr is the journal stream `$JOURNAL_STREAM` names.
pub fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os(JOURNAL_STREAM) else {
        return false;
    };
    let stderr = std::io::stderr();
    let Ok(fd) = stderr.as_fd().try_clone_to_owned() else {
        return false;
    };
    match std::fs::File::from(fd).metadata() {
        Ok(meta) => names_file(&value, meta.dev(), meta.ino()),
        Err(_) => false,
    }
}

/// What starts an error line printed without tracing: `<3>` when stderr is the journal
/// stream, else nothing.
pub fn error_prefix() -> &'static str {
    if stderr_is_journal() {
        "<3>"
    } else {
        ""
    }
}

/// Formats a tracing event as one journal line: `<N>` then the message and its fields
/// (journald adds the time and the unit).
#[derive(Clone, Copy, Debug, Default)]
pub struct JournalFormat;

impl<S, N> FormatEvent<S, N> for JournalFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", syslog_priority(event.metadata().level()))?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Sets up tracing to stderr, level from `KMEMLAB_LOG` (default info): journal lines when
/// stderr is the journal stream, else the library's plain format.
pub fn init_tracing() {
    if !stderr_is_journal() {
        kmemlab::init_tracing();
        return;
    }
    let level = std::env::var("KMEMLAB_LOG")
        .ok()
        .and_then(|l| l.parse::<Level>().ok())
        .unwrap_or(Level::INFO);
    let _ = tracing_subscriber::fmt()
        .event_format(JournalFormat)
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .try_init();
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn the_stream_is_named_by_device_and_inode() {
        assert!(names_file(OsStr::new("64768:1234"), 64768, 1234));
        for value in [
            "64768:1235",
            "64769:1234",
            "64768",
            "",
            "x:y",
            "64768:1234:5",
        ] {
            assert!(!names_file(OsStr::new(value), 64768, 1234), "{value}");
        }
    }

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn each_line_starts_with_its_priority() {
        let buf = Buffer::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(JournalFormat)
            .with_writer(move || writer.clone())
            .with_max_level(Level::TRACE)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!("failed to read the interrupt count from /dev/uio0");
            tracing::warn!(count = 3, "uio read returned the unchanged count");
            tracing::info!("stopped by Sigterm");
            tracing::debug!("spurious wakeup");
            tracing::trace!("finer");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "<3>failed to read the interrupt count from /dev/uio0\n\
             <4>uio read returned the unchanged count count=3\n\
             <6>stopped by Sigterm\n\
             <7>spurious wakeup\n\
             <7>finer\n"
        );
    }
}
