/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The C interface of uio_glue.c, declared again on the Rust side in uio.rs;
 * keep the two in step. Documentation is at the definitions.
 */
#ifndef KMEMLAB_UIO_GLUE_H
#define KMEMLAB_UIO_GLUE_H

#include <linux/types.h>

struct device;
struct page;
struct kmemlab_uio;

struct kmemlab_uio *kmemlab_uio_register(struct device *parent,
					 unsigned int irq,
					 unsigned long irq_flags,
					 const char *name,
					 const char *version,
					 struct page **pages,
					 unsigned long nr_pages, u32 slots);
u32 kmemlab_uio_unregister(struct kmemlab_uio *uio);
u64 kmemlab_uio_trigger(struct kmemlab_uio *uio);
u32 kmemlab_uio_event_count(const struct kmemlab_uio *uio);
u32 kmemlab_uio_irq_count(const struct kmemlab_uio *uio);

#endif /* KMEMLAB_UIO_GLUE_H */
