//! The event loop: the interrupt source's descriptor (the UIO device, or the VFIO
//! backend's eventfd) and a signalfd in one `mio::Poll`, and [`serve`], which opens the
//! devices and runs it.

use std::fmt;
use std::io::{self, ErrorKind, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use kmemlab::device::{Device, KmemlabDevice};
use kmemlab::error::{Error, Result};
use kmemlab::uio::{find_uio, IrqSource, Uio};
use kmemlab::vfio::VfioButton;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::config::{Backend, ConfigSource, DaemonConfig};
use crate::daemon::{Daemon, StartInfo};
use crate::event::{monotonic_ns, now_ns, Event, StopReason, VfioStart};
use crate::notify::Notifier;
use crate::output::{open_output, EventWriter, Reopen};

/// Token of the UIO descriptor in the poll.
pub const UIO_TOKEN: Token = Token(0);
/// Token of the signalfd in the poll.
pub const SIGNAL_TOKEN: Token = Token(1);

/// What a signal asks of the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// SIGTERM or SIGINT: free, summarize, stop.
    Stop(StopReason),
    /// SIGHUP: re-read the config, reopen the log.
    Reload,
    /// SIGUSR1: write a `stats` line.
    Stats,
}

/// SIGTERM, SIGINT, SIGHUP and SIGUSR1, delivered through a non-blocking signalfd.
#[derive(Debug)]
pub struct Signals {
    fd: SignalFd,
}

