//! A bounded in-memory cache storage for pingora-cache.
//!
//! pingora-cache's own `MemCache` is documented as test-only, and pingora's eviction
//! managers bound memory only loosely (they purge after the fact, from a spawned task).
//! This storage bounds itself: every finished write evicts least-recently-used entries,
//! under the same lock, until the bytes held are at most `max_bytes`. An object larger
//! than `max_object_bytes` is never stored.
//!
//! Entries are keyed by the cache key's combined hash (primary key plus Vary variance).
//! Lookups return stale entries too: freshness is pingora's decision, and a stale entry
//! is what stale-if-error serves.

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use lru::LruCache;
use pingora::cache::key::{CacheHashKey, CacheKey, HashBinary};
use pingora::cache::storage::{
    HandleHit, HandleMiss, MissFinishType, PurgeOutcome, PurgeTarget, PurgeType,
};
use pingora::cache::trace::SpanHandle;
use pingora::cache::{CacheMeta, HitHandler, MissHandler, Storage};
use pingora::{Error, ErrorType, Result};
use prometheus::IntCounter;
use std::any::Any;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Bytes an entry is charged on top of its body and serialized header.
const ENTRY_OVERHEAD: usize = 128;

struct Entry {
    meta: (Vec<u8>, Vec<u8>),
    body: Bytes,
    weight: usize,
}

struct Inner {
    lru: LruCache<HashBinary, Arc<Entry>>,
    used: usize,
    /// `fusegate_cache_evictions_total` of the route using this storage.
    evictions: Option<IntCounter>,
}

/// The storage of one route's cache.
pub struct BoundedStorage {
    inner: Mutex<Inner>,
    max_bytes: AtomicUsize,
    max_object_bytes: AtomicUsize,
}

impl BoundedStorage {
    pub fn new(max_bytes: usize, max_object_bytes: usize) -> Self {
        BoundedStorage {
            inner: Mutex::new(Inner {
                lru: LruCache::unbounded(),
                used: 0,
                evictions: None,
            }),
            max_bytes: AtomicUsize::new(max_bytes),
            max_object_bytes: AtomicUsize::new(max_object_bytes),
        }
    }

    /// Changes the bounds (a reload), evicting at once if the new bound is lower.
    pub fn set_limits(&self, max_bytes: usize, max_object_bytes: usize) {
        self.max_bytes.store(max_bytes, Ordering::Release);
        self.max_object_bytes
            .store(max_object_bytes, Ordering::Release);
        let mut inner = self.lock();
        evict_to(&mut inner, max_bytes);
    }

    /// Counts this storage's evictions in `counter` from now on.
    pub fn count_evictions_in(&self, counter: IntCounter) {
        self.lock().evictions = Some(counter);
    }

    /// Drops every entry; returns how many there were.
    pub fn purge_all(&self) -> usize {
        let mut inner = self.lock();
        let n = inner.lru.len();
        inner.lru.clear();
        inner.used = 0;
        n
    }

    /// Drops the primary entry of `key` (with it, every `Vary` variant becomes
    /// unreachable: pingora finds variants through the primary entry). Returns whether
    /// there was one.
    pub fn invalidate(&self, key: &CacheKey) -> bool {
        self.remove(&key.primary_bin())
    }

    /// Drops one entry; returns whether there was one.
    fn remove(&self, key: &HashBinary) -> bool {
        let mut inner = self.lock();
        match inner.lru.pop(key) {
            Some(e) => {
                inner.used -= e.weight;
                true
            }
            None => false,
        }
    }

    /// Drops every entry and forgets its route: the storage is ready for another.
    pub fn release(&self) {
        let mut inner = self.lock();
        inner.lru = LruCache::unbounded();
        inner.used = 0;
        inner.evictions = None;
    }

    /// Bytes held (bodies, headers and per-entry overhead).
    pub fn used_bytes(&self) -> usize {
        self.lock().used
    }

    pub fn entries(&self) -> usize {
        self.lock().lru.len()
    }

    pub fn max_bytes(&self) -> usize {
        self.max_bytes.load(Ordering::Acquire)
    }

