//! A route's fallback: what it answers instead of the breaker's 503 (SPEC §16).

use super::upstreams::{Upstream, Upstreams, UpstreamsSpec};
use crate::config::FallbackConfig;
use crate::metrics::FallbackKind;
use bytes::Bytes;
use http::HeaderValue;
use std::time::Duration;

/// A static answer, or a fallback upstream (no breaker of its own).
#[derive(Debug)]
pub enum Fallback {
    Static {
        status: u16,
        content_type: HeaderValue,
        body: Bytes,
    },
    Upstream(Box<Upstream>),
}

impl Fallback {
    /// Builds a validated `fallback`; a fallback upstream is resolved here, once, with
    /// the route's `timeout` for connecting and for its answer.
    pub fn build(cfg: &FallbackConfig, timeout: Duration) -> Result<Fallback, String> {
        if let Some(addr) = &cfg.upstream {
            let set = Upstreams::build(&UpstreamsSpec::plain(vec![addr.clone()], timeout))?;
            let upstream = set
                .list()
                .first()
                .cloned()
                .ok_or_else(|| format!("{addr:?}: no address"))?;
            return Ok(Fallback::Upstream(Box::new(upstream)));
        }
        let status = u16::try_from(cfg.status)
            .ok()
            .filter(|s| (100..=599).contains(s))
            .ok_or_else(|| format!("status {} is not within 100-599", cfg.status))?;
        let content_type = HeaderValue::from_str(&cfg.content_type)
            .map_err(|_| format!("content_type {:?} is not a header value", cfg.content_type))?;
        Ok(Fallback::Static {
            status,
            content_type,
            body: Bytes::from(cfg.body.clone().unwrap_or_default()),
        })
    }

    /// The static answer (status, content type, body), if this fallback is one.
    pub fn as_static(&self) -> Option<(u16, &HeaderValue, &Bytes)> {
        match self {
            Fallback::Static {
                status,
                content_type,
                body,
            } => Some((*status, content_type, body)),
            Fallback::Upstream(_) => None,
        }
    }

    pub fn kind(&self) -> FallbackKind {
        match self {
            Fallback::Static { .. } => FallbackKind::Static,
            Fallback::Upstream(_) => FallbackKind::Upstream,
        }
    }
}
