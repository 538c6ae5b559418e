//! The recovery decision table: what replay does at each position of a WAL segment, and for
//! each segment in the chain. Every case lives here, in one place, and a test checks that the
//! tables cover every combination (after TigerBeetle's recovery cases: recovery is a table).
//!
//! Pure data and functions; no I/O. `reader.rs` classifies what it finds and asks `decide`.

/// What the bytes at the current replay position are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordState {
    /// A complete record with a matching checksum, the expected LSN and this segment's
    /// generation.
    Valid,
    /// A complete record with a matching checksum but another LSN or generation than expected.
    Unexpected,
    /// The 24 header bytes are zero: sector padding or the unwritten rest of the segment.
    Zero,
    /// Anything else: a torn write or damaged bytes.
    Garbage,
}

/// What the rest of the segment holds after the current position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Following {
    /// No valid record with an LSN at or above the expected one anywhere after.
    NothingValid,
    /// The next sector boundary starts the valid record with the expected LSN.
    ExpectedAtNextSector,
    /// A valid record with an LSN at or above the expected one lies further on (not at the
    /// next sector boundary, or with a gap in LSNs).
    ValidFurtherOn,
    /// The next group further on starts with a GROUP record saying it was submitted before the
    /// expected LSN was durable: the missing records were in flight, never acknowledged
    /// (acknowledgements are in LSN order), and so is everything after them.
    InFlightBeyond,
}

/// What replay does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Apply the record and move past it.
    Apply,
    /// Padding: move to the next sector boundary and continue.
    SkipToNextSector,
    /// The log ends cleanly here; new writes may continue at the next sector boundary.
    CleanEnd,
    /// A torn, never-acknowledged tail: stop here; new writes go to a fresh segment.
    TruncateTornTail,
    /// Acknowledged records may be damaged or missing: `Error::Corruption` at this offset.
    Corruption,
}

/// Every (record state, what follows) pair and its decision.
pub const RECORD_TABLE: &[(RecordState, Following, Decision)] = {
    use Decision::*;
    use Following::*;
    use RecordState::*;
    &[
        (Valid, NothingValid, Apply),
        (Valid, ExpectedAtNextSector, Apply),
        (Valid, ValidFurtherOn, Apply),
        (Valid, InFlightBeyond, Apply),
        // A checksummed record that does not continue the chain: a gap or a reordering.
        (Unexpected, NothingValid, Corruption),
        (Unexpected, ExpectedAtNextSector, Corruption),
        (Unexpected, ValidFurtherOn, Corruption),
        // Writers place groups back to back: a later group where the expected record should
        // start is never a hole.
        (Unexpected, InFlightBeyond, Corruption),
        (Zero, NothingValid, CleanEnd),
        (Zero, ExpectedAtNextSector, SkipToNextSector),
        // Zeros, then records beyond the next sector or past an LSN gap: lost writes.
        (Zero, ValidFurtherOn, Corruption),
        // A group still in flight at the crash, with a later one written: nothing from here
        // on was acknowledged.
        (Zero, InFlightBeyond, TruncateTornTail),
        (Garbage, NothingValid, TruncateTornTail),
        // Damage followed by valid records is never skipped.
        (Garbage, ExpectedAtNextSector, Corruption),
        (Garbage, ValidFurtherOn, Corruption),
        (Garbage, InFlightBeyond, TruncateTornTail),
    ]
};

/// Looks up the decision for a position. Every combination is in [`RECORD_TABLE`] (tested).
pub fn decide(state: RecordState, following: Following) -> Decision {
    RECORD_TABLE
        .iter()
        .find(|(s, f, _)| *s == state && *f == following)
        .map_or(Decision::Corruption, |(_, _, d)| *d)
}

