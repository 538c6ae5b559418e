//! The two superblocks of a shard's tree file (`docs/FORMAT.md`, "Tree superblock").
//!
//! Slot 0 is page 0 and slot 1 is page 1 of the tree file; each holds 4096 meaningful bytes.
//! Generation `g` is written to slot `g % 2`, so a publish never overwrites the superblock it
//! replaces: a torn or lost write of the new one leaves the old one whole. At open the valid
//! slot with the higher generation wins; an all-zero slot was never written; anything else
//! that fails its checksum is a torn (or damaged) write.

use super::page::{le4, le8, ExtentRef, PageError, PageId};

/// `TREE_FORMAT_VERSION` in `docs/FORMAT.md`.
pub const TREE_FORMAT_VERSION: u32 = 1;
/// Bytes of a superblock.
pub const SUPERBLOCK_BYTES: usize = 4096;
/// "LDB-TREE".
pub const SUPERBLOCK_MAGIC: [u8; 8] = *b"LDB-TREE";
/// Pages 0 and 1 are the superblock slots; extents start at this page.
pub const FIRST_DATA_PAGE: PageId = 2;

/// One published state of the tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Superblock {
    /// The shard the file belongs to.
    pub shard: u32,
    /// The page size the file is written with.
    pub page_size: u32,
    /// Rises by one per publish; the slot is `generation % 2`.
    pub generation: u64,
    /// The root extent and the tree's height (levels: 1 when the root is a leaf); `None`: an
    /// empty tree.
    pub root: Option<(ExtentRef, u8)>,
    /// The WAL records at or past this LSN are not in the tree: replay starts here.
    pub checkpoint_lsn: u64,
    /// The highest timestamp of any version the tree holds.
    pub checkpoint_ts: u64,
    /// Pages below this are in the file's used range (extents or free).
    pub end_page: PageId,
    /// The free list extent of this generation, if there are free pages.
    pub free_list: Option<ExtentRef>,
    /// Keys the tree holds.
    pub entries: u64,
}

/// What a slot holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Slot {
    /// All zeros: never written.
    Empty,
    /// A valid superblock.
    Valid(Superblock),
    /// A whole superblock (checksum and magic hold) of another format version: written by
    /// another build, never to be read as this one.
    OtherVersion(u32),
    /// Anything else (a torn or damaged write).
    Invalid(PageError),
}

impl Superblock {
    /// The superblock of a new, empty tree.
    pub fn empty(shard: u32, page_size: u32) -> Superblock {
        Superblock {
            shard,
            page_size,
            generation: 1,
            root: None,
            checkpoint_lsn: 1,
            checkpoint_ts: 0,
            end_page: FIRST_DATA_PAGE,
            free_list: None,
            entries: 0,
        }
    }

    /// The slot (0 or 1) this generation is written to.
    pub fn slot(&self) -> u64 {
        self.generation % 2
    }

