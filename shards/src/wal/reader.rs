//! WAL replay: reads a shard's segments in order, applies every record, and decides where the
//! log ends, asking `recovery::decide` at every position that is not the next valid record.
//!
//! Shard-local: runs on the shard thread at start-up, before the loop. Replay never skips
//! damage: a bad record followed by valid ones is `Error::Corruption` with the file and offset.

use std::path::{Path, PathBuf};

use super::format::{self, Parsed, SegmentHeader, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use super::recovery::{
    self, Decision, Following, RecordState, SegmentDecision, SegmentPosition, SegmentState,
};
use super::segment;
use crate::error::{Error, Result};
use crate::ingress::WriteOp;
use crate::io::aligned::SECTOR_BYTES;

/// How one segment's records end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentEnd {
    /// Zeros after the last record: appends may continue at `resume_offset`.
    Clean,
    /// A torn, never-acknowledged record after the last valid one.
    TornTail,
}

/// Result of scanning one segment image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentScan {
    /// How the records end.
    pub end: SegmentEnd,
    /// Byte offset just past the last valid record.
    pub valid_end: usize,
    /// The LSN the next record must carry.
    pub next_lsn: u64,
}

/// Where new writes go after replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tail {
    /// No segment exists yet.
    Empty,
    /// Continue in the newest segment at `offset` (a sector boundary past its last record).
    Resume {
        /// The segment file.
        path: PathBuf,
        /// Its header.
        header: SegmentHeader,
        /// Where the next group starts.
        offset: usize,
    },
    /// Start a new segment with this sequence (the newest one ended torn or full).
    Fresh {
        /// Sequence for the new segment.
        sequence: u64,
    },
}

/// Outcome of replaying a shard's WAL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replayed {
    /// The LSN the next write gets.
    pub next_lsn: u64,
    /// Records applied.
    pub records: u64,
    /// Where appends continue.
    pub tail: Tail,
    /// The newest segment replayed, if any (start-up fdatasyncs it: what was replayed may sit
    /// only in the page cache after a process crash).
    pub last_segment: Option<PathBuf>,
}

/// Replays every segment of shard `shard_id` in `dir`, starting at `first_lsn`, calling
/// `apply(lsn, ops)` for each record in order.
pub fn replay(
    dir: &Path,
    shard_id: u32,
    first_lsn: u64,
    mut apply: impl FnMut(u64, Vec<WriteOp>),
) -> Result<Replayed> {
    let segments = segment::list_segments(dir)?;
    let mut next_lsn = first_lsn;
    let mut records = 0;
    let mut tail = Tail::Empty;
    let mut last_segment = None;
    for (i, (sequence, path)) in segments.iter().enumerate() {
        let position =
            if i + 1 == segments.len() { SegmentPosition::Last } else { SegmentPosition::Earlier };
        let image = segment::read_segment(path)?;
        let header = SegmentHeader::decode(&image).ok().filter(|h| h.sequence == *sequence);
        let state = segment_state(header.as_ref(), shard_id, next_lsn);
        match recovery::decide_segment(state, position) {
            SegmentDecision::Corruption => return Err(segment_corruption(path, state, next_lsn)),
            SegmentDecision::Discard => {
                std::fs::remove_file(path)
                    .map_err(|e| Error::io("remove half-created WAL segment", path, e))?;
                tail = Tail::Fresh { sequence: *sequence };
            }
            SegmentDecision::Replay => {
                let Some(header) = header else {
                    return Err(segment_corruption(path, state, next_lsn));
                };
                let scan = scan_segment(&image, &header, next_lsn, path, &mut apply)?;
                records += scan.next_lsn - next_lsn;
                next_lsn = scan.next_lsn;
                tail = tail_after(path, header, &scan, image.len());
                last_segment = Some(path.clone());
            }
        }
    }
    Ok(Replayed { next_lsn, records, tail, last_segment })
}

