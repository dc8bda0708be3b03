//! `cargo xtask setup`: idempotent bootstrap of everything the build needs.
//!
//! Everything that is downloaded or built lands in the cache folder (`util::cache_dir`),
//! so fresh clones reuse it. A step whose product is already there does nothing.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util::{cache_dir, have_program, output, run, run_logged, short_hash, step};

/// The pinned test kernel: Debian's `linux-source-7.3` package.
pub const KERNEL_PACKAGE: &str = "linux-source-7.3";
pub const KERNEL_DEB_VERSION: &str = "7.3.4-1~bpo13+1";
/// The suite that carries the kernel source and Debian's `rust-src` packages.
pub const BACKPORTS_SUITE: &str = "trixie-backports";
/// The suite the arm64 busybox comes from (the machine's own Debian release).
const ARM64_SUITE: &str = "bookworm";
/// bindgen-cli version installed into the cache (Linux 7.3 needs >= 0.71.1).
const BINDGEN_VERSION: &str = "0.73.2";
/// dtschema (devicetree binding validation) and yamllint from PyPI, for the tests.
const DTSCHEMA_PINS: &[&str] = &["dtschema==2026.9", "yamllint==1.38.0"];
/// libclang wheel from PyPI (Linux 7.3's bindgen needs libclang >= 17.0.1).
const LIBCLANG_VERSION: &str = "18.1.1";

/// Debian packages the host needs.
const APT_PACKAGES: &[&str] = &[
    "make",
    "gcc",
    "libc6-dev",
    "gcc-aarch64-linux-gnu",
    "libc6-dev-arm64-cross",
    "flex",
    "bison",
    "bc",
    "libelf-dev",
    "libssl-dev",
    "cpio",
    "kmod",
    "lintian",
    // The package test formats every man page with `man -l` (groff) to catch warnings.
    "man-db",
    "groff-base",
    "xz-utils",
    "python3",
    "python3-pip",
    "python3-venv",
    "python3-dev",
    "cpp",
    "qemu-system-arm",
    "qemu-system-x86",
    "device-tree-compiler",
    "systemd",
    "file",
    "debootstrap",
    // `vm --system`: the image's disk (mkfs.ext4 -d) and its copy-on-write copies.
    "e2fsprogs",
    "qemu-utils",
];

/// Where set-up put things.
#[derive(Clone, Debug)]
pub struct Toolchain {
    pub cache: PathBuf,
    pub kernel_src: PathBuf,
    pub bindgen_bin: PathBuf,
    pub libclang_dir: PathBuf,
    pub rust_lib_src: PathBuf,
    pub busybox: PathBuf,
    /// Whether the aarch64 std must be built from source (-Zbuild-std).
    pub build_std: bool,
}

impl Toolchain {
    /// Environment for `make` in the kernel tree (Rust support needs these).
    pub fn kernel_env(&self, cmd: &mut Command) {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![self.bindgen_bin.clone()];
        paths.extend(std::env::split_paths(&path));
        if let Ok(joined) = std::env::join_paths(paths) {
            cmd.env("PATH", joined);
        }
        cmd.env("LIBCLANG_PATH", &self.libclang_dir)
            .env("RUST_LIB_SRC", &self.rust_lib_src);
    }
}

/// Runs every set-up step and returns where things are.
pub fn setup() -> Result<Toolchain> {
    let cache = cache_dir()?;
    apt_packages()?;
    let rustc = rustc_version()?;
    let mut apt = PrivateApt::new(&cache);
    let kernel_src = kernel_source(&cache, &mut apt)?;
    let rust_src = rust_src(&cache, &mut apt, &rustc)?;
    let rust_lib_src = rust_src.join("library");
    let bindgen_bin = bindgen(&cache)?;
    let libclang_dir = libclang(&cache)?;
    let build_std = wire_rust_src(&rust_src)?;
    let busybox = busybox(&cache, &mut apt)?;
    Ok(Toolchain {
        cache,
        kernel_src,
        bindgen_bin,
        libclang_dir,
        rust_lib_src,
        busybox,
        build_std,
    })
}

fn is_root() -> bool {
    output(Command::new("id").arg("-u"))
        .map(|s| s.trim() == "0")
        .unwrap_or(false)
}

/// A command that runs as root: directly when we are root, else through sudo.
pub fn root_command(program: &str) -> Command {
    if is_root() || !have_program("sudo") {
        Command::new(program)
    } else {
        let mut cmd = Command::new("sudo");
        cmd.arg(program);
        cmd
    }
}

