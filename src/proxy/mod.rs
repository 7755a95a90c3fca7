//! The pingora proxy hooks. They translate between pingora and the rest of fusegate:
//! the path check and route lookup ([`crate::router`]), admission and outcomes
//! ([`crate::breaker`]), upstream choice ([`crate::runtime::Upstreams`]). No breaker logic
//! lives here.
//!
//! A request's journey, after [`FrontDoor`] has held its header to the header limits:
//! - `request_filter`: request id, path check (400), route lookup (404), body limits
//!   (413 for a declared length over `server.max_body_bytes`, `server.body_timeout`);
//! - `request_body_filter`: a streamed body over `server.max_body_bytes` (413);
//! - `proxy_upstream_filter`: upstream choice (503 `no_healthy_upstream`), breaker
//!   admission (503 `circuit_open` / `route_paused`);
//! - `upstream_peer`, `upstream_request_filter`: the chosen peer, rewritten path and
//!   forwarding headers;
//! - `upstream_response_filter`: the upstream status;
//! - `fail_to_connect` / `fail_to_proxy`: JSON 502/504, and 408/413 for a stalled or
//!   oversized body;
//! - `logging`: the one place the outcome is recorded (or the permit released).

mod caching;
mod failure;
mod front;
mod request_id;
mod respond;

pub use failure::{classify, ProxyFailure};
pub use front::{
    reference_scan, scan_pieces, FrontDoor, HeaderLimits, HeaderScan, LimitedStream, ScanResult,
    Scanned,
};
pub use request_id::RequestIds;

use crate::breaker::{FailureKind, Outcome, Permit};
use crate::config::HostHeader;
use crate::gateway::{Gateway, InflightGuard};
use crate::metrics::RejectReason;
use crate::router::check_path;
use crate::runtime::Route;
use async_trait::async_trait;
use http::{HeaderValue, Uri};
use pingora::cache::key::HashBinary;
use pingora::cache::{
    CacheKey, CacheMeta, ForcedFreshness, HitHandler, NoCacheReason, RespCacheable,
};
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use std::sync::Arc;
use std::time::Instant;

/// The proxy service: one per process, shared by every worker thread.
pub struct Proxy {
    gateway: Arc<Gateway>,
    request_ids: RequestIds,
}

impl Proxy {
    pub fn new(gateway: Arc<Gateway>) -> Self {
        Proxy {
            gateway,
            request_ids: RequestIds::default(),
        }
    }
}

/// Per-request state.
pub struct RequestCtx {
    route: Option<Arc<Route>>,
    /// Index into the route's upstream list.
    upstream: Option<usize>,
    permit: Option<Permit>,
    request_id: Option<HeaderValue>,
    started: Instant,
    upstream_status: Option<u16>,
    connect_failed: bool,
    /// Request body bytes read so far, and the most allowed (`server.max_body_bytes`).
    body_read: u64,
    max_body: u64,
    cache: caching::CacheCtx,
    _inflight: InflightGuard,
}

impl Drop for RequestCtx {
    /// A permit still held here was neither recorded nor released (the request ended
    /// before `logging`): hand it back so a half-open probe slot is not lost.
    fn drop(&mut self) {
        if let (Some(permit), Some(route)) = (self.permit.take(), &self.route) {
            route.breaker.release(permit);
        }
    }
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            route: None,
            upstream: None,
            permit: None,
            request_id: None,
            started: Instant::now(),
            upstream_status: None,
            connect_failed: false,
            body_read: 0,
            max_body: u64::MAX,
            cache: caching::CacheCtx::default(),
            _inflight: self.gateway.track_request(),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let id = self
            .request_ids
            .for_request(session.req_header().headers.get("x-request-id"));
        ctx.request_id = Some(id);

        let runtime = self.gateway.runtime();
        let path = session.req_header().uri.path();
        if let Err(e) = check_path(path) {
            let body = respond::path_error_body("invalid_path", path);
            log::debug!("rejected path {path:?}: {}", e.message());
            respond::json(session, 400, body, ctx.request_id.as_ref(), &[]).await?;
            return Ok(true);
        }
        match runtime.route_for(path) {
            Some(route) => {
                ctx.route = Some(route.clone());
                let server = &runtime.config.server;
                session.set_read_timeout(Some(server.body_timeout.0));
                ctx.max_body = server.max_body_bytes.0;
                if declared_body_len(session.req_header()).is_some_and(|n| n > ctx.max_body) {
                    // Refused before any of it is read: the connection cannot be reused.
                    session.set_keepalive(None);
                    let body = respond::error_body("body_too_large", &route.name);
                    respond::json(session, 413, body, ctx.request_id.as_ref(), &[]).await?;
                    return Ok(true);
                }
                if let Some(limit) = &route.rate_limit {
                    let client = session
                        .client_addr()
                        .and_then(|a| a.as_inet())
                        .map(|a| a.ip());
                    if let Err(secs) = limit.check(client) {
                        route.metrics.rejected(RejectReason::RateLimited);
                        let body = respond::error_body("rate_limited", &route.name);
                        let retry = [("retry-after", secs.to_string())];
                        respond::json(session, 429, body, ctx.request_id.as_ref(), &retry).await?;
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            None => {
                let body = respond::path_error_body("no_route", path);
                respond::json(session, 404, body, ctx.request_id.as_ref(), &[]).await?;
                Ok(true)
            }
        }
    }

    /// Counts a streamed request body against `server.max_body_bytes`.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(chunk) = body {
            ctx.body_read = ctx.body_read.saturating_add(chunk.len() as u64);
            if ctx.body_read > ctx.max_body {
                return Err(failure::body_too_large(ctx.max_body));
            }
        }
        Ok(())
    }

