//! The rolling window: a ring of time buckets of atomic counters.
//!
//! An outcome goes to the bucket of its completion time (`now / bucket_ms`); a bucket whose
//! slot is older than the window no longer counts, and the first writer of a new slot
//! recycles it. Recycling subtracts what the bucket held rather than storing zero, so an
//! outcome added by another thread during the recycle is never lost; outcomes of the old
//! slot that land during the recycle count in the new one (they completed at the boundary).

use super::settings::WindowShape;
use std::sync::atomic::{AtomicU64, Ordering::*};

const EMPTY: u64 = u64::MAX;

#[derive(Debug)]
struct Bucket {
    slot: AtomicU64,
    total: AtomicU64,
    failures: AtomicU64,
    slow: AtomicU64,
}

/// Counts over the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub total: u64,
    pub failures: u64,
    pub slow: u64,
}

impl Counts {
    /// Failures as a percentage of the total, 0 when empty.
    pub fn failure_percentage(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.failures as f64 * 100.0 / self.total as f64
        }
    }
}

/// Rolling counts of total, failed and slow outcomes.
#[derive(Debug)]
pub struct Window {
    shape: WindowShape,
    buckets: Box<[Bucket]>,
}

impl Window {
    pub fn new(shape: WindowShape) -> Self {
        let shape = WindowShape {
            bucket_ms: shape.bucket_ms.max(1),
            buckets: shape.buckets.max(1),
        };
        let buckets = (0..shape.buckets)
            .map(|_| Bucket {
                slot: AtomicU64::new(EMPTY),
                total: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                slow: AtomicU64::new(0),
            })
            .collect();
        Window { shape, buckets }
    }

    pub fn shape(&self) -> WindowShape {
        self.shape
    }

    /// Adds one outcome completed at `now_ms`.
    pub fn record(&self, now_ms: u64, failed: bool, slow: bool) {
        let slot = now_ms / self.shape.bucket_ms;
        let b = &self.buckets[(slot % u64::from(self.shape.buckets)) as usize];
        loop {
            let current = b.slot.load(Acquire);
            if current == slot {
                break;
            }
            if current != EMPTY && current > slot {
                // The bucket already serves a slot a whole window later: this outcome
                // is too old to count.
                return;
            }
            let old = (
                b.total.load(Relaxed),
                b.failures.load(Relaxed),
                b.slow.load(Relaxed),
            );
            if b.slot
                .compare_exchange(current, slot, AcqRel, Acquire)
                .is_ok()
            {
                saturating_sub(&b.total, old.0);
                saturating_sub(&b.failures, old.1);
                saturating_sub(&b.slow, old.2);
                break;
            }
        }
        b.total.fetch_add(1, Relaxed);
        if failed {
            b.failures.fetch_add(1, Relaxed);
        }
        if slow {
            b.slow.fetch_add(1, Relaxed);
        }
    }

    /// The counts of the buckets inside the window ending at `now_ms`.
    pub fn counts(&self, now_ms: u64) -> Counts {
        let current = now_ms / self.shape.bucket_ms;
        let n = u64::from(self.shape.buckets);
        let mut c = Counts::default();
        for b in self.buckets.iter() {
            let slot = b.slot.load(Acquire);
            if slot == EMPTY || slot > current || current - slot >= n {
                continue;
            }
            c.total += b.total.load(Relaxed);
            c.failures += b.failures.load(Relaxed);
            c.slow += b.slow.load(Relaxed);
        }
        c
    }

    /// Empties every bucket.
    pub fn clear(&self) {
        for b in self.buckets.iter() {
            b.slot.store(EMPTY, Release);
            b.total.store(0, Relaxed);
            b.failures.store(0, Relaxed);
            b.slow.store(0, Relaxed);
        }
    }
}

fn saturating_sub(a: &AtomicU64, v: u64) {
    if v != 0 {
        let _ = a.fetch_update(Relaxed, Relaxed, |x| Some(x.saturating_sub(v)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window() -> Window {
        // 10 s in 10 buckets of 1 s.
        Window::new(WindowShape {
            bucket_ms: 1_000,
            buckets: 10,
        })
    }

    #[test]
    fn counts_outcomes_inside_the_window() {
        let w = window();
        w.record(0, true, false);
        w.record(500, false, true);
        w.record(9_999, false, false);
        assert_eq!(
            w.counts(9_999),
            Counts {
                total: 3,
                failures: 1,
                slow: 1
            }
        );
    }

    #[test]
    fn buckets_expire_as_time_moves_on() {
        let w = window();
        w.record(0, true, false); // bucket [0, 1000)
        w.record(1_000, true, false); // bucket [1000, 2000)
        assert_eq!(w.counts(9_999).total, 2);
        // At 10 000 the window is [1000, 11000): the first bucket fell out.
        assert_eq!(w.counts(10_000).total, 1);
        assert_eq!(w.counts(11_000).total, 0);
    }

    #[test]
    fn a_recycled_bucket_starts_from_zero() {
        let w = window();
        for _ in 0..5 {
            w.record(100, true, false);
        }
        // Same ring position, one window later.
        w.record(10_100, false, false);
        assert_eq!(
            w.counts(10_100),
            Counts {
                total: 1,
                failures: 0,
                slow: 0
            }
        );
    }

    #[test]
    fn an_outcome_older_than_its_bucket_is_dropped() {
        let w = window();
        w.record(10_100, false, false);
        w.record(100, true, false);
        assert_eq!(w.counts(10_100).failures, 0);
    }

    #[test]
    fn clear_empties_the_window() {
        let w = window();
        w.record(0, true, true);
        w.clear();
        assert_eq!(w.counts(0), Counts::default());
    }

    #[test]
    fn concurrent_records_are_all_counted() {
        let w = std::sync::Arc::new(window());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        w.record(i % 1_000, i % 2 == 0, false);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(
            w.counts(999),
            Counts {
                total: 40_000,
                failures: 20_000,
                slow: 0
            }
        );
    }
}
