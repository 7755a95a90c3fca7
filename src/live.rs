//! Live per-route figures for the dashboard (SPEC §13): what each route did in the last
//! second (requests per second, outcome counts, upstream latency p50/p99) and its breaker,
//! as one `snapshot` JSON object a second, and breaker transitions as they happen.
//!
//! The request path only increments: each route has a [`LiveStats`] of monotonically
//! increasing atomic counters and a small log-scale latency histogram (relaxed atomics,
//! no lock; allocated by the route's first request). Once a second the [`Sampler`] reads
//! them, takes the difference from the second before and writes the snapshot; nobody
//! else reads them.
//! Snapshots are only made while someone watches (a dashboard stream, or NATS snapshot
//! publishing).

use crate::gateway::Gateway;
use crate::runtime::Route;
use bytes::Bytes;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use tokio::sync::{broadcast, watch};

/// Latency buckets: two per octave of microseconds, from 64 µs (bucket 0 holds anything
/// faster) to about 67 s (the last holds anything slower).
const BUCKETS: usize = 40;
const FIRST_OCTAVE: u32 = 6;

/// What one finished request was, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ok,
    Failed,
    Timeout,
    Rejected,
    Stale,
    RateLimited,
    /// Answered, but none of the above (a client error, a path refused).
    Other,
}

/// The live counters of one route; kept across reloads by route name. They are made
/// by the route's first request: a route that sees none costs a pointer.
#[derive(Debug, Default)]
pub struct LiveStats {
    counters: std::sync::OnceLock<Box<Counters>>,
}

#[derive(Debug)]
struct Counters {
    /// Indexed by [`Kind`].
    counts: [AtomicU64; 7],
    /// Upstream latencies; `u32` counts wrap, and differences are taken wrapping.
    latency: [AtomicU32; BUCKETS],
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            counts: Default::default(),
            latency: std::array::from_fn(|_| AtomicU32::new(0)),
        }
    }
}

/// The bucket of a latency in microseconds.
pub fn bucket_of(us: u64) -> usize {
    if us < 1 << FIRST_OCTAVE {
        return 0;
    }
    let octave = 63 - us.leading_zeros();
    // The bit below the top one says which half of the octave.
    let half = (us >> (octave - 1)) & 1;
    let i = (octave - FIRST_OCTAVE) as usize * 2 + half as usize;
    i.min(BUCKETS - 1)
}

/// A representative latency (ms) of bucket `i`: the middle of its range.
fn bucket_ms(i: usize) -> f64 {
    let octave = FIRST_OCTAVE + (i / 2) as u32;
    let lo = (1u64 << octave) as f64 * if i % 2 == 1 { 1.5 } else { 1.0 };
    let hi = (1u64 << octave) as f64 * if i % 2 == 1 { 2.0 } else { 1.5 };
    ((lo + hi) / 2.0) / 1000.0
}

impl LiveStats {
    /// One finished request, and its upstream latency when the upstream answered.
    pub fn record(&self, kind: Kind, upstream_us: Option<u64>) {
        let c = self.counters.get_or_init(Default::default);
        c.counts[kind as usize].fetch_add(1, Relaxed);
        if let Some(us) = upstream_us {
            c.latency[bucket_of(us)].fetch_add(1, Relaxed);
        }
    }

    fn read(&self) -> Reading {
        match self.counters.get() {
            Some(c) => Reading {
                counts: std::array::from_fn(|i| c.counts[i].load(Relaxed)),
                latency: std::array::from_fn(|i| c.latency[i].load(Relaxed)),
            },
            None => Reading {
                counts: [0; 7],
                latency: [0; BUCKETS],
            },
        }
    }
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy)]
struct Reading {
    counts: [u64; 7],
    latency: [u32; BUCKETS],
}

