//! NATS connection details end to end, against real `nats-server` processes: credentials
//! in the URL (never printed), a three-server cluster in one URL with one server stopped,
//! and NATS over TLS with certificates generated in the test, client certificates
//! required.

mod common;

use common::{check_config, ctl, free_port, wait_until, Gateway, Nats, Upstream};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn cluster_name() -> String {
    format!("s{}", std::process::id())
}

fn gateway_with(nats_section: &str, up: &Upstream) -> Gateway {
    Gateway::start(&format!(
        "[routes.catalog]\nupstreams = [\"{}\"]\n\n[nats]\n{nats_section}",
        up.url()
    ))
}

fn wait_nats(gw: &Gateway) {
    wait_until(
        "the gateway's NATS connection",
        Duration::from_secs(15),
        || gw.metric("fusegate_nats_connected") == 1.0,
    );
}

/// `ctl ping` until it finds `n` gateways (interest spreads through a cluster with a
/// delay); the last output.
fn ping_until(n: usize, args: &[&str]) -> (i32, String, String) {
    let mut last = (0, String::new(), String::new());
    let want = format!("Managed {n} gateway(s)");
    wait_until(
        &format!("ctl to find {n} gateway(s)"),
        Duration::from_secs(20),
        || {
            last = ctl(args);
            last.0 == 0 && last.1.contains(&want)
        },
    );
    last
}

#[test]
fn credentials_in_the_url_log_in_and_are_never_printed() {
    let nats = Nats::start();
    let up = Upstream::start("catalog");
    let c = cluster_name();
    let url = format!("nats://gateway:gateway-secret@127.0.0.1:{}", nats.port);
    let gw = gateway_with(
        &format!("url = \"{url}\"\ncluster = \"{c}\"\nidentity = \"gw-url\"\n"),
        &up,
    );
    wait_nats(&gw);
    let ops = format!("nats://ops:ops-secret@127.0.0.1:{}", nats.port);
    let (code, out, err) = ping_until(
        1,
        &["--nats", &ops, "--cluster", &c, "--timeout", "2s", "ping"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("gw-url"), "{out}");

    // Masked wherever it is shown.
    let config = gw.admin("GET", "/config").json();
    assert_eq!(
        config["nats"]["url"],
        format!("nats://gateway:***@127.0.0.1:{}", nats.port)
    );
    let info = gw.admin("GET", "/info").body;
    assert!(!info.contains("gateway-secret"), "{info}");
    let log = gw.stderr();
    assert!(!log.contains("gateway-secret"), "{log}");
    assert!(log.contains("gateway:***@"), "{log}");

    // A wrong password: refused by the server, and the error does not echo it.
    let wrong = format!("nats://ops:not-the-password@127.0.0.1:{}", nats.port);
    let (code, out, err) = ctl(&["--nats", &wrong, "--cluster", &c, "--timeout", "1s", "ping"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        !format!("{out}{err}").contains("not-the-password"),
        "{out}{err}"
    );
}

#[test]
fn a_token_in_the_url_logs_in() {
    let server = Nats::start_args(&["--auth", "s3cr3t-t0ken"]);
    let port = server.port;
    let up = Upstream::start("catalog");
    let c = cluster_name();
    let gw = gateway_with(
        &format!(
            "url = \"nats://s3cr3t-t0ken@127.0.0.1:{port}\"\ncluster = \"{c}\"\nidentity = \"gw-token\"\n"
        ),
        &up,
    );
    wait_nats(&gw);
    let url = format!("nats://s3cr3t-t0ken@127.0.0.1:{port}");
    let (code, out, _) = ping_until(
        1,
        &["--nats", &url, "--cluster", &c, "--timeout", "2s", "ping"],
    );
    assert_eq!(code, 0);
    assert!(out.contains("gw-token"));
    assert_eq!(
        gw.admin("GET", "/config").json()["nats"]["url"],
        format!("nats://***@127.0.0.1:{port}")
    );
    assert!(!gw.stderr().contains("s3cr3t-t0ken"));
}

#[test]
fn a_bad_server_list_is_a_config_error_that_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (url, hidden) in [
        ("nats://127.0.0.1:4222,,nats://127.0.0.1:4223", ""),
        ("nats://ops:hunter2@127.0.0.1:notaport", "hunter2"),
    ] {
        let cfg = dir.path().join("bad.toml");
        std::fs::write(
            &cfg,
            format!("[routes.catalog]\nupstreams = [\"127.0.0.1:9\"]\n\n[nats]\nurl = \"{url}\"\n"),
        )
        .unwrap();
        let (code, err) = check_config(&cfg);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("nats.url"), "{err}");
        if !hidden.is_empty() {
            assert!(!err.contains(hidden), "{err}");
        }
    }
}

