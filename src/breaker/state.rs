//! The breaker state machine.
//!
//! The state lives in one `AtomicU64`: state (2 bits), generation (14 bits) and the time of
//! the last transition (48 bits of milliseconds). Every transition bumps the generation,
//! so a permit or outcome from an earlier period is recognised and ignored. Half-open
//! probe accounting lives in a second word tagged with the same generation.
//!
//! A reload that changes a route's window gives it a new [`Breaker`] (new window) that
//! *shares* the old one's state words: a permit taken from the old breaker (a half-open
//! probe in flight across the reload) settles the same probe slot, so no slot is ever
//! stranded and no more than `half_open_probes` probes run at once.

use super::settings::{Mode, Settings};
use super::window::{Counts, Window};
use super::WindowShape;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering::*};
use std::sync::Arc;

/// A breaker's state. The numbers are those of the `fusegate_breaker_state` metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
    /// Paused by an operator.
    ForcedOpen = 3,
}

impl State {
    fn from_bits(b: u64) -> State {
        match b & 0b11 {
            0 => State::Closed,
            1 => State::Open,
            2 => State::HalfOpen,
            _ => State::ForcedOpen,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::ForcedOpen => "forced_open",
        }
    }
}

/// Why a request failed, as far as the breaker is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The upstream answered with a status in `failure_statuses`.
    Status,
    /// No connection could be made.
    Connect,
    /// The upstream did not answer within `timeout`.
    Timeout,
    /// The connection broke or the upstream sent an invalid response.
    Reset,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Status => "status",
            FailureKind::Connect => "connect",
            FailureKind::Timeout => "timeout",
            FailureKind::Reset => "reset",
        }
    }
}

/// What happened to a request that reached (or tried to reach) the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub failure: Option<FailureKind>,
    /// How long the request took, for slow-call detection.
    pub duration_ms: u64,
}

impl Outcome {
    pub fn success(duration_ms: u64) -> Self {
        Outcome {
            failure: None,
            duration_ms,
        }
    }

    pub fn failure(kind: FailureKind, duration_ms: u64) -> Self {
        Outcome {
            failure: Some(kind),
            duration_ms,
        }
    }
}

/// Leave to send one request upstream. Hand it back through [`Breaker::record`] or
/// [`Breaker::release`]; a dropped half-open permit would hold its probe slot until the
/// breaker next changes state.
#[must_use = "a permit must be recorded or released"]
#[derive(Debug, PartialEq, Eq)]
pub struct Permit {
    generation: u64,
    probe: bool,
}

impl Permit {
    /// Whether this request is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

/// A request the breaker turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    pub state: State,
    /// Whole seconds until the breaker will admit probes; `None` while paused.
    pub retry_after_secs: Option<u64>,
}

/// A state change, for logs, metrics and events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: State,
    pub to: State,
    pub at_ms: u64,
}

/// The answer to [`Breaker::try_acquire`]: admitted or not, and the transition (open to
/// half-open) that deciding may have made.
#[derive(Debug)]
pub struct Acquire {
    pub result: Result<Permit, Rejection>,
    pub transition: Option<Transition>,
}

/// A point-in-time view for the admin port.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The state the next request would meet (an open breaker past its reset timeout
    /// reads as half-open).
    pub state: State,
    /// Time of the last transition, in the breaker's clock.
    pub since_ms: u64,
    pub window: Counts,
    pub rejected_total: u64,
    pub retry_after_secs: Option<u64>,
}

const GEN_BITS: u32 = 14;
const GEN_MASK: u64 = (1 << GEN_BITS) - 1;
const TIME_SHIFT: u32 = 2 + GEN_BITS;
const TIME_MASK: u64 = (1 << (64 - TIME_SHIFT)) - 1;

const PROBE_COUNT_BITS: u32 = 25;
const PROBE_COUNT_MASK: u64 = (1 << PROBE_COUNT_BITS) - 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Word {
    state: State,
    generation: u64,
    since_ms: u64,
}

