//! WAL records, typed: what a write is (`WriteOp`), the record kinds and their byte codec.
//!
//! The bottom of the log: pure functions over bytes, no I/O, no knowledge of the ingress queue
//! or of who waits for a record. Every record is a 32-byte header and a payload; the header
//! carries the payload length, the record's LSN and timestamp, the generation of the segment it
//! was written into, its kind, and a crc32c over everything after the checksum field, so a torn
//! write, a stale record and a bit flip are all detectable. `docs/FORMAT.md` draws the bytes.
//!
//! Kinds: a WRITE record is one atomic set of operations (a put, a delete, or one shard's part
//! of a batch) with one LSN and one timestamp. A GROUP record frames a group of records that
//! starts on a fresh sector and carries a *durable claim*: the highest LSN that was durable when
//! the group was made. Replay yields only [`Record`]s; GROUP records are the log's own
//! bookkeeping. The two-phase commit adds four kinds (`docs/ARCHITECTURE.md`, "Cross-shard
//! commits"): PREPARE (a participant's part of a cross-shard commit, its operations not yet
//! applied), COMMIT and ABORT (a participant's outcome marker for a PREPARE before it), and
//! DECISION (the coordinator's durable commit decision). Kind 7 is reserved for checkpoints; a
//! record of any kind this build does not know fails replay with a clear error instead of being
//! skipped.

use std::sync::Arc;

use crate::version::{Lsn, Ts};

/// Fixed record header: crc u32, len u32, lsn u64, ts u64, generation u32, kind u8, 3 reserved.
pub const RECORD_HEADER_BYTES: usize = 32;
const AT_CRC: usize = 0;
const AT_LEN: usize = 4;
const AT_LSN: usize = 8;
const AT_TS: usize = 16;
const AT_GENERATION: usize = 24;
const AT_KIND: usize = 28;
const _: () = assert!(AT_KIND + 1 + 3 == RECORD_HEADER_BYTES);

/// Kind of a WRITE record.
pub const KIND_WRITE: u8 = 1;
/// Kind of a GROUP record (takes no LSN of its own; its LSN field is the group's first LSN).
pub const KIND_GROUP: u8 = 2;
/// Kind of a PREPARE record: transaction id, coordinator, participants, then a WRITE payload.
pub const KIND_PREPARE: u8 = 3;
/// Kind of a COMMIT marker: the transaction id; the header's timestamp is the commit's.
pub const KIND_COMMIT: u8 = 4;
/// Kind of an ABORT marker: the transaction id.
pub const KIND_ABORT: u8 = 5;
/// Kind of a DECISION record: the transaction id and its participants (the decision is commit;
/// no decision means abort).
pub const KIND_DECISION: u8 = 6;
/// Kinds reserved for records this build does not write yet: checkpoint. Named so that no
/// other record takes them.
pub const KINDS_RESERVED: std::ops::RangeInclusive<u8> = 7..=7;
/// Most participants a cross-shard commit lists (a database has at most this many shards).
pub const MAX_PARTICIPANTS: usize = 4096;

/// Bytes of a GROUP record's payload: the durable claim (`u64`).
const GROUP_PAYLOAD_BYTES: usize = 8;
/// Bytes of a whole GROUP record.
pub const GROUP_RECORD_BYTES: usize = RECORD_HEADER_BYTES + GROUP_PAYLOAD_BYTES;

const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
/// Per-op framing in a WRITE payload: tag u8, key length u32, value length u32.
pub const OP_HEADER_BYTES: usize = 9;
/// The op count that opens a WRITE payload.
const OP_COUNT_BYTES: usize = 4;

/// One write operation on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOp {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value, shared (not copied) between the batch, the WAL encoder and the memtable.
        value: Arc<[u8]>,
    },
    /// Remove `key`.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
}

impl WriteOp {
    /// The key written.
    pub fn key(&self) -> &[u8] {
        match self {
            WriteOp::Put { key, .. } | WriteOp::Delete { key } => key,
        }
    }

    /// The value written, `None` for a delete.
    pub fn value(&self) -> Option<&[u8]> {
        match self {
            WriteOp::Put { value, .. } => Some(value),
            WriteOp::Delete { .. } => None,
        }
    }

