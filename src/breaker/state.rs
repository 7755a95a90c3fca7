//! The breaker state machine.
//!
//! The state lives in one `AtomicU64`: state (3 bits), back-off level (5 bits),
//! generation (12 bits) and the time of the last transition (44 bits of milliseconds).
//! Every transition that starts a new period bumps the generation, so a permit or outcome
//! from an earlier period is recognised and ignored; `recovering -> closed` continues the
//! same period (the window goes on), so requests admitted while recovering are recorded
//! when they end in closed. A second word, tagged with the generation, counts half-open
//! probes (taken, succeeded) or, while recovering, requests seen and admitted.
//!
//! Back-off: the level counts reopenings from half-open since the last close; the open
//! time is `reset_timeout * 2^level`, at most `reset_timeout_max`. Keeping the level in
//! the state word means the open time is read together with the state it belongs to.
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
    /// Closed again after half-open, admitting a share of traffic that grows over
    /// `recovery_duration`.
    Recovering = 4,
}

impl State {
    /// Every state, in metric-value order.
    pub const ALL: [State; 5] = [
        State::Closed,
        State::Open,
        State::HalfOpen,
        State::ForcedOpen,
        State::Recovering,
    ];

    fn from_bits(b: u64) -> State {
        match b & STATE_MASK {
            1 => State::Open,
            2 => State::HalfOpen,
            3 => State::ForcedOpen,
            4 => State::Recovering,
            _ => State::Closed,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::ForcedOpen => "forced_open",
            State::Recovering => "recovering",
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

    /// The period the permit was taken in.
    #[cfg(test)]
    pub(crate) fn generation(&self) -> u64 {
        self.generation
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
    /// While recovering: the share of requests admitted now, in per mille (100..=1000).
    pub admit_permille: Option<u64>,
    /// How long the breaker stays (or stayed) open this time: `reset_timeout`, doubled
    /// per reopening from half-open up to `reset_timeout_max`.
    pub open_ms: u64,
}

const STATE_BITS: u32 = 3;
const STATE_MASK: u64 = (1 << STATE_BITS) - 1;
const LEVEL_BITS: u32 = 5;
const LEVEL_MASK: u64 = (1 << LEVEL_BITS) - 1;
const GEN_SHIFT: u32 = STATE_BITS + LEVEL_BITS;
const GEN_BITS: u32 = 12;
const GEN_MASK: u64 = (1 << GEN_BITS) - 1;
const TIME_SHIFT: u32 = GEN_SHIFT + GEN_BITS;
const TIME_MASK: u64 = (1 << (64 - TIME_SHIFT)) - 1;

const PROBE_COUNT_BITS: u32 = 25;
const PROBE_COUNT_MASK: u64 = (1 << PROBE_COUNT_BITS) - 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Word {
    state: State,
    /// Reopenings from half-open since the last close (the back-off exponent).
    level: u64,
    generation: u64,
    since_ms: u64,
}

impl Word {
    fn unpack(w: u64) -> Word {
        Word {
            state: State::from_bits(w),
            level: (w >> STATE_BITS) & LEVEL_MASK,
            generation: (w >> GEN_SHIFT) & GEN_MASK,
            since_ms: w >> TIME_SHIFT,
        }
    }

    fn pack(self) -> u64 {
        self.state as u64
            | ((self.level & LEVEL_MASK) << STATE_BITS)
            | ((self.generation & GEN_MASK) << GEN_SHIFT)
            | ((self.since_ms & TIME_MASK) << TIME_SHIFT)
    }

    /// A new period in `state`, starting at `now_ms`, with the same back-off level.
    fn next(self, state: State, now_ms: u64) -> Word {
        Word {
            state,
            level: self.level,
            generation: (self.generation + 1) & GEN_MASK,
            since_ms: now_ms & TIME_MASK,
        }
    }

    fn with_level(self, level: u64) -> Word {
        Word {
            level: level.min(LEVEL_MASK),
            ..self
        }
    }

    /// The moment an open breaker becomes half-open.
    fn reopen_at(self, s: &Settings) -> u64 {
        self.since_ms.saturating_add(open_ms(s, self.level))
    }

    /// Whether a recovery begun at `since_ms` has run its course by `now_ms`.
    fn recovered(self, s: &Settings, now_ms: u64) -> bool {
        self.since_ms.saturating_add(s.recovery_ms) <= now_ms
    }
}

/// How long a breaker at back-off `level` stays open.
fn open_ms(s: &Settings, level: u64) -> u64 {
    if s.reset_timeout_max_ms <= s.reset_timeout_ms {
        return s.reset_timeout_ms;
    }
    let factor = 1u64 << level.min(LEVEL_MASK);
    s.reset_timeout_ms
        .saturating_mul(factor)
        .min(s.reset_timeout_max_ms)
}

/// The share of requests a breaker recovering since `since_ms` admits at `now_ms`, in
/// per mille: 100 at the start, growing linearly to 1000 at the end of `recovery_ms`.
pub fn admit_permille(recovery_ms: u64, since_ms: u64, now_ms: u64) -> u64 {
    let elapsed = now_ms.saturating_sub(since_ms);
    if recovery_ms == 0 || elapsed >= recovery_ms {
        return 1000;
    }
    let grown = u128::from(elapsed) * 900 / u128::from(recovery_ms);
    100 + u64::try_from(grown).unwrap_or(900)
}

/// Counts of one half-open period (taken, succeeded) or one recovering period (seen,
/// admitted), tagged with the period's generation; another generation reads as zeros.
fn unpack_probes(w: u64, generation: u64) -> (u64, u64) {
    if w & GEN_MASK != generation {
        return (0, 0);
    }
    (
        (w >> GEN_BITS) & PROBE_COUNT_MASK,
        (w >> (GEN_BITS + PROBE_COUNT_BITS)) & PROBE_COUNT_MASK,
    )
}

/// How many steps a recovery's counts are kept in (halved at each).
const RAMP_STEPS: u64 = 20;
const SHARE_COUNT_BITS: u32 = 20;
const SHARE_COUNT_MASK: u64 = (1 << SHARE_COUNT_BITS) - 1;
const STEP_SHIFT: u32 = GEN_BITS + 2 * SHARE_COUNT_BITS;

/// The ramp step (0..RAMP_STEPS) a recovery that began at `since_ms` is in at `now_ms`.
fn ramp_step(recovery_ms: u64, since_ms: u64, now_ms: u64) -> u64 {
    let elapsed = u128::from(now_ms.saturating_sub(since_ms));
    let step = elapsed * u128::from(RAMP_STEPS) / u128::from(recovery_ms.max(1));
    u64::try_from(step).unwrap_or(RAMP_STEPS).min(RAMP_STEPS)
}

/// The recovering form of the second word: (seen, admitted, ramp step) of one period.
fn unpack_share(w: u64, generation: u64) -> (u64, u64, u64) {
    if w & GEN_MASK != generation {
        return (0, 0, 0);
    }
    (
        (w >> GEN_BITS) & SHARE_COUNT_MASK,
        (w >> (GEN_BITS + SHARE_COUNT_BITS)) & SHARE_COUNT_MASK,
        w >> STEP_SHIFT,
    )
}

fn pack_share(generation: u64, seen: u64, admitted: u64, step: u64) -> u64 {
    (generation & GEN_MASK)
        | ((seen & SHARE_COUNT_MASK) << GEN_BITS)
        | ((admitted & SHARE_COUNT_MASK) << (GEN_BITS + SHARE_COUNT_BITS))
        | (step << STEP_SHIFT)
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
            level: 0,
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
    /// changing state: paused, or open and not yet past its open time. Observe mode
    /// never rejects for an open breaker. A recovering breaker admits a share, so it
    /// does not count as rejecting here.
    pub fn rejects(&self, s: &Settings, now_ms: u64) -> bool {
        let w = Word::unpack(self.core.word.load(Acquire));
        match w.state {
            State::ForcedOpen => true,
            State::Open => s.mode == Mode::Enforce && now_ms < w.reopen_at(s),
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
                    let reopen_at = w.reopen_at(s);
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
                State::Recovering => {
                    if let Some(t) = self.finish_recovery(raw, s, now_ms) {
                        transition = Some(t);
                        continue;
                    }
                    let permille = admit_permille(s.recovery_ms, w.since_ms, now_ms);
                    let step = ramp_step(s.recovery_ms, w.since_ms, now_ms);
                    if self.take_share(w.generation, permille, step) || s.mode == Mode::Observe {
                        Ok(self.permit(w, false))
                    } else {
                        Err(Rejection {
                            state: State::Recovering,
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

    /// Makes the transitions that time alone brings about and no request may come to
    /// make: the end of a recovery (`recovering -> closed`). Called now and then by the
    /// gateway, so metrics and events show the close when it happens.
    pub fn advance(&self, s: &Settings, now_ms: u64) -> Option<Transition> {
        let raw = self.core.word.load(Acquire);
        self.finish_recovery(raw, s, now_ms)
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
            (State::Closed | State::Recovering, false) => {
                self.window.record(now_ms, failed, slow);
                let c = self.window.counts(now_ms);
                // A trip from closed or recovering starts the back-off afresh.
                let next = w.next(State::Open, now_ms).with_level(0);
                if trips(&c, s) && self.cas(raw, next) {
                    return Some(Transition {
                        from: w.state,
                        to: State::Open,
                        at_ms: now_ms,
                    });
                }
                None
            }
            (State::HalfOpen, true) => {
                if failed || slow {
                    // Each reopening from half-open doubles the open time.
                    let next = w.next(State::Open, now_ms).with_level(w.level + 1);
                    if self.cas(raw, next) {
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
                    let to = if s.recovery_ms > 0 {
                        State::Recovering
                    } else {
                        State::Closed
                    };
                    if self.cas(raw, w.next(to, now_ms).with_level(0)) {
                        return Some(Transition {
                            from: State::HalfOpen,
                            to,
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

    /// Fleet trip: `closed` to `open`, as if this breaker had tripped; it recovers
    /// through `half_open` on its own.
    pub fn trip(&self, now_ms: u64) -> Option<Transition> {
        self.move_to(State::Open, now_ms, |st| st == State::Closed)
    }

    /// Operator reset: any state to `closed` with an empty window.
    pub fn reset(&self, now_ms: u64) -> Option<Transition> {
        let t = self.move_to(State::Closed, now_ms, |st| st != State::Closed);
        self.window.clear();
        t
    }

    pub fn snapshot(&self, s: &Settings, now_ms: u64) -> Snapshot {
        let w = Word::unpack(self.core.word.load(Acquire));
        let reopen_at = w.reopen_at(s);
        let recovered = w.recovered(s, now_ms);
        let (state, retry_after_secs) = match w.state {
            State::Open if now_ms >= reopen_at => (State::HalfOpen, Some(1)),
            State::Open => (State::Open, Some(ceil_secs(reopen_at - now_ms))),
            State::HalfOpen => (State::HalfOpen, Some(1)),
            State::Recovering if recovered => (State::Closed, None),
            State::Recovering => (State::Recovering, Some(1)),
            st => (st, None),
        };
        Snapshot {
            state,
            since_ms: w.since_ms,
            window: self.window.counts(now_ms),
            rejected_total: self.core.rejected.load(Relaxed),
            retry_after_secs,
            admit_permille: (state == State::Recovering)
                .then(|| admit_permille(s.recovery_ms, w.since_ms, now_ms)),
            open_ms: open_ms(s, w.level),
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
            if self.cas(raw, w.next(to, now_ms).with_level(0)) {
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

    /// `recovering -> closed` once `recovery_ms` has passed (or was turned off by a
    /// reload). The period goes on: same generation, same window, so requests admitted
    /// while recovering are still recorded.
    fn finish_recovery(&self, raw: u64, s: &Settings, now_ms: u64) -> Option<Transition> {
        let w = Word::unpack(raw);
        if w.state != State::Recovering || !w.recovered(s, now_ms) {
            return None;
        }
        let closed = Word {
            state: State::Closed,
            since_ms: now_ms & TIME_MASK,
            ..w
        };
        self.cas(raw, closed).then_some(Transition {
            from: State::Recovering,
            to: State::Closed,
            at_ms: now_ms,
        })
    }

    /// Counts a request seen while recovering and admits it if the admitted share stays
    /// within `permille` of those seen in this ramp step, rounded up by at most one
    /// request. Lock-free and exact under any interleaving: seen and admitted change
    /// together in one CAS. The counts start afresh at each of the ramp's steps, so the
    /// share follows the ramp, not the whole recovery's history (and are halved, keeping
    /// their ratio, in a step that sees more than half a million requests).
    fn take_share(&self, generation: u64, permille: u64, step: u64) -> bool {
        let mut admitted = false;
        let _ = self.core.probes.fetch_update(AcqRel, Acquire, |p| {
            let (mut seen, mut taken, last_step) = unpack_share(p, generation);
            if step != last_step {
                (seen, taken) = (0, 0);
            } else if seen >= SHARE_COUNT_MASK / 2 {
                seen /= 2;
                taken /= 2;
            }
            seen += 1;
            admitted = taken * 1000 < permille * seen;
            if admitted {
                taken += 1;
            }
            Some(pack_share(generation, seen, taken, step))
        });
        admitted
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
