//! WAL replay: reads a shard's segments in order from a checkpoint, yields every record past
//! it, and decides where the log ends, asking the recovery tables (`recovery.rs`) at every
//! position that is not the next valid record and at every segment boundary.
//!
//! Shard-local: runs on the shard thread at start-up, before the loop, through the shard's
//! storage. Replay never skips damage: damage that a durable claim covers is
//! `Error::Corruption` naming the file and offset. What replay does cut or set aside (a torn
//! tail, segments past a cut, files of an interrupted segment creation) is logged and reported
//! in [`RecoveryReport`]. No file holding a record is ever deleted: segments past a cut are
//! renamed to `wal-N.log.cut`.

use std::path::{Path, PathBuf};

use super::format::{self, HeaderError, SegmentHeader, GROUP_ALIGN_BYTES, SEGMENT_HEADER_BYTES};
use super::record::{self, Decoded, Parsed, Record, RecordView, KIND_GROUP};
use super::recovery::SegmentState;
use super::recovery::{self, Decision, Following, Horizon, RecordState, SegmentDecision};
use super::segment;
use crate::error::{Error, Result};
use crate::io::{OpenHow, Storage};
use crate::version::{Lsn, Ts};

/// Where a cut was made.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Cut {
    /// The segment whose tail was cut.
    pub file: PathBuf,
    /// Byte offset of the first byte not replayed.
    pub offset: u64,
    /// The LSN the log continues with (the first one not replayed).
    pub lsn: Lsn,
    /// Bytes from the cut to the last non-zero byte of the segment: what was thrown away.
    pub bytes: u64,
}

/// What recovery did besides applying records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Segments read and replayed.
    pub segments_replayed: u64,
    /// Records yielded (at or past the checkpoint).
    pub records_applied: u64,
    /// Records read but not yielded, being below the checkpoint.
    pub records_below_checkpoint: u64,
    /// Segments not read at all, being below the checkpoint.
    pub segments_skipped: u64,
    /// Files of interrupted segment creations removed (they never held a record).
    pub temp_files_removed: u64,
    /// The torn tail this open cut, if any.
    pub cut: Option<Cut>,
    /// Segments whose damaged tail an earlier open had already cut (the next segment continues
    /// where the cut was).
    pub earlier_cuts: u64,
    /// Segments set aside (renamed `*.cut`) because they lie past a cut.
    pub set_aside: Vec<PathBuf>,
}

impl RecoveryReport {
    /// True when recovery cut, set aside or removed anything.
    pub fn changed_anything(&self) -> bool {
        self.cut.is_some() || !self.set_aside.is_empty() || self.temp_files_removed > 0
    }
}

/// Where new writes go after replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tail {
    /// Start a new segment (none exists yet, or the newest one ended torn, full or cut).
    Fresh,
    /// Continue in the newest segment at `offset` (an aligned boundary past its last record).
    Resume {
        /// The segment file.
        path: PathBuf,
        /// Its header.
        header: SegmentHeader,
        /// Where the next group starts.
        offset: usize,
    },
}

/// Outcome of replaying a shard's WAL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replayed {
    /// The LSN the next write gets.
    pub next_lsn: Lsn,
    /// The highest timestamp replayed (`Ts::ZERO` when nothing was).
    pub last_ts: Ts,
    /// The highest durable claim found in the replayed log.
    pub claimed: Lsn,
    /// Where appends continue.
    pub tail: Tail,
    /// The sequence number the next new segment gets (past every file, set-aside ones too).
    pub next_sequence: u64,
    /// What recovery did.
    pub report: RecoveryReport,
}

impl Replayed {
    /// The outcome for a shard with no log yet.
    pub fn empty() -> Self {
        Replayed {
            next_lsn: Lsn::FIRST,
            last_ts: Ts::ZERO,
            claimed: Lsn::ZERO,
            tail: Tail::Fresh,
            next_sequence: 1,
            report: RecoveryReport::default(),
        }
    }
}

