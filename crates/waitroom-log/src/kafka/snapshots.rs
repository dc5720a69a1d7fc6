//! The snapshot store, trim markers and tombstones of the Kafka log: records of the compacted
//! topic `<topic>.snapshots` (one partition), read into an index by a task of each log.
//!
//! # Records
//! Keys are text; rooms are `[A-Za-z0-9._-]`, so `/` separates the parts. Values start with a
//! 4-byte magic that names their kind and version; integers are little-endian.
//! - `chunk/<room>/<position>/<index>`: bytes `index × SNAPSHOT_CHUNK_BYTES ..` of the room's
//!   snapshot at `position` (a snapshot is split so every message stays under the brokers'
//!   message size limit, [`MESSAGE_BYTES_MAX`]).
//! - `snapshot/<room>/<position>`: the manifest, `"WKS1" | bytes: u64 | chunks: u32 |
//!   CRC-32C of the bytes: u32`, written once every chunk is acknowledged. No chunks: a
//!   tombstone of a forgotten room (see `Log::forget_room`).
//! - `trimmed/<partition>/<through>`: a trim marker, `"WKT1" | deleted through: i64` (−1:
//!   nothing deleted): `through` is where a starting node reads the partition from, `deleted
//!   through` the last offset trimming dropped (less than `through` under `keep-history`).
//! - `layout`: `"WKL1" | partitions: u32`, the log topic's partition count when first used.
//!
//! The position is in the key, so compaction (which keeps the last value of each key) never
//! replaces a newer snapshot by an older one written later by a slower node: the index takes the
//! highest position. Once a snapshot's manifest is acknowledged, the writer deletes the room's
//! older manifests and chunks with Kafka tombstones (records with a key and no value), and a trim
//! deletes the older markers of its partition the same way; compaction then drops them. A crash
//! between the two leaves older records that the next store of the room deletes.
//!
//! # Reading
//! Each log runs a task that reads the topic from its beginning and keeps, per key, where its
//! newest value is (offsets and sizes, not the snapshots' bytes). An operation first makes the
//! index read up to the topic's high watermark as of the call (read-your-writes, across nodes);
//! a load then fetches the chunks by offset with a consumer of its own. A store cannot compare
//! and set atomically on Kafka: two nodes may store at once, and both snapshots are kept until
//! the writer of the newer one deletes the other; every reader takes the highest position, so
//! the newest wins whatever the order they land in.
//!
//! A high watermark below what the index already read means the brokers lost records (a broker
//! that keeps nothing across a restart): the log then refuses every operation, loudly.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

use super::connection::{ReadConsumer, Shared, unavailable};
use super::settings::*;
use crate::{Checkpoint, LogError, Position, ShardId, Snapshot, SnapshotInfo, check_snapshot};

const MANIFEST_MAGIC: &[u8; 4] = b"WKS1";
const TRIM_MAGIC: &[u8; 4] = b"WKT1";
const LAYOUT_MAGIC: &[u8; 4] = b"WKL1";
const LAYOUT_KEY: &str = "layout";
/// The snapshot topic's one partition.
const PARTITION: i32 = 0;

/// A snapshot's manifest as the index holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Manifest {
    bytes: u64,
    chunks: u32,
    crc: u32,
}

/// What the index knows of one room.
#[derive(Default)]
struct RoomEntry {
    manifests: BTreeMap<u64, Manifest>,
    /// `(position, index) → offset` of each chunk.
    chunks: BTreeMap<(u64, u32), i64>,
}

impl RoomEntry {
    /// The newest manifest whose chunks are all there, with its position.
    fn newest(&self) -> Option<(u64, Manifest)> {
        self.manifests
            .iter()
            .rev()
            .find(|(position, manifest)| {
                let held = self
                    .chunks
                    .range((**position, 0)..=(**position, u32::MAX))
                    .count();
                held == manifest.chunks as usize
            })
            .map(|(position, manifest)| (*position, *manifest))
    }

    fn is_empty(&self) -> bool {
        self.manifests.is_empty() && self.chunks.is_empty()
    }
}

