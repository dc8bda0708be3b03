//! The tests of [`crate::press`] that run a daemon on the mock device (here, under
//! `testing`, so that no module imports the test harness that imports it).

use std::cell::RefCell;
use std::collections::VecDeque;

use kmemlab::ring::builder::RingBuilder;
use kmemlab::uapi::{SOURCE_IRQ, SOURCE_TRIGGER};
use kmemlab::MockDevice;

use serde_json::Value;

use super::*;
use crate::press::*;

#[test]
fn missed_arithmetic() {
    assert_eq!(missed(0, 1), 0);
    assert_eq!(missed(1, 2), 0);
    assert_eq!(missed(1, 3), 1);
    assert_eq!(missed(0, 101), 100);
    // Wrap-around of the 32-bit counter.
    assert_eq!(missed(u32::MAX, 0), 0);
    assert_eq!(missed(u32::MAX - 1, 1), 2);
    assert_eq!(missed(u32::MAX, u32::MAX - 1), u32::MAX - 1);
    // No change: nothing missed (and no underflow).
    assert_eq!(missed(5, 5), 0);
}

#[test]
fn each_press_is_re_enabled_before_its_line() {
    let (mut d, log, _) = daemon_with(MockDevice::new(), 0, &[Some(1), None]);
    assert_eq!(d.on_readable().unwrap(), 1);
    assert_eq!(
        take(&log),
        [
            "read 1",
            "enable",
            "line alloc seq=1 irq_count=1 missed=0 kind=kmalloc handle=1",
            "would block"
        ]
    );
    assert_eq!(d.last_count(), 1);
}

#[test]
fn drains_until_would_block_and_counts_missed() {
    let reads = [Some(2), Some(5), None, Some(6), None];
    let (mut d, log, _) = daemon_with(MockDevice::new(), 1, &reads);
    assert_eq!(d.on_readable().unwrap(), 2);
    assert_eq!(d.on_readable().unwrap(), 1);
    assert_eq!(
        take(&log),
        [
            "read 2",
            "enable",
            "line alloc seq=1 irq_count=2 missed=0 kind=kmalloc handle=1",
            "read 5",
            "enable",
            "line coalesced irq_count=5 missed=2",
            "line free seq=2 irq_count=5 missed=2 kind=kmalloc handle=1",
            "would block",
            "read 6",
            "enable",
            "line alloc seq=3 irq_count=6 missed=0 kind=vmalloc handle=2",
            "would block"
        ]
    );
}

#[test]
fn counts_across_wrap_around() {
    let reads = [Some(u32::MAX), Some(0), Some(2), None];
    let (mut d, log, _) = daemon_with(MockDevice::new(), u32::MAX - 1, &reads);
    assert_eq!(d.on_readable().unwrap(), 3);
    let lines: Vec<String> = take_lines(&log)
        .into_iter()
        .map(|l| l.split(" kind").next().unwrap().to_owned())
        .collect();
    assert_eq!(
        lines,
        [
            format!("line alloc seq=1 irq_count={} missed=0", u32::MAX),
            "line free seq=2 irq_count=0 missed=0".to_string(),
            "line coalesced irq_count=2 missed=1".to_string(),
            "line alloc seq=3 irq_count=2 missed=1".to_string(),
        ]
    );
}

#[test]
fn irq_to_wake_comes_from_the_ring() {
    let mut ring = RingBuilder::standard();
    ring.push(1, 999_000, SOURCE_IRQ);
    ring.push(2, 400_000, SOURCE_TRIGGER);
    // Event 3's slot is being rewritten (seq 0): no figure for it.
    ring.push(3, 500_000, SOURCE_IRQ);
    let at = ring.slot_offset(3);
    ring.set_slot_seq(at, 0);
    let reads = [Some(1), Some(2), Some(3), Some(4), None];
    let (d, _, lines) = daemon_with(MockDevice::new(), 0, &reads);
    let mut d = d.with_ring(Box::new(ring.into_bytes()));
    d.start().unwrap();
    d.on_readable().unwrap();
    let lines = lines.borrow();
    assert_eq!(lines[0]["ring"], true);
    let lat: Vec<Option<u64>> = lines[1..]
        .iter()
        .map(|v| v["irq_to_wake_ns"].as_u64())
        .collect();
    // The test clock says 1_000_000 ns at every wake-up.
    assert_eq!(lat, [Some(1_000), Some(600_000), None, None]);
    // Source and timestamp come from the same record, or are null with it.
    let fields: Vec<(Value, Value)> = lines[1..]
        .iter()
        .map(|v| (v["source"].clone(), v["irq_ktime_ns"].clone()))
        .collect();
    assert_eq!(
        fields,
        [
            ("button".into(), 999_000.into()),
            ("trigger".into(), 400_000.into()),
            (Value::Null, Value::Null),
            (Value::Null, Value::Null),
        ]
    );
}

#[test]
fn spurious_wakeup_writes_nothing() {
    let (mut d, log, _) = daemon_with(MockDevice::new(), 0, &[None]);
    assert_eq!(d.on_readable().unwrap(), 0);
    assert_eq!(take(&log), ["would block"]);
}

#[test]
fn unchanged_count_re_enables_without_a_line() {
    let (mut d, log, _) = daemon_with(MockDevice::new(), 4, &[Some(4), None]);
    assert_eq!(d.on_readable().unwrap(), 1);
    assert_eq!(take(&log), ["read 4", "enable", "would block"]);
    assert_eq!(d.presses(), 0);
}

