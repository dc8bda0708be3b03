//! `kmemlab-abi-probe vfio-regs`: the PL061's interrupt registers, read through VFIO
//! (the controller bound to vfio-amba, no-IOMMU mode on), for the VM tests of
//! `kmemlabd --backend vfio`: after the daemon stopped, the button line's interrupt must
//! be disabled (GPIOIE) while a press still shows in the raw status (GPIORIS), and
//! nothing reaches the masked status (GPIOMIS).

use kmemlab::vfio::pl061::{GPIODIR, GPIOIBE, GPIOIE, GPIOIEV, GPIOIS, GPIOMIS, GPIORIS, WINDOW};
use kmemlab::vfio::{Registers, Vfio, VfioTarget};

/// Prints `NAME=0xVALUE` for each interrupt register of the default target's region 0.
pub fn regs() -> Result<bool, String> {
    let vfio = Vfio::open(&VfioTarget::default()).map_err(|e| e.to_string())?;
    let mut region = vfio.map_region(0, WINDOW).map_err(|e| e.to_string())?;
    for (name, offset) in [
        ("GPIODIR", GPIODIR),
        ("GPIOIS", GPIOIS),
        ("GPIOIBE", GPIOIBE),
        ("GPIOIEV", GPIOIEV),
        ("GPIOIE", GPIOIE),
        ("GPIORIS", GPIORIS),
        ("GPIOMIS", GPIOMIS),
    ] {
        let value = region.read32(offset).map_err(|e| e.to_string())?;
        println!("{name}=0x{value:02x}");
    }
    Ok(true)
}
