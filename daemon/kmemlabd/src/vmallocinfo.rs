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
    fn with_open(open: fn(&Path) -> io::Result<File>) -> Self {
        Self {
            reader: BufReader::new(Opened::default()),
            line: String::new(),
            open,
            refused: false,
        }
    }

    /// Whether an open was refused and the file is no longer tried.
    #[cfg(test)]
    fn refused(&self) -> bool {
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

#[cfg(test)]
mod tests {

    use crate::plan::Plan;
    use std::io;

    use kmemlab::MockDevice;

    use serde_json::Value;

    use super::*;
    use crate::testing::*;

    #[test]
    fn vmalloc_lines_carry_their_vmallocinfo_area() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vmallocinfo");
        // The mock's first vmalloc (handle 1) sits at 0xffff800080100000.
        std::fs::write(
            &path,
            "0xffff800080000000-0xffff800080002000    8192 foo+0x10/0x20 pages=1 vmalloc\n\
             0xffff800080100000-0xffff800080102000    8192 kmemlab_alloc+0x1c/0x40 [kmemlab] pages=1 vmalloc N0=1\n",
        )
        .unwrap();
        let reads = [Some(1), Some(2), Some(3), None];
        let (d, _, lines) = daemon_with(MockDevice::new(), 0, &reads);
        let mut d = d
            .with_plan(Plan::parse("vmalloc,kmalloc").unwrap())
            .with_vmallocinfo(Some(path.clone()));
        d.on_readable().unwrap();
        let lines = lines.borrow();
        assert_eq!(
            lines[0]["vmallocinfo"],
            "0xffff800080100000-0xffff800080102000    8192 kmemlab_alloc+0x1c/0x40 [kmemlab] \
             pages=1 vmalloc N0=1"
        );
        // kmalloc: null.
        assert_eq!(lines[2]["vmallocinfo"], Value::Null);

        // Hidden addresses: nothing to look up.
        let (d, _, lines) = daemon_with(MockDevice::new().hiding_addresses(), 0, &reads);
        let mut d = d
            .with_plan(Plan::parse("vmalloc").unwrap())
            .with_vmallocinfo(Some(path));
        d.on_readable().unwrap();
        assert_eq!(lines.borrow()[0]["vmallocinfo"], Value::Null);
        assert_eq!(lines.borrow()[0]["vaddr"], Value::Null);
    }

    #[test]
    fn vmallocinfo_lines_match_by_start_address() {
        let text = "0x0000000000000000-0x0000000000000000    8192 hidden\n\
                    garbage\n\
                    0xffff800080003000-0xffff800080005000    8192 a\n";
        let find = |vaddr| {
            let mut line = String::new();
            read_vmallocinfo_line(&mut io::Cursor::new(text), vaddr, &mut line)
                .unwrap()
                .then_some(line)
        };
        assert_eq!(
            find(0xffff_8000_8000_3000).as_deref(),
            Some("0xffff800080003000-0xffff800080005000    8192 a")
        );
        // An end address is not a start; a hidden (zero) start matches only zero.
        assert_eq!(find(0xffff_8000_8000_5000), None);
        assert_eq!(
            find(0).as_deref(),
            Some("0x0000000000000000-0x0000000000000000    8192 hidden")
        );
    }

    #[test]
    fn vmallocinfo_is_read_a_line_at_a_time_up_to_the_area() {
        let text = "0xffff800080000000-0xffff800080002000    8192 a pages=1 vmalloc\n\
                    0xffff800080003000-0xffff800080005000    8192 b pages=1 vmalloc  \n\
                    0xffff800080006000-0xffff800080008000    8192 unpurged vm_area\n";
        let mut reader = io::Cursor::new(text);
        let mut line = String::from("left over");
        assert!(read_vmallocinfo_line(&mut reader, 0xffff_8000_8000_3000, &mut line).unwrap());
        assert_eq!(
            line,
            "0xffff800080003000-0xffff800080005000    8192 b pages=1 vmalloc"
        );
        // It stopped there: the rest is still to be read.
        assert_eq!(
            reader.position() as usize,
            text.find("0xffff800080006000").unwrap()
        );
        let mut reader = io::Cursor::new(text);
        assert!(!read_vmallocinfo_line(&mut reader, 0xffff_8000_8000_1000, &mut line).unwrap());
        assert_eq!(reader.position() as usize, text.len());
        // The first and the last line are found too; an address inside an area is not.
        for (vaddr, want) in [
            (0xffff_8000_8000_0000, Some("a pages=1 vmalloc")),
            (0xffff_8000_8000_6000, Some("unpurged vm_area")),
            (0xffff_8000_8000_1000, None),
        ] {
            let mut reader = io::Cursor::new(text);
            let found = read_vmallocinfo_line(&mut reader, vaddr, &mut line).unwrap();
            assert_eq!(found, want.is_some(), "{vaddr:#x}");
            if let Some(want) = want {
                assert!(line.ends_with(want), "{line}");
            }
        }
    }

    #[test]
    fn a_refused_open_is_not_tried_again_until_a_retry() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static OPENS: AtomicUsize = AtomicUsize::new(0);
        let mut r = VmallocinfoReader::with_open(|_| {
            OPENS.fetch_add(1, Ordering::Relaxed);
            Err(io::Error::from_raw_os_error(13))
        });
        let path = Path::new("/proc/vmallocinfo");
        for _ in 0..5 {
            assert_eq!(r.area_line(path, 0xffff_8000_8000_0000).unwrap(), None);
        }
        assert_eq!(OPENS.load(Ordering::Relaxed), 1);
        assert!(r.refused());
        r.retry();
        assert!(!r.refused());
        assert_eq!(r.area_line(path, 0).unwrap(), None);
        assert_eq!(OPENS.load(Ordering::Relaxed), 2);
        // A missing file is an error each time, tried again each time.
        let mut r = VmallocinfoReader::new();
        let tmp = tempfile::tempdir().unwrap();
        assert!(r.area_line(&tmp.path().join("missing"), 0).is_err());
        assert!(r.area_line(&tmp.path().join("missing"), 0).is_err());
        assert!(!r.refused());
    }

    #[test]
    fn a_vmallocinfo_lookup_never_sees_the_previous_files_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let (first, second) = (tmp.path().join("first"), tmp.path().join("second"));
        // The first lookup stops at its line and leaves the second one in the buffer.
        std::fs::write(
            &first,
            "0xffff800080000000-0xffff800080002000    8192 a\n\
             0xffff800080003000-0xffff800080005000    8192 b\n",
        )
        .unwrap();
        std::fs::write(&second, "0xffff800080006000-0xffff800080008000    8192 c\n").unwrap();
        let mut r = VmallocinfoReader::new();
        assert_eq!(
            r.area_line(&first, 0xffff_8000_8000_0000).unwrap(),
            Some("0xffff800080000000-0xffff800080002000    8192 a")
        );
        assert_eq!(r.area_line(&second, 0xffff_8000_8000_3000).unwrap(), None);
        assert_eq!(
            r.area_line(&second, 0xffff_8000_8000_6000).unwrap(),
            Some("0xffff800080006000-0xffff800080008000    8192 c")
        );
        assert!(r.area_line(&tmp.path().join("missing"), 0).is_err());
        assert_eq!(
            r.area_line(&first, 0xffff_8000_8000_3000).unwrap(),
            Some("0xffff800080003000-0xffff800080005000    8192 b")
        );
    }
}
