//! `cargo xtask vm --system debian`: a real Debian arm64 system on the virt board.
//!
//! The image is made once and cached (`$KMEMLAB_CACHE/system/`): `debootstrap --foreign`
//! unpacks a minimal trixie (systemd as PID 1, udev, journald, dbus, dpkg, apt) on the
//! host, `mkfs.ext4 -d` makes the disk from it without mounting anything, and Debian's
//! own arm64 kernel, booted with a busybox initramfs that loads Debian's virtio_blk and
//! ext4 modules, finishes debootstrap's second stage inside the guest and installs
//! Debian's kernel packages (`linux-image-RELEASE`, which the .deb depends on). The
//! image's file name carries a hash of its recipe, and it is renamed into place only
//! when the guest reported success, so an interrupted build never looks done.
//!
//! A run boots a qcow2 overlay of the image (the cached image stays pristine) with a
//! second disk made by `mkfs.ext4 -d`: the .deb of `cargo xtask dist --debian`, the
//! command and the runner's scripts. A oneshot unit baked into the image
//! (`xtask-run.service`) hands over to them: the first boot installs the .deb with
//! `dpkg -i` and reboots; the second boot (systemd-modules-load has loaded kmemlab.ko,
//! udev has given the nodes to group kmemlab) presses the button, runs the command as
//! root and powers off. The console carries `@@` lines, as with the initramfs runner.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::debian::{self, Release};
use crate::dist;
use crate::initramfs::Cpio;
use crate::setup::{root_command, PrivateApt, Toolchain, BACKPORTS_SUITE};
use crate::stock;
use crate::util::{output, repo_root, run, run_logged, short_hash, step};
use crate::vm::{self, Guest, Wait};

/// The Debian release of the system (the one whose compiler built the kernel).
const SUITE: &str = debian::TRIXIE;
/// What debootstrap installs besides minbase. dbus: `systemctl` needs the system bus;
/// libbpf1: without it systemd disables its cgroup BPF features, and the unit's
/// `DevicePolicy=`, `IPAddressDeny=` and `Restrict*=` would not mean what they say;
/// initramfs-tools: `linux-image-RELEASE` depends on an initramfs generator.
const INCLUDE: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "udev",
    "kmod",
    "procps",
    "dbus",
    "libbpf1",
    "initramfs-tools",
];
/// Debian's packages of the kernel release installed into the system (`PKG-RELEASE`),
/// and `linux-base`, which `linux-image-RELEASE` pre-depends on (trixie's is too old).
const KERNEL_PACKAGES: &[&str] = &["linux-image", "linux-binary", "linux-modules", "linux-base"];
/// The modules the initramfs loads to mount the disk (their dependencies come too).
const BOOT_MODULES: &[&str] = &["virtio_blk", "ext4"];
/// The image's size (a sparse file).
const IMAGE_BYTES: u64 = 4 << 30;
/// Guest memory and CPUs while the image is finished.
const BUILD_MEMORY_MB: u32 = 2048;
const BUILD_CPUS: u32 = 2;
/// Bound on the guest's share of an image build (4 minutes unloaded).
const BUILD_TIMEOUT: Duration = Duration::from_secs(45 * 60);
/// Bound on one boot to the runner (about 20 s unloaded under TCG; 150 s seen on a
/// loaded 2-core host).
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);

const INIT_BUILD: &str = include_str!("../guest/system/init-build.sh");
const FINISH: &str = include_str!("../guest/system/finish.sh");
const INIT_BOOT: &str = include_str!("../guest/system/init-boot.sh");
const RUNNER: &str = include_str!("../guest/system/xtask-run");
const RUNNER_UNIT: &str = include_str!("../guest/system/xtask-run.service");
const BOOT_SH: &str = include_str!("../guest/system/boot.sh");
const LIB_SH: &str = include_str!("../guest/system/lib.sh");

/// The console line a guest command prints (lib.sh's `press`) to have the host press
/// the button once.
const PRESS_CUE: &str = "@@PRESS-NOW";

/// How to run a system VM.
#[derive(Clone, Debug)]
pub struct SystemOptions {
    /// Button presses before the command runs (each one counted by the UIO device).
    pub presses: u32,
    /// Shell command run as root in the booted system (lib.sh's functions available).
    pub cmd: String,
    /// Bound on the command's run time.
    pub cmd_timeout: Duration,
    pub cpus: u32,
    pub verbose: bool,
}

