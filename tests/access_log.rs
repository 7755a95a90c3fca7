//! The access log and W3C trace context end to end: a real gateway writing to a file
//! or to its standard output, a real upstream that records what reached it.

mod common;

use common::{check_config, request, wait_until, Gateway, Upstream};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// The JSON lines of an access-log file, once it has at least `n`.
fn lines_at_least(path: &Path, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    wait_until(
        &format!("{n} access-log lines in {}", path.display()),
        Duration::from_secs(10),
        || {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            out = text
                .lines()
                .map(|l| serde_json::from_str(l).expect("a JSON line"))
                .collect();
            out.len() >= n
        },
    );
    out
}

fn with_id<'a>(lines: &'a [Value], id: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["request_id"] == id)
        .unwrap_or_else(|| panic!("no line for request {id} in {lines:#?}"))
}

#[test]
fn every_outcome_gets_a_json_line_with_every_field() {
    let ok = Upstream::start("ok");
    let bad = Upstream::start("bad");
    bad.set_status(500);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let gw = Gateway::start(&format!(
        "[access_log]\npath = \"{}\"\nformat = \"json\"\n\n\
         [routes.ok]\nupstreams = [\"{}\"]\n\n\
         [routes.bad]\nupstreams = [\"{}\"]\n\n\
         [routes.limited]\nupstreams = [\"{}\"]\nrate_limit = {{ requests_per_second = 1, burst = 1 }}\n",
        log.display(),
        ok.url(),
        bad.url(),
        ok.url()
    ));
    let success = request(
        "GET",
        &gw.url("/api/ok/x?q=1"),
        &[("x-request-id", "req-ok")],
    );
    assert_eq!(success.status, 200);
    let failed = request("GET", &gw.url("/api/bad/y"), &[("x-request-id", "req-bad")]);
    assert_eq!(failed.status, 500);
    let missing = request("GET", &gw.url("/nowhere"), &[("x-request-id", "req-404")]);
    assert_eq!(missing.status, 404);
    request("GET", &gw.url("/api/limited"), &[]);
    let limited = request(
        "GET",
        &gw.url("/api/limited"),
        &[("x-request-id", "req-429")],
    );
    assert_eq!(limited.status, 429);
    assert_eq!(gw.admin("POST", "/breakers/ok/pause").status, 200);
    let paused = request("GET", &gw.url("/api/ok/x"), &[("x-request-id", "req-503")]);
    assert_eq!(paused.status, 503);

    let lines = lines_at_least(&log, 6);
    let l = with_id(&lines, "req-ok");
    assert_eq!(l["method"], "GET");
    assert_eq!(l["path"], "/api/ok/x?q=1");
    assert_eq!(l["proto"], "HTTP/1.1");
    assert_eq!(l["status"], 200);
    assert_eq!(l["route"], "ok");
    assert_eq!(l["upstream"], ok.addr.to_string());
    assert_eq!(l["client"], "127.0.0.1");
    assert_eq!(l["breaker"], "closed");
    assert_eq!(l["outcome"], "success");
    assert_eq!(l["cache"], Value::Null);
    assert!(l["upstream_ms"].is_u64(), "{l}");
    assert!(l["total_ms"].as_f64().is_some_and(|t| t >= 0.0), "{l}");
    assert_eq!(l["bytes_in"], 0);
    assert_eq!(l["bytes_out"].as_u64(), Some(success.body.len() as u64));
    let time = l["time"].as_str().unwrap();
    assert!(humantime::parse_rfc3339(time).is_ok(), "{time}");

    let l = with_id(&lines, "req-bad");
    assert_eq!(
        (l["status"].as_u64(), l["outcome"].as_str()),
        (Some(500), Some("status"))
    );
    let l = with_id(&lines, "req-404");
    assert_eq!(l["outcome"], "client_error");
    assert_eq!(
        (l["route"].clone(), l["breaker"].clone()),
        (Value::Null, Value::Null)
    );
    let l = with_id(&lines, "req-429");
    assert_eq!(
        (l["status"].as_u64(), l["outcome"].as_str()),
        (Some(429), Some("rejected"))
    );
    let l = with_id(&lines, "req-503");
    assert_eq!(
        (
            l["status"].as_u64(),
            l["outcome"].as_str(),
            l["breaker"].as_str()
        ),
        (Some(503), Some("rejected"), Some("forced_open"))
    );
    assert_eq!(l["upstream"], Value::Null);
    // The admin port's requests are not in it.
    assert!(lines.iter().all(|l| l["path"] != "/breakers/ok/pause"));
    assert_eq!(gw.metric("fusegate_access_log_dropped_total"), 0.0);
}

