//! `lightning_shards`: the per-core shard engine of Lightning DB.
//!
//! A shard owns one slice of the keyspace and everything that stores it: a pinned thread
//! running an event loop over its storage (one io_uring ring, `runtime`, `io`), a write-ahead
//! log of preallocated segments with group commit and durable claims (`wal`), an MVCC memtable
//! that caller threads read directly (`memtable`, `view`), and recovery by replay. It knows
//! nothing of other shards: routing, cross-shard batches and merged scans live in
//! `lightning_db`.
//!
//! Data path inside a shard: ingress queue (`ingress`) → loop turn → WAL record → memtable →
//! acknowledgement when the `WalSyncMode` promise holds (`shard`) → visible watermark raised.
//!
//! The public surface is what `lightning_db` needs: [`ShardHandle`] (start, write, read, scan,
//! sync, stats, stop), [`ShardConfig`], [`WriteOp`], [`Ticket`], the statistics, the errors.
//! Feature `simulation` adds the simulated disk and the simulation runner ([`sim`]); feature
//! `internals` opens the inner modules to the crate's own micro-benchmarks ([`internals`], not
//! a stable API).

#![deny(unsafe_code)]

mod commit;
mod config;
mod error;
mod heap;
mod ingress;
mod io;
mod memtable;
mod oracle;
mod runtime;
mod shard;
#[cfg(any(test, feature = "simulation"))]
mod simulation;
mod stats;
mod tree;
mod version;
mod view;
mod wal;

pub use commit::LATENCY_SAMPLE_EVERY;
pub use commit::{KeyRange, TxPart, HELD};
pub use config::{Limits, ShardConfig, WalSyncMode};
pub use error::{Error, Result};
pub use heap::trim_time;
pub use io::uring::RingSetup;
pub use memtable::{Chunk, Direction, KeyBytes};
pub use oracle::{Oracle, SnapshotGuard};
pub use shard::{
    commit_prepared, InDoubt, ShardHandle, ShardSnapshot, StartReport, StartingShard, Stopping,
    Ticket, BLOCKED_WRITE_PATIENCE, OFFLOAD_BATCH_OPS,
};
pub use stats::{Distribution, FlushStats, OpKind, RecoveryStats, ShardStats, Stall, STALLS_KEPT};
pub use tree::{ScanValue, TreeCursor};
pub use version::{Lsn, Ts};
pub use view::ScanChunk;
pub use wal::reader::{Cut, RecoveryReport};
pub use wal::record::{AsOp, OpRef, PrepareRecord, WriteOp};

/// Shards a database gets by default: one per CPU this process may run on.
pub fn default_shard_count() -> usize {
    io::sys::allowed_cpus().len().max(1)
}

/// The CPU shard `shard_id` is pinned to by default: the CPUs this process may run on, in
/// turn.
pub fn cpu_for_shard(shard_id: usize) -> Option<usize> {
    let cpus = io::sys::allowed_cpus();
    (!cpus.is_empty()).then(|| cpus[shard_id % cpus.len()])
}

/// The simulated disk and the simulation runner (feature `simulation`): shards on an in-memory
/// disk that crashes, loses power, tears and fails writes, by seed.
#[cfg(feature = "simulation")]
pub mod sim {
    pub use crate::io::sim::{
        Completion as SimCompletion, Fault, FaultOp, FaultRates, FiredFault, SimDisk, SimFile,
        SimMap, SimRng, SimStorage, SIM_SECTOR_BYTES,
    };
    pub use crate::io::{io_leaks, IoLeaks};
    pub use crate::simulation::{run_seed, SeedFailure, SeedSummary, SimOptions};
}

/// The inner modules, for the crate's own micro-benchmarks (feature `internals`). Not a stable
/// API.
#[cfg(feature = "internals")]
pub mod internals {
    pub use crate::ingress::{Completion, Request, Responder, WaitPolicy};
    pub use crate::io::sys::{allowed_cpus, pin_current_thread};
    pub use crate::io::uring::{Registration, UringStorage};
    pub use crate::io::{IoBuf, OpenHow, Storage};
    pub use crate::memtable::{Lookup, Memtable, MemtableWriter};
    pub use crate::wal::record::{encode_write, parse, write_record_bytes, Parsed};
}
