//! The VM tests: each boots the real board with the real module and daemon and asserts
//! on what comes back. Every run also fails on any kernel splat in dmesg.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use crate::util::step;
use crate::vm::{
    json_lines, run_suite, run_vm, section, Artifacts, VmOptions, VmOutcome, KMEMLEAK_SCAN,
    PRESSES_DONE, PRESS_CUE, WAIT_LINES,
};

type VmTest = fn(&Artifacts) -> Result<()>;

/// What a VM test needs of the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Needs {
    /// The board's button (QMP presses on the PL061) or its device tree: the arm64 virt
    /// board only.
    Board,
    /// Only the allocation engine and /dev/kmemlab (and TRIGGER): also runs on a machine
    /// without a device tree, where kmemlab.ko makes the software device (Debian's amd64
    /// kernel on the PC).
    Engine,
}

const TESTS: &[(&str, Needs, VmTest)] = &[
    (
        "presses_arrive_in_order",
        Needs::Board,
        presses_arrive_in_order,
    ),
    (
        "info_reports_abi_version",
        Needs::Engine,
        info_reports_abi_version,
    ),
    (
        "stop_unload_reload_is_clean",
        Needs::Board,
        stop_unload_reload_is_clean,
    ),
    (
        "allocations_report_truthful_layout",
        Needs::Engine,
        allocations_report_truthful_layout,
    ),
    (
        "bad_inputs_give_documented_errnos",
        Needs::Engine,
        bad_inputs_give_documented_errnos,
    ),
    (
        "closing_a_file_frees_its_allocations",
        Needs::Engine,
        closing_a_file_frees_its_allocations,
    ),
    (
        "presses_replay_the_seed_plan",
        Needs::Board,
        presses_replay_the_seed_plan,
    ),
    (
        "button_gpios_wiring_gets_presses",
        Needs::Board,
        button_gpios_wiring_gets_presses,
    ),
    (
        "idle_daemon_costs_nothing",
        Needs::Board,
        idle_daemon_costs_nothing,
    ),
    (
        "a_hung_guest_is_killed_and_named",
        Needs::Board,
        a_hung_guest_is_killed_and_named,
    ),
    (
        "sighup_reloads_and_reopens_the_log",
        Needs::Board,
        sighup_reloads_and_reopens_the_log,
    ),
    (
        "debounce_and_coalescing",
        Needs::Board,
        debounce_and_coalescing,
    ),
    (
        "ready_only_after_the_devices_are_open",
        Needs::Board,
        ready_only_after_the_devices_are_open,
    ),
    (
        "heap_sysfs_addr_is_zero_for_everyone",
        Needs::Engine,
        heap_sysfs_addr_is_zero_for_everyone,
    ),
    (
        "ring_is_exact_under_a_mixed_burst",
        Needs::Board,
        ring_is_exact_under_a_mixed_burst,
    ),
    (
        "sizes_are_the_kernels_and_info_has_dma_mask",
        Needs::Engine,
        sizes_are_the_kernels_and_info_has_dma_mask,
    ),
    (
        "software_device_works_without_a_node",
        Needs::Engine,
        software_device_works_without_a_node,
    ),
    (
        "nop_and_profile_count_every_call",
        Needs::Engine,
        crate::vmtests_profile::nop_and_profile_count_every_call,
    ),
    (
        "c_client_allocates_and_frees",
        Needs::Engine,
        crate::vmtests_c::c_client_allocates_and_frees,
    ),
    (
        "watch_shows_presses_with_their_sources",
        Needs::Board,
        crate::vmtests_watch::watch_shows_presses_with_their_sources,
    ),
    (
        "watch_without_the_daemon_sees_the_button_once",
        Needs::Board,
        crate::vmtests_watch::watch_without_the_daemon_sees_the_button_once,
    ),
    (
        "watch_idle_timeout_exits_zero",
        Needs::Board,
        crate::vmtests_watch::watch_idle_timeout_exits_zero,
    ),
    (
        "bench_threads_per_thread_and_total",
        Needs::Engine,
        crate::vmtests_watch::bench_threads_per_thread_and_total,
    ),
    // kmemlabctl's commands (vmtests_cli.rs); the two with a kmemlabd need the board, as
    // debounce_and_coalescing does.
    (
        "cli_alloc_hold_frees_on_sigint",
        Needs::Engine,
        crate::vmtests_cli::alloc_hold_frees_on_sigint,
    ),
    (
        "cli_trigger_interval_gives_one_step_and_one_bounce",
        Needs::Board,
        crate::vmtests_cli::trigger_interval_gives_one_step_and_one_bounce,
    ),
    (
        "cli_report_stdin_reads_a_journal_export",
        Needs::Board,
        crate::vmtests_cli::report_stdin_reads_a_journal_export,
    ),
    (
        "cli_exit_statuses_for_real_errnos",
        Needs::Engine,
        crate::vmtests_cli::exit_statuses_for_real_errnos,
    ),
    (
        "cli_free_all_frees_what_other_processes_persisted",
        Needs::Engine,
        crate::vmtests_cli::free_all_frees_what_other_processes_persisted,
    ),
    (
        "a_second_kmemlabd_is_refused",
        Needs::Board,
        crate::vmtests_daemon::a_second_kmemlabd_is_refused,
    ),
    (
        "unbind_under_kmemlabd_ends_it_loudly",
        Needs::Board,
        crate::vmtests_daemon::unbind_under_kmemlabd_ends_it_loudly,
    ),
    (
        "sigterm_in_a_storm_stops_within_a_second",
        Needs::Board,
        crate::vmtests_daemon::sigterm_in_a_storm_stops_within_a_second,
    ),
    (
        "vfio_presses_give_one_step_each",
        Needs::Board,
        crate::vmtests_vfio::vfio_presses_give_one_step_each,
    ),
    (
        "vfio_refusals_are_clear",
        Needs::Board,
        crate::vmtests_vfio::vfio_refusals_are_clear,
    ),
];

/// What [`run_all`] did.
pub struct SuiteReport {
    /// The tests that ran (passed or failed), in order.
    pub ran: Vec<&'static str>,
    /// Fails if any test failed.
    pub result: Result<()>,
}

