//! Every row of both recovery tables (`recovery.rs`) as a fixture on the simulated disk: a
//! segment image or a segment directory written with `SimDisk::put_file`, read back through a
//! `SimStorage` and replayed; the outcome must be the row's decision. A row without a fixture
//! fails `every_record_row_has_a_fixture` / `every_segment_row_has_a_fixture`. Then the cases a
//! hostile user tries by hand: a flipped byte in the newest segment's header, in the last record
//! of a closed log, a hole between segments after a power loss, an interrupted segment creation.

use std::path::PathBuf;

use super::format::{
    SegmentHeader, GROUP_ALIGN_BYTES, SEGMENT_HEADER_BYTES, WAL_FORMAT_OLDEST_READ,
    WAL_FORMAT_VERSION,
};
use super::reader::{replay, scan_segment, Replayed, Tail};
use super::record::{encode_group, encode_write, Record, WriteOp, GROUP_RECORD_BYTES};
use super::recovery::tests::{FOLLOWING, HORIZONS, SEGMENT_STATES, STATES};
use super::recovery::{
    decide, decide_segment, Decision, Following, Horizon, RecordState, SegmentDecision,
    SegmentState, RECORD_TABLE, SEGMENT_TABLE,
};
use super::segment::{cut_path, segment_path, temp_path};
use crate::error::{Error, Result};
use crate::io::sim::{SimDisk, SimStorage};
use crate::io::Storage;
use crate::version::{Lsn, Ts};

const SEGMENT_BYTES: usize = 64 * 1024;
const R0: usize = SEGMENT_HEADER_BYTES; // where records start
const NEXT: usize = R0 + GROUP_ALIGN_BYTES; // the next aligned boundary

fn dir() -> PathBuf {
    PathBuf::from("/fixtures/shard-000")
}

fn header(sequence: u64, first_lsn: u64) -> SegmentHeader {
    SegmentHeader {
        shard_id: 0,
        sequence,
        first_lsn: Lsn::new(first_lsn),
        segment_bytes: SEGMENT_BYTES as u64,
    }
}

fn write_record(lsn: u64, generation: u32) -> Vec<u8> {
    let ops = vec![WriteOp::Put {
        key: format!("k{lsn}").into_bytes(),
        value: vec![lsn as u8; 40].into(),
    }];
    let mut out = Vec::new();
    encode_write(&mut out, Lsn::new(lsn), Ts::new(lsn), generation, &ops);
    out
}

fn claim(first_lsn: u64, generation: u32, durable_before: u64) -> Vec<u8> {
    let mut b = vec![0u8; GROUP_RECORD_BYTES];
    encode_group(&mut b, Lsn::new(first_lsn), generation, Lsn::new(durable_before));
    b
}

/// A segment image: header sector, then `(offset, bytes)` pieces, zeros elsewhere.
fn image(h: &SegmentHeader, pieces: &[(usize, Vec<u8>)]) -> Vec<u8> {
    let mut img = vec![0u8; SEGMENT_BYTES];
    img[..SEGMENT_HEADER_BYTES].copy_from_slice(&h.encode());
    for (at, bytes) in pieces {
        img[*at..*at + bytes.len()].copy_from_slice(bytes);
    }
    img
}

/// Records `lsns` packed from `R0`, in segment `h`.
fn packed(h: &SegmentHeader, lsns: std::ops::RangeInclusive<u64>) -> Vec<u8> {
    let mut pieces = Vec::new();
    let mut at = R0;
    for lsn in lsns {
        let r = write_record(lsn, h.generation());
        pieces.push((at, r.clone()));
        at += r.len();
    }
    image(h, &pieces)
}

fn storage(disk: &SimDisk) -> SimStorage {
    disk.storage()
}

fn replay_dir(disk: &SimDisk, checkpoint: u64) -> (Result<Replayed>, Vec<u64>) {
    let mut applied = Vec::new();
    let mut io = storage(disk);
    let result = replay(&mut io, &dir(), 0, Lsn::new(checkpoint), |rec| {
        applied.push(rec.lsn().get());
    });
    (result, applied)
}

// ---------------------------------------------------------------------------------------------
// The record table.

