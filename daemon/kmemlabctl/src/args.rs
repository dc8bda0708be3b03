//! `kmemlabctl`'s command line, as a `clap` derive ([`Cli`]): the commands and their
//! options, per-command `--help`, `--version`, and `--json`/`--device` before or after the
//! command. [`parse_args`] reads it into an [`Invocation`]; [`crate::command`] checks the
//! values (sizes, kinds, flags) and builds the [`crate::command::Command`].
//!
//! The values are read as text and checked in [`crate::command`], so that `kmemlabctl`
//! and `kmemlabd --plan` give the same message for the same bad size or flag.

use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueHint};
use kmemlab::DEFAULT_DEVICE;

pub use parse::{parse_args, Invocation, Stop, UsageError};

mod check;
mod parse;

/// What KIND, SIZE and FLAG are, for the help of the commands that take them.
const VALUES_HELP: &str = "\
KIND   kmalloc, vmalloc, dma-coherent, kvmalloc, pages
SIZE   bytes: 1, 4K, 2M, 1G (K, M, G are powers of 1024)
FLAG   GFP_KERNEL (default), GFP_ATOMIC, GFP_NOWAIT, __GFP_ZERO, __GFP_NORETRY,
       __GFP_NOWARN, GFP_DMA, GFP_DMA32 (case-insensitive; `zero` = __GFP_ZERO)";

/// The top-level help after the options: ownership, privileges, values, exit statuses.
const AFTER_HELP: &str = "\
An allocation belongs to the open file: without --persist it is freed when
kmemlabctl exits. --persist makes it the device's: visible to list and free from
any opener, freed by `kmemlabctl free` or at module unload.

Without CAP_SYS_ADMIN an opener has a quota (EDQUOT beyond it), may not --persist,
and physical and DMA addresses are hidden; kernel virtual addresses follow the
kptr_restrict rule. `kmemlabctl info` shows this opener's privileges and limits.

KIND   kmalloc, vmalloc, dma-coherent, kvmalloc, pages
SIZE   bytes: 1, 4K, 2M, 1G (K, M, G are powers of 1024)
FLAG   GFP_KERNEL (default), GFP_ATOMIC, GFP_NOWAIT, __GFP_ZERO, __GFP_NORETRY,
       __GFP_NOWARN, GFP_DMA, GFP_DMA32 (case-insensitive; `zero` = __GFP_ZERO)

Exit status:
  0  success
  1  the kernel refused a request (an ioctl's errno), or another failure (a log,
     chart or page file)
  2  usage error
  3  no device or module: opening the device failed with ENOENT, ENODEV or ENXIO,
     or watch found no kmemlab UIO device
  4  partial failure: some, not all, of a command's operations failed (free H H,
     free --all, alloc --count N, trigger --interval)";

/// `kmemlabctl`: the whole command line.
#[derive(Debug, Parser)]
#[command(
    name = "kmemlabctl",
    version,
    about = "Ask the kmemlab module for allocations, frees, counters and benchmarks",
    long_about = "Ask the kmemlab kernel module, through its misc device /dev/kmemlab, for \
                  allocations, frees, lists, counters, benchmarks and software button \
                  presses, and summarize kmemlabd's logs.",
    after_help = AFTER_HELP,
    subcommand_required = true,
    args_override_self = true
)]
pub struct Cli {
    /// One JSON object per result and line (errors too)
    #[arg(long, global = true, display_order = 100)]
    pub json: bool,
    /// The kmemlab misc device
    #[arg(
        long,
        global = true,
        display_order = 101,
        value_name = "PATH",
        default_value = DEFAULT_DEVICE,
        value_hint = ValueHint::FilePath
    )]
    pub device: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Sub,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Sub {
    /// ABI version, page size, heap size, kinds, flags, limits
    Info,
    /// Allocate and report where the memory is
    #[command(after_help = VALUES_HELP)]
    Alloc(AllocArgs),
    /// Free allocations by handle, or every one this opener can see
    Free(FreeArgs),
    /// The allocations this opener can see
    List(ListArgs),
    /// Counters per kind, and the event count
    Stats,
    /// Time allocations: one kind and size in the kernel, or a sweep
    #[command(
        long_about = "With --kind and --size: N alloc+free pairs timed in the kernel \
                      (default 1000).\n\n\
                      Otherwise a sweep: per kind and size, the in-kernel floor (BENCH), N \
                      single ALLOC+FREE ioctl pairs and N pairs through \
                      ALLOC_BATCH+FREE_BATCH, ns per pair and the ratios to the floor \
                      (default every kind, 8 to 4M in powers of 4, N 2000, at most 50 from \
                      1M on), and N bare NOP and INFO round trips (NOP: ns per call; \
                      SINGLE_B: single path / (floor + 2 NOP)). With R rounds they all take \
                      turns on N/R pairs at a time. A progress bar on stderr for long \
                      sweeps when it is a terminal.",
        after_help = VALUES_HELP
    )]
    Bench(Box<BenchArgs>),
    /// Summarize a kmemlabd log per kind (latency and interrupt latency percentiles)
    Report(ReportArgs),
    /// Raise button events from the kernel
    Trigger(TriggerArgs),
    /// Follow the UIO device's events live, like gpiocdev's `edges`
    #[command(
        long_about = "Follow the UIO device's events live: a line per read of the count (its \
                      source and kernel timestamp, events coalesced into it as missed), then \
                      a summary. Stops after N events, MS ms without one, or SIGINT/SIGTERM \
                      (status 0). It takes no lock and never writes to the device, so it never \
                      takes an event from a running kmemlabd: each open file of a UIO device \
                      has its own event count."
    )]
    Watch(WatchArgs),
}

