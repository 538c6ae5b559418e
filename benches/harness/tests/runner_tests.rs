//! The runner end to end on lightning_db: a closed-loop case does exactly its operations and
//! records them per type, per second and in the engine's statistics; an open-loop case keeps
//! to its rate; YCSB D inserts past the preloaded keys; transfer runs on every engine compiled
//! in that has transactions, keeps the total of the balances, counts conflicts and retries, and
//! skips an engine without transactions with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lightning_bench::engine::{
    self, apply_transfer, decode_balance, BatchOp, Engine, Mode, Result, Transfer,
};
use lightning_bench::runner::{run_case, run_case_on, verify_balances, CaseParams};
use lightning_bench::workload::{spec, Distribution, INITIAL_BALANCE};

fn params(workload: &str, dir: &std::path::Path) -> CaseParams {
    let w = spec(workload).unwrap();
    CaseParams {
        engine: "lightning".into(),
        distribution: Distribution::parse(w.default_distribution).unwrap(),
        workload: w,
        keys: 2_000,
        key_bytes: 16,
        value_bytes: 100,
        threads: 2,
        shards: 2,
        pin_shards: true,
        spin_us: None,
        mode: Mode::Normal,
        cache_bytes: 8 << 20,
        compression: false,
        ops: Some(2_000),
        duration: None,
        max_time: Some(Duration::from_secs(60)),
        rate: None,
        seed: 1,
        batch_size: 10,
        scan_len: 10,
        warm: false,
        data_dir: dir.to_path_buf(),
        progress: false,
    }
}

#[test]
fn warm_reads_every_preloaded_key_before_the_measured_phase() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = params("scan", dir.path());
    p.warm = true;
    // `warm` fails the case unless its scan saw every preloaded key.
    let r = run_case(&p).unwrap();
    assert_eq!(r.ops, 2_000);
}

#[test]
fn a_closed_loop_case_records_every_operation() {
    let dir = tempfile::tempdir().unwrap();
    let r = run_case(&params("ycsb_a", dir.path())).unwrap();
    assert_eq!(r.ops, 2_000);
    let by_type: u64 = r.ops_by_type.iter().map(|o| o.count).sum();
    assert_eq!(by_type, 2_000);
    let ops: Vec<&str> = r.ops_by_type.iter().map(|o| o.op.as_str()).collect();
    assert_eq!(ops, vec!["read", "update"]);
    assert!(r.ops_by_type.iter().all(|o| o.summary.p50 > 0.0 && o.summary.max >= o.summary.p99));
    assert!(!r.timeline.is_empty());
    let timeline_ops: f64 = r.timeline.iter().map(|p| p.ops_per_sec).sum();
    assert_eq!(timeline_ops as u64, 2_000, "every op lands in exactly one interval");
    let stats = r.engine_stats.unwrap();
    assert_eq!(stats["shards"].as_array().unwrap().len(), 2);
    let updates = r.ops_by_type.iter().find(|o| o.op == "update").unwrap().count;
    assert_eq!(
        stats["total"]["ops"]["put"]["count"].as_u64().unwrap(),
        updates,
        "one engine put per update"
    );
    assert_eq!(
        stats["total"]["ops"]["batch"]["count"].as_u64().unwrap(),
        0,
        "the preload's batches come before the measured phase and are left out"
    );
    assert!(r.durability.contains("WalSyncMode::Normal"));
}

#[test]
fn an_open_loop_case_keeps_to_its_rate() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = params("readrandom", dir.path());
    p.rate = Some(4_000.0);
    p.duration = Some(Duration::from_millis(500));
    let r = run_case(&p).unwrap();
    // 4 000 ops/s for 0.5 s: about 2 000 operations, never many more (the schedule paces).
    assert!((1_200..=2_200).contains(&r.ops), "{} ops", r.ops);
    assert!(r.notes.iter().any(|n| n.contains("intended start")));
}

#[test]
fn ycsb_d_inserts_new_keys_and_reads_the_latest() {
    let dir = tempfile::tempdir().unwrap();
    let r = run_case(&params("ycsb_d", dir.path())).unwrap();
    let inserts = r.ops_by_type.iter().find(|o| o.op == "insert").map_or(0, |o| o.count);
    assert!(inserts > 0 && inserts < 300, "{inserts} inserts of 2000 ops at 5 %");
}

