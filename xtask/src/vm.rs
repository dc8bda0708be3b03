//! `cargo xtask vm`: boot QEMU's arm64 virt board with the test kernel (or Debian's own
//! arm64 kernel, `--kernel debian-arm64`), the patched device tree and an initramfs;
//! press the button through QMP; run a command. `--kernel debian-amd64` boots Debian's
//! amd64 kernel on QEMU's x86_64 PC instead: no device tree, no button; kmemlab.ko makes
//! its software device and a press is a TRIGGER from inside the guest.
//!
//! The guest's init (`xtask/guest/init.sh`) reports over the console with `@@` lines; the
//! host waits for them with a bound at every stage, so a hung guest is killed with a
//! message that names the stage and shows the console's tail.

use std::collections::VecDeque;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::initramfs::Cpio;
use crate::util::{repo_root, run, step};

pub(crate) const QEMU: &str = "qemu-system-aarch64";
/// The board. `-nic none`: Debian's QEMU 7.2 lacks the virtio-net option ROM the
/// default NIC asks for, and the guest needs no network.
pub(crate) const MACHINE: &[&str] = &["-M", "virt", "-cpu", "cortex-a53", "-nic", "none"];
/// The PC for Debian's amd64 kernel (TCG: this host's KVM runs no stock guest).
/// `thread=single`: with QEMU 7.2's multi-threaded TCG, Debian's kernel died at boot
/// with an `int3` Oops in a function being live-patched (text_poke on one vCPU while
/// the other ran it); one TCG thread for both vCPUs boots cleanly.
const QEMU_X86: &str = "qemu-system-x86_64";
const MACHINE_X86: &[&str] = &["-M", "pc", "-accel", "tcg,thread=single", "-nic", "none"];

/// The machine a guest runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Machine {
    /// QEMU's arm64 virt board: device tree with our overlay, the button on the PL061
    /// (pressed through QMP's `system_powerdown`).
    VirtArm64,
    /// QEMU's x86_64 PC: no device tree and no button; kmemlab.ko is loaded with
    /// `software_device=1` and a press is a TRIGGER made inside the guest.
    PcAmd64,
}

impl Machine {
    /// Whether the machine has the board's button and device tree.
    pub fn has_board(self) -> bool {
        self == Self::VirtArm64
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::VirtArm64 => "arm64 virt board",
            Self::PcAmd64 => "x86_64 PC",
        }
    }
}
/// Guest memory for the test kernel; Debian's kernel gets more (`Artifacts::memory_mb`).
pub const TEST_KERNEL_MEMORY_MB: u32 = 256;
const INIT: &str = include_str!("../guest/init.sh");
const STOP_DAEMON: &str = include_str!("../guest/stop-kmemlabd");
const VFIO_BIND: &str = include_str!("../../systemd/kmemlab-vfio-bind");

/// What goes into the guest.
#[derive(Clone, Debug)]
pub struct Artifacts {
    pub image: PathBuf,
    pub module: PathBuf,
    pub kmemlabd: PathBuf,
    pub kmemlabctl: PathBuf,
    pub abi_probe: PathBuf,
    pub busybox: PathBuf,
    /// Extra kernel command-line arguments (the debug kernel's).
    pub cmdline: String,
    /// Guest memory (`-m`), in MiB.
    pub memory_mb: u32,
    /// Modules loaded, in this order, before kmemlab.ko (Debian's uio.ko, which
    /// Debian builds as a module).
    pub preload: Vec<PathBuf>,
    /// Whether the kernel has kmemleak (the test kernels; Debian's has not).
    pub kmemleak: bool,
    /// Whether the kernel has VFIO with no-IOMMU mode and vfio-amba (the test kernels;
    /// Debian's arm64 kernel has neither).
    pub vfio: bool,
    /// The machine QEMU emulates.
    pub machine: Machine,
    /// Parameters for kmemlab.ko's insmod at boot (`software_device=1` on the PC).
    pub module_args: String,
    /// Scratch folder for the initramfs, device tree and QMP socket.
    pub work: PathBuf,
}

