//! Breakers by route name. They live outside the route table so that a rebuilt table (a
//! reload) picks up each surviving route's breaker with its state, window and pause.
//! Only table builds and operator actions take the lock; requests use the `Arc<Breaker>`
//! held by their route.

use crate::breaker::{Breaker, WindowShape};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

#[derive(Debug, Default)]
pub struct BreakerRegistry {
    by_route: Mutex<HashMap<String, Arc<Breaker>>>,
}

impl BreakerRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// The breaker of `route`, made closed if the route is new. If the window shape
    /// changed, the breaker is replaced by one with the new window and the same state.
    pub fn get_or_create(&self, route: &str, shape: WindowShape, now_ms: u64) -> Arc<Breaker> {
        let mut map = self.by_route.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(b) = map.get(route) {
            if b.window_shape() == shape {
                return b.clone();
            }
            let reshaped = Arc::new(b.reshaped(shape));
            map.insert(route.to_string(), reshaped.clone());
            return reshaped;
        }
        let b = Arc::new(Breaker::new(shape, now_ms));
        map.insert(route.to_string(), b.clone());
        b
    }

    /// Forgets every route not in `keep`.
    pub fn retain(&self, keep: &dyn Fn(&str) -> bool) {
        let mut map = self.by_route.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|name, _| keep(name));
    }
}
