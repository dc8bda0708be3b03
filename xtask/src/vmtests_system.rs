//! `cargo xtask test --system`: the package in a real Debian arm64 system
//! (`cargo xtask vm --system debian`): installed with `dpkg -i`, kmemlab.ko loaded at
//! boot by systemd-modules-load, the device nodes made by udev's rule, kmemlabd started
//! by systemd and its log read from journald. Each test boots a fresh copy of the image.

use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};

use crate::setup::Toolchain;
use crate::system::{self, System, SystemOptions, SystemOutcome};
use crate::util::step;
use crate::vm::{check_log_schema, section};

type Test = fn(&System) -> Result<()>;

const TESTS: &[(&str, Test)] = &[
    ("system_install_boot", install_boot),
    ("system_daemon_journal", daemon_journal),
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
    let out = run(
        system,
        "install_boot",
        "echo '== lsmod'; lsmod
         echo '== uio'; uio_dev
         echo '== nodes'; stat -L -c '%n %G %a %F' /dev/kmemlab /dev/$(uio_dev)
         echo '== link'; readlink /dev/kmemlab-uio
         echo '== group'; getent group kmemlab
         echo '== modules-load.d'; cat /usr/lib/modules-load.d/kmemlab.conf
         echo '== modules-load'; systemctl show -p ActiveState,Result systemd-modules-load
         echo '== boot log'; journalctl -b -o cat --no-pager | grep -i kmemlab
         modprobe -r kmemlab
         echo '== unloaded'; lsmod
         systemctl restart systemd-modules-load
         echo '== reloaded'; lsmod
         echo '== end'",
    )?;
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

/// `systemctl start kmemlabd` returns once the daemon said READY=1: right after it the
/// unit is active with the status the daemon sends with READY=1; three presses give
/// three press lines in the journal, each valid against the log schema, and the status
/// counts them.
fn daemon_journal(system: &System) -> Result<()> {
    let out = run(
        system,
        "daemon_journal",
        r#"systemctl start kmemlabd || { systemctl status kmemlabd; exit 1; }
         echo '== started'; systemctl show -p Type,ActiveState,SubState,StatusText kmemlabd
         for i in 1 2 3; do
             press || exit 1
             wait_lines $i '"seq": *[0-9]' journalctl -u kmemlabd -o cat --no-pager || exit 1
         done
         echo '== pressed'; systemctl show -p ActiveState,StatusText kmemlabd
         echo '== journal'; journalctl -u kmemlabd -o cat --no-pager
         echo '== end'"#,
    )?;
    let text = &out.cmd_output;
    let started = section(text, "started");
    let has = |lines: &[&str], want: &str| lines.iter().any(|l| l.trim() == want);
    ensure!(
        has(&started, "Type=notify") || has(&started, "Type=notify-reload"),
        "kmemlabd.service is not Type=notify:\n{text}"
    );
    ensure!(
        has(&started, "ActiveState=active")
            && has(&started, "SubState=running")
            && has(
                &started,
                "StatusText=presses 0, bounces 0, coalesced 0, live 0, errors 0"
            ),
        "right after `systemctl start` the unit is not active with the status sent with \
         READY=1:\n{text}"
    );
    let pressed = section(text, "pressed");
    ensure!(
        has(&pressed, "ActiveState=active")
            && pressed
                .iter()
                .any(|l| l.trim().starts_with("StatusText=presses 3,")),
        "after three presses the unit's status does not count them:\n{text}"
    );
    let journal = section(text, "journal");
    let json: Vec<String> = journal
        .iter()
        .filter(|l| l.trim_start().starts_with('{'))
        .map(|l| l.trim().to_owned())
        .collect();
    let checked = check_log_schema(&json)?;
    let presses = json
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("seq").is_some_and(|s| s.is_u64()))
        .count();
    ensure!(
        presses == 3,
        "the journal has {presses} press lines for 3 presses:\n{text}"
    );
    ensure!(
        json.first()
            .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .and_then(|v| v.get("event").and_then(|e| e.as_str()).map(str::to_owned))
            .as_deref()
            == Some("start"),
        "the journal's first kmemlabd line is not its start line:\n{text}"
    );
    step(format!(
        "journal: {checked} kmemlabd lines valid against the schema, 3 presses"
    ));
    Ok(())
}
