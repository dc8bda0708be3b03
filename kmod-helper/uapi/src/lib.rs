//! The kmemlab ioctl ABI, defined once.
//!
//! The kernel module includes `abi.rs` with `#[path]`; userspace depends on this crate.
//! Every struct is `#[repr(C)]` with fixed-width fields, explicit padding and reserved
//! space; `tests/abi.rs` pins sizes, offsets and command numbers.
//!
//! `kmemlab.h` next to this crate is the same ABI for C (installed as
//! `/usr/include/linux/kmemlab.h`); `tests/c_header.rs` compiles it and fails unless every
//! size, offset, command number and constant equals this crate's. Change both together.

#![no_std]

mod abi;
pub mod errnos;

pub use abi::*;
