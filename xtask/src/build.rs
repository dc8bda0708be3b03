//! `cargo xtask kernel`, `module` and `userspace`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::setup::{Toolchain, KERNEL_DEB_VERSION};
use crate::util::{jobs, output, repo_root, run, run_logged, short_hash, step};

/// Bump when the way the kernel is configured or built changes.
const KERNEL_RECIPE: &str = "tinyconfig+fragment v1";
const CROSS_COMPILE: &str = "aarch64-linux-gnu-";
pub const GUEST_TARGET: &str = "aarch64-unknown-linux-gnu";

/// A built test kernel.
#[derive(Clone, Debug)]
pub struct Kernel {
    /// The build folder (`O=`), usable as `KDIR` for modules.
    pub dir: PathBuf,
    pub image: PathBuf,
}

/// Which test kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// The everyday test kernel.
    Test,
    /// The test kernel plus lockdep, KFENCE, SLUB debugging, DMA API debugging.
    Debug,
    /// The test kernel without its allocation debugging (kmemleak, fault injection): the
    /// benchmarks' kernel.
    Bench,
}

impl Flavor {
    /// Config fragments merged on top of `tinyconfig`, in order.
    fn fragments(self) -> Vec<PathBuf> {
        let dir = repo_root().join("xtask/config");
        match self {
            Flavor::Test => vec![dir.join("test-kernel.config")],
            Flavor::Debug => vec![
                dir.join("test-kernel.config"),
                dir.join("debug-kernel.config"),
            ],
            Flavor::Bench => vec![
                dir.join("test-kernel.config"),
                dir.join("bench-kernel.config"),
            ],
        }
    }

    /// What the kernel is, for the benchmark tables.
    pub fn about(self) -> &'static str {
        match self {
            Flavor::Test => {
                "the test kernel (xtask/config/test-kernel.config): built with -Os \
                 (tinyconfig's), kmemleak on, failslab and fail_page_alloc built in, SLUB \
                 debugging built in and off"
            }
            Flavor::Debug => {
                "the debug kernel: the test kernel with lockdep, KFENCE, SLUB debugging on, \
                 DMA API debugging"
            }
            Flavor::Bench => {
                "the bench kernel (test-kernel.config with bench-kernel.config): built with -O2, \
                 no kmemleak, no fault injection, SLUB debugging built in and off"
            }
        }
    }

    /// Extra kernel command-line arguments for the guest.
    pub fn cmdline(self) -> &'static str {
        match self {
            Flavor::Test | Flavor::Bench => "",
            Flavor::Debug => "slub_debug=FZPU kfence.sample_interval=10",
        }
    }
}

fn make(tc: &Toolchain, dir: &Path) -> Command {
    let mut cmd = Command::new("make");
    tc.kernel_env(&mut cmd);
    cmd.arg("-C")
        .arg(&tc.kernel_src)
        .arg(format!("O={}", dir.display()))
        .arg("ARCH=arm64")
        .arg(format!("CROSS_COMPILE={CROSS_COMPILE}"))
        .arg(format!("-j{}", jobs()));
    cmd
}

