//! Single-threaded memtable insert/get loop, for instruction counts under callgrind:
//! `valgrind --tool=callgrind target/release/examples/memtable_ops 100000`.
#![allow(clippy::unwrap_used)]
use lightning_shards::internals::{Lookup, Memtable};

fn key(i: u64) -> [u8; 16] {
    ((i as u128) << 1).to_be_bytes()
}

fn main() {
    let n: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let m = Memtable::new();
    let v = vec![7u8; 100];
    let t = std::time::Instant::now();
    for i in 0..n {
        m.insert(&key(i), lightning_shards::Ts::new(i + 1), Some(v.as_slice().into()));
    }
    let ins = t.elapsed();
    let t = std::time::Instant::now();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut found = 0;
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if let Lookup::Found(_) = m.get(&key(x % n), lightning_shards::Ts::MAX) {
            found += 1;
        }
    }
    let get = t.elapsed();
    println!(
        "insert {:.0} ns/op, get {:.0} ns/op, found {found}",
        ins.as_nanos() as f64 / n as f64,
        get.as_nanos() as f64 / n as f64
    );
}