/// The percentile `q` (0..1) of a latency histogram, in ms; `None` when it is empty.
fn percentile(hist: &[u32; BUCKETS], q: f64) -> Option<f64> {
    let total: u64 = hist.iter().map(|&n| u64::from(n)).sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, &n) in hist.iter().enumerate() {
        seen += u64::from(n);
        if seen >= rank {
            return Some((bucket_ms(i) * 100.0).round() / 100.0);
        }
    }
    None
}

/// One route in a snapshot (the `S` of SPEC §13).
#[derive(Debug, Serialize)]
pub struct RouteLive {
    pub route: String,
    pub state: &'static str,
    pub mode: &'static str,
    pub since: String,
    pub retry_after_secs: Option<u64>,
    pub window: crate::admin::views::WindowView,
    pub error_threshold_percentage: u32,
    pub volume_threshold: u32,
    pub rps: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub counts: Counts,
}

/// Outcomes over the last second.
#[derive(Debug, Default, Serialize)]
pub struct Counts {
    pub ok: u64,
    pub failed: u64,
    pub timeout: u64,
    pub rejected: u64,
    pub stale: u64,
    pub rate_limited: u64,
}

/// Makes a snapshot a second from the counters' differences.
#[derive(Debug, Default)]
pub struct Sampler {
    previous: HashMap<Arc<str>, (Reading, u64)>,
}

impl Sampler {
    /// The snapshot JSON of every route of `gw` now. `now_ms` is the gateway clock.
    pub fn sample(&mut self, gw: &Gateway, now_ms: u64) -> Bytes {
        let runtime = gw.runtime();
        let mut routes = Vec::with_capacity(runtime.routes.len());
        let mut next = HashMap::with_capacity(runtime.routes.len());
        for route in &runtime.routes {
            let reading = route.live.read();
            let (before, at) = self
                .previous
                .get(&route.name)
                .copied()
                .unwrap_or((reading, now_ms));
            routes.push(route_live(gw, route, &before, &reading, now_ms, at));
            next.insert(route.name.clone(), (reading, now_ms));
        }
        self.previous = next;
        let snapshot = serde_json::json!({
            "at": crate::admin::views::rfc3339(gw.clock.wall(now_ms)),
            "identity": gw.identity,
            "facts": gw.facts,
            "routes": routes,
        });
        Bytes::from(serde_json::to_vec(&snapshot).unwrap_or_default())
    }
}

fn route_live(
    gw: &Gateway,
    route: &Route,
    before: &Reading,
    now: &Reading,
    now_ms: u64,
    then_ms: u64,
) -> RouteLive {
    let d = |k: Kind| now.counts[k as usize].wrapping_sub(before.counts[k as usize]);
    let total: u64 = (0..7)
        .map(|i| now.counts[i].wrapping_sub(before.counts[i]))
        .sum();
    let hist: [u32; BUCKETS] =
        std::array::from_fn(|i| now.latency[i].wrapping_sub(before.latency[i]));
    let secs = (now_ms.saturating_sub(then_ms) as f64 / 1000.0).max(1.0);
    let snap = route.breaker.snapshot(&route.settings, now_ms);
    RouteLive {
        route: route.name.to_string(),
        state: snap.state.as_str(),
        mode: route.settings.mode.as_str(),
        since: crate::admin::views::rfc3339(gw.clock.wall(snap.since_ms)),
        retry_after_secs: snap.retry_after_secs,
        window: crate::admin::views::WindowView::of(&snap.window),
        error_threshold_percentage: route.settings.error_threshold_percentage,
        volume_threshold: route.settings.volume_threshold,
        rps: (total as f64 / secs * 10.0).round() / 10.0,
        p50_ms: percentile(&hist, 0.5),
        p99_ms: percentile(&hist, 0.99),
        counts: Counts {
            ok: d(Kind::Ok),
            failed: d(Kind::Failed),
            timeout: d(Kind::Timeout),
            rejected: d(Kind::Rejected),
            stale: d(Kind::Stale),
            rate_limited: d(Kind::RateLimited),
        },
    }
}

