// SPDX-License-Identifier: GPL-2.0

//! The heap: UIO map 0, whose first page holds the interrupt ring (`uapi::RingHeader` and its
//! records); the rest is free for userspace data.
//!
//! It is an array of order-0 kernel pages, each with its own reference count, and not DMA
//! memory: a mapping inserts the pages themselves (`uio_glue.c`), so a mapping that outlives the
//! device keeps its pages alive, and the pages this value holds are only this value's
//! references. DMA-coherent memory cannot do that: the DMA API forbids turning it back into
//! pages (kernel/dma/mapping.c), `dma_mmap_coherent()`/`dma_mmap_pages()` map frames without
//! references (`remap_pfn_range()`), and it must be freed while the device is bound; a mapping
//! that outlived unbind would then map freed memory unless it were revoked by hand.

use core::ptr;
use kernel::{
    bindings,
    page::{
        Page,
        PAGE_SIZE, //
    },
    prelude::*, //
};

use crate::uapi;

/// The heap's pages; see the module documentation.
///
/// # Invariants
///
/// `pages` and `raw` have the same length, at least 1, and `raw[i]` is `pages[i].as_ptr()`.
pub(crate) struct Heap {
    pages: KVVec<Page>,
    raw: KVVec<*mut bindings::page>,
}

// SAFETY: `raw` holds the addresses of the `struct page`s that `pages` owns; they may be used
// and freed from any thread.
unsafe impl Send for Heap {}

// SAFETY: `&Heap` gives out only the page array's address and the length; the pages' contents
// are reached only through the C glue, which writes the ring under its own lock.
unsafe impl Sync for Heap {}

impl Heap {
    /// Allocates `size` bytes (a nonzero multiple of `PAGE_SIZE`) of zeroed pages and writes the
    /// ring header with `slots` records into the first.
    pub(crate) fn new(size: usize, slots: u32) -> Result<Self> {
        let n = size / PAGE_SIZE;
        if n == 0 || size % PAGE_SIZE != 0 {
            return Err(EINVAL);
        }
        let mut pages = KVVec::with_capacity(n, GFP_KERNEL)?;
        let mut raw = KVVec::with_capacity(n, GFP_KERNEL)?;
        for _ in 0..n {
            let page = Page::alloc_page(GFP_KERNEL | __GFP_ZERO)?;
            // Cannot fail: both have room for `n` entries.
            let _ = raw.push_within_capacity(page.as_ptr());
            let _ = pages.push_within_capacity(page);
        }
        let header = uapi::RingHeader {
            magic: uapi::RING_MAGIC,
            version: uapi::RING_VERSION,
            slots,
            record_size: size_of::<uapi::IrqRecord>() as u32,
            ..Default::default()
        };
        let first = pages.first().ok_or(EINVAL)?;
        // SAFETY: `header` is valid for reads of its size, which fits in a page; the page is
        // not shared with anyone yet (no UIO device, no mapping), so nothing races the write.
        unsafe {
            first.write_raw(
                ptr::from_ref(&header).cast::<u8>(),
                0,
                size_of::<uapi::RingHeader>(),
            )?
        };
        // INVARIANT: `n >= 1` entries each, `raw[i]` taken from `pages[i]`.
        Ok(Self { pages, raw })
    }

    /// The page array, for the C glue, which only reads it.
    pub(crate) fn raw_pages(&self) -> *mut *mut bindings::page {
        self.raw.as_ptr().cast_mut()
    }

    /// Number of pages.
    pub(crate) fn nr_pages(&self) -> usize {
        self.pages.len()
    }
}
