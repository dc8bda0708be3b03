//! systemd readiness: with a notifier on a datagram socket the test owns, `READY=1`
//! arrives only once the descriptors are registered and the `start` line is written,
//! `STATUS=` follows each wake-up, SIGUSR1 writes `stats`, SIGHUP reloads (between
//! `RELOADING=1` with `MONOTONIC_USEC=` and `READY=1`), and
//! `STOPPING=1` comes before the `summary` and `stop` lines.

use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use kmemlab::{MockDevice, Uio};
use kmemlabd::{
    run_with, ConfigSource, Daemon, EventWriter, Hooks, Notifier, Signals, StartInfo, StopReason,
};
use nix::sys::pthread::{pthread_kill, pthread_self};
use nix::sys::signal::Signal;
use serde_json::Value;

fn recv(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = sock
        .recv(&mut buf)
        .expect("a notification within the timeout");
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

fn line(lines: &mut BufReader<UnixStream>) -> Value {
    let mut line = String::new();
    lines.read_line(&mut line).unwrap();
    assert!(line.ends_with('\n'), "torn or missing line: {line:?}");
    serde_json::from_str(&line).unwrap()
}

/// `Type=notify-reload`: `RELOADING=1` and `MONOTONIC_USEC=` (CLOCK_MONOTONIC µs, taken
/// when the reload began) in one datagram, then `READY=1` once the reload is done.
fn expect_reload_notifications(notify: &UnixDatagram) {
    let before = kmemlab::monotonic_ns() / 1000;
    let reloading = recv(notify);
    let mut fields = reloading.lines();
    assert_eq!(fields.next(), Some("RELOADING=1"), "{reloading:?}");
    let usec: u64 = fields
        .next()
        .and_then(|f| f.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC= after RELOADING=1: {reloading:?}"));
    // Taken after the signal was sent (a little before `before` was read here) and
    // within the last minute: a CLOCK_MONOTONIC time, in µs.
    assert!(
        usec <= before && before - usec < 60_000_000,
        "{usec} vs {before}"
    );
    let ready = recv(notify);
    assert!(ready.starts_with("READY=1\nSTATUS="), "{ready:?}");
}

#[test]
fn ready_after_start_status_per_press_stopping_at_shutdown() {
    let tmp = tempfile::tempdir().unwrap();
    let notify_path = tmp.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let conf = tmp.path().join("kmemlabd.conf");
    std::fs::write(&conf, "debounce_ms = 0\n").unwrap();

    let (mut uio, uio_daemon) = UnixStream::pair().unwrap();
    let (lines, out_daemon) = UnixStream::pair().unwrap();
    let (tx, rx) = mpsc::channel();
    let source = ConfigSource {
        file: Some(conf.clone()),
        flags: Default::default(),
    };
    let config = source.load().unwrap();
    assert_eq!(config.debounce_ms, 0);
    let notify_var = notify_path.clone();
    let thread = thread::spawn(move || {
        let mut signals = Signals::new()?;
        tx.send(pthread_self()).unwrap();
        let uio = Uio::from_file(File::from(OwnedFd::from(uio_daemon)), "/dev/uio0", 0)?;
        let out = EventWriter::new(File::from(OwnedFd::from(out_daemon)));
        let start = StartInfo {
            uio: "/dev/uio0".into(),
            device: "/dev/kmemlab".into(),
            irq_count: 0,
        };
        let mut daemon = Daemon::new(MockDevice::new(), uio, out, start).with_config(&config);
        let hooks = Hooks {
            notifier: Notifier::new(notify_var.as_os_str()).unwrap(),
            source: Some(source),
            reopen: None,
        };
        run_with(&mut daemon, &mut signals, &hooks)
    });
    let tid = rx.recv().unwrap();

    // READY=1 first, and by then the start line is already written.
    let ready = recv(&notify);
    assert!(ready.starts_with("READY=1\n"), "{ready:?}");
    assert!(ready.contains("STATUS=presses 0,"), "{ready:?}");
    lines.set_nonblocking(true).unwrap();
    let mut first = [0u8; 16];
    let n = (&lines)
        .read(&mut first)
        .expect("start line before READY=1");
    assert!(first[..n].starts_with(b"{\"event\":\"start\""));
    lines.set_nonblocking(false).unwrap();
    let mut rest = String::new();
    let mut lines = BufReader::new(lines);
    lines.read_line(&mut rest).unwrap();
    let mut enable = [0u8; 4];
    uio.read_exact(&mut enable).unwrap();

    // A press: its line, then STATUS=.
    uio.write_all(&1u32.to_ne_bytes()).unwrap();
    uio.read_exact(&mut enable).unwrap();
    assert_eq!(line(&mut lines)["event"], "alloc");
    assert_eq!(
        recv(&notify),
        "STATUS=presses 1, bounces 0, coalesced 0, live 1, errors 0"
    );
    // Three more interrupts in one read: one step, two coalesced.
    uio.write_all(&4u32.to_ne_bytes()).unwrap();
    uio.read_exact(&mut enable).unwrap();
    assert_eq!(line(&mut lines)["event"], "coalesced");
    assert_eq!(line(&mut lines)["event"], "free");
    assert_eq!(
        recv(&notify),
        "STATUS=presses 2, bounces 0, coalesced 2, live 0, errors 0"
    );

    // SIGUSR1: stats.
    pthread_kill(tid, Signal::SIGUSR1).unwrap();
    let stats = line(&mut lines);
    assert_eq!(stats["event"], "stats");
    assert_eq!(stats["events"], 4);

    // SIGHUP with a new plan, then with a broken file: the old config stays.
    std::fs::write(&conf, "plan = \"pages:8K\"\ndebounce_ms = 0\n").unwrap();
    pthread_kill(tid, Signal::SIGHUP).unwrap();
    let reload = line(&mut lines);
    assert_eq!(reload["event"], "reload");
    assert_eq!(reload["ok"], true);
    assert_eq!(reload["changed"], serde_json::json!(["plan"]));
    expect_reload_notifications(&notify);
    std::fs::write(&conf, "plan = [\n").unwrap();
    pthread_kill(tid, Signal::SIGHUP).unwrap();
    let err = line(&mut lines);
    assert_eq!(
        (&err["event"], &err["op"]),
        (&"error".into(), &"reload".into())
    );
    let reload = line(&mut lines);
    assert_eq!(reload["ok"], false);
    assert_eq!(reload["plan"], "pages:8K:GFP_KERNEL");
    // A failed reload ends with READY=1 too: the old config runs on.
    expect_reload_notifications(&notify);
    uio.write_all(&5u32.to_ne_bytes()).unwrap();
    uio.read_exact(&mut enable).unwrap();
    let v = line(&mut lines);
    assert_eq!(
        (&v["event"], &v["kind"]),
        (&"alloc".into(), &"pages".into())
    );
    recv(&notify);

    // SIGTERM: STOPPING=1, then summary and stop.
    pthread_kill(tid, Signal::SIGTERM).unwrap();
    assert!(recv(&notify).starts_with("STOPPING=1"));
    assert_eq!(line(&mut lines)["event"], "free");
    let summary = line(&mut lines);
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["kinds"]["pages"]["count"], 1);
    assert_eq!(line(&mut lines)["event"], "stop");
    assert_eq!(thread.join().unwrap().unwrap(), StopReason::Sigterm);
    // Nothing after STOPPING=1.
    notify.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(
        notify.recv(&mut buf).unwrap_err().kind(),
        ErrorKind::WouldBlock
    );
}

/// The real binary: an invalid config is exit status 2 with the reason on stderr.
#[test]
fn invalid_config_at_start_is_exit_status_2() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("kmemlabd.conf");
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_kmemlabd"))
            .args(args)
            .env("NOTIFY_SOCKET", tmp.path().join("none"))
            .output()
            .unwrap()
    };
    for (text, want) in [
        ("plan = \n", "invalid config"),
        ("colour = \"red\"\n", "unknown field `colour`"),
        ("plan = \"slab\"\n", "plan: invalid plan step 1 \"slab\""),
    ] {
        std::fs::write(&conf, text).unwrap();
        let out = run(&["--config", conf.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text:?}: {stderr}");
        assert!(stderr.contains(want), "{text:?}: {stderr}");
        assert!(out.stdout.is_empty());
    }
    let out = run(&["--config", "/no/such/kmemlabd.conf"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("failed to open /no/such/kmemlabd.conf"));
    let out = run(&["--debounce-ms", "soon"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["--plan", "slab"]);
    assert_eq!(out.status.code(), Some(2));
}
