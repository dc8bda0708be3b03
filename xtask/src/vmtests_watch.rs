//! The VM tests of `kmemlabctl watch` and `kmemlabctl bench --threads`.

use anyhow::{ensure, Context, Result};
use serde_json::Value;

use crate::vm::{json_lines, section, Artifacts, VmOptions, PRESSES_DONE, PRESS_CUE, WAIT_LINES};
use crate::vmtests::{num, text};

/// (count, source, kernel timestamp) of a line.
type Seen = (Option<u64>, Option<String>, Option<u64>);

fn seen(v: &Value) -> Seen {
    (
        num(v, "irq_count"),
        text(v, "source").map(str::to_owned),
        num(v, "irq_ktime_ns"),
    )
}

/// `watch --num-events 5 --json`, started beside the running kmemlabd, shows three button
/// presses and two TRIGGERs, each in a line of its own: counts one apart, nothing missed,
/// sources in order, kernel timestamps increasing; it exits 0 after the fifth with a
/// summary of 5 events. The daemon's log has the same five presses, with the same counts,
/// sources and kernel timestamps: watching took none of them.
pub fn watch_shows_presses_with_their_sources(art: &Artifacts) -> Result<()> {
    let script = format!(
        r#"{WAIT_LINES}
L=/tmp/kmemlabd.log
W=/tmp/watch.json
kmemlabctl watch --num-events 5 --json > $W 2> /tmp/watch.err < /dev/null &
P=$!
wait_lines /tmp/watch.err 'watching /dev/uio' 1
echo {PRESS_CUE}
while read -r line; do [ "$line" = {PRESSES_DONE} ] && break; done
wait_lines $W '"event":"irq"' 3
wait_lines $L '"source":"button"' 3
usleep 100000
kmemlabctl trigger > /dev/null
wait_lines $W '"event":"irq"' 4
wait_lines $L '"source":"trigger"' 1
usleep 100000
kmemlabctl trigger > /dev/null
wait $P; echo "watch-rc=$?"
wait_lines $L '"source":"trigger"' 2
echo '== watch'
cat $W
echo '== err'
cat /tmp/watch.err
echo '== end'"#
    );
    let outcome = super::vmtests::boot_checked(
        art,
        VmOptions {
            presses_on_cue: 3,
            cmd: script,
            ..VmOptions::default()
        },
    )?;
    let out = &outcome.cmd_output;
    ensure!(
        out.lines().any(|l| l.trim() == "watch-rc=0"),
        "watch did not exit 0:\n{out}"
    );
    let lines = json_lines(&section(out, "watch"));
    let irqs: Vec<&Value> = lines
        .iter()
        .filter(|v| text(v, "event") == Some("irq"))
        .collect();
    ensure!(irqs.len() == 5, "want 5 irq lines from watch:\n{out}");
    let sources: Vec<Option<&str>> = irqs.iter().map(|v| text(v, "source")).collect();
    ensure!(
        sources
            == [
                Some("button"),
                Some("button"),
                Some("button"),
                Some("trigger"),
                Some("trigger")
            ],
        "sources {sources:?}, want three buttons then two triggers:\n{out}"
    );
    for pair in irqs.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        ensure!(
            num(a, "irq_count").map(|c| c + 1) == num(b, "irq_count"),
            "counts not one apart: {a} then {b}"
        );
        ensure!(
            num(a, "irq_ktime_ns") < num(b, "irq_ktime_ns") && num(a, "irq_ktime_ns").is_some(),
            "kernel timestamps missing or not increasing: {a} then {b}"
        );
    }
    ensure!(
        irqs.iter().all(|v| num(v, "missed") == Some(0)),
        "watch missed an event:\n{out}"
    );
    let summary = lines
        .iter()
        .find(|v| text(v, "event") == Some("summary"))
        .with_context(|| format!("no summary line from watch:\n{out}"))?;
    ensure!(
        num(summary, "events") == Some(5)
            && num(summary, "missed") == Some(0)
            && text(summary, "reason") == Some("num_events"),
        "want a summary of 5 events, none missed, stopped by --num-events: {summary}"
    );

    // The daemon saw the same five events, each as a press of its own.
    let log: Vec<Value> = outcome
        .log
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let presses: Vec<Seen> = log
        .iter()
        .filter(|v| v.get("seq").is_some_and(|s| !s.is_null()))
        .map(seen)
        .collect();
    let watched: Vec<Seen> = irqs.iter().map(|v| seen(v)).collect();
    ensure!(
        presses == watched,
        "the daemon's presses differ from what watch saw:\ndaemon {presses:?}\nwatch  {watched:?}\nlog:\n{}",
        outcome.log.join("\n")
    );
    ensure!(
        log.iter().all(|v| num(v, "missed").unwrap_or(0) == 0),
        "the daemon missed an event:\n{}",
        outcome.log.join("\n")
    );
    Ok(())
}

