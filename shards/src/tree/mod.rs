//! A shard's on-disk copy-on-write B+tree (`docs/ARCHITECTURE.md`, "The tree").
//!
//! One file per shard, `tree.ldb`: pages 0 and 1 are two alternating superblocks
//! (`superblock`), every other page belongs to an extent (`page`): a leaf, a branch, an
//! overflow value or the free list. Nothing reachable from a published superblock is ever
//! written again:
//!
//! - **Merge** ([`TreeWriter::merge`], the shard thread): sorted updates (a frozen memtable's
//!   newest versions) are merged in key order. A leaf or branch that changes is written to a
//!   fresh extent, and so is its path to the root; a subtree without updates is kept by
//!   reference.
//! - **Publish**: the new extents are made durable (fdatasync), then the new superblock, with a
//!   generation one higher, is written to the slot the previous one does not occupy and made
//!   durable. A crash at any point leaves the previous superblock and its whole tree intact.
//! - **Reuse**: an extent the new root no longer reaches is *freed at* that generation. It is
//!   reused only when (a) two generations have passed, so neither superblock on disk reaches it
//!   (a torn write of the newer falls back to the older, whole), and (b) no reader holds a root
//!   older than the generation that freed it ([`Root`]s are reference counted; the writer
//!   watches them through weak references).
//! - **Reads** ([`Root::get`], [`Root::chunk`]): any thread, through a shared reader of the file;
//!   every extent is checked against the checksum its parent's pointer carries.
//!
//! Keys at most `page_size / 4` bytes; values over `page_size / 4` bytes go to an overflow
//! extent of their own.

pub mod cache;
pub mod page;
pub mod superblock;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use crate::error::{Error, Result};
use crate::io::{FileHandle, IoBuf, OpenHow, ReadAt, Storage};
use crate::memtable::{above_lower, below_upper, Direction, KeyBytes};
use cache::PageCache;
use page::{
    branch_entry_bytes, leaf_entry_bytes, Branch, ExtentRef, Kind, Leaf, Node, PageId, Value,
    ValueRef, PAGE_HEADER_BYTES,
};
use superblock::{Slot, Superblock, SUPERBLOCK_BYTES};

/// Leaves a scan reads ahead at most, in flight together.
const READ_AHEAD_LEAVES: usize = 16;

/// The tree file's name in a shard directory.
pub const TREE_FILE: &str = "tree.ldb";

/// How a tree is written.
#[derive(Clone, Copy, Debug)]
pub struct TreeOptions {
    /// Bytes per page (a power of two, at least 4096).
    pub page_size: usize,
    /// Store leaves lz4-compressed where that saves at least 1/8.
    pub compress: bool,
    /// Bytes of decoded extents the shard cache holds at most.
    pub cache_bytes: usize,
}

impl TreeOptions {
    /// Largest value kept inside a leaf; longer ones get an overflow extent.
    pub fn inline_value_max(&self) -> usize {
        self.page_size / 4
    }

    /// Body bytes a leaf is filled to before the next one starts, given how well leaves have
    /// compressed lately (stored / raw bytes): as much as fits one page once compressed, from
    /// one page (incompressible data, or no compression) to four. A compressed leaf still takes
    /// whole pages, so it must hold more to save anything; a larger leaf than that only makes
    /// every rewrite of it larger.
    fn leaf_target(&self, ratio: f64) -> usize {
        let page_body = self.page_size - PAGE_HEADER_BYTES;
        if !self.compress {
            return page_body;
        }
        let fit = (page_body as f64 / ratio.max(0.25)) as usize;
        fit.clamp(page_body, 4 * page_body)
    }

    fn branch_target(&self) -> usize {
        self.page_size - PAGE_HEADER_BYTES - 4
    }
}

/// One change a merge applies: a value, or `None` to remove the key.
pub type Update = (Vec<u8>, Option<Vec<u8>>);

/// A published tree state that readers use. Holding one keeps every extent it reaches from
/// being reused.
pub struct Root {
    sb: Superblock,
    file: PathBuf,
    /// `None` only for the empty tree of a shard without a tree file.
    reader: Option<Arc<dyn ReadAt>>,
    page_size: usize,
    /// The shard cache, shared by every root of the tree.
    cache: Arc<PageCache>,
}

impl std::fmt::Debug for Root {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Root").field("superblock", &self.sb).finish()
    }
}

/// Several keys descending one tree together ([`get_many_across`]).
pub struct Descent<'a> {
    root: &'a Root,
    keys: &'a [&'a [u8]],
    /// Where each key still descending is; `None` once answered.
    at: Vec<Option<ExtentRef>>,
    /// Each key's value, once answered.
    out: Vec<Option<Vec<u8>>>,
    /// Extents this descent read, kept here too: a cache smaller than one level's misses
    /// could evict them before their keys move on.
    fetched: std::collections::HashMap<ExtentRef, Arc<Node>>,
    /// Answer the keys' values; `false`: only bring their paths into the cache.
    values: bool,
    /// With `values` false: also bring in the leaf after each key's leaf in this direction.
    ahead: Option<Direction>,
    /// Follow the first (`Forward`) or last (`Reverse`) child at every branch instead of the
    /// keys: the tree's first or last leaf.
    edge: Option<Direction>,
    /// With `values` false: the branches the first key went through (each with the child
    /// taken) and its leaf, for the scan about to start there ([`into_cursor`]).
    ///
    /// [`into_cursor`]: Descent::into_cursor
    trail: Vec<(Arc<Node>, usize)>,
    leaf: Option<Arc<Node>>,
}

