//! The binaries' command lines and error reports, without a kernel module.

use std::process::Command;

use serde_json::Value;

fn ctl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kmemlabctl"))
        .args(args)
        .output()
        .unwrap()
}

fn json(out: &[u8]) -> Value {
    let text = std::str::from_utf8(out).unwrap();
    assert_eq!(text.matches('\n').count(), 1, "{text:?}");
    serde_json::from_str(text).unwrap()
}

#[test]
fn ctl_info_json_missing_device() {
    let out = ctl(&["info", "--json", "--device", "/nonexistent/kmemlab"]);
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out.stdout);
    assert_eq!(v["error"], "ENOENT");
    assert!(v["message"]
        .as_str()
        .unwrap()
        .starts_with("failed to open /nonexistent/kmemlab: "));
}

#[test]
fn ctl_info_text_error_goes_to_stderr() {
    let out = ctl(&["--device", "/nonexistent/kmemlab", "info"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("kmemlabctl: failed to open /nonexistent/kmemlab"));
}

#[test]
fn ctl_info_names_the_failing_ioctl() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let out = ctl(&["info", "--json", "--device", file.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out.stdout);
    assert_eq!(v["error"], "ENOTTY");
    assert!(v["message"]
        .as_str()
        .unwrap()
        .starts_with("ioctl KMEMLAB_INFO failed"));
}

#[test]
fn ctl_usage_errors() {
    let out = ctl(&["frobnicate", "--json"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(json(&out.stdout)["error"], "EINVAL");

    let out = ctl(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("missing command"));

    let out = ctl(&["--help"]);
    assert!(out.status.success());
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .starts_with("usage: kmemlabctl"));
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
