//! Resolved breaker settings: numbers ready for the hot path, built once per route table.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Whether an open breaker rejects traffic.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Reject requests while open or half-open (beyond the probes).
    #[default]
    Enforce,
    /// Run and report the state machine, but never reject (a pause still rejects).
    Observe,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Observe => "observe",
        }
    }
}

/// The layout of a rolling window: `buckets` buckets of `bucket_ms` each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowShape {
    pub bucket_ms: u64,
    pub buckets: u32,
}

impl WindowShape {
    pub fn window_ms(&self) -> u64 {
        self.bucket_ms * u64::from(self.buckets)
    }
}

/// HTTP status codes (100-599) that count as failures, as a bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatusSet([u64; 8]);

impl StatusSet {
    pub fn new() -> Self {
        StatusSet([0; 8])
    }

    /// Adds `lo..=hi`; codes outside 100-599 are ignored.
    pub fn add_range(&mut self, lo: u16, hi: u16) {
        for code in lo.max(100)..=hi.min(599) {
            let i = usize::from(code - 100);
            self.0[i / 64] |= 1 << (i % 64);
        }
    }

    pub fn contains(&self, code: u16) -> bool {
        if !(100..=599).contains(&code) {
            return false;
        }
        let i = usize::from(code - 100);
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
}

/// gRPC status codes (0-16) that count as failures, as a bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GrpcCodes(u32);

impl GrpcCodes {
    /// DEADLINE_EXCEEDED (4), RESOURCE_EXHAUSTED (8), INTERNAL (13), UNAVAILABLE (14).
    pub const DEFAULT: GrpcCodes = GrpcCodes(1 << 4 | 1 << 8 | 1 << 13 | 1 << 14);
    /// The highest gRPC status code.
    pub const MAX: u32 = 16;

    /// The set of `codes`; codes above [`GrpcCodes::MAX`] are ignored.
    pub fn of(codes: impl IntoIterator<Item = u32>) -> Self {
        GrpcCodes(
            codes
                .into_iter()
                .filter(|c| *c <= Self::MAX)
                .fold(0, |set, c| set | 1 << c),
        )
    }

    pub fn contains(&self, code: u32) -> bool {
        code <= Self::MAX && self.0 & (1 << code) != 0
    }

    /// The codes in the set, lowest first.
    pub fn codes(&self) -> Vec<i64> {
        (0..=Self::MAX)
            .filter(|c| self.contains(*c))
            .map(i64::from)
            .collect()
    }
}

/// Every knob of one route's breaker, resolved from `[defaults.breaker]` and the route.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub error_threshold_percentage: u32,
    pub volume_threshold: u32,
    pub window: WindowShape,
    pub reset_timeout_ms: u64,
    /// Back-off ceiling: each reopening from half-open doubles the open time up to this;
    /// at or below `reset_timeout_ms` there is no back-off.
    pub reset_timeout_max_ms: u64,
    /// How long a closed-again breaker ramps traffic back (`recovering`); 0 closes at once.
    pub recovery_ms: u64,
    pub half_open_probes: u32,
    /// Upstream response-header timeout; a timeout is a failure.
    pub timeout: Duration,
    pub failure_statuses: StatusSet,
    /// gRPC status codes (0-16) that count as failures, as a bit set.
    pub failure_grpc_codes: GrpcCodes,
    /// 0 turns slow-call detection off.
    pub slow_call_ms: u64,
    pub slow_call_rate_threshold: u32,
    pub mode: Mode,
}

impl Default for Settings {
    /// The spec's defaults: 50 %, volume 10, 10 s in 10 buckets, reset after 30 s, one
    /// probe, 5 s timeout, 5xx are failures, no slow-call detection, enforce, no back-off,
    /// no recovery ramp.
    fn default() -> Self {
        let mut failure_statuses = StatusSet::new();
        failure_statuses.add_range(500, 599);
        Settings {
            error_threshold_percentage: 50,
            volume_threshold: 10,
            window: WindowShape {
                bucket_ms: 1_000,
                buckets: 10,
            },
            reset_timeout_ms: 30_000,
            reset_timeout_max_ms: 0,
            recovery_ms: 0,
            half_open_probes: 1,
            timeout: Duration::from_secs(5),
            failure_statuses,
            failure_grpc_codes: GrpcCodes::DEFAULT,
            slow_call_ms: 0,
            slow_call_rate_threshold: 100,
            mode: Mode::Enforce,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_set_holds_ranges_and_single_codes() {
        let mut s = StatusSet::new();
        s.add_range(500, 599);
        s.add_range(429, 429);
        assert!(s.contains(500) && s.contains(599) && s.contains(429));
        assert!(!s.contains(499) && !s.contains(404) && !s.contains(600) && !s.contains(0));
    }

    #[test]
    fn grpc_codes_default_and_bounds() {
        let d = GrpcCodes::DEFAULT;
        assert_eq!(d.codes(), vec![4, 8, 13, 14]);
        assert!(!d.contains(0) && !d.contains(99));
        let s = GrpcCodes::of([2, 16, 17]);
        assert_eq!(s.codes(), vec![2, 16]);
    }
}
