//! Log output: text or JSON lines on stderr, level from the config.
//!
//! pingora logs a client that went away while its request header was being read (or
//! while an error answer was being sent) at `error`, per connection. Such a client is no
//! error of the gateway, and a flood of them (a slowloris attack, a load test ending)
//! must not fill the log: those lines are written at `debug`. They are counted in
//! `fusegate_client_errors_total`. pingora's "failed to acquire reusable stream" is
//! written at `debug` too: a race in its upstream connection pool (a pooled connection
//! still held by its idle watcher), after which it opens a new connection; no request
//! fails for it.

use crate::config::{LogFormat, LogLevel};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Lets at most a number of lines through per second and counts the rest, so that an
/// outage (every request failing the same way) does not flood the log.
#[derive(Debug)]
pub struct Throttle {
    per_sec: u64,
    second: AtomicU64,
    passed: AtomicU64,
    suppressed: AtomicU64,
}

impl Throttle {
    pub const fn new(per_sec: u64) -> Self {
        Throttle {
            per_sec,
            second: AtomicU64::new(0),
            passed: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a line may be written at `now_sec` (`n`: lines held back since the
    /// last one written, for it to mention); `None` when this second's lines are spent.
    pub fn admit(&self, now_sec: u64) -> Option<u64> {
        let second = self.second.load(Ordering::Acquire);
        if now_sec != second
            && self
                .second
                .compare_exchange(second, now_sec, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.passed.store(0, Ordering::Release);
        }
        if self.passed.fetch_add(1, Ordering::AcqRel) < self.per_sec {
            Some(self.suppressed.swap(0, Ordering::AcqRel))
        } else {
            self.suppressed.fetch_add(1, Ordering::AcqRel);
            None
        }
    }
}

/// Installs the logger. The level is the global `log` maximum, so it can be changed at
/// run time (`PUT /log-level`) with [`log::set_max_level`].
pub fn init(level: LogLevel, format: LogFormat) {
    let mut b = env_logger::Builder::new();
    b.filter_level(log::LevelFilter::Trace);
    if format == LogFormat::Json {
        b.format(|buf, record| {
            let line = serde_json::json!({
                "ts": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
                "level": record.level().as_str().to_ascii_lowercase(),
                "target": record.target(),
                "msg": record.args().to_string(),
            });
            writeln!(buf, "{line}")
        });
    }
    let logger = ClientSideQuiet { inner: b.build() };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level.as_filter());
    }
}

/// Passes every record on, but pingora's error lines that are no error of the gateway
/// ([`benign`]) at `debug`.
struct ClientSideQuiet {
    inner: env_logger::Logger,
}

/// Whether a pingora error line is no error of the gateway: about the client's side of a
/// connection, or the connection pool's harmless race.
fn benign(msg: &str) -> bool {
    msg.starts_with("Fail to proxy: Downstream")
        || msg.contains("to downstream")
        || msg == "failed to acquire reusable stream"
}

impl log::Log for ClientSideQuiet {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if record.level() == log::Level::Error && record.target().starts_with("pingora") {
            let msg = record.args().to_string();
            if benign(&msg) {
                if log::max_level() >= log::LevelFilter::Debug {
                    self.inner.log(
                        &log::Record::builder()
                            .args(format_args!("{msg}"))
                            .level(log::Level::Debug)
                            .target(record.target())
                            .module_path(record.module_path())
                            .file(record.file())
                            .line(record.line())
                            .build(),
                    );
                }
                return;
            }
        }
        self.inner.log(record)
    }

    fn flush(&self) {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::{benign, Throttle};

    #[test]
    fn the_throttle_passes_a_few_lines_a_second_and_counts_the_rest() {
        let t = Throttle::new(2);
        assert_eq!(t.admit(100), Some(0));
        assert_eq!(t.admit(100), Some(0));
        assert_eq!(t.admit(100), None);
        assert_eq!(t.admit(100), None);
        // The next second's first line tells how many were held back.
        assert_eq!(t.admit(101), Some(2));
        assert_eq!(t.admit(101), Some(0));
        assert_eq!(t.admit(101), None);
    }

    #[test]
    fn benign_pingora_errors_are_recognised() {
        assert!(benign(
            "Fail to proxy: Downstream ConnectionClosed context: while reading request headers, downstream session type: HTTP/1"
        ));
        assert!(benign(
            "failed to send error response to downstream: Downstream WriteError"
        ));
        assert!(benign("failed to acquire reusable stream"));
        assert!(!benign(
            "Fail to proxy: Upstream ConnectRefused context: ..."
        ));
    }
}
