//! State-machine tests with explicit times: every transition and boundary of SPEC §4.

use super::*;

const OK: Option<FailureKind> = None;
const FAIL: Option<FailureKind> = Some(FailureKind::Status);

fn settings() -> Settings {
    Settings {
        volume_threshold: 10,
        error_threshold_percentage: 50,
        reset_timeout_ms: 30_000,
        ..Settings::default()
    }
}

fn breaker(s: &Settings) -> Breaker {
    Breaker::new(s.window, 0)
}

/// Admits one request at `now` and records its outcome then; returns the transition.
fn call(b: &Breaker, s: &Settings, now: u64, failure: Option<FailureKind>) -> Option<Transition> {
    let permit = b.try_acquire(s, now).result.expect("admitted");
    b.record(
        permit,
        Outcome {
            failure,
            duration_ms: 1,
        },
        s,
        now,
    )
}

fn admitted(b: &Breaker, s: &Settings, now: u64) -> bool {
    match b.try_acquire(s, now).result {
        Ok(p) => {
            b.release(p);
            true
        }
        Err(_) => false,
    }
}

fn open_it(b: &Breaker, s: &Settings, now: u64) {
    for _ in 0..s.volume_threshold {
        call(b, s, now, FAIL);
    }
    assert_eq!(b.state(), State::Open);
}

#[test]
fn nine_failures_with_volume_ten_stay_closed_the_tenth_opens() {
    let s = settings();
    let b = breaker(&s);
    for i in 0..9 {
        assert_eq!(call(&b, &s, 100 + i, FAIL), None);
    }
    assert_eq!(b.state(), State::Closed);
    let t = call(&b, &s, 200, FAIL).expect("transition");
    assert_eq!((t.from, t.to, t.at_ms), (State::Closed, State::Open, 200));
    assert_eq!(b.state(), State::Open);
}

#[test]
fn five_ok_and_five_failed_at_fifty_percent_opens() {
    let s = settings();
    let b = breaker(&s);
    for _ in 0..5 {
        call(&b, &s, 10, OK);
    }
    for _ in 0..4 {
        call(&b, &s, 10, FAIL);
    }
    assert_eq!(b.state(), State::Closed);
    assert!(call(&b, &s, 10, FAIL).is_some());
    assert_eq!(b.state(), State::Open);
}

#[test]
fn six_ok_and_four_failed_at_fifty_percent_stays_closed() {
    let s = settings();
    let b = breaker(&s);
    for _ in 0..4 {
        call(&b, &s, 10, FAIL);
    }
    for _ in 0..6 {
        call(&b, &s, 10, OK);
    }
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.snapshot(&s, 10).window.total, 10);
}

#[test]
fn failures_that_left_the_window_do_not_count() {
    let s = settings(); // 10 s window of 1 s buckets
    let b = breaker(&s);
    for _ in 0..9 {
        call(&b, &s, 0, FAIL);
    }
    // 10 s later the nine failures are out of the window: one more is not enough.
    assert_eq!(call(&b, &s, 10_000, FAIL), None);
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.snapshot(&s, 10_000).window.total, 1);
    // Just inside the window they still count.
    let b = breaker(&s);
    for _ in 0..9 {
        call(&b, &s, 0, FAIL);
    }
    assert!(call(&b, &s, 9_999, FAIL).is_some());
}

#[test]
fn open_rejects_until_reset_timeout_with_retry_after() {
    let s = settings();
    let b = breaker(&s);
    open_it(&b, &s, 1_000);
    let r = b.try_acquire(&s, 1_000).result.unwrap_err();
    assert_eq!(r.state, State::Open);
    assert_eq!(r.retry_after_secs, Some(30));
    let r = b.try_acquire(&s, 30_999).result.unwrap_err();
    assert_eq!(r.retry_after_secs, Some(1));
    let r = b.try_acquire(&s, 3_500).result.unwrap_err();
    assert_eq!(r.retry_after_secs, Some(28), "27.5 s rounds up");
    assert_eq!(b.snapshot(&s, 3_500).rejected_total, 3);
}

