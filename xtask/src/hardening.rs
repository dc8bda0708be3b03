//! Issue 7's tests, run on the debug kernel (lockdep, KFENCE, SLUB debugging, kmemleak,
//! fault injection, DMA API debugging): fuzzing, fault injection, kill -9, unload with
//! live allocations, permissions, load, hostile device trees; and issue 11's (module v2):
//! a heap mapping through a tmpfs node outliving unbind and rmmod, quotas and hidden
//! addresses, BENCH stopped by a signal, close() beside a DMA batch. Ends with a table.

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use crate::util::repo_root;
use crate::vm::{
    json_lines, run_suite, run_vm, section, Artifacts, VmOptions, VmOutcome, KMEMLEAK_SCAN,
    WAIT_LINES,
};

/// The figures the run ends with.
#[derive(Default, Debug)]
pub struct Summary {
    calls_fuzzed: u64,
    faults_injected: u64,
    kills_survived: u64,
    unloads_with_live_allocations: u64,
    leaks_found: u64,
    kernel_splats: u64,
    vm_runs: u64,
}

type Test = fn(&Artifacts, &mut Summary) -> Result<()>;

const TESTS: &[(&str, Test)] = &[
    ("fuzz_ioctls_from_four_threads", fuzz_ioctls),
    ("fault_injection_gives_enomem", fault_injection),
    ("kill_9_frees_and_restarts", kill_9),
    ("unload_with_live_allocations", unload_with_live_allocations),
    ("unbind_under_live_mappings", unbind_under_live_mappings),
    (
        "tmpfs_node_mapping_outlives_unbind_and_rmmod",
        tmpfs_node_mapping_outlives_unbind_and_rmmod,
    ),
    ("permissions", permissions),
    ("bench_stops_on_sigint", bench_stops_on_sigint),
    (
        "close_not_blocked_by_a_dma_batch",
        close_not_blocked_by_a_dma_batch,
    ),
    ("load_with_press_storm", load_with_press_storm),
    ("hostile_device_trees", hostile_device_trees),
];

pub fn run_all(art: &Artifacts) -> Result<()> {
    let mut summary = Summary::default();
    let failed = run_suite(art, "debug-kernel test", TESTS, |test, art| {
        test(art, &mut summary)
    });
    println!();
    println!("| debug kernel                    | count |");
    println!("|---------------------------------|-------|");
    println!(
        "| VM runs                         | {:>5} |",
        summary.vm_runs
    );
    println!(
        "| ioctl calls fuzzed              | {:>5} |",
        summary.calls_fuzzed
    );
    println!(
        "| faults injected                 | {:>5} |",
        summary.faults_injected
    );
    println!(
        "| kill -9 survived                | {:>5} |",
        summary.kills_survived
    );
    println!(
        "| unloads with live allocations   | {:>5} |",
        summary.unloads_with_live_allocations
    );
    println!(
        "| leaks found (must be 0)         | {:>5} |",
        summary.leaks_found
    );
    println!(
        "| kernel splats (must be 0)       | {:>5} |",
        summary.kernel_splats
    );
    if !failed.is_empty() {
        bail!(
            "{} debug-kernel test(s) failed: {}",
            failed.len(),
            failed.join(", ")
        );
    }
    ensure!(
        summary.leaks_found == 0 && summary.kernel_splats == 0,
        "leaks or splats"
    );
    Ok(())
}

/// Boots, counts splats and kmemleak reports into the summary, fails on either.
fn boot(art: &Artifacts, s: &mut Summary, opts: VmOptions) -> Result<VmOutcome> {
    let outcome = run_vm(art, &opts)?;
    s.vm_runs += 1;
    crate::vm::check_log_schema(&outcome.log)?;
    let splats = outcome.splats();
    s.kernel_splats += splats.len() as u64;
    let leaks = section(&outcome.cmd_output, "kmemleak")
        .iter()
        .filter(|l| l.contains("unreferenced object"))
        .count() as u64;
    s.leaks_found += leaks;
    ensure!(
        splats.is_empty(),
        "the kernel log shows a splat:\n{}",
        splats.join("\n")
    );
    ensure!(
        leaks == 0,
        "kmemleak found {leaks} unreferenced object(s):\n{}",
        section(&outcome.cmd_output, "kmemleak").join("\n")
    );
    Ok(outcome)
}

