//! Test harness: real upstream HTTP servers the test controls, the real fusegate binary,
//! and a plain HTTP client. Everything listens on 127.0.0.1.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A port that was free a moment ago.
/// A loopback port no other caller in this test process has been given, checked free.
///
/// Ports come from a counter below the kernel's ephemeral range (where the test
/// upstreams' `bind(:0)` ports live), each test binary starting at its own offset, so two
/// gateways started at once can never be handed the same port.
pub fn free_port() -> u16 {
    use std::sync::atomic::AtomicU32;
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id() % 40) * 300,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {FIRST} and {}", FIRST + SPAN);
}

/// Polls `cond` every 20 ms until it holds or `limit` passes; panics with `what` then.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

/// A request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: HashMap<String, String>,
}

/// How the test upstream misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answers normally.
    None = 0,
    /// Accepts the request and never answers.
    Hang = 1,
    /// Answers bytes that are not HTTP.
    Garbage = 2,
    /// Sends the headers and part of the body, then closes the connection.
    CloseMidBody = 3,
    /// Sends the headers at once, then the body in ten pieces over two seconds.
    SlowBody = 4,
    /// Answers `101 Switching Protocols`, then echoes every byte until the peer leaves.
    Upgrade = 5,
    /// Answers `304 Not Modified` with the set headers and no body.
    NotModified = 6,
}

/// An HTTP/1.1 upstream whose answers the test sets: status, delay, headers, body size,
/// faults; it counts hits and can be killed and revived on the same port.
pub struct Upstream {
    pub addr: SocketAddr,
    st: Arc<ServeState>,
}

struct ServeState {
    name: String,
    status: AtomicU16,
    delay: AtomicU64,
    hits: AtomicU64,
    connections: AtomicU64,
    seen: Mutex<Vec<Seen>>,
    stop: AtomicBool,
    headers: Mutex<Vec<(String, String)>>,
    body_size: AtomicU64,
    fault: std::sync::atomic::AtomicU8,
    idle_close_ms: AtomicU64,
    idle_closed: AtomicU64,
    closed_after: AtomicU64,
}

impl Upstream {
    /// Starts answering 200 with a small JSON body naming `name`.
    pub fn start(name: &str) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let st = Arc::new(ServeState {
            name: name.to_string(),
            status: AtomicU16::new(200),
            delay: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            seen: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            headers: Mutex::new(Vec::new()),
            body_size: AtomicU64::new(0),
            fault: std::sync::atomic::AtomicU8::new(0),
            idle_close_ms: AtomicU64::new(0),
            idle_closed: AtomicU64::new(0),
            closed_after: AtomicU64::new(0),
        });
        accept_loop(listener, st.clone());
        Upstream { addr, st }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_status(&self, s: u16) {
        self.st.status.store(s, Ordering::SeqCst);
    }

    pub fn set_fault(&self, f: Fault) {
        self.st.fault.store(f as u8, Ordering::SeqCst);
    }

    /// Headers added to every response from now on.
    pub fn set_headers(&self, headers: &[(&str, &str)]) {
        *self.st.headers.lock().unwrap() = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }

    /// Answers bodies of exactly `n` bytes (0: the default small JSON body).
    pub fn set_body_size(&self, n: u64) {
        self.st.body_size.store(n, Ordering::SeqCst);
    }

    pub fn set_delay(&self, d: Duration) {
        self.st.delay.store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// Stops the server: new connections are refused, open ones close at their next
    /// request.
    pub fn kill(&self) {
        self.st.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }

    /// Listens again on the same address after [`Upstream::kill`].
    pub fn revive(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(self.addr) {
                Ok(l) => break l,
                Err(e) if Instant::now() > deadline => panic!("cannot rebind {}: {e}", self.addr),
                Err(_) => thread::sleep(Duration::from_millis(20)),
            }
        };
        self.st.stop.store(false, Ordering::SeqCst);
        accept_loop(listener, self.st.clone());
    }

