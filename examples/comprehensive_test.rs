//! Every public operation of `Database`, `WriteBatch`, `Snapshot`, `Transaction` and the seed
//! transaction API, called at least once with its result checked: reads and writes, batches,
//! forward and reverse scans, ranges and prefixes, snapshots that do not move, transactions
//! (commit, rollback, drop, conflicts, isolation levels, the retrying closure), the typed
//! error each kind of bad input gets, statistics, and reopening (data persists) in every mode.
//!
//! ```sh
//! cargo run --release --example comprehensive_test
//! ```
//!
//! Prints `ok    <what>` per check and a count at the end; a failed check prints
//! `FAIL  <what>: <why>`, the run goes on, and the program exits 1. Databases live in a
//! directory under `std::env::temp_dir()`, removed at the end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Debug;
use std::ops::Bound;
use std::path::Path;
use std::time::Duration;

use lightning_db::router::Router;
use lightning_db::sim::SimDisk;
use lightning_db::{
    Database, DbIterator, Error, Isolation, LightningDbConfig, OpKind, Result, WalSyncMode,
    WriteBatch,
};

/// The checks made so far.
#[derive(Default)]
struct Checks {
    passed: usize,
    failed: Vec<String>,
}

impl Checks {
    fn pass(&mut self, what: &str) {
        println!("ok    {what}");
        self.passed += 1;
    }

    fn fail(&mut self, what: &str, why: impl std::fmt::Display) {
        println!("FAIL  {what}: {why}");
        self.failed.push(format!("{what}: {why}"));
    }

    fn check(&mut self, what: &str, ok: bool, why: impl std::fmt::Display) {
        if ok {
            self.pass(what);
        } else {
            self.fail(what, why);
        }
    }

    fn eq<T: PartialEq + Debug>(&mut self, what: &str, got: T, want: T) {
        if got == want {
            self.pass(what);
        } else {
            self.fail(what, format!("got {got:?}, expected {want:?}"));
        }
    }
}

/// Checks that `$result` is an `Err` matching `$pattern` (the typed error bad input must get).
macro_rules! expect_err {
    ($c:expr, $what:expr, $result:expr, $pattern:pat) => {
        match ($result).map(drop) {
            Err(e @ $pattern) => $c.pass(&format!("{} -> {}", $what, short(&e))),
            Err(e) => $c.fail($what, format!("expected {}, got {e:?}", stringify!($pattern))),
            Ok(()) => $c.fail($what, format!("expected {}, got Ok", stringify!($pattern))),
        }
    };
}

fn short(e: &Error) -> String {
    let text = format!("{e:?}");
    match text.char_indices().nth(90) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text,
    }
}

type Entries = Vec<(Vec<u8>, Vec<u8>)>;

fn collect(iter: impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>>) -> Result<Entries> {
    iter.collect()
}

fn keys_of(entries: &Entries) -> Vec<String> {
    entries.iter().map(|(k, _)| String::from_utf8_lossy(k).into_owned()).collect()
}

fn v(s: &str) -> Option<Vec<u8>> {
    Some(s.as_bytes().to_vec())
}

/// Small limits, so that oversized input is cheap to build; four shards, so that batches and
/// transactions cross shards on any machine.
fn config(mode: WalSyncMode) -> LightningDbConfig {
    LightningDbConfig {
        wal_sync_mode: mode,
        shards: 4,
        max_key_bytes: 64,
        max_value_bytes: 4096,
        max_batch_bytes: 64 * 1024,
        wal_segment_bytes: 1 << 20,
        ..Default::default()
    }
}

/// Two keys on different shards, named after `tag`.
fn split_pair(db: &Database, tag: &str) -> (Vec<u8>, Vec<u8>) {
    let a = format!("{tag}-a").into_bytes();
    let b = (0..)
        .map(|j| format!("{tag}-b{j}").into_bytes())
        .find(|b| db.shard_for_key(b) != db.shard_for_key(&a))
        .unwrap();
    (a, b)
}