    /// The 4096 bytes of this superblock.
    pub fn encode(&self) -> [u8; SUPERBLOCK_BYTES] {
        let mut b = [0u8; SUPERBLOCK_BYTES];
        b[0..8].copy_from_slice(&SUPERBLOCK_MAGIC);
        b[8..12].copy_from_slice(&TREE_FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.shard.to_le_bytes());
        b[16..20].copy_from_slice(&self.page_size.to_le_bytes());
        b[24..32].copy_from_slice(&self.generation.to_le_bytes());
        if let Some((root, height)) = self.root {
            put_ref(&mut b[32..48], root);
            b[48] = height;
        }
        b[56..64].copy_from_slice(&self.checkpoint_lsn.to_le_bytes());
        b[64..72].copy_from_slice(&self.checkpoint_ts.to_le_bytes());
        b[72..80].copy_from_slice(&self.end_page.to_le_bytes());
        if let Some(free) = self.free_list {
            put_ref(&mut b[80..96], free);
        }
        b[96..104].copy_from_slice(&self.entries.to_le_bytes());
        let crc = crc32c::crc32c(&b[..SUPERBLOCK_BYTES - 4]);
        b[SUPERBLOCK_BYTES - 4..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Reads a slot's bytes (fewer than 4096 count as torn; any input is safe).
    pub fn decode(bytes: &[u8]) -> Slot {
        if bytes.len() >= SUPERBLOCK_BYTES && bytes[..SUPERBLOCK_BYTES].iter().all(|&b| b == 0) {
            return Slot::Empty;
        }
        if let Some(version) = Self::other_version(bytes) {
            return Slot::OtherVersion(version);
        }
        match Self::decode_valid(bytes) {
            Ok(sb) => Slot::Valid(sb),
            Err(e) => Slot::Invalid(e),
        }
    }

    /// The version of a whole superblock of another format version, if `bytes` hold one.
    fn other_version(bytes: &[u8]) -> Option<u32> {
        let b = bytes.get(..SUPERBLOCK_BYTES)?;
        let stored = u32::from_le_bytes(le4(&b[SUPERBLOCK_BYTES - 4..]));
        let whole =
            crc32c::crc32c(&b[..SUPERBLOCK_BYTES - 4]) == stored && b[0..8] == SUPERBLOCK_MAGIC;
        let version = u32::from_le_bytes(le4(&b[8..12]));
        (whole && version != TREE_FORMAT_VERSION).then_some(version)
    }

    fn decode_valid(bytes: &[u8]) -> Result<Superblock, PageError> {
        let bad = |what: &str| PageError(what.to_string());
        if bytes.len() < SUPERBLOCK_BYTES {
            return Err(bad("superblock shorter than 4096 bytes"));
        }
        let b = &bytes[..SUPERBLOCK_BYTES];
        let stored = u32::from_le_bytes(le4(&b[SUPERBLOCK_BYTES - 4..]));
        if crc32c::crc32c(&b[..SUPERBLOCK_BYTES - 4]) != stored {
            return Err(bad("superblock checksum mismatch"));
        }
        if b[0..8] != SUPERBLOCK_MAGIC {
            return Err(bad("no superblock magic"));
        }
        let version = u32::from_le_bytes(le4(&b[8..12]));
        if version != TREE_FORMAT_VERSION {
            return Err(PageError(format!(
                "tree format version {version} (this build reads {TREE_FORMAT_VERSION})"
            )));
        }
        let root = get_ref(&b[32..48]);
        let height = b[48];
        let root = match (root, height) {
            (None, 0) => None,
            (Some(r), h) if h >= 1 => Some((r, h)),
            _ => return Err(bad("superblock root and height disagree")),
        };
        let sb = Superblock {
            shard: u32::from_le_bytes(le4(&b[12..16])),
            page_size: u32::from_le_bytes(le4(&b[16..20])),
            generation: u64::from_le_bytes(le8(&b[24..32])),
            root,
            checkpoint_lsn: u64::from_le_bytes(le8(&b[56..64])),
            checkpoint_ts: u64::from_le_bytes(le8(&b[64..72])),
            end_page: u64::from_le_bytes(le8(&b[72..80])),
            free_list: get_ref(&b[80..96]),
            entries: u64::from_le_bytes(le8(&b[96..104])),
        };
        if sb.end_page < FIRST_DATA_PAGE || sb.generation == 0 {
            return Err(bad("superblock with an impossible end page or generation"));
        }
        for r in sb.root.map(|(r, _)| r).into_iter().chain(sb.free_list) {
            if r.page < FIRST_DATA_PAGE || r.page.saturating_add(u64::from(r.pages)) > sb.end_page {
                return Err(bad("superblock points outside the file's used range"));
            }
        }
        Ok(sb)
    }
}

fn put_ref(b: &mut [u8], r: ExtentRef) {
    b[0..8].copy_from_slice(&r.page.to_le_bytes());
    b[8..12].copy_from_slice(&r.pages.to_le_bytes());
    b[12..16].copy_from_slice(&r.crc.to_le_bytes());
}

/// A pointer, or `None` when the field is all zero.
fn get_ref(b: &[u8]) -> Option<ExtentRef> {
    let page = u64::from_le_bytes(le8(&b[0..8]));
    let pages = u32::from_le_bytes(le4(&b[8..12]));
    let crc = u32::from_le_bytes(le4(&b[12..16]));
    (pages != 0).then_some(ExtentRef { page, pages, crc })
}

/// Which superblock to use, from the two slots. `Err` when neither is valid (both torn or
/// damaged, or one torn and the other never written).
pub fn choose(a: &Slot, b: &Slot) -> Result<Superblock, PageError> {
    match (a, b) {
        (Slot::OtherVersion(v), _) | (_, Slot::OtherVersion(v)) => Err(PageError(format!(
            "tree format version {v} (this build reads {TREE_FORMAT_VERSION})"
        ))),
        (Slot::Valid(x), Slot::Valid(y)) => Ok(if x.generation >= y.generation { *x } else { *y }),
        (Slot::Valid(x), _) | (_, Slot::Valid(x)) => Ok(*x),
        (Slot::Empty, Slot::Empty) => Err(PageError("no superblock was ever written".into())),
        (Slot::Invalid(e), _) | (_, Slot::Invalid(e)) => {
            Err(PageError(format!("no valid superblock: {e}")))
        }
    }
}
