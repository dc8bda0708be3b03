//! The mock against the module's errno table (`kmemlab_uapi::errnos`), which the VM tests
//! replay against the real module: a rule the mock gets wrong fails here.

use kmemlab_uapi::errnos::{cases, Request, CASES};
use kmemlab_uapi::Alloc;

use super::MockDevice;
use crate::device::Device;
use crate::error::{errno_name, Result};
use crate::spec::{Flags, Kind};

fn outcome<T>(r: Result<T>) -> String {
    r.map_or_else(|e| e.errno_name(), |_| "ok".to_owned())
}

/// An ALLOC request as the mock takes it: as the only entry of an ALLOC_BATCH (the raw struct,
/// as the module gets it); an allocation made is freed again.
fn alloc(dev: &MockDevice, req: Alloc) -> String {
    let mut entries = [req];
    match dev.alloc_batch(&mut entries) {
        Ok(o) => match o.error {
            Some(errno) => errno_name(errno),
            None => outcome(dev.free(entries[0].handle)),
        },
        Err(e) => e.errno_name(),
    }
}

fn replay(dev: &MockDevice, request: Request) -> String {
    match request {
        Request::Alloc(a) => alloc(dev, a),
        Request::Free(handle) => outcome(dev.free(handle)),
        Request::DoubleFree => match dev.alloc(Kind::Kmalloc, 64, Flags::GFP_KERNEL) {
            Ok(a) => {
                let _ = dev.free(a.handle);
                outcome(dev.free(a.handle))
            }
            Err(e) => format!("alloc failed: {}", e.errno_name()),
        },
        Request::Bench(b) => match Kind::from_abi(b.kind) {
            Some(kind) => outcome(dev.bench(kind, b.size, Flags(b.flags), b.iters)),
            None => "the mock's BENCH takes known kinds only".to_owned(),
        },
        Request::Trigger(n) => outcome(dev.trigger(n)),
    }
}

#[test]
fn the_mock_answers_every_case_as_the_module_does() {
    let dev = MockDevice::new();
    let info = dev.info().unwrap();
    let wrong: Vec<String> = cases(&info)
        .iter()
        .filter_map(|c| {
            let got = replay(&dev, c.request);
            (got != c.errno).then(|| format!("{}: want {}, got {got}", c.name, c.errno))
        })
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert!(dev.live().is_empty(), "nothing left allocated");
    assert_eq!(cases(&info).len(), CASES);
}
