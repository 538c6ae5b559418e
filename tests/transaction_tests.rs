//! Transactions: the seed's id-based calls, the handle, isolation (a model of the anomalies
//! each level refuses or allows), bad input, limits and the timeout, and bank transfers across
//! every shard with concurrent snapshot readers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{collect, open, small_config, MODES};
use lightning_db::{Database, Error, Isolation, LightningDbConfig, WalSyncMode};

/// Two keys that live on different shards (the same shard when there is only one).
fn split_pair(db: &Database, tag: &str) -> (Vec<u8>, Vec<u8>) {
    let a = format!("{tag}-a").into_bytes();
    let b = (0..)
        .map(|j| format!("{tag}-b{j}").into_bytes())
        .find(|b| db.shard_count() == 1 || db.shard_for_key(b) != db.shard_for_key(&a))
        .unwrap();
    (a, b)
}

fn multi_shard(mode: WalSyncMode) -> LightningDbConfig {
    LightningDbConfig { shards: 4, ..small_config(mode) }
}

#[test]
fn the_seed_calls_commit_and_read_their_own_writes() {
    for mode in MODES {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path(), multi_shard(mode)).unwrap();
        let (a, b) = split_pair(&db, "k");
        db.put(&a, b"old").unwrap();
        let tx = db.begin_transaction().unwrap();
        db.put_tx(tx, &a, b"new-a").unwrap();
        db.put_tx(tx, &b, b"new-b").unwrap();
        db.put_tx(tx, b"gone", b"x").unwrap();
        db.delete_tx(tx, b"gone").unwrap();
        assert_eq!(db.get_tx(tx, &a).unwrap(), Some(b"new-a".to_vec()), "own write");
        assert_eq!(db.get_tx(tx, b"gone").unwrap(), None, "own delete");
        assert_eq!(db.get(&a).unwrap(), Some(b"old".to_vec()), "{mode:?}: invisible until commit");
        let seen = collect(db.scan_tx(tx, None, None).unwrap());
        assert_eq!(seen.len(), 2, "the scan merges own writes over the snapshot");
        db.commit_transaction(tx).unwrap();
        assert_eq!(db.get(&a).unwrap(), Some(b"new-a".to_vec()));
        assert_eq!(db.get(&b).unwrap(), Some(b"new-b".to_vec()));
        assert_eq!(db.get(b"gone").unwrap(), None);
        drop(db);
        let db = Database::open(dir.path(), multi_shard(mode)).unwrap();
        assert_eq!(db.get(&b).unwrap(), Some(b"new-b".to_vec()), "{mode:?}: durable");
        assert_eq!(db.active_transactions(), 0);
    }
}

#[test]
fn a_lost_update_is_refused_at_both_levels() {
    for isolation in [Isolation::Snapshot, Isolation::Serializable] {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path(), multi_shard(WalSyncMode::Normal)).unwrap();
        let (a, b) = split_pair(&db, "counter");
        db.put(&a, 0u64.to_le_bytes()).unwrap();
        let t1 = db.begin_with(isolation).unwrap();
        let t2 = db.begin_with(isolation).unwrap();
        for t in [&t1, &t2] {
            let n = u64::from_le_bytes(t.get(&a).unwrap().unwrap().try_into().unwrap());
            t.put(&a, (n + 1).to_le_bytes()).unwrap();
            t.put(&b, b"touched").unwrap(); // and a second shard
        }
        t1.commit().unwrap();
        let err = t2.commit().unwrap_err();
        assert!(
            matches!(err, Error::Conflict { .. }) && err.is_retryable(),
            "{isolation:?}: {err}"
        );
        assert_eq!(db.get(&a).unwrap(), Some(1u64.to_le_bytes().to_vec()));
    }
}

#[test]
fn write_skew_is_allowed_by_snapshot_isolation_and_refused_by_serializable() {
    for (isolation, both_commit) in [(Isolation::Snapshot, true), (Isolation::Serializable, false)]
    {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path(), multi_shard(WalSyncMode::Normal)).unwrap();
        // Two doctors on call; each may go off call if the other is still on.
        let (x, y) = split_pair(&db, "oncall");
        db.put(&x, b"1").unwrap();
        db.put(&y, b"1").unwrap();
        let t1 = db.begin_with(isolation).unwrap();
        let t2 = db.begin_with(isolation).unwrap();
        assert!(t1.get(&y).unwrap().is_some());
        t1.put(&x, b"0").unwrap();
        assert!(t2.get(&x).unwrap().is_some());
        t2.put(&y, b"0").unwrap();
        t1.commit().unwrap();
        let second = t2.commit();
        assert_eq!(second.is_ok(), both_commit, "{isolation:?}: {second:?}");
        let on_call = [&x, &y].iter().filter(|k| db.get(k).unwrap() == Some(b"1".to_vec())).count();
        assert_eq!(on_call, if both_commit { 0 } else { 1 });
    }
}

