//! The gateway's NATS connection: answers fleet requests, publishes events, reports its
//! connection state. NATS being down, at start or later, affects only this service: it
//! keeps reconnecting with backoff while the proxy serves as usual.

use super::connect::NatsAuth;
use super::{
    breaker_events_subject, config_events_subject, handle, read_subject, write_subject, After,
    Channel,
};
use crate::config::NatsConfig;
use crate::gateway::{ControlEvent, Gateway};
use async_nats::Event;
use async_trait::async_trait;
use futures_util::StreamExt;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Events waiting to be published; beyond this, new ones are dropped (NATS is down).
const EVENT_BUFFER: usize = 1024;

/// The control-plane background service.
pub struct ControlPlane {
    pub gateway: Arc<Gateway>,
    pub config: NatsConfig,
}

#[async_trait]
impl BackgroundService for ControlPlane {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let gw = self.gateway.clone();
        if self.config.fleet_state {
            // Readiness waits for the fleet state at most this long.
            let g = gw.clone();
            tokio::spawn(async move {
                tokio::time::sleep(super::fleet_state::START_WAIT).await;
                g.fleet_state_settled();
            });
        }
        let (tx, mut events) = mpsc::channel(EVENT_BUFFER);
        gw.set_event_sink(tx);
        let shown = super::url::mask(&self.config.url);
        let url = match super::url::parse(&self.config.url) {
            Ok(u) => u,
            Err(e) => {
                // `check` refuses such a config; this is only reached by a config that
                // bypassed it.
                log::error!("control plane disabled: nats.url: {e}");
                return;
            }
        };
        let options = match NatsAuth::from(&self.config)
            .options(
                &format!("fusegate {}", gw.identity),
                url.credentials.as_ref(),
            )
            .await
        {
            Ok(o) => o,
            Err(e) => {
                log::error!("control plane disabled: {e}");
                return;
            }
        };
        let state = gw.clone();
        let options = options
            .retry_on_initial_connect()
            .max_reconnects(None)
            .event_callback(move |event| {
                let state = state.clone();
                async move { on_event(&state, event) }
            });
        let client = match options.connect(url.servers).await {
            Ok(c) => c,
            Err(e) => {
                log::error!("control plane disabled: cannot use {shown}: {e}");
                return;
            }
        };
        let cluster = &self.config.cluster;
        let (mut reads, mut writes) = match (
            client.subscribe(read_subject(cluster)).await,
            client.subscribe(write_subject(cluster)).await,
        ) {
            (Ok(r), Ok(w)) => (r, w),
            (Err(e), _) | (_, Err(e)) => {
                log::error!("control plane disabled: cannot subscribe: {e}");
                return;
            }
        };
        tokio::spawn(publish_snapshots(
            gw.clone(),
            client.clone(),
            cluster.clone(),
        ));
        if self.config.fleet_state {
            let follower = super::fleet_state::Follower::new(gw.clone());
            tokio::spawn(follower.run(client.clone(), cluster.clone()));
        }
        log::info!(
            "control plane: {} as {:?} on {}",
            shown,
            gw.identity,
            read_subject(cluster).trim_end_matches(".read")
        );
        // The fleet's breaker events, for fleet trips, heard only while some route has
        // `breaker.fleet` (looked at again after each reload): a fleet of N gateways
        // hearing each other's events is N x N messages.
        let mut fleet_events = None;
        follow_fleet_events(&gw, &client, cluster, &mut fleet_events).await;
        let mut trips = super::fleet_trips::FleetTrips::new(gw.clone());
        loop {
            let (message, channel) = tokio::select! {
                m = reads.next() => (m, Channel::Read),
                m = writes.next() => (m, Channel::Write),
                Some(m) = next_event(&mut fleet_events) => {
                    if let Ok(event) = serde_json::from_slice::<serde_json::Value>(&m.payload) {
                        trips.on_event(&event, std::time::Instant::now());
                    }
                    continue;
                }
                e = events.recv() => {
                    if let Some(e) = e {
                        let (subject, body) = match e {
                            ControlEvent::Breaker(v) => (breaker_events_subject(cluster), v),
                            ControlEvent::Config(v) => {
                                follow_fleet_events(&gw, &client, cluster, &mut fleet_events)
                                    .await;
                                (config_events_subject(cluster), v)
                            }
                        };
                        if let Err(err) = client.publish(subject, body.to_string().into()).await {
                            log::debug!("event not published: {err}");
                        }
                    }
                    continue;
                }
                _ = shutdown.changed() => return,
            };
            let Some(message) = message else {
                log::error!("control plane: subscription ended");
                return;
            };
            let Some(reply_to) = message.reply.clone() else {
                continue;
            };
            let gw = gw.clone();
            let client = client.clone();
            tokio::spawn(async move {
                let payload = message.payload.clone();
                let answered = {
                    let gw = gw.clone();
                    tokio::task::spawn_blocking(move || handle(&gw, channel, &payload)).await
                };
                let Ok(Some((reply, after))) = answered else {
                    return;
                };
                match serde_json::to_vec(&reply) {
                    Ok(body) => {
                        if let Err(e) = client.publish(reply_to, body.into()).await {
                            log::warn!("control plane: reply not sent: {e}");
                        }
                        let _ = client.flush().await;
                    }
                    Err(e) => log::error!("control plane: reply not encoded: {e}"),
                }
                if after == After::Shutdown {
                    let delay = Duration::from_millis(fastrand::u64(0..=2_000));
                    log::warn!("shutdown requested over NATS; draining in {delay:?}");
                    tokio::time::sleep(delay).await;
                    gw.request_shutdown();
                }
            });
        }
    }
}

