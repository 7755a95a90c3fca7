//! Fleet state end to end: real `nats-server -js` processes with a store directory in
//! the test's temp dir, real gateways restarted and joining late, `fusegate ctl`.

mod common;

use common::{ctl, wait_until, Gateway, Nats, Upstream};
use std::time::Duration;

/// A nats-server with JetStream, its store in a temp dir that outlives restarts.
struct Server {
    nats: Nats,
    _store: tempfile::TempDir,
}

impl Server {
    fn start(jetstream: bool) -> Server {
        let store = tempfile::tempdir().unwrap();
        let dir = store.path().display().to_string();
        let nats = if jetstream {
            Nats::start_args(&["-js", "-sd", &dir])
        } else {
            Nats::start_args(&[])
        };
        Server {
            nats,
            _store: store,
        }
    }

    fn url(&self) -> String {
        self.nats.url()
    }
}

fn cluster() -> String {
    format!("fs{}", std::process::id())
}

fn gateway(server: &Server, cluster: &str, identity: &str, dc: &str, up: &Upstream) -> Gateway {
    Gateway::start(&format!(
        "[routes.catalog]\nupstreams = [\"{u}\"]\n\n[routes.search]\nupstreams = [\"{u}\"]\n\n\
         [nats]\nurl = \"{}\"\ncluster = \"{cluster}\"\nidentity = \"{identity}\"\n\
         facts = {{ dc = \"{dc}\" }}\nfleet_state = true\n",
        server.url(),
        u = up.url()
    ))
}

