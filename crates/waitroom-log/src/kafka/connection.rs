//! The clients of one Kafka log: their configuration, the topics, metadata and watermarks, and
//! the producer that appends (see "Mapping the Log trait onto Kafka" in the module
//! documentation of `kafka`).

use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, FromClientConfigAndContext, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use super::KafkaLog;
use super::settings::*;
use super::snapshots::Store;
use crate::{Append, LogError, ShardId};

/// Routes librdkafka's own log lines and client errors to `tracing` (the `rdkafka` crate's
/// default context writes them to the `log` crate, which the node does not collect).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Context;

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
                tracing::error!(target: "librdkafka", facility, "{message}")
            }
            // librdkafka's errors are mostly failed connections, which it retries by itself
            // (an outage that lasts is reported through `Event::Unavailable`).
            RDKafkaLogLevel::Error => tracing::warn!(target: "librdkafka", facility, "{message}"),
            // Every client gets every property given; librdkafka notes those it ignores.
            RDKafkaLogLevel::Warning if facility == "CONFWARN" => {
                tracing::debug!(target: "librdkafka", facility, "{message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", facility, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::debug!(target: "librdkafka", facility, "{message}")
            }
            RDKafkaLogLevel::Debug => tracing::trace!(target: "librdkafka", facility, "{message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Transport errors are retried by librdkafka itself; the log notices an outage through
        // its own requests failing (subscriptions report `Unavailable`).
        tracing::debug!(target: "librdkafka", %error, "{reason}");
    }
}

impl ConsumerContext for Context {}

/// The consumers that read records (subscriptions, the snapshot index and loader).
pub(super) type ReadConsumer = rdkafka::consumer::StreamConsumer<Context>;

/// A random number (std's per-process random hash keys, advanced at every call): enough for
/// backoff jitter and generated names, which need no cryptographic strength.
pub(super) fn random_u64() -> u64 {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(CALLS.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

/// Delay before reconnection attempt `attempt` (0-based): doubling from [`RECONNECT_DELAY_MIN`]
/// up to [`RECONNECT_DELAY_MAX`], each drawn in the upper half of its range so nodes spread out.
pub(super) fn reconnect_delay(attempt: u32) -> Duration {
    let ceiling = RECONNECT_DELAY_MIN
        .saturating_mul(1 << attempt.min(16))
        .min(RECONNECT_DELAY_MAX);
    let half = ceiling / 2;
    let jitter_ms = random_u64() % (half.as_millis() as u64 + 1);
    half + Duration::from_millis(jitter_ms)
}

/// A client that librdkafka refused to make: names the property, never its value (it may be a
/// password; librdkafka's own message quotes values).
pub(super) fn config_error(error: KafkaError) -> LogError {
    match error {
        KafkaError::ClientConfig(result, _, name, _) => {
            let why = match result {
                rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN => "no such property",
                rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_INVALID => "invalid value",
                _ => "refused",
            };
            rejected(format!("Kafka client property {name}: {why}"))
        }
        other => rejected(format!("making a Kafka client: {other}")),
    }
}

pub(super) fn unavailable(what: &str, error: impl std::fmt::Display) -> LogError {
    LogError::Unavailable(format!("{what}: {error}"))
}

/// A name for this log's consumer group when the URL gives none: `{hostname}-{pid}-{random}`.
fn generated_node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(32)
        .collect();
    let host = if host.is_empty() { "node" } else { &host };
    format!(
        "waitroom-{host}-{}-{:08x}",
        std::process::id(),
        random_u64() as u32
    )
}

/// Runs blocking librdkafka calls (metadata, watermarks) off the async workers.
pub(super) async fn blocking<T: Send + 'static>(
    what: &str,
    call: impl FnOnce() -> Result<T, LogError> + Send + 'static,
) -> Result<T, LogError> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|error| unavailable(what, error))?
}

