//! The cache hooks of the proxy: translate between pingora-cache's session state and
//! [`crate::cache`] (policy) and [`crate::breaker`] (whether the upstream may be asked).

use super::failure::{classify, ProxyFailure};
use crate::breaker::{FailureKind, Rejection};
use crate::cache::{self, ClientDirectives, RouteCache};
use crate::runtime::Route;
use pingora::cache::{
    CacheKey, CacheMeta, CacheOptionOverrides, CachePhase, ForcedFreshness, NoCacheReason,
    RespCacheable,
};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType};
use std::time::{Duration, SystemTime};

/// How long a request waits for another one filling the same cache entry.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// The marker of a breaker rejection turned into an upstream error so that pingora's
/// stale-if-error can answer it.
const CIRCUIT_OPEN: &str = "circuit-open";

/// Per-request cache state.
#[derive(Debug, Default)]
pub struct CacheCtx {
    pub client: ClientDirectives,
    credentials: cache::Credentials,
    /// A client bound was changed by `min_age` / `max_fresh` (`Warning: 199`).
    adjusted: bool,
    /// The client asked for a validated answer (`no-cache`, `max-age` exceeded): never
    /// a stale one while revalidating.
    revalidate: bool,
    /// A stale entry was served because the upstream could not be asked or failed.
    stale_served: bool,
    /// The upstream failure a stale entry stood in for: still a breaker outcome.
    pub stale_error: Option<FailureKind>,
    /// The breaker said no, but a stale entry may answer instead.
    pub deferred_rejection: Option<Rejection>,
    /// The upstream's `304` to a revalidation: its fields update the stored header.
    pub not_modified: Option<Box<ResponseHeader>>,
}

/// Turns the cache on for a GET or HEAD to a route with a cache.
pub fn enable(session: &mut Session, rc: &RouteCache, ctx: &mut CacheCtx) {
    let req = session.req_header();
    if !pingora::cache::filters::request_cacheable(req) {
        return;
    }
    ctx.client = ClientDirectives::from_request(req);
    ctx.credentials = cache::Credentials {
        authorization: req.headers.contains_key(http::header::AUTHORIZATION),
        cookie: req.headers.contains_key(http::header::COOKIE),
    };
    let mut overrides = CacheOptionOverrides::default();
    overrides.wait_timeout = Some(LOCK_WAIT);
    session
        .cache
        .enable(rc.storage, None, None, Some(cache::lock()), Some(overrides));
    session.cache.set_max_file_size_bytes(rc.max_object_bytes);
}

pub fn key(route: &str, req: &RequestHeader) -> CacheKey {
    cache::cache_key(route, req)
}

pub fn cacheable(
    session: &Session,
    rc: &RouteCache,
    ctx: &CacheCtx,
    resp: &ResponseHeader,
) -> RespCacheable {
    // After a 304, pingora hands over the stored header with only its validators and
    // freshness fields replaced; RFC 9111 §3.2 has every field of the 304 replace.
    let merged;
    let resp = match (&ctx.not_modified, session.cache.maybe_cache_meta()) {
        (Some(nm), Some(stored)) => {
            merged = cache::rfc::merge_not_modified(stored.response_header(), nm);
            &merged
        }
        _ => resp,
    };
    match cache::cacheability(rc, &ctx.client, ctx.credentials, resp, SystemTime::now()) {
        Ok(meta) => RespCacheable::Cacheable(meta),
        Err(why) => RespCacheable::Uncacheable(NoCacheReason::Custom(why.as_str())),
    }
}

