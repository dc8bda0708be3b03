//! kmemlab userspace: the library behind `kmemlabd` and `kmemlabctl`.
//!
//! - [`device`]: the [`Device`] seam over `/dev/kmemlab` ([`KmemlabDevice`]) and its
//!   [`MockDevice`] for tests.
//! - [`spec`]: kinds, gfp flags and sizes by name, parsed and formatted one way.
//! - [`report`]: what the module reports, as JSON objects and tables.
//! - [`ctl`]: `kmemlabctl`'s command line and output.
//! - [`bench`]: `kmemlabctl bench` sweeps: the in-kernel floor against the userspace
//!   single-call and batched paths.
//! - [`logreport`]: `kmemlabctl report`: a kmemlabd log summarized and charted.
//! - [`plan`]: the daemon's cycle of allocation steps and its step machine.
//! - [`uio`]: finding the kmemlab UIO device by name, reading its interrupt count,
//!   re-enabling its interrupt ([`IrqSource`]) and mapping its heap.
//! - [`ring`]: the heap's interrupt ring, for interrupt-to-wake latency.
//! - [`event`]: the JSON lines the daemon writes.
//! - [`config`]: kmemlabd's flags and config file.
//! - [`notify`]: systemd readiness notifications (`sd_notify`).
//! - [`stats`]: the counts and latency histograms of `stats` and `summary` lines.
//! - [`daemon`]: the per-press logic ([`Daemon`]) and the `mio` event loop ([`run`]).
//!
//! All `unsafe` code (ioctls, atomic loads from shared memory) lives in the private
//! `sys` module.

#![deny(unsafe_code)]

pub mod bench;
pub mod config;
pub mod ctl;
pub mod daemon;
pub mod device;
pub mod error;
pub mod event;
pub mod logreport;
pub mod notify;
pub mod plan;
pub mod report;
pub mod ring;
pub mod spec;
pub mod stats;
#[allow(unsafe_code)]
mod sys;
pub mod uio;

pub use config::{ConfigSource, FileConfig};
pub use daemon::{
    missed, run, run_with, serve, Daemon, DaemonConfig, Hooks, Request, Signals, StartInfo,
};
pub use device::{check_abi, BatchOutcome, Device, KmemlabDevice, ListPage, MockDevice};
pub use error::{Error, Result};
pub use event::{monotonic_ns, now_ns, Clock, Event, EventWriter, Op, Press, Source, StopReason};
pub use kmemlab_uapi as uapi;
pub use notify::Notifier;
pub use plan::{Plan, PlanRunner, Step, DEFAULT_PLAN};
pub use report::{AllocReport, InfoReport};
pub use spec::{format_size, parse_size, Flags, Kind};
pub use stats::{Counters, Histogram, KindReport, KindsReport, Stats};
pub use uio::{find_uio, IrqSource, Uio, UioInfo, UioMap};

/// Where the module's misc device appears.
pub const DEFAULT_DEVICE: &str = "/dev/kmemlab";
/// The name the module gives its UIO device (`/sys/class/uio/uioN/name`).
pub const DEFAULT_UIO_NAME: &str = "kmemlab";
/// The sysfs class folder that lists UIO devices.
pub const DEFAULT_SYSFS_UIO: &str = "/sys/class/uio";

/// Sends `tracing` diagnostics to stderr, never into the JSON stream. The level comes
/// from `KMEMLAB_LOG` (`error`, `warn`, `info`, `debug`, `trace`; default `info`).
pub fn init_tracing() {
    let level = std::env::var("KMEMLAB_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::INFO);
    // A second initialization (tests) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_ansi(false)
        .with_target(false)
        .try_init();
}
