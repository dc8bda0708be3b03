//! kmemlabd: the per-press logic ([`Daemon`]), testable without descriptors, and the
//! `mio` event loop ([`run`]) that drives it from the UIO device and a signalfd.
//!
//! Each press (a UIO count read) runs the next step of the [`Plan`] and writes one line;
//! see [`crate::event`] for the formats.
//!
//! - Coalescing: one read of the UIO count is one wake-up and runs at most one step. When
//!   the count jumped by more than one since the previous read, the interrupts in between
//!   are written as a `coalesced` line (before the press's own line) and counted, so that
//!   `presses + bounces + coalesced` always equals the count minus the start count.
//! - Debounce: a wake-up less than `debounce_ms` after the previous *accepted* press is a
//!   `bounce` line and runs no step. Times are the kernel's interrupt timestamps from the
//!   heap's ring when it has the record (`"clock":"irq"`), else CLOCK_MONOTONIC at the
//!   wake-up (`"clock":"wake"`); both are CLOCK_MONOTONIC. No timer is involved: an idle
//!   daemon sleeps in `epoll_wait` without a timeout.
//! - SIGHUP re-reads the config file and reopens the output. A changed plan frees what
//!   the daemon holds (a `free` line with a null `seq`) and starts again at its first step.
//! - SIGUSR1 writes a `stats` line; SIGTERM and SIGINT free what is held, write `summary`
//!   and `stop`.
//! - With `$NOTIFY_SOCKET` set, systemd is told `READY=1` once the devices are open, the
//!   heap is mapped, the descriptors are registered and the `start` line is written;
//!   `STATUS=` after each wake-up; `STOPPING=1` when a stop signal arrives.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::config::ConfigSource;
use crate::event::{
    monotonic_ns, now_ns, Clock, Event, EventWriter, Op, Press, Source, StopReason,
};
use crate::notify::Notifier;
use crate::plan::{Outcome, Plan, PlanRunner};
use crate::stats::{Counters, Stats};
use kmemlab::device::{check_abi, Device, KmemlabDevice};
use kmemlab::error::{Error, Result};
use kmemlab::report::AllocReport;
use kmemlab::ring::{self, RingMemory};
use kmemlab::spec::Kind;
use kmemlab::uio::{find_uio, IrqSource, Uio};
use kmemlab::{DEFAULT_DEVICE, DEFAULT_SYSFS_UIO, DEFAULT_UIO_NAME};

/// Where the kernel lists vmalloc areas.
pub const VMALLOCINFO: &str = "/proc/vmallocinfo";

/// Token of the UIO descriptor in the poll.
pub const UIO_TOKEN: Token = Token(0);
/// Token of the signalfd in the poll.
pub const SIGNAL_TOKEN: Token = Token(1);

/// What `kmemlabd` is told on its command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonConfig {
    /// The misc device, `/dev/kmemlab` by default.
    pub device: PathBuf,
    /// The UIO device's name attribute, `kmemlab` by default.
    pub uio_name: String,
    /// Where UIO devices are listed, `/sys/class/uio` by default.
    pub sysfs_uio: PathBuf,
    /// Append JSON lines to this file instead of writing them to stdout.
    pub log: Option<PathBuf>,
    /// What each press does.
    pub plan: Plan,
    /// Presses closer than this to the previous accepted press are bounces (0: off).
    pub debounce_ms: u64,
}

/// The default debounce interval, ms.
pub const DEFAULT_DEBOUNCE_MS: u64 = 50;

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            device: DEFAULT_DEVICE.into(),
            uio_name: DEFAULT_UIO_NAME.into(),
            sysfs_uio: DEFAULT_SYSFS_UIO.into(),
            log: None,
            plan: Plan::default(),
            debounce_ms: DEFAULT_DEBOUNCE_MS,
        }
    }
}

/// Interrupts that came without a read of their own between a read of `last` and one
/// of `count`, modulo 2^32 (the UIO count is a wrapping 32-bit counter).
pub fn missed(last: u32, count: u32) -> u32 {
    count.wrapping_sub(last).saturating_sub(1)
}

/// What the `start` line names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartInfo {
    /// The UIO device node.
    pub uio: String,
    /// The misc device node.
    pub device: String,
    /// The UIO count when the device was opened.
    pub irq_count: u32,
}

/// Reads `/proc/vmallocinfo` text from `reader` a line at a time into `line`, up to the
/// line of the area that starts at `vaddr`: `Ok(true)` with that line in `line` (without
/// its line end), `Ok(false)` when no area starts there.
///
/// The file is never held whole, and is read no further than that line: Linux lists the
/// areas it freed lazily (`unpurged vm_area`) after the live ones until it purges them,
/// which a 2-CPU board does after 64 MiB of them (`lazy_max_pages()`), so the file grows
/// by a line with each vmalloc the daemon frees, to hundreds of kilobytes.
pub fn read_vmallocinfo_line<R: BufRead + ?Sized>(
    reader: &mut R,
    vaddr: u64,
    line: &mut String,
) -> io::Result<bool> {
    loop {
        line.clear();
        if reader.read_line(line)? == 0 {
            return Ok(false);
        }
        if area_start(line) == Some(vaddr) {
            line.truncate(line.trim_end().len());
            return Ok(true);
        }
    }
}

/// The start address of the area of a vmallocinfo line (`0x...-0x... size caller ...`).
fn area_start(line: &str) -> Option<u64> {
    let (start, _) = line.split_once('-')?;
    u64::from_str_radix(start.trim().trim_start_matches("0x"), 16).ok()
}

/// Reads vmallocinfo for the daemon through one buffer and one line kept from press to
/// press: a lookup allocates nothing but the line it returns, and holds no more than the
/// buffer and the longest line read, however long the file is.
#[derive(Debug)]
struct VmallocinfoReader {
    reader: BufReader<Opened>,
    line: String,
}

/// The file a [`VmallocinfoReader`] is reading, if any.
#[derive(Debug, Default)]
struct Opened(Option<File>);

impl Read for Opened {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.0 {
            Some(file) => file.read(buf),
            None => Ok(0),
        }
    }
}

impl VmallocinfoReader {
    fn new() -> Self {
        Self {
            reader: BufReader::new(Opened::default()),
            line: String::new(),
        }
    }

    /// The line of the area that starts at `vaddr` in the vmallocinfo file at `path`.
    fn area_line(&mut self, path: &Path, vaddr: u64) -> io::Result<Option<&str>> {
        let file = File::open(path)?;
        // Bytes of the previous file that its lookup did not need.
        let stale = self.reader.buffer().len();
        self.reader.consume(stale);
        self.reader.get_mut().0 = Some(file);
        let found = read_vmallocinfo_line(&mut self.reader, vaddr, &mut self.line);
        // Closed now rather than at the next lookup.
        self.reader.get_mut().0 = None;
        Ok(found?.then_some(self.line.as_str()))
    }
}

/// The daemon's state and its reaction to each event, free of descriptors and polling.
pub struct Daemon<D, I, W: Write> {
    device: D,
    irq: I,
    out: EventWriter<W>,
    start: StartInfo,
    last: u32,
    presses: u64,
    runner: PlanRunner,
    ring: Option<Box<dyn RingMemory>>,
    monotonic: fn() -> u64,
    vmallocinfo: Option<PathBuf>,
    vmallocinfo_reader: VmallocinfoReader,
    config: DaemonConfig,
    last_accepted_ns: Option<u64>,
    bounces: u64,
    coalesced: u64,
    events: u64,
    stats: Stats,
}

