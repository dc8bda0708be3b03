//! kmemlab's build and test harness: `cargo xtask <command>`.

mod bench;
mod bench_report;
mod build;
mod debian;
mod dist;
mod hardening;
mod initramfs;
mod setup;
mod stock;
mod system;
mod util;
mod vm;
mod vmtests;
mod vmtests_c;
mod vmtests_cli;
mod vmtests_daemon;
mod vmtests_profile;
mod vmtests_system;
mod vmtests_vfio;
mod vmtests_watch;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::build::Flavor;
use crate::util::{repo_root, run, step};
use crate::vm::{Artifacts, Machine, VmOptions, TEST_KERNEL_MEMORY_MB};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  setup                   install and fetch everything the build needs (idempotent)
  kernel [--debug | --bench]
                          build the arm64 test kernel, the debug kernel, or the
                          benchmark kernel (the test kernel without kmemleak and
                          fault injection) (cached)
  module [--kdir DIR]     build kmemlab.ko against the test kernel or DIR
  module --debian RELEASE build kmemlab.ko for Debian's kernel RELEASE
                          (7.3.4+deb13-arm64 or -amd64) with Debian's compiler, in a
                          cached trixie root (kmod-helper/debian/build-for-debian.sh)
  userspace               build kmemlabd and kmemlabctl (static arm64, and host)
  vm [--presses N] [--no-daemon] [--timeout SECS] [--cpus N] [--verbose] [--extra FILE]...
     [--kernel KERNEL] [--debug-kernel] [--overlay DTSO] [--backend uio|vfio] [-- CMD...]
                          boot the board, press the button N times, run CMD;
                          --extra packs FILE into the guest as /usr/bin/<its name>;
                          --kernel test (the default), debug, debian-arm64
                          (Debian's own 7.3.4+deb13-arm64 kernel and its uio.ko, with
                          kmemlab.ko built as `module --debian` does) or debian-amd64
                          (Debian's 7.3.4+deb13-amd64 kernel on QEMU's x86_64 PC, TCG,
                          no device tree: kmemlab.ko software_device=1, and each press
                          is a TRIGGER made in the guest);
                          --debug-kernel is --kernel debug; --overlay replaces
                          dts/qemu-virt.dtso; --backend vfio gives the PL061 to
                          vfio-amba (no overlay, kmemlab.ko software_device=1,
                          no-IOMMU mode on) and runs kmemlabd --backend vfio
  vm --system debian [--presses N] [--timeout SECS] [--cpus N] [--verbose] [-- CMD...]
                          boot a real Debian trixie arm64 system (systemd, udev,
                          journald; image made once and cached) with Debian's
                          7.3.4+deb13-arm64 kernel, `dpkg -i` the package of
                          `dist --debian 7.3.4+deb13-arm64`, reboot (modules-load.d
                          loads kmemlab), press the button N times, run CMD as root
                          (`press` in CMD presses once)
  dist [--kdir DIR]       tarball and Debian arm64 package, module built for DIR
  dist --debian RELEASE [--module KO]
                          the same for Debian's kernel RELEASE (7.3.4+deb13-arm64):
                          kmemlab.ko (built here, or KO) in /lib/modules/RELEASE/updates
  bench [--kernel KERNEL] [--charts]
                          the benchmarks in the VM (1 vCPU), on the bench kernel by
                          default (the test kernel without kmemleak and fault
                          injection), or --kernel test or debian-arm64: floor vs NOP
                          round trip, single and batched paths, where the module's
                          time goes, cost with 1 to 65,536 live allocations,
                          interrupt-to-wake idle and loaded, test_vmalloc, kmemlabd's
                          RSS; --charts also sweeps every kind and size and writes
                          docs/bench-sweep.svg
  demo [--kernel KERNEL]  set up, build, boot, press 6 times, print the JSON lines
  test [--host-only]      fmt, clippy, host tests, device tree and package tests, then
                          the VM tests
  test --vm-only          only the VM tests on the test kernel
  test --dts              only the device tree tests (binding, overlays on the DTBs
                          built from source and on those Debian's arm64 kernel ships)
  test --service          only the unit file test (systemd-analyze verify, security)
  test --packages [--debian-module KO]
                          only the package tests (lintian, dpkg roots, depmod against
                          Debian's modules); KO: a kmemlab.ko built for Debian's arm64
                          kernel instead of building one
  test --debug-kernel     the hardening tests (fuzzing, fault injection, kill -9,
                          unload, permissions, load, hostile device trees) on the
                          debug kernel, ending with a table
  test --kernel debian    on Debian's arm64 kernel: the demo's six presses and the
                          VM tests; on Debian's amd64 kernel (software device): the
                          VM tests that need no button and no device tree
                          (--kernel debian-arm64 or debian-amd64: only that one)
  test --system           the system tests: the package installed with dpkg in a
                          real Debian arm64 system (vm --system debian), the module
                          loaded at boot, udev's nodes, kmemlabd under systemd

The cache lives in $KMEMLAB_CACHE (default ~/.cache/kmemlab).
KMEMLAB_TESTS=name,name runs only the VM tests whose names contain one of these.";

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        eprintln!("{USAGE}");
        return Ok(ExitCode::from(2));
    };
    let rest = &args[1..];
    match command.as_str() {
        "setup" => {
            no_args(rest)?;
            setup::setup()?;
            step("set-up complete");
        }
        "kernel" => {
            let flavor = match rest {
                [] => Flavor::Test,
                [flag] if flag == "--debug" => Flavor::Debug,
                [flag] if flag == "--bench" => Flavor::Bench,
                _ => bail!("usage: cargo xtask kernel [--debug | --bench]"),
            };
            let tc = setup::setup()?;
            let k = build::kernel(&tc, flavor)?;
            println!("{}", k.image.display());
        }
        "module" => {
            let ko = match rest {
                [] => build::module(&setup::setup()?, None, Flavor::Test)?,
                [flag, dir] if flag == "--kdir" => {
                    build::module(&setup::setup()?, Some(Path::new(dir)), Flavor::Test)?
                }
                [flag, release] if flag == "--debian" => {
                    debian::module(&debian::Release::parse(release)?)?
                }
                _ => bail!("usage: cargo xtask module [--kdir DIR | --debian RELEASE]"),
            };
            println!("{}", ko.display());
        }
        "dist" => {
            let usage = "usage: cargo xtask dist [--kdir DIR | --debian RELEASE [--module KO]]";
            let tc = setup::setup()?;
            let pkgs = match rest {
                [] => dist::dist(&tc, dist::Target::Kdir(None))?,
                [flag, dir] if flag == "--kdir" => {
                    dist::dist(&tc, dist::Target::Kdir(Some(dir.as_ref())))?
                }
                [flag, release, more @ ..] if flag == "--debian" => {
                    let module = match more {
                        [] => None,
                        [flag, ko] if flag == "--module" => Some(std::path::Path::new(ko)),
                        _ => bail!(usage),
                    };
                    dist::dist(&tc, dist::Target::Debian { release, module })?
                }
                _ => bail!(usage),
            };
            println!("{}\n{}", pkgs.tarball.display(), pkgs.deb.display());
        }
        "userspace" => {
            no_args(rest)?;
            let tc = setup::setup()?;
            let u = build::userspace(&tc)?;
            build::userspace_host()?;
            println!("{}\n{}", u.kmemlabd.display(), u.kmemlabctl.display());
        }
        "vm" if rest.iter().any(|a| a == "--system") => {
            let (release, opts) = system::parse_args(rest)?;
            let status = system::vm(&setup::setup()?, &release, &opts)?;
            return Ok(ExitCode::from(u8::try_from(status).unwrap_or(1)));
        }
        "vm" => {
            let (opts, kernel) = parse_vm(rest)?;
            let art = prepare(&kernel)?;
            let outcome = vm::run_vm(&art, &opts);
            cleanup(&art);
            let outcome = outcome?;
            vm::print_outcome(&outcome);
            return Ok(ExitCode::from(
                u8::try_from(outcome.cmd_status).unwrap_or(1),
            ));
        }
        "bench" => {
            let mut kernel = GuestKernel::Test(Flavor::Bench);
            let mut charts = false;
            let mut it = rest.iter();
            while let Some(arg) = it.next() {
                match arg.as_str() {
                    "--kernel" => {
                        kernel = GuestKernel::parse(it.next().context("--kernel needs a name")?)?
                    }
                    "--charts" => charts = true,
                    other => bail!(
                        "unknown bench option `{other}`: cargo xtask bench [--kernel bench|test|debian-arm64] [--charts]"
                    ),
                }
            }
            let tc = setup::setup()?;
            let (kernel_name, kernel_about, test_vmalloc) = match &kernel {
                GuestKernel::Test(flavor) => (
                    format!("{flavor:?}").to_lowercase(),
                    flavor.about().to_owned(),
                    Some(build::kernel(&tc, *flavor)?.dir.join("lib/test_vmalloc.ko")),
                ),
                GuestKernel::Debian(release) if release.arch == "arm64" => (
                    format!("debian-{}", release.arch),
                    format!(
                        "Debian's own {} kernel, unmodified (its config: no kmemleak, no fault \
                         injection, SLUB debugging built in and off, KFENCE sample_interval 0, \
                         init_on_alloc on, memcg on)",
                        release.name
                    ),
                    None,
                ),
                GuestKernel::Debian(_) => {
                    bail!("the benchmarks run on the arm64 virt board: --kernel bench, test or debian-arm64")
                }
            };
            let art = prepare(&kernel)?;
            let result = bench::bench(
                &art,
                &bench::BenchOptions {
                    kernel_name,
                    kernel_about,
                    test_vmalloc,
                    charts,
                },
            );
            cleanup(&art);
            result?;
        }
        "demo" => {
            let kernel = match rest {
                [] => GuestKernel::Test(Flavor::Test),
                [flag, name] if flag == "--kernel" => GuestKernel::parse(name)?,
                _ => bail!("usage: cargo xtask demo [--kernel KERNEL]"),
            };
            let art = prepare(&kernel)?;
            let outcome = demo(&art);
            cleanup(&art);
            vm::print_outcome(&outcome?);
        }
        "test" => match rest {
            [flag] if flag == "--dts" => device_tree_tests()?,
            [flag] if flag == "--packages" => package_tests(None)?,
            [flag] if flag == "--service" => service_file_tests()?,
            [flag, flag2, ko] if flag == "--packages" && flag2 == "--debian-module" => {
                package_tests(Some(ko.as_ref()))?
            }
            [] => test(false)?,
            [flag] if flag == "--host-only" => test(true)?,
            [flag] if flag == "--debug-kernel" => test_debug_kernel()?,
            [flag, name] if flag == "--kernel" && name == "debian" => test_debian_kernels(&[
                GuestKernel::parse("debian-arm64")?,
                GuestKernel::parse("debian-amd64")?,
            ])?,
            [flag, name] if flag == "--kernel" => match GuestKernel::parse(name)? {
                GuestKernel::Test(Flavor::Test) => test(false)?,
                GuestKernel::Test(Flavor::Debug) => test_debug_kernel()?,
                GuestKernel::Test(Flavor::Bench) => bail!(
                    "the tests run on the test, debug and Debian kernels; the bench kernel \
                     is for `cargo xtask bench`"
                ),
                kernel @ GuestKernel::Debian(_) => test_debian_kernels(&[kernel])?,
            },
            [flag] if flag == "--system" => vmtests_system::run_all(&setup::setup()?)?,
            [flag] if flag == "--vm-only" => {
                let art = prepare(&GuestKernel::Test(Flavor::Test))?;
                let result = vmtests::run_all(&art).result;
                cleanup(&art);
                result?;
            }
            _ => bail!(
                "usage: cargo xtask test [--host-only | --vm-only | --debug-kernel | \
                 --kernel KERNEL | --dts | --service | --packages [--debian-module KO] | \
                 --system]"
            ),
        },
        "-h" | "--help" | "help" => println!("{USAGE}"),
        other => bail!("unknown command `{other}`\n{USAGE}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn no_args(rest: &[String]) -> Result<()> {
    if let Some(extra) = rest.first() {
        bail!("unexpected argument `{extra}`\n{USAGE}");
    }
    Ok(())
}

/// The kernel a guest boots.
#[derive(Clone, Debug, PartialEq, Eq)]
enum GuestKernel {
    /// A kernel built here: the test kernel or the debug kernel.
    Test(Flavor),
    /// Debian's own kernel of a release, unmodified.
    Debian(debian::Release),
}

impl GuestKernel {
    /// `--kernel` values: `test`, `debug`, `debian-arm64` (`debian`: the same, except
    /// for `test`, where it means both Debian kernels), `debian-amd64`.
    fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "test" => Self::Test(Flavor::Test),
            "debug" => Self::Test(Flavor::Debug),
            "bench" => Self::Test(Flavor::Bench),
            "debian" | "debian-arm64" => {
                Self::Debian(debian::Release::parse(debian::ARM64_RELEASE)?)
            }
            "debian-amd64" => Self::Debian(debian::Release::parse(debian::AMD64_RELEASE)?),
            other => {
                bail!("unknown kernel `{other}`: test, debug, bench, debian-arm64 or debian-amd64")
            }
        })
    }
}