fn segment_state(header: Option<&SegmentHeader>, shard_id: u32, expected: u64) -> SegmentState {
    match header {
        None => SegmentState::BadHeader,
        Some(h) if h.shard_id != shard_id => SegmentState::Foreign,
        Some(h) if h.first_lsn == expected => SegmentState::Continues,
        Some(h) if h.first_lsn > expected => SegmentState::Gap,
        Some(_) => SegmentState::Overlap,
    }
}

fn segment_corruption(path: &Path, state: SegmentState, expected: u64) -> Error {
    let what = match state {
        SegmentState::BadHeader => {
            "segment header is damaged, and newer segments follow".to_string()
        }
        SegmentState::Foreign => "segment belongs to another shard".to_string(),
        SegmentState::Gap => format!("segment starts past LSN {expected}: records are missing"),
        SegmentState::Overlap => format!("segment starts below LSN {expected}: segments overlap"),
        SegmentState::Continues => "segment is inconsistent".to_string(),
    };
    Error::corruption(path, 0, what)
}

fn tail_after(path: &Path, header: SegmentHeader, scan: &SegmentScan, len: usize) -> Tail {
    let offset = format::next_group_offset(scan.valid_end);
    if scan.end == SegmentEnd::Clean && offset < len {
        Tail::Resume { path: path.to_path_buf(), header, offset }
    } else {
        Tail::Fresh { sequence: header.sequence + 1 }
    }
}

/// Scans one segment image (the whole file), applying records from LSN `expected` on.
pub fn scan_segment(
    image: &[u8],
    header: &SegmentHeader,
    mut expected: u64,
    path: &Path,
    apply: &mut impl FnMut(u64, Vec<WriteOp>),
) -> Result<SegmentScan> {
    let generation = header.generation();
    let mut at = SEGMENT_HEADER_BYTES;
    let mut valid_end = at;
    loop {
        if at >= image.len() {
            return Ok(SegmentScan { end: SegmentEnd::Clean, valid_end, next_lsn: expected });
        }
        let parsed = format::parse_record(image, at);
        let state = classify(&parsed, expected, generation);
        let decision = match state {
            RecordState::Valid => Decision::Apply,
            _ => recovery::decide(state, following(image, at, expected, generation)),
        };
        match decision {
            Decision::Apply => {
                let Parsed::Record(rec) = parsed else { return Err(lost_record(path, at)) };
                if rec.kind == format::KIND_WRITE {
                    let ops = format::decode_write_payload(rec.payload).map_err(|what| {
                        Error::corruption(path, at as u64, format!("record {}: {what}", rec.lsn))
                    })?;
                    apply(rec.lsn, ops);
                    expected += 1;
                }
                // A GROUP record frames the group; it takes no LSN of its own.
                at += rec.size();
                valid_end = at;
            }
            Decision::SkipToNextSector => at = padding_end(at),
            Decision::CleanEnd => {
                return Ok(SegmentScan { end: SegmentEnd::Clean, valid_end, next_lsn: expected })
            }
            Decision::TruncateTornTail => {
                return Ok(SegmentScan { end: SegmentEnd::TornTail, valid_end, next_lsn: expected })
            }
            Decision::Corruption => return Err(record_corruption(path, at, state, expected)),
        }
    }
}

fn lost_record(path: &Path, at: usize) -> Error {
    Error::corruption(path, at as u64, "replay decided to apply a position that holds no record")
}

fn record_corruption(path: &Path, at: usize, state: RecordState, expected: u64) -> Error {
    let what = match state {
        RecordState::Unexpected => {
            format!("record does not continue the log (expected LSN {expected})")
        }
        RecordState::Zero => {
            format!("zeros where LSN {expected} should be, with valid records after them")
        }
        RecordState::Garbage | RecordState::Valid => {
            format!("damaged record where LSN {expected} should be, with valid records after it")
        }
    };
    Error::corruption(path, at as u64, what)
}

fn classify(parsed: &Parsed<'_>, expected: u64, generation: u32) -> RecordState {
    match parsed {
        Parsed::Record(r) if r.lsn == expected && r.generation == generation && known_kind(r) => {
            RecordState::Valid
        }
        Parsed::Record(_) => RecordState::Unexpected,
        Parsed::Zero => RecordState::Zero,
        Parsed::Garbage => RecordState::Garbage,
    }
}