/// Runs every VM test the machine can run (all on the board; those marked
/// [`Needs::Engine`] elsewhere); fails if any failed, after running them all.
pub fn run_all(art: &Artifacts) -> SuiteReport {
    let only = std::env::var("KMEMLAB_TESTS").unwrap_or_default();
    let tests: Vec<(&'static str, VmTest)> = TESTS
        .iter()
        .filter(|(_, needs, _)| art.machine.has_board() || *needs == Needs::Engine)
        .map(|(name, _, test)| (*name, *test))
        .collect();
    let skipped: Vec<&str> = TESTS
        .iter()
        .filter(|(_, needs, _)| !art.machine.has_board() && *needs == Needs::Board)
        .map(|(name, _, _)| *name)
        .collect();
    if !skipped.is_empty() {
        step(format!(
            "the {} has no button and no device tree: skipping {}",
            art.machine.name(),
            skipped.join(", ")
        ));
    }
    let ran = tests
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| only.is_empty() || only.split(',').any(|o| name.contains(o)))
        .collect();
    let failed = run_suite(art, "vm test", &tests, |test, art| test(art));
    let result = if failed.is_empty() {
        Ok(())
    } else {
        Err(anyhow::anyhow!(
            "{} VM test(s) failed: {}",
            failed.len(),
            failed.join(", ")
        ))
    };
    SuiteReport { ran, result }
}

/// Boots with `opts`, and fails on a kernel splat (for the tests in other files).
pub(crate) fn boot_checked(art: &Artifacts, opts: VmOptions) -> Result<VmOutcome> {
    boot(art, opts)
}

/// Boots with `opts`, and fails on a kernel splat.
fn boot(art: &Artifacts, opts: VmOptions) -> Result<VmOutcome> {
    let outcome = run_vm(art, &opts)?;
    crate::vm::check_log_schema(&outcome.log)?;
    let splats = outcome.splats();
    ensure!(
        splats.is_empty(),
        "the kernel log shows a splat:\n{}",
        splats.join("\n")
    );
    Ok(outcome)
}

pub(crate) fn parse_log(outcome: &VmOutcome) -> Result<Vec<Value>> {
    outcome
        .log
        .iter()
        .map(|l| serde_json::from_str(l).with_context(|| format!("not a JSON line: {l}")))
        .collect()
}

/// The lines written for a press: every line that carries the daemon's press number.
pub(crate) fn press_lines(log: &[Value]) -> Vec<&Value> {
    log.iter()
        .filter(|v| v.get("seq").is_some_and(|s| !s.is_null()))
        .collect()
}

/// The lines of `log` whose `event` is `kind` (for the tests in other files too).
pub(crate) fn events<'a>(log: &'a [Value], kind: &str) -> Vec<&'a Value> {
    log.iter()
        .filter(|v| v.get("event").and_then(Value::as_str) == Some(kind))
        .collect()
}

/// (a) Five presses of the board's button give five interrupt lines, counts 1 to 5,
/// nothing missed.
fn presses_arrive_in_order(art: &Artifacts) -> Result<()> {
    let outcome = boot(
        art,
        VmOptions {
            presses: 5,
            cmd: "echo '== interrupts'; grep -E 'kmemlab|pl061' /proc/interrupts".to_owned(),
            ..VmOptions::default()
        },
    )?;
    let log = parse_log(&outcome)?;
    // One line per press (alloc, free or error), each with the UIO count it saw.
    let presses = press_lines(&log);
    let counts: Vec<u64> = presses
        .iter()
        .filter_map(|v| v.get("irq_count").and_then(Value::as_u64))
        .collect();
    ensure!(
        counts == [1, 2, 3, 4, 5],
        "irq counts {counts:?}, want [1, 2, 3, 4, 5]\nlog:\n{}",
        outcome.log.join("\n")
    );
    for v in &presses {
        ensure!(
            v.get("missed").and_then(Value::as_u64) == Some(0),
            "an interrupt was missed: {v}"
        );
    }
    ensure!(
        events(&log, "start").len() == 1 && events(&log, "stop").len() == 1,
        "want one start and one stop line:\n{}",
        outcome.log.join("\n")
    );
    // Each of the five is a button press with its own ring record, in order.
    let mut last_ktime = 0;
    for v in &presses {
        ensure!(
            v.get("source").and_then(Value::as_str) == Some("button"),
            "a press line not from the button: {v}"
        );
        let ktime = v.get("irq_ktime_ns").and_then(Value::as_u64);
        ensure!(
            ktime.is_some_and(|k| k > last_ktime),
            "press records out of order or without a kernel timestamp: {v}"
        );
        last_ktime = ktime.unwrap_or(0);
    }
    // The kernel counted the same five edges on the GPIO line: its kmemlab line in
    // /proc/interrupts is an edge interrupt taken five times, summed over the CPUs.
    let interrupts = section(&outcome.cmd_output, "interrupts");
    let line = interrupts
        .iter()
        .find(|l| l.split_whitespace().last() == Some("kmemlab"))
        .with_context(|| {
            format!(
                "no kmemlab line in /proc/interrupts:\n{}",
                outcome.cmd_output
            )
        })?;
    ensure!(
        line.split_whitespace().any(|f| f == "Edge"),
        "the button's interrupt is not an edge interrupt: {line}"
    );
    let edges = button_interrupts(&interrupts);
    ensure!(
        edges == Some(5),
        "the kernel took {edges:?} button interrupts, want the same five edges: {line}"
    );
    Ok(())
}

/// (c) `kmemlabctl info --json` reports the ABI version of kmod-helper/uapi.
fn info_reports_abi_version(art: &Artifacts) -> Result<()> {
    let outcome = boot(
        art,
        VmOptions {
            daemon: false,
            cmd: "kmemlabctl info --json".to_owned(),
            ..VmOptions::default()
        },
    )?;
    ensure!(
        outcome.cmd_status == 0,
        "kmemlabctl info failed:\n{}",
        outcome.cmd_output
    );
    let line = outcome
        .cmd_output
        .lines()
        .find(|l| l.trim_start().starts_with('{'))
        .context("kmemlabctl info --json printed no JSON object")?;
    let info: Value = serde_json::from_str(line).with_context(|| format!("bad JSON: {line}"))?;
    let version = info.get("abi_version").and_then(Value::as_u64);
    ensure!(
        version == Some(u64::from(kmemlab_uapi::ABI_VERSION)),
        "abi_version {version:?}, want {}: {line}",
        kmemlab_uapi::ABI_VERSION
    );
    let page = info.get("page_size").and_then(Value::as_u64);
    ensure!(
        page == Some(4096),
        "page_size {page:?} on the 4K arm64 test kernel: {line}"
    );
    Ok(())
}

