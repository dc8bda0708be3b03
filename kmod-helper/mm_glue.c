// SPDX-License-Identifier: GPL-2.0
/*
 * Memory-management and credential glue for kmemlab.
 *
 * Linux 7.3 has no Rust binding (and no exported function) for these: they
 * are macros or static inlines in C headers (kmalloc(), kvmalloc() and
 * __vmalloc() are alloc_hooks() macros; virt_to_pfn() and cond_resched()
 * are inlines), or need the printk %pK rule. The Rust side (mem.rs,
 * privilege.rs) declares them in an extern "C" block.
 *
 * The allocators are called here, from a function of their own, so that they
 * run exactly as a C driver's call of kmalloc(), kvmalloc() or __vmalloc()
 * does, and so that /proc/vmallocinfo names the caller of a vmalloc area
 * after the API: kmemlab_vmalloc+0x.../kmemlab_kvmalloc+0x.... The barrier()
 * after each call keeps the compiler from making it a sibling call (a jump):
 * GCC 14 does so on x86_64, and then vmallocinfo names the Rust caller.
 */

#include <linux/capability.h>
#include <linux/io.h>
#include <linux/mm.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/sprintf.h>
#include <linux/vmalloc.h>

#include "mm_glue.h"

/**
 * kmemlab_kmalloc - kmalloc(@size, @gfp)
 * @size:	bytes, at most KMALLOC_MAX_SIZE
 * @gfp:	allocation flags
 *
 * Return: the memory, for kfree(), or NULL.
 */
void *kmemlab_kmalloc(size_t size, gfp_t gfp)
{
	return kmalloc(size, gfp);
}

/**
 * kmemlab_kvmalloc - kvmalloc(@size, @gfp)
 * @size:	bytes, at most INT_MAX
 * @gfp:	allocation flags
 *
 * Return: the memory, for kvfree(), or NULL.
 */
void *kmemlab_kvmalloc(size_t size, gfp_t gfp)
{
	void *p = kvmalloc(size, gfp);

	barrier();
	return p;
}

/**
 * kmemlab_vmalloc - __vmalloc(@size, @gfp), vmalloc() with flags
 * @size:	bytes
 * @gfp:	allocation flags within GFP_VMALLOC_SUPPORTED
 *
 * Return: the memory, for kmemlab_vfree(), or NULL.
 */
void *kmemlab_vmalloc(size_t size, gfp_t gfp)
{
	void *p = __vmalloc(size, gfp);

	barrier();
	return p;
}

/**
 * kmemlab_vfree - vfree(@addr)
 * @addr:	memory from kmemlab_vmalloc()
 */
void kmemlab_vfree(const void *addr)
{
	vfree(addr);
}

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
 * kmemlab_cond_resched - let other tasks run during a long loop
 *
 * cond_resched(); a no-op on fully preemptible kernels. Process context only.
 */
void kmemlab_cond_resched(void)
{
	cond_resched();
}

/**
 * kmemlab_kaddr_visible - whether the current task may see kernel addresses
 *
 * The rule of kallsyms_show_value() (kernel/ksyms_common.c), which decides it
 * for /proc/kallsyms on the opener's credentials, for the current task (call
 * it from open(), where current is the opener): kptr_restrict 0 or 1 and
 * CAP_SYSLOG in the initial user namespace; kptr_restrict 2, nobody. Neither
 * kallsyms_show_value() nor kptr_restrict is exported to modules (kptr_restrict
 * only to printf_kunit), so the sysctl is read through the one exported user
 * of it, the %pK format (lib/vsprintf.c, restricted_pointer()): for a task
 * with CAP_SYSLOG it prints zeros under kptr_restrict 2 only. Two cases are
 * stricter than kallsyms: kptr_restrict 0 with perf_event_paranoid <= 1
 * (kallsyms then shows addresses to everyone; the sysctl is not exported),
 * and kptr_restrict 1 for a task whose effective and real ids differ (%pK
 * prints zeros for it). Capabilities are checked without audit records.
 * Process context only.
 *
 * Return: true when kernel virtual addresses may be shown.
 */
bool kmemlab_kaddr_visible(void)
{
	static const char probe;
	char buf[2 * sizeof(void *) + 1];
	size_t i;

	if (!capable_noaudit(CAP_SYSLOG))
		return false;
	snprintf(buf, sizeof(buf), "%pK", &probe);
	for (i = 0; buf[i]; i++)
		if (buf[i] != '0')
			return true;
	return false;
}