fn known_kind(r: &format::RecordView<'_>) -> bool {
    r.kind == format::KIND_WRITE
        || (r.kind == format::KIND_GROUP && format::group_durable_before(r.payload).is_some())
}

/// What the segment holds after position `at`.
fn following(image: &[u8], at: usize, expected: u64, generation: u32) -> Following {
    let next_sector = padding_end(at);
    if let Parsed::Record(r) = format::parse_record(image, next_sector) {
        if r.lsn == expected && r.generation == generation {
            return Following::ExpectedAtNextSector;
        }
    }
    if let Some(durable_before) = next_group_header(image, at, expected, generation) {
        return if durable_before < expected {
            Following::InFlightBeyond
        } else {
            Following::ValidFurtherOn
        };
    }
    let mut p = at + 1;
    while let Some(q) = next_nonzero(image, p) {
        if plausible_header(image, q, expected, generation) {
            if let Parsed::Record(_) = format::parse_record(image, q) {
                return Following::ValidFurtherOn;
            }
        }
        p = q + 1;
    }
    Following::NothingValid
}

/// The `durable_before` of the first GROUP record of this segment at a sector boundary after
/// `at` whose group starts past `expected` (groups always start on sector boundaries).
fn next_group_header(image: &[u8], at: usize, expected: u64, generation: u32) -> Option<u64> {
    let mut b = (at / SECTOR_BYTES + 1) * SECTOR_BYTES;
    while b < image.len() {
        if let Parsed::Record(r) = format::parse_record(image, b) {
            if r.kind == format::KIND_GROUP && r.generation == generation && r.lsn > expected {
                if let Some(d) = format::group_durable_before(r.payload) {
                    return Some(d);
                }
            }
        }
        b += SECTOR_BYTES;
    }
    None
}

/// Where the group after zero padding at `at` starts: the writers' `next_group_offset`, or the
/// next sector when `at` is already on a boundary.
fn padding_end(at: usize) -> usize {
    if at.is_multiple_of(SECTOR_BYTES) {
        at + SECTOR_BYTES
    } else {
        format::next_group_offset(at)
    }
}

/// Cheap filter before a checksum: the LSN and generation fields fit this segment.
fn plausible_header(image: &[u8], at: usize, expected: u64, generation: u32) -> bool {
    let Some(h) = image.get(at..at + RECORD_HEADER_BYTES) else { return false };
    let mut lsn = [0u8; 8];
    lsn.copy_from_slice(&h[8..16]);
    let mut gen = [0u8; 4];
    gen.copy_from_slice(&h[16..20]);
    let lsn = u64::from_le_bytes(lsn);
    u32::from_le_bytes(gen) == generation && lsn >= expected && lsn - expected < (1 << 40)
}

/// Offset of the first non-zero byte at or after `from`.
fn next_nonzero(image: &[u8], from: usize) -> Option<usize> {
    let rest = image.get(from..)?;
    let head = rest.len().min((8 - from % 8) % 8);
    if let Some(i) = rest[..head].iter().position(|&b| b != 0) {
        return Some(from + i);
    }
    let mut off = from + head;
    for word in image[off..].chunks(8 * SECTOR_BYTES / 64) {
        if word.iter().any(|&b| b != 0) {
            return word.iter().position(|&b| b != 0).map(|i| off + i);
        }
        off += word.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_nonzero_finds_bytes_everywhere() {
        let mut v = vec![0u8; 10_000];
        assert_eq!(next_nonzero(&v, 0), None);
        v[9_999] = 1;
        assert_eq!(next_nonzero(&v, 3), Some(9_999));
        v[5] = 1;
        assert_eq!(next_nonzero(&v, 3), Some(5));
        assert_eq!(next_nonzero(&v, 6), Some(9_999));
        assert_eq!(next_nonzero(&v, 10_000), None);
    }
}
