//! `ctl`'s side of the fleet state: recording a write action in the cluster's JetStream
//! bucket, and `ctl state` / `ctl history ROUTE`.

use super::{filter, Connection, CtlArgs};
use crate::control::fleet_state::{self, Record, RouteState};
use futures_util::StreamExt;
use std::time::SystemTime;

/// Attempts at the compare-and-set of a key before giving up.
const CAS_ATTEMPTS: usize = 5;

/// How long a JetStream request may take before the fleet state counts as unavailable.
const JS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

fn jetstream(conn: &Connection) -> async_nats::jetstream::Context {
    let mut js = async_nats::jetstream::new(conn.client.clone());
    js.set_timeout(JS_TIMEOUT);
    js
}

/// Who acted: `--as`, else the NATS user, else the OS user.
fn who(args: &CtlArgs, conn: &Connection) -> String {
    args.as_name
        .clone()
        .or_else(|| conn.user.clone())
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The record of this action.
pub fn record_of(args: &CtlArgs, who: String, now: SystemTime) -> Record {
    Record {
        action: args.action.clone(),
        route: args.target.clone(),
        filter: filter(args),
        who,
        at: rfc3339(now),
        until: args.for_duration.map(|d| rfc3339(now + d)),
    }
}

/// The longest `pause --for`.
pub const MAX_FOR: std::time::Duration = std::time::Duration::from_secs(366 * 24 * 3600);

/// Records the action as desired state: `Ok(Some(where))`, or `Ok(None)` when fleet state
/// is not in use on the cluster (no bucket, which gateways with `fleet_state` create, and
/// none asked for by the config).
pub async fn store(args: &CtlArgs, conn: &Connection) -> Result<Option<String>, String> {
    let js = jetstream(conn);
    let kv = match js.get_key_value(fleet_state::bucket(&args.cluster)).await {
        Ok(kv) => kv,
        Err(_) if !args.fleet_state => return Ok(None),
        Err(_) => fleet_state::open_bucket(&js, &args.cluster).await?,
    };
    let rec = record_of(args, who(args, conn), SystemTime::now());
    let key = fleet_state::key(args.target.as_deref());
    let mut keys = vec![key.to_string()];
    // A resume or reset of every route ends the pauses of each route too.
    if args.target.is_none() && matches!(args.action.as_str(), "resume" | "reset") {
        let mut all = kv.keys().await.map_err(|e| format!("listing keys: {e}"))?;
        while let Some(k) = all.next().await {
            if let Ok(k) = k {
                if k != key {
                    keys.push(k);
                }
            }
        }
    }
    for k in &keys {
        write(&kv, k, &rec).await?;
    }
    Ok(Some(format!(
        "{}/{key}",
        fleet_state::bucket(&args.cluster)
    )))
}

/// Applies `rec` to a key's state with compare-and-set on its revision.
async fn write(
    kv: &async_nats::jetstream::kv::Store,
    key: &str,
    rec: &Record,
) -> Result<(), String> {
    for _ in 0..CAS_ATTEMPTS {
        let current = kv
            .entry(key)
            .await
            .map_err(|e| format!("reading {key}: {e}"))?;
        let (prev, revision) = match current {
            Some(e) if e.operation == async_nats::jetstream::kv::Operation::Put => {
                (fleet_state::decode(key, &e.value).ok(), Some(e.revision))
            }
            _ => (None, None),
        };
        let next =
            serde_json::to_vec(&RouteState::after(prev, rec.clone())).map_err(|e| e.to_string())?;
        let written = match revision {
            Some(r) => kv
                .update(key, next.into(), r)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            None => kv
                .create(key, next.into())
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
        };
        match written {
            Ok(()) => return Ok(()),
            Err(e) => log::debug!("fleet state: {key} changed under us ({e}); again"),
        }
    }
    Err(format!("{key} kept changing while it was written"))
}

fn filter_text(f: &crate::control::Filter) -> String {
    let mut parts: Vec<String> = f.facts.iter().map(|(k, v)| format!("{k}={v}")).collect();
    parts.extend(f.identities.iter().map(|i| format!("identity={i}")));
    if parts.is_empty() {
        "all".into()
    } else {
        parts.join(",")
    }
}

fn print_records(args: &CtlArgs, records: &[Record]) {
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(records).unwrap_or_default()
        );
        return;
    }
    println!(
        "{:<16} {:<7} {:<20} {:<12} {:<21} until",
        "route", "action", "filter", "who", "at"
    );
    for r in records {
        println!(
            "{:<16} {:<7} {:<20} {:<12} {:<21} {}",
            r.route.as_deref().unwrap_or("(all)"),
            r.action,
            filter_text(&r.filter),
            r.who,
            r.at,
            r.until.as_deref().unwrap_or("-")
        );
    }
}

/// `ctl state`: the pauses in force, by route.
pub async fn print_state(args: &CtlArgs, conn: &Connection) -> Result<u8, String> {
    let js = jetstream(conn);
    let kv = fleet_state::open_bucket(&js, &args.cluster).await?;
    let mut keys = kv.keys().await.map_err(|e| format!("listing keys: {e}"))?;
    let now = SystemTime::now();
    let mut records = Vec::new();
    while let Some(k) = keys.next().await {
        let Ok(k) = k else { continue };
        match kv.get(k.clone()).await {
            Ok(Some(v)) => match fleet_state::decode(&k, &v) {
                Ok(s) => records.extend(s.active.into_iter().filter(|r| !r.expired(now))),
                Err(e) => eprintln!("{e}"),
            },
            Ok(None) => {}
            Err(e) => eprintln!("fleet state key {k:?}: {e}"),
        }
    }
    records.sort_by(|a, b| (&a.route, &a.at).cmp(&(&b.route, &b.at)));
    print_records(args, &records);
    Ok(0)
}

/// `ctl history ROUTE`: every recorded action on the route, oldest first.
pub async fn print_history(args: &CtlArgs, conn: &Connection) -> Result<u8, String> {
    let Some(route) = args.target.as_deref() else {
        return Err("history needs a route".into());
    };
    let js = jetstream(conn);
    let kv = fleet_state::open_bucket(&js, &args.cluster).await?;
    // The route's own actions and those on every route, in the order they were made.
    let mut records: Vec<Record> = Vec::new();
    for key in [route, fleet_state::ALL_ROUTES] {
        let Ok(mut history) = kv.history(key).await else {
            continue;
        };
        while let Some(e) = history.next().await {
            let Ok(e) = e else { continue };
            if e.operation != async_nats::jetstream::kv::Operation::Put {
                continue;
            }
            match fleet_state::decode(&e.key, &e.value) {
                Ok(s) if !records.contains(&s.last) => records.push(s.last),
                Ok(_) => {}
                Err(err) => eprintln!("{err}"),
            }
        }
    }
    records.sort_by(|a, b| a.at.cmp(&b.at));
    print_records(args, &records);
    Ok(0)
}
