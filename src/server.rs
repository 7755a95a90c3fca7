//! Assembles the pingora `Server` for one config: the proxy service on every
//! `server.listen` address, plus background work, and runs it until a signal ends it.
//!
//! SIGTERM: stop accepting, let requests in flight finish (at most `server.grace_period`),
//! exit 0 as soon as none is left. SIGINT: the same without waiting.

use crate::admin::AdminApp;
use crate::background::{BreakerTicker, HealthService, LiveSampler, RateLimitMaintenance};
use crate::config::Config;
use crate::gateway::Gateway;
use crate::proxy::{client_limits, serve_limited, FrontDoor, Proxy};
use crate::reload::{FileWatch, SignalReload};
use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use pingora::services::Service as PingoraService;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The TLS listeners' socket read buffer: one TLS record at most (OpenSSL keeps its own
/// buffer above it), not pingora's default 64 KiB per connection.
const TLS_READ_BUFFER: usize = 16 * 1024 + 512;

/// How often the drain watcher looks at the in-flight count.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// The admin port's application: the admin HTTP app behind the same request-header
/// limits as the proxy port (`server.header_timeout`, `server.max_header_bytes`).
struct AdminDoor {
    app: Arc<AdminApp>,
    gateway: Arc<Gateway>,
}

#[async_trait]
impl ServerApp for AdminDoor {
    async fn process_new(
        self: &Arc<Self>,
        stream: pingora::protocols::Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<pingora::protocols::Stream> {
        let (limits, keepalive) = client_limits(&self.gateway.runtime().config.server);
        serve_limited(
            &self.app,
            stream,
            limits,
            keepalive,
            &self.gateway.metrics,
            shutdown,
        )
        .await
    }
}

/// A fusegate server ready to run.
pub struct Gatekeeper {
    server: Server,
    pub gateway: Arc<Gateway>,
}

impl Gatekeeper {
    /// Builds the route table and the pingora server. Fails (without binding anything)
    /// when an upstream does not resolve or a listen address is taken.
    pub fn build(config: Config, config_path: Option<PathBuf>) -> Result<Self, String> {
        let listen: Vec<String> = config
            .server
            .listen
            .addrs()
            .into_iter()
            .map(String::from)
            .collect();
        let tls_listen: Vec<String> = config
            .server
            .tls
            .as_ref()
            .map(|t| t.listen.addrs().into_iter().map(String::from).collect())
            .unwrap_or_default();
        for addr in &listen {
            TcpListener::bind(addr.as_str())
                .map_err(|e| format!("server.listen: cannot listen on {addr}: {e}"))?;
        }
        for addr in &tls_listen {
            TcpListener::bind(addr.as_str())
                .map_err(|e| format!("server.tls.listen: cannot listen on {addr}: {e}"))?;
        }
        let admin_listen = config.admin.listen.clone();
        TcpListener::bind(admin_listen.as_str())
            .map_err(|e| format!("admin.listen: cannot listen on {admin_listen}: {e}"))?;
        let grace = config.server.grace_period.0;
        let mut conf = ServerConf {
            threads: config.server.threads,
            // A single-threaded runtime per worker. pingora's released upstream pool
            // (`PINGORA_PATCHES=off` or `no-idle-pool`) often cannot take back a
            // connection whose idle watcher runs on another worker, and connects anew
            // (719-776 new upstream connections in a 10 s benchmark round), so with it
            // several workers share pingora's work-stealing runtime instead. The pool in
            // `vendor/` has no watcher: with it, two single-threaded workers answered
            // 46,429 req/s at 21.6 µs of CPU per request, against 39,560 at 27.8 µs.
            work_stealing: config.server.threads > 1 && !pingora::patches::idle_pool(),
            grace_period_seconds: Some(grace.as_secs() + u64::from(grace.subsec_nanos() > 0)),
            graceful_shutdown_timeout_seconds: Some(1),
            ..ServerConf::default()
        };
        conf.pid_file = String::new();
        ignore_sighup_until_served()?;
        let gateway = Gateway::new(config, config_path.clone())?;

        let mut server = Server::new_with_opt_and_conf(None, conf);
        server.bootstrap();
        let app = pingora::proxy::http_proxy(&server.configuration, Proxy::new(gateway.clone()));
        let door = FrontDoor::new(app, gateway.clone());
        if !tls_listen.is_empty() {
            // The TLS handshake is the door's (so it is counted, bounded by
            // `server.header_timeout` and made with the certificates in force): pingora
            // hands it the plain TCP connection.
            let mut tls = Service::new("fusegate tls".into(), door.tls_door());
            for addr in &tls_listen {
                tls.add_listener(
                    ListenerConfig::tcp(addr.as_str())
                        .l4_buffer(L4BufferSettings::default().read(TLS_READ_BUFFER)),
                );
            }
            server.add_service(tls);
        }
        let mut proxy = Service::new("fusegate proxy".into(), door);
        for addr in &listen {
            proxy.add_tcp(addr);
        }
        server.add_service(proxy);
        let admin_door = AdminDoor {
            app: Arc::new(AdminApp::new(gateway.clone())),
            gateway: gateway.clone(),
        };
        let mut admin_service = Service::new("fusegate admin".into(), admin_door);
        admin_service.add_tcp(&admin_listen);
        server.add_service(admin_service);
        server.add_service(background_service(
            "health checks",
            HealthService {
                gateway: gateway.clone(),
            },
        ));
        server.add_service(background_service(
            "breaker clock",
            BreakerTicker {
                gateway: gateway.clone(),
            },
        ));
        server.add_service(background_service(
            "dashboard snapshots",
            LiveSampler {
                gateway: gateway.clone(),
            },
        ));
        server.add_service(background_service(
            "rate limit maintenance",
            RateLimitMaintenance {
                gateway: gateway.clone(),
            },
        ));
        server.add_service(background_service(
            "reload on SIGHUP, reopen the access log on SIGUSR1",
            SignalReload {
                gateway: gateway.clone(),
            },
        ));
        if let Some(nats) = gateway.runtime().config.nats.clone() {
            server.add_service(background_service(
                "control plane",
                crate::control::service::ControlPlane {
                    gateway: gateway.clone(),
                    config: nats,
                },
            ));
        }
        if let Some(path) = config_path {
            server.add_service(background_service(
                "config file watch",
                FileWatch {
                    gateway: gateway.clone(),
                    path,
                },
            ));
        }
        server.add_service(background_service(
            "lifecycle",
            Lifecycle {
                gateway: gateway.clone(),
                listen: listen.into_iter().chain(tls_listen).collect(),
                grace,
            },
        ));
        Ok(Gatekeeper { server, gateway })
    }

