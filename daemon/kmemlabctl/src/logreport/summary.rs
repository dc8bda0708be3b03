//! The summary of a kmemlabd log: per kind counts, bytes and latency percentiles, and
//! interrupt latency. Percentiles are kmemlab's one kind ([`kmemlab::histogram`]): nearest
//! rank over all the log's samples, to the histogram's resolution (about 3%).

use std::collections::BTreeMap;
use std::path::Path;

use kmemlab::error::{Error, Result};
use kmemlab::spec::Kind;
use kmemlab::Histogram;
use serde::Serialize;
use serde_json::Value;

use super::journal;
use crate::table::table;

/// One allocation seen in the log.
#[derive(Clone, Debug, PartialEq)]
pub struct AllocPoint {
    /// The press number (null for none).
    pub seq: Option<u64>,
    /// Seconds since the log's first timestamp.
    pub t_s: f64,
    /// The kind.
    pub kind: String,
    /// Requested bytes.
    pub size: u64,
    /// Time in the alloc call, ns.
    pub alloc_ns: u64,
}

/// One press seen in the log (an alloc, free or error line with a `seq`).
#[derive(Clone, Debug, PartialEq)]
pub struct PressPoint {
    /// The press number.
    pub seq: u64,
    /// Seconds since the log's first timestamp.
    pub t_s: f64,
    /// The kind of its step.
    pub kind: String,
    /// Kernel interrupt to daemon wake-up, ns.
    pub irq_to_wake_ns: Option<u64>,
    /// Alloc latency for an alloc press.
    pub alloc_ns: Option<u64>,
    /// Free latency for a free press.
    pub free_ns: Option<u64>,
}

/// Samples of one kind (or of all).
#[derive(Clone, Debug, Default)]
struct Samples {
    allocs: u64,
    frees: u64,
    errors: u64,
    bytes: u64,
    alloc_ns: Histogram,
    free_ns: Histogram,
    irq_ns: Histogram,
}

impl Samples {
    fn summary(&self, kind: &str) -> KindSummary {
        let (a, f, i) = (&self.alloc_ns, &self.free_ns, &self.irq_ns);
        KindSummary {
            kind: kind.to_owned(),
            allocs: self.allocs,
            frees: self.frees,
            errors: self.errors,
            bytes: self.bytes,
            alloc_p50_ns: a.p50(),
            alloc_p90_ns: a.percentile(900),
            alloc_p99_ns: a.p99(),
            alloc_max_ns: a.max(),
            free_p50_ns: f.p50(),
            free_p99_ns: f.p99(),
            irq_to_wake_p50_ns: i.p50(),
            irq_to_wake_p99_ns: i.p99(),
        }
    }
}

/// The summary of one kind, or of all (`kind` = `"all"`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KindSummary {
    /// The kind, or `"all"`.
    pub kind: String,
    /// Successful allocations.
    pub allocs: u64,
    /// Frees.
    pub frees: u64,
    /// Failed steps.
    pub errors: u64,
    /// Requested bytes allocated.
    pub bytes: u64,
    /// Allocation latency, median.
    pub alloc_p50_ns: Option<u64>,
    /// Allocation latency, 90th percentile.
    pub alloc_p90_ns: Option<u64>,
    /// Allocation latency, 99th percentile.
    pub alloc_p99_ns: Option<u64>,
    /// Allocation latency, slowest.
    pub alloc_max_ns: Option<u64>,
    /// Free latency, median.
    pub free_p50_ns: Option<u64>,
    /// Free latency, 99th percentile.
    pub free_p99_ns: Option<u64>,
    /// Interrupt-to-wake latency, median.
    pub irq_to_wake_p50_ns: Option<u64>,
    /// Interrupt-to-wake latency, 99th percentile.
    pub irq_to_wake_p99_ns: Option<u64>,
}

