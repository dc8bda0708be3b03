//! `--live N`: allocations held across a sweep.

use super::spec::LIVE_SIZE;
use kmemlab::device::Device;
use kmemlab::error::{Error, Result};
use kmemlab::spec::{Flags, Kind};
use kmemlab::uapi;
use kmemlab::uapi::{Alloc, Free};
use nix::errno::Errno;

/// The allocations `--live N` holds for a sweep: N kmalloc allocations of [`LIVE_SIZE`]
/// bytes, made with ALLOC_BATCH, freed with FREE_BATCH by [`LiveSet::release`], or on drop
/// when the sweep ends early.
#[derive(Debug)]
pub struct LiveSet<'a, D: Device + ?Sized> {
    dev: &'a D,
    handles: Vec<u64>,
}

impl<'a, D: Device + ?Sized> LiveSet<'a, D> {
    /// Allocates `count` of them, [`uapi::BATCH_MAX`] per call (none for 0). When the
    /// module refuses one, those made so far are freed and the error says how many
    /// there were.
    pub fn hold(dev: &'a D, count: u32) -> Result<Self> {
        let mut set = Self {
            dev,
            handles: Vec::with_capacity(count as usize),
        };
        let request = Alloc {
            kind: Kind::Kmalloc.abi(),
            flags: Flags::GFP_KERNEL.bits(),
            size: LIVE_SIZE,
            ..Alloc::default()
        };
        let mut entries = vec![request; (uapi::BATCH_MAX as usize).min(count as usize)];
        let fail = |held: usize, source: Error| Error::LiveFill {
            wanted: count,
            held,
            source: Box::new(source),
        };
        while set.handles.len() < count as usize {
            let n = entries.len().min(count as usize - set.handles.len());
            entries[..n].fill(request);
            let got = match dev.alloc_batch(&mut entries[..n]) {
                Ok(got) => got,
                Err(e) => return Err(fail(set.handles.len(), e)),
            };
            set.handles
                .extend(entries[..got.done.min(n)].iter().map(|a| a.handle));
            if let Some(source) = got.error {
                let cmd = "KMEMLAB_ALLOC_BATCH";
                return Err(fail(set.handles.len(), Error::Ioctl { cmd, source }));
            }
            if got.done == 0 {
                // No progress and no error: the module broke its word.
                let e = Error::Ioctl {
                    cmd: "KMEMLAB_ALLOC_BATCH",
                    source: Errno::EPROTO,
                };
                return Err(fail(set.handles.len(), e));
            }
        }
        Ok(set)
    }

    /// How many are held.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Frees them all, [`uapi::BATCH_MAX`] per FREE_BATCH; the first failure is returned
    /// after trying the rest.
    pub fn release(mut self) -> Result<()> {
        self.free_all()
    }

    fn free_all(&mut self) -> Result<()> {
        let handles = std::mem::take(&mut self.handles);
        let mut first = None;
        for chunk in handles.chunks(uapi::BATCH_MAX as usize) {
            let mut frees: Vec<Free> = chunk
                .iter()
                .map(|&handle| Free {
                    handle,
                    ..Free::default()
                })
                .collect();
            let res = self
                .dev
                .free_batch(&mut frees)
                .and_then(|got| match got.error {
                    Some(source) => Err(Error::Ioctl {
                        cmd: "KMEMLAB_FREE_BATCH",
                        source,
                    }),
                    None => Ok(()),
                });
            if let Err(e) = res {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl<D: Device + ?Sized> Drop for LiveSet<'_, D> {
    fn drop(&mut self) {
        if let Err(e) = self.free_all() {
            tracing::warn!("failed to free the --live allocations: {}", e.report());
        }
    }
}

#[cfg(test)]
mod tests {
    use kmemlab::MockDevice;

    use super::*;
    use crate::bench::spec::SweepSpec;

    #[test]
    fn live_allocations_are_held_in_batches_and_freed() {
        let dev = MockDevice::new();
        let set = LiveSet::hold(&dev, 300).unwrap();
        assert_eq!(set.len(), 300);
        let live = dev.live();
        assert_eq!(live.len(), 300);
        assert!(live
            .iter()
            .all(|a| a.kind == uapi::KIND_KMALLOC && a.size == LIVE_SIZE));
        set.release().unwrap();
        assert!(dev.live().is_empty());
        // Dropped without release (a sweep that ends early): freed all the same.
        drop(LiveSet::hold(&dev, 5).unwrap());
        assert!(dev.live().is_empty());
        assert!(LiveSet::hold(&dev, 0).unwrap().is_empty());

        // Refused after the quota: what was held is freed, the error says how many.
        let dev = MockDevice::new().with_privileges(0);
        let err = LiveSet::hold(&dev, 2000).unwrap_err();
        assert_eq!(err.errno(), Errno::EDQUOT);
        let msg = err.report();
        assert!(
            msg.contains("failed to hold 2000 live allocations"),
            "{msg}"
        );
        assert!(msg.contains("refused after 1024"), "{msg}");
        assert!(msg.contains("EDQUOT"), "{msg}");
        assert!(dev.live().is_empty());

        // Batches leave room for the held allocations.
        let mut info = MockDevice::new().info().unwrap();
        info.max_outstanding_count = 1000;
        let spec = SweepSpec {
            kinds: Some(vec![Kind::Kmalloc]),
            sizes: Some(vec![64]),
            live: 600,
            ..SweepSpec::default()
        };
        let p = spec.points(&info)[0];
        assert_eq!((p.batch, p.live), (200, 600));
    }
}