impl Default for SystemOptions {
    fn default() -> Self {
        Self {
            presses: 0,
            cmd: "true".to_owned(),
            cmd_timeout: Duration::from_secs(600),
            cpus: 2,
            verbose: false,
        }
    }
}

/// What came back from a system VM.
#[derive(Debug, Default)]
pub struct SystemOutcome {
    pub cmd_output: String,
    pub cmd_status: i32,
    /// dpkg -i's output on the first boot.
    pub install_output: String,
    /// Seconds from power-on to the runner on the second boot (the guest's uptime).
    pub boot_seconds: f64,
}

/// Everything a run needs, built or fetched once.
pub struct System {
    release: Release,
    image: PathBuf,
    kernel: PathBuf,
    modules: PathBuf,
    deb: PathBuf,
    busybox: PathBuf,
    work: PathBuf,
}

/// `--system` values.
pub fn parse_name(name: &str) -> Result<Release> {
    match name {
        "debian" | "debian-arm64" => Release::parse(debian::ARM64_RELEASE),
        other => bail!("unknown system `{other}`: debian (Debian {SUITE} arm64)"),
    }
}

impl System {
    /// Builds or fetches the image, Debian's kernel and the package of `dist --debian`.
    pub fn prepare(tc: &Toolchain, release: &Release) -> Result<Self> {
        let kernel = debian::kernel(release)?;
        let modules = kernel
            .image
            .parent()
            .context("Debian's vmlinuz has no folder")?
            .to_path_buf();
        let image = image(tc, release, &kernel.image, &modules)?;
        step(format!("cargo xtask dist --debian {}", release.name));
        let pkgs = dist::dist(
            tc,
            dist::Target::Debian {
                release: &release.name,
                module: None,
            },
        )?;
        Ok(Self {
            release: release.clone(),
            image,
            kernel: kernel.image,
            modules,
            deb: pkgs.deb,
            busybox: tc.busybox.clone(),
            work: tc
                .cache
                .join("run")
                .join(format!("system-{}", std::process::id())),
        })
    }

    /// Removes the run folders.
    pub fn cleanup(&self) {
        let _ = fs::remove_dir_all(&self.work);
    }

