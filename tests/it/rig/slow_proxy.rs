//! A TCP proxy that can turn slow or silent on demand, for the fault tests: "the IdP answers, but only after
//! the timeout" and "the IdP accepts connections and never answers" are what a hung upstream looks like,
//! and neither can be asked of a real server.
//!
//! It runs on a thread of its own (its own runtime), so a test can switch modes from synchronous code.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does with the bytes coming back from upstream.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(u8)]
pub enum Mode {
    /// Forward at once.
    Pass = 0,
    /// Hold every chunk for `delay` before forwarding it.
    Slow = 1,
    /// Accept and read, never answer (a hung server or a black-holed route).
    Silent = 2,
}

pub struct SlowProxy {
    pub listener_port: u16,
    mode: Arc<AtomicU8>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SlowProxy {
    /// Listen on `listener` (bound by the caller, so its port can be handed out before the upstream
    /// exists) and forward to `upstream`, delaying by `delay` in `Mode::Slow`.
    pub fn start(listener: std::net::TcpListener, upstream: SocketAddr, delay: Duration) -> SlowProxy {
        let listener_port = listener.local_addr().expect("proxy addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let mode = Arc::new(AtomicU8::new(Mode::Pass as u8));
        let (stop, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let m = mode.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("proxy runtime");
            rt.block_on(async move {
                let listener = TcpListener::from_std(listener).expect("proxy listener");
                loop {
                    tokio::select! {
                        _ = &mut stop_rx => return,
                        accepted = listener.accept() => {
                            let Ok((client, _)) = accepted else { continue };
                            tokio::spawn(pipe(client, upstream, m.clone(), delay));
                        }
                    }
                }
            });
        });
        SlowProxy { listener_port, mode, stop: Some(stop), thread: Some(thread) }
    }

    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }
}

async fn pipe(mut client: TcpStream, upstream: SocketAddr, mode: Arc<AtomicU8>, delay: Duration) {
    let Ok(mut server) = TcpStream::connect(upstream).await else { return };
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    let up = async {
        let _ = tokio::io::copy(&mut cr, &mut sw).await;
        let _ = sw.shutdown().await;
    };
    let down = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            match mode.load(Ordering::SeqCst) {
                1 => tokio::time::sleep(delay).await,
                2 => std::future::pending::<()>().await,
                _ => {}
            }
            if cw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    tokio::join!(up, down);
}

impl Drop for SlowProxy {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
