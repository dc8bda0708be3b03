//! `watch` and `bench --threads` on the command line: what they parse to, and the usage
//! errors (exit status 2) of bad combinations.

use std::process::Command as Process;

use kmemlab::spec::{Flags, Kind};
use kmemlabctl::args::parse_args;
use kmemlabctl::bench::threads::ThreadSpec;
use kmemlabctl::command::Command;
use kmemlabctl::watch::WatchSpec;

fn parse(args: &[&str]) -> Result<Command, String> {
    parse_args(args.iter().map(|s| s.to_string()))
        .map(|inv| inv.command)
        .map_err(|e| e.usage().message)
}

#[test]
fn watch_parses_its_options() {
    assert_eq!(parse(&["watch"]), Ok(Command::Watch(WatchSpec::default())));
    assert_eq!(
        parse(&["watch", "--num-events", "5", "--idle-timeout=200", "--json"]),
        Ok(Command::Watch(WatchSpec {
            num_events: Some(5),
            idle_timeout_ms: Some(200),
        }))
    );
}

#[test]
fn threads_parse_with_their_defaults() {
    assert_eq!(
        parse(&["bench", "--threads", "2", "--duration", "3"]),
        Ok(Command::Threads(ThreadSpec {
            threads: 2,
            duration_s: 3,
            kind: Kind::Kmalloc,
            size: 64,
            flags: Flags::GFP_KERNEL,
        }))
    );
    assert_eq!(
        parse(&[
            "bench",
            "--threads",
            "4",
            "--kind",
            "vmalloc",
            "--size",
            "8K",
            "--gfp",
            "zero"
        ]),
        Ok(Command::Threads(ThreadSpec {
            threads: 4,
            duration_s: 5,
            kind: Kind::Vmalloc,
            size: 8192,
            flags: Flags::parse_gfp("__GFP_ZERO").unwrap(),
        }))
    );
    // Without --threads or --duration, bench is what it was.
    assert!(matches!(
        parse(&["bench", "--kind", "kmalloc", "--size", "8"]),
        Ok(Command::Bench { iters: 1000, .. })
    ));
}

#[test]
fn bad_combinations_are_usage_errors() {
    for (args, want) in [
        (
            &["bench", "--threads", "0"][..],
            "invalid threads \"0\": must be at least 1",
        ),
        (
            &["bench", "--threads", "2", "--duration", "0"][..],
            "invalid duration \"0\": must be at least 1",
        ),
        (
            &["bench", "--threads", "5000"][..],
            "invalid threads \"5000\": must be at most 1024",
        ),
        (
            &["bench", "--duration", "2"][..],
            "bench --duration needs --threads",
        ),
        (
            &["bench", "--threads", "2", "--sizes", "8,16"][..],
            "bench --threads takes --duration, --kind, --size and --gfp, not --sizes",
        ),
        (
            &["bench", "--threads", "2", "--rounds", "3"][..],
            "not --rounds",
        ),
        (
            &["bench", "--threads", "2", "--live", "3"][..],
            "not --live",
        ),
        (
            &["bench", "--threads", "2", "--iters", "3"][..],
            "not --iters",
        ),
        (&["bench", "--threads", "x"][..], "invalid threads \"x\""),
        (
            &["watch", "--num-events", "0"][..],
            "invalid num-events \"0\"",
        ),
        (
            &["watch", "--idle-timeout", "soon"][..],
            "invalid idle-timeout",
        ),
        // Options of another command: clap's own message.
        (
            &["watch", "--kind", "kmalloc"][..],
            "unexpected argument '--kind'",
        ),
        (&["watch", "extra"][..], "unexpected argument 'extra'"),
        (
            &["alloc", "--threads", "2"][..],
            "unexpected argument '--threads'",
        ),
        (
            &["info", "--num-events", "2"][..],
            "unexpected argument '--num-events'",
        ),
    ] {
        let msg = parse(args).unwrap_err();
        assert!(msg.contains(want), "{args:?}: {msg}");
    }
    let out = Process::new(env!("CARGO_BIN_EXE_kmemlabctl"))
        .args(["bench", "--threads", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn watch_without_the_module_fails_clearly() {
    // On a host without the module there is no kmemlab UIO device (a host that has one
    // skips this).
    if std::path::Path::new("/dev/kmemlab").exists() {
        return;
    }
    let out = Process::new(env!("CARGO_BIN_EXE_kmemlabctl"))
        .args(["watch", "--idle-timeout", "10"])
        .output()
        .unwrap();
    // No device or module (kmemlabctl::exit::NO_DEVICE).
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with("kmemlabctl: no uio device named \"kmemlab\" in /sys/class/uio"),
        "{err}"
    );
}
