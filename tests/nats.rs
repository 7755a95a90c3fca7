//! The NATS control plane end to end: a real nats-server, several real gateways,
//! `fusegate ctl`.

mod common;

use common::{ctl, wait_until, Gateway, Nats, Traffic, Upstream};
use std::thread;
use std::time::Duration;

const OPS: [&str; 4] = ["--user", "ops", "--password", "ops-secret"];
const VIEWER: [&str; 4] = ["--user", "viewer", "--password", "viewer-secret"];

fn cluster() -> String {
    format!("t{}", fastrand_suffix())
}

fn fastrand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64 % 1_000_000_007)
        .unwrap_or(0)
        ^ u64::from(std::process::id())
}

fn gateway(nats: &Nats, cluster: &str, identity: &str, dc: &str, upstream: &str) -> Gateway {
    let gw = Gateway::start(&format!(
        "[routes.catalog]\nupstreams = [\"{upstream}\"]\nbreaker = {{ volume_threshold = 3, reset_timeout = \"60s\" }}\n\n[nats]\nurl = \"{}\"\ncluster = \"{cluster}\"\nidentity = \"{identity}\"\nfacts = {{ dc = \"{dc}\", role = \"edge\" }}\nuser = \"gateway\"\npassword = \"gateway-secret\"\n",
        nats.url()
    ));
    wait_nats(&gw, true);
    gw
}

fn wait_nats(gw: &Gateway, connected: bool) {
    wait_until(
        &format!("nats connected = {connected}"),
        Duration::from_secs(15),
        || {
            let probes = gw.admin("GET", "/health").json()["probes"].clone();
            probes
                .as_array()
                .and_then(|p| p.iter().find(|p| p["name"] == "nats"))
                .is_some_and(|p| p["healthy"] == connected)
        },
    );
}

fn args<'a>(nats: &'a str, cluster: &'a str, auth: &[&'a str], rest: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["--nats", nats, "--cluster", cluster, "--timeout", "3s"];
    v.extend_from_slice(auth);
    v.extend_from_slice(rest);
    v
}

fn paused(gw: &Gateway) -> bool {
    gw.admin("GET", "/breakers/catalog").json()["state"] == "forced_open"
}

