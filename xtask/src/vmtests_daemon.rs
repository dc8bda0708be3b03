//! VM tests of kmemlabd's failure modes (issue 14, part 3): one daemon per device, the
//! device unbound under a running daemon, and SIGTERM in an interrupt storm.

use anyhow::{ensure, Context, Result};
use serde_json::Value;

use crate::vm::{json_lines, section, Artifacts, VmOptions, WAIT_LINES};
use crate::vmtests::events;

/// kmemlabd's exit status when another kmemlabd holds the UIO device (its `--help`).
const EXIT_DEVICE_BUSY: i32 = 3;

/// The value after `key ` on the first line of `lines` that starts with it.
fn value_after<'a>(lines: &[&'a str], key: &str) -> Option<&'a str> {
    lines
        .iter()
        .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix(' '))
}

/// A second kmemlabd on the same device is refused at once: exit status 3, one JSON
/// `error` line on its stdout and the reason on stderr; the first one keeps its device
/// (a trigger still runs a step) and stops cleanly.
///
/// The lock is flock(2): the test kernel is built with `CONFIG_FILE_LOCKING=y` for it
/// (tinyconfig leaves it out), and Debian's kernels have it; without it (no `/proc/locks`)
/// the test fails, as the refusal cannot be tested there.
pub fn a_second_kmemlabd_is_refused(art: &Artifacts) -> Result<()> {
    let script = format!(
        "{WAIT_LINES}
L=/tmp/kmemlabd.log
wait_lines $L '\"start\"' 1 || exit 1
[ -e /proc/locks ] && echo 'locking yes' || echo 'locking no'
echo '== second'
t0=$(cut -d' ' -f1 /proc/uptime)
kmemlabd > /tmp/second.out 2> /tmp/second.err &
p2=$!
i=0
until grep -Eq '\"event\":\"(start|error)\"' /tmp/second.out; do
    i=$((i + 1)); [ $i -gt 1000 ] && {{ echo 'the second kmemlabd wrote nothing'; break; }}
    usleep 10000
done
grep -q '\"start\"' /tmp/second.out && kill -TERM $p2
wait $p2
echo \"status $?\"
t1=$(cut -d' ' -f1 /proc/uptime)
echo \"seconds $t0 $t1\"
echo '== second-stdout'
cat /tmp/second.out
echo '== second-stderr'
cat /tmp/second.err
echo '== first'
kmemlabctl trigger > /dev/null
wait_lines $L '\"seq\":1,' 1 && echo step-ok
echo '== end'"
    );
    let outcome = crate::vmtests::boot_checked(
        art,
        VmOptions {
            cmd: script,
            ..VmOptions::default()
        },
    )?;
    let out = &outcome.cmd_output;
    let head: Vec<&str> = out
        .lines()
        .take_while(|l| l.trim() != "== second")
        .collect();
    let locking = match value_after(&head, "locking") {
        Some("yes") => true,
        Some("no") => false,
        other => anyhow::bail!("no locking line ({other:?}):\n{out}"),
    };
    let second = section(out, "second");
    let status = value_after(&second, "status");
    let lines = json_lines(&section(out, "second-stdout"));
    let stderr = section(out, "second-stderr");
    if locking {
        ensure!(
            status == Some(&EXIT_DEVICE_BUSY.to_string()),
            "want the second kmemlabd to exit with status {EXIT_DEVICE_BUSY}:\n{out}"
        );
        let secs: Vec<f64> = value_after(&second, "seconds")
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        ensure!(
            secs.len() == 2 && secs[1] - secs[0] < 2.0,
            "the second kmemlabd did not exit at once (uptime before and after: {secs:?}):\n{out}"
        );
        ensure!(
            lines.len() == 1
                && lines[0]["event"] == "error"
                && lines[0]["error"] == "EAGAIN"
                && lines[0]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("in use: another kmemlabd holds its lock")),
            "want one error line saying the device is in use:\n{out}"
        );
        ensure!(
            stderr
                .iter()
                .any(|l| l.contains("ERROR") && l.contains("another kmemlabd holds its lock")),
            "want the reason on the second kmemlabd's stderr:\n{out}"
        );
    } else {
        // Every kernel the tests run on has file locking: the test kernel's fragment asks
        // for it (CONFIG_FILE_LOCKING=y) and Debian's kernels have it.
        anyhow::bail!(
            "this kernel has no file locking (no /proc/locks): the refusal cannot be tested\n{out}"
        );
    }
    ensure!(
        section(out, "first").iter().any(|l| l.trim() == "step-ok"),
        "the first kmemlabd ran no step after the second was started:\n{out}"
    );
    let log: Vec<Value> = outcome
        .log
        .iter()
        .map(|l| serde_json::from_str(l).with_context(|| format!("not JSON: {l}")))
        .collect::<Result<_>>()?;
    ensure!(
        events(&log, "error").is_empty()
            && events(&log, "alloc").len() == 1
            && events(&log, "stop")
                .first()
                .is_some_and(|s| s["reason"] == "SIGTERM"),
        "the first kmemlabd's log: want one alloc, no error, a SIGTERM stop:\n{}",
        outcome.log.join("\n")
    );
    Ok(())
}

