//! `kmemlabctl`'s command line: the options before or after the command, read into an
//! [`Invocation`]; [`crate::command`] checks them against the command.

use std::ffi::OsString;
use std::path::PathBuf;

use kmemlab::DEFAULT_DEVICE;

use crate::command::{build, Command, Seen};

/// `kmemlabctl --help`.
pub const USAGE: &str = "\
usage: kmemlabctl [--device PATH] [--json] COMMAND [OPTIONS]

commands:
  info                               ABI version, page size, heap size, kinds, flags, limits
  alloc --kind KIND --size SIZE [--gfp FLAG,FLAG] [--persist]
                                     allocate and report where the memory is
  free HANDLE                        free an allocation
  list                               the allocations this opener can see
  stats                              counters per kind, and the event count
  bench --kind KIND --size SIZE [--gfp FLAG,FLAG] [--iters N]
                                     N alloc+free pairs timed in the kernel (default 1000)
  bench [--kinds KIND,KIND] [--sizes SIZE,SIZE | --min SIZE --max SIZE]
        [--gfp FLAG,FLAG] [--iters N] [--rounds R] [--live L] [--chart FILE.svg]
        [--no-progress]
                                     sweep: per kind and size, the in-kernel floor (BENCH),
                                     N single ALLOC+FREE ioctl pairs and N pairs through
                                     ALLOC_BATCH+FREE_BATCH, ns per pair and the ratios to
                                     the floor (default every kind, 8 to 4M in powers of 4,
                                     N 2000, at most 50 from 1M on), and N bare NOP and
                                     INFO round trips (NOP: ns per call; SINGLE_B: single
                                     path / (floor + 2 NOP)); with R rounds they all take
                                     turns on N/R pairs at a time (default 1); --live L
                                     holds L kmalloc 64 B allocations during the whole
                                     sweep (default 0); --chart draws ns per pair against
                                     size, a panel per kind, as SVG; a progress bar on
                                     stderr for long sweeps when it is a terminal
  report LOG.jsonl [--svg FILE] [--html FILE]
                                     summarize a kmemlabd log per kind (latency and
                                     interrupt latency percentiles); charts as SVG or HTML
  bench --threads N [--duration S] [--kind KIND] [--size SIZE] [--gfp FLAG,FLAG]
                                     N threads, each with its own open file (pinned to a
                                     CPU each when there are several), run ALLOC+FREE pairs
                                     for S seconds (default 5; kmalloc 64 B): pairs, pairs/s
                                     and latency per thread and in total
  trigger [--count N]                raise N button events from the kernel (default 1)
  watch [--num-events N] [--idle-timeout MS]
                                     follow the UIO device's events live: a line per read
                                     of the count (its source and kernel timestamp, events
                                     coalesced into it as missed), then a summary; stops
                                     after N events, MS ms without one, or SIGINT/SIGTERM
                                     (status 0); never takes an event from kmemlabd

  KIND   kmalloc, vmalloc, dma-coherent, kvmalloc, pages
  SIZE   bytes: 1, 4K, 2M, 1G (K, M, G are powers of 1024)
  FLAG   GFP_KERNEL (default), GFP_ATOMIC, GFP_NOWAIT, __GFP_ZERO, __GFP_NORETRY,
         __GFP_NOWARN, GFP_DMA, GFP_DMA32 (case-insensitive; `zero` = __GFP_ZERO)

An allocation belongs to the open file: without --persist it is freed when
kmemlabctl exits. --persist makes it the device's: visible to list and free from
any opener, freed by `kmemlabctl free` or at module unload.

Without CAP_SYS_ADMIN an opener has a quota (EDQUOT beyond it), may not --persist,
and physical and DMA addresses are hidden; kernel virtual addresses follow the
kptr_restrict rule. `kmemlabctl info` shows this opener's privileges and limits.

options:
  --device PATH   the kmemlab misc device (default /dev/kmemlab)
  --json          one JSON object per result and line (errors too)
  -h, --help      print this help

exit status: 0 on success, 1 when the module refuses, 2 on a usage error
";

/// A parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    /// What to do.
    pub command: Command,
    /// `--device`.
    pub device: PathBuf,
    /// `--json`.
    pub json: bool,
}

/// A command line that could not be parsed (exit status 2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageError {
    /// Whether `--json` was seen, so the error is printed as JSON.
    pub json: bool,
    /// What is wrong.
    pub message: String,
}

