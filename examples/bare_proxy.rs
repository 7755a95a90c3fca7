//! The reference for fusegate's load benchmark: a pingora proxy with no features at all.
//! Every request goes to one upstream over pooled connections.
//!
//!   cargo run --release --example bare_proxy -- LISTEN UPSTREAM THREADS
//!   cargo run --release --example bare_proxy -- 127.0.0.1:18003 127.0.0.1:18001 1

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::ServerConf;

/// `--features alloc-count`: the system allocator, counting (`benches/alloc.sh`).
#[cfg(feature = "alloc-count")]
#[path = "../src/alloc_count.rs"]
mod alloc_count;
#[cfg(feature = "alloc-count")]
#[global_allocator]
static ALLOCATOR: alloc_count::Counting = alloc_count::Counting::new();

struct Bare {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream.as_str(),
            false,
            String::new(),
        )))
    }
}

fn main() {
    #[cfg(feature = "alloc-count")]
    alloc_count::report_from_env(&ALLOCATOR);
    let args: Vec<String> = std::env::args().collect();
    let (listen, upstream, threads) = match args.as_slice() {
        [_, l, u, t] => (l.clone(), u.clone(), t.parse().unwrap_or(1)),
        _ => {
            eprintln!("usage: bare_proxy LISTEN UPSTREAM THREADS");
            std::process::exit(2);
        }
    };
    let conf = ServerConf {
        threads,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, Bare { upstream });
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    server.run_forever();
}
