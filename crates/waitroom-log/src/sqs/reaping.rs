//! The queues: creating the intake and this node's own queue, the list of node queues every
//! batch is copied to, the liveness tag each node keeps fresh on its queue, reaping the queues of
//! nodes gone longer than `reap-after`, and deleting this node's queue on a clean shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;

use super::clients::{Clients, Request, is_missing_queue, unavailable, wall_clock_ms};
use super::settings::{
    NODE_QUEUE_VISIBILITY, QUEUE_LIST_MARGIN, QUEUE_LIST_REFRESH, SQS_MESSAGE_BYTES_MAX,
};
use super::{Shared, lock};
use crate::LogError;

/// The tag on a node queue holding when its node last showed itself (ms since the epoch).
pub(crate) const SEEN_TAG: &str = "waitroom-seen-ms";

/// SQS keeps messages at most 14 days: the intake keeps a batch that long if no node runs.
const INTAKE_RETENTION_SECONDS: u32 = 14 * 24 * 3600;

/// Creates (or finds) the intake queue; returns its URL.
pub(crate) async fn create_intake(clients: &Clients, name: &str) -> Result<String, LogError> {
    clients.counters.count(Request::SqsQueues);
    let output = clients
        .sqs
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::FifoQueue, "true")
        // The body is the records (or a marker with a random id), unique to each append: the
        // SHA-256 of the body identifies it, so an append retried within SQS's 5-minute
        // deduplication window is not enqueued twice.
        .attributes(QueueAttributeName::ContentBasedDeduplication, "true")
        .attributes(
            QueueAttributeName::MaximumMessageSize,
            SQS_MESSAGE_BYTES_MAX.to_string(),
        )
        .attributes(
            QueueAttributeName::MessageRetentionPeriod,
            INTAKE_RETENTION_SECONDS.to_string(),
        )
        .send()
        .await
        .map_err(|error| unavailable(&format!("creating the intake queue {name}"), &error))?;
    output
        .queue_url
        .ok_or_else(|| LogError::Unavailable("CreateQueue answered without a URL".to_owned()))
}

/// Creates this node's queue, tagged as seen now; returns its URL.
pub(crate) async fn create_node_queue(clients: &Clients, name: &str) -> Result<String, LogError> {
    clients.counters.count(Request::SqsQueues);
    let output = clients
        .sqs
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::FifoQueue, "true")
        .attributes(
            QueueAttributeName::MaximumMessageSize,
            SQS_MESSAGE_BYTES_MAX.to_string(),
        )
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            NODE_QUEUE_VISIBILITY.as_secs().to_string(),
        )
        .tags(SEEN_TAG, wall_clock_ms().to_string())
        .send()
        .await
        .map_err(|error| unavailable(&format!("creating the node queue {name}"), &error))?;
    output
        .queue_url
        .ok_or_else(|| LogError::Unavailable("CreateQueue answered without a URL".to_owned()))
}

/// The node queues, as listed at some moment.
#[derive(Default)]
pub(crate) struct QueueList {
    pub(crate) urls: Arc<Vec<String>>,
    pub(crate) listed_at: Option<Instant>,
}

