//! The VM tests: each boots the real board with the real module and daemon and asserts
//! on what comes back. Every run also fails on any kernel splat in dmesg.

use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use crate::util::step;
use crate::vm::{run_vm, Artifacts, VmOptions, VmOutcome};

type VmTest = fn(&Artifacts) -> Result<()>;

const TESTS: &[(&str, VmTest)] = &[
    ("presses_arrive_in_order", presses_arrive_in_order),
    ("info_reports_abi_version", info_reports_abi_version),
    ("stop_unload_reload_is_clean", stop_unload_reload_is_clean),
];

/// Runs every VM test; fails if any failed, after running them all.
pub fn run_all(art: &Artifacts) -> Result<()> {
    let mut failed = Vec::new();
    for (name, test) in TESTS {
        step(format!("vm test {name}"));
        let start = Instant::now();
        let mut art = art.clone();
        art.work = art.work.join(name);
        match test(&art) {
            Ok(()) => eprintln!("    ok   {name} ({:.1?})", start.elapsed()),
            Err(err) => {
                eprintln!("    FAIL {name}: {err:#}");
                failed.push(*name);
            }
        }
    }
    if !failed.is_empty() {
        bail!("{} VM test(s) failed: {}", failed.len(), failed.join(", "));
    }
    Ok(())
}

/// Boots with `opts`, and fails on a kernel splat.
fn boot(art: &Artifacts, opts: VmOptions) -> Result<VmOutcome> {
    let outcome = run_vm(art, &opts)?;
    let splats = outcome.splats();
    ensure!(
        splats.is_empty(),
        "the kernel log shows a splat:\n{}",
        splats.join("\n")
    );
    Ok(outcome)
}

fn parse_log(outcome: &VmOutcome) -> Result<Vec<Value>> {
    outcome
        .log
        .iter()
        .map(|l| serde_json::from_str(l).with_context(|| format!("not a JSON line: {l}")))
        .collect()
}

fn events<'a>(log: &'a [Value], kind: &str) -> Vec<&'a Value> {
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
            cmd: "grep -E 'kmemlab|pl061' /proc/interrupts".to_owned(),
            ..VmOptions::default()
        },
    )?;
    let log = parse_log(&outcome)?;
    let irqs = events(&log, "irq");
    let counts: Vec<u64> = irqs
        .iter()
        .filter_map(|v| v.get("irq_count").and_then(Value::as_u64))
        .collect();
    ensure!(
        counts == [1, 2, 3, 4, 5],
        "irq counts {counts:?}, want [1, 2, 3, 4, 5]\nlog:\n{}",
        outcome.log.join("\n")
    );
    for v in &irqs {
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
    // The kernel counted the same five edges on the GPIO line.
    ensure!(
        outcome.cmd_output.contains("Edge"),
        "/proc/interrupts shows no edge interrupt for the button:\n{}",
        outcome.cmd_output
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
