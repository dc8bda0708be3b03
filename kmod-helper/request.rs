// SPDX-License-Identifier: GPL-2.0

//! An ALLOC request checked: its kind, flags, size and what it will count against the limits,
//! before anything is reserved or allocated (see `Shared::alloc`).

use kernel::{
    bindings,
    prelude::*, //
};

use crate::limits::{
    Charge,
    Limits, //
};
use crate::mem::{
    gfp_for,
    Kind, //
};
use crate::privilege::Privileges;
use crate::shared::is_atomic;
use crate::stats::count_failure;
use crate::uapi;

/// An ALLOC request that passed the checks.
#[derive(Clone, Copy)]
pub(crate) struct Request {
    pub(crate) kind: Kind,
    pub(crate) gfp: bindings::gfp_t,
    pub(crate) size: usize,
    pub(crate) charge: Charge,
}

impl Request {
    /// Checks an ALLOC entry: only `kind`, `flags` and `size` may be set (`EINVAL`), the kind
    /// and flags must be valid (`EINVAL`), `FLAG_PERSIST` needs CAP_SYS_ADMIN (`EPERM`), the size
    /// from 1 to the kind's limit (`EINVAL`, `E2BIG`, which counts as a failure).
    pub(crate) fn check(req: &uapi::Alloc, limits: &Limits, privs: Privileges) -> Result<Self> {
        only_inputs(req)?;
        let kind = Kind::from_abi(req.kind)?;
        let gfp = gfp_for(kind, req.flags, true)?;
        if req.flags & uapi::FLAG_PERSIST != 0 && !privs.admin {
            return Err(EPERM);
        }
        Self::sized(kind, gfp, req, limits)
    }

    /// Checks an ALLOC entry with the same `kind` and `flags` as this request, which passed
    /// [`Request::check`]: as that does, without checking the kind and flags again.
    pub(crate) fn like(&self, req: &uapi::Alloc, limits: &Limits) -> Result<Self> {
        only_inputs(req)?;
        Self::sized(self.kind, self.gfp, req, limits)
    }

    /// The request for `req.size` bytes of `kind` with `gfp`: from 1 to the kind's limit.
    fn sized(
        kind: Kind,
        gfp: bindings::gfp_t,
        req: &uapi::Alloc,
        limits: &Limits,
    ) -> Result<Self> {
        if req.size == 0 {
            return Err(EINVAL);
        }
        if req.size > limits.max_size[kind.index()] {
            count_failure(kind);
            return Err(E2BIG);
        }
        Ok(Self {
            kind,
            gfp,
            size: usize::try_from(req.size)?,
            charge: Charge::one(req.size, is_atomic(req.flags)),
        })
    }
}

/// `EINVAL` unless every field of `req` but the three inputs is zero. (Destructured without
/// `..`: a new field must be added here. Building a whole `Alloc` to compare with cost more.)
fn only_inputs(req: &uapi::Alloc) -> Result {
    let uapi::Alloc {
        kind: _,
        flags: _,
        size: _,
        handle,
        vaddr,
        phys,
        dma,
        usable_size,
        alloc_ns,
        pages,
        phys_segments,
        result,
        _pad,
        reserved: [r0, r1],
    } = *req;
    if handle | vaddr | phys | dma | usable_size | alloc_ns | r0 | r1 != 0
        || pages | phys_segments | result | _pad != 0
    {
        return Err(EINVAL);
    }
    Ok(())
}
