// SPDX-License-Identifier: GPL-2.0
/*
 * Memory-management glue for kmemlab.
 *
 * Linux 7.3 has no Rust binding (and no exported function) for these: they
 * are macros or static inlines in C headers. Each wrapper is one line; the
 * Rust side (mem.rs, bench.rs) declares them in an extern "C" block.
 */

#include <linux/mm.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>

#include "mm_glue.h"

/**
 * kmemlab_virt_to_pfn - page frame number of a linear-map address
 * @addr:	an address in the kernel's linear map (kmalloc, alloc_pages);
 *		not a vmalloc address, which needs vmalloc_to_pfn()
 *
 * Return: PHYS_PFN(virt_to_phys(@addr)).
 */
unsigned long kmemlab_virt_to_pfn(const void *addr)
{
	return PHYS_PFN(virt_to_phys(addr));
}

/**
 * kmemlab_fatal_signal_pending - whether the current task is being killed
 *
 * Return: fatal_signal_pending(current).
 */
bool kmemlab_fatal_signal_pending(void)
{
	return fatal_signal_pending(current);
}

/**
 * kmemlab_cond_resched - let other tasks run during a long loop
 *
 * cond_resched(); a no-op on fully preemptible kernels. Process context only.
 */
void kmemlab_cond_resched(void)
{
	cond_resched();
}