/// How to run the guest.
#[derive(Clone, Debug)]
pub struct VmOptions {
    /// Button presses before the command runs, each waited for in kmemlabd's log.
    pub presses: u32,
    /// Button presses made while the command runs: when it prints [`PRESS_CUE`], the host
    /// presses this many times, [`PRESS_SPACING`] apart (not waiting for the daemon), then
    /// writes [`PRESSES_DONE`] to the console, which the command can `read`.
    pub presses_on_cue: u32,
    /// Virtual CPUs (`-smp`): 2 for the tests; `cargo xtask bench` boots with 1 (see there).
    pub cpus: u32,
    pub daemon: bool,
    /// Load kmemlab.ko at boot (tests of failing probes load it themselves).
    pub module: bool,
    /// Shell command run in the guest after the presses.
    pub cmd: String,
    /// Bound on the command's run time.
    pub cmd_timeout: Duration,
    /// Stream the console to stderr.
    pub verbose: bool,
    /// Host files packed into the guest as `/usr/bin/<file name>` (test programs).
    pub extra: Vec<PathBuf>,
    /// The device-tree overlay applied to the board's DTB.
    pub overlay: PathBuf,
    /// Where kmemlabd takes its presses from.
    pub backend: Backend,
}

/// kmemlabd's source of presses in the guest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// The kmemlab node of the overlay takes the PL061's interrupt; kmemlabd waits on
    /// the module's UIO device.
    #[default]
    Uio,
    /// The PL061 belongs to vfio-amba: the board's device tree has no kmemlab node (no
    /// overlay), kmemlab.ko makes its software device (`software_device=1`) for the
    /// allocations, and at boot the guest turns on VFIO's no-IOMMU mode, hands the PL061
    /// to VFIO with kmemlab-vfio-bind and starts `kmemlabd --backend vfio`.
    Vfio,
}

impl Backend {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "uio" => Ok(Self::Uio),
            "vfio" => Ok(Self::Vfio),
            other => bail!("unknown backend `{other}`: uio or vfio"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Uio => "uio",
            Self::Vfio => "vfio",
        }
    }
}

impl Default for VmOptions {
    fn default() -> Self {
        Self {
            presses: 0,
            presses_on_cue: 0,
            cpus: 2,
            daemon: true,
            module: true,
            cmd: "true".to_owned(),
            cmd_timeout: Duration::from_secs(600),
            verbose: false,
            extra: Vec::new(),
            overlay: repo_root().join("dts/qemu-virt.dtso"),
            backend: Backend::Uio,
        }
    }
}

/// What came back from the guest.
#[derive(Debug, Default)]
pub struct VmOutcome {
    /// The command's output (stdout and stderr, as on a console).
    pub cmd_output: String,
    pub cmd_status: i32,
    /// kmemlabd's JSON log, one line each, after it stopped.
    pub log: Vec<String>,
    /// kmemlabd's stderr (tracing diagnostics).
    pub daemon_stderr: Vec<String>,
    /// The kernel log at the end of the run.
    pub dmesg: Vec<String>,
}

impl VmOutcome {
    /// Kernel log lines that show a splat (WARN, BUG, Oops, lockdep, KFENCE, kmemleak,
    /// DMA-API debug). A "page allocation failure" report is not one: it is the kernel's
    /// rate-limited answer to a failed allocation without `__GFP_NOWARN`, which is what a
    /// kmemlab user may ask for.
    pub fn splats(&self) -> Vec<&str> {
        const PATTERNS: &[&str] = &[
            "WARNING:",
            "BUG:",
            "Oops",
            "kernel BUG",
            "possible recursive locking",
            "sleeping function called from invalid context",
            "KFENCE:",
            "unreferenced object",
            "Kernel panic",
            "pending DMA allocations",
            "circular locking",
            "inconsistent lock state",
        ];
        self.dmesg
            .iter()
            .map(String::as_str)
            .filter(|l| PATTERNS.iter().any(|p| l.contains(p)))
            .collect()
    }
}

/// The line a guest command prints to have the host press the button
/// `VmOptions::presses_on_cue` times while it goes on.
pub const PRESS_CUE: &str = "@@PRESS-NOW";
/// The console line the host sends when those presses are done.
pub const PRESSES_DONE: &str = "presses-done";
/// Time between two presses on cue. QEMU's gpio-key holds the line high for 100 ms after
/// `system_powerdown`; a press within that time makes no new edge.
pub const PRESS_SPACING: Duration = Duration::from_millis(150);

