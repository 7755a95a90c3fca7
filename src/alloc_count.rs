//! A counting global allocator for the allocation benchmark (`benches/alloc.sh`), built
//! only with the `alloc-count` feature, into the `fusegate` binary and the bare pingora
//! reference (`examples/bare_proxy.rs`); the library itself has no unsafe code.
//!
//! Every allocation and reallocation goes to the system allocator and bumps two counters;
//! `report_from_env` starts a thread that writes `allocations bytes` to a file ten times
//! a second, so a script can read the counts before and after a known number of requests.
//! Counting works on the system allocator (not mimalloc) so that heap profilers that
//! replace `malloc` (valgrind's DHAT) see the same allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The system allocator, counting.
pub struct Counting {
    allocations: AtomicU64,
    bytes: AtomicU64,
}

impl Counting {
    pub const fn new() -> Self {
        Counting {
            allocations: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }

    /// Allocations (and reallocations) so far, and the bytes they asked for.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.allocations.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }

    fn count(&self, size: usize) {
        self.allocations.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(size as u64, Ordering::Relaxed);
    }
}

impl Default for Counting {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: every call is passed to `System` unchanged; counting touches only atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.count(layout.size());
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.count(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.count(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// With `ALLOC_COUNT_FILE` set, writes `allocations bytes` to that file ten times a
/// second for as long as the process lives (each write replaces the file through a
/// rename, so a reader never sees half).
pub fn report_from_env(counter: &'static Counting) {
    let Some(path) = std::env::var_os("ALLOC_COUNT_FILE").map(std::path::PathBuf::from) else {
        return;
    };
    let spawned = std::thread::Builder::new()
        .name("alloc-count".into())
        .spawn(move || {
            let tmp = path.with_extension("tmp");
            loop {
                let (n, bytes) = counter.counts();
                if std::fs::write(&tmp, format!("{n} {bytes}\n")).is_ok() {
                    let _ = std::fs::rename(&tmp, &path);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
    if let Err(e) = spawned {
        eprintln!("alloc-count: cannot start the reporting thread: {e}");
    }
}
