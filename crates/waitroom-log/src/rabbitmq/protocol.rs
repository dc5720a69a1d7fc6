//! A connection speaking RabbitMQ's stream protocol (version 1, as RabbitMQ 3.9 and later
//! serve it), with the commands this log uses: create and delete a stream, declare a publisher
//! (named for deduplication, or not), publish with confirms, query a publisher's sequence,
//! subscribe from an offset specification with credit, and heartbeats.
//!
//! Why not the official `rabbitmq-stream-client` crate: from 0.5 on (0.11 is current) it opens
//! every connection with `ExchangeCommandVersions`, a command RabbitMQ 3.10 (Debian's) does not
//! know, so the broker closes the connection (checked); 0.4 keeps the chunk timestamp in a private
//! field and hands each frame to a task of its own, so chunks of one subscription can be handled
//! out of order unless the credit is one chunk. The protocol is small and stable, so this module
//! speaks it directly: one reader task per connection handles frames in the order they arrive,
//! which keeps a subscription's chunks in order at any credit.
//!
//! Frames are `size u32 | key u16 | version u16 | fields`, big-endian; strings are `i16 length |
//! bytes`, byte arrays `i32 length | bytes`, arrays and maps `i32 count | items`. A response's key
//! is its command's with the high bit set. Writes go through one writer task fed by a bounded
//! queue, so a caller that gives up (a timeout) never leaves half a frame on the socket.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::settings::*;
use crate::LogError;

const KEY_DECLARE_PUBLISHER: u16 = 1;
const KEY_PUBLISH: u16 = 2;
const KEY_PUBLISH_CONFIRM: u16 = 3;
const KEY_PUBLISH_ERROR: u16 = 4;
const KEY_QUERY_PUBLISHER_SEQUENCE: u16 = 5;
const KEY_DELETE_PUBLISHER: u16 = 6;
const KEY_SUBSCRIBE: u16 = 7;
const KEY_DELIVER: u16 = 8;
const KEY_CREDIT: u16 = 9;
const KEY_UNSUBSCRIBE: u16 = 12;
const KEY_CREATE: u16 = 13;
const KEY_DELETE: u16 = 14;
const KEY_METADATA_UPDATE: u16 = 16;
const KEY_PEER_PROPERTIES: u16 = 17;
const KEY_SASL_HANDSHAKE: u16 = 18;
const KEY_SASL_AUTHENTICATE: u16 = 19;
const KEY_TUNE: u16 = 20;
const KEY_OPEN: u16 = 21;
const KEY_CLOSE: u16 = 22;
const KEY_HEARTBEAT: u16 = 23;
const RESPONSE_BIT: u16 = 0x8000;

pub(super) const CODE_OK: u16 = 1;
pub(super) const CODE_STREAM_DOES_NOT_EXIST: u16 = 2;
pub(super) const CODE_STREAM_ALREADY_EXISTS: u16 = 5;
const CODE_AUTHENTICATION_FAILURE: u16 = 8;
const CODE_AUTHENTICATION_FAILURE_LOOPBACK: u16 = 11;
const CODE_VIRTUAL_HOST_ACCESS_FAILURE: u16 = 12;
const CODE_ACCESS_REFUSED: u16 = 16;
const CODE_PRECONDITION_FAILED: u16 = 17;

/// Frames queued for the writer task of one connection.
const WRITE_QUEUE_FRAMES_MAX: usize = 1024;

/// What RabbitMQ's response code means, for messages.
pub(super) fn code_name(code: u16) -> &'static str {
    match code {
        1 => "ok",
        2 => "stream does not exist",
        3 => "subscription id already exists",
        4 => "subscription id does not exist",
        5 => "stream already exists",
        6 => "stream not available",
        7 => "SASL mechanism not supported",
        8 => "authentication failure",
        9 => "SASL error",
        10 => "SASL challenge",
        11 => "authentication failure (loopback-only user)",
        12 => "virtual host access failure",
        13 => "unknown frame",
        14 => "frame too large",
        15 => "internal error",
        16 => "access refused",
        17 => "precondition failed",
        18 => "publisher does not exist",
        19 => "no offset",
        _ => "unknown response code",
    }
}

/// An error for a refused command: access and argument problems are `Rejected` (retrying does
/// not help), the rest `Unavailable`.
pub(super) fn refused(what: &str, code: u16) -> LogError {
    let message = format!("{what}: RabbitMQ answered {} ({code})", code_name(code));
    match code {
        CODE_AUTHENTICATION_FAILURE
        | CODE_AUTHENTICATION_FAILURE_LOOPBACK
        | CODE_VIRTUAL_HOST_ACCESS_FAILURE
        | CODE_ACCESS_REFUSED
        | CODE_PRECONDITION_FAILED => LogError::Rejected(message),
        _ => LogError::Unavailable(message),
    }
}

