// SPDX-License-Identifier: GPL-2.0

//! The device-tree node (`yang,mydevice`, binding in dts/bindings/misc/yang,mydevice.yaml):
//! reading and checking its properties, each bad one reported as one line that names it.

use kernel::{
    device::Device,
    prelude::*, //
};

use crate::gpio;
use crate::uapi;

/// Device-tree property with the heap size in bytes (u32).
const HEAP_SIZE_PROP: &CStr = c"yang,heap-size";
/// Device-tree property with the button's GPIO line (the consumer name is "button").
const BUTTON_GPIOS_PROP: &CStr = c"button-gpios";
/// Device-tree property with the button line's debounce time in ms (u32).
const DEBOUNCE_PROP: &CStr = c"debounce-interval";
/// Device-tree property with the width of the device's DMA addresses in bits (u32).
const DMA_BITS_PROP: &CStr = c"yang,dma-bits";
/// Largest heap size accepted from the device tree.
const HEAP_MAX_SIZE: u64 = 64 << 20;
/// DMA address width without `yang,dma-bits`: the 32 bits of the boards kmemlab comes from.
const DMA_BITS_DEFAULT: u32 = 32;
/// Narrowest DMA address width accepted (ISA-era 24-bit devices).
const DMA_BITS_MIN: u32 = 24;

/// Reads the u32 property `name`: `None` when absent. Anything but one 32-bit cell is an error,
/// logged as one line that names the property (the OF core's own readers would silently take the
/// first four bytes of a longer value).
fn read_u32_prop(dev: &Device, name: &CStr) -> Result<Option<u32>> {
    let Some(node) = dev.fwnode() else {
        return Ok(None);
    };
    if !node.property_present(name) {
        return Ok(None);
    }
    let len = node.property_count_elem::<u8>(name).unwrap_or(0);
    if len != size_of::<u32>() {
        dev_err!(
            dev,
            "{} is malformed: want one 32-bit cell (4 bytes), found {} bytes\n",
            name,
            len
        );
        return Err(EINVAL);
    }
    node.property_read::<u32>(name)
        .optional()
        .map(Some)
        .ok_or_else(|| {
            dev_err!(dev, "{} is malformed: cannot read it as a u32\n", name);
            EINVAL
        })
}

/// Reads and checks `yang,heap-size`: absent gives [`uapi::HEAP_DEFAULT_SIZE`].
pub(crate) fn heap_size(dev: &Device) -> Result<usize> {
    let size = read_u32_prop(dev, HEAP_SIZE_PROP)?.map_or(uapi::HEAP_DEFAULT_SIZE, u64::from);
    let page = kernel::page::PAGE_SIZE as u64;
    if size < page || size % page != 0 || size > HEAP_MAX_SIZE {
        dev_err!(
            dev,
            "{} {} is invalid: want a multiple of the page size {} from {} to {}\n",
            HEAP_SIZE_PROP,
            size,
            page,
            page,
            HEAP_MAX_SIZE
        );
        return Err(EINVAL);
    }
    Ok(usize::try_from(size)?)
}

/// How the button is wired, from the device-tree node.
pub(crate) enum Wiring {
    /// No firmware node at all: the software device (`software_device=1`), whose button is
    /// TRIGGER.
    None,
    /// `interrupts` or `interrupts-extended`.
    Interrupt,
    /// `button-gpios`, with `debounce-interval` in ms (0: none).
    Gpio { debounce_ms: u32 },
}

/// Reads and checks the button's wiring: exactly one of an interrupt and `button-gpios`, and
/// `debounce-interval` only with `button-gpios`.
pub(crate) fn wiring(dev: &Device) -> Result<Wiring> {
    if dev.fwnode().is_none() {
        return Ok(Wiring::None);
    }
    let present = |name: &CStr| dev.fwnode().is_some_and(|n| n.property_present(name));
    let irq = present(c"interrupts") || present(c"interrupts-extended");
    let gpio = present(BUTTON_GPIOS_PROP);
    let debounce = read_u32_prop(dev, DEBOUNCE_PROP)?;
    match (irq, gpio) {
        (true, true) => {
            dev_err!(
                dev,
                "both interrupts and {} are set: the button is wired one way, give one\n",
                BUTTON_GPIOS_PROP
            );
            Err(EINVAL)
        }
        (false, false) => {
            dev_err!(
                dev,
                "no button: the node needs interrupts, interrupts-extended or {}\n",
                BUTTON_GPIOS_PROP
            );
            Err(EINVAL)
        }
        (true, false) if debounce.is_some() => {
            dev_err!(
                dev,
                "{} needs {}: an interrupt cannot be debounced\n",
                DEBOUNCE_PROP,
                BUTTON_GPIOS_PROP
            );
            Err(EINVAL)
        }
        (true, false) => Ok(Wiring::Interrupt),
        (false, true) => {
            let debounce_ms = debounce.unwrap_or(0);
            if debounce_ms > gpio::DEBOUNCE_MAX_MS {
                dev_err!(
                    dev,
                    "{} {} ms is invalid: want at most {} ms\n",
                    DEBOUNCE_PROP,
                    debounce_ms,
                    gpio::DEBOUNCE_MAX_MS
                );
                return Err(EINVAL);
            }
            Ok(Wiring::Gpio { debounce_ms })
        }
    }
}

/// Reads and checks `yang,dma-bits`: absent gives 32; from 24 to 64.
pub(crate) fn dma_bits(dev: &Device) -> Result<u32> {
    let bits = read_u32_prop(dev, DMA_BITS_PROP)?.unwrap_or(DMA_BITS_DEFAULT);
    if !(DMA_BITS_MIN..=64).contains(&bits) {
        dev_err!(
            dev,
            "{} {} is invalid: want {} to 64\n",
            DMA_BITS_PROP,
            bits,
            DMA_BITS_MIN
        );
        return Err(EINVAL);
    }
    Ok(bits)
}
