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
//! - a connection open for ten idle timeouts is closed when it is next idle, however often requests come;
//! - at most `max_per_client` connections from one address (an IPv6 /64 is one; by default a 32nd of `max`,
//!   at least 16; trusted proxies exempt): over it, a new connection is closed at accept, before any byte is
//!   read;
//! - at most `max` connections at once (by default the open-file limit minus 256 descriptors kept for
//!   providers, stores, reloads and logs): when all are taken, a new connection from an address holding
//!   fewer makes room by shedding the connection idle longest of the address holding the most
//!   (`tollgate_connections_shed_total`); only when none can be shed is it closed at accept;
//! - after a storm of connections has gone, the allocator's free memory is handed back to the system;
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

/// The per-address cap in force: `limits.max_per_client`, or a 32nd of `max` (at least 16, at most `max`):
/// room for at least 32 addresses (an IPv6 /64 counts as one) before the oldest idle connections are shed.
pub fn max_per_client(limits: &ConnLimits, max: usize) -> usize {
    match limits.max_per_client {
        0 => (max / 32).max(16).min(max).max(1),
        n => n,
    }
}

/// A connection open longer than this many idle timeouts is closed when it is next idle, however often a
/// request comes: a trickle of requests cannot hold a slot for ever.
const MAX_AGE_IDLE_TIMEOUTS: u32 = 10;

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

/// Open connections, in all and per client address (an IPv6 /64 is one), and each one's activity, so that
/// under pressure the oldest idle connection of the address holding the most can be shed.
struct Tally {
    open: AtomicUsize,
    per_client: Mutex<HashMap<IpAddr, usize>>,
    conns: Mutex<HashMap<u64, Open>>,
    next_id: AtomicU64,
    /// The most connections open since memory was last handed back (see `Admitted::drop`).
    peak: AtomicUsize,
}

/// What the shedding needs of an open connection.
struct Open {
    sender: IpAddr,
    activity: Arc<Activity>,
    shed: Arc<tokio::sync::Notify>,
    /// Set when it is shed: it is counted out at once (its slot goes to the newcomer), not when it closes.
    counted_out: Arc<AtomicBool>,
}

/// One admitted connection: counted until dropped.
struct Admitted {
    tally: Arc<Tally>,
    ip: Option<IpAddr>,
    label: &'static str,
    id: u64,
    activity: Arc<Activity>,
    /// Notified when the connection is shed to make room.
    shed: Arc<tokio::sync::Notify>,
    counted_out: Arc<AtomicBool>,
}

impl Tally {
    /// Count a connection out: of the total and of its address.
    fn count_out(&self, ip: Option<IpAddr>) -> usize {
        if let Some(ip) = ip {
            if let Ok(mut m) = self.per_client.lock() {
                if let Some(n) = m.get_mut(&ip) {
                    *n -= 1;
                    if *n == 0 {
                        m.remove(&ip);
                    }
                }
            }
        }
        self.open.fetch_sub(1, Ordering::Relaxed).saturating_sub(1)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Ok(mut c) = self.tally.conns.lock() {
            c.remove(&self.id);
        }
        metrics::gauge!(telemetry::CONNECTIONS_OPEN, "listener" => self.label).decrement(1.0);
        if self.counted_out.swap(true, Ordering::AcqRel) {
            return; // shed: counted out already
        }
        let left = self.tally.count_out(self.ip);
        // After a storm, each time the open connections have halved (from at least 64), hand freed memory
        // back to the system: the allocator otherwise keeps the peak's pages for ever.
        let peak = self.tally.peak.load(Ordering::Relaxed);
        if peak >= 64
            && left <= peak / 2
            && self.tally.peak.compare_exchange(peak, left, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            trim_memory();
        }
    }
}

/// Give the allocator's free pages back to the system (glibc keeps them otherwise).
fn trim_memory() {
    tokio::task::spawn_blocking(|| {
        crate::support::memory::give_back();
        tracing::debug!("freed memory handed back to the system after a storm of connections");
    });
}