fn unavailable(message: impl Into<String>) -> LogError {
    LogError::Unavailable(message.into())
}

/// Where a subscription starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum OffsetSpec {
    First,
    /// The last chunk of the stream (delivered whole).
    Last,
    /// The chunk holding this offset (delivered whole), or the stream's first chunk when the
    /// offset is no longer there, or the next chunk written when it is past the end.
    Offset(u64),
}

/// One chunk as a subscription receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Chunk {
    pub(super) first_offset: u64,
    /// The broker's clock when it wrote the chunk, in ms since the Unix epoch.
    pub(super) timestamp_ms: u64,
    /// One message per record, in offset order from `first_offset`.
    pub(super) messages: Vec<Bytes>,
}

impl Chunk {
    /// The offset of the chunk's last record.
    pub(super) fn last_offset(&self) -> u64 {
        self.first_offset + (self.messages.len() as u64).saturating_sub(1)
    }
}

/// What a subscription's channel carries.
#[derive(Debug)]
pub(super) enum Delivery {
    Chunk(Chunk),
    /// The subscription ended (its stream was deleted or moved, or the connection closed).
    Ended(String),
}

/// A live subscription on a connection; its deliveries come in offset order.
pub(super) struct Subscription {
    pub(super) id: u8,
    pub(super) deliveries: mpsc::Receiver<Delivery>,
}

/// Builds one publish frame: messages with their publishing ids, in order.
pub(super) struct Publish {
    publisher: u8,
    ids: Vec<u64>,
    buf: BytesMut,
}

impl Publish {
    pub(super) fn new(publisher: u8) -> Self {
        let mut buf = BytesMut::with_capacity(4096);
        buf.put_u32(0); // size, set by `finish`
        buf.put_u16(KEY_PUBLISH);
        buf.put_u16(1);
        buf.put_u8(publisher);
        buf.put_i32(0); // count, set by `finish`
        Self {
            publisher,
            ids: Vec::new(),
            buf,
        }
    }

    /// Adds a message made of the envelope `parts` (see `message::put_message`).
    pub(super) fn push(&mut self, id: u64, parts: &[&[u8]]) {
        self.buf.put_u64(id);
        super::message::put_message(&mut self.buf, parts);
        self.ids.push(id);
    }