impl Shared {
    /// Every node queue of this prefix (`ListQueues` by name prefix, all pages).
    pub(crate) async fn list_node_queues(&self) -> Result<Vec<String>, LogError> {
        let clients = &self.store.clients;
        let mut urls = Vec::new();
        let mut token: Option<String> = None;
        loop {
            clients.counters.count(Request::SqsQueues);
            let page = clients
                .sqs
                .list_queues()
                .queue_name_prefix(&self.store.names.node_queue_prefix)
                .max_results(1000)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|error| unavailable("listing the node queues", &error))?;
            urls.extend(
                page.queue_urls()
                    .iter()
                    .filter(|url| url.ends_with(".fifo"))
                    .cloned(),
            );
            match page.next_token() {
                Some(next) => token = Some(next.to_owned()),
                None => return Ok(urls),
            }
        }
    }

    /// The node queues to copy a batch to, listed at most [`QUEUE_LIST_REFRESH`] ago (this
    /// node's own queue always among them).
    pub(crate) async fn node_queues(&self) -> Result<Arc<Vec<String>>, LogError> {
        {
            let list = lock(&self.queues);
            if list
                .listed_at
                .is_some_and(|at| at.elapsed() < QUEUE_LIST_REFRESH)
            {
                return Ok(Arc::clone(&list.urls));
            }
        }
        let listed_at = Instant::now();
        let mut urls = self.list_node_queues().await?;
        if !urls.contains(&self.own_queue_url) {
            urls.push(self.own_queue_url.clone());
        }
        // This node's queue first: the copier is one of the nodes that gets its batch soonest.
        urls.sort_by_key(|url| *url != self.own_queue_url);
        let urls = Arc::new(urls);
        let mut list = lock(&self.queues);
        if list.listed_at.is_none_or(|at| at < listed_at) {
            *list = QueueList {
                urls: Arc::clone(&urls),
                listed_at: Some(listed_at),
            };
        }
        Ok(urls)
    }

    /// Forgets the queue list (a queue in it was gone).
    pub(crate) fn queue_list_stale(&self) {
        lock(&self.queues).listed_at = None;
    }

    /// Marks this node's queue as seen now.
    async fn touch(&self) -> Result<(), LogError> {
        let clients = &self.store.clients;
        clients.counters.count(Request::SqsQueues);
        clients
            .sqs
            .tag_queue()
            .queue_url(&self.own_queue_url)
            .tags(SEEN_TAG, wall_clock_ms().to_string())
            .send()
            .await
            .map(|_| ())
            .map_err(|error| {
                if is_missing_queue(&error) {
                    self.own_queue_gone();
                }
                unavailable("tagging this node's queue", &error)
            })
    }

    /// Deletes the queues of nodes not seen for `reap-after`; returns how many.
    pub(crate) async fn reap(&self) -> Result<usize, LogError> {
        let clients = &self.store.clients;
        let reap_after_ms = self.settings.reap_after.as_millis() as u64;
        let now_ms = wall_clock_ms();
        let mut reaped = 0;
        for url in self.list_node_queues().await? {
            if url == self.own_queue_url {
                continue;
            }
            clients.counters.count(Request::SqsQueues);
            let tags = match clients.sqs.list_queue_tags().queue_url(&url).send().await {
                Ok(tags) => tags,
                Err(error) if is_missing_queue(&error) => continue,
                Err(error) => return Err(unavailable("reading a node queue's tags", &error)),
            };
            let seen_ms = tags
                .tags()
                .and_then(|tags| tags.get(SEEN_TAG))
                .and_then(|seen| seen.parse::<u64>().ok());
            // A queue without the tag was not made by this backend: left alone.
            let Some(seen_ms) = seen_ms else { continue };
            if now_ms.saturating_sub(seen_ms) <= reap_after_ms {
                continue;
            }
            clients.counters.count(Request::SqsQueues);
            match clients.sqs.delete_queue().queue_url(&url).send().await {
                Ok(_) => {
                    tracing::info!(queue = %url, seen_ms, "reaped the queue of a node gone for longer than reap-after");
                    reaped += 1;
                }
                Err(error) if is_missing_queue(&error) => {}
                Err(error) => return Err(unavailable("deleting a node queue", &error)),
            }
        }
        if reaped > 0 {
            self.queue_list_stale();
        }
        Ok(reaped)
    }

    /// This node's queue was deleted under it (reaped while the node was stopped or cut off):
    /// the pump creates it again.
    pub(crate) fn own_queue_gone(&self) {
        self.own_queue_missing
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Creates this node's queue again after it was deleted under it.
    pub(crate) async fn recreate_own_queue(&self) -> Result<(), LogError> {
        let url = create_node_queue(&self.store.clients, &self.own_queue_name).await?;
        if url != self.own_queue_url {
            return Err(LogError::Unavailable(format!(
                "this node's queue came back under another URL ({url})"
            )));
        }
        self.own_queue_missing
            .store(false, std::sync::atomic::Ordering::Release);
        *lock(&self.listed_from) =
            tokio::time::Instant::now() + QUEUE_LIST_REFRESH + QUEUE_LIST_MARGIN;
        self.queue_list_stale();
        Ok(())
    }

    /// Deletes this node's queue (a clean shutdown).
    pub(crate) async fn delete_own_queue(&self) -> Result<(), LogError> {
        let clients = &self.store.clients;
        clients.counters.count(Request::SqsQueues);
        match clients
            .sqs
            .delete_queue()
            .queue_url(&self.own_queue_url)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if is_missing_queue(&error) => Ok(()),
            Err(error) => Err(unavailable("deleting this node's queue", &error)),
        }
    }
}

/// The liveness task: touches this node's queue and reaps the queues of gone nodes, each every
/// quarter of `reap-after`.
pub(crate) async fn run(shared: Arc<Shared>) {
    let every = (shared.settings.reap_after / 4).max(Duration::from_secs(1));
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(error) = shared.touch().await {
            tracing::warn!(log = %shared.description, %error, "could not mark this node's queue as alive");
        }
        if let Err(error) = shared.reap().await {
            tracing::warn!(log = %shared.description, %error, "could not reap the queues of gone nodes");
        }
    }
}
