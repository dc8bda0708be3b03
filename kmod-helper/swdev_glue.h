/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The C interface of swdev_glue.c, declared again on the Rust side in
 * swdev.rs; keep the two in step. Documentation is at the definitions.
 */
#ifndef KMEMLAB_SWDEV_GLUE_H
#define KMEMLAB_SWDEV_GLUE_H

struct platform_device;

struct platform_device *kmemlab_swdev_register(const char *name);
void kmemlab_swdev_unregister(struct platform_device *pdev);

#endif /* KMEMLAB_SWDEV_GLUE_H */
