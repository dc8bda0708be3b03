//! kmemlabd: waits for the kmemlab button interrupt on its UIO device, runs the next
//! step of its plan on each press and writes one JSON line per press. See
//! `kmemlab::event` for the line formats and `kmemlab::plan` for plans.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use kmemlab::{DaemonConfig, Plan};

const USAGE: &str = "\
usage: kmemlabd [--plan PLAN] [--log FILE] [--uio-name NAME] [--device PATH]

Waits for the kmemlab button interrupt. Each press runs the next step of the
plan: a press allocates the step, the next press frees it, the one after
allocates the next step, and around again. One JSON line per press (alloc,
free or error), and start and stop lines, to stdout or appended to FILE.
Diagnostics go to stderr (level from KMEMLAB_LOG, default info).
SIGTERM or SIGINT free what the daemon holds and stop it with a \"stop\" line.

PLAN is KIND[:SIZE[:FLAG|FLAG]] steps separated by commas, e.g.
  vmalloc                                  one kind, with the seed's size
  kmalloc:64:GFP_KERNEL|__GFP_ZERO,pages:16K
The default replays the seed module:
  kmalloc:1:GFP_ATOMIC,vmalloc:1:GFP_KERNEL,dma_coherent:1024:GFP_ATOMIC

options:
  --plan PLAN       what each press does (default: the seed's cycle)
  --log FILE        append JSON lines to FILE instead of stdout
  --uio-name NAME   the UIO device's name in /sys/class/uio (default kmemlab)
  --device PATH     the kmemlab misc device (default /dev/kmemlab)
  -h, --help        print this help
";

/// `Ok(None)`: help was asked for.
fn parse_args() -> Result<Option<DaemonConfig>, String> {
    use lexopt::prelude::*;

    let mut config = DaemonConfig::default();
    let mut parser = lexopt::Parser::from_env();
    let e = |e: lexopt::Error| e.to_string();
    while let Some(arg) = parser.next().map_err(e)? {
        match arg {
            Long("log") => config.log = Some(parser.value().map_err(e)?.into()),
            Long("uio-name") => config.uio_name = parser.value().map_err(e)?.string().map_err(e)?,
            Long("device") => config.device = parser.value().map_err(e)?.into(),
            Long("plan") => {
                let plan = parser.value().map_err(e)?.string().map_err(e)?;
                config.plan = Plan::parse(&plan).map_err(|err| err.report())?;
            }
            Short('h') | Long("help") => return Ok(None),
            _ => return Err(arg.unexpected().to_string()),
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
