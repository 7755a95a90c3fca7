//! The admin port end to end: endpoints, operator actions, auth, health checks, metrics,
//! and `fusegate status`.

mod common;

use common::{bin, send, wait_until, Gateway, Upstream};
use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

fn one_route(name: &str, upstream: &str, extra: &str) -> String {
    format!("[routes.{name}]\nupstreams = [\"{upstream}\"]\n{extra}\n")
}

#[test]
fn every_endpoint_answers_with_its_json_shape() {
    let up = Upstream::start("shop");
    let gw = Gateway::start_full(
        "token = \"s3cret\"",
        &one_route("shop", &up.url(), "breaker = { volume_threshold = 7 }"),
        &[],
    );
    let r = gw.admin("GET", "/alive");
    assert_eq!(
        (r.status, r.json()),
        (200, serde_json::json!({"alive": true}))
    );
    assert_eq!(r.header("content-type"), Some("application/json"));

    wait_until("/ready", Duration::from_secs(10), || {
        gw.admin("GET", "/ready").status == 200
    });
    assert_eq!(
        gw.admin("GET", "/ready").json(),
        serde_json::json!({"ready": true})
    );

    let h = gw.admin("GET", "/health");
    assert_eq!(
        (h.status, h.json()),
        (200, serde_json::json!({"healthy": true, "probes": []}))
    );

    let info = gw.admin("GET", "/info").json();
    for key in [
        "version",
        "identity",
        "facts",
        "uptime_secs",
        "config_path",
        "config_generation",
        "last_reload",
        "log_level",
        "routes",
    ] {
        assert!(info.get(key).is_some(), "/info lacks {key}: {info}");
    }
    assert_eq!(info["routes"], serde_json::json!(["shop"]));
    assert_eq!(info["config_generation"], 1);
    assert_eq!(info["config_path"], gw.config_path.display().to_string());

    let all = gw.admin("GET", "/breakers").json();
    assert_eq!(all["breakers"].as_array().unwrap().len(), 1);
    let b = gw.admin("GET", "/breakers/shop").json();
    for key in [
        "route",
        "state",
        "mode",
        "since",
        "window",
        "rejected_total",
        "retry_after_secs",
        "upstreams",
        "settings",
    ] {
        assert!(b.get(key).is_some(), "B lacks {key}: {b}");
    }
    assert_eq!(b["state"], "closed");
    assert_eq!(b["mode"], "enforce");
    assert_eq!(b["settings"]["volume_threshold"], 7);
    assert_eq!(b["settings"]["rolling_window"], "10s");
    assert_eq!(b["upstreams"][0]["addr"], up.addr.to_string());
    assert_eq!(b["upstreams"][0]["healthy"], true);
    assert!(
        b["since"].as_str().unwrap().ends_with('Z'),
        "RFC 3339: {}",
        b["since"]
    );

    let missing = gw.admin("GET", "/breakers/nope");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"], "no_route");

    let config = gw.admin("GET", "/config").json();
    assert_eq!(config["admin"]["token"], "***", "the token is redacted");
    assert_eq!(config["routes"]["shop"]["upstreams"][0], up.url());

    assert_eq!(gw.admin("GET", "/nothing-here").status, 404);
    let wrong_method = send(
        "DELETE",
        &gw.admin_url("/alive"),
        &[("authorization", "Bearer s3cret")],
        None,
    );
    assert_eq!(wrong_method.status, 405);
}