    /// From now on, a kept-alive connection idle for `d` after an answer is closed by the
    /// upstream (its sending side; it then waits up to 10 s for the peer to close too).
    pub fn set_idle_close(&self, d: Duration) {
        self.st
            .idle_close_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// Connections the upstream closed for being idle.
    pub fn idle_closed(&self) -> u64 {
        self.st.idle_closed.load(Ordering::SeqCst)
    }

    /// Connections closed for being idle whose peer then closed its end too.
    pub fn closed_after_idle_close(&self) -> u64 {
        self.st.closed_after.load(Ordering::SeqCst)
    }

    pub fn hits(&self) -> u64 {
        self.st.hits.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.st.connections.load(Ordering::SeqCst)
    }

    pub fn last_seen(&self) -> Seen {
        self.st
            .seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the upstream saw no request")
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.kill();
    }
}

fn accept_loop(listener: TcpListener, st: Arc<ServeState>) {
    thread::spawn(move || {
        for conn in listener.incoming() {
            if st.stop.load(Ordering::SeqCst) {
                break;
            }
            let Ok(conn) = conn else { continue };
            st.connections.fetch_add(1, Ordering::SeqCst);
            let st = st.clone();
            thread::spawn(move || serve(conn, &st));
        }
    });
}

/// Reads a chunked body to its end; `false` when the connection ends first.
fn read_chunked(reader: &mut impl BufRead) -> bool {
    loop {
        let mut size = String::new();
        if reader.read_line(&mut size).unwrap_or(0) == 0 {
            return false;
        }
        let hex = size.trim().split(';').next().unwrap_or("");
        let Ok(n) = usize::from_str_radix(hex, 16) else {
            return false;
        };
        if n == 0 {
            // Trailer fields, then the empty line.
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return false;
                }
                if line.trim_end().is_empty() {
                    return true;
                }
            }
        }
        if reader.read_exact(&mut vec![0; n + 2]).is_err() {
            return false;
        }
    }
}

/// Reads an HTTP/1 request line and header: method, target, header fields (names
/// lower-cased). `None` when the peer closed first.
pub fn read_head(reader: &mut impl BufRead) -> Option<(String, String, HashMap<String, String>)> {
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            return Some((method, target, headers));
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
}

/// Waits `ms` for the next request; when none starts, closes the sending side, waits for
/// the peer to close its end (counted) and returns `true`.
fn close_when_idle(
    conn: &TcpStream,
    reader: &mut BufReader<TcpStream>,
    ms: u64,
    st: &ServeState,
) -> bool {
    let _ = conn.set_read_timeout(Some(Duration::from_millis(ms)));
    let waiting = reader.fill_buf().map(|b| b.is_empty());
    let _ = conn.set_read_timeout(None);
    match waiting {
        Ok(false) => false,
        Ok(true) => true,
        Err(_) => {
            st.idle_closed.fetch_add(1, Ordering::SeqCst);
            let _ = conn.shutdown(std::net::Shutdown::Write);
            let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
            if matches!(reader.fill_buf().map(|b| b.is_empty()), Ok(true)) {
                st.closed_after.fetch_add(1, Ordering::SeqCst);
            }
            true
        }
    }
}

