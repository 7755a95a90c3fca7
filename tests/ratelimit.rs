//! Rate limits end to end: bursts, per-client buckets, and no effect on the breaker.

mod common;

use common::{get_from, Gateway, Upstream};
use std::time::Instant;

#[test]
fn a_burst_beyond_the_limit_gets_429_and_the_upstream_sees_only_what_was_allowed() {
    let up = Upstream::start("limited");
    let gw = Gateway::start(&format!(
        "[routes.limited]\nupstreams = [\"{}\"]\nrate_limit = {{ requests_per_second = 1, burst = 5 }}\n",
        up.url()
    ));
    let started = Instant::now();
    let mut ok = 0;
    let mut limited = Vec::new();
    for _ in 0..20 {
        let r = gw.get("/api/limited");
        match r.status {
            200 => ok += 1,
            429 => limited.push(r),
            other => panic!("unexpected status {other}"),
        }
    }
    // 5 at once, plus one per second that passed.
    let allowed = 5 + started.elapsed().as_secs() + 1;
    assert!(
        ok as u64 <= allowed,
        "{ok} passed, at most {allowed} allowed"
    );
    assert_eq!(
        up.hits(),
        ok as u64,
        "only admitted requests reached the upstream"
    );
    assert!(!limited.is_empty());
    let r = &limited[0];
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    assert!(r.header("x-request-id").is_some());
    assert_eq!(
        r.json(),
        serde_json::json!({"error": "rate_limited", "route": "limited"})
    );
    let line = format!(
        "fusegate_rejections_total{{reason=\"rate_limited\",route=\"limited\"}} {}",
        limited.len()
    );
    common::wait_until(
        "the rejections in /metrics",
        std::time::Duration::from_secs(10),
        || gw.admin("GET", "/metrics").body.contains(&line),
    );
}

#[test]
fn each_client_address_has_its_own_bucket() {
    let up = Upstream::start("per-client");
    let gw = Gateway::start(&format!(
        "[routes.pc]\nupstreams = [\"{}\"]\nrate_limit = {{ requests_per_second = 1, burst = 3, key = \"client_ip\" }}\n",
        up.url()
    ));
    let statuses: Vec<u16> = (0..6)
        .map(|_| get_from("127.0.0.2", gw.port, "/api/pc").0)
        .collect();
    assert_eq!(&statuses[..3], &[200, 200, 200]);
    assert!(
        statuses[3..].contains(&429),
        "127.0.0.2 ran out: {statuses:?}"
    );
    let (other, text) = get_from("127.0.0.3", gw.port, "/api/pc");
    assert_eq!(other, 200, "127.0.0.3 has its own bucket: {text}");
}

#[test]
fn rate_limited_requests_never_open_the_breaker() {
    let up = Upstream::start("guarded");
    let gw = Gateway::start(&format!(
        "[routes.guarded]\nupstreams = [\"{}\"]\nrate_limit = {{ requests_per_second = 1, burst = 2 }}\nbreaker = {{ volume_threshold = 3, failure_statuses = [\"429\", \"500-599\"] }}\n",
        up.url()
    ));
    let limited = (0..20)
        .filter(|_| gw.get("/api/guarded").status == 429)
        .count();
    assert!(limited >= 10, "{limited}");
    gw.wait_window("guarded", up.hits());
    let b = gw.breaker("guarded");
    assert_eq!(b["state"], "closed");
    assert_eq!(b["window"]["failures"], 0);
    assert_eq!(b["window"]["total"].as_u64(), Some(up.hits()));
}
