//! The kmemlab ioctl ABI, defined once.
//!
//! The kernel module includes `abi.rs` with `#[path]`; userspace depends on this crate.
//! Every struct is `#[repr(C)]` with fixed-width fields, explicit padding and reserved
//! space; `tests/abi.rs` pins sizes, offsets and command numbers.

#![no_std]

mod abi;

pub use abi::*;
