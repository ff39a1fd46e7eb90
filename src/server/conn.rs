//! The one accept loop: the binary's listeners, the tests' and the benchmarks' servers all run through
//! [`serve`], so what the suite proves about hostile clients, TLS and shutdown is what ships.
//!
//! Nothing an unauthenticated client does on a connection holds it for long (`server.connections`):
//! - no byte within `first_byte_timeout`: closed (a silent TCP connection, or one that stops after the TLS
//!   handshake or the HTTP/2 preface);
//! - the first request's headers not in within `header_timeout` of the accept, and each later request's
//!   within `header_timeout` (hyper's timer): closed. A TLS handshake has the same bound;
//! - a request body not in within `body_timeout` of its headers: the request fails;
//! - no request in flight for `idle_timeout` (HTTP/2 kept alive by pings; an HTTP/1.1 keep-alive
//!   connection is also closed when the next request's headers do not come within `header_timeout`): closed;
//! - at most `max` connections at once (by default the open-file limit minus 256 descriptors kept for
//!   providers, stores, reloads and logs) and `max_per_client` from one address (by default a quarter of
//!   `max`; trusted proxies exempt): over either, a new connection is closed at accept, before any byte is
//!   read;
//! - HTTP/2: at most `http2_max_streams` streams at once, and a bound on reset streams.
//!
//! Shutdown: when `shutdown` resolves the listener closes, every connection finishes the request it is
//! serving and closes, and `serve` returns once all are gone or the drain time is over.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::Router;
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tower::ServiceExt as _;

use super::tls::Tls;
use crate::config::ops::{ConnLimits, DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT};
use crate::http::client_ip::{canonical, trusted};
use crate::telemetry;

/// How long a client may take to send a request's headers, by default.
pub const HEADER_READ_TIMEOUT: Duration = DEFAULT_HEADER_TIMEOUT;
/// How long a client may take to send a request body once its headers are in, by default.
pub const BODY_READ_TIMEOUT: Duration = DEFAULT_BODY_TIMEOUT;
/// The largest request head (request line and headers) read: beyond it, 431. Above hyper's URI limit
/// (64 KiB), so a long URI is told 414, and far below hyper's default buffer (408 KiB per connection).
const MAX_HEAD_BYTES: usize = 128 * 1024;
/// Descriptors kept free under the open-file limit for everything but client connections.
const RESERVED_FDS: usize = 256;

/// The router for the next request: a fixed one, or the one in force after a live reload.
pub type Routes = Arc<dyn Fn() -> Router + Send + Sync>;

/// How a listener treats its connections.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    pub limits: ConnLimits,
    /// Peers exempt from `max_per_client`: the trusted proxies, whose one address carries many clients.
    pub exempt: Vec<IpNet>,
    /// The `listener` label of the connection metrics (`main` or `metrics`).
    pub label: &'static str,
}

/// The connection cap in force: `limits.max`, or the open-file limit minus [`RESERVED_FDS`].
pub fn max_connections(limits: &ConnLimits) -> usize {
    if limits.max != 0 {
        return limits.max;
    }
    open_file_limit().map_or(4096, |n| n.saturating_sub(RESERVED_FDS).max(64))
}

/// The per-address cap in force: `limits.max_per_client`, or a quarter of `max`.
pub fn max_per_client(limits: &ConnLimits, max: usize) -> usize {
    match limits.max_per_client {
        0 => (max / 4).max(1),
        n => n,
    }
}

#[cfg(unix)]
fn open_file_limit() -> Option<usize> {
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own and reads nothing else.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
    (rc == 0 && rl.rlim_cur != libc::RLIM_INFINITY).then(|| usize::try_from(rl.rlim_cur).unwrap_or(usize::MAX))
}

#[cfg(not(unix))]
fn open_file_limit() -> Option<usize> {
    None
}

/// Open connections, in all and per client address.
struct Tally {
    open: AtomicUsize,
    per_client: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection: counted until dropped.
struct Admitted {
    tally: Arc<Tally>,
    ip: Option<IpAddr>,
    label: &'static str,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.tally.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = self.ip {
            if let Ok(mut m) = self.tally.per_client.lock() {
                if let Some(n) = m.get_mut(&ip) {
                    *n -= 1;
                    if *n == 0 {
                        m.remove(&ip);
                    }
                }
            }
        }
        metrics::gauge!(telemetry::CONNECTIONS_OPEN, "listener" => self.label).decrement(1.0);
    }
}

