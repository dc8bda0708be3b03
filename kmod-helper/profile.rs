// SPDX-License-Identifier: GPL-2.0

//! The debugfs file `kmemlab/profile`: where the time of ALLOC, FREE and their batches goes
//! inside the module, phase by phase, timed with the clock the reports use (`ktime_get_ns()`).
//!
//! Off by default, it costs one relaxed load per command when off. Writing `1` resets the
//! sums, measures what one clock read costs and starts; writing `0` stops. While on, each
//! command reads the clock once at its start and once at the end of each phase (a handful of
//! reads per call, none per entry), and adds each phase's time to module-wide sums. Reading
//! the file gives, for each command and phase measured, a line
//! `<command> <phase> <calls> <entries> <ns>` (the sums since the last `1`), after the lines
//! `clock_read_ns <ns>`, `mark_ns <ns>` (what ending a phase costs: a clock read and adding to
//! the sum; every phase of every call includes about one),
//! `atomic_add_ns <ns>` and `mutex_lock_unlock_ns <ns>` (what the building blocks of the phases
//! cost on this machine).
//!
//! The phases, in the order a call goes through them:
//! - `copy_in`: the request read from userspace (for a batch: its header, the file's batch
//!   buffers and its entries);
//! - `check`: each ALLOC entry checked (`Request::check`);
//! - `reserve`: `inner` taken, the table's room made, each entry charged against the limits;
//! - `allocate`: the allocator calls (one clock read between two: each entry's `alloc_ns`);
//! - `report`: each allocation's report (usable size, physical layout by page walk);
//! - `insert`: `inner` taken again, each allocation inserted under its handle, the counters;
//! - `finish`: the ownership bits and what the opener may not see hidden;
//! - `take`: FREE's lookups under `inner`, each entry taken out of the table and uncharged;
//! - `free`: the frees (one clock read between two: each entry's `free_ns`) and the counters;
//! - `copy_out`: the results written back to userspace.

use core::fmt;
use kernel::{
    new_mutex,
    prelude::*,
    sync::atomic::{
        Atomic,
        Relaxed, //
    },
    time::{
        Instant,
        Monotonic, //
    },
    uaccess::UserSliceReader,
};

/// The commands profiled.
#[derive(Clone, Copy)]
pub(crate) enum Cmd {
    Alloc = 0,
    AllocBatch = 1,
    Free = 2,
    FreeBatch = 3,
}

const CMDS: usize = 4;
const CMD_NAMES: [&str; CMDS] = ["alloc", "alloc_batch", "free", "free_batch"];

/// The phases of a command; see the module documentation.
#[derive(Clone, Copy)]
pub(crate) enum Phase {
    CopyIn = 0,
    Check = 1,
    Reserve = 2,
    Allocate = 3,
    Report = 4,
    Insert = 5,
    Finish = 6,
    Take = 7,
    Free = 8,
    CopyOut = 9,
}

const PHASES: usize = 10;
const PHASE_NAMES: [&str; PHASES] = [
    "copy_in", "check", "reserve", "allocate", "report", "insert", "finish", "take", "free",
    "copy_out",
];

/// Whether profiling is on.
static ON: Atomic<bool> = Atomic::new(false);
/// Nanoseconds per command and phase.
static NS: [[Atomic<u64>; PHASES]; CMDS] = [const { [const { Atomic::new(0) }; PHASES] }; CMDS];
/// Calls and entries per command.
static CALLS: [Atomic<u64>; CMDS] = [const { Atomic::new(0) }; CMDS];
static ENTRIES: [Atomic<u64>; CMDS] = [const { Atomic::new(0) }; CMDS];
/// The cost of one clock read, of one mark (ending a phase), of one atomic add and of taking
/// and dropping an uncontended mutex, measured when profiling starts: what the phases are made
/// of.
static CLOCK_NS: Atomic<u64> = Atomic::new(0);
static MARK_NS: Atomic<u64> = Atomic::new(0);
static ATOMIC_NS: Atomic<u64> = Atomic::new(0);
static MUTEX_NS: Atomic<u64> = Atomic::new(0);

/// Calls timed to measure one, in each of [`CALIBRATION_RUNS`] runs; the fastest run counts
/// (a run the host interrupted says nothing about the call).
const CALIBRATION_READS: u64 = 100;
const CALIBRATION_RUNS: u32 = 20;

/// One command's profile: inert when profiling is off.
pub(crate) struct Probe {
    cmd: Cmd,
    last: Option<Instant<Monotonic>>,
}

