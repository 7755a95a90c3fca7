//! Log output: text or JSON lines on stderr, level from the config.

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
    let _ = b.try_init();
    log::set_max_level(level.as_filter());
}
