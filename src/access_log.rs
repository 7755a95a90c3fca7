//! The access log (`[access_log]`): one line per request on the proxy port, as JSON or
//! as nginx's `combined` plus the route and the request id.
//!
//! Written off the request path: the proxy hands an [`Entry`] (references and numbers,
//! no formatting) to a bounded queue without waiting, and a writer thread formats and
//! writes in batches. When the queue is full the entry is dropped and counted in
//! `fusegate_access_log_dropped_total`; the proxy never waits on the log. A file is
//! appended to, and reopened by path on SIGUSR1 (logrotate's convention): if the reopen
//! fails, the old file is kept and a warning says why.

use crate::config::{AccessLogConfig, AccessLogFormat};
use crate::runtime::{Route, UpstreamUsed};
use http::HeaderValue;
use prometheus::IntCounter;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Entries the queue holds before new ones are dropped.
pub const QUEUE_LEN: usize = 16 * 1024;

/// How often the writer drains the queue. It is never woken by a request: a sender
/// finds no sleeping receiver to wake, so queueing an entry makes no system call.
const DRAIN_INTERVAL: Duration = Duration::from_millis(20);

/// Bytes formatted before they are written out.
const WRITE_BATCH: usize = 64 * 1024;

/// What one request leaves in the access log. Built on the request path from what the
/// request already holds; the strings are made by the writer.
#[derive(Debug)]
pub struct Entry {
    pub time: SystemTime,
    pub request_id: Option<HeaderValue>,
    pub client: Option<IpAddr>,
    pub method: http::Method,
    pub uri: http::Uri,
    pub proto: &'static str,
    pub status: u16,
    pub route: Option<Arc<Route>>,
    /// Where the request went: an index into the route's upstreams, or its fallback
    /// upstream.
    pub upstream: Option<UpstreamUsed>,
    /// From the request sent to the upstream's response header.
    pub upstream_ms: Option<u64>,
    /// From the request's arrival to the end of the response, in microseconds.
    pub total_us: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The breaker state the request met; `None` when it did not get as far.
    pub breaker: Option<&'static str>,
    /// The `X-Cache` value, for a route with a cache.
    pub cache: Option<&'static str>,
    pub outcome: &'static str,
    pub referer: Option<HeaderValue>,
    pub user_agent: Option<HeaderValue>,
}

/// A running access log: the queue's sending side. Dropping the last handle lets the
/// writer drain the queue and end.
pub struct AccessLog {
    config: AccessLogConfig,
    tx: SyncSender<Entry>,
    reopen: Arc<AtomicBool>,
    dropped: IntCounter,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("config", &self.config)
            .finish()
    }
}

/// Checks, without creating anything, that `path` can be written: `-` always can; an
/// existing file is opened for appending; a missing one needs a writable directory. The
/// error names the path and the reason.
pub fn check_path(path: &str) -> Result<(), String> {
    if path == "-" {
        return Ok(());
    }
    let p = Path::new(path);
    if p.exists() {
        return OpenOptions::new()
            .append(true)
            .open(p)
            .map(drop)
            .map_err(|e| format!("cannot open {} for appending: {e}", p.display()));
    }
    let dir = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() && !m.permissions().readonly() => Ok(()),
        Ok(m) if m.is_dir() => Err(format!(
            "cannot create {}: directory {} is read-only",
            p.display(),
            dir.display()
        )),
        Ok(_) => Err(format!(
            "cannot create {}: {} is not a directory",
            p.display(),
            dir.display()
        )),
        Err(e) => Err(format!(
            "cannot create {}: directory {}: {e}",
            p.display(),
            dir.display()
        )),
    }
}

fn open(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| format!("cannot open {} for appending: {e}", path.display()))
}

impl AccessLog {
    /// Opens the log and starts its writer thread.
    pub fn start(config: &AccessLogConfig, dropped: IntCounter) -> Result<AccessLog, String> {
        let sink = if config.path == "-" {
            Sink::Stdout
        } else {
            let path = PathBuf::from(&config.path);
            Sink::File(open(&path)?, path)
        };
        let (tx, rx) = mpsc::sync_channel(QUEUE_LEN);
        let reopen = Arc::new(AtomicBool::new(false));
        let writer = Writer {
            rx,
            sink,
            format: config.format,
            reopen: reopen.clone(),
            buf: Vec::with_capacity(WRITE_BATCH + 4096),
            clock: SecondClock::default(),
        };
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer.run())
            .map_err(|e| format!("cannot start the access-log writer: {e}"))?;
        Ok(AccessLog {
            config: config.clone(),
            tx,
            reopen,
            dropped,
        })
    }

    /// The settings it was started with.
    pub fn config(&self) -> &AccessLogConfig {
        &self.config
    }

    /// Queues an entry; drops and counts it when the queue is full.
    pub fn log(&self, entry: Entry) {
        match self.tx.try_send(entry) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => self.dropped.inc(),
        }
    }

    /// Asks the writer to reopen its file by path (SIGUSR1).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
    }
}

