//! The database directory: its lock file and its metadata file.
//!
//! Caller-side, used once by `Database::open`. The lock (`LOCK`, an exclusive `flock`) makes a
//! second open of the same directory fail clearly, from this process or another. The metadata
//! (`META`) fixes what must never change after creation: the shard count, the key→shard hash,
//! and the page size. It is written once, atomically (temp file, fsync, rename, fsync dir).

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use lightning_shards::{Error, Result};

/// File name of the lock.
pub const LOCK_FILE: &str = "LOCK";
/// File name of the metadata.
pub const META_FILE: &str = "META";
const META_MAGIC: [u8; 8] = *b"LDB-META";
/// Version of the metadata format. 1: first format.
pub const META_FORMAT_VERSION: u32 = 1;
/// Bytes of the metadata file.
const META_BYTES: usize = 40;

// Byte offsets of the metadata fields (`docs/FORMAT.md` draws them).
const AT_MAGIC: usize = 0;
const AT_VERSION: usize = 8;
/// Offset of the shard count, for errors that name it.
pub const AT_SHARDS: usize = 12;
const AT_PAGE_SIZE: usize = 16;
/// Offset of the hash id, for errors that name it.
pub const AT_HASH: usize = 20;
const AT_CREATED: usize = 24;
/// Offset of the checksum; it covers every byte before it.
const AT_CRC: usize = 36;
const _: () = assert!(AT_CRC + 4 == META_BYTES && AT_CREATED + 8 <= AT_CRC);
/// The key→shard hash (see `router.rs`). 1: crc32c of the key, Lemire-reduced.
pub const HASH_CRC32C_LEMIRE: u32 = 1;

/// What the metadata records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Shard count, fixed at creation.
    pub shards: u32,
    /// B+tree page size, fixed at creation.
    pub page_size: u32,
    /// Which key→shard hash the database uses.
    pub hash: u32,
    /// Creation time, seconds since the Unix epoch.
    pub created_unix: u64,
}

impl Meta {
    fn encode(&self) -> [u8; META_BYTES] {
        let mut b = [0u8; META_BYTES];
        b[AT_MAGIC..AT_MAGIC + 8].copy_from_slice(&META_MAGIC);
        b[AT_VERSION..AT_VERSION + 4].copy_from_slice(&META_FORMAT_VERSION.to_le_bytes());
        b[AT_SHARDS..AT_SHARDS + 4].copy_from_slice(&self.shards.to_le_bytes());
        b[AT_PAGE_SIZE..AT_PAGE_SIZE + 4].copy_from_slice(&self.page_size.to_le_bytes());
        b[AT_HASH..AT_HASH + 4].copy_from_slice(&self.hash.to_le_bytes());
        b[AT_CREATED..AT_CREATED + 8].copy_from_slice(&self.created_unix.to_le_bytes());
        let crc = crc32c::crc32c(&b[..AT_CRC]);
        b[AT_CRC..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn decode(path: &Path, b: &[u8]) -> Result<Self> {
        let u32_at = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        if b.len() != META_BYTES || b[AT_MAGIC..AT_MAGIC + 8] != META_MAGIC {
            return Err(Error::corruption(path, 0, "not a Lightning DB metadata file"));
        }
        if u32_at(AT_CRC) != crc32c::crc32c(&b[..AT_CRC]) {
            return Err(Error::corruption(path, AT_CRC as u64, "metadata checksum mismatch"));
        }
        let version = u32_at(AT_VERSION);
        if version != META_FORMAT_VERSION {
            return Err(Error::IncompatibleVersion {
                file: path.into(),
                found: version,
                supported: META_FORMAT_VERSION,
            });
        }
        let mut created = [0u8; 8];
        created.copy_from_slice(&b[AT_CREATED..AT_CREATED + 8]);
        Ok(Meta {
            shards: u32_at(AT_SHARDS),
            page_size: u32_at(AT_PAGE_SIZE),
            hash: u32_at(AT_HASH),
            created_unix: u64::from_le_bytes(created),
        })
    }
}

/// Prepares `path` as a database directory: creates it if needed, refusing files.
pub fn ensure_dir(path: &Path, create: bool) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::InvalidPath {
            path: path.into(),
            reason: "it is a file, not a directory".into(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            std::fs::create_dir_all(path)
                .map_err(|e| Error::io("create the database directory", path, e))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::InvalidPath {
            path: path.into(),
            reason: "it does not exist and create_if_missing is false".into(),
        }),
        Err(e) => Err(Error::io("inspect the database directory", path, e)),
    }
}

/// Directories this process has open, so a second open here fails at once and a lock briefly
/// held by a forked child (between `fork` and `exec` every descriptor is shared) is retried.
static OPEN_HERE: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// How long a contended lock is retried before `Error::Locked`: covers a child process that
/// inherited the descriptor and has not reached `exec` yet.
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(250);

/// The directory's lock: an exclusive `flock` on `LOCK`, released on drop.
#[derive(Debug)]
pub struct DirLock {
    file: File,
    key: PathBuf,
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
        let mut open = OPEN_HERE.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|p| p != &self.key);
    }
}