impl<'a> Descent<'a> {
    /// `keys` at the top of `root`'s tree.
    pub fn new(root: &'a Root, keys: &'a [&'a [u8]]) -> Self {
        let top = root.sb.root.map(|(at, _)| at);
        Descent {
            root,
            keys,
            at: vec![top; keys.len()],
            out: vec![None; keys.len()],
            fetched: std::collections::HashMap::new(),
            values: true,
            ahead: None,
            edge: None,
            trail: Vec::new(),
            leaf: None,
        }
    }

    /// `keys` at the top of `root`'s tree, to bring into the cache the path to each key's
    /// leaf and the leaf after it in `direction`, without answering anything (a scan about to
    /// start there: it starts inside a leaf, so it most likely needs the next one too).
    pub fn paths(root: &'a Root, keys: &'a [&'a [u8]], direction: Direction) -> Self {
        Descent { values: false, ahead: Some(direction), ..Descent::new(root, keys) }
    }

    /// As [`paths`](Self::paths) to the tree's first leaf (`Forward`) and the one after it,
    /// or to its last leaf (`Reverse`) and the one before it: a scan with no bound on the side
    /// it starts from.
    pub fn edge_path(root: &'a Root, direction: Direction) -> Self {
        Descent { edge: Some(direction), ..Descent::paths(root, &[b""], direction) }
    }

    /// Each key's value (`None`: not in the tree), in the order given.
    pub fn into_values(self) -> Vec<Option<Vec<u8>>> {
        self.out
    }

    /// After a [`paths`](Self::paths) or [`edge_path`](Self::edge_path) descent: where a scan
    /// in `direction` from `start` (the bound the descent followed) begins, so its first chunk
    /// does not descend again. Empty when the descent did not reach a leaf.
    pub fn into_cursor(self, start: Bound<&[u8]>, direction: Direction) -> TreeCursor {
        match self.leaf {
            Some(leaf) if !self.values => TreeCursor(Some(CursorAt {
                tree: self.root.identity(),
                direction,
                start: own_bound(start),
                path: self.trail,
                leaf,
            })),
            _ => TreeCursor(None),
        }
    }

    /// Moves every key down as far as the cache and the extents already read allow: the
    /// extents the keys wait for, each once.
    fn advance(&mut self) -> Result<Vec<ExtentRef>> {
        let mut misses: Vec<ExtentRef> = Vec::new();
        // The misses, to ask for each once without a quadratic search of a large call's.
        let mut missed: std::collections::HashSet<ExtentRef> = std::collections::HashSet::new();
        for (i, key) in self.keys.iter().enumerate() {
            while let Some(a) = self.at[i] {
                let cached = self.fetched.get(&a).cloned().or_else(|| self.root.cache.get(&a));
                let Some(node) = cached else {
                    if missed.insert(a) {
                        misses.push(a);
                    }
                    break;
                };
                match &*node {
                    Node::Branch { level, branch } => {
                        let child = match self.edge {
                            Some(Direction::Forward) => 0,
                            Some(Direction::Reverse) => branch.children.len() - 1,
                            None => branch.separators.partition_point(|s| s <= *key),
                        };
                        self.at[i] = Some(branch.children[child]);
                        if i == 0 && !self.values {
                            self.trail.push((node.clone(), child));
                        }
                        let next = match self.ahead {
                            Some(Direction::Forward) => branch.children.get(child + 1),
                            Some(Direction::Reverse) => {
                                child.checked_sub(1).and_then(|c| branch.children.get(c))
                            }
                            None => None,
                        };
                        if let (1, Some(&n)) = (*level, next) {
                            let known =
                                self.fetched.contains_key(&n) || self.root.cache.peek(&n).is_some();
                            if !known && missed.insert(n) {
                                misses.push(n);
                            }
                        }
                    }
                    Node::Leaf(leaf) => {
                        self.at[i] = None;
                        if i == 0 && !self.values {
                            self.leaf = Some(node.clone());
                        }
                        if self.values {
                            if let Ok(j) = leaf.search(key) {
                                self.out[i] = Some(self.root.value(leaf.value(j))?);
                            }
                        }
                    }
                    _ => return Err(self.root.corrupt(a, "a tree pointer to a non-node extent")),
                }
            }
        }
        Ok(misses)
    }
}

/// Answers every descent: the keys of all of them move down a level at a time, and the
/// extents they miss in the caches at one level are read in flight together, across trees
/// (`io::read_across`: on the real disk, one batch of the calling thread's ring).
pub fn get_many_across(descents: &mut [Descent<'_>]) -> Result<()> {
    loop {
        let mut waiting: Vec<(usize, Vec<ExtentRef>)> = Vec::new();
        for (d, descent) in descents.iter_mut().enumerate() {
            let misses = descent.advance()?;
            if !misses.is_empty() {
                waiting.push((d, misses));
            }
        }
        if waiting.is_empty() {
            return Ok(());
        }
        let mut groups: Vec<crate::io::ReadGroup<'_>> = Vec::new();
        for (d, misses) in &waiting {
            let root = descents[*d].root;
            let reader = root.reader(misses[0])?;
            let spans = misses.iter().map(|&a| root.span(a)).collect::<Result<Vec<_>>>()?;
            groups.push((reader.as_ref(), spans));
        }
        let answers = crate::io::read_across(&groups);
        drop(groups);
        for ((d, misses), reads) in waiting.into_iter().zip(answers) {
            let descent = &mut descents[d];
            for (a, read) in misses.into_iter().zip(reads) {
                let node = Arc::new(descent.root.check(a, read)?);
                descent.root.cache.insert(a, node.clone());
                descent.fetched.insert(a, node);
            }
        }
    }
}

/// One chunk of a tree scan (as `memtable::Chunk`).
#[derive(Debug, Default)]
pub struct TreeChunk {
    /// `(key, value)` in scan order.
    pub entries: Vec<(KeyBytes, ScanValue)>,
    /// The last key returned; `None` when the range is exhausted.
    pub resume_after: Option<Vec<u8>>,
}

/// Where a scan of one tree stopped, kept by the scan between its chunks: the next chunk
/// resumes in the same leaf with the same path instead of descending from the root again
/// (each step down is a cache lookup). A cursor is used only by a chunk of the same tree
/// (shard, root extent and superblock generation) and direction that starts exactly where it
/// stopped; any other chunk descends as if there were none.
#[derive(Debug, Default)]
pub struct TreeCursor(Option<CursorAt>);

/// A tree's shard, root extent (with height) and superblock generation.
type TreeIdentity = (u32, Option<(ExtentRef, u8)>, u64);

#[derive(Debug)]
struct CursorAt {
    /// The tree it walks ([`Root::identity`]).
    tree: TreeIdentity,
    direction: Direction,
    /// The bound the next chunk must start from (`Excluded(last key returned)`).
    start: Bound<Vec<u8>>,
    /// Each branch from the root down, with the child index taken.
    path: Vec<(Arc<Node>, usize)>,
    leaf: Arc<Node>,
}

fn own_bound(b: Bound<&[u8]>) -> Bound<Vec<u8>> {
    match b {
        Bound::Included(k) => Bound::Included(k.to_vec()),
        Bound::Excluded(k) => Bound::Excluded(k.to_vec()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

fn same_bound(a: &Bound<Vec<u8>>, b: Bound<&[u8]>) -> bool {
    match (a, b) {
        (Bound::Included(x), Bound::Included(y)) | (Bound::Excluded(x), Bound::Excluded(y)) => {
            x.as_slice() == y
        }
        (Bound::Unbounded, Bound::Unbounded) => true,
        _ => false,
    }
}

/// A value a scan found: copied out already (a memtable's, an overflow value), or still in a
/// decoded tree leaf, which it keeps alive and copies out of only when the scan hands the
/// value to its caller. A scan reads entries ahead of what its caller takes (each shard's
/// chunk, then the merge across shards); those it never hands over are never copied.
#[derive(Clone, Debug)]
pub struct ScanValue(ScanRepr);

#[derive(Clone, Debug)]
enum ScanRepr {
    Owned(Vec<u8>),
    /// Entry `i` of a leaf, whose value is inline.
    InLeaf(Arc<Node>, usize),
}

impl ScanValue {
    /// A value already copied out.
    pub fn owned(value: Vec<u8>) -> ScanValue {
        ScanValue(ScanRepr::Owned(value))
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match &self.0 {
            ScanRepr::Owned(v) => v,
            ScanRepr::InLeaf(node, i) => match &**node {
                // Made only for an inline value of a leaf (`Root::chunk`).
                Node::Leaf(leaf) => match leaf.value(*i) {
                    ValueRef::Inline(v) => v,
                    ValueRef::Overflow { .. } => {
                        debug_assert!(false, "a ScanValue in a leaf for an overflow value");
                        &[]
                    }
                },
                _ => {
                    debug_assert!(false, "a ScanValue in a leaf that is not a leaf");
                    &[]
                }
            },
        }
    }

    /// The bytes, owned (copied when they are still in a leaf).
    pub fn into_vec(self) -> Vec<u8> {
        match self.0 {
            ScanRepr::Owned(v) => v,
            ScanRepr::InLeaf(..) => self.as_slice().to_vec(),
        }
    }
}

impl PartialEq for ScanValue {
    fn eq(&self, other: &ScanValue) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for ScanValue {}

impl Root {
    /// The superblock this root was published with.
    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    fn corrupt(&self, at: ExtentRef, what: impl std::fmt::Display) -> Error {
        let offset = at.page.saturating_mul(self.page_size as u64);
        Error::corruption(&self.file, offset, format!("tree extent at page {}: {what}", at.page))
    }

    /// The extent `at`, from the shard cache or read and checked.
    pub fn node(&self, at: ExtentRef) -> Result<Arc<Node>> {
        match self.cache.get(&at) {
            Some(node) => Ok(node),
            None => self.read_into_cache(at),
        }
    }

    /// The extent `at` read from the file, checked and cached (the cache was just asked).
    fn read_into_cache(&self, at: ExtentRef) -> Result<Arc<Node>> {
        let node = Arc::new(self.read_node(at)?);
        self.cache.insert(at, node.clone());
        Ok(node)
    }

    /// What names this tree for a [`TreeCursor`]: its shard, root extent and generation.
    fn identity(&self) -> TreeIdentity {
        (self.sb.shard, self.sb.root, self.sb.generation)
    }

    /// The extent `at`, from the cache if there, else read and checked without caching it (a
    /// merge: the extent is about to be replaced, so caching it would only evict live ones).
    fn node_once(&self, at: ExtentRef) -> Result<Arc<Node>> {
        match self.cache.peek(&at) {
            Some(node) => Ok(node),
            None => Ok(Arc::new(self.read_node(at)?)),
        }
    }

    /// The extents of `wanted` the cache lacks, read in flight together (`ReadAt::read_many`)
    /// and checked, without caching them (a merge: they are about to be replaced). One that
    /// fails its read or its check is left out: the merge reads it again alone and reports it.
    fn read_uncached(
        &self,
        wanted: &[ExtentRef],
    ) -> std::collections::HashMap<ExtentRef, Arc<Node>> {
        let missing: Vec<ExtentRef> =
            wanted.iter().copied().filter(|a| self.cache.peek(a).is_none()).collect();
        if missing.len() < 2 {
            return std::collections::HashMap::new();
        }
        self.read_checked(&missing).unwrap_or_default().into_iter().collect()
    }

    /// `wanted` read in flight together (`ReadAt::read_many`) and checked. An extent whose
    /// read or check fails, or that points out of range, is left out: whoever needs it reads
    /// it again alone and reports it. `Err` only for a tree without a file.
    fn read_checked(&self, wanted: &[ExtentRef]) -> Result<Vec<(ExtentRef, Arc<Node>)>> {
        let Some(&first) = wanted.first() else { return Ok(Vec::new()) };
        let reader = self.reader(first)?;
        let wanted: Vec<(ExtentRef, (u64, usize))> =
            wanted.iter().filter_map(|&a| Some((a, self.span(a).ok()?))).collect();
        let spans: Vec<(u64, usize)> = wanted.iter().map(|(_, span)| *span).collect();
        Ok(wanted
            .into_iter()
            .zip(reader.read_many(&spans))
            .filter_map(|((a, _), bytes)| Some((a, Arc::new(self.check(a, bytes).ok()?))))
            .collect())
    }

    /// Reads and checks the extent `at` from the file (never the cache).
    fn read_node(&self, at: ExtentRef) -> Result<Node> {
        let (offset, len) = self.span(at)?;
        let reader = self.reader(at)?;
        self.check(at, reader.read_at(offset, len))
    }

    /// The byte offset and length of the extent `at` in the file.
    fn span(&self, at: ExtentRef) -> Result<(u64, usize)> {
        let offset = at.page.checked_mul(self.page_size as u64);
        let len = (at.pages as usize).checked_mul(self.page_size);
        match (offset, len) {
            (Some(offset), Some(len)) => Ok((offset, len)),
            _ => Err(self.corrupt(at, "pointer out of range")),
        }
    }

    fn reader(&self, at: ExtentRef) -> Result<&Arc<dyn ReadAt>> {
        self.reader.as_ref().ok_or_else(|| self.corrupt(at, "a read of a tree that has no file"))
    }

    /// The extent `at` decoded from what a read of it answered, checked.
    fn check(&self, at: ExtentRef, read: std::io::Result<Vec<u8>>) -> Result<Node> {
        let bytes = read.map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => self.corrupt(at, "past the end of the file"),
            _ => Error::io("read tree extent", &self.file, e),
        })?;
        page::decode(&bytes, at, self.page_size).map_err(|e| self.corrupt(at, e))
    }

    fn value(&self, value: ValueRef<'_>) -> Result<Vec<u8>> {
        match value {
            ValueRef::Inline(v) => Ok(v.to_vec()),
            ValueRef::Overflow { at, len } => match &*self.node(at)? {
                Node::Overflow(v) if v.len() == len as usize => Ok(v.clone()),
                _ => Err(self.corrupt(at, "not the overflow value its leaf points to")),
            },
        }
    }

    /// The value of `key`, if the tree holds it.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let Some((mut at, _)) = self.sb.root else { return Ok(None) };
        loop {
            let node = self.node(at)?;
            match &*node {
                Node::Branch { branch, .. } => {
                    at = branch.children[branch.separators.partition_point(|s| s <= key)];
                }
                Node::Leaf(leaf) => {
                    return match leaf.search(key) {
                        Ok(i) => self.value(leaf.value(i)).map(Some),
                        Err(_) => Ok(None),
                    };
                }
                _ => return Err(self.corrupt(at, "a tree pointer to a non-node extent")),
            }
        }
    }

    /// The values of several keys (`None`: not in the tree), in the order given (see
    /// [`get_many_across`]).
    #[cfg(test)]
    pub fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        let mut descent = Descent::new(self, keys);
        get_many_across(std::slice::from_mut(&mut descent))?;
        Ok(descent.out)
    }

    /// Up to `limit` entries within the bounds, in `direction` order; a later chunk resumes
    /// after `TreeChunk::resume_after` (passed as the excluded bound), with `cursor` as this
    /// chunk left it.
    pub fn chunk(
        &self,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        direction: Direction,
        limit: usize,
        cursor: &mut TreeCursor,
    ) -> Result<TreeChunk> {
        let mut out = TreeChunk::default();
        let resumed = cursor.0.take();
        let Some((root, _)) = self.sb.root else { return Ok(out) };
        let limit = limit.max(1);
        let start = match direction {
            Direction::Forward => lower,
            Direction::Reverse => upper,
        };
        // The path from the root: each branch and the child index taken. The first descent
        // follows `start`; later ones enter the next subtree at its edge.
        let mut path: Vec<(Arc<Node>, usize)> = Vec::new();
        let mut at = root;
        let mut first = true;
        // Where the cursor stopped, when this chunk starts there.
        let mut resume_leaf = None;
        if let Some(c) = resumed {
            if c.tree == self.identity() && c.direction == direction && same_bound(&c.start, start)
            {
                path = c.path;
                resume_leaf = Some(c.leaf);
                first = false;
            }
        }
        // Entries in the last leaf seen, to judge how many leaves the chunk still needs (a
        // guess until one is seen: a 4 KiB page of ~100-byte entries).
        let mut per_leaf = 32usize;
        // Leaves read ahead, kept here as well as offered to the cache: a cache too small to
        // keep them must not make the scan read them again.
        let mut ahead: Vec<(ExtentRef, Arc<Node>)> = Vec::new();
        loop {
            let leaf = loop {
                if let Some(leaf) = resume_leaf.take() {
                    break leaf;
                }
                // A leaf the cache holds is taken from it; one it lacks is read with the
                // leaves after it (`read_ahead`), unless an earlier read-ahead brought it.
                let mut cached = None;
                let mut looked = false;
                if let Some((parent, i)) = path.last() {
                    if let Node::Branch { level: 1, branch } = &**parent {
                        cached = self.cache.get(&at);
                        looked = true;
                        if cached.is_none() && !ahead.iter().any(|(a, _)| *a == at) {
                            // One more than the estimate: the chunk starts inside a leaf.
                            let want = (limit - out.entries.len()).div_ceil(per_leaf.max(1)) + 1;
                            let more = want.min(READ_AHEAD_LEAVES);
                            let within = (lower, upper);
                            ahead = self.read_ahead(branch, *i, direction, within, more)?;
                        }
                    }
                }
                let node = match (cached, ahead.iter().find(|(a, _)| *a == at)) {
                    (Some(node), _) => node,
                    (None, Some((_, node))) => node.clone(),
                    (None, None) if looked => self.read_into_cache(at)?,
                    (None, None) => self.node(at)?,
                };
                match &*node {
                    Node::Branch { branch, .. } => {
                        let last = branch.children.len() - 1;
                        let i = match (first, start, direction) {
                            (true, Bound::Included(k) | Bound::Excluded(k), _) => {
                                branch.separators.partition_point(|s| s <= k)
                            }
                            (_, _, Direction::Forward) => 0,
                            (_, _, Direction::Reverse) => last,
                        };
                        at = branch.children[i];
                        path.push((node.clone(), i));
                    }
                    Node::Leaf(_) => break node,
                    _ => return Err(self.corrupt(at, "a tree pointer to a non-node extent")),
                }
            };
            first = false;
            let node = leaf;
            let Node::Leaf(leaf) = &*node else { return Ok(out) };
            per_leaf = leaf.len();
            // Where the range starts in this leaf (a binary search: only the first leaf can
            // start inside), then entries in direction order up to the far bound.
            let indexes: Box<dyn Iterator<Item = usize>> = match direction {
                Direction::Forward => {
                    let from = leaf.partition_point(|k| !above_lower(k, lower));
                    Box::new(from..leaf.len())
                }
                Direction::Reverse => {
                    let to = leaf.partition_point(|k| below_upper(k, upper));
                    Box::new((0..to).rev())
                }
            };
            for i in indexes {
                let key = leaf.key(i);
                let before_end = match direction {
                    Direction::Forward => below_upper(key, upper),
                    Direction::Reverse => above_lower(key, lower),
                };
                if !before_end {
                    return Ok(out);
                }
                let value = match leaf.value(i) {
                    ValueRef::Inline(_) => ScanValue(ScanRepr::InLeaf(node.clone(), i)),
                    overflow => ScanValue::owned(self.value(overflow)?),
                };
                out.entries.push((KeyBytes::new(key), value));
                if out.entries.len() == limit {
                    out.resume_after = Some(key.to_vec());
                    cursor.0 = Some(CursorAt {
                        tree: self.identity(),
                        direction,
                        start: Bound::Excluded(key.to_vec()),
                        path,
                        leaf: node.clone(),
                    });
                    return Ok(out);
                }
            }
            // The next leaf: up the path to a branch with a sibling in the direction.
            loop {
                let Some((node, i)) = path.last_mut() else { return Ok(out) };
                let Node::Branch { branch, .. } = &**node else { return Ok(out) };
                let next = match direction {
                    Direction::Forward => (*i + 1 < branch.children.len()).then_some(*i + 1),
                    Direction::Reverse => i.checked_sub(1),
                };
                if let Some(n) = next {
                    *i = n;
                    at = branch.children[n];
                    break;
                }
                path.pop();
            }
        }
    }

    /// Scan read-ahead: when the leaf at `branch.children[i]` is not cached, it and up to
    /// `want - 1` more leaves after it in `direction` (none past the scan's far bound) that are
    /// not cached either are read in flight together, cached and returned, so a scan waits for
    /// one read, not one per leaf.
    fn read_ahead(
        &self,
        branch: &Branch,
        i: usize,
        direction: Direction,
        within: (Bound<&[u8]>, Bound<&[u8]>),
        want: usize,
    ) -> Result<Vec<(ExtentRef, Arc<Node>)>> {
        if self.cache.peek(&branch.children[i]).is_some() {
            return Ok(Vec::new());
        }
        // Children in `direction` from `i`, while they can hold keys within the bounds: child
        // `j` holds keys from `separators[j - 1]` up to before `separators[j]`.
        let (lower, upper) = within;
        let seps = &branch.separators;
        let ahead: Box<dyn Iterator<Item = usize>> = match direction {
            Direction::Forward => Box::new((i..branch.children.len()).take_while(move |&j| {
                j == i || seps.get(j - 1).is_some_and(|sep| below_upper(sep, upper))
            })),
            Direction::Reverse => Box::new((0..=i).rev().take_while(move |&j| {
                j == i
                    || seps.get(j).is_some_and(|sep| match lower {
                        Bound::Included(l) | Bound::Excluded(l) => sep > l,
                        Bound::Unbounded => true,
                    })
            })),
        };
        let wanted: Vec<ExtentRef> = ahead
            .take(want.max(1))
            .map(|j| branch.children[j])
            .filter(|a| self.cache.peek(a).is_none())
            .collect();
        if wanted.len() < 2 {
            return Ok(Vec::new());
        }
        // A leaf that fails its read or check is left out: the scan reports it if it gets
        // there (its range may end before).
        let read = self.read_checked(&wanted)?;
        for (a, node) in &read {
            self.cache.insert(*a, node.clone());
        }
        Ok(read)
    }

    /// Walks every extent the root reaches, read from the file (not the cache), and checks it
    /// (`db.verify()`): returns the extents reached, or the first `Error::Corruption`.
    pub fn verify(&self) -> Result<Vec<ExtentRef>> {
        let mut reached = Vec::new();
        let Some((root, height)) = self.sb.root else { return Ok(reached) };
        let mut stack = vec![(root, height - 1)];
        while let Some((at, level)) = stack.pop() {
            reached.push(at);
            match self.read_node(at)? {
                Node::Branch { level: l, branch } if l == level && level >= 1 => {
                    stack.extend(branch.children.iter().map(|c| (*c, level - 1)));
                }
                Node::Leaf(leaf) if level == 0 => {
                    for i in 0..leaf.len() {
                        if let ValueRef::Overflow { at: o, len } = leaf.value(i) {
                            reached.push(o);
                            match self.read_node(o)? {
                                Node::Overflow(v) if v.len() == len as usize => {}
                                _ => return Err(self.corrupt(o, "not the overflow value expected")),
                            }
                        }
                    }
                }
                _ => return Err(self.corrupt(at, "a node at the wrong level")),
            }
        }
        Ok(reached)
    }
}

/// What opening a tree found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeOpened {
    /// The superblock in use.
    pub superblock: Superblock,
    /// The other slot, when it was torn or damaged (its generation was lost or never written
    /// whole): the tree fell back to the one in use.
    pub other_slot_invalid: Option<String>,
}

/// The shard thread's side of a tree: allocation, merges, publishing.
pub struct TreeWriter<S: Storage> {
    dir: PathBuf,
    path: PathBuf,
    /// `None` until the first merge creates the file.
    file: Option<S::File>,
    options: TreeOptions,
    current: Arc<Root>,
    /// Roots handed out before the current one, while anyone may hold them.
    old_roots: Vec<Weak<Root>>,
    /// Free pages any write may take.
    reusable: BTreeSet<PageId>,
    /// Free pages by the generation that freed them, until `reusable`.
    waiting: BTreeMap<u64, Vec<PageId>>,
    /// The file's used range ends here.
    end_page: PageId,
    buf: Vec<u8>,
    body: Vec<u8>,
    /// Extents framed and not yet written: contiguous, from page `pending_at`.
    pending: Vec<u8>,
    /// Stored / raw bytes of the leaves compressed lately (1.0: incompressible).
    ratio: f64,
    pending_at: PageId,
}

/// Keys a compaction step rewrites.
const COMPACT_STEP_KEYS: usize = 16 * 1024;

/// Contiguous extents are written together up to this many bytes.
const WRITE_COALESCE_BYTES: usize = 1 << 20;

impl<S: Storage> TreeWriter<S> {
    /// A writer of the tree `current` publishes, with no free pages known yet.
    fn with(
        dir: &Path,
        path: PathBuf,
        file: Option<S::File>,
        options: TreeOptions,
        current: Arc<Root>,
    ) -> TreeWriter<S> {
        TreeWriter {
            dir: dir.to_path_buf(),
            path,
            file,
            options,
            end_page: current.sb.end_page,
            current,
            old_roots: Vec::new(),
            reusable: BTreeSet::new(),
            waiting: BTreeMap::new(),
            buf: Vec::new(),
            body: Vec::new(),
            pending: Vec::new(),
            pending_at: 0,
            ratio: 1.0,
        }
    }

    /// Opens shard `shard`'s tree in `dir`. Without a tree file the tree is empty, and the
    /// file is created by the first merge (a database that never flushes has none).
    pub fn open(
        io: &mut S,
        dir: &Path,
        shard: u32,
        options: TreeOptions,
    ) -> Result<(TreeWriter<S>, TreeOpened)> {
        let path = dir.join(TREE_FILE);
        let names = io.list_dir(dir).map_err(|e| Error::io("list shard directory", dir, e))?;
        let tmp = format!("{TREE_FILE}.tmp");
        if names.contains(&tmp) {
            let tmp = dir.join(tmp);
            io.remove_file(&tmp).map_err(|e| Error::io("remove interrupted tree file", &tmp, e))?;
        }
        if !names.iter().any(|n| n == TREE_FILE) {
            let sb = Superblock::empty(shard, options.page_size as u32);
            let current = Arc::new(Root {
                sb,
                file: path.clone(),
                reader: None,
                page_size: options.page_size,
                cache: PageCache::new(options.cache_bytes),
            });
            let writer = TreeWriter::with(dir, path, None, options, current);
            return Ok((writer, TreeOpened { superblock: sb, other_slot_invalid: None }));
        }
        let file =
            io.open(&path, OpenHow::Direct).map_err(|e| Error::io("open tree file", &path, e))?;
        let mut slots = Vec::new();
        for slot in 0..2u64 {
            let offset = slot * options.page_size as u64;
            let bytes = io
                .read_at(&path, offset, SUPERBLOCK_BYTES)
                .map_err(|e| Error::io("read tree superblock", &path, e))?;
            slots.push(Superblock::decode(&bytes));
        }
        for slot in &slots {
            if let Slot::OtherVersion(found) = slot {
                return Err(Error::IncompatibleVersion {
                    file: path,
                    found: *found,
                    supported: superblock::TREE_FORMAT_VERSION,
                });
            }
        }
        let sb = superblock::choose(&slots[0], &slots[1])
            .map_err(|e| Error::corruption(&path, 0, format!("tree superblocks: {e}")))?;
        if sb.shard != shard || sb.page_size as usize != options.page_size {
            return Err(Error::corruption(
                &path,
                sb.slot() * options.page_size as u64,
                format!(
                    "tree superblock of shard {} with {}-byte pages, in shard {shard}'s \
                     directory with {}-byte pages",
                    sb.shard, sb.page_size, options.page_size
                ),
            ));
        }
        let other = &slots[(1 - sb.slot()) as usize];
        let other_slot_invalid = match other {
            Slot::Invalid(e) => {
                log::warn!(
                    "{}: one tree superblock is invalid ({e}); using the other",
                    path.display()
                );
                Some(e.to_string())
            }
            _ => None,
        };
        let reader =
            io.shared_reader(&path).map_err(|e| Error::io("open tree file for reads", &path, e))?;
        let current = Arc::new(Root {
            sb,
            file: path.clone(),
            reader: Some(reader),
            page_size: options.page_size,
            cache: PageCache::new(options.cache_bytes),
        });
        let mut writer = TreeWriter::with(dir, path, Some(file), options, current);
        if let Some(list) = sb.free_list {
            match writer.current.read_node(list)? {
                Node::FreeList(pages) => {
                    // Pages the newest generation freed may be reached by the other
                    // superblock: they wait one more generation.
                    for (page, freed_at) in pages {
                        writer.waiting.entry(freed_at).or_default().push(page);
                    }
                }
                _ => return Err(writer.current.corrupt(list, "not a free list")),
            }
        }
        Ok((writer, TreeOpened { superblock: sb, other_slot_invalid }))
    }

    /// The shard cache's hits and misses so far.
    pub fn cache_counts(&self) -> (u64, u64) {
        self.current.cache.counts()
    }

    /// Bytes the shard cache holds now.
    pub fn cache_bytes(&self) -> usize {
        self.current.cache.bytes()
    }

    /// The published root (readers clone it).
    pub fn root(&self) -> Arc<Root> {
        self.current.clone()
    }

    /// Pages free now (reusable or waiting).
    pub fn free_pages(&self) -> usize {
        self.reusable.len() + self.waiting.values().map(Vec::len).sum::<usize>()
    }

    /// The file's used range, in pages.
    pub fn end_page(&self) -> PageId {
        self.end_page
    }

    /// Merges `updates` (ascending, distinct keys) into the tree and publishes the result as
    /// the next generation with the given checkpoint: on return, the new superblock is durable
    /// and [`root`](Self::root) is the new tree.
    pub fn merge(
        &mut self,
        io: &mut S,
        updates: &[Update],
        checkpoint_lsn: u64,
        checkpoint_ts: u64,
    ) -> Result<Arc<Root>> {
        debug_assert!(updates.windows(2).all(|w| w[0].0 < w[1].0), "updates must be sorted");
        if self.file.is_none() {
            let shard = self.current.sb.shard;
            create(io, &self.dir, &self.path, shard, self.options.page_size)?;
            let path = &self.path;
            let file =
                io.open(path, OpenHow::Direct).map_err(|e| Error::io("open tree file", path, e))?;
            let reader = io
                .shared_reader(path)
                .map_err(|e| Error::io("open tree file for reads", path, e))?;
            self.file = Some(file);
            let sb = self.current.sb;
            self.current = Arc::new(Root {
                sb,
                file: self.path.clone(),
                reader: Some(reader),
                page_size: self.options.page_size,
                cache: self.current.cache.clone(),
            });
        }
        let old = self.current.clone();
        let generation = old.sb.generation + 1;
        self.release(generation);
        let mut freed: Vec<PageId> = Vec::new();
        let mut entries = old.sb.entries as i64;
        let (root, height) = match old.sb.root {
            None => {
                let out = self.rewrite_leaf(
                    io,
                    Leaf::default(),
                    updates,
                    generation,
                    &mut freed,
                    &mut entries,
                )?;
                self.grow(io, out, 1, generation)?
            }
            Some((root, height)) => {
                let out = self.merge_node(
                    io,
                    &old,
                    root,
                    None,
                    height - 1,
                    updates,
                    generation,
                    &mut freed,
                    &mut entries,
                )?;
                self.grow(io, out, height, generation)?
            }
        };
        if let Some(list) = old.sb.free_list {
            free_extent(&mut freed, list);
        }
        let sb = self.publish(
            io,
            root,
            height,
            freed,
            generation,
            checkpoint_lsn,
            checkpoint_ts,
            entries.max(0) as u64,
        )?;
        let new = Arc::new(Root {
            sb,
            file: self.path.clone(),
            reader: old.reader.clone(),
            page_size: self.options.page_size,
            cache: old.cache.clone(),
        });
        self.old_roots.push(Arc::downgrade(&old));
        self.current = new.clone();
        Ok(new)
    }

    /// Gives the file's free tail back: rewrites every extent the tree reaches twice (so it
    /// moves to the lowest free pages), then cuts every reusable page off the end of the file,
    /// publishes that length and truncates the file. `install` gets each published root (readers must move on to it, or the pages
    /// of the root they hold stay in use). Returns the bytes given back.
    pub fn compact(&mut self, io: &mut S, mut install: impl FnMut(Arc<Root>)) -> Result<u64> {
        if self.file.is_none() {
            return Ok(0);
        }
        let before = self.end_page;
        let sb = self.current.sb;
        let (lsn, ts) = (sb.checkpoint_lsn, sb.checkpoint_ts);
        // Twice: every entry again, in steps, so every leaf and branch is written anew into
        // the lowest reusable pages; two empty publishes after each pass make the pages it
        // left reusable, so the second pass moves the data below the first pass's.
        for _pass in 0..2 {
            let mut resume: Option<Vec<u8>> = None;
            loop {
                let lower = resume.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
                let root = self.current.clone();
                let c = root.chunk(
                    lower,
                    Bound::Unbounded,
                    Direction::Forward,
                    COMPACT_STEP_KEYS,
                    &mut TreeCursor::default(),
                )?;
                drop(root);
                let updates: Vec<Update> = c
                    .entries
                    .into_iter()
                    .map(|(k, v)| (k.as_slice().to_vec(), Some(v.into_vec())))
                    .collect();
                install(self.merge(io, &updates, lsn, ts)?);
                match c.resume_after {
                    Some(r) => resume = Some(r),
                    None => break,
                }
            }
            for _ in 0..2 {
                install(self.merge(io, &[], lsn, ts)?);
            }
        }
        self.release(self.current.sb.generation + 1);
        while self.end_page > superblock::FIRST_DATA_PAGE
            && self.reusable.remove(&(self.end_page - 1))
        {
            self.end_page -= 1;
        }
        install(self.merge(io, &[], lsn, ts)?);
        let file = self.file.as_ref().ok_or_else(|| no_file(&self.path))?;
        let bytes = self.end_page * self.options.page_size as u64;
        io.truncate(file, bytes).map_err(|e| Error::io("truncate tree file", &self.path, e))?;
        io.sync_file(file).map_err(|e| Error::io("fdatasync tree file", &self.path, e))?;
        Ok(before.saturating_sub(self.end_page) * self.options.page_size as u64)
    }

    /// Moves waiting pages that generation `generation` may write over into `reusable`: freed
    /// two or more generations earlier (neither superblock on disk reaches them) and older than
    /// every root a reader still holds.
    fn release(&mut self, generation: u64) {
        self.old_roots.retain(|w| w.strong_count() > 0);
        let oldest_held = self
            .old_roots
            .iter()
            .filter_map(Weak::upgrade)
            .map(|r| r.sb.generation)
            .min()
            .unwrap_or(u64::MAX);
        let limit = (generation.saturating_sub(2)).min(oldest_held);
        let ready: Vec<u64> = self.waiting.range(..=limit).map(|(g, _)| *g).collect();
        for g in ready {
            if let Some(pages) = self.waiting.remove(&g) {
                self.reusable.extend(pages);
            }
        }
    }

    /// Takes `pages` contiguous free pages, from the reusable set or the file's end.
    fn allocate(&mut self, pages: u32) -> PageId {
        if pages == 1 {
            if let Some(p) = self.reusable.pop_first() {
                return p;
            }
        } else {
            let want = u64::from(pages);
            let mut run_start = None;
            let mut run_len = 0u64;
            let mut prev = None;
            for &p in self.reusable.iter().take(4096) {
                if prev.is_some_and(|q: u64| q + 1 == p) {
                    run_len += 1;
                } else {
                    run_start = Some(p);
                    run_len = 1;
                }
                prev = Some(p);
                if run_len == want {
                    break;
                }
            }
            if let (Some(start), true) = (run_start, run_len == want) {
                for p in start..start + want {
                    self.reusable.remove(&p);
                }
                return start;
            }
        }
        let p = self.end_page;
        self.end_page += u64::from(pages);
        p
    }

    /// Frames `body` as an extent and writes it to freshly allocated pages.
    fn write_extent(
        &mut self,
        io: &mut S,
        kind: Kind,
        level: u8,
        generation: u64,
        compress: bool,
    ) -> Result<ExtentRef> {
        // Framed at page 0 to learn its length, then moved to the pages allocated for it.
        let framed = page::frame(
            &mut self.buf,
            page::Frame { kind, level, page: 0, generation },
            &self.body,
            compress,
            self.options.page_size,
        );
        if kind == Kind::Leaf && compress && !self.body.is_empty() {
            // How well leaves compress, smoothed: sizes the next leaves.
            let stored = page::header(&self.buf).map_or(self.body.len(), |h| h.body_len as usize);
            let ratio = stored as f64 / self.body.len() as f64;
            self.ratio = 0.9 * self.ratio + 0.1 * ratio.min(1.0);
        }
        let at = self.allocate(framed.pages);
        let r = page::relocate(&mut self.buf, at, self.options.page_size);
        self.write_framed(io, at)?;
        Ok(r)
    }

    /// Writes the extent framed in `buf` at page `at` (through an aligned buffer: the file is
    /// open with `O_DIRECT`).
    fn write_framed(&mut self, io: &mut S, at: PageId) -> Result<()> {
        // Extents are mostly allocated one after another: coalesce them into one write.
        let page = self.options.page_size as u64;
        let follows = self.pending_at + (self.pending.len() as u64) / page == at;
        if !self.pending.is_empty() && (!follows || self.pending.len() >= WRITE_COALESCE_BYTES) {
            self.write_pending(io)?;
        }
        if self.pending.is_empty() {
            self.pending_at = at;
        }
        self.pending.extend_from_slice(&self.buf);
        Ok(())
    }

    /// Writes the coalesced extents (through an aligned buffer: the file is open with
    /// `O_DIRECT`).
    fn write_pending(&mut self, io: &mut S) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let len = self.pending.len();
        let io_buf = aligned_copy(&self.pending, &self.path)?;
        self.pending.clear();
        let offset = self.pending_at * self.options.page_size as u64;
        let file = self.file.as_ref().ok_or_else(|| no_file(&self.path))?;
        io.write_at(file, offset, &io_buf.as_slice()[..len])
            .map_err(|e| Error::io("write tree extent", file.path(), e))
    }

    fn write_value(&mut self, io: &mut S, value: &[u8], generation: u64) -> Result<Value> {
        if value.len() <= self.options.inline_value_max() {
            return Ok(Value::Inline(value.to_vec()));
        }
        self.body.clear();
        self.body.extend_from_slice(value);
        let at = self.write_extent(io, Kind::Overflow, 0, generation, false)?;
        Ok(Value::Overflow { at, len: value.len() as u32 })
    }

    /// Merges `updates` into the leaf `leaf` and writes the result as one or more leaves:
    /// `(lower bound, extent)`, the first with `None` (the old lower bound stays).
    fn rewrite_leaf(
        &mut self,
        io: &mut S,
        leaf: Leaf,
        updates: &[Update],
        generation: u64,
        freed: &mut Vec<PageId>,
        entries: &mut i64,
    ) -> Result<Vec<(Option<Vec<u8>>, ExtentRef)>> {
        let mut merged: Vec<(Vec<u8>, Value)> =
            Vec::with_capacity(leaf.entries.len() + updates.len());
        let mut old = leaf.entries.into_iter().peekable();
        for (key, update) in updates {
            while let Some((k, _)) = old.peek() {
                if k >= key {
                    break;
                }
                merged.extend(old.next());
            }
            let replaced = old.peek().is_some_and(|(k, _)| k == key);
            if replaced {
                if let Some((_, Value::Overflow { at, .. })) = old.next() {
                    free_extent(freed, at);
                }
            }
            match update {
                Some(v) => {
                    let value = self.write_value(io, v, generation)?;
                    merged.push((key.clone(), value));
                    if !replaced {
                        *entries += 1;
                    }
                }
                None if replaced => *entries -= 1,
                None => {}
            }
        }
        merged.extend(old);
        // Pack into leaves of at most the target body size.
        let target = self.options.leaf_target(self.ratio);
        let mut out = Vec::new();
        let mut start = 0;
        while start < merged.len() {
            let mut bytes = 4;
            let mut end = start;
            while end < merged.len() {
                let b = leaf_entry_bytes(merged[end].0.len(), &merged[end].1);
                if end > start && bytes + b > target {
                    break;
                }
                bytes += b;
                end += 1;
            }
            let part = Leaf { entries: merged[start..end].to_vec() };
            page::encode_leaf(&mut self.body, &part);
            let at = self.write_extent(io, Kind::Leaf, 0, generation, self.options.compress)?;
            let lower = (!out.is_empty()).then(|| merged[start].0.clone());
            out.push((lower, at));
            start = end;
        }
        Ok(out)
    }

    /// Merges `updates` into the subtree at `at` (a node of `level`), returning its
    /// replacement nodes (as `rewrite_leaf`).
    #[allow(clippy::too_many_arguments)]
    fn merge_node(
        &mut self,
        io: &mut S,
        root: &Root,
        at: ExtentRef,
        known: Option<Arc<Node>>,
        level: u8,
        updates: &[Update],
        generation: u64,
        freed: &mut Vec<PageId>,
        entries: &mut i64,
    ) -> Result<Vec<(Option<Vec<u8>>, ExtentRef)>> {
        let node = match known {
            Some(node) => node,
            None => root.node_once(at)?,
        };
        free_extent(freed, at);
        if level == 0 {
            return match &*node {
                Node::Leaf(leaf) => {
                    self.rewrite_leaf(io, leaf.to_leaf(), updates, generation, freed, entries)
                }
                _ => Err(root.corrupt(at, "not a node of level 0")),
            };
        }
        match &*node {
            Node::Branch { level: l, branch } if *l == level && level >= 1 => {
                // Each child's share of the updates.
                let mut shares: Vec<&[Update]> = Vec::with_capacity(branch.children.len());
                let mut rest = updates;
                for i in 0..branch.children.len() {
                    let mine = match branch.separators.get(i) {
                        Some(sep) => rest.partition_point(|(k, _)| k.as_slice() < sep),
                        None => rest.len(),
                    };
                    let (here, later) = rest.split_at(mine);
                    shares.push(here);
                    rest = later;
                }
                // The leaves to rewrite, read in flight together rather than one after
                // another (a flush of random keys rewrites most leaves of a large tree).
                let mut leaves = if level == 1 {
                    let wanted: Vec<ExtentRef> = (branch.children.iter().zip(&shares))
                        .filter(|(_, here)| !here.is_empty())
                        .map(|(child, _)| *child)
                        .collect();
                    root.read_uncached(&wanted)
                } else {
                    std::collections::HashMap::new()
                };
                let mut children: Vec<(Option<Vec<u8>>, ExtentRef)> = Vec::new();
                for (i, (child, here)) in branch.children.iter().zip(shares).enumerate() {
                    let lower = if i == 0 {
                        None
                    } else {
                        branch.separators.get(i - 1).map(<[u8]>::to_vec)
                    };
                    if here.is_empty() {
                        children.push((lower, *child));
                        continue;
                    }
                    let replaced = self.merge_node(
                        io,
                        root,
                        *child,
                        leaves.remove(child),
                        level - 1,
                        here,
                        generation,
                        freed,
                        entries,
                    )?;
                    for (j, (first, r)) in replaced.into_iter().enumerate() {
                        children.push((if j == 0 { lower.clone() } else { first }, r));
                    }
                }
                self.write_branches(io, children, level, generation)
            }
            _ => Err(root.corrupt(at, format!("not a node of level {level}"))),
        }
    }

    /// Writes `children` (the first's lower bound is ignored) as one or more branches of
    /// `level`; none when there are no children.
    fn write_branches(
        &mut self,
        io: &mut S,
        children: Vec<(Option<Vec<u8>>, ExtentRef)>,
        level: u8,
        generation: u64,
    ) -> Result<Vec<(Option<Vec<u8>>, ExtentRef)>> {
        let target = self.options.branch_target();
        let mut out = Vec::new();
        let mut start = 0;
        while start < children.len() {
            let mut bytes = EXTENT_REF_PLUS_COUNT;
            let mut end = start + 1;
            while end < children.len() {
                let sep_len = children[end].0.as_ref().map_or(0, Vec::len);
                let b = branch_entry_bytes(sep_len);
                if bytes + b > target {
                    break;
                }
                bytes += b;
                end += 1;
            }
            let part = Branch {
                separators: children[start + 1..end]
                    .iter()
                    .map(|(s, _)| s.as_deref().unwrap_or_default())
                    .collect(),
                children: children[start..end].iter().map(|(_, r)| *r).collect(),
            };
            page::encode_branch(&mut self.body, &part);
            let at = self.write_extent(io, Kind::Branch, level, generation, false)?;
            let lower = if start == 0 { None } else { children[start].0.clone() };
            out.push((lower, at));
            start = end;
        }
        Ok(out)
    }

    /// Builds levels above `nodes` (of height `height`) until one root remains.
    fn grow(
        &mut self,
        io: &mut S,
        mut nodes: Vec<(Option<Vec<u8>>, ExtentRef)>,
        mut height: u8,
        generation: u64,
    ) -> Result<(Option<ExtentRef>, u8)> {
        loop {
            match nodes.len() {
                0 => return Ok((None, 0)),
                1 => return Ok((Some(nodes[0].1), height)),
                _ => {
                    nodes = self.write_branches(io, nodes, height, generation)?;
                    height += 1;
                }
            }
        }
    }

    /// Writes the free list, makes the new extents durable, then the superblock.
    #[allow(clippy::too_many_arguments)]
    fn publish(
        &mut self,
        io: &mut S,
        root: Option<ExtentRef>,
        height: u8,
        freed: Vec<PageId>,
        generation: u64,
        checkpoint_lsn: u64,
        checkpoint_ts: u64,
        entries: u64,
    ) -> Result<Superblock> {
        if !freed.is_empty() {
            self.waiting.entry(generation).or_default().extend(freed);
        }
        // The free list's own extent is allocated first (which only shrinks the set), sized
        // for the set as it is.
        let count = self.free_pages();
        let free_list = if count == 0 {
            None
        } else {
            // Its extent is allocated first, sized for the set as it is (taking it only shrinks
            // the set), and its body padded with zeros to fill it.
            let pages = page::pages_for(8 + 16 * count, self.options.page_size) as u32;
            let at = self.allocate(pages);
            let mut list: Vec<(PageId, u64)> = self.reusable.iter().map(|&p| (p, 0)).collect();
            for (g, pages) in &self.waiting {
                list.extend(pages.iter().map(|&p| (p, *g)));
            }
            list.sort_unstable();
            page::encode_free_list(&mut self.body, &list);
            let fill = pages as usize * self.options.page_size - PAGE_HEADER_BYTES;
            self.body.resize(fill, 0);
            let r = page::frame(
                &mut self.buf,
                page::Frame { kind: Kind::FreeList, level: 0, page: at, generation },
                &self.body,
                false,
                self.options.page_size,
            );
            debug_assert_eq!(r.pages, pages);
            self.write_framed(io, at)?;
            Some(r)
        };
        self.write_pending(io)?;
        let file = self.file.as_ref().ok_or_else(|| no_file(&self.path))?;
        io.sync_file(file).map_err(|e| Error::io("fdatasync tree extents", &self.path, e))?;
        let sb = Superblock {
            shard: self.current.sb.shard,
            page_size: self.options.page_size as u32,
            generation,
            root: root.map(|r| (r, height)),
            checkpoint_lsn,
            checkpoint_ts,
            end_page: self.end_page,
            free_list,
            entries,
        };
        let io_buf = aligned_copy(&sb.encode(), &self.path)?;
        io.write_at(
            file,
            sb.slot() * self.options.page_size as u64,
            &io_buf.as_slice()[..SUPERBLOCK_BYTES],
        )
        .map_err(|e| Error::io("write tree superblock", &self.path, e))?;
        io.sync_file(file).map_err(|e| Error::io("fdatasync tree superblock", &self.path, e))?;
        Ok(sb)
    }
}

/// Bytes of a branch body before its first separator: the count and the first child.
const EXTENT_REF_PLUS_COUNT: usize = 4 + page::EXTENT_REF_BYTES;

fn free_extent(freed: &mut Vec<PageId>, at: ExtentRef) {
    freed.extend(at.page..at.page + u64::from(at.pages));
}

/// `bytes` in an aligned buffer (the file is open with `O_DIRECT`).
fn aligned_copy(bytes: &[u8], path: &Path) -> Result<IoBuf> {
    let mut buf = IoBuf::zeroed(bytes.len()).ok_or_else(|| {
        Error::io("allocate a tree write buffer", path, std::io::ErrorKind::OutOfMemory.into())
    })?;
    buf.as_mut_slice()[..bytes.len()].copy_from_slice(bytes);
    Ok(buf)
}

fn no_file(path: &Path) -> Error {
    Error::io("write tree file", path, std::io::ErrorKind::NotFound.into())
}

/// Creates an empty tree file: written and made durable under a temporary name, then renamed
/// into place (as WAL segments are), so `tree.ldb` always has a whole superblock.
fn create<S: Storage>(
    io: &mut S,
    dir: &Path,
    path: &Path,
    shard: u32,
    page_size: usize,
) -> Result<()> {
    let tmp = dir.join(format!("{TREE_FILE}.tmp"));
    if io
        .list_dir(dir)
        .map_err(|e| Error::io("list shard directory", dir, e))?
        .iter()
        .any(|n| *n == format!("{TREE_FILE}.tmp"))
    {
        io.remove_file(&tmp).map_err(|e| Error::io("remove interrupted tree file", &tmp, e))?;
    }
    let file =
        io.open(&tmp, OpenHow::CreateNew).map_err(|e| Error::io("create tree file", &tmp, e))?;
    let sb = Superblock::empty(shard, page_size as u32);
    let mut bytes = vec![0u8; 2 * page_size];
    let at = sb.slot() as usize * page_size;
    bytes[at..at + SUPERBLOCK_BYTES].copy_from_slice(&sb.encode());
    io.write_at(&file, 0, &bytes).map_err(|e| Error::io("write tree superblock", &tmp, e))?;
    io.sync_file(&file).map_err(|e| Error::io("fdatasync tree file", &tmp, e))?;
    io.rename(&tmp, path).map_err(|e| Error::io("rename tree file", path, e))?;
    io.sync_dir(dir).map_err(|e| Error::io("fsync shard directory", dir, e))
}