    /// Bytes this op occupies in a WRITE payload, its framing included: what
    /// `max_batch_bytes` counts.
    pub fn encoded_bytes(&self) -> usize {
        OP_HEADER_BYTES + self.key().len() + self.value().map_or(0, <[u8]>::len)
    }
}

/// One write operation, borrowed: what a caller hands to the commit lock without copying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpRef<'a> {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: &'a [u8],
        /// The value.
        value: &'a [u8],
    },
    /// Remove `key`.
    Delete {
        /// The key.
        key: &'a [u8],
    },
}

impl<'a> OpRef<'a> {
    /// The key written.
    pub fn key(self) -> &'a [u8] {
        match self {
            OpRef::Put { key, .. } | OpRef::Delete { key } => key,
        }
    }

    /// The value written, `None` for a delete.
    pub fn value(self) -> Option<&'a [u8]> {
        match self {
            OpRef::Put { value, .. } => Some(value),
            OpRef::Delete { .. } => None,
        }
    }

    /// An owned copy.
    pub fn to_write_op(self) -> WriteOp {
        match self {
            OpRef::Put { key, value } => WriteOp::Put { key: key.to_vec(), value: value.into() },
            OpRef::Delete { key } => WriteOp::Delete { key: key.to_vec() },
        }
    }

    /// Bytes this op occupies in a WRITE payload, its framing included.
    pub fn encoded_bytes(self) -> usize {
        OP_HEADER_BYTES + self.key().len() + self.value().map_or(0, <[u8]>::len)
    }
}

/// Anything that reads as one write operation: an owned [`WriteOp`], a borrowed [`OpRef`], or
/// a reference to either.
pub trait AsOp {
    /// The operation, borrowed.
    fn op(&self) -> OpRef<'_>;
}

impl AsOp for WriteOp {
    fn op(&self) -> OpRef<'_> {
        match self {
            WriteOp::Put { key, value } => OpRef::Put { key, value },
            WriteOp::Delete { key } => OpRef::Delete { key },
        }
    }
}

impl AsOp for OpRef<'_> {
    fn op(&self) -> OpRef<'_> {
        *self
    }
}

impl<T: AsOp + ?Sized> AsOp for &T {
    fn op(&self) -> OpRef<'_> {
        (**self).op()
    }
}

/// The operations of one WRITE record, borrowed.
#[derive(Clone, Copy, Debug)]
pub enum Ops<'a> {
    /// One put or delete.
    One(OpRef<'a>),
    /// A batch (owned elsewhere), applied atomically.
    Many(&'a [WriteOp]),
    /// One shard's part of a batch, borrowed from the caller, applied atomically.
    Refs(&'a [OpRef<'a>]),
}

impl<'a> Ops<'a> {
    /// The operations in order.
    pub fn each(self, mut f: impl FnMut(OpRef<'a>)) {
        match self {
            Ops::One(op) => f(op),
            Ops::Many(ops) => ops.iter().for_each(|o| f(o.op())),
            Ops::Refs(ops) => ops.iter().for_each(|o| f(*o)),
        }
    }

    /// How many operations.
    fn len(self) -> usize {
        match self {
            Ops::One(_) => 1,
            Ops::Many(ops) => ops.len(),
            Ops::Refs(ops) => ops.len(),
        }
    }

    /// The first operation's key, if any.
    #[cfg(any(test, feature = "simulation"))]
    pub fn first_key(self) -> Option<&'a [u8]> {
        match self {
            Ops::One(op) => Some(op.key()),
            Ops::Many(ops) => ops.first().map(WriteOp::key),
            Ops::Refs(ops) => ops.first().map(|o| o.key()),
        }
    }

    /// Bytes their WRITE record occupies, header included.
    pub fn record_bytes(self) -> usize {
        match self {
            Ops::One(op) => write_record_bytes(&[op]),
            Ops::Many(ops) => write_record_bytes(ops),
            Ops::Refs(ops) => write_record_bytes(ops),
        }
    }

