//! The per-route cache end to end: a real upstream that counts hits and sends the headers
//! each test chooses.

mod common;

use common::{request, wait_until, Gateway, Upstream};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

fn cached_route(up: &Upstream, cache: &str, breaker: &str) -> String {
    format!(
        "[routes.c]\nupstreams = [\"{}\"]\nbreaker = {{ {breaker} }}\n\n[routes.c.cache]\n{cache}\n",
        up.url()
    )
}

fn wait_for(d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_fresh_entry_is_served_without_asking_the_upstream() {
    let up = Upstream::start("c");
    up.set_headers(&[("Cache-Control", "max-age=60")]);
    let gw = Gateway::start(&cached_route(&up, "", ""));
    let first = gw.get("/api/c/item?x=1");
    assert_eq!((first.status, first.header("x-cache")), (200, Some("MISS")));
    let second = gw.get("/api/c/item?x=1");
    assert_eq!(
        (second.status, second.header("x-cache")),
        (200, Some("HIT"))
    );
    assert_eq!(second.body, first.body, "the cached body");
    assert!(second.header("age").is_some());
    assert!(second.header("x-request-id").is_some());
    assert_eq!(up.hits(), 1);
    // Another query string is another entry.
    assert_eq!(gw.get("/api/c/item?x=2").header("x-cache"), Some("MISS"));
    assert_eq!(up.hits(), 2);
    // HEAD is answered from its own entry.
    assert_eq!(request("HEAD", &gw.url("/api/c/item?x=1"), &[]).status, 200);

    wait_until("cache metrics", Duration::from_secs(10), || {
        let m = gw.admin("GET", "/metrics").body;
        m.contains("fusegate_cache_total{result=\"hit\",route=\"c\"} 1")
            && m.contains("fusegate_cache_total{result=\"miss\",route=\"c\"} 3")
    });
}

#[test]
fn what_must_not_be_stored_never_is() {
    for (headers, req_headers, method) in [
        (vec![("Cache-Control", "no-store")], vec![], "GET"),
        (
            vec![("Cache-Control", "private, max-age=60")],
            vec![],
            "GET",
        ),
        (
            vec![("Cache-Control", "max-age=60"), ("Set-Cookie", "s=1")],
            vec![],
            "GET",
        ),
        (
            vec![("Cache-Control", "max-age=60")],
            vec![("authorization", "Bearer x")],
            "GET",
        ),
        (vec![("Cache-Control", "max-age=60")], vec![], "POST"),
        (
            vec![("Cache-Control", "max-age=60")],
            vec![("cache-control", "no-store")],
            "GET",
        ),
    ] {
        let up = Upstream::start("c");
        up.set_headers(&headers);
        let gw = Gateway::start(&cached_route(&up, "", ""));
        for _ in 0..3 {
            let r = request(method, &gw.url("/api/c/x"), &req_headers);
            assert_eq!(r.status, 200);
            assert_ne!(
                r.header("x-cache"),
                Some("HIT"),
                "{headers:?} {req_headers:?} {method}"
            );
        }
        assert_eq!(
            up.hits(),
            3,
            "{headers:?} {req_headers:?} {method}: every request went upstream"
        );
    }
}

#[test]
fn an_authorized_response_marked_public_is_stored() {
    let up = Upstream::start("c");
    up.set_headers(&[("Cache-Control", "public, max-age=60")]);
    let gw = Gateway::start(&cached_route(&up, "", ""));
    let auth = [("authorization", "Bearer x")];
    request("GET", &gw.url("/api/c/x"), &auth);
    assert_eq!(
        request("GET", &gw.url("/api/c/x"), &auth).header("x-cache"),
        Some("HIT")
    );
    assert_eq!(up.hits(), 1);
}

#[test]
fn entries_expire_and_default_ttl_applies_without_freshness_information() {
    let up = Upstream::start("c");
    up.set_headers(&[("Cache-Control", "max-age=1")]);
    let gw = Gateway::start(&cached_route(&up, "default_ttl = \"60s\"", ""));
    gw.get("/api/c/short");
    assert_eq!(gw.get("/api/c/short").header("x-cache"), Some("HIT"));
    wait_for(Duration::from_millis(1200));
    assert_eq!(
        gw.get("/api/c/short").header("x-cache"),
        Some("MISS"),
        "expired"
    );
    assert_eq!(up.hits(), 2);

    up.set_headers(&[]);
    gw.get("/api/c/untold");
    assert_eq!(
        gw.get("/api/c/untold").header("x-cache"),
        Some("HIT"),
        "default_ttl"
    );
    assert_eq!(up.hits(), 3);
}

#[test]
fn client_cache_control_without_bounds() {
    let up = Upstream::start("c");
    up.set_headers(&[("Cache-Control", "max-age=60")]);
    let gw = Gateway::start(&cached_route(&up, "", ""));
    gw.get("/api/c/x");
    wait_for(Duration::from_millis(1100));
    let get = |cc: &str| request("GET", &gw.url("/api/c/x"), &[("cache-control", cc)]);

    let r = get("max-age=0");
    assert_eq!(
        up.hits(),
        2,
        "max-age=0: the entry is too old for this client"
    );
    assert_eq!(r.header("warning"), None);
    assert_eq!(get("max-age=30").header("x-cache"), Some("HIT"));
    get("min-fresh=100");
    assert_eq!(up.hits(), 3, "min-fresh=100: not fresh long enough");
    get("no-cache");
    assert_eq!(up.hits(), 4, "no-cache goes upstream");

    let r = get("only-if-cached");
    assert_eq!((r.status, r.header("x-cache")), (200, Some("HIT")));
    let r = request(
        "GET",
        &gw.url("/api/c/never-fetched"),
        &[("cache-control", "only-if-cached")],
    );
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["error"], "not_cached");
    assert_eq!(up.hits(), 4);
}

