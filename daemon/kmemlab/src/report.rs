//! What the module reports, in the shapes `kmemlabctl` and `kmemlabd` print: JSON
//! objects (serde); their text is `kmemlabctl`'s (`kmemlabctl::table`). The uapi crate is `no_std` without serde, so
//! each ABI struct has a report type here.

use kmemlab_uapi as uapi;
use kmemlab_uapi::{Alloc, Bench, Free, Info, Stats, Timing, Trigger};
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::error::{Error, Result};
use crate::spec::{hex, Flags, Kind};

/// One JSON object on one line (no trailing newline).
pub fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|source| Error::Json { source })
}

/// Values per kind, serialized as a JSON object whose keys are the kind names in ABI
/// order (kmalloc, vmalloc, dma_coherent, kvmalloc, pages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PerKind<T>(pub Vec<(String, T)>);

impl<T> PerKind<T> {
    /// The value for kind `name`.
    pub fn get(&self, name: &str) -> Option<&T> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
}

impl<T: Serialize> Serialize for PerKind<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// [`Info`] as `kmemlabctl info` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InfoReport {
    /// The module's ABI version.
    pub abi_version: u32,
    /// The kernel's page size in bytes.
    pub page_size: u32,
    /// Size of the heap (UIO map 0) in bytes (0: none).
    pub heap_size: u64,
    /// The kinds the module supports, by name.
    pub kinds: Vec<String>,
    /// The gfp flags the module accepts, by name.
    pub gfp: Vec<&'static str>,
    /// Largest single allocation per supported kind, in bytes.
    pub max_size: PerKind<u64>,
    /// Most bytes outstanding at once.
    pub max_outstanding_bytes: u64,
    /// Most allocations outstanding at once.
    pub max_outstanding_count: u32,
    /// The Linux irq number the UIO device uses (0: not bound).
    pub irq: u32,
    /// Most iterations one BENCH may run.
    pub max_bench_iters: u32,
    /// Most events one TRIGGER may raise.
    pub max_trigger_count: u32,
    /// The device's streaming DMA mask, `0x` hex.
    pub dma_mask: String,
    /// The device's coherent DMA mask, `0x` hex.
    pub coherent_dma_mask: String,
    /// What this opener may do and see: `admin`, `kaddr`, `phys`.
    pub privileges: Vec<&'static str>,
    /// Most bytes this opener may hold at once; null: no per-opener limit.
    pub file_max_bytes: Option<u64>,
    /// Most allocations this opener may hold at once; null: no per-opener limit.
    pub file_max_count: Option<u32>,
    /// Most bytes of live GFP_ATOMIC/GFP_NOWAIT allocations without `admin`; null: no
    /// limit.
    pub atomic_quota_bytes: Option<u64>,
    /// Most bytes one BENCH may allocate in all without `admin`; null: no limit.
    pub bench_max_bytes: Option<u64>,
}

/// The names of the `PRIV_*` bits set in `privileges`, in bit order (unknown bits are
/// left out).
pub fn privilege_names(privileges: u32) -> Vec<&'static str> {
    [
        (uapi::PRIV_ADMIN, "admin"),
        (uapi::PRIV_KADDR, "kaddr"),
        (uapi::PRIV_PHYS, "phys"),
    ]
    .iter()
    .filter(|(bit, _)| privileges & bit != 0)
    .map(|(_, name)| *name)
    .collect()
}

/// `None` for the all-ones "unlimited" value of a limit.
fn limit<T: PartialEq>(v: T, unlimited: T) -> Option<T> {
    (v != unlimited).then_some(v)
}

