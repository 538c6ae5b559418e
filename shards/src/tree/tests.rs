//! The tree against a model, across reopens, crashes and power losses at every disk operation
//! of a merge, torn and damaged superblocks and pages, and random and mutated bytes for every
//! decoder.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::PathBuf;

use super::page::{self, ExtentRef, Kind, Leaf, Value, PAGE_HEADER_BYTES};
use super::superblock::{Slot, Superblock, SUPERBLOCK_BYTES};
use super::*;
use crate::io::sim::{SimDisk, SimRng, SimStorage};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

fn dir() -> PathBuf {
    PathBuf::from("/db/shard-000")
}

fn options(compress: bool) -> TreeOptions {
    TreeOptions { page_size: 4096, compress, cache_bytes: 1 << 20 }
}

fn open(disk: &SimDisk, compress: bool) -> Result<(TreeWriter<SimStorage>, SimStorage)> {
    let mut io = disk.storage();
    io.create_dir_all(&dir()).unwrap();
    let (writer, _) = TreeWriter::open(&mut io, &dir(), 0, options(compress))?;
    Ok((writer, io))
}

fn key(i: u64) -> Vec<u8> {
    format!("key-{:08}", i.wrapping_mul(2_654_435_761) % 100_000_000).into_bytes()
}

/// A value of a length drawn so that some overflow (over a quarter page) and most do not.
fn value(rng: &mut SimRng, i: u64) -> Vec<u8> {
    let len = match rng.below(20) {
        0 => rng.between(1100, 20_000),
        1 => 0,
        _ => rng.between(1, 200),
    } as usize;
    let mut v = format!("v{i}-").into_bytes();
    v.resize(len.max(v.len()), (i % 251) as u8);
    v
}

/// Random updates over `keys` keys: puts and deletes, sorted, applied to `model`.
fn updates(rng: &mut SimRng, model: &mut Model, count: usize, keys: u64) -> Vec<Update> {
    let mut batch: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
    for _ in 0..count {
        let i = rng.below(keys);
        let update = if rng.chance(0.2) { None } else { Some(value(rng, i)) };
        batch.insert(key(i), update);
    }
    for (k, v) in &batch {
        match v {
            Some(v) => model.insert(k.clone(), v.clone()),
            None => model.remove(k),
        };
    }
    batch.into_iter().collect()
}

fn scan_all(root: &Root, direction: Direction, chunk: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let fresh = scan_chunks(root, direction, chunk, false);
    let kept = scan_chunks(root, direction, chunk, true);
    assert!(fresh == kept, "a cursor kept between chunks changed a {direction:?} scan");
    kept
}

/// Every entry, `chunk` at a time; each chunk descends from the root unless `keep_cursor`.
fn scan_chunks(
    root: &Root,
    direction: Direction,
    chunk: usize,
    keep_cursor: bool,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut resume: Option<Vec<u8>> = None;
    let mut cursor = TreeCursor::default();
    loop {
        let b = resume.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let (lo, hi) = match direction {
            Direction::Forward => (b, Bound::Unbounded),
            Direction::Reverse => (Bound::Unbounded, b),
        };
        if !keep_cursor {
            cursor = TreeCursor::default();
        }
        let c = root.chunk(lo, hi, direction, chunk, &mut cursor).unwrap();
        out.extend(c.entries.into_iter().map(|(k, v)| (k.as_slice().to_vec(), v.into_vec())));
        match c.resume_after {
            Some(r) => resume = Some(r),
            None => return out,
        }
    }
}

fn check(root: &Root, model: &Model) {
    let fwd = scan_all(root, Direction::Forward, 7);
    let expect: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(fwd.len(), expect.len(), "forward scan length");
    assert!(fwd == expect, "forward scan differs from the model");
    let mut rev = scan_all(root, Direction::Reverse, 5);
    rev.reverse();
    assert!(rev == expect, "reverse scan differs from the model");
    for (k, v) in model.iter().step_by(7) {
        assert_eq!(root.get(k).unwrap().as_ref(), Some(v));
    }
    assert_eq!(root.get(b"absent").unwrap(), None);
    check_get_many(root, model);
    assert_eq!(root.superblock().entries, model.len() as u64);
    root.verify().unwrap();
}