impl Probe {
    /// Starts profiling a call of `cmd`, if profiling is on.
    pub(crate) fn start(cmd: Cmd) -> Self {
        let last = ON.load(Relaxed).then(Instant::<Monotonic>::now);
        Self { cmd, last }
    }

    /// A probe that measures nothing (internal calls, such as undoing an allocation).
    pub(crate) fn off(cmd: Cmd) -> Self {
        Self { cmd, last: None }
    }

    /// Ends `phase`: adds the time since the previous mark to it.
    pub(crate) fn mark(&mut self, phase: Phase) {
        if let Some(last) = &mut self.last {
            record(last, &NS[self.cmd as usize][phase as usize]);
        }
    }

    /// Ends the call, which handled `entries` entries.
    pub(crate) fn end(self, entries: usize) {
        if self.last.is_some() {
            CALLS[self.cmd as usize].add(1, Relaxed);
            ENTRIES[self.cmd as usize].add(entries as u64, Relaxed);
        }
    }
}

/// What one call of `f` costs: the fastest of [`CALIBRATION_RUNS`] runs of
/// [`CALIBRATION_READS`] calls (the two clock reads around a run add 2% of one).
fn fastest(mut f: impl FnMut()) -> u64 {
    let mut best = u64::MAX;
    for _ in 0..CALIBRATION_RUNS {
        let first = Instant::<Monotonic>::now();
        for _ in 0..CALIBRATION_READS {
            f();
        }
        let last = Instant::<Monotonic>::now();
        best = best.min(u64::try_from((last - first).as_nanos()).unwrap_or(u64::MAX));
    }
    best / CALIBRATION_READS
}

/// Adds the time since `last` to `sum`, and makes now the new `last`: a mark's work.
fn record(last: &mut Instant<Monotonic>, sum: &Atomic<u64>) {
    let now = Instant::<Monotonic>::now();
    let ns = u64::try_from((now - *last).as_nanos()).unwrap_or(0);
    sum.add(ns, Relaxed);
    *last = now;
}

/// Resets the sums and measures a clock read, a mark, an atomic add and a mutex.
fn start() {
    for cmd in 0..CMDS {
        for ns in &NS[cmd] {
            ns.store(0, Relaxed);
        }
        CALLS[cmd].store(0, Relaxed);
        ENTRIES[cmd].store(0, Relaxed);
    }
    CLOCK_NS.store(fastest(|| {
        core::hint::black_box(Instant::<Monotonic>::now());
    }), Relaxed);
    let counter = Atomic::<u64>::new(0);
    let mut last = Instant::<Monotonic>::now();
    MARK_NS.store(fastest(|| record(&mut last, &counter)), Relaxed);
    ATOMIC_NS.store(fastest(|| counter.add(1, Relaxed)), Relaxed);
    if let Ok(mutex) = KBox::pin_init(new_mutex!(0u64), GFP_KERNEL) {
        MUTEX_NS.store(fastest(|| *mutex.lock() += 1), Relaxed);
    }
    ON.store(true, Relaxed);
}

/// The file's contents; see the module documentation.
pub(crate) fn write_profile(_: &(), f: &mut fmt::Formatter<'_>) -> fmt::Result {
    writeln!(f, "clock_read_ns {}", CLOCK_NS.load(Relaxed))?;
    writeln!(f, "mark_ns {}", MARK_NS.load(Relaxed))?;
    writeln!(f, "atomic_add_ns {}", ATOMIC_NS.load(Relaxed))?;
    writeln!(f, "mutex_lock_unlock_ns {}", MUTEX_NS.load(Relaxed))?;
    for cmd in 0..CMDS {
        let calls = CALLS[cmd].load(Relaxed);
        if calls == 0 {
            continue;
        }
        let entries = ENTRIES[cmd].load(Relaxed);
        for (phase, ns) in NS[cmd].iter().enumerate() {
            let ns = ns.load(Relaxed);
            if ns != 0 {
                writeln!(
                    f,
                    "{} {} {} {} {}",
                    CMD_NAMES[cmd], PHASE_NAMES[phase], calls, entries, ns
                )?;
            }
        }
    }
    Ok(())
}

/// A write to the file: `1` resets and starts, `0` stops; anything else is `EINVAL`.
pub(crate) fn write_control(_: &(), reader: &mut UserSliceReader) -> Result {
    let mut buf = [0u8; 4];
    let n = reader.len().min(buf.len());
    reader.read_slice(&mut buf[..n])?;
    match buf[..n].trim_ascii() {
        b"1" => start(),
        b"0" => ON.store(false, Relaxed),
        _ => return Err(EINVAL),
    }
    Ok(())
}
