//! What outlives route tables, keyed by route name (breakers, rate limiters, cache
//! storages, upstream sets with their health), kept in one kind of registry. A rebuilt table (a reload) picks up each
//! surviving route's value; after the new table is in force, [`ByRoute::retain`] drops
//! what no route uses any more, by one rule for every kind, so nothing keyed by route can
//! outlive its route.
//!
//! Only table builds, reloads and operator actions take the lock; requests use the values
//! their route holds.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Values of type `T` by route name.
#[derive(Debug)]
pub struct ByRoute<T> {
    by_route: Mutex<HashMap<String, T>>,
}

impl<T> Default for ByRoute<T> {
    fn default() -> Self {
        ByRoute {
            by_route: Mutex::new(HashMap::new()),
        }
    }
}

impl<T: Clone> ByRoute<T> {
    /// The value for `route`: `decide` sees the value kept so far (if any) and returns
    /// the one to keep from now on, which is also returned.
    pub fn update(&self, route: &str, decide: impl FnOnce(Option<&T>) -> T) -> T {
        let mut map = self.lock();
        match map.get_mut(route) {
            Some(kept) => {
                let next = decide(Some(kept));
                *kept = next.clone();
                next
            }
            None => {
                let next = decide(None);
                map.insert(route.to_string(), next.clone());
                next
            }
        }
    }

    /// The value kept for `route`.
    pub fn get(&self, route: &str) -> Option<T> {
        self.lock().get(route).cloned()
    }

    /// Every value kept.
    pub fn values(&self) -> Vec<T> {
        self.lock().values().cloned().collect()
    }

    /// Forgets every route for which `keep` is false, and returns what was dropped so
    /// the caller can release it.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) -> Vec<T> {
        let mut map = self.lock();
        let gone: Vec<String> = map.keys().filter(|k| !keep(k)).cloned().collect();
        gone.iter().filter_map(|k| map.remove(k)).collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, T>> {
        self.by_route.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_kept_while_decide_keeps_it_and_dropped_with_its_route() {
        let r: ByRoute<u32> = ByRoute::default();
        assert_eq!(r.update("a", |old| old.copied().unwrap_or(1)), 1);
        assert_eq!(r.update("a", |old| old.copied().unwrap_or(2)), 1);
        assert_eq!(r.update("a", |old| old.map_or(0, |v| v + 1)), 2);
        r.update("b", |_| 7);
        let dropped = r.retain(|name| name == "a");
        assert_eq!(dropped, vec![7]);
        assert_eq!(r.get("a"), Some(2));
        assert_eq!(r.get("b"), None);
        assert_eq!(r.len(), 1);
    }
}