/// `watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Stop after N events
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub num_events: Option<String>,
    /// Stop after MS milliseconds without an event
    #[arg(long, value_name = "MS", allow_negative_numbers = true)]
    pub idle_timeout: Option<String>,
}

/// `alloc`.
#[derive(Debug, Args)]
pub struct AllocArgs {
    /// The allocator
    #[arg(long, value_name = "KIND")]
    pub kind: String,
    /// Bytes to allocate
    #[arg(long, value_name = "SIZE")]
    pub size: String,
    /// Gfp flags, separated by `,` or `|`
    #[arg(long, value_name = "FLAG,FLAG")]
    pub gfp: Option<String>,
    /// Make the allocation the device's: it outlives this kmemlabctl
    #[arg(long)]
    pub persist: bool,
    /// Make N allocations of the same spec, each reported
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub count: Option<String>,
    /// Keep the allocations until SIGINT or SIGTERM (Ctrl-C), then free them and print
    /// each free
    #[arg(long)]
    pub hold: bool,
}

/// `free`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["handles", "all"]))]
pub struct FreeArgs {
    /// The allocations to free
    #[arg(value_name = "HANDLE")]
    pub handles: Vec<String>,
    /// Free every allocation this opener can see (its own and the device's --persist
    /// ones)
    #[arg(long, conflicts_with = "handles")]
    pub all: bool,
}

/// `list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only allocations of this kind
    #[arg(long, value_name = "KIND")]
    pub kind: Option<String>,
    /// Only the device's (--persist) allocations
    #[arg(long)]
    pub persist: bool,
}

/// `bench`: one kind and size (`--kind` and `--size`), or a sweep.
#[derive(Debug, Default, Args)]
pub struct BenchArgs {
    /// One kind (with --size: a single in-kernel benchmark)
    #[arg(long, value_name = "KIND")]
    pub kind: Option<String>,
    /// One size (with --kind: a single in-kernel benchmark)
    #[arg(long, value_name = "SIZE")]
    pub size: Option<String>,
    /// Gfp flags for every allocation
    #[arg(long, value_name = "FLAG,FLAG")]
    pub gfp: Option<String>,
    /// Pairs per point (default 1000 for one kind and size, 2000 for a sweep)
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub iters: Option<String>,
    /// Sweep: the kinds (default every kind the module supports)
    #[arg(long, value_name = "KIND,KIND")]
    pub kinds: Option<String>,
    /// Sweep: the sizes
    #[arg(long, value_name = "SIZE,SIZE")]
    pub sizes: Option<String>,
    /// Sweep: the smallest default size (default 8)
    #[arg(long, value_name = "SIZE")]
    pub min: Option<String>,
    /// Sweep: the largest default size (default 4M)
    #[arg(long, value_name = "SIZE")]
    pub max: Option<String>,
    /// Sweep: paths take turns on N/R pairs at a time, R times (default 1)
    #[arg(long, value_name = "R", allow_negative_numbers = true)]
    pub rounds: Option<String>,
    /// Sweep: hold L kmalloc 64 B allocations during the whole sweep (default 0)
    #[arg(long, value_name = "L", allow_negative_numbers = true)]
    pub live: Option<String>,
    /// Sweep: draw ns per pair against size, a panel per kind, as SVG
    #[arg(long, value_name = "FILE.svg", value_hint = ValueHint::FilePath)]
    pub chart: Option<PathBuf>,
    /// Sweep: no progress bar
    #[arg(long)]
    pub no_progress: bool,
    /// Contention: N threads, an open file and a CPU each, run ALLOC+FREE pairs (kind
    /// default kmalloc, size default 64)
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub threads: Option<String>,
    /// With --threads: seconds to run (default 5)
    #[arg(long, value_name = "S", allow_negative_numbers = true)]
    pub duration: Option<String>,
}

/// `report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The kmemlabd log (JSON lines, or `journalctl -o json` lines); `-` reads standard
    /// input
    #[arg(value_name = "LOG", value_hint = ValueHint::FilePath)]
    pub log: PathBuf,
    /// Draw latency against size and a per-press timeline as SVG
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub svg: Option<PathBuf>,
    /// The same charts and the table as a self-contained HTML page
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub html: Option<PathBuf>,
}

/// `trigger`.
#[derive(Debug, Args)]
pub struct TriggerArgs {
    /// Events to raise (default 1): in one TRIGGER ioctl, or with --interval one ioctl
    /// each
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub count: Option<String>,
    /// N TRIGGER ioctls of one event each, MS milliseconds apart
    #[arg(long, value_name = "MS", allow_negative_numbers = true)]
    pub interval: Option<String>,
}

/// `kmemlabctl`'s `clap::Command`, for completions and man pages (`cargo xtask dist`).
pub fn command() -> clap::Command {
    Cli::command()
}
