//! The route table: one immutable [`Runtime`] snapshot built from a validated config.
//!
//! A request takes the snapshot once (an `Arc` of its route) and keeps it to the end, so a
//! reload mid-request cannot change what that request sees. What must survive a reload
//! (breaker state, rate-limit buckets, cache storages, upstream health) is not part of
//! the snapshot: it lives in the [`Registries`], keyed by route name, and each route
//! holds its share.

mod fallback;
mod upstreams;

pub use fallback::Fallback;
pub use upstreams::{Upstream, Upstreams, UpstreamsSpec};

use crate::breaker::{self, Breaker, StatusSet, WindowShape};
use crate::by_route::ByRoute;
use crate::cache::{CacheRegistry, RouteCache};
use crate::config::{BreakerConfig, Config, FleetTripConfig, HostHeader, StatusSpec};
use crate::metrics::{Metrics, RouteMetrics};
use crate::ratelimit::RateLimit;
use crate::router::Router;
use std::sync::Arc;
use std::time::Duration;

/// One route, ready for the request path.
#[derive(Debug)]
pub struct Route {
    pub name: Arc<str>,
    pub prefix: String,
    pub strip_prefix: bool,
    pub host_header: HostHeader,
    pub settings: breaker::Settings,
    /// The config this route was built from (shared by every route of its table).
    config: Arc<Config>,
    pub breaker: Arc<Breaker>,
    pub upstreams: Arc<Upstreams>,
    /// Set when the route has active health checks.
    pub health_interval: Option<Duration>,
    pub rate_limit: Option<Arc<RateLimit>>,
    pub cache: Option<RouteCache>,
    /// What answers instead of the breaker's 503, if anything.
    pub fallback: Option<Fallback>,
    /// Kept across reloads, so the series handles it has resolved stay resolved.
    pub metrics: Arc<RouteMetrics>,
    /// What the dashboard shows of the last second; kept across reloads.
    pub live: Arc<crate::live::LiveStats>,
}

/// Which upstream a request went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamUsed {
    /// An index into the route's upstreams.
    Route(usize),
    /// The route's fallback upstream.
    Fallback,
}

impl Route {
    /// The breaker keys in force, every one filled in, as the admin port reports them.
    pub fn breaker_config(&self) -> BreakerConfig {
        let merged = self
            .own_breaker()
            .merged_over(&self.config.defaults.breaker);
        effective_breaker_config(&merged, &self.settings)
    }

    /// `breaker.fleet` in force (the route's, else the defaults').
    pub fn fleet(&self) -> Option<&FleetTripConfig> {
        self.own_breaker()
            .fleet
            .as_ref()
            .or(self.config.defaults.breaker.fleet.as_ref())
    }

    /// The route's own `breaker` section (empty for a route the config does not have,
    /// which a built table never holds).
    fn own_breaker(&self) -> &BreakerConfig {
        static EMPTY: std::sync::OnceLock<BreakerConfig> = std::sync::OnceLock::new();
        match self.config.routes.get(self.name.as_ref()) {
            Some(rc) => &rc.breaker,
            None => EMPTY.get_or_init(BreakerConfig::default),
        }
    }

    /// The `host:port` of the upstream a request went to, for logs and spans.
    pub fn upstream_authority(&self, used: UpstreamUsed) -> Option<&str> {
        match used {
            UpstreamUsed::Route(i) => self.upstreams.list().get(i).map(|u| u.authority.as_str()),
            UpstreamUsed::Fallback => match self.fallback.as_ref() {
                Some(Fallback::Upstream(u)) => Some(u.authority.as_str()),
                _ => None,
            },
        }
    }

    /// The path to send upstream: `strip_prefix` removes the route prefix, keeping a
    /// leading `/`.
    pub fn upstream_path<'a>(&self, path: &'a str) -> &'a str {
        if !self.strip_prefix || self.prefix == "/" {
            return path;
        }
        match path.get(self.prefix.len()..) {
            Some("") | None => "/",
            Some(rest) => rest,
        }
    }
}

/// What outlives route tables, keyed by route name: breakers, rate limiters, cache
/// storages, upstream sets; and the metric families.
#[derive(Debug, Default)]
pub struct Registries {
    pub breakers: ByRoute<Arc<Breaker>>,
    pub rate_limits: ByRoute<Arc<RateLimit>>,
    pub caches: CacheRegistry,
    pub upstreams: ByRoute<Arc<Upstreams>>,
    pub live: ByRoute<Arc<crate::live::LiveStats>>,
    pub route_metrics: ByRoute<Arc<RouteMetrics>>,
    pub metrics: Arc<Metrics>,
}

