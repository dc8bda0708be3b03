// SPDX-License-Identifier: GPL-2.0
/*
 * UIO glue for kmemlab.
 *
 * Linux 7.3 has no Rust binding for <linux/uio_driver.h>, so this file
 * registers the UIO device, requests its interrupt and handles it in C. The
 * interface (uio_glue.h) is a few functions on an opaque handle; the Rust side
 * wraps the handle in `uio::Registration` (uio.rs), whose Drop unregisters.
 *
 * The interrupt. The UIO core of 7.3 counts the events of the interrupts it
 * requests in an interrupt thread (drivers/uio/uio.c: uio_interrupt_handler()
 * returns IRQ_WAKE_THREAD, uio_interrupt_thread() calls uio_event_notify()),
 * so several hard interrupts can end in one count, and an event raised by
 * kmemlab_uio_trigger() in between gets counted before the interrupt that
 * came first. So the device is registered with UIO_IRQ_CUSTOM and this file
 * requests the line itself: its hard handler masks the line (as
 * drivers/uio/uio_pdrv_genirq.c does: disable_irq_nosync(), and a write of 1
 * to /dev/uioN unmasks it), writes the event's ring record and counts the
 * event with uio_event_notify(), all under @lock; kmemlab_uio_trigger() does
 * the same under the same lock. So the UIO event count and the ring's
 * sequence number move together: when the count is N, record N exists and
 * is the record of the event that made the count N.
 *
 * Controllers whose interrupts are handled in a thread nested in their bus
 * driver's (I2C/SPI GPIO expanders) cannot have their line masked from a
 * hard handler (disable_irq_nosync() takes the chip's bus lock, a mutex):
 * kmemlab_uio_register() refuses them with one line saying so.
 *
 * The heap (map 0) is an array of order-0 kernel pages owned by the Rust side
 * (heap.rs); its first page holds the interrupt ring of uapi/src/abi.rs. A
 * mapping inserts the pages themselves (MMAP_MAP_KERNEL_PAGES, that is
 * vm_insert_pages()), so every mapped page holds a reference of its own: a
 * mapping that outlives the device (unbind, rmmod) keeps its pages, which are
 * freed when the last mapping goes. Nothing is pinned and nothing has to be
 * revoked. Map 0's sysfs address is 0: the heap has no physical address that
 * a user would need, and sysfs shows it to everyone.
 */

#include <linux/atomic.h>
#include <linux/bitops.h>
#include <linux/build_bug.h>
#include <linux/device.h>
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
 * @irq:	the Linux interrupt this file requested
 * @lock:	serialises @flags and the mask state between handler and
 *		writers, and the ring (@seq, the records) with the UIO count
 * @flags:	KMEMLAB_UIO_IRQ_DISABLED while the handler or userspace masked
 *		the line
 * @irqs:	interrupts the handler has taken
 * @unlazy:	IRQ_DISABLE_UNLAZY was set on the line at registration
 * @ring:	the ring header at the start of the heap (its kernel mapping)
 * @slots:	records in the ring
 * @seq:	sequence number of the newest record, equal to the UIO count
 * @pages:	the heap's pages, for mmap; owned by the caller
 * @nr_pages:	entries in @pages
 */
struct kmemlab_uio {
	struct uio_info info;
	unsigned int irq;
	spinlock_t lock;
	unsigned long flags;
	atomic_t irqs;
	bool unlazy;
	struct kmemlab_ring_header *ring;
	u32 slots;
	u64 seq;
	struct page **pages;
	unsigned long nr_pages;
};

/*
 * Writes the next record and counts its event; @uio->lock must be held. The
 * slot's seq is 0 while its other fields change, so a reader that copies a
 * record and then finds the seq it expected has a consistent copy. The record
 * and the header's head are published (release) before the count is
 * incremented, so a reader that saw the count N and then loads record N's seq
 * with acquire ordering finds N there (or retries until it does).
 *
 * Return: the event's sequence number.
 */
static u64 kmemlab_ring_event(struct kmemlab_uio *uio, u32 source)
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
	smp_store_release(&rec->seq, seq);
	smp_store_release(&uio->ring->head, seq);
	/* uio_event_notify()'s atomic_inc() is unordered: order the record first. */
	smp_mb__before_atomic();
	uio_event_notify(&uio->info);
	return seq;
}

