//! A TCP proxy on 127.0.0.1 in front of one upstream address, for tests that cut a node off its
//! broker: the node is given the proxy's address instead of the broker's, and the test switches
//! the proxy between [`Mode`]s while the node runs.
//!
//! - [`Mode::Pass`]: bytes flow both ways as they come.
//! - [`Mode::Drop`]: every open connection is closed at once (both sides), and new ones are
//!   accepted and closed straight away: the broker looks gone.
//! - [`Mode::Hold`]: a black hole. Open connections stop moving bytes (the proxy stops reading,
//!   so the kernel's buffers fill and the peers' writes stall, as behind a partition), and new
//!   connections are accepted but not connected upstream. Nothing is lost: when the mode turns
//!   back to `Pass` what waited flows on, as when a partition heals before TCP gives up.
//! - [`Mode::Delay`]: every chunk read from either side waits this long before it is written to
//!   the other (a slow link; order kept).
//!
//! The proxy runs as tasks on the tokio runtime that starts it; dropping the [`Proxy`] stops them
//! and closes every connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Bytes read from one side before they are written to the other (one chunk).
pub const CHUNK_BYTES: usize = 16 * 1024;

/// What the proxy does with connections; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward as it comes.
    Pass,
    /// Close every connection and refuse new ones.
    Drop,
    /// Accept, but move no byte (a black hole) until the mode changes.
    Hold,
    /// Forward each chunk after this long.
    Delay(Duration),
}

/// Counters of what the proxy did (for a test's report).
#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    refused: AtomicU64,
    bytes: AtomicU64,
}

/// A running proxy; dropping it stops it and closes its connections.
#[derive(Debug)]
pub struct Proxy {
    address: SocketAddr,
    upstream: SocketAddr,
    mode: watch::Sender<Mode>,
    counters: Arc<Counters>,
    acceptor: JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy on a free port of 127.0.0.1 in front of `upstream`, in [`Mode::Pass`].
    ///
    /// # Errors
    /// No port could be bound.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let address = listener.local_addr()?;
        let (mode, _) = watch::channel(Mode::Pass);
        let counters = Arc::new(Counters::default());
        let acceptor = tokio::spawn(accept(listener, upstream, mode.clone(), counters.clone()));
        Ok(Self {
            address,
            upstream,
            mode,
            counters,
            acceptor,
        })
    }

    /// Where clients connect (`127.0.0.1:<port>`).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Where the proxy forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Switches the mode; it applies at once to open connections and to new ones.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }

    /// Connections accepted and forwarded (or held) so far.
    pub fn accepted(&self) -> u64 {
        self.counters.accepted.load(Ordering::Relaxed)
    }

    /// Connections accepted and closed at once because the mode was [`Mode::Drop`].
    pub fn refused(&self) -> u64 {
        self.counters.refused.load(Ordering::Relaxed)
    }

    /// Bytes forwarded so far, both ways.
    pub fn bytes(&self) -> u64 {
        self.counters.bytes.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Connections end too: each watches the mode's channel, which closes with the sender.
        self.acceptor.abort();
    }
}

async fn accept(
    listener: TcpListener,
    upstream: SocketAddr,
    mode: watch::Sender<Mode>,
    counters: Arc<Counters>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of descriptors, say: try again shortly rather than end the proxy.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if *mode.borrow() == Mode::Drop {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            drop(client);
            continue;
        }
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        let (watcher, counters) = (mode.subscribe(), counters.clone());
        tokio::spawn(async move {
            let mut until_dropped = watcher.clone();
            tokio::select! {
                () = connection(client, upstream, watcher, &counters) => {}
                _ = wait_for(&mut until_dropped, |mode| mode == Mode::Drop) => {}
            }
            // Both sockets are dropped here: closed.
        });
    }
}

/// Waits until `ready` holds for the mode, and returns it; returns `Mode::Drop` when the proxy
/// is gone (its sender dropped), which ends the connection.
async fn wait_for(watcher: &mut watch::Receiver<Mode>, ready: impl Fn(Mode) -> bool) -> Mode {
    match watcher.wait_for(|mode| ready(*mode)).await {
        Ok(mode) => *mode,
        Err(_) => Mode::Drop,
    }
}

