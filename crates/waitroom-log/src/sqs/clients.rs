//! The AWS SDK clients (SQS and S3) of one log, the requests they made (counted by kind, which is
//! what a user pays for), errors, backoff and random numbers.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_sqs::config::Credentials;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::tls;

use super::settings::{
    RECEIVE_WAIT, REQUEST_TIMEOUT, RETRY_DELAY_MAX, RETRY_DELAY_MIN, SQS_BATCH_MESSAGES_MAX,
    SQS_MESSAGE_BYTES_MAX, Settings,
};
use crate::LogError;

/// A random number (std's per-process random hash keys, advanced at every call): enough for
/// marker ids, incarnations and backoff jitter, which need no cryptographic strength.
pub(crate) fn random_u64() -> u64 {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(CALLS.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

/// Milliseconds since the Unix epoch by this machine's clock: the time the stamping node gives
/// a batch (made monotonic per room), and the liveness time of node queues.
pub(crate) fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since_epoch| {
            u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
        })
}

/// Delay before retry `attempt` (0-based): doubling from [`RETRY_DELAY_MIN`] up to
/// [`RETRY_DELAY_MAX`], each drawn in the upper half of its range so nodes spread out.
pub(crate) fn retry_delay(attempt: u32) -> Duration {
    let ceiling = RETRY_DELAY_MIN
        .saturating_mul(1 << attempt.min(16))
        .min(RETRY_DELAY_MAX);
    let half = ceiling / 2;
    let jitter_ms = random_u64() % (half.as_millis() as u64 + 1);
    half + Duration::from_millis(jitter_ms)
}

/// The kinds of requests, as AWS bills them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Request {
    /// Every SQS API call on a FIFO queue (send, receive, delete, list, tag, …) is one request
    /// per 64 KiB of payload.
    SqsSend,
    /// A receive that brought messages.
    SqsReceive,
    /// A receive that brought none (a long poll that timed out, or an empty short poll).
    SqsReceiveEmpty,
    SqsDelete,
    /// Giving received messages back at once (`ChangeMessageVisibilityBatch` to 0) after a
    /// stamping that failed.
    SqsRelease,
    /// Creating, listing, tagging and deleting queues.
    SqsQueues,
    /// S3 `PutObject` and `ListObjectsV2` (tier 1 requests).
    S3Put,
    S3List,
    /// S3 `GetObject` (tier 2).
    S3Get,
    /// S3 `DeleteObject(s)` (free).
    S3Delete,
}

impl Request {
    const ALL: [Request; 10] = [
        Request::SqsSend,
        Request::SqsReceive,
        Request::SqsReceiveEmpty,
        Request::SqsDelete,
        Request::SqsRelease,
        Request::SqsQueues,
        Request::S3Put,
        Request::S3List,
        Request::S3Get,
        Request::S3Delete,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Request::SqsSend => "sqs_send",
            Request::SqsReceive => "sqs_receive",
            Request::SqsReceiveEmpty => "sqs_receive_empty",
            Request::SqsDelete => "sqs_delete",
            Request::SqsRelease => "sqs_release",
            Request::SqsQueues => "sqs_queues",
            Request::S3Put => "s3_put",
            Request::S3List => "s3_list",
            Request::S3Get => "s3_get",
            Request::S3Delete => "s3_delete",
        }
    }
}

/// Requests made, by kind.
#[derive(Default)]
pub(crate) struct Counters([AtomicU64; Request::ALL.len()]);

