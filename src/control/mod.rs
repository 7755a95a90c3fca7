//! The NATS control plane (SPEC §8): every gateway answers fleet requests on
//! `fusegate.<cluster>.ctl.read` / `.ctl.write` and publishes breaker and config events.
//!
//! This module holds the protocol — request, filter, reply, which action is a read or a
//! write — and the dispatch onto the shared [`Gateway`]. [`service`] is the NATS side;
//! nothing here waits on NATS, and the proxy never waits on this module.

pub mod connect;
pub mod fleet_state;
pub mod fleet_trips;
pub mod service;
pub mod url;

use crate::admin::views;
use crate::gateway::{BreakerAction, Gateway};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Subject of read actions.
pub fn read_subject(cluster: &str) -> String {
    format!("fusegate.{cluster}.ctl.read")
}

/// Subject of write actions.
pub fn write_subject(cluster: &str) -> String {
    format!("fusegate.{cluster}.ctl.write")
}

pub fn breaker_events_subject(cluster: &str) -> String {
    format!("fusegate.{cluster}.events.breaker")
}

pub fn config_events_subject(cluster: &str) -> String {
    format!("fusegate.{cluster}.events.config")
}

/// Where gateways publish their dashboard snapshot every `nats.snapshot_interval`.
pub fn snapshot_subject(cluster: &str) -> String {
    format!("fusegate.{cluster}.events.snapshot")
}

/// Which instances a request is for. Every fact must match; identities, when given,
/// must include the instance's.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Filter {
    pub facts: BTreeMap<String, String>,
    pub identities: Vec<String>,
}

impl Filter {
    pub fn matches(&self, identity: &str, facts: &BTreeMap<String, String>) -> bool {
        self.facts.iter().all(|(k, v)| facts.get(k) == Some(v))
            && (self.identities.is_empty() || self.identities.iter().any(|i| i == identity))
    }
}

/// A fleet request.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Request {
    pub action: String,
    pub route: Option<String>,
    pub level: Option<String>,
    pub filter: Filter,
}

/// One instance's answer.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Reply {
    pub identity: String,
    pub action: String,
    pub ok: bool,
    pub result: Value,
    pub error: Option<String>,
}

/// The actions, by the subject they travel on.
pub const READ_ACTIONS: [&str; 4] = ["ping", "info", "health", "breakers"];
pub const WRITE_ACTIONS: [&str; 8] = [
    "pause", "resume", "flip", "reset", "reload", "shutdown", "loglevel", "purge",
];

/// Whether `action` is a read action; `None` for an unknown one.
pub fn is_read(action: &str) -> Option<bool> {
    if READ_ACTIONS.contains(&action) {
        Some(true)
    } else if WRITE_ACTIONS.contains(&action) {
        Some(false)
    } else {
        None
    }
}

/// Which of the two subjects a message came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Read,
    Write,
}

/// What to do after replying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    Nothing,
    /// Drain and exit after a random delay of 0-2 s.
    Shutdown,
}

/// Answers one message; `None` when this instance is not addressed (it stays silent).
pub fn handle(gw: &Arc<Gateway>, channel: Channel, payload: &[u8]) -> Option<(Reply, After)> {
    let req: Request = match serde_json::from_slice(payload) {
        Ok(r) => r,
        Err(e) => {
            return Some((
                reply(gw, "", Err(format!("invalid request: {e}"))),
                After::Nothing,
            ))
        }
    };
    if !req.filter.matches(&gw.identity, &gw.facts) {
        return None;
    }
    let outcome = match (is_read(&req.action), channel) {
        (None, _) => Err(format!("unknown action {:?}", req.action)),
        (Some(false), Channel::Read) => Err(format!(
            "{:?} is a write action: send it on the .ctl.write subject",
            req.action
        )),
        (Some(true), _) => Ok(read(gw, &req.action)),
        (Some(false), Channel::Write) => write(gw, &req),
    };
    let after = if req.action == "shutdown" && outcome.is_ok() {
        After::Shutdown
    } else {
        After::Nothing
    };
    Some((reply(gw, &req.action, outcome), after))
}

