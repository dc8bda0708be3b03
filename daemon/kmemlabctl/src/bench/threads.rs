//! `kmemlabctl bench --threads N --duration S`: contention across CPUs, as the kernel's
//! dma_map_benchmark measures it (kernel/dma/map_benchmark.c: N threads map and unmap for S
//! seconds; tools/dma/dma_map_benchmark.c prints the average and standard deviation over all
//! threads). Here N threads each run single ALLOC+FREE ioctl pairs for S seconds, each timed
//! from userspace, and the figures are given per thread as well as in total.
//!
//! Each thread opens its own file of `/dev/kmemlab`, as N separate clients would: each has
//! its own quota (an unprivileged opener's limit is per open file), and what they contend for
//! is what the module shares between files, the one allocation table and its lock
//! (kmod-helper/shared.rs, `Shared::inner`) and the allocators, not a file of their own.
//!
//! With more than one CPU to run on, thread `i` is pinned to the `i`-th CPU of the process's
//! affinity mask (round robin); each thread says on which CPU it ran.
//!
//! Percentiles are those of [`Histogram`], the project's one rule, over the samples they
//! summarize: a thread's of its own pairs, the total's of all the threads' pairs together (the
//! threads' histograms merged), never a statistic of the threads' own percentiles.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;

use kmemlab::clock::monotonic_ns;
use kmemlab::device::Device;
use kmemlab::error::Result;
use kmemlab::histogram::Histogram;
use kmemlab::report::to_json;
use kmemlab::spec::{format_size, Flags, Kind};
use nix::sched::{sched_getaffinity, sched_getcpu, sched_setaffinity, CpuSet};
use nix::unistd::Pid;
use serde::Serialize;

/// What `bench --threads` was asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadSpec {
    /// `--threads`, at least 1.
    pub threads: u32,
    /// `--duration`, seconds, at least 1.
    pub duration_s: u32,
    /// `--kind` (default kmalloc).
    pub kind: Kind,
    /// `--size` (default 64 B).
    pub size: u64,
    /// `--gfp`.
    pub flags: Flags,
}

/// Default `--duration` of `bench --threads`, seconds.
pub const DEFAULT_DURATION_S: u32 = 5;

/// Min, p50, p99 and max of `h`.
fn latency(h: &Histogram) -> Latency {
    Latency {
        min_ns: h.min(),
        p50_ns: h.p50(),
        p99_ns: h.p99(),
        max_ns: h.max(),
    }
}

/// Latency of one ALLOC+FREE pair, ns, from userspace; null without pairs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Latency {
    /// Fastest pair.
    pub min_ns: Option<u64>,
    /// Median.
    pub p50_ns: Option<u64>,
    /// 99th percentile.
    pub p99_ns: Option<u64>,
    /// Slowest pair.
    pub max_ns: Option<u64>,
}

/// One thread's figures.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ThreadReport {
    /// The thread's number, from 0.
    pub thread: u32,
    /// The CPU it was pinned to, or (not pinned) the one it was on at the end.
    pub cpu: Option<usize>,
    /// Whether it was pinned to `cpu`.
    pub pinned: bool,
    /// ALLOC+FREE pairs done.
    pub pairs: u64,
    /// Its run time, ns: from the common start to the end of its last pair.
    pub elapsed_ns: u64,
    /// `pairs / elapsed`.
    pub pairs_per_s: f64,
    /// Latency percentiles of its own pairs.
    pub latency: Latency,
}

/// All the threads together.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Total {
    /// The sum of the threads' pairs.
    pub pairs: u64,
    /// The sum of the threads' pairs per second.
    pub pairs_per_s: f64,
    /// Latency percentiles of all the threads' pairs together.
    pub latency: Latency,
}

/// What `bench --threads` prints (one JSON object with `--json`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ThreadsReport {
    /// The kind.
    pub kind: &'static str,
    /// Bytes per allocation.
    pub size: u64,
    /// Gfp flags.
    pub gfp: Vec<&'static str>,
    /// Threads run.
    pub threads: u32,
    /// Seconds each ran for.
    pub duration_s: u32,
    /// Per thread, by number.
    pub per_thread: Vec<ThreadReport>,
    /// In total.
    pub total: Total,
}

/// The CPUs this process may run on, in order.
fn allowed_cpus() -> Vec<usize> {
    match sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .collect(),
        Err(e) => {
            tracing::debug!("sched_getaffinity: {e}");
            Vec::new()
        }
    }
}

/// Pins the calling thread to `cpu`; whether it worked.
fn pin(cpu: usize) -> bool {
    let mut set = CpuSet::new();
    set.set(cpu).is_ok()
        && sched_setaffinity(Pid::from_raw(0), &set)
            .inspect_err(|e| tracing::warn!("could not pin a thread to CPU {cpu}: {e}"))
            .is_ok()
}

