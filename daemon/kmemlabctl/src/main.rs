//! kmemlabctl: asks the kmemlab module for allocations, frees, lists, counters,
//! benchmarks and software button presses through `/dev/kmemlab`. See
//! `kmemlabctl::args` and `kmemlabctl::execute` for the command line and the output,
//! `kmemlabctl::exit` for the exit statuses.

#![forbid(unsafe_code)]

use std::cell::OnceCell;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kmemlab::{format_size, KmemlabDevice, Result};
use kmemlabctl::args::{self, Stop};
use kmemlabctl::bench::{threads, SweepSpec, PROGRESS_POINTS};
use kmemlabctl::command::Command;
use kmemlabctl::execute::{self, Output};
use kmemlabctl::ops::Failure;
use kmemlabctl::{exit, failure, watch};
use nix::sys::signal::{SigSet, Signal};

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

/// Blocks SIGINT and SIGTERM in this (only) thread, so that they stay pending until
/// [`wait_for_signal`] takes one: `alloc --hold` then frees and reports what it holds.
fn block_stop_signals() -> Result<SigSet> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.thread_block()
        .map_err(|source| kmemlab::Error::Signals { source })?;
    Ok(set)
}

/// Waits for a signal of `set` (blocked) with sigwait(2): no handler, no busy loop.
fn wait_for_signal(set: &SigSet) -> Result<()> {
    let signal = set
        .wait()
        .map_err(|source| kmemlab::Error::Signals { source })?;
    tracing::debug!("{signal}: freeing what is held");
    Ok(())
}

/// Prints one failed operation: a JSON line on stdout, or its message on stderr.
fn print_failure(json: bool, f: &Failure) {
    if json {
        println!("{}", f.json());
    } else {
        eprintln!("kmemlabctl: {}", f.message());
    }
}

fn main() -> ExitCode {
    kmemlab::init_tracing();
    let inv = match args::parse_args(std::env::args_os().skip(1)) {
        Ok(inv) => inv,
        Err(Stop::Display(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(Stop::Usage(e)) => {
            if e.json {
                println!("{}", failure::error_json("EINVAL", &e.message));
            } else {
                eprint!("{}", e.text);
            }
            return ExitCode::from(exit::USAGE);
        }
    };
    // Blocked before the allocations: a Ctrl-C while they are made waits for the frees.
    let held_signals = match &inv.command {
        Command::Alloc { hold: true, .. } => match block_stop_signals() {
            Ok(set) => Some(set),
            Err(e) => {
                report_error(inv.json, &e.errno_name(), &e.report(), None);
                return ExitCode::from(exit::FAILURE);
            }
        },
        _ => None,
    };
    let result = match &inv.command {
        Command::Report { log, svg, html } => {
            execute::report(log, svg.as_deref(), html.as_deref(), inv.json)
        }
        Command::Threads(spec) => threads::run(spec, || KmemlabDevice::open(&inv.device))
            .and_then(|r| threads::render(&r, inv.json))
            .map(|stdout| Output {
                stdout,
                ..Output::default()
            }),
        Command::Watch(spec) => {
            watch::run(spec, inv.json, &mut std::io::stdout().lock()).map(|_| Output::default())
        }
        command => {
            let dev = match KmemlabDevice::open(&inv.device) {
                Ok(dev) => dev,
                Err(e) => {
                    report_error(
                        inv.json,
                        &e.errno_name(),
                        &e.report(),
                        failure::hint(command, &e),
                    );
                    return ExitCode::from(exit::of_open(&e));
                }
            };
            match command {
                Command::Sweep(spec) => sweep(&dev, spec, inv.json),
                command => {
                    let mut stdout = std::io::stdout();
                    let mut emit = |s: &str| {
                        let _ = stdout.write_all(s.as_bytes());
                        let _ = stdout.flush();
                    };
                    let mut wait = || match &held_signals {
                        Some(set) => {
                            if !inv.json {
                                eprintln!("holding; Ctrl-C (SIGINT) or SIGTERM frees and exits");
                            }
                            wait_for_signal(set)
                        }
                        None => Ok(()),
                    };
                    execute::execute_waiting(command, &dev, inv.json, &mut emit, &mut wait)
                }
            }
        }
    };
    match result {
        Ok(out) => {
            print!("{}", out.stdout);
            for f in &out.failed {
                print_failure(inv.json, f);
            }
            if let Some(f) = out.failed.first() {
                if let Some(hint) = failure::hint(&inv.command, &f.error).filter(|_| !inv.json) {
                    eprintln!("hint: {hint}");
                }
            }
            if let Some(note) = out.note.filter(|_| !inv.json) {
                eprintln!("{note}");
            }
            ExitCode::from(exit::of_tally(out.done, out.failed.len()))
        }
        Err(e) => {
            report_error(
                inv.json,
                &e.errno_name(),
                &e.report(),
                failure::hint(&inv.command, &e),
            );
            ExitCode::from(match inv.command {
                Command::Report { .. } => exit::FAILURE,
                _ => exit::of_error(&e),
            })
        }
    }
}
