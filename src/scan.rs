//! Ordered scans across shards: a k-way merge of each shard's ordered stream, forward and
//! backward (`DoubleEndedIterator`), every shard read at one registered database snapshot.
//!
//! Caller-side: the iterator runs on the caller's thread and reads each shard's published
//! memtable directly. Each shard stream is pulled in chunks that start small and double up to
//! `CHUNK_MAX` entries, so a scan holds at most `2 × shards × CHUNK_MAX` entries at a time,
//! however long the range. Keys are unique across shards (each key lives in exactly one), so
//! the merge needs no tie-breaking.

use std::collections::VecDeque;
use std::ops::Bound;

use std::sync::Arc;

use lightning_shards::{Direction, Error, KeyBytes, Result, ScanValue, ShardSnapshot, TreeCursor};

use crate::snapshot::DbSnapshot;

/// First chunk size per shard stream; doubles on every refill.
const CHUNK_MIN: usize = 8;
/// Largest chunk per shard stream.
pub const CHUNK_MAX: usize = 1024;

/// A buffered entry: the key copied inline when short; the value copied out of a memtable, or
/// still in a tree leaf (copied when the entry is handed over).
type Entry = (KeyBytes, ScanValue);

/// Where a stream's next chunk starts in one direction.
#[derive(Clone, Debug)]
enum Cursor {
    /// At the scan's own bound.
    Start,
    /// Strictly after (forward) or before (reverse) this key.
    After(Vec<u8>),
    /// Nothing more in this direction.
    Done,
}

struct Side {
    buf: VecDeque<Entry>,
    cursor: Cursor,
    chunk: usize,
    /// Where the last chunk left the shard's tree: the next one resumes there.
    tree: TreeCursor,
}

impl Side {
    fn new() -> Self {
        Side {
            buf: VecDeque::new(),
            cursor: Cursor::Start,
            chunk: CHUNK_MIN,
            tree: TreeCursor::default(),
        }
    }
}

struct ShardStream {
    snapshot: ShardSnapshot,
    front: Side,
    back: Side,
}

/// An iterator over `(key, value)` pairs in key order, across every shard. Created by
/// `Database::scan`, `range` and `scan_prefix`; `.rev()` walks it backwards.
pub struct DbIterator {
    streams: Vec<ShardStream>,
    /// Keeps what the scan reads from garbage collection.
    _snapshot: Arc<DbSnapshot>,
    lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
    /// Last key returned from the front / back: the two ends must not cross.
    front_last: Option<KeyBytes>,
    back_last: Option<KeyBytes>,
    /// A read that failed, reported by the next call, after which the iterator ends.
    failed: Option<Error>,
    ended: bool,
    /// The shards' first leaves were read ahead, together.
    prefetched: bool,
}

impl DbIterator {
    pub(crate) fn new(
        snapshot: Arc<DbSnapshot>,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
    ) -> Self {
        let streams = snapshot
            .shards()
            .iter()
            .map(|s| ShardStream { snapshot: s.clone(), front: Side::new(), back: Side::new() })
            .collect();
        DbIterator {
            streams,
            _snapshot: snapshot,
            lower,
            upper,
            front_last: None,
            back_last: None,
            failed: None,
            ended: false,
            prefetched: false,
        }
    }

    /// Entries fetched from the shards and not yet returned: never more than
    /// `2 × shards × CHUNK_MAX`, however long the range.
    pub fn buffered(&self) -> usize {
        self.streams.iter().map(|s| s.front.buf.len() + s.back.buf.len()).sum()
    }

    fn refill(&mut self, i: usize, direction: Direction) {
        let lower = self.lower.as_ref().map(Vec::as_slice);
        let upper = self.upper.as_ref().map(Vec::as_slice);
        let s = &mut self.streams[i];
        let side = match direction {
            Direction::Forward => &mut s.front,
            Direction::Reverse => &mut s.back,
        };
        let (lo, hi) = match (&side.cursor, direction) {
            (Cursor::Done, _) => return,
            (Cursor::Start, _) => (lower, upper),
            (Cursor::After(k), Direction::Forward) => (Bound::Excluded(k.as_slice()), upper),
            (Cursor::After(k), Direction::Reverse) => (lower, Bound::Excluded(k.as_slice())),
        };
        let chunk = match s.snapshot.chunk(lo, hi, direction, side.chunk, &mut side.tree) {
            Ok(chunk) => chunk,
            Err(e) => {
                // A read of the shard's tree failed: the iterator reports it and ends.
                side.cursor = Cursor::Done;
                self.failed.get_or_insert(e);
                return;
            }
        };
        side.chunk = (side.chunk * 2).min(CHUNK_MAX);
        side.cursor = match chunk.resume_after {
            Some(k) => Cursor::After(k),
            None => Cursor::Done,
        };
        side.buf.extend(chunk.entries);
    }

