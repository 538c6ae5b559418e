//! Disk space under overwrites: 30 rounds of overwriting the same 100 000 keys (100-byte
//! values), then a delete of every key; prints the database directory's size after each round,
//! after the deletes, and after a reopen (with the records it replayed).
//!
//! ```sh
//! cargo run --release --example space -- [DIR] [KEYS] [ROUNDS] [SEGMENT_MIB]
//! ```
//!
//! `docs/BENCHMARKS.md` ("Disk space") has the figures.

use std::path::Path;
use std::time::Instant;

use lightning_db::{Database, LightningDbConfig};

fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else { return 0 };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            // Allocated bytes, not the length: segments are preallocated, the tree is sparse-free.
            Ok(m) => std::os::unix::fs::MetadataExt::blocks(&m) * 512,
            Err(_) => 0,
        })
        .sum()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn main() -> lightning_db::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "/tmp/ldb-space".to_string());
    let keys: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let rounds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(30);
    let segment_mib: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let config = LightningDbConfig {
        wal_segment_bytes: segment_mib << 20,
        max_batch_bytes: (segment_mib << 20) as usize / 2,
        max_value_bytes: (segment_mib << 20) as usize / 4,
        ..LightningDbConfig::default()
    };
    let _ = std::fs::remove_dir_all(&dir);
    let db = Database::open(&dir, config.clone())?;
    let started = Instant::now();
    let key = |i: u64| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_be_bytes();
    for round in 0..rounds {
        let value = [round as u8; 100];
        for i in 0..keys {
            db.put(key(i), value)?;
        }
        let s = db.stats()?.total();
        println!(
            "round {:2}: directory {:7.1} MiB, tree {:6.1} MiB ({} free pages), {} flushes",
            round + 1,
            mib(dir_bytes(Path::new(&dir))),
            mib(s.flush.tree_pages * 4096),
            s.flush.tree_free_pages,
            s.flush.flushes
        );
    }
    for i in 0..keys {
        db.delete(key(i))?;
    }
    println!("deleted every key: directory {:.1} MiB", mib(dir_bytes(Path::new(&dir))));
    db.close()?;
    println!(
        "closed after {:.1} s: directory {:.1} MiB",
        started.elapsed().as_secs_f64(),
        mib(dir_bytes(Path::new(&dir)))
    );
    let opened = Instant::now();
    let db = Database::open(&dir, config)?;
    let replayed: u64 = db.start_reports().iter().map(|r| r.replayed_records).sum();
    let left = db.scan(None, None)?.count();
    println!(
        "reopened in {:.3} s: {replayed} records replayed, {left} keys, directory {:.1} MiB",
        opened.elapsed().as_secs_f64(),
        mib(dir_bytes(Path::new(&dir)))
    );
    db.close()
}
