//! kmemlab userspace: the library behind `kmemlabd` and `kmemlabctl`.
//!
//! - [`device`]: the [`Device`] seam over `/dev/kmemlab` ([`KmemlabDevice`]) and its
//!   [`MockDevice`] for tests.
//! - [`uio`]: finding the kmemlab UIO device by name, reading its interrupt count and
//!   re-enabling its interrupt ([`IrqSource`]).
//! - [`event`]: the JSON lines the daemon writes.
//! - [`daemon`]: the per-interrupt logic ([`Daemon`]) and the `mio` event loop ([`run`]).
//!
//! All `unsafe` code (ioctls, mappings) lives in the private `sys` module.

#![deny(unsafe_code)]

pub mod daemon;
pub mod device;
pub mod error;
pub mod event;
#[allow(unsafe_code)]
mod sys;
pub mod uio;

pub use daemon::{missed, run, serve, Daemon, DaemonConfig, Signals, StartInfo};
pub use device::{check_abi, Device, InfoReport, KmemlabDevice, MockDevice};
pub use error::{Error, Result};
pub use event::{now_ns, Event, EventWriter, StopReason};
pub use kmemlab_uapi as uapi;
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
