//! Hostile and careless clients against a real gateway: none of them can make a route's
//! breaker blame a healthy upstream, hold its half-open probe, or slip past the path
//! check. Each test plays one attack end to end and asserts what the breaker recorded,
//! what reached the upstream and what the client got.

mod common;

use common::{get, raw_get, raw_request, wait_until, Fault, Gateway, Upstream};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

fn route(up: &Upstream, breaker: &str) -> String {
    format!(
        "[routes.u]\nupstreams = [\"{}\"]\nbreaker = {{ {breaker} }}\n",
        up.url()
    )
}

/// Asserts the route's window is empty and its breaker closed.
fn assert_untouched(gw: &Gateway) {
    let b = gw.breaker("u");
    assert_eq!(b["state"], "closed", "{b}");
    assert_eq!(b["window"]["total"], 0, "{b}");
}

/// Asserts the route's breaker is closed with `n` of `counter` (`failures`, `slow`) in
/// its window.
fn assert_closed_with(gw: &Gateway, counter: &str, n: u64) {
    let b = gw.breaker("u");
    assert_eq!(
        (b["state"].as_str(), b["window"][counter].as_u64()),
        (Some("closed"), Some(n)),
        "{b}"
    );
}

/// A client connection to `port` whose reads give up after ten seconds.
fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    s
}

/// Opens the route's breaker with failing requests, then waits until it admits a probe.
fn open_then_half_open(gw: &Gateway, up: &Upstream, failures: usize) {
    up.set_status(500);
    for _ in 0..failures {
        assert_eq!(gw.get("/api/u/x").status, 500);
    }
    gw.wait_state("u", "open");
    up.set_status(200);
    gw.wait_state("u", "half_open");
}

