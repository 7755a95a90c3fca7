//! Prometheus metrics. The names are part of the product contract (SPEC §7).
//!
//! Per-route handles are resolved once, when a route table is built ([`RouteMetrics`]);
//! the request path only increments them, with no label lookup for the common status
//! codes.

use crate::breaker::{FailureKind, State};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::sync::OnceLock;

/// Why the gateway turned a request away (`fusegate_rejections_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    CircuitOpen = 0,
    HalfOpen = 1,
    Paused = 2,
    RateLimited = 3,
    NoHealthyUpstream = 4,
}

impl RejectReason {
    pub const ALL: [RejectReason; 5] = [
        RejectReason::CircuitOpen,
        RejectReason::HalfOpen,
        RejectReason::Paused,
        RejectReason::RateLimited,
        RejectReason::NoHealthyUpstream,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::CircuitOpen => "circuit_open",
            RejectReason::HalfOpen => "half_open",
            RejectReason::Paused => "paused",
            RejectReason::RateLimited => "rate_limited",
            RejectReason::NoHealthyUpstream => "no_healthy_upstream",
        }
    }

    /// The reason for a breaker rejection in `state`.
    pub fn for_breaker(state: State) -> RejectReason {
        match state {
            State::ForcedOpen => RejectReason::Paused,
            State::HalfOpen => RejectReason::HalfOpen,
            _ => RejectReason::CircuitOpen,
        }
    }
}

/// Why a client connection or request was cut short by the client or by a client limit
/// (`fusegate_client_errors_total{reason}`): never an error of the gateway or upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientError {
    /// The client went away (closed or reset its connection) before its answer was sent.
    Aborted = 0,
    HeaderTimeout = 1,
    BodyTimeout = 2,
    HeaderTooLarge = 3,
    BodyTooLarge = 4,
}

impl ClientError {
    pub const ALL: [ClientError; 5] = [
        ClientError::Aborted,
        ClientError::HeaderTimeout,
        ClientError::BodyTimeout,
        ClientError::HeaderTooLarge,
        ClientError::BodyTooLarge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ClientError::Aborted => "aborted",
            ClientError::HeaderTimeout => "header_timeout",
            ClientError::BodyTimeout => "body_timeout",
            ClientError::HeaderTooLarge => "header_too_large",
            ClientError::BodyTooLarge => "body_too_large",
        }
    }
}

const STATES: [State; 5] = State::ALL;

/// How a route's fallback answered (`fusegate_fallbacks_total{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackKind {
    Static = 0,
    Upstream = 1,
}

impl FallbackKind {
    pub const ALL: [FallbackKind; 2] = [FallbackKind::Static, FallbackKind::Upstream];

    pub fn as_str(self) -> &'static str {
        match self {
            FallbackKind::Static => "static",
            FallbackKind::Upstream => "upstream",
        }
    }
}
const FAILURE_KINDS: [FailureKind; 4] = [
    FailureKind::Status,
    FailureKind::Connect,
    FailureKind::Timeout,
    FailureKind::Reset,
];
/// The protocol a request came in: the `proto` label of `fusegate_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Http1,
    H2,
    /// gRPC (`content-type: application/grpc*`), over h2 or h2c.
    Grpc,
}

impl Proto {
    pub const ALL: [Proto; 3] = [Proto::Http1, Proto::H2, Proto::Grpc];

    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Http1 => "http1",
            Proto::H2 => "h2",
            Proto::Grpc => "grpc",
        }
    }
}

/// Status codes whose counters are resolved up front; others are looked up by label.
const COMMON_CODES: [u16; 18] = [
    200, 201, 202, 204, 301, 302, 304, 400, 401, 403, 404, 409, 429, 500, 502, 503, 504, 422,
];

