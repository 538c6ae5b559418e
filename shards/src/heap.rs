//! Giving freed heap memory back to the operating system.
//!
//! A memtable is many small allocations made by the writer threads (each in its own malloc
//! arena) and freed together when its flush is published. glibc keeps freed memory in its
//! arenas for reuse, and a long fill leaves much of it there: at 5 M keys the heap was 448 MiB
//! with 190 MiB of memtables, and `malloc_trim` gave back 101 MiB of it
//! (`docs/BENCHMARKS.md`, "Memory"). So each published flush asks for a trim.
//!
//! A trim of a large heap took ~70 ms there, holding each malloc arena's lock while it trims
//! it: it runs on a thread of its own, never on a shard thread, at most one at a time and at
//! most one a second (a request while one runs, or sooner, is dropped: a later flush's trim
//! finds the memory).
//!
//! Shared: process-wide state (one flag, one counter), callable from any thread.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A trim is running.
static TRIMMING: AtomicBool = AtomicBool::new(false);
/// Nanoseconds spent trimming, all trims of the process.
static TRIM_NANOS: AtomicU64 = AtomicU64::new(0);
/// When the last trim started, in milliseconds since `EPOCH`.
static LAST_TRIM_MS: AtomicU64 = AtomicU64::new(0);
/// The shortest time between two trims.
const TRIM_EVERY: Duration = Duration::from_secs(1);

/// A process-wide time origin for `LAST_TRIM_MS`.
fn since_epoch() -> Duration {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed()
}

/// Asks for free heap memory to be given back to the operating system, on a background
/// thread; returns at once.
pub fn give_back_free_memory() {
    let now = u64::try_from(since_epoch().as_millis()).unwrap_or(u64::MAX);
    let last = LAST_TRIM_MS.load(Ordering::Relaxed);
    if last != 0 && now.saturating_sub(last) < TRIM_EVERY.as_millis() as u64 {
        return;
    }
    if TRIMMING.swap(true, Ordering::AcqRel) {
        return;
    }
    LAST_TRIM_MS.store(now.max(1), Ordering::Relaxed);
    let spawned = std::thread::Builder::new().name("lightning-trim".into()).spawn(|| {
        let started = Instant::now();
        trim();
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        TRIM_NANOS.fetch_add(nanos, Ordering::Relaxed);
        TRIMMING.store(false, Ordering::Release);
    });
    if spawned.is_err() {
        TRIMMING.store(false, Ordering::Release);
    }
}

/// Time spent giving free heap memory back, all trims of the process so far.
pub fn trim_time() -> Duration {
    Duration::from_nanos(TRIM_NANOS.load(Ordering::Relaxed))
}

/// Returns whole free pages of every malloc arena to the operating system (glibc's
/// `malloc_trim(0)`); nothing where the allocator is not glibc's.
fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // Safety: malloc_trim only releases memory the allocator holds free; it takes the arenas'
    // own locks and touches no live allocation.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trim_runs_in_the_background_and_is_timed() {
        // Free memory to give back: many small blocks, freed.
        let blocks: Vec<Vec<u8>> = (0..20_000).map(|i| vec![i as u8; 200]).collect();
        drop(blocks);
        let before = trim_time();
        let deadline = Instant::now() + Duration::from_secs(10);
        // Another test's trim may be running: ask until one of ours has run.
        while trim_time() == before && Instant::now() < deadline {
            give_back_free_memory();
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(trim_time() > before, "no trim ran");
    }
}
