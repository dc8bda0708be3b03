//! The ARM PL061 GPIO controller's interrupt registers (PrimeCell GPIO, ARM DDI 0190;
//! the same offsets as Linux's drivers/gpio/gpio-pl061.c), and what kmemlabd does with
//! them: one line as a falling-edge interrupt, the acknowledgement of each interrupt, and
//! the line's interrupt off again.
//!
//! Every change to a shared register is a read-modify-write of the line's bit only, so
//! the other seven lines keep their setup.

use super::Registers;
use crate::error::{Error, Result};

/// Direction: 1 output, 0 input.
pub const GPIODIR: usize = 0x400;
/// Interrupt sense: 1 level, 0 edge.
pub const GPIOIS: usize = 0x404;
/// Interrupt both edges: 1 both, 0 the one `GPIOIEV` selects.
pub const GPIOIBE: usize = 0x408;
/// Interrupt event: 1 rising edge or high level, 0 falling edge or low level.
pub const GPIOIEV: usize = 0x40C;
/// Interrupt mask: 1 enabled.
pub const GPIOIE: usize = 0x410;
/// Raw interrupt status (read only).
pub const GPIORIS: usize = 0x414;
/// Masked interrupt status, `GPIORIS & GPIOIE` (read only).
pub const GPIOMIS: usize = 0x418;
/// Interrupt clear (write only): 1 clears the edge interrupt of the line.
pub const GPIOIC: usize = 0x41C;
/// The bytes of the register window this module touches.
pub const WINDOW: usize = GPIOIC + 4;
/// Lines of one controller.
pub const LINES: u32 = 8;

/// The bit of `line` (0 to 7) in every register.
pub fn line_bit(line: u32) -> Result<u32> {
    if line < LINES {
        Ok(1 << line)
    } else {
        Err(Error::Invalid {
            what: "gpio line",
            input: line.to_string(),
            reason: format!("a pl061 has lines 0 to {}", LINES - 1),
        })
    }
}

/// Sets (`on`) or clears the bits `mask` of the register at `offset`, keeping the others.
fn update<R: Registers + ?Sized>(regs: &mut R, offset: usize, mask: u32, on: bool) -> Result<()> {
    let old = regs.read32(offset)?;
    let new = if on { old | mask } else { old & !mask };
    regs.write32(offset, new)
}

/// Makes `line` an input that interrupts on its falling edge: clears its bit in
/// `GPIODIR` (input), `GPIOIS` (edge), `GPIOIBE` (one edge) and `GPIOIEV` (falling),
/// clears any interrupt it latched meanwhile (`GPIOIC`), then enables it (`GPIOIE`). The
/// other lines' bits are kept.
pub fn program_falling_edge<R: Registers + ?Sized>(regs: &mut R, line: u32) -> Result<()> {
    let bit = line_bit(line)?;
    for offset in [GPIODIR, GPIOIS, GPIOIBE, GPIOIEV] {
        update(regs, offset, bit, false)?;
    }
    regs.write32(GPIOIC, bit)?;
    update(regs, GPIOIE, bit, true)
}

/// Acknowledges the controller's pending interrupts: reads `GPIOMIS` and writes what it
/// read to `GPIOIC`. Returns the bits that were pending (0: nothing was).
///
/// The controller's output to the GIC is level: it stays high until the status is
/// cleared, so this comes before the interrupt is unmasked again.
pub fn ack<R: Registers + ?Sized>(regs: &mut R) -> Result<u32> {
    let pending = regs.read32(GPIOMIS)?;
    regs.write32(GPIOIC, pending)?;
    Ok(pending)
}

