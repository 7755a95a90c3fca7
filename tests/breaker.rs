//! The circuit breaker end to end: real upstreams, the real binary.

mod common;

use common::{Gateway, Upstream};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

fn route(name: &str, upstream: &str, breaker: &str) -> String {
    format!("[routes.{name}]\nupstreams = [\"{upstream}\"]\nbreaker = {{ {breaker} }}\n")
}

/// Waits out a configured reset timeout measured from `opened_at`.
fn wait_out(opened_at: Instant, reset: Duration) {
    let until = opened_at + reset + Duration::from_millis(150);
    while Instant::now() < until {
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn opens_after_the_configured_failures_and_then_rejects_without_reaching_the_upstream() {
    let up = Upstream::start("flaky");
    up.set_status(500);
    let gw = Gateway::start(&route(
        "flaky",
        &up.url(),
        "volume_threshold = 4, error_threshold_percentage = 50, reset_timeout = \"30s\"",
    ));
    for _ in 0..4 {
        let r = gw.get("/api/flaky/items");
        assert_eq!(
            r.status, 500,
            "failures pass through until the breaker opens"
        );
    }
    assert_eq!(up.hits(), 4);
    gw.wait_state("flaky", "open");

    let r = gw.get("/api/flaky/items");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-fusegate-breaker"), Some("open"));
    assert!(r.header("x-request-id").is_some());
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry), "Retry-After {retry}");
    let body = r.json();
    assert_eq!(body["error"], "circuit_open");
    assert_eq!(body["route"], "flaky");
    assert_eq!(body["state"], "open");
    assert_eq!(body["retry_after_secs"].as_u64(), Some(retry));

    for _ in 0..10 {
        assert_eq!(gw.get("/api/flaky/items").status, 503);
    }
    assert_eq!(up.hits(), 4, "an open breaker sends nothing upstream");
}

#[test]
fn half_open_admits_exactly_the_configured_probes_under_concurrency() {
    let up = Upstream::start("probe");
    up.set_status(500);
    let reset = Duration::from_secs(1);
    let gw = Gateway::start(&route(
        "probe",
        &up.url(),
        "volume_threshold = 4, reset_timeout = \"1s\", half_open_probes = 2, timeout = \"10s\"",
    ));
    for _ in 0..4 {
        gw.get("/api/probe/x");
    }
    gw.wait_state("probe", "open");
    let opened_at = Instant::now();
    assert_eq!(gw.get("/api/probe/x").status, 503);
    let before = up.hits();

    // The upstream has recovered but is slow, so the probes are still running while the
    // other requests arrive.
    up.set_status(200);
    up.set_delay(Duration::from_millis(1500));
    wait_out(opened_at, reset);

    let barrier = Arc::new(Barrier::new(20));
    let url = gw.url("/api/probe/x");
    let handles: Vec<_> = (0..20)
        .map(|_| {
            let (barrier, url) = (barrier.clone(), url.clone());
            thread::spawn(move || {
                barrier.wait();
                common::get(&url)
            })
        })
        .collect();
    let responses: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ok = responses.iter().filter(|r| r.status == 200).count();
    let half_open = responses
        .iter()
        .filter(|r| r.status == 503 && r.header("x-fusegate-breaker") == Some("half_open"))
        .count();
    assert_eq!(
        ok, 2,
        "exactly half_open_probes requests reach the upstream"
    );
    assert_eq!(half_open, 18);
    assert_eq!(up.hits() - before, 2);

    // Both probes succeeded: the breaker is closed again.
    up.set_delay(Duration::ZERO);
    gw.wait_state("probe", "closed");
    assert_eq!(gw.get("/api/probe/x").status, 200);
    assert_eq!(up.hits() - before, 3);
}

#[test]
fn a_successful_probe_closes_and_a_failed_one_reopens() {
    let up = Upstream::start("cycle");
    up.set_status(500);
    let reset = Duration::from_secs(1);
    let gw = Gateway::start(&route(
        "cycle",
        &up.url(),
        "volume_threshold = 3, reset_timeout = \"1s\"",
    ));
    for _ in 0..3 {
        gw.get("/api/cycle");
    }
    gw.wait_state("cycle", "open");
    let opened_at = Instant::now();
    assert_eq!(gw.get("/api/cycle").status, 503);

    // The probe fails: open again, with the timer restarted.
    wait_out(opened_at, reset);
    assert_eq!(
        gw.get("/api/cycle").status,
        500,
        "the probe's own answer is passed on"
    );
    gw.wait_state("cycle", "open");
    let reopened_at = Instant::now();
    let r = gw.get("/api/cycle");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-fusegate-breaker"), Some("open"));

    // The probe succeeds: closed, traffic flows.
    up.set_status(200);
    wait_out(reopened_at, reset);
    assert_eq!(gw.get("/api/cycle").status, 200, "the probe");
    gw.wait_state("cycle", "closed");
    let hits = up.hits();
    for _ in 0..5 {
        assert_eq!(gw.get("/api/cycle").status, 200);
    }
    assert_eq!(up.hits() - hits, 5);
}