    /// Boots a fresh copy of the image, installs the package, reboots, presses the
    /// button and runs the command; `name` names the run's work folder.
    pub fn run(&self, name: &str, opts: &SystemOptions) -> Result<SystemOutcome> {
        let work = self.work.join(name);
        let _ = fs::remove_dir_all(&work);
        fs::create_dir_all(&work)?;
        let disk = work.join("system.qcow2");
        run(Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(&self.image)
            .arg(&disk))?;
        let run_disk = self.run_disk(&work, opts)?;
        let initrd = boot_initramfs(&work, &self.busybox, &self.modules, INIT_BOOT, &[])?;
        let dtb = vm::board_device_tree(
            &work,
            debian::MEMORY_MB,
            Some(&repo_root().join("dts/qemu-virt.dtso")),
            opts.cpus,
        )?;
        let qmp = work.join("qmp.sock");
        let child = qemu(
            &dtb,
            debian::MEMORY_MB,
            opts.cpus,
            &self.kernel,
            &initrd,
            &qmp,
        )
        .arg("-append")
        .arg("console=ttyAMA0 panic=-1 quiet systemd.show_status=false")
        .args(drive("root", &disk, "qcow2"))
        .args(drive("run", &run_disk, "raw"))
        .spawn()
        .context("failed to start qemu-system-aarch64")?;
        let mut guest = Guest::new(child, qmp, opts.verbose)?;
        let start = Instant::now();
        let mut outcome = SystemOutcome::default();

        guest.wait_for("the package's install", BOOT_TIMEOUT, |_, l| {
            if let Some(rest) = l.strip_prefix("@@INSTALL ") {
                outcome.install_output.push_str(rest);
                outcome.install_output.push('\n');
            }
            Ok(if l == "@@INSTALLED" {
                Wait::Found(())
            } else {
                Wait::Continue
            })
        })?;
        step(format!(
            "dpkg -i {} done {:.0?} after power-on; rebooting",
            self.deb.file_name().unwrap_or_default().to_string_lossy(),
            start.elapsed()
        ));
        let reboot = Instant::now();
        guest.stage = "reboot".to_owned();
        outcome.boot_seconds =
            guest.wait_for("@@READY after the reboot", BOOT_TIMEOUT, |_, l| {
                Ok(match l.strip_prefix("@@READY ") {
                    Some(up) => Wait::Found(up.trim().parse().unwrap_or(0.0)),
                    None => Wait::Continue,
                })
            })?;
        step(format!(
            "booted to the runner in {:.0?} ({:.1} s of guest uptime)",
            reboot.elapsed(),
            outcome.boot_seconds
        ));
        let mut presses = 0u32;
        outcome.cmd_status = guest.wait_for("end of the command", opts.cmd_timeout, |g, l| {
            if l.ends_with(PRESS_CUE) {
                presses += 1;
                g.qmp()?
                    .execute("system_powerdown")
                    .with_context(|| format!("press {presses}"))?;
            } else if let Some(rest) = l.strip_prefix("@@OUT ") {
                outcome.cmd_output.push_str(rest);
                outcome.cmd_output.push('\n');
            } else if l == "@@OUT" {
                outcome.cmd_output.push('\n');
            } else if let Some(rc) = l.strip_prefix("@@EXIT ") {
                return Ok(Wait::Found(rc.trim().parse::<i32>().unwrap_or(255)));
            }
            Ok(Wait::Continue)
        })?;
        let deadline = Instant::now() + Duration::from_secs(120);
        while guest.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                bail!(
                    "the system did not power off within 120 s after the command{}",
                    guest.tail_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(outcome)
    }

    /// The run's second disk: the .deb, the command and the runner's scripts.
    fn run_disk(&self, work: &Path, opts: &SystemOptions) -> Result<PathBuf> {
        let dir = work.join("run");
        fs::create_dir_all(&dir)?;
        // Under its own name: boot.sh installs it with the README's `dpkg -i` line.
        let deb = self.deb.file_name().context("the .deb has no file name")?;
        fs::copy(&self.deb, dir.join(deb))
            .with_context(|| format!("failed to copy {}", self.deb.display()))?;
        fs::write(dir.join("boot.sh"), BOOT_SH)?;
        fs::write(dir.join("lib.sh"), LIB_SH)?;
        fs::write(dir.join("cmd.sh"), format!("{}\n", opts.cmd))?;
        fs::write(
            dir.join("vm.conf"),
            format!("PRESSES={}\nRELEASE={}\n", opts.presses, self.release.name),
        )?;
        let img = work.join("run.img");
        fs::File::create(&img)?.set_len(64 << 20)?;
        run(Command::new(mkfs())
            .args(["-q", "-F", "-L", "kmemlab-run", "-d"])
            .arg(&dir)
            .arg(&img))?;
        Ok(img)
    }
}

fn mkfs() -> &'static str {
    if Path::new("/sbin/mkfs.ext4").exists() {
        "/sbin/mkfs.ext4"
    } else {
        "mkfs.ext4"
    }
}

/// `-drive`/`-device` arguments for a virtio disk (the first is /dev/vda).
fn drive(id: &str, file: &Path, format: &str) -> Vec<String> {
    vec![
        "-drive".to_owned(),
        format!("file={},if=none,id={id},format={format}", file.display()),
        "-device".to_owned(),
        format!("virtio-blk-pci,drive={id}"),
    ]
}

/// QEMU on the virt board with Debian's kernel, the initramfs and the device tree; the
/// console on stdio, QMP on `qmp`. The caller adds `-append` and the disks.
fn qemu(
    dtb: &Path,
    memory_mb: u32,
    cpus: u32,
    kernel: &Path,
    initrd: &Path,
    qmp: &Path,
) -> Command {
    let _ = fs::remove_file(qmp);
    let mut cmd = Command::new(vm::QEMU);
    cmd.args(vm::MACHINE)
        .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
        .arg("-dtb")
        .arg(dtb)
        .args(["-m", &format!("{memory_mb}M")])
        .args(["-smp", &cpus.to_string()])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", qmp.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    cmd
}