#[test]
fn client_bounds_are_adjusted_by_min_age_and_max_fresh() {
    let up = Upstream::start("c");
    up.set_headers(&[("Cache-Control", "max-age=60")]);
    let gw = Gateway::start(&cached_route(
        &up,
        "min_age = \"30s\"\nmax_fresh = \"10s\"",
        "",
    ));
    gw.get("/api/c/x");
    wait_for(Duration::from_millis(1100));
    let get = |cc: &str| request("GET", &gw.url("/api/c/x"), &[("cache-control", cc)]);
    for cc in ["max-age=0", "min-fresh=100", "no-cache"] {
        let r = get(cc);
        assert_eq!(r.header("x-cache"), Some("HIT"), "{cc}");
        assert_eq!(
            r.header("warning"),
            Some("199 - \"cache-control adjusted\""),
            "{cc}"
        );
    }
    assert_eq!(
        up.hits(),
        1,
        "the bounds kept every request off the upstream"
    );
    assert_eq!(
        get("max-age=45").header("warning"),
        None,
        "within bounds: not adjusted"
    );
}

#[test]
fn concurrent_misses_make_one_upstream_request() {
    let up = Upstream::start("c");
    up.set_headers(&[("Cache-Control", "max-age=60")]);
    up.set_delay(Duration::from_millis(500));
    let gw = Gateway::start(&cached_route(&up, "", ""));
    let barrier = Arc::new(Barrier::new(20));
    let url = gw.url("/api/c/popular");
    let handles: Vec<_> = (0..20)
        .map(|_| {
            let (b, url) = (barrier.clone(), url.clone());
            thread::spawn(move || {
                b.wait();
                common::get(&url)
            })
        })
        .collect();
    let bodies: Vec<String> = handles
        .into_iter()
        .map(|h| {
            let r = h.join().unwrap();
            assert_eq!(r.status, 200);
            r.body
        })
        .collect();
    assert_eq!(
        up.hits(),
        1,
        "one upstream request for 20 concurrent misses"
    );
    assert!(bodies.iter().all(|b| b == &bodies[0]));
}

