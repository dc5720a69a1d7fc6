//! `waitroom log dump`: a room's records as JSON lines, from the start of what the log holds —
//! the audit trail, and what an operator replays to answer "why was I not admitted?".
//!
//! It works on every backend through the [`Log`] trait: it subscribes from the beginning of
//! every shard, reads until the subscription says it has caught up, and prints each record of
//! the room, in log order, as one line:
//!
//! ```json
//! {"shard":"file","position":"4096","time":"2026-11-28T19:00:00.123Z","timeMs":1795892400123,"record":"9f…","command":"join","session":"wr_…"}
//! ```
//!
//! `position` is a string (positions are 128-bit); `time` is the log's time of the record (see
//! each backend's documentation); `record` is the record's id. By command: `join` adds
//! `session` and `idempotencyKey` (or null); `heartbeat` adds `sessions`; `leave` adds `session`
//! and `reason` (`left`, `completed`); `evict` adds `session`; `configure_room` adds `config`;
//! `configure_room_from_file` adds `config` and `fileEntryDigest` (either also `queueingMethod`,
//! `challengeDifficultyBits` and `events` when the record carries them); `close_room` and `tick`
//! add nothing. Sessions are shown as clients see them (`wr_…`). The secret seed of the pre-queue
//! draw that configuration records carry is left out: a dump taken (and passed around) before
//! the opening must not let anyone compute the draw.
//!
//! Where history was trimmed (snapshots let the log drop what every room's snapshot holds), the
//! dump says so where the gap is, with a line `{"shard":…,"trimmedThrough":"<position>"}`: the
//! records of the shard up to that position are gone (keep them longer with the backend's
//! `keep-history` option). The file log is locked by the node that runs on it: dump a copy of
//! its directory, or stop the node.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use waitroom_core::{Command, LeaveReason, Record, RoomId};
use waitroom_log::{BackendUrl, Checkpoint, Entry, Event};

use crate::ids::PublicSessionId;
use crate::server::defaults;

/// Longest the dump waits for the next event of the log (a backend that went away, or a shard
/// that cannot be read); reading a long history is bounded by progress, not by a total time.
pub const DUMP_IDLE_WAIT: Duration = Duration::from_secs(60);

/// `waitroom log dump`'s flags.
#[derive(clap::Args, Debug)]
pub struct DumpArgs {
    /// The log backend, as for `waitroom serve --backend` (file:, redis://…, kafka://…).
    #[arg(long, env = "WAITROOM_BACKEND", default_value = defaults::BACKEND)]
    pub backend: String,
    /// The data dir, where `file:` without a path finds the log.
    #[arg(long, env = "WAITROOM_DATA_DIR", default_value = defaults::DATA_DIR)]
    pub data_dir: PathBuf,
    /// The room whose records to print.
    #[arg(long)]
    pub room: String,
    /// Only records at or after this time (RFC 3339, e.g. 2026-11-28T19:00:00Z).
    #[arg(long)]
    pub from: Option<jiff::Timestamp>,
    /// Only records at or before this time (RFC 3339).
    #[arg(long)]
    pub to: Option<jiff::Timestamp>,
}

/// What a dump went through.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DumpSummary {
    /// Records of the room printed.
    pub printed: u64,
    /// Records read, of every room.
    pub read: u64,
    /// Entries that are not records this build can decode (skipped).
    pub undecodable: u64,
    /// Gaps where history was trimmed.
    pub trimmed: u64,
}

