//! The VM tests of `kmemlabd --backend vfio`: the PL061 handed to vfio-amba with
//! kmemlab-vfio-bind (no-IOMMU mode), its button line programmed and acknowledged by the
//! daemon from userspace, and handed back to its GPIO driver; and the refusals, each one
//! clear and non-zero: no VFIO in the kernel (Debian's arm64 kernel has no vfio-amba and
//! no no-IOMMU mode), no-IOMMU mode off, the controller in use by the kmemlab node, the
//! device not bound to VFIO, and the group held by another kmemlabd.

use anyhow::{ensure, Context, Result};
use serde_json::Value;

use crate::vm::{section, Artifacts, Backend, VmOptions, PRESSES_DONE, PRESS_CUE};
use crate::vmtests::{boot_checked, events, num, parse_log, press_lines, text};

/// The button's line on the PL061 and its bit in the interrupt registers.
const LINE_BIT: u64 = 1 << 3;
/// The seed plan's six steps (kmemlabd's default plan): kmalloc, vmalloc and
/// dma_coherent, each allocated on one press and freed on the next.
const SEED_STEPS: [(&str, &str); 6] = [
    ("alloc", "kmalloc"),
    ("free", "kmalloc"),
    ("alloc", "vmalloc"),
    ("free", "vmalloc"),
    ("alloc", "dma_coherent"),
    ("free", "dma_coherent"),
];

/// `NAME=0xVALUE` lines of `kmemlab-abi-probe vfio-regs` in a section.
fn reg(lines: &[&str], name: &str) -> Option<u64> {
    lines.iter().find_map(|l| {
        let v = l.trim().strip_prefix(name)?.strip_prefix("=0x")?;
        u64::from_str_radix(v, 16).ok()
    })
}

/// Six presses through VFIO give the seed plan's six steps, one each, in order, none
/// missed, with `backend: "vfio"` and no kernel timestamp; the VFIO interrupt is in
/// /proc/interrupts while the daemon runs. A second kmemlabd on the same device is
/// refused (the group is open: `EBUSY`, exit status 3). After the daemon stopped, the
/// VFIO interrupt is gone, the controller has line 3's interrupt disabled, and a press
/// shows only in the raw status (GPIORIS), not in the masked one; then
/// `kmemlab-vfio-bind --release` gives the PL061 back to pl061_gpio (loaded then: with
/// VFIO the guest boots without it, see test-kernel.config).
pub fn vfio_presses_give_one_step_each(art: &Artifacts) -> Result<()> {
    if !art.vfio {
        crate::util::step(
            "vfio_presses_give_one_step_each: this kernel has no vfio-amba and no no-IOMMU \
             mode; vfio_refusals_are_clear checks the refusal here",
        );
        return Ok(());
    }
    let script = format!(
        "echo '== bind'; cat /tmp/vfio-bind.out
         echo '== irq-running'; grep -E 'vfio|pl061' /proc/interrupts
         echo '== second'; kmemlabd --backend vfio >/tmp/second.out 2>&1; echo \"second exit $?\"
         cat /tmp/second.out
         echo '== stop'; stop-kmemlabd; echo \"stop exit $?\"
         echo '== irq-stopped'; grep -c 'vfio-irq' /proc/interrupts
         echo '== regs-stopped'; kmemlab-abi-probe vfio-regs
         echo {PRESS_CUE}; read -r done; echo \"host: $done\"
         echo '== regs-pressed'; kmemlab-abi-probe vfio-regs
         echo '== release'; kmemlab-vfio-bind --release; echo \"release exit $?\"
         [ -L /sys/bus/amba/devices/9030000.pl061/driver ] || insmod /lib/modules/gpio-pl061.ko
         echo '== driver'; basename $(readlink /sys/bus/amba/devices/9030000.pl061/driver)
         echo '== taint'; cat /proc/sys/kernel/tainted"
    );
    let outcome = boot_checked(
        art,
        VmOptions {
            presses: 6,
            presses_on_cue: 1,
            backend: Backend::Vfio,
            cmd: script,
            ..VmOptions::default()
        },
    )?;
    let out = &outcome.cmd_output;
    let log = parse_log(&outcome)?;
    let start = events(&log, "start");
    ensure!(
        start.len() == 1 && text(start[0], "backend") == Some("vfio"),
        "want one start line with backend vfio:\n{}",
        outcome.log.join("\n")
    );
    let presses = press_lines(&log);
    let steps: Vec<(&str, &str)> = presses
        .iter()
        .map(|v| {
            (
                text(v, "event").unwrap_or(""),
                text(v, "kind").unwrap_or(""),
            )
        })
        .collect();
    ensure!(
        steps == SEED_STEPS,
        "presses through VFIO gave {steps:?}, want the seed plan's {SEED_STEPS:?}\n{}",
        outcome.log.join("\n")
    );
    for (i, v) in presses.iter().enumerate() {
        let n = i as u64 + 1;
        ensure!(
            num(v, "seq") == Some(n)
                && num(v, "irq_count") == Some(n)
                && num(v, "missed") == Some(0)
                && v.get("irq_to_wake_ns").is_some_and(Value::is_null),
            "press {n}: want seq and irq_count {n}, nothing missed, no irq_to_wake_ns: {v}"
        );
    }
    ensure!(
        section(out, "irq-running")
            .iter()
            .any(|l| l.contains("vfio-irq[") && l.contains("(vfio-amba-")),
        "no VFIO interrupt of the PL061 in /proc/interrupts while kmemlabd ran:\n{out}"
    );
    let second = section(out, "second");
    ensure!(
        second.iter().any(|l| l.trim() == "second exit 3")
            && second.iter().any(|l| l.contains("EBUSY")),
        "a second kmemlabd on the VFIO device: want EBUSY and exit status 3:\n{out}"
    );
    ensure!(
        section(out, "stop")
            .iter()
            .any(|l| l.trim() == "stop exit 0"),
        "kmemlabd did not stop on SIGTERM:\n{out}"
    );
    ensure!(
        section(out, "irq-stopped").first().map(|l| l.trim()) == Some("0"),
        "the VFIO interrupt is still requested after kmemlabd stopped:\n{out}"
    );
    let stopped = section(out, "regs-stopped");
    let pressed = section(out, "regs-pressed");
    let ie = reg(&stopped, "GPIOIE").context(format!("no GPIOIE after the stop:\n{out}"))?;
    ensure!(
        ie & LINE_BIT == 0,
        "line 3's interrupt is still enabled after kmemlabd stopped (GPIOIE 0x{ie:02x})"
    );
    ensure!(
        out.contains(&format!("host: {PRESSES_DONE}")),
        "the host did not press after the stop:\n{out}"
    );
    let (ris, mis) = (reg(&pressed, "GPIORIS"), reg(&pressed, "GPIOMIS"));
    ensure!(
        ris.is_some_and(|r| r & LINE_BIT != 0) && mis == Some(0),
        "a press after the stop: want line 3 in GPIORIS and GPIOMIS 0, got {ris:?} {mis:?}\n{out}"
    );
    ensure!(
        section(out, "release")
            .iter()
            .any(|l| l.trim() == "release exit 0")
            && section(out, "driver").first().map(|l| l.trim()) == Some("pl061_gpio"),
        "the PL061 did not go back to pl061_gpio:\n{out}"
    );
    // TAINT_USER (bit 6): no-IOMMU mode taints the kernel, as the README says.
    let taint: u64 = section(out, "taint")
        .first()
        .and_then(|l| l.trim().parse().ok())
        .context("no taint value")?;
    ensure!(
        taint & (1 << 6) != 0,
        "no-IOMMU mode did not taint the kernel (tainted = {taint})"
    );
    Ok(())
}

