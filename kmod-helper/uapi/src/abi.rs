// SPDX-License-Identifier: GPL-2.0
//! kmemlab ioctl ABI v2. This file is compiled into the kernel module and into the
//! `kmemlab-uapi` crate, so it uses `core` only.
//!
//! Every struct is `#[repr(C)]`, has fixed-width fields only, explicit padding (`_pad*`,
//! must be zero) and reserved space (must be zero on input, written as zero). Commands use
//! the generic Linux `_IOC` encoding with type [`IOC_MAGIC`]; the kernel checks that the
//! size encoded in the command equals the struct's size (`EINVAL` otherwise) and answers
//! unknown commands with `ENOTTY`.

/// Version of this ABI; bumped on any incompatible change.
///
/// v2 (same struct sizes as v1): `RESULT_HIDDEN` covers the kernel virtual address only and
/// [`RESULT_PHYS_HIDDEN`] the physical and DMA addresses; [`Info`] reports the device's DMA
/// masks, the opener's privileges and its quotas; `Trigger::events` is the sequence number of
/// the call's own last event; ring records are exactly one per UIO event; the heap is ordinary
/// kernel pages, not DMA memory.
///
/// v3 (same struct sizes as v2): [`Bench::hist_addr`] (v2's first reserved word) asks BENCH to
/// copy out its latency histograms, so that runs can be merged and a percentile taken over all
/// their samples; the histogram's layout and percentile rule are defined here
/// ([`hist_bucket`], [`hist_percentile`]) for the module and userspace alike.
pub const ABI_VERSION: u32 = 3;

/// The ioctl type byte ("magic"); 0xE7 is unassigned in ioctl-number.rst.
pub const IOC_MAGIC: u32 = 0xE7;

const IOC_NRBITS: u32 = 8;
const IOC_TYPEBITS: u32 = 8;
const IOC_SIZEBITS: u32 = 14;
const IOC_NRSHIFT: u32 = 0;
const IOC_TYPESHIFT: u32 = IOC_NRSHIFT + IOC_NRBITS;
const IOC_SIZESHIFT: u32 = IOC_TYPESHIFT + IOC_TYPEBITS;
const IOC_DIRSHIFT: u32 = IOC_SIZESHIFT + IOC_SIZEBITS;

/// `_IOC_NONE`: no argument.
pub const IOC_NONE: u32 = 0;
/// `_IOC_WRITE`: userspace writes the argument.
pub const IOC_WRITE: u32 = 1;
/// `_IOC_READ`: userspace reads the argument.
pub const IOC_READ: u32 = 2;

/// The generic Linux `_IOC()` encoding (arm64, x86, riscv).
pub const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
    (dir << IOC_DIRSHIFT)
        | (IOC_MAGIC << IOC_TYPESHIFT)
        | (nr << IOC_NRSHIFT)
        | ((size as u32) << IOC_SIZESHIFT)
}

/// `_IOC_NR()`.
pub const fn ioc_nr(cmd: u32) -> u32 {
    (cmd >> IOC_NRSHIFT) & ((1 << IOC_NRBITS) - 1)
}

/// `_IOC_TYPE()`.
pub const fn ioc_type(cmd: u32) -> u32 {
    (cmd >> IOC_TYPESHIFT) & ((1 << IOC_TYPEBITS) - 1)
}

/// `_IOC_SIZE()`.
pub const fn ioc_size(cmd: u32) -> usize {
    ((cmd >> IOC_SIZESHIFT) & ((1 << IOC_SIZEBITS) - 1)) as usize
}

/// `_IOC_DIR()`.
pub const fn ioc_dir(cmd: u32) -> u32 {
    cmd >> IOC_DIRSHIFT
}

// ---------------------------------------------------------------------------------------
// Allocation kinds.

/// `kmalloc()` / `kfree()`.
pub const KIND_KMALLOC: u32 = 0;
/// `vmalloc()` / `vfree()`.
pub const KIND_VMALLOC: u32 = 1;
/// `dma_alloc_coherent()` / `dma_free_coherent()` against the device-tree device.
pub const KIND_DMA_COHERENT: u32 = 2;
/// `kvmalloc()` / `kvfree()`.
pub const KIND_KVMALLOC: u32 = 3;
/// `alloc_pages()` / `__free_pages()` of the order that covers the size.
pub const KIND_PAGES: u32 = 4;
/// Number of kinds this version defines.
pub const KIND_COUNT: u32 = 5;
/// Largest number of kinds the ABI has room for (arrays indexed by kind).
pub const MAX_KINDS: usize = 8;

