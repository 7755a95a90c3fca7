//! A keep-alive pool for upstream connections that watches them lazily.
//!
//! [`pingora_pool::ConnectionPool`] spawns a task for every connection released to it,
//! which waits on the socket, a timer and two channels until the connection is picked up
//! again; picking it up wakes that task and waits for it to let go. This pool keeps idle
//! connections on a queue per group key instead, reused in turn. A connection is checked
//! when it is taken (the caller tests it for a close or stray data, as before), and one
//! sweeper task per pool drops connections that expired or were closed by the server
//! while idle, once a second, and stops when the pool is empty.

use super::PoolCallback;
use crate::protocols::Stream;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// How often idle connections are looked at for expiry and closes.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

struct Idle {
    stream: Stream,
    since: Instant,
    expires: Option<Instant>,
}

impl Idle {
    fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|at| at <= now)
    }
}

#[derive(Default)]
struct Shelves {
    /// Idle connections per group key, in the order they were released. The keys are
    /// already hashes of the peers.
    by_key: HashMap<u64, VecDeque<Idle>, ahash::RandomState>,
    total: usize,
    sweeping: bool,
}

/// Idle upstream connections, at most `size` of them in all.
pub(crate) struct IdlePool {
    size: usize,
    shelves: Mutex<Shelves>,
    /// Counts connections closed because the server wrote to them while idle.
    unexpected_data: Arc<AtomicU64>,
}

impl IdlePool {
    pub(crate) fn new(size: usize, unexpected_data: Arc<AtomicU64>) -> Arc<Self> {
        Arc::new(IdlePool {
            size,
            shelves: Mutex::new(Shelves::default()),
            unexpected_data,
        })
    }

    /// The connection under `key` that has been idle longest and has not expired (as in
    /// the released pool, connections are reused in turn); expired ones found on the way
    /// are closed.
    pub(crate) fn take(&self, key: u64) -> Option<Stream> {
        let now = Instant::now();
        let mut expired = Vec::new();
        let found = {
            let mut shelves = self.shelves.lock();
            let Shelves { by_key, total, .. } = &mut *shelves;
            let shelf = by_key.get_mut(&key)?;
            let mut found = None;
            while let Some(idle) = shelf.pop_front() {
                *total -= 1;
                if idle.expired(now) {
                    expired.push(idle);
                } else {
                    found = Some(idle.stream);
                    break;
                }
            }
            found
        };
        drop(expired);
        found
    }

    /// Shelve `stream` under `key`. When the pool is full, the oldest connection under the
    /// same key makes room (and `evicted` hears how long it was idle); when that key has
    /// none, `stream` is closed instead.
    pub(crate) fn put(
        self: &Arc<Self>,
        key: u64,
        stream: Stream,
        idle_timeout: Option<Duration>,
        evicted: Option<&PoolCallback>,
    ) {
        if self.size == 0 {
            return;
        }
        let now = Instant::now();
        let idle = Idle {
            stream,
            since: now,
            expires: idle_timeout.map(|t| now + t),
        };
        let (out, start_sweeper) = {
            let mut shelves = self.shelves.lock();
            let start_sweeper = !std::mem::replace(&mut shelves.sweeping, true);
            let room = shelves.total < self.size;
            shelves.total += usize::from(room);
            let shelf = shelves.by_key.entry(key).or_default();
            // What leaves the pool (closed once the lock is let go), and whether it was
            // evicted to make room.
            let out = if room {
                shelf.push_back(idle);
                None
            } else if let Some(oldest) = shelf.pop_front() {
                shelf.push_back(idle);
                Some((oldest, true))
            } else {
                Some((idle, false))
            };
            (out, start_sweeper)
        };
        if let Some((idle, true)) = &out {
            if let Some(callback) = evicted {
                callback(idle.since.elapsed());
            }
        }
        drop(out);
        if start_sweeper {
            let pool = Arc::downgrade(self);
            pingora_runtime::current_handle().spawn(sweep_while_used(pool));
        }
    }

    /// Close the connections that expired or that the server closed (or wrote to) while
    /// idle. Returns whether any are left.
    fn sweep(&self, now: Instant) -> bool {
        let mut out = Vec::new();
        let mut shelves = self.shelves.lock();
        let Shelves {
            by_key,
            total,
            sweeping,
        } = &mut *shelves;
        by_key.retain(|_, shelf| {
            let mut i = 0;
            while i < shelf.len() {
                if shelf[i].expired(now)
                    || !super::test_reusable_stream(&mut shelf[i].stream, &self.unexpected_data)
                {
                    out.extend(shelf.remove(i));
                } else {
                    i += 1;
                }
            }
            !shelf.is_empty()
        });
        *total -= out.len();
        *sweeping = *total > 0;
        let left = *sweeping;
        drop(shelves);
        drop(out);
        left
    }
}

async fn sweep_while_used(pool: Weak<IdlePool>) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        if !pool.sweep(Instant::now()) {
            return;
        }
    }
}
