//! Giving freed heap memory back to the operating system.
//!
//! A memtable is many small allocations made by the writer threads (each in its own malloc
//! arena) and freed together when its flush is published. glibc keeps freed memory in its
//! arenas for reuse, and a long fill leaves much of it there: at 5 M keys the heap was 448 MiB
//! with 190 MiB of memtables, and `malloc_trim` gave back 101 MiB of it
//! (`docs/BENCHMARKS.md`, "Memory"). So each published flush asks for a trim.
//!
//! A trim of a large heap took ~70 ms there: it runs on a thread of its own, never on a shard
//! thread, and at most one runs at a time (a request while one runs is dropped: that trim, or
//! the next flush's, finds the memory).
//!
//! Shared: process-wide state (one flag, one counter), callable from any thread.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A trim is running.
static TRIMMING: AtomicBool = AtomicBool::new(false);
/// Nanoseconds spent trimming, all trims of the process.
static TRIM_NANOS: AtomicU64 = AtomicU64::new(0);

/// Asks for free heap memory to be given back to the operating system, on a background
/// thread; returns at once.
pub fn give_back_free_memory() {
    if TRIMMING.swap(true, Ordering::AcqRel) {
        return;
    }
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