    /// The frame's size so far.
    pub(super) fn bytes(&self) -> usize {
        self.buf.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    fn finish(mut self) -> (u8, Vec<u64>, Bytes) {
        let size = (self.buf.len() - 4) as u32;
        self.buf[0..4].copy_from_slice(&size.to_be_bytes());
        self.buf[9..13].copy_from_slice(&(self.ids.len() as i32).to_be_bytes());
        (self.publisher, self.ids, self.buf.freeze())
    }
}

/// The confirms of one publish frame.
pub(super) struct Confirms(Vec<oneshot::Receiver<Result<(), String>>>);

impl Confirms {
    /// Waits for every confirm, for at most [`CONFIRM_TIMEOUT`].
    ///
    /// # Errors
    /// [`LogError::Unavailable`]: a message was refused, the connection closed, or the confirms
    /// did not come in time.
    pub(super) async fn wait(self) -> Result<(), LogError> {
        let all = async {
            for confirm in self.0 {
                match confirm.await {
                    Ok(Ok(())) => {}
                    Ok(Err(why)) => return Err(unavailable(why)),
                    Err(_) => return Err(unavailable("the connection closed before a confirm")),
                }
            }
            Ok(())
        };
        tokio::time::timeout(CONFIRM_TIMEOUT, all)
            .await
            .map_err(|_| {
                unavailable(format!(
                    "no publisher confirm within {CONFIRM_TIMEOUT:?} (RabbitMQ stalled or a \
                     stream replica is missing)"
                ))
            })?
    }
}

/// A frame's fields, read in order.
struct Fields(Bytes);

impl Fields {
    fn need(&self, bytes: usize) -> Result<(), String> {
        if self.0.remaining() < bytes {
            Err("a frame cut short".to_owned())
        } else {
            Ok(())
        }
    }
    fn u8(&mut self) -> Result<u8, String> {
        self.need(1)?;
        Ok(self.0.get_u8())
    }
    fn u16(&mut self) -> Result<u16, String> {
        self.need(2)?;
        Ok(self.0.get_u16())
    }
    fn u32(&mut self) -> Result<u32, String> {
        self.need(4)?;
        Ok(self.0.get_u32())
    }
    fn u64(&mut self) -> Result<u64, String> {
        self.need(8)?;
        Ok(self.0.get_u64())
    }
    fn string(&mut self) -> Result<String, String> {
        let length = self.u16()? as i16;
        if length < 0 {
            return Ok(String::new());
        }
        let length = length as usize;
        self.need(length)?;
        Ok(String::from_utf8_lossy(&self.0.split_to(length)).into_owned())
    }
    fn take(&mut self, bytes: usize) -> Result<Bytes, String> {
        self.need(bytes)?;
        Ok(self.0.split_to(bytes))
    }
}

fn put_string(buf: &mut BytesMut, text: &str) {
    buf.put_i16(text.len() as i16);
    buf.put_slice(text.as_bytes());
}

fn put_map(buf: &mut BytesMut, map: &[(&str, String)]) {
    buf.put_i32(map.len() as i32);
    for (key, value) in map {
        put_string(buf, key);
        put_string(buf, value);
    }
}

/// A request frame for `key`, its size set when the fields are written (see [`finish_frame`]).
fn frame(key: u16) -> BytesMut {
    let mut buf = BytesMut::with_capacity(64);
    buf.put_u32(0);
    buf.put_u16(key);
    buf.put_u16(1);
    buf
}

fn finish_frame(mut buf: BytesMut) -> Bytes {
    let size = (buf.len() - 4) as u32;
    buf[0..4].copy_from_slice(&size.to_be_bytes());
    buf.freeze()
}

/// Reads one frame (without its size) from `reader`.
async fn read_frame(reader: &mut BufReader<OwnedReadHalf>) -> Result<Bytes, String> {
    let size = reader
        .read_u32()
        .await
        .map_err(|error| format!("reading from RabbitMQ: {error}"))? as usize;
    if !(4..=READ_FRAME_BYTES_MAX).contains(&size) {
        return Err(format!(
            "RabbitMQ sent a frame of {size} bytes (READ_FRAME_BYTES_MAX is \
             {READ_FRAME_BYTES_MAX})"
        ));
    }
    let mut frame = BytesMut::zeroed(size);
    reader
        .read_exact(&mut frame)
        .await
        .map_err(|error| format!("reading from RabbitMQ: {error}"))?;
    Ok(frame.freeze())
}

/// Parses a `deliver` frame's fields after the key and version: the subscription and the chunk.
/// The chunk is osiris's: a 48-byte header (magic and version, chunk type, entries, records,
/// timestamp, epoch, first offset, CRC, data length, trailer length, reserved), then the entries.
pub(super) fn parse_deliver(fields: Bytes) -> Result<(u8, Chunk), String> {
    let mut fields = Fields(fields);
    let subscription = fields.u8()?;
    let _magic_version = fields.u8()?;
    let chunk_type = fields.u8()?;
    let entries = fields.u16()?;
    let records = fields.u32()?;
    let timestamp_ms = fields.u64()? as i64;
    let _epoch = fields.u64()?;
    let first_offset = fields.u64()?;
    let _crc = fields.u32()?;
    let data_bytes = fields.u32()? as usize;
    let _trailer_bytes = fields.u32()?;
    let _reserved = fields.u32()?;
    if chunk_type != 0 {
        return Err(format!(
            "a chunk of type {chunk_type} delivered (not user data)"
        ));
    }
    let mut data = Fields(fields.take(data_bytes)?);
    let mut messages = Vec::with_capacity(records as usize);
    for _ in 0..entries {
        let header = data.u32()?;
        if header & 0x8000_0000 != 0 {
            // A sub-batch entry (several records, maybe compressed): this log never writes them.
            return Err(
                "a chunk holding a sub-batch entry, which waitroom never writes".to_owned(),
            );
        }
        messages.push(data.take(header as usize)?);
    }
    if messages.len() != records as usize {
        return Err(format!(
            "a chunk announcing {records} records holds {}",
            messages.len()
        ));
    }
    Ok((
        subscription,
        Chunk {
            first_offset,
            timestamp_ms: timestamp_ms.max(0) as u64,
            messages,
        },
    ))
}

#[derive(Default)]
struct State {
    /// Why the connection closed, once it has.
    closed: Option<String>,
    pending: HashMap<u32, oneshot::Sender<Fields>>,
    confirms: HashMap<(u8, u64), oneshot::Sender<Result<(), String>>>,
    subscriptions: HashMap<u8, (String, mpsc::Sender<Delivery>)>,
    publishers: HashMap<u8, String>,
}

struct Inner {
    state: Mutex<State>,
    writes: mpsc::Sender<Bytes>,
    correlation: AtomicU32,
    frame_max: u32,
    /// Host and port, for messages.
    peer: String,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change under this lock is a single map operation: a panic cannot leave it
        // half-done, so a poisoned lock is still consistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn closed(&self) -> Option<String> {
        self.lock().closed.clone()
    }

    /// Marks the connection closed and tells everyone waiting on it.
    fn close(&self, why: &str) {
        let mut state = self.lock();
        if state.closed.is_some() {
            return;
        }
        state.closed = Some(why.to_owned());
        state.pending.clear();
        for (_, confirm) in state.confirms.drain() {
            let _ = confirm.send(Err(format!("connection to RabbitMQ closed: {why}")));
        }
        for (_, (_, deliveries)) in state.subscriptions.drain() {
            let _ = deliveries.try_send(Delivery::Ended(format!(
                "connection to RabbitMQ closed: {why}"
            )));
        }
    }

