//! The JSON objects the admin port (and the control plane) report: breaker `B`, `/info`,
//! `/health`, `/config`.

use crate::config::{BreakerConfig, Config};
use crate::gateway::Gateway;
use crate::runtime::Route;
use serde::Serialize;
use serde_json::Value;
use std::time::SystemTime;

#[derive(Debug, Serialize)]
pub struct WindowView {
    pub total: u64,
    pub failures: u64,
    pub slow: u64,
    pub failure_percentage: f64,
}

impl WindowView {
    /// A breaker window's counts, the percentage to one decimal.
    pub fn of(w: &crate::breaker::Counts) -> Self {
        WindowView {
            total: w.total,
            failures: w.failures,
            slow: w.slow,
            failure_percentage: (w.failure_percentage() * 10.0).round() / 10.0,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct UpstreamView {
    pub addr: String,
    pub healthy: bool,
}

/// `B` of SPEC §7.
#[derive(Debug, Serialize)]
pub struct BreakerView {
    pub route: String,
    pub state: &'static str,
    pub mode: &'static str,
    pub since: String,
    pub window: WindowView,
    pub rejected_total: u64,
    pub retry_after_secs: Option<u64>,
    /// How long the breaker stays open when it (re)opens now: `reset_timeout`, doubled
    /// per reopening from half-open up to `reset_timeout_max`.
    pub open_timeout_ms: u64,
    /// While recovering: the share of requests admitted now, in percent (10 to 100).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admit_percentage: Option<f64>,
    pub upstreams: Vec<UpstreamView>,
    pub settings: BreakerConfig,
    /// The route's cache, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheView>,
}

#[derive(Debug, Serialize)]
pub struct CacheView {
    pub entries: usize,
    pub bytes: usize,
    pub max_bytes: usize,
}

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

pub fn breaker(gw: &Gateway, route: &Route) -> BreakerView {
    let now = gw.clock.now_ms();
    let snap = route.breaker.snapshot(&route.settings, now);
    BreakerView {
        route: route.name.to_string(),
        state: snap.state.as_str(),
        mode: route.settings.mode.as_str(),
        since: rfc3339(gw.clock.wall(snap.since_ms)),
        window: WindowView::of(&snap.window),
        rejected_total: snap.rejected_total,
        retry_after_secs: snap.retry_after_secs,
        open_timeout_ms: snap.open_ms,
        admit_percentage: snap.admit_permille.map(|p| p as f64 / 10.0),
        upstreams: route
            .upstreams
            .list()
            .iter()
            .enumerate()
            .map(|(i, u)| UpstreamView {
                addr: u.authority.clone(),
                healthy: route.upstreams.is_healthy(i),
            })
            .collect(),
        settings: route.breaker_config(),
        cache: route.cache.as_ref().map(|c| CacheView {
            entries: c.storage.entries(),
            bytes: c.storage.used_bytes(),
            max_bytes: c.storage.max_bytes(),
        }),
    }
}

pub fn breakers<'a>(
    gw: &Gateway,
    routes: impl IntoIterator<Item = &'a std::sync::Arc<Route>>,
) -> Value {
    let list: Vec<BreakerView> = routes.into_iter().map(|r| breaker(gw, r)).collect();
    serde_json::json!({ "breakers": list })
}

#[derive(Debug, Serialize)]
pub struct ProbeView {
    pub name: String,
    pub healthy: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
}

/// `/health`: every active probe's latest result; healthy when all are.
pub fn health(gw: &Gateway) -> (bool, Value) {
    let runtime = gw.runtime();
    let mut probes = Vec::new();
    for route in &runtime.routes {
        if !route.upstreams.has_health_check() {
            continue;
        }
        for (i, u) in route.upstreams.list().iter().enumerate() {
            let last = route.upstreams.probe(i);
            probes.push(ProbeView {
                name: format!("{}/{}", route.name, u.authority),
                healthy: route.upstreams.is_healthy(i),
                error: last.as_ref().and_then(|p| p.error.clone()),
                latency_ms: last.map(|p| p.latency_ms),
            });
        }
    }
    if gw.nats_enabled {
        probes.push(ProbeView {
            name: "nats".into(),
            healthy: gw.nats_connected() && gw.fleet_state_error().is_none(),
            error: if !gw.nats_connected() {
                Some("not connected".to_string())
            } else {
                gw.fleet_state_error()
            },
            latency_ms: None,
        });
    }
    let healthy = probes.iter().all(|p| p.healthy);
    (
        healthy,
        serde_json::json!({ "healthy": healthy, "probes": probes }),
    )
}

/// `/info`.
pub fn info(gw: &Gateway) -> Value {
    let runtime = gw.runtime();
    let last_reload = gw.last_reload.load();
    let last_reload = match last_reload.as_ref() {
        Some(r) => serde_json::json!({"ok": r.ok, "at": rfc3339(r.at), "error": r.error}),
        None => serde_json::json!({"ok": true, "at": null, "error": null}),
    };
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "identity": gw.identity,
        "facts": gw.facts,
        "uptime_secs": gw.started.elapsed().as_secs(),
        "config_path": gw.config_path.as_ref().map(|p| p.display().to_string()),
        "config_generation": runtime.generation,
        "last_reload": last_reload,
        "log_level": log::max_level().as_str().to_ascii_lowercase(),
        "routes": runtime.routes.iter().map(|r| r.name.as_ref()).collect::<Vec<_>>(),
    })
}

/// `/config`: the config in force with secrets replaced by `"***"`.
pub fn config(config: &Config) -> Value {
    let mut v = serde_json::to_value(config).unwrap_or(Value::Null);
    redact(&mut v, &["admin", "token"]);
    if let Some(nats) = v.get_mut("nats").filter(|n| !n.is_null()) {
        if let Some(url) = nats.get("url").and_then(Value::as_str) {
            nats["url"] = Value::from(crate::control::url::mask(url));
        }
        for key in ["password", "token"] {
            if nats.get(key).is_some_and(|s| !s.is_null()) {
                nats[key] = Value::from("***");
            }
        }
    }
    v
}

fn redact(v: &mut Value, path: &[&str]) {
    let mut cur = v;
    for key in path {
        match cur.get_mut(*key) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if cur.as_str().is_some_and(|s| !s.is_empty()) {
        *cur = Value::from("***");
    }
}