#[test]
fn after_reset_timeout_the_first_request_is_a_probe() {
    let s = settings();
    let b = breaker(&s);
    open_it(&b, &s, 0);
    let a = b.try_acquire(&s, 30_000);
    let t = a.transition.expect("open -> half_open");
    assert_eq!((t.from, t.to), (State::Open, State::HalfOpen));
    let permit = a.result.expect("probe admitted");
    assert!(permit.is_probe());
    b.release(permit);
}

#[test]
fn half_open_success_closes_with_an_empty_window() {
    let s = settings();
    let b = breaker(&s);
    open_it(&b, &s, 0);
    let t = call(&b, &s, 30_000, OK).expect("half_open -> closed");
    assert_eq!((t.from, t.to), (State::HalfOpen, State::Closed));
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.snapshot(&s, 30_000).window, Counts::default());
    // The old failures are gone: nine new ones do not reopen it.
    for _ in 0..9 {
        call(&b, &s, 30_001, FAIL);
    }
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn half_open_failure_reopens_and_restarts_the_timer() {
    let s = settings();
    let b = breaker(&s);
    open_it(&b, &s, 0);
    let t = call(&b, &s, 31_000, FAIL).expect("half_open -> open");
    assert_eq!((t.from, t.to), (State::HalfOpen, State::Open));
    let r = b.try_acquire(&s, 31_000).result.unwrap_err();
    assert_eq!(r.retry_after_secs, Some(30));
    assert!(!admitted(&b, &s, 60_999));
    assert!(admitted(&b, &s, 61_000));
}

#[test]
fn half_open_admits_exactly_the_configured_probes() {
    let s = Settings {
        half_open_probes: 3,
        ..settings()
    };
    let b = breaker(&s);
    open_it(&b, &s, 0);
    let mut permits = Vec::new();
    let mut rejected = 0;
    for _ in 0..20 {
        match b.try_acquire(&s, 30_000).result {
            Ok(p) => permits.push(p),
            Err(r) => {
                assert_eq!(r.state, State::HalfOpen);
                rejected += 1;
            }
        }
    }
    assert_eq!(permits.len(), 3);
    assert_eq!(rejected, 17);
    // Two successes are not enough to close ...
    let mut it = permits.into_iter();
    for p in it.by_ref().take(2) {
        assert_eq!(b.record(p, Outcome::success(1), &s, 30_001), None);
    }
    assert_eq!(b.state(), State::HalfOpen);
    // ... the third closes.
    let last = it.next().unwrap();
    assert!(b.record(last, Outcome::success(1), &s, 30_002).is_some());
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn half_open_probes_are_limited_across_threads() {
    let s = std::sync::Arc::new(Settings {
        half_open_probes: 2,
        ..settings()
    });
    let b = std::sync::Arc::new(breaker(&s));
    open_it(&b, &s, 0);
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (b, s) = (b.clone(), s.clone());
            std::thread::spawn(move || {
                let mut got = Vec::new();
                for _ in 0..100 {
                    if let Ok(p) = b.try_acquire(&s, 30_000).result {
                        got.push(p);
                    }
                }
                got
            })
        })
        .collect();
    let total: usize = handles.into_iter().map(|h| h.join().unwrap().len()).sum();
    assert_eq!(total, 2);
}