/// An image whose position `R0` is in `state` (expecting LSN 1) with `following` after it.
fn record_fixture(state: RecordState, following: Following) -> Vec<u8> {
    let h = header(1, 1);
    let g = h.generation();
    let first = match state {
        RecordState::Valid => write_record(1, g),
        RecordState::Claim => [claim(1, g, 0), write_record(1, g)].concat(),
        RecordState::Unexpected => write_record(5, g),
        RecordState::Zero => Vec::new(),
        RecordState::Garbage => {
            let mut torn = write_record(1, g);
            torn.truncate(torn.len() - 7); // a record cut short: a torn write
            torn
        }
    };
    let mut pieces = vec![(R0, first.clone())];
    if matches!(state, RecordState::Valid | RecordState::Claim) {
        return image(&h, &pieces); // what follows is never asked about a record that applies
    }
    match following {
        Following::AllZero => {}
        Following::PaddingThenExpected => pieces.push((NEXT, write_record(1, g))),
        // Bytes further on that are not where the next record would start.
        Following::Other => pieces.push((R0 + first.len().max(100) + 100, write_record(2, g))),
    }
    image(&h, &pieces)
}

fn check_record_row(state: RecordState, following: Following, horizon: Horizon, d: Decision) {
    let disk = SimDisk::new(1);
    let path = dir().join("wal-0000000000000001.log");
    disk.put_file(&path, &record_fixture(state, following)).unwrap();
    let img = storage(&disk).read_file(&path).unwrap();
    let h = header(1, 1);
    let mut applied = Vec::new();
    let mut apply = |rec: Record| {
        applied.push(rec.lsn().get());
    };
    let mut asked = |_: usize, _: Lsn| Ok(horizon);
    let result = scan_segment(&img, &h, Lsn::FIRST, Lsn::FIRST, &path, &mut apply, &mut asked);
    let row = format!("{state:?}/{following:?}/{horizon:?} -> {d:?}");
    match d {
        Decision::Apply | Decision::NoteClaim => {
            let scan = result.unwrap_or_else(|e| panic!("{row}: {e}"));
            assert_eq!(applied.first(), Some(&1), "{row}: the record was not applied");
            if d == Decision::NoteClaim {
                assert_eq!(scan.claimed, Lsn::ZERO, "{row}");
            }
        }
        Decision::SkipPadding => {
            result.unwrap_or_else(|e| panic!("{row}: {e}"));
            assert_eq!(applied, vec![1], "{row}: the record after the padding was not applied");
        }
        Decision::EndOfSegment => {
            let scan = result.unwrap_or_else(|e| panic!("{row}: {e}"));
            assert!(applied.is_empty() && scan.cut.is_none(), "{row}");
            assert_eq!((scan.valid_end, scan.next_lsn), (R0, Lsn::FIRST), "{row}");
        }
        Decision::CutTail => {
            let scan = result.unwrap_or_else(|e| panic!("{row}: {e}"));
            assert!(applied.is_empty(), "{row}");
            let cut = scan.cut.unwrap_or_else(|| panic!("{row}: no cut"));
            assert_eq!((cut.offset, cut.lsn), (R0 as u64, Lsn::FIRST), "{row}");
            assert!(cut.bytes > 0, "{row}: the cut counts what it threw away");
        }
        Decision::Corruption => match result {
            Err(Error::Corruption { file, offset, .. }) => {
                assert_eq!((file, offset), (path.clone(), R0 as u64), "{row}");
            }
            other => panic!("{row}: expected Corruption, got {other:?} (applied {applied:?})"),
        },
    }
}

#[test]
fn every_record_row_has_a_fixture() {
    for (state, following, horizon, decision) in RECORD_TABLE {
        check_record_row(*state, *following, *horizon, *decision);
    }
    assert_eq!(RECORD_TABLE.len(), STATES.len() * FOLLOWING.len() * HORIZONS.len());
}

// ---------------------------------------------------------------------------------------------
// The segment table.

