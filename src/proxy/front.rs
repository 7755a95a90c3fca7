//! The proxy's front door: every client connection passes through here before pingora
//! parses a request, so slow or oversized request headers cannot hold a connection open.
//!
//! pingora bounds each read of a request header, not the header as a whole, so a client
//! sending one byte every few seconds would keep its connection (and its buffer) for as
//! long as it liked. [`FrontDoor`] wraps each accepted stream in a [`LimitedStream`] that
//! watches the bytes of every request header as pingora reads them:
//! - the whole header must arrive within `server.header_timeout`, counted from the accept
//!   for a connection's first request and from the first byte for later ones (the idle
//!   time between requests is `server.keepalive_timeout`), else 408 and the connection
//!   is closed (quietly, when the client has not sent a byte);
//! - a header larger than `server.max_header_bytes` gets 431 and the connection is closed.
//!
//! Once a header is complete the stream is a plain pass-through; body limits are applied
//! by the proxy hooks (`server.body_timeout`, `server.max_body_bytes`). The limits are read
//! from the config in force when a connection is accepted, so a reload applies them to
//! new connections.

use crate::config::ServerConfig;
use crate::gateway::Gateway;
use crate::metrics::{ClientError, Metrics};
use crate::proxy::Proxy;
use async_trait::async_trait;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType,
};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The limits one connection is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderLimits {
    pub timeout: Duration,
    pub max_bytes: usize,
}

/// The proxy service's application: pingora's HTTP proxy behind the header limits and
/// `server.max_connections`; on the TLS listeners, behind the TLS handshake too.
pub struct FrontDoor {
    proxy: Arc<HttpProxy<Proxy>>,
    gateway: Arc<Gateway>,
    /// Client connections open now, on the plain and TLS listeners together.
    open: Arc<AtomicUsize>,
    /// This door serves the TLS listeners.
    tls: bool,
}

impl FrontDoor {
    /// The plain listeners' door. pingora's HTTP/2 handling is turned on for the
    /// connections the door finds speaking it (`server.h2c`, ALPN `h2`), with the start
    /// config's `max_header_bytes` as its header-list limit and `keepalive_timeout` as
    /// its idle limit (HTTP/2 settings are fixed when the server starts).
    pub fn new(mut proxy: HttpProxy<Proxy>, gateway: Arc<Gateway>) -> Self {
        let server = &gateway.runtime().config.server;
        let mut options = pingora::apps::HttpServerOptions::default();
        options.h2c = true;
        options.h2_idle_timeout = Some(server.keepalive_timeout.0).filter(|d| !d.is_zero());
        proxy.server_options = Some(options);
        let mut h2 = pingora::protocols::http::v2::server::default_h2_options();
        h2.max_header_list_size(u32::try_from(server.max_header_bytes.0).unwrap_or(u32::MAX));
        proxy.h2_options = Some(h2);
        FrontDoor {
            proxy: Arc::new(proxy),
            gateway,
            open: Arc::new(AtomicUsize::new(0)),
            tls: false,
        }
    }

    /// The TLS listeners' door: the same proxy and connection count.
    pub fn tls_door(&self) -> FrontDoor {
        FrontDoor {
            proxy: self.proxy.clone(),
            gateway: self.gateway.clone(),
            open: self.open.clone(),
            tls: true,
        }
    }
}

/// The first bytes of every HTTP/2 connection (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether a plain connection opens with the HTTP/2 preface. Reads only as far as the
/// bytes agree with it (an HTTP/1 request differs at its first byte), then puts what it
/// read back for the parser that reads next. `None` when the connection ends, or stays
/// silent past `wait`, before its first byte.
async fn sniff_h2c(stream: Stream, wait: Duration) -> Option<(Stream, bool)> {
    use tokio::io::AsyncReadExt;
    // Plain listeners hand over the TCP stream itself.
    let mut l4 = stream
        .into_any()
        .downcast::<pingora::protocols::l4::stream::Stream>()
        .ok()?;
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut n = 0;
    let read = async {
        while n < H2_PREFACE.len() && buf[..n] == H2_PREFACE[..n] {
            match l4.read(&mut buf[n..]).await {
                Ok(0) | Err(_) => return,
                Ok(k) => n += k,
            }
        }
    };
    // A client that stops halfway is left to the HTTP/1 parser and its limits.
    let _ = tokio::time::timeout(wait, read).await;
    if n == 0 {
        return None;
    }
    let h2 = buf[..n] == *H2_PREFACE;
    l4.rewind(&buf[..n]);
    Some((l4, h2))
}