    /// Appends their WRITE record to `out`.
    pub fn encode(self, out: &mut Vec<u8>, lsn: Lsn, ts: Ts, generation: u32) {
        match self {
            Ops::One(op) => encode_write(out, lsn, ts, generation, &[op]),
            Ops::Many(ops) => encode_write(out, lsn, ts, generation, ops),
            Ops::Refs(ops) => encode_write(out, lsn, ts, generation, ops),
        }
    }

    /// Owned copies.
    pub fn to_vec(self) -> Vec<WriteOp> {
        let mut v = Vec::with_capacity(self.len());
        self.each(|op| v.push(op.to_write_op()));
        v
    }
}

/// The body of one record the writers place: a write, or one of the two-phase commit's.
#[derive(Clone, Copy, Debug)]
pub enum Body<'a> {
    /// A WRITE record.
    Write(Ops<'a>),
    /// A participant's part of a cross-shard commit, not applied until its outcome.
    Prepare {
        /// The transaction.
        txid: u64,
        /// The shard holding the decision.
        coordinator: u32,
        /// Every shard with a PREPARE for it, ascending.
        participants: &'a [u32],
        /// This shard's operations.
        ops: Ops<'a>,
    },
    /// A participant's COMMIT (`commit: true`) or ABORT marker.
    Outcome {
        /// The transaction.
        txid: u64,
        /// Commit or abort.
        commit: bool,
    },
    /// The coordinator's commit decision.
    Decision {
        /// The transaction.
        txid: u64,
        /// Every shard with a PREPARE for it, ascending.
        participants: &'a [u32],
    },
}

impl<'a> From<Ops<'a>> for Body<'a> {
    fn from(ops: Ops<'a>) -> Self {
        Body::Write(ops)
    }
}

/// Bytes of a transaction id.
const TXID_BYTES: usize = 8;

impl Body<'_> {
    /// Bytes of the whole record.
    #[inline]
    pub fn record_bytes(self) -> usize {
        match self {
            Body::Write(ops) => ops.record_bytes(),
            Body::Prepare { participants, ops, .. } => {
                ops.record_bytes() + TXID_BYTES + 4 + 4 + 4 * participants.len()
            }
            Body::Outcome { .. } => RECORD_HEADER_BYTES + TXID_BYTES,
            Body::Decision { participants, .. } => {
                RECORD_HEADER_BYTES + TXID_BYTES + 4 + 4 * participants.len()
            }
        }
    }

    /// Appends the whole record to `out`.
    #[inline]
    pub fn encode(self, out: &mut Vec<u8>, lsn: Lsn, ts: Ts, generation: u32) {
        match self {
            Body::Write(ops) => ops.encode(out, lsn, ts, generation),
            body => body.encode_tx(out, lsn, ts, generation),
        }
    }

    /// Appends a two-phase commit record to `out`.
    fn encode_tx(self, out: &mut Vec<u8>, lsn: Lsn, ts: Ts, generation: u32) {
        let start = out.len();
        let kind = match self {
            Body::Write(ops) => return ops.encode(out, lsn, ts, generation),
            Body::Prepare { .. } => KIND_PREPARE,
            Body::Outcome { commit: true, .. } => KIND_COMMIT,
            Body::Outcome { commit: false, .. } => KIND_ABORT,
            Body::Decision { .. } => KIND_DECISION,
        };
        let payload_len = self.record_bytes() - RECORD_HEADER_BYTES;
        out.resize(start + RECORD_HEADER_BYTES, 0);
        header_into(&mut out[start..], payload_len, lsn, ts, generation, kind);
        match self {
            Body::Write(_) => {}
            Body::Prepare { txid, coordinator, participants, ops } => {
                out.extend_from_slice(&txid.to_le_bytes());
                out.extend_from_slice(&coordinator.to_le_bytes());
                put_participants(out, participants);
                let mut ops_record = Vec::with_capacity(ops.record_bytes());
                ops.encode(&mut ops_record, lsn, ts, generation);
                out.extend_from_slice(&ops_record[RECORD_HEADER_BYTES..]);
            }
            Body::Outcome { txid, .. } => out.extend_from_slice(&txid.to_le_bytes()),
            Body::Decision { txid, participants } => {
                out.extend_from_slice(&txid.to_le_bytes());
                put_participants(out, participants);
            }
        }
        seal(&mut out[start..]);
        debug_assert_eq!(out.len() - start, self.record_bytes());
    }
}

