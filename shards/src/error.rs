//! The one error type of Lightning DB.
//!
//! Every fallible call in both crates returns [`Error`]; `lightning_db` re-exports it. Errors
//! are values: library code never panics on bad input, a hostile environment or corrupt files.
//! Shared: errors cross from shard threads to caller threads inside replies, so the type is
//! `Send + Sync`.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Result alias used across Lightning DB.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in Lightning DB.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A system call failed. `op` says what the engine was doing.
    Io {
        /// What the engine was doing, e.g. "fdatasync WAL segment".
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The error the kernel returned.
        source: io::Error,
    },
    /// A file holds bytes that fail their checksum or break the format, in a place where a torn
    /// write cannot explain them. Nothing was skipped: the database refuses to open.
    Corruption {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the first bad byte found.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// An earlier fdatasync (or durable write) of this shard failed. The state of the data in the
    /// device cache is unknown, so the shard rejects writes until the database is reopened.
    Poisoned {
        /// The shard that failed.
        shard: usize,
    },
    /// An input is larger than a configured or built-in limit.
    LimitExceeded {
        /// What was too large, e.g. "key bytes".
        what: &'static str,
        /// The size given.
        actual: u64,
        /// The largest size accepted.
        max: u64,
    },
    /// A configuration field has a value the engine cannot run with.
    InvalidConfig {
        /// The field name in `LightningDbConfig`.
        field: &'static str,
        /// Why the value is rejected.
        reason: String,
    },
    /// An argument is not acceptable (for example an empty key).
    InvalidArgument {
        /// What is wrong with it.
        what: String,
    },
    /// The environment lacks something the engine needs (io_uring, memlock, O_DIRECT).
    EnvUnsupported {
        /// What is missing, and how to fix it.
        what: String,
    },
    /// The database directory is already open, in this process or another one.
    Locked {
        /// The lock file that is held.
        path: PathBuf,
    },
    /// The path cannot hold a database (it is a file, or it holds something else).
    InvalidPath {
        /// The path given.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// The database files were written by an incompatible format version.
    IncompatibleVersion {
        /// The file whose version is wrong.
        file: PathBuf,
        /// Version found in the file.
        found: u32,
        /// Version this build reads.
        supported: u32,
    },
    /// The database (or this shard) is closed or shutting down.
    Closed,
    /// A transaction (or a cross-shard batch) lost a race with another writer and was not
    /// applied: nothing of it is visible. Retrying it from the start can succeed
    /// ([`Error::is_retryable`]).
    Conflict {
        /// What conflicted, e.g. "a key this transaction wrote was written after its snapshot".
        reason: &'static str,
    },
    /// The transaction id is unknown, or its transaction already committed or rolled back.
    TransactionNotFound {
        /// The id given.
        id: u64,
    },
    /// The transaction stayed open longer than `transaction_timeout_ms` and was rolled back.
    TransactionTimedOut {
        /// Its id.
        id: u64,
    },
    /// `max_active_transactions` transactions are open already.
    TooManyTransactions {
        /// The configured limit.
        max: usize,
    },
}

impl Error {
    /// Builds an [`Error::Io`].
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io { op, path: path.into(), source }
    }

    /// Builds an [`Error::Corruption`].
    pub fn corruption(file: impl Into<PathBuf>, offset: u64, what: impl Into<String>) -> Self {
        Error::Corruption { file: file.into(), offset, what: what.into() }
    }

    /// True when the same work, retried from the start, can succeed: a [`Error::Conflict`].
    /// `Database::transaction` retries these itself.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }

    /// True when the error came from a full disk (ENOSPC or EDQUOT).
    pub fn is_disk_full(&self) -> bool {
        match self {
            Error::Io { source, .. } => {
                matches!(source.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
            }
            _ => false,
        }
    }

    /// A copy of this error for fanning one failure out to several waiting callers. The
    /// `io::Error` source keeps its kind and OS code; its custom payload becomes text.
    pub fn duplicate(&self) -> Self {
        match self {
            Error::Io { op, path, source } => Error::Io {
                op,
                path: path.clone(),
                source: match source.raw_os_error() {
                    Some(code) => io::Error::from_raw_os_error(code),
                    None => io::Error::new(source.kind(), source.to_string()),
                },
            },
            Error::Corruption { file, offset, what } => {
                Error::Corruption { file: file.clone(), offset: *offset, what: what.clone() }
            }
            Error::Poisoned { shard } => Error::Poisoned { shard: *shard },
            Error::LimitExceeded { what, actual, max } => {
                Error::LimitExceeded { what, actual: *actual, max: *max }
            }
            Error::InvalidConfig { field, reason } => {
                Error::InvalidConfig { field, reason: reason.clone() }
            }
            Error::InvalidArgument { what } => Error::InvalidArgument { what: what.clone() },
            Error::EnvUnsupported { what } => Error::EnvUnsupported { what: what.clone() },
            Error::Locked { path } => Error::Locked { path: path.clone() },
            Error::InvalidPath { path, reason } => {
                Error::InvalidPath { path: path.clone(), reason: reason.clone() }
            }
            Error::IncompatibleVersion { file, found, supported } => Error::IncompatibleVersion {
                file: file.clone(),
                found: *found,
                supported: *supported,
            },
            Error::Closed => Error::Closed,
            Error::Conflict { reason } => Error::Conflict { reason },
            Error::TransactionNotFound { id } => Error::TransactionNotFound { id: *id },
            Error::TransactionTimedOut { id } => Error::TransactionTimedOut { id: *id },
            Error::TooManyTransactions { max } => Error::TooManyTransactions { max: *max },
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { op, path, source } => {
                write!(f, "I/O error while trying to {op} ({}): {source}", path.display())
            }
            Error::Corruption { file, offset, what } => {
                write!(f, "corruption in {} at byte offset {offset}: {what}", file.display())
            }
            Error::Poisoned { shard } => write!(
                f,
                "shard {shard} is poisoned: an earlier fdatasync failed, so it rejects writes \
                 until the database is reopened"
            ),
            Error::LimitExceeded { what, actual, max } => {
                write!(f, "{what} is {actual}, over the limit of {max}")
            }
            Error::InvalidConfig { field, reason } => {
                write!(f, "invalid configuration: `{field}` {reason}")
            }
            Error::InvalidArgument { what } => write!(f, "invalid argument: {what}"),
            Error::EnvUnsupported { what } => write!(f, "environment not supported: {what}"),
            Error::Locked { path } => write!(
                f,
                "database is already open (lock file {} is held by this or another process)",
                path.display()
            ),
            Error::InvalidPath { path, reason } => {
                write!(f, "cannot use {} as a database directory: {reason}", path.display())
            }
            Error::IncompatibleVersion { file, found, supported } => write!(
                f,
                "{} has format version {found}, this build reads version {supported}",
                file.display()
            ),
            Error::Closed => {
                write!(f, "the database is closed, or the shard serving the request stopped")
            }
            Error::Conflict { reason } => {
                write!(f, "conflict, nothing was applied (retry from the start): {reason}")
            }
            Error::TransactionNotFound { id } => {
                write!(f, "transaction {id} is unknown, or already committed or rolled back")
            }
            Error::TransactionTimedOut { id } => write!(
                f,
                "transaction {id} was open longer than transaction_timeout_ms and was rolled back"
            ),
            Error::TooManyTransactions { max } => {
                write!(f, "max_active_transactions ({max}) transactions are open already")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keeps_os_code() {
        let e = Error::io("write", "/x", io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(e.is_disk_full());
        assert!(e.duplicate().is_disk_full());
        assert!(e.to_string().contains("/x"));
    }

    #[test]
    fn display_names_file_and_offset() {
        let e = Error::corruption("/db/wal", 4096, "bad crc");
        let s = e.to_string();
        assert!(s.contains("/db/wal") && s.contains("4096") && s.contains("bad crc"));
    }
}
