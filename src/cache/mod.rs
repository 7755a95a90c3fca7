//! Per-route HTTP cache (SPEC §5), on pingora-cache.
//!
//! pingora-cache does the HTTP mechanics: lookups, cache lock (concurrent misses on one key
//! make one upstream request), conditional requests (304 from cache), `Age`, revalidation
//! and stale-if-error when the upstream fails. This module adds what is fusegate's:
//! - which responses are stored and for how long ([`cacheability`]): RFC 9111 shared-cache
//!   rules (with the heuristic lifetime from `Last-Modified`), plus the route's
//!   `default_ttl` and `stale_if_error`;
//! - the client's `Cache-Control` with Patron's bounds ([`ClientDirectives`],
//!   [`client_decision`]): `max-age` raised to `min_age`, `min-fresh` capped at
//!   `max_fresh`, `no-cache`, `only-if-cached`;
//! - a storage with a hard memory bound ([`storage::BoundedStorage`]), one per route,
//!   kept by route name across reloads.
//!
//! The proxy hooks call in here; the breaker never sees a cache hit.

pub mod rfc;
pub mod storage;

use crate::by_route::ByRoute;
use crate::config::CacheConfig;
use pingora::cache::cache_control::{CacheControl, Cacheable, DirectiveKey, InterpretCacheControl};
use pingora::cache::key::{CacheKey, HashBinary};
use pingora::cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora::cache::{CacheMeta, VarianceBuilder};
use pingora::http::{RequestHeader, ResponseHeader};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};
use storage::BoundedStorage;

/// Statuses whose responses may be stored.
pub const CACHEABLE_STATUSES: [u16; 7] = [200, 203, 204, 300, 301, 404, 410];

/// How long a cache-lock writer may hold a key before readers stop waiting for it.
const LOCK_AGE_TIMEOUT: Duration = Duration::from_secs(10);

/// The cache lock shared by every route: request coalescing per cache key.
pub fn lock() -> &'static CacheKeyLockImpl {
    static LOCK: OnceLock<CacheLock> = OnceLock::new();
    LOCK.get_or_init(|| CacheLock::new(LOCK_AGE_TIMEOUT))
}

/// A route's cache settings, ready for the request path.
#[derive(Debug, Clone)]
pub struct RouteCache {
    pub storage: &'static BoundedStorage,
    pub max_object_bytes: usize,
    pub default_ttl: Duration,
    pub min_age: Duration,
    /// Zero: no ceiling.
    pub max_fresh: Duration,
    pub stale_if_error: Duration,
}

impl std::fmt::Debug for BoundedStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BoundedStorage({} bytes)", self.used_bytes())
    }
}

/// Storages by route name. pingora needs `'static` storage, so a storage is never
/// freed; instead a route removed by a reload (or whose cache is removed) has its storage
/// emptied at once and put aside, and the next route that needs a cache takes it before
/// a new one is made. What is held beyond the entries is a few hundred bytes per cache
/// route ever configured at once, not per route name ever seen. Cache keys include the
/// route name, so a storage taken over by another route never answers for the old one.
#[derive(Debug, Default)]
pub struct CacheRegistry {
    by_route: ByRoute<&'static BoundedStorage>,
    free: Mutex<Vec<&'static BoundedStorage>>,
}

impl CacheRegistry {
    /// The route's cache, or `None` when it has none (or `enabled = false`).
    pub fn route_cache(&self, route: &str, cfg: &CacheConfig) -> Option<RouteCache> {
        if !cfg.enabled {
            return None;
        }
        let max_bytes = usize::try_from(cfg.max_bytes.0).unwrap_or(usize::MAX);
        let max_object = usize::try_from(cfg.max_object_bytes.0).unwrap_or(usize::MAX);
        let storage = self.by_route.update(route, |kept| match kept {
            Some(s) => *s,
            None => match self.free_list().pop() {
                Some(s) => s,
                None => Box::leak(Box::new(BoundedStorage::new(max_bytes, max_object))),
            },
        });
        storage.set_limits(max_bytes, max_object);
        Some(RouteCache {
            storage,
            max_object_bytes: max_object,
            default_ttl: cfg.default_ttl.0,
            min_age: cfg.min_age.0,
            max_fresh: cfg.max_fresh.0,
            stale_if_error: cfg.stale_if_error.0,
        })
    }