fn put_participants(out: &mut Vec<u8>, participants: &[u32]) {
    out.extend_from_slice(&(participants.len() as u32).to_le_bytes());
    for p in participants {
        out.extend_from_slice(&p.to_le_bytes());
    }
}

/// Reads a participant list at the start of `p`: the list and the bytes it took.
fn get_participants(p: &[u8]) -> Result<(Vec<u32>, usize), &'static str> {
    let count = p.get(..4).map(|_| read_u32(p, 0) as usize).ok_or("participants cut short")?;
    if count == 0 || count > MAX_PARTICIPANTS {
        return Err("participant count out of range");
    }
    let end = 4 + 4 * count;
    let bytes = p.get(4..end).ok_or("participants past the payload")?;
    let list: Vec<u32> = bytes.chunks_exact(4).map(|c| read_u32(c, 0)).collect();
    if list.windows(2).any(|w| w[0] >= w[1]) {
        return Err("participants not ascending");
    }
    Ok((list, end))
}

fn get_txid(p: &[u8]) -> Result<u64, &'static str> {
    p.get(..TXID_BYTES).map(|_| read_u64(p, 0)).ok_or("payload shorter than a transaction id")
}

/// A decoded PREPARE record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrepareRecord {
    /// Its place in the log.
    pub lsn: Lsn,
    /// Its timestamp (not the commit's: the operations get the COMMIT marker's).
    pub ts: Ts,
    /// The transaction.
    pub txid: u64,
    /// The shard holding the decision.
    pub coordinator: u32,
    /// Every shard with a PREPARE for this transaction.
    pub participants: Vec<u32>,
    /// This shard's operations.
    pub ops: Vec<WriteOp>,
}

/// A decoded COMMIT or ABORT marker, or DECISION record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxRecord {
    /// Its place in the log.
    pub lsn: Lsn,
    /// Its timestamp (a COMMIT marker's is the commit's).
    pub ts: Ts,
    /// The transaction.
    pub txid: u64,
}

/// A decoded WRITE record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteRecord {
    /// Its place in the shard's log.
    pub lsn: Lsn,
    /// Its MVCC version.
    pub ts: Ts,
    /// The operations, applied in order (a later op on the same key wins).
    pub ops: Vec<WriteOp>,
}

/// What replay hands to the shard, in log order.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Record {
    /// An atomic set of writes.
    Write(WriteRecord),
    /// A participant's part of a cross-shard commit.
    Prepare(PrepareRecord),
    /// The COMMIT marker of a PREPARE earlier in this log.
    Commit(TxRecord),
    /// The ABORT marker of a PREPARE earlier in this log.
    Abort(TxRecord),
    /// This shard, as coordinator, decided to commit; the participants are listed.
    Decision(TxRecord, Vec<u32>),
}

impl Record {
    /// Its place in the log.
    #[cfg(test)]
    pub fn lsn(&self) -> Lsn {
        match self {
            Record::Write(w) => w.lsn,
            Record::Prepare(p) => p.lsn,
            Record::Commit(t) | Record::Abort(t) | Record::Decision(t, _) => t.lsn,
        }
    }
}

/// A record decoded from its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A WRITE record.
    Write(WriteRecord),
    /// Any of the two-phase commit's records.
    Tx(Record),
    /// A GROUP record: the group starting at `first_lsn` was made when every LSN up to
    /// `durable_before` was durable.
    Group {
        /// The LSN of the group's first WRITE record (or of the next record, for a group
        /// that holds only the claim).
        first_lsn: Lsn,
        /// The durable claim.
        durable_before: Lsn,
    },
}

/// Why a checksummed record could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// A kind this build does not know (a reserved one, or garbage that passed the checksum).
    UnknownKind(u8),
    /// The payload breaks its kind's layout.
    Malformed(&'static str),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::UnknownKind(k) if KINDS_RESERVED.contains(k) => write!(
                f,
                "record kind {k} is reserved for checkpoint records, which this build does not \
                 read"
            ),
            DecodeError::UnknownKind(k) => write!(f, "record kind {k} is unknown to this build"),
            DecodeError::Malformed(what) => f.write_str(what),
        }
    }
}

