//! Placeholder for `cargo xtask module --debian RELEASE`, which is written in another
//! branch (debian-build). Replace this file with that branch's `debian.rs` at merge.

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::setup::Toolchain;

/// kmemlab.ko built for Debian's kernel `release`: not in this branch.
pub fn module(_tc: &Toolchain, release: &str) -> Result<PathBuf> {
    bail!(
        "kmemlab.ko for Debian's {release} is not built in this branch (`cargo xtask module \
         --debian` comes with the debian-build branch); pass one with \
         `cargo xtask dist --debian {release} --module KO`"
    )
}