impl From<&Info> for InfoReport {
    fn from(i: &Info) -> Self {
        let kinds: Vec<u32> = (0..uapi::MAX_KINDS as u32)
            .filter(|k| i.kinds & (1 << k) != 0)
            .collect();
        Self {
            abi_version: i.abi_version,
            page_size: i.page_size,
            heap_size: i.heap_size,
            kinds: kinds.iter().map(|k| Kind::name_of(*k)).collect(),
            gfp: Flags(i.flags).gfp_names(),
            max_size: PerKind(
                kinds
                    .iter()
                    .map(|k| (Kind::name_of(*k), i.max_size[*k as usize]))
                    .collect(),
            ),
            max_outstanding_bytes: i.max_outstanding_bytes,
            max_outstanding_count: i.max_outstanding_count,
            irq: i.irq,
            max_bench_iters: i.max_bench_iters,
            max_trigger_count: i.max_trigger_count,
            dma_mask: hex(i.dma_mask),
            coherent_dma_mask: hex(i.coherent_dma_mask),
            privileges: privilege_names(i.privileges),
            file_max_bytes: limit(i.file_max_bytes, u64::MAX),
            file_max_count: limit(i.file_max_count, u32::MAX),
            atomic_quota_bytes: limit(i.atomic_quota_bytes, u64::MAX),
            bench_max_bytes: limit(i.bench_max_bytes, u64::MAX),
        }
    }
}

impl InfoReport {
    /// One JSON object on one line (no trailing newline).
    pub fn to_json(&self) -> Result<String> {
        to_json(self)
    }
}

/// One allocation (ALLOC's report or a LIST entry). Addresses are `0x` hex strings, or
/// null when hidden (`vaddr`: by the `kptr_restrict` rule, `hidden`; `phys` and `dma`: no
/// CAP_SYS_ADMIN, `phys_hidden`) or, for `dma`, when the kind has none.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AllocReport {
    /// Never reused while the module is loaded.
    pub handle: u64,
    /// `kmalloc`, `vmalloc`, `dma_coherent`, `kvmalloc` or `pages`.
    pub kind: String,
    /// Requested bytes.
    pub size: u64,
    /// Bytes really usable (ksize, or whole pages).
    pub usable_size: u64,
    /// The gfp flags asked for, by name.
    pub gfp: Vec<&'static str>,
    /// Kernel virtual address of the first byte.
    pub vaddr: Option<String>,
    /// Physical address of the first byte.
    pub phys: Option<String>,
    /// DMA address (dma_coherent).
    pub dma: Option<String>,
    /// Pages spanned.
    pub pages: u32,
    /// Physically contiguous runs of those pages.
    pub phys_segments: u32,
    /// Whether the memory was zeroed.
    pub zeroed: bool,
    /// Time in the allocator call, ns.
    pub alloc_ns: u64,
    /// The kernel virtual address was hidden from this opener (`kptr_restrict`).
    pub hidden: bool,
    /// The physical and DMA addresses were hidden from this opener (no CAP_SYS_ADMIN).
    pub phys_hidden: bool,
    /// Device-owned (`--persist`): survives the file that allocated it.
    pub persist: bool,
}

impl From<&Alloc> for AllocReport {
    fn from(a: &Alloc) -> Self {
        let hidden = a.result & uapi::RESULT_HIDDEN != 0;
        let phys_hidden = a.result & uapi::RESULT_PHYS_HIDDEN != 0;
        let addr = |v: u64, shown: bool| shown.then(|| hex(v));
        Self {
            handle: a.handle,
            kind: Kind::name_of(a.kind),
            size: a.size,
            usable_size: a.usable_size,
            gfp: Flags(a.flags).gfp_names(),
            vaddr: addr(a.vaddr, !hidden),
            phys: addr(a.phys, !phys_hidden),
            dma: addr(a.dma, a.result & uapi::RESULT_DMA != 0 && !phys_hidden),
            pages: a.pages,
            phys_segments: a.phys_segments,
            zeroed: a.result & uapi::RESULT_ZEROED != 0,
            alloc_ns: a.alloc_ns,
            hidden,
            phys_hidden,
            persist: a.result & uapi::RESULT_PERSIST != 0,
        }
    }
}

/// A FREE's report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FreeReport {
    /// The handle freed.
    pub handle: u64,
    /// Time in the free call, ns.
    pub free_ns: u64,
}

