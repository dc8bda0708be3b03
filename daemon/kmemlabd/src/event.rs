//! The daemon's JSON lines: one object per line, tagged by `"event"`, keys in
//! snake_case. Every event carries `ts_ns`: `CLOCK_REALTIME` in nanoseconds since the
//! Unix epoch, as an integer (it exceeds 2^53: parse it as a 64-bit integer, not a
//! double).
//!
//! A press (one UIO count read) writes exactly one line, `alloc`, `free` or `error`,
//! carrying the press fields: `seq` (the daemon's press number, from 1), `irq_count`
//! (the UIO count read), `missed` (interrupts coalesced into this read),
//! `irq_to_wake_ns` (the kernel's timestamp of the interrupt, from the heap's ring,
//! to the daemon's wake-up, both CLOCK_MONOTONIC; null when the ring has no record, and
//! always with the VFIO backend, where no kernel timestamp reaches the daemon),
//! and from that same record of the event that made the count `irq_count`: `source`
//! (`button` or `trigger`) and `irq_ktime_ns` (the kernel's timestamp), both null
//! without a record. At shutdown the allocation still held is freed with a `free` line
//! whose `seq`, `irq_to_wake_ns`, `source` and `irq_ktime_ns` are null. Addresses are `0x`
//! hex strings, or null when hidden: `vaddr` by the kernel's `kptr_restrict` rule
//! (`hidden`), `phys` and `dma` without CAP_SYS_ADMIN (`phys_hidden`).
//!
//! ```text
//! {"event":"start","ts_ns":1767225600000000000,"pid":81,"backend":"uio","uio":"/dev/uio0","vfio":null,"device":"/dev/kmemlab","abi_version":2,"irq_count":0,"plan":"kmalloc:1:GFP_ATOMIC,vmalloc:1:GFP_KERNEL,dma_coherent:1K:GFP_ATOMIC","ring":true}
//! {"event":"alloc","ts_ns":1767225601000000000,"seq":1,"irq_count":1,"missed":0,"irq_to_wake_ns":48210,"source":"button","irq_ktime_ns":86400000000000,"handle":1,"kind":"kmalloc","size":1,"usable_size":8,"gfp":["GFP_ATOMIC"],"vaddr":"0xffff000002a1c3e8","phys":"0x42a1c3e8","dma":null,"pages":1,"phys_segments":1,"zeroed":false,"alloc_ns":380,"hidden":false,"phys_hidden":false,"persist":false,"vmallocinfo":null}
//! {"event":"free","ts_ns":1767225602000000000,"seq":2,"irq_count":2,"missed":0,"irq_to_wake_ns":39120,"source":"trigger","irq_ktime_ns":86401000000000,"handle":1,"kind":"kmalloc","size":1,"free_ns":210}
//! {"event":"error","ts_ns":1767225603000000000,"seq":3,"irq_count":3,"missed":0,"irq_to_wake_ns":40110,"source":"button","irq_ktime_ns":86402000000000,"op":"alloc","error":"ENOMEM","message":"ioctl KMEMLAB_ALLOC failed: ENOMEM: Out of memory","kind":"vmalloc","size":1,"gfp":["GFP_KERNEL"],"handle":null}
//! {"event":"stop","ts_ns":1767225604000000000,"irq_count":3,"reason":"SIGTERM"}
//! {"event":"error","ts_ns":1767225602000000000,"error":"EIO","message":"failed to read the interrupt count from /dev/uio0: Input/output error (os error 5)"}
//! ```
//!
//! The last form (no `seq`) is fatal: the daemon exits after it.
//!
//! Lines beyond the presses (issue 4):
//!
//! - `coalesced`: the UIO count jumped by more than one between two reads; `missed`
//!   interrupts had no read of their own. Written before the line of the press that read
//!   the count (each wake-up runs at most one plan step).
//! - `bounce`: a press less than the debounce interval after the previous accepted press;
//!   it runs no step and has no `seq`.
//! - `stats` (SIGUSR1) and `summary` (at shutdown, before `stop`): counts per kind and
//!   latency quantiles. Always `events == presses + bounces + coalesced`, the UIO count
//!   minus the start count.
//! - `reload` (SIGHUP): what changed; an invalid config on reload is an `error` line with
//!   `"op":"reload"` before a `reload` line with `"ok":false`, and the daemon goes on.
//!
//! There is no separate `press` line: an accepted press is its `alloc`, `free` or
//! `error` line (they carry `seq`), a refused one its `bounce` line. The contract is
//! `daemon/kmemlabd/schema/kmemlabd-event.schema.json`.

use kmemlab::error::{Error, Result};
use kmemlab::report::AllocReport;
use serde::Serialize;

use crate::config::Backend;
use crate::stats::Counters;

pub use kmemlab::clock::{monotonic_ns, now_ns};

