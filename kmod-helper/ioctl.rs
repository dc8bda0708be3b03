// SPDX-License-Identifier: GPL-2.0

//! The ioctl commands of `/dev/kmemlab` (`uapi/src/abi.rs`), one `cmd_*` method each, called by
//! the dispatch in `file.rs`.

use kernel::{
    prelude::*,
    transmute::{
        AsBytes,
        FromBytes, //
    },
    uaccess::{
        UserSlice,
        UserSliceReader,
        UserSliceWriter, //
    }, //
};

use crate::batch::BatchBuffers;
use crate::file::KmemlabFile;
use crate::mem;
use crate::profile::{
    Cmd,
    Phase,
    Probe, //
};
use crate::shared::{
    Owner,
    Slot, //
};
use crate::uapi;

impl KmemlabFile {
    fn owner(&self) -> Owner {
        Owner::File(self.opener.id)
    }

    /// INFO: what the module is and what it accepts.
    pub(crate) fn cmd_info(&self, mut writer: UserSliceWriter) -> Result<isize> {
        let limits = &self.shared.limits;
        let privs = self.opener.privs;
        let info = uapi::Info {
            abi_version: uapi::ABI_VERSION,
            page_size: kernel::page::PAGE_SIZE as u32,
            heap_size: self.shared.heap_size,
            kinds: mem::Kind::ALL
                .iter()
                .fold(0, |k, kind| k | 1 << kind.index()),
            flags: mem::supported_flags(),
            max_size: limits.max_size,
            max_outstanding_bytes: limits.max_outstanding_bytes,
            max_outstanding_count: limits.max_outstanding_count,
            irq: self.shared.irq,
            max_bench_iters: limits.max_bench_iters,
            max_trigger_count: limits.max_trigger_count,
            dma_mask: self.shared.dma_mask,
            coherent_dma_mask: self.shared.dma_mask,
            file_max_bytes: if privs.admin {
                u64::MAX
            } else {
                limits.file_max_bytes
            },
            file_max_count: if privs.admin {
                u32::MAX
            } else {
                limits.file_max_count
            },
            privileges: privs.bits(),
            atomic_quota_bytes: limits.atomic_quota_bytes,
            bench_max_bytes: limits.bench_max_bytes,
            ..Default::default()
        };
        writer.write(&info)?;
        Ok(0)
    }

    /// ALLOC: allocates as asked and reports where the memory is.
    pub(crate) fn cmd_alloc(&self, arg: UserSlice) -> Result<isize> {
        let mut probe = Probe::start(Cmd::Alloc);
        let (mut reader, mut writer) = arg.reader_writer();
        let mut entry: uapi::Alloc = read_in(&mut reader)?;
        probe.mark(Phase::CopyIn);
        let mut slot = [Slot::EMPTY];
        let out = self.shared.alloc(
            self.opener,
            core::slice::from_mut(&mut entry),
            &mut slot,
            &mut probe,
        );
        if let Some(err) = out.error {
            return Err(err);
        }
        let handle = entry.handle;
        self.finish_report(&mut entry);
        probe.mark(Phase::Finish);
        if let Err(err) = writer.write(&entry) {
            // The caller cannot learn the handle: undo the allocation.
            self.undo([handle]);
            return Err(err);
        }
        probe.mark(Phase::CopyOut);
        probe.end(1);
        Ok(0)
    }

