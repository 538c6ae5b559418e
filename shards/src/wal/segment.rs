//! WAL segment files: naming, listing, creation.
//!
//! Shard-local: each shard owns the segments in its own directory. A segment is made complete
//! under a temporary name (`wal-N.log.tmp`): preallocated to its full size (so appends never
//! allocate blocks and a mapped write cannot fault on a full disk), in `Sync` mode written
//! with zeros, its header sector written, the file fdatasynced; then it is renamed to its final
//! name and the directory fsynced. So a file with a segment's name always has a durable, whole
//! header, and a temporary file never held a record: recovery removes temporary files and
//! treats a bad header under a final name as corruption (`recovery::SEGMENT_TABLE`). Segments
//! that recovery sets aside after cutting the log keep their bytes under `wal-N.log.cut`.

use std::path::{Path, PathBuf};

use super::format::SegmentHeader;
use super::WalError;
use crate::error::{Error, Result};
use crate::io::uring::direct_io_unsupported;
use crate::io::{OpenHow, Storage};

const PREFIX: &str = "wal-";
const SUFFIX: &str = ".log";
/// Suffix of a segment being created.
pub const TEMP_SUFFIX: &str = ".tmp";
/// Suffix of a segment recovery set aside: it lies past a cut in the log.
pub const CUT_SUFFIX: &str = ".cut";
/// Bytes of zeros written per call when zero-filling a new segment.
const ZERO_FILL_CHUNK_BYTES: usize = 1 << 20;

/// Path of segment `sequence` in `dir`.
pub fn segment_path(dir: &Path, sequence: u64) -> PathBuf {
    dir.join(format!("{PREFIX}{sequence:016}{SUFFIX}"))
}

/// Path `sequence` has while it is being created.
pub fn temp_path(dir: &Path, sequence: u64) -> PathBuf {
    dir.join(format!("{PREFIX}{sequence:016}{SUFFIX}{TEMP_SUFFIX}"))
}

/// Where recovery moves a segment it sets aside.
pub fn cut_path(segment: &Path) -> PathBuf {
    let mut name = segment.as_os_str().to_owned();
    name.push(CUT_SUFFIX);
    PathBuf::from(name)
}

/// What a shard directory holds, by name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// Segments, sorted by sequence.
    pub segments: Vec<(u64, PathBuf)>,
    /// Segments whose creation was interrupted.
    pub temporary: Vec<PathBuf>,
    /// The highest sequence any file names, set-aside ones included.
    pub max_sequence: u64,
}

fn sequence_of(name: &str) -> Option<(u64, &str)> {
    let rest = name.strip_prefix(PREFIX)?;
    let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    let sequence = rest[..digits].parse().ok()?;
    Some((sequence, &rest[digits..]))
}

/// Lists the segments of `dir`.
pub fn list<S: Storage>(io: &mut S, dir: &Path) -> Result<Listing> {
    let names = io.list_dir(dir).map_err(|e| Error::io("list WAL segments", dir, e))?;
    let mut listing = Listing::default();
    for name in names {
        let Some((sequence, suffix)) = sequence_of(&name) else { continue };
        let is_temp = suffix == format!("{SUFFIX}{TEMP_SUFFIX}");
        let is_cut = suffix == format!("{SUFFIX}{CUT_SUFFIX}");
        if suffix == SUFFIX {
            listing.segments.push((sequence, dir.join(&name)));
        } else if is_temp {
            listing.temporary.push(dir.join(&name));
        } else if !is_cut {
            continue;
        }
        listing.max_sequence = listing.max_sequence.max(sequence);
    }
    listing.segments.sort();
    Ok(listing)
}

/// Reads a whole segment (recovery reads each segment once, sequentially).
pub fn read_image<S: Storage>(io: &mut S, path: &Path) -> Result<Vec<u8>> {
    io.read_file(path).map_err(|e| Error::io("read WAL segment", path, e))
}

/// How a segment is opened for appends in each mode (ADR 0002).
pub fn append_mode(durable: bool, direct_io: bool) -> OpenHow {
    if durable {
        OpenHow::Durable { direct: direct_io }
    } else {
        OpenHow::Buffered
    }
}

/// Opens an existing segment for appending.
pub fn open_for_append<S: Storage>(io: &mut S, path: &Path, how: OpenHow) -> Result<S::File> {
    io.open(path, how).map_err(|e| {
        if e.raw_os_error() == Some(libc::EINVAL) && how == (OpenHow::Durable { direct: true }) {
            direct_io_unsupported(path)
        } else {
            Error::io("open WAL segment", path, e)
        }
    })
}

/// Creates segment `header.sequence` in `dir`, complete and durable (see the module header),
/// and opens it for appends with `how`. `zero_fill` writes zeros over the preallocated blocks.
///
/// Failures that put nothing durable in doubt (no room, an open or write error) are
/// `WalError::Rejected` and leave no temporary file behind where the storage lets it be
/// removed; a failed fdatasync or directory fsync is `WalError::Poisoned`.
pub fn create<S: Storage>(
    io: &mut S,
    dir: &Path,
    header: &SegmentHeader,
    zero_fill: bool,
    how: OpenHow,
) -> std::result::Result<S::File, WalError> {
    let temp = temp_path(dir, header.sequence);
    let path = segment_path(dir, header.sequence);
    let _ = io.remove_file(&temp); // a leftover of an interrupted creation
    let file = io
        .open(&temp, OpenHow::CreateNew)
        .map_err(|e| WalError::Rejected(Error::io("create WAL segment", &temp, e)))?;
    if let Err(e) = fill(io, &file, header, zero_fill) {
        let _ = io.remove_file(&temp);
        return Err(e);
    }
    io.sync_file(&file)
        .map_err(|e| WalError::Poisoned(Error::io("fdatasync new WAL segment", &temp, e)))?;
    if let Err(e) = io.rename(&temp, &path) {
        let _ = io.remove_file(&temp);
        return Err(WalError::Rejected(Error::io("rename new WAL segment", &path, e)));
    }
    io.sync_dir(dir).map_err(|e| WalError::Poisoned(Error::io("fsync WAL directory", dir, e)))?;
    open_for_append(io, &path, how).map_err(WalError::Rejected)
}

