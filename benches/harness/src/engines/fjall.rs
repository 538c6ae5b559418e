//! fjall (pure-Rust LSM-tree on `lsm-tree`) under the harness: one keyspace, the shared
//! block cache sized by `cache_bytes`, LZ4 only when compression is asked for.
//!
//! Durability: every insert/remove/batch is appended to fjall's journal and handed to the OS
//! with write(2) (`PersistMode::Buffer`, fjall's default with `manual_journal_persist(false)`).
//! In sync mode each put/delete is followed by `Database::persist(PersistMode::SyncData)`
//! (fdatasync of the journal) and each batch commits with `durability(Some(SyncData))`.
//!
//! Transactions (the `transfer` workload, `EngineConfig::transactional`): the same database
//! opened as an `OptimisticTxDatabase`; a transfer is one optimistic `WriteTransaction`
//! committed with the same durability as a batch, and a commit refused for a conflict is
//! reported to the runner, which retries it.

use ::fjall::config::CompressionPolicy;
use ::fjall::{
    CompressionType, Conflict, Database, Keyspace, KeyspaceCreateOptions, OptimisticTxDatabase,
    OptimisticTxKeyspace, PersistMode, Readable,
};

use crate::engine::{
    apply_transfer, decode_balance, err, BatchOp, Engine, EngineConfig, Mode, Result, Transfer,
};

/// Memtable size of the keyspace (fjall's default, stated so the report shows it).
const MEMTABLE_BYTES: u64 = 64 << 20;

/// Applies the harness's database settings to a fjall builder: a macro, as the builder's type
/// parameter (fjall's `Openable`) is not public, and the plain and the transactional database
/// must get exactly the same settings.
macro_rules! configured {
    ($builder:expr, $cfg:expr, $workers:expr, $journal:expr) => {
        $builder
            .cache_size($cfg.cache_bytes.max(1))
            .worker_threads($workers)
            .journal_compression($journal)
            .manual_journal_persist(false)
    };
}

/// fjall 3.
pub struct Fjall {
    db: Database,
    ks: Keyspace,
    /// Opened with `EngineConfig::transactional`: the transactional handles on the same
    /// database and keyspace as `db` and `ks`.
    tx: Option<(OptimisticTxDatabase, OptimisticTxKeyspace)>,
    /// `Some(SyncData)` in sync mode: the persist after every write.
    sync: Option<PersistMode>,
    describe: String,
}

impl Fjall {
    /// Opens a database with one keyspace `bench` in `cfg.dir`.
    pub fn open(cfg: &EngineConfig) -> Result<Self> {
        let workers =
            std::thread::available_parallelism().map(usize::from).unwrap_or(1).clamp(1, 4);
        let (journal, data) = if cfg.compression {
            (CompressionType::Lz4, CompressionPolicy::all(CompressionType::Lz4))
        } else {
            (CompressionType::None, CompressionPolicy::disabled())
        };
        let options = move || {
            KeyspaceCreateOptions::default()
                .data_block_compression_policy(data)
                .index_block_compression_policy(CompressionPolicy::disabled())
                .max_memtable_size(MEMTABLE_BYTES)
        };
        let (db, ks, tx) = if cfg.transactional {
            let txdb = configured!(OptimisticTxDatabase::builder(&cfg.dir), cfg, workers, journal)
                .open()
                .map_err(err)?;
            let txks = txdb.keyspace("bench", options).map_err(err)?;
            // The plain handles on the same database, so the preload, reads and stats run the
            // same code in both modes. `inner()` is public but left out of fjall's docs
            // (Cargo.lock pins 3.1.13). Plain writes bypass conflict detection: the transfer
            // workload writes through them only in its preload, before any transaction.
            let (db, ks) = (txdb.inner().clone(), txks.as_ref().clone());
            (db, ks, Some((txdb, txks)))
        } else {
            let db = configured!(Database::builder(&cfg.dir), cfg, workers, journal)
                .open()
                .map_err(err)?;
            let ks = db.keyspace("bench", options).map_err(err)?;
            (db, ks, None)
        };
        let sync = (cfg.mode == Mode::Sync).then_some(PersistMode::SyncData);
        let meaning = match cfg.mode {
            Mode::Sync => {
                "sync: every insert/remove is followed by Database::persist(PersistMode::SyncData) \
                 (fdatasync of the journal before the call returns); every batch is one \
                 OwnedWriteBatch committed with durability(Some(PersistMode::SyncData)) (one \
                 fdatasync per batch)"
            }
            Mode::Normal | Mode::Async => {
                "normal/async (same for fjall): PersistMode::Buffer, fjall's default \
                 (manual_journal_persist=false): each insert/remove/batch is written to the \
                 journal and flushed to the OS page cache with write(2) before the call returns; \
                 no fsync per operation, survives a process crash, not a power loss"
            }
        };
        let compression = if cfg.compression {
            "compression on: LZ4 data blocks on every level, LZ4 journal entries above 4 KiB \
             (index blocks uncompressed)"
        } else {
            "compression off (data/index blocks and journal uncompressed)"
        };
        let mut describe = format!(
            "fjall 3.1.13: {meaning}; block cache {} MiB; one keyspace, memtable {} MiB, default \
             4 KiB blocks, bloom filters and leveled compaction; {compression}; {workers} worker \
             threads; values stored inline (no key-value separation); sync() = \
             persist(SyncAll)",
            cfg.cache_bytes >> 20,
            MEMTABLE_BYTES >> 20,
        );
        if tx.is_some() {
            describe.push_str(
                "; opened as OptimisticTxDatabase (same settings): a transfer is one optimistic \
                 WriteTransaction (get both, insert both, commit with the batches' durability); \
                 a commit refused with Conflict is retried by the harness and counted",
            );
        }
        Ok(Fjall { db, ks, tx, sync, describe })
    }

