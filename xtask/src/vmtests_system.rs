//! `cargo xtask test --system`: the package in a real Debian arm64 system
//! (`cargo xtask vm --system debian`): installed with `dpkg -i`, kmemlab.ko loaded at
//! boot by systemd-modules-load, the device nodes made by udev's rule, kmemlabd started
//! by systemd and its log read from journald. Each test boots a fresh copy of the image.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use crate::setup::Toolchain;
use crate::system::{self, System, SystemOptions, SystemOutcome};
use crate::util::step;
use crate::vm::{check_log_schema, json_lines, section};

type Test = fn(&System) -> Result<()>;
/// One check of a guest's output: what it saw, or what is wrong.
type Check = fn(&str) -> Result<String>;

/// What `systemd-analyze security kmemlabd` says in the guest (systemd 257, Debian 13):
/// the README's "On a real board" states the same.
pub const SECURITY_EXPOSURE: &str = "0.6 SAFE";

/// After the install and the reboot (install_boot): the package's state, and the
/// README's checks of it.
const INSTALL_SCRIPT: &str = "echo '== lsmod'; lsmod
echo '== uio'; uio_dev
echo '== nodes'; stat -L -c '%n %G %a %F' /dev/kmemlab /dev/$(uio_dev)
echo '== link'; readlink /dev/kmemlab-uio
echo '== readme-nodes'; stat -L -c '%n %G %a %F' /dev/kmemlab /dev/kmemlab-uio
echo '== interrupts'; grep kmemlab /proc/interrupts
echo '== info'; kmemlabctl info; echo \"info exit $?\"
echo '== group'; getent group kmemlab
echo '== modules-load.d'; cat /usr/lib/modules-load.d/kmemlab.conf
echo '== modules-load'; systemctl show -p ActiveState,Result systemd-modules-load
echo '== boot log'; journalctl -b -o cat --no-pager | grep -i kmemlab
modprobe -r kmemlab
echo '== unloaded'; lsmod
systemctl restart systemd-modules-load
echo '== reloaded'; lsmod
echo '== end'
";

/// The daemon's life in one boot (guest/system/daemon.sh).
const DAEMON_SCRIPT: &str = include_str!("../guest/system/daemon.sh");

const TESTS: &[(&str, Test)] = &[
    ("system_install_boot", install_boot),
    ("system_daemon_lifecycle", daemon_lifecycle),
];

/// Runs the system tests (only those whose names contain one of `KMEMLAB_TESTS`'s
/// names, when set); fails naming those that failed, after running them all.
pub fn run_all(tc: &Toolchain) -> Result<()> {
    let start = Instant::now();
    let release = system::parse_name("debian")?;
    let system = System::prepare(tc, &release)?;
    let only = std::env::var("KMEMLAB_TESTS").unwrap_or_default();
    let mut failed = Vec::new();
    for (name, test) in TESTS {
        if !only.is_empty() && !only.split(',').any(|o| name.contains(o)) {
            continue;
        }
        step(format!("system test {name}"));
        let t = Instant::now();
        match test(&system) {
            Ok(()) => eprintln!("    ok   {name} ({:.1?})", t.elapsed()),
            Err(err) => {
                eprintln!("    FAIL {name}: {err:#}");
                failed.push(*name);
            }
        }
    }
    system.cleanup();
    if !failed.is_empty() {
        bail!("system tests failed: {}", failed.join(", "));
    }
    step(format!("system tests passed in {:.0?}", start.elapsed()));
    Ok(())
}

/// Runs `cmd` in a fresh system; fails with its output when it exits non-zero.
fn run(system: &System, name: &str, cmd: &str) -> Result<SystemOutcome> {
    let outcome = system.run(
        name,
        &SystemOptions {
            cmd: cmd.to_owned(),
            ..SystemOptions::default()
        },
    )?;
    ensure!(
        outcome.cmd_status == 0,
        "the guest command exited with {}:\n{}",
        outcome.cmd_status,
        outcome.cmd_output
    );
    Ok(outcome)
}

