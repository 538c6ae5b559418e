//! WAL bytes: the segment header and the record. Little-endian; `docs/FORMAT.md` draws both.
//!
//! Pure functions, no I/O, callable from any thread. Every record carries its payload length,
//! kind, LSN, the generation of the segment it was written into, and a crc32c over everything
//! after the checksum field, so a torn write, a stale record and a bit flip are all detectable.

use crate::ingress::WriteOp;

/// Version of the WAL format.
/// 1: first format (segment header v1, record header v1, WRITE).
/// 2: `Sync` groups start with a GROUP record carrying the LSN that was durable when the group
///    was submitted, so replay can tell an unacknowledged hole (two writes in flight) from damage.
pub const WAL_FORMAT_VERSION: u32 = 2;

/// Magic at byte 0 of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"LDB-WAL\0";

/// The segment header occupies the whole first sector; records start here.
pub const SEGMENT_HEADER_BYTES: usize = 4096;

/// Bytes of the segment header that carry data (the rest of the sector is zero).
const SEGMENT_HEADER_USED: usize = 64;

/// Fixed record header: crc u32, len u32, lsn u64, generation u32, kind u8, 3 reserved.
pub const RECORD_HEADER_BYTES: usize = 24;

const _: () = assert!(RECORD_HEADER_BYTES == 4 + 4 + 8 + 4 + 1 + 3);
const _: () = assert!(SEGMENT_HEADER_USED <= SEGMENT_HEADER_BYTES);

/// Where the next group starts when the previous one ends at `end`: the next sector boundary,
/// moved one sector further when the zero gap before it would be shorter than a record header.
/// Replay recognises padding by a full header of zeros, so every gap is either empty or at
/// least [`RECORD_HEADER_BYTES`] long.
pub fn next_group_offset(end: usize) -> usize {
    let boundary = crate::io::aligned::round_up(end);
    if boundary > end && boundary - end < RECORD_HEADER_BYTES {
        boundary + crate::io::aligned::SECTOR_BYTES
    } else {
        boundary
    }
}

/// Record kinds.
pub const KIND_WRITE: u8 = 1;
/// A group header: it carries the LSN of the group's first WRITE record (it takes no LSN of
/// its own) and, as payload, the highest LSN durable when the group was submitted.
pub const KIND_GROUP: u8 = 2;
/// Bytes of a GROUP record.
pub const GROUP_RECORD_BYTES: usize = RECORD_HEADER_BYTES + 8;

const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
/// Per-op overhead in a WRITE payload: tag u8, key_len u32, value_len u32.
pub const OP_HEADER_BYTES: usize = 9;

/// The decoded segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Shard that owns the segment.
    pub shard_id: u32,
    /// Position of this segment in the shard's sequence of segments; also its generation.
    pub sequence: u64,
    /// LSN the first record of this segment carries.
    pub first_lsn: u64,
    /// File size the segment was preallocated to.
    pub segment_bytes: u64,
}

impl SegmentHeader {
    /// The low 32 bits of the sequence, stamped into every record of the segment.
    pub fn generation(&self) -> u32 {
        self.sequence as u32
    }

    /// Encodes into a full sector.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut b = [0u8; SEGMENT_HEADER_BYTES];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..12].copy_from_slice(&WAL_FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.shard_id.to_le_bytes());
        b[16..24].copy_from_slice(&self.sequence.to_le_bytes());
        b[24..32].copy_from_slice(&self.first_lsn.to_le_bytes());
        b[32..40].copy_from_slice(&self.segment_bytes.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and verifies a header. Errors say what is wrong, for `Error::Corruption`.
    pub fn decode(b: &[u8]) -> Result<Self, HeaderError> {
        if b.len() < SEGMENT_HEADER_USED {
            return Err(HeaderError::Short);
        }
        if b[0..8] != SEGMENT_MAGIC {
            return Err(HeaderError::Magic);
        }
        if read_u32(b, 60) != crc32c::crc32c(&b[0..60]) {
            return Err(HeaderError::Checksum);
        }
        let version = read_u32(b, 8);
        if version != WAL_FORMAT_VERSION {
            return Err(HeaderError::Version(version));
        }
        Ok(SegmentHeader {
            shard_id: read_u32(b, 12),
            sequence: read_u64(b, 16),
            first_lsn: read_u64(b, 24),
            segment_bytes: read_u64(b, 32),
        })
    }
}

/// Why a segment header was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer bytes than a header.
    Short,
    /// The magic is not `LDB-WAL\0`.
    Magic,
    /// The checksum does not match.
    Checksum,
    /// An unknown format version.
    Version(u32),
}

/// Reads a little-endian u32 at `at`; the caller has checked the bounds.
fn read_u32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

