//! One thread putting keys as fast as it can, for instruction counts per put under callgrind
//! (ADR 0003):
//!
//! ```sh
//! cargo build --release --example put_loop
//! valgrind --tool=callgrind --callgrind-out-file=put.cg target/release/examples/put_loop \
//!     200000 random
//! callgrind_annotate put.cg | head
//! ```
//!
//! Arguments: the number of puts (default 200 000) and `seq` or `random` key order (default
//! `seq`). Keys are 16 bytes, values 100; the database is a fresh one in a temporary directory
//! with the default configuration (`WalSyncMode::Normal`). Prints puts per second, which under
//! callgrind mean nothing: compare the instruction counts of `Database::put` instead.

use std::time::Instant;

use lightning_db::{Database, LightningDbConfig};

fn main() -> lightning_db::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let random = args.next().is_some_and(|a| a == "random");
    let dir = std::env::temp_dir().join(format!("put_loop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let db = Database::open(&dir, LightningDbConfig::default())?;
    let value = [7u8; 100];
    let started = Instant::now();
    for i in 0..n {
        let k = if random { i.wrapping_mul(0x9e37_79b9_7f4a_7c15) } else { i };
        db.put((u128::from(k) << 1).to_be_bytes(), value)?;
    }
    let took = started.elapsed();
    println!(
        "{n} {} puts in {:.3} s: {:.0} puts/s",
        if random { "random" } else { "sequential" },
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    db.close()?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