/// `get_many` of every third key of the model, keys it lacks and a repeated key, out of
/// order, answers what the model holds.
fn check_get_many(root: &Root, model: &Model) {
    let mut keys: Vec<Vec<u8>> = model.keys().step_by(3).cloned().collect();
    keys.push(b"absent".to_vec());
    keys.push(b"key-".to_vec());
    keys.push(b"\xff\xff".to_vec());
    if let Some(first) = model.keys().next() {
        keys.push(first.clone());
    }
    keys.reverse();
    let asked: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    let got = root.get_many(&asked).unwrap();
    assert_eq!(got.len(), keys.len());
    for (k, v) in keys.iter().zip(got) {
        assert_eq!(v.as_ref(), model.get(k), "get_many of {}", String::from_utf8_lossy(k));
    }
}

#[test]
fn get_many_with_a_cache_smaller_than_its_misses() {
    let disk = SimDisk::new(3);
    let mut io = disk.storage();
    io.create_dir_all(&dir()).unwrap();
    let tiny = TreeOptions { cache_bytes: 4096, ..options(false) };
    let (mut tree, _) = TreeWriter::open(&mut io, &dir(), 0, tiny).unwrap();
    let mut rng = SimRng::new(11);
    let mut model = Model::new();
    for round in 0..4u64 {
        let batch = updates(&mut rng, &mut model, 2000, 5000);
        tree.merge(&mut io, &batch, round + 2, round).unwrap();
    }
    assert!(tree.root().superblock().root.is_some_and(|(_, h)| h >= 2), "a tree of height 1");
    check_get_many(&tree.root(), &model);
    // Damaged leaves are reported by `get_many` as by `get` (every leaf, so at least one is
    // read from the file rather than found in the cache).
    let root = tree.root();
    let path = dir().join(TREE_FILE);
    let bytes = disk.read(&path).unwrap();
    for at in root.verify().unwrap() {
        let offset = at.page as usize * 4096;
        if page::header(&bytes[offset..]).unwrap().kind == Kind::Leaf {
            disk.damage(&path, offset + PAGE_HEADER_BYTES + 3, 0x10).unwrap();
        }
    }
    let keys: Vec<&[u8]> = model.keys().map(Vec::as_slice).collect();
    match root.get_many(&keys) {
        Err(Error::Corruption { .. }) => {}
        other => panic!("a flipped byte in a leaf gave {:?}", other.map(|v| v.len())),
    }
}

#[test]
fn merges_match_a_model_with_and_without_compression() {
    for compress in [false, true] {
        let disk = SimDisk::new(1);
        let (mut tree, mut io) = open(&disk, compress).unwrap();
        let mut rng = SimRng::new(7);
        let mut model = Model::new();
        for round in 0..12u64 {
            let batch = updates(&mut rng, &mut model, 400, 3000);
            let root = tree.merge(&mut io, &batch, round + 2, round * 10).unwrap();
            check(&root, &model);
        }
        assert!(tree.root().superblock().root.is_some_and(|(_, h)| h >= 2), "a tree of height 1");
        // Reopen: the same tree from the newest superblock.
        drop(tree);
        let (tree, _) = open(&disk, compress).unwrap();
        check(&tree.root(), &model);
        assert_eq!(tree.root().superblock().checkpoint_lsn, 13);
    }
}

#[test]
fn bounded_chunks_in_both_directions() {
    let disk = SimDisk::new(2);
    let (mut tree, mut io) = open(&disk, false).unwrap();
    let batch: Vec<Update> =
        (0..2000u32).map(|i| ((i * 2).to_be_bytes().to_vec(), Some(vec![1; 50]))).collect();
    let root = tree.merge(&mut io, &batch, 2, 1).unwrap();
    let k = |i: u32| i.to_be_bytes().to_vec();
    let keys = |c: TreeChunk| {
        c.entries.into_iter().map(|(k, _)| k.as_slice().to_vec()).collect::<Vec<_>>()
    };
    let c = root
        .chunk(
            Bound::Included(&k(101)),
            Bound::Excluded(&k(110)),
            Direction::Forward,
            100,
            &mut TreeCursor::default(),
        )
        .unwrap();
    assert_eq!(keys(c), vec![k(102), k(104), k(106), k(108)]);
    let c = root
        .chunk(
            Bound::Excluded(&k(100)),
            Bound::Included(&k(110)),
            Direction::Reverse,
            2,
            &mut TreeCursor::default(),
        )
        .unwrap();
    assert_eq!(c.resume_after, Some(k(108)));
    assert_eq!(keys(c), vec![k(110), k(108)]);
    let c = root
        .chunk(
            Bound::Included(&k(3990)),
            Bound::Unbounded,
            Direction::Forward,
            9,
            &mut TreeCursor::default(),
        )
        .unwrap();
    assert_eq!((keys(c), None), (vec![k(3990), k(3992), k(3994), k(3996), k(3998)], None::<u8>));
}

