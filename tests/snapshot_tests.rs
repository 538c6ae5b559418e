//! Database snapshots: a point-in-time view across every shard that never changes, includes
//! the caller's acknowledged writes, and holds old versions until it is dropped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{collect, key, open, value, MODES};
use lightning_db::WalSyncMode;

#[test]
fn a_snapshot_never_changes() {
    for mode in MODES {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path(), mode);
        for i in 0..200 {
            db.put(key(i), value(i, 0)).unwrap();
        }
        let snap = db.snapshot().unwrap();
        let before = collect(snap.scan(None, None).unwrap());
        assert_eq!(before.len(), 200, "{mode:?}: the snapshot includes every acknowledged write");
        for i in 0..200 {
            if i % 3 == 0 {
                db.delete(key(i)).unwrap();
            } else {
                db.put(key(i), value(i, 1)).unwrap();
            }
        }
        db.put(key(1000), b"new").unwrap();
        assert_eq!(collect(snap.scan(None, None).unwrap()), before, "{mode:?}");
        let mut reversed = collect(snap.scan(None, None).unwrap().rev());
        reversed.reverse();
        assert_eq!(reversed, before, "{mode:?}: backwards too");
        for i in [0u64, 1, 2, 150] {
            assert_eq!(snap.get(key(i)).unwrap(), Some(value(i, 0)), "{mode:?}");
        }
        assert_eq!(snap.get(key(1000)).unwrap(), None);
        let keys: Vec<_> = (0..10).map(key).collect();
        let got = snap.multi_get(&keys).unwrap();
        assert!(got.iter().enumerate().all(|(i, v)| v.as_deref() == Some(&value(i as u64, 0)[..])));
        // The database itself moved on.
        assert_eq!(db.get(key(0)).unwrap(), None);
        assert_eq!(db.get(key(1)).unwrap(), Some(value(1, 1)));
        assert_eq!(collect(snap.scan_prefix(b"key0000000").unwrap()).len(), 10);
        assert_eq!(collect(snap.range(key(10)..key(20)).unwrap()).len(), 10);
    }
}

#[test]
fn old_versions_stay_while_a_snapshot_can_see_them() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), WalSyncMode::Normal);
    for i in 0..100 {
        db.put(key(i), value(i, 0)).unwrap();
    }
    let snap = db.snapshot().unwrap();
    for round in 1..=5 {
        for i in 0..100 {
            db.put(key(i), value(i, round)).unwrap();
        }
    }
    // Every shard collects on its own turns; give them time, then look.
    std::thread::sleep(std::time::Duration::from_millis(200));
    for i in 0..100 {
        assert_eq!(snap.get(key(i)).unwrap(), Some(value(i, 0)));
    }
    assert!(db.memory_usage().versions >= 600, "held: {:?}", db.memory_usage());
    drop(snap);
    // Collection runs as writes come; a few more writes drive it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while db.memory_usage().versions > 110 && std::time::Instant::now() < deadline {
        db.put(b"tick", b"x").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(db.memory_usage().versions <= 110, "collected: {:?}", db.memory_usage());
}

#[test]
fn scans_and_multi_get_read_one_snapshot_across_shards() {
    // Writers keep pairs of keys on different shards equal through atomic batches; every scan
    // and multi_get must see each pair equal.
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), WalSyncMode::Normal);
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..16u64)
        .map(|i| {
            let a = key(i);
            let b = (0..)
                .map(|j| format!("pair{i}-{j}").into_bytes())
                .find(|b| db.shard_for_key(b) != db.shard_for_key(&a) || db.shard_count() == 1)
                .unwrap();
            (a, b)
        })
        .collect();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let (db, pairs, done) = (&db, &pairs, &done);
        s.spawn(move || {
            for round in 0..300u64 {
                let mut batch = lightning_db::WriteBatch::new();
                for (a, b) in pairs {
                    batch.put(a, round.to_le_bytes()).unwrap();
                    batch.put(b, round.to_le_bytes()).unwrap();
                }
                db.write_batch(&batch).unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        s.spawn(move || {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let keys: Vec<&[u8]> =
                    pairs.iter().flat_map(|(a, b)| [a.as_slice(), b.as_slice()]).collect();
                let got = db.multi_get(&keys).unwrap();
                for pair in got.chunks(2) {
                    assert_eq!(pair[0], pair[1], "multi_get saw half a batch");
                }
                let snap = db.snapshot().unwrap();
                let first = snap.get(&pairs[0].0).unwrap();
                for (a, b) in pairs {
                    assert_eq!(snap.get(a).unwrap(), first, "one snapshot, one round");
                    assert_eq!(snap.get(b).unwrap(), first);
                }
            }
        });
    });
}