/// Accepts a TLS connection with the acceptor in force, within `wait`; counts the result
/// in `fusegate_tls_handshakes_total`. A client that does not speak TLS (plain HTTP on
/// the TLS port) or gives up is logged at `debug` only.
async fn accept_tls(
    stream: Stream,
    tls: &crate::tls::ListenerTls,
    wait: Duration,
    metrics: &Metrics,
) -> Option<Stream> {
    use tokio::io::AsyncReadExt;
    let Ok(mut l4) = stream
        .into_any()
        .downcast::<pingora::protocols::l4::stream::Stream>()
    else {
        return None;
    };
    // A connection closed or silent before its first byte made no handshake (a port
    // probe): closed without counting.
    let mut first = [0u8; 1];
    match tokio::time::timeout(wait, l4.read(&mut first)).await {
        Ok(Ok(1)) => l4.rewind(&first),
        _ => return None,
    }
    let handshake = pingora::protocols::tls::server::handshake(tls.acceptor(), *l4);
    match tokio::time::timeout(wait, handshake).await {
        Ok(Ok(tls_stream)) => {
            metrics.tls_handshake(true);
            Some(Box::new(tls_stream))
        }
        Ok(Err(e)) => {
            metrics.tls_handshake(false);
            log::debug!("TLS handshake failed: {e}");
            None
        }
        Err(_) => {
            metrics.tls_handshake(false);
            log::debug!("TLS handshake did not finish within {wait:?}");
            None
        }
    }
}

/// The header limits and keep-alive (whole seconds, `None` for off) of `server`.
pub fn client_limits(server: &ServerConfig) -> (HeaderLimits, Option<u64>) {
    let limits = HeaderLimits {
        timeout: server.header_timeout.0,
        max_bytes: usize::try_from(server.max_header_bytes.0).unwrap_or(usize::MAX),
    };
    // pingora counts keep-alive in whole seconds: round up, so only 0 turns it off.
    let idle = server.keepalive_timeout.0;
    let keepalive = idle.as_secs() + u64::from(idle.subsec_nanos() > 0);
    (limits, (keepalive > 0).then_some(keepalive))
}

/// Serves `app`'s HTTP/1.x requests on one connection, every request header held to
/// `limits`, until the connection closes or is not reusable. Used by the proxy port and
/// the admin port alike.
pub async fn serve_limited<A: HttpServerApp + Send + Sync + 'static>(
    app: &Arc<A>,
    stream: Stream,
    limits: HeaderLimits,
    keepalive: Option<u64>,
    metrics: &Arc<Metrics>,
    shutdown: &ShutdownWatch,
) -> Option<Stream> {
    let limited = LimitedStream::new(stream, limits).with_metrics(metrics.clone());
    let mut session = ServerSession::new_http1(Box::new(limited));
    session.set_keepalive(if *shutdown.borrow() { None } else { keepalive });
    let mut reused = app.process_new_http(session, shutdown).await;
    while let Some((stream, settings)) = reused.map(|r| r.consume()) {
        let stream: Stream = match stream.into_any().downcast::<LimitedStream<Stream>>() {
            Ok(mut limited) => {
                limited.next_request();
                limited
            }
            // Not ours (cannot happen: pingora hands back the stream it was given).
            Err(_) => return None,
        };
        let mut session = ServerSession::new_http1(stream);
        if let Some(settings) = settings {
            settings.apply_to_session(&mut session);
        }
        reused = app.process_new_http(session, shutdown).await;
    }
    None
}