/// After `dpkg -i` and a reboot: kmemlab.ko is loaded, the postinst made the system group
/// kmemlab, and udev's rule gave /dev/kmemlab and the UIO node to it, mode 0660, with the
/// /dev/kmemlab-uio link to the UIO node; unloaded, systemd-modules-load loads it again
/// (the package's modules-load.d file).
fn install_boot(system: &System) -> Result<()> {
    let out = run(system, "install_boot", INSTALL_SCRIPT)?;
    let text = &out.cmd_output;
    let fail = |what: &str| -> Result<()> { bail!("{what}; the guest printed:\n{text}") };
    if !section(text, "lsmod")
        .iter()
        .any(|l| l.split_whitespace().next() == Some("kmemlab"))
    {
        fail("lsmod lists no kmemlab")?;
    }
    // At boot udev may load the module first (its OF alias matches the board's node), so
    // modules-load.d is checked on its own: unloaded, systemd-modules-load loads it again.
    let loaded = |name: &str| {
        section(text, name)
            .iter()
            .any(|l| l.split_whitespace().next() == Some("kmemlab"))
    };
    if !section(text, "modules-load.d")
        .iter()
        .any(|l| l.trim() == "kmemlab")
    {
        fail("/usr/lib/modules-load.d/kmemlab.conf does not name kmemlab")?;
    }
    let units = section(text, "modules-load");
    if !units.iter().any(|l| l.trim() == "ActiveState=active")
        || !units.iter().any(|l| l.trim() == "Result=success")
    {
        fail("systemd-modules-load.service did not succeed at boot")?;
    }
    if loaded("unloaded") {
        fail("modprobe -r did not unload kmemlab")?;
    }
    if !loaded("reloaded") {
        fail("systemctl restart systemd-modules-load did not load kmemlab")?;
    }
    let uio = section(text, "uio")
        .first()
        .map(|l| l.trim().to_owned())
        .filter(|u| u.starts_with("uio"))
        .context("no UIO device named kmemlab in /sys/class/uio")?;
    let nodes = section(text, "nodes");
    for node in ["/dev/kmemlab", &format!("/dev/{uio}")] {
        let want = format!("{node} kmemlab 660 character special file");
        if !nodes.iter().any(|l| l.trim() == want) {
            fail(&format!("no `{want}`"))?;
        }
    }
    if section(text, "link").first().map(|l| l.trim()) != Some(uio.as_str()) {
        fail(&format!("/dev/kmemlab-uio does not point at {uio}"))?;
    }
    // The README's check, through the two names a user knows.
    let readme = section(text, "readme-nodes");
    for node in ["/dev/kmemlab", "/dev/kmemlab-uio"] {
        let want = format!("{node} kmemlab 660 character special file");
        if !readme.iter().any(|l| l.trim() == want) {
            fail(&format!("no `{want}`"))?;
        }
    }
    if !section(text, "interrupts")
        .iter()
        .any(|l| l.split_whitespace().last() == Some("kmemlab"))
    {
        fail("/proc/interrupts has no kmemlab line")?;
    }
    let info = section(text, "info");
    if !info.iter().any(|l| l.trim() == "info exit 0") {
        fail("kmemlabctl info failed")?;
    }
    let group = section(text, "group");
    let gid: Option<u32> = group
        .first()
        .and_then(|l| l.split(':').nth(2))
        .and_then(|g| g.parse().ok());
    match gid {
        // adduser's system groups: 100-999 (/etc/adduser.conf FIRST_SYSTEM_GID).
        Some(gid) if (100..1000).contains(&gid) => {}
        _ => fail("kmemlab is not a system group")?,
    }
    Ok(())
}