    /// Before the first chunks: every shard's leaf at the scan's start is read into its cache
    /// in one batch, so the first chunks do not read one shard after another (a scan with no
    /// bound on the side it starts from starts at each tree's first or last leaf). Each
    /// shard's first chunk then starts at the leaf found. A failed read here is left for the
    /// chunk that needs the leaf to report.
    fn prefetch(&mut self, direction: Direction) {
        self.prefetched = true;
        let start = match direction {
            Direction::Forward => self.lower.as_ref().map(Vec::as_slice),
            Direction::Reverse => self.upper.as_ref().map(Vec::as_slice),
        };
        let parts: Vec<(&ShardSnapshot, Bound<&[u8]>)> =
            self.streams.iter().map(|s| (&s.snapshot, start)).collect();
        let Ok(cursors) = ShardSnapshot::prefetch_across(&parts, direction) else { return };
        for (s, cursor) in self.streams.iter_mut().zip(cursors) {
            match direction {
                Direction::Forward => s.front.tree = cursor,
                Direction::Reverse => s.back.tree = cursor,
            }
        }
    }

    /// Index of the stream whose next entry in `direction` comes first, refilling as needed.
    fn pick(&mut self, direction: Direction) -> Option<usize> {
        if !self.prefetched && self.streams.len() > 1 {
            self.prefetch(direction);
        }
        let mut best: Option<usize> = None;
        for i in 0..self.streams.len() {
            loop {
                let side = side(&self.streams[i], direction);
                if !side.buf.is_empty() || matches!(side.cursor, Cursor::Done) {
                    break;
                }
                self.refill(i, direction);
            }
            let Some((key, _)) = head(&self.streams[i], direction) else { continue };
            let better =
                best.and_then(|b| head(&self.streams[b], direction)).is_none_or(|(bk, _)| {
                    match direction {
                        Direction::Forward => key.as_slice() < bk.as_slice(),
                        Direction::Reverse => key.as_slice() > bk.as_slice(),
                    }
                });
            if better {
                best = Some(i);
            }
        }
        best
    }

    fn take(&mut self, direction: Direction) -> Option<Entry> {
        let i = self.pick(direction)?;
        let entry = match direction {
            Direction::Forward => self.streams[i].front.buf.pop_front(),
            Direction::Reverse => self.streams[i].back.buf.pop_front(),
        }?;
        // Stop where the other end already is: every key between was returned from there.
        let crossed = match direction {
            Direction::Forward => {
                self.back_last.as_ref().is_some_and(|b| entry.0.as_slice() >= b.as_slice())
            }
            Direction::Reverse => {
                self.front_last.as_ref().is_some_and(|f| entry.0.as_slice() <= f.as_slice())
            }
        };
        if crossed {
            for s in &mut self.streams {
                s.front = Side { cursor: Cursor::Done, ..Side::new() };
                s.back = Side { cursor: Cursor::Done, ..Side::new() };
            }
            return None;
        }
        match direction {
            Direction::Forward => self.front_last = Some(entry.0.clone()),
            Direction::Reverse => self.back_last = Some(entry.0.clone()),
        }
        Some(entry)
    }
}

fn side(s: &ShardStream, direction: Direction) -> &Side {
    match direction {
        Direction::Forward => &s.front,
        Direction::Reverse => &s.back,
    }
}

fn head(s: &ShardStream, direction: Direction) -> Option<&Entry> {
    side(s, direction).buf.front()
}

impl Iterator for DbIterator {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.step(Direction::Forward)
    }
}

impl DoubleEndedIterator for DbIterator {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.step(Direction::Reverse)
    }
}

impl DbIterator {
    fn step(&mut self, direction: Direction) -> Option<Result<(Vec<u8>, Vec<u8>)>> {
        if self.ended {
            return None;
        }
        let entry = self.take(direction);
        if let Some(e) = self.failed.take() {
            self.ended = true;
            return Some(Err(e));
        }
        entry.map(|(k, v)| Ok((k.as_slice().to_vec(), v.into_vec())))
    }
}

/// `range`'s bounds, owned.
pub(crate) fn owned_bounds<K: AsRef<[u8]>, R: std::ops::RangeBounds<K>>(
    range: &R,
) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let own = |b: Bound<&K>| match b {
        Bound::Included(k) => Bound::Included(k.as_ref().to_vec()),
        Bound::Excluded(k) => Bound::Excluded(k.as_ref().to_vec()),
        Bound::Unbounded => Bound::Unbounded,
    };
    (own(range.start_bound()), own(range.end_bound()))
}

/// The bounds of every key that starts with `prefix`.
pub(crate) fn prefix_bounds(prefix: &[u8]) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let upper = prefix_successor(prefix).map_or(Bound::Unbounded, Bound::Excluded);
    (Bound::Included(prefix.to_vec()), upper)
}

/// The smallest key greater than every key that starts with `prefix`, if any.
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_successor_cases() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_successor(&[0xff, 0xff]), None);
        assert_eq!(prefix_successor(b""), None);
    }
}