fn main() {
    let root = std::env::temp_dir().join(format!("lightning-comprehensive-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("create a temporary directory");
    let started = std::time::Instant::now();
    let mut c = Checks::default();
    type Section = fn(&mut Checks, &Path) -> Result<()>;
    let sections: [(&str, Section); 12] = [
        ("open and introspection", open_and_introspection),
        ("reads and writes", reads_and_writes),
        ("bad input", bad_input),
        ("write batches", write_batches),
        ("scans, ranges and prefixes", scans),
        ("snapshots", snapshots),
        ("seed transaction API", seed_transactions),
        ("transaction handles", transaction_handles),
        ("conflicts and isolation", conflicts),
        ("transaction limits", transaction_limits),
        ("durability, statistics and reopen", durability_and_reopen),
        ("simulated disk", simulated_disk),
    ];
    for (i, (name, section)) in sections.iter().enumerate() {
        println!("-- {name}");
        let dir = root.join(format!("{i:02}"));
        if let Err(e) = section(&mut c, &dir) {
            c.fail(name, format!("stopped by an unexpected error: {e}"));
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    let secs = started.elapsed().as_secs_f64();
    if c.failed.is_empty() {
        println!("PASS: {} checks passed ({secs:.1} s)", c.passed);
    } else {
        println!(
            "FAILED: {} of {} checks failed ({secs:.1} s):",
            c.failed.len(),
            c.passed + c.failed.len()
        );
        for f in &c.failed {
            println!("  {f}");
        }
        std::process::exit(1);
    }
}

fn open_and_introspection(c: &mut Checks, dir: &Path) -> Result<()> {
    let db = Database::open(dir, config(WalSyncMode::Normal))?;
    c.eq("path() is the directory given", db.path(), dir);
    c.eq("shard_count() is the configured 4", db.shard_count(), 4);
    c.eq("wal_sync_mode() is the configured Normal", db.wal_sync_mode(), WalSyncMode::Normal);
    let reports = db.start_reports();
    c.eq("start_reports() has one report per shard", reports.len(), 4);
    c.check(
        "start_reports(): a new database replayed nothing",
        reports.iter().all(|r| r.replayed_records == 0 && !r.recovery.changed_anything()),
        format!("{reports:?}"),
    );
    let key = b"some key";
    let s = db.shard_for_key(key);
    c.check("shard_for_key() is below shard_count()", s < db.shard_count(), s);
    c.eq("shard_for_key() is stable", db.shard_for_key(key), s);
    c.eq("router::Router agrees with shard_for_key()", Router::new(4).shard_for(key), s);
    let mut seen = vec![false; 4];
    for i in 0..200 {
        seen[db.shard_for_key(format!("k{i}"))] = true;
    }
    c.check("200 keys land on every shard", seen.iter().all(|&s| s), format!("{seen:?}"));
    c.eq("active_transactions() is 0 at open", db.active_transactions(), 0);
    c.check(
        "Database implements Debug",
        format!("{db:?}").contains("shards: 4"),
        format!("{db:?}"),
    );
    expect_err!(
        c,
        "a second open of an open directory",
        Database::open(dir, config(WalSyncMode::Normal)),
        Error::Locked { .. }
    );
    db.close()?;
    c.pass("close()");
    let reopened = Database::open(dir, config(WalSyncMode::Normal))?;
    c.pass("open after close: the directory lock was released");
    drop(reopened);
    c.pass("drop closes too");
    c.check(
        "LightningDbConfig::default().validate()",
        LightningDbConfig::default().validate().is_ok(),
        "refused",
    );
    expect_err!(
        c,
        "validate() of a config with max_key_bytes over page_size / 4",
        LightningDbConfig { max_key_bytes: 2000, ..Default::default() }.validate(),
        Error::InvalidConfig { field: "max_key_bytes", .. }
    );
    expect_err!(
        c,
        "open with shards: 0",
        Database::open(
            dir.join("x"),
            LightningDbConfig { shards: 0, ..config(WalSyncMode::Normal) }
        ),
        Error::InvalidConfig { field: "shards", .. }
    );
    expect_err!(
        c,
        "open with a page_size that is not a power of two",
        Database::open(dir.join("x"), LightningDbConfig { page_size: 5000, ..Default::default() }),
        Error::InvalidConfig { field: "page_size", .. }
    );
    expect_err!(
        c,
        "open a missing directory with create_if_missing: false",
        Database::open(
            dir.join("missing"),
            LightningDbConfig { create_if_missing: false, ..config(WalSyncMode::Normal) }
        ),
        Error::InvalidPath { .. }
    );
    let file = dir.join("a-file");
    std::fs::write(&file, b"not a database").map_err(|e| Error::io("write a file", &file, e))?;
    expect_err!(
        c,
        "open a path that is a file",
        Database::open(&file, config(WalSyncMode::Normal)),
        Error::InvalidPath { .. }
    );
    Ok(())
}

fn reads_and_writes(c: &mut Checks, dir: &Path) -> Result<()> {
    let db = Database::open(dir, config(WalSyncMode::Normal))?;
    db.put(b"alpha", b"1")?;
    c.eq("put then get", db.get(b"alpha")?, v("1"));
    db.put(b"alpha", b"2")?;
    c.eq("put overwrites", db.get(b"alpha")?, v("2"));
    c.eq("get of a missing key is None", db.get(b"missing")?, None);
    c.eq("contains_key of a present key", db.contains_key(b"alpha")?, true);
    c.eq("contains_key of a missing key", db.contains_key(b"missing")?, false);
    db.put(b"empty", b"")?;
    c.eq("an empty value is a value", db.get(b"empty")?, Some(Vec::new()));
    c.eq("contains_key of a key with an empty value", db.contains_key(b"empty")?, true);
    db.delete(b"alpha")?;
    c.eq("delete removes", db.get(b"alpha")?, None);
    db.delete(b"never-there")?;
    c.pass("delete of a missing key is Ok");
    let binary = [0u8, 0xff, 0, 1, 0xfe];
    db.put(binary, [0xffu8; 3])?;
    c.eq("binary keys and values (0x00, 0xff)", db.get(binary)?, Some(vec![0xff; 3]));
    let longest = vec![b'k'; 64];
    let largest = vec![7u8; 4096];
    db.put(&longest, &largest)?;
    c.eq(
        "a key of exactly max_key_bytes with a value of exactly max_value_bytes",
        db.get(&longest)?,
        Some(largest),
    );
    db.put(String::from("owned"), vec![1u8, 2])?;
    c.eq("put/get take anything AsRef<[u8]> (String, Vec)", db.get("owned")?, Some(vec![1, 2]));
    let got = db.multi_get(&[&b"empty"[..], b"missing", b"owned", b"empty"])?;
    c.eq(
        "multi_get: in the order given, duplicates and misses included",
        got,
        vec![Some(vec![]), None, Some(vec![1, 2]), Some(vec![])],
    );
    c.eq("multi_get of one key", db.multi_get(&["owned"])?, vec![Some(vec![1, 2])]);
    c.eq("multi_get of no keys", db.multi_get::<&[u8]>(&[])?, vec![]);
    db.close()
}

fn bad_input(c: &mut Checks, dir: &Path) -> Result<()> {
    let db = Database::open(dir, config(WalSyncMode::Normal))?;
    let long_key = vec![b'k'; 65];
    let big_value = vec![0u8; 4097];
    expect_err!(c, "put with an empty key", db.put(b"", b"v"), Error::InvalidArgument { .. });
    expect_err!(c, "get with an empty key", db.get(b""), Error::InvalidArgument { .. });
    expect_err!(c, "delete with an empty key", db.delete(b""), Error::InvalidArgument { .. });
    expect_err!(
        c,
        "contains_key with an empty key",
        db.contains_key(b""),
        Error::InvalidArgument { .. }
    );
    expect_err!(
        c,
        "multi_get with an empty key among others",
        db.multi_get(&[&b"a"[..], b""]),
        Error::InvalidArgument { .. }
    );
    expect_err!(
        c,
        "put with a key over max_key_bytes (65 > 64)",
        db.put(&long_key, b"v"),
        Error::LimitExceeded { what: "key bytes", actual: 65, max: 64 }
    );
    expect_err!(
        c,
        "get with a key over max_key_bytes",
        db.get(&long_key),
        Error::LimitExceeded { what: "key bytes", .. }
    );
    expect_err!(
        c,
        "put with a value over max_value_bytes (4097 > 4096)",
        db.put(b"k", &big_value),
        Error::LimitExceeded { what: "value bytes", actual: 4097, max: 4096 }
    );
    let mut batch = WriteBatch::new();
    expect_err!(
        c,
        "WriteBatch::put with an empty key",
        batch.put(b"", b"v"),
        Error::InvalidArgument { .. }
    );
    expect_err!(
        c,
        "WriteBatch::delete with an empty key",
        batch.delete(b""),
        Error::InvalidArgument { .. }
    );
    expect_err!(
        c,
        "WriteBatch::put with a key over the format's KEY_BYTES_LIMIT (64 KiB)",
        batch.put(vec![1u8; lightning_db::KEY_BYTES_LIMIT + 1], b"v"),
        Error::LimitExceeded { what: "key bytes", .. }
    );
    c.eq("refused operations are not added to the batch", batch.len(), 0);
    batch.put(b"fine", b"v")?;
    batch.put(&long_key, b"v")?; // within the format's limit, over this database's
    expect_err!(
        c,
        "write_batch with a key over this database's max_key_bytes",
        db.write_batch(&batch),
        Error::LimitExceeded { what: "key bytes", .. }
    );
    batch.clear();
    batch.put(b"fine", b"v")?;
    batch.put(b"big", &big_value)?;
    expect_err!(
        c,
        "write_batch with a value over max_value_bytes",
        db.write_batch(&batch),
        Error::LimitExceeded { what: "value bytes", .. }
    );
    // Over max_batch_bytes (64 KiB) on one shard: 20 values of 4 KiB on keys of one shard.
    batch.clear();
    let shard = db.shard_for_key(b"fine");
    for i in (0..).filter(|i| db.shard_for_key(format!("same{i}")) == shard).take(20) {
        batch.put(format!("same{i}"), [1u8; 4000])?;
    }
    expect_err!(
        c,
        "write_batch over max_batch_bytes on one shard",
        db.write_batch(&batch),
        Error::LimitExceeded { what: "batch bytes on one shard", .. }
    );
    c.eq("a refused batch applied nothing", db.get(b"fine")?, None);
    let id = db.begin_transaction()?;
    expect_err!(
        c,
        "put_tx with an empty key",
        db.put_tx(id, b"", b"v"),
        Error::InvalidArgument { .. }
    );
    expect_err!(c, "get_tx with an empty key", db.get_tx(id, b""), Error::InvalidArgument { .. });
    expect_err!(
        c,
        "delete_tx with an empty key",
        db.delete_tx(id, b""),
        Error::InvalidArgument { .. }
    );
    expect_err!(
        c,
        "put_tx with a key over max_key_bytes",
        db.put_tx(id, &long_key, b"v"),
        Error::LimitExceeded { what: "key bytes", .. }
    );
    expect_err!(
        c,
        "put_tx with a value over max_value_bytes",
        db.put_tx(id, b"k", &big_value),
        Error::LimitExceeded { what: "value bytes", .. }
    );
    for i in 0..16 {
        db.put_tx(id, format!("tx{i}"), [2u8; 4000])?; // 16 x ~4 KiB: just under 64 KiB
    }
    expect_err!(
        c,
        "a transaction's writes over max_batch_bytes in total",
        db.put_tx(id, b"tx-last", [2u8; 4000]),
        Error::LimitExceeded { what: "transaction write bytes", .. }
    );
    db.rollback_transaction(id)?;
    let snap = db.snapshot()?;
    expect_err!(c, "Snapshot::get with an empty key", snap.get(b""), Error::InvalidArgument { .. });
    drop(snap);
    db.close()
}

fn write_batches(c: &mut Checks, dir: &Path) -> Result<()> {
    let db = Database::open(dir, config(WalSyncMode::Normal))?;
    let mut batch = WriteBatch::new();
    c.eq("WriteBatch::new is empty", (batch.is_empty(), batch.len()), (true, 0));
    db.write_batch(&batch)?;
    c.pass("an empty batch is Ok");
    let keys: Vec<String> = (0..40).map(|i| format!("batch:{i:02}")).collect();
    let shards: std::collections::BTreeSet<usize> =
        keys.iter().map(|k| db.shard_for_key(k)).collect();
    for k in &keys {
        batch.put(k, k.to_uppercase())?;
    }
    batch.put(b"batch:x", b"first")?;
    batch.put(b"batch:x", b"second")?;
    db.put(b"batch:gone", b"here")?;
    batch.delete(b"batch:gone")?;
    batch.put(b"batch:y", b"put")?;
    batch.delete(b"batch:y")?;
    c.eq("len counts every operation", batch.len(), 45);
    c.check("is_empty is false with operations", !batch.is_empty(), "");
    let copy = batch.clone();
    c.eq("a clone has the same operations", copy.len(), batch.len());
    let before = db.snapshot()?;
    db.write_batch(&batch)?;
    c.check(
        &format!("a batch over {} shards applied", shards.len()),
        shards.len() > 1 && collect(db.scan_prefix(b"batch:")?)?.len() == 41,
        format!("shards {shards:?}"),
    );
    c.eq("the later put of one key wins", db.get(b"batch:x")?, v("second"));
    c.eq("a delete in a batch removes", db.get(b"batch:gone")?, None);
    c.eq("put then delete of one key in a batch: deleted", db.get(b"batch:y")?, None);
    c.eq(
        "a snapshot taken before the batch sees none of it",
        collect(before.scan_prefix(b"batch:")?)?.len(),
        1, // batch:gone, put before the snapshot
    );
    batch.clear();
    c.check("clear empties the batch", batch.is_empty(), batch.len());
    db.write_batch(&copy)?;
    c.pass("a cloned batch can be written again");
    let default = WriteBatch::default();
    c.check("WriteBatch::default is empty", default.is_empty(), "");
    db.close()
}

fn scans(c: &mut Checks, dir: &Path) -> Result<()> {
    let db = Database::open(dir, config(WalSyncMode::Normal))?;
    for i in 0..50 {
        db.put(format!("p:{i:02}"), format!("v{i}"))?;
    }
    db.put(b"a", b"first")?;
    db.put(b"z", b"last")?;
    db.put([b'q', 0xff, 0xff, b'1'], b"ff")?;
    db.put([b'q', 0xff, 0xff], b"ff-exact")?;
    db.put([b'r'], b"after q")?;
    db.put([0xff, 0xff], b"top")?;
    let all = collect(db.scan(None, None)?)?;
    c.eq("scan(None, None) returns every key", all.len(), 56);
    c.check(
        "scan returns keys in order",
        all.windows(2).all(|w| w[0].0 < w[1].0),
        format!("{:?}", keys_of(&all)),
    );
    let mut back = collect(db.scan(None, None)?.rev())?;
    back.reverse();
    c.check("scan(..).rev() is the reverse", back == all, "differs");
    let part = collect(db.scan(Some(b"p:10"), Some(b"p:20"))?)?;
    c.eq(
        "scan(Some(start), Some(end)) is start-inclusive, end-exclusive",
        (part.len(), keys_of(&part).first().cloned(), keys_of(&part).last().cloned()),
        (10, Some("p:10".into()), Some("p:19".into())),
    );
    c.eq("an empty slice is a valid scan bound", collect(db.scan(Some(b""), None)?)?.len(), 56);
    c.eq("scan with start past end is empty", collect(db.scan(Some(b"z"), Some(b"a"))?)?.len(), 0);
    // Both ends at once: the two directions meet without overlap.
    let mut it = db.scan(Some(b"p:00"), Some(b"p:10"))?;
    let mut seen = Vec::new();
    loop {
        let f = it.next().transpose()?;
        let b = it.next_back().transpose()?;
        if f.is_none() && b.is_none() {
            break;
        }
        seen.extend(f.into_iter().chain(b).map(|(k, _)| k));
    }
    seen.sort();
    let want: Vec<Vec<u8>> = (0..10).map(|i| format!("p:{i:02}").into_bytes()).collect();
    c.eq("next and next_back interleaved meet without overlap", seen, want);
    let count = |it: DbIterator| -> Result<usize> { Ok(collect(it)?.len()) };
    c.eq("range(a..b)", count(db.range(b"p:10".as_slice()..b"p:20".as_slice())?)?, 10);
    c.eq("range(a..=b)", count(db.range(b"p:10".as_slice()..=b"p:20".as_slice())?)?, 11);
    c.eq("range(a..)", count(db.range(b"p:40".as_slice()..)?)?, 15); // p:40..49, 2 q, r, z, ff
    c.eq("range(..b)", count(db.range(..b"p:05".as_slice())?)?, 6); // a, p:00..04
    c.eq("range(..=b)", count(db.range(..=b"p:05".as_slice())?)?, 7);
    c.eq("range(..)", count(db.range::<&[u8], _>(..)?)?, 56);
    c.eq(
        "range((Excluded, Included))",
        count(db.range::<&[u8], _>((
            Bound::Excluded(b"p:10".as_slice()),
            Bound::Included(b"p:20".as_slice()),
        ))?)?,
        10,
    );
    let last_two = collect(db.range(b"p:".as_slice()..b"p;".as_slice())?.rev().take(2))?;
    c.eq("range(..).rev().take(2)", keys_of(&last_two), vec!["p:49".to_string(), "p:48".into()]);
    c.eq(
        "range with String bounds",
        count(db.range(String::from("p:45")..String::from("p:47"))?)?,
        2,
    );
    let prefixed = collect(db.scan_prefix(b"p:")?)?;
    c.eq("scan_prefix", prefixed.len(), 50);
    c.eq("scan_prefix values", prefixed[7].1.clone(), b"v7".to_vec());
    c.eq(
        "scan_prefix(..).rev() starts at the last key",
        db.scan_prefix(b"p:")?.next_back().transpose()?.map(|(k, _)| k),
        Some(b"p:49".to_vec()),
    );
    let ff = collect(db.scan_prefix([b'q', 0xff, 0xff])?)?;
    c.eq(
        "scan_prefix of a prefix ending in 0xff bytes",
        ff.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        vec![vec![b'q', 0xff, 0xff], vec![b'q', 0xff, 0xff, b'1']],
    );
    c.eq("scan_prefix of all-0xff bytes", count(db.scan_prefix([0xffu8])?)?, 1);
    c.eq("scan_prefix of an empty prefix is everything", count(db.scan_prefix(b"")?)?, 56);
    c.eq("scan_prefix with no match", count(db.scan_prefix(b"nothing")?)?, 0);
    // A scan is a snapshot: later writes do not show up in it.
    let it = db.scan_prefix(b"p:")?;
    db.put(b"p:50", b"late")?;
    db.delete(b"p:00")?;
    c.eq("an open scan does not see later writes", count(it)?, 50);
    // A long scan crosses the chunk size (CHUNK_MAX) on several shards.
    let mut batch = WriteBatch::new();
    for i in 0..5000 {
        batch.put(format!("long:{i:05}"), b"x")?;
    }
    db.write_batch(&batch)?;
    let long = collect(db.scan_prefix(b"long:")?)?;
    c.check(
        &format!("a scan of 5000 keys (past CHUNK_MAX = {})", lightning_db::CHUNK_MAX),
        long.len() == 5000 && long.windows(2).all(|w| w[0].0 < w[1].0),
        long.len(),
    );
    c.eq("the same scan reversed", collect(db.scan_prefix(b"long:")?.rev())?.len(), 5000);
    db.close()
}

fn snapshots(c: &mut Checks, dir: &Path) -> Result<()> {
    let db = Database::open(dir, config(WalSyncMode::Normal))?;
    let (a, b) = split_pair(&db, "snap");
    db.put(&a, b"a0")?;
    db.put(&b, b"b0")?;
    db.put(b"snap-del", b"here")?;
    let snap = db.snapshot()?;
    let ts = snap.ts();
    // Every kind of write after it.
    db.put(&a, b"a1")?;
    db.delete(b"snap-del")?;
    let mut batch = WriteBatch::new();
    batch.put(&b, b"b1")?;
    batch.put(b"snap-new", b"new")?;
    db.write_batch(&batch)?;
    db.transaction(|tx| tx.put(&a, b"a2"))?;
    c.eq("Snapshot::get ignores a later put", snap.get(&a)?, v("a0"));
    c.eq("Snapshot::get ignores a later cross-shard batch", snap.get(&b)?, v("b0"));
    c.eq("Snapshot::get still sees a later-deleted key", snap.get(b"snap-del")?, v("here"));
    c.eq("Snapshot::contains_key of a later-deleted key", snap.contains_key(b"snap-del")?, true);
    c.eq("Snapshot::contains_key of a later-added key", snap.contains_key(b"snap-new")?, false);
    c.eq(
        "Snapshot::multi_get",
        snap.multi_get(&[a.as_slice(), b.as_slice(), b"snap-new"])?,
        vec![v("a0"), v("b0"), None],
    );
    let scanned = collect(snap.scan(None, None)?)?;
    c.eq("Snapshot::scan", keys_of(&scanned).len(), 3);
    let reversed = collect(snap.scan(None, None)?.rev())?;
    c.eq("Snapshot::scan(..).rev()", reversed.len(), 3);
    c.eq(
        "Snapshot::range",
        collect(snap.range(b"snap-".as_slice()..b"snap.".as_slice())?)?.len(),
        3,
    );
    c.eq("Snapshot::scan_prefix", collect(snap.scan_prefix(b"snap-")?)?.len(), 3);
    c.eq("the live database sees the writes", db.get(&a)?, v("a2"));
    let later = db.snapshot()?;
    c.check(
        "a later snapshot has a later ts",
        later.ts() > ts,
        format!("{} then {}", ts, later.ts()),
    );
    c.eq("a later snapshot sees the writes", later.get(b"snap-new")?, v("new"));
    c.check("Snapshot implements Debug", format!("{snap:?}").contains("ts"), format!("{snap:?}"));
    c.eq("the first snapshot, read again, has not moved", snap.get(&a)?, v("a0"));
    drop(later);
    drop(snap);
    db.close()
}

fn seed_transactions(c: &mut Checks, dir: &Path) -> Result<()> {
    let db = Database::open(dir, config(WalSyncMode::Normal))?;
    let (a, b) = split_pair(&db, "seed");
    db.put(&a, b"old")?;
    db.put(b"seed-gone", b"x")?;
    let id = db.begin_transaction()?;
    c.eq("begin_transaction: one transaction open", db.active_transactions(), 1);
    db.put_tx(id, &a, b"new-a")?;
    db.put_tx(id, &b, b"new-b")?;
    db.delete_tx(id, b"seed-gone")?;
    c.eq("get_tx sees its own put_tx", db.get_tx(id, &a)?, v("new-a"));
    c.eq("get_tx sees its own delete_tx", db.get_tx(id, b"seed-gone")?, None);
    c.eq("others do not see it before commit", db.get(&a)?, v("old"));
    let seen = collect(db.scan_tx(id, Some(b"seed"), Some(b"seee"))?)?;
    c.eq(
        "scan_tx merges its own writes over its snapshot",
        keys_of(&seen),
        vec![String::from_utf8(a.clone()).unwrap(), String::from_utf8(b.clone()).unwrap()],
    );
    db.put(b"seed-later", b"x")?;
    c.eq("get_tx reads its snapshot, not later commits", db.get_tx(id, b"seed-later")?, None);
    db.commit_transaction(id)?;
    c.pass("commit_transaction");
    c.eq(
        "after commit every write is visible (two shards)",
        db.multi_get(&[a.as_slice(), b.as_slice(), b"seed-gone"])?,
        vec![v("new-a"), v("new-b"), None],
    );
    c.eq("active_transactions is 0 after commit", db.active_transactions(), 0);
    expect_err!(
        c,
        "put_tx after commit",
        db.put_tx(id, &a, b"x"),
        Error::TransactionNotFound { .. }
    );
    expect_err!(c, "get_tx after commit", db.get_tx(id, &a), Error::TransactionNotFound { .. });
    expect_err!(
        c,
        "commit_transaction twice",
        db.commit_transaction(id),
        Error::TransactionNotFound { .. }
    );
    expect_err!(
        c,
        "an unknown transaction id",
        db.put_tx(987_654, b"k", b"v"),
        Error::TransactionNotFound { id: 987_654 }
    );
    expect_err!(
        c,
        "scan_tx with an unknown id",
        db.scan_tx(987_654, None, None),
        Error::TransactionNotFound { .. }
    );
    expect_err!(
        c,
        "delete_tx with an unknown id",
        db.delete_tx(987_654, b"k"),
        Error::TransactionNotFound { .. }
    );
    let id = db.begin_transaction()?;
    db.put_tx(id, &a, b"aborted")?;
    db.abort_transaction(id)?;
    c.eq("abort_transaction applies nothing", db.get(&a)?, v("new-a"));
    expect_err!(
        c,
        "abort_transaction twice",
        db.abort_transaction(id),
        Error::TransactionNotFound { .. }
    );
    let id = db.begin_transaction_with(Isolation::Serializable)?;
    db.put_tx(id, &b, b"rolled back")?;
    db.rollback_transaction(id)?;
    c.eq("rollback_transaction applies nothing", db.get(&b)?, v("new-b"));
    expect_err!(
        c,
        "rollback_transaction of a rolled-back id",
        db.rollback_transaction(id),
        Error::TransactionNotFound { .. }
    );
    let id = db.begin_transaction_with(Isolation::Serializable)?;
    let n = collect(db.scan_tx(id, None, None)?)?.len();
    db.commit_transaction(id)?;
    c.check("a read-only transaction commits", n == 3, n);
    db.close()
}

fn transaction_handles(c: &mut Checks, dir: &Path) -> Result<()> {
    let db = Database::open(dir, config(WalSyncMode::Normal))?;
    let (a, b) = split_pair(&db, "tx");
    db.put(&a, b"0")?;
    db.put(b"tx-c", b"c")?;
    let tx = db.begin()?;
    let id = tx.id();
    tx.put(&a, b"1")?;
    tx.put(&b, b"1")?;
    tx.delete(b"tx-c")?;
    c.eq("Transaction::get sees its own put", tx.get(&a)?, v("1"));
    c.eq("Transaction::get sees its own delete", tx.get(b"tx-c")?, None);
    c.eq("get_tx(tx.id()) is the same transaction", db.get_tx(id, &b)?, v("1"));
    let seen = collect(tx.range(b"tx-".as_slice()..b"tx.".as_slice())?)?;
    c.eq("Transaction::range merges own writes, hides own deletes", seen.len(), 2);
    let seen = collect(tx.scan(Some(b"tx-"), None)?)?;
    c.eq("Transaction::scan", seen.len(), 2);
    c.check("Transaction implements Debug", format!("{tx:?}").contains("id"), format!("{tx:?}"));
    tx.commit()?;
    c.pass("Transaction::commit");
    c.eq(
        "committed writes are visible",
        db.multi_get(&[a.as_slice(), b.as_slice(), b"tx-c"])?,
        vec![v("1"), v("1"), None],
    );
    expect_err!(
        c,
        "the id of a committed handle",
        db.get_tx(id, &a),
        Error::TransactionNotFound { .. }
    );
    let tx = db.begin_with(Isolation::Serializable)?;
    tx.put(&a, b"rolled back")?;
    tx.rollback()?;
    c.eq("Transaction::rollback applies nothing", db.get(&a)?, v("1"));
    {
        let tx = db.begin()?;
        tx.put(&a, b"dropped")?;
        c.eq("an open handle counts in active_transactions", db.active_transactions(), 1);
    }
    c.eq("a dropped handle applies nothing", db.get(&a)?, v("1"));
    c.eq("a dropped handle is no longer active", db.active_transactions(), 0);
    let out = db.transaction(|tx| {
        let n: u32 = String::from_utf8_lossy(&tx.get(&a)?.unwrap_or_default()).parse().unwrap_or(0);
        tx.put(&a, (n + 1).to_string())?;
        tx.put(&b, b"closure")?;
        Ok(n + 1)
    })?;
    c.eq("db.transaction commits and returns the closure's value", (out, db.get(&a)?), (2, v("2")));
    let err = db.transaction(|tx| -> Result<()> {
        tx.put(&a, b"never")?;
        Err(Error::InvalidArgument { what: "the closure refused".into() })
    });
    c.check(
        "a closure's error is returned and nothing is committed",
        matches!(err, Err(Error::InvalidArgument { .. })) && db.get(&a)? == v("2"),
        format!("{err:?}"),
    );
    let n = db.transaction_with(Isolation::Serializable, |tx| {
        Ok(collect(tx.range(b"tx-".as_slice()..b"tx.".as_slice())?)?.len())
    })?;
    c.eq("db.transaction_with(Serializable) runs a read-only closure", n, 2);
    db.close()
}

fn conflicts(c: &mut Checks, dir: &Path) -> Result<()> {
    let db = Database::open(dir, config(WalSyncMode::Normal))?;
    let (a, b) = split_pair(&db, "cf");
    db.put(&a, b"0")?;
    // A lost update, refused: two handles write the same key from one snapshot.
    let t1 = db.begin()?;
    let t2 = db.begin()?;
    t1.put(&a, b"t1")?;
    t1.put(&b, b"t1")?;
    t2.put(&a, b"t2")?;
    t1.commit()?;
    match t2.commit() {
        Err(e @ Error::Conflict { .. }) => c.check(
            &format!("the second writer of a key gets Conflict -> {}", short(&e)),
            e.is_retryable(),
            "is_retryable() is false",
        ),
        other => c.fail("the second writer of a key gets Conflict", format!("got {other:?}")),
    }
    c.eq("the loser applied nothing", db.get(&a)?, v("t1"));
    // The same through the seed API.
    let i1 = db.begin_transaction()?;
    let i2 = db.begin_transaction()?;
    db.put_tx(i1, &b, b"i1")?;
    db.put_tx(i2, &b, b"i2")?;
    db.commit_transaction(i1)?;
    expect_err!(
        c,
        "commit_transaction of the loser",
        db.commit_transaction(i2),
        Error::Conflict { .. }
    );
    expect_err!(
        c,
        "the loser's id is gone",
        db.put_tx(i2, &b, b"x"),
        Error::TransactionNotFound { .. }
    );
    c.check(
        "other errors are not retryable",
        !Error::TransactionNotFound { id: 1 }.is_retryable(),
        "",
    );
    // A plain put after a transaction's snapshot also wins.
    let t = db.begin()?;
    t.put(&a, b"late")?;
    db.put(&a, b"plain")?;
    expect_err!(
        c,
        "a plain put after the snapshot beats the transaction",
        t.commit(),
        Error::Conflict { .. }
    );
    // db.transaction retries a conflict by itself.
    let mut runs = 0;
    db.transaction(|tx| {
        runs += 1;
        let cur = tx.get(&a)?;
        if runs == 1 {
            db.put(&a, b"interloper")?; // someone else commits first
        }
        tx.put(&a, [cur.unwrap_or_default(), b"+1".to_vec()].concat())
    })?;
    c.eq("db.transaction reran the closure after a conflict", runs, 2);
    c.eq("the rerun read the interloper's write", db.get(&a)?, v("interloper+1"));
    // A closure that always loses gives up after TRANSACTION_ATTEMPTS runs.
    let mut runs = 0;
    let lost = db.transaction(|tx| {
        runs += 1;
        tx.put(&a, b"always late")?;
        db.put(&a, format!("interloper {runs}")) // commits first, every time
    });
    c.check(
        &format!(
            "db.transaction gives up after TRANSACTION_ATTEMPTS ({}) conflicts",
            lightning_db::TRANSACTION_ATTEMPTS
        ),
        runs == lightning_db::TRANSACTION_ATTEMPTS && matches!(lost, Err(Error::Conflict { .. })),
        format!("{runs} runs, {lost:?}"),
    );
    // Write skew: allowed by snapshot isolation, refused by serializable.
    for (isolation, both) in [(Isolation::Snapshot, true), (Isolation::Serializable, false)] {
        db.put(&a, b"on")?;
        db.put(&b, b"on")?;
        let t1 = db.begin_with(isolation)?;
        let t2 = db.begin_with(isolation)?;
        let _ = t1.get(&b)?;
        t1.put(&a, b"off")?;
        let _ = t2.get(&a)?;
        t2.put(&b, b"off")?;
        t1.commit()?;
        let second = t2.commit();
        c.check(
            &format!(
                "write skew under {isolation:?}: second commit {}",
                if both { "allowed" } else { "refused" }
            ),
            second.is_ok() == both && (both || matches!(second, Err(Error::Conflict { .. }))),
            format!("{second:?}"),
        );
    }
    // A phantom in a scanned range, refused by serializable.
    db.put(b"cf-order-1", b"10")?;
    let t = db.begin_with(Isolation::Serializable)?;
    let n = collect(t.range(b"cf-order-".as_slice()..b"cf-order.".as_slice())?)?.len();
    t.put(b"cf-summary", n.to_string())?;
    db.put(b"cf-order-2", b"20")?;
    expect_err!(
        c,
        "serializable: a phantom in a scanned range",
        t.commit(),
        Error::Conflict { .. }
    );
    db.close()
}

fn transaction_limits(c: &mut Checks, dir: &Path) -> Result<()> {
    let config = LightningDbConfig {
        max_active_transactions: 2,
        transaction_timeout_ms: 100,
        ..config(WalSyncMode::Normal)
    };
    let db = Database::open(dir, config)?;
    let first = db.begin_transaction()?;
    let second = db.begin()?;
    expect_err!(
        c,
        "a third transaction with max_active_transactions: 2",
        db.begin_transaction(),
        Error::TooManyTransactions { max: 2 }
    );
    expect_err!(c, "a third handle too", db.begin(), Error::TooManyTransactions { max: 2 });
    drop(second);
    c.check("dropping a handle makes room", db.begin_transaction().is_ok(), "");
    db.abort_transaction(first)?;
    c.check("aborting makes room", db.begin().map(drop).is_ok(), "");
    // The open one from above times out.
    std::thread::sleep(Duration::from_millis(400));
    c.eq("transactions left open past the timeout are rolled back", db.active_transactions(), 0);
    let id = db.begin_transaction()?;
    db.put_tx(id, b"k", b"v")?;
    std::thread::sleep(Duration::from_millis(400));
    expect_err!(
        c,
        "put_tx after the timeout",
        db.put_tx(id, b"k", b"v"),
        Error::TransactionTimedOut { .. }
    );
    expect_err!(
        c,
        "commit after the timeout",
        db.commit_transaction(id),
        Error::TransactionTimedOut { .. }
    );
    c.eq("a timed-out transaction applied nothing", db.get(b"k")?, None);
    db.close()
}

fn durability_and_reopen(c: &mut Checks, dir: &Path) -> Result<()> {
    let db = Database::open(dir, config(WalSyncMode::Normal))?;
    let before = db.stats()?;
    for i in 0..100 {
        db.put(format!("d:{i:03}"), format!("{i}"))?;
    }
    for i in 0..10 {
        db.delete(format!("d:{i:03}"))?;
    }
    let mut batch = WriteBatch::new();
    for i in 100..120 {
        batch.put(format!("d:{i:03}"), format!("{i}"))?;
    }
    db.write_batch(&batch)?;
    // A batch whose keys share one shard (counted as one Batch op in stats()).
    let mut one_shard = WriteBatch::new();
    let s = db.shard_for_key(b"d:one-0");
    for key in (0..).map(|i| format!("d:one-{i}")).filter(|k| db.shard_for_key(k) == s).take(3) {
        one_shard.put(key, b"one shard")?;
    }
    db.write_batch(&one_shard)?;
    db.transaction(|tx| tx.put(b"d:tx", b"committed"))?;
    db.sync()?;
    c.pass("sync()");
    db.flush()?;
    c.pass("flush()");
    let stats = db.stats()?;
    c.eq("stats() has one entry per shard", stats.shards.len(), 4);
    let delta = stats.since(&before).total();
    c.eq("DbStats::since counts exactly the 100 puts made", delta.ops(OpKind::Put), 100);
    c.eq("... and the 10 deletes", delta.ops(OpKind::Delete), 10);
    c.check("... and the one-shard batch", delta.ops(OpKind::Batch) >= 1, delta.ops(OpKind::Batch));
    c.check("... and the syncs", delta.ops(OpKind::Sync) >= 2, delta.ops(OpKind::Sync));
    c.check(
        "stats(): WAL records were written",
        stats.total().wal_records >= 110 && stats.total().wal_bytes > 0,
        stats.total().wal_records,
    );
    let mem = db.memory_usage();
    c.check(
        "memory_usage() counts the memtables",
        mem.memtable_bytes > 0 && mem.versions >= 110,
        format!("{mem:?}"),
    );
    let all = collect(db.scan_prefix(b"d:")?)?;
    db.close()?;
    // Reopen in each mode; what was there is there, and a write in that mode survives the next.
    for mode in [WalSyncMode::Sync, WalSyncMode::Async, WalSyncMode::Normal] {
        let db = Database::open(dir, config(mode))?;
        let replayed: u64 = db.start_reports().iter().map(|r| r.replayed_records).sum();
        c.check(
            &format!("reopen in {mode:?}: start_reports() show the WAL replayed"),
            replayed >= 110,
            replayed,
        );
        c.check(
            &format!("reopen in {mode:?}: stats() recovery agrees"),
            db.stats()?.total().recovery.records_replayed == replayed,
            format!("{:?}", db.stats()?.total().recovery),
        );
        c.eq(&format!("reopen in {mode:?}: wal_sync_mode()"), db.wal_sync_mode(), mode);
        c.check(
            &format!("reopen in {mode:?}: every key and value persisted, deletes stayed deleted"),
            collect(db.scan_prefix(b"d:")?)? == all,
            "the data differs",
        );
        c.eq(
            &format!("reopen in {mode:?}: the transaction's write"),
            db.get(b"d:tx")?,
            v("committed"),
        );
        db.put(format!("mode:{mode:?}"), b"written")?;
        db.close()?;
    }
    let db = Database::open(dir, config(WalSyncMode::Normal))?;
    c.eq("writes made in each mode persisted", collect(db.scan_prefix(b"mode:")?)?.len(), 3);
    c.eq(
        "shard_count() is read from the database, not the config",
        {
            drop(db);
            Database::open(dir, LightningDbConfig { shards: 2, ..config(WalSyncMode::Normal) })?
                .shard_count()
        },
        4,
    );
    Ok(())
}

fn simulated_disk(c: &mut Checks, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    let disk = SimDisk::new(7);
    disk.fail_dead_io(true);
    let db = Database::open_simulated(&disk, dir, config(WalSyncMode::Normal))?;
    let (a, b) = split_pair(&db, "sim");
    db.put(&a, b"acked")?;
    let mut batch = WriteBatch::new();
    batch.put(&a, b"batch")?;
    batch.put(&b, b"batch")?;
    db.write_batch(&batch)?;
    disk.crash(); // the process dies: what Normal acknowledged must survive
    drop(db);
    let db = Database::open_simulated(&disk, dir, config(WalSyncMode::Normal))?;
    c.eq(
        "open_simulated: acknowledged writes survive a simulated crash",
        db.multi_get(&[a.as_slice(), b.as_slice()])?,
        vec![v("batch"), v("batch")],
    );
    db.close()
}