/// The modules named in [`BOOT_MODULES`] and their dependencies, in load order, as
/// paths of Debian's `.ko.xz` files under `modules` (`usr/lib/modules/RELEASE`).
fn boot_modules(modules: &Path) -> Result<Vec<PathBuf>> {
    let mut index = std::collections::HashMap::new();
    let mut stack = vec![modules.join("kernel")];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".ko.xz"))
            {
                index.insert(name.replace('-', "_"), path.clone());
            }
        }
    }
    let modinfo = if Path::new("/sbin/modinfo").exists() {
        "/sbin/modinfo"
    } else {
        "modinfo"
    };
    fn visit(
        name: &str,
        index: &std::collections::HashMap<String, PathBuf>,
        modinfo: &str,
        order: &mut Vec<PathBuf>,
    ) -> Result<()> {
        let path = index
            .get(&name.replace('-', "_"))
            .with_context(|| format!("Debian's modules have no {name}.ko.xz"))?;
        if order.contains(path) {
            return Ok(());
        }
        let deps = output(Command::new(modinfo).args(["-F", "depends"]).arg(path))?;
        for dep in deps.trim().split(',').filter(|d| !d.is_empty()) {
            visit(dep, index, modinfo, order)?;
        }
        order.push(path.clone());
        Ok(())
    }
    let mut order = Vec::new();
    for name in BOOT_MODULES {
        visit(name, &index, modinfo, &mut order)?;
    }
    Ok(order)
}

/// A busybox initramfs with `init` as /init, Debian's boot modules (decompressed, in
/// /modules.order's order) and `files` (name, text).
fn boot_initramfs(
    work: &Path,
    busybox: &Path,
    modules: &Path,
    init: &str,
    files: &[(&str, &str)],
) -> Result<PathBuf> {
    let mut cpio = Cpio::default();
    for dir in [
        "bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "mnt", "lib",
    ] {
        cpio.dir(dir, 0o755);
    }
    cpio.dir("lib/modules", 0o755);
    cpio.char_dev("dev/console", 0o600, 5, 1);
    cpio.file("init", 0o755, init.as_bytes());
    cpio.file_from("bin/busybox", 0o755, busybox)?;
    cpio.symlink("bin/sh", "busybox");
    let mut order = String::new();
    for xz in boot_modules(modules)? {
        let data = Command::new("xz")
            .arg("-dc")
            .arg(&xz)
            .output()
            .with_context(|| format!("failed to run xz -dc {}", xz.display()))?;
        if !data.status.success() {
            bail!("xz -dc {} failed", xz.display());
        }
        let name = xz
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".xz"))
            .context("a module without a name")?
            .to_owned();
        cpio.file(&format!("lib/modules/{name}"), 0o644, &data.stdout);
        order.push_str(&name);
        order.push('\n');
    }
    cpio.file("modules.order", 0o644, order.as_bytes());
    for (name, text) in files {
        cpio.file(name, 0o644, text.as_bytes());
    }
    let path = work.join("initramfs.cpio");
    fs::write(&path, cpio.finish())
        .with_context(|| format!("failed to write {}", path.display()))?;
    Ok(path)
}

fn system_dir(tc: &Toolchain) -> PathBuf {
    tc.cache.join("system")
}

/// The cached image of the system for `release` (built the first time, and again
/// whenever its recipe changes).
fn image(tc: &Toolchain, release: &Release, kernel: &Path, modules: &Path) -> Result<PathBuf> {
    let dir = system_dir(tc);
    let key = short_hash([
        SUITE,
        &release.name,
        crate::setup::KERNEL_DEB_VERSION,
        &INCLUDE.join(","),
        &KERNEL_PACKAGES.join(","),
        &IMAGE_BYTES.to_string(),
        INIT_BUILD,
        FINISH,
        RUNNER,
        RUNNER_UNIT,
    ]);
    let name = format!("debian-{SUITE}-arm64-{}-{key}", release.name);
    let img = dir.join(format!("{name}.img"));
    if img.is_file() {
        return Ok(img);
    }
    fs::create_dir_all(&dir)?;
    let start = Instant::now();
    let partial = dir.join(format!("{name}.img.partial"));
    let root = dir.join(format!("{name}.root"));
    let result = build_image(tc, release, kernel, modules, &root, &partial);
    let _ = run(root_command("rm").arg("-rf").arg(&root));
    if let Err(err) = result {
        let _ = fs::remove_file(&partial);
        return Err(err);
    }
    fs::rename(&partial, &img)?;
    // Older images (other recipes) are of no use any more.
    for entry in fs::read_dir(&dir)? {
        let path = entry?.path();
        let file = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if file.starts_with("debian-") && file.ends_with(".img") && path != img {
            let _ = fs::remove_file(&path);
        }
    }
    step(format!(
        "the system image {} is made, in {:.0?}",
        img.display(),
        start.elapsed()
    ));
    Ok(img)
}

