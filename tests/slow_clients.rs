//! Slow and oversized clients: a crowd of connections trickling their headers or stalling
//! their bodies does not keep other clients from being served, and each is cut off by the
//! configured header and body timeouts; oversized headers and bodies are refused.

mod common;

use common::{raw_request, wait_until, Gateway, Upstream};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

/// Slow connections held open at once.
const TRICKLING: usize = 200;
const STALLED: usize = 50;
/// Ordinary requests sent while they are held.
const CLIENTS: usize = 4;
const REQUESTS_EACH: usize = 25;

fn route(up: &Upstream) -> String {
    format!("[routes.s]\nupstreams = [\"{}\"]\n", up.url())
}

fn limits() -> [(&'static str, &'static str); 4] {
    [
        ("FUSEGATE_SERVER__HEADER_TIMEOUT", "2s"),
        ("FUSEGATE_SERVER__BODY_TIMEOUT", "2s"),
        ("FUSEGATE_SERVER__MAX_HEADER_BYTES", "4KiB"),
        ("FUSEGATE_SERVER__MAX_BODY_BYTES", "1KiB"),
    ]
}

/// One slow client connection and what the gateway has sent it so far.
struct Slow {
    conn: TcpStream,
    received: Vec<u8>,
    closed: bool,
    trickle: bool,
}

impl Slow {
    fn open(port: u16, start: &[u8], trickle: bool) -> Slow {
        let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        conn.write_all(start).expect("send the start of a request");
        conn.set_nonblocking(true).expect("non-blocking");
        Slow {
            conn,
            received: Vec::new(),
            closed: false,
            trickle,
        }
    }

    /// Reads what has arrived; notes when the gateway has closed the connection.
    fn poll(&mut self) {
        let mut buf = [0u8; 1024];
        while !self.closed {
            match self.conn.read(&mut buf) {
                Ok(0) => self.closed = true,
                Ok(n) => self.received.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => self.closed = true,
            }
        }
        if self.trickle && !self.closed && self.received.is_empty() {
            // One more byte of a header that never ends.
            if self.conn.write_all(b"a").is_err() {
                self.closed = true;
            }
        }
    }

    fn answer(&self) -> String {
        String::from_utf8_lossy(&self.received).into_owned()
    }
}

#[test]
fn slow_clients_do_not_stop_others_and_are_cut_off() {
    let up = Upstream::start("s");
    let gw = Gateway::start_with_env(&route(&up), &limits());
    let port = gw.port;

    let mut slow: Vec<Slow> = (0..TRICKLING)
        .map(|_| {
            Slow::open(
                port,
                b"GET /api/s/slow HTTP/1.1\r\nHost: a\r\nX-Slow: ",
                true,
            )
        })
        .collect();
    slow.extend((0..STALLED).map(|_| {
        Slow::open(
            port,
            b"POST /api/s/upload HTTP/1.1\r\nHost: a\r\nContent-Length: 500\r\n\r\n0123456789",
            false,
        )
    }));
    for s in &mut slow {
        s.poll();
    }

    // Ordinary clients, while the slow ones hold their connections.
    let url = gw.url("/api/s/fast");
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let url = url.clone();
            thread::spawn(move || {
                (0..REQUESTS_EACH)
                    .map(|_| common::get(&url).status)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    // Keep trickling while they run.
    let mut statuses = Vec::new();
    for c in clients {
        while !c.is_finished() {
            for s in &mut slow {
                s.poll();
            }
            thread::sleep(Duration::from_millis(100));
        }
        statuses.extend(c.join().expect("client thread"));
    }
    assert_eq!(statuses.len(), CLIENTS * REQUESTS_EACH);
    assert!(
        statuses.iter().all(|&s| s == 200),
        "every ordinary request served: {statuses:?}"
    );

    // The gateway closes every slow connection, trickling headers included.
    let deadline = Instant::now() + Duration::from_secs(20);
    while slow.iter().any(|s| !s.closed) && Instant::now() < deadline {
        for s in &mut slow {
            s.poll();
        }
        thread::sleep(Duration::from_millis(100));
    }
    let open = slow.iter().filter(|s| !s.closed).count();
    assert_eq!(open, 0, "slow connections still open after 20 s");
    let (trickled, stalled) = slow.split_at(TRICKLING);
    for s in trickled {
        let a = s.answer();
        assert!(
            a.is_empty() || a.starts_with("HTTP/1.1 408 "),
            "a trickled header: {a:?}"
        );
    }
    let timed_out = trickled.iter().filter(|s| !s.received.is_empty()).count();
    assert!(timed_out > 0, "no trickling client was told 408");
    for s in stalled {
        let a = s.answer();
        assert!(a.starts_with("HTTP/1.1 408 "), "a stalled body: {a:?}");
        assert!(
            a.ends_with(r#"{"error":"request_timeout","route":"s"}"#),
            "{a:?}"
        );
    }

    // Stalled bodies are the client's fault: not breaker outcomes, and no body reached the
    // upstream whole.
    gw.wait_window("s", (CLIENTS * REQUESTS_EACH) as u64);
    let b = gw.breaker("s");
    assert_eq!(b["window"]["failures"], 0);
    assert_eq!(b["state"], "closed");
    assert_eq!(up.hits(), (CLIENTS * REQUESTS_EACH) as u64);
    let series = r#"fusegate_requests_total{code="408",proto="http1",route="s"} "#;
    wait_until("the 408s counted", Duration::from_secs(10), || {
        gw.admin("GET", "/metrics")
            .body
            .contains(&format!("{series}{STALLED}"))
    });
}

#[test]
fn oversized_headers_and_bodies_are_refused() {
    let up = Upstream::start("s");
    let gw = Gateway::start_with_env(&route(&up), &limits());

    let big = format!(
        "GET /api/s/x HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "b".repeat(5000)
    );
    let (status, text) = raw_request(gw.port, big.as_bytes());
    assert_eq!(status, 431, "{text}");
    assert!(
        text.ends_with("{\"error\":\"header_too_large\"}\n"),
        "{text}"
    );

    let declared =
        "POST /api/s/x HTTP/1.1\r\nHost: a\r\nContent-Length: 2048\r\nConnection: close\r\n\r\n";
    let (status, text) = raw_request(gw.port, declared.as_bytes());
    assert_eq!(status, 413, "{text}");
    assert!(
        text.ends_with(r#"{"error":"body_too_large","route":"s"}"#),
        "{text}"
    );

    let mut chunked =
        b"POST /api/s/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            .to_vec();
    for _ in 0..3 {
        chunked.extend_from_slice(b"200\r\n");
        chunked.extend_from_slice(&[b'c'; 0x200]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (status, text) = raw_request(gw.port, &chunked);
    assert_eq!(status, 413, "{text}");
    assert!(
        text.ends_with(r#"{"error":"body_too_large","route":"s"}"#),
        "{text}"
    );
    assert_eq!(
        up.hits(),
        0,
        "no oversized request reached the upstream whole"
    );

    // Within the limits: served.
    let body = "d".repeat(1000);
    let r = common::send("POST", &gw.url("/api/s/x"), &[], Some(&body));
    assert_eq!(r.status, 200);
    assert_eq!(up.hits(), 1);
    let header = format!(
        "GET /api/s/x HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "b".repeat(3000)
    );
    assert_eq!(raw_request(gw.port, header.as_bytes()).0, 200);

    // Refusals are not breaker outcomes.
    gw.wait_window("s", 2);
    assert_eq!(gw.breaker("s")["window"]["failures"], 0);
}
