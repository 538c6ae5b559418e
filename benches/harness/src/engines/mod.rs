//! One adapter per engine. Peers compile only with their cargo feature.

pub mod lightning;