impl From<&Free> for FreeReport {
    fn from(f: &Free) -> Self {
        Self {
            handle: f.handle,
            free_ns: f.free_ns,
        }
    }
}

/// The counters of one kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct KindStatsReport {
    /// Live allocations.
    pub live_count: u64,
    /// Requested bytes of the live allocations.
    pub live_bytes: u64,
    /// Successful allocations since load.
    pub allocs: u64,
    /// Frees since load.
    pub frees: u64,
    /// Failed allocations since load.
    pub failures: u64,
}

/// STATS: one object per kind, keyed by kind name, and the UIO event count.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatsReport {
    /// Counters per kind this version knows.
    pub kinds: PerKind<KindStatsReport>,
    /// UIO events raised since load.
    pub events: u64,
}

impl From<&Stats> for StatsReport {
    fn from(s: &Stats) -> Self {
        Self {
            kinds: PerKind(
                Kind::ALL
                    .iter()
                    .map(|k| {
                        let c = s.kinds[k.abi() as usize];
                        (
                            k.name().to_owned(),
                            KindStatsReport {
                                live_count: c.live_count,
                                live_bytes: c.live_bytes,
                                allocs: c.allocs,
                                frees: c.frees,
                                failures: c.failures,
                            },
                        )
                    })
                    .collect(),
            ),
            events: s.events,
        }
    }
}

/// Latency figures of one side of a BENCH run, ns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TimingReport {
    /// Fastest.
    pub min_ns: u64,
    /// Median.
    pub p50_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// Slowest.
    pub max_ns: u64,
    /// Mean.
    pub mean_ns: u64,
    /// Standard deviation.
    pub stddev_ns: u64,
}

impl From<&Timing> for TimingReport {
    fn from(t: &Timing) -> Self {
        Self {
            min_ns: t.min_ns,
            p50_ns: t.p50_ns,
            p99_ns: t.p99_ns,
            max_ns: t.max_ns,
            mean_ns: t.mean_ns,
            stddev_ns: t.stddev_ns,
        }
    }
}

/// BENCH: what ran and how long each side took.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BenchReport {
    /// The kind.
    pub kind: String,
    /// Bytes per allocation.
    pub size: u64,
    /// The gfp flags, by name.
    pub gfp: Vec<&'static str>,
    /// Alloc+free pairs run.
    pub iters: u32,
    /// Allocation latency.
    pub alloc: TimingReport,
    /// Free latency.
    pub free: TimingReport,
}

impl From<&Bench> for BenchReport {
    fn from(b: &Bench) -> Self {
        Self {
            kind: Kind::name_of(b.kind),
            size: b.size,
            gfp: Flags(b.flags).gfp_names(),
            iters: b.iters,
            alloc: (&b.alloc).into(),
            free: (&b.free).into(),
        }
    }
}

/// TRIGGER: events raised and the UIO count after the last.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TriggerReport {
    /// Events raised.
    pub count: u32,
    /// The UIO event count after the last one.
    pub events: u64,
}

impl From<&Trigger> for TriggerReport {
    fn from(t: &Trigger) -> Self {
        Self {
            count: t.count,
            events: t.events,
        }
    }
}

/// A failure as `kmemlabctl --json` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ErrorReport {
    /// The errno name, e.g. `ENOENT`.
    pub error: String,
    /// The message with its causes.
    pub message: String,
}