/// Live allocations of every kind in the one `kmemlabctl stats --json` object among
/// `lines` (a section of a guest's output). Fails when there is no such object, or it has
/// no kinds or a kind without a `live_count`: a STATS that printed nothing, or something
/// else, is not "nothing live".
fn live_count<S: AsRef<str>>(lines: &[S]) -> Result<u64> {
    let text = || {
        lines
            .iter()
            .map(AsRef::as_ref)
            .collect::<Vec<_>>()
            .join("\n")
    };
    let stats: Vec<Value> = json_lines(lines)
        .into_iter()
        .filter(|v| v.get("kinds").is_some())
        .collect();
    let [stats] = stats.as_slice() else {
        bail!(
            "want one kmemlabctl stats --json object, got {}:\n{}",
            stats.len(),
            text()
        );
    };
    let kinds = stats
        .get("kinds")
        .and_then(Value::as_object)
        .filter(|k| !k.is_empty())
        .with_context(|| format!("stats --json without kinds: {stats}"))?;
    kinds.iter().try_fold(0, |sum, (kind, k)| {
        let live = k
            .get("live_count")
            .and_then(Value::as_u64)
            .with_context(|| format!("stats --json: {kind} has no live_count: {stats}"))?;
        Ok(sum + live)
    })
}

fn num(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// 4 threads, 200,000 random requests (commands, sizes, flags, struct sizes, handles,
/// NULL / unmapped / read-only pointers, close and reopen); STATS consistent after, no
/// allocation left, kmemleak clean.
fn fuzz_ioctls(art: &Artifacts, s: &mut Summary) -> Result<()> {
    let cmd =
        format!("kmemlab-abi-probe fuzz 4 50000 20261125; echo \"fuzz-rc=$?\"{KMEMLEAK_SCAN}");
    let outcome = boot(
        art,
        s,
        VmOptions {
            daemon: false,
            cmd,
            ..VmOptions::default()
        },
    )?;
    let report = json_lines(&outcome.cmd_output.lines().collect::<Vec<_>>())
        .into_iter()
        .find(|v| v.get("calls").is_some())
        .context("the fuzzer printed no report")?;
    s.calls_fuzzed += num(&report, "calls");
    println!("fuzz: {report}");
    ensure!(
        outcome.cmd_output.contains("fuzz-rc=0"),
        "fuzz failed: {report}"
    );
    ensure!(
        num(&report, "calls") >= 200_000,
        "fewer than 200,000 calls: {report}"
    );
    Ok(())
}

/// failslab and fail_page_alloc at 10% for the daemon and a client: every failed
/// allocation is an ENOMEM in their JSON, the daemon keeps running, nothing leaks.
fn fault_injection(art: &Artifacts, s: &mut Summary) -> Result<()> {
    // The faults are confined to allocations made from kmemlab's own code: the stack
    // filter fails only calls whose stack trace passes through the module's memory, so
    // the shell, exec and page faults keep working. `times` counts down per injected
    // fault, which gives the number injected.
    let script = format!(
        "
F=/sys/kernel/debug
set -- $(kmemlab-abi-probe module-range kmemlab)
for f in failslab fail_page_alloc; do
    echo N > $F/$f/task-filter
    echo $1 > $F/$f/require-start
    echo $2 > $F/$f/require-end
    echo 10 > $F/$f/probability
    echo 1 > $F/$f/interval
    echo 1000000 > $F/$f/times
    echo 0 > $F/$f/verbose
done
echo N > $F/failslab/ignore-gfp-wait
echo N > $F/fail_page_alloc/ignore-gfp-wait
echo 0 > $F/fail_page_alloc/min-order
pid=$(cat /run/kmemlabd.pid)
echo '== client'
i=0
while [ $i -lt 150 ]; do
    kmemlabctl alloc --kind vmalloc --size 64K --json
    kmemlabctl alloc --kind kmalloc --size 4K --json
    i=$((i + 1))
done
echo '== presses'
i=0
while [ $i -lt 60 ]; do kmemlabctl trigger --json; usleep 60000; i=$((i + 1)); done
echo '== injected'
for f in failslab fail_page_alloc; do
    echo \"$f $((1000000 - $(cat $F/$f/times)))\"
    echo 0 > $F/$f/probability
done
kill -0 $pid && echo daemon-alive
echo '== stats'
kmemlabctl stats --json
{KMEMLEAK_SCAN}"
    );
    let outcome = boot(
        art,
        s,
        VmOptions {
            cmd: script,
            ..VmOptions::default()
        },
    )?;
    let out = &outcome.cmd_output;
    for line in section(out, "injected") {
        let mut parts = line.split_whitespace();
        if let (Some(_), Some(n)) = (parts.next(), parts.next()) {
            s.faults_injected += n.parse::<u64>().unwrap_or(0);
        }
    }
    ensure!(
        out.contains("daemon-alive"),
        "kmemlabd died under fault injection:\n{out}"
    );
    let client = json_lines(&section(out, "client"));
    let client_errors: Vec<&Value> = client.iter().filter(|v| v.get("error").is_some()).collect();
    let wrong: Vec<String> = client_errors
        .iter()
        .filter(|v| v.get("error").and_then(Value::as_str) != Some("ENOMEM"))
        .map(|v| v.to_string())
        .collect();
    ensure!(
        wrong.is_empty(),
        "client errors other than ENOMEM:\n{}",
        wrong.join("\n")
    );
    ensure!(
        !client_errors.is_empty(),
        "no allocation of the client failed at 10%: were faults injected?"
    );
    // The daemon's failed steps are ENOMEM error lines too.
    let log: Vec<Value> = outcome
        .log
        .iter()
        .map(|l| serde_json::from_str(l).with_context(|| format!("torn or bad line: {l}")))
        .collect::<Result<_>>()?;
    let daemon_errors: Vec<&Value> = log
        .iter()
        .filter(|v| v.get("event").and_then(Value::as_str) == Some("error"))
        .collect();
    for e in &daemon_errors {
        let errno = e.get("error").and_then(Value::as_str).unwrap_or("");
        ensure!(
            errno == "ENOMEM" || errno == "ENOENT",
            "kmemlabd error other than ENOMEM: {e}"
        );
    }
    println!(
        "fault injection: {} injected, client {} allocations / {} ENOMEM, kmemlabd {} error lines",
        s.faults_injected,
        client.len(),
        client_errors.len(),
        daemon_errors.len()
    );
    Ok(())
}

/// kill -9 of kmemlabd while it writes: it holds an allocation (one press), then a burst
/// of TRIGGERs keeps it writing a line per press, and it is killed in the middle of the
/// burst. The kernel frees what it held when its file is released (STATS, which must
/// print, shows nothing live); every line of its log but the last is whole JSON, and a
/// last line the kill cut short (no newline) is found and reported, not taken for a line;
/// a restarted daemon handles a press.
fn kill_9(art: &Artifacts, s: &mut Summary) -> Result<()> {
    let script = format!(
        "{WAIT_LINES}
pid=$(cat /run/kmemlabd.pid)
echo '== before'
kmemlabctl stats --json
# The burst: TRIGGERs until told to stop (at most 2000 rounds).
( i=0; while [ ! -e /tmp/stop-burst ] && [ $i -lt 2000 ]; do
    kmemlabctl trigger --count 3 > /dev/null || break; i=$((i + 1)); done ) &
burst=$!
wait_lines /tmp/kmemlabd.log '\"source\":\"trigger\"' 5
kill -9 $pid
kill -0 $burst 2>/dev/null && echo burst-at-kill=running
i=0; while [ -d /proc/$pid ] && ! grep -q '^State:.*Z' /proc/$pid/status 2>/dev/null; do
    i=$((i + 1)); [ $i -gt 500 ] && break; usleep 10000; done
touch /tmp/stop-burst; wait $burst
# tee, which keeps the log, ends once the dead daemon's pipe is closed.
i=0; while pidof tee > /dev/null; do i=$((i + 1)); [ $i -gt 500 ] && break; usleep 10000; done
echo '== after'
kmemlabctl stats --json
echo '== killed'
awk '{{ print \"L \" $0 }}' /tmp/kmemlabd.log
echo \"last-byte=$(tail -c 1 /tmp/kmemlabd.log | od -An -tx1 | tr -d ' ')\"
kmemlabd --log /tmp/second.log 2>/tmp/second.err &
second=$!
i=0; while ! grep -q '\"start\"' /tmp/second.log 2>/dev/null; do
    i=$((i + 1)); [ $i -gt 500 ] && break; usleep 10000; done
kmemlabctl trigger --json
i=0; while [ $(grep -c '\"seq\"' /tmp/second.log) -lt 1 ]; do
    i=$((i + 1)); [ $i -gt 500 ] && break; usleep 10000; done
kill -TERM $second; wait $second
echo '== second'
cat /tmp/second.log
{KMEMLEAK_SCAN}"
    );
    let outcome = boot(
        art,
        s,
        VmOptions {
            presses: 1,
            cmd: script,
            ..VmOptions::default()
        },
    )?;
    let out = &outcome.cmd_output;
    let live = |name: &str| live_count(&section(out, name));
    ensure!(
        live("before")? >= 1,
        "the daemon held no allocation before the kill:\n{out}"
    );
    ensure!(
        out.lines().any(|l| l.trim() == "burst-at-kill=running"),
        "the kill did not land in the burst of TRIGGERs, no line was being written:\n{out}"
    );
    ensure!(
        live("after")? == 0,
        "allocations survived kill -9 of their owner:\n{out}"
    );
    let killed: Vec<&str> = section(out, "killed")
        .into_iter()
        .filter_map(|l| l.strip_prefix("L "))
        .collect();
    let ends_in_newline = out.lines().any(|l| l.trim() == "last-byte=0a");
    let (whole, cut) = whole_lines(&killed, ends_in_newline);
    for line in whole {
        serde_json::from_str::<Value>(line)
            .with_context(|| format!("torn line in the killed daemon's log: {line}"))?;
    }
    let whole: Vec<String> = whole.iter().map(|l| (*l).to_owned()).collect();
    crate::vm::check_log_schema(&whole)?;
    let burst_lines = whole
        .iter()
        .filter(|l| l.contains("\"source\":\"trigger\""))
        .count();
    ensure!(
        burst_lines >= 5,
        "the killed daemon wrote {burst_lines} lines for the burst, want at least 5:\n{out}"
    );
    match cut {
        Some(line) => println!("kill -9 cut the log's last line short (found, not a line): {line}"),
        None => println!("kill -9 in a burst: {burst_lines} burst lines, the last one whole"),
    }
    let second = json_lines(&section(out, "second"));
    ensure!(
        second
            .iter()
            .any(|v| v.get("seq").and_then(Value::as_u64).is_some()),
        "the restarted daemon handled no press:\n{out}"
    );
    s.kills_survived += 1;
    Ok(())
}

/// A killed writer's log split into its whole lines and the last one, when the file does
/// not end in a newline: that one was cut short.
fn whole_lines<'a, 'b>(
    lines: &'b [&'a str],
    ends_in_newline: bool,
) -> (&'b [&'a str], Option<&'a str>) {
    match lines.split_last() {
        Some((last, whole)) if !ends_in_newline => (whole, Some(*last)),
        _ => (lines, None),
    }
}

