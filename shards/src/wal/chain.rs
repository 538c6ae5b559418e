//! The chain of segments a WAL writer appends to: resume the newest segment after replay, or
//! create the next one. Both writers get their files from here.
//!
//! Shard-local.

use std::fs::File;
use std::path::PathBuf;

use super::format::{SegmentHeader, SEGMENT_HEADER_BYTES};
use super::reader::Tail;
use super::{segment, WalError, WalOptions};
use crate::config::WalSyncMode;

/// A segment opened for appends.
pub struct OpenedSegment {
    /// The file, opened with the mode's append flags.
    pub file: File,
    /// Its path.
    pub path: PathBuf,
    /// Its header.
    pub header: SegmentHeader,
    /// Where the next group starts (a sector boundary).
    pub offset: usize,
}

/// Hands out segments in sequence order.
pub struct SegmentChain {
    opts: WalOptions,
    resume: Option<Tail>,
    next_sequence: u64,
}

impl SegmentChain {
    /// Starts from what replay found.
    pub fn new(opts: WalOptions, tail: Tail) -> Self {
        let next_sequence = match &tail {
            Tail::Empty => 1,
            Tail::Resume { header, .. } => header.sequence + 1,
            Tail::Fresh { sequence } => *sequence,
        };
        SegmentChain { opts, resume: Some(tail), next_sequence }
    }

    /// The writer's options.
    pub fn opts(&self) -> &WalOptions {
        &self.opts
    }

    /// The segment the next record goes to: the resumed one on the first call if replay ended
    /// cleanly, otherwise a new segment whose first record will carry `first_lsn`.
    pub fn open_next(&mut self, first_lsn: u64) -> Result<OpenedSegment, WalError> {
        let flags = segment::append_flags(self.opts.mode, self.opts.direct_io);
        if let Some(Tail::Resume { path, header, offset }) = self.resume.take() {
            let file = segment::open_for_append(&path, flags).map_err(WalError::Rejected)?;
            return Ok(OpenedSegment { file, path, header, offset });
        }
        let header = SegmentHeader {
            shard_id: self.opts.shard_id,
            sequence: self.next_sequence,
            first_lsn,
            segment_bytes: self.opts.segment_bytes,
        };
        // Durable direct writes are faster into written blocks; the mapped path is not.
        let zero_fill = self.opts.mode == WalSyncMode::Sync;
        let path = segment::create_segment(
            &self.opts.dir,
            &header,
            zero_fill,
            self.opts.faults.as_deref(),
        )
        .map_err(WalError::Rejected)?;
        self.next_sequence += 1;
        let file = segment::open_for_append(&path, flags).map_err(WalError::Rejected)?;
        Ok(OpenedSegment { file, path, header, offset: SEGMENT_HEADER_BYTES })
    }
}
