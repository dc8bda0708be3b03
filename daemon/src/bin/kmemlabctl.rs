//! kmemlabctl: asks the kmemlab module questions through `/dev/kmemlab`.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use kmemlab::{Device, Error, InfoReport, KmemlabDevice, DEFAULT_DEVICE};

const USAGE: &str = "\
usage: kmemlabctl [--device PATH] [--json] COMMAND

commands:
  info      the module's ABI version, page size, heap size, limits and irq

options:
  --device PATH   the kmemlab misc device (default /dev/kmemlab)
  --json          print one JSON object per result (errors too)
  -h, --help      print this help
";

#[derive(Debug)]
enum Command {
    Info,
    Help,
}

#[derive(Debug)]
struct Args {
    command: Command,
    device: String,
    json: bool,
}

fn parse_args() -> Result<Args, (bool, String)> {
    use lexopt::prelude::*;

    let mut json = false;
    let mut device = DEFAULT_DEVICE.to_string();
    let mut command = None;
    let mut parser = lexopt::Parser::from_env();
    let mut fail: Option<String> = None;
    loop {
        let arg = match parser.next() {
            Ok(Some(arg)) => arg,
            Ok(None) => break,
            Err(e) => {
                fail.get_or_insert(e.to_string());
                break;
            }
        };
        match arg {
            Long("json") => json = true,
            Long("device") => match parser.value().map(|v| v.string()) {
                Ok(Ok(v)) => device = v,
                Ok(Err(e)) | Err(e) => {
                    fail.get_or_insert(e.to_string());
                }
            },
            Short('h') | Long("help") => command = Some(Command::Help),
            Value(v) if command.is_none() => match v.to_str() {
                Some("info") => command = Some(Command::Info),
                Some("help") => command = Some(Command::Help),
                _ => {
                    fail.get_or_insert(format!("unknown command {v:?}"));
                }
            },
            arg => {
                fail.get_or_insert(arg.unexpected().to_string());
            }
        }
    }
    if let Some(msg) = fail {
        return Err((json, msg));
    }
    let command = command.ok_or((json, "missing command".to_string()))?;
    Ok(Args {
        command,
        device,
        json,
    })
}

/// Prints an error as JSON on stdout or as text on stderr.
fn report_error(json: bool, error: &str, message: &str) {
    if json {
        println!(
            "{}",
            serde_json::json!({ "error": error, "message": message })
        );
    } else {
        eprintln!("kmemlabctl: {message}");
    }
}

fn info(args: &Args) -> Result<String, Error> {
    let device = KmemlabDevice::open(&args.device)?;
    let report = InfoReport::from(&device.info()?);
    if args.json {
        Ok(report.to_json()? + "\n")
    } else {
        Ok(report.to_text())
    }
}

fn main() -> ExitCode {
    kmemlab::init_tracing();
    let args = match parse_args() {
        Ok(args) => args,
        Err((json, msg)) => {
            report_error(json, "EINVAL", &msg);
            if !json {
                eprint!("\n{USAGE}");
            }
            return ExitCode::from(2);
        }
    };
    let result = match args.command {
        Command::Help => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Command::Info => info(&args),
    };
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            report_error(args.json, &e.errno_name(), &e.report());
            ExitCode::FAILURE
        }
    }
}