fn parse_vm(args: &[String]) -> Result<(VmOptions, GuestKernel)> {
    let mut opts = VmOptions::default();
    let mut kernel = GuestKernel::Test(Flavor::Test);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--presses" => {
                opts.presses = it
                    .next()
                    .context("--presses needs a number")?
                    .parse()
                    .context("--presses needs a number")?;
            }
            "--no-daemon" => opts.daemon = false,
            "--extra" => {
                let path = PathBuf::from(it.next().context("--extra needs a file")?);
                if !path.is_file() {
                    bail!("--extra {}: no such file", path.display());
                }
                opts.extra.push(path);
            }
            "--verbose" | "-v" => opts.verbose = true,
            "--debug-kernel" => kernel = GuestKernel::Test(Flavor::Debug),
            "--kernel" => kernel = GuestKernel::parse(it.next().context("--kernel needs a name")?)?,
            "--backend" => {
                opts.backend =
                    vm::Backend::parse(it.next().context("--backend needs uio or vfio")?)?
            }
            "--overlay" => {
                let path = PathBuf::from(it.next().context("--overlay needs a .dtso file")?);
                if !path.is_file() {
                    bail!("--overlay {}: no such file", path.display());
                }
                opts.overlay = path;
            }
            "--cpus" => {
                opts.cpus = it
                    .next()
                    .context("--cpus needs a number")?
                    .parse()
                    .context("--cpus needs a number")?;
            }
            "--timeout" => {
                let secs: u64 = it
                    .next()
                    .context("--timeout needs seconds")?
                    .parse()
                    .context("--timeout needs seconds")?;
                opts.cmd_timeout = Duration::from_secs(secs);
            }
            "--" => {
                let cmd: Vec<&str> = it.by_ref().map(String::as_str).collect();
                if !cmd.is_empty() {
                    opts.cmd = cmd.join(" ");
                }
            }
            other => bail!("unknown vm option `{other}`\n{USAGE}"),
        }
    }
    Ok((opts, kernel))
}