/// A shell function for guest scripts: `wait_lines FILE PATTERN N` waits (at most 10 s)
/// until FILE has N lines matching PATTERN.
pub const WAIT_LINES: &str = r#"
wait_lines() {
    local tries=0 seen
    while :; do
        seen=$(grep -c "$2" "$1" 2>/dev/null || true)
        [ "${seen:-0}" -ge "$3" ] && return 0
        tries=$((tries + 1))
        [ $tries -gt 1000 ] && { echo "timed out waiting for $3 x $2 in $1"; cat "$1"; return 1; }
        usleep 10000
    done
}
"#;

/// The board's device tree with the overlay from dts/ applied (QEMU's own, without a
/// kmemlab node, when `overlay_src` is None).
fn device_tree(art: &Artifacts, overlay_src: Option<&Path>, cpus: u32) -> Result<PathBuf> {
    board_device_tree(&art.work, art.memory_mb, overlay_src, cpus)
}

/// The virt board's device tree for `memory_mb` and `cpus`, with the overlay
/// `overlay_src` applied (or none), written into `work`.
pub fn board_device_tree(
    work: &Path,
    memory_mb: u32,
    overlay_src: Option<&Path>,
    cpus: u32,
) -> Result<PathBuf> {
    let base = work.join("virt.dtb");
    run(Command::new(QEMU)
        .args(MACHINE)
        .args(["-m", &format!("{memory_mb}M")])
        .args(["-smp", &cpus.to_string()])
        .arg("-machine")
        .arg(format!("dumpdtb={}", base.display()))
        .args(["-display", "none"])
        .stdout(Stdio::null())
        .stderr(Stdio::null()))?;
    let Some(overlay_src) = overlay_src else {
        // QEMU's dump is padded to 1 MiB: given back with -dtb, it leaves QEMU no room
        // for /chosen (bootargs, initrd), and the kernel boots with no console and no
        // initramfs. dtc writes it compact, as fdtoverlay does below.
        let compact = work.join("virt-compact.dtb");
        run(Command::new("dtc")
            .args(["-q", "-I", "dtb", "-O", "dtb", "-o"])
            .arg(&compact)
            .arg(&base))?;
        return Ok(compact);
    };
    // QEMU's DTB is built without -@; give it the one symbol the overlay uses, as a
    // board DTB compiled with -@ would have.
    run(Command::new("fdtput")
        .args(["-p", "-t", "s"])
        .arg(&base)
        .args(["/__symbols__", "gpio0", "/pl061@9030000"]))?;
    let overlay = work.join("qemu-virt.dtbo");
    run(Command::new("dtc")
        .args(["-@", "-q", "-I", "dts", "-O", "dtb", "-o"])
        .arg(&overlay)
        .arg(overlay_src))?;
    let patched = work.join("virt-kmemlab.dtb");
    run(Command::new("fdtoverlay")
        .arg("-i")
        .arg(&base)
        .arg("-o")
        .arg(&patched)
        .arg(&overlay))?;
    Ok(patched)
}

/// The PL061's GPIO driver in a test kernel's build folder (a module there).
pub const PL061_MODULE: &str = "drivers/gpio/gpio-pl061.ko";

/// kmemlab.ko's parameters at boot: the machine's, and the software device where the
/// PL061 belongs to VFIO (the board's device tree then has no kmemlab node).
fn module_args(art: &Artifacts, opts: &VmOptions) -> String {
    let mut args = art.module_args.clone();
    if opts.backend == Backend::Vfio && !args.contains("software_device=1") {
        if !args.is_empty() {
            args.push(' ');
        }
        args.push_str("software_device=1");
    }
    args
}