/// Builds (or finds in the cache) the arm64 test kernel.
pub fn kernel(tc: &Toolchain, flavor: Flavor) -> Result<Kernel> {
    let mut fragments = Vec::new();
    for path in flavor.fragments() {
        let text = fs::read_to_string(&path)
            .with_context(|| format!("failed to read {}", path.display()))?;
        fragments.push((path, text));
    }
    let rustc = output(Command::new("rustc").arg("--version"))?;
    let mut parts: Vec<&str> = vec![KERNEL_DEB_VERSION, KERNEL_RECIPE];
    parts.extend(fragments.iter().map(|(_, text)| text.as_str()));
    parts.push(rustc.trim());
    let hash = short_hash(parts);
    let dir = tc.cache.join("kernel").join(&hash);
    let kernel = Kernel {
        image: dir.join("arch/arm64/boot/Image"),
        dir: dir.clone(),
    };
    let stamp = dir.join(".kmemlab-complete");
    if stamp.exists() && kernel.image.exists() && dir.join("Module.symvers").exists() {
        return Ok(kernel);
    }
    step(format!(
        "building the arm64 {flavor:?} kernel {KERNEL_DEB_VERSION} in {} (a few minutes)",
        dir.display()
    ));
    fs::create_dir_all(&dir)?;
    let log = dir.join("build.log");
    run_logged(make(tc, &dir).arg("tinyconfig"), &log)?;
    run_logged(
        Command::new(tc.kernel_src.join("scripts/kconfig/merge_config.sh"))
            .current_dir(&tc.kernel_src)
            .args(["-m", "-O"])
            .arg(&dir)
            .arg(dir.join(".config"))
            .args(fragments.iter().map(|(path, _)| path)),
        &dir.join("merge.log"),
    )?;
    run_logged(make(tc, &dir).arg("olddefconfig"), &log)?;
    for (i, (_, text)) in fragments.iter().enumerate() {
        let later: Vec<&str> = fragments[i + 1..].iter().map(|(_, t)| t.as_str()).collect();
        check_config(&dir.join(".config"), text, &later)?;
    }
    run_logged(make(tc, &dir).args(["Image", "modules"]), &log)?;
    fs::write(&stamp, &hash)?;
    Ok(kernel)
}

/// The option a fragment line sets (`CONFIG_X=...` or `# CONFIG_X is not set`).
fn option_of(line: &str) -> Option<&str> {
    let line = line.trim();
    match line.strip_prefix("# ") {
        Some(rest) => rest.strip_suffix(" is not set"),
        None => line.split_once('=').map(|(opt, _)| opt),
    }
    .filter(|opt| opt.starts_with("CONFIG_"))
}

/// Every line of the fragment must have survived Kconfig's dependency resolution, except the
/// options a `later` fragment sets again (which checks them itself).
fn check_config(config: &Path, fragment: &str, later: &[&str]) -> Result<()> {
    let text = fs::read_to_string(config)?;
    let overridden: Vec<&str> = later
        .iter()
        .flat_map(|f| f.lines().filter_map(option_of))
        .collect();
    let mut lost = Vec::new();
    for line in fragment.lines().map(str::trim) {
        if option_of(line).is_some_and(|opt| overridden.contains(&opt)) {
            continue;
        }
        if let Some(off) = line
            .strip_prefix("# ")
            .and_then(|l| l.strip_suffix(" is not set"))
        {
            if text.lines().any(|l| l.starts_with(&format!("{off}="))) {
                lost.push(line.to_owned());
            }
        } else if line.starts_with("CONFIG_") && !text.lines().any(|l| l == line) {
            lost.push(line.to_owned());
        }
    }
    if !lost.is_empty() {
        bail!(
            "the kernel configuration dropped these fragment lines (a dependency is missing): {}",
            lost.join(", ")
        );
    }
    Ok(())
}

/// Builds kmemlab.ko against `kdir` (the test kernel when None); returns its path.
pub fn module(tc: &Toolchain, kdir: Option<&Path>, flavor: Flavor) -> Result<PathBuf> {
    let (kdir, tag) = match kdir {
        Some(dir) => {
            let dir = dir
                .canonicalize()
                .with_context(|| format!("kernel build folder {} not found", dir.display()))?;
            let tag = format!("custom-{}", short_hash([dir.to_string_lossy().as_bytes()]));
            (dir, tag)
        }
        None => {
            let k = kernel(tc, flavor)?;
            let tag = k
                .dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (k.dir, tag)
        }
    };
    let target = check_kdir(&kdir)?;
    let src = repo_root().join("kmod-helper");
    // One output folder per kernel and per checkout: two checkouts (worktrees, a CI clone)
    // building at once must not write, or load, each other's objects.
    let out = tc.cache.join("module").join(format!(
        "{tag}-{}",
        short_hash([src.to_string_lossy().as_bytes()])
    ));
    fs::create_dir_all(&out)?;
    step(format!("building kmemlab.ko against {}", kdir.display()));
    let mut cmd = Command::new("make");
    tc.kernel_env(&mut cmd);
    cmd.arg("-C")
        .arg(&kdir)
        .arg(format!("M={}", src.display()))
        .arg(format!("MO={}", out.display()))
        .args(target.make_args())
        .arg(format!("-j{}", jobs()))
        .arg("modules");
    run_logged(&mut cmd, &out.join("build.log"))?;
    let ko = out.join("kmemlab.ko");
    if !ko.is_file() {
        bail!("the module build left no {}", ko.display());
    }
    Ok(ko)
}

