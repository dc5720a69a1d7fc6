//! Fault injection for crash tests: named points on the steps of taking, storing and trimming a
//! snapshot (and of the SQS backend's copying) where a test can have the process die, exactly
//! like `kill -9` would leave it.
//!
//! Compiled in only with the cargo feature `fault-injection`, which only test builds enable;
//! in every other build [`point`] is an empty inline function. A test sets
//! `WAITROOM_FAULT=<name>` (or `<name>@<n>` to die at the n-th time the point is reached, 1-based)
//! for the process under test; when the point is reached the process prints
//! `waitroom: fault injected at <name>` to stderr and aborts: no destructor runs, no buffer is
//! flushed, nothing is synced, as after a `SIGKILL`.

/// Names of the points, so tests and the code agree on them.
pub mod points {
    /// A room's snapshot is encoded, before it is handed to the store.
    pub const SNAPSHOT_TAKEN: &str = "snapshot.taken";
    /// The file store wrote and synced the temporary file, before renaming it into place.
    pub const SNAPSHOT_FILE_WRITTEN: &str = "snapshot.file.written";
    /// The file store renamed the snapshot into place, before syncing the directory.
    pub const SNAPSHOT_FILE_RENAMED: &str = "snapshot.file.renamed";
    /// The store holds the snapshot, before the node trims.
    pub const SNAPSHOT_STORED: &str = "snapshot.stored";
    /// The file log's trim marker is durable, before any segment is deleted.
    pub const TRIM_MARKED: &str = "trim.marked";
    /// One file-log segment is deleted, before the next one (and before syncing the directory).
    pub const TRIM_SEGMENT_DELETED: &str = "trim.segment.deleted";
    /// The log answered the node's trim.
    pub const TRIM_DONE: &str = "trim.done";

    /// The SQS backend committed a room's batch to S3 and copied it into the first node queue,
    /// before copying it into the others (a copier killed halfway through). Not in [`ALL`]: only
    /// the SQS backend reaches it.
    pub const SQS_COPY_PARTIAL: &str = "sqs.copy.partial";

    /// Every point of the snapshot steps, for tests that visit each.
    pub const ALL: [&str; 7] = [
        SNAPSHOT_TAKEN,
        SNAPSHOT_FILE_WRITTEN,
        SNAPSHOT_FILE_RENAMED,
        SNAPSHOT_STORED,
        TRIM_MARKED,
        TRIM_SEGMENT_DELETED,
        TRIM_DONE,
    ];
}

/// The environment variable naming the point to die at.
pub const FAULT_ENV: &str = "WAITROOM_FAULT";

/// Dies here if `WAITROOM_FAULT` names this point (feature `fault-injection` only).
#[cfg(feature = "fault-injection")]
pub fn point(name: &str) {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);
    let target = TARGET.get_or_init(|| {
        let value = std::env::var(FAULT_ENV).ok()?;
        match value.split_once('@') {
            Some((name, nth)) => Some((name.to_owned(), nth.parse().ok()?)),
            None => Some((value, 1)),
        }
    });
    let Some((target, nth)) = target else {
        return;
    };
    if target != name {
        return;
    }
    if HITS.fetch_add(1, Ordering::SeqCst) + 1 >= *nth {
        eprintln!("waitroom: fault injected at {name}");
        std::process::abort();
    }
}

/// Dies here if `WAITROOM_FAULT` names this point (feature `fault-injection` only).
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn point(_name: &str) {}

/// The environment variable naming a directory where the file log hard-links each segment it
/// is about to delete (feature `fault-injection` only): a crash test rebuilds the whole history
/// from it and checks that a node replaying all of it agrees with one that restored snapshots.
pub const ARCHIVE_ENV: &str = "WAITROOM_FAULT_ARCHIVE_DIR";

/// Keeps a link to `path` in `WAITROOM_FAULT_ARCHIVE_DIR`, if set (feature `fault-injection`).
#[cfg(feature = "fault-injection")]
pub fn archive(path: &std::path::Path) {
    if let (Some(dir), Some(name)) = (std::env::var_os(ARCHIVE_ENV), path.file_name()) {
        let _ = std::fs::hard_link(path, std::path::Path::new(&dir).join(name));
    }
}

/// Keeps a link to `path` in `WAITROOM_FAULT_ARCHIVE_DIR`, if set (feature `fault-injection`).
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn archive(_path: &std::path::Path) {}
