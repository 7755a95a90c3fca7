//! Semantic checks over a deserialized [`Config`]: every problem is collected with its key
//! path, nothing stops at the first one.

use super::problem::ConfigProblem;
use super::types::{BreakerConfig, Config, FallbackConfig, RouteConfig};
use super::upstream::UpstreamAddr;
use std::collections::HashMap;
use std::net::SocketAddr;

/// Most probes a half-open breaker may admit at once.
pub const MAX_HALF_OPEN_PROBES: u32 = 10_000;
/// Smallest `server.max_header_bytes`: room for a request line and a few fields.
pub const MIN_HEADER_BYTES: u64 = 1024;
/// Most buckets a rolling window may have.
pub const MAX_ROLLING_BUCKETS: u32 = 1_000;
/// Longest `recovery_duration`.
pub const MAX_RECOVERY: std::time::Duration = std::time::Duration::from_secs(3600);
/// Largest static fallback body.
pub const MAX_FALLBACK_BODY: usize = 1 << 20;

/// Checks what serde cannot: ranges, cross-key rules, address syntax.
pub fn validate(c: &Config) -> Vec<ConfigProblem> {
    let mut out = Vec::new();
    let mut p = |path: String, msg: String| out.push(ConfigProblem::new(path, msg));

    // server
    let addrs = c.server.listen.addrs();
    if addrs.is_empty() {
        p("server.listen".into(), "needs at least one address".into());
    }
    for a in addrs {
        if a.parse::<SocketAddr>().is_err() {
            p(
                "server.listen".into(),
                format!("{a:?} is not an ip:port address"),
            );
        }
    }
    if !(1..=1024).contains(&c.server.threads) {
        p("server.threads".into(), "must be between 1 and 1024".into());
    }
    for (key, d) in [
        ("server.header_timeout", &c.server.header_timeout),
        ("server.body_timeout", &c.server.body_timeout),
    ] {
        if d.0.is_zero() {
            p(key.into(), "must be greater than 0s".into());
        }
    }
    if c.server.max_header_bytes.0 < MIN_HEADER_BYTES {
        p(
            "server.max_header_bytes".into(),
            format!("must be at least {MIN_HEADER_BYTES} bytes"),
        );
    }
    if c.server.max_connections == 0 {
        p("server.max_connections".into(), "must be at least 1".into());
    }
    for (i, entry) in c.server.trusted_proxies.iter().enumerate() {
        if let Err(e) = crate::forwarded::Cidr::parse(entry) {
            p(format!("server.trusted_proxies[{i}]"), e);
        }
    }
    if let Some(tls) = &c.server.tls {
        let addrs = tls.listen.addrs();
        if addrs.is_empty() {
            p(
                "server.tls.listen".into(),
                "needs at least one address".into(),
            );
        }
        for a in addrs {
            if a.parse::<SocketAddr>().is_err() {
                p(
                    "server.tls.listen".into(),
                    format!("{a:?} is not an ip:port address"),
                );
            } else if c.server.listen.addrs().contains(&a) {
                p(
                    "server.tls.listen".into(),
                    format!("{a:?} is also in server.listen"),
                );
            }
        }
        if let Err(problems) = crate::tls::ListenerTls::build(tls) {
            for (key, msg) in problems {
                p(key, msg);
            }
        }
    }
    if c.server.max_body_bytes.0 == 0 {
        p(
            "server.max_body_bytes".into(),
            "must be greater than 0".into(),
        );
    }

    // admin
    match c.admin.listen.parse::<SocketAddr>() {
        Err(_) => p(
            "admin.listen".into(),
            format!("{:?} is not an ip:port address", c.admin.listen),
        ),
        Ok(sa) if !sa.ip().is_loopback() && c.admin.token.is_empty() => p(
            "admin.token".into(),
            "required when admin.listen is not a loopback address".into(),
        ),
        Ok(_) => {}
    }

    // breakers
    check_breaker("defaults.breaker", &c.defaults.breaker, &mut p);
    for (name, r) in &c.routes {
        check_breaker(&format!("routes.{name}.breaker"), &r.breaker, &mut p);
    }
    check_window(
        "defaults.breaker",
        &c.defaults.breaker,
        &c.defaults.breaker,
        &mut p,
    );
    check_backoff(
        "defaults.breaker",
        &c.defaults.breaker,
        &c.defaults.breaker,
        &mut p,
    );
    // A route's rule over merged keys is checked where the route sets one of them.
    for (name, r) in &c.routes {
        let base = format!("routes.{name}.breaker");
        let b = &r.breaker;
        if b.rolling_window.is_some() || b.rolling_buckets.is_some() {
            check_window(&base, b, &c.defaults.breaker, &mut p);
        }
        if b.reset_timeout.is_some() || b.reset_timeout_max.is_some() {
            check_backoff(&base, b, &c.defaults.breaker, &mut p);
        }
    }

    // routes
    let mut prefixes: HashMap<String, &str> = HashMap::new();
    for (name, r) in &c.routes {
        let base = format!("routes.{name}");
        if !valid_route_name(name) {
            p(
                base.clone(),
                "route name must match [a-z0-9][a-z0-9_-]{0,62}".into(),
            );
        }
        check_route(&base, r, &mut p);
        let prefix = r.effective_prefix(name);
        if let Some(other) = prefixes.get(&prefix) {
            p(
                format!("{base}.prefix"),
                format!("{prefix:?} is already the prefix of route {other:?}"),
            );
        } else {
            prefixes.insert(prefix, name);
        }
    }

    // access_log
    if let Some(a) = &c.access_log {
        if let Err(e) = crate::access_log::check_path(&a.path) {
            p("access_log.path".into(), e);
        }
    }

    // tracing
    if let Some(t) = &c.tracing {
        if let Err(e) = crate::otel::check_endpoint(&t.otlp_endpoint) {
            p("tracing.otlp_endpoint".into(), e);
        }
        if !(0.0..=1.0).contains(&t.sample_ratio) {
            p(
                "tracing.sample_ratio".into(),
                "must be between 0.0 and 1.0".into(),
            );
        }
        if t.service_name.trim().is_empty() {
            p("tracing.service_name".into(), "must not be empty".into());
        }
    }

    // nats
    if let Some(n) = &c.nats {
        if n.url.trim().is_empty() {
            p("nats.url".into(), "must not be empty".into());
        } else if let Err(e) = crate::control::url::parse(&n.url) {
            p("nats.url".into(), e);
        }
        if n.cluster.is_empty()
            || !n
                .cluster
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        {
            p(
                "nats.cluster".into(),
                "must be letters, digits, '-' or '_' (it is part of a subject)".into(),
            );
        }
    }
    out
}

