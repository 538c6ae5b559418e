//! Storage below the memtable: memtables frozen and flushed into each shard's on-disk tree,
//! reads across memtables and the tree, the WAL removed behind the checkpoints, snapshots that
//! outlive flushes, and crashes and power losses during flushes on the simulated disk.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::{collect, hostile::segment_count, small_config, MODES};
use lightning_db::sim::SimDisk;
use lightning_db::{Database, LightningDbConfig, WalSyncMode};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// Small memtables, so a few thousand writes flush many times.
fn config(mode: WalSyncMode) -> LightningDbConfig {
    LightningDbConfig { shards: 2, memtable_bytes: 128 * 1024, ..small_config(mode) }
}

fn key(i: u64) -> Vec<u8> {
    format!("k{:06}", i.wrapping_mul(7919) % 1_000_000).into_bytes()
}

fn value(i: u64, round: u64) -> Vec<u8> {
    let mut v = format!("v{i}.{round}:").into_bytes();
    // Mostly short, some past a quarter page (overflow extents).
    let len = if i.is_multiple_of(97) { 3000 } else { 60 + (i % 80) as usize };
    v.resize(len, b'a' + (round % 26) as u8);
    v
}

/// Every way of reading agrees with `model`.
fn check(db: &Database, model: &Model, context: &str) {
    let scanned = collect(db.scan(None, None).unwrap());
    let expected: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(scanned.len(), expected.len(), "{context}: scan length");
    assert!(scanned == expected, "{context}: scan differs from the model");
    let mut reversed = collect(db.scan(None, None).unwrap().rev());
    reversed.reverse();
    assert!(reversed == expected, "{context}: reverse scan differs");
    for (k, v) in model.iter().step_by(13) {
        assert_eq!(db.get(k).unwrap().as_ref(), Some(v), "{context}: get");
    }
    // Present keys, and keys written once and deleted since (or never written).
    let mut keys: Vec<Vec<u8>> = model.keys().step_by(29).cloned().collect();
    keys.extend((0..3000u64).step_by(11).map(key));
    let got = db.multi_get(&keys).unwrap();
    assert!(got.iter().zip(&keys).all(|(g, k)| g.as_ref() == model.get(k)), "{context}: multi_get");
    assert_eq!(db.get(b"never-written").unwrap(), None);
    check_ranges(db, model, context);
}

/// Bounded ranges, forward and backward, whole and cut short, agree with `model`: each
/// shard's chunks resume inside its tree and memtables at many points.
fn check_ranges(db: &Database, model: &Model, context: &str) {
    let keys: Vec<&Vec<u8>> = model.keys().collect();
    if keys.is_empty() {
        return;
    }
    for (n, step) in [(0usize, 7usize), (3, 101), (40, 997), (1, 1499)] {
        let lo = keys[n.min(keys.len() - 1)].clone();
        let hi = keys[(n + step).min(keys.len() - 1)].clone();
        let want: Vec<_> =
            model.range(lo.clone()..hi.clone()).map(|(k, v)| (k.clone(), v.clone())).collect();
        let got = collect(db.range(lo.clone()..hi.clone()).unwrap());
        assert!(got == want, "{context}: range {n}+{step}");
        let mut back = collect(db.range(lo.clone()..hi.clone()).unwrap().rev());
        back.reverse();
        assert!(back == want, "{context}: reverse range {n}+{step}");
        for take in [1, 9, 33] {
            let got: Vec<_> =
                db.scan(Some(&lo), None).unwrap().take(take).collect::<Result<_, _>>().unwrap();
            let want: Vec<_> =
                model.range(lo.clone()..).take(take).map(|(k, v)| (k.clone(), v.clone())).collect();
            assert!(got == want, "{context}: {take} from {n}");
        }
    }
}

/// Overwrites and deletes over 3000 keys, 12 rounds.
fn churn(db: &Database, model: &mut Model, rounds: std::ops::Range<u64>) {
    for round in rounds {
        for i in 0..3000u64 {
            if (i + round) % 11 == 0 {
                db.delete(key(i)).unwrap();
                model.remove(&key(i));
            } else if (i + round) % 3 != 0 {
                db.put(key(i), value(i, round)).unwrap();
                model.insert(key(i), value(i, round));
            }
        }
    }
}