#[test]
fn fills_write_every_key_and_batches_count_per_batch() {
    let dir = tempfile::tempdir().unwrap();
    let r = run_case(&params("fillrandom", dir.path())).unwrap();
    assert_eq!(r.ops_by_type[0].op, "insert");
    assert_eq!(r.ops, 2_000);
    let mut b = params("fillbatch", dir.path());
    b.ops = Some(100);
    let r = run_case(&b).unwrap();
    assert_eq!((r.ops_by_type[0].op.as_str(), r.ops), ("batch", 100));
}

#[test]
fn transfer_is_skipped_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let no_transactions = Arc::new(Ledger::new(0, false));
    let r = run_case_on(&transfer_params("ledger", dir.path(), 10, 10), no_transactions).unwrap();
    assert_eq!(r.ops, 0);
    assert!(r.ops_by_type.is_empty() && r.transfer.is_none());
    assert_eq!(
        r.notes,
        vec!["skipped: ledger has no transactions (Engine::transfer returned None)"]
    );
}

/// The transfer case of the tests: `accounts` accounts, a fixed number of transfers, `engine`.
fn transfer_params(engine: &str, dir: &std::path::Path, accounts: u64, ops: u64) -> CaseParams {
    let mut p = params("transfer", dir);
    p.engine = engine.into();
    p.keys = accounts;
    p.value_bytes = 8;
    p.ops = Some(ops);
    p
}

#[test]
fn transfer_keeps_the_total_on_every_engine_compiled_in() {
    // Few accounts and two threads, so transactions touch the same accounts concurrently.
    for engine in engine::available() {
        for (mode, ops) in [(Mode::Normal, 2_000), (Mode::Sync, 40)] {
            let dir = tempfile::tempdir().unwrap();
            let mut p = transfer_params(engine, dir.path(), 50, ops);
            p.mode = mode;
            let r = run_case(&p).unwrap();
            if engine == "rocksdb" {
                assert_eq!(r.ops, 0, "{engine} has no transactions here");
                assert!(r.notes[0].starts_with("skipped:"), "{engine}: {:?}", r.notes);
                continue;
            }
            let what = format!("{engine} {}", mode.name());
            assert_eq!(r.ops, ops, "{what}: every transfer committed");
            assert_eq!(r.ops_by_type.len(), 1, "{what}");
            assert_eq!((r.ops_by_type[0].op.as_str(), r.ops_by_type[0].count), ("transfer", ops));
            let t = r.transfer.as_ref().unwrap();
            assert_eq!(t.total_balance, 50 * INITIAL_BALANCE, "{what}");
            assert_eq!(t.attempts, ops + t.conflicts, "{what}: one commit per transfer");
            if !matches!(engine, "fjall" | "lightning") {
                assert_eq!(t.conflicts, 0, "{what}: writers are serialized (or retried inside)");
            }
            assert!(r.notes.iter().any(|n| n.starts_with("conflicts ")), "{what}: {:?}", r.notes);
        }
    }
}

/// An engine of the tests: a map under one mutex, with transactions that conflict on every
/// `conflict_every`-th attempt (nothing written; 0: no transactions at all), two partitions (even and odd account
/// indexes), and optionally a broken transfer that credits without debiting.
struct Ledger {
    map: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
    attempts: AtomicU64,
    conflict_every: u64,
    broken: bool,
    /// Set if a transfer ever got two accounts of one partition.
    same_partition_seen: AtomicBool,
}

impl Ledger {
    fn new(conflict_every: u64, broken: bool) -> Self {
        Ledger {
            map: Mutex::new(BTreeMap::new()),
            attempts: AtomicU64::new(0),
            conflict_every,
            broken,
            same_partition_seen: AtomicBool::new(false),
        }
    }
}

/// The partition of a harness key: the parity of its account index (the index is the first
/// 8 bytes, big-endian, shifted left by one).
fn partition(key: &[u8]) -> u8 {
    (key[7] >> 1) & 1
}