impl<D: fmt::Debug, I: fmt::Debug, W: Write + fmt::Debug> fmt::Debug for Daemon<D, I, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Daemon")
            .field("device", &self.device)
            .field("irq", &self.irq)
            .field("start", &self.start)
            .field("last", &self.last)
            .field("presses", &self.presses)
            .field("runner", &self.runner)
            .field("ring", &self.ring.as_ref().map(|r| r.len()))
            .field("vmallocinfo", &self.vmallocinfo)
            .field("config", &self.config)
            .field("bounces", &self.bounces)
            .field("coalesced", &self.coalesced)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl<D: Device, I: IrqSource, W: Write> Daemon<D, I, W> {
    /// A daemon over `device` and `irq`, writing to `out`, running the default plan,
    /// without a ring (no `irq_to_wake_ns`), reading [`VMALLOCINFO`], without debounce
    /// (see [`Daemon::with_config`]).
    pub fn new(device: D, irq: I, out: EventWriter<W>, start: StartInfo) -> Self {
        let last = start.irq_count;
        Self {
            device,
            irq,
            out,
            start,
            last,
            presses: 0,
            runner: PlanRunner::new(Plan::default()),
            ring: None,
            monotonic: monotonic_ns,
            vmallocinfo: Some(VMALLOCINFO.into()),
            vmallocinfo_reader: VmallocinfoReader::new(),
            config: DaemonConfig {
                debounce_ms: 0,
                ..DaemonConfig::default()
            },
            last_accepted_ns: None,
            bounces: 0,
            coalesced: 0,
            events: 0,
            stats: Stats::default(),
        }
    }

    /// Runs `plan` instead.
    #[must_use]
    pub fn with_plan(mut self, plan: Plan) -> Self {
        self.runner = PlanRunner::new(plan.clone());
        self.config.plan = plan;
        self
    }

    /// Runs with `config`: its plan and debounce interval, and its log path and devices
    /// as the ones a reload compares against.
    #[must_use]
    pub fn with_config(mut self, config: &DaemonConfig) -> Self {
        self.runner = PlanRunner::new(config.plan.clone());
        self.config = config.clone();
        self
    }

    /// Sets the debounce interval (0: off).
    #[must_use]
    pub fn with_debounce_ms(mut self, ms: u64) -> Self {
        self.config.debounce_ms = ms;
        self
    }

    /// Looks up interrupt records in `ring` (the mapped heap).
    #[must_use]
    pub fn with_ring(mut self, ring: Box<dyn RingMemory>) -> Self {
        self.ring = Some(ring);
        self
    }

    /// Takes wake-up times from `clock` (CLOCK_MONOTONIC ns) instead of the system's.
    #[must_use]
    pub fn with_clock(mut self, clock: fn() -> u64) -> Self {
        self.monotonic = clock;
        self
    }

    /// Reads vmalloc areas from `path` instead of [`VMALLOCINFO`] (`None`: never).
    #[must_use]
    pub fn with_vmallocinfo(mut self, path: Option<PathBuf>) -> Self {
        self.vmallocinfo = path;
        self
    }

    /// Checks the module's ABI, enables the interrupt (a previous daemon may have left it
    /// masked; writing 1 again is harmless) and writes the `start` line.
    pub fn start(&mut self) -> Result<()> {
        let info = self.device.info()?;
        check_abi(&info)?;
        self.irq.enable()?;
        self.out.emit(&Event::Start {
            ts_ns: now_ns(),
            pid: std::process::id(),
            uio: self.start.uio.clone(),
            device: self.start.device.clone(),
            abi_version: info.abi_version,
            irq_count: self.start.irq_count,
            plan: self.runner.plan().to_string(),
            ring: self.ring.is_some(),
        })
    }

    /// Handles a readable interrupt source: reads counts until it would block. Returns
    /// how many counts were read (0: a spurious wakeup).
    pub fn on_readable(&mut self) -> Result<usize> {
        let mut n = 0;
        while let Some(count) = self.irq.read_count()? {
            // The wake-up time: right after the read returned.
            let wake = (self.monotonic)();
            self.on_count_at(count, wake)?;
            n += 1;
        }
        Ok(n)
    }

    /// Handles one count read from the UIO device, woken now.
    pub fn on_count(&mut self, count: u32) -> Result<()> {
        let wake = (self.monotonic)();
        self.on_count_at(count, wake)
    }

    /// Handles one count read from the UIO device at `wake_ns` (CLOCK_MONOTONIC): looks up
    /// the interrupt's record, re-enables the interrupt, runs the plan's next step and
    /// writes its line. The interrupt is re-enabled before the line is written, so that
    /// whoever waits for the line before the next press never presses while it is still
    /// masked. A failed step is an `error` line, not an error: the daemon goes on.
    pub fn on_count_at(&mut self, count: u32, wake_ns: u64) -> Result<()> {
        let ts_ns = now_ns();
        if count == self.last {
            tracing::warn!("uio read returned the unchanged count {count}");
            return self.irq.enable();
        }
        let missed = missed(self.last, count);
        // First, before newer events can overwrite the record. The record of `count`
        // gives the press's source, its kernel timestamp and its latency alike.
        let record = self.ring.as_deref().and_then(|ring| {
            ring::find_record(ring, count)
                .inspect_err(|miss| tracing::debug!("no ring record for count {count}: {miss:?}"))
                .ok()
        });
        let irq_ns = record.map(|rec| rec.ktime_ns);
        let source = record.and_then(|rec| Source::from_abi(rec.source));
        let irq_to_wake_ns = irq_ns.and_then(|k| wake_ns.checked_sub(k));
        self.irq.enable()?;
        self.events += u64::from(count.wrapping_sub(self.last));
        self.last = count;
        if missed > 0 {
            tracing::debug!("{missed} interrupts coalesced before count {count}");
            self.coalesced += u64::from(missed);
            self.out.emit(&Event::Coalesced {
                ts_ns,
                irq_count: count,
                missed,
                coalesced: self.coalesced,
                events: self.events,
            })?;
        }
        let (at_ns, clock) = match irq_ns {
            Some(k) => (k, Clock::Irq),
            None => (wake_ns, Clock::Wake),
        };
        let debounce_ns = self.config.debounce_ms.saturating_mul(1_000_000);
        if let Some(prev) = self.last_accepted_ns {
            let since_last_ns = at_ns.saturating_sub(prev);
            if since_last_ns < debounce_ns {
                self.bounces += 1;
                return self.out.emit(&Event::Bounce {
                    ts_ns,
                    irq_count: count,
                    missed,
                    since_last_ns,
                    debounce_ms: self.config.debounce_ms,
                    clock,
                    irq_to_wake_ns,
                });
            }
        }
        self.last_accepted_ns = Some(at_ns);
        self.presses += 1;
        let press = Press {
            ts_ns,
            seq: Some(self.presses),
            irq_count: count,
            missed,
            irq_to_wake_ns,
            source,
            irq_ktime_ns: irq_ns,
        };
        let outcome = self.runner.press(&self.device);
        self.count(&outcome);
        let event = self.event_for(press, outcome);
        self.out.emit(&event)
    }

    /// Adds what a step did to the per-kind counts.
    fn count(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Allocated { step, alloc } => {
                self.stats.alloc(step.kind, step.size, alloc.alloc_ns)
            }
            Outcome::Freed { held, free } => self.stats.free(held.step.kind, free.free_ns),
            Outcome::AllocFailed { step, .. } => self.stats.error(step.kind),
            Outcome::FreeFailed { held, .. } => self.stats.error(held.step.kind),
        }
    }

    /// The counts of `stats` and `summary` lines.
    pub fn counters(&self) -> Counters {
        Counters {
            irq_count: self.last,
            events: self.events,
            presses: self.presses,
            bounces: self.bounces,
            coalesced: self.coalesced,
            live: u64::from(self.runner.held().is_some()),
            errors: self.stats.errors(),
            kinds: self.stats.report(),
        }
    }

    /// The `STATUS=` text for systemd.
    pub fn status(&self) -> String {
        format!(
            "presses {}, bounces {}, coalesced {}, live {}, errors {}",
            self.presses,
            self.bounces,
            self.coalesced,
            u64::from(self.runner.held().is_some()),
            self.stats.errors()
        )
    }

    /// Writes a `stats` line (SIGUSR1).
    pub fn write_stats(&mut self) -> Result<()> {
        self.out.emit(&Event::Stats {
            ts_ns: now_ns(),
            counters: self.counters(),
        })
    }

    /// Frees what the plan holds, with a `free` line whose `seq` is null.
    fn release(&mut self) -> Result<()> {
        if let Some(outcome) = self.runner.release(&self.device) {
            self.count(&outcome);
            let press = Press {
                ts_ns: now_ns(),
                seq: None,
                irq_count: self.last,
                missed: 0,
                irq_to_wake_ns: None,
                source: None,
                irq_ktime_ns: None,
            };
            let event = self.event_for(press, outcome);
            self.out.emit(&event)?;
        }
        Ok(())
    }

    /// SIGHUP: `loaded` is the re-read config (`None`: no config file, nothing to
    /// re-read); `reopen` opens the output anew for a log path (`None`: keep it).
    ///
    /// The output is reopened first, even when the config is invalid, so that a rotated
    /// log is let go. A valid config takes effect at once: a changed plan frees what is
    /// held and starts at its first step; the debounce interval applies from the next
    /// press; `uio_name` and `device` need a restart. An invalid one is an `error` line
    /// (`"op":"reload"`) and the running config stays. Then a `reload` line.
    pub fn reload(
        &mut self,
        config_file: Option<&Path>,
        loaded: Option<Result<DaemonConfig>>,
        reopen: Option<Reopen<W>>,
    ) -> Result<()> {
        let (mut new, failed) = match loaded {
            None => (self.config.clone(), None),
            Some(Ok(config)) => (config, None),
            Some(Err(e)) => (self.config.clone(), Some(e)),
        };
        let mut log_reopened = false;
        let mut log_failed = None;
        if let Some(reopen) = reopen {
            match reopen(new.log.as_deref()) {
                Ok(w) => {
                    self.out = EventWriter::new(w);
                    log_reopened = true;
                }
                Err(e) => {
                    new.log = self.config.log.clone();
                    log_failed = Some(e);
                }
            }
        }
        let ok = failed.is_none() && log_failed.is_none();
        for e in failed.iter().chain(log_failed.iter()) {
            tracing::warn!("reload: {}", e.report());
            self.out.emit(&Event::ReloadError {
                ts_ns: now_ns(),
                op: Op::Reload,
                error: e.errno_name(),
                message: e.report(),
            })?;
        }
        let mut changed = Vec::new();
        if new.plan != self.config.plan {
            changed.push("plan");
            self.release()?;
            self.runner = PlanRunner::new(new.plan.clone());
        }
        if new.debounce_ms != self.config.debounce_ms {
            changed.push("debounce_ms");
        }
        if new.log != self.config.log {
            changed.push("log");
        }
        let mut restart_needed = Vec::new();
        if new.uio_name != self.config.uio_name {
            restart_needed.push("uio_name");
            new.uio_name = self.config.uio_name.clone();
        }
        if new.device != self.config.device {
            restart_needed.push("device");
            new.device = self.config.device.clone();
        }
        self.config = new;
        self.out.emit(&Event::Reload {
            ts_ns: now_ns(),
            ok,
            config: config_file.map(|p| p.display().to_string()),
            changed,
            restart_needed,
            log_reopened,
            plan: self.runner.plan().to_string(),
            debounce_ms: self.config.debounce_ms,
            log: self.config.log.as_ref().map(|p| p.display().to_string()),
        })
    }

    /// The line for what a press (or the shutdown) did.
    fn event_for(&mut self, press: Press, outcome: Outcome) -> Event {
        match outcome {
            Outcome::Allocated { step, alloc } => {
                let report = AllocReport::from(&alloc);
                let vmallocinfo = match step.kind {
                    Kind::Vmalloc | Kind::Kvmalloc if report.vaddr.is_some() => {
                        self.vmallocinfo_of(alloc.vaddr)
                    }
                    _ => None,
                };
                Event::Alloc {
                    press,
                    alloc: report,
                    vmallocinfo,
                }
            }
            Outcome::Freed { held, free } => Event::Free {
                press,
                handle: free.handle,
                kind: held.step.kind.name(),
                size: held.step.size,
                free_ns: free.free_ns,
            },
            Outcome::AllocFailed { step, error } => {
                tracing::warn!("step {step}: {}", error.report());
                Event::StepError {
                    press,
                    op: Op::Alloc,
                    error: error.errno_name(),
                    message: error.report(),
                    kind: step.kind.name(),
                    size: step.size,
                    gfp: step.flags.gfp_names(),
                    handle: None,
                }
            }
            Outcome::FreeFailed { held, error } => {
                tracing::warn!(
                    "freeing handle {} of step {}: {}",
                    held.alloc.handle,
                    held.step,
                    error.report()
                );
                Event::StepError {
                    press,
                    op: Op::Free,
                    error: error.errno_name(),
                    message: error.report(),
                    kind: held.step.kind.name(),
                    size: held.step.size,
                    gfp: held.step.flags.gfp_names(),
                    handle: Some(held.alloc.handle),
                }
            }
        }
    }

    /// The vmallocinfo line of the area at `vaddr`, when the file is readable.
    fn vmallocinfo_of(&mut self, vaddr: u64) -> Option<String> {
        let path: &Path = self.vmallocinfo.as_deref()?;
        match self.vmallocinfo_reader.area_line(path, vaddr) {
            Ok(line) => line.map(str::to_owned),
            Err(e) => {
                tracing::debug!("cannot read {}: {e}", path.display());
                None
            }
        }
    }

    /// Frees what the plan holds (with a `free` line whose `seq` is null), then writes
    /// the `summary` and `stop` lines.
    pub fn stop(&mut self, reason: StopReason) -> Result<()> {
        self.release()?;
        self.out.emit(&Event::Summary {
            ts_ns: now_ns(),
            counters: self.counters(),
        })?;
        self.out.emit(&Event::Stop {
            ts_ns: now_ns(),
            irq_count: self.last,
            reason,
        })
    }

    /// Writes an `error` line for `err`; if even that fails, says so on stderr.
    pub fn fail(&mut self, err: &Error) {
        if let Err(e) = self.out.emit(&Event::error(now_ns(), err)) {
            tracing::error!("{}", e.report());
        }
    }

    /// The last UIO count read (the initial count before any).
    pub fn last_count(&self) -> u32 {
        self.last
    }

    /// Presses accepted so far (each ran a step).
    pub fn presses(&self) -> u64 {
        self.presses
    }

    /// Presses refused by the debounce.
    pub fn bounces(&self) -> u64 {
        self.bounces
    }

    /// Interrupts coalesced into other reads.
    pub fn coalesced(&self) -> u64 {
        self.coalesced
    }

    /// Interrupts since start: `presses + bounces + coalesced`.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// The running config.
    pub fn config(&self) -> &DaemonConfig {
        &self.config
    }

    /// The plan's state.
    pub fn runner(&self) -> &PlanRunner {
        &self.runner
    }

    /// The interrupt source.
    pub fn irq(&self) -> &I {
        &self.irq
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// The event writer.
    pub fn out(&self) -> &EventWriter<W> {
        &self.out
    }
}

