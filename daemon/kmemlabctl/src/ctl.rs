//! `kmemlabctl`: its command line and what each command prints, over any [`Device`] so
//! it runs against the mock in tests. The binary only opens the device and prints.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::bench::{self, SweepSpec};
use crate::logreport::{write_file, LogReport};
use crate::table::{self, ToText};
use kmemlab::device::Device;
use kmemlab::error::{Error, Result};
use kmemlab::report::{
    to_json, AllocReport, BenchReport, ErrorReport, FreeReport, InfoReport, StatsReport,
    TriggerReport,
};
use kmemlab::spec::{parse_count, parse_handle, parse_size, Flags, Kind};
use kmemlab::DEFAULT_DEVICE;

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
  trigger [--count N]                raise N button events from the kernel (default 1)

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

/// Default `--iters` of `bench`.
pub const DEFAULT_BENCH_ITERS: u32 = 1000;

/// One `kmemlabctl` command, with its arguments parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `info`.
    Info,
    /// `alloc`; `flags` includes [`Flags::PERSIST`] for `--persist`.
    Alloc {
        /// `--kind`.
        kind: Kind,
        /// `--size`.
        size: u64,
        /// `--gfp`, and `--persist`.
        flags: Flags,
    },
    /// `free HANDLE`.
    Free {
        /// The handle.
        handle: u64,
    },
    /// `list`.
    List,
    /// `stats`.
    Stats,
    /// `bench`.
    Bench {
        /// `--kind`.
        kind: Kind,
        /// `--size`.
        size: u64,
        /// `--gfp`.
        flags: Flags,
        /// `--iters`.
        iters: u32,
    },
    /// `bench` without both `--kind` and `--size`: a sweep.
    Sweep(SweepSpec),
    /// `report LOG`.
    Report {
        /// The kmemlabd log.
        log: PathBuf,
        /// `--svg`.
        svg: Option<PathBuf>,
        /// `--html`.
        html: Option<PathBuf>,
    },
    /// `trigger`.
    Trigger {
        /// `--count`.
        count: u32,
    },
    /// `--help`.
    Help,
}

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