/// A segment of the chain and its header.
struct Segment {
    path: PathBuf,
    header: SegmentHeader,
}

/// Replays shard `shard_id`'s WAL in `dir` from `checkpoint` (the first LSN the caller does not
/// already hold), calling `apply` for each record at or past it, in order.
pub fn replay<S: Storage>(
    io: &mut S,
    dir: &Path,
    shard_id: u32,
    checkpoint: Lsn,
    mut apply: impl FnMut(Record),
) -> Result<Replayed> {
    io.create_dir_all(dir).map_err(|e| Error::io("create shard directory", dir, e))?;
    let listing = segment::list(io, dir)?;
    let mut out = Replayed { next_sequence: listing.max_sequence + 1, ..Replayed::empty() };
    out.next_lsn = checkpoint.max(Lsn::FIRST);
    remove_temporary(io, dir, &listing.temporary, &mut out.report)?;
    let segments = read_headers(io, shard_id, &listing.segments)?;
    let Some(first) = first_needed(&segments, checkpoint, &mut out.report)? else {
        return Ok(out);
    };
    let mut expected = segments[first].header.first_lsn;
    let mut replayed: Vec<&Segment> = Vec::new();
    for (i, seg) in segments.iter().enumerate().skip(first) {
        if i > first {
            let state = chain_state(&seg.header, expected);
            // The horizon reads every later segment: only when the decision depends on it.
            let covered = recovery::decide_segment(state, Horizon::Covered);
            let beyond = recovery::decide_segment(state, Horizon::Beyond);
            let decision = if covered != beyond
                && horizon_of(expected, checkpoint, || claims_in(io, &segments[i..]))?
                    == Horizon::Beyond
            {
                beyond
            } else {
                covered
            };
            match decision {
                SegmentDecision::Replay => {}
                SegmentDecision::CutLog => {
                    set_aside(io, dir, &segments[i..], &mut out.report)?;
                    break;
                }
                _ => return Err(hole_corruption(&seg.path, state, expected)),
            }
        }
        let image = segment::read_image(io, &seg.path)?;
        let next_first = segments.get(i + 1).map(|s| s.header.first_lsn);
        let later = &segments[i + 1..];
        // The later segments' claims are read once per segment, when first needed.
        let mut later_claims: Option<Lsn> = None;
        let mut horizon = |at: usize, lsn: Lsn| -> Result<Horizon> {
            // A next segment that starts exactly here was created by an earlier open that cut
            // this tail: only claims in this segment's own rest count against that cut.
            let own = claims_after(&image, at, seg.header.generation());
            if next_first == Some(lsn) {
                return horizon_of(lsn, checkpoint, || Ok(own));
            }
            horizon_of(lsn, checkpoint, || {
                let later = match later_claims {
                    Some(claimed) => claimed,
                    None => *later_claims.insert(claims_in(io, later)?),
                };
                Ok(own.max(later))
            })
        };
        let scan = scan_segment(
            &image,
            &seg.header,
            expected,
            checkpoint,
            &seg.path,
            &mut apply,
            &mut horizon,
        )?;
        out.report.segments_replayed += 1;
        out.report.records_applied += scan.applied;
        out.report.records_below_checkpoint += scan.below_checkpoint;
        out.claimed = out.claimed.max(scan.claimed);
        out.last_ts = out.last_ts.max(scan.last_ts);
        expected = scan.next_lsn;
        replayed.push(seg);
        if let Some(cut) = scan.cut {
            if next_first == Some(expected) {
                out.report.earlier_cuts += 1;
                continue;
            }
            log::warn!(
                "{}: cut the log at byte {} ({}): {} bytes past the newest durable claim were \
                 torn or never complete",
                cut.file.display(),
                cut.offset,
                cut.lsn,
                cut.bytes
            );
            out.report.cut = Some(cut);
            set_aside(io, dir, later, &mut out.report)?;
            break;
        }
        out.tail = resume_tail(seg, &scan, image.len(), segments.len() == i + 1);
    }
    out.next_lsn = expected.max(checkpoint);
    if out.report.cut.is_some() {
        out.tail = Tail::Fresh;
    }
    sync_replayed(io, dir, &replayed)?;
    Ok(out)
}

