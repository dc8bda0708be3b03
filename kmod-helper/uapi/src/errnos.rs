//! The errno the module answers each bad request with: one table, replayed against the real
//! module by the VM tests (`kmemlab-abi-probe errnos`) and against userspace's mock device
//! by its unit tests, so that the two cannot drift apart. Not part of the module's build
//! (the module includes `abi.rs` only).

use crate::abi::*;

/// One request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// ALLOC with this struct as its argument; the VM test also sends it as the single entry of
    /// an ALLOC_BATCH, whose `error` must be the same errno.
    Alloc(Alloc),
    /// FREE of this handle, which was never given out.
    Free(u64),
    /// A valid ALLOC, its FREE, then a second FREE of the same handle (the errno is the
    /// second FREE's).
    DoubleFree,
    /// BENCH with this struct as its argument.
    Bench(Bench),
    /// TRIGGER of this many events.
    Trigger(u32),
}

/// A request and the errno name the module answers with (`"ok"`: it succeeds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Case {
    /// What is wrong with it.
    pub name: &'static str,
    /// The request.
    pub request: Request,
    /// `"EINVAL"`, `"E2BIG"`, `"ENOENT"`, ... or `"ok"`.
    pub errno: &'static str,
}

/// How many cases [`cases`] gives.
pub const CASES: usize = 17;

/// The cases for an opener with CAP_SYS_ADMIN whose INFO is `info` (limits come from it).
pub fn cases(info: &Info) -> [Case; CASES] {
    let k = FLAG_GFP_KERNEL;
    let alloc = |kind, flags, size| {
        Request::Alloc(Alloc {
            kind,
            flags,
            size,
            ..Alloc::default()
        })
    };
    let bench = |flags, iters| {
        Request::Bench(Bench {
            kind: KIND_KMALLOC,
            flags,
            size: 64,
            iters,
            ..Bench::default()
        })
    };
    let max_kmalloc = info.max_size[KIND_KMALLOC as usize];
    let case = |name, request, errno| Case {
        name,
        request,
        errno,
    };
    [
        case("ALLOC of 64 B", alloc(KIND_KMALLOC, k, 64), "ok"),
        case("ALLOC of size 0", alloc(KIND_KMALLOC, k, 0), "EINVAL"),
        case(
            "ALLOC over the kind's limit",
            alloc(KIND_KMALLOC, k, max_kmalloc.saturating_add(1)),
            "E2BIG",
        ),
        case("ALLOC of an unknown kind", alloc(7, k, 64), "EINVAL"),
        case(
            "ALLOC of a kind past the ABI",
            alloc(u32::MAX, k, 64),
            "EINVAL",
        ),
        case(
            "ALLOC with an unknown flag bit",
            alloc(KIND_KMALLOC, k | 1 << 30, 64),
            "EINVAL",
        ),
        case(
            "ALLOC without a base gfp flag",
            alloc(KIND_KMALLOC, FLAG_ZERO, 64),
            "EINVAL",
        ),
        case(
            "ALLOC with two base gfp flags",
            alloc(KIND_KMALLOC, FLAG_GFP_KERNEL | FLAG_GFP_ATOMIC, 64),
            "EINVAL",
        ),
        case(
            "ALLOC with a nonzero reserved field",
            Request::Alloc(Alloc {
                kind: KIND_KMALLOC,
                flags: k,
                size: 64,
                reserved: [0, 1],
                ..Alloc::default()
            }),
            "EINVAL",
        ),
        case(
            "ALLOC with an output field set",
            Request::Alloc(Alloc {
                kind: KIND_KMALLOC,
                flags: k,
                size: 64,
                handle: 5,
                ..Alloc::default()
            }),
            "EINVAL",
        ),
        case(
            "FREE of an unknown handle",
            Request::Free(u64::MAX - 1),
            "ENOENT",
        ),
        case("FREE of handle 0", Request::Free(0), "ENOENT"),
        case("FREE twice", Request::DoubleFree, "ENOENT"),
        case("BENCH of 0 pairs", bench(k, 0), "EINVAL"),
        case("BENCH with PERSIST", bench(k | FLAG_PERSIST, 10), "EINVAL"),
        case(
            "BENCH over its maximum",
            bench(k, info.max_bench_iters.saturating_add(1)),
            "EINVAL",
        ),
        case("TRIGGER of 0 events", Request::Trigger(0), "EINVAL"),
    ]
}