static irqreturn_t kmemlab_irq_handler(int irq, void *dev_id)
{
	struct kmemlab_uio *uio = dev_id;
	unsigned long flags;

	/*
	 * irqsave: under threadirqs this handler runs in a thread with
	 * interrupts enabled, and kmemlab_uio_trigger() takes the lock too.
	 */
	spin_lock_irqsave(&uio->lock, flags);
	/* Masked until userspace has handled the event and writes 1. */
	if (!__test_and_set_bit(KMEMLAB_UIO_IRQ_DISABLED, &uio->flags))
		disable_irq_nosync(irq);
	kmemlab_ring_event(uio, KMEMLAB_SOURCE_IRQ);
	spin_unlock_irqrestore(&uio->lock, flags);

	atomic_inc(&uio->irqs);

	return IRQ_HANDLED;
}

static int kmemlab_uio_irqcontrol(struct uio_info *info, s32 irq_on)
{
	struct kmemlab_uio *uio = container_of(info, struct kmemlab_uio, info);
	unsigned long flags;

	/* Without a line there is nothing to mask; writes still succeed. */
	if (!uio->irq)
		return 0;

	spin_lock_irqsave(&uio->lock, flags);
	if (irq_on) {
		if (__test_and_clear_bit(KMEMLAB_UIO_IRQ_DISABLED, &uio->flags))
			enable_irq(uio->irq);
	} else {
		if (!__test_and_set_bit(KMEMLAB_UIO_IRQ_DISABLED, &uio->flags))
			disable_irq_nosync(uio->irq);
	}
	spin_unlock_irqrestore(&uio->lock, flags);

	return 0;
}

/*
 * Maps the heap (map 0, the only one) by inserting its pages: each mapped
 * page takes a reference, so the mapping keeps them after the device is gone.
 * Shared only: a private writable mapping would copy pages on write, away
 * from the kernel's ring. The UIO core has checked that the mapping is no
 * larger than the map and holds its info_lock across this call and the
 * insertion, so the registration, and the page array, are live; UIO selects
 * the map by the page offset, so a mapping always starts at the start of the
 * heap.
 */
static int kmemlab_uio_mmap_prepare(struct uio_info *info,
				    struct vm_area_desc *desc)
{
	struct kmemlab_uio *uio = container_of(info, struct kmemlab_uio, info);

	if (desc->pgoff != 0 || vma_desc_pages(desc) > uio->nr_pages ||
	    vma_flags_is_cow_mapping(&desc->vma_flags))
		return -EINVAL;

	vma_desc_set_flags(desc, VMA_DONTEXPAND_BIT, VMA_DONTDUMP_BIT);
	mmap_action_map_kernel_pages_full(desc, uio->pages);
	return 0;
}

/*
 * Whether @irq's controller can take disable_irq_nosync() from a hard
 * handler: not when it sits behind a slow bus (its irq_bus_lock is a mutex),
 * which is also when its interrupts are nested in the bus driver's thread.
 */
static bool kmemlab_irq_is_slow(unsigned int irq)
{
	struct irq_data *data = irq_get_irq_data(irq);

	return data && data->chip && data->chip->irq_bus_lock;
}

/**
 * kmemlab_uio_register - register a UIO device for an interrupt line
 * @parent:	the bound device the interrupt belongs to
 * @irq:	Linux interrupt number, or 0 for none (the software device:
 *		kmemlab_uio_trigger() is then the only source of events)
 * @irq_flags:	IRQF_TRIGGER_* to request @irq with, or 0 for the trigger
 *		type the firmware gave it
 * @name:	UIO name (/sys/class/uio/uioN/name); must outlive the device
 * @version:	UIO version string; must outlive the device
 * @pages:	the heap: order-0 pages with a reference held by the caller,
 *		the first one zeroed but for the ring header
 * @nr_pages:	entries in @pages, not 0
 * @slots:	number of records in the ring after the header, not 0
 *
 * Exposes the heap as map 0 and requests @irq. @pages (the array and the
 * caller's references) must stay until kmemlab_uio_unregister() returns.
 * Must be called from process context. Failures are logged as one line.
 *
 * Return: a handle for the other kmemlab_uio_* functions, or an ERR_PTR().
 */
