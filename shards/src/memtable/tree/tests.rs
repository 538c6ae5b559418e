//! The tree against a `BTreeSet` model, with nodes small enough that a few thousand keys build
//! a deep tree, and one writer racing readers.

use super::*;
use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

struct E(Vec<u8>);

impl Keyed for E {
    fn key(&self) -> &[u8] {
        &self.0
    }
}

type Small = Tree<E, 4, 3>;

fn insert<const L: usize, const I: usize>(t: &Tree<E, L, I>, k: &[u8]) -> bool {
    // Safety: each test has one writer.
    let (e, fresh) = unsafe { t.insert(k, || Box::new(E(k.to_vec()))) };
    assert_eq!(e.key(), k);
    fresh
}

/// A small deterministic generator (xorshift).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Keys of 0 to 40 bytes over a small alphabet: many share long prefixes, many are prefixes of
/// others, some are longer than the 16 bytes compared inline.
fn random_key(rng: &mut Rng) -> Vec<u8> {
    let len = (rng.next() % 41) as usize;
    let fill = (rng.next() % 3) as u8;
    (0..len).map(|i| if i < 18 { fill } else { (rng.next() % 3) as u8 }).collect()
}

fn forward<const L: usize, const I: usize>(t: &Tree<E, L, I>, seek: Seek<'_>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut copy = LeafCopy::new();
    t.seek(seek, &mut copy);
    out.extend(copy.entries[copy.pos..].iter().map(|e| e.0.clone()));
    while copy.has_next() {
        t.seek_next(&mut copy);
        out.extend(copy.entries.iter().map(|e| e.0.clone()));
    }
    out
}

fn backward<const L: usize, const I: usize>(t: &Tree<E, L, I>, seek: Seek<'_>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut copy = LeafCopy::new();
    t.seek(seek, &mut copy);
    loop {
        out.extend(copy.entries[..copy.pos].iter().rev().map(|e| e.0.clone()));
        let Some(first) = copy.entries.first().map(|e| e.0.clone()) else { break };
        let mut next = LeafCopy::new();
        t.seek(Seek::Lt(&first), &mut next);
        if next.pos == 0 {
            break;
        }
        copy = next;
    }
    out
}

fn check_against_model<const L: usize, const I: usize>(
    t: &Tree<E, L, I>,
    model: &BTreeSet<Vec<u8>>,
) {
    let all: Vec<Vec<u8>> = model.iter().cloned().collect();
    assert_eq!(forward(t, Seek::First), all);
    assert_eq!(backward(t, Seek::Last), all.iter().rev().cloned().collect::<Vec<_>>());
    assert_eq!(t.len(), model.len() as u64);
    for k in model {
        assert_eq!(t.get(k).map(|e| e.0.as_slice()), Some(k.as_slice()));
    }
}

fn check_seeks<const L: usize, const I: usize>(
    t: &Tree<E, L, I>,
    model: &BTreeSet<Vec<u8>>,
    k: &[u8],
) {
    let ge: Vec<_> =
        model.range::<[u8], _>((Bound::Included(k), Bound::Unbounded)).cloned().collect();
    let gt: Vec<_> =
        model.range::<[u8], _>((Bound::Excluded(k), Bound::Unbounded)).cloned().collect();
    let lt: Vec<_> =
        model.range::<[u8], _>((Bound::Unbounded, Bound::Excluded(k))).rev().cloned().collect();
    let le: Vec<_> =
        model.range::<[u8], _>((Bound::Unbounded, Bound::Included(k))).rev().cloned().collect();
    assert_eq!(forward(t, Seek::Ge(k)), ge, "Ge {k:?}");
    assert_eq!(forward(t, Seek::Gt(k)), gt, "Gt {k:?}");
    assert_eq!(backward(t, Seek::Lt(k)), lt, "Lt {k:?}");
    assert_eq!(backward(t, Seek::Le(k)), le, "Le {k:?}");
    assert_eq!(t.get(k).is_some(), model.contains(k), "get {k:?}");
}