/// Prints the room's records to `out` (see the module documentation); a summary goes to the
/// caller.
///
/// # Errors
/// A bad room id, backend URL or time range; the backend cannot be opened or read; writing to
/// `out` failed.
pub async fn dump(args: &DumpArgs, out: &mut impl Write) -> Result<DumpSummary, String> {
    let room = RoomId::new(args.room.as_str()).map_err(|e| format!("--room: {e}"))?;
    let from_ms = args.from.map(timestamp_ms).transpose()?;
    let to_ms = args.to.map(timestamp_ms).transpose()?;
    if let (Some(from), Some(to)) = (from_ms, to_ms)
        && from > to
    {
        return Err("--from is after --to".to_owned());
    }
    let url = BackendUrl::parse(&args.backend, &args.data_dir)?;
    let log = waitroom_log::open(&url).await?;
    let mut events = log
        .subscribe(Checkpoint::start())
        .await
        .map_err(|e| format!("reading {}: {e}", log.describe()))?;
    let mut summary = DumpSummary::default();
    let write_error = |e: std::io::Error| format!("writing the dump: {e}");
    loop {
        let event = match tokio::time::timeout(DUMP_IDLE_WAIT, events.next()).await {
            Err(_) => {
                return Err(format!(
                    "{} delivered nothing for {DUMP_IDLE_WAIT:?}",
                    log.describe()
                ));
            }
            Ok(None) => return Err(format!("reading {} ended early", log.describe())),
            Ok(Some(Err(e))) => return Err(format!("reading {}: {e}", log.describe())),
            Ok(Some(Ok(event))) => event,
        };
        match event {
            Event::Entries(entries) => {
                for entry in entries {
                    summary.read += 1;
                    let record = match Record::decode(&entry.payload) {
                        Ok(record) => record,
                        Err(_) => {
                            summary.undecodable += 1;
                            continue;
                        }
                    };
                    if record.room != room
                        || from_ms.is_some_and(|from| entry.timestamp_ms < from)
                        || to_ms.is_some_and(|to| entry.timestamp_ms > to)
                    {
                        continue;
                    }
                    let line = record_line(&entry, &record);
                    writeln!(out, "{line}").map_err(write_error)?;
                    summary.printed += 1;
                }
            }
            Event::Trimmed { shard, through } => {
                summary.trimmed += 1;
                let line = json!({
                    "shard": shard.to_string(),
                    "trimmedThrough": through.0.to_string(),
                });
                writeln!(out, "{line}").map_err(write_error)?;
            }
            Event::Unavailable(why) => {
                tracing::warn!("{} is unavailable, retrying: {why}", log.describe());
            }
            Event::Regressed { shards } => {
                // What follows is each shard as the backend holds it now; say where it went back.
                for (shard, last) in shards {
                    let line = json!({
                        "shard": shard.to_string(),
                        "wentBackTo": last.map(|last| last.0.to_string()),
                    });
                    writeln!(out, "{line}").map_err(write_error)?;
                }
            }
            Event::CaughtUp => break,
        }
    }
    out.flush().map_err(write_error)?;
    Ok(summary)
}

/// `waitroom log dump`: prints to stdout, the summary to stderr.
///
/// # Errors
/// As [`dump`].
pub async fn run(args: DumpArgs) -> Result<(), String> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let summary = dump(&args, &mut out).await?;
    eprintln!(
        "{} records of room {} ({} records read, {} undecodable, {} trimmed gaps)",
        summary.printed, args.room, summary.read, summary.undecodable, summary.trimmed
    );
    Ok(())
}

fn timestamp_ms(at: jiff::Timestamp) -> Result<u64, String> {
    u64::try_from(at.as_millisecond()).map_err(|_| format!("{at} is before 1970"))
}

fn session_text(room: &RoomId, session: waitroom_core::SessionId) -> String {
    PublicSessionId::new(room, session).to_text()
}