// ---------------------------------------------------------------------------------------
// Allocation flags (ABI bits, not the kernel's gfp_t bits, which are not a stable ABI).

/// `GFP_KERNEL`: may sleep. Exactly one of the three base flags must be given.
pub const FLAG_GFP_KERNEL: u32 = 1 << 0;
/// `GFP_ATOMIC`: does not sleep, may use reserves.
pub const FLAG_GFP_ATOMIC: u32 = 1 << 1;
/// `GFP_NOWAIT`: does not sleep, no reserves.
pub const FLAG_GFP_NOWAIT: u32 = 1 << 2;
/// `__GFP_ZERO`: return zeroed memory.
pub const FLAG_ZERO: u32 = 1 << 3;
/// `__GFP_NORETRY`: give up early instead of retrying hard.
pub const FLAG_NORETRY: u32 = 1 << 4;
/// `__GFP_NOWARN`: no allocation-failure warning in the kernel log.
pub const FLAG_NOWARN: u32 = 1 << 5;
/// `GFP_DMA`: from ZONE_DMA. Only kmalloc and pages take it, and only on a kernel with
/// `CONFIG_ZONE_DMA` (`Info::flags` says); elsewhere `EINVAL`.
pub const FLAG_DMA: u32 = 1 << 6;
/// `GFP_DMA32`: from ZONE_DMA32. Only pages takes it, and only on a kernel with
/// `CONFIG_ZONE_DMA32` (`Info::flags` says); elsewhere `EINVAL`.
pub const FLAG_DMA32: u32 = 1 << 7;
/// Not a gfp flag: the allocation belongs to the device instead of the open file.
/// It is visible to LIST and FREE from any opener and freed at module unload.
/// Needs [`PRIV_ADMIN`] (`EPERM` otherwise).
pub const FLAG_PERSIST: u32 = 1 << 16;
/// The three base flags, of which exactly one is required.
pub const FLAG_BASE_MASK: u32 = FLAG_GFP_KERNEL | FLAG_GFP_ATOMIC | FLAG_GFP_NOWAIT;
/// Every flag this version defines.
pub const FLAG_ALL: u32 =
    FLAG_BASE_MASK | FLAG_ZERO | FLAG_NORETRY | FLAG_NOWARN | FLAG_DMA | FLAG_DMA32 | FLAG_PERSIST;

// ---------------------------------------------------------------------------------------
// Result bits of an allocation report (`Alloc::result`).

/// The memory was zeroed (by `__GFP_ZERO`, or by an allocator that always zeroes).
pub const RESULT_ZEROED: u32 = 1 << 0;
/// The kernel virtual address is hidden (`vaddr` is 0): the kernel's `kptr_restrict` rule
/// does not let this opener see kernel addresses (see [`PRIV_KADDR`]).
pub const RESULT_HIDDEN: u32 = 1 << 1;
/// `dma` holds a DMA address (dma_coherent kind).
pub const RESULT_DMA: u32 = 1 << 2;
/// The allocation is device-owned (`FLAG_PERSIST`).
pub const RESULT_PERSIST: u32 = 1 << 3;
/// The allocation belongs to the file this report was read through.
pub const RESULT_OWN: u32 = 1 << 4;
/// The physical and DMA addresses are hidden (`phys` and `dma` are 0): the opener lacks
/// CAP_SYS_ADMIN (see [`PRIV_PHYS`]).
pub const RESULT_PHYS_HIDDEN: u32 = 1 << 5;

// ---------------------------------------------------------------------------------------
// What an opener may do and see (`Info::privileges`), decided once, when the file is opened,
// on the opener's credentials.

/// The opener had CAP_SYS_ADMIN: `FLAG_PERSIST`, atomic allocations beyond
/// `Info::atomic_quota_bytes`, BENCH beyond `Info::bench_max_bytes`, and no per-opener quota.
pub const PRIV_ADMIN: u32 = 1 << 0;
/// Kernel virtual addresses are shown to this opener: the rule of `kptr_restrict` for
/// `/proc/kallsyms` (0: CAP_SYSLOG; 1: CAP_SYSLOG; 2: nobody).
pub const PRIV_KADDR: u32 = 1 << 1;
/// Physical and DMA addresses are shown to this opener: CAP_SYS_ADMIN, as for the PFNs of
/// `/proc/PID/pagemap`.
pub const PRIV_PHYS: u32 = 1 << 2;