/// The daemon's life in one boot (a boot costs minutes under TCG): `systemctl start`,
/// the journal and `kmemlabctl report -`, the sandbox, reload, `kill -9`,
/// `systemd-analyze security`, `systemctl stop`, then `dpkg -r` and `dpkg --purge`.
/// Every check below reads its own `== NAME` sections of daemon.sh's output.
fn daemon_lifecycle(system: &System) -> Result<()> {
    let out = run(system, "daemon_lifecycle", DAEMON_SCRIPT)?;
    let text = &out.cmd_output;
    let checks: [(&str, Check); 9] = [
        ("start and journal", check_journal),
        ("report", check_report),
        ("identity", check_identity),
        ("devices", check_devices),
        ("reload", check_reload),
        ("kill -9", check_restart),
        ("security", check_security),
        ("stop", check_stop),
        ("remove", check_remove),
    ];
    for (what, check) in checks {
        let said = check(text).with_context(|| format!("{what}; the guest printed:\n{text}"))?;
        step(format!("{what}: {said}"));
    }
    Ok(())
}

/// `Key=value` lines of `systemctl show`: the value of `key`.
fn prop<'a>(lines: &[&'a str], key: &str) -> Option<&'a str> {
    lines
        .iter()
        .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
}

/// Every value of `key` (for properties shown once per entry, e.g. `DeviceAllow=`).
fn props<'a>(lines: &[&'a str], key: &str) -> BTreeSet<&'a str> {
    lines
        .iter()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .collect()
}

/// kmemlabd's press lines (a numeric `seq`) among `lines`.
fn press_lines(lines: &[&str]) -> Vec<Value> {
    json_lines(lines)
        .into_iter()
        .filter(|v| v.get("seq").is_some_and(Value::is_u64))
        .collect()
}