/// Reads a little-endian u64 at `at`; the caller has checked the bounds.
fn read_u64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Bytes a WRITE record for `ops` occupies, header included.
pub fn write_record_bytes(ops: &[WriteOp]) -> usize {
    RECORD_HEADER_BYTES + write_payload_bytes(ops)
}

/// Bytes of a WRITE payload for `ops`.
pub fn write_payload_bytes(ops: &[WriteOp]) -> usize {
    4 + ops
        .iter()
        .map(|op| OP_HEADER_BYTES + op.key().len() + op.value().map_or(0, <[u8]>::len))
        .sum::<usize>()
}

/// Appends one WRITE record (header + payload) for `ops` to `out`.
pub fn encode_write_record(out: &mut Vec<u8>, lsn: u64, generation: u32, ops: &[WriteOp]) {
    let start = out.len();
    let payload_len = write_payload_bytes(ops);
    out.reserve(RECORD_HEADER_BYTES + payload_len);
    out.extend_from_slice(&[0u8; 4]); // crc, filled below
    out.extend_from_slice(&(payload_len as u32).to_le_bytes());
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend_from_slice(&[KIND_WRITE, 0, 0, 0]);
    out.extend_from_slice(&(ops.len() as u32).to_le_bytes());
    for op in ops {
        let (tag, value) = match op {
            WriteOp::Put { value, .. } => (OP_PUT, &value[..]),
            WriteOp::Delete { .. } => (OP_DELETE, &[][..]),
        };
        out.push(tag);
        out.extend_from_slice(&(op.key().len() as u32).to_le_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(op.key());
        out.extend_from_slice(value);
    }
    let crc = crc32c::crc32c(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(out.len() - start, RECORD_HEADER_BYTES + payload_len);
}

/// Writes a GROUP record into `out[..GROUP_RECORD_BYTES]`: the group whose first WRITE record
/// has `lsn`, submitted when every LSN up to `durable_before` was durable.
pub fn encode_group_record(out: &mut [u8], lsn: u64, generation: u32, durable_before: u64) {
    let b = &mut out[..GROUP_RECORD_BYTES];
    b[4..8].copy_from_slice(&8u32.to_le_bytes());
    b[8..16].copy_from_slice(&lsn.to_le_bytes());
    b[16..20].copy_from_slice(&generation.to_le_bytes());
    b[20..24].copy_from_slice(&[KIND_GROUP, 0, 0, 0]);
    b[24..32].copy_from_slice(&durable_before.to_le_bytes());
    let crc = crc32c::crc32c(&b[4..]);
    b[0..4].copy_from_slice(&crc.to_le_bytes());
}

/// The `durable_before` LSN of a GROUP record's payload.
pub fn group_durable_before(payload: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = payload.get(..8)?.try_into().ok()?;
    (payload.len() == 8).then(|| u64::from_le_bytes(bytes))
}

/// A record header whose checksum matched, with its payload.
#[derive(Debug)]
pub struct RecordView<'a> {
    /// The record's LSN.
    pub lsn: u64,
    /// Generation of the segment it was written into.
    pub generation: u32,
    /// Record kind.
    pub kind: u8,
    /// The payload bytes.
    pub payload: &'a [u8],
}

impl RecordView<'_> {
    /// Total bytes the record occupies.
    pub fn size(&self) -> usize {
        RECORD_HEADER_BYTES + self.payload.len()
    }
}

/// What lies at a position in a segment.
#[derive(Debug)]
pub enum Parsed<'a> {
    /// A complete record whose checksum matches.
    Record(RecordView<'a>),
    /// The header bytes are all zero: padding, or the unwritten rest of the segment.
    Zero,
    /// Anything else: a torn or corrupt record.
    Garbage,
}

/// Parses the record that starts at `at` in `seg` (the whole segment image).
pub fn parse_record(seg: &[u8], at: usize) -> Parsed<'_> {
    let Some(header) = seg.get(at..at + RECORD_HEADER_BYTES) else {
        // Too close to the end for a header: zero if the rest is zero.
        return if seg.get(at..).is_some_and(|r| r.iter().all(|&b| b == 0)) {
            Parsed::Zero
        } else {
            Parsed::Garbage
        };
    };
    if header.iter().all(|&b| b == 0) {
        return Parsed::Zero;
    }
    let len = read_u32(header, 4) as usize;
    let Some(body) = seg.get(at + 4..at + RECORD_HEADER_BYTES + len) else {
        return Parsed::Garbage;
    };
    if read_u32(header, 0) != crc32c::crc32c(body) {
        return Parsed::Garbage;
    }
    Parsed::Record(RecordView {
        lsn: read_u64(header, 8),
        generation: read_u32(header, 16),
        kind: header[20],
        payload: &seg[at + RECORD_HEADER_BYTES..at + RECORD_HEADER_BYTES + len],
    })
}