impl Word {
    fn unpack(w: u64) -> Word {
        Word {
            state: State::from_bits(w),
            generation: (w >> 2) & GEN_MASK,
            since_ms: w >> TIME_SHIFT,
        }
    }

    fn pack(self) -> u64 {
        self.state as u64
            | ((self.generation & GEN_MASK) << 2)
            | ((self.since_ms & TIME_MASK) << TIME_SHIFT)
    }

    fn next(self, state: State, now_ms: u64) -> Word {
        Word {
            state,
            generation: (self.generation + 1) & GEN_MASK,
            since_ms: now_ms & TIME_MASK,
        }
    }
}

/// Probe accounting for one half-open period: (generation, taken, succeeded).
fn unpack_probes(w: u64, generation: u64) -> (u64, u64) {
    if w & GEN_MASK != generation {
        return (0, 0);
    }
    (
        (w >> GEN_BITS) & PROBE_COUNT_MASK,
        (w >> (GEN_BITS + PROBE_COUNT_BITS)) & PROBE_COUNT_MASK,
    )
}

fn pack_probes(generation: u64, taken: u64, succeeded: u64) -> u64 {
    (generation & GEN_MASK)
        | ((taken & PROBE_COUNT_MASK) << GEN_BITS)
        | ((succeeded & PROBE_COUNT_MASK) << (GEN_BITS + PROBE_COUNT_BITS))
}

/// The state words of a breaker, shared with the breakers that replace it on a reload.
#[derive(Debug)]
struct Core {
    word: AtomicU64,
    probes: AtomicU64,
    rejected: AtomicU64,
}

/// One route's circuit breaker.
#[derive(Debug)]
pub struct Breaker {
    core: Arc<Core>,
    window: Window,
}

impl Breaker {
    /// A closed breaker with an empty window, its `since` set to `now_ms`.
    pub fn new(shape: WindowShape, now_ms: u64) -> Self {
        let w = Word {
            state: State::Closed,
            generation: 0,
            since_ms: now_ms & TIME_MASK,
        };
        Breaker {
            core: Arc::new(Core {
                word: AtomicU64::new(w.pack()),
                // Generation GEN_MASK is never the first half-open generation.
                probes: AtomicU64::new(pack_probes(GEN_MASK, 0, 0)),
                rejected: AtomicU64::new(0),
            }),
            window: Window::new(shape),
        }
    }

    /// A breaker with a new window shape (and an empty window) that shares this one's
    /// state, pause and probe slots: used when a reload changes the window. Permits taken
    /// from either breaker settle on the shared state, so a probe in flight across the
    /// reload frees its slot when it ends, whichever breaker it was taken from.
    pub fn reshaped(&self, shape: WindowShape) -> Self {
        Breaker {
            core: self.core.clone(),
            window: Window::new(shape),
        }
    }

    pub fn window_shape(&self) -> WindowShape {
        self.window.shape()
    }

    /// The stored state (an open breaker stays `Open` here until a request moves it on).
    pub fn state(&self) -> State {
        Word::unpack(self.core.word.load(Acquire)).state
    }

    /// Whether a request now would be turned away, without taking a probe slot or
    /// changing state: paused, or open and not yet past its reset timeout. Observe mode
    /// never rejects for an open breaker.
    pub fn rejects(&self, s: &Settings, now_ms: u64) -> bool {
        let w = Word::unpack(self.core.word.load(Acquire));
        match w.state {
            State::ForcedOpen => true,
            State::Open => {
                s.mode == Mode::Enforce && now_ms < w.since_ms.saturating_add(s.reset_timeout_ms)
            }
            _ => false,
        }
    }

