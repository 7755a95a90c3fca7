//! fusegate runs on pingora-core and pingora-proxy with the changes in `vendor/patches`:
//! one plain proxy loop for requests without a body, no `getpeername` for each reused
//! upstream connection, and a keep-alive pool without a watcher task per idle
//! connection. Three gateways in front of the same upstream, one with the changes, one
//! with all but the pool (`PINGORA_PATCHES=no-idle-pool`) and one without any
//! (`PINGORA_PATCHES=off`: pingora 0.9.1 as released), get the same requests and must
//! give the same answers, reuse their upstream connections, let go of the ones the
//! upstream closes while idle, and treat a client that leaves mid-request as the
//! client's doing.

mod common;

use common::{send, wait_until, Fault, Gateway, Resp, Upstream};
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

fn route(up: &Upstream) -> String {
    format!("[routes.p]\nupstreams = [\"{}\"]\n", up.url())
}

/// The gateway with the changes, one with all but the idle pool, and one with pingora as
/// released.
fn each(up: &Upstream) -> [(&'static str, Gateway); 3] {
    [
        ("patched", Gateway::start(&route(up))),
        (
            "released pool",
            Gateway::start_with_env(&route(up), &[("PINGORA_PATCHES", "no-idle-pool")]),
        ),
        (
            "released",
            Gateway::start_with_env(&route(up), &[("PINGORA_PATCHES", "off")]),
        ),
    ]
}

/// What a client sees of an answer, less what differs by design (ids, dates).
fn seen(r: &Resp) -> (u16, Option<&str>, Option<&str>, Option<&str>, &str) {
    (
        r.status,
        r.header("content-length"),
        r.header("transfer-encoding"),
        r.header("etag"),
        &r.body,
    )
}

#[test]
fn all_three_give_the_same_answers() {
    let up = Upstream::start("p");
    let gws = each(&up);
    // Each case: how the upstream answers, the request, and a check on the answer.
    type Case<'a> = (
        &'a str,
        &'a dyn Fn(),
        &'a str,
        Option<&'a str>,
        &'a dyn Fn(&Resp),
    );
    let cases: [Case; 6] = [
        ("a small body", &|| up.set_body_size(0), "GET", None, &|r| {
            assert_eq!(r.status, 200);
            assert!(r.body.contains(r#""upstream":"p""#), "{}", r.body);
        }),
        (
            "a 300 KB body",
            &|| up.set_body_size(300_000),
            "GET",
            None,
            &|r| {
                assert_eq!((r.status, r.body.len()), (200, 300_000));
            },
        ),
        ("the same to HEAD", &|| {}, "HEAD", None, &|r| {
            assert_eq!(
                (r.status, r.header("content-length")),
                (200, Some("300000"))
            );
            assert!(r.body.is_empty());
        }),
        ("a 503", &|| up.set_status(503), "GET", None, &|r| {
            assert_eq!((r.status, r.body.len()), (503, 300_000));
        }),
        (
            "a request with a body",
            &|| up.set_status(200),
            "POST",
            Some("hello"),
            &|r| {
                assert_eq!(r.status, 200);
            },
        ),
        (
            "a 304",
            &|| {
                up.set_headers(&[("ETag", "\"v1\"")]);
                up.set_fault(Fault::NotModified);
            },
            "GET",
            None,
            &|r| {
                assert_eq!(
                    (r.status, r.header("etag"), r.body.as_str()),
                    (304, Some("\"v1\""), "")
                );
            },
        ),
    ];
    let mut sent = 0;
    for (what, set_up, method, body, check) in cases {
        set_up();
        let answers: Vec<Resp> = gws
            .iter()
            .map(|(_, gw)| send(method, &gw.url("/api/p/item?x=1"), &[], body))
            .collect();
        sent += answers.len() as u64;
        for ((name, _), r) in gws.iter().zip(&answers) {
            check(r);
            assert!(r.header("x-request-id").is_some(), "{what}, {name}: {r:?}");
        }
        if what != "a small body" {
            for (name, r) in gws.iter().map(|(name, _)| name).zip(&answers).skip(1) {
                assert_eq!(seen(&answers[0]), seen(r), "{what}: patched and {name}");
            }
        }
    }
    assert_eq!(up.hits(), sent, "each request reached the upstream once");
}

#[test]
fn pooled_upstream_connections_are_reused() {
    let up = Upstream::start("p");
    for (name, gw) in each(&up) {
        let before = up.connections();
        for _ in 0..20 {
            assert_eq!(gw.get("/api/p/item").status, 200, "{name}");
        }
        // The gateway's two workers may each hold one.
        let made = up.connections() - before;
        assert!(
            (1..=2).contains(&made),
            "{name}: {made} upstream connections for 20 requests"
        );
    }
}

#[test]
fn connections_the_upstream_closes_while_idle_are_closed_and_not_reused() {
    let up = Upstream::start("p");
    up.set_idle_close(Duration::from_millis(200));
    for (name, gw) in each(&up) {
        let (closed, after, conns) = (
            up.idle_closed(),
            up.closed_after_idle_close(),
            up.connections(),
        );
        assert_eq!(gw.get("/api/p/item").status, 200, "{name}");
        wait_until(
            "the upstream closes the idle connection",
            Duration::from_secs(10),
            || up.idle_closed() > closed,
        );
        // The gateway closes its end of the dead connection without waiting for a request.
        wait_until(
            "the gateway closes its end",
            Duration::from_secs(10),
            || up.closed_after_idle_close() > after,
        );
        let r = gw.get("/api/p/item");
        assert_eq!(r.status, 200, "{name}: {}", r.body);
        assert_eq!(up.connections() - conns, 2, "{name}: a new connection");
        assert!(!gw.stderr().contains("ERROR"), "{name}: {}", gw.stderr());
    }
}

#[test]
fn a_client_that_leaves_while_the_upstream_answers_is_not_an_upstream_failure() {
    let up = Upstream::start("p");
    up.set_delay(Duration::from_millis(800));
    for (name, gw) in each(&up) {
        let hits = up.hits();
        let mut client = TcpStream::connect(("127.0.0.1", gw.port)).expect("connect");
        client
            .write_all(b"GET /api/p/slow HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .expect("send");
        wait_until(
            "the request reaches the upstream",
            Duration::from_secs(10),
            || up.hits() > hits,
        );
        drop(client);
        let series = "fusegate_client_errors_total{reason=\"aborted\"}";
        wait_until(series, Duration::from_secs(10), || gw.metric(series) >= 1.0);
        let b = gw.breaker("p");
        assert_eq!(
            (b["state"].as_str(), b["window"]["failures"].as_u64()),
            (Some("closed"), Some(0)),
            "{name}: {b}"
        );
        assert_eq!(gw.get("/api/p/next").status, 200, "{name}");
    }
}
