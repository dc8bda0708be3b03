/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * kmemlab ioctl ABI v2, for C and C++ (and Python through ctypes or cffi).
 *
 * The definition is kmod-helper/uapi/src/abi.rs; this header is checked against it by
 * kmod-helper/uapi/tests/c_header.rs (sizes, offsets, command numbers, constants).
 *
 * Every struct has fixed-width fields only, explicit padding (_pad*, must be zero) and
 * reserved space (must be zero on input, written as zero); every __u64 sits at a multiple
 * of 8, so the layout is the same on 32- and 64-bit ABIs. Commands use the generic Linux
 * _IOC encoding with type KMEMLAB_IOC_MAGIC; the kernel checks that the size encoded in the
 * command equals the struct's size (EINVAL otherwise) and answers unknown commands with
 * ENOTTY.
 */
#ifndef _UAPI_LINUX_KMEMLAB_H
#define _UAPI_LINUX_KMEMLAB_H

#include <linux/ioctl.h>
#include <linux/types.h>

/* Version of this ABI; bumped on any incompatible change. */
#define KMEMLAB_ABI_VERSION		3

/* The ioctl type byte ("magic"); 0xE7 is unassigned in ioctl-number.rst. */
#define KMEMLAB_IOC_MAGIC		0xE7

/* Allocation kinds (kmemlab_alloc.kind). */
#define KMEMLAB_KIND_KMALLOC		0	/* kmalloc() / kfree() */
#define KMEMLAB_KIND_VMALLOC		1	/* vmalloc() / vfree() */
#define KMEMLAB_KIND_DMA_COHERENT	2	/* dma_alloc_coherent() against the DT device */
#define KMEMLAB_KIND_KVMALLOC		3	/* kvmalloc() / kvfree() */
#define KMEMLAB_KIND_PAGES		4	/* alloc_pages() of the order that covers the size */
#define KMEMLAB_KIND_COUNT		5	/* number of kinds this version defines */
#define KMEMLAB_MAX_KINDS		8	/* room for kinds in arrays indexed by kind */

/*
 * Allocation flags: ABI bits, not the kernel's gfp_t bits, which are not a stable ABI.
 * Exactly one of the three base flags must be given.
 */
#define KMEMLAB_FLAG_GFP_KERNEL		(1U << 0)	/* GFP_KERNEL: may sleep */
#define KMEMLAB_FLAG_GFP_ATOMIC		(1U << 1)	/* GFP_ATOMIC: no sleep, may use reserves */
#define KMEMLAB_FLAG_GFP_NOWAIT		(1U << 2)	/* GFP_NOWAIT: no sleep, no reserves */
#define KMEMLAB_FLAG_ZERO		(1U << 3)	/* __GFP_ZERO: return zeroed memory */
#define KMEMLAB_FLAG_NORETRY		(1U << 4)	/* __GFP_NORETRY: give up early */
#define KMEMLAB_FLAG_NOWARN		(1U << 5)	/* __GFP_NOWARN: no failure warning */
/* GFP_DMA: kmalloc and pages only, with CONFIG_ZONE_DMA (see info.flags); else EINVAL. */
#define KMEMLAB_FLAG_DMA		(1U << 6)
/* GFP_DMA32: pages only, with CONFIG_ZONE_DMA32 (see info.flags); else EINVAL. */
#define KMEMLAB_FLAG_DMA32		(1U << 7)
/*
 * Not a gfp flag: the allocation belongs to the device instead of the open file, is
 * visible to LIST and FREE from any opener and freed at module unload. Needs
 * KMEMLAB_PRIV_ADMIN (EPERM otherwise).
 */
#define KMEMLAB_FLAG_PERSIST		(1U << 16)
/* The three base flags, of which exactly one is required. */
#define KMEMLAB_FLAG_BASE_MASK		(KMEMLAB_FLAG_GFP_KERNEL | KMEMLAB_FLAG_GFP_ATOMIC | \
					 KMEMLAB_FLAG_GFP_NOWAIT)
/* Every flag this version defines. */
#define KMEMLAB_FLAG_ALL		(KMEMLAB_FLAG_BASE_MASK | KMEMLAB_FLAG_ZERO | \
					 KMEMLAB_FLAG_NORETRY | KMEMLAB_FLAG_NOWARN | \
					 KMEMLAB_FLAG_DMA | KMEMLAB_FLAG_DMA32 | \
					 KMEMLAB_FLAG_PERSIST)

