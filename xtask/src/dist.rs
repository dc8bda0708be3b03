//! `cargo xtask dist [--kdir DIR]`: a tarball and a Debian arm64 package with the
//! binaries, the service files, the overlays, the C header of the ABI and kmemlab.ko
//! built for DIR.
//! `cargo xtask dist --debian RELEASE [--module KO]`: the same for Debian's own kernel
//! RELEASE (`7.3.4+deb13-arm64`, or `-amd64` with amd64 binaries), with kmemlab.ko in
//! /lib/modules/RELEASE/updates/ and a dependency on `linux-image-RELEASE`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};

use crate::build::{self, Flavor};
use crate::setup::Toolchain;
use crate::stock;
use crate::util::{output, repo_root, run, step};

mod docs;

/// The kernel the package's module is for.
pub enum Target<'a> {
    /// A kernel build folder; the test kernel when `None`.
    Kdir(Option<&'a Path>),
    /// Debian's kernel `release` (`uname -r`, e.g. `7.3.4+deb13-arm64`), with the module
    /// built for it (`module`), or built here when `None`.
    Debian {
        release: &'a str,
        module: Option<&'a Path>,
    },
}

/// What `dist` produced.
pub struct Packages {
    pub tarball: PathBuf,
    pub deb: PathBuf,
    /// `uname -r` of the kernel the module was built for.
    pub release: String,
    /// Where kmemlab.ko is installed, e.g. `/lib/modules/RELEASE/extra/kmemlab.ko`.
    pub module_path: String,
    /// `Depends:` of the .deb, if any.
    pub depends: Option<String>,
}

/// The package's maintainer (`Maintainer:`, the changelog's trailer line).
const MAINTAINER: &str = "kmemlab maintainers <kmemlab@users.noreply.github.com>";

/// The .deb's Debian revision: the package is built from the project's own tree.
const DEBIAN_REVISION: &str = "1";

/// The hand-written man pages shipped, as (source in man/, section). kmemlabctl's are
/// generated from its command line ([`docs`]). kmemlabd's is in section 8, system
/// administration commands and daemons, as systemd-journald(8) and udevd(8) are: it is
/// started by its unit, not by users.
const MAN_PAGES: &[(&str, &str)] = &[("kmemlabd.8", "man8")];

/// What lintian reports that is deliberate, each with the reason.
const LINTIAN_OVERRIDES: &str = "\
# kmemlabd and kmemlabctl are linked statically on purpose: the same two binaries
# run on any arm64 board's (or amd64 PC's) userland (Debian, Raspberry Pi OS, a busybox initramfs)
# whatever its C library, and they are the very binaries the project's VM tests run.
kmemlab: statically-linked-binary [usr/bin/kmemlabctl]
kmemlab: statically-linked-binary [usr/bin/kmemlabd]
# The package is built from the project's tree, not uploaded to Debian's archive: there
# is no ITP bug for its first changelog entry to close.
kmemlab: initial-upload-closes-no-bugs [usr/share/doc/kmemlab/changelog.Debian.gz:1]
";

const COPYRIGHT: &str = "\
kmemlab: a Rust kernel module, a daemon and device-tree overlays that show the
kernel's memory allocators at work.

Copyright: 2026 kmemlab maintainers <kmemlab@users.noreply.github.com>
License: GPL-2.0-only
 This program is free software; you can redistribute it and/or modify it
 under the terms of the GNU General Public License version 2 as published by
 the Free Software Foundation.
 .
 On Debian systems the full text of the GNU General Public License version 2
 is in /usr/share/common-licenses/GPL-2.
";

/// The Debian changelog of a package built from this tree; dated with the last
/// commit, so the same tree gives the same file.
fn changelog(version: &str, release: &str) -> String {
    let date =
        output(
            Command::new("git")
                .current_dir(repo_root())
                .args(["log", "-1", "--format=%aD"]),
        )
        .ok()
        .map(|d| d.trim().to_owned())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "Fri, 27 Nov 2026 00:00:00 +0000".to_owned());
    format!(
        "kmemlab ({version}) unstable; urgency=medium\n\
         \n  * Built by `cargo xtask dist` from the kmemlab tree, with kmemlab.ko\n    \
         for Linux {release}.\n\
         \n -- {MAINTAINER}  {date}\n"
    )
}

