//! Tests of [`VfioIrq`] against the recording doubles of `vfio::testing`: the order of
//! the register accesses and the mask control, the count, the drop.

use crate::uio::IrqSource;
use crate::vfio::pl061::{GPIOIC, GPIOIE, GPIOMIS};
use crate::vfio::testing::{Access, FakeControl, FakeRegs, Log};

use super::*;

fn fake_irq(line: u32) -> (VfioIrq<FakeRegs, FakeControl>, Log) {
    let log = Log::default();
    let irq = VfioIrq::new(
        FakeRegs::with_log(&log),
        FakeControl::with_log(&log),
        line,
        "9030000.pl061 line 3",
    )
    .unwrap();
    (irq, log)
}

/// Signals the eventfd as VFIO's interrupt handler does (`eventfd_signal`), and sets the
/// controller's masked status as the button's edge would.
fn interrupt(irq: &mut VfioIrq<FakeRegs, FakeControl>, n: u64, mis: u32) {
    irq.regs.set(GPIOMIS, mis);
    irq.eventfd().write(n).unwrap();
}

#[test]
fn attach_programs_the_line_then_attaches_the_eventfd() {
    let (mut irq, log) = fake_irq(3);
    irq.attach().unwrap();
    let accesses = log.take();
    assert_eq!(accesses.len(), 12, "{accesses:?}");
    assert_eq!(accesses[8], Access::Write(GPIOIC, 0x08));
    assert_eq!(accesses[10], Access::Write(GPIOIE, 0x08));
    assert_eq!(accesses[11], Access::SetTrigger(irq.as_raw_fd()));
}

/// Each interrupt: the eventfd read, the controller acknowledged (MIS read, IC written),
/// and only then the unmask; the count is cumulative.
#[test]
fn each_interrupt_is_acknowledged_before_the_unmask() {
    let (mut irq, log) = fake_irq(3);
    irq.attach().unwrap();
    log.take();
    assert_eq!(irq.read_count().unwrap(), None, "nothing signalled yet");
    assert!(
        log.take().is_empty(),
        "no register is touched without an interrupt"
    );

    interrupt(&mut irq, 1, 0x08);
    assert_eq!(irq.read_count().unwrap(), Some(1));
    irq.enable().unwrap();
    assert_eq!(
        log.take(),
        [
            Access::Read(GPIOMIS, 0x08),
            Access::Write(GPIOIC, 0x08),
            Access::Unmask,
        ]
    );
    assert_eq!(irq.read_count().unwrap(), None, "the eventfd is drained");
    irq.enable().unwrap();
    assert!(log.take().is_empty(), "one unmask per signal");

    // Two signals before a read (an edge interrupt's): one read, the count jumps by 2.
    interrupt(&mut irq, 2, 0x08);
    assert_eq!(irq.read_count().unwrap(), Some(3));
    assert_eq!(irq.count(), 3);
    // Another line's interrupt with ours is acknowledged with it.
    interrupt(&mut irq, 1, 0x0c);
    assert_eq!(irq.read_count().unwrap(), Some(4));
    assert_eq!(
        log.take(),
        [
            Access::Read(GPIOMIS, 0x08),
            Access::Write(GPIOIC, 0x08),
            Access::Read(GPIOMIS, 0x0c),
            Access::Write(GPIOIC, 0x0c),
        ]
    );
}

/// A signal without the line's bit (another line's, or a level still high at the
/// unmask) is acknowledged and unmasked, and is not a count.
#[test]
fn a_signal_without_the_lines_bit_is_not_counted() {
    let (mut irq, log) = fake_irq(3);
    interrupt(&mut irq, 1, 0x10);
    assert_eq!(irq.read_count().unwrap(), None);
    assert_eq!((irq.count(), irq.spurious()), (0, 1));
    interrupt(&mut irq, 1, 0);
    assert_eq!(irq.read_count().unwrap(), None);
    assert_eq!(
        log.take(),
        [
            Access::Read(GPIOMIS, 0x10),
            Access::Write(GPIOIC, 0x10),
            Access::Unmask,
            Access::Read(GPIOMIS, 0),
            Access::Write(GPIOIC, 0),
            Access::Unmask,
        ]
    );
    interrupt(&mut irq, 1, 0x08);
    assert_eq!(irq.read_count().unwrap(), Some(1));
    assert_eq!(irq.spurious(), 2);
}

#[test]
fn the_count_wraps_like_the_uio_count() {
    let (mut irq, _log) = fake_irq(3);
    irq.count = u32::MAX;
    interrupt(&mut irq, 1, 0x08);
    assert_eq!(irq.read_count().unwrap(), Some(0));
}

#[test]
fn drop_turns_the_line_off_then_detaches() {
    let (mut irq, log) = fake_irq(3);
    irq.attach().unwrap();
    irq.regs.set(GPIOIE, 0x49);
    log.take();
    drop(irq);
    assert_eq!(
        log.take(),
        [
            Access::Read(GPIOIE, 0x49),
            Access::Write(GPIOIE, 0x41),
            Access::Write(GPIOIC, 0x08),
            Access::Disable,
        ]
    );
}

#[test]
fn errors_of_the_source() {
    let log = Log::default();
    let mut irq = VfioIrq::new(
        FakeRegs::with_log(&log).failing_at(GPIOMIS),
        {
            let mut ctl = FakeControl::with_log(&log);
            ctl.fail_unmask = true;
            ctl
        },
        3,
        "9030000.pl061 line 3",
    )
    .unwrap();
    irq.eventfd().write(1).unwrap();
    let err = irq.read_count().unwrap_err();
    assert!(
        matches!(
            err,
            Error::Register {
                offset: GPIOMIS,
                ..
            }
        ),
        "{err:?}"
    );
    irq.masked = true;
    let err = irq.enable().unwrap_err();
    assert_eq!(
        err.to_string(),
        "ioctl VFIO_DEVICE_SET_IRQS (unmask) failed"
    );
    assert!(VfioIrq::new(FakeRegs::new(), FakeControl::default(), 8, "x").is_err());
}

/// The descriptor to poll is the eventfd, and it is readable once signalled.
#[test]
fn the_descriptor_is_the_eventfd() {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

    let (mut irq, _log) = fake_irq(3);
    assert_eq!(irq.as_raw_fd(), irq.eventfd().as_raw_fd());
    let readable = |irq: &VfioIrq<FakeRegs, FakeControl>| {
        let mut fds = [PollFd::new(irq.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::ZERO).unwrap() == 1
    };
    assert!(!readable(&irq));
    interrupt(&mut irq, 1, 0x08);
    assert!(readable(&irq));
    irq.read_count().unwrap();
    assert!(!readable(&irq));
}
