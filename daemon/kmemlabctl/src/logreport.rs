//! `kmemlabctl report LOG.jsonl`: reads a kmemlabd log, summarizes it per kind (counts,
//! bytes, latency and interrupt-latency percentiles) and draws it with `plotters`
//! (allocation latency against size per kind; a per-press timeline) as SVG or as a
//! self-contained HTML page.
//!
//! The log may also be `journalctl -o json` output (each entry's `MESSAGE` is taken),
//! or both mixed; `report -` reads it from standard input.
//!
//! Lines that are not JSON objects with a string `event` are counted as malformed and
//! skipped; events this version does not summarize (`bounce`, `stats`...) are counted
//! and otherwise ignored.

mod chart;
mod journal;
mod summary;

pub use crate::chart::{write_file, CHART_WIDTH};
pub use chart::{kind_color, CHART_HEIGHT, IRQ_COLOR, KIND_COLORS};
pub use summary::{AllocPoint, KindSummary, LogReport, PressPoint};