fn state(gw: &Gateway, route: &str) -> String {
    gw.breaker(route)["state"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn wait_state(gw: &Gateway, route: &str, want: &str) {
    wait_until(&format!("{route} {want}"), Duration::from_secs(15), || {
        state(gw, route) == want
    });
}

fn wait_ready(gw: &Gateway) {
    wait_until("/ready", Duration::from_secs(15), || {
        gw.admin("GET", "/ready").status == 200
    });
}

/// Runs ctl with a config file that sets `nats.fleet_state` (so it records even before
/// any gateway has made the bucket): exit code, stdout, stderr.
fn ctl_configured(server: &Server, cluster: &str, rest: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("ctl.toml");
    std::fs::write(
        &cfg,
        format!(
            "[routes.catalog]\nupstreams = [\"127.0.0.1:9\"]\n\n[nats]\nurl = \"{}\"\ncluster = \"{cluster}\"\nfleet_state = true\n",
            server.url()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(common::bin())
        .arg("ctl")
        .arg("-c")
        .arg(&cfg)
        .args(["--timeout", "1s"])
        .args(rest)
        .env_remove("FUSEGATE_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs ctl against the server; panics unless it exits 0.
fn ok_ctl(server: &Server, cluster: &str, rest: &[&str]) -> (String, String) {
    let url = server.url();
    let mut args = vec![
        "--nats",
        url.as_str(),
        "--cluster",
        cluster,
        "--timeout",
        "2s",
    ];
    args.extend_from_slice(rest);
    let (code, out, err) = ctl(&args);
    assert_eq!(code, 0, "ctl {rest:?}:\n{out}{err}");
    (out, err)
}

#[test]
fn a_fleet_pause_holds_across_restarts_and_reaches_gateways_that_join_later() {
    let server = Server::start(true);
    let up = Upstream::start("catalog");
    let c = cluster();
    let gw1 = gateway(&server, &c, "gw-1", "DC1", &up);
    let gw2 = gateway(&server, &c, "gw-2", "DC2", &up);
    wait_ready(&gw1);
    wait_ready(&gw2);

    let (_, err) = ok_ctl(
        &server,
        &c,
        &["--as", "alice", "-W", "dc=DC1", "pause", "catalog"],
    );
    assert!(err.contains("fleet state: recorded"), "{err}");
    wait_state(&gw1, "catalog", "forced_open");
    assert_eq!(state(&gw2, "catalog"), "closed");

    // gw-1 restarts: the pause is in force as soon as it is ready.
    drop(gw1);
    let gw1 = gateway(&server, &c, "gw-1", "DC1", &up);
    wait_ready(&gw1);
    assert_eq!(state(&gw1, "catalog"), "forced_open");
    assert_eq!(state(&gw1, "search"), "closed");
    assert_eq!(gw1.get("/api/catalog/x").status, 503);

    // A gateway that joins later, in DC1, is paused too; one in DC3 is not.
    let gw3 = gateway(&server, &c, "gw-3", "DC1", &up);
    let gw4 = gateway(&server, &c, "gw-4", "DC3", &up);
    wait_ready(&gw3);
    wait_ready(&gw4);
    assert_eq!(state(&gw3, "catalog"), "forced_open");
    assert_eq!(state(&gw4, "catalog"), "closed");

    // A second filter adds to the first.
    ok_ctl(
        &server,
        &c,
        &["--as", "alice", "-W", "dc=DC3", "pause", "catalog"],
    );
    wait_state(&gw4, "catalog", "forced_open");
    let (out, _) = ok_ctl(&server, &c, &["state"]);
    assert!(
        out.contains("dc=DC1") && out.contains("dc=DC3") && out.contains("alice"),
        "{out}"
    );

    // A resume without a filter clears every pause of the route, everywhere.
    ok_ctl(&server, &c, &["--as", "bob", "resume", "catalog"]);
    for gw in [&gw1, &gw2, &gw3, &gw4] {
        wait_state(gw, "catalog", "closed");
    }
    let (out, _) = ok_ctl(&server, &c, &["state"]);
    assert!(!out.contains("catalog"), "{out}");
    let (out, _) = ok_ctl(&server, &c, &["history", "catalog"]);
    let lines: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].contains("pause") && lines[0].contains("alice"),
        "{out}"
    );
    assert!(
        lines[2].contains("resume") && lines[2].contains("bob"),
        "{out}"
    );

    // And after a restart it stays resumed.
    drop(gw1);
    let gw1 = gateway(&server, &c, "gw-1", "DC1", &up);
    wait_ready(&gw1);
    assert_eq!(state(&gw1, "catalog"), "closed");
}

#[test]
fn a_pause_for_a_while_ends_by_itself() {
    let server = Server::start(true);
    let up = Upstream::start("catalog");
    let c = cluster();
    let gw = gateway(&server, &c, "gw-t", "DC1", &up);
    wait_ready(&gw);
    let (out, _) = ok_ctl(&server, &c, &["pause", "search", "--for", "2s"]);
    assert!(out.contains("Managed 1 gateway(s)"), "{out}");
    wait_state(&gw, "search", "forced_open");
    let (state_out, _) = ok_ctl(&server, &c, &["state"]);
    assert!(
        state_out.contains("search") && !state_out.contains(" - \n"),
        "{state_out}"
    );
    wait_state(&gw, "search", "closed");
    assert!(
        gw.stderr().contains("the pause of search has ended"),
        "{}",
        gw.stderr()
    );
}

#[test]
fn without_jetstream_ctl_still_acts_and_says_the_state_was_not_stored() {
    let server = Server::start(false);
    let up = Upstream::start("catalog");
    let c = cluster();
    let gw = gateway(&server, &c, "gw-nojs", "DC1", &up);
    // Ready anyway, within the start wait.
    wait_ready(&gw);
    wait_until("the nats probe to tell", Duration::from_secs(15), || {
        let health = gw.admin("GET", "/health").json();
        health["probes"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["name"] == "nats").cloned())
            .is_some_and(|p| {
                p["healthy"] == false && p["error"].as_str().unwrap_or("").contains("JetStream")
            })
    });
    let (code, out, err) = ctl_configured(&server, &c, &["pause", "catalog"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Managed 1 gateway(s)"), "{out}");
    assert!(err.contains("fleet state: not stored"), "{err}");
    wait_state(&gw, "catalog", "forced_open");
    // Without the config saying so, and no bucket, ctl does not try (nor complain).
    let (_, err) = ok_ctl(&server, &c, &["resume", "catalog"]);
    assert!(!err.contains("fleet state"), "{err}");
    wait_state(&gw, "catalog", "closed");
}

#[test]
fn a_corrupt_value_is_ignored_with_a_warning_and_the_rest_applied() {
    let server = Server::start(true);
    let c = cluster();
    let up = Upstream::start("catalog");
    // Record a pause of catalog, then spoil the key of search.
    let first = gateway(&server, &c, "gw-a", "DC1", &up);
    wait_ready(&first);
    ok_ctl(&server, &c, &["pause", "catalog"]);
    let url = server.url();
    let bucket = format!("fusegate_{c}");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let client = async_nats::connect(url).await.unwrap();
            let js = async_nats::jetstream::new(client);
            let kv = js.get_key_value(bucket).await.unwrap();
            kv.put("search", "{not json".into()).await.unwrap();
        });
    // A gateway that starts now gets the pause, and warns about the spoilt key.
    let gw = gateway(&server, &c, "gw-c", "DC1", &up);
    wait_ready(&gw);
    assert_eq!(state(&gw, "catalog"), "forced_open");
    assert_eq!(state(&gw, "search"), "closed");
    let log = gw.stderr();
    assert!(
        log.contains("fleet state key \"search\" is unreadable"),
        "{log}"
    );
}

#[test]
fn with_nats_down_at_start_the_gateway_is_ready_and_applies_the_state_once_connected() {
    let mut server = Server::start(true);
    let c = cluster();
    // A pause recorded while no gateway runs (ctl says none answered, and records it).
    let (code, _, err) = ctl_configured(&server, &c, &["pause", "catalog"]);
    assert_eq!(code, 1, "no gateway answered");
    assert!(err.contains("fleet state: recorded"), "{err}");
    server.nats.stop();

    let up = Upstream::start("catalog");
    let gw = gateway(&server, &c, "gw-late", "DC1", &up);
    wait_ready(&gw);
    assert_eq!(state(&gw, "catalog"), "closed");
    assert_eq!(gw.get("/api/catalog/x").status, 200, "serving without NATS");

    server.nats.restart();
    wait_state(&gw, "catalog", "forced_open");
}

#[test]
fn a_pause_of_every_route_and_a_route_pause_end_as_each_should() {
    let server = Server::start(true);
    let up = Upstream::start("catalog");
    let c = cluster();
    let gw = gateway(&server, &c, "gw-all", "DC1", &up);
    wait_ready(&gw);
    ok_ctl(&server, &c, &["pause"]);
    ok_ctl(&server, &c, &["pause", "catalog", "--for", "1s"]);
    wait_state(&gw, "search", "forced_open");
    wait_state(&gw, "catalog", "forced_open");
    // The route's own pause runs out; the pause of every route still holds it.
    wait_until("the route pause to end", Duration::from_secs(10), || {
        !ok_ctl(&server, &c, &["state"]).0.contains("catalog")
    });
    // Held over the follower's next ticks (one a second).
    for _ in 0..15 {
        assert_eq!(state(&gw, "catalog"), "forced_open");
        std::thread::sleep(Duration::from_millis(100));
    }

    // A resume of every route ends the route pauses too, also after a restart.
    ok_ctl(&server, &c, &["pause", "catalog"]);
    ok_ctl(&server, &c, &["resume"]);
    wait_state(&gw, "catalog", "closed");
    wait_state(&gw, "search", "closed");
    drop(gw);
    let gw = gateway(&server, &c, "gw-all", "DC1", &up);
    wait_ready(&gw);
    assert_eq!(state(&gw, "catalog"), "closed");
    assert_eq!(state(&gw, "search"), "closed");
    let (out, _) = ok_ctl(&server, &c, &["history", "catalog"]);
    let actions: Vec<&str> = out
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().nth(1).unwrap_or(""))
        .collect();
    assert_eq!(actions, ["pause", "pause", "pause", "resume"], "{out}");
}