/// Why the daemon stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum StopReason {
    /// `SIGTERM` (systemd stop, `kill`).
    #[serde(rename = "SIGTERM")]
    Sigterm,
    /// `SIGINT` (Ctrl-C).
    #[serde(rename = "SIGINT")]
    Sigint,
    /// A fatal error, written as an `error` line just before (the UIO device went away,
    /// the output failed); kmemlabd exits non-zero.
    #[serde(rename = "error")]
    Error,
}

/// The fields every line about a press carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Press {
    /// Timestamp of the wake-up, `CLOCK_REALTIME` ns.
    pub ts_ns: u64,
    /// The daemon's press number, from 1; null for the free at shutdown.
    pub seq: Option<u64>,
    /// The UIO event count read (the kernel's, wrapping at 2^32).
    pub irq_count: u32,
    /// Interrupts that came without a read of their own since the previous press
    /// (coalesced into this one).
    pub missed: u32,
    /// Kernel interrupt timestamp to daemon wake-up, ns; null when unknown.
    pub irq_to_wake_ns: Option<u64>,
    /// What raised the event of `irq_count`, from its ring record: `button` or
    /// `trigger`; null when there is no record (or its source is unknown).
    pub source: Option<Source>,
    /// The kernel's timestamp of the event of `irq_count` (`ktime_get_ns()`,
    /// CLOCK_MONOTONIC), from its ring record; null when there is none.
    pub irq_ktime_ns: Option<u64>,
}

/// What raised a UIO event, as its ring record says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The device-tree interrupt: the button (`SOURCE_IRQ`).
    Button,
    /// The TRIGGER ioctl: the software button (`SOURCE_TRIGGER`).
    Trigger,
}

impl Source {
    /// The source a record's `source` field names; `None` for a value this version does
    /// not know.
    pub fn from_abi(source: u32) -> Option<Self> {
        match source {
            kmemlab::uapi::SOURCE_IRQ => Some(Source::Button),
            kmemlab::uapi::SOURCE_TRIGGER => Some(Source::Trigger),
            _ => None,
        }
    }
}

/// Which operation of a plan step failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// ALLOC.
    Alloc,
    /// FREE.
    Free,
    /// Reloading the config (SIGHUP).
    Reload,
}

/// Which clock a bounce's `since_last_ns` was measured on, both CLOCK_MONOTONIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Clock {
    /// The kernel's timestamps of the interrupts, from the heap's ring (preferred:
    /// unaffected by how late the daemon woke).
    Irq,
    /// The daemon's wake-ups (no ring record).
    Wake,
}

/// What the `start` line says of the VFIO backend's device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VfioStart {
    /// The no-IOMMU group node, e.g. `/dev/vfio/noiommu-0`.
    pub group: String,
    /// The bus in sysfs, e.g. `amba`.
    pub bus: String,
    /// The device, e.g. `9030000.pl061`.
    pub device: String,
    /// Its driver, `vfio-amba` or `vfio-platform`.
    pub driver: String,
    /// The GPIO line of the button.
    pub line: u32,
}

