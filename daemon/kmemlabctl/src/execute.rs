//! Running a `kmemlabctl` command on a [`Device`] (the mock in tests): what each one
//! prints as JSON lines or text, and its note for stderr ([`crate::failure`] for a
//! failure). The binary only opens the device and prints.

use kmemlab::device::Device;
use kmemlab::error::{Error, Result};
use kmemlab::report::{to_json, BenchReport, InfoReport, StatsReport};

use crate::bench::{self, SweepSpec};
use crate::chart::write_file;
use crate::command::Command;
use crate::logreport::LogReport;
use crate::ops::{self, Failure, Tally};
use crate::table::ToText;

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
/// `-` reads the log from standard input.
pub fn report(
    log: &std::path::Path,
    svg: Option<&std::path::Path>,
    html: Option<&std::path::Path>,
    json: bool,
) -> Result<Output> {
    let stdin = log == std::path::Path::new("-");
    let r = if stdin {
        LogReport::read_stdin()?
    } else {
        LogReport::read(log)?
    };
    let mut written = Vec::new();
    if let Some(path) = svg {
        write_file(path, &r.to_svg()?)?;
        written.push(format!("wrote {}", path.display()));
    }
    if let Some(path) = html {
        let title = if stdin {
            "standard input".to_owned()
        } else {
            log.display().to_string()
        };
        write_file(path, &r.to_html(&title)?)?;
        written.push(format!("wrote {}", path.display()));
    }
    Ok(Output {
        stdout: if json { json_line(&r)? } else { r.to_text() },
        note: (!written.is_empty()).then(|| written.join("\n")),
        ..Output::default()
    })
}

/// What a command prints: `stdout`, and a `note` for stderr (text mode only); for a
/// command of several operations, those that failed ([`crate::exit::of_tally`]).
#[derive(Debug, Default)]
pub struct Output {
    /// For stdout; every line ends in `\n`.
    pub stdout: String,
    /// For stderr.
    pub note: Option<String>,
    /// Operations that succeeded, for a command of several.
    pub done: usize,
    /// Operations that failed, for a command of several.
    pub failed: Vec<Failure>,
}

impl Output {
    fn text(stdout: String) -> Self {
        Self {
            stdout,
            ..Self::default()
        }
    }

    fn tally(stdout: String, tally: Tally) -> Self {
        Self {
            stdout,
            note: tally.note,
            done: tally.done,
            failed: tally.failed,
        }
    }
}

fn json_line<T: serde::Serialize>(v: &T) -> Result<String> {
    Ok(to_json(v)? + "\n")
}

/// Runs `command` on `dev` and renders its result as JSON lines or text. `alloc --hold`
/// calls `wait` between the allocations and their frees (the binary waits there for
/// SIGINT or SIGTERM).
pub fn execute_waiting<D: Device + ?Sized>(
    command: &Command,
    dev: &D,
    json: bool,
    emit: &mut dyn FnMut(&str),
    wait: &mut dyn FnMut() -> Result<()>,
) -> Result<Output> {
    let out = match command {
        Command::Info => {
            let r = InfoReport::from(&dev.info()?);
            Output::text(if json { json_line(&r)? } else { r.to_text() })
        }
        Command::Alloc {
            kind,
            size,
            flags,
            count,
            hold,
        } => {
            let tally = ops::alloc(dev, (*kind, *size, *flags), *count, *hold, json, emit, wait)?;
            Output::tally(String::new(), tally)
        }
        Command::Free { handles } => {
            Output::tally(String::new(), ops::free(dev, Some(handles), json, emit)?)
        }
        Command::FreeAll => Output::tally(String::new(), ops::free(dev, None, json, emit)?),
        Command::List { kind, persist } => Output::text(ops::list(dev, *kind, *persist, json)?),
        Command::Trigger { count, interval_ms } => Output::tally(
            String::new(),
            ops::trigger(dev, *count, *interval_ms, json, emit)?,
        ),
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
                ..Output::default()
            }
        }
        Command::Report { log, svg, html } => report(log, svg.as_deref(), html.as_deref(), json)?,
        // An open file per thread, and the UIO device: the binary runs them
        // (`bench::threads::run`, `watch::run`).
        Command::Threads(_) | Command::Watch(_) => {
            return Err(Error::Invalid {
                what: "command",
                input: format!("{command:?}"),
                reason: "runs from the kmemlabctl binary only".into(),
            })
        }
    };
    Ok(out)
}

/// Runs `command` on `dev`, its whole output in [`Output::stdout`]; `alloc --hold` frees
/// right after allocating.
pub fn execute<D: Device + ?Sized>(command: &Command, dev: &D, json: bool) -> Result<Output> {
    let mut streamed = String::new();
    let mut out = execute_waiting(
        command,
        dev,
        json,
        &mut |s| streamed.push_str(s),
        &mut || Ok(()),
    )?;
    streamed.push_str(&out.stdout);
    out.stdout = streamed;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use kmemlab::spec::Kind;
    use kmemlab::MockDevice;
    use serde_json::{json, Value};

    use super::*;
    use crate::args::{parse_args, Invocation, Stop};

    fn command(args: &[&str]) -> Command {
        parse(args).unwrap().command
    }

    fn usage_error(args: &[&str]) -> String {
        parse(args).unwrap_err().usage().message
    }

    fn parse(args: &[&str]) -> std::result::Result<Invocation, Stop> {
        parse_args(args.iter().map(|s| s.to_string()))
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
            (&["report"][..], "<LOG>"),
            (
                &["report", "x", "--iters", "3"][..],
                "unexpected argument '--iters'",
            ),
            (&["info", "--svg", "x"][..], "unexpected argument '--svg'"),
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
}