/// One open client connection, counted while it lives.
struct ConnectionSlot<'a> {
    open: &'a AtomicUsize,
    metrics: &'a Metrics,
}

impl<'a> ConnectionSlot<'a> {
    /// A slot, unless `max` connections are open already.
    fn take(open: &'a AtomicUsize, max: usize, metrics: &'a Metrics) -> Option<Self> {
        let taken = open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if !taken {
            metrics.connections_refused.inc();
            log::debug!("closing a new client connection: server.max_connections ({max}) open");
            return None;
        }
        metrics.connections_open.inc();
        Some(ConnectionSlot { open, metrics })
    }
}

impl Drop for ConnectionSlot<'_> {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.metrics.connections_open.dec();
    }
}

#[async_trait]
impl ServerApp for FrontDoor {
    /// Serves one connection until it closes or is not reusable: the TLS handshake on a
    /// TLS listener, then HTTP/2 (ALPN `h2`, or the preface on a plain listener with
    /// `server.h2c`) through pingora's HTTP/2 server, else HTTP/1.x behind the header
    /// limits.
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let (limits, keepalive, max_connections, h2c, tls) = {
            let runtime = self.gateway.runtime();
            let server = &runtime.config.server;
            let (limits, keepalive) = client_limits(server);
            let tls = if self.tls { runtime.tls.clone() } else { None };
            (limits, keepalive, server.max_connections, server.h2c, tls)
        };
        let metrics = &self.gateway.metrics;
        // Dropping the stream closes a connection over the limit at once.
        let _slot = ConnectionSlot::take(&self.open, max_connections, metrics)?;
        if self.tls {
            // A reload keeps `[server.tls]` while its listeners run.
            stream = accept_tls(stream, tls.as_deref()?, limits.timeout, metrics).await?;
        }
        let h2 = if self.tls {
            matches!(
                stream.selected_alpn_proto(),
                Some(pingora::protocols::ALPN::H2)
            )
        } else if h2c {
            let (sniffed, h2) = sniff_h2c(stream, limits.timeout).await?;
            stream = sniffed;
            h2
        } else {
            false
        };
        if h2 {
            return ServerApp::process_new(&self.proxy, stream, shutdown).await;
        }
        serve_limited(&self.proxy, stream, limits, keepalive, metrics, shutdown).await
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}

/// Where a connection is in reading a request header.
#[derive(Debug)]
enum Phase {
    /// Reading a header that started at `since` (`None`: no byte of it yet).
    Header {
        since: Option<Instant>,
        scan: HeaderScan,
    },
    /// The header is complete: reads pass through.
    Body,
}

/// Finds where a request header ends in the pieces a connection reads, and counts its
/// size. Pure: no I/O, no time. The header ends at the first line feed that follows
/// another with only carriage returns between them (`\r\n\r\n`, or `\n\n` as HTTP/1
/// parsers also accept), once the request line has started: HTTP/1 parsers skip empty
/// lines before the request line, so those bytes count toward the header's size (and
/// deadline) but never end it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HeaderScan {
    /// Header bytes in the pieces before the current one.
    bytes: usize,
    /// Line feeds seen with only `\r` between them: 2 ends the header.
    line_ends: u8,
    /// A byte other than `\r` or `\n` has been seen: the request line has started.
    started: bool,
}

/// What [`HeaderScan::feed`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scanned {
    /// No end yet, and the header is within its limit so far.
    Incomplete,
    /// The header ends `end` bytes into this piece; what follows is body (or the next
    /// request).
    Complete { end: usize },
    /// The header has passed `max_bytes`.
    TooLarge,
}

