//! The tests of [`crate::vmallocinfo`] that run a daemon on the mock device (here, under
//! `testing`, so that no module imports the test harness that imports it).

use crate::plan::Plan;
use std::io;
use std::path::Path;

use kmemlab::MockDevice;

use serde_json::Value;

use super::*;
use crate::vmallocinfo::*;

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