/// How to reach the brokers, the names this log uses there, and its clients.
pub(super) struct Shared {
    pub(super) settings: Settings,
    pub(super) description: String,
    /// The consumer group subscriptions commit to (`node`), or a generated name.
    pub(super) node: String,
    /// The node name was configured: subscriptions commit their positions to its group.
    pub(super) node_configured: bool,
    /// Partitions of the log topic (fixed for the life of the log).
    pub(super) partitions: i32,
    /// Properties every client gets.
    base: ClientConfig,
    /// Metadata and watermark queries (never assigned anything).
    meta: Arc<BaseConsumer<Context>>,
    pub(super) admin: AdminClient<Context>,
    /// Replaced when librdkafka reports a fatal producer error (see [`Shared::producer_failed`]).
    producer: RwLock<Arc<FutureProducer<Context>>>,
    pub(super) store: Store,
    /// Why this log stopped trusting the brokers (they lost records it had seen), once it did.
    lost: OnceLock<String>,
}

impl Shared {
    /// Connects (see [`KafkaLog::connect`]).
    pub(super) async fn connect(settings: Settings) -> Result<Arc<Self>, LogError> {
        let (node, node_configured) = match &settings.node {
            Some(node) => (node.clone(), true),
            None => (generated_node_name(), false),
        };
        let description = settings.describe(&node);
        let base = base_config(&settings);
        let meta: BaseConsumer<Context> = consumer_config(&base, &node)
            .create_with_context(Context)
            .map_err(config_error)?;
        let meta = Arc::new(meta);
        let admin: AdminClient<Context> =
            base.create_with_context(Context).map_err(config_error)?;
        let producer = create_producer(&base)?;
        let partitions = ensure_topics(&settings, &meta, &admin, &description).await?;
        let index_reader: ReadConsumer = consumer_config(&base, &node)
            .create_with_context(Context)
            .map_err(config_error)?;
        let store = Store::start(index_reader, &settings.snapshot_topic)?;
        let shared = Arc::new(Self {
            settings,
            description,
            node,
            node_configured,
            partitions,
            base,
            meta,
            admin,
            producer: RwLock::new(Arc::new(producer)),
            store,
            lost: OnceLock::new(),
        });
        shared.check_layout().await?;
        shared.warn_about_retention().await;
        Ok(shared)
    }

    /// The shard name of a partition of the log topic.
    pub(super) fn shard(&self, partition: i32) -> ShardId {
        ShardId::new(format!("{}/{partition}", self.settings.topic))
    }

