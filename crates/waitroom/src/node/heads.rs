//! Reading the log's head for catch-up waits, shared.
//!
//! A read of an id this node does not know (a session created a moment ago through another
//! node, or an id that never existed) must wait until the node has applied everything appended
//! before the read arrived: the head of the log, as of after the read arrived. Asking the
//! backend for it once per such read would let a flood of made-up ids become a flood on the
//! backend (on Redis: a registry read plus one stream read per room, each). So one task asks, at
//! most one request at a time and at most one every [`HEAD_READ_INTERVAL_MIN`], and every read
//! that arrived before a request was sent shares its answer: the backend sees at most
//! `1 / HEAD_READ_INTERVAL_MIN` head reads per second from a node, whatever arrives.

use std::sync::Arc;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use waitroom_log::{Checkpoint, Log};

pub use crate::limits::HEAD_READ_INTERVAL_MIN;
use crate::metrics::Metrics;

/// One answer: when its request was sent, and the head (or why there is none).
type Answer = Option<(Instant, Result<Checkpoint, String>)>;

pub(crate) struct HeadReader {
    answers: watch::Sender<Answer>,
    wanted: Notify,
}

impl HeadReader {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            answers: watch::Sender::new(None),
            wanted: Notify::new(),
        })
    }

    /// The head as of a request sent at or after `arrived`.
    ///
    /// # Errors
    /// The backend failed the request (its message).
    pub(crate) async fn head_since(&self, arrived: Instant) -> Result<Checkpoint, String> {
        let mut answers = self.answers.subscribe();
        loop {
            if let Some((sent, result)) = &*answers.borrow_and_update()
                && *sent >= arrived
            {
                return result.clone();
            }
            // Stored as a permit if the task is busy: requests that pile up while one is in
            // flight become one more request.
            self.wanted.notify_one();
            if answers.changed().await.is_err() {
                return Err("the node is shutting down".to_owned());
            }
        }
    }

    /// The task that sends the requests; ends with the node's tasks.
    pub(crate) async fn run(self: Arc<Self>, log: Arc<dyn Log>, metrics: Arc<Metrics>) {
        let mut last_sent: Option<Instant> = None;
        loop {
            self.wanted.notified().await;
            if let Some(last) = last_sent {
                tokio::time::sleep_until(last + HEAD_READ_INTERVAL_MIN).await;
            }
            let sent = Instant::now();
            last_sent = Some(sent);
            metrics.log_head_reads_total.inc();
            let result = log.head().await.map_err(|e| e.to_string());
            self.answers.send_replace(Some((sent, result)));
        }
    }
}