fn fill<S: Storage>(
    io: &mut S,
    file: &S::File,
    header: &SegmentHeader,
    zero_fill: bool,
) -> std::result::Result<(), WalError> {
    let path = crate::io::FileHandle::path(file).to_path_buf();
    let rejected = |op: &'static str| {
        let path = path.clone();
        move |e| WalError::Rejected(Error::io(op, path, e))
    };
    io.allocate(file, header.segment_bytes).map_err(rejected("preallocate WAL segment"))?;
    if zero_fill {
        zero(io, file, header.segment_bytes).map_err(rejected("zero-fill WAL segment"))?;
    }
    io.write_at(file, 0, &header.encode()).map_err(rejected("write WAL segment header"))
}

/// Writes zeros over a new segment.
///
/// Fallocated blocks are "unwritten" extents: the first write to each converts it, and a
/// durable `O_DIRECT | O_DSYNC` write then waits for that metadata change too
/// (`scripts/extent_probe.py`). Zero-filling made `Sync` puts with 4 callers +50 % (15.1-15.9 K
/// -> 23.6-23.7 K/s, ADR 0002 addendum) at the price of a longer segment creation (tens of ms,
/// at each rollover). The mapped `Normal`/`Async` path does not take it: there the longer
/// rollover cost more than the cheaper page faults saved (1 MiB puts 357-399 -> 244-263/s).
/// The zeros read back exactly as the unwritten extents did, so the format is unchanged.
fn zero<S: Storage>(io: &mut S, file: &S::File, bytes: u64) -> std::io::Result<()> {
    let zeros = vec![0u8; ZERO_FILL_CHUNK_BYTES];
    let mut offset = 0u64;
    while offset < bytes {
        let n = usize::try_from(bytes - offset).unwrap_or(usize::MAX).min(ZERO_FILL_CHUNK_BYTES);
        io.write_at(file, offset, &zeros[..n])?;
        offset += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::uring::{Registration, UringStorage};
    use crate::version::Lsn;
    use crate::wal::format::SEGMENT_HEADER_BYTES;

    fn header(sequence: u64) -> SegmentHeader {
        SegmentHeader { shard_id: 0, sequence, first_lsn: Lsn::FIRST, segment_bytes: 1 << 20 }
    }

    /// `filefrag -v` output for `path`, if the tool exists and the filesystem reports extents.
    fn extents(path: &Path) -> Option<String> {
        let out = std::process::Command::new("filefrag").arg("-v").arg(path).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    #[test]
    fn zero_filled_segments_have_no_unwritten_extents() {
        let dir = tempfile::tempdir().unwrap();
        let mut io = UringStorage::new(Registration::default()).unwrap();
        create(&mut io, dir.path(), &header(1), false, OpenHow::Buffered).unwrap();
        create(&mut io, dir.path(), &header(2), true, OpenHow::Buffered).unwrap();
        let (plain, zeroed) = (segment_path(dir.path(), 1), segment_path(dir.path(), 2));
        assert_eq!(std::fs::metadata(&zeroed).unwrap().len(), 1 << 20);
        let bytes = std::fs::read(&zeroed).unwrap();
        assert_eq!(SegmentHeader::decode(&bytes).unwrap(), header(2), "the header survives");
        assert!(bytes[SEGMENT_HEADER_BYTES..].iter().all(|&b| b == 0));
        // Where the filesystem reports extents (ext4, xfs), only the fallocated one is unwritten.
        if let (Some(p), Some(z)) = (extents(&plain), extents(&zeroed)) {
            if p.contains("unwritten") {
                assert!(!z.contains("unwritten"), "{z}");
            }
        }
    }

    #[test]
    fn create_list_and_reject_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let mut io = UringStorage::new(Registration::default()).unwrap();
        create(&mut io, dir.path(), &header(3), false, OpenHow::Buffered).unwrap();
        let p = segment_path(dir.path(), 3);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 1 << 20);
        std::fs::write(temp_path(dir.path(), 7), b"half made").unwrap();
        std::fs::write(cut_path(&segment_path(dir.path(), 9)), b"set aside").unwrap();
        std::fs::write(dir.path().join("notes"), b"ignored").unwrap();
        let listing = list(&mut io, dir.path()).unwrap();
        assert_eq!(listing.segments, vec![(3, p.clone())]);
        assert_eq!(listing.temporary, vec![temp_path(dir.path(), 7)]);
        assert_eq!(listing.max_sequence, 9);
        assert!(create(&mut io, dir.path(), &header(3), false, OpenHow::Buffered).is_err());
        assert!(!temp_path(dir.path(), 3).exists(), "a refused creation leaves nothing behind");
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(SegmentHeader::decode(&bytes).unwrap(), header(3));
    }
}
