//! kmemlabd: the per-interrupt logic ([`Daemon`]), testable without descriptors, and the
//! `mio` event loop ([`run`]) that drives it from the UIO device and a signalfd.

use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::PathBuf;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::device::{check_abi, Device, KmemlabDevice};
use crate::error::{Error, Result};
use crate::event::{now_ns, Event, EventWriter, StopReason};
use crate::uio::{find_uio, IrqSource, Uio};
use crate::{DEFAULT_DEVICE, DEFAULT_SYSFS_UIO, DEFAULT_UIO_NAME};

/// Token of the UIO descriptor in the poll.
pub const UIO_TOKEN: Token = Token(0);
/// Token of the signalfd in the poll.
pub const SIGNAL_TOKEN: Token = Token(1);

/// What `kmemlabd` is told on its command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonConfig {
    /// The misc device, `/dev/kmemlab` by default.
    pub device: PathBuf,
    /// The UIO device's name attribute, `kmemlab` by default.
    pub uio_name: String,
    /// Where UIO devices are listed, `/sys/class/uio` by default.
    pub sysfs_uio: PathBuf,
    /// Append JSON lines to this file instead of writing them to stdout.
    pub log: Option<PathBuf>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            device: DEFAULT_DEVICE.into(),
            uio_name: DEFAULT_UIO_NAME.into(),
            sysfs_uio: DEFAULT_SYSFS_UIO.into(),
            log: None,
        }
    }
}

/// Interrupts that came without a read of their own between a read of `last` and one
/// of `count`, modulo 2^32 (the UIO count is a wrapping 32-bit counter).
pub fn missed(last: u32, count: u32) -> u32 {
    count.wrapping_sub(last).saturating_sub(1)
}

/// What the `start` line names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartInfo {
    /// The UIO device node.
    pub uio: String,
    /// The misc device node.
    pub device: String,
    /// The UIO count when the device was opened.
    pub irq_count: u32,
}

/// The daemon's state and its reaction to each event, free of descriptors and polling.
#[derive(Debug)]
pub struct Daemon<D, I, W: Write> {
    device: D,
    irq: I,
    out: EventWriter<W>,
    start: StartInfo,
    last: u32,
}

impl<D: Device, I: IrqSource, W: Write> Daemon<D, I, W> {
    /// A daemon over `device` and `irq`, writing to `out`.
    pub fn new(device: D, irq: I, out: EventWriter<W>, start: StartInfo) -> Self {
        let last = start.irq_count;
        Self {
            device,
            irq,
            out,
            start,
            last,
        }
    }

    /// Checks the module's ABI, enables the interrupt (a previous daemon may have left it
    /// masked; writing 1 again is harmless) and writes the `start` line.
    pub fn start(&mut self) -> Result<()> {
        let info = self.device.info()?;
        check_abi(&info)?;
        self.irq.enable()?;
        self.out.emit(&Event::Start {
            ts_ns: now_ns(),
            pid: std::process::id(),
            uio: self.start.uio.clone(),
            device: self.start.device.clone(),
            abi_version: info.abi_version,
            irq_count: self.start.irq_count,
        })
    }

    /// Handles a readable interrupt source: reads counts until it would block. Returns
    /// how many counts were read (0: a spurious wakeup).
    pub fn on_readable(&mut self) -> Result<usize> {
        let mut n = 0;
        while let Some(count) = self.irq.read_count()? {
            self.on_count(count)?;
            n += 1;
        }
        Ok(n)
    }

    /// Handles one count read from the UIO device: re-enables the interrupt, then writes
    /// the `irq` line. In that order, so that whoever waits for the line before the next
    /// press never presses while the interrupt is still masked.
    pub fn on_count(&mut self, count: u32) -> Result<()> {
        if count == self.last {
            tracing::warn!("uio read returned the unchanged count {count}");
            return self.irq.enable();
        }
        let missed = missed(self.last, count);
        if missed > 0 {
            tracing::debug!("{missed} interrupts coalesced before count {count}");
        }
        self.irq.enable()?;
        self.last = count;
        self.out.emit(&Event::Irq {
            ts_ns: now_ns(),
            irq_count: count,
            missed,
        })
    }

    /// Writes the `stop` line.
    pub fn stop(&mut self, reason: StopReason) -> Result<()> {
        self.out.emit(&Event::Stop {
            ts_ns: now_ns(),
            irq_count: self.last,
            reason,
        })
    }

    /// Writes an `error` line for `err`; if even that fails, says so on stderr.
    pub fn fail(&mut self, err: &Error) {
        if let Err(e) = self.out.emit(&Event::error(now_ns(), err)) {
            tracing::error!("{}", e.report());
        }
    }