/// The process's metric families.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    breaker_state: IntGaugeVec,
    transitions: IntCounterVec,
    rejections: IntCounterVec,
    upstream_failures: IntCounterVec,
    fallbacks: IntCounterVec,
    pub cache: IntCounterVec,
    pub config_reloads: IntCounterVec,
    pub config_generation: IntGauge,
    pub nats_connected: IntGauge,
    /// `fusegate_client_errors_total`, one handle per [`ClientError`].
    client_errors: [IntCounter; 5],
    /// `fusegate_connections_open`: client connections on the proxy port.
    pub connections_open: IntGauge,
    /// `fusegate_connections_refused_total`: connections closed at once for
    /// `server.max_connections`.
    pub connections_refused: IntCounter,
    /// `fusegate_access_log_dropped_total`: access-log lines dropped because the writer
    /// was behind.
    pub access_log_dropped: IntCounter,
    /// `fusegate_trace_spans_dropped_total`: spans the exporter's queue had no room for,
    /// or that the collector did not take.
    pub trace_spans_dropped: IntCounter,
    /// `fusegate_tls_handshakes_total{result="ok"}` and `{result="error"}`.
    tls_handshakes: [IntCounter; 2],
    /// `fusegate_dashboard_streams`: dashboard event streams open on the admin port.
    pub dashboard_streams: IntGauge,
    cache_evictions: IntCounterVec,
    cache_bytes: IntGaugeVec,
    cache_entries: IntGaugeVec,
}

impl Default for Metrics {
    /// Families in a fresh registry. Registering a fixed set of valid names cannot fail.
    fn default() -> Self {
        #[allow(clippy::expect_used)]
        Metrics::new().expect("the metric families are valid")
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn counter_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let v = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(v.clone()))?;
    Ok(v)
}