#[test]
fn combined_lines_go_to_stdout_with_route_and_request_id() {
    let up = Upstream::start("ok");
    let gw = Gateway::start(&format!(
        "[access_log]\nformat = \"combined\"\n\n[routes.ok]\nupstreams = [\"{}\"]\n",
        up.url()
    ));
    let r = request(
        "GET",
        &gw.url("/api/ok/page"),
        &[
            ("x-request-id", "cmb-1"),
            ("user-agent", "probe/1.0"),
            ("referer", "http://127.0.0.1/from"),
        ],
    );
    assert_eq!(r.status, 200);
    let mut line = String::new();
    wait_until("a combined line on stdout", Duration::from_secs(10), || {
        line = gw
            .stdout()
            .lines()
            .find(|l| l.contains("cmb-1"))
            .unwrap_or_default()
            .to_string();
        !line.is_empty()
    });
    let (head, rest) = line.split_once(" - - [").expect("combined prefix");
    assert_eq!(head, "127.0.0.1");
    let (time, rest) = rest.split_once("] ").expect("time");
    assert!(time.ends_with(" +0000") && time.len() == 26, "{time}");
    assert_eq!(
        rest,
        format!(
            "\"GET /api/ok/page HTTP/1.1\" 200 {} \"http://127.0.0.1/from\" \"probe/1.0\" \"ok\" \"cmb-1\"",
            r.body.len()
        )
    );
}

#[test]
fn sigusr1_reopens_the_file_by_path_as_logrotate_expects() {
    let up = Upstream::start("ok");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let rotated = dir.path().join("access.log.1");
    let gw = Gateway::start(&format!(
        "[access_log]\npath = \"{}\"\n\n[routes.ok]\nupstreams = [\"{}\"]\n",
        log.display(),
        up.url()
    ));
    request("GET", &gw.url("/api/ok/a"), &[("x-request-id", "before")]);
    lines_at_least(&log, 1);
    std::fs::rename(&log, &rotated).unwrap();
    // Until the signal, lines still go to the renamed file.
    request("GET", &gw.url("/api/ok/b"), &[("x-request-id", "renamed")]);
    lines_at_least(&rotated, 2);
    gw.signal("USR1");
    // Bounded: the reopen happens on the writer's next wake-up.
    wait_until("the reopened file", Duration::from_secs(10), || {
        request("GET", &gw.url("/api/ok/c"), &[("x-request-id", "after")]);
        log.exists()
            && std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("after")
    });
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(
        old.contains("\"before\"") && old.contains("\"renamed\""),
        "{old}"
    );
    assert!(
        gw.stderr().contains("access log reopened"),
        "{}",
        gw.stderr()
    );
}

#[test]
fn an_unwritable_path_fails_check_and_a_reload_keeps_the_old_log() {
    let up = Upstream::start("ok");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("missing-dir").join("access.log");
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        format!(
            "[access_log]\npath = \"{}\"\n\n[routes.ok]\nupstreams = [\"{}\"]\n",
            bad.display(),
            up.url()
        ),
    )
    .unwrap();
    let (code, err) = check_config(&cfg);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("access_log.path"), "{err}");

    let good = dir.path().join("access.log");
    let routes = |p: &Path| {
        format!(
            "[access_log]\npath = \"{}\"\n\n[routes.ok]\nupstreams = [\"{}\"]\n",
            p.display(),
            up.url()
        )
    };
    let gw = Gateway::start(&routes(&good));
    gw.rewrite(&routes(&bad));
    let r = gw.admin("POST", "/reload");
    assert_eq!(r.status, 422);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap_or("")
            .contains("access_log.path"),
        "{:?}",
        r.json()
    );
    request("GET", &gw.url("/api/ok/kept"), &[("x-request-id", "kept")]);
    let lines = lines_at_least(&good, 1);
    with_id(&lines, "kept");
}

