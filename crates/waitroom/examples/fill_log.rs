//! Fills a log with the history of a big room, for `bench/snapshots.sh`: a room of `--sessions`
//! waiting sessions that heartbeat, `--records` records in all, written straight through the
//! `Log` trait (as fast as the backend takes them; the HTTP path would take hours for millions).
//!
//! ```text
//! cargo run --release --example fill_log -- --backend 'file:/tmp/d/log?keep-history=7d' \
//!     --room big --sessions 1000000 --records 5000000 --heartbeat-sessions 10
//! ```
//! The history: the room is configured (capacity 1, every timeout a day: nobody expires while
//! the fill runs), every session joins, then heartbeat records name `--heartbeat-sessions`
//! sessions each, round-robin, with a tick every 1 000 records, until `--records` are written.
//! With `--only-heartbeats`, only the heartbeat records (and ticks) are appended, `--records` of
//! them. Prints the records and bytes written, and the time taken.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use clap::Parser;
use waitroom_core::{Command, Record, RecordId, RoomConfig, RoomId, SessionId};
use waitroom_log::{Append, BackendUrl, Log};

/// Records per append call: large batches, as a busy node's group commit makes them.
const BATCH_RECORDS: usize = 1_000;

#[derive(Parser, Debug)]
struct Args {
    /// The backend URL (keep `keep-history` long if a node must replay it all afterwards).
    #[arg(long)]
    backend: String,
    #[arg(long, default_value = "big")]
    room: String,
    #[arg(long, default_value_t = 1_000_000)]
    sessions: u64,
    /// Records in all (at least the configure record and one join per session).
    #[arg(long, default_value_t = 5_000_000)]
    records: u64,
    /// Sessions named by each heartbeat record.
    #[arg(long, default_value_t = 10)]
    heartbeat_sessions: u64,
    /// Append `--records` heartbeat records (and ticks) only, to a room filled before: a tail
    /// of history after the room's last snapshot.
    #[arg(long)]
    only_heartbeats: bool,
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    let room = RoomId::new(args.room.clone()).map_err(|e| e.to_string())?;
    let url = BackendUrl::parse(&args.backend, std::path::Path::new("."))?;
    let log: Arc<dyn Log> = waitroom_log::open(&url).await?;
    let day = 86_400;
    let config = RoomConfig {
        active_idle_timeout_seconds: day,
        max_active_seconds: day,
        waiting_idle_timeout_seconds: day,
        ..RoomConfig::with_capacity(1)
    };
    // Session ids drawn from a fixed key, so runs are comparable; record ids must be unique.
    let session =
        |n: u64| SessionId::from_u128(u128::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1 << 127);
    // Record ids must differ between runs on one log (the room remembers recent ids): each run
    // starts at a random point of the id space.
    let mut next_record = u128::from(rand::random::<u64>()) << 64;
    let mut record = |command: Command| {
        next_record += 1;
        Record::new(RecordId::from_u128(next_record), room.clone(), command)
    };
    let started = Instant::now();
    let mut written = 0u64;
    let mut bytes = 0u64;
    let mut batch: Vec<Append> = Vec::with_capacity(BATCH_RECORDS);
    let mut push =
        async |record: Record, batch: &mut Vec<Append>, force: bool| -> Result<(), String> {
            let payload = Bytes::from(record.encode());
            bytes += payload.len() as u64;
            written += 1;
            batch.push(Append {
                room: Arc::from(room.as_str()),
                payload,
            });
            if force || batch.len() >= BATCH_RECORDS {
                log.append(std::mem::take(batch))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        };
    let mut count = 0;
    if !args.only_heartbeats {
        push(record(Command::ConfigureRoom(config)), &mut batch, true).await?;
        for n in 0..args.sessions {
            let join = record(Command::Join {
                session: session(n),
                idempotency_key: None,
            });
            push(join, &mut batch, false).await?;
        }
        count = 1 + args.sessions;
    }
    let mut next_session = 0u64;
    while count < args.records {
        let command = if count % 1_000 == 0 {
            Command::Tick
        } else {
            let sessions = (0..args.heartbeat_sessions)
                .map(|k| session((next_session + k) % args.sessions.max(1)))
                .collect();
            next_session = (next_session + args.heartbeat_sessions) % args.sessions.max(1);
            Command::Heartbeat { sessions }
        };
        count += 1;
        let last = count >= args.records;
        push(record(command), &mut batch, last).await?;
    }
    if !batch.is_empty() {
        log.append(batch).await.map_err(|e| e.to_string())?;
    }
    println!(
        "fill_log: {written} records, {bytes} payload bytes, in {:.1} s, to {}",
        started.elapsed().as_secs_f64(),
        log.describe()
    );
    Ok(())
}