    /// ALLOC_BATCH: ALLOC for each entry of an array, in one call; see `uapi::AllocBatch`.
    pub(crate) fn cmd_alloc_batch(&self, arg: UserSlice) -> Result<isize> {
        let mut probe = Probe::start(Cmd::AllocBatch);
        let (mut reader, mut writer) = arg.reader_writer();
        let mut req: uapi::AllocBatch = read_in(&mut reader)?;
        let count = batch_count(req.count, req.done, req.error, req._pad, req.reserved)?;
        let (mut array_in, mut array_out) = batch_array::<uapi::Alloc>(req.entries, count)?;
        let mut guard = self.batch.lock();
        let buf = BatchBuffers::get(&mut guard)?;
        let (entries, slots) = buf.allocs(count)?;
        array_in.read_slice(entries.as_bytes_mut())?;
        probe.mark(Phase::CopyIn);
        let out = self.shared.alloc(self.opener, entries, slots, &mut probe);
        let done = entries.get_mut(..out.done).unwrap_or_default();
        for e in done.iter_mut() {
            self.finish_report(e);
        }
        probe.mark(Phase::Finish);
        req.done = out.done as u32;
        req.error = out.error.map_or(0, |e| -e.to_errno());
        let written = array_out
            .write_slice(done.as_bytes())
            .and_then(|()| writer.write(&req));
        if let Err(err) = written {
            // The caller cannot learn the handles (which hiding leaves in place): undo the
            // allocations.
            self.undo(done.iter().map(|e| e.handle));
            return Err(err);
        }
        probe.mark(Phase::CopyOut);
        probe.end(done.len());
        Ok(0)
    }

    /// Adds the ownership bits to a fresh allocation report and hides what the opener may not
    /// see (`Privileges::hide`).
    fn finish_report(&self, report: &mut uapi::Alloc) {
        // As LIST marks them: this file's own, or the device's.
        report.result |= if report.flags & uapi::FLAG_PERSIST != 0 {
            uapi::RESULT_PERSIST
        } else {
            uapi::RESULT_OWN
        };
        self.opener.privs.hide(report);
    }

    /// Frees allocations this file just made and could not report.
    fn undo(&self, handles: impl IntoIterator<Item = u64>) {
        for handle in handles {
            let mut entry = uapi::Free {
                handle,
                ..Default::default()
            };
            let mut slot = [Slot::EMPTY];
            let _ = self.shared.free(
                self.owner(),
                core::slice::from_mut(&mut entry),
                &mut slot,
                &mut Probe::off(Cmd::Free),
            );
        }
    }

    /// FREE: frees a handle this file may see.
    pub(crate) fn cmd_free(&self, arg: UserSlice) -> Result<isize> {
        let mut probe = Probe::start(Cmd::Free);
        let (mut reader, mut writer) = arg.reader_writer();
        let mut entry: uapi::Free = read_in(&mut reader)?;
        probe.mark(Phase::CopyIn);
        let mut slot = [Slot::EMPTY];
        let out = self.shared.free(
            self.owner(),
            core::slice::from_mut(&mut entry),
            &mut slot,
            &mut probe,
        );
        if let Some(err) = out.error {
            return Err(err);
        }
        writer.write(&entry)?;
        probe.mark(Phase::CopyOut);
        probe.end(1);
        Ok(0)
    }

    /// FREE_BATCH: FREE for each entry of an array, in one call; see `uapi::FreeBatch`.
    pub(crate) fn cmd_free_batch(&self, arg: UserSlice) -> Result<isize> {
        let mut probe = Probe::start(Cmd::FreeBatch);
        let (mut reader, mut writer) = arg.reader_writer();
        let mut req: uapi::FreeBatch = read_in(&mut reader)?;
        let count = batch_count(req.count, req.done, req.error, req._pad, req.reserved)?;
        let (mut array_in, mut array_out) = batch_array::<uapi::Free>(req.entries, count)?;
        let mut guard = self.batch.lock();
        let buf = BatchBuffers::get(&mut guard)?;
        let (entries, slots) = buf.frees(count)?;
        array_in.read_slice(entries.as_bytes_mut())?;
        probe.mark(Phase::CopyIn);

        let out = self.shared.free(self.owner(), entries, slots, &mut probe);
        req.done = out.done as u32;
        req.error = out.error.map_or(0, |e| -e.to_errno());
        array_out.write_slice(entries.get(..out.done).unwrap_or_default().as_bytes())?;
        writer.write(&req)?;
        probe.mark(Phase::CopyOut);
        probe.end(out.done);
        Ok(0)
    }