#[test]
fn trace_context_is_continued_or_started_and_always_sent_upstream() {
    let up = Upstream::start("ok");
    let gw = Gateway::start(&format!("[routes.ok]\nupstreams = [\"{}\"]\n", up.url()));
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = format!("00-{trace}-00f067aa0ba902b7-01");
    request(
        "GET",
        &gw.url("/api/ok/t"),
        &[
            ("traceparent", &parent),
            ("tracestate", "rojo=00f067aa0ba902b7"),
        ],
    );
    let seen = up.last_seen();
    let tp = seen
        .headers
        .get("traceparent")
        .expect("traceparent upstream");
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    assert_eq!((parts[0], parts[1], parts[3]), ("00", trace, "01"));
    assert_ne!(
        parts[2], "00f067aa0ba902b7",
        "the gateway's own span is the parent"
    );
    assert_eq!(
        seen.headers.get("tracestate").map(String::as_str),
        Some("rojo=00f067aa0ba902b7")
    );

    // Malformed: a new trace, and the garbage is not forwarded.
    request(
        "GET",
        &gw.url("/api/ok/t"),
        &[("traceparent", "00-xyz-abc-01"), ("tracestate", "rojo=1")],
    );
    let seen = up.last_seen();
    let tp = seen
        .headers
        .get("traceparent")
        .expect("traceparent upstream");
    assert_eq!(tp.len(), 55, "{tp}");
    assert!(!tp.contains("xyz"));
    assert_eq!(seen.headers.get("tracestate"), None);

    // None: started at the gateway.
    request("GET", &gw.url("/api/ok/t"), &[]);
    let first = up
        .last_seen()
        .headers
        .get("traceparent")
        .cloned()
        .expect("traceparent");
    request("GET", &gw.url("/api/ok/t"), &[]);
    let second = up
        .last_seen()
        .headers
        .get("traceparent")
        .cloned()
        .expect("traceparent");
    assert_eq!(first.len(), 55);
    assert_ne!(first[3..35], second[3..35], "each request its own trace");

    // A huge tracestate is not passed on.
    let huge = format!("k={}", "v".repeat(600));
    request(
        "GET",
        &gw.url("/api/ok/t"),
        &[("traceparent", &parent), ("tracestate", &huge)],
    );
    assert_eq!(up.last_seen().headers.get("tracestate"), None);
}

#[test]
fn a_correlation_id_is_forwarded_and_stands_in_for_the_request_id() {
    let up = Upstream::start("ok");
    let gw = Gateway::start(&format!("[routes.ok]\nupstreams = [\"{}\"]\n", up.url()));
    let r = request(
        "GET",
        &gw.url("/api/ok/c"),
        &[("x-correlation-id", "corr-7")],
    );
    assert_eq!(r.header("x-request-id"), Some("corr-7"));
    let seen = up.last_seen();
    assert_eq!(
        seen.headers.get("x-correlation-id").map(String::as_str),
        Some("corr-7")
    );
    assert_eq!(
        seen.headers.get("x-request-id").map(String::as_str),
        Some("corr-7")
    );
    // An X-Request-Id wins over it.
    let r = request(
        "GET",
        &gw.url("/api/ok/c"),
        &[("x-correlation-id", "corr-8"), ("x-request-id", "req-8")],
    );
    assert_eq!(r.header("x-request-id"), Some("req-8"));
    assert_eq!(
        up.last_seen()
            .headers
            .get("x-correlation-id")
            .map(String::as_str),
        Some("corr-8")
    );
}

#[test]
fn an_upstream_outage_is_a_few_warn_lines_not_one_error_per_request() {
    let up = Upstream::start("down");
    let gw = Gateway::start(&format!(
        "[routes.down]\nupstreams = [\"{}\"]\nbreaker = {{ volume_threshold = 1000 }}\n",
        up.url()
    ));
    up.kill();
    for _ in 0..60 {
        assert_eq!(gw.get("/api/down/x").status, 502);
    }
    let mut log = String::new();
    wait_until("an upstream failure line", Duration::from_secs(10), || {
        log = gw.stderr();
        log.contains("route down: upstream")
    });
    assert!(!log.contains("ERROR"), "{log}");
    let lines = log
        .lines()
        .filter(|l| l.contains("route down: upstream"))
        .count();
    assert!(
        (1..60).contains(&lines),
        "{lines} lines for 60 failures:\n{log}"
    );
    assert!(log.contains("(connect)"), "{log}");
}