#[test]
fn serializable_refuses_a_phantom_in_a_scanned_range() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path(), multi_shard(WalSyncMode::Normal)).unwrap();
    db.put(b"order-1", b"10").unwrap();
    let t = db.begin_with(Isolation::Serializable).unwrap();
    let total: usize = t.range(b"order-".as_slice()..b"order.".as_slice()).unwrap().count();
    assert_eq!(total, 1);
    t.put(b"summary", total.to_string()).unwrap();
    db.put(b"order-2", b"20").unwrap(); // a phantom inserted after the scan
    assert!(matches!(t.commit(), Err(Error::Conflict { .. })));
}

#[test]
fn rolled_back_and_dropped_transactions_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path(), multi_shard(WalSyncMode::Normal)).unwrap();
    let (a, b) = split_pair(&db, "r");
    let id = db.begin_transaction().unwrap();
    db.put_tx(id, &a, b"x").unwrap();
    db.abort_transaction(id).unwrap();
    {
        let tx = db.begin().unwrap();
        tx.put(&b, b"y").unwrap();
    } // dropped
    let tx = db.begin().unwrap();
    tx.put(&a, b"z").unwrap();
    tx.rollback().unwrap();
    assert_eq!(db.get(&a).unwrap(), None);
    assert_eq!(db.get(&b).unwrap(), None);
    assert_eq!(db.active_transactions(), 0);
    assert!(collect(db.scan(None, None).unwrap()).is_empty());
}

#[test]
fn bad_transaction_input_gets_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        LightningDbConfig { max_active_transactions: 2, ..small_config(WalSyncMode::Normal) };
    let db = Database::open(dir.path(), config).unwrap();
    assert!(matches!(db.put_tx(999, b"k", b"v"), Err(Error::TransactionNotFound { id: 999 })));
    assert!(matches!(db.commit_transaction(999), Err(Error::TransactionNotFound { .. })));
    let id = db.begin_transaction().unwrap();
    db.put_tx(id, b"k", b"v").unwrap();
    db.commit_transaction(id).unwrap();
    assert!(
        matches!(db.put_tx(id, b"k", b"v"), Err(Error::TransactionNotFound { .. })),
        "used after commit"
    );
    assert!(matches!(db.get_tx(id, b"k"), Err(Error::TransactionNotFound { .. })));
    assert!(matches!(db.commit_transaction(id), Err(Error::TransactionNotFound { .. })));
    assert!(matches!(db.abort_transaction(id), Err(Error::TransactionNotFound { .. })));
    let id = db.begin_transaction().unwrap();
    assert!(matches!(db.put_tx(id, b"", b"v"), Err(Error::InvalidArgument { .. })));
    assert!(matches!(db.put_tx(id, vec![7u8; 5000], b"v"), Err(Error::LimitExceeded { .. })));
    assert!(matches!(db.put_tx(id, b"k", vec![7u8; 300 * 1024]), Err(Error::LimitExceeded { .. })));
    // Over the batch limit in total (512 KiB in the small config).
    for i in 0..2 {
        db.put_tx(id, format!("big{i}"), vec![1u8; 200 * 1024]).unwrap();
    }
    let err = db.put_tx(id, b"big2", vec![1u8; 200 * 1024]).unwrap_err();
    assert!(matches!(err, Error::LimitExceeded { what: "transaction write bytes", .. }), "{err}");
    let _second = db.begin().unwrap();
    assert!(matches!(db.begin_transaction(), Err(Error::TooManyTransactions { max: 2 })));
    db.abort_transaction(id).unwrap();
    assert!(db.begin_transaction().is_ok(), "room again");
}

#[test]
fn an_abandoned_transaction_times_out_and_frees_its_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        LightningDbConfig { transaction_timeout_ms: 50, ..small_config(WalSyncMode::Normal) };
    let db = Database::open(dir.path(), config).unwrap();
    let id = db.begin_transaction().unwrap();
    db.put_tx(id, b"k", b"v").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(db.active_transactions(), 0, "the reaper rolled it back");
    assert!(matches!(db.put_tx(id, b"k", b"v"), Err(Error::TransactionTimedOut { .. })));
    assert!(matches!(db.commit_transaction(id), Err(Error::TransactionTimedOut { .. })));
    assert_eq!(db.get(b"k").unwrap(), None);
}

