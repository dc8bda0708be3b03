//! kmemlabd's configuration: command-line flags over an optional TOML file
//! (`--config FILE`), re-read on SIGHUP.
//!
//! ```toml
//! plan = "kmalloc:1:GFP_ATOMIC,vmalloc:1:GFP_KERNEL,dma_coherent:1024:GFP_ATOMIC"
//! debounce_ms = 50
//! log = "/var/log/kmemlab/kmemlabd.jsonl"   # absent: stdout
//! uio_name = "kmemlab"
//! device = "/dev/kmemlab"
//! backend = "uio"                            # or "vfio"
//! vfio_bus = "amba"
//! vfio_device = "9030000.pl061"
//! vfio_line = 3
//! ```
//!
//! Every key is optional; unknown keys are errors. A flag given on the command line
//! wins over the file's key, at start and at every reload.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use kmemlab::error::{Error, Result};
use kmemlab::vfio::VfioTarget;
use kmemlab::{DEFAULT_DEVICE, DEFAULT_SYSFS_UIO, DEFAULT_UIO_NAME};
use serde::{Deserialize, Serialize};

use crate::plan::Plan;

/// Where the button's interrupts come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// The kmemlab module owns the interrupt and hands it over through its UIO device.
    #[default]
    Uio,
    /// kmemlabd drives the GPIO controller itself through VFIO (no-IOMMU mode); the
    /// module serves the allocations only.
    Vfio,
}

impl Backend {
    /// `uio` or `vfio`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Uio => "uio",
            Backend::Vfio => "vfio",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "uio" => Ok(Backend::Uio),
            "vfio" => Ok(Backend::Vfio),
            _ => Err(Error::Invalid {
                what: "backend",
                input: s.to_owned(),
                reason: "want uio or vfio".into(),
            }),
        }
    }
}

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
    /// Where the interrupts come from, UIO by default.
    pub backend: Backend,
    /// The VFIO backend's device and line (`amba`, `9030000.pl061`, 3 by default) and
    /// the sysfs and `/dev` roots.
    pub vfio: VfioTarget,
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
            backend: Backend::default(),
            vfio: VfioTarget::default(),
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
    /// `backend`: `uio` or `vfio` (read at start only).
    pub backend: Option<String>,
    /// `vfio_bus`: the VFIO device's bus in sysfs (read at start only).
    pub vfio_bus: Option<String>,
    /// `vfio_device`: the VFIO device's name on its bus (read at start only).
    pub vfio_device: Option<String>,
    /// `vfio_line`: the GPIO line of the button, 0 to 7 (read at start only).
    pub vfio_line: Option<u32>,
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
            backend: over.backend.clone().or(self.backend),
            vfio_bus: over.vfio_bus.clone().or(self.vfio_bus),
            vfio_device: over.vfio_device.clone().or(self.vfio_device),
            vfio_line: over.vfio_line.or(self.vfio_line),
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
                Long("backend") => {
                    let backend = parser.value().map_err(e)?.string().map_err(e)?;
                    // Checked now, for a message that names the flag.
                    backend.parse::<Backend>().map_err(|err| err.report())?;
                    src.flags.backend = Some(backend);
                }
                Long("vfio-bus") => {
                    src.flags.vfio_bus = Some(parser.value().map_err(e)?.string().map_err(e)?)
                }
                Long("vfio-device") => {
                    src.flags.vfio_device = Some(parser.value().map_err(e)?.string().map_err(e)?)
                }
                Long("vfio-line") => {
                    let line: u32 = parser.value().map_err(e)?.parse().map_err(e)?;
                    kmemlab::vfio::pl061::line_bit(line).map_err(|err| err.report())?;
                    src.flags.vfio_line = Some(line);
                }
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
        let invalid = |key: &str, e: Error| Error::Config {
            path: self.file.clone().unwrap_or_default(),
            message: format!("{key}: {}", e.report()),
        };
        if let Some(backend) = &keys.backend {
            config.backend = backend.parse().map_err(|e| invalid("backend", e))?;
        }
        if let Some(bus) = keys.vfio_bus {
            config.vfio.bus = bus;
        }
        if let Some(device) = keys.vfio_device {
            config.vfio.device = device;
        }
        if let Some(line) = keys.vfio_line {
            config.vfio.line = line;
        }
        config.vfio.validate().map_err(|e| invalid("vfio", e))?;
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
    fn backend_flags_and_keys() {
        let c = src(&[]).load().unwrap();
        assert_eq!(c.backend, Backend::Uio);
        assert_eq!(c.vfio, VfioTarget::new("amba", "9030000.pl061", 3));
        let c = src(&[
            "--backend",
            "vfio",
            "--vfio-bus",
            "platform",
            "--vfio-device",
            "9030000.gpio",
            "--vfio-line",
            "5",
        ])
        .load()
        .unwrap();
        assert_eq!(c.backend, Backend::Vfio);
        assert_eq!(c.vfio, VfioTarget::new("platform", "9030000.gpio", 5));

        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("kmemlabd.conf");
        std::fs::write(
            &path,
            "backend = \"vfio\"\nvfio_bus = \"amba\"\nvfio_device = \"x.pl061\"\n\
             vfio_line = 2\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let c = src(&["--config", p]).load().unwrap();
        assert_eq!(c.backend, Backend::Vfio);
        assert_eq!(c.vfio, VfioTarget::new("amba", "x.pl061", 2));
        let c = src(&["--config", p, "--backend", "uio", "--vfio-line", "3"])
            .load()
            .unwrap();
        assert_eq!((c.backend, c.vfio.line), (Backend::Uio, 3));
        assert_eq!(Backend::Vfio.to_string(), "vfio");
        assert_eq!(serde_json::to_string(&Backend::Uio).unwrap(), "\"uio\"");
    }

    /// A bad backend or line given as a flag is a usage error that names it.
    #[test]
    fn bad_backend_flags_are_usage_errors() {
        assert_eq!(
            ConfigSource::from_args(["--backend", "vfio2"]).unwrap_err(),
            "invalid backend \"vfio2\": want uio or vfio"
        );
        assert_eq!(
            ConfigSource::from_args(["--vfio-line", "8"]).unwrap_err(),
            "invalid gpio line \"8\": a pl061 has lines 0 to 7"
        );
        assert!(ConfigSource::from_args(["--vfio-line", "-1"]).is_err());
        assert!(ConfigSource::from_args(["--backend"]).is_err());
    }

    #[test]
    fn bad_backend_keys_are_config_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("kmemlabd.conf");
        for (text, want) in [
            (
                "backend = \"VFIO\"\n",
                "backend: invalid backend \"VFIO\": want uio or vfio",
            ),
            ("backend = 1\n", "invalid type"),
            (
                "vfio_line = 9\n",
                "vfio: invalid gpio line \"9\": a pl061 has lines 0 to 7",
            ),
            (
                "vfio_device = \"../x\"\n",
                "vfio: invalid vfio device \"../x\"",
            ),
            ("vfio_bus = \"\"\n", "vfio: invalid vfio bus \"\""),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = src(&["--config", path.to_str().unwrap()])
                .load()
                .unwrap_err();
            let msg = err.report();
            assert!(msg.contains(want), "{text:?}: {msg}");
            assert!(msg.starts_with("invalid config "), "{msg}");
        }
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
