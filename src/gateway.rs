//! The state one fusegate process shares between its services: the current route table
//! (one `ArcSwap` snapshot), the breakers by route name, metrics, the clock, and the
//! lifecycle (requests in flight, draining).

use crate::access_log::AccessLog;
use crate::breaker::Transition;
use crate::clock::Clock;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::otel::Otel;
use crate::runtime::{Registries, Route, Runtime};
use arc_swap::{ArcSwap, ArcSwapOption};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime};
use tokio::sync::mpsc;

/// An operator action on breakers (admin port, control plane).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerAction {
    Pause,
    Resume,
    Flip,
    Reset,
}

impl BreakerAction {
    pub fn parse(s: &str) -> Option<BreakerAction> {
        match s {
            "pause" => Some(BreakerAction::Pause),
            "resume" => Some(BreakerAction::Resume),
            "flip" => Some(BreakerAction::Flip),
            "reset" => Some(BreakerAction::Reset),
            _ => None,
        }
    }
}

/// What made a breaker change state: its own traffic, the fleet (a fleet trip), or an
/// operator. Carried by every transition event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    Local,
    Fleet,
    Operator,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Local => "local",
            Cause::Fleet => "fleet",
            Cause::Operator => "operator",
        }
    }
}

/// The running access log and span exporter, if any.
pub type Observers = (Option<Arc<AccessLog>>, Option<Arc<Otel>>);

/// The access log and span exporter for `config`: those of `running` kept where their
/// section did not change (a reload that leaves them alone keeps the file, queue and
/// exporter), new ones started where it did. Errors name the key.
pub fn observers(
    config: &Config,
    running: Option<&Gateway>,
    metrics: &Metrics,
) -> Result<Observers, String> {
    let access_log = keep_or_start(
        running.and_then(|g| g.access_log.load_full()),
        config.access_log.as_ref(),
        AccessLog::config,
        |c| AccessLog::start(c, metrics.access_log_dropped.clone()),
    )
    .map_err(|e| format!("access_log.path: {e}"))?;
    let otel = keep_or_start(
        running.and_then(|g| g.otel.load_full()),
        config.tracing.as_ref(),
        Otel::config,
        |c| Otel::start(c, metrics.trace_spans_dropped.clone()),
    )
    .map_err(|e| format!("tracing.otlp_endpoint: {e}"))?;
    Ok((access_log, otel))
}

/// `current` when it runs with `config`, nothing without a config, else a new one.
fn keep_or_start<T, C: PartialEq>(
    current: Option<Arc<T>>,
    config: Option<&C>,
    running: impl Fn(&T) -> &C,
    start: impl FnOnce(&C) -> Result<T, String>,
) -> Result<Option<Arc<T>>, String> {
    match (current, config) {
        (_, None) => Ok(None),
        (Some(t), Some(c)) if running(&t) == c => Ok(Some(t)),
        (_, Some(c)) => start(c).map(|t| Some(Arc::new(t))),
    }
}

/// The outcome of the last reload attempt.
#[derive(Debug, Clone)]
pub struct ReloadStatus {
    pub ok: bool,
    pub at: SystemTime,
    pub error: Option<String>,
}

/// Something to publish on the control plane's event subjects.
#[derive(Debug, Clone)]
pub enum ControlEvent {
    Breaker(serde_json::Value),
    Config(serde_json::Value),
}

