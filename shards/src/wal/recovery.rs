//! The recovery decision tables: what replay does at each position of a WAL segment, and with
//! each segment of the chain. Every case lives here, in one place, and tests check that the
//! tables cover every combination and that each row has a fixture (`wal/tests`).
//!
//! The principle: a torn tail can only be what was in flight when the process or the machine
//! stopped, and that is never durable. Replay knows how far the log was durable from the
//! *durable claims* it finds: every GROUP record says which LSN was durable when it was made
//! (`record.rs`), the writers put one at the start of every group on a fresh sector, an idle
//! shard writes one within `sync_interval_ms`, and a clean close writes one for everything.
//! Damage at an LSN that a claim (anywhere later in the log) covers, or that lies below the
//! checkpoint replay started from, is `Error::Corruption`; damage past every claim is a torn
//! tail, cut, logged and counted. Records that are durable but that no claim covers yet (those
//! synced since the newest claim was written) can only be lost to media damage, never to a
//! crash, since durable bytes are never rewritten; such damage is cut like a torn tail.
//!
//! Pure data and functions; no I/O. `reader.rs` classifies what it finds and asks.

/// What the bytes at the current replay position are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordState {
    /// A complete WRITE record with a matching checksum, the expected LSN and this segment's
    /// generation.
    Valid,
    /// A complete GROUP record framing the expected LSN (a durable claim).
    Claim,
    /// A complete record with a matching checksum but another LSN, generation or an unknown
    /// kind: it does not continue the log.
    Unexpected,
    /// The header bytes are zero: sector padding or the unwritten rest of the segment.
    Zero,
    /// Anything else: a torn write or damaged bytes.
    Garbage,
}

/// What the rest of the segment holds after the current position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Following {
    /// Every byte to the end of the segment is zero.
    AllZero,
    /// The next group offset starts the record the log expects next.
    PaddingThenExpected,
    /// Anything else: bytes that are not zero (records further on, or junk).
    Other,
}

/// Whether the log was durable at the expected LSN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Horizon {
    /// A durable claim at or past the expected LSN exists, or the LSN is below the checkpoint:
    /// the record must be there.
    Covered,
    /// No claim reaches the expected LSN: what follows was never known durable.
    Beyond,
}

/// What replay does at a position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Apply the record and move past it.
    Apply,
    /// Note the durable claim and move past it.
    NoteClaim,
    /// Padding: move to the next group offset and continue.
    SkipPadding,
    /// The segment's records end here, cleanly; the chain decides what comes next.
    EndOfSegment,
    /// A torn tail: the log ends here; nothing from here on is applied.
    CutTail,
    /// Durable records are damaged or missing: `Error::Corruption` at this offset.
    Corruption,
}

/// Every (record state, what follows, horizon) triple and its decision.
pub const RECORD_TABLE: &[(RecordState, Following, Horizon, Decision)] = {
    use Decision::*;
    use Following::*;
    use Horizon::*;
    use RecordState::*;
    &[
        (Valid, AllZero, Covered, Apply),
        (Valid, AllZero, Beyond, Apply),
        (Valid, PaddingThenExpected, Covered, Apply),
        (Valid, PaddingThenExpected, Beyond, Apply),
        (Valid, Other, Covered, Apply),
        (Valid, Other, Beyond, Apply),
        (Claim, AllZero, Covered, NoteClaim),
        (Claim, AllZero, Beyond, NoteClaim),
        (Claim, PaddingThenExpected, Covered, NoteClaim),
        (Claim, PaddingThenExpected, Beyond, NoteClaim),
        (Claim, Other, Covered, NoteClaim),
        (Claim, Other, Beyond, NoteClaim),
        // A checksummed record that does not continue the log: writers never place one (files
        // are fresh, never rewritten), so no crash leaves one.
        (Unexpected, AllZero, Covered, Corruption),
        (Unexpected, AllZero, Beyond, Corruption),
        (Unexpected, PaddingThenExpected, Covered, Corruption),
        (Unexpected, PaddingThenExpected, Beyond, Corruption),
        (Unexpected, Other, Covered, Corruption),
        (Unexpected, Other, Beyond, Corruption),
        // Zeros to the end: the segment's records end (rollover, or the end of the log).
        (Zero, AllZero, Covered, EndOfSegment),
        (Zero, AllZero, Beyond, EndOfSegment),
        (Zero, PaddingThenExpected, Covered, SkipPadding),
        (Zero, PaddingThenExpected, Beyond, SkipPadding),
        // A hole with bytes after it: lost durable records, or sectors of an unsynced tail
        // that a power loss kept out of order.
        (Zero, Other, Covered, Corruption),
        (Zero, Other, Beyond, CutTail),
        // Damage: never skipped. Durable, it is corruption; past every claim, a torn tail.
        (Garbage, AllZero, Covered, Corruption),
        (Garbage, AllZero, Beyond, CutTail),
        (Garbage, PaddingThenExpected, Covered, Corruption),
        (Garbage, PaddingThenExpected, Beyond, CutTail),
        (Garbage, Other, Covered, Corruption),
        (Garbage, Other, Beyond, CutTail),
    ]
};

