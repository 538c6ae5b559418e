//! Helpers shared by the integration test files.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod hostile;

use lightning_db::{Database, LightningDbConfig, WalSyncMode};
use std::path::Path;

/// A config with small WAL segments so tests exercise segment rollover and stay small on disk.
pub fn small_config(mode: WalSyncMode) -> LightningDbConfig {
    LightningDbConfig {
        wal_sync_mode: mode,
        wal_segment_bytes: 1 << 20,
        max_value_bytes: 256 * 1024,
        max_batch_bytes: 512 * 1024,
        sync_interval_ms: 20,
        flush_interval_ms: 20,
        ..Default::default()
    }
}

pub fn open(dir: &Path, mode: WalSyncMode) -> Database {
    Database::open(dir, small_config(mode)).unwrap()
}

pub const MODES: [WalSyncMode; 3] = [WalSyncMode::Sync, WalSyncMode::Normal, WalSyncMode::Async];

/// Collects a scan, panicking on the first error.
pub fn collect(
    iter: impl Iterator<Item = lightning_db::Result<(Vec<u8>, Vec<u8>)>>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    iter.map(|r| r.unwrap()).collect()
}

pub fn key(i: u64) -> Vec<u8> {
    format!("key{i:08}").into_bytes()
}

pub fn value(i: u64, version: u64) -> Vec<u8> {
    format!("value-{i}-{version}-{}", "x".repeat((i % 50) as usize)).into_bytes()
}