/// Everything the proxy, the admin port and background services read.
#[derive(Debug)]
pub struct Gateway {
    runtime: ArcSwap<Runtime>,
    /// Breakers, rate limiters and cache storages by route name; metric families.
    pub registries: Registries,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    pub started: Instant,
    pub config_path: Option<PathBuf>,
    /// This instance's name: `nats.identity`, else the host name.
    pub identity: String,
    pub facts: BTreeMap<String, String>,
    pub last_reload: ArcSwap<Option<ReloadStatus>>,
    /// The access log in force, when `[access_log]` is set.
    pub access_log: ArcSwapOption<AccessLog>,
    /// The span exporter in force, when `[tracing]` is set.
    pub otel: ArcSwapOption<Otel>,
    /// Live per-route figures and transitions for the dashboard.
    pub live: crate::live::Live,
    /// Whether `[nats]` is configured.
    pub nats_enabled: bool,
    nats_connected: AtomicBool,
    events: OnceLock<mpsc::Sender<ControlEvent>>,
    shutdown: tokio::sync::Notify,
    inflight: AtomicUsize,
    ready: AtomicBool,
    /// With `nats.fleet_state`: the fleet state is not yet applied (or given up on).
    fleet_pending: AtomicBool,
    /// Why the fleet state cannot be followed (JetStream missing, ...), for /health.
    fleet_state_error: std::sync::Mutex<Option<String>>,
    draining: AtomicBool,
}

impl Gateway {
    /// Builds generation 1 of the route table from a validated config.
    pub fn new(config: Config, config_path: Option<PathBuf>) -> Result<Arc<Gateway>, String> {
        let clock = Clock::new();
        let metrics = Arc::new(Metrics::new().map_err(|e| format!("metrics: {e}"))?);
        let registries = Registries::new(metrics.clone());
        let (identity, facts) = match &config.nats {
            Some(n) if !n.identity.is_empty() => (n.identity.clone(), n.facts.clone()),
            Some(n) => (host_name(), n.facts.clone()),
            None => (host_name(), BTreeMap::new()),
        };
        let nats_enabled = config.nats.is_some();
        let fleet_state = config.nats.as_ref().is_some_and(|n| n.fleet_state);
        let (access_log, otel) = observers(&config, None, &metrics)?;
        let runtime = Runtime::build(Arc::new(config), &registries, 1, clock.now_ms())?;
        metrics.config_generation.set(1);
        Ok(Arc::new(Gateway {
            runtime: ArcSwap::from_pointee(runtime),
            registries,
            metrics,
            clock,
            started: Instant::now(),
            config_path,
            identity,
            facts,
            last_reload: ArcSwap::from_pointee(None),
            access_log: ArcSwapOption::new(access_log),
            otel: ArcSwapOption::new(otel),
            live: crate::live::Live::default(),
            nats_enabled,
            nats_connected: AtomicBool::new(false),
            events: OnceLock::new(),
            shutdown: tokio::sync::Notify::new(),
            inflight: AtomicUsize::new(0),
            ready: AtomicBool::new(false),
            fleet_pending: AtomicBool::new(fleet_state),
            fleet_state_error: std::sync::Mutex::new(None),
            draining: AtomicBool::new(false),
        }))
    }

    /// The current route table. Hold it for the whole of a request.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Puts a new route table in force. Requests already running keep the old one.
    pub fn swap_runtime(&self, next: Runtime) {
        self.runtime.store(Arc::new(next));
    }

    /// Reports a breaker transition its own traffic caused: metrics, log, control-plane
    /// event.
    pub fn on_transition(&self, route: &Route, t: Transition) {
        self.on_transition_by(route, t, Cause::Local)
    }

    /// Reports a breaker transition and what caused it.
    pub fn on_transition_by(&self, route: &Route, t: Transition, cause: Cause) {
        route.metrics.transition(t.to);
        let window = route.breaker.snapshot(&route.settings, t.at_ms).window;
        log::warn!(
            "breaker {}: {} -> {} ({}; window: {} requests, {} failed, {} slow)",
            route.name,
            t.from.as_str(),
            t.to.as_str(),
            cause.as_str(),
            window.total,
            window.failures,
            window.slow
        );
        let event = serde_json::json!({
            "identity": self.identity,
            "facts": self.facts,
            "route": route.name.as_ref(),
            "from": t.from.as_str(),
            "to": t.to.as_str(),
            "cause": cause.as_str(),
            "at": humantime::format_rfc3339_millis(self.clock.wall(t.at_ms)).to_string(),
            "window": {
                "total": window.total,
                "failures": window.failures,
                "slow": window.slow,
                "failure_percentage": window.failure_percentage(),
            },
        });
        self.live.publish_transition(&event);
        self.publish(ControlEvent::Breaker(event));
    }