/// Three nats-servers routed into one NATS cluster on loopback.
fn start_cluster() -> Vec<Nats> {
    let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
    (0..3)
        .map(|i| {
            let others = routes
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, r)| format!("nats://127.0.0.1:{r}"))
                .collect::<Vec<_>>()
                .join(",");
            let me = format!("nats://127.0.0.1:{}", routes[i]);
            Nats::start_args(&[
                "--cluster_name",
                "fg",
                "--cluster",
                &me,
                "--routes",
                &others,
            ])
        })
        .collect()
}

#[test]
fn gateways_and_ctl_fail_over_between_the_servers_of_a_cluster() {
    let mut nodes = start_cluster();
    let list = nodes
        .iter()
        .map(|n| format!("nats://127.0.0.1:{}", n.port))
        .collect::<Vec<_>>()
        .join(",");
    let up = Upstream::start("catalog");
    let c = cluster_name();
    let gw = gateway_with(
        &format!("url = \"{list}\"\ncluster = \"{c}\"\nidentity = \"gw-cluster\"\n"),
        &up,
    );
    wait_nats(&gw);
    let (code, out, err) = ping_until(
        1,
        &["--nats", &list, "--cluster", &c, "--timeout", "2s", "ping"],
    );
    assert_eq!(code, 0, "{out}{err}");

    // Stop two of the three servers, one after the other: whichever the gateway was on,
    // it ends on the last one, and ctl (given the whole list) finds it there.
    let last = format!("nats://127.0.0.1:{}", nodes[2].port);
    for (i, node) in nodes.iter_mut().take(2).enumerate() {
        node.stop();
        let (code, out, err) = ping_until(
            1,
            &["--nats", &list, "--cluster", &c, "--timeout", "2s", "ping"],
        );
        assert_eq!(code, 0, "after stopping server {i}: {out}{err}");
    }
    let (code, out, _) = ping_until(
        1,
        &["--nats", &last, "--cluster", &c, "--timeout", "2s", "ping"],
    );
    assert_eq!(code, 0);
    assert!(out.contains("gw-cluster"), "{out}");
    // The proxy never noticed.
    assert_eq!(gw.get("/api/catalog/x").status, 200);
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn make_pki(dir: &Path) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_pem, server_key_pem) = leaf(vec!["127.0.0.1".into(), "localhost".into()]);
    let (client_pem, client_key_pem) = leaf(vec!["fusegate-client".into()]);
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    Pki {
        ca: write("ca.pem", &ca_cert.pem()),
        server_cert: write("server.pem", &server_pem),
        server_key: write("server.key", &server_key_pem),
        client_cert: write("client.pem", &client_pem),
        client_key: write("client.key", &client_key_pem),
    }
}

#[test]
fn nats_over_tls_with_client_certificates_required() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let s = |p: &Path| p.display().to_string();
    let server = Nats::start_args(&[
        "--tlsverify",
        "--tlscert",
        &s(&pki.server_cert),
        "--tlskey",
        &s(&pki.server_key),
        "--tlscacert",
        &s(&pki.ca),
    ]);
    let port = server.port;
    let up = Upstream::start("catalog");
    let c = cluster_name();
    let url = format!("tls://127.0.0.1:{port}");
    let gw = gateway_with(
        &format!(
            "url = \"{url}\"\ncluster = \"{c}\"\nidentity = \"gw-tls\"\ntls_ca = \"{}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            s(&pki.ca),
            s(&pki.client_cert),
            s(&pki.client_key)
        ),
        &up,
    );
    wait_nats(&gw);
    let (ca, cert, key) = (s(&pki.ca), s(&pki.client_cert), s(&pki.client_key));
    let with_cert = [
        "--nats",
        &url,
        "--cluster",
        &c,
        "--timeout",
        "2s",
        "--tls-ca",
        &ca,
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "ping",
    ];
    let (code, out, err) = ping_until(1, &with_cert);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("gw-tls"), "{out}");
    // Without a client certificate the server refuses the connection.
    let (code, out, err) = ctl(&[
        "--nats",
        &url,
        "--cluster",
        &c,
        "--timeout",
        "1s",
        "--tls-ca",
        &ca,
        "ping",
    ]);
    assert_eq!(code, 1, "{out}{err}");
}
