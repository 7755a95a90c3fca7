//! The pingora proxy hooks. They translate between pingora and the rest of fusegate:
//! the path check and route lookup ([`crate::router`]), admission and outcomes
//! ([`crate::breaker`]), upstream choice ([`crate::runtime::Upstreams`]). No breaker logic
//! lives here.
//!
//! A request's journey, after [`FrontDoor`] has held its header to the header limits:
//! - `request_filter`: request id, path check (400) and merged slashes, route lookup
//!   (404), body limits (413 for a declared length over `server.max_body_bytes`,
//!   `server.body_timeout`), rate limit (429), and a small body read whole (see below);
//! - `request_body_filter`: a streamed body over `server.max_body_bytes` (413); the end
//!   of the body marks the request as sent, where the upstream's time starts;
//! - `proxy_upstream_filter`: upstream choice (503 `no_healthy_upstream`), breaker
//!   admission (503 `circuit_open` / `route_paused`);
//! - `upstream_peer`, `upstream_request_filter`: the chosen peer, rewritten path and
//!   forwarding headers;
//! - `upstream_response_filter`: the response header's time is the upstream's time; it
//!   settles a half-open probe and a `101` at once (however long the body or upgraded
//!   stream lasts); other requests are recorded in `logging`, so an upstream that breaks
//!   off its body is still a `reset` failure;
//! - `fail_to_connect` / `fail_to_proxy`: JSON 502/504, and 408/413 for a stalled or
//!   oversized body;
//! - a breaker rejection with no stale entry to stand in is answered by the route's
//!   `fallback` when it has one (`proxy/fallback.rs`): a static answer at once, or the request
//!   sent to the fallback upstream (original path, no breaker, never cached) whose
//!   failure gets the 503 contract;
//! - `logging`: records the outcome not yet settled, or hands the permit back when
//!   nothing the upstream did decided the request (the client went away first).
//!
//! Only the upstream is blamed. A request body of up to [`PREREAD_LIMIT`] bytes with a
//! `Content-Length` is read whole before the breaker is asked, so a client that stalls
//! its upload gets 408 after `server.body_timeout` without ever holding a permit or
//! reaching the upstream. A larger or chunked body is streamed; while it streams, the
//! upstream's read timeout is `timeout` + `server.body_timeout`, so the client's own body
//! timeout always fires first, and such a request never takes a half-open probe slot.

mod caching;
mod failure;
mod fallback;
mod front;
mod grpc;
mod names;
mod request_id;
mod respond;
mod trace;

pub use failure::{classify, ProxyFailure};
pub use front::{
    client_limits, reference_scan, scan_pieces, serve_limited, FrontDoor, HeaderLimits, HeaderScan,
    LimitedStream, ScanResult, Scanned,
};
pub use request_id::RequestIds;

use crate::breaker::{FailureKind, Outcome, Permit, State};
use crate::config::HostHeader;
use crate::gateway::{Gateway, InflightGuard};
use crate::live;
use crate::metrics::{ClientError, Proto, RejectReason};
use crate::router::{check_path, merge_slashes};
use crate::runtime::{Route, UpstreamUsed};
use async_trait::async_trait;
use http::{HeaderValue, Uri};
use pingora::cache::key::HashBinary;
use pingora::cache::{
    CacheKey, CacheMeta, ForcedFreshness, HitHandler, NoCacheReason, RespCacheable,
};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Request bodies up to this size, with a declared length, are read whole before the
/// request is admitted (pingora replays them upstream from its retry buffer, whose size
/// this is).
pub const PREREAD_LIMIT: u64 = 64 * 1024;

/// The proxy service: one per process, shared by every worker thread.
pub struct Proxy {
    gateway: Arc<Gateway>,
    request_ids: RequestIds,
    upstream_lines: crate::logging::Throttle,
}

/// Upstream failure lines written per second at most.
pub const UPSTREAM_LINES_PER_SEC: u64 = 5;