    /// The partition a shard name of this log names.
    pub(super) fn partition(&self, shard: &ShardId) -> Result<i32, LogError> {
        shard
            .0
            .strip_prefix(self.settings.topic.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .and_then(|number| number.parse::<i32>().ok())
            .filter(|partition| (0..self.partitions).contains(partition))
            .ok_or_else(|| rejected(format!("{shard} is not a partition of this Kafka log")))
    }

    /// A consumer with this log's properties, in `group` (committed to only by named nodes).
    pub(super) fn consumer(&self, group: &str) -> Result<ReadConsumer, LogError> {
        consumer_config(&self.base, group)
            .create_with_context(Context)
            .map_err(config_error)
    }

    /// Fails once this log found the brokers lost records it had seen.
    pub(super) fn check_intact(&self) -> Result<(), LogError> {
        match self.lost.get() {
            Some(why) => Err(LogError::Corrupt(why.clone())),
            None => Ok(()),
        }
    }

    /// Records, loudly and for good, that the brokers lost what this log had seen.
    pub(super) fn lost(&self, why: String) -> LogError {
        let why = self.lost.get_or_init(|| {
            tracing::error!(log = %self.description, "{why}; this log refuses to go on");
            // Nothing is read from a broker that lost records any more.
            self.store.stop();
            why
        });
        LogError::Corrupt(why.clone())
    }

    /// Partitions of `topic` (`None` when it does not exist).
    pub(super) async fn topic_partitions(&self, topic: &str) -> Result<Option<i32>, LogError> {
        let meta = Arc::clone(&self.meta);
        let topic = topic.to_owned();
        blocking("reading the topic metadata", move || {
            topic_partitions(&meta, &topic)
        })
        .await
    }

    /// The low (`Offset::Beginning`) or high (`Offset::End`) watermark of every partition of
    /// the log topic, in partition order, in one request per broker.
    pub(super) async fn watermarks(&self, which: Offset) -> Result<Vec<i64>, LogError> {
        let meta = Arc::clone(&self.meta);
        let topic = self.settings.topic.clone();
        let partitions = self.partitions;
        let found = blocking("reading the watermarks", move || {
            watermarks(&meta, &topic, 0..partitions, which)
        })
        .await?;
        if found.len() != partitions as usize {
            return Err(LogError::Unavailable(format!(
                "the brokers answered {} of {partitions} partitions' watermarks",
                found.len()
            )));
        }
        Ok(found)
    }

    /// The low and high watermarks of the snapshot topic's partition.
    pub(super) async fn snapshot_watermarks(&self) -> Result<(i64, i64), LogError> {
        let meta = Arc::clone(&self.meta);
        let topic = self.settings.snapshot_topic.clone();
        blocking("reading the snapshot topic's watermarks", move || {
            meta.fetch_watermarks(&topic, 0, COMMAND_TIMEOUT)
                .map_err(|error| unavailable("reading the snapshot topic's watermarks", error))
        })
        .await
    }

    /// The first offset of `partition` whose timestamp is at or after `timestamp_ms` (the high
    /// watermark when there is none).
    pub(super) async fn offset_for_time(
        &self,
        partition: i32,
        timestamp_ms: u64,
    ) -> Result<i64, LogError> {
        let meta = Arc::clone(&self.meta);
        let topic = self.settings.topic.clone();
        let found = blocking("finding an offset by time", move || {
            let timestamp = i64::try_from(timestamp_ms).unwrap_or(i64::MAX);
            watermarks(
                &meta,
                &topic,
                partition..partition + 1,
                Offset::Offset(timestamp),
            )
        })
        .await?;
        match found.first() {
            Some(offset) if *offset >= 0 => Ok(*offset),
            // No record at or after the time: everything is older.
            _ => Ok(self.watermarks(Offset::End).await?[partition as usize]),
        }
    }

    /// The producer, or its replacement.
    pub(super) fn producer(&self) -> Arc<FutureProducer<Context>> {
        Arc::clone(&self.producer.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// What a failed send means. A fatal error (the idempotent producer cannot guarantee order
    /// or uniqueness any more, e.g. after the brokers lost its state) makes the producer unusable:
    /// it is replaced, so the next append has a working one.
    pub(super) fn producer_failed(
        &self,
        producer: &Arc<FutureProducer<Context>>,
        what: &str,
        error: KafkaError,
    ) -> LogError {
        if let Some((code, reason)) = producer.client().fatal_error() {
            tracing::error!(log = %self.description, ?code, "the Kafka producer failed for good ({reason}): making a new one");
            let mut held = self.producer.write().unwrap_or_else(|p| p.into_inner());
            if Arc::ptr_eq(&held, producer) {
                match create_producer(&self.base) {
                    Ok(fresh) => *held = Arc::new(fresh),
                    Err(error) => {
                        tracing::error!(log = %self.description, %error, "could not make a new Kafka producer")
                    }
                }
            }
            return LogError::Unavailable(format!("{what}: the producer failed: {reason}"));
        }
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidRecord) => {
                rejected(format!("{what}: {error}"))
            }
            _ => unavailable(what, error),
        }
    }

    /// Writes `records` (partition, key, value or `None` for a Kafka tombstone) to `topic`, in
    /// order, and waits for every acknowledgement; returns their offsets.
    pub(super) async fn produce(
        &self,
        what: &str,
        topic: &str,
        records: &[(i32, String, Option<&[u8]>)],
    ) -> Result<Vec<i64>, LogError> {
        self.check_intact()?;
        let producer = self.producer();
        let records = records.iter().map(|(partition, key, value)| {
            let record = FutureRecord::<str, [u8]>::to(topic)
                .partition(*partition)
                .key(key.as_str());
            match value {
                Some(value) => record.payload(value),
                None => record,
            }
        });
        let deliveries = self.enqueue_all(what, &producer, records).await?;
        self.acknowledged(what, &producer, deliveries).await
    }

    /// Hands `records` to `producer` in order, waiting (at most [`ENQUEUE_WAIT`] in all) while
    /// its queue is full. On an error, the records handed over before it are sent all the same.
    pub(super) async fn enqueue_all<'a>(
        &self,
        what: &str,
        producer: &Arc<FutureProducer<Context>>,
        records: impl Iterator<Item = FutureRecord<'a, str, [u8]>>,
    ) -> Result<Vec<DeliveryFuture>, LogError> {
        let deadline = Instant::now() + ENQUEUE_WAIT;
        let mut deliveries = Vec::with_capacity(records.size_hint().0);
        for mut record in records {
            loop {
                match producer.send_result(record) {
                    Ok(delivery) => {
                        deliveries.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        if Instant::now() >= deadline {
                            return Err(LogError::Unavailable(format!(
                                "{what}: the producer's queue stayed full for {ENQUEUE_WAIT:?}"
                            )));
                        }
                        record = back;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err((error, _)) => return Err(self.producer_failed(producer, what, error)),
                }
            }
        }
        Ok(deliveries)
    }

    /// Waits for every delivery; their offsets, or the first error.
    pub(super) async fn acknowledged(
        &self,
        what: &str,
        producer: &Arc<FutureProducer<Context>>,
        deliveries: Vec<DeliveryFuture>,
    ) -> Result<Vec<i64>, LogError> {
        let mut offsets = Vec::with_capacity(deliveries.len());
        let mut failure = None;
        for delivery in deliveries {
            match delivery.await {
                Ok(Ok(delivery)) => offsets.push(delivery.offset),
                Ok(Err((error, _))) => {
                    failure.get_or_insert(error);
                }
                Err(_canceled) => {
                    failure.get_or_insert(KafkaError::Canceled);
                }
            }
        }
        match failure {
            None => Ok(offsets),
            Some(error) => Err(self.producer_failed(producer, what, error)),
        }
    }

    /// Refuses a log topic whose partition count is not the one recorded the first time (see
    /// "Connecting" in the module documentation), and records it if none is.
    async fn check_layout(&self) -> Result<(), LogError> {
        match self.recorded_partitions().await? {
            Some(recorded) if recorded == self.partitions => Ok(()),
            Some(recorded) => Err(rejected(format!(
                "topic {} has {} partitions, but this log was written with {recorded}: rooms \
                 would move to other partitions and lose their order. Restore the partition \
                 count, or start a new topic",
                self.settings.topic, self.partitions
            ))),
            None => self.record_partitions().await,
        }
    }

    /// Says loudly when the log topic deletes records by time or size: history that a room
    /// without a snapshot still needs would go.
    async fn warn_about_retention(&self) {
        let options = AdminOptions::new().request_timeout(Some(COMMAND_TIMEOUT));
        let resource = ResourceSpecifier::Topic(&self.settings.topic);
        let Ok(results) = self.admin.describe_configs([&resource], &options).await else {
            return;
        };
        for config in results.into_iter().flatten() {
            for name in ["retention.ms", "retention.bytes"] {
                if let Some(value) = config.get(name).and_then(|entry| entry.value.as_deref())
                    && value != "-1"
                {
                    tracing::warn!(
                        log = %self.description,
                        "topic {} has {name}={value}: Kafka may delete records that rooms without \
                         a recent snapshot still need (their nodes then restore them from \
                         snapshots, and rooms without one lose history). waitroom trims the topic \
                         itself: set {name}=-1",
                        self.settings.topic
                    );
                }
            }
        }
    }
}

impl KafkaLog {
    /// Appends a batch (see "Mapping the Log trait onto Kafka" and "Time" in the module
    /// documentation).
    pub(super) async fn append_batch(&self, batch: Vec<Append>) -> Result<(), LogError> {
        crate::check_batch(&batch, 0)?;
        batch
            .iter()
            .try_for_each(|append| check_room(&append.room))?;
        if batch.is_empty() {
            return Ok(());
        }
        let shared = &self.shared;
        shared.check_intact()?;
        let producer = shared.producer();
        let topic = shared.settings.topic.as_str();
        let deliveries = {
            // Stamped and handed over under one lock: this node's records reach a partition in
            // the order of their timestamps.
            let mut last_stamped_ms = self.stamping.lock().await;
            let timestamp_ms = wall_clock_ms().max(*last_stamped_ms);
            *last_stamped_ms = timestamp_ms;
            let records = batch.iter().map(|append| {
                FutureRecord::<str, [u8]>::to(topic)
                    .partition(partition_of(&append.room, shared.partitions))
                    .key(&*append.room)
                    .payload(&append.payload[..])
                    .timestamp(i64::try_from(timestamp_ms).unwrap_or(i64::MAX))
            });
            shared.enqueue_all("appending", &producer, records).await?
        };
        shared
            .acknowledged("appending", &producer, deliveries)
            .await
            .map(drop)
    }
}

/// The properties every client of the log gets: the brokers, then the URL's and the file's.
fn base_config(settings: &Settings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.brokers)
        .set("client.id", "waitroom")
        .set_log_level(RDKafkaLogLevel::Warning);
    for (name, value) in &settings.properties {
        config.set(name, value);
    }
    config
}