#[test]
fn pause_answers_route_paused_without_reaching_the_upstream_and_resume_restores() {
    let up = Upstream::start("paused");
    let gw = Gateway::start(&one_route("paused", &up.url(), ""));
    for _ in 0..3 {
        assert_eq!(gw.get("/api/paused").status, 200);
    }
    let b = gw.admin("POST", "/breakers/paused/pause");
    assert_eq!(b.status, 200);
    assert_eq!(b.json()["state"], "forced_open");

    let hits = up.hits();
    for _ in 0..5 {
        let r = gw.get("/api/paused/x");
        assert_eq!(r.status, 503);
        assert_eq!(r.header("retry-after"), None);
        assert_eq!(r.header("x-fusegate-breaker"), Some("forced_open"));
        assert_eq!(
            r.json(),
            serde_json::json!({"error": "route_paused", "route": "paused", "state": "forced_open"})
        );
    }
    assert_eq!(up.hits(), hits, "a paused route sends nothing upstream");
    assert_eq!(
        gw.admin("GET", "/breakers/paused").json()["rejected_total"],
        5
    );

    let b = gw.admin("POST", "/breakers/paused/resume").json();
    assert_eq!(b["state"], "closed");
    assert_eq!(
        b["window"]["total"], 0,
        "resume starts with an empty window"
    );
    assert_eq!(gw.get("/api/paused").status, 200);
    assert_eq!(up.hits(), hits + 1);
}

#[test]
fn flip_twice_is_a_no_op_and_reset_closes_an_open_breaker() {
    let bad = Upstream::start("bad");
    bad.set_status(500);
    let good = Upstream::start("good");
    let gw = Gateway::start(&format!(
        "{}{}",
        one_route(
            "bad",
            &bad.url(),
            "breaker = { volume_threshold = 2, reset_timeout = \"60s\" }"
        ),
        one_route("good", &good.url(), "")
    ));
    assert_eq!(
        gw.admin("POST", "/breakers/good/flip").json()["state"],
        "forced_open"
    );
    assert_eq!(
        gw.admin("POST", "/breakers/good/flip").json()["state"],
        "closed"
    );
    assert_eq!(gw.get("/api/good").status, 200);

    gw.get("/api/bad");
    gw.get("/api/bad");
    gw.wait_state("bad", "open");
    assert_eq!(gw.get("/api/bad").status, 503);
    let b = gw.admin("POST", "/breakers/bad/reset").json();
    assert_eq!(b["state"], "closed");
    assert_eq!(b["window"]["total"], 0);
    bad.set_status(200);
    assert_eq!(gw.get("/api/bad").status, 200);

    // Without a route, an action applies to every route.
    let all = gw.admin("POST", "/breakers/pause").json();
    let states: Vec<_> = all["breakers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["state"].clone())
        .collect();
    assert_eq!(states, vec!["forced_open", "forced_open"]);
    assert_eq!(gw.get("/api/good").status, 503);
    gw.admin("POST", "/breakers/resume");
    assert_eq!(gw.get("/api/good").status, 200);
    assert_eq!(gw.admin("POST", "/breakers/nope/pause").status, 404);
}

#[test]
fn writes_need_the_bearer_token_and_reads_only_when_asked() {
    let up = Upstream::start("auth");
    let gw = Gateway::start_full("token = \"s3cret\"", &one_route("auth", &up.url(), ""), &[]);
    let url = gw.admin_url("/breakers/auth/pause");
    let r = send("POST", &url, &[], None);
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_eq!(
        send("POST", &url, &[("authorization", "Bearer wrong")], None).status,
        403
    );
    assert_eq!(
        gw.get("/api/auth").status,
        200,
        "refused actions change nothing"
    );
    assert_eq!(
        send("POST", &url, &[("authorization", "Bearer s3cret")], None).status,
        200
    );
    assert_eq!(
        gw.admin("GET", "/breakers").status,
        200,
        "reads are open by default"
    );

    let strict = Gateway::start_full(
        "token = \"s3cret\"\nread_requires_token = true",
        &one_route("auth", &up.url(), ""),
        &[],
    );
    assert_eq!(strict.admin("GET", "/breakers").status, 401);
    let ok = send(
        "GET",
        &strict.admin_url("/breakers"),
        &[("authorization", "Bearer s3cret")],
        None,
    );
    assert_eq!(ok.status, 200);
}

#[test]
fn a_non_loopback_admin_listener_without_a_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("open.toml");
    std::fs::write(
        &path,
        "[admin]\nlisten = \"0.0.0.0:9999\"\n[routes.x]\nupstreams = [\"127.0.0.1:1\"]\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["run", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("admin.token: required when admin.listen is not a loopback address"),
        "{err}"
    );
}

