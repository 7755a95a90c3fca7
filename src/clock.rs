//! The process clock: monotonic milliseconds for the breakers, with a mapping back to wall
//! time for reports.

use std::time::{Duration, Instant, SystemTime};

/// Milliseconds since the clock was made, plus the wall time it was made at.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
    wall_origin: SystemTime,
}

impl Default for Clock {
    fn default() -> Self {
        Clock {
            origin: Instant::now(),
            wall_origin: SystemTime::now(),
        }
    }
}

impl Clock {
    pub fn new() -> Self {
        Self::default()
    }

    /// Monotonic milliseconds since this clock was made.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The wall time of a reading of [`Clock::now_ms`].
    pub fn wall(&self, ms: u64) -> SystemTime {
        self.wall_origin + Duration::from_millis(ms)
    }
}