/// A record header whose checksum matched, with its payload.
#[derive(Clone, Copy, Debug)]
pub struct RecordView<'a> {
    /// The LSN field.
    pub lsn: Lsn,
    /// The timestamp field.
    pub ts: Ts,
    /// Generation of the segment it was written into.
    pub generation: u32,
    /// Record kind.
    pub kind: u8,
    /// The payload bytes.
    pub payload: &'a [u8],
}

impl RecordView<'_> {
    /// Total bytes the record occupies.
    pub fn size(&self) -> usize {
        RECORD_HEADER_BYTES + self.payload.len()
    }

    /// Decodes the payload by kind.
    pub fn decode(&self) -> Result<Decoded, DecodeError> {
        match self.kind {
            KIND_WRITE => decode_write_payload(self.payload)
                .map(|ops| Decoded::Write(WriteRecord { lsn: self.lsn, ts: self.ts, ops }))
                .map_err(DecodeError::Malformed),
            KIND_PREPARE | KIND_COMMIT | KIND_ABORT | KIND_DECISION => {
                self.decode_tx().map(Decoded::Tx).map_err(DecodeError::Malformed)
            }
            KIND_GROUP => group_durable_before(self.payload)
                .map(|durable_before| Decoded::Group { first_lsn: self.lsn, durable_before })
                .ok_or(DecodeError::Malformed("GROUP payload is not 8 bytes")),
            other => Err(DecodeError::UnknownKind(other)),
        }
    }
}

impl RecordView<'_> {
    fn decode_tx(&self) -> Result<Record, &'static str> {
        let p = self.payload;
        let txid = get_txid(p)?;
        let tx = TxRecord { lsn: self.lsn, ts: self.ts, txid };
        let rest = &p[TXID_BYTES..];
        match self.kind {
            KIND_PREPARE => {
                let coordinator =
                    rest.get(..4).map(|_| read_u32(rest, 0)).ok_or("PREPARE cut short")?;
                let (participants, used) = get_participants(&rest[4..])?;
                if !participants.contains(&coordinator) {
                    return Err("the coordinator is not a participant");
                }
                let ops = decode_write_payload(&rest[4 + used..])?;
                Ok(Record::Prepare(PrepareRecord {
                    lsn: self.lsn,
                    ts: self.ts,
                    txid,
                    coordinator,
                    participants,
                    ops,
                }))
            }
            KIND_COMMIT | KIND_ABORT if !rest.is_empty() => Err("trailing bytes after the id"),
            KIND_COMMIT => Ok(Record::Commit(tx)),
            KIND_ABORT => Ok(Record::Abort(tx)),
            _ => {
                let (participants, used) = get_participants(rest)?;
                if used != rest.len() {
                    return Err("trailing bytes after the participants");
                }
                Ok(Record::Decision(tx, participants))
            }
        }
    }
}

/// What lies at a position in a segment.
#[derive(Clone, Copy, Debug)]
pub enum Parsed<'a> {
    /// A complete record whose checksum matches.
    Record(RecordView<'a>),
    /// The header bytes are all zero: padding, or the unwritten rest of the segment.
    Zero,
    /// Anything else: a torn or damaged record.
    Garbage,
}

/// Reads a little-endian u32 at `at`; the caller has checked the bounds.
pub(crate) fn read_u32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

