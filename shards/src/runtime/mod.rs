//! The shard runtime: the event loop every shard thread runs over its storage (one io_uring
//! ring per shard thread in production, `io::uring`).
//!
//! ADR 0001 compares this loop with a glommio executor on the same micro-benchmarks and
//! records why the shard threads run our own loop on the `io-uring` crate.

pub mod event_loop;
