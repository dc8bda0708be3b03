//! The tests of [`crate::daemon`] that run a daemon on the mock device (here, under
//! `testing`, so that no module imports the test harness that imports it).

use kmemlab::error::Error;

use crate::event::StopReason;

use crate::plan::Plan;

use kmemlab::MockDevice;

use kmemlab::uapi::{Info, ABI_VERSION};
use nix::errno::Errno;
use serde_json::Value;

use super::*;

#[test]
fn start_enables_then_writes_the_start_line() {
    let (mut d, log, lines) = daemon_with(MockDevice::new(), 0, &[]);
    d.start().unwrap();
    assert_eq!(
        take(&log),
        [
            "enable".to_string(),
            format!("line start irq_count=0 abi_version={ABI_VERSION}")
        ]
    );
    let v = &lines.borrow()[0];
    assert_eq!(
        v["plan"],
        "kmalloc:1:GFP_ATOMIC,vmalloc:1:GFP_KERNEL,dma_coherent:1K:GFP_ATOMIC"
    );
    assert_eq!(v["ring"], false);
    assert_eq!(d.device().info_calls(), 1);
}

#[test]
fn start_refuses_another_abi() {
    let dev = MockDevice::with_info(Info {
        abi_version: ABI_VERSION + 1,
        ..Info::default()
    });
    let (mut d, log, _) = daemon_with(dev, 0, &[]);
    assert!(matches!(d.start(), Err(Error::AbiMismatch { .. })));
    assert!(take(&log).is_empty());
}

#[test]
fn start_fails_when_info_fails() {
    let (mut d, log, _) = daemon_with(MockDevice::failing(Errno::ENOTTY), 0, &[]);
    let err = d.start().unwrap_err();
    assert_eq!(err.errno_name(), "ENOTTY");
    d.fail(&err);
    assert_eq!(take(&log), ["line error error=ENOTTY"]);
}

#[test]
fn six_presses_replay_the_seed_plan() {
    let reads: Vec<Option<u32>> = (1..=6).map(Some).chain([None]).collect();
    let (mut d, log, lines) = daemon_with(MockDevice::new(), 0, &reads);
    assert_eq!(d.on_readable().unwrap(), 6);
    assert_eq!(
        take_lines(&log),
        [
            "line alloc seq=1 irq_count=1 missed=0 kind=kmalloc handle=1",
            "line free seq=2 irq_count=2 missed=0 kind=kmalloc handle=1",
            "line alloc seq=3 irq_count=3 missed=0 kind=vmalloc handle=2",
            "line free seq=4 irq_count=4 missed=0 kind=vmalloc handle=2",
            "line alloc seq=5 irq_count=5 missed=0 kind=dma_coherent handle=3",
            "line free seq=6 irq_count=6 missed=0 kind=dma_coherent handle=3",
        ]
    );
    let lines = lines.borrow();
    assert_eq!(lines[0]["size"], 1);
    assert_eq!(lines[0]["gfp"], serde_json::json!(["GFP_ATOMIC"]));
    assert_eq!(lines[0]["usable_size"], 8);
    assert_eq!(lines[4]["size"], 1024);
    assert_eq!(lines[4]["gfp"], serde_json::json!(["GFP_ATOMIC"]));
    assert!(lines[4]["dma"].is_string());
    assert_eq!(lines[5]["size"], 1024);
    assert!(lines[5]["free_ns"].as_u64().is_some());
    for v in lines.iter() {
        // No ring: the latency is unknown, but the field is there.
        assert_eq!(v.get("irq_to_wake_ns"), Some(&Value::Null));
    }
    assert_eq!(lines[2]["vmallocinfo"], Value::Null);
    assert!(d.device().live().is_empty());
    assert_eq!(d.presses(), 6);
}

#[test]
fn a_failed_alloc_is_an_error_line_and_the_daemon_goes_on() {
    let reads = [Some(1), Some(2), Some(3), None];
    let (mut d, log, lines) = daemon_with(MockDevice::new(), 0, &reads);
    d.device().fail_next(Errno::ENOMEM);
    assert_eq!(d.on_readable().unwrap(), 3);
    assert_eq!(
        take_lines(&log),
        [
            "line error seq=1 irq_count=1 missed=0 kind=kmalloc handle=null op=alloc \
             error=ENOMEM",
            "line alloc seq=2 irq_count=2 missed=0 kind=vmalloc handle=1",
            "line free seq=3 irq_count=3 missed=0 kind=vmalloc handle=1",
        ]
    );
    let v = &lines.borrow()[0];
    assert_eq!(v["size"], 1);
    assert_eq!(v["gfp"], serde_json::json!(["GFP_ATOMIC"]));
    assert_eq!(
        v["message"],
        "ioctl KMEMLAB_ALLOC failed: ENOMEM: Out of memory"
    );
}

