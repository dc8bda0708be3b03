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
 */

#include <linux/atomic.h>
#include <linux/bitops.h>
#include <linux/device.h>
#include <linux/err.h>
#include <linux/interrupt.h>
#include <linux/irq.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/uio_driver.h>

#include "uio_glue.h"

/* Bits in kmemlab_uio.flags. */
enum {
	KMEMLAB_UIO_IRQ_DISABLED = 0,
};

/**
 * struct kmemlab_uio - a registered kmemlab UIO device
 * @info:	the UIO description; UIO keeps a pointer to it while registered
 * @lock:	serialises @flags and the mask state between handler and writers
 * @flags:	KMEMLAB_UIO_IRQ_DISABLED while the handler or userspace masked
 *		the line
 * @irqs:	interrupts the handler has taken
 * @unlazy:	IRQ_DISABLE_UNLAZY was set on the line at registration
 */
struct kmemlab_uio {
	struct uio_info info;
	spinlock_t lock;
	unsigned long flags;
	atomic_t irqs;
	bool unlazy;
};

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

/**
 * kmemlab_uio_register - register a UIO device for an interrupt line
 * @parent:	the bound device the interrupt belongs to
 * @irq:	Linux interrupt number, not 0
 * @name:	UIO name (/sys/class/uio/uioN/name); must outlive the device
 * @version:	UIO version string; must outlive the device
 *
 * Requests @irq (through the UIO core) with the trigger type the firmware
 * gave it. Must be called from process context.
 *
 * Return: a handle for the other kmemlab_uio_* functions, or an ERR_PTR().
 */
struct kmemlab_uio *kmemlab_uio_register(struct device *parent,
					 unsigned int irq, const char *name,
					 const char *version)
{
	struct kmemlab_uio *uio;
	int ret;

	if (!parent || !irq || !name || !version)
		return ERR_PTR(-EINVAL);

	uio = kzalloc(sizeof(*uio), GFP_KERNEL);
	if (!uio)
		return ERR_PTR(-ENOMEM);

	spin_lock_init(&uio->lock);
	atomic_set(&uio->irqs, 0);
	uio->info.name = name;
	uio->info.version = version;
	uio->info.irq = irq;
	uio->info.irq_flags = 0;
	uio->info.handler = kmemlab_uio_handler;
	uio->info.irqcontrol = kmemlab_uio_irqcontrol;

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
 * kmemlab_uio_notify - raise a UIO event without an interrupt
 * @uio:	a registered handle
 *
 * Counts an event and wakes readers as the interrupt does; the line's mask
 * state is left as it is. Callable from any context.
 */
void kmemlab_uio_notify(struct kmemlab_uio *uio)
{
	uio_event_notify(&uio->info);
}

/**
 * kmemlab_uio_event_count - the UIO event counter
 * @uio:	a registered handle
 *
 * Return: the count a read of /dev/uioN returns: interrupts handled plus
 * kmemlab_uio_notify() calls, wrapping at 2^32.
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
