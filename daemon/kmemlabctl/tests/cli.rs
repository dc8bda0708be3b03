//! kmemlabctl's command line and error reports, without a kernel module.

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
fn ctl_every_command_names_its_ioctl() {
    // A regular file is not /dev/kmemlab: every ioctl is ENOTTY, named in the message.
    let file = tempfile::NamedTempFile::new().unwrap();
    let dev = file.path().to_str().unwrap();
    for (args, cmd) in [
        (
            &["alloc", "--kind", "kmalloc", "--size", "1"][..],
            "KMEMLAB_ALLOC",
        ),
        (&["free", "1"][..], "KMEMLAB_FREE"),
        (&["list"][..], "KMEMLAB_LIST"),
        (&["stats"][..], "KMEMLAB_STATS"),
        (
            &["bench", "--kind", "vmalloc", "--size", "4K"][..],
            "KMEMLAB_BENCH",
        ),
        (&["trigger", "--count", "2"][..], "KMEMLAB_TRIGGER"),
    ] {
        let mut all = args.to_vec();
        all.extend(["--json", "--device", dev]);
        let out = ctl(&all);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let v = json(&out.stdout);
        assert_eq!(v["error"], "ENOTTY", "{args:?}");
        assert!(
            v["message"]
                .as_str()
                .unwrap()
                .starts_with(&format!("ioctl {cmd} failed: ENOTTY")),
            "{v}"
        );
        // Nothing on stderr in JSON mode (no note, no hint).
        assert!(out.stderr.is_empty(), "{args:?}");
    }
}

#[test]
fn ctl_bad_arguments_are_usage_errors() {
    for args in [
        &["alloc", "--kind", "kmalloc", "--size", "0", "--json"][..],
        &["alloc", "--kind", "slab", "--size", "1", "--json"][..],
        &[
            "alloc", "--kind", "kmalloc", "--size", "1", "--gfp", "GFP_FOO", "--json",
        ][..],
        &["free", "--json"][..],
        &["trigger", "--count", "0", "--json"][..],
        &["list", "--kind", "kmalloc", "--json"][..],
    ] {
        let out = ctl(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let v = json(&out.stdout);
        assert_eq!(v["error"], "EINVAL", "{args:?}");
        assert!(!v["message"].as_str().unwrap().is_empty());
    }
    let out = ctl(&["alloc", "--kind", "kmalloc", "--size", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with("kmemlabctl: invalid size \"0\": must be at least 1 byte\n"),
        "{err}"
    );
}

#[test]
fn ctl_text_errors_carry_a_hint() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let out = ctl(&["stats", "--device", file.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("kmemlabctl: ioctl KMEMLAB_STATS failed: ENOTTY"));
    assert!(
        err.contains("\nhint: the module does not know this command"),
        "{err}"
    );
}
