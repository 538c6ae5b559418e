//! The shard runtime: one io_uring ring per shard thread, and the event loop over it.
//!
//! ADR 0001 compares this loop with a glommio executor on the same micro-benchmarks and
//! records why the shard threads run our own loop on the `io-uring` crate.

pub mod event_loop;
pub mod ring;