/// Decodes a WRITE payload into its ops. `Err` names what is malformed.
pub fn decode_write_payload(p: &[u8]) -> Result<Vec<WriteOp>, &'static str> {
    let count =
        p.get(0..4).map(|_| read_u32(p, 0) as usize).ok_or("payload shorter than its count")?;
    let mut ops = Vec::with_capacity(count.min(p.len() / OP_HEADER_BYTES));
    let mut at = 4;
    for _ in 0..count {
        let head = p.get(at..at + OP_HEADER_BYTES).ok_or("op header past the payload")?;
        let tag = head[0];
        let key_len = read_u32(head, 1) as usize;
        let value_len = read_u32(head, 5) as usize;
        at += OP_HEADER_BYTES;
        let key = p.get(at..at + key_len).ok_or("key past the payload")?.to_vec();
        at += key_len;
        let value = p.get(at..at + value_len).ok_or("value past the payload")?;
        at += value_len;
        ops.push(match tag {
            OP_PUT => WriteOp::Put { key, value: value.into() },
            OP_DELETE if value_len == 0 => WriteOp::Delete { key },
            _ => return Err("unknown op tag"),
        });
    }
    if at != p.len() {
        return Err("trailing bytes after the last op");
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops() -> Vec<WriteOp> {
        vec![
            WriteOp::Put { key: b"k1".to_vec(), value: b"v1"[..].into() },
            WriteOp::Delete { key: b"k2".to_vec() },
        ]
    }

    #[test]
    fn record_round_trip() {
        let mut seg = vec![0u8; 64];
        let mut rec = Vec::new();
        encode_write_record(&mut rec, 7, 3, &ops());
        assert_eq!(rec.len(), write_record_bytes(&ops()));
        seg.extend_from_slice(&rec);
        seg.extend_from_slice(&[0u8; 100]);
        let Parsed::Record(r) = parse_record(&seg, 64) else { panic!("no record") };
        assert_eq!((r.lsn, r.generation, r.kind), (7, 3, KIND_WRITE));
        assert_eq!(decode_write_payload(r.payload).unwrap(), ops());
        assert!(matches!(parse_record(&seg, 64 + rec.len()), Parsed::Zero));
    }

    #[test]
    fn group_record_round_trip() {
        let mut b = vec![0u8; 64];
        encode_group_record(&mut b, 9, 4, 7);
        let Parsed::Record(r) = parse_record(&b, 0) else { panic!("no record") };
        assert_eq!((r.lsn, r.generation, r.kind, r.size()), (9, 4, KIND_GROUP, GROUP_RECORD_BYTES));
        assert_eq!(group_durable_before(r.payload), Some(7));
    }

    #[test]
    fn flipped_bit_is_garbage() {
        let mut rec = Vec::new();
        encode_write_record(&mut rec, 1, 1, &ops());
        for i in 0..rec.len() {
            let mut bad = rec.clone();
            bad[i] ^= 0x10;
            assert!(matches!(parse_record(&bad, 0), Parsed::Garbage), "byte {i}");
        }
    }

    #[test]
    fn torn_record_is_garbage() {
        let mut rec = Vec::new();
        encode_write_record(&mut rec, 1, 1, &ops());
        rec.truncate(rec.len() - 3);
        assert!(matches!(parse_record(&rec, 0), Parsed::Garbage));
    }

    #[test]
    fn header_round_trip_and_rejects() {
        let h = SegmentHeader { shard_id: 2, sequence: 9, first_lsn: 100, segment_bytes: 1 << 20 };
        let b = h.encode();
        assert_eq!(SegmentHeader::decode(&b).unwrap(), h);
        let mut bad = b;
        bad[20] ^= 1;
        assert_eq!(SegmentHeader::decode(&bad), Err(HeaderError::Checksum));
        assert_eq!(SegmentHeader::decode(&[0u8; 4096]), Err(HeaderError::Magic));
    }

    #[test]
    fn group_gaps_are_empty_or_header_sized() {
        assert_eq!(next_group_offset(4096), 4096);
        assert_eq!(next_group_offset(4097), 8192);
        assert_eq!(next_group_offset(8192 - 24), 8192);
        assert_eq!(next_group_offset(8192 - 23), 12288);
        for end in 4096..12288 {
            let gap = next_group_offset(end) - end;
            assert!(gap == 0 || gap >= RECORD_HEADER_BYTES, "end {end}");
            assert_eq!(next_group_offset(end) % 4096, 0);
        }
    }

    #[test]
    fn malformed_payloads_are_errors() {
        assert!(decode_write_payload(&[]).is_err());
        assert!(decode_write_payload(&[1, 0, 0, 0]).is_err());
        assert!(decode_write_payload(&[0, 0, 0, 0, 9]).is_err());
    }
}
