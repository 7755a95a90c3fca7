//! Fleet state (`nats.fleet_state`): operator pauses recorded as desired state in the
//! JetStream key-value bucket `fusegate_<cluster>`, so that they hold across gateway
//! restarts and reach gateways that join later.
//!
//! One key per route (`_all` for an action on every route). Its value is a
//! [`RouteState`]: the pauses in force, each with the filter it was given (so `pause -W
//! dc=DC1` then `pause -W dc=DC2` holds both), and the last action, which makes the key's
//! revisions the route's history. `ctl` writes a value after acting (compare-and-set on
//! the key's revision); every gateway reads the bucket at start, on reconnect and on
//! each change, and applies to itself what matches its identity and facts.
//!
//! `flip` is recorded in the history but holds nothing: what it does depends on each
//! gateway's state at that moment.

use super::Filter;
use crate::gateway::BreakerAction;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::SystemTime;

/// Past values kept per key (JetStream's limit for a key-value bucket).
pub const HISTORY: i64 = 64;

/// The key of an action without a route.
pub const ALL_ROUTES: &str = "_all";

/// The bucket of a cluster.
pub fn bucket(cluster: &str) -> String {
    format!("fusegate_{cluster}")
}

/// The key of a route (`None`: every route).
pub fn key(route: Option<&str>) -> &str {
    route.unwrap_or(ALL_ROUTES)
}

/// Whether an action is recorded as fleet state.
pub fn is_recorded(action: &str) -> bool {
    matches!(action, "pause" | "resume" | "flip" | "reset")
}

/// One operator action as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub action: String,
    #[serde(default)]
    pub route: Option<String>,
    #[serde(default)]
    pub filter: Filter,
    pub who: String,
    /// RFC 3339, seconds.
    pub at: String,
    /// For `pause --for`: when the pause ends by itself (RFC 3339, seconds).
    #[serde(default)]
    pub until: Option<String>,
}

impl Record {
    /// Whether the pause has ended by `now` (the gateway's clock).
    pub fn expired(&self, now: SystemTime) -> bool {
        self.until
            .as_deref()
            .and_then(|u| humantime::parse_rfc3339(u).ok())
            .is_some_and(|end| now >= end)
    }
}

/// A key's value: the pauses in force and the last action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteState {
    #[serde(default)]
    pub active: Vec<Record>,
    pub last: Record,
}

impl RouteState {
    /// The state after `rec`: a pause replaces the pause with the same filter; a resume
    /// or reset without a filter clears every pause, with one clears that filter's; a
    /// flip holds nothing.
    pub fn after(prev: Option<RouteState>, rec: Record) -> RouteState {
        let mut active = prev.map(|p| p.active).unwrap_or_default();
        match rec.action.as_str() {
            "pause" => {
                active.retain(|r| r.filter != rec.filter);
                active.push(rec.clone());
            }
            "resume" | "reset" if rec.filter == Filter::default() => active.clear(),
            "resume" | "reset" => active.retain(|r| r.filter != rec.filter),
            _ => {}
        }
        RouteState { active, last: rec }
    }

    /// Whether a gateway with this identity and these facts is to hold the route paused
    /// at `now`.
    pub fn paused_for(
        &self,
        identity: &str,
        facts: &BTreeMap<String, String>,
        now: SystemTime,
    ) -> bool {
        self.active
            .iter()
            .any(|r| r.filter.matches(identity, facts) && !r.expired(now))
    }
}

/// Reads a stored value; the error names the key.
pub fn decode(key: &str, value: &[u8]) -> Result<RouteState, String> {
    serde_json::from_slice(value).map_err(|e| format!("fleet state key {key:?} is unreadable: {e}"))
}

/// How long the gateway waits for the fleet state at start before it turns ready anyway.
pub const START_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// How often expiring pauses and the connection are looked at.
const TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// A gateway's side: applies the bucket's desired state to itself, as it was at start
/// (or reconnect) and as it changes; ends pauses whose time is up.
///
/// It reconciles per route: a route is to be held paused when its own key or the `_all`
/// key holds a pause meant for this gateway; a route that is so held and no longer should
/// be is resumed. Only pause and resume are ever applied from the bucket (the `ctl` that
/// recorded an action has already applied it directly), so nothing is done twice.
pub struct Follower {
    gateway: std::sync::Arc<crate::gateway::Gateway>,
    /// The last state of each key.
    states: BTreeMap<String, RouteState>,
    /// The routes the fleet state holds paused here.
    held: std::collections::BTreeSet<String>,
}

impl Follower {
    pub fn new(gateway: std::sync::Arc<crate::gateway::Gateway>) -> Self {
        Follower {
            gateway,
            states: BTreeMap::new(),
            held: std::collections::BTreeSet::new(),
        }
    }