fn initramfs(art: &Artifacts, opts: &VmOptions) -> Result<PathBuf> {
    let mut cpio = Cpio::default();
    for dir in [
        "bin",
        "sbin",
        "usr",
        "usr/bin",
        "usr/sbin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "run",
        "etc",
        "lib",
        "lib/modules",
    ] {
        cpio.dir(dir, 0o755);
    }
    cpio.char_dev("dev/console", 0o600, 5, 1);
    cpio.file("init", 0o755, INIT.as_bytes());
    cpio.file_from("bin/busybox", 0o755, &art.busybox)?;
    cpio.symlink("bin/sh", "busybox");
    cpio.file_from("lib/modules/kmemlab.ko", 0o644, &art.module)?;
    let mut preload = Vec::new();
    for path in &art.preload {
        let name = path
            .file_name()
            .with_context(|| format!("module {} has no file name", path.display()))?
            .to_string_lossy()
            .into_owned();
        cpio.file_from(&format!("lib/modules/{name}"), 0o644, path)?;
        // With VFIO the PL061 must not meet its GPIO driver before vfio-amba (see
        // test-kernel.config): the module is in the guest, for handing the controller
        // back, but not loaded at boot.
        if opts.backend == Backend::Vfio && name == "gpio-pl061.ko" {
            continue;
        }
        preload.push(name);
    }
    cpio.file_from("usr/bin/kmemlabd", 0o755, &art.kmemlabd)?;
    cpio.file_from("usr/bin/kmemlabctl", 0o755, &art.kmemlabctl)?;
    cpio.file_from("usr/bin/kmemlab-abi-probe", 0o755, &art.abi_probe)?;
    cpio.file("usr/bin/stop-kmemlabd", 0o755, STOP_DAEMON.as_bytes());
    cpio.file("usr/bin/kmemlab-vfio-bind", 0o755, VFIO_BIND.as_bytes());
    for path in &opts.extra {
        let name = path
            .file_name()
            .with_context(|| format!("--extra {} has no file name", path.display()))?;
        cpio.file_from(&format!("usr/bin/{}", name.to_string_lossy()), 0o755, path)?;
    }
    cpio.file(
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
    );
    cpio.file(
        "etc/group",
        0o644,
        b"root:x:0:\nkmemlab:x:990:\nnogroup:x:65534:\n",
    );
    cpio.file(
        "etc/kmemlab-vm.conf",
        0o644,
        format!(
            "DAEMON={}\nMODULE={}\nPRELOAD=\"{}\"\nMODULE_ARGS=\"{}\"\nBACKEND={}\n",
            u8::from(opts.daemon && opts.module),
            u8::from(opts.module),
            preload.join(" "),
            module_args(art, opts),
            opts.backend.name()
        )
        .as_bytes(),
    );
    cpio.file("cmd.sh", 0o755, format!("{}\n", opts.cmd).as_bytes());
    let path = art.work.join("initramfs.cpio");
    fs::write(&path, cpio.finish())
        .with_context(|| format!("failed to write {}", path.display()))?;
    Ok(path)
}

/// A running guest and its console.
pub(crate) struct Guest {
    pub(crate) child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    tail: VecDeque<String>,
    pub(crate) stage: String,
    verbose: bool,
    qmp: Option<Qmp>,
    qmp_path: PathBuf,
}

pub(crate) enum Wait<T> {
    Found(T),
    Continue,
}