impl Tally {
    /// Admit a connection from `peer`, or say which cap it is over.
    fn admit(
        self: &Arc<Tally>,
        peer: SocketAddr,
        guard: &Guard,
        (max, per_client): (usize, usize),
    ) -> Result<Admitted, &'static str> {
        if self.open.fetch_add(1, Ordering::Relaxed) >= max {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return Err("total");
        }
        let ip = canonical(peer.ip());
        let counted = !trusted(ip, &guard.exempt);
        if counted {
            let mut m = match self.per_client.lock() {
                Ok(m) => m,
                Err(p) => p.into_inner(),
            };
            let n = m.entry(ip).or_insert(0);
            if *n >= per_client {
                drop(m);
                self.open.fetch_sub(1, Ordering::Relaxed);
                return Err("per_client");
            }
            *n += 1;
        }
        metrics::gauge!(telemetry::CONNECTIONS_OPEN, "listener" => guard.label).increment(1.0);
        Ok(Admitted { tally: self.clone(), ip: counted.then_some(ip), label: guard.label })
    }
}

/// Serve `routes` on `listener` (over TLS when `tls` is set) until `shutdown` resolves; then let requests
/// in flight finish, for at most `drain`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    routes: Routes,
    tls: Option<Tls>,
    guard: Guard,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> std::io::Result<()> {
    let guard = Arc::new(guard);
    let max = max_connections(&guard.limits);
    let caps = (max, max_per_client(&guard.limits, max));
    let tally = Arc::new(Tally { open: AtomicUsize::new(0), per_client: Mutex::new(HashMap::new()) });
    // Every connection task holds a receiver; `closed()` on the sender resolves when all are gone.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: keep the listener, retry shortly.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let admitted = match tally.admit(remote, &guard, caps) {
            Ok(a) => a,
            Err(cap) => {
                // Closed at once: a client over a cap gets no byte and holds no descriptor.
                metrics::counter!(telemetry::CONNECTIONS_REFUSED, "listener" => guard.label, "reason" => cap)
                    .increment(1);
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (routes, tls, guard, stop_rx) = (routes.clone(), tls.clone(), guard.clone(), stop_rx.clone());
        tokio::spawn(async move {
            let _admitted = admitted;
            match tls {
                None => connection(stream, remote, routes, &guard, stop_rx).await,
                Some(tls) => {
                    let handshake = tls.acceptor().accept(stream);
                    match tokio::time::timeout(guard.limits.header_timeout, handshake).await {
                        Ok(Ok(stream)) => connection(stream, remote, routes, &guard, stop_rx).await,
                        Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                        Err(_) => timed_out(&guard, "tls_handshake"),
                    }
                }
            }
        });
    }
    drop(listener);
    drop(stop_rx);
    let _ = stop_tx.send(());
    if tokio::time::timeout(drain, stop_tx.closed()).await.is_err() {
        tracing::warn!(connections = stop_tx.receiver_count(), "drain time over: closing the connections still open");
    }
    Ok(())
}

fn timed_out(guard: &Guard, phase: &'static str) {
    metrics::counter!(telemetry::CONNECTIONS_TIMED_OUT, "listener" => guard.label, "phase" => phase).increment(1);
}

/// What the watchdog of one connection knows: whether a byte came, requests in flight, the last request.
struct Activity {
    first_byte: AtomicBool,
    started_requests: AtomicUsize,
    in_flight: AtomicUsize,
    /// When a request last started or ended, in milliseconds since `accepted` (an atomic: this is touched
    /// twice per request).
    last_request_ms: AtomicU64,
    accepted: Instant,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.accepted.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_request_ms.store(ms, Ordering::Relaxed);
    }

    /// When the connection must close unless something happens first, and why; None while a request runs.
    fn deadline(&self, limits: &ConnLimits) -> Option<(Instant, &'static str)> {
        let accepted = self.accepted;
        if !self.first_byte.load(Ordering::Relaxed) {
            return Some((accepted + limits.first_byte_timeout, "first_byte"));
        }
        if self.started_requests.load(Ordering::Relaxed) == 0 {
            return Some((accepted + limits.header_timeout, "first_request"));
        }
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let last = accepted + Duration::from_millis(self.last_request_ms.load(Ordering::Relaxed));
        Some((last + limits.idle_timeout, "idle"))
    }
}

