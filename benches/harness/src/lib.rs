//! `lightning-bench`: the sharded benchmark harness of Lightning DB.
//!
//! Drives `lightning_db` and, behind cargo features, its peers (fjall, redb, sled, LMDB, RocksDB)
//! through one [`engine::Engine`] trait with the same knobs, on db_bench- and YCSB-style
//! [`workload`]s, closed or open loop ([`runner`]), and writes reports ([`report`]) from the
//! recorded [`model`]: a terminal table, JSON, `.hgrm` percentile files, interval logs and one
//! self-contained HTML page with SVG charts.

pub mod cli;
pub mod engine;
pub mod engines;
pub mod machine;
pub mod model;
pub mod report;
pub mod runner;
pub mod summary;
pub mod workload;
