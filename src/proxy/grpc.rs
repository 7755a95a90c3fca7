//! gRPC on the request path (SPEC §12): which requests are gRPC, the `grpc-status` an
//! upstream answered, and the gateway's own answers as gRPC errors.
//!
//! A gRPC client cannot read a JSON body: every answer the gateway makes to a gRPC
//! request (breaker, pause, rate limit, no route, no healthy upstream, upstream failure)
//! is HTTP 200, `content-type: application/grpc`, trailers-only (one header block that
//! ends the stream) with `grpc-status` and a percent-encoded `grpc-message`.

use http::{HeaderMap, HeaderValue};

/// Whether a request is gRPC: `content-type` is `application/grpc` or one of its
/// `application/grpc+<codec>` forms.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.as_bytes().get(..16))
        .is_some_and(|t| t.eq_ignore_ascii_case(b"application/grpc"))
}

/// The `grpc-status` in a header block, if it holds a valid one.
pub fn status_of(headers: &HeaderMap) -> Option<u32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// gRPC status codes the gateway answers with.
pub mod code {
    pub const UNKNOWN: u32 = 2;
    pub const INVALID_ARGUMENT: u32 = 3;
    pub const DEADLINE_EXCEEDED: u32 = 4;
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    pub const UNIMPLEMENTED: u32 = 12;
    pub const UNAVAILABLE: u32 = 14;
}

/// The gRPC status standing for the gateway's HTTP answer `status`: 14 UNAVAILABLE for
/// the breaker, a pause, no healthy upstream and a failed upstream; 8 RESOURCE_EXHAUSTED
/// for a rate limit or a body too large; 12 UNIMPLEMENTED for no route; 4
/// DEADLINE_EXCEEDED for a timeout; 3 INVALID_ARGUMENT for a bad path.
pub fn code_for(status: u16) -> u32 {
    match status {
        400 => code::INVALID_ARGUMENT,
        404 => code::UNIMPLEMENTED,
        408 | 504 => code::DEADLINE_EXCEEDED,
        413 | 429 => code::RESOURCE_EXHAUSTED,
        502 | 503 => code::UNAVAILABLE,
        _ => code::UNKNOWN,
    }
}

/// The `grpc-message` for one of the gateway's JSON error bodies
/// (`{"error":"circuit_open","route":"orders",...}` gives `circuit open: orders`).
pub fn message_for(json_body: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(json_body) else {
        return String::new();
    };
    let error = v["error"].as_str().unwrap_or("error").replace('_', " ");
    match v["route"].as_str().or_else(|| v["path"].as_str()) {
        Some(subject) => format!("{error}: {subject}"),
        None => error,
    }
}

/// Percent-encodes a `grpc-message` as the gRPC HTTP/2 mapping asks: bytes outside
/// printable ASCII, and `%`, become `%XX`.
pub fn encode_message(message: &str) -> HeaderValue {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_requests_are_told_by_content_type() {
        let mut h = HeaderMap::new();
        assert!(!is_grpc(&h));
        for (t, grpc) in [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("Application/GRPC", true),
            ("application/json", false),
            ("application/grp", false),
        ] {
            h.insert("content-type", HeaderValue::from_static(t));
            assert_eq!(is_grpc(&h), grpc, "{t}");
        }
    }

    #[test]
    fn rejections_map_to_grpc_codes_and_messages() {
        assert_eq!(code_for(503), code::UNAVAILABLE);
        assert_eq!(code_for(429), code::RESOURCE_EXHAUSTED);
        assert_eq!(code_for(404), code::UNIMPLEMENTED);
        assert_eq!(code_for(504), code::DEADLINE_EXCEEDED);
        let body = r#"{"error":"circuit_open","route":"orders","state":"open"}"#;
        assert_eq!(message_for(body), "circuit open: orders");
        assert_eq!(
            message_for(r#"{"error":"no_route","path":"/x"}"#),
            "no route: /x"
        );
        assert_eq!(encode_message("50% off: é"), "50%25 off: %C3%A9");
    }

    #[test]
    fn grpc_status_is_read_from_a_header_block() {
        let mut h = HeaderMap::new();
        assert_eq!(status_of(&h), None);
        h.insert("grpc-status", HeaderValue::from_static("14"));
        assert_eq!(status_of(&h), Some(14));
        h.insert("grpc-status", HeaderValue::from_static("x"));
        assert_eq!(status_of(&h), None);
    }
}