/// A request in flight, for the idle rule; ends when its response future ends (or is dropped).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The connection's byte stream, noting the first byte read, and giving hyper's own answers to requests it
/// could not parse (414, 431: no handler ever sees them) the JSON error body (`http::error::parse_refusal`).
struct Watched<I> {
    inner: I,
    activity: Arc<Activity>,
    /// An answer written in place of hyper's, and how much of it is written.
    replacing: Option<(Vec<u8>, usize)>,
}

impl<I: AsyncWrite + Unpin> Watched<I> {
    /// Write `buf`, or our answer in its place when it is hyper's answer to an unparsable request: `buf` is
    /// reported written once ours is.
    fn write_or_replace(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Option<Poll<std::io::Result<usize>>> {
        if self.replacing.is_none() {
            let status = buf.strip_prefix(b"HTTP/1.1 ").and_then(|r| r.get(..3));
            let status = status.and_then(|s| std::str::from_utf8(s).ok()).and_then(|s| s.parse().ok());
            let ours = status.and_then(crate::http::error::parse_refusal)?;
            self.replacing = Some((ours, 0));
        }
        let (ours, done) = self.replacing.as_mut()?;
        while *done < ours.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &ours[*done..]) {
                Poll::Ready(Ok(0)) => return Some(Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()))),
                Poll::Ready(Ok(n)) => *done += n,
                other => return Some(other),
            }
        }
        Some(Poll::Ready(Ok(buf.len())))
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.first_byte.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        if let Some(replaced) = self.write_or_replace(cx, buf) {
            return replaced;
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        // hyper's answer to an unparsable request is its head alone, in the first slice.
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            if let Some(polled) = self.write_or_replace(cx, first) {
                return polled;
            }
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Serve one connection until the client closes it, a deadline passes, or shutdown asks it to finish.
async fn connection<I>(
    io: I,
    remote: SocketAddr,
    routes: Routes,
    guard: &Guard,
    mut stop_rx: tokio::sync::watch::Receiver<()>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let accepted = Instant::now();
    let limits = &guard.limits;
    let activity = Arc::new(Activity {
        first_byte: AtomicBool::new(false),
        started_requests: AtomicUsize::new(0),
        in_flight: AtomicUsize::new(0),
        last_request_ms: AtomicU64::new(0),
        accepted,
    });
    let body_timeout = limits.body_timeout;
    let seen = activity.clone();
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        seen.started_requests.fetch_add(1, Ordering::Relaxed);
        seen.in_flight.fetch_add(1, Ordering::Relaxed);
        seen.touch();
        let in_flight = InFlight(seen.clone());
        req.extensions_mut().insert(ConnectInfo::<SocketAddr>(remote));
        let req = req.map(|body| Body::new(Deadline::new(body, body_timeout)));
        let router = routes();
        async move {
            let response = router.oneshot(req).await.unwrap_or_else(|never| match never {});
            drop(in_flight);
            Ok::<_, Infallible>(response)
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).max_buf_size(MAX_HEAD_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_streams)
        .max_pending_accept_reset_streams(Some(20))
        .max_local_error_reset_streams(Some(64));
    let io = Watched { inner: io, activity: activity.clone(), replacing: None };
    let mut conn = pin!(builder.serve_connection(TokioIo::new(io), service));
    loop {
        let deadline = activity.deadline(limits);
        // While a request runs, look again a little later (its own deadlines bound it).
        let wake = deadline.map_or(Instant::now() + Duration::from_millis(500), |(at, _)| at);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%remote, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop_rx.changed() => break,
            () = tokio::time::sleep_until(wake) => {
                match activity.deadline(limits) {
                    Some((at, phase)) if at <= Instant::now() => {
                        timed_out(guard, phase);
                        tracing::debug!(%remote, phase, "connection closed: deadline passed");
                        return;
                    }
                    _ => continue,
                }
            }
        }
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// A request body that fails once `timeout` has passed without it being received in full.
struct Deadline {
    inner: Incoming,
    sleep: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
}

impl Deadline {
    fn new(inner: Incoming, timeout: Duration) -> Deadline {
        Deadline { inner, sleep: Box::pin(tokio::time::sleep(timeout)), timeout }
    }
}

impl HttpBody for Deadline {
    type Data = axum::body::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                Poll::Ready(Some(Err(format!("request body not received within {:?}", self.timeout).into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
