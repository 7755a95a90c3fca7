//! Hot reload end to end: every trigger, state carried over, traffic never dropped.

mod common;

use common::{send, wait_until, Fault, Gateway, Upstream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

fn route(name: &str, upstreams: &[&str], extra: &str) -> String {
    let list: Vec<String> = upstreams.iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        "[routes.{name}]\nupstreams = [{}]\n{extra}\n",
        list.join(", ")
    )
}

fn last_reload(gw: &Gateway) -> serde_json::Value {
    gw.admin("GET", "/info").json()["last_reload"].clone()
}

#[test]
fn twenty_rewrites_under_traffic_never_fail_a_request() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let (ua, ub) = (a.url(), b.url());
    let gw = Gateway::start(&route("stable", &[&ua], ""));
    wait_until("ready", Duration::from_secs(10), || {
        gw.admin("GET", "/ready").status == 200
    });

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
            let url = gw.url("/api/stable/item");
            thread::spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(10))
                    .build();
                let mut bad = Vec::new();
                let mut stopped_by_flag = false;
                // Bounded: at most 100 000 requests per client, and only while rewrites go on.
                for _ in 0..100_000 {
                    if stop.load(Ordering::SeqCst) {
                        stopped_by_flag = true;
                        break;
                    }
                    sent.fetch_add(1, Ordering::SeqCst);
                    match agent.get(&url).call() {
                        Ok(r) if r.status() == 200 => {}
                        Ok(r) => bad.push(format!("status {}", r.status())),
                        Err(e) => bad.push(e.to_string()),
                    }
                }
                failed.fetch_add(bad.len() as u64, Ordering::SeqCst);
                (bad, stopped_by_flag)
            })
        })
        .collect();

    let mut generation = 1;
    let mut extra_present = false;
    for i in 0..20 {
        if i % 4 == 3 {
            // Invalid: reported, nothing changes.
            let broken = match i % 8 {
                3 => format!(
                    "{}[routes.extra]\nupstreams = []\n",
                    route("stable", &[&ua], "")
                ),
                _ => format!(
                    "{}breaker = {{ volume_threshold = 0 }}\n",
                    route("stable", &[&ub], "")
                ),
            };
            gw.rewrite(&broken);
            wait_until(
                "the invalid file to be reported",
                Duration::from_secs(10),
                || last_reload(&gw)["ok"] == false,
            );
            assert_eq!(
                gw.generation(),
                generation,
                "an invalid file changes nothing"
            );
        } else {
            let upstreams: &[&str] = match i % 3 {
                0 => &[&ua],
                1 => &[&ub],
                _ => &[&ua, &ub],
            };
            extra_present = i % 2 == 0;
            let mut text = route(
                "stable",
                upstreams,
                &format!("breaker = {{ volume_threshold = {} }}", 5 + i),
            );
            if extra_present {
                text.push_str(&route("extra", &[&ub], ""));
            }
            gw.rewrite(&text);
            generation += 1;
            gw.wait_generation(generation);
            assert_eq!(last_reload(&gw)["ok"], true);
            let b = gw.admin("GET", "/breakers/stable").json();
            assert_eq!(b["settings"]["volume_threshold"], 5 + i);
        }
        let extra = gw.get("/api/extra").status;
        assert_eq!(extra, if extra_present { 200 } else { 404 }, "rewrite {i}");
    }
    stop.store(true, Ordering::SeqCst);
    let results: Vec<(Vec<String>, bool)> =
        clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert!(
        results.iter().all(|(_, by_flag)| *by_flag),
        "every client was still sending when the last rewrite was done"
    );
    let problems: Vec<String> = results.into_iter().flat_map(|(bad, _)| bad).collect();
    let sent = sent.load(Ordering::SeqCst);
    println!(
        "reload under traffic: {sent} requests, {} failed",
        problems.len()
    );
    assert!(
        sent > 100,
        "traffic ran during the rewrites ({sent} requests)"
    );
    assert!(
        problems.is_empty(),
        "{} of {sent} requests failed: {:?}",
        problems.len(),
        &problems[..problems.len().min(5)]
    );
    assert!(a.hits() > 0 && b.hits() > 0, "upstream changes took effect");

    let metrics = gw.admin("GET", "/metrics").body;
    assert!(
        metrics.contains("fusegate_config_reloads_total{result=\"ok\"} 15"),
        "{metrics}"
    );
    assert!(
        metrics.contains("fusegate_config_reloads_total{result=\"error\"} 5"),
        "{metrics}"
    );
    assert!(
        metrics.contains("fusegate_config_generation 16"),
        "{metrics}"
    );
}

#[test]
fn breaker_state_and_pauses_survive_a_reload() {
    let bad = Upstream::start("bad");
    bad.set_status(500);
    let calm = Upstream::start("calm");
    let breaker = "breaker = { volume_threshold = 3, reset_timeout = \"60s\" }";
    let gw = Gateway::start(&format!(
        "{}{}",
        route("bad", &[&bad.url()], breaker),
        route("calm", &[&calm.url()], "")
    ));
    for _ in 0..3 {
        gw.get("/api/bad");
    }
    gw.wait_state("bad", "open");
    assert_eq!(gw.get("/api/bad").status, 503);
    gw.admin("POST", "/breakers/calm/pause");

    // Change only an unrelated route's settings.
    gw.rewrite(&format!(
        "{}{}",
        route("bad", &[&bad.url()], breaker),
        route(
            "calm",
            &[&calm.url()],
            "breaker = { volume_threshold = 50 }"
        )
    ));
    gw.wait_generation(2);
    let hits = bad.hits();
    let r = gw.get("/api/bad");
    assert_eq!(
        (r.status, r.header("x-fusegate-breaker")),
        (503, Some("open"))
    );
    assert_eq!(bad.hits(), hits, "still open: nothing sent upstream");
    assert_eq!(
        gw.admin("GET", "/breakers/bad").json()["window"]["failures"],
        3
    );
    let r = gw.get("/api/calm");
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (503, "route_paused".into())
    );
}