impl Tally {
    fn new() -> Tally {
        Tally {
            open: AtomicUsize::new(0),
            per_client: Mutex::new(HashMap::new()),
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    /// All slots are taken: close the connection that has waited longest for a request among the idle
    /// ones of the address holding the most connections, if that address holds more than `newcomer`'s would
    /// after admission. Whether one was shed.
    fn shed_one(&self, newcomer: IpAddr) -> bool {
        let counts = match self.per_client.lock() {
            Ok(m) => m.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let mine = counts.get(&newcomer).copied().unwrap_or(0);
        let Ok(conns) = self.conns.lock() else { return false };
        let victim = conns
            .values()
            .filter(|c| !c.counted_out.load(Ordering::Acquire))
            .filter(|c| c.activity.in_flight.load(Ordering::Relaxed) == 0)
            .filter(|c| counts.get(&c.sender).copied().unwrap_or(0) > mine + 1)
            .max_by_key(|c| {
                let idle_since = c.activity.last_request_ms.load(Ordering::Relaxed);
                (counts.get(&c.sender).copied().unwrap_or(0), std::cmp::Reverse(idle_since))
            });
        match victim {
            Some(v) if !v.counted_out.swap(true, Ordering::AcqRel) => {
                // Its slot is the newcomer's now; it closes on its own task a moment later.
                let sender = v.sender;
                let shed = v.shed.clone();
                drop(conns);
                self.count_out(Some(sender));
                shed.notify_one();
                true
            }
            Some(_) => false,
            None => false,
        }
    }

    /// Admit a connection from `peer`, or say which cap it is over.
    fn admit(
        self: &Arc<Tally>,
        peer: SocketAddr,
        guard: &Guard,
        (max, per_client): (usize, usize),
    ) -> Result<Admitted, &'static str> {
        let peer_ip = canonical(peer.ip());
        let counted = !trusted(peer_ip, &guard.exempt);
        let ip = crate::support::net::sender(peer_ip);
        if self.open.fetch_add(1, Ordering::Relaxed) >= max {
            // Full: the connection idle longest of whoever holds the most makes room (it is counted out at
            // once; its descriptor is free a moment later, within the descriptors kept in reserve).
            if !counted || !self.shed_one(ip) {
                self.open.fetch_sub(1, Ordering::Relaxed);
                return Err("total");
            }
            metrics::counter!(telemetry::CONNECTIONS_SHED, "listener" => guard.label).increment(1);
        }
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
        self.peak.fetch_max(self.open.load(Ordering::Relaxed), Ordering::Relaxed);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity::new());
        let shed = Arc::new(tokio::sync::Notify::new());
        let counted_out = Arc::new(AtomicBool::new(false));
        if counted {
            if let Ok(mut c) = self.conns.lock() {
                let open = Open {
                    sender: ip,
                    activity: activity.clone(),
                    shed: shed.clone(),
                    counted_out: counted_out.clone(),
                };
                c.insert(id, open);
            }
        }
        let ip = counted.then_some(ip);
        Ok(Admitted { tally: self.clone(), ip, label: guard.label, id, activity, shed, counted_out })
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
    let tally = Arc::new(Tally::new());
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
            let (activity, shed) = (admitted.activity.clone(), admitted.shed.clone());
            let _admitted = admitted;
            match tls {
                None => connection(stream, remote, routes, &guard, stop_rx, activity, shed).await,
                Some(tls) => {
                    let handshake = tls.acceptor().accept(stream);
                    match tokio::time::timeout(guard.limits.header_timeout, handshake).await {
                        Ok(Ok(stream)) => connection(stream, remote, routes, &guard, stop_rx, activity, shed).await,
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
    fn new() -> Activity {
        Activity {
            first_byte: AtomicBool::new(false),
            started_requests: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            last_request_ms: AtomicU64::new(0),
            accepted: Instant::now(),
        }
    }

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
        let max_age = accepted + limits.idle_timeout * MAX_AGE_IDLE_TIMEOUTS;
        Some(if last + limits.idle_timeout < max_age {
            (last + limits.idle_timeout, "idle")
        } else {
            (max_age.max(last), "max_age")
        })
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
    activity: Arc<Activity>,
    shed: Arc<tokio::sync::Notify>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = &guard.limits;
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
            () = shed.notified() => {
                tracing::debug!(%remote, "connection shed to make room for another address");
                return;
            }
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
