//! kmemlabctl: asks the kmemlab module for allocations, frees, lists, counters,
//! benchmarks and software button presses through `/dev/kmemlab`. See
//! `kmemlabctl::args` and `kmemlabctl::execute` for the command line and the output.

#![forbid(unsafe_code)]

use std::cell::OnceCell;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kmemlab::{format_size, KmemlabDevice, Result};
use kmemlabctl::args::{self, USAGE};
use kmemlabctl::bench::{threads, SweepSpec, PROGRESS_POINTS};
use kmemlabctl::command::Command;
use kmemlabctl::execute::{self, Output};
use kmemlabctl::{failure, watch};

/// Prints an error as JSON on stdout or as text on stderr.
fn report_error(json: bool, error: &str, message: &str, hint: Option<String>) {
    if json {
        println!("{}", failure::error_json(error, message));
    } else {
        eprintln!("kmemlabctl: {message}");
        if let Some(hint) = hint {
            eprintln!("hint: {hint}");
        }
    }
}

/// Runs a sweep, printing each point as it is measured. A progress bar is drawn on
/// stderr for sweeps of [`PROGRESS_POINTS`] points or more, when stderr is a terminal
/// that is not `TERM=dumb`, never in JSON mode or with `--no-progress`.
fn sweep(dev: &KmemlabDevice, spec: &SweepSpec, json: bool) -> Result<Output> {
    let terminal = std::io::stderr().is_terminal()
        && std::env::var("TERM").is_ok_and(|t| !t.is_empty() && t != "dumb");
    let wanted = spec.progress && !json && terminal;
    let bar: OnceCell<ProgressBar> = OnceCell::new();
    let mut stdout = std::io::stdout();
    execute::sweep(
        dev,
        spec,
        json,
        |i, n, p| {
            if wanted && n >= PROGRESS_POINTS {
                bar.get_or_init(|| {
                    let b =
                        ProgressBar::with_draw_target(Some(n as u64), ProgressDrawTarget::stderr());
                    if let Ok(style) =
                        ProgressStyle::with_template("{bar:40} {pos}/{len} points, {elapsed} {msg}")
                    {
                        b.set_style(style);
                    }
                    b
                });
            }
            if let Some(b) = bar.get() {
                b.set_position(i as u64);
                b.set_message(format!("{} {}", p.kind, format_size(p.size)));
            }
        },
        |line| {
            let mut print = || {
                let _ = stdout.write_all(line.as_bytes());
                let _ = stdout.flush();
            };
            match bar.get() {
                Some(b) => b.suspend(print),
                None => print(),
            }
        },
    )?;
    if let Some(b) = bar.get() {
        b.finish_and_clear();
    }
    Ok(Output {
        note: execute::sweep_note(spec),
        ..Output::default()
    })
}

fn main() -> ExitCode {
    kmemlab::init_tracing();
    let inv = match args::parse_args(std::env::args_os().skip(1)) {
        Ok(inv) => inv,
        Err(e) => {
            report_error(e.json, "EINVAL", &e.message, None);
            if !e.json {
                eprint!("\n{}", USAGE);
            }
            return ExitCode::from(2);
        }
    };
    if inv.command == Command::Help {
        print!("{}", USAGE);
        return ExitCode::SUCCESS;
    }
    let result = match &inv.command {
        Command::Report { log, svg, html } => {
            execute::report(log, svg.as_deref(), html.as_deref(), inv.json)
        }
        Command::Sweep(spec) => {
            KmemlabDevice::open(&inv.device).and_then(|dev| sweep(&dev, spec, inv.json))
        }
        Command::Threads(spec) => threads::run(spec, || KmemlabDevice::open(&inv.device))
            .and_then(|r| threads::render(&r, inv.json))
            .map(|stdout| Output { stdout, note: None }),
        Command::Watch(spec) => {
            watch::run(spec, inv.json, &mut std::io::stdout().lock()).map(|_| Output::default())
        }
        command => KmemlabDevice::open(&inv.device)
            .and_then(|dev| execute::execute(command, &dev, inv.json)),
    };
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
                failure::hint(&inv.command, &e),
            );
            ExitCode::FAILURE
        }
    }
}