#[test]
fn a_lower_volume_threshold_applies_to_the_next_request() {
    let up = Upstream::start("tune");
    up.set_status(500);
    let gw = Gateway::start(&route(
        "tune",
        &[&up.url()],
        "breaker = { volume_threshold = 10 }",
    ));
    for _ in 0..3 {
        assert_eq!(gw.get("/api/tune").status, 500);
    }
    gw.wait_window("tune", 3);
    gw.rewrite(&route(
        "tune",
        &[&up.url()],
        "breaker = { volume_threshold = 4 }",
    ));
    gw.wait_generation(2);
    assert_eq!(
        gw.get("/api/tune").status,
        500,
        "the 4th failure is recorded ..."
    );
    gw.wait_state("tune", "open");
    assert_eq!(
        gw.get("/api/tune").status,
        503,
        "... and opened the breaker"
    );
}

#[test]
fn added_routes_start_closed_and_removed_routes_stop_matching() {
    let up = Upstream::start("r");
    let gw = Gateway::start(&route("old", &[&up.url()], ""));
    assert_eq!(gw.get("/api/old").status, 200);
    gw.rewrite_by_rename(&route("new", &[&up.url()], ""));
    gw.wait_generation(2);
    assert_eq!(gw.get("/api/old").status, 404);
    assert_eq!(gw.get("/api/new").status, 200);
    assert_eq!(gw.admin("GET", "/breakers/new").json()["state"], "closed");
    assert_eq!(gw.admin("GET", "/breakers/old").status, 404);
    assert!(!gw.admin("GET", "/metrics").body.contains("route=\"old\""));
}

#[test]
fn sighup_and_post_reload_apply_the_file() {
    let up = Upstream::start("trig");
    let mut gw = Gateway::start(&route("trig", &[&up.url()], ""));
    wait_until("ready", Duration::from_secs(10), || {
        gw.admin("GET", "/ready").status == 200
    });
    gw.signal("HUP");
    gw.wait_generation(2);
    assert!(
        gw.child_alive(),
        "SIGHUP reloads, it does not end the process"
    );

    let r = gw.admin("POST", "/reload");
    assert_eq!(
        (
            r.status,
            r.json()["ok"].clone(),
            r.json()["generation"].clone()
        ),
        (200, true.into(), 3.into())
    );

    // An invalid file (the watcher reports it too); POST /reload answers 422 and keeps
    // the config in force.
    gw.rewrite(&route(
        "trig",
        &[&up.url()],
        "breaker = { error_threshold_percentage = 101 }",
    ));
    wait_until(
        "the watcher to report the bad file",
        Duration::from_secs(10),
        || last_reload(&gw)["ok"] == false,
    );
    let r = gw.admin("POST", "/reload");
    assert_eq!(r.status, 422);
    let body = r.json();
    assert_eq!(body["ok"], false);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("routes.trig.breaker.error_threshold_percentage"),
        "{body}"
    );
    assert_eq!(gw.generation(), 3);
    assert_eq!(gw.get("/api/trig").status, 200);
    let info = last_reload(&gw);
    assert!(info["error"]
        .as_str()
        .unwrap()
        .contains("error_threshold_percentage"));
    assert!(info["at"].is_string());
}

#[test]
fn listener_changes_need_a_restart_and_the_reload_says_so() {
    let up = Upstream::start("l");
    let gw = Gateway::start(&route("l", &[&up.url()], ""));
    let other = common::free_port();
    let moved = gw.header.replace(
        &format!("127.0.0.1:{}", gw.port),
        &format!("127.0.0.1:{other}"),
    );
    std::fs::write(
        &gw.config_path,
        format!("{moved}{}", route("l", &[&up.url()], "")),
    )
    .unwrap();
    let r = send("POST", &gw.admin_url("/reload"), &[], None);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["restart_required"],
        serde_json::json!(["server.listen"])
    );
    assert_eq!(
        gw.get("/api/l").status,
        200,
        "still served on the running listener"
    );
    let config = gw.admin("GET", "/config").json();
    assert_eq!(config["server"]["listen"], format!("127.0.0.1:{}", gw.port));
}

#[test]
fn upstream_health_survives_a_reload_that_leaves_the_upstreams_alone() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let pool = format!(
        "[routes.pool]\nupstreams = [\"{}\", \"{}\"]\nhealth_check = {{ path = \"/\", interval = \"500ms\", timeout = \"2s\", unhealthy_threshold = 1, healthy_threshold = 1 }}\n",
        a.url(),
        b.url()
    );
    let gw = Gateway::start(&pool);
    // b hangs: each check takes the whole check timeout to find it down, so a reload that
    // forgot its health would send it traffic for that long.
    b.set_fault(Fault::Hang);
    let b_unhealthy = || {
        gw.breaker("pool")["upstreams"]
            .as_array()
            .is_some_and(|u| u.iter().any(|u| u["healthy"] == false))
    };
    wait_until("b to be unhealthy", Duration::from_secs(10), b_unhealthy);
    // A reload that changes another route only.
    gw.rewrite(&format!(
        "{pool}\n[routes.other]\nupstreams = [\"{}\"]\n",
        a.url()
    ));
    gw.wait_generation(2);
    assert!(b_unhealthy(), "the reload forgot that b is down");
    let before = a.hits();
    for _ in 0..10 {
        assert_eq!(gw.get("/api/pool/x").status, 200);
    }
    assert_eq!(
        a.hits(),
        before + 10,
        "every request went to the live upstream"
    );
}