/// Segment 1 (LSNs 1..=2) and the row's segment as segment 2; with `Covered`, segment 2 holds
/// a durable claim reaching past segment 1.
fn segment_fixture(disk: &SimDisk, state: SegmentState, horizon: Horizon) {
    let put = |seq: u64, bytes: Vec<u8>| disk.put_file(&segment_path(&dir(), seq), &bytes).unwrap();
    put(1, packed(&header(1, 1), 1..=2));
    let (first, lsns) = match state {
        SegmentState::StartsPast => (9, 9..=10),
        SegmentState::StartsBelow => (2, 2..=3),
        _ => (3, 3..=4),
    };
    let h = header(2, first);
    let mut img = packed(&h, lsns);
    if horizon == Horizon::Covered {
        let c = claim(first + 2, h.generation(), first + 1);
        img[NEXT..NEXT + c.len()].copy_from_slice(&c);
    }
    match state {
        SegmentState::BadHeader => img[20] ^= 0xff,
        SegmentState::OtherVersion => {
            img[8..12].copy_from_slice(&(WAL_FORMAT_OLDEST_READ - 1).to_le_bytes());
            let crc = crc32c::crc32c(&img[..60]);
            img[60..64].copy_from_slice(&crc.to_le_bytes());
        }
        SegmentState::Misplaced => {
            let foreign = SegmentHeader { shard_id: 7, ..h };
            img[..SEGMENT_HEADER_BYTES].copy_from_slice(&foreign.encode());
        }
        _ => {}
    }
    put(2, img);
}

fn check_segment_row(state: SegmentState, horizon: Horizon, d: SegmentDecision) {
    let disk = SimDisk::new(2);
    segment_fixture(&disk, state, horizon);
    let checkpoint = if state == SegmentState::BelowCheckpoint { 3 } else { 1 };
    let (result, applied) = replay_dir(&disk, checkpoint);
    let row = format!("{state:?}/{horizon:?} -> {d:?}");
    let seg2 = segment_path(&dir(), 2);
    match d {
        SegmentDecision::Replay => {
            result.unwrap_or_else(|e| panic!("{row}: {e}"));
            assert_eq!(applied, vec![1, 2, 3, 4], "{row}");
        }
        SegmentDecision::Skip => {
            let r = result.unwrap_or_else(|e| panic!("{row}: {e}"));
            assert_eq!(applied, vec![3, 4], "{row}: segment 1 lies below the checkpoint");
            assert_eq!(r.report.segments_skipped, 1, "{row}");
        }
        SegmentDecision::CutLog => {
            let r = result.unwrap_or_else(|e| panic!("{row}: {e}"));
            assert_eq!(applied, vec![1, 2], "{row}");
            assert_eq!(r.report.set_aside, vec![cut_path(&seg2)], "{row}");
            assert!(disk.read(&seg2).is_none() && disk.read(&cut_path(&seg2)).is_some(), "{row}");
            assert_eq!(
                (r.next_lsn, r.next_sequence, r.tail),
                (Lsn::new(3), 3, Tail::Fresh),
                "{row}"
            );
        }
        SegmentDecision::Corruption => match result {
            Err(Error::Corruption { file, .. }) => assert_eq!(file, seg2, "{row}"),
            other => panic!("{row}: expected Corruption, got {other:?}"),
        },
        SegmentDecision::Incompatible => match result {
            Err(Error::IncompatibleVersion { file, found, supported }) => {
                assert_eq!(
                    (file, found, supported),
                    (seg2.clone(), WAL_FORMAT_OLDEST_READ - 1, WAL_FORMAT_VERSION)
                );
            }
            other => panic!("{row}: expected IncompatibleVersion, got {other:?}"),
        },
    }
    if d != SegmentDecision::CutLog {
        assert!(disk.read(&seg2).is_some(), "{row}: recovery removed or renamed a segment");
    }
}

#[test]
fn every_segment_row_has_a_fixture() {
    for (state, horizon, decision) in SEGMENT_TABLE {
        check_segment_row(*state, *horizon, *decision);
    }
    assert_eq!(SEGMENT_TABLE.len(), SEGMENT_STATES.len() * HORIZONS.len());
}

// ---------------------------------------------------------------------------------------------
// By hand, as a hostile user would.

#[test]
fn a_damaged_header_of_the_newest_segment_is_corruption_and_the_file_stays() {
    let disk = SimDisk::new(3);
    disk.put_file(&segment_path(&dir(), 1), &packed(&header(1, 1), 1..=3)).unwrap();
    let mut newest = packed(&header(2, 4), 4..=6);
    newest[17] ^= 0x04;
    disk.put_file(&segment_path(&dir(), 2), &newest).unwrap();
    let (result, _) = replay_dir(&disk, 1);
    match result {
        Err(Error::Corruption { file, offset: 0, what }) => {
            assert_eq!(file, segment_path(&dir(), 2));
            assert!(what.contains("checksum"), "{what}");
        }
        other => panic!("expected Corruption, got {other:?}"),
    }
    assert_eq!(disk.read(&segment_path(&dir(), 2)), Some(newest), "nothing was deleted");
}