    /// Handles one frame from the broker; an error closes the connection.
    fn dispatch(&self, frame: Bytes) -> Result<(), String> {
        let mut fields = Fields(frame);
        let key = fields.u16()?;
        let _version = fields.u16()?;
        match key {
            KEY_DELIVER => {
                let (subscription, chunk) = parse_deliver(fields.0)?;
                let state = self.lock();
                if let Some((_, deliveries)) = state.subscriptions.get(&subscription) {
                    // The channel holds the whole credit: a full one means the broker sent more
                    // than it was granted.
                    deliveries
                        .try_send(Delivery::Chunk(chunk))
                        .map_err(|_| "RabbitMQ delivered more chunks than granted".to_owned())?;
                }
            }
            KEY_PUBLISH_CONFIRM => {
                let publisher = fields.u8()?;
                let count = fields.u32()?;
                let mut state = self.lock();
                for _ in 0..count {
                    let id = fields.u64()?;
                    if let Some(confirm) = state.confirms.remove(&(publisher, id)) {
                        let _ = confirm.send(Ok(()));
                    }
                }
            }
            KEY_PUBLISH_ERROR => {
                let publisher = fields.u8()?;
                let count = fields.u32()?;
                let mut state = self.lock();
                for _ in 0..count {
                    let id = fields.u64()?;
                    let code = fields.u16()?;
                    if let Some(confirm) = state.confirms.remove(&(publisher, id)) {
                        let _ = confirm.send(Err(format!(
                            "RabbitMQ refused a message: {} ({code})",
                            code_name(code)
                        )));
                    }
                }
            }
            KEY_METADATA_UPDATE => {
                let code = fields.u16()?;
                let stream = fields.string()?;
                let why = format!("stream {stream}: {}", code_name(code));
                let mut state = self.lock();
                let ended: Vec<u8> = state
                    .subscriptions
                    .iter()
                    .filter(|(_, (name, _))| *name == stream)
                    .map(|(id, _)| *id)
                    .collect();
                for id in ended {
                    if let Some((_, deliveries)) = state.subscriptions.remove(&id) {
                        let _ = deliveries.try_send(Delivery::Ended(why.clone()));
                    }
                }
                let publishers: Vec<u8> = state
                    .publishers
                    .iter()
                    .filter(|(_, name)| **name == stream)
                    .map(|(id, _)| *id)
                    .collect();
                let failed: Vec<(u8, u64)> = state
                    .confirms
                    .keys()
                    .filter(|(publisher, _)| publishers.contains(publisher))
                    .copied()
                    .collect();
                for key in failed {
                    if let Some(confirm) = state.confirms.remove(&key) {
                        let _ = confirm.send(Err(why.clone()));
                    }
                }
            }
            KEY_HEARTBEAT => {}
            KEY_CLOSE => {
                let _correlation = fields.u32()?;
                let code = fields.u16()?;
                let reason = fields.string().unwrap_or_default();
                return Err(format!(
                    "RabbitMQ closed the connection: {} ({code}) {reason}",
                    code_name(code)
                ));
            }
            key if key == KEY_CREDIT | RESPONSE_BIT => {
                let code = fields.u16()?;
                let subscription = fields.u8()?;
                let mut state = self.lock();
                if let Some((_, deliveries)) = state.subscriptions.remove(&subscription) {
                    let _ = deliveries.try_send(Delivery::Ended(format!(
                        "credit refused: {}",
                        code_name(code)
                    )));
                }
            }
            key if key & RESPONSE_BIT != 0 => {
                let correlation = fields.u32()?;
                if let Some(waiter) = self.lock().pending.remove(&correlation) {
                    let _ = waiter.send(fields);
                }
            }
            other => return Err(format!("RabbitMQ sent a frame of unknown key {other}")),
        }
        Ok(())
    }
}

