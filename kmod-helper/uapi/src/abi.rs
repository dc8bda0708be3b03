// SPDX-License-Identifier: GPL-2.0
//! kmemlab ioctl ABI. This file is compiled into the kernel module and into the
//! `kmemlab-uapi` crate, so it uses `core` only.

/// Version of this ABI; bumped on any incompatible change.
pub const ABI_VERSION: u32 = 1;

/// The ioctl type byte ("magic"); 0xE7 is unassigned in ioctl-number.rst.
pub const IOC_MAGIC: u32 = 0xE7;

const IOC_NRBITS: u32 = 8;
const IOC_TYPEBITS: u32 = 8;
const IOC_SIZEBITS: u32 = 14;
const IOC_NRSHIFT: u32 = 0;
const IOC_TYPESHIFT: u32 = IOC_NRSHIFT + IOC_NRBITS;
const IOC_SIZESHIFT: u32 = IOC_TYPESHIFT + IOC_TYPEBITS;
const IOC_DIRSHIFT: u32 = IOC_SIZESHIFT + IOC_SIZEBITS;

/// `_IOC_WRITE`: userspace writes the argument.
pub const IOC_WRITE: u32 = 1;
/// `_IOC_READ`: userspace reads the argument.
pub const IOC_READ: u32 = 2;

/// The generic Linux `_IOC()` encoding (arm64, x86, riscv).
pub const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
    (dir << IOC_DIRSHIFT)
        | (IOC_MAGIC << IOC_TYPESHIFT)
        | (nr << IOC_NRSHIFT)
        | ((size as u32) << IOC_SIZESHIFT)
}

/// `_IOC_NR()`.
pub const fn ioc_nr(cmd: u32) -> u32 {
    (cmd >> IOC_NRSHIFT) & ((1 << IOC_NRBITS) - 1)
}

/// `_IOC_TYPE()`.
pub const fn ioc_type(cmd: u32) -> u32 {
    (cmd >> IOC_TYPESHIFT) & ((1 << IOC_TYPEBITS) - 1)
}

/// `_IOC_SIZE()`.
pub const fn ioc_size(cmd: u32) -> usize {
    ((cmd >> IOC_SIZESHIFT) & ((1 << IOC_SIZEBITS) - 1)) as usize
}

/// `_IOC_DIR()`.
pub const fn ioc_dir(cmd: u32) -> u32 {
    cmd >> IOC_DIRSHIFT
}

/// Command numbers (`_IOC_NR`).
pub const NR_INFO: u32 = 0x00;

/// Largest number of allocation kinds the ABI has room for.
pub const MAX_KINDS: usize = 8;

/// INFO: what the module is and what it accepts. `_IOR(0xE7, 0x00, Info)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Info {
    /// [`ABI_VERSION`] of the module.
    pub abi_version: u32,
    /// The kernel's `PAGE_SIZE`.
    pub page_size: u32,
    /// Size of the DMA-coherent heap (UIO map 0) in bytes; 0 when there is none.
    pub heap_size: u64,
    /// Bit `1 << kind` for each kind the module supports.
    pub kinds: u32,
    /// The allocation flags the module accepts.
    pub flags: u32,
    /// Largest single allocation per kind, in bytes (0 for an unsupported kind).
    pub max_size: [u64; MAX_KINDS],
    /// Most bytes outstanding at once, over all kinds and owners.
    pub max_outstanding_bytes: u64,
    /// Most allocations outstanding at once.
    pub max_outstanding_count: u32,
    /// Linux interrupt number the UIO device uses (0 when not bound).
    pub irq: u32,
    /// Reserved for later versions; zero.
    pub reserved: [u64; 8],
}

/// INFO command number.
pub const IOCTL_INFO: u32 = ioc(IOC_READ, NR_INFO, core::mem::size_of::<Info>());
