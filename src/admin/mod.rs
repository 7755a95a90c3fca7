//! The admin port (SPEC §7): liveness, readiness, health, breaker state and operator
//! actions, log level, metrics and the effective config, as JSON over HTTP.
//!
//! It is a pingora `ServeHttp` app, a second service of the same server. It reads the
//! shared [`Gateway`] and acts on breakers through it; it never touches the proxy path.

mod events;
pub mod views;

pub use events::{
    page as dashboard_page, stream as stream_events, write_response, AdminApp, DASHBOARD_HTML,
};

use crate::config::LogLevel;
use crate::gateway::{BreakerAction, Gateway};
use async_trait::async_trait;
use bytes::Bytes;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};
use std::sync::Arc;

/// Largest request body the admin port reads.
const MAX_BODY: usize = 64 * 1024;

/// The admin HTTP app. Its token rules are read from the config in force, so a reload
/// can change them.
#[derive(Clone)]
pub struct Admin {
    gateway: Arc<Gateway>,
}

impl Admin {
    pub fn new(gateway: Arc<Gateway>) -> Self {
        Admin { gateway }
    }

    /// 401 without a bearer token, 403 with the wrong one; `None` when allowed.
    fn authorize(&self, method: &Method, authorization: Option<&[u8]>) -> Option<Reply> {
        let runtime = self.gateway.runtime();
        let admin = &runtime.config.admin;
        let needs_token = !admin.token.is_empty()
            && (method != Method::GET && method != Method::HEAD || admin.read_requires_token);
        if !needs_token {
            return None;
        }
        let presented = authorization.and_then(|v| {
            v.strip_prefix(b"Bearer ")
                .or_else(|| v.strip_prefix(b"bearer "))
        });
        match presented {
            None => Some(Reply::json(
                StatusCode::UNAUTHORIZED,
                json!({"error": "unauthorized", "message": "send Authorization: Bearer <admin.token>"}),
            )),
            Some(t) if constant_time_eq(t, admin.token.as_bytes()) => None,
            Some(_) => Some(Reply::json(
                StatusCode::FORBIDDEN,
                json!({"error": "forbidden", "message": "wrong admin token"}),
            )),
        }
    }

    async fn handle(&self, method: &Method, path: &str, body: Option<Bytes>) -> Reply {
        let gw = &self.gateway;
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (method.clone(), segments.as_slice()) {
            (Method::GET, ["alive"]) => Reply::json(StatusCode::OK, json!({"alive": true})),
            (Method::GET, ["ready"]) => {
                let ready = gw.is_ready();
                let status = if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                Reply::json(status, json!({"ready": ready}))
            }
            (Method::GET, ["health"]) => {
                let (healthy, body) = views::health(gw);
                let status = if healthy {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                Reply::json(status, body)
            }
            (Method::GET, ["info"]) => Reply::json(StatusCode::OK, views::info(gw)),
            (Method::GET, ["breakers"]) => {
                let runtime = gw.runtime();
                Reply::json(StatusCode::OK, views::breakers(gw, &runtime.routes))
            }
            (Method::GET, ["breakers", route]) => match gw.runtime().route(route) {
                Some(r) => Reply::json(StatusCode::OK, json!(views::breaker(gw, r))),
                None => no_route(route),
            },
            (Method::POST, ["breakers", action]) => match BreakerAction::parse(action) {
                Some(a) => match gw.breaker_action(None, a) {
                    Some(routes) => Reply::json(StatusCode::OK, views::breakers(gw, &routes)),
                    None => no_route(""),
                },
                None => Reply::not_found(path),
            },
            (Method::POST, ["breakers", route, action]) => match BreakerAction::parse(action) {
                Some(a) => match gw.breaker_action(Some(route), a) {
                    Some(routes) => match routes.first() {
                        Some(r) => Reply::json(StatusCode::OK, json!(views::breaker(gw, r))),
                        None => no_route(route),
                    },
                    None => no_route(route),
                },
                None => Reply::not_found(path),
            },
            (Method::POST, ["cache", route, "purge"]) => match gw.purge_cache(route) {
                Ok(v) => Reply::json(StatusCode::OK, v),
                Err(error) => Reply::json(
                    StatusCode::NOT_FOUND,
                    json!({"error": error, "route": route}),
                ),
            },
            (Method::PUT, ["log-level"]) => set_log_level(body),
            (Method::GET, ["metrics"]) => Reply {
                status: StatusCode::OK,
                content_type: "text/plain; version=0.0.4",
                body: {
                    let runtime = gw.runtime();
                    gw.metrics
                        .set_cache_sizes(runtime.routes.iter().filter_map(|r| {
                            let s = r.cache.as_ref()?.storage;
                            Some((r.name.to_string(), s.used_bytes(), s.entries()))
                        }));
                    gw.metrics.render().into_bytes()
                },
            },
            (Method::GET, ["config"]) => {
                Reply::json(StatusCode::OK, views::config(&gw.runtime().config))
            }
            (Method::POST, ["reload"]) => {
                let gw = gw.clone();
                let outcome =
                    tokio::task::spawn_blocking(move || crate::reload::reload(&gw, "admin"))
                        .await
                        .unwrap_or_else(|e| Err(format!("reload task failed: {e}")));
                match outcome {
                    Ok(r) => Reply::json(
                        StatusCode::OK,
                        json!({"ok": true, "generation": r.generation, "restart_required": r.restart_required}),
                    ),
                    Err(e) => Reply::json(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        json!({"ok": false, "error": e}),
                    ),
                }
            }
            (
                _,
                ["alive"]
                | ["ready"]
                | ["health"]
                | ["info"]
                | ["breakers", ..]
                | ["cache", _, "purge"]
                | ["log-level"]
                | ["metrics"]
                | ["config"]
                | ["reload"],
            ) => Reply::json(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"error": "method_not_allowed", "method": method.as_str(), "path": path}),
            ),
            _ => Reply::not_found(path),
        }
    }
}

