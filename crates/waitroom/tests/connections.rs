//! Idle and slow clients against a real server on 127.0.0.1 (`waitroom::connections`): a
//! half-sent header, an idle keep-alive connection and a body that never arrives are closed after
//! their timeouts; connections past the per-address cap are closed at once while other addresses
//! are served; past the total cap, new connections wait until one closes.
//!
//! The timeouts here are short (about a second) and every bound on a close is generous: never
//! before the timeout (less 100 ms for the two ends' clocks), at most several seconds after.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::TestServer;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use waitroom::metrics::ReasonLabels;

/// The longest a close may take past its timeout here (a loaded CI machine included).
const LATE_MAX: Duration = Duration::from_secs(8);
/// How much earlier than its timeout a close may be seen (the server's clock starts at `accept`,
/// a moment after the client's `connect` returns).
const EARLY_MAX: Duration = Duration::from_millis(100);

fn address(server: &TestServer) -> SocketAddr {
    server
        .url
        .strip_prefix("http://")
        .expect("http URL")
        .parse()
        .expect("socket address")
}

/// A connection to the server from `source` (any 127.0.0.0/8 address is the loopback on Linux).
async fn connect_from(server: &TestServer, source: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    let source: IpAddr = source.parse().expect("source address");
    socket
        .bind(SocketAddr::new(source, 0))
        .expect("bind the source address");
    socket.connect(address(server)).await.expect("connect")
}

/// Sends `GET path` on `stream` and reads the answer (headers and a `content-length` body);
/// returns its status line, or `None` if the connection was closed before a whole answer.
async fn get(stream: &mut TcpStream, path: &str) -> Option<String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    read_answer(stream).await
}

async fn read_answer(stream: &mut TcpStream) -> Option<String> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    head.lines().next().map(str::to_string)
}

/// Waits (at most `bound`) for the server to close `stream`; returns how long that took from
/// `since`, and the bytes it sent meanwhile. Panics if it stays open.
async fn closed_within(
    stream: &mut (impl AsyncRead + Unpin),
    since: Instant,
    bound: Duration,
) -> (Duration, Vec<u8>) {
    let mut received = Vec::new();
    let mut chunk = [0u8; 1024];
    let read_to_close = async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(bound, read_to_close)
        .await
        .unwrap_or_else(|_| panic!("the connection is still open after {bound:?}"));
    (since.elapsed(), received)
}

fn timed_out(server: &TestServer, reason: &'static str) -> u64 {
    server
        .node
        .metrics
        .connections
        .timed_out_total
        .get_or_create(&ReasonLabels { reason })
        .get()
}