fn build_image(
    tc: &Toolchain,
    release: &Release,
    kernel: &Path,
    modules: &Path,
    root: &Path,
    partial: &Path,
) -> Result<()> {
    let dir = system_dir(tc);
    // Debian's kernel packages, as .debs for the guest to install.
    let mut debs = stock::packages(tc, KERNEL_PACKAGES, &release.name)?;
    debs.push(linux_base(tc, release)?);

    // First stage, on the host.
    let (uri, keyring) = PrivateApt::mirror()?;
    let _ = run(root_command("rm").arg("-rf").arg(root));
    step(format!(
        "debootstrap --foreign: a {SUITE} arm64 system in {} (first stage)",
        root.display()
    ));
    let t = Instant::now();
    let mut cmd = root_command("debootstrap");
    cmd.args(["--foreign", "--arch=arm64", "--variant=minbase"])
        .arg(format!("--include={}", INCLUDE.join(",")));
    if Path::new(&keyring).is_file() {
        cmd.arg(format!("--keyring={keyring}"));
    }
    cmd.arg(SUITE).arg(root).arg(&uri);
    run_logged(&mut cmd, &dir.join("debootstrap.log")).with_context(|| {
        format!("debootstrap could not unpack a {SUITE} arm64 system from {uri}")
    })?;
    step(format!("first stage took {:.0?}", t.elapsed()));
    let kdebs = root.join("root/kernel-debs");
    fs::create_dir_all(&kdebs)?;
    for deb in &debs {
        fs::copy(
            deb,
            kdebs.join(deb.file_name().context("a .deb without a name")?),
        )?;
    }
    write_system_files(root)?;

    // The disk, without mounting anything.
    step(format!("mkfs.ext4 -d: {}", partial.display()));
    let _ = fs::remove_file(partial);
    fs::File::create(partial)?.set_len(IMAGE_BYTES)?;
    run_logged(
        Command::new(mkfs())
            .args(["-q", "-F", "-L", "kmemlab-root", "-d"])
            .arg(root)
            .arg(partial),
        &dir.join("mkfs.log"),
    )?;

    // Second stage and the kernel packages, in the guest.
    let work = dir.join(format!("build-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    let result = (|| -> Result<()> {
        let initrd = boot_initramfs(
            &work,
            &tc.busybox,
            modules,
            INIT_BUILD,
            &[("finish.sh", FINISH)],
        )?;
        let dtb = vm::board_device_tree(
            &work,
            BUILD_MEMORY_MB,
            Some(&repo_root().join("dts/qemu-virt.dtso")),
            BUILD_CPUS,
        )?;
        let qmp = work.join("qmp.sock");
        step("booting Debian's kernel to finish the system (debootstrap --second-stage, kernel packages)");
        let t = Instant::now();
        let child = qemu(&dtb, BUILD_MEMORY_MB, BUILD_CPUS, kernel, &initrd, &qmp)
            .arg("-no-reboot")
            .arg("-append")
            .arg("console=ttyAMA0 panic=-1 loglevel=4")
            .args(drive("root", partial, "raw"))
            .spawn()
            .context("failed to start qemu-system-aarch64")?;
        let mut guest = Guest::new(child, qmp, true)?;
        guest.wait_for("@@BUILD-OK", BUILD_TIMEOUT, |_, l| {
            Ok(if l == "@@BUILD-OK" {
                Wait::Found(())
            } else {
                Wait::Continue
            })
        })?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while guest.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                bail!("the guest did not power off after @@BUILD-OK");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        step(format!(
            "the guest finished the system in {:.0?}",
            t.elapsed()
        ));
        Ok(())
    })();
    let _ = fs::remove_dir_all(&work);
    result
}

/// Debian's `linux-base` from the backports suite (cached).
fn linux_base(tc: &Toolchain, release: &Release) -> Result<PathBuf> {
    let debs = system_dir(tc).join("debs");
    if let Some(deb) = fs::read_dir(&debs).ok().and_then(|entries| {
        entries.filter_map(|e| e.ok().map(|e| e.path())).find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("linux-base_") && n.ends_with(".deb"))
        })
    }) {
        return Ok(deb);
    }
    let mut apt = PrivateApt::new(&tc.cache);
    let lists = format!("backports-{}", release.arch);
    apt.update(&lists, BACKPORTS_SUITE, Some(release.arch))?;
    apt.download(&lists, "linux-base", Some(release.arch), &debs)
        .with_context(|| format!("Debian's {BACKPORTS_SUITE} has no linux-base"))
}

