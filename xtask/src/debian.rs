//! Debian's stock 7.3 kernels: `cargo xtask module --debian RELEASE` and the pieces
//! `--kernel debian-arm64` boots.
//!
//! Debian's headers lack the Rust metadata an out-of-tree Rust module needs. A cached
//! trixie root (debootstrap) has the compiler Debian built the kernels with; Debian's
//! kernel source and headers of the release go into it, and
//! `kmod-helper/debian/build-for-debian.sh` (the script a board user runs natively)
//! rebuilds the metadata and the module there, under chroot.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::setup::{
    apt_packages, root_command, PrivateApt, BACKPORTS_SUITE, KERNEL_DEB_VERSION, KERNEL_PACKAGE,
};
use crate::util::{cache_dir, repo_root, run, run_logged, step};

/// Debian's ABI name of the 7.3 kernels whose version is [`KERNEL_DEB_VERSION`].
const DEBIAN_ABI: &str = "7.3.4+deb13";
/// The arm64 release `--kernel debian-arm64` boots.
pub const ARM64_RELEASE: &str = "7.3.4+deb13-arm64";
/// The amd64 release (`module --debian` only, for now).
pub const AMD64_RELEASE: &str = "7.3.4+deb13-amd64";
/// Guest memory for Debian's kernel (256 MiB is too little for its size and CMA).
pub const MEMORY_MB: u32 = 1024;
/// The Debian release whose compiler built those kernels (rustc 1.85.1, GCC 14).
pub const TRIXIE: &str = "trixie";
/// What the trixie root holds: the kernel's compilers (native, arm64 and, for arm64's
/// 32-bit vDSO, armhf), pahole for BTF, and the kernel build's tools.
const ROOT_PACKAGES: &[&str] = &[
    "rustc",
    "rust-src",
    "bindgen",
    "gcc",
    "gcc-aarch64-linux-gnu",
    "gcc-arm-linux-gnueabihf",
    "dwarves",
    "make",
    "flex",
    "bison",
    "bc",
    "libelf-dev",
    "libssl-dev",
    "python3",
    "cpio",
    "kmod",
    "xz-utils",
    "libc6-dev",
];
/// The build script, relative to the repository (and to the root's copy of it).
const SCRIPT: &str = "kmod-helper/debian/build-for-debian.sh";
/// Where the repository's kmod-helper goes inside the root.
const ROOT_MODULE_SRC: &str = "kmemlab/kmod-helper";
/// The script's cache inside the root.
const ROOT_WORK: &str = "var/cache/kmemlab";

/// A Debian kernel release kmemlab builds for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Release {
    /// `uname -r`, e.g. `7.3.4+deb13-arm64`.
    pub name: String,
    /// Debian's architecture: `arm64` or `amd64`.
    pub arch: &'static str,
}

impl Release {
    pub fn parse(name: &str) -> Result<Self> {
        let arch = match name
            .strip_prefix(DEBIAN_ABI)
            .and_then(|s| s.strip_prefix('-'))
        {
            Some("arm64") => "arm64",
            Some("amd64") => "amd64",
            _ => bail!(
                "unsupported Debian kernel release `{name}`: kmemlab builds for \
                 {DEBIAN_ABI}-arm64 and {DEBIAN_ABI}-amd64 (Debian's linux-image packages \
                 {KERNEL_DEB_VERSION} in {BACKPORTS_SUITE})"
            ),
        };
        Ok(Self {
            name: name.to_owned(),
            arch,
        })
    }

    /// The apt architecture option for downloads (`None`: the host's, amd64).
    fn apt_arch(&self) -> Option<&'static str> {
        (self.arch != "amd64").then_some(self.arch)
    }

    fn apt_lists(&self) -> String {
        format!("backports-{}", self.arch)
    }
}

/// Debian's kernel of a release, unpacked in the cache.
#[derive(Clone, Debug)]
pub struct DebianKernel {
    /// `vmlinuz` (on arm64 a plain `Image`).
    pub image: PathBuf,
    /// Debian's uio.ko, decompressed (busybox insmod takes no .xz).
    pub uio: PathBuf,
}

fn debian_dir(cache: &Path) -> PathBuf {
    cache.join("debian")
}