impl Guest {
    /// Starts reading the console of `child` (QEMU with `-serial stdio`); QMP at
    /// `qmp_path`, connected on first use.
    pub(crate) fn new(mut child: Child, qmp_path: PathBuf, verbose: bool) -> Result<Self> {
        let stdout = child.stdout.take().context("QEMU stdout")?;
        let stdin = child.stdin.take();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf)
                            .trim_end_matches(['\r', '\n'])
                            .to_owned();
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                }
            }
            // Drain anything left so QEMU never blocks on a full pipe.
            let _ = reader.read_to_end(&mut Vec::new());
        });
        Ok(Self {
            child,
            stdin,
            lines: rx,
            tail: VecDeque::new(),
            stage: "boot".to_owned(),
            verbose,
            qmp: None,
            qmp_path,
        })
    }

    /// Waits for a console line that `f` accepts, at most `bound`.
    pub(crate) fn wait_for<T>(
        &mut self,
        what: &str,
        bound: Duration,
        mut f: impl FnMut(&mut Self, &str) -> Result<Wait<T>>,
    ) -> Result<T> {
        let deadline = Instant::now() + bound;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if self.verbose {
                        eprintln!("guest| {line}");
                    }
                    if let Some(s) = line.strip_prefix("@@STAGE ") {
                        self.stage = s.trim().to_owned();
                    }
                    if let Some(msg) = line.strip_prefix("@@FAIL ") {
                        let msg = msg.to_owned();
                        self.push_tail(line);
                        bail!(
                            "the guest failed in stage `{}`: {msg}{}",
                            self.stage,
                            self.tail_text()
                        );
                    }
                    self.push_tail(line.clone());
                    if let Wait::Found(v) = f(self, &line)? {
                        return Ok(v);
                    }
                }
                Err(RecvTimeoutError::Timeout) => bail!(
                    "the guest hung in stage `{}`: no {what} within {bound:?}; killed it{}",
                    self.stage,
                    self.tail_text()
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    bail!(
                        "QEMU exited ({}) in stage `{}` while waiting for {what}{}",
                        status.map(|s| s.to_string()).unwrap_or_default(),
                        self.stage,
                        self.tail_text()
                    )
                }
            }
        }
    }

    fn push_tail(&mut self, line: String) {
        if self.tail.len() == 40 {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }

    pub(crate) fn tail_text(&self) -> String {
        let mut s = String::from("\n--- console tail ---\n");
        for l in &self.tail {
            s.push_str(l);
            s.push('\n');
        }
        s
    }

    pub(crate) fn qmp(&mut self) -> Result<&mut Qmp> {
        if self.qmp.is_none() {
            self.qmp = Some(Qmp::connect(&self.qmp_path)?);
        }
        self.qmp.as_mut().context("QMP connection")
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal QMP client: enough for `system_powerdown`.
pub(crate) struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    fn connect(path: &Path) -> Result<Self> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("cannot connect to QMP at {}", path.display()))
                }
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let writer = stream.try_clone()?;
        let mut qmp = Self {
            reader: BufReader::new(stream),
            writer,
        };
        qmp.read_until("QMP")?;
        qmp.execute("qmp_capabilities")?;
        Ok(qmp)
    }

    fn read_until(&mut self, key: &str) -> Result<String> {
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).context("QMP read")? == 0 {
                bail!("QMP connection closed");
            }
            if line.contains("\"error\"") {
                bail!("QMP error: {}", line.trim());
            }
            if line.contains(key) {
                return Ok(line);
            }
        }
    }

    pub(crate) fn execute(&mut self, command: &str) -> Result<()> {
        writeln!(self.writer, "{{\"execute\": \"{command}\"}}").context("QMP write")?;
        self.read_until("\"return\"")?;
        Ok(())
    }
}

