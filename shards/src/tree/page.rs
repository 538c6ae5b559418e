//! The bytes of one tree page (`docs/FORMAT.md`, "Tree pages").
//!
//! A node is stored as an *extent*: one or more contiguous pages of `page_size` bytes, starting
//! with a 32-byte header (magic, kind, level, flags, format version, the extent's own page id,
//! the generation that wrote it, the stored body's length, a crc32c over header and body). A
//! parent's pointer to a child carries the child's page id, extent length and checksum, so a
//! page that is whole but stale (an older write of the same place) is caught as well as a
//! damaged one. Leaves may be stored lz4-compressed when that saves at least 1/8. Values too
//! large for a leaf live in an overflow extent of their own, which the leaf entry points to.
//!
//! Pure code: encoders write into a caller's buffer, decoders read a byte slice and return
//! `Ok` or a [`PageError`] for any input (never a panic: property-tested in `tests`).

use std::fmt;

/// The page format version (`PAGE_FORMAT_VERSION` in `docs/FORMAT.md`).
pub const PAGE_FORMAT_VERSION: u8 = 1;
/// Bytes of the header at the start of every extent.
pub const PAGE_HEADER_BYTES: usize = 32;
/// "LDBP", little-endian.
pub const PAGE_MAGIC: u32 = u32::from_le_bytes(*b"LDBP");
/// Flag: the body is lz4-compressed (a `u32` uncompressed length, then the block).
const FLAG_LZ4: u8 = 1;
/// A decompressed leaf body may not exceed this (a damaged length must not allocate without
/// bound).
pub const MAX_LEAF_BODY: usize = 1 << 20;

/// A page number: its byte offset in the tree file is `id × page_size`.
pub type PageId = u64;

/// What an extent holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Keys and values (or overflow pointers), sorted.
    Leaf = 1,
    /// Separator keys and child pointers.
    Branch = 2,
    /// One large value.
    Overflow = 3,
    /// The free page list of one generation.
    FreeList = 4,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Leaf),
            2 => Some(Kind::Branch),
            3 => Some(Kind::Overflow),
            4 => Some(Kind::FreeList),
            _ => None,
        }
    }
}

/// A pointer to an extent: where it is, how long, and the checksum it must carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ExtentRef {
    /// Its first page.
    pub page: PageId,
    /// Its length in pages (at least 1).
    pub pages: u32,
    /// The crc32c its header carries.
    pub crc: u32,
}

/// Bytes a child pointer takes in a branch.
pub const EXTENT_REF_BYTES: usize = 16;

/// A value in a leaf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// The bytes, in the leaf.
    Inline(Vec<u8>),
    /// The bytes, in an overflow extent of `len` value bytes.
    Overflow {
        /// The extent.
        at: ExtentRef,
        /// The value's length.
        len: u32,
    },
}

impl Value {
    /// Bytes this value takes in a leaf body.
    pub fn encoded_len(&self) -> usize {
        match self {
            Value::Inline(v) => v.len(),
            Value::Overflow { .. } => EXTENT_REF_BYTES,
        }
    }
}

/// A decoded leaf: sorted, distinct keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leaf {
    /// `(key, value)` in ascending key order.
    pub entries: Vec<(Vec<u8>, Value)>,
}

/// A value as a decoded leaf holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueRef<'a> {
    /// The bytes, in the leaf.
    Inline(&'a [u8]),
    /// The bytes, in an overflow extent of `len` value bytes.
    Overflow {
        /// The extent.
        at: ExtentRef,
        /// The value's length.
        len: u32,
    },
}

impl ValueRef<'_> {
    /// The owned form.
    pub fn to_value(self) -> Value {
        match self {
            ValueRef::Inline(v) => Value::Inline(v.to_vec()),
            ValueRef::Overflow { at, len } => Value::Overflow { at, len },
        }
    }
}

/// Where an entry of a [`PackedLeaf`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    key_at: u32,
    key_len: u16,
    value: SlotValue,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotValue {
    Inline { at: u32, len: u32 },
    Overflow { at: ExtentRef, len: u32 },
}

/// A leaf as read from the file: its body kept whole, and where each entry is in it. Two
/// allocations however many entries (a leaf decoded into a vector per key and per value made
/// evicting it from the cache cost the read path a quarter of its time in `free()`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackedLeaf {
    body: Vec<u8>,
    slots: Vec<Slot>,
}

