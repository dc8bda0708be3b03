//! [`RingBuilder`]: ring memory laid out as the kernel does, for tests (the `test-util`
//! feature).

use kmemlab_uapi::{RING_MAGIC, RING_RECORDS_OFFSET, RING_SLOTS, RING_VERSION};

use super::{HEAD_OFFSET, RECORD_SIZE};

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
