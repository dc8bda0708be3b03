//! Names and numbers as people type them: allocation kinds, gfp flags and sizes, parsed
//! and formatted the same way by `kmemlabctl`, `kmemlabd --plan` and the JSON output.

use std::fmt;

use kmemlab_uapi as uapi;
use serde::{Serialize, Serializer};

use crate::error::{Error, Result};

/// An allocation kind of the ABI (`KIND_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `kmalloc()` / `kfree()`.
    Kmalloc,
    /// `vmalloc()` / `vfree()`.
    Vmalloc,
    /// `dma_alloc_coherent()` / `dma_free_coherent()`.
    DmaCoherent,
    /// `kvmalloc()` / `kvfree()`.
    Kvmalloc,
    /// `alloc_pages()` / `__free_pages()`.
    Pages,
}

impl Kind {
    /// Every kind, in ABI order.
    pub const ALL: [Kind; 5] = [
        Kind::Kmalloc,
        Kind::Vmalloc,
        Kind::DmaCoherent,
        Kind::Kvmalloc,
        Kind::Pages,
    ];

    /// The ABI number (`KIND_*`).
    pub const fn abi(self) -> u32 {
        match self {
            Kind::Kmalloc => uapi::KIND_KMALLOC,
            Kind::Vmalloc => uapi::KIND_VMALLOC,
            Kind::DmaCoherent => uapi::KIND_DMA_COHERENT,
            Kind::Kvmalloc => uapi::KIND_KVMALLOC,
            Kind::Pages => uapi::KIND_PAGES,
        }
    }