/// Removes the segments whose every record lies below `keep_from` (the next segment starts
/// at or below it), never the newest, and makes the removal durable. Returns how many were
/// removed. Set-aside (`*.cut`) and temporary files are left alone.
pub fn remove_below<S: Storage>(
    io: &mut S,
    dir: &Path,
    shard_id: u32,
    keep_from: Lsn,
) -> Result<usize> {
    let listing = segment::list(io, dir)?;
    let segments = read_headers(io, shard_id, &listing.segments)?;
    let mut removed = 0;
    for pair in segments.windows(2) {
        if pair[1].header.first_lsn > keep_from {
            break;
        }
        io.remove_file(&pair[0].path)
            .map_err(|e| Error::io("remove WAL segment below the checkpoint", &pair[0].path, e))?;
        removed += 1;
    }
    if removed > 0 {
        io.sync_dir(dir).map_err(|e| Error::io("fsync WAL directory", dir, e))?;
    }
    Ok(removed)
}

/// Where appends continue after the last segment replayed: in it, when it ended cleanly with
/// room left and no segment follows it.
fn resume_tail(seg: &Segment, scan: &SegmentScan, len: usize, is_last: bool) -> Tail {
    let offset = format::next_group_offset(scan.valid_end);
    if is_last && scan.cut.is_none() && offset < len {
        Tail::Resume { path: seg.path.clone(), header: seg.header, offset }
    } else {
        Tail::Fresh
    }
}

/// Replayed records count as durable from here on (a durable claim may soon cover them), but
/// after a process crash they may sit only in the page cache: sync every replayed segment, and
/// the directory (a segment's name may not be durable yet if an earlier directory fsync failed
/// and the process stopped).
fn sync_replayed<S: Storage>(io: &mut S, dir: &Path, replayed: &[&Segment]) -> Result<()> {
    io.sync_dir(dir).map_err(|e| Error::io("fsync WAL directory", dir, e))?;
    for seg in replayed {
        let file = io
            .open(&seg.path, OpenHow::Buffered)
            .map_err(|e| Error::io("open WAL segment", &seg.path, e))?;
        io.sync_file(&file)
            .map_err(|e| Error::io("fdatasync replayed WAL segment", &seg.path, e))?;
    }
    Ok(())
}

fn remove_temporary<S: Storage>(
    io: &mut S,
    dir: &Path,
    temporary: &[PathBuf],
    report: &mut RecoveryReport,
) -> Result<()> {
    for path in temporary {
        // Records are written only into segments renamed into place: this one never held any.
        log::warn!("{}: removing a WAL segment whose creation was interrupted", path.display());
        io.remove_file(path).map_err(|e| Error::io("remove half-created WAL segment", path, e))?;
        report.temp_files_removed += 1;
    }
    if !temporary.is_empty() {
        io.sync_dir(dir).map_err(|e| Error::io("fsync WAL directory", dir, e))?;
    }
    Ok(())
}

fn set_aside<S: Storage>(
    io: &mut S,
    dir: &Path,
    segments: &[Segment],
    report: &mut RecoveryReport,
) -> Result<()> {
    for seg in segments {
        let to = segment::cut_path(&seg.path);
        log::warn!(
            "{}: the log ends before this segment; setting it aside as {}",
            seg.path.display(),
            to.display()
        );
        io.rename(&seg.path, &to).map_err(|e| Error::io("set aside WAL segment", &seg.path, e))?;
        report.set_aside.push(to);
    }
    if !segments.is_empty() {
        io.sync_dir(dir).map_err(|e| Error::io("fsync WAL directory", dir, e))?;
    }
    Ok(())
}

