//! The data dir: segment files, the lock, and the small helpers that touch the file system.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::settings::LOCK_FILE_NAME;
use crate::LogError;

pub(super) fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.seg"))
}

/// The base position named by a segment file name, or `None` for a file that is no segment.
pub(super) fn segment_base(file_name: &str) -> Option<u64> {
    let digits = file_name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Wraps an I/O error with what was being done to which path.
pub(super) fn io_error<'a>(
    path: &'a Path,
    doing: &'a str,
) -> impl FnOnce(io::Error) -> LogError + 'a {
    move |error| {
        LogError::Io(io::Error::new(
            error.kind(),
            format!("{doing} {}: {error}", path.display()),
        ))
    }
}

pub(super) fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since_epoch| {
            u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
        })
}

pub(super) fn lock_dir(dir: &Path) -> Result<File, LogError> {
    let path = dir.join(LOCK_FILE_NAME);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_error(&path, "open the lock file"))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(LogError::Unavailable(format!(
            "the data dir {} is in use: another process (or another open file log) holds the \
             lock on {}",
            dir.display(),
            path.display()
        ))),
        Err(TryLockError::Error(error)) => Err(io_error(&path, "lock")(error)),
    }
}

/// Makes a new file's directory entry durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(io_error(dir, "fsync the data dir"))
}

pub(super) fn create_segment(dir: &Path, base: u64) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(segment_path(dir, base))
}