/// The options seen, before they are checked against the command.
#[derive(Default)]
struct Seen {
    kind: Option<String>,
    size: Option<String>,
    gfp: Option<String>,
    persist: bool,
    iters: Option<String>,
    rounds: Option<String>,
    count: Option<String>,
    kinds: Option<String>,
    sizes: Option<String>,
    min: Option<String>,
    max: Option<String>,
    svg: Option<String>,
    html: Option<String>,
    no_progress: bool,
    live: Option<String>,
    chart: Option<String>,
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

/// The command named by `positional[0]`, with the options it takes; any other option
/// or argument is an error.
fn build(positional: &[String], seen: &Seen) -> std::result::Result<Command, String> {
    let Some(name) = positional.first() else {
        return Err("missing command".into());
    };
    let name = name.as_str();
    let (allowed, args): (&[&str], usize) = match name {
        "info" | "list" | "stats" => (&[], 0),
        "alloc" => (&["kind", "size", "gfp", "persist"], 0),
        "free" => (&[], 1),
        "bench" => (
            &[
                "kind",
                "size",
                "gfp",
                "iters",
                "rounds",
                "kinds",
                "sizes",
                "min",
                "max",
                "no-progress",
                "live",
                "chart",
            ],
            0,
        ),
        "report" => (&["svg", "html"], 1),
        "trigger" => (&["count"], 0),
        _ => return Err(format!("unknown command {name:?}")),
    };
    for (opt, given) in [
        ("kind", seen.kind.is_some()),
        ("size", seen.size.is_some()),
        ("gfp", seen.gfp.is_some()),
        ("persist", seen.persist),
        ("iters", seen.iters.is_some()),
        ("rounds", seen.rounds.is_some()),
        ("count", seen.count.is_some()),
        ("kinds", seen.kinds.is_some()),
        ("sizes", seen.sizes.is_some()),
        ("min", seen.min.is_some()),
        ("max", seen.max.is_some()),
        ("svg", seen.svg.is_some()),
        ("html", seen.html.is_some()),
        ("no-progress", seen.no_progress),
        ("live", seen.live.is_some()),
        ("chart", seen.chart.is_some()),
    ] {
        if given && !allowed.contains(&opt) {
            return Err(format!("{name} takes no --{opt}"));
        }
    }
    let extra = &positional[1..];
    if extra.len() > args {
        return Err(format!("unexpected argument {:?}", extra[args]));
    }
    if extra.len() < args {
        let what = if name == "report" { "LOG" } else { "HANDLE" };
        return Err(format!("{name} needs a {what}"));
    }
    let report = |e: Error| e.report();
    let required = |opt: &str, v: &Option<String>| -> std::result::Result<String, String> {
        v.clone().ok_or_else(|| format!("{name} needs --{opt}"))
    };
    let gfp = || -> std::result::Result<Flags, String> {
        seen.gfp
            .as_deref()
            .map_or(Ok(Flags::GFP_KERNEL), Flags::parse_gfp)
            .map_err(report)
    };
    Ok(match name {
        "info" => Command::Info,
        "list" => Command::List,
        "stats" => Command::Stats,
        "free" => Command::Free {
            handle: parse_handle(&extra[0]).map_err(report)?,
        },
        "alloc" => {
            let kind = Kind::parse(&required("kind", &seen.kind)?).map_err(report)?;
            let size = parse_size(&required("size", &seen.size)?).map_err(report)?;
            let mut flags = gfp()?;
            if seen.persist {
                flags = flags.with(Flags::PERSIST);
            }
            Command::Alloc { kind, size, flags }
        }
        "bench" if seen.kind.is_some() && seen.size.is_some() => {
            if seen.kinds.is_some() || seen.sizes.is_some() {
                return Err("bench takes --kind and --size, or --kinds and --sizes".into());
            }
            if seen.min.is_some()
                || seen.max.is_some()
                || seen.no_progress
                || seen.rounds.is_some()
                || seen.live.is_some()
                || seen.chart.is_some()
            {
                return Err(
                    "bench --min, --max, --rounds, --live, --chart and --no-progress are \
                            for a sweep, not with --size"
                        .into(),
                );
            }
            Command::Bench {
                kind: Kind::parse(&required("kind", &seen.kind)?).map_err(report)?,
                size: parse_size(&required("size", &seen.size)?).map_err(report)?,
                flags: gfp()?,
                iters: seen
                    .iters
                    .as_deref()
                    .map_or(Ok(DEFAULT_BENCH_ITERS), |s| parse_count("iters", s))
                    .map_err(report)?,
            }
        }
        "bench" => Command::Sweep(sweep_spec(seen, gfp()?)?),
        "report" => Command::Report {
            log: PathBuf::from(&extra[0]),
            svg: seen.svg.as_ref().map(PathBuf::from),
            html: seen.html.as_ref().map(PathBuf::from),
        },
        "trigger" => Command::Trigger {
            count: seen
                .count
                .as_deref()
                .map_or(Ok(1), |s| parse_count("count", s))
                .map_err(report)?,
        },
        _ => unreachable!("checked above"),
    })
}

/// The sweep `bench` asks for: `--kinds` (or `--kind`), `--sizes` (or `--size`) or
/// `--min`/`--max`, `--iters`.
fn sweep_spec(seen: &Seen, flags: Flags) -> std::result::Result<SweepSpec, String> {
    let report = |e: Error| e.report();
    let list = |one: &Option<String>, many: &Option<String>, name: &str| {
        if one.is_some() && many.is_some() {
            return Err(format!("bench takes --{name} or --{name}s, not both"));
        }
        Ok(one.clone().or_else(|| many.clone()))
    };
    let kinds = list(&seen.kind, &seen.kinds, "kind")?
        .map(|s| {
            s.split(',')
                .map(|k| Kind::parse(k.trim()))
                .collect::<Result<Vec<_>>>()
        })
        .transpose()
        .map_err(report)?;
    let sizes = list(&seen.size, &seen.sizes, "size")?
        .map(|s| s.split(',').map(parse_size).collect::<Result<Vec<_>>>())
        .transpose()
        .map_err(report)?;
    if sizes.is_some() && (seen.min.is_some() || seen.max.is_some()) {
        return Err("bench takes --sizes or --min/--max, not both".into());
    }
    let bound = |v: &Option<String>, default: u64| {
        v.as_deref().map_or(Ok(default), parse_size).map_err(report)
    };
    let spec = SweepSpec {
        kinds,
        sizes,
        min: bound(&seen.min, bench::SWEEP_MIN)?,
        max: bound(&seen.max, bench::SWEEP_MAX)?,
        flags,
        iters: seen
            .iters
            .as_deref()
            .map_or(Ok(bench::DEFAULT_SWEEP_ITERS), |s| parse_count("iters", s))
            .map_err(report)?,
        rounds: seen
            .rounds
            .as_deref()
            .map_or(Ok(1), |s| parse_count("rounds", s))
            .map_err(report)?,
        progress: !seen.no_progress,
        live: seen
            .live
            .as_deref()
            .map_or(Ok(0), parse_live)
            .map_err(report)?,
        chart: seen.chart.as_ref().map(PathBuf::from),
    };
    if spec.min > spec.max {
        return Err("bench --min is above --max".into());
    }
    Ok(spec)
}

/// `--live N`: allocations to hold, 0 or more.
fn parse_live(s: &str) -> Result<u32> {
    s.trim().parse::<u32>().map_err(|e| Error::Invalid {
        what: "live",
        input: s.to_owned(),
        reason: e.to_string(),
    })
}

/// Runs a sweep on `dev`, handing each point's output (a JSON line, or a table row after
/// the table's header) to `emit` as it is measured; `progress` is called before each
/// point with its index and the number of points.
///
/// With `spec.live`, that many allocations are held from before the first point to after
/// the last (and freed when a point's output fails too); with `spec.chart`, the chart is
/// written after the sweep.
pub fn sweep<D: Device + ?Sized>(
    dev: &D,
    spec: &SweepSpec,
    json: bool,
    mut progress: impl FnMut(usize, usize, &bench::PointSpec),
    mut emit: impl FnMut(&str),
) -> Result<Vec<bench::PointReport>> {
    let info = dev.info()?;
    let points = spec.points(&info);
    let held = bench::LiveSet::hold(dev, spec.live)?;
    if !json {
        if !held.is_empty() {
            emit(&format!(
                "# holding {} live kmalloc {} B allocations during the sweep\n",
                held.len(),
                bench::LIVE_SIZE
            ));
        }
        emit(&bench::table_header());
    }
    let mut reports = Vec::with_capacity(points.len());
    for (i, p) in points.iter().enumerate() {
        progress(i, points.len(), p);
        let r = bench::measure(dev, p, spec.flags);
        emit(&if json {
            json_line(&r)?
        } else {
            bench::table_row(&r)
        });
        reports.push(r);
    }
    held.release()?;
    if let Some(path) = &spec.chart {
        bench::write_chart(path, &reports)?;
    }
    Ok(reports)
}

/// The note a sweep leaves on stderr: the chart it wrote.
pub fn sweep_note(spec: &SweepSpec) -> Option<String> {
    spec.chart
        .as_ref()
        .map(|path| format!("wrote {}", path.display()))
}

/// `report LOG`: the summary (table or one JSON object), and the SVG and HTML files.
pub fn report(
    log: &std::path::Path,
    svg: Option<&std::path::Path>,
    html: Option<&std::path::Path>,
    json: bool,
) -> Result<Output> {
    let r = LogReport::read(log)?;
    let mut written = Vec::new();
    if let Some(path) = svg {
        write_file(path, &r.to_svg()?)?;
        written.push(format!("wrote {}", path.display()));
    }
    if let Some(path) = html {
        write_file(path, &r.to_html(&log.display().to_string())?)?;
        written.push(format!("wrote {}", path.display()));
    }
    Ok(Output {
        stdout: if json { json_line(&r)? } else { r.to_text() },
        note: (!written.is_empty()).then(|| written.join("\n")),
    })
}

/// What a command prints: `stdout`, and a `note` for stderr (text mode only).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// For stdout; every line ends in `\n`.
    pub stdout: String,
    /// For stderr.
    pub note: Option<String>,
}