    /// Hands an event to the control plane without waiting; dropped when none is
    /// connected or its buffer is full.
    pub fn publish(&self, event: ControlEvent) {
        if let Some(tx) = self.events.get() {
            if tx.try_send(event).is_err() {
                log::debug!("control-plane event dropped (buffer full)");
            }
        }
    }

    /// Where [`Gateway::publish`] sends events; set once by the control plane.
    pub fn set_event_sink(&self, tx: mpsc::Sender<ControlEvent>) {
        let _ = self.events.set(tx);
    }

    pub fn set_nats_connected(&self, connected: bool) {
        self.nats_connected.store(connected, Ordering::Release);
        self.metrics.nats_connected.set(i64::from(connected));
    }

    pub fn nats_connected(&self) -> bool {
        self.nats_connected.load(Ordering::Acquire)
    }

    /// Asks the server to drain and exit, as SIGTERM does.
    pub fn request_shutdown(&self) {
        self.shutdown.notify_one();
    }

    /// Completes when [`Gateway::request_shutdown`] is called.
    pub async fn shutdown_requested(&self) {
        self.shutdown.notified().await;
    }

    /// Empties a route's cache: `{"route","purged":N}`, or an error naming why not
    /// (`no_route`: no such route; `no_cache`: the route has no cache).
    pub fn purge_cache(&self, route: &str) -> Result<serde_json::Value, &'static str> {
        let runtime = self.runtime();
        let r = runtime.route(route).ok_or("no_route")?;
        let cache = r.cache.as_ref().ok_or("no_cache")?;
        let purged = cache.storage.purge_all();
        log::info!("cache of route {route} purged: {purged} entries");
        Ok(serde_json::json!({"route": route, "purged": purged}))
    }

    /// Applies an operator action to one route, or to every route when `route` is `None`.
    /// Returns the routes acted on, or `None` when the named route does not exist.
    pub fn breaker_action(
        &self,
        route: Option<&str>,
        action: BreakerAction,
    ) -> Option<Vec<Arc<Route>>> {
        let runtime = self.runtime();
        let targets: Vec<Arc<Route>> = match route {
            Some(name) => vec![runtime.route(name)?.clone()],
            None => runtime.routes.clone(),
        };
        let now = self.clock.now_ms();
        for r in &targets {
            let t = match action {
                BreakerAction::Pause => r.breaker.pause(now),
                BreakerAction::Resume => r.breaker.resume(now),
                BreakerAction::Flip => r.breaker.flip(now),
                BreakerAction::Reset => r.breaker.reset(now),
            };
            if let Some(t) = t {
                log::info!("operator {action:?} on route {}", r.name);
                self.on_transition_by(r, t, Cause::Operator);
            }
        }
        Some(targets)
    }

    /// Counts a request as in flight until the guard is dropped.
    pub fn track_request(self: &Arc<Self>) -> InflightGuard {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        InflightGuard(self.clone())
    }

    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Acquire)
    }

    /// Marks the listeners as up.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Ready: listeners up, the fleet state applied (or waited for long enough), and not
    /// draining.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
            && !self.fleet_pending.load(Ordering::Acquire)
            && !self.is_draining()
    }

    /// The fleet state has been applied, or is not coming in time: readiness may follow.
    pub fn fleet_state_settled(&self) {
        self.fleet_pending.store(false, Ordering::Release);
    }

    pub fn set_fleet_state_error(&self, e: Option<String>) {
        *self
            .fleet_state_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = e;
    }

    pub fn fleet_state_error(&self) -> Option<String> {
        self.fleet_state_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "fusegate".into())
}

/// Decrements the in-flight count when dropped.
#[derive(Debug)]
pub struct InflightGuard(Arc<Gateway>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}