    /// Decides whether a request may go upstream.
    pub fn try_acquire(&self, s: &Settings, now_ms: u64) -> Acquire {
        let mut transition = None;
        loop {
            let raw = self.core.word.load(Acquire);
            let w = Word::unpack(raw);
            let result = match w.state {
                State::Closed => Ok(self.permit(w, false)),
                State::ForcedOpen => Err(Rejection {
                    state: State::ForcedOpen,
                    retry_after_secs: None,
                }),
                State::Open => {
                    let reopen_at = w.since_ms.saturating_add(s.reset_timeout_ms);
                    if now_ms >= reopen_at {
                        let next = w.next(State::HalfOpen, now_ms);
                        if self.cas(raw, next) {
                            transition = Some(Transition {
                                from: State::Open,
                                to: State::HalfOpen,
                                at_ms: now_ms,
                            });
                        }
                        continue;
                    }
                    if s.mode == Mode::Observe {
                        Ok(self.permit(w, false))
                    } else {
                        Err(Rejection {
                            state: State::Open,
                            retry_after_secs: Some(ceil_secs(reopen_at - now_ms)),
                        })
                    }
                }
                State::HalfOpen => {
                    if self.take_probe(w.generation, s.half_open_probes) {
                        Ok(self.permit(w, true))
                    } else if s.mode == Mode::Observe {
                        Ok(self.permit(w, false))
                    } else {
                        Err(Rejection {
                            state: State::HalfOpen,
                            retry_after_secs: Some(1),
                        })
                    }
                }
            };
            if result.is_err() {
                self.core.rejected.fetch_add(1, Relaxed);
            }
            return Acquire { result, transition };
        }
    }

    /// Records the outcome of an admitted request completed at `now_ms`.
    pub fn record(
        &self,
        permit: Permit,
        outcome: Outcome,
        s: &Settings,
        now_ms: u64,
    ) -> Option<Transition> {
        let slow = s.slow_call_ms > 0 && outcome.duration_ms > s.slow_call_ms;
        let failed = outcome.failure.is_some();
        let raw = self.core.word.load(Acquire);
        let w = Word::unpack(raw);
        if w.generation != permit.generation {
            // The breaker moved on while this request ran: its outcome belongs to a
            // period that is over.
            return None;
        }
        match (w.state, permit.probe) {
            (State::Closed, false) => {
                self.window.record(now_ms, failed, slow);
                let c = self.window.counts(now_ms);
                if trips(&c, s) && self.cas(raw, w.next(State::Open, now_ms)) {
                    return Some(Transition {
                        from: State::Closed,
                        to: State::Open,
                        at_ms: now_ms,
                    });
                }
                None
            }
            (State::HalfOpen, true) => {
                if failed || slow {
                    if self.cas(raw, w.next(State::Open, now_ms)) {
                        return Some(Transition {
                            from: State::HalfOpen,
                            to: State::Open,
                            at_ms: now_ms,
                        });
                    }
                    return None;
                }
                let succeeded = self.probe_succeeded(w.generation);
                if succeeded >= u64::from(s.half_open_probes) {
                    // Cleared before the state flips, so no closed-period outcome is wiped.
                    self.window.clear();
                    if self.cas(raw, w.next(State::Closed, now_ms)) {
                        return Some(Transition {
                            from: State::HalfOpen,
                            to: State::Closed,
                            at_ms: now_ms,
                        });
                    }
                }
                None
            }
            _ => None,
        }
    }

    /// Hands back a permit whose outcome will not be recorded (the client went away, or
    /// the request never reached the upstream), so a half-open probe slot is freed.
    pub fn release(&self, permit: Permit) {
        if !permit.probe {
            return;
        }
        let _ = self.core.probes.fetch_update(AcqRel, Acquire, |p| {
            let (taken, succeeded) = unpack_probes(p, permit.generation);
            (p & GEN_MASK == permit.generation && taken > 0)
                .then(|| pack_probes(permit.generation, taken - 1, succeeded))
        });
    }

    /// Turns down a permit just taken by a request that cannot be a half-open probe: its
    /// slot is freed at once and the request counts as rejected.
    pub fn refuse_probe(&self, permit: Permit) -> Rejection {
        self.release(permit);
        self.core.rejected.fetch_add(1, Relaxed);
        Rejection {
            state: State::HalfOpen,
            retry_after_secs: Some(1),
        }
    }