impl KindSummary {
    /// The row of the summary table, in [`LogReport::HEADERS`]'s order ("-" for none).
    pub(super) fn cells(&self) -> [String; 13] {
        let o = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        [
            self.kind.clone(),
            self.allocs.to_string(),
            self.frees.to_string(),
            self.errors.to_string(),
            self.bytes.to_string(),
            o(self.alloc_p50_ns),
            o(self.alloc_p90_ns),
            o(self.alloc_p99_ns),
            o(self.alloc_max_ns),
            o(self.free_p50_ns),
            o(self.free_p99_ns),
            o(self.irq_to_wake_p50_ns),
            o(self.irq_to_wake_p99_ns),
        ]
    }
}

/// A log, read and summarized.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LogReport {
    /// Lines read (blank lines not counted).
    pub lines: u64,
    /// Lines that are not a JSON object with an `event`.
    pub malformed: u64,
    /// Events this version does not summarize, by name.
    pub ignored: BTreeMap<String, u64>,
    /// One summary per kind seen, in [`Kind::ALL`] order, then `"all"`.
    pub kinds: Vec<KindSummary>,
    /// The allocations, for the size chart.
    #[serde(skip)]
    pub allocs: Vec<AllocPoint>,
    /// The presses, for the timeline.
    #[serde(skip)]
    pub presses: Vec<PressPoint>,
}

pub(super) fn kind_order(name: &str) -> usize {
    Kind::ALL
        .iter()
        .position(|k| k.name() == name)
        .unwrap_or(Kind::ALL.len())
}