/// rmmod with device-owned allocations of every kind frees them all (kmemleak clean);
/// rmmod while /dev/kmemlab or the UIO device is open is refused.
fn unload_with_live_allocations(art: &Artifacts, s: &mut Summary) -> Result<()> {
    let script = format!(
        "
for k in kmalloc vmalloc dma-coherent kvmalloc pages; do
    kmemlabctl alloc --kind $k --size 8K --persist --json
done
echo '== open kmemlab'
exec 3</dev/kmemlab
rmmod kmemlab && echo unloaded-while-open
exec 3<&-
echo '== open uio'
exec 4</dev/uio0
rmmod kmemlab && echo unloaded-while-open
exec 4<&-
echo '== unload'
rmmod kmemlab && echo unloaded
{KMEMLEAK_SCAN}"
    );
    let outcome = boot(
        art,
        s,
        VmOptions {
            daemon: false,
            cmd: script,
            ..VmOptions::default()
        },
    )?;
    let out = &outcome.cmd_output;
    ensure!(
        !out.contains("unloaded-while-open"),
        "rmmod succeeded while a file was open:\n{out}"
    );
    ensure!(
        out.contains("\nunloaded"),
        "rmmod failed with no file open:\n{out}"
    );
    let allocs = json_lines(
        &out.lines()
            .take_while(|l| !l.starts_with("== "))
            .collect::<Vec<_>>(),
    );
    ensure!(
        allocs.len() == 5,
        "want 5 PERSIST allocations before rmmod:\n{out}"
    );
    s.unloads_with_live_allocations += 1;
    Ok(())
}