/// Where snapshots and transitions go: the dashboard streams of the admin port and the
/// NATS snapshot publisher.
#[derive(Debug)]
pub struct Live {
    /// The latest snapshot (empty until the first one).
    snapshots: watch::Sender<Bytes>,
    /// Transition events (the NATS event object), as JSON.
    transitions: broadcast::Sender<Bytes>,
    /// Dashboard streams open now.
    watchers: AtomicUsize,
}

/// Transition events a slow stream may fall behind by before it skips some.
const TRANSITION_BACKLOG: usize = 256;

impl Default for Live {
    fn default() -> Self {
        Live {
            snapshots: watch::channel(Bytes::new()).0,
            transitions: broadcast::channel(TRANSITION_BACKLOG).0,
            watchers: AtomicUsize::new(0),
        }
    }
}

/// A dashboard stream's subscription; counted while it lives.
pub struct Watch<'a> {
    live: &'a Live,
    pub snapshots: watch::Receiver<Bytes>,
    pub transitions: broadcast::Receiver<Bytes>,
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        self.live.watchers.fetch_sub(1, Relaxed);
    }
}

impl Live {
    /// Subscribes a dashboard stream.
    pub fn watch(&self) -> Watch<'_> {
        self.watchers.fetch_add(1, Relaxed);
        Watch {
            live: self,
            snapshots: self.snapshots.subscribe(),
            transitions: self.transitions.subscribe(),
        }
    }

    /// Dashboard streams open now.
    pub fn watchers(&self) -> usize {
        self.watchers.load(Relaxed)
    }

    /// Hands a new snapshot to every stream.
    pub fn publish_snapshot(&self, snapshot: Bytes) {
        self.snapshots.send_replace(snapshot);
    }

    /// The latest snapshot (empty before the first).
    pub fn latest(&self) -> Bytes {
        self.snapshots.borrow().clone()
    }

    /// Hands a transition event to every stream (none listening: dropped).
    pub fn publish_transition(&self, event: &serde_json::Value) {
        if self.transitions.receiver_count() > 0 {
            self.publish_transition_json(Bytes::from(
                serde_json::to_vec(event).unwrap_or_default(),
            ));
        }
    }

    /// The same, already encoded.
    pub fn publish_transition_json(&self, json: Bytes) {
        let _ = self.transitions.send(json);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_two_per_octave() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(63), 0);
        assert_eq!(bucket_of(64), 0);
        assert_eq!(bucket_of(96), 1);
        assert_eq!(bucket_of(128), 2);
        assert_eq!(bucket_of(1_000), 7); // 512..1024, upper half
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        for i in 0..BUCKETS - 1 {
            assert!(bucket_ms(i) < bucket_ms(i + 1));
        }
    }

    #[test]
    fn percentiles_come_from_the_bucket_holding_the_rank() {
        let mut hist = [0u32; BUCKETS];
        assert_eq!(percentile(&hist, 0.5), None);
        // 98 requests at ~1 ms, 2 at ~100 ms.
        hist[bucket_of(1_000)] = 98;
        hist[bucket_of(100_000)] = 2;
        let p50 = percentile(&hist, 0.5).unwrap();
        let p99 = percentile(&hist, 0.99).unwrap();
        assert!((0.5..=1.1).contains(&p50), "{p50}");
        assert!((60.0..=140.0).contains(&p99), "{p99}");
    }

    #[test]
    fn counts_are_taken_as_differences_even_when_they_wrap() {
        let s = LiveStats::default();
        assert_eq!(
            s.read().counts,
            [0; 7],
            "no counters before the first request"
        );
        s.record(Kind::Other, None);
        let c = s.counters.get().unwrap();
        c.latency[3].store(u32::MAX, Relaxed);
        let before = s.read();
        s.record(Kind::Ok, Some(100));
        c.latency[3].fetch_add(2, Relaxed);
        let after = s.read();
        assert_eq!(after.latency[3].wrapping_sub(before.latency[3]), 2);
        assert_eq!(
            after.counts[Kind::Ok as usize] - before.counts[Kind::Ok as usize],
            1
        );
    }
}
