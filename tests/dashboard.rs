//! The dashboard's data (SPEC §13) as a client sees it: the admin port's event stream
//! (snapshots a second, transitions at once), its token rules, a client that stops
//! reading, and the fleet dashboard fed over NATS. curl reads the streams.

mod common;

use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

/// A server-sent event stream read by curl: `(event, data)` pairs arrive on a channel.
struct Stream {
    child: Child,
    events: Receiver<(String, Value)>,
}

impl Stream {
    fn open(url: &str, headers: &[&str]) -> Stream {
        let mut cmd = Command::new("curl");
        cmd.args(["-sN", "--max-time", "60"]);
        for h in headers {
            cmd.args(["-H", h]);
        }
        let mut child = cmd
            .arg(url)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run curl");
        let stdout = child.stdout.take().expect("curl stdout");
        let (tx, events) = mpsc::channel();
        thread::spawn(move || {
            let mut name = String::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if std::env::var("DASH_DEBUG").is_ok() {
                    eprintln!("line: {}", line.get(..120).unwrap_or(&line));
                }
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_string();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    let v = serde_json::from_str(d).unwrap_or(Value::Null);
                    if tx.send((name.clone(), v)).is_err() {
                        return;
                    }
                }
            }
        });
        Stream { child, events }
    }

    /// The next event named `name` for which `pred` holds, within `limit`.
    fn wait(&self, name: &str, limit: Duration, mut pred: impl FnMut(&Value) -> bool) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok((n, v)) if n == name && pred(&v) => return v,
                Ok((n, v)) => eprintln!("skipped {n}: {}", v.to_string().get(..300).unwrap_or("")),
                Err(_) => panic!("no matching {name:?} event within {limit:?}"),
            }
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn route<'a>(snapshot: &'a Value, name: &str) -> &'a Value {
    snapshot["routes"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["route"] == name))
        .unwrap_or(&Value::Null)
}

#[test]
fn the_event_stream_carries_snapshots_and_transitions() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&format!(
        "[routes.a]\nupstreams = [\"{}\"]\nbreaker = {{ volume_threshold = 4, error_threshold_percentage = 50, reset_timeout = \"30s\" }}\n\n[routes.b]\nupstreams = [\"{}\"]\n",
        up.url(),
        up.url()
    ));
    let page = gw.admin("GET", "/dashboard");
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/html"));
    assert!(
        page.body.contains("<script"),
        "the page carries its script inline"
    );
    assert!(!page.body.contains("src=\"http"), "no external assets");

    let stream = Stream::open(&gw.admin_url("/events"), &[]);
    let first = stream.wait("snapshot", Duration::from_secs(5), |_| true);
    assert_eq!(route(&first, "a")["state"], "closed");
    assert_eq!(route(&first, "b")["volume_threshold"], 10);
    assert!(first["identity"].is_string() && first["at"].is_string());

    up.set_status(500);
    for _ in 0..4 {
        assert_eq!(gw.get("/api/a/x").status, 500);
    }
    // The transition at once, with the NATS event's shape.
    let t = stream.wait("transition", Duration::from_secs(5), |v| v["to"] == "open");
    assert_eq!(
        (t["route"].as_str(), t["from"].as_str()),
        (Some("a"), Some("closed"))
    );
    assert_eq!(t["window"]["failures"], 4);
    // The seconds' snapshots add up to what happened, with the upstream's latency.
    let mut failed = 0;
    let mut latency = false;
    stream.wait("snapshot", Duration::from_secs(5), |s| {
        let a = route(s, "a");
        failed += a["counts"]["failed"].as_u64().unwrap_or(0);
        latency |= a["p99_ms"].is_number();
        failed == 4 && a["state"] == "open"
    });
    assert!(
        latency,
        "p50/p99 are reported for the second the requests ran"
    );
    let s = stream.wait("snapshot", Duration::from_secs(5), |_| true);
    let a = route(&s, "a");
    assert!(a["retry_after_secs"]
        .as_u64()
        .is_some_and(|n| n > 0 && n <= 30));
    assert_eq!(a["window"]["failure_percentage"], 100.0);
    assert_eq!(route(&s, "b")["state"], "closed");
    // A rejection is counted as one in the next second.
    assert_eq!(gw.get("/api/a/x").status, 503);
    stream.wait("snapshot", Duration::from_secs(5), |s| {
        route(s, "a")["counts"]["rejected"] == 1
    });
    assert_eq!(gw.metric("fusegate_dashboard_streams "), 1.0);
}

#[test]
fn with_read_requires_token_the_stream_needs_a_bearer_header() {
    let up = Upstream::start("t");
    let gw = Gateway::start_full(
        "token = \"s3cret\"\nread_requires_token = true",
        &format!("[routes.t]\nupstreams = [\"{}\"]\n", up.url()),
        &[],
    );
    // The page holds no data: it opens without a token.
    assert_eq!(gw.admin("GET", "/dashboard").status, 200);
    let status =
        |path: &str, headers: &[(&str, &str)]| request("GET", &gw.admin_url(path), headers).status;
    assert_eq!(status("/events", &[]), 401);
    assert_eq!(status("/events", &[("authorization", "Bearer nope")]), 403);
    // A token in the URL is never accepted.
    assert_eq!(status("/events?token=s3cret", &[]), 401);
    assert_eq!(status("/events?access_token=s3cret", &[]), 401);
    let stream = Stream::open(&gw.admin_url("/events"), &["Authorization: Bearer s3cret"]);
    let s = stream.wait("snapshot", Duration::from_secs(5), |_| true);
    assert_eq!(route(&s, "t")["state"], "closed");
    // Actions need it too.
    assert_eq!(
        request("POST", &gw.admin_url("/breakers/t/pause"), &[]).status,
        401
    );
    assert_eq!(
        request(
            "POST",
            &gw.admin_url("/breakers/nope/pause"),
            &[("authorization", "Bearer s3cret")]
        )
        .status,
        404
    );
}

