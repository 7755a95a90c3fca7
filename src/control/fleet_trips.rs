//! Fleet trips (`breaker.fleet = { quorum, scope }`): a gateway opens a route's closed
//! breaker when at least `quorum` distinct gateways that share its `scope` facts have
//! reported that route open within the route's rolling window.
//!
//! Only transitions travel: the breaker events every gateway publishes anyway. An open
//! caused by a fleet trip (`"cause":"fleet"`) does not count toward a quorum, so a trip
//! cannot feed on itself; this gateway's own local open counts (it hears its own event).
//! Reports are timed by this gateway's clock when they arrive.

use crate::breaker::State;
use crate::gateway::{Cause, Gateway};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One gateway's latest report that a route opened.
#[derive(Debug, Clone)]
struct Report {
    facts: BTreeMap<String, String>,
    at: Instant,
}

/// The open reports heard, by route and reporting gateway.
pub struct FleetTrips {
    gateway: Arc<Gateway>,
    reports: HashMap<String, HashMap<String, Report>>,
}

/// Whether `facts` share this gateway's values for every fact of `scope`.
fn in_scope(
    scope: &[String],
    mine: &BTreeMap<String, String>,
    theirs: &BTreeMap<String, String>,
) -> bool {
    scope
        .iter()
        .all(|k| mine.get(k).is_some_and(|v| theirs.get(k) == Some(v)))
}

impl FleetTrips {
    pub fn new(gateway: Arc<Gateway>) -> Self {
        FleetTrips {
            gateway,
            reports: HashMap::new(),
        }
    }

    /// A breaker event heard on the cluster's event subject.
    pub fn on_event(&mut self, event: &Value, now: Instant) {
        if event["to"] != "open" || event["cause"] == "fleet" {
            return;
        }
        let (Some(route), Some(identity)) = (event["route"].as_str(), event["identity"].as_str())
        else {
            return;
        };
        let facts: BTreeMap<String, String> =
            serde_json::from_value(event["facts"].clone()).unwrap_or_default();
        let runtime = self.gateway.runtime();
        let Some(r) = runtime.route(route) else {
            return;
        };
        let Some(fleet) = r.fleet() else {
            return;
        };
        if !in_scope(&fleet.scope, &self.gateway.facts, &facts) {
            return;
        }
        let window = Duration::from_millis(r.settings.window.window_ms());
        let reports = self.reports.entry(route.to_string()).or_default();
        reports.insert(identity.to_string(), Report { facts, at: now });
        reports.retain(|_, rep| now.duration_since(rep.at) <= window);
        let reporting = reports
            .values()
            .filter(|rep| in_scope(&fleet.scope, &self.gateway.facts, &rep.facts))
            .count();
        if reporting < fleet.quorum as usize || r.breaker.state() != State::Closed {
            return;
        }
        let now_ms = self.gateway.clock.now_ms();
        if let Some(t) = r.breaker.trip(now_ms) {
            log::warn!(
                "breaker {route}: {reporting} gateway(s) of the fleet report it open (quorum {}): opening here too",
                fleet.quorum
            );
            self.gateway.on_transition_by(r, t, Cause::Fleet);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::in_scope;
    use std::collections::BTreeMap;

    fn f(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn scope_is_the_facts_a_reporter_must_share() {
        let mine = f(&[("dc", "DC1"), ("role", "edge")]);
        assert!(in_scope(&[], &mine, &f(&[])));
        assert!(in_scope(&["dc".into()], &mine, &f(&[("dc", "DC1")])));
        assert!(!in_scope(&["dc".into()], &mine, &f(&[("dc", "DC2")])));
        assert!(!in_scope(&["dc".into()], &mine, &f(&[])));
        assert!(
            !in_scope(&["zone".into()], &mine, &f(&[("zone", "a")])),
            "a fact I lack"
        );
    }
}