impl HeaderScan {
    /// Scans the next piece of a header of at most `max_bytes`.
    pub fn feed(&mut self, piece: &[u8], max_bytes: usize) -> Scanned {
        for (i, b) in piece.iter().enumerate() {
            match b {
                b'\n' if self.started => {
                    self.line_ends += 1;
                    if self.line_ends == 2 {
                        let size = self.bytes.saturating_add(i + 1);
                        self.bytes = size;
                        return if size > max_bytes {
                            Scanned::TooLarge
                        } else {
                            Scanned::Complete { end: i + 1 }
                        };
                    }
                }
                b'\r' | b'\n' => {}
                _ => {
                    self.started = true;
                    self.line_ends = 0;
                }
            }
        }
        self.bytes = self.bytes.saturating_add(piece.len());
        if self.bytes > max_bytes {
            Scanned::TooLarge
        } else {
            Scanned::Incomplete
        }
    }

    /// Header bytes scanned so far.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// A client stream that enforces [`HeaderLimits`] on every request header read from it.
#[derive(Debug)]
pub struct LimitedStream<S = Stream> {
    inner: S,
    limits: HeaderLimits,
    phase: Phase,
    /// Armed while a header read is pending, so a silent client is noticed.
    deadline: Option<Pin<Box<Sleep>>>,
    /// Where refusals and clients leaving mid-header are counted.
    metrics: Option<Arc<Metrics>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> LimitedStream<S> {
    /// A freshly accepted connection: its first header is timed from now.
    pub fn new(inner: S, limits: HeaderLimits) -> Self {
        LimitedStream {
            inner,
            limits,
            phase: Phase::Header {
                since: Some(Instant::now()),
                scan: HeaderScan::default(),
            },
            deadline: None,
            metrics: None,
        }
    }

    /// Counts refusals and clients leaving mid-header in `fusegate_client_errors_total`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn count(&self, reason: ClientError) {
        if let Some(m) = &self.metrics {
            m.client_error(reason);
        }
    }

    /// The previous request is done; the next header is timed from its first byte.
    pub fn next_request(&mut self) {
        self.phase = Phase::Header {
            since: None,
            scan: HeaderScan::default(),
        };
        self.deadline = None;
    }

    /// Accounts for `data` just read in the header phase; `Err` when a limit is broken.
    fn observe(&mut self, data: &[u8]) -> Result<(), Refusal> {
        let Phase::Header { since, scan } = &mut self.phase else {
            return Ok(());
        };
        let started = *since.get_or_insert_with(Instant::now);
        match scan.feed(data, self.limits.max_bytes) {
            Scanned::Complete { .. } => {
                self.phase = Phase::Body;
                self.deadline = None;
                Ok(())
            }
            Scanned::TooLarge => Err(Refusal::TooLarge),
            Scanned::Incomplete if started.elapsed() >= self.limits.timeout => {
                Err(Refusal::TimedOut)
            }
            Scanned::Incomplete => Ok(()),
        }
    }

    /// Whether any byte of the current header has arrived.
    fn header_started(&self) -> bool {
        matches!(&self.phase, Phase::Header { scan, .. } if scan.bytes() > 0)
    }

    /// Arms the deadline of a header that has started, and reports whether it has passed.
    fn deadline_passed(&mut self, cx: &mut Context<'_>) -> bool {
        let Phase::Header {
            since: Some(started),
            ..
        } = self.phase
        else {
            return false;
        };
        let at = started + self.limits.timeout;
        let sleep = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        sleep.as_mut().poll(cx).is_ready()
    }