/// Set-up and every build the guest needs.
fn prepare(kernel: &GuestKernel) -> Result<Artifacts> {
    let tc = setup::setup()?;
    let work = tc.cache.join("run").join(std::process::id().to_string());
    let art = match kernel {
        GuestKernel::Test(flavor) => {
            let user = build::userspace(&tc)?;
            let kernel = build::kernel(&tc, *flavor)?;
            Artifacts {
                image: kernel.image,
                module: build::module(&tc, None, *flavor)?,
                kmemlabd: user.kmemlabd,
                kmemlabctl: user.kmemlabctl,
                abi_probe: user.abi_probe,
                busybox: tc.busybox,
                cmdline: flavor.cmdline().to_owned(),
                memory_mb: TEST_KERNEL_MEMORY_MB,
                // The PL061's driver is a module in the test kernels (see
                // test-kernel.config).
                preload: vec![kernel.dir.join(vm::PL061_MODULE)],
                kmemleak: *flavor != Flavor::Bench,
                vfio: true,
                machine: Machine::VirtArm64,
                module_args: String::new(),
                work,
            }
        }
        GuestKernel::Debian(release) => {
            let kernel = debian::kernel(release)?;
            // amd64 has no device tree: the module makes its own device, with no
            // interrupt line, on a PC with static x86_64 binaries.
            let amd64 = release.arch == "amd64";
            let (user, busybox, machine, module_args) = if amd64 {
                (
                    build::userspace_amd64()?,
                    setup::busybox_amd64()?,
                    Machine::PcAmd64,
                    "software_device=1".to_owned(),
                )
            } else {
                (
                    build::userspace(&tc)?,
                    tc.busybox,
                    Machine::VirtArm64,
                    String::new(),
                )
            };
            Artifacts {
                image: kernel.image,
                module: debian::module(release)?,
                kmemlabd: user.kmemlabd,
                kmemlabctl: user.kmemlabctl,
                abi_probe: user.abi_probe,
                busybox,
                cmdline: String::new(),
                memory_mb: debian::MEMORY_MB,
                preload: vec![kernel.uio],
                kmemleak: false,
                vfio: false,
                machine,
                module_args,
                work,
            }
        }
    };
    Ok(art)
}