/// Writes `text` gzip-compressed (`gzip -9n`, as dh_compress does) to `dest`.
fn write_gz(dest: &Path, text: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::process::Stdio;
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)?;
    }
    let file = fs::File::create(dest)?;
    let mut child = Command::new("gzip")
        .args(["-9", "-n", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::from(file))
        .spawn()
        .context("failed to start gzip")?;
    child
        .stdin
        .take()
        .context("gzip has no stdin")?
        .write_all(text)?;
    ensure!(child.wait()?.success(), "gzip failed on {}", dest.display());
    fs::set_permissions(dest, fs::Permissions::from_mode(0o644))?;
    Ok(())
}

/// The overlays shipped, as (source in dts/, installed name).
const OVERLAYS: &[(&str, &str)] = &[
    ("rpi4-button.dtso", "kmemlab-rpi4.dtbo"),
    ("rpi5-button.dtso", "kmemlab-rpi5.dtbo"),
    ("qemu-virt.dtso", "kmemlab-qemu-virt.dtbo"),
];

fn version() -> Result<String> {
    let manifest = fs::read_to_string(repo_root().join("Cargo.toml"))?;
    manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .map(str::to_owned)
        .context("no version in the workspace Cargo.toml")
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

/// The prerm: on removal (not on upgrade), nothing of the package keeps running: the
/// unit is stopped and the module unloaded. `rmmod`, not `modprobe -r`, which would also
/// unload `uio` when nothing else uses it, though the package did not load it. Skipped
/// in a chroot, where /sys/module is the host's.
const PRERM: &str = "#!/bin/sh
# kmemlab prerm: on removal, stop kmemlabd and unload kmemlab.ko (an upgrade keeps both).
set -e
if [ \"$1\" = remove ]; then
    if [ -d /run/systemd/system ]; then
        systemctl stop kmemlabd.service || true
    fi
    if ! ischroot -t && [ -e /sys/module/kmemlab ]; then
        rmmod kmemlab || echo \"kmemlab: the module is in use and stays loaded until it is unused and unloaded (rmmod kmemlab) or the next boot\" >&2
    fi
fi
exit 0
";

/// The postrm: the module's dependency map, udev's rules and systemd's units without
/// the package's files; on purge also the daemon's logs (Debian Policy 10.8: removed on
/// purge, not on removal) and an `systemctl enable`'s link. The group stays: files
/// elsewhere (a copy of a log, a user's script) may still carry its gid, and a group id
/// given again to another group would hand them over.
fn postrm(release: &str) -> String {
    format!(
        "#!/bin/sh
# kmemlab postrm: forget the module, the udev rule and the unit; on purge, the logs.
set -e
case \"$1\" in
remove|purge)
    if command -v depmod >/dev/null && [ -d \"$DPKG_ROOT/lib/modules/{release}\" ]; then
        depmod -a {release} || true
    fi
    if command -v udevadm >/dev/null; then
        udevadm control --reload-rules || true
    fi
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload || true
    fi
    ;;
esac
if [ \"$1\" = purge ]; then
    rm -rf \"$DPKG_ROOT/var/log/kmemlab\" \"$DPKG_ROOT/var/log/private/kmemlab\"
    rm -f \"$DPKG_ROOT/etc/systemd/system/multi-user.target.wants/kmemlabd.service\"
fi
exit 0
"
    )
}

/// kmemlab.ko built for Debian's kernel `release` (`cargo xtask module --debian`, in
/// the debian-build branch's `debian.rs`).
fn debian_module(release: &str) -> Result<PathBuf> {
    crate::debian::module(&crate::debian::Release::parse(release)?)
}

/// The vermagic's first word of a module: the kernel release it was built for.
fn module_release(ko: &Path) -> Result<String> {
    let vermagic = output(
        Command::new(sbin("modinfo"))
            .args(["-F", "vermagic"])
            .arg(ko),
    )?;
    vermagic
        .split_whitespace()
        .next()
        .map(str::to_owned)
        .with_context(|| format!("{} has no vermagic", ko.display()))
}

/// Builds both packages into `target/dist/` (`target/dist/RELEASE/` for a Debian kernel).
pub fn dist(tc: &Toolchain, target: Target) -> Result<Packages> {
    let root = repo_root();
    let upstream = version()?;
    let version = format!("{upstream}-{DEBIAN_REVISION}");
    let (ko, release, arch, out, module_dir, depends) = match target {
        Target::Kdir(kdir) => {
            let kdir_path = match kdir {
                Some(dir) => dir.to_path_buf(),
                None => build::kernel(tc, Flavor::Test)?.dir,
            };
            let kernel = build::check_kdir(&kdir_path)?;
            ensure!(
                kernel.arch == "arm64",
                "the packages are for arm64 boards; {} is an {} kernel",
                kdir_path.display(),
                kernel.arch
            );
            let ko = build::module(tc, Some(&kdir_path), Flavor::Test)?;
            (
                ko,
                kernel.release,
                "arm64",
                root.join("target/dist"),
                "extra",
                None,
            )
        }
        Target::Debian { release, module } => {
            let arch = stock::arch_of(release)?;
            let ko = match module {
                Some(ko) => ko.to_path_buf(),
                None => debian_module(release)?,
            };
            let built_for = module_release(&ko)?;
            ensure!(
                built_for == release,
                "{} is built for {built_for}, not for {release}",
                ko.display()
            );
            (
                ko,
                release.to_owned(),
                arch,
                root.join("target/dist").join(release),
                "updates",
                Some(format!("linux-image-{release}")),
            )
        }
    };
    // Static binaries for the package's architecture: the guest builds, which are the same.
    let user = if arch == "arm64" {
        build::userspace(tc)?
    } else {
        build::userspace_amd64()?
    };
    let (kmemlabd, kmemlabctl) = (user.kmemlabd, user.kmemlabctl);

    let stage = out.join(format!("kmemlab_{version}_{arch}"));
    let _ = fs::remove_dir_all(&stage);
    step(format!("staging the package in {}", stage.display()));
    install(&kmemlabd, &stage.join("usr/bin/kmemlabd"), 0o755)?;
    install(&kmemlabctl, &stage.join("usr/bin/kmemlabctl"), 0o755)?;
    let module_path = format!("/lib/modules/{release}/{module_dir}/kmemlab.ko");
    install(&ko, &stage.join(&module_path[1..]), 0o644)?;
    let systemd = root.join("systemd");
    install(
        &systemd.join("kmemlabd.service"),
        &stage.join("usr/lib/systemd/system/kmemlabd.service"),
        0o644,
    )?;
    install(
        &systemd.join("kmemlabd-vfio.service"),
        &stage.join("usr/lib/systemd/system/kmemlabd-vfio.service"),
        0o644,
    )?;
    install(
        &systemd.join("kmemlab-vfio-bind"),
        &stage.join("usr/sbin/kmemlab-vfio-bind"),
        0o755,
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
    // The ABI for C (and Python through ctypes or cffi), where include/uapi headers go.
    let uapi = root.join("kmod-helper/uapi");
    install(
        &uapi.join("kmemlab.h"),
        &stage.join("usr/include/linux/kmemlab.h"),
        0o644,
    )?;
    let doc = stage.join("usr/share/doc/kmemlab");
    install(&root.join("README.md"), &doc.join("README.md"), 0o644)?;
    install(
        &uapi.join("examples/kmemlab-c-client.c"),
        &doc.join("examples/kmemlab-c-client.c"),
        0o644,
    )?;
    write(&doc.join("copyright"), COPYRIGHT, 0o644)?;
    write_gz(
        &doc.join("changelog.Debian.gz"),
        changelog(&version, &release).as_bytes(),
    )?;
    for (page, section) in MAN_PAGES {
        let text = fs::read(root.join("man").join(page))?;
        write_gz(
            &stage.join(format!("usr/share/man/{section}/{page}.gz")),
            &text,
        )?;
    }
    for (path, text) in docs::kmemlabctl_pages()? {
        write_gz(&stage.join(path), &text)?;
    }
    for (shell, path) in docs::COMPLETIONS {
        let text = String::from_utf8(docs::completion(*shell))?;
        write(&stage.join(path), &text, 0o644)?;
    }
    write(
        &stage.join("usr/share/lintian/overrides/kmemlab"),
        LINTIAN_OVERRIDES,
        0o644,
    )?;

    // The tarball: the same tree.
    let tarball = out.join(format!("kmemlab-{upstream}-{arch}-linux-{release}.tar.gz"));
    run(Command::new("tar")
        .args(["--owner=0", "--group=0", "--numeric-owner", "-czf"])
        .arg(&tarball)
        .arg("-C")
        .arg(&stage)
        .arg("."))?;

    // The Debian package.
    let installed_kib = dir_size(&stage)? / 1024;
    let depends_line = depends
        .as_ref()
        .map(|d| format!("Depends: {d}\n"))
        .unwrap_or_default();
    let control = format!(
        "Package: kmemlab\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: {MAINTAINER}\n\
         Installed-Size: {installed_kib}\n\
         {depends_line}\
         Section: kernel\n\
         Priority: optional\n\
         Description: watch the kernel's memory allocators at work, one button press at a time\n \
         kmemlabd allocates and frees kernel memory (kmalloc, vmalloc,\n \
         dma_alloc_coherent) through the kmemlab module on each press of a GPIO\n \
         button, and logs each result as a JSON line. The module in this package\n \
         is built for Linux {release}. C programs reach the module through\n \
         <linux/kmemlab.h>, its ioctl ABI.\n"
    );
    write(&stage.join("DEBIAN/control"), &control, 0o644)?;
    write(&stage.join("DEBIAN/postinst"), &postinst(&release), 0o755)?;
    write(&stage.join("DEBIAN/prerm"), PRERM, 0o755)?;
    write(&stage.join("DEBIAN/postrm"), &postrm(&release), 0o755)?;
    let md5sums = output(Command::new("sh").current_dir(&stage).args([
        "-c",
        "find . -type f ! -path './DEBIAN/*' -printf '%P\\0' | LC_ALL=C sort -z | xargs -0 md5sum",
    ]))?;
    write(&stage.join("DEBIAN/md5sums"), &md5sums, 0o644)?;
    write(
        &stage.join("DEBIAN/conffiles"),
        "/etc/kmemlab/kmemlabd.conf\n",
        0o644,
    )?;
    let deb = out.join(format!("kmemlab_{version}_{arch}.deb"));
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&stage)
        .arg(&deb))?;
    Ok(Packages {
        tarball,
        deb,
        release,
        module_path,
        depends,
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

/// Makes `work/rootfs` afresh as an empty dpkg root (dpkg's state folders) with the
/// folders `extra` in it too; returns its path.
fn empty_dpkg_root(work: &Path, extra: &[&str]) -> Result<PathBuf> {
    let rootfs = work.join("rootfs");
    let _ = fs::remove_dir_all(work);
    let state = [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
    ];
    for dir in state.iter().chain(extra) {
        fs::create_dir_all(rootfs.join(dir))?;
    }
    Ok(rootfs)
}

/// Installs the .deb into an empty arm64 Debian root folder with `dpkg --root` and checks
/// every file and its mode; runs the postinst against stand-ins for the group tools.
pub fn install_test(pkgs: &Packages, work: &Path) -> Result<()> {
    let rootfs = empty_dpkg_root(work, &[])?;
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
        (pkgs.module_path.clone(), 0o644),
        ("/usr/lib/systemd/system/kmemlabd.service".to_owned(), 0o644),
        (
            "/usr/lib/systemd/system/kmemlabd-vfio.service".to_owned(),
            0o644,
        ),
        ("/usr/sbin/kmemlab-vfio-bind".to_owned(), 0o755),
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
        ("/usr/include/linux/kmemlab.h".to_owned(), 0o644),
        ("/usr/share/doc/kmemlab/README.md".to_owned(), 0o644),
        (
            "/usr/share/doc/kmemlab/examples/kmemlab-c-client.c".to_owned(),
            0o644,
        ),
        ("/usr/share/doc/kmemlab/copyright".to_owned(), 0o644),
        (
            "/usr/share/doc/kmemlab/changelog.Debian.gz".to_owned(),
            0o644,
        ),
        ("/usr/share/man/man8/kmemlabd.8.gz".to_owned(), 0o644),
        ("/usr/share/man/man1/kmemlabctl.1.gz".to_owned(), 0o644),
        (
            "/usr/share/man/man1/kmemlabctl-alloc.1.gz".to_owned(),
            0o644,
        ),
        ("/usr/share/lintian/overrides/kmemlab".to_owned(), 0o644),
        ("/var/lib/dpkg/info/kmemlab.postinst".to_owned(), 0o755),
        ("/var/lib/dpkg/info/kmemlab.prerm".to_owned(), 0o755),
        ("/var/lib/dpkg/info/kmemlab.postrm".to_owned(), 0o755),
    ]
    .into_iter()
    .chain(
        docs::COMPLETIONS
            .iter()
            .map(|(_, path)| (format!("/{path}"), 0o644)),
    )
    .collect();
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
    let header = fs::read(rootfs.join("usr/include/linux/kmemlab.h"))?;
    ensure!(
        header == fs::read(repo_root().join("kmod-helper/uapi/kmemlab.h"))?,
        "/usr/include/linux/kmemlab.h is not kmod-helper/uapi/kmemlab.h"
    );
    let tar = output(Command::new("tar").arg("-tzf").arg(&pkgs.tarball))?;
    let generated: Vec<String> = docs::kmemlabctl_pages()?
        .into_iter()
        .map(|(path, _)| path)
        .chain(docs::COMPLETIONS.iter().map(|(_, p)| (*p).to_owned()))
        .collect();
    for path in [
        "usr/include/linux/kmemlab.h",
        "usr/share/man/man8/kmemlabd.8.gz",
    ]
    .into_iter()
    .chain(generated.iter().map(String::as_str))
    {
        ensure!(
            tar.lines().any(|l| l == format!("./{path}")),
            "{} lacks {path}",
            pkgs.tarball.display()
        );
        ensure!(
            listed.lines().any(|l| l == format!("/{path}")),
            "dpkg -L kmemlab does not list /{path}"
        );
    }
    man_pages_are_valid(&rootfs)?;
    let bin = output(Command::new("file").arg(rootfs.join("usr/bin/kmemlabd"))).unwrap_or_default();
    if !bin.is_empty() {
        ensure!(
            bin.contains("aarch64") && bin.contains("statically linked"),
            "kmemlabd is not a static arm64 binary: {bin}"
        );
    }
    let ko = fs::read(rootfs.join(pkgs.module_path.trim_start_matches('/')))?;
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

    // The postrm's purge, in the dpkg root ($DPKG_ROOT): the logs that systemd's
    // LogsDirectory= made for the dynamic user go, the module map is made again.
    let logs = rootfs.join("var/log/private/kmemlab");
    fs::create_dir_all(&logs)?;
    fs::write(logs.join("kmemlabd.jsonl"), "{}\n")?;
    let link = rootfs.join("var/log/kmemlab");
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink("private/kmemlab", &link)?;
    fs::create_dir_all(rootfs.join("lib/modules").join(&pkgs.release))?;
    fs::write(&calls, "")?;
    run(Command::new("sh")
        .arg(rootfs.join("var/lib/dpkg/info/kmemlab.postrm"))
        .arg("purge")
        .env("PATH", format!("{}:/usr/bin:/bin", stubs.display()))
        .env("CALLS", &calls)
        .env("DPKG_ROOT", &rootfs))?;
    let log = fs::read_to_string(&calls)?;
    ensure!(
        !logs.exists() && link.symlink_metadata().is_err(),
        "postrm purge left the daemon's logs in {}",
        rootfs.join("var/log").display()
    );
    ensure!(
        log.contains(&format!("depmod -a {}", pkgs.release)),
        "postrm did not run depmod for {} (the map would still name kmemlab.ko):\n{log}",
        pkgs.release
    );
    Ok(())
}

/// Every man page the package installed is gzip'd troff that `man` formats without a
/// warning (groff's `-ww`, through man-db's `--warnings`), starting with its `.TH` line
/// for the right section.
fn man_pages_are_valid(rootfs: &Path) -> Result<()> {
    let mut checked = 0;
    for section in ["man1", "man8"] {
        let dir = rootfs.join("usr/share/man").join(section);
        for entry in fs::read_dir(&dir).with_context(|| format!("no {}", dir.display()))? {
            let path = entry?.path();
            let text = output(Command::new("gzip").arg("-dc").arg(&path))
                .with_context(|| format!("{} is not gzip", path.display()))?;
            let number = &section[3..];
            ensure!(
                text.lines()
                    .find(|l| l.starts_with(".TH "))
                    .is_some_and(|th| th.split_whitespace().nth(2) == Some(number)),
                "{} has no .TH line for section {number}",
                path.display()
            );
            let rendered = Command::new("man")
                .args(["--warnings=w", "-l", "-Tutf8"])
                .arg(&path)
                .env("MANWIDTH", "80")
                .output()
                .context("failed to run man")?;
            let warnings = String::from_utf8_lossy(&rendered.stderr);
            ensure!(
                rendered.status.success()
                    && warnings.trim().is_empty()
                    && !rendered.stdout.is_empty(),
                "man -l {} failed or warned:\n{warnings}",
                path.display()
            );
            checked += 1;
        }
    }
    ensure!(checked >= 2, "only {checked} man pages installed");
    Ok(())
}

/// Runs lintian on the .deb and prints what it reports; fails when it reports an error
/// (or cannot run).
pub fn lintian(deb: &Path) -> Result<()> {
    step(format!("lintian {}", deb.display()));
    let out = Command::new("lintian")
        .args(["--fail-on", "none", "--display-info"])
        .arg(deb)
        .output()
        .context("failed to run lintian (apt install lintian)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let errors = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success(),
        "lintian could not check {}: {errors}",
        deb.display()
    );
    for line in text.lines() {
        eprintln!("    {line}");
    }
    let tags = lintian_errors(&text);
    if !tags.is_empty() {
        bail!(
            "lintian reports {} error(s) on {}:\n{}",
            tags.len(),
            deb.display(),
            tags.join("\n")
        );
    }
    let counts = ["W: ", "I: "].map(|p| text.lines().filter(|l| l.starts_with(p)).count());
    step(format!(
        "lintian: no errors, {} warning(s), {} info tag(s)",
        counts[0], counts[1]
    ));
    Ok(())
}

/// lintian's error lines (`E: package: tag ...`).
fn lintian_errors(report: &str) -> Vec<&str> {
    report.lines().filter(|l| l.starts_with("E: ")).collect()
}

/// The package for Debian's kernel installs into an empty (merged-/usr) dpkg root beside
/// Debian's own `linux-base-RELEASE`, `linux-modules-RELEASE` and `linux-headers-RELEASE`
/// (`debian_debs`), and `depmod -b ROOT RELEASE` resolves kmemlab.ko: its modules.dep
/// line lists Debian's uio.ko, and depmod, checking against Debian's Module.symvers,
/// reports nothing about kmemlab.ko (no unknown symbol).
pub fn debian_install_test(pkgs: &Packages, debian_debs: &[PathBuf], work: &Path) -> Result<()> {
    let release = &pkgs.release;
    let rootfs = empty_dpkg_root(work, &["usr/lib", "usr/bin", "usr/sbin"])?;
    // Debian 13 is merged-/usr: /lib/modules is /usr/lib/modules.
    for (link, to) in [("lib", "usr/lib"), ("bin", "usr/bin"), ("sbin", "usr/sbin")] {
        std::os::unix::fs::symlink(to, rootfs.join(link))?;
    }
    fs::write(rootfs.join("var/lib/dpkg/status"), "")?;
    fs::write(rootfs.join("var/lib/dpkg/arch"), "arm64\n")?;
    let depends = output(
        Command::new("dpkg-deb")
            .args(["-f"])
            .arg(&pkgs.deb)
            .arg("Depends"),
    )?;
    let want = format!("linux-image-{release}");
    ensure!(
        depends.trim() == want && pkgs.depends.as_deref() == Some(want.as_str()),
        "the package depends on `{}`, want {want}",
        depends.trim()
    );
    step(format!(
        "installing Debian's kernel packages and kmemlab into an empty dpkg root ({release})"
    ));
    for deb in debian_debs.iter().chain([&pkgs.deb]) {
        run(Command::new("dpkg")
            .arg(format!("--root={}", rootfs.display()))
            .args(["--force-architecture", "--force-not-root", "--unpack"])
            .arg(deb))?;
    }
    let listed = output(
        Command::new("dpkg")
            .arg(format!("--root={}", rootfs.display()))
            .args(["-L", "kmemlab"]),
    )?;
    ensure!(
        listed.lines().any(|l| l == pkgs.module_path),
        "dpkg -L kmemlab does not list {}",
        pkgs.module_path
    );
    let modules = rootfs.join(format!("usr/lib/modules/{release}"));
    ensure!(
        modules.join("updates/kmemlab.ko").is_file(),
        "kmemlab.ko is not in {}/updates",
        modules.display()
    );
    let uio = modules.join("kernel/drivers/uio");
    ensure!(
        fs::read_dir(&uio)
            .map(|mut d| d
                .any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("uio.ko"))))
            .unwrap_or(false),
        "Debian's modules package put no uio.ko in {}",
        uio.display()
    );
    let _ = fs::remove_file(modules.join("modules.dep"));

    let symvers = rootfs.join(format!("usr/src/linux-headers-{release}/Module.symvers"));
    ensure!(
        symvers.is_file(),
        "Debian's headers package put no {}",
        symvers.display()
    );
    step(format!("depmod -b ROOT -e -E Module.symvers {release}"));
    let out = Command::new(sbin("depmod"))
        .arg("-b")
        .arg(&rootfs)
        .arg("-e")
        .arg("-E")
        .arg(&symvers)
        .arg(release)
        .output()
        .context("failed to run depmod (apt install kmod)")?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(out.status.success(), "depmod failed:\n{report}");
    // Debian's own modules resolve; any line about kmemlab.ko is a failure ("needs
    // unknown symbol" when it was built for another kernel or with another compiler).
    let complaints: Vec<&str> = report.lines().filter(|l| l.contains("kmemlab")).collect();
    ensure!(
        complaints.is_empty(),
        "depmod against Debian's {release} Module.symvers: {} line(s) about kmemlab.ko, \
         the first ones:\n{}",
        complaints.len(),
        complaints[..complaints.len().min(8)].join("\n")
    );
    let dep =
        fs::read_to_string(modules.join("modules.dep")).context("depmod wrote no modules.dep")?;
    let line = kmemlab_dep_line(&dep).context("modules.dep has no line for updates/kmemlab.ko")?;
    eprintln!("    modules.dep: {line}");
    ensure!(
        depends_on_uio(line),
        "modules.dep does not give kmemlab.ko its dependency on uio: {line}"
    );
    let uio_line = dep
        .lines()
        .find(|l| l.starts_with("kernel/drivers/uio/uio.ko"))
        .context("modules.dep has no line for Debian's uio.ko")?;
    eprintln!("    modules.dep: {uio_line}");
    Ok(())
}

/// A program from /sbin that a user's PATH may lack.
fn sbin(program: &str) -> PathBuf {
    ["/usr/sbin", "/sbin"]
        .iter()
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(program))
}

/// The modules.dep line of kmemlab.ko in `updates/`.
fn kmemlab_dep_line(dep: &str) -> Option<&str> {
    dep.lines().find(|l| l.starts_with("updates/kmemlab.ko:"))
}

/// Whether a modules.dep line lists Debian's uio module (`uio.ko`, `uio.ko.xz`, ...).
fn depends_on_uio(line: &str) -> bool {
    line.split_once(':').is_some_and(|(_, deps)| {
        deps.split_whitespace().any(|d| {
            d.rsplit('/')
                .next()
                .is_some_and(|name| name == "uio.ko" || name.starts_with("uio.ko."))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uio_dependency_is_found_by_file_name() {
        let dep = "kernel/drivers/uio/uio.ko.xz:\n\
                   kernel/drivers/uio/uio_pci_generic.ko.xz: kernel/drivers/uio/uio.ko.xz\n\
                   updates/kmemlab.ko: kernel/drivers/uio/uio.ko.xz\n";
        let line = kmemlab_dep_line(dep).unwrap();
        assert!(depends_on_uio(line));
        assert!(!depends_on_uio("updates/kmemlab.ko:"));
        assert!(!depends_on_uio(
            "updates/kmemlab.ko: kernel/drivers/uio/uio_pci_generic.ko.xz"
        ));
        assert!(depends_on_uio("updates/kmemlab.ko: updates/uio.ko"));
        assert_eq!(kmemlab_dep_line("extra/kmemlab.ko: x\n"), None);
    }

    #[test]
    fn lintian_errors_are_the_e_lines() {
        let report = "E: kmemlab: no-changelog usr/share/doc/kmemlab/changelog.Debian.gz\n\
                      W: kmemlab: no-manual-page [usr/bin/kmemlabd]\n\
                      N: E: is not an error here\n";
        assert_eq!(lintian_errors(report).len(), 1);
        assert!(lintian_errors("W: kmemlab: x\nI: kmemlab: y\n").is_empty());
    }

    #[test]
    fn changelog_names_the_version_and_the_maintainer() {
        let text = changelog("0.1.0-1", "7.3.4+deb13-arm64");
        assert!(text.starts_with("kmemlab (0.1.0-1) unstable; urgency=medium\n"));
        assert!(text.contains("\n -- kmemlab maintainers <"));
        assert!(text.contains("7.3.4+deb13-arm64"));
    }
}
