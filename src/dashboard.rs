//! `fusegate dashboard` (SPEC §13): the dashboard page for a whole fleet.
//!
//! Gateways with `[nats]` publish their snapshot every `nats.snapshot_interval` on
//! `fusegate.<cluster>.events.snapshot`, and their breaker transitions on
//! `.events.breaker`. This process listens to both, keeps each gateway's latest snapshot
//! (a gateway not heard from for [`GONE_AFTER`] is dropped) and serves, on `--listen`:
//! - `/` and `/dashboard`: the same page as a gateway's admin port;
//! - `/events`: a `fleet` event a second (`{"at","cluster","gateways":[...]}`), and the
//!   fleet's `transition` events as they come;
//! - `POST /breakers/<route>/<pause|resume|flip|reset>` (body `{"identity":"gw-1"}` for one
//!   gateway): a `ctl` request over NATS with this process's credentials; answers
//!   `{"replies":[...]}`.
//!
//! The page acts on the fleet with this process's NATS credentials, so `--listen` must be
//! a loopback address.

use crate::admin::views::rfc3339;
use crate::config::valid_route_name;
use crate::ctl::CtlArgs;
use crate::live::Live;
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{Method, Response, StatusCode};
use pingora::apps::{HttpServerApp, ReusedHttpStream};
use pingora::protocols::http::ServerSession;
use pingora::server::configuration::ServerConf;
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

/// A gateway whose snapshots stop is dropped from the page after this long.
pub const GONE_AFTER: Duration = Duration::from_secs(10);

/// Largest action body read.
const MAX_BODY: usize = 4096;

/// Everything `fusegate dashboard` was asked: NATS, cluster and credentials as for `ctl`.
#[derive(Debug, Clone)]
pub struct DashboardArgs {
    pub nats: CtlArgs,
    pub listen: String,
}

/// The gateways heard from, by identity: the latest snapshot and when it came.
#[derive(Default)]
struct Fleet {
    gateways: Mutex<BTreeMap<String, (Value, Instant)>>,
}

impl Fleet {
    fn heard(&self, snapshot: Value) {
        let Some(identity) = snapshot["identity"].as_str().map(String::from) else {
            return;
        };
        self.gateways
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(identity, (snapshot, Instant::now()));
    }

    /// The `fleet` event: every gateway heard from lately.
    fn event(&self, cluster: &str) -> Bytes {
        let mut gateways = self.gateways.lock().unwrap_or_else(PoisonError::into_inner);
        gateways.retain(|_, (_, at)| at.elapsed() < GONE_AFTER);
        let list: Vec<&Value> = gateways.values().map(|(v, _)| v).collect();
        let event = json!({
            "at": rfc3339(SystemTime::now()),
            "cluster": cluster,
            "gateways": list,
        });
        Bytes::from(serde_json::to_vec(&event).unwrap_or_default())
    }
}

/// Checks the arguments and serves until interrupted; the exit code.
pub fn run(args: DashboardArgs) -> u8 {
    match args.listen.parse::<std::net::SocketAddr>() {
        Ok(a) if a.ip().is_loopback() => {}
        Ok(_) => {
            eprintln!(
                "fusegate dashboard: --listen must be a loopback address: the page acts on \
                 the fleet with this process's NATS credentials"
            );
            return 2;
        }
        Err(_) => {
            eprintln!(
                "fusegate dashboard: --listen {:?} is not an ip:port address",
                args.listen
            );
            return 2;
        }
    }
    if let Err(e) = crate::control::url::parse(&args.nats.url) {
        eprintln!("fusegate dashboard: --nats: {e}");
        return 2;
    }
    if let Err(e) = std::net::TcpListener::bind(&args.listen) {
        eprintln!("fusegate dashboard: cannot listen on {}: {e}", args.listen);
        return 1;
    }
    let conf = ServerConf {
        threads: 1,
        work_stealing: false,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let shared = Arc::new(Shared {
        fleet: Fleet::default(),
        live: Live::default(),
        args: args.clone(),
    });
    let mut service = Service::new(
        "fusegate dashboard".into(),
        FleetApp {
            shared: shared.clone(),
        },
    );
    service.add_tcp(&args.listen);
    server.add_service(service);
    server.add_service(background_service("fleet feed", FleetFeed { shared }));
    println!(
        "fusegate dashboard: http://{}/ (cluster {:?} on {})",
        args.listen,
        args.nats.cluster,
        crate::control::url::mask(&args.nats.url)
    );
    server.run_forever()
}

struct Shared {
    fleet: Fleet,
    live: Live,
    args: DashboardArgs,
}

/// Listens to the fleet's snapshots and transitions, and makes the `fleet` event a second.
struct FleetFeed {
    shared: Arc<Shared>,
}

#[async_trait]
impl BackgroundService for FleetFeed {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let s = &self.shared;
        let cluster = s.args.nats.cluster.clone();
        let mut tick = tokio::time::interval(crate::background::SAMPLE_EVERY);
        loop {
            let conn = tokio::select! {
                c = crate::ctl::connect(&s.args.nats) => c,
                _ = shutdown.changed() => return,
            };
            let client = match conn {
                Ok(c) => c.client,
                Err(e) => {
                    log::warn!("dashboard: {e}; trying again");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(2)) => continue,
                        _ = shutdown.changed() => return,
                    }
                }
            };
            let subs = (
                client
                    .subscribe(crate::control::snapshot_subject(&cluster))
                    .await,
                client
                    .subscribe(crate::control::breaker_events_subject(&cluster))
                    .await,
            );
            let (Ok(mut snapshots), Ok(mut transitions)) = subs else {
                log::warn!("dashboard: cannot subscribe; trying again");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            };
            loop {
                tokio::select! {
                    m = snapshots.next() => match m {
                        Some(m) => {
                            if let Ok(v) = serde_json::from_slice::<Value>(&m.payload) {
                                s.fleet.heard(v);
                            }
                        }
                        None => break,
                    },
                    m = transitions.next() => match m {
                        Some(m) => s.live.publish_transition_json(m.payload.clone()),
                        None => break,
                    },
                    _ = tick.tick() => s.live.publish_snapshot(s.fleet.event(&cluster)),
                    _ = shutdown.changed() => return,
                }
            }
        }
    }
}

