//! The JSON log contract: an example of every line the daemon writes, produced by the
//! real serializer, validates against `schema/kmemlabd-event.schema.json`, and lines that
//! break the contract do not. Lines given in `KMEMLAB_SCHEMA_CHECK` (a file of JSON
//! lines, e.g. a log from the VM) are validated too.

use std::io;

use kmemlab::{AllocReport, Device, Error, Flags, Kind, MockDevice};
use kmemlabd::event::Op;
use kmemlabd::event::VfioStart;
use kmemlabd::{Backend, Clock, Event, Press, Source, Stats, StopReason};
use serde_json::Value;

fn validator() -> jsonschema::Validator {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schema/kmemlabd-event.schema.json"
    );
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::validator_for(&schema).expect("the schema is valid draft 2020-12")
}

fn check(v: &jsonschema::Validator, line: &Value) {
    let errors: Vec<String> = v.iter_errors(line).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{line}\n{errors:#?}");
}

fn press(seq: Option<u64>) -> Press {
    Press {
        ts_ns: 1_767_225_601_000_000_000,
        seq,
        irq_count: 7,
        missed: 0,
        irq_to_wake_ns: Some(48_210),
        source: Some(Source::Button),
        irq_ktime_ns: Some(123_456_789_000),
    }
}

/// A press whose event has no ring record.
fn press_without_record(seq: Option<u64>) -> Press {
    Press {
        irq_to_wake_ns: None,
        source: None,
        irq_ktime_ns: None,
        ..press(seq)
    }
}

/// One example of every event type (and form) the daemon writes.
fn examples() -> Vec<Event> {
    let dev = MockDevice::new();
    let a = dev.alloc(Kind::Vmalloc, 1, Flags::GFP_KERNEL).unwrap();
    let dma = dev
        .alloc(Kind::DmaCoherent, 1024, Flags::GFP_ATOMIC)
        .unwrap();
    let hidden = MockDevice::new().hiding_addresses();
    let h = hidden.alloc(Kind::Kmalloc, 64, Flags::GFP_KERNEL).unwrap();
    // vaddr shown, phys and dma hidden: CAP_SYSLOG without CAP_SYS_ADMIN.
    let kaddr = MockDevice::new().with_privileges(kmemlab::uapi::PRIV_KADDR);
    let k = kaddr
        .alloc(Kind::DmaCoherent, 1024, Flags::GFP_ATOMIC)
        .unwrap();
    let mut stats = Stats::default();
    stats.alloc(Kind::Vmalloc, 1, 900);
    stats.free(Kind::Vmalloc, 300);
    stats.error(Kind::Pages);
    let counters = kmemlabd::Counters {
        irq_count: 100,
        events: 100,
        presses: 1,
        bounces: 2,
        coalesced: 97,
        live: 1,
        errors: 1,
        kinds: stats.report(),
    };
    let fatal = Error::IrqRead {
        path: "/dev/uio0".into(),
        source: io::Error::from_raw_os_error(5),
    };
    vec![
        Event::Start {
            ts_ns: 1_767_225_600_000_000_000,
            pid: 81,
            backend: Backend::Uio,
            uio: Some("/dev/uio0".into()),
            vfio: None,
            device: "/dev/kmemlab".into(),
            abi_version: kmemlab::uapi::ABI_VERSION,
            irq_count: 0,
            plan: kmemlabd::Plan::default().to_string(),
            ring: true,
        },
        Event::Start {
            ts_ns: 1_767_225_600_000_000_000,
            pid: 82,
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
            abi_version: kmemlab::uapi::ABI_VERSION,
            irq_count: 0,
            plan: kmemlabd::Plan::default().to_string(),
            ring: false,
        },
        Event::Alloc {
            press: press(Some(1)),
            alloc: AllocReport::from(&a),
            vmallocinfo: Some("0xffff800080100000-0xffff800080102000    8192 x".into()),
        },
        Event::Alloc {
            press: press(Some(2)),
            alloc: AllocReport::from(&dma),
            vmallocinfo: None,
        },
        Event::Alloc {
            press: press_without_record(Some(3)),
            alloc: AllocReport::from(&h),
            vmallocinfo: None,
        },
        Event::Alloc {
            press: Press {
                source: Some(Source::Trigger),
                ..press(Some(3))
            },
            alloc: AllocReport::from(&k),
            vmallocinfo: None,
        },
        Event::Free {
            press: press(Some(4)),
            handle: 1,
            kind: "vmalloc",
            size: 1,
            free_ns: 210,
        },
        Event::Free {
            press: press_without_record(None),
            handle: 2,
            kind: "dma_coherent",
            size: 1024,
            free_ns: 210,
        },
        Event::StepError {
            press: press(Some(5)),
            op: Op::Alloc,
            error: "ENOMEM".into(),
            message: "ioctl KMEMLAB_ALLOC failed: ENOMEM: Out of memory".into(),
            kind: "vmalloc",
            size: 1,
            gfp: vec!["GFP_KERNEL"],
            handle: None,
        },
        Event::StepError {
            press: press_without_record(Some(6)),
            op: Op::Free,
            error: "EIO".into(),
            message: "ioctl KMEMLAB_FREE failed: EIO".into(),
            kind: "pages",
            size: 8192,
            gfp: vec!["GFP_KERNEL", "__GFP_ZERO"],
            handle: Some(3),
        },
        Event::Coalesced {
            ts_ns: 1,
            irq_count: 60,
            missed: 58,
            coalesced: 58,
            events: 60,
        },
        Event::Bounce {
            ts_ns: 1,
            irq_count: 61,
            missed: 0,
            since_last_ns: 10_000_000,
            debounce_ms: 50,
            clock: Clock::Irq,
            irq_to_wake_ns: Some(40_000),
        },
        Event::Bounce {
            ts_ns: 1,
            irq_count: 62,
            missed: 0,
            since_last_ns: 1,
            debounce_ms: 50,
            clock: Clock::Wake,
            irq_to_wake_ns: None,
        },
        Event::Stats {
            ts_ns: 1,
            counters: counters.clone(),
        },
        Event::Summary { ts_ns: 1, counters },
        Event::Reload {
            ts_ns: 1,
            ok: true,
            config: Some("/etc/kmemlab/kmemlabd.conf".into()),
            changed: vec!["plan", "debounce_ms", "log"],
            restart_needed: vec!["uio_name", "device"],
            log_reopened: true,
            plan: "pages:8K:GFP_KERNEL".into(),
            debounce_ms: 20,
            log: Some("/var/log/kmemlab/kmemlabd.jsonl".into()),
        },
        Event::Reload {
            ts_ns: 1,
            ok: false,
            config: None,
            changed: vec![],
            restart_needed: vec![],
            log_reopened: false,
            plan: "vmalloc:1:GFP_KERNEL".into(),
            debounce_ms: 50,
            log: None,
        },
        Event::ReloadError {
            ts_ns: 1,
            op: Op::Reload,
            error: "EINVAL".into(),
            message: "invalid config /etc/kmemlab/kmemlabd.conf: unknown field `x`".into(),
        },
        Event::Stop {
            ts_ns: 1,
            irq_count: u32::MAX,
            reason: StopReason::Sigterm,
        },
        Event::Stop {
            ts_ns: 1,
            irq_count: 0,
            reason: StopReason::Sigint,
        },
        Event::error(1, &fatal),
    ]
}

#[test]
fn every_event_type_validates() {
    let v = validator();
    let mut seen = std::collections::BTreeSet::new();
    for ev in examples() {
        let line = ev.to_line().unwrap();
        let value: Value = serde_json::from_str(&line).unwrap();
        seen.insert(value["event"].as_str().unwrap().to_owned());
        check(&v, &value);
    }
    let want = [
        "alloc",
        "bounce",
        "coalesced",
        "error",
        "free",
        "reload",
        "start",
        "stats",
        "stop",
        "summary",
    ];
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), want);
}