// ---------------------------------------------------------------------------------------
// Command numbers (`_IOC_NR`).

pub const NR_INFO: u32 = 0x00;
pub const NR_ALLOC: u32 = 0x01;
pub const NR_FREE: u32 = 0x02;
pub const NR_LIST: u32 = 0x03;
pub const NR_STATS: u32 = 0x04;
pub const NR_BENCH: u32 = 0x05;
pub const NR_TRIGGER: u32 = 0x06;
pub const NR_ALLOC_BATCH: u32 = 0x07;
pub const NR_FREE_BATCH: u32 = 0x08;
pub const NR_NOP: u32 = 0x09;

/// INFO: what the module is and what it accepts. `_IOR`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Info {
    /// [`ABI_VERSION`] of the module.
    pub abi_version: u32,
    /// The kernel's `PAGE_SIZE`.
    pub page_size: u32,
    /// Size of the heap (UIO map 0) in bytes; 0 when there is none.
    pub heap_size: u64,
    /// Bit `1 << kind` for each kind the module supports.
    pub kinds: u32,
    /// The `FLAG_*` bits the module accepts.
    pub flags: u32,
    /// Largest single allocation per kind, in bytes (0 for an unsupported kind).
    pub max_size: [u64; MAX_KINDS],
    /// Most bytes outstanding at once, over all kinds and owners.
    pub max_outstanding_bytes: u64,
    /// Most allocations outstanding at once, over all kinds and owners.
    pub max_outstanding_count: u32,
    /// Linux interrupt number the UIO device uses.
    pub irq: u32,
    /// Most iterations one BENCH call may run.
    pub max_bench_iters: u32,
    /// Most events one TRIGGER call may raise.
    pub max_trigger_count: u32,
    /// The device's streaming DMA mask (`dma_set_mask()`), from `dma-bits` in the
    /// device tree or 32 bits.
    pub dma_mask: u64,
    /// The device's coherent DMA mask (`dma_set_coherent_mask()`), the same.
    pub coherent_dma_mask: u64,
    /// Most bytes this opener may hold at once (`u64::MAX` with [`PRIV_ADMIN`]: only the
    /// global limit). Beyond it: `EDQUOT`.
    pub file_max_bytes: u64,
    /// Most allocations this opener may hold at once (`u32::MAX` with [`PRIV_ADMIN`]).
    /// Beyond it: `EDQUOT`.
    pub file_max_count: u32,
    /// `PRIV_*` bits of this opener.
    pub privileges: u32,
    /// Most bytes of live `GFP_ATOMIC`/`GFP_NOWAIT` allocations (and the size of one such
    /// BENCH allocation) without [`PRIV_ADMIN`]; beyond it: `EPERM`.
    pub atomic_quota_bytes: u64,
    /// Most bytes one BENCH may allocate in all (`iters` times `size`) without
    /// [`PRIV_ADMIN`]; beyond it: `EPERM`.
    pub bench_max_bytes: u64,
    /// Reserved; zero.
    pub reserved: [u64; 1],
}

/// One allocation: ALLOC's argument and report, and LIST's entry.
///
/// ALLOC reads `kind`, `flags` and `size` (all other fields must be zero) and writes the
/// whole struct back.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Alloc {
    /// `KIND_*`.
    pub kind: u32,
    /// `FLAG_*` as requested.
    pub flags: u32,
    /// Requested size in bytes (1 or more).
    pub size: u64,
    /// Never reused while the module is loaded; starts at 1.
    pub handle: u64,
    /// Kernel virtual address of the first byte (0 when hidden).
    pub vaddr: u64,
    /// Physical address of the first byte (0 when hidden).
    pub phys: u64,
    /// DMA address (dma_coherent kind; 0 otherwise or when hidden).
    pub dma: u64,
    /// Bytes the caller may really use: `ksize()` for kmalloc, whole pages for the
    /// page-backed kinds.
    pub usable_size: u64,
    /// Time spent in the allocator call, in ns: between the `ktime_get_ns()` reads before and
    /// after it (in a batch, one read between two calls, so the loop's bookkeeping is in it).
    pub alloc_ns: u64,
    /// Number of pages the allocation spans.
    pub pages: u32,
    /// Number of physically contiguous runs of those pages.
    pub phys_segments: u32,
    /// `RESULT_*` bits.
    pub result: u32,
    /// Padding; zero.
    pub _pad: u32,
    /// Reserved; zero.
    pub reserved: [u64; 2],
}