#[test]
fn a_stream_client_that_never_reads_is_dropped() {
    let up = Upstream::start("s");
    // 1,000 routes: a snapshot is about 400 KiB, more than a stalled socket takes.
    let mut routes = String::new();
    for i in 0..1000 {
        routes.push_str(&format!("[routes.r{i}]\nupstreams = [\"{}\"]\n", up.url()));
    }
    let gw = Gateway::start(&routes);
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", gw.admin_port).parse().unwrap();
    socket.connect(&addr.into()).expect("connect");
    let mut stalled: std::net::TcpStream = socket.into();
    stalled
        .write_all(b"GET /events HTTP/1.1\r\nHost: a\r\n\r\n")
        .expect("send request");
    wait_until("the stream to open", Duration::from_secs(10), || {
        gw.metric("fusegate_dashboard_streams ") == 1.0
    });
    // It never reads: the gateway gives up on it and holds nothing for it.
    wait_until(
        "the stalled stream to be dropped",
        Duration::from_secs(30),
        || gw.metric("fusegate_dashboard_streams ") == 0.0,
    );
    // Others are served meanwhile.
    assert_eq!(gw.get("/api/r7/x").status, 200);
    let stream = Stream::open(&gw.admin_url("/events"), &[]);
    let s = stream.wait("snapshot", Duration::from_secs(10), |_| true);
    assert_eq!(s["routes"].as_array().map(Vec::len), Some(1000));
    drop(stalled);
}

/// `fusegate dashboard` on a free loopback port.
struct FleetDashboard {
    child: Child,
    port: u16,
}

impl FleetDashboard {
    fn start(nats: &str, cluster: &str) -> FleetDashboard {
        let port = free_port();
        let child = Command::new(bin())
            .args(["dashboard", "--nats", nats, "--cluster", cluster])
            .args(["--user", "ops", "--password", "ops-secret"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["-c", "/nonexistent/fusegate.toml"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn fusegate dashboard");
        wait_until("the fleet dashboard", Duration::from_secs(15), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        FleetDashboard { child, port }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for FleetDashboard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fleet_gateway(nats: &str, identity: &str, dc: &str, upstream: &str) -> Gateway {
    Gateway::start(&format!(
        "[nats]\nurl = \"{nats}\"\nuser = \"gateway\"\npassword = \"gateway-secret\"\ncluster = \"dash\"\nidentity = \"{identity}\"\nsnapshot_interval = \"500ms\"\nfacts = {{ dc = \"{dc}\" }}\n\n[routes.a]\nupstreams = [\"{upstream}\"]\n"
    ))
}

#[test]
fn the_fleet_dashboard_shows_every_gateway_and_acts_through_ctl() {
    let nats = Nats::start();
    let up = Upstream::start("f");
    let gw1 = fleet_gateway(&nats.url(), "gw-1", "DC1", &up.url());
    let gw2 = fleet_gateway(&nats.url(), "gw-2", "DC2", &up.url());
    let dash = FleetDashboard::start(&nats.url(), "dash");
    let page = get(&dash.url("/"));
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<script"));

    let stream = Stream::open(&dash.url("/events"), &[]);
    let fleet = stream.wait("fleet", Duration::from_secs(15), |v| {
        v["gateways"].as_array().map(Vec::len) == Some(2)
    });
    assert_eq!(fleet["cluster"], "dash");
    let ids: Vec<&str> = fleet["gateways"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g["identity"].as_str())
        .collect();
    assert_eq!(ids, ["gw-1", "gw-2"]);
    assert_eq!(fleet["gateways"][0]["facts"]["dc"], "DC1");
    assert_eq!(route(&fleet["gateways"][1], "a")["state"], "closed");

    // A button on the fleet page: every gateway.
    let r = send("POST", &dash.url("/breakers/a/pause"), &[], None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["replies"].as_array().map(Vec::len), Some(2));
    assert_eq!(gw1.breaker("a")["state"], "forced_open");
    assert_eq!(gw2.breaker("a")["state"], "forced_open");
    // Its transitions reach the fleet stream.
    stream.wait("transition", Duration::from_secs(5), |t| {
        t["to"] == "forced_open"
    });
    // A drill-down button: one gateway.
    let r = send(
        "POST",
        &dash.url("/breakers/a/resume"),
        &[("content-type", "application/json")],
        Some(r#"{"identity":"gw-2"}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["replies"][0]["identity"], "gw-2");
    assert_eq!(gw1.breaker("a")["state"], "forced_open");
    assert_eq!(gw2.breaker("a")["state"], "closed");
    // An unknown route: every gateway says so, nothing changes.
    let r = send("POST", &dash.url("/breakers/nope/pause"), &[], None);
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(r.json()["replies"][0]["ok"], false);
    let r = send("POST", &dash.url("/breakers/a/explode"), &[], None);
    assert_eq!(r.status, 404);
    assert_eq!(gw1.breaker("a")["state"], "forced_open");
}

#[test]
fn the_fleet_dashboard_listens_on_loopback_only() {
    let out = Command::new(bin())
        .args([
            "dashboard",
            "--listen",
            "0.0.0.0:9191",
            "-c",
            "/nonexistent.toml",
        ])
        .output()
        .expect("run fusegate dashboard");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}