/// One connection to RabbitMQ's stream port. Dropping it closes the socket and ends its tasks.
pub(super) struct Connection {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.inner.close("the connection was dropped");
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Sends a request during the handshake and reads its response (nothing else arrives then but
/// `tune`, which the caller reads itself).
async fn handshake_request(
    reader: &mut BufReader<OwnedReadHalf>,
    writer: &mut tokio::net::tcp::OwnedWriteHalf,
    request: Bytes,
    what: &str,
) -> Result<Fields, LogError> {
    writer
        .write_all(&request)
        .await
        .map_err(|error| unavailable(format!("{what}: {error}")))?;
    let mut fields = Fields(read_frame(reader).await.map_err(unavailable)?);
    let key = fields.u16().map_err(unavailable)?;
    let _version = fields.u16().map_err(unavailable)?;
    if key & RESPONSE_BIT == 0 {
        return Err(unavailable(format!(
            "{what}: RabbitMQ sent frame {key} instead of a response"
        )));
    }
    let _correlation = fields.u32().map_err(unavailable)?;
    let code = fields.u16().map_err(unavailable)?;
    if code != CODE_OK {
        return Err(refused(what, code));
    }
    Ok(fields)
}

impl Connection {
    /// Connects and authenticates (SASL PLAIN), agrees on frame size and heartbeats, and opens
    /// the vhost. `name` shows in RabbitMQ's connection list.
    ///
    /// # Errors
    /// [`LogError::Unavailable`] when RabbitMQ cannot be reached or does not answer within
    /// [`CONNECT_TIMEOUT`]; [`LogError::Rejected`] when it refuses the credentials or the vhost.
    pub(super) async fn open(settings: &Settings, name: &str) -> Result<Self, LogError> {
        let peer = format!("{}:{}", settings.host, settings.port);
        tokio::time::timeout(
            CONNECT_TIMEOUT,
            Self::open_within(settings, name, peer.clone()),
        )
        .await
        .map_err(|_| {
            unavailable(format!(
                "connecting to RabbitMQ at {peer}: no answer within {CONNECT_TIMEOUT:?}"
            ))
        })?
    }

    async fn open_within(settings: &Settings, name: &str, peer: String) -> Result<Self, LogError> {
        let socket = TcpStream::connect((settings.host.as_str(), settings.port))
            .await
            .map_err(|error| unavailable(format!("connecting to RabbitMQ at {peer}: {error}")))?;
        // Frames are written whole; waiting to fill packets only adds latency to confirms.
        let _ = socket.set_nodelay(true);
        let (read, mut write) = socket.into_split();
        let mut reader = BufReader::with_capacity(256 * 1024, read);

        let mut request = frame(KEY_PEER_PROPERTIES);
        request.put_u32(1);
        put_map(
            &mut request,
            &[
                ("product", "waitroom".to_owned()),
                ("version", env!("CARGO_PKG_VERSION").to_owned()),
                ("connection_name", name.to_owned()),
            ],
        );
        handshake_request(
            &mut reader,
            &mut write,
            finish_frame(request),
            "peer properties",
        )
        .await?;
        let mut request = frame(KEY_SASL_HANDSHAKE);
        request.put_u32(2);
        handshake_request(
            &mut reader,
            &mut write,
            finish_frame(request),
            "SASL handshake",
        )
        .await?;
        let mut request = frame(KEY_SASL_AUTHENTICATE);
        request.put_u32(3);
        put_string(&mut request, "PLAIN");
        let credentials = format!("\0{}\0{}", settings.user, settings.password);
        request.put_i32(credentials.len() as i32);
        request.put_slice(credentials.as_bytes());
        handshake_request(
            &mut reader,
            &mut write,
            finish_frame(request),
            "authenticating to RabbitMQ",
        )
        .await?;
        // The broker proposes its frame size and heartbeat; the smaller of each side's wins.
        let mut tune = Fields(read_frame(&mut reader).await.map_err(unavailable)?);
        let key = tune.u16().map_err(unavailable)?;
        if key != KEY_TUNE {
            return Err(unavailable(format!(
                "RabbitMQ sent frame {key} instead of tune"
            )));
        }
        let _version = tune.u16().map_err(unavailable)?;
        let broker_frame_max = tune.u32().map_err(unavailable)?;
        let broker_heartbeat = tune.u32().map_err(unavailable)?;
        let frame_max = match broker_frame_max {
            0 => FRAME_BYTES_REQUESTED,
            broker => broker.min(FRAME_BYTES_REQUESTED),
        };
        if frame_max < FRAME_BYTES_MIN {
            return Err(LogError::Rejected(format!(
                "RabbitMQ's stream frame_max is {frame_max} bytes; waitroom needs at least \
                 FRAME_BYTES_MIN ({FRAME_BYTES_MIN}): raise stream.frame_max"
            )));
        }
        let heartbeat = match broker_heartbeat {
            0 => HEARTBEAT_SECONDS,
            broker => broker.min(HEARTBEAT_SECONDS),
        };
        let mut reply = frame(KEY_TUNE);
        reply.put_u32(frame_max);
        reply.put_u32(heartbeat);
        write
            .write_all(&finish_frame(reply))
            .await
            .map_err(|error| unavailable(format!("tune: {error}")))?;
        let mut request = frame(KEY_OPEN);
        request.put_u32(4);
        put_string(&mut request, &settings.vhost);
        handshake_request(
            &mut reader,
            &mut write,
            finish_frame(request),
            "opening the vhost",
        )
        .await?;

        let (writes, mut queued) = mpsc::channel::<Bytes>(WRITE_QUEUE_FRAMES_MAX);
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            writes,
            correlation: AtomicU32::new(100),
            frame_max,
            peer,
        });
        let writer_inner = Arc::clone(&inner);
        let writer = tokio::spawn(async move {
            while let Some(frame) = queued.recv().await {
                if let Err(error) = write.write_all(&frame).await {
                    writer_inner.close(&format!("writing to RabbitMQ: {error}"));
                    return;
                }
            }
        });
        let reader_inner = Arc::clone(&inner);
        let reader_task = tokio::spawn(async move {
            let why = loop {
                let frame = match tokio::time::timeout(SILENCE_MAX, read_frame(&mut reader)).await {
                    Err(_) => break format!("nothing from RabbitMQ for {SILENCE_MAX:?}"),
                    Ok(Err(why)) => break why,
                    Ok(Ok(frame)) => frame,
                };
                if let Err(why) = reader_inner.dispatch(frame) {
                    break why;
                }
            };
            reader_inner.close(&why);
        });
        let heartbeat_inner = Arc::clone(&inner);
        let period = Duration::from_secs(u64::from(heartbeat.max(1))) / 2;
        let heartbeats = tokio::spawn(async move {
            let beat = finish_frame(frame(KEY_HEARTBEAT));
            loop {
                tokio::time::sleep(period).await;
                if heartbeat_inner.writes.send(beat.clone()).await.is_err() {
                    return;
                }
            }
        });
        Ok(Self {
            inner,
            tasks: vec![writer, reader_task, heartbeats],
        })
    }

