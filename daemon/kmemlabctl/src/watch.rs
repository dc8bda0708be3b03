//! `kmemlabctl watch`: follows the kmemlab UIO device's events live, one line per read of
//! the event count, with the source and kernel timestamp of the event from the heap's ring,
//! like gpiocdev's `edges`.
//!
//! # Beside a running kmemlabd
//!
//! Watching takes no event from the daemon. The UIO core keeps an event count per open file
//! (`struct uio_listener`, drivers/uio/uio.c:471-474), set at open (uio.c:504); `poll` and
//! `read` compare and advance only that file's copy (uio.c:575, uio.c:605-611), and an event
//! wakes every waiter (`wake_up_interruptible`, uio.c:435). So the daemon's file sees every
//! event whether or not `watch` reads too, and both read the same counts.
//!
//! What `watch` must not do is write: a write of 1 to `/dev/uioN` unmasks the button's
//! interrupt line (uio.c:635-669 calls the module's `irqcontrol`, kmod-helper/uio_glue.c),
//! which the module's handler masked when the button was pressed and which the daemon
//! unmasks once it has read the event. `watch` never writes, so the daemon keeps that
//! control. Without a daemon (or another reader that writes 1), the line stays masked after
//! the first button press; TRIGGER events (`kmemlabctl trigger`) still arrive.
//!
//! `watch` takes no lock on the device node: kmemlabd's lock (one daemon per device) is
//! exclusive, and a `watch` holding any lock would keep a daemon from starting.
//!
//! # Missed events
//!
//! A read returns the count, not the events: when the count moved by more than one since
//! `watch`'s previous read, the events in between were coalesced into this read, and the
//! line says how many (`missed`). The source and timestamp are those of the event that made
//! the count (the ring record with that sequence number).

use std::io::{self, ErrorKind, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use kmemlab::error::{Error, Result};
use kmemlab::report::to_json;
use kmemlab::ring::{find_record, RingMemory};
use kmemlab::uapi::{SOURCE_IRQ, SOURCE_TRIGGER};
use kmemlab::uio::{find_uio, IrqSource, Uio};
use kmemlab::{now_ns, DEFAULT_SYSFS_UIO, DEFAULT_UIO_NAME};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use serde::Serialize;

/// Token of the UIO descriptor in the poll.
const UIO_TOKEN: Token = Token(0);
/// Token of the signalfd in the poll.
const SIGNAL_TOKEN: Token = Token(1);

/// What `watch` was asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchSpec {
    /// `--num-events N`: stop once N events have been seen (a line with `missed` M counts
    /// M + 1).
    pub num_events: Option<u64>,
    /// `--idle-timeout MS`: stop after MS milliseconds without an event.
    pub idle_timeout_ms: Option<u64>,
}

/// Why `watch` stopped; every one of them exits with status 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum StopReason {
    /// `--num-events` reached.
    #[serde(rename = "num_events")]
    NumEvents,
    /// `--idle-timeout` passed without an event.
    #[serde(rename = "idle_timeout")]
    IdleTimeout,
    /// Ctrl-C.
    #[serde(rename = "SIGINT")]
    Sigint,
    /// `kill`.
    #[serde(rename = "SIGTERM")]
    Sigterm,
}

/// One line of `watch --json`, tagged by `"event"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum WatchLine {
    /// A read of the event count.
    Irq {
        /// When it was read, `CLOCK_REALTIME` ns.
        ts_ns: u64,
        /// The UIO event count read (wrapping at 2^32).
        irq_count: u32,
        /// Events coalesced into this read: the count moved by `missed + 1`.
        missed: u32,
        /// What raised the event of `irq_count` (`button` or `trigger`), from its ring
        /// record; null without a record.
        source: Option<&'static str>,
        /// The kernel's timestamp of that event (`ktime_get_ns()`, CLOCK_MONOTONIC);
        /// null without a record.
        irq_ktime_ns: Option<u64>,
    },
    /// The last line.
    Summary {
        /// `CLOCK_REALTIME` ns.
        ts_ns: u64,
        /// Events seen: the count's moves since `watch` opened the device.
        events: u64,
        /// Reads (`irq` lines).
        reads: u64,
        /// Events coalesced into reads (the sum of `missed`).
        missed: u64,
        /// Why it stopped.
        reason: StopReason,
    },
}

/// The name kmemlabd gives a ring record's source; `None` for one this version does not
/// know.
pub fn source_name(source: u32) -> Option<&'static str> {
    match source {
        SOURCE_IRQ => Some("button"),
        SOURCE_TRIGGER => Some("trigger"),
        _ => None,
    }
}

/// The counts seen so far, and the line for each new one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watcher {
    last: u32,
    /// Events seen.
    pub events: u64,
    /// Reads that moved the count.
    pub reads: u64,
    /// Events coalesced into reads.
    pub missed: u64,
}

