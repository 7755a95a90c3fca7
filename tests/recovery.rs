//! Recovery ramp, trip back-off and fallback responses (SPEC §16) end to end: real
//! upstreams, the real binary.

mod common;

use common::{wait_until, Gateway, Resp, Upstream};
use std::time::Duration;

/// Sends `n` requests through failing `path` until the route's breaker is open.
fn trip(gw: &Gateway, route: &str, path: &str, n: usize) {
    for _ in 0..n {
        gw.get(path);
    }
    gw.wait_state(route, "open");
}

/// Polls the admin port until the route's open time has passed (it reads half-open).
fn wait_half_open(gw: &Gateway, route: &str) {
    gw.wait_state(route, "half_open");
}

fn assert_rejected(r: &Resp, route: &str, state: &str) {
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.header("x-fusegate-breaker"), Some(state));
    let body = r.json();
    assert_eq!(body["error"], "circuit_open");
    assert_eq!(body["route"], route);
    assert_eq!(body["state"], state);
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert_eq!(body["retry_after_secs"].as_u64(), Some(retry));
}

#[test]
fn a_closed_breaker_ramps_traffic_back_over_the_recovery_duration() {
    let up = Upstream::start("ramp");
    up.set_status(500);
    let gw = Gateway::start(&format!(
        "[routes.ramp]\nupstreams = [\"{}\"]\nbreaker = {{ volume_threshold = 4, reset_timeout = \"1s\", recovery_duration = \"4s\" }}\n",
        up.url()
    ));
    trip(&gw, "ramp", "/api/ramp/x", 4);
    wait_half_open(&gw, "ramp");
    up.set_status(200);
    assert_eq!(gw.get("/api/ramp/x").status, 200, "the probe");
    gw.wait_state("ramp", "recovering");
    let b = gw.breaker("ramp");
    let pct = b["admit_percentage"].as_f64().expect("admit_percentage");
    assert!((10.0..100.0).contains(&pct), "{b}");
    assert_eq!(gw.metric("fusegate_breaker_state{route=\"ramp\"}"), 4.0);

    // Early in the recovery most requests are turned away with the recovering contract;
    // only those admitted reach the upstream.
    let hits_before = up.hits();
    let answers: Vec<Resp> = (0..20).map(|_| gw.get("/api/ramp/x")).collect();
    let ok = answers.iter().filter(|r| r.status == 200).count() as u64;
    let rejected: Vec<&Resp> = answers.iter().filter(|r| r.status != 200).collect();
    assert!(ok >= 1, "a recovering breaker admits a share");
    assert!(!rejected.is_empty(), "and turns the rest away");
    for r in &rejected {
        assert_rejected(r, "ramp", "recovering");
        assert_eq!(r.header("retry-after"), Some("1"));
    }
    assert_eq!(
        up.hits() - hits_before,
        ok,
        "rejected requests never reach the upstream"
    );

    // At the end of the recovery the breaker closes by itself and admits everything.
    gw.wait_state("ramp", "closed");
    for _ in 0..20 {
        assert_eq!(gw.get("/api/ramp/x").status, 200);
    }
    let to = |s: &str| {
        gw.metric(&format!(
            "fusegate_breaker_transitions_total{{route=\"ramp\",to=\"{s}\"}}"
        ))
    };
    assert_eq!((to("recovering"), to("closed")), (1.0, 1.0));
    assert_eq!(gw.metric("fusegate_breaker_state{route=\"ramp\"}"), 0.0);
}

#[test]
fn a_route_failing_while_recovering_opens_again() {
    let up = Upstream::start("relapse");
    up.set_status(500);
    let gw = Gateway::start(&format!(
        "[routes.relapse]\nupstreams = [\"{}\"]\nbreaker = {{ volume_threshold = 2, reset_timeout = \"1s\", recovery_duration = \"1m\" }}\n",
        up.url()
    ));
    trip(&gw, "relapse", "/api/relapse/x", 2);
    wait_half_open(&gw, "relapse");
    up.set_status(200);
    assert_eq!(gw.get("/api/relapse/x").status, 200);
    gw.wait_state("relapse", "recovering");
    up.set_status(500);
    // Admitted requests fail; two of them in the window open the breaker again.
    wait_until("the breaker to reopen", Duration::from_secs(10), || {
        gw.get("/api/relapse/x");
        gw.breaker("relapse")["state"] == "open"
    });
    let r = gw.get("/api/relapse/x");
    assert_rejected(&r, "relapse", "open");
}

