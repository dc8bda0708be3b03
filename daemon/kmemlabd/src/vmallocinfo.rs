//! The `/proc/vmallocinfo` line of each vmalloc allocation, read a line at a time.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

/// Where the kernel lists vmalloc areas.
pub const VMALLOCINFO: &str = "/proc/vmallocinfo";

/// Reads `/proc/vmallocinfo` text from `reader` a line at a time into `line`, up to the
/// line of the area that starts at `vaddr`: `Ok(true)` with that line in `line` (without
/// its line end), `Ok(false)` when no area starts there.
///
/// The file is never held whole, and is read no further than that line: Linux lists the
/// areas it freed lazily (`unpurged vm_area`) after the live ones until it purges them,
/// which a 2-CPU board does after 64 MiB of them (`lazy_max_pages()`), so the file grows
/// by a line with each vmalloc the daemon frees, to hundreds of kilobytes.
pub fn read_vmallocinfo_line<R: BufRead + ?Sized>(
    reader: &mut R,
    vaddr: u64,
    line: &mut String,
) -> io::Result<bool> {
    loop {
        line.clear();
        if reader.read_line(line)? == 0 {
            return Ok(false);
        }
        if area_start(line) == Some(vaddr) {
            line.truncate(line.trim_end().len());
            return Ok(true);
        }
    }
}

/// The start address of the area of a vmallocinfo line (`0x...-0x... size caller ...`).
fn area_start(line: &str) -> Option<u64> {
    let (start, _) = line.split_once('-')?;
    u64::from_str_radix(start.trim().trim_start_matches("0x"), 16).ok()
}

/// Reads vmallocinfo for the daemon through one buffer and one line kept from press to
/// press: a lookup allocates nothing but the line it returns, and holds no more than the
/// buffer and the longest line read, however long the file is.
///
/// A refused open (`EACCES`, `EPERM`: the file is root's, `0400`, and kmemlabd runs as
/// the unit's dynamic user) is remembered: the reader says so once and does not open
/// the file again until [`VmallocinfoReader::retry`] (a reload), instead of failing an
/// open on every vmalloc press. Other failures are retried at the next press.
#[derive(Debug)]
pub(crate) struct VmallocinfoReader {
    reader: BufReader<Opened>,
    line: String,
    open: fn(&Path) -> io::Result<File>,
    refused: bool,
}

/// The file a [`VmallocinfoReader`] is reading, if any.
#[derive(Debug, Default)]
struct Opened(Option<File>);

impl Read for Opened {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.0 {
            Some(file) => file.read(buf),
            None => Ok(0),
        }
    }
}

impl VmallocinfoReader {
    pub(crate) fn new() -> Self {
        Self::with_open(|path| File::open(path))
    }

    /// A reader that opens files with `open` (tests count and refuse opens).
    pub(crate) fn with_open(open: fn(&Path) -> io::Result<File>) -> Self {
        Self {
            reader: BufReader::new(Opened::default()),
            line: String::new(),
            open,
            refused: false,
        }
    }

    /// Whether an open was refused and the file is no longer tried.
    #[cfg(test)]
    pub(crate) fn refused(&self) -> bool {
        self.refused
    }

    /// Tries the file again at the next lookup (after a reload).
    pub(crate) fn retry(&mut self) {
        self.refused = false;
    }

    /// The line of the area that starts at `vaddr` in the vmallocinfo file at `path`;
    /// `Ok(None)` without opening it when an earlier open was refused.
    pub(crate) fn area_line(&mut self, path: &Path, vaddr: u64) -> io::Result<Option<&str>> {
        if self.refused {
            return Ok(None);
        }
        let file = match (self.open)(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                self.refused = true;
                tracing::info!(
                    "cannot read {}: {e}; the vmallocinfo field stays null, and the file \
                     is not tried again until a reload (SIGHUP)",
                    path.display()
                );
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        // Bytes of the previous file that its lookup did not need.
        let stale = self.reader.buffer().len();
        self.reader.consume(stale);
        self.reader.get_mut().0 = Some(file);
        let found = read_vmallocinfo_line(&mut self.reader, vaddr, &mut self.line);
        // Closed now rather than at the next lookup.
        self.reader.get_mut().0 = None;
        Ok(found?.then_some(self.line.as_str()))
    }
}