    /// The storage of `route`'s cache, if it has one.
    pub fn storage(&self, route: &str) -> Option<&'static BoundedStorage> {
        self.by_route.get(route)
    }

    /// Empties and puts aside the storage of every route for which `keep` is false.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let released = self.by_route.retain(keep);
        for s in &released {
            s.release();
        }
        self.free_list().extend(released);
    }

    /// Storages put aside for reuse.
    pub fn spare(&self) -> usize {
        self.free_list().len()
    }

    fn free_list(&self) -> std::sync::MutexGuard<'_, Vec<&'static BoundedStorage>> {
        self.free.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What the client's `Cache-Control` asks of the cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientDirectives {
    pub max_age: Option<u32>,
    pub min_fresh: Option<u32>,
    pub no_cache: bool,
    pub no_store: bool,
    pub only_if_cached: bool,
}

impl ClientDirectives {
    pub fn from_request(req: &RequestHeader) -> Self {
        let Some(cc) = CacheControl::from_req_headers(req) else {
            let pragma_no_cache = req
                .headers
                .get("pragma")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"no-cache"));
            return ClientDirectives {
                no_cache: pragma_no_cache,
                ..Default::default()
            };
        };
        let seconds = |name: &str| {
            cc.directives
                .get(&DirectiveKey::from_lowercase(name))
                .and_then(|v| v.as_ref())
                .and_then(|v| v.parse_as_delta_seconds().ok())
        };
        ClientDirectives {
            max_age: seconds("max-age"),
            min_fresh: seconds("min-fresh"),
            no_cache: cc.no_cache(),
            no_store: cc.no_store(),
            only_if_cached: cc.only_if_cached(),
        }
    }
}

/// What to do with a cached entry for this client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientDecision {
    /// The entry does not satisfy the client: go upstream (revalidate).
    pub revalidate: bool,
    /// A client bound was changed by `min_age` or `max_fresh`.
    pub adjusted: bool,
}

/// Applies the client's directives, bounded by the route's `min_age` and `max_fresh`,
/// to an entry of `age` with `fresh_for` left (zero when stale).
pub fn client_decision(
    d: &ClientDirectives,
    rc: &RouteCache,
    age: Duration,
    fresh_for: Duration,
) -> ClientDecision {
    let mut adjusted = false;
    let mut revalidate = false;
    if d.no_cache {
        if !rc.min_age.is_zero() && age < rc.min_age {
            adjusted = true;
        } else {
            revalidate = true;
        }
    }
    if let Some(n) = d.max_age {
        let asked = Duration::from_secs(u64::from(n));
        let allowed = asked.max(rc.min_age);
        adjusted |= allowed != asked;
        revalidate |= age > allowed;
    }
    if let Some(n) = d.min_fresh {
        let asked = Duration::from_secs(u64::from(n));
        let wanted = if rc.max_fresh.is_zero() {
            asked
        } else {
            asked.min(rc.max_fresh)
        };
        adjusted |= wanted != asked;
        revalidate |= fresh_for < wanted;
    }
    ClientDecision {
        revalidate,
        adjusted,
    }
}

/// Why a response is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    Status,
    NoStore,
    Private,
    SetCookie,
    Authorization,
    /// A response without explicit freshness to a request with `Cookie`: it may well be
    /// personal, and nothing says it may be shared.
    Cookie,
    VaryStar,
}

impl NotStored {
    pub fn as_str(self) -> &'static str {
        match self {
            NotStored::Status => "status",
            NotStored::NoStore => "no-store",
            NotStored::Private => "private",
            NotStored::SetCookie => "set-cookie",
            NotStored::Authorization => "authorization",
            NotStored::Cookie => "cookie",
            NotStored::VaryStar => "vary-star",
        }
    }
}

