// SPDX-License-Identifier: GPL-2.0

//! The allocation kinds: which flags each accepts, the allocator calls, and the page walk that
//! reports where the memory really is.
//!
//! Each kind calls the API it is named after, as a C driver does: `kmalloc()`/`kfree()`,
//! `__vmalloc()`/`vfree()` (`vmalloc()` with flags), `kvmalloc()`/`kvfree()` (through
//! `mm_glue.c`: they are `alloc_hooks()` macros, and the Rust allocators `Kmalloc`, `Vmalloc`
//! and `KVmalloc` go through `krealloc`/`vrealloc`/`kvrealloc` instead, whose kvrealloc retries
//! kmalloc before its fallback), with a raw `gfp_t`: `kernel::alloc::Flags` cannot express
//! `__GFP_NORETRY`, `__GFP_ACCOUNT`, `GFP_DMA` or `GFP_DMA32`. `dma_coherent` calls
//! `dma_alloc_attrs()` as `kernel::dma::Coherent` does, on a byte size rather than a typed
//! object; `pages` calls `get_free_pages()` (`alloc_pages()` plus `page_address()`).

use core::ptr::NonNull;
use kernel::{
    bindings,
    device::Device,
    dma::DmaAddress,
    page::PAGE_SIZE,
    prelude::*,
    sync::aref::ARef,
    time::{
        Instant,
        Monotonic, //
    }, //
};

use crate::glue::raw_device;
use crate::uapi;

// The functions of `mm_glue.h` used here; keep in step with it.
extern "C" {
    fn kmemlab_kmalloc(size: usize, gfp: bindings::gfp_t) -> *mut c_void;
    fn kmemlab_kvmalloc(size: usize, gfp: bindings::gfp_t) -> *mut c_void;
    fn kmemlab_vmalloc(size: usize, gfp: bindings::gfp_t) -> *mut c_void;
    fn kmemlab_vfree(addr: *const c_void);
    fn kmemlab_virt_to_pfn(addr: *const c_void) -> c_ulong;
    fn kmemlab_cond_resched();
}

/// `__GFP_DMA`, from the kernel's own bit numbers.
const GFP_DMA: bindings::gfp_t = 1 << bindings::___GFP_DMA_BIT;
/// `__GFP_DMA32`.
const GFP_DMA32: bindings::gfp_t = 1 << bindings::___GFP_DMA32_BIT;
/// `__GFP_NORETRY`.
const GFP_NORETRY: bindings::gfp_t = 1 << bindings::___GFP_NORETRY_BIT;
/// `__GFP_ACCOUNT`: charge the allocation to the caller's memory cgroup.
const GFP_ACCOUNT: bindings::gfp_t = 1 << bindings::___GFP_ACCOUNT_BIT;

/// Size of a PMD mapping (2 MiB with 4 KiB pages): the largest page `kvmalloc()` maps with.
const PMD_SIZE: usize = PAGE_SIZE * (PAGE_SIZE / size_of::<u64>());

/// An allocation kind of the ABI (`uapi::KIND_*`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    Kmalloc,
    Vmalloc,
    DmaCoherent,
    Kvmalloc,
    Pages,
}

impl Kind {
    /// Every kind, in ABI order.
    pub(crate) const ALL: [Kind; 5] = [
        Kind::Kmalloc,
        Kind::Vmalloc,
        Kind::DmaCoherent,
        Kind::Kvmalloc,
        Kind::Pages,
    ];

    /// The kind with ABI number `kind`; `EINVAL` for an unknown one.
    pub(crate) fn from_abi(kind: u32) -> Result<Self> {
        match kind {
            uapi::KIND_KMALLOC => Ok(Kind::Kmalloc),
            uapi::KIND_VMALLOC => Ok(Kind::Vmalloc),
            uapi::KIND_DMA_COHERENT => Ok(Kind::DmaCoherent),
            uapi::KIND_KVMALLOC => Ok(Kind::Kvmalloc),
            uapi::KIND_PAGES => Ok(Kind::Pages),
            _ => Err(EINVAL),
        }
    }

    /// The ABI number, also the index into per-kind arrays.
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The ABI number (`uapi::KIND_*`).
    pub(crate) fn abi(self) -> u32 {
        self as u32
    }

