//! Pins the ABI: struct sizes, field offsets and command numbers. A change here is an
//! ABI change: bump `ABI_VERSION`.

use std::mem::{offset_of, size_of};

use kmemlab_uapi::*;

#[test]
fn struct_sizes() {
    assert_eq!(size_of::<Info>(), 168);
    assert_eq!(size_of::<Alloc>(), 96);
    assert_eq!(size_of::<Free>(), 32);
    assert_eq!(size_of::<List>(), 32);
    assert_eq!(size_of::<KindStats>(), 40);
    assert_eq!(size_of::<Stats>(), 352);
    assert_eq!(size_of::<Timing>(), 48);
    assert_eq!(size_of::<Bench>(), 136);
    assert_eq!(size_of::<Trigger>(), 16);
    assert_eq!(size_of::<RingHeader>(), 64);
    assert_eq!(size_of::<IrqRecord>(), 32);
    assert_eq!(size_of::<AllocBatch>(), 40);
    assert_eq!(size_of::<FreeBatch>(), 40);
}

#[test]
fn batch_offsets() {
    assert_eq!(offset_of!(AllocBatch, entries), 0);
    assert_eq!(offset_of!(AllocBatch, count), 8);
    assert_eq!(offset_of!(AllocBatch, done), 12);
    assert_eq!(offset_of!(AllocBatch, error), 16);
    assert_eq!(offset_of!(AllocBatch, _pad), 20);
    assert_eq!(offset_of!(AllocBatch, reserved), 24);
    assert_eq!(offset_of!(FreeBatch, entries), 0);
    assert_eq!(offset_of!(FreeBatch, count), 8);
    assert_eq!(offset_of!(FreeBatch, done), 12);
    assert_eq!(offset_of!(FreeBatch, error), 16);
    assert_eq!(offset_of!(FreeBatch, _pad), 20);
    assert_eq!(offset_of!(FreeBatch, reserved), 24);
    assert_eq!(BATCH_MAX, 256);
}

#[test]
fn info_offsets() {
    assert_eq!(offset_of!(Info, abi_version), 0);
    assert_eq!(offset_of!(Info, page_size), 4);
    assert_eq!(offset_of!(Info, heap_size), 8);
    assert_eq!(offset_of!(Info, kinds), 16);
    assert_eq!(offset_of!(Info, flags), 20);
    assert_eq!(offset_of!(Info, max_size), 24);
    assert_eq!(offset_of!(Info, max_outstanding_bytes), 88);
    assert_eq!(offset_of!(Info, max_outstanding_count), 96);
    assert_eq!(offset_of!(Info, irq), 100);
    assert_eq!(offset_of!(Info, max_bench_iters), 104);
    assert_eq!(offset_of!(Info, max_trigger_count), 108);
    assert_eq!(offset_of!(Info, dma_mask), 112);
    assert_eq!(offset_of!(Info, coherent_dma_mask), 120);
    assert_eq!(offset_of!(Info, file_max_bytes), 128);
    assert_eq!(offset_of!(Info, file_max_count), 136);
    assert_eq!(offset_of!(Info, privileges), 140);
    assert_eq!(offset_of!(Info, atomic_quota_bytes), 144);
    assert_eq!(offset_of!(Info, bench_max_bytes), 152);
    assert_eq!(offset_of!(Info, reserved), 160);
}

#[test]
fn alloc_offsets() {
    assert_eq!(offset_of!(Alloc, kind), 0);
    assert_eq!(offset_of!(Alloc, flags), 4);
    assert_eq!(offset_of!(Alloc, size), 8);
    assert_eq!(offset_of!(Alloc, handle), 16);
    assert_eq!(offset_of!(Alloc, vaddr), 24);
    assert_eq!(offset_of!(Alloc, phys), 32);
    assert_eq!(offset_of!(Alloc, dma), 40);
    assert_eq!(offset_of!(Alloc, usable_size), 48);
    assert_eq!(offset_of!(Alloc, alloc_ns), 56);
    assert_eq!(offset_of!(Alloc, pages), 64);
    assert_eq!(offset_of!(Alloc, phys_segments), 68);
    assert_eq!(offset_of!(Alloc, result), 72);
    assert_eq!(offset_of!(Alloc, _pad), 76);
    assert_eq!(offset_of!(Alloc, reserved), 80);
}