fn event(v: &Value) -> &str {
    v.get("event").and_then(Value::as_str).unwrap_or("")
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn u64_of(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

/// Live allocations of every kind in the one `kmemlabctl stats --json` object of
/// `lines`; no such object (or no kinds) is an error, not "nothing live".
fn live(lines: &[&str]) -> Result<u64> {
    let stats: Vec<Value> = json_lines(lines)
        .into_iter()
        .filter(|v| v.get("kinds").is_some())
        .collect();
    let [stats] = stats.as_slice() else {
        bail!(
            "want one kmemlabctl stats --json object, got {}",
            stats.len()
        );
    };
    let kinds = stats
        .get("kinds")
        .and_then(Value::as_object)
        .filter(|k| !k.is_empty())
        .with_context(|| format!("stats --json without kinds: {stats}"))?;
    kinds.iter().try_fold(0, |sum, (kind, k)| {
        u64_of(k, "live_count")
            .map(|n| sum + n)
            .with_context(|| format!("stats --json: {kind} has no live_count"))
    })
}

/// `systemctl start` returns once the daemon said READY=1: right after it the unit is
/// active with the status the daemon sends with READY=1; three presses give three
/// press lines in `journalctl -u kmemlabd -o cat`, after the start line, each valid
/// against the log schema, and the status counts them.
fn check_journal(text: &str) -> Result<String> {
    let started = section(text, "started");
    ensure!(
        matches!(prop(&started, "Type"), Some("notify" | "notify-reload")),
        "kmemlabd.service is not Type=notify"
    );
    ensure!(
        prop(&started, "ActiveState") == Some("active")
            && prop(&started, "SubState") == Some("running")
            && prop(&started, "StatusText")
                == Some("presses 0, bounces 0, coalesced 0, live 0, errors 0"),
        "right after `systemctl start` the unit is not active with the status sent with \
         READY=1"
    );
    let pressed = section(text, "pressed");
    ensure!(
        prop(&pressed, "ActiveState") == Some("active")
            && prop(&pressed, "StatusText").is_some_and(|s| s.starts_with("presses 3,")),
        "after three presses the unit's status does not count them"
    );
    let journal = section(text, "journal");
    let json: Vec<String> = journal
        .iter()
        .filter(|l| l.trim_start().starts_with('{'))
        .map(|l| l.trim().to_owned())
        .collect();
    let checked = check_log_schema(&json)?;
    let presses = press_lines(&journal).len();
    ensure!(
        presses == 3,
        "the journal has {presses} press lines for 3 presses"
    );
    let first = json_lines(&journal);
    ensure!(
        first.first().map(event) == Some("start"),
        "the journal's first kmemlabd line is not its start line"
    );
    Ok(format!(
        "active with the READY=1 status; {checked} kmemlabd lines valid against the schema, \
         3 presses"
    ))
}

/// `journalctl -u kmemlabd -o json | kmemlabctl report -` summarizes the same presses as
/// the journal's lines: per kind, the allocs, frees and errors counted from the press
/// lines are the report's row, and its `all` row adds up to the three presses.
fn check_report(text: &str) -> Result<String> {
    let mut want: BTreeMap<String, [u64; 3]> = BTreeMap::new();
    let presses = press_lines(&section(text, "journal"));
    for v in &presses {
        let col = match event(v) {
            "alloc" => 0,
            "free" => 1,
            "error" => 2,
            other => bail!("a press line with event {other:?}"),
        };
        want.entry(str_of(v, "kind").to_owned()).or_default()[col] += 1;
        want.entry("all".to_owned()).or_default()[col] += 1;
    }
    let report = section(text, "report");
    ensure!(
        report.first().is_some_and(|l| l.starts_with("KIND")),
        "kmemlabctl report - printed no table"
    );
    let mut got: BTreeMap<String, [u64; 3]> = BTreeMap::new();
    for line in report.iter().skip(1) {
        let cells: Vec<&str> = line.split_whitespace().collect();
        if let [kind, a, f, e, ..] = cells.as_slice() {
            if let (Ok(a), Ok(f), Ok(e)) = (a.parse(), f.parse(), e.parse()) {
                got.insert((*kind).to_owned(), [a, f, e]);
            }
        }
    }
    ensure!(
        got == want,
        "kmemlabctl report - counts {got:?} (allocs, frees, errors per kind), the journal's \
         press lines {want:?}"
    );
    let all = want.get("all").copied().unwrap_or_default();
    ensure!(
        all.iter().sum::<u64>() == 3,
        "the report's rows do not add up to the 3 presses"
    );
    Ok(format!(
        "the report's rows match the journal's {} press lines (all: {} allocs, {} frees, {} \
         errors)",
        presses.len(),
        all[0],
        all[1],
        all[2]
    ))
}

/// systemd's view and the kernel's: a dynamic user (uid in systemd's dynamic range
/// 61184-65519) with group kmemlab as a supplementary group, `DevicePolicy=closed` and
/// exactly the two devices allowed besides what `ProtectClock=yes` adds (`char-rtc r`).
fn check_identity(text: &str) -> Result<String> {
    let lines = section(text, "identity");
    ensure!(
        prop(&lines, "DynamicUser") == Some("yes"),
        "not DynamicUser=yes"
    );
    ensure!(
        prop(&lines, "SupplementaryGroups") == Some("kmemlab"),
        "SupplementaryGroups is not kmemlab"
    );
    ensure!(
        prop(&lines, "DevicePolicy") == Some("closed"),
        "DevicePolicy is not closed"
    );
    let allow = props(&lines, "DeviceAllow");
    let want: BTreeSet<&str> = ["/dev/kmemlab rw", "/dev/kmemlab-uio rw", "char-rtc r"].into();
    ensure!(allow == want, "DeviceAllow= is {allow:?}, want {want:?}");
    let ids = |key: &str| -> Vec<u32> {
        lines
            .iter()
            .find_map(|l| l.trim().strip_prefix(key))
            .map(|rest| {
                rest.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let uid = ids("Uid:");
    ensure!(
        uid.len() == 4
            && uid
                .iter()
                .all(|u| (61184..=65519).contains(u) && *u == uid[0]),
        "the daemon's uids {uid:?} are not one dynamic user's (61184-65519)"
    );
    let gid: u32 = lines
        .iter()
        .find(|l| l.starts_with("kmemlab:"))
        .and_then(|l| l.split(':').nth(2))
        .and_then(|g| g.parse().ok())
        .context("no kmemlab group in getent")?;
    let groups = ids("Groups:");
    ensure!(
        groups.contains(&gid),
        "the daemon's groups {groups:?} lack kmemlab ({gid})"
    );
    let ps = lines
        .iter()
        .find_map(|l| l.strip_prefix("ps "))
        .context("no ps line")?;
    ensure!(
        ps.split_whitespace()
            .nth(2)
            .is_some_and(|g| g.split(',').any(|g| g == "kmemlab")),
        "ps does not list kmemlab among the daemon's groups: {ps}"
    );
    Ok(format!(
        "dynamic user uid {} (User={}), groups {groups:?} with kmemlab {gid}; DevicePolicy=closed, \
         DeviceAllow {allow:?}",
        uid[0],
        prop(&lines, "User").unwrap_or("?")
    ))
}

/// In the daemon's cgroup (its device program) /dev/kmemlab and the UIO node open and a
/// disk, a tty and /dev/mem are refused with EPERM, while root opens all three outside it.
fn check_devices(text: &str) -> Result<String> {
    let lines = section(text, "devices");
    ensure!(
        lines.iter().any(|l| l.trim() == "devices shell 0"),
        "the shell could not join the daemon's cgroup"
    );
    for dev in ["/dev/kmemlab", "/dev/uio"] {
        ensure!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("open {dev}")) && l.ends_with(" ok")),
            "{dev} does not open in the daemon's cgroup"
        );
    }
    for dev in ["/dev/vda", "/dev/ttyAMA0", "/dev/mem"] {
        ensure!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("open {dev} refused:"))
                    && l.ends_with("Operation not permitted")),
            "{dev} is not refused (EPERM) in the daemon's cgroup"
        );
        ensure!(
            lines.contains(&format!("outside open {dev} ok").as_str()),
            "{dev} does not open outside the daemon's cgroup either: the refusal proves nothing"
        );
    }
    Ok(
        "in the daemon's cgroup /dev/kmemlab and the UIO node open; /dev/vda, /dev/ttyAMA0, \
        /dev/mem: Operation not permitted (all three open outside it)"
            .to_owned(),
    )
}