#[test]
fn vary_keeps_variants_apart() {
    let up = Upstream::start("c");
    up.set_headers(&[("Cache-Control", "max-age=60"), ("Vary", "Accept")]);
    let gw = Gateway::start(&cached_route(&up, "", ""));
    let get = |accept: &str| request("GET", &gw.url("/api/c/v"), &[("accept", accept)]);
    let json = get("application/json");
    let text = get("text/plain");
    assert_eq!(up.hits(), 2, "two variants, two fetches");
    let again = get("application/json");
    assert_eq!(again.header("x-cache"), Some("HIT"));
    assert_eq!(again.json()["accept"], "application/json");
    assert_eq!(again.body, json.body);
    assert_eq!(get("text/plain").body, text.body);
    assert_eq!(up.hits(), 2);
}

#[test]
fn equivalent_values_of_a_varying_field_share_an_entry() {
    let up = Upstream::start("c");
    up.set_headers(&[("Cache-Control", "max-age=60"), ("Vary", "Accept-Language")]);
    let gw = Gateway::start(&cached_route(&up, "", ""));
    let get = |lang: &str| {
        request("GET", &gw.url("/api/c/l"), &[("accept-language", lang)])
            .header("x-cache")
            .map(String::from)
    };
    assert_eq!(get("en, de").as_deref(), Some("MISS"));
    // Whitespace and the case of language tags do not make another variant.
    assert_eq!(get(" eN ,   De").as_deref(), Some("HIT"));
    assert_eq!(get("en,de").as_deref(), Some("HIT"));
    // Another order is another preference: another variant.
    assert_eq!(get("de, en").as_deref(), Some("MISS"));
    assert_eq!(up.hits(), 2);
}

#[test]
fn conditional_requests_are_answered_304_from_the_cache() {
    let up = Upstream::start("c");
    up.set_headers(&[
        ("Cache-Control", "max-age=60"),
        ("ETag", "\"v1\""),
        ("Last-Modified", "Mon, 23 Nov 2026 10:00:00 GMT"),
    ]);
    let gw = Gateway::start(&cached_route(&up, "", ""));
    gw.get("/api/c/doc");
    let r = request("GET", &gw.url("/api/c/doc"), &[("if-none-match", "\"v1\"")]);
    assert_eq!(r.status, 304);
    let r = request(
        "GET",
        &gw.url("/api/c/doc"),
        &[("if-modified-since", "Mon, 23 Nov 2026 11:00:00 GMT")],
    );
    assert_eq!(r.status, 304);
    assert_eq!(up.hits(), 1);
}

#[test]
fn stale_entries_stand_in_while_the_upstream_fails_then_the_503_contract_returns() {
    let up = Upstream::start("c");
    up.set_headers(&[("Cache-Control", "max-age=1")]);
    let gw = Gateway::start(&cached_route(
        &up,
        "stale_if_error = \"3s\"",
        "volume_threshold = 2, reset_timeout = \"60s\"",
    ));
    let original = gw.get("/api/c/menu");
    let fetched_at = Instant::now();
    wait_for(Duration::from_millis(1100));

    // The upstream fails: the stale entry answers, and the failures count.
    up.set_status(500);
    for _ in 0..2 {
        let r = gw.get("/api/c/menu");
        assert_eq!(
            (r.status, r.header("x-cache")),
            (200, Some("STALE")),
            "{}",
            r.body
        );
        assert_eq!(r.header("warning"), Some("110 - \"Response is Stale\""));
        assert_eq!(r.body, original.body);
    }
    gw.wait_state("c", "open");

    // The breaker is open: the stale entry answers without asking the upstream.
    let hits = up.hits();
    let r = gw.get("/api/c/menu");
    assert_eq!((r.status, r.header("x-cache")), (200, Some("STALE")));
    assert_eq!(up.hits(), hits);

    // A path never cached gets the breaker's 503.
    let r = gw.get("/api/c/other");
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (503, "circuit_open".into())
    );

    // Past stale_if_error, the 503 contract returns.
    wait_for((fetched_at + Duration::from_millis(4300)).saturating_duration_since(Instant::now()));
    let r = gw.get("/api/c/menu");
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["error"], "circuit_open");
    assert_eq!(r.header("x-fusegate-breaker"), Some("open"));
}

