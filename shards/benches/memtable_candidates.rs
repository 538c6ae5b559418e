//! Memtable candidates for the caller-executes write path (ADR 0003): random and sequential
//! insert, point get, and a 100-entry scan, at 300 K and 5 M keys, one thread.
//!
//! `cargo bench -p lightning_shards --bench memtable_candidates [-- --quick]` (`--quick`: 300 K
//! keys only). Every candidate stores MVCC versions (key, timestamp descending) → value, as the
//! memtable must; the figures are ns per operation, medians of `ROUNDS` rounds.
//!
//! Candidates:
//! - `skiplist+index`: today's memtable (crossbeam skiplist of versions + papaya hash index of
//!   each key's newest version).
//! - `skiplist`: the skiplist alone (a point read seeks the skiplist).
//! - `scc::TreeIndex`: a concurrent B+tree with lock-free reads.
//! - `BTreeMap+RwLock`: a std B-tree behind a reader-writer lock, as a reference (its readers
//!   wait for a writer: not a candidate for the shipped path).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use crossbeam_skiplist::SkipMap;
use lightning_shards::internals::{Lookup, Memtable};
use lightning_shards::{Direction, Ts};

const ROUNDS: usize = 3;
const GETS: u64 = 300_000;
const SCANS: u64 = 20_000;
const SCAN_LEN: usize = 100;

type VKey = (Box<[u8]>, Reverse<u64>);

trait Candidate {
    fn name(&self) -> &'static str;
    fn insert(&self, key: &[u8], ts: u64, value: Arc<[u8]>);
    fn get(&self, key: &[u8]) -> bool;
    /// Visits up to `n` newest versions of distinct keys from `from`; returns how many.
    fn scan(&self, from: &[u8], n: usize) -> usize;
}

struct Current(Memtable);
impl Candidate for Current {
    fn name(&self) -> &'static str {
        "skiplist+index"
    }
    fn insert(&self, key: &[u8], ts: u64, value: Arc<[u8]>) {
        self.0.insert(key, Ts::new(ts), Some(value));
    }
    fn get(&self, key: &[u8]) -> bool {
        matches!(self.0.get(key, Ts::MAX), Lookup::Found(_))
    }
    fn scan(&self, from: &[u8], n: usize) -> usize {
        let c =
            self.0.chunk(Bound::Included(from), Bound::Unbounded, Ts::MAX, Direction::Forward, n);
        c.entries.len()
    }
}

struct Skip(SkipMap<VKey, Arc<[u8]>>);
impl Candidate for Skip {
    fn name(&self) -> &'static str {
        "skiplist"
    }
    fn insert(&self, key: &[u8], ts: u64, value: Arc<[u8]>) {
        self.0.insert((key.into(), Reverse(ts)), value);
    }
    fn get(&self, key: &[u8]) -> bool {
        let probe: VKey = (key.into(), Reverse(u64::MAX));
        self.0.lower_bound(Bound::Included(&probe)).is_some_and(|e| &*e.key().0 == key)
    }
    fn scan(&self, from: &[u8], n: usize) -> usize {
        let probe: VKey = (from.into(), Reverse(u64::MAX));
        let mut last: Option<Box<[u8]>> = None;
        let mut seen = 0;
        for e in self.0.range(probe..) {
            if last.as_deref() == Some(&*e.key().0) {
                continue;
            }
            last = Some(e.key().0.clone());
            seen += 1;
            if seen == n {
                break;
            }
        }
        seen
    }
}

struct Scc(scc::TreeIndex<VKey, Arc<[u8]>>);
impl Candidate for Scc {
    fn name(&self) -> &'static str {
        "scc::TreeIndex"
    }
    fn insert(&self, key: &[u8], ts: u64, value: Arc<[u8]>) {
        let _ = self.0.insert((key.into(), Reverse(ts)), value);
    }
    fn get(&self, key: &[u8]) -> bool {
        let guard = scc::ebr::Guard::new();
        let probe: VKey = (key.into(), Reverse(u64::MAX));
        self.0.range(probe.., &guard).next().is_some_and(|(k, _)| &*k.0 == key)
    }
    fn scan(&self, from: &[u8], n: usize) -> usize {
        let guard = scc::ebr::Guard::new();
        let probe: VKey = (from.into(), Reverse(u64::MAX));
        let mut last: Option<&[u8]> = None;
        let mut seen = 0;
        for (k, _) in self.0.range(probe.., &guard) {
            if last == Some(&*k.0) {
                continue;
            }
            last = Some(&k.0);
            seen += 1;
            if seen == n {
                break;
            }
        }
        seen
    }
}

