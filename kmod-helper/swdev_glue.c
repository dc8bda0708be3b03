// SPDX-License-Identifier: GPL-2.0
/*
 * The software kmemlab device, for machines without a device-tree node for
 * kmemlab (a PC, or a board whose device tree cannot be edited).
 *
 * Linux 7.3 has no Rust binding for creating platform devices, so this file
 * registers one named like the driver, which binds it by name (the platform
 * bus falls back to matching names when neither a device-tree nor an ID table
 * matches). It has no firmware node, hence no interrupt: TRIGGER is its
 * button. Its DMA mask starts at 32 bits, as a device-tree device's does; the
 * driver sets it at probe like any other. The Rust side (swdev.rs) keeps the
 * device in `swdev::SoftwareDevice`, whose Drop unregisters it.
 */

#include <linux/dma-mapping.h>
#include <linux/err.h>
#include <linux/platform_device.h>

#include "swdev_glue.h"

/**
 * kmemlab_swdev_register - create and register the software device
 * @name:	device name, the driver's name; copied
 *
 * Return: the device, for kmemlab_swdev_unregister(), or an ERR_PTR().
 */
struct platform_device *kmemlab_swdev_register(const char *name)
{
	const struct platform_device_info info = {
		.name = name,
		.id = PLATFORM_DEVID_AUTO,
		.dma_mask = DMA_BIT_MASK(32),
	};

	return platform_device_register_full(&info);
}

/**
 * kmemlab_swdev_unregister - unbind and remove the software device
 * @pdev:	a device from kmemlab_swdev_register(); invalid afterwards
 */
void kmemlab_swdev_unregister(struct platform_device *pdev)
{
	platform_device_unregister(pdev);
}
