// SPDX-License-Identifier: GPL-2.0

//! The debugfs file `kmemlab/pfns`: for each live allocation a line `handle kind pages`, then
//! the page frame number of each page (hex, one a line, from the kernel's page walk), then a
//! blank line. debugfs is root's (mode 0400 here, and debugfs itself is usually 0700), as PFNs
//! are CAP_SYS_ADMIN's in `/proc/PID/pagemap`.

use core::fmt;
use kernel::sync::Arc;

use crate::shared::Shared;

/// Writes the `pfns` file.
pub(crate) fn write_pfns(this: &Arc<Shared>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    this.for_each(|handle, kind, size, mem| {
        let layout = mem.layout(usize::try_from(size).unwrap_or(usize::MAX));
        writeln!(f, "{} {} {}", handle, kind.name(), layout.pages)?;
        let mut res = Ok(());
        mem.walk_pfns(layout.usable_size, |pfn| {
            if res.is_ok() {
                res = writeln!(f, "{:#x}", pfn);
            }
        });
        res?;
        writeln!(f)
    })
}
