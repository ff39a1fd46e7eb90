//! The one accept loop: the binary's listeners, the tests' and the benchmarks' servers all run through
//! [`serve`], so what the suite proves about slow clients, TLS and shutdown is what ships.
//!
//! Deadlines: hyper's header read timeout needs a timer, which `axum::serve` does not give it; without one a
//! client that drips its request headers a byte at a time held its connection (a task and a file
//! descriptor) for as long as it liked (`faults::very_slow_clients_do_not_exhaust_the_server` measured 0 of
//! 1,000 such connections closed after 8 s). Here every connection gets a timer: a TLS handshake and the
//! headers must arrive within [`HEADER_READ_TIMEOUT`], a request body within [`BODY_READ_TIMEOUT`] of its
//! headers. HTTP/1.1 and HTTP/2 (h2c, or h2 by ALPN over TLS) are both served.
//!
//! Shutdown: when `shutdown` resolves the listener closes, every connection finishes the request it is
//! serving and closes, and `serve` returns once all are gone or the drain time is over.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::Router;
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tower::ServiceExt as _;

use super::tls::Tls;

/// How long a client may take to send a request's headers (a slow or silent client is closed after this).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send a request body once its headers are in (token requests are tiny).
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The router for the next request: a fixed one, or the one in force after a live reload.
pub type Routes = Arc<dyn Fn() -> Router + Send + Sync>;

/// Serve `routes` on `listener` (over TLS when `tls` is set) until `shutdown` resolves; then let requests
/// in flight finish, for at most `drain`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    routes: Routes,
    tls: Option<Tls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> std::io::Result<()> {
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
        let _ = stream.set_nodelay(true);
        let (routes, tls, stop_rx) = (routes.clone(), tls.clone(), stop_rx.clone());
        tokio::spawn(async move {
            match tls {
                None => connection(stream, remote, routes, stop_rx).await,
                Some(tls) => match tokio::time::timeout(HEADER_READ_TIMEOUT, tls.acceptor().accept(stream)).await {
                    Ok(Ok(stream)) => connection(stream, remote, routes, stop_rx).await,
                    Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%remote, "TLS handshake not completed in time"),
                },
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

/// Serve one connection until the client closes it, a deadline passes, or shutdown asks it to finish.
async fn connection<I>(io: I, remote: SocketAddr, routes: Routes, mut stop_rx: tokio::sync::watch::Receiver<()>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo::<SocketAddr>(remote));
        let req = req.map(|body| Body::new(Deadline::new(body, BODY_READ_TIMEOUT)));
        let router = routes();
        async move { Ok::<_, Infallible>(router.oneshot(req).await.unwrap_or_else(|never| match never {})) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    let mut conn = pin!(builder.serve_connection(TokioIo::new(io), service));
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(%remote, error = %e, "connection ended with an error");
            }
            return;
        }
        _ = stop_rx.changed() => conn.as_mut().graceful_shutdown(),
    }
    let _ = conn.await;
}

/// A request body that fails once `timeout` has passed without it being received in full.
struct Deadline {
    inner: Incoming,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Deadline {
    fn new(inner: Incoming, timeout: Duration) -> Deadline {
        Deadline { inner, sleep: Box::pin(tokio::time::sleep(timeout)) }
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
                Poll::Ready(Some(Err(
                    format!("request body not received within {} s", BODY_READ_TIMEOUT.as_secs()).into()
                )))
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
