//! The chain of segments a WAL writer appends to: resume the newest segment after replay, or
//! create the next one. Both writers get their files from here.
//!
//! Shard-local.

use std::path::PathBuf;

use super::format::{SegmentHeader, SEGMENT_HEADER_BYTES};
use super::reader::Tail;
use super::{segment, WalError, WalOptions};
use crate::config::WalSyncMode;
use crate::io::Storage;
use crate::version::Lsn;

/// A segment opened for appends.
pub struct OpenedSegment<S: Storage> {
    /// The file, opened with the mode's append flags.
    pub file: S::File,
    /// Its path.
    pub path: PathBuf,
    /// Its header.
    pub header: SegmentHeader,
    /// Where the next group starts (an aligned boundary).
    pub offset: usize,
}

/// Hands out segments in sequence order.
pub struct SegmentChain {
    opts: WalOptions,
    resume: Option<Tail>,
    next_sequence: u64,
}

impl SegmentChain {
    /// Starts from what replay found: `next_sequence` names the next new segment.
    pub fn new(opts: WalOptions, tail: Tail, next_sequence: u64) -> Self {
        SegmentChain { opts, resume: Some(tail), next_sequence }
    }

    /// The writer's options.
    pub fn opts(&self) -> &WalOptions {
        &self.opts
    }

    /// The segment the next record goes to: the resumed one on the first call if replay ended
    /// cleanly, otherwise a new segment whose first record will carry `first_lsn`.
    pub fn open_next<S: Storage>(
        &mut self,
        io: &mut S,
        first_lsn: Lsn,
    ) -> Result<OpenedSegment<S>, WalError> {
        let durable = self.opts.mode == WalSyncMode::Sync;
        let how = segment::append_mode(durable, self.opts.direct_io);
        if let Some(Tail::Resume { path, header, offset }) = self.resume.take() {
            let file = segment::open_for_append(io, &path, how).map_err(WalError::Rejected)?;
            return Ok(OpenedSegment { file, path, header, offset });
        }
        let header = SegmentHeader {
            shard_id: self.opts.shard_id,
            sequence: self.next_sequence,
            first_lsn,
            segment_bytes: self.opts.segment_bytes,
        };
        // Durable direct writes are faster into written blocks; the mapped path is not.
        let file = segment::create(io, &self.opts.dir, &header, durable, how)?;
        self.next_sequence += 1;
        let path = segment::segment_path(&self.opts.dir, header.sequence);
        Ok(OpenedSegment { file, path, header, offset: SEGMENT_HEADER_BYTES })
    }
}
