//! The VM tests of `kmemlabctl`'s commands against the real module: `alloc --hold` and
//! SIGINT, `trigger --interval` under a running kmemlabd, `report -` of a journal-style
//! export of the daemon's real log, and the exit statuses for real errnos.

use anyhow::{ensure, Context, Result};
use serde_json::Value;

use crate::vm::{json_lines, section, Artifacts, VmOptions, WAIT_LINES};
use crate::vmtests::{events, num};

/// The `live_count` of every kind in a `kmemlabctl stats --json` line, summed.
fn live_total(stats: &Value) -> Option<u64> {
    let kinds = stats.get("kinds")?.as_object()?;
    kinds.values().map(|k| num(k, "live_count")).sum()
}

/// The first JSON line of section `name` of the script's output.
fn first_json(out: &str, name: &str) -> Result<Value> {
    json_lines(&section(out, name))
        .into_iter()
        .next()
        .with_context(|| format!("no JSON line in section {name}:\n{out}"))
}

/// `alloc --count 3 --hold` in the background (as a script runs it: SIGINT ignored on
/// entry, see below) reports three allocations and keeps them; SIGINT makes it free the
/// same three, print each free and exit 0, and nothing is live afterwards.
///
/// Without job control, the shell starts a background command with SIGINT ignored; the
/// kernel still queues a signal that is blocked (kernel/signal.c:113, `sig_ignored`
/// returns false for a blocked signal), which is what `--hold` waits for with sigwait.
pub fn alloc_hold_frees_on_sigint(art: &Artifacts) -> Result<()> {
    let script = format!(
        r#"{WAIT_LINES}
kmemlabctl alloc --kind kmalloc --size 4K --count 3 --hold --json >/tmp/hold.out 2>/tmp/hold.err &
P=$!
wait_lines /tmp/hold.out '"alloc_ns"' 3
echo '== holding'
kmemlabctl stats --json
kill -INT $P
wait $P; echo "hold-rc=$?"
echo '== out'
cat /tmp/hold.out
echo '== err'
cat /tmp/hold.err
echo '== after'
kmemlabctl stats --json
echo '== end'"#
    );
    let outcome = super::vmtests::boot_checked(
        art,
        VmOptions {
            daemon: false,
            cmd: script,
            ..VmOptions::default()
        },
    )?;
    let out = &outcome.cmd_output;
    ensure!(
        out.lines().any(|l| l.trim() == "hold-rc=0"),
        "alloc --hold did not exit 0 after SIGINT:\n{out}"
    );
    let holding = first_json(out, "holding")?;
    ensure!(
        holding.pointer("/kinds/kmalloc/live_count") == Some(&Value::from(3)),
        "three kmalloc allocations should be live while held: {holding}"
    );
    let lines = json_lines(&section(out, "out"));
    let allocs: Vec<u64> = lines
        .iter()
        .filter(|l| l.get("alloc_ns").is_some())
        .filter_map(|l| num(l, "handle"))
        .collect();
    let frees: Vec<u64> = lines
        .iter()
        .filter(|l| l.get("free_ns").is_some())
        .filter_map(|l| num(l, "handle"))
        .collect();
    ensure!(
        allocs.len() == 3 && frees == allocs && lines.len() == 6,
        "want 3 allocations then 3 frees of the same handles, got allocs {allocs:?} frees \
         {frees:?}:\n{out}"
    );
    let after = first_json(out, "after")?;
    ensure!(
        live_total(&after) == Some(0),
        "nothing should be live after the frees: {after}"
    );
    Ok(())
}

/// The kmemlabd of these tests: debounce 50 ms, its log in /tmp/d.log.
const DAEMON: &str = r#"
stop-kmemlabd
kmemlabd --debounce-ms 50 --log /tmp/d.log 2>/tmp/d.err &
D=$!
wait_lines /tmp/d.log '"start"' 1
"#;

/// The same with a 5 s debounce, for two events meant to bounce. An `--interval` only
/// bounds their gap from below: on a loaded 2-core host, two TRIGGERs 10 ms apart once
/// came 55 ms apart, past a 50 ms debounce.
const DAEMON_BOUNCE: &str = r#"
stop-kmemlabd
kmemlabd --debounce-ms 5000 --log /tmp/d.log 2>/tmp/d.err &
D=$!
wait_lines /tmp/d.log '"start"' 1
"#;

/// The daemon's log lines (between `== log` and `== end`).
fn daemon_log(out: &str) -> Vec<Value> {
    json_lines(&section(out, "log"))
}