pub fn apt_packages() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|pkg| {
            let status = Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", pkg])
                .output();
            !matches!(status, Ok(out) if String::from_utf8_lossy(&out.stdout).contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    step(format!("installing Debian packages: {}", missing.join(" ")));
    let install = |update: bool| -> Result<()> {
        if update {
            run(root_command("apt-get").args(["update", "-q"]))?;
        }
        run(root_command("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing))
    };
    install(false).or_else(|_| install(true)).with_context(|| {
        format!(
            "could not install the Debian packages {}",
            missing.join(" ")
        )
    })
}

fn rustc_version() -> Result<String> {
    let text = output(Command::new("rustc").arg("--version"))?;
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    text.split_whitespace()
        .nth(1)
        .map(str::to_owned)
        .with_context(|| format!("cannot parse `rustc --version` output: {text}"))
}

/// apt with private lists and sources, so the system's apt state is never touched.
pub struct PrivateApt {
    root: PathBuf,
    updated: Vec<String>,
}

impl PrivateApt {
    pub fn new(cache: &Path) -> Self {
        Self {
            root: cache.join("apt"),
            updated: Vec::new(),
        }
    }

    /// The Debian mirror the machine already uses (never written into the repository).
    pub fn mirror() -> Result<(String, String)> {
        let deb822 = Path::new("/etc/apt/sources.list.d/debian.sources");
        let mut found = None;
        if let Ok(text) = fs::read_to_string(deb822) {
            let mut uri = None;
            let mut signed = None;
            for line in text.lines() {
                if let Some(v) = line.strip_prefix("URIs:") {
                    let v = v.trim().to_owned();
                    if !v.contains("security") && uri.is_none() {
                        uri = Some(v);
                    }
                } else if let Some(v) = line.strip_prefix("Signed-By:") {
                    signed.get_or_insert_with(|| v.trim().to_owned());
                }
            }
            if let Some(uri) = uri {
                found = Some((uri, signed.unwrap_or_default()));
            }
        }
        if found.is_none() {
            if let Ok(text) = fs::read_to_string("/etc/apt/sources.list") {
                for line in text.lines() {
                    let words: Vec<&str> = line.split_whitespace().collect();
                    if words.first() == Some(&"deb") {
                        if let Some(uri) = words.iter().find(|w| w.starts_with("http")) {
                            if !uri.contains("security") {
                                found = Some(((*uri).to_owned(), String::new()));
                                break;
                            }
                        }
                    }
                }
            }
        }
        let (uri, mut signed) = found.context(
            "cannot find the machine's Debian mirror in /etc/apt/sources.list.d/debian.sources \
             or /etc/apt/sources.list",
        )?;
        if signed.is_empty() {
            signed = "/usr/share/keyrings/debian-archive-keyring.gpg".to_owned();
        }
        Ok((uri, signed))
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn options(&self, name: &str, arch: Option<&str>) -> Vec<String> {
        let dir = self.dir(name);
        let mut opts = vec![
            format!(
                "-oDir::Etc::SourceList={}",
                dir.join("sources.list").display()
            ),
            "-oDir::Etc::SourceParts=/dev/null".to_owned(),
            format!("-oDir::State::Lists={}", dir.join("lists").display()),
            format!("-oDir::Cache={}", dir.join("cache").display()),
            "-oAPT::Sandbox::User=root".to_owned(),
            "-oDebug::NoLocking=1".to_owned(),
        ];
        if let Some(arch) = arch {
            opts.push(format!("-oAPT::Architecture={arch}"));
            opts.push(format!("-oAPT::Architectures={arch}"));
        }
        opts
    }

    /// Makes the private lists for `suite` (once per run).
    pub fn update(&mut self, name: &str, suite: &str, arch: Option<&str>) -> Result<()> {
        if self.updated.iter().any(|n| n == name) {
            return Ok(());
        }
        let (uri, signed) = Self::mirror()?;
        let dir = self.dir(name);
        fs::create_dir_all(dir.join("lists/partial"))?;
        fs::create_dir_all(dir.join("cache/archives/partial"))?;
        fs::write(
            dir.join("sources.list"),
            format!("deb [signed-by={signed}] {uri} {suite} main\n"),
        )?;
        step(format!("apt-get update ({suite}, private lists)"));
        run_logged(
            Command::new("apt-get")
                .args(self.options(name, arch))
                .arg("update"),
            &dir.join("update.log"),
        )
        .with_context(|| format!("cannot reach Debian's {suite} suite"))?;
        self.updated.push(name.to_owned());
        Ok(())
    }

    /// Versions of `pkg` the suite lists.
    fn versions(&self, name: &str, pkg: &str, arch: Option<&str>) -> Result<Vec<String>> {
        let text = output(
            Command::new("apt-cache")
                .args(self.options(name, arch))
                .args(["madison", pkg]),
        )?;
        Ok(text
            .lines()
            .filter_map(|l| l.split('|').nth(1).map(|v| v.trim().to_owned()))
            .collect())
    }

    /// Downloads `pkg=version` (or the newest `pkg`) into `dest`, returns the .deb path.
    pub fn download(
        &self,
        name: &str,
        spec: &str,
        arch: Option<&str>,
        dest: &Path,
    ) -> Result<PathBuf> {
        fs::create_dir_all(dest)?;
        let pkg = spec.split('=').next().unwrap_or(spec);
        run_logged(
            Command::new("apt-get")
                .current_dir(dest)
                .args(self.options(name, arch))
                .args(["download", spec]),
            &dest.join(format!("download-{pkg}.log")),
        )
        .with_context(|| format!("cannot download the Debian package {spec}"))?;
        fs::read_dir(dest)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.extension().is_some_and(|e| e == "deb")
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&format!("{pkg}_")))
            })
            .with_context(|| format!("apt-get download {spec} left no .deb in {}", dest.display()))
    }
}

