//! Background work that follows the current route table: health-check passes, the
//! breaker transitions that time alone makes (the end of a recovery), and the clean-up
//! of idle rate-limit buckets. Each is a pingora background service that stops with the
//! server.

use crate::gateway::Gateway;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs the health-check passes of every route of the current table, each at its own
/// `interval`.
pub struct HealthService {
    pub gateway: Arc<Gateway>,
}

/// How often the health-check scheduler looks for a due pass.
const TICK: Duration = Duration::from_millis(50);

#[async_trait]
impl BackgroundService for HealthService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Next due time per (generation, route): a new table starts its passes at once.
        let mut due: HashMap<(u64, Arc<str>), Instant> = HashMap::new();
        loop {
            let runtime = self.gateway.runtime();
            let now = Instant::now();
            due.retain(|(generation, _), _| *generation == runtime.generation);
            for route in &runtime.routes {
                let Some(interval) = route.health_interval else {
                    continue;
                };
                let key = (runtime.generation, route.name.clone());
                if due.get(&key).is_some_and(|t| *t > now) {
                    continue;
                }
                due.insert(key, now + interval);
                let route = route.clone();
                tokio::spawn(async move { route.upstreams.run_health_check().await });
            }
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// How often idle per-client buckets are dropped.
const MAINTAIN_EVERY: Duration = Duration::from_secs(10);

/// Drops idle per-client rate-limit buckets of every route now and then.
pub struct RateLimitMaintenance {
    pub gateway: Arc<Gateway>,
}

#[async_trait]
impl BackgroundService for RateLimitMaintenance {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(MAINTAIN_EVERY) => self.gateway.registries.rate_limits.values().iter().for_each(|l| l.maintain()),
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// How often breakers are checked for a recovery that has run its course.
const BREAKER_TICK: Duration = Duration::from_millis(200);

/// Moves recovering breakers to closed when their `recovery_duration` has passed, so
/// metrics and events show the close even when no request comes to make it.
pub struct BreakerTicker {
    pub gateway: Arc<Gateway>,
}

#[async_trait]
impl BackgroundService for BreakerTicker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            let runtime = self.gateway.runtime();
            let now = self.gateway.clock.now_ms();
            for route in &runtime.routes {
                if let Some(t) = route.breaker.advance(&route.settings, now) {
                    self.gateway.on_transition(route, t);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(BREAKER_TICK) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Takes the dashboard's snapshot once a second while anyone watches: a dashboard stream
/// on the admin port, or the control plane publishing snapshots (`nats.snapshot_interval`).
pub struct LiveSampler {
    pub gateway: Arc<Gateway>,
}

/// The snapshot period: the dashboard's figures are per second.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

#[async_trait]
impl BackgroundService for LiveSampler {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let gw = &self.gateway;
        let mut sampler = crate::live::Sampler::default();
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let published = gw
                .runtime()
                .config
                .nats
                .as_ref()
                .is_some_and(|n| !n.snapshot_interval.0.is_zero());
            let watchers = gw.live.watchers();
            gw.metrics
                .dashboard_streams
                .set(i64::try_from(watchers).unwrap_or(i64::MAX));
            if watchers > 0 || published {
                let snapshot = sampler.sample(gw, gw.clock.now_ms());
                gw.live.publish_snapshot(snapshot);
            }
        }
    }
}