/// One line of the daemon's JSON stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The daemon is set up and about to wait for interrupts.
    Start {
        /// Timestamp, `CLOCK_REALTIME` ns.
        ts_ns: u64,
        /// The daemon's process id.
        pid: u32,
        /// Where the interrupts come from: `uio` or `vfio`.
        backend: Backend,
        /// The UIO device node, e.g. `/dev/uio0`; null with the VFIO backend.
        uio: Option<String>,
        /// The VFIO device and line; null with the UIO backend.
        vfio: Option<VfioStart>,
        /// The misc device node, e.g. `/dev/kmemlab`.
        device: String,
        /// The module's ABI version (INFO).
        abi_version: u32,
        /// The UIO interrupt count at start; later counts are relative to it.
        irq_count: u32,
        /// The plan, as `--plan` would give it.
        plan: String,
        /// Whether the interrupt ring is mapped (else `irq_to_wake_ns` is always null; it
        /// is never mapped with the VFIO backend).
        ring: bool,
    },
    /// A press allocated its step.
    Alloc {
        /// The press.
        #[serde(flatten)]
        press: Press,
        /// The module's report.
        #[serde(flatten)]
        alloc: AllocReport,
        /// For vmalloc-backed memory, the `/proc/vmallocinfo` line of its area; null
        /// when the file is unreadable, addresses are hidden, or no area starts there.
        vmallocinfo: Option<String>,
    },
    /// A press (or shutdown) freed the held allocation.
    Free {
        /// The press (`seq` null at shutdown).
        #[serde(flatten)]
        press: Press,
        /// The handle freed.
        handle: u64,
        /// Its kind.
        kind: &'static str,
        /// Its requested size.
        size: u64,
        /// Time in the free call, ns.
        free_ns: u64,
    },
    /// A press's step failed; the daemon goes on.
    #[serde(rename = "error")]
    StepError {
        /// The press.
        #[serde(flatten)]
        press: Press,
        /// What failed.
        op: Op,
        /// The errno name, e.g. `ENOMEM`.
        error: String,
        /// The error message with its causes.
        message: String,
        /// The step's kind.
        kind: &'static str,
        /// The step's size.
        size: u64,
        /// The step's gfp flags.
        gfp: Vec<&'static str>,
        /// The handle a failed free was for (null for a failed alloc).
        handle: Option<u64>,
    },
    /// The UIO count jumped by more than one since the previous read.
    Coalesced {
        /// Timestamp, `CLOCK_REALTIME` ns.
        ts_ns: u64,
        /// The UIO count read.
        irq_count: u32,
        /// Interrupts without a read of their own (the jump minus one).
        missed: u32,
        /// Running total of coalesced interrupts since start.
        coalesced: u64,
        /// Interrupts since start (presses + bounces + coalesced).
        events: u64,
    },
    /// A press within the debounce interval of the previous accepted press: no step.
    Bounce {
        /// Timestamp, `CLOCK_REALTIME` ns.
        ts_ns: u64,
        /// The UIO count read.
        irq_count: u32,
        /// Interrupts coalesced into this read.
        missed: u32,
        /// Since the previous accepted press, ns.
        since_last_ns: u64,
        /// The debounce interval, ms.
        debounce_ms: u64,
        /// Which timestamps `since_last_ns` compares.
        clock: Clock,
        /// Kernel interrupt timestamp to daemon wake-up, ns; null when unknown.
        irq_to_wake_ns: Option<u64>,
    },
    /// Counts so far (SIGUSR1).
    Stats {
        /// Timestamp, `CLOCK_REALTIME` ns.
        ts_ns: u64,
        /// The counts.
        #[serde(flatten)]
        counters: Counters,
    },
    /// Counts at shutdown, after the held allocation was freed, before `stop`.
    Summary {
        /// Timestamp, `CLOCK_REALTIME` ns.
        ts_ns: u64,
        /// The counts.
        #[serde(flatten)]
        counters: Counters,
    },
    /// SIGHUP: the config was re-read and the log reopened.
    Reload {
        /// Timestamp, `CLOCK_REALTIME` ns.
        ts_ns: u64,
        /// Whether the config file was valid (else the running config is kept).
        ok: bool,
        /// The config file re-read; null when kmemlabd runs without `--config`.
        config: Option<String>,
        /// Keys whose value changed and took effect (`plan`, `debounce_ms`, `log`).
        changed: Vec<&'static str>,
        /// Keys that changed but take effect only at the next start (`uio_name`,
        /// `device`, `backend`, `vfio_bus`, `vfio_device`, `vfio_line`).
        restart_needed: Vec<&'static str>,
        /// Whether the output was reopened (the log file, or stdout).
        log_reopened: bool,
        /// The plan now running.
        plan: String,
        /// The debounce interval now, ms.
        debounce_ms: u64,
        /// The log file now; null: stdout.
        log: Option<String>,
    },
    /// A failed reload (invalid config, log not reopened); the daemon goes on.
    #[serde(rename = "error")]
    ReloadError {
        /// Timestamp, `CLOCK_REALTIME` ns.
        ts_ns: u64,
        /// Always `reload`.
        op: Op,
        /// The errno name, e.g. `EINVAL`.
        error: String,
        /// The error message with its causes.
        message: String,
    },
    /// The daemon stopped: on a signal, or after a fatal `error` line.
    Stop {
        /// Timestamp, `CLOCK_REALTIME` ns.
        ts_ns: u64,
        /// The last UIO event count read.
        irq_count: u32,
        /// The signal that stopped it, or `error`.
        reason: StopReason,
    },
    /// A fatal error; the daemon exits after this line.
    Error {
        /// Timestamp, `CLOCK_REALTIME` ns.
        ts_ns: u64,
        /// The errno name, e.g. `ENOENT`.
        error: String,
        /// The error message with its causes.
        message: String,
    },
}

impl Event {
    /// The `error` event for `err`.
    pub fn error(ts_ns: u64, err: &Error) -> Self {
        Event::Error {
            ts_ns,
            error: err.errno_name(),
            message: err.report(),
        }
    }

    /// The event as one JSON line, newline included.
    pub fn to_line(&self) -> Result<String> {
        let mut line = serde_json::to_string(self).map_err(|source| Error::Json { source })?;
        line.push('\n');
        Ok(line)
    }
}

/// A press line's fields, with `seq`, for the event and output tests.
#[cfg(test)]
pub(crate) fn test_press(seq: Option<u64>) -> Press {
    Press {
        ts_ns: 5,
        seq,
        irq_count: 3,
        missed: 1,
        irq_to_wake_ns: Some(4200),
        source: Some(Source::Button),
        irq_ktime_ns: Some(1_000_000),
    }
}

#[cfg(test)]
mod tests;