struct Locked(RwLock<BTreeMap<VKey, Arc<[u8]>>>);
impl Candidate for Locked {
    fn name(&self) -> &'static str {
        "BTreeMap+RwLock"
    }
    fn insert(&self, key: &[u8], ts: u64, value: Arc<[u8]>) {
        self.0.write().unwrap().insert((key.into(), Reverse(ts)), value);
    }
    fn get(&self, key: &[u8]) -> bool {
        let probe: VKey = (key.into(), Reverse(u64::MAX));
        let map = self.0.read().unwrap();
        map.range(probe..).next().is_some_and(|(k, _)| &*k.0 == key)
    }
    fn scan(&self, from: &[u8], n: usize) -> usize {
        let probe: VKey = (from.into(), Reverse(u64::MAX));
        let map = self.0.read().unwrap();
        let mut last: Option<&[u8]> = None;
        let mut seen = 0;
        for (k, _) in map.range(probe..) {
            if last == Some(&*k.0) {
                continue;
            }
            last = Some(&k.0);
            seen += 1;
            if seen == n {
                break;
            }
        }
        seen
    }
}

fn fresh(i: usize) -> Box<dyn Candidate> {
    match i {
        0 => Box::new(Current(Memtable::new())),
        1 => Box::new(Skip(SkipMap::new())),
        2 => Box::new(Scc(scc::TreeIndex::new())),
        _ => Box::new(Locked(RwLock::new(BTreeMap::new()))),
    }
}

/// 16-byte keys; `random` spreads them with a multiplicative hash (a permutation).
fn key(i: u64, random: bool) -> [u8; 16] {
    let k = if random { i.wrapping_mul(0x9e37_79b9_7f4a_7c15) } else { i };
    (u128::from(k) << 8).to_be_bytes()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// ns per op of: insert `n` keys, `GETS` gets of present keys, `SCANS` scans of `SCAN_LEN`.
fn measure(which: usize, n: u64, random: bool) -> [f64; 3] {
    let value: Arc<[u8]> = vec![7u8; 100].into();
    let mut rounds = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..ROUNDS {
        let c = fresh(which);
        let t = Instant::now();
        for i in 0..n {
            c.insert(&key(i, random), i + 1, value.clone());
        }
        rounds[0].push(t.elapsed().as_nanos() as f64 / n as f64);
        let t = Instant::now();
        let mut hits = 0;
        for j in 0..GETS {
            hits += u64::from(c.get(&key(j.wrapping_mul(7919) % n, random)));
        }
        assert_eq!(hits, GETS, "{}", c.name());
        rounds[1].push(t.elapsed().as_nanos() as f64 / GETS as f64);
        let t = Instant::now();
        let mut seen = 0;
        for j in 0..SCANS {
            seen += c.scan(&key(j.wrapping_mul(104_729) % n, random), SCAN_LEN);
        }
        assert!(seen > 0);
        rounds[2].push(t.elapsed().as_nanos() as f64 / SCANS as f64);
    }
    rounds.map(median)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let sizes: &[u64] = if quick { &[300_000] } else { &[300_000, 5_000_000] };
    println!("memtable candidates: ns per operation, median of {ROUNDS} rounds, one thread");
    println!("| candidate | keys | order | insert | get | scan of {SCAN_LEN} |");
    println!("|---|---:|---|---:|---:|---:|");
    for &n in sizes {
        for random in [true, false] {
            for which in 0..4 {
                let name = fresh(which).name();
                let [ins, get, scan] = measure(which, n, random);
                let order = if random { "random" } else { "sequential" };
                println!("| {name} | {n} | {order} | {ins:.0} | {get:.0} | {scan:.0} |");
            }
        }
    }
}
