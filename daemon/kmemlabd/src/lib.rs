//! kmemlabd: the daemon behind the button. Each press travels UIO event -> press ->
//! plan -> device -> output.
//!
//! - [`config`]: kmemlabd's flags and config file.
//! - [`daemon`]: the per-press logic ([`Daemon`]) and the `mio` event loop ([`run`]).
//! - [`plan`]: the daemon's cycle of allocation steps and its step machine.
//! - [`event`]: the JSON lines the daemon writes.
//! - [`notify`]: systemd readiness notifications (`sd_notify`).
//! - [`stats`]: the counts and latency histograms of `stats` and `summary` lines.
//!
//! The device, UIO and the ring are the [`kmemlab`] library's.

#![forbid(unsafe_code)]

pub mod config;
pub mod daemon;
pub mod event;
pub mod notify;
pub mod plan;
pub mod stats;

pub use config::{ConfigSource, FileConfig};
pub use daemon::{
    missed, run, run_with, serve, Daemon, DaemonConfig, Hooks, Request, Signals, StartInfo,
};
pub use event::{monotonic_ns, now_ns, Clock, Event, EventWriter, Op, Press, Source, StopReason};
pub use notify::Notifier;
pub use plan::{Plan, PlanRunner, Step, DEFAULT_PLAN};
pub use stats::{Counters, Histogram, KindReport, KindsReport, Stats};
