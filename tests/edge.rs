//! The edge (SPEC §12): TLS listeners with SNI and reloadable certificates, HTTP/2 over
//! TLS and h2c, https upstreams with a CA of their own and client certificates, gRPC
//! outcomes and gRPC-shaped rejections. Real clients and servers: curl (HTTP/2 and TLS),
//! tonic (gRPC), the h2 crate (a gRPC upstream that breaks the protocol), OpenSSL.

mod common;

use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
};
use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// A certificate authority made for one test.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Each CA its own name, apart from its leaves'.
        static SERIAL: AtomicU64 = AtomicU64::new(0);
        let n = SERIAL.fetch_add(1, Ordering::SeqCst);
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("fusegate test CA {n}"));
        let pem = params.self_signed(&key).expect("CA certificate").pem();
        Ca {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// A certificate for `names` and its key, as PEM.
    fn leaf(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().expect("leaf key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("leaf params");
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, names[0].clone());
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        (cert.pem(), key.serialize_pem())
    }

    /// Writes a leaf for `names` as `<stem>.pem` and `<stem>.key` under `dir`.
    fn write_leaf(&self, dir: &Path, stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let (cert, key) = self.leaf(names);
        let (c, k) = (
            dir.join(format!("{stem}.pem")),
            dir.join(format!("{stem}.key")),
        );
        std::fs::write(&c, cert).expect("write cert");
        std::fs::write(&k, key).expect("write key");
        (c, k)
    }

    fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, &self.pem).expect("write CA");
        p
    }
}

/// What curl got: status (0 when no HTTP answer), HTTP version, body.
struct Curl {
    status: u16,
    version: String,
    body: String,
}

/// Runs curl with `args` and the URL last; never retries.
fn curl(args: &[&str], url: &str) -> Curl {
    let out = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code} %{http_version}",
        ])
        .args(args)
        .arg(url)
        .output()
        .expect("run curl (scripts/setup.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    let mut tail = tail.split_whitespace();
    Curl {
        status: tail.next().and_then(|s| s.parse().ok()).unwrap_or(0),
        version: tail.next().unwrap_or("").to_string(),
        body: body.to_string(),
    }
}