/// (b) Stop the daemon, rmmod, load and unload again: no WARN, BUG or Oops.
fn stop_unload_reload_is_clean(art: &Artifacts) -> Result<()> {
    let script = "\
        set -e
        stop-kmemlabd
        rmmod kmemlab
        [ ! -e /dev/kmemlab ] || { echo '/dev/kmemlab still there after rmmod'; exit 1; }
        insmod /lib/modules/kmemlab.ko
        [ -c /dev/kmemlab ] || { echo 'no /dev/kmemlab after reload'; exit 1; }
        cat /sys/class/uio/uio*/name
        kmemlabctl info --json
        rmmod kmemlab
        ! grep -q kmemlab /proc/modules
        echo unloaded-twice";
    let outcome = boot(
        art,
        VmOptions {
            presses: 1,
            cmd: script.to_owned(),
            ..VmOptions::default()
        },
    )?;
    ensure!(
        outcome.cmd_status == 0 && outcome.cmd_output.contains("unloaded-twice"),
        "the unload/reload script failed ({}):\n{}",
        outcome.cmd_status,
        outcome.cmd_output
    );
    ensure!(
        outcome.cmd_output.lines().any(|l| l.trim() == "kmemlab"),
        "the reloaded module registered no UIO device named kmemlab:\n{}",
        outcome.cmd_output
    );
    let log = parse_log(&outcome)?;
    let stop = events(&log, "stop");
    ensure!(
        stop.len() == 1,
        "kmemlabd wrote no stop line on SIGTERM:\n{}",
        outcome.log.join("\n")
    );
    ensure!(
        outcome.dmesg.iter().any(|l| l.contains("kmemlab")),
        "dmesg has no line from the module at all (was the log captured?)"
    );
    Ok(())
}

fn hex(v: &Value, key: &str) -> Option<u64> {
    let s = v.get(key)?.as_str()?;
    u64::from_str_radix(s.trim_start_matches("0x"), 16).ok()
}

/// `v[key]` as a number (for the tests in other files too).
/// The string `key` of a log line (for the tests in other files too).
pub(crate) fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

