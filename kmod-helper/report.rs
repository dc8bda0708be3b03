// SPDX-License-Identifier: GPL-2.0

//! The report of an allocation (`uapi::Alloc`'s out fields), from the memory itself.

use crate::mem::Mem;
use crate::uapi;

/// Writes the report of an allocation into `e`, which holds its request (`kind`, `flags`,
/// `size`) and zeros: the allocator's time and where `mem` is (a page walk, which finds the same
/// pages each time: none of these allocators moves its memory). Only the out fields are written:
/// the request's are in place already. The addresses are the real ones: the caller hides what
/// the opener may not see (`Privileges::hide`).
pub(crate) fn write_report(e: &mut uapi::Alloc, alloc_ns: u64, mem: &Mem) {
    let layout = mem.layout(usize::try_from(e.size).unwrap_or(usize::MAX));
    let mut result = 0;
    if e.flags & uapi::FLAG_ZERO != 0 || mem.always_zeroed() {
        result |= uapi::RESULT_ZEROED;
    }
    if mem.dma().is_some() {
        result |= uapi::RESULT_DMA;
    }
    e.vaddr = mem.vaddr() as u64;
    e.phys = layout.phys;
    e.dma = mem.dma().unwrap_or(0);
    e.usable_size = layout.usable_size;
    e.alloc_ns = alloc_ns;
    e.pages = layout.pages;
    e.phys_segments = layout.phys_segments;
    e.result = result;
}