impl Registries {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Registries {
            metrics,
            ..Default::default()
        }
    }

    /// The one retain rule, applied once `next` is built: whatever no route of `next`
    /// uses any more is dropped (a cache storage is emptied for reuse).
    pub fn retain_for(&self, next: &Runtime) {
        let route = |name: &str| next.route(name);
        self.breakers.retain(|n| route(n).is_some());
        self.upstreams.retain(|n| route(n).is_some());
        self.live.retain(|n| route(n).is_some());
        self.route_metrics.retain(|n| route(n).is_some());
        self.rate_limits
            .retain(|n| route(n).is_some_and(|r| r.rate_limit.is_some()));
        self.caches
            .retain(|n| route(n).is_some_and(|r| r.cache.is_some()));
    }

    /// The route's breaker: the one kept, or a closed one for a new route. When the
    /// window's shape changed, a breaker with the new window that shares the old one's
    /// state (so a probe in flight settles the same slot).
    fn breaker(&self, route: &str, shape: WindowShape, now_ms: u64) -> Arc<Breaker> {
        self.breakers.update(route, |kept| match kept {
            Some(b) if b.window_shape() == shape => b.clone(),
            Some(b) => Arc::new(b.reshaped(shape)),
            None => Arc::new(Breaker::new(shape, now_ms)),
        })
    }

    /// The route's upstream set: the one kept while it is built from the same spec (so
    /// the health its checks found survives the reload), else a new one.
    fn upstreams(&self, route: &str, spec: UpstreamsSpec) -> Result<Arc<Upstreams>, String> {
        if let Some(kept) = self.upstreams.get(route).filter(|u| u.built_from(&spec)) {
            return Ok(kept);
        }
        let built = Arc::new(Upstreams::build(&spec)?);
        Ok(self.upstreams.update(route, |_| built))
    }

    /// The route's rate limiter: the one kept while its settings stay.
    fn rate_limit(&self, route: &str, cfg: &crate::config::RateLimitConfig) -> Arc<RateLimit> {
        self.rate_limits.update(route, |kept| match kept {
            Some(l) if l.config() == cfg => l.clone(),
            _ => Arc::new(RateLimit::new(cfg)),
        })
    }
}

/// The immutable route table of one config generation.
#[derive(Debug)]
pub struct Runtime {
    pub generation: u64,
    pub config: Arc<Config>,
    /// Routes in name order.
    pub routes: Vec<Arc<Route>>,
    /// `server.trusted_proxies`, parsed.
    pub trusted_proxies: crate::forwarded::TrustedProxies,
    /// The TLS listeners' certificates, read when this table was built.
    pub tls: Option<Arc<crate::tls::ListenerTls>>,
    router: Router<Arc<Route>>,
}

impl Runtime {
    /// Builds the table for `config`, taking (or making) each route's breaker from
    /// `breakers`. Fails when an upstream cannot be resolved.
    pub fn build(
        config: Arc<Config>,
        registries: &Registries,
        generation: u64,
        now_ms: u64,
    ) -> Result<Runtime, String> {
        let metrics = &registries.metrics;
        let mut routes = Vec::with_capacity(config.routes.len());
        let mut router = Router::new();
        for (name, rc) in &config.routes {
            let merged = rc.breaker.merged_over(&config.defaults.breaker);
            let settings = resolve_settings(&merged);
            let tls = crate::tls::UpstreamTlsFiles::read(&format!("routes.{name}"), rc)
                .map_err(|problems| join_problems(&problems))?;
            let spec = UpstreamsSpec {
                addrs: rc.upstreams.clone(),
                timeout: settings.timeout,
                health: rc.health_check.clone(),
                http2: rc.http2,
                tls,
            };
            let upstreams = registries
                .upstreams(name, spec)
                .map_err(|e| format!("routes.{name}.upstreams: {e}"))?;
            let fallback = rc
                .fallback
                .as_ref()
                .map(|f| Fallback::build(f, settings.timeout))
                .transpose()
                .map_err(|e| format!("routes.{name}.fallback: {e}"))?;
            let breaker = registries.breaker(name, settings.window, now_ms);
            let route_metrics = registries.route_metrics.update(name, |kept| match kept {
                Some(m) => m.clone(),
                None => Arc::new(metrics.route(name)),
            });
            let cache = rc
                .cache
                .as_ref()
                .and_then(|cfg| registries.caches.route_cache(name, cfg));
            if let Some(c) = &cache {
                c.storage.count_evictions_in(metrics.cache_evictions(name));
            }
            route_metrics.set_state(breaker.state());
            let route = Arc::new(Route {
                name: Arc::from(name.as_str()),
                prefix: rc.effective_prefix(name),
                strip_prefix: rc.strip_prefix,
                host_header: rc.host_header,
                config: config.clone(),
                breaker,
                settings,
                upstreams,
                health_interval: rc.health_check.as_ref().map(|h| h.interval.0),
                rate_limit: rc
                    .rate_limit
                    .as_ref()
                    .map(|cfg| registries.rate_limit(name, cfg)),
                cache,
                fallback,
                metrics: route_metrics,
                live: registries
                    .live
                    .update(name, |kept| kept.cloned().unwrap_or_default()),
            });
            router.insert(&route.prefix, route.clone());
            routes.push(route);
        }
        let tls = match &config.server.tls {
            Some(cfg) => Some(Arc::new(
                crate::tls::ListenerTls::build(cfg).map_err(|p| join_problems(&p))?,
            )),
            None => None,
        };
        Ok(Runtime {
            generation,
            tls,
            trusted_proxies: crate::forwarded::TrustedProxies::new(&config.server.trusted_proxies),
            config,
            routes,
            router,
        })
    }

