//! A press: each read of the UIO event count, the interrupts it coalesced, debounce,
//! and the plan step it runs, with the ring's timestamp of its interrupt.

use std::io::Write;
use std::path::Path;

use kmemlab::device::Device;
use kmemlab::error::Result;
use kmemlab::report::AllocReport;
use kmemlab::ring;
use kmemlab::spec::Kind;
use kmemlab::uio::IrqSource;

use crate::daemon::Daemon;
use crate::event::{now_ns, Clock, Event, Op, Press, Source};
use crate::plan::Outcome;

/// Interrupts that came without a read of their own between a read of `last` and one
/// of `count`, modulo 2^32 (the UIO count is a wrapping 32-bit counter).
pub fn missed(last: u32, count: u32) -> u32 {
    count.wrapping_sub(last).saturating_sub(1)
}

impl<D: Device, I: IrqSource, W: Write> Daemon<D, I, W> {
    /// Handles a readable interrupt source: reads counts until it would block. Returns
    /// how many counts were read (0: a spurious wakeup).
    pub fn on_readable(&mut self) -> Result<usize> {
        let (n, _) = self.on_readable_at_most(usize::MAX)?;
        Ok(n)
    }

    /// Reads at most `max` counts, stopping early when the read would block: how many
    /// were read, and whether the source was drained (the read would block). The event
    /// loop reads in such batches so that an interrupt storm cannot hold off its signals.
    pub fn on_readable_at_most(&mut self, max: usize) -> Result<(usize, bool)> {
        let mut n = 0;
        while n < max {
            let Some(count) = self.irq.read_count()? else {
                return Ok((n, true));
            };
            // The wake-up time: right after the read returned.
            let wake = (self.monotonic)();
            self.on_count_at(count, wake)?;
            n += 1;
        }
        Ok((n, false))
    }

    /// Handles one count read from the UIO device, woken now.
    pub fn on_count(&mut self, count: u32) -> Result<()> {
        let wake = (self.monotonic)();
        self.on_count_at(count, wake)
    }

    /// Handles one count read from the UIO device at `wake_ns` (CLOCK_MONOTONIC): looks up
    /// the interrupt's record, re-enables the interrupt, runs the plan's next step and
    /// writes its line. The interrupt is re-enabled before the line is written, so that
    /// whoever waits for the line before the next press never presses while it is still
    /// masked. A failed step is an `error` line, not an error: the daemon goes on.
    pub fn on_count_at(&mut self, count: u32, wake_ns: u64) -> Result<()> {
        let ts_ns = now_ns();
        if count == self.last {
            tracing::warn!("uio read returned the unchanged count {count}");
            return self.irq.enable();
        }
        let missed = missed(self.last, count);
        // First, before newer events can overwrite the record. The record of `count`
        // gives the press's source, its kernel timestamp and its latency alike.
        let record = self.ring.as_deref().and_then(|ring| {
            ring::find_record(ring, count)
                .inspect_err(|miss| tracing::debug!("no ring record for count {count}: {miss:?}"))
                .ok()
        });
        let irq_ns = record.map(|rec| rec.ktime_ns);
        let source = record.and_then(|rec| Source::from_abi(rec.source));
        let irq_to_wake_ns = irq_ns.and_then(|k| wake_ns.checked_sub(k));
        self.irq.enable()?;
        self.events += u64::from(count.wrapping_sub(self.last));
        self.last = count;
        if missed > 0 {
            tracing::debug!("{missed} interrupts coalesced before count {count}");
            self.coalesced += u64::from(missed);
            self.out.emit(&Event::Coalesced {
                ts_ns,
                irq_count: count,
                missed,
                coalesced: self.coalesced,
                events: self.events,
            })?;
        }
        let (at_ns, clock) = match irq_ns {
            Some(k) => (k, Clock::Irq),
            None => (wake_ns, Clock::Wake),
        };
        let debounce_ns = self.config.debounce_ms.saturating_mul(1_000_000);
        if let Some(prev) = self.last_accepted_ns {
            let since_last_ns = at_ns.saturating_sub(prev);
            if since_last_ns < debounce_ns {
                self.bounces += 1;
                return self.out.emit(&Event::Bounce {
                    ts_ns,
                    irq_count: count,
                    missed,
                    since_last_ns,
                    debounce_ms: self.config.debounce_ms,
                    clock,
                    irq_to_wake_ns,
                });
            }
        }
        self.last_accepted_ns = Some(at_ns);
        self.presses += 1;
        let press = Press {
            ts_ns,
            seq: Some(self.presses),
            irq_count: count,
            missed,
            irq_to_wake_ns,
            source,
            irq_ktime_ns: irq_ns,
        };
        let outcome = self.runner.press(&self.device);
        self.count(&outcome);
        let event = self.event_for(press, outcome);
        self.out.emit(&event)
    }

    /// Adds what a step did to the per-kind counts.
    pub(crate) fn count(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Allocated { step, alloc } => {
                self.stats.alloc(step.kind, step.size, alloc.alloc_ns)
            }
            Outcome::Freed { held, free } => self.stats.free(held.step.kind, free.free_ns),
            Outcome::AllocFailed { step, .. } => self.stats.error(step.kind),
            Outcome::FreeFailed { held, .. } => self.stats.error(held.step.kind),
        }
    }

    /// The line for what a press (or the shutdown) did.
    pub(crate) fn event_for(&mut self, press: Press, outcome: Outcome) -> Event {
        match outcome {
            Outcome::Allocated { step, alloc } => {
                let report = AllocReport::from(&alloc);
                let vmallocinfo = match step.kind {
                    Kind::Vmalloc | Kind::Kvmalloc if report.vaddr.is_some() => {
                        self.vmallocinfo_of(alloc.vaddr)
                    }
                    _ => None,
                };
                Event::Alloc {
                    press,
                    alloc: report,
                    vmallocinfo,
                }
            }
            Outcome::Freed { held, free } => Event::Free {
                press,
                handle: free.handle,
                kind: held.step.kind.name(),
                size: held.step.size,
                free_ns: free.free_ns,
            },
            Outcome::AllocFailed { step, error } => {
                tracing::warn!("step {step}: {}", error.report());
                Event::StepError {
                    press,
                    op: Op::Alloc,
                    error: error.errno_name(),
                    message: error.report(),
                    kind: step.kind.name(),
                    size: step.size,
                    gfp: step.flags.gfp_names(),
                    handle: None,
                }
            }
            Outcome::FreeFailed { held, error } => {
                tracing::warn!(
                    "freeing handle {} of step {}: {}",
                    held.alloc.handle,
                    held.step,
                    error.report()
                );
                Event::StepError {
                    press,
                    op: Op::Free,
                    error: error.errno_name(),
                    message: error.report(),
                    kind: held.step.kind.name(),
                    size: held.step.size,
                    gfp: held.step.flags.gfp_names(),
                    handle: Some(held.alloc.handle),
                }
            }
        }
    }

    /// The vmallocinfo line of the area at `vaddr`, when the file is readable.
    pub(crate) fn vmallocinfo_of(&mut self, vaddr: u64) -> Option<String> {
        let path: &Path = self.vmallocinfo.as_deref()?;
        match self.vmallocinfo_reader.area_line(path, vaddr) {
            Ok(line) => line.map(str::to_owned),
            Err(e) => {
                tracing::debug!("cannot read {}: {e}", path.display());
                None
            }
        }
    }
}