#[test]
fn flushed_data_reads_back_everywhere_and_the_wal_shrinks() {
    for mode in MODES {
        let dir = tempfile::tempdir().unwrap();
        let mut model = Model::new();
        {
            let db = Database::open(dir.path(), config(mode)).unwrap();
            churn(&db, &mut model, 0..12);
            let stats = db.stats().unwrap().total();
            assert!(stats.flush.flushes >= 4, "{mode:?}: {:?}", stats.flush);
            assert!(stats.flush.segments_removed > 0, "{mode:?}: {:?}", stats.flush);
            check(&db, &model, &format!("{mode:?} before reopen"));
            assert!(db.verify().unwrap() > 0);
            // The log holds about what the memtables do, not all 12 rounds. (`Sync` writes a
            // 4 KiB unit per group, and one thread's puts are one record per group: ~70
            // segments of 1 MiB per shard without removal.)
            let most = if mode == WalSyncMode::Sync { 12 } else { 3 };
            for shard in 0..2 {
                let segments = segment_count(dir.path(), shard);
                assert!(segments <= most, "{mode:?}: shard {shard} kept {segments} segments");
            }
            db.close().unwrap();
        }
        let db = Database::open(dir.path(), config(mode)).unwrap();
        let replayed: u64 = db.start_reports().iter().map(|r| r.replayed_records).sum();
        assert!(replayed < 12 * 3000 / 2, "{mode:?}: replayed {replayed} records");
        check(&db, &model, &format!("{mode:?} after reopen"));
        churn(&db, &mut model, 12..14);
        check(&db, &model, &format!("{mode:?} writing on after reopen"));
    }
}

#[test]
fn a_snapshot_and_a_scan_taken_before_flushes_read_what_they_saw() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path(), config(WalSyncMode::Normal)).unwrap();
    let mut model = Model::new();
    churn(&db, &mut model, 0..2);
    let snapshot = db.snapshot().unwrap();
    let mut scan = db.scan(None, None).unwrap();
    let first = scan.next().unwrap().unwrap();
    let before = model.clone();
    let flushes = db.stats().unwrap().total().flush.flushes;
    churn(&db, &mut model, 2..10);
    assert!(db.stats().unwrap().total().flush.flushes >= flushes + 3);
    // The snapshot still reads the old values, by key and by scan.
    for (k, v) in before.iter().step_by(17) {
        assert_eq!(snapshot.get(k).unwrap().as_ref(), Some(v));
    }
    let old = collect(snapshot.scan(None, None).unwrap());
    assert!(old == before.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<Vec<_>>());
    // So does the scan that was already running.
    let mut rest = vec![first];
    rest.extend(collect(scan));
    assert!(rest == old, "a scan begun before the flushes changed under them");
    drop(snapshot);
    check(&db, &model, "after the snapshot was dropped");
}

#[test]
fn transactions_stay_correct_across_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path(), config(WalSyncMode::Normal)).unwrap();
    const ACCOUNTS: u64 = 50;
    let account = |i: u64| format!("acct{i:03}").into_bytes();
    for i in 0..ACCOUNTS {
        db.put(account(i), 100u64.to_le_bytes()).unwrap();
    }
    let balance = |v: Option<Vec<u8>>| u64::from_le_bytes(v.unwrap().try_into().unwrap());
    std::thread::scope(|s| {
        for t in 0..3u64 {
            let db = &db;
            s.spawn(move || {
                let mut seed = t + 1;
                for n in 0..300u64 {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let (f, g) = ((seed >> 33) % ACCOUNTS, (seed >> 13) % ACCOUNTS);
                    if f != g {
                        db.transaction(|tx| {
                            let (x, y) =
                                (balance(tx.get(account(f))?), balance(tx.get(account(g))?));
                            let amount = x.min(seed % 9);
                            tx.put(account(f), (x - amount).to_le_bytes())?;
                            tx.put(account(g), (y + amount).to_le_bytes())
                        })
                        .unwrap();
                    }
                    // Filler, so memtables flush while transfers run.
                    db.put(format!("fill{t}-{n}").into_bytes(), [7u8; 400]).unwrap();
                }
            });
        }
    });
    assert!(db.stats().unwrap().total().flush.flushes > 0);
    let total: u64 = (0..ACCOUNTS).map(|i| balance(db.get(account(i)).unwrap())).sum();
    assert_eq!(total, ACCOUNTS * 100);
}

#[test]
fn repeated_reads_of_flushed_keys_hit_the_shard_cache() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path(), config(WalSyncMode::Normal)).unwrap();
    let mut model = Model::new();
    churn(&db, &mut model, 0..2);
    // Other keys, until every shard flushed twice more: the churned keys are in the trees.
    let flushes = db.stats().unwrap().total().flush.flushes;
    let mut i = 0u64;
    while db.stats().unwrap().total().flush.flushes < flushes + 4 {
        for _ in 0..200 {
            db.put(format!("zz{i}"), [0u8; 100]).unwrap();
            i += 1;
        }
    }
    let (k, v) = model.iter().next().unwrap();
    let before = db.stats().unwrap().total();
    for _ in 0..100 {
        assert_eq!(db.get(k).unwrap().as_ref(), Some(v));
    }
    let after = db.stats().unwrap().total().since(&before);
    // A root-to-leaf path is read once, then answered from the cache.
    assert!(after.cache_misses <= 4, "{after:?}");
    assert!(after.cache_hits >= 99 * 2, "hits {}", after.cache_hits);
    assert!(db.stats().unwrap().total().cache_bytes > 0);
}