/// What about the request decides whether its response may be shared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The request carried `Authorization`.
    pub authorization: bool,
    /// The request carried `Cookie`.
    pub cookie: bool,
}

/// The longest freshness lifetime: 2^31 seconds, RFC 9111's "infinity" for delta-seconds.
const MAX_LIFETIME: Duration = Duration::from_secs(1 << 31);

/// The metadata to store a response under, or why it is not stored.
pub fn cacheability(
    rc: &RouteCache,
    client: &ClientDirectives,
    credentials: Credentials,
    resp: &ResponseHeader,
    now: SystemTime,
) -> Result<CacheMeta, NotStored> {
    let authorization = credentials.authorization;
    if !CACHEABLE_STATUSES.contains(&resp.status.as_u16()) {
        return Err(NotStored::Status);
    }
    if client.no_store {
        return Err(NotStored::NoStore);
    }
    if resp.headers.contains_key(http::header::SET_COOKIE) {
        return Err(NotStored::SetCookie);
    }
    if vary_names(resp).iter().any(|n| n == "*") {
        return Err(NotStored::VaryStar);
    }
    let cc = CacheControl::from_resp_headers(resp);
    // `Surrogate-Control`, when it speaks to this cache, takes precedence over
    // `Cache-Control` (which is then for the caches downstream).
    let sc = rfc::surrogate(resp);
    if sc.no_store {
        return Err(NotStored::NoStore);
    }
    let cc_applies = sc.max_age.is_none();
    if let Some(c) = cc.as_ref().filter(|_| cc_applies) {
        if c.no_store() {
            return Err(NotStored::NoStore);
        }
        if c.private() || c.is_cacheable() == Cacheable::No {
            return Err(NotStored::Private);
        }
    }
    if authorization
        && !cc
            .as_ref()
            .is_some_and(|c| c.allow_caching_authorized_req())
    {
        return Err(NotStored::Authorization);
    }
    if credentials.cookie && sc.max_age.is_none() && !explicit_freshness(cc.as_ref(), resp) {
        return Err(NotStored::Cookie);
    }
    // The lifetime (RFC 9111 §4.2.1) less the age the response arrived with (§4.2.3).
    let lifetime = match sc
        .max_age
        .or_else(|| cc.as_ref().and_then(|c| c.fresh_duration()))
    {
        Some(ttl) => ttl,
        // Without one: the route's `default_ttl` when set, else the RFC heuristic from
        // `Last-Modified`, else nothing (stored only to be revalidated).
        None => rfc::expires_lifetime(resp, now)
            .or_else(|| Some(rc.default_ttl).filter(|d| !d.is_zero()))
            .or_else(|| rfc::heuristic_lifetime(resp, now))
            .unwrap_or_default(),
    };
    let age = rfc::initial_age(resp, now);
    let fresh_until = match lifetime.checked_sub(age) {
        Some(left) if !left.is_zero() => now.checked_add(left.min(MAX_LIFETIME)).unwrap_or(now),
        _ => now.checked_sub(Duration::from_secs(1)).unwrap_or(now),
    };
    let epoch = now.checked_sub(age).unwrap_or(now);
    let stale_if_error = cc
        .as_ref()
        .and_then(|c| c.serve_stale_if_error_duration())
        .unwrap_or(rc.stale_if_error);
    // stale-while-revalidate (RFC 5861): served stale at once while one request
    // revalidates in the background; `must-revalidate`, `proxy-revalidate` and
    // `s-maxage` forbid it.
    let stale_while_revalidate = cc
        .as_ref()
        .filter(|_| cc_applies)
        .and_then(|c| c.serve_stale_while_revalidate_duration())
        .unwrap_or_default();
    let secs = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
    let mut meta = CacheMeta::new(
        fresh_until,
        now,
        secs(stale_while_revalidate),
        secs(stale_if_error),
        resp.clone(),
    );
    // The served `Age` counts from the age the response arrived with.
    if !age.is_zero() {
        meta.set_epoch_override(epoch);
    }
    Ok(meta)
}

