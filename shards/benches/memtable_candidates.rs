//! Memtable candidates for the caller-executes write path (ADR 0003): random and sequential
//! insert, overwrite, point get, and a 100-entry scan, at 300 K and 5 M keys, one thread.
//!
//! `cargo bench -p lightning_shards --bench memtable_candidates [-- --quick]` (`--quick`: 300 K
//! keys only; `--keys N`: N keys only; `--only I`: candidate I only, 0-4 in the order below).
//! Every candidate stores MVCC versions (key, timestamp descending) → value, as the memtable
//! must, with 16-byte keys and 100-byte values; the figures are ns per operation, medians of
//! `ROUNDS` rounds, each on a fresh structure.
//!
//! Candidates:
//! - `btree+chains`: the shipped memtable (a B+tree of keys with one writer and optimistic
//!   readers, each key's versions in a list).
//! - `skiplist+index`: the memtable before ADR 0003 (a crossbeam skiplist of every version plus
//!   a papaya hash index of each key's newest version), rebuilt here as it was.
//! - `skiplist`: the skiplist alone (a point read seeks it).
//! - `scc::TreeIndex`: a concurrent B+tree with lock-free reads. Its `range` from a lower bound
//!   (2.4.0) walks from the leftmost leaf, so a seek costs O(n): it runs at 20 K keys at most.
//! - `BTreeMap+RwLock`: a std B-tree behind a reader-writer lock, as a reference (its readers
//!   wait for a writer: not a candidate for the shipped path).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use crossbeam_skiplist::SkipMap;
use lightning_shards::internals::{Lookup, Memtable, MemtableWriter};
use lightning_shards::{Direction, Ts};

const ROUNDS: usize = 3;
const GETS: u64 = 300_000;
const SCANS: u64 = 20_000;
const SCAN_LEN: usize = 100;
/// The largest data set `scc::TreeIndex` is run at (its seeks are linear).
const SCC_MAX_KEYS: u64 = 20_000;

/// A key stored inline, ordered as its bytes (as the old memtable's `KeyBytes`).
#[derive(Clone, PartialEq, Eq, Hash)]
struct InlineKey {
    len: u8,
    buf: [u8; 22],
}

impl InlineKey {
    fn new(k: &[u8]) -> Self {
        let mut buf = [0u8; 22];
        buf[..k.len()].copy_from_slice(k);
        InlineKey { len: k.len() as u8, buf }
    }
    fn as_slice(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

impl Ord for InlineKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}

impl PartialOrd for InlineKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

type VKey = (InlineKey, Reverse<u64>);

fn probe(key: &[u8]) -> VKey {
    (InlineKey::new(key), Reverse(u64::MAX))
}

trait Candidate {
    fn name(&self) -> &'static str;
    fn insert(&mut self, key: &[u8], ts: u64, value: Arc<[u8]>);
    fn get(&self, key: &[u8]) -> bool;
    /// Visits up to `n` newest versions of distinct keys from `from`; returns how many.
    fn scan(&self, from: &[u8], n: usize) -> usize;
}

struct Shipped(Arc<Memtable>, MemtableWriter);
impl Candidate for Shipped {
    fn name(&self) -> &'static str {
        "btree+chains"
    }
    fn insert(&mut self, key: &[u8], ts: u64, value: Arc<[u8]>) {
        self.1.insert(key, Ts::new(ts), Some(&value));
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

/// Distinct keys among the first versions of `iter`, up to `n`.
fn distinct<'a>(iter: impl Iterator<Item = &'a [u8]>, n: usize) -> usize {
    let mut last: Option<&[u8]> = None;
    let mut seen = 0;
    for k in iter {
        if last == Some(k) {
            continue;
        }
        last = Some(k);
        seen += 1;
        if seen == n {
            break;
        }
    }
    seen
}

type Newest = papaya::HashMap<InlineKey, (u64, Option<Arc<[u8]>>), foldhash::fast::RandomState>;

struct SkipIndex {
    map: SkipMap<VKey, Option<Arc<[u8]>>>,
    latest: Newest,
}
impl Candidate for SkipIndex {
    fn name(&self) -> &'static str {
        "skiplist+index"
    }
    fn insert(&mut self, key: &[u8], ts: u64, value: Arc<[u8]>) {
        let k = InlineKey::new(key);
        self.map.insert((k.clone(), Reverse(ts)), Some(value.clone()));
        self.latest.pin().insert(k, (ts, Some(value)));
    }
    fn get(&self, key: &[u8]) -> bool {
        self.latest.pin().get(&InlineKey::new(key)).is_some_and(|(_, v)| v.is_some())
    }
    fn scan(&self, from: &[u8], n: usize) -> usize {
        let entries = self.map.range(probe(from)..);
        let mut out: Vec<(InlineKey, Arc<[u8]>)> = Vec::with_capacity(n);
        for e in entries {
            if out.last().is_some_and(|(k, _)| *k == e.key().0) {
                continue;
            }
            if let Some(v) = e.value() {
                out.push((e.key().0.clone(), v.clone()));
            }
            if out.len() == n {
                break;
            }
        }
        out.len()
    }
}