    /// The largest frame both sides accept.
    pub(super) fn frame_max(&self) -> usize {
        self.inner.frame_max as usize
    }

    /// Why the connection closed, if it has.
    pub(super) fn closed(&self) -> Option<String> {
        self.inner.closed()
    }

    fn check_open(&self) -> Result<(), LogError> {
        match self.inner.closed() {
            Some(why) => Err(unavailable(format!(
                "connection to RabbitMQ at {} closed: {why}",
                self.inner.peer
            ))),
            None => Ok(()),
        }
    }

    async fn write(&self, frame: Bytes) -> Result<(), LogError> {
        self.check_open()?;
        self.inner
            .writes
            .send(frame)
            .await
            .map_err(|_| unavailable("the connection to RabbitMQ closed"))
    }

    /// Sends a request built by `fields` and returns the response code and the fields after it.
    async fn request(
        &self,
        key: u16,
        what: &str,
        fields: impl FnOnce(&mut BytesMut),
    ) -> Result<(u16, Fields), LogError> {
        let correlation = self.inner.correlation.fetch_add(1, Ordering::Relaxed);
        let mut request = frame(key);
        request.put_u32(correlation);
        fields(&mut request);
        let (sender, receiver) = oneshot::channel();
        {
            let mut state = self.inner.lock();
            if let Some(why) = &state.closed {
                return Err(unavailable(format!("{what}: connection closed: {why}")));
            }
            state.pending.insert(correlation, sender);
        }
        let outcome = async {
            self.write(finish_frame(request)).await?;
            let mut response = tokio::time::timeout(COMMAND_TIMEOUT, receiver)
                .await
                .map_err(|_| unavailable(format!("{what}: no answer within {COMMAND_TIMEOUT:?}")))?
                .map_err(|_| {
                    unavailable(format!(
                        "{what}: connection closed: {}",
                        self.inner.closed().unwrap_or_default()
                    ))
                })?;
            let code = response.u16().map_err(unavailable)?;
            Ok((code, response))
        }
        .await;
        if outcome.is_err() {
            self.inner.lock().pending.remove(&correlation);
        }
        outcome
    }

    /// Creates `stream` with `arguments` (RabbitMQ's `x-` arguments without the prefix); false
    /// when it exists already (whatever its arguments).
    ///
    /// # Errors
    /// [`LogError::Rejected`] for refused arguments or access; `Unavailable` otherwise.
    pub(super) async fn create_stream(
        &self,
        stream: &str,
        arguments: &[(&str, String)],
    ) -> Result<bool, LogError> {
        let what = format!("creating stream {stream}");
        let (code, _) = self
            .request(KEY_CREATE, &what, |buf| {
                put_string(buf, stream);
                put_map(buf, arguments);
            })
            .await?;
        match code {
            CODE_OK => Ok(true),
            CODE_STREAM_ALREADY_EXISTS => Ok(false),
            code => Err(refused(&what, code)),
        }
    }

    /// Deletes `stream`; false when it did not exist.
    ///
    /// # Errors
    /// As [`Connection::create_stream`].
    pub(super) async fn delete_stream(&self, stream: &str) -> Result<bool, LogError> {
        let what = format!("deleting stream {stream}");
        let (code, _) = self
            .request(KEY_DELETE, &what, |buf| put_string(buf, stream))
            .await?;
        match code {
            CODE_OK => Ok(true),
            CODE_STREAM_DOES_NOT_EXIST => Ok(false),
            code => Err(refused(&what, code)),
        }
    }