#[test]
fn stalled_small_uploads_get_408_and_never_reach_the_upstream_or_the_breaker() {
    let up = Upstream::start("u");
    let gw = Gateway::start_with_env(
        &route(&up, "volume_threshold = 2, timeout = \"1s\""),
        &[("FUSEGATE_SERVER__BODY_TIMEOUT", "2s")],
    );
    let port = gw.port;
    let stalls: Vec<_> = (0..3)
        .map(|_| {
            thread::spawn(move || {
                raw_request(
                    port,
                    b"POST /api/u/items HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n{\"half\":",
                )
            })
        })
        .collect();
    for s in stalls {
        let (status, text) = s.join().expect("stalled client");
        assert_eq!(status, 408, "{text}");
        assert!(
            text.contains(r#"{"error":"request_timeout","route":"u"}"#),
            "{text}"
        );
    }
    assert_eq!(
        up.hits(),
        0,
        "a half-sent request never reaches the upstream"
    );
    assert_untouched(&gw);
    assert_eq!(gw.get("/api/u/x").status, 200);
    assert!(!gw.stderr().contains("ERROR"), "{}", gw.stderr());
}

#[test]
fn a_stalled_large_upload_is_the_clients_408_not_an_upstream_timeout() {
    let up = Upstream::start("u");
    let gw = Gateway::start_with_env(
        &route(&up, "volume_threshold = 1, timeout = \"1s\""),
        &[("FUSEGATE_SERVER__BODY_TIMEOUT", "2s")],
    );
    // Larger than what is read whole first: this body streams to the upstream.
    let mut request =
        b"POST /api/u/upload HTTP/1.1\r\nHost: a\r\nContent-Length: 200000\r\n\r\n".to_vec();
    request.extend(std::iter::repeat_n(b'x', 100_000));
    let (status, text) = raw_request(gw.port, &request);
    assert_eq!(status, 408, "{text}");
    assert!(text.contains("request_timeout"), "{text}");
    assert_eq!(up.hits(), 0, "the upstream never got a whole request");
    // One failure would have opened it (volume_threshold = 1).
    assert_untouched(&gw);
    assert_eq!(gw.get("/api/u/x").status, 200);
}

#[test]
fn a_reload_that_reshapes_the_window_while_a_probe_runs_does_not_strand_half_open() {
    let up = Upstream::start("u");
    let breaker = |window: &str, buckets: u32| {
        format!(
            "volume_threshold = 2, reset_timeout = \"1s\", half_open_probes = 1, rolling_window = \"{window}\", rolling_buckets = {buckets}"
        )
    };
    let gw = Gateway::start(&route(&up, &breaker("10s", 10)));
    open_then_half_open(&gw, &up, 2);
    up.set_delay(Duration::from_millis(1500));
    let url = gw.url("/api/u/probe");
    let probe = thread::spawn(move || get(&url).status);
    wait_until(
        "the probe to reach the upstream",
        Duration::from_secs(5),
        || up.hits() == 3,
    );
    gw.rewrite(&route(&up, &breaker("4s", 4)));
    gw.wait_generation(2);
    assert_eq!(probe.join().expect("probe"), 200);
    up.set_delay(Duration::ZERO);
    gw.wait_state("u", "closed");
    for _ in 0..5 {
        assert_eq!(gw.get("/api/u/x").status, 200);
    }
    assert_eq!(gw.breaker("u")["settings"]["rolling_window"], "4s");
}

#[test]
fn a_long_response_body_does_not_hold_the_half_open_probe() {
    let up = Upstream::start("u");
    let gw = Gateway::start(&route(
        &up,
        "volume_threshold = 2, reset_timeout = \"1s\", half_open_probes = 1",
    ));
    open_then_half_open(&gw, &up, 2);
    // The probe's answer starts at once and its body takes two seconds.
    up.set_fault(Fault::SlowBody);
    let done = Arc::new(AtomicBool::new(false));
    let url = gw.url("/api/u/download");
    let probe = {
        let done = done.clone();
        thread::spawn(move || {
            let r = get(&url);
            done.store(true, Ordering::SeqCst);
            r
        })
    };
    gw.wait_state("u", "closed");
    assert!(
        !done.load(Ordering::SeqCst),
        "the breaker closed only after the whole body was sent"
    );
    let r = probe.join().expect("probe");
    assert_eq!((r.status, r.body.as_str()), (200, "xxxxxxxxxx"));
}

#[test]
fn a_streamed_upload_never_takes_the_half_open_probe() {
    let up = Upstream::start("u");
    let gw = Gateway::start(&route(
        &up,
        "volume_threshold = 2, reset_timeout = \"1s\", half_open_probes = 1",
    ));
    open_then_half_open(&gw, &up, 2);
    // A chunked upload could stream for as long as its client likes: it is no probe.
    let mut s = connect(gw.port);
    s.write_all(
        b"POST /api/u/up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    )
    .expect("start the upload");
    let head = read_head(&mut s).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 503"), "{head}");
    assert!(head.contains("x-fusegate-breaker: half_open"), "{head}");
    // The probe slot is still free: the next plain request is the probe, and closes it.
    assert_eq!(gw.get("/api/u/x").status, 200);
    gw.wait_state("u", "closed");
}

#[test]
fn a_websocket_upgrade_is_a_success_and_outlives_the_upstream_timeout() {
    let up = Upstream::start("u");
    let gw = Gateway::start(&route(&up, "volume_threshold = 1, timeout = \"1s\""));
    up.set_fault(Fault::Upgrade);
    let mut ws = connect(gw.port);
    ws.write_all(
        b"GET /api/u/ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .expect("send upgrade");
    let head = read_head(&mut ws);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    gw.wait_window("u", 1);
    assert_eq!(gw.breaker("u")["window"]["failures"], 0);
    // Idle for longer than the route's timeout: the connection is bounded by idleness
    // (`server.keepalive_timeout`), not by `timeout`.
    thread::sleep(Duration::from_millis(1_500));
    ws.write_all(b"ping")
        .expect("send on the upgraded connection");
    let mut echo = [0u8; 4];
    ws.read_exact(&mut echo).expect("echo");
    assert_eq!(&echo, b"ping");
    assert_closed_with(&gw, "failures", 0);
}

#[test]
fn a_client_that_downloads_slowly_is_not_a_slow_call() {
    let up = Upstream::start("u");
    let gw = Gateway::start(&route(
        &up,
        "volume_threshold = 2, slow_call_duration = \"300ms\", slow_call_rate_threshold = 50",
    ));
    up.set_body_size(16 * 1024 * 1024);
    let port = gw.port;
    let clients: Vec<_> = (0..3)
        .map(|_| {
            thread::spawn(move || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                s.write_all(b"GET /api/u/big HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                    .expect("send");
                // A slow reader: the gateway's writes back up for a while.
                thread::sleep(Duration::from_millis(800));
                let mut body = Vec::new();
                let _ = s.read_to_end(&mut body);
                body.len()
            })
        })
        .collect();
    for c in clients {
        assert!(c.join().expect("client") > 16 * 1024 * 1024);
    }
    gw.wait_window("u", 3);
    assert_closed_with(&gw, "slow", 0);
}

#[test]
fn empty_segments_are_merged_and_parameterised_dot_segments_refused() {
    let up = Upstream::start("u");
    let gw = Gateway::start(&route(&up, "volume_threshold = 5"));
    let (status, text) = raw_get(gw.port, "//api//u///items?q=1");
    assert_eq!(status, 200, "{text}");
    assert_eq!(up.last_seen().target, "/api/u/items?q=1");
    for bad in ["/api/u/..;/admin", "/api/u/.;x/y", "/api/u/%2e%2e;/admin"] {
        let (status, text) = raw_get(gw.port, bad);
        assert_eq!(status, 400, "{bad}: {text}");
        assert!(text.contains("invalid_path"), "{text}");
    }
    assert_eq!(up.hits(), 1);
}

/// Reads a response header (up to the blank line) from `s`.
fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[test]
fn a_client_expecting_100_continue_gets_it_from_the_gateway() {
    let up = Upstream::start("u");
    let gw = Gateway::start(&route(&up, "volume_threshold = 5"));
    let mut s = connect(gw.port);
    s.write_all(
        b"POST /api/u/items HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
    )
    .expect("send the header");
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 100"), "{head}");
    s.write_all(b"{\"a\":\"bcd\"}").expect("send the body");
    let mut rest = String::new();
    let _ = s.read_to_string(&mut rest);
    assert!(rest.starts_with("HTTP/1.1 200"), "{rest}");
    let seen = up.last_seen();
    assert_eq!(seen.method, "POST");
    assert!(!seen.headers.contains_key("expect"), "{:?}", seen.headers);
    gw.wait_window("u", 1);
}

#[test]
fn empty_lines_before_the_request_line_do_not_switch_the_header_deadline_off() {
    let up = Upstream::start("u");
    let gw = Gateway::start_with_env(
        &route(&up, "volume_threshold = 5"),
        &[("FUSEGATE_SERVER__HEADER_TIMEOUT", "1s")],
    );
    let mut s = connect(gw.port);
    s.write_all(b"\r\n\r\nGET /api/u/x HTTP/1.1\r\nHost: a\r\n")
        .expect("send the start");
    // One header line every 250 ms: the whole header would take three seconds.
    let mut writer = s.try_clone().expect("clone");
    let trickle = thread::spawn(move || {
        for _ in 0..12 {
            thread::sleep(Duration::from_millis(250));
            if writer.write_all(b"X-Pad: 1\r\n").is_err() {
                return false;
            }
        }
        writer.write_all(b"\r\n").is_ok()
    });
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    let _ = trickle.join();
    assert_eq!(up.hits(), 0);
}

/// Opens a connection, sends `bytes` (ignoring a refusal to take them all) and reads
/// until the gateway closes it or five seconds pass; returns what it answered.
fn send_and_read(port: u16, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn clients_cut_off_or_leaving_are_counted_and_never_logged_as_errors() {
    let up = Upstream::start("u");
    let gw = Gateway::start_with_env(
        &route(&up, "volume_threshold = 1"),
        &[
            ("FUSEGATE_SERVER__HEADER_TIMEOUT", "1s"),
            ("FUSEGATE_SERVER__BODY_TIMEOUT", "1s"),
            ("FUSEGATE_SERVER__MAX_HEADER_BYTES", "2KiB"),
            ("FUSEGATE_SERVER__MAX_BODY_BYTES", "1KiB"),
        ],
    );
    let port = gw.port;
    // Half a header, then gone.
    drop({
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.write_all(b"GET /api/u/x HTTP/1.1\r\nHo").expect("send");
        s
    });
    let big = format!(
        "GET /api/u/x HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(4096)
    );
    assert!(send_and_read(port, big.as_bytes()).starts_with("HTTP/1.1 431"));
    assert!(send_and_read(port, b"GET /api/u/x HTTP/1.1\r\n").starts_with("HTTP/1.1 408"));
    let stalled = b"POST /api/u/x HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nab";
    assert!(send_and_read(port, stalled).starts_with("HTTP/1.1 408"));
    let huge = b"POST /api/u/x HTTP/1.1\r\nHost: a\r\nContent-Length: 99999\r\n\r\n";
    assert!(send_and_read(port, huge).starts_with("HTTP/1.1 413"));
    for reason in [
        "aborted",
        "header_too_large",
        "header_timeout",
        "body_timeout",
        "body_too_large",
    ] {
        let series = format!("fusegate_client_errors_total{{reason=\"{reason}\"}}");
        wait_until(&series, Duration::from_secs(10), || {
            gw.metric(&series) >= 1.0
        });
    }
    assert_untouched(&gw);
    assert_eq!(up.hits(), 0);
    let log = gw.stderr();
    assert!(!log.contains("ERROR"), "{log}");
}

#[test]
fn past_max_connections_a_new_connection_is_closed_at_once() {
    let up = Upstream::start("u");
    let gw = Gateway::start_with_env(
        &route(&up, "volume_threshold = 5"),
        &[("FUSEGATE_SERVER__MAX_CONNECTIONS", "2")],
    );
    wait_until(
        "the start-up probes to close",
        Duration::from_secs(10),
        || gw.metric("fusegate_connections_open") == 0.0,
    );
    let first = TcpStream::connect(("127.0.0.1", gw.port)).expect("first");
    let second = TcpStream::connect(("127.0.0.1", gw.port)).expect("second");
    wait_until("two open connections", Duration::from_secs(10), || {
        gw.metric("fusegate_connections_open") == 2.0
    });
    let mut third = TcpStream::connect(("127.0.0.1", gw.port)).expect("third");
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = third.write_all(b"GET /api/u/x HTTP/1.1\r\nHost: a\r\n\r\n");
    let mut buf = [0u8; 64];
    match third.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the third connection was served: {other:?}"),
    }
    assert!(gw.metric("fusegate_connections_refused_total") >= 1.0);
    assert_eq!(up.hits(), 0);
    drop(first);
    wait_until("a free slot", Duration::from_secs(10), || {
        gw.metric("fusegate_connections_open") <= 1.0
    });
    let (status, text) = raw_get(gw.port, "/api/u/x");
    assert_eq!(status, 200, "{text}");
    drop(second);
}

#[test]
fn the_admin_port_holds_request_headers_to_the_same_limits() {
    let up = Upstream::start("u");
    let gw = Gateway::start_with_env(
        &route(&up, "volume_threshold = 5"),
        &[("FUSEGATE_SERVER__MAX_HEADER_BYTES", "4KiB")],
    );
    let big = format!(
        "GET /alive HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let answer = send_and_read(gw.admin_port, big.as_bytes());
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );
    assert_eq!(gw.admin("GET", "/alive").status, 200);
}
