//! Breaker hot-path cost: admit + record per request, on one thread and on two threads
//! sharing one route, and route lookup at different table sizes.
//!
//! Run: `cargo bench --bench breaker` (release build; prints nanoseconds per operation).

use fusegate::breaker::{Breaker, Outcome, Settings};
use fusegate::router::Router;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

const OPS: u64 = 5_000_000;

fn admit_record(b: &Breaker, s: &Settings, ops: u64) {
    for i in 0..ops {
        // Time advances 1 ms every 1000 requests: buckets rotate as in real traffic.
        let now = i / 1_000;
        let acquired = b.try_acquire(s, now);
        if let Ok(permit) = acquired.result {
            let _ = b.record(permit, Outcome::success(1), s, now);
        }
    }
}

fn main() {
    let s = Settings::default();

    let b = Breaker::new(s.window, 0);
    let start = Instant::now();
    admit_record(black_box(&b), &s, OPS);
    let ns = start.elapsed().as_nanos() as f64 / OPS as f64;
    println!("breaker admit+record, 1 thread:            {ns:6.1} ns/request");

    let shared = Arc::new(Breaker::new(s.window, 0));
    let start = Instant::now();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (b, s) = (shared.clone(), s.clone());
            std::thread::spawn(move || admit_record(&b, &s, OPS))
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let ns = start.elapsed().as_nanos() as f64 / (2 * OPS) as f64;
    println!(
        "breaker admit+record, 2 threads, 1 route:  {ns:6.1} ns/request (wall time / requests)"
    );

    for routes in [10usize, 1_000, 10_000] {
        let mut r = Router::new();
        for i in 0..routes {
            r.insert(&format!("/api/plugin-{i}"), i);
        }
        let paths: Vec<String> = (0..1024)
            .map(|i| format!("/api/plugin-{}/items/{i}", (i * 7919) % routes))
            .collect();
        let lookups = 2_000_000u64;
        let start = Instant::now();
        for i in 0..lookups {
            black_box(r.lookup(black_box(&paths[(i % 1024) as usize])));
        }
        let ns = start.elapsed().as_nanos() as f64 / lookups as f64;
        println!("route lookup, {routes:>6} routes:               {ns:6.1} ns/lookup");
    }
}
