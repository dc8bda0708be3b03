// SPDX-License-Identifier: GPL-2.0

//! What an opener of `/dev/kmemlab` may do and see, decided once, in `open()`, on the opener's
//! credentials (as `/proc/kallsyms` and `/proc/PID/pagemap` decide at open), without audit
//! records for a capability the opener lacks.
//!
//! - CAP_SYS_ADMIN (`PRIV_ADMIN`): `FLAG_PERSIST`, atomic allocations beyond the atomic quota,
//!   BENCH beyond its budget, and no per-opener quota; also physical and DMA addresses and PFNs
//!   (`PRIV_PHYS`), which `/proc/PID/pagemap` shows only with CAP_SYS_ADMIN.
//! - Kernel virtual addresses (`PRIV_KADDR`): the `kptr_restrict` rule of `/proc/kallsyms`, see
//!   `kmemlab_kaddr_visible()` in `mm_glue.c`.
//!
//! Access to the device at all is the device node's mode (group `kmemlab` in the shipped udev
//! rule).

use kernel::{
    bindings,
    prelude::*, //
};

use crate::uapi;

// The functions of `mm_glue.h` used here; keep in step with it.
extern "C" {
    fn kmemlab_kaddr_visible() -> bool;
}

/// An opener's privileges; see the module documentation.
#[derive(Clone, Copy, Default)]
pub(crate) struct Privileges {
    /// CAP_SYS_ADMIN: the dangerous operations, no per-opener quota.
    pub(crate) admin: bool,
    /// Kernel virtual addresses are shown.
    pub(crate) kaddr: bool,
    /// Physical and DMA addresses are shown.
    pub(crate) phys: bool,
}

impl Privileges {
    /// The privileges of the current task: call it from `open()`, where it is the opener.
    pub(crate) fn of_current() -> Self {
        // SAFETY: `capable_noaudit()` only reads the current task's credentials; process context.
        let admin = unsafe { bindings::capable_noaudit(bindings::CAP_SYS_ADMIN as c_int) };
        // SAFETY: Process context (open), as the glue requires.
        let kaddr = unsafe { kmemlab_kaddr_visible() };
        Self {
            admin,
            kaddr,
            phys: admin,
        }
    }

    /// The `PRIV_*` bits of INFO.
    pub(crate) fn bits(self) -> u32 {
        let mut bits = 0;
        if self.admin {
            bits |= uapi::PRIV_ADMIN;
        }
        if self.kaddr {
            bits |= uapi::PRIV_KADDR;
        }
        if self.phys {
            bits |= uapi::PRIV_PHYS;
        }
        bits
    }

    /// Clears what this opener may not see of a report, and says so in its result bits.
    pub(crate) fn hide(self, report: &mut uapi::Alloc) {
        if !self.kaddr {
            report.vaddr = 0;
            report.result |= uapi::RESULT_HIDDEN;
        }
        if !self.phys {
            report.phys = 0;
            report.dma = 0;
            report.result |= uapi::RESULT_PHYS_HIDDEN;
        }
    }
}
