//! The public API, end to end, on a real database directory: reads, writes, batches, scans in
//! both directions, limits, bad input, reopen in every durability mode.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{collect, key, open, small_config, value, MODES};
use lightning_db::{Database, Error, LightningDbConfig, WalSyncMode, WriteBatch};

#[test]
fn quick_start_runs_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path().join("my_database"), Default::default()).unwrap();
    db.put(b"key", b"value").unwrap();
    assert_eq!(db.get(b"key").unwrap(), Some(b"value".to_vec()));
    let mut batch = WriteBatch::new();
    batch.put(b"key1", b"value1").unwrap();
    batch.delete(b"old_key").unwrap();
    db.write_batch(&batch).unwrap();
    let mut n = 0;
    for item in db.scan(None, None).unwrap() {
        let (_k, _v) = item.unwrap();
        n += 1;
    }
    assert_eq!(n, 2);
    db.sync().unwrap();
    db.flush().unwrap();
}

#[test]
fn database_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Database>();
}

#[test]
fn put_get_delete_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), WalSyncMode::Normal);
    assert_eq!(db.get(b"missing").unwrap(), None);
    assert!(!db.contains_key(b"a").unwrap());
    db.put(b"a", b"1").unwrap();
    db.put(b"a", b"2").unwrap();
    assert_eq!(db.get(b"a").unwrap(), Some(b"2".to_vec()));
    assert!(db.contains_key(b"a").unwrap());
    db.delete(b"a").unwrap();
    assert_eq!(db.get(b"a").unwrap(), None);
    db.delete(b"never-there").unwrap();
    db.put(b"empty value", b"").unwrap();
    assert_eq!(db.get(b"empty value").unwrap(), Some(Vec::new()));
}

#[test]
fn an_empty_key_is_an_invalid_argument_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), WalSyncMode::Normal);
    let invalid = |r: lightning_db::Result<()>, what: &str| match r {
        Err(e @ Error::InvalidArgument { .. }) => assert!(e.to_string().contains("empty key")),
        other => panic!("{what}: expected InvalidArgument, got {other:?}"),
    };
    invalid(db.put(b"", b"v"), "put");
    invalid(db.delete(b""), "delete");
    invalid(db.get(b"").map(drop), "get");
    invalid(db.contains_key(b"").map(drop), "contains_key");
    invalid(db.multi_get(&[b"k".as_slice(), b"".as_slice()]).map(drop), "multi_get");
    invalid(WriteBatch::new().put(b"", b"v"), "batch put");
    // An empty slice is still a scan bound: the smallest one.
    db.put(b"a", b"1").unwrap();
    assert_eq!(collect(db.scan(Some(b""), None).unwrap()).len(), 1);
    assert_eq!(collect(db.scan_prefix(b"").unwrap()).len(), 1);
}

#[test]
fn multi_get_returns_values_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), WalSyncMode::Normal);
    for i in 0..100 {
        db.put(key(i), value(i, 0)).unwrap();
    }
    let keys: Vec<Vec<u8>> = (95..105).map(key).collect();
    let got = db.multi_get(&keys).unwrap();
    for (i, v) in (95..105).zip(got) {
        assert_eq!(v, (i < 100).then(|| value(i, 0)), "key {i}");
    }
}

#[test]
fn batch_applies_in_order_and_later_ops_win() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), WalSyncMode::Normal);
    db.put(b"gone", b"x").unwrap();
    let mut b = WriteBatch::new();
    for i in 0..500 {
        b.put(key(i), value(i, 1)).unwrap();
    }
    b.put(b"twice", b"first").unwrap();
    b.put(b"twice", b"second").unwrap();
    b.put(b"put-then-delete", b"x").unwrap();
    b.delete(b"put-then-delete").unwrap();
    b.delete(b"gone").unwrap();
    db.write_batch(&b).unwrap();
    assert_eq!(db.get(b"twice").unwrap(), Some(b"second".to_vec()));
    assert_eq!(db.get(b"put-then-delete").unwrap(), None);
    assert_eq!(db.get(b"gone").unwrap(), None);
    for i in 0..500 {
        assert_eq!(db.get(key(i)).unwrap(), Some(value(i, 1)));
    }
    db.write_batch(&WriteBatch::new()).unwrap();
}