/// `systemctl reload` with a changed plan: a `reload` line naming the plan changed, and
/// the next press runs the new plan's first step; with an invalid file: an `error` line
/// (op reload), a `reload` line with ok false and the plan kept, and the next press
/// frees what the kept plan allocated.
fn check_reload(text: &str) -> Result<String> {
    for name in ["reload", "reload-invalid"] {
        let lines = section(text, name);
        ensure!(
            lines.contains(&"reload exit 0") && prop(&lines, "ActiveState") == Some("active"),
            "`systemctl reload` ({name}) failed or left the unit inactive"
        );
    }
    let lines = json_lines(&section(text, "journal2"));
    let plan = "vmalloc:8K:GFP_KERNEL";
    let at = |seq: u64| {
        lines
            .iter()
            .position(|v| u64_of(v, "seq") == Some(seq))
            .with_context(|| format!("no press line with seq {seq}"))
    };
    let reloads: Vec<usize> = (0..lines.len())
        .filter(|&i| event(&lines[i]) == "reload")
        .collect();
    let [good, bad] = reloads.as_slice() else {
        bail!("want two reload lines, got {}", reloads.len());
    };
    let (good, bad) = (&lines[*good], &lines[*bad]);
    ensure!(
        good.get("ok") == Some(&Value::Bool(true))
            && good.get("changed") == Some(&serde_json::json!(["plan"]))
            && str_of(good, "plan") == plan,
        "the first reload line does not report the new plan: {good}"
    );
    let p4 = &lines[at(4)?];
    ensure!(
        at(4)? > reloads[0]
            && event(p4) == "alloc"
            && str_of(p4, "kind") == "vmalloc"
            && u64_of(p4, "size") == Some(8192),
        "the press after the reload does not follow the new plan: {p4}"
    );
    ensure!(
        bad.get("ok") == Some(&Value::Bool(false)) && str_of(bad, "plan") == plan,
        "the reload with an invalid file does not keep the plan: {bad}"
    );
    let error = lines[..reloads[1]]
        .iter()
        .rev()
        .find(|v| event(v) == "error" && str_of(v, "op") == "reload")
        .context("no error line (op reload) before the invalid reload's line")?;
    ensure!(
        str_of(error, "message").contains("no_such_key"),
        "the error line does not name the bad key: {error}"
    );
    let p5 = &lines[at(5)?];
    ensure!(
        at(5)? > reloads[1]
            && event(p5) == "free"
            && str_of(p5, "kind") == "vmalloc"
            && u64_of(p5, "size") == Some(8192)
            && u64_of(p5, "handle") == u64_of(p4, "handle"),
        "the press after the invalid reload does not free the kept plan's allocation: {p5}"
    );
    // journalctl -p warning: the daemon's warning, and none of its info lines.
    let warnings = section(text, "warnings");
    ensure!(
        warnings
            .iter()
            .any(|l| l.starts_with("reload: invalid config") && l.contains("no_such_key")),
        "the invalid reload's warning is not in journalctl -p warning"
    );
    ensure!(
        !warnings.iter().any(|l| l.trim_start().starts_with('{')),
        "journalctl -p warning shows the JSON lines (info) too"
    );
    Ok(format!(
        "plan {plan} took effect at the next press (alloc vmalloc 8192); the invalid file: \
         an error line, ok false, the next press freed handle {}; its warning in \
         journalctl -p warning",
        u64_of(p5, "handle").unwrap_or(0)
    ))
}