impl PackedLeaf {
    /// Entries.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// The key of entry `i` (`i < len()`).
    pub fn key(&self, i: usize) -> &[u8] {
        let s = &self.slots[i];
        let at = s.key_at as usize;
        &self.body[at..at + usize::from(s.key_len)]
    }

    /// The value of entry `i` (`i < len()`).
    pub fn value(&self, i: usize) -> ValueRef<'_> {
        match self.slots[i].value {
            SlotValue::Inline { at, len } => {
                ValueRef::Inline(&self.body[at as usize..at as usize + len as usize])
            }
            SlotValue::Overflow { at, len } => ValueRef::Overflow { at, len },
        }
    }

    /// The entry holding `key`, or where it would go.
    pub fn search(&self, key: &[u8]) -> Result<usize, usize> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.key(mid).cmp(key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }

    /// The first entry whose key does not satisfy `pred` (keys ascending, `pred` true then
    /// false).
    pub fn partition_point(&self, pred: impl Fn(&[u8]) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(self.key(mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Bytes it takes in memory, about.
    pub fn heap_bytes(&self) -> usize {
        self.body.capacity() + self.slots.capacity() * std::mem::size_of::<Slot>() + 64
    }

    /// `leaf` as a read of it would decode it.
    #[cfg(test)]
    pub fn pack(leaf: &Leaf) -> PackedLeaf {
        let mut body = Vec::new();
        encode_leaf(&mut body, leaf);
        decode_leaf(&body).expect("an encoded leaf decodes")
    }

    /// The owned form, to merge into (the writer).
    pub fn to_leaf(&self) -> Leaf {
        Leaf {
            entries: (0..self.len())
                .map(|i| (self.key(i).to_vec(), self.value(i).to_value()))
                .collect(),
        }
    }
}

/// Bytes an entry of key length `k` and value `v` takes in a leaf body.
pub fn leaf_entry_bytes(key_len: usize, value: &Value) -> usize {
    2 + 1 + 4 + key_len + value.encoded_len()
}

/// A decoded branch: `children.len() == separators.len() + 1`; child `i` holds the keys `k`
/// with `separators[i-1] <= k < separators[i]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Branch {
    /// Ascending separator keys.
    pub separators: Separators,
    /// The children, one more than the separators.
    pub children: Vec<ExtentRef>,
}

/// A branch's separator keys, back to back in one buffer (a decoded branch is three
/// allocations, not one per separator).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Separators {
    bytes: Vec<u8>,
    /// Where each separator ends in `bytes`.
    ends: Vec<u32>,
}

impl Separators {
    /// Separators.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Separator `i`, if there is one.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)? as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        Some(&self.bytes[start..end])
    }

    /// Appends a separator (greater than the last).
    pub fn push(&mut self, sep: &[u8]) {
        self.bytes.extend_from_slice(sep);
        self.ends.push(self.bytes.len() as u32);
    }

    /// The separators in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len()).filter_map(|i| self.get(i))
    }

    /// The first separator that does not satisfy `pred` (true then false in order).
    pub fn partition_point(&self, pred: impl Fn(&[u8]) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.get(mid).is_some_and(&pred) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Bytes it takes in memory, about.
    pub fn heap_bytes(&self) -> usize {
        self.bytes.capacity() + self.ends.capacity() * 4
    }
}

impl<S: AsRef<[u8]>> FromIterator<S> for Separators {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        let mut out = Separators::default();
        for sep in iter {
            out.push(sep.as_ref());
        }
        out
    }
}

/// Bytes a separator of length `k` and its child pointer take in a branch body.
pub fn branch_entry_bytes(key_len: usize) -> usize {
    2 + key_len + EXTENT_REF_BYTES
}

/// A decoded extent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    /// A leaf (level 0).
    Leaf(PackedLeaf),
    /// A branch (level ≥ 1).
    Branch {
        /// Its level: 1 when its children are leaves.
        level: u8,
        /// Its separators and children.
        branch: Branch,
    },
    /// An overflow value.
    Overflow(Vec<u8>),
    /// A free list: `(page, the generation that freed it)`, sorted by page, distinct.
    FreeList(Vec<(PageId, u64)>),
}

/// Why bytes are not a valid extent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageError(pub String);

impl fmt::Display for PageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad(what: impl Into<String>) -> PageError {
    PageError(what.into())
}