/// The demo: boot, press the button six times; fails on a kernel splat or a daemon line
/// that breaks the log schema.
fn demo(art: &Artifacts) -> Result<vm::VmOutcome> {
    let opts = VmOptions {
        presses: 6,
        ..VmOptions::default()
    };
    step("booting the board and pressing its button 6 times");
    let outcome = vm::run_vm(art, &opts)?;
    let splats = outcome.splats();
    if !splats.is_empty() {
        vm::print_outcome(&outcome);
        bail!("the kernel log shows a splat:\n{}", splats.join("\n"));
    }
    let lines = vm::check_log_schema(&outcome.log)?;
    let presses = outcome
        .log
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("seq").is_some_and(|s| !s.is_null()))
        .count();
    if presses != 6 {
        vm::print_outcome(&outcome);
        bail!("the daemon wrote {presses} press lines for 6 presses");
    }
    step(format!(
        "demo: 6 presses, {lines} daemon lines valid against the schema, no splat"
    ));
    Ok(outcome)
}

/// Issue 12's tests on Debian's own kernels: on arm64 the demo, then the VM tests; on
/// amd64 (the software device) the VM tests that need neither the button nor a device
/// tree. Prints which tests ran on which kernel.
fn test_debian_kernels(kernels: &[GuestKernel]) -> Result<()> {
    let start = Instant::now();
    let mut summary = Vec::new();
    let mut failures = Vec::new();
    for kernel in kernels {
        let art = prepare(kernel)?;
        let name = match kernel {
            GuestKernel::Debian(release) => release.name.clone(),
            GuestKernel::Test(_) => "test".to_owned(),
        };
        let mut ran = Vec::new();
        let result = (|| -> Result<()> {
            if art.machine.has_board() {
                step(format!("demo on {}", art.image.display()));
                let outcome = demo(&art)?;
                let module_lines = outcome
                    .dmesg
                    .iter()
                    .filter(|l| l.contains("kmemlab"))
                    .count();
                if module_lines == 0 {
                    bail!("dmesg has no line from kmemlab (was the log captured?)");
                }
                ran.push("demo");
            }
            let report = vmtests::run_all(&art);
            ran.extend(report.ran.iter().copied());
            report.result
        })();
        cleanup(&art);
        summary.push(format!(
            "{name} ({}{}): {}",
            art.machine.name(),
            if art.module_args.is_empty() {
                String::new()
            } else {
                format!(", kmemlab.ko {}", art.module_args)
            },
            ran.join(", ")
        ));
        if let Err(err) = result {
            failures.push(format!("{name}: {err:#}"));
        }
    }
    step("Debian-kernel tests, by kernel:");
    for line in &summary {
        eprintln!("    {line}");
    }
    if !failures.is_empty() {
        bail!("Debian-kernel tests failed:\n{}", failures.join("\n"));
    }
    step(format!(
        "Debian-kernel tests passed in {:.0?}",
        start.elapsed()
    ));
    Ok(())
}

