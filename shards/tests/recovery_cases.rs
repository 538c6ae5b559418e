//! Every case of the recovery decision tables (`wal::recovery`), built as a real segment image
//! or segment directory and replayed: the outcome must be the table's decision. A case missing
//! here fails `every_record_case_has_a_fixture` / `every_segment_case_has_a_fixture`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use lightning_shards::ingress::WriteOp;
use lightning_shards::wal::format::{
    encode_group_record, encode_write_record, SegmentHeader, GROUP_RECORD_BYTES,
    SEGMENT_HEADER_BYTES,
};
use lightning_shards::wal::reader::{replay, scan_segment, SegmentEnd, Tail};
use lightning_shards::wal::recovery::{
    Decision, Following, RecordState, SegmentDecision, SegmentPosition, SegmentState, RECORD_TABLE,
    SEGMENT_TABLE,
};
use lightning_shards::wal::segment::segment_path;
use lightning_shards::Error;

const SEGMENT_BYTES: usize = 64 * 1024;
const SECTOR: usize = 4096;

fn header(sequence: u64, first_lsn: u64) -> SegmentHeader {
    SegmentHeader { shard_id: 0, sequence, first_lsn, segment_bytes: SEGMENT_BYTES as u64 }
}

fn record(lsn: u64, generation: u32) -> Vec<u8> {
    let ops = vec![WriteOp::Put {
        key: format!("k{lsn}").into_bytes(),
        value: vec![lsn as u8; 40].into(),
    }];
    let mut out = Vec::new();
    encode_write_record(&mut out, lsn, generation, &ops);
    out
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

const R0: usize = SEGMENT_HEADER_BYTES; // where records start
const NEXT: usize = R0 + SECTOR; // the next sector boundary

/// Builds an image where the position `R0` is in `state` and what follows is `following`.
fn record_fixture(state: RecordState, following: Following) -> Vec<u8> {
    let h = header(1, 1);
    let g = h.generation();
    let first = match state {
        RecordState::Valid => record(1, g),
        RecordState::Unexpected => record(5, g),
        RecordState::Zero => Vec::new(),
        RecordState::Garbage => {
            let mut torn = record(1, g);
            torn.truncate(torn.len() - 7); // a record cut short: torn write
            torn
        }
    };
    let after = |lsn| match state {
        RecordState::Valid => lsn + 1,
        _ => lsn,
    };
    let mut pieces = vec![(R0, first.clone())];
    let group = |lsn: u64, durable_before: u64| {
        let mut b = vec![0u8; GROUP_RECORD_BYTES];
        encode_group_record(&mut b, lsn, g, durable_before);
        b.extend_from_slice(&record(lsn, g));
        b
    };
    match following {
        Following::NothingValid => {}
        Following::ExpectedAtNextSector => pieces.push((NEXT, record(after(1), g))),
        Following::ValidFurtherOn => {
            // After a valid record: the next one, packed right behind it (a normal log).
            // Otherwise: off the sector grid and one LSN past the expected one.
            let at = match state {
                RecordState::Valid => R0 + first.len(),
                _ => R0 + first.len().max(24) + 100,
            };
            pieces.push((at, record(2, g)));
        }
        Following::InFlightBeyond => {
            // The next expected LSN never reached the disk, but a later group did, and its
            // GROUP record says nothing past LSN 0 was durable when it was submitted.
            let (at, lsn) = match state {
                RecordState::Valid => (NEXT + SECTOR, 3),
                _ => (NEXT, 6),
            };
            pieces.push((at, group(lsn, 0)));
        }
    }
    image(&h, &pieces)
}

/// The outcome the table's decision implies for the fixture.
fn check_record_case(state: RecordState, following: Following, decision: Decision) {
    let h = header(1, 1);
    let img = record_fixture(state, following);
    let mut applied = Vec::new();
    let result = scan_segment(&img, &h, 1, Path::new("seg"), &mut |lsn, _ops| applied.push(lsn));
    let case = format!("{state:?}/{following:?} -> {decision:?}");
    match decision {
        Decision::Apply => {
            let scan = result.unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(applied.first(), Some(&1), "{case}: first record not applied");
            let end = if following == Following::InFlightBeyond {
                SegmentEnd::TornTail
            } else {
                SegmentEnd::Clean
            };
            assert_eq!(scan.end, end, "{case}");
        }
        Decision::SkipToNextSector => {
            result.unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(applied, vec![1], "{case}: record after the padding not applied");
        }
        Decision::CleanEnd => {
            let scan = result.unwrap_or_else(|e| panic!("{case}: {e}"));
            assert!(applied.is_empty(), "{case}");
            assert_eq!(
                (scan.end, scan.valid_end, scan.next_lsn),
                (SegmentEnd::Clean, R0, 1),
                "{case}"
            );
        }
        Decision::TruncateTornTail => {
            let scan = result.unwrap_or_else(|e| panic!("{case}: {e}"));
            assert!(applied.is_empty(), "{case}");
            assert_eq!((scan.end, scan.valid_end), (SegmentEnd::TornTail, R0), "{case}");
        }
        Decision::Corruption => match result {
            Err(Error::Corruption { file, offset, .. }) => {
                assert_eq!(file, Path::new("seg"), "{case}");
                assert_eq!(offset, R0 as u64, "{case}: corruption must name the first bad offset");
            }
            other => panic!("{case}: expected Corruption, got {other:?} (applied {applied:?})"),
        },
    }
}

#[test]
fn every_record_case_has_a_fixture() {
    for (state, following, decision) in RECORD_TABLE {
        check_record_case(*state, *following, *decision);
    }
}

#[test]
fn a_flipped_bit_in_an_early_record_is_corruption_not_a_short_log() {
    let h = header(1, 1);
    let g = h.generation();
    let mut pieces = Vec::new();
    let mut at = R0;
    for lsn in 1..=5 {
        let r = record(lsn, g);
        pieces.push((at, r.clone()));
        at += r.len();
    }
    let mut img = image(&h, &pieces);
    let second = R0 + record(1, g).len();
    img[second + 30] ^= 0x40;
    match scan_segment(&img, &h, 1, Path::new("seg"), &mut |_, _| {}) {
        Err(Error::Corruption { offset, .. }) => assert_eq!(offset, second as u64),
        other => panic!("expected Corruption, got {other:?}"),
    }
}

/// Writes a segment directory for a segment-table case: segment 1 (valid, LSNs 1..=2), and
/// the case's segment as segment 2 (position Last) or followed by a valid segment 3 (Earlier).
fn segment_fixture(dir: &Path, state: SegmentState, position: SegmentPosition) {
    let write = |seq: u64, bytes: Vec<u8>| std::fs::write(segment_path(dir, seq), bytes).unwrap();
    let valid = |seq: u64, first: u64, n: u64| {
        let h = header(seq, first);
        let mut pieces = Vec::new();
        let mut at = R0;
        for lsn in first..first + n {
            let r = record(lsn, h.generation());
            pieces.push((at, r.clone()));
            at += r.len();
        }
        image(&h, &pieces)
    };
    write(1, valid(1, 1, 2));
    let case = match state {
        SegmentState::Continues => valid(2, 3, 2),
        SegmentState::Gap => valid(2, 9, 2),
        SegmentState::Overlap => valid(2, 2, 2),
        SegmentState::BadHeader => {
            let mut img = valid(2, 3, 2);
            img[20] ^= 0xff;
            img
        }
        SegmentState::Foreign => {
            let h = SegmentHeader { shard_id: 7, ..header(2, 3) };
            image(&h, &[(R0, record(3, h.generation()))])
        }
    };
    write(2, case);
    if position == SegmentPosition::Earlier {
        write(3, valid(3, 5, 1));
    }
}

fn check_segment_case(state: SegmentState, position: SegmentPosition, decision: SegmentDecision) {
    let dir = tempfile::tempdir().unwrap();
    segment_fixture(dir.path(), state, position);
    let case = format!("{state:?}/{position:?} -> {decision:?}");
    let mut applied = Vec::new();
    let result = replay(dir.path(), 0, 1, |lsn, _| applied.push(lsn));
    match decision {
        SegmentDecision::Replay => {
            let r = result.unwrap_or_else(|e| panic!("{case}: {e}"));
            let want: Vec<u64> = (1..r.next_lsn).collect();
            assert_eq!(applied, want, "{case}");
            assert!(r.next_lsn >= 5, "{case}: the case segment was not replayed");
        }
        SegmentDecision::Discard => {
            let r = result.unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(applied, vec![1, 2], "{case}");
            assert!(!segment_path(dir.path(), 2).exists(), "{case}: half-made segment not removed");
            assert_eq!(r.tail, Tail::Fresh { sequence: 2 }, "{case}");
        }
        SegmentDecision::Corruption => match result {
            Err(Error::Corruption { file, .. }) => {
                assert_eq!(file, segment_path(dir.path(), 2), "{case}")
            }
            other => panic!("{case}: expected Corruption, got {other:?}"),
        },
    }
}

#[test]
fn every_segment_case_has_a_fixture() {
    for (state, position, decision) in SEGMENT_TABLE {
        check_segment_case(*state, *position, *decision);
    }
}

#[test]
fn clean_end_resumes_on_the_next_sector() {
    let dir = tempfile::tempdir().unwrap();
    let h = header(1, 1);
    let r = record(1, h.generation());
    std::fs::write(segment_path(dir.path(), 1), image(&h, &[(R0, r.clone())])).unwrap();
    let replayed = replay(dir.path(), 0, 1, |_, _| {}).unwrap();
    assert_eq!(replayed.next_lsn, 2);
    match replayed.tail {
        Tail::Resume { offset, .. } => assert_eq!(offset, R0 + SECTOR),
        other => panic!("expected Resume, got {other:?}"),
    }
}

#[test]
fn torn_tail_starts_a_fresh_segment() {
    let dir = tempfile::tempdir().unwrap();
    let h = header(1, 1);
    let mut torn = record(2, h.generation());
    torn.truncate(10);
    let r1 = record(1, h.generation());
    let len = r1.len();
    std::fs::write(segment_path(dir.path(), 1), image(&h, &[(R0, r1), (R0 + len, torn)])).unwrap();
    let replayed = replay(dir.path(), 0, 1, |_, _| {}).unwrap();
    assert_eq!(replayed.next_lsn, 2);
    assert_eq!(replayed.tail, Tail::Fresh { sequence: 2 });
}

#[test]
fn padding_shorter_than_a_header_skips_one_more_sector() {
    // A group that ends 4 bytes before a sector boundary: the writers leave at least a header of
    // zeros, so the next group starts one sector later, and replay must follow it there.
    let h = header(1, 1);
    let g = h.generation();
    let mut first = Vec::new();
    let value = vec![7u8; SECTOR - 4 - 24 - 4 - 9 - 2];
    encode_write_record(
        &mut first,
        1,
        g,
        &[WriteOp::Put { key: b"k1".to_vec(), value: value.into() }],
    );
    assert_eq!(first.len(), SECTOR - 4);
    let next = lightning_shards::wal::format::next_group_offset(R0 + first.len());
    assert_eq!(next, R0 + 2 * SECTOR);
    let img = image(&h, &[(R0, first), (next, record(2, g))]);
    let mut applied = Vec::new();
    let scan =
        scan_segment(&img, &h, 1, Path::new("seg"), &mut |lsn, _| applied.push(lsn)).unwrap();
    assert_eq!(applied, vec![1, 2]);
    assert_eq!(scan.end, SegmentEnd::Clean);
}

#[test]
fn a_hole_before_a_group_that_saw_it_durable_is_corruption() {
    // The later group says LSN 2 was already durable when it was submitted: LSN 2 missing now
    // means acknowledged data was lost.
    let h = header(1, 1);
    let g = h.generation();
    let r1 = record(1, g);
    let mut later = vec![0u8; GROUP_RECORD_BYTES];
    encode_group_record(&mut later, 3, g, 2);
    later.extend_from_slice(&record(3, g));
    let img = image(&h, &[(R0, r1), (NEXT + SECTOR, later)]);
    match scan_segment(&img, &h, 1, Path::new("seg"), &mut |_, _| {}) {
        Err(Error::Corruption { .. }) => {}
        other => panic!("expected Corruption, got {other:?}"),
    }
}

#[test]
fn group_records_frame_groups_without_taking_lsns() {
    let h = header(1, 1);
    let g = h.generation();
    let mut first = vec![0u8; GROUP_RECORD_BYTES];
    encode_group_record(&mut first, 1, g, 0);
    first.extend_from_slice(&record(1, g));
    first.extend_from_slice(&record(2, g));
    let mut second = vec![0u8; GROUP_RECORD_BYTES];
    encode_group_record(&mut second, 3, g, 2);
    second.extend_from_slice(&record(3, g));
    let img = image(&h, &[(R0, first), (NEXT, second)]);
    let mut applied = Vec::new();
    let scan =
        scan_segment(&img, &h, 1, Path::new("seg"), &mut |lsn, _| applied.push(lsn)).unwrap();
    assert_eq!(applied, vec![1, 2, 3]);
    assert_eq!((scan.end, scan.next_lsn), (SegmentEnd::Clean, 4));
}
