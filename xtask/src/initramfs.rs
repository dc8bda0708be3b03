//! A writer for the initramfs's cpio "newc" archive, so the harness can create device
//! nodes and root-owned files without being root.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFCHR: u32 = 0o020_000;
const S_IFLNK: u32 = 0o120_000;

/// An uncompressed newc archive (the kernel unpacks it without a decompressor).
#[derive(Default)]
pub struct Cpio {
    data: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), body: &[u8]) {
        self.ino += 1;
        let namesize = name.len() + 1;
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            if mode & S_IFDIR != 0 { 2 } else { 1 },
            0, // mtime
            body.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            namesize as u32,
            0, // check
        ];
        self.data.extend_from_slice(b"070701");
        for f in fields {
            self.data.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.data.extend_from_slice(name.as_bytes());
        self.data.push(0);
        self.pad();
        self.data.extend_from_slice(body);
        self.pad();
    }

    fn pad(&mut self) {
        while self.data.len() % 4 != 0 {
            self.data.push(0);
        }
    }

    pub fn dir(&mut self, name: &str, perm: u32) {
        self.entry(name, S_IFDIR | perm, (0, 0), &[]);
    }

    pub fn file(&mut self, name: &str, perm: u32, body: &[u8]) {
        self.entry(name, S_IFREG | perm, (0, 0), body);
    }

    pub fn file_from(&mut self, name: &str, perm: u32, src: &Path) -> Result<()> {
        let body = fs::read(src).with_context(|| format!("failed to read {}", src.display()))?;
        self.file(name, perm, &body);
        Ok(())
    }

    pub fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.entry(name, S_IFCHR | perm, (major, minor), &[]);
    }

    pub fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, S_IFLNK | 0o777, (0, 0), target.as_bytes());
    }

    /// The archive with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_aligned_and_terminated() {
        let mut c = Cpio::default();
        c.dir("bin", 0o755);
        c.file("init", 0o755, b"#!/bin/sh\n");
        c.char_dev("dev/console", 0o600, 5, 1);
        let data = c.finish();
        assert_eq!(data.len() % 4, 0);
        assert!(data.starts_with(b"070701"));
        let text = String::from_utf8_lossy(&data);
        assert!(text.contains("TRAILER!!!"));
        // rdevmajor of the console entry is 5.
        let pos = text.find("dev/console").unwrap_or(0);
        let header = &text[pos - 110..pos];
        assert_eq!(&header[6 + 9 * 8..6 + 10 * 8], "00000005");
    }
}
