//! The interrupt ring in the first page of the module's heap (UIO map 0): finding the
//! kernel's record of an event, to tell its source and measure interrupt-to-wake latency.
//!
//! The kernel writes one record per UIO event, under the same spinlock as, and before, it
//! increments the UIO event count: the record with sequence number `s` is the event that
//! made the count `s`. It writes a record's `seq` as 0, then its fields, then the new
//! `seq` (release), and finally the header's `head` (release).
//!
//! A reader does what io_uring's ring readers and a seqlock's readers do, in terms of
//! Rust's (C++'s) memory model: it loads `head` with `Acquire`; it loads the record's
//! `seq` with `Acquire`, the other fields with `Relaxed` atomic loads, then issues a
//! `fence(Acquire)` and loads `seq` again (`Relaxed`). The copy is kept only if both loads
//! of `seq` gave the sequence number wanted: then no store of the kernel's next write of
//! the slot can have been seen by the field loads.

use std::hint::spin_loop;
use std::mem::offset_of;
use std::sync::atomic::{fence, Ordering};

use kmemlab_uapi::{
    IrqRecord, RingHeader, RING_MAGIC, RING_RECORDS_OFFSET, RING_SLOTS, RING_VERSION,
};

#[cfg(any(test, feature = "test-util"))]
pub mod builder;

use crate::sys;
use crate::uio::UioMap;

/// Offset of `RingHeader::head`.
const HEAD_OFFSET: usize = offset_of!(RingHeader, head);
/// Size of an [`IrqRecord`].
const RECORD_SIZE: usize = std::mem::size_of::<IrqRecord>();
/// How many more times a record that is not visible yet is looked for, with a
/// [`spin_loop`] hint in between, before [`find_record`] gives up. The kernel has written
/// the record before the count the daemon read, so it is normally there at once.
pub const RETRIES: u32 = 64;

/// Memory that holds the ring: the mapped heap, or a byte buffer in tests.
///
/// Loads are atomic on the mapped heap; `order` is `Relaxed` or `Acquire`.
pub trait RingMemory {
    /// Length in bytes.
    fn len(&self) -> usize;

    /// Whether there are no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Loads the `u64` at `offset`; `None` when out of bounds or misaligned.
    fn load_u64(&self, offset: usize, order: Ordering) -> Option<u64>;

    /// Loads the `u32` at `offset`; `None` when out of bounds or misaligned.
    fn load_u32(&self, offset: usize, order: Ordering) -> Option<u32>;
}

/// The mapped heap. It must be mapped writable ([`crate::uio::Uio::map`]): on a read-only
/// mapping every load is `None` (see `sys::load_u64`).
impl RingMemory for UioMap {
    fn len(&self) -> usize {
        UioMap::len(self)
    }

    fn load_u64(&self, offset: usize, order: Ordering) -> Option<u64> {
        sys::load_u64(self.shared(), offset, order)
    }

    fn load_u32(&self, offset: usize, order: Ordering) -> Option<u32> {
        sys::load_u32(self.shared(), offset, order)
    }
}

/// Native-endian integers at `offset` of a plain byte buffer (tests, saved heaps); the
/// ordering does not matter for memory nobody else writes.
impl RingMemory for [u8] {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }

    fn load_u64(&self, offset: usize, _order: Ordering) -> Option<u64> {
        if offset % 8 != 0 {
            return None;
        }
        let bytes = self.get(offset..offset.checked_add(8)?)?;
        Some(u64::from_ne_bytes(bytes.try_into().ok()?))
    }

    fn load_u32(&self, offset: usize, _order: Ordering) -> Option<u32> {
        if offset % 4 != 0 {
            return None;
        }
        let bytes = self.get(offset..offset.checked_add(4)?)?;
        Some(u32::from_ne_bytes(bytes.try_into().ok()?))
    }
}

impl RingMemory for Vec<u8> {
    fn len(&self) -> usize {
        self.as_slice().len()
    }

    fn load_u64(&self, offset: usize, order: Ordering) -> Option<u64> {
        self.as_slice().load_u64(offset, order)
    }

    fn load_u32(&self, offset: usize, order: Ordering) -> Option<u32> {
        self.as_slice().load_u32(offset, order)
    }
}

