// SPDX-License-Identifier: GPL-2.0
/*
 * UIO glue for kmemlab.
 *
 * Linux 7.3 has no Rust binding for <linux/uio_driver.h>, so this file
 * registers the UIO device and implements its interrupt handling in C. The
 * interface (uio_glue.h) is a few functions on an opaque handle; the Rust side
 * wraps the handle in `uio::Registration` (uio.rs), whose Drop unregisters.
 *
 * Interrupt handling is that of drivers/uio/uio_pdrv_genirq.c: the handler
 * masks the line with disable_irq_nosync() and returns IRQ_HANDLED, upon which
 * the UIO core increments its event counter and wakes readers of /dev/uioN;
 * writing 1 to /dev/uioN unmasks the line again, writing 0 masks it. A flag
 * bit under a spinlock tracks the mask state, so the disable depth never goes
 * beyond one however the handler and writers interleave.
 *
 * The device's DMA-coherent heap (allocated by the Rust side) is UIO map 0.
 * Its first page holds the interrupt ring of uapi/src/abi.rs: a header, then
 * records. Every UIO event gets one record, written before the event is
 * counted: by the interrupt handler (SOURCE_IRQ; the UIO core counts the event
 * when the handler returns) or by kmemlab_uio_trigger() (SOURCE_TRIGGER). Both
 * write under @lock, so sequence numbers are handed out in order; since every
 * record is written before its event is counted, when a read of /dev/uioN
 * returns N, the records with sequence numbers 1..N are complete.
 *
 * UIO_MEM_DMA_COHERENT is for legacy drivers only, so map 0 is mapped by an
 * mmap_prepare hook that does what dma_direct_mmap() does: a PFN remap of the
 * heap with the DMA-coherent page protection of the device.
 */

#include <linux/atomic.h>
#include <linux/bitops.h>
#include <linux/build_bug.h>
#include <linux/device.h>
#include <linux/dma-map-ops.h>
#include <linux/err.h>
#include <linux/interrupt.h>
#include <linux/irq.h>
#include <linux/mm.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/stddef.h>
#include <linux/timekeeping.h>
#include <linux/uio_driver.h>

#include "uio_glue.h"

/* The ring's layout: struct RingHeader and struct IrqRecord of abi.rs. */
struct kmemlab_ring_header {
	u32 magic;
	u32 version;
	u32 slots;
	u32 record_size;
	u64 head;
	u64 reserved[5];
};

struct kmemlab_irq_record {
	u64 seq;
	u64 ktime_ns;
	u32 source;
	u32 pad;
	u64 reserved;
};

static_assert(sizeof(struct kmemlab_ring_header) == 64);
static_assert(offsetof(struct kmemlab_ring_header, head) == 16);
static_assert(sizeof(struct kmemlab_irq_record) == 32);
static_assert(offsetof(struct kmemlab_irq_record, source) == 16);

/* IrqRecord::source values of abi.rs. */
enum {
	KMEMLAB_SOURCE_IRQ = 0,
	KMEMLAB_SOURCE_TRIGGER = 1,
};

/* Bits in kmemlab_uio.flags. */
enum {
	KMEMLAB_UIO_IRQ_DISABLED = 0,
};

/**
 * struct kmemlab_uio - a registered kmemlab UIO device
 * @info:	the UIO description; UIO keeps a pointer to it while registered
 * @parent:	the bound device; the heap was allocated against it
 * @lock:	serialises @flags and the mask state between handler and
 *		writers, and the ring (@seq and the records)
 * @flags:	KMEMLAB_UIO_IRQ_DISABLED while the handler or userspace masked
 *		the line
 * @irqs:	interrupts the handler has taken
 * @unlazy:	IRQ_DISABLE_UNLAZY was set on the line at registration
 * @ring:	the ring header at the start of the heap (its kernel mapping)
 * @slots:	records in the ring
 * @seq:	sequence number of the newest record
 * @heap_pfn:	first page frame of the heap, for mmap
 * @heap_size:	size of the heap in bytes, a multiple of PAGE_SIZE
 */
struct kmemlab_uio {
	struct uio_info info;
	struct device *parent;
	spinlock_t lock;
	unsigned long flags;
	atomic_t irqs;
	bool unlazy;
	struct kmemlab_ring_header *ring;
	u32 slots;
	u64 seq;
	unsigned long heap_pfn;
	size_t heap_size;
};