#[test]
fn lines_that_break_the_contract_fail() {
    let v = validator();
    let good: Vec<Value> = examples()
        .iter()
        .map(|e| serde_json::from_str(&e.to_line().unwrap()).unwrap())
        .collect();
    for line in &good {
        // An unknown key.
        let mut bad = line.clone();
        bad["extra"] = 1.into();
        assert!(!v.is_valid(&bad), "{bad}");
        // A missing required key.
        let mut bad = line.clone();
        bad.as_object_mut().unwrap().remove("ts_ns");
        assert!(!v.is_valid(&bad), "{bad}");
        // An unknown event type.
        let mut bad = line.clone();
        bad["event"] = "press".into();
        assert!(!v.is_valid(&bad), "{bad}");
    }
    // Addresses are lower-case 0x hex or null.
    let mut bad = good[2].clone();
    bad["vaddr"] = "0xFFFF".into();
    assert!(!v.is_valid(&bad));
    bad["vaddr"] = "ffff".into();
    assert!(!v.is_valid(&bad));
    bad["vaddr"] = Value::Null;
    assert!(v.is_valid(&bad));
    // A negative count.
    let mut bad = good[0].clone();
    bad["irq_count"] = (-1).into();
    assert!(!v.is_valid(&bad));
    // Every press line carries source and irq_ktime_ns (null or not), and phys_hidden on
    // an alloc line; source is button, trigger or null.
    let presses: Vec<&Value> = good.iter().filter(|l| l.get("seq").is_some()).collect();
    assert_eq!(presses.len(), 8);
    for line in presses {
        for key in ["source", "irq_ktime_ns"] {
            let mut bad = line.clone();
            bad.as_object_mut().unwrap().remove(key);
            assert!(!v.is_valid(&bad), "{bad}");
        }
        let mut bad = line.clone();
        bad["source"] = "irq".into();
        assert!(!v.is_valid(&bad), "{bad}");
        let mut bad = line.clone();
        bad["irq_ktime_ns"] = (-1).into();
        assert!(!v.is_valid(&bad), "{bad}");
    }
    let mut bad = good[2].clone();
    bad.as_object_mut().unwrap().remove("phys_hidden");
    assert!(!v.is_valid(&bad));
    // Both sources and no record at all are valid.
    assert_eq!(good[2]["source"], "button");
    assert_eq!(good[5]["source"], "trigger");
    assert_eq!(good[4]["source"], Value::Null);
    assert_eq!(good[5]["phys_hidden"], true);
    assert_eq!(good[5]["hidden"], false);
    // The start line's backend and its device agree.
    let (uio, vfio) = (&good[0], &good[1]);
    assert_eq!(
        (uio["backend"].as_str(), vfio["backend"].as_str()),
        (Some("uio"), Some("vfio"))
    );
    for (line, key, value) in [
        (uio, "uio", Value::Null),
        (uio, "vfio", vfio["vfio"].clone()),
        (uio, "backend", "pci".into()),
        (vfio, "uio", "/dev/uio0".into()),
        (vfio, "vfio", Value::Null),
        (vfio, "ring", true.into()),
    ] {
        let mut bad = line.clone();
        bad[key] = value;
        assert!(!v.is_valid(&bad), "{bad}");
    }
    let mut bad = vfio.clone();
    bad["vfio"]["line"] = 8.into();
    assert!(!v.is_valid(&bad), "{bad}");
    // A start line of a kmemlabd older than the backends (the kmemlabctl fixture's)
    // has neither key and is a uio one.
    let mut old = uio.clone();
    old.as_object_mut().unwrap().remove("backend");
    old.as_object_mut().unwrap().remove("vfio");
    assert!(v.is_valid(&old), "{old}");
}