/* Result bits of an allocation report (kmemlab_alloc.result). */
/* The memory was zeroed (by __GFP_ZERO, or by an allocator that always zeroes). */
#define KMEMLAB_RESULT_ZEROED		(1U << 0)
/* vaddr is 0: kptr_restrict does not let this opener see kernel addresses. */
#define KMEMLAB_RESULT_HIDDEN		(1U << 1)
/* dma holds a DMA address (dma_coherent kind). */
#define KMEMLAB_RESULT_DMA		(1U << 2)
/* The allocation is device-owned (KMEMLAB_FLAG_PERSIST). */
#define KMEMLAB_RESULT_PERSIST		(1U << 3)
/* The allocation belongs to the file this report was read through. */
#define KMEMLAB_RESULT_OWN		(1U << 4)
/* phys and dma are 0: the opener lacks CAP_SYS_ADMIN. */
#define KMEMLAB_RESULT_PHYS_HIDDEN	(1U << 5)

/*
 * What an opener may do and see (kmemlab_info.privileges), decided once, when the file
 * is opened, on the opener's credentials.
 */
/* CAP_SYS_ADMIN: FLAG_PERSIST, atomic allocations and BENCH beyond the quotas. */
#define KMEMLAB_PRIV_ADMIN		(1U << 0)
/* Kernel virtual addresses are shown: the kptr_restrict rule of /proc/kallsyms. */
#define KMEMLAB_PRIV_KADDR		(1U << 1)
/* Physical and DMA addresses are shown: CAP_SYS_ADMIN, as for /proc/PID/pagemap. */
#define KMEMLAB_PRIV_PHYS		(1U << 2)

/* Command numbers (_IOC_NR). */
#define KMEMLAB_NR_INFO			0x00
#define KMEMLAB_NR_ALLOC		0x01
#define KMEMLAB_NR_FREE			0x02
#define KMEMLAB_NR_LIST			0x03
#define KMEMLAB_NR_STATS		0x04
#define KMEMLAB_NR_BENCH		0x05
#define KMEMLAB_NR_TRIGGER		0x06
#define KMEMLAB_NR_ALLOC_BATCH		0x07
#define KMEMLAB_NR_FREE_BATCH		0x08
#define KMEMLAB_NR_NOP			0x09

/* Most entries one LIST call returns. */
#define KMEMLAB_LIST_MAX		4096
/* Most entries one ALLOC_BATCH or FREE_BATCH call takes. */
#define KMEMLAB_BATCH_MAX		256

/* INFO: what the module is and what it accepts. */
struct kmemlab_info {
	__u32 abi_version;		/* KMEMLAB_ABI_VERSION of the module */
	__u32 page_size;		/* the kernel's PAGE_SIZE */
	__u64 heap_size;		/* bytes of the heap (UIO map 0); 0: none */
	__u32 kinds;			/* bit 1 << kind for each supported kind */
	__u32 flags;			/* the KMEMLAB_FLAG_* bits the module accepts */
	__u64 max_size[KMEMLAB_MAX_KINDS]; /* largest allocation per kind (0: unsupported) */
	__u64 max_outstanding_bytes;	/* most bytes outstanding, all kinds and owners */
	__u32 max_outstanding_count;	/* most allocations outstanding, all kinds and owners */
	__u32 irq;			/* Linux interrupt number of the UIO device */
	__u32 max_bench_iters;		/* most iterations one BENCH may run */
	__u32 max_trigger_count;	/* most events one TRIGGER may raise */
	__u64 dma_mask;			/* streaming DMA mask (DT dma-bits or 32 bits) */
	__u64 coherent_dma_mask;	/* coherent DMA mask, the same */
	__u64 file_max_bytes;		/* most bytes this opener may hold (EDQUOT beyond) */
	__u32 file_max_count;		/* most allocations this opener may hold (EDQUOT) */
	__u32 privileges;		/* KMEMLAB_PRIV_* bits of this opener */
	__u64 atomic_quota_bytes;	/* live atomic/nowait bytes without PRIV_ADMIN (EPERM) */
	__u64 bench_max_bytes;		/* iters * size of one BENCH without PRIV_ADMIN (EPERM) */
	__u64 reserved[1];
};

/*
 * One allocation: ALLOC's argument and report, and LIST's entry. ALLOC reads kind, flags
 * and size (all other fields must be zero) and writes the whole struct back.
 */
struct kmemlab_alloc {
	__u32 kind;			/* KMEMLAB_KIND_* */
	__u32 flags;			/* KMEMLAB_FLAG_* as requested */
	__u64 size;			/* requested size in bytes (1 or more) */
	__u64 handle;			/* never reused while the module is loaded; from 1 */
	__u64 vaddr;			/* kernel virtual address (0 when hidden) */
	__u64 phys;			/* physical address (0 when hidden) */
	__u64 dma;			/* DMA address (dma_coherent; else or hidden: 0) */
	__u64 usable_size;		/* ksize() for kmalloc, whole pages for page kinds */
	__u64 alloc_ns;			/* time in the allocator call, ktime_get_ns() */
	__u32 pages;			/* pages the allocation spans */
	__u32 phys_segments;		/* physically contiguous runs of those pages */
	__u32 result;			/* KMEMLAB_RESULT_* bits */
	__u32 _pad;
	__u64 reserved[2];
};

