//! The VFIO interrupt as kmemlabd's source of presses: [`VfioIrq`] over an eventfd, the
//! PL061's registers and VFIO's mask control.

use std::io::{self};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd};

use super::*;
use crate::error::{Error, Result};
use crate::uio::IrqSource;

/// The device interrupt as [`VfioIrq`] drives it: attach an eventfd, unmask, disable.
pub trait IrqControl {
    /// Signals `eventfd` on each interrupt, and enables it.
    fn set_trigger(&mut self, eventfd: BorrowedFd<'_>) -> Result<()>;
    /// Unmasks it after an interrupt (nothing to do for an edge interrupt).
    fn unmask(&mut self) -> Result<()>;
    /// Disables it and detaches the eventfd.
    fn disable(&mut self) -> Result<()>;
}

/// The real [`IrqControl`]: interrupt index 0 of an open [`Vfio`] device.
#[derive(Debug)]
pub struct VfioIrqLine {
    vfio: Vfio,
    index: u32,
    mode: IrqMode,
}

impl VfioIrqLine {
    /// The device.
    pub fn vfio(&self) -> &Vfio {
        &self.vfio
    }

    /// Level or edge.
    pub fn mode(&self) -> IrqMode {
        self.mode
    }
}

impl IrqControl for VfioIrqLine {
    fn set_trigger(&mut self, eventfd: BorrowedFd<'_>) -> Result<()> {
        self.vfio.set_irq_trigger(self.index, eventfd)
    }

    fn unmask(&mut self) -> Result<()> {
        match self.mode {
            IrqMode::Level => self.vfio.unmask_irq(self.index),
            IrqMode::Edge => Ok(()),
        }
    }

    fn disable(&mut self) -> Result<()> {
        self.vfio.disable_irq(self.index)
    }
}

/// A GPIO line's falling edges as an [`IrqSource`]: the device interrupt signals an
/// eventfd; each read of the eventfd acknowledges the controller and adds the eventfd's
/// value to a cumulative, wrapping 32-bit count (the UIO count's semantics);
/// [`IrqSource::enable`] unmasks. A signal without the line's bit in `GPIOMIS` is
/// acknowledged and unmasked but not counted ([`VfioIrq::spurious`]). The eventfd is the
/// descriptor to poll ([`AsRawFd`]).
///
/// Dropping it turns the line's interrupt off in the controller (`GPIOIE`, then
/// `GPIOIC`), then disables the device interrupt and detaches the eventfd.
#[derive(Debug)]
pub struct VfioIrq<R: Registers, C: IrqControl> {
    eventfd: EventFd,
    regs: R,
    ctl: C,
    line: u32,
    count: u32,
    spurious: u64,
    /// A signal was read since the last unmask: VFIO masked the (level) interrupt when it
    /// signalled, and [`IrqSource::enable`] unmasks it.
    masked: bool,
    name: PathBuf,
}

/// The real thing: the mapped PL061 and its VFIO interrupt.
pub type VfioButton = VfioIrq<VfioRegion, VfioIrqLine>;

impl<R: Registers, C: IrqControl> VfioIrq<R, C> {
    /// A source over `regs` and `ctl` for `line`, with a new non-blocking eventfd; its
    /// count starts at 0. Nothing is programmed until [`VfioIrq::attach`]. `name` names
    /// the source in errors (e.g. `9030000.pl061 line 3`).
    pub fn new(regs: R, ctl: C, line: u32, name: impl Into<PathBuf>) -> Result<Self> {
        pl061::line_bit(line)?;
        let name = name.into();
        let eventfd = EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC).map_err(
            |errno| Error::Open {
                path: "eventfd".into(),
                source: io::Error::from(errno),
            },
        )?;
        Ok(Self {
            eventfd,
            regs,
            ctl,
            line,
            count: 0,
            spurious: 0,
            masked: false,
            name,
        })
    }

    /// Programs the line as a falling-edge interrupt, then attaches the eventfd to the
    /// device interrupt (which enables it). On an error, dropping `self` undoes both.
    pub fn attach(&mut self) -> Result<()> {
        pl061::program_falling_edge(&mut self.regs, self.line)?;
        self.ctl.set_trigger(self.eventfd.as_fd())
    }

