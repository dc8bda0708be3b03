//! Tests of the event lines' JSON.

use std::io;

use serde_json::{json, Value};

use super::test_press as press;
use super::*;
use kmemlab::device::Device;
use kmemlab::spec::{Flags, Kind};
use kmemlab::MockDevice;

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
        backend: Backend::Uio,
        uio: Some("/dev/uio0".into()),
        vfio: None,
        device: "/dev/kmemlab".into(),
        abi_version: 1,
        irq_count: 0,
        plan: "vmalloc:1:GFP_KERNEL".into(),
        ring: true,
    };
    assert_eq!(
        ev.to_line().unwrap(),
        "{\"event\":\"start\",\"ts_ns\":1767225600000000000,\"pid\":81,\
         \"backend\":\"uio\",\"uio\":\"/dev/uio0\",\"vfio\":null,\
         \"device\":\"/dev/kmemlab\",\"abi_version\":1,\
         \"irq_count\":0,\"plan\":\"vmalloc:1:GFP_KERNEL\",\"ring\":true}\n"
    );
}

#[test]
fn start_shape_with_vfio() {
    let ev = Event::Start {
        ts_ns: 1,
        pid: 81,
        backend: Backend::Vfio,
        uio: None,
        vfio: Some(VfioStart {
            group: "/dev/vfio/noiommu-0".into(),
            bus: "amba".into(),
            device: "9030000.pl061".into(),
            driver: "vfio-amba".into(),
            line: 3,
        }),
        device: "/dev/kmemlab".into(),
        abi_version: 3,
        irq_count: 0,
        plan: "vmalloc:1:GFP_KERNEL".into(),
        ring: false,
    };
    assert_eq!(
        parse(&ev),
        json!({
            "event": "start", "ts_ns": 1, "pid": 81, "backend": "vfio", "uio": null,
            "vfio": {
                "group": "/dev/vfio/noiommu-0", "bus": "amba",
                "device": "9030000.pl061", "driver": "vfio-amba", "line": 3
            },
            "device": "/dev/kmemlab", "abi_version": 3, "irq_count": 0,
            "plan": "vmalloc:1:GFP_KERNEL", "ring": false
        })
    );
}

#[test]
fn alloc_shape() {
    let dev = MockDevice::new();
    let a = dev.alloc(Kind::Vmalloc, 1, Flags::GFP_KERNEL).unwrap();
    let ev = Event::Alloc {
        press: press(Some(2)),
        alloc: AllocReport::from(&a),
        vmallocinfo: Some("0xffff800080100000-0xffff800080102000    8192 x".into()),
    };
    let line = ev.to_line().unwrap();
    // The press fields come first, right after the tag.
    assert!(
        line.starts_with(
            "{\"event\":\"alloc\",\"ts_ns\":5,\"seq\":2,\"irq_count\":3,\"missed\":1,\
         \"irq_to_wake_ns\":4200,\"source\":\"button\",\"irq_ktime_ns\":1000000,\
         \"handle\":1,"
        ),
        "{line}"
    );
    assert_eq!(
        parse(&ev),
        json!({
            "event": "alloc", "ts_ns": 5, "seq": 2, "irq_count": 3, "missed": 1,
            "irq_to_wake_ns": 4200, "source": "button", "irq_ktime_ns": 1_000_000,
            "handle": 1, "kind": "vmalloc", "size": 1, "usable_size": 4096,
            "gfp": ["GFP_KERNEL"], "vaddr": "0xffff800080100000", "phys": "0x40100000",
            "dma": null, "pages": 1, "phys_segments": 1, "zeroed": false,
            "alloc_ns": 101, "hidden": false, "phys_hidden": false, "persist": false,
            "vmallocinfo": "0xffff800080100000-0xffff800080102000    8192 x",
        })
    );
}

#[test]
fn free_shape() {
    let ev = Event::Free {
        press: press(Some(4)),
        handle: 9,
        kind: "dma_coherent",
        size: 1024,
        free_ns: 777,
    };
    assert_eq!(
        parse(&ev),
        json!({
            "event": "free", "ts_ns": 5, "seq": 4, "irq_count": 3, "missed": 1,
            "irq_to_wake_ns": 4200, "source": "button", "irq_ktime_ns": 1_000_000,
            "handle": 9, "kind": "dma_coherent",
            "size": 1024, "free_ns": 777,
        })
    );
    // At shutdown: no press number, no record, no latency.
    let ev = Event::Free {
        press: Press {
            irq_to_wake_ns: None,
            source: None,
            irq_ktime_ns: None,
            ..press(None)
        },
        handle: 9,
        kind: "kmalloc",
        size: 1,
        free_ns: 1,
    };
    let v = parse(&ev);
    for key in ["seq", "irq_to_wake_ns", "source", "irq_ktime_ns"] {
        assert_eq!(v[key], Value::Null, "{key}");
    }
    assert_eq!(v.as_object().unwrap().len(), 12);
}

#[test]
fn sources() {
    use kmemlab::uapi::{SOURCE_IRQ, SOURCE_TRIGGER};
    assert_eq!(Source::from_abi(SOURCE_IRQ), Some(Source::Button));
    assert_eq!(Source::from_abi(SOURCE_TRIGGER), Some(Source::Trigger));
    assert_eq!(Source::from_abi(2), None);
    let ev = Event::Free {
        press: Press {
            source: Some(Source::Trigger),
            irq_ktime_ns: Some(u64::MAX),
            ..press(Some(1))
        },
        handle: 1,
        kind: "kmalloc",
        size: 1,
        free_ns: 1,
    };
    let v = parse(&ev);
    assert_eq!(v["source"], "trigger");
    // Beyond 2^53: kept exact as an integer.
    assert_eq!(v["irq_ktime_ns"].as_u64(), Some(u64::MAX));
}

#[test]
fn step_error_shape() {
    let ev = Event::StepError {
        press: press(Some(7)),
        op: Op::Alloc,
        error: "ENOMEM".into(),
        message: "ioctl KMEMLAB_ALLOC failed: ENOMEM: Out of memory".into(),
        kind: "vmalloc",
        size: 4096,
        gfp: vec!["GFP_KERNEL"],
        handle: None,
    };
    assert_eq!(
        parse(&ev),
        json!({
            "event": "error", "ts_ns": 5, "seq": 7, "irq_count": 3, "missed": 1,
            "irq_to_wake_ns": 4200, "source": "button", "irq_ktime_ns": 1_000_000,
            "op": "alloc", "error": "ENOMEM",
            "message": "ioctl KMEMLAB_ALLOC failed: ENOMEM: Out of memory",
            "kind": "vmalloc", "size": 4096, "gfp": ["GFP_KERNEL"], "handle": null,
        })
    );
    let ev = Event::StepError {
        press: press(Some(8)),
        op: Op::Free,
        error: "EIO".into(),
        message: "ioctl KMEMLAB_FREE failed".into(),
        kind: "vmalloc",
        size: 4096,
        gfp: vec!["GFP_KERNEL"],
        handle: Some(3),
    };
    let v = parse(&ev);
    assert_eq!(
        (v["op"].as_str(), v["handle"].as_u64()),
        (Some("free"), Some(3))
    );
}

#[test]
fn stop_shape() {
    for (reason, name) in [
        (StopReason::Sigterm, "SIGTERM"),
        (StopReason::Sigint, "SIGINT"),
        (StopReason::Error, "error"),
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
