//! `fusegate ctl`: one request to every matching gateway of a cluster over NATS, the
//! replies gathered and printed the way a fleet tool does.

mod fleet;

use crate::control::connect::NatsAuth;
use crate::control::{is_read, read_subject, write_subject, Filter, Reply, Request};
use async_nats::{Event, ServerError};
use futures_util::StreamExt;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// After the last new pong, how long to wait for more instances to show up: four times
/// the first pong's round trip plus half of `MIN_QUIET`, within these bounds.
const DISCOVERY_QUIET: Duration = Duration::from_millis(300);
const MIN_QUIET: Duration = Duration::from_millis(100);

/// The shortest sleep of the gathering loop.
const MIN_WAKE: Duration = Duration::from_millis(5);

/// Everything `fusegate ctl` was asked.
#[derive(Debug, Clone)]
pub struct CtlArgs {
    pub url: String,
    pub cluster: String,
    pub facts: BTreeMap<String, String>,
    pub identities: Vec<String>,
    pub timeout: Duration,
    pub json: bool,
    pub auth: NatsAuth,
    pub action: String,
    /// The route, or for `loglevel` the level.
    pub target: Option<String>,
    /// `pause --for`: the pause ends by itself after this long.
    pub for_duration: Option<Duration>,
    /// `--as`: who the fleet state records as having acted.
    pub as_name: Option<String>,
    /// The config's `nats.fleet_state`: record write actions even before any gateway has
    /// made the cluster's bucket.
    pub fleet_state: bool,
}

/// A connection to NATS, with what the server reported on it.
pub struct Connection {
    pub client: async_nats::Client,
    server_errors: Arc<Mutex<Vec<String>>>,
    /// The NATS user it logged in as, if one.
    pub user: Option<String>,
    started: Instant,
}

/// What came back.
#[derive(Debug, Default)]
pub struct Gathered {
    pub replies: Vec<Reply>,
    /// Errors the NATS server reported, e.g. permission violations.
    pub server_errors: Vec<String>,
    pub elapsed: Duration,
}

/// Connects with the URL(s), credentials and TLS settings of `args`.
pub async fn connect(args: &CtlArgs) -> Result<Connection, String> {
    let server_errors = Arc::new(Mutex::new(Vec::new()));
    let sink = server_errors.clone();
    let started = Instant::now();
    let shown = crate::control::url::mask(&args.url);
    let url = crate::control::url::parse(&args.url).map_err(|e| format!("--nats: {e}"))?;
    let client = args
        .auth
        .options("fusegate ctl", url.credentials.as_ref())
        .await?
        .event_callback(move |e| {
            let sink = sink.clone();
            async move {
                if let Event::ServerError(e) = e {
                    let text = match e {
                        ServerError::AuthorizationViolation => "authorization violation".into(),
                        ServerError::Other(s) => s,
                        other => other.to_string(),
                    };
                    sink.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(text);
                }
            }
        })
        .connect(url.servers)
        .await
        .map_err(|e| format!("cannot connect to {shown}: {e}"))?;
    let user = args.auth.user.clone().or(match url.credentials {
        Some(crate::control::url::UrlCredentials::UserPassword { user, .. }) => Some(user),
        _ => None,
    });
    Ok(Connection {
        client,
        server_errors,
        user,
        started,
    })
}

/// The fact and identity filter of `args`.
fn filter(args: &CtlArgs) -> Filter {
    Filter {
        facts: args.facts.clone(),
        identities: args.identities.clone(),
    }
}

