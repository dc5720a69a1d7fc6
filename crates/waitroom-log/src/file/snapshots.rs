//! The file log's snapshot store: one file per room under `<log dir>/snapshots/`, and the trim
//! marker beside them.
//!
//! # Files
//! - `r-<room>.snap`: the newest snapshot of `<room>` (room names are `[A-Za-z0-9._-]`, at most
//!   [`SNAPSHOT_ROOM_NAME_BYTES_MAX`] bytes): `"WRLS" | version: u8 = 1 | room length: u16 LE |
//!   room | position: u64 LE | bytes length: u64 LE | bytes | CRC32C: u32 LE`, the CRC covering
//!   everything before it. No bytes: a tombstone (see `Log::forget_room`).
//! - `TRIMMED`: `"WRLT" | version: u8 = 1 | position: u64 LE | CRC32C: u32 LE`, the newest
//!   position given to `trim`.
//!
//! # Writing
//! A file is written whole to `<name>.tmp`, fsynced, renamed over `<name>`, and the directory is
//! fsynced: a crash at any step leaves either the old file or the new one, never a torn one, and
//! a leftover `.tmp` is deleted on open. Writes are serialized by one lock, so "keep only if newer"
//! is decided and carried out as one step. The headers of every snapshot are read on open (the
//! store answers `list_snapshots` from memory); a snapshot's CRC is checked when it is loaded.
//! Damage found on open or on load is [`LogError::Corrupt`]: a snapshot is the only copy of the
//! history trimmed below it, so it is never dropped silently.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;

use super::segments::{io_error, sync_dir};
use super::settings::SNAPSHOT_ROOM_NAME_BYTES_MAX;
use crate::fault::{self, points};
use crate::limits::SNAPSHOT_BYTES_MAX;
use crate::{LogError, Position, ShardId, Snapshot, SnapshotInfo};

const SNAPSHOT_MAGIC: &[u8; 4] = b"WRLS";
const TRIMMED_MAGIC: &[u8; 4] = b"WRLT";
const VERSION: u8 = 1;
const FILE_PREFIX: &str = "r-";
const FILE_SUFFIX: &str = ".snap";
const TEMPORARY_SUFFIX: &str = ".tmp";
const TRIMMED_FILE: &str = "TRIMMED";
/// Magic, version, room length.
const HEADER_FIXED_BYTES: usize = 4 + 1 + 2;
/// Position and bytes length, after the room.
const HEADER_TAIL_BYTES: usize = 8 + 8;
const CRC_BYTES: usize = 4;

/// Snapshots of one file log.
pub(super) struct SnapshotStore {
    dir: PathBuf,
    shard: ShardId,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    held: HashMap<Arc<str>, SnapshotInfo>,
    trimmed: Option<u64>,
}

fn check_room(room: &str) -> Result<(), LogError> {
    let valid = !room.is_empty()
        && room.len() <= SNAPSHOT_ROOM_NAME_BYTES_MAX
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(LogError::Rejected(format!(
            "the file log stores snapshots of rooms named with 1 to {SNAPSHOT_ROOM_NAME_BYTES_MAX} \
             of A-Z a-z 0-9 . _ -, not a room of {} bytes like this one",
            room.len()
        )))
    }
}

fn position_u64(position: Position) -> Result<u64, LogError> {
    u64::try_from(position.0).map_err(|_| {
        LogError::Rejected(format!(
            "position {} is no position of a file log (byte offsets fit 64 bits)",
            position.0
        ))
    })
}

