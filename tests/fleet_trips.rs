//! Fleet trips end to end: four real gateways on a real `nats-server` (the shipped
//! config's users and permissions), two plugins failing behind two of them.

mod common;

use common::{ctl, wait_until, Gateway, Nats, Upstream};
use futures_util::StreamExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn gateway(nats: &Nats, cluster: &str, identity: &str, dc: &str, up: &Upstream) -> Gateway {
    let gw = Gateway::start(&format!(
        "[routes.catalog]\nupstreams = [\"{}\"]\n\
         breaker = {{ volume_threshold = 2, reset_timeout = \"1s\", rolling_window = \"10s\", \
         fleet = {{ quorum = 2, scope = [\"dc\"] }} }}\n\n\
         [nats]\nurl = \"nats://gateway:gateway-secret@127.0.0.1:{}\"\ncluster = \"{cluster}\"\n\
         identity = \"{identity}\"\nfacts = {{ dc = \"{dc}\" }}\n",
        up.url(),
        nats.port
    ));
    wait_until(
        "the gateway's NATS connection",
        Duration::from_secs(15),
        || gw.metric("fusegate_nats_connected") == 1.0,
    );
    gw
}

fn state(gw: &Gateway) -> String {
    gw.breaker("catalog")["state"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// Collects the cluster's breaker events as (identity, to, cause).
fn listen(nats: &Nats, cluster: &str) -> Arc<Mutex<Vec<(String, String, String)>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let url = format!("nats://127.0.0.1:{}", nats.port);
    let subject = format!("fusegate.{cluster}.events.breaker");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let client = async_nats::ConnectOptions::with_user_and_password(
                "ops".into(),
                "ops-secret".into(),
            )
            .connect(url)
            .await
            .unwrap();
            let mut sub = client.subscribe(subject).await.unwrap();
            client.flush().await.unwrap();
            ready_tx.send(()).unwrap();
            while let Some(m) = sub.next().await {
                let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
                let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
                sink.lock()
                    .unwrap()
                    .push((s("identity"), s("to"), s("cause")));
            }
        });
    });
    ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    seen
}

#[test]
fn a_quorum_of_open_reports_in_the_same_dc_opens_a_healthy_gateways_breaker() {
    let nats = Nats::start();
    let c = format!("ft{}", std::process::id());
    let events = listen(&nats, &c);
    let failing = Upstream::start("catalog");
    failing.set_status(500);
    let healthy = Upstream::start("catalog");
    let gw1 = gateway(&nats, &c, "gw-1", "DC1", &failing);
    let gw2 = gateway(&nats, &c, "gw-2", "DC1", &failing);
    let gw3 = gateway(&nats, &c, "gw-3", "DC1", &healthy);
    let gw4 = gateway(&nats, &c, "gw-4", "DC2", &healthy);

    // One gateway's plugin fails: its breaker opens; one report is below the quorum.
    for _ in 0..2 {
        gw1.get("/api/catalog/x");
    }
    assert_eq!(state(&gw1), "open");
    wait_until("gw-1's event", Duration::from_secs(10), || {
        events
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.0 == "gw-1" && e.1 == "open")
    });
    assert_eq!(state(&gw3), "closed");

    // A second one in DC1: the quorum of 2 is met; gw-3 opens, gw-4 (DC2) does not.
    for _ in 0..2 {
        gw2.get("/api/catalog/x");
    }
    wait_until(
        "gw-3 to open with the fleet",
        Duration::from_secs(10),
        || state(&gw3) == "open",
    );
    assert_eq!(gw3.get("/api/catalog/x").status, 503);
    assert_eq!(state(&gw4), "closed");
    assert_eq!(healthy.hits(), 0, "gw-3 never asked its healthy plugin");

    // gw-3 recovers on its own: after reset_timeout a probe reaches its healthy plugin.
    wait_until("gw-3 to close again", Duration::from_secs(15), || {
        gw3.get("/api/catalog/x");
        state(&gw3) == "closed"
    });
    assert!(healthy.hits() >= 1);

    // Every transition event says what caused it.
    let (code, out, err) = ctl(&[
        "--nats",
        &format!("nats://ops:ops-secret@127.0.0.1:{}", nats.port),
        "--cluster",
        &c,
        "-I",
        "gw-4",
        "pause",
        "catalog",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    wait_until("the operator's event", Duration::from_secs(10), || {
        events
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.0 == "gw-4" && e.2 == "operator")
    });
    let seen = events.lock().unwrap().clone();
    let cause_of = |id: &str, to: &str| {
        seen.iter()
            .find(|e| e.0 == id && e.1 == to)
            .map(|e| e.2.clone())
    };
    assert_eq!(
        cause_of("gw-1", "open").as_deref(),
        Some("local"),
        "{seen:?}"
    );
    assert_eq!(
        cause_of("gw-3", "open").as_deref(),
        Some("fleet"),
        "{seen:?}"
    );
    assert_eq!(
        cause_of("gw-4", "forced_open").as_deref(),
        Some("operator"),
        "{seen:?}"
    );
    assert!(seen.iter().all(|e| !e.2.is_empty()), "{seen:?}");
    assert!(
        !seen.iter().any(|e| e.0 == "gw-4" && e.1 == "open"),
        "{seen:?}"
    );
}

#[test]
fn fleet_trips_turned_on_by_a_reload_take_effect() {
    let nats = Nats::start();
    let c = format!("fr{}", std::process::id());
    let failing = Upstream::start("catalog");
    failing.set_status(500);
    let healthy = Upstream::start("catalog");
    let section = |up: &Upstream, fleet: &str, identity: &str| {
        format!(
            "[routes.catalog]\nupstreams = [\"{}\"]\n\
             breaker = {{ volume_threshold = 2, reset_timeout = \"30s\" {fleet} }}\n\n\
             [nats]\nurl = \"nats://gateway:gateway-secret@127.0.0.1:{}\"\ncluster = \"{c}\"\n\
             identity = \"{identity}\"\n",
            up.url(),
            nats.port
        )
    };
    let quorum_one = ", fleet = { quorum = 1 }";
    let gw1 = Gateway::start(&section(&failing, quorum_one, "r-1"));
    // gw-2 starts without fleet trips, then a reload turns them on.
    let gw2 = Gateway::start(&section(&healthy, "", "r-2"));
    for gw in [&gw1, &gw2] {
        wait_until("NATS", Duration::from_secs(15), || {
            gw.metric("fusegate_nats_connected") == 1.0
        });
    }
    gw2.rewrite(&section(&healthy, quorum_one, "r-2"));
    assert_eq!(gw2.admin("POST", "/reload").status, 200);
    // gw-1 trips, and is reset to trip again, until gw-2 (listening to the fleet's events
    // once its reload is applied) follows it open.
    wait_until(
        "gw-2 to open with the fleet",
        Duration::from_secs(15),
        || {
            gw1.get("/api/catalog/x");
            if state(&gw1) == "open" && state(&gw2) != "open" {
                gw1.admin("POST", "/breakers/catalog/reset");
            }
            state(&gw2) == "open"
        },
    );
    assert_eq!(healthy.hits(), 0);
}