fn filled(dir: &std::path::Path, n: u64) -> Database {
    let db = open(dir, WalSyncMode::Normal);
    let mut b = WriteBatch::new();
    for i in 0..n {
        b.put(key(i), value(i, 0)).unwrap();
        if b.len() == 5000 {
            db.write_batch(&b).unwrap();
            b.clear();
        }
    }
    db.write_batch(&b).unwrap();
    db
}

#[test]
fn scan_bounds_are_start_inclusive_end_exclusive() {
    let dir = tempfile::tempdir().unwrap();
    let db = filled(dir.path(), 200);
    let got = collect(db.scan(Some(&key(10)), Some(&key(20))).unwrap());
    let want: Vec<_> = (10..20).map(|i| (key(i), value(i, 0))).collect();
    assert_eq!(got, want);
    assert_eq!(collect(db.scan(None, None).unwrap()).len(), 200);
    assert_eq!(collect(db.scan(Some(&key(190)), None).unwrap()).len(), 10);
    assert_eq!(collect(db.scan(None, Some(&key(5))).unwrap()).len(), 5);
    assert!(collect(db.scan(Some(&key(20)), Some(&key(10))).unwrap()).is_empty());
}

#[test]
fn range_prefix_and_reverse() {
    let dir = tempfile::tempdir().unwrap();
    let db = filled(dir.path(), 3000);
    let keys =
        |it: lightning_db::DbIterator| collect(it).into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(keys(db.range(key(5)..=key(7)).unwrap()), vec![key(5), key(6), key(7)]);
    assert_eq!(keys(db.range(..key(2)).unwrap()), vec![key(0), key(1)]);
    assert_eq!(keys(db.range(key(2998)..).unwrap()), vec![key(2998), key(2999)]);
    let rev: Vec<_> = db.range(key(10)..key(13)).unwrap().rev().map(|r| r.unwrap().0).collect();
    assert_eq!(rev, vec![key(12), key(11), key(10)]);
    let all_rev: Vec<_> = db.scan(None, None).unwrap().rev().map(|r| r.unwrap().0).collect();
    let mut all: Vec<_> = (0..3000).map(key).collect();
    all.reverse();
    assert_eq!(all_rev, all);
    assert_eq!(keys(db.scan_prefix(b"key0000001").unwrap()).len(), 10);
    assert_eq!(keys(db.scan_prefix(b"nope").unwrap()).len(), 0);
}

#[test]
fn both_ends_meet_without_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let db = filled(dir.path(), 2500);
    let mut it = db.scan(None, None).unwrap();
    let mut seen = Vec::new();
    loop {
        let f = it.next();
        let b = it.next_back();
        if f.is_none() && b.is_none() {
            break;
        }
        seen.extend(f.map(|r| r.unwrap().0));
        seen.extend(b.map(|r| r.unwrap().0));
    }
    seen.sort();
    let want: Vec<_> = (0..2500).map(key).collect();
    assert_eq!(seen, want);
}

#[test]
fn a_scan_reads_one_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let db = filled(dir.path(), 100);
    let mut it = db.scan(None, None).unwrap();
    let first = it.next().unwrap().unwrap();
    db.put(key(50), b"changed after the scan started").unwrap();
    db.put(b"zzz-new", b"new").unwrap();
    db.delete(key(60)).unwrap();
    let rest = collect(it);
    assert_eq!(first.0, key(0));
    assert_eq!(rest.len(), 99);
    assert!(rest.iter().all(|(k, v)| v == &value_of(k)));
    fn value_of(k: &[u8]) -> Vec<u8> {
        let i: u64 = std::str::from_utf8(&k[3..]).unwrap().parse().unwrap();
        value(i, 0)
    }
    assert_eq!(db.get(key(50)).unwrap(), Some(b"changed after the scan started".to_vec()));
}