/// Validates a real log: `KMEMLAB_SCHEMA_CHECK=FILE cargo test -p kmemlabd --test schema --
/// --ignored`. Ignored by default (it needs a log); run without the variable, it fails.
#[test]
#[ignore = "needs KMEMLAB_SCHEMA_CHECK=FILE, a kmemlabd log; run with -- --ignored"]
fn lines_from_a_log_validate() {
    let path = std::env::var_os("KMEMLAB_SCHEMA_CHECK")
        .expect("KMEMLAB_SCHEMA_CHECK=FILE names the kmemlabd log to validate");
    let v = validator();
    let text = std::fs::read_to_string(&path).unwrap();
    let mut n = 0;
    for line in text.lines().filter(|l| l.starts_with('{')) {
        check(&v, &serde_json::from_str(line).unwrap());
        n += 1;
    }
    assert!(n > 0, "no JSON lines in {path:?}");
    eprintln!("{n} lines valid");
}

/// `kmemlabctl`'s test fixture is a real log of six button presses from the VM (`cargo xtask vm
/// --presses 6`): it must still be what the daemon writes, so it must validate.
#[test]
fn the_kmemlabctl_fixture_validates() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../kmemlabctl/tests/fixtures/vm_presses.jsonl"
    );
    let v = validator();
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for line in &lines {
        check(&v, line);
    }
    let events: Vec<&str> = lines.iter().filter_map(|l| l["event"].as_str()).collect();
    assert_eq!(
        events,
        ["start", "alloc", "free", "alloc", "free", "alloc", "free", "summary", "stop"]
    );
    assert!(lines[1..7].iter().all(|l| l["source"] == "button"));
}
