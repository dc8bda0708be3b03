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

use crate::config::DaemonConfig;
use crate::event::{monotonic_ns, now_ns, Event, Press, StopReason};
use crate::output::EventWriter;
use crate::plan::{Plan, PlanRunner};
use crate::stats::{Counters, Stats};
use crate::vmallocinfo::{VmallocinfoReader, VMALLOCINFO};

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

#[cfg(test)]
mod tests {
    use kmemlab::error::Error;

    use crate::event::StopReason;

    use crate::plan::Plan;

    use kmemlab::MockDevice;

    use kmemlab::uapi::{Info, ABI_VERSION};
    use nix::errno::Errno;
    use serde_json::Value;

    use crate::testing::*;

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
}
