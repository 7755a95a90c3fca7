//! The state one fusegate process shares between its services: the current route table
//! (one `ArcSwap` snapshot), the breakers by route name, the clock, and the lifecycle
//! (requests in flight, draining).

use crate::breaker::Transition;
use crate::clock::Clock;
use crate::config::Config;
use crate::runtime::{BreakerRegistry, Route, Runtime};
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// Everything the proxy (and later the admin port and control plane) reads.
#[derive(Debug)]
pub struct Gateway {
    runtime: ArcSwap<Runtime>,
    pub breakers: BreakerRegistry,
    pub clock: Clock,
    inflight: AtomicUsize,
    draining: AtomicBool,
}

impl Gateway {
    /// Builds generation 1 of the route table from a validated config.
    pub fn new(config: Config) -> Result<Arc<Gateway>, String> {
        let clock = Clock::new();
        let breakers = BreakerRegistry::new();
        let runtime = Runtime::build(Arc::new(config), &breakers, 1, clock.now_ms())?;
        Ok(Arc::new(Gateway {
            runtime: ArcSwap::from_pointee(runtime),
            breakers,
            clock,
            inflight: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
        }))
    }

    /// The current route table. Hold it for the whole of a request.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Reports a breaker transition.
    pub fn on_transition(&self, route: &Route, t: Transition) {
        let window = route.breaker.snapshot(&route.settings, t.at_ms).window;
        log::warn!(
            "breaker {}: {} -> {} (window: {} requests, {} failed, {} slow)",
            route.name,
            t.from.as_str(),
            t.to.as_str(),
            window.total,
            window.failures,
            window.slow
        );
    }

    /// Counts a request as in flight until the guard is dropped.
    pub fn track_request(self: &Arc<Self>) -> InflightGuard {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        InflightGuard(self.clone())
    }

    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Acquire)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

/// Decrements the in-flight count when dropped.
#[derive(Debug)]
pub struct InflightGuard(Arc<Gateway>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}