#[test]
fn deleting_everything_empties_the_tree_and_rewriting_reuses_space() {
    let disk = SimDisk::new(3);
    let (mut tree, mut io) = open(&disk, false).unwrap();
    let keys: Vec<Vec<u8>> =
        (0..3000u64).map(key).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    let mut ends = Vec::new();
    for round in 0..30u64 {
        let batch: Vec<Update> =
            keys.iter().map(|k| (k.clone(), Some(vec![round as u8; 100]))).collect();
        tree.merge(&mut io, &batch, round + 2, round).unwrap();
        ends.push(tree.end_page());
    }
    // Every round rewrites every page: the file settles at a few rounds' worth (two
    // generations wait before their pages are reused), not thirty.
    let one_round = ends[0];
    assert!(*ends.last().unwrap() <= 4 * one_round, "the file grew without bound: {ends:?}");
    let deletes: Vec<Update> = keys.iter().map(|k| (k.clone(), None)).collect();
    let root = tree.merge(&mut io, &deletes, 40, 40).unwrap();
    assert_eq!(root.superblock().root, None);
    assert_eq!(root.superblock().entries, 0);
    check(&root, &Model::new());
}

#[test]
fn a_held_root_keeps_its_pages_until_dropped() {
    let disk = SimDisk::new(4);
    let (mut tree, mut io) = open(&disk, false).unwrap();
    let put = |round: u8| -> Vec<Update> {
        (0..500u64)
            .map(|i| (key(i), Some(vec![round; 120])))
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .collect()
    };
    let held = tree.merge(&mut io, &put(1), 2, 1).unwrap();
    let mut model = Model::new();
    for (k, v) in put(1) {
        model.insert(k, v.unwrap());
    }
    for round in 2..10 {
        tree.merge(&mut io, &put(round), 2 + u64::from(round), u64::from(round)).unwrap();
        // The old root still reads its own values, whole and checked.
        check(&held, &model);
    }
    let before = tree.end_page();
    drop(held);
    for round in 10..14 {
        tree.merge(&mut io, &put(round), 2 + u64::from(round), u64::from(round)).unwrap();
    }
    assert!(tree.end_page() <= before, "pages freed by dropping the root were not reused");
}

/// One merge interrupted after `ops` disk operations, then a crash or a power loss: reopening
/// finds the tree before the merge or after it, whole.
fn interrupted_merge(ops: u64, power_loss: bool, seed: u64) -> bool {
    let disk = SimDisk::new(seed);
    let (mut tree, mut io) = open(&disk, true).unwrap();
    let mut rng = SimRng::new(seed);
    let mut model = Model::new();
    for round in 0..3 {
        let batch = updates(&mut rng, &mut model, 300, 1500);
        tree.merge(&mut io, &batch, round + 2, round).unwrap();
    }
    let before = model.clone();
    let batch = updates(&mut rng, &mut model, 300, 1500);
    disk.freeze_after(ops);
    let result = tree.merge(&mut io, &batch, 10, 10);
    let frozen = disk.frozen();
    assert!(result.is_ok(), "a dead process's writes vanish without an error");
    drop(tree);
    if power_loss {
        disk.power_loss();
    } else {
        disk.crash();
    }
    let (tree, _) = open(&disk, true).unwrap_or_else(|e| panic!("ops {ops}: reopen failed: {e}"));
    let root = tree.root();
    let lsn = root.superblock().checkpoint_lsn;
    match lsn {
        10 => check(&root, &model),
        4 => check(&root, &before),
        other => panic!("ops {ops}: checkpoint {other}"),
    }
    assert!(frozen || lsn == 10, "a merge that finished was lost");
    frozen
}

#[test]
fn a_merge_interrupted_anywhere_leaves_one_whole_tree() {
    for power_loss in [false, true] {
        let mut ops = 0;
        while interrupted_merge(ops, power_loss, 11 + ops) {
            ops += 1;
        }
        assert!(ops > 4, "the merge made only {ops} disk operations");
    }
}