    /// Follows the bucket until the process ends: reads it whole, then watches it; on a
    /// lost watch or a reconnect, reads it whole again.
    pub async fn run(mut self, client: async_nats::Client, cluster: String) {
        let js = async_nats::jetstream::new(client.clone());
        loop {
            match self.follow_once(&js, &client, &cluster).await {
                Ok(()) => log::info!("fleet state: reading {} again", bucket(&cluster)),
                Err(e) => {
                    if self.gateway.fleet_state_error().as_deref() != Some(e.as_str()) {
                        log::warn!("fleet state: {e}; breakers take only local and direct actions");
                    }
                    self.gateway.set_fleet_state_error(Some(e));
                    self.gateway.fleet_state_settled();
                    tokio::time::sleep(START_WAIT).await;
                }
            }
        }
    }

    async fn follow_once(
        &mut self,
        js: &async_nats::jetstream::Context,
        client: &async_nats::Client,
        cluster: &str,
    ) -> Result<(), String> {
        use futures_util::StreamExt;
        let store = open_bucket(js, cluster).await?;
        // Everything written after this sequence is watched; what is written while the
        // keys are read is read and watched both, which is harmless.
        let last = store
            .status()
            .await
            .map_err(|e| format!("bucket status: {e}"))?
            .info
            .state
            .last_sequence;
        let mut keys = store
            .keys()
            .await
            .map_err(|e| format!("listing keys: {e}"))?;
        let mut states = BTreeMap::new();
        while let Some(k) = keys.next().await {
            let Ok(k) = k else { continue };
            match store.entry(k.clone()).await {
                Ok(Some(e)) if e.operation == async_nats::jetstream::kv::Operation::Put => {
                    match decode(&e.key, &e.value) {
                        Ok(s) => {
                            states.insert(e.key, s);
                        }
                        Err(err) => log::warn!("{err}; ignored"),
                    }
                }
                Ok(_) => {}
                Err(err) => log::warn!("fleet state key {k:?}: {err}"),
            }
        }
        self.states = states;
        self.reconcile(SystemTime::now());
        self.gateway.set_fleet_state_error(None);
        self.gateway.fleet_state_settled();
        let mut watch = store
            .watch_all_from_revision(last + 1)
            .await
            .map_err(|e| format!("watching: {e}"))?;
        let mut tick = tokio::time::interval(TICK);
        let mut was_connected = true;
        loop {
            tokio::select! {
                e = watch.next() => match e {
                    Some(Ok(e)) => {
                        match e.operation {
                            async_nats::jetstream::kv::Operation::Put => {
                                self.on_value(&e.key, &e.value)
                            }
                            _ => {
                                self.states.remove(&e.key);
                            }
                        }
                        self.reconcile(SystemTime::now());
                    }
                    Some(Err(err)) => return Err(format!("watch: {err}")),
                    None => return Ok(()),
                },
                _ = tick.tick() => {
                    self.reconcile(SystemTime::now());
                    let connected = matches!(
                        client.connection_state(),
                        async_nats::connection::State::Connected
                    );
                    if connected && !was_connected {
                        return Ok(());
                    }
                    was_connected = connected;
                }
            }
        }
    }

    /// A key's new value, seen as it was written.
    fn on_value(&mut self, key: &str, value: &[u8]) {
        let state = match decode(key, value) {
            Ok(s) => s,
            Err(e) => {
                log::warn!("{e}; ignored");
                return;
            }
        };
        let gw = &self.gateway;
        // The ctl that recorded a pause applied it directly to the gateways it reached:
        // from now on the fleet state holds those routes, and ends their pause with it
        // (also when it arrives with its time already up).
        if state.last.action == "pause" && state.last.filter.matches(&gw.identity, &gw.facts) {
            self.held.extend(self.routes_of(key));
        }
        self.states.insert(key.to_string(), state);
    }

    /// The routes a key is about, among this gateway's.
    fn routes_of(&self, key: &str) -> Vec<String> {
        let runtime = self.gateway.runtime();
        runtime
            .routes
            .iter()
            .map(|r| r.name.to_string())
            .filter(|name| key == ALL_ROUTES || name == key)
            .collect()
    }

    /// Whether the fleet state holds `route` paused here at `now`.
    fn wanted(&self, route: &str, now: SystemTime) -> bool {
        let gw = &self.gateway;
        [route, ALL_ROUTES].iter().any(|k| {
            self.states
                .get(*k)
                .is_some_and(|s| s.paused_for(&gw.identity, &gw.facts, now))
        })
    }