/// Reads and checks every segment's header (`SEGMENT_TABLE`'s header rows).
fn read_headers<S: Storage>(
    io: &mut S,
    shard_id: u32,
    listed: &[(u64, PathBuf)],
) -> Result<Vec<Segment>> {
    let mut out = Vec::with_capacity(listed.len());
    for (sequence, path) in listed {
        let bytes = io
            .read_at(path, 0, SEGMENT_HEADER_BYTES)
            .map_err(|e| Error::io("read WAL segment header", path, e))?;
        let (state, header) = match SegmentHeader::decode(&bytes) {
            Ok(h) if h.shard_id != shard_id || h.sequence != *sequence => {
                (SegmentState::Misplaced, Some(h))
            }
            Ok(h) => (SegmentState::Continues, Some(h)),
            Err(HeaderError::Version(_)) => (SegmentState::OtherVersion, None),
            Err(_) => (SegmentState::BadHeader, None),
        };
        match (recovery::decide_segment(state, Horizon::Covered), header) {
            (SegmentDecision::Replay, Some(header)) => {
                out.push(Segment { path: path.clone(), header })
            }
            (SegmentDecision::Incompatible, _) => return Err(incompatible(path, &bytes)),
            _ => return Err(header_corruption(path, &bytes, shard_id, *sequence)),
        }
    }
    Ok(out)
}

/// The index of the first segment replay must read: the last one that starts at or below the
/// checkpoint (earlier ones are skipped). `None`: no segments.
fn first_needed(
    segments: &[Segment],
    checkpoint: Lsn,
    report: &mut RecoveryReport,
) -> Result<Option<usize>> {
    let Some(first) = segments.first() else { return Ok(None) };
    if first.header.first_lsn > checkpoint && first.header.first_lsn > Lsn::FIRST {
        return Err(Error::corruption(
            &first.path,
            0,
            format!(
                "the oldest segment starts at {}, past the checkpoint at {checkpoint}: records \
                 are missing",
                first.header.first_lsn
            ),
        ));
    }
    let start = segments.iter().rposition(|s| s.header.first_lsn <= checkpoint).unwrap_or(0);
    report.segments_skipped += start as u64;
    Ok(Some(start))
}

fn chain_state(header: &SegmentHeader, expected: Lsn) -> SegmentState {
    match header.first_lsn.cmp(&expected) {
        std::cmp::Ordering::Equal => SegmentState::Continues,
        std::cmp::Ordering::Greater => SegmentState::StartsPast,
        std::cmp::Ordering::Less => SegmentState::StartsBelow,
    }
}

fn horizon_of(lsn: Lsn, checkpoint: Lsn, claims: impl FnOnce() -> Result<Lsn>) -> Result<Horizon> {
    if lsn < checkpoint || claims()? >= lsn {
        Ok(Horizon::Covered)
    } else {
        Ok(Horizon::Beyond)
    }
}

/// The highest durable claim in `segments` (their GROUP records).
fn claims_in<S: Storage>(io: &mut S, segments: &[Segment]) -> Result<Lsn> {
    let mut best = Lsn::ZERO;
    for seg in segments {
        let image = segment::read_image(io, &seg.path)?;
        best = best.max(claims_after(&image, SEGMENT_HEADER_BYTES - 1, seg.header.generation()));
    }
    Ok(best)
}

/// The highest durable claim of the GROUP records at aligned boundaries after `at` (groups
/// that carry claims always start on one).
fn claims_after(image: &[u8], at: usize, generation: u32) -> Lsn {
    let mut best = Lsn::ZERO;
    let mut b = (at / GROUP_ALIGN_BYTES + 1) * GROUP_ALIGN_BYTES;
    while b < image.len() {
        // Only a GROUP record's header is worth a checksum: the bytes at a boundary inside a
        // record may claim any length, and checking it would read megabytes per boundary.
        if !record::may_be_group(image, b) {
            b += GROUP_ALIGN_BYTES;
            continue;
        }
        if let Parsed::Record(r) = record::parse(image, b) {
            if r.kind == KIND_GROUP && r.generation == generation {
                if let Ok(Decoded::Group { durable_before, .. }) = r.decode() {
                    best = best.max(durable_before);
                }
            }
        }
        b += GROUP_ALIGN_BYTES;
    }
    best
}