/// The header fields of an extent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// What it holds.
    pub kind: Kind,
    /// 0 for leaves, overflow and free lists; a branch's level.
    pub level: u8,
    /// Body flags (`FLAG_LZ4`).
    flags: u8,
    /// Its own first page.
    pub page: PageId,
    /// The generation that wrote it.
    pub generation: u64,
    /// Bytes stored after the header.
    pub body_len: u32,
    /// crc32c of the header (this field zero) and the stored body.
    pub crc: u32,
}

/// Pages an extent with a stored body of `body_len` bytes takes.
pub fn pages_for(body_len: usize, page_size: usize) -> usize {
    (PAGE_HEADER_BYTES + body_len).div_ceil(page_size)
}

/// What an extent's header says about it, besides its body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    /// What it holds.
    pub kind: Kind,
    /// 0, or a branch's level.
    pub level: u8,
    /// Its first page.
    pub page: PageId,
    /// The generation that writes it.
    pub generation: u64,
}

/// Frames `body` as an extent in `out` (cleared first; padded with zeros to whole pages) and
/// returns its pointer. `compress` stores the body lz4-compressed when that saves ≥ 1/8.
pub fn frame(
    out: &mut Vec<u8>,
    f: Frame,
    body: &[u8],
    compress: bool,
    page_size: usize,
) -> ExtentRef {
    let Frame { kind, level, page, generation } = f;
    out.clear();
    out.resize(PAGE_HEADER_BYTES, 0);
    let mut flags = 0;
    if compress && !body.is_empty() {
        let packed = lz4_flex::compress_prepend_size(body);
        if packed.len() <= body.len() - body.len() / 8 {
            flags |= FLAG_LZ4;
            out.extend_from_slice(&packed);
        }
    }
    if flags & FLAG_LZ4 == 0 {
        out.extend_from_slice(body);
    }
    let body_len = out.len() - PAGE_HEADER_BYTES;
    out[0..4].copy_from_slice(&PAGE_MAGIC.to_le_bytes());
    out[4] = kind as u8;
    out[5] = level;
    out[6] = flags;
    out[7] = PAGE_FORMAT_VERSION;
    out[8..16].copy_from_slice(&page.to_le_bytes());
    out[16..24].copy_from_slice(&generation.to_le_bytes());
    out[24..28].copy_from_slice(&(body_len as u32).to_le_bytes());
    let crc = crc32c::crc32c(&out[..28]);
    let crc = crc32c::crc32c_append(crc, &out[PAGE_HEADER_BYTES..]);
    out[28..32].copy_from_slice(&crc.to_le_bytes());
    let pages = pages_for(body_len, page_size);
    out.resize(pages * page_size, 0);
    ExtentRef { page, pages: pages as u32, crc }
}

/// Moves an extent framed by [`frame`] in `out` to page `page`: rewrites its page id and its
/// checksum (cheaper than framing again, which may compress again).
pub fn relocate(out: &mut [u8], page: PageId, page_size: usize) -> ExtentRef {
    out[8..16].copy_from_slice(&page.to_le_bytes());
    let body_len = u32::from_le_bytes(le4(&out[24..28])) as usize;
    let crc = crc32c::crc32c(&out[..28]);
    let crc = crc32c::crc32c_append(crc, &out[PAGE_HEADER_BYTES..PAGE_HEADER_BYTES + body_len]);
    out[28..32].copy_from_slice(&crc.to_le_bytes());
    ExtentRef { page, pages: (out.len() / page_size) as u32, crc }
}

/// Reads and checks the header at the start of `bytes` (at least the header).
pub fn header(bytes: &[u8]) -> Result<Header, PageError> {
    if bytes.len() < PAGE_HEADER_BYTES {
        return Err(bad("shorter than a page header"));
    }
    if u32::from_le_bytes(le4(&bytes[0..4])) != PAGE_MAGIC {
        return Err(bad("no page magic"));
    }
    if bytes[7] != PAGE_FORMAT_VERSION {
        return Err(bad(format!(
            "page format version {} (this build reads {PAGE_FORMAT_VERSION})",
            bytes[7]
        )));
    }
    let kind =
        Kind::from_u8(bytes[4]).ok_or_else(|| bad(format!("unknown page kind {}", bytes[4])))?;
    Ok(Header {
        kind,
        level: bytes[5],
        flags: bytes[6],
        page: u64::from_le_bytes(le8(&bytes[8..16])),
        generation: u64::from_le_bytes(le8(&bytes[16..24])),
        body_len: u32::from_le_bytes(le4(&bytes[24..28])),
        crc: u32::from_le_bytes(le4(&bytes[28..32])),
    })
}