/// Sets `name` unless the user's properties did.
fn default(config: &mut ClientConfig, name: &str, value: impl ToString) {
    if config.get(name).is_none() {
        config.set(name, value.to_string());
    }
}

fn create_producer(base: &ClientConfig) -> Result<FutureProducer<Context>, LogError> {
    let mut config = base.clone();
    config.set("enable.idempotence", "true").set("acks", "all");
    default(&mut config, "linger.ms", LINGER_MS);
    default(&mut config, "message.timeout.ms", DELIVERY_TIMEOUT_MS);
    default(
        &mut config,
        "queue.buffering.max.messages",
        PRODUCE_QUEUE_RECORDS_MAX,
    );
    FutureProducer::from_config_and_context(&config, Context).map_err(config_error)
}

fn consumer_config(base: &ClientConfig, group: &str) -> ClientConfig {
    let mut config = base.clone();
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "error")
        .set("enable.partition.eof", "true");
    default(&mut config, "fetch.wait.max.ms", FETCH_WAIT_MAX_MS);
    default(
        &mut config,
        "queued.max.messages.kbytes",
        PREFETCH_KBYTES_MAX,
    );
    config
}

/// Partitions of `topic`, `None` when it does not exist (blocking).
fn topic_partitions(meta: &BaseConsumer<Context>, topic: &str) -> Result<Option<i32>, LogError> {
    let metadata = meta
        .fetch_metadata(Some(topic), COMMAND_TIMEOUT)
        .map_err(|error| unavailable("reading the topic metadata", error))?;
    let Some(found) = metadata.topics().iter().find(|found| found.name() == topic) else {
        return Ok(None);
    };
    match found.error() {
        None => Ok(Some(found.partitions().len() as i32)),
        Some(error)
            if RDKafkaErrorCode::from(error) == RDKafkaErrorCode::UnknownTopicOrPartition =>
        {
            Ok(None)
        }
        Some(error) => Err(LogError::Unavailable(format!(
            "reading the metadata of topic {topic}: {}",
            RDKafkaErrorCode::from(error)
        ))),
    }
}

