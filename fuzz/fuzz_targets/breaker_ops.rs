//! Any sequence of breaker operations at any times, with or without a recovery ramp and
//! back-off: no panic, a rejection always says a non-closed state and a Retry-After of
//! at least 1 s, window counts stay consistent, a recovering share stays within 10-100 %.
#![no_main]

use fusegate::breaker::{Breaker, FailureKind, Mode, Outcome, Settings, State, WindowShape};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let s = Settings {
        volume_threshold: u32::from(data[0] % 20) + 1,
        error_threshold_percentage: u32::from(data[1] % 100) + 1,
        half_open_probes: u32::from(data[2] % 4) + 1,
        reset_timeout_ms: u64::from(data[3]) * 37,
        reset_timeout_max_ms: u64::from(data[0] >> 4) * 400,
        recovery_ms: u64::from(data[1] >> 4) * 150,
        slow_call_ms: u64::from(data[0] % 3) * 50,
        mode: if data[1] % 5 == 0 {
            Mode::Observe
        } else {
            Mode::Enforce
        },
        window: WindowShape {
            bucket_ms: u64::from(data[2] % 7) + 1,
            buckets: u32::from(data[3] % 9) + 1,
        },
        ..Settings::default()
    };
    let b = Breaker::new(s.window, 0);
    let mut now = 0u64;
    let mut held = Vec::new();
    for op in &data[4..] {
        now = now.saturating_add(u64::from(op >> 4) * 13);
        match op & 0x0f {
            0..=5 => {
                let a = b.try_acquire(&s, now);
                match a.result {
                    Ok(p) => held.push(p),
                    Err(r) => {
                        if let Some(secs) = r.retry_after_secs {
                            assert!(secs >= 1);
                        }
                        assert_ne!(r.state, State::Closed);
                    }
                }
            }
            6..=9 => {
                if let Some(p) = held.pop() {
                    let failure = (op & 1 == 1).then_some(FailureKind::Status);
                    let _ = b.record(
                        p,
                        Outcome {
                            failure,
                            duration_ms: u64::from(*op),
                        },
                        &s,
                        now,
                    );
                }
            }
            10 => {
                if let Some(p) = held.pop() {
                    b.release(p);
                }
            }
            11 => {
                let _ = b.pause(now);
            }
            12 => {
                let _ = b.resume(now);
            }
            13 => {
                let _ = b.reset(now);
            }
            14 => {
                let _ = b.flip(now);
            }
            _ => {
                let _ = b.advance(&s, now);
                let snap = b.snapshot(&s, now);
                assert!(snap.window.failures <= snap.window.total);
                assert!(snap.window.slow <= snap.window.total);
                if let Some(p) = snap.admit_permille {
                    assert!((100..=1000).contains(&p));
                }
                assert!(snap.open_ms >= s.reset_timeout_ms);
            }
        }
    }
    for p in held {
        b.release(p);
    }
});
