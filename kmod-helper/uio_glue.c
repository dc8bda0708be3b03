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
 * mmap_prepare hook with the DMA-coherent page protection of the device, as
 * dma_direct_mmap() would, but filled page by page from a fault handler
 * instead of remapped up front, so that the mappings can be revoked:
 *
 * The heap is freed when the device is unbound, but a process may still have
 * it mapped (the mapping outlives the UIO device and its file descriptor).
 * UIO does not tear such mappings down. So kmemlab_uio_unregister() revokes
 * them before it returns, and the heap is freed only after that: it marks the
 * registration dead under kmemlab_map_lock, after which the fault handler
 * maps nothing (SIGBUS), then zaps every page already mapped with
 * unmap_mapping_range() on the address space of each device inode the heap
 * was mapped through. A page is only ever mapped by the fault handler, under
 * kmemlab_map_lock while the registration is live, into a VMA that is
 * already linked into its file's address space (a fault cannot happen before
 * mmap() has linked the VMA), so every such page is zapped. A mapping that is
 * set up up front (remap_pfn_range() in the mmap hook) could not be revoked
 * this way: its pages exist before the VMA is linked, and an unbind in between
 * would miss them.
 */

#include <linux/atomic.h>
#include <linux/bitops.h>
#include <linux/build_bug.h>
#include <linux/device.h>
#include <linux/dma-map-ops.h>
#include <linux/err.h>
#include <linux/interrupt.h>
#include <linux/irq.h>
#include <linux/fs.h>
#include <linux/list.h>
#include <linux/mm.h>
#include <linux/mutex.h>
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
 * @map_id:	id of this registration in its mappings' vm_private_data
 * @inodes:	device inodes the heap was mapped through (struct
 *		kmemlab_map_inode), under kmemlab_map_lock
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
	u64 map_id;
	struct list_head inodes;
};

/* A device inode whose address space holds mappings of the heap. */
struct kmemlab_map_inode {
	struct list_head node;
	struct inode *inode;	/* held with ihold() until the revoke */
};

/* Serialises the fault handler with the revoke, and guards the two below. */
static DEFINE_MUTEX(kmemlab_map_lock);
/* The registration whose heap may be mapped; NULL once revoked. */
static struct kmemlab_uio *kmemlab_map_live;
/* Id of the last registration; ids are never reused while the module is loaded. */
static u64 kmemlab_map_last_id;

/*
 * Writes the next record; @uio->lock must be held: by the interrupt handler
 * (in hard-irq context, or in its thread under threadirqs), or elsewhere with
 * spin_lock_irqsave(). The
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
 * Maps one page of the heap, if the registration the mapping was made for is
 * still live; see the comment at the top.
 */
static vm_fault_t kmemlab_heap_fault(struct vm_fault *vmf)
{
	struct vm_area_struct *vma = vmf->vma;
	u64 id = (uintptr_t)vma->vm_private_data;
	struct kmemlab_uio *uio;
	vm_fault_t ret = VM_FAULT_SIGBUS;

	mutex_lock(&kmemlab_map_lock);
	uio = kmemlab_map_live;
	if (uio && uio->map_id == id && vmf->pgoff < uio->heap_size >> PAGE_SHIFT)
		ret = vmf_insert_pfn(vma, vmf->address, uio->heap_pfn + vmf->pgoff);
	mutex_unlock(&kmemlab_map_lock);

	return ret;
}

static const struct vm_operations_struct kmemlab_heap_vm_ops = {
	.fault = kmemlab_heap_fault,
};

/*
 * Remembers the inode that @mapping belongs to, so that the revoke can find
 * the mappings made through it. kmemlab_map_lock must be held.
 */
static int kmemlab_map_track(struct kmemlab_uio *uio,
			     struct address_space *mapping)
{
	struct inode *inode = mapping->host;
	struct kmemlab_map_inode *mi;

	lockdep_assert_held(&kmemlab_map_lock);

	list_for_each_entry(mi, &uio->inodes, node)
		if (mi->inode == inode)
			return 0;

	mi = kmalloc(sizeof(*mi), GFP_KERNEL);
	if (!mi)
		return -ENOMEM;
	ihold(inode);
	mi->inode = inode;
	list_add(&mi->node, &uio->inodes);
	return 0;
}

/*
 * Maps the heap (map 0, the only one), shared only: a private writable
 * mapping would be a copy-on-write mapping of raw page frames. The page
 * protection is the one dma_pgprot() gives a device without DMA attributes.
 * The UIO core has checked that the mapping is no larger than the map and
 * holds its info_lock, so the registration is live; UIO selects the map by
 * the page offset, so a mapping always starts at the start of the heap.
 */
static int kmemlab_uio_mmap_prepare(struct uio_info *info,
				    struct vm_area_desc *desc)
{
	struct kmemlab_uio *uio = container_of(info, struct kmemlab_uio, info);
	int ret;

	if (desc->pgoff != 0 || vma_desc_size(desc) > uio->heap_size ||
	    vma_flags_is_cow_mapping(&desc->vma_flags))
		return -EINVAL;