    fn after_write(&self) -> Result<()> {
        match self.sync {
            Some(mode) => self.db.persist(mode).map_err(err),
            None => Ok(()),
        }
    }
}

impl Engine for Fjall {
    fn name(&self) -> &'static str {
        "fjall"
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.ks.insert(key, value).map_err(err)?;
        self.after_write()
    }

    fn get(&self, key: &[u8], out: &mut Vec<u8>) -> Result<bool> {
        match self.ks.get(key).map_err(err)? {
            Some(v) => {
                out.clear();
                out.extend_from_slice(&v);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn delete(&self, key: &[u8]) -> Result<()> {
        self.ks.remove(key).map_err(err)?;
        self.after_write()
    }

    fn write_batch(&self, ops: &[BatchOp<'_>]) -> Result<()> {
        // db.batch() already carries PersistMode::Buffer; sync mode upgrades it.
        let mut batch = self.db.batch();
        if self.sync.is_some() {
            batch = batch.durability(self.sync);
        }
        for (k, v) in ops {
            match v {
                Some(v) => batch.insert(&self.ks, *k, *v),
                None => batch.remove(&self.ks, *k),
            }
        }
        batch.commit().map_err(err)
    }

    fn scan(
        &self,
        start: &[u8],
        limit: usize,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<usize> {
        let mut n = 0;
        for guard in self.ks.range(start..).take(limit) {
            let (k, v) = guard.into_inner().map_err(err)?;
            visit(&k, &v);
            n += 1;
        }
        Ok(n)
    }

    fn sync(&self) -> Result<()> {
        self.db.persist(PersistMode::SyncAll).map_err(err)
    }

    fn transfer(&self, from: &[u8], to: &[u8], amount: u64) -> Result<Option<Transfer>> {
        let Some((db, ks)) = &self.tx else {
            // Not Ok(None): fjall has transactions, this instance was opened without them.
            return Err(err("fjall: transfer needs the database opened with transactional"));
        };
        // write_tx() already carries PersistMode::Buffer; sync mode upgrades it, as batches.
        let mut tx = db.write_tx().map_err(err)?;
        if self.sync.is_some() {
            tx = tx.durability(self.sync);
        }
        // Reads through the transaction mark both keys read: a transaction that commits a
        // write to either after this one's snapshot makes this commit a conflict.
        let a = decode_balance(tx.get(ks, from).map_err(err)?.as_deref())?;
        let b = decode_balance(tx.get(ks, to).map_err(err)?.as_deref())?;
        let (a, b) = apply_transfer(a, b, amount);
        tx.insert(ks, from, &a.to_le_bytes()[..]);
        tx.insert(ks, to, &b.to_le_bytes()[..]);
        match tx.commit().map_err(err)? {
            Ok(()) => Ok(Some(Transfer::Committed)),
            Err(Conflict) => Ok(Some(Transfer::Conflict)),
        }
    }

    fn stats(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({
            "disk_space_bytes": self.db.disk_space().ok(),
            "journal_count": self.db.journal_count(),
            "cache_size_bytes": self.db.cache_size(),
            "cache_capacity_bytes": self.db.cache_capacity(),
            "outstanding_flushes": self.db.outstanding_flushes(),
            "active_compactions": self.db.active_compactions(),
            "compactions_completed": self.db.compactions_completed(),
        }))
    }
}
