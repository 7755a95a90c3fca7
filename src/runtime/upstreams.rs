//! A route's upstream servers: round robin over prebuilt peers. A route with active health
//! checks uses pingora's load balancer, whose health registry takes unhealthy upstreams
//! out of the rotation; a route without them uses a plain atomic counter, a few bytes
//! instead of a load balancer's several kilobytes (it matters with 10,000 routes).

use crate::config::{HealthCheckConfig, UpstreamAddr};
use crate::health::{ProbeLog, ProbeResult, ProbeTarget, RouteCheck};
use crate::tls::UpstreamTlsFiles;
use pingora::lb::discovery::Static;
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, Backends, LoadBalancer};
use pingora::prelude::HttpPeer;
use std::collections::BTreeSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long an idle pooled upstream connection is kept.
const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// One upstream server. Its pingora peer is made per request from the address and the
/// route's [`PeerSettings`]: a prebuilt peer would cost most of a kilobyte per upstream,
/// which adds up with 10,000 routes, and making one costs what copying one does.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub addr: UpstreamAddr,
    pub socket: SocketAddr,
    /// `host:port` as configured, for `host_header = "upstream"` and reports.
    pub authority: String,
    /// The host is an IP literal. The certificate's chain is always verified; its name is
    /// checked against a host name only (OpenSSL's host check does not match an IP
    /// address against the certificate's IP entries).
    ip_host: bool,
    settings: Arc<PeerSettings>,
}

/// What every peer of a route's upstream set shares.
struct PeerSettings {
    /// Connect, read and write timeout.
    timeout: Duration,
    /// HTTP/2 to the upstreams (ALPN h2 for https, prior knowledge for plain ones).
    http2: bool,
    tls: crate::tls::UpstreamTls,
}

impl std::fmt::Debug for PeerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerSettings")
            .field("timeout", &self.timeout)
            .field("http2", &self.http2)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// The peer to hand to pingora for one request.
    pub fn peer(&self) -> Box<HttpPeer> {
        let tls = self.addr.is_tls();
        let sni = if tls {
            self.addr.host.clone()
        } else {
            String::new()
        };
        let mut peer = Box::new(HttpPeer::new(self.socket, tls, sni));
        let s = &*self.settings;
        let o = &mut peer.options;
        o.connection_timeout = Some(s.timeout);
        o.total_connection_timeout = Some(s.timeout);
        o.read_timeout = Some(s.timeout);
        o.write_timeout = Some(s.timeout);
        o.idle_timeout = Some(UPSTREAM_IDLE_TIMEOUT);
        if s.http2 {
            // TLS: offer h2 first, HTTP/1.1 if the upstream declines; plain: h2c.
            o.set_http_version(2, if tls { 1 } else { 2 });
        }
        if tls {
            o.ca = s.tls.ca.clone();
            o.verify_hostname = !self.ip_host;
            peer.client_cert_key = s.tls.client.clone();
        }
        peer
    }
}

/// What a route's upstream set is built from: when a reload leaves it unchanged, the
/// set (and the health its checks have found) is kept.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamsSpec {
    pub addrs: Vec<String>,
    pub timeout: Duration,
    pub health: Option<HealthCheckConfig>,
    /// HTTP/2 to the upstreams (ALPN h2 for https, prior knowledge for plain ones).
    pub http2: bool,
    /// The route's `tls_ca`, `tls_cert` and `tls_key` as read.
    pub tls: UpstreamTlsFiles,
}

impl UpstreamsSpec {
    /// Plain settings: HTTP/1.1, the system's roots, no client certificate.
    pub fn plain(addrs: Vec<String>, timeout: Duration) -> Self {
        UpstreamsSpec {
            addrs,
            timeout,
            health: None,
            http2: false,
            tls: UpstreamTlsFiles::default(),
        }
    }
}

/// The upstreams of one route.
pub struct Upstreams {
    spec: UpstreamsSpec,
    list: Vec<Upstream>,
    selector: Selector,
}