impl Watcher {
    /// Counting from `initial` (the count when the device was opened).
    pub fn new(initial: u32) -> Self {
        Self {
            last: initial,
            events: 0,
            reads: 0,
            missed: 0,
        }
    }

    /// The line of a read of `count`, its record looked up in `ring`; `None` when the
    /// count did not move.
    pub fn on_count(&mut self, count: u32, ring: Option<&dyn RingMemory>) -> Option<WatchLine> {
        let moved = count.wrapping_sub(self.last);
        if moved == 0 {
            return None;
        }
        let record = ring.and_then(|r| {
            find_record(r, count)
                .inspect_err(|miss| tracing::debug!("no ring record for count {count}: {miss:?}"))
                .ok()
        });
        self.last = count;
        self.events += u64::from(moved);
        self.reads += 1;
        self.missed += u64::from(moved - 1);
        Some(WatchLine::Irq {
            ts_ns: now_ns(),
            irq_count: count,
            missed: moved - 1,
            source: record.and_then(|r| source_name(r.source)),
            irq_ktime_ns: record.map(|r| r.ktime_ns),
        })
    }

    /// The summary line.
    pub fn summary(&self, reason: StopReason) -> WatchLine {
        WatchLine::Summary {
            ts_ns: now_ns(),
            events: self.events,
            reads: self.reads,
            missed: self.missed,
            reason,
        }
    }
}

impl WatchLine {
    /// The line as `watch` prints it: a JSON object, or text; ends in `\n`.
    pub fn render(&self, json: bool) -> Result<String> {
        if json {
            return Ok(to_json(self)? + "\n");
        }
        Ok(match self {
            WatchLine::Irq {
                irq_count,
                missed,
                source,
                irq_ktime_ns,
                ..
            } => {
                let ktime = irq_ktime_ns.map_or_else(
                    || "-".to_owned(),
                    |k| format!("{}.{:09}", k / 1_000_000_000, k % 1_000_000_000),
                );
                let mut line = format!(
                    "count {irq_count:<6} {:<8} ktime {ktime}",
                    source.unwrap_or("unknown")
                );
                if *missed > 0 {
                    line.push_str(&format!("  missed {missed} (coalesced into this read)"));
                }
                line + "\n"
            }
            WatchLine::Summary {
                events,
                reads,
                missed,
                reason,
                ..
            } => {
                let why = match reason {
                    StopReason::NumEvents => "--num-events reached",
                    StopReason::IdleTimeout => "--idle-timeout passed",
                    StopReason::Sigint => "SIGINT",
                    StopReason::Sigterm => "SIGTERM",
                };
                format!("{events} events in {reads} reads, {missed} missed ({why})\n")
            }
        })
    }
}

/// SIGINT and SIGTERM, blocked and read from a non-blocking signalfd.
fn signals() -> Result<SignalFd> {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGINT);
    mask.add(Signal::SIGTERM);
    mask.thread_block()
        .map_err(|source| Error::Signals { source })?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|source| Error::Signals { source })
}

/// The stop a pending signal asks for; `None` when none is pending.
fn read_signal(fd: &mut SignalFd) -> Result<Option<StopReason>> {
    loop {
        return match fd.read_signal() {
            Ok(None) => Ok(None),
            Ok(Some(info)) if info.ssi_signo == Signal::SIGINT as u32 => {
                Ok(Some(StopReason::Sigint))
            }
            Ok(Some(_)) => Ok(Some(StopReason::Sigterm)),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(source) => Err(Error::Signals { source }),
        };
    }
}

fn poll_err(source: io::Error) -> Error {
    Error::Poll { source }
}

/// Writes one line and flushes it, so a pipe or file sees each event as it comes.
fn emit(out: &mut impl Write, line: &WatchLine, json: bool) -> Result<()> {
    out.write_all(line.render(json)?.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|source| Error::Output { source })
}

