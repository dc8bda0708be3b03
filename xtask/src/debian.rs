//! Stand-in for the debian-build branch's `debian.rs` (`cargo xtask module --debian
//! RELEASE`), with the same interface that `dist --debian` calls: `Release::parse` and
//! `module(&Release)`. Replace this whole file with that branch's at merge.

use std::path::PathBuf;

use anyhow::{bail, Result};

/// A Debian kernel release kmemlab builds for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Release {
    /// `uname -r`, e.g. `7.3.4+deb13-arm64`.
    pub name: String,
}

impl Release {
    pub fn parse(name: &str) -> Result<Self> {
        Ok(Self {
            name: name.to_owned(),
        })
    }
}

/// kmemlab.ko built for Debian's `release`: not in this branch.
pub fn module(release: &Release) -> Result<PathBuf> {
    bail!(
        "kmemlab.ko for Debian's {0} is not built in this branch (`cargo xtask module \
         --debian` comes with the debian-build branch); pass one with \
         `cargo xtask dist --debian {0} --module KO`",
        release.name
    )
}
