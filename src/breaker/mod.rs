//! The per-route circuit breaker: plain Rust, no I/O, no pingora types, time passed in.
//!
//! The breaker is split the way it is used:
//! - [`Settings`] and [`Outcome`] *decide* what a finished request was (failure kind,
//!   slowness) — the proxy fills them in from what pingora saw;
//! - [`Window`] keeps the rolling counts in time buckets;
//! - [`Breaker`] is the state machine that gates traffic: `closed`, `open`, `half_open`,
//!   `forced_open`, and `recovering` (closed again, admitting a growing share).
//!
//! ```text
//!   closed ──trip──▶ open ──open time passed──▶ half_open
//!   half_open ──a probe fails──▶ open            (open time doubles, up to reset_timeout_max)
//!   half_open ──all probes succeed──▶ recovering ──recovery_duration passed──▶ closed
//!                                     (straight to closed when recovery_duration = 0)
//!   recovering ──trip──▶ open                    (open time back to reset_timeout)
//!   any ──pause──▶ forced_open ──resume──▶ closed;    any ──reset──▶ closed
//! ```
//!
//! Everything on the request path is atomics: admission is a load (closed) or a
//! compare-and-swap (half-open probes), recording is a few `fetch_add`s.
//!
//! Times are milliseconds on a monotonic clock chosen by the caller ([`crate::clock`]);
//! tests pass plain numbers.

mod settings;
mod state;
mod window;

pub use settings::{GrpcCodes, Mode, Settings, StatusSet, WindowShape};
pub use state::{
    admit_permille, Acquire, Breaker, FailureKind, Outcome, Permit, Rejection, Snapshot, State,
    Transition,
};
pub use window::{Counts, Window};

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
