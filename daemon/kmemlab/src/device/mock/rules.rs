//! The module's rules as the mock applies them: flags and sizes, privileges and quotas,
//! and the usable size of a kmalloc request.

use std::collections::BTreeMap;

use kmemlab_uapi as uapi;
use kmemlab_uapi::{Alloc, Info};
use nix::errno::Errno;

use crate::spec::{Flags, Kind};

/// Every `PRIV_*` bit: root with CAP_SYSLOG, `kptr_restrict` 0 or 1.
pub const PRIV_ALL: u32 = uapi::PRIV_ADMIN | uapi::PRIV_KADDR | uapi::PRIV_PHYS;

/// The module's default `file_max_bytes` parameter (16 MiB).
pub const DEFAULT_FILE_MAX_BYTES: u64 = 16 << 20;
/// The module's default `file_max_count` parameter.
pub const DEFAULT_FILE_MAX_COUNT: u32 = 1024;
/// The module's default `atomic_quota_bytes` parameter (64 KiB).
pub const DEFAULT_ATOMIC_QUOTA_BYTES: u64 = 64 << 10;
/// The module's default `bench_max_bytes` parameter (64 MiB).
pub const DEFAULT_BENCH_MAX_BYTES: u64 = 64 << 20;

/// GFP_ATOMIC and GFP_NOWAIT: the allocations the atomic quota counts.
pub(super) const ATOMIC_FLAGS: u32 = uapi::FLAG_GFP_ATOMIC | uapi::FLAG_GFP_NOWAIT;

/// Whether the opener `info` describes has the `PRIV_*` bit `bit`.
pub(super) fn has(info: &Info, bit: u32) -> bool {
    info.privileges & bit != 0
}

/// The module's privilege and quota checks for an ALLOC of `size` bytes with `flags`
/// by the opener `info` describes, holding the allocations `live`.
pub(super) fn check_quota(
    info: &Info,
    live: &BTreeMap<u64, Alloc>,
    size: u64,
    flags: Flags,
) -> Option<Errno> {
    if has(info, uapi::PRIV_ADMIN) {
        return None;
    }
    if flags.contains(Flags::PERSIST) {
        return Some(Errno::EPERM);
    }
    // This file's own allocations (device-owned ones are not its).
    let own = || live.values().filter(|a| a.result & uapi::RESULT_OWN != 0);
    if flags.bits() & ATOMIC_FLAGS != 0 {
        let atomic: u64 = own()
            .filter(|a| a.flags & ATOMIC_FLAGS != 0)
            .map(|a| a.size)
            .sum();
        if atomic.saturating_add(size) > info.atomic_quota_bytes {
            return Some(Errno::EPERM);
        }
    }
    let bytes: u64 = own().map(|a| a.size).sum();
    if own().count() >= info.file_max_count as usize
        || bytes.saturating_add(size) > info.file_max_bytes
    {
        return Some(Errno::EDQUOT);
    }
    None
}

/// The module's flag and size checks for ALLOC and BENCH.
pub(super) fn check(
    info: &Info,
    kind: Kind,
    size: u64,
    flags: Flags,
    persist_ok: bool,
) -> Option<Errno> {
    let f = flags.bits();
    let zone_ok = match kind {
        Kind::Kmalloc => uapi::FLAG_DMA,
        Kind::Pages => uapi::FLAG_DMA | uapi::FLAG_DMA32,
        _ => 0,
    };
    if info.kinds & (1 << kind.abi()) == 0
        || f & !info.flags != 0
        || (f & uapi::FLAG_BASE_MASK).count_ones() != 1
        || (f & uapi::FLAG_PERSIST != 0 && !persist_ok)
        || f & (uapi::FLAG_DMA | uapi::FLAG_DMA32) & !zone_ok != 0
        || size == 0
    {
        return Some(Errno::EINVAL);
    }
    if size > info.max_size[kind.abi() as usize] {
        return Some(Errno::E2BIG);
    }
    None
}

/// `ksize()` of a kmalloc request: the size of its slab cache.
pub(super) fn kmalloc_usable(size: u64) -> u64 {
    match size {
        0..=8 => 8,
        9..=96 if size > 64 => 96,
        129..=192 => 192,
        _ => size.next_power_of_two(),
    }
}

#[cfg(test)]
mod tests {
    use crate::device::mock::MockDevice;
    use kmemlab_uapi::Info;

    use super::*;
    use crate::device::Device;
    use crate::error::Result;
    use crate::spec::{Flags, Kind};

    fn errno_of<T: std::fmt::Debug>(r: Result<T>) -> Errno {
        r.unwrap_err().errno()
    }

