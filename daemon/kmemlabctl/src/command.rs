//! One `kmemlabctl` command ([`Command`]): the command word and the options it takes,
//! checked, with `bench`'s sweep.

use std::path::PathBuf;

use kmemlab::error::{Error, Result};
use kmemlab::spec::{parse_count, parse_handle, parse_size, Flags, Kind};

use crate::bench::threads::{ThreadSpec, DEFAULT_DURATION_S};
use crate::bench::{self, SweepSpec};
use crate::watch::WatchSpec;

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
    /// `bench --threads`: pairs on several CPUs at once.
    Threads(ThreadSpec),
    /// `watch`.
    Watch(WatchSpec),
    /// `--help`.
    Help,
}

/// The options seen, before they are checked against the command.
#[derive(Default)]
pub(crate) struct Seen {
    pub(crate) kind: Option<String>,
    pub(crate) size: Option<String>,
    pub(crate) gfp: Option<String>,
    pub(crate) persist: bool,
    pub(crate) iters: Option<String>,
    pub(crate) rounds: Option<String>,
    pub(crate) count: Option<String>,
    pub(crate) kinds: Option<String>,
    pub(crate) sizes: Option<String>,
    pub(crate) min: Option<String>,
    pub(crate) max: Option<String>,
    pub(crate) svg: Option<String>,
    pub(crate) html: Option<String>,
    pub(crate) no_progress: bool,
    pub(crate) live: Option<String>,
    pub(crate) chart: Option<String>,
    pub(crate) threads: Option<String>,
    pub(crate) duration: Option<String>,
    pub(crate) num_events: Option<String>,
    pub(crate) idle_timeout: Option<String>,
}

/// The command named by `positional[0]`, with the options it takes; any other option
/// or argument is an error.
pub(crate) fn build(positional: &[String], seen: &Seen) -> std::result::Result<Command, String> {
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
                "threads",
                "duration",
            ],
            0,
        ),
        "report" => (&["svg", "html"], 1),
        "trigger" => (&["count"], 0),
        "watch" => (&["num-events", "idle-timeout"], 0),
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
        ("threads", seen.threads.is_some()),
        ("duration", seen.duration.is_some()),
        ("num-events", seen.num_events.is_some()),
        ("idle-timeout", seen.idle_timeout.is_some()),
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
        "bench" if seen.threads.is_some() || seen.duration.is_some() => {
            Command::Threads(threads_spec(seen, gfp()?)?)
        }
        "watch" => Command::Watch(WatchSpec {
            num_events: count(&seen.num_events, "num-events")?,
            idle_timeout_ms: count(&seen.idle_timeout, "idle-timeout")?,
        }),
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

/// An optional count option (at least 1).
fn count(v: &Option<String>, what: &'static str) -> std::result::Result<Option<u64>, String> {
    v.as_deref()
        .map(|s| parse_count(what, s).map(u64::from))
        .transpose()
        .map_err(|e| e.report())
}

/// Most threads `bench --threads` runs: dma_map_benchmark's `DMA_MAP_MAX_THREADS`
/// (include/uapi/linux/map_benchmark.h).
const MAX_THREADS: u32 = 1024;

/// `bench --threads N [--duration S] [--kind K] [--size SIZE]`: no sweep option, no
/// `--iters` (the threads run for a time).
fn threads_spec(seen: &Seen, flags: Flags) -> std::result::Result<ThreadSpec, String> {
    let report = |e: Error| e.report();
    for (opt, given) in [
        ("kinds", seen.kinds.is_some()),
        ("sizes", seen.sizes.is_some()),
        ("min", seen.min.is_some()),
        ("max", seen.max.is_some()),
        ("iters", seen.iters.is_some()),
        ("rounds", seen.rounds.is_some()),
        ("live", seen.live.is_some()),
        ("chart", seen.chart.is_some()),
        ("no-progress", seen.no_progress),
    ] {
        if given {
            return Err(format!(
                "bench --threads takes --duration, --kind, --size and --gfp, not --{opt}"
            ));
        }
    }
    let threads = seen
        .threads
        .as_deref()
        .ok_or("bench --duration needs --threads")?;
    let threads = parse_count("threads", threads).map_err(report)?;
    if threads > MAX_THREADS {
        return Err(format!(
            "invalid threads \"{threads}\": must be at most {MAX_THREADS}"
        ));
    }
    Ok(ThreadSpec {
        threads,
        duration_s: seen
            .duration
            .as_deref()
            .map_or(Ok(DEFAULT_DURATION_S), |s| parse_count("duration", s))
            .map_err(report)?,
        kind: seen
            .kind
            .as_deref()
            .map_or(Ok(Kind::Kmalloc), Kind::parse)
            .map_err(report)?,
        size: seen
            .size
            .as_deref()
            .map_or(Ok(64), parse_size)
            .map_err(report)?,
        flags,
    })
}

/// `--live N`: allocations to hold, 0 or more.
fn parse_live(s: &str) -> Result<u32> {
    s.trim().parse::<u32>().map_err(|e| Error::Invalid {
        what: "live",
        input: s.to_owned(),
        reason: e.to_string(),
    })
}