/// `trigger --count 2 --interval 300` under a kmemlabd with debounce 5 s: two TRIGGER
/// ioctls 300 ms apart (or more: far enough for the daemon to read each on its own, not
/// coalesced), so the second event is a bounce: exactly one plan step and one bounce in
/// the daemon's log.
pub fn trigger_interval_gives_one_step_and_one_bounce(art: &Artifacts) -> Result<()> {
    let script = format!(
        r#"{WAIT_LINES}{DAEMON_BOUNCE}
echo '== trigger'
kmemlabctl trigger --count 2 --interval 300 --json; echo "trigger-rc=$?"
wait_lines /tmp/d.log '"bounce"' 1
kill -TERM $D; wait $D
echo '== log'
cat /tmp/d.log
echo '== end'"#
    );
    let outcome = super::vmtests::boot_checked(
        art,
        VmOptions {
            cmd: script,
            ..VmOptions::default()
        },
    )?;
    let out = &outcome.cmd_output;
    ensure!(
        out.lines().any(|l| l.trim() == "trigger-rc=0"),
        "trigger failed:\n{out}"
    );
    let triggers = json_lines(&section(out, "trigger"));
    ensure!(
        triggers.len() == 2 && triggers.iter().all(|t| num(t, "count") == Some(1)),
        "want two TRIGGER reports of one event each:\n{out}"
    );
    let log = daemon_log(out);
    let steps: Vec<&Value> = log
        .iter()
        .filter(|v| v.get("seq").is_some_and(|s| !s.is_null()))
        .collect();
    let bounces = events(&log, "bounce");
    ensure!(
        steps.len() == 1 && bounces.len() == 1,
        "want one step and one bounce, got {} steps and {} bounces:\n{out}",
        steps.len(),
        bounces.len()
    );
    let since = num(bounces[0], "since_last_ns").context("bounce without since_last_ns")?;
    ensure!(
        (300_000_000..5_000_000_000).contains(&since),
        "the bounce came {since} ns after the step: not 300 ms or more (the interval), \
         or not within the 5 s debounce"
    );
    ensure!(
        !events(&log, "stop").is_empty(),
        "the daemon did not stop cleanly:\n{out}"
    );
    Ok(())
}

/// `report -` of the daemon's real log wrapped as `journalctl -o json` entries (each
/// line the string MESSAGE of an object with PRIORITY and SYSLOG_IDENTIFIER, built with
/// sed: the initramfs has no journalctl) gives the same summary as `report` of the plain
/// log, and that summary counts the presses' allocations and frees.
pub fn report_stdin_reads_a_journal_export(art: &Artifacts) -> Result<()> {
    let script = format!(
        r#"{WAIT_LINES}{DAEMON}
kmemlabctl trigger --count 4 --interval 120 >/dev/null
wait_lines /tmp/d.log '"seq":4' 1
kill -TERM $D; wait $D
sed 's/\\/\\\\/g; s/"/\\"/g; s/.*/{{"MESSAGE":"&","PRIORITY":"6","SYSLOG_IDENTIFIER":"kmemlabd","_PID":"'$D'"}}/' /tmp/d.log >/tmp/d.journal
echo '== journal'
head -n 2 /tmp/d.journal
echo '== plain'
kmemlabctl report /tmp/d.log --json; echo "plain-rc=$?"
echo '== stdin'
kmemlabctl report - --json </tmp/d.journal; echo "stdin-rc=$?"
echo '== end'"#
    );
    let outcome = super::vmtests::boot_checked(
        art,
        VmOptions {
            cmd: script,
            ..VmOptions::default()
        },
    )?;
    let out = &outcome.cmd_output;
    ensure!(
        out.lines().any(|l| l.trim() == "plain-rc=0")
            && out.lines().any(|l| l.trim() == "stdin-rc=0"),
        "report failed:\n{out}"
    );
    let entry = first_json(out, "journal")?;
    ensure!(
        entry.get("MESSAGE").and_then(Value::as_str).is_some() && entry.get("event").is_none(),
        "the journal stream is not journal entries: {entry}"
    );
    let (plain, stdin) = (first_json(out, "plain")?, first_json(out, "stdin")?);
    ensure!(
        plain == stdin,
        "report - of the journal export differs from report of the log:\nplain {plain}\nstdin {stdin}"
    );
    let all = plain
        .get("kinds")
        .and_then(Value::as_array)
        .and_then(|k| k.last())
        .context("no summary rows")?;
    ensure!(
        num(all, "allocs") == Some(2)
            && num(all, "frees") == Some(2)
            && num(&plain, "malformed") == Some(0),
        "four presses should be two allocations and two frees, nothing malformed: {plain}"
    );
    Ok(())
}

