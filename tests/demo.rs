//! `fusegate demo` as the README's quick start uses it: fixed loopback ports, built-in
//! upstreams, a breaker that opens on the flaky route.

mod common;

use common::{bin, get, wait_until};
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn demo_serves_both_routes_and_the_flaky_one_trips_its_breaker() {
    for port in [8080, 9090, 7101, 7102] {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "the demo needs 127.0.0.1:{port} free"
        );
    }
    let mut child = Command::new(bin())
        .arg("demo")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn fusegate demo");
    wait_until("the demo gateway", Duration::from_secs(15), || {
        std::net::TcpStream::connect("127.0.0.1:8080").is_ok()
    });

    // The first line printed is the dashboard's address, and the page is there.
    let mut first = String::new();
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("the demo's stdout"));
    std::io::BufRead::read_line(&mut stdout, &mut first).expect("read the demo's first line");
    assert!(
        first.contains("http://127.0.0.1:9090/dashboard"),
        "first line: {first:?}"
    );
    let page = get("http://127.0.0.1:9090/dashboard");
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/html"));

    let r = get("http://127.0.0.1:8080/api/catalog/items");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["upstream"], "catalog");

    // search fails about half its requests: within 200 requests the breaker opens.
    let mut statuses = Vec::new();
    let mut rejection = None;
    for i in 0..200 {
        let r = get(&format!("http://127.0.0.1:8080/api/search?q={i}"));
        statuses.push(r.status);
        if r.status == 503 {
            rejection = Some(r);
            break;
        }
    }
    let r = rejection.unwrap_or_else(|| panic!("the search breaker never opened: {statuses:?}"));
    assert!(
        statuses.contains(&500),
        "failures were passed on first: {statuses:?}"
    );
    assert_eq!(r.header("x-fusegate-breaker"), Some("open"));
    assert_eq!(r.json()["error"], "circuit_open");
    assert_eq!(get("http://127.0.0.1:8080/api/catalog/items").status, 200);
    let b = get("http://127.0.0.1:9090/breakers/search").json();
    assert_eq!(b["state"], "open");

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let mut exited = None;
    wait_until("the demo to exit", Duration::from_secs(10), || {
        exited = child.try_wait().unwrap();
        exited.is_some()
    });
    let mut out = String::new();
    use std::io::Read;
    stdout.read_to_string(&mut out).unwrap();
    assert!(
        out.contains("curl -i http://127.0.0.1:8080/api/search?q=x"),
        "{out}"
    );
    assert_eq!(exited.and_then(|s| s.code()), Some(0));
}