/// Waits (at most 10 s) until the server counts `open` open connections.
async fn wait_open(server: &TestServer, open: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.node.metrics.connections.open.get() != open {
        assert!(
            Instant::now() < deadline,
            "{} open connections, not {open}",
            server.node.metrics.connections.open.get()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_header_is_closed_after_the_header_timeout() {
    let header_timeout = Duration::from_millis(1_000);
    let server = TestServer::start_with(|options| {
        options.header_read_timeout_ms = 1_000;
        options.idle_timeout_ms = 60_000;
    })
    .await;

    // Half a request's head, then a byte every 100 ms that never finishes it (slowloris).
    let slow = TcpStream::connect(address(&server)).await.unwrap();
    let slow_since = Instant::now();
    let (mut slow_reader, mut slow_writer) = slow.into_split();
    slow_writer
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: te")
        .await
        .unwrap();
    let dribble = tokio::spawn(async move {
        while slow_writer.write_all(b"s").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    // A connection that sends nothing at all: its first request's head is due from accept.
    let mut silent = TcpStream::connect(address(&server)).await.unwrap();
    let silent_since = Instant::now();
    // Meanwhile, whole requests on another connection are answered.
    let mut fine = TcpStream::connect(address(&server)).await.unwrap();
    assert_eq!(
        get(&mut fine, "/healthz").await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );

    let (slow_after, slow_sent) =
        closed_within(&mut slow_reader, slow_since, header_timeout + LATE_MAX).await;
    assert!(
        slow_sent.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&slow_sent)
    );
    assert!(slow_after + EARLY_MAX >= header_timeout, "{slow_after:?}");
    dribble.abort();
    let (silent_after, silent_sent) =
        closed_within(&mut silent, silent_since, header_timeout + LATE_MAX).await;
    assert!(silent_sent.is_empty());
    assert!(
        silent_after + EARLY_MAX >= header_timeout,
        "{silent_after:?}"
    );
    // The connection that asked in time is still served (its idle timeout is a minute).
    assert_eq!(
        get(&mut fine, "/healthz").await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );
    assert_eq!(timed_out(&server, "header"), 2);
    assert_eq!(timed_out(&server, "idle"), 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let idle_timeout = Duration::from_millis(1_500);
    let server = TestServer::start_with(|options| {
        options.header_read_timeout_ms = 10_000;
        options.idle_timeout_ms = 1_500;
    })
    .await;
    let mut stream = TcpStream::connect(address(&server)).await.unwrap();
    // A client that keeps asking keeps its connection past the idle timeout.
    let started = Instant::now();
    while started.elapsed() < idle_timeout * 2 {
        assert_eq!(
            get(&mut stream, "/healthz").await.as_deref(),
            Some("HTTP/1.1 200 OK"),
            "after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Then it goes quiet.
    assert_eq!(
        get(&mut stream, "/healthz").await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );
    let quiet_since = Instant::now();
    let (after, sent) = closed_within(&mut stream, quiet_since, idle_timeout + LATE_MAX).await;
    assert!(sent.is_empty());
    assert!(after + EARLY_MAX >= idle_timeout, "{after:?}");
    assert_eq!(timed_out(&server, "idle"), 1);
    assert_eq!(timed_out(&server, "header"), 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_arrives_is_closed_after_the_request_timeout() {
    let request_timeout = Duration::from_millis(1_000);
    let server = TestServer::start_with(|options| {
        options.request_timeout_ms = Some(1_000);
    })
    .await;
    server
        .put_room("slow", serde_json::json!({ "capacity": 1 }))
        .await;
    let mut stream = TcpStream::connect(address(&server)).await.unwrap();
    stream
        .write_all(
            b"POST /api/waiting-room/sessions HTTP/1.1\r\nHost: test\r\n\
              Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"roomId\": ",
        )
        .await
        .unwrap();
    let since = Instant::now();
    let (after, sent) = closed_within(&mut stream, since, request_timeout + LATE_MAX).await;
    assert!(sent.is_empty(), "{:?}", String::from_utf8_lossy(&sent));
    assert!(after + EARLY_MAX >= request_timeout, "{after:?}");
    assert_eq!(timed_out(&server, "request"), 1);
    server.stop().await;
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_per_address_cap_are_refused_while_other_addresses_are_served() {
    let server = TestServer::start_with(|options| {
        options.connections_per_address_max = 2;
    })
    .await;
    // Two connections from 127.0.0.3, answered and kept open (keep-alive).
    let mut first = connect_from(&server, "127.0.0.3").await;
    let mut second = connect_from(&server, "127.0.0.3").await;
    for stream in [&mut first, &mut second] {
        assert_eq!(
            get(stream, "/healthz").await.as_deref(),
            Some("HTTP/1.1 200 OK")
        );
    }
    // A third from the same address is closed without an answer.
    let mut third = connect_from(&server, "127.0.0.3").await;
    let since = Instant::now();
    let _ = third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .await;
    let (after, sent) = closed_within(&mut third, since, LATE_MAX).await;
    assert!(sent.is_empty(), "{:?}", String::from_utf8_lossy(&sent));
    assert!(after < Duration::from_secs(5), "{after:?}");
    assert_eq!(server.node.metrics.connections.refused_total.get(), 1);
    // Another address has its own count: served.
    let mut elsewhere = connect_from(&server, "127.0.0.4").await;
    assert_eq!(
        get(&mut elsewhere, "/healthz").await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );
    // The two held connections are still served.
    for stream in [&mut first, &mut second] {
        assert_eq!(
            get(stream, "/healthz").await.as_deref(),
            Some("HTTP/1.1 200 OK")
        );
    }
    // Once one of them closes, its address may open another.
    drop(first);
    wait_open(&server, 2).await;
    let mut again = connect_from(&server, "127.0.0.3").await;
    assert_eq!(
        get(&mut again, "/healthz").await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );
    assert_eq!(server.node.metrics.connections.refused_total.get(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_total_cap_wait_for_one_to_close() {
    let server = TestServer::start_with(|options| {
        options.connections_max = 2;
    })
    .await;
    let mut first = TcpStream::connect(address(&server)).await.unwrap();
    let mut second = TcpStream::connect(address(&server)).await.unwrap();
    for stream in [&mut first, &mut second] {
        assert_eq!(
            get(stream, "/healthz").await.as_deref(),
            Some("HTTP/1.1 200 OK")
        );
    }
    // The third connects (the kernel's backlog) but is not served while both are open...
    let mut third = TcpStream::connect(address(&server)).await.unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(500), read_answer(&mut third)).await;
    assert!(waited.is_err(), "answered past the cap: {waited:?}");
    // ...and is once one closes.
    drop(first);
    let answer = tokio::time::timeout(LATE_MAX, read_answer(&mut third))
        .await
        .expect("answered once a connection closed");
    assert_eq!(answer.as_deref(), Some("HTTP/1.1 200 OK"));
    assert_eq!(server.node.metrics.connections.refused_total.get(), 0);
    server.stop().await;
}
