//! Micro-benchmarks of the shard's hot paths with divan: memtable insert and get, the WAL
//! record codec, crc32c, and the ingress round trip through a real shard.
//!
//! `cargo bench -p lightning_shards --bench hot_paths` (part of `cargo bench`). divan reports
//! the fastest, slowest, median and mean time per iteration.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;

use divan::{black_box, Bencher};
use lightning_shards::internals::{
    encode_write, parse, write_record_bytes, Lookup, Memtable, Parsed,
};
use lightning_shards::{Lsn, ShardConfig, ShardHandle, Ticket, Ts, WriteOp};

fn main() {
    divan::main();
}

fn key(i: u64) -> [u8; 16] {
    (u128::from(i) << 1).to_be_bytes()
}

const KEYS: u64 = 100_000;

fn filled() -> Arc<Memtable> {
    let (m, mut w, _) = Memtable::create();
    let v: Arc<[u8]> = vec![7u8; 100].into();
    for i in 0..KEYS {
        w.insert(&key(i), Ts::new(i + 1), Some(&v));
    }
    m
}

#[divan::bench(sample_count = 20, sample_size = 10_000)]
fn memtable_insert_sequential(b: Bencher) {
    let (_m, mut w, _) = Memtable::create();
    let v: Arc<[u8]> = vec![7u8; 100].into();
    let mut i = 0u64;
    b.bench_local(|| {
        i += 1;
        w.insert(&key(i), Ts::new(i), Some(&v))
    });
}

#[divan::bench(sample_count = 20, sample_size = 10_000)]
fn memtable_insert_random(b: Bencher) {
    let (_m, mut w, _) = Memtable::create();
    let v: Arc<[u8]> = vec![7u8; 100].into();
    let mut i = 0u64;
    b.bench_local(|| {
        i += 1;
        w.insert(&key(i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 20), Ts::new(i), Some(&v))
    });
}

#[divan::bench(sample_count = 20, sample_size = 10_000)]
fn memtable_get_hit(b: Bencher) {
    let m = filled();
    let mut i = 0u64;
    b.bench_local(|| {
        i = (i + 7919) % KEYS;
        matches!(m.get(black_box(&key(i)), Ts::MAX), Lookup::Found(_))
    });
}

#[divan::bench(sample_count = 20, sample_size = 10_000)]
fn memtable_get_miss(b: Bencher) {
    let m = filled();
    let mut i = 0u64;
    b.bench_local(|| {
        i = (i + 7919) % KEYS;
        let k = ((u128::from(i) << 1) | 1).to_be_bytes();
        matches!(m.get(black_box(&k), Ts::MAX), Lookup::Missing { .. })
    });
}

fn ops() -> Vec<WriteOp> {
    vec![WriteOp::Put { key: key(42).to_vec(), value: vec![9u8; 100].into() }]
}

#[divan::bench]
fn wal_record_encode(b: Bencher) {
    let ops = ops();
    let mut out = Vec::with_capacity(256);
    b.bench_local(|| {
        out.clear();
        encode_write(&mut out, black_box(Lsn::new(7)), Ts::new(7), 1, &ops);
        out.len()
    });
}

#[divan::bench]
fn wal_record_parse_and_verify(b: Bencher) {
    let mut rec = Vec::new();
    encode_write(&mut rec, Lsn::new(7), Ts::new(7), 1, &ops());
    assert_eq!(rec.len(), write_record_bytes(&ops()));
    b.bench_local(|| matches!(parse(black_box(&rec), 0), Parsed::Record(_)));
}

#[divan::bench(args = [128, 4096, 65536])]
fn crc32c(b: Bencher, len: usize) {
    let data = vec![0xa5u8; len];
    b.counter(divan::counter::BytesCount::new(len))
        .bench_local(|| crc32c::crc32c(black_box(&data)));
}

#[divan::bench(sample_count = 20, sample_size = 2_000)]
fn ingress_round_trip(b: Bencher) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ShardConfig {
        register_buffers: false,
        wal_segment_bytes: 1 << 20,
        ..ShardConfig::new(0, dir.path().join("shard-000"))
    };
    let shard = ShardHandle::start(cfg).unwrap();
    b.bench_local(|| {
        let mut ticket = Ticket::new(1);
        shard.submit_sync(&mut ticket);
        ticket.wait().unwrap();
    });
    shard.shutdown().unwrap();
}
