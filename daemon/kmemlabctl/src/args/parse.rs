//! Reading the command line: clap's errors and `--help`, and the values checked.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};

use super::check::build;
use super::{Cli, Sub};
use crate::command::Command;

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

/// Why the command line does not name something to run.
#[derive(Debug)]
pub enum Stop {
    /// `--help`, `help` or `--version`: print `text` on stdout, exit 0.
    Display(String),
    /// A usage error ([`crate::exit::USAGE`]).
    Usage(UsageError),
}

/// A command line that could not be parsed ([`crate::exit::USAGE`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageError {
    /// Whether `--json` was given, so the error is printed as JSON.
    pub json: bool,
    /// What is wrong, on one line.
    pub message: String,
    /// The text for stderr: `error: ...`, the command's usage and where to find help.
    pub text: String,
}

impl Stop {
    /// The usage error; panics on `--help` (for tests).
    pub fn usage(self) -> UsageError {
        match self {
            Stop::Usage(e) => e,
            Stop::Display(text) => panic!("not a usage error: {text}"),
        }
    }
}

/// Whether `--json` is among `args` (before a `--`), for a command line clap refused.
fn json_given(args: &[OsString]) -> bool {
    args.iter()
        .take_while(|a| *a != "--")
        .any(|a| a == "--json")
}

/// A usage error from clap's error: its first paragraph, on one line, as the message.
fn usage(e: &clap::Error, json: bool) -> UsageError {
    let text = e.render().to_string();
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        return UsageError {
            json,
            message: "missing command".to_owned(),
            text: format!("error: missing command\n\n{text}"),
        };
    }
    let message = {
        text.lines()
            .take_while(|l| !l.trim().is_empty())
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(" ")
            .trim_start_matches("error: ")
            .to_owned()
    };
    UsageError {
        json,
        message,
        text,
    }
}

/// Parses `kmemlabctl`'s arguments (without the program name).
pub fn parse_args<I>(args: I) -> std::result::Result<Invocation, Stop>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let all = std::iter::once(OsString::from("kmemlabctl")).chain(args.iter().cloned());
    let cli = match Cli::try_parse_from(all) {
        Ok(cli) => cli,
        Err(e) => {
            return Err(match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    Stop::Display(e.render().to_string())
                }
                _ => Stop::Usage(usage(&e, json_given(&args))),
            })
        }
    };
    let json = cli.json;
    match build(&cli.command) {
        Ok(command) => Ok(Invocation {
            command,
            device: cli.device,
            json,
        }),
        Err(message) => {
            // The error as clap words it, with the usage of the command at fault.
            let mut cmd = Cli::command();
            cmd.build();
            let name = command_name(&cli.command);
            let e = match cmd.find_subcommand_mut(name) {
                Some(sub) => sub.error(ErrorKind::ValueValidation, &message),
                None => cmd.error(ErrorKind::ValueValidation, &message),
            };
            Err(Stop::Usage(UsageError {
                json,
                message,
                text: e.render().to_string(),
            }))
        }
    }
}

