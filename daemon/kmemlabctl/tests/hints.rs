//! The hints kmemlabctl adds to an error (`kmemlabctl::failure`), for commands run on the
//! mock device. An integration test: it runs commands through `execute`, which the failure
//! module must not import (execute -> ops -> failure).

use kmemlab::error::Result;
use kmemlab::MockDevice;
use nix::errno::Errno;
use serde_json::{json, Value};

use kmemlabctl::args::{parse_args, Invocation, Stop};
use kmemlabctl::command::Command;
use kmemlabctl::execute::{execute, Output};
use kmemlabctl::failure::{error_json, hint};

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