/// The ring header at offset 0 of `mem`, field by field (`Relaxed`; `head` with
/// `Acquire`); `None` when `mem` is too short.
pub fn read_header<M: RingMemory + ?Sized>(mem: &M) -> Option<RingHeader> {
    let u32_at = |o: usize| mem.load_u32(o, Ordering::Relaxed);
    let mut reserved = [0u64; 5];
    for (i, r) in reserved.iter_mut().enumerate() {
        *r = mem.load_u64(offset_of!(RingHeader, reserved) + 8 * i, Ordering::Relaxed)?;
    }
    Some(RingHeader {
        magic: u32_at(offset_of!(RingHeader, magic))?,
        version: u32_at(offset_of!(RingHeader, version))?,
        slots: u32_at(offset_of!(RingHeader, slots))?,
        record_size: u32_at(offset_of!(RingHeader, record_size))?,
        head: mem.load_u64(HEAD_OFFSET, Ordering::Acquire)?,
        reserved,
    })
}

/// Why no record was found for an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Miss {
    /// The header is not a version-1 ring of the expected layout, or does not fit the
    /// memory.
    BadHeader,
    /// The ring has no record with that sequence number yet.
    NotWritten,
    /// Newer events have taken the record's slot.
    Overwritten,
    /// The record changed while it was copied (the kernel was writing it).
    Torn,
}

/// A ring whose header has been checked.
struct Ring<'a, M: ?Sized> {
    mem: &'a M,
    slots: u64,
}

impl<'a, M: RingMemory + ?Sized> Ring<'a, M> {
    /// Checks the header's magic, version and layout (the fields the kernel writes once,
    /// before the heap can be mapped).
    fn open(mem: &'a M) -> Result<Self, Miss> {
        let u32_at = |o: usize| mem.load_u32(o, Ordering::Relaxed).ok_or(Miss::BadHeader);
        let magic = u32_at(offset_of!(RingHeader, magic))?;
        let version = u32_at(offset_of!(RingHeader, version))?;
        let slots = u32_at(offset_of!(RingHeader, slots))? as usize;
        let record_size = u32_at(offset_of!(RingHeader, record_size))? as usize;
        if magic != RING_MAGIC
            || version != RING_VERSION
            || slots == 0
            || slots > RING_SLOTS as usize * 64
            || record_size != RECORD_SIZE
            || RING_RECORDS_OFFSET + slots * RECORD_SIZE > mem.len()
        {
            return Err(Miss::BadHeader);
        }
        Ok(Self {
            mem,
            slots: slots as u64,
        })
    }

    /// One attempt to copy the record of the event after which the UIO count read
    /// `count`.
    fn read(&self, count: u32) -> Result<IrqRecord, Miss> {
        let mem = self.mem;
        // Pairs with the kernel's release store of `head`: the records up to `head` are
        // visible once `head` is.
        let head = mem
            .load_u64(HEAD_OFFSET, Ordering::Acquire)
            .ok_or(Miss::BadHeader)?;
        // The UIO count is a 32-bit counter and the ring's sequence numbers are 64-bit:
        // the sequence number wanted is `head` or an older one with the same low 32 bits.
        // A count up to 2^31 behind `head` is behind it; one further "behind" is ahead of
        // it (the count was read after an event whose `head` is not visible yet).
        let back = (head as u32).wrapping_sub(count);
        if back > i32::MAX as u32 {
            return Err(Miss::NotWritten);
        }
        let Some(seq) = head.checked_sub(u64::from(back)).filter(|s| *s > 0) else {
            return Err(Miss::NotWritten);
        };
        if u64::from(back) >= self.slots {
            return Err(Miss::Overwritten);
        }
        let at = RING_RECORDS_OFFSET + ((seq - 1) % self.slots) as usize * RECORD_SIZE;
        let field = |name: usize| at + name;
        let u64_at = |o: usize, order| mem.load_u64(o, order).ok_or(Miss::BadHeader);
        let u32_at = |o: usize| mem.load_u32(o, Ordering::Relaxed).ok_or(Miss::BadHeader);

        // Pairs with the kernel's release store of `seq`: the fields it wrote before are
        // visible.
        let before = u64_at(field(offset_of!(IrqRecord, seq)), Ordering::Acquire)?;
        if before != seq {
            return Err(if before == 0 || before < seq {
                Miss::Torn
            } else {
                Miss::Overwritten
            });
        }
        let record = IrqRecord {
            seq: before,
            ktime_ns: u64_at(field(offset_of!(IrqRecord, ktime_ns)), Ordering::Relaxed)?,
            source: u32_at(field(offset_of!(IrqRecord, source)))?,
            _pad: u32_at(field(offset_of!(IrqRecord, _pad)))?,
            reserved: u64_at(field(offset_of!(IrqRecord, reserved)), Ordering::Relaxed)?,
        };
        // The seqlock reader's fence: if a field load above saw a store of the kernel's
        // next write of this slot, the kernel's earlier store of `seq` as 0 (ordered
        // before it by `smp_wmb()`) is visible to the load below, which then does not
        // give `seq`.
        fence(Ordering::Acquire);
        let after = u64_at(field(offset_of!(IrqRecord, seq)), Ordering::Relaxed)?;
        if after != seq {
            return Err(if after > seq {
                Miss::Overwritten
            } else {
                Miss::Torn
            });
        }
        Ok(record)
    }
}