    /// Operator pause: any state to `forced_open`.
    pub fn pause(&self, now_ms: u64) -> Option<Transition> {
        self.move_to(State::ForcedOpen, now_ms, |st| st != State::ForcedOpen)
    }

    /// Operator resume: `forced_open` to `closed` with an empty window.
    pub fn resume(&self, now_ms: u64) -> Option<Transition> {
        self.move_to(State::Closed, now_ms, |st| st == State::ForcedOpen)
    }

    /// Operator flip: pause unless paused, else resume.
    pub fn flip(&self, now_ms: u64) -> Option<Transition> {
        if self.state() == State::ForcedOpen {
            self.resume(now_ms)
        } else {
            self.pause(now_ms)
        }
    }

    /// Operator reset: any state to `closed` with an empty window.
    pub fn reset(&self, now_ms: u64) -> Option<Transition> {
        let t = self.move_to(State::Closed, now_ms, |st| st != State::Closed);
        self.window.clear();
        t
    }

    pub fn snapshot(&self, s: &Settings, now_ms: u64) -> Snapshot {
        let w = Word::unpack(self.core.word.load(Acquire));
        let reopen_at = w.since_ms.saturating_add(s.reset_timeout_ms);
        let (state, retry_after_secs) = match w.state {
            State::Open if now_ms >= reopen_at => (State::HalfOpen, Some(1)),
            State::Open => (State::Open, Some(ceil_secs(reopen_at - now_ms))),
            State::HalfOpen => (State::HalfOpen, Some(1)),
            st => (st, None),
        };
        Snapshot {
            state,
            since_ms: w.since_ms,
            window: self.window.counts(now_ms),
            rejected_total: self.core.rejected.load(Relaxed),
            retry_after_secs,
        }
    }

    fn move_to(
        &self,
        to: State,
        now_ms: u64,
        applies: impl Fn(State) -> bool,
    ) -> Option<Transition> {
        loop {
            let raw = self.core.word.load(Acquire);
            let w = Word::unpack(raw);
            if !applies(w.state) {
                return None;
            }
            if to == State::Closed {
                self.window.clear();
            }
            if self.cas(raw, w.next(to, now_ms)) {
                return Some(Transition {
                    from: w.state,
                    to,
                    at_ms: now_ms,
                });
            }
        }
    }

    fn permit(&self, w: Word, probe: bool) -> Permit {
        Permit {
            generation: w.generation,
            probe,
        }
    }

    fn cas(&self, current: u64, next: Word) -> bool {
        self.core
            .word
            .compare_exchange(current, next.pack(), AcqRel, Acquire)
            .is_ok()
    }

    fn take_probe(&self, generation: u64, limit: u32) -> bool {
        self.core
            .probes
            .fetch_update(AcqRel, Acquire, |p| {
                let (taken, succeeded) = unpack_probes(p, generation);
                (taken < u64::from(limit)).then(|| pack_probes(generation, taken + 1, succeeded))
            })
            .is_ok()
    }

    /// Counts one successful probe; returns how many have succeeded in this period.
    fn probe_succeeded(&self, generation: u64) -> u64 {
        match self.core.probes.fetch_update(AcqRel, Acquire, |p| {
            let (taken, succeeded) = unpack_probes(p, generation);
            (p & GEN_MASK == generation).then(|| pack_probes(generation, taken, succeeded + 1))
        }) {
            Ok(prev) => unpack_probes(prev, generation).1 + 1,
            Err(_) => 0,
        }
    }
}

/// closed -> open: enough volume, and failures (or slow calls) at or over the threshold.
fn trips(c: &Counts, s: &Settings) -> bool {
    if c.total < u64::from(s.volume_threshold) {
        return false;
    }
    let pct = u64::from(s.error_threshold_percentage);
    if c.failures * 100 >= pct * c.total {
        return true;
    }
    s.slow_call_ms > 0 && c.slow * 100 >= u64::from(s.slow_call_rate_threshold) * c.total
}

fn ceil_secs(ms: u64) -> u64 {
    ms.div_ceil(1_000).max(1)
}
