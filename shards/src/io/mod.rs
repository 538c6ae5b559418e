//! The I/O layer: sector-aligned buffers, mapped segments, and thin system-call wrappers.
//!
//! This is the only module of the shard crate that contains `unsafe` code; each site carries a
//! `// Safety:` comment and is listed in `docs/SAFETY.md`.

pub mod aligned;
pub mod mapped;
pub mod sys;
