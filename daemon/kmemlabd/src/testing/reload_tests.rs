//! The tests of [`crate::reload`] that run a daemon on the mock device (here, under
//! `testing`, so that no module imports the test harness that imports it).

use kmemlab::error::Error;
use std::path::Path;

use crate::config::DaemonConfig;
use crate::plan::Plan;

use kmemlab::MockDevice;

use super::*;

#[test]
fn reload_swaps_plan_and_debounce_or_keeps_them() {
    let (d, log, lines) = daemon_with(MockDevice::new(), 0, &[Some(1), None]);
    let mut d = d.with_config(&DaemonConfig {
        debounce_ms: 0,
        ..DaemonConfig::default()
    });
    d.on_readable().unwrap();
    take(&log);
    let new = DaemonConfig {
        plan: Plan::parse("pages:8K").unwrap(),
        debounce_ms: 20,
        uio_name: "other".into(),
        ..DaemonConfig::default()
    };
    d.reload(Some(Path::new("/etc/k.conf")), Some(Ok(new)), None)
        .unwrap();
    assert_eq!(
        take(&log),
        [
            "line free seq=null irq_count=1 missed=0 kind=kmalloc handle=1",
            "line reload"
        ]
    );
    let v = lines.borrow().last().unwrap().clone();
    assert_eq!(v["ok"], true);
    assert_eq!(v["changed"], serde_json::json!(["plan", "debounce_ms"]));
    assert_eq!(v["restart_needed"], serde_json::json!(["uio_name"]));
    assert_eq!(v["plan"], "pages:8K:GFP_KERNEL");
    assert_eq!(v["log_reopened"], false);
    assert_eq!(v["config"], "/etc/k.conf");
    assert_eq!(d.config().uio_name, "kmemlab");
    assert_eq!(d.config().debounce_ms, 20);
    assert!(d.runner().held().is_none());

    let bad = Err(Error::Config {
        path: "/etc/k.conf".into(),
        message: "unknown field `x`".into(),
    });
    d.reload(Some(Path::new("/etc/k.conf")), Some(bad), None)
        .unwrap();
    assert_eq!(
        take(&log),
        ["line error op=reload error=EINVAL", "line reload"]
    );
    let v = lines.borrow().last().unwrap().clone();
    assert_eq!(v["ok"], false);
    assert_eq!(v["changed"], serde_json::json!([]));
    assert_eq!(d.config().debounce_ms, 20);
    assert_eq!(d.runner().plan().to_string(), "pages:8K:GFP_KERNEL");
}

#[test]
fn the_backend_and_its_device_need_a_restart() {
    let (d, _log, lines) = daemon_with(MockDevice::new(), 0, &[]);
    let mut d = d.with_config(&DaemonConfig::default());
    let mut new = DaemonConfig {
        backend: crate::config::Backend::Vfio,
        ..DaemonConfig::default()
    };
    new.vfio.device = "9040000.pl061".into();
    new.vfio.line = 4;
    d.reload(None, Some(Ok(new)), None).unwrap();
    let v = lines.borrow().last().unwrap().clone();
    assert_eq!(v["ok"], true);
    assert_eq!(v["changed"], serde_json::json!([]));
    assert_eq!(
        v["restart_needed"],
        serde_json::json!(["backend", "vfio_device", "vfio_line"])
    );
    assert_eq!(d.config(), &DaemonConfig::default());
}