enum Sink {
    Stdout,
    File(File, PathBuf),
}

struct Writer {
    rx: Receiver<Entry>,
    sink: Sink,
    format: AccessLogFormat,
    reopen: Arc<AtomicBool>,
    buf: Vec<u8>,
    clock: SecondClock,
}

/// The formatted times of the current second, made once per second rather than per line.
#[derive(Default)]
struct SecondClock {
    second: u64,
    /// `2026-12-04T21:51:49.` (RFC 3339 up to the fraction).
    rfc3339: String,
    /// `04/Dec/2026:21:51:49 +0000` (nginx's `$time_local`, UTC).
    local: String,
}

impl SecondClock {
    /// Brings the strings to `t`'s second; returns its milliseconds.
    fn at(&mut self, t: SystemTime) -> u32 {
        let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        if since.as_secs() != self.second || self.rfc3339.is_empty() {
            self.second = since.as_secs();
            let whole = SystemTime::UNIX_EPOCH + Duration::from_secs(self.second);
            let mut s = humantime::format_rfc3339_seconds(whole).to_string();
            s.pop(); // the `Z`
            s.push('.');
            self.rfc3339 = s;
            self.local = time_local(whole);
        }
        since.subsec_millis()
    }
}

impl Writer {
    fn run(mut self) {
        loop {
            let open = loop {
                match self.rx.try_recv() {
                    Ok(e) => {
                        self.format_entry(&e);
                        if self.buf.len() >= WRITE_BATCH {
                            self.flush();
                            // A backlog that never empties still reopens on time.
                            if self.reopen.swap(false, Ordering::AcqRel) {
                                self.reopen_file();
                            }
                        }
                    }
                    Err(TryRecvError::Empty) => break true,
                    Err(TryRecvError::Disconnected) => break false,
                }
            };
            self.flush();
            if self.reopen.swap(false, Ordering::AcqRel) {
                self.reopen_file();
            }
            if !open {
                return;
            }
            std::thread::sleep(DRAIN_INTERVAL);
        }
    }

    fn format_entry(&mut self, e: &Entry) {
        let millis = self.clock.at(e.time);
        let result = match self.format {
            AccessLogFormat::Json => write_json(&mut self.buf, e, &self.clock.rfc3339, millis),
            AccessLogFormat::Combined => write_combined(&mut self.buf, e, &self.clock.local),
        };
        if result.is_err() {
            log::debug!("an access-log line could not be formatted");
        }
    }

    fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let result = match &mut self.sink {
            Sink::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(&self.buf).and_then(|()| out.flush())
            }
            Sink::File(f, _) => f.write_all(&self.buf),
        };
        if let Err(e) = result {
            log::warn!("access log: write failed: {e}");
        }
        self.buf.clear();
    }

    fn reopen_file(&mut self) {
        let Sink::File(_, path) = &self.sink else {
            return;
        };
        match open(path) {
            Ok(f) => {
                let path = path.clone();
                log::info!("access log reopened: {}", path.display());
                self.sink = Sink::File(f, path);
            }
            Err(e) => log::warn!("access log: {e}; still writing to the file already open"),
        }
    }
}

/// The field values both formats print.
struct Fields<'a> {
    request_id: &'a str,
    route: &'a str,
    upstream: Option<&'a str>,
}

fn fields(e: &Entry) -> Fields<'_> {
    let route = e.route.as_deref();
    let upstream = route
        .zip(e.upstream)
        .and_then(|(r, u)| r.upstream_authority(u));
    Fields {
        request_id: e
            .request_id
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-"),
        route: route.map_or("-", |r| &r.name),
        upstream,
    }
}

/// A JSON string value, escaped.
fn json_str(buf: &mut Vec<u8>, s: &str) -> io::Result<()> {
    serde_json::to_writer(&mut *buf, s).map_err(io::Error::other)
}

/// A JSON string value or `null`.
fn json_opt(buf: &mut Vec<u8>, s: Option<&str>) -> io::Result<()> {
    match s {
        Some(s) => json_str(buf, s),
        None => {
            buf.extend_from_slice(b"null");
            Ok(())
        }
    }
}

fn path_and_query(uri: &http::Uri) -> &str {
    uri.path_and_query()
        .map_or_else(|| uri.path(), |pq| pq.as_str())
}