/// The files the image carries besides Debian's: fstab, host name, the runner and its
/// unit (enabled), and no login prompt on the serial console (the runner owns it).
fn write_system_files(root: &Path) -> Result<()> {
    let write = |rel: &str, text: &str, mode: u32| -> Result<()> {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&path, text).with_context(|| format!("failed to write {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    write(
        "etc/fstab",
        "/dev/vda / ext4 rw,errors=remount-ro 0 0\n",
        0o644,
    )?;
    write("etc/hostname", "kmemlab-vm\n", 0o644)?;
    write("usr/local/sbin/xtask-run", RUNNER, 0o755)?;
    write("etc/systemd/system/xtask-run.service", RUNNER_UNIT, 0o644)?;
    let link = |rel: &str, target: &str| -> Result<()> {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let _ = fs::remove_file(&path);
        std::os::unix::fs::symlink(target, &path)
            .with_context(|| format!("failed to link {}", path.display()))
    };
    link(
        "etc/systemd/system/multi-user.target.wants/xtask-run.service",
        "/etc/systemd/system/xtask-run.service",
    )?;
    link(
        "etc/systemd/system/serial-getty@ttyAMA0.service",
        "/dev/null",
    )?;
    link("etc/systemd/system/getty@tty1.service", "/dev/null")?;
    Ok(())
}

/// `cargo xtask vm --system NAME`: prints the command's output, returns its status.
pub fn vm(tc: &Toolchain, release: &Release, opts: &SystemOptions) -> Result<i32> {
    let system = System::prepare(tc, release)?;
    let outcome = system.run("vm", opts);
    system.cleanup();
    let outcome = outcome?;
    print!("{}", outcome.cmd_output);
    step(format!(
        "guest command exited with status {} (boot to the runner: {:.1} s of guest uptime)",
        outcome.cmd_status, outcome.boot_seconds
    ));
    Ok(outcome.cmd_status)
}

/// `vm --system NAME [--presses N] [--timeout SECS] [--cpus N] [--verbose] [-- CMD...]`.
pub fn parse_args(args: &[String]) -> Result<(Release, SystemOptions)> {
    let usage = "usage: cargo xtask vm --system debian [--presses N] [--timeout SECS] \
                 [--cpus N] [--verbose] [-- CMD...]";
    let mut opts = SystemOptions::default();
    let mut release = None;
    let mut it = args.iter();
    let number = |v: Option<&String>, what: &str| -> Result<u64> {
        v.with_context(|| format!("{what} needs a number"))?
            .parse()
            .with_context(|| format!("{what} needs a number"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--system" => release = Some(parse_name(it.next().context("--system needs a name")?)?),
            "--presses" => opts.presses = u32::try_from(number(it.next(), "--presses")?)?,
            "--cpus" => opts.cpus = u32::try_from(number(it.next(), "--cpus")?)?,
            "--timeout" => opts.cmd_timeout = Duration::from_secs(number(it.next(), "--timeout")?),
            "--verbose" | "-v" => opts.verbose = true,
            "--" => {
                let cmd: Vec<&str> = it.by_ref().map(String::as_str).collect();
                if !cmd.is_empty() {
                    opts.cmd = cmd.join(" ");
                }
            }
            other => bail!("`{other}` is not an option of `vm --system`\n{usage}"),
        }
    }
    Ok((release.context(usage)?, opts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn vm_system_arguments_parse() {
        let (release, opts) = parse_args(&args(&[
            "--system",
            "debian",
            "--presses",
            "2",
            "--",
            "lsmod",
            "-a",
        ]))
        .expect("valid arguments");
        assert_eq!(release.name, debian::ARM64_RELEASE);
        assert_eq!(opts.presses, 2);
        assert_eq!(opts.cmd, "lsmod -a");
    }

    #[test]
    fn bad_vm_system_arguments_are_clear_errors() {
        let err = |list: &[&str]| format!("{:#}", parse_args(&args(list)).unwrap_err());
        assert!(err(&["--system", "fedora"]).contains("unknown system `fedora`"));
        assert!(err(&["--system", "debian", "--presses", "x"]).contains("--presses needs a number"));
        assert!(err(&["--system", "debian", "--kernel", "test"]).contains("`--kernel` is not"));
        assert!(err(&["--system"]).contains("--system needs a name"));
    }
}