/*
 * Writes the next record; @uio->lock must be held with interrupts off. The
 * slot's seq is 0 while its other fields change, so a reader that copies a
 * record and then finds the seq it expected has a consistent copy.
 */
static void kmemlab_ring_write(struct kmemlab_uio *uio, u32 source)
{
	struct kmemlab_irq_record *rec;
	u64 seq;

	lockdep_assert_held(&uio->lock);

	seq = ++uio->seq;
	rec = (struct kmemlab_irq_record *)(uio->ring + 1) +
	      (seq - 1) % uio->slots;

	WRITE_ONCE(rec->seq, 0);
	smp_wmb();
	WRITE_ONCE(rec->ktime_ns, ktime_get_ns());
	WRITE_ONCE(rec->source, source);
	WRITE_ONCE(rec->pad, 0);
	WRITE_ONCE(rec->reserved, 0);
	smp_wmb();
	WRITE_ONCE(rec->seq, seq);
	smp_store_release(&uio->ring->head, seq);
}

static irqreturn_t kmemlab_uio_handler(int irq, struct uio_info *info)
{
	struct kmemlab_uio *uio = container_of(info, struct kmemlab_uio, info);

	/*
	 * Mask the line until userspace has handled the event and writes 1;
	 * the UIO core counts the event and wakes readers once this returns.
	 */
	spin_lock(&uio->lock);
	if (!__test_and_set_bit(KMEMLAB_UIO_IRQ_DISABLED, &uio->flags))
		disable_irq_nosync(irq);
	kmemlab_ring_write(uio, KMEMLAB_SOURCE_IRQ);
	spin_unlock(&uio->lock);

	atomic_inc(&uio->irqs);

	return IRQ_HANDLED;
}

static int kmemlab_uio_irqcontrol(struct uio_info *info, s32 irq_on)
{
	struct kmemlab_uio *uio = container_of(info, struct kmemlab_uio, info);
	unsigned long flags;

	spin_lock_irqsave(&uio->lock, flags);
	if (irq_on) {
		if (__test_and_clear_bit(KMEMLAB_UIO_IRQ_DISABLED, &uio->flags))
			enable_irq(info->irq);
	} else {
		if (!__test_and_set_bit(KMEMLAB_UIO_IRQ_DISABLED, &uio->flags))
			disable_irq_nosync(info->irq);
	}
	spin_unlock_irqrestore(&uio->lock, flags);

	return 0;
}

/*
 * Maps the heap (map 0, the only one) as dma_direct_mmap() would: a PFN remap
 * with the page protection that dma_pgprot() gives a device without DMA
 * attributes. The UIO core has checked that the mapping is no larger than the
 * map; UIO selects the map by the page offset, so a mapping always starts at
 * the start of the heap.
 */
static int kmemlab_uio_mmap_prepare(struct uio_info *info,
				    struct vm_area_desc *desc)
{
	struct kmemlab_uio *uio = container_of(info, struct kmemlab_uio, info);

	if (desc->pgoff != 0 || vma_desc_size(desc) > uio->heap_size)
		return -EINVAL;

	if (!dev_is_dma_coherent(uio->parent))
		desc->page_prot = pgprot_dmacoherent(desc->page_prot);
	mmap_action_remap_full(desc, uio->heap_pfn);
	return 0;
}

/**
 * kmemlab_uio_register - register a UIO device for an interrupt line
 * @parent:	the bound device the interrupt belongs to
 * @irq:	Linux interrupt number, not 0
 * @name:	UIO name (/sys/class/uio/uioN/name); must outlive the device
 * @version:	UIO version string; must outlive the device
 * @heap:	kernel address of the DMA-coherent heap allocated against
 *		@parent, its first page zeroed but for the ring header
 * @heap_phys:	physical address of the heap (page aligned, contiguous)
 * @heap_size:	size of the heap, a nonzero multiple of PAGE_SIZE
 * @slots:	number of records in the ring after the header, not 0
 *
 * Requests @irq (through the UIO core) with the trigger type the firmware
 * gave it, and exposes the heap as map 0. The heap must stay allocated until
 * kmemlab_uio_unregister() returns. Must be called from process context.
 *
 * Return: a handle for the other kmemlab_uio_* functions, or an ERR_PTR().
 */