/// Reads a little-endian u64 at `at`; the caller has checked the bounds.
pub(crate) fn read_u64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Parses the record that starts at `at` in `seg` (a whole segment image).
pub fn parse(seg: &[u8], at: usize) -> Parsed<'_> {
    let Some(header) = seg.get(at..at + RECORD_HEADER_BYTES) else {
        // Too close to the end for a header: zero if the rest is zero.
        return if seg.get(at..).is_some_and(|r| r.iter().all(|&b| b == 0)) {
            Parsed::Zero
        } else {
            Parsed::Garbage
        };
    };
    if header.iter().all(|&b| b == 0) {
        return Parsed::Zero;
    }
    let len = read_u32(header, AT_LEN) as usize;
    let Some(body) = seg.get(at + AT_LEN..at + RECORD_HEADER_BYTES + len) else {
        return Parsed::Garbage;
    };
    if read_u32(header, AT_CRC) != crc32c::crc32c(body) {
        return Parsed::Garbage;
    }
    Parsed::Record(RecordView {
        lsn: Lsn::new(read_u64(header, AT_LSN)),
        ts: Ts::new(read_u64(header, AT_TS)),
        generation: read_u32(header, AT_GENERATION),
        kind: header[AT_KIND],
        payload: &body[RECORD_HEADER_BYTES - AT_LEN..],
    })
}

/// True when the header at `at` could be a GROUP record's (its kind and length), before any
/// checksum is computed.
pub fn may_be_group(seg: &[u8], at: usize) -> bool {
    seg.get(at..at + RECORD_HEADER_BYTES).is_some_and(|h| {
        h[AT_KIND] == KIND_GROUP && read_u32(h, AT_LEN) as usize == GROUP_PAYLOAD_BYTES
    })
}

/// Bytes a WRITE record for `ops` occupies, header included.
pub fn write_record_bytes<O: AsOp>(ops: &[O]) -> usize {
    RECORD_HEADER_BYTES + write_payload_bytes(ops)
}

/// Bytes of a WRITE payload for `ops`.
pub fn write_payload_bytes<O: AsOp>(ops: &[O]) -> usize {
    OP_COUNT_BYTES + ops.iter().map(|o| o.op().encoded_bytes()).sum::<usize>()
}

fn header_into(b: &mut [u8], len: usize, lsn: Lsn, ts: Ts, generation: u32, kind: u8) {
    b[AT_LEN..AT_LSN].copy_from_slice(&(len as u32).to_le_bytes());
    b[AT_LSN..AT_TS].copy_from_slice(&lsn.get().to_le_bytes());
    b[AT_TS..AT_GENERATION].copy_from_slice(&ts.get().to_le_bytes());
    b[AT_GENERATION..AT_KIND].copy_from_slice(&generation.to_le_bytes());
    b[AT_KIND..RECORD_HEADER_BYTES].copy_from_slice(&[kind, 0, 0, 0]);
}

fn seal(b: &mut [u8]) {
    let crc = crc32c::crc32c(&b[AT_LEN..]);
    b[AT_CRC..AT_LEN].copy_from_slice(&crc.to_le_bytes());
}