fn no_route(route: &str) -> Reply {
    Reply::json(
        StatusCode::NOT_FOUND,
        json!({"error": "no_route", "route": route}),
    )
}

fn set_log_level(body: Option<Bytes>) -> Reply {
    let parsed: Result<Value, _> = serde_json::from_slice(body.as_deref().unwrap_or(b""));
    let level = parsed
        .ok()
        .and_then(|v| v.get("level").and_then(Value::as_str).map(str::to_string));
    let filter = match level.as_deref().map(str::parse::<LogLevel>) {
        Some(Ok(level)) => level.as_filter(),
        Some(Err(message)) => {
            return Reply::json(
                StatusCode::BAD_REQUEST,
                json!({"error": "bad_request", "message": message}),
            )
        }
        None => {
            return Reply::json(
                StatusCode::BAD_REQUEST,
                json!({"error": "bad_request", "message": "body must be {\"level\": \"debug\" | \"info\" | \"warn\" | \"error\"}"}),
            )
        }
    };
    log::set_max_level(filter);
    log::info!("log level set to {}", filter.as_str().to_ascii_lowercase());
    Reply::json(
        StatusCode::OK,
        json!({"level": filter.as_str().to_ascii_lowercase()}),
    )
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

struct Reply {
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Reply {
    fn json(status: StatusCode, v: Value) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: serde_json::to_vec(&v).unwrap_or_default(),
        }
    }

    fn not_found(path: &str) -> Reply {
        Reply::json(
            StatusCode::NOT_FOUND,
            json!({"error": "not_found", "path": path}),
        )
    }

    fn into_response(self) -> Response<Vec<u8>> {
        let mut builder = Response::builder()
            .status(self.status)
            .header("content-type", self.content_type)
            .header("content-length", self.body.len());
        if self.status == StatusCode::UNAUTHORIZED {
            builder = builder.header("www-authenticate", "Bearer");
        }
        builder
            .body(self.body)
            .unwrap_or_else(|_| Response::new(Vec::new()))
    }
}

async fn read_body(session: &mut ServerSession) -> Result<Option<Bytes>, Reply> {
    let mut buf = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > MAX_BODY {
                    return Err(Reply::json(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        json!({"error": "body_too_large"}),
                    ));
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(_) => {
                return Err(Reply::json(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "bad_request", "message": "could not read the body"}),
                ))
            }
        }
    }
    Ok((!buf.is_empty()).then(|| Bytes::from(buf)))
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        if method == Method::GET && matches!(path.as_str(), "/dashboard" | "/dashboard/") {
            // The page holds no data: it opens without a token, and asks for one when
            // the data or an action needs it.
            return events::page();
        }
        let auth = session
            .req_header()
            .headers
            .get("authorization")
            .map(|v| v.as_bytes().to_vec());
        let reply = match self.authorize(&method, auth.as_deref()) {
            Some(denied) => denied,
            None => match read_body(session).await {
                Ok(body) => self.handle(&method, &path, body).await,
                Err(reply) => reply,
            },
        };
        reply.into_response()
    }
}