#[test]
fn superblock_slots_torn_or_damaged() {
    let disk = SimDisk::new(5);
    let (mut tree, mut io) = open(&disk, false).unwrap();
    let mut model = Model::new();
    let mut rng = SimRng::new(5);
    for round in 0..4 {
        let batch = updates(&mut rng, &mut model, 200, 1000);
        tree.merge(&mut io, &batch, round + 2, round).unwrap();
    }
    drop(tree);
    let path = dir().join(TREE_FILE);
    // Generation 5 is in slot 1, generation 4 in slot 0. Damage slot 1: the tree falls back to
    // generation 4 and says so.
    disk.damage(&path, 4096 + 100, 0xff).unwrap();
    let mut io = disk.storage();
    let (tree, opened) = TreeWriter::open(&mut io, &dir(), 0, options(false)).unwrap();
    assert_eq!(opened.superblock.generation, 4);
    assert!(opened.other_slot_invalid.is_some());
    tree.root().verify().unwrap();
    drop(tree);
    // Both damaged: a clear error, never an empty tree.
    disk.damage(&path, 200, 0x01).unwrap();
    match TreeWriter::open(&mut disk.storage(), &dir(), 0, options(false)) {
        Err(Error::Corruption { file, offset, .. }) => assert_eq!((file, offset), (path, 0)),
        Err(other) => panic!("expected Corruption, got {other:?}"),
        Ok(_) => panic!("two damaged superblocks opened"),
    }
}

#[test]
fn a_flipped_byte_in_any_page_is_reported_where_it_is() {
    let disk = SimDisk::new(6);
    let (mut tree, mut io) = open(&disk, false).unwrap();
    let mut rng = SimRng::new(6);
    let mut model = Model::new();
    for round in 0..3 {
        let batch = updates(&mut rng, &mut model, 600, 2000);
        tree.merge(&mut io, &batch, round + 2, round).unwrap();
    }
    let root = tree.root();
    let reached = root.verify().unwrap();
    let path = dir().join(TREE_FILE);
    let mut kinds_hit = std::collections::BTreeSet::new();
    for at in reached {
        let bytes = disk.read(&path).unwrap();
        let offset = at.page as usize * 4096;
        let h = page::header(&bytes[offset..]).unwrap();
        if !kinds_hit.insert(h.kind as u8) && h.kind != Kind::Overflow {
            continue;
        }
        // A byte in the header, one in the body.
        for within in [9, PAGE_HEADER_BYTES + 3] {
            disk.damage(&path, offset + within, 0x10).unwrap();
            match root.verify() {
                Err(Error::Corruption { file, offset: o, .. }) => {
                    assert_eq!((file, o), (path.clone(), offset as u64), "{:?}", h.kind);
                }
                other => panic!("a flipped byte in a {:?} page: {other:?}", h.kind),
            }
            disk.damage(&path, offset + within, 0x10).unwrap();
            root.verify().unwrap();
        }
    }
    assert!(kinds_hit.len() >= 3, "leaf, branch and overflow pages: {kinds_hit:?}");
}