    /// LIST: a page of the allocations this file can see.
    pub(crate) fn cmd_list(&self, arg: UserSlice) -> Result<isize> {
        let (mut reader, mut writer) = arg.reader_writer();
        let mut req: uapi::List = read_in(&mut reader)?;
        if req.count != 0 || req.total != 0 || req._pad != 0 || req.capacity > uapi::LIST_MAX {
            return Err(EINVAL);
        }
        let capacity = req.capacity as usize;
        let (entries, total) = self.shared.list(self.opener, req.after, capacity)?;
        let array = UserSlice::new(
            UserPtr::from_addr(usize::try_from(req.entries)?),
            capacity * size_of::<uapi::Alloc>(),
        );
        let mut out = array.writer();
        for entry in entries.iter() {
            out.write(entry)?;
        }
        req.count = entries.len() as u32;
        req.total = total;
        writer.write(&req)?;
        Ok(0)
    }

    /// STATS: counters per kind and the UIO event count.
    pub(crate) fn cmd_stats(&self, mut writer: UserSliceWriter) -> Result<isize> {
        writer.write(&self.shared.stats())?;
        Ok(0)
    }

    /// BENCH: alloc+free pairs timed in the kernel.
    pub(crate) fn cmd_bench(&self, arg: UserSlice) -> Result<isize> {
        let (mut reader, mut writer) = arg.reader_writer();
        let mut req: uapi::Bench = read_in(&mut reader)?;
        let input_only = uapi::Bench {
            kind: req.kind,
            flags: req.flags,
            size: req.size,
            iters: req.iters,
            hist_addr: req.hist_addr,
            ..Default::default()
        };
        if req != input_only {
            return Err(EINVAL);
        }
        let [alloc, free] =
            self.shared
                .bench(self.opener, req.kind, req.flags, req.size, req.iters)?;
        req.alloc = alloc.timing();
        req.free = free.timing();
        if req.hist_addr != 0 {
            let hist = UserSlice::new(
                UserPtr::from_addr(usize::try_from(req.hist_addr)?),
                uapi::BENCH_HIST_BYTES,
            );
            let mut out = hist.writer();
            out.write_slice(AsBytes::as_bytes(alloc.hist()))?;
            out.write_slice(AsBytes::as_bytes(free.hist()))?;
        }
        writer.write(&req)?;
        Ok(0)
    }

    /// TRIGGER: raises UIO events from the kernel.
    pub(crate) fn cmd_trigger(&self, arg: UserSlice) -> Result<isize> {
        let (mut reader, mut writer) = arg.reader_writer();
        let mut req: uapi::Trigger = read_in(&mut reader)?;
        let max = self.shared.limits.max_trigger_count;
        if req._pad != 0 || req.events != 0 || req.count == 0 || req.count > max {
            return Err(EINVAL);
        }
        req.events = self.shared.trigger(req.count)?;
        writer.write(&req)?;
        Ok(0)
    }
}

/// Checks a batch header's input (`count` from 1 to `BATCH_MAX`, the out, padding and reserved
/// fields zero) and returns `count`.
fn batch_count(count: u32, done: u32, error: i32, pad: u32, reserved: [u64; 2]) -> Result<usize> {
    if count == 0 || count > uapi::BATCH_MAX || done != 0 || error != 0 || pad != 0 {
        return Err(EINVAL);
    }
    if reserved != [0; 2] {
        return Err(EINVAL);
    }
    Ok(count as usize)
}

/// The user array of a batch: `count` entries of `T` at `addr`.
fn batch_array<T>(addr: u64, count: usize) -> Result<(UserSliceReader, UserSliceWriter)> {
    let array = UserSlice::new(
        UserPtr::from_addr(usize::try_from(addr)?),
        count * size_of::<T>(),
    );
    Ok(array.reader_writer())
}

/// Reads an ioctl's input struct.
fn read_in<T: FromBytes>(reader: &mut UserSliceReader) -> Result<T> {
    reader.read()
}