/// `ListOffsets` for `partitions` of `topic` at `which` (a timestamp, or `Offset::Beginning`
/// / `Offset::End` for the low / high watermarks): the offsets in partition order (blocking).
fn watermarks(
    meta: &BaseConsumer<Context>,
    topic: &str,
    partitions: std::ops::Range<i32>,
    which: Offset,
) -> Result<Vec<i64>, LogError> {
    let mut list = TopicPartitionList::with_capacity(partitions.len());
    for partition in partitions {
        list.add_partition_offset(topic, partition, which)
            .map_err(|error| unavailable("listing offsets", error))?;
    }
    let found = meta
        .offsets_for_times(list, COMMAND_TIMEOUT)
        .map_err(|error| unavailable("listing offsets", error))?;
    let mut elements = found.elements_for_topic(topic);
    elements.sort_by_key(|element| element.partition());
    elements
        .into_iter()
        .map(|element| {
            element
                .error()
                .map_err(|error| unavailable("listing offsets", error))?;
            match element.offset() {
                Offset::Offset(offset) => Ok(offset),
                // A timestamp after every record.
                Offset::End => Ok(-1),
                other => Err(LogError::Unavailable(format!(
                    "listing offsets: the brokers answered {other:?} for partition {}",
                    element.partition()
                ))),
            }
        })
        .collect()
}