impl From<&Error> for ErrorReport {
    fn from(e: &Error) -> Self {
        Self {
            error: e.errno_name(),
            message: e.report(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use kmemlab_uapi::ABI_VERSION;

    use super::*;
    use crate::device::mock::MockDevice;
    use crate::device::Device;

    fn value<T: Serialize>(t: &T) -> Value {
        let line = to_json(t).unwrap();
        assert!(!line.contains('\n'));
        serde_json::from_str(&line).unwrap()
    }

    #[test]
    fn info_json() {
        let info = MockDevice::new().info().unwrap();
        let report = InfoReport::from(&info);
        assert_eq!(
            value(&report),
            json!({
                "abi_version": ABI_VERSION,
                "page_size": 4096,
                "heap_size": 1 << 20,
                "kinds": ["kmalloc", "vmalloc", "dma_coherent", "kvmalloc", "pages"],
                "gfp": ["GFP_KERNEL", "GFP_ATOMIC", "GFP_NOWAIT", "__GFP_ZERO",
                        "__GFP_NORETRY", "__GFP_NOWARN"],
                "max_size": {"kmalloc": 4 << 20, "vmalloc": 64 << 20,
                             "dma_coherent": 4 << 20, "kvmalloc": 64 << 20,
                             "pages": 4 << 20},
                "max_outstanding_bytes": 64 << 20,
                "max_outstanding_count": 65536,
                "irq": 42,
                "max_bench_iters": 1_000_000,
                "max_trigger_count": 100_000,
                "dma_mask": "0xffffffff",
                "coherent_dma_mask": "0xffffffff",
                "privileges": ["admin", "kaddr", "phys"],
                "file_max_bytes": null,
                "file_max_count": null,
                "atomic_quota_bytes": 65536,
                "bench_max_bytes": 64 << 20,
            })
        );
    }

    #[test]
    fn info_of_an_unprivileged_opener() {
        let info = Info {
            dma_mask: u64::MAX,
            coherent_dma_mask: (1 << 40) - 1,
            atomic_quota_bytes: u64::MAX,
            bench_max_bytes: u64::MAX - 1,
            // Unknown bits are left out.
            privileges: uapi::PRIV_KADDR | 1 << 9,
            ..MockDevice::new().hiding_addresses().info().unwrap()
        };
        let report = InfoReport::from(&info);
        let v = value(&report);
        assert_eq!(v["dma_mask"], "0xffffffffffffffff");
        assert_eq!(v["coherent_dma_mask"], "0xffffffffff");
        assert_eq!(v["privileges"], json!(["kaddr"]));
        assert_eq!(v["file_max_bytes"], 16 << 20);
        assert_eq!(v["file_max_count"], 1024);
        assert_eq!(v["atomic_quota_bytes"], Value::Null);
        assert_eq!(v["bench_max_bytes"], u64::MAX - 1);
        let none = InfoReport::from(&Info {
            privileges: 0,
            ..info
        });
        assert_eq!(value(&none)["privileges"], json!([]));
    }

    #[test]
    fn alloc_json_shape() {
        let dev = MockDevice::new();
        let a = dev
            .alloc(
                Kind::Kmalloc,
                1,
                Flags::parse_gfp("GFP_ATOMIC|__GFP_ZERO").unwrap(),
            )
            .unwrap();
        let v = value(&AllocReport::from(&a));
        assert_eq!(
            v,
            json!({
                "handle": 1, "kind": "kmalloc", "size": 1, "usable_size": 8,
                "gfp": ["GFP_ATOMIC", "__GFP_ZERO"],
                "vaddr": "0xffff0000c0100000", "phys": "0x40100000", "dma": null,
                "pages": 1, "phys_segments": 1, "zeroed": true, "alloc_ns": 101,
                "hidden": false, "phys_hidden": false, "persist": false,
            })
        );
        let d = dev
            .alloc(
                Kind::DmaCoherent,
                1024,
                Flags::GFP_KERNEL.with(Flags::PERSIST),
            )
            .unwrap();
        let v = value(&AllocReport::from(&d));
        assert_eq!(v["kind"], "dma_coherent");
        assert_eq!(v["dma"], "0x40200000");
        assert_eq!(v["gfp"], json!(["GFP_KERNEL"]));
        assert_eq!(v["persist"], true);
        assert_eq!(v["zeroed"], true);
    }

    #[test]
    fn hidden_addresses_are_null() {
        let dev = MockDevice::new().hiding_addresses();
        let d = dev.alloc(Kind::DmaCoherent, 1, Flags::GFP_KERNEL).unwrap();
        let v = value(&AllocReport::from(&d));
        assert_eq!(
            (&v["hidden"], &v["phys_hidden"]),
            (&json!(true), &json!(true))
        );
        assert_eq!(
            (&v["vaddr"], &v["phys"], &v["dma"]),
            (&Value::Null, &Value::Null, &Value::Null)
        );
        // CAP_SYSLOG without CAP_SYS_ADMIN: vaddr only.
        let dev = MockDevice::new().with_privileges(uapi::PRIV_KADDR);
        let d = dev.alloc(Kind::DmaCoherent, 1, Flags::GFP_KERNEL).unwrap();
        let v = value(&AllocReport::from(&d));
        assert_eq!(
            (&v["hidden"], &v["phys_hidden"]),
            (&json!(false), &json!(true))
        );
        assert_eq!(v["vaddr"], "0xffff0000d0100000");
        assert_eq!((&v["phys"], &v["dma"]), (&Value::Null, &Value::Null));
        // CAP_SYS_ADMIN with kptr_restrict 2: phys and dma only.
        let dev = MockDevice::new().with_privileges(uapi::PRIV_ADMIN | uapi::PRIV_PHYS);
        let d = dev.alloc(Kind::DmaCoherent, 1, Flags::GFP_KERNEL).unwrap();
        let r = AllocReport::from(&d);
        let v = value(&r);
        assert_eq!(
            (&v["hidden"], &v["phys_hidden"]),
            (&json!(true), &json!(false))
        );
        assert_eq!(v["vaddr"], Value::Null);
        assert_eq!(
            (&v["phys"], &v["dma"]),
            (&json!("0x40100000"), &json!("0x40100000"))
        );
    }

    #[test]
    fn free_stats_bench_trigger_shapes() {
        let dev = MockDevice::new();
        let a = dev.alloc(Kind::Pages, 4096, Flags::GFP_KERNEL).unwrap();
        let f = dev.free(a.handle).unwrap();
        assert_eq!(
            value(&FreeReport::from(&f)),
            json!({"handle": 1, "free_ns": 51})
        );

        let s = StatsReport::from(&dev.stats().unwrap());
        let v = value(&s);
        assert_eq!(v["events"], 0);
        assert_eq!(
            v["kinds"]["pages"],
            json!({"live_count": 0, "live_bytes": 0, "allocs": 1, "frees": 1, "failures": 0})
        );
        assert_eq!(v["kinds"].as_object().unwrap().len(), 5);
        // Kinds in ABI order, not sorted by name.
        let line = to_json(&s).unwrap();
        assert!(
            line.starts_with("{\"kinds\":{\"kmalloc\":{\"live_count\":0,"),
            "{line}"
        );
        assert!(line.find("\"vmalloc\"").unwrap() < line.find("\"dma_coherent\"").unwrap());

        let b = dev
            .bench(Kind::Vmalloc, 4096, Flags::GFP_KERNEL, 1000)
            .unwrap();
        let b = BenchReport::from(&b);
        assert_eq!(
            value(&b),
            json!({
                "kind": "vmalloc", "size": 4096, "gfp": ["GFP_KERNEL"], "iters": 1000,
                "alloc": {"min_ns": 100, "p50_ns": 110, "p99_ns": 300, "max_ns": 1000,
                          "mean_ns": 120, "stddev_ns": 7},
                "free": {"min_ns": 50, "p50_ns": 60, "p99_ns": 150, "max_ns": 500,
                         "mean_ns": 70, "stddev_ns": 7},
            })
        );

        let t = TriggerReport::from(&dev.trigger(3).unwrap());
        assert_eq!(value(&t), json!({"count": 3, "events": 3}));
    }

    #[test]
    fn error_shape() {
        let e = Error::Ioctl {
            cmd: "KMEMLAB_FREE",
            source: nix::errno::Errno::ENOENT,
        };
        assert_eq!(
            value(&ErrorReport::from(&e)),
            json!({"error": "ENOENT", "message": "ioctl KMEMLAB_FREE failed: ENOENT: No such file or directory"})
        );
    }
}
