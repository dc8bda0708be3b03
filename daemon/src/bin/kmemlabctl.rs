//! kmemlabctl: asks the kmemlab module for allocations, frees, lists, counters,
//! benchmarks and software button presses through `/dev/kmemlab`. See
//! `kmemlab::ctl` for the command line and the output.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use kmemlab::ctl::{self, Command};
use kmemlab::KmemlabDevice;

/// Prints an error as JSON on stdout or as text on stderr.
fn report_error(json: bool, error: &str, message: &str, hint: Option<String>) {
    if json {
        println!("{}", ctl::error_json(error, message));
    } else {
        eprintln!("kmemlabctl: {message}");
        if let Some(hint) = hint {
            eprintln!("hint: {hint}");
        }
    }
}

fn main() -> ExitCode {
    kmemlab::init_tracing();
    let inv = match ctl::parse_args(std::env::args_os().skip(1)) {
        Ok(inv) => inv,
        Err(e) => {
            report_error(e.json, "EINVAL", &e.message, None);
            if !e.json {
                eprint!("\n{}", ctl::USAGE);
            }
            return ExitCode::from(2);
        }
    };
    if inv.command == Command::Help {
        print!("{}", ctl::USAGE);
        return ExitCode::SUCCESS;
    }
    let result =
        KmemlabDevice::open(&inv.device).and_then(|dev| ctl::execute(&inv.command, &dev, inv.json));
    match result {
        Ok(out) => {
            print!("{}", out.stdout);
            if let Some(note) = out.note {
                eprintln!("{note}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            report_error(
                inv.json,
                &e.errno_name(),
                &e.report(),
                ctl::hint(&inv.command, &e),
            );
            ExitCode::FAILURE
        }
    }
}