    fn free_id<V>(used: &HashMap<u8, V>) -> Result<u8, LogError> {
        (1..=CONNECTION_SUBSCRIPTIONS_MAX as u8)
            .find(|id| !used.contains_key(id))
            .ok_or_else(|| {
                unavailable(format!(
                    "CONNECTION_SUBSCRIPTIONS_MAX ({CONNECTION_SUBSCRIPTIONS_MAX}) publishers or \
                     subscriptions are open on one connection"
                ))
            })
    }

    /// Declares a publisher on `stream`, named `reference` for deduplication (the broker drops a
    /// message whose publishing id is not above the last one it kept for that name on that
    /// stream) or unnamed (`None`). `Ok(None)` when the stream does not exist.
    ///
    /// # Errors
    /// As [`Connection::create_stream`].
    pub(super) async fn declare_publisher(
        &self,
        stream: &str,
        reference: Option<&str>,
    ) -> Result<Option<u8>, LogError> {
        let id = {
            let mut state = self.inner.lock();
            let id = Self::free_id(&state.publishers)?;
            state.publishers.insert(id, stream.to_owned());
            id
        };
        let what = format!("declaring a publisher on {stream}");
        let outcome = self
            .request(KEY_DECLARE_PUBLISHER, &what, |buf| {
                buf.put_u8(id);
                put_string(buf, reference.unwrap_or(""));
                put_string(buf, stream);
            })
            .await;
        match outcome {
            Ok((CODE_OK, _)) => Ok(Some(id)),
            other => {
                self.inner.lock().publishers.remove(&id);
                match other? {
                    (CODE_STREAM_DOES_NOT_EXIST, _) => Ok(None),
                    (code, _) => Err(refused(&what, code)),
                }
            }
        }
    }

    /// Deletes a publisher (best effort: a closed connection has none left).
    pub(super) async fn delete_publisher(&self, id: u8) {
        let _ = self
            .request(KEY_DELETE_PUBLISHER, "deleting a publisher", |buf| {
                buf.put_u8(id)
            })
            .await;
        self.inner.lock().publishers.remove(&id);
    }

    /// Sends one publish frame; its confirms come through the returned [`Confirms`].
    ///
    /// # Errors
    /// [`LogError::Rejected`] for a frame larger than [`Connection::frame_max`];
    /// `Unavailable` when the connection is closed.
    pub(super) async fn publish(&self, publish: Publish) -> Result<Confirms, LogError> {
        if publish.bytes() > self.frame_max() {
            return Err(LogError::Rejected(format!(
                "a publish frame of {} bytes exceeds the agreed frame size ({})",
                publish.bytes(),
                self.frame_max()
            )));
        }
        let (publisher, ids, frame) = publish.finish();
        let mut receivers = Vec::with_capacity(ids.len());
        {
            let mut state = self.inner.lock();
            if let Some(why) = &state.closed {
                return Err(unavailable(format!("publishing: connection closed: {why}")));
            }
            for id in ids {
                let (sender, receiver) = oneshot::channel();
                state.confirms.insert((publisher, id), sender);
                receivers.push(receiver);
            }
        }
        self.write(frame).await?;
        Ok(Confirms(receivers))
    }

    /// The last publishing id the broker kept for publisher name `reference` on `stream` (0 when
    /// none); `None` when the stream does not exist.
    ///
    /// # Errors
    /// As [`Connection::create_stream`].
    pub(super) async fn query_publisher_sequence(
        &self,
        reference: &str,
        stream: &str,
    ) -> Result<Option<u64>, LogError> {
        let what = format!("querying the sequence of {reference} on {stream}");
        let (code, mut fields) = self
            .request(KEY_QUERY_PUBLISHER_SEQUENCE, &what, |buf| {
                put_string(buf, reference);
                put_string(buf, stream);
            })
            .await?;
        match code {
            CODE_OK => Ok(Some(fields.u64().map_err(unavailable)?)),
            CODE_STREAM_DOES_NOT_EXIST => Ok(None),
            code => Err(refused(&what, code)),
        }
    }