impl Metrics {
    pub fn new() -> prometheus::Result<Metrics> {
        let r = Registry::new();
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "fusegate_request_duration_seconds",
                "Time from request to the end of the response, per route.",
            ),
            &["route"],
        )?;
        r.register(Box::new(duration.clone()))?;
        let breaker_state = IntGaugeVec::new(
            Opts::new(
                "fusegate_breaker_state",
                "Breaker state per route: 0 closed, 1 open, 2 half_open, 3 forced_open, 4 recovering.",
            ),
            &["route"],
        )?;
        r.register(Box::new(breaker_state.clone()))?;
        let config_generation = IntGauge::new(
            "fusegate_config_generation",
            "Generation of the config in force; 1 at start, +1 per applied reload.",
        )?;
        r.register(Box::new(config_generation.clone()))?;
        let nats_connected = IntGauge::new(
            "fusegate_nats_connected",
            "1 while connected to the NATS control plane, else 0.",
        )?;
        r.register(Box::new(nats_connected.clone()))?;
        let client_errors = counter_vec(
            &r,
            "fusegate_client_errors_total",
            "Client connections or requests cut short by the client or a client limit, per reason.",
            &["reason"],
        )?;
        let client_errors =
            ClientError::ALL.map(|c| client_errors.with_label_values(&[c.as_str()]));
        let connections_open = IntGauge::new(
            "fusegate_connections_open",
            "Client connections open on the proxy port.",
        )?;
        r.register(Box::new(connections_open.clone()))?;
        let connections_refused = IntCounter::new(
            "fusegate_connections_refused_total",
            "Client connections closed at once because server.max_connections were open.",
        )?;
        r.register(Box::new(connections_refused.clone()))?;
        let access_log_dropped = IntCounter::new(
            "fusegate_access_log_dropped_total",
            "Access-log lines dropped because the log writer was behind.",
        )?;
        r.register(Box::new(access_log_dropped.clone()))?;
        let trace_spans_dropped = IntCounter::new(
            "fusegate_trace_spans_dropped_total",
            "Spans not exported: the export queue was full or the collector did not take them.",
        )?;
        r.register(Box::new(trace_spans_dropped.clone()))?;
        let tls_handshakes = counter_vec(
            &r,
            "fusegate_tls_handshakes_total",
            "TLS handshakes on the TLS listeners, per result (ok, error).",
            &["result"],
        )?;
        let tls_handshakes = ["ok", "error"].map(|l| tls_handshakes.with_label_values(&[l]));
        let dashboard_streams = IntGauge::new(
            "fusegate_dashboard_streams",
            "Dashboard event streams (GET /events) open on the admin port.",
        )?;
        r.register(Box::new(dashboard_streams.clone()))?;
        let cache_gauge = |name: &str, help: &str| -> prometheus::Result<IntGaugeVec> {
            let g = IntGaugeVec::new(Opts::new(name, help), &["route"])?;
            r.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let cache_bytes = cache_gauge(
            "fusegate_cache_bytes",
            "Bytes held by a route's cache (bodies, headers, per-entry overhead).",
        )?;
        let cache_entries = cache_gauge("fusegate_cache_entries", "Entries in a route's cache.")?;
        Ok(Metrics {
            cache_evictions: counter_vec(
                &r,
                "fusegate_cache_evictions_total",
                "Entries a route's cache evicted to stay within max_bytes.",
                &["route"],
            )?,
            cache_bytes,
            cache_entries,
            client_errors,
            connections_open,
            connections_refused,
            access_log_dropped,
            trace_spans_dropped,
            tls_handshakes,
            dashboard_streams,
            requests: counter_vec(
                &r,
                "fusegate_requests_total",
                "Requests answered, per route, status code and protocol (http1, h2, grpc).",
                &["route", "code", "proto"],
            )?,
            duration,
            breaker_state,
            transitions: counter_vec(
                &r,
                "fusegate_breaker_transitions_total",
                "Breaker state changes, per route and new state.",
                &["route", "to"],
            )?,
            rejections: counter_vec(
                &r,
                "fusegate_rejections_total",
                "Requests the gateway turned away without asking the upstream, per reason.",
                &["route", "reason"],
            )?,
            upstream_failures: counter_vec(
                &r,
                "fusegate_upstream_failures_total",
                "Upstream failures counted by the breaker, per kind.",
                &["route", "kind"],
            )?,
            fallbacks: counter_vec(
                &r,
                "fusegate_fallbacks_total",
                "Breaker rejections answered by the route's fallback, per kind (static or upstream).",
                &["route", "kind"],
            )?,
            cache: counter_vec(
                &r,
                "fusegate_cache_total",
                "Cache lookups, per route and result.",
                &["route", "result"],
            )?,
            config_reloads: counter_vec(
                &r,
                "fusegate_config_reloads_total",
                "Config reloads, per result (ok or error).",
                &["result"],
            )?,
            config_generation,
            nats_connected,
            registry: r,
        })
    }

    /// Counts a client cut short by itself or by a client limit, and logs it at `debug`
    /// (one line per event above `debug` would let any client flood the log).
    pub fn client_error(&self, reason: ClientError) {
        self.client_errors[reason as usize].inc();
        log::debug!("client connection cut short: {}", reason.as_str());
    }

    /// Counts one TLS handshake on the TLS listeners.
    pub fn tls_handshake(&self, ok: bool) {
        self.tls_handshakes[usize::from(!ok)].inc();
    }

    /// The eviction counter of a route's cache.
    pub fn cache_evictions(&self, route: &str) -> IntCounter {
        self.cache_evictions.with_label_values(&[route])
    }

    /// Sets the cache gauges to `(route, bytes, entries)` for every route with a cache.
    pub fn set_cache_sizes(&self, sizes: impl IntoIterator<Item = (String, usize, usize)>) {
        self.cache_bytes.reset();
        self.cache_entries.reset();
        for (route, bytes, entries) in sizes {
            let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
            self.cache_bytes.with_label_values(&[&route]).set(n(bytes));
            self.cache_entries
                .with_label_values(&[&route])
                .set(n(entries));
        }
    }

    /// The handles of one route. Series are created on first use, so a route that never
    /// saw a 502 has no `code="502"` series.
    pub fn route(self: &std::sync::Arc<Self>, route: &str) -> RouteMetrics {
        let state = self.breaker_state.with_label_values(&[route]);
        RouteMetrics {
            families: self.clone(),
            route: route.to_string(),
            codes: Default::default(),
            duration: OnceLock::new(),
            state,
            rare: OnceLock::new(),
        }
    }

    /// Drops the series of a route that no longer exists.
    pub fn forget_route(&self, route: &str) {
        let _ = self.duration.remove_label_values(&[route]);
        let _ = self.cache_evictions.remove_label_values(&[route]);
        let _ = self.breaker_state.remove_label_values(&[route]);
        for s in STATES {
            let _ = self.transitions.remove_label_values(&[route, s.as_str()]);
        }
        for r in RejectReason::ALL {
            let _ = self.rejections.remove_label_values(&[route, r.as_str()]);
        }
        for k in FAILURE_KINDS {
            let _ = self
                .upstream_failures
                .remove_label_values(&[route, k.as_str()]);
        }
        for k in FallbackKind::ALL {
            let _ = self.fallbacks.remove_label_values(&[route, k.as_str()]);
        }
        for c in COMMON_CODES {
            for p in Proto::ALL {
                let _ = self
                    .requests
                    .remove_label_values(&[route, &c.to_string(), p.as_str()]);
            }
        }
        for r in CACHE_RESULTS {
            let _ = self.cache.remove_label_values(&[route, r]);
        }
    }

    /// Everything in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            log::error!("encoding metrics failed: {e}");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// One protocol's request counters of a route, one per common status code.