#[test]
fn a_dead_upstream_is_covered_by_the_stale_entry() {
    let up = Upstream::start("c");
    up.set_headers(&[("Cache-Control", "max-age=1")]);
    let gw = Gateway::start(&cached_route(
        &up,
        "stale_if_error = \"60s\"",
        "volume_threshold = 50",
    ));
    let original = gw.get("/api/c/x");
    up.kill();
    wait_for(Duration::from_millis(1100));
    let r = gw.get("/api/c/x");
    assert_eq!((r.status, r.header("x-cache")), (200, Some("STALE")));
    assert_eq!(r.body, original.body);
    // After an upstream failure the gateway does not reuse the client connection, and
    // says so, so the client does not send its next request on it.
    assert_eq!(r.header("connection"), Some("close"));
    gw.wait_window("c", 2);
    assert_eq!(
        gw.breaker("c")["window"]["failures"],
        1,
        "the connect failure counted"
    );
}

#[test]
fn memory_stays_under_max_bytes_after_writing_ten_times_that() {
    let up = Upstream::start("c");
    up.set_headers(&[("Cache-Control", "max-age=600")]);
    up.set_body_size(4096);
    let gw = Gateway::start(&cached_route(
        &up,
        "max_bytes = \"64KiB\"\nmax_object_bytes = \"8KiB\"",
        "",
    ));
    for i in 0..160 {
        assert_eq!(gw.get(&format!("/api/c/blob/{i}")).status, 200);
    }
    let cache = gw.breaker("c")["cache"].clone();
    let bytes = cache["bytes"].as_u64().unwrap();
    assert!(bytes <= 64 * 1024, "{cache}");
    assert!(bytes > 32 * 1024, "the cache is in use: {cache}");
    assert_eq!(cache["max_bytes"], 64 * 1024);
    assert_eq!(
        gw.get("/api/c/blob/159").header("x-cache"),
        Some("HIT"),
        "recent: kept"
    );
    assert_eq!(
        gw.get("/api/c/blob/0").header("x-cache"),
        Some("MISS"),
        "oldest: evicted"
    );

    // An object over max_object_bytes is passed on but not stored.
    up.set_body_size(9000);
    let big = gw.get("/api/c/big");
    assert_eq!((big.status, big.body.len()), (200, 9000));
    assert_ne!(gw.get("/api/c/big").header("x-cache"), Some("HIT"));
}

#[test]
fn a_response_to_a_cookie_without_explicit_freshness_is_never_shared() {
    let up = Upstream::start("c");
    let gw = Gateway::start(&cached_route(
        &up,
        "default_ttl = \"0s\"\nstale_if_error = \"5m\"",
        "volume_threshold = 1",
    ));
    let mine = request("GET", &gw.url("/api/c/me"), &[("cookie", "session=alice")]);
    assert_eq!(mine.status, 200);
    // The upstream fails; the breaker opens.
    up.set_status(500);
    assert_eq!(gw.get("/api/c/other").status, 500);
    gw.wait_state("c", "open");
    // Another client must not get alice's answer while the breaker is open.
    let theirs = gw.get("/api/c/me");
    assert_eq!(theirs.status, 503, "{}", theirs.body);
    assert_ne!(theirs.header("x-cache"), Some("STALE"));
    assert!(!theirs.body.contains("\"upstream\""), "{}", theirs.body);

    // With explicit freshness, the same answer may be shared.
    let up = Upstream::start("c");
    up.set_headers(&[("Cache-Control", "max-age=60")]);
    let gw = Gateway::start(&cached_route(&up, "", ""));
    let first = request("GET", &gw.url("/api/c/me"), &[("cookie", "session=alice")]);
    assert_eq!(first.header("x-cache"), Some("MISS"));
    assert_eq!(gw.get("/api/c/me").header("x-cache"), Some("HIT"));
    assert_eq!(up.hits(), 1);
}