impl Engine for Ledger {
    fn name(&self) -> &'static str {
        "ledger"
    }
    fn describe(&self) -> String {
        "a test ledger".into()
    }
    fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.map.lock().unwrap().insert(key.to_vec(), value.to_vec());
        Ok(())
    }
    fn get(&self, key: &[u8], out: &mut Vec<u8>) -> Result<bool> {
        let map = self.map.lock().unwrap();
        Ok(map.get(key).map(|v| out.extend_from_slice(v)).is_some())
    }
    fn delete(&self, key: &[u8]) -> Result<()> {
        self.map.lock().unwrap().remove(key);
        Ok(())
    }
    fn write_batch(&self, ops: &[BatchOp<'_>]) -> Result<()> {
        let mut map = self.map.lock().unwrap();
        for (k, v) in ops {
            match v {
                Some(v) => map.insert(k.to_vec(), v.to_vec()),
                None => map.remove(*k),
            };
        }
        Ok(())
    }
    fn scan(&self, _: &[u8], _: usize, _: &mut dyn FnMut(&[u8], &[u8])) -> Result<usize> {
        Ok(0)
    }
    fn sync(&self) -> Result<()> {
        Ok(())
    }
    fn transfer(&self, from: &[u8], to: &[u8], amount: u64) -> Result<Option<Transfer>> {
        if self.conflict_every == 0 {
            return Ok(None); // a ledger without transactions
        }
        if self.same_partition(from, to) {
            self.same_partition_seen.store(true, Ordering::Relaxed);
        }
        if (self.attempts.fetch_add(1, Ordering::Relaxed) + 1).is_multiple_of(self.conflict_every) {
            return Ok(Some(Transfer::Conflict));
        }
        let mut map = self.map.lock().unwrap();
        let a = decode_balance(map.get(from).map(Vec::as_slice))?;
        let b = decode_balance(map.get(to).map(Vec::as_slice))?;
        let (a, b) = apply_transfer(a, b, amount);
        let a = if self.broken { a + amount.min(1) } else { a };
        map.insert(from.to_vec(), a.to_le_bytes().to_vec());
        map.insert(to.to_vec(), b.to_le_bytes().to_vec());
        Ok(Some(Transfer::Committed))
    }
    fn same_partition(&self, a: &[u8], b: &[u8]) -> bool {
        partition(a) == partition(b)
    }
}

#[test]
fn transfer_retries_conflicts_counts_them_and_picks_accounts_across_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Ledger::new(4, false));
    let p = transfer_params("ledger", dir.path(), 100, 3_000);
    let r = run_case_on(&p, ledger.clone()).unwrap();
    assert_eq!(r.ops, 3_000, "every transfer committed in the end");
    let t = r.transfer.unwrap();
    // The probe took attempt 1; every 4th attempt after it conflicted and was retried.
    let attempts = ledger.attempts.load(Ordering::Relaxed) - 1;
    assert_eq!(t.attempts, attempts);
    assert_eq!(t.attempts, t.conflicts + 3_000);
    assert!(t.conflicts >= 900 && t.conflicts <= 1_100, "{} conflicts", t.conflicts);
    assert!((t.conflict_rate - t.conflicts as f64 / t.attempts as f64).abs() < 1e-12);
    assert_eq!(t.total_balance, 100 * INITIAL_BALANCE);
    assert!(!ledger.same_partition_seen.load(Ordering::Relaxed), "both accounts on one partition");
    let mut out = Vec::new();
    let moved = (0..100u64).any(|i| {
        out.clear();
        ledger.get(&lightning_bench::workload::key(i, 16), &mut out).unwrap();
        decode_balance(Some(&out)).unwrap() != INITIAL_BALANCE
    });
    assert!(moved, "the transfers moved money");
}

#[test]
fn a_transfer_that_makes_money_fails_the_case_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Ledger::new(u64::MAX, true));
    let e = run_case_on(&transfer_params("ledger", dir.path(), 20, 100), ledger.clone())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("TRANSFER INVARIANT VIOLATED") && e.contains("not 20000000"), "{e}");
    // The check itself, on a store with one account short.
    ledger.delete(&lightning_bench::workload::key(3, 16)).unwrap();
    assert!(verify_balances(ledger.as_ref(), 20, 16).is_err());
}

#[test]
fn an_unknown_engine_is_an_error_naming_the_feature() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = params("readrandom", dir.path());
    p.engine = "leveldb".into();
    let e = run_case(&p).err().unwrap().to_string();
    assert!(e.contains("leveldb") && e.contains("feature"), "{e}");
}