impl Output {
    fn text(stdout: String) -> Self {
        Self { stdout, note: None }
    }
}

fn json_line<T: serde::Serialize>(v: &T) -> Result<String> {
    Ok(to_json(v)? + "\n")
}

/// Runs `command` on `dev` and renders its result as JSON lines or text.
pub fn execute<D: Device + ?Sized>(command: &Command, dev: &D, json: bool) -> Result<Output> {
    let out = match command {
        Command::Help => Output::text(USAGE.to_owned()),
        Command::Info => {
            let r = InfoReport::from(&dev.info()?);
            Output::text(if json { json_line(&r)? } else { r.to_text() })
        }
        Command::Alloc { kind, size, flags } => {
            let r = AllocReport::from(&dev.alloc(*kind, *size, *flags)?);
            if json {
                Output::text(json_line(&r)?)
            } else {
                Output {
                    stdout: table::allocs(std::slice::from_ref(&r)),
                    note: (!flags.contains(Flags::PERSIST)).then(|| {
                        format!(
                            "note: allocation {} belongs to this kmemlabctl and is freed \
                             when it exits; use --persist to keep it",
                            r.handle
                        )
                    }),
                }
            }
        }
        Command::Free { handle } => {
            let r = FreeReport::from(&dev.free(*handle)?);
            Output::text(if json { json_line(&r)? } else { r.to_text() })
        }
        Command::List => {
            let reports: Vec<AllocReport> = dev.list()?.iter().map(AllocReport::from).collect();
            Output::text(if json {
                reports
                    .iter()
                    .map(json_line)
                    .collect::<Result<Vec<_>>>()?
                    .concat()
            } else if reports.is_empty() {
                "no allocations\n".to_owned()
            } else {
                table::allocs(&reports)
            })
        }
        Command::Stats => {
            let r = StatsReport::from(&dev.stats()?);
            Output::text(if json { json_line(&r)? } else { r.to_text() })
        }
        Command::Bench {
            kind,
            size,
            flags,
            iters,
        } => {
            let r = BenchReport::from(&dev.bench(*kind, *size, *flags, *iters)?);
            Output::text(if json { json_line(&r)? } else { r.to_text() })
        }
        Command::Sweep(spec) => {
            let mut stdout = String::new();
            sweep(dev, spec, json, |_, _, _| {}, |s| stdout.push_str(s))?;
            Output {
                stdout,
                note: sweep_note(spec),
            }
        }
        Command::Report { log, svg, html } => report(log, svg.as_deref(), html.as_deref(), json)?,
        Command::Trigger { count } => {
            let r = TriggerReport::from(&dev.trigger(*count)?);
            Output::text(if json { json_line(&r)? } else { r.to_text() })
        }
    };
    Ok(out)
}

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
        (Command::Free { handle }, Errno::ENOENT) => Some(format!(
            "handle {handle} is not live or not visible to this opener (only --persist \
             allocations outlive the kmemlabctl that made them)"
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
    use nix::errno::Errno;
    use serde_json::{json, Value};

    use super::*;
    use kmemlab::device::MockDevice;

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

    fn run(dev: &MockDevice, args: &[&str]) -> Result<Output> {
        let inv = parse(args).unwrap();
        execute(&inv.command, dev, inv.json)
    }

    fn json_lines(out: &Output) -> Vec<Value> {
        assert!(out.stdout.is_empty() || out.stdout.ends_with('\n'));
        out.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn every_command_prints_json_objects_one_per_line() {
        let dev = MockDevice::new();
        let info = run(&dev, &["info", "--json"]).unwrap();
        assert_eq!(
            json_lines(&info)[0]["abi_version"],
            kmemlab::uapi::ABI_VERSION
        );

        let a = run(
            &dev,
            &[
                "alloc",
                "--kind",
                "vmalloc",
                "--size",
                "4M",
                "--persist",
                "--json",
            ],
        )
        .unwrap();
        assert_eq!(a.note, None, "no note in JSON mode");
        let v = &json_lines(&a)[0];
        assert_eq!(v["handle"], 1);
        assert_eq!(v["kind"], "vmalloc");
        assert_eq!(v["pages"], 1024);
        assert_eq!(v["persist"], true);
        run(
            &dev,
            &["alloc", "--kind", "kmalloc", "--size", "1", "--json"],
        )
        .unwrap();

        let list = json_lines(&run(&dev, &["list", "--json"]).unwrap());
        assert_eq!(list.len(), 2);
        assert_eq!(list[1]["usable_size"], 8);

        let f = json_lines(&run(&dev, &["free", "1", "--json"]).unwrap());
        assert_eq!(f, [json!({"handle": 1, "free_ns": 51})]);

        let s = json_lines(&run(&dev, &["stats", "--json"]).unwrap());
        assert_eq!(s.len(), 1);
        assert_eq!(s[0]["kinds"]["vmalloc"]["frees"], 1);
        assert_eq!(s[0]["kinds"]["kmalloc"]["live_count"], 1);

        let b = json_lines(
            &run(
                &dev,
                &["bench", "--kind", "kmalloc", "--size", "64", "--json"],
            )
            .unwrap(),
        );
        assert_eq!(b[0]["iters"], 1000);
        assert_eq!(b[0]["alloc"]["p99_ns"], 300);

        let t = json_lines(&run(&dev, &["trigger", "--count", "5", "--json"]).unwrap());
        assert_eq!(t, [json!({"count": 5, "events": 5})]);
    }

    #[test]
    fn text_output_and_the_ownership_note() {
        let dev = MockDevice::new();
        let a = run(&dev, &["alloc", "--kind", "kmalloc", "--size", "1"]).unwrap();
        assert!(a.stdout.starts_with("HANDLE  KIND"));
        assert_eq!(
            a.note.as_deref(),
            Some(
                "note: allocation 1 belongs to this kmemlabctl and is freed when it exits; \
                 use --persist to keep it"
            )
        );
        let p = run(
            &dev,
            &["alloc", "--kind", "kmalloc", "--size", "1", "--persist"],
        )
        .unwrap();
        assert_eq!(p.note, None);
        assert!(p.stdout.contains(" device "), "{}", p.stdout);
        let list = run(&dev, &["list"]).unwrap();
        assert_eq!(list.stdout.lines().count(), 3);
        assert!(run(&dev, &["info"])
            .unwrap()
            .stdout
            .contains("abi version:"));
        assert!(run(&dev, &["stats"]).unwrap().stdout.contains("events: 0"));
        assert_eq!(
            run(&MockDevice::new(), &["list"]).unwrap().stdout,
            "no allocations\n"
        );
        assert_eq!(
            run(&dev, &["trigger"]).unwrap().stdout,
            "raised 1 event; event count now 1\n"
        );
        assert!(run(&dev, &["--help"])
            .unwrap()
            .stdout
            .starts_with("usage: kmemlabctl"));
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
        let cmd = Command::Free { handle: 7 };
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
    }

    #[test]
    fn bench_is_a_sweep_without_kind_and_size() {
        assert!(matches!(
            command(&["bench", "--kind", "kmalloc", "--size", "64", "--iters", "5"]),
            Command::Bench { iters: 5, .. }
        ));
        let Command::Sweep(spec) = command(&["bench"]) else {
            panic!("not a sweep")
        };
        assert_eq!(spec, SweepSpec::default());
        let Command::Sweep(spec) = command(&[
            "bench",
            "--kinds",
            "kmalloc,vmalloc",
            "--sizes",
            "64,4K",
            "--iters",
            "300",
            "--rounds",
            "4",
            "--no-progress",
        ]) else {
            panic!("not a sweep")
        };
        assert_eq!(spec.kinds, Some(vec![Kind::Kmalloc, Kind::Vmalloc]));
        assert_eq!(spec.sizes, Some(vec![64, 4096]));
        assert_eq!((spec.iters, spec.rounds, spec.progress), (300, 4, false));
        let Command::Sweep(spec) = command(&["bench", "--kind", "pages", "--min", "1K"]) else {
            panic!("not a sweep")
        };
        assert_eq!((spec.kinds, spec.min), (Some(vec![Kind::Pages]), 1024));
        for (args, want) in [
            (
                &["bench", "--kind", "kmalloc", "--kinds", "vmalloc"][..],
                "not both",
            ),
            (&["bench", "--sizes", "8", "--max", "1M"][..], "not both"),
            (&["bench", "--min", "1M", "--max", "1K"][..], "above --max"),
            (&["bench", "--rounds", "0"][..], "invalid rounds"),
            (
                &["bench", "--kind", "kmalloc", "--size", "8", "--rounds", "2"][..],
                "are for a sweep",
            ),
            (&["bench", "--kinds", "kmalloc,slab"][..], "invalid kind"),
            (&["report"][..], "report needs a LOG"),
            (
                &["report", "x", "--iters", "3"][..],
                "report takes no --iters",
            ),
            (&["info", "--svg", "x"][..], "info takes no --svg"),
        ] {
            let msg = usage_error(args);
            assert!(msg.contains(want), "{args:?}: {msg}");
        }
        assert_eq!(
            command(&["report", "log.jsonl", "--svg", "a.svg"]),
            Command::Report {
                log: "log.jsonl".into(),
                svg: Some("a.svg".into()),
                html: None,
            }
        );
    }

    #[test]
    fn a_sweep_on_the_mock_prints_a_row_or_a_json_line_per_point() {
        let dev = MockDevice::new();
        let args = [
            "bench", "--kinds", "kmalloc", "--sizes", "64,2M,8M", "--iters", "300",
        ];
        let text = run(&dev, &args).unwrap().stdout;
        let rows: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(rows.len(), 4, "{text}");
        assert!(rows[0].starts_with("KIND"), "{text}");
        assert!(
            rows[1].starts_with("kmalloc") && rows[1].contains('x'),
            "{text}"
        );
        assert!(rows[2].contains(" 50 "), "2M is capped at 50 iters: {text}");
        assert!(rows[3].contains("above max size"), "{text}");

        let mut args = args.to_vec();
        args.push("--json");
        let lines = json_lines(&run(&dev, &args).unwrap());
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["floor"]["pair_mean_ns"], 190);
        assert!(lines[0]["batched_ratio"].as_f64().unwrap() > 0.0);
        assert!(lines[0]["single_ns_per_pair"].as_f64().unwrap() > 0.0);
        assert_eq!(lines[1]["iters"], 50);
        assert!(lines[2]["skipped"]
            .as_str()
            .unwrap()
            .starts_with("above max size"));
        assert!(dev.live().is_empty());
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

    #[test]
    fn live_allocations_are_held_while_every_point_is_measured() {
        let dev = MockDevice::new();
        let spec = SweepSpec {
            kinds: Some(vec![Kind::Kmalloc, Kind::Vmalloc]),
            sizes: Some(vec![64, 4096]),
            iters: 20,
            live: 300,
            ..SweepSpec::default()
        };
        let mut seen = Vec::new();
        let mut out = String::new();
        let reports = sweep(
            &dev,
            &spec,
            false,
            |_, _, _| seen.push(dev.live().len()),
            |s| out.push_str(s),
        )
        .unwrap();
        assert_eq!(seen, [300; 4], "held before and between the points");
        assert!(dev.live().is_empty(), "freed after the sweep");
        assert!(reports.iter().all(|r| r.live == 300 && r.error.is_none()));
        assert!(out.starts_with("# holding 300 live kmalloc 64 B"), "{out}");

        // A point that fails does not keep them: kmalloc refuses GFP_DMA32.
        let lines = json_lines(
            &run(
                &dev,
                &[
                    "bench",
                    "--kinds",
                    "kmalloc",
                    "--sizes",
                    "64",
                    "--iters",
                    "5",
                    "--gfp",
                    "GFP_DMA32",
                    "--live",
                    "10",
                    "--json",
                ],
            )
            .unwrap(),
        );
        assert_eq!(lines[0]["error"], "EINVAL");
        assert_eq!(lines[0]["live"], 10);
        assert!(dev.live().is_empty());

        // Without --live, the field is there all the same.
        let lines = json_lines(
            &run(
                &dev,
                &[
                    "bench", "--kinds", "kmalloc", "--sizes", "64", "--iters", "5", "--json",
                ],
            )
            .unwrap(),
        );
        assert_eq!(lines[0]["live"], 0);
        assert!(lines[0]["round_trip"]["nop_ns"].as_f64().is_some());

        // More than this opener may hold: a clear error, nothing measured, nothing kept.
        let dev = MockDevice::new().with_privileges(0);
        let err = run(&dev, &["bench", "--kinds", "kmalloc", "--live", "5000"]).unwrap_err();
        assert_eq!(err.errno_name(), "EDQUOT");
        assert!(
            err.report().contains("refused after 1024"),
            "{}",
            err.report()
        );
        let Command::Sweep(spec) = command(&["bench", "--live", "5000"]) else {
            panic!("not a sweep")
        };
        assert!(hint(&Command::Sweep(spec), &err)
            .unwrap()
            .contains("file max count"));
        assert!(dev.live().is_empty());
        assert!(!dev.calls().iter().any(|c| c.starts_with("bench")));
    }

    #[test]
    fn a_sweep_draws_its_chart_and_says_so() {
        let dev = MockDevice::new();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sweep.svg");
        let path_arg = path.to_str().unwrap();
        let out = run(
            &dev,
            &[
                "bench",
                "--kinds",
                "kmalloc,pages",
                "--sizes",
                "64,4K",
                "--iters",
                "5",
                "--chart",
                path_arg,
            ],
        )
        .unwrap();
        assert_eq!(out.note, Some(format!("wrote {path_arg}")));
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("<svg") && svg.contains("pages"), "{svg:.200}");
        let bad = dir.path().join("missing/sweep.svg");
        let err = run(
            &dev,
            &[
                "bench",
                "--kinds",
                "kmalloc",
                "--sizes",
                "64",
                "--iters",
                "5",
                "--chart",
                bad.to_str().unwrap(),
            ],
        )
        .unwrap_err();
        assert!(
            err.report().starts_with("failed to write"),
            "{}",
            err.report()
        );
        assert!(dev.live().is_empty());
    }
}
