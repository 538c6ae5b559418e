//! WAL segment bytes: the segment header and where groups of records start. Little-endian;
//! `docs/FORMAT.md` draws both. The records themselves are in [`super::record`].
//!
//! Pure functions, no I/O, callable from any thread.

use super::record::{read_u32, read_u64, RECORD_HEADER_BYTES};
use crate::version::Lsn;

/// Version of the WAL format.
/// 1: first format (segment header v1, record header v1, WRITE).
/// 2: `Sync` groups start with a GROUP record carrying the LSN that was durable when the group
///    was submitted, so replay can tell an unacknowledged hole (two writes in flight) from damage.
/// 3: the record header carries the MVCC timestamp apart from the LSN (32 bytes); in every mode
///    a group that starts on a fresh sector starts with a GROUP record (its durable claim), an
///    idle shard and a clean close write one on their own; segments are created under a
///    temporary name and renamed into place once complete.
/// 4: the two-phase commit's records (PREPARE, COMMIT, ABORT, DECISION; kinds 3 to 6). A
///    version 3 segment holds none of them, so this build reads it too.
pub const WAL_FORMAT_VERSION: u32 = 4;
/// The oldest segment version this build reads.
pub const WAL_FORMAT_OLDEST_READ: u32 = 3;

/// Magic at byte 0 of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"LDB-WAL\0";

/// The segment header occupies the whole first sector; records start here.
pub const SEGMENT_HEADER_BYTES: usize = 4096;

// Byte offsets of the segment header's fields.
const AT_MAGIC: usize = 0;
const AT_VERSION: usize = 8;
const AT_SHARD: usize = 12;
const AT_SEQUENCE: usize = 16;
const AT_FIRST_LSN: usize = 24;
const AT_SEGMENT_BYTES: usize = 32;
/// The checksum covers every byte before it.
const AT_CRC: usize = 60;
/// Bytes of the segment header that carry data (the rest of the sector is zero).
const SEGMENT_HEADER_USED: usize = AT_CRC + 4;
const _: () =
    assert!(AT_SEGMENT_BYTES + 8 <= AT_CRC && SEGMENT_HEADER_USED <= SEGMENT_HEADER_BYTES);

/// The unit in which the log is never rewritten: every group that follows a durable point
/// starts on a fresh multiple of this many bytes, so bytes that are durable are never written
/// again (a torn rewrite cannot damage them). The disk's physical sector (ADR 0002).
pub const GROUP_ALIGN_BYTES: usize = 4096;

/// Where the next group starts when the previous one ends at `end`: the next aligned boundary,
/// moved one unit further when the zero gap before it would be shorter than a record header.
/// Replay recognises padding by a full header of zeros, so every gap is either empty or at
/// least [`RECORD_HEADER_BYTES`] long.
pub fn next_group_offset(end: usize) -> usize {
    let boundary = end.next_multiple_of(GROUP_ALIGN_BYTES);
    if boundary > end && boundary - end < RECORD_HEADER_BYTES {
        boundary + GROUP_ALIGN_BYTES
    } else {
        boundary
    }
}