type CodeHandles = [OnceLock<IntCounter>; COMMON_CODES.len()];

/// One route's metric handles, each resolved once and then only incremented.
pub struct RouteMetrics {
    families: std::sync::Arc<Metrics>,
    route: String,
    /// Per protocol, made on its first request (most routes see one protocol: with
    /// 10,000 routes the rows of the others would cost megabytes).
    codes: [OnceLock<Box<CodeHandles>>; Proto::ALL.len()],
    duration: OnceLock<prometheus::Histogram>,
    state: IntGauge,
    /// The counters most routes never touch (a few hundred bytes of empty slots per
    /// route), made together on the first of them.
    rare: OnceLock<Box<RareHandles>>,
}

/// A route's breaker transitions, rejections, upstream failures, fallbacks and cache
/// results.
#[derive(Default)]
struct RareHandles {
    transitions: [OnceLock<IntCounter>; STATES.len()],
    rejections: [OnceLock<IntCounter>; 5],
    failures: [OnceLock<IntCounter>; 4],
    fallbacks: [OnceLock<IntCounter>; 2],
    cache: [OnceLock<IntCounter>; 4],
}

/// Results of `fusegate_cache_total`.
pub const CACHE_RESULTS: [&str; 4] = ["hit", "miss", "stale", "bypass"];

impl std::fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RouteMetrics({})", self.route)
    }
}

impl RouteMetrics {
    fn rare(&self) -> &RareHandles {
        self.rare.get_or_init(Default::default)
    }

    /// One answered request.
    pub fn request(&self, code: u16, proto: Proto, seconds: f64) {
        let f = &self.families;
        let labels = || [self.route.clone(), code.to_string(), proto.as_str().into()];
        match COMMON_CODES.iter().position(|c| *c == code) {
            Some(i) => self.codes[proto as usize].get_or_init(Default::default)[i]
                .get_or_init(|| f.requests.with_label_values(&labels()))
                .inc(),
            None => f.requests.with_label_values(&labels()).inc(),
        }
        self.duration
            .get_or_init(|| f.duration.with_label_values(&[self.route.as_str()]))
            .observe(seconds);
    }

    pub fn transition(&self, to: State) {
        self.rare().transitions[to as usize]
            .get_or_init(|| {
                self.families
                    .transitions
                    .with_label_values(&[self.route.as_str(), to.as_str()])
            })
            .inc();
        self.state.set(to as i64);
    }

    pub fn set_state(&self, state: State) {
        self.state.set(state as i64);
    }

    pub fn rejected(&self, reason: RejectReason) {
        self.rare().rejections[reason as usize]
            .get_or_init(|| {
                self.families
                    .rejections
                    .with_label_values(&[self.route.as_str(), reason.as_str()])
            })
            .inc();
    }

    /// One cache lookup result: one of [`CACHE_RESULTS`].
    pub fn cache(&self, result: &'static str) {
        let i = CACHE_RESULTS.iter().position(|r| *r == result).unwrap_or(3);
        self.rare().cache[i]
            .get_or_init(|| {
                self.families
                    .cache
                    .with_label_values(&[self.route.as_str(), CACHE_RESULTS[i]])
            })
            .inc();
    }

    /// A breaker rejection answered by the route's fallback.
    pub fn fallback(&self, kind: FallbackKind) {
        self.rare().fallbacks[kind as usize]
            .get_or_init(|| {
                self.families
                    .fallbacks
                    .with_label_values(&[self.route.as_str(), kind.as_str()])
            })
            .inc();
    }

    pub fn upstream_failure(&self, kind: FailureKind) {
        let i = FAILURE_KINDS.iter().position(|k| *k == kind).unwrap_or(0);
        self.rare().failures[i]
            .get_or_init(|| {
                self.families
                    .upstream_failures
                    .with_label_values(&[self.route.as_str(), kind.as_str()])
            })
            .inc();
    }
}