enum Selector {
    /// Every upstream is always in the rotation.
    Plain { next: AtomicUsize },
    /// pingora's load balancer with active health checks.
    Checked {
        lb: Box<LoadBalancer<RoundRobin>>,
        /// The load balancer's name for each upstream, in list order.
        backends: Vec<Backend>,
        probes: Arc<ProbeLog>,
        checking: AtomicBool,
    },
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.list.iter().map(|u| &u.addr))
            .finish()
    }
}

impl Upstreams {
    /// Resolves each address (host names once, here) and builds the peers with `timeout`
    /// as their connect and read timeout, and the spec's protocol and TLS settings.
    pub fn build(spec: &UpstreamsSpec) -> Result<Self, String> {
        let (addrs, timeout, health) = (&spec.addrs, spec.timeout, spec.health.as_ref());
        let settings = Arc::new(PeerSettings {
            timeout,
            http2: spec.http2,
            tls: spec.tls.parse()?,
        });
        let mut list = Vec::with_capacity(addrs.len());
        for raw in addrs {
            let addr = UpstreamAddr::parse(raw)?;
            let authority = addr.authority();
            let socket = authority
                .to_socket_addrs()
                .map_err(|e| format!("{raw:?}: cannot resolve: {e}"))?
                .next()
                .ok_or_else(|| format!("{raw:?}: resolves to no address"))?;
            if list.iter().any(|u: &Upstream| u.socket == socket) {
                return Err(format!(
                    "{raw:?}: listed twice (same address as another upstream)"
                ));
            }
            list.push(Upstream {
                ip_host: addr.host.parse::<std::net::IpAddr>().is_ok(),
                addr,
                socket,
                authority,
                settings: settings.clone(),
            });
        }
        let Some(cfg) = health else {
            return Ok(Upstreams {
                spec: spec.clone(),
                list,
                selector: Selector::Plain {
                    next: AtomicUsize::new(0),
                },
            });
        };
        let backends = list
            .iter()
            .map(|u| {
                Backend::new(&u.socket.to_string())
                    .map_err(|e| format!("{:?}: invalid upstream address: {e}", u.authority))
            })
            .collect::<Result<Vec<Backend>, String>>()?;
        let set: BTreeSet<Backend> = backends.iter().cloned().collect();
        let mut lb = LoadBalancer::from_backends(Backends::new(Static::new(set)));
        let probes = Arc::new(ProbeLog::default());
        let targets: Vec<ProbeTarget> = list
            .iter()
            .map(|u| ProbeTarget {
                socket: u.socket,
                host: u.authority.clone(),
                tls: u.addr.is_tls(),
            })
            .collect();
        lb.set_health_check(Box::new(RouteCheck::new(cfg, &targets, probes.clone())));
        // A static discovery answers at once; this only fills the selector.
        poll_ready(lb.update())
            .ok_or("upstream setup did not complete")?
            .map_err(|e| format!("upstream setup failed: {e}"))?;
        Ok(Upstreams {
            spec: spec.clone(),
            list,
            selector: Selector::Checked {
                lb: Box::new(lb),
                backends,
                probes,
                checking: AtomicBool::new(false),
            },
        })
    }

    /// Whether this set was built from `spec`.
    pub fn built_from(&self, spec: &UpstreamsSpec) -> bool {
        &self.spec == spec
    }

    pub fn list(&self) -> &[Upstream] {
        &self.list
    }

    /// The next healthy upstream in round-robin order, as an index into
    /// [`Upstreams::list`]; `None` when every upstream is unhealthy.
    pub fn select_index(&self) -> Option<usize> {
        match &self.selector {
            Selector::Plain { next } => {
                let n = self.list.len();
                (n > 0).then(|| next.fetch_add(1, Ordering::Relaxed) % n)
            }
            Selector::Checked { lb, .. } => {
                let backend = lb.select(b"", self.list.len())?;
                let socket = backend.addr.as_inet()?;
                self.list.iter().position(|u| &u.socket == socket)
            }
        }
    }