/// Extracts a .deb into `dest` (a fresh folder), atomically via a temporary folder.
pub fn extract_deb(deb: &Path, dest: &Path) -> Result<()> {
    let tmp = dest.with_extension("partial");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&tmp))?;
    let _ = fs::remove_dir_all(dest);
    fs::rename(&tmp, dest)?;
    Ok(())
}

fn kernel_source(cache: &Path, apt: &mut PrivateApt) -> Result<PathBuf> {
    let src = cache.join("src");
    let tree = src.join("linux-source-7.3");
    let stamp = src.join("linux-source-7.3.complete");
    if fs::read_to_string(&stamp).is_ok_and(|v| v == KERNEL_DEB_VERSION) {
        return Ok(tree);
    }
    step(format!("fetching {KERNEL_PACKAGE} {KERNEL_DEB_VERSION}"));
    apt.update("backports", BACKPORTS_SUITE, None)?;
    let debs = cache.join("debs");
    let deb = apt.download(
        "backports",
        &format!("{KERNEL_PACKAGE}={KERNEL_DEB_VERSION}"),
        None,
        &debs,
    )?;
    let unpacked = src.join("linux-deb");
    extract_deb(&deb, &unpacked)?;
    let tarball = unpacked.join("usr/src/linux-source-7.3.tar.xz");
    let _ = fs::remove_dir_all(&tree);
    step("unpacking the kernel source");
    run(Command::new("tar")
        .arg("-xJf")
        .arg(&tarball)
        .arg("-C")
        .arg(&src))?;
    if !tree.join("Makefile").exists() {
        bail!("{} holds no linux-source-7.3/Makefile", tarball.display());
    }
    fs::write(&stamp, KERNEL_DEB_VERSION)?;
    let _ = fs::remove_dir_all(&unpacked);
    let _ = fs::remove_file(&deb);
    Ok(tree)
}

/// Debian's rust-src for exactly `rustc --version`; returns `.../src/rust`.
fn rust_src(cache: &Path, apt: &mut PrivateApt, rustc: &str) -> Result<PathBuf> {
    let dir = cache.join(format!("rust-src-{rustc}"));
    let src = dir.join("usr/lib/rustlib/src/rust");
    if src.join("library/core").is_dir() {
        return Ok(src);
    }
    step(format!("fetching Debian's rust-src for rustc {rustc}"));
    apt.update("backports", BACKPORTS_SUITE, None)?;
    let versions = apt.versions("backports", "rust-src", None)?;
    let version = versions
        .iter()
        .find(|v| v.starts_with(&format!("{rustc}+")) || v.starts_with(&format!("{rustc}-")))
        .with_context(|| {
            format!(
                "Debian's {BACKPORTS_SUITE} has no rust-src for rustc {rustc} (it has: {}); \
                 install a rustc whose version it carries",
                versions.join(", ")
            )
        })?;
    let deb = apt.download(
        "backports",
        &format!("rust-src={version}"),
        None,
        &cache.join("debs"),
    )?;
    extract_deb(&deb, &dir)?;
    let _ = fs::remove_file(&deb);
    if !src.join("library/core").is_dir() {
        bail!(
            "rust-src {version} holds no library/core under {}",
            src.display()
        );
    }
    Ok(src)
}

fn bindgen(cache: &Path) -> Result<PathBuf> {
    let root = cache.join(format!("bindgen-{BINDGEN_VERSION}"));
    let bin = root.join("bin");
    if bin.join("bindgen").is_file() {
        return Ok(bin);
    }
    step(format!("installing bindgen-cli {BINDGEN_VERSION}"));
    run_logged(
        Command::new("cargo")
            .args([
                "install",
                "--locked",
                "bindgen-cli",
                "--version",
                BINDGEN_VERSION,
            ])
            .arg("--root")
            .arg(&root),
        &cache.join("bindgen-install.log"),
    )?;
    Ok(bin)
}