    #[test]
    fn mock_enforces_the_module_rules() {
        let dev = MockDevice::new();
        let k = Flags::GFP_KERNEL;
        assert_eq!(errno_of(dev.alloc(Kind::Kmalloc, 0, k)), Errno::EINVAL);
        assert_eq!(errno_of(dev.alloc(Kind::Kmalloc, 8 << 20, k)), Errno::E2BIG);
        assert_eq!(
            errno_of(dev.alloc(Kind::Kmalloc, 1, Flags(0))),
            Errno::EINVAL
        );
        assert_eq!(
            errno_of(dev.alloc(Kind::Kmalloc, 1, Flags(1 << 12 | 1))),
            Errno::EINVAL
        );
        assert_eq!(
            errno_of(dev.alloc(
                Kind::Kmalloc,
                1,
                Flags(uapi::FLAG_GFP_KERNEL | uapi::FLAG_GFP_ATOMIC)
            )),
            Errno::EINVAL
        );
        // GFP_DMA needs ZONE_DMA, which the mock kernel lacks.
        assert_eq!(
            errno_of(dev.alloc(Kind::Kmalloc, 1, k.with(Flags(uapi::FLAG_DMA)))),
            Errno::EINVAL
        );
        assert_eq!(
            errno_of(dev.bench(Kind::Kmalloc, 1, k.with(Flags::PERSIST), 10)),
            Errno::EINVAL
        );
        assert_eq!(errno_of(dev.bench(Kind::Kmalloc, 1, k, 0)), Errno::EINVAL);
        assert_eq!(errno_of(dev.trigger(0)), Errno::EINVAL);
        assert_eq!(errno_of(dev.trigger(100_001)), Errno::EINVAL);
        // E2BIG counts as a failure, EINVAL does not.
        assert_eq!(dev.stats().unwrap().kinds[0].failures, 1);

        let small = MockDevice::with_info(Info {
            max_outstanding_count: 1,
            ..MockDevice::new().info
        });
        small.alloc(Kind::Kmalloc, 1, k).unwrap();
        assert_eq!(errno_of(small.alloc(Kind::Kmalloc, 1, k)), Errno::ENOSPC);
    }

    #[test]
    fn mock_hides_addresses_per_privilege() {
        let hidden_bits = |privileges: u32| {
            let dev = MockDevice::new().with_privileges(privileges);
            let a = dev.alloc(Kind::DmaCoherent, 1, Flags::GFP_KERNEL).unwrap();
            let shown = (a.vaddr != 0, a.phys != 0, a.dma != 0);
            let bits = a.result & (uapi::RESULT_HIDDEN | uapi::RESULT_PHYS_HIDDEN);
            (shown, bits)
        };
        assert_eq!(hidden_bits(PRIV_ALL), ((true, true, true), 0));
        assert_eq!(
            hidden_bits(uapi::PRIV_KADDR),
            ((true, false, false), uapi::RESULT_PHYS_HIDDEN)
        );
        assert_eq!(
            hidden_bits(uapi::PRIV_ADMIN | uapi::PRIV_PHYS),
            ((false, true, true), uapi::RESULT_HIDDEN)
        );
        assert_eq!(
            hidden_bits(0),
            (
                (false, false, false),
                uapi::RESULT_HIDDEN | uapi::RESULT_PHYS_HIDDEN
            )
        );
        // LIST reports them as ALLOC did.
        let dev = MockDevice::new().with_privileges(uapi::PRIV_KADDR);
        let a = dev.alloc(Kind::Kmalloc, 1, Flags::GFP_KERNEL).unwrap();
        assert_eq!(dev.list().unwrap(), [a]);
    }

    #[test]
    fn mock_info_per_privilege() {
        let root = MockDevice::new().info().unwrap();
        assert_eq!(root.privileges, PRIV_ALL);
        assert_eq!(
            (root.file_max_bytes, root.file_max_count),
            (u64::MAX, u32::MAX)
        );
        assert_eq!(
            (root.dma_mask, root.coherent_dma_mask),
            (0xffff_ffff, 0xffff_ffff)
        );
        assert_eq!(
            (root.atomic_quota_bytes, root.bench_max_bytes),
            (DEFAULT_ATOMIC_QUOTA_BYTES, DEFAULT_BENCH_MAX_BYTES)
        );
        let user = MockDevice::new().hiding_addresses().info().unwrap();
        assert_eq!(user.privileges, 0);
        assert_eq!(
            (user.file_max_bytes, user.file_max_count),
            (DEFAULT_FILE_MAX_BYTES, DEFAULT_FILE_MAX_COUNT)
        );
        // Admin again: unlimited again.
        let admin = MockDevice::new()
            .with_privileges(0)
            .with_privileges(uapi::PRIV_ADMIN)
            .info()
            .unwrap();
        assert_eq!(
            (admin.file_max_bytes, admin.file_max_count),
            (u64::MAX, u32::MAX)
        );
    }