/// FREE: frees `handle`. `_IOWR`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Free {
    /// In: the handle from ALLOC.
    pub handle: u64,
    /// Out: time spent in the free call, in ns, measured as `Alloc::alloc_ns` is.
    pub free_ns: u64,
    /// Reserved; zero.
    pub reserved: [u64; 2],
}

/// LIST: a page of the allocations this opener can see (its own and device-owned ones),
/// in handle order. `_IOWR`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct List {
    /// In: list handles greater than this (0 for the first page; then the last handle).
    pub after: u64,
    /// In: user pointer to an array of `capacity` [`Alloc`] entries.
    pub entries: u64,
    /// In: room in `entries` (at most 4096 per call).
    pub capacity: u32,
    /// Out: entries written.
    pub count: u32,
    /// Out: all allocations this opener can see, on every page.
    pub total: u32,
    /// Padding; zero.
    pub _pad: u32,
}

/// Counters of one kind, over all owners.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KindStats {
    /// Live allocations.
    pub live_count: u64,
    /// Requested bytes of the live allocations.
    pub live_bytes: u64,
    /// Successful allocations since load.
    pub allocs: u64,
    /// Frees since load (by FREE, file release or unload).
    pub frees: u64,
    /// Failed allocations since load (allocator failures and limit refusals).
    pub failures: u64,
}

/// STATS: counters per kind. `_IOR`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Indexed by `KIND_*`.
    pub kinds: [KindStats; MAX_KINDS],
    /// UIO events raised since load (button interrupts and TRIGGER).
    pub events: u64,
    /// Reserved; zero.
    pub reserved: [u64; 3],
}

/// Latency figures of one side (alloc or free) of a BENCH run, in ns.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timing {
    pub min_ns: u64,
    pub mean_ns: u64,
    pub max_ns: u64,
    pub stddev_ns: u64,
    /// Median: [`hist_percentile`] of the run's histogram (about 3% resolution).
    pub p50_ns: u64,
    /// 99th percentile: [`hist_percentile`] of the same histogram.
    pub p99_ns: u64,
}

// ---------------------------------------------------------------------------------------
// Latency histograms: one layout and one percentile rule for every percentile kmemlab
// prints (BENCH in the module, and in userspace the daemon's stats, `kmemlabctl report` and
// `kmemlabctl bench`).

/// Sub-buckets per power of two, as a power of two.
pub const HIST_SUB_BITS: u32 = 4;
/// Sub-buckets per power of two.
const HIST_SUB: usize = 1 << HIST_SUB_BITS;
/// Buckets: values below 16 have one each; each power of two from 2^4 to 2^63 is split into
/// 16 equal buckets, so a bucket spans at most 1/16 (6.25%) of its lower bound.
pub const HIST_BUCKETS: usize = HIST_SUB + (64 - HIST_SUB_BITS as usize) * HIST_SUB;

/// The bucket that holds `ns`.
pub const fn hist_bucket(ns: u64) -> usize {
    if ns < HIST_SUB as u64 {
        return ns as usize;
    }
    let exp = 63 - ns.leading_zeros();
    let sub = (ns >> (exp - HIST_SUB_BITS)) as usize & (HIST_SUB - 1);
    HIST_SUB + (exp - HIST_SUB_BITS) as usize * HIST_SUB + sub
}

/// The smallest value of bucket `b` (below [`HIST_BUCKETS`]) and its width.
pub const fn hist_bucket_range(b: usize) -> (u64, u64) {
    if b < HIST_SUB {
        return (b as u64, 1);
    }
    let exp = ((b - HIST_SUB) / HIST_SUB) as u32 + HIST_SUB_BITS;
    let sub = ((b - HIST_SUB) % HIST_SUB) as u64;
    let width = 1u64 << (exp - HIST_SUB_BITS);
    (((HIST_SUB as u64) + sub) * width, width)
}

/// The `per_mille`/1000 percentile of `n` samples whose histogram `counts` yields bucket by
/// bucket and whose least and greatest values are `min` and `max`: the sample of rank
/// ceil(n * per_mille / 1000) (at least 1; nearest rank), given as the midpoint of its
/// bucket, clamped to `[min, max]`. 0 when `n` is 0.
pub fn hist_percentile<I: IntoIterator<Item = u64>>(
    counts: I,
    n: u64,
    per_mille: u64,
    min: u64,
    max: u64,
) -> u64 {
    if n == 0 {
        return 0;
    }
    let target = n.saturating_mul(per_mille).div_ceil(1000).max(1);
    let mut seen = 0u64;
    for (b, count) in counts.into_iter().enumerate() {
        seen = seen.saturating_add(count);
        if seen >= target {
            let (low, width) = hist_bucket_range(b);
            return (low + (width - 1) / 2).clamp(min, max);
        }
    }
    max
}