async fn connection(
    client: TcpStream,
    upstream: SocketAddr,
    mut watcher: watch::Receiver<Mode>,
    counters: &Counters,
) {
    // Held connections are not connected upstream until the hold ends.
    if wait_for(&mut watcher, |mode| mode != Mode::Hold).await == Mode::Drop {
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::join!(
        pump(client_read, server_write, watcher.clone(), counters),
        pump(server_read, client_write, watcher, counters),
    );
}

/// Copies one direction, obeying the mode before every read and every write.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut watcher: watch::Receiver<Mode>,
    counters: &Counters,
) {
    let mut buffer = vec![0_u8; CHUNK_BYTES];
    loop {
        if wait_for(&mut watcher, |mode| mode != Mode::Hold).await == Mode::Drop {
            return;
        }
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            // A hold (or drop) that starts while waiting for bytes applies before they are read.
            _ = watcher.changed() => continue,
        };
        let count = match read {
            Ok(0) | Err(_) => {
                // The other side sees the end too.
                let _ = to.shutdown().await;
                return;
            }
            Ok(count) => count,
        };
        match wait_for(&mut watcher, |mode| mode != Mode::Hold).await {
            Mode::Drop => return,
            Mode::Delay(delay) => tokio::time::sleep(delay).await,
            Mode::Pass | Mode::Hold => {}
        }
        if to.write_all(&buffer[..count]).await.is_err() {
            return;
        }
        counters.bytes.fetch_add(count as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// An echo server on a free port: sends back what it reads.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0_u8; 1024];
                    while let Ok(count) = socket.read(&mut buffer).await {
                        if count == 0 || socket.write_all(&buffer[..count]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        address
    }

    /// Longest a test waits for bytes that must come.
    const ARRIVAL_WAIT: Duration = Duration::from_secs(5);

    /// How long a test watches for bytes that must not come.
    const SILENCE: Duration = Duration::from_millis(300);

    async fn round_trip(socket: &mut TcpStream, text: &[u8]) -> Vec<u8> {
        socket.write_all(text).await.unwrap();
        let mut reply = vec![0_u8; text.len()];
        tokio::time::timeout(ARRIVAL_WAIT, socket.read_exact(&mut reply))
            .await
            .expect("the echo came back")
            .unwrap();
        reply
    }

    /// True when the socket is closed (end of stream or a reset) within [`ARRIVAL_WAIT`].
    async fn closed(socket: &mut TcpStream) -> bool {
        let mut byte = [0_u8; 1];
        matches!(
            tokio::time::timeout(ARRIVAL_WAIT, socket.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    #[tokio::test]
    async fn passes_bytes_both_ways() {
        let proxy = Proxy::start(echo().await).await.unwrap();
        assert_eq!(proxy.mode(), Mode::Pass);
        let mut socket = TcpStream::connect(proxy.address()).await.unwrap();
        assert_eq!(round_trip(&mut socket, b"hello").await, b"hello");
        let big: Vec<u8> = (0..200_000_u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(round_trip(&mut socket, &big).await, big);
        assert_eq!(proxy.accepted(), 1);
        assert_eq!(proxy.bytes(), 2 * (5 + 200_000));
    }

    #[tokio::test]
    async fn drop_closes_open_connections_and_refuses_new_ones_until_pass() {
        let proxy = Proxy::start(echo().await).await.unwrap();
        let mut open = TcpStream::connect(proxy.address()).await.unwrap();
        assert_eq!(round_trip(&mut open, b"before").await, b"before");
        proxy.set(Mode::Drop);
        assert!(closed(&mut open).await, "an open connection is closed");
        let mut new = TcpStream::connect(proxy.address()).await.unwrap();
        let _ = new.write_all(b"anyone?").await;
        assert!(closed(&mut new).await, "a new connection is closed at once");
        assert_eq!(proxy.refused(), 1);
        proxy.set(Mode::Pass);
        let mut again = TcpStream::connect(proxy.address()).await.unwrap();
        assert_eq!(round_trip(&mut again, b"after").await, b"after");
    }

    #[tokio::test]
    async fn hold_moves_nothing_until_pass_and_loses_nothing() {
        let proxy = Proxy::start(echo().await).await.unwrap();
        let mut open = TcpStream::connect(proxy.address()).await.unwrap();
        assert_eq!(round_trip(&mut open, b"before").await, b"before");
        proxy.set(Mode::Hold);
        open.write_all(b"held").await.unwrap();
        let mut new = TcpStream::connect(proxy.address()).await.unwrap();
        new.write_all(b"new one").await.unwrap();
        let mut byte = [0_u8; 1];
        assert!(
            tokio::time::timeout(SILENCE, open.read(&mut byte))
                .await
                .is_err(),
            "nothing comes back through a hold"
        );
        assert!(
            tokio::time::timeout(SILENCE, new.read(&mut byte))
                .await
                .is_err(),
            "nothing comes back on a connection opened during a hold"
        );
        proxy.set(Mode::Pass);
        let mut reply = [0_u8; 4];
        tokio::time::timeout(ARRIVAL_WAIT, open.read_exact(&mut reply))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&reply, b"held");
        let mut reply = [0_u8; 7];
        tokio::time::timeout(ARRIVAL_WAIT, new.read_exact(&mut reply))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&reply, b"new one");
    }

    #[tokio::test]
    async fn delay_adds_latency_to_every_chunk() {
        let proxy = Proxy::start(echo().await).await.unwrap();
        let mut socket = TcpStream::connect(proxy.address()).await.unwrap();
        const DELAY: Duration = Duration::from_millis(150);
        proxy.set(Mode::Delay(DELAY));
        let started = Instant::now();
        assert_eq!(round_trip(&mut socket, b"slow").await, b"slow");
        // Out and back: two chunks, each delayed (a lower bound, whatever the machine's speed).
        assert!(started.elapsed() >= 2 * DELAY, "{:?}", started.elapsed());
        proxy.set(Mode::Pass);
        assert_eq!(round_trip(&mut socket, b"fast").await, b"fast");
    }

    #[tokio::test]
    async fn a_dropped_proxy_closes_its_connections() {
        let proxy = Proxy::start(echo().await).await.unwrap();
        let mut open = TcpStream::connect(proxy.address()).await.unwrap();
        assert_eq!(round_trip(&mut open, b"x").await, b"x");
        drop(proxy);
        assert!(closed(&mut open).await);
    }
}
