//! kmemlabctl: the command line that asks the kmemlab module for allocations, frees,
//! lists, counters, benchmarks and software button presses, and summarizes kmemlabd's
//! logs.
//!
//! - [`args`]: the command line (a clap derive), read and checked into an
//!   [`args::Invocation`].
//! - [`command`]: a [`command::Command`], what the command line asks for.
//! - [`execute`]: running a command: what it prints.
//! - [`ops`]: commands of several operations (`alloc --count`, `free H H`, `free --all`,
//!   `trigger --interval`) and `list`'s filters.
//! - [`exit`]: the exit statuses.
//! - [`failure`]: a failed command: its `--json` error object and a hint.
//! - [`table`]: the text output: plain-text tables and each report's text.
//! - [`bench`](mod@bench): `bench` sweeps: the in-kernel floor against the userspace single-call
//!   and batched paths.
//! - [`logreport`]: `report`: a kmemlabd log summarized and charted.
//! - [`chart`]: what the sweep and log charts share (width, axes, file writes).
//! - [`watch`]: `watch`, the UIO device's events live.

#![forbid(unsafe_code)]

pub mod args;
pub mod bench;
pub mod chart;
pub mod command;
pub mod execute;
pub mod exit;
pub mod failure;
pub mod logreport;
pub mod ops;
pub mod table;
pub mod watch;