#[test]
fn a_failed_free_is_an_error_line_and_the_daemon_goes_on() {
    let reads = [Some(1), None, Some(2), Some(3), None];
    let (mut d, log, _) = daemon_with(MockDevice::new(), 0, &reads);
    d = d.with_plan(Plan::parse("pages:8K,kvmalloc:1").unwrap());
    assert_eq!(d.on_readable().unwrap(), 1);
    d.device().fail_next(Errno::EIO);
    assert_eq!(d.on_readable().unwrap(), 2);
    assert_eq!(
        take_lines(&log),
        [
            "line alloc seq=1 irq_count=1 missed=0 kind=pages handle=1",
            "line error seq=2 irq_count=2 missed=0 kind=pages handle=1 op=free error=EIO",
            "line alloc seq=3 irq_count=3 missed=0 kind=kvmalloc handle=2",
        ]
    );
}

#[test]
fn a_press_beyond_the_quota_is_an_edquot_line() {
    // An unprivileged daemon whose plan holds more than its quota: the first press
    // allocates, the next (freeing) too, a 17 MiB one is refused.
    let reads = [Some(1), Some(2), Some(3), None];
    let (d, log, lines) = daemon_with(MockDevice::new().hiding_addresses(), 0, &reads);
    let mut d = d.with_plan(Plan::parse("kmalloc:1,vmalloc:17M").unwrap());
    assert_eq!(d.on_readable().unwrap(), 3);
    assert_eq!(
        take_lines(&log),
        [
            "line alloc seq=1 irq_count=1 missed=0 kind=kmalloc handle=1",
            "line free seq=2 irq_count=2 missed=0 kind=kmalloc handle=1",
            "line error seq=3 irq_count=3 missed=0 kind=vmalloc handle=null op=alloc error=EDQUOT",
        ]
    );
    let lines = lines.borrow();
    let v = &lines[2];
    assert_eq!(v["error"], "EDQUOT");
    assert!(v["message"]
        .as_str()
        .unwrap()
        .starts_with("ioctl KMEMLAB_ALLOC failed: EDQUOT"));
    // Without a ring the press has no record: no source, no timestamp.
    assert_eq!(
        (&v["source"], &v["irq_ktime_ns"]),
        (&Value::Null, &Value::Null)
    );
    // The alloc line says which addresses were hidden.
    assert_eq!(
        (&lines[0]["hidden"], &lines[0]["phys_hidden"]),
        (&true.into(), &true.into())
    );
}

#[test]
fn stop_frees_what_is_held_then_reports_the_last_count() {
    let (mut d, log, lines) = daemon_with(MockDevice::new(), 0, &[Some(3), None]);
    d.on_readable().unwrap();
    take(&log);
    d.stop(StopReason::Sigint).unwrap();
    assert_eq!(
        take(&log),
        [
            "line free seq=null irq_count=3 missed=0 kind=kmalloc handle=1",
            "line summary irq_count=3",
            "line stop irq_count=3 reason=SIGINT"
        ]
    );
    assert_eq!(lines.borrow()[1]["irq_to_wake_ns"], Value::Null);
    assert!(d.device().live().is_empty());
}

#[test]
fn stop_with_nothing_held_writes_only_the_stop_line() {
    let (mut d, log, _) = daemon_with(MockDevice::new(), 0, &[Some(1), Some(2), None]);
    d.on_readable().unwrap();
    take(&log);
    d.stop(StopReason::Sigterm).unwrap();
    assert_eq!(
        take(&log),
        [
            "line summary irq_count=2",
            "line stop irq_count=2 reason=SIGTERM"
        ]
    );
}

/// A clock the test moves: CLOCK_MONOTONIC ns at each wake-up, one per read.

#[test]
fn summary_counts_per_kind() {
    let reads: Vec<Option<u32>> = (1..=7).map(Some).chain([None]).collect();
    let (mut d, _, lines) = daemon_with(MockDevice::new(), 0, &reads);
    d.device().fail_next(Errno::ENOMEM);
    d.on_readable().unwrap();
    d.stop(StopReason::Sigterm).unwrap();
    let lines = lines.borrow();
    let summary = &lines[lines.len() - 2];
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["presses"], 7);
    assert_eq!(summary["errors"], 1);
    assert_eq!(summary["live"], 0);
    let k = &summary["kinds"];
    assert_eq!(k["kmalloc"]["errors"], 1);
    assert_eq!(k["kmalloc"]["count"], 1);
    // vmalloc, dma_coherent, then kmalloc again (held, freed at stop).
    assert_eq!(k["vmalloc"]["count"], 1);
    assert_eq!(k["dma_coherent"]["count"], 1);
    assert_eq!(k["dma_coherent"]["bytes"], 1024);
    assert_eq!(k["kmalloc"]["frees"], 1);
    assert!(k["dma_coherent"]["free_ns_p99"].as_u64().is_some());
    assert_eq!(k["pages"]["count"], 0);
    assert!(d.device().live().is_empty());
}