    /// The route whose prefix is the longest match for `path`.
    pub fn route_for(&self, path: &str) -> Option<&Arc<Route>> {
        self.router.lookup(path)
    }

    pub fn route(&self, name: &str) -> Option<&Arc<Route>> {
        self.routes
            .binary_search_by(|r| r.name.as_ref().cmp(name))
            .ok()
            .map(|i| &self.routes[i])
    }
}

/// `key: problem; key: problem`.
fn join_problems(problems: &[crate::tls::Problem]) -> String {
    problems
        .iter()
        .map(|(key, msg)| format!("{key}: {msg}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Every breaker key filled in: what the admin port shows as a route's settings.
fn effective_breaker_config(merged: &BreakerConfig, s: &breaker::Settings) -> BreakerConfig {
    use crate::config::Dur;
    BreakerConfig {
        error_threshold_percentage: Some(s.error_threshold_percentage),
        volume_threshold: Some(s.volume_threshold),
        rolling_window: Some(Dur::from_millis(s.window.window_ms())),
        rolling_buckets: Some(s.window.buckets),
        reset_timeout: Some(Dur::from_millis(s.reset_timeout_ms)),
        reset_timeout_max: Some(Dur::from_millis(s.reset_timeout_max_ms)),
        recovery_duration: Some(Dur::from_millis(s.recovery_ms)),
        half_open_probes: Some(s.half_open_probes),
        timeout: Some(Dur(s.timeout)),
        failure_statuses: Some(
            merged
                .failure_statuses
                .clone()
                .unwrap_or_else(|| vec![StatusSpec::Text("500-599".into())]),
        ),
        slow_call_duration: Some(Dur::from_millis(s.slow_call_ms)),
        slow_call_rate_threshold: Some(s.slow_call_rate_threshold),
        mode: Some(s.mode),
        failure_grpc_codes: Some(s.failure_grpc_codes.codes()),
        fleet: merged.fleet.clone(),
    }
}

/// Breaker settings from a merged (route over defaults) breaker config; anything still
/// unset takes the built-in default. The config is validated before this runs.
pub fn resolve_settings(b: &BreakerConfig) -> breaker::Settings {
    let d = breaker::Settings::default();
    let window_ms = b
        .rolling_window
        .unwrap_or(BreakerConfig::DEFAULT_WINDOW)
        .as_millis_u64()
        .max(1);
    let buckets = b
        .rolling_buckets
        .unwrap_or(BreakerConfig::DEFAULT_BUCKETS)
        .max(1);
    let failure_statuses = match &b.failure_statuses {
        None => d.failure_statuses,
        Some(list) => {
            let mut set = StatusSet::new();
            for (lo, hi) in list.iter().filter_map(|s| s.range().ok()) {
                set.add_range(lo, hi);
            }
            set
        }
    };
    let ms = |v: Option<crate::config::Dur>, default: u64| v.map_or(default, |t| t.as_millis_u64());
    breaker::Settings {
        error_threshold_percentage: b
            .error_threshold_percentage
            .unwrap_or(d.error_threshold_percentage),
        volume_threshold: b.volume_threshold.unwrap_or(d.volume_threshold),
        window: WindowShape {
            bucket_ms: (window_ms / u64::from(buckets)).max(1),
            buckets,
        },
        reset_timeout_ms: ms(b.reset_timeout, d.reset_timeout_ms),
        reset_timeout_max_ms: ms(b.reset_timeout_max, d.reset_timeout_max_ms),
        recovery_ms: ms(b.recovery_duration, d.recovery_ms),
        half_open_probes: b.half_open_probes.unwrap_or(d.half_open_probes),
        timeout: b.timeout.map(|t| t.0).unwrap_or(d.timeout),
        failure_statuses,
        failure_grpc_codes: b
            .failure_grpc_codes
            .as_ref()
            .map_or(d.failure_grpc_codes, |list| {
                breaker::GrpcCodes::of(list.iter().filter_map(|c| u32::try_from(*c).ok()))
            }),
        slow_call_ms: ms(b.slow_call_duration, d.slow_call_ms),
        slow_call_rate_threshold: b
            .slow_call_rate_threshold
            .unwrap_or(d.slow_call_rate_threshold),
        mode: b.mode.unwrap_or(d.mode),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load_from_str, Format};

    fn runtime(toml: &str) -> Runtime {
        let config = load_from_str(toml, Format::Toml, false).unwrap();
        let registries = Registries::new(Arc::new(Metrics::new().unwrap()));
        Runtime::build(Arc::new(config), &registries, 1, 0).unwrap()
    }

    #[test]
    fn route_settings_override_the_defaults() {
        let rt = runtime(
            r#"
            [defaults.breaker]
            volume_threshold = 5
            rolling_window = "2s"
            rolling_buckets = 4
            [routes.a]
            upstreams = ["127.0.0.1:7001"]
            breaker = { volume_threshold = 7, failure_statuses = ["502-504", 429] }
            [routes.b]
            upstreams = ["127.0.0.1:7002"]
            "#,
        );
        let a = rt.route("a").unwrap();
        assert_eq!(a.settings.volume_threshold, 7);
        assert_eq!(
            a.settings.window,
            WindowShape {
                bucket_ms: 500,
                buckets: 4
            }
        );
        assert!(a.settings.failure_statuses.contains(503));
        assert!(a.settings.failure_statuses.contains(429));
        assert!(!a.settings.failure_statuses.contains(500));
        let b = rt.route("b").unwrap();
        assert_eq!(b.settings.volume_threshold, 5);
        assert!(b.settings.failure_statuses.contains(500));
        assert_eq!(b.prefix, "/api/b");
    }

    #[test]
    fn the_breaker_settings_reported_are_the_route_over_the_defaults() {
        let rt = runtime(
            r#"
            [defaults.breaker]
            volume_threshold = 5
            fleet = { quorum = 3, scope = ["dc"] }
            [routes.a]
            upstreams = ["127.0.0.1:7001"]
            breaker = { error_threshold_percentage = 20, fleet = { quorum = 2 } }
            [routes.b]
            upstreams = ["127.0.0.1:7002"]
            "#,
        );
        let a = rt.route("a").unwrap().breaker_config();
        assert_eq!(a.error_threshold_percentage, Some(20));
        assert_eq!(a.volume_threshold, Some(5));
        assert_eq!(a.rolling_buckets, Some(BreakerConfig::DEFAULT_BUCKETS));
        let fleet_a = rt.route("a").unwrap().fleet().unwrap();
        assert_eq!((fleet_a.quorum, fleet_a.scope.is_empty()), (2, true));
        let b = rt.route("b").unwrap();
        assert_eq!(b.breaker_config().error_threshold_percentage, Some(50));
        assert_eq!(b.fleet().unwrap().quorum, 3);
        assert_eq!(b.breaker_config().fleet.as_ref(), b.fleet());
    }

    #[test]
    fn strip_prefix_keeps_a_leading_slash() {
        let rt = runtime(
            r#"
            [routes.a]
            upstreams = ["127.0.0.1:7001"]
            strip_prefix = true
            "#,
        );
        let a = rt.route("a").unwrap();
        assert_eq!(a.upstream_path("/api/a/x/y"), "/x/y");
        assert_eq!(a.upstream_path("/api/a"), "/");
        assert_eq!(a.upstream_path("/api/a/"), "/");
    }

    #[test]
    fn breakers_survive_a_rebuild() {
        let registries = Registries::new(Arc::new(Metrics::new().unwrap()));
        let config = Arc::new(
            load_from_str(
                "[routes.a]\nupstreams=[\"127.0.0.1:7001\"]\n",
                Format::Toml,
                false,
            )
            .unwrap(),
        );
        let first = Runtime::build(config.clone(), &registries, 1, 0).unwrap();
        first.route("a").unwrap().breaker.pause(1);
        let second = Runtime::build(config, &registries, 2, 2).unwrap();
        assert_eq!(
            second.route("a").unwrap().breaker.state(),
            crate::breaker::State::ForcedOpen
        );
        // So do its metric handles and its upstream set.
        let (a1, a2) = (first.route("a").unwrap(), second.route("a").unwrap());
        assert!(Arc::ptr_eq(&a1.metrics, &a2.metrics));
        assert!(Arc::ptr_eq(&a1.upstreams, &a2.upstreams));
    }
}