/// One record as a JSON line (see the module documentation).
pub fn record_line(entry: &Entry, record: &Record) -> Value {
    let time = i64::try_from(entry.timestamp_ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(String::new, |at| format!("{at:.3}"));
    let record_id: String = record.id.0.iter().map(|b| format!("{b:02x}")).collect();
    let mut line = json!({
        "shard": entry.shard.to_string(),
        "position": entry.position.0.to_string(),
        "time": time,
        "timeMs": entry.timestamp_ms,
        "record": record_id,
        "command": record.command.kind(),
    });
    let room = &record.room;
    let details = match &record.command {
        Command::Join {
            session,
            idempotency_key,
        } => json!({
            "session": session_text(room, *session),
            "idempotencyKey": idempotency_key.as_ref().map(|key| key.as_str()),
        }),
        Command::Heartbeat { sessions } => json!({
            "sessions": sessions.iter().map(|s| session_text(room, *s)).collect::<Vec<_>>(),
        }),
        Command::Leave { session, reason } => json!({
            "session": session_text(room, *session),
            "reason": match reason {
                LeaveReason::Left => "left",
                LeaveReason::Completed => "completed",
            },
        }),
        Command::Evict { session } => json!({ "session": session_text(room, *session) }),
        // Pass hashes are shown by count only: they identify passes, and say nothing useful.
        Command::JoinWithPass {
            session,
            idempotency_key,
            ..
        } => json!({
            "session": session_text(room, *session),
            "idempotencyKey": idempotency_key.as_ref().map(|key| key.as_str()),
            "pass": true,
        }),
        Command::IssuePasses {
            passes,
            expires_at_ms,
        } => json!({ "passes": passes.len(), "expiresAtMs": expires_at_ms }),
        // The draw seed, secret, is left out (see the module documentation).
        Command::ConfigureRoom(config) | Command::ConfigureRoomSeeded { config, .. } => {
            json!({ "config": config })
        }
        Command::ConfigureRoomFromFile {
            config,
            file_entry_digest,
        }
        | Command::ConfigureRoomFromFileSeeded {
            config,
            file_entry_digest,
            ..
        } => json!({
            "config": config,
            "fileEntryDigest": file_entry_digest.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        }),
        Command::ConfigureRoomQueued {
            config,
            queueing_method,
            ..
        } => json!({ "config": config, "queueingMethod": queueing_method.as_str() }),
        Command::ConfigureRoomFromFileQueued {
            config,
            file_entry_digest,
            queueing_method,
            ..
        } => json!({
            "config": config,
            "queueingMethod": queueing_method.as_str(),
            "fileEntryDigest": file_entry_digest.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        }),
        Command::ConfigureRoomChallenged {
            config,
            queueing_method,
            challenge_difficulty_bits,
            ..
        } => json!({
            "config": config,
            "queueingMethod": queueing_method.as_str(),
            "challengeDifficultyBits": challenge_difficulty_bits,
        }),
        Command::ConfigureRoomFromFileChallenged {
            config,
            file_entry_digest,
            queueing_method,
            challenge_difficulty_bits,
            ..
        } => json!({
            "config": config,
            "queueingMethod": queueing_method.as_str(),
            "challengeDifficultyBits": challenge_difficulty_bits,
            "fileEntryDigest": file_entry_digest.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        }),
        Command::ConfigureRoomScheduled {
            config,
            queueing_method,
            challenge_difficulty_bits,
            events,
            ..
        } => json!({
            "config": config,
            "queueingMethod": queueing_method.as_str(),
            "challengeDifficultyBits": challenge_difficulty_bits,
            "events": events,
        }),
        Command::ConfigureRoomFromFileScheduled {
            config,
            file_entry_digest,
            queueing_method,
            challenge_difficulty_bits,
            events,
            ..
        } => json!({
            "config": config,
            "queueingMethod": queueing_method.as_str(),
            "challengeDifficultyBits": challenge_difficulty_bits,
            "events": events,
            "fileEntryDigest": file_entry_digest.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        }),
        Command::CheckDigest {
            every_ms,
            interval,
            digest,
        } => json!({
            "everyMs": every_ms,
            "interval": interval,
            "digest": digest.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        }),
        Command::CloseRoom | Command::Tick => json!({}),
    };
    if let (Value::Object(line), Value::Object(details)) = (&mut line, details) {
        line.extend(details);
    }
    line
}

#[cfg(test)]
mod tests {
    use waitroom_core::{DrawSeed, RecordId, RoomConfig, RoomEvent};
    use waitroom_log::{Position, ShardId};

    use super::*;

    /// A configuration with scheduled events shows them (and never the seed).
    #[test]
    fn a_scheduled_configuration_shows_its_events() {
        let config = RoomConfig {
            events: vec![RoomEvent {
                capacity: Some(9),
                ..RoomEvent::new("drop", 1_000, 2_000)
            }],
            ..RoomConfig::with_capacity(2)
        };
        let seed = 0x1234_5678_9abc_def0;
        let record = Record::new(
            RecordId::from_u128(1),
            RoomId::new("r").unwrap(),
            Command::configure(config, DrawSeed::from_u64(seed)),
        );
        let entry = Entry {
            shard: ShardId::new("file"),
            position: Position(7),
            timestamp_ms: 500,
            payload: record.encode().into(),
        };
        let line = record_line(&entry, &record);
        assert_eq!(line["command"], "configure_room");
        assert_eq!(line["events"][0]["name"], "drop");
        assert_eq!(line["events"][0]["capacity"], 9);
        assert_eq!(line["queueingMethod"], "fifo");
        assert!(!line.to_string().contains(&seed.to_string()), "{line}");
    }
}