#[test]
fn a_database_that_never_flushes_has_no_tree_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path(), small_config(WalSyncMode::Normal)).unwrap();
    db.put(b"k", b"v").unwrap();
    assert_eq!(db.verify().unwrap(), 0);
    db.close().unwrap();
    assert!(!dir.path().join("shard-000").join("tree.ldb").exists());
}

#[derive(Clone, Copy, Debug)]
enum Failure {
    Crash,
    PowerLoss,
}

/// Writes on one thread until the simulated disk dies after `ops` operations (flushes run all
/// along), then recovers: every write acknowledged before the disk died is there (the last
/// one, in flight when it died, may or may not be), in a mode whose promise covers the failure.
fn crash_during_flushes(mode: WalSyncMode, failure: Failure, ops: u64, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let disk = SimDisk::new(seed);
    disk.fail_dead_io(true);
    let config = LightningDbConfig {
        direct_io: false,
        register_buffers: false,
        memtable_bytes: 32 * 1024,
        ..config(mode)
    };
    let db = Database::open_simulated(&disk, dir.path(), config.clone()).unwrap();
    let mut model = Model::new();
    let mut in_flight: Option<(Vec<u8>, Option<Vec<u8>>)> = None;
    disk.freeze_after(ops);
    for n in 0..6000u64 {
        let i = (n * 31 + seed) % 700;
        let (k, v) = (key(i), (n % 9 != 0).then(|| value(i, n)));
        let result = match &v {
            Some(v) => db.put(&k, v),
            None => db.delete(&k),
        };
        if disk.frozen() || result.is_err() {
            in_flight = Some((k, v));
            break;
        }
        match v {
            Some(v) => model.insert(k, v),
            None => model.remove(&k),
        };
    }
    let flushes = db.stats().map(|s| s.total().flush.flushes).unwrap_or(0);
    match failure {
        Failure::Crash => disk.crash(),
        Failure::PowerLoss => disk.power_loss(),
    }
    drop(db);
    let db = Database::open_simulated(&disk, dir.path(), config).unwrap();
    let row = format!("{mode:?} {failure:?} after {ops} ops (seed {seed}, {flushes} flushes)");
    for i in 0..700 {
        let k = key(i);
        let got = db.get(&k).unwrap();
        let acked = model.get(&k).cloned();
        let ok = got == acked || in_flight.as_ref().is_some_and(|(fk, fv)| *fk == k && got == *fv);
        assert!(
            ok,
            "{row}: key {i}: got {:?}, acknowledged {:?}",
            got.map(|v| v.len()),
            acked.map(|v| v.len())
        );
    }
    db.verify().unwrap();
    eprintln!("{row}: ok");
}

#[test]
fn crashes_and_power_losses_during_flushes_lose_nothing_acknowledged() {
    for (mode, failure) in [
        (WalSyncMode::Normal, Failure::Crash),
        (WalSyncMode::Sync, Failure::Crash),
        (WalSyncMode::Sync, Failure::PowerLoss),
    ] {
        // A `Normal` put is one disk operation (its copy into the mapping); a `Sync` group
        // carries several: `Normal` needs more operations for as many flushes.
        let span = if mode == WalSyncMode::Normal { 3800 } else { 900 };
        for seed in 0..12u64 {
            let ops = 20 + seed * 331 % span;
            crash_during_flushes(mode, failure, ops, seed);
        }
    }
}