/// What a signal asks of the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// SIGTERM or SIGINT: free, summarize, stop.
    Stop(StopReason),
    /// SIGHUP: re-read the config, reopen the log.
    Reload,
    /// SIGUSR1: write a `stats` line.
    Stats,
}

/// SIGTERM, SIGINT, SIGHUP and SIGUSR1, delivered through a non-blocking signalfd.
#[derive(Debug)]
pub struct Signals {
    fd: SignalFd,
}

impl Signals {
    /// Blocks SIGTERM, SIGINT, SIGHUP and SIGUSR1 in the calling thread and opens a
    /// signalfd for them.
    /// Call it before any other thread starts, so every thread inherits the mask and the
    /// signals stay pending for the signalfd.
    pub fn new() -> Result<Self> {
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGTERM);
        mask.add(Signal::SIGINT);
        mask.add(Signal::SIGHUP);
        mask.add(Signal::SIGUSR1);
        mask.thread_block()
            .map_err(|source| Error::Signals { source })?;
        let fd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|source| Error::Signals { source })?;
        Ok(Self { fd })
    }

    /// Reads one pending signal; `Ok(None)` when none is pending.
    pub fn read(&mut self) -> Result<Option<Request>> {
        loop {
            return match self.fd.read_signal() {
                Ok(None) => Ok(None),
                Ok(Some(info)) => Ok(Some(match info.ssi_signo {
                    n if n == Signal::SIGINT as u32 => Request::Stop(StopReason::Sigint),
                    n if n == Signal::SIGHUP as u32 => Request::Reload,
                    n if n == Signal::SIGUSR1 as u32 => Request::Stats,
                    _ => Request::Stop(StopReason::Sigterm),
                })),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(source) => Err(Error::Signals { source }),
            };
        }
    }
}

