//! The dashboard page in a real browser: headless Chromium driven over WebDriver
//! (chromedriver + fantoccini). The page shows every route, a tripped breaker's tile
//! turns open, the pause button pauses the route (asking for the admin token first), the
//! filter narrows 1,000 routes, and the fleet page shows both gateways of a fleet.
//!
//! The screenshots in `docs/` are taken here: run with `DASHBOARD_SCREENSHOTS=docs` to
//! write them there (otherwise they go to the test's temporary directory).

mod common;

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// chromedriver and one headless Chromium session.
struct Browser {
    driver: Child,
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
}

impl Browser {
    fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start chromedriver ({e}); `bash scripts/setup.sh` installs chromium-driver")
            });
        wait_until("chromedriver to listen", Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1400,1000"]
            }
        });
        let Value::Object(caps) = caps else {
            panic!("capabilities are an object")
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = rt
            .block_on(
                ClientBuilder::new(connector)
                    .capabilities(caps)
                    .connect(&format!("http://127.0.0.1:{port}")),
            )
            .unwrap_or_else(|e| panic!("cannot start headless Chromium: {e}"));
        Browser {
            driver,
            rt,
            client: Some(client),
        }
    }

    fn c(&self) -> &Client {
        self.client.as_ref().expect("browser session")
    }

    fn goto(&self, url: &str) {
        self.rt.block_on(self.c().goto(url)).expect("open the page");
    }

    /// Runs `script` (a function body) in the page and returns its value.
    fn js(&self, script: &str) -> Value {
        self.rt
            .block_on(self.c().execute(script, Vec::new()))
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Polls `script` until it returns `true`.
    fn wait_js(&self, what: &str, limit: Duration, script: &str) {
        let deadline = Instant::now() + limit;
        while self.js(script) != Value::Bool(true) {
            if Instant::now() > deadline {
                panic!("the page did not show {what} within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn click(&self, css: &str) {
        self.rt
            .block_on(async { self.c().find(Locator::Css(css)).await?.click().await })
            .unwrap_or_else(|e| panic!("cannot click {css}: {e}"));
    }

    fn type_into(&self, css: &str, text: &str) {
        self.rt
            .block_on(async {
                self.c()
                    .find(Locator::Css(css))
                    .await?
                    .send_keys(text)
                    .await
            })
            .unwrap_or_else(|e| panic!("cannot type into {css}: {e}"));
    }

    /// Empties the filter box, as deleting its text would.
    fn clear_filter(&self) {
        self.js("const f = document.getElementById('filter'); f.value = ''; f.dispatchEvent(new Event('input')); return true;");
    }

    /// A PNG of the page, written to `$DASHBOARD_SCREENSHOTS/<name>` or else `dir/<name>`.
    fn screenshot(&self, dir: &std::path::Path, name: &str) -> std::path::PathBuf {
        let png = self
            .rt
            .block_on(self.c().screenshot())
            .expect("take a screenshot");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let dir = std::env::var("DASHBOARD_SCREENSHOTS")
            .map(|d| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(d))
            .unwrap_or_else(|_| dir.to_path_buf());
        let path = dir.join(name);
        std::fs::write(&path, png).expect("write the screenshot");
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            let _ = self.rt.block_on(c.close());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `document.querySelector(css).dataset.state`, as a script.
fn state_of(route: &str) -> String {
    format!("const t = document.querySelector('.tile[data-route=\"{route}\"]'); return t ? t.dataset.state : null;")
}

#[test]
fn the_dashboard_shows_routes_turns_a_tripped_tile_open_and_pauses_a_route() {
    let healthy = Upstream::start("ok");
    let failing = Upstream::start("bad");
    failing.set_status(500);
    let gw = Gateway::start_full(
        "token = \"s3cret\"",
        &format!(
            "[routes.catalog]\nupstreams = [\"{ok}\"]\n\n[routes.search]\nupstreams = [\"{bad}\"]\nbreaker = {{ volume_threshold = 4, reset_timeout = \"60s\" }}\n\n[routes.users]\nupstreams = [\"{ok}\"]\n\n[routes.orders]\nupstreams = [\"{ok}\"]\n",
            ok = healthy.url(),
            bad = failing.url()
        ),
        &[],
    );
    let browser = Browser::start();
    browser.goto(&gw.admin_url("/dashboard"));
    browser.wait_js(
        "a tile per route",
        Duration::from_secs(10),
        "return document.querySelectorAll('.tile').length === 4 && document.getElementById('status').textContent.trim() === 'live';",
    );
    assert_eq!(browser.js(&state_of("search")), "closed");

    // Traffic, and a breaker that trips: its tile turns open and comes first.
    for i in 0..20 {
        assert_eq!(gw.get(&format!("/api/catalog/{i}")).status, 200);
    }
    for _ in 0..4 {
        assert_eq!(gw.get("/api/search/x").status, 500);
    }
    gw.wait_state("search", "open");
    browser.wait_js(
        "the search tile open and first",
        Duration::from_secs(5),
        "const t = document.querySelector('.tile'); return t.dataset.route === 'search' && t.dataset.state === 'open';",
    );
    assert!(browser
        .js("return document.querySelector('.tile[data-route=\"search\"]').textContent;")
        .as_str()
        .is_some_and(|t| t.contains("open")));

    // Pause a route: the page asks for the admin token once, then acts.
    browser.click(".tile[data-route=\"users\"] button[data-action=\"pause\"]");
    browser.wait_js(
        "the token form",
        Duration::from_secs(5),
        "const a = document.getElementById('auth'); return !!a && !a.hidden && getComputedStyle(a).display !== 'none';",
    );
    browser.type_into("#token", "s3cret");
    browser.click("#token-ok");
    wait_until("users to be paused", Duration::from_secs(5), || {
        gw.breaker("users")["state"] == "forced_open"
    });
    browser.wait_js(
        "the users tile paused",
        Duration::from_secs(5),
        "return document.querySelector('.tile[data-route=\"users\"]').dataset.state === 'forced_open';",
    );
    // The token is never put in a URL.
    assert!(!browser
        .js("return location.href;")
        .as_str()
        .unwrap_or("")
        .contains("s3cret"));

    // The filter narrows the tiles.
    browser.type_into("#filter", "ord");
    browser.wait_js(
        "only orders shown",
        Duration::from_secs(5),
        "return [...document.querySelectorAll('.tile')].filter(t => !t.hidden).map(t => t.dataset.route).join() === 'orders';",
    );
    browser.clear_filter();
    browser.wait_js(
        "a sparkline with points",
        Duration::from_secs(5),
        "const p = document.querySelector('.tile[data-route=\"catalog\"] svg polyline'); return !!p && p.getAttribute('points').split(' ').length > 1;",
    );
    // Live traffic (bounded: at most 300 requests in 6 s): rates and latencies show.
    let port = gw.port;
    let traffic = std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(6);
        for i in 0..300 {
            if Instant::now() > until {
                break;
            }
            let path = if i % 3 == 0 { "orders" } else { "catalog" };
            let _ = raw_get(port, &format!("/api/{path}/{i}"));
            std::thread::sleep(Duration::from_millis(15));
        }
    });
    browser.wait_js(
        "catalog's rate and latency",
        Duration::from_secs(6),
        "const t = document.querySelector('.tile[data-route=\"catalog\"]'); return t.querySelector('.rps').textContent.trim() !== '0' && t.querySelector('.p99').textContent.trim() !== '—';",
    );
    let shot = browser.screenshot(gw.dir.path(), "dashboard.png");
    traffic.join().expect("traffic thread");
    assert!(std::fs::metadata(shot).is_ok_and(|m| m.len() > 10_000));
}

#[test]
fn a_thousand_routes_stay_usable() {
    let up = Upstream::start("k");
    let mut routes = String::new();
    for i in 0..1000 {
        routes.push_str(&format!("[routes.r{i}]\nupstreams = [\"{}\"]\n", up.url()));
    }
    let gw = Gateway::start(&routes);
    let browser = Browser::start();
    browser.goto(&gw.admin_url("/dashboard"));
    browser.wait_js(
        "1,000 tiles",
        Duration::from_secs(20),
        "return document.querySelectorAll('.tile').length === 1000;",
    );
    browser.type_into("#filter", "r99");
    browser.wait_js(
        "the 11 matching tiles",
        Duration::from_secs(10),
        "return [...document.querySelectorAll('.tile')].filter(t => !t.hidden).length === 11;",
    );
    // A paused route goes first among 1,000.
    assert_eq!(gw.admin("POST", "/breakers/r500/pause").status, 200);
    browser.clear_filter();
    browser.wait_js(
        "r500 first",
        Duration::from_secs(10),
        "return document.querySelector('.tile').dataset.route === 'r500';",
    );
}

#[test]
fn the_fleet_page_shows_both_gateways() {
    let nats = Nats::start();
    let up = Upstream::start("f");
    let gateway = |identity: &str, dc: &str| {
        Gateway::start(&format!(
            "[nats]\nurl = \"{}\"\nuser = \"gateway\"\npassword = \"gateway-secret\"\ncluster = \"web\"\nidentity = \"{identity}\"\nsnapshot_interval = \"500ms\"\nfacts = {{ dc = \"{dc}\" }}\n\n[routes.catalog]\nupstreams = [\"{}\"]\n\n[routes.search]\nupstreams = [\"{}\"]\n",
            nats.url(),
            up.url(),
            up.url()
        ))
    };
    let gw1 = gateway("gw-1", "DC1");
    let _gw2 = gateway("gw-2", "DC2");
    let port = free_port();
    let mut dash = Command::new(bin())
        .args(["dashboard", "--nats", &nats.url(), "--cluster", "web"])
        .args(["--user", "ops", "--password", "ops-secret"])
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "-c",
            "/nonexistent.toml",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn fusegate dashboard");
    wait_until("the fleet dashboard", Duration::from_secs(15), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert_eq!(gw1.admin("POST", "/breakers/search/pause").status, 200);
    let browser = Browser::start();
    browser.goto(&format!("http://127.0.0.1:{port}/"));
    browser.wait_js(
        "two gateways",
        Duration::from_secs(15),
        "const g = document.getElementById('gateways'); return !!g && g.textContent.trim() === '2' && document.querySelectorAll('.tile').length === 2;",
    );
    // The paused route of one gateway: worst first, as a count of the fleet.
    browser.wait_js(
        "search first, 1/2 forced_open",
        Duration::from_secs(5),
        "const t = document.querySelector('.tile'); return t.dataset.route === 'search' && t.dataset.state === 'forced_open' && t.querySelector('.state').textContent.includes('1/2');",
    );
    // The drill-down lists each gateway.
    browser.click(".tile[data-route=\"search\"] .gw-toggle");
    browser.wait_js(
        "both gateways in the drill-down",
        Duration::from_secs(5),
        "return [...document.querySelectorAll('.tile[data-route=\"search\"] .gw')].map(g => g.dataset.identity).sort().join() === 'gw-1,gw-2';",
    );
    let _ = browser.screenshot(gw1.dir.path(), "dashboard-fleet.png");
    let _ = dash.kill();
    let _ = dash.wait();
}
