//! LMDB (through `heed`, LMDB's C code vendored by `lmdb-master-sys`) under the harness: one
//! named database, one write transaction per put/delete/batch, one read transaction per
//! get/scan, a 64 GiB map.
//!
//! Durability: sync mode uses LMDB's default flags (every commit fdatasyncs the data pages,
//! then the meta page); normal/async use `MDB_NOSYNC | MDB_WRITEMAP` (commits write into the
//! shared mapping and never sync). LMDB has no cache of its own: it reads through the mmap,
//! i.e. the OS page cache, so `cache_bytes` does not apply.
//!
//! Transactions: a transfer is one write transaction (read both, write both, commit). LMDB
//! serializes write transactions with its writer mutex, so a transfer never conflicts.

use heed::types::Bytes;
use heed::{CommitOrAbort, Database, Env, EnvFlags, EnvOpenOptions};
use std::ops::Bound;

use crate::engine::{
    apply_transfer, decode_balance, err, BatchOp, Engine, EngineConfig, Mode, Result, Transfer,
};

/// Address space reserved for the map: a sparse file, only pages in use reach the disk.
const MAP_BYTES: usize = 64 << 30;

/// LMDB.
pub struct Lmdb {
    env: Env,
    db: Database<'static, Bytes, Bytes>,
    describe: String,
}

impl Lmdb {
    /// Opens an environment in `cfg.dir` with one database `bench`.
    pub fn open(cfg: &EngineConfig) -> Result<Self> {
        std::fs::create_dir_all(&cfg.dir).map_err(err)?;
        let mut flags = match cfg.mode {
            Mode::Sync => EnvFlags::empty(),
            Mode::Normal | Mode::Async => EnvFlags::NO_SYNC | EnvFlags::WRITE_MAP,
        };
        // `MDB_NORDAHEAD`, which LMDB suggests when the data is larger than memory (the
        // kernel's read-ahead on the mapping otherwise reads far more than each lookup needs).
        if std::env::var_os("LMDB_NORDAHEAD").is_some_and(|v| v == "1") {
            flags |= EnvFlags::NO_READ_AHEAD;
        }
        // LMDB stores a large value in contiguous overflow pages and the map must hold the
        // whole data set: 64 GiB of address space (or room for 1024 of the largest values, if
        // that is more) covers every data set this harness writes on this machine.
        let map_bytes = MAP_BYTES.max(cfg.max_value_bytes.saturating_mul(1024));
        let mut opts = EnvOpenOptions::new();
        opts.map_size(map_bytes).max_dbs(4).max_readers(126);
        // SAFETY: `cfg.dir` is a fresh directory private to this process and this is the only
        // environment opened on it, so no other mapping of these files exists; the flags are
        // valid LMDB environment flags.
        let env = unsafe {
            opts.flags(flags);
            opts.open(&cfg.dir)
        }
        .map_err(err)?;
        let wtxn = env.write_txn().map_err(err)?;
        let created = env
            .create_databases_and_commit(wtxn, |opener, wtxn| -> heed::Result<_> {
                let db = opener.create_database::<Bytes, Bytes>(wtxn, Some("bench"))?;
                Ok(CommitOrAbort::<_, ()>::Commit(db))
            })
            .map_err(err)?;
        let db = match created {
            CommitOrAbort::Commit(db) => db,
            CommitOrAbort::Abort(()) => return Err(err("lmdb: creating the database aborted")),
        };
        let meaning = match cfg.mode {
            Mode::Sync => {
                "sync: default flags: every write transaction commit (one per put/delete/batch) \
                 fdatasyncs the data pages and then writes and syncs the meta page before it \
                 returns"
            }
            Mode::Normal | Mode::Async => {
                "normal/async (same for LMDB): MDB_NOSYNC | MDB_WRITEMAP: commits write straight \
                 into the shared file mapping and never fsync/msync; survives a process crash \
                 (the pages are in the page cache), not an OS crash or power loss"
            }
        };
        let describe = format!(
            "LMDB via heed 0.23.1 (lmdb-master-sys): {meaning}; one named database, one write \
             transaction per put/delete/batch (writers serialized by LMDB's mutex), a read \
             transaction per get/scan; map_size {} GiB (sparse); no engine cache: reads go \
             through the mmap, i.e. the OS page cache, so --cache-mb does not apply; no \
             compression; sync() = mdb_env_sync(force)",
            map_bytes >> 30
        );
        Ok(Lmdb { env, db, describe })
    }
}

impl Engine for Lmdb {
    fn name(&self) -> &'static str {
        "lmdb"
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let mut wtxn = self.env.write_txn().map_err(err)?;
        self.db.put(&mut wtxn, key, value).map_err(err)?;
        wtxn.commit().map_err(err)
    }

    fn get(&self, key: &[u8], out: &mut Vec<u8>) -> Result<bool> {
        let rtxn = self.env.read_txn().map_err(err)?;
        match self.db.get(&rtxn, key).map_err(err)? {
            Some(v) => {
                out.clear();
                out.extend_from_slice(v);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// One read transaction for all the keys, each value copied out as `get` does.
    fn multi_get(&self, keys: &[Vec<u8>]) -> Result<usize> {
        let rtxn = self.env.read_txn().map_err(err)?;
        let (mut found, mut out) = (0, Vec::new());
        for k in keys {
            // Copied out, as `get` does.
            if let Some(v) = self.db.get(&rtxn, k).map_err(err)? {
                out.clear();
                out.extend_from_slice(v);
                found += 1;
            }
        }
        Ok(found)
    }

    fn delete(&self, key: &[u8]) -> Result<()> {
        let mut wtxn = self.env.write_txn().map_err(err)?;
        self.db.delete(&mut wtxn, key).map_err(err)?;
        wtxn.commit().map_err(err)
    }

    fn write_batch(&self, ops: &[BatchOp<'_>]) -> Result<()> {
        let mut wtxn = self.env.write_txn().map_err(err)?;
        for (k, v) in ops {
            match v {
                Some(v) => self.db.put(&mut wtxn, k, v).map_err(err)?,
                None => {
                    self.db.delete(&mut wtxn, k).map_err(err)?;
                }
            }
        }
        wtxn.commit().map_err(err)
    }

    fn scan(
        &self,
        start: &[u8],
        limit: usize,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<usize> {
        let rtxn = self.env.read_txn().map_err(err)?;
        let range = (Bound::Included(start), Bound::Unbounded);
        let mut n = 0;
        for item in self.db.range(&rtxn, &range).map_err(err)?.take(limit) {
            let (k, v) = item.map_err(err)?;
            visit(k, v);
            n += 1;
        }
        Ok(n)
    }

    fn transfer(&self, from: &[u8], to: &[u8], amount: u64) -> Result<Option<Transfer>> {
        let mut wtxn = self.env.write_txn().map_err(err)?;
        // Decoded at once: the values borrow the transaction, which the puts need mutably.
        let a = decode_balance(self.db.get(&wtxn, from).map_err(err)?)?;
        let b = decode_balance(self.db.get(&wtxn, to).map_err(err)?)?;
        let (a, b) = apply_transfer(a, b, amount);
        self.db.put(&mut wtxn, from, &a.to_le_bytes()).map_err(err)?;
        self.db.put(&mut wtxn, to, &b.to_le_bytes()).map_err(err)?;
        wtxn.commit().map_err(err)?;
        Ok(Some(Transfer::Committed))
    }

    fn sync(&self) -> Result<()> {
        self.env.force_sync().map_err(err)
    }
}