    /// The last UIO count read (the initial count before any).
    pub fn last_count(&self) -> u32 {
        self.last
    }

    /// The interrupt source.
    pub fn irq(&self) -> &I {
        &self.irq
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// The event writer.
    pub fn out(&self) -> &EventWriter<W> {
        &self.out
    }
}

/// SIGTERM and SIGINT, delivered through a non-blocking signalfd.
#[derive(Debug)]
pub struct Signals {
    fd: SignalFd,
}

impl Signals {
    /// Blocks SIGTERM and SIGINT in the calling thread and opens a signalfd for them.
    /// Call it before any other thread starts, so every thread inherits the mask and the
    /// signals stay pending for the signalfd.
    pub fn new() -> Result<Self> {
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGTERM);
        mask.add(Signal::SIGINT);
        mask.thread_block()
            .map_err(|source| Error::Signals { source })?;
        let fd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|source| Error::Signals { source })?;
        Ok(Self { fd })
    }

    /// Reads one pending signal; `Ok(None)` when none is pending.
    pub fn read(&mut self) -> Result<Option<StopReason>> {
        loop {
            return match self.fd.read_signal() {
                Ok(None) => Ok(None),
                Ok(Some(info)) => Ok(Some(if info.ssi_signo == Signal::SIGINT as u32 {
                    StopReason::Sigint
                } else {
                    StopReason::Sigterm
                })),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(source) => Err(Error::Signals { source }),
            };
        }
    }
}

impl AsRawFd for Signals {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn poll_err(source: io::Error) -> Error {
    Error::Poll { source }
}

/// The event loop: registers the interrupt source and the signals with one `mio::Poll`,
/// writes the `start` line, then handles events until SIGTERM or SIGINT, and writes the
/// `stop` line. Returns the signal that stopped it; on error, returns it without
/// writing a line (see [`Daemon::fail`]).
///
/// No timeouts: an idle daemon sleeps in `epoll_wait`.
pub fn run<D, I, W>(daemon: &mut Daemon<D, I, W>, signals: &mut Signals) -> Result<StopReason>
where
    D: Device,
    I: IrqSource + AsRawFd,
    W: Write,
{
    let mut poll = Poll::new().map_err(poll_err)?;
    let irq_fd = daemon.irq().as_raw_fd();
    let sig_fd = signals.as_raw_fd();
    poll.registry()
        .register(&mut SourceFd(&irq_fd), UIO_TOKEN, Interest::READABLE)
        .map_err(poll_err)?;
    poll.registry()
        .register(&mut SourceFd(&sig_fd), SIGNAL_TOKEN, Interest::READABLE)
        .map_err(poll_err)?;

    // Registered first: an interrupt from here on is reported by the first poll.
    daemon.start()?;

    let mut events = Events::with_capacity(8);
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(poll_err(e)),
        }
        if events.is_empty() {
            tracing::debug!("poll returned without events");
        }
        let mut stop = None;
        for event in events.iter() {
            match event.token() {
                UIO_TOKEN => {
                    // Edge-triggered: drain until the read would block.
                    if daemon.on_readable()? == 0 {
                        tracing::debug!("spurious wakeup on the uio device");
                    }
                }
                SIGNAL_TOKEN => {
                    let mut any = false;
                    while let Some(reason) = signals.read()? {
                        any = true;
                        stop.get_or_insert(reason);
                    }
                    if !any {
                        tracing::debug!("spurious wakeup on the signalfd");
                    }
                }
                token => tracing::warn!("event for unknown token {}", token.0),
            }
        }
        if let Some(reason) = stop {
            daemon.stop(reason)?;
            return Ok(reason);
        }
    }
}

/// Opens where the JSON lines go: the log file (appending, created if missing) or a
/// duplicate of stdout as an unbuffered `File`.
pub fn open_output(log: Option<&std::path::Path>) -> Result<File> {
    match log {
        Some(path) => OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .map_err(|source| Error::Open {
                path: path.to_path_buf(),
                source,
            }),
        None => io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .map(File::from)
            .map_err(|source| Error::Open {
                path: "stdout".into(),
                source,
            }),
    }
}

