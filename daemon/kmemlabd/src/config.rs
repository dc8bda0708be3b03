//! kmemlabd's configuration: command-line flags over an optional TOML file
//! (`--config FILE`), re-read on SIGHUP.
//!
//! ```toml
//! plan = "kmalloc:1:GFP_ATOMIC,vmalloc:1:GFP_KERNEL,dma_coherent:1024:GFP_ATOMIC"
//! debounce_ms = 50
//! log = "/var/log/kmemlab/kmemlabd.jsonl"   # absent: stdout
//! uio_name = "kmemlab"
//! device = "/dev/kmemlab"
//! ```
//!
//! Every key is optional; unknown keys are errors. A flag given on the command line
//! wins over the file's key, at start and at every reload.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use kmemlab::error::{Error, Result};
use kmemlab::{DEFAULT_DEVICE, DEFAULT_SYSFS_UIO, DEFAULT_UIO_NAME};
use serde::Deserialize;

use crate::plan::Plan;

/// What `kmemlabd` is told on its command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonConfig {
    /// The misc device, `/dev/kmemlab` by default.
    pub device: PathBuf,
    /// The UIO device's name attribute, `kmemlab` by default.
    pub uio_name: String,
    /// Where UIO devices are listed, `/sys/class/uio` by default.
    pub sysfs_uio: PathBuf,
    /// Append JSON lines to this file instead of writing them to stdout.
    pub log: Option<PathBuf>,
    /// What each press does.
    pub plan: Plan,
    /// Presses closer than this to the previous accepted press are bounces (0: off).
    pub debounce_ms: u64,
}

/// The default debounce interval, ms.
pub const DEFAULT_DEBOUNCE_MS: u64 = 50;

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            device: DEFAULT_DEVICE.into(),
            uio_name: DEFAULT_UIO_NAME.into(),
            sysfs_uio: DEFAULT_SYSFS_UIO.into(),
            log: None,
            plan: Plan::default(),
            debounce_ms: DEFAULT_DEBOUNCE_MS,
        }
    }
}

/// The keys of the config file, and the flags that override them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `plan`: the plan, as `--plan` takes it.
    pub plan: Option<String>,
    /// `debounce_ms`: presses closer than this to the previous accepted one are bounces.
    pub debounce_ms: Option<u64>,
    /// `log`: append JSON lines to this file instead of stdout.
    pub log: Option<PathBuf>,
    /// `uio_name`: the UIO device's name attribute (read at start only).
    pub uio_name: Option<String>,
    /// `device`: the misc device (read at start only).
    pub device: Option<PathBuf>,
}

impl FileConfig {
    /// Parses the TOML text of a config file.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        toml::from_str(text).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            message: e.message().to_owned() + &span_of(text, e.span()),
        })
    }

    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// `self`'s keys, with those `over` sets replaced.
    fn overlaid(self, over: &FileConfig) -> FileConfig {
        FileConfig {
            plan: over.plan.clone().or(self.plan),
            debounce_ms: over.debounce_ms.or(self.debounce_ms),
            log: over.log.clone().or(self.log),
            uio_name: over.uio_name.clone().or(self.uio_name),
            device: over.device.clone().or(self.device),
        }
    }
}

/// ` (line L, column C)` of a toml error's span.
fn span_of(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(span) = span else {
        return String::new();
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    format!(" (line {line}, column {col})")
}

/// Where the configuration comes from: the file given with `--config` and the flags.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigSource {
    /// `--config FILE`.
    pub file: Option<PathBuf>,
    /// The flags given, which win over the file.
    pub flags: FileConfig,
}

impl ConfigSource {
    /// Parses kmemlabd's arguments (without the program name). `Ok(None)`: `--help`.
    /// The error is a message for stderr.
    pub fn from_args<I>(args: I) -> std::result::Result<Option<Self>, String>
    where
        I: IntoIterator,
        I::Item: Into<OsString>,
    {
        use lexopt::prelude::*;

        let mut src = ConfigSource::default();
        let mut parser = lexopt::Parser::from_args(args);
        let e = |e: lexopt::Error| e.to_string();
        while let Some(arg) = parser.next().map_err(e)? {
            match arg {
                Long("config") => src.file = Some(parser.value().map_err(e)?.into()),
                Long("log") => src.flags.log = Some(parser.value().map_err(e)?.into()),
                Long("uio-name") => {
                    src.flags.uio_name = Some(parser.value().map_err(e)?.string().map_err(e)?)
                }
                Long("device") => src.flags.device = Some(parser.value().map_err(e)?.into()),
                Long("plan") => {
                    let plan = parser.value().map_err(e)?.string().map_err(e)?;
                    // Checked now, for a message that names the flag.
                    Plan::parse(&plan).map_err(|err| err.report())?;
                    src.flags.plan = Some(plan);
                }
                Long("debounce-ms") => {
                    src.flags.debounce_ms = Some(parser.value().map_err(e)?.parse().map_err(e)?)
                }
                Short('h') | Long("help") => return Ok(None),
                _ => return Err(arg.unexpected().to_string()),
            }
        }
        Ok(Some(src))
    }