/// Boots the guest, presses the button, runs the command; returns what came back.
pub fn run_vm(art: &Artifacts, opts: &VmOptions) -> Result<VmOutcome> {
    fs::create_dir_all(&art.work)?;
    if opts.presses_on_cue > 0 && !art.machine.has_board() {
        bail!(
            "presses on cue need the board's button; the {} has none (its presses are \
             TRIGGERs from inside the guest)",
            art.machine.name()
        );
    }
    if opts.backend == Backend::Vfio && !art.machine.has_board() {
        bail!(
            "--backend vfio drives the arm64 board's PL061; the {} has none",
            art.machine.name()
        );
    }
    if opts.backend == Backend::Vfio && opts.overlay != VmOptions::default().overlay {
        bail!("--backend vfio boots without an overlay (the PL061 belongs to VFIO)");
    }
    if !art.machine.has_board() && opts.overlay != VmOptions::default().overlay {
        bail!(
            "--overlay patches the arm64 board's device tree; the {} has none",
            art.machine.name()
        );
    }
    let initrd = initramfs(art, opts)?;
    let qmp_path = art.work.join("qmp.sock");
    let _ = fs::remove_file(&qmp_path);
    let (qemu, mut command) = match art.machine {
        Machine::VirtArm64 => {
            let overlay = (opts.backend == Backend::Uio).then_some(opts.overlay.as_path());
            let dtb = device_tree(art, overlay, opts.cpus)?;
            let mut cmd = Command::new(QEMU);
            cmd.args(MACHINE)
                .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
                .arg("-dtb")
                .arg(&dtb);
            (QEMU, cmd)
        }
        Machine::PcAmd64 => {
            let mut cmd = Command::new(QEMU_X86);
            cmd.args(MACHINE_X86)
                .args(["-nographic", "-monitor", "none"]);
            (QEMU_X86, cmd)
        }
    };
    let console = match art.machine {
        Machine::VirtArm64 => "ttyAMA0",
        Machine::PcAmd64 => "ttyS0",
    };
    let child = command
        .args(["-m", &format!("{}M", art.memory_mb)])
        .args(["-smp", &opts.cpus.to_string()])
        .arg("-no-reboot")
        .arg("-kernel")
        .arg(&art.image)
        .arg("-initrd")
        .arg(&initrd)
        .arg("-append")
        .arg(format!(
            "console={console} rdinit=/init panic=-1 oops=panic {}",
            art.cmdline
        ))
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", qmp_path.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("failed to start {qemu}"))?;
    let mut guest = Guest::new(child, qmp_path, opts.verbose)?;

    // Boot, module loaded, daemon running.
    guest.wait_for("@@READY", Duration::from_secs(120), |_, l| {
        Ok(if l == "@@READY" {
            Wait::Found(())
        } else {
            Wait::Continue
        })
    })?;
    if opts.daemon {
        guest.wait_for("kmemlabd's start line", Duration::from_secs(30), |_, l| {
            Ok(match json_event(l) {
                Some((event, _)) if event == "start" => Wait::Found(()),
                _ => Wait::Continue,
            })
        })?;
    }
    guest.stage = "press".to_owned();
    for press in 1..=opts.presses {
        if art.machine.has_board() {
            guest
                .qmp()?
                .execute("system_powerdown")
                .with_context(|| format!("press {press}"))?;
        } else {
            // No button: init.sh answers `press` with a TRIGGER.
            let stdin = guest.stdin.as_mut().context("the guest console")?;
            stdin
                .write_all(b"press\n")
                .context("writing to the guest console")?;
            stdin.flush()?;
        }
        if opts.daemon {
            // The daemon's line for this press; it writes it after re-enabling the
            // interrupt, so the next press cannot be lost.
            guest.wait_for(
                &format!("kmemlabd's line for press {press}"),
                Duration::from_secs(30),
                |_, l| {
                    Ok(match json_event(l) {
                        Some((_, v))
                            if v.get("irq_count")
                                .and_then(|c| c.as_u64())
                                .is_some_and(|c| c >= u64::from(press)) =>
                        {
                            Wait::Found(())
                        }
                        _ => Wait::Continue,
                    })
                },
            )?;
        }
    }

    // Run the command.
    if let Some(stdin) = guest.stdin.as_mut() {
        stdin
            .write_all(b"go\n")
            .context("writing to the guest console")?;
        stdin.flush()?;
    }
    guest.wait_for("@@CMD-BEGIN", Duration::from_secs(30), |_, l| {
        Ok(if l == "@@CMD-BEGIN" {
            Wait::Found(())
        } else {
            Wait::Continue
        })
    })?;
    let mut cmd_output = String::new();
    let cmd_status = guest.wait_for("end of the command", opts.cmd_timeout, |guest, l| {
        if let Some(rc) = l.strip_prefix("@@CMD-EXIT ") {
            return Ok(Wait::Found(rc.trim().parse::<i32>().unwrap_or(255)));
        }
        if l == PRESS_CUE {
            guest.stage = "press-on-cue".to_owned();
            // Console lines queue up in the reader thread's channel meanwhile.
            for press in 1..=opts.presses_on_cue {
                guest
                    .qmp()?
                    .execute("system_powerdown")
                    .with_context(|| format!("press {press} on cue"))?;
                std::thread::sleep(PRESS_SPACING);
            }
            if let Some(stdin) = guest.stdin.as_mut() {
                writeln!(stdin, "{PRESSES_DONE}").context("writing to the guest console")?;
                stdin.flush()?;
            }
            guest.stage = "cmd".to_owned();
            return Ok(Wait::Continue);
        }
        if !l.starts_with("@@JSON ") && !l.starts_with("@@STAGE ") && l != "go" && l != PRESSES_DONE
        {
            cmd_output.push_str(l);
            cmd_output.push('\n');
        }
        Ok(Wait::Continue)
    })?;

    // Shut down: the daemon's log and the kernel log.
    let mut outcome = VmOutcome {
        cmd_output,
        cmd_status,
        ..VmOutcome::default()
    };
    guest.wait_for("@@DONE", Duration::from_secs(60), |_, l| {
        if let Some(rest) = l.strip_prefix("@@LOG ") {
            outcome.log.push(rest.to_owned());
        } else if let Some(rest) = l.strip_prefix("@@STDERR ") {
            outcome.daemon_stderr.push(rest.to_owned());
        } else if let Some(rest) = l.strip_prefix("@@DMESG ") {
            outcome.dmesg.push(rest.to_owned());
        } else if l == "@@DONE" {
            return Ok(Wait::Found(()));
        }
        Ok(Wait::Continue)
    })?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if guest.child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the guest did not power off within 20 s after @@DONE{}",
                guest.tail_text()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(outcome)
}