#[test]
fn the_closure_form_retries_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path(), multi_shard(WalSyncMode::Normal)).unwrap();
    db.put(b"n", 0u64.to_le_bytes()).unwrap();
    let mut runs = 0;
    db.transaction(|tx| {
        runs += 1;
        let n = u64::from_le_bytes(tx.get(b"n")?.unwrap().try_into().unwrap());
        if runs == 1 {
            db.put(b"n", 100u64.to_le_bytes())?; // someone else commits first
        }
        tx.put(b"n", (n + 1).to_le_bytes())
    })
    .unwrap();
    assert_eq!(runs, 2, "the conflict was retried");
    assert_eq!(db.get(b"n").unwrap(), Some(101u64.to_le_bytes().to_vec()));
}

/// Accounts on every shard; threads move money with transactions and batches while readers
/// check the total in snapshots; the total holds throughout and after a reopen.
#[test]
fn bank_transfers_keep_the_total_in_every_mode() {
    const ACCOUNTS: u64 = 32;
    const START: u64 = 1_000;
    for mode in MODES {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path(), multi_shard(mode)).unwrap();
        let account = |i: u64| format!("acct{i:03}").into_bytes();
        let mut batch = lightning_db::WriteBatch::new();
        for i in 0..ACCOUNTS {
            batch.put(account(i), START.to_le_bytes()).unwrap();
        }
        db.write_batch(&batch).unwrap();
        let balance = |v: Option<Vec<u8>>| u64::from_le_bytes(v.unwrap().try_into().unwrap());
        let rounds = if mode == WalSyncMode::Sync { 30 } else { 300 };
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            for t in 0..3u64 {
                let (db, done) = (&db, &done);
                s.spawn(move || {
                    let mut seed = t + 1;
                    for _ in 0..rounds {
                        seed = seed
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        let from = account((seed >> 33) % ACCOUNTS);
                        let to = account((seed >> 13) % ACCOUNTS);
                        if from == to {
                            continue;
                        }
                        db.transaction(|tx| {
                            let (f, g) = (balance(tx.get(&from)?), balance(tx.get(&to)?));
                            let amount = f.min(seed % 50);
                            tx.put(&from, (f - amount).to_le_bytes())?;
                            tx.put(&to, (g + amount).to_le_bytes())
                        })
                        .or_else(|e| if e.is_retryable() { Ok(()) } else { Err(e) })
                        .unwrap();
                    }
                    done.store(true, std::sync::atomic::Ordering::SeqCst);
                });
            }
            let db = &db;
            s.spawn(move || {
                // Blind batches move nothing on net: +1 here, -1 there, read from one snapshot.
                for _ in 0..rounds / 3 {
                    let _ = db.transaction(|tx| {
                        let (a, b) = (account(1), account(ACCOUNTS - 1));
                        let (x, y) = (balance(tx.get(&a)?), balance(tx.get(&b)?));
                        if x == 0 {
                            return Ok(());
                        }
                        tx.put(&a, (x - 1).to_le_bytes())?;
                        tx.put(&b, (y + 1).to_le_bytes())
                    });
                }
            });
            let done = &done;
            s.spawn(move || {
                let mut checks = 0;
                while !done.load(std::sync::atomic::Ordering::SeqCst) || checks < 5 {
                    let total: u64 = db
                        .scan_prefix(b"acct")
                        .unwrap()
                        .map(|r| u64::from_le_bytes(r.unwrap().1.try_into().unwrap()))
                        .sum();
                    assert_eq!(total, ACCOUNTS * START, "{mode:?}: a scan saw a torn transfer");
                    let keys: Vec<_> = (0..ACCOUNTS).map(account).collect();
                    let total: u64 = db.multi_get(&keys).unwrap().into_iter().map(balance).sum();
                    assert_eq!(total, ACCOUNTS * START, "{mode:?}: multi_get saw a torn transfer");
                    checks += 1;
                }
            });
        });
        drop(db);
        let db = Database::open(dir.path(), multi_shard(mode)).unwrap();
        let total: u64 = (0..ACCOUNTS).map(|i| balance(db.get(account(i)).unwrap())).sum();
        assert_eq!(total, ACCOUNTS * START, "{mode:?}: after reopen");
    }
}

#[test]
fn a_cross_shard_batch_is_atomic_and_survives_reopen() {
    for mode in MODES {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path(), multi_shard(mode)).unwrap();
        let mut batch = lightning_db::WriteBatch::new();
        for i in 0..1000u32 {
            batch.put(format!("b{i}"), i.to_le_bytes()).unwrap();
        }
        db.write_batch(&batch).unwrap();
        drop(db);
        let db = open_again(dir.path(), mode);
        assert_eq!(collect(db.scan_prefix(b"b").unwrap()).len(), 1000, "{mode:?}");
    }
}

fn open_again(dir: &std::path::Path, mode: WalSyncMode) -> Database {
    let _ = open; // the common helper opens with default shards; these tests use four
    Database::open(dir, multi_shard(mode)).unwrap()
}