/// One thread: pin, open, wait for the others, then pairs until `duration_ns` after the
/// common start, or until a thread failed (`failed`, which its failure sets).
fn run_thread<D: Device>(
    i: u32,
    cpu: Option<usize>,
    spec: &ThreadSpec,
    duration_ns: u64,
    open: &(impl Fn() -> Result<D> + Sync),
    start: &Barrier,
    failed: &AtomicBool,
) -> Result<(ThreadReport, Histogram)> {
    let result = pairs(i, cpu, spec, duration_ns, open, start, failed);
    if result.is_err() {
        failed.store(true, Ordering::Relaxed);
    }
    result
}

/// [`run_thread`] but for telling the others about a failure.
fn pairs<D: Device>(
    i: u32,
    cpu: Option<usize>,
    spec: &ThreadSpec,
    duration_ns: u64,
    open: &(impl Fn() -> Result<D> + Sync),
    start: &Barrier,
    failed: &AtomicBool,
) -> Result<(ThreadReport, Histogram)> {
    let pinned = cpu.is_some_and(pin);
    let dev = open();
    if dev.is_err() {
        failed.store(true, Ordering::Relaxed);
    }
    // Everyone waits here, opened or not, so that no thread is left at the barrier.
    start.wait();
    let dev = dev?;
    let mut samples = Histogram::new();
    let t0 = monotonic_ns();
    let deadline = t0 + duration_ns;
    let mut end = t0;
    while end < deadline && !failed.load(Ordering::Relaxed) {
        let before = monotonic_ns();
        let a = dev.alloc(spec.kind, spec.size, spec.flags)?;
        dev.free(a.handle)?;
        end = monotonic_ns();
        samples.record(end.saturating_sub(before));
    }
    let elapsed_ns = end - t0;
    let pairs = samples.len();
    Ok((
        ThreadReport {
            thread: i,
            cpu: if pinned { cpu } else { sched_getcpu().ok() },
            pinned,
            pairs,
            elapsed_ns,
            pairs_per_s: per_second(pairs, elapsed_ns),
            latency: latency(&samples),
        },
        samples,
    ))
}

/// `pairs` per second over `ns`, to two decimals; 0 for no time.
fn per_second(pairs: u64, ns: u64) -> f64 {
    if ns == 0 {
        return 0.0;
    }
    (pairs as f64 * 1e9 / ns as f64 * 100.0).round() / 100.0
}

/// Runs `spec.threads` threads, each on a device of its own from `open`, and sums them up.
/// A thread that fails (to open, or a refused ALLOC or FREE) stops the others; the first
/// thread's error is returned once all have ended.
pub fn run<D: Device>(
    spec: &ThreadSpec,
    open: impl Fn() -> Result<D> + Sync,
) -> Result<ThreadsReport> {
    run_for(spec, u64::from(spec.duration_s) * 1_000_000_000, open)
}