    /// The eventfd, for tests that signal it by hand.
    pub fn eventfd(&self) -> &EventFd {
        &self.eventfd
    }

    /// The registers.
    pub fn regs(&self) -> &R {
        &self.regs
    }

    /// The interrupt control.
    pub fn control(&self) -> &C {
        &self.ctl
    }

    /// The GPIO line.
    pub fn line(&self) -> u32 {
        self.line
    }

    /// Interrupts counted so far.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Signals that came without the line's bit in `GPIOMIS`, not counted.
    pub fn spurious(&self) -> u64 {
        self.spurious
    }
}

impl VfioButton {
    /// Opens `target`'s device ([`Vfio::open`]), takes the group's lock
    /// ([`Vfio::lock_exclusive`]; see [`VfioButton::is_locked`]), maps its registers,
    /// checks its interrupt and attaches: the line is a falling-edge interrupt that
    /// signals the eventfd from here on.
    pub fn open(target: &VfioTarget) -> Result<Self> {
        let mut vfio = Vfio::open(target)?;
        vfio.lock_exclusive()?;
        let regs = vfio.map_region(REGION, pl061::WINDOW)?;
        let mode = irq_mode(&target.device, &vfio.irq_info(IRQ_INDEX)?)?;
        let ctl = VfioIrqLine {
            vfio,
            index: IRQ_INDEX,
            mode,
        };
        let name = format!("{} line {}", target.device, target.line);
        let mut irq = Self::new(regs, ctl, target.line, name)?;
        irq.attach()?;
        Ok(irq)
    }

    /// Whether the group's lock is held (`false` on a kernel without file locking).
    pub fn is_locked(&self) -> bool {
        self.ctl.vfio.is_locked()
    }

    /// The open device.
    pub fn vfio(&self) -> &Vfio {
        &self.ctl.vfio
    }
}

impl<R: Registers, C: IrqControl> IrqSource for VfioIrq<R, C> {
    fn read_count(&mut self) -> Result<Option<u32>> {
        loop {
            return match self.eventfd.read() {
                // The eventfd's value: interrupts signalled since the last read (one, as
                // VFIO masks a level interrupt until it is unmasked).
                Ok(n) => {
                    let pending = pl061::ack(&mut self.regs)?;
                    if pending & (1 << self.line) == 0 {
                        // Not the line's edge (another line's, or the level the
                        // controller was still driving when the interrupt was
                        // unmasked): acknowledged, unmasked again, not counted.
                        self.spurious += 1;
                        tracing::debug!(
                            "interrupt on {} without line {} pending (GPIOMIS {pending:#x}); \
                             not counted",
                            self.name.display(),
                            self.line
                        );
                        self.ctl.unmask()?;
                        continue;
                    }
                    // Wrapping, as the UIO count does.
                    self.count = self.count.wrapping_add(n as u32);
                    self.masked = true;
                    Ok(Some(self.count))
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => Ok(None),
                Err(errno) => Err(Error::IrqRead {
                    path: self.name.clone(),
                    source: io::Error::from(errno),
                }),
            };
        }
    }

    /// Unmasks the device interrupt if a read took a signal since the last unmask (the
    /// read acknowledged the controller first). Otherwise the interrupt is not masked,
    /// and the unmask is left out: at the daemon's start, an unmask while an interrupt
    /// waits unread in the eventfd, not yet acknowledged, would raise it a second time.
    fn enable(&mut self) -> Result<()> {
        if self.masked {
            self.ctl.unmask()?;
            self.masked = false;
        }
        Ok(())
    }
}

impl<R: Registers, C: IrqControl> Drop for VfioIrq<R, C> {
    fn drop(&mut self) {
        if let Err(e) = pl061::disable(&mut self.regs, self.line) {
            tracing::warn!(
                "leaving {} with its interrupt enabled: {}",
                self.name.display(),
                e.report()
            );
        }
        if let Err(e) = self.ctl.disable() {
            tracing::warn!("{}: {}", self.name.display(), e.report());
        }
    }
}

impl<R: Registers, C: IrqControl> AsFd for VfioIrq<R, C> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.eventfd.as_fd()
    }
}

impl<R: Registers, C: IrqControl> AsRawFd for VfioIrq<R, C> {
    fn as_raw_fd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests;