    /// Pauses what the fleet state wants paused and is not yet, resumes what it held and
    /// no longer wants.
    fn reconcile(&mut self, now: SystemTime) {
        for route in self.routes_of(ALL_ROUTES) {
            match (self.wanted(&route, now), self.held.contains(&route)) {
                (true, false) => {
                    self.act(&route, BreakerAction::Pause);
                    self.held.insert(route);
                }
                (false, true) => {
                    log::info!("fleet state: the pause of {route} has ended");
                    self.act(&route, BreakerAction::Resume);
                    self.held.remove(&route);
                }
                _ => {}
            }
        }
    }

    fn act(&self, route: &str, action: BreakerAction) {
        log::info!("fleet state: {action:?} on {route}");
        if self.gateway.breaker_action(Some(route), action).is_none() {
            log::debug!("fleet state: no route {route} here");
        }
    }
}

/// The cluster's bucket, created when missing.
///
/// Created as `create_key_value` would (stream `KV_<bucket>`, subjects `$KV.<bucket>.>`,
/// one message per key per history entry, rollups allowed, deletes denied, direct gets),
/// but without its account query, whose answer from nats-server 2.9 this client cannot
/// read; then opened with the key-value API.
pub async fn open_bucket(
    js: &async_nats::jetstream::Context,
    cluster: &str,
) -> Result<async_nats::jetstream::kv::Store, String> {
    use async_nats::jetstream::stream::{Config, DiscardPolicy, StorageType};
    let name = bucket(cluster);
    let unavailable = |e: &dyn std::fmt::Display| {
        format!("JetStream bucket {name} unavailable (is JetStream on? nats-server -js): {e}")
    };
    if let Ok(store) = js.get_key_value(name.clone()).await {
        return Ok(store);
    }
    js.get_or_create_stream(Config {
        name: format!("KV_{name}"),
        description: Some("fusegate fleet state: operator actions by route".into()),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: HISTORY,
        storage: StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: 1,
        discard: DiscardPolicy::New,
        ..Default::default()
    })
    .await
    .map_err(|e| unavailable(&e))?;
    js.get_key_value(name.clone())
        .await
        .map_err(|e| unavailable(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rec(action: &str, facts: &[(&str, &str)], until: Option<&str>) -> Record {
        Record {
            action: action.into(),
            route: Some("catalog".into()),
            filter: Filter {
                facts: facts
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                identities: vec![],
            },
            who: "ops".into(),
            at: "2026-12-04T22:00:00Z".into(),
            until: until.map(str::to_string),
        }
    }

    fn facts(dc: &str) -> BTreeMap<String, String> {
        [("dc".to_string(), dc.to_string())].into()
    }

    #[test]
    fn pauses_hold_per_filter_and_resumes_clear_them() {
        let now = SystemTime::now();
        let s = RouteState::after(None, rec("pause", &[("dc", "DC1")], None));
        let s = RouteState::after(Some(s), rec("pause", &[("dc", "DC2")], None));
        assert_eq!(s.active.len(), 2);
        assert!(s.paused_for("gw", &facts("DC1"), now));
        assert!(s.paused_for("gw", &facts("DC2"), now));
        assert!(!s.paused_for("gw", &facts("DC3"), now));
        // The same filter again replaces, not adds.
        let s = RouteState::after(Some(s), rec("pause", &[("dc", "DC1")], None));
        assert_eq!(s.active.len(), 2);
        let s = RouteState::after(Some(s), rec("resume", &[("dc", "DC1")], None));
        assert!(!s.paused_for("gw", &facts("DC1"), now));
        assert!(s.paused_for("gw", &facts("DC2"), now));
        let s = RouteState::after(Some(s), rec("resume", &[], None));
        assert!(s.active.is_empty());
        let s = RouteState::after(Some(s), rec("flip", &[], None));
        assert!(s.active.is_empty() && s.last.action == "flip");
    }

    #[test]
    fn a_pause_for_a_while_ends_by_the_gateways_clock() {
        let end = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_420_000);
        let until = humantime::format_rfc3339_seconds(end).to_string();
        let s = RouteState::after(None, rec("pause", &[], Some(&until)));
        assert!(s.paused_for("gw", &facts("DC1"), end - Duration::from_secs(1)));
        assert!(!s.paused_for("gw", &facts("DC1"), end));
    }

    #[test]
    fn a_corrupt_value_is_an_error_naming_its_key() {
        let e = decode("catalog", b"{not json").unwrap_err();
        assert!(e.contains("\"catalog\""), "{e}");
        let s = RouteState::after(None, rec("pause", &[], None));
        let bytes = serde_json::to_vec(&s).unwrap();
        assert_eq!(decode("catalog", &bytes).unwrap(), s);
    }
}
