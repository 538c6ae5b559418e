//! # Lightning DB
//!
//! An embedded, thread-per-core key-value storage engine for Linux. The keyspace is
//! hash-sharded across cores; each shard is owned by one pinned thread running its own
//! io_uring event loop, with its own write-ahead log and memtable. Shards share nothing.
//!
//! ```no_run
//! use lightning_db::{Database, WriteBatch};
//!
//! # fn main() -> lightning_db::Result<()> {
//! let db = Database::open("my_database", Default::default())?;
//! db.put(b"key", b"value")?;
//! assert_eq!(db.get(b"key")?, Some(b"value".to_vec()));
//! let mut batch = WriteBatch::new();
//! batch.put(b"key1", b"value1")?;
//! batch.delete(b"old_key")?;
//! db.write_batch(&batch)?;
//! for item in db.scan(None, None)? {
//!     let (_key, _value) = item?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Data path: caller → [`router`] (stable hash) → the shard's bounded ingress queue (a parked
//! flag and an eventfd doorbell: no system call per request while the shard is busy) → the
//! shard loop (WAL group commit, memtable) → acknowledgement once the [`WalSyncMode`] promise
//! holds. Reads run on the caller's thread against the shard's published memtable view.
//!
//! Durability ([`WalSyncMode`]): `Sync` survives power loss, `Normal` (default) survives a
//! process crash and syncs every `sync_interval_ms`, `Async` may lose the last
//! `flush_interval_ms`. See `docs/` for the formats, the recovery table and the benchmarks.
//!
//! Transactions ([`Transaction`], the seed's id-based calls) and `write_batch` are atomic across
//! shards (two-phase commit); [`Snapshot`]s, scans and `multi_get` read one consistent view of
//! every shard. `docs/ARCHITECTURE.md` has the protocol.
//!
//! Not yet: storage below the memtable (the whole data set lives in memory and the WAL is
//! replayed at open).

#![deny(unsafe_code)]

/// The README's code blocks, compiled by `cargo test` so the quick start cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod batch;
mod commit;
mod config;
mod db;
mod meta;
pub mod router;
mod scan;
mod snapshot;
mod txn;

pub use batch::WriteBatch;
pub use config::{LightningDbConfig, KEY_BYTES_LIMIT, MAX_SHARDS, VALUE_BYTES_LIMIT};
pub use db::{Database, DbStats, MemoryUsage};
pub use lightning_shards::{
    Cut, Distribution, Error, OpKind, RecoveryReport, RecoveryStats, Result, RingSetup, ShardStats,
    Stall, StartReport, WalSyncMode, LATENCY_SAMPLE_EVERY, STALLS_KEPT,
};
pub use scan::{DbIterator, CHUNK_MAX};

/// Time this process spent giving freed heap memory back to the operating system: after each
/// flush, a background thread calls glibc's `malloc_trim` (`docs/ARCHITECTURE.md`, "Memory").
pub fn heap_trim_time() -> std::time::Duration {
    lightning_shards::trim_time()
}
pub use snapshot::Snapshot;
pub use txn::{Isolation, Transaction, TxIterator, TRANSACTION_ATTEMPTS};

/// The simulated disk: in memory, with process crashes, power loss, torn and failed writes,
/// by seed (feature `simulation`). Open a database on it with `Database::open_simulated`.
#[cfg(feature = "simulation")]
pub mod sim {
    pub use lightning_shards::sim::{
        io_leaks, Fault, FaultOp, FaultRates, FiredFault, IoLeaks, SimDisk,
    };
}