/// The command word of `sub`.
fn command_name(sub: &Sub) -> &'static str {
    match sub {
        Sub::Info => "info",
        Sub::Alloc(_) => "alloc",
        Sub::Free(_) => "free",
        Sub::List(_) => "list",
        Sub::Stats => "stats",
        Sub::Bench(_) => "bench",
        Sub::Report(_) => "report",
        Sub::Trigger(_) => "trigger",
        Sub::Watch(_) => "watch",
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use kmemlab::spec::{Flags, Kind};

    use super::*;

    fn parse(args: &[&str]) -> std::result::Result<Invocation, Stop> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    fn command(args: &[&str]) -> Command {
        parse(args).unwrap().command
    }

    fn usage_error(args: &[&str]) -> String {
        parse(args).unwrap_err().usage().message
    }

    fn alloc(kind: Kind, size: u64, flags: Flags) -> Command {
        Command::Alloc {
            kind,
            size,
            flags,
            count: 1,
            hold: false,
        }
    }

    #[test]
    fn parses_the_surface() {
        assert_eq!(command(&["info"]), Command::Info);
        assert_eq!(
            command(&["list", "--json"]),
            Command::List {
                kind: None,
                persist: false
            }
        );
        assert_eq!(command(&["--json", "stats"]), Command::Stats);
        assert_eq!(
            command(&["alloc", "--kind", "kmalloc", "--size", "1"]),
            alloc(Kind::Kmalloc, 1, Flags::GFP_KERNEL)
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
            alloc(
                Kind::DmaCoherent,
                4096,
                Flags::parse_gfp("GFP_ATOMIC|__GFP_ZERO")
                    .unwrap()
                    .with(Flags::PERSIST)
            )
        );
        // Flag names are case-insensitive, `zero` is __GFP_ZERO, sizes take suffixes.
        assert_eq!(
            command(&["alloc", "--kind", "VMALLOC", "--size", "2m", "--gfp", "zero"]),
            alloc(
                Kind::Vmalloc,
                2 << 20,
                Flags::parse_gfp("__GFP_ZERO").unwrap()
            )
        );
        assert_eq!(
            command(&["free", "42"]),
            Command::Free { handles: vec![42] }
        );
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
        assert_eq!(
            command(&["trigger"]),
            Command::Trigger {
                count: 1,
                interval_ms: None
            }
        );
        assert_eq!(
            command(&["trigger", "--count", "100"]),
            Command::Trigger {
                count: 100,
                interval_ms: None
            }
        );

        let inv = parse(&["--device", "/tmp/x", "info", "--json"]).unwrap();
        assert_eq!(inv.device, PathBuf::from("/tmp/x"));
        assert!(inv.json);
        let inv = parse(&["--json", "info", "--device", "/tmp/y"]).unwrap();
        assert_eq!((inv.device, inv.json), (PathBuf::from("/tmp/y"), true));
        // As with the hand parser before clap: a repeated option is no error, the last wins.
        let inv = parse(&[
            "--json", "--device", "/a", "info", "--json", "--device", "/b",
        ])
        .unwrap();
        assert_eq!((inv.device, inv.json), (PathBuf::from("/b"), true));
        assert_eq!(
            command(&["trigger", "--count", "2", "--count", "3"]),
            Command::Trigger {
                count: 3,
                interval_ms: None
            }
        );
        assert_eq!(
            parse(&["info"]).unwrap().device,
            PathBuf::from("/dev/kmemlab")
        );
    }

    #[test]
    fn the_new_options() {
        assert_eq!(
            command(&["alloc", "--kind", "pages", "--size", "4K", "--count", "3", "--hold"]),
            Command::Alloc {
                kind: Kind::Pages,
                size: 4096,
                flags: Flags::GFP_KERNEL,
                count: 3,
                hold: true
            }
        );
        assert_eq!(
            command(&["free", "1", "2", "3"]),
            Command::Free {
                handles: vec![1, 2, 3]
            }
        );
        assert_eq!(command(&["free", "--all"]), Command::FreeAll);
        assert_eq!(
            command(&["list", "--kind", "dma_coherent", "--persist"]),
            Command::List {
                kind: Some(Kind::DmaCoherent),
                persist: true
            }
        );
        assert_eq!(
            command(&["trigger", "--count", "2", "--interval", "10"]),
            Command::Trigger {
                count: 2,
                interval_ms: Some(10)
            }
        );
        assert_eq!(
            command(&["report", "-"]),
            Command::Report {
                log: "-".into(),
                svg: None,
                html: None
            }
        );
    }

    #[test]
    fn help_and_version_are_printed_not_errors() {
        for args in [&["--help"][..], &["help"], &["--version"], &["-V"]] {
            assert!(matches!(parse(args), Err(Stop::Display(_))), "{args:?}");
        }
        // Each command's help shows its own options only.
        let Err(Stop::Display(alloc)) = parse(&["alloc", "--help"]) else {
            panic!("no help")
        };
        assert!(
            alloc.contains("--hold") && alloc.contains("--gfp"),
            "{alloc}"
        );
        assert!(
            !alloc.contains("--iters") && !alloc.contains("--interval"),
            "{alloc}"
        );
        let Err(Stop::Display(short)) = parse(&["alloc", "-h"]) else {
            panic!("no help")
        };
        assert!(short.starts_with("Allocate"), "{short}");
        let Err(Stop::Display(version)) = parse(&["--version"]) else {
            panic!("no version")
        };
        assert_eq!(
            version,
            format!("kmemlabctl {}\n", env!("CARGO_PKG_VERSION"))
        );
    }

    #[test]
    fn usage_errors_are_clear() {
        for (args, want) in [
            (&[][..], "missing command"),
            (&["frobnicate"][..], "unrecognized subcommand 'frobnicate'"),
            (&["alloc", "--size", "1"][..], "--kind <KIND>"),
            (&["alloc", "--kind", "kmalloc"][..], "--size <SIZE>"),
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
            (
                &["alloc", "--kind", "kmalloc", "--size", "1", "--count", "0"][..],
                "invalid count \"0\": must be at least 1",
            ),
            (&["free"][..], "<HANDLE|--all>"),
            (&["free", "x"][..], "invalid handle \"x\""),
            (&["free", "--all", "1"][..], "cannot be used with"),
            (&["info", "extra"][..], "unexpected argument 'extra'"),
            (
                &["free", "1", "--kind", "kmalloc"][..],
                "unexpected argument '--kind'",
            ),
            (&["list", "--kind", "slab"][..], "invalid kind \"slab\""),
            (
                &["trigger", "--iters", "3"][..],
                "unexpected argument '--iters'",
            ),
            (
                &["trigger", "--count", "0"][..],
                "invalid count \"0\": must be at least 1",
            ),
            (
                &["trigger", "--count", "2", "--interval", "-5"][..],
                "invalid interval \"-5\"",
            ),
            (
                &["bench", "--kind", "kmalloc", "--size", "8", "--iters", "-1"][..],
                "invalid iters",
            ),
            (&["info", "--bogus"][..], "unexpected argument '--bogus'"),
            (&["alloc", "--kind"][..], "a value is required for '--kind"),
        ] {
            let msg = usage_error(args);
            assert!(msg.contains(want), "{args:?}: {msg}");
        }
        assert!(parse(&["--json", "bogus"]).unwrap_err().usage().json);
        assert!(parse(&["bogus", "--json"]).unwrap_err().usage().json);
        assert!(!parse(&["bogus"]).unwrap_err().usage().json);
        // A value clap accepted but kmemlabctl refuses: the usage of the command at fault.
        let e = parse(&["alloc", "--kind", "kmalloc", "--size", "0"])
            .unwrap_err()
            .usage();
        assert!(
            e.text.starts_with("error: invalid size \"0\"")
                && e.text.contains("Usage: kmemlabctl alloc"),
            "{}",
            e.text
        );
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
            (&["info", "--live", "3"][..], "unexpected argument '--live'"),
            (
                &["report", "x", "--chart", "a"][..],
                "unexpected argument '--chart'",
            ),
        ] {
            let msg = usage_error(args);
            assert!(msg.contains(want), "{args:?}: {msg}");
        }
    }
}
