//! Opening the log backend named by `--backend`: the URL scheme picks the backend.
//!
//! | URL | backend |
//! | --- | --- |
//! | `file:` (default), `file:/path` | the embedded file log, in `<data dir>/log` or the path |
//! | `memory:` | in-process, lost on exit (tests, benchmarks) |
//! | `redis://host:port[/db]`, `rediss://…`, `redis+cluster://…` | Redis Streams (feature `redis`) |
//!
//! A backend compiled out by its cargo feature answers "feature not enabled" rather than failing
//! to link.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::log::Log;
use crate::log::file::{FileLog, FileLogOptions, FsyncPolicy};
use crate::log::memory::MemoryLog;

/// The backends waitroom knows by URL scheme.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendUrl {
    Memory,
    File(PathBuf),
    Redis(String),
}

impl BackendUrl {
    /// Parses `--backend`; `file:` without a path means `<data_dir>/log`.
    pub fn parse(url: &str, data_dir: &Path) -> Result<Self, String> {
        let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("memory") => Ok(BackendUrl::Memory),
            Some("file") => {
                let path = url["file:".len()..].trim_start_matches("//");
                if path.is_empty() {
                    Ok(BackendUrl::File(data_dir.join("log")))
                } else {
                    Ok(BackendUrl::File(PathBuf::from(path)))
                }
            }
            Some("redis" | "rediss" | "redis+cluster" | "rediss+cluster") => {
                Ok(BackendUrl::Redis(url.to_string()))
            }
            Some(other @ ("kafka" | "amqp" | "rabbitmq" | "rabbitmq-stream" | "sqs")) => {
                Err(format!(
                    "the {other} backend is not part of this release yet; use file:, memory: or redis://"
                ))
            }
            _ => Err(format!(
                "unknown backend {url:?}: use file: (default), memory: or redis://host:port"
            )),
        }
    }

    /// Backends a single process owns: the node may generate its own signing key.
    pub fn is_embedded(&self) -> bool {
        matches!(self, BackendUrl::Memory | BackendUrl::File(_))
    }

    /// Without credentials, for logs.
    pub fn describe(&self) -> String {
        match self {
            BackendUrl::Memory => "memory:".into(),
            BackendUrl::File(path) => format!("file:{}", path.display()),
            BackendUrl::Redis(url) => redact(url),
        }
    }
}

/// `scheme://user:password@host` → `scheme://***@host`.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(start), Some(at)) if at > start => format!("{}***{}", &url[..start + 3], &url[at..]),
        _ => url.to_string(),
    }
}

/// How the embedded file log syncs (`--fsync`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fsync {
    Always,
    Interval(Duration),
}

/// Opens the backend.
///
/// # Errors
/// The backend cannot be opened (data dir locked or corrupt, server unreachable, feature off).
pub async fn open(url: &BackendUrl, fsync: Fsync) -> Result<Arc<dyn Log>, String> {
    match url {
        BackendUrl::Memory => Ok(Arc::new(MemoryLog::new())),
        BackendUrl::File(dir) => {
            let options = FileLogOptions {
                fsync: match fsync {
                    Fsync::Always => FsyncPolicy::Always,
                    Fsync::Interval(every) => FsyncPolicy::Interval(every),
                },
                ..FileLogOptions::default()
            };
            let dir = dir.clone();
            let log = tokio::task::spawn_blocking(move || FileLog::open(&dir, options))
                .await
                .map_err(|e| format!("opening the file log failed: {e}"))?
                .map_err(|e| e.to_string())?;
            Ok(Arc::new(log))
        }
        BackendUrl::Redis(url) => open_redis(url).await,
    }
}

#[cfg(feature = "redis")]
async fn open_redis(url: &str) -> Result<Arc<dyn Log>, String> {
    let log = crate::log::redis::RedisLog::connect(url)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(log))
}

#[cfg(not(feature = "redis"))]
async fn open_redis(_url: &str) -> Result<Arc<dyn Log>, String> {
    Err("the redis backend is not enabled in this build (cargo feature `redis`)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let data = Path::new("/data");
        assert_eq!(
            BackendUrl::parse("file:", data),
            Ok(BackendUrl::File("/data/log".into()))
        );
        assert_eq!(
            BackendUrl::parse("file:/x/y", data),
            Ok(BackendUrl::File("/x/y".into()))
        );
        assert_eq!(BackendUrl::parse("memory:", data), Ok(BackendUrl::Memory));
        assert!(matches!(
            BackendUrl::parse("redis://127.0.0.1:6379/0", data),
            Ok(BackendUrl::Redis(_))
        ));
        assert!(
            BackendUrl::parse("kafka://x", data)
                .unwrap_err()
                .contains("not part")
        );
        assert!(BackendUrl::parse("nonsense", data).is_err());
        assert_eq!(
            redact("redis://user:secret@host:1/0"),
            "redis://***@host:1/0"
        );
        assert_eq!(redact("redis://host:1"), "redis://host:1");
    }
}
