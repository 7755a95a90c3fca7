//! A route's fallback in the proxy hooks (SPEC §16): what answers a request the breaker
//! turned away when no stale entry stands in. A static fallback is answered at once; a
//! fallback upstream gets the request (original path, never cached, no breaker) and,
//! when it fails, the client gets the 503 contract the fallback stood in for.

use super::{failure, final_response, respond, RequestCtx};
use crate::breaker::Rejection;
use crate::metrics::FallbackKind;
use crate::runtime::{Fallback, Route, Upstream};
use pingora::cache::NoCacheReason;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, Session};
use std::time::Instant;

/// Answers a request the breaker turned away (no stale entry stands in): the route's
/// fallback, or the 503 contract. `Ok(true)` sends it on to the fallback upstream.
pub(super) async fn refuse(
    session: &mut Session,
    ctx: &mut RequestCtx,
    route: &Route,
    rejection: Rejection,
) -> Result<bool> {
    let id = ctx.request_id.as_ref();
    let Some(f) = &route.fallback else {
        respond::rejection(session, &route.name, rejection, id).await?;
        return Ok(false);
    };
    route.metrics.fallback(f.kind());
    if let Some(answer) = f.as_static() {
        respond::static_fallback(session, answer, rejection.state, id).await?;
        return Ok(false);
    }
    if session.cache.enabled() {
        // The fallback's answer is not the route's: never cached under it.
        session.cache.disable(NoCacheReason::Custom("fallback"));
    }
    ctx.fallback = Some(rejection);
    Ok(true)
}

/// The fallback upstream this request goes to, if it goes to one.
pub(super) fn upstream<'a>(ctx: &RequestCtx, route: &'a Route) -> Option<&'a Upstream> {
    match (&ctx.fallback, &route.fallback) {
        (Some(_), Some(Fallback::Upstream(u))) => Some(u.as_ref()),
        _ => None,
    }
}

/// The peer of the fallback upstream the request was sent on to.
pub(super) fn peer(ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
    let Some(u) = ctx.route.as_deref().and_then(|r| upstream(ctx, r)) else {
        return Err(Error::explain(InternalError, "no fallback upstream"));
    };
    let peer = u.peer();
    ctx.upstream_started = Some(Instant::now());
    Ok(peer)
}

/// The fallback upstream's answer: marked as a fallback, or, when it is one of the
/// route's failure statuses, an error that `fail_to_proxy` turns into the 503 contract
/// (before anything reaches the client). Never a breaker outcome.
pub(super) fn mark_response(ctx: &RequestCtx, resp: &mut ResponseHeader) -> Result<()> {
    let (Some(rejection), Some(route)) = (ctx.fallback, &ctx.route) else {
        return Ok(());
    };
    let status = resp.status.as_u16();
    if route.settings.failure_statuses.contains(status) {
        return Err(failure::fallback_failed(status));
    }
    resp.insert_header("x-fusegate-fallback", "upstream")?;
    resp.insert_header("x-fusegate-breaker", rejection.state.as_str())?;
    Ok(())
}

/// The answers of `fail_to_proxy` that belong to a rejection: the breaker refused and the
/// stale entry expected to answer could not (the static fallback, or the 503: a fallback
/// upstream cannot be asked at this point), or the fallback upstream failed (the 503 it
/// stood in for). `None` for any other failure.
pub(super) async fn fail_to_proxy(
    session: &mut Session,
    e: &Error,
    ctx: &RequestCtx,
) -> Option<FailToProxy> {
    let route = ctx.route.as_ref()?;
    let (rejection, static_fallback) = match (ctx.cache.deferred_rejection, ctx.fallback) {
        (Some(rejection), _) => (
            rejection,
            route.fallback.as_ref().and_then(|f| f.as_static()),
        ),
        (None, Some(rejection)) => {
            log::debug!("fallback upstream of route {} failed: {e}", route.name);
            (rejection, None)
        }
        (None, None) => return None,
    };
    if final_response(session).is_none() {
        let id = ctx.request_id.as_ref();
        let sent = match static_fallback {
            Some(answer) => {
                route.metrics.fallback(FallbackKind::Static);
                respond::static_fallback(session, answer, rejection.state, id).await
            }
            None => respond::rejection(session, &route.name, rejection, id).await,
        };
        if let Err(err) = sent {
            log::debug!("could not send the rejection: {err}");
        }
    }
    Some(FailToProxy {
        error_code: 503,
        can_reuse_downstream: false,
    })
}