#[test]
fn a_released_probe_frees_its_slot() {
    let s = settings();
    let b = breaker(&s);
    open_it(&b, &s, 0);
    let p = b.try_acquire(&s, 30_000).result.unwrap();
    assert!(!admitted(&b, &s, 30_000));
    b.release(p);
    let p = b
        .try_acquire(&s, 30_000)
        .result
        .expect("slot is free again");
    assert!(b.record(p, Outcome::success(1), &s, 30_001).is_some());
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn an_outcome_from_before_a_transition_is_ignored() {
    let s = settings();
    let b = breaker(&s);
    let slow_request = b.try_acquire(&s, 0).result.unwrap();
    open_it(&b, &s, 0);
    call(&b, &s, 30_000, OK); // closed again, new period
    assert_eq!(
        b.record(
            slow_request,
            Outcome::failure(FailureKind::Timeout, 5_000),
            &s,
            30_001
        ),
        None
    );
    assert_eq!(b.snapshot(&s, 30_001).window.total, 0);
}

#[test]
fn observe_mode_never_rejects_but_reports_the_state() {
    let s = Settings {
        mode: Mode::Observe,
        ..settings()
    };
    let b = breaker(&s);
    open_it(&b, &s, 0);
    for now in [0, 1_000, 29_999] {
        assert!(admitted(&b, &s, now));
    }
    assert_eq!(b.snapshot(&s, 1_000).state, State::Open);
    // Half-open: the probe and everyone else go through.
    let probe = b.try_acquire(&s, 30_000).result.unwrap();
    assert!(probe.is_probe());
    for _ in 0..5 {
        assert!(admitted(&b, &s, 30_000));
    }
    assert_eq!(b.state(), State::HalfOpen);
    assert!(b.record(probe, Outcome::success(1), &s, 30_001).is_some());
    assert_eq!(b.snapshot(&s, 30_001).rejected_total, 0);
}

#[test]
fn slow_calls_open_the_breaker_when_enabled() {
    let s = Settings {
        slow_call_ms: 100,
        slow_call_rate_threshold: 50,
        ..settings()
    };
    let b = breaker(&s);
    for i in 0..10 {
        let p = b.try_acquire(&s, 10).result.unwrap();
        let duration = if i % 2 == 0 { 101 } else { 100 };
        b.record(p, Outcome::success(duration), &s, 10);
    }
    assert_eq!(b.state(), State::Open);
    assert_eq!(b.snapshot(&s, 10).window.slow, 5);

    // Off by default: the same durations leave it closed.
    let s = settings();
    let b = breaker(&s);
    for _ in 0..10 {
        let p = b.try_acquire(&s, 10).result.unwrap();
        b.record(p, Outcome::success(10_000), &s, 10);
    }
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn a_slow_probe_reopens() {
    let s = Settings {
        slow_call_ms: 100,
        ..settings()
    };
    let b = breaker(&s);
    open_it(&b, &s, 0);
    let p = b.try_acquire(&s, 30_000).result.unwrap();
    let t = b.record(p, Outcome::success(500), &s, 30_500).unwrap();
    assert_eq!(t.to, State::Open);
}

#[test]
fn pause_rejects_without_retry_after_even_in_observe_mode() {
    let s = Settings {
        mode: Mode::Observe,
        ..settings()
    };
    let b = breaker(&s);
    let t = b.pause(5).unwrap();
    assert_eq!((t.from, t.to), (State::Closed, State::ForcedOpen));
    let r = b.try_acquire(&s, 10).result.unwrap_err();
    assert_eq!(
        r,
        Rejection {
            state: State::ForcedOpen,
            retry_after_secs: None
        }
    );
    assert_eq!(b.pause(6), None, "pausing twice is a no-op");
}

#[test]
fn resume_closes_with_an_empty_window() {
    let s = settings();
    let b = breaker(&s);
    for _ in 0..9 {
        call(&b, &s, 0, FAIL);
    }
    b.pause(1);
    let t = b.resume(2).unwrap();
    assert_eq!((t.from, t.to), (State::ForcedOpen, State::Closed));
    assert_eq!(b.snapshot(&s, 2).window.total, 0);
    assert_eq!(b.resume(3), None, "resume of a running breaker is a no-op");
}

#[test]
fn flip_twice_returns_to_closed() {
    let s = settings();
    let b = breaker(&s);
    assert_eq!(b.flip(1).unwrap().to, State::ForcedOpen);
    assert_eq!(b.flip(2).unwrap().to, State::Closed);
    assert!(admitted(&b, &s, 3));
}

#[test]
fn reset_closes_an_open_breaker() {
    let s = settings();
    let b = breaker(&s);
    open_it(&b, &s, 0);
    let t = b.reset(10).unwrap();
    assert_eq!((t.from, t.to), (State::Open, State::Closed));
    assert!(admitted(&b, &s, 11));
    assert_eq!(b.snapshot(&s, 11).window.total, 0);
    assert_eq!(b.reset(12), None);
}

#[test]
fn snapshot_reads_an_expired_open_breaker_as_half_open() {
    let s = settings();
    let b = breaker(&s);
    open_it(&b, &s, 0);
    assert_eq!(b.snapshot(&s, 29_999).state, State::Open);
    assert_eq!(b.snapshot(&s, 30_000).state, State::HalfOpen);
    assert_eq!(b.state(), State::Open);
}

#[test]
fn reshaping_keeps_the_state() {
    let s = settings();
    let b = breaker(&s);
    open_it(&b, &s, 0);
    let r = b.reshaped(WindowShape {
        bucket_ms: 500,
        buckets: 4,
    });
    assert_eq!(r.state(), State::Open);
    assert!(!admitted(&r, &s, 10));
}

fn shape_b() -> WindowShape {
    WindowShape {
        bucket_ms: 500,
        buckets: 4,
    }
}

#[test]
fn a_probe_in_flight_across_a_reshape_frees_its_slot_on_the_new_breaker() {
    let s = Settings {
        half_open_probes: 1,
        ..settings()
    };
    let old = breaker(&s);
    open_it(&old, &s, 0);
    let probe = old.try_acquire(&s, 30_000).result.expect("the probe");
    assert!(probe.is_probe());
    let new = old.reshaped(shape_b());
    // The probe still runs: the one slot stays taken on the new breaker too.
    assert!(!admitted(&new, &s, 30_001));
    // The client went away: its slot is back, on the breaker the route now uses.
    old.release(probe);
    let again = new.try_acquire(&s, 30_002).result.expect("a new probe");
    assert!(again.is_probe());
    let t = new.record(again, Outcome::success(1), &s, 30_003);
    assert_eq!(t.map(|t| t.to), Some(State::Closed));
    assert_eq!(old.state(), State::Closed);
}

#[test]
fn a_probe_settled_on_the_old_breaker_after_a_reshape_closes_the_new_one() {
    let s = settings();
    let old = breaker(&s);
    open_it(&old, &s, 0);
    let probe = old.try_acquire(&s, 30_000).result.expect("the probe");
    let new = old.reshaped(shape_b());
    let t = old.record(probe, Outcome::success(1), &s, 30_010);
    assert_eq!(t.map(|t| t.to), Some(State::Closed));
    assert_eq!(new.state(), State::Closed);
    assert!(admitted(&new, &s, 30_011));
    assert_eq!(new.window_shape(), shape_b());
}

#[test]
fn a_failed_probe_settled_on_the_old_breaker_reopens_the_new_one() {
    let s = settings();
    let old = breaker(&s);
    open_it(&old, &s, 0);
    let probe = old.try_acquire(&s, 30_000).result.expect("the probe");
    let new = old.reshaped(shape_b());
    old.record(
        probe,
        Outcome::failure(FailureKind::Timeout, 5_000),
        &s,
        35_000,
    );
    assert_eq!(new.state(), State::Open);
    assert!(!admitted(&new, &s, 35_001));
    // reset_timeout starts over from the failed probe.
    assert!(admitted(&new, &s, 65_000));
}

#[test]
fn a_refused_probe_frees_its_slot_and_counts_as_rejected() {
    let s = Settings {
        half_open_probes: 1,
        ..settings()
    };
    let b = breaker(&s);
    open_it(&b, &s, 0);
    let before = b.snapshot(&s, 30_000).rejected_total;
    let permit = b.try_acquire(&s, 30_000).result.expect("a probe");
    let r = b.refuse_probe(permit);
    assert_eq!(r.state, State::HalfOpen);
    assert_eq!(b.snapshot(&s, 30_001).rejected_total, before + 1);
    let next = b
        .try_acquire(&s, 30_002)
        .result
        .expect("the slot is free again");
    assert!(next.is_probe());
}

// Recovery ramp and back-off (SPEC §16).

fn ramp_settings() -> Settings {
    Settings {
        recovery_ms: 10_000,
        ..settings()
    }
}

/// Opens the breaker at `now`, then lets one probe close it at `now + reset_timeout`.
fn trip_and_recover(b: &Breaker, s: &Settings, now: u64) -> u64 {
    open_it(b, s, now);
    let at = now + s.reset_timeout_ms;
    let t = call(b, s, at, OK).expect("the probe closes");
    assert_eq!(t.from, State::HalfOpen);
    at
}

/// `n` requests at `now`: how many were admitted (and recorded as successes).
fn admitted_of(b: &Breaker, s: &Settings, now: u64, n: u32) -> u32 {
    let mut admitted = 0;
    for _ in 0..n {
        match b.try_acquire(s, now).result {
            Ok(p) => {
                admitted += 1;
                b.record(p, Outcome::success(1), s, now);
            }
            Err(r) => {
                assert_eq!(r.state, State::Recovering);
                assert_eq!(r.retry_after_secs, Some(1));
            }
        }
    }
    admitted
}

#[test]
fn without_a_recovery_duration_half_open_closes_at_once() {
    let s = settings();
    let b = breaker(&s);
    trip_and_recover(&b, &s, 0);
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn a_recovery_admits_a_share_growing_linearly_from_ten_to_a_hundred_percent() {
    let s = ramp_settings();
    let b = breaker(&s);
    let closed_at = trip_and_recover(&b, &s, 0);
    assert_eq!(b.state(), State::Recovering);
    // 100 requests at the start of every other ramp step (each step: 500 ms).
    let shares: Vec<u32> = (0..10)
        .map(|i| admitted_of(&b, &s, closed_at + i * 1_000, 100))
        .collect();
    assert_eq!(shares, [10, 19, 28, 37, 46, 55, 64, 73, 82, 91]);
    // Past the recovery: closed, everything admitted.
    let end = closed_at + s.recovery_ms;
    let a = b.try_acquire(&s, end);
    let t = a.transition.expect("recovering -> closed");
    assert_eq!(
        (t.from, t.to, t.at_ms),
        (State::Recovering, State::Closed, end)
    );
    assert!(a.result.is_ok());
    assert_eq!(admitted_of(&b, &s, end, 100), 100);
}

#[test]
fn the_share_is_exact_within_a_step_whatever_the_order() {
    let s = ramp_settings();
    let b = breaker(&s);
    let at = trip_and_recover(&b, &s, 0);
    // 10 %: the first of every ten requests.
    let pattern: Vec<bool> = (0..30).map(|_| admitted(&b, &s, at)).collect();
    let expected: Vec<bool> = (0..30).map(|i| i % 10 == 0).collect();
    assert_eq!(pattern, expected);
}

#[test]
fn a_breaker_failing_while_recovering_opens_again_with_the_base_reset_timeout() {
    let s = Settings {
        reset_timeout_max_ms: 240_000,
        volume_threshold: 2,
        ..ramp_settings()
    };
    let b = breaker(&s);
    open_it(&b, &s, 0);
    // One failed probe: the next open time is doubled.
    let failed = call(&b, &s, 30_000, FAIL).expect("reopens");
    assert_eq!((failed.from, failed.to), (State::HalfOpen, State::Open));
    assert_eq!(b.snapshot(&s, 30_000).open_ms, 60_000);
    let closed_at = 90_000;
    call(&b, &s, closed_at, OK).expect("the probe closes");
    assert_eq!(b.state(), State::Recovering);
    // Two failures admitted while recovering trip it (volume 2).
    let mut t = None;
    let mut now = closed_at;
    while t.is_none() {
        now += 1;
        if let Ok(p) = b.try_acquire(&s, now).result {
            t = b.record(p, Outcome::failure(FailureKind::Status, 1), &s, now);
        }
    }
    let t = t.expect("trips");
    assert_eq!((t.from, t.to), (State::Recovering, State::Open));
    // A close reset the back-off: open for reset_timeout again.
    let snap = b.snapshot(&s, now);
    assert_eq!(snap.open_ms, 30_000);
    assert_eq!(snap.retry_after_secs, Some(30));
}

#[test]
fn the_end_of_a_recovery_is_made_by_advance_without_requests() {
    let s = ramp_settings();
    let b = breaker(&s);
    let at = trip_and_recover(&b, &s, 0);
    assert_eq!(b.advance(&s, at + s.recovery_ms - 1), None);
    assert_eq!(b.state(), State::Recovering);
    let t = b.advance(&s, at + s.recovery_ms).expect("closes");
    assert_eq!((t.from, t.to), (State::Recovering, State::Closed));
    assert_eq!(b.advance(&s, at + s.recovery_ms + 1), None);
}

#[test]
fn requests_admitted_while_recovering_are_recorded_after_the_close() {
    let s = Settings {
        volume_threshold: 3,
        ..ramp_settings()
    };
    let b = breaker(&s);
    let at = trip_and_recover(&b, &s, 0);
    let end = at + s.recovery_ms;
    // Admitted late in the recovery (share near 100 %), finished after it.
    let permits: Vec<Permit> = (0..3)
        .filter_map(|_| b.try_acquire(&s, end - 1).result.ok())
        .collect();
    assert_eq!(permits.len(), 3);
    b.advance(&s, end).expect("closes");
    let mut last = None;
    for p in permits {
        last = b.record(p, Outcome::failure(FailureKind::Status, 1), &s, end + 1);
    }
    let t = last.expect("the failures count in closed");
    assert_eq!((t.from, t.to), (State::Closed, State::Open));
}

#[test]
fn snapshot_reports_the_share_and_reads_a_finished_recovery_as_closed() {
    let s = ramp_settings();
    let b = breaker(&s);
    let at = trip_and_recover(&b, &s, 0);
    let snap = b.snapshot(&s, at + 5_000);
    assert_eq!(snap.state, State::Recovering);
    assert_eq!(snap.admit_permille, Some(550));
    assert_eq!(snap.retry_after_secs, Some(1));
    let snap = b.snapshot(&s, at + s.recovery_ms);
    assert_eq!((snap.state, snap.admit_permille), (State::Closed, None));
}

#[test]
fn a_recovering_breaker_in_observe_mode_admits_everything() {
    let s = Settings {
        mode: Mode::Observe,
        ..ramp_settings()
    };
    let b = breaker(&s);
    let at = trip_and_recover(&b, &s, 0);
    assert_eq!(b.state(), State::Recovering);
    assert_eq!(admitted_of(&b, &s, at, 50), 50);
}

#[test]
fn a_reload_that_turns_the_ramp_off_closes_a_recovering_breaker() {
    let s = ramp_settings();
    let b = breaker(&s);
    let at = trip_and_recover(&b, &s, 0);
    let off = Settings {
        recovery_ms: 0,
        ..s.clone()
    };
    let a = b.try_acquire(&off, at + 1);
    assert!(a.result.is_ok());
    assert_eq!(a.transition.map(|t| t.to), Some(State::Closed));
}

#[test]
fn a_reshape_keeps_a_recovery_going() {
    let s = ramp_settings();
    let b = breaker(&s);
    trip_and_recover(&b, &s, 0);
    let r = b.reshaped(shape_b());
    assert_eq!(r.state(), State::Recovering);
}

#[test]
fn each_reopening_from_half_open_doubles_the_open_time_up_to_the_maximum() {
    let s = Settings {
        reset_timeout_ms: 1_000,
        reset_timeout_max_ms: 5_000,
        ..settings()
    };
    let b = breaker(&s);
    open_it(&b, &s, 0);
    let mut now = 0;
    let mut seen = Vec::new();
    for _ in 0..5 {
        let open_ms = b.snapshot(&s, now).open_ms;
        seen.push(open_ms);
        // Still open a millisecond before the open time ends, with the truth in
        // Retry-After; half-open at the end.
        let r = b
            .try_acquire(&s, now + open_ms - 1)
            .result
            .expect_err("open");
        assert_eq!(r.retry_after_secs, Some(1));
        let first = b.try_acquire(&s, now).result.expect_err("open");
        assert_eq!(first.retry_after_secs, Some(open_ms / 1_000));
        now += open_ms;
        let t = call(&b, &s, now, FAIL).expect("the probe fails");
        assert_eq!((t.from, t.to), (State::HalfOpen, State::Open));
    }
    assert_eq!(seen, [1_000, 2_000, 4_000, 5_000, 5_000]);
    // A close resets it.
    now += 5_000;
    call(&b, &s, now, OK).expect("closes");
    open_it(&b, &s, now);
    assert_eq!(b.snapshot(&s, now).open_ms, 1_000);
}

#[test]
fn without_a_maximum_the_open_time_never_grows() {
    let s = settings();
    let b = breaker(&s);
    open_it(&b, &s, 0);
    let mut now = 0;
    for _ in 0..3 {
        now += s.reset_timeout_ms;
        call(&b, &s, now, FAIL).expect("reopens");
        assert_eq!(b.snapshot(&s, now).open_ms, s.reset_timeout_ms);
    }
}

#[test]
fn an_operator_reset_forgets_the_back_off() {
    let s = Settings {
        reset_timeout_ms: 1_000,
        reset_timeout_max_ms: 8_000,
        ..settings()
    };
    let b = breaker(&s);
    open_it(&b, &s, 0);
    call(&b, &s, 1_000, FAIL).expect("reopens");
    assert_eq!(b.snapshot(&s, 1_000).open_ms, 2_000);
    b.reset(1_500);
    open_it(&b, &s, 1_600);
    assert_eq!(b.snapshot(&s, 1_600).open_ms, 1_000);
}

#[test]
fn a_pause_from_open_shows_no_retry_after() {
    let s = Settings {
        reset_timeout_max_ms: 60_000,
        ..settings()
    };
    let b = breaker(&s);
    open_it(&b, &s, 0);
    b.pause(10);
    let r = b.try_acquire(&s, 20).result.expect_err("paused");
    assert_eq!((r.state, r.retry_after_secs), (State::ForcedOpen, None));
}

#[test]
fn a_fleet_trip_opens_a_closed_breaker_which_recovers_on_its_own() {
    let s = settings();
    let b = breaker(&s);
    let t = b.trip(1_000).expect("closed -> open");
    assert_eq!((t.from, t.to), (State::Closed, State::Open));
    assert!(!admitted(&b, &s, 30_999));
    assert_eq!(b.trip(2_000), None, "already open");
    // Through half_open like any trip: the reset timeout runs from the trip.
    let a = b.try_acquire(&s, 31_000);
    assert_eq!(a.transition.map(|t| t.to), Some(State::HalfOpen));
    let probe = a.result.expect("probe");
    let t = b.record(probe, Outcome::success(1), &s, 31_000);
    assert_eq!(t.map(|t| t.to), Some(State::Closed));
    // A paused breaker is not tripped.
    b.pause(40_000);
    assert_eq!(b.trip(41_000), None);
}