/// [`run`] for `duration_ns` rather than `spec.duration_s`.
fn run_for<D: Device>(
    spec: &ThreadSpec,
    duration_ns: u64,
    open: impl Fn() -> Result<D> + Sync,
) -> Result<ThreadsReport> {
    let cpus = allowed_cpus();
    let start = Barrier::new(spec.threads as usize);
    let failed = AtomicBool::new(false);
    let results: Vec<Result<(ThreadReport, Histogram)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..spec.threads)
            .map(|i| {
                let cpu = (cpus.len() > 1).then(|| cpus[i as usize % cpus.len()]);
                let (open, start, failed) = (&open, &start, &failed);
                s.spawn(move || run_thread(i, cpu, spec, duration_ns, open, start, failed))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    let mut per_thread = Vec::with_capacity(results.len());
    let mut all = Histogram::new();
    for r in results {
        let (report, samples) = r?;
        all.merge(&samples);
        per_thread.push(report);
    }
    let total = Total {
        pairs: per_thread.iter().map(|t| t.pairs).sum(),
        pairs_per_s: (per_thread.iter().map(|t| t.pairs_per_s).sum::<f64>() * 100.0).round()
            / 100.0,
        latency: latency(&all),
    };
    Ok(ThreadsReport {
        kind: spec.kind.name(),
        size: spec.size,
        gfp: spec.flags.gfp_names(),
        threads: spec.threads,
        duration_s: spec.duration_s,
        per_thread,
        total,
    })
}

/// The report as `bench --threads` prints it: one JSON object, or [`to_text`].
pub fn render(r: &ThreadsReport, json: bool) -> Result<String> {
    Ok(if json { to_json(r)? + "\n" } else { to_text(r) })
}

/// The report as text: a header line, a row per thread and the total.
pub fn to_text(r: &ThreadsReport) -> String {
    let ns = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    let row = |name: &str, cpu: &str, pairs: u64, per_s: f64, l: &Latency| {
        format!(
            "{name:<7} {cpu:>4} {pairs:>10} {per_s:>12.2} {:>8} {:>8} {:>8} {:>8}\n",
            ns(l.min_ns),
            ns(l.p50_ns),
            ns(l.p99_ns),
            ns(l.max_ns)
        )
    };
    let mut out = format!(
        "# {} size {} {}: {} threads for {} s, an open file each, ALLOC+FREE pairs\n",
        r.kind,
        format_size(r.size),
        r.gfp.join("|"),
        r.threads,
        r.duration_s
    );
    out.push_str(&format!(
        "{:<7} {:>4} {:>10} {:>12} {:>8} {:>8} {:>8} {:>8}\n",
        "THREAD", "CPU", "PAIRS", "PAIRS/S", "MIN_NS", "P50_NS", "P99_NS", "MAX_NS"
    ));
    for t in &r.per_thread {
        let cpu = t.cpu.map_or_else(|| "-".to_owned(), |c| c.to_string());
        out.push_str(&row(
            &t.thread.to_string(),
            &cpu,
            t.pairs,
            t.pairs_per_s,
            &t.latency,
        ));
    }
    out.push_str(&row(
        "total",
        "",
        r.total.pairs,
        r.total.pairs_per_s,
        &r.total.latency,
    ));
    out
}

#[cfg(test)]
mod tests {
    use kmemlab::MockDevice;

    use super::*;

    #[test]
    fn the_total_is_the_histogram_of_all_the_pairs() {
        // One fast thread (99 pairs) and one slow (100 pairs): the p50 of the 199 pairs is
        // the 100th smallest, a slow one; a mean of the two medians would be near 505.
        let mut all = Histogram::of([10; 99]);
        all.merge(&Histogram::of([1000; 100]));
        let l = latency(&all);
        assert_eq!(
            (l.min_ns, l.p50_ns, l.p99_ns, l.max_ns),
            (Some(10), Some(1000), Some(1000), Some(1000))
        );
        assert_eq!(latency(&Histogram::new()), Latency::default());
    }

    #[test]
    fn threads_on_the_mock_add_up_and_free_everything() {
        let spec = ThreadSpec {
            threads: 3,
            duration_s: 1,
            kind: Kind::Kmalloc,
            size: 64,
            flags: Flags::GFP_KERNEL,
        };
        // 20 ms: the mock keeps a record of every call.
        const MS20: u64 = 20_000_000;
        let r = run_for(&spec, MS20, || Ok(MockDevice::new())).unwrap();
        assert_eq!(r.per_thread.len(), 3);
        assert!(r
            .per_thread
            .iter()
            .all(|t| t.pairs > 0 && t.elapsed_ns >= MS20));
        assert_eq!(
            r.total.pairs,
            r.per_thread.iter().map(|t| t.pairs).sum::<u64>()
        );
        let lat = r.total.latency;
        assert!(lat.min_ns <= lat.p50_ns && lat.p50_ns <= lat.p99_ns && lat.p99_ns <= lat.max_ns);
        let text = to_text(&r);
        assert_eq!(text.lines().count(), 2 + 3 + 1, "{text}");
        assert!(text.lines().last().unwrap().starts_with("total"), "{text}");
        let v: serde_json::Value =
            serde_json::from_str(&kmemlab::report::to_json(&r).unwrap()).unwrap();
        assert_eq!(v["per_thread"].as_array().unwrap().len(), 3);
        assert_eq!(v["total"]["pairs"], r.total.pairs);

        // A refusal ends the run with that error, after every thread has ended.
        let bad = ThreadSpec {
            flags: Flags::parse_gfp("GFP_DMA32").unwrap(),
            ..spec
        };
        let err = run_for(&bad, MS20, || Ok(MockDevice::new())).unwrap_err();
        assert_eq!(err.errno_name(), "EINVAL");
        // One thread that cannot open stops the others at once, not after the duration.
        let opened = std::sync::atomic::AtomicU32::new(0);
        let began = std::time::Instant::now();
        let err = run_for(&spec, 60_000_000_000, || {
            if opened.fetch_add(1, Ordering::Relaxed) == 1 {
                Err(kmemlab::Error::Open {
                    path: "/dev/kmemlab".into(),
                    source: std::io::Error::from_raw_os_error(2),
                })
            } else {
                Ok(MockDevice::new())
            }
        })
        .unwrap_err();
        assert_eq!(err.errno_name(), "ENOENT");
        assert!(began.elapsed() < std::time::Duration::from_secs(10));
    }
}