#[test]
fn decoders_never_panic_on_random_or_mutated_bytes() {
    let mut rng = SimRng::new(99);
    // Valid extents of every kind, to mutate.
    let mut samples: Vec<(Vec<u8>, ExtentRef)> = Vec::new();
    let mut body = Vec::new();
    let mut out = Vec::new();
    let leaf = Leaf {
        entries: (0..40u8)
            .map(|i| {
                let v = if i % 9 == 0 {
                    Value::Overflow { at: ExtentRef { page: 9, pages: 2, crc: 7 }, len: 5000 }
                } else {
                    Value::Inline(vec![i; usize::from(i)])
                };
                (vec![b'k', i], v)
            })
            .collect(),
    };
    page::encode_leaf(&mut body, &leaf);
    for compress in [false, true] {
        let r = page::frame(
            &mut out,
            page::Frame { kind: Kind::Leaf, level: 0, page: 5, generation: 1 },
            &body,
            compress,
            4096,
        );
        samples.push((out.clone(), r));
    }
    let branch = Branch {
        separators: [b"b", b"c"].into_iter().collect(),
        children: (0..3).map(|i| ExtentRef { page: 10 + i, pages: 1, crc: 3 }).collect(),
    };
    page::encode_branch(&mut body, &branch);
    let r = page::frame(
        &mut out,
        page::Frame { kind: Kind::Branch, level: 1, page: 5, generation: 1 },
        &body,
        false,
        4096,
    );
    samples.push((out.clone(), r));
    page::encode_free_list(&mut body, &[(3, 0), (4, 2), (8, 2)]);
    let r = page::frame(
        &mut out,
        page::Frame { kind: Kind::FreeList, level: 0, page: 5, generation: 1 },
        &body,
        false,
        4096,
    );
    samples.push((out.clone(), r));
    let r = page::frame(
        &mut out,
        page::Frame { kind: Kind::Overflow, level: 0, page: 5, generation: 1 },
        &vec![3u8; 6000],
        false,
        4096,
    );
    samples.push((out.clone(), r));
    for (bytes, at) in &samples {
        assert!(page::decode(bytes, *at, 4096).is_ok());
    }
    let sb = Superblock::empty(0, 4096).encode();
    assert!(matches!(Superblock::decode(&sb), Slot::Valid(_)));
    for round in 0..20_000u64 {
        let (mut bytes, mut at) = samples[(round % samples.len() as u64) as usize].clone();
        let mut sbytes = sb.to_vec();
        match rng.below(4) {
            0 => {
                // Random bytes.
                let n = rng.below(9000) as usize;
                bytes = (0..n).map(|_| rng.next_u64() as u8).collect();
                sbytes = (0..rng.below(5000)).map(|_| rng.next_u64() as u8).collect();
            }
            1 => {
                // Flip bytes, then fix the checksums so the body parser sees the damage.
                for _ in 0..=rng.below(6) {
                    let i = rng.below(bytes.len() as u64) as usize;
                    bytes[i] ^= 1 << rng.below(8);
                    let j = rng.below(sbytes.len() as u64) as usize;
                    sbytes[j] ^= 1 << rng.below(8);
                }
                if bytes.len() >= PAGE_HEADER_BYTES {
                    let body_len = u32::from_le_bytes(bytes[24..28].try_into().unwrap()) as usize;
                    if PAGE_HEADER_BYTES + body_len <= bytes.len() {
                        at = page::relocate(&mut bytes, at.page, 4096);
                        at.pages = page::pages_for(body_len, 4096) as u32;
                    }
                }
                let crc = crc32c::crc32c(&sbytes[..SUPERBLOCK_BYTES - 4]);
                sbytes[SUPERBLOCK_BYTES - 4..].copy_from_slice(&crc.to_le_bytes());
            }
            2 => {
                // Truncate.
                bytes.truncate(rng.below(bytes.len() as u64 + 1) as usize);
                sbytes.truncate(rng.below(SUPERBLOCK_BYTES as u64 + 1) as usize);
            }
            _ => {
                // A lying count field (after the header), checksum fixed.
                if bytes.len() > PAGE_HEADER_BYTES + 4 {
                    let v = rng.next_u64() as u32;
                    bytes[PAGE_HEADER_BYTES..PAGE_HEADER_BYTES + 4]
                        .copy_from_slice(&v.to_le_bytes());
                    at = page::relocate(&mut bytes, at.page, 4096);
                }
            }
        }
        let _ = page::decode(&bytes, at, 4096);
        let _ = page::header(&bytes);
        let _ = Superblock::decode(&sbytes);
    }
}

#[test]
fn a_newer_format_is_refused_with_a_clear_error() {
    let mut b = Superblock::empty(0, 4096).encode();
    b[8] = 9;
    let crc = crc32c::crc32c(&b[..SUPERBLOCK_BYTES - 4]);
    b[SUPERBLOCK_BYTES - 4..].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(Superblock::decode(&b), Slot::OtherVersion(9));
    let mut body = Vec::new();
    page::encode_leaf(&mut body, &Leaf::default());
    let mut out = Vec::new();
    let r = page::frame(
        &mut out,
        page::Frame { kind: Kind::Leaf, level: 0, page: 2, generation: 1 },
        &body,
        false,
        4096,
    );
    out[7] = 2;
    let e = page::decode(&out, r, 4096).unwrap_err();
    assert!(e.0.contains("version 2"), "{e}");
}

#[test]
fn extents_are_durable_before_the_superblock_is_written() {
    // At every instant of a merge, what is not yet durable is either extents no superblock
    // reaches yet, or the new superblock alone: never the superblock with extents behind it.
    let path = dir().join(TREE_FILE);
    let mut saw_superblock = false;
    for ops in 0.. {
        let disk = SimDisk::new(21);
        let (mut tree, mut io) = open(&disk, false).unwrap();
        let mut rng = SimRng::new(21);
        let mut model = Model::new();
        for round in 0..2 {
            tree.merge(&mut io, &updates(&mut rng, &mut model, 300, 1500), round + 2, round)
                .unwrap();
        }
        let batch = updates(&mut rng, &mut model, 300, 1500);
        disk.freeze_after(ops);
        tree.merge(&mut io, &batch, 10, 10).unwrap();
        if !disk.frozen() {
            break;
        }
        let unsynced = disk.unsynced(&path).unwrap();
        let in_slot =
            |&(offset, len): &(usize, usize)| offset < 2 * 4096 && offset + len <= 2 * 4096;
        if unsynced.iter().any(in_slot) {
            saw_superblock = true;
            assert!(
                unsynced.iter().all(in_slot),
                "ops {ops}: superblock written before extents were durable: {unsynced:?}"
            );
        }
    }
    assert!(saw_superblock);
}

