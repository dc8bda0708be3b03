/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The C interface of gpio_glue.c, declared again on the Rust side in gpio.rs;
 * keep the two in step. Documentation is at the definitions.
 */
#ifndef KMEMLAB_GPIO_GLUE_H
#define KMEMLAB_GPIO_GLUE_H

#include <linux/types.h>

struct device;
struct gpio_desc;

struct gpio_desc *kmemlab_button_get(struct device *dev, u32 debounce_ms,
				     unsigned int *irq,
				     unsigned long *irq_flags);
void kmemlab_button_put(struct gpio_desc *desc);

#endif /* KMEMLAB_GPIO_GLUE_H */