#[test]
fn log_level_changes_at_once() {
    let up = Upstream::start("log");
    let gw = Gateway::start(&one_route("log", &up.url(), ""));
    let r = send(
        "PUT",
        &gw.admin_url("/log-level"),
        &[],
        Some(r#"{"level":"debug"}"#),
    );
    assert_eq!(
        (r.status, r.json()),
        (200, serde_json::json!({"level": "debug"}))
    );
    assert_eq!(gw.admin("GET", "/info").json()["log_level"], "debug");
    let bad = send(
        "PUT",
        &gw.admin_url("/log-level"),
        &[],
        Some(r#"{"level":"loud"}"#),
    );
    assert_eq!(bad.status, 400);
    assert_eq!(gw.admin("GET", "/info").json()["log_level"], "debug");
}

#[test]
fn a_dead_upstream_leaves_the_rotation_and_health_reports_it() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let gw = Gateway::start(&format!(
        "[routes.pool]\nupstreams = [\"{}\", \"{}\"]\nhealth_check = {{ interval = \"100ms\", timeout = \"500ms\", unhealthy_threshold = 2, healthy_threshold = 1 }}\n",
        a.url(),
        b.url()
    ));
    for _ in 0..10 {
        assert_eq!(gw.get("/api/pool").status, 200);
    }
    assert_eq!((a.hits(), b.hits()), (5, 5));

    b.kill();
    let b_name = format!("pool/{}", b.addr);
    wait_until(
        "b to be reported unhealthy",
        Duration::from_secs(10),
        || {
            let h = gw.admin("GET", "/health");
            h.status == 503
                && h.json()["probes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["name"] == b_name.as_str() && p["healthy"] == false)
        },
    );
    let health = gw.admin("GET", "/health").json();
    let probes = health["probes"].as_array().unwrap();
    let dead = probes
        .iter()
        .find(|p| p["name"] == b_name.as_str())
        .unwrap();
    assert_eq!(dead["error"], "connection refused");
    assert!(dead["latency_ms"].is_u64());
    let alive = probes
        .iter()
        .find(|p| p["name"] != b_name.as_str())
        .unwrap();
    assert_eq!(alive["healthy"], true);

    let b_hits = b.hits();
    let a_hits = a.hits();
    for _ in 0..10 {
        assert_eq!(gw.get("/api/pool").status, 200);
    }
    assert_eq!(b.hits(), b_hits, "the dead upstream gets nothing");
    assert_eq!(a.hits(), a_hits + 10);
    let upstreams = gw.admin("GET", "/breakers/pool").json()["upstreams"].clone();
    assert_eq!(
        upstreams
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| u["healthy"] == false)
            .count(),
        1
    );
}

#[test]
fn a_route_with_no_healthy_upstream_answers_503_without_trying() {
    let up = Upstream::start("lonely");
    up.set_status(500);
    let gw = Gateway::start(&one_route(
        "lonely",
        &up.url(),
        "health_check = { path = \"/healthz\", interval = \"100ms\", timeout = \"500ms\", unhealthy_threshold = 1 }",
    ));
    wait_until("the HTTP probe to fail", Duration::from_secs(10), || {
        gw.admin("GET", "/health").status == 503
    });
    let probe = gw.admin("GET", "/health").json()["probes"][0].clone();
    assert!(probe["error"].as_str().unwrap().contains("500"), "{probe}");
    assert_eq!(up.last_seen().target, "/healthz");
    let hits = up.hits();
    let r = gw.get("/api/lonely");
    assert_eq!(r.status, 503);
    assert_eq!(
        r.json(),
        serde_json::json!({"error": "no_healthy_upstream", "route": "lonely"})
    );
    // Only probes reached the upstream, and they all asked for /healthz.
    assert!(up.hits() >= hits);
    assert_eq!(up.last_seen().target, "/healthz");
}

/// Parses Prometheus text into `name{labels}` -> value.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("series value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        out.insert(series.to_string(), value);
    }
    out
}