    /// The name used in the debugfs dump.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Kmalloc => "kmalloc",
            Kind::Vmalloc => "vmalloc",
            Kind::DmaCoherent => "dma_coherent",
            Kind::Kvmalloc => "kvmalloc",
            Kind::Pages => "pages",
        }
    }

    /// The largest size the kernel API itself accepts without a warning, in bytes.
    ///
    /// kmalloc: `KMALLOC_MAX_SIZE` (larger sizes fail with a `WARN` in the page allocator);
    /// pages: `PAGE_SIZE << MAX_PAGE_ORDER` (same); kvmalloc: `INT_MAX` (`__kvmalloc_node()`
    /// warns above it); vmalloc and dma_coherent: no fixed bound of their own.
    pub(crate) fn api_max_size(self) -> u64 {
        match self {
            Kind::Kmalloc => u64::from(bindings::KMALLOC_MAX_SIZE),
            Kind::Pages => (PAGE_SIZE as u64) << bindings::MAX_PAGE_ORDER,
            // When CMA cannot serve a request, dma-direct falls back to `alloc_pages()`,
            // which WARNs on an order above `MAX_PAGE_ORDER`: a size the module parameter
            // allowed would then splat the kernel on an opener's request.
            Kind::DmaCoherent => (PAGE_SIZE as u64) << bindings::MAX_PAGE_ORDER,
            Kind::Kvmalloc => i32::MAX as u64,
            Kind::Vmalloc => u64::MAX,
        }
    }
}

/// The zone flags this kernel has zones for: `FLAG_DMA` needs `CONFIG_ZONE_DMA` and `FLAG_DMA32`
/// needs `CONFIG_ZONE_DMA32`; without the zone, `gfp_zone()` silently serves the request from
/// `ZONE_NORMAL`, so the flag would be a lie and is refused.
pub(crate) fn zone_flags() -> u32 {
    let mut flags = 0;
    if cfg!(CONFIG_ZONE_DMA) {
        flags |= uapi::FLAG_DMA;
    }
    if cfg!(CONFIG_ZONE_DMA32) {
        flags |= uapi::FLAG_DMA32;
    }
    flags
}

/// The `FLAG_*` bits this module accepts (`Info::flags`).
pub(crate) fn supported_flags() -> u32 {
    (uapi::FLAG_ALL & !(uapi::FLAG_DMA | uapi::FLAG_DMA32)) | zone_flags()
}

