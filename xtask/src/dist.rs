//! `cargo xtask dist [--kdir DIR]`: a tarball and a Debian arm64 package with the
//! binaries, the service files, the overlays and kmemlab.ko built for DIR.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};

use crate::build::{self, Flavor};
use crate::setup::Toolchain;
use crate::util::{output, repo_root, run, step};

/// What `dist` produced.
pub struct Packages {
    pub tarball: PathBuf,
    pub deb: PathBuf,
    /// `uname -r` of the kernel the module was built for.
    pub release: String,
}

/// The overlays shipped, as (source in dts/, installed name).
const OVERLAYS: &[(&str, &str)] = &[
    ("rpi4-button.dtso", "kmemlab-rpi4.dtbo"),
    ("rpi5-button.dtso", "kmemlab-rpi5.dtbo"),
    ("qemu-virt.dtso", "kmemlab-qemu-virt.dtbo"),
];

fn version() -> Result<String> {
    let manifest = fs::read_to_string(repo_root().join("daemon/Cargo.toml"))?;
    manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .map(str::to_owned)
        .context("no version in daemon/Cargo.toml")
}

fn install(src: &Path, dest: &Path, mode: u32) -> Result<()> {
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::copy(src, dest).with_context(|| format!("failed to copy {}", src.display()))?;
    fs::set_permissions(dest, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn write(dest: &Path, text: &str, mode: u32) -> Result<()> {
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(dest, text)?;
    fs::set_permissions(dest, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn postinst(release: &str) -> String {
    format!(
        "#!/bin/sh
# kmemlab postinst: the group that owns /dev/kmemlab and the UIO node, the
# module's dependency map, and the new udev rule and unit.
set -e
if [ \"$1\" = configure ]; then
    if ! getent group kmemlab >/dev/null; then
        addgroup --system kmemlab
    fi
    if command -v depmod >/dev/null; then
        depmod -a {release} || true
    fi
    if command -v udevadm >/dev/null; then
        udevadm control --reload-rules || true
        udevadm trigger --subsystem-match=misc --subsystem-match=uio || true
    fi
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload || true
    fi
fi
exit 0
"
    )
}

const POSTRM: &str = "#!/bin/sh
# kmemlab postrm: the group stays (files elsewhere may use it); the unit goes.
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
exit 0
";

/// Builds both packages into `target/dist/`.
pub fn dist(tc: &Toolchain, kdir: Option<&Path>) -> Result<Packages> {
    let root = repo_root();
    let version = version()?;
    let kdir_path = match kdir {
        Some(dir) => dir.to_path_buf(),
        None => build::kernel(tc, Flavor::Test)?.dir,
    };
    let target = build::check_kdir(&kdir_path)?;
    ensure!(
        target.arch == "arm64",
        "the packages are for arm64 boards; {} is an {} kernel",
        kdir_path.display(),
        target.arch
    );
    let ko = build::module(tc, Some(&kdir_path), Flavor::Test)?;
    let user = build::userspace(tc)?;

    let out = root.join("target/dist");
    let stage = out.join(format!("kmemlab_{version}_arm64"));
    let _ = fs::remove_dir_all(&stage);
    step(format!("staging the package in {}", stage.display()));
    install(&user.kmemlabd, &stage.join("usr/bin/kmemlabd"), 0o755)?;
    install(&user.kmemlabctl, &stage.join("usr/bin/kmemlabctl"), 0o755)?;
    install(
        &ko,
        &stage.join(format!("lib/modules/{}/extra/kmemlab.ko", target.release)),
        0o644,
    )?;
    let systemd = root.join("systemd");
    install(
        &systemd.join("kmemlabd.service"),
        &stage.join("usr/lib/systemd/system/kmemlabd.service"),
        0o644,
    )?;
    install(
        &systemd.join("60-kmemlab.rules"),
        &stage.join("usr/lib/udev/rules.d/60-kmemlab.rules"),
        0o644,
    )?;
    install(
        &systemd.join("kmemlab.conf"),
        &stage.join("usr/lib/modules-load.d/kmemlab.conf"),
        0o644,
    )?;
    install(
        &systemd.join("kmemlabd.conf"),
        &stage.join("etc/kmemlab/kmemlabd.conf"),
        0o644,
    )?;
    let overlays = stage.join("usr/share/kmemlab/overlays");
    fs::create_dir_all(&overlays)?;
    for (src, name) in OVERLAYS {
        let dtbo = overlays.join(name);
        run(Command::new("dtc")
            .args(["-@", "-q", "-I", "dts", "-O", "dtb", "-o"])
            .arg(&dtbo)
            .arg(root.join("dts").join(src)))?;
        fs::set_permissions(&dtbo, fs::Permissions::from_mode(0o644))?;
        install(&root.join("dts").join(src), &overlays.join(src), 0o644)?;
    }
    install(
        &root.join("dts/bindings/misc/yang,mydevice.yaml"),
        &stage.join("usr/share/kmemlab/bindings/yang,mydevice.yaml"),
        0o644,
    )?;
    let doc = stage.join("usr/share/doc/kmemlab");
    install(&root.join("README.md"), &doc.join("README.md"), 0o644)?;
    write(
        &doc.join("copyright"),
        "kmemlab\nLicense: GPL-2.0-only\n \
         On Debian systems the license is in /usr/share/common-licenses/GPL-2.\n",
        0o644,
    )?;

    // The tarball: the same tree.
    let tarball = out.join(format!(
        "kmemlab-{version}-arm64-linux-{}.tar.gz",
        target.release
    ));
    run(Command::new("tar")
        .args(["--owner=0", "--group=0", "--numeric-owner", "-czf"])
        .arg(&tarball)
        .arg("-C")
        .arg(&stage)
        .arg("."))?;

    // The Debian package.
    let installed_kib = dir_size(&stage)? / 1024;
    let control = format!(
        "Package: kmemlab\n\
         Version: {version}\n\
         Architecture: arm64\n\
         Maintainer: kmemlab maintainers <kmemlab@localhost>\n\
         Installed-Size: {installed_kib}\n\
         Section: kernel\n\
         Priority: optional\n\
         Description: watch the kernel's memory allocators at work, one button press at a time\n \
         kmemlabd allocates and frees kernel memory (kmalloc, vmalloc,\n \
         dma_alloc_coherent) through the kmemlab module on each press of a GPIO\n \
         button, and logs each result as a JSON line. The module in this package\n \
         is built for Linux {}.\n",
        target.release
    );
    write(&stage.join("DEBIAN/control"), &control, 0o644)?;
    write(
        &stage.join("DEBIAN/postinst"),
        &postinst(&target.release),
        0o755,
    )?;
    write(&stage.join("DEBIAN/postrm"), POSTRM, 0o755)?;
    write(
        &stage.join("DEBIAN/conffiles"),
        "/etc/kmemlab/kmemlabd.conf\n",
        0o644,
    )?;
    let deb = out.join(format!("kmemlab_{version}_arm64.deb"));
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&stage)
        .arg(&deb))?;
    Ok(Packages {
        tarball,
        deb,
        release: target.release,
    })
}

fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// Installs the .deb into an empty arm64 Debian root folder with `dpkg --root` and checks
/// every file and its mode; runs the postinst against stand-ins for the group tools.
pub fn install_test(pkgs: &Packages, work: &Path) -> Result<()> {
    let rootfs = work.join("rootfs");
    let _ = fs::remove_dir_all(work);
    for dir in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
    ] {
        fs::create_dir_all(rootfs.join(dir))?;
    }
    fs::write(rootfs.join("var/lib/dpkg/status"), "")?;
    fs::write(rootfs.join("var/lib/dpkg/arch"), "arm64\n")?;
    step("installing the .deb into an arm64 root folder (dpkg --root)");
    // --unpack: the maintainer scripts are arm64 shell scripts for the board; they are
    // checked below on this machine instead of in a chroot that cannot run them.
    run(Command::new("dpkg")
        .arg(format!("--root={}", rootfs.display()))
        .args(["--force-architecture", "--force-not-root", "--unpack"])
        .arg(&pkgs.deb))?;
    let listed = output(
        Command::new("dpkg")
            .arg(format!("--root={}", rootfs.display()))
            .args(["-L", "kmemlab"]),
    )?;
    let want: Vec<(String, u32)> = vec![
        ("/usr/bin/kmemlabd".to_owned(), 0o755),
        ("/usr/bin/kmemlabctl".to_owned(), 0o755),
        (
            format!("/lib/modules/{}/extra/kmemlab.ko", pkgs.release),
            0o644,
        ),
        ("/usr/lib/systemd/system/kmemlabd.service".to_owned(), 0o644),
        ("/usr/lib/udev/rules.d/60-kmemlab.rules".to_owned(), 0o644),
        ("/usr/lib/modules-load.d/kmemlab.conf".to_owned(), 0o644),
        // A conffile stays as .dpkg-new until the package is configured.
        ("/etc/kmemlab/kmemlabd.conf.dpkg-new".to_owned(), 0o644),
        (
            "/usr/share/kmemlab/overlays/kmemlab-rpi4.dtbo".to_owned(),
            0o644,
        ),
        (
            "/usr/share/kmemlab/overlays/kmemlab-rpi5.dtbo".to_owned(),
            0o644,
        ),
        (
            "/usr/share/kmemlab/overlays/kmemlab-qemu-virt.dtbo".to_owned(),
            0o644,
        ),
        ("/usr/share/doc/kmemlab/README.md".to_owned(), 0o644),
        ("/var/lib/dpkg/info/kmemlab.postinst".to_owned(), 0o755),
    ];
    for (path, mode) in &want {
        let file = rootfs.join(path.trim_start_matches('/'));
        let meta = fs::metadata(&file)
            .with_context(|| format!("{path} is not installed ({})", file.display()))?;
        ensure!(
            meta.permissions().mode() & 0o7777 == *mode,
            "{path} has mode {:o}, want {mode:o}",
            meta.permissions().mode() & 0o7777
        );
        let listed_as = path.trim_end_matches(".dpkg-new");
        if !path.starts_with("/var/lib/dpkg") {
            ensure!(
                listed.lines().any(|l| l == listed_as),
                "dpkg -L kmemlab does not list {listed_as}"
            );
        }
    }
    let bin = output(Command::new("file").arg(rootfs.join("usr/bin/kmemlabd"))).unwrap_or_default();
    if !bin.is_empty() {
        ensure!(
            bin.contains("aarch64") && bin.contains("statically linked"),
            "kmemlabd is not a static arm64 binary: {bin}"
        );
    }
    let ko = fs::read(rootfs.join(format!("lib/modules/{}/extra/kmemlab.ko", pkgs.release)))?;
    ensure!(
        ko.get(18..20) == Some(&[0xb7, 0x00]),
        "kmemlab.ko is not an arm64 ELF object"
    );

    // The postinst creates the group when it is missing, and only then.
    let stubs = work.join("stubs");
    let calls = work.join("calls");
    fs::create_dir_all(&stubs)?;
    for (tool, body) in [
        (
            "getent",
            "echo \"getent $*\" >> \"$CALLS\"; [ -e \"$CALLS.group\" ]",
        ),
        (
            "addgroup",
            "echo \"addgroup $*\" >> \"$CALLS\"; touch \"$CALLS.group\"",
        ),
        ("depmod", "echo \"depmod $*\" >> \"$CALLS\""),
        ("udevadm", "echo \"udevadm $*\" >> \"$CALLS\""),
    ] {
        write(&stubs.join(tool), &format!("#!/bin/sh\n{body}\n"), 0o755)?;
    }
    let script = rootfs.join("var/lib/dpkg/info/kmemlab.postinst");
    for _ in 0..2 {
        run(Command::new("sh")
            .arg(&script)
            .arg("configure")
            .env("PATH", format!("{}:/usr/bin:/bin", stubs.display()))
            .env("CALLS", &calls))?;
    }
    let log = fs::read_to_string(&calls)?;
    let adds = log.lines().filter(|l| l.starts_with("addgroup")).count();
    if adds != 1 || !log.contains("addgroup --system kmemlab") {
        bail!("postinst should create the kmemlab group exactly once over two runs:\n{log}");
    }
    ensure!(
        log.contains(&format!("depmod -a {}", pkgs.release)),
        "postinst did not run depmod for {}:\n{log}",
        pkgs.release
    );
    Ok(())
}