/// The state of one segment file in the shard's chain of segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SegmentState {
    /// Its header is valid and its first LSN continues the chain.
    Continues,
    /// Its header is valid but its first LSN skips past records the chain expects.
    Gap,
    /// Its header is valid but its first LSN is below what the chain already holds.
    Overlap,
    /// Its header is missing or damaged.
    BadHeader,
    /// Its header is valid but names another shard: a misplaced file.
    Foreign,
}

/// Where a segment sits in the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SegmentPosition {
    /// The newest segment.
    Last,
    /// An older segment, followed by others.
    Earlier,
}

/// What recovery does with a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SegmentDecision {
    /// Replay its records.
    Replay,
    /// Crash during segment creation (before any record could be acknowledged): delete it.
    Discard,
    /// Refuse to open: `Error::Corruption` naming the segment.
    Corruption,
}

/// Every (segment state, position) pair and its decision.
pub const SEGMENT_TABLE: &[(SegmentState, SegmentPosition, SegmentDecision)] = {
    use SegmentDecision::*;
    use SegmentPosition::*;
    use SegmentState::*;
    &[
        (Continues, Last, Replay),
        (Continues, Earlier, Replay),
        (Gap, Last, Corruption),
        (Gap, Earlier, Corruption),
        (Overlap, Last, Corruption),
        (Overlap, Earlier, Corruption),
        // A segment is synced (header, size, directory entry) before its first record is
        // written, so a bad header on the newest segment means creation was interrupted.
        (BadHeader, Last, Discard),
        (BadHeader, Earlier, Corruption),
        (Foreign, Last, Corruption),
        (Foreign, Earlier, Corruption),
    ]
};

/// Looks up the decision for a segment. Every combination is in [`SEGMENT_TABLE`] (tested).
pub fn decide_segment(state: SegmentState, position: SegmentPosition) -> SegmentDecision {
    SEGMENT_TABLE
        .iter()
        .find(|(s, p, _)| *s == state && *p == position)
        .map_or(SegmentDecision::Corruption, |(_, _, d)| *d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const STATES: [RecordState; 4] =
        [RecordState::Valid, RecordState::Unexpected, RecordState::Zero, RecordState::Garbage];
    const FOLLOWING: [Following; 4] = [
        Following::NothingValid,
        Following::ExpectedAtNextSector,
        Following::ValidFurtherOn,
        Following::InFlightBeyond,
    ];
    const SEGMENT_STATES: [SegmentState; 5] = [
        SegmentState::Continues,
        SegmentState::Gap,
        SegmentState::Overlap,
        SegmentState::BadHeader,
        SegmentState::Foreign,
    ];
    const POSITIONS: [SegmentPosition; 2] = [SegmentPosition::Last, SegmentPosition::Earlier];

    #[test]
    fn record_table_is_complete_and_unambiguous() {
        let mut seen = HashSet::new();
        for (s, f, _) in RECORD_TABLE {
            assert!(seen.insert((*s, *f)), "duplicate case {s:?}/{f:?}");
        }
        for s in STATES {
            for f in FOLLOWING {
                assert!(seen.contains(&(s, f)), "missing case {s:?}/{f:?}");
            }
        }
        assert_eq!(seen.len(), STATES.len() * FOLLOWING.len());
    }

    #[test]
    fn segment_table_is_complete_and_unambiguous() {
        let mut seen = HashSet::new();
        for (s, p, _) in SEGMENT_TABLE {
            assert!(seen.insert((*s, *p)), "duplicate case {s:?}/{p:?}");
        }
        for s in SEGMENT_STATES {
            for p in POSITIONS {
                assert!(seen.contains(&(s, p)), "missing case {s:?}/{p:?}");
            }
        }
    }

    #[test]
    fn damage_before_valid_records_is_never_skipped() {
        for f in [Following::ExpectedAtNextSector, Following::ValidFurtherOn] {
            assert_eq!(decide(RecordState::Garbage, f), Decision::Corruption);
        }
        assert_eq!(
            decide(RecordState::Garbage, Following::NothingValid),
            Decision::TruncateTornTail
        );
    }
}