    /// Reads the file (if any), lays the flags over it and checks the result.
    pub fn load(&self) -> Result<DaemonConfig> {
        let file = match &self.file {
            Some(path) => FileConfig::read(path)?,
            None => FileConfig::default(),
        };
        let keys = file.overlaid(&self.flags);
        let mut config = DaemonConfig::default();
        if let Some(plan) = &keys.plan {
            config.plan = Plan::parse(plan).map_err(|e| Error::Config {
                path: self.file.clone().unwrap_or_default(),
                message: format!("plan: {}", e.report()),
            })?;
        }
        if let Some(ms) = keys.debounce_ms {
            config.debounce_ms = ms;
        }
        config.log = keys.log;
        if let Some(name) = keys.uio_name {
            config.uio_name = name;
        }
        if let Some(device) = keys.device {
            config.device = device;
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(args: &[&str]) -> ConfigSource {
        ConfigSource::from_args(args.iter().copied())
            .unwrap()
            .unwrap()
    }

    #[test]
    fn flags_alone() {
        let c = src(&[
            "--plan",
            "vmalloc",
            "--debounce-ms",
            "10",
            "--log",
            "/x.log",
        ])
        .load()
        .unwrap();
        assert_eq!(c.plan, Plan::parse("vmalloc").unwrap());
        assert_eq!(c.debounce_ms, 10);
        assert_eq!(c.log, Some(PathBuf::from("/x.log")));
        assert_eq!(src(&[]).load().unwrap(), DaemonConfig::default());
        assert_eq!(ConfigSource::from_args(["--help"]), Ok(None));
        assert!(ConfigSource::from_args(["--plan", "slab"])
            .unwrap_err()
            .contains("invalid plan step 1"));
        assert!(ConfigSource::from_args(["--debounce-ms", "-1"]).is_err());
        assert!(ConfigSource::from_args(["--bogus"]).is_err());
    }

    #[test]
    fn flags_win_over_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("kmemlabd.conf");
        std::fs::write(
            &path,
            "# comment\nplan = \"pages:8K\"\ndebounce_ms = 5\nlog = \"/a.log\"\n\
             uio_name = \"other\"\ndevice = \"/dev/other\"\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let c = src(&["--config", p]).load().unwrap();
        assert_eq!(c.plan.to_string(), "pages:8K:GFP_KERNEL");
        assert_eq!(c.debounce_ms, 5);
        assert_eq!(c.log, Some(PathBuf::from("/a.log")));
        assert_eq!(c.uio_name, "other");
        assert_eq!(c.device, PathBuf::from("/dev/other"));
        let c = src(&["--config", p, "--debounce-ms", "7", "--plan", "vmalloc"])
            .load()
            .unwrap();
        assert_eq!(
            (c.debounce_ms, c.plan.to_string().as_str()),
            (7, "vmalloc:1:GFP_KERNEL")
        );
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("kmemlabd.conf");
        for (text, want) in [
            ("plan = ", "line 1"),
            ("color = \"red\"\n", "unknown field `color`"),
            ("debounce_ms = \"fifty\"\n", "invalid type"),
            ("debounce_ms = -3\n", "expected u64"),
            ("plan = \"slab\"\n", "plan: invalid plan step 1 \"slab\""),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = src(&["--config", path.to_str().unwrap()])
                .load()
                .unwrap_err();
            let msg = err.report();
            assert!(msg.contains(want), "{text:?}: {msg}");
            assert!(msg.starts_with("invalid config "), "{msg}");
            assert_eq!(err.errno_name(), "EINVAL");
        }
        let err = src(&["--config", "/no/such/kmemlabd.conf"])
            .load()
            .unwrap_err();
        assert!(err
            .report()
            .starts_with("failed to open /no/such/kmemlabd.conf"));
    }

    #[test]
    fn the_shipped_example_parses_to_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../systemd/kmemlabd.conf");
        let c = src(&["--config", path.to_str().unwrap()]).load().unwrap();
        assert_eq!(c, DaemonConfig::default());
    }

    #[test]
    fn an_empty_file_gives_the_documented_defaults() {
        let tmp = tempfile::tempdir().unwrap();
        let empty = tmp.path().join("kmemlabd.conf");
        std::fs::write(&empty, "").unwrap();
        let c = src(&["--config", empty.to_str().unwrap()]).load().unwrap();
        // The shipped example spells out every default.
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../systemd/kmemlabd.conf");
        let documented = src(&["--config", shipped.to_str().unwrap()])
            .load()
            .unwrap();
        assert_eq!(c, documented);
        assert_eq!(c.log, None, "no log key: stdout");
    }
}