/* FREE: frees handle. */
struct kmemlab_free {
	__u64 handle;			/* in: the handle from ALLOC */
	__u64 free_ns;			/* out: time in the free call, as alloc_ns */
	__u64 reserved[2];
};

/*
 * LIST: a page of the allocations this opener can see (its own and device-owned ones),
 * in handle order.
 */
struct kmemlab_list {
	__u64 after;			/* in: handles greater than this (0, then the last) */
	__u64 entries;			/* in: user pointer to capacity struct kmemlab_alloc */
	__u32 capacity;			/* in: room in entries (at most KMEMLAB_LIST_MAX) */
	__u32 count;			/* out: entries written */
	__u32 total;			/* out: all allocations this opener can see */
	__u32 _pad;
};

/* Counters of one kind, over all owners. */
struct kmemlab_kind_stats {
	__u64 live_count;		/* live allocations */
	__u64 live_bytes;		/* requested bytes of the live allocations */
	__u64 allocs;			/* successful allocations since load */
	__u64 frees;			/* frees since load (FREE, file release or unload) */
	__u64 failures;			/* failed allocations since load (incl. limits) */
};

/* STATS: counters per kind. */
struct kmemlab_stats {
	struct kmemlab_kind_stats kinds[KMEMLAB_MAX_KINDS]; /* indexed by KMEMLAB_KIND_* */
	__u64 events;			/* UIO events since load (button and TRIGGER) */
	__u64 reserved[3];
};

/* Latency figures of one side (alloc or free) of a BENCH run, in ns. */
struct kmemlab_timing {
	__u64 min_ns;
	__u64 mean_ns;
	__u64 max_ns;
	__u64 stddev_ns;
	__u64 p50_ns;			/* median, from a histogram of about 3% resolution */
	__u64 p99_ns;			/* 99th percentile, from the same histogram */
};

/*
 * Latency histograms (BENCH's hist_addr). Values below 16 ns have a bucket each; each power
 * of two from 2^4 to 2^63 is split into 16 equal buckets. For v >= 16, with e the index of
 * v's highest set bit, v's bucket is 16 + (e - 4) * 16 + ((v >> (e - 4)) & 15). A percentile
 * is the sample of rank ceil(n * p) (at least 1), given as its bucket's midpoint clamped to
 * [min_ns, max_ns].
 */
#define KMEMLAB_HIST_SUB_BITS		4
#define KMEMLAB_HIST_BUCKETS		976
#define KMEMLAB_BENCH_HIST_BYTES	(2 * KMEMLAB_HIST_BUCKETS * 4)

/* BENCH: iters alloc+free pairs inside the kernel. */
struct kmemlab_bench {
	__u32 kind;			/* in: KMEMLAB_KIND_* */
	__u32 flags;			/* in: KMEMLAB_FLAG_* (not KMEMLAB_FLAG_PERSIST) */
	__u64 size;			/* in: size in bytes */
	__u32 iters;			/* in: pairs, 1 to info.max_bench_iters */
	__u32 _pad;
	struct kmemlab_timing alloc;	/* out: allocation latency */
	struct kmemlab_timing free;	/* out: free latency */
	__u64 hist_addr;		/* in: 0, or the address of __u32[2 * KMEMLAB_HIST_BUCKETS] */
					/* that receives the alloc, then the free histogram */
	__u64 reserved[1];
};

/* TRIGGER: raises count UIO events from the kernel, as if the button were pressed. */
struct kmemlab_trigger {
	__u32 count;			/* in: events, 1 to info.max_trigger_count */
	__u32 _pad;
	__u64 events;			/* out: sequence number of this call's last event */
};

/*
 * ALLOC_BATCH: count ALLOCs in one call. Each entry is a struct kmemlab_alloc with kind,
 * flags and size set, every other field zero. Processing stops at the first entry that
 * fails; the done entries before it are allocated and written back. Returns 0 when the
 * header is valid even if an entry failed (read done and error); EINVAL for count 0 or
 * above KMEMLAB_BATCH_MAX or a nonzero out or reserved field; EFAULT when the entries
 * cannot be read or written back (anything allocated is then freed again).
 */
struct kmemlab_alloc_batch {
	__u64 entries;			/* in: user pointer to count struct kmemlab_alloc */
	__u32 count;			/* in: 1 to KMEMLAB_BATCH_MAX */
	__u32 done;			/* out: entries allocated, the first done */
	__s32 error;			/* out: positive errno of entry done; 0: all done */
	__u32 _pad;
	__u64 reserved[2];
};