/// `kmemlabctl watch`: finds and opens the kmemlab UIO device, maps its ring (read only
/// through atomic loads; `watch` runs on without it), says on stderr what it watches, then
/// writes a line to `out` per read until `--num-events`, `--idle-timeout`, SIGINT or
/// SIGTERM, and then the summary line. Never writes to the device (see the module
/// documentation).
pub fn run(spec: &WatchSpec, json: bool, out: &mut impl Write) -> Result<StopReason> {
    let mut signals = signals()?;
    let info = find_uio(DEFAULT_SYSFS_UIO.as_ref(), DEFAULT_UIO_NAME)?;
    // Read-write only because the ring's atomic loads need a writable mapping; nothing is
    // ever written to the device or the heap.
    let mut uio = Uio::open(&info)?;
    let ring = uio
        .map(0)
        .inspect_err(|e| tracing::warn!("no interrupt ring, sources will be null: {}", e.report()))
        .ok();
    let mut poll = Poll::new().map_err(poll_err)?;
    poll.registry()
        .register(
            &mut SourceFd(&uio.as_raw_fd()),
            UIO_TOKEN,
            Interest::READABLE,
        )
        .map_err(poll_err)?;
    poll.registry()
        .register(
            &mut SourceFd(&signals.as_raw_fd()),
            SIGNAL_TOKEN,
            Interest::READABLE,
        )
        .map_err(poll_err)?;
    let mut watcher = Watcher::new(uio.initial_count());
    // After the registration: every event from here on wakes the poll.
    eprintln!(
        "watching {} from count {}",
        uio.path().display(),
        uio.initial_count()
    );
    let idle = spec.idle_timeout_ms.map(Duration::from_millis);
    let mut last_event = Instant::now();
    let mut events = Events::with_capacity(4);
    let reason = 'run: loop {
        let timeout = idle.map(|d| d.saturating_sub(last_event.elapsed()));
        if timeout == Some(Duration::ZERO) {
            break StopReason::IdleTimeout;
        }
        match poll.poll(&mut events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(poll_err(e)),
        }
        for event in events.iter() {
            match event.token() {
                SIGNAL_TOKEN => {
                    if let Some(reason) = read_signal(&mut signals)? {
                        break 'run reason;
                    }
                }
                UIO_TOKEN => {
                    // Edge-triggered: drain until the read would block.
                    while let Some(count) = uio.read_count()? {
                        let ring = ring.as_ref().map(|m| m as &dyn RingMemory);
                        let Some(line) = watcher.on_count(count, ring) else {
                            continue;
                        };
                        last_event = Instant::now();
                        emit(out, &line, json)?;
                        if spec.num_events.is_some_and(|n| watcher.events >= n) {
                            break 'run StopReason::NumEvents;
                        }
                    }
                }
                token => tracing::warn!("event for unknown token {}", token.0),
            }
        }
    };
    emit(out, &watcher.summary(reason), json)?;
    Ok(reason)
}

#[cfg(test)]
mod tests {
    use kmemlab::ring::builder::RingBuilder;
    use serde_json::{json, Value};

    use super::*;

    fn fields(line: &WatchLine) -> Value {
        let mut v: Value = serde_json::from_str(&line.render(true).unwrap()).unwrap();
        v.as_object_mut().unwrap().remove("ts_ns");
        v
    }

    #[test]
    fn a_line_per_read_with_its_record_and_what_was_coalesced() {
        let mut ring = RingBuilder::standard();
        ring.push(4, 4_000_000_001, SOURCE_IRQ);
        ring.push(5, 5_000, SOURCE_TRIGGER);
        ring.push(6, 6_000, SOURCE_TRIGGER);
        ring.push(7, 7_000, 9);
        let bytes = ring.into_bytes();
        let mem: &dyn RingMemory = &bytes;
        let mut w = Watcher::new(3);
        let one = w.on_count(4, Some(mem)).unwrap();
        assert_eq!(
            fields(&one),
            json!({"event": "irq", "irq_count": 4, "missed": 0, "source": "button",
                   "irq_ktime_ns": 4_000_000_001u64})
        );
        assert_eq!(
            one.render(false).unwrap(),
            "count 4      button   ktime 4.000000001\n"
        );
        assert_eq!(w.on_count(4, Some(mem)), None, "an unchanged count");
        let two = w.on_count(6, Some(mem)).unwrap();
        assert_eq!(
            fields(&two),
            json!({"event": "irq", "irq_count": 6, "missed": 1, "source": "trigger",
                   "irq_ktime_ns": 6_000})
        );
        assert!(two
            .render(false)
            .unwrap()
            .ends_with("missed 1 (coalesced into this read)\n"));
        // A source this version does not know; no record at all; no ring.
        let unknown = w.on_count(7, Some(mem)).unwrap();
        assert_eq!(fields(&unknown)["source"], Value::Null);
        assert_eq!(fields(&unknown)["irq_ktime_ns"], 7_000);
        let none = w.on_count(8, Some(mem)).unwrap();
        assert_eq!(
            (
                fields(&none)["source"].clone(),
                fields(&none)["irq_ktime_ns"].clone()
            ),
            (Value::Null, Value::Null)
        );
        assert!(none.render(false).unwrap().contains("unknown  ktime -"));
        w.on_count(9, None).unwrap();
        assert_eq!((w.events, w.reads, w.missed), (6, 5, 1));
        let s = w.summary(StopReason::Sigint);
        assert_eq!(
            fields(&s),
            json!({"event": "summary", "events": 6, "reads": 5, "missed": 1,
                   "reason": "SIGINT"})
        );
        assert_eq!(
            s.render(false).unwrap(),
            "6 events in 5 reads, 1 missed (SIGINT)\n"
        );
    }

    #[test]
    fn counts_wrap_at_32_bits() {
        let mut w = Watcher::new(u32::MAX - 1);
        let line = w.on_count(1, None).unwrap();
        assert_eq!(fields(&line)["missed"], 2);
        assert_eq!(w.events, 3);
    }
}
