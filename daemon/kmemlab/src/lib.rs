//! kmemlab userspace: the library behind `kmemlabd` and `kmemlabctl`, from the device
//! to what it reports.
//!
//! - [`device`]: the [`Device`] seam over `/dev/kmemlab` ([`KmemlabDevice`]); with the
//!   `test-util` feature, its `MockDevice` for tests.
//! - [`uio`]: finding the kmemlab UIO device by name, reading its interrupt count,
//!   re-enabling its interrupt ([`IrqSource`]) and mapping its heap.
//! - [`vfio`]: the VFIO backend: the board's PL061 GPIO controller driven from userspace
//!   through VFIO in no-IOMMU mode, its interrupt as an [`IrqSource`] ([`VfioButton`]).
//! - [`ring`]: the heap's interrupt ring, for interrupt-to-wake latency.
//! - [`spec`]: kinds, gfp flags and sizes by name, parsed and formatted one way.
//! - [`report`]: what the module reports, as JSON objects (`kmemlabctl` prints their text).
//! - [`clock`]: the wall clock and `CLOCK_MONOTONIC`, in nanoseconds.
//! - [`error`]: the one error type and its `Result`.
//!
//! All `unsafe` code (ioctls, atomic loads from shared memory, volatile register
//! accesses) lives in the private `sys` module.

#![deny(unsafe_code)]

pub mod clock;
pub mod device;
pub mod error;
pub mod histogram;
pub mod report;
pub mod ring;
pub mod spec;
#[allow(unsafe_code)]
mod sys;
pub mod uio;
pub mod vfio;

pub use clock::{monotonic_ns, now_ns};
#[cfg(any(test, feature = "test-util"))]
pub use device::mock::MockDevice;
pub use device::{check_abi, BatchOutcome, Device, KmemlabDevice, ListPage};
pub use error::{Error, Result};
pub use histogram::Histogram;
pub use kmemlab_uapi as uapi;
pub use report::{AllocReport, InfoReport};
pub use spec::{format_size, parse_size, Flags, Kind};
pub use uio::{find_uio, IrqSource, Uio, UioInfo, UioMap};
pub use vfio::{VfioButton, VfioTarget};

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
