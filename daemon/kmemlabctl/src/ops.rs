//! Commands of several operations, where some may fail and the others still count
//! ([`crate::exit::PARTIAL`]): `alloc --count N [--hold]`, `free H H H`, `free --all`,
//! `trigger --count N --interval MS`; and `list`'s filters.
//!
//! A command of one operation fails as a whole, as before: its error is the command's.

use std::time::Duration;

use kmemlab::device::Device;
use kmemlab::error::{Error, Result};
use kmemlab::report::{to_json, AllocReport, FreeReport, TriggerReport};
use kmemlab::spec::{Flags, Kind};
use serde::Serialize;

use crate::table::{self, ToText};

/// One operation of several that failed.
#[derive(Debug)]
pub struct Failure {
    /// The operation, e.g. `free 7` or `alloc 2 of 3`.
    pub what: String,
    /// The allocation it was about, if any.
    pub handle: Option<u64>,
    /// Why.
    pub error: Error,
}

/// A failed operation as `--json` prints it: an error line with the operation and its
/// handle.
#[derive(Serialize)]
struct FailureLine {
    error: String,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    handle: Option<u64>,
}

impl Failure {
    /// The message: the operation, then the error with its causes.
    pub fn message(&self) -> String {
        format!("{}: {}", self.what, self.error.report())
    }

    /// The `--json` error line (without `\n`).
    pub fn json(&self) -> String {
        let line = FailureLine {
            error: self.error.errno_name(),
            message: self.message(),
            handle: self.handle,
        };
        to_json(&line).unwrap_or_else(|_| crate::failure::error_json("EINVAL", &line.message))
    }
}

/// What a command of several operations did.
#[derive(Debug, Default)]
pub struct Tally {
    /// Operations that succeeded.
    pub done: usize,
    /// Those that failed, in order.
    pub failed: Vec<Failure>,
    /// For stderr in text mode.
    pub note: Option<String>,
}

fn json_line<T: Serialize>(v: &T) -> Result<String> {
    Ok(to_json(v)? + "\n")
}

/// `alloc`: `count` allocations of one spec, reported (a table, or a JSON line each).
/// With `hold`, calls `wait` once they are all reported and then frees them, reporting
/// each free; the caller's `wait` returns when SIGINT or SIGTERM arrives. One allocation
/// that fails is the command's error.
pub fn alloc<D: Device + ?Sized>(
    dev: &D,
    (kind, size, flags): (Kind, u64, Flags),
    count: u32,
    hold: bool,
    json: bool,
    emit: &mut dyn FnMut(&str),
    wait: &mut dyn FnMut() -> Result<()>,
) -> Result<Tally> {
    let mut tally = Tally::default();
    let mut made = Vec::new();
    for i in 1..=count {
        match dev.alloc(kind, size, flags) {
            Ok(a) => made.push(AllocReport::from(&a)),
            Err(error) if count == 1 => return Err(error),
            Err(error) => tally.failed.push(Failure {
                what: format!("alloc {i} of {count}"),
                handle: None,
                error,
            }),
        }
    }
    tally.done = made.len();
    if json {
        emit(&made.iter().map(json_line).collect::<Result<String>>()?);
    } else if !made.is_empty() {
        emit(&table::allocs(&made));
    }
    let handles: Vec<String> = made.iter().map(|r| r.handle.to_string()).collect();
    if hold && made.is_empty() {
        // Nothing to hold: every allocation failed; no wait.
        return Ok(tally);
    }
    if !hold {
        if !flags.contains(Flags::PERSIST) && !made.is_empty() {
            tally.note = Some(if made.len() == 1 {
                format!(
                    "note: allocation {} belongs to this kmemlabctl and is freed when it \
                     exits; use --persist to keep it",
                    handles[0]
                )
            } else {
                format!(
                    "note: allocations {} belong to this kmemlabctl and are freed when it \
                     exits; use --persist to keep them",
                    handles.join(", ")
                )
            });
        }
        return Ok(tally);
    }
    wait()?;
    let mut freed = Vec::new();
    for r in &made {
        match dev.free(r.handle) {
            Ok(f) => freed.push(FreeReport::from(&f)),
            Err(error) => tally.failed.push(Failure {
                what: format!("free {}", r.handle),
                handle: Some(r.handle),
                error,
            }),
        }
    }
    if json {
        emit(&freed.iter().map(json_line).collect::<Result<String>>()?);
    } else if !freed.is_empty() {
        emit(&table::frees(&freed));
    }
    Ok(tally)
}