pub(crate) fn num(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

/// Issue 3: kmalloc, vmalloc and dma_coherent report what the kernel really did.
fn allocations_report_truthful_layout(art: &Artifacts) -> Result<()> {
    let script = "\
        echo 1 > /proc/sys/kernel/kptr_restrict
        echo '== allocs'
        kmemlabctl alloc --kind kmalloc --size 1 --persist --json
        kmemlabctl alloc --kind vmalloc --size 1 --persist --json
        kmemlabctl alloc --kind vmalloc --size 4M --persist --json
        kmemlabctl alloc --kind dma-coherent --size 1024 --persist --json
        echo '== vmallocinfo'
        cat /proc/vmallocinfo
        echo '== pfns'
        cat /sys/kernel/debug/kmemlab/pfns
        echo '== list'
        kmemlabctl list --json
        echo '== frees'
        for h in $(kmemlabctl list --json | sed -n 's/.*\"handle\":\\([0-9]*\\).*/\\1/p'); do
            kmemlabctl free \"$h\" --json
        done
        echo '== stats'
        kmemlabctl stats --json
        echo '== end'";
    let outcome = boot(
        art,
        VmOptions {
            daemon: false,
            cmd: script.to_owned(),
            ..VmOptions::default()
        },
    )?;
    let out = &outcome.cmd_output;
    let allocs = json_lines(&section(out, "allocs"));
    ensure!(allocs.len() == 4, "want 4 allocation reports, got:\n{out}");
    let (kmalloc, vmalloc1, vmalloc4m, dma) = (&allocs[0], &allocs[1], &allocs[2], &allocs[3]);
    // LIST rebuilds each report from the memory (a new page walk): the same as ALLOC's.
    let listed = json_lines(&section(out, "list"));
    ensure!(
        listed == allocs,
        "LIST should repeat the ALLOC reports:\n{listed:?}\nALLOC:\n{allocs:?}"
    );

    ensure!(
        num(kmalloc, "usable_size") == Some(8) && num(kmalloc, "phys_segments") == Some(1),
        "kmalloc(1) should report usable_size 8 and 1 segment: {kmalloc}"
    );
    ensure!(
        num(vmalloc1, "pages") == Some(1),
        "vmalloc(1) should span 1 page: {vmalloc1}"
    );
    let vaddr = hex(vmalloc1, "vaddr").context("vmalloc(1) reported no vaddr (hidden?)")?;
    let area = section(out, "vmallocinfo")
        .into_iter()
        .find(|l| l.starts_with(&format!("0x{vaddr:016x}-")))
        .with_context(|| format!("0x{vaddr:016x} is not in /proc/vmallocinfo"))?;
    ensure!(
        area.split_whitespace().nth(1) == Some("8192"),
        "vmalloc(1) should be an 8192-byte area (a page and its guard page): {area}"
    );

    // The kernel's own page walk, recounted here.
    let handle = num(vmalloc4m, "handle").context("no handle")?;
    let pfns = pfns_of(&section(out, "pfns"), handle)?;
    ensure!(
        pfns.len() == 1024,
        "vmalloc(4M) should span 1024 pages, the walk shows {}",
        pfns.len()
    );
    let runs = 1 + pfns.windows(2).filter(|w| w[1] != w[0] + 1).count() as u64;
    ensure!(
        num(vmalloc4m, "pages") == Some(1024) && num(vmalloc4m, "phys_segments") == Some(runs),
        "vmalloc(4M) reports {:?} segments, the page walk shows {runs}: {vmalloc4m}",
        num(vmalloc4m, "phys_segments")
    );

    let dma_addr = hex(dma, "dma").context("dma_coherent reported no dma address")?;
    ensure!(
        dma_addr % 4096 == 0,
        "dma address 0x{dma_addr:x} is not page-aligned"
    );
    ensure!(
        dma.get("zeroed") == Some(&Value::Bool(true)),
        "dma_alloc_coherent memory is zeroed: {dma}"
    );

    let frees = json_lines(&section(out, "frees"));
    ensure!(frees.len() == 4, "want 4 frees, got:\n{out}");
    let stats = json_lines(&section(out, "stats"));
    let stats_text = stats
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    ensure!(
        !stats.is_empty(),
        "kmemlabctl stats --json printed nothing:\n{out}"
    );
    ensure!(
        !stats_text.contains("\"live_count\":1") && stats_text.contains("\"live_count\":0"),
        "STATS should show nothing live:\n{stats_text}"
    );
    Ok(())
}

/// PFNs of `handle` in the module's debugfs dump: a line `handle kind pages` followed by
/// one PFN per line (hex), up to the next header or a blank line.
fn pfns_of(lines: &[&str], handle: u64) -> Result<Vec<u64>> {
    let mut it = lines.iter().map(|l| l.trim());
    let prefix = format!("{handle} ");
    it.by_ref()
        .find(|l| l.starts_with(&prefix))
        .with_context(|| {
            format!(
                "handle {handle} not in the pfns dump:\n{}",
                lines.join("\n")
            )
        })?;
    Ok(it
        .take_while(|l| !l.is_empty() && !l.contains(' '))
        .filter_map(|l| u64::from_str_radix(l.trim_start_matches("0x"), 16).ok())
        .collect())
}

/// Issue 3: every bad input gets its documented errno; nothing leaks.
fn bad_inputs_give_documented_errnos(art: &Artifacts) -> Result<()> {
    let outcome = boot(
        art,
        VmOptions {
            daemon: false,
            cmd: "kmemlab-abi-probe errnos".to_owned(),
            ..VmOptions::default()
        },
    )?;
    let failed: Vec<&str> = outcome
        .cmd_output
        .lines()
        .filter(|l| l.contains("\"pass\":false"))
        .collect();
    ensure!(
        outcome.cmd_status == 0 && failed.is_empty(),
        "cases with the wrong errno:\n{}\nfull output:\n{}",
        failed.join("\n"),
        outcome.cmd_output
    );
    Ok(())
}

/// Issue 3: closing a file that holds 1000 allocations frees them all; kmemleak agrees.
fn closing_a_file_frees_its_allocations(art: &Artifacts) -> Result<()> {
    // The allocations must be older than kmemleak's 5 s before the scan (KMEMLEAK_SCAN).
    let scan = if art.kmemleak {
        KMEMLEAK_SCAN
    } else {
        println!(
            "closing_a_file_frees_its_allocations: this kernel has no kmemleak; the \
             kmemleak scan is skipped, the live counts are still checked"
        );
        ""
    };
    let script = format!(
        "set -e
        kmemlab-abi-probe hold 1000 0 64
        kmemlab-abi-probe hold 200 1 4096
        kmemlab-abi-probe hold 50 2 1024{scan}"
    );
    let outcome = boot(
        art,
        VmOptions {
            daemon: false,
            cmd: script.to_owned(),
            ..VmOptions::default()
        },
    )?;
    ensure!(
        outcome.cmd_status == 0,
        "a hold run failed:\n{}",
        outcome.cmd_output
    );
    let holds = json_lines(&outcome.cmd_output.lines().collect::<Vec<_>>());
    ensure!(
        holds.len() == 3,
        "want 3 hold reports:\n{}",
        outcome.cmd_output
    );
    for h in &holds {
        ensure!(
            num(h, "live_while_open") == num(h, "held") && num(h, "live_after_close") == Some(0),
            "allocations survived their file: {h}"
        );
    }
    let leaks = section(&outcome.cmd_output, "kmemleak");
    ensure!(
        leaks.iter().all(|l| l.trim().is_empty()),
        "kmemleak found unreferenced objects:\n{}",
        leaks.join("\n")
    );
    Ok(())
}

/// Issue 3: six presses replay the seed: kmalloc, vmalloc, dma_coherent, each allocated
/// then freed, with the allocation fields and the interrupt-to-wake latency.
fn presses_replay_the_seed_plan(art: &Artifacts) -> Result<()> {
    let outcome = boot(
        art,
        VmOptions {
            presses: 6,
            ..VmOptions::default()
        },
    )?;
    let log = parse_log(&outcome)?;
    let presses = press_lines(&log);
    let shape: Vec<(String, String)> = presses
        .iter()
        .map(|v| {
            let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            (s("event"), s("kind"))
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("alloc", "kmalloc"),
        ("free", "kmalloc"),
        ("alloc", "vmalloc"),
        ("free", "vmalloc"),
        ("alloc", "dma_coherent"),
        ("free", "dma_coherent"),
    ]
    .iter()
    .map(|(e, k)| ((*e).to_owned(), (*k).to_owned()))
    .collect();
    ensure!(
        shape == want,
        "press lines {shape:?}, want {want:?}\n{}",
        outcome.log.join("\n")
    );
    let sizes: Vec<Option<u64>> = presses.iter().step_by(2).map(|v| num(v, "size")).collect();
    ensure!(
        sizes == [Some(1), Some(1), Some(1024)],
        "seed sizes are 1, 1, 1024: {sizes:?}"
    );
    for v in presses.iter().step_by(2) {
        for key in [
            "handle",
            "usable_size",
            "pages",
            "phys_segments",
            "alloc_ns",
            "irq_to_wake_ns",
        ] {
            ensure!(num(v, key).is_some(), "alloc line without {key}: {v}");
        }
    }
    for v in presses.iter().skip(1).step_by(2) {
        ensure!(
            num(v, "free_ns").is_some(),
            "free line without free_ns: {v}"
        );
    }
    ensure!(
        presses[2].get("vmallocinfo").is_some_and(Value::is_string),
        "the vmalloc line should carry its /proc/vmallocinfo line: {}",
        presses[2]
    );
    Ok(())
}

/// Issue 6: the button wired as `button-gpios` (gpiod_get + gpiod_to_irq) instead of an
/// interrupt: presses arrive, and the unsupported debounce is reported once.
fn button_gpios_wiring_gets_presses(art: &Artifacts) -> Result<()> {
    let outcome = boot(
        art,
        VmOptions {
            presses: 3,
            overlay: crate::util::repo_root().join("dts/qemu-virt-gpios.dtso"),
            cmd: "grep kmemlab /proc/interrupts".to_owned(),
            ..VmOptions::default()
        },
    )?;
    let log = parse_log(&outcome)?;
    let counts: Vec<u64> = press_lines(&log)
        .iter()
        .filter_map(|v| num(v, "irq_count"))
        .collect();
    ensure!(
        counts == [1, 2, 3],
        "irq counts {counts:?} with button-gpios, want [1, 2, 3]"
    );
    ensure!(
        outcome.dmesg.iter().any(|l| l.contains("(button-gpios)")),
        "the driver did not say it probed through button-gpios"
    );
    ensure!(
        outcome
            .dmesg
            .iter()
            .filter(|l| l.contains("debounce-interval 5 ms ignored"))
            .count()
            == 1,
        "want one line about the PL061 not debouncing"
    );
    Ok(())
}

/// Issue 4: no timers and no polling. Over 10 idle seconds kmemlabd uses no CPU time and
/// makes no voluntary context switch (from /proc/PID/stat and /proc/PID/status).
fn idle_daemon_costs_nothing(art: &Artifacts) -> Result<()> {
    let script = "\
        pid=$(cat /run/kmemlabd.pid)
        cpu() { set -- $(cut -d')' -f2 /proc/$pid/stat); echo $(( ${12} + ${13} )); }
        csw() { sed -n 's/^voluntary_ctxt_switches:[[:space:]]*//p' /proc/$pid/status; }
        c0=$(cpu); v0=$(csw)
        sleep 10
        c1=$(cpu); v1=$(csw)
        echo \"idle cpu_ticks=$((c1 - c0)) voluntary_switches=$((v1 - v0)) ticks_before=$c0 switches_before=$v0\"";
    let outcome = boot(
        art,
        VmOptions {
            presses: 2,
            cmd: script.to_owned(),
            ..VmOptions::default()
        },
    )?;
    let line = outcome
        .cmd_output
        .lines()
        .find(|l| l.starts_with("idle "))
        .with_context(|| format!("no idle figures:\n{}", outcome.cmd_output))?;
    println!("kmemlabd over 10 idle seconds: {line}");
    let field = |name: &str| -> Option<i64> {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
    };
    ensure!(
        field("cpu_ticks") == Some(0) && field("voluntary_switches") == Some(0),
        "kmemlabd was not idle: {line}"
    );
    ensure!(
        field("switches_before").is_some_and(|v| v > 0),
        "the figures cannot be right: no context switch at all before the idle period: {line}"
    );
    Ok(())
}

/// Issue 2: a guest that hangs is killed after the bound, with a message that says where
/// it hung and the console's tail.
fn a_hung_guest_is_killed_and_named(art: &Artifacts) -> Result<()> {
    let started = Instant::now();
    let result = run_vm(
        art,
        &VmOptions {
            daemon: false,
            cmd: "echo about-to-hang; sleep 600".to_owned(),
            cmd_timeout: std::time::Duration::from_secs(3),
            ..VmOptions::default()
        },
    );
    let Err(err) = result else {
        bail!("a command that sleeps 600 s finished within a 3 s bound");
    };
    let msg = format!("{err:#}");
    ensure!(
        msg.contains("hung in stage `cmd`") && msg.contains("about-to-hang"),
        "the message should name the stage and show the console tail:\n{msg}"
    );
    ensure!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "killing the hung guest took {:?}",
        started.elapsed()
    );
    Ok(())
}

fn events_of(log: &[Value]) -> Vec<&str> {
    log.iter()
        .filter_map(|v| v.get("event").and_then(Value::as_str))
        .collect()
}

/// Issue 4: SIGHUP re-reads the config (a new plan takes effect) and reopens the log
/// (logrotate's rename); an invalid config on reload is an error line and the old config
/// stays; SIGTERM writes the summary and exits 0.
fn sighup_reloads_and_reopens_the_log(art: &Artifacts) -> Result<()> {
    let script = format!(
        r#"{WAIT_LINES}
set -e
stop-kmemlabd
printf 'plan = "kmalloc:64"\ndebounce_ms = 0\n' > /tmp/k.conf
kmemlabd --config /tmp/k.conf --log /tmp/a.log 2>/tmp/a.err &
pid=$!
wait_lines /tmp/a.log '"start"' 1
kmemlabctl trigger > /dev/null
wait_lines /tmp/a.log '"seq"' 1
mv /tmp/a.log /tmp/a.log.1
printf 'plan = "vmalloc:4K"\ndebounce_ms = 0\n' > /tmp/k.conf
kill -HUP $pid
wait_lines /tmp/a.log '"reload"' 1
kmemlabctl trigger > /dev/null
wait_lines /tmp/a.log '"seq"' 1
echo 'plan = [' > /tmp/k.conf
kill -HUP $pid
wait_lines /tmp/a.log '"reload"' 2
kmemlabctl trigger > /dev/null
wait_lines /tmp/a.log '"seq"' 2
kill -TERM $pid
set +e
wait $pid
echo "exit=$?"
echo '== old'
cat /tmp/a.log.1
echo '== new'
cat /tmp/a.log
echo '== end'"#
    );
    let outcome = boot(
        art,
        VmOptions {
            cmd: script,
            ..VmOptions::default()
        },
    )?;
    let out = &outcome.cmd_output;
    ensure!(
        out.contains("exit=0"),
        "kmemlabd did not exit 0 on SIGTERM:\n{out}"
    );
    let lines = |name: &str| -> Vec<String> {
        section(out, name).iter().map(|l| (*l).to_owned()).collect()
    };
    let (old, new) = (lines("old"), lines("new"));
    crate::vm::check_log_schema(&old)?;
    crate::vm::check_log_schema(&new)?;
    let old: Vec<Value> = old
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let new: Vec<Value> = new
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    ensure!(
        events_of(&old) == ["start", "alloc"]
            && old[1].get("kind").and_then(Value::as_str) == Some("kmalloc"),
        "the renamed log should hold start and the kmalloc step: {:?}",
        events_of(&old)
    );
    // A changed plan frees what the old plan held (a free line with no press) and the
    // reload line follows; both land in the reopened file.
    let first = new
        .iter()
        .find(|v| v.get("event").and_then(Value::as_str) == Some("reload"))
        .context("the reopened log has no reload line")?;
    ensure!(
        first.get("log_reopened") == Some(&Value::Bool(true))
            && first.get("ok") == Some(&Value::Bool(true)),
        "the first reload should succeed and reopen the log: {first}"
    );
    let allocs: Vec<&str> = new
        .iter()
        .filter(|v| v.get("event").and_then(Value::as_str) == Some("alloc"))
        .filter_map(|v| v.get("kind").and_then(Value::as_str))
        .collect();
    ensure!(
        allocs == ["vmalloc"],
        "after the reload the new plan (vmalloc) should run: {allocs:?}"
    );
    ensure!(
        new.iter()
            .any(|v| v.get("event").and_then(Value::as_str) == Some("error")
                && v.get("op").and_then(Value::as_str) == Some("reload")),
        "an invalid config on reload should give an error line: {:?}",
        events_of(&new)
    );
    // The old config (vmalloc) is kept: the third press frees the vmalloc allocation.
    let frees: Vec<&Value> = new
        .iter()
        .filter(|v| {
            v.get("event").and_then(Value::as_str) == Some("free")
                && v.get("seq").is_some_and(|s| !s.is_null())
        })
        .collect();
    ensure!(
        frees.len() == 1 && frees[0].get("kind").and_then(Value::as_str) == Some("vmalloc"),
        "after the failed reload the vmalloc plan should carry on: {:?}",
        events_of(&new)
    );
    let tail: Vec<&str> = events_of(&new).into_iter().rev().take(2).collect();
    ensure!(
        tail == ["stop", "summary"],
        "SIGTERM should end with summary, stop: {tail:?}"
    );
    Ok(())
}

/// Issue 4: two presses 10 ms apart give one step and one bounce; 100 coalesced events
/// leave the daemon's total at exactly the kernel's count.
fn debounce_and_coalescing(art: &Artifacts) -> Result<()> {
    let script = format!(
        r#"{WAIT_LINES}
L=/tmp/kmemlabd.log
kmemlab-abi-probe trigger-pair 10
wait_lines $L '"bounce"' 1
kmemlabctl trigger --count 100 --json
wait_lines $L '"irq_count":102' 1
kill -USR1 $(cat /run/kmemlabd.pid)
wait_lines $L '"stats"' 1
echo '== stats'
kmemlabctl stats --json"#
    );
    let outcome = boot(
        art,
        VmOptions {
            cmd: script,
            ..VmOptions::default()
        },
    )?;
    ensure!(
        outcome.cmd_status == 0,
        "the script failed:\n{}",
        outcome.cmd_output
    );
    let log = parse_log(&outcome)?;
    let steps = press_lines(&log);
    // The pair's events are 1 and 2; the 100 that follow may bring more bounces.
    let bounces: Vec<&Value> = events(&log, "bounce")
        .into_iter()
        .filter(|v| num(v, "irq_count").is_some_and(|c| c <= 2))
        .collect();
    ensure!(
        bounces.len() == 1,
        "two presses 10 ms apart should give one bounce: {:?}",
        events_of(&log)
    );
    let since = num(bounces[0], "since_last_ns").context("bounce without since_last_ns")?;
    ensure!(
        since < 50_000_000,
        "the bounce came {since} ns after the press, not under 50 ms"
    );
    let first_steps = steps
        .iter()
        .filter(|v| num(v, "irq_count").is_some_and(|c| c <= 2))
        .count();
    ensure!(
        first_steps == 1,
        "the pair should run one plan step, ran {first_steps}"
    );
    let stats = events(&log, "stats");
    let s = stats.last().context("no stats line after SIGUSR1")?;
    let total = num(s, "presses").unwrap_or(0)
        + num(s, "bounces").unwrap_or(0)
        + num(s, "coalesced").unwrap_or(0);
    let kernel = section(&outcome.cmd_output, "stats")
        .iter()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .and_then(|v| num(&v, "events"))
        .context("kmemlabctl stats --json has no events")?;
    ensure!(
        kernel == 102 && num(s, "irq_count") == Some(102) && total == 102,
        "the daemon's total ({total}: presses + bounces + coalesced) must equal the kernel's 102 events ({kernel}): {s}"
    );
    Ok(())
}

/// Issue 4: with NOTIFY_SOCKET set to a socket the test owns, READY=1 arrives only when
/// kmemlabd holds /dev/kmemlab, the UIO device and the heap mapping; on SIGHUP, RELOADING=1
/// with MONOTONIC_USEC= and then READY=1 (issue 14); STOPPING=1 at the end.
fn ready_only_after_the_devices_are_open(art: &Artifacts) -> Result<()> {
    let outcome = boot(
        art,
        VmOptions {
            cmd: "stop-kmemlabd && kmemlab-abi-probe notify-test /usr/bin/kmemlabd".to_owned(),
            ..VmOptions::default()
        },
    )?;
    let report = outcome
        .cmd_output
        .lines()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .with_context(|| format!("no readiness report:\n{}", outcome.cmd_output))?;
    ensure!(outcome.cmd_status == 0, "readiness test failed: {report}");
    Ok(())
}

/// Issue 11: `/sys/class/uio/uio0/maps/map0/addr` is zero, the same for root and for an
/// unprivileged member of group kmemlab; both map map0 with the size sysfs gives, see the
/// ring's magic, and are refused a page more.
fn heap_sysfs_addr_is_zero_for_everyone(art: &Artifacts) -> Result<()> {
    let script = "\
        chgrp kmemlab /dev/uio0 && chmod 0660 /dev/uio0
        echo '== root'
        kmemlab-abi-probe heap-map
        echo '== user'
        kmemlab-abi-probe as 1000 1000 990 kmemlab-abi-probe heap-map
        echo '== end'";
    let outcome = boot(
        art,
        VmOptions {
            daemon: false,
            cmd: script.to_owned(),
            ..VmOptions::default()
        },
    )?;
    let out = &outcome.cmd_output;
    let report = |name: &str| -> Result<Value> {
        json_lines(&section(out, name))
            .into_iter()
            .next()
            .with_context(|| format!("no heap-map report for {name}:\n{out}"))
    };
    let (root, user) = (report("root")?, report("user")?);
    ensure!(
        num(&root, "uid") == Some(0) && num(&user, "uid") == Some(1000),
        "the reports are not root's and uid 1000's: {root} {user}"
    );
    for r in [&root, &user] {
        ensure!(
            num(r, "addr_value") == Some(0),
            "map0/addr should read as zero: {r}"
        );
        ensure!(
            num(r, "size").is_some_and(|s| s > 0)
                && r.get("mapped").and_then(Value::as_str) == Some("ok")
                && r.get("ring_magic") == Some(&Value::Bool(true)),
            "mapping map0 with the sysfs size should work and show RING_MAGIC: {r}"
        );
        ensure!(
            r.get("map_past_size").and_then(Value::as_str) != Some("ok"),
            "a mapping one page longer than map0 was accepted: {r}"
        );
    }
    ensure!(
        root.get("addr") == user.get("addr") && root.get("size") == user.get("size"),
        "root and an unprivileged user read different map0 attributes: {root} {user}"
    );
    Ok(())
}

/// The kmemlab line of /proc/interrupts: the button interrupts the kernel took, summed
/// over the CPUs.
fn button_interrupts(lines: &[&str]) -> Option<u64> {
    let line = lines
        .iter()
        .find(|l| l.split_whitespace().last() == Some("kmemlab"))?;
    Some(
        line.split_whitespace()
            .skip(1)
            .map_while(|f| f.parse::<u64>().ok())
            .sum(),
    )
}

/// Issue 11: with kmemlabd running, 150 button presses from the host while the guest
/// issues 1000 TRIGGERs of one event, reading each one's ring record (sequence number =
/// the TRIGGER's `events`). The kernel's count is presses + triggers and the daemon's
/// final count is the kernel's; every daemon press line whose count is a trigger's says
/// `"source":"trigger"` with that record's `ktime_ns`, every other says `"button"`; the
/// sequence numbers left to the button are as many as the button interrupts the kernel
/// took.
fn ring_is_exact_under_a_mixed_burst(art: &Artifacts) -> Result<()> {
    const PRESSES: u32 = 150;
    const TRIGGERS: u64 = 1000;
    // 15 ms apart, the triggers span about as long as the presses (150 ms apart), so the
    // two sources interleave all along.
    const GAP_US: u64 = 15_000;
    let script = format!(
        r#"{WAIT_LINES}
L=/tmp/kmemlabd.log
echo {PRESS_CUE}
kmemlab-abi-probe trigger-burst {TRIGGERS} {GAP_US} > /tmp/burst.json
echo "burst-rc=$?"
while read -r line; do [ "$line" = {PRESSES_DONE} ] && break; done
k=$(kmemlabctl stats --json | sed -n 's/.*"events":\([0-9]*\).*/\1/p')
wait_lines $L "\"irq_count\":$k[,}}]" 1
stop-kmemlabd
echo '== stats'
kmemlabctl stats --json
echo '== interrupts'
grep kmemlab /proc/interrupts
echo '== burst'
cat /tmp/burst.json
echo '== end'"#
    );
    let outcome = boot(
        art,
        VmOptions {
            presses_on_cue: PRESSES,
            cmd: script,
            ..VmOptions::default()
        },
    )?;
    let out = &outcome.cmd_output;
    let burst = json_lines(&section(out, "burst"));
    let summary = burst
        .iter()
        .find(|v| v.get("triggers").is_some())
        .with_context(|| format!("trigger-burst printed no summary:\n{out}"))?;
    println!("trigger burst: {summary}");
    ensure!(
        out.contains("burst-rc=0"),
        "trigger-burst failed (a record missing, from the wrong source, or seqs not increasing): {summary}"
    );
    // Each TRIGGER's own record: seq -> ktime_ns.
    let mut triggers: HashMap<u64, u64> = HashMap::new();
    for v in burst.iter().filter(|v| v.get("seq").is_some()) {
        let (Some(seq), Some(ktime)) = (num(v, "seq"), num(v, "ktime_ns")) else {
            bail!("a trigger without its ring record: {v}");
        };
        ensure!(
            num(v, "source") == Some(u64::from(kmemlab_uapi::SOURCE_TRIGGER)),
            "the record of a TRIGGER names another source: {v}"
        );
        ensure!(
            triggers.insert(seq, ktime).is_none(),
            "two TRIGGERs got sequence number {seq}"
        );
    }
    ensure!(
        triggers.len() as u64 == TRIGGERS,
        "{} trigger records, want {TRIGGERS}",
        triggers.len()
    );

    let kernel = json_lines(&section(out, "stats"))
        .iter()
        .find_map(|v| num(v, "events"))
        .with_context(|| format!("kmemlabctl stats --json has no events:\n{out}"))?;
    let irqs = button_interrupts(&section(out, "interrupts"))
        .with_context(|| format!("no kmemlab line in /proc/interrupts:\n{out}"))?;
    ensure!(
        triggers.keys().all(|s| (1..=kernel).contains(s)),
        "a trigger's sequence number lies outside 1..={kernel}"
    );
    let button_seqs = kernel - triggers.len() as u64;
    println!(
        "mixed burst: {PRESSES} presses, {TRIGGERS} triggers; kernel events {kernel}, button interrupts {irqs}, button seqs {button_seqs}"
    );
    ensure!(
        kernel == u64::from(PRESSES) + TRIGGERS,
        "the kernel counted {kernel} events, want {PRESSES} presses + {TRIGGERS} triggers"
    );
    ensure!(
        button_seqs == irqs && irqs == u64::from(PRESSES),
        "{button_seqs} sequence numbers are the button's, the kernel took {irqs} button interrupts, the host pressed {PRESSES} times"
    );

    let log = parse_log(&outcome)?;
    let stop = events(&log, "stop");
    let stop = stop.first().context("kmemlabd wrote no stop line")?;
    ensure!(
        num(stop, "irq_count") == Some(kernel),
        "kmemlabd's last count {:?} is not the kernel's {kernel}: {stop}",
        num(stop, "irq_count")
    );
    if let Some(summary) = events(&log, "summary").last() {
        ensure!(
            num(summary, "events") == Some(kernel),
            "kmemlabd's summary counts {:?} events, the kernel {kernel}: {summary}",
            num(summary, "events")
        );
    }
    // Every press line, and any other line that names a source.
    let mut by_source: HashMap<String, u64> = HashMap::new();
    for v in log.iter().filter(|v| {
        v.get("seq").is_some_and(|s| !s.is_null()) || v.get("source").is_some_and(|s| !s.is_null())
    }) {
        let count = num(v, "irq_count").with_context(|| format!("no irq_count: {v}"))?;
        let source = v.get("source").and_then(Value::as_str);
        let ktime = num(v, "irq_ktime_ns");
        *by_source
            .entry(source.unwrap_or("null").to_owned())
            .or_default() += 1;
        match triggers.get(&count) {
            Some(&want) => ensure!(
                source == Some("trigger") && ktime == Some(want),
                "count {count} was a TRIGGER recorded at {want} ns; the daemon says: {v}"
            ),
            None => ensure!(
                source == Some("button") && ktime.is_some(),
                "count {count} was no TRIGGER, so the button's; the daemon says: {v}"
            ),
        }
    }
    let first = triggers.keys().min().copied().unwrap_or(0);
    let last = triggers.keys().max().copied().unwrap_or(0);
    let interleaved = (first..=last).filter(|s| !triggers.contains_key(s)).count();
    println!(
        "daemon lines by source: {by_source:?}; button events between the first and last trigger: {interleaved}; bounces {}, coalesced lines {}",
        events(&log, "bounce").len(),
        events(&log, "coalesced").len()
    );
    Ok(())
}

/// A `dma_mask` as kmemlabctl prints it: a number or a `0x` string.
fn mask_value(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        let s = v.as_str()?;
        u64::from_str_radix(s.trim_start_matches("0x"), 16).ok()
    })
}

