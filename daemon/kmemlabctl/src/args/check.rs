//! The values of the command line checked (sizes, kinds, flags, counts) and the
//! [`Command`] they name: the messages are the library's, the same as `kmemlabd --plan`
//! gives for the same bad size or flag.

use kmemlab::error::{Error, Result};
use kmemlab::spec::{parse_count, parse_handle, parse_size, Flags, Kind};

use super::{BenchArgs, Sub};
use crate::bench::threads::{ThreadSpec, DEFAULT_DURATION_S};
use crate::bench::{self, SweepSpec};
use crate::command::{Command, DEFAULT_BENCH_ITERS};
use crate::watch::WatchSpec;

/// The command `sub` names, with its values checked; the message of the first one that
/// is not valid.
pub(crate) fn build(sub: &Sub) -> std::result::Result<Command, String> {
    let report = |e: Error| e.report();
    let gfp = |s: &Option<String>| -> std::result::Result<Flags, String> {
        s.as_deref()
            .map_or(Ok(Flags::GFP_KERNEL), Flags::parse_gfp)
            .map_err(report)
    };
    let count = |what: &'static str, s: &Option<String>, default: u32| {
        s.as_deref()
            .map_or(Ok(default), |s| parse_count(what, s))
            .map_err(report)
    };
    Ok(match sub {
        Sub::Info => Command::Info,
        Sub::Stats => Command::Stats,
        Sub::List(a) => Command::List {
            kind: a
                .kind
                .as_deref()
                .map(Kind::parse)
                .transpose()
                .map_err(report)?,
            persist: a.persist,
        },
        Sub::Free(a) if a.all => Command::FreeAll,
        Sub::Free(a) => Command::Free {
            handles: a
                .handles
                .iter()
                .map(|h| parse_handle(h))
                .collect::<Result<Vec<_>>>()
                .map_err(report)?,
        },
        Sub::Alloc(a) => {
            let mut flags = gfp(&a.gfp)?;
            if a.persist {
                flags = flags.with(Flags::PERSIST);
            }
            Command::Alloc {
                kind: Kind::parse(&a.kind).map_err(report)?,
                size: parse_size(&a.size).map_err(report)?,
                flags,
                count: count("count", &a.count, 1)?,
                hold: a.hold,
            }
        }
        Sub::Bench(b) if b.threads.is_some() || b.duration.is_some() => {
            Command::Threads(threads_spec(b, gfp(&b.gfp)?)?)
        }
        Sub::Bench(b) if b.kind.is_some() && b.size.is_some() => {
            if b.kinds.is_some() || b.sizes.is_some() {
                return Err("bench takes --kind and --size, or --kinds and --sizes".into());
            }
            if b.min.is_some()
                || b.max.is_some()
                || b.no_progress
                || b.rounds.is_some()
                || b.live.is_some()
                || b.chart.is_some()
            {
                return Err(
                    "bench --min, --max, --rounds, --live, --chart and --no-progress are \
                     for a sweep, not with --size"
                        .into(),
                );
            }
            Command::Bench {
                kind: Kind::parse(b.kind.as_deref().unwrap_or_default()).map_err(report)?,
                size: parse_size(b.size.as_deref().unwrap_or_default()).map_err(report)?,
                flags: gfp(&b.gfp)?,
                iters: count("iters", &b.iters, DEFAULT_BENCH_ITERS)?,
            }
        }
        Sub::Bench(b) => Command::Sweep(sweep_spec(b, gfp(&b.gfp)?)?),
        Sub::Report(r) => Command::Report {
            log: r.log.clone(),
            svg: r.svg.clone(),
            html: r.html.clone(),
        },
        Sub::Watch(w) => {
            let count = |what: &'static str, s: &Option<String>| {
                s.as_deref()
                    .map(|s| parse_count(what, s).map(u64::from))
                    .transpose()
                    .map_err(report)
            };
            Command::Watch(WatchSpec {
                num_events: count("num-events", &w.num_events)?,
                idle_timeout_ms: count("idle-timeout", &w.idle_timeout)?,
            })
        }
        Sub::Trigger(t) => Command::Trigger {
            count: count("count", &t.count, 1)?,
            interval_ms: t
                .interval
                .as_deref()
                .map(parse_interval)
                .transpose()
                .map_err(report)?,
        },
    })
}

/// Most threads `bench --threads` runs: dma_map_benchmark's `DMA_MAP_MAX_THREADS`
/// (include/uapi/linux/map_benchmark.h).
const MAX_THREADS: u32 = 1024;

/// `bench --threads N [--duration S] [--kind K] [--size SIZE]`: no sweep option, no
/// `--iters` (the threads run for a time).
fn threads_spec(seen: &BenchArgs, flags: Flags) -> std::result::Result<ThreadSpec, String> {
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

/// The sweep `bench` asks for: `--kinds` (or `--kind`), `--sizes` (or `--size`) or
/// `--min`/`--max`, `--iters`.
fn sweep_spec(seen: &BenchArgs, flags: Flags) -> std::result::Result<SweepSpec, String> {
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
        chart: seen.chart.clone(),
    };
    if spec.min > spec.max {
        return Err("bench --min is above --max".into());
    }
    Ok(spec)
}

/// `--interval MS`: milliseconds between two TRIGGERs, 0 or more.
fn parse_interval(s: &str) -> Result<u64> {
    s.trim().parse::<u64>().map_err(|e| Error::Invalid {
        what: "interval",
        input: s.to_owned(),
        reason: e.to_string(),
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
