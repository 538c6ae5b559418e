//! The quick start: open a database, write, read, batch, scan, sync.
//!
//! `cargo run --release --example basic_usage` runs it in `./my_database` (or the directory
//! given as the first argument), then removes the directory.

use lightning_db::{Database, WriteBatch};

fn main() -> lightning_db::Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "my_database".to_string());
    let fresh = !std::path::Path::new(&dir).exists();
    {
        let db = Database::open(&dir, Default::default())?;
        db.put(b"key", b"value")?;
        assert_eq!(db.get(b"key")?, Some(b"value".to_vec()));

        let mut batch = WriteBatch::new();
        batch.put(b"key1", b"value1")?;
        batch.delete(b"old_key")?;
        db.write_batch(&batch)?; // atomic per shard (cross-shard atomicity: transactions issue)

        for i in 0..1000u32 {
            db.put(format!("user:{i:04}"), format!("name {i}"))?;
        }
        let mut count = 0;
        for item in db.scan(Some(b"user:0100"), Some(b"user:0200"))? {
            let (_key, _value) = item?;
            count += 1;
        }
        assert_eq!(count, 100);
        let last = db.scan_prefix(b"user:")?.next_back().transpose()?;
        println!(
            "{} shards; scanned {count} keys; last user key {:?}",
            db.shard_count(),
            last.map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
        );
        db.sync()?;
        db.close()?;
    }
    // Reopen: everything acknowledged is still there (the WAL is replayed).
    let db = Database::open(&dir, Default::default())?;
    assert_eq!(db.get(b"key1")?, Some(b"value1".to_vec()));
    assert_eq!(db.get(b"user:0999")?, Some(b"name 999".to_vec()));
    println!("reopened: key1 = {:?}", db.get(b"key1")?.map(String::from_utf8));
    db.close()?;
    if fresh {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}