impl AsRawFd for Signals {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn poll_err(source: io::Error) -> Error {
    Error::Poll { source }
}

/// Opens the output anew for a log path (`None`: stdout), as [`open_output`] does.
pub type Reopen<W> = fn(Option<&Path>) -> Result<W>;

/// What the loop does besides the daemon's own work: systemd notifications and reloads.
pub struct Hooks<W> {
    /// Where `READY=1`, `STATUS=` and `STOPPING=1` go.
    pub notifier: Notifier,
    /// Re-read on SIGHUP when it names a config file.
    pub source: Option<ConfigSource>,
    /// Opens the output anew on SIGHUP (`None`: the output is kept).
    pub reopen: Option<Reopen<W>>,
}

impl<W> Default for Hooks<W> {
    fn default() -> Self {
        Self {
            notifier: Notifier::disabled(),
            source: None,
            reopen: None,
        }
    }
}

impl<W> fmt::Debug for Hooks<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("notifier", &self.notifier)
            .field("source", &self.source)
            .field("reopen", &self.reopen.is_some())
            .finish()
    }
}

/// [`run_with`] without notifications, reloads of a file or reopens.
pub fn run<D, I, W>(daemon: &mut Daemon<D, I, W>, signals: &mut Signals) -> Result<StopReason>
where
    D: Device,
    I: IrqSource + AsRawFd,
    W: Write,
{
    run_with(daemon, signals, &Hooks::default())
}

/// The event loop: registers the interrupt source and the signals with one `mio::Poll`,
/// writes the `start` line, tells systemd `READY=1`, then handles events until SIGTERM
/// or SIGINT (SIGHUP reloads, SIGUSR1 writes `stats`), and writes the `summary` and
/// `stop` lines. Returns the signal that stopped it; on error, returns it without
/// writing a line (see [`Daemon::fail`]).
///
/// No timeouts: an idle daemon sleeps in `epoll_wait`.
pub fn run_with<D, I, W>(
    daemon: &mut Daemon<D, I, W>,
    signals: &mut Signals,
    hooks: &Hooks<W>,
) -> Result<StopReason>
where
    D: Device,
    I: IrqSource + AsRawFd,
    W: Write,
{
    let mut poll = Poll::new().map_err(poll_err)?;
    let irq_fd = daemon.irq().as_raw_fd();
    let sig_fd = signals.as_raw_fd();
    poll.registry()
        .register(&mut SourceFd(&irq_fd), UIO_TOKEN, Interest::READABLE)
        .map_err(poll_err)?;
    poll.registry()
        .register(&mut SourceFd(&sig_fd), SIGNAL_TOKEN, Interest::READABLE)
        .map_err(poll_err)?;

    // Registered first: an interrupt from here on is reported by the first poll.
    daemon.start()?;
    // The devices are open, the heap mapped (by the caller), the descriptors registered.
    hooks.notifier.ready(&daemon.status());

    let config_file = hooks.source.as_ref().and_then(|s| s.file.clone());
    let mut events = Events::with_capacity(8);
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(poll_err(e)),
        }
        if events.is_empty() {
            tracing::debug!("poll returned without events");
        }
        let mut stop = None;
        for event in events.iter() {
            match event.token() {
                UIO_TOKEN => {
                    // Edge-triggered: drain until the read would block.
                    if daemon.on_readable()? == 0 {
                        tracing::debug!("spurious wakeup on the uio device");
                    } else if hooks.notifier.enabled() {
                        hooks.notifier.status(&daemon.status());
                    }
                }
                SIGNAL_TOKEN => {
                    let mut any = false;
                    while let Some(request) = signals.read()? {
                        any = true;
                        match request {
                            Request::Stop(reason) => {
                                stop.get_or_insert(reason);
                            }
                            Request::Reload => {
                                let loaded = hooks
                                    .source
                                    .as_ref()
                                    .filter(|s| s.file.is_some())
                                    .map(ConfigSource::load);
                                daemon.reload(config_file.as_deref(), loaded, hooks.reopen)?;
                                hooks.notifier.status(&daemon.status());
                            }
                            Request::Stats => daemon.write_stats()?,
                        }
                    }
                    if !any {
                        tracing::debug!("spurious wakeup on the signalfd");
                    }
                }
                token => tracing::warn!("event for unknown token {}", token.0),
            }
        }
        if let Some(reason) = stop {
            hooks.notifier.stopping();
            daemon.stop(reason)?;
            return Ok(reason);
        }
    }
}

/// Opens where the JSON lines go: the log file (appending, created if missing) or a
/// duplicate of stdout as an unbuffered `File`.
pub fn open_output(log: Option<&std::path::Path>) -> Result<File> {
    match log {
        Some(path) => OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .map_err(|source| Error::Open {
                path: path.to_path_buf(),
                source,
            }),
        None => io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .map(File::from)
            .map_err(|source| Error::Open {
                path: "stdout".into(),
                source,
            }),
    }
}

