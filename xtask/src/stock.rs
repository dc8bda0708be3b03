//! Debian's own packages of a stock kernel release (`7.3.4+deb13-arm64`), for the tests:
//! the DTBs of `linux-base-RELEASE` and the `linux-modules-RELEASE` package. Downloaded
//! once from the backports suite with private apt lists, kept in the cache.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::setup::{extract_deb, PrivateApt, Toolchain, BACKPORTS_SUITE};
use crate::util::step;

/// The release of Debian's arm64 kernel the tests check against.
pub const ARM64_RELEASE: &str = "7.3.4+deb13-arm64";

/// The Debian architecture of a release: its last dash-separated word.
pub fn arch_of(release: &str) -> Result<&str> {
    match release.rsplit('-').next() {
        Some(arch @ ("arm64" | "amd64")) => Ok(arch),
        _ => bail!("{release} is not a Debian kernel release such as {ARM64_RELEASE}"),
    }
}

fn release_dir(tc: &Toolchain, release: &str) -> PathBuf {
    tc.cache.join("debian-kernel").join(release)
}

/// The .debs of Debian's packages `PKG-RELEASE` for each PKG in `pkgs` (e.g.
/// `linux-modules` gives `linux-modules-7.3.4+deb13-arm64`), downloaded into the cache
/// the first time.
pub fn packages(tc: &Toolchain, pkgs: &[&str], release: &str) -> Result<Vec<PathBuf>> {
    let mut apt = PrivateApt::new(&tc.cache);
    pkgs.iter()
        .map(|pkg| package(tc, &mut apt, pkg, release))
        .collect()
}

fn package(tc: &Toolchain, apt: &mut PrivateApt, pkg: &str, release: &str) -> Result<PathBuf> {
    let arch = arch_of(release)?;
    let name = format!("{pkg}-{release}");
    let debs = release_dir(tc, release).join("debs");
    if let Some(deb) = find_deb(&debs, &name)? {
        return Ok(deb);
    }
    step(format!("fetching Debian's {name} ({arch})"));
    let lists = format!("backports-{arch}");
    apt.update(&lists, BACKPORTS_SUITE, Some(arch))?;
    let tmp = debs.with_extension("partial");
    let _ = fs::remove_dir_all(&tmp);
    let deb = apt
        .download(&lists, &name, Some(arch), &tmp)
        .with_context(|| format!("Debian's {BACKPORTS_SUITE} has no package {name}"))?;
    fs::create_dir_all(&debs)?;
    let dest = debs.join(deb.file_name().context("a .deb without a name")?);
    fs::rename(&deb, &dest)?;
    let _ = fs::remove_dir_all(&tmp);
    Ok(dest)
}

fn find_deb(dir: &Path, name: &str) -> Result<Option<PathBuf>> {
    if !dir.is_dir() {
        return Ok(None);
    }
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let file = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if file.starts_with(&format!("{name}_")) && file.ends_with(".deb") {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// The folder of DTBs Debian ships for `release` (`usr/lib/modules/RELEASE/dtb` of
/// `linux-base-RELEASE`), unpacked into the cache the first time.
pub fn dtbs(tc: &Toolchain, release: &str) -> Result<PathBuf> {
    let unpacked = release_dir(tc, release).join("linux-base");
    let dtb = unpacked.join(format!("usr/lib/modules/{release}/dtb"));
    if dtb.join("broadcom").is_dir() {
        return Ok(dtb);
    }
    let deb = packages(tc, &["linux-base"], release)?.remove(0);
    step(format!("unpacking {}", deb.display()));
    extract_deb(&deb, &unpacked)?;
    if !dtb.join("broadcom").is_dir() {
        bail!(
            "{} holds no usr/lib/modules/{release}/dtb/broadcom",
            deb.display()
        );
    }
    Ok(dtb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_is_the_release_suffix() {
        assert_eq!(arch_of("7.3.4+deb13-arm64").unwrap(), "arm64");
        assert_eq!(arch_of("7.3.4+deb13-amd64").unwrap(), "amd64");
        assert!(arch_of("7.3.4").is_err());
        assert!(arch_of("7.3.4+deb13-armhf").is_err());
    }
}