fn libclang(cache: &Path) -> Result<PathBuf> {
    let root = cache.join(format!("libclang-{LIBCLANG_VERSION}"));
    let native = root.join(format!(
        "unpacked/libclang-{LIBCLANG_VERSION}.data/platlib/clang/native"
    ));
    if native.join("libclang.so").is_file() {
        return Ok(native);
    }
    step(format!("fetching the libclang {LIBCLANG_VERSION} wheel"));
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root)?;
    let pip = if have_program("pip3") { "pip3" } else { "pip" };
    run_logged(
        Command::new(pip)
            .args(["download", "--no-deps", "--only-binary=:all:", "--dest"])
            .arg(&root)
            .arg(format!("libclang=={LIBCLANG_VERSION}")),
        &cache.join("libclang-download.log"),
    )?;
    let wheel = fs::read_dir(&root)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .context("pip download libclang left no wheel")?;
    run(Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(&wheel)
        .arg(root.join("unpacked")))?;
    if !native.join("libclang.so").is_file() {
        bail!(
            "the libclang wheel holds no {}",
            native.join("libclang.so").display()
        );
    }
    Ok(native)
}

/// Makes the toolchain's sysroot see rust-src, so `-Zbuild-std` can build the aarch64
/// std. Returns whether build-std is needed (false where rustup has the aarch64 std).
fn wire_rust_src(rust_src: &Path) -> Result<bool> {
    let sysroot = PathBuf::from(output(Command::new("rustc").args(["--print", "sysroot"]))?.trim());
    let target_std = sysroot.join("lib/rustlib/aarch64-unknown-linux-gnu/lib");
    if target_std.is_dir() {
        return Ok(false);
    }
    let link = sysroot.join("lib/rustlib/src/rust");
    if link.join("library/core").is_dir() {
        return Ok(true);
    }
    step(format!(
        "linking {} -> {}",
        link.display(),
        rust_src.display()
    ));
    if let Some(parent) = link.parent() {
        fs::create_dir_all(parent)?;
    }
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(rust_src, &link).with_context(|| {
        format!(
            "failed to link {} to {}",
            link.display(),
            rust_src.display()
        )
    })?;
    Ok(true)
}

fn busybox(cache: &Path, apt: &mut PrivateApt) -> Result<PathBuf> {
    busybox_for(cache, apt, "arm64", Some("arm64"))
}

/// busybox-static for the amd64 guest (Debian's amd64 kernel on the PC), fetched like
/// the arm64 one (cached).
pub fn busybox_amd64() -> Result<PathBuf> {
    let cache = cache_dir()?;
    busybox_for(&cache, &mut PrivateApt::new(&cache), "amd64", None)
}

/// busybox-static of `arch` (`apt_arch` None: the host's, amd64) from [`ARM64_SUITE`].
fn busybox_for(
    cache: &Path,
    apt: &mut PrivateApt,
    arch: &str,
    apt_arch: Option<&str>,
) -> Result<PathBuf> {
    let dir = cache.join(format!("busybox-{arch}"));
    let bin = dir.join("bin/busybox");
    if bin.is_file() {
        return Ok(bin);
    }
    step(format!("fetching busybox-static for {arch}"));
    apt.update(arch, ARM64_SUITE, apt_arch)?;
    let deb = apt.download(arch, "busybox-static", apt_arch, &cache.join("debs"))?;
    extract_deb(&deb, &dir)?;
    let _ = fs::remove_file(&deb);
    if !bin.is_file() {
        bail!("busybox-static holds no bin/busybox");
    }
    Ok(bin)
}

/// A virtualenv in the cache with dtschema and yamllint; returns its `bin` folder.
pub fn dtschema(cache: &Path) -> Result<PathBuf> {
    let venv = cache.join(format!("dtschema-{}", short_hash(DTSCHEMA_PINS)));
    let bin = venv.join("bin");
    if bin.join("dt-validate").is_file() && bin.join("yamllint").is_file() {
        return Ok(bin);
    }
    step(format!(
        "installing {} into {}",
        DTSCHEMA_PINS.join(" "),
        venv.display()
    ));
    let _ = fs::remove_dir_all(&venv);
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    run_logged(
        Command::new(bin.join("pip"))
            .args(["install", "--quiet"])
            .args(DTSCHEMA_PINS),
        &cache.join("dtschema-install.log"),
    )?;
    Ok(bin)
}