/// Checks `flags` for `kind` and returns the `gfp_t` to pass; `EINVAL` when they are refused.
///
/// The rules (Linux 7.3), in this order:
///
/// 1. Bits outside [`supported_flags`] (undefined bits, and `FLAG_DMA`/`FLAG_DMA32` on a kernel
///    without `CONFIG_ZONE_DMA`/`CONFIG_ZONE_DMA32`): `EINVAL`.
/// 2. Exactly one of `FLAG_GFP_KERNEL`, `FLAG_GFP_ATOMIC`, `FLAG_GFP_NOWAIT`, else `EINVAL`.
/// 3. `FLAG_PERSIST` only where `persist_ok` (ALLOC, not BENCH), else `EINVAL`.
/// 4. Per kind:
///
/// | kind         | ATOMIC/NOWAIT | ZERO/NORETRY/NOWARN | DMA    | DMA32  |
/// |--------------|---------------|---------------------|--------|--------|
/// | kmalloc      | yes           | yes                 | yes    | EINVAL |
/// | vmalloc      | yes           | yes                 | EINVAL | EINVAL |
/// | dma_coherent | yes           | yes                 | EINVAL | EINVAL |
/// | kvmalloc     | yes           | yes                 | EINVAL | EINVAL |
/// | pages        | yes           | yes                 | yes    | yes    |
///
/// Why:
/// - kmalloc + `GFP_DMA32`: `GFP_SLAB_BUG_MASK` contains `__GFP_DMA32`; slab strips it with
///   "Unexpected gfp ... Fix your code!" and a stack dump (`kmalloc_fix_flags()`). `GFP_DMA`
///   selects the `dma-kmalloc-*` caches.
/// - vmalloc + `GFP_DMA`/`GFP_DMA32`: zone modifiers are outside `GFP_VMALLOC_SUPPORTED`;
///   `__vmalloc()` strips them with a `WARN_ONCE` "Fix your code!" (use `vmalloc_32()`).
///   `GFP_ATOMIC` and `GFP_NOWAIT` are in `GFP_VMALLOC_SUPPORTED` since 6.x: page tables are
///   then allocated under a `memalloc_noreclaim`/`nowait` scope.
/// - dma_coherent + `GFP_DMA`/`GFP_DMA32`: `dma_alloc_attrs()` clears the zone bits and picks
///   the zone from the device's coherent DMA mask, so the flag would be silently ignored. Its
///   memory is always zeroed. Non-blocking flags are served from the atomic pool, and always
///   get `__GFP_NOWARN` (see the end of this function).
/// - kvmalloc + `GFP_DMA32`: the kmalloc attempt hits `GFP_SLAB_BUG_MASK` as above. With
///   `GFP_DMA` the kmalloc attempt would honour it but the vmalloc fallback (sizes above a page)
///   cannot, so the zone would depend on which path served the request. Non-blocking flags are
///   accepted by 7.3's `__kvmalloc_node()` (the vmalloc fallback then skips huge mappings).
/// - pages: `alloc_pages()` takes any zone modifier.
///
/// Every kind but dma_coherent also gets `__GFP_ACCOUNT`: the memory is charged to the memory
/// cgroup of the task that asked for it (a no-op without `CONFIG_MEMCG`), so a group member's
/// allocations count against its cgroup's limit. `dma_alloc_attrs()` has no such accounting.
pub(crate) fn gfp_for(kind: Kind, flags: u32, persist_ok: bool) -> Result<bindings::gfp_t> {
    if flags & !supported_flags() != 0 {
        return Err(EINVAL);
    }
    let mut gfp = match flags & uapi::FLAG_BASE_MASK {
        uapi::FLAG_GFP_KERNEL => bindings::GFP_KERNEL,
        uapi::FLAG_GFP_ATOMIC => bindings::GFP_ATOMIC,
        uapi::FLAG_GFP_NOWAIT => bindings::GFP_NOWAIT,
        _ => return Err(EINVAL),
    };
    if flags & uapi::FLAG_PERSIST != 0 && !persist_ok {
        return Err(EINVAL);
    }
    let zone_ok = match kind {
        Kind::Kmalloc => uapi::FLAG_DMA,
        Kind::Pages => uapi::FLAG_DMA | uapi::FLAG_DMA32,
        Kind::Vmalloc | Kind::DmaCoherent | Kind::Kvmalloc => 0,
    };
    if flags & (uapi::FLAG_DMA | uapi::FLAG_DMA32) & !zone_ok != 0 {
        return Err(EINVAL);
    }
    for (flag, bits) in [
        (uapi::FLAG_ZERO, bindings::__GFP_ZERO),
        (uapi::FLAG_NORETRY, GFP_NORETRY),
        (uapi::FLAG_NOWARN, bindings::__GFP_NOWARN),
        (uapi::FLAG_DMA, GFP_DMA),
        (uapi::FLAG_DMA32, GFP_DMA32),
    ] {
        if flags & flag != 0 {
            gfp |= bits;
        }
    }
    // A non-blocking dma_coherent request is served from the atomic DMA pool, and
    // `dma_alloc_from_pool()` WARNs (a full stack dump) when the pool cannot serve it
    // unless `__GFP_NOWARN` is set. That is a kernel splat any opener could trigger at
    // will with a large request, so it is always set there; the failure still reaches
    // the caller as ENOMEM.
    if kind == Kind::DmaCoherent && flags & uapi::FLAG_GFP_KERNEL == 0 {
        gfp |= bindings::__GFP_NOWARN;
    }
    if kind != Kind::DmaCoherent {
        gfp |= GFP_ACCOUNT;
    }
    Ok(gfp)
}

/// A stopwatch on `ktime_get_ns()` that times consecutive calls with one clock read between
/// two of them.
///
/// Each lap covers what ran since the previous read, plus the part of one `ktime_get_ns()` that
/// falls between two reads of the counter: the same as a pair of reads around each call, at half
/// the reads.
pub(crate) struct Lap(Instant<Monotonic>);

impl Lap {
    /// Starts timing.
    pub(crate) fn start() -> Self {
        Self(Instant::<Monotonic>::now())
    }

    /// Nanoseconds since the start or the previous lap; starts the next lap.
    pub(crate) fn lap(&mut self) -> u64 {
        let now = Instant::<Monotonic>::now();
        let ns = (now - self.0).as_nanos();
        self.0 = now;
        u64::try_from(ns).unwrap_or(0)
    }
}

