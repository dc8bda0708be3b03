//! The VM test of the C header: a C program that knows the ABI only from kmemlab.h
//! (kmod-helper/uapi/examples/kmemlab-c-client.c) allocates and frees through /dev/kmemlab.

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use crate::build::{self, AMD64_GUEST_TARGET, GUEST_TARGET};
use crate::vm::{json_lines, section, Artifacts, Machine, VmOptions};

/// The C client, built statically for the guest, does one 64-byte kmalloc ALLOC and its
/// FREE: its JSON line shows the usable size and both times, and the module's counters
/// show exactly that allocation and that free.
pub fn c_client_allocates_and_frees(art: &Artifacts) -> Result<()> {
    let target = match art.machine {
        Machine::VirtArm64 => GUEST_TARGET,
        Machine::PcAmd64 => AMD64_GUEST_TARGET,
    };
    let client = build::c_client(target)?;
    let script = "\
        echo '== before'
        kmemlabctl stats --json
        echo '== client'
        kmemlab-c-client; echo \"client-rc=$?\"
        echo '== after'
        kmemlabctl stats --json
        echo '== end'";
    let outcome = super::vmtests::boot_checked(
        art,
        VmOptions {
            daemon: false,
            cmd: script.to_owned(),
            extra: vec![client],
            ..VmOptions::default()
        },
    )?;
    let out = &outcome.cmd_output;
    let client = section(out, "client");
    ensure!(
        client.iter().any(|l| l.trim() == "client-rc=0"),
        "kmemlab-c-client failed:\n{out}"
    );
    let line = json_lines(&client)
        .into_iter()
        .next()
        .with_context(|| format!("kmemlab-c-client printed no JSON line:\n{out}"))?;
    let num = |key: &str| line.get(key).and_then(Value::as_u64);
    ensure!(
        num("handle").is_some_and(|h| h > 0)
            && num("usable_size") == Some(64)
            && num("alloc_ns").is_some_and(|t| t > 0)
            && num("free_ns").is_some_and(|t| t > 0)
            && num("result").is_some(),
        "want a handle, usable_size 64, alloc_ns > 0 and free_ns > 0: {line}"
    );

    let kmalloc = |name: &str| -> Result<Value> {
        let stats = json_lines(&section(out, name)).into_iter().next();
        match stats.as_ref().and_then(|s| s.pointer("/kinds/kmalloc")) {
            Some(k) => Ok(k.clone()),
            None => bail!("no kmalloc counters in the stats {name} the client:\n{out}"),
        }
    };
    let (before, after) = (kmalloc("before")?, kmalloc("after")?);
    let delta = |key: &str| -> Option<i64> {
        let b = before.get(key)?.as_i64()?;
        Some(after.get(key)?.as_i64()? - b)
    };
    ensure!(
        delta("allocs") == Some(1)
            && delta("frees") == Some(1)
            && delta("failures") == Some(0)
            && delta("live_count") == Some(0)
            && delta("live_bytes") == Some(0),
        "the kmalloc counters should show one allocation and one free:\n\
         before {before}\nafter  {after}"
    );
    Ok(())
}