/// Parses `kmemlabctl`'s arguments (without the program name). Options may come before
/// or after the command.
pub fn parse_args<I>(args: I) -> std::result::Result<Invocation, UsageError>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    use lexopt::prelude::*;

    let mut json = false;
    let mut help = false;
    let mut device = PathBuf::from(DEFAULT_DEVICE);
    let mut positional: Vec<String> = Vec::new();
    let mut seen = Seen::default();
    let mut parser = lexopt::Parser::from_args(args);
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
            Long("device") => {
                if let Some(v) = opt_value(&mut parser, "device", &mut fail) {
                    device = v.into();
                }
            }
            Long("kind") => seen.kind = opt_value(&mut parser, "kind", &mut fail),
            Long("size") => seen.size = opt_value(&mut parser, "size", &mut fail),
            Long("gfp") => seen.gfp = opt_value(&mut parser, "gfp", &mut fail),
            Long("persist") => seen.persist = true,
            Long("iters") => seen.iters = opt_value(&mut parser, "iters", &mut fail),
            Long("rounds") => seen.rounds = opt_value(&mut parser, "rounds", &mut fail),
            Long("count") => seen.count = opt_value(&mut parser, "count", &mut fail),
            Long("kinds") => seen.kinds = opt_value(&mut parser, "kinds", &mut fail),
            Long("sizes") => seen.sizes = opt_value(&mut parser, "sizes", &mut fail),
            Long("min") => seen.min = opt_value(&mut parser, "min", &mut fail),
            Long("max") => seen.max = opt_value(&mut parser, "max", &mut fail),
            Long("svg") => seen.svg = opt_value(&mut parser, "svg", &mut fail),
            Long("no-progress") => seen.no_progress = true,
            Long("live") => seen.live = opt_value(&mut parser, "live", &mut fail),
            Long("chart") => seen.chart = opt_value(&mut parser, "chart", &mut fail),
            Long("html") => seen.html = opt_value(&mut parser, "html", &mut fail),
            Long("threads") => seen.threads = opt_value(&mut parser, "threads", &mut fail),
            Long("duration") => seen.duration = opt_value(&mut parser, "duration", &mut fail),
            Long("num-events") => seen.num_events = opt_value(&mut parser, "num-events", &mut fail),
            Long("idle-timeout") => {
                seen.idle_timeout = opt_value(&mut parser, "idle-timeout", &mut fail)
            }
            Short('h') | Long("help") => help = true,
            Value(v) => match v.into_string() {
                Ok(s) => positional.push(s),
                Err(v) => {
                    fail.get_or_insert(format!("invalid argument {v:?}"));
                }
            },
            arg => {
                fail.get_or_insert(arg.unexpected().to_string());
            }
        }
    }
    let usage = |message: String| UsageError { json, message };
    if let Some(msg) = fail {
        return Err(usage(msg));
    }
    if help || positional.first().is_some_and(|c| c == "help") {
        return Ok(Invocation {
            command: Command::Help,
            device,
            json,
        });
    }
    let command = build(&positional, &seen).map_err(usage)?;
    Ok(Invocation {
        command,
        device,
        json,
    })
}