/// The refusals. On a kernel with VFIO (the test kernels): with no-IOMMU mode off,
/// kmemlab-vfio-bind refuses and names the switch; with it on, it refuses while the
/// overlay's kmemlab node takes the PL061's interrupt; `kmemlabd --backend vfio` on the
/// PL061 still bound to pl061_gpio refuses and names that driver. On a kernel without
/// vfio-amba (Debian's arm64 kernel), both refuse and say so. Each is one message and a
/// non-zero exit; the UIO daemon keeps running through all of them.
pub fn vfio_refusals_are_clear(art: &Artifacts) -> Result<()> {
    let script = "echo '== bind-off'; kmemlab-vfio-bind; echo \"bind exit $?\"
         if [ -e /sys/module/vfio/parameters/enable_unsafe_noiommu_mode ]; then
             echo 1 > /sys/module/vfio/parameters/enable_unsafe_noiommu_mode
         fi
         echo '== bind-busy'; kmemlab-vfio-bind; echo \"bind exit $?\"
         echo '== daemon'; kmemlabd --backend vfio >/tmp/vfio.out 2>&1; echo \"daemon exit $?\"
         cat /tmp/vfio.out
         echo '== driver'; basename $(readlink /sys/bus/amba/devices/9030000.pl061/driver)";
    let outcome = boot_checked(
        art,
        VmOptions {
            presses: 1,
            cmd: script.to_owned(),
            ..VmOptions::default()
        },
    )?;
    let out = &outcome.cmd_output;
    let exit = |name: &str, what: &str| {
        section(out, name)
            .iter()
            .find_map(|l| l.trim().strip_prefix(what)?.trim().parse::<i32>().ok())
    };
    let says = |name: &str, words: &[&str]| {
        section(out, name)
            .iter()
            .any(|l| words.iter().all(|w| l.contains(w)))
    };
    if art.vfio {
        ensure!(
            exit("bind-off", "bind exit") == Some(2)
                && says(
                    "bind-off",
                    &["no-IOMMU mode is off", "enable_unsafe_noiommu_mode"]
                ),
            "kmemlab-vfio-bind with no-IOMMU mode off: want exit 2 naming the switch:\n{out}"
        );
        ensure!(
            exit("bind-busy", "bind exit") == Some(2) && says("bind-busy", &["in use by"]),
            "kmemlab-vfio-bind while the kmemlab node uses the PL061: want exit 2, \
             `in use by`:\n{out}"
        );
        ensure!(
            exit("daemon", "daemon exit").is_some_and(|c| c != 0)
                && says("daemon", &["pl061_gpio"]),
            "kmemlabd --backend vfio on the PL061 bound to pl061_gpio: want a non-zero exit \
             naming the driver:\n{out}"
        );
    } else {
        ensure!(
            exit("bind-off", "bind exit") == Some(2)
                && says("bind-off", &["the kernel has no vfio-amba driver"]),
            "kmemlab-vfio-bind on a kernel without vfio-amba: want exit 2 saying so:\n{out}"
        );
        ensure!(
            exit("daemon", "daemon exit").is_some_and(|c| c != 0) && says("daemon", &["VFIO"]),
            "kmemlabd --backend vfio on a kernel without VFIO: want a non-zero exit naming \
             VFIO:\n{out}"
        );
    }
    ensure!(
        section(out, "driver").first().map(|l| l.trim()) == Some("pl061_gpio"),
        "the PL061 left pl061_gpio after refusals:\n{out}"
    );
    let log = parse_log(&outcome)?;
    ensure!(
        events(&log, "stop").len() == 1 && events(&log, "start").len() == 1,
        "the UIO daemon did not run through the refusals:\n{}",
        outcome.log.join("\n")
    );
    Ok(())
}