/// kmemlabd from start to finish: blocks the signals, opens the output, `/dev/kmemlab`
/// and the UIO device, and runs the loop. A failure after the output is open is also
/// written as an `error` line.
pub fn serve(config: &DaemonConfig) -> Result<StopReason> {
    let mut signals = Signals::new()?;
    let mut out = EventWriter::new(open_output(config.log.as_deref())?);
    let opened = (|| {
        let device = KmemlabDevice::open(&config.device)?;
        let info = find_uio(&config.sysfs_uio, &config.uio_name)?;
        let uio = Uio::open(&info)?;
        Ok((device, uio))
    })();
    let (device, uio) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            if let Err(e2) = out.emit(&Event::error(now_ns(), &e)) {
                tracing::error!("{}", e2.report());
            }
            return Err(e);
        }
    };
    tracing::info!(
        "using {} and {} (count {})",
        device.path().display(),
        uio.path().display(),
        uio.initial_count()
    );
    let start = StartInfo {
        uio: uio.path().display().to_string(),
        device: device.path().display().to_string(),
        irq_count: uio.initial_count(),
    };
    let mut daemon = Daemon::new(device, uio, out, start);
    run(&mut daemon, &mut signals).inspect_err(|e| daemon.fail(e))
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::VecDeque;
    use std::rc::Rc;

    use kmemlab_uapi::{Info, ABI_VERSION};
    use nix::errno::Errno;
    use serde_json::Value;

    use super::*;
    use crate::device::MockDevice;

    /// What happened, in order, across the interrupt source and the output.
    type Log = Rc<RefCell<Vec<String>>>;

    /// A scripted interrupt source: `Some(count)` reads, `None` would block.
    struct MockIrq {
        reads: VecDeque<Option<u32>>,
        fail_enable: bool,
        log: Log,
    }

    impl IrqSource for MockIrq {
        fn read_count(&mut self) -> Result<Option<u32>> {
            let r = self.reads.pop_front().flatten();
            self.log.borrow_mut().push(match r {
                Some(c) => format!("read {c}"),
                None => "would block".into(),
            });
            Ok(r)
        }

        fn enable(&mut self) -> Result<()> {
            if self.fail_enable {
                return Err(Error::IrqEnable {
                    path: "/dev/uio0".into(),
                    source: io::Error::from(Errno::EIO),
                });
            }
            self.log.borrow_mut().push("enable".into());
            Ok(())
        }
    }

    /// An output that logs each line (each write is one whole line).
    struct LogWriter(Log);

    impl Write for LogWriter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let line = std::str::from_utf8(buf).unwrap();
            assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
            let v: Value = serde_json::from_str(line).unwrap();
            let mut s = format!("line {}", v["event"].as_str().unwrap());
            for key in ["irq_count", "missed", "reason", "abi_version", "error"] {
                if !v[key].is_null() {
                    s.push_str(&format!(" {key}={}", v[key]));
                }
            }
            self.0.borrow_mut().push(s);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn daemon_with(
        device: MockDevice,
        initial: u32,
        reads: &[Option<u32>],
    ) -> (Daemon<MockDevice, MockIrq, LogWriter>, Log) {
        let log = Log::default();
        let irq = MockIrq {
            reads: reads.iter().copied().collect(),
            fail_enable: false,
            log: log.clone(),
        };
        let start = StartInfo {
            uio: "/dev/uio0".into(),
            device: "/dev/kmemlab".into(),
            irq_count: initial,
        };
        let out = EventWriter::new(LogWriter(log.clone()));
        (Daemon::new(device, irq, out, start), log)
    }

    fn take(log: &Log) -> Vec<String> {
        std::mem::take(&mut *log.borrow_mut())
    }

    #[test]
    fn missed_arithmetic() {
        assert_eq!(missed(0, 1), 0);
        assert_eq!(missed(1, 2), 0);
        assert_eq!(missed(1, 3), 1);
        assert_eq!(missed(0, 101), 100);
        // Wrap-around of the 32-bit counter.
        assert_eq!(missed(u32::MAX, 0), 0);
        assert_eq!(missed(u32::MAX - 1, 1), 2);
        assert_eq!(missed(u32::MAX, u32::MAX - 1), u32::MAX - 1);
        // No change: nothing missed (and no underflow).
        assert_eq!(missed(5, 5), 0);
    }

    #[test]
    fn start_enables_then_writes_the_start_line() {
        let (mut d, log) = daemon_with(MockDevice::new(), 0, &[]);
        d.start().unwrap();
        assert_eq!(
            take(&log),
            [
                "enable".to_string(),
                format!("line start irq_count=0 abi_version={ABI_VERSION}")
            ]
        );
        assert_eq!(d.device().info_calls(), 1);
    }

    #[test]
    fn start_refuses_another_abi() {
        let dev = MockDevice::with_info(Info {
            abi_version: ABI_VERSION + 1,
            ..Info::default()
        });
        let (mut d, log) = daemon_with(dev, 0, &[]);
        assert!(matches!(d.start(), Err(Error::AbiMismatch { .. })));
        assert!(take(&log).is_empty());
    }

    #[test]
    fn start_fails_when_info_fails() {
        let (mut d, log) = daemon_with(MockDevice::failing(Errno::ENOTTY), 0, &[]);
        let err = d.start().unwrap_err();
        assert_eq!(err.errno_name(), "ENOTTY");
        d.fail(&err);
        assert_eq!(take(&log), ["line error error=\"ENOTTY\""]);
    }

    #[test]
    fn each_interrupt_is_re_enabled_before_its_line() {
        let (mut d, log) = daemon_with(MockDevice::new(), 0, &[Some(1), None]);
        assert_eq!(d.on_readable().unwrap(), 1);
        assert_eq!(
            take(&log),
            [
                "read 1",
                "enable",
                "line irq irq_count=1 missed=0",
                "would block"
            ]
        );
        assert_eq!(d.last_count(), 1);
    }

    #[test]
    fn drains_until_would_block_and_counts_missed() {
        let reads = [Some(2), Some(5), None, Some(6), None];
        let (mut d, log) = daemon_with(MockDevice::new(), 1, &reads);
        assert_eq!(d.on_readable().unwrap(), 2);
        assert_eq!(d.on_readable().unwrap(), 1);
        assert_eq!(
            take(&log),
            [
                "read 2",
                "enable",
                "line irq irq_count=2 missed=0",
                "read 5",
                "enable",
                "line irq irq_count=5 missed=2",
                "would block",
                "read 6",
                "enable",
                "line irq irq_count=6 missed=0",
                "would block"
            ]
        );
    }

    #[test]
    fn counts_across_wrap_around() {
        let reads = [Some(u32::MAX), Some(0), Some(2), None];
        let (mut d, log) = daemon_with(MockDevice::new(), u32::MAX - 1, &reads);
        assert_eq!(d.on_readable().unwrap(), 3);
        let lines: Vec<String> = take(&log)
            .into_iter()
            .filter(|l| l.starts_with("line"))
            .collect();
        assert_eq!(
            lines,
            [
                format!("line irq irq_count={} missed=0", u32::MAX),
                "line irq irq_count=0 missed=0".to_string(),
                "line irq irq_count=2 missed=1".to_string(),
            ]
        );
    }

    #[test]
    fn spurious_wakeup_writes_nothing() {
        let (mut d, log) = daemon_with(MockDevice::new(), 0, &[None]);
        assert_eq!(d.on_readable().unwrap(), 0);
        assert_eq!(take(&log), ["would block"]);
    }

    #[test]
    fn unchanged_count_re_enables_without_a_line() {
        let (mut d, log) = daemon_with(MockDevice::new(), 4, &[Some(4), None]);
        assert_eq!(d.on_readable().unwrap(), 1);
        assert_eq!(take(&log), ["read 4", "enable", "would block"]);
    }

    #[test]
    fn failed_enable_writes_no_line() {
        let (mut d, log) = daemon_with(MockDevice::new(), 0, &[Some(1)]);
        d.irq.fail_enable = true;
        let err = d.on_readable().unwrap_err();
        assert_eq!(err.errno_name(), "EIO");
        assert_eq!(take(&log), ["read 1"]);
        assert_eq!(d.last_count(), 0);
    }

    #[test]
    fn stop_reports_the_last_count() {
        let (mut d, log) = daemon_with(MockDevice::new(), 0, &[Some(3), None]);
        d.on_readable().unwrap();
        take(&log);
        d.stop(StopReason::Sigint).unwrap();
        assert_eq!(take(&log), ["line stop irq_count=3 reason=\"SIGINT\""]);
    }

    #[test]
    fn default_config() {
        let c = DaemonConfig::default();
        assert_eq!(c.device, PathBuf::from("/dev/kmemlab"));
        assert_eq!(c.uio_name, "kmemlab");
        assert_eq!(c.sysfs_uio, PathBuf::from("/sys/class/uio"));
        assert_eq!(c.log, None);
    }

    #[test]
    fn log_file_is_appended() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("kmemlabd.log");
        std::fs::write(&path, "old\n").unwrap();
        let mut w = EventWriter::new(open_output(Some(&path)).unwrap());
        w.emit(&Event::Stop {
            ts_ns: 1,
            irq_count: 2,
            reason: StopReason::Sigterm,
        })
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("old\n{\"event\":\"stop\""));
        assert!(open_output(Some(&tmp.path().join("no/such/dir.log"))).is_err());
    }
}