/*
 * FREE_BATCH: count FREEs in one call. Each entry is a struct kmemlab_free with handle
 * set, every other field zero. Processing stops at the first entry that fails (ENOENT for
 * a handle this opener cannot see); the done entries before it are freed and written back
 * with free_ns. Errors as for ALLOC_BATCH, except that on EFAULT when writing back the
 * first done entries are freed all the same.
 */
struct kmemlab_free_batch {
	__u64 entries;			/* in: user pointer to count struct kmemlab_free */
	__u32 count;			/* in: 1 to KMEMLAB_BATCH_MAX */
	__u32 done;			/* out: entries freed, the first done */
	__s32 error;			/* out: positive errno of entry done; 0: all done */
	__u32 _pad;
	__u64 reserved[2];
};

#define KMEMLAB_IOC_INFO	_IOR(KMEMLAB_IOC_MAGIC, KMEMLAB_NR_INFO, struct kmemlab_info)
#define KMEMLAB_IOC_ALLOC	_IOWR(KMEMLAB_IOC_MAGIC, KMEMLAB_NR_ALLOC, struct kmemlab_alloc)
#define KMEMLAB_IOC_FREE	_IOWR(KMEMLAB_IOC_MAGIC, KMEMLAB_NR_FREE, struct kmemlab_free)
#define KMEMLAB_IOC_LIST	_IOWR(KMEMLAB_IOC_MAGIC, KMEMLAB_NR_LIST, struct kmemlab_list)
#define KMEMLAB_IOC_STATS	_IOR(KMEMLAB_IOC_MAGIC, KMEMLAB_NR_STATS, struct kmemlab_stats)
#define KMEMLAB_IOC_BENCH	_IOWR(KMEMLAB_IOC_MAGIC, KMEMLAB_NR_BENCH, struct kmemlab_bench)
#define KMEMLAB_IOC_TRIGGER	_IOWR(KMEMLAB_IOC_MAGIC, KMEMLAB_NR_TRIGGER, struct kmemlab_trigger)
#define KMEMLAB_IOC_ALLOC_BATCH	\
	_IOWR(KMEMLAB_IOC_MAGIC, KMEMLAB_NR_ALLOC_BATCH, struct kmemlab_alloc_batch)
#define KMEMLAB_IOC_FREE_BATCH	\
	_IOWR(KMEMLAB_IOC_MAGIC, KMEMLAB_NR_FREE_BATCH, struct kmemlab_free_batch)
/*
 * NOP: does nothing and returns 0. The cost of a round trip through the system call, the
 * file and the module's dispatch: what a benchmark subtracts to see a command's own cost.
 */
#define KMEMLAB_IOC_NOP		_IO(KMEMLAB_IOC_MAGIC, KMEMLAB_NR_NOP)

/*
 * The heap (UIO map 0): ordinary kernel pages, refcounted, that a mapping keeps alive
 * after unbind. Its first page holds the interrupt ring; the rest is free for userspace.
 */
#define KMEMLAB_RING_MAGIC		0x4b4d4c52	/* ring_header.magic: "KMLR" */
#define KMEMLAB_RING_VERSION		1
#define KMEMLAB_RING_SLOTS		126		/* (4096 - 64) / 32 records */
#define KMEMLAB_RING_RECORDS_OFFSET	64		/* first record, from the heap start */

#define KMEMLAB_SOURCE_IRQ		0	/* irq_record.source: the DT interrupt (button) */
#define KMEMLAB_SOURCE_TRIGGER		1	/* irq_record.source: the TRIGGER ioctl */

/* The ring's header at offset 0 of the heap. */
struct kmemlab_ring_header {
	__u32 magic;			/* KMEMLAB_RING_MAGIC */
	__u32 version;			/* KMEMLAB_RING_VERSION */
	__u32 slots;			/* KMEMLAB_RING_SLOTS */
	__u32 record_size;		/* sizeof(struct kmemlab_irq_record) */
	/*
	 * Sequence number of the newest record (0: none yet); record s sits in slot
	 * (s - 1) % slots. Written last, with release ordering.
	 */
	__u64 head;
	__u64 reserved[5];
};

/*
 * One UIO event, written under the same lock as, and before, the UIO event count is
 * incremented: record s is the one of the event that made the count s (modulo 2^32). A
 * reader copies a record, then checks that seq is still the one it expected: the kernel
 * writes seq as 0 first, then the fields, then the new seq.
 */
struct kmemlab_irq_record {
	__u64 seq;			/* the UIO event count after this event */
	__u64 ktime_ns;			/* ktime_get_ns() (CLOCK_MONOTONIC) when raised */
	__u32 source;			/* KMEMLAB_SOURCE_* */
	__u32 _pad;
	__u64 reserved;
};

/* Default size of the heap when the device-tree node has no yang,heap-size. */
#define KMEMLAB_HEAP_DEFAULT_SIZE	(1ULL << 20)

#endif /* _UAPI_LINUX_KMEMLAB_H */
