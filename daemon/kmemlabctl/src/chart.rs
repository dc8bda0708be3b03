//! What the charts of `bench --chart` and `report --svg/--html` share: the width, axis
//! labels and ranges, errors and the file write.

use std::path::Path;

use kmemlab::error::{Error, Result};
use plotters::prelude::*;

/// Width of the chart image, px.
pub const CHART_WIDTH: u32 = 960;

/// An axis label: `10`, `100`, `1k`, `10k`, `1M`, `1G`.
pub fn short(v: f64) -> String {
    for (div, unit) in [(1e9, "G"), (1e6, "M"), (1e3, "k")] {
        if v >= div {
            return format!("{}{unit}", (v / div * 10.0).round() / 10.0);
        }
    }
    format!("{v:.0}")
}

/// Ranges that hold every value, padded by a factor of 2 either way (for log axes;
/// values below 1 count as 1), or 1..1000 when there are none.
pub fn bounds(
    xs: impl Iterator<Item = f64>,
    ys: impl Iterator<Item = f64>,
) -> (std::ops::Range<f64>, std::ops::Range<f64>) {
    let range = |it: &mut dyn Iterator<Item = f64>| {
        let (lo, hi) = it.fold((f64::MAX, f64::MIN), |(lo, hi), v| {
            (lo.min(v.max(1.0)), hi.max(v.max(1.0)))
        });
        if lo > hi {
            1.0..1000.0
        } else {
            (lo / 2.0)..(hi * 2.0)
        }
    };
    let mut xs = xs;
    let mut ys = ys;
    (range(&mut xs), range(&mut ys))
}

pub fn chart_error<E: std::error::Error + Send + Sync + 'static>(
    e: DrawingAreaErrorKind<E>,
) -> Error {
    Error::Invalid {
        what: "chart",
        input: String::new(),
        reason: e.to_string(),
    }
}

/// Writes `text` to `path`.
pub fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|source| Error::Write {
        path: path.to_path_buf(),
        source,
    })
}
