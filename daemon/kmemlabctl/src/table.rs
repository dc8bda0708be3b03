//! The text of kmemlabctl's output: plain-text tables and the text form of each report.

use kmemlab::report::{
    AllocReport, BenchReport, FreeReport, InfoReport, StatsReport, TimingReport, TriggerReport,
};
use kmemlab::spec::{format_size, Kind};
use kmemlab::uapi::ABI_VERSION;

/// The text form of a report, as `kmemlabctl` prints it without `--json`.
pub trait ToText {
    /// The text, each line ending in `\n`.
    fn to_text(&self) -> String;
}

/// A plain-text table: a header row, then the rows, columns two spaces apart. Columns
/// whose cells are all numbers are right-aligned.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let cols = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    let mut numeric = vec![true; cols];
    for row in &rows {
        for (i, cell) in row.iter().enumerate().take(cols) {
            widths[i] = widths[i].max(cell.len());
            numeric[i] &= cell.parse::<u64>().is_ok();
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            let w = widths[i];
            if numeric[i] && !rows.is_empty() {
                s.push_str(&format!("{cell:>w$}"));
            } else if i + 1 == cols {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}"));
            }
        }
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(headers.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// The table of allocations `kmemlabctl alloc` and `list` print.
pub fn allocs(reports: &[AllocReport]) -> String {
    let na = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    // A hidden address says so; "-" is an address the allocation does not have.
    let addr = |v: &Option<String>, hidden: bool| {
        if hidden {
            "hidden".to_owned()
        } else {
            na(v)
        }
    };
    let rows = reports
        .iter()
        .map(|r| {
            vec![
                r.handle.to_string(),
                r.kind.clone(),
                r.size.to_string(),
                r.usable_size.to_string(),
                r.pages.to_string(),
                r.phys_segments.to_string(),
                yes_no(r.zeroed),
                r.alloc_ns.to_string(),
                if r.persist { "device" } else { "file" }.to_string(),
                addr(&r.vaddr, r.hidden),
                addr(&r.phys, r.phys_hidden),
                addr(&r.dma, r.phys_hidden && r.kind == "dma_coherent"),
                if r.gfp.is_empty() {
                    "-".into()
                } else {
                    r.gfp.join("|")
                },
            ]
        })
        .collect();
    table(
        &[
            "HANDLE", "KIND", "SIZE", "USABLE", "PAGES", "SEGS", "ZEROED", "ALLOC_NS", "OWNER",
            "VADDR", "PHYS", "DMA", "GFP",
        ],
        rows,
    )
}

impl ToText for InfoReport {
    /// Readable text, one `name: value` per line, each line ending in `\n`.
    fn to_text(&self) -> String {
        let mut rows: Vec<(String, String)> = vec![
            ("abi version".into(), self.abi_version.to_string()),
            ("page size".into(), self.page_size.to_string()),
            ("heap size".into(), self.heap_size.to_string()),
            ("kinds".into(), self.kinds.join(" ")),
            ("gfp flags".into(), self.gfp.join(" ")),
        ];
        for kind in &self.kinds {
            let max = self.max_size.get(kind).copied().unwrap_or(0);
            rows.push((
                format!("max size {kind}"),
                format!("{max} ({})", format_size(max)),
            ));
        }
        rows.push((
            "max outstanding bytes".into(),
            self.max_outstanding_bytes.to_string(),
        ));
        rows.push((
            "max outstanding count".into(),
            self.max_outstanding_count.to_string(),
        ));
        rows.push(("max bench iters".into(), self.max_bench_iters.to_string()));
        rows.push((
            "max trigger count".into(),
            self.max_trigger_count.to_string(),
        ));
        rows.push(("irq".into(), self.irq.to_string()));
        rows.push(("dma mask".into(), self.dma_mask.clone()));
        rows.push(("coherent dma mask".into(), self.coherent_dma_mask.clone()));
        rows.push((
            "privileges".into(),
            if self.privileges.is_empty() {
                "none".into()
            } else {
                self.privileges.join(" ")
            },
        ));
        let bytes = |v: Option<u64>| {
            v.map_or_else(
                || "unlimited".to_owned(),
                |b| format!("{b} ({})", format_size(b)),
            )
        };
        rows.push(("file max bytes".into(), bytes(self.file_max_bytes)));
        rows.push((
            "file max count".into(),
            self.file_max_count
                .map_or_else(|| "unlimited".to_owned(), |c| c.to_string()),
        ));
        rows.push(("atomic quota bytes".into(), bytes(self.atomic_quota_bytes)));
        rows.push(("bench max bytes".into(), bytes(self.bench_max_bytes)));
        if self.abi_version != ABI_VERSION {
            rows.push((
                "warning".into(),
                format!("this kmemlabctl speaks abi version {ABI_VERSION}"),
            ));
        }
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
        rows.iter()
            .map(|(k, v)| format!("{:<width$} {v}\n", format!("{k}:")))
            .collect()
    }
}

impl ToText for FreeReport {
    /// A one-row table.
    fn to_text(&self) -> String {
        frees(std::slice::from_ref(self))
    }
}

/// Frees as a table, a row each.
pub fn frees(reports: &[FreeReport]) -> String {
    table(
        &["HANDLE", "FREE_NS"],
        reports
            .iter()
            .map(|r| vec![r.handle.to_string(), r.free_ns.to_string()])
            .collect(),
    )
}

impl ToText for StatsReport {
    /// A table with one row per kind (in ABI order), then the event count.
    fn to_text(&self) -> String {
        let rows = Kind::ALL
            .iter()
            .filter_map(|k| self.kinds.get(k.name()).map(|c| (k, c)))
            .map(|(k, c)| {
                vec![
                    k.name().to_string(),
                    c.live_count.to_string(),
                    c.live_bytes.to_string(),
                    c.allocs.to_string(),
                    c.frees.to_string(),
                    c.failures.to_string(),
                ]
            })
            .collect();
        let mut text = table(
            &["KIND", "LIVE", "LIVE_BYTES", "ALLOCS", "FREES", "FAILURES"],
            rows,
        );
        text.push_str(&format!("events: {}\n", self.events));
        text
    }
}

impl ToText for BenchReport {
    /// A title line and a table with a row per side.
    fn to_text(&self) -> String {
        let row = |side: &str, t: &TimingReport| {
            vec![
                side.to_string(),
                t.min_ns.to_string(),
                t.p50_ns.to_string(),
                t.p99_ns.to_string(),
                t.max_ns.to_string(),
                t.mean_ns.to_string(),
                t.stddev_ns.to_string(),
            ]
        };
        format!(
            "{} {} bytes {}, {} iterations (ns, in the kernel)\n{}",
            self.kind,
            self.size,
            self.gfp.join("|"),
            self.iters,
            table(
                &["", "MIN", "P50", "P99", "MAX", "MEAN", "STDDEV"],
                vec![row("alloc", &self.alloc), row("free", &self.free)],
            )
        )
    }
}

impl ToText for TriggerReport {
    /// One sentence.
    fn to_text(&self) -> String {
        format!(
            "raised {} event{}; event count now {}\n",
            self.count,
            if self.count == 1 { "" } else { "s" },
            self.events
        )
    }
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

#[cfg(test)]
mod tests {
    use kmemlab::device::Device;
    use kmemlab::report::{StatsReport, TriggerReport};
    use kmemlab::spec::Flags;
    use kmemlab::uapi::{self, Info};
    use kmemlab::MockDevice;

    use super::*;

    #[test]
    fn info_text() {
        let report = InfoReport::from(&MockDevice::new().info().unwrap());
        let text = report.to_text();
        for row in [
            "dma mask:              0xffffffff\n",
            "coherent dma mask:     0xffffffff\n",
            "privileges:            admin kaddr phys\n",
            "file max bytes:        unlimited\n",
            "file max count:        unlimited\n",
            "atomic quota bytes:    65536 (64K)\n",
            "bench max bytes:       67108864 (64M)\n",
        ] {
            assert!(text.contains(row), "{row:?} in\n{text}");
        }
        assert!(text.contains(&format!("abi version:           {ABI_VERSION}\n")));
        assert!(
            text.contains("max size vmalloc:      67108864 (64M)\n"),
            "{text}"
        );
        assert!(text.contains("kinds:                 kmalloc vmalloc dma_coherent"));
        assert!(!text.contains("warning"));
        let other = InfoReport {
            abi_version: 9,
            ..report
        };
        assert!(other.to_text().contains("warning:"));
    }

    #[test]
    fn info_text_of_an_unprivileged_opener() {
        let info = Info {
            dma_mask: u64::MAX,
            coherent_dma_mask: (1 << 40) - 1,
            atomic_quota_bytes: u64::MAX,
            bench_max_bytes: u64::MAX - 1,
            privileges: uapi::PRIV_KADDR,
            ..MockDevice::new().hiding_addresses().info().unwrap()
        };
        let report = InfoReport::from(&info);
        let text = report.to_text();
        for row in [
            "privileges:            kaddr\n",
            "file max bytes:        16777216 (16M)\n",
            "file max count:        1024\n",
            "atomic quota bytes:    unlimited\n",
        ] {
            assert!(text.contains(row), "{row:?} in\n{text}");
        }
        let none = InfoReport::from(&Info {
            privileges: 0,
            ..info
        });
        assert!(none.to_text().contains("privileges:            none\n"));
    }

    #[test]
    fn alloc_table_says_which_addresses_are_hidden() {
        // CAP_SYS_ADMIN with kptr_restrict 2: phys and dma only.
        let dev = MockDevice::new().with_privileges(uapi::PRIV_ADMIN | uapi::PRIV_PHYS);
        let r = AllocReport::from(&dev.alloc(Kind::DmaCoherent, 1, Flags::GFP_KERNEL).unwrap());
        // The table says which addresses are hidden ("-": none to show).
        let k = AllocReport::from(
            &MockDevice::new()
                .with_privileges(uapi::PRIV_KADDR)
                .alloc(Kind::Kmalloc, 1, Flags::GFP_KERNEL)
                .unwrap(),
        );
        let text = allocs(&[r, k]);
        let rows: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        let col = |name: &str| rows[0].iter().position(|h| *h == name).unwrap();
        let cells =
            |row: usize| ["VADDR", "PHYS", "DMA"].map(|name| rows[row][col(name)].to_owned());
        assert_eq!(cells(1), ["hidden", "0x40100000", "0x40100000"]);
        assert_eq!(cells(2), ["0xffff0000c0100000", "hidden", "-"]);
    }

    #[test]
    fn alloc_table() {
        let dev = MockDevice::new();
        let reports: Vec<AllocReport> = [(Kind::Kmalloc, 1), (Kind::Vmalloc, 4 << 20)]
            .iter()
            .map(|(k, s)| AllocReport::from(&dev.alloc(*k, *s, Flags::GFP_KERNEL).unwrap()))
            .collect();
        let text = allocs(&reports);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines,
            [
                "HANDLE  KIND        SIZE   USABLE  PAGES  SEGS  ZEROED  ALLOC_NS  OWNER  VADDR               PHYS        DMA  GFP",
                "     1  kmalloc        1        8      1     1  no           101  file   0xffff0000c0100000  0x40100000  -    GFP_KERNEL",
                "     2  vmalloc  4194304  4194304   1024  1024  no           102  file   0xffff800080200000  0x40200000  -    GFP_KERNEL",
            ]
        );
    }

    #[test]
    fn free_stats_bench_trigger_text() {
        let dev = MockDevice::new();
        let a = dev.alloc(Kind::Pages, 4096, Flags::GFP_KERNEL).unwrap();
        let f = dev.free(a.handle).unwrap();
        assert_eq!(
            FreeReport::from(&f).to_text(),
            "HANDLE  FREE_NS\n     1       51\n"
        );

        let s = StatsReport::from(&dev.stats().unwrap());
        let text = s.to_text();
        assert!(text.starts_with("KIND          LIVE  LIVE_BYTES  ALLOCS  FREES  FAILURES\n"));
        assert!(text.contains("\npages            0           0       1      1         0\n"));
        assert!(text.ends_with("events: 0\n"));

        let b = dev
            .bench(Kind::Vmalloc, 4096, Flags::GFP_KERNEL, 1000)
            .unwrap();
        let b = BenchReport::from(&b);
        assert!(b
            .to_text()
            .starts_with("vmalloc 4096 bytes GFP_KERNEL, 1000 iterations (ns, in the kernel)\n"));

        let t = TriggerReport::from(&dev.trigger(3).unwrap());
        assert_eq!(t.to_text(), "raised 3 events; event count now 3\n");
    }

    #[test]
    fn tables_align() {
        let t = table(
            &["A", "NAME", "N"],
            vec![
                vec!["x".into(), "long name".into(), "5".into()],
                vec!["yy".into(), "n".into(), "100".into()],
            ],
        );
        assert_eq!(
            t,
            "A   NAME         N\nx   long name    5\nyy  n          100\n"
        );
        assert_eq!(table(&["A", "B"], vec![]), "A  B\n");
    }
}
