//! `X-Request-Id`: kept when the client sends a sane one, otherwise generated.

use http::HeaderValue;
use std::sync::atomic::{AtomicU64, Ordering};

/// Longest client-supplied id that is passed on.
const MAX_LEN: usize = 128;

/// Generates ids unique to this process: a random per-process prefix and a counter.
#[derive(Debug)]
pub struct RequestIds {
    prefix: u64,
    next: AtomicU64,
}

impl Default for RequestIds {
    fn default() -> Self {
        RequestIds {
            prefix: fastrand::u64(..),
            next: AtomicU64::new(1),
        }
    }
}

impl RequestIds {
    /// The client's id if it is 1-128 visible ASCII characters, else a new one.
    pub fn for_request(&self, incoming: Option<&HeaderValue>) -> HeaderValue {
        if let Some(v) = incoming {
            let b = v.as_bytes();
            if !b.is_empty() && b.len() <= MAX_LEN && b.iter().all(|c| c.is_ascii_graphic()) {
                return v.clone();
            }
        }
        self.generate()
    }

    pub fn generate(&self) -> HeaderValue {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        // 32 hex digits written in place: one allocation (the header value's own).
        let mut id = [0u8; 32];
        super::trace::write_hex(&mut id[..16], &self.prefix.to_be_bytes());
        super::trace::write_hex(&mut id[16..], &n.to_be_bytes());
        HeaderValue::from_bytes(&id).unwrap_or_else(|_| HeaderValue::from_static("0"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_sane_client_id_and_replaces_others() {
        let ids = RequestIds::default();
        let good = HeaderValue::from_static("abc-123");
        assert_eq!(ids.for_request(Some(&good)), good);
        let spaced = HeaderValue::from_static("has space");
        assert_ne!(ids.for_request(Some(&spaced)), spaced);
        let long = HeaderValue::from_str(&"x".repeat(200)).unwrap();
        assert_eq!(ids.for_request(Some(&long)).len(), 32);
        assert_ne!(ids.generate(), ids.generate());
        let fixed = RequestIds {
            prefix: 0x0123_4567_89ab_cdef,
            next: AtomicU64::new(0x2a),
        };
        assert_eq!(fixed.generate(), "0123456789abcdef000000000000002a");
    }
}