	mutex_lock(&kmemlab_map_lock);
	ret = kmemlab_map_track(uio, desc->file->f_mapping);
	mutex_unlock(&kmemlab_map_lock);
	if (ret)
		return ret;

	if (!dev_is_dma_coherent(uio->parent))
		desc->page_prot = pgprot_dmacoherent(desc->page_prot);
	vma_desc_set_flags_mask(desc, VMA_REMAP_FLAGS);
	desc->vm_ops = &kmemlab_heap_vm_ops;
	desc->private_data = (void *)(uintptr_t)uio->map_id;
	return 0;
}

/*
 * Stops the fault handler from mapping the heap and unmaps every page of it
 * that is mapped; see the comment at the top.
 */
static void kmemlab_map_revoke(struct kmemlab_uio *uio)
{
	struct kmemlab_map_inode *mi, *tmp;
	LIST_HEAD(inodes);

	mutex_lock(&kmemlab_map_lock);
	if (kmemlab_map_live == uio)
		kmemlab_map_live = NULL;
	list_splice_init(&uio->inodes, &inodes);
	mutex_unlock(&kmemlab_map_lock);

	list_for_each_entry_safe(mi, tmp, &inodes, node) {
		unmap_mapping_range(mi->inode->i_mapping, 0, 0, 1);
		iput(mi->inode);
		kfree(mi);
	}
}

/**
 * kmemlab_uio_register - register a UIO device for an interrupt line
 * @parent:	the bound device the interrupt belongs to
 * @irq:	Linux interrupt number, not 0
 * @irq_flags:	IRQF_TRIGGER_* to request @irq with, or 0 for the trigger
 *		type the firmware gave it
 * @name:	UIO name (/sys/class/uio/uioN/name); must outlive the device
 * @version:	UIO version string; must outlive the device
 * @heap:	kernel address of the DMA-coherent heap allocated against
 *		@parent, its first page zeroed but for the ring header
 * @heap_phys:	physical address of the heap (page aligned, contiguous)
 * @heap_size:	size of the heap, a nonzero multiple of PAGE_SIZE
 * @slots:	number of records in the ring after the header, not 0
 *
 * Requests @irq (through the UIO core) and exposes the heap as map 0. The
 * heap must stay allocated until kmemlab_uio_unregister() returns. At most one
 * registration may exist at a time. Must be called from process context.
 *
 * Return: a handle for the other kmemlab_uio_* functions, or an ERR_PTR().
 */
struct kmemlab_uio *kmemlab_uio_register(struct device *parent,
					 unsigned int irq,
					 unsigned long irq_flags,
					 const char *name,
					 const char *version, void *heap,
					 phys_addr_t heap_phys, size_t heap_size,
					 u32 slots)
{
	struct kmemlab_uio *uio;
	int ret;

	if (!parent || !irq || !name || !version || !heap || !slots ||
	    irq_flags & ~IRQF_TRIGGER_MASK)
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
	INIT_LIST_HEAD(&uio->inodes);
	uio->info.name = name;
	uio->info.version = version;
	uio->info.irq = irq;
	uio->info.irq_flags = irq_flags;
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
	if ((irq_flags ? irq_flags : irq_get_trigger_type(irq)) &
	    IRQ_TYPE_LEVEL_MASK) {
		irq_set_status_flags(irq, IRQ_DISABLE_UNLAZY);
		uio->unlazy = true;
	}

	mutex_lock(&kmemlab_map_lock);
	if (kmemlab_map_live) {
		mutex_unlock(&kmemlab_map_lock);
		ret = -EBUSY;
		goto err;
	}
	uio->map_id = ++kmemlab_map_last_id;
	kmemlab_map_live = uio;
	mutex_unlock(&kmemlab_map_lock);

	ret = uio_register_device(parent, &uio->info);
	if (ret) {
		kmemlab_map_revoke(uio);
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
 * kmemlab_uio_unregister - remove a UIO device and free its interrupt
 * @uio:	a handle from kmemlab_uio_register(); invalid afterwards
 *
 * Waits for a running handler to finish, then revokes every mapping of the
 * heap: once this returns, no process can reach the heap and it may be
 * freed; a process that touches its old mapping gets SIGBUS. Files still
 * open on /dev/uioN get errors from then on. Must be called from process
 * context.
 *
 * Return: the final UIO event count (that of the ring, which is the same).
 */
u32 kmemlab_uio_unregister(struct kmemlab_uio *uio)
{
	unsigned int irq = uio->info.irq;
	u32 events;

	/* After this no mmap() of the heap can start, and the irq is free. */
	uio_unregister_device(&uio->info);
	kmemlab_map_revoke(uio);
	/* Every event wrote one record; nothing raises events any more. */
	events = (u32)READ_ONCE(uio->seq);
	if (uio->unlazy)
		irq_clear_status_flags(irq, IRQ_DISABLE_UNLAZY);
	kfree(uio);
	return events;
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
