//! Serving both listeners: an HTTP/1.1 accept loop (with upgrades) that bounds what an
//! unfinished connection may hold — a deadline for the first request's head, a header read
//! timeout for each later one (which also bounds an idle keep-alive connection), and a budget
//! of descriptors per listener.
//!
//! `axum::serve` leaves hyper's header read timeout off, so a socket that connects and never
//! sends a request would be held forever, and it accepts until the process runs out of
//! descriptors, which starves the other listener and the store. Here every accepted socket
//! holds a slot of its listener's budget until it closes (after an upgrade, until the
//! WebSocket ends); with no slot free the loop waits for one, and the clients wait in the
//! kernel's backlog.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tower::Service;

/// What one connection may hold before it is a WebSocket or a finished request.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// The listener's name in logs and metrics.
    pub name: &'static str,
    /// Time to send the first request's head, from connecting.
    pub first_request_timeout: Duration,
    /// Time to send each request head, from connecting or from the previous response: on a
    /// keep-alive connection, how long it may stay idle.
    pub header_timeout: Duration,
    /// Sockets open at once; `None` for no bound.
    pub max_sockets: Option<usize>,
}

/// Descriptor budgets of the two listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    /// Sockets of the public listener.
    pub public: usize,
    /// Sockets of the admin listener.
    pub admin: usize,
}

impl Budgets {
    /// Splits `available` descriptors: the admin listener gets `admin_max`, but never more
    /// than an eighth; the public listener the rest.
    pub fn split(available: usize, admin_max: usize) -> Self {
        let admin = admin_max.min(available / 8).max(1);
        Self {
            public: available.saturating_sub(admin).max(1),
            admin,
        }
    }
}

/// Descriptors this listener leaves to everything else: a tenth of the limit, 8 to 128.
const RESERVE_MAX: usize = 128;

/// Sockets the listeners may hold at once, together: the process's descriptor limit less those
/// already open and a reserve (the store, logs). `None` where the limit cannot be read (no
/// `/proc`). [`Budgets::split`] shares it between the listeners.
pub fn descriptor_budget() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let soft: usize = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    let open = std::fs::read_dir("/proc/self/fd").ok()?.count();
    let reserve = (soft / 10).clamp(8, RESERVE_MAX);
    Some(soft.saturating_sub(open + reserve).max(1))
}

/// Serves `router` until `stop` turns true, then lets open requests finish (upgraded sockets
/// are the hub's to close). Accept errors other than an aborted handshake (EMFILE, ENFILE,
/// ENOBUFS) pause the loop for a second, as in `axum::serve`, so it never spins.
pub async fn serve_http1(
    listener: TcpListener,
    router: axum::Router,
    limits: ServeLimits,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()> {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let slots = limits.max_sockets.map(|n| Arc::new(Semaphore::new(n)));
    // Every connection task holds a receiver; `closed()` says they have all finished.
    let (open_tx, open_rx) = watch::channel(());
    let mut saturated = false;
    loop {
        let slot = match &slots {
            None => None,
            Some(slots) => match slots.clone().try_acquire_owned() {
                Ok(slot) => {
                    saturated = false;
                    Some(slot)
                }
                Err(_) => {
                    metrics::counter!("gateway_accept_budget_waits", "listener" => limits.name)
                        .increment(1);
                    if !saturated {
                        saturated = true;
                        tracing::warn!(
                            listener = limits.name,
                            "listener at its descriptor budget; new connections wait"
                        );
                    }
                    tokio::select! {
                        slot = slots.clone().acquire_owned() => {
                            Some(slot.expect("the semaphore is never closed"))
                        }
                        () = stopped(&mut stop) => break,
                    }
                }
            },
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    metrics::counter!("gateway_accept_errors").increment(1);
                    tracing::error!(error = %e, "accept failed; pausing the listener for 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        // Set once a request head has arrived: the first-request deadline is then met.
        let served = Arc::new(AtomicBool::new(false));
        let service = hyper::service::service_fn({
            let served = served.clone();
            move |mut req: axum::http::Request<hyper::body::Incoming>| {
                served.store(true, Ordering::Relaxed);
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo::<SocketAddr>(peer));
                router.clone().call(req)
            }
        });
        let io = TokioIo::new(Slotted {
            stream,
            _slot: slot,
        });
        let conn = builder.serve_connection(io, service).with_upgrades();
        let mut stop = stop.clone();
        let open = open_rx.clone();
        // hyper's timeout already covers the first head when it is no longer.
        let mut first_pending = limits.first_request_timeout < limits.header_timeout;
        let first_deadline = limits.first_request_timeout;
        tokio::spawn(async move {
            tokio::pin!(conn);
            let first = tokio::time::sleep(first_deadline);
            tokio::pin!(first);
            loop {
                tokio::select! {
                    _ = conn.as_mut() => break,
                    () = &mut first, if first_pending => {
                        if !served.load(Ordering::Relaxed) {
                            // Dropping the connection closes the socket.
                            metrics::counter!("http_first_request_timeouts").increment(1);
                            break;
                        }
                        first_pending = false;
                    }
                    () = stopped(&mut stop) => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                        break;
                    }
                }
            }
            drop(open);
        });
    }
    drop(listener);
    drop(open_rx);
    open_tx.closed().await;
    Ok(())
}

/// Resolves once the shutdown flag is set (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Errors that concern one incoming connection, not the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// An accepted socket and its slot of the budget, released when the socket is dropped.
pub struct Slotted {
    stream: TcpStream,
    _slot: Option<OwnedSemaphorePermit>,
}

impl AsyncRead for Slotted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Slotted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::Budgets;

    #[test]
    fn the_admin_listener_gets_its_share_never_more_than_an_eighth() {
        assert_eq!(
            Budgets::split(19_800, 256),
            Budgets {
                public: 19_544,
                admin: 256
            }
        );
        assert_eq!(
            Budgets::split(104, 256),
            Budgets {
                public: 91,
                admin: 13
            }
        );
        assert_eq!(
            Budgets::split(3, 256),
            Budgets {
                public: 2,
                admin: 1
            }
        );
    }
}
