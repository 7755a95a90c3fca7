//! Per-route rate limits (SPEC §6): a governor token bucket per route, or per route and
//! client IP.
//!
//! Limiters are kept by route name across route-table rebuilds while their settings stay
//! the same, so a reload does not hand every client a fresh burst. Per-client buckets are
//! bounded: idle ones are dropped by [`RateLimit::maintain`] (run by
//! [`crate::background`]), and once
//! [`MAX_CLIENT_KEYS`] clients are tracked, new ones share one overflow bucket.

use crate::config::{RateLimitConfig, RateLimitKey};
use governor::clock::{Clock as _, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::state::StateStore;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;

/// Most client addresses tracked per route before new ones share the overflow bucket.
pub const MAX_CLIENT_KEYS: usize = 100_000;

/// Where clients beyond [`MAX_CLIENT_KEYS`] share a bucket.
const OVERFLOW_KEY: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

/// A per-client bucket store that stops growing at [`MAX_CLIENT_KEYS`]: a client new
/// beyond that is counted in the shared overflow bucket.
#[derive(Default)]
struct BoundedStore(DashMapStateStore<IpAddr>);

impl StateStore for BoundedStore {
    type Key = IpAddr;

    fn measure_and_replace<T, F, E>(&self, key: &IpAddr, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let key = if self.0.len() >= MAX_CLIENT_KEYS && !self.0.contains_key(key) {
            &OVERFLOW_KEY
        } else {
            key
        };
        self.0.measure_and_replace(key, f)
    }
}

impl ShrinkableKeyedStateStore<IpAddr> for BoundedStore {
    fn retain_recent(&self, drop_below: Nanos) {
        ShrinkableKeyedStateStore::retain_recent(&self.0, drop_below);
    }

    fn shrink_to_fit(&self) {
        self.0.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

type ClientLimiter = RateLimiter<
    IpAddr,
    BoundedStore,
    DefaultClock,
    NoOpMiddleware<<DefaultClock as governor::clock::Clock>::Instant>,
>;

enum Buckets {
    Route(DefaultDirectRateLimiter),
    Client(ClientLimiter),
}

/// One route's limiter.
pub struct RateLimit {
    config: RateLimitConfig,
    buckets: Buckets,
}

impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RateLimit({:?})", self.config)
    }
}

impl RateLimit {
    /// The settings this limiter was made with.
    pub fn config(&self) -> &RateLimitConfig {
        &self.config
    }

    pub fn new(config: &RateLimitConfig) -> Self {
        let rps = NonZeroU32::new(config.requests_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_second(rps).allow_burst(burst);
        let buckets = match config.key {
            RateLimitKey::Route => Buckets::Route(RateLimiter::direct(quota)),
            RateLimitKey::ClientIp => Buckets::Client(RateLimiter::new(
                quota,
                BoundedStore::default(),
                DefaultClock::default(),
            )),
        };
        RateLimit {
            config: config.clone(),
            buckets,
        }
    }

    /// Takes one token; on refusal, the whole seconds until one is available (at least 1).
    pub fn check(&self, client: Option<IpAddr>) -> Result<(), u64> {
        let result = match &self.buckets {
            Buckets::Route(l) => l.check().map_err(|n| n.wait_time_from(l.clock().now())),
            Buckets::Client(l) => l
                .check_key(&client.unwrap_or(OVERFLOW_KEY))
                .map_err(|n| n.wait_time_from(l.clock().now())),
        };
        result.map_err(|wait| wait.as_millis().div_ceil(1_000).max(1) as u64)
    }

    /// Drops per-client buckets that are full again (idle clients).
    pub fn maintain(&self) {
        if let Buckets::Client(l) = &self.buckets {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    /// Client buckets currently tracked (0 for a per-route limit).
    pub fn tracked_clients(&self) -> usize {
        match &self.buckets {
            Buckets::Route(_) => 0,
            Buckets::Client(l) => l.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(rps: u32, burst: u32, key: RateLimitKey) -> RateLimit {
        RateLimit::new(&RateLimitConfig {
            requests_per_second: rps,
            burst,
            key,
        })
    }

    #[test]
    fn a_burst_is_allowed_then_refused_with_a_retry_after() {
        let l = limit(1, 3, RateLimitKey::Route);
        for _ in 0..3 {
            assert_eq!(l.check(None), Ok(()));
        }
        assert_eq!(l.check(None), Err(1));
    }

    #[test]
    fn clients_have_their_own_buckets() {
        let l = limit(1, 2, RateLimitKey::ClientIp);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        assert!(l.check(Some(a)).is_ok() && l.check(Some(a)).is_ok());
        assert!(l.check(Some(a)).is_err());
        assert!(l.check(Some(b)).is_ok());
        assert_eq!(l.tracked_clients(), 2);
    }

    #[test]
    fn client_buckets_stop_growing_at_the_bound() {
        let l = limit(1, 1, RateLimitKey::ClientIp);
        for i in 0..(MAX_CLIENT_KEYS as u32 + 50) {
            let _ = l.check(Some(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))));
        }
        assert_eq!(
            l.tracked_clients(),
            MAX_CLIENT_KEYS + 1,
            "the overflow bucket is one more"
        );
    }
}
