//! The serde structs of the configuration file. Every struct rejects unknown keys, and
//! every key has the default the spec gives it.

use super::units::{ByteSize, Dur};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub defaults: Defaults,
    pub routes: BTreeMap<String, RouteConfig>,
    pub nats: Option<NatsConfig>,
    pub log: LogConfig,
    /// `[access_log]`: off unless present.
    pub access_log: Option<AccessLogConfig>,
    /// `[tracing]`: span export over OTLP/HTTP, off unless present.
    pub tracing: Option<TracingConfig>,
}

/// One address or a list of addresses to listen on.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Listen {
    One(String),
    Many(Vec<String>),
}

impl Listen {
    pub fn addrs(&self) -> Vec<&str> {
        match self {
            Listen::One(a) => vec![a.as_str()],
            Listen::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: Listen,
    pub threads: usize,
    pub grace_period: Dur,
    /// The whole request header must arrive within this, counted from the accept (first
    /// request) or from its first byte (later requests on a kept-alive connection).
    pub header_timeout: Dur,
    /// Longest wait for the next piece of a request body.
    pub body_timeout: Dur,
    /// Longest idle time between requests on a kept-alive connection; 0 turns keep-alive off.
    pub keepalive_timeout: Dur,
    /// Largest request header (request line and fields); larger gets 431.
    pub max_header_bytes: ByteSize,
    /// Largest request body; larger gets 413.
    pub max_body_bytes: ByteSize,
    /// Most client connections open at once on the proxy port; past it a new connection
    /// is closed at once.
    pub max_connections: usize,
    /// Peers (CIDR blocks) whose `X-Forwarded-*` and `Forwarded` headers are believed.
    pub trusted_proxies: Vec<String>,
    /// HTTP/2 with prior knowledge on the plain listeners, beside HTTP/1.1.
    pub h2c: bool,
    /// `[server.tls]`: TLS listeners, off unless present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsConfig>,
}

/// `[server.tls]`: listeners that terminate TLS, and their certificates.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerTlsConfig {
    pub listen: Listen,
    /// The default certificate chain (PEM) and its key.
    pub cert: String,
    pub key: String,
    /// More certificates, picked by the name a client asks for (SNI).
    pub sni: Vec<CertKeyConfig>,
    /// `"1.2"` or `"1.3"`.
    pub min_version: String,
    /// Offer `h2` and `http/1.1` through ALPN; false: HTTP/1.1 only.
    pub h2: bool,
}

impl Default for ServerTlsConfig {
    fn default() -> Self {
        ServerTlsConfig {
            listen: Listen::Many(Vec::new()),
            cert: String::new(),
            key: String::new(),
            sni: Vec::new(),
            min_version: "1.2".into(),
            h2: true,
        }
    }
}

/// A certificate chain file and its key file.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CertKeyConfig {
    pub cert: String,
    pub key: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: Listen::One("127.0.0.1:8080".into()),
            threads: 2,
            grace_period: Dur::from_secs(10),
            header_timeout: Dur::from_secs(10),
            body_timeout: Dur::from_secs(30),
            keepalive_timeout: Dur::from_secs(60),
            max_header_bytes: ByteSize(64 * 1024),
            max_body_bytes: ByteSize(10 * 1024 * 1024),
            max_connections: 10_000,
            trusted_proxies: Vec::new(),
            h2c: false,
            tls: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub listen: String,
    pub token: String,
    pub read_requires_token: bool,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "127.0.0.1:9090".into(),
            token: String::new(),
            read_requires_token: false,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Defaults {
    pub breaker: BreakerConfig,
}

/// Breaker keys. Used twice: `[defaults.breaker]` and each route's `breaker`; a key left
/// out of a route falls back to the defaults, then to the built-in default.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_threshold_percentage: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_threshold: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rolling_window: Option<Dur>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rolling_buckets: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset_timeout: Option<Dur>,
    /// Back-off ceiling for repeated trips; 0 (or not above `reset_timeout`): none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset_timeout_max: Option<Dur>,
    /// Ramp traffic back over this after half-open closes; 0: all at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_duration: Option<Dur>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub half_open_probes: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_statuses: Option<Vec<StatusSpec>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow_call_duration: Option<Dur>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow_call_rate_threshold: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<BreakerMode>,
    /// gRPC statuses (`grpc-status`) that count as failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_grpc_codes: Option<Vec<i64>>,
    /// Fleet trips: open with the rest of the fleet (needs `[nats]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetTripConfig>,
}

