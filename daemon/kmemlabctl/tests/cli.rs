//! kmemlabctl's command line, error reports and exit statuses, without a kernel module.

use std::io::Write;
use std::process::{Command, Stdio};

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

/// `kmemlabctl::exit`'s statuses, as a script would see them.
const FAILURE: i32 = 1;
const USAGE: i32 = 2;
const NO_DEVICE: i32 = 3;

#[test]
fn ctl_info_json_missing_device() {
    let out = ctl(&["info", "--json", "--device", "/nonexistent/kmemlab"]);
    assert_eq!(out.status.code(), Some(NO_DEVICE));
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
    assert_eq!(out.status.code(), Some(NO_DEVICE));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("kmemlabctl: failed to open /nonexistent/kmemlab"));
}

#[test]
fn ctl_info_names_the_failing_ioctl() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let out = ctl(&["info", "--json", "--device", file.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(FAILURE));
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
    assert_eq!(out.status.code(), Some(USAGE));
    assert_eq!(json(&out.stdout)["error"], "EINVAL");

    let out = ctl(&[]);
    assert_eq!(out.status.code(), Some(USAGE));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("error: missing command"), "{err}");

    let out = ctl(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(
        help.contains("Usage: kmemlabctl [OPTIONS] <COMMAND>"),
        "{help}"
    );
    assert!(help.contains("Exit status:"), "{help}");
}

#[test]
fn ctl_version_and_per_command_help() {
    let out = ctl(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("kmemlabctl {}\n", env!("CARGO_PKG_VERSION"))
    );
    let out = ctl(&["alloc", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.contains("Usage: kmemlabctl alloc"), "{help}");
    for opt in [
        "--kind",
        "--size",
        "--gfp",
        "--persist",
        "--count",
        "--hold",
    ] {
        assert!(help.contains(opt), "{opt}: {help}");
    }
    for other in ["--iters", "--kinds", "--interval", "--svg", "--all"] {
        assert!(!help.contains(other), "{other}: {help}");
    }
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
        assert_eq!(out.status.code(), Some(FAILURE), "{args:?}");
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
        &["list", "--kind", "slab", "--json"][..],
        &["info", "--kind", "kmalloc", "--json"][..],
        &["--json", "free", "1", "--all"][..],
    ] {
        let out = ctl(args);
        assert_eq!(out.status.code(), Some(USAGE), "{args:?}");
        let v = json(&out.stdout);
        assert_eq!(v["error"], "EINVAL", "{args:?}");
        assert!(!v["message"].as_str().unwrap().is_empty());
    }
    let out = ctl(&["alloc", "--kind", "kmalloc", "--size", "0"]);
    assert_eq!(out.status.code(), Some(USAGE));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with("error: invalid size \"0\": must be at least 1 byte\n"),
        "{err}"
    );
    assert!(err.contains("Usage: kmemlabctl alloc"), "{err}");
}

#[test]
fn ctl_every_operation_refused_is_a_failure_each_reported() {
    // Two frees, both refused (ENOTTY: not the module): status 1, an error line each.
    let file = tempfile::NamedTempFile::new().unwrap();
    let dev = file.path().to_str().unwrap();
    let out = ctl(&["free", "1", "2", "--json", "--device", dev]);
    assert_eq!(out.status.code(), Some(FAILURE));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    for (line, handle) in lines.iter().zip([1, 2]) {
        assert_eq!(line["error"], "ENOTTY");
        assert_eq!(line["handle"], handle);
    }
}

#[test]
fn ctl_report_reads_a_journal_export_from_stdin() {
    let plain = concat!(
        r#"{"event":"alloc","ts_ns":1,"seq":1,"kind":"kmalloc","size":64,"alloc_ns":300}"#,
        "\n",
        r#"{"event":"free","ts_ns":2,"seq":2,"kind":"kmalloc","size":64,"free_ns":100}"#,
        "\n"
    );
    let journal: String = plain
        .lines()
        .map(|l| serde_json::json!({"MESSAGE": l, "PRIORITY": "6"}).to_string() + "\n")
        .collect();
    let log = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(log.path(), plain).unwrap();
    let from_file = ctl(&["report", log.path().to_str().unwrap(), "--json"]);
    assert!(from_file.status.success());
    let mut child = Command::new(env!("CARGO_BIN_EXE_kmemlabctl"))
        .args(["--json", "report", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(journal.as_bytes())
        .unwrap();
    let from_stdin = child.wait_with_output().unwrap();
    assert!(from_stdin.status.success());
    assert_eq!(json(&from_stdin.stdout), json(&from_file.stdout));
    assert_eq!(json(&from_file.stdout)["kinds"][0]["allocs"], 1);

    let out = ctl(&["report", "/nonexistent/log.jsonl"]);
    assert_eq!(out.status.code(), Some(FAILURE));
}

#[test]
fn ctl_text_errors_carry_a_hint() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let out = ctl(&["stats", "--device", file.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(FAILURE));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("kmemlabctl: ioctl KMEMLAB_STATS failed: ENOTTY"));
    assert!(
        err.contains("\nhint: the module does not know this command"),
        "{err}"
    );
}
