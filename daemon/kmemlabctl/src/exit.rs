//! `kmemlabctl`'s exit statuses, defined here only; `kmemlabctl --help`, the man page and
//! the README list them.

use kmemlab::error::Error;
use nix::errno::Errno;

/// Everything asked for was done.
pub const SUCCESS: u8 = 0;
/// The kernel refused a request (an ioctl's errno), or another failure (a log, chart or
/// page file could not be read or written).
pub const FAILURE: u8 = 1;
/// The command line is not valid (clap's own status for a usage error).
pub const USAGE: u8 = 2;
/// No device or module: opening the device failed with `ENOENT`, `ENODEV` or `ENXIO`.
pub const NO_DEVICE: u8 = 3;
/// Some, not all, of a command's operations failed (`free H H`, `free --all`,
/// `alloc --count N`, `trigger --interval`).
pub const PARTIAL: u8 = 4;

/// The status for a failure to open the device: [`NO_DEVICE`] when the node or the
/// module behind it is missing, [`FAILURE`] otherwise (`EACCES`...).
pub fn of_open(err: &Error) -> u8 {
    match err.errno() {
        Errno::ENOENT | Errno::ENODEV | Errno::ENXIO => NO_DEVICE,
        _ => FAILURE,
    }
}

/// The status for a device command (not `report`, whose files are not devices) that failed
/// as a whole with `err`: [`of_open`]'s for a device that could not be opened, [`NO_DEVICE`]
/// when there is no kmemlab UIO device (`watch`), [`FAILURE`] otherwise.
pub fn of_error(err: &Error) -> u8 {
    match err {
        Error::Open { .. } => of_open(err),
        Error::UioNotFound { .. } => NO_DEVICE,
        _ => FAILURE,
    }
}

/// The status of a command that ran `done` operations and saw `failed` fail.
pub fn of_tally(done: usize, failed: usize) -> u8 {
    match (done, failed) {
        (_, 0) => SUCCESS,
        (0, _) => FAILURE,
        _ => PARTIAL,
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use clap::CommandFactory;

    use super::*;

    #[test]
    fn statuses_are_distinct_and_in_the_help() {
        let all = [SUCCESS, FAILURE, USAGE, NO_DEVICE, PARTIAL];
        let mut sorted = all.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), all.len());
        let help = crate::args::Cli::command().render_help().to_string();
        for (status, words) in [
            (SUCCESS, "success"),
            (FAILURE, "the kernel refused a request"),
            (USAGE, "usage error"),
            (NO_DEVICE, "no device or module"),
            (PARTIAL, "partial failure"),
        ] {
            assert!(help.contains(&format!("  {status}  {words}")), "{help}");
        }
    }

    #[test]
    fn an_open_failure_is_no_device_only_when_the_device_is_missing() {
        let open = |errno: Errno| Error::Open {
            path: "/dev/kmemlab".into(),
            source: io::Error::from_raw_os_error(errno as i32),
        };
        for errno in [Errno::ENOENT, Errno::ENODEV, Errno::ENXIO] {
            assert_eq!(of_open(&open(errno)), NO_DEVICE, "{errno}");
        }
        assert_eq!(of_open(&open(Errno::EACCES)), FAILURE);
        assert_eq!(of_tally(3, 0), SUCCESS);
        assert_eq!(of_tally(0, 2), FAILURE);
        assert_eq!(of_tally(2, 1), PARTIAL);
        // A command that fails as a whole: the same for an open, and `watch` without a
        // kmemlab UIO device is "no device or module" too.
        assert_eq!(of_error(&open(Errno::ENODEV)), NO_DEVICE);
        let no_uio = Error::UioNotFound {
            name: "kmemlab".into(),
            root: "/sys/class/uio".into(),
        };
        assert_eq!(of_error(&no_uio), NO_DEVICE);
        let refused = Error::Ioctl {
            cmd: "KMEMLAB_ALLOC",
            source: Errno::ENOMEM,
        };
        assert_eq!(of_error(&refused), FAILURE);
    }
}
