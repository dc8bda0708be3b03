/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The C interface of mm_glue.c, declared again on the Rust side in mem.rs;
 * keep the two in step. Documentation is at the definitions.
 */
#ifndef KMEMLAB_MM_GLUE_H
#define KMEMLAB_MM_GLUE_H

#include <linux/types.h>

unsigned long kmemlab_virt_to_pfn(const void *addr);
bool kmemlab_fatal_signal_pending(void);
void kmemlab_cond_resched(void);

#endif /* KMEMLAB_MM_GLUE_H */