/// Unbinding the device while a process has the heap mapped and allocations of every
/// kind: the mapping stays readable with the ring's magic (v2: no SIGBUS), requests get
/// ENODEV, the dma_coherent allocation was freed with the device, the rest free normally;
/// the device binds again; rmmod; no leak.
fn unbind_under_live_mappings(art: &Artifacts, s: &mut Summary) -> Result<()> {
    let cmd = format!(
        "kmemlab-abi-probe unbind-live; echo \"unbind-rc=$?\"\nrmmod kmemlab && echo rmmod-ok{KMEMLEAK_SCAN}"
    );
    let outcome = boot(
        art,
        s,
        VmOptions {
            daemon: false,
            cmd,
            ..VmOptions::default()
        },
    )?;
    let out = &outcome.cmd_output;
    let report = json_lines(&out.lines().collect::<Vec<_>>())
        .into_iter()
        .find(|v| v.get("read_after_unbind").is_some());
    if let Some(r) = &report {
        println!("unbind-live: {r}");
    }
    ensure!(
        out.contains("unbind-rc=0") && out.contains("rmmod-ok"),
        "unbind under live mappings went wrong:\n{out}"
    );
    s.unloads_with_live_allocations += 1;
    Ok(())
}

/// Without group kmemlab: EACCES. A group member (no capabilities) sees no kernel or
/// physical address under any kptr_restrict, has no privileges, a per-file quota (EDQUOT),
/// EPERM for PERSIST, an oversized BENCH and an oversized GFP_ATOMIC allocation, and runs
/// kmemlabd's seed plan. Root sees virtual addresses under kptr_restrict 0 and 1 only, and
/// physical addresses always (CAP_SYS_ADMIN).
fn permissions(art: &Artifacts, s: &mut Summary) -> Result<()> {
    let script = format!(
        r#"{WAIT_LINES}
chgrp kmemlab /dev/kmemlab /dev/uio0 && chmod 0660 /dev/kmemlab /dev/uio0
# kptr_restrict 0 shows kernel addresses to everyone when perf_event_paranoid <= 1
# (kallsyms_show_value); pin the default.
[ -e /proc/sys/kernel/perf_event_paranoid ] && echo 2 > /proc/sys/kernel/perf_event_paranoid
U='kmemlab-abi-probe as 1000 1000 990'
echo '== access'
kmemlab-abi-probe as-user 65534 65534 ''
kmemlab-abi-probe as-user 1000 1000 990
echo '== quotas'
$U kmemlab-abi-probe quotas; echo "quotas-rc=$?"
for k in 0 1 2; do
    echo $k > /proc/sys/kernel/kptr_restrict
    echo "== addrs root $k"
    kmemlab-abi-probe addrs
    echo "== addrs user $k"
    $U kmemlab-abi-probe addrs
done
echo 1 > /proc/sys/kernel/kptr_restrict
echo '== seed'
$U kmemlabd --debounce-ms 0 --log /tmp/u.log 2>/tmp/u.err &
pid=$!
wait_lines /tmp/u.log '"start"' 1
# `n`, not `i`: wait_lines uses `i` itself.
n=1
while [ $n -le 6 ]; do
    $U kmemlabctl trigger --json
    wait_lines /tmp/u.log '"seq"' $n
    n=$((n + 1))
done
kill -TERM $pid; wait $pid; echo "kmemlabd-exit=$?"
echo '== ulog'
cat /tmp/u.log
echo '== uerr'
cat /tmp/u.err
echo '== end'"#
    );
    let outcome = boot(
        art,
        s,
        VmOptions {
            daemon: false,
            cmd: script,
            ..VmOptions::default()
        },
    )?;
    let out = &outcome.cmd_output;
    let reports = json_lines(&section(out, "access"));
    ensure!(reports.len() == 2, "want two access reports:\n{out}");
    ensure!(
        reports[0].get("open").and_then(Value::as_str) == Some("EACCES"),
        "a user outside group kmemlab opened /dev/kmemlab: {}",
        reports[0]
    );
    let r = &reports[1];
    ensure!(
        r.get("open").and_then(Value::as_str) == Some("ok")
            && r.get("hidden") == Some(&Value::Bool(true))
            && r.get("vaddr").and_then(Value::as_u64) == Some(0)
            && r.get("phys").and_then(Value::as_u64) == Some(0),
        "a group member without CAP_SYSLOG should see hidden (zero) addresses: {r}"
    );

    let quotas = section(out, "quotas");
    let failed: Vec<&str> = quotas
        .iter()
        .copied()
        .filter(|l| l.contains("\"pass\":false"))
        .collect();
    if let Some(figures) = json_lines(&quotas)
        .iter()
        .find(|v| v.get("file_max_bytes").is_some())
    {
        println!("unprivileged quotas: {figures}");
    }
    ensure!(
        out.contains("quotas-rc=0") && failed.is_empty(),
        "an unprivileged group member's quotas and EPERMs are wrong:\n{}\nfull output:\n{}",
        failed.join("\n"),
        quotas.join("\n")
    );

    for k in 0..=2u64 {
        let report = |who: &str| -> Result<Value> {
            json_lines(&section(out, &format!("addrs {who} {k}")))
                .into_iter()
                .next()
                .with_context(|| format!("no addrs report of {who} at kptr_restrict {k}:\n{out}"))
        };
        let (root, user) = (report("root")?, report("user")?);
        let flag = |v: &Value, key: &str| v.get(key).and_then(Value::as_bool);
        ensure!(
            num(&root, "kptr_restrict") == k && num(&user, "kptr_restrict") == k,
            "kptr_restrict was not {k} for the reports: {root} {user}"
        );
        ensure!(
            num(&user, "vaddr") == 0
                && flag(&user, "hidden") == Some(true)
                && num(&user, "phys") == 0
                && flag(&user, "phys_hidden") == Some(true)
                && num(&user, "privileges") == 0,
            "kptr_restrict {k}: an unprivileged opener must see no address (RESULT_HIDDEN and RESULT_PHYS_HIDDEN) and have no privileges: {user}"
        );
        let vaddr_shown = k < 2;
        ensure!(
            (num(&root, "vaddr") != 0) == vaddr_shown
                && flag(&root, "hidden") == Some(!vaddr_shown),
            "kptr_restrict {k}: root's vaddr should be {}: {root}",
            if vaddr_shown {
                "shown"
            } else {
                "hidden (0, RESULT_HIDDEN)"
            }
        );
        let privileges = num(&root, "privileges");
        ensure!(
            num(&root, "phys") != 0
                && flag(&root, "phys_hidden") == Some(false)
                && privileges & u64::from(kmemlab_uapi::PRIV_PHYS | kmemlab_uapi::PRIV_ADMIN)
                    == u64::from(kmemlab_uapi::PRIV_PHYS | kmemlab_uapi::PRIV_ADMIN)
                && (privileges & u64::from(kmemlab_uapi::PRIV_KADDR) != 0) == vaddr_shown,
            "kptr_restrict {k}: root (CAP_SYS_ADMIN) should see phys and have PRIV_ADMIN|PRIV_PHYS, PRIV_KADDR {}: {root}",
            if vaddr_shown { "set" } else { "clear" }
        );
    }

    let ulog: Vec<String> = section(out, "ulog")
        .iter()
        .map(|l| (*l).to_owned())
        .collect();
    crate::vm::check_log_schema(&ulog)?;
    let ulog = json_lines(&ulog);
    let of = |event: &str| {
        ulog.iter()
            .filter(|v| v.get("event").and_then(Value::as_str) == Some(event))
            .filter(|v| v.get("seq").is_some_and(|s| !s.is_null()))
            .count()
    };
    let errors: Vec<String> = ulog
        .iter()
        .filter(|v| v.get("event").and_then(Value::as_str) == Some("error"))
        .map(Value::to_string)
        .collect();
    ensure!(
        of("alloc") == 3 && of("free") == 3 && errors.is_empty(),
        "kmemlabd as a group member should run the seed plan (3 allocs, 3 frees, no error); got {} allocs, {} frees, errors:\n{}\nlog:\n{}\nstderr:\n{}",
        of("alloc"),
        of("free"),
        errors.join("\n"),
        section(out, "ulog").join("\n"),
        section(out, "uerr").join("\n")
    );
    Ok(())
}