/// `--resolve` for `host` on the TLS port, and trust in `ca`.
fn tls_args(host: &str, port: u16, ca: &Path) -> Vec<String> {
    vec![
        "--resolve".into(),
        format!("{host}:{port}:127.0.0.1"),
        "--cacert".into(),
        ca.display().to_string(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn toml_path(p: &Path) -> String {
    p.display().to_string()
}

/// A gateway with one route `name` and a TLS listener whose certificate (for `gw.test`)
/// a CA of the test signed; `tls_extra` goes into `[server.tls]`.
struct TlsGateway {
    gw: Gateway,
    up: Upstream,
    tls_port: u16,
    ca_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsGateway {
    fn start(name: &str, tls_extra: &str) -> TlsGateway {
        let up = Upstream::start(name);
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new();
        let ca_file = ca.write(dir.path(), "ca.pem");
        let (cert, key) = ca.write_leaf(dir.path(), "gw", &["gw.test"]);
        let tls_port = free_port();
        let gw = Gateway::start(&format!(
            "[server.tls]\nlisten = [\"127.0.0.1:{tls_port}\"]\ncert = \"{}\"\nkey = \"{}\"\n{tls_extra}\n\n[routes.{name}]\nupstreams = [\"{}\"]\n",
            toml_path(&cert),
            toml_path(&key),
            up.url()
        ));
        TlsGateway {
            gw,
            up,
            tls_port,
            ca_file,
            _dir: dir,
        }
    }

    /// curl's `--resolve` and `--cacert` for `gw.test` on the TLS port.
    fn args(&self) -> Vec<String> {
        tls_args("gw.test", self.tls_port, &self.ca_file)
    }
}

#[test]
fn tls_listener_serves_h2_and_http1_and_says_https_upstream() {
    let t = TlsGateway::start("t", "");
    let (gw, up, tls_port) = (&t.gw, &t.up, t.tls_port);
    let url = format!("https://gw.test:{tls_port}/api/t/x");
    let args = t.args();

    // HTTP/2 through ALPN; a client's own X-Forwarded-Proto is replaced.
    let mut h2 = strs(&args);
    h2.extend(["-H", "X-Forwarded-Proto: http"]);
    let r = curl(&h2, &url);
    assert_eq!((r.status, r.version.as_str()), (200, "2"), "{}", r.body);
    assert_eq!(up.last_seen().headers["x-forwarded-proto"], "https");

    let mut h1 = strs(&args);
    h1.push("--http1.1");
    let r = curl(&h1, &url);
    assert_eq!((r.status, r.version.as_str()), (200, "1.1"));
    assert_eq!(up.last_seen().headers["x-forwarded-proto"], "https");

    // The plain port still says http.
    assert_eq!(gw.get("/api/t/y").status, 200);
    assert_eq!(up.last_seen().headers["x-forwarded-proto"], "http");

    gw.wait_window("t", 3);
    assert_eq!(
        gw.metric(r#"fusegate_tls_handshakes_total{result="ok"}"#),
        2.0
    );
    assert_eq!(
        gw.metric(r#"fusegate_requests_total{code="200",proto="h2",route="t"}"#),
        1.0
    );
    assert_eq!(
        gw.metric(r#"fusegate_requests_total{code="200",proto="http1",route="t"}"#),
        2.0
    );
}

#[test]
fn sni_picks_the_certificate_and_a_reload_swaps_them() {
    let up = Upstream::start("s");
    let dir = tempfile::tempdir().unwrap();
    let (ca_a, ca_b, ca_c) = (Ca::new(), Ca::new(), Ca::new());
    let (a_file, b_file, c_file) = (
        ca_a.write(dir.path(), "a.pem"),
        ca_b.write(dir.path(), "b.pem"),
        ca_c.write(dir.path(), "c.pem"),
    );
    let (cert, key) = ca_a.write_leaf(dir.path(), "default", &["gw.test"]);
    let (api_cert, api_key) = ca_b.write_leaf(dir.path(), "api", &["api.test", "*.svc.test"]);
    let tls_port = free_port();
    let gw = Gateway::start(&format!(
        "[server.tls]\nlisten = [\"127.0.0.1:{tls_port}\"]\ncert = \"{}\"\nkey = \"{}\"\nsni = [{{ cert = \"{}\", key = \"{}\" }}]\n\n[routes.s]\nupstreams = [\"{}\"]\n",
        toml_path(&cert),
        toml_path(&key),
        toml_path(&api_cert),
        toml_path(&api_key),
        up.url()
    ));
    let get = |host: &str, ca: &Path| {
        let args = tls_args(host, tls_port, ca);
        curl(&strs(&args), &format!("https://{host}:{tls_port}/api/s/x")).status
    };
    // Each name gets the certificate its CA signed; an unknown name the default.
    assert_eq!(get("gw.test", &a_file), 200);
    assert_eq!(get("api.test", &b_file), 200);
    assert_eq!(get("x.svc.test", &b_file), 200);
    assert_eq!(
        get("api.test", &a_file),
        0,
        "api.test must not get the default"
    );
    assert_eq!(get("other.test", &b_file), 0);

    // New files, reloaded: new handshakes use them.
    ca_c.write_leaf(dir.path(), "default", &["gw.test"]);
    let r = gw.admin("POST", "/reload");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(get("gw.test", &c_file), 200);
    assert_eq!(get("gw.test", &a_file), 0);

    // A key that does not match: the reload fails as a whole and names the key; the
    // certificates in force stay.
    let (_, other_key) = ca_a.leaf(&["gw.test"]);
    std::fs::write(&key, other_key).unwrap();
    let r = gw.admin("POST", "/reload");
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("server.tls.key"), "{}", r.body);
    assert_eq!(get("gw.test", &c_file), 200);
    assert_eq!(get("api.test", &b_file), 200);
}

#[test]
fn bad_tls_settings_are_named_at_check_and_start() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let (cert, key) = ca.write_leaf(dir.path(), "gw", &["gw.test"]);
    let (_, wrong_key) = ca.write_leaf(dir.path(), "other", &["gw.test"]);
    let tls_port = free_port();
    let write = |tls: &str| {
        let p = dir.path().join("bad.toml");
        std::fs::write(
            &p,
            format!("[server]\nlisten = \"127.0.0.1:{}\"\n\n[server.tls]\nlisten = [\"127.0.0.1:{tls_port}\"]\n{tls}\n\n[routes.a]\nupstreams = [\"127.0.0.1:9\"]\n", free_port()),
        )
        .unwrap();
        p
    };
    let cases = [
        (
            format!(
                "cert = \"{}/missing.pem\"\nkey = \"{}\"",
                dir.path().display(),
                toml_path(&key)
            ),
            "server.tls.cert",
        ),
        (
            format!(
                "cert = \"{}\"\nkey = \"{}\"",
                toml_path(&cert),
                toml_path(&wrong_key)
            ),
            "server.tls.key",
        ),
        (
            format!(
                "cert = \"{}\"\nkey = \"{}\"",
                toml_path(&key),
                toml_path(&key)
            ),
            "server.tls.cert",
        ),
        (
            format!(
                "cert = \"{}\"\nkey = \"{}\"\nmin_version = \"1.1\"",
                toml_path(&cert),
                toml_path(&key)
            ),
            "server.tls.min_version",
        ),
        (
            format!(
                "cert = \"{}\"\nkey = \"{}\"\nsni = [{{ cert = \"{}\", key = \"{}/nope.key\" }}]",
                toml_path(&cert),
                toml_path(&key),
                toml_path(&cert),
                dir.path().display()
            ),
            "server.tls.sni.0.key",
        ),
    ];
    for (tls, key_path) in &cases {
        let path = write(tls);
        let (code, err) = check_config(&path);
        assert_eq!(code, 1, "{tls}: {err}");
        assert!(
            err.contains(key_path),
            "{tls}: expected {key_path} in {err}"
        );
        // `run` refuses before binding anything.
        let out = Command::new(bin())
            .args(["run", "-c"])
            .arg(&path)
            .output()
            .expect("run fusegate");
        assert_eq!(out.status.code(), Some(1), "{tls}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(key_path));
        assert!(TcpStream::connect(("127.0.0.1", tls_port)).is_err());
    }
    // The routes' upstream TLS files are checked the same way.
    let p = dir.path().join("route.toml");
    std::fs::write(
        &p,
        format!("[routes.a]\nupstreams = [\"https://localhost:9\"]\ntls_ca = \"{}/none.pem\"\ntls_cert = \"{}\"\n", dir.path().display(), toml_path(&cert)),
    )
    .unwrap();
    let (code, err) = check_config(&p);
    assert_eq!(code, 1);
    assert!(
        err.contains("routes.a.tls_ca") && err.contains("routes.a.tls_key"),
        "{err}"
    );
}

#[test]
fn the_wrong_protocol_on_either_port_is_closed_quietly() {
    let t = TlsGateway::start("q", "");
    let (gw, up, tls_port, ca_file) = (&t.gw, &t.up, t.tls_port, &t.ca_file);
    // Plain HTTP on the TLS port: no HTTP answer, the connection is closed.
    let mut s = TcpStream::connect(("127.0.0.1", tls_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /api/q/x HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(
        !got.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );

    // TLS on the plain port: no handshake, no answer.
    let args = tls_args("gw.test", gw.port, ca_file);
    let r = curl(
        &strs(&args),
        &format!("https://gw.test:{}/api/q/x", gw.port),
    );
    assert_eq!(r.status, 0);

    // Both ports still serve, and nothing was logged above debug.
    let args = tls_args("gw.test", tls_port, ca_file);
    let r = curl(&strs(&args), &format!("https://gw.test:{tls_port}/api/q/x"));
    assert_eq!(r.status, 200);
    assert_eq!(gw.get("/api/q/x").status, 200);
    assert_eq!(
        gw.metric(r#"fusegate_tls_handshakes_total{result="error"}"#),
        1.0
    );
    let log = gw.stderr();
    assert!(
        !log.contains(" WARN ") && !log.contains(" ERROR "),
        "nothing above debug for a wrong protocol:\n{log}"
    );
    assert_eq!(up.hits(), 2);
}

#[test]
fn min_version_and_h2_off_are_what_clients_get() {
    let t = TlsGateway::start("v", "min_version = \"1.3\"\nh2 = false");
    let (up, tls_port) = (&t.up, t.tls_port);
    let url = format!("https://gw.test:{tls_port}/api/v/x");
    let args = t.args();
    // HTTP/1.1 only, though the client offers h2.
    let r = curl(&strs(&args), &url);
    assert_eq!((r.status, r.version.as_str()), (200, "1.1"));
    // A client that stops at TLS 1.2 gets no connection.
    let mut old = strs(&args);
    old.extend(["--tlsv1.2", "--tls-max", "1.2"]);
    assert_eq!(curl(&old, &url).status, 0);
    assert_eq!(up.hits(), 1);
}

#[test]
fn h2c_serves_prior_knowledge_beside_http1_on_the_plain_port() {
    let up = Upstream::start("h");
    let gw = Gateway::start_server(
        "h2c = true",
        &format!("[routes.h]\nupstreams = [\"{}\"]\n", up.url()),
    );
    let url = gw.url("/api/h/x");
    let r = curl(&["--http2-prior-knowledge"], &url);
    assert_eq!((r.status, r.version.as_str()), (200, "2"), "{}", r.body);
    let r = curl(&[], &url);
    assert_eq!((r.status, r.version.as_str()), (200, "1.1"));
    // A short HTTP/1.0 request (shorter than the HTTP/2 preface) is answered.
    let (status, _) = raw_request(gw.port, b"GET /api/h/x HTTP/1.0\r\n\r\n");
    assert_eq!(status, 200);
    assert_eq!(up.hits(), 3);

    // Without h2c, prior knowledge gets no HTTP/2.
    let plain = Gateway::start(&format!("[routes.h]\nupstreams = [\"{}\"]\n", up.url()));
    let r = curl(&["--http2-prior-knowledge"], &plain.url("/api/h/x"));
    assert_ne!(r.version, "2");
    assert_eq!(up.hits(), 3);
}

/// An HTTP/1.1 upstream over TLS (OpenSSL) that may require a client certificate from
/// `client_ca`; answers which protocol and whether a client certificate came.
struct TlsUpstream {
    hits: Arc<AtomicU64>,
}

impl TlsUpstream {
    fn start(cert: &Path, key: &Path, client_ca: Option<&Path>, addr: SocketAddr) -> TlsUpstream {
        use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod, SslVerifyMode};
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
        b.set_certificate_chain_file(cert).unwrap();
        b.set_private_key_file(key, SslFiletype::PEM).unwrap();
        if let Some(ca) = client_ca {
            b.set_ca_file(ca).unwrap();
            b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
        }
        let acceptor = Arc::new(b.build());
        let listener = TcpListener::bind(addr).expect("bind TLS upstream");
        let hits = Arc::new(AtomicU64::new(0));
        let counted = hits.clone();
        thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (acceptor, hits) = (acceptor.clone(), counted.clone());
                thread::spawn(move || {
                    let Ok(mut tls) = acceptor.accept(conn) else {
                        return;
                    };
                    let Some((_, _, headers)) = read_head(&mut BufReader::new(&mut tls)) else {
                        return;
                    };
                    hits.fetch_add(1, Ordering::SeqCst);
                    let body = format!(
                        "proto={} client_cert={}",
                        headers.get("x-forwarded-proto").map_or("-", |s| s.as_str()),
                        tls.ssl().peer_certificate().is_some()
                    );
                    let _ = write!(
                        tls,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        TlsUpstream { hits }
    }
}

#[test]
fn https_upstreams_are_verified_against_tls_ca_and_shown_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (server_ca, client_ca) = (Ca::new(), Ca::new());
    let server_ca_file = server_ca.write(dir.path(), "server-ca.pem");
    let client_ca_file = client_ca.write(dir.path(), "client-ca.pem");
    let (up_cert, up_key) = server_ca.write_leaf(dir.path(), "up", &["localhost"]);
    let (cl_cert, cl_key) = client_ca.write_leaf(dir.path(), "client", &["fusegate"]);
    // The gateway resolves `localhost` the same way, once.
    let port = free_port();
    let addr = ("localhost", port)
        .to_socket_addrs()
        .unwrap()
        .next()
        .unwrap();
    let up = TlsUpstream::start(&up_cert, &up_key, Some(&client_ca_file), addr);
    let upstream = format!("https://localhost:{port}");
    let gw = Gateway::start(&format!(
        "[routes.m]\nupstreams = [\"{upstream}\"]\ntls_ca = \"{}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\n\
         [routes.nocert]\nupstreams = [\"{upstream}\"]\ntls_ca = \"{}\"\n\n\
         [routes.noca]\nupstreams = [\"{upstream}\"]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        toml_path(&server_ca_file),
        toml_path(&cl_cert),
        toml_path(&cl_key),
        toml_path(&server_ca_file),
        toml_path(&cl_cert),
        toml_path(&cl_key),
    ));
    let r = gw.get("/api/m/x");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "proto=http client_cert=true");
    assert_eq!(up.hits.load(Ordering::SeqCst), 1);
    // No client certificate: the upstream refuses the handshake (with TLS 1.3 the
    // gateway learns it at its first read). An upstream certificate from a CA the route
    // does not trust: the gateway refuses it. Both are 502s that no request reached.
    for route in ["nocert", "noca"] {
        let r = gw.get(&format!("/api/{route}/x"));
        assert_eq!(r.status, 502, "{route}: {}", r.body);
    }
    assert_eq!(
        gw.get("/api/noca/x").json()["error"],
        "upstream_unavailable"
    );
    assert_eq!(up.hits.load(Ordering::SeqCst), 1);
}

/// A tonic gRPC server (the standard health service) on a loopback port, and a client.
mod grpc {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    pub fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
    }

    /// Serves the health service on a free port; `"known"` is SERVING, any other
    /// service name is NOT_FOUND (5).
    pub fn start_health_server(rt: &tokio::runtime::Runtime) -> std::net::SocketAddr {
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind gRPC server");
        let addr = listener.local_addr().unwrap();
        rt.spawn(async move {
            let (reporter, service) = tonic_health::server::health_reporter();
            reporter
                .set_service_status("known", tonic_health::ServingStatus::Serving)
                .await;
            let incoming = tokio_stream_from(listener);
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
        });
        addr
    }

    fn tokio_stream_from(
        listener: tokio::net::TcpListener,
    ) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
        futures_util::stream::unfold(listener, |l| async move {
            let conn = l.accept().await.map(|(s, _)| s);
            Some((conn, l))
        })
    }

    /// One health check through `url` (h2c); the status or the gRPC error.
    pub async fn check(url: &str, service: &str) -> Result<i32, tonic::Status> {
        let channel = tonic::transport::Endpoint::from_shared(url.to_string())
            .expect("endpoint")
            .connect()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("connect: {e}")))?;
        let mut client = HealthClient::new(channel);
        let request = HealthCheckRequest {
            service: service.to_string(),
        };
        client.check(request).await.map(|r| r.into_inner().status)
    }
}

/// The response head (lower-cased) to an empty gRPC request over h2c, from curl.
fn grpc_head(url: &str) -> String {
    let out = Command::new("curl")
        .args([
            "-s",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "--http2-prior-knowledge",
        ])
        .args(["-H", "content-type: application/grpc", "--data-binary", ""])
        .arg(url)
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&out.stdout).to_ascii_lowercase()
}

#[test]
fn grpc_passes_through_and_its_status_decides_the_outcome() {
    let rt = grpc::runtime();
    let upstream = grpc::start_health_server(&rt);
    let gw = Gateway::start_server(
        "h2c = true",
        &format!(
            "[routes.g]\nupstreams = [\"{upstream}\"]\nprefix = \"/grpc.health.v1.Health\"\nhttp2 = true\n\
             breaker = {{ volume_threshold = 3, error_threshold_percentage = 50, reset_timeout = \"3s\", failure_grpc_codes = [5] }}\n\n\
             [routes.rl]\nupstreams = [\"{upstream}\"]\nprefix = \"/limited\"\nhttp2 = true\n\
             rate_limit = {{ requests_per_second = 1, burst = 1 }}\n"
        ),
    );
    let url = gw.url("");
    // SERVING (1) through the gateway, with the trailers that carry grpc-status 0.
    assert_eq!(rt.block_on(grpc::check(&url, "known")).unwrap(), 1);
    gw.wait_window("g", 1);
    assert_eq!(
        gw.metric(r#"fusegate_requests_total{code="200",proto="grpc",route="g"}"#),
        1.0
    );
    // NOT_FOUND (5) is in failure_grpc_codes: two of them make 2 failures in 3, and the
    // breaker opens, though every HTTP status was 200.
    for _ in 0..2 {
        let e = rt.block_on(grpc::check(&url, "unknown")).unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    }
    gw.wait_state("g", "open");
    assert_eq!(
        gw.metric(r#"fusegate_upstream_failures_total{kind="status",route="g"}"#),
        2.0
    );
    // The breaker's rejection is a gRPC error the client understands, not JSON.
    let e = rt.block_on(grpc::check(&url, "known")).unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert_eq!(e.message(), "circuit open: g");
    assert_eq!(e.metadata().get("x-fusegate-breaker").unwrap(), "open");
    assert!(e.metadata().get("retry-after").is_some());
    // After reset_timeout a gRPC call (its body streamed, as every gRPC body) is the
    // half-open probe, and its grpc-status 0 closes the breaker.
    gw.wait_state("g", "half_open");
    assert_eq!(rt.block_on(grpc::check(&url, "known")).unwrap(), 1);
    gw.wait_state("g", "closed");
    // No route: UNIMPLEMENTED, seen by an HTTP/2 client (tonic always calls the
    // service's own path).
    let head = grpc_head(&gw.url("/nope"));
    assert!(head.starts_with("http/2 200"), "{head}");
    assert!(head.contains("grpc-status: 12\r\n"), "{head}");
    assert!(head.contains("grpc-message: no route: /nope\r\n"), "{head}");
    assert!(
        head.contains("content-type: application/grpc\r\n"),
        "{head}"
    );
    // Rate limited: RESOURCE_EXHAUSTED, with Retry-After.
    grpc_head(&gw.url("/limited/x"));
    let head = grpc_head(&gw.url("/limited/x"));
    assert!(head.contains("grpc-status: 8\r\n"), "{head}");
    assert!(
        head.contains("grpc-message: rate limited: rl\r\n"),
        "{head}"
    );
    assert!(head.contains("retry-after: "), "{head}");
}

#[test]
fn a_grpc_answer_that_ends_without_grpc_status_is_a_reset() {
    let rt = grpc::runtime();
    // An h2 upstream that answers 200 application/grpc and ends the stream with a body
    // and no trailers.
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let upstream = listener.local_addr().unwrap();
    rt.spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(socket).await else {
                    return;
                };
                while let Some(Ok((_req, mut respond))) = conn.accept().await {
                    let resp = http::Response::builder()
                        .status(200)
                        .header("content-type", "application/grpc")
                        .body(())
                        .unwrap();
                    if let Ok(mut body) = respond.send_response(resp, false) {
                        let _ = body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true);
                    }
                }
            });
        }
    });
    let gw = Gateway::start_server(
        "h2c = true",
        &format!(
            "[routes.r]\nupstreams = [\"{upstream}\"]\nprefix = \"/grpc.health.v1.Health\"\nhttp2 = true\n"
        ),
    );
    let e = rt.block_on(grpc::check(&gw.url(""), "x"));
    assert!(
        e.is_err(),
        "a missing grpc-status is an error to the client"
    );
    gw.wait_window("r", 1);
    assert_eq!(
        gw.metric(r#"fusegate_upstream_failures_total{kind="reset",route="r"}"#),
        1.0
    );
}

#[test]
fn http2_to_an_https_upstream_goes_through_alpn() {
    use openssl::ssl::{AlpnError, SslAcceptor, SslFiletype, SslMethod};
    let rt = grpc::runtime();
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let ca_file = ca.write(dir.path(), "ca.pem");
    let (cert, key) = ca.write_leaf(dir.path(), "up", &["localhost"]);
    // An HTTP/2-only upstream over TLS (ALPN h2), answering with the protocol it saw.
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
    b.set_certificate_chain_file(&cert).unwrap();
    b.set_private_key_file(&key, SslFiletype::PEM).unwrap();
    b.set_alpn_select_callback(|_, client| {
        openssl::ssl::select_next_proto(b"\x02h2", client).ok_or(AlpnError::ALERT_FATAL)
    });
    let acceptor = Arc::new(b.build());
    let port = free_port();
    let addr = ("localhost", port)
        .to_socket_addrs()
        .unwrap()
        .next()
        .unwrap();
    let listener = rt.block_on(tokio::net::TcpListener::bind(addr)).unwrap();
    rt.spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(ssl) = openssl::ssl::Ssl::new(acceptor.context()) else {
                    return;
                };
                let Ok(mut tls) = tokio_openssl::SslStream::new(ssl, socket) else {
                    return;
                };
                if std::pin::Pin::new(&mut tls).accept().await.is_err() {
                    return;
                }
                let Ok(mut conn) = h2::server::handshake(tls).await else {
                    return;
                };
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    let body = format!("{:?}", req.version());
                    let resp = http::Response::builder().status(200).body(()).unwrap();
                    if let Ok(mut out) = respond.send_response(resp, false) {
                        let _ = out.send_data(bytes::Bytes::from(body), true);
                    }
                }
            });
        }
    });
    let gw = Gateway::start(&format!(
        "[routes.h]\nupstreams = [\"https://localhost:{port}\"]\nhttp2 = true\ntls_ca = \"{}\"\n",
        toml_path(&ca_file)
    ));
    let r = gw.get("/api/h/x");
    assert_eq!((r.status, r.body.as_str()), (200, "HTTP/2.0"));
}

#[test]
fn an_http2_upload_that_stalls_gets_408_after_body_timeout() {
    let up = Upstream::start("b");
    let gw = Gateway::start_server(
        "h2c = true\nbody_timeout = \"1s\"",
        &format!("[routes.b]\nupstreams = [\"{}\"]\n", up.url()),
    );
    let rt = grpc::runtime();
    let port = gw.port;
    let status = rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let (client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
        tokio::spawn(conn);
        let mut client = client.ready().await.expect("h2 ready");
        let req = http::Request::builder()
            .method("POST")
            .uri(format!("http://127.0.0.1:{port}/api/b/upload"))
            .header("content-length", "10")
            .body(())
            .unwrap();
        let (resp, mut body) = client.send_request(req, false).expect("send request");
        // Three bytes of ten, then nothing.
        body.send_data(bytes::Bytes::from_static(b"abc"), false)
            .expect("send body");
        let resp = tokio::time::timeout(Duration::from_secs(10), resp)
            .await
            .expect("an answer within 10 s")
            .expect("a response");
        drop(body);
        resp.status().as_u16()
    });
    assert_eq!(status, 408);
    assert_eq!(up.hits(), 0);
    assert_eq!(gw.breaker("b")["window"]["total"], 0);
}