#[test]
fn other_offsets() {
    assert_eq!(offset_of!(Free, handle), 0);
    assert_eq!(offset_of!(Free, free_ns), 8);
    assert_eq!(offset_of!(List, after), 0);
    assert_eq!(offset_of!(List, entries), 8);
    assert_eq!(offset_of!(List, capacity), 16);
    assert_eq!(offset_of!(List, count), 20);
    assert_eq!(offset_of!(List, total), 24);
    assert_eq!(offset_of!(KindStats, live_count), 0);
    assert_eq!(offset_of!(KindStats, live_bytes), 8);
    assert_eq!(offset_of!(KindStats, allocs), 16);
    assert_eq!(offset_of!(KindStats, frees), 24);
    assert_eq!(offset_of!(KindStats, failures), 32);
    assert_eq!(offset_of!(Stats, events), 320);
    assert_eq!(offset_of!(Timing, min_ns), 0);
    assert_eq!(offset_of!(Timing, p99_ns), 40);
    assert_eq!(offset_of!(Bench, kind), 0);
    assert_eq!(offset_of!(Bench, flags), 4);
    assert_eq!(offset_of!(Bench, size), 8);
    assert_eq!(offset_of!(Bench, iters), 16);
    assert_eq!(offset_of!(Bench, alloc), 24);
    assert_eq!(offset_of!(Bench, free), 72);
    assert_eq!(offset_of!(Bench, hist_addr), 120);
    assert_eq!(offset_of!(Bench, reserved), 128);
    assert_eq!(offset_of!(Trigger, count), 0);
    assert_eq!(offset_of!(Trigger, events), 8);
    assert_eq!(offset_of!(RingHeader, head), 16);
    assert_eq!(offset_of!(IrqRecord, seq), 0);
    assert_eq!(offset_of!(IrqRecord, ktime_ns), 8);
    assert_eq!(offset_of!(IrqRecord, source), 16);
    assert_eq!(
        RING_RECORDS_OFFSET + RING_SLOTS as usize * size_of::<IrqRecord>(),
        4096
    );
}

#[test]
fn command_numbers_are_pinned() {
    assert_eq!(IOCTL_INFO, 0x80a8_e700);
    assert_eq!(IOCTL_ALLOC, 0xc060_e701);
    assert_eq!(IOCTL_FREE, 0xc020_e702);
    assert_eq!(IOCTL_LIST, 0xc020_e703);
    assert_eq!(IOCTL_STATS, 0x8160_e704);
    assert_eq!(IOCTL_BENCH, 0xc088_e705);
    assert_eq!(IOCTL_TRIGGER, 0xc010_e706);
    assert_eq!(IOCTL_ALLOC_BATCH, 0xc028_e707);
    assert_eq!(IOCTL_FREE_BATCH, 0xc028_e708);
    assert_eq!(IOCTL_NOP, 0x0000_e709);
}

#[test]
fn command_numbers_match_the_linux_encoding() {
    // nix's macros implement <asm-generic/ioctl.h>; the two must agree.
    let m = IOC_MAGIC as u8;
    assert_eq!(
        u64::from(IOCTL_INFO),
        nix::request_code_read!(m, NR_INFO, size_of::<Info>()) as u64
    );
    assert_eq!(
        u64::from(IOCTL_ALLOC),
        nix::request_code_readwrite!(m, NR_ALLOC, size_of::<Alloc>()) as u64
    );
    assert_eq!(
        u64::from(IOCTL_FREE),
        nix::request_code_readwrite!(m, NR_FREE, size_of::<Free>()) as u64
    );
    assert_eq!(
        u64::from(IOCTL_LIST),
        nix::request_code_readwrite!(m, NR_LIST, size_of::<List>()) as u64
    );
    assert_eq!(
        u64::from(IOCTL_STATS),
        nix::request_code_read!(m, NR_STATS, size_of::<Stats>()) as u64
    );
    assert_eq!(
        u64::from(IOCTL_BENCH),
        nix::request_code_readwrite!(m, NR_BENCH, size_of::<Bench>()) as u64
    );
    assert_eq!(
        u64::from(IOCTL_TRIGGER),
        nix::request_code_readwrite!(m, NR_TRIGGER, size_of::<Trigger>()) as u64
    );
    assert_eq!(
        u64::from(IOCTL_ALLOC_BATCH),
        nix::request_code_readwrite!(m, NR_ALLOC_BATCH, size_of::<AllocBatch>()) as u64
    );
    assert_eq!(
        u64::from(IOCTL_FREE_BATCH),
        nix::request_code_readwrite!(m, NR_FREE_BATCH, size_of::<FreeBatch>()) as u64
    );
    assert_eq!(u64::from(IOCTL_NOP), nix::request_code_none!(m, NR_NOP));
}