/// Turns `line`'s interrupt off: clears its bit in `GPIOIE`, then clears what it may have
/// latched (`GPIOIC`). The other lines' bits are kept.
pub fn disable<R: Registers + ?Sized>(regs: &mut R, line: u32) -> Result<()> {
    let bit = line_bit(line)?;
    update(regs, GPIOIE, bit, false)?;
    regs.write32(GPIOIC, bit)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{Access, FakeRegs};
    use super::*;

    #[test]
    fn offsets_are_the_pl061s() {
        assert_eq!(
            [GPIODIR, GPIOIS, GPIOIBE, GPIOIEV, GPIOIE, GPIORIS, GPIOMIS, GPIOIC],
            [0x400, 0x404, 0x408, 0x40C, 0x410, 0x414, 0x418, 0x41C]
        );
        assert_eq!(WINDOW, 0x420);
        assert_eq!(line_bit(3).unwrap(), 0x08);
        assert_eq!(line_bit(7).unwrap(), 0x80);
        let err = line_bit(8).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid gpio line \"8\": a pl061 has lines 0 to 7"
        );
    }

    /// Line 3 on a controller whose other lines are set up otherwise: each register is
    /// read, then written with only bit 3 changed; the clear comes before the enable.
    #[test]
    fn falling_edge_on_line_3_keeps_the_other_lines() {
        let mut regs = FakeRegs::new();
        regs.set(GPIODIR, 0xff);
        regs.set(GPIOIS, 0x0c);
        regs.set(GPIOIBE, 0x18);
        regs.set(GPIOIEV, 0x09);
        regs.set(GPIOIE, 0x41);
        program_falling_edge(&mut regs, 3).unwrap();
        assert_eq!(
            regs.take_log(),
            [
                Access::Read(GPIODIR, 0xff),
                Access::Write(GPIODIR, 0xf7),
                Access::Read(GPIOIS, 0x0c),
                Access::Write(GPIOIS, 0x04),
                Access::Read(GPIOIBE, 0x18),
                Access::Write(GPIOIBE, 0x10),
                Access::Read(GPIOIEV, 0x09),
                Access::Write(GPIOIEV, 0x01),
                Access::Write(GPIOIC, 0x08),
                Access::Read(GPIOIE, 0x41),
                Access::Write(GPIOIE, 0x49),
            ]
        );
    }

    #[test]
    fn ack_clears_what_was_pending() {
        let mut regs = FakeRegs::new();
        regs.set(GPIOMIS, 0x08);
        assert_eq!(ack(&mut regs).unwrap(), 0x08);
        assert_eq!(
            regs.take_log(),
            [Access::Read(GPIOMIS, 0x08), Access::Write(GPIOIC, 0x08)]
        );
        // Several lines at once are cleared together; nothing pending writes 0.
        regs.set(GPIOMIS, 0x28);
        assert_eq!(ack(&mut regs).unwrap(), 0x28);
        regs.set(GPIOMIS, 0);
        assert_eq!(ack(&mut regs).unwrap(), 0);
        assert_eq!(
            regs.take_log(),
            [
                Access::Read(GPIOMIS, 0x28),
                Access::Write(GPIOIC, 0x28),
                Access::Read(GPIOMIS, 0),
                Access::Write(GPIOIC, 0),
            ]
        );
    }

    #[test]
    fn disable_clears_only_the_lines_enable() {
        let mut regs = FakeRegs::new();
        regs.set(GPIOIE, 0x49);
        disable(&mut regs, 3).unwrap();
        assert_eq!(
            regs.take_log(),
            [
                Access::Read(GPIOIE, 0x49),
                Access::Write(GPIOIE, 0x41),
                Access::Write(GPIOIC, 0x08),
            ]
        );
        assert!(disable(&mut regs, 9).is_err());
        assert!(regs.take_log().is_empty(), "a bad line touches nothing");
    }

    #[test]
    fn a_failed_access_stops_the_sequence() {
        let mut regs = FakeRegs::new().failing_at(GPIOIBE);
        let err = program_falling_edge(&mut regs, 3).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Register {
                    offset: GPIOIBE,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            regs.take_log(),
            [
                Access::Read(GPIODIR, 0),
                Access::Write(GPIODIR, 0),
                Access::Read(GPIOIS, 0),
                Access::Write(GPIOIS, 0),
            ]
        );
    }
}