struct Skip(SkipMap<VKey, Arc<[u8]>>);
impl Candidate for Skip {
    fn name(&self) -> &'static str {
        "skiplist"
    }
    fn insert(&mut self, key: &[u8], ts: u64, value: Arc<[u8]>) {
        self.0.insert((InlineKey::new(key), Reverse(ts)), value);
    }
    fn get(&self, key: &[u8]) -> bool {
        self.0
            .lower_bound(Bound::Included(&probe(key)))
            .is_some_and(|e| e.key().0.as_slice() == key)
    }
    fn scan(&self, from: &[u8], n: usize) -> usize {
        let entries: Vec<_> = self.0.range(probe(from)..).take(n * 2).collect();
        distinct(entries.iter().map(|e| e.key().0.as_slice()), n)
    }
}

struct Scc(scc::TreeIndex<VKey, Arc<[u8]>>);
impl Candidate for Scc {
    fn name(&self) -> &'static str {
        "scc::TreeIndex"
    }
    fn insert(&mut self, key: &[u8], ts: u64, value: Arc<[u8]>) {
        let _ = self.0.insert((InlineKey::new(key), Reverse(ts)), value);
    }
    fn get(&self, key: &[u8]) -> bool {
        let guard = scc::ebr::Guard::new();
        self.0.range(probe(key).., &guard).next().is_some_and(|(k, _)| k.0.as_slice() == key)
    }
    fn scan(&self, from: &[u8], n: usize) -> usize {
        let guard = scc::ebr::Guard::new();
        distinct(self.0.range(probe(from).., &guard).map(|(k, _)| k.0.as_slice()), n)
    }
}

struct Locked(RwLock<BTreeMap<VKey, Arc<[u8]>>>);
impl Candidate for Locked {
    fn name(&self) -> &'static str {
        "BTreeMap+RwLock"
    }
    fn insert(&mut self, key: &[u8], ts: u64, value: Arc<[u8]>) {
        self.0.write().unwrap().insert((InlineKey::new(key), Reverse(ts)), value);
    }
    fn get(&self, key: &[u8]) -> bool {
        let map = self.0.read().unwrap();
        map.range(probe(key)..).next().is_some_and(|(k, _)| k.0.as_slice() == key)
    }
    fn scan(&self, from: &[u8], n: usize) -> usize {
        let map = self.0.read().unwrap();
        distinct(map.range(probe(from)..).map(|(k, _)| k.0.as_slice()), n)
    }
}

const NAMES: [&str; 5] =
    ["btree+chains", "skiplist+index", "skiplist", "scc::TreeIndex", "BTreeMap+RwLock"];

fn fresh(i: usize) -> Box<dyn Candidate> {
    match i {
        0 => {
            let (m, w, _) = Memtable::create();
            Box::new(Shipped(m, w))
        }
        1 => Box::new(SkipIndex {
            map: SkipMap::new(),
            latest: papaya::HashMap::builder()
                .hasher(foldhash::fast::RandomState::default())
                .resize_mode(papaya::ResizeMode::Blocking)
                .build(),
        }),
        2 => Box::new(Skip(SkipMap::new())),
        3 => Box::new(Scc(scc::TreeIndex::new())),
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

/// ns per op of: insert `n` keys, `GETS` gets of present keys, `SCANS` scans of `SCAN_LEN`,
/// `GETS` overwrites of present keys.
fn measure(which: usize, n: u64, random: bool) -> [f64; 4] {
    let value: Arc<[u8]> = vec![7u8; 100].into();
    let mut rounds = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..ROUNDS {
        let mut c = fresh(which);
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
        let t = Instant::now();
        for j in 0..GETS {
            c.insert(&key(j.wrapping_mul(7919) % n, random), n + j + 1, value.clone());
        }
        rounds[3].push(t.elapsed().as_nanos() as f64 / GETS as f64);
        drop(c); // after the clock stopped
    }
    rounds.map(median)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let keys: Option<u64> =
        args.iter().position(|a| a == "--keys").and_then(|i| args.get(i + 1)?.parse().ok());
    let only: Option<usize> =
        args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1)?.parse().ok());
    let sizes: Vec<u64> = match keys {
        Some(n) => vec![n],
        None if quick => vec![300_000],
        None => vec![300_000, 5_000_000],
    };
    println!("memtable candidates: ns per operation, median of {ROUNDS} rounds, one thread");
    println!("| candidate | keys | order | insert | get | scan of {SCAN_LEN} | overwrite |");
    println!("|---|---:|---|---:|---:|---:|---:|");
    for &n in &sizes {
        for random in [true, false] {
            let order = if random { "random" } else { "sequential" };
            for which in (0..NAMES.len()).filter(|w| only.is_none_or(|o| o == *w)) {
                let name = NAMES[which];
                if which == 3 && n > SCC_MAX_KEYS {
                    println!("| {name} | {n} | {order} | skipped: O(n) seeks | | | |");
                    continue;
                }
                let [ins, get, scan, over] = measure(which, n, random);
                println!(
                    "| {name} | {n} | {order} | {ins:.0} | {get:.0} | {scan:.0} | {over:.0} |"
                );
            }
        }
    }
}