    /// Subscribes to `stream` from `offset` with `credit` chunks; `Ok(None)` when the stream does
    /// not exist.
    ///
    /// # Errors
    /// As [`Connection::create_stream`].
    pub(super) async fn subscribe(
        &self,
        stream: &str,
        offset: OffsetSpec,
        credit: u16,
    ) -> Result<Option<Subscription>, LogError> {
        // Room for the whole credit and a last `Ended`, so the reader never waits on it.
        let (sender, deliveries) = mpsc::channel(usize::from(credit) + 1);
        let id = {
            let mut state = self.inner.lock();
            let id = Self::free_id(&state.subscriptions)?;
            state.subscriptions.insert(id, (stream.to_owned(), sender));
            id
        };
        let what = format!("subscribing to {stream}");
        let outcome = self
            .request(KEY_SUBSCRIBE, &what, |buf| {
                buf.put_u8(id);
                put_string(buf, stream);
                match offset {
                    OffsetSpec::First => buf.put_u16(1),
                    OffsetSpec::Last => buf.put_u16(2),
                    OffsetSpec::Offset(offset) => {
                        buf.put_u16(4);
                        buf.put_u64(offset);
                    }
                }
                buf.put_u16(credit);
                buf.put_i32(0);
            })
            .await;
        match outcome {
            Ok((CODE_OK, _)) => Ok(Some(Subscription { id, deliveries })),
            other => {
                self.inner.lock().subscriptions.remove(&id);
                match other? {
                    (CODE_STREAM_DOES_NOT_EXIST, _) => Ok(None),
                    (code, _) => Err(refused(&what, code)),
                }
            }
        }
    }

    /// Lets the broker send `chunks` more chunks to subscription `id`.
    ///
    /// # Errors
    /// `Unavailable` when the connection is closed.
    pub(super) async fn credit(&self, id: u8, chunks: u16) -> Result<(), LogError> {
        let mut request = frame(KEY_CREDIT);
        request.put_u8(id);
        request.put_u16(chunks);
        self.write(finish_frame(request)).await
    }

    /// Ends subscription `id` (best effort: a closed connection has none left); chunks still in
    /// flight are dropped.
    pub(super) async fn unsubscribe(&self, id: u8) {
        let removed = self.inner.lock().subscriptions.remove(&id).is_some();
        if removed {
            let _ = self
                .request(KEY_UNSUBSCRIBE, "unsubscribing", |buf| buf.put_u8(id))
                .await;
        }
    }

    /// Reads the first chunk a subscription from `offset` gets, then ends the subscription.
    /// `Ok(None)` when the stream does not exist.
    ///
    /// # Errors
    /// `Unavailable` when no chunk comes within [`COMMAND_TIMEOUT`] (an empty stream never
    /// sends one: see the module documentation of `rabbitmq` for why the streams are not empty).
    pub(super) async fn read_one(
        &self,
        stream: &str,
        offset: OffsetSpec,
    ) -> Result<Option<Chunk>, LogError> {
        let Some(mut subscription) = self.subscribe(stream, offset, 1).await? else {
            return Ok(None);
        };
        let delivery = tokio::time::timeout(COMMAND_TIMEOUT, subscription.deliveries.recv()).await;
        self.unsubscribe(subscription.id).await;
        match delivery {
            Ok(Some(Delivery::Chunk(chunk))) => Ok(Some(chunk)),
            Ok(Some(Delivery::Ended(why))) => Err(unavailable(format!("reading {stream}: {why}"))),
            Ok(None) => Err(unavailable(format!(
                "reading {stream}: the connection closed"
            ))),
            Err(_) => Err(unavailable(format!(
                "reading {stream}: no chunk within {COMMAND_TIMEOUT:?}"
            ))),
        }
    }

    /// Reads `stream` from `from` in order, handing every chunk to `each` until it answers
    /// `false` (done). `Ok(false)` when the stream does not exist.
    ///
    /// # Errors
    /// `Unavailable` when a chunk does not come within [`COMMAND_TIMEOUT`] or the subscription
    /// ends; the error `each` returns.
    pub(super) async fn read_while(
        &self,
        stream: &str,
        from: OffsetSpec,
        mut each: impl FnMut(Chunk) -> Result<bool, LogError>,
    ) -> Result<bool, LogError> {
        let Some(mut subscription) = self
            .subscribe(stream, from, SUBSCRIBE_CREDIT_CHUNKS)
            .await?
        else {
            return Ok(false);
        };
        let outcome = async {
            loop {
                match tokio::time::timeout(COMMAND_TIMEOUT, subscription.deliveries.recv()).await {
                    Ok(Some(Delivery::Chunk(chunk))) => {
                        if !each(chunk)? {
                            return Ok(());
                        }
                        self.credit(subscription.id, 1).await?;
                    }
                    Ok(Some(Delivery::Ended(why))) => {
                        return Err(unavailable(format!("reading {stream}: {why}")));
                    }
                    Ok(None) => {
                        return Err(unavailable(format!(
                            "reading {stream}: the connection closed"
                        )));
                    }
                    Err(_) => {
                        return Err(unavailable(format!(
                            "reading {stream}: no chunk within {COMMAND_TIMEOUT:?}"
                        )));
                    }
                }
            }
        }
        .await;
        self.unsubscribe(subscription.id).await;
        outcome.map(|()| true)
    }
}