#[test]
fn long_scan_streams_in_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let db = filled(dir.path(), 100_000);
    let bound = 2 * db.shard_count() * lightning_db::CHUNK_MAX;
    let mut prev: Option<Vec<u8>> = None;
    let mut n = 0;
    let mut most = 0;
    let mut it = db.scan(None, None).unwrap();
    while let Some(item) = it.next() {
        let (k, _) = item.unwrap();
        if let Some(p) = &prev {
            assert!(p < &k);
        }
        prev = Some(k);
        n += 1;
        most = most.max(it.buffered());
    }
    assert_eq!(n, 100_000);
    assert!(most <= bound, "held {most} entries at once, bound {bound}");
    // Walking from both ends still holds only chunks.
    let mut it = db.scan(None, None).unwrap();
    for _ in 0..5_000 {
        it.next().unwrap().unwrap();
        it.next_back().unwrap().unwrap();
        assert!(it.buffered() <= bound);
    }
}

#[test]
fn reopen_keeps_every_acknowledged_write_in_every_mode() {
    for mode in MODES {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = open(dir.path(), mode);
            for i in 0..3000 {
                db.put(key(i), value(i, 0)).unwrap();
            }
            for i in (0..3000).step_by(3) {
                db.delete(key(i)).unwrap();
            }
            db.close().unwrap();
        }
        let db = open(dir.path(), mode);
        for i in 0..3000 {
            let want = (i % 3 != 0).then(|| value(i, 0));
            assert_eq!(db.get(key(i)).unwrap(), want, "{mode:?} key {i}");
        }
        assert_eq!(collect(db.scan(None, None).unwrap()).len(), 2000);
    }
}

#[test]
fn reopen_after_drop_without_close() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = open(dir.path(), WalSyncMode::Normal);
        db.put(b"k", b"v").unwrap();
    }
    let db = open(dir.path(), WalSyncMode::Normal);
    assert_eq!(db.get(b"k").unwrap(), Some(b"v".to_vec()));
}

#[test]
fn large_values_cross_segment_boundaries() {
    for mode in MODES {
        let dir = tempfile::tempdir().unwrap();
        let big = |i: u64| vec![(i % 251) as u8; 200 * 1024];
        {
            let db = open(dir.path(), mode);
            for i in 0..20 {
                db.put(key(i), big(i)).unwrap();
            }
            db.close().unwrap();
        }
        let segments = std::fs::read_dir(dir.path().join("shard-000")).unwrap().count()
            + std::fs::read_dir(dir.path().join("shard-001")).map(|d| d.count()).unwrap_or(0);
        assert!(segments > 2, "{mode:?}: expected rollover, found {segments} segments");
        let db = open(dir.path(), mode);
        for i in 0..20 {
            assert_eq!(db.get(key(i)).unwrap(), Some(big(i)), "{mode:?} key {i}");
        }
    }
}

#[test]
fn modes_can_change_between_opens() {
    let dir = tempfile::tempdir().unwrap();
    for (round, mode) in MODES.iter().chain(MODES.iter()).enumerate() {
        let db = open(dir.path(), *mode);
        for i in 0..round as u64 {
            assert_eq!(
                db.get(key(i)).unwrap(),
                Some(value(i, 0)),
                "{mode:?} round {round} key {i}"
            );
        }
        db.put(key(round as u64), value(round as u64, 0)).unwrap();
        db.close().unwrap();
    }
}

#[test]
fn oversized_input_is_refused_and_the_database_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(WalSyncMode::Normal);
    let db = Database::open(dir.path(), config.clone()).unwrap();
    let long_key = vec![b'k'; config.max_key_bytes + 1];
    let long_value = vec![b'v'; config.max_value_bytes + 1];
    assert!(matches!(db.put(&long_key, b"v"), Err(Error::LimitExceeded { what: "key bytes", .. })));
    assert!(matches!(
        db.put(b"k", &long_value),
        Err(Error::LimitExceeded { what: "value bytes", .. })
    ));
    assert!(matches!(db.get(&long_key), Err(Error::LimitExceeded { .. })));
    assert!(matches!(db.delete(&long_key), Err(Error::LimitExceeded { .. })));
    let mut b = WriteBatch::new();
    b.put(&long_key, b"v").unwrap();
    assert!(matches!(db.write_batch(&b), Err(Error::LimitExceeded { .. })));
    let mut huge = WriteBatch::new();
    for i in 0..10 {
        huge.put(format!("h{i}"), vec![0u8; config.max_value_bytes]).unwrap();
    }
    assert!(matches!(
        db.write_batch(&huge),
        Err(Error::LimitExceeded { what: "batch bytes on one shard", .. })
    ));
    let max_key = vec![b'k'; config.max_key_bytes];
    let max_value = vec![b'v'; config.max_value_bytes];
    db.put(&max_key, &max_value).unwrap();
    assert_eq!(db.get(&max_key).unwrap(), Some(max_value));
    let e = db.put(&long_key, b"v").unwrap_err().to_string();
    assert!(e.contains("key bytes") && e.contains("1024"), "{e}");
}

