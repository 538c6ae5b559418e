//! The runner end to end on lightning_db: a closed-loop case does exactly its operations and
//! records them per type, per second and in the engine's statistics; an open-loop case keeps
//! to its rate; YCSB D inserts past the preloaded keys; transfer says why it is skipped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use lightning_bench::engine::Mode;
use lightning_bench::runner::{run_case, CaseParams};
use lightning_bench::workload::{spec, Distribution};

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
        data_dir: dir.to_path_buf(),
        progress: false,
    }
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
    let r = run_case(&params("transfer", dir.path())).unwrap();
    assert_eq!(r.ops, 0);
    assert!(r.notes[0].contains("transactions"));
}

#[test]
fn an_unknown_engine_is_an_error_naming_the_feature() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = params("readrandom", dir.path());
    p.engine = "leveldb".into();
    let e = run_case(&p).err().unwrap().to_string();
    assert!(e.contains("leveldb") && e.contains("feature"), "{e}");
}
