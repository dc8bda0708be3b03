//! kmemlabd: waits for the kmemlab button interrupt on its UIO device and writes one JSON
//! line per interrupt. See `kmemlab::event` for the line formats.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use kmemlab::DaemonConfig;

const USAGE: &str = "\
usage: kmemlabd [--log FILE] [--uio-name NAME] [--device PATH]

Waits for the kmemlab button interrupt and writes one JSON line per event
(start, irq, stop, error) to stdout, or appends them to FILE with --log.
Diagnostics go to stderr (level from KMEMLAB_LOG, default info).
SIGTERM or SIGINT stop it with a final \"stop\" line.

options:
  --log FILE        append JSON lines to FILE instead of stdout
  --uio-name NAME   the UIO device's name in /sys/class/uio (default kmemlab)
  --device PATH     the kmemlab misc device (default /dev/kmemlab)
  -h, --help        print this help
";

/// `Ok(None)`: help was asked for.
fn parse_args() -> Result<Option<DaemonConfig>, lexopt::Error> {
    use lexopt::prelude::*;

    let mut config = DaemonConfig::default();
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("log") => config.log = Some(parser.value()?.into()),
            Long("uio-name") => config.uio_name = parser.value()?.string()?,
            Long("device") => config.device = parser.value()?.into(),
            Short('h') | Long("help") => return Ok(None),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Some(config))
}

fn main() -> ExitCode {
    kmemlab::init_tracing();
    let config = match parse_args() {
        Ok(Some(config)) => config,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("kmemlabd: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match kmemlab::serve(&config) {
        Ok(reason) => {
            tracing::info!("stopped by {reason:?}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kmemlabd: {}", e.report());
            ExitCode::FAILURE
        }
    }
}