/// Creates the topics that are missing (unless `create-topics=false`) and returns the log
/// topic's partition count.
async fn ensure_topics(
    settings: &Settings,
    meta: &Arc<BaseConsumer<Context>>,
    admin: &AdminClient<Context>,
    description: &str,
) -> Result<i32, LogError> {
    let lookup = |topic: &str| {
        let meta = Arc::clone(meta);
        let topic = topic.to_owned();
        blocking("reading the topic metadata", move || {
            topic_partitions(&meta, &topic)
        })
    };
    let log_partitions = lookup(&settings.topic)
        .await
        .map_err(|error| unavailable(&format!("connecting to {description}"), error))?;
    let snapshot_partitions = lookup(&settings.snapshot_topic).await?;
    let mut missing = Vec::new();
    // -1: the brokers' default replication factor (Kafka 2.4 and later).
    let replication = || TopicReplication::Fixed(settings.replication_factor.unwrap_or(-1));
    let partitions = settings.partitions.to_string();
    if log_partitions.is_none() {
        missing.push(
            NewTopic::new(&settings.topic, settings.partitions, replication())
                .set("message.timestamp.type", "LogAppendTime")
                // `cleanup.policy` stays at the brokers' default (`delete` on Kafka): tansu 0.6.0
                // reads `retention.ms=-1` as "delete every record" on a topic that sets it.
                .set("retention.ms", "-1")
                .set("retention.bytes", "-1"),
        );
    }
    if snapshot_partitions.is_none() {
        missing.push(
            NewTopic::new(&settings.snapshot_topic, 1, replication())
                .set("cleanup.policy", "compact")
                .set("retention.ms", "-1"),
        );
    }
    if !missing.is_empty() {
        if !settings.create_topics {
            let names: Vec<&str> = missing.iter().map(|topic| topic.name).collect();
            return Err(rejected(format!(
                "topics {} do not exist and create-topics=false: create them (the log topic \
                 with {partitions} partitions and retention.ms=-1, the snapshot topic with one \
                 partition and cleanup.policy=compact)",
                names.join(" and ")
            )));
        }
        let options = AdminOptions::new()
            .request_timeout(Some(COMMAND_TIMEOUT))
            .operation_timeout(Some(COMMAND_TIMEOUT));
        let results = admin
            .create_topics(missing.iter(), &options)
            .await
            .map_err(|error| unavailable("creating the topics", error))?;
        for result in results {
            match result {
                Ok(topic) => tracing::info!(log = %description, %topic, "created topic"),
                // Another node created it first.
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(LogError::Unavailable(format!(
                        "creating topic {topic}: {code}"
                    )));
                }
            }
        }
    }
    // A new topic takes a moment to show in every broker's metadata.
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    loop {
        let log_partitions = lookup(&settings.topic).await?;
        let snapshot_partitions = lookup(&settings.snapshot_topic).await?;
        match (log_partitions, snapshot_partitions) {
            (Some(log), Some(snapshot)) if log > 0 && snapshot > 0 => {
                if log > PARTITIONS_MAX {
                    return Err(rejected(format!(
                        "topic {} has {log} partitions, more than PARTITIONS_MAX \
                         ({PARTITIONS_MAX})",
                        settings.topic
                    )));
                }
                return Ok(log);
            }
            _ if Instant::now() >= deadline => {
                return Err(LogError::Unavailable(format!(
                    "topics {} and {} do not show in the brokers' metadata",
                    settings.topic, settings.snapshot_topic
                )));
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