/// `cond_resched()`.
pub(crate) fn cond_resched() {
    // SAFETY: Called from process context (ioctl) without spinlocks held.
    unsafe { kmemlab_cond_resched() }
}

/// The smallest order whose block holds `size` bytes (`get_order()`).
fn get_order(size: usize) -> u32 {
    let pages = size.div_ceil(PAGE_SIZE);
    pages.next_power_of_two().trailing_zeros()
}

/// Page frame number of the page that holds kernel address `addr`.
///
/// # Safety
///
/// `addr` is mapped: in the linear map, or a mapped vmalloc-space address.
unsafe fn pfn_of(addr: *const c_void) -> u64 {
    // SAFETY: `is_vmalloc_addr()` only compares the address with the vmalloc range.
    if unsafe { bindings::is_vmalloc_addr(addr) } {
        // SAFETY: `addr` is a mapped vmalloc address, by the caller's guarantee.
        let pfn = unsafe { bindings::vmalloc_to_pfn(addr) };
        pfn as u64
    } else {
        // SAFETY: `addr` is a linear-map address, by the caller's guarantee.
        let pfn = unsafe { kmemlab_virt_to_pfn(addr) };
        pfn as u64
    }
}

/// Memory obtained from one of the allocators, freed on drop.
///
/// # Invariants
///
/// Each variant holds what its allocator returned, not yet freed: `Kmalloc` from kmalloc,
/// `Vmalloc` from vmalloc, `Kvmalloc` from kvmalloc, `Pages` a block of `1 << order` pages at
/// `addr`, `Dma` a `dma_alloc_attrs()` allocation of `size` bytes against `dev`, which is bound to
/// this driver for as long as the `Mem` exists (see `state::Shared`'s DMA gate).
pub(crate) enum Mem {
    Kmalloc(NonNull<c_void>),
    Vmalloc(NonNull<c_void>),
    Kvmalloc(NonNull<c_void>),
    Pages {
        addr: NonNull<c_void>,
        order: u32,
    },
    Dma {
        dev: ARef<Device>,
        cpu: NonNull<c_void>,
        dma: DmaAddress,
        size: usize,
    },
}

// SAFETY: The allocations are plain memory owned by this value; they may be freed from any thread.
unsafe impl Send for Mem {}

// SAFETY: `&Mem` only gives out addresses; no method accesses the memory through a shared
// reference.
unsafe impl Sync for Mem {}

/// Where an allocation is and how large it really is.
#[derive(Clone, Copy, Default)]
pub(crate) struct Layout {
    pub(crate) phys: u64,
    pub(crate) usable_size: u64,
    pub(crate) pages: u32,
    pub(crate) phys_segments: u32,
}

impl Mem {
    /// Allocates `size` bytes (not 0) of `kind` with `gfp`; `ENOMEM` when the allocator fails.
    /// `dev` is the device for `Kind::DmaCoherent`. The caller times it (see [`Lap`]); freeing is
    /// dropping.
    ///
    /// # Safety
    ///
    /// For `Kind::DmaCoherent`, `dev` is bound to this driver and stays bound until the returned
    /// `Mem` is dropped.
    pub(crate) unsafe fn alloc(
        kind: Kind,
        size: usize,
        gfp: bindings::gfp_t,
        dev: &Device,
    ) -> Result<Mem> {
        // INVARIANT: each arm keeps what its allocator returned, in the matching variant.
        let mem = match kind {
            Kind::Kmalloc => {
                // SAFETY: `kmalloc()` may be called with any size (the limit keeps it within
                // `KMALLOC_MAX_SIZE`) and flags that `gfp_for` allowed for it.
                let p = unsafe { kmemlab_kmalloc(size, gfp) };
                NonNull::new(p).map(Mem::Kmalloc)
            }
            Kind::Vmalloc => {
                // SAFETY: `__vmalloc()` may be called with any size and flags within
                // `GFP_VMALLOC_SUPPORTED`, which `gfp_for` keeps it to.
                let p = unsafe { kmemlab_vmalloc(size, gfp) };
                NonNull::new(p).map(Mem::Vmalloc)
            }
            Kind::Kvmalloc => {
                // SAFETY: `kvmalloc()` may be called with a size up to `INT_MAX` (the limit
                // keeps it there) and flags that `gfp_for` allowed for it.
                let p = unsafe { kmemlab_kvmalloc(size, gfp) };
                NonNull::new(p).map(Mem::Kvmalloc)
            }
            Kind::Pages => {
                let order = get_order(size);
                // SAFETY: `get_free_pages()` may be called with any flags and an order up to
                // `MAX_PAGE_ORDER`, which the size limit guarantees.
                let addr = unsafe { bindings::get_free_pages_noprof(gfp, order) };
                NonNull::new(addr as *mut c_void).map(|addr| Mem::Pages { addr, order })
            }
            Kind::DmaCoherent => {
                let mut dma: DmaAddress = 0;
                // SAFETY: `dev` is a valid, bound device by the caller's guarantee; `dma` is a
                // valid place for the DMA handle.
                let p =
                    unsafe { bindings::dma_alloc_attrs(raw_device(dev), size, &mut dma, gfp, 0) };
                NonNull::new(p).map(|cpu| Mem::Dma {
                    dev: dev.into(),
                    cpu,
                    dma,
                    size,
                })
            }
        };
        mem.ok_or(ENOMEM)
    }