fn check_breaker(base: &str, b: &BreakerConfig, p: &mut impl FnMut(String, String)) {
    if let Some(f) = &b.fleet {
        if f.quorum < 1 {
            p(format!("{base}.fleet.quorum"), "must be >= 1".into());
        }
        if f.scope.iter().any(|k| k.trim().is_empty()) {
            p(
                format!("{base}.fleet.scope"),
                "fact names must not be empty".into(),
            );
        }
    }
    let mut range = |key: &str, v: Option<u32>, lo: u32, hi: u32| {
        if let Some(v) = v {
            if v < lo {
                p(format!("{base}.{key}"), format!("must be >= {lo}"));
            } else if v > hi {
                p(format!("{base}.{key}"), format!("must be <= {hi}"));
            }
        }
    };
    range(
        "error_threshold_percentage",
        b.error_threshold_percentage,
        1,
        100,
    );
    range(
        "slow_call_rate_threshold",
        b.slow_call_rate_threshold,
        1,
        100,
    );
    range("volume_threshold", b.volume_threshold, 1, u32::MAX);
    range(
        "half_open_probes",
        b.half_open_probes,
        1,
        MAX_HALF_OPEN_PROBES,
    );
    range("rolling_buckets", b.rolling_buckets, 1, MAX_ROLLING_BUCKETS);
    for (key, d) in [
        ("rolling_window", b.rolling_window),
        ("reset_timeout", b.reset_timeout),
        ("timeout", b.timeout),
    ] {
        if d.is_some_and(|d| d.0.is_zero()) {
            p(format!("{base}.{key}"), "must be greater than 0".into());
        }
    }
    if b.recovery_duration.is_some_and(|d| d.0 > MAX_RECOVERY) {
        p(
            format!("{base}.recovery_duration"),
            "must be at most 1h".into(),
        );
    }
    if let Some(list) = &b.failure_statuses {
        for (i, s) in list.iter().enumerate() {
            if let Err(e) = s.range() {
                p(format!("{base}.failure_statuses.{i}"), e);
            }
        }
    }
    if let Some(list) = &b.failure_grpc_codes {
        let max = crate::breaker::GrpcCodes::MAX;
        for (i, c) in list.iter().enumerate() {
            if !(0..=i64::from(max)).contains(c) {
                p(
                    format!("{base}.failure_grpc_codes.{i}"),
                    format!("{c} is not a gRPC status code (0-{max})"),
                );
            }
        }
    }
}