fn reply(gw: &Gateway, action: &str, outcome: Result<Value, String>) -> Reply {
    let (ok, result, error) = match outcome {
        Ok(v) => (true, v, None),
        Err(e) => (false, Value::Null, Some(e)),
    };
    Reply {
        identity: gw.identity.clone(),
        action: action.to_string(),
        ok,
        result,
        error,
    }
}

fn read(gw: &Gateway, action: &str) -> Value {
    match action {
        "info" => views::info(gw),
        "health" => views::health(gw).1,
        "breakers" => {
            let runtime = gw.runtime();
            views::breakers(gw, &runtime.routes)
        }
        _ => json!({"pong": true}),
    }
}

fn write(gw: &Arc<Gateway>, req: &Request) -> Result<Value, String> {
    match req.action.as_str() {
        "reload" => crate::reload::reload(gw, "nats")
            .map(|r| json!({"generation": r.generation, "restart_required": r.restart_required})),
        "shutdown" => Ok(json!({"shutting_down": true})),
        "purge" => match req.route.as_deref() {
            Some(route) => gw
                .purge_cache(route)
                .map_err(|e| format!("{e}: cannot purge the cache of route {route:?}")),
            None => Err("purge needs a route".into()),
        },
        "loglevel" => {
            let level = req.level.as_deref().unwrap_or("");
            let filter = level
                .parse::<crate::config::LogLevel>()
                .map_err(|e| e.to_string())?
                .as_filter();
            log::set_max_level(filter);
            log::info!("log level set to {level} over NATS");
            Ok(json!({"level": filter.as_str().to_ascii_lowercase()}))
        }
        action => {
            let a =
                BreakerAction::parse(action).ok_or_else(|| format!("unknown action {action:?}"))?;
            let routes = gw
                .breaker_action(req.route.as_deref(), a)
                .ok_or_else(|| format!("no route {:?}", req.route.as_deref().unwrap_or("")))?;
            Ok(match req.route {
                Some(_) => routes
                    .first()
                    .map(|r| json!(views::breaker(gw, r)))
                    .unwrap_or(Value::Null),
                None => views::breakers(gw, &routes),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_need_every_fact_and_one_of_the_identities() {
        let facts: BTreeMap<String, String> = [
            ("dc".to_string(), "DC1".to_string()),
            ("role".into(), "edge".into()),
        ]
        .into();
        let f = |facts: &[(&str, &str)], ids: &[&str]| Filter {
            facts: facts
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            identities: ids.iter().map(|s| s.to_string()).collect(),
        };
        assert!(f(&[], &[]).matches("gw-1", &facts));
        assert!(f(&[("dc", "DC1")], &[]).matches("gw-1", &facts));
        assert!(!f(&[("dc", "DC2")], &[]).matches("gw-1", &facts));
        assert!(!f(&[("zone", "a")], &[]).matches("gw-1", &facts));
        assert!(f(&[("dc", "DC1")], &["gw-2", "gw-1"]).matches("gw-1", &facts));
        assert!(!f(&[], &["gw-2"]).matches("gw-1", &facts));
    }

    #[test]
    fn actions_are_reads_or_writes() {
        assert_eq!(is_read("breakers"), Some(true));
        assert_eq!(is_read("pause"), Some(false));
        assert_eq!(is_read("explode"), None);
    }

    #[test]
    fn the_request_shape_of_the_spec_parses() {
        let r: Request = serde_json::from_str(
            r#"{"action":"pause","route":"catalog","level":null,"filter":{"facts":{"dc":"DC1"},"identities":["gw-1"]}}"#,
        )
        .unwrap();
        assert_eq!(r.action, "pause");
        assert_eq!(r.route.as_deref(), Some("catalog"));
        assert_eq!(r.filter.facts["dc"], "DC1");
        let minimal: Request = serde_json::from_str(r#"{"action":"ping"}"#).unwrap();
        assert!(minimal.filter.facts.is_empty());
    }
}
