//! Heartbeat batching: heartbeats that arrive within `heartbeat_flush_ms` go into one record per
//! room (at most `HEARTBEAT_BATCH_SESSIONS_MAX` sessions each), and every request waits for its
//! record to be applied.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use waitroom_core::limits::HEARTBEAT_BATCH_SESSIONS_MAX;
use waitroom_core::{Command, RoomId, SessionId};

use super::{Node, WriteError};

use crate::limits::HEARTBEAT_QUEUE_MAX;

type Reply = oneshot::Sender<Result<(), WriteError>>;
type Request = (RoomId, SessionId, Reply);

pub(crate) struct Batcher {
    queue: mpsc::Sender<Request>,
}

impl Batcher {
    pub(crate) fn new() -> (Self, mpsc::Receiver<Request>) {
        let (queue, receiver) = mpsc::channel(HEARTBEAT_QUEUE_MAX);
        (Self { queue }, receiver)
    }

    pub(crate) async fn heartbeat(
        &self,
        room: RoomId,
        session: SessionId,
    ) -> Result<(), WriteError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((room, session, reply))
            .await
            .map_err(|_| WriteError::Unavailable("the node is shutting down".into()))?;
        answer
            .await
            .map_err(|_| WriteError::Unavailable("the node is shutting down".into()))?
    }
}

pub(crate) async fn run(node: Arc<Node>, mut queue: mpsc::Receiver<Request>) {
    let window = Duration::from_millis(node.options.heartbeat_flush_ms);
    while let Some(first) = queue.recv().await {
        let mut by_room: BTreeMap<RoomId, Vec<(SessionId, Reply)>> = BTreeMap::new();
        let mut add = |(room, session, reply): Request| {
            by_room.entry(room).or_default().push((session, reply))
        };
        add(first);
        let deadline = tokio::time::Instant::now() + window;
        let mut queued = 1;
        while queued < HEARTBEAT_QUEUE_MAX {
            match tokio::time::timeout_at(deadline, queue.recv()).await {
                Ok(Some(request)) => {
                    add(request);
                    queued += 1;
                }
                _ => break,
            }
        }
        for (room, requests) in by_room {
            let mut requests = requests.into_iter().peekable();
            while requests.peek().is_some() {
                let chunk: Vec<(SessionId, Reply)> = requests
                    .by_ref()
                    .take(HEARTBEAT_BATCH_SESSIONS_MAX)
                    .collect();
                let node = node.clone();
                let room = room.clone();
                // Each record is written on its own task so one slow room does not hold up the
                // next window.
                tokio::spawn(async move {
                    let mut sessions: Vec<SessionId> = chunk.iter().map(|(s, _)| *s).collect();
                    sessions.sort_unstable();
                    sessions.dedup();
                    let result = node.write(&room, Command::Heartbeat { sessions }).await;
                    for (_, reply) in chunk {
                        let _ = reply.send(match &result {
                            Ok(_) => Ok(()),
                            Err(WriteError::Unavailable(why)) => {
                                Err(WriteError::Unavailable(why.clone()))
                            }
                            Err(WriteError::NotApplied) => Err(WriteError::NotApplied),
                            Err(WriteError::Overloaded) => Err(WriteError::Overloaded),
                        });
                    }
                });
            }
        }
    }
}