#[test]
fn damage_in_the_last_record_under_a_claim_is_corruption_not_a_cut() {
    // A cleanly closed log: records 1..=3, then the close's claim for all three.
    let h = header(1, 1);
    let g = h.generation();
    let mut img = packed(&h, 1..=3);
    let c = claim(4, g, 3);
    img[NEXT..NEXT + c.len()].copy_from_slice(&c);
    let last = R0 + 2 * write_record(1, g).len();
    let disk = SimDisk::new(4);
    disk.put_file(&segment_path(&dir(), 1), &img).unwrap();
    let (ok, applied) = replay_dir(&disk, 1);
    assert_eq!((ok.unwrap().claimed, applied), (Lsn::new(3), vec![1, 2, 3]));
    disk.damage(&segment_path(&dir(), 1), last + 40, 0x10).unwrap();
    match replay_dir(&disk, 1).0 {
        Err(Error::Corruption { offset, what, .. }) => {
            assert_eq!(offset, last as u64);
            assert!(what.contains("LSN 3") && what.contains("claim"), "{what}");
        }
        other => panic!("expected Corruption, got {other:?}"),
    }
}

#[test]
fn the_same_damage_past_every_claim_is_cut_and_counted() {
    let h = header(1, 1);
    let g = h.generation();
    let last = R0 + 2 * write_record(1, g).len();
    let disk = SimDisk::new(5);
    disk.put_file(&segment_path(&dir(), 1), &packed(&h, 1..=3)).unwrap();
    disk.damage(&segment_path(&dir(), 1), last + 40, 0x10).unwrap();
    let (r, applied) = replay_dir(&disk, 1);
    let r = r.unwrap();
    assert_eq!(applied, vec![1, 2]);
    let cut = r.report.cut.expect("a cut");
    assert_eq!((cut.offset, cut.lsn, r.next_lsn), (last as u64, Lsn::new(3), Lsn::new(3)));
    assert_eq!(r.tail, Tail::Fresh, "new writes never go into a damaged tail");
    // The next open sees the new segment continue at the cut: an earlier cut, not a new one.
    disk.put_file(&segment_path(&dir(), 2), &packed(&header(2, 3), 3..=4)).unwrap();
    let (r, applied) = replay_dir(&disk, 1);
    let r = r.unwrap();
    assert_eq!((applied, r.report.earlier_cuts, r.report.cut), (vec![1, 2, 3, 4], 1, None));
}

#[test]
fn a_hole_between_segments_after_a_power_loss_cuts_and_sets_aside() {
    // Segment 1's last records never reached the disk; segment 2, created at the rollover,
    // holds later records that no claim says were durable.
    let disk = SimDisk::new(6);
    disk.put_file(&segment_path(&dir(), 1), &packed(&header(1, 1), 1..=2)).unwrap();
    disk.put_file(&segment_path(&dir(), 2), &packed(&header(2, 6), 6..=7)).unwrap();
    let (r, applied) = replay_dir(&disk, 1);
    let r = r.unwrap();
    assert_eq!((applied, r.next_lsn, r.next_sequence), (vec![1, 2], Lsn::new(3), 3));
    assert_eq!(r.report.set_aside, vec![cut_path(&segment_path(&dir(), 2))]);
    assert!(disk.read(&cut_path(&segment_path(&dir(), 2))).is_some(), "set aside, not deleted");
}

#[test]
fn an_interrupted_creation_is_removed_and_a_checkpoint_skips_what_it_covers() {
    let disk = SimDisk::new(7);
    disk.put_file(&segment_path(&dir(), 1), &packed(&header(1, 1), 1..=2)).unwrap();
    disk.put_file(&segment_path(&dir(), 2), &packed(&header(2, 3), 3..=5)).unwrap();
    disk.put_file(&temp_path(&dir(), 3), &[0u8; 4096]).unwrap();
    let (r, applied) = replay_dir(&disk, 4);
    let r = r.unwrap();
    assert_eq!(applied, vec![4, 5], "records below the checkpoint are not yielded");
    assert_eq!((r.report.segments_skipped, r.report.records_below_checkpoint), (1, 1));
    assert_eq!(r.report.temp_files_removed, 1);
    assert!(disk.read(&temp_path(&dir(), 3)).is_none());
    assert_eq!(r.next_lsn, Lsn::new(6));
}