/// The value of option `--name`, or `None` with the first failure kept in `fail`.
fn opt_value(parser: &mut lexopt::Parser, name: &str, fail: &mut Option<String>) -> Option<String> {
    use lexopt::ValueExt;

    match parser.value().map(|v| v.string()) {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) | Err(e) => {
            fail.get_or_insert(format!("--{name}: {e}"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use kmemlab::spec::{Flags, Kind};

    use super::*;

    fn parse(args: &[&str]) -> std::result::Result<Invocation, UsageError> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    fn command(args: &[&str]) -> Command {
        parse(args).unwrap().command
    }

    fn usage_error(args: &[&str]) -> String {
        parse(args).unwrap_err().message
    }

    #[test]
    fn parses_the_surface() {
        assert_eq!(command(&["info"]), Command::Info);
        assert_eq!(command(&["list", "--json"]), Command::List);
        assert_eq!(command(&["--json", "stats"]), Command::Stats);
        assert_eq!(
            command(&["alloc", "--kind", "kmalloc", "--size", "1"]),
            Command::Alloc {
                kind: Kind::Kmalloc,
                size: 1,
                flags: Flags::GFP_KERNEL
            }
        );
        assert_eq!(
            command(&[
                "alloc",
                "--kind=dma-coherent",
                "--size",
                "4K",
                "--gfp",
                "GFP_ATOMIC,__GFP_ZERO",
                "--persist",
                "--json"
            ]),
            Command::Alloc {
                kind: Kind::DmaCoherent,
                size: 4096,
                flags: Flags::parse_gfp("GFP_ATOMIC|__GFP_ZERO")
                    .unwrap()
                    .with(Flags::PERSIST)
            }
        );
        assert_eq!(command(&["free", "42"]), Command::Free { handle: 42 });
        assert_eq!(
            command(&["bench", "--kind", "vmalloc", "--size", "2M"]),
            Command::Bench {
                kind: Kind::Vmalloc,
                size: 2 << 20,
                flags: Flags::GFP_KERNEL,
                iters: 1000
            }
        );
        assert_eq!(
            command(&["bench", "--kind", "pages", "--size", "4K", "--iters", "10"]),
            Command::Bench {
                kind: Kind::Pages,
                size: 4096,
                flags: Flags::GFP_KERNEL,
                iters: 10
            }
        );
        assert_eq!(command(&["trigger"]), Command::Trigger { count: 1 });
        assert_eq!(
            command(&["trigger", "--count", "100"]),
            Command::Trigger { count: 100 }
        );
        assert_eq!(command(&["--help"]), Command::Help);
        assert_eq!(command(&["alloc", "-h"]), Command::Help);

        let inv = parse(&["--device", "/tmp/x", "info", "--json"]).unwrap();
        assert_eq!(inv.device, PathBuf::from("/tmp/x"));
        assert!(inv.json);
        assert_eq!(
            parse(&["info"]).unwrap().device,
            PathBuf::from("/dev/kmemlab")
        );
    }

    #[test]
    fn usage_errors_are_clear() {
        for (args, want) in [
            (&[][..], "missing command"),
            (&["frobnicate"][..], "unknown command \"frobnicate\""),
            (&["alloc", "--size", "1"][..], "alloc needs --kind"),
            (&["alloc", "--kind", "kmalloc"][..], "alloc needs --size"),
            (
                &["alloc", "--kind", "slab", "--size", "1"][..],
                "invalid kind \"slab\"",
            ),
            (
                &["alloc", "--kind", "kmalloc", "--size", "0"][..],
                "invalid size \"0\": must be at least 1 byte",
            ),
            (
                &["alloc", "--kind", "kmalloc", "--size", "lots"][..],
                "invalid size \"lots\"",
            ),
            (
                &[
                    "alloc",
                    "--kind",
                    "kmalloc",
                    "--size",
                    "1",
                    "--gfp",
                    "GFP_BOGUS",
                ][..],
                "invalid gfp flag \"GFP_BOGUS\"",
            ),
            (&["free"][..], "free needs a HANDLE"),
            (&["free", "x"][..], "invalid handle \"x\""),
            (&["free", "1", "2"][..], "unexpected argument \"2\""),
            (&["info", "extra"][..], "unexpected argument \"extra\""),
            (
                &["free", "1", "--kind", "kmalloc"][..],
                "free takes no --kind",
            ),
            (&["list", "--persist"][..], "list takes no --persist"),
            (&["trigger", "--iters", "3"][..], "trigger takes no --iters"),
            (
                &["trigger", "--count", "0"][..],
                "invalid count \"0\": must be at least 1",
            ),
            (
                &["bench", "--kind", "kmalloc", "--size", "8", "--iters", "-1"][..],
                "invalid iters",
            ),
            (&["info", "--bogus"][..], "invalid option '--bogus'"),
            (
                &["alloc", "--kind"][..],
                "missing argument for option '--kind'",
            ),
        ] {
            let msg = usage_error(args);
            assert!(msg.contains(want), "{args:?}: {msg}");
        }
        assert!(parse(&["--json", "bogus"]).unwrap_err().json);
        assert!(!parse(&["bogus"]).unwrap_err().json);
    }

    #[test]
    fn live_and_chart_are_parsed_for_a_sweep_only() {
        let Command::Sweep(spec) = command(&["bench", "--live", "300", "--chart", "s.svg"]) else {
            panic!("not a sweep")
        };
        assert_eq!(spec.live, 300);
        assert_eq!(spec.chart, Some(PathBuf::from("s.svg")));
        let Command::Sweep(spec) = command(&["bench", "--live", "0"]) else {
            panic!("not a sweep")
        };
        assert_eq!((spec.live, spec.chart), (0, None));
        for (args, want) in [
            (&["bench", "--live", "x"][..], "invalid live \"x\""),
            (&["bench", "--live", "-1"][..], "invalid live \"-1\""),
            (&["bench", "--live"][..], "--live"),
            (&["bench", "--chart"][..], "--chart"),
            (
                &["bench", "--kind", "kmalloc", "--size", "8", "--live", "2"][..],
                "are for a sweep",
            ),
            (
                &[
                    "bench", "--kind", "kmalloc", "--size", "8", "--chart", "a.svg",
                ][..],
                "are for a sweep",
            ),
            (&["info", "--live", "3"][..], "info takes no --live"),
            (
                &["report", "x", "--chart", "a"][..],
                "report takes no --chart",
            ),
        ] {
            let msg = usage_error(args);
            assert!(msg.contains(want), "{args:?}: {msg}");
        }
    }
}