/// Takes the directory's lock.
pub fn lock(dir: &Path) -> Result<DirLock> {
    let path = dir.join(LOCK_FILE);
    let key = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    {
        let mut open = OPEN_HERE.lock().unwrap_or_else(|p| p.into_inner());
        if open.contains(&key) {
            return Err(Error::Locked { path });
        }
        open.push(key.clone());
    }
    match lock_file(&path) {
        Ok(file) => Ok(DirLock { file, key }),
        Err(e) => {
            OPEN_HERE.lock().unwrap_or_else(|p| p.into_inner()).retain(|p| p != &key);
            Err(e)
        }
    }
}

fn lock_file(path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::io("create the lock file", path, e))?;
    let deadline = std::time::Instant::now() + LOCK_RETRY;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(TryLockError::WouldBlock) => return Err(Error::Locked { path: path.into() }),
            Err(TryLockError::Error(e)) => {
                return Err(Error::io("lock the database directory", path, e))
            }
        }
    }
}

/// Refuses, before anything is written into it, a directory that cannot become or be a
/// database: one without metadata that holds something else, or an empty one when
/// `create` is false. `open` calls this before it creates the lock file, so a refused open
/// leaves nothing behind; `load_or_create` checks again under the lock.
pub fn check_can_hold_database(dir: &Path, create: bool) -> Result<()> {
    let path = dir.join(META_FILE);
    match std::fs::metadata(&path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            refuse_foreign_contents(dir)?;
            if create {
                Ok(())
            } else {
                Err(Error::InvalidPath {
                    path: dir.into(),
                    reason: "it holds no database and create_if_missing is false".into(),
                })
            }
        }
        Err(e) => Err(Error::io("read the metadata file", &path, e)),
    }
}

/// Reads the metadata, or creates it from `wanted` in an empty directory.
pub fn load_or_create(dir: &Path, wanted: Meta, create: bool) -> Result<Meta> {
    let path = dir.join(META_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => Meta::decode(&path, &bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            check_can_hold_database(dir, create)?;
            write_atomically(dir, &path, &wanted.encode())?;
            Ok(wanted)
        }
        Err(e) => Err(Error::io("read the metadata file", &path, e)),
    }
}

/// A directory without metadata must be empty (but for our lock), or it holds something else.
fn refuse_foreign_contents(dir: &Path) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::io("list the database directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list the database directory", dir, e))?;
        let name = entry.file_name();
        if name != LOCK_FILE && name != "META.tmp" {
            return Err(Error::InvalidPath {
                path: dir.into(),
                reason: format!(
                    "it is not empty ({:?} is there) and holds no Lightning DB metadata",
                    name
                ),
            });
        }
    }
    Ok(())
}

fn write_atomically(dir: &Path, path: &PathBuf, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = dir.join("META.tmp");
    let mut f = File::create(&tmp).map_err(|e| Error::io("create the metadata file", &tmp, e))?;
    f.write_all(bytes).map_err(|e| Error::io("write the metadata file", &tmp, e))?;
    f.sync_all().map_err(|e| Error::io("fsync the metadata file", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("publish the metadata file", path, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync the database directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Meta {
        Meta { shards: 3, page_size: 4096, hash: HASH_CRC32C_LEMIRE, created_unix: 7 }
    }

    #[test]
    fn created_once_then_read_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_or_create(dir.path(), meta(), true).unwrap(), meta());
        let other = Meta { shards: 9, ..meta() };
        assert_eq!(load_or_create(dir.path(), other, true).unwrap(), meta());
    }

    #[test]
    fn damaged_metadata_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        load_or_create(dir.path(), meta(), true).unwrap();
        let path = dir.path().join(META_FILE);
        let mut b = std::fs::read(&path).unwrap();
        b[13] ^= 1;
        std::fs::write(&path, b).unwrap();
        assert!(matches!(load_or_create(dir.path(), meta(), true), Err(Error::Corruption { .. })));
    }

    #[test]
    fn foreign_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"hi").unwrap();
        assert!(matches!(load_or_create(dir.path(), meta(), true), Err(Error::InvalidPath { .. })));
    }

    #[test]
    fn a_refused_directory_is_refused_before_the_lock_file_is_made() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"hi").unwrap();
        assert!(matches!(
            check_can_hold_database(dir.path(), true),
            Err(Error::InvalidPath { .. })
        ));
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            check_can_hold_database(empty.path(), false),
            Err(Error::InvalidPath { .. })
        ));
        check_can_hold_database(empty.path(), true).unwrap();
    }

    #[test]
    fn second_lock_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _held = lock(dir.path()).unwrap();
        assert!(matches!(lock(dir.path()), Err(Error::Locked { .. })));
    }
}
