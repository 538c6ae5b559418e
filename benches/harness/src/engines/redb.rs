//! redb (pure-Rust copy-on-write B-tree in one file) under the harness: one table
//! `&[u8] -> &[u8]`, one write transaction per put/delete/batch, one read transaction per
//! get/scan, redb's cache sized by `cache_bytes`.
//!
//! Durability: sync mode commits with `Durability::Immediate` (fsync in the commit, redb's
//! default); normal/async commit with `Durability::None` (no fsync; durable only after a
//! later Immediate commit, which the harness issues in `sync()`).
//!
//! Transactions: a transfer is one write transaction (read both, write both, commit with the
//! mode's durability). redb has one writer at a time (`begin_write` waits for the previous
//! one), so a transfer never conflicts.

use ::redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::engine::{
    apply_transfer, decode_balance, err, BatchOp, Engine, EngineConfig, Mode, Result, Transfer,
};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("bench");

/// redb 4.
pub struct Redb {
    db: Database,
    durability: Durability,
    describe: String,
}

impl Redb {
    /// Creates `bench.redb` in `cfg.dir` with the table already present.
    pub fn open(cfg: &EngineConfig) -> Result<Self> {
        std::fs::create_dir_all(&cfg.dir).map_err(err)?;
        let cache = usize::try_from(cfg.cache_bytes).map_err(err)?;
        let db = Database::builder()
            .set_cache_size(cache)
            .create(cfg.dir.join("bench.redb"))
            .map_err(err)?;
        // Create the table now so that read transactions never find it missing.
        let txn = db.begin_write().map_err(err)?;
        txn.open_table(TABLE).map_err(err)?;
        txn.commit().map_err(err)?;
        let (durability, meaning) = match cfg.mode {
            Mode::Sync => (
                Durability::Immediate,
                "sync: one write transaction per put/delete/batch committed with \
                 Durability::Immediate (redb's default: the commit fsyncs the file before it \
                 returns; one sync per batch)",
            ),
            Mode::Normal | Mode::Async => (
                Durability::None,
                "normal/async (same for redb): one write transaction per put/delete/batch \
                 committed with Durability::None (no fsync; such commits are not persistent \
                 until a later Immediate commit, which the harness only issues in sync(), so a \
                 crash can lose everything since the last sync(), not only the last moments)",
            ),
        };
        let describe = format!(
            "redb 4.6.0: {meaning}; cache {} MiB (redb's default is 1 GiB); one table \
             &[u8] -> &[u8], 4 KiB pages; a fresh read transaction per get/scan; no compression \
             in redb; sync() = empty commit with Durability::Immediate",
            cfg.cache_bytes >> 20
        );
        Ok(Redb { db, durability, describe })
    }

    /// Runs `f` in one write transaction committed with the mode's durability.
    fn write(
        &self,
        f: impl FnOnce(&mut ::redb::Table<'_, &[u8], &[u8]>) -> Result<()>,
    ) -> Result<()> {
        let mut txn = self.db.begin_write().map_err(err)?;
        txn.set_durability(self.durability).map_err(err)?;
        {
            let mut table = txn.open_table(TABLE).map_err(err)?;
            f(&mut table)?;
        }
        txn.commit().map_err(err)
    }
}

impl Engine for Redb {
    fn name(&self) -> &'static str {
        "redb"
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.write(|t| {
            t.insert(key, value).map_err(err)?;
            Ok(())
        })
    }

    fn get(&self, key: &[u8], out: &mut Vec<u8>) -> Result<bool> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(TABLE).map_err(err)?;
        match table.get(key).map_err(err)? {
            Some(v) => {
                out.clear();
                out.extend_from_slice(v.value());
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn delete(&self, key: &[u8]) -> Result<()> {
        self.write(|t| {
            t.remove(key).map_err(err)?;
            Ok(())
        })
    }

    fn write_batch(&self, ops: &[BatchOp<'_>]) -> Result<()> {
        self.write(|t| {
            for (k, v) in ops {
                match v {
                    Some(v) => {
                        t.insert(*k, *v).map_err(err)?;
                    }
                    None => {
                        t.remove(*k).map_err(err)?;
                    }
                }
            }
            Ok(())
        })
    }

    fn scan(
        &self,
        start: &[u8],
        limit: usize,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<usize> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(TABLE).map_err(err)?;
        let mut n = 0;
        for item in table.range::<&[u8]>(start..).map_err(err)?.take(limit) {
            let (k, v) = item.map_err(err)?;
            visit(k.value(), v.value());
            n += 1;
        }
        Ok(n)
    }

    fn transfer(&self, from: &[u8], to: &[u8], amount: u64) -> Result<Option<Transfer>> {
        self.write(|t| {
            // Each balance is decoded before the next table call: the guard borrows the table.
            let a = decode_balance(t.get(from).map_err(err)?.as_ref().map(|v| v.value()))?;
            let b = decode_balance(t.get(to).map_err(err)?.as_ref().map(|v| v.value()))?;
            let (a, b) = apply_transfer(a, b, amount);
            t.insert(from, &a.to_le_bytes()[..]).map_err(err)?;
            t.insert(to, &b.to_le_bytes()[..]).map_err(err)?;
            Ok(())
        })?;
        Ok(Some(Transfer::Committed))
    }

    fn sync(&self) -> Result<()> {
        // An Immediate commit makes every earlier Durability::None commit durable.
        let mut txn = self.db.begin_write().map_err(err)?;
        txn.set_durability(Durability::Immediate).map_err(err)?;
        txn.commit().map_err(err)
    }
}