#[test]
fn random_keys_match_a_model() {
    for seed in 1..=20u64 {
        let t = Small::new();
        let mut model = BTreeSet::new();
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        for _ in 0..400 {
            let k = random_key(&mut rng);
            assert_eq!(insert(&t, &k), model.insert(k.clone()), "seed {seed} key {k:?}");
        }
        check_against_model(&t, &model);
        for _ in 0..60 {
            let k = random_key(&mut rng);
            check_seeks(&t, &model, &k);
        }
    }
}

#[test]
fn ascending_and_descending_inserts_build_a_valid_tree() {
    for descending in [false, true] {
        let t = Small::new();
        let mut model = BTreeSet::new();
        for i in 0..3000u32 {
            let i = if descending { 3000 - i } else { i };
            let k = i.to_be_bytes().to_vec();
            insert(&t, &k);
            model.insert(k);
        }
        check_against_model(&t, &model);
        check_seeks(&t, &model, &1500u32.to_be_bytes());
        check_seeks(&t, &model, &[0, 0, 5]);
    }
}

#[test]
fn ascending_inserts_fill_leaves() {
    // The right-edge split keeps full leaves: 64-key leaves over 64 * 100 ascending keys.
    let t: Tree<E, 64, 64> = Tree::new();
    for i in 0..6400u32 {
        insert(&t, &i.to_be_bytes());
    }
    let mut copy = LeafCopy::new();
    t.seek(Seek::First, &mut copy);
    let mut leaves = 1;
    while copy.has_next() {
        t.seek_next(&mut copy);
        leaves += 1;
    }
    assert_eq!(leaves, 100);
}

#[test]
fn an_empty_tree_answers_every_seek() {
    let t = Small::new();
    assert!(t.get(b"x").is_none());
    assert!(t.is_empty());
    assert!(forward(&t, Seek::First).is_empty());
    assert!(backward(&t, Seek::Last).is_empty());
    assert!(forward(&t, Seek::Ge(b"a")).is_empty());
    assert!(backward(&t, Seek::Le(b"a")).is_empty());
}

#[test]
fn readers_racing_one_writer_see_every_key_inserted_before_they_looked() {
    const KEYS: usize = 20_000;
    let t = Arc::new(Small::new());
    // The keys in insertion order; `done` counts those inserted.
    let mut rng = Rng(0x1234_5678);
    let keys: Arc<Vec<Vec<u8>>> = Arc::new({
        let mut set = BTreeSet::new();
        while set.len() < KEYS {
            let mut k = random_key(&mut rng);
            k.extend_from_slice(&rng.next().to_be_bytes()[..2]);
            set.insert(k);
        }
        let mut v: Vec<_> = set.into_iter().collect();
        for i in (1..v.len()).rev() {
            v.swap(i, (rng.next() % (i as u64 + 1)) as usize);
        }
        v
    });
    let done = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (t, keys, done) = (t.clone(), keys.clone(), done.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(r + 99);
                let mut rounds = 0;
                while done.load(Mo::Acquire) < KEYS || rounds < 3 {
                    let known = done.load(Mo::Acquire);
                    for _ in 0..200 {
                        if known == 0 {
                            break;
                        }
                        let k = &keys[(rng.next() % known as u64) as usize];
                        assert!(t.get(k).is_some(), "inserted key {k:?} not found");
                    }
                    let scanned = forward(&t, Seek::First);
                    assert!(scanned.windows(2).all(|w| w[0] < w[1]), "scan out of order");
                    let seen: BTreeSet<_> = scanned.into_iter().collect();
                    assert!(keys[..known].iter().all(|k| seen.contains(k)), "scan missed a key");
                    rounds += 1;
                }
            })
        })
        .collect();
    for (i, k) in keys.iter().enumerate() {
        insert(&t, k);
        done.store(i + 1, Mo::Release);
        if i % 64 == 0 {
            std::thread::yield_now();
        }
    }
    for r in readers {
        r.join().unwrap();
    }
    let model: BTreeSet<_> = keys.iter().cloned().collect();
    check_against_model(&t, &model);
}
