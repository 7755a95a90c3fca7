//! Hot-path micro-benchmarks (criterion): breaker admit + record, route lookup at
//! different table sizes, and building a 10,000-route table.
//!
//!   cargo bench --bench breaker

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use fusegate::breaker::{Breaker, FailureKind, Outcome, Settings, State};
use fusegate::config::{Config, RouteConfig};
use fusegate::metrics::Metrics;
use fusegate::router::Router;
use fusegate::runtime::{Registries, Runtime};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One request's worth of breaker work: admission, then the outcome. Time moves 1 ms
/// every 1000 requests so buckets rotate as they would under load.
fn admit_record(b: &Breaker, s: &Settings, i: u64) {
    let now = i / 1_000;
    if let Ok(permit) = b.try_acquire(s, now).result {
        black_box(b.record(permit, Outcome::success(1), s, now));
    }
}

/// A breaker that went open, then closed through a successful probe into `recovering`
/// at `reset_timeout`.
fn recovering(s: &Settings) -> Breaker {
    let b = Breaker::new(s.window, 0);
    for _ in 0..s.volume_threshold {
        if let Ok(p) = b.try_acquire(s, 0).result {
            b.record(p, Outcome::failure(FailureKind::Status, 1), s, 0);
        }
    }
    if let Ok(p) = b.try_acquire(s, s.reset_timeout_ms).result {
        b.record(p, Outcome::success(1), s, s.reset_timeout_ms);
    }
    assert_eq!(
        b.state(),
        State::Recovering,
        "the bench breaker is recovering"
    );
    b
}

fn breaker(c: &mut Criterion) {
    let s = Settings::default();
    let mut g = c.benchmark_group("breaker");
    let b = Breaker::new(s.window, 0);
    let mut i = 0u64;
    g.bench_function("admit_record_1_thread", |bench| {
        bench.iter(|| {
            i += 1;
            admit_record(&b, &s, i)
        })
    });
    // A breaker recovering (a one-hour ramp, so it stays recovering): every admission
    // is the share's compare-and-swap; most requests are turned away early in the ramp.
    let rs = Settings {
        recovery_ms: 3_600_000,
        ..s.clone()
    };
    let rb = recovering(&rs);
    let mut j = 0u64;
    g.bench_function("admit_record_recovering_1_thread", |bench| {
        bench.iter(|| {
            j += 1;
            admit_record(&rb, &rs, rs.reset_timeout_ms * 1_000 + j)
        })
    });
    // Two threads on one route: wall time per request with both cores busy.
    let shared = Arc::new(Breaker::new(s.window, 0));
    g.bench_function("admit_record_2_threads_1_route", |bench| {
        bench.iter_custom(|iters| {
            let start = Instant::now();
            let threads: Vec<_> = (0..2)
                .map(|t| {
                    let (b, s) = (shared.clone(), s.clone());
                    std::thread::spawn(move || {
                        for i in 0..iters / 2 {
                            admit_record(&b, &s, i * 2 + t);
                        }
                    })
                })
                .collect();
            for t in threads {
                let _ = t.join();
            }
            start.elapsed()
        })
    });
    g.finish();
}

fn lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("route_lookup");
    for routes in [10usize, 1_000, 10_000] {
        let mut r = Router::new();
        for i in 0..routes {
            r.insert(&format!("/api/plugin-{i}"), i);
        }
        let paths: Vec<String> = (0..1024)
            .map(|i| format!("/api/plugin-{}/items/{i}", (i * 7919) % routes))
            .collect();
        let mut n = 0usize;
        g.bench_with_input(BenchmarkId::from_parameter(routes), &routes, |bench, _| {
            bench.iter(|| {
                n = (n + 1) & 1023;
                black_box(r.lookup(&paths[n]))
            })
        });
    }
    g.finish();
}

/// A config with `n` routes, each with two upstreams.
pub fn many_routes(n: usize) -> Config {
    let mut c = Config::default();
    for i in 0..n {
        c.routes.insert(
            format!("plugin-{i}"),
            RouteConfig {
                upstreams: vec![
                    format!("127.0.0.1:{}", 10_000 + i % 50_000),
                    format!("127.0.0.2:{}", 10_000 + i % 50_000),
                ],
                ..RouteConfig::default()
            },
        );
    }
    c
}

fn build(c: &mut Criterion) {
    let config = Arc::new(many_routes(10_000));
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let mut g = c.benchmark_group("route_table");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("build_10000_routes", |bench| {
        bench.iter(|| {
            let t = Runtime::build(config.clone(), &Registries::new(metrics.clone()), 1, 0);
            black_box(t.map(|t| t.routes.len()))
        })
    });
    g.finish();
}

criterion_group!(benches, breaker, lookup, build);
criterion_main!(benches);
