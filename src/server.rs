//! Assembles the pingora `Server` for one config: the proxy service on every
//! `server.listen` address, plus background work, and runs it until a signal ends it.
//!
//! SIGTERM: stop accepting, let requests in flight finish (at most `server.grace_period`),
//! exit 0 as soon as none is left. SIGINT: the same without waiting.

use crate::config::Config;
use crate::gateway::Gateway;
use crate::proxy::Proxy;
use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::Service;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the drain watcher looks at the in-flight count.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// A fusegate server ready to run.
pub struct Gatekeeper {
    server: Server,
    pub gateway: Arc<Gateway>,
}

impl Gatekeeper {
    /// Builds the route table and the pingora server. Fails (without binding anything)
    /// when an upstream does not resolve or a listen address is taken.
    pub fn build(config: Config) -> Result<Self, String> {
        let listen: Vec<String> = config
            .server
            .listen
            .addrs()
            .into_iter()
            .map(String::from)
            .collect();
        for addr in &listen {
            TcpListener::bind(addr.as_str())
                .map_err(|e| format!("server.listen: cannot listen on {addr}: {e}"))?;
        }
        let grace = config.server.grace_period.0;
        let mut conf = ServerConf {
            threads: config.server.threads,
            grace_period_seconds: Some(grace.as_secs() + u64::from(grace.subsec_nanos() > 0)),
            graceful_shutdown_timeout_seconds: Some(1),
            ..ServerConf::default()
        };
        conf.pid_file = String::new();
        let gateway = Gateway::new(config)?;

        let mut server = Server::new_with_opt_and_conf(None, conf);
        server.bootstrap();
        let mut proxy = pingora::proxy::http_proxy_service_with_name(
            &server.configuration,
            Proxy::new(gateway.clone()),
            "fusegate proxy",
        );
        for addr in &listen {
            proxy.add_tcp(addr);
        }
        server.add_service(proxy);
        server.add_service(background_service(
            "drain",
            DrainWatch {
                gateway: gateway.clone(),
                grace,
            },
        ));
        Ok(Gatekeeper { server, gateway })
    }

    /// Adds another pingora service (the demo upstreams, the admin port).
    pub fn add_service(&mut self, service: impl Service + 'static) {
        self.server.add_service(service);
    }

    /// Serves until SIGTERM or SIGINT.
    pub fn run(self) {
        self.server.run(RunArgs::default());
    }
}

/// Waits for shutdown, then ends the process as soon as no request is in flight.
struct DrainWatch {
    gateway: Arc<Gateway>,
    grace: Duration,
}

#[async_trait]
impl BackgroundService for DrainWatch {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                return;
            }
        }
        self.gateway.start_draining();
        let deadline = Instant::now() + self.grace;
        log::info!(
            "draining: {} request(s) in flight, waiting at most {:?}",
            self.gateway.inflight(),
            self.grace
        );
        while self.gateway.inflight() > 0 && Instant::now() < deadline {
            tokio::time::sleep(DRAIN_POLL).await;
        }
        log::info!(
            "drained ({} request(s) left); exiting",
            self.gateway.inflight()
        );
        log::logger().flush();
        std::process::exit(0);
    }
}