    async fn proxy_upstream_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        let Some(route) = ctx.route.clone() else {
            return Err(Error::explain(InternalError, "no route in context"));
        };
        if ctx.cache.client.only_if_cached && route.cache.is_some() {
            // A miss (or a stale entry) for a client that will take only the cache.
            let body = respond::error_body("not_cached", &route.name);
            let headers = [("x-cache", "MISS".to_string())];
            respond::json(session, 504, body, ctx.request_id.as_ref(), &headers).await?;
            return Ok(false);
        }
        let Some(upstream) = route.upstreams.select_index() else {
            route.metrics.rejected(RejectReason::NoHealthyUpstream);
            let body = respond::error_body("no_healthy_upstream", &route.name);
            respond::json(session, 503, body, ctx.request_id.as_ref(), &[]).await?;
            return Ok(false);
        };
        let acquired = route
            .breaker
            .try_acquire(&route.settings, self.gateway.clock.now_ms());
        if let Some(t) = acquired.transition {
            self.gateway.on_transition(&route, t);
        }
        match acquired.result {
            Ok(permit) => {
                ctx.permit = Some(permit);
                ctx.upstream = Some(upstream);
                Ok(true)
            }
            Err(rejection) => {
                route
                    .metrics
                    .rejected(RejectReason::for_breaker(rejection.state));
                if caching::can_serve_stale(session) {
                    // Let pingora serve the stale entry: upstream_peer fails this request
                    // as an upstream error, which is pingora's stale-if-error path.
                    ctx.cache.deferred_rejection = Some(rejection);
                    return Ok(true);
                }
                respond::rejection(session, &route.name, rejection, ctx.request_id.as_ref())
                    .await?;
                Ok(false)
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        if ctx.cache.deferred_rejection.is_some() {
            return Err(caching::circuit_open_error());
        }
        let upstream = ctx
            .route
            .as_ref()
            .zip(ctx.upstream)
            .and_then(|(route, i)| route.upstreams.list().get(i));
        match upstream {
            Some(u) => Ok(u.peer()),
            None => Err(Error::explain(InternalError, "no upstream chosen")),
        }
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(route) = ctx.route.as_ref() else {
            return Ok(());
        };
        if route.strip_prefix {
            let path = route.upstream_path(upstream_request.uri.path());
            let rewritten = match upstream_request.uri.query() {
                Some(q) => format!("{path}?{q}"),
                None => path.to_string(),
            };
            let uri: Uri = rewritten
                .parse()
                .map_err(|e| Error::because(InternalError, "rewriting the path", e))?;
            upstream_request.set_uri(uri);
        }
        if route.host_header == HostHeader::Upstream {
            if let Some(u) = ctx.upstream.and_then(|i| route.upstreams.list().get(i)) {
                upstream_request.insert_header("host", u.authority.as_str())?;
            }
        }
        let client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip().to_string());
        if let Some(ip) = client_ip {
            let forwarded_for = match upstream_request.headers.get("x-forwarded-for") {
                Some(prev) => format!("{}, {ip}", String::from_utf8_lossy(prev.as_bytes())),
                None => ip,
            };
            upstream_request.insert_header("x-forwarded-for", forwarded_for)?;
        }
        upstream_request.insert_header("x-forwarded-proto", "http")?;
        let host = session
            .req_header()
            .headers
            .get("host")
            .cloned()
            .or_else(|| {
                session
                    .req_header()
                    .uri
                    .authority()
                    .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            });
        if let Some(host) = host {
            upstream_request.insert_header("x-forwarded-host", host)?;
        }
        if let Some(id) = &ctx.request_id {
            upstream_request.insert_header("x-request-id", id.clone())?;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut pingora::http::ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if !upstream_response.status.is_informational() {
            ctx.upstream_status = Some(upstream_response.status.as_u16());
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut pingora::http::ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(id) = &ctx.request_id {
            upstream_response.insert_header("x-request-id", id.clone())?;
        }
        if ctx.route.as_ref().is_some_and(|r| r.cache.is_some()) {
            caching::mark_response(session, upstream_response, &ctx.cache)?;
        }
        Ok(())
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        if let Some(rc) = ctx.route.as_ref().and_then(|r| r.cache.as_ref()) {
            caching::enable(session, rc, &mut ctx.cache);
        }
        Ok(())
    }

    fn cache_key_callback(&self, session: &Session, ctx: &mut RequestCtx) -> Result<CacheKey> {
        let route = ctx.route.as_ref().map_or("", |r| r.name.as_ref());
        Ok(caching::key(route, session.req_header()))
    }

    fn cache_vary_filter(
        &self,
        meta: &CacheMeta,
        _ctx: &mut RequestCtx,
        req: &RequestHeader,
    ) -> Option<HashBinary> {
        crate::cache::variance(meta, req)
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &pingora::http::ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<RespCacheable> {
        Ok(match ctx.route.as_ref().and_then(|r| r.cache.as_ref()) {
            Some(rc) => caching::cacheable(session, rc, &ctx.cache, resp),
            None => RespCacheable::Uncacheable(NoCacheReason::Custom("route has no cache")),
        })
    }

    async fn cache_hit_filter(
        &self,
        _session: &mut Session,
        meta: &CacheMeta,
        _hit_handler: &mut HitHandler,
        is_fresh: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<ForcedFreshness>> {
        let Some(route) = ctx.route.clone() else {
            return Ok(None);
        };
        let now_ms = self.gateway.clock.now_ms();
        Ok(caching::hit_filter(
            &route,
            meta,
            is_fresh,
            now_ms,
            &mut ctx.cache,
        ))
    }

    fn should_serve_stale(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
        error: Option<&Error>,
    ) -> bool {
        let Some(route) = ctx.route.clone() else {
            return false;
        };
        caching::should_serve_stale(&route, error, ctx.connect_failed, &mut ctx.cache)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        e: Box<Error>,
    ) -> Box<Error> {
        ctx.connect_failed = true;
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        if let (Some(rejection), Some(route)) = (ctx.cache.deferred_rejection, &ctx.route) {
            // The breaker refused and no stale entry could be served after all.
            if session.response_written().is_none() {
                let id = ctx.request_id.as_ref();
                if let Err(err) = respond::rejection(session, &route.name, rejection, id).await {
                    log::debug!("could not send the rejection: {err}");
                }
            }
            return FailToProxy {
                error_code: 503,
                can_reuse_downstream: false,
            };
        }
        let failure = classify(e.etype(), e.esource(), ctx.connect_failed);
        let mut error_code = 0;
        if let Some((status, error)) = failure.response() {
            error_code = status;
            if session.response_written().is_none() {
                let body = match &ctx.route {
                    Some(route) => respond::error_body(error, &route.name),
                    None => format!(r#"{{"error":"{error}"}}"#),
                };
                if let Err(write_err) =
                    respond::json(session, status, body, ctx.request_id.as_ref(), &[]).await
                {
                    log::debug!("could not send the error response: {write_err}");
                }
            }
        }
        FailToProxy {
            error_code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let Some(route) = ctx.route.clone() else {
            return;
        };
        let elapsed = ctx.started.elapsed();
        if let Some(resp) = session.response_written() {
            route
                .metrics
                .request(resp.status.as_u16(), elapsed.as_secs_f64());
        }
        if route.cache.is_some() {
            route
                .metrics
                .cache(caching::result(session, &ctx.cache).as_metric());
        }
        let Some(permit) = ctx.permit.take() else {
            return;
        };
        let duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        let failure = match (e, ctx.cache.stale_error) {
            // The upstream failed and a stale entry was served instead.
            (_, Some(kind)) => Some(kind),
            (None, None) => match ctx.upstream_status {
                Some(status) => route
                    .settings
                    .failure_statuses
                    .contains(status)
                    .then_some(FailureKind::Status),
                None => {
                    route.breaker.release(permit);
                    return;
                }
            },
            (Some(e), None) => match classify(e.etype(), e.esource(), ctx.connect_failed) {
                ProxyFailure::Upstream(kind) => Some(kind),
                ProxyFailure::Downstream(_) | ProxyFailure::Internal => {
                    route.breaker.release(permit);
                    return;
                }
            },
        };
        if let Some(kind) = failure {
            route.metrics.upstream_failure(kind);
        }
        let outcome = Outcome {
            failure,
            duration_ms,
        };
        let now = self.gateway.clock.now_ms();
        if let Some(t) = route.breaker.record(permit, outcome, &route.settings, now) {
            self.gateway.on_transition(&route, t);
        }
    }
}

/// The `Content-Length` a request declares, if any (a malformed one is pingora's to refuse).
fn declared_body_len(req: &RequestHeader) -> Option<u64> {
    req.headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}