/// Without kmemlabd nobody unmasks the button's line: `watch` (which never writes to the
/// device) sees the first of three presses only, and a TRIGGER after them. SIGINT then
/// ends it with status 0 and a summary of those 2 events.
pub fn watch_without_the_daemon_sees_the_button_once(art: &Artifacts) -> Result<()> {
    let script = format!(
        r#"{WAIT_LINES}
W=/tmp/watch.json
kmemlabctl watch --json > $W 2> /tmp/watch.err < /dev/null &
P=$!
wait_lines /tmp/watch.err 'watching /dev/uio' 1
echo {PRESS_CUE}
while read -r line; do [ "$line" = {PRESSES_DONE} ] && break; done
kmemlabctl trigger > /dev/null
wait_lines $W '"source":"trigger"' 1
kill -INT $P
wait $P; echo "watch-rc=$?"
echo '== watch'
cat $W
echo '== end'"#
    );
    let outcome = super::vmtests::boot_checked(
        art,
        VmOptions {
            daemon: false,
            presses_on_cue: 3,
            cmd: script,
            ..VmOptions::default()
        },
    )?;
    let out = &outcome.cmd_output;
    ensure!(
        out.lines().any(|l| l.trim() == "watch-rc=0"),
        "watch did not exit 0 on SIGINT:\n{out}"
    );
    let lines = json_lines(&section(out, "watch"));
    let irqs: Vec<Seen> = lines
        .iter()
        .filter(|v| text(v, "event") == Some("irq"))
        .map(seen)
        .collect();
    let sources: Vec<(Option<u64>, Option<&str>)> = irqs
        .iter()
        .map(|(count, source, _)| (*count, source.as_deref()))
        .collect();
    ensure!(
        sources == [(Some(1), Some("button")), (Some(2), Some("trigger"))],
        "want the first press (count 1) and the trigger (count 2) only:\n{out}"
    );
    let summary = lines
        .iter()
        .find(|v| text(v, "event") == Some("summary"))
        .with_context(|| format!("no summary line from watch:\n{out}"))?;
    ensure!(
        num(summary, "events") == Some(2) && text(summary, "reason") == Some("SIGINT"),
        "want a summary of 2 events, stopped by SIGINT: {summary}"
    );
    Ok(())
}

/// `watch --idle-timeout 200` with no event exits 0 within a second (well before the
/// guard's 10 s), with a summary of 0 events stopped by the idle timeout.
pub fn watch_idle_timeout_exits_zero(art: &Artifacts) -> Result<()> {
    let script = "\
        a=$(cut -d' ' -f1 /proc/uptime)
        echo '== watch'
        timeout 10 kmemlabctl watch --idle-timeout 200 --json < /dev/null; echo \"watch-rc=$?\"
        b=$(cut -d' ' -f1 /proc/uptime)
        echo '== uptime'
        echo \"$a $b\"
        echo '== end'";
    let outcome = super::vmtests::boot_checked(
        art,
        VmOptions {
            cmd: script.to_owned(),
            ..VmOptions::default()
        },
    )?;
    let out = &outcome.cmd_output;
    let watch = section(out, "watch");
    ensure!(
        watch.iter().any(|l| l.trim() == "watch-rc=0"),
        "watch --idle-timeout 200 did not exit 0 (124: still running after 10 s):\n{out}"
    );
    let summary = json_lines(&watch)
        .into_iter()
        .find(|v| text(v, "event") == Some("summary"))
        .with_context(|| format!("no summary line from watch:\n{out}"))?;
    ensure!(
        num(&summary, "events") == Some(0) && text(&summary, "reason") == Some("idle_timeout"),
        "want 0 events, stopped by the idle timeout: {summary}"
    );
    let times: Vec<f64> = section(out, "uptime")
        .iter()
        .flat_map(|l| l.split_whitespace())
        .filter_map(|t| t.parse().ok())
        .collect();
    let [a, b] = times[..] else {
        anyhow::bail!("no uptimes:\n{out}")
    };
    // /proc/uptime counts in hundredths: at least 0.19 s for a 200 ms timeout.
    ensure!(
        (0.19..1.0).contains(&(b - a)),
        "watch --idle-timeout 200 took {:.2} s, want 0.2 s to 1 s",
        b - a
    );
    Ok(())
}