impl SnapshotStore {
    /// Opens (creating) the store in `dir`: deletes leftover temporary files and reads the
    /// header of every snapshot.
    pub(super) fn open(dir: &Path, shard: ShardId) -> Result<Self, LogError> {
        fs::create_dir_all(dir).map_err(io_error(dir, "create the snapshot dir"))?;
        let mut state = State::default();
        let mut removed_temporary = false;
        for dir_entry in fs::read_dir(dir).map_err(io_error(dir, "list the snapshot dir"))? {
            let dir_entry = dir_entry.map_err(io_error(dir, "list the snapshot dir"))?;
            let path = dir_entry.path();
            let Some(name) = dir_entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if name.ends_with(TEMPORARY_SUFFIX) {
                // A write that a crash interrupted before its rename: the old file stands.
                fs::remove_file(&path).map_err(io_error(&path, "remove"))?;
                removed_temporary = true;
            } else if name == TRIMMED_FILE {
                state.trimmed = Some(read_trimmed(&path)?);
            } else if name.starts_with(FILE_PREFIX) && name.ends_with(FILE_SUFFIX) {
                let (info, _) = read_snapshot(&path, &shard, false)?;
                let expected = file_name(&info.room);
                if name != expected {
                    return Err(LogError::Corrupt(format!(
                        "snapshot file {} holds room {:?}, whose file is {expected}",
                        path.display(),
                        info.room
                    )));
                }
                state.held.insert(Arc::clone(&info.room), info);
            }
        }
        if removed_temporary {
            sync_dir(dir)?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            shard,
            state: Mutex::new(state),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The map mirrors the files; every change to it follows a completed file operation, so
        // it is consistent whatever a panicking holder was doing.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores `snapshot` unless one at the same or a later position is held (`tombstone`: unless
    /// one at a later position is held, so a tombstone replaces a snapshot at its own position).
    pub(super) fn store(&self, snapshot: &Snapshot, tombstone: bool) -> Result<bool, LogError> {
        check_room(&snapshot.room)?;
        if snapshot.shard != self.shard {
            return Err(LogError::Rejected(format!(
                "the file log has one shard, {}, not {}",
                self.shard, snapshot.shard
            )));
        }
        let position = position_u64(snapshot.position)?;
        let mut state = self.lock();
        if let Some(held) = state.held.get(&snapshot.room) {
            let newer = if tombstone {
                held.position > snapshot.position
            } else {
                held.position >= snapshot.position
            };
            if newer {
                return Ok(false);
            }
        }
        let path = self.dir.join(file_name(&snapshot.room));
        let mut contents = Vec::with_capacity(
            HEADER_FIXED_BYTES
                + snapshot.room.len()
                + HEADER_TAIL_BYTES
                + snapshot.bytes.len()
                + CRC_BYTES,
        );
        contents.extend_from_slice(SNAPSHOT_MAGIC);
        contents.push(VERSION);
        // The room name is checked to be at most SNAPSHOT_ROOM_NAME_BYTES_MAX (< 2^16) bytes.
        contents.extend_from_slice(&(snapshot.room.len() as u16).to_le_bytes());
        contents.extend_from_slice(snapshot.room.as_bytes());
        contents.extend_from_slice(&position.to_le_bytes());
        contents.extend_from_slice(&(snapshot.bytes.len() as u64).to_le_bytes());
        contents.extend_from_slice(&snapshot.bytes);
        let crc = crc32c::crc32c(&contents);
        contents.extend_from_slice(&crc.to_le_bytes());
        write_atomically(&self.dir, &path, &contents)?;
        state
            .held
            .insert(Arc::clone(&snapshot.room), snapshot.info());
        Ok(true)
    }

    /// The newest snapshot of `room`, its CRC checked.
    pub(super) fn load(&self, room: &str) -> Result<Option<Snapshot>, LogError> {
        if check_room(room).is_err() {
            return Ok(None);
        }
        // Held while reading, so a concurrent store cannot replace the file under the read.
        let state = self.lock();
        let Some(held) = state.held.get(room) else {
            return Ok(None);
        };
        let path = self.dir.join(file_name(room));
        let (info, bytes) = read_snapshot(&path, &self.shard, true)?;
        if info != *held {
            return Err(LogError::Corrupt(format!(
                "snapshot file {} changed under the file log",
                path.display()
            )));
        }
        Ok(Some(Snapshot {
            room: info.room,
            shard: info.shard,
            position: info.position,
            bytes: bytes.unwrap_or_default(),
        }))
    }

    pub(super) fn info(&self, room: &str) -> Option<SnapshotInfo> {
        self.lock().held.get(room).cloned()
    }

    pub(super) fn list(&self) -> Vec<SnapshotInfo> {
        self.lock().held.values().cloned().collect()
    }

    pub(super) fn trimmed(&self) -> Option<u64> {
        self.lock().trimmed
    }

    /// Makes `through` the trim marker (durably) if it is newer than the one held, and deletes
    /// the tombstones at or before the marker. Returns the marker.
    pub(super) fn mark_trimmed(&self, through: u64) -> Result<u64, LogError> {
        let mut state = self.lock();
        if state.trimmed.is_none_or(|held| held < through) {
            let mut contents = Vec::with_capacity(4 + 1 + 8 + CRC_BYTES);
            contents.extend_from_slice(TRIMMED_MAGIC);
            contents.push(VERSION);
            contents.extend_from_slice(&through.to_le_bytes());
            let crc = crc32c::crc32c(&contents);
            contents.extend_from_slice(&crc.to_le_bytes());
            write_atomically(&self.dir, &self.dir.join(TRIMMED_FILE), &contents)?;
            state.trimmed = Some(through);
        }
        let marker = state.trimmed.unwrap_or(through);
        let dead: Vec<Arc<str>> = state
            .held
            .values()
            .filter(|info| info.bytes == 0 && info.position.0 <= u128::from(marker))
            .map(|info| Arc::clone(&info.room))
            .collect();
        for room in &dead {
            let path = self.dir.join(file_name(room));
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(io_error(&path, "remove")(error)),
            }
            state.held.remove(room);
        }
        if !dead.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok(marker)
    }
}

fn file_name(room: &str) -> String {
    format!("{FILE_PREFIX}{room}{FILE_SUFFIX}")
}

/// Writes `contents` to `path` so that a crash leaves the old file or the new one: a temporary
/// file written and fsynced, renamed over `path`, then the directory fsynced.
fn write_atomically(dir: &Path, path: &Path, contents: &[u8]) -> Result<(), LogError> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(TEMPORARY_SUFFIX);
    let temporary = PathBuf::from(temporary);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temporary)
        .map_err(io_error(&temporary, "create"))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(io_error(&temporary, "write"))?;
    drop(file);
    fault::point(points::SNAPSHOT_FILE_WRITTEN);
    fs::rename(&temporary, path).map_err(io_error(path, "rename into place"))?;
    fault::point(points::SNAPSHOT_FILE_RENAMED);
    sync_dir(dir)
}