#[test]
fn repeated_trips_back_off_up_to_the_maximum_and_a_close_resets_it() {
    let up = Upstream::start("backoff");
    up.set_status(500);
    let gw = Gateway::start(&format!(
        "[routes.backoff]\nupstreams = [\"{}\"]\nbreaker = {{ volume_threshold = 2, reset_timeout = \"1s\", reset_timeout_max = \"3s\" }}\n",
        up.url()
    ));
    trip(&gw, "backoff", "/api/backoff/x", 2);
    let mut open_times = vec![gw.breaker("backoff")["open_timeout_ms"].as_u64().unwrap()];
    for _ in 0..3 {
        wait_half_open(&gw, "backoff");
        assert_eq!(gw.get("/api/backoff/x").status, 500, "a failing probe");
        gw.wait_state("backoff", "open");
        let b = gw.breaker("backoff");
        let open_ms = b["open_timeout_ms"].as_u64().unwrap();
        open_times.push(open_ms);
        // Retry-After and retry_after_secs tell the truth: never past the open time.
        let r = gw.get("/api/backoff/x");
        assert_rejected(&r, "backoff", "open");
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!(
            retry >= 1 && retry <= open_ms.div_ceil(1000),
            "{retry} s of {open_ms} ms"
        );
    }
    assert_eq!(open_times, [1_000, 2_000, 3_000, 3_000]);

    // A close resets the back-off.
    wait_half_open(&gw, "backoff");
    up.set_status(200);
    assert_eq!(gw.get("/api/backoff/x").status, 200);
    gw.wait_state("backoff", "closed");
    up.set_status(500);
    trip(&gw, "backoff", "/api/backoff/x", 2);
    assert_eq!(
        gw.breaker("backoff")["open_timeout_ms"].as_u64(),
        Some(1_000)
    );
}

