//! The interrupt ring in the first page of the module's DMA-coherent heap (UIO map 0):
//! finding the kernel's record of an event, to measure interrupt-to-wake latency.
//!
//! The kernel writes a record's `seq` as 0, then its fields, then the new `seq`, and
//! finally the header's `head` (release). A reader copies the record between two reads
//! of `seq` and keeps the copy only if both equal the sequence number it wants: the
//! seqlock pattern, with the slot's `seq` as the lock.

use std::sync::atomic::{fence, Ordering};

use kmemlab_uapi::{
    IrqRecord, RingHeader, RING_MAGIC, RING_RECORDS_OFFSET, RING_SLOTS, RING_VERSION,
};

use crate::sys;
use crate::uio::UioMap;

/// Offset of `RingHeader::head`.
const HEAD_OFFSET: usize = std::mem::offset_of!(RingHeader, head);
/// Size of an [`IrqRecord`].
const RECORD_SIZE: usize = std::mem::size_of::<IrqRecord>();

/// Memory that holds the ring: the mapped heap, or a byte buffer in tests.
pub trait RingMemory {
    /// Length in bytes.
    fn len(&self) -> usize;

    /// Whether there are no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `u64` at `offset`, read once; `None` when out of bounds or misaligned.
    fn read_u64(&self, offset: usize) -> Option<u64>;

    /// A copy of the record at `offset`; `None` when out of bounds or misaligned.
    fn read_record(&self, offset: usize) -> Option<IrqRecord>;

    /// A copy of the header at offset 0.
    fn read_header(&self) -> Option<RingHeader>;
}

impl RingMemory for UioMap {
    fn len(&self) -> usize {
        UioMap::len(self)
    }

    fn read_u64(&self, offset: usize) -> Option<u64> {
        sys::read_volatile_u64(self, offset)
    }

    fn read_record(&self, offset: usize) -> Option<IrqRecord> {
        sys::read_volatile_record(self, offset)
    }

    fn read_header(&self) -> Option<RingHeader> {
        sys::read_volatile_header(self)
    }
}

/// Native-endian integers at `offset` of a plain byte buffer (tests, saved heaps).
impl RingMemory for [u8] {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }

    fn read_u64(&self, offset: usize) -> Option<u64> {
        if offset % 8 != 0 {
            return None;
        }
        let bytes = self.get(offset..offset.checked_add(8)?)?;
        Some(u64::from_ne_bytes(bytes.try_into().ok()?))
    }

    fn read_record(&self, offset: usize) -> Option<IrqRecord> {
        let u32_at = |o: usize| -> Option<u32> {
            let b = self.get(o..o + 4)?;
            Some(u32::from_ne_bytes(b.try_into().ok()?))
        };
        Some(IrqRecord {
            seq: self.read_u64(offset)?,
            ktime_ns: self.read_u64(offset.checked_add(8)?)?,
            source: u32_at(offset + 16)?,
            _pad: u32_at(offset + 20)?,
            reserved: self.read_u64(offset + 24)?,
        })
    }

    fn read_header(&self) -> Option<RingHeader> {
        let u32_at = |o: usize| -> Option<u32> {
            let b = self.get(o..o + 4)?;
            Some(u32::from_ne_bytes(b.try_into().ok()?))
        };
        let mut reserved = [0u64; 5];
        for (i, r) in reserved.iter_mut().enumerate() {
            *r = self.read_u64(24 + 8 * i)?;
        }
        Some(RingHeader {
            magic: u32_at(0)?,
            version: u32_at(4)?,
            slots: u32_at(8)?,
            record_size: u32_at(12)?,
            head: self.read_u64(HEAD_OFFSET)?,
            reserved,
        })
    }
}

impl RingMemory for Vec<u8> {
    fn len(&self) -> usize {
        self.as_slice().len()
    }

    fn read_u64(&self, offset: usize) -> Option<u64> {
        self.as_slice().read_u64(offset)
    }

    fn read_record(&self, offset: usize) -> Option<IrqRecord> {
        self.as_slice().read_record(offset)
    }