    /// The kind with ABI number `n`, if this version knows it.
    pub fn from_abi(n: u32) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.abi() == n)
    }

    /// The name in JSON and tables: `kmalloc`, `vmalloc`, `dma_coherent`, `kvmalloc`,
    /// `pages`.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Kmalloc => "kmalloc",
            Kind::Vmalloc => "vmalloc",
            Kind::DmaCoherent => "dma_coherent",
            Kind::Kvmalloc => "kvmalloc",
            Kind::Pages => "pages",
        }
    }

    /// Parses a kind name, case-insensitively; `dma-coherent` and `dma_coherent` are
    /// the same kind.
    pub fn parse(s: &str) -> Result<Kind> {
        let norm = s.trim().to_ascii_lowercase().replace('-', "_");
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == norm)
            .ok_or_else(|| {
                invalid(
                    "kind",
                    s,
                    "known kinds: kmalloc, vmalloc, dma-coherent, kvmalloc, pages",
                )
            })
    }

    /// The name of ABI kind `n`, or `kind<n>` for one this version does not know.
    pub fn name_of(n: u32) -> String {
        Kind::from_abi(n).map_or_else(|| format!("kind{n}"), |k| k.name().to_owned())
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Kind {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// `FLAG_*` bits of the ABI: the gfp flags and `PERSIST`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Flags(pub u32);

/// The gfp flags by their kernel names, in ABI bit order.
const GFP_NAMES: [(u32, &str); 8] = [
    (uapi::FLAG_GFP_KERNEL, "GFP_KERNEL"),
    (uapi::FLAG_GFP_ATOMIC, "GFP_ATOMIC"),
    (uapi::FLAG_GFP_NOWAIT, "GFP_NOWAIT"),
    (uapi::FLAG_ZERO, "__GFP_ZERO"),
    (uapi::FLAG_NORETRY, "__GFP_NORETRY"),
    (uapi::FLAG_NOWARN, "__GFP_NOWARN"),
    (uapi::FLAG_DMA, "GFP_DMA"),
    (uapi::FLAG_DMA32, "GFP_DMA32"),
];

impl Flags {
    /// `GFP_KERNEL`, the default.
    pub const GFP_KERNEL: Flags = Flags(uapi::FLAG_GFP_KERNEL);
    /// `GFP_ATOMIC`.
    pub const GFP_ATOMIC: Flags = Flags(uapi::FLAG_GFP_ATOMIC);
    /// Device-owned instead of owned by the open file.
    pub const PERSIST: Flags = Flags(uapi::FLAG_PERSIST);

    /// The raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// `self` with the bits of `other` added.
    #[must_use]
    pub const fn with(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }

    /// `self` without the bits of `other`.
    #[must_use]
    pub const fn without(self, other: Flags) -> Flags {
        Flags(self.0 & !other.0)
    }

    /// Parses gfp flag names separated by `,` or `|`, e.g. `GFP_KERNEL|__GFP_ZERO`.
    ///
    /// Names are case-insensitive and may drop their `GFP_`/`__GFP_` prefix (`zero`,
    /// `atomic`). Without any of `GFP_KERNEL`, `GFP_ATOMIC` and `GFP_NOWAIT`,
    /// `GFP_KERNEL` is added; two of them are an error, as is an empty list.
    pub fn parse_gfp(s: &str) -> Result<Flags> {
        let mut flags = 0u32;
        let mut any = false;
        for name in s.split([',', '|']) {
            let name = name.trim();
            if name.is_empty() {
                return Err(invalid("gfp flags", s, "empty flag name"));
            }
            flags |= gfp_bit(name)?;
            any = true;
        }
        if !any {
            return Err(invalid("gfp flags", s, "no flag given"));
        }
        match (flags & uapi::FLAG_BASE_MASK).count_ones() {
            0 => flags |= uapi::FLAG_GFP_KERNEL,
            1 => {}
            _ => {
                return Err(invalid(
                    "gfp flags",
                    s,
                    "GFP_KERNEL, GFP_ATOMIC and GFP_NOWAIT exclude each other",
                ))
            }
        }
        Ok(Flags(flags))
    }

    /// The names of the gfp bits that are set, in ABI order (`PERSIST` and unknown bits
    /// are left out).
    pub fn gfp_names(self) -> Vec<&'static str> {
        GFP_NAMES
            .iter()
            .filter(|(bit, _)| self.0 & bit != 0)
            .map(|(_, name)| *name)
            .collect()
    }

    /// The gfp names joined by `|` (`-` when none), as in plans and tables.
    pub fn gfp_string(self) -> String {
        let names = self.gfp_names();
        if names.is_empty() {
            "-".to_owned()
        } else {
            names.join("|")
        }
    }
}

/// The ABI bit of one gfp flag name.
fn gfp_bit(name: &str) -> Result<u32> {
    let upper = name.to_ascii_uppercase();
    let short = upper.trim_start_matches('_');
    let short = short.strip_prefix("GFP_").unwrap_or(short);
    GFP_NAMES
        .iter()
        .find(|(_, n)| {
            let n = n.trim_start_matches('_');
            n.strip_prefix("GFP_").unwrap_or(n) == short
        })
        .map(|(bit, _)| *bit)
        .ok_or_else(|| {
            invalid(
                "gfp flag",
                name,
                "known flags: GFP_KERNEL, GFP_ATOMIC, GFP_NOWAIT, __GFP_ZERO, __GFP_NORETRY, \
                 __GFP_NOWARN, GFP_DMA, GFP_DMA32",
            )
        })
}

/// Parses a size in bytes: a decimal number with an optional binary unit, `K`, `M` or
/// `G` (also written `KiB`, `KB`, `k`...; all are powers of 1024) or `B`. At least 1.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(digits_end);
    if digits.is_empty() {
        return Err(invalid(
            "size",
            s,
            "expected a number of bytes, e.g. 1, 4K, 2M",
        ));
    }
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(invalid("size", s, "unknown unit (use K, M or G)")),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| invalid("size", s, "too large"))?;
    let bytes = n
        .checked_mul(1 << shift)
        .ok_or_else(|| invalid("size", s, "too large"))?;
    if bytes == 0 {
        return Err(invalid("size", s, "must be at least 1 byte"));
    }
    Ok(bytes)
}