fn corrupt(path: &Path, problem: impl std::fmt::Display) -> LogError {
    LogError::Corrupt(format!("snapshot file {}: {problem}", path.display()))
}

/// Reads a snapshot file's header (and, with `with_bytes`, its bytes, checking the CRC).
fn read_snapshot(
    path: &Path,
    shard: &ShardId,
    with_bytes: bool,
) -> Result<(SnapshotInfo, Option<Bytes>), LogError> {
    let mut file = File::open(path).map_err(io_error(path, "open"))?;
    let file_bytes = file
        .metadata()
        .map_err(io_error(path, "read the size of"))?
        .len();
    let mut fixed = [0_u8; HEADER_FIXED_BYTES];
    file.read_exact(&mut fixed)
        .map_err(|_| corrupt(path, "cut short in its header"))?;
    if &fixed[..4] != SNAPSHOT_MAGIC {
        return Err(corrupt(path, "not a snapshot (bad magic bytes)"));
    }
    if fixed[4] != VERSION {
        return Err(corrupt(
            path,
            format!("format version {} is not supported by this build", fixed[4]),
        ));
    }
    let room_bytes = usize::from(u16::from_le_bytes([fixed[5], fixed[6]]));
    if room_bytes > SNAPSHOT_ROOM_NAME_BYTES_MAX {
        return Err(corrupt(path, "room name too long"));
    }
    let mut rest = vec![0_u8; room_bytes + HEADER_TAIL_BYTES];
    file.read_exact(&mut rest)
        .map_err(|_| corrupt(path, "cut short in its header"))?;
    let room = std::str::from_utf8(&rest[..room_bytes])
        .ok()
        .filter(|room| check_room(room).is_ok())
        .ok_or_else(|| corrupt(path, "bad room name"))?;
    let tail = &rest[room_bytes..];
    let position = u64::from_le_bytes(tail[..8].try_into().expect("8 bytes"));
    let bytes = u64::from_le_bytes(tail[8..16].try_into().expect("8 bytes"));
    if bytes > SNAPSHOT_BYTES_MAX as u64 {
        return Err(corrupt(path, "declares more than SNAPSHOT_BYTES_MAX bytes"));
    }
    let header_bytes = (HEADER_FIXED_BYTES + room_bytes + HEADER_TAIL_BYTES) as u64;
    if file_bytes != header_bytes + bytes + CRC_BYTES as u64 {
        return Err(corrupt(
            path,
            format!(
                "{file_bytes} bytes long where its header says {}",
                header_bytes + bytes + 4
            ),
        ));
    }
    let info = SnapshotInfo {
        room: room.into(),
        shard: shard.clone(),
        position: Position(position.into()),
        bytes,
    };
    if !with_bytes {
        return Ok((info, None));
    }
    let mut body = vec![0_u8; bytes as usize + CRC_BYTES];
    file.read_exact(&mut body).map_err(io_error(path, "read"))?;
    let crc_at = body.len() - CRC_BYTES;
    let stored_crc = u32::from_le_bytes(body[crc_at..].try_into().expect("4 bytes"));
    let crc = crc32c::crc32c_append(
        crc32c::crc32c_append(crc32c::crc32c(&fixed), &rest),
        &body[..crc_at],
    );
    if crc != stored_crc {
        return Err(corrupt(path, "fails its CRC"));
    }
    body.truncate(crc_at);
    Ok((info, Some(Bytes::from(body))))
}

fn read_trimmed(path: &Path) -> Result<u64, LogError> {
    let contents = fs::read(path).map_err(io_error(path, "read"))?;
    let valid = contents.len() == 4 + 1 + 8 + CRC_BYTES
        && &contents[..4] == TRIMMED_MAGIC
        && contents[4] == VERSION
        && crc32c::crc32c(&contents[..13]).to_le_bytes() == contents[13..];
    if !valid {
        return Err(LogError::Corrupt(format!(
            "the trim marker {} is damaged",
            path.display()
        )));
    }
    Ok(u64::from_le_bytes(
        contents[5..13].try_into().expect("8 bytes"),
    ))
}