#[test]
fn the_older_superblock_stays_a_whole_tree_while_the_next_merge_writes() {
    // Generations 4 (slot 0) and 5 (slot 1) on disk; generation 6 is half written when the
    // process dies, and then slot 1 turns out damaged: generation 4 must still be whole, so
    // pages generation 5 freed are not written over until generation 7.
    let disk = SimDisk::new(31);
    let (mut tree, mut io) = open(&disk, false).unwrap();
    let mut rng = SimRng::new(31);
    let mut model = Model::new();
    let mut models = Vec::new();
    for round in 0..4 {
        tree.merge(&mut io, &updates(&mut rng, &mut model, 400, 1500), round + 2, round).unwrap();
        models.push(model.clone());
    }
    assert_eq!(tree.root().superblock().generation, 5);
    disk.freeze_after(2);
    tree.merge(&mut io, &updates(&mut rng, &mut model, 400, 1500), 10, 10).unwrap();
    assert!(disk.frozen());
    drop(tree);
    disk.crash();
    let path = dir().join(TREE_FILE);
    disk.damage(&path, 4096 + 7, 0x40).unwrap();
    let (tree, _) = open(&disk, false).unwrap();
    assert_eq!(tree.root().superblock().generation, 4);
    check(&tree.root(), &models[2]);
}

#[test]
fn compaction_gives_the_free_tail_back_and_keeps_every_entry() {
    let disk = SimDisk::new(41);
    let (mut tree, mut io) = open(&disk, false).unwrap();
    let mut rng = SimRng::new(41);
    let mut model = Model::new();
    for round in 0..6 {
        tree.merge(&mut io, &updates(&mut rng, &mut model, 500, 3000), round + 2, round).unwrap();
    }
    // Delete nine keys in ten: most of the file is free, spread through it.
    let deletes: Vec<Update> = model
        .keys()
        .enumerate()
        .filter(|(i, _)| i % 10 != 0)
        .map(|(_, k)| (k.clone(), None))
        .collect();
    for (k, _) in &deletes {
        model.remove(k);
    }
    tree.merge(&mut io, &deletes, 20, 20).unwrap();
    let path = dir().join(TREE_FILE);
    let before = disk.read(&path).unwrap().len();
    let mut installed = 0;
    let given = tree.compact(&mut io, |_| installed += 1).unwrap();
    let after = disk.read(&path).unwrap().len();
    assert!(given > 0 && after < before / 2, "{before} -> {after} bytes ({given} given back)");
    assert_eq!(after as u64, tree.end_page() * 4096);
    assert!(installed >= 4);
    check(&tree.root(), &model);
    assert_eq!(tree.root().superblock().checkpoint_lsn, 20, "compaction keeps the checkpoint");
    drop(tree);
    let (tree, _) = open(&disk, false).unwrap();
    check(&tree.root(), &model);
}

#[test]
fn a_compaction_interrupted_anywhere_leaves_a_whole_tree() {
    for power_loss in [false, true] {
        let mut ops = 0;
        loop {
            let disk = SimDisk::new(50 + ops);
            let (mut tree, mut io) = open(&disk, false).unwrap();
            let mut rng = SimRng::new(50);
            let mut model = Model::new();
            for round in 0..4 {
                let batch = updates(&mut rng, &mut model, 400, 1500);
                tree.merge(&mut io, &batch, round + 2, round).unwrap();
            }
            disk.freeze_after(ops);
            // A dead process's writes vanish: its later reads of them may fail, as they would.
            let result = tree.compact(&mut io, |_| {});
            let frozen = disk.frozen();
            assert!(frozen || result.is_ok(), "ops {ops}: {result:?}");
            drop(tree);
            if power_loss {
                disk.power_loss();
            } else {
                disk.crash();
            }
            let (tree, _) = open(&disk, false).unwrap_or_else(|e| panic!("ops {ops}: {e}"));
            check(&tree.root(), &model);
            if !frozen {
                break;
            }
            ops += 1;
        }
        assert!(ops > 8, "the compaction made only {ops} disk operations");
    }
}