/// `rolling_window / rolling_buckets` must be a whole number of milliseconds.
fn check_window(
    base: &str,
    b: &BreakerConfig,
    defaults: &BreakerConfig,
    p: &mut impl FnMut(String, String),
) {
    let eff = b.merged_over(defaults);
    let window = eff
        .rolling_window
        .unwrap_or(BreakerConfig::DEFAULT_WINDOW)
        .0;
    let buckets = eff
        .rolling_buckets
        .unwrap_or(BreakerConfig::DEFAULT_BUCKETS);
    if buckets == 0 || window.is_zero() {
        return; // reported by check_breaker
    }
    let nanos = window.as_nanos();
    if !nanos.is_multiple_of(1_000_000) || !(nanos / 1_000_000).is_multiple_of(u128::from(buckets))
    {
        p(
            format!("{base}.rolling_window"),
            format!(
                "{} divided by rolling_buckets = {buckets} must be a whole number of milliseconds",
                humantime::format_duration(window)
            ),
        );
    }
}

/// `reset_timeout_max` is 0 (no back-off) or at least `reset_timeout`.
fn check_backoff(
    base: &str,
    b: &BreakerConfig,
    defaults: &BreakerConfig,
    p: &mut impl FnMut(String, String),
) {
    let eff = b.merged_over(defaults);
    let reset = eff
        .reset_timeout
        .unwrap_or(BreakerConfig::DEFAULT_RESET_TIMEOUT)
        .0;
    let Some(max) = eff.reset_timeout_max.map(|d| d.0) else {
        return;
    };
    if !max.is_zero() && max < reset {
        p(
            format!("{base}.reset_timeout_max"),
            format!(
                "must be 0s or at least reset_timeout ({})",
                humantime::format_duration(reset)
            ),
        );
    }
}

/// A route's `fallback`: a static answer (status, content type, body) or an upstream.
fn check_fallback(base: &str, f: &FallbackConfig, p: &mut impl FnMut(String, String)) {
    if !(100..=599).contains(&f.status) {
        p(
            format!("{base}.status"),
            format!("must be within 100-599, got {}", f.status),
        );
    }
    if http::HeaderValue::from_str(&f.content_type).is_err() {
        p(
            format!("{base}.content_type"),
            format!("{:?} is not a valid header value", f.content_type),
        );
    }
    if let Some(body) = &f.body {
        if body.len() > MAX_FALLBACK_BODY {
            p(
                format!("{base}.body"),
                format!("must be at most 1 MiB, got {} bytes", body.len()),
            );
        }
        if f.upstream.is_some() {
            p(
                format!("{base}.body"),
                "body and upstream cannot both be set: a fallback is a static answer or an upstream"
                    .into(),
            );
        }
    }
    if let Some(u) = &f.upstream {
        if let Err(e) = UpstreamAddr::parse(u) {
            p(format!("{base}.upstream"), e);
        }
    }
}