    /// Whether the upstream at `i` is in the rotation (always, without health checks).
    pub fn is_healthy(&self, i: usize) -> bool {
        match &self.selector {
            Selector::Plain { .. } => i < self.list.len(),
            Selector::Checked { lb, backends, .. } => {
                backends.get(i).is_some_and(|b| lb.backends().ready(b))
            }
        }
    }

    /// The latest probe of the upstream at `i`, when health checks are on and it ran.
    pub fn probe(&self, i: usize) -> Option<ProbeResult> {
        match &self.selector {
            Selector::Plain { .. } => None,
            Selector::Checked { probes, .. } => probes.get(&self.list.get(i)?.socket),
        }
    }

    pub fn has_health_check(&self) -> bool {
        matches!(self.selector, Selector::Checked { .. })
    }

    /// One health-check pass over every upstream; a pass still running is not doubled.
    pub async fn run_health_check(&self) {
        let Selector::Checked { lb, checking, .. } = &self.selector else {
            return;
        };
        if checking.swap(true, Ordering::AcqRel) {
            return;
        }
        lb.backends().run_health_check(true).await;
        checking.store(false, Ordering::Release);
    }
}

/// Polls a future that needs no waiting (static service discovery) to completion.
fn poll_ready<F: std::future::Future>(f: F) -> Option<F::Output> {
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..100 {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_visits_every_upstream() {
        let u = Upstreams::build(&UpstreamsSpec::plain(
            vec!["127.0.0.1:7001".into(), "http://127.0.0.1:7002".into()],
            Duration::from_secs(1),
        ))
        .unwrap();
        let picks: Vec<u16> = (0..4)
            .map(|_| u.list()[u.select_index().unwrap()].socket.port())
            .collect();
        assert_eq!(picks.iter().filter(|p| **p == 7001).count(), 2);
        assert_eq!(picks.iter().filter(|p| **p == 7002).count(), 2);
        assert!(u.is_healthy(0) && u.is_healthy(1));
    }

    #[test]
    fn tls_upstreams_get_sni_from_their_host() {
        let u = Upstreams::build(&UpstreamsSpec::plain(
            vec!["https://localhost:8443".into()],
            Duration::from_secs(1),
        ))
        .unwrap();
        let peer = u.list()[0].peer();
        assert_eq!(peer.sni, "localhost");
        assert!(peer.is_tls());
        assert!(peer.options.verify_hostname);
    }

    #[test]
    fn each_peer_carries_the_route_settings() {
        let mut spec = UpstreamsSpec::plain(
            vec!["127.0.0.1:7001".into(), "https://127.0.0.1:7443".into()],
            Duration::from_millis(1500),
        );
        spec.http2 = true;
        let u = Upstreams::build(&spec).unwrap();
        let plain = u.list()[0].peer();
        let tls = u.list()[1].peer();
        for p in [&plain, &tls] {
            let o = &p.options;
            let t = Some(Duration::from_millis(1500));
            assert_eq!(
                (o.connection_timeout, o.read_timeout, o.write_timeout),
                (t, t, t)
            );
            assert_eq!(o.total_connection_timeout, t);
            assert_eq!(o.idle_timeout, Some(UPSTREAM_IDLE_TIMEOUT));
        }
        assert_eq!(plain._address.to_string(), "127.0.0.1:7001");
        assert!(!plain.is_tls() && plain.sni.is_empty());
        // h2c for a plain upstream; h2 offered first, HTTP/1.1 accepted, over TLS.
        assert_eq!(plain.options.alpn, pingora::protocols::ALPN::H2);
        assert_eq!(tls.options.alpn, pingora::protocols::ALPN::H2H1);
        // An IP literal's certificate is checked for its chain, not its name.
        assert!(tls.is_tls() && !tls.options.verify_hostname);
    }
}