/// BENCH: `iters` alloc+free pairs inside the kernel. `_IOWR`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bench {
    /// In: `KIND_*`.
    pub kind: u32,
    /// In: `FLAG_*` (not `FLAG_PERSIST`).
    pub flags: u32,
    /// In: size in bytes.
    pub size: u64,
    /// In: number of pairs (1 to `Info::max_bench_iters`).
    pub iters: u32,
    /// Padding; zero.
    pub _pad: u32,
    /// Out: allocation latency.
    pub alloc: Timing,
    /// Out: free latency.
    pub free: Timing,
    /// In: 0, or the user address of `u32[2 * HIST_BUCKETS]` that receives the run's
    /// histograms: the allocation latency's bucket counts ([`hist_bucket`]), then the free
    /// latency's. `EFAULT` when it cannot be written (the run is done and freed).
    pub hist_addr: u64,
    /// Reserved; zero.
    pub reserved: [u64; 1],
}

/// Bytes BENCH writes at [`Bench::hist_addr`].
pub const BENCH_HIST_BYTES: usize = 2 * HIST_BUCKETS * core::mem::size_of::<u32>();

/// TRIGGER: raises `count` UIO events from the kernel, as if the button were pressed.
/// `_IOWR`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trigger {
    /// In: number of events (1 to `Info::max_trigger_count`).
    pub count: u32,
    /// Padding; zero.
    pub _pad: u32,
    /// Out: the sequence number (the UIO event count) of the last event this call raised.
    pub events: u64,
}

pub const IOCTL_INFO: u32 = ioc(IOC_READ, NR_INFO, core::mem::size_of::<Info>());
pub const IOCTL_ALLOC: u32 = ioc(
    IOC_READ | IOC_WRITE,
    NR_ALLOC,
    core::mem::size_of::<Alloc>(),
);
pub const IOCTL_FREE: u32 = ioc(IOC_READ | IOC_WRITE, NR_FREE, core::mem::size_of::<Free>());
pub const IOCTL_LIST: u32 = ioc(IOC_READ | IOC_WRITE, NR_LIST, core::mem::size_of::<List>());
pub const IOCTL_STATS: u32 = ioc(IOC_READ, NR_STATS, core::mem::size_of::<Stats>());
pub const IOCTL_BENCH: u32 = ioc(
    IOC_READ | IOC_WRITE,
    NR_BENCH,
    core::mem::size_of::<Bench>(),
);
pub const IOCTL_TRIGGER: u32 = ioc(
    IOC_READ | IOC_WRITE,
    NR_TRIGGER,
    core::mem::size_of::<Trigger>(),
);

/// Most entries one LIST call returns.
pub const LIST_MAX: u32 = 4096;

// ---------------------------------------------------------------------------------------
// Batched ALLOC and FREE: many requests for one system call and one lock acquisition.

/// Most entries one ALLOC_BATCH or FREE_BATCH call takes.
pub const BATCH_MAX: u32 = 256;

/// ALLOC_BATCH: `count` ALLOCs in one call. `_IOWR`.
///
/// Each entry is an [`Alloc`] with `kind`, `flags` and `size` set and every other field
/// zero. Entries are processed in order and processing stops at the first one that fails:
/// the entries before it (`done` of them) are allocated and written back with their full
/// report, as ALLOC writes it; that entry and the ones after it are left as they were.
///
/// The call returns 0 when the header is valid, even when an entry failed: read `done`
/// and `error`. It fails without allocating anything with `EINVAL` when `count` is 0 or
/// above [`BATCH_MAX`] or an out or reserved field is not zero, and with `EFAULT` when the
/// entries array cannot be read or written back (anything allocated by the call is then
/// freed again).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocBatch {
    /// In: user pointer to an array of `count` [`Alloc`] entries.
    pub entries: u64,
    /// In: number of entries, 1 to [`BATCH_MAX`].
    pub count: u32,
    /// Out: entries allocated, always the first `done` of the array.
    pub done: u32,
    /// Out: the positive errno of entry `done`, which failed; 0 when all are done.
    pub error: i32,
    /// Padding; zero.
    pub _pad: u32,
    /// Reserved; zero.
    pub reserved: [u64; 2],
}