#[test]
fn upstream_timeouts_answer_504_and_count_as_failures() {
    let up = Upstream::start("slow");
    up.set_delay(Duration::from_millis(1500));
    let gw = Gateway::start(&route(
        "slow",
        &up.url(),
        "volume_threshold = 3, timeout = \"300ms\", reset_timeout = \"30s\"",
    ));
    for _ in 0..3 {
        let r = gw.get("/api/slow");
        assert_eq!(r.status, 504);
        assert_eq!(r.header("content-type"), Some("application/json"));
        let body = r.json();
        assert_eq!(body["error"], "upstream_timeout");
        assert_eq!(body["route"], "slow");
    }
    gw.wait_state("slow", "open");
    let r = gw.get("/api/slow");
    assert_eq!(r.status, 503, "three timeouts opened the breaker");
    assert_eq!(up.hits(), 3);
}

#[test]
fn refused_connections_answer_502_and_count_as_failures() {
    let dead = format!("127.0.0.1:{}", common::free_port());
    let gw = Gateway::start(&route(
        "dead",
        &dead,
        "volume_threshold = 3, reset_timeout = \"30s\"",
    ));
    for _ in 0..3 {
        let r = gw.get("/api/dead/x");
        assert_eq!(r.status, 502);
        assert!(r.header("x-request-id").is_some());
        let body = r.json();
        assert_eq!(body["error"], "upstream_unavailable");
        assert_eq!(body["route"], "dead");
    }
    gw.wait_state("dead", "open");
    assert_eq!(gw.get("/api/dead/x").status, 503);
}

#[test]
fn client_errors_from_the_upstream_do_not_count() {
    let up = Upstream::start("picky");
    up.set_status(404);
    let gw = Gateway::start(&route(
        "picky",
        &up.url(),
        "volume_threshold = 3, reset_timeout = \"30s\"",
    ));
    for _ in 0..10 {
        let r = gw.get("/api/picky/missing");
        assert_eq!(r.status, 404);
        assert!(
            r.body.contains("\"upstream\":\"picky\""),
            "the upstream's body is passed on"
        );
    }
    assert_eq!(up.hits(), 10);
    gw.wait_window("picky", 10);
    assert_eq!(gw.breaker("picky")["state"], "closed");
}

#[test]
fn failure_statuses_decide_what_counts() {
    let up = Upstream::start("custom");
    up.set_status(500);
    let gw = Gateway::start(&route(
        "custom",
        &up.url(),
        "volume_threshold = 3, reset_timeout = \"30s\", failure_statuses = [\"502-504\", 429]",
    ));
    for _ in 0..6 {
        assert_eq!(
            gw.get("/api/custom").status,
            500,
            "500 is not a failure here"
        );
    }
    up.set_status(429);
    for _ in 0..6 {
        gw.get("/api/custom");
    }
    assert_eq!(gw.get("/api/custom").status, 503, "429 is");
}

#[test]
fn observe_mode_reports_but_never_rejects() {
    let up = Upstream::start("watched");
    up.set_status(500);
    let gw = Gateway::start(&route(
        "watched",
        &up.url(),
        "volume_threshold = 3, mode = \"observe\", reset_timeout = \"30s\"",
    ));
    for _ in 0..10 {
        assert_eq!(gw.get("/api/watched").status, 500);
    }
    assert_eq!(up.hits(), 10);
    gw.wait_state("watched", "open");
    assert!(
        gw.stderr().contains("breaker watched: closed -> open"),
        "the transition is still logged:\n{}",
        gw.stderr()
    );
}

#[test]
fn one_routes_open_breaker_leaves_other_routes_alone() {
    let bad = Upstream::start("bad");
    bad.set_status(503);
    let good = Upstream::start("good");
    let gw = Gateway::start(&format!(
        "{}{}",
        route(
            "bad",
            &bad.url(),
            "volume_threshold = 3, reset_timeout = \"30s\""
        ),
        route("good", &good.url(), "volume_threshold = 3")
    ));
    for _ in 0..3 {
        gw.get("/api/bad");
    }
    gw.wait_state("bad", "open");
    assert_eq!(gw.get("/api/bad").status, 503);
    for _ in 0..5 {
        assert_eq!(gw.get("/api/good").status, 200);
    }
}
