/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The C interface of mm_glue.c, declared again on the Rust side in mem.rs and
 * privilege.rs; keep them in step. Documentation is at the definitions.
 */
#ifndef KMEMLAB_MM_GLUE_H
#define KMEMLAB_MM_GLUE_H

#include <linux/types.h>

void *kmemlab_kmalloc(size_t size, gfp_t gfp);
void *kmemlab_kvmalloc(size_t size, gfp_t gfp);
void *kmemlab_vmalloc(size_t size, gfp_t gfp);
void kmemlab_vfree(const void *addr);
unsigned long kmemlab_virt_to_pfn(const void *addr);
void kmemlab_cond_resched(void);
bool kmemlab_kaddr_visible(void);

#endif /* KMEMLAB_MM_GLUE_H */