/// `breaker.fleet`: when at least `quorum` gateways sharing this one's `scope` facts
/// have reported the route open within its rolling window, a closed breaker opens too.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FleetTripConfig {
    pub quorum: u32,
    /// Fact names whose values a reporting gateway must share (`["dc"]`); empty: the
    /// whole cluster.
    pub scope: Vec<String>,
}

impl Default for FleetTripConfig {
    fn default() -> Self {
        FleetTripConfig {
            quorum: 2,
            scope: Vec::new(),
        }
    }
}

/// A failure status as written in `failure_statuses`: `502`, `"502"` or `"500-599"`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum StatusSpec {
    Code(i64),
    Text(String),
}

impl StatusSpec {
    /// The inclusive range this entry names.
    pub fn range(&self) -> Result<(u16, u16), String> {
        let (lo, hi) = match self {
            StatusSpec::Code(c) => (*c, *c),
            StatusSpec::Text(t) => {
                let parse = |s: &str| {
                    s.trim().parse::<i64>().map_err(|_| {
                        format!("{t:?} is not a status code or a range like \"500-599\"")
                    })
                };
                match t.split_once('-') {
                    Some((a, b)) => (parse(a)?, parse(b)?),
                    None => {
                        let c = parse(t)?;
                        (c, c)
                    }
                }
            }
        };
        if !(100..=599).contains(&lo) || !(100..=599).contains(&hi) {
            return Err(format!(
                "status codes must be within 100-599, got {lo}-{hi}"
            ));
        }
        if lo > hi {
            return Err(format!("range {lo}-{hi} is empty"));
        }
        Ok((lo as u16, hi as u16))
    }
}

/// `enforce` or `observe`.
pub use crate::breaker::Mode as BreakerMode;

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HostHeader {
    /// Send the client's `Host` header upstream unchanged.
    #[default]
    Preserve,
    /// Send the upstream's own `host[:port]` as `Host`.
    Upstream,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RouteConfig {
    pub upstreams: Vec<String>,
    pub prefix: Option<String>,
    pub strip_prefix: bool,
    pub host_header: HostHeader,
    pub breaker: BreakerConfig,
    pub cache: Option<CacheConfig>,
    pub rate_limit: Option<RateLimitConfig>,
    pub health_check: Option<HealthCheckConfig>,
    pub fallback: Option<FallbackConfig>,
    /// HTTP/2 to the upstreams: ALPN h2 for https ones, prior knowledge (h2c) for plain.
    pub http2: bool,
    /// CA file (PEM) that https upstreams' certificates must chain to; empty: the system's.
    pub tls_ca: String,
    /// Client certificate chain and key (PEM) shown to https upstreams (mTLS).
    pub tls_cert: String,
    pub tls_key: String,
}

/// What a route answers instead of the breaker's 503: a static response, or the answer
/// of a fallback upstream (`body` and `upstream` are not both set).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FallbackConfig {
    pub status: i64,
    pub content_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        FallbackConfig {
            status: 200,
            content_type: "application/json".into(),
            body: None,
            upstream: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    pub enabled: bool,
    pub max_bytes: ByteSize,
    pub max_object_bytes: ByteSize,
    pub default_ttl: Dur,
    pub min_age: Dur,
    pub max_fresh: Dur,
    pub stale_if_error: Dur,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: true,
            max_bytes: ByteSize(64 << 20),
            max_object_bytes: ByteSize(1 << 20),
            default_ttl: Dur::from_secs(0),
            min_age: Dur::from_secs(0),
            max_fresh: Dur::from_secs(0),
            stale_if_error: Dur::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitKey {
    #[default]
    Route,
    ClientIp,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub requests_per_second: u32,
    pub burst: u32,
    pub key: RateLimitKey,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            requests_per_second: 200,
            burst: 400,
            key: RateLimitKey::Route,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheckConfig {
    pub path: Option<String>,
    pub interval: Dur,
    pub timeout: Dur,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            path: None,
            interval: Dur::from_secs(5),
            timeout: Dur::from_secs(1),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    pub url: String,
    pub cluster: String,
    pub identity: String,
    pub facts: BTreeMap<String, String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    pub creds: Option<String>,
    pub tls_ca: Option<String>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    /// Record and apply operator pauses as desired state in JetStream (SPEC §14).
    pub fleet_state: bool,
    /// How often the dashboard snapshot is published on
    /// `fusegate.<cluster>.events.snapshot`; 0 turns it off.
    pub snapshot_interval: Dur,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: "nats://127.0.0.1:4222".into(),
            cluster: "default".into(),
            identity: String::new(),
            facts: BTreeMap::new(),
            user: None,
            password: None,
            token: None,
            creds: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            fleet_state: false,
            snapshot_interval: Dur::from_secs(2),
        }
    }
}

/// A log level. One parser for every place a level is named: the config's `log.level`,
/// the admin port's `PUT /log-level` and the control plane's `loglevel` action.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", try_from = "String")]
pub enum LogLevel {
    Debug,
    #[default]
    Info,
    Warn,
    Error,
}

impl std::str::FromStr for LogLevel {
    type Err = String;

    /// `debug`, `info`, `warn` or `error`, any case; `crit` is `error` (the control
    /// plane's name for it), `warning` is `warn`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "debug" => Ok(LogLevel::Debug),
            "info" => Ok(LogLevel::Info),
            "warn" | "warning" => Ok(LogLevel::Warn),
            "error" | "crit" => Ok(LogLevel::Error),
            _ => Err(format!(
                "unknown log level {s:?}: expected debug, info, warn or error (crit)"
            )),
        }
    }
}