/// One JSON object per line, the fields in a fixed order, written straight into `buf`.
fn write_json(buf: &mut Vec<u8>, e: &Entry, second: &str, millis: u32) -> io::Result<()> {
    let f = fields(e);
    write!(buf, "{{\"time\":\"{second}{millis:03}Z\",\"request_id\":")?;
    json_str(buf, f.request_id)?;
    buf.extend_from_slice(b",\"client\":");
    match e.client {
        Some(ip) => write!(buf, "\"{ip}\"")?,
        None => buf.extend_from_slice(b"null"),
    }
    write!(buf, ",\"method\":")?;
    json_str(buf, e.method.as_str())?;
    buf.extend_from_slice(b",\"path\":");
    json_str(buf, path_and_query(&e.uri))?;
    write!(
        buf,
        ",\"proto\":\"{}\",\"status\":{},\"route\":",
        e.proto, e.status
    )?;
    json_opt(buf, e.route.as_deref().map(|r| &*r.name))?;
    buf.extend_from_slice(b",\"upstream\":");
    json_opt(buf, f.upstream)?;
    buf.extend_from_slice(b",\"upstream_ms\":");
    match e.upstream_ms {
        Some(ms) => write!(buf, "{ms}")?,
        None => buf.extend_from_slice(b"null"),
    }
    write!(
        buf,
        ",\"total_ms\":{},\"bytes_in\":{},\"bytes_out\":{},\"breaker\":",
        e.total_us as f64 / 1000.0,
        e.bytes_in,
        e.bytes_out
    )?;
    json_opt(buf, e.breaker)?;
    buf.extend_from_slice(b",\"cache\":");
    json_opt(buf, e.cache)?;
    writeln!(buf, ",\"outcome\":\"{}\"}}", e.outcome)
}

/// nginx's `combined`, then the route and the request id:
/// `127.0.0.1 - - [04/Dec/2026:21:38:22 +0000] "GET /api/x HTTP/1.1" 200 5 "-" "curl/8" "catalog" "id"`.
fn write_combined(buf: &mut Vec<u8>, e: &Entry, time_local: &str) -> io::Result<()> {
    let f = fields(e);
    let client = e.client.map_or_else(|| "-".to_string(), |c| c.to_string());
    let quoted = |v: Option<&HeaderValue>| {
        v.and_then(|v| v.to_str().ok())
            .map_or_else(|| "-".to_string(), escape)
    };
    writeln!(
        buf,
        "{client} - - [{time_local}] \"{} {} {}\" {} {} \"{}\" \"{}\" \"{}\" \"{}\"",
        e.method,
        escape(path_and_query(&e.uri)),
        e.proto,
        e.status,
        e.bytes_out,
        quoted(e.referer.as_ref()),
        quoted(e.user_agent.as_ref()),
        escape(f.route),
        escape(f.request_id),
    )
}

/// A value inside double quotes: `"` and `\` escaped, control bytes as `\xNN`.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\x{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// nginx's `$time_local` in UTC: `04/Dec/2026:21:38:22 +0000`.
fn time_local(t: SystemTime) -> String {
    // `Fri, 04 Dec 2026 21:38:22 GMT`
    let http = httpdate::fmt_http_date(t);
    let parts: Vec<&str> = http.split(' ').collect();
    match parts.as_slice() {
        [_, day, month, year, time, _] => format!("{day}/{month}/{year}:{time} +0000"),
        _ => http,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_420_302_045),
            request_id: Some(HeaderValue::from_static("abc")),
            client: Some(IpAddr::from([127, 0, 0, 1])),
            method: http::Method::GET,
            uri: "/api/x?q=1".parse().unwrap(),
            proto: "HTTP/1.1",
            status: 200,
            route: None,
            upstream: None,
            upstream_ms: Some(3),
            total_us: 4_567,
            bytes_in: 0,
            bytes_out: 5,
            breaker: Some("closed"),
            cache: None,
            outcome: "success",
            referer: None,
            user_agent: Some(HeaderValue::from_static("curl/8 \"x\"")),
        }
    }

    #[test]
    fn a_json_line_has_every_field() {
        let mut buf = Vec::new();
        let mut clock = SecondClock::default();
        let e = entry();
        let millis = clock.at(e.time);
        write_json(&mut buf, &e, &clock.rfc3339, millis).unwrap();
        assert_eq!(buf.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["time"], "2026-12-04T21:38:22.045Z");
        assert_eq!(v["path"], "/api/x?q=1");
        assert_eq!(v["total_ms"], 4.567);
        assert_eq!(v["upstream_ms"], 3);
        assert_eq!(v["outcome"], "success");
        assert_eq!(v["route"], serde_json::Value::Null);
    }

    #[test]
    fn a_combined_line_reads_as_nginx_writes_it() {
        let mut buf = Vec::new();
        let mut clock = SecondClock::default();
        let e = entry();
        clock.at(e.time);
        write_combined(&mut buf, &e, &clock.local).unwrap();
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "127.0.0.1 - - [04/Dec/2026:21:38:22 +0000] \"GET /api/x?q=1 HTTP/1.1\" 200 5 \
             \"-\" \"curl/8 \\\"x\\\"\" \"-\" \"abc\"\n"
        );
    }

    #[test]
    fn an_unwritable_path_is_refused_with_its_reason() {
        assert!(check_path("-").is_ok());
        let e = check_path("/nonexistent-dir/x/access.log").unwrap_err();
        assert!(e.contains("/nonexistent-dir/x/access.log"), "{e}");
    }
}