impl LogReport {
    /// Reads the log at `path`.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read(path).map_err(|source| Error::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self::parse(&String::from_utf8_lossy(&text)))
    }

    /// Reads a log from standard input (`report -`).
    pub fn read_stdin() -> Result<Self> {
        use std::io::Read;
        let mut text = Vec::new();
        std::io::stdin()
            .lock()
            .read_to_end(&mut text)
            .map_err(|source| Error::Open {
                path: "standard input".into(),
                source,
            })?;
        Ok(Self::parse(&String::from_utf8_lossy(&text)))
    }

    /// Summarizes the lines of a log: kmemlabd's JSON lines, or `journalctl -o json`
    /// entries whose `MESSAGE` is one (mixed as they come). An entry whose `MESSAGE` is
    /// not text is malformed.
    pub fn parse(text: &str) -> Self {
        let mut lines = 0;
        let mut malformed = 0;
        let mut ignored: BTreeMap<String, u64> = BTreeMap::new();
        let mut per_kind: BTreeMap<String, Samples> = BTreeMap::new();
        let mut all = Samples::default();
        let mut allocs = Vec::new();
        let mut presses = Vec::new();
        let mut t0: Option<u64> = None;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            lines += 1;
            let message;
            let line = match journal::classify(line) {
                journal::Line::Plain => line,
                journal::Line::Message(m) => {
                    message = m;
                    message.trim()
                }
                journal::Line::Bad => {
                    malformed += 1;
                    continue;
                }
            };
            let v: Value = match serde_json::from_str(line) {
                Ok(v @ Value::Object(_)) => v,
                _ => {
                    malformed += 1;
                    continue;
                }
            };
            let Some(event) = v.get("event").and_then(Value::as_str) else {
                malformed += 1;
                continue;
            };
            let u = |k: &str| v.get(k).and_then(Value::as_u64);
            let ts = u("ts_ns");
            if let Some(ts) = ts {
                t0 = Some(t0.map_or(ts, |t| t.min(ts)));
            }
            let t_s = match (ts, t0) {
                (Some(ts), Some(t0)) => ts.saturating_sub(t0) as f64 / 1e9,
                _ => 0.0,
            };
            let kind = v
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_owned();
            let irq = u("irq_to_wake_ns");
            let s = per_kind.entry(kind.clone()).or_default();
            let (alloc_ns, free_ns) = match event {
                "alloc" => {
                    let (Some(size), Some(ns)) = (u("size"), u("alloc_ns")) else {
                        malformed += 1;
                        continue;
                    };
                    for s in [&mut *s, &mut all] {
                        s.allocs += 1;
                        s.bytes += size;
                        s.alloc_ns.record(ns);
                    }
                    allocs.push(AllocPoint {
                        seq: u("seq"),
                        t_s,
                        kind: kind.clone(),
                        size,
                        alloc_ns: ns,
                    });
                    (Some(ns), None)
                }
                "free" => {
                    let Some(ns) = u("free_ns") else {
                        malformed += 1;
                        continue;
                    };
                    for s in [&mut *s, &mut all] {
                        s.frees += 1;
                        s.free_ns.record(ns);
                    }
                    (None, Some(ns))
                }
                "error" => {
                    // A fatal error (no seq, no kind) counts in the overall row only.
                    if v.get("kind").is_some() {
                        s.errors += 1;
                    }
                    all.errors += 1;
                    (None, None)
                }
                "start" | "stop" => continue,
                other => {
                    *ignored.entry(other.to_owned()).or_default() += 1;
                    continue;
                }
            };
            if let Some(irq) = irq {
                s.irq_ns.record(irq);
                all.irq_ns.record(irq);
            }
            if let Some(seq) = u("seq") {
                presses.push(PressPoint {
                    seq,
                    t_s,
                    kind,
                    irq_to_wake_ns: irq,
                    alloc_ns,
                    free_ns,
                });
            }
        }
        per_kind.retain(|_, s| s.allocs + s.frees + s.errors > 0);
        let mut names: Vec<String> = per_kind.keys().cloned().collect();
        names.sort_by_key(|n| (kind_order(n), n.clone()));
        let mut kinds: Vec<KindSummary> = names
            .iter()
            .filter_map(|n| per_kind.get(n).map(|s| s.summary(n)))
            .collect();
        kinds.push(all.summary("all"));
        Self {
            lines,
            malformed,
            ignored,
            kinds,
            allocs,
            presses,
        }
    }

    /// The summary table, then a line on skipped and ignored lines.
    pub fn to_text(&self) -> String {
        let rows = self.kinds.iter().map(|k| k.cells().to_vec()).collect();
        let mut out = table(&Self::HEADERS, rows);
        out.push_str(&self.footer());
        out
    }

    pub(super) const HEADERS: [&'static str; 13] = [
        "KIND",
        "ALLOCS",
        "FREES",
        "ERRORS",
        "BYTES",
        "ALLOC_P50",
        "ALLOC_P90",
        "ALLOC_P99",
        "ALLOC_MAX",
        "FREE_P50",
        "FREE_P99",
        "IRQ_P50",
        "IRQ_P99",
    ];

    pub(super) fn footer(&self) -> String {
        let mut out = format!(
            "{} lines, {} malformed (skipped)",
            self.lines, self.malformed
        );
        if !self.ignored.is_empty() {
            let names: Vec<String> = self
                .ignored
                .iter()
                .map(|(k, n)| format!("{k} x{n}"))
                .collect();
            out.push_str(&format!(", not summarized: {}", names.join(", ")));
        }
        out.push_str("; latencies in ns\n");
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A log with every kind of line `report` meets, the chart tests' too.
    pub(crate) const LOG: &str = r#"{"event":"start","ts_ns":1000000000,"pid":81}
{"event":"alloc","ts_ns":1100000000,"seq":1,"irq_count":1,"missed":0,"irq_to_wake_ns":40000,"handle":1,"kind":"kmalloc","size":64,"alloc_ns":300}
{"event":"free","ts_ns":1200000000,"seq":2,"irq_count":2,"missed":0,"irq_to_wake_ns":50000,"handle":1,"kind":"kmalloc","size":64,"free_ns":100}
{"event":"alloc","ts_ns":1300000000,"seq":3,"irq_count":3,"missed":0,"irq_to_wake_ns":null,"handle":2,"kind":"vmalloc","size":4096,"alloc_ns":9000}
not json
{"no_event":1}
{"event":"bounce","ts_ns":1350000000}
{"event":"error","ts_ns":1400000000,"seq":4,"irq_count":4,"missed":0,"irq_to_wake_ns":45000,"op":"alloc","error":"ENOMEM","kind":"vmalloc","size":1}
{"event":"stop","ts_ns":1500000000,"irq_count":4,"reason":"SIGTERM"}
"#;

    #[test]
    fn percentiles_are_the_histograms_over_every_line() {
        // 100 allocations of 1..=100 ns: the histogram's nearest rank (90 is reported as
        // 89, the midpoint of 88..=91; 99 as 97), the same figures the daemon's stats give.
        let mut log = String::new();
        for v in 1..=100u64 {
            log.push_str(&format!(
                r#"{{"event":"alloc","ts_ns":{v},"seq":{v},"handle":{v},"kind":"kmalloc","size":8,"alloc_ns":{v}}}"#
            ));
            log.push('\n');
        }
        let r = LogReport::parse(&log);
        let k = &r.kinds[0];
        assert_eq!(
            (
                k.alloc_p50_ns,
                k.alloc_p90_ns,
                k.alloc_p99_ns,
                k.alloc_max_ns
            ),
            (Some(50), Some(89), Some(97), Some(100))
        );
        assert_eq!(k.free_p50_ns, None);
    }

    #[test]
    fn summarizes_per_kind_and_counts_what_it_skips() {
        let r = LogReport::parse(LOG);
        assert_eq!(r.lines, 9);
        assert_eq!(r.malformed, 2);
        assert_eq!(r.ignored.get("bounce"), Some(&1));
        let names: Vec<&str> = r.kinds.iter().map(|k| k.kind.as_str()).collect();
        assert_eq!(names, ["kmalloc", "vmalloc", "all"]);
        let km = &r.kinds[0];
        assert_eq!((km.allocs, km.frees, km.errors, km.bytes), (1, 1, 0, 64));
        assert_eq!(km.alloc_p99_ns, Some(300));
        assert_eq!(km.irq_to_wake_p50_ns, Some(40000));
        assert_eq!(km.irq_to_wake_p99_ns, Some(50000));
        let vm = &r.kinds[1];
        assert_eq!((vm.allocs, vm.errors), (1, 1));
        let all = &r.kinds[2];
        assert_eq!((all.allocs, all.frees, all.errors), (2, 1, 1));
        assert_eq!(all.alloc_max_ns, Some(9000));
        assert_eq!(r.presses.len(), 4);
        assert_eq!(r.allocs[1].t_s, 0.3);
        let text = r.to_text();
        assert!(text.starts_with("KIND"), "{text}");
        assert!(text.contains("2 malformed (skipped)"), "{text}");
        assert!(text.contains("bounce x1"), "{text}");
    }

    #[test]
    fn a_journal_export_summarizes_as_the_plain_log() {
        // journalctl -o json: MESSAGE as text, or as bytes; mixed with plain lines.
        let wrapped: String = LOG
            .lines()
            .enumerate()
            .map(|(i, l)| {
                let message = if i % 2 == 0 {
                    serde_json::json!(l)
                } else {
                    serde_json::json!(l.as_bytes())
                };
                let entry = serde_json::json!({
                    "MESSAGE": message, "PRIORITY": "6", "_PID": "81",
                    "SYSLOG_IDENTIFIER": "kmemlabd",
                });
                if i == 3 {
                    format!("{l}\n")
                } else {
                    format!("{entry}\n")
                }
            })
            .collect();
        assert_eq!(LogReport::parse(&wrapped), LogReport::parse(LOG));
        let bad = LogReport::parse("{\"MESSAGE\":[255,254]}\n");
        assert_eq!((bad.lines, bad.malformed), (1, 1));
    }
}
