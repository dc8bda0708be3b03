//! The daemon's state ([`Daemon`]), free of descriptors and polling: the start line,
//! counters, `stats` lines and the stop that frees what it holds. A press is handled in
//! [`crate::press`], a reload in [`crate::reload`].

use std::fmt;
use std::io::Write;
use std::path::PathBuf;

use kmemlab::device::{check_abi, Device};
use kmemlab::error::{Error, Result};
use kmemlab::ring::RingMemory;
use kmemlab::uio::IrqSource;

use crate::config::{Backend, DaemonConfig};
use crate::event::{monotonic_ns, now_ns, Event, Press, StopReason, VfioStart};
use crate::output::EventWriter;
use crate::plan::{Plan, PlanRunner};
use crate::stats::{Counters, Stats};
use crate::vmallocinfo::{VmallocinfoReader, VMALLOCINFO};

/// What the `start` line names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartInfo {
    /// The UIO device node (UIO backend; with [`Daemon::with_vfio`] the line's `uio` is
    /// null and this is not used).
    pub uio: String,
    /// The misc device node.
    pub device: String,
    /// The UIO count when the device was opened.
    pub irq_count: u32,
}

/// The daemon's state and its reaction to each event, free of descriptors and polling.
pub struct Daemon<D, I, W: Write> {
    pub(crate) device: D,
    pub(crate) irq: I,
    pub(crate) out: EventWriter<W>,
    pub(crate) start: StartInfo,
    pub(crate) last: u32,
    pub(crate) presses: u64,
    pub(crate) runner: PlanRunner,
    pub(crate) ring: Option<Box<dyn RingMemory>>,
    pub(crate) vfio: Option<VfioStart>,
    pub(crate) monotonic: fn() -> u64,
    pub(crate) vmallocinfo: Option<PathBuf>,
    pub(crate) vmallocinfo_reader: VmallocinfoReader,
    pub(crate) config: DaemonConfig,
    pub(crate) last_accepted_ns: Option<u64>,
    pub(crate) bounces: u64,
    pub(crate) coalesced: u64,
    pub(crate) events: u64,
    pub(crate) stats: Stats,
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
            .field("vfio", &self.vfio)
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
            vfio: None,
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

    /// Names the VFIO backend's device in the `start` line (`"backend":"vfio"`, `uio`
    /// null): the interrupts come from a VFIO device, not from the module's UIO device.
    #[must_use]
    pub fn with_vfio(mut self, vfio: VfioStart) -> Self {
        self.vfio = Some(vfio);
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
            backend: if self.vfio.is_some() {
                Backend::Vfio
            } else {
                Backend::Uio
            },
            uio: match self.vfio {
                Some(_) => None,
                None => Some(self.start.uio.clone()),
            },
            vfio: self.vfio.clone(),
            device: self.start.device.clone(),
            abi_version: info.abi_version,
            irq_count: self.start.irq_count,
            plan: self.runner.plan().to_string(),
            ring: self.ring.is_some(),
        })
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
    pub(crate) fn release(&mut self) -> Result<()> {
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
