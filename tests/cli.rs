//! The command line: `check`, `run` with bad input, environment overrides, signals.

mod common;

use common::{bin, free_port, wait_until, Gateway, Upstream};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

fn check(path: &std::path::Path) -> (i32, String) {
    let out = Command::new(bin())
        .args(["check", "-c"])
        .arg(path)
        .env_remove("FUSEGATE_CONFIG")
        .output()
        .expect("run fusegate check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

const BROKEN: &str = r#"
[server]
listen = "127.0.0.1:8080"
threadz = 4

[defaults.breaker]
rolling_window = "10s"
rolling_buckets = 3

[routes.catalog]
upstreams = []
breaker = { volume_threshold = 0 }

[routes.search]
upstreams = ["127.0.0.1:70000"]
prefix = "/api/catalog"
breaker = { error_threshold_percentage = 150, mode = "maybe" }
"#;

#[test]
fn check_lists_every_problem_of_a_broken_file_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, BROKEN).unwrap();
    let (code, text) = check(&path);
    assert_eq!(code, 1, "{text}");
    for expected in [
        "server.threadz: unknown key",
        "defaults.breaker.rolling_window: 10s divided by rolling_buckets = 3",
        "routes.catalog.upstreams: needs at least one upstream",
        "routes.catalog.breaker.volume_threshold: must be >= 1",
        "routes.search.upstreams.0:",
        "routes.search.prefix: \"/api/catalog\" is already the prefix of route \"catalog\"",
        "routes.search.breaker.error_threshold_percentage: must be <= 100",
        "routes.search.breaker.mode: unknown value \"maybe\"",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(text.contains("8 problem(s)"), "{text}");
}

#[test]
fn the_shipped_examples_are_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for (file, routes) in [
        ("config/fusegate.toml", 2),
        ("config/fusegate.yaml", 2),
        ("docker/gw-dc1.toml", 1),
        ("docker/gw-dc2.toml", 1),
    ] {
        let (code, text) = check(&root.join(file));
        assert_eq!(code, 0, "{file}: {text}");
        assert!(text.contains(&format!("ok ({routes} route(s))")), "{text}");
    }
}

#[test]
fn check_names_a_missing_file() {
    let (code, text) = check(std::path::Path::new("/nonexistent/fusegate.toml"));
    assert_eq!(code, 1);
    assert!(
        text.contains("cannot read config file /nonexistent/fusegate.toml"),
        "{text}"
    );
}

#[test]
fn run_with_an_invalid_config_exits_1_before_binding() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        format!("server:\n  listen: \"127.0.0.1:{port}\"\nroutes:\n  x:\n    upstreams: []\n"),
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["run", "-c"])
        .arg(&path)
        .output()
        .expect("run fusegate");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("routes.x.upstreams: needs at least one upstream"),
        "{err}"
    );
    assert!(
        TcpListener::bind(("127.0.0.1", port)).is_ok(),
        "the port was never bound"
    );
}

#[test]
fn usage_errors_exit_2() {
    let out = Command::new(bin()).arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn environment_variables_override_the_file() {
    let up = Upstream::start("env");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fusegate.toml");
    // The file listens on a port that is taken; the environment moves it.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:{taken_port}\"\n[routes.env]\nupstreams = [\"{}\"]\nbreaker = {{ volume_threshold = 100 }}\n",
            up.url()
        ),
    )
    .unwrap();
    let port = free_port();
    let admin = free_port();
    let mut child = Command::new(bin())
        .arg("run")
        .env("FUSEGATE_CONFIG", &path)
        .env("FUSEGATE_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("FUSEGATE_ADMIN__LISTEN", format!("127.0.0.1:{admin}"))
        .env("FUSEGATE_ROUTES__ENV__BREAKER__VOLUME_THRESHOLD", "2")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(
        "the gateway on the overridden port",
        Duration::from_secs(15),
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
    up.set_status(500);
    let url = format!("http://127.0.0.1:{port}/api/env");
    assert_eq!(common::get(&url).status, 500);
    assert_eq!(common::get(&url).status, 500);
    let breaker = format!("http://127.0.0.1:{admin}/breakers/env");
    wait_until(
        "two failures to open the breaker",
        Duration::from_secs(10),
        || common::get(&breaker).json()["state"] == "open",
    );
    assert_eq!(
        common::get(&breaker).json()["settings"]["volume_threshold"],
        2
    );
    assert_eq!(
        common::get(&url).status,
        503,
        "volume_threshold came from the environment"
    );
    let _ = child.kill();
    let _ = child.wait();
    drop(taken);
}

#[test]
fn sigterm_lets_requests_in_flight_finish_then_exits_0() {
    let up = Upstream::start("slow");
    up.set_delay(Duration::from_millis(800));
    let mut gw = Gateway::start(&format!("[routes.slow]\nupstreams = [\"{}\"]\n", up.url()));
    let url = gw.url("/api/slow");
    let in_flight = thread::spawn(move || common::get(&url));
    wait_until(
        "the request to reach the upstream",
        Duration::from_secs(5),
        || up.hits() == 1,
    );
    gw.signal("TERM");
    let r = in_flight.join().unwrap();
    assert_eq!(r.status, 200, "the request in flight was answered");
    let mut status = None;
    wait_until("fusegate to exit", Duration::from_secs(10), || {
        status = gw.child.try_wait().unwrap();
        status.is_some()
    });
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", gw.port)).is_err(),
        "no longer accepting"
    );
}