/// `free H H H`, or `free --all` (`handles` is `None`: every allocation this opener can
/// list). One handle that fails is the command's error.
pub fn free<D: Device + ?Sized>(
    dev: &D,
    handles: Option<&[u64]>,
    json: bool,
    emit: &mut dyn FnMut(&str),
) -> Result<Tally> {
    let listed;
    let handles = match handles {
        Some(h) => h,
        None => {
            listed = dev.list()?.iter().map(|a| a.handle).collect::<Vec<_>>();
            &listed
        }
    };
    let mut tally = Tally::default();
    let mut freed = Vec::new();
    for &handle in handles {
        match dev.free(handle) {
            Ok(f) => freed.push(FreeReport::from(&f)),
            Err(error) if handles.len() == 1 => return Err(error),
            Err(error) => tally.failed.push(Failure {
                what: format!("free {handle}"),
                handle: Some(handle),
                error,
            }),
        }
    }
    tally.done = freed.len();
    if json {
        emit(&freed.iter().map(json_line).collect::<Result<String>>()?);
    } else if !freed.is_empty() {
        emit(&table::frees(&freed));
    } else if handles.is_empty() {
        emit("no allocations\n");
    }
    Ok(tally)
}

/// `list`, only the allocations of `kind` (if given) and only the device's (`persist`).
pub fn list<D: Device + ?Sized>(
    dev: &D,
    kind: Option<Kind>,
    persist: bool,
    json: bool,
) -> Result<String> {
    let reports: Vec<AllocReport> = dev
        .list()?
        .iter()
        .map(AllocReport::from)
        .filter(|r| kind.is_none_or(|k| r.kind == k.name()) && (!persist || r.persist))
        .collect();
    Ok(if json {
        reports.iter().map(json_line).collect::<Result<String>>()?
    } else if reports.is_empty() {
        "no allocations\n".to_owned()
    } else {
        table::allocs(&reports)
    })
}

/// `trigger --count N`: one TRIGGER of N events; with `interval_ms`, N TRIGGERs of one
/// event that far apart, each reported.
pub fn trigger<D: Device + ?Sized>(
    dev: &D,
    count: u32,
    interval_ms: Option<u64>,
    json: bool,
    emit: &mut dyn FnMut(&str),
) -> Result<Tally> {
    let mut tally = Tally::default();
    let Some(ms) = interval_ms else {
        let r = TriggerReport::from(&dev.trigger(count)?);
        emit(&if json { json_line(&r)? } else { r.to_text() });
        tally.done = 1;
        return Ok(tally);
    };
    for i in 1..=count {
        if i > 1 {
            std::thread::sleep(Duration::from_millis(ms));
        }
        match dev.trigger(1) {
            Ok(t) => {
                let r = TriggerReport::from(&t);
                emit(&if json { json_line(&r)? } else { r.to_text() });
                tally.done += 1;
            }
            Err(error) if count == 1 => return Err(error),
            Err(error) => tally.failed.push(Failure {
                what: format!("trigger {i} of {count}"),
                handle: None,
                error,
            }),
        }
    }
    Ok(tally)
}

#[cfg(test)]
mod tests {
    use kmemlab::MockDevice;
    use nix::errno::Errno;
    use serde_json::Value;

    use super::*;
    use crate::exit;

    const KM: (Kind, u64, Flags) = (Kind::Kmalloc, 64, Flags::GFP_KERNEL);

