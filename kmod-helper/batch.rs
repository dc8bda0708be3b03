// SPDX-License-Identifier: GPL-2.0

//! A file's buffers for ALLOC_BATCH and FREE_BATCH: the kernel copy of a batch's entries and its
//! scratch space, about 50 KiB, allocated at the file's first batch call and kept until its
//! release (allocating, zeroing and filling them per call cost about 230 ns per entry under
//! emulation, and freeing them more).

use kernel::prelude::*;

use crate::shared::Slot;
use crate::uapi;

/// See the module documentation.
pub(crate) struct BatchBuffers {
    allocs: KVVec<uapi::Alloc>,
    frees: KVVec<uapi::Free>,
    slots: KVVec<Slot>,
}

impl BatchBuffers {
    fn new() -> Result<Self> {
        let max = uapi::BATCH_MAX as usize;
        let mut slots = KVVec::with_capacity(max, GFP_KERNEL)?;
        for _ in 0..max {
            // Cannot fail: there is room for `max` entries.
            let _ = slots.push_within_capacity(Slot::EMPTY);
        }
        Ok(Self {
            allocs: KVVec::from_elem(uapi::Alloc::default(), max, GFP_KERNEL)?,
            frees: KVVec::from_elem(uapi::Free::default(), max, GFP_KERNEL)?,
            slots,
        })
    }

    /// The first `count` ALLOC entries and slots; `EINVAL` above `BATCH_MAX`.
    pub(crate) fn allocs(&mut self, count: usize) -> Result<(&mut [uapi::Alloc], &mut [Slot])> {
        let Self { allocs, slots, .. } = self;
        let slots = slots.get_mut(..count).ok_or(EINVAL)?;
        Ok((allocs.get_mut(..count).ok_or(EINVAL)?, slots))
    }

    /// The first `count` FREE entries and slots; `EINVAL` above `BATCH_MAX`.
    pub(crate) fn frees(&mut self, count: usize) -> Result<(&mut [uapi::Free], &mut [Slot])> {
        let Self { frees, slots, .. } = self;
        let slots = slots.get_mut(..count).ok_or(EINVAL)?;
        Ok((frees.get_mut(..count).ok_or(EINVAL)?, slots))
    }

    /// The buffers of `guard`, allocated on first use. The slots need no emptying between
    /// calls: `Shared::alloc` and `Shared::free` leave no memory in them.
    pub(crate) fn get(guard: &mut Option<BatchBuffers>) -> Result<&mut Self> {
        match guard {
            Some(buf) => Ok(buf),
            None => Ok(guard.insert(Self::new()?)),
        }
    }
}