impl Proxy {
    pub fn new(gateway: Arc<Gateway>) -> Self {
        Proxy {
            gateway,
            request_ids: RequestIds::default(),
            upstream_lines: crate::logging::Throttle::new(UPSTREAM_LINES_PER_SEC),
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
    /// When the whole request (header and body) had been handed to the upstream: the
    /// upstream's time (`timeout`, slow calls) runs from here to the response header.
    sent_at: Option<Instant>,
    /// When the upstream connection was asked for.
    upstream_started: Option<Instant>,
    /// The request body is streamed to the upstream as it arrives (not read whole first).
    streamed_body: bool,
    /// The last piece of the request body has been passed on.
    body_done: bool,
    /// `server.body_timeout` and `server.keepalive_timeout` in force for this request.
    body_timeout: Duration,
    idle_timeout: Duration,
    /// The client's address (the peer's, or named by a trusted proxy).
    client_ip: Option<std::net::IpAddr>,
    /// The peer is one of `server.trusted_proxies`.
    peer_trusted: bool,
    upstream_status: Option<u16>,
    /// The upstream's time to its response header in µs (the dashboard's latency
    /// percentiles want that resolution), once it has arrived.
    header_us: Option<u64>,
    connect_failed: bool,
    /// The breaker turned this request away and it goes to the route's fallback upstream
    /// instead: the rejection it stands in for.
    fallback: Option<crate::breaker::Rejection>,
    /// Request body bytes read so far, and the most allowed (`server.max_body_bytes`).
    body_read: u64,
    max_body: u64,
    cache: caching::CacheCtx,
    /// The breaker state the request met, for the access log.
    breaker_met: Option<State>,
    /// What the gateway made of a request it answered itself (`rejected`,
    /// `client_error`), for the access log.
    answered: Option<&'static str>,
    /// The request's W3C trace and the gateway's span in it.
    trace: Option<trace::TraceContext>,
    /// The request's exported span, when it is sampled and `[tracing]` is on.
    span: Option<opentelemetry_sdk::trace::Span>,
    /// The request is gRPC (`content-type: application/grpc*`).
    grpc: bool,
    /// The upstream's `grpc-status`, from its response header or trailers.
    grpc_status: Option<u32>,
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

/// An address as a header value, formatted in place: one allocation (the value's own).
fn ip_value(ip: std::net::IpAddr) -> HeaderValue {
    use std::io::Write;
    let mut buf = [0u8; 48]; // the longest IPv6 text is 45 bytes
    let mut rest = &mut buf[..];
    let written = write!(rest, "{ip}").map(|()| rest.len());
    written
        .ok()
        .and_then(|left| HeaderValue::from_bytes(&buf[..buf.len() - left]).ok())
        .unwrap_or_else(|| HeaderValue::from_static("unknown"))
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = RequestCtx;

    /// No downstream modules. pingora's default adds its response compression module,
    /// switched off; fusegate never compresses, and without the module a request skips
    /// making its context and calling its filters.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            route: None,
            upstream: None,
            permit: None,
            request_id: None,
            started: Instant::now(),
            sent_at: None,
            upstream_started: None,
            streamed_body: false,
            body_done: false,
            body_timeout: Duration::ZERO,
            idle_timeout: Duration::ZERO,
            client_ip: None,
            peer_trusted: false,
            upstream_status: None,
            header_us: None,
            connect_failed: false,
            fallback: None,
            body_read: 0,
            max_body: u64::MAX,
            cache: caching::CacheCtx::default(),
            breaker_met: None,
            answered: None,
            trace: None,
            span: None,
            grpc: false,
            grpc_status: None,
            _inflight: self.gateway.track_request(),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let headers = &session.req_header().headers;
        ctx.grpc = grpc::is_grpc(headers);
        // A client's `X-Correlation-Id` stands in for a missing `X-Request-Id`.
        let id = self.request_ids.for_request(
            headers
                .get(names::X_REQUEST_ID)
                .or_else(|| headers.get(names::X_CORRELATION_ID)),
        );
        ctx.request_id = Some(id);
        {
            // The exporter is looked at here only: not held across the awaits below.
            let otel = self.gateway.otel.load();
            let mut t = trace::TraceContext::for_request(headers.get(names::TRACEPARENT), || {
                otel.as_ref().is_some_and(|o| o.sample_new())
            });
            if let Some(o) = otel.as_ref().filter(|_| t.sampled) {
                // The exported span's ids are the ones sent upstream.
                let span = o.start_span(
                    &session.req_header().method,
                    t.parent_span_id.map(|p| (t.trace_id, p)),
                );
                let sc = opentelemetry::trace::Span::span_context(&span);
                t.trace_id = u128::from_be_bytes(sc.trace_id().to_bytes());
                t.span_id = u64::from_be_bytes(sc.span_id().to_bytes());
                ctx.span = Some(span);
            }
            ctx.trace = Some(t);
        }

        let runtime = self.gateway.runtime();
        let path = session.req_header().uri.path();
        if let Err(e) = check_path(path) {
            let body = respond::path_error_body("invalid_path", path);
            log::debug!("rejected path {path:?}: {}", e.message());
            ctx.answered = Some(CLIENT_ERROR);
            respond::json(session, 400, body, ctx.request_id.as_ref(), &[]).await?;
            return Ok(true);
        }
        if let Some(merged) = merge_slashes(path) {
            let uri = match session.req_header().uri.query() {
                Some(q) => format!("{merged}?{q}"),
                None => merged,
            };
            match uri.parse::<Uri>() {
                Ok(uri) => session.req_header_mut().set_uri(uri),
                Err(_) => {
                    ctx.answered = Some(CLIENT_ERROR);
                    let body = respond::path_error_body("invalid_path", path);
                    respond::json(session, 400, body, ctx.request_id.as_ref(), &[]).await?;
                    return Ok(true);
                }
            }
        }
        let path = session.req_header().uri.path();
        match runtime.route_for(path) {
            Some(route) => {
                ctx.route = Some(route.clone());
                let server = &runtime.config.server;
                session.set_read_timeout(Some(server.body_timeout.0));
                ctx.max_body = server.max_body_bytes.0;
                ctx.body_timeout = server.body_timeout.0;
                ctx.idle_timeout = server.keepalive_timeout.0;
                if declared_body_len(session.req_header()).is_some_and(|n| n > ctx.max_body) {
                    // Refused before any of it is read: the connection cannot be reused.
                    session.set_keepalive(None);
                    self.gateway.metrics.client_error(ClientError::BodyTooLarge);
                    ctx.answered = Some(CLIENT_ERROR);
                    let body = respond::error_body("body_too_large", &route.name);
                    respond::json(session, 413, body, ctx.request_id.as_ref(), &[]).await?;
                    return Ok(true);
                }
                if let Some(peer) = session.client_addr().and_then(|a| a.as_inet()) {
                    let peer = peer.ip();
                    let trusted = &runtime.trusted_proxies;
                    ctx.peer_trusted = !trusted.is_empty() && trusted.trusts(peer);
                    ctx.client_ip = Some(if ctx.peer_trusted {
                        let xff = session.req_header().headers.get(names::X_FORWARDED_FOR);
                        trusted.client(peer, xff.and_then(|v| v.to_str().ok()))
                    } else {
                        peer
                    });
                }
                if let Some(limit) = &route.rate_limit {
                    if let Err(secs) = limit.check(ctx.client_ip) {
                        route.metrics.rejected(RejectReason::RateLimited);
                        ctx.answered = Some(REJECTED);
                        let body = respond::error_body("rate_limited", &route.name);
                        let retry = [("retry-after", secs.to_string())];
                        respond::json(session, 429, body, ctx.request_id.as_ref(), &retry).await?;
                        return Ok(true);
                    }
                }
                let declared = declared_body_len(session.req_header());
                if declared.is_some_and(|n| n > 0 && n <= PREREAD_LIMIT)
                    && !session.is_upgrade_req()
                {
                    if let Err(e) = read_whole_body(session, ctx.body_timeout).await {
                        let e = e.into_down();
                        if classify(e.etype(), e.esource(), false)
                            != ProxyFailure::Downstream(failure::ClientFault::Stalled)
                        {
                            return Err(e);
                        }
                        session.set_keepalive(None);
                        self.gateway.metrics.client_error(ClientError::BodyTimeout);
                        ctx.answered = Some(CLIENT_ERROR);
                        let body = respond::error_body("request_timeout", &route.name);
                        respond::json(session, 408, body, ctx.request_id.as_ref(), &[]).await?;
                        return Ok(true);
                    }
                } else {
                    ctx.streamed_body = !session.is_body_empty();
                }
                Ok(false)
            }
            None => {
                ctx.answered = Some(CLIENT_ERROR);
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
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(chunk) = body {
            ctx.body_read = ctx.body_read.saturating_add(chunk.len() as u64);
            if ctx.body_read > ctx.max_body {
                return Err(failure::body_too_large(ctx.max_body));
            }
        }
        if end_of_stream && !ctx.body_done {
            ctx.body_done = true;
            ctx.sent_at = Some(Instant::now());
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
            ctx.answered = Some(CLIENT_ERROR);
            let body = respond::error_body("not_cached", &route.name);
            let headers = [("x-cache", "MISS".to_string())];
            respond::json(session, 504, body, ctx.request_id.as_ref(), &headers).await?;
            return Ok(false);
        }
        let Some(upstream) = route.upstreams.select_index() else {
            route.metrics.rejected(RejectReason::NoHealthyUpstream);
            ctx.answered = Some(REJECTED);
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
        let result = match acquired.result {
            // A probe is settled at the response header, which a streamed upload would
            // put off for as long as the client likes: such a request is no probe. gRPC
            // requests always stream their body; one is a probe held to `timeout` from
            // its start (see `upstream_peer`), so a gRPC route can recover.
            Ok(permit) if permit.is_probe() && ctx.streamed_body && !ctx.grpc => {
                Err(route.breaker.refuse_probe(permit))
            }
            other => other,
        };
        match result {
            Ok(permit) => {
                ctx.breaker_met = Some(if permit.is_probe() {
                    State::HalfOpen
                } else {
                    route.breaker.state()
                });
                ctx.permit = Some(permit);
                ctx.upstream = Some(upstream);
                Ok(true)
            }
            Err(rejection) => {
                route
                    .metrics
                    .rejected(RejectReason::for_breaker(rejection.state));
                ctx.breaker_met = Some(rejection.state);
                ctx.answered = Some(REJECTED);
                if caching::can_serve_stale(session) {
                    // Let pingora serve the stale entry: upstream_peer fails this request
                    // as an upstream error, which is pingora's stale-if-error path.
                    ctx.cache.deferred_rejection = Some(rejection);
                    return Ok(true);
                }
                fallback::refuse(session, ctx, &route, rejection).await
            }
        }
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        if ctx.cache.deferred_rejection.is_some() {
            return Err(caching::circuit_open_error());
        }
        if ctx.fallback.is_some() {
            return fallback::peer(ctx);
        }
        let upstream = ctx
            .route
            .as_ref()
            .zip(ctx.upstream)
            .and_then(|(route, i)| route.upstreams.list().get(i));
        let Some(u) = upstream else {
            return Err(Error::explain(InternalError, "no upstream chosen"));
        };
        ctx.upstream_started = Some(Instant::now());
        let mut peer = u.peer();
        let probe = ctx.permit.as_ref().is_some_and(Permit::is_probe);
        if session.is_upgrade_req() {
            // An upgraded connection (WebSocket) is bounded by idleness only; but a
            // half-open probe must have its answer within `timeout`, so a probe's
            // upgraded connection keeps that bound.
            if !ctx.idle_timeout.is_zero() && !probe {
                peer.options.read_timeout = Some(ctx.idle_timeout);
            }
        } else if ctx.streamed_body && !probe {
            // While the body streams, the client's body timeout must fire first. (A
            // streamed gRPC probe keeps `timeout`: a client that stalls its body then
            // gives the probe back when it runs out, blamed on nobody.)
            peer.options.read_timeout = peer
                .options
                .read_timeout
                .map(|t| t.saturating_add(ctx.body_timeout));
        }
        Ok(peer)
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
        let fallback = fallback::upstream(ctx, route);
        // A fallback upstream gets the original path.
        if route.strip_prefix && fallback.is_none() {
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
            let chosen = ctx.upstream.and_then(|i| route.upstreams.list().get(i));
            if let Some(u) = fallback.or(chosen) {
                upstream_request.insert_header("host", u.authority.as_str())?;
            }
        }
        // From a trusted proxy the forwarding headers are kept and the chain appended to;
        // from anyone else they are the gateway's own view.
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let prev = ctx
            .peer_trusted
            .then(|| upstream_request.headers.get(names::X_FORWARDED_FOR))
            .flatten()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        match (peer, prev) {
            (Some(ip), Some(prev)) => {
                upstream_request.insert_header("x-forwarded-for", format!("{prev}, {ip}"))?
            }
            (Some(ip), None) => upstream_request.insert_header("x-forwarded-for", ip_value(ip))?,
            (None, Some(_)) => {}
            (None, None) => {
                upstream_request.remove_header(&names::X_FORWARDED_FOR);
            }
        }
        if !ctx.peer_trusted {
            upstream_request.remove_header(&http::header::FORWARDED);
        }
        let trusted = ctx.peer_trusted;
        if !(trusted
            && upstream_request
                .headers
                .contains_key(names::X_FORWARDED_PROTO))
        {
            let tls = session
                .downstream_session
                .digest()
                .is_some_and(|d| d.ssl_digest.is_some());
            let proto = if tls { "https" } else { "http" };
            upstream_request.insert_header("x-forwarded-proto", proto)?;
        }
        let keep_host = trusted
            && upstream_request
                .headers
                .contains_key(names::X_FORWARDED_HOST);
        let host = session
            .req_header()
            .headers
            .get(http::header::HOST)
            .cloned()
            .or_else(|| {
                session
                    .req_header()
                    .uri
                    .authority()
                    .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            });
        match host {
            _ if keep_host => {}
            Some(host) => upstream_request.insert_header("x-forwarded-host", host)?,
            None => {
                upstream_request.remove_header(&names::X_FORWARDED_HOST);
            }
        }
        if let Some(id) = &ctx.request_id {
            upstream_request.insert_header("x-request-id", id.clone())?;
        }
        if let Some(t) = &ctx.trace {
            upstream_request.insert_header("traceparent", t.traceparent())?;
        }
        // `tracestate` goes with the trace it belongs to: not past W3C's bounds, and not
        // when the client's `traceparent` was unusable and a new trace started.
        let continued = ctx.trace.is_some_and(|t| t.parent_span_id.is_some());
        if upstream_request
            .headers
            .get(names::TRACESTATE)
            .is_some_and(|v| !continued || !trace::tracestate_ok(v))
        {
            upstream_request.remove_header(&names::TRACESTATE);
        }
        if route.cache.is_some() && fallback.is_none() {
            // Tells the upstream that a surrogate cache is in front, and its name for
            // targeted `Surrogate-Control` directives.
            upstream_request.append_header(
                "surrogate-capability",
                crate::cache::rfc::SURROGATE_CAPABILITY,
            )?;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut pingora::http::ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let status = upstream_response.status;
        if status.is_informational() && status != http::StatusCode::SWITCHING_PROTOCOLS {
            return Ok(());
        }
        ctx.upstream_status = Some(status.as_u16());
        if status == http::StatusCode::SWITCHING_PROTOCOLS && !ctx.idle_timeout.is_zero() {
            session.set_read_timeout(Some(ctx.idle_timeout));
        }
        // Fields the upstream names in `Connection` are hop-by-hop: neither stored nor
        // forwarded.
        crate::cache::rfc::strip_connection_listed(upstream_response);
        if ctx.fallback.is_some() {
            return fallback::mark_response(ctx, upstream_response);
        }
        ctx.header_us = Some(ctx.upstream_us());
        let probe = ctx.permit.as_ref().is_some_and(Permit::is_probe);
        let route_cache = ctx
            .route
            .as_ref()
            .and_then(|r| Some((r, r.cache.as_ref()?)));
        if let Some((route, cache)) = route_cache {
            // A 304's fields update the stored header (response_cache_filter); an unsafe
            // request that succeeded invalidates what is stored for its URI.
            let req = session.req_header();
            if status == http::StatusCode::NOT_MODIFIED && session.cache.enabled() {
                ctx.cache.not_modified = Some(Box::new(upstream_response.clone()));
            } else if crate::cache::rfc::invalidates(&req.method)
                && (status.is_success() || status.is_redirection())
            {
                crate::cache::invalidate(&route.name, cache, req, upstream_response);
            }
        }
        if ctx.grpc {
            // A trailers-only answer carries its `grpc-status` in the header.
            ctx.grpc_status = grpc::status_of(&upstream_response.headers);
        }
        if let Some(route) = ctx.route.clone() {
            // A gRPC answer's outcome is in its `grpc-status`: a probe waits for it.
            let decided = !ctx.grpc || status != http::StatusCode::OK || ctx.grpc_status.is_some();
            if (probe && decided) || status == http::StatusCode::SWITCHING_PROTOCOLS {
                let failure = self.response_failure(&route, ctx, status.as_u16());
                self.settle(&route, ctx, failure);
            }
        }
        Ok(())
    }

    /// A gRPC answer's `grpc-status` in its trailers: settles a probe at once.
    fn upstream_response_trailer_filter(
        &self,
        _session: &mut Session,
        trailers: &mut http::HeaderMap,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if !ctx.grpc || ctx.fallback.is_some() {
            return Ok(());
        }
        ctx.grpc_status = grpc::status_of(trailers);
        let probe = ctx.permit.as_ref().is_some_and(Permit::is_probe);
        if let (true, Some(route), Some(status)) = (probe, ctx.route.clone(), ctx.upstream_status) {
            let failure = self.response_failure(&route, ctx, status);
            self.settle(&route, ctx, failure);
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
        session: &mut Session,
        ctx: &mut RequestCtx,
        error: Option<&Error>,
    ) -> bool {
        let Some(route) = ctx.route.clone() else {
            return false;
        };
        let serve = caching::should_serve_stale(&route, error, ctx.connect_failed, &mut ctx.cache);
        if serve && error.is_some() {
            // pingora does not reuse the client connection after an upstream error, even
            // when a stale entry answers: say so in the answer, or the client may send its
            // next request on a connection about to close.
            session.set_keepalive(None);
        }
        serve
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
        // The client connection is not reused after a failed request (every answer below
        // says `can_reuse_downstream: false`): the answer says `Connection: close`, so the
        // client does not send another request on it.
        session.set_keepalive(None);
        if let Some(answered) = fallback::fail_to_proxy(session, e, ctx).await {
            return answered;
        }
        let failure = ctx.classify(e);
        if let ProxyFailure::Downstream(fault) = failure {
            if let Some(reason) = fault.client_error() {
                self.gateway.metrics.client_error(reason);
            }
        }
        let mut error_code = 0;
        if let Some((status, error)) = failure.response() {
            error_code = status;
            if final_response(session).is_none() {
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

    /// pingora's per-request error line is replaced:
    /// - a client that went away or was cut off by a client limit is not an error of the
    ///   gateway: it is counted (`fusegate_client_errors_total`), not logged;
    /// - a failing fallback upstream is answered with the 503 contract, not logged: the
    ///   route's breaker already tells that its upstream is failing;
    /// - an upstream failure is a `warn` line naming the route and upstream, at most
    ///   [`UPSTREAM_LINES_PER_SEC`] a second; the next line says how many were held back.
    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, e: &Error) -> bool {
        match ctx.classify(e) {
            ProxyFailure::Downstream(_) => true,
            _ if ctx.fallback.is_some() => true,
            ProxyFailure::Upstream(kind) => {
                let now_sec = self.gateway.clock.now_ms() / 1000;
                if let Some(held_back) = self.upstream_lines.admit(now_sec) {
                    let route = ctx.route.as_deref();
                    let upstream = route
                        .zip(ctx.upstream_used())
                        .and_then(|(r, u)| r.upstream_authority(u))
                        .unwrap_or("-");
                    let more = if held_back > 0 {
                        format!(" ({held_back} more upstream failures not logged)")
                    } else {
                        String::new()
                    };
                    log::warn!(
                        "route {}: upstream {upstream} failed ({}): {e}; request {}{more}",
                        route.map_or("-", |r| &r.name),
                        kind.as_str(),
                        ctx.request_id
                            .as_ref()
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-"),
                    );
                }
                true
            }
            ProxyFailure::Internal => false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let outcome = self.account(session, e, ctx);
        if session.subrequest_ctx.is_some() {
            // A background revalidation (stale-while-revalidate) is no client request:
            // no access-log line, no span of its own.
            return;
        }
        if let Some(access_log) = self.gateway.access_log.load().as_ref() {
            access_log.log(access_entry(session, ctx, e, outcome));
        }
        if let Some(span) = ctx.span.take() {
            if let Some(otel) = self.gateway.otel.load().as_ref() {
                otel.finish(span, span_facts(session, ctx, outcome));
            }
        }
    }
}

/// The access log's `outcome` for a request the gateway answered itself.
const CLIENT_ERROR: &str = "client_error";
const REJECTED: &str = "rejected";

/// `Some(Status)` when `status` is one of the route's `failure_statuses`.
fn status_failure(route: &Route, status: u16) -> Option<FailureKind> {
    route
        .settings
        .failure_statuses
        .contains(status)
        .then_some(FailureKind::Status)
}

impl Proxy {
    /// Counts the request in its route's metrics and records its outcome on the route's
    /// breaker; returns that outcome as the access log names it: `success`, the failure
    /// kind the breaker recorded, `rejected` or `client_error`.
    fn account(&self, session: &Session, e: Option<&Error>, ctx: &mut RequestCtx) -> &'static str {
        let cache = ctx
            .route
            .as_ref()
            .filter(|r| r.cache.is_some())
            .map(|_| caching::result(session, &ctx.cache));
        let outcome = self.record(session, e, ctx, cache);
        if let Some(route) = &ctx.route {
            let kind = match outcome {
                _ if cache == Some(caching::CacheResult::Stale) => live::Kind::Stale,
                "success" => live::Kind::Ok,
                "status" | "connect" | "reset" => live::Kind::Failed,
                "timeout" => live::Kind::Timeout,
                REJECTED if final_response(session).is_some_and(|r| r.status == 429) => {
                    live::Kind::RateLimited
                }
                REJECTED => live::Kind::Rejected,
                _ => live::Kind::Other,
            };
            route.live.record(kind, ctx.header_us);
        }
        outcome
    }

    /// [`Proxy::account`]'s metrics and breaker part; `cache` is the request's cache
    /// result when its route has a cache.
    fn record(
        &self,
        session: &Session,
        e: Option<&Error>,
        ctx: &mut RequestCtx,
        cache: Option<caching::CacheResult>,
    ) -> &'static str {
        let failure = e.map(|e| ctx.classify(e));
        let unsettled = match failure {
            _ if ctx.answered.is_some() => ctx.answered.unwrap_or(CLIENT_ERROR),
            Some(ProxyFailure::Downstream(_)) => CLIENT_ERROR,
            Some(ProxyFailure::Internal) => "error",
            Some(ProxyFailure::Upstream(kind)) => kind.as_str(),
            None => "success",
        };
        let Some(route) = ctx.route.clone() else {
            return unsettled;
        };
        let elapsed = ctx.started.elapsed();
        if let Some(resp) = final_response(session) {
            let proto = if ctx.grpc {
                Proto::Grpc
            } else if session.req_header().version == http::Version::HTTP_2 {
                Proto::H2
            } else {
                Proto::Http1
            };
            route
                .metrics
                .request(resp.status.as_u16(), proto, elapsed.as_secs_f64());
        }
        if let Some(result) = cache {
            route.metrics.cache(result.as_metric());
        }
        if ctx.permit.is_none() {
            return unsettled;
        }
        let upstream_error = match failure {
            Some(ProxyFailure::Upstream(kind)) => Some(kind),
            _ => None,
        };
        // The upstream failed (before its header, or cutting its body short), or a stale
        // entry stood in for its failure; else its status decides, if it answered.
        match (
            upstream_error.or(ctx.cache.stale_error),
            ctx.upstream_status,
        ) {
            (Some(kind), _) => {
                self.settle(&route, ctx, Some(kind));
                kind.as_str()
            }
            (None, Some(status)) => {
                let failure = self.response_failure(&route, ctx, status);
                self.settle(&route, ctx, failure);
                failure.map_or("success", FailureKind::as_str)
            }
            // Nothing the upstream did decided this request: the permit goes back.
            (None, None) => {
                if let Some(permit) = ctx.permit.take() {
                    route.breaker.release(permit);
                }
                unsettled
            }
        }
    }

    /// What an upstream's answer with `status` means for the breaker. A gRPC answer
    /// (HTTP 200) is judged by its `grpc-status`: one of `failure_grpc_codes` is a
    /// failure, and none at all once the body has ended is a `reset`.
    fn response_failure(
        &self,
        route: &Route,
        ctx: &RequestCtx,
        status: u16,
    ) -> Option<FailureKind> {
        if ctx.grpc && status == 200 {
            return match ctx.grpc_status {
                Some(code) => route
                    .settings
                    .failure_grpc_codes
                    .contains(code)
                    .then_some(FailureKind::Status),
                None => Some(FailureKind::Reset),
            };
        }
        status_failure(route, status)
    }

    /// Records the request's outcome on its route's breaker, once: the permit is spent.
    fn settle(&self, route: &Route, ctx: &mut RequestCtx, failure: Option<FailureKind>) {
        let Some(permit) = ctx.permit.take() else {
            return;
        };
        if let Some(kind) = failure {
            route.metrics.upstream_failure(kind);
        }
        let outcome = Outcome {
            failure,
            duration_ms: ctx.header_ms().unwrap_or_else(|| ctx.upstream_ms()),
        };
        let now = self.gateway.clock.now_ms();
        if let Some(t) = route.breaker.record(permit, outcome, &route.settings, now) {
            self.gateway.on_transition(route, t);
        }
    }
}

impl RequestCtx {
    /// Which upstream the request went to, if any.
    fn upstream_used(&self) -> Option<UpstreamUsed> {
        if self.fallback.is_some() {
            Some(UpstreamUsed::Fallback)
        } else {
            self.upstream.map(UpstreamUsed::Route)
        }
    }

    /// The upstream's time to its response header in ms, once it has arrived.
    fn header_ms(&self) -> Option<u64> {
        self.header_us.map(|us| us / 1000)
    }

    /// The upstream's time so far: from the request fully sent (or, before that, from
    /// the connection attempt) until now.
    fn upstream_ms(&self) -> u64 {
        self.upstream_us() / 1000
    }

    fn upstream_us(&self) -> u64 {
        let from = self
            .sent_at
            .or(self.upstream_started)
            .unwrap_or(self.started);
        u64::try_from(from.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// What a pingora error means for this request. An upstream read timeout while the
    /// client is still streaming its body is the client's stall, not the upstream's.
    fn classify(&self, e: &Error) -> ProxyFailure {
        let failure = classify(e.etype(), e.esource(), self.connect_failed);
        if failure == ProxyFailure::Upstream(FailureKind::Timeout)
            && self.streamed_body
            && !self.body_done
            && matches!(e.etype(), ErrorType::ReadTimedout)
        {
            return ProxyFailure::Downstream(failure::ClientFault::Stalled);
        }
        failure
    }
}

/// Reads a request body whole (into pingora's retry buffer, from which it is sent
/// upstream), each read bounded by `server.body_timeout` (the session's read timeout on
/// HTTP/1; a timer here on HTTP/2).
///
/// A client waiting for `100 Continue` gets it from the gateway, as from nginx, and the
/// upstream gets the body without `Expect`.
async fn read_whole_body(session: &mut Session, body_timeout: Duration) -> Result<()> {
    let expects_continue = session
        .req_header()
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue {
        let continue_ = ResponseHeader::build(100, Some(0))?;
        session
            .write_response_header(Box::new(continue_), false)
            .await?;
        session
            .req_header_mut()
            .remove_header(&http::header::EXPECT);
    }
    session.downstream_session.enable_retry_buffering();
    if !session.is_http2() {
        while session.read_request_body().await?.is_some() {}
        return Ok(());
    }
    // pingora's HTTP/2 streams have no read timeout of their own.
    loop {
        match tokio::time::timeout(body_timeout, session.read_request_body()).await {
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Error::e_explain(ReadTimedout, "no request body piece within body_timeout")
            }
        }
    }
}

/// The access-log entry for a request: what it holds already, no formatting.
fn access_entry(
    session: &Session,
    ctx: &RequestCtx,
    e: Option<&Error>,
    outcome: &'static str,
) -> crate::access_log::Entry {
    use crate::access_log::Entry;
    let req = session.req_header();
    let status = final_response(session).map_or_else(
        // Nothing was answered: the client went away (nginx's 499), or the gateway failed.
        || {
            if outcome == CLIENT_ERROR || e.is_none() {
                499
            } else {
                500
            }
        },
        |r| r.status.as_u16(),
    );
    let cache = ctx
        .route
        .as_ref()
        .filter(|r| r.cache.is_some())
        .map(|_| caching::result(session, &ctx.cache).header());
    Entry {
        time: std::time::SystemTime::now(),
        request_id: ctx.request_id.clone(),
        client: ctx.client_ip.or_else(|| {
            session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip())
        }),
        method: req.method.clone(),
        uri: req.uri.clone(),
        proto: proto_name(req.version),
        status,
        route: ctx.route.clone(),
        upstream: ctx.upstream_used(),
        upstream_ms: ctx.header_ms(),
        total_us: u64::try_from(ctx.started.elapsed().as_micros()).unwrap_or(u64::MAX),
        bytes_in: session.body_bytes_read() as u64,
        bytes_out: session.body_bytes_sent() as u64,
        breaker: ctx.breaker_met.map(State::as_str),
        cache,
        outcome,
        referer: req.headers.get(http::header::REFERER).cloned(),
        user_agent: req.headers.get(http::header::USER_AGENT).cloned(),
    }
}

/// What the request's span reports at its end.
fn span_facts<'a>(
    session: &'a Session,
    ctx: &'a RequestCtx,
    outcome: &'a str,
) -> crate::otel::SpanFacts<'a> {
    let route = ctx.route.as_deref();
    let upstream = route
        .zip(ctx.upstream_used())
        .and_then(|(r, u)| r.upstream_authority(u));
    crate::otel::SpanFacts {
        method: session.req_header().method.as_str(),
        route: route.map(|r| &*r.name),
        status: final_response(session).map_or(0, |r| r.status.as_u16()),
        upstream,
        breaker: ctx.breaker_met.map(State::as_str),
        cache: route
            .filter(|r| r.cache.is_some())
            .map(|_| caching::result(session, &ctx.cache).header()),
        outcome,
        request_id: ctx.request_id.as_ref().and_then(|v| v.to_str().ok()),
    }
}

fn proto_name(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// The response header sent to the client, unless it was only an informational one
/// (`100 Continue`).
fn final_response(session: &Session) -> Option<&ResponseHeader> {
    session.response_written().filter(|r| {
        !r.status.is_informational() || r.status == http::StatusCode::SWITCHING_PROTOCOLS
    })
}

/// The `Content-Length` a request declares, if any (a malformed one is pingora's to refuse).
fn declared_body_len(req: &RequestHeader) -> Option<u64> {
    req.headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::ip_value;

    #[test]
    fn an_address_becomes_its_text() {
        let v4: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(ip_value(v4), "127.0.0.1");
        let v6: std::net::IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap();
        assert_eq!(ip_value(v6), "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
        let mapped: std::net::IpAddr = "::ffff:255.255.255.255".parse().unwrap();
        assert_eq!(ip_value(mapped), "::ffff:255.255.255.255");
    }
}