/// What the snapshot topic says, as far as the index read it.
#[derive(Default)]
struct Index {
    rooms: HashMap<Arc<str>, RoomEntry>,
    /// Per partition, `through → deleted through` of each marker.
    trims: BTreeMap<i32, BTreeMap<u64, Option<u64>>>,
    partitions: Option<i32>,
}

/// One record of the snapshot topic, parsed.
enum Key<'a> {
    Chunk(&'a str, u64, u32),
    Manifest(&'a str, u64),
    Trim(i32, u64),
    Layout,
}

fn parse_key(key: &str) -> Option<Key<'_>> {
    if key == LAYOUT_KEY {
        return Some(Key::Layout);
    }
    let mut parts = key.split('/');
    let kind = parts.next()?;
    let parsed = match kind {
        "chunk" => Key::Chunk(
            parts.next()?,
            parts.next()?.parse().ok()?,
            parts.next()?.parse().ok()?,
        ),
        "snapshot" => Key::Manifest(parts.next()?, parts.next()?.parse().ok()?),
        "trimmed" => Key::Trim(parts.next()?.parse().ok()?, parts.next()?.parse().ok()?),
        _ => return None,
    };
    parts.next().is_none().then_some(parsed)
}

fn chunk_key(room: &str, position: u64, index: u32) -> String {
    format!("chunk/{room}/{position}/{index}")
}

fn manifest_key(room: &str, position: u64) -> String {
    format!("snapshot/{room}/{position}")
}

fn trim_key(partition: i32, through: u64) -> String {
    format!("trimmed/{partition}/{through}")
}

fn encode_manifest(manifest: Manifest) -> Vec<u8> {
    let mut value = Vec::with_capacity(20);
    value.extend_from_slice(MANIFEST_MAGIC);
    value.extend_from_slice(&manifest.bytes.to_le_bytes());
    value.extend_from_slice(&manifest.chunks.to_le_bytes());
    value.extend_from_slice(&manifest.crc.to_le_bytes());
    value
}

fn decode_manifest(value: &[u8]) -> Option<Manifest> {
    let rest = value.strip_prefix(MANIFEST_MAGIC)?;
    if rest.len() != 16 {
        return None;
    }
    Some(Manifest {
        bytes: u64::from_le_bytes(rest[0..8].try_into().ok()?),
        chunks: u32::from_le_bytes(rest[8..12].try_into().ok()?),
        crc: u32::from_le_bytes(rest[12..16].try_into().ok()?),
    })
}

fn encode_trim(deleted_through: Option<u64>) -> Vec<u8> {
    let deleted = deleted_through.map_or(-1, |offset| offset as i64);
    let mut value = TRIM_MAGIC.to_vec();
    value.extend_from_slice(&deleted.to_le_bytes());
    value
}

fn decode_trim(value: &[u8]) -> Option<Option<u64>> {
    let rest = value.strip_prefix(TRIM_MAGIC)?;
    let deleted = i64::from_le_bytes(rest.try_into().ok()?);
    Some(u64::try_from(deleted).ok())
}

fn encode_layout(partitions: i32) -> Vec<u8> {
    let mut value = LAYOUT_MAGIC.to_vec();
    value.extend_from_slice(&(partitions as u32).to_le_bytes());
    value
}

fn decode_layout(value: &[u8]) -> Option<i32> {
    let rest = value.strip_prefix(LAYOUT_MAGIC)?;
    i32::try_from(u32::from_le_bytes(rest.try_into().ok()?)).ok()
}

impl Index {
    /// Applies one record of the topic (`None`: a Kafka tombstone).
    fn apply(&mut self, key: &str, value: Option<&[u8]>, offset: i64) -> Result<(), String> {
        let Some(parsed) = parse_key(key) else {
            // Not a record of this log (a tool wrote to the topic): nothing to index.
            tracing::warn!(
                offset,
                "skipping a record of the snapshot topic with an unknown key"
            );
            return Ok(());
        };
        let bad = |what: &str| format!("record {offset} of the snapshot topic: a bad {what}");
        match parsed {
            Key::Layout => {
                if let Some(value) = value {
                    self.partitions = Some(decode_layout(value).ok_or_else(|| bad("layout"))?);
                }
            }
            Key::Trim(partition, through) => {
                let markers = self.trims.entry(partition).or_default();
                match value {
                    Some(value) => {
                        markers.insert(through, decode_trim(value).ok_or_else(|| bad("marker"))?);
                    }
                    None => {
                        markers.remove(&through);
                    }
                }
            }
            Key::Manifest(room, position) => match value {
                Some(value) => {
                    let manifest = decode_manifest(value).ok_or_else(|| bad("manifest"))?;
                    self.room(room).manifests.insert(position, manifest);
                }
                None => self.remove(room, |entry| {
                    entry.manifests.remove(&position);
                }),
            },
            Key::Chunk(room, position, index) => match value {
                Some(_) => {
                    self.room(room).chunks.insert((position, index), offset);
                }
                None => self.remove(room, |entry| {
                    entry.chunks.remove(&(position, index));
                }),
            },
        }
        Ok(())
    }