/// Decodes the extent `at` from `bytes` (its pages, read from `at.page`): checks the header,
/// the checksum, that it is the extent the pointer names (page, length, crc), then the body.
pub fn decode(bytes: &[u8], at: ExtentRef, page_size: usize) -> Result<Node, PageError> {
    let h = header(bytes)?;
    if h.page != at.page {
        return Err(bad(format!("page {} found where page {} belongs", h.page, at.page)));
    }
    let body_len = h.body_len as usize;
    let end = PAGE_HEADER_BYTES
        .checked_add(body_len)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| bad(format!("body of {body_len} bytes runs past the extent")))?;
    if pages_for(body_len, page_size) != at.pages as usize {
        return Err(bad(format!(
            "extent of {} pages, its pointer says {}",
            pages_for(body_len, page_size),
            at.pages
        )));
    }
    let mut crc = crc32c::crc32c(&bytes[..28]);
    crc = crc32c::crc32c_append(crc, &bytes[PAGE_HEADER_BYTES..end]);
    if crc != h.crc {
        return Err(bad("page checksum mismatch"));
    }
    if crc != at.crc {
        return Err(bad("page checksum differs from its parent's pointer (a stale page)"));
    }
    let stored = &bytes[PAGE_HEADER_BYTES..end];
    let unpacked;
    let body = if h.flags & FLAG_LZ4 != 0 {
        if h.kind != Kind::Leaf {
            return Err(bad("a compressed page that is not a leaf"));
        }
        let size = stored.get(..4).map(|b| u32::from_le_bytes(le4(b)) as usize);
        match size {
            Some(n) if n <= MAX_LEAF_BODY => {}
            _ => return Err(bad("compressed body length missing or too large")),
        }
        unpacked =
            lz4_flex::decompress_size_prepended(stored).map_err(|e| bad(format!("lz4: {e}")))?;
        &unpacked[..]
    } else if h.flags != 0 {
        return Err(bad(format!("unknown page flags {:#x}", h.flags)));
    } else {
        stored
    };
    match h.kind {
        Kind::Leaf if h.level == 0 => decode_leaf(body).map(Node::Leaf),
        Kind::Branch if h.level >= 1 => {
            decode_branch(body).map(|branch| Node::Branch { level: h.level, branch })
        }
        Kind::Overflow if h.level == 0 => Ok(Node::Overflow(body.to_vec())),
        Kind::FreeList if h.level == 0 => decode_free_list(body).map(Node::FreeList),
        kind => Err(bad(format!("{kind:?} page at level {}", h.level))),
    }
}

/// Encodes a leaf body.
pub fn encode_leaf(out: &mut Vec<u8>, leaf: &Leaf) {
    out.clear();
    out.extend_from_slice(&(leaf.entries.len() as u32).to_le_bytes());
    for (key, value) in &leaf.entries {
        out.extend_from_slice(&(key.len() as u16).to_le_bytes());
        match value {
            Value::Inline(v) => {
                out.push(1);
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                out.extend_from_slice(key);
                out.extend_from_slice(v);
            }
            Value::Overflow { at, len } => {
                out.push(2);
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(key);
                put_ref(out, at);
            }
        }
    }
}

/// Encodes a branch body.
pub fn encode_branch(out: &mut Vec<u8>, branch: &Branch) {
    out.clear();
    out.extend_from_slice(&(branch.children.len() as u32).to_le_bytes());
    for child in &branch.children {
        put_ref(out, child);
    }
    for sep in branch.separators.iter() {
        out.extend_from_slice(&(sep.len() as u16).to_le_bytes());
        out.extend_from_slice(sep);
    }
}

/// Encodes a free list body: `(page, generation that freed it)`, sorted by page.
pub fn encode_free_list(out: &mut Vec<u8>, pages: &[(PageId, u64)]) {
    out.clear();
    out.extend_from_slice(&(pages.len() as u64).to_le_bytes());
    for (p, g) in pages {
        out.extend_from_slice(&p.to_le_bytes());
        out.extend_from_slice(&g.to_le_bytes());
    }
}

fn put_ref(out: &mut Vec<u8>, at: &ExtentRef) {
    out.extend_from_slice(&at.page.to_le_bytes());
    out.extend_from_slice(&at.pages.to_le_bytes());
    out.extend_from_slice(&at.crc.to_le_bytes());
}

