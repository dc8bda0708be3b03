// SPDX-License-Identifier: GPL-2.0
/*
 * GPIO consumer glue for kmemlab.
 *
 * Linux 7.3 has no Rust binding for GPIO consumers (<linux/gpio/consumer.h>).
 * This file takes the button-gpios line of the device as an input and finds
 * its interrupt; the Rust side (gpio.rs) keeps the descriptor in
 * `gpio::Button`, whose Drop puts it back.
 */

#include <linux/device.h>
#include <linux/err.h>
#include <linux/errno.h>
#include <linux/gpio/consumer.h>
#include <linux/interrupt.h>

#include "gpio_glue.h"

/**
 * kmemlab_button_get - take the button-gpios line and its interrupt
 * @dev:	the device being probed
 * @debounce_ms: debounce-interval in ms (at most UINT_MAX / 1000), 0 for none
 * @irq:	out: the line's Linux interrupt number
 * @irq_flags:	out: the trigger to request @irq with: the edge into the active
 *		level, IRQF_TRIGGER_FALLING for an active-low line (the
 *		descriptor's active-low flag comes from the GPIO specifier) and
 *		IRQF_TRIGGER_RISING for an active-high one. An interrupt found
 *		with gpiod_to_irq() has no trigger type of its own.
 *
 * Requests the line as an input and applies the debounce time; a line on a
 * controller that sleeps is refused (-EOPNOTSUPP, one error line); a controller
 * that cannot debounce (-ENOTSUPP, -EOPNOTSUPP: PL061, BCM2835, RP1) gets one
 * info line and the button works undebounced. Every other failure is logged
 * as one error line naming the property, except -EPROBE_DEFER, which is only
 * recorded as the deferral reason (dev_err_probe()).
 *
 * Return: the descriptor, for kmemlab_button_put(), or an ERR_PTR().
 */
struct gpio_desc *kmemlab_button_get(struct device *dev, u32 debounce_ms,
				     unsigned int *irq,
				     unsigned long *irq_flags)
{
	struct gpio_desc *desc;
	int ret;

	desc = gpiod_get(dev, "button", GPIOD_IN);
	if (IS_ERR(desc)) {
		dev_err_probe(dev, PTR_ERR(desc), "cannot get button-gpios\n");
		return desc;
	}

	/*
	 * A controller whose accesses sleep (an I2C/SPI expander) handles its
	 * interrupts in a thread nested in its bus driver's, and masking its
	 * line takes a mutex: kmemlab's hard handler cannot work with it.
	 */
	if (gpiod_cansleep(desc)) {
		ret = -EOPNOTSUPP;
		dev_err(dev,
			"button-gpios is on a GPIO controller that sleeps (an I2C/SPI expander?): its interrupt cannot be masked from a hard interrupt handler, which kmemlab needs; not supported\n");
		goto put;
	}

	if (debounce_ms) {
		ret = gpiod_set_debounce(desc, debounce_ms * 1000);
		if (ret == -ENOTSUPP || ret == -EOPNOTSUPP) {
			dev_info(dev,
				 "debounce-interval %u ms ignored: the GPIO controller cannot debounce\n",
				 debounce_ms);
		} else if (ret) {
			dev_err_probe(dev, ret,
				      "cannot apply debounce-interval %u ms to button-gpios\n",
				      debounce_ms);
			goto put;
		}
	}

	/* Negative is an error; 0 is no interrupt either. */
	ret = gpiod_to_irq(desc);
	if (ret <= 0) {
		if (ret == 0)
			ret = -ENXIO;
		dev_err_probe(dev, ret, "button-gpios line has no interrupt\n");
		goto put;
	}

	*irq = ret;
	*irq_flags = gpiod_is_active_low(desc) ? IRQF_TRIGGER_FALLING :
						 IRQF_TRIGGER_RISING;
	return desc;

put:
	gpiod_put(desc);
	return ERR_PTR(ret);
}

/**
 * kmemlab_button_put - give the line back
 * @desc:	a descriptor from kmemlab_button_get(); invalid afterwards
 *
 * The interrupt must have been freed first.
 */
void kmemlab_button_put(struct gpio_desc *desc)
{
	gpiod_put(desc);
}