/// Formats a size the way [`parse_size`] reads it: `1`, `1024`... or with the largest
/// unit that divides it exactly (`4K`, `2M`, `1G`).
pub fn format_size(bytes: u64) -> String {
    for (shift, unit) in [(30, "G"), (20, "M"), (10, "K")] {
        if bytes != 0 && bytes % (1 << shift) == 0 {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// Parses a positive count (`--iters`, `--count`).
pub fn parse_count(what: &'static str, s: &str) -> Result<u32> {
    match s.trim().parse::<u32>() {
        Ok(0) => Err(invalid(what, s, "must be at least 1")),
        Ok(n) => Ok(n),
        Err(e) => Err(invalid(what, s, &e.to_string())),
    }
}

/// Parses an allocation handle (a positive decimal number).
pub fn parse_handle(s: &str) -> Result<u64> {
    match s.trim().parse::<u64>() {
        Ok(0) => Err(invalid("handle", s, "handles start at 1")),
        Ok(n) => Ok(n),
        Err(e) => Err(invalid("handle", s, &e.to_string())),
    }
}

/// An address as JSON shows it: `0x` and lower-case hex. One allocation, of the longest
/// address's size (`format!` would start smaller and grow).
pub fn hex(addr: u64) -> String {
    use fmt::Write;
    let mut s = String::with_capacity(2 + 16);
    let _ = write!(s, "{addr:#x}");
    s
}

fn invalid(what: &'static str, input: &str, reason: &str) -> Error {
    Error::Invalid {
        what,
        input: input.to_owned(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_name() {
        for (s, k) in [
            ("kmalloc", Kind::Kmalloc),
            ("VMALLOC", Kind::Vmalloc),
            ("dma-coherent", Kind::DmaCoherent),
            ("dma_coherent", Kind::DmaCoherent),
            ("kvmalloc", Kind::Kvmalloc),
            ("pages", Kind::Pages),
        ] {
            assert_eq!(Kind::parse(s).unwrap(), k, "{s}");
        }
        let err = Kind::parse("slab").unwrap_err();
        assert_eq!(err.errno_name(), "EINVAL");
        assert!(err
            .to_string()
            .starts_with("invalid kind \"slab\": known kinds"));
        assert!(Kind::parse("").is_err());
    }

    #[test]
    fn kinds_match_the_abi() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_abi(k.abi()), Some(k));
            assert_eq!(Kind::parse(k.name()).unwrap(), k);
        }
        assert_eq!(Kind::ALL.len() as u32, uapi::KIND_COUNT);
        assert_eq!(Kind::from_abi(uapi::KIND_COUNT), None);
        assert_eq!(Kind::name_of(2), "dma_coherent");
        assert_eq!(Kind::name_of(7), "kind7");
        assert_eq!(
            serde_json::to_string(&Kind::DmaCoherent).unwrap(),
            "\"dma_coherent\""
        );
    }

    #[test]
    fn gfp_names_parse_in_many_spellings() {
        let zero = uapi::FLAG_GFP_KERNEL | uapi::FLAG_ZERO;
        for s in [
            "GFP_KERNEL,__GFP_ZERO",
            "GFP_KERNEL|__GFP_ZERO",
            "gfp_kernel, __gfp_zero",
            "kernel|zero",
            "__GFP_ZERO",
            "zero",
            "GFP_ZERO",
        ] {
            assert_eq!(Flags::parse_gfp(s).unwrap().bits(), zero, "{s}");
        }
        assert_eq!(
            Flags::parse_gfp("atomic").unwrap(),
            Flags(uapi::FLAG_GFP_ATOMIC)
        );
        assert_eq!(
            Flags::parse_gfp("GFP_NOWAIT,__GFP_NORETRY,__GFP_NOWARN,GFP_DMA,GFP_DMA32")
                .unwrap()
                .bits(),
            uapi::FLAG_GFP_NOWAIT
                | uapi::FLAG_NORETRY
                | uapi::FLAG_NOWARN
                | uapi::FLAG_DMA
                | uapi::FLAG_DMA32
        );
        // DMA32 is not DMA with a suffix, nor the other way round.
        assert_eq!(
            Flags::parse_gfp("dma").unwrap().bits(),
            uapi::FLAG_GFP_KERNEL | uapi::FLAG_DMA
        );
    }

    #[test]
    fn gfp_errors() {
        for (s, reason) in [
            ("GFP_BOGUS", "known flags"),
            ("GFP_KERNEL,", "empty flag name"),
            ("", "empty flag name"),
            ("GFP_KERNEL|GFP_ATOMIC", "exclude each other"),
            ("persist", "known flags"),
        ] {
            let err = Flags::parse_gfp(s).unwrap_err();
            assert_eq!(err.errno_name(), "EINVAL");
            assert!(err.to_string().contains(reason), "{s}: {err}");
        }
        assert_eq!(
            Flags::parse_gfp("GFP_BOGUS").unwrap_err().to_string(),
            "invalid gfp flag \"GFP_BOGUS\": known flags: GFP_KERNEL, GFP_ATOMIC, GFP_NOWAIT, \
             __GFP_ZERO, __GFP_NORETRY, __GFP_NOWARN, GFP_DMA, GFP_DMA32"
        );
    }

    #[test]
    fn gfp_names_round_trip() {
        let f = Flags(uapi::FLAG_GFP_ATOMIC | uapi::FLAG_NOWARN | uapi::FLAG_PERSIST);
        assert_eq!(f.gfp_names(), ["GFP_ATOMIC", "__GFP_NOWARN"]);
        assert_eq!(f.gfp_string(), "GFP_ATOMIC|__GFP_NOWARN");
        assert_eq!(
            Flags::parse_gfp(&f.gfp_string()).unwrap(),
            f.without(Flags::PERSIST)
        );
        assert_eq!(Flags(0).gfp_string(), "-");
        assert!(f.contains(Flags::PERSIST));
        assert!(!Flags::GFP_KERNEL.contains(Flags::PERSIST));
        assert_eq!(
            Flags::GFP_KERNEL.with(Flags::PERSIST).bits(),
            uapi::FLAG_GFP_KERNEL | uapi::FLAG_PERSIST
        );
    }

    #[test]
    fn sizes() {
        for (s, n) in [
            ("1", 1),
            ("1024", 1024),
            ("4K", 4096),
            ("4k", 4096),
            ("64KiB", 64 << 10),
            ("64kb", 64 << 10),
            ("2M", 2 << 20),
            ("2MiB", 2 << 20),
            ("1G", 1 << 30),
            ("16B", 16),
            (" 8 ", 8),
        ] {
            assert_eq!(parse_size(s).unwrap(), n, "{s}");
        }
    }

    #[test]
    fn size_errors() {
        for (s, reason) in [
            ("0", "must be at least 1 byte"),
            ("0K", "must be at least 1 byte"),
            ("", "expected a number"),
            ("K", "expected a number"),
            ("-1", "expected a number"),
            ("1.5M", "unknown unit"),
            ("4X", "unknown unit"),
            ("4 K B", "unknown unit"),
            ("99999999999999999999", "too large"),
            ("17179869184G", "too large"),
        ] {
            let err = parse_size(s).unwrap_err();
            assert_eq!(err.errno_name(), "EINVAL");
            assert!(err.to_string().contains(reason), "{s}: {err}");
            assert!(err.to_string().starts_with("invalid size "), "{err}");
        }
    }

    #[test]
    fn sizes_format_as_they_parse() {
        for (n, s) in [
            (1, "1"),
            (1000, "1000"),
            (1024, "1K"),
            (1536, "1536"),
            (4096, "4K"),
            (4 << 20, "4M"),
            (3 << 30, "3G"),
        ] {
            assert_eq!(format_size(n), s);
            assert_eq!(parse_size(s).unwrap(), n);
        }
    }

    #[test]
    fn counts_and_handles() {
        assert_eq!(parse_count("iters", "1000").unwrap(), 1000);
        assert!(parse_count("iters", "0")
            .unwrap_err()
            .to_string()
            .contains("at least 1"));
        assert!(parse_count("count", "x").is_err());
        assert!(parse_count("count", "-3").is_err());
        assert_eq!(parse_handle("42").unwrap(), 42);
        assert_eq!(
            parse_handle("0").unwrap_err().to_string(),
            "invalid handle \"0\": handles start at 1"
        );
        assert!(parse_handle("0x10").is_err());
        assert_eq!(hex(0xffff_0000_1234_5000), "0xffff000012345000");
        assert_eq!(hex(0), "0x0");
    }
}