    /// Adds another pingora service (the demo upstreams).
    pub fn add_service(&mut self, service: impl PingoraService + 'static) {
        self.server.add_service(service);
    }

    /// Serves until SIGTERM, SIGINT or a shutdown request from the control plane.
    pub fn run(self) {
        let signals = Signals {
            gateway: self.gateway.clone(),
        };
        self.server.run(RunArgs {
            shutdown_signal: Box::new(signals),
        });
    }
}

/// What ends the server: SIGTERM and SIGQUIT drain, SIGINT stops at once, and so does a
/// shutdown requested over the control plane (draining).
struct Signals {
    gateway: Arc<Gateway>,
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let (term, quit, int) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::quit()),
            signal(SignalKind::interrupt()),
        );
        let (Ok(mut term), Ok(mut quit), Ok(mut int)) = (term, quit, int) else {
            log::error!("cannot listen for signals; only a control-plane shutdown will stop");
            self.gateway.shutdown_requested().await;
            return ShutdownSignal::GracefulTerminate;
        };
        tokio::select! {
            _ = term.recv() => ShutdownSignal::GracefulTerminate,
            _ = quit.recv() => ShutdownSignal::GracefulTerminate,
            _ = int.recv() => ShutdownSignal::FastShutdown,
            _ = self.gateway.shutdown_requested() => ShutdownSignal::GracefulTerminate,
        }
    }
}

/// SIGHUP's and SIGUSR1's default action ends the process; registering for them once,
/// before the server starts, turns that off so an early one is harmless. The signal
/// service registers again to act on them.
fn ignore_sighup_until_served() -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("signal setup: {e}"))?;
    rt.block_on(async {
        for kind in [SignalKind::hangup(), SignalKind::user_defined1()] {
            signal(kind)
                .map(drop)
                .map_err(|e| format!("signal setup: {e}"))?;
        }
        Ok(())
    })
}

/// Marks the gateway ready once its listeners answer; on shutdown, turns /ready to 503
/// and ends the process as soon as no request is in flight.
struct Lifecycle {
    gateway: Arc<Gateway>,
    listen: Vec<String>,
    grace: Duration,
}

/// How long to wait for the listeners to come up before reporting ready anyway.
const READY_WAIT: Duration = Duration::from_secs(10);

#[async_trait]
impl BackgroundService for Lifecycle {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let deadline = Instant::now() + READY_WAIT;
        for addr in &self.listen {
            while tokio::net::TcpStream::connect(addr.as_str()).await.is_err()
                && Instant::now() < deadline
                && !*shutdown.borrow()
            {
                tokio::time::sleep(DRAIN_POLL).await;
            }
        }
        self.gateway.set_ready();
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