    fn room(&mut self, room: &str) -> &mut RoomEntry {
        if !self.rooms.contains_key(room) {
            self.rooms.insert(room.into(), RoomEntry::default());
        }
        self.rooms.get_mut(room).expect("inserted above")
    }

    fn remove(&mut self, room: &str, change: impl FnOnce(&mut RoomEntry)) {
        if let Some(entry) = self.rooms.get_mut(room) {
            change(entry);
            if entry.is_empty() {
                self.rooms.remove(room);
            }
        }
    }

    /// The newest trim marker of `partition`: `(through, deleted through)`.
    fn trim_marker(&self, partition: i32) -> Option<(u64, Option<u64>)> {
        let markers = self.trims.get(&partition)?;
        let (through, _) = markers.last_key_value()?;
        let deleted = markers.values().flatten().max().copied();
        Some((*through, deleted))
    }
}

/// How far the index has read.
#[derive(Clone, Debug, Default)]
struct Progress {
    /// The offset after the last record indexed.
    next: i64,
    /// A record the index could not read: the store refuses to go on.
    failure: Option<String>,
}

struct Inner {
    index: Mutex<Index>,
    progress: watch::Sender<Progress>,
}

impl Inner {
    fn index(&self) -> MutexGuard<'_, Index> {
        // Index updates are single inserts and removals: a panic cannot leave one half done.
        self.index
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The snapshot store of one log: the index, the task that fills it, and the consumer that
/// loads snapshots.
pub(super) struct Store {
    inner: Arc<Inner>,
    reader: tokio::task::AbortHandle,
    loader: tokio::sync::Mutex<Option<ReadConsumer>>,
    topic: String,
}

impl Store {
    /// Stops reading the snapshot topic (the log found the brokers lost records).
    pub(super) fn stop(&self) {
        self.reader.abort();
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Store {
    /// Starts the task that reads the snapshot topic into the index.
    pub(super) fn start(reader: ReadConsumer, topic: &str) -> Result<Self, LogError> {
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(topic, PARTITION, Offset::Beginning)
            .and_then(|()| reader.assign(&assignment))
            .map_err(|error| unavailable("reading the snapshot topic", error))?;
        let inner = Arc::new(Inner {
            index: Mutex::new(Index::default()),
            progress: watch::Sender::new(Progress::default()),
        });
        let reader = tokio::spawn(read_index(Arc::clone(&inner), reader)).abort_handle();
        Ok(Self {
            inner,
            reader,
            loader: tokio::sync::Mutex::new(None),
            topic: topic.to_owned(),
        })
    }
}

/// Reads the snapshot topic into the index, for as long as the log lives.
async fn read_index(inner: Arc<Inner>, consumer: ReadConsumer) {
    loop {
        match consumer.recv().await {
            Ok(message) => {
                let offset = message.offset();
                let key = message.key().and_then(|key| std::str::from_utf8(key).ok());
                let applied = match key {
                    Some(key) => inner.index().apply(key, message.payload(), offset),
                    None => Ok(()),
                };
                inner.progress.send_modify(|progress| {
                    progress.next = progress.next.max(offset + 1);
                    if let Err(why) = applied {
                        tracing::error!("{why}");
                        progress.failure.get_or_insert(why);
                    }
                });
            }
            Err(KafkaError::PartitionEOF(_)) => {}
            Err(error) => {
                // librdkafka retries by itself; the operations waiting on the index report the
                // outage when it outlasts their wait.
                tracing::debug!(%error, "reading the snapshot topic");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A position of the log as a Kafka offset.
fn offset_of(position: Position) -> Result<u64, LogError> {
    u64::try_from(position.0)
        .ok()
        .filter(|offset| i64::try_from(*offset).is_ok())
        .ok_or_else(|| LogError::Rejected(format!("position {} is not a Kafka offset", position.0)))
}

impl Shared {
    /// Makes the index read up to the snapshot topic's high watermark as of now.
    async fn sync(&self) -> Result<(), LogError> {
        self.check_intact()?;
        let (_, high) = self.snapshot_watermarks().await?;
        self.wait_indexed(high).await
    }

    /// Waits until the index has read every record before offset `end`.
    async fn wait_indexed(&self, end: i64) -> Result<(), LogError> {
        let mut progress = self.store.inner.progress.subscribe();
        let waited = tokio::time::timeout(SNAPSHOT_SYNC_WAIT, async {
            loop {
                {
                    let seen = progress.borrow_and_update();
                    if let Some(why) = &seen.failure {
                        return Err(LogError::Corrupt(why.clone()));
                    }
                    if seen.next >= end {
                        return Ok(());
                    }
                }
                if progress.changed().await.is_err() {
                    return Err(LogError::Unavailable(
                        "the snapshot index stopped".to_owned(),
                    ));
                }
            }
        })
        .await;
        match waited {
            Ok(result) => result,
            Err(_) => {
                // A topic that ends before what the index read lost records.
                let (_, high) = self.snapshot_watermarks().await?;
                let next = self.store.inner.progress.borrow().next;
                if high < next {
                    return Err(self.lost(format!(
                        "the snapshot topic {} ends at offset {high}, but this log read it up to \
                         {next}: the brokers lost acknowledged snapshots (a broker that keeps \
                         nothing across a restart?)",
                        self.store.topic
                    )));
                }
                Err(LogError::Unavailable(format!(
                    "the snapshot index did not read up to offset {end} within \
                     {SNAPSHOT_SYNC_WAIT:?}"
                )))
            }
        }
    }

    /// Writes records to the snapshot topic, in order; returns the offset of the last.
    async fn write(
        &self,
        what: &str,
        records: &[(String, Option<&[u8]>)],
    ) -> Result<i64, LogError> {
        let records: Vec<(i32, String, Option<&[u8]>)> = records
            .iter()
            .map(|(key, value)| (PARTITION, key.clone(), *value))
            .collect();
        let offsets = self
            .produce(what, &self.settings.snapshot_topic, &records)
            .await?;
        offsets
            .into_iter()
            .max()
            .ok_or_else(|| LogError::Unavailable(format!("{what}: nothing was written")))
    }

    /// Deletes keys with Kafka tombstones (best effort: what stays is deleted by a later
    /// store).
    async fn delete_keys(&self, keys: Vec<String>) {
        if keys.is_empty() {
            return;
        }
        let records: Vec<(String, Option<&[u8]>)> =
            keys.into_iter().map(|key| (key, None)).collect();
        if let Err(error) = self.write("deleting old snapshot records", &records).await {
            tracing::warn!(log = %self.description, %error, "could not delete old records of the snapshot topic; a later store deletes them");
        }
    }

    /// Checks that `shard` is `room`'s partition.
    fn check_shard(&self, room: &str, shard: &ShardId) -> Result<(), LogError> {
        let partition = self.partition(shard)?;
        let expected = partition_of(room, self.partitions);
        if partition == expected {
            Ok(())
        } else {
            Err(LogError::Rejected(format!(
                "room {room} lives in shard {}, not {shard}",
                self.shard(expected)
            )))
        }
    }

    /// The partition count recorded in the snapshot topic, if any.
    pub(super) async fn recorded_partitions(&self) -> Result<Option<i32>, LogError> {
        self.sync().await?;
        Ok(self.store.inner.index().partitions)
    }

    /// Records the log topic's partition count.
    pub(super) async fn record_partitions(&self) -> Result<(), LogError> {
        let value = encode_layout(self.partitions);
        let offset = self
            .write(
                "recording the topic's layout",
                &[(LAYOUT_KEY.to_owned(), Some(&value[..]))],
            )
            .await?;
        self.wait_indexed(offset + 1).await
    }

    /// Per partition, the last offset trimming deleted (`None`: none), as of now.
    pub(super) async fn deleted_markers(&self) -> Result<Vec<Option<u64>>, LogError> {
        self.sync().await?;
        let index = self.store.inner.index();
        Ok((0..self.partitions)
            .map(|partition| {
                index
                    .trim_marker(partition)
                    .and_then(|(_, deleted)| deleted)
            })
            .collect())
    }

    pub(super) async fn store(&self, snapshot: Snapshot) -> Result<bool, LogError> {
        check_snapshot(&snapshot)?;
        check_room(&snapshot.room)?;
        self.check_shard(&snapshot.room, &snapshot.shard)?;
        let position = offset_of(snapshot.position)?;
        self.sync().await?;
        {
            let index = self.store.inner.index();
            match index.rooms.get(&*snapshot.room) {
                Some(entry) if entry.newest().is_some_and(|(held, _)| held >= position) => {
                    return Ok(false);
                }
                Some(_) => {}
                None if index.rooms.len() >= SNAPSHOT_ROOMS_MAX => {
                    return Err(LogError::Rejected(format!(
                        "the Kafka log's snapshot index holds SNAPSHOT_ROOMS_MAX \
                         ({SNAPSHOT_ROOMS_MAX}) rooms already"
                    )));
                }
                None => {}
            }
        }
        let room = &*snapshot.room;
        let chunks: Vec<(String, Option<&[u8]>)> = snapshot
            .bytes
            .chunks(SNAPSHOT_CHUNK_BYTES)
            .enumerate()
            .map(|(index, chunk)| (chunk_key(room, position, index as u32), Some(chunk)))
            .collect();
        let manifest = Manifest {
            bytes: snapshot.bytes.len() as u64,
            chunks: chunks.len() as u32,
            crc: crc32c::crc32c(&snapshot.bytes),
        };
        let what = format!("storing the snapshot of room {room}");
        if !chunks.is_empty() {
            // Acknowledged before the manifest is written: a manifest always has its chunks.
            self.write(&what, &chunks).await?;
        }
        let value = encode_manifest(manifest);
        let offset = self
            .write(&what, &[(manifest_key(room, position), Some(&value[..]))])
            .await?;
        self.wait_indexed(offset + 1).await?;
        self.delete_older(room, position, false).await;
        Ok(true)
    }

    /// Deletes the records of `room`'s snapshots older than `position` (and, with
    /// `same_position`, the chunks at `position`: a tombstone replaced that snapshot).
    async fn delete_older(&self, room: &str, position: u64, same_position: bool) {
        let keys = {
            let index = self.store.inner.index();
            let Some(entry) = index.rooms.get(room) else {
                return;
            };
            let manifests = entry
                .manifests
                .range(..position)
                .map(|(older, _)| manifest_key(room, *older));
            let chunk_end = if same_position {
                (position, u32::MAX)
            } else {
                (position, 0)
            };
            let chunks = entry
                .chunks
                .iter()
                .filter(|(key, _)| {
                    if same_position {
                        **key <= chunk_end
                    } else {
                        **key < chunk_end
                    }
                })
                .map(|((older, index), _)| chunk_key(room, *older, *index));
            manifests.chain(chunks).collect()
        };
        self.delete_keys(keys).await;
    }

    pub(super) async fn load(&self, room: &str) -> Result<Option<Snapshot>, LogError> {
        if check_room(room).is_err() {
            return Ok(None);
        }
        let shard = self.shard(partition_of(room, self.partitions));
        for _ in 0..SNAPSHOT_LOAD_TRIES_MAX {
            self.sync().await?;
            let found = {
                let index = self.store.inner.index();
                index.rooms.get(room).and_then(|entry| {
                    let (position, manifest) = entry.newest()?;
                    let chunks: Vec<i64> = entry
                        .chunks
                        .range((position, 0)..=(position, u32::MAX))
                        .map(|(_, offset)| *offset)
                        .collect();
                    Some((position, manifest, chunks))
                })
            };
            let Some((position, manifest, chunks)) = found else {
                return Ok(None);
            };
            let bytes = if chunks.is_empty() {
                Bytes::new()
            } else {
                match self.read_chunks(room, position, &chunks).await? {
                    Some(bytes) => bytes,
                    // Replaced (and compacted away) meanwhile: read the index again.
                    None => continue,
                }
            };
            if bytes.len() as u64 != manifest.bytes || crc32c::crc32c(&bytes) != manifest.crc {
                return Err(LogError::Corrupt(format!(
                    "the snapshot of room {room} at {position} does not match its manifest \
                     (size or CRC)"
                )));
            }
            return Ok(Some(Snapshot {
                room: room.into(),
                shard,
                position: Position(u128::from(position)),
                bytes,
            }));
        }
        Err(LogError::Unavailable(format!(
            "the snapshot of room {room} was replaced {SNAPSHOT_LOAD_TRIES_MAX} times while it \
             was being read"
        )))
    }

    /// Reads the chunks at `offsets` (in chunk order) of `room`'s snapshot at `position`, with
    /// the store's loading consumer; `None` when one of them is gone.
    async fn read_chunks(
        &self,
        room: &str,
        position: u64,
        offsets: &[i64],
    ) -> Result<Option<Bytes>, LogError> {
        let (Some(first), Some(last)) = (offsets.iter().min(), offsets.iter().max()) else {
            return Ok(Some(Bytes::new()));
        };
        let mut loader = self.store.loader.lock().await;
        if loader.is_none() {
            *loader = Some(self.consumer(&format!("{}.loader", self.node))?);
        }
        let consumer = loader.as_ref().expect("made above");
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(
                &self.settings.snapshot_topic,
                PARTITION,
                Offset::Offset(*first),
            )
            .and_then(|()| consumer.assign(&assignment))
            .map_err(|error| unavailable("loading a snapshot", error))?;
        let mut parts: Vec<Option<Bytes>> = vec![None; offsets.len()];
        let read = tokio::time::timeout(SNAPSHOT_SYNC_WAIT, async {
            loop {
                match consumer.recv().await {
                    Ok(message) => {
                        let offset = message.offset();
                        if let Some(index) = offsets.iter().position(|wanted| *wanted == offset) {
                            let key = message.key().and_then(|key| std::str::from_utf8(key).ok());
                            if key == Some(chunk_key(room, position, index as u32).as_str()) {
                                parts[index] = message.payload().map(Bytes::copy_from_slice);
                            }
                        }
                        if offset >= *last {
                            return Ok(());
                        }
                    }
                    // The end of the topic before the last chunk: it was compacted away.
                    Err(KafkaError::PartitionEOF(_)) => return Ok(()),
                    Err(error) => return Err(unavailable("loading a snapshot", error)),
                }
            }
        })
        .await;
        match read {
            Ok(result) => result?,
            Err(_) => {
                return Err(LogError::Unavailable(format!(
                    "loading the snapshot of room {room}: not read within {SNAPSHOT_SYNC_WAIT:?}"
                )));
            }
        }
        if parts.iter().any(Option::is_none) {
            return Ok(None);
        }
        let mut bytes = BytesMut::new();
        for part in parts.into_iter().flatten() {
            bytes.extend_from_slice(&part);
        }
        Ok(Some(bytes.freeze()))
    }

    pub(super) async fn info(&self, room: &str) -> Result<Option<SnapshotInfo>, LogError> {
        if check_room(room).is_err() {
            return Ok(None);
        }
        self.sync().await?;
        let index = self.store.inner.index();
        Ok(index
            .rooms
            .get(room)
            .and_then(RoomEntry::newest)
            .map(|(position, manifest)| self.info_of(room, position, manifest)))
    }

    fn info_of(&self, room: &str, position: u64, manifest: Manifest) -> SnapshotInfo {
        SnapshotInfo {
            room: room.into(),
            shard: self.shard(partition_of(room, self.partitions)),
            position: Position(u128::from(position)),
            bytes: manifest.bytes,
        }
    }

    pub(super) async fn list(&self) -> Result<Vec<SnapshotInfo>, LogError> {
        self.sync().await?;
        let index = self.store.inner.index();
        Ok(index
            .rooms
            .iter()
            .filter_map(|(room, entry)| {
                let (position, manifest) = entry.newest()?;
                Some(self.info_of(room, position, manifest))
            })
            .collect())
    }

    /// Stores a tombstone at `last` unless a newer snapshot is held (see `Log::forget_room`).
    pub(super) async fn forget(&self, room: &str, last: Position) -> Result<bool, LogError> {
        check_room(room)?;
        let position = offset_of(last)?;
        self.sync().await?;
        let held = self
            .store
            .inner
            .index()
            .rooms
            .get(room)
            .and_then(RoomEntry::newest);
        if held.is_some_and(|(held, _)| held > position) {
            return Ok(true);
        }
        let value = encode_manifest(Manifest {
            bytes: 0,
            chunks: 0,
            crc: crc32c::crc32c(&[]),
        });
        let offset = self
            .write(
                &format!("forgetting room {room}"),
                &[(manifest_key(room, position), Some(&value[..]))],
            )
            .await?;
        self.wait_indexed(offset + 1).await?;
        self.delete_older(room, position, true).await;
        Ok(true)
    }

    /// Records the trim marker, drops the partition's tombstones up to it, and deletes the
    /// records (see "What bounds the topics" in the module documentation).
    pub(super) async fn trim(&self, shard: &ShardId, through: Position) -> Result<(), LogError> {
        let partition = self.partition(shard)?;
        let through = offset_of(through)?;
        self.sync().await?;
        let held = self.store.inner.index().trim_marker(partition);
        if held.is_some_and(|(held, _)| held >= through) {
            return Ok(());
        }
        let keep_from = match self.settings.keep_history_ms {
            0 => None,
            keep_ms => Some(
                self.offset_for_time(partition, wall_clock_ms().saturating_sub(keep_ms))
                    .await?,
            ),
        };
        // The last offset to delete: the trim position, but nothing younger than keep-history,
        // and never less than what an earlier trim deleted.
        let deleted = match keep_from {
            None => Some(through),
            Some(first_kept) => u64::try_from(first_kept - 1)
                .ok()
                .map(|last_old| last_old.min(through)),
        };
        let deleted = deleted.max(held.and_then(|(_, deleted)| deleted));
        let value = encode_trim(deleted);
        let offset = self
            .write(
                &format!("recording the trim of {shard}"),
                &[(trim_key(partition, through), Some(&value[..]))],
            )
            .await?;
        self.wait_indexed(offset + 1).await?;
        let stale = {
            let index = self.store.inner.index();
            let markers = index
                .trims
                .get(&partition)
                .into_iter()
                .flat_map(|markers| markers.range(..through))
                .map(|(older, _)| trim_key(partition, *older));
            let tombstones = index
                .rooms
                .iter()
                .filter(|(room, _)| partition_of(room, self.partitions) == partition)
                .flat_map(|(room, entry)| {
                    entry
                        .manifests
                        .range(..=through)
                        .filter(|(_, manifest)| manifest.chunks == 0)
                        .map(|(position, _)| manifest_key(room, *position))
                });
            markers.chain(tombstones).collect::<Vec<_>>()
        };
        self.delete_keys(stale).await;
        if self.settings.delete_records
            && let Some(deleted) = deleted
        {
            self.delete_records(partition, deleted).await?;
        }
        Ok(())
    }

    /// `DeleteRecords` of every record of `partition` up to and including `deleted`.
    async fn delete_records(&self, partition: i32, deleted: u64) -> Result<(), LogError> {
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(
                &self.settings.topic,
                partition,
                Offset::Offset(deleted as i64 + 1),
            )
            .map_err(|error| unavailable("deleting records", error))?;
        let options = rdkafka::admin::AdminOptions::new()
            .request_timeout(Some(COMMAND_TIMEOUT))
            .operation_timeout(Some(COMMAND_TIMEOUT));
        let result = self
            .admin
            .delete_records(&offsets, &options)
            .await
            .map_err(|error| unavailable("deleting records (DeleteRecords)", error))?;
        for element in result.elements() {
            element.error().map_err(|error| {
                unavailable(
                    &format!(
                        "deleting records of {} (DeleteRecords; set delete-records=false for a \
                         broker without it)",
                        self.shard(partition)
                    ),
                    error,
                )
            })?;
        }
        Ok(())
    }

    pub(super) async fn trim_markers(&self) -> Result<Checkpoint, LogError> {
        self.sync().await?;
        let index = self.store.inner.index();
        let mut trimmed = Checkpoint::start();
        for partition in 0..self.partitions {
            if let Some((through, _)) = index.trim_marker(partition) {
                trimmed.advance(&self.shard(partition), Position(u128::from(through)));
            }
        }
        Ok(trimmed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        assert!(matches!(
            parse_key(&chunk_key("room-1.a_b", 42, 7)),
            Some(Key::Chunk("room-1.a_b", 42, 7))
        ));
        assert!(matches!(
            parse_key(&manifest_key("r", 9)),
            Some(Key::Manifest("r", 9))
        ));
        assert!(matches!(
            parse_key(&trim_key(3, 11)),
            Some(Key::Trim(3, 11))
        ));
        assert!(matches!(parse_key(LAYOUT_KEY), Some(Key::Layout)));
        for bad in [
            "",
            "chunk/r/1",
            "snapshot/r/x",
            "trimmed/1/2/3",
            "other/r/1",
        ] {
            assert!(parse_key(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn values_round_trip_and_garbage_is_refused() {
        let manifest = Manifest {
            bytes: 3 << 20,
            chunks: 6,
            crc: 0xdead_beef,
        };
        assert_eq!(decode_manifest(&encode_manifest(manifest)), Some(manifest));
        assert_eq!(decode_trim(&encode_trim(Some(5))), Some(Some(5)));
        assert_eq!(decode_trim(&encode_trim(None)), Some(None));
        assert_eq!(decode_layout(&encode_layout(16)), Some(16));
        assert_eq!(decode_manifest(b"WKS1short"), None);
        assert_eq!(decode_trim(b"XXXX12345678"), None);
        let mut index = Index::default();
        assert!(
            index
                .apply(&manifest_key("r", 1), Some(b"nonsense"), 0)
                .is_err()
        );
    }

    #[test]
    fn the_newest_complete_snapshot_wins_and_tombstones_remove() {
        let mut index = Index::default();
        let two_chunks = encode_manifest(Manifest {
            bytes: 10,
            chunks: 2,
            crc: 0,
        });
        // Position 5 complete, position 9 with one chunk missing: 5 is the newest usable.
        index.apply(&chunk_key("r", 5, 0), Some(b"a"), 0).unwrap();
        index.apply(&chunk_key("r", 5, 1), Some(b"b"), 1).unwrap();
        index
            .apply(&manifest_key("r", 5), Some(&two_chunks), 2)
            .unwrap();
        index.apply(&chunk_key("r", 9, 0), Some(b"a"), 3).unwrap();
        index
            .apply(&manifest_key("r", 9), Some(&two_chunks), 4)
            .unwrap();
        assert_eq!(index.rooms["r"].newest().map(|(p, _)| p), Some(5));
        // An older snapshot written later does not replace a newer one.
        index.apply(&chunk_key("r", 9, 1), Some(b"b"), 5).unwrap();
        index
            .apply(
                &manifest_key("r", 3),
                Some(&encode_manifest(Manifest {
                    bytes: 0,
                    chunks: 0,
                    crc: 0,
                })),
                6,
            )
            .unwrap();
        assert_eq!(index.rooms["r"].newest().map(|(p, _)| p), Some(9));
        for key in [
            manifest_key("r", 3),
            manifest_key("r", 5),
            manifest_key("r", 9),
        ] {
            index.apply(&key, None, 7).unwrap();
        }
        for (position, chunk) in [(5, 0), (5, 1), (9, 0), (9, 1)] {
            index
                .apply(&chunk_key("r", position, chunk), None, 8)
                .unwrap();
        }
        assert!(index.rooms.is_empty(), "tombstones left the room indexed");
        index
            .apply(&trim_key(2, 10), Some(&encode_trim(Some(10))), 9)
            .unwrap();
        index
            .apply(&trim_key(2, 20), Some(&encode_trim(Some(15))), 10)
            .unwrap();
        assert_eq!(index.trim_marker(2), Some((20, Some(15))));
        index.apply(&trim_key(2, 10), None, 11).unwrap();
        assert_eq!(index.trim_marker(2), Some((20, Some(15))));
        assert_eq!(index.trim_marker(1), None);
    }
}
