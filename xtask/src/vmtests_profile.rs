//! The VM test of issue 13's measuring tools: the NOP ioctl and the module's `profile`
//! debugfs file, driven by `kmemlabctl bench` as `cargo xtask bench` drives them.

use anyhow::{ensure, Context, Result};
use serde_json::Value;

use crate::bench_report::Profile;
use crate::vm::{json_lines, section, Artifacts, VmOptions};

/// Pairs of the profiled bench: fewer than a batch, so that each batched command is one call.
const PAIRS: u64 = 200;

/// A profiled `kmemlabctl bench` of `PAIRS` pairs shows exactly `PAIRS` ALLOCs and FREEs and
/// one ALLOC_BATCH and FREE_BATCH of `PAIRS` entries, with a nonzero time in every phase each
/// goes through; the NOP round trip is measured; writing anything but 0 or 1 is `EINVAL`; and
/// once stopped, the profile counts nothing more.
pub fn nop_and_profile_count_every_call(art: &Artifacts) -> Result<()> {
    let script = format!(
        "\
        P=/sys/kernel/debug/kmemlab/profile
        echo 1 > $P
        echo '== bench'
        kmemlabctl bench --kinds kmalloc --sizes 64 --iters {PAIRS} --json --no-progress
        echo 0 > $P
        echo '== profile'
        cat $P
        echo '== bad'
        (echo 2 > $P) 2> /dev/null && echo accepted || echo refused
        echo '== after'
        kmemlabctl alloc --kind kmalloc --size 64 --json > /dev/null
        cat $P
        echo '== end'"
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
    let point = json_lines(&section(out, "bench"))
        .into_iter()
        .next()
        .with_context(|| format!("no bench point:\n{out}"))?;
    let f = |ptr: &str| point.pointer(ptr).and_then(Value::as_f64);
    ensure!(
        f("/round_trip/nop_ns").is_some_and(|v| v > 0.0)
            && f("/round_trip/info_ns").is_some_and(|v| v > 0.0),
        "the NOP and INFO round trips were not measured: {point}"
    );
    ensure!(
        f("/single_bound_ratio").is_some_and(|v| v > 0.0),
        "no single_bound_ratio: {point}"
    );

    let profile = Profile::parse(&section(out, "profile"));
    ensure!(profile.clock_read_ns > 0, "no clock read cost:\n{out}");
    for (cmd, phases) in [
        (
            "alloc",
            &[
                "copy_in", "check", "reserve", "allocate", "report", "insert", "copy_out",
            ][..],
        ),
        ("free", &["copy_in", "take", "free", "copy_out"][..]),
        (
            "alloc_batch",
            &[
                "copy_in", "check", "reserve", "allocate", "report", "insert", "copy_out",
            ][..],
        ),
        ("free_batch", &["copy_in", "take", "free", "copy_out"][..]),
    ] {
        let calls = if cmd.ends_with("batch") { 1 } else { PAIRS };
        for phase in phases {
            let p = profile
                .phases
                .iter()
                .find(|p| p.cmd == cmd && p.phase == *phase)
                .with_context(|| format!("no {cmd} {phase} in the profile:\n{out}"))?;
            ensure!(
                p.calls == calls && p.entries == PAIRS && p.ns > 0,
                "{cmd} {phase}: want {calls} calls, {PAIRS} entries and some time, got {p:?}"
            );
        }
    }
    let bad = section(out, "bad");
    ensure!(
        bad.iter().any(|l| l.trim() == "refused") && !bad.iter().any(|l| l.trim() == "accepted"),
        "writing 2 to the profile file was accepted:\n{out}"
    );
    let after = Profile::parse(&section(out, "after"));
    ensure!(
        after.phases == profile.phases,
        "the stopped profile still counted an ALLOC:\n{out}"
    );
    Ok(())
}