#[test]
fn ctl_targets_gateways_by_fact_and_identity() {
    let nats = Nats::start();
    let c = cluster();
    let up = Upstream::start("catalog");
    let gw1 = gateway(&nats, &c, "gw-1", "DC1", &up.url());
    let gw2 = gateway(&nats, &c, "gw-2", "DC1", &up.url());
    let gw3 = gateway(&nats, &c, "gw-3", "DC2", &up.url());
    let url = nats.url();

    let (code, out, err) = ctl(&args(&url, &c, &OPS, &["pause", "catalog", "-W", "dc=DC1"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Managed 2 gateway(s)"), "{out}");
    assert!(!out.contains("error"), "writes print only failures: {out}");
    for gw in [&gw1, &gw2] {
        assert!(paused(gw));
        let r = gw.get("/api/catalog");
        assert_eq!(
            (r.status, r.json()["error"].clone()),
            (503, "route_paused".into())
        );
    }
    assert!(!paused(&gw3));
    assert_eq!(gw3.get("/api/catalog").status, 200);

    let (code, out, _) = ctl(&args(&url, &c, &OPS, &["pause", "catalog", "-I", "gw-3"]));
    assert_eq!(code, 0);
    assert!(out.contains("Managed 1 gateway(s)"), "{out}");
    assert!(paused(&gw3));

    let (code, out, _) = ctl(&args(&url, &c, &OPS, &["info"]));
    assert_eq!(code, 0);
    for id in [
        "gw-1:",
        "gw-2:",
        "gw-3:",
        "\"dc\": \"DC2\"",
        "Managed 3 gateway(s)",
    ] {
        assert!(out.contains(id), "missing {id} in:\n{out}");
    }

    let (code, _, _) = ctl(&args(&url, &c, &OPS, &["resume", "-W", "role=edge"]));
    assert_eq!(code, 0);
    for gw in [&gw1, &gw2, &gw3] {
        assert!(!paused(gw));
        assert_eq!(gw.get("/api/catalog").status, 200);
    }

    let (code, out, _) = ctl(&args(
        &url,
        &c,
        &OPS,
        &["--json", "breakers", "-W", "dc=DC2"],
    ));
    assert_eq!(code, 0);
    let replies: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(replies.as_array().unwrap().len(), 1);
    assert_eq!(replies[0]["identity"], "gw-3");
    assert_eq!(replies[0]["ok"], true);
    assert_eq!(replies[0]["result"]["breakers"][0]["route"], "catalog");

    let (code, out, _) = ctl(&args(&url, &c, &OPS, &["pause", "nope", "-I", "gw-1"]));
    assert_eq!(code, 1, "an unknown route is a failure");
    assert!(out.contains("gw-1: error: no route \"nope\""), "{out}");

    let (code, out, err) = ctl(&args(&url, &c, &OPS, &["ping", "-W", "dc=DC9"]));
    assert_eq!(code, 1, "none answered");
    assert!(err.contains("no gateway answered"), "{out}{err}");
}

#[test]
fn a_viewer_can_read_but_not_pause() {
    let nats = Nats::start();
    let c = cluster();
    let up = Upstream::start("catalog");
    let gw = gateway(&nats, &c, "gw-v", "DC1", &up.url());
    let url = nats.url();

    let (code, out, err) = ctl(&args(&url, &c, &VIEWER, &["pause", "catalog"]));
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("Permissions Violation"),
        "the permission error is reported: {err}"
    );
    assert!(!paused(&gw), "nothing was paused");

    let (code, out, _) = ctl(&args(&url, &c, &VIEWER, &["breakers"]));
    assert_eq!(code, 0);
    assert!(out.contains("gw-v:") && out.contains("catalog"), "{out}");
}

/// Each client stops after this many requests if the test has not ended before.
const MAX_EACH: usize = 5_000;

/// Ordinary traffic from 4 clients: each response's status and whether its body came
/// from the upstream.
fn start_traffic(url: String) -> Traffic<(u16, bool)> {
    Traffic::start(4, MAX_EACH, move || {
        let r = common::get(&url);
        thread::sleep(Duration::from_millis(2));
        (r.status, r.body.contains(r#""upstream":"catalog""#))
    })
}

#[test]
fn the_proxy_keeps_serving_while_nats_is_down_and_control_returns_with_it() {
    let mut nats = Nats::start();
    let c = cluster();
    let up = Upstream::start("catalog");
    let gw = gateway(&nats, &c, "gw-o", "DC1", &up.url());
    let url = nats.url();
    let traffic = start_traffic(gw.url("/api/catalog"));
    traffic.wait_more(50);

    nats.stop();
    wait_nats(&gw, false);
    let outage_began = traffic.answered();
    let h = gw.admin("GET", "/health");
    assert_eq!(h.status, 503);
    assert_eq!(
        gw.admin("GET", "/ready").status,
        200,
        "/ready is not affected"
    );
    assert!(gw
        .admin("GET", "/metrics")
        .body
        .contains("fusegate_nats_connected 0"));
    wait_until("traffic during the outage", Duration::from_secs(10), || {
        traffic.answered() >= outage_began + 100
    });

    nats.restart();
    wait_nats(&gw, true);
    let restarted = traffic.answered();
    wait_until("traffic after the restart", Duration::from_secs(10), || {
        traffic.answered() >= restarted + 50
    });
    let seen = traffic.finish();
    eprintln!(
        "nats outage: {} requests, {} while nats-server was down",
        seen.len(),
        restarted - outage_began
    );
    let odd: Vec<_> = seen
        .iter()
        .filter(|(s, from_up)| *s != 200 || !from_up)
        .collect();
    assert!(
        odd.is_empty(),
        "{} of {} proxied responses changed: {:?}",
        odd.len(),
        seen.len(),
        &odd[..odd.len().min(10)]
    );
    assert_eq!(
        up.hits(),
        seen.len() as u64,
        "every request reached the upstream"
    );

    assert!(gw
        .admin("GET", "/metrics")
        .body
        .contains("fusegate_nats_connected 1"));
    let (code, out, err) = ctl(&args(&url, &c, &OPS, &["pause", "catalog"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(paused(&gw));
}

#[test]
fn events_reloads_log_levels_and_shutdown() {
    let nats = Nats::start();
    let c = cluster();
    let bad = Upstream::start("bad");
    bad.set_status(500);
    let mut gw = gateway(&nats, &c, "gw-e", "DC1", &bad.url());
    let url = nats.url();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = rt
        .block_on(
            async_nats::ConnectOptions::with_user_and_password("ops".into(), "ops-secret".into())
                .connect(url.as_str()),
        )
        .expect("connect as ops");
    let mut breaker_events = rt
        .block_on(client.subscribe(format!("fusegate.{c}.events.breaker")))
        .unwrap();
    let mut config_events = rt
        .block_on(client.subscribe(format!("fusegate.{c}.events.config")))
        .unwrap();
    rt.block_on(client.flush()).unwrap();

    for _ in 0..3 {
        gw.get("/api/catalog");
    }
    let event = rt
        .block_on(async {
            use futures_util::StreamExt;
            tokio::time::timeout(Duration::from_secs(10), breaker_events.next()).await
        })
        .expect("a breaker event within 10 s")
        .expect("subscription open");
    let e: serde_json::Value = serde_json::from_slice(&event.payload).unwrap();
    assert_eq!(e["identity"], "gw-e");
    assert_eq!(e["route"], "catalog");
    assert_eq!(
        (e["from"].clone(), e["to"].clone()),
        ("closed".into(), "open".into())
    );
    assert_eq!(e["window"]["failures"], 3);

    // A write action on the read subject is refused by the gateway itself.
    let refused = rt
        .block_on(client.request(
            format!("fusegate.{c}.ctl.read"),
            r#"{"action":"pause","route":"catalog"}"#.into(),
        ))
        .unwrap();
    let r: serde_json::Value = serde_json::from_slice(&refused.payload).unwrap();
    assert_eq!(r["ok"], false);
    assert!(!paused(&gw));

    let (code, _, _) = ctl(&args(&url, &c, &OPS, &["reload"]));
    assert_eq!(code, 0);
    let event = rt
        .block_on(async {
            use futures_util::StreamExt;
            tokio::time::timeout(Duration::from_secs(10), config_events.next()).await
        })
        .expect("a config event")
        .expect("subscription open");
    let e: serde_json::Value = serde_json::from_slice(&event.payload).unwrap();
    assert_eq!(
        (e["ok"].clone(), e["generation"].clone()),
        (true.into(), 2.into())
    );

    let (code, _, _) = ctl(&args(&url, &c, &OPS, &["loglevel", "crit"]));
    assert_eq!(code, 0);
    assert_eq!(gw.admin("GET", "/info").json()["log_level"], "error");

    let (code, out, _) = ctl(&args(&url, &c, &OPS, &["shutdown"]));
    assert_eq!(code, 0, "{out}");
    let mut status = None;
    wait_until("the gateway to exit", Duration::from_secs(15), || {
        status = gw.child.try_wait().unwrap();
        status.is_some()
    });
    assert_eq!(status.and_then(|s| s.code()), Some(0));
}

#[test]
fn ctl_purge_empties_a_routes_cache_on_the_gateways_it_targets() {
    let nats = Nats::start();
    let c = cluster();
    let up = Upstream::start("catalog");
    up.set_headers(&[("Cache-Control", "max-age=60")]);
    let gw = Gateway::start(&format!(
        "[routes.catalog]\nupstreams = [\"{}\"]\n[routes.catalog.cache]\n\n[nats]\nurl = \"{}\"\ncluster = \"{c}\"\nidentity = \"gw-p\"\nuser = \"gateway\"\npassword = \"gateway-secret\"\n",
        up.url(),
        nats.url()
    ));
    wait_nats(&gw, true);
    gw.get("/api/catalog/x");
    assert_eq!(gw.get("/api/catalog/x").header("x-cache"), Some("HIT"));
    let url = nats.url();

    let (code, out, err) = ctl(&args(&url, &c, &VIEWER, &["purge", "catalog"]));
    assert_eq!(code, 1, "a viewer cannot purge: {out}{err}");
    assert_eq!(gw.get("/api/catalog/x").header("x-cache"), Some("HIT"));

    let (code, out, err) = ctl(&args(&url, &c, &OPS, &["--json", "purge", "catalog"]));
    assert_eq!(code, 0, "{out}{err}");
    let replies: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        replies[0]["result"],
        serde_json::json!({"route": "catalog", "purged": 1})
    );
    assert_eq!(gw.get("/api/catalog/x").header("x-cache"), Some("MISS"));
    assert_eq!(up.hits(), 2);

    let (code, out, _) = ctl(&args(&url, &c, &OPS, &["purge", "nope"]));
    assert_eq!(code, 1);
    assert!(out.contains("no_route"), "{out}");
}
