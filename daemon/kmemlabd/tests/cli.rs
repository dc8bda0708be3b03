//! kmemlabd's command line, run as a process.

use std::process::Command;

use serde_json::Value;

fn json(out: &[u8]) -> Value {
    let text = std::str::from_utf8(out).unwrap();
    assert_eq!(text.matches('\n').count(), 1, "{text:?}");
    serde_json::from_str(text).unwrap()
}

#[test]
fn daemon_fails_clearly_without_the_device() {
    let out = Command::new(env!("CARGO_BIN_EXE_kmemlabd"))
        .args(["--device", "/nonexistent/kmemlab"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("kmemlabd: failed to open /nonexistent/kmemlab: "),
        "{err}"
    );
    // The JSON stream gets an error line too.
    let v = json(&out.stdout);
    assert_eq!(v["event"], "error");
    assert_eq!(v["error"], "ENOENT");
    assert!(v["ts_ns"].as_u64().unwrap() > 0);
}

#[test]
fn daemon_usage() {
    let out = Command::new(env!("CARGO_BIN_EXE_kmemlabd"))
        .arg("--bogus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("usage: kmemlabd"));

    let out = Command::new(env!("CARGO_BIN_EXE_kmemlabd"))
        .arg("-h")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .starts_with("usage: kmemlabd"));
}

#[test]
fn daemon_refuses_a_bad_plan() {
    let out = Command::new(env!("CARGO_BIN_EXE_kmemlabd"))
        .args(["--plan", "kmalloc:1,vmalloc:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with(
            "kmemlabd: invalid plan step 2 \"vmalloc:0\": invalid size \"0\": must be at least 1 byte"
        ),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}
