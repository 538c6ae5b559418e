//! `WriteBatch`: puts and deletes applied together.
//!
//! Caller-side. A batch is atomic: one whose keys all hash to one shard is one WAL record (one
//! sequence number); one across shards commits by two-phase commit (`src/commit.rs`), all or
//! nothing across any crash its mode promises to survive.

use lightning_shards::{Error, OpRef, Result};

use crate::config::{KEY_BYTES_LIMIT, VALUE_BYTES_LIMIT};

/// An ordered list of puts and deletes. A later operation on the same key wins.
///
/// Keys and values are copied into one buffer (no allocation per operation once it has
/// grown); `clear` keeps the buffer for reuse.
#[derive(Clone, Debug, Default)]
pub struct WriteBatch {
    /// Every operation's key, then its value, back to back.
    bytes: Vec<u8>,
    ops: Vec<Op>,
}

/// Where one operation's bytes are in the batch's buffer.
#[derive(Clone, Copy, Debug)]
struct Op {
    start: usize,
    key_len: usize,
    /// `None`: a delete.
    value_len: Option<usize>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        WriteBatch::default()
    }

    /// Adds a put. Fails for an empty key (`Error::InvalidArgument`) and for a key or value over
    /// the format's absolute limits (64 KiB keys, 1 GiB values); the database's configured
    /// limits are checked by `write_batch`.
    pub fn put(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<()> {
        let (key, value) = (key.as_ref(), value.as_ref());
        check_absolute(key, Some(value))?;
        self.push(key, Some(value));
        Ok(())
    }

    /// Adds a delete. Fails for an empty key and for a key over the format's absolute limit.
    pub fn delete(&mut self, key: impl AsRef<[u8]>) -> Result<()> {
        let key = key.as_ref();
        check_absolute(key, None)?;
        self.push(key, None);
        Ok(())
    }

    fn push(&mut self, key: &[u8], value: Option<&[u8]>) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(key);
        self.bytes.extend_from_slice(value.unwrap_or_default());
        self.ops.push(Op { start, key_len: key.len(), value_len: value.map(<[u8]>::len) });
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Removes every operation.
    pub fn clear(&mut self) {
        self.ops.clear();
        self.bytes.clear();
    }

    /// The operations in order, borrowed.
    pub(crate) fn ops(&self) -> impl Iterator<Item = OpRef<'_>> + '_ {
        self.ops.iter().map(|op| {
            let key_end = op.start + op.key_len;
            let key = &self.bytes[op.start..key_end];
            match op.value_len {
                Some(n) => OpRef::Put { key, value: &self.bytes[key_end..key_end + n] },
                None => OpRef::Delete { key },
            }
        })
    }
}

fn check_absolute(key: &[u8], value: Option<&[u8]>) -> Result<()> {
    if key.is_empty() {
        return Err(crate::db::empty_key());
    }
    if key.len() > KEY_BYTES_LIMIT {
        return Err(Error::LimitExceeded {
            what: "key bytes",
            actual: key.len() as u64,
            max: KEY_BYTES_LIMIT as u64,
        });
    }
    if let Some(v) = value {
        if v.len() > VALUE_BYTES_LIMIT {
            return Err(Error::LimitExceeded {
                what: "value bytes",
                actual: v.len() as u64,
                max: VALUE_BYTES_LIMIT as u64,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_in_order() {
        let mut b = WriteBatch::new();
        b.put(b"a", b"1").unwrap();
        b.delete(b"a").unwrap();
        b.put(b"bc", b"").unwrap();
        assert_eq!(b.len(), 3);
        let ops: Vec<_> = b.ops().collect();
        assert_eq!(
            ops,
            vec![
                OpRef::Put { key: b"a", value: b"1" },
                OpRef::Delete { key: b"a" },
                OpRef::Put { key: b"bc", value: b"" },
            ]
        );
        b.clear();
        assert!(b.is_empty());
        assert_eq!(b.ops().count(), 0);
    }

    #[test]
    fn empty_key_is_refused() {
        let mut b = WriteBatch::new();
        assert!(matches!(b.put(b"", b"v"), Err(Error::InvalidArgument { .. })));
        assert!(matches!(b.delete(b""), Err(Error::InvalidArgument { .. })));
        assert!(b.is_empty());
    }

    #[test]
    fn oversized_key_is_refused() {
        let mut b = WriteBatch::new();
        let key = vec![0u8; KEY_BYTES_LIMIT + 1];
        assert!(matches!(b.put(&key, b"v"), Err(Error::LimitExceeded { what: "key bytes", .. })));
        assert!(b.delete(&key).is_err());
        assert!(b.is_empty());
    }
}