#[test]
fn purge_empties_a_routes_cache_and_metrics_report_its_size() {
    let up = Upstream::start("c");
    up.set_headers(&[("Cache-Control", "max-age=60")]);
    up.set_body_size(1500);
    let gw = Gateway::start_full(
        "token = \"s3cret\"",
        &format!(
            "{}\n[routes.plain]\nupstreams = [\"{}\"]\n",
            cached_route(&up, "max_bytes = \"4KiB\"\nmax_object_bytes = \"2KiB\"", ""),
            up.url()
        ),
        &[],
    );
    for i in 0..4 {
        assert_eq!(
            gw.get(&format!("/api/c/item/{i}")).header("x-cache"),
            Some("MISS")
        );
    }
    // 4 KiB holds two of these entries: the older ones were evicted.
    assert_eq!(gw.get("/api/c/item/3").header("x-cache"), Some("HIT"));
    let entries = gw.metric("fusegate_cache_entries{route=\"c\"}");
    assert!((1.0..=2.0).contains(&entries), "{entries}");
    let bytes = gw.metric("fusegate_cache_bytes{route=\"c\"}");
    assert!(bytes > 1500.0 && bytes <= 4096.0, "{bytes}");
    assert!(gw.metric("fusegate_cache_evictions_total{route=\"c\"}") >= 2.0);

    // Purging takes the operator's token.
    assert_eq!(gw.admin("POST", "/cache/c/purge").status, 401);
    let auth = [("authorization", "Bearer s3cret")];
    let purged = request("POST", &gw.admin_url("/cache/c/purge"), &auth);
    assert_eq!(purged.status, 200, "{}", purged.body);
    assert_eq!(purged.json()["route"], "c");
    assert_eq!(purged.json()["purged"].as_f64(), Some(entries));
    let hits = up.hits();
    assert_eq!(gw.get("/api/c/item/3").header("x-cache"), Some("MISS"));
    assert_eq!(up.hits(), hits + 1, "the purged entry was fetched again");

    for (path, error) in [
        ("/cache/nope/purge", "no_route"),
        ("/cache/plain/purge", "no_cache"),
    ] {
        let r = request("POST", &gw.admin_url(path), &auth);
        assert_eq!(
            (r.status, r.json()["error"].clone()),
            (404, error.into()),
            "{path}"
        );
    }
}

#[test]
fn a_route_whose_cache_is_removed_by_a_reload_frees_it() {
    let up = Upstream::start("c");
    up.set_headers(&[("Cache-Control", "max-age=60")]);
    let gw = Gateway::start(&cached_route(&up, "", ""));
    gw.get("/api/c/a");
    assert_eq!(gw.get("/api/c/a").header("x-cache"), Some("HIT"));
    assert_eq!(gw.metric("fusegate_cache_entries{route=\"c\"}"), 1.0);
    gw.rewrite(&format!("[routes.c]\nupstreams = [\"{}\"]\n", up.url()));
    gw.wait_generation(2);
    assert!(!gw
        .admin("GET", "/metrics")
        .body
        .contains("fusegate_cache_bytes{route=\"c\"}"));
    // Turned on again, the cache starts empty.
    gw.rewrite(&cached_route(&up, "", ""));
    gw.wait_generation(3);
    assert_eq!(gw.get("/api/c/a").header("x-cache"), Some("MISS"));
}

/// Polls with `only-if-cached` until the entry at `path` is no longer fresh (504).
fn wait_stale(gw: &Gateway, path: &str) {
    wait_until(
        &format!("{path} to be stale"),
        Duration::from_secs(10),
        || request("GET", &gw.url(path), &[("cache-control", "only-if-cached")]).status == 504,
    );
}