    pub fn max_object_bytes(&self) -> usize {
        self.max_object_bytes.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn insert(&self, key: HashBinary, entry: Entry) -> bool {
        let max = self.max_bytes.load(Ordering::Acquire);
        if entry.weight > max || entry.body.len() > self.max_object_bytes() {
            return false;
        }
        let mut inner = self.lock();
        inner.used += entry.weight;
        if let Some(old) = inner.lru.put(key, Arc::new(entry)) {
            inner.used -= old.weight;
        }
        evict_to(&mut inner, max);
        true
    }
}

fn evict_to(inner: &mut Inner, max: usize) {
    while inner.used > max {
        match inner.lru.pop_lru() {
            Some((_, e)) => {
                inner.used -= e.weight;
                if let Some(c) = &inner.evictions {
                    c.inc();
                }
            }
            None => break,
        }
    }
}

fn too_large() -> Box<Error> {
    Error::explain(
        ErrorType::InternalError,
        "cache object over max_object_bytes",
    )
}

#[async_trait]
impl Storage for BoundedStorage {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let entry = self.lock().lru.get(&key.combined_bin()).cloned();
        let Some(entry) = entry else {
            return Ok(None);
        };
        let meta = CacheMeta::deserialize(&entry.meta.0, &entry.meta.1)?;
        let end = entry.body.len();
        Ok(Some((
            meta,
            Box::new(Hit {
                body: entry.body.clone(),
                start: 0,
                end,
                done: false,
            }),
        )))
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        Ok(Box::new(Miss {
            storage: self,
            key: key.combined_bin(),
            meta: meta.serialize()?,
            body: BytesMut::new(),
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        Ok(if self.remove(&target.key().combined_bin()) {
            PurgeOutcome::Purged(None)
        } else {
            PurgeOutcome::NotFound
        })
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let key = key.combined_bin();
        let meta = meta.serialize()?;
        let body = match self.lock().lru.peek(&key) {
            Some(e) => e.body.clone(),
            None => return Ok(false),
        };
        let weight = body.len() + meta.0.len() + meta.1.len() + ENTRY_OVERHEAD;
        Ok(self.insert(key, Entry { meta, body, weight }))
    }

    fn support_streaming_partial_write(&self) -> bool {
        false
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

struct Hit {
    body: Bytes,
    start: usize,
    end: usize,
    done: bool,
}

#[async_trait]
impl HandleHit for Hit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        Ok(Some(self.body.slice(self.start..self.end)))
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        let len = self.body.len();
        if start >= len {
            return Error::e_explain(ErrorType::InternalError, "seek past the end of the body");
        }
        self.start = start;
        self.end = end.map_or(len, |e| e.min(len));
        self.done = false;
        Ok(())
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

struct Miss {
    storage: &'static BoundedStorage,
    key: HashBinary,
    meta: (Vec<u8>, Vec<u8>),
    body: BytesMut,
}

#[async_trait]
impl HandleMiss for Miss {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        if self.body.len() + data.len() > self.storage.max_object_bytes() {
            return Err(too_large());
        }
        self.body.extend_from_slice(&data);
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<MissFinishType> {
        let body = self.body.freeze();
        let weight = body.len() + self.meta.0.len() + self.meta.1.len() + ENTRY_OVERHEAD;
        let entry = Entry {
            meta: self.meta,
            body,
            weight,
        };
        if self.storage.insert(self.key, entry) {
            Ok(MissFinishType::Created(weight))
        } else {
            Err(too_large())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(body: usize) -> Entry {
        Entry {
            meta: (vec![0; 10], vec![0; 10]),
            body: Bytes::from(vec![7u8; body]),
            weight: body + 20 + ENTRY_OVERHEAD,
        }
    }

    #[test]
    fn stays_under_max_bytes_by_evicting_the_least_recently_used() {
        let s = BoundedStorage::new(10_000, 5_000);
        for i in 0..100u8 {
            assert!(s.insert([i; 16], entry(1_000)));
            assert!(s.used_bytes() <= 10_000);
        }
        assert_eq!(s.entries(), 10_000 / (1_000 + 20 + ENTRY_OVERHEAD));
        // The newest survive.
        assert!(s.lock().lru.contains(&[99; 16]));
        assert!(!s.lock().lru.contains(&[0; 16]));
    }

    #[test]
    fn refuses_objects_over_the_limits() {
        let s = BoundedStorage::new(10_000, 5_000);
        assert!(!s.insert([1; 16], entry(5_001)));
        assert!(!BoundedStorage::new(1_000, 5_000).insert([1; 16], entry(2_000)));
        assert_eq!(s.used_bytes(), 0);
    }

    #[test]
    fn lower_limits_evict_at_once() {
        let s = BoundedStorage::new(100_000, 5_000);
        for i in 0..20u8 {
            s.insert([i; 16], entry(1_000));
        }
        s.set_limits(3_000, 5_000);
        assert!(s.used_bytes() <= 3_000);
    }
}