#[test]
fn decoding_round_trips() {
    for cmd in [
        IOCTL_INFO,
        IOCTL_ALLOC,
        IOCTL_FREE,
        IOCTL_LIST,
        IOCTL_STATS,
        IOCTL_BENCH,
        IOCTL_TRIGGER,
        IOCTL_ALLOC_BATCH,
        IOCTL_FREE_BATCH,
    ] {
        assert_eq!(ioc_type(cmd), IOC_MAGIC);
        assert!(ioc_dir(cmd) & IOC_READ != 0);
    }
    assert_eq!(ioc_size(IOCTL_ALLOC), size_of::<Alloc>());
    assert_eq!(ioc_nr(IOCTL_BENCH), NR_BENCH);
}

#[test]
fn flags_do_not_overlap() {
    let all = [
        FLAG_GFP_KERNEL,
        FLAG_GFP_ATOMIC,
        FLAG_GFP_NOWAIT,
        FLAG_ZERO,
        FLAG_NORETRY,
        FLAG_NOWARN,
        FLAG_DMA,
        FLAG_DMA32,
        FLAG_PERSIST,
    ];
    let mut seen = 0u32;
    for f in all {
        assert_eq!(f.count_ones(), 1);
        assert_eq!(seen & f, 0);
        seen |= f;
    }
    assert_eq!(seen, FLAG_ALL);
}

/// The histogram's buckets tile 0..=u64::MAX in order, each value in the bucket whose
/// range holds it, and no bucket wider than 1/16 of its least value (from 16 on).
#[test]
fn histogram_buckets_tile_every_value_in_order() {
    let mut next = 0u64;
    for b in 0..HIST_BUCKETS {
        let (low, width) = hist_bucket_range(b);
        assert_eq!(
            low,
            next,
            "bucket {b} starts where {} ended",
            b.wrapping_sub(1)
        );
        assert!(low < 16 || width <= low / 16, "bucket {b}: {low} + {width}");
        assert_eq!(hist_bucket(low), b);
        assert_eq!(hist_bucket(low + (width - 1)), b);
        next = low.wrapping_add(width);
    }
    assert_eq!(next, 0, "the last bucket ends at u64::MAX");
    for v in [0, 1, 15, 16, 17, 31, 32, 1000, 123_456_789, u64::MAX] {
        let (low, width) = hist_bucket_range(hist_bucket(v));
        assert!(low <= v && v - low < width, "{v}");
    }
}

/// The percentile rule: nearest rank, the bucket's midpoint, clamped to the samples.
#[test]
fn histogram_percentile_rule() {
    let mut counts = [0u64; HIST_BUCKETS];
    for v in 1..=100u64 {
        counts[hist_bucket(v)] += 1;
    }
    let p = |per_mille| hist_percentile(counts, 100, per_mille, 1, 100);
    // Ranks 50, 90, 99: 50 (exact bucket pair 50..=51, midpoint 50), 90 in 88..=91 (89),
    // 99 in 96..=99 (97); rank 100 is the greatest sample.
    assert_eq!((p(500), p(900), p(990), p(1000)), (50, 89, 97, 100));
    assert_eq!(p(0), 1, "rank at least 1");
    assert_eq!(hist_percentile([0u64; 0], 0, 500, 0, 0), 0);
    // Clamped: one sample of 1001 lies in 992..=1023, whose midpoint is 1007.
    let mut one = [0u64; HIST_BUCKETS];
    one[hist_bucket(1001)] = 1;
    assert_eq!(hist_percentile(one, 1, 990, 1001, 1001), 1001);
}