/// Whether the response states its freshness: `max-age`, `s-maxage` or `Expires`.
fn explicit_freshness(cc: Option<&CacheControl>, resp: &ResponseHeader) -> bool {
    let lifetime = |v: pingora::Result<Option<u32>>| v.ok().flatten().is_some();
    cc.is_some_and(|c| lifetime(c.max_age()) || lifetime(c.s_maxage()))
        || resp.headers.contains_key(http::header::EXPIRES)
}

/// The header names a response's `Vary` lists, lower-cased.
pub fn vary_names(resp: &ResponseHeader) -> Vec<String> {
    resp.headers
        .get_all(http::header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect()
}

/// The variance of a request for an entry whose response varies: the values of the
/// request headers its `Vary` names, normalised as RFC 9110 lets a list be read (field
/// lines combined, whitespace around members dropped; language, encoding and charset
/// tokens lower-cased), so equivalent requests share an entry. `None` when it does not
/// vary.
pub fn variance(meta: &CacheMeta, req: &RequestHeader) -> Option<HashBinary> {
    let names = vary_names(meta.response_header());
    if names.is_empty() {
        return None;
    }
    let mut vb = VarianceBuilder::new();
    for name in names {
        let lines = req.headers.get_all(name.as_str());
        let value = rfc::normalised_list(&name, lines.iter().map(|v| v.as_bytes()));
        vb.add_owned_name_value(name, value);
    }
    vb.finalize()
}

/// The cache key's primary part: method, host, path and query, each length-prefixed.
pub fn primary_key(route: &str, req: &RequestHeader) -> Vec<u8> {
    let path_and_query = req.uri.path_and_query().map_or("/", |p| p.as_str());
    key_parts(
        route,
        req.method.as_str(),
        request_host(req),
        path_and_query,
    )
}

/// The `Host` a request names (its header, else the URI's).
pub fn request_host(req: &RequestHeader) -> &[u8] {
    req.headers
        .get(http::header::HOST)
        .map(|h| h.as_bytes())
        .or_else(|| req.uri.host().map(str::as_bytes))
        .unwrap_or(b"")
}

fn key_parts(route: &str, method: &str, host: &[u8], path_and_query: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(route.len() + host.len() + path_and_query.len() + 40);
    for part in [
        route.as_bytes(),
        method.as_bytes(),
        host,
        path_and_query.as_bytes(),
    ] {
        key.extend_from_slice(&(part.len() as u64).to_be_bytes());
        key.extend_from_slice(part);
    }
    key
}

/// A request's cache key on a route (the route name is its user tag).
pub fn cache_key(route: &str, req: &RequestHeader) -> CacheKey {
    CacheKey::new(primary_key(route, req), route.to_string())
}

/// Makes stale what an unsafe request that succeeded invalidates (RFC 9111 §4.4): the
/// stored `GET` and `HEAD` responses of its target and of the response's same-host
/// `Location` / `Content-Location`, every `Vary` variant of each (a variant is reached
/// only through its URI's primary entry, which is removed), on this route's storage only.
/// Returns how many entries were removed.
pub fn invalidate(
    route: &str,
    rc: &RouteCache,
    req: &RequestHeader,
    resp: &ResponseHeader,
) -> usize {
    let host = request_host(req);
    let host_str = std::str::from_utf8(host).unwrap_or("");
    let mut removed = 0;
    for path in rfc::invalidated_paths(req, host_str, resp) {
        for method in ["GET", "HEAD"] {
            let key = CacheKey::new(key_parts(route, method, host, &path), route.to_string());
            removed += usize::from(rc.storage.invalidate(&key));
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rc(min_age: u64, max_fresh: u64) -> RouteCache {
        RouteCache {
            storage: Box::leak(Box::new(BoundedStorage::new(1 << 20, 1 << 16))),
            max_object_bytes: 1 << 16,
            default_ttl: Duration::ZERO,
            min_age: Duration::from_secs(min_age),
            max_fresh: Duration::from_secs(max_fresh),
            stale_if_error: Duration::from_secs(300),
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn client(header: &str) -> ClientDirectives {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("cache-control", header).unwrap();
        ClientDirectives::from_request(&req)
    }

    #[test]
    fn client_max_age_is_raised_to_min_age() {
        let d = client("max-age=5");
        let plain = client_decision(&d, &rc(0, 0), secs(10), secs(50));
        assert_eq!((plain.revalidate, plain.adjusted), (true, false));
        let floored = client_decision(&d, &rc(30, 0), secs(10), secs(50));
        assert_eq!((floored.revalidate, floored.adjusted), (false, true));
    }

    #[test]
    fn client_min_fresh_is_capped_at_max_fresh() {
        let d = client("min-fresh=100");
        let plain = client_decision(&d, &rc(0, 0), secs(1), secs(50));
        assert_eq!((plain.revalidate, plain.adjusted), (true, false));
        let capped = client_decision(&d, &rc(0, 20), secs(1), secs(50));
        assert_eq!((capped.revalidate, capped.adjusted), (false, true));
    }

    #[test]
    fn no_cache_revalidates_unless_the_entry_is_younger_than_min_age() {
        let d = client("no-cache");
        assert!(client_decision(&d, &rc(0, 0), secs(1), secs(50)).revalidate);
        let young = client_decision(&d, &rc(10, 0), secs(1), secs(50));
        assert_eq!((young.revalidate, young.adjusted), (false, true));
        assert!(client_decision(&d, &rc(10, 0), secs(11), secs(50)).revalidate);
    }

    #[test]
    fn only_if_cached_and_no_store_are_read() {
        let d = client("only-if-cached, no-store");
        assert!(d.only_if_cached && d.no_store);
    }

    fn resp(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn storage_rules_follow_rfc_9111_for_shared_caches() {
        let rc = rc(0, 0);
        let d = ClientDirectives::default();
        let now = SystemTime::now();
        let ok = |r: &ResponseHeader, authorization: bool| {
            let credentials = Credentials {
                authorization,
                cookie: false,
            };
            cacheability(&rc, &d, credentials, r, now)
        };
        let fresh = ok(&resp(200, &[("cache-control", "max-age=60")]), false).unwrap();
        assert!(fresh.is_fresh(now + secs(59)) && !fresh.is_fresh(now + secs(61)));
        let shared = ok(
            &resp(200, &[("cache-control", "max-age=5, s-maxage=60")]),
            false,
        )
        .unwrap();
        assert!(shared.is_fresh(now + secs(59)));
        for (r, why) in [
            (
                resp(200, &[("cache-control", "no-store")]),
                NotStored::NoStore,
            ),
            (
                resp(200, &[("cache-control", "private")]),
                NotStored::Private,
            ),
            (resp(200, &[("set-cookie", "a=b")]), NotStored::SetCookie),
            (resp(200, &[("vary", "*")]), NotStored::VaryStar),
            (resp(500, &[]), NotStored::Status),
            (resp(302, &[]), NotStored::Status),
        ] {
            assert_eq!(ok(&r, false).err(), Some(why));
        }
        assert_eq!(
            ok(&resp(200, &[("cache-control", "max-age=60")]), true).err(),
            Some(NotStored::Authorization)
        );
        assert!(ok(&resp(200, &[("cache-control", "public, max-age=60")]), true).is_ok());
        assert!(ok(&resp(404, &[]), false).is_ok(), "404 is storable");
    }

    #[test]
    fn a_response_to_a_cookie_needs_explicit_freshness_to_be_stored() {
        let rc = rc(0, 0);
        let d = ClientDirectives::default();
        let now = SystemTime::now();
        let cookie = Credentials {
            authorization: false,
            cookie: true,
        };
        assert_eq!(
            cacheability(&rc, &d, cookie, &resp(200, &[]), now).err(),
            Some(NotStored::Cookie)
        );
        let no_cache = resp(200, &[("cache-control", "no-cache")]);
        assert_eq!(
            cacheability(&rc, &d, cookie, &no_cache, now).err(),
            Some(NotStored::Cookie)
        );
        for explicit in [
            resp(200, &[("cache-control", "max-age=60")]),
            resp(200, &[("cache-control", "s-maxage=60")]),
            resp(200, &[("expires", "Thu, 01 Jan 2099 00:00:00 GMT")]),
        ] {
            assert!(cacheability(&rc, &d, cookie, &explicit, now).is_ok());
        }
    }

    #[test]
    fn a_removed_routes_storage_is_emptied_and_reused() {
        use pingora::cache::Storage;
        let registry = CacheRegistry::default();
        let cfg = CacheConfig::default();
        let a = registry.route_cache("a", &cfg).expect("a cache");
        let key = pingora::cache::CacheKey::new("k", "a");
        let meta = CacheMeta::new(
            SystemTime::now() + secs(60),
            SystemTime::now(),
            0,
            0,
            resp(200, &[]),
        );
        let span = pingora::cache::trace::Span::inactive().handle();
        futures_executor(async {
            let mut miss = a
                .storage
                .get_miss_handler(&key, &meta, &span)
                .await
                .expect("miss handler");
            miss.write_body(bytes::Bytes::from_static(b"hello"), true)
                .await
                .expect("write");
            miss.finish().await.expect("finish");
        });
        assert_eq!(a.storage.entries(), 1);
        assert!(a.storage.used_bytes() > 0);
        // Route a is gone: its storage is emptied at once and put aside.
        registry.retain(|name| name != "a");
        assert_eq!((a.storage.entries(), a.storage.used_bytes()), (0, 0));
        assert_eq!(registry.spare(), 1);
        // The next route with a cache takes it over instead of a new one.
        let b = registry.route_cache("b", &cfg).expect("b cache");
        assert!(std::ptr::eq(a.storage, b.storage));
        assert_eq!(registry.spare(), 0);
        // A route that keeps its cache keeps its storage.
        let again = registry.route_cache("b", &cfg).expect("b cache");
        assert!(std::ptr::eq(b.storage, again.storage));
    }

    fn futures_executor<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn default_ttl_applies_only_without_freshness_information() {
        let mut rc = rc(0, 0);
        rc.default_ttl = secs(30);
        let now = SystemTime::now();
        let d = ClientDirectives::default();
        let m = cacheability(&rc, &d, Credentials::default(), &resp(200, &[]), now).unwrap();
        assert!(m.is_fresh(now + secs(29)) && !m.is_fresh(now + secs(31)));
        let m = cacheability(
            &rc,
            &d,
            Credentials::default(),
            &resp(200, &[("cache-control", "max-age=2")]),
            now,
        )
        .unwrap();
        assert!(!m.is_fresh(now + secs(3)));
        // default_ttl, when set, is the operator's word and wins over the heuristic.
        let day_old = httpdate::fmt_http_date(now - secs(86_400));
        let lm = resp(200, &[("last-modified", day_old.as_str())]);
        let m = cacheability(&rc, &d, Credentials::default(), &lm, now).unwrap();
        assert!(m.is_fresh(now + secs(29)) && !m.is_fresh(now + secs(31)));
    }

    #[test]
    fn without_freshness_or_default_ttl_last_modified_gives_a_heuristic_lifetime() {
        let rc = rc(0, 0);
        let now = SystemTime::now();
        let d = ClientDirectives::default();
        let day_old = httpdate::fmt_http_date(now - secs(86_400));
        let lm = resp(200, &[("last-modified", day_old.as_str())]);
        let m = cacheability(&rc, &d, Credentials::default(), &lm, now).unwrap();
        assert!(m.is_fresh(now + secs(8_000)) && !m.is_fresh(now + secs(8_700)));
        let m = cacheability(&rc, &d, Credentials::default(), &resp(200, &[]), now).unwrap();
        assert!(!m.is_fresh(now));
    }
}
