//! The clocks of the project's timestamps: wall-clock time for people, and
//! `CLOCK_MONOTONIC`, the clock of the kernel's `ktime_get_ns()` in the ring.

use std::time::{SystemTime, UNIX_EPOCH};

/// `CLOCK_REALTIME` now, in nanoseconds since the Unix epoch (0 before 1970).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// `CLOCK_MONOTONIC` now, in nanoseconds: the clock of the kernel's `ktime_get_ns()`.
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        (t.tv_sec() as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(t.tv_nsec() as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks() {
        // After 2020-01-01 and before 2200.
        let t = now_ns();
        assert!(t > 1_577_836_800_000_000_000 && t < 7_258_118_400_000_000_000);
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(a > 0 && b >= a);
    }
}