/// `(event, value)` of a `@@JSON` console line.
fn json_event(line: &str) -> Option<(String, serde_json::Value)> {
    let json = line.strip_prefix("@@JSON ")?;
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    let event = value.get("event")?.as_str()?.to_owned();
    Some((event, value))
}

/// A guest-script tail: kmemleak reports only objects older than 5 s, so wait that long,
/// scan twice (as its documentation advises), and print what it found between
/// `== kmemleak` and `== end`.
pub const KMEMLEAK_SCAN: &str = "
sleep 6
echo scan > /sys/kernel/debug/kmemleak
echo scan > /sys/kernel/debug/kmemleak
echo '== kmemleak'
cat /sys/kernel/debug/kmemleak
echo '== end'";

/// Runs each named test of a suite (only those named in `KMEMLAB_TESTS`, when set), each
/// with its own work folder, and returns the names of those that failed, after running
/// them all.
pub fn run_suite<T>(
    art: &Artifacts,
    label: &str,
    tests: &[(&'static str, T)],
    mut run: impl FnMut(&T, &Artifacts) -> Result<()>,
) -> Vec<&'static str> {
    let only = std::env::var("KMEMLAB_TESTS").unwrap_or_default();
    let mut failed = Vec::new();
    for (name, test) in tests {
        if !only.is_empty() && !only.split(',').any(|o| name.contains(o)) {
            continue;
        }
        step(format!("{label} {name}"));
        let start = Instant::now();
        let mut art = art.clone();
        art.work = art.work.join(name);
        match run(test, &art) {
            Ok(()) => eprintln!("    ok   {name} ({:.1?})", start.elapsed()),
            Err(err) => {
                eprintln!("    FAIL {name}: {err:#}");
                failed.push(*name);
            }
        }
    }
    failed
}

/// Lines of a guest command's output between `== name` and the next `== ` header.
pub fn section<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    let header = format!("== {name}");
    text.lines()
        .skip_while(|l| l.trim() != header)
        .skip(1)
        .take_while(|l| !l.starts_with("== "))
        .collect()
}

/// The JSON objects among `lines` (other lines are skipped).
pub fn json_lines<S: AsRef<str>>(lines: &[S]) -> Vec<serde_json::Value> {
    lines
        .iter()
        .map(AsRef::as_ref)
        .filter(|l| l.trim_start().starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Every line of kmemlabd's log must validate against the JSON log contract
/// (daemon/kmemlabd/schema/kmemlabd-event.schema.json); returns how many lines were checked.
pub fn check_log_schema(lines: &[String]) -> Result<usize> {
    static VALIDATOR: std::sync::OnceLock<Result<jsonschema::Validator, String>> =
        std::sync::OnceLock::new();
    let validator = VALIDATOR
        .get_or_init(|| {
            let path = repo_root().join("daemon/kmemlabd/schema/kmemlabd-event.schema.json");
            let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let schema: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| e.to_string())?;
            jsonschema::validator_for(&schema).map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| anyhow::anyhow!("cannot load the log schema: {e}"))?;
    for line in lines {
        let value: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("not a JSON line: {line}"))?;
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| e.to_string())
            .collect();
        if !errors.is_empty() {
            bail!(
                "a kmemlabd line breaks the log schema: {line}\n{}",
                errors.join("\n")
            );
        }
    }
    Ok(lines.len())
}

/// Prints a finished run the way `cargo xtask vm` shows it.
pub fn print_outcome(outcome: &VmOutcome) {
    if !outcome.cmd_output.is_empty() {
        print!("{}", outcome.cmd_output);
    }
    for line in &outcome.log {
        println!("{line}");
    }
    let splats = outcome.splats();
    if !splats.is_empty() {
        eprintln!("kernel log shows problems:");
        for l in splats {
            eprintln!("  {l}");
        }
    }
    step(format!(
        "guest command exited with status {}",
        outcome.cmd_status
    ));
}