/// Finds the kernel's record of the event after which the UIO count read `count`.
///
/// A record not visible yet ([`Miss::NotWritten`], [`Miss::Torn`]) is looked for again up
/// to [`RETRIES`] times, with a [`spin_loop`] hint in between.
pub fn find_record<M: RingMemory + ?Sized>(mem: &M, count: u32) -> Result<IrqRecord, Miss> {
    let ring = Ring::open(mem)?;
    let mut retries = 0;
    loop {
        match ring.read(count) {
            Err(Miss::NotWritten | Miss::Torn) if retries < RETRIES => {
                retries += 1;
                spin_loop();
            }
            found => return found,
        }
    }
}

/// Interrupt-to-wake latency: `wake_ns` (CLOCK_MONOTONIC, taken when the UIO read
/// returned) minus the record's `ktime_ns`; `None` when the record is missing or the
/// clocks disagree (a wake before the event).
pub fn irq_to_wake_ns<M: RingMemory + ?Sized>(mem: &M, count: u32, wake_ns: u64) -> Option<u64> {
    match find_record(mem, count) {
        Ok(rec) => wake_ns.checked_sub(rec.ktime_ns),
        Err(miss) => {
            tracing::debug!("no ring record for count {count}: {miss:?}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::ring::builder::RingBuilder;
    use std::cell::Cell;
    use std::fs;

    use kmemlab_uapi::{SOURCE_IRQ, SOURCE_TRIGGER};

    use super::*;
    use crate::uio::{Uio, UioInfo};

    fn ring_with(events: std::ops::RangeInclusive<u64>) -> RingBuilder {
        let mut r = RingBuilder::standard();
        for seq in events {
            r.push(seq, 1_000 * seq, SOURCE_IRQ);
        }
        r
    }

    #[test]
    fn finds_the_newest_and_older_records() {
        let r = ring_with(1..=5);
        let rec = find_record(r.bytes(), 5).unwrap();
        assert_eq!((rec.seq, rec.ktime_ns, rec.source), (5, 5_000, SOURCE_IRQ));
        assert_eq!(find_record(r.bytes(), 1).unwrap().ktime_ns, 1_000);
        assert_eq!(irq_to_wake_ns(r.bytes(), 3, 3_250), Some(250));
        // A wake before the event: clocks disagree, no figure.
        assert_eq!(irq_to_wake_ns(r.bytes(), 3, 2_000), None);
    }

    #[test]
    fn not_written_yet() {
        let r = RingBuilder::standard();
        assert_eq!(find_record(r.bytes(), 1), Err(Miss::NotWritten));
        assert_eq!(find_record(r.bytes(), 0), Err(Miss::NotWritten));
        let r = ring_with(1..=3);
        // Count 4 is ahead of head 3: low bits say "far back", which is older than 1.
        assert_eq!(find_record(r.bytes(), 4), Err(Miss::NotWritten));
    }

    #[test]
    fn wraps_around_the_slots_and_detects_overwrites() {
        let n = u64::from(RING_SLOTS);
        let r = ring_with(1..=n + 10);
        // Slot of seq 5 now holds seq n + 5.
        assert_eq!(find_record(r.bytes(), 5), Err(Miss::Overwritten));
        assert_eq!(find_record(r.bytes(), 10), Err(Miss::Overwritten));
        assert_eq!(find_record(r.bytes(), 11).unwrap().seq, 11);
        assert_eq!(
            find_record(r.bytes(), (n + 10) as u32).unwrap().ktime_ns,
            1_000 * (n + 10)
        );
        assert_eq!(
            r.slot_offset(n + 1),
            r.slot_offset(1),
            "seq n + 1 reuses slot 0"
        );
    }

    #[test]
    fn a_slot_being_written_is_torn() {
        let mut r = ring_with(1..=3);
        let at = r.slot_offset(3);
        r.set_slot_seq(at, 0);
        assert_eq!(find_record(r.bytes(), 3), Err(Miss::Torn));
        assert_eq!(irq_to_wake_ns(r.bytes(), 3, 10_000), None);
        // A slot whose seq is newer than head says (the header lags): overwritten.
        r.set_slot_seq(at, 3 + u64::from(RING_SLOTS));
        assert_eq!(find_record(r.bytes(), 3), Err(Miss::Overwritten));
    }

    #[test]
    fn counts_wrap_at_32_bits() {
        let mut r = RingBuilder::standard();
        let head = (1u64 << 32) + 2;
        for seq in head - 5..=head {
            r.push(seq, seq, SOURCE_TRIGGER);
        }
        assert_eq!(find_record(r.bytes(), 2).unwrap().seq, head);
        assert_eq!(find_record(r.bytes(), u32::MAX).unwrap().seq, head - 3);
        assert_eq!(find_record(r.bytes(), 0).unwrap().seq, head - 2);
    }

    #[test]
    fn bad_headers() {
        for (offset, value) in [(0, 0x1234), (4, 2), (8, 0), (12, 16), (8, 1000)] {
            let mut r = ring_with(1..=2);
            r.set_header_u32(offset, value);
            assert_eq!(
                find_record(r.bytes(), 1),
                Err(Miss::BadHeader),
                "header u32 at {offset} = {value}"
            );
        }
        // Too short for the header, or for the slots it claims.
        assert_eq!(find_record(&[0u8; 16][..], 1), Err(Miss::BadHeader));
        let r = RingBuilder::new(1024, RING_SLOTS);
        assert_eq!(find_record(r.bytes(), 1), Err(Miss::BadHeader));
        // A smaller ring is fine if it fits.
        let mut r = RingBuilder::new(1024, 4);
        r.push(1, 7, SOURCE_IRQ);
        assert_eq!(find_record(r.bytes(), 1).unwrap().ktime_ns, 7);
    }

    /// Memory that the "kernel" rewrites after a number of loads: simulates a record
    /// being written or overwritten while the reader copies it. Counts the loads.
    struct Racy {
        before: Vec<u8>,
        after: Vec<u8>,
        loads_before_change: usize,
        loads: Cell<usize>,
    }

    impl Racy {
        fn new(before: &[u8], after: &[u8], loads_before_change: usize) -> Self {
            Self {
                before: before.to_vec(),
                after: after.to_vec(),
                loads_before_change,
                loads: Cell::new(0),
            }
        }

        fn current(&self) -> &[u8] {
            let n = self.loads.get();
            self.loads.set(n + 1);
            if n < self.loads_before_change {
                &self.before
            } else {
                &self.after
            }
        }
    }

    impl RingMemory for Racy {
        fn len(&self) -> usize {
            self.before.len()
        }

        fn load_u64(&self, offset: usize, order: Ordering) -> Option<u64> {
            self.current().load_u64(offset, order)
        }

        fn load_u32(&self, offset: usize, order: Ordering) -> Option<u32> {
            self.current().load_u32(offset, order)
        }
    }

    /// Loads of one lookup: 4 of the header, then per attempt `head`, `seq`, the four
    /// other fields and `seq` again.
    const HEADER_LOADS: usize = 4;
    const ATTEMPT_LOADS: usize = 7;

    #[test]
    fn a_record_rewritten_during_the_copy_is_rejected() {
        let n = u64::from(RING_SLOTS);
        let before = ring_with(1..=3).into_bytes();
        // The kernel starts rewriting slot of seq 3 for seq n + 3 (seq 0 first), or has
        // finished doing so.
        let mut writing = ring_with(1..=3);
        let at = writing.slot_offset(3);
        writing.set_slot_seq(at, 0);
        let rewritten = ring_with(1..=n + 3).into_bytes();

        // A change after the header and `head`, before the second load of `seq`.
        for loads in HEADER_LOADS + 1..HEADER_LOADS + ATTEMPT_LOADS {
            for (after, want) in [
                (writing.bytes(), Miss::Torn),
                (&rewritten[..], Miss::Overwritten),
            ] {
                let racy = Racy::new(&before, after, loads);
                assert_eq!(
                    find_record(&racy, 3),
                    Err(want),
                    "change after {loads} loads"
                );
            }
        }
        // No change during the copy: found, in one attempt.
        let calm = Racy::new(&before, &rewritten, HEADER_LOADS + ATTEMPT_LOADS);
        assert_eq!(find_record(&calm, 3).unwrap().seq, 3);
        assert_eq!(calm.loads.get(), HEADER_LOADS + ATTEMPT_LOADS);
    }

    #[test]
    fn a_record_not_visible_yet_is_retried() {
        let done = ring_with(1..=3);
        // `head` still at 2 when the count read 3.
        let lagging = ring_with(1..=2);
        // The slot of seq 3 being written (seq 0), or its seq not yet stored.
        let mut writing = ring_with(1..=3);
        writing.set_slot_seq(writing.slot_offset(3), 0);
        let mut stale = ring_with(1..=3);
        stale.set_slot_seq(stale.slot_offset(3), 2);
        // Loads of a failed attempt: `head` only when it lags, `head` and `seq` else.
        for (early, per_attempt) in [
            (lagging.bytes(), 1),
            (writing.bytes(), 2),
            (stale.bytes(), 2),
        ] {
            // Visible after the first failed attempt, or at the last one allowed.
            for failed in [1, 2, RETRIES as usize] {
                let racy = Racy::new(early, done.bytes(), HEADER_LOADS + failed * per_attempt);
                let rec = find_record(&racy, 3).unwrap();
                assert_eq!((rec.seq, rec.ktime_ns), (3, 3_000));
            }
            // Visible one attempt too late, or never: given up after RETRIES retries.
            let late = HEADER_LOADS + (RETRIES as usize + 1) * per_attempt;
            for change in [late, usize::MAX] {
                let racy = Racy::new(early, done.bytes(), change);
                let miss = find_record(&racy, 3).unwrap_err();
                assert!(matches!(miss, Miss::NotWritten | Miss::Torn), "{miss:?}");
                assert_eq!(racy.loads.get(), late);
            }
        }
        // An overwritten record is not retried.
        let n = u64::from(RING_SLOTS);
        let over = Racy::new(ring_with(1..=n + 3).bytes(), done.bytes(), usize::MAX);
        assert_eq!(find_record(&over, 3), Err(Miss::Overwritten));
        assert!(over.loads.get() <= HEADER_LOADS + ATTEMPT_LOADS);
    }

    #[test]
    fn reads_the_mapped_heap_with_atomic_loads() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("uio0");
        fs::create_dir_all(dir.join("maps/map0")).unwrap();
        fs::write(dir.join("name"), "kmemlab\n").unwrap();
        fs::write(dir.join("event"), "0\n").unwrap();
        fs::write(dir.join("maps/map0/size"), "0x2000\n").unwrap();
        let mut heap = ring_with(1..=4).into_bytes();
        heap.resize(0x2000, 0);
        let dev = tmp.path().join("uio0-dev");
        fs::write(&dev, &heap).unwrap();
        let uio = Uio::open(&UioInfo {
            index: 0,
            name: "kmemlab".into(),
            sysfs_dir: dir,
            dev_path: dev,
        })
        .unwrap();
        let map = uio.map(0).unwrap();
        assert_eq!(read_header(&map), read_header(&heap));
        assert_eq!(read_header(&map).unwrap().head, 4);
        let rec = find_record(&map, 4).unwrap();
        assert_eq!((rec.seq, rec.ktime_ns, rec.source), (4, 4_000, SOURCE_IRQ));
        assert_eq!(irq_to_wake_ns(&map, 2, 2_500), Some(500));
        // Bounds and alignment are checked.
        let relaxed = Ordering::Relaxed;
        assert_eq!(map.load_u64(0x2000 - 8, relaxed), Some(0));
        assert_eq!(map.load_u64(0x2000 - 4, relaxed), None);
        assert_eq!(map.load_u64(0x2000, relaxed), None);
        assert_eq!(map.load_u64(usize::MAX - 3, relaxed), None);
        assert_eq!(map.load_u64(4, relaxed), None);
        assert_eq!(map.load_u32(0, relaxed), Some(RING_MAGIC));
        assert_eq!(map.load_u32(0x2000 - 4, relaxed), Some(0));
        assert_eq!(map.load_u32(0x2000 - 2, relaxed), None);
        assert_eq!(map.load_u32(2, relaxed), None);
        // A read-only mapping is not loaded from (atomics need writable memory).
        let ro = uio.map_read_only(0).unwrap();
        assert_eq!(ro.load_u32(0, relaxed), None);
        assert_eq!(find_record(&ro, 4), Err(Miss::BadHeader));
    }
}