/// Looks up the decision for a position. Every combination is in [`RECORD_TABLE`] (tested).
pub fn decide(state: RecordState, following: Following, horizon: Horizon) -> Decision {
    RECORD_TABLE
        .iter()
        .find(|(s, f, h, _)| *s == state && *f == following && *h == horizon)
        .map_or(Decision::Corruption, |(_, _, _, d)| *d)
}

/// The state of one segment file, given what the chain expects next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SegmentState {
    /// Its header is valid and its first LSN is the one the chain expects.
    Continues,
    /// Its header is valid but it starts past the LSN the chain expects: records are missing.
    StartsPast,
    /// Its header is valid but it starts below what the chain already holds.
    StartsBelow,
    /// It and everything in it lie below the checkpoint replay starts from.
    BelowCheckpoint,
    /// Its header is missing or damaged. Segments are renamed into place only once their
    /// header is durable, so this is damage, not an interrupted creation.
    BadHeader,
    /// Its header is valid but of another format version.
    OtherVersion,
    /// Its header is valid but names another shard, or another sequence than its file name.
    Misplaced,
}

/// What recovery does with a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SegmentDecision {
    /// Replay its records.
    Replay,
    /// Do not read it: the checkpoint covers it.
    Skip,
    /// The log ends before it: set it and every later segment aside (`wal-N.log.cut`), unread.
    CutLog,
    /// Refuse to open: `Error::Corruption` naming the segment.
    Corruption,
    /// Refuse to open: `Error::IncompatibleVersion`.
    Incompatible,
}

/// Every (segment state, horizon) pair and its decision.
pub const SEGMENT_TABLE: &[(SegmentState, Horizon, SegmentDecision)] = {
    use Horizon::*;
    use SegmentDecision::*;
    use SegmentState::*;
    &[
        (Continues, Covered, Replay),
        (Continues, Beyond, Replay),
        // A hole between segments: the tail of the previous one was lost. Durable, corruption;
        // past every claim, the log ends at the hole (a power loss during a rollover).
        (StartsPast, Covered, Corruption),
        (StartsPast, Beyond, CutLog),
        (StartsBelow, Covered, Corruption),
        (StartsBelow, Beyond, Corruption),
        (BelowCheckpoint, Covered, Skip),
        (BelowCheckpoint, Beyond, Skip),
        (BadHeader, Covered, Corruption),
        (BadHeader, Beyond, Corruption),
        (OtherVersion, Covered, Incompatible),
        (OtherVersion, Beyond, Incompatible),
        (Misplaced, Covered, Corruption),
        (Misplaced, Beyond, Corruption),
    ]
};

/// Looks up the decision for a segment. Every combination is in [`SEGMENT_TABLE`] (tested).
pub fn decide_segment(state: SegmentState, horizon: Horizon) -> SegmentDecision {
    SEGMENT_TABLE
        .iter()
        .find(|(s, h, _)| *s == state && *h == horizon)
        .map_or(SegmentDecision::Corruption, |(_, _, d)| *d)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashSet;

    pub(crate) const STATES: [RecordState; 5] = [
        RecordState::Valid,
        RecordState::Claim,
        RecordState::Unexpected,
        RecordState::Zero,
        RecordState::Garbage,
    ];
    pub(crate) const FOLLOWING: [Following; 3] =
        [Following::AllZero, Following::PaddingThenExpected, Following::Other];
    pub(crate) const HORIZONS: [Horizon; 2] = [Horizon::Covered, Horizon::Beyond];
    pub(crate) const SEGMENT_STATES: [SegmentState; 7] = [
        SegmentState::Continues,
        SegmentState::StartsPast,
        SegmentState::StartsBelow,
        SegmentState::BelowCheckpoint,
        SegmentState::BadHeader,
        SegmentState::OtherVersion,
        SegmentState::Misplaced,
    ];

    #[test]
    fn record_table_is_complete_and_unambiguous() {
        let mut seen = HashSet::new();
        for (s, f, h, _) in RECORD_TABLE {
            assert!(seen.insert((*s, *f, *h)), "duplicate case {s:?}/{f:?}/{h:?}");
        }
        assert_eq!(seen.len(), STATES.len() * FOLLOWING.len() * HORIZONS.len());
    }

    #[test]
    fn segment_table_is_complete_and_unambiguous() {
        let mut seen = HashSet::new();
        for (s, h, _) in SEGMENT_TABLE {
            assert!(seen.insert((*s, *h)), "duplicate case {s:?}/{h:?}");
        }
        assert_eq!(seen.len(), SEGMENT_STATES.len() * HORIZONS.len());
    }

    #[test]
    fn durable_damage_is_never_cut() {
        for s in [RecordState::Unexpected, RecordState::Garbage] {
            for f in FOLLOWING {
                assert_eq!(decide(s, f, Horizon::Covered), Decision::Corruption, "{s:?}/{f:?}");
            }
        }
        assert_eq!(
            decide(RecordState::Zero, Following::Other, Horizon::Covered),
            Decision::Corruption
        );
        for s in SEGMENT_STATES {
            let d = decide_segment(s, Horizon::Covered);
            assert_ne!(d, SegmentDecision::CutLog, "{s:?}: nothing durable is set aside");
        }
    }
}