/// The trixie amd64 root with Debian's kernel compilers (cached).
fn trixie_root(cache: &Path) -> Result<PathBuf> {
    let dir = debian_dir(cache);
    let root = dir.join(format!("root-{TRIXIE}-amd64"));
    let stamp = dir.join(format!("root-{TRIXIE}-amd64.complete"));
    let recipe = ROOT_PACKAGES.join(",");
    if fs::read_to_string(&stamp).is_ok_and(|v| v == recipe) && root.join("usr/bin/rustc").exists()
    {
        return Ok(root);
    }
    apt_packages()?;
    let (uri, keyring) = PrivateApt::mirror()?;
    step(format!(
        "debootstrap: a {TRIXIE} amd64 root with Debian's kernel compilers in {} (a few minutes)",
        root.display()
    ));
    fs::create_dir_all(&dir)?;
    let partial = dir.join(format!("root-{TRIXIE}-amd64.partial"));
    let _ = run(root_command("rm").arg("-rf").arg(&partial));
    let mut cmd = root_command("debootstrap");
    cmd.args(["--arch=amd64", "--variant=minbase"])
        .arg(format!("--include={}", ROOT_PACKAGES.join(",")));
    if Path::new(&keyring).is_file() {
        cmd.arg(format!("--keyring={keyring}"));
    }
    cmd.arg(TRIXIE).arg(&partial).arg(&uri);
    run_logged(&mut cmd, &dir.join("debootstrap.log")).with_context(|| {
        format!(
            "debootstrap could not make a {TRIXIE} root (it needs Debian's {TRIXIE} suite \
             with the packages {})",
            ROOT_PACKAGES.join(" ")
        )
    })?;
    let _ = run(root_command("rm").arg("-rf").arg(&root));
    fs::rename(&partial, &root)?;
    fs::write(&stamp, recipe)?;
    Ok(root)
}

/// Downloads Debian's packages of the release (cached): the source and headers go into
/// the root (where the board has them: /usr/src), the image and modules into the cache.
fn kernel_packages(cache: &Path, root: &Path, release: &Release) -> Result<PathBuf> {
    let dir = debian_dir(cache);
    let unpacked = dir.join(format!("kernel-{}", release.name));
    let stamp = dir.join(format!("kernel-{}.complete", release.name));
    let in_root = root.join(format!("usr/src/linux-headers-{}/.config", release.name));
    if fs::read_to_string(&stamp).is_ok_and(|v| v == KERNEL_DEB_VERSION)
        && in_root.is_file()
        && root.join("usr/src/linux-source-7.3.tar.xz").is_file()
    {
        return Ok(unpacked);
    }
    step(format!(
        "fetching Debian's {} packages {KERNEL_DEB_VERSION} from {BACKPORTS_SUITE}",
        release.name
    ));
    let mut apt = PrivateApt::new(cache);
    let lists = release.apt_lists();
    apt.update(&lists, BACKPORTS_SUITE, release.apt_arch())?;
    let debs = dir.join(format!("debs-{}", release.name));
    let _ = fs::remove_dir_all(&debs);
    let get = |pkg: &str| -> Result<PathBuf> {
        apt.download(
            &lists,
            &format!("{pkg}={KERNEL_DEB_VERSION}"),
            release.apt_arch(),
            &debs,
        )
        .with_context(|| {
            format!(
                "Debian's {BACKPORTS_SUITE} has no {pkg} {KERNEL_DEB_VERSION} for {}",
                release.arch
            )
        })
    };
    for pkg in [
        KERNEL_PACKAGE.to_owned(),
        format!("linux-headers-{}", release.name),
        format!("linux-headers-{DEBIAN_ABI}-common"),
    ] {
        let deb = get(&pkg)?;
        run(root_command("dpkg-deb").arg("-x").arg(&deb).arg(root))?;
    }
    let _ = fs::remove_dir_all(&unpacked);
    fs::create_dir_all(&unpacked)?;
    for pkg in [
        format!("linux-binary-{}", release.name),
        format!("linux-modules-{}", release.name),
    ] {
        let deb = get(&pkg)?;
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    }
    if !in_root.is_file() {
        bail!(
            "linux-headers-{} holds no {}",
            release.name,
            in_root.display()
        );
    }
    let _ = fs::remove_dir_all(&debs);
    fs::write(&stamp, KERNEL_DEB_VERSION)?;
    Ok(unpacked)
}

/// The unpacked kernel of a release: its image and uio.ko.
fn kernel_files(unpacked: &Path, release: &Release) -> Result<DebianKernel> {
    let modules = unpacked.join(format!("usr/lib/modules/{}", release.name));
    let image = modules.join("vmlinuz");
    if !image.is_file() {
        bail!("linux-binary-{} holds no {}", release.name, image.display());
    }
    let xz = modules.join("kernel/drivers/uio/uio.ko.xz");
    if !xz.is_file() {
        bail!("linux-modules-{} holds no {}", release.name, xz.display());
    }
    let uio = unpacked.join("uio.ko");
    if !uio.is_file() {
        let data = Command::new("xz")
            .arg("-dc")
            .arg(&xz)
            .output()
            .with_context(|| format!("failed to run xz -dc {}", xz.display()))?;
        if !data.status.success() {
            bail!("xz -dc {} failed", xz.display());
        }
        fs::write(&uio, data.stdout)?;
    }
    Ok(DebianKernel { image, uio })
}

