// SPDX-License-Identifier: GPL-2.0

//! The STATS counters: per kind, module-global, counting since the module was loaded, across
//! unbinds and rebinds. Live counts drop when an allocation is freed, by FREE, by a file's release
//! or by unbind, whichever binding it was made under.

use kernel::sync::atomic::{
    Atomic,
    Relaxed, //
};

use crate::mem::Kind;
use crate::uapi;

/// Counters of one kind since the module was loaded; STATS reads them as `uapi::KindStats`.
struct KindCounters {
    live_count: Atomic<u64>,
    live_bytes: Atomic<u64>,
    allocs: Atomic<u64>,
    frees: Atomic<u64>,
    failures: Atomic<u64>,
}

impl KindCounters {
    const fn new() -> Self {
        Self {
            live_count: Atomic::new(0),
            live_bytes: Atomic::new(0),
            allocs: Atomic::new(0),
            frees: Atomic::new(0),
            failures: Atomic::new(0),
        }
    }

    fn snapshot(&self) -> uapi::KindStats {
        uapi::KindStats {
            live_count: self.live_count.load(Relaxed),
            live_bytes: self.live_bytes.load(Relaxed),
            allocs: self.allocs.load(Relaxed),
            frees: self.frees.load(Relaxed),
            failures: self.failures.load(Relaxed),
        }
    }
}

/// STATS counters per kind.
static COUNTERS: [KindCounters; uapi::MAX_KINDS] = [const { KindCounters::new() }; uapi::MAX_KINDS];

/// UIO events counted by UIO devices that have been unregistered since load.
static PAST_EVENTS: Atomic<u64> = Atomic::new(0);

/// Counts a refused or failed allocation.
pub(crate) fn count_failure(kind: Kind) {
    COUNTERS[kind.index()].failures.add(1u64, Relaxed);
}

/// Adds the final event count of an unregistered UIO device.
pub(crate) fn add_past_events(events: u64) {
    PAST_EVENTS.add(events, Relaxed);
}

/// The per-kind counters and the UIO events of past devices plus `current`.
pub(crate) fn snapshot(current: u64) -> uapi::Stats {
    let mut kinds = [uapi::KindStats::default(); uapi::MAX_KINDS];
    for (k, c) in kinds.iter_mut().zip(COUNTERS.iter()) {
        *k = c.snapshot();
    }
    uapi::Stats {
        kinds,
        events: PAST_EVENTS.load(Relaxed) + current,
        ..Default::default()
    }
}

/// Allocations or frees of a batch, per kind, added to the counters at once.
#[derive(Default)]
pub(crate) struct Tally([(u64, u64); uapi::MAX_KINDS]);

impl Tally {
    pub(crate) fn add(&mut self, kind: Kind, bytes: u64) {
        let t = &mut self.0[kind.index()];
        t.0 += 1;
        t.1 += bytes;
    }

    pub(crate) fn count_allocs(&self) {
        for (c, &(n, bytes)) in COUNTERS.iter().zip(self.0.iter()) {
            if n != 0 {
                c.allocs.add(n, Relaxed);
                c.live_count.add(n, Relaxed);
                c.live_bytes.add(bytes, Relaxed);
            }
        }
    }

    pub(crate) fn count_frees(&self) {
        for (c, &(n, bytes)) in COUNTERS.iter().zip(self.0.iter()) {
            if n != 0 {
                c.frees.add(n, Relaxed);
                c.live_count.fetch_sub(n, Relaxed);
                c.live_bytes.fetch_sub(bytes, Relaxed);
            }
        }
    }
}
