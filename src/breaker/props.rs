//! Property tests: random interleavings of admissions, outcomes, releases, operator
//! actions and the passing of time, checked against the breaker's invariants:
//! - never more than `half_open_probes` probes of one half-open period at once;
//! - every permit is settled exactly once (the type system: a permit is consumed), and
//!   once all are settled the breaker is never stuck: after the longest open time it
//!   admits a request (unless paused);
//! - while recovering, within each ramp step, admitted <= share x seen + 1.

use super::*;
use proptest::prelude::*;
use std::collections::HashMap;

#[derive(Debug, Clone)]
enum Op {
    /// Time passes by this many ms, then a request asks to be admitted.
    Acquire(u64),
    /// The held permit at this index (modulo) finishes: failed or not.
    Record(usize, bool),
    /// The held permit at this index goes back unrecorded (the client left).
    Release(usize),
    /// Time passes; the gateway's clock tick runs.
    Advance(u64),
    Pause,
    Resume,
    Reset,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u64..400).prop_map(Op::Acquire),
        5 => (0usize..64, any::<bool>()).prop_map(|(i, f)| Op::Record(i, f)),
        2 => (0usize..64).prop_map(Op::Release),
        2 => (0u64..1_500).prop_map(Op::Advance),
        1 => Just(Op::Pause),
        1 => Just(Op::Resume),
        1 => Just(Op::Reset),
    ]
}

fn settings(probes: u32, recovery_ms: u64, observe: bool) -> Settings {
    Settings {
        volume_threshold: 3,
        error_threshold_percentage: 50,
        window: WindowShape {
            bucket_ms: 100,
            buckets: 10,
        },
        reset_timeout_ms: 500,
        reset_timeout_max_ms: 4_000,
        recovery_ms,
        half_open_probes: probes,
        mode: if observe {
            Mode::Observe
        } else {
            Mode::Enforce
        },
        ..Settings::default()
    }
}

/// Steps of the ramp, as the spec's linear share: 20 steps over the recovery.
fn step_of(recovery_ms: u64, since: u64, now: u64) -> u64 {
    ((now - since) * 20 / recovery_ms).min(20)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn the_breaker_keeps_its_invariants(
        ops in proptest::collection::vec(op(), 1..300),
        probes in 1u32..4,
        recovery_ms in prop_oneof![Just(0u64), 200u64..3_000],
        observe in proptest::bool::weighted(0.1),
    ) {
        let s = settings(probes, recovery_ms, observe);
        let b = Breaker::new(s.window, 0);
        let mut now = 0u64;
        let mut held: Vec<Permit> = Vec::new();
        // Recovery accounting: (since, step) -> (seen, admitted).
        let mut recovering_since: Option<u64> = None;
        let mut ramp: HashMap<(u64, u64), (u64, u64)> = HashMap::new();
        let note = |t: Option<Transition>, since: &mut Option<u64>| {
            if let Some(t) = t {
                *since = (t.to == State::Recovering).then_some(t.at_ms);
            }
        };
        for op in ops {
            match op {
                Op::Acquire(dt) => {
                    now += dt;
                    let before = b.state();
                    let a = b.try_acquire(&s, now);
                    let was_recovering = before == State::Recovering && a.transition.is_none();
                    note(a.transition, &mut recovering_since);
                    if was_recovering && !observe {
                        let since = recovering_since.expect("recovering since a transition");
                        let step = step_of(recovery_ms, since, now);
                        let e = ramp.entry((since, step)).or_default();
                        e.0 += 1;
                        if a.result.is_ok() {
                            e.1 += 1;
                        }
                        let permille = admit_permille(recovery_ms, since, now);
                        prop_assert!(
                            e.1 * 1000 <= permille * e.0 + 1000,
                            "recovering admitted {} of {} at {} per mille", e.1, e.0, permille
                        );
                    }
                    if let Err(r) = a.result {
                        prop_assert!(r.state != State::Closed);
                    } else if let Ok(p) = a.result {
                        held.push(p);
                    }
                }
                Op::Record(i, failed) if !held.is_empty() => {
                    let p = held.swap_remove(i % held.len());
                    let outcome = if failed {
                        Outcome::failure(FailureKind::Status, 1)
                    } else {
                        Outcome::success(1)
                    };
                    let t = b.record(p, outcome, &s, now);
                    note(t, &mut recovering_since);
                }
                Op::Release(i) if !held.is_empty() => {
                    b.release(held.swap_remove(i % held.len()));
                }
                Op::Advance(dt) => {
                    now += dt;
                    let t = b.advance(&s, now);
                    note(t, &mut recovering_since);
                }
                Op::Pause => note(b.pause(now), &mut recovering_since),
                Op::Resume => note(b.resume(now), &mut recovering_since),
                Op::Reset => note(b.reset(now), &mut recovering_since),
                _ => {}
            }
            // Never more than half_open_probes probes of one period in flight.
            let mut per_period: HashMap<u64, u32> = HashMap::new();
            for p in held.iter().filter(|p| p.is_probe()) {
                *per_period.entry(p.generation()).or_default() += 1;
            }
            for (generation, n) in per_period {
                prop_assert!(n <= probes, "{n} probes of period {generation} at once");
            }
        }
        // Everything settled: the breaker is not stuck.
        for p in held.drain(..) {
            b.release(p);
        }
        now += s.reset_timeout_max_ms + recovery_ms + 1;
        let paused = b.state() == State::ForcedOpen;
        let a = b.try_acquire(&s, now);
        prop_assert_eq!(a.result.is_ok(), !paused, "state {:?}", b.state());
        if let Ok(p) = a.result {
            b.release(p);
        }
    }
}