/// The exit statuses against the real module: a FREE the module refuses (ENOENT,
/// kmod-helper/shared.rs) is 1; `free GOOD BAD` frees GOOD and is 4; a missing node is 3,
/// and so is a node whose misc minor has no driver after `rmmod` (misc_open's ENODEV,
/// drivers/char/misc.c:122).
pub fn exit_statuses_for_real_errnos(art: &Artifacts) -> Result<()> {
    let script = r#"
kmemlabctl free 999999; echo "refused-rc=$?"
H=$(kmemlabctl alloc --kind kmalloc --size 64 --persist --json | sed -n 's/.*"handle":\([0-9]*\).*/\1/p')
echo "good=$H"
echo '== partial'
kmemlabctl free $H 999999 --json; echo "partial-rc=$?"
echo '== listed'
kmemlabctl list --persist --json; echo "list-rc=$?"
echo '== nodev'
kmemlabctl --device /nonexistent info; echo "nodev-rc=$?"
M=$(cat /sys/class/misc/kmemlab/dev)
rmmod kmemlab
mknod /tmp/stale c ${M%%:*} ${M##*:}
kmemlabctl info --json --device /tmp/stale; echo "stale-rc=$?"
kmemlabctl info --json; echo "unloaded-rc=$?"
echo '== end'"#;
    let outcome = super::vmtests::boot_checked(
        art,
        VmOptions {
            daemon: false,
            cmd: script.to_owned(),
            ..VmOptions::default()
        },
    )?;
    let out = &outcome.cmd_output;
    let rc = |name: &str| -> Option<i32> {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{name}-rc=")))
            .and_then(|v| v.parse().ok())
    };
    ensure!(
        rc("refused") == Some(1),
        "a refused free should exit 1:\n{out}"
    );
    ensure!(
        rc("partial") == Some(4),
        "free GOOD BAD should exit 4:\n{out}"
    );
    let good: u64 = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("good="))
        .and_then(|h| h.parse().ok())
        .with_context(|| format!("no handle from alloc --persist:\n{out}"))?;
    let partial = json_lines(&section(out, "partial"));
    ensure!(
        partial.len() == 2
            && num(&partial[0], "handle") == Some(good)
            && partial[0].get("free_ns").is_some()
            && partial[1].get("error").and_then(Value::as_str) == Some("ENOENT")
            && num(&partial[1], "handle") == Some(999_999),
        "want the free of {good} then an ENOENT line for 999999:\n{out}"
    );
    ensure!(
        rc("list") == Some(0) && json_lines(&section(out, "listed")).is_empty(),
        "the good handle should be freed:\n{out}"
    );
    for name in ["nodev", "stale", "unloaded"] {
        ensure!(
            rc(name) == Some(3),
            "{name}: want status 3 (no device or module):\n{out}"
        );
    }
    ensure!(
        out.contains(r#""error":"ENODEV""#),
        "the stale node should fail with ENODEV:\n{out}"
    );
    Ok(())
}

/// `list --kind` and `--persist` filter what the module lists, and `free --all` from a
/// new kmemlabctl frees every allocation it can see: the device's `--persist` ones made
/// by earlier processes.
pub fn free_all_frees_what_other_processes_persisted(art: &Artifacts) -> Result<()> {
    let script = r#"
kmemlabctl alloc --kind kmalloc --size 64 --persist --json >/dev/null
kmemlabctl alloc --kind vmalloc --size 8K --count 2 --persist --json >/dev/null
echo '== vmalloc'
kmemlabctl list --kind vmalloc --persist --json
echo '== pages'
kmemlabctl list --kind pages --json
echo '== free-all'
kmemlabctl free --all --json; echo "free-all-rc=$?"
echo '== after'
kmemlabctl list --json
kmemlabctl stats --json
echo '== end'"#;
    let outcome = super::vmtests::boot_checked(
        art,
        VmOptions {
            daemon: false,
            cmd: script.to_owned(),
            ..VmOptions::default()
        },
    )?;
    let out = &outcome.cmd_output;
    let vmalloc = json_lines(&section(out, "vmalloc"));
    ensure!(
        vmalloc.len() == 2
            && vmalloc.iter().all(|a| {
                a.get("kind").and_then(Value::as_str) == Some("vmalloc")
                    && a.get("persist") == Some(&Value::Bool(true))
            }),
        "list --kind vmalloc --persist should show the two vmalloc allocations:\n{out}"
    );
    ensure!(
        json_lines(&section(out, "pages")).is_empty(),
        "list --kind pages should show nothing:\n{out}"
    );
    ensure!(
        out.lines().any(|l| l.trim() == "free-all-rc=0"),
        "free --all failed:\n{out}"
    );
    let freed = json_lines(&section(out, "free-all"));
    ensure!(
        freed.len() == 3 && freed.iter().all(|f| f.get("free_ns").is_some()),
        "free --all should free the three persisted allocations:\n{out}"
    );
    let after = json_lines(&section(out, "after"));
    ensure!(
        after.len() == 1 && live_total(&after[0]) == Some(0),
        "nothing should be listed or live after free --all:\n{out}"
    );
    Ok(())
}