/// Publishes the dashboard snapshot every `nats.snapshot_interval` (read again each
/// time, so a reload changes it; 0 pauses it) for `fusegate dashboard`.
async fn publish_snapshots(gw: Arc<Gateway>, client: async_nats::Client, cluster: String) {
    let subject = super::snapshot_subject(&cluster);
    loop {
        let every = gw
            .runtime()
            .config
            .nats
            .as_ref()
            .map_or(Duration::ZERO, |n| n.snapshot_interval.0);
        tokio::time::sleep(if every.is_zero() {
            crate::background::SAMPLE_EVERY
        } else {
            every
        })
        .await;
        let snapshot = gw.live.latest();
        if every.is_zero() || snapshot.is_empty() {
            continue;
        }
        if let Err(e) = client.publish(subject.clone(), snapshot).await {
            log::debug!("snapshot not published: {e}");
        }
    }
}

/// Subscribes to the cluster's breaker events while a route of the table in force has
/// fleet trips, and unsubscribes when none has.
async fn follow_fleet_events(
    gw: &Gateway,
    client: &async_nats::Client,
    cluster: &str,
    sub: &mut Option<async_nats::Subscriber>,
) {
    let wanted = gw.runtime().routes.iter().any(|r| r.fleet().is_some());
    match (wanted, sub.is_some()) {
        (true, false) => match client.subscribe(breaker_events_subject(cluster)).await {
            Ok(s) => *sub = Some(s),
            Err(e) => log::warn!("control plane: no fleet trips: cannot subscribe to events: {e}"),
        },
        (false, true) => *sub = None,
        _ => {}
    }
}

/// The next fleet event, or never when there is no subscription.
async fn next_event(sub: &mut Option<async_nats::Subscriber>) -> Option<async_nats::Message> {
    match sub {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

fn on_event(gw: &Gateway, event: Event) {
    match event {
        Event::Connected => {
            log::info!("control plane: connected to NATS");
            gw.set_nats_connected(true);
        }
        Event::Disconnected | Event::Closed => {
            log::warn!("control plane: NATS connection lost; reconnecting");
            gw.set_nats_connected(false);
        }
        other => log::warn!("control plane: {other}"),
    }
}
