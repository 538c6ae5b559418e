//! The quick start: the seed's whole quick start verbatim, then a transaction handle, a
//! snapshot and a reopen.
//!
//! `cargo run --release --example basic_usage` runs it in `./my_database`, then removes the
//! directory (unless it existed before).

use lightning_db::{Database, WriteBatch};

#[allow(unused_variables)] // the quick start binds `k` and `v` and does nothing with them
#[rustfmt::skip] // verbatim, as the seed's README has it
fn quick_start() -> Result<(), Box<dyn std::error::Error>> {
let db = Database::open("my_database", Default::default())?;
db.put(b"key", b"value")?;
assert_eq!(db.get(b"key")?, Some(b"value".to_vec()));
let mut batch = WriteBatch::new();
batch.put(b"key1", b"value1")?;
batch.delete(b"old_key")?;
db.write_batch(&batch)?;                 // atomic, across shards
let tx_id = db.begin_transaction()?;
db.put_tx(tx_id, b"tx_key", b"tx_value")?;
db.commit_transaction(tx_id)?;
for item in db.scan(None, None)? { let (k, v) = item?; }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fresh = !std::path::Path::new("my_database").exists();
    quick_start()?;

    let db = Database::open("my_database", Default::default())?;
    assert_eq!(db.get(b"tx_key")?, Some(b"tx_value".to_vec()));

    // A transaction handle: reads its own writes, commits all or nothing, rolls back on drop.
    db.put(b"alice", 100u64.to_le_bytes())?;
    db.put(b"bob", 0u64.to_le_bytes())?;
    db.transaction(|tx| {
        let alice = u64::from_le_bytes(
            tx.get(b"alice")?.unwrap_or_default().try_into().unwrap_or_default(),
        );
        let bob =
            u64::from_le_bytes(tx.get(b"bob")?.unwrap_or_default().try_into().unwrap_or_default());
        tx.put(b"alice", (alice - 30).to_le_bytes())?;
        tx.put(b"bob", (bob + 30).to_le_bytes())
    })?;

    // A snapshot: one unchanging view across every shard.
    let snapshot = db.snapshot()?;
    db.put(b"alice", 0u64.to_le_bytes())?;
    assert_eq!(snapshot.get(b"alice")?, Some(70u64.to_le_bytes().to_vec()));
    let keys: Vec<_> =
        snapshot.scan(None, None)?.map(|r| r.map(|(k, _)| k)).collect::<Result<_, _>>()?;
    println!(
        "{} shards; the snapshot holds {} keys; bob has {:?}",
        db.shard_count(),
        keys.len(),
        snapshot.get(b"bob")?.map(|v| u64::from_le_bytes(v.try_into().unwrap_or_default()))
    );
    drop(snapshot);
    db.close()?;

    // Reopen: everything acknowledged is still there (the WAL is replayed).
    let db = Database::open("my_database", Default::default())?;
    assert_eq!(db.get(b"key1")?, Some(b"value1".to_vec()));
    assert_eq!(db.get(b"bob")?, Some(30u64.to_le_bytes().to_vec()));
    println!("reopened: key1 = {:?}", db.get(b"key1")?.map(String::from_utf8));
    db.close()?;
    if fresh {
        let _ = std::fs::remove_dir_all("my_database");
    }
    Ok(())
}
