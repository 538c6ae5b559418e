//! One adapter per engine. Peers compile only with their cargo feature.

#[cfg(feature = "fjall")]
pub mod fjall;
pub mod lightning;
#[cfg(feature = "lmdb")]
pub mod lmdb;
#[cfg(feature = "redb")]
pub mod redb;
#[cfg(feature = "rocksdb")]
pub mod rocksdb;
#[cfg(feature = "sled")]
pub mod sled;