impl Counters {
    pub(crate) fn count(&self, request: Request) {
        self.0[request as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> BTreeMap<Request, u64> {
        Request::ALL
            .iter()
            .map(|&request| (request, self.0[request as usize].load(Ordering::Relaxed)))
            .collect()
    }
}

/// The clients of one log.
pub(crate) struct Clients {
    pub(crate) sqs: aws_sdk_sqs::Client,
    pub(crate) s3: aws_sdk_s3::Client,
    pub(crate) bucket: String,
    pub(crate) counters: Counters,
}

impl Clients {
    /// Builds the clients: region and credentials from the URL where it gives them, else from
    /// the standard chain (environment, shared config and credentials files, web identity,
    /// container and instance metadata).
    pub(crate) async fn new(settings: &Settings) -> Result<Self, LogError> {
        // rustls with ring: see the dependency's comment in Cargo.toml.
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(REQUEST_TIMEOUT + RECEIVE_WAIT)
                    .build(),
            )
            // The SDK's own retries (3 attempts, with backoff) cover throttling and dropped
            // connections; this backend retries whole steps on top, where it is safe.
            .retry_config(RetryConfig::standard().with_max_attempts(3));
        if let Some(region) = &settings.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(endpoint) = &settings.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some((id, secret)) = &settings.credentials {
            loader = loader.credentials_provider(Credentials::new(
                id.clone(),
                secret.clone(),
                None,
                None,
                "waitroom backend URL",
            ));
        }
        let config = loader.load().await;
        if config.region().is_none() {
            return Err(LogError::Rejected(
                "no AWS region: give region= in the SQS URL or set AWS_REGION".to_owned(),
            ));
        }
        let s3_config = aws_sdk_s3::config::Builder::from(&config)
            // Path-style addressing works with every endpoint (moto, MinIO, VPC endpoints);
            // virtual-hosted style is only needed by buckets with dots on AWS itself.
            .force_path_style(settings.endpoint.is_some())
            .build();
        Ok(Self {
            sqs: aws_sdk_sqs::Client::new(&config),
            s3: aws_sdk_s3::Client::from_conf(s3_config),
            bucket: settings.bucket.clone(),
            counters: Counters::default(),
        })
    }
}

/// An SDK error's code and message (never the request, which may carry data).
pub(crate) fn describe<E: ProvideErrorMetadata + fmt::Debug, R: fmt::Debug>(
    error: &SdkError<E, R>,
) -> String {
    match error {
        SdkError::ServiceError(service) => {
            let inner = service.err();
            match (inner.code(), inner.message()) {
                (Some(code), Some(message)) => format!("{code}: {message}"),
                (Some(code), None) => code.to_owned(),
                _ => format!("{inner:?}"),
            }
        }
        SdkError::TimeoutError(_) => "timed out".to_owned(),
        SdkError::DispatchFailure(failure) => format!("could not send the request: {failure:?}"),
        other => format!("{other:?}"),
    }
}

/// The error code of a service error, if it is one.
pub(crate) fn code<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> Option<&str> {
    match error {
        SdkError::ServiceError(service) => service.err().code(),
        _ => None,
    }
}

/// A failed request as a [`LogError::Unavailable`].
pub(crate) fn unavailable<E: ProvideErrorMetadata + fmt::Debug, R: fmt::Debug>(
    what: &str,
    error: &SdkError<E, R>,
) -> LogError {
    LogError::Unavailable(format!("{what}: {}", describe(error)))
}

/// True for SQS's answer to a queue that does not exist (deleted, or reaped).
pub(crate) fn is_missing_queue<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> bool {
    matches!(
        code(error),
        Some("AWS.SimpleQueueService.NonExistentQueue" | "QueueDoesNotExist")
    )
}

/// A message to send.
pub(crate) struct Outgoing {
    pub(crate) body: String,
    pub(crate) group: String,
    /// Explicit deduplication id (queues without content-based deduplication need one).
    pub(crate) dedup: Option<String>,
}

/// Why sending to a queue failed.
pub(crate) enum SendFailure {
    /// The queue does not exist (any more).
    MissingQueue,
    Other(LogError),
}

impl Clients {
    /// Sends `messages` to `queue_url` in order: `SendMessageBatch` requests of at most 10
    /// messages and [`SQS_MESSAGE_BYTES_MAX`] bytes, one after the other (a FIFO group keeps the
    /// order of one sender's requests). Returns the message ids SQS gave them.
    pub(crate) async fn send(
        &self,
        queue_url: &str,
        messages: &[Outgoing],
    ) -> Result<Vec<String>, SendFailure> {
        use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
        let mut ids = Vec::with_capacity(messages.len());
        let mut start = 0;
        while start < messages.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < messages.len()
                && end - start < SQS_BATCH_MESSAGES_MAX
                && (end == start || bytes + messages[end].body.len() <= SQS_MESSAGE_BYTES_MAX)
            {
                bytes += messages[end].body.len();
                end += 1;
            }
            let entries = messages[start..end]
                .iter()
                .enumerate()
                .map(|(index, message)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(index.to_string())
                        .message_body(&message.body)
                        .message_group_id(&message.group)
                        .set_message_deduplication_id(message.dedup.clone())
                        .build()
                        .map_err(|error| {
                            SendFailure::Other(LogError::Rejected(format!("a message: {error}")))
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            self.counters.count(Request::SqsSend);
            let output = self
                .sqs
                .send_message_batch()
                .queue_url(queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|error| {
                    if is_missing_queue(&error) {
                        SendFailure::MissingQueue
                    } else {
                        SendFailure::Other(unavailable("sending to SQS", &error))
                    }
                })?;
            if let Some(failed) = output.failed().first() {
                return Err(SendFailure::Other(LogError::Unavailable(format!(
                    "SQS refused a message: {}: {}",
                    failed.code(),
                    failed.message().unwrap_or("")
                ))));
            }
            ids.extend(
                output
                    .successful()
                    .iter()
                    .map(|entry| entry.message_id().to_owned()),
            );
            start = end;
        }
        Ok(ids)
    }

    /// Deletes received messages by receipt handle (`DeleteMessageBatch`, 10 per request). A
    /// handle that is stale (the message was received again elsewhere) fails on AWS and
    /// succeeds silently on moto: either way the message is someone else's now, so failures of
    /// single entries are only logged.
    pub(crate) async fn delete_received(
        &self,
        queue_url: &str,
        receipts: &[String],
    ) -> Result<(), LogError> {
        use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
        for chunk in receipts.chunks(SQS_BATCH_MESSAGES_MAX) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(index, receipt)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(index.to_string())
                        .receipt_handle(receipt)
                        .build()
                        .map_err(|error| LogError::Rejected(format!("a delete: {error}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            self.counters.count(Request::SqsDelete);
            let output = self
                .sqs
                .delete_message_batch()
                .queue_url(queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|error| unavailable("deleting SQS messages", &error))?;
            for failed in output.failed() {
                tracing::debug!(
                    code = failed.code(),
                    "SQS did not delete a message (received again elsewhere)"
                );
            }
        }
        Ok(())
    }

    /// Makes received messages visible again at once (their visibility timeout set to 0), so
    /// that they are received again now rather than once the timeout passes.
    pub(crate) async fn release_received(
        &self,
        queue_url: &str,
        receipts: &[String],
    ) -> Result<(), LogError> {
        use aws_sdk_sqs::types::ChangeMessageVisibilityBatchRequestEntry;
        for chunk in receipts.chunks(SQS_BATCH_MESSAGES_MAX) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(index, receipt)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(index.to_string())
                        .receipt_handle(receipt)
                        .visibility_timeout(0)
                        .build()
                        .map_err(|error| LogError::Rejected(format!("a release: {error}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            self.counters.count(Request::SqsRelease);
            let output = self
                .sqs
                .change_message_visibility_batch()
                .queue_url(queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|error| unavailable("releasing SQS messages", &error))?;
            for failed in output.failed() {
                tracing::debug!(
                    code = failed.code(),
                    "SQS did not release a message (its receipt expired: received again elsewhere)"
                );
            }
        }
        Ok(())
    }
}