fn check_route(base: &str, r: &RouteConfig, p: &mut impl FnMut(String, String)) {
    if let Some(f) = &r.fallback {
        check_fallback(&format!("{base}.fallback"), f, p);
    }
    if r.upstreams.is_empty() {
        p(
            format!("{base}.upstreams"),
            "needs at least one upstream".into(),
        );
    }
    for (i, u) in r.upstreams.iter().enumerate() {
        if let Err(e) = UpstreamAddr::parse(u) {
            p(format!("{base}.upstreams.{i}"), e);
        }
    }
    if let Err(problems) = crate::tls::UpstreamTlsFiles::read(base, r) {
        for (key, msg) in problems {
            p(key, msg);
        }
    }
    if let Some(prefix) = &r.prefix {
        if let Err(e) = check_prefix(prefix) {
            p(format!("{base}.prefix"), e);
        }
    }
    if let Some(c) = &r.cache {
        if c.max_bytes.0 == 0 {
            p(
                format!("{base}.cache.max_bytes"),
                "must be greater than 0".into(),
            );
        }
        if c.max_object_bytes.0 > c.max_bytes.0 {
            p(
                format!("{base}.cache.max_object_bytes"),
                "must not be larger than max_bytes".into(),
            );
        }
    }
    if let Some(rl) = &r.rate_limit {
        if rl.requests_per_second == 0 {
            p(
                format!("{base}.rate_limit.requests_per_second"),
                "must be >= 1".into(),
            );
        }
        if rl.burst == 0 {
            p(format!("{base}.rate_limit.burst"), "must be >= 1".into());
        }
    }
    if let Some(h) = &r.health_check {
        if h.interval.0.is_zero() {
            p(
                format!("{base}.health_check.interval"),
                "must be greater than 0".into(),
            );
        }
        if h.timeout.0.is_zero() {
            p(
                format!("{base}.health_check.timeout"),
                "must be greater than 0".into(),
            );
        }
        if h.healthy_threshold == 0 {
            p(
                format!("{base}.health_check.healthy_threshold"),
                "must be >= 1".into(),
            );
        }
        if h.unhealthy_threshold == 0 {
            p(
                format!("{base}.health_check.unhealthy_threshold"),
                "must be >= 1".into(),
            );
        }
        if let Some(path) = &h.path {
            if !path.starts_with('/') {
                p(
                    format!("{base}.health_check.path"),
                    "must start with '/'".into(),
                );
            }
        }
    }
}

fn check_prefix(prefix: &str) -> Result<(), String> {
    if !prefix.starts_with('/') {
        return Err(format!("{prefix:?} must start with '/'"));
    }
    if prefix.len() > 1 && prefix.ends_with('/') {
        return Err(format!("{prefix:?} must not end with '/'"));
    }
    if prefix
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#' | '%' | '\\'))
    {
        return Err(format!(
            "{prefix:?} may not contain whitespace, '?', '#', '%' or '\\'"
        ));
    }
    if prefix
        .split('/')
        .skip(1)
        .any(|seg| seg.is_empty() && prefix != "/" || seg == "." || seg == "..")
    {
        return Err(format!("{prefix:?} has an empty, '.' or '..' segment"));
    }
    Ok(())
}

/// `[a-z0-9][a-z0-9_-]{0,62}`
pub fn valid_route_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_names_follow_the_pattern() {
        assert!(valid_route_name("catalog"));
        assert!(valid_route_name("0plugin_v2-x"));
        assert!(!valid_route_name(""));
        assert!(!valid_route_name("Catalog"));
        assert!(!valid_route_name("-x"));
        assert!(!valid_route_name(&"a".repeat(64)));
    }

    #[test]
    fn prefixes_are_clean_absolute_paths() {
        assert!(check_prefix("/api/catalog").is_ok());
        assert!(check_prefix("/").is_ok());
        assert!(check_prefix("api").is_err());
        assert!(check_prefix("/api/").is_err());
        assert!(check_prefix("/api//x").is_err());
        assert!(check_prefix("/api/../x").is_err());
        assert!(check_prefix("/api?x").is_err());
    }
}