/// The dashboard's HTTP application.
struct FleetApp {
    shared: Arc<Shared>,
}

fn json_response(status: StatusCode, v: Value) -> Response<Vec<u8>> {
    let body = serde_json::to_vec(&v).unwrap_or_default();
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

impl FleetApp {
    /// `POST /breakers/<route>/<action>`: the action on every gateway of the cluster, or
    /// on the one the body names.
    async fn act(&self, route: &str, action: &str, body: &[u8]) -> Response<Vec<u8>> {
        if !matches!(action, "pause" | "resume" | "flip" | "reset") {
            return json_response(
                StatusCode::NOT_FOUND,
                json!({"error": "not_found", "action": action}),
            );
        }
        if !valid_route_name(route) {
            return json_response(
                StatusCode::NOT_FOUND,
                json!({"error": "no_route", "route": route}),
            );
        }
        let identity = match body {
            [] => None,
            b => match serde_json::from_slice::<Value>(b) {
                Ok(v) => v["identity"].as_str().map(String::from),
                Err(e) => {
                    return json_response(
                        StatusCode::BAD_REQUEST,
                        json!({"error": "bad_body", "message": e.to_string()}),
                    )
                }
            },
        };
        let mut args = self.shared.args.nats.clone();
        args.action = action.to_string();
        args.target = Some(route.to_string());
        args.identities = identity.into_iter().collect();
        let gathered = match crate::ctl::connect(&args).await {
            Ok(conn) => crate::ctl::collect(&args, &conn).await,
            Err(e) => Err(e),
        };
        match gathered {
            Err(e) => json_response(
                StatusCode::BAD_GATEWAY,
                json!({"error": "nats", "message": e, "replies": []}),
            ),
            Ok(g) if g.replies.is_empty() => json_response(
                StatusCode::GATEWAY_TIMEOUT,
                json!({"error": "no_gateway_answered", "replies": [], "server_errors": g.server_errors}),
            ),
            Ok(g) => {
                let replies: Vec<Value> = g
                    .replies
                    .iter()
                    .map(|r| json!({"identity": r.identity, "ok": r.ok, "error": r.error}))
                    .collect();
                let status = if g.replies.iter().all(|r| r.ok) {
                    StatusCode::OK
                } else {
                    StatusCode::BAD_GATEWAY
                };
                json_response(status, json!({ "replies": replies }))
            }
        }
    }
}

/// Reads a request body of at most [`MAX_BODY`] bytes.
async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, Response<Vec<u8>>> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) if body.len() + chunk.len() <= MAX_BODY => {
                body.extend_from_slice(&chunk)
            }
            Ok(Some(_)) => {
                return Err(json_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    json!({"error": "body_too_large"}),
                ))
            }
            Ok(None) => return Ok(body),
            Err(_) => {
                return Err(json_response(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "bad_body"}),
                ))
            }
        }
    }
}

#[async_trait]
impl HttpServerApp for FleetApp {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        if !matches!(session.read_request().await, Ok(true)) {
            return None;
        }
        session.set_keepalive(None);
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let resp = match (&method, segments.as_slice()) {
            (&Method::GET, [""] | ["dashboard"]) => crate::admin::dashboard_page(),
            (&Method::GET, ["events"]) => {
                crate::admin::stream_events(&mut session, &self.shared.live, "fleet", shutdown)
                    .await;
                return None;
            }
            (&Method::POST, ["breakers", route, action]) => match read_body(&mut session).await {
                Ok(body) => self.act(route, action, &body).await,
                Err(resp) => resp,
            },
            _ => json_response(
                StatusCode::NOT_FOUND,
                json!({"error": "not_found", "path": path}),
            ),
        };
        if crate::admin::write_response(&mut session, resp).await {
            let _ = session.finish().await;
        }
        None
    }
}