#[test]
fn an_unsafe_request_that_succeeds_invalidates_what_is_stored_for_its_uri() {
    let up = Upstream::start("c");
    up.set_headers(&[("Cache-Control", "max-age=60"), ("Vary", "Accept")]);
    let gw = Gateway::start(&cached_route(&up, "", ""));
    let get = |path: &str, accept: &str| {
        request("GET", &gw.url(path), &[("accept", accept)])
            .header("x-cache")
            .map(String::from)
    };
    for accept in ["text/a", "text/b"] {
        assert_eq!(get("/api/c/items/1", accept).as_deref(), Some("MISS"));
        assert_eq!(get("/api/c/items/1", accept).as_deref(), Some("HIT"));
    }
    assert_eq!(get("/api/c/items/2", "text/a").as_deref(), Some("MISS"));
    assert_eq!(get("/api/c/other", "text/a").as_deref(), Some("MISS"));

    // A failed POST invalidates nothing.
    up.set_status(500);
    assert_eq!(
        common::send("POST", &gw.url("/api/c/items/1"), &[], Some("{}")).status,
        500
    );
    assert_eq!(get("/api/c/items/1", "text/a").as_deref(), Some("HIT"));

    // A successful one invalidates its URI, every variant, and its same-host Location.
    up.set_status(201);
    up.set_headers(&[("Location", "/api/c/items/2")]);
    let r = common::send("POST", &gw.url("/api/c/items/1"), &[], Some("{}"));
    assert_eq!(r.status, 201);
    up.set_status(200);
    up.set_headers(&[("Cache-Control", "max-age=60"), ("Vary", "Accept")]);
    let hits = up.hits();
    assert_eq!(get("/api/c/items/1", "text/a").as_deref(), Some("MISS"));
    assert_eq!(get("/api/c/items/1", "text/b").as_deref(), Some("MISS"));
    assert_eq!(get("/api/c/items/2", "text/a").as_deref(), Some("MISS"));
    assert_eq!(get("/api/c/other", "text/a").as_deref(), Some("HIT"));
    assert_eq!(up.hits(), hits + 3);

    // DELETE and methods of unknown safety too.
    for method in ["DELETE", "M-SEARCH"] {
        assert_eq!(get("/api/c/items/1", "text/a").as_deref(), Some("HIT"));
        assert_eq!(request(method, &gw.url("/api/c/items/1"), &[]).status, 200);
        assert_eq!(
            get("/api/c/items/1", "text/a").as_deref(),
            Some("MISS"),
            "{method}"
        );
    }
}

#[test]
fn the_age_a_response_arrives_with_counts_toward_its_freshness() {
    let up = Upstream::start("c");
    up.set_headers(&[("Cache-Control", "max-age=60"), ("Age", "100")]);
    let gw = Gateway::start(&cached_route(&up, "", ""));
    assert_eq!(gw.get("/api/c/old").header("x-cache"), Some("MISS"));
    // Already 100 s old with 60 s to live: stale at once, asked again.
    let again = gw.get("/api/c/old");
    assert_ne!(again.header("x-cache"), Some("HIT"));
    assert_eq!(up.hits(), 2);

    up.set_headers(&[("Cache-Control", "max-age=60"), ("Age", "30")]);
    assert_eq!(gw.get("/api/c/young").header("x-cache"), Some("MISS"));
    let hit = gw.get("/api/c/young");
    assert_eq!(hit.header("x-cache"), Some("HIT"));
    let age: u64 = hit.header("age").expect("Age").parse().unwrap();
    assert!(
        age >= 30,
        "the served Age counts from the age at arrival: {age}"
    );
    assert_eq!(up.hits(), 3);
}