/// Whether `word` occurs in `line` as a whole word (not inside DEBUG, say).
fn has_word(line: &str, word: &str) -> bool {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    line.match_indices(word).any(|(i, _)| {
        let before = line[..i].chars().next_back();
        let after = line[i + word.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

/// The heap mapped through device nodes on a tmpfs: the tmpfs lazily unmounted and the
/// device unbound under the mapping, which stays readable and unchanged (v2: the mapping holds
/// references to the heap's pages); rmmod refused while mapped, done once unmapped; afterwards
/// no busy inodes, no BUG, WARNING or Oops, and kmemleak is clean.
fn tmpfs_node_mapping_outlives_unbind_and_rmmod(art: &Artifacts, s: &mut Summary) -> Result<()> {
    let cmd = format!(
        "
M=/mnt/kmemlab-nodes
mkdir -p $M && mount -t tmpfs kmemlab-nodes $M || echo mount-failed
IFS=: read maj min < /sys/class/uio/uio0/dev && mknod $M/uio0 c $maj $min
IFS=: read maj min < /sys/class/misc/kmemlab/dev && mknod $M/kmemlab c $maj $min
ls -l $M
echo '== tmpfs'
kmemlab-abi-probe tmpfs-node $M; echo \"tmpfs-rc=$?\"
echo '== after'
grep '^kmemlab ' /proc/modules || echo module-gone
grep -q \" $M \" /proc/mounts && echo still-mounted
{KMEMLEAK_SCAN}"
    );
    let outcome = boot(
        art,
        s,
        VmOptions {
            daemon: false,
            cmd,
            ..VmOptions::default()
        },
    )?;
    let out = &outcome.cmd_output;
    let report = json_lines(&section(out, "tmpfs"))
        .into_iter()
        .next()
        .with_context(|| format!("tmpfs-node printed no report:\n{out}"))?;
    println!("tmpfs node: {report}");
    ensure!(
        !out.contains("mount-failed"),
        "could not mount the tmpfs:\n{out}"
    );
    ensure!(
        report.get("rmmod_refused_while_mapped") == Some(&Value::Bool(true))
            && report.get("rmmod_ok") == Some(&Value::Bool(true)),
        "rmmod must be refused while the heap is mapped (the mapping holds the UIO file, which \
         holds the module) and succeed once it is unmapped: {report}"
    );
    ensure!(
        out.contains("tmpfs-rc=0"),
        "the mapping through the tmpfs node did not outlive unbind and rmmod: {report}"
    );
    let after = section(out, "after");
    ensure!(
        after.iter().any(|l| l.trim() == "module-gone") && !after.contains(&"still-mounted"),
        "after the run the module is still loaded or the tmpfs still mounted:\n{}",
        after.join("\n")
    );
    let bad: Vec<&String> = outcome
        .dmesg
        .iter()
        .filter(|l| {
            l.contains("Busy inodes")
                || l.contains("Oops")
                || has_word(l, "BUG")
                || has_word(l, "WARNING")
        })
        .collect();
    ensure!(
        bad.is_empty(),
        "the kernel log shows trouble after the tmpfs node went away:\n{}",
        bad.iter()
            .map(|l| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    s.unloads_with_live_allocations += 1;
    Ok(())
}

/// Boots without the daemon and runs `kmemlab-abi-probe SUB` (its status echoed as
/// `SUB-rc=N`), then STATS (section `stats`) and the kmemleak scan; returns the outcome and
/// the probe's JSON report, the line with `key`.
fn probe_then_stats(
    art: &Artifacts,
    s: &mut Summary,
    sub: &str,
    key: &str,
) -> Result<(VmOutcome, Value)> {
    let cmd = format!(
        "kmemlab-abi-probe {sub}; echo \"{sub}-rc=$?\"
echo '== stats'
kmemlabctl stats --json{KMEMLEAK_SCAN}"
    );
    let outcome = boot(
        art,
        s,
        VmOptions {
            daemon: false,
            cmd,
            ..VmOptions::default()
        },
    )?;
    let report = json_lines(&outcome.cmd_output.lines().collect::<Vec<_>>())
        .into_iter()
        .find(|v| v.get(key).is_some())
        .with_context(|| format!("{sub} printed no report:\n{}", outcome.cmd_output))?;
    Ok((outcome, report))
}

/// A BENCH of `max_bench_iters` kmalloc(4096) pairs, sent SIGINT (a no-op handler, no
/// SA_RESTART) after 300 ms, returns EINTR (or 0) within 1 s of the signal and leaves
/// nothing allocated; kmemleak clean.
fn bench_stops_on_sigint(art: &Artifacts, s: &mut Summary) -> Result<()> {
    let (outcome, report) = probe_then_stats(art, s, "bench-interrupt", "signal_to_return_ms")?;
    let out = &outcome.cmd_output;
    println!("BENCH interrupted: {report}");
    ensure!(
        report.get("finished_before_signal") != Some(&Value::Bool(true)),
        "the BENCH finished before the signal came, nothing was tested: {report}"
    );
    ensure!(
        out.contains("bench-interrupt-rc=0"),
        "the BENCH did not stop on SIGINT with EINTR (or 0) within 1 s, or left allocations: {report}"
    );
    let live = live_count(&section(out, "stats"))?;
    ensure!(
        live == 0,
        "{live} allocations live after the interrupted BENCH"
    );
    Ok(())
}

/// close() of a file holding one dma_coherent allocation, while another file runs
/// ALLOC_BATCHes of 256 dma_coherent 64 KiB entries, takes less than half of one such
/// batch: a release does not wait behind another file's batch. Figures printed.
fn close_not_blocked_by_a_dma_batch(art: &Artifacts, s: &mut Summary) -> Result<()> {
    let (outcome, report) = probe_then_stats(art, s, "close-during-batch", "close_ns")?;
    let out = &outcome.cmd_output;
    println!(
        "close during a DMA batch: close {} ns, batch median {} ns; {report}",
        num(&report, "close_ns"),
        num(&report, "batch_ns_median")
    );
    ensure!(
        out.contains("close-during-batch-rc=0"),
        "close() took {} ns, not under half of a batch ({} ns median), or the run went wrong: {report}",
        num(&report, "close_ns"),
        num(&report, "batch_ns_median")
    );
    let live = live_count(&section(out, "stats"))?;
    ensure!(live == 0, "{live} allocations live after the run");
    Ok(())
}

/// 8 threads allocating and freeing every kind for 60 s while software presses storm the
/// daemon: only limit errors and allocator refusals (both counted by the module), counts
/// consistent, and the daemon's count is the kernel's.
fn load_with_press_storm(art: &Artifacts, s: &mut Summary) -> Result<()> {
    let script = "
kmemlab-abi-probe load 8 60 99 > /tmp/load.json &
load=$!
n=0
while kill -0 $load 2>/dev/null; do kmemlabctl trigger --count 7 > /dev/null; n=$((n + 1)); done
wait $load; echo \"load-rc=$?\"
stop-kmemlabd
echo '== load'
cat /tmp/load.json
echo '== stats'
kmemlabctl stats --json
echo \"storms=$n\"";
    let outcome = boot(
        art,
        s,
        VmOptions {
            cmd: script.to_owned(),
            cmd_timeout: std::time::Duration::from_secs(600),
            ..VmOptions::default()
        },
    )?;
    let out = &outcome.cmd_output;
    let report = json_lines(&section(out, "load"))
        .into_iter()
        .next()
        .with_context(|| format!("no load report:\n{out}"))?;
    println!("load: {report}");
    ensure!(
        out.contains("load-rc=0"),
        "load failed (errors other than ENOSPC and ENOMEM, refusals the module did not count, or counts off): {report}"
    );
    // The daemon's last line counts every event the kernel raised.
    let log: Vec<Value> = outcome
        .log
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let stop = log
        .iter()
        .rev()
        .find(|v| v.get("event").and_then(Value::as_str) == Some("stop"))
        .context("kmemlabd wrote no stop line")?;
    let live = live_count(&section(out, "stats"))?;
    let stats = json_lines(&section(out, "stats"));
    let kernel_events = stats
        .iter()
        .find_map(|v| v.get("events").and_then(Value::as_u64))
        .context("stats --json has no events")?;
    ensure!(
        live == 0,
        "{live} allocations left after the load and kmemlabd stopped"
    );
    ensure!(
        num(stop, "irq_count") == kernel_events,
        "kmemlabd counted {} events, the kernel raised {kernel_events}",
        num(stop, "irq_count")
    );
    Ok(())
}

/// Each hostile node fails to probe with one clear line of ours, no oops; the good node
/// binds again and the module unloads.
fn hostile_device_trees(art: &Artifacts, s: &mut Summary) -> Result<()> {
    const CASES: &[(&str, &str)] = &[
        ("a-noirq", "no button"),
        ("b-heap0", "yang,heap-size 0 is invalid"),
        ("c-heapbig", "yang,heap-size 4294963200 is invalid"),
        ("d-heapodd", "yang,heap-size 1000 is invalid"),
        ("e-heapstr", "yang,heap-size is malformed"),
        ("f-heapu64", "yang,heap-size is malformed"),
        ("g-heapempty", "yang,heap-size is malformed"),
        ("h-both", "both interrupts and button-gpios"),
        ("i-badirq", "failed to request irq"),
        ("k-debstr", "debounce-interval"),
        ("l-debirq", "debounce-interval needs button-gpios"),
        ("m-irqstr", "cannot get the interrupt"),
    ];
    let mut script =
        String::from("D=/sys/bus/platform/drivers/kmemlab\necho kmemlab > $D/unbind\n");
    for (node, _) in CASES {
        script.push_str(&format!(
            "n=$(dmesg | wc -l); echo kmemlab-{node} > $D/bind 2>/dev/null; rc=$?\n\
             echo \"== case {node} rc=$rc\"; dmesg | tail -n +$((n + 1)) | grep -v 'probe with driver'\n"
        ));
    }
    script.push_str("echo '== good'\necho kmemlab > $D/bind && echo good-rebound\nrmmod kmemlab && echo rmmod-ok\necho '== end'\n");
    let outcome = boot(
        art,
        s,
        VmOptions {
            daemon: false,
            overlay: repo_root().join("dts/tests/hostile/hostile.dtso"),
            cmd: script,
            ..VmOptions::default()
        },
    )?;
    let out = &outcome.cmd_output;
    for (node, want) in CASES {
        let header = out
            .lines()
            .find(|l| l.starts_with(&format!("== case {node} ")))
            .with_context(|| format!("case {node} did not run:\n{out}"))?;
        ensure!(
            !header.ends_with("rc=0"),
            "kmemlab-{node} bound, but its node is wrong"
        );
        let ours: Vec<&str> = out
            .lines()
            .skip_while(|l| *l != header)
            .skip(1)
            .take_while(|l| !l.starts_with("== "))
            .filter(|l| l.contains(&format!("kmemlab-{node}")))
            .collect();
        ensure!(
            ours.len() == 1 && ours[0].contains(want),
            "kmemlab-{node}: want one line saying `{want}`, got:\n{}",
            ours.join("\n")
        );
    }
    ensure!(
        out.contains("good-rebound") && out.contains("rmmod-ok"),
        "the good node or rmmod failed:\n{out}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{has_word, live_count, whole_lines};

    #[test]
    fn whole_words_only() {
        assert!(has_word("kernel BUG at mm/slub.c:42!", "BUG"));
        assert!(has_word("WARNING: CPU: 1 PID: 81", "WARNING"));
        assert!(has_word("BUG", "BUG"));
        assert!(!has_word("CONFIG_DEBUG_VM=y", "BUG"));
        assert!(!has_word("slub_debug=FZPU", "BUG"));
        assert!(!has_word("BUGS fixed", "BUG"));
        assert!(!has_word("NO_WARNING_HERE", "WARNING"));
    }

    #[test]
    fn a_stats_that_printed_nothing_is_no_count() {
        let none: [&str; 0] = [];
        assert!(live_count(&none).is_err());
        assert!(live_count(&["kmemlabctl: no device"]).is_err());
        assert!(live_count(&[r#"{"kinds":{}}"#]).is_err());
        assert!(live_count(&[r#"{"kinds":{"kmalloc":{"frees":1}}}"#]).is_err());
        let two = r#"{"kinds":{"kmalloc":{"live_count":2},"vmalloc":{"live_count":1}}}"#;
        assert_eq!(live_count(&[two]).unwrap(), 3);
        assert!(live_count(&[two, two]).is_err());
    }

    #[test]
    fn a_last_line_without_newline_is_cut() {
        let lines = [r#"{"a":1}"#, r#"{"b":"#];
        assert_eq!(whole_lines(&lines, true), (&lines[..], None));
        assert_eq!(whole_lines(&lines, false), (&lines[..1], Some(r#"{"b":"#)));
        assert_eq!(whole_lines(&[], false), (&[][..], None));
    }
}