#[test]
fn compact_gives_space_back_and_keeps_every_key() {
    for mode in [WalSyncMode::Normal, WalSyncMode::Sync] {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path(), config(mode)).unwrap();
        let mut model = Model::new();
        churn(&db, &mut model, 0..6);
        // Delete four keys in five: unflushed deletes, flushed by the compaction itself.
        let keys: Vec<Vec<u8>> = model.keys().cloned().collect();
        for (i, k) in keys.iter().enumerate() {
            if i % 5 != 0 {
                db.delete(k).unwrap();
                model.remove(k);
            }
        }
        let tree_bytes = |db: &Database| db.stats().unwrap().total().flush.tree_pages * 4096;
        let files = |p: &std::path::Path| -> u64 {
            (0..2)
                .map(|s| std::fs::metadata(p.join(format!("shard-{s:03}/tree.ldb"))).unwrap().len())
                .sum()
        };
        let before = files(dir.path());
        let given = db.compact().unwrap();
        let after = files(dir.path());
        assert!(given > 0 && after < before, "{mode:?}: {before} -> {after} ({given} given back)");
        assert_eq!(after, tree_bytes(&db), "{mode:?}: the files are as long as the trees say");
        check(&db, &model, &format!("{mode:?} after compact"));
        db.verify().unwrap();
        // Writes go on, and a reopen reads the same.
        churn(&db, &mut model, 6..7);
        drop(db);
        let db = Database::open(dir.path(), config(mode)).unwrap();
        check(&db, &model, &format!("{mode:?} after compact and reopen"));
    }
}

#[test]
fn overwriting_few_keys_still_flushes_and_lets_the_log_go() {
    // 200 keys overwritten 100 times: old versions are collected, so the memtable never
    // reaches its budget; the log's growth alone must bring flushes and segment removal.
    for mode in [WalSyncMode::Normal, WalSyncMode::Sync] {
        let dir = tempfile::tempdir().unwrap();
        let config = LightningDbConfig {
            shards: 1,
            memtable_bytes: 1 << 20,
            wal_segment_bytes: 64 * 1024,
            max_value_bytes: 16 * 1024,
            max_batch_bytes: 32 * 1024,
            ..small_config(mode)
        };
        let db = Database::open(dir.path(), config.clone()).unwrap();
        for round in 0..100u64 {
            for i in 0..200u64 {
                db.put(key(i), value(i, round)).unwrap();
            }
        }
        let s = db.stats().unwrap().total();
        assert!(s.memtable_bytes < 1 << 20, "{mode:?}: the memtable stayed under its budget");
        assert!(s.flush.flushes > 0 && s.flush.segments_removed > 0, "{mode:?}: {:?}", s.flush);
        drop(db);
        let db = Database::open(dir.path(), config).unwrap();
        let replayed: u64 = db.start_reports().iter().map(|r| r.replayed_records).sum();
        assert!(replayed < 20_000, "{mode:?}: replayed {replayed} of 20 000 records");
        for i in 0..200u64 {
            assert_eq!(db.get(key(i)).unwrap(), Some(value(i, 99)));
        }
    }
}

/// A flipped byte in a leaf of a shard's tree, on the real disk: reads that reach it say
/// `Corruption` (a scan's read-ahead and its prefetch of every shard's first leaf stay quiet
/// until the scan needs the damaged leaf), reads elsewhere go on, `verify` finds it.
#[test]
fn a_damaged_leaf_is_reported_by_the_reads_that_reach_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(WalSyncMode::Normal);
    let mut model = Model::new();
    {
        let db = Database::open(dir.path(), cfg.clone()).unwrap();
        for i in 0..4000u64 {
            db.put(key(i), value(i, 0)).unwrap();
            model.insert(key(i), value(i, 0));
        }
        db.compact().unwrap();
        db.close().unwrap();
    }
    // The last leaf in shard 0's file (compaction writes the tree low, leaves in key order).
    let tree = dir.path().join("shard-000/tree.ldb");
    let mut bytes = std::fs::read(&tree).unwrap();
    let leaf = (2..bytes.len() / 4096)
        .rev()
        .map(|p| p * 4096)
        .find(|&o| &bytes[o..o + 4] == b"LDBP" && bytes[o + 4] == 1)
        .expect("a leaf page");
    bytes[leaf + 40] ^= 0x20;
    std::fs::write(&tree, &bytes).unwrap();

    let db = Database::open(dir.path(), cfg).unwrap();
    let mut damaged = 0;
    for k in model.keys() {
        match db.get(k) {
            Ok(v) => assert_eq!(v.as_ref(), model.get(k)),
            Err(lightning_db::Error::Corruption { offset, .. }) => {
                assert_eq!(offset, leaf as u64);
                damaged += 1;
            }
            Err(e) => panic!("get: {e:?}"),
        }
    }
    assert!(damaged > 0, "some key lives in the damaged leaf");
    // A short scan from the start is answered; a full one ends with the damage.
    let first: Vec<_> = db.scan(None, None).unwrap().take(10).collect::<Result<_, _>>().unwrap();
    assert_eq!(first.len(), 10);
    let results: Vec<_> = db.scan(None, None).unwrap().collect();
    assert!(
        matches!(results.last(), Some(Err(lightning_db::Error::Corruption { .. }))),
        "a full scan reports the damaged leaf"
    );
    assert!(matches!(db.verify(), Err(lightning_db::Error::Corruption { .. })));
}