/// `kill -9` while the daemon holds an allocation: systemd restarts it (NRestarts 0 to
/// 1, a new main PID, active), the module freed what the killed one held (nothing live),
/// the restarted daemon logs a start line and handles the next two presses (seq 1 and 2
/// under its PID), and nothing is live after them.
fn check_restart(text: &str) -> Result<String> {
    ensure!(
        live(&section(text, "held"))? == 1,
        "the daemon does not hold one allocation before the kill"
    );
    ensure!(
        prop(&section(text, "before-kill"), "NRestarts") == Some("0"),
        "NRestarts was not 0 before the kill"
    );
    let restarted = section(text, "restarted");
    let (old, new) = restarted
        .iter()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            match (w.next(), w.next(), w.next(), w.next()) {
                (Some("old"), Some(old), Some("new"), Some(new)) => Some((old, new)),
                _ => None,
            }
        })
        .context("no old/new PID line")?;
    ensure!(
        prop(&restarted, "NRestarts") == Some("1")
            && prop(&restarted, "ActiveState") == Some("active")
            && prop(&restarted, "MainPID") == Some(new)
            && old != new,
        "systemd did not restart the daemon once with a new PID"
    );
    ensure!(
        live(&section(text, "after-kill"))? == 0,
        "an allocation of the killed daemon is still live"
    );
    let lines = json_lines(&section(text, "new-pid"));
    ensure!(
        lines.first().map(event) == Some("start")
            && lines
                .first()
                .and_then(|v| u64_of(v, "pid"))
                .map(|p| p.to_string())
                .as_deref()
                == Some(new),
        "no start line from the restarted daemon (PID {new})"
    );
    let seqs: Vec<u64> = lines.iter().filter_map(|v| u64_of(v, "seq")).collect();
    ensure!(
        seqs == [1, 2],
        "the restarted daemon's press lines have seq {seqs:?}, want [1, 2]"
    );
    ensure!(
        live(&section(text, "after-presses"))? == 0,
        "an allocation is live after the restarted daemon's alloc and free"
    );
    Ok(format!(
        "NRestarts 1, PID {old} -> {new}; nothing live after the kill; the new daemon \
         handled presses seq 1 and 2"
    ))
}