#[test]
fn invalid_configs_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bad: Vec<(&str, LightningDbConfig)> = vec![
        ("page_size", LightningDbConfig { page_size: 1000, ..Default::default() }),
        ("page_size", LightningDbConfig { page_size: 2048, ..Default::default() }),
        ("cache_size", LightningDbConfig { cache_size: 0, ..Default::default() }),
        ("shards", LightningDbConfig { shards: 0, ..Default::default() }),
    ];
    for (field, config) in bad {
        match Database::open(dir.path(), config) {
            Err(Error::InvalidConfig { field: f, reason }) => {
                assert_eq!(f, field);
                assert!(!reason.is_empty());
            }
            other => panic!("{field}: {other:?}"),
        }
    }
    // Nothing was created by the refused opens.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn a_path_that_is_a_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"not a database").unwrap();
    assert!(matches!(Database::open(&file, Default::default()), Err(Error::InvalidPath { .. })));
    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("data.csv"), b"1,2").unwrap();
    assert!(matches!(Database::open(&foreign, Default::default()), Err(Error::InvalidPath { .. })));
    let names = |d: &std::path::Path| -> Vec<_> {
        std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name()).collect()
    };
    assert_eq!(names(&foreign), vec!["data.csv"], "a refused open leaves no LOCK file behind");
    let missing = dir.path().join("missing");
    let no_create = LightningDbConfig { create_if_missing: false, ..Default::default() };
    assert!(matches!(Database::open(&missing, no_create.clone()), Err(Error::InvalidPath { .. })));
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert!(matches!(Database::open(&empty, no_create), Err(Error::InvalidPath { .. })));
    assert!(names(&empty).is_empty(), "a refused open leaves no LOCK file behind");
}

#[test]
fn second_open_in_the_same_process_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), WalSyncMode::Normal);
    let err = Database::open(dir.path(), small_config(WalSyncMode::Normal)).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err:?}");
    assert!(err.to_string().contains("already open"));
    db.put(b"still", b"works").unwrap();
    db.close().unwrap();
    let again = open(dir.path(), WalSyncMode::Normal);
    assert_eq!(again.get(b"still").unwrap(), Some(b"works".to_vec()));
}

#[test]
fn shard_count_is_fixed_at_creation() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Database::open(
            dir.path(),
            LightningDbConfig { shards: 3, ..small_config(WalSyncMode::Normal) },
        )
        .unwrap();
        assert_eq!(db.shard_count(), 3);
        for i in 0..300 {
            db.put(key(i), value(i, 0)).unwrap();
        }
    }
    let db = Database::open(
        dir.path(),
        LightningDbConfig { shards: 5, ..small_config(WalSyncMode::Normal) },
    )
    .unwrap();
    assert_eq!(db.shard_count(), 3);
    for i in 0..300 {
        assert_eq!(db.get(key(i)).unwrap(), Some(value(i, 0)));
    }
}

#[test]
fn one_shard_databases_work() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(
        dir.path(),
        LightningDbConfig { shards: 1, ..small_config(WalSyncMode::Sync) },
    )
    .unwrap();
    for i in 0..100 {
        db.put(key(i), value(i, 0)).unwrap();
    }
    assert_eq!(collect(db.scan(None, None).unwrap()).len(), 100);
}