/// A tree of 3 000 keys with 10-byte values (leaves of ~100 entries), merged in one step on
/// a fresh simulated disk: the disk, the writer (its root is the tree) and the keys in order.
fn short_value_tree(seed: u64) -> (SimDisk, TreeWriter<SimStorage>, Vec<Vec<u8>>) {
    let disk = SimDisk::new(seed);
    let (mut tree, mut io) = open(&disk, false).unwrap();
    let mut batch: Vec<Update> =
        (0..3000u64).map(|i| (key(i), Some(b"0123456789".to_vec()))).collect();
    batch.sort();
    tree.merge(&mut io, &batch, 2, 1).unwrap();
    let keys = batch.into_iter().map(|(k, _)| k).collect();
    (disk, tree, keys)
}

/// Every leaf `root` reaches, as read from the file, in key order (with its first key).
fn leaves_in_key_order(disk: &SimDisk, root: &Root) -> Vec<(Vec<u8>, ExtentRef)> {
    let bytes = disk.read(&dir().join(TREE_FILE)).unwrap();
    let mut leaves = Vec::new();
    for at in root.verify().unwrap() {
        let span = &bytes[at.page as usize * 4096..][..at.pages as usize * 4096];
        if let Node::Leaf(leaf) = page::decode(span, at, 4096).unwrap() {
            leaves.push((leaf.key(0).to_vec(), at));
        }
    }
    leaves.sort_by(|a, b| a.0.cmp(&b.0));
    leaves
}

#[test]
fn read_ahead_of_a_scan_leaves_damage_past_its_range_to_whoever_reaches_it() {
    // Short values: leaves of ~100 entries, so a chunk of 50 stays in the first one and
    // still wants a second leaf read ahead (the first guess is 32 entries a leaf).
    let (disk, tree, _) = short_value_tree(12);
    let root = tree.root();
    // Damage every leaf but the first in key order.
    let path = dir().join(TREE_FILE);
    let leaves = leaves_in_key_order(&disk, &root);
    assert!(leaves.len() > 4, "{} leaves", leaves.len());
    for (_, at) in &leaves[1..] {
        disk.damage(&path, at.page as usize * 4096 + PAGE_HEADER_BYTES + 3, 0x10).unwrap();
    }
    // A chunk inside the first leaf reads the next leaves ahead, finds them damaged, and is
    // still answered; a chunk that reaches the second leaf reports it.
    assert!(leaves.len() < 60, "leaves of ~100 entries: {} leaves", leaves.len());
    let c = root
        .chunk(
            Bound::Unbounded,
            Bound::Unbounded,
            Direction::Forward,
            50,
            &mut TreeCursor::default(),
        )
        .unwrap();
    assert_eq!(c.entries.len(), 50);
    match root.chunk(
        Bound::Unbounded,
        Bound::Unbounded,
        Direction::Forward,
        100_000,
        &mut TreeCursor::default(),
    ) {
        Err(Error::Corruption { offset, .. }) => assert_eq!(offset, leaves[1].1.page * 4096),
        other => panic!("a scan through a damaged leaf gave {:?}", other.map(|c| c.entries.len())),
    }
}

/// Counts the reads a root makes of its file.
struct CountingReader {
    inner: Arc<dyn crate::io::ReadAt>,
    reads: std::sync::atomic::AtomicUsize,
}

impl crate::io::ReadAt for CountingReader {
    fn read_at(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.read_at(offset, len)
    }
}

#[test]
fn a_scan_with_no_cache_reads_each_leaf_once() {
    let (_disk, tree, keys) = short_value_tree(13);
    let root = tree.root();
    let extents = root.verify().unwrap().len();
    let counting = Arc::new(CountingReader {
        inner: root.reader.clone().unwrap(),
        reads: std::sync::atomic::AtomicUsize::new(0),
    });
    // The same tree with a cache that keeps nothing.
    let bare = Root {
        sb: root.sb,
        file: root.file.clone(),
        reader: Some(counting.clone()),
        page_size: root.page_size,
        cache: PageCache::new(0),
    };
    for direction in [Direction::Forward, Direction::Reverse] {
        counting.reads.store(0, std::sync::atomic::Ordering::Relaxed);
        let all = bare
            .chunk(
                Bound::Unbounded,
                Bound::Unbounded,
                direction,
                100_000,
                &mut TreeCursor::default(),
            )
            .unwrap();
        assert_eq!(all.entries.len(), 3000);
        let reads = counting.reads.load(std::sync::atomic::Ordering::Relaxed);
        assert!(reads <= extents + 2, "{direction:?}: {reads} reads for {extents} extents");
    }
    // A scan whose far bound is a few keys away reads no leaf past it ahead.
    let height = root.superblock().root.map_or(0, |(_, h)| h as usize);
    for (direction, lo, hi) in [
        (Direction::Forward, Bound::Unbounded, Bound::Excluded(keys[5].as_slice())),
        (Direction::Reverse, Bound::Included(keys[keys.len() - 5].as_slice()), Bound::Unbounded),
    ] {
        counting.reads.store(0, std::sync::atomic::Ordering::Relaxed);
        let c = bare.chunk(lo, hi, direction, 100_000, &mut TreeCursor::default()).unwrap();
        assert_eq!(c.entries.len(), 5);
        let reads = counting.reads.load(std::sync::atomic::Ordering::Relaxed);
        assert!(reads <= height + 1, "{direction:?}: {reads} reads, tree height {height}");
    }
}