/// How a kernel build folder was built: its architecture and compiler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelTarget {
    /// `ARCH=` value.
    pub arch: &'static str,
    /// Built with clang (`LLVM=1`) rather than GCC.
    pub llvm: bool,
    /// `uname -r` of that kernel.
    pub release: String,
}

impl KernelTarget {
    fn make_args(&self) -> Vec<String> {
        let mut args = vec![format!("ARCH={}", self.arch)];
        if self.llvm {
            args.push("LLVM=1".to_owned());
        } else if self.arch == "arm64" && std::env::consts::ARCH != "aarch64" {
            args.push(format!("CROSS_COMPILE={CROSS_COMPILE}"));
        }
        args
    }
}

/// A kernel build folder must be configured with Rust, hold its Rust build products,
/// and have been built with this machine's rustc. Returns how it was built.
pub fn check_kdir(kdir: &Path) -> Result<KernelTarget> {
    let config = fs::read_to_string(kdir.join(".config")).with_context(|| {
        format!(
            "{} has no .config: give the folder the kernel was built in (its O= folder)",
            kdir.display()
        )
    })?;
    let value = |key: &str| {
        config
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(|v| v.trim_matches('"').to_owned())
    };
    let arch = if value("CONFIG_ARM64").as_deref() == Some("y") {
        "arm64"
    } else if value("CONFIG_X86_64").as_deref() == Some("y") {
        "x86_64"
    } else {
        bail!(
            "{} is neither an arm64 nor an x86_64 kernel build; kmemlab builds for those",
            kdir.display()
        );
    };
    let llvm = value("CONFIG_CC_IS_CLANG").as_deref() == Some("y");
    if value("CONFIG_RUST").as_deref() != Some("y") {
        bail!(
            "{} is configured without CONFIG_RUST=y: kmemlab is a Rust module. Rebuild that \
             kernel with Rust support: install rustc, rust-src, bindgen and libclang, check \
             with `make rustavailable`, then enable CONFIG_RUST (General setup -> Rust support)",
            kdir.display()
        );
    }
    let wanted = value("CONFIG_RUSTC_VERSION_TEXT").unwrap_or_default();
    let rustc = output(Command::new("rustc").arg("--version"))?;
    if !wanted.is_empty() && wanted != rustc.trim() {
        bail!(
            "{} was built with `{wanted}`, but this machine's rustc is `{}`: Rust modules must \
             be built with the kernel's own compiler (install that rustc, e.g. with \
             `rustup toolchain install` and `rustup override set`)",
            kdir.display(),
            rustc.trim()
        );
    }
    for (needed, how) in [
        (
            "Module.symvers",
            "run `make modules` in the kernel build folder",
        ),
        (
            "rust/libkernel.rmeta",
            "run `make modules` (or `make`) with CONFIG_RUST=y",
        ),
        (
            "include/config/kernel.release",
            "build the kernel (`make`) first",
        ),
    ] {
        if !kdir.join(needed).exists() {
            bail!("{} lacks {needed}: {how}", kdir.display());
        }
    }
    let release = fs::read_to_string(kdir.join("include/config/kernel.release"))?
        .trim()
        .to_owned();
    Ok(KernelTarget {
        arch,
        llvm,
        release,
    })
}

/// The userspace binaries: static arm64 for the guest (and native for the host).
#[derive(Clone, Debug)]
pub struct Userspace {
    pub kmemlabd: PathBuf,
    pub kmemlabctl: PathBuf,
    /// The guest-side test program (xtask/guest-tools).
    pub abi_probe: PathBuf,
}

