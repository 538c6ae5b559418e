//! The two numbers every write carries, kept apart by type: its place in a shard's log ([`Lsn`])
//! and its MVCC version ([`Ts`]).
//!
//! Pure values, used on every thread. An LSN orders one shard's log records (consecutive per
//! shard, from 1); it says nothing about visibility. A timestamp is what readers and garbage
//! collection key on: the memtable stores versions by timestamp, a snapshot is a timestamp, the
//! visible watermark is a timestamp. Today each shard draws timestamps from its own counter in
//! LSN order; a process-wide oracle (cross-shard transactions) will hand them out instead, and
//! then a record's timestamp no longer follows from its LSN. Both are in every WRITE record.

use std::fmt;

/// A log sequence number: the position of a WRITE record in its shard's log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(u64);

impl Lsn {
    /// Before the first record: "nothing".
    pub const ZERO: Lsn = Lsn(0);
    /// The first record's LSN.
    pub const FIRST: Lsn = Lsn(1);

    /// The LSN with this number.
    pub const fn new(n: u64) -> Lsn {
        Lsn(n)
    }

    /// The number.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The LSN after this one.
    pub const fn next(self) -> Lsn {
        Lsn(self.0 + 1)
    }

    /// The LSN before this one (`ZERO` stays `ZERO`).
    pub const fn prev(self) -> Lsn {
        Lsn(self.0.saturating_sub(1))
    }

    /// Records from `self` up to and including `last` (0 when `last < self`).
    pub const fn count_to(self, last: Lsn) -> u64 {
        (last.0 + 1).saturating_sub(self.0)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LSN {}", self.0)
    }
}

/// An MVCC timestamp: the version of a committed write, and the point a reader reads at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ts(u64);

impl Ts {
    /// Before every write: a snapshot at `ZERO` sees nothing.
    pub const ZERO: Ts = Ts(0);
    /// The first timestamp a write gets.
    pub const FIRST: Ts = Ts(1);
    /// Above every write: a snapshot at `MAX` sees the newest version of everything.
    pub const MAX: Ts = Ts(u64::MAX);

    /// The timestamp with this number.
    pub const fn new(n: u64) -> Ts {
        Ts(n)
    }

    /// The number.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The timestamp after this one.
    pub const fn next(self) -> Ts {
        Ts(self.0.saturating_add(1))
    }
}

impl fmt::Display for Ts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ts {}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_steps() {
        assert!(Lsn::ZERO < Lsn::FIRST && Lsn::FIRST.next() == Lsn::new(2));
        assert_eq!(Lsn::ZERO.prev(), Lsn::ZERO);
        assert_eq!(Lsn::new(3).count_to(Lsn::new(5)), 3);
        assert_eq!(Lsn::new(6).count_to(Lsn::new(5)), 0);
        assert!(Ts::ZERO < Ts::FIRST && Ts::FIRST < Ts::MAX);
        assert_eq!(Ts::MAX.next(), Ts::MAX);
        assert_eq!(Lsn::new(7).to_string(), "LSN 7");
    }
}
