//! WAL segment files: naming, listing, creation and opening.
//!
//! Shard-local: each shard owns the segments in its own directory. A segment is created
//! complete before its first record is written: preallocated to its full size (so appends
//! never allocate blocks and a mapped write cannot fault on a full disk), its header sector
//! written, the file fdatasynced and the directory fsynced. Recovery relies on that order
//! (`recovery::SEGMENT_TABLE`: a bad header can only be an interrupted creation).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::format::SegmentHeader;
use crate::config::WalSyncMode;
use crate::error::{Error, Result};
use crate::faults::FaultPlan;
use crate::io::sys;

const PREFIX: &str = "wal-";
const SUFFIX: &str = ".log";

/// Path of segment `sequence` in `dir`.
pub fn segment_path(dir: &Path, sequence: u64) -> PathBuf {
    dir.join(format!("{PREFIX}{sequence:016}{SUFFIX}"))
}

/// Every segment in `dir`, sorted by sequence.
pub fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("list WAL segments", dir, e))?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list WAL segments", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(num) = name.strip_prefix(PREFIX).and_then(|n| n.strip_suffix(SUFFIX)) else {
            continue;
        };
        if let Ok(seq) = num.parse::<u64>() {
            found.push((seq, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// How the WAL file descriptor is opened for appends in each mode (ADR 0002).
pub fn append_flags(mode: WalSyncMode, direct_io: bool) -> i32 {
    match (mode, direct_io) {
        (WalSyncMode::Sync, true) => libc::O_DIRECT | libc::O_DSYNC,
        (WalSyncMode::Sync, false) => libc::O_DSYNC,
        (WalSyncMode::Normal | WalSyncMode::Async, _) => 0,
    }
}

/// Opens an existing segment for appending with `flags` (from [`append_flags`]).
pub fn open_for_append(path: &Path, flags: i32) -> Result<File> {
    OpenOptions::new().read(true).write(true).custom_flags(flags).open(path).map_err(|e| {
        if e.raw_os_error() == Some(libc::EINVAL) && flags & libc::O_DIRECT != 0 {
            direct_io_unsupported(path)
        } else {
            Error::io("open WAL segment", path, e)
        }
    })
}

/// The error for a filesystem that refuses `O_DIRECT`.
pub fn direct_io_unsupported(path: &Path) -> Error {
    Error::EnvUnsupported {
        what: format!(
            "the filesystem holding {} does not support O_DIRECT (ramfs, tmpfs before Linux \
             6.6, some FUSE and network filesystems); put the database on ext4 or xfs, or set \
             `direct_io: false`",
            path.display()
        ),
    }
}

/// Checks at start-up that `dir` accepts `O_DIRECT` writes, so a `Sync`-mode database on a
/// filesystem without it fails at open rather than at its first write.
pub fn probe_direct_io(dir: &Path) -> Result<()> {
    let path = dir.join(".direct-io-probe");
    let opened = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path);
    let result = match opened {
        Ok(file) => {
            let buf = crate::io::aligned::AlignedBuf::zeroed(crate::io::aligned::SECTOR_BYTES);
            match buf.map(|b| file.write_all_at(b.as_slice(), 0)) {
                Some(Ok(())) => Ok(()),
                Some(Err(e)) if e.raw_os_error() == Some(libc::EINVAL) => {
                    Err(direct_io_unsupported(dir))
                }
                Some(Err(e)) => Err(Error::io("probe O_DIRECT writes", &path, e)),
                None => Ok(()),
            }
        }
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Err(direct_io_unsupported(dir)),
        Err(e) => Err(Error::io("probe O_DIRECT writes", &path, e)),
    };
    let _ = std::fs::remove_file(&path);
    result
}

/// Creates segment `header.sequence` in `dir`, complete and durable, and returns its path.
/// `zero_fill` writes zeros over the preallocated blocks (see [`preallocate`]).
pub fn create_segment(
    dir: &Path,
    header: &SegmentHeader,
    zero_fill: bool,
    faults: Option<&FaultPlan>,
) -> Result<PathBuf> {
    let path = segment_path(dir, header.sequence);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| Error::io("create WAL segment", &path, e))?;
    if let Err(e) = fill_new(&file, &path, header, zero_fill, faults) {
        // Never leave a half-made segment behind: recovery would have to discard it.
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    sys::fsync_dir(dir).map_err(|e| Error::io("fsync WAL directory", dir, e))?;
    Ok(path)
}

fn fill_new(
    file: &File,
    path: &Path,
    header: &SegmentHeader,
    zero_fill: bool,
    faults: Option<&FaultPlan>,
) -> Result<()> {
    if faults.is_some_and(|f| f.take_segment_alloc_failure(header.shard_id as usize)) {
        return Err(Error::io(
            "preallocate WAL segment",
            path,
            std::io::Error::from_raw_os_error(libc::ENOSPC),
        ));
    }
    preallocate(file, header.segment_bytes, zero_fill)
        .map_err(|e| Error::io("preallocate WAL segment", path, e))?;
    file.write_all_at(&header.encode(), 0)
        .map_err(|e| Error::io("write WAL segment header", path, e))?;
    sys::fdatasync(file).map_err(|e| Error::io("fdatasync new WAL segment", path, e))?;
    Ok(())
}

/// Reserves the blocks (filesystems without fallocate get a plain size) and, with `zero_fill`,
/// writes zeros over the whole segment.
///
/// Fallocated blocks are "unwritten" extents: the first write to each converts it, and a
/// durable `O_DIRECT | O_DSYNC` write then waits for that metadata change too
/// (`scripts/extent_probe.py`). Zero-filling made `Sync` puts with 4 callers +50 % (15.1-15.9 K
/// -> 23.6-23.7 K/s, ADR 0002 addendum) at the price of a longer segment creation (tens of
/// ms, at each rollover). The mapped `Normal`/`Async`
/// path does not take it: there the longer rollover cost more than the cheaper page faults
/// saved (1 MiB puts 357-399 -> 244-263/s). The zeros read back exactly as the unwritten
/// extents did, so the format is unchanged.
fn preallocate(file: &File, bytes: u64, zero_fill: bool) -> std::io::Result<()> {
    match sys::fallocate(file, bytes) {
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => file.set_len(bytes)?,
        other => other?,
    }
    if !zero_fill {
        return Ok(());
    }
    const CHUNK: usize = 1 << 20;
    let zeros = vec![0u8; CHUNK];
    let mut offset = 0u64;
    while offset < bytes {
        let n = usize::try_from(bytes - offset).unwrap_or(CHUNK).min(CHUNK);
        file.write_all_at(&zeros[..n], offset)?;
        offset += n as u64;
    }
    Ok(())
}

/// Reads a whole segment into memory (recovery reads each segment once, sequentially).
pub fn read_segment(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io("read WAL segment", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::format::SEGMENT_HEADER_BYTES;

    /// `filefrag -v` output for `path`, if the tool exists and the filesystem reports extents.
    fn extents(path: &Path) -> Option<String> {
        let out = std::process::Command::new("filefrag").arg("-v").arg(path).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    #[test]
    fn zero_filled_segments_have_no_unwritten_extents() {
        let dir = tempfile::tempdir().unwrap();
        let h = |sequence| SegmentHeader {
            shard_id: 0,
            sequence,
            first_lsn: 1,
            segment_bytes: 1 << 20,
        };
        let plain = create_segment(dir.path(), &h(1), false, None).unwrap();
        let zeroed = create_segment(dir.path(), &h(2), true, None).unwrap();
        assert_eq!(std::fs::metadata(&zeroed).unwrap().len(), 1 << 20);
        let bytes = std::fs::read(&zeroed).unwrap();
        assert_eq!(SegmentHeader::decode(&bytes).unwrap(), h(2), "the header survives");
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
        let h = SegmentHeader { shard_id: 0, sequence: 3, first_lsn: 1, segment_bytes: 1 << 20 };
        let p = create_segment(dir.path(), &h, false, None).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 1 << 20);
        assert_eq!(list_segments(dir.path()).unwrap(), vec![(3, p.clone())]);
        assert!(create_segment(dir.path(), &h, false, None).is_err());
        let bytes = read_segment(&p).unwrap();
        assert_eq!(SegmentHeader::decode(&bytes).unwrap(), h);
    }

    #[test]
    fn injected_enospc_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let plan = FaultPlan::new();
        plan.fail_next_segment_allocs(1);
        let h = SegmentHeader { shard_id: 0, sequence: 1, first_lsn: 1, segment_bytes: 1 << 20 };
        let err = create_segment(dir.path(), &h, false, Some(&plan)).unwrap_err();
        assert!(err.is_disk_full());
        assert!(list_segments(dir.path()).unwrap().is_empty());
    }
}
