//! kmemlabd: waits for the kmemlab button interrupt on its UIO device (or, with
//! `--backend vfio`, drives the GPIO controller through VFIO), runs the next step of its
//! plan on each press and writes one JSON line per press. See
//! `kmemlabd::event` for the line formats, `kmemlabd::plan` for plans and
//! `kmemlabd::config` for the config file.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use kmemlabd::ConfigSource;

const USAGE: &str = "\
usage: kmemlabd [--config FILE] [--plan PLAN] [--debounce-ms MS] [--log FILE]
                [--uio-name NAME] [--device PATH] [--backend uio|vfio]
                [--vfio-bus BUS] [--vfio-device NAME] [--vfio-line N]

Waits for the kmemlab button interrupt. Each press runs the next step of the
plan: a press allocates the step, the next press frees it, the one after
allocates the next step, and around again. One JSON line per press (alloc,
free or error; bounce for a press within the debounce interval; coalesced for
interrupts that came without a read of their own), and start, summary and stop
lines, to stdout or appended to FILE. Diagnostics go to stderr (level from
KMEMLAB_LOG, default info).

Backends: with uio (the default) the kmemlab module owns the button's
interrupt and hands it over through its UIO device. With vfio kmemlabd drives
the board's PL061 GPIO controller itself through VFIO in no-IOMMU mode (the
controller bound to vfio-amba or vfio-platform, no-IOMMU mode on, and
CAP_SYS_RAWIO): it programs the line as a falling-edge interrupt and takes each
interrupt from an eventfd; /dev/kmemlab then only serves the allocations, and
irq_to_wake_ns is null.

Signals: SIGTERM or SIGINT free what the daemon holds and stop it with a
\"summary\" and a \"stop\" line; SIGHUP re-reads the config file and reopens the
log file (logrotate); SIGUSR1 writes a \"stats\" line. Under systemd
(Type=notify-reload, $NOTIFY_SOCKET) it reports READY=1, STATUS=, RELOADING=1
with MONOTONIC_USEC= then READY=1 around a reload, and STOPPING=1. With
$JOURNAL_STREAM naming stderr, diagnostics carry journald priorities (<N>).

PLAN is KIND[:SIZE[:FLAG|FLAG]] steps separated by commas, e.g.
  vmalloc                                  one kind, with the seed's size
  kmalloc:64:GFP_KERNEL|__GFP_ZERO,pages:16K
The default replays the seed module:
  kmalloc:1:GFP_ATOMIC,vmalloc:1:GFP_KERNEL,dma_coherent:1024:GFP_ATOMIC

options (each wins over the config file's key of the same name):
  --config FILE     read plan, debounce_ms, log, uio_name, device, backend,
                    vfio_bus, vfio_device, vfio_line from FILE (TOML); an
                    invalid file is exit status 2
  --plan PLAN       what each press does (default: the seed's cycle)
  --debounce-ms MS  presses closer than MS to the previous accepted one are
                    bounces (default 50; 0: off)
  --log FILE        append JSON lines to FILE instead of stdout
  --uio-name NAME   the UIO device's name in /sys/class/uio (default kmemlab)
  --device PATH     the kmemlab misc device (default /dev/kmemlab)
  --backend uio|vfio
                    where the interrupts come from (default uio)
  --vfio-bus BUS    vfio: the controller's bus in /sys/bus (default amba)
  --vfio-device NAME
                    vfio: the controller's device name (default 9030000.pl061)
  --vfio-line N     vfio: the button's GPIO line, 0 to 7 (default 3)
  -h, --help        print this help

Exit status: 0 stopped by SIGTERM or SIGINT; 1 a fatal error after the start
(e.g. the device went away: an \"error\" line, then \"summary\" and \"stop\"), or a
device that cannot be opened; 2 a usage error or an invalid config file;
3 another kmemlabd holds the UIO device (one kmemlabd per device), or the VFIO
group or device is in use.
";

/// Exit status: a usage error or an invalid config.
const EXIT_USAGE: u8 = 2;
/// Exit status: another kmemlabd holds the UIO device's lock, or the VFIO group or
/// device is busy.
const EXIT_DEVICE_BUSY: u8 = 3;

fn main() -> ExitCode {
    kmemlabd::journal::init_tracing();
    // Errors printed before the daemon runs: `<3>` first when stderr is the journal.
    let err = kmemlabd::journal::error_prefix();
    let source = match ConfigSource::from_args(std::env::args_os().skip(1)) {
        Ok(Some(source)) => source,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{err}kmemlabd: {e}\n\n{USAGE}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let config = match source.load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{err}kmemlabd: {}", e.report());
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match kmemlabd::serve(&config, Some(&source)) {
        Ok(reason) => {
            tracing::info!("stopped by {reason:?}");
            ExitCode::SUCCESS
        }
        // Through tracing, so that journald files them as errors.
        Err(e @ (kmemlab::Error::UioLocked { .. } | kmemlab::Error::VfioBusy { .. })) => {
            tracing::error!("{}", e.report());
            ExitCode::from(EXIT_DEVICE_BUSY)
        }
        Err(e) => {
            tracing::error!("{}", e.report());
            ExitCode::FAILURE
        }
    }
}