struct kmemlab_uio *kmemlab_uio_register(struct device *parent,
					 unsigned int irq, const char *name,
					 const char *version, void *heap,
					 phys_addr_t heap_phys, size_t heap_size,
					 u32 slots)
{
	struct kmemlab_uio *uio;
	int ret;

	if (!parent || !irq || !name || !version || !heap || !slots)
		return ERR_PTR(-EINVAL);
	if (!heap_size || !PAGE_ALIGNED(heap_size) || !PAGE_ALIGNED(heap_phys) ||
	    sizeof(struct kmemlab_ring_header) +
			    (size_t)slots * sizeof(struct kmemlab_irq_record) >
		    min_t(size_t, heap_size, PAGE_SIZE))
		return ERR_PTR(-EINVAL);

	uio = kzalloc(sizeof(*uio), GFP_KERNEL);
	if (!uio)
		return ERR_PTR(-ENOMEM);

	spin_lock_init(&uio->lock);
	atomic_set(&uio->irqs, 0);
	uio->parent = parent;
	uio->ring = heap;
	uio->slots = slots;
	uio->seq = 0;
	uio->heap_pfn = PHYS_PFN(heap_phys);
	uio->heap_size = heap_size;
	uio->info.name = name;
	uio->info.version = version;
	uio->info.irq = irq;
	uio->info.irq_flags = 0;
	uio->info.handler = kmemlab_uio_handler;
	uio->info.irqcontrol = kmemlab_uio_irqcontrol;
	uio->info.mmap_prepare = kmemlab_uio_mmap_prepare;
	/*
	 * Map 0's sysfs attributes: addr is the physical address, as for
	 * UIO_MEM_PHYS; the mapping itself is done by mmap_prepare.
	 */
	uio->info.mem[0].name = "heap";
	uio->info.mem[0].addr = heap_phys;
	uio->info.mem[0].size = heap_size;
	uio->info.mem[0].memtype = UIO_MEM_PHYS;

	/*
	 * As uio_pdrv_genirq: a level interrupt must be masked at once, not
	 * lazily on its next occurrence, or it fires again until userspace
	 * has cleared its cause.
	 */
	if (irq_get_trigger_type(irq) & IRQ_TYPE_LEVEL_MASK) {
		irq_set_status_flags(irq, IRQ_DISABLE_UNLAZY);
		uio->unlazy = true;
	}

	ret = uio_register_device(parent, &uio->info);
	if (ret) {
		if (uio->unlazy)
			irq_clear_status_flags(irq, IRQ_DISABLE_UNLAZY);
		kfree(uio);
		return ERR_PTR(ret);
	}

	return uio;
}

/**
 * kmemlab_uio_unregister - remove a UIO device and free its interrupt
 * @uio:	a handle from kmemlab_uio_register(); invalid afterwards
 *
 * Waits for a running handler to finish. Files still open on /dev/uioN get
 * errors from then on. Must be called from process context.
 */
void kmemlab_uio_unregister(struct kmemlab_uio *uio)
{
	unsigned int irq = uio->info.irq;

	uio_unregister_device(&uio->info);
	if (uio->unlazy)
		irq_clear_status_flags(irq, IRQ_DISABLE_UNLAZY);
	kfree(uio);
}

/**
 * kmemlab_uio_trigger - raise a UIO event without an interrupt
 * @uio:	a registered handle
 *
 * Writes a SOURCE_TRIGGER record to the ring, then counts an event and wakes
 * readers as the interrupt does; the line's mask state is left as it is.
 * Callable from any context but NMI.
 */
void kmemlab_uio_trigger(struct kmemlab_uio *uio)
{
	unsigned long flags;

	spin_lock_irqsave(&uio->lock, flags);
	kmemlab_ring_write(uio, KMEMLAB_SOURCE_TRIGGER);
	uio_event_notify(&uio->info);
	spin_unlock_irqrestore(&uio->lock, flags);
}

/**
 * kmemlab_uio_event_count - the UIO event counter
 * @uio:	a registered handle
 *
 * Return: the count a read of /dev/uioN returns: interrupts handled plus
 * kmemlab_uio_trigger() calls, wrapping at 2^32.
 */
u32 kmemlab_uio_event_count(const struct kmemlab_uio *uio)
{
	return (u32)atomic_read(&uio->info.uio_dev->event);
}

/**
 * kmemlab_uio_irq_count - interrupts the handler has taken
 * @uio:	a registered handle
 *
 * Return: the number of handler calls, wrapping at 2^32.
 */
u32 kmemlab_uio_irq_count(const struct kmemlab_uio *uio)
{
	return (u32)atomic_read(&uio->irqs);
}
