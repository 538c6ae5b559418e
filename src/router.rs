//! Key → shard routing. The function must never change for an existing database: its id is
//! stored in the metadata (`meta::HASH_CRC32C_LEMIRE`), and the shard count is fixed at
//! creation.
//!
//! Shared: pure and `Copy`, used by every caller thread.

/// Routes keys to `shards` shards with crc32c (hardware-accelerated on x86-64 and aarch64)
/// reduced by multiply-shift, which spreads sequential and random keys evenly.
#[derive(Clone, Copy, Debug)]
pub struct Router {
    shards: u32,
}

impl Router {
    /// A router over `shards` (≥ 1) shards.
    pub fn new(shards: u32) -> Self {
        debug_assert!(shards >= 1);
        Router { shards: shards.max(1) }
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.shards as usize
    }

    /// The shard that owns `key`.
    pub fn shard_for(&self, key: &[u8]) -> usize {
        let h = u64::from(crc32c::crc32c(key));
        ((h * u64::from(self.shards)) >> 32) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_values() {
        // These exact values are part of the on-disk contract: never change them.
        let r = Router::new(4);
        assert_eq!(r.shard_for(b""), 0);
        let spread: Vec<usize> = (0u32..8).map(|i| r.shard_for(&i.to_be_bytes())).collect();
        assert_eq!(spread, STABLE_SPREAD);
    }

    const STABLE_SPREAD: [usize; 8] = [1, 2, 2, 1, 2, 1, 1, 2];

    #[test]
    fn roughly_even() {
        let r = Router::new(3);
        let mut counts = [0usize; 3];
        for i in 0u64..30_000 {
            counts[r.shard_for(&((i as u128) << 1).to_be_bytes())] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }
}