struct kmemlab_uio *kmemlab_uio_register(struct device *parent,
					 unsigned int irq,
					 unsigned long irq_flags,
					 const char *name,
					 const char *version,
					 struct page **pages,
					 unsigned long nr_pages, u32 slots)
{
	struct kmemlab_uio *uio;
	int ret;

	if (!parent || !name || !version || !pages || !nr_pages ||
	    !pages[0] || !slots || irq_flags & ~IRQF_TRIGGER_MASK)
		return ERR_PTR(-EINVAL);
	if (sizeof(struct kmemlab_ring_header) +
		    (size_t)slots * sizeof(struct kmemlab_irq_record) >
	    PAGE_SIZE)
		return ERR_PTR(-EINVAL);

	if (irq && kmemlab_irq_is_slow(irq)) {
		dev_err(parent,
			"irq %u is on a controller behind a slow bus (an I2C/SPI GPIO expander?): its line cannot be masked from a hard interrupt handler, which kmemlab needs; not supported\n",
			irq);
		return ERR_PTR(-EOPNOTSUPP);
	}

	uio = kzalloc(sizeof(*uio), GFP_KERNEL);
	if (!uio)
		return ERR_PTR(-ENOMEM);

	spin_lock_init(&uio->lock);
	atomic_set(&uio->irqs, 0);
	uio->irq = irq;
	uio->ring = page_address(pages[0]);
	uio->slots = slots;
	uio->seq = 0;
	uio->pages = pages;
	uio->nr_pages = nr_pages;
	uio->info.name = name;
	uio->info.version = version;
	uio->info.irq = UIO_IRQ_CUSTOM;
	uio->info.irqcontrol = kmemlab_uio_irqcontrol;
	uio->info.mmap_prepare = kmemlab_uio_mmap_prepare;
	/* Mapped by mmap_prepare; no address to publish. */
	uio->info.mem[0].name = "heap";
	uio->info.mem[0].addr = 0;
	uio->info.mem[0].size = (resource_size_t)nr_pages << PAGE_SHIFT;
	uio->info.mem[0].memtype = UIO_MEM_NONE;

	/*
	 * As uio_pdrv_genirq: a level interrupt must be masked at once, not
	 * lazily on its next occurrence, or it fires again until userspace
	 * has cleared its cause.
	 */
	if (irq && (irq_flags ? irq_flags : irq_get_trigger_type(irq)) &
		   IRQ_TYPE_LEVEL_MASK) {
		irq_set_status_flags(irq, IRQ_DISABLE_UNLAZY);
		uio->unlazy = true;
	}

	ret = uio_register_device(parent, &uio->info);
	if (ret) {
		dev_err(parent, "failed to register UIO device %s: error %d\n",
			name, ret);
		goto err;
	}

	/* After uio_register_device(): the handler counts UIO events. */
	ret = irq ? request_irq(irq, kmemlab_irq_handler, irq_flags, name, uio) : 0;
	if (ret) {
		/*
		 * -EINVAL also for a trigger type the controller refuses,
		 * and for a line nested in a thread without a slow bus.
		 */
		dev_err(parent, "failed to request irq %u: error %d\n", irq,
			ret);
		uio_unregister_device(&uio->info);
		goto err;
	}

	return uio;

err:
	if (uio->unlazy)
		irq_clear_status_flags(irq, IRQ_DISABLE_UNLAZY);
	kfree(uio);
	return ERR_PTR(ret);
}

/**
 * kmemlab_uio_unregister - free the interrupt and remove the UIO device
 * @uio:	a handle from kmemlab_uio_register(); invalid afterwards
 *
 * Frees the interrupt (waiting for a running handler), then removes the UIO
 * device: files still open on /dev/uioN get errors from then on, mappings of
 * the heap keep their pages. Once this returns the page array and the
 * caller's references may go. Must be called from process context, not
 * concurrently with kmemlab_uio_trigger().
 *
 * Return: the final UIO event count (the ring's sequence number).
 */
u32 kmemlab_uio_unregister(struct kmemlab_uio *uio)
{
	u32 events;

	if (uio->irq)
		free_irq(uio->irq, uio);
	uio_unregister_device(&uio->info);
	/* Nothing raises events any more. */
	events = (u32)READ_ONCE(uio->seq);
	if (uio->unlazy)
		irq_clear_status_flags(uio->irq, IRQ_DISABLE_UNLAZY);
	kfree(uio);
	return events;
}

/**
 * kmemlab_uio_trigger - raise a UIO event without an interrupt
 * @uio:	a registered handle
 *
 * Writes a SOURCE_TRIGGER record to the ring and counts its event, as the
 * interrupt handler does; the line's mask state is left as it is. Callable
 * from any context but NMI.
 *
 * Return: the event's sequence number (its UIO count, before wrapping).
 */
u64 kmemlab_uio_trigger(struct kmemlab_uio *uio)
{
	unsigned long flags;
	u64 seq;

	spin_lock_irqsave(&uio->lock, flags);
	seq = kmemlab_ring_event(uio, KMEMLAB_SOURCE_TRIGGER);
	spin_unlock_irqrestore(&uio->lock, flags);
	return seq;
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
