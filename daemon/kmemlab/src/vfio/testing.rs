//! Test doubles of the VFIO backend: registers and an interrupt control that record
//! every access, in order, into one shared log, so that tests can check sequences across
//! both (the acknowledgement before the unmask). Both are `Send` and share their state
//! with their clones, so a test can drive a daemon thread's source from outside.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::{Arc, Mutex, PoisonError};

use nix::errno::Errno;

use super::{IrqControl, Registers};
use crate::error::{Error, Result};

/// One recorded access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A register read at an offset, and the value it returned.
    Read(usize, u32),
    /// A register write at an offset, and the value written.
    Write(usize, u32),
    /// `VFIO_DEVICE_SET_IRQS` with an eventfd (`ACTION_TRIGGER`), and the descriptor.
    SetTrigger(i32),
    /// `VFIO_DEVICE_SET_IRQS` with `ACTION_UNMASK`.
    Unmask,
    /// `VFIO_DEVICE_SET_IRQS` with `DATA_NONE | ACTION_TRIGGER`, count 0.
    Disable,
}

/// The log that [`FakeRegs`] and [`FakeControl`] share.
#[derive(Clone, Debug, Default)]
pub struct Log(Arc<Mutex<Vec<Access>>>);

impl Log {
    /// The accesses so far, emptying the log.
    pub fn take(&self) -> Vec<Access> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn push(&self, access: Access) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(access);
    }
}

/// Registers in memory: a read returns the last value set or written (0 at first). A
/// clone shares the registers and the log.
#[derive(Clone, Debug, Default)]
pub struct FakeRegs {
    values: Arc<Mutex<HashMap<usize, u32>>>,
    log: Log,
    fail_at: Option<usize>,
}

impl FakeRegs {
    /// Registers at 0, with a log of their own.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers that write into `log`.
    pub fn with_log(log: &Log) -> Self {
        Self {
            log: log.clone(),
            ..Self::default()
        }
    }

    /// Any access at `offset` fails, as one outside the window would.
    #[must_use]
    pub fn failing_at(mut self, offset: usize) -> Self {
        self.fail_at = Some(offset);
        self
    }

    /// Sets a register as the hardware would, without logging it.
    pub fn set(&self, offset: usize, value: u32) {
        self.values
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(offset, value);
    }

    /// The register's current value, without logging it.
    pub fn get(&self, offset: usize) -> u32 {
        self.values
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&offset)
            .copied()
            .unwrap_or(0)
    }

    /// The accesses so far (of every user of the log), emptying the log.
    pub fn take_log(&self) -> Vec<Access> {
        self.log.take()
    }

    fn check(&self, offset: usize) -> Result<()> {
        if self.fail_at == Some(offset) {
            return Err(Error::Register {
                offset,
                len: super::pl061::WINDOW,
            });
        }
        Ok(())
    }
}

impl Registers for FakeRegs {
    fn read32(&mut self, offset: usize) -> Result<u32> {
        self.check(offset)?;
        let value = self.get(offset);
        self.log.push(Access::Read(offset, value));
        Ok(value)
    }

    fn write32(&mut self, offset: usize, value: u32) -> Result<()> {
        self.check(offset)?;
        self.set(offset, value);
        self.log.push(Access::Write(offset, value));
        Ok(())
    }
}

/// An interrupt control that logs each call; `fail_unmask` makes unmasks fail with
/// `EINVAL`.
#[derive(Debug, Default)]
pub struct FakeControl {
    log: Log,
    /// Unmasks fail.
    pub fail_unmask: bool,
}

impl FakeControl {
    /// A control that writes into `log`.
    pub fn with_log(log: &Log) -> Self {
        Self {
            log: log.clone(),
            fail_unmask: false,
        }
    }
}

impl IrqControl for FakeControl {
    fn set_trigger(&mut self, eventfd: BorrowedFd<'_>) -> Result<()> {
        self.log.push(Access::SetTrigger(eventfd.as_raw_fd()));
        Ok(())
    }

    fn unmask(&mut self) -> Result<()> {
        if self.fail_unmask {
            return Err(Error::Ioctl {
                cmd: "VFIO_DEVICE_SET_IRQS (unmask)",
                source: Errno::EINVAL,
            });
        }
        self.log.push(Access::Unmask);
        Ok(())
    }

    fn disable(&mut self) -> Result<()> {
        self.log.push(Access::Disable);
        Ok(())
    }
}
