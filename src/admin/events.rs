//! The dashboard on the admin port (SPEC §13): the page (`GET /dashboard`) and its data
//! stream (`GET /events`, server-sent events: a `snapshot` every second, each breaker
//! `transition` at once).
//!
//! A stream writes one event at a time and never queues: a client that does not read
//! within [`WRITE_LIMIT`] is dropped, so a stalled reader costs one connection and no
//! memory. Snapshots are taken only while at least one stream is open.

use super::Admin;
use crate::gateway::Gateway;
use crate::live::Live;
use async_trait::async_trait;
use bytes::Bytes;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// The dashboard page: one file, inline style and script, no external assets.
pub const DASHBOARD_HTML: &str = include_str!("dashboard.html");

/// The longest a stream may take to hand one event to its client before it is dropped.
pub const WRITE_LIMIT: Duration = Duration::from_secs(5);

/// `GET /dashboard`.
pub fn page() -> Response<Vec<u8>> {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/html; charset=utf-8")
        .header("content-length", DASHBOARD_HTML.len())
        .header("cache-control", "no-cache")
        .body(DASHBOARD_HTML.as_bytes().to_vec())
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

/// The admin port's HTTP application: the JSON endpoints of [`Admin`], and the event
/// stream, which a whole-response app cannot serve.
pub struct AdminApp {
    admin: Admin,
}

impl AdminApp {
    pub fn new(gateway: Arc<Gateway>) -> Self {
        AdminApp {
            admin: Admin::new(gateway),
        }
    }

    /// `GET /events`: the stream, until the client leaves, falls behind or the server
    /// shuts down.
    async fn events(&self, session: &mut ServerSession, shutdown: &ShutdownWatch) {
        let auth = session
            .req_header()
            .headers
            .get("authorization")
            .map(|v| v.as_bytes().to_vec());
        if let Some(denied) = self.admin.authorize(&Method::GET, auth.as_deref()) {
            let _ = write_response(session, denied.into_response()).await;
            return;
        }
        stream(session, &self.admin.gateway.live, "snapshot", shutdown).await;
    }
}

/// Streams `live` to one client as server-sent events: the latest snapshot at once and
/// each new one as `snapshot_event`, transitions as `transition`, until the client
/// leaves, falls behind by [`WRITE_LIMIT`] or the server shuts down. Used by the admin
/// port and by `fusegate dashboard`.
pub async fn stream(
    session: &mut ServerSession,
    live: &Live,
    snapshot_event: &str,
    shutdown: &ShutdownWatch,
) {
    let mut watch = live.watch();
    let mut header = match ResponseHeader::build(200, Some(4)) {
        Ok(h) => h,
        Err(_) => return,
    };
    for (name, value) in [
        ("content-type", "text/event-stream"),
        ("cache-control", "no-store"),
        ("transfer-encoding", "chunked"),
    ] {
        if header.insert_header(name, value).is_err() {
            return;
        }
    }
    session.set_keepalive(None);
    if session
        .write_response_header(Box::new(header))
        .await
        .is_err()
    {
        return;
    }
    let mut shutdown = shutdown.clone();
    let first = watch.snapshots.borrow_and_update().clone();
    let mut next = Some(event(snapshot_event, &first)).filter(|_| !first.is_empty());
    let mut hello = Some(Bytes::from_static(b"retry: 2000\n\n"));
    loop {
        if let Some(bytes) = hello.take().or_else(|| next.take()) {
            let sent =
                tokio::time::timeout(WRITE_LIMIT, session.write_response_body(bytes, false)).await;
            if !matches!(sent, Ok(Ok(()))) {
                log::debug!("dashboard stream closed: the client stopped reading or left");
                return;
            }
            continue;
        }
        tokio::select! {
            changed = watch.snapshots.changed() => {
                if changed.is_err() {
                    return;
                }
                let snap = watch.snapshots.borrow_and_update().clone();
                next = Some(event(snapshot_event, &snap));
            }
            t = watch.transitions.recv() => match t {
                Ok(json) => next = Some(event("transition", &json)),
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
            _ = shutdown.changed() => return,
        }
    }
}

/// Writes a whole response; `false` when the client is gone.
pub async fn write_response(session: &mut ServerSession, resp: Response<Vec<u8>>) -> bool {
    let (parts, body) = resp.into_parts();
    let header: ResponseHeader = parts.into();
    let empty = body.is_empty();
    if session
        .write_response_header(Box::new(header))
        .await
        .is_err()
    {
        return false;
    }
    empty
        || session
            .write_response_body(Bytes::from(body), true)
            .await
            .is_ok()
}

/// One server-sent event.
fn event(name: &str, data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + name.len() + 16);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

#[async_trait]
impl HttpServerApp for AdminApp {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        match session.read_request().await {
            Ok(true) => {}
            // The client left, or sent no request; the header limits say why.
            Ok(false) | Err(_) => return None,
        }
        let req = session.req_header();
        if req.method == Method::GET && req.uri.path() == "/events" {
            self.events(&mut session, shutdown).await;
            return None;
        }
        let resp = self.admin.response(&mut session).await;
        if !write_response(&mut session, resp).await {
            return None;
        }
        let settings = HttpPersistentSettings::for_session(&session);
        match session.finish().await {
            Ok(reusable) => reusable.map(|s| ReusedHttpStream::from_reusable_stream(s, settings)),
            Err(_) => None,
        }
    }
}
