//! W3C trace context (`traceparent`, `tracestate`): a client's trace is continued, with
//! the gateway's span as the parent of the upstream request; otherwise a trace starts
//! at the gateway. The upstream request always carries a `traceparent`.

use http::HeaderValue;

/// `tracestate` longer than this is not forwarded (W3C Trace Context: at most 32
/// list members, and 512 characters is what every vendor must be able to pass on).
pub const MAX_TRACESTATE_LEN: usize = 512;
const MAX_TRACESTATE_MEMBERS: usize = 32;

/// The trace a request belongs to and the gateway's span in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: u128,
    /// The gateway's span for this request: the parent of the upstream request.
    pub span_id: u64,
    /// The client's span, when the trace was continued.
    pub parent_span_id: Option<u64>,
    pub sampled: bool,
}

impl TraceContext {
    /// Continues the client's `traceparent` when it is valid, else starts a trace;
    /// `sample` decides whether a new trace is sampled.
    pub fn for_request(incoming: Option<&HeaderValue>, sample: impl FnOnce() -> bool) -> Self {
        let span_id = nonzero_u64();
        match incoming.and_then(|v| parse_traceparent(v.as_bytes())) {
            Some(p) => TraceContext {
                trace_id: p.trace_id,
                span_id,
                parent_span_id: Some(p.parent_id),
                sampled: p.flags & 1 == 1,
            },
            None => TraceContext {
                trace_id: nonzero_u128(),
                span_id,
                parent_span_id: None,
                sampled: sample(),
            },
        }
    }

    /// The `traceparent` for the upstream request: version 00, this trace, the
    /// gateway's span, the sampled flag.
    pub fn traceparent(&self) -> HeaderValue {
        let mut buf = [b'-'; 55];
        buf[..2].copy_from_slice(b"00");
        write_hex(&mut buf[3..35], &self.trace_id.to_be_bytes());
        write_hex(&mut buf[36..52], &self.span_id.to_be_bytes());
        buf[53] = b'0';
        buf[54] = if self.sampled { b'1' } else { b'0' };
        HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// The fields of a valid `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TraceParent {
    trace_id: u128,
    parent_id: u64,
    flags: u8,
}

/// Parses `version-traceid-parentid-flags` as W3C Trace Context level 1 says: lower-case
/// hex, version `ff` invalid, version 00 exactly 55 characters, a later version at least
/// that and `-` after the flags; all-zero ids invalid.
fn parse_traceparent(v: &[u8]) -> Option<TraceParent> {
    if v.len() < 55 {
        return None;
    }
    let version = hex_field(&v[0..2])? as u8;
    if version == 0xff || (version == 0 && v.len() != 55) || (v.len() > 55 && v[55] != b'-') {
        return None;
    }
    if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let trace_id = hex_field(&v[3..35])?;
    let parent_id = hex_field(&v[36..52])? as u64;
    let flags = hex_field(&v[53..55])? as u8;
    if trace_id == 0 || parent_id == 0 {
        return None;
    }
    Some(TraceParent {
        trace_id,
        parent_id,
        flags,
    })
}

/// `bytes` as lower-case hex into `out` (twice as long).
pub(crate) fn write_hex(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
}

/// Lower-case hex digits (at most 32) as a number.
fn hex_field(b: &[u8]) -> Option<u128> {
    if b.is_empty() || b.len() > 32 {
        return None;
    }
    let mut n: u128 = 0;
    for &c in b {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        n = (n << 4) | u128::from(d);
    }
    Some(n)
}

/// Whether a client's `tracestate` is passed on: within W3C's bounds (512 characters,
/// 32 members) and printable ASCII. Larger or garbled ones are dropped whole.
pub fn tracestate_ok(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    b.len() <= MAX_TRACESTATE_LEN
        && b.iter().all(|c| (0x20..0x7f).contains(c))
        && b.split(|c| *c == b',').count() <= MAX_TRACESTATE_MEMBERS
}

fn nonzero_u64() -> u64 {
    fastrand::u64(1..)
}

fn nonzero_u128() -> u128 {
    fastrand::u128(1..)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_continued_with_a_new_span() {
        let v = HeaderValue::from_static(GOOD);
        let t = TraceContext::for_request(Some(&v), || false);
        assert_eq!(t.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(t.parent_span_id, Some(0x00f067aa0ba902b7));
        assert!(t.sampled);
        assert_ne!(t.span_id, 0x00f067aa0ba902b7);
        let out = t.traceparent();
        let out = out.to_str().unwrap();
        assert!(
            out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{out}"
        );
        assert!(out.ends_with("-01") && out.len() == 55, "{out}");
        assert_eq!(
            parse_traceparent(out.as_bytes()).map(|p| p.trace_id),
            Some(t.trace_id)
        );
    }

    #[test]
    fn a_malformed_traceparent_starts_a_new_trace() {
        let bad = [
            "",
            "garbage",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
        ];
        for b in bad {
            let v = HeaderValue::from_str(b).unwrap();
            let t = TraceContext::for_request(Some(&v), || true);
            assert_eq!(t.parent_span_id, None, "{b:?}");
            assert_ne!(t.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736, "{b:?}");
            assert!(t.sampled);
        }
        // A later version may carry more fields after the flags.
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-what-follows";
        assert!(parse_traceparent(later.as_bytes()).is_some());
    }

    #[test]
    fn tracestate_is_bounded() {
        assert!(tracestate_ok(&HeaderValue::from_static(
            "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
        )));
        let huge = HeaderValue::from_str(&format!("k={}", "v".repeat(600))).unwrap();
        assert!(!tracestate_ok(&huge));
        let many = (0..33)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(!tracestate_ok(&HeaderValue::from_str(&many).unwrap()));
    }
}