#[test]
fn a_304_updates_the_stored_headers() {
    let up = Upstream::start("c");
    up.set_headers(&[
        ("Cache-Control", "max-age=1"),
        ("ETag", "\"v1\""),
        ("X-Version", "1"),
    ]);
    let gw = Gateway::start(&cached_route(&up, "", ""));
    let first = gw.get("/api/c/doc");
    assert_eq!(first.header("x-cache"), Some("MISS"));
    wait_stale(&gw, "/api/c/doc");

    up.set_fault(common::Fault::NotModified);
    up.set_headers(&[
        ("Cache-Control", "max-age=60"),
        ("ETag", "\"v2\""),
        ("X-Version", "2"),
        ("Age", "5"),
    ]);
    let revalidated = gw.get("/api/c/doc");
    assert_eq!(revalidated.status, 200);
    assert_eq!(revalidated.body, first.body, "the stored body");
    assert_eq!(
        up.last_seen()
            .headers
            .get("if-none-match")
            .map(String::as_str),
        Some("\"v1\"")
    );
    // Every field of the 304 replaces the stored one, except those describing the
    // stored body and the validator it matched (ETag).
    for r in [&revalidated, &gw.get("/api/c/doc")] {
        assert_eq!(r.header("x-version"), Some("2"), "{r:?}");
        assert_eq!(r.header("etag"), Some("\"v1\""));
    }
    let hit = gw.get("/api/c/doc");
    assert_eq!(hit.header("x-cache"), Some("HIT"));
    let age: u64 = hit.header("age").expect("Age").parse().unwrap();
    assert!((5..60).contains(&age), "Age refreshed by the 304: {age}");
}

#[test]
fn surrogate_control_speaks_to_the_gateway_before_cache_control() {
    let up = Upstream::start("c");
    // Stored for the gateway, though not for the caches downstream.
    up.set_headers(&[
        ("Cache-Control", "no-store"),
        ("Surrogate-Control", "max-age=60"),
    ]);
    let gw = Gateway::start(&cached_route(&up, "", ""));
    let miss = gw.get("/api/c/s1");
    assert_eq!(miss.header("x-cache"), Some("MISS"));
    assert_eq!(miss.header("surrogate-control"), None, "not forwarded");
    assert_eq!(miss.header("cache-control"), Some("no-store"));
    let hit = gw.get("/api/c/s1");
    assert_eq!(hit.header("x-cache"), Some("HIT"));
    assert_eq!(hit.header("surrogate-control"), None);
    // Not stored by the gateway, though fresh for the others.
    up.set_headers(&[
        ("Cache-Control", "max-age=60"),
        ("Surrogate-Control", "no-store"),
    ]);
    gw.get("/api/c/s2");
    assert_ne!(gw.get("/api/c/s2").header("x-cache"), Some("HIT"));
    assert_eq!(up.hits(), 3);
}

#[test]
fn an_error_answer_says_the_connection_closes() {
    let up = Upstream::start("c");
    up.set_fault(common::Fault::Garbage);
    let gw = Gateway::start(&cached_route(&up, "", ""));
    let r = gw.get("/api/c/broken");
    assert_eq!(r.status, 502);
    assert_eq!(r.header("connection"), Some("close"));
}

#[test]
fn an_invalid_age_makes_a_response_stale() {
    let up = Upstream::start("c");
    let gw = Gateway::start(&cached_route(&up, "", ""));
    // A list is invalid too: `Age` is a singleton, and a list means it was duplicated.
    let invalid = ["abc", "-10", "7200;x=1", "0, 0", "0,7200", "3600, 3600"];
    for (i, age) in invalid.iter().enumerate() {
        up.set_headers(&[("Cache-Control", "max-age=3600"), ("Age", age)]);
        let path = format!("/api/c/age{i}");
        gw.get(&path);
        assert_ne!(gw.get(&path).header("x-cache"), Some("HIT"), "Age: {age}");
    }
    assert_eq!(up.hits(), 2 * invalid.len() as u64);
    up.set_headers(&[("Cache-Control", "max-age=3600"), ("Age", "10")]);
    gw.get("/api/c/valid");
    assert_eq!(gw.get("/api/c/valid").header("x-cache"), Some("HIT"));
}