/// The decoded segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Shard that owns the segment.
    pub shard_id: u32,
    /// Position of this segment in the shard's sequence of segments; also its generation.
    pub sequence: u64,
    /// LSN the first record of this segment carries.
    pub first_lsn: Lsn,
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
        b[AT_MAGIC..AT_VERSION].copy_from_slice(&SEGMENT_MAGIC);
        b[AT_VERSION..AT_SHARD].copy_from_slice(&WAL_FORMAT_VERSION.to_le_bytes());
        b[AT_SHARD..AT_SEQUENCE].copy_from_slice(&self.shard_id.to_le_bytes());
        b[AT_SEQUENCE..AT_FIRST_LSN].copy_from_slice(&self.sequence.to_le_bytes());
        b[AT_FIRST_LSN..AT_SEGMENT_BYTES].copy_from_slice(&self.first_lsn.get().to_le_bytes());
        b[AT_SEGMENT_BYTES..AT_SEGMENT_BYTES + 8]
            .copy_from_slice(&self.segment_bytes.to_le_bytes());
        let crc = crc32c::crc32c(&b[..AT_CRC]);
        b[AT_CRC..SEGMENT_HEADER_USED].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and verifies a header. Errors say what is wrong, for `Error::Corruption`.
    pub fn decode(b: &[u8]) -> Result<Self, HeaderError> {
        if b.len() < SEGMENT_HEADER_USED {
            return Err(HeaderError::Short);
        }
        if b[AT_MAGIC..AT_VERSION] != SEGMENT_MAGIC {
            return Err(HeaderError::Magic);
        }
        if read_u32(b, AT_CRC) != crc32c::crc32c(&b[..AT_CRC]) {
            return Err(HeaderError::Checksum);
        }
        let version = read_u32(b, AT_VERSION);
        if !(WAL_FORMAT_OLDEST_READ..=WAL_FORMAT_VERSION).contains(&version) {
            return Err(HeaderError::Version(version));
        }
        Ok(SegmentHeader {
            shard_id: read_u32(b, AT_SHARD),
            sequence: read_u64(b, AT_SEQUENCE),
            first_lsn: Lsn::new(read_u64(b, AT_FIRST_LSN)),
            segment_bytes: read_u64(b, AT_SEGMENT_BYTES),
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
    /// A valid header of another format version.
    Version(u32),
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::Short => f.write_str("the file is shorter than a segment header"),
            HeaderError::Magic => f.write_str("the segment header's magic is wrong"),
            HeaderError::Checksum => f.write_str("the segment header fails its checksum"),
            HeaderError::Version(v) => write!(f, "the segment has WAL format version {v}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_rejects() {
        let h = SegmentHeader {
            shard_id: 2,
            sequence: 9,
            first_lsn: Lsn::new(100),
            segment_bytes: 1 << 20,
        };
        let b = h.encode();
        assert_eq!(SegmentHeader::decode(&b).unwrap(), h);
        for i in 0..SEGMENT_HEADER_USED {
            let mut bad = b;
            bad[i] ^= 1;
            assert!(SegmentHeader::decode(&bad).is_err(), "byte {i}");
        }
        assert_eq!(SegmentHeader::decode(&[0u8; 4096]), Err(HeaderError::Magic));
        assert_eq!(SegmentHeader::decode(&b[..10]), Err(HeaderError::Short));
        let mut old = b;
        old[AT_VERSION..AT_SHARD].copy_from_slice(&2u32.to_le_bytes());
        let crc = crc32c::crc32c(&old[..AT_CRC]);
        old[AT_CRC..SEGMENT_HEADER_USED].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(SegmentHeader::decode(&old), Err(HeaderError::Version(2)));
        old[AT_VERSION..AT_SHARD].copy_from_slice(&3u32.to_le_bytes());
        let crc = crc32c::crc32c(&old[..AT_CRC]);
        old[AT_CRC..SEGMENT_HEADER_USED].copy_from_slice(&crc.to_le_bytes());
        assert!(
            SegmentHeader::decode(&old).is_ok(),
            "version 3 holds no record this build misreads"
        );
    }

    #[test]
    fn group_gaps_are_empty_or_header_sized() {
        let a = GROUP_ALIGN_BYTES;
        assert_eq!(next_group_offset(a), a);
        assert_eq!(next_group_offset(a + 1), 2 * a);
        assert_eq!(next_group_offset(2 * a - RECORD_HEADER_BYTES), 2 * a);
        assert_eq!(next_group_offset(2 * a - RECORD_HEADER_BYTES + 1), 3 * a);
        for end in a..3 * a {
            let gap = next_group_offset(end) - end;
            assert!(gap == 0 || gap >= RECORD_HEADER_BYTES, "end {end}");
            assert_eq!(next_group_offset(end) % a, 0);
        }
    }
}