/// Builds kmemlabd and kmemlabctl as static arm64 binaries.
pub fn userspace(tc: &Toolchain) -> Result<Userspace> {
    let root = repo_root();
    let target_dir = root.join("target/guest");
    step("building kmemlabd and kmemlabctl for the arm64 guest");
    let mut cmd = Command::new("cargo");
    cmd.current_dir(&root)
        .args([
            "build",
            "--release",
            "--package",
            "kmemlabd",
            "--package",
            "kmemlabctl",
        ])
        .args(["--package", "kmemlab-guest-tools"])
        .args(["--target", GUEST_TARGET])
        .arg("--target-dir")
        .arg(&target_dir)
        .env(
            "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER",
            format!("{CROSS_COMPILE}gcc"),
        )
        .env(
            "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
            "-C target-feature=+crt-static",
        );
    if tc.build_std {
        cmd.env("RUSTC_BOOTSTRAP", "1")
            .arg("-Zbuild-std=std,panic_abort");
    }
    run(&mut cmd)?;
    let bin = target_dir.join(GUEST_TARGET).join("release");
    Ok(Userspace {
        kmemlabd: bin.join("kmemlabd"),
        kmemlabctl: bin.join("kmemlabctl"),
        abi_probe: bin.join("kmemlab-abi-probe"),
    })
}

/// Builds the host binaries too (the same code, for people and host tests).
pub fn userspace_host() -> Result<()> {
    step("building kmemlabd and kmemlabctl for the host");
    run(Command::new("cargo").current_dir(repo_root()).args([
        "build",
        "--release",
        "--package",
        "kmemlabd",
        "--package",
        "kmemlabctl",
        "--bins",
    ]))
}

/// Target of the static x86_64 guest binaries (Debian's amd64 kernel on the PC).
pub const AMD64_GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";

/// Builds kmemlabd, kmemlabctl and the test program as static x86_64 binaries (the host
/// is x86_64: its std and glibc's static libraries suffice, no build-std). `--target`
/// keeps the flags off build scripts and proc macros.
pub fn userspace_amd64() -> Result<Userspace> {
    let root = repo_root();
    let target_dir = root.join("target/guest-amd64");
    step("building kmemlabd and kmemlabctl for the x86_64 guest");
    run(Command::new("cargo")
        .current_dir(&root)
        .args([
            "build",
            "--release",
            "--package",
            "kmemlabd",
            "--package",
            "kmemlabctl",
        ])
        .args(["--package", "kmemlab-guest-tools"])
        .args(["--target", AMD64_GUEST_TARGET])
        .arg("--target-dir")
        .arg(&target_dir)
        .env(
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
            "-C target-feature=+crt-static",
        ))?;
    let bin = target_dir.join(AMD64_GUEST_TARGET).join("release");
    Ok(Userspace {
        kmemlabd: bin.join("kmemlabd"),
        kmemlabctl: bin.join("kmemlabctl"),
        abi_probe: bin.join("kmemlab-abi-probe"),
    })
}

/// Builds the C client (kmod-helper/uapi/examples/kmemlab-c-client.c) as a static binary
/// for the guest of `target` ([`GUEST_TARGET`] with the cross compiler, or
/// [`AMD64_GUEST_TARGET`] with the host's gcc), against kmemlab.h installed as
/// `<linux/kmemlab.h>`, as the .deb installs it; returns its path.
pub fn c_client(target: &str) -> Result<PathBuf> {
    let root = repo_root();
    let uapi = root.join("kmod-helper/uapi");
    let out = root.join("target/guest-c").join(target);
    let include = out.join("include/linux");
    fs::create_dir_all(&include)?;
    fs::copy(uapi.join("kmemlab.h"), include.join("kmemlab.h"))
        .context("failed to copy kmemlab.h")?;
    let cc = match target {
        GUEST_TARGET => format!("{CROSS_COMPILE}gcc"),
        AMD64_GUEST_TARGET => "gcc".to_owned(),
        other => bail!("no C compiler known for {other}"),
    };
    step(format!("building kmemlab-c-client for {target} with {cc}"));
    let exe = out.join("kmemlab-c-client");
    run(Command::new(&cc)
        .args(["-static", "-O2", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(out.join("include"))
        .arg(uapi.join("examples/kmemlab-c-client.c"))
        .arg("-o")
        .arg(&exe))?;
    Ok(exe)
}