/// Appends one WRITE record (header + payload) for `ops` to `out`.
pub fn encode_write<O: AsOp>(out: &mut Vec<u8>, lsn: Lsn, ts: Ts, generation: u32, ops: &[O]) {
    let start = out.len();
    let payload_len = write_payload_bytes(ops);
    out.resize(start + RECORD_HEADER_BYTES, 0);
    header_into(&mut out[start..], payload_len, lsn, ts, generation, KIND_WRITE);
    out.reserve(payload_len);
    out.extend_from_slice(&(ops.len() as u32).to_le_bytes());
    for op in ops {
        let op = op.op();
        let (tag, value) = match op {
            OpRef::Put { value, .. } => (OP_PUT, value),
            OpRef::Delete { .. } => (OP_DELETE, &[][..]),
        };
        out.push(tag);
        out.extend_from_slice(&(op.key().len() as u32).to_le_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(op.key());
        out.extend_from_slice(value);
    }
    seal(&mut out[start..]);
    debug_assert_eq!(out.len() - start, RECORD_HEADER_BYTES + payload_len);
}

/// Writes a GROUP record into `out[..GROUP_RECORD_BYTES]`: the group whose first WRITE record
/// has `first_lsn`, made when every LSN up to `durable_before` was durable.
pub fn encode_group(out: &mut [u8], first_lsn: Lsn, generation: u32, durable_before: Lsn) {
    let b = &mut out[..GROUP_RECORD_BYTES];
    header_into(b, GROUP_PAYLOAD_BYTES, first_lsn, Ts::ZERO, generation, KIND_GROUP);
    b[RECORD_HEADER_BYTES..].copy_from_slice(&durable_before.get().to_le_bytes());
    seal(b);
}

/// The durable claim of a GROUP record's payload.
fn group_durable_before(payload: &[u8]) -> Option<Lsn> {
    (payload.len() == GROUP_PAYLOAD_BYTES).then(|| Lsn::new(read_u64(payload, 0)))
}

/// Decodes a WRITE payload into its ops. `Err` names what is malformed.
fn decode_write_payload(p: &[u8]) -> Result<Vec<WriteOp>, &'static str> {
    let count = p
        .get(..OP_COUNT_BYTES)
        .map(|_| read_u32(p, 0) as usize)
        .ok_or("payload shorter than its count")?;
    let mut ops = Vec::with_capacity(count.min(p.len() / OP_HEADER_BYTES));
    let mut at = OP_COUNT_BYTES;
    for _ in 0..count {
        let head = p.get(at..at + OP_HEADER_BYTES).ok_or("op header past the payload")?;
        let tag = head[0];
        let key_len = read_u32(head, 1) as usize;
        let value_len = read_u32(head, 5) as usize;
        at += OP_HEADER_BYTES;
        let key = p.get(at..at + key_len).ok_or("key past the payload")?.to_vec();
        at += key_len;
        let value = p.get(at..at + value_len).ok_or("value past the payload")?;
        at += value_len;
        ops.push(match tag {
            OP_PUT => WriteOp::Put { key, value: value.into() },
            OP_DELETE if value_len == 0 => WriteOp::Delete { key },
            _ => return Err("unknown op tag"),
        });
    }
    if at != p.len() {
        return Err("trailing bytes after the last op");
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops() -> Vec<WriteOp> {
        vec![
            WriteOp::Put { key: b"k1".to_vec(), value: b"v1"[..].into() },
            WriteOp::Delete { key: b"k2".to_vec() },
        ]
    }

    fn write(lsn: u64, ts: u64, generation: u32) -> Vec<u8> {
        let mut rec = Vec::new();
        encode_write(&mut rec, Lsn::new(lsn), Ts::new(ts), generation, &ops());
        rec
    }

    #[test]
    fn write_record_round_trip() {
        let mut seg = vec![0u8; 64];
        let rec = write(7, 70, 3);
        assert_eq!(rec.len(), write_record_bytes(&ops()));
        seg.extend_from_slice(&rec);
        seg.extend_from_slice(&[0u8; 100]);
        let Parsed::Record(r) = parse(&seg, 64) else { panic!("no record") };
        assert_eq!((r.lsn, r.ts, r.generation, r.kind), (Lsn::new(7), Ts::new(70), 3, KIND_WRITE));
        let want = WriteRecord { lsn: Lsn::new(7), ts: Ts::new(70), ops: ops() };
        assert_eq!(r.decode(), Ok(Decoded::Write(want)));
        assert!(matches!(parse(&seg, 64 + rec.len()), Parsed::Zero));
    }

    #[test]
    fn group_record_round_trip() {
        let mut b = vec![0u8; 64];
        encode_group(&mut b, Lsn::new(9), 4, Lsn::new(7));
        let Parsed::Record(r) = parse(&b, 0) else { panic!("no record") };
        assert_eq!((r.lsn, r.generation, r.kind, r.size()), (Lsn::new(9), 4, KIND_GROUP, 40));
        let want = Decoded::Group { first_lsn: Lsn::new(9), durable_before: Lsn::new(7) };
        assert_eq!(r.decode(), Ok(want));
    }

    #[test]
    fn every_flipped_bit_is_garbage() {
        let rec = write(1, 1, 1);
        for i in 0..rec.len() {
            for bit in 0..8 {
                let mut bad = rec.clone();
                bad[i] ^= 1 << bit;
                assert!(matches!(parse(&bad, 0), Parsed::Garbage), "byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn torn_record_is_garbage() {
        let mut rec = write(1, 1, 1);
        rec.truncate(rec.len() - 3);
        assert!(matches!(parse(&rec, 0), Parsed::Garbage));
    }

    #[test]
    fn unknown_and_reserved_kinds_are_named_errors() {
        for kind in [7u8, 8, 200] {
            let mut rec = write(1, 1, 1);
            rec[AT_KIND] = kind;
            seal(&mut rec);
            let Parsed::Record(r) = parse(&rec, 0) else { panic!("checksum must still match") };
            let err = r.decode().unwrap_err();
            assert_eq!(err, DecodeError::UnknownKind(kind));
            let text = err.to_string();
            assert!(text.contains(&kind.to_string()), "{text}");
            assert_eq!(text.contains("reserved"), KINDS_RESERVED.contains(&kind), "{text}");
        }
    }

    fn decode_body(body: Body<'_>) -> Result<Decoded, DecodeError> {
        let mut rec = Vec::new();
        body.encode(&mut rec, Lsn::new(9), Ts::new(90), 4);
        assert_eq!(rec.len(), body.record_bytes());
        let Parsed::Record(r) = parse(&rec, 0) else { panic!("checksum must match") };
        assert_eq!((r.lsn, r.ts, r.generation), (Lsn::new(9), Ts::new(90), 4));
        r.decode()
    }

    #[test]
    fn transaction_records_round_trip() {
        let ops = ops();
        let prepare =
            Body::Prepare { txid: 77, coordinator: 1, participants: &[1, 3], ops: Ops::Many(&ops) };
        let Ok(Decoded::Tx(Record::Prepare(p))) = decode_body(prepare) else { panic!() };
        assert_eq!((p.txid, p.coordinator, p.participants, p.ops), (77, 1, vec![1, 3], ops));
        let commit = decode_body(Body::Outcome { txid: 5, commit: true });
        assert!(matches!(commit, Ok(Decoded::Tx(Record::Commit(TxRecord { txid: 5, .. })))));
        let abort = decode_body(Body::Outcome { txid: 6, commit: false });
        assert!(matches!(abort, Ok(Decoded::Tx(Record::Abort(TxRecord { txid: 6, .. })))));
        let decision = decode_body(Body::Decision { txid: 8, participants: &[0, 2] });
        let Ok(Decoded::Tx(Record::Decision(d, list))) = decision else { panic!() };
        assert_eq!((d.txid, list), (8, vec![0, 2]));
    }

    #[test]
    fn malformed_transaction_records_are_errors() {
        let bad = [
            Body::Decision { txid: 1, participants: &[] },
            Body::Decision { txid: 1, participants: &[2, 1] },
            Body::Prepare { txid: 1, coordinator: 5, participants: &[1, 2], ops: Ops::Many(&[]) },
        ];
        for body in bad {
            assert!(matches!(decode_body(body), Err(DecodeError::Malformed(_))), "{body:?}");
        }
        // An outcome marker cut short (its payload is 4 bytes, not 8).
        let mut rec = vec![0u8; RECORD_HEADER_BYTES + 4];
        header_into(&mut rec, 4, Lsn::new(1), Ts::new(1), 1, KIND_COMMIT);
        seal(&mut rec);
        let Parsed::Record(r) = parse(&rec, 0) else { panic!() };
        assert!(matches!(r.decode(), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn malformed_payloads_are_errors() {
        assert!(decode_write_payload(&[]).is_err());
        assert!(decode_write_payload(&[1, 0, 0, 0]).is_err());
        assert!(decode_write_payload(&[0, 0, 0, 0, 9]).is_err());
        // A delete carrying a value.
        let mut p = vec![1, 0, 0, 0, OP_DELETE, 1, 0, 0, 0, 1, 0, 0, 0, b'k', b'v'];
        assert_eq!(decode_write_payload(&p), Err("unknown op tag"));
        p[4] = OP_PUT;
        assert!(decode_write_payload(&p).is_ok());
        assert_eq!(group_durable_before(&[0; 7]), None);
    }

    #[test]
    fn encoded_bytes_match_the_payload() {
        let ops = ops();
        let sum: usize = ops.iter().map(WriteOp::encoded_bytes).sum();
        assert_eq!(write_payload_bytes(&ops), OP_COUNT_BYTES + sum);
        assert_eq!(ops[0].encoded_bytes(), OP_HEADER_BYTES + 2 + 2);
    }
}
