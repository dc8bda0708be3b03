//! SIGHUP: the config file re-read, the plan and debounce swapped, the log reopened.

use std::io::Write;
use std::path::Path;

use kmemlab::device::Device;
use kmemlab::error::Result;
use kmemlab::uio::IrqSource;

use crate::config::DaemonConfig;
use crate::daemon::Daemon;
use crate::event::{now_ns, Event, Op};
use crate::output::{EventWriter, Reopen};
use crate::plan::PlanRunner;

impl<D: Device, I: IrqSource, W: Write> Daemon<D, I, W> {
    /// SIGHUP: `loaded` is the re-read config (`None`: no config file, nothing to
    /// re-read); `reopen` opens the output anew for a log path (`None`: keep it).
    ///
    /// The output is reopened first, even when the config is invalid, so that a rotated
    /// log is let go. A valid config takes effect at once: a changed plan frees what is
    /// held and starts at its first step; the debounce interval applies from the next
    /// press; `uio_name`, `device`, `backend` and the `vfio_*` keys need a restart. An
    /// invalid one is an `error` line (`"op":"reload"`) and the running config stays. Then a `reload` line. A
    /// `/proc/vmallocinfo` that was refused is tried again at the next vmalloc press.
    pub fn reload(
        &mut self,
        config_file: Option<&Path>,
        loaded: Option<Result<DaemonConfig>>,
        reopen: Option<Reopen<W>>,
    ) -> Result<()> {
        let (mut new, failed) = match loaded {
            None => (self.config.clone(), None),
            Some(Ok(config)) => (config, None),
            Some(Err(e)) => (self.config.clone(), Some(e)),
        };
        let mut log_reopened = false;
        let mut log_failed = None;
        if let Some(reopen) = reopen {
            match reopen(new.log.as_deref()) {
                Ok(w) => {
                    self.out = EventWriter::new(w);
                    log_reopened = true;
                }
                Err(e) => {
                    new.log = self.config.log.clone();
                    log_failed = Some(e);
                }
            }
        }
        let ok = failed.is_none() && log_failed.is_none();
        // A refused /proc/vmallocinfo is tried again (permissions may have changed).
        self.vmallocinfo_reader.retry();
        for e in failed.iter().chain(log_failed.iter()) {
            tracing::warn!("reload: {}", e.report());
            self.out.emit(&Event::ReloadError {
                ts_ns: now_ns(),
                op: Op::Reload,
                error: e.errno_name(),
                message: e.report(),
            })?;
        }
        let mut changed = Vec::new();
        if new.plan != self.config.plan {
            changed.push("plan");
            self.release()?;
            self.runner = PlanRunner::new(new.plan.clone());
        }
        if new.debounce_ms != self.config.debounce_ms {
            changed.push("debounce_ms");
        }
        if new.log != self.config.log {
            changed.push("log");
        }
        let mut restart_needed = Vec::new();
        if new.uio_name != self.config.uio_name {
            restart_needed.push("uio_name");
            new.uio_name = self.config.uio_name.clone();
        }
        if new.device != self.config.device {
            restart_needed.push("device");
            new.device = self.config.device.clone();
        }
        if new.backend != self.config.backend {
            restart_needed.push("backend");
            new.backend = self.config.backend;
        }
        for (key, changed) in [
            ("vfio_bus", new.vfio.bus != self.config.vfio.bus),
            ("vfio_device", new.vfio.device != self.config.vfio.device),
            ("vfio_line", new.vfio.line != self.config.vfio.line),
        ] {
            if changed {
                restart_needed.push(key);
            }
        }
        new.vfio = self.config.vfio.clone();
        self.config = new;
        self.out.emit(&Event::Reload {
            ts_ns: now_ns(),
            ok,
            config: config_file.map(|p| p.display().to_string()),
            changed,
            restart_needed,
            log_reopened,
            plan: self.runner.plan().to_string(),
            debounce_ms: self.config.debounce_ms,
            log: self.config.log.as_ref().map(|p| p.display().to_string()),
        })
    }
}
