//! Span export end to end: a real gateway exporting over OTLP/HTTP to a small receiver
//! in the test, which decodes the protobuf batches it gets.

mod common;

use common::{free_port, read_head, request, wait_until, Gateway, Upstream};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// An OTLP/HTTP receiver: answers every POST with 200 and keeps the decoded requests.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<(String, ExportTraceServiceRequest)>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let store = got.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let store = store.clone();
                thread::spawn(move || serve(conn, &store));
            }
        });
        Receiver { port, got }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spans(&self) -> Vec<Span> {
        let got = self.got.lock().unwrap();
        got.iter()
            .flat_map(|(_, r)| r.resource_spans.iter())
            .flat_map(|rs| rs.scope_spans.iter())
            .flat_map(|ss| ss.spans.iter().cloned())
            .collect()
    }

    fn service_names(&self) -> Vec<String> {
        let got = self.got.lock().unwrap();
        got.iter()
            .flat_map(|(_, r)| r.resource_spans.iter())
            .filter_map(|rs| rs.resource.as_ref())
            .flat_map(|r| r.attributes.iter())
            .filter(|kv| kv.key == "service.name")
            .filter_map(|kv| string_value(kv.value.as_ref()?.value.as_ref()?))
            .collect()
    }
}

fn string_value(v: &AnyValue) -> Option<String> {
    match v {
        AnyValue::StringValue(s) => Some(s.clone()),
        AnyValue::IntValue(i) => Some(i.to_string()),
        _ => None,
    }
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| string_value(kv.value.as_ref()?.value.as_ref()?))
}

fn serve(conn: TcpStream, store: &Mutex<Vec<(String, ExportTraceServiceRequest)>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    loop {
        let Some((_, target, headers)) = read_head(&mut reader) else {
            return;
        };
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let req = ExportTraceServiceRequest::decode(body.as_slice()).expect("an OTLP request");
        store.lock().unwrap().push((target, req));
        let mut w = &conn;
        let _ = w.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
        );
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn tracing_config(endpoint: &str, ratio: f64, up: &Upstream) -> String {
    format!(
        "[tracing]\notlp_endpoint = \"{endpoint}\"\nsample_ratio = {ratio}\nservice_name = \"edge-gw\"\n\n\
         [routes.ok]\nupstreams = [\"{}\"]\n",
        up.url()
    )
}

#[test]
fn a_span_per_request_reaches_the_collector_in_the_clients_trace() {
    let rx = Receiver::start();
    let up = Upstream::start("ok");
    let gw = Gateway::start(&tracing_config(&rx.url(), 1.0, &up));
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let r = request(
        "GET",
        &gw.url("/api/ok/traced"),
        &[("traceparent", &format!("00-{trace}-{client_span}-01"))],
    );
    assert_eq!(r.status, 200);
    let sent = up.last_seen().headers["traceparent"].clone();
    let gateway_span = sent.split('-').nth(2).unwrap().to_string();

    wait_until("the span at the collector", Duration::from_secs(15), || {
        !rx.spans().is_empty()
    });
    let got = rx
        .got
        .lock()
        .unwrap()
        .iter()
        .map(|(t, _)| t.clone())
        .collect::<Vec<_>>();
    assert!(got.iter().all(|t| t == "/v1/traces"), "{got:?}");
    let spans = rx.spans();
    let span = spans
        .iter()
        .find(|s| hex(&s.trace_id) == trace)
        .unwrap_or_else(|| panic!("no span of trace {trace} in {spans:#?}"));
    assert_eq!(hex(&span.parent_span_id), client_span);
    assert_eq!(
        hex(&span.span_id),
        gateway_span,
        "the span upstream saw as its parent"
    );
    assert_eq!(span.name, "GET ok");
    assert_eq!(attr(span, "route").as_deref(), Some("ok"));
    assert_eq!(attr(span, "status").as_deref(), Some("200"));
    assert_eq!(attr(span, "outcome").as_deref(), Some("success"));
    assert_eq!(attr(span, "breaker").as_deref(), Some("closed"));
    assert_eq!(attr(span, "upstream"), Some(up.addr.to_string()));
    assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
    assert!(rx.service_names().iter().any(|s| s == "edge-gw"));

    // A request without a traceparent starts a trace whose root is the gateway's span.
    request("GET", &gw.url("/api/ok/new"), &[]);
    let sent = up.last_seen().headers["traceparent"].clone();
    let new_trace = sent.split('-').nth(1).unwrap().to_string();
    wait_until("the new trace's span", Duration::from_secs(15), || {
        rx.spans().iter().any(|s| hex(&s.trace_id) == new_trace)
    });
    let spans = rx.spans();
    let root = spans
        .iter()
        .find(|s| hex(&s.trace_id) == new_trace)
        .unwrap();
    assert!(root.parent_span_id.is_empty(), "{root:?}");
}

#[test]
fn a_collector_that_is_down_costs_no_request_and_drops_are_counted() {
    let dead = free_port();
    let up = Upstream::start("ok");
    let gw = Gateway::start(&tracing_config(
        &format!("http://127.0.0.1:{dead}"),
        1.0,
        &up,
    ));
    for i in 0..20 {
        let r = gw.get(&format!("/api/ok/{i}"));
        assert_eq!(r.status, 200);
    }
    wait_until("dropped spans counted", Duration::from_secs(20), || {
        gw.metric("fusegate_trace_spans_dropped_total") >= 1.0
    });
    assert_eq!(up.hits(), 20);
}

#[test]
fn sample_ratio_zero_exports_only_traces_the_client_sampled() {
    let rx = Receiver::start();
    let up = Upstream::start("ok");
    let gw = Gateway::start(&tracing_config(&rx.url(), 0.0, &up));
    for _ in 0..5 {
        request("GET", &gw.url("/api/ok/unsampled"), &[]);
        let tp = up.last_seen().headers["traceparent"].clone();
        assert!(tp.ends_with("-00"), "not sampled: {tp}");
    }
    let trace = "0af7651916cd43dd8448eb211c80319c";
    request(
        "GET",
        &gw.url("/api/ok/sampled"),
        &[("traceparent", &format!("00-{trace}-b7ad6b7169203331-01"))],
    );
    wait_until("the client-sampled span", Duration::from_secs(15), || {
        rx.spans().iter().any(|s| hex(&s.trace_id) == trace)
    });
    assert_eq!(rx.spans().len(), 1, "{:#?}", rx.spans());
}