/// Result of scanning one segment image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentScan {
    /// Byte offset just past the last record read.
    pub valid_end: usize,
    /// The LSN the next record must carry.
    pub next_lsn: Lsn,
    /// Records yielded.
    pub applied: u64,
    /// Records read below the checkpoint and not yielded.
    pub below_checkpoint: u64,
    /// The highest durable claim read.
    pub claimed: Lsn,
    /// The highest timestamp yielded.
    pub last_ts: Ts,
    /// Where the segment's tail was cut, if it was.
    pub cut: Option<Cut>,
}

/// Scans one segment image (the whole file) from LSN `expected`, yielding records at or past
/// `checkpoint`. `horizon(at, lsn)` says whether a durable claim covers `lsn` at offset `at`;
/// it is asked only where the next valid record is not found.
pub fn scan_segment(
    image: &[u8],
    header: &SegmentHeader,
    mut expected: Lsn,
    checkpoint: Lsn,
    path: &Path,
    apply: &mut impl FnMut(Record),
    horizon: &mut impl FnMut(usize, Lsn) -> Result<Horizon>,
) -> Result<SegmentScan> {
    let generation = header.generation();
    let mut at = SEGMENT_HEADER_BYTES;
    let mut scan = SegmentScan {
        valid_end: at,
        next_lsn: expected,
        applied: 0,
        below_checkpoint: 0,
        claimed: Lsn::ZERO,
        last_ts: Ts::ZERO,
        cut: None,
    };
    while at < image.len() {
        let parsed = record::parse(image, at);
        let state = classify(&parsed, expected, generation);
        let decision = match state {
            RecordState::Valid => Decision::Apply,
            RecordState::Claim => Decision::NoteClaim,
            _ => {
                let following = following(image, at, expected, generation);
                // The horizon costs a read of the rest of the log: ask only when the decision
                // depends on it (a zero-padding run between groups does not).
                let covered = recovery::decide(state, following, Horizon::Covered);
                let beyond = recovery::decide(state, following, Horizon::Beyond);
                if covered != beyond && horizon(at, expected)? == Horizon::Beyond {
                    beyond
                } else {
                    covered
                }
            }
        };
        match (decision, parsed) {
            (Decision::Apply, Parsed::Record(rec)) => {
                let record = match decode(&rec, path, at)? {
                    Decoded::Write(write) => Record::Write(write),
                    Decoded::Tx(record) => record,
                    Decoded::Group { .. } => return Err(lost_record(path, at)),
                };
                if rec.lsn >= checkpoint {
                    scan.last_ts = scan.last_ts.max(rec.ts);
                    scan.applied += 1;
                    apply(record);
                } else {
                    scan.below_checkpoint += 1;
                }
                expected = expected.next();
                at += rec.size();
                scan.valid_end = at;
            }
            (Decision::NoteClaim, Parsed::Record(rec)) => {
                if let Decoded::Group { durable_before, .. } = decode(&rec, path, at)? {
                    scan.claimed = scan.claimed.max(durable_before);
                }
                at += rec.size();
                scan.valid_end = at;
            }
            (Decision::SkipPadding, _) => at = padding_end(at),
            (Decision::EndOfSegment, _) => break,
            (Decision::CutTail, _) => {
                let end = last_nonzero(image, at).map_or(at, |i| i + 1);
                let bytes = (end - at) as u64;
                scan.cut =
                    Some(Cut { file: path.to_path_buf(), offset: at as u64, lsn: expected, bytes });
                break;
            }
            (Decision::Corruption, _) => return Err(record_corruption(path, at, state, expected)),
            (Decision::Apply | Decision::NoteClaim, _) => return Err(lost_record(path, at)),
        }
    }
    scan.next_lsn = expected;
    Ok(scan)
}