impl Signals {
    /// Blocks SIGTERM, SIGINT, SIGHUP and SIGUSR1 in the calling thread and opens a
    /// signalfd for them.
    /// Call it before any other thread starts, so every thread inherits the mask and the
    /// signals stay pending for the signalfd.
    pub fn new() -> Result<Self> {
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGTERM);
        mask.add(Signal::SIGINT);
        mask.add(Signal::SIGHUP);
        mask.add(Signal::SIGUSR1);
        mask.thread_block()
            .map_err(|source| Error::Signals { source })?;
        let fd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|source| Error::Signals { source })?;
        Ok(Self { fd })
    }

    /// Reads one pending signal; `Ok(None)` when none is pending.
    pub fn read(&mut self) -> Result<Option<Request>> {
        loop {
            return match self.fd.read_signal() {
                Ok(None) => Ok(None),
                Ok(Some(info)) => Ok(Some(match info.ssi_signo {
                    n if n == Signal::SIGINT as u32 => Request::Stop(StopReason::Sigint),
                    n if n == Signal::SIGHUP as u32 => Request::Reload,
                    n if n == Signal::SIGUSR1 as u32 => Request::Stats,
                    _ => Request::Stop(StopReason::Sigterm),
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

/// What the loop does besides the daemon's own work: systemd notifications and reloads.
pub struct Hooks<W> {
    /// Where `READY=1`, `STATUS=` and `STOPPING=1` go.
    pub notifier: Notifier,
    /// Re-read on SIGHUP when it names a config file.
    pub source: Option<ConfigSource>,
    /// Opens the output anew on SIGHUP (`None`: the output is kept).
    pub reopen: Option<Reopen<W>>,
}

impl<W> Default for Hooks<W> {
    fn default() -> Self {
        Self {
            notifier: Notifier::disabled(),
            source: None,
            reopen: None,
        }
    }
}

impl<W> fmt::Debug for Hooks<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("notifier", &self.notifier)
            .field("source", &self.source)
            .field("reopen", &self.reopen.is_some())
            .finish()
    }
}

/// [`run_with`] without notifications, reloads of a file or reopens.
pub fn run<D, I, W>(daemon: &mut Daemon<D, I, W>, signals: &mut Signals) -> Result<StopReason>
where
    D: Device,
    I: IrqSource + AsRawFd,
    W: Write,
{
    run_with(daemon, signals, &Hooks::default())
}

/// Counts read from the UIO device between two looks at the signals. An interrupt storm
/// keeps the device readable; after this many reads the loop polls again without waiting
/// and takes any pending signal first, so SIGTERM is seen after at most this many steps.
pub const UIO_BATCH: usize = 32;

/// The event loop: registers the interrupt source and the signals with one `mio::Poll`,
/// writes the `start` line, tells systemd `READY=1`, then handles events until SIGTERM
/// or SIGINT (SIGHUP reloads, SIGUSR1 writes `stats`), and writes the `summary` and
/// `stop` lines. Returns the signal that stopped it.
///
/// On a fatal error (the UIO device gone: `EIO` from its read once it is unregistered,
/// an output that fails) it writes an `error` line and, once started, frees what it
/// holds and writes `summary` and a `stop` line with `"reason":"error"`, then returns the
/// error (kmemlabd exits non-zero, so that systemd's `Restart=on-failure` restarts it).
///
/// No timeouts: an idle daemon sleeps in `epoll_wait`.
pub fn run_with<D, I, W>(
    daemon: &mut Daemon<D, I, W>,
    signals: &mut Signals,
    hooks: &Hooks<W>,
) -> Result<StopReason>
where
    D: Device,
    I: IrqSource + AsRawFd,
    W: Write,
{
    let mut started = false;
    let result = run_loop(daemon, signals, hooks, &mut started);
    if let Err(e) = &result {
        daemon.fail(e);
        if started {
            hooks.notifier.stopping();
            if let Err(e2) = daemon.stop(StopReason::Error) {
                tracing::error!("after the error, stopping failed too: {}", e2.report());
            }
        }
    }
    result
}

fn run_loop<D, I, W>(
    daemon: &mut Daemon<D, I, W>,
    signals: &mut Signals,
    hooks: &Hooks<W>,
    started: &mut bool,
) -> Result<StopReason>
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
    *started = true;
    // The devices are open, the heap mapped (by the caller), the descriptors registered.
    hooks.notifier.ready(&daemon.status());

    let config_file = hooks.source.as_ref().and_then(|s| s.file.clone());
    let mut events = Events::with_capacity(8);
    // The UIO device was reported readable (edge-triggered) and not yet read until it
    // would block: poll without waiting, read the next batch.
    let mut uio_pending = false;
    loop {
        let timeout = uio_pending.then_some(Duration::ZERO);
        match poll.poll(&mut events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(poll_err(e)),
        }
        if events.is_empty() && !uio_pending {
            tracing::debug!("poll returned without events");
        }
        let mut stop = None;
        for event in events.iter() {
            match event.token() {
                UIO_TOKEN => {
                    if event.is_error() {
                        // What uio_poll() answers once the device is unregistered; the
                        // read below then fails with EIO.
                        tracing::debug!("poll reports an error on the uio device");
                    }
                    uio_pending = true;
                }
                SIGNAL_TOKEN => {
                    let mut any = false;
                    while let Some(request) = signals.read()? {
                        any = true;
                        match request {
                            Request::Stop(reason) => {
                                stop.get_or_insert(reason);
                            }
                            Request::Reload => {
                                hooks.notifier.reloading(monotonic_ns() / 1000);
                                let loaded = hooks
                                    .source
                                    .as_ref()
                                    .filter(|s| s.file.is_some())
                                    .map(ConfigSource::load);
                                daemon.reload(config_file.as_deref(), loaded, hooks.reopen)?;
                                // Also after a failed reload: the old config runs on.
                                hooks.notifier.ready(&daemon.status());
                            }
                            Request::Stats => daemon.write_stats()?,
                        }
                    }
                    if !any {
                        tracing::debug!("spurious wakeup on the signalfd");
                    }
                }
                token => tracing::warn!("event for unknown token {}", token.0),
            }
        }
        if let Some(reason) = stop {
            hooks.notifier.stopping();
            daemon.stop(reason)?;
            return Ok(reason);
        }
        if uio_pending {
            let (n, drained) = daemon.on_readable_at_most(UIO_BATCH)?;
            if drained {
                uio_pending = false;
                if n == 0 {
                    tracing::debug!("spurious wakeup on the uio device");
                }
            }
            if n > 0 && hooks.notifier.enabled() {
                hooks.notifier.status(&daemon.status());
            }
        }
    }
}

/// kmemlabd from start to finish: blocks the signals, opens the output, `/dev/kmemlab`
/// and the interrupt source of `config.backend` (the UIO device and its heap, or the VFIO
/// device), and runs the loop, notifying `$NOTIFY_SOCKET` if set. `source` is re-read on
/// SIGHUP. A failure after the output is open is also written as an `error` line (see
/// [`run_with`] for the lines after a start).
pub fn serve(config: &DaemonConfig, source: Option<&ConfigSource>) -> Result<StopReason> {
    let mut signals = Signals::new()?;
    let out = EventWriter::new(open_output(config.log.as_deref())?);
    let hooks = Hooks {
        notifier: Notifier::from_env(),
        source: source.cloned(),
        reopen: Some(open_output),
    };
    match config.backend {
        Backend::Uio => serve_uio(config, out, &mut signals, &hooks),
        Backend::Vfio => serve_vfio(config, out, &mut signals, &hooks),
    }
}

/// Writes an `error` line for a failure to open the devices, and returns the failure.
fn opening_failed<W: Write, T>(out: &mut EventWriter<W>, e: Error) -> Result<T> {
    if let Err(e2) = out.emit(&Event::error(now_ns(), &e)) {
        tracing::error!("{}", e2.report());
    }
    Err(e)
}

/// The UIO backend: the module's UIO device gives the interrupts, its heap the ring.
fn serve_uio<W: Write>(
    config: &DaemonConfig,
    mut out: EventWriter<W>,
    signals: &mut Signals,
    hooks: &Hooks<W>,
) -> Result<StopReason> {
    let opened = (|| {
        let device = KmemlabDevice::open(&config.device)?;
        let info = find_uio(&config.sysfs_uio, &config.uio_name)?;
        let mut uio = Uio::open(&info)?;
        // One daemon per device: a second one stops here.
        if !uio.lock_exclusive()? {
            tracing::warn!(
                "this kernel has no file locking (CONFIG_FILE_LOCKING=n, flock: ENOSYS): \
                 running without the lock on {}, so a second kmemlabd on it would not be \
                 refused",
                uio.path().display()
            );
        }
        Ok((device, uio))
    })();
    let (device, uio) = match opened {
        Ok(opened) => opened,
        Err(e) => return opening_failed(&mut out, e),
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
    // The heap's first page holds the interrupt ring; without it the daemon runs on,
    // with irq_to_wake_ns null.
    // Mapped writable (never written): the atomic loads of the ring need memory that is
    // valid for writes.
    let ring = match uio.map(0) {
        Ok(map) => Some(map),
        Err(e) => {
            tracing::warn!(
                "no interrupt ring, irq_to_wake_ns will be null: {}",
                e.report()
            );
            None
        }
    };
    let mut daemon = Daemon::new(device, uio, out, start).with_config(config);
    if let Some(map) = ring {
        daemon = daemon.with_ring(Box::new(map));
    }
    run_with(&mut daemon, signals, hooks)
}

/// The VFIO backend: kmemlabd drives the GPIO controller through VFIO and takes each
/// interrupt from an eventfd; `/dev/kmemlab` serves the allocations only (the module's
/// node is then its software device, with no interrupt and no UIO device).
///
/// What the UIO path does that does not apply here: no UIO device is looked up, and no
/// heap is mapped, so there is no interrupt ring: `irq_to_wake_ns`, `source` and
/// `irq_ktime_ns` are null (no kernel timestamp of the interrupt reaches the daemon
/// through the eventfd), and debounce uses the wake-up times. The one-instance lock is a
/// `flock` on the VFIO group node instead of the UIO node (the group also opens only
/// once). The count starts at 0: it is the daemon's own, not the kernel's.
fn serve_vfio<W: Write>(
    config: &DaemonConfig,
    mut out: EventWriter<W>,
    signals: &mut Signals,
    hooks: &Hooks<W>,
) -> Result<StopReason> {
    let opened = (|| {
        // The device first: the controller is programmed only once it opened.
        let device = KmemlabDevice::open(&config.device)?;
        let button = VfioButton::open(&config.vfio)?;
        if !button.is_locked() {
            tracing::warn!(
                "this kernel has no file locking (CONFIG_FILE_LOCKING=n, flock: ENOSYS): \
                 running without the lock on {}",
                button.vfio().location().group.display()
            );
        }
        Ok((device, button))
    })();
    let (device, button) = match opened {
        Ok(opened) => opened,
        Err(e) => return opening_failed(&mut out, e),
    };
    let location = button.vfio().location().clone();
    tracing::info!(
        "using {} and {} line {} through vfio ({}, {})",
        device.path().display(),
        config.vfio.device,
        config.vfio.line,
        location.group.display(),
        location.driver
    );
    let start = StartInfo {
        uio: String::new(),
        device: device.path().display().to_string(),
        irq_count: button.count(),
    };
    let vfio = VfioStart {
        group: location.group.display().to_string(),
        bus: config.vfio.bus.clone(),
        device: config.vfio.device.clone(),
        driver: location.driver,
        line: config.vfio.line,
    };
    let mut daemon = Daemon::new(device, button, out, start)
        .with_config(config)
        .with_vfio(vfio);
    run_with(&mut daemon, signals, hooks)
}