/// FREE_BATCH: `count` FREEs in one call. `_IOWR`.
///
/// Each entry is a [`Free`] with `handle` set and every other field zero. Entries are
/// processed in order and processing stops at the first one that fails (`ENOENT` for a
/// handle this opener cannot see, including one freed earlier in the same call); the
/// entries before it (`done` of them) are freed and written back with `free_ns`.
///
/// The call returns 0 when the header is valid, even when an entry failed: read `done`
/// and `error`. It fails with `EINVAL` when `count` is 0 or above [`BATCH_MAX`] or an out
/// or reserved field is not zero, and with `EFAULT` when the entries array cannot be read
/// (nothing is freed) or written back (the first `done` entries are freed all the same).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FreeBatch {
    /// In: user pointer to an array of `count` [`Free`] entries.
    pub entries: u64,
    /// In: number of entries, 1 to [`BATCH_MAX`].
    pub count: u32,
    /// Out: entries freed, always the first `done` of the array.
    pub done: u32,
    /// Out: the positive errno of entry `done`, which failed; 0 when all are done.
    pub error: i32,
    /// Padding; zero.
    pub _pad: u32,
    /// Reserved; zero.
    pub reserved: [u64; 2],
}

pub const IOCTL_ALLOC_BATCH: u32 = ioc(
    IOC_READ | IOC_WRITE,
    NR_ALLOC_BATCH,
    core::mem::size_of::<AllocBatch>(),
);
pub const IOCTL_FREE_BATCH: u32 = ioc(
    IOC_READ | IOC_WRITE,
    NR_FREE_BATCH,
    core::mem::size_of::<FreeBatch>(),
);

/// NOP: does nothing and returns 0. `_IO`, no argument. The cost of a round trip through
/// the system call, the file and the module's dispatch, with no work and no copy: what a
/// benchmark subtracts to see what a command itself costs.
pub const IOCTL_NOP: u32 = ioc(IOC_NONE, NR_NOP, 0);

// ---------------------------------------------------------------------------------------
// The heap (UIO map 0): ordinary kernel pages, refcounted, that a mapping keeps alive after
// unbind. Its first page holds the interrupt ring; the rest is free for userspace data.

/// `RingHeader::magic`: "KMLR".
pub const RING_MAGIC: u32 = 0x4b4d_4c52;
/// `RingHeader::version`.
pub const RING_VERSION: u32 = 1;
/// Records in the ring: (4096 - 64) / 32.
pub const RING_SLOTS: u32 = 126;
/// Offset of the first record from the start of the heap.
pub const RING_RECORDS_OFFSET: usize = 64;

/// `IrqRecord::source`: the device-tree interrupt (the button).
pub const SOURCE_IRQ: u32 = 0;
/// `IrqRecord::source`: the TRIGGER ioctl (software button).
pub const SOURCE_TRIGGER: u32 = 1;

/// The ring's header at offset 0 of the heap.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingHeader {
    /// [`RING_MAGIC`].
    pub magic: u32,
    /// [`RING_VERSION`].
    pub version: u32,
    /// [`RING_SLOTS`].
    pub slots: u32,
    /// `size_of::<IrqRecord>()`.
    pub record_size: u32,
    /// Sequence number of the newest record (0: none yet). The record with sequence `s`
    /// sits in slot `(s - 1) % slots`. Written last, with release ordering.
    pub head: u64,
    /// Reserved; zero.
    pub reserved: [u64; 5],
}

/// One UIO event, written by the kernel under the same lock as, and before, the UIO event
/// count is incremented: the record with sequence `s` is the one of the event that made
/// the count `s` (modulo 2^32), whatever the source.
///
/// A reader copies a record, then checks that `seq` is still the one it expected: the
/// kernel writes `seq` as 0 first, then the fields, then the new `seq`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IrqRecord {
    /// Sequence number, equal to the UIO event count after this event.
    pub seq: u64,
    /// `ktime_get_ns()` (CLOCK_MONOTONIC) when the event was raised.
    pub ktime_ns: u64,
    /// `SOURCE_*`.
    pub source: u32,
    /// Padding; zero.
    pub _pad: u32,
    /// Reserved; zero.
    pub reserved: u64,
}

/// Default size of the heap when the device-tree node has no `yang,heap-size`.
pub const HEAP_DEFAULT_SIZE: u64 = 1 << 20;