/// Issue 11: kmalloc(65) reports kmalloc_size_roundup's 96; kvmalloc is kvmalloc() (its
/// vmalloc area's caller in /proc/vmallocinfo names kvmalloc); INFO reports the DMA mask.
///
/// A 1 MiB kvmalloc may be served by kmalloc (kvmalloc tries the page allocator first,
/// and a fresh guest has order-8 blocks): then it has no vmalloc area, but must be one
/// physically contiguous run. An 8 MiB one is above KMALLOC_MAX_SIZE (4 MiB with 4K pages)
/// and always falls back to vmalloc.
fn sizes_are_the_kernels_and_info_has_dma_mask(art: &Artifacts) -> Result<()> {
    let script = "\
        echo 1 > /proc/sys/kernel/kptr_restrict
        echo '== kmalloc'
        kmemlabctl alloc --kind kmalloc --size 65 --json
        echo '== kvmalloc'
        kmemlabctl alloc --kind kvmalloc --size 1M --persist --json
        kmemlabctl alloc --kind kvmalloc --size 8M --persist --json
        echo '== vmallocinfo'
        cat /proc/vmallocinfo
        echo '== info'
        kmemlabctl --json info
        echo '== frees'
        for h in $(kmemlabctl list --json | sed -n 's/.*\"handle\":\\([0-9]*\\).*/\\1/p'); do
            kmemlabctl free \"$h\" --json
        done
        echo '== end'";
    let outcome = boot(
        art,
        VmOptions {
            daemon: false,
            cmd: script.to_owned(),
            ..VmOptions::default()
        },
    )?;
    let out = &outcome.cmd_output;
    let kmalloc = json_lines(&section(out, "kmalloc"))
        .into_iter()
        .next()
        .with_context(|| format!("no kmalloc report:\n{out}"))?;
    ensure!(
        num(&kmalloc, "usable_size") == Some(96),
        "kmalloc(65) should report usable_size 96 (kmalloc_size_roundup): {kmalloc}"
    );

    let kv = json_lines(&section(out, "kvmalloc"));
    ensure!(kv.len() == 2, "want 2 kvmalloc reports:\n{out}");
    let vmallocinfo = section(out, "vmallocinfo");
    let area_of = |v: &Value| -> Result<Option<String>> {
        let vaddr = hex(v, "vaddr").with_context(|| format!("no vaddr (hidden?): {v}"))?;
        Ok(vmallocinfo
            .iter()
            .find(|l| l.starts_with(&format!("0x{vaddr:016x}-")))
            .map(|l| (*l).to_owned()))
    };
    let caller_names_kvmalloc = |area: &str| {
        area.split_whitespace()
            .nth(2)
            .is_some_and(|c| c.contains("kvmalloc"))
    };
    match area_of(&kv[0])? {
        Some(area) => ensure!(
            caller_names_kvmalloc(&area),
            "the 1 MiB kvmalloc's area should name a kvmalloc caller: {area}"
        ),
        None => {
            ensure!(
                num(&kv[0], "phys_segments") == Some(1),
                "the 1 MiB kvmalloc has no vmalloc area, so kmalloc served it, yet it is not one physical run: {}",
                kv[0]
            );
            println!("kvmalloc(1 MiB) was served by kmalloc: {}", kv[0]);
        }
    }
    let area = area_of(&kv[1])?.with_context(|| {
        format!(
            "the 8 MiB kvmalloc (above KMALLOC_MAX_SIZE) is not in /proc/vmallocinfo: {}",
            kv[1]
        )
    })?;
    ensure!(
        caller_names_kvmalloc(&area),
        "the 8 MiB kvmalloc's area should name a kvmalloc caller (kmemlab_kvmalloc+0x...): {area}"
    );

    let info = json_lines(&section(out, "info"))
        .into_iter()
        .next()
        .with_context(|| format!("kmemlabctl --json info printed no object:\n{out}"))?;
    let mask = info
        .get("dma_mask")
        .with_context(|| format!("kmemlabctl --json info has no dma_mask: {info}"))?;
    let bits = mask_value(mask).map(|m| (m.count_ones(), m.wrapping_add(1) & m));
    ensure!(
        bits.is_some_and(|(ones, low)| (24..=64).contains(&ones) && low == 0),
        "dma_mask should be 2^n - 1 with n in 24..=64: {info}"
    );
    let frees = json_lines(&section(out, "frees"));
    ensure!(
        frees.len() == 2 && frees.iter().all(|f| f.get("error").is_none()),
        "want the two PERSIST kvmalloc allocations freed:\n{out}"
    );
    Ok(())
}