#[test]
fn a_static_fallback_answers_instead_of_the_503_and_is_never_an_outcome() {
    let up = Upstream::start("search");
    up.set_status(500);
    up.set_headers(&[("cache-control", "max-age=1")]);
    let gw = Gateway::start(&format!(
        r#"[routes.search]
upstreams = ["{}"]
breaker = {{ volume_threshold = 3, reset_timeout = "30s" }}
cache = {{ stale_if_error = "5m" }}
fallback = {{ status = 200, content_type = "application/json", body = '{{"results":[],"degraded":true}}' }}
"#,
        up.url()
    ));
    // A cached answer, stale by the time the breaker opens.
    up.set_status(200);
    assert_eq!(gw.get("/api/search/cached").status, 200);
    up.set_headers(&[]);
    up.set_status(500);
    wait_until(
        "the cached entry to be stale",
        Duration::from_secs(5),
        || {
            let only_cache = [("cache-control", "only-if-cached")];
            common::request("GET", &gw.url("/api/search/cached"), &only_cache).status == 504
        },
    );
    trip(&gw, "search", "/api/search/fail", 3);
    let hits = up.hits();
    let before = gw.breaker("search");
    let fallbacks = || gw.metric("fusegate_fallbacks_total{kind=\"static\",route=\"search\"}");
    let circuit_open =
        || gw.metric("fusegate_rejections_total{reason=\"circuit_open\",route=\"search\"}");
    let (fallbacks_before, circuit_open_before) = (fallbacks(), circuit_open());

    let r = common::request(
        "GET",
        &gw.url("/api/search/q?x=1"),
        &[("x-request-id", "req-7")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body, r#"{"results":[],"degraded":true}"#);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-fusegate-fallback"), Some("static"));
    assert_eq!(r.header("x-fusegate-breaker"), Some("open"));
    assert_eq!(r.header("x-request-id"), Some("req-7"));
    let post = common::send("POST", &gw.url("/api/search/q"), &[], Some("{}"));
    assert_eq!(post.header("x-fusegate-fallback"), Some("static"));

    // A stale entry stands in before the fallback does.
    let stale = gw.get("/api/search/cached");
    assert_eq!(stale.status, 200);
    assert_eq!(stale.header("x-cache"), Some("STALE"));
    assert_eq!(stale.header("x-fusegate-fallback"), None);

    // A paused route answers with its fallback too.
    gw.admin("POST", "/breakers/search/pause");
    let paused = gw.get("/api/search/q");
    assert_eq!(paused.header("x-fusegate-fallback"), Some("static"));
    assert_eq!(paused.header("x-fusegate-breaker"), Some("forced_open"));

    assert_eq!(up.hits(), hits, "nothing reached the upstream");
    let b = gw.breaker("search");
    assert_eq!(b["window"], before["window"], "fallbacks are no outcomes");
    // Three rejections, each answered by the fallback (the stale entry answered before
    // the breaker was asked).
    let rejected = |b: &serde_json::Value| b["rejected_total"].as_u64().unwrap_or(0);
    assert_eq!(rejected(&b) - rejected(&before), 3, "{b}");
    assert_eq!(fallbacks() - fallbacks_before, 3.0);
    assert_eq!(circuit_open() - circuit_open_before, 2.0);
    assert_eq!(
        gw.metric("fusegate_rejections_total{reason=\"paused\",route=\"search\"}"),
        1.0
    );
}

#[test]
fn a_fallback_upstream_gets_the_original_path_and_its_failure_gets_the_503() {
    let up = Upstream::start("catalog");
    up.set_status(500);
    let spare = Upstream::start("spare");
    let gw = Gateway::start(&format!(
        r#"[routes.catalog]
upstreams = ["{}"]
strip_prefix = true
breaker = {{ volume_threshold = 3, reset_timeout = "30s" }}
fallback = {{ upstream = "{}" }}
"#,
        up.url(),
        spare.url()
    ));
    trip(&gw, "catalog", "/api/catalog/x", 3);
    let hits = up.hits();
    let window = gw.breaker("catalog")["window"]["total"].as_u64();

    let r = common::request(
        "GET",
        &gw.url("/api/catalog/items/1?full=1"),
        &[("x-request-id", "req-9")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["upstream"], "spare");
    assert_eq!(r.header("x-fusegate-fallback"), Some("upstream"));
    assert_eq!(r.header("x-fusegate-breaker"), Some("open"));
    assert_eq!(r.header("x-request-id"), Some("req-9"));
    let seen = spare.last_seen();
    assert_eq!(
        seen.target, "/api/catalog/items/1?full=1",
        "the original path"
    );
    assert_eq!(
        seen.headers.get("x-request-id").map(String::as_str),
        Some("req-9")
    );

    // The fallback upstream failing: the client gets the breaker's 503.
    spare.set_status(503);
    let r = gw.get("/api/catalog/items/1");
    assert_rejected(&r, "catalog", "open");
    assert_eq!(r.header("x-fusegate-fallback"), None);
    spare.kill();
    let r = gw.get("/api/catalog/items/1");
    assert_rejected(&r, "catalog", "open");

    assert_eq!(up.hits(), hits, "nothing reached the route's own upstream");
    let b = gw.breaker("catalog");
    assert_eq!(b["state"], "open");
    assert_eq!(
        b["window"]["total"].as_u64(),
        window,
        "fallbacks are no outcomes"
    );
    assert_eq!(
        gw.metric("fusegate_fallbacks_total{kind=\"upstream\",route=\"catalog\"}"),
        3.0
    );
    // A failing fallback is the route's known trouble, not an error line per request.
    let log = gw.stderr();
    assert!(
        !log.lines()
            .any(|l| l.contains("ERROR") && l.contains("proxy")),
        "{log}"
    );
}

#[test]
fn a_rejected_reload_with_a_bad_fallback_names_the_key_and_keeps_the_old_one() {
    let up = Upstream::start("tags");
    up.set_status(500);
    let route = |fallback: &str| {
        format!(
            "[routes.tags]\nupstreams = [\"{}\"]\nbreaker = {{ volume_threshold = 2, reset_timeout = \"30s\" }}\nfallback = {{ {fallback} }}\n",
            up.url()
        )
    };
    let gw = Gateway::start(&route("status = 200, body = \"[]\""));
    gw.rewrite(&route(
        "status = 200, body = \"[]\", upstream = \"http://127.0.0.1:9\"",
    ));
    let r = gw.admin("POST", "/reload");
    assert_eq!(r.status, 422, "{r:?}");
    assert!(r.body.contains("routes.tags.fallback.body"), "{}", r.body);
    trip(&gw, "tags", "/api/tags/x", 2);
    let r = gw.get("/api/tags/x");
    assert_eq!((r.status, r.body.as_str()), (200, "[]"));
    assert_eq!(r.header("x-fusegate-fallback"), Some("static"));
}