/// `bench --threads 2 --duration 2` on 2 vCPUs: two threads, each pinned to its own CPU,
/// each with pairs done in at least 2 s and ordered latency figures; the total's pairs and
/// pairs per second are the sums of the threads'; nothing is left allocated. The text form
/// has a row per thread and a total row.
pub fn bench_threads_per_thread_and_total(art: &Artifacts) -> Result<()> {
    let script = "\
        echo '== online'
        cat /sys/devices/system/cpu/online
        echo '== json'
        kmemlabctl bench --threads 2 --duration 2 --json; echo \"bench-rc=$?\"
        echo '== text'
        kmemlabctl bench --threads 2 --duration 1 --kind vmalloc --size 4K; echo \"text-rc=$?\"
        echo '== stats'
        kmemlabctl stats --json
        echo '== end'";
    let outcome = super::vmtests::boot_checked(
        art,
        VmOptions {
            daemon: false,
            cpus: 2,
            cmd: script.to_owned(),
            ..VmOptions::default()
        },
    )?;
    let out = &outcome.cmd_output;
    ensure!(
        section(out, "online").iter().any(|l| l.trim() == "0-1"),
        "want CPUs 0-1 online:\n{out}"
    );
    let json = section(out, "json");
    ensure!(
        json.iter().any(|l| l.trim() == "bench-rc=0"),
        "bench --threads failed:\n{out}"
    );
    let r = json_lines(&json)
        .into_iter()
        .next()
        .with_context(|| format!("bench --threads --json printed no object:\n{out}"))?;
    println!("bench --threads 2 --duration 2: {r}");
    let threads = r
        .get("per_thread")
        .and_then(Value::as_array)
        .with_context(|| format!("no per_thread: {r}"))?;
    ensure!(threads.len() == 2, "want 2 threads: {r}");
    let mut cpus = Vec::new();
    for t in threads {
        let lat = |k: &str| t.pointer(&format!("/latency/{k}")).and_then(Value::as_u64);
        ensure!(
            num(t, "pairs").is_some_and(|p| p > 0)
                && num(t, "elapsed_ns").is_some_and(|e| e >= 2_000_000_000)
                && t.get("pinned") == Some(&Value::Bool(true)),
            "a thread without pairs, short of 2 s or not pinned: {t}"
        );
        let (min, p50, p99, max) = (lat("min_ns"), lat("p50_ns"), lat("p99_ns"), lat("max_ns"));
        ensure!(
            min.is_some() && min <= p50 && p50 <= p99 && p99 <= max,
            "latency figures out of order: {t}"
        );
        cpus.push(num(t, "cpu"));
    }
    cpus.sort();
    ensure!(
        cpus == [Some(0), Some(1)],
        "want one thread on each CPU: {r}"
    );
    let sum = |k: &str| threads.iter().filter_map(|t| num(t, k)).sum::<u64>();
    let total = r.get("total").context("no total")?;
    ensure!(
        num(total, "pairs") == Some(sum("pairs")),
        "total pairs are not the sum of the threads': {r}"
    );
    let rate = |v: &Value| v.get("pairs_per_s").and_then(Value::as_f64).unwrap_or(-1.0);
    let rates: f64 = threads.iter().map(rate).sum();
    ensure!(
        (rate(total) - rates).abs() < 0.02,
        "total pairs/s {} is not the sum of the threads' {rates}: {r}",
        rate(total)
    );
    let text = section(out, "text");
    ensure!(
        text.iter().any(|l| l.trim() == "text-rc=0")
            && text
                .iter()
                .filter(|l| l.starts_with("0 ") || l.starts_with("1 "))
                .count()
                == 2
            && text.iter().any(|l| l.starts_with("total ")),
        "want a row per thread and a total row:\n{out}"
    );
    let stats = json_lines(&section(out, "stats"))
        .into_iter()
        .next()
        .with_context(|| format!("no stats:\n{out}"))?;
    for kind in ["kmalloc", "vmalloc"] {
        ensure!(
            stats.pointer(&format!("/kinds/{kind}/live_count")) == Some(&Value::from(0)),
            "{kind} allocations left after the bench: {stats}"
        );
    }
    Ok(())
}