#[test]
fn last_modified_alone_gives_a_heuristic_lifetime() {
    let up = Upstream::start("c");
    let day_old = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(86_400));
    up.set_headers(&[("Last-Modified", day_old.as_str())]);
    let gw = Gateway::start(&cached_route(&up, "", ""));
    assert_eq!(gw.get("/api/c/lm").header("x-cache"), Some("MISS"));
    let hit = gw.get("/api/c/lm");
    assert_eq!(hit.header("x-cache"), Some("HIT"));
    assert_eq!(up.hits(), 1);
    // Neither freshness nor Last-Modified (and no default_ttl): every request goes up.
    up.set_headers(&[]);
    gw.get("/api/c/none");
    assert_ne!(gw.get("/api/c/none").header("x-cache"), Some("HIT"));
    assert_eq!(up.hits(), 3);
}

#[test]
fn fields_named_in_connection_are_neither_stored_nor_forwarded() {
    let up = Upstream::start("c");
    up.set_headers(&[
        ("Cache-Control", "max-age=60"),
        ("Connection", "x-private"),
        ("X-Private", "secret"),
        ("X-Public", "ok"),
    ]);
    let gw = Gateway::start(&cached_route(&up, "", ""));
    let miss = gw.get("/api/c/h");
    let hit = gw.get("/api/c/h");
    assert_eq!(hit.header("x-cache"), Some("HIT"));
    for r in [&miss, &hit] {
        assert_eq!(r.header("x-private"), None, "{r:?}");
        assert_eq!(r.header("x-public"), Some("ok"));
    }
}

#[test]
fn stale_while_revalidate_answers_at_once_and_revalidates_with_one_request() {
    let up = Upstream::start("c");
    up.set_headers(&[("Cache-Control", "max-age=1, stale-while-revalidate=60")]);
    let gw = Gateway::start(&cached_route(&up, "", ""));
    let n = |r: &common::Resp| r.json()["n"].as_u64();
    let first = gw.get("/api/c/swr");
    assert_eq!(
        (first.header("x-cache"), n(&first)),
        (Some("MISS"), Some(1))
    );
    wait_until("the entry to go stale", Duration::from_secs(10), || {
        let only_cache = [("cache-control", "only-if-cached")];
        request("GET", &gw.url("/api/c/swr"), &only_cache).header("x-cache") != Some("HIT")
    });

    // The upstream is slow now: the stale answers come before its answer does.
    up.set_delay(Duration::from_millis(700));
    let stale: Vec<common::Resp> = (0..4).map(|_| gw.get("/api/c/swr")).collect();
    for r in &stale {
        assert_eq!(
            (r.status, r.header("x-cache")),
            (200, Some("STALE")),
            "{r:?}"
        );
        assert_eq!(n(r), Some(1), "the stored answer");
    }
    // One request revalidates it in the background; then the new answer is served.
    wait_until("the revalidated entry", Duration::from_secs(10), || {
        let r = gw.get("/api/c/swr");
        r.header("x-cache") == Some("HIT") && n(&r) == Some(2)
    });
    assert_eq!(up.hits(), 2, "one upstream request for the revalidation");

    // A client that wants a validated answer is not given the stale one.
    wait_until(
        "the entry to go stale again",
        Duration::from_secs(10),
        || {
            let only_cache = [("cache-control", "only-if-cached")];
            request("GET", &gw.url("/api/c/swr"), &only_cache).header("x-cache") != Some("HIT")
        },
    );
    let hits = up.hits();
    let validated = request(
        "GET",
        &gw.url("/api/c/swr"),
        &[("cache-control", "no-cache")],
    );
    assert_ne!(validated.header("x-cache"), Some("STALE"));
    assert_eq!(up.hits(), hits + 1);
}
