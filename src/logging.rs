//! Log output: text or JSON lines on stderr, level from the config.
//!
//! pingora logs a client that went away while its request header was being read (or
//! while an error answer was being sent) at `error`, per connection. Such a client is no
//! error of the gateway, and a flood of them (a slowloris attack, a load test ending)
//! must not fill the log: those lines are written at `debug`. They are counted in
//! `fusegate_client_errors_total`.

use crate::config::{LogFormat, LogLevel};
use std::io::Write;

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

/// Passes every record on, but pingora's per-connection error lines about the client's
/// side of a connection at `debug`.
struct ClientSideQuiet {
    inner: env_logger::Logger,
}

/// Whether a pingora error line is about the client's side of a connection.
fn client_side(msg: &str) -> bool {
    msg.starts_with("Fail to proxy: Downstream") || msg.contains("to downstream")
}

impl log::Log for ClientSideQuiet {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if record.level() == log::Level::Error && record.target().starts_with("pingora") {
            let msg = record.args().to_string();
            if client_side(&msg) {
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
    use super::client_side;

    #[test]
    fn client_side_pingora_errors_are_recognised() {
        assert!(client_side(
            "Fail to proxy: Downstream ConnectionClosed context: while reading request headers, downstream session type: HTTP/1"
        ));
        assert!(client_side(
            "failed to send error response to downstream: Downstream WriteError"
        ));
        assert!(!client_side(
            "Fail to proxy: Upstream ConnectRefused context: ..."
        ));
    }
}
