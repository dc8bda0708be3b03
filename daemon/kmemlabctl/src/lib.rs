//! kmemlabctl: the command line that asks the kmemlab module for allocations, frees,
//! lists, counters, benchmarks and software button presses, and summarizes kmemlabd's
//! logs.
//!
//! - [`ctl`]: the command line and the output of each command.
//! - [`bench`]: `bench` sweeps: the in-kernel floor against the userspace single-call
//!   and batched paths.
//! - [`logreport`]: `report`: a kmemlabd log summarized and charted.

#![forbid(unsafe_code)]

pub mod bench;
pub mod ctl;
pub mod logreport;
pub mod table;