#[test]
fn metrics_count_what_the_test_sent() {
    let up = Upstream::start("m");
    let gw = Gateway::start(&one_route(
        "m",
        &up.url(),
        "breaker = { volume_threshold = 4, error_threshold_percentage = 50, reset_timeout = \"60s\" }",
    ));
    for _ in 0..3 {
        gw.get("/api/m");
    }
    up.set_status(500);
    for _ in 0..3 {
        gw.get("/api/m");
    }
    // 3 ok + 3 failed = 50 % of 6 >= volume 4: open. Then 2 rejections.
    gw.wait_state("m", "open");
    for _ in 0..2 {
        assert_eq!(gw.get("/api/m").status, 503);
    }
    // Metrics are counted as each request completes, just after its response.
    wait_until("all 8 requests counted", Duration::from_secs(10), || {
        gw.admin("GET", "/metrics")
            .body
            .contains("fusegate_request_duration_seconds_count{route=\"m\"} 8")
    });
    let r = gw.admin("GET", "/metrics");
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let m = parse_metrics(&r.body);
    let get = |k: &str| {
        m.get(k)
            .copied()
            .unwrap_or_else(|| panic!("no series {k} in\n{}", r.body))
    };
    assert_eq!(
        get(r#"fusegate_requests_total{code="200",proto="http1",route="m"}"#),
        3.0
    );
    assert_eq!(
        get(r#"fusegate_requests_total{code="500",proto="http1",route="m"}"#),
        3.0
    );
    assert_eq!(
        get(r#"fusegate_requests_total{code="503",proto="http1",route="m"}"#),
        2.0
    );
    assert_eq!(
        get(r#"fusegate_request_duration_seconds_count{route="m"}"#),
        8.0
    );
    assert_eq!(get(r#"fusegate_breaker_state{route="m"}"#), 1.0);
    assert_eq!(
        get(r#"fusegate_breaker_transitions_total{route="m",to="open"}"#),
        1.0
    );
    assert_eq!(
        get(r#"fusegate_rejections_total{reason="circuit_open",route="m"}"#),
        2.0
    );
    assert_eq!(
        get(r#"fusegate_upstream_failures_total{kind="status",route="m"}"#),
        3.0
    );
    assert_eq!(get("fusegate_config_generation"), 1.0);
    assert_eq!(get("fusegate_nats_connected"), 0.0);
}

#[test]
fn status_prints_the_breaker_table() {
    let up = Upstream::start("st");
    up.set_status(500);
    let gw = Gateway::start(&format!(
        "{}{}",
        one_route(
            "st",
            &up.url(),
            "breaker = { volume_threshold = 2, reset_timeout = \"60s\" }"
        ),
        one_route("calm", &up.url(), "")
    ));
    gw.get("/api/st");
    gw.get("/api/st");
    gw.wait_state("st", "open");
    let out = Command::new(bin())
        .args(["status", "--admin", &gw.admin_url("")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("ROUTE") && lines[0].contains("STATE"),
        "{text}"
    );
    let st = lines.iter().find(|l| l.starts_with("st ")).expect("st row");
    assert!(
        st.contains("open") && st.contains("100.0") && st.contains("2/2"),
        "{st}"
    );
    assert!(!text.contains('\x1b'), "no colour when piped");

    let json = Command::new(bin())
        .args(["status", "--json", "--admin", &gw.admin_url("")])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["breakers"].as_array().unwrap().len(), 2);

    let dead = Command::new(bin())
        .args([
            "status",
            "--admin",
            &format!("http://127.0.0.1:{}", common::free_port()),
        ])
        .output()
        .unwrap();
    assert_eq!(dead.status.code(), Some(1));
}