/// `rmmod` is refused while kmemlabd holds the module's devices. The device unbound
/// under a running kmemlabd: its log ends with an `error` line
/// (EIO from the UIO read), the free of what it held, `summary` and a `stop` line with
/// `"reason":"error"`, and it exits non-zero (so that systemd restarts it). After the
/// device is bound again, a new kmemlabd works (a trigger runs a step). No kernel splat.
pub fn unbind_under_kmemlabd_ends_it_loudly(art: &Artifacts) -> Result<()> {
    let script = format!(
        "{WAIT_LINES}
D=/sys/bus/platform/drivers/kmemlab
kmemlabd > /tmp/d1.log 2> /tmp/d1.err &
pid=$!
wait_lines /tmp/d1.log '\"start\"' 1 || exit 1
kmemlabctl trigger > /dev/null
wait_lines /tmp/d1.log '\"seq\":1,' 1 || exit 1
rmmod kmemlab 2> /dev/null && echo rmmod-accepted || echo rmmod-refused
echo kmemlab > $D/unbind && echo unbound
wait $pid
echo \"exit $?\"
echo '== log1'
cat /tmp/d1.log
echo '== err1'
cat /tmp/d1.err
echo '== rebind'
echo kmemlab > $D/bind && echo bound
i=0
while [ ! -c /dev/kmemlab ] || [ ! -c /dev/uio0 ]; do
    i=$((i + 1)); [ $i -gt 500 ] && {{ echo 'no device nodes after bind'; exit 1; }}
    usleep 10000
done
kmemlabd > /tmp/d2.log 2> /tmp/d2.err &
pid=$!
wait_lines /tmp/d2.log '\"start\"' 1 || exit 1
kmemlabctl trigger > /dev/null
wait_lines /tmp/d2.log '\"seq\":1,' 1 && echo step-ok
kill -TERM $pid
wait $pid
echo \"exit2 $?\"
echo '== log2'
cat /tmp/d2.log
echo '== end'"
    );
    let outcome = crate::vmtests::boot_checked(
        art,
        VmOptions {
            daemon: false,
            cmd: script,
            ..VmOptions::default()
        },
    )?;
    let out = &outcome.cmd_output;
    let first = section(out, "err1");
    let head: Vec<&str> = out.lines().take_while(|l| l.trim() != "== log1").collect();
    ensure!(
        head.iter().any(|l| l.trim() == "rmmod-refused"),
        "rmmod was not refused while kmemlabd held the module's devices:\n{out}"
    );
    ensure!(
        head.iter().any(|l| l.trim() == "unbound"),
        "the unbind failed:\n{out}"
    );
    let status = value_after(&head, "exit").and_then(|s| s.parse::<i32>().ok());
    ensure!(
        status.is_some_and(|s| s != 0),
        "want kmemlabd to exit non-zero after the unbind, got {status:?}:\n{out}"
    );
    let raw1: Vec<String> = section(out, "log1").iter().map(|l| l.to_string()).collect();
    crate::vm::check_log_schema(&raw1)?;
    let log1 = json_lines(&raw1);
    let names: Vec<&str> = log1.iter().filter_map(|v| v["event"].as_str()).collect();
    // start, the alloc of press 1, then the end: error, the free of the held
    // allocation, summary, stop.
    ensure!(
        names == ["start", "alloc", "error", "free", "summary", "stop"],
        "want start, alloc, error, free, summary, stop; got {names:?}:\n{out}"
    );
    let error = &log1[2];
    ensure!(
        error["error"] == "EIO"
            && error["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("failed to read the interrupt count from /dev/uio")),
        "want the UIO read's EIO in the error line: {error}"
    );
    ensure!(
        log1[3]["seq"].is_null() && log1[4]["presses"] == 1 && log1[5]["reason"] == "error",
        "want the held allocation freed, a summary of one press and reason error:\n{out}"
    );
    ensure!(
        first.iter().any(|l| l.contains("ERROR")),
        "want the error on kmemlabd's stderr:\n{out}"
    );
    let rebind = section(out, "rebind");
    ensure!(
        rebind.iter().any(|l| l.trim() == "bound") && rebind.iter().any(|l| l.trim() == "step-ok"),
        "after the rebind, a new kmemlabd ran no step:\n{out}"
    );
    ensure!(
        value_after(&rebind, "exit2") == Some("0"),
        "the restarted kmemlabd did not stop cleanly:\n{out}"
    );
    let raw2: Vec<String> = section(out, "log2").iter().map(|l| l.to_string()).collect();
    crate::vm::check_log_schema(&raw2)?;
    Ok(())
}

/// SIGTERM in an interrupt storm (three helpers TRIGGER as fast as they can): kmemlabd
/// writes `summary` and `stop` and exits within 1 s of the signal (guest uptime, 10 ms
/// steps), while the storm still goes on.
///
/// In the guest the helpers do not keep the device readable at every read (the vCPUs
/// are host threads that share the host's cores), so a daemon that drained the device
/// before looking at its signals stops in time here too; the host test
/// `a_storm_does_not_starve_sigterm` (daemon/kmemlabd/tests/event_loop.rs) is the one
/// whose stand-in never runs dry.
pub fn sigterm_in_a_storm_stops_within_a_second(art: &Artifacts) -> Result<()> {
    let script = format!(
        "{WAIT_LINES}
kmemlabd > /tmp/s.log 2> /tmp/s.err &
pid=$!
wait_lines /tmp/s.log '\"start\"' 1 || exit 1
# Three helpers TRIGGER as fast as they can: with two vCPUs, one of them runs
# whenever kmemlabd does, so the UIO count keeps moving while it reads.
storm=''
for n in 1 2 3; do
    kmemlab-abi-probe presses 100000000 0 > /dev/null 2>&1 &
    storm=\"$storm $!\"
done
# SIGTERM once the storm has written 1000 lines (press and coalesced lines all carry
# irq_count): waiting for a number of presses instead let coalesced lines fill the
# guest's RAM-backed /tmp before it came, when few reads ran a step.
wait_lines /tmp/s.log '\"irq_count\"' 1000 > /dev/null || exit 1
t0=$(cut -d' ' -f1 /proc/uptime)
kill -TERM $pid
wait $pid
rc=$?
t1=$(cut -d' ' -f1 /proc/uptime)
running=0
for p in $storm; do kill -0 $p 2> /dev/null && running=$((running + 1)); done
[ $running = 3 ] && echo storm-still-running
kill $storm
wait
echo \"exit $rc\"
echo \"seconds $t0 $t1\"
echo \"lines $(wc -l < /tmp/s.log)\"
echo '== tail'
tail -n 2 /tmp/s.log
echo '== end'"
    );
    let outcome = crate::vmtests::boot_checked(
        art,
        VmOptions {
            daemon: false,
            cmd: script,
            ..VmOptions::default()
        },
    )?;
    let out = &outcome.cmd_output;
    let head: Vec<&str> = out.lines().take_while(|l| l.trim() != "== tail").collect();
    ensure!(
        value_after(&head, "exit") == Some("0"),
        "kmemlabd did not exit cleanly on SIGTERM:\n{out}"
    );
    ensure!(
        head.iter().any(|l| l.trim() == "storm-still-running"),
        "the storm was over before kmemlabd stopped: nothing was tested:\n{out}"
    );
    let secs: Vec<f64> = value_after(&head, "seconds")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    ensure!(secs.len() == 2, "no timing:\n{out}");
    let took = secs[1] - secs[0];
    crate::util::step(format!(
        "SIGTERM to exit in the storm: {took:.2} s ({} log lines)",
        value_after(&head, "lines").unwrap_or("?")
    ));
    ensure!(
        took <= 1.0,
        "kmemlabd took {took:.2} s from SIGTERM to exit in the storm (want at most 1 s):\n{out}"
    );
    let raw: Vec<String> = section(out, "tail").iter().map(|l| l.to_string()).collect();
    crate::vm::check_log_schema(&raw)?;
    let tail = json_lines(&raw);
    ensure!(
        tail.len() == 2
            && tail[0]["event"] == "summary"
            && tail[1]["event"] == "stop"
            && tail[1]["reason"] == "SIGTERM",
        "want the log to end with summary and a SIGTERM stop:\n{out}"
    );
    Ok(())
}