fn decode(rec: &RecordView<'_>, path: &Path, at: usize) -> Result<Decoded> {
    rec.decode().map_err(|e| Error::corruption(path, at as u64, format!("{}: {e}", rec.lsn)))
}

fn classify(parsed: &Parsed<'_>, expected: Lsn, generation: u32) -> RecordState {
    match parsed {
        Parsed::Record(r) if r.lsn == expected && r.generation == generation => match r.kind {
            record::KIND_WRITE
            | record::KIND_PREPARE
            | record::KIND_COMMIT
            | record::KIND_ABORT
            | record::KIND_DECISION => RecordState::Valid,
            KIND_GROUP if r.decode().is_ok() => RecordState::Claim,
            _ => RecordState::Unexpected,
        },
        Parsed::Record(_) => RecordState::Unexpected,
        Parsed::Zero => RecordState::Zero,
        Parsed::Garbage => RecordState::Garbage,
    }
}

/// What the segment holds after position `at`.
fn following(image: &[u8], at: usize, expected: Lsn, generation: u32) -> Following {
    let next = padding_end(at);
    if let Parsed::Record(r) = record::parse(image, next) {
        if r.lsn == expected && r.generation == generation {
            return Following::PaddingThenExpected;
        }
    }
    match image.get(at..).and_then(|rest| rest.iter().position(|&b| b != 0)) {
        None => Following::AllZero,
        Some(_) => Following::Other,
    }
}

/// Where the group after zero padding at `at` starts: the writers' `next_group_offset`, or the
/// next aligned boundary when `at` is already on one.
fn padding_end(at: usize) -> usize {
    if at.is_multiple_of(GROUP_ALIGN_BYTES) {
        at + GROUP_ALIGN_BYTES
    } else {
        format::next_group_offset(at)
    }
}

/// Offset of the last non-zero byte at or after `from`.
fn last_nonzero(image: &[u8], from: usize) -> Option<usize> {
    image.get(from..)?.iter().rposition(|&b| b != 0).map(|i| from + i)
}

fn lost_record(path: &Path, at: usize) -> Error {
    Error::corruption(path, at as u64, "replay decided to apply a position that holds no record")
}

fn record_corruption(path: &Path, at: usize, state: RecordState, expected: Lsn) -> Error {
    let what = match state {
        RecordState::Unexpected => {
            format!("a checksummed record that does not continue the log (expected {expected})")
        }
        RecordState::Zero => {
            format!("zeros where {expected} should be, which a durable claim covers")
        }
        RecordState::Garbage | RecordState::Valid | RecordState::Claim => {
            format!("damaged record where {expected} should be, which a durable claim covers")
        }
    };
    Error::corruption(path, at as u64, what)
}

fn hole_corruption(path: &Path, state: SegmentState, expected: Lsn) -> Error {
    let what = match state {
        SegmentState::StartsPast => {
            format!("the segment starts past {expected}, which a durable claim covers: records are missing")
        }
        _ => format!("the segment starts below {expected}: segments overlap"),
    };
    Error::corruption(path, 0, what)
}

fn header_corruption(path: &Path, bytes: &[u8], shard_id: u32, sequence: u64) -> Error {
    let what = match SegmentHeader::decode(bytes) {
        Ok(h) if h.shard_id != shard_id => {
            format!("the segment belongs to shard {}, not shard {shard_id}", h.shard_id)
        }
        Ok(h) => format!("the header names sequence {}, the file name {sequence}", h.sequence),
        Err(e) => format!("{e}; a segment is renamed into place only once its header is durable"),
    };
    Error::corruption(path, 0, what)
}

fn incompatible(path: &Path, bytes: &[u8]) -> Error {
    let found = match SegmentHeader::decode(bytes) {
        Err(HeaderError::Version(v)) => v,
        _ => 0,
    };
    Error::IncompatibleVersion {
        file: path.to_path_buf(),
        found,
        supported: format::WAL_FORMAT_VERSION,
    }
}
