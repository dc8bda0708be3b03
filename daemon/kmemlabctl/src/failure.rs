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

#[cfg(test)]
mod tests {
    use kmemlab::error::Result;
    use kmemlab::MockDevice;
    use nix::errno::Errno;
    use serde_json::{json, Value};

    use super::*;
    use crate::args::{parse_args, Invocation, Stop};
    use crate::execute::{execute, Output};

    fn parse(args: &[&str]) -> std::result::Result<Invocation, Stop> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    fn run(dev: &MockDevice, args: &[&str]) -> Result<Output> {
        let inv = parse(args).unwrap();
        execute(&inv.command, dev, inv.json)
    }

    #[test]
    fn errors_carry_the_errno_and_a_hint() {
        let dev = MockDevice::new();
        let err = run(&dev, &["free", "7", "--json"]).unwrap_err();
        assert_eq!(err.errno_name(), "ENOENT");
        let line = error_json(&err.errno_name(), &err.report());
        assert_eq!(
            serde_json::from_str::<Value>(&line).unwrap(),
            json!({"error": "ENOENT", "message": "ioctl KMEMLAB_FREE failed: ENOENT: No such file or directory"})
        );
        let cmd = Command::Free { handles: vec![7] };
        assert!(hint(&cmd, &err)
            .unwrap()
            .starts_with("handle 7 is not live"));

        let err = run(
            &dev,
            &["alloc", "--kind", "kmalloc", "--size", "8M", "--json"],
        )
        .unwrap_err();
        assert_eq!(err.errno_name(), "E2BIG");
        assert_eq!(hint(&Command::Info, &err), None);
        let alloc = parse(&["alloc", "--kind", "kmalloc", "--size", "8M"])
            .unwrap()
            .command;
        assert!(hint(&alloc, &err).unwrap().contains("max size"));
        let err = run(
            &dev,
            &[
                "alloc",
                "--kind",
                "vmalloc",
                "--size",
                "1",
                "--gfp",
                "GFP_DMA32",
            ],
        )
        .unwrap_err();
        assert_eq!(err.errno_name(), "EINVAL");
        assert!(hint(&alloc, &err)
            .unwrap()
            .contains("GFP_DMA32 only for pages"));

        // An unprivileged opener: quota and CAP_SYS_ADMIN refusals.
        let user = MockDevice::new().hiding_addresses();
        let big = ["alloc", "--kind", "vmalloc", "--size", "17M", "--json"];
        let err = run(&user, &big).unwrap_err();
        assert_eq!(err.errno_name(), "EDQUOT");
        assert!(hint(&alloc, &err).unwrap().contains("quota"));
        let persist = ["alloc", "--kind", "kmalloc", "--size", "1", "--persist"];
        let err = run(&user, &persist).unwrap_err();
        assert_eq!(err.errno_name(), "EPERM");
        assert!(hint(&alloc, &err).unwrap().contains("CAP_SYS_ADMIN"));
        assert!(hint(&Command::Stats, &err)
            .unwrap()
            .contains("group kmemlab"));
        // The same, privileged: fine.
        run(&dev, &big).unwrap();
        run(&dev, &persist).unwrap();

        let old = MockDevice::failing(Errno::ENOTTY);
        let err = run(&old, &["stats"]).unwrap_err();
        assert!(hint(&Command::Stats, &err)
            .unwrap()
            .contains("does not know"));

        // A sweep whose --live allocations meet this opener's quota.
        let dev = MockDevice::new().with_privileges(0);
        let err = run(&dev, &["bench", "--kinds", "kmalloc", "--live", "5000"]).unwrap_err();
        let Command::Sweep(spec) = parse(&["bench", "--live", "5000"]).unwrap().command else {
            panic!("not a sweep")
        };
        assert!(hint(&Command::Sweep(spec), &err)
            .unwrap()
            .contains("file max count"));
    }
}
