//! Many threads of mixed operations, each checked against its own `BTreeMap` model after every
//! step (read-your-writes), while scanner threads walk the whole database; at the end the
//! database must equal the union of the models, before and after a reopen.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{collect, open, MODES};
use lightning_db::{Database, WalSyncMode, WriteBatch};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn thread_key(t: usize, k: u64) -> Vec<u8> {
    format!("t{t:02}/{k:05}").into_bytes()
}

/// One worker: random puts, deletes, batches, gets and prefix scans on its own keys.
fn worker(db: &Database, t: usize, ops: usize, seed: u64) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut rng = Rng(seed | 1);
    let mut model = BTreeMap::new();
    for step in 0..ops {
        let k = thread_key(t, rng.below(300));
        match rng.below(10) {
            0..=3 => {
                let v = format!("{t}:{step}").into_bytes();
                db.put(&k, &v).unwrap();
                model.insert(k.clone(), v);
            }
            4 => {
                db.delete(&k).unwrap();
                model.remove(&k);
            }
            5 => {
                let mut b = WriteBatch::new();
                for j in 0..rng.below(8) + 1 {
                    let bk = thread_key(t, rng.below(300));
                    if j % 3 == 2 {
                        b.delete(&bk).unwrap();
                        model.remove(&bk);
                    } else {
                        let v = format!("{t}:{step}:{j}").into_bytes();
                        b.put(&bk, &v).unwrap();
                        model.insert(bk, v);
                    }
                }
                db.write_batch(&b).unwrap();
            }
            6 => {
                let prefix = format!("t{t:02}/").into_bytes();
                let got = collect(db.scan_prefix(&prefix).unwrap());
                let want: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                assert_eq!(got, want, "thread {t} step {step}: prefix scan differs from the model");
            }
            _ => {
                // Read-your-writes: the last acknowledged write to this key is what we read.
                assert_eq!(db.get(&k).unwrap(), model.get(&k).cloned(), "thread {t} step {step}");
            }
        }
    }
    model
}

fn run(mode: WalSyncMode, threads: usize, ops: usize) {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(open(dir.path(), mode));
    let stop = Arc::new(AtomicBool::new(false));
    let scanner = {
        let (db, stop) = (db.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut scans = 0;
            while !stop.load(Ordering::Relaxed) {
                let keys: Vec<Vec<u8>> =
                    collect(db.scan(None, None).unwrap()).into_iter().map(|(k, _)| k).collect();
                assert!(keys.windows(2).all(|w| w[0] < w[1]), "a scan returned keys out of order");
                let rev: Vec<Vec<u8>> = db
                    .range(b"t00".as_slice()..b"t99")
                    .unwrap()
                    .rev()
                    .map(|r| r.unwrap().0)
                    .collect();
                assert!(
                    rev.windows(2).all(|w| w[0] > w[1]),
                    "a reverse scan returned keys out of order"
                );
                scans += 1;
            }
            scans
        })
    };
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let db = db.clone();
            std::thread::spawn(move || worker(&db, t, ops, 0x9e37_79b9 * (t as u64 + 1)))
        })
        .collect();
    let mut union = BTreeMap::new();
    for w in workers {
        union.extend(w.join().unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    assert!(scanner.join().unwrap() > 0);
    let want: Vec<_> = union.into_iter().collect();
    assert_eq!(collect(db.scan(None, None).unwrap()), want, "{mode:?}: final state differs");
    Arc::try_unwrap(db).unwrap().close().unwrap();
    let db = open(dir.path(), mode);
    assert_eq!(collect(db.scan(None, None).unwrap()), want, "{mode:?}: state after reopen differs");
}

#[test]
fn mixed_threads_match_the_model_in_every_mode() {
    for mode in MODES {
        let ops = if mode == WalSyncMode::Sync { 400 } else { 3000 };
        run(mode, 6, ops);
    }
}

#[test]
fn many_threads_on_one_shard() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        lightning_db::LightningDbConfig { shards: 1, ..common::small_config(WalSyncMode::Normal) };
    let db = Arc::new(Database::open(dir.path(), config).unwrap());
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let db = db.clone();
            std::thread::spawn(move || worker(&db, t, 1500, 7 + t as u64))
        })
        .collect();
    let mut union = BTreeMap::new();
    for h in handles {
        union.extend(h.join().unwrap());
    }
    assert_eq!(collect(db.scan(None, None).unwrap()), union.into_iter().collect::<Vec<_>>());
}

#[test]
fn overwrites_keep_memory_bounded_by_garbage_collection() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), WalSyncMode::Normal);
    for round in 0..20_000u64 {
        db.put(b"hot", round.to_le_bytes()).unwrap();
    }
    assert_eq!(db.get(b"hot").unwrap(), Some(19_999u64.to_le_bytes().to_vec()));
    // A scan after the churn sees exactly one version.
    assert_eq!(collect(db.scan(None, None).unwrap()).len(), 1);
    // Old versions are collected once no snapshot can see them (a few may await the next turn).
    let mut versions = u64::MAX;
    for _ in 0..200 {
        versions = db.memory_usage().versions;
        if versions < 100 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(versions < 100, "{versions} versions of one key survived collection");
}