#[test]
fn an_edge_path_brings_the_first_or_last_two_leaves_into_the_cache() {
    for direction in [Direction::Forward, Direction::Reverse] {
        let (disk, tree, _) = short_value_tree(14);
        let root = tree.root();
        let leaves = leaves_in_key_order(&disk, &root);
        let n = leaves.len();
        assert!(n > 4);
        assert!(leaves.iter().all(|(_, at)| root.cache.peek(at).is_none()), "merges cache nothing");
        get_many_across(&mut [Descent::edge_path(&root, direction)]).unwrap();
        for (i, (_, at)) in leaves.iter().enumerate() {
            let edge = match direction {
                Direction::Forward => i < 2,
                Direction::Reverse => i >= n - 2,
            };
            assert_eq!(root.cache.peek(at).is_some(), edge, "{direction:?}: leaf {i} of {n}");
        }
    }
}

#[test]
fn a_cursor_serves_only_the_chunk_that_starts_where_it_stopped() {
    let (_disk, tree, keys) = short_value_tree(15);
    let root = tree.root();
    let taken = |c: TreeChunk| c.entries.into_iter().map(|(k, _)| k.as_slice().to_vec()).collect();
    let fresh = |lo: Bound<&[u8]>, hi: Bound<&[u8]>, d: Direction| -> Vec<Vec<u8>> {
        taken(root.chunk(lo, hi, d, 10, &mut TreeCursor::default()).unwrap())
    };
    // The first chunk stops at keys[2009]; each case starts somewhere else.
    let stop = keys[2009].as_slice();
    let cases = [
        // An earlier start key, the same direction (a cursor used there would skip leaves).
        (Direction::Forward, Bound::Excluded(keys[5].as_slice()), Bound::Unbounded),
        // The key it stopped at, included rather than excluded.
        (Direction::Forward, Bound::Included(stop), Bound::Unbounded),
        // The other direction.
        (Direction::Reverse, Bound::Unbounded, Bound::Excluded(stop)),
    ];
    for (direction, lo, hi) in cases {
        let mut cursor = TreeCursor::default();
        let from = Bound::Excluded(keys[1999].as_slice());
        let first =
            root.chunk(from, Bound::Unbounded, Direction::Forward, 10, &mut cursor).unwrap();
        assert_eq!(first.resume_after.as_deref(), Some(stop));
        let got = taken(root.chunk(lo, hi, direction, 10, &mut cursor).unwrap());
        assert_eq!(got, fresh(lo, hi, direction), "{direction:?} {lo:?}");
        assert!(!got.is_empty());
    }
}

#[test]
fn a_merge_that_must_rewrite_a_damaged_leaf_reports_it_and_keeps_the_old_tree() {
    let (disk, mut tree, keys) = short_value_tree(16);
    let root = tree.root();
    let path = dir().join(TREE_FILE);
    let leaves = leaves_in_key_order(&disk, &root);
    assert!(leaves.len() > 6, "{} leaves", leaves.len());
    let damaged = leaves[3].1;
    disk.damage(&path, damaged.page as usize * 4096 + PAGE_HEADER_BYTES + 3, 0x10).unwrap();
    drop(root);
    // One update in every leaf: the leaves a merge rewrites are read together, the damaged
    // one among them.
    let mut batch: Vec<Update> =
        leaves.iter().map(|(first, _)| (first.clone(), Some(b"new".to_vec()))).collect();
    batch.sort();
    let before = *tree.root().superblock();
    let mut io = disk.storage();
    match tree.merge(&mut io, &batch, 3, 2) {
        Err(Error::Corruption { offset, .. }) => assert_eq!(offset, damaged.page * 4096),
        other => panic!("a merge through a damaged leaf gave {other:?}"),
    }
    assert_eq!(*tree.root().superblock(), before, "the published tree is the one before");
    // The undamaged leaves still read back.
    assert_eq!(tree.root().get(&keys[0]).unwrap(), Some(b"0123456789".to_vec()));
}