    #[test]
    fn mock_quotas_without_admin() {
        let k = Flags::GFP_KERNEL;
        let atomic = Flags::GFP_ATOMIC;
        let user = MockDevice::with_info(Info {
            file_max_count: 3,
            ..MockDevice::new().hiding_addresses().info().unwrap()
        });
        // Device-owned allocations need CAP_SYS_ADMIN.
        assert_eq!(
            errno_of(user.alloc(Kind::Kmalloc, 1, k.with(Flags::PERSIST))),
            Errno::EPERM
        );
        // Atomic bytes up to the atomic quota, live ones counted.
        let a = user.alloc(Kind::Kmalloc, 60 << 10, atomic).unwrap();
        assert_eq!(
            errno_of(user.alloc(Kind::Kmalloc, 8 << 10, Flags(uapi::FLAG_GFP_NOWAIT))),
            Errno::EPERM
        );
        user.free(a.handle).unwrap();
        let a = user.alloc(Kind::Kmalloc, 64 << 10, atomic).unwrap();
        // Count and bytes of this opener's own allocations.
        let b = user.alloc(Kind::Vmalloc, 15 << 20, k).unwrap();
        assert_eq!(
            errno_of(user.alloc(Kind::Vmalloc, 2 << 20, k)),
            Errno::EDQUOT
        );
        user.alloc(Kind::Kmalloc, 1, k).unwrap();
        assert_eq!(errno_of(user.alloc(Kind::Kmalloc, 1, k)), Errno::EDQUOT);
        user.free(a.handle).unwrap();
        user.free(b.handle).unwrap();
        user.alloc(Kind::Vmalloc, 15 << 20, k).unwrap();
        // Refusals count as failures.
        let failures: u64 = user.stats().unwrap().kinds.iter().map(|s| s.failures).sum();
        assert_eq!(failures, 4);
        // BENCH: atomic size and total bytes limited.
        assert_eq!(
            errno_of(user.bench(Kind::Kmalloc, (64 << 10) + 1, atomic, 1)),
            Errno::EPERM
        );
        assert_eq!(
            errno_of(user.bench(Kind::Kmalloc, 1 << 20, k, 65)),
            Errno::EPERM
        );
        user.bench(Kind::Kmalloc, 1 << 20, k, 64).unwrap();

        // With CAP_SYS_ADMIN none of it applies.
        let root = MockDevice::new();
        root.alloc(Kind::Kmalloc, 1, k.with(Flags::PERSIST))
            .unwrap();
        root.alloc(Kind::Kmalloc, 1 << 20, atomic).unwrap();
        root.alloc(Kind::Vmalloc, 32 << 20, k).unwrap();
        root.bench(Kind::Kmalloc, 1 << 20, atomic, 1000).unwrap();
    }

    #[test]
    fn mock_reports_like_the_module() {
        let dev = MockDevice::new();
        let d = dev
            .alloc(
                Kind::DmaCoherent,
                1024,
                Flags::GFP_ATOMIC.with(Flags::PERSIST),
            )
            .unwrap();
        assert_eq!(d.dma % 4096, 0);
        assert_ne!(d.dma, 0);
        let r = d.result;
        assert_eq!(
            r & (uapi::RESULT_DMA | uapi::RESULT_ZEROED | uapi::RESULT_PERSIST),
            uapi::RESULT_DMA | uapi::RESULT_ZEROED | uapi::RESULT_PERSIST
        );
        let v = dev
            .alloc(Kind::Vmalloc, 4 << 20, Flags::GFP_KERNEL)
            .unwrap();
        assert_eq!((v.pages, v.phys_segments), (1024, 1024));
        assert_eq!(v.result & uapi::RESULT_ZEROED, 0);

        let hidden = MockDevice::new().hiding_addresses();
        let h = hidden
            .alloc(Kind::DmaCoherent, 1, Flags::GFP_KERNEL)
            .unwrap();
        assert_eq!((h.vaddr, h.phys, h.dma), (0, 0, 0));
        let both = uapi::RESULT_HIDDEN | uapi::RESULT_PHYS_HIDDEN;
        assert_eq!(h.result & both, both);
    }
}