/// Sends the action with a discovery ping, and gathers replies until every gateway the
/// ping discovered has answered, or the timeout.
pub async fn collect(args: &CtlArgs, conn: &Connection) -> Result<Gathered, String> {
    let Some(read) = is_read(&args.action) else {
        return Err(format!(
            "unknown action {:?}; read actions: ping, info, health, breakers; write actions: pause, resume, flip, reset, reload, shutdown, loglevel, purge; fleet state: state, history ROUTE",
            args.action
        ));
    };
    let client = &conn.client;
    let server_errors = &conn.server_errors;
    let started = conn.started;
    let filter = filter(args);
    let (route, level) = match args.action.as_str() {
        "loglevel" => (None, args.target.clone()),
        _ => (args.target.clone(), None),
    };
    let request = Request {
        action: args.action.clone(),
        route,
        level,
        filter: filter.clone(),
    };
    let subject = if read {
        read_subject(&args.cluster)
    } else {
        write_subject(&args.cluster)
    };
    let encode = |r: &Request| serde_json::to_vec(r).map_err(|e| e.to_string());

    // A ping with the same filter finds the instances, so gathering can stop once each
    // has answered rather than always waiting out the timeout.
    let ping_inbox = client.new_inbox();
    let mut pongs = client
        .subscribe(ping_inbox.clone())
        .await
        .map_err(|e| format!("subscribe: {e}"))?;
    let inbox = client.new_inbox();
    let mut answers = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| format!("subscribe: {e}"))?;
    let ping = Request {
        action: "ping".into(),
        filter,
        ..Request::default()
    };
    let publish_err = |e: async_nats::PublishError| format!("publish: {e}");
    client
        .publish_with_reply(
            read_subject(&args.cluster),
            ping_inbox,
            encode(&ping)?.into(),
        )
        .await
        .map_err(publish_err)?;
    client
        .publish_with_reply(subject, inbox, encode(&request)?.into())
        .await
        .map_err(publish_err)?;
    client.flush().await.map_err(|e| format!("flush: {e}"))?;

    let sent_at = tokio::time::Instant::now();
    let deadline = sent_at + args.timeout;
    let mut discovered = BTreeSet::new();
    let mut last_new_pong: Option<tokio::time::Instant> = None;
    // How long no new gateway must show up before discovery counts as complete: a few
    // times the first pong's round trip, within bounds.
    let mut quiet = DISCOVERY_QUIET;
    let mut replies: Vec<Reply> = Vec::new();
    loop {
        let answered: BTreeSet<&str> = replies.iter().map(|r| r.identity.as_str()).collect();
        let settled = last_new_pong.is_some_and(|t| t.elapsed() >= quiet);
        if settled
            && discovered
                .iter()
                .all(|i: &String| answered.contains(i.as_str()))
        {
            break;
        }
        let wake = last_new_pong
            .map_or(deadline, |t| {
                (t + quiet).max(tokio::time::Instant::now() + MIN_WAKE)
            })
            .min(deadline);
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = tokio::time::sleep_until(wake) => {}
            Some(m) = pongs.next() => {
                if let Ok(r) = serde_json::from_slice::<Reply>(&m.payload) {
                    let now = tokio::time::Instant::now();
                    if discovered.is_empty() {
                        quiet = (now.duration_since(sent_at) * 4 + MIN_QUIET / 2)
                            .clamp(MIN_QUIET, DISCOVERY_QUIET);
                    }
                    if discovered.insert(r.identity) {
                        last_new_pong = Some(now);
                    }
                }
            }
            Some(m) = answers.next() => {
                // No gateway subscribed: the server's "no responders" status, no reply.
                if m.payload.is_empty() {
                    continue;
                }
                match serde_json::from_slice::<Reply>(&m.payload) {
                    Ok(r) if !replies.iter().any(|x| x.identity == r.identity) => replies.push(r),
                    Ok(_) => {}
                    Err(e) => replies.push(Reply {
                        identity: "?".into(),
                        action: args.action.clone(),
                        ok: false,
                        result: serde_json::Value::Null,
                        error: Some(format!("unreadable reply: {e}")),
                    }),
                }
            }
        }
        if !server_errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
            && replies.is_empty()
            && settled
        {
            break;
        }
    }
    replies.sort_by(|a, b| a.identity.cmp(&b.identity));
    let server_errors =
        std::mem::take(&mut *server_errors.lock().unwrap_or_else(PoisonError::into_inner));
    Ok(Gathered {
        replies,
        server_errors,
        elapsed: started.elapsed(),
    })
}

/// Prints the outcome; returns the exit code (1 when any instance failed or none answered).
pub fn report(args: &CtlArgs, g: &Gathered) -> u8 {
    let failed = g.replies.iter().filter(|r| !r.ok).count();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&g.replies).unwrap_or_default()
        );
    } else {
        let read = is_read(&args.action).unwrap_or(false);
        for r in &g.replies {
            if !r.ok {
                println!(
                    "{}: error: {}",
                    r.identity,
                    r.error.as_deref().unwrap_or("failed")
                );
            } else if read {
                print_read(r);
            }
        }
    }
    for e in &g.server_errors {
        eprintln!("nats: {e}");
    }
    if g.replies.is_empty() {
        eprintln!("no gateway answered");
    }
    let summary = format!(
        "Managed {} gateway(s) in {} ms",
        g.replies.len(),
        g.elapsed.as_millis()
    );
    // With --json, stdout is the JSON alone.
    if args.json {
        eprintln!("{summary}");
    } else {
        println!("{summary}");
    }
    u8::from(failed > 0 || g.replies.is_empty())
}

fn print_read(r: &Reply) {
    match r.action.as_str() {
        "ping" => println!("{}: pong", r.identity),
        "breakers" => {
            println!("{}:", r.identity);
            for line in crate::status::render(&r.result, false).lines() {
                println!("  {line}");
            }
        }
        _ => {
            println!("{}:", r.identity);
            let text = serde_json::to_string_pretty(&r.result).unwrap_or_default();
            for line in text.lines() {
                println!("  {line}");
            }
        }
    }
}

/// Runs the command; returns the exit code.
pub fn run(args: &CtlArgs) -> u8 {
    if let Some(d) = args.for_duration {
        if args.action != "pause" {
            eprintln!("fusegate ctl: --for goes with pause only");
            return 2;
        }
        if d.is_zero() || d > fleet::MAX_FOR {
            eprintln!("fusegate ctl: --for must be above 0s and at most 366 days");
            return 2;
        }
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fusegate ctl: {e}");
            return 1;
        }
    };
    match rt.block_on(run_async(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fusegate ctl: {e}");
            1
        }
    }
}

async fn run_async(args: &CtlArgs) -> Result<u8, String> {
    let conn = connect(args).await?;
    match args.action.as_str() {
        "state" => return fleet::print_state(args, &conn).await,
        "history" => return fleet::print_history(args, &conn).await,
        _ => {}
    }
    let gathered = collect(args, &conn).await?;
    if crate::control::fleet_state::is_recorded(&args.action) {
        if !gathered.server_errors.is_empty() {
            eprintln!("fleet state: not stored: the server refused the action");
        } else {
            match fleet::store(args, &conn).await {
                Ok(Some(at)) => eprintln!("fleet state: recorded in {at}"),
                Ok(None) if args.for_duration.is_some() => eprintln!(
                    "fleet state: not in use on cluster {} (no bucket yet, and no nats.fleet_state in the config): this pause will not end by itself",
                    args.cluster
                ),
                Ok(None) => {}
                Err(e) => eprintln!("fleet state: not stored: {e}"),
            }
        }
    }
    Ok(report(args, &gathered))
}