fn cleanup(art: &Artifacts) {
    let _ = std::fs::remove_dir_all(&art.work);
}

fn cargo(args: &[&str]) -> Result<()> {
    run(Command::new("cargo").current_dir(repo_root()).args(args))
}

/// The binding validates with dtschema; every overlay compiles and applies, to the DTBs
/// built from source and to those Debian's arm64 kernel ships.
fn device_tree_tests() -> Result<()> {
    let tc = setup::setup()?;
    let bin = setup::dtschema(&tc.cache)?;
    let work = tc
        .cache
        .join("run")
        .join(format!("dts-{}", std::process::id()));
    let dts = repo_root().join("dts");
    let shipped = stock::dtbs(&tc, stock::ARM64_RELEASE)?;
    let result = (|| -> Result<()> {
        step("device tree: validate the binding (dtschema)");
        run(Command::new(dts.join("validate.sh"))
            .arg(&tc.kernel_src)
            .arg(work.join("validate"))
            .arg(&bin))?;
        step(format!(
            "device tree: compile and apply the overlays, also to Debian's {} DTBs",
            stock::ARM64_RELEASE
        ));
        run(Command::new(dts.join("apply-test.sh"))
            .arg("--dtbs")
            .arg(&shipped)
            .arg(&tc.kernel_src)
            .arg(work.join("apply"))
            .arg(&bin))
    })();
    let _ = std::fs::remove_dir_all(&work);
    result
}