    /// Answers the refusal (best effort: one non-blocking write) and gives pingora the
    /// error that makes it close the connection.
    fn refuse(&mut self, cx: &mut Context<'_>, refusal: Refusal) -> io::Error {
        self.count(match refusal {
            Refusal::TimedOut => ClientError::HeaderTimeout,
            Refusal::TooLarge => ClientError::HeaderTooLarge,
        });
        let (status, reason, error, kind) = match refusal {
            Refusal::TimedOut => (
                408,
                "Request Timeout",
                "request_timeout",
                io::ErrorKind::TimedOut,
            ),
            Refusal::TooLarge => (
                431,
                "Request Header Fields Too Large",
                "header_too_large",
                io::ErrorKind::InvalidData,
            ),
        };
        let body = format!("{{\"error\":\"{error}\"}}\n");
        let response = format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let inner = Pin::new(&mut self.inner);
        if let Poll::Ready(Ok(_)) = inner.poll_write(cx, response.as_bytes()) {
            let _ = Pin::new(&mut self.inner).poll_flush(cx);
        }
        self.phase = Phase::Body;
        self.deadline = None;
        log::debug!("closing a client connection: {error}");
        io::Error::new(kind, error)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    TimedOut,
    TooLarge,
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for LimitedStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if matches!(this.phase, Phase::Body) {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                if read.is_empty() {
                    if this.header_started() {
                        // The client closed its connection in the middle of a header.
                        this.count(ClientError::Aborted);
                    }
                    return Poll::Ready(Ok(()));
                }
                match this.observe(read) {
                    Ok(()) => Poll::Ready(Ok(())),
                    Err(refusal) => Poll::Ready(Err(this.refuse(cx, refusal))),
                }
            }
            Poll::Pending if this.deadline_passed(cx) => {
                if this.header_started() {
                    Poll::Ready(Err(this.refuse(cx, Refusal::TimedOut)))
                } else {
                    // A connection that never sent a byte is closed quietly, as if the
                    // client had closed it.
                    this.count(ClientError::HeaderTimeout);
                    this.phase = Phase::Body;
                    this.deadline = None;
                    Poll::Ready(Ok(()))
                }
            }
            Poll::Ready(Err(e)) => {
                if this.header_started() {
                    this.count(ClientError::Aborted);
                }
                Poll::Ready(Err(e))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for LimitedStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for LimitedStream<Stream> {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for LimitedStream<Stream> {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for LimitedStream<Stream> {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<pingora::protocols::ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for LimitedStream<Stream> {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
}

impl GetProxyDigest for LimitedStream<Stream> {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for LimitedStream<Stream> {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for LimitedStream<Stream> {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

/// A header scan over pieces, as one result: shared by the unit tests and the fuzz target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanResult {
    /// The header ended `at` bytes into the whole input.
    Complete { at: usize },
    /// Refused for its size.
    TooLarge,
    /// Neither, by the end of the input.
    Incomplete,
}

/// Feeds `pieces` to one [`HeaderScan`] until it completes or refuses.
pub fn scan_pieces(pieces: &[&[u8]], max_bytes: usize) -> ScanResult {
    let mut scan = HeaderScan::default();
    let mut before = 0;
    for piece in pieces {
        match scan.feed(piece, max_bytes) {
            Scanned::Complete { end } => return ScanResult::Complete { at: before + end },
            Scanned::TooLarge => return ScanResult::TooLarge,
            Scanned::Incomplete => before += piece.len(),
        }
    }
    ScanResult::Incomplete
}

/// What [`scan_pieces`] must give for `data` however it is split, by a direct reading of
/// the rule: after the first byte that is neither `\r` nor `\n` (the request line's
/// start), the first line feed that follows another with only `\r` between them.
pub fn reference_scan(data: &[u8], max_bytes: usize) -> ScanResult {
    let start = data
        .iter()
        .position(|b| !matches!(b, b'\r' | b'\n'))
        .unwrap_or(data.len());
    let mut last_lf: Option<usize> = None;
    let mut end = None;
    for (i, &b) in data.iter().enumerate().skip(start) {
        if b == b'\n' {
            if last_lf.is_some_and(|j| data[j + 1..i].iter().all(|&c| c == b'\r')) {
                end = Some(i + 1);
                break;
            }
            last_lf = Some(i);
        }
    }
    match end {
        Some(at) if at <= max_bytes => ScanResult::Complete { at },
        None if data.len() <= max_bytes => ScanResult::Incomplete,
        _ => ScanResult::TooLarge,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    fn limits(timeout_ms: u64, max_bytes: usize) -> HeaderLimits {
        HeaderLimits {
            timeout: Duration::from_millis(timeout_ms),
            max_bytes,
        }
    }

    /// A connected pair: the client end, and the gateway end behind the limits.
    fn pair(l: HeaderLimits) -> (DuplexStream, LimitedStream<DuplexStream>) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        (client, LimitedStream::new(server, l))
    }

    async fn read_some(s: &mut LimitedStream<DuplexStream>) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; 4096];
        let n = s.read(&mut buf).await?;
        buf.truncate(n);
        Ok(buf)
    }

    #[tokio::test]
    async fn a_complete_header_then_the_body_pass_through() {
        let (mut client, mut server) = pair(limits(10_000, 64));
        client
            .write_all(b"POST / HTTP/1.1\r\nhost: a\r\n\r\nbody")
            .await
            .ok();
        let got = read_some(&mut server).await.ok();
        assert_eq!(
            got.as_deref(),
            Some(&b"POST / HTTP/1.1\r\nhost: a\r\n\r\nbody"[..])
        );
        assert!(matches!(server.phase, Phase::Body));
        // The body is not held to the header's size limit.
        client.write_all(&[b'x'; 500]).await.ok();
        assert_eq!(
            read_some(&mut server).await.ok().map(|b| b.len()),
            Some(500)
        );
    }

    #[tokio::test]
    async fn a_header_over_the_size_limit_is_answered_431() {
        let (mut client, mut server) = pair(limits(10_000, 32));
        client
            .write_all(b"GET / HTTP/1.1\r\nx-long: aaaaaaaaaaaaaaaaaaaaaa\r\n\r\n")
            .await
            .ok();
        let err = read_some(&mut server).await.err();
        assert_eq!(err.map(|e| e.kind()), Some(io::ErrorKind::InvalidData));
        let mut answer = String::new();
        drop(server);
        client.read_to_string(&mut answer).await.ok();
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
        assert!(
            answer.ends_with("{\"error\":\"header_too_large\"}\n"),
            "{answer}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_header_trickling_past_the_timeout_is_answered_408() {
        let (mut client, mut server) = pair(limits(1_000, 64 * 1024));
        client.write_all(b"GET / HT").await.ok();
        assert!(read_some(&mut server).await.is_ok());
        // Nothing more arrives: the pending read fails when the deadline passes.
        let err = read_some(&mut server).await.err();
        assert_eq!(err.map(|e| e.kind()), Some(io::ErrorKind::TimedOut));
        let mut answer = String::new();
        drop(server);
        client.read_to_string(&mut answer).await.ok();
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_never_speaks_is_closed_quietly() {
        let (mut client, mut server) = pair(limits(1_000, 64 * 1024));
        let got = read_some(&mut server).await.ok();
        assert_eq!(
            got.as_deref(),
            Some(&b""[..]),
            "end of stream at the deadline"
        );
        drop(server);
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.ok();
        assert!(answer.is_empty(), "nothing written: {answer:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_arriving_after_the_deadline_do_not_extend_it() {
        let (mut client, mut server) = pair(limits(1_000, 64 * 1024));
        tokio::time::advance(Duration::from_millis(1_500)).await;
        client.write_all(b"G").await.ok();
        let err = read_some(&mut server).await.err();
        assert_eq!(err.map(|e| e.kind()), Some(io::ErrorKind::TimedOut));
    }

    #[tokio::test(start_paused = true)]
    async fn a_kept_alive_connection_times_each_header_from_its_first_byte() {
        let (mut client, mut server) = pair(limits(1_000, 64 * 1024));
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.ok();
        assert!(read_some(&mut server).await.is_ok());
        server.next_request();
        // Idle longer than the header timeout: not the header's time yet.
        tokio::time::advance(Duration::from_secs(5)).await;
        client.write_all(b"GET /next HTTP/1.1\n\n").await.ok();
        let got = read_some(&mut server).await.ok();
        assert_eq!(got.as_deref(), Some(&b"GET /next HTTP/1.1\n\n"[..]));
        assert!(matches!(server.phase, Phase::Body));
    }

    #[test]
    fn header_ends_and_sizes_match_the_reference_over_random_splits() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            let len = rng.usize(0..64);
            let data: Vec<u8> = (0..len)
                .map(|_| [b'a', b'\r', b'\n', b':'][rng.usize(0..4)])
                .collect();
            let max_bytes = rng.usize(1..64);
            let mut pieces = Vec::new();
            let mut at = 0;
            while at < data.len() {
                let n = rng.usize(1..=data.len() - at);
                pieces.push(&data[at..at + n]);
                at += n;
            }
            let got = scan_pieces(&pieces, max_bytes);
            assert_eq!(
                got,
                reference_scan(&data, max_bytes),
                "{data:?} max {max_bytes}"
            );
        }
    }

    #[test]
    fn an_oversized_header_is_refused_and_a_bare_lf_header_ends() {
        assert_eq!(
            scan_pieces(&[b"GET / HTTP/1.1\r\nx: 1234567890"], 20),
            ScanResult::TooLarge
        );
        assert_eq!(
            scan_pieces(&[b"GET / HTTP/1.1\n\nbody"], 64),
            ScanResult::Complete { at: 16 }
        );
        assert_eq!(
            scan_pieces(&[b"GET / HTTP/1.1\r\nx: 1\r\n", b"\r", b"\nbody"], 64),
            ScanResult::Complete { at: 24 }
        );
    }

    #[test]
    fn empty_lines_before_the_request_line_count_but_do_not_end_the_header() {
        for lead in [&b"\r\n\r\n"[..], b"\n\n", b"\r\n", b"\n\r\n\r\r\n"] {
            let mut data = lead.to_vec();
            data.extend_from_slice(b"GET / HTTP/1.1\r\nhost: a\r\n");
            assert_eq!(
                scan_pieces(&[&data], 1024),
                ScanResult::Incomplete,
                "{lead:?}"
            );
            assert_eq!(reference_scan(&data, 1024), ScanResult::Incomplete);
            data.extend_from_slice(b"\r\nbody");
            let end = data.len() - 4;
            assert_eq!(
                scan_pieces(&[&data], 1024),
                ScanResult::Complete { at: end }
            );
            assert_eq!(
                reference_scan(&data, 1024),
                ScanResult::Complete { at: end }
            );
            // The leading bytes count toward the size limit.
            assert_eq!(scan_pieces(&[&data], end - 1), ScanResult::TooLarge);
        }
        // Only empty lines: never complete, and bounded by the size limit.
        let blank = b"\r\n".repeat(100);
        assert_eq!(scan_pieces(&[&blank], 1024), ScanResult::Incomplete);
        assert_eq!(scan_pieces(&[&blank], 100), ScanResult::TooLarge);
        // Split across reads.
        assert_eq!(
            scan_pieces(&[b"\r\n", b"\r\nGET / HTTP/1.1\r\n", b"\r\n"], 1024),
            ScanResult::Complete { at: 22 }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn leading_empty_lines_then_a_trickled_header_are_cut_off_at_the_deadline() {
        let (mut client, mut server) = pair(limits(1_000, 64 * 1024));
        client.write_all(b"\r\n\r\n").await.ok();
        assert!(read_some(&mut server).await.is_ok());
        assert!(matches!(server.phase, Phase::Header { .. }));
        client.write_all(b"GET / HTTP/1.1\r\n").await.ok();
        assert!(read_some(&mut server).await.is_ok());
        let err = read_some(&mut server).await.err();
        assert_eq!(err.map(|e| e.kind()), Some(io::ErrorKind::TimedOut));
    }

    #[tokio::test]
    async fn the_end_of_a_header_split_across_reads_is_found() {
        let (mut client, mut server) = pair(limits(10_000, 64));
        client.write_all(b"GET / HTTP/1.1\r\n\r").await.ok();
        assert!(read_some(&mut server).await.is_ok());
        assert!(matches!(server.phase, Phase::Header { .. }));
        client.write_all(b"\n").await.ok();
        assert!(read_some(&mut server).await.is_ok());
        assert!(matches!(server.phase, Phase::Body));
    }
}
