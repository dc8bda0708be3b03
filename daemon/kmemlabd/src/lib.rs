//! kmemlabd: the daemon behind the button. Each press travels UIO event -> press ->
//! plan -> device -> output.
//!
//! - [`event_loop`]: the UIO descriptor and the signals in one `mio::Poll` ([`run`]), and
//!   [`serve`], which opens everything and runs it.
//! - [`press`]: each UIO read: coalesced interrupts, debounce, the step it runs.
//! - [`plan`]: the daemon's cycle of allocation steps and its step machine.
//! - [`vmallocinfo`]: the `/proc/vmallocinfo` line of a vmalloc allocation.
//! - [`event`]: the JSON lines the daemon writes; [`output`]: where they go.
//! - [`daemon`]: the daemon's state ([`Daemon`]): start, stop, counters.
//! - [`reload`]: SIGHUP, the config re-read.
//! - [`config`]: kmemlabd's flags and config file.
//! - [`notify`]: systemd readiness notifications (`sd_notify`).
//! - [`journal`]: diagnostics on stderr, with journald priorities under systemd.
//! - [`stats`]: the counts and latency histograms of `stats` and `summary` lines.
//!
//! The device, UIO, VFIO and the ring are the [`kmemlab`] library's.
//!
//! Two backends give the interrupts ([`config::Backend`]): `uio`, the module's UIO
//! device (its count, and the heap's ring for `irq_to_wake_ns`), and `vfio`, the board's
//! PL061 GPIO controller driven by kmemlabd through VFIO in no-IOMMU mode
//! ([`kmemlab::VfioButton`]: an eventfd, a count of the daemon's own, no ring, so
//! `irq_to_wake_ns` is null). Presses, plans and lines are the same for both.
//!
//! How presses are handled:
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
//!   `STATUS=` after each batch of reads; `RELOADING=1` with `MONOTONIC_USEC=` when a
//!   SIGHUP reload begins and `READY=1` when it is done (`Type=notify-reload`);
//!   `STOPPING=1` when a stop signal arrives.
//! - One kmemlabd per device: it takes an exclusive `flock` on the UIO node (on the VFIO
//!   group node with the VFIO backend, which also opens only once); a second one exits
//!   with status 3. An interrupt storm is read in batches of
//!   [`event_loop::UIO_BATCH`] with the signals looked at in between. A fatal error (the
//!   device unbound) is an `error` line, then `summary` and `stop`, and a non-zero exit.

#![forbid(unsafe_code)]

pub mod config;
pub mod daemon;
pub mod event;
pub mod event_loop;
pub mod journal;
pub mod notify;
pub mod output;
pub mod plan;
pub mod press;
pub mod reload;
pub mod stats;
#[cfg(test)]
mod testing;
pub mod vmallocinfo;

pub use config::{Backend, ConfigSource, DaemonConfig, FileConfig};
pub use daemon::{Daemon, StartInfo};
pub use event::{monotonic_ns, now_ns, Clock, Event, Op, Press, Source, StopReason, VfioStart};
pub use event_loop::{run, run_with, serve, Hooks, Request, Signals};
pub use notify::Notifier;
pub use output::{open_output, EventWriter};
pub use plan::{Plan, PlanRunner, Step, DEFAULT_PLAN};
pub use press::missed;
pub use stats::{Counters, KindReport, KindsReport, Stats};