#[test]
fn failed_enable_writes_no_line_and_runs_no_step() {
    let (mut d, log, _) = daemon_with(MockDevice::new(), 0, &[Some(1)]);
    d.irq.fail_enable = true;
    let err = d.on_readable().unwrap_err();
    assert_eq!(err.errno_name(), "EIO");
    assert_eq!(take(&log), ["read 1"]);
    assert_eq!(d.last_count(), 0);
    assert!(d.device().calls().is_empty());
}

fn scripted_clock(times: &[u64]) -> fn() -> u64 {
    thread_local! {
        static TIMES: RefCell<VecDeque<u64>> = RefCell::default();
    }
    TIMES.with(|t| *t.borrow_mut() = times.iter().copied().collect());
    || TIMES.with(|t| t.borrow_mut().pop_front().unwrap_or(u64::MAX))
}

const MS: u64 = 1_000_000;

#[test]
fn debounce_refuses_presses_too_close_to_the_last_accepted_one() {
    let reads = [Some(1), Some(2), Some(3), Some(4), None];
    let (d, log, lines) = daemon_with(MockDevice::new(), 0, &reads);
    // 0 ms, +10 ms (bounce), +49 ms (bounce: still within 50 of the first), +50 ms.
    let mut d = d.with_debounce_ms(50).with_clock(scripted_clock(&[
        100 * MS,
        110 * MS,
        149 * MS,
        150 * MS,
    ]));
    assert_eq!(d.on_readable().unwrap(), 4);
    assert_eq!(
        take_lines(&log),
        [
            "line alloc seq=1 irq_count=1 missed=0 kind=kmalloc handle=1",
            "line bounce irq_count=2 missed=0",
            "line bounce irq_count=3 missed=0",
            "line free seq=2 irq_count=4 missed=0 kind=kmalloc handle=1",
        ]
    );
    let lines = lines.borrow();
    assert_eq!(lines[1]["since_last_ns"], 10 * MS);
    assert_eq!(lines[1]["clock"], "wake");
    assert_eq!(lines[1]["debounce_ms"], 50);
    assert_eq!(lines[2]["since_last_ns"], 49 * MS);
    assert!(lines[1].get("seq").is_none());
    assert_eq!((d.presses(), d.bounces(), d.events()), (2, 2, 4));
    // Only the accepted presses ran steps.
    assert_eq!(d.device().calls().len(), 2);
}

#[test]
fn debounce_prefers_the_kernel_timestamps() {
    let mut ring = RingBuilder::standard();
    ring.push(1, 100 * MS, SOURCE_IRQ);
    ring.push(2, 105 * MS, SOURCE_IRQ);
    let reads = [Some(1), Some(2), None];
    let (d, log, lines) = daemon_with(MockDevice::new(), 0, &reads);
    // The daemon woke late for the first and on time for the second: the wake-ups
    // are 100 ms apart, the interrupts 5 ms.
    let mut d = d
        .with_ring(Box::new(ring.into_bytes()))
        .with_debounce_ms(50)
        .with_clock(scripted_clock(&[101 * MS, 201 * MS]));
    d.on_readable().unwrap();
    assert_eq!(
        take_lines(&log)[1],
        "line bounce irq_count=2 missed=0".to_string()
    );
    let v = &lines.borrow()[1];
    assert_eq!(v["clock"], "irq");
    assert_eq!(v["since_last_ns"], 5 * MS);
    assert_eq!(v["irq_to_wake_ns"], 96 * MS);
}

#[test]
fn a_hundred_coalesced_interrupts_count_exactly() {
    // `trigger --count 100` as three wake-ups: counts 1, 60, 100.
    let reads = [Some(1), Some(60), None, Some(100), None];
    let (d, log, lines) = daemon_with(MockDevice::new(), 0, &reads);
    let mut d = d
        .with_debounce_ms(50)
        .with_clock(scripted_clock(&[0, MS, 2 * MS]));
    d.on_readable().unwrap();
    d.on_readable().unwrap();
    assert_eq!(
        take_lines(&log),
        [
            "line alloc seq=1 irq_count=1 missed=0 kind=kmalloc handle=1",
            "line coalesced irq_count=60 missed=58",
            "line bounce irq_count=60 missed=58",
            "line coalesced irq_count=100 missed=39",
            "line bounce irq_count=100 missed=39",
        ]
    );
    assert_eq!(lines.borrow()[3]["coalesced"], 97);
    assert_eq!(lines.borrow()[3]["events"], 100);
    assert_eq!(d.presses() + d.bounces() + d.coalesced(), 100);
    assert_eq!(d.events(), 100);
    d.write_stats().unwrap();
    let v = lines.borrow().last().unwrap().clone();
    assert_eq!(v["event"], "stats");
    assert_eq!(
        (
            &v["events"],
            &v["presses"],
            &v["bounces"],
            &v["coalesced"],
            &v["live"]
        ),
        (&100.into(), &1.into(), &2.into(), &97.into(), &1.into())
    );
    assert_eq!(v["kinds"]["kmalloc"]["count"], 1);
    assert_eq!(v["kinds"]["kmalloc"]["bytes"], 1);
    assert!(v["kinds"]["kmalloc"]["alloc_ns_p50"].as_u64().is_some());
    assert_eq!(v["kinds"]["kmalloc"]["free_ns_p50"], Value::Null);
}
