//! Routing and proxying end to end: prefixes, path checks, forwarding headers, request ids,
//! round robin.

mod common;

use common::{raw_get, request, Gateway, Upstream};

#[test]
fn the_longest_prefix_wins_and_unknown_paths_get_a_json_404() {
    let short = Upstream::start("short");
    let long = Upstream::start("long");
    let gw = Gateway::start(&format!(
        "[routes.catalog]\nupstreams = [\"{}\"]\n\n[routes.catalog-admin]\nupstreams = [\"{}\"]\nprefix = \"/api/catalog/admin\"\n",
        short.url(),
        long.url()
    ));
    assert!(gw
        .get("/api/catalog")
        .body
        .contains("\"upstream\":\"short\""));
    assert!(gw
        .get("/api/catalog/items/1")
        .body
        .contains("\"upstream\":\"short\""));
    assert!(gw
        .get("/api/catalog/admin/users")
        .body
        .contains("\"upstream\":\"long\""));
    assert!(gw
        .get("/api/catalog/administrator")
        .body
        .contains("\"upstream\":\"short\""));

    let r = gw.get("/api/catalogue");
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.header("x-request-id").is_some());
    assert_eq!(
        r.json(),
        serde_json::json!({"error": "no_route", "path": "/api/catalogue"})
    );
}

#[test]
fn path_attacks_are_refused_before_routing() {
    let up = Upstream::start("target");
    let gw = Gateway::start(&format!("[routes.files]\nupstreams = [\"{}\"]\n", up.url()));
    for target in [
        "/api/files/../secret",
        "/api/files/./x",
        "/api/files/%2e%2e/secret",
        "/api/files/%2E%2e/secret",
        "/api/files/.%2e/secret",
        "/api/files/a%2fb",
        "/api/files/a%2Fb",
        "/api/../api/files/x",
    ] {
        let (status, text) = raw_get(gw.port, target);
        assert_eq!(status, 400, "{target}: {text}");
        assert!(
            text.contains("\"error\":\"invalid_path\""),
            "{target}: {text}"
        );
        assert!(text
            .to_ascii_lowercase()
            .contains("content-type: application/json"));
    }
    assert_eq!(up.hits(), 0, "nothing reached the upstream");
    let (status, _) = raw_get(gw.port, "/api/files/a.b/c%20d?x=..");
    assert_eq!(status, 200, "dots inside names and in the query are fine");
}

#[test]
fn strip_prefix_and_host_header_shape_the_upstream_request() {
    let up = Upstream::start("plain");
    let gw = Gateway::start(&format!(
        "[routes.stripped]\nupstreams = [\"{0}\"]\nstrip_prefix = true\nhost_header = \"upstream\"\n\n[routes.kept]\nupstreams = [\"{0}\"]\n",
        up.url()
    ));
    gw.get("/api/stripped/items/7?full=1");
    let seen = up.last_seen();
    assert_eq!(seen.target, "/items/7?full=1");
    assert_eq!(seen.headers["host"], up.addr.to_string());

    gw.get("/api/stripped");
    assert_eq!(up.last_seen().target, "/");

    request(
        "GET",
        &gw.url("/api/kept/items"),
        &[("host", "shop.example")],
    );
    let seen = up.last_seen();
    assert_eq!(seen.target, "/api/kept/items");
    assert_eq!(seen.headers["host"], "shop.example");
}

#[test]
fn forwarding_headers_and_request_ids_are_added() {
    let up = Upstream::start("echo");
    let gw = Gateway::start(&format!("[routes.echo]\nupstreams = [\"{}\"]\n", up.url()));

    let r = request(
        "GET",
        &gw.url("/api/echo"),
        &[
            ("host", "edge.example"),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-request-id", "req-42"),
        ],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-request-id"), Some("req-42"));
    let seen = up.last_seen();
    // The peer is no trusted proxy: its X-Forwarded-For is replaced, not appended to.
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-forwarded-host"], "edge.example");
    assert_eq!(seen.headers["x-request-id"], "req-42");

    let r = gw.get("/api/echo");
    let generated = r
        .header("x-request-id")
        .expect("an id is generated")
        .to_string();
    assert_eq!(generated.len(), 32);
    assert_eq!(up.last_seen().headers["x-request-id"], generated);
    assert_eq!(up.last_seen().headers["x-forwarded-for"], "127.0.0.1");
    assert_ne!(
        gw.get("/api/echo").header("x-request-id"),
        Some(generated.as_str())
    );
}

#[test]
fn requests_are_spread_round_robin_over_the_upstreams() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let gw = Gateway::start(&format!(
        "[routes.pool]\nupstreams = [\"{}\", \"{}\"]\n",
        a.url(),
        b.url()
    ));
    for _ in 0..10 {
        assert_eq!(gw.get("/api/pool").status, 200);
    }
    assert_eq!((a.hits(), b.hits()), (5, 5));
}

#[test]
fn post_bodies_and_methods_reach_the_upstream() {
    let up = Upstream::start("writer");
    let gw = Gateway::start(&format!(
        "[routes.writer]\nupstreams = [\"{}\"]\n",
        up.url()
    ));
    let r = common::request("DELETE", &gw.url("/api/writer/7"), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(up.last_seen().method, "DELETE");
    let resp = ureq::post(&gw.url("/api/writer"))
        .send_string("{\"name\":\"x\"}")
        .expect("post");
    assert_eq!(resp.status(), 200);
    let seen = up.last_seen();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.headers["content-length"], "12");
}

#[test]
fn forwarding_headers_are_believed_from_trusted_proxies_only() {
    let up = Upstream::start("echo");
    let routes = format!(
        "[routes.echo]\nupstreams = [\"{}\"]\nrate_limit = {{ requests_per_second = 1, burst = 1, key = \"client_ip\" }}\n",
        up.url()
    );
    let forwarded = [
        ("x-forwarded-for", "1.2.3.4"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "spoofed.example"),
        ("forwarded", "for=1.2.3.4"),
    ];

    let untrusted = Gateway::start(&routes);
    assert_eq!(
        request("GET", &untrusted.url("/api/echo"), &forwarded).status,
        200
    );
    let seen = up.last_seen();
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(
        seen.headers["x-forwarded-host"],
        format!("127.0.0.1:{}", untrusted.port)
    );
    assert!(
        !seen.headers.contains_key("forwarded"),
        "{:?}",
        seen.headers
    );
    // A client cannot pick its own rate-limit bucket.
    let other = [("x-forwarded-for", "5.6.7.8")];
    assert_eq!(
        request("GET", &untrusted.url("/api/echo"), &other).status,
        429
    );

    let trusted = Gateway::start_with_env(
        &routes,
        &[("FUSEGATE_SERVER__TRUSTED_PROXIES", "[\"127.0.0.0/8\"]")],
    );
    assert_eq!(
        request("GET", &trusted.url("/api/echo"), &forwarded).status,
        200
    );
    let seen = up.last_seen();
    assert_eq!(seen.headers["x-forwarded-for"], "1.2.3.4, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    assert_eq!(seen.headers["x-forwarded-host"], "spoofed.example");
    assert_eq!(seen.headers["forwarded"], "for=1.2.3.4");
    // The client named by the trusted proxy has its own bucket.
    assert_eq!(
        request("GET", &trusted.url("/api/echo"), &forwarded).status,
        429
    );
    assert_eq!(
        request("GET", &trusted.url("/api/echo"), &other).status,
        200
    );
}