/// Issue 7's tests on the debug kernel.
fn test_debug_kernel() -> Result<()> {
    let start = Instant::now();
    let art = prepare(&GuestKernel::Test(Flavor::Debug))?;
    let result = hardening::run_all(&art);
    cleanup(&art);
    result?;
    step(format!(
        "debug-kernel tests passed in {:.0?}",
        start.elapsed()
    ));
    Ok(())
}

/// `systemd-analyze verify` passes on the unit, silently (it exits 0 even when it
/// ignores a line it cannot parse, so any output fails the test); prints the unit's
/// `systemd-analyze security` exposure. The unit is `Type=notify-reload` (systemd 253)
/// without `ExecReload=`; a host systemd older than 253 (Debian 12 has 252) cannot parse
/// that type, so there the unit is verified with `Type=notify` in its place, and the
/// step says so.
fn service_file_tests() -> Result<()> {
    let tc = setup::setup()?;
    step("systemd: systemd-analyze verify on the units");
    build::userspace_host()?;
    let root = tc
        .cache
        .join("run")
        .join(format!("systemd-{}", std::process::id()));
    let result = (|| -> Result<()> {
        let units = root.join("usr/lib/systemd");
        std::fs::create_dir_all(&units)?;
        std::fs::create_dir_all(root.join("etc/systemd/system"))?;
        std::fs::create_dir_all(root.join("usr/bin"))?;
        // The root needs the units the service refers to, and the program it runs.
        run(Command::new("cp")
            .args(["-a", "/usr/lib/systemd/system"])
            .arg(&units))?;
        std::fs::copy(
            repo_root().join("target/release/kmemlabd"),
            root.join("usr/bin/kmemlabd"),
        )?;
        std::fs::create_dir_all(root.join("usr/sbin"))?;
        std::fs::copy(
            repo_root().join("systemd/kmemlab-vfio-bind"),
            root.join("usr/sbin/kmemlab-vfio-bind"),
        )?;
        for name in ["kmemlabd.service", "kmemlabd-vfio.service"] {
            verify_unit(&root, name)?;
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&root);
    result
}

/// `systemd-analyze verify` (silent) and `security` of one of the units in `root`.
fn verify_unit(root: &Path, name: &str) -> Result<()> {
    step(format!("systemd: systemd-analyze verify {name}"));
    let unit = std::fs::read_to_string(repo_root().join(format!("systemd/{name}")))?;
    let directives: Vec<&str> = unit
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .collect();
    ensure!(
        directives.contains(&"Type=notify-reload")
            && !directives.iter().any(|l| l.starts_with("ExecReload=")),
        "{name}: want Type=notify-reload and no ExecReload= (systemd sends \
             SIGHUP and waits for RELOADING=1 and READY=1)"
    );
    let version = systemd_version()?;
    let unit = if version < 253 {
        step(format!(
            "systemd {version} predates Type=notify-reload (253): verifying the unit \
                 with Type=notify in its place"
        ));
        unit.replace("\nType=notify-reload\n", "\nType=notify\n")
    } else {
        unit
    };
    std::fs::write(root.join("etc/systemd/system").join(name), unit)?;
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg(name)
        .output()
        .context("failed to run systemd-analyze")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() || !text.trim().is_empty() {
        bail!("systemd-analyze verify {name}:\n{text}");
    }
    let security = util::output(
        Command::new("systemd-analyze")
            .args(["security", "--offline=true"])
            .arg(format!("--root={}", root.display()))
            .arg(name),
    )?;
    if let Some(line) = security.lines().find(|l| l.contains("Overall exposure")) {
        step(format!(
            "systemd-analyze security {name}: {}",
            line.trim_start_matches('→').trim()
        ));
    }
    Ok(())
}

/// The version of the host's `systemd-analyze` (`systemd 252 (252.38-1~deb12u1)`: 252).
fn systemd_version() -> Result<u32> {
    let text = util::output(Command::new("systemd-analyze").arg("--version"))?;
    text.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no version in systemd-analyze --version: {text:?}"))
}

/// `cargo xtask dist` builds both packages; the .deb installs with the right modes and
/// lintian reports no error. The package for Debian's arm64 kernel passes lintian too,
/// installs beside Debian's modules and depmod resolves its dependency on uio.
fn package_tests(debian_module: Option<&std::path::Path>) -> Result<()> {
    let tc = setup::setup()?;
    step("packages: cargo xtask dist, then install the .deb into an arm64 root folder");
    let pkgs = dist::dist(&tc, dist::Target::Kdir(None))?;
    let work = tc
        .cache
        .join("run")
        .join(format!("dist-{}", std::process::id()));
    let result = dist::install_test(&pkgs, &work).and_then(|()| dist::lintian(&pkgs.deb));
    let _ = std::fs::remove_dir_all(&work);
    result?;
    debian_package_test(&tc, debian_module)
}

/// The package for Debian's arm64 kernel (`dist --debian`, with KO or the module built
/// for it): lintian, the files and modes as for the other package, then an install
/// beside Debian's own modules package and depmod.
fn debian_package_test(tc: &setup::Toolchain, module: Option<&std::path::Path>) -> Result<()> {
    let release = stock::ARM64_RELEASE;
    step(format!("packages: cargo xtask dist --debian {release}"));
    let pkgs = dist::dist(tc, dist::Target::Debian { release, module })?;
    dist::lintian(&pkgs.deb)?;
    let debs = stock::packages(
        tc,
        &["linux-base", "linux-modules", "linux-headers"],
        release,
    )?;
    let work = tc
        .cache
        .join("run")
        .join(format!("dist-debian-{}", std::process::id()));
    let result = dist::install_test(&pkgs, &work.join("files"))
        .and_then(|()| dist::debian_install_test(&pkgs, &debs, &work.join("debian")));
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn test(host_only: bool) -> Result<()> {
    let start = Instant::now();
    step("cargo fmt --check");
    cargo(&["fmt", "--all", "--check"]).context("formatting differs: run `cargo fmt --all`")?;
    step("cargo clippy --all-targets -- -D warnings");
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    step("cargo test (host)");
    cargo(&["test", "--workspace"])?;
    if host_only {
        step(format!("host tests passed in {:.0?}", start.elapsed()));
        return Ok(());
    }
    device_tree_tests()?;
    package_tests(None)?;
    service_file_tests()?;
    let art = prepare(&GuestKernel::Test(Flavor::Test))?;
    let result = vmtests::run_all(&art).result;
    cleanup(&art);
    result?;
    step(format!("all tests passed in {:.0?}", start.elapsed()));
    Ok(())
}
