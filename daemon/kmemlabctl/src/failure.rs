//! A failed command: the error object `--json` prints, and a hint for a failure people
//! commonly run into.

use kmemlab::error::Error;
use kmemlab::report::{to_json, ErrorReport};

use crate::command::Command;

/// A hint for a failure people commonly run into, for the text-mode error message.
pub fn hint(command: &Command, err: &Error) -> Option<String> {
    use nix::errno::Errno;
    match (command, err.errno()) {
        (Command::Sweep(_), Errno::ENOSPC | Errno::EDQUOT)
            if matches!(err, Error::LiveFill { .. }) =>
        {
            Some(
                "--live holds more than the module lets this opener have: max outstanding \
                 count and bytes, and without CAP_SYS_ADMIN file max count and bytes \
                 (`kmemlabctl info`)"
                    .into(),
            )
        }
        (Command::Free { handles }, Errno::ENOENT) => Some(format!(
            "{} not live or not visible to this opener (only --persist \
             allocations outlive the kmemlabctl that made them)",
            match handles.as_slice() {
                [handle] => format!("handle {handle} is"),
                _ => "a handle refused with ENOENT is".to_owned(),
            }
        )),
        (_, Errno::ENOTTY) if matches!(err, Error::Ioctl { .. }) => Some(
            "the module does not know this command (an older kmemlab.ko, or not \
             /dev/kmemlab)"
                .into(),
        ),
        (Command::Alloc { .. } | Command::Bench { .. } | Command::Sweep(_), Errno::E2BIG) => Some(
            "larger than the module allows for this kind (`kmemlabctl info` shows max size)".into(),
        ),
        (Command::Alloc { .. }, Errno::ENOSPC) => Some(
            "the module's limit of outstanding allocations is reached (`kmemlabctl info`, \
             `kmemlabctl list`)"
                .into(),
        ),
        (Command::Alloc { .. } | Command::Bench { .. } | Command::Sweep(_), Errno::EINVAL) => Some(
            "the module refuses this kind, size or flag combination (`kmemlabctl info` lists \
             the gfp flags it accepts; GFP_DMA only for kmalloc and pages, GFP_DMA32 only for \
             pages)"
                .into(),
        ),
        (Command::Alloc { .. }, Errno::EDQUOT) => Some(
            "this opener's quota is reached (`kmemlabctl info` shows file max bytes and count; \
             an allocation lives as long as the kmemlabctl that made it, unless --persist)"
                .into(),
        ),
        (Command::Alloc { .. } | Command::Bench { .. } | Command::Sweep(_), Errno::EPERM) => Some(
            "needs CAP_SYS_ADMIN: --persist, GFP_ATOMIC/GFP_NOWAIT beyond the atomic quota, \
                 or a bench beyond bench max bytes (`kmemlabctl info`)"
                .into(),
        ),
        (_, Errno::EACCES) | (_, Errno::EPERM) => {
            Some("the device is for root and group kmemlab".into())
        }
        _ => None,
    }
}

/// The error as `--json` prints it: one object on one line.
pub fn error_json(error: &str, message: &str) -> String {
    let r = ErrorReport {
        error: error.to_owned(),
        message: message.to_owned(),
    };
    // Serializing two strings cannot fail; fall back to a fixed line all the same.
    to_json(&r).unwrap_or_else(|_| "{\"error\":\"EINVAL\",\"message\":\"\"}".to_owned())
}