#[test]
fn a_claim_only_group_frames_nothing_and_a_group_record_takes_no_lsn() {
    let h = header(1, 1);
    let g = h.generation();
    let first = [claim(1, g, 0), write_record(1, g), write_record(2, g)].concat();
    let second = [claim(3, g, 2), write_record(3, g)].concat();
    let marker = claim(4, g, 3);
    let img = image(&h, &[(R0, first), (NEXT, second), (NEXT + GROUP_ALIGN_BYTES, marker)]);
    let disk = SimDisk::new(8);
    disk.put_file(&segment_path(&dir(), 1), &img).unwrap();
    let (r, applied) = replay_dir(&disk, 1);
    let r = r.unwrap();
    assert_eq!((applied, r.claimed, r.next_lsn), (vec![1, 2, 3], Lsn::new(3), Lsn::new(4)));
    match r.tail {
        Tail::Resume { offset, .. } => assert_eq!(offset, NEXT + 2 * GROUP_ALIGN_BYTES),
        other => panic!("expected Resume, got {other:?}"),
    }
}

#[test]
fn padding_shorter_than_a_header_skips_one_more_unit() {
    // A group that ends 4 bytes before a boundary: the writers leave at least a header of
    // zeros, so the next group starts one unit later, and replay must follow it there.
    let h = header(1, 1);
    let g = h.generation();
    let mut first = Vec::new();
    let value = vec![7u8; GROUP_ALIGN_BYTES - 4 - 32 - 4 - 9 - 2];
    encode_write(
        &mut first,
        Lsn::FIRST,
        Ts::FIRST,
        g,
        &[WriteOp::Put { key: b"k1".to_vec(), value: value.into() }],
    );
    assert_eq!(first.len(), GROUP_ALIGN_BYTES - 4);
    let next = super::format::next_group_offset(R0 + first.len());
    assert_eq!(next, R0 + 2 * GROUP_ALIGN_BYTES);
    let disk = SimDisk::new(9);
    disk.put_file(&segment_path(&dir(), 1), &image(&h, &[(R0, first), (next, write_record(2, g))]))
        .unwrap();
    let (r, applied) = replay_dir(&disk, 1);
    assert_eq!((applied, r.unwrap().next_lsn), (vec![1, 2], Lsn::new(3)));
}

#[test]
fn the_tables_say_what_the_fixtures_check() {
    // Spot checks that read as the recovery table in docs/FORMAT.md.
    assert_eq!(
        decide(RecordState::Garbage, Following::AllZero, Horizon::Beyond),
        Decision::CutTail
    );
    assert_eq!(decide(RecordState::Zero, Following::Other, Horizon::Beyond), Decision::CutTail);
    assert_eq!(
        decide_segment(SegmentState::BadHeader, Horizon::Beyond),
        SegmentDecision::Corruption
    );
    assert_eq!(decide_segment(SegmentState::StartsPast, Horizon::Beyond), SegmentDecision::CutLog);
}

#[test]
fn padding_between_groups_never_asks_for_the_horizon() {
    // Reopen cost: the horizon reads the rest of the log, so a scan that asked for it at every
    // padding run between groups was quadratic in the log's length. A segment of many small
    // groups, each on its own unit, must be scanned without asking once.
    let h = header(1, 1);
    let g = h.generation();
    let mut pieces = Vec::new();
    let mut at = R0;
    for lsn in 1..=14u64 {
        pieces.push((at, claim(lsn, g, lsn - 1)));
        let r = write_record(lsn, g);
        pieces.push((at + GROUP_RECORD_BYTES, r.clone()));
        at = super::format::next_group_offset(at + GROUP_RECORD_BYTES + r.len());
    }
    let img = image(&h, &pieces);
    let path = dir().join("wal-0000000000000001.log");
    let mut applied = 0;
    let mut asked = 0;
    let scan = scan_segment(
        &img,
        &h,
        Lsn::FIRST,
        Lsn::FIRST,
        &path,
        &mut |_| applied += 1,
        &mut |_, _| {
            asked += 1;
            Ok(Horizon::Beyond)
        },
    )
    .unwrap();
    assert_eq!((applied, scan.next_lsn, scan.cut), (14, Lsn::new(15), None));
    assert_eq!(asked, 0, "the horizon was asked at a padding run");
}
