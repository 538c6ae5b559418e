//! `lightning_shards`: the per-core shard engine of Lightning DB.
//!
//! A shard owns one slice of the keyspace and everything that stores it: a pinned thread
//! running an event loop over one io_uring ring ([`runtime`]), a write-ahead log of
//! preallocated segments with group commit ([`wal`]), an MVCC memtable that caller threads read
//! directly ([`memtable`], [`view`]), and recovery by replay. It knows nothing of other shards:
//! routing, cross-shard batches and merged scans live in `lightning_db`.
//!
//! Data path inside a shard: ingress queue ([`ingress`]) → loop turn → WAL record → memtable
//! → acknowledgement when the `WalSyncMode` promise holds → `visible_seq` raised.

#![deny(unsafe_code)]

pub mod config;
pub mod error;
pub mod ingress;
pub mod io;
pub mod memtable;
pub mod runtime;
pub mod shard;
#[cfg(any(test, feature = "simulation"))]
pub mod simulation;
pub mod stats;
pub mod version;
pub mod view;
pub mod wal;

pub use config::{Limits, ShardConfig, WalSyncMode};
pub use error::{Error, Result};
pub use shard::{ShardHandle, StartReport, StartingShard};