    fn lines(text: &str) -> Vec<Value> {
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn hold_reports_the_allocations_waits_then_frees_each() {
        let dev = MockDevice::new();
        let mut out = String::new();
        let mut live_at_wait = None;
        let tally = alloc(
            &dev,
            KM,
            3,
            true,
            true,
            &mut |s| out.push_str(s),
            &mut || {
                live_at_wait = Some(dev.live().len());
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(live_at_wait, Some(3), "held while waiting");
        assert!(dev.live().is_empty(), "freed after");
        assert_eq!((tally.done, tally.failed.len()), (3, 0));
        let v = lines(&out);
        assert_eq!(v.len(), 6, "{out}");
        let allocs: Vec<&Value> = v[..3].iter().map(|l| &l["handle"]).collect();
        let frees: Vec<&Value> = v[3..].iter().map(|l| &l["handle"]).collect();
        assert_eq!(allocs, frees);
        assert!(v[..3].iter().all(|l| l["alloc_ns"].is_u64()));
        assert!(v[3..].iter().all(|l| l["free_ns"].is_u64()));
    }

    #[test]
    fn count_without_hold_keeps_them_and_a_failure_is_partial() {
        let dev = MockDevice::new();
        let mut out = String::new();
        let t = alloc(
            &dev,
            KM,
            2,
            false,
            false,
            &mut |s| out.push_str(s),
            &mut || panic!("no wait without --hold"),
        )
        .unwrap();
        assert_eq!(dev.live().len(), 2);
        assert_eq!(out.lines().count(), 3, "a header and two rows: {out}");
        assert_eq!(
            t.note.as_deref(),
            Some(
                "note: allocations 1, 2 belong to this kmemlabctl and are freed when it \
                 exits; use --persist to keep them"
            )
        );
        // The module refuses the first of three: two made, one failure, PARTIAL.
        dev.fail_next(Errno::ENOMEM);
        let t = alloc(&dev, KM, 3, false, true, &mut |_| {}, &mut || Ok(())).unwrap();
        assert_eq!((t.done, t.failed.len()), (2, 1));
        assert_eq!(t.failed[0].what, "alloc 1 of 3");
        assert_eq!(exit::of_tally(t.done, t.failed.len()), exit::PARTIAL);
        // --hold with every allocation refused: nothing to wait for.
        dev.fail_next(Errno::ENOMEM);
        dev.fail_next(Errno::ENOMEM);
        let t = alloc(&dev, KM, 2, true, true, &mut |_| {}, &mut || {
            panic!("nothing is held")
        })
        .unwrap();
        assert_eq!((t.done, t.failed.len()), (0, 2));
        // One allocation that fails is the command's error, as before.
        dev.fail_next(Errno::ENOMEM);
        let e = alloc(&dev, KM, 1, false, true, &mut |_| {}, &mut || Ok(())).unwrap_err();
        assert_eq!(e.errno_name(), "ENOMEM");
    }

    #[test]
    fn free_several_reports_each_and_the_bad_ones() {
        let dev = MockDevice::new();
        for _ in 0..2 {
            dev.alloc(Kind::Kmalloc, 8, Flags::GFP_KERNEL).unwrap();
        }
        let mut out = String::new();
        let t = free(&dev, Some(&[1, 7, 2]), true, &mut |s| out.push_str(s)).unwrap();
        assert_eq!(
            lines(&out)
                .iter()
                .map(|l| l["handle"].as_u64().unwrap())
                .collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!((t.done, t.failed.len()), (2, 1));
        let bad: Value = serde_json::from_str(&t.failed[0].json()).unwrap();
        assert_eq!(bad["error"], "ENOENT");
        assert_eq!(bad["handle"], 7);
        assert!(bad["message"]
            .as_str()
            .unwrap()
            .starts_with("free 7: ioctl KMEMLAB_FREE failed: ENOENT"));
        assert_eq!(exit::of_tally(t.done, t.failed.len()), exit::PARTIAL);
        // Every handle refused: a failure, not a partial one.
        let t = free(&dev, Some(&[1, 2]), false, &mut |_| {}).unwrap();
        assert_eq!(exit::of_tally(t.done, t.failed.len()), exit::FAILURE);
        assert!(free(&dev, Some(&[9]), false, &mut |_| {}).is_err());
    }

    #[test]
    fn free_all_and_list_filters() {
        let dev = MockDevice::new();
        dev.alloc(Kind::Kmalloc, 8, Flags::GFP_KERNEL).unwrap();
        dev.alloc(Kind::Vmalloc, 8, Flags::GFP_KERNEL.with(Flags::PERSIST))
            .unwrap();
        dev.alloc(Kind::Kmalloc, 8, Flags::GFP_KERNEL.with(Flags::PERSIST))
            .unwrap();
        let handles = |text: String| -> Vec<u64> {
            lines(&text)
                .iter()
                .map(|l| l["handle"].as_u64().unwrap())
                .collect()
        };
        assert_eq!(handles(list(&dev, None, false, true).unwrap()), [1, 2, 3]);
        assert_eq!(
            handles(list(&dev, Some(Kind::Kmalloc), false, true).unwrap()),
            [1, 3]
        );
        assert_eq!(handles(list(&dev, None, true, true).unwrap()), [2, 3]);
        assert_eq!(
            handles(list(&dev, Some(Kind::Kmalloc), true, true).unwrap()),
            [3]
        );
        assert_eq!(
            list(&dev, Some(Kind::Pages), false, false).unwrap(),
            "no allocations\n"
        );
        let mut out = String::new();
        let t = free(&dev, None, true, &mut |s| out.push_str(s)).unwrap();
        assert_eq!((t.done, t.failed.len()), (3, 0));
        assert_eq!(handles(out), [1, 2, 3]);
        assert!(dev.live().is_empty());
        let mut out = String::new();
        free(&dev, None, false, &mut |s| out.push_str(s)).unwrap();
        assert_eq!(out, "no allocations\n");
    }

    #[test]
    fn trigger_with_an_interval_is_one_ioctl_per_event() {
        let dev = MockDevice::new();
        let mut out = String::new();
        let start = std::time::Instant::now();
        let t = trigger(&dev, 3, Some(20), true, &mut |s| out.push_str(s)).unwrap();
        assert!(start.elapsed() >= Duration::from_millis(40));
        assert_eq!(t.done, 3);
        let v = lines(&out);
        assert_eq!(
            v.iter().map(|l| l["events"].as_u64()).collect::<Vec<_>>(),
            [Some(1), Some(2), Some(3)]
        );
        assert!(v.iter().all(|l| l["count"] == 1));
        let calls: Vec<String> = dev
            .calls()
            .into_iter()
            .filter(|c| c.starts_with("trigger"))
            .collect();
        assert_eq!(calls, ["trigger 1"; 3]);
        let mut out = String::new();
        trigger(&dev, 5, None, false, &mut |s| out.push_str(s)).unwrap();
        assert_eq!(out, "raised 5 events; event count now 8\n");
    }
}