fn serve(conn: TcpStream, st: &ServeState) {
    let mut reader = BufReader::new(conn.try_clone().expect("clone stream"));
    let mut conn = conn;
    let mut answered = false;
    loop {
        let idle_close = st.idle_close_ms.load(Ordering::SeqCst);
        if answered && idle_close > 0 && close_when_idle(&conn, &mut reader, idle_close, st) {
            return;
        }
        answered = true;
        let Some((method, target, headers)) = read_head(&mut reader) else {
            return;
        };
        let chunked = headers
            .get("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        let complete = if chunked {
            read_chunked(&mut reader)
        } else {
            let len: usize = headers
                .get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            reader.read_exact(&mut vec![0; len]).is_ok()
        };
        // A request counts as a hit once its whole body has arrived.
        if !complete || st.stop.load(Ordering::SeqCst) {
            return;
        }
        let n = st.hits.fetch_add(1, Ordering::SeqCst) + 1;
        let accept = headers.get("accept").cloned().unwrap_or_default();
        st.seen.lock().unwrap().push(Seen {
            method: method.clone(),
            target: target.clone(),
            headers,
        });
        let d = st.delay.load(Ordering::SeqCst);
        if d > 0 {
            thread::sleep(Duration::from_millis(d));
        }
        match st.fault.load(Ordering::SeqCst) {
            1 => {
                // Hang: hold the connection until the server stops or the peer leaves.
                while !st.stop.load(Ordering::SeqCst) {
                    thread::sleep(Duration::from_millis(50));
                }
                return;
            }
            2 => {
                let _ = conn.write_all(b"this is not HTTP\r\n\r\n");
                return;
            }
            3 => {
                let _ =
                    conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n{\"partial\":");
                return;
            }
            4 => {
                if conn
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
                    .is_err()
                {
                    return;
                }
                for _ in 0..10 {
                    thread::sleep(Duration::from_millis(200));
                    if conn.write_all(b"x").is_err() {
                        return;
                    }
                }
                continue;
            }
            5 => {
                let _ = conn.write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
                );
                let mut buf = [0u8; 1024];
                loop {
                    match reader.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if conn.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
            6 => {
                let mut head = String::from("HTTP/1.1 304 Not Modified\r\n");
                for (k, v) in st.headers.lock().unwrap().iter() {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                if conn.write_all(head.as_bytes()).is_err() {
                    return;
                }
                continue;
            }
            _ => {}
        }
        let code = st.status.load(Ordering::SeqCst);
        let size = st.body_size.load(Ordering::SeqCst) as usize;
        let body = if size > 0 {
            "x".repeat(size)
        } else {
            format!(
                r#"{{"upstream":"{}","target":"{target}","accept":"{accept}","n":{n}}}"#,
                st.name
            )
        };
        let mut extra = String::new();
        for (k, v) in st.headers.lock().unwrap().iter() {
            extra.push_str(&format!("{k}: {v}\r\n"));
        }
        let resp = format!(
            "HTTP/1.1 {code} Status\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{}",
            body.len(),
            if method == "HEAD" { "" } else { &body }
        );
        if conn.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

/// A running `fusegate run` process with a config written to a temp dir.
pub struct Gateway {
    pub child: Child,
    pub port: u16,
    pub admin_port: u16,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    /// The `[server]` and `[admin]` part of the config, kept by rewrites.
    pub header: String,
    stderr_path: PathBuf,
    stdout_path: PathBuf,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_fusegate")
}

impl Gateway {
    /// Starts fusegate with `routes_toml` appended to a `[server]` section on a free port,
    /// and waits until it accepts connections.
    pub fn start(routes_toml: &str) -> Gateway {
        Self::start_with_env(routes_toml, &[])
    }

    pub fn start_with_env(routes_toml: &str, env: &[(&str, &str)]) -> Gateway {
        Self::start_full("", routes_toml, env)
    }

    /// `server_extra` is added to the `[server]` section (e.g. `h2c = true`).
    pub fn start_server(server_extra: &str, routes_toml: &str) -> Gateway {
        Self::launch(server_extra, "", routes_toml, &[])
    }

    /// `admin_extra` is added to the `[admin]` section (e.g. `token = "s3cret"`).
    pub fn start_full(admin_extra: &str, routes_toml: &str, env: &[(&str, &str)]) -> Gateway {
        Self::launch("", admin_extra, routes_toml, env)
    }

    fn launch(
        server_extra: &str,
        admin_extra: &str,
        routes_toml: &str,
        env: &[(&str, &str)],
    ) -> Gateway {
        let port = free_port();
        let admin = free_port();
        let header = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nthreads = 2\ngrace_period = \"5s\"\n{server_extra}\n\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n{admin_extra}\n\n"
        );
        let toml = format!("{header}{routes_toml}");
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("fusegate.toml");
        std::fs::write(&config_path, toml).expect("write config");
        let stderr_path = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let stdout_path = dir.path().join("stdout.log");
        let stdout = std::fs::File::create(&stdout_path).expect("stdout file");
        let mut cmd = Command::new(bin());
        cmd.arg("run")
            .arg("-c")
            .arg(&config_path)
            .env_remove("FUSEGATE_CONFIG")
            .stdout(stdout)
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn fusegate");
        let mut g = Gateway {
            child,
            port,
            admin_port: admin,
            dir,
            config_path,
            header,
            stderr_path,
            stdout_path,
        };
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let admin_addr: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let up =
                |a: &SocketAddr| TcpStream::connect_timeout(a, Duration::from_millis(200)).is_ok();
            if up(&addr) && up(&admin_addr) {
                break;
            }
            if let Ok(Some(status)) = g.child.try_wait() {
                panic!(
                    "fusegate exited with {status} before listening:\n{}",
                    g.stderr()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "fusegate did not listen on {addr} within 15 s:\n{}",
                    g.stderr()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        g
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn get(&self, path: &str) -> Resp {
        get(&self.url(path))
    }

    /// Rewrites the config file in place with new routes (same listeners).
    pub fn rewrite(&self, routes_toml: &str) {
        std::fs::write(&self.config_path, format!("{}{routes_toml}", self.header))
            .expect("rewrite config");
    }

    /// Writes the new config to a temp file and renames it over the config, as editors do.
    pub fn rewrite_by_rename(&self, routes_toml: &str) {
        let tmp = self.dir.path().join(".fusegate.toml.swp");
        std::fs::write(&tmp, format!("{}{routes_toml}", self.header)).expect("write temp");
        std::fs::rename(&tmp, &self.config_path).expect("rename over config");
    }

    /// A route's breaker as the admin port reports it.
    pub fn breaker(&self, route: &str) -> serde_json::Value {
        self.admin("GET", &format!("/breakers/{route}")).json()
    }

    /// The value of the /metrics line that starts with `series` (name and labels as
    /// written, e.g. `fusegate_client_errors_total{reason="aborted"}`); 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        self.admin("GET", "/metrics")
            .body
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Waits until a route's breaker is in `state`. Outcomes are recorded when a request
    /// has completed, just after its response went out, so a test that has read a
    /// response waits for its outcome this way.
    pub fn wait_state(&self, route: &str, state: &str) {
        wait_until(
            &format!("breaker {route} to be {state}"),
            Duration::from_secs(10),
            || self.breaker(route)["state"] == state,
        );
    }

    /// Waits until a route's window holds `n` outcomes.
    pub fn wait_window(&self, route: &str, n: u64) {
        wait_until(
            &format!("{n} outcomes in the window of {route}"),
            Duration::from_secs(10),
            || self.breaker(route)["window"]["total"].as_u64() == Some(n),
        );
    }

    /// The config generation in force, from /info.
    pub fn generation(&self) -> u64 {
        self.admin("GET", "/info").json()["config_generation"]
            .as_u64()
            .expect("config_generation")
    }

    /// Waits until the config generation reaches `n`.
    pub fn wait_generation(&self, n: u64) {
        wait_until(
            &format!("config generation {n}"),
            Duration::from_secs(10),
            || self.generation() >= n,
        );
        assert_eq!(self.generation(), n, "one reload per change");
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// A request to the admin port.
    pub fn admin(&self, method: &str, path: &str) -> Resp {
        request(method, &self.admin_url(path), &[])
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    pub fn child_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} failed");
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `fusegate check -c path`: exit code and standard error.
pub fn check_config(path: &std::path::Path) -> (i32, String) {
    let out = Command::new(bin())
        .args(["check", "-c"])
        .arg(path)
        .output()
        .expect("run fusegate check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A response, whatever its status.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .redirects(0)
        .build()
}

fn to_resp(r: ureq::Response) -> Resp {
    let status = r.status();
    let headers = r
        .headers_names()
        .into_iter()
        .filter_map(|n| {
            r.header(&n)
                .map(|v| (n.to_ascii_lowercase(), v.to_string()))
        })
        .collect();
    let body = r.into_string().unwrap_or_default();
    Resp {
        status,
        headers,
        body,
    }
}

pub fn request(method: &str, url: &str, headers: &[(&str, &str)]) -> Resp {
    send(method, url, headers, None)
}

/// A request with an optional body, whatever the answer's status.
pub fn send(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&str>) -> Resp {
    let mut req = agent().request(method, url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let result = match body {
        Some(b) => req.send_string(b),
        None => req.call(),
    };
    match result {
        Ok(r) => to_resp(r),
        Err(ureq::Error::Status(_, r)) => to_resp(r),
        Err(e) => panic!("{method} {url} failed: {e}"),
    }
}

pub fn get(url: &str) -> Resp {
    request("GET", url, &[])
}

/// Sends a request line as written (no client-side path normalisation) and returns the
/// status code and the whole response text.
pub fn raw_get(port: u16, target: &str) -> (u16, String) {
    get_from("127.0.0.1", port, target)
}

/// A GET sent from a chosen loopback source address (e.g. 127.0.0.2); returns the status
/// and the whole response text.
pub fn get_from(source: &str, port: u16, target: &str) -> (u16, String) {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    let src: SocketAddr = format!("{source}:0").parse().expect("source address");
    sock.bind(&src.into()).expect("bind source address");
    let dst: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    sock.connect(&dst.into()).expect("connect");
    let request = format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    exchange(sock.into(), request.as_bytes())
}

/// Sends `request` exactly as given and returns the status and the whole response text
/// (read until the gateway closes the connection).
pub fn raw_request(port: u16, request: &[u8]) -> (u16, String) {
    exchange(
        TcpStream::connect(("127.0.0.1", port)).expect("connect"),
        request,
    )
}

/// Writes `request` on `s`, reads until the peer closes, and parses the status.
fn exchange(mut s: TcpStream, request: &[u8]) -> (u16, String) {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).expect("send request");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out).into_owned();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out)
}

/// Steady traffic: `clients` threads each calling `request` until [`Traffic::finish`]
/// (and at most `max_each` times, so the load always stops by itself).
pub struct Traffic<R> {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    clients: Vec<thread::JoinHandle<Vec<R>>>,
}

impl<R: Send + 'static> Traffic<R> {
    pub fn start<F>(clients: usize, max_each: usize, request: F) -> Traffic<R>
    where
        F: Fn() -> R + Send + Sync + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let request = Arc::new(request);
        let clients = (0..clients)
            .map(|_| {
                let (stop, answered, request) = (stop.clone(), answered.clone(), request.clone());
                thread::spawn(move || {
                    let mut out = Vec::new();
                    while out.len() < max_each && !stop.load(Ordering::SeqCst) {
                        out.push(request());
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                    out
                })
            })
            .collect();
        Traffic {
            stop,
            answered,
            clients,
        }
    }

    /// Requests answered so far, all clients together.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::SeqCst)
    }

    /// Waits (at most 30 s) for `n` more answers.
    pub fn wait_more(&self, n: u64) {
        let target = self.answered() + n;
        wait_until(
            &format!("{n} more answers"),
            Duration::from_secs(30),
            || self.answered() >= target,
        );
    }

    /// Stops the clients and returns every answer.
    pub fn finish(self) -> Vec<R> {
        self.stop.store(true, Ordering::SeqCst);
        self.clients
            .into_iter()
            .flat_map(|c| c.join().expect("traffic client"))
            .collect()
    }
}

/// A real `nats-server` on a loopback port, with the shipped `config/nats-server.conf`
/// users. Panics when nats-server cannot be started: the test command installs it.
pub struct Nats {
    pub port: u16,
    child: Option<Child>,
    /// The server's flags besides address and port.
    args: Vec<String>,
}

impl Nats {
    /// With the shipped `config/nats-server.conf` (its users and permissions).
    pub fn start() -> Nats {
        let conf = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/nats-server.conf");
        Self::start_args(&["-c", &conf.display().to_string()])
    }

    /// With these flags instead (`-js -sd DIR`, `--auth TOKEN`, TLS or cluster flags).
    pub fn start_args(args: &[&str]) -> Nats {
        let mut n = Nats {
            port: free_port(),
            child: None,
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        n.restart();
        n
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port.
    pub fn restart(&mut self) {
        let child = Command::new("nats-server")
            .args(&self.args)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start nats-server ({e}); `bash scripts/setup.sh` installs it")
            });
        self.child = Some(child);
        let port = self.port;
        wait_until("nats-server to listen", Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `fusegate ctl` with the given arguments; returns exit code, stdout, stderr.
pub fn ctl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .arg("ctl")
        .args(args)
        .env_remove("FUSEGATE_CONFIG")
        .args(["-c", "/nonexistent/fusegate.toml"])
        .output()
        .expect("run fusegate ctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