/// `systemd-analyze security kmemlabd` in the guest gives [`SECURITY_EXPOSURE`].
fn check_security(text: &str) -> Result<String> {
    let line = section(text, "security")
        .into_iter()
        .find(|l| l.contains("Overall exposure level for kmemlabd.service:"))
        .context("no overall exposure line")?;
    let score = line
        .split_once("kmemlabd.service:")
        .map(|(_, s)| s.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    ensure!(
        score == SECURITY_EXPOSURE,
        "systemd-analyze security: {score}, the README states {SECURITY_EXPOSURE}"
    );
    Ok(format!("systemd-analyze security: {score}"))
}

/// `systemctl stop`: the daemon ends with exit status 0 after its summary and stop
/// (reason SIGTERM) lines, and nothing is live.
fn check_stop(text: &str) -> Result<String> {
    let stop = section(text, "stop");
    ensure!(
        stop.contains(&"stop exit 0")
            && prop(&stop, "ActiveState") == Some("inactive")
            && prop(&stop, "Result") == Some("success")
            && prop(&stop, "ExecMainStatus") == Some("0"),
        "systemctl stop did not end the daemon with status 0"
    );
    // ExecMainStatus=0 alone is weak (ExecMainCode is 0 too after the stop, not
    // CLD_EXITED), so the daemon's own last diagnostic, which kmemlabd writes just before
    // it returns exit status 0 (daemon/kmemlabd/src/main.rs), is required too.
    let journal = section(text, "stop-journal");
    ensure!(
        journal.iter().any(|l| l.trim() == "stopped by Sigterm"),
        "the daemon did not log `stopped by Sigterm` (its exit 0 path)"
    );
    let lines = json_lines(&journal);
    let n = lines.len();
    ensure!(
        n >= 2 && event(&lines[n - 2]) == "summary" && event(&lines[n - 1]) == "stop",
        "the daemon's last lines are not summary and stop"
    );
    let (summary, stopped) = (&lines[n - 2], &lines[n - 1]);
    ensure!(
        str_of(stopped, "reason") == "SIGTERM"
            && u64_of(summary, "presses") == Some(2)
            && u64_of(summary, "live") == Some(0),
        "the summary/stop lines do not say SIGTERM, 2 presses, nothing live: {summary} {stopped}"
    );
    ensure!(
        live(&section(text, "stopped-stats"))? == 0,
        "an allocation is live after the stop"
    );
    Ok(
        "summary (2 presses, live 0) and stop (SIGTERM) lines, `stopped by Sigterm`, \
         ExecMainStatus=0, nothing live"
            .to_owned(),
    )
}

/// `dpkg -r` (after `systemctl enable`, as on a board that starts kmemlabd at boot): of
/// the package's files (`dpkg -L`, directories aside) only the conffile stays, the unit
/// is gone (LoadState not-found), the prerm unloaded kmemlab.ko and the postrm's depmod
/// took it out of the module maps; `dpkg --purge` removes the conffile, /etc/kmemlab,
/// the daemon's logs and the enable link: nothing named kmemlab is left on the disk, and
/// no file in group kmemlab. The group itself stays (see dist.rs's postrm): reported.
fn check_remove(text: &str) -> Result<String> {
    let files = section(text, "files");
    ensure!(
        files.contains(&"/usr/bin/kmemlabd") && files.contains(&"/etc/kmemlab/kmemlabd.conf"),
        "dpkg -L kmemlab does not list the daemon and the conffile"
    );
    ensure!(
        section(text, "enable").contains(&"enable exit 0"),
        "systemctl enable kmemlabd failed"
    );
    ensure!(
        section(text, "remove").contains(&"dpkg -r exit 0"),
        "dpkg -r failed"
    );
    let after = section(text, "after-remove");
    let left: Vec<&str> = after
        .iter()
        .filter_map(|l| l.strip_prefix("left "))
        .collect();
    ensure!(
        left == ["/etc/kmemlab/kmemlabd.conf"],
        "after dpkg -r these files are left: {left:?} (want only the conffile)"
    );
    ensure!(
        after.iter().any(|l| l.trim() == "status rc"),
        "dpkg does not list kmemlab as removed with its config files (rc)"
    );
    ensure!(
        prop(&after, "LoadState") == Some("not-found"),
        "systemd still knows kmemlabd.service after dpkg -r"
    );
    if let Some(module) = after.iter().find(|l| l.starts_with("kmemlab ")) {
        bail!("kmemlab.ko is still loaded after dpkg -r: {module}");
    }
    ensure!(
        after.iter().any(|l| l.trim() == "no kmemlab module loaded"),
        "no lsmod line after dpkg -r"
    );
    let maps = after
        .iter()
        .find_map(|l| l.strip_prefix("module maps naming kmemlab:"))
        .context("no module maps line")?
        .trim();
    ensure!(
        maps.is_empty(),
        "after dpkg -r the module maps still name kmemlab: {maps}"
    );
    ensure!(
        section(text, "purge").contains(&"dpkg --purge exit 0"),
        "dpkg --purge failed"
    );
    let purged = section(text, "after-purge");
    let left: Vec<&str> = purged
        .iter()
        .filter_map(|l| l.strip_prefix("left "))
        .collect();
    ensure!(
        left.is_empty(),
        "after dpkg --purge these are left: {left:?}"
    );
    ensure!(
        purged.iter().any(|l| l.trim() == "owned by group kmemlab:"),
        "files in group kmemlab are left after the purge"
    );
    let named = purged
        .iter()
        .find_map(|l| l.strip_prefix("named kmemlab:"))
        .context("no `named kmemlab` line")?
        .trim();
    ensure!(
        named.is_empty(),
        "after dpkg --purge these are still named kmemlab: {named}"
    );
    let group = purged.iter().any(|l| l.trim() == "group kmemlab stays");
    Ok(format!(
        "dpkg -r left only the conffile, unit not-found, module unloaded and out of the \
         module maps; dpkg --purge left nothing named kmemlab (logs and enable link \
         included) and no file in the group; group kmemlab {}",
        if group { "stays" } else { "removed" }
    ))
}

#[cfg(test)]
mod tests {
    use super::{DAEMON_SCRIPT, INSTALL_SCRIPT, SECURITY_EXPOSURE};

    const README: &str = include_str!("../../README.md");
    const BOOT_SH: &str = include_str!("../guest/system/boot.sh");
    const HEADING: &str = "### Install it and run kmemlabd";

    /// The README's list of commands for a board: (command, its comment), comment lines
    /// aside.
    fn readme_commands() -> Vec<(&'static str, &'static str)> {
        let section = &README[README.find(HEADING).expect("no such README section")..];
        let block = &section[section.find("```sh\n").expect("no sh block") + 6..];
        let block = &block[..block.find("```").expect("unterminated block")];
        block
            .lines()
            .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
            .map(|l| match l.find(" #") {
                Some(i) => (l[..i].trim(), l[i + 2..].trim()),
                None => (l.trim(), ""),
            })
            .collect()
    }

    #[test]
    fn readme_board_commands_are_the_system_tests_commands() {
        let scripts = [BOOT_SH, INSTALL_SCRIPT, DAEMON_SCRIPT].concat();
        let commands = readme_commands();
        assert!(commands.len() >= 15, "too few commands: {commands:?}");
        for (cmd, _) in &commands {
            assert!(
                scripts.contains(cmd),
                "README's `{cmd}` is not run by the system tests (boot.sh, INSTALL_SCRIPT, \
                 daemon.sh)"
            );
        }
        let security = commands
            .iter()
            .find(|(c, _)| c.starts_with("systemd-analyze security"))
            .expect("no systemd-analyze security line");
        assert_eq!(security.1, SECURITY_EXPOSURE);
    }
}
