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
    // Through tracing (so that journald gets its priority): time, level, message.
    assert!(
        err.contains(" ERROR failed to open /nonexistent/kmemlab: "),
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

#[test]
fn daemon_refuses_a_bad_backend() {
    for (args, want) in [
        (
            &["--backend", "pci"][..],
            "kmemlabd: invalid backend \"pci\": want uio or vfio",
        ),
        (
            &["--backend", "vfio", "--vfio-line", "8"][..],
            "kmemlabd: invalid gpio line \"8\": a pl061 has lines 0 to 7",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_kmemlabd"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.starts_with(want), "{err}");
        assert!(out.stdout.is_empty());
    }
    // In the config file: exit status 2 too, naming the file and the key.
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("kmemlabd.conf");
    std::fs::write(&conf, "backend = \"vfio \"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kmemlabd"))
        .arg("--config")
        .arg(&conf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("backend: invalid backend \"vfio \": want uio or vfio"),
        "{err}"
    );
}

/// With the VFIO backend the allocations still need /dev/kmemlab: it is opened first, and
/// the controller is not touched when it is missing.
#[test]
fn vfio_backend_fails_clearly_without_the_device() {
    let out = Command::new(env!("CARGO_BIN_EXE_kmemlabd"))
        .args(["--backend", "vfio", "--device", "/nonexistent/kmemlab"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out.stdout);
    assert_eq!(v["event"], "error");
    assert_eq!(v["error"], "ENOENT");
    assert!(v["message"]
        .as_str()
        .unwrap()
        .starts_with("failed to open /nonexistent/kmemlab"));
}

/// With `$JOURNAL_STREAM` naming its stderr (as systemd sets it), each diagnostic line
/// carries its syslog priority as a `<N>` prefix; naming another file, it does not.
#[test]
fn daemon_prefixes_priorities_for_the_journal() {
    use std::os::unix::fs::MetadataExt;

    let tmp = tempfile::tempdir().unwrap();
    let run = |stream: &dyn Fn(&std::fs::Metadata) -> String| {
        let path = tmp.path().join("stderr");
        let file = std::fs::File::create(&path).unwrap();
        let meta = file.metadata().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_kmemlabd"))
            .args(["--device", "/nonexistent/kmemlab"])
            .env("JOURNAL_STREAM", stream(&meta))
            .stderr(file)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        std::fs::read_to_string(&path).unwrap()
    };
    let err = run(&|m| format!("{}:{}", m.dev(), m.ino()));
    assert_eq!(
        err,
        "<3>failed to open /nonexistent/kmemlab: No such file or directory (os error 2)\n"
    );
    // Errors printed before the daemon runs get the prefix too.
    let path = tmp.path().join("stderr-usage");
    let file = std::fs::File::create(&path).unwrap();
    let meta = file.metadata().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kmemlabd"))
        .args(["--plan", "slab"])
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stderr(file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let usage = std::fs::read_to_string(&path).unwrap();
    assert!(
        usage.starts_with("<3>kmemlabd: invalid plan step 1"),
        "{usage}"
    );
    let err = run(&|m| format!("{}:{}", m.dev(), m.ino() + 1));
    assert!(
        err.contains(" ERROR failed to open /nonexistent/kmemlab") && !err.starts_with('<'),
        "{err}"
    );
}