    /// Kernel virtual address of the first byte.
    pub(crate) fn vaddr(&self) -> *mut c_void {
        match self {
            Mem::Kmalloc(p) | Mem::Vmalloc(p) | Mem::Kvmalloc(p) => p.as_ptr(),
            Mem::Pages { addr, .. } => addr.as_ptr(),
            Mem::Dma { cpu, .. } => cpu.as_ptr(),
        }
    }

    /// The DMA address, for `Kind::DmaCoherent`.
    pub(crate) fn dma(&self) -> Option<DmaAddress> {
        match self {
            Mem::Dma { dma, .. } => Some(*dma),
            _ => None,
        }
    }

    /// Whether the allocator zeroes this memory whatever the flags: `dma_alloc_coherent()` does.
    pub(crate) fn always_zeroed(&self) -> bool {
        matches!(self, Mem::Dma { .. })
    }

    /// Whether the memory is in vmalloc space: vmalloc, kvmalloc when it fell back, and
    /// dma_coherent when remapped for a non-coherent device. kmalloc and pages never are.
    fn is_vmalloc(&self) -> bool {
        match self {
            Mem::Kmalloc(_) | Mem::Pages { .. } => false,
            Mem::Vmalloc(_) => true,
            // SAFETY: `is_vmalloc_addr()` only compares the address with the vmalloc range.
            Mem::Kvmalloc(_) | Mem::Dma { .. } => unsafe {
                bindings::is_vmalloc_addr(self.vaddr())
            },
        }
    }

    /// Bytes usable from `vaddr()` on, for a request of `size` bytes.
    ///
    /// kmalloc (and kvmalloc served by kmalloc): `kmalloc_size_roundup()`, the size of the slab
    /// object kmalloc serves the request from (not `ksize()`, which is not for finding the
    /// usable size and, with SLUB debugging, rewrites the object's debug metadata). vmalloc-backed: every page of the
    /// vmalloc area, found by walking the mapped pages up to the guard page (7.3 maps kvmalloc
    /// areas of 64 KiB and more with contiguous PTEs or PMDs and rounds them up to that size).
    /// pages: `PAGE_SIZE << order`. dma_coherent: `PAGE_ALIGN(size)`, the pages dma-direct
    /// allocated.
    fn usable_size(&self, size: usize) -> usize {
        match self {
            Mem::Kmalloc(_) | Mem::Kvmalloc(_) if !self.is_vmalloc() => {
                // SAFETY: `kmalloc_size_roundup()` only computes a size.
                unsafe { bindings::kmalloc_size_roundup(size) }
            }
            Mem::Kmalloc(_) | Mem::Vmalloc(_) | Mem::Kvmalloc(_) => {
                let start = self.vaddr() as usize;
                let most = size.next_multiple_of(PMD_SIZE) / PAGE_SIZE;
                let mut pages = size.div_ceil(PAGE_SIZE);
                while pages < most {
                    // SAFETY: The address is in the vmalloc area of this allocation or in the
                    // unmapped guard page after it; `vmalloc_to_page()` walks the kernel page
                    // tables and returns NULL for an unmapped address.
                    let page = unsafe {
                        bindings::vmalloc_to_page((start + pages * PAGE_SIZE) as *const c_void)
                    };
                    if page.is_null() {
                        break;
                    }
                    pages += 1;
                }
                pages * PAGE_SIZE
            }
            Mem::Pages { order, .. } => PAGE_SIZE << order,
            Mem::Dma { size, .. } => size.next_multiple_of(PAGE_SIZE),
        }
    }