/// kmemlabd from start to finish: blocks the signals, opens the output, `/dev/kmemlab`
/// and the UIO device, maps the heap and runs the loop, notifying `$NOTIFY_SOCKET` if
/// set. `source` is re-read on SIGHUP. A failure after the output is open is also
/// written as an `error` line.
pub fn serve(config: &DaemonConfig, source: Option<&ConfigSource>) -> Result<StopReason> {
    let mut signals = Signals::new()?;
    let mut out = EventWriter::new(open_output(config.log.as_deref())?);
    let opened = (|| {
        let device = KmemlabDevice::open(&config.device)?;
        let info = find_uio(&config.sysfs_uio, &config.uio_name)?;
        let uio = Uio::open(&info)?;
        Ok((device, uio))
    })();
    let (device, uio) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            if let Err(e2) = out.emit(&Event::error(now_ns(), &e)) {
                tracing::error!("{}", e2.report());
            }
            return Err(e);
        }
    };
    tracing::info!(
        "using {} and {} (count {})",
        device.path().display(),
        uio.path().display(),
        uio.initial_count()
    );
    let start = StartInfo {
        uio: uio.path().display().to_string(),
        device: device.path().display().to_string(),
        irq_count: uio.initial_count(),
    };
    // The heap's first page holds the interrupt ring; without it the daemon runs on,
    // with irq_to_wake_ns null.
    // Mapped writable (never written): the atomic loads of the ring need memory that is
    // valid for writes.
    let ring = match uio.map(0) {
        Ok(map) => Some(map),
        Err(e) => {
            tracing::warn!(
                "no interrupt ring, irq_to_wake_ns will be null: {}",
                e.report()
            );
            None
        }
    };
    let mut daemon = Daemon::new(device, uio, out, start).with_config(config);
    if let Some(map) = ring {
        daemon = daemon.with_ring(Box::new(map));
    }
    let hooks = Hooks {
        notifier: Notifier::from_env(),
        source: source.cloned(),
        reopen: Some(open_output),
    };
    run_with(&mut daemon, &mut signals, &hooks).inspect_err(|e| daemon.fail(e))
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::VecDeque;
    use std::rc::Rc;

    use kmemlab::uapi::{Info, ABI_VERSION, SOURCE_IRQ, SOURCE_TRIGGER};
    use nix::errno::Errno;
    use serde_json::Value;

    use super::*;
    use kmemlab::device::MockDevice;
    use kmemlab::ring::RingBuilder;

    /// What happened, in order, across the interrupt source and the output.
    type Log = Rc<RefCell<Vec<String>>>;

    /// Every JSON line written, parsed.
    type Lines = Rc<RefCell<Vec<Value>>>;

    /// A scripted interrupt source: `Some(count)` reads, `None` would block.
    struct MockIrq {
        reads: VecDeque<Option<u32>>,
        fail_enable: bool,
        log: Log,
    }

    impl IrqSource for MockIrq {
        fn read_count(&mut self) -> Result<Option<u32>> {
            let r = self.reads.pop_front().flatten();
            self.log.borrow_mut().push(match r {
                Some(c) => format!("read {c}"),
                None => "would block".into(),
            });
            Ok(r)
        }

        fn enable(&mut self) -> Result<()> {
            if self.fail_enable {
                return Err(Error::IrqEnable {
                    path: "/dev/uio0".into(),
                    source: io::Error::from(Errno::EIO),
                });
            }
            self.log.borrow_mut().push("enable".into());
            Ok(())
        }
    }

    /// An output that logs a summary of each line (each write is one whole line) and
    /// keeps the parsed line.
    struct LogWriter(Log, Lines);

    impl Write for LogWriter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let line = std::str::from_utf8(buf).unwrap();
            assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
            let v: Value = serde_json::from_str(line).unwrap();
            let mut s = format!("line {}", v["event"].as_str().unwrap());
            for key in [
                "seq",
                "irq_count",
                "missed",
                "kind",
                "handle",
                "op",
                "reason",
                "abi_version",
                "error",
            ] {
                if let Some(x) = v.get(key) {
                    let x = match x {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    s.push_str(&format!(" {key}={x}"));
                }
            }
            self.0.borrow_mut().push(s);
            self.1.borrow_mut().push(v);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    type TestDaemon = Daemon<MockDevice, MockIrq, LogWriter>;

    fn daemon_with(
        device: MockDevice,
        initial: u32,
        reads: &[Option<u32>],
    ) -> (TestDaemon, Log, Lines) {
        let log = Log::default();
        let lines = Lines::default();
        let irq = MockIrq {
            reads: reads.iter().copied().collect(),
            fail_enable: false,
            log: log.clone(),
        };
        let start = StartInfo {
            uio: "/dev/uio0".into(),
            device: "/dev/kmemlab".into(),
            irq_count: initial,
        };
        let out = EventWriter::new(LogWriter(log.clone(), lines.clone()));
        let d = Daemon::new(device, irq, out, start)
            .with_vmallocinfo(None)
            .with_clock(|| 1_000_000);
        (d, log, lines)
    }

    fn take(log: &Log) -> Vec<String> {
        std::mem::take(&mut *log.borrow_mut())
    }

    fn take_lines(log: &Log) -> Vec<String> {
        take(log)
            .into_iter()
            .filter(|l| l.starts_with("line"))
            .collect()
    }

    #[test]
    fn missed_arithmetic() {
        assert_eq!(missed(0, 1), 0);
        assert_eq!(missed(1, 2), 0);
        assert_eq!(missed(1, 3), 1);
        assert_eq!(missed(0, 101), 100);
        // Wrap-around of the 32-bit counter.
        assert_eq!(missed(u32::MAX, 0), 0);
        assert_eq!(missed(u32::MAX - 1, 1), 2);
        assert_eq!(missed(u32::MAX, u32::MAX - 1), u32::MAX - 1);
        // No change: nothing missed (and no underflow).
        assert_eq!(missed(5, 5), 0);
    }

    #[test]
    fn start_enables_then_writes_the_start_line() {
        let (mut d, log, lines) = daemon_with(MockDevice::new(), 0, &[]);
        d.start().unwrap();
        assert_eq!(
            take(&log),
            [
                "enable".to_string(),
                format!("line start irq_count=0 abi_version={ABI_VERSION}")
            ]
        );
        let v = &lines.borrow()[0];
        assert_eq!(
            v["plan"],
            "kmalloc:1:GFP_ATOMIC,vmalloc:1:GFP_KERNEL,dma_coherent:1K:GFP_ATOMIC"
        );
        assert_eq!(v["ring"], false);
        assert_eq!(d.device().info_calls(), 1);
    }

    #[test]
    fn start_refuses_another_abi() {
        let dev = MockDevice::with_info(Info {
            abi_version: ABI_VERSION + 1,
            ..Info::default()
        });
        let (mut d, log, _) = daemon_with(dev, 0, &[]);
        assert!(matches!(d.start(), Err(Error::AbiMismatch { .. })));
        assert!(take(&log).is_empty());
    }

    #[test]
    fn start_fails_when_info_fails() {
        let (mut d, log, _) = daemon_with(MockDevice::failing(Errno::ENOTTY), 0, &[]);
        let err = d.start().unwrap_err();
        assert_eq!(err.errno_name(), "ENOTTY");
        d.fail(&err);
        assert_eq!(take(&log), ["line error error=ENOTTY"]);
    }

    #[test]
    fn six_presses_replay_the_seed_plan() {
        let reads: Vec<Option<u32>> = (1..=6).map(Some).chain([None]).collect();
        let (mut d, log, lines) = daemon_with(MockDevice::new(), 0, &reads);
        assert_eq!(d.on_readable().unwrap(), 6);
        assert_eq!(
            take_lines(&log),
            [
                "line alloc seq=1 irq_count=1 missed=0 kind=kmalloc handle=1",
                "line free seq=2 irq_count=2 missed=0 kind=kmalloc handle=1",
                "line alloc seq=3 irq_count=3 missed=0 kind=vmalloc handle=2",
                "line free seq=4 irq_count=4 missed=0 kind=vmalloc handle=2",
                "line alloc seq=5 irq_count=5 missed=0 kind=dma_coherent handle=3",
                "line free seq=6 irq_count=6 missed=0 kind=dma_coherent handle=3",
            ]
        );
        let lines = lines.borrow();
        assert_eq!(lines[0]["size"], 1);
        assert_eq!(lines[0]["gfp"], serde_json::json!(["GFP_ATOMIC"]));
        assert_eq!(lines[0]["usable_size"], 8);
        assert_eq!(lines[4]["size"], 1024);
        assert_eq!(lines[4]["gfp"], serde_json::json!(["GFP_ATOMIC"]));
        assert!(lines[4]["dma"].is_string());
        assert_eq!(lines[5]["size"], 1024);
        assert!(lines[5]["free_ns"].as_u64().is_some());
        for v in lines.iter() {
            // No ring: the latency is unknown, but the field is there.
            assert_eq!(v.get("irq_to_wake_ns"), Some(&Value::Null));
        }
        assert_eq!(lines[2]["vmallocinfo"], Value::Null);
        assert!(d.device().live().is_empty());
        assert_eq!(d.presses(), 6);
    }

    #[test]
    fn each_press_is_re_enabled_before_its_line() {
        let (mut d, log, _) = daemon_with(MockDevice::new(), 0, &[Some(1), None]);
        assert_eq!(d.on_readable().unwrap(), 1);
        assert_eq!(
            take(&log),
            [
                "read 1",
                "enable",
                "line alloc seq=1 irq_count=1 missed=0 kind=kmalloc handle=1",
                "would block"
            ]
        );
        assert_eq!(d.last_count(), 1);
    }

    #[test]
    fn drains_until_would_block_and_counts_missed() {
        let reads = [Some(2), Some(5), None, Some(6), None];
        let (mut d, log, _) = daemon_with(MockDevice::new(), 1, &reads);
        assert_eq!(d.on_readable().unwrap(), 2);
        assert_eq!(d.on_readable().unwrap(), 1);
        assert_eq!(
            take(&log),
            [
                "read 2",
                "enable",
                "line alloc seq=1 irq_count=2 missed=0 kind=kmalloc handle=1",
                "read 5",
                "enable",
                "line coalesced irq_count=5 missed=2",
                "line free seq=2 irq_count=5 missed=2 kind=kmalloc handle=1",
                "would block",
                "read 6",
                "enable",
                "line alloc seq=3 irq_count=6 missed=0 kind=vmalloc handle=2",
                "would block"
            ]
        );
    }

    #[test]
    fn counts_across_wrap_around() {
        let reads = [Some(u32::MAX), Some(0), Some(2), None];
        let (mut d, log, _) = daemon_with(MockDevice::new(), u32::MAX - 1, &reads);
        assert_eq!(d.on_readable().unwrap(), 3);
        let lines: Vec<String> = take_lines(&log)
            .into_iter()
            .map(|l| l.split(" kind").next().unwrap().to_owned())
            .collect();
        assert_eq!(
            lines,
            [
                format!("line alloc seq=1 irq_count={} missed=0", u32::MAX),
                "line free seq=2 irq_count=0 missed=0".to_string(),
                "line coalesced irq_count=2 missed=1".to_string(),
                "line alloc seq=3 irq_count=2 missed=1".to_string(),
            ]
        );
    }

    #[test]
    fn a_failed_alloc_is_an_error_line_and_the_daemon_goes_on() {
        let reads = [Some(1), Some(2), Some(3), None];
        let (mut d, log, lines) = daemon_with(MockDevice::new(), 0, &reads);
        d.device().fail_next(Errno::ENOMEM);
        assert_eq!(d.on_readable().unwrap(), 3);
        assert_eq!(
            take_lines(&log),
            [
                "line error seq=1 irq_count=1 missed=0 kind=kmalloc handle=null op=alloc \
                 error=ENOMEM",
                "line alloc seq=2 irq_count=2 missed=0 kind=vmalloc handle=1",
                "line free seq=3 irq_count=3 missed=0 kind=vmalloc handle=1",
            ]
        );
        let v = &lines.borrow()[0];
        assert_eq!(v["size"], 1);
        assert_eq!(v["gfp"], serde_json::json!(["GFP_ATOMIC"]));
        assert_eq!(
            v["message"],
            "ioctl KMEMLAB_ALLOC failed: ENOMEM: Out of memory"
        );
    }

    #[test]
    fn a_failed_free_is_an_error_line_and_the_daemon_goes_on() {
        let reads = [Some(1), None, Some(2), Some(3), None];
        let (mut d, log, _) = daemon_with(MockDevice::new(), 0, &reads);
        d = d.with_plan(Plan::parse("pages:8K,kvmalloc:1").unwrap());
        assert_eq!(d.on_readable().unwrap(), 1);
        d.device().fail_next(Errno::EIO);
        assert_eq!(d.on_readable().unwrap(), 2);
        assert_eq!(
            take_lines(&log),
            [
                "line alloc seq=1 irq_count=1 missed=0 kind=pages handle=1",
                "line error seq=2 irq_count=2 missed=0 kind=pages handle=1 op=free error=EIO",
                "line alloc seq=3 irq_count=3 missed=0 kind=kvmalloc handle=2",
            ]
        );
    }

    #[test]
    fn a_press_beyond_the_quota_is_an_edquot_line() {
        // An unprivileged daemon whose plan holds more than its quota: the first press
        // allocates, the next (freeing) too, a 17 MiB one is refused.
        let reads = [Some(1), Some(2), Some(3), None];
        let (d, log, lines) = daemon_with(MockDevice::new().hiding_addresses(), 0, &reads);
        let mut d = d.with_plan(Plan::parse("kmalloc:1,vmalloc:17M").unwrap());
        assert_eq!(d.on_readable().unwrap(), 3);
        assert_eq!(
            take_lines(&log),
            [
                "line alloc seq=1 irq_count=1 missed=0 kind=kmalloc handle=1",
                "line free seq=2 irq_count=2 missed=0 kind=kmalloc handle=1",
                "line error seq=3 irq_count=3 missed=0 kind=vmalloc handle=null op=alloc error=EDQUOT",
            ]
        );
        let lines = lines.borrow();
        let v = &lines[2];
        assert_eq!(v["error"], "EDQUOT");
        assert!(v["message"]
            .as_str()
            .unwrap()
            .starts_with("ioctl KMEMLAB_ALLOC failed: EDQUOT"));
        // Without a ring the press has no record: no source, no timestamp.
        assert_eq!(
            (&v["source"], &v["irq_ktime_ns"]),
            (&Value::Null, &Value::Null)
        );
        // The alloc line says which addresses were hidden.
        assert_eq!(
            (&lines[0]["hidden"], &lines[0]["phys_hidden"]),
            (&true.into(), &true.into())
        );
    }

    #[test]
    fn irq_to_wake_comes_from_the_ring() {
        let mut ring = RingBuilder::standard();
        ring.push(1, 999_000, SOURCE_IRQ);
        ring.push(2, 400_000, SOURCE_TRIGGER);
        // Event 3's slot is being rewritten (seq 0): no figure for it.
        ring.push(3, 500_000, SOURCE_IRQ);
        let at = ring.slot_offset(3);
        ring.set_slot_seq(at, 0);
        let reads = [Some(1), Some(2), Some(3), Some(4), None];
        let (d, _, lines) = daemon_with(MockDevice::new(), 0, &reads);
        let mut d = d.with_ring(Box::new(ring.into_bytes()));
        d.start().unwrap();
        d.on_readable().unwrap();
        let lines = lines.borrow();
        assert_eq!(lines[0]["ring"], true);
        let lat: Vec<Option<u64>> = lines[1..]
            .iter()
            .map(|v| v["irq_to_wake_ns"].as_u64())
            .collect();
        // The test clock says 1_000_000 ns at every wake-up.
        assert_eq!(lat, [Some(1_000), Some(600_000), None, None]);
        // Source and timestamp come from the same record, or are null with it.
        let fields: Vec<(Value, Value)> = lines[1..]
            .iter()
            .map(|v| (v["source"].clone(), v["irq_ktime_ns"].clone()))
            .collect();
        assert_eq!(
            fields,
            [
                ("button".into(), 999_000.into()),
                ("trigger".into(), 400_000.into()),
                (Value::Null, Value::Null),
                (Value::Null, Value::Null),
            ]
        );
    }

    #[test]
    fn vmalloc_lines_carry_their_vmallocinfo_area() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vmallocinfo");
        // The mock's first vmalloc (handle 1) sits at 0xffff800080100000.
        std::fs::write(
            &path,
            "0xffff800080000000-0xffff800080002000    8192 foo+0x10/0x20 pages=1 vmalloc\n\
             0xffff800080100000-0xffff800080102000    8192 kmemlab_alloc+0x1c/0x40 [kmemlab] pages=1 vmalloc N0=1\n",
        )
        .unwrap();
        let reads = [Some(1), Some(2), Some(3), None];
        let (d, _, lines) = daemon_with(MockDevice::new(), 0, &reads);
        let mut d = d
            .with_plan(Plan::parse("vmalloc,kmalloc").unwrap())
            .with_vmallocinfo(Some(path.clone()));
        d.on_readable().unwrap();
        let lines = lines.borrow();
        assert_eq!(
            lines[0]["vmallocinfo"],
            "0xffff800080100000-0xffff800080102000    8192 kmemlab_alloc+0x1c/0x40 [kmemlab] \
             pages=1 vmalloc N0=1"
        );
        // kmalloc: null.
        assert_eq!(lines[2]["vmallocinfo"], Value::Null);

        // Hidden addresses: nothing to look up.
        let (d, _, lines) = daemon_with(MockDevice::new().hiding_addresses(), 0, &reads);
        let mut d = d
            .with_plan(Plan::parse("vmalloc").unwrap())
            .with_vmallocinfo(Some(path));
        d.on_readable().unwrap();
        assert_eq!(lines.borrow()[0]["vmallocinfo"], Value::Null);
        assert_eq!(lines.borrow()[0]["vaddr"], Value::Null);
    }

    #[test]
    fn vmallocinfo_lines_match_by_start_address() {
        let text = "0x0000000000000000-0x0000000000000000    8192 hidden\n\
                    garbage\n\
                    0xffff800080003000-0xffff800080005000    8192 a\n";
        let find = |vaddr| {
            let mut line = String::new();
            read_vmallocinfo_line(&mut io::Cursor::new(text), vaddr, &mut line)
                .unwrap()
                .then_some(line)
        };
        assert_eq!(
            find(0xffff_8000_8000_3000).as_deref(),
            Some("0xffff800080003000-0xffff800080005000    8192 a")
        );
        // An end address is not a start; a hidden (zero) start matches only zero.
        assert_eq!(find(0xffff_8000_8000_5000), None);
        assert_eq!(
            find(0).as_deref(),
            Some("0x0000000000000000-0x0000000000000000    8192 hidden")
        );
    }

    #[test]
    fn vmallocinfo_is_read_a_line_at_a_time_up_to_the_area() {
        let text = "0xffff800080000000-0xffff800080002000    8192 a pages=1 vmalloc\n\
                    0xffff800080003000-0xffff800080005000    8192 b pages=1 vmalloc  \n\
                    0xffff800080006000-0xffff800080008000    8192 unpurged vm_area\n";
        let mut reader = io::Cursor::new(text);
        let mut line = String::from("left over");
        assert!(read_vmallocinfo_line(&mut reader, 0xffff_8000_8000_3000, &mut line).unwrap());
        assert_eq!(
            line,
            "0xffff800080003000-0xffff800080005000    8192 b pages=1 vmalloc"
        );
        // It stopped there: the rest is still to be read.
        assert_eq!(
            reader.position() as usize,
            text.find("0xffff800080006000").unwrap()
        );
        let mut reader = io::Cursor::new(text);
        assert!(!read_vmallocinfo_line(&mut reader, 0xffff_8000_8000_1000, &mut line).unwrap());
        assert_eq!(reader.position() as usize, text.len());
        // The first and the last line are found too; an address inside an area is not.
        for (vaddr, want) in [
            (0xffff_8000_8000_0000, Some("a pages=1 vmalloc")),
            (0xffff_8000_8000_6000, Some("unpurged vm_area")),
            (0xffff_8000_8000_1000, None),
        ] {
            let mut reader = io::Cursor::new(text);
            let found = read_vmallocinfo_line(&mut reader, vaddr, &mut line).unwrap();
            assert_eq!(found, want.is_some(), "{vaddr:#x}");
            if let Some(want) = want {
                assert!(line.ends_with(want), "{line}");
            }
        }
    }

    #[test]
    fn a_vmallocinfo_lookup_never_sees_the_previous_files_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let (first, second) = (tmp.path().join("first"), tmp.path().join("second"));
        // The first lookup stops at its line and leaves the second one in the buffer.
        std::fs::write(
            &first,
            "0xffff800080000000-0xffff800080002000    8192 a\n\
             0xffff800080003000-0xffff800080005000    8192 b\n",
        )
        .unwrap();
        std::fs::write(&second, "0xffff800080006000-0xffff800080008000    8192 c\n").unwrap();
        let mut r = VmallocinfoReader::new();
        assert_eq!(
            r.area_line(&first, 0xffff_8000_8000_0000).unwrap(),
            Some("0xffff800080000000-0xffff800080002000    8192 a")
        );
        assert_eq!(r.area_line(&second, 0xffff_8000_8000_3000).unwrap(), None);
        assert_eq!(
            r.area_line(&second, 0xffff_8000_8000_6000).unwrap(),
            Some("0xffff800080006000-0xffff800080008000    8192 c")
        );
        assert!(r.area_line(&tmp.path().join("missing"), 0).is_err());
        assert_eq!(
            r.area_line(&first, 0xffff_8000_8000_3000).unwrap(),
            Some("0xffff800080003000-0xffff800080005000    8192 b")
        );
    }

    #[test]
    fn spurious_wakeup_writes_nothing() {
        let (mut d, log, _) = daemon_with(MockDevice::new(), 0, &[None]);
        assert_eq!(d.on_readable().unwrap(), 0);
        assert_eq!(take(&log), ["would block"]);
    }

    #[test]
    fn unchanged_count_re_enables_without_a_line() {
        let (mut d, log, _) = daemon_with(MockDevice::new(), 4, &[Some(4), None]);
        assert_eq!(d.on_readable().unwrap(), 1);
        assert_eq!(take(&log), ["read 4", "enable", "would block"]);
        assert_eq!(d.presses(), 0);
    }

    #[test]
    fn failed_enable_writes_no_line_and_runs_no_step() {
        let (mut d, log, _) = daemon_with(MockDevice::new(), 0, &[Some(1)]);
        d.irq.fail_enable = true;
        let err = d.on_readable().unwrap_err();
        assert_eq!(err.errno_name(), "EIO");
        assert_eq!(take(&log), ["read 1"]);
        assert_eq!(d.last_count(), 0);
        assert!(d.device().calls().is_empty());
    }

    #[test]
    fn stop_frees_what_is_held_then_reports_the_last_count() {
        let (mut d, log, lines) = daemon_with(MockDevice::new(), 0, &[Some(3), None]);
        d.on_readable().unwrap();
        take(&log);
        d.stop(StopReason::Sigint).unwrap();
        assert_eq!(
            take(&log),
            [
                "line free seq=null irq_count=3 missed=0 kind=kmalloc handle=1",
                "line summary irq_count=3",
                "line stop irq_count=3 reason=SIGINT"
            ]
        );
        assert_eq!(lines.borrow()[1]["irq_to_wake_ns"], Value::Null);
        assert!(d.device().live().is_empty());
    }

    #[test]
    fn stop_with_nothing_held_writes_only_the_stop_line() {
        let (mut d, log, _) = daemon_with(MockDevice::new(), 0, &[Some(1), Some(2), None]);
        d.on_readable().unwrap();
        take(&log);
        d.stop(StopReason::Sigterm).unwrap();
        assert_eq!(
            take(&log),
            [
                "line summary irq_count=2",
                "line stop irq_count=2 reason=SIGTERM"
            ]
        );
    }

    /// A clock the test moves: CLOCK_MONOTONIC ns at each wake-up, one per read.
    fn scripted_clock(times: &[u64]) -> fn() -> u64 {
        thread_local! {
            static TIMES: RefCell<VecDeque<u64>> = RefCell::default();
        }
        TIMES.with(|t| *t.borrow_mut() = times.iter().copied().collect());
        || TIMES.with(|t| t.borrow_mut().pop_front().unwrap_or(u64::MAX))
    }

    const MS: u64 = 1_000_000;

    #[test]
    fn debounce_refuses_presses_too_close_to_the_last_accepted_one() {
        let reads = [Some(1), Some(2), Some(3), Some(4), None];
        let (d, log, lines) = daemon_with(MockDevice::new(), 0, &reads);
        // 0 ms, +10 ms (bounce), +49 ms (bounce: still within 50 of the first), +50 ms.
        let mut d = d.with_debounce_ms(50).with_clock(scripted_clock(&[
            100 * MS,
            110 * MS,
            149 * MS,
            150 * MS,
        ]));
        assert_eq!(d.on_readable().unwrap(), 4);
        assert_eq!(
            take_lines(&log),
            [
                "line alloc seq=1 irq_count=1 missed=0 kind=kmalloc handle=1",
                "line bounce irq_count=2 missed=0",
                "line bounce irq_count=3 missed=0",
                "line free seq=2 irq_count=4 missed=0 kind=kmalloc handle=1",
            ]
        );
        let lines = lines.borrow();
        assert_eq!(lines[1]["since_last_ns"], 10 * MS);
        assert_eq!(lines[1]["clock"], "wake");
        assert_eq!(lines[1]["debounce_ms"], 50);
        assert_eq!(lines[2]["since_last_ns"], 49 * MS);
        assert!(lines[1].get("seq").is_none());
        assert_eq!((d.presses(), d.bounces(), d.events()), (2, 2, 4));
        // Only the accepted presses ran steps.
        assert_eq!(d.device().calls().len(), 2);
    }

    #[test]
    fn debounce_prefers_the_kernel_timestamps() {
        let mut ring = RingBuilder::standard();
        ring.push(1, 100 * MS, SOURCE_IRQ);
        ring.push(2, 105 * MS, SOURCE_IRQ);
        let reads = [Some(1), Some(2), None];
        let (d, log, lines) = daemon_with(MockDevice::new(), 0, &reads);
        // The daemon woke late for the first and on time for the second: the wake-ups
        // are 100 ms apart, the interrupts 5 ms.
        let mut d = d
            .with_ring(Box::new(ring.into_bytes()))
            .with_debounce_ms(50)
            .with_clock(scripted_clock(&[101 * MS, 201 * MS]));
        d.on_readable().unwrap();
        assert_eq!(
            take_lines(&log)[1],
            "line bounce irq_count=2 missed=0".to_string()
        );
        let v = &lines.borrow()[1];
        assert_eq!(v["clock"], "irq");
        assert_eq!(v["since_last_ns"], 5 * MS);
        assert_eq!(v["irq_to_wake_ns"], 96 * MS);
    }

    #[test]
    fn a_hundred_coalesced_interrupts_count_exactly() {
        // `trigger --count 100` as three wake-ups: counts 1, 60, 100.
        let reads = [Some(1), Some(60), None, Some(100), None];
        let (d, log, lines) = daemon_with(MockDevice::new(), 0, &reads);
        let mut d = d
            .with_debounce_ms(50)
            .with_clock(scripted_clock(&[0, MS, 2 * MS]));
        d.on_readable().unwrap();
        d.on_readable().unwrap();
        assert_eq!(
            take_lines(&log),
            [
                "line alloc seq=1 irq_count=1 missed=0 kind=kmalloc handle=1",
                "line coalesced irq_count=60 missed=58",
                "line bounce irq_count=60 missed=58",
                "line coalesced irq_count=100 missed=39",
                "line bounce irq_count=100 missed=39",
            ]
        );
        assert_eq!(lines.borrow()[3]["coalesced"], 97);
        assert_eq!(lines.borrow()[3]["events"], 100);
        assert_eq!(d.presses() + d.bounces() + d.coalesced(), 100);
        assert_eq!(d.events(), 100);
        d.write_stats().unwrap();
        let v = lines.borrow().last().unwrap().clone();
        assert_eq!(v["event"], "stats");
        assert_eq!(
            (
                &v["events"],
                &v["presses"],
                &v["bounces"],
                &v["coalesced"],
                &v["live"]
            ),
            (&100.into(), &1.into(), &2.into(), &97.into(), &1.into())
        );
        assert_eq!(v["kinds"]["kmalloc"]["count"], 1);
        assert_eq!(v["kinds"]["kmalloc"]["bytes"], 1);
        assert!(v["kinds"]["kmalloc"]["alloc_ns_p50"].as_u64().is_some());
        assert_eq!(v["kinds"]["kmalloc"]["free_ns_p50"], Value::Null);
    }

    #[test]
    fn summary_counts_per_kind() {
        let reads: Vec<Option<u32>> = (1..=7).map(Some).chain([None]).collect();
        let (mut d, _, lines) = daemon_with(MockDevice::new(), 0, &reads);
        d.device().fail_next(Errno::ENOMEM);
        d.on_readable().unwrap();
        d.stop(StopReason::Sigterm).unwrap();
        let lines = lines.borrow();
        let summary = &lines[lines.len() - 2];
        assert_eq!(summary["event"], "summary");
        assert_eq!(summary["presses"], 7);
        assert_eq!(summary["errors"], 1);
        assert_eq!(summary["live"], 0);
        let k = &summary["kinds"];
        assert_eq!(k["kmalloc"]["errors"], 1);
        assert_eq!(k["kmalloc"]["count"], 1);
        // vmalloc, dma_coherent, then kmalloc again (held, freed at stop).
        assert_eq!(k["vmalloc"]["count"], 1);
        assert_eq!(k["dma_coherent"]["count"], 1);
        assert_eq!(k["dma_coherent"]["bytes"], 1024);
        assert_eq!(k["kmalloc"]["frees"], 1);
        assert!(k["dma_coherent"]["free_ns_p99"].as_u64().is_some());
        assert_eq!(k["pages"]["count"], 0);
        assert!(d.device().live().is_empty());
    }

    #[test]
    fn reload_swaps_plan_and_debounce_or_keeps_them() {
        let (d, log, lines) = daemon_with(MockDevice::new(), 0, &[Some(1), None]);
        let mut d = d.with_config(&DaemonConfig {
            debounce_ms: 0,
            ..DaemonConfig::default()
        });
        d.on_readable().unwrap();
        take(&log);
        let new = DaemonConfig {
            plan: Plan::parse("pages:8K").unwrap(),
            debounce_ms: 20,
            uio_name: "other".into(),
            ..DaemonConfig::default()
        };
        d.reload(Some(Path::new("/etc/k.conf")), Some(Ok(new)), None)
            .unwrap();
        assert_eq!(
            take(&log),
            [
                "line free seq=null irq_count=1 missed=0 kind=kmalloc handle=1",
                "line reload"
            ]
        );
        let v = lines.borrow().last().unwrap().clone();
        assert_eq!(v["ok"], true);
        assert_eq!(v["changed"], serde_json::json!(["plan", "debounce_ms"]));
        assert_eq!(v["restart_needed"], serde_json::json!(["uio_name"]));
        assert_eq!(v["plan"], "pages:8K:GFP_KERNEL");
        assert_eq!(v["log_reopened"], false);
        assert_eq!(v["config"], "/etc/k.conf");
        assert_eq!(d.config().uio_name, "kmemlab");
        assert_eq!(d.config().debounce_ms, 20);
        assert!(d.runner().held().is_none());

        let bad = Err(Error::Config {
            path: "/etc/k.conf".into(),
            message: "unknown field `x`".into(),
        });
        d.reload(Some(Path::new("/etc/k.conf")), Some(bad), None)
            .unwrap();
        assert_eq!(
            take(&log),
            ["line error op=reload error=EINVAL", "line reload"]
        );
        let v = lines.borrow().last().unwrap().clone();
        assert_eq!(v["ok"], false);
        assert_eq!(v["changed"], serde_json::json!([]));
        assert_eq!(d.config().debounce_ms, 20);
        assert_eq!(d.runner().plan().to_string(), "pages:8K:GFP_KERNEL");
    }

    #[test]
    fn default_config() {
        let c = DaemonConfig::default();
        assert_eq!(c.device, PathBuf::from("/dev/kmemlab"));
        assert_eq!(c.uio_name, "kmemlab");
        assert_eq!(c.sysfs_uio, PathBuf::from("/sys/class/uio"));
        assert_eq!(c.log, None);
        assert_eq!(c.plan, Plan::default());
        assert_eq!(c.debounce_ms, 50);
    }

    #[test]
    fn log_file_is_appended() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("kmemlabd.log");
        std::fs::write(&path, "old\n").unwrap();
        let mut w = EventWriter::new(open_output(Some(&path)).unwrap());
        w.emit(&Event::Stop {
            ts_ns: 1,
            irq_count: 2,
            reason: StopReason::Sigterm,
        })
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("old\n{\"event\":\"stop\""));
        assert!(open_output(Some(&tmp.path().join("no/such/dir.log"))).is_err());
    }
}