/// A cached entry was found: does it answer this client, and if it is stale, may it be
/// served because the breaker will not let the request through?
pub fn hit_filter(
    route: &Route,
    meta: &CacheMeta,
    is_fresh: bool,
    now_ms: u64,
    ctx: &mut CacheCtx,
) -> Option<ForcedFreshness> {
    let rc = route.cache.as_ref()?;
    let now = SystemTime::now();
    let age = now.duration_since(meta.epoch()).unwrap_or_default();
    let fresh_for = meta.fresh_until().duration_since(now).unwrap_or_default();
    let decision = cache::client_decision(&ctx.client, rc, age, fresh_for);
    ctx.adjusted = decision.adjusted;
    ctx.revalidate = decision.revalidate;
    if decision.revalidate {
        return Some(ForcedFreshness::ForceExpired);
    }
    if !is_fresh && route.breaker.rejects(&route.settings, now_ms) && meta.serve_stale_if_error(now)
    {
        // The breaker would refuse the revalidation: answer from the stale entry at
        // once, without taking the cache lock.
        ctx.stale_served = true;
        return Some(ForcedFreshness::ForceFresh);
    }
    None
}

/// Whether this request's stale entry may be served after an upstream error.
pub fn can_serve_stale(session: &Session) -> bool {
    matches!(session.cache.phase(), CachePhase::Stale) && session.cache.can_serve_stale_error()
}

pub fn circuit_open_error() -> Box<Error> {
    Error::create(
        ErrorType::Custom(CIRCUIT_OPEN),
        ErrorSource::Upstream,
        Some("breaker open".into()),
        None,
    )
}

/// pingora asks before serving a stale entry: on an upstream failure (recorded as the
/// breaker outcome it is), a breaker rejection, or, without an error, to serve it while
/// one request revalidates it in the background (stale-while-revalidate, within the
/// entry's window, which pingora checks) unless the client asked for a validated answer.
pub fn should_serve_stale(
    route: &Route,
    error: Option<&Error>,
    connect_failed: bool,
    ctx: &mut CacheCtx,
) -> bool {
    let Some(e) = error else {
        return !ctx.revalidate;
    };
    let serve = match e.etype() {
        ErrorType::Custom(CIRCUIT_OPEN) => true,
        ErrorType::HTTPStatus(code) => {
            let failed = route.settings.failure_statuses.contains(*code);
            if failed {
                ctx.stale_error = Some(FailureKind::Status);
            }
            failed
        }
        etype => match classify(etype, e.esource(), connect_failed) {
            ProxyFailure::Upstream(kind) => {
                ctx.stale_error = Some(kind);
                true
            }
            _ => false,
        },
    };
    ctx.stale_served |= serve;
    serve
}

/// How a response relates to the cache, for `X-Cache` and `fusegate_cache_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheResult {
    Hit,
    Miss,
    Stale,
    Bypass,
}

impl CacheResult {
    pub fn header(self) -> &'static str {
        match self {
            CacheResult::Hit => "HIT",
            CacheResult::Miss => "MISS",
            CacheResult::Stale => "STALE",
            CacheResult::Bypass => "BYPASS",
        }
    }

    pub fn as_metric(self) -> &'static str {
        match self {
            CacheResult::Hit => "hit",
            CacheResult::Miss => "miss",
            CacheResult::Stale => "stale",
            CacheResult::Bypass => "bypass",
        }
    }
}

pub fn result(session: &Session, ctx: &CacheCtx) -> CacheResult {
    if ctx.stale_served {
        return CacheResult::Stale;
    }
    match session.cache.phase() {
        CachePhase::Hit | CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => {
            CacheResult::Hit
        }
        CachePhase::Stale | CachePhase::StaleUpdating => CacheResult::Stale,
        CachePhase::Miss | CachePhase::Expired => CacheResult::Miss,
        _ => CacheResult::Bypass,
    }
}

/// `X-Cache`, and the `Warning`s of a stale answer or an adjusted client bound.
pub fn mark_response(
    session: &Session,
    resp: &mut ResponseHeader,
    ctx: &CacheCtx,
) -> pingora::Result<()> {
    let r = result(session, ctx);
    resp.insert_header("x-cache", r.header())?;
    // `Surrogate-Control` was for this cache; it goes no further.
    resp.remove_header("surrogate-control");
    if r == CacheResult::Stale {
        resp.append_header("warning", "110 - \"Response is Stale\"")?;
    }
    if ctx.adjusted {
        resp.append_header("warning", "199 - \"cache-control adjusted\"")?;
    }
    Ok(())
}