    /// Calls `f` with the page frame number of every page of `[vaddr, vaddr + usable)`, in
    /// address order: `vmalloc_to_pfn()` for vmalloc-space memory (vmalloc, kvmalloc's fallback,
    /// and dma_coherent's remapped buffers on non-coherent devices), `virt_to_pfn()` for the
    /// linear map.
    pub(crate) fn walk_pfns(&self, usable: u64, mut f: impl FnMut(u64)) {
        let start = self.vaddr() as usize;
        let first = start & !(PAGE_SIZE - 1);
        let end = start.saturating_add(usize::try_from(usable).unwrap_or(0));
        let mut page = first;
        while page < end {
            // SAFETY: `page` is a page of this live allocation, mapped in the linear map or in
            // its vmalloc area.
            f(unsafe { pfn_of(page as *const c_void) });
            page += PAGE_SIZE;
        }
    }

    /// Where the allocation is: physical address of the first byte, usable size, pages and
    /// physically contiguous runs. Walks the page tables; not timed.
    ///
    /// A linear-map object within one page (most kmalloc objects) needs no walk: one page, one
    /// run, at `virt_to_phys()`. Everything else is walked page by page.
    pub(crate) fn layout(&self, size: usize) -> Layout {
        let usable = self.usable_size(size) as u64;
        let vaddr = self.vaddr();
        let offset = vaddr as u64 & (PAGE_SIZE as u64 - 1);
        if offset + usable <= PAGE_SIZE as u64 && !self.is_vmalloc() {
            // SAFETY: `vaddr` is a live linear-map allocation.
            let pfn = unsafe { kmemlab_virt_to_pfn(vaddr) } as u64;
            return Layout {
                phys: pfn * PAGE_SIZE as u64 + offset,
                usable_size: usable,
                pages: 1,
                phys_segments: 1,
            };
        }
        let mut pages = 0u32;
        let mut segments = 0u32;
        let mut first_pfn = 0u64;
        let mut prev: Option<u64> = None;
        self.walk_pfns(usable, |pfn| {
            if prev.is_none() {
                first_pfn = pfn;
            }
            if prev.is_none_or(|p| pfn != p.wrapping_add(1)) {
                segments += 1;
            }
            pages += 1;
            prev = Some(pfn);
        });
        let offset = self.vaddr() as u64 & (PAGE_SIZE as u64 - 1);
        Layout {
            phys: first_pfn * PAGE_SIZE as u64 + offset,
            usable_size: usable,
            pages,
            phys_segments: segments,
        }
    }
}

impl Drop for Mem {
    fn drop(&mut self) {
        match self {
            Mem::Kmalloc(p) => {
                // SAFETY: `p` came from kmalloc and is freed once, here (type invariants).
                unsafe { bindings::kfree(p.as_ptr()) }
            }
            Mem::Vmalloc(p) => {
                // SAFETY: `p` came from `__vmalloc()` and is freed once, here.
                unsafe { kmemlab_vfree(p.as_ptr()) }
            }
            Mem::Kvmalloc(p) => {
                // SAFETY: `p` came from `kvmalloc()` and is freed once, here; `kvfree()` calls
                // `vfree()` or `kfree()` as the address says.
                unsafe { bindings::kvfree(p.as_ptr()) }
            }
            Mem::Pages { addr, order } => {
                // SAFETY: `addr` is a block of `1 << order` pages from `get_free_pages()`.
                unsafe { bindings::free_pages(addr.as_ptr() as c_ulong, *order) }
            }
            Mem::Dma {
                dev,
                cpu,
                dma,
                size,
            } => {
                // SAFETY: `cpu`/`dma` came from `dma_alloc_attrs(dev, size, ..., 0)`, and `dev` is
                // still bound (type invariants).
                unsafe { bindings::dma_free_attrs(raw_device(dev), *size, cpu.as_ptr(), *dma, 0) }
            }
        }
    }
}