impl TryFrom<String> for LogLevel {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }

    pub fn as_filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Error => log::LevelFilter::Error,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `[access_log]`: one line per proxied request.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLogConfig {
    /// `-` for standard output, else a file appended to (and reopened on SIGUSR1).
    pub path: String,
    pub format: AccessLogFormat,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        AccessLogConfig {
            path: "-".into(),
            format: AccessLogFormat::Json,
        }
    }
}

/// `[tracing]`: a span per proxied request, exported over OTLP/HTTP.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// The collector's OTLP/HTTP base URL; spans go to `<it>/v1/traces`.
    pub otlp_endpoint: String,
    /// The share of new traces that are sampled, 0.0 to 1.0; a continued trace follows
    /// the client's sampled flag.
    pub sample_ratio: f64,
    pub service_name: String,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            otlp_endpoint: "http://127.0.0.1:4318".into(),
            sample_ratio: 1.0,
            service_name: "fusegate".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AccessLogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// nginx's `combined`, plus the route and the request id.
    Combined,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub level: LogLevel,
    pub format: LogFormat,
}

impl BreakerConfig {
    pub const DEFAULT_ERROR_THRESHOLD_PERCENTAGE: u32 = 50;
    pub const DEFAULT_VOLUME_THRESHOLD: u32 = 10;
    pub const DEFAULT_WINDOW: Dur = Dur::from_secs(10);
    pub const DEFAULT_BUCKETS: u32 = 10;
    pub const DEFAULT_RESET_TIMEOUT: Dur = Dur::from_secs(30);
    pub const DEFAULT_HALF_OPEN_PROBES: u32 = 1;
    pub const DEFAULT_TIMEOUT: Dur = Dur::from_secs(5);
    pub const DEFAULT_SLOW_CALL_RATE_THRESHOLD: u32 = 100;

    /// This config with every key it leaves out taken from `defaults`.
    pub fn merged_over(&self, defaults: &BreakerConfig) -> BreakerConfig {
        BreakerConfig {
            error_threshold_percentage: self
                .error_threshold_percentage
                .or(defaults.error_threshold_percentage),
            volume_threshold: self.volume_threshold.or(defaults.volume_threshold),
            rolling_window: self.rolling_window.or(defaults.rolling_window),
            rolling_buckets: self.rolling_buckets.or(defaults.rolling_buckets),
            reset_timeout: self.reset_timeout.or(defaults.reset_timeout),
            reset_timeout_max: self.reset_timeout_max.or(defaults.reset_timeout_max),
            recovery_duration: self.recovery_duration.or(defaults.recovery_duration),
            half_open_probes: self.half_open_probes.or(defaults.half_open_probes),
            timeout: self.timeout.or(defaults.timeout),
            failure_statuses: self
                .failure_statuses
                .clone()
                .or_else(|| defaults.failure_statuses.clone()),
            slow_call_duration: self.slow_call_duration.or(defaults.slow_call_duration),
            slow_call_rate_threshold: self
                .slow_call_rate_threshold
                .or(defaults.slow_call_rate_threshold),
            mode: self.mode.or(defaults.mode),
            failure_grpc_codes: self
                .failure_grpc_codes
                .clone()
                .or_else(|| defaults.failure_grpc_codes.clone()),
            fleet: self.fleet.clone().or_else(|| defaults.fleet.clone()),
        }
    }
}

impl RouteConfig {
    /// The configured prefix, or `/api/<name>`.
    pub fn effective_prefix(&self, name: &str) -> String {
        match &self.prefix {
            Some(p) => p.clone(),
            None => format!("/api/{name}"),
        }
    }
}