    fn read_header(&self) -> Option<RingHeader> {
        self.as_slice().read_header()
    }
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

/// Finds the kernel's record of the event after which the UIO count read `count`.
///
/// The UIO count is a 32-bit counter and the ring's sequence numbers are 64-bit: the
/// sequence number wanted is the newest one (`head`) or an older one with the same low
/// 32 bits.
pub fn find_record<M: RingMemory + ?Sized>(mem: &M, count: u32) -> Result<IrqRecord, Miss> {
    let header = mem.read_header().ok_or(Miss::BadHeader)?;
    let slots = header.slots as usize;
    if header.magic != RING_MAGIC
        || header.version != RING_VERSION
        || slots == 0
        || slots > RING_SLOTS as usize * 64
        || header.record_size as usize != RECORD_SIZE
        || RING_RECORDS_OFFSET + slots * RECORD_SIZE > mem.len()
    {
        return Err(Miss::BadHeader);
    }
    let head = mem.read_u64(HEAD_OFFSET).ok_or(Miss::BadHeader)?;
    // Pairs with the kernel's `smp_store_release(&head)`: the records up to `head` are
    // visible once `head` is.
    fence(Ordering::Acquire);

    let back = u64::from((head as u32).wrapping_sub(count));
    let seq = head.checked_sub(back).filter(|s| *s > 0);
    let Some(seq) = seq else {
        return Err(Miss::NotWritten);
    };
    if back >= slots as u64 {
        return Err(Miss::Overwritten);
    }
    let offset = RING_RECORDS_OFFSET + ((seq - 1) % slots as u64) as usize * RECORD_SIZE;

    let before = mem.read_u64(offset).ok_or(Miss::BadHeader)?;
    if before != seq {
        return Err(if before == 0 || before < seq {
            Miss::Torn
        } else {
            Miss::Overwritten
        });
    }
    fence(Ordering::Acquire);
    let record = mem.read_record(offset).ok_or(Miss::BadHeader)?;
    // Pairs with the kernel's `smp_wmb()` before it writes a new `seq`: if `seq` is
    // unchanged after the copy, the copy is not torn.
    fence(Ordering::Acquire);
    let after = mem.read_u64(offset).ok_or(Miss::BadHeader)?;
    if record.seq != seq || after != seq {
        return Err(if after > seq {
            Miss::Overwritten
        } else {
            Miss::Torn
        });
    }
    Ok(record)
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

/// Builds ring memory in a byte buffer, as the kernel lays it out (tests and tools).
#[derive(Clone, Debug)]
pub struct RingBuilder {
    bytes: Vec<u8>,
    slots: u32,
}

impl RingBuilder {
    /// An empty ring of `slots` records (header written, head 0) in `len` bytes.
    pub fn new(len: usize, slots: u32) -> Self {
        let mut b = Self {
            bytes: vec![0; len],
            slots,
        };
        b.put_u32(0, RING_MAGIC);
        b.put_u32(4, RING_VERSION);
        b.put_u32(8, slots);
        b.put_u32(12, RECORD_SIZE as u32);
        b
    }

    /// The kernel's ring of [`RING_SLOTS`] records in one 4 KiB page.
    pub fn standard() -> Self {
        Self::new(4096, RING_SLOTS)
    }

    fn put_u32(&mut self, at: usize, v: u32) {
        self.bytes[at..at + 4].copy_from_slice(&v.to_ne_bytes());
    }

    fn put_u64(&mut self, at: usize, v: u64) {
        self.bytes[at..at + 8].copy_from_slice(&v.to_ne_bytes());
    }

    /// Offset of the slot that holds sequence number `seq`.
    pub fn slot_offset(&self, seq: u64) -> usize {
        RING_RECORDS_OFFSET + ((seq - 1) % u64::from(self.slots)) as usize * RECORD_SIZE
    }

    /// Writes the record for event `seq` at `ktime_ns` and moves `head` to it.
    pub fn push(&mut self, seq: u64, ktime_ns: u64, source: u32) -> &mut Self {
        let at = self.slot_offset(seq);
        self.put_u64(at, seq);
        self.put_u64(at + 8, ktime_ns);
        self.put_u32(at + 16, source);
        self.put_u64(HEAD_OFFSET, seq);
        self
    }

    /// Overwrites the `seq` field of the slot at `offset` (a torn or reused slot).
    pub fn set_slot_seq(&mut self, offset: usize, seq: u64) -> &mut Self {
        self.put_u64(offset, seq);
        self
    }

    /// Overwrites a `u32` of the header (corruption tests).
    pub fn set_header_u32(&mut self, offset: usize, v: u32) -> &mut Self {
        self.put_u32(offset, v);
        self
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Takes the bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
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

    /// Memory that the "kernel" rewrites after a number of reads: simulates a record
    /// being overwritten while the reader copies it.
    struct Racy {
        before: Vec<u8>,
        after: Vec<u8>,
        reads_before_change: Cell<usize>,
    }

    impl Racy {
        fn current(&self) -> &[u8] {
            if self.reads_before_change.get() == 0 {
                &self.after
            } else {
                &self.before
            }
        }

        fn tick(&self) {
            let n = self.reads_before_change.get();
            self.reads_before_change.set(n.saturating_sub(1));
        }
    }

    impl RingMemory for Racy {
        fn len(&self) -> usize {
            self.before.len()
        }

        fn read_u64(&self, offset: usize) -> Option<u64> {
            let v = self.current().read_u64(offset);
            self.tick();
            v
        }

        fn read_record(&self, offset: usize) -> Option<IrqRecord> {
            let v = self.current().read_record(offset);
            self.tick();
            v
        }

        fn read_header(&self) -> Option<RingHeader> {
            let v = self.current().read_header();
            self.tick();
            v
        }
    }

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

        // Reads: header, head, seq before, record, seq after.
        for (after, reads, want) in [
            (writing.bytes().to_vec(), 3, Miss::Torn),
            (writing.bytes().to_vec(), 4, Miss::Torn),
            (rewritten.clone(), 3, Miss::Overwritten),
            (rewritten.clone(), 4, Miss::Overwritten),
        ] {
            let racy = Racy {
                before: before.clone(),
                after,
                reads_before_change: Cell::new(reads),
            };
            assert_eq!(
                find_record(&racy, 3),
                Err(want),
                "change after {reads} reads"
            );
        }
        // No change during the copy: found.
        let calm = Racy {
            before: before.clone(),
            after: rewritten,
            reads_before_change: Cell::new(5),
        };
        assert_eq!(find_record(&calm, 3).unwrap().seq, 3);
    }

    #[test]
    fn reads_the_mapped_heap_with_volatile_copies() {
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
        let map = uio.map_read_only(0).unwrap();
        assert_eq!(map.read_header(), heap.read_header());
        assert_eq!(find_record(&map, 4).unwrap().ktime_ns, 4_000);
        assert_eq!(irq_to_wake_ns(&map, 2, 2_500), Some(500));
        // Bounds and alignment are checked.
        assert_eq!(map.read_u64(0x2000 - 8).map(|_| ()), Some(()));
        assert_eq!(map.read_u64(0x2000 - 4), None);
        assert_eq!(map.read_u64(0x2000), None);
        assert_eq!(map.read_u64(usize::MAX - 3), None);
        assert_eq!(map.read_u64(4), None);
        assert_eq!(map.read_record(0x2000 - 16), None);
        assert_eq!(map.read_record(12), None);
    }
}