/// A cursor over a body that fails, never panics, at its end.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PageError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end =
            end.ok_or_else(|| bad(format!("body ends inside a field at byte {}", self.at)))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, PageError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, PageError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, PageError> {
        Ok(u32::from_le_bytes(le4(self.take(4)?)))
    }
    fn u64(&mut self) -> Result<u64, PageError> {
        Ok(u64::from_le_bytes(le8(self.take(8)?)))
    }
    fn extent(&mut self) -> Result<ExtentRef, PageError> {
        let page = self.u64()?;
        let pages = self.u32()?;
        let crc = self.u32()?;
        if pages == 0 {
            return Err(bad("a pointer to an extent of 0 pages"));
        }
        Ok(ExtentRef { page, pages, crc })
    }
    fn done(&self) -> Result<(), PageError> {
        if self.at == self.bytes.len() {
            Ok(())
        } else {
            Err(bad(format!("{} trailing bytes in a body", self.bytes.len() - self.at)))
        }
    }
    /// Checks that `count` items of at least `min_bytes` each can fit what is left.
    fn plausible(&self, count: u64, min_bytes: usize) -> Result<usize, PageError> {
        let left = (self.bytes.len() - self.at) as u64;
        if count.saturating_mul(min_bytes as u64) > left {
            return Err(bad(format!("a count of {count} that the body cannot hold")));
        }
        Ok(count as usize)
    }
}

fn decode_leaf(body: &[u8]) -> Result<PackedLeaf, PageError> {
    let mut r = Reader { bytes: body, at: 0 };
    let count = u64::from(r.u32()?);
    let count = r.plausible(count, 7)?;
    let mut slots: Vec<Slot> = Vec::with_capacity(count);
    let mut prev: Option<&[u8]> = None;
    for _ in 0..count {
        let key_len = r.u16()?;
        let tag = r.u8()?;
        let len = r.u32()?;
        // Offsets fit u32: a body is at most a few pages.
        let key_at = r.at as u32;
        let key = r.take(usize::from(key_len))?;
        let value = match tag {
            1 => {
                let at = r.at as u32;
                r.take(len as usize)?;
                SlotValue::Inline { at, len }
            }
            2 => SlotValue::Overflow { at: r.extent()?, len },
            t => return Err(bad(format!("unknown value tag {t}"))),
        };
        if prev.is_some_and(|p| p >= key) {
            return Err(bad("leaf keys out of order"));
        }
        prev = Some(key);
        slots.push(Slot { key_at, key_len, value });
    }
    r.done()?;
    Ok(PackedLeaf { body: body.to_vec(), slots })
}

fn decode_branch(body: &[u8]) -> Result<Branch, PageError> {
    let mut r = Reader { bytes: body, at: 0 };
    let count = u64::from(r.u32()?);
    if count == 0 {
        return Err(bad("a branch without children"));
    }
    let count = r.plausible(count, EXTENT_REF_BYTES)?;
    let children = (0..count).map(|_| r.extent()).collect::<Result<Vec<_>, _>>()?;
    let mut separators = Separators {
        bytes: Vec::with_capacity(body.len() - r.at),
        ends: Vec::with_capacity(count - 1),
    };
    let mut prev: Option<&[u8]> = None;
    for _ in 1..count {
        let len = usize::from(r.u16()?);
        let sep = r.take(len)?;
        if prev.is_some_and(|p| p >= sep) {
            return Err(bad("branch separators out of order"));
        }
        prev = Some(sep);
        separators.push(sep);
    }
    r.done()?;
    Ok(Branch { separators, children })
}

fn decode_free_list(body: &[u8]) -> Result<Vec<(PageId, u64)>, PageError> {
    let mut r = Reader { bytes: body, at: 0 };
    let count = r.u64()?;
    let count = r.plausible(count, 16)?;
    let mut pages: Vec<(PageId, u64)> = Vec::with_capacity(count);
    for _ in 0..count {
        let p = r.u64()?;
        let g = r.u64()?;
        if pages.last().is_some_and(|&(prev, _)| prev >= p) {
            return Err(bad("free list out of order"));
        }
        pages.push((p, g));
    }
    // The list's extent is allocated before the list is final: zeros may fill it.
    if body[r.at..].iter().any(|&b| b != 0) {
        return Err(bad("bytes after the free list that are not zero"));
    }
    Ok(pages)
}

/// The first 4 bytes of `b` (callers check the length).
pub(super) fn le4(b: &[u8]) -> [u8; 4] {
    let mut out = [0u8; 4];
    out.copy_from_slice(&b[..4]);
    out
}

/// The first 8 bytes of `b` (callers check the length).
pub(super) fn le8(b: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(&b[..8]);
    out
}
