//! One `kmemlabctl` command ([`Command`]), its values checked (kinds, sizes, flags,
//! counts), with `bench`'s two forms: one kind and size, or a sweep. The command line
//! (`args`) builds it.

use std::path::PathBuf;

use kmemlab::spec::{Flags, Kind};

use crate::bench::threads::ThreadSpec;
use crate::bench::SweepSpec;
use crate::watch::WatchSpec;

/// Default `--iters` of `bench`.
pub const DEFAULT_BENCH_ITERS: u32 = 1000;

/// One `kmemlabctl` command, with its arguments parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `info`.
    Info,
    /// `alloc`; `flags` includes [`Flags::PERSIST`] for `--persist`.
    Alloc {
        /// `--kind`.
        kind: Kind,
        /// `--size`.
        size: u64,
        /// `--gfp`, and `--persist`.
        flags: Flags,
        /// `--count`: allocations of this spec (1 without it).
        count: u32,
        /// `--hold`: keep them until SIGINT or SIGTERM, then free them.
        hold: bool,
    },
    /// `free HANDLE...`.
    Free {
        /// The handles, in order.
        handles: Vec<u64>,
    },
    /// `free --all`.
    FreeAll,
    /// `list`.
    List {
        /// `--kind`: only this kind.
        kind: Option<Kind>,
        /// `--persist`: only the device's allocations.
        persist: bool,
    },
    /// `stats`.
    Stats,
    /// `bench`.
    Bench {
        /// `--kind`.
        kind: Kind,
        /// `--size`.
        size: u64,
        /// `--gfp`.
        flags: Flags,
        /// `--iters`.
        iters: u32,
    },
    /// `bench` without both `--kind` and `--size`: a sweep.
    Sweep(SweepSpec),
    /// `report LOG`.
    Report {
        /// The kmemlabd log.
        log: PathBuf,
        /// `--svg`.
        svg: Option<PathBuf>,
        /// `--html`.
        html: Option<PathBuf>,
    },
    /// `trigger`.
    Trigger {
        /// `--count`.
        count: u32,
        /// `--interval`: `count` TRIGGERs of one event, this many ms apart.
        interval_ms: Option<u64>,
    },
    /// `bench --threads`: pairs on several CPUs at once.
    Threads(ThreadSpec),
    /// `watch`.
    Watch(WatchSpec),
}
