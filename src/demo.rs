//! `fusegate demo`: the gateway on 127.0.0.1:8080 with two upstreams served by the same
//! process — `catalog` (always healthy) and `search` (fails about half its requests) — so
//! a breaker can be watched opening and recovering with nothing but curl.

use crate::config::{BreakerConfig, Config, Dur, Listen, RouteConfig};
use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use pingora::services::listening::Service;
use std::sync::atomic::{AtomicU64, Ordering};

pub const PROXY_ADDR: &str = "127.0.0.1:8080";
pub const ADMIN_ADDR: &str = "127.0.0.1:9090";
pub const CATALOG_ADDR: &str = "127.0.0.1:7101";
pub const SEARCH_ADDR: &str = "127.0.0.1:7102";

/// The demo's config: two routes, with a short reset timeout so recovery is quick to see.
pub fn config() -> Config {
    let mut c = Config::default();
    c.server.listen = Listen::One(PROXY_ADDR.into());
    c.server.grace_period = Dur::from_secs(1);
    c.admin.listen = ADMIN_ADDR.into();
    c.defaults.breaker = BreakerConfig {
        volume_threshold: Some(10),
        error_threshold_percentage: Some(30),
        reset_timeout: Some(Dur::from_secs(10)),
        timeout: Some(Dur::from_secs(2)),
        ..BreakerConfig::default()
    };
    for (name, addr) in [("catalog", CATALOG_ADDR), ("search", SEARCH_ADDR)] {
        c.routes.insert(
            name.into(),
            RouteConfig {
                upstreams: vec![format!("http://{addr}")],
                ..RouteConfig::default()
            },
        );
    }
    c
}

/// The demo upstream services, to add to the gateway's server.
pub fn upstream_services() -> Vec<Service<pingora::apps::http_app::HttpServer<DemoUpstream>>> {
    [
        (CATALOG_ADDR, DemoUpstream::catalog()),
        (SEARCH_ADDR, DemoUpstream::search()),
    ]
    .into_iter()
    .map(|(addr, app)| {
        let name = format!("demo upstream {}", app.name);
        let mut svc = Service::new(name, pingora::apps::http_app::HttpServer::new_app(app));
        svc.add_tcp(addr);
        svc
    })
    .collect()
}

/// What `fusegate demo` prints once it is up.
pub fn guide() -> String {
    format!(
        r#"fusegate demo is running: open the dashboard at http://{ADMIN_ADDR}/dashboard
  gateway   http://{PROXY_ADDR}   (routes /api/catalog and /api/search)
  admin     http://{ADMIN_ADDR}
  catalog   http://{CATALOG_ADDR}  always answers 200
  search    http://{SEARCH_ADDR}  answers 500 about half the time
Breakers open at >= 30% failures over >= 10 requests in 10 s, and try again after 10 s.

1. A healthy route:
     curl -i http://{PROXY_ADDR}/api/catalog/items
2. Send 20 requests to the flaky route and watch its breaker open (200s and 500s, then 503s):
     for i in $(seq 20); do curl -s -o /dev/null -w '%{{http_code}}\n' http://{PROXY_ADDR}/api/search?q=$i; done
3. While it is open, requests are answered at once without reaching search:
     curl -i http://{PROXY_ADDR}/api/search?q=x
   (503, Retry-After, X-Fusegate-Breaker: open, {{"error":"circuit_open",...}})
4. Wait 10 s: the next request is a half-open probe. If it succeeds the breaker closes;
   if it fails it opens for another 10 s:
     sleep 10; curl -i http://{PROXY_ADDR}/api/search?q=probe
5. catalog was never affected:
     curl -i http://{PROXY_ADDR}/api/catalog/items
6. Every breaker's state, window and rejections, from the admin port:
     curl -s http://{ADMIN_ADDR}/breakers/search
     cargo run -- status
7. Pause a route by hand (503 route_paused), then resume it:
     curl -s -X POST http://{ADMIN_ADDR}/breakers/catalog/pause
     curl -i http://{PROXY_ADDR}/api/catalog/items
     curl -s -X POST http://{ADMIN_ADDR}/breakers/catalog/resume

Press Ctrl-C to stop.
"#
    )
}

/// A built-in upstream that answers JSON and fails a share of its requests.
pub struct DemoUpstream {
    name: &'static str,
    /// Fails when a random draw in 0..100 is below this.
    failure_percent: u32,
    served: AtomicU64,
}

impl DemoUpstream {
    pub fn catalog() -> Self {
        DemoUpstream {
            name: "catalog",
            failure_percent: 0,
            served: AtomicU64::new(0),
        }
    }

    pub fn search() -> Self {
        DemoUpstream {
            name: "search",
            failure_percent: 50,
            served: AtomicU64::new(0),
        }
    }
}

#[async_trait]
impl ServeHttp for DemoUpstream {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let n = self.served.fetch_add(1, Ordering::Relaxed) + 1;
        let path = session.req_header().uri.path().to_string();
        let fail = fastrand::u32(0..100) < self.failure_percent;
        let (status, body) = if fail {
            (
                500,
                format!(
                    r#"{{"upstream":"{}","error":"simulated failure","served":{n}}}"#,
                    self.name
                ),
            )
        } else {
            let path = serde_json::to_string(&path).unwrap_or_default();
            (
                200,
                format!(
                    r#"{{"upstream":"{}","path":{path},"served":{n}}}"#,
                    self.name
                ),
            )
        };
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .header("content-length", body.len())
            .body(body.into_bytes())
            .unwrap_or_else(|_| Response::new(Vec::new()))
    }
}
