//! Active health checks of upstreams (a route's `health_check` table).
//!
//! pingora's load balancer does the probing and the healthy/unhealthy thresholds; an
//! unhealthy upstream drops out of round robin. This module builds the probes (HTTP GET
//! or TCP connect, one per upstream so each gets its own `Host` and TLS setting) and records
//! each probe's latest error and latency for `/health`. [`crate::background`] schedules
//! the passes.

use crate::config::HealthCheckConfig;
use async_trait::async_trait;
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora::lb::Backend;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

/// The latest probe of one upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeResult {
    pub error: Option<String>,
    pub latency_ms: u64,
}

/// Latest probe results by upstream address. Written by health checks, read by the admin
/// port; never touched by requests.
#[derive(Debug, Default)]
pub struct ProbeLog {
    by_addr: Mutex<HashMap<SocketAddr, ProbeResult>>,
}

impl ProbeLog {
    pub fn get(&self, addr: &SocketAddr) -> Option<ProbeResult> {
        self.by_addr
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(addr)
            .cloned()
    }

    fn put(&self, addr: SocketAddr, r: ProbeResult) {
        self.by_addr
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(addr, r);
    }
}

/// What one upstream is probed with.
pub struct ProbeTarget {
    pub socket: SocketAddr,
    /// `Host` for HTTP probes and SNI for TLS.
    pub host: String,
    pub tls: bool,
}

/// The health check of one route: a probe per upstream, results kept in a [`ProbeLog`].
pub struct RouteCheck {
    probes: HashMap<SocketAddr, Box<dyn HealthCheck + Send + Sync>>,
    log: Arc<ProbeLog>,
    healthy_threshold: usize,
    unhealthy_threshold: usize,
}

impl RouteCheck {
    pub fn new(cfg: &HealthCheckConfig, targets: &[ProbeTarget], log: Arc<ProbeLog>) -> Self {
        let probes = targets
            .iter()
            .map(|t| (t.socket, probe_for(cfg, t)))
            .collect();
        RouteCheck {
            probes,
            log,
            healthy_threshold: cfg.healthy_threshold.max(1) as usize,
            unhealthy_threshold: cfg.unhealthy_threshold.max(1) as usize,
        }
    }
}

fn probe_for(cfg: &HealthCheckConfig, t: &ProbeTarget) -> Box<dyn HealthCheck + Send + Sync> {
    let timeout = cfg.timeout.0;
    match &cfg.path {
        Some(path) => {
            let mut hc = HttpHealthCheck::new(&t.host, t.tls);
            if let Ok(uri) = path.parse() {
                hc.req.set_uri(uri);
            }
            hc.peer_template.options.connection_timeout = Some(timeout);
            hc.peer_template.options.total_connection_timeout = Some(timeout);
            hc.peer_template.options.read_timeout = Some(timeout);
            // Thresholds are applied by RouteCheck, for every probe alike.
            hc.consecutive_success = 1;
            hc.consecutive_failure = 1;
            Box::new(hc)
        }
        None => {
            let mut hc = if t.tls {
                TcpHealthCheck::new_tls(&t.host)
            } else {
                TcpHealthCheck::new()
            };
            hc.peer_template.options.connection_timeout = Some(timeout);
            hc.peer_template.options.total_connection_timeout = Some(timeout);
            hc
        }
    }
}

#[async_trait]
impl HealthCheck for RouteCheck {
    async fn check(&self, target: &Backend) -> pingora::Result<()> {
        let Some(addr) = target.addr.as_inet().copied() else {
            return Ok(());
        };
        let Some(probe) = self.probes.get(&addr) else {
            return Ok(());
        };
        let started = Instant::now();
        let result = probe.check(target).await;
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let error = result.as_ref().err().map(|e| describe(e));
        self.log.put(addr, ProbeResult { error, latency_ms });
        result
    }

    fn health_threshold(&self, success: bool) -> usize {
        if success {
            self.healthy_threshold
        } else {
            self.unhealthy_threshold
        }
    }
}

/// A short, stable description of a probe failure: "connection refused", "timeout",
/// "status 503".
fn describe(e: &pingora::Error) -> String {
    use pingora::ErrorType::*;
    match e.etype() {
        ConnectRefused => "connection refused".into(),
        ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout => "timeout".into(),
        HTTPStatus(code) => format!("status {code}"),
        CustomCode(_, code) => format!("status {code}"),
        _ => {
            let s = e.to_string();
            s.lines().next().unwrap_or("probe failed").to_string()
        }
    }
}
