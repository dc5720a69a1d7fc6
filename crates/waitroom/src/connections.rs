//! A bound on open client connections.
//!
//! HTTP/1.1 carries one request at a time per connection, so bounding connections bounds the
//! requests in flight too, at the cost of one semaphore permit per connection rather than per
//! request. When every permit is taken, `accept` waits: new connections queue in the kernel's
//! listen backlog (`server::LISTEN_BACKLOG`) until one closes. Raise the process's open-files
//! limit (`ulimit -n`) above `CONNECTIONS_MAX` for a large on-sale.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use crate::limits::CONNECTIONS_MAX;

/// A listener that holds a permit for every connection it hands out.
pub struct BoundedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
}

impl BoundedListener {
    pub fn new(inner: TcpListener, connections_max: usize) -> Self {
        Self {
            inner,
            permits: Arc::new(Semaphore::new(connections_max)),
        }
    }
}

impl Listener for BoundedListener {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Connection, SocketAddr) {
        // The semaphore is never closed, so acquiring only waits.
        let permit = loop {
            if let Ok(permit) = self.permits.clone().acquire_owned().await {
                break permit;
            }
        };
        loop {
            match self.inner.accept().await {
                Ok((stream, address)) => {
                    // Answers go out at once rather than waiting to be coalesced (Nagle).
                    let _ = stream.set_nodelay(true);
                    return (
                        Connection {
                            stream,
                            _permit: permit,
                        },
                        address,
                    );
                }
                Err(e) => {
                    // Too many open files and the like: wait a moment rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// The client's address, as handlers see it (`ConnectInfo<PeerAddr>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

impl Connected<IncomingStream<'_, BoundedListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, BoundedListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

/// A client connection; its permit returns when it closes.
pub struct Connection {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_past_the_bound_wait_for_one_to_close() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut bounded = BoundedListener::new(listener, 1);
        let _first_client = TcpStream::connect(address).await.unwrap();
        let (first, _) = bounded.accept().await;
        let _second_client = TcpStream::connect(address).await.unwrap();
        let mut accepting = Box::pin(bounded.accept());
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(100), &mut accepting).await;
        assert!(
            waited.is_err(),
            "a second connection was accepted past the bound"
        );
        drop(first);
        let (second, peer) = tokio::time::timeout(std::time::Duration::from_secs(5), accepting)
            .await
            .unwrap();
        assert_eq!(peer.ip(), address.ip());
        drop(second);
    }
}