/// Debian's kernel of `release` (downloaded once).
pub fn kernel(release: &Release) -> Result<DebianKernel> {
    let cache = cache_dir()?;
    let root = trixie_root(&cache)?;
    let unpacked = kernel_packages(&cache, &root, release)?;
    kernel_files(&unpacked, release)
}

/// Builds kmemlab.ko for Debian's `release` with Debian's compiler; returns its path.
pub fn module(release: &Release) -> Result<PathBuf> {
    let cache = cache_dir()?;
    let root = trixie_root(&cache)?;
    let unpacked = kernel_packages(&cache, &root, release)?;
    let kernel = kernel_files(&unpacked, release)?;

    // The module's source, fresh, where the root sees it.
    let src = root.join(ROOT_MODULE_SRC);
    run(root_command("rm").arg("-rf").arg(&src))?;
    fs::create_dir_all(&src)?;
    run(Command::new("cp")
        .arg("-a")
        .arg(repo_root().join("kmod-helper/."))
        .arg(&src))?;

    step(format!(
        "building kmemlab.ko for {} in the {TRIXIE} root ({SCRIPT})",
        release.name
    ));
    let root_arg = root.to_string_lossy().into_owned();
    // A private mount namespace: /proc and /dev for the chroot vanish with it.
    let inner = "mount --rbind /dev \"$1/dev\" && mount -t proc proc \"$1/proc\" && shift && \
                 exec chroot \"$@\"";
    let log = debian_dir(&cache).join(format!("build-{}.log", release.name));
    let mut cmd = root_command("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        inner,
        "sh",
    ])
    .arg(&root_arg)
    .arg(&root_arg)
    .args([
        "/usr/bin/env",
        "-i",
        "HOME=/root",
        "PATH=/usr/bin:/bin:/usr/sbin:/sbin",
    ])
    .args([
        "sh",
        &format!("/{ROOT_MODULE_SRC}/debian/build-for-debian.sh"),
    ])
    .args(["--release", &release.name])
    .arg("--work")
    .arg(format!("/{ROOT_WORK}"))
    .arg("--module")
    .arg(format!("/{ROOT_MODULE_SRC}"))
    .args(["--jobs", &crate::util::jobs().to_string()]);
    run_logged(&mut cmd, &log)?;
    let text = fs::read_to_string(&log)?;
    let inside = text
        .lines()
        .last()
        .filter(|l| l.ends_with("kmemlab.ko"))
        .with_context(|| format!("{SCRIPT} printed no module path (log: {})", log.display()))?;
    let built = root.join(inside.trim_start_matches('/'));
    let out = cache
        .join("module")
        .join(format!("debian-{}", release.name));
    fs::create_dir_all(&out)?;
    let ko = out.join("kmemlab.ko");
    fs::copy(&built, &ko).with_context(|| format!("failed to copy {}", built.display()))?;

    // Checked here too: the script checks against /lib/modules, which the root lacks.
    let ours = vermagic(&ko)?;
    let debians = vermagic(&kernel.uio)?;
    if ours != debians {
        bail!(
            "kmemlab.ko's vermagic `{ours}` differs from that of Debian's uio.ko of {} \
             (`{debians}`): it would not load",
            release.name
        );
    }
    step(format!("vermagic `{ours}`, the same as Debian's uio.ko"));
    Ok(ko)
}

/// The `vermagic=` value of a module's .modinfo section.
pub fn vermagic(ko: &Path) -> Result<String> {
    let data = fs::read(ko).with_context(|| format!("failed to read {}", ko.display()))?;
    vermagic_of(&data).with_context(|| format!("{} has no vermagic", ko.display()))
}

fn vermagic_of(data: &[u8]) -> Option<String> {
    let key = b"vermagic=";
    let start = data.windows(key.len()).position(|w| w == key)? + key.len();
    let len = data[start..].iter().position(|&b| b == 0)?;
    String::from_utf8(data[start..start + len].to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_parse() {
        let r = Release::parse("7.3.4+deb13-arm64").expect("arm64");
        assert_eq!(r.arch, "arm64");
        assert_eq!(r.apt_arch(), Some("arm64"));
        let r = Release::parse("7.3.4+deb13-amd64").expect("amd64");
        assert_eq!(r.apt_arch(), None);
        assert!(Release::parse("7.3.4+deb13-armhf").is_err());
        assert!(Release::parse("7.2.9+deb13-arm64").is_err());
    }

    #[test]
    fn vermagic_is_read_up_to_its_nul() {
        let data =
            b"\0license=GPL\0vermagic=7.3.4+deb13-arm64 SMP preempt mod_unload aarch64\0name=x\0";
        assert_eq!(
            vermagic_of(data).as_deref(),
            Some("7.3.4+deb13-arm64 SMP preempt mod_unload aarch64")
        );
        assert_eq!(vermagic_of(b"license=GPL\0"), None);
    }
}