/// `software_device=1` (module v2): a kmemlab device without a device-tree node or an
/// interrupt. On the test board the node's device binds first, so the script unbinds it and
/// binds the software one (`kmemlab.N.auto`, matched by name; N is the kernel's automatic
/// platform-device id, 0 on the test kernel but not on Debian's; with no node, as on the
/// PC, it is bound already); then INFO reports no
/// interrupt and the DMA mask, TRIGGER is the button (STATS counts its UIO events), a dma_coherent
/// allocation works against it, /proc/interrupts has no kmemlab line, and rmmod is clean.
fn software_device_works_without_a_node(art: &Artifacts) -> Result<()> {
    let cmd = "
D=/sys/bus/platform/drivers/kmemlab
rmmod kmemlab
insmod /lib/modules/kmemlab.ko software_device=1
SW=$(cd /sys/bus/platform/devices && ls -d kmemlab.*.auto)
echo \"software device: $SW\"
if [ -e \"$D/$SW\" ]; then
    echo bound-software
else
    echo kmemlab > $D/unbind
    echo \"$SW\" > $D/bind && echo bound-software
fi
echo '== info'
kmemlabctl --json info
echo '== trigger'
kmemlabctl --json trigger --count 3
echo '== alloc'
kmemlabctl --json alloc --kind dma-coherent --size 8K
echo '== irq'
grep -c kmemlab /proc/interrupts
echo '== stats'
kmemlabctl --json stats
echo '== rmmod'
rmmod kmemlab && echo rmmod-ok";
    let outcome = boot(
        art,
        VmOptions {
            daemon: false,
            cmd: cmd.to_owned(),
            ..VmOptions::default()
        },
    )?;
    let out = &outcome.cmd_output;
    let sect = |name: &str| -> Vec<&str> {
        let head = format!("== {name}");
        out.lines()
            .skip_while(|l| l.trim() != head)
            .skip(1)
            .take_while(|l| !l.starts_with("== "))
            .collect()
    };
    let json = |name: &str| -> Result<Value> {
        let lines = sect(name);
        let line = lines
            .iter()
            .find(|l| l.trim_start().starts_with('{'))
            .with_context(|| format!("no JSON in section {name}:\n{out}"))?;
        serde_json::from_str(line).with_context(|| format!("bad JSON: {line}"))
    };
    ensure!(
        out.contains("bound-software"),
        "the software device did not bind:\n{out}"
    );
    let info = json("info")?;
    ensure!(
        info.get("irq").and_then(Value::as_u64) == Some(0)
            && info.get("dma_mask").and_then(Value::as_str) == Some("0xffffffff"),
        "the software device should have no interrupt and a 32-bit DMA mask: {info}"
    );
    let alloc = json("alloc")?;
    ensure!(
        alloc.get("kind").and_then(Value::as_str) == Some("dma_coherent")
            && alloc.get("dma").is_some_and(|d| !d.is_null()),
        "dma_coherent against the software device failed: {alloc}"
    );
    let stats = json("stats")?;
    ensure!(
        stats.get("events").and_then(Value::as_u64) == Some(3),
        "three TRIGGERs should make three UIO events: {stats}"
    );
    ensure!(
        sect("irq").iter().any(|l| l.trim() == "0"),
        "the software device requested an interrupt:\n{out}"
    );
    ensure!(out.contains("rmmod-ok"), "rmmod failed:\n{out}");
    let bad: Vec<&String> = outcome
        .dmesg
        .iter()
        .filter(|l| l.contains("WARNING") || l.contains("BUG") || l.contains("Oops"))
        .collect();
    ensure!(bad.is_empty(), "kernel splat: {bad:?}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{button_interrupts, mask_value};

    #[test]
    fn button_interrupts_sum_the_cpus() {
        let lines = [
            " 12:       4021       3310     GICv2  30 Level     arch_timer",
            " 45:         97         53  9030000.pl061   3 Edge      kmemlab",
        ];
        assert_eq!(button_interrupts(&lines), Some(150));
        assert_eq!(button_interrupts(&lines[..1]), None);
    }

    #[test]
    fn dma_masks_as_number_or_hex() {
        assert_eq!(mask_value(&json!(4294967295u64)), Some(0xffff_ffff));
        assert_eq!(mask_value(&json!("0xffffffff")), Some(0xffff_ffff));
        assert_eq!(mask_value(&json!(null)), None);
    }
}
