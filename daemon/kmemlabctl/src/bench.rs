//! `kmemlabctl bench` as a sweep: for each kind and size, the in-kernel floor (BENCH),
//! the userspace single-call path (ALLOC then FREE, one ioctl each) and the batched path
//! (ALLOC_BATCH then FREE_BATCH of up to [`kmemlab::uapi::BATCH_MAX`]), with the same number of
//! pairs for all three, and the ratios of the userspace paths to the floor.
//!
//! With `rounds` above 1 the three paths take turns: each round measures all three on its
//! share of the pairs, so that a slow stretch of the machine (under emulation, the host taking
//! the guest's CPU away) weighs on the floor and the userspace paths alike. The ratios are then
//! of the totals over all rounds.
//!
//! Each round also times bare round trips through the module: NOP ioctls (nothing done,
//! nothing copied) and INFO ioctls (a struct copied out), as many as the round's pairs. A
//! single ALLOC+FREE pair cannot cost less than the floor plus two NOPs: the `single_bound`
//! figures say how far the single path is from that bound. A module older than NOP
//! (`ENOTTY`) leaves them out.
//!
//! [`threads`]: `bench --threads N --duration S`, ALLOC+FREE pairs on N CPUs at once.

mod chart;
mod live;
mod measure;
mod rows;
mod spec;
pub mod threads;

pub use chart::{chart_svg, write_chart};
pub use live::LiveSet;
pub use measure::{
    batched_path, bound_ratio, info_path, measure, merge, nop_path, single_bound, single_path,
    Floor, PointReport, RoundTrip,
};
pub use rows::{table_header, table_row, to_table, HEADERS};
pub use spec::{
    batch_for, default_sizes, iters_for, PointSpec, SweepSpec, BIG_SIZE, BIG_SIZE_ITERS,
    DEFAULT_SWEEP_ITERS, LIVE_SIZE, PROGRESS_POINTS, SWEEP_MAX, SWEEP_MIN,
};
