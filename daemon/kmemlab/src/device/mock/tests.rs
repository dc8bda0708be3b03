//! The mock device's own tests.

use kmemlab_uapi::ABI_VERSION;

use super::*;
use crate::device::Device;
use crate::spec::{Flags, Kind};

fn errno_of<T: std::fmt::Debug>(r: Result<T>) -> Errno {
    r.unwrap_err().errno()
}

#[test]
fn mock_answers_and_counts() {
    let dev = MockDevice::new();
    assert_eq!(dev.info().unwrap().abi_version, ABI_VERSION);
    fn irq_of(d: impl Device) -> u32 {
        d.info().unwrap().irq
    }
    assert_eq!(irq_of(&dev), 42);
    assert_eq!(dev.info_calls(), 2);

    let dev = MockDevice::failing(Errno::ENOTTY);
    let err = dev.info().unwrap_err();
    assert_eq!(err.errno_name(), "ENOTTY");
    assert_eq!(err.to_string(), "ioctl KMEMLAB_INFO failed");
    let err = dev.free(1).unwrap_err();
    assert_eq!(err.to_string(), "ioctl KMEMLAB_FREE failed");
    assert_eq!(err.errno_name(), "ENOTTY");
}

#[test]
fn nop_is_counted_and_enottys_on_an_older_module() {
    let dev = MockDevice::new();
    dev.nop().unwrap();
    fn nop_of(d: impl Device) -> Result<()> {
        d.nop()
    }
    nop_of(&dev).unwrap();
    assert_eq!(dev.nop_calls(), 2);
    assert_eq!(dev.calls(), ["nop", "nop"]);
    let old = MockDevice::new().without_nop();
    let err = old.nop().unwrap_err();
    assert_eq!(err.errno(), Errno::ENOTTY);
    assert_eq!(err.to_string(), "ioctl KMEMLAB_NOP failed");
    assert_eq!(old.nop_calls(), 1);
    dev.fail_next(Errno::EIO);
    assert_eq!(errno_of(dev.nop()), Errno::EIO);
}

#[test]
fn mock_handles_increase_and_are_never_reused() {
    let dev = MockDevice::new();
    let a = dev.alloc(Kind::Kmalloc, 1, Flags::GFP_ATOMIC).unwrap();
    let b = dev.alloc(Kind::Vmalloc, 1, Flags::GFP_KERNEL).unwrap();
    assert_eq!((a.handle, b.handle), (1, 2));
    dev.free(2).unwrap();
    let c = dev.alloc(Kind::Vmalloc, 1, Flags::GFP_KERNEL).unwrap();
    assert_eq!(c.handle, 3);
    assert_eq!(a.usable_size, 8);
    assert_eq!((a.pages, a.phys_segments), (1, 1));
    assert_eq!((b.usable_size, b.pages), (4096, 1));
    assert_eq!(a.result & uapi::RESULT_OWN, uapi::RESULT_OWN);
    assert_eq!(
        dev.calls(),
        [
            "alloc kmalloc 1",
            "alloc vmalloc 1",
            "free 2",
            "alloc vmalloc 1"
        ]
    );
}

#[test]
fn mock_free_of_unknown_or_freed_handle_is_enoent() {
    let dev = MockDevice::new();
    assert_eq!(errno_of(dev.free(1)), Errno::ENOENT);
    let a = dev.alloc(Kind::Pages, 4096, Flags::GFP_KERNEL).unwrap();
    assert_eq!(dev.free(a.handle).unwrap().handle, a.handle);
    let err = dev.free(a.handle).unwrap_err();
    assert_eq!(err.errno(), Errno::ENOENT);
    assert_eq!(err.to_string(), "ioctl KMEMLAB_FREE failed");
}

#[test]
fn mock_stats_and_trigger() {
    let dev = MockDevice::new();
    let a = dev.alloc(Kind::Vmalloc, 100, Flags::GFP_KERNEL).unwrap();
    dev.alloc(Kind::Vmalloc, 20, Flags::GFP_KERNEL).unwrap();
    dev.free(a.handle).unwrap();
    let s = dev.stats().unwrap();
    let v = s.kinds[uapi::KIND_VMALLOC as usize];
    assert_eq!(
        (v.live_count, v.live_bytes, v.allocs, v.frees, v.failures),
        (1, 20, 2, 1, 0)
    );
    assert_eq!(dev.trigger(3).unwrap().events, 3);
    assert_eq!(dev.trigger(2).unwrap().events, 5);
    assert_eq!(dev.stats().unwrap().events, 5);
}

#[test]
fn injected_failures_hit_the_next_command_only() {
    let dev = MockDevice::new();
    dev.fail_next(Errno::ENOMEM);
    let err = dev.alloc(Kind::Kmalloc, 1, Flags::GFP_KERNEL).unwrap_err();
    assert_eq!(err.errno_name(), "ENOMEM");
    assert_eq!(
        dev.alloc(Kind::Kmalloc, 1, Flags::GFP_KERNEL)
            .unwrap()
            .handle,
        1
    );
    assert!(dev.info().is_ok());
}
