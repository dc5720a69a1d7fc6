//! Opening the log backend named by a URL (`waitroom serve --backend`): the scheme picks the
//! backend, the query string carries its options (see `options`).
//!
//! | URL | backend |
//! | --- | --- |
//! | `file:` (default), `file:/path`, `file:?fsync=always` | the embedded file log, in `<data dir>/log` or the path (feature `file`) |
//! | `memory:` | in-process, lost on exit: tests, benchmarks (feature `memory`) |
//! | `redis://host:port[/db]`, `rediss://…`, `redis+cluster://…` | Redis Streams (feature `redis`) |
//! | `kafka://host:port[,host:port…]?topic=…&<client property>=…` | Kafka (feature `kafka`) |
//! | `sqs://?bucket=…&region=…[&endpoint=…&prefix=…]` | AWS SQS with S3 (feature `sqs`) |
//! | `rabbitmq-stream://user:password@host:port/vhost` | RabbitMQ streams (feature `rabbitmq`) |
//!
//! Every backend takes `keep-history=<duration>` (e.g. `24h`): trimmed history is kept that long
//! for audit. A backend compiled out by its cargo feature answers "feature not enabled" rather
//! than failing to link.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::Log;

/// A backend URL, parsed enough to know which backend it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendUrl {
    /// `memory:[?options]`.
    Memory { query: String },
    /// `file:[path][?options]`; the path defaults to `<data dir>/log`.
    File { dir: PathBuf, query: String },
    /// The whole URL (`redis://`, `rediss://`, `redis+cluster://`, `rediss+cluster://`).
    Redis(String),
    /// The whole URL (`kafka://`).
    Kafka(String),
    /// The whole URL (`sqs://`).
    Sqs(String),
    /// The whole URL (`rabbitmq-stream://`).
    RabbitMq(String),
}

impl BackendUrl {
    /// Parses a backend URL; `file:` without a path means `<data_dir>/log`.
    ///
    /// # Errors
    /// An unknown scheme, or one whose backend is not part of this release.
    pub fn parse(url: &str, data_dir: &Path) -> Result<Self, String> {
        let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
        let query_of = |rest: &str| -> (String, String) {
            match rest.split_once('?') {
                Some((path, query)) => (path.to_owned(), query.to_owned()),
                None => (rest.to_owned(), String::new()),
            }
        };
        match scheme.as_deref() {
            Some("memory") => {
                let (path, query) = query_of(&url["memory:".len()..]);
                if !path.is_empty() {
                    return Err("a memory: URL takes no path".into());
                }
                Ok(BackendUrl::Memory { query })
            }
            Some("file") => {
                let (path, query) = query_of(&url["file:".len()..]);
                let path = path.trim_start_matches("//");
                let dir = if path.is_empty() {
                    data_dir.join("log")
                } else {
                    PathBuf::from(path)
                };
                Ok(BackendUrl::File { dir, query })
            }
            Some("redis" | "rediss" | "redis+cluster" | "rediss+cluster") => {
                Ok(BackendUrl::Redis(url.to_string()))
            }
            Some("kafka") => Ok(BackendUrl::Kafka(url.to_string())),
            Some("sqs") => Ok(BackendUrl::Sqs(url.to_string())),
            Some("rabbitmq-stream") => Ok(BackendUrl::RabbitMq(url.to_string())),
            Some(other @ ("amqp" | "amqps" | "rabbitmq")) => Err(format!(
                "the {other} backend is not part of waitroom: RabbitMQ is reached over its stream \
                 protocol, rabbitmq-stream://user:password@host:5552/vhost"
            )),
            _ => Err(
                "unknown backend URL: use file: (default), memory:, redis://host:port \
                 (rediss://, redis+cluster://, rediss+cluster://), kafka://host:port, \
                 rabbitmq-stream://user:password@host:5552/vhost or sqs://?bucket=…"
                    .to_owned(),
            ),
        }
    }

    /// Backends a single process owns: the node may generate its own signing key.
    pub fn is_embedded(&self) -> bool {
        matches!(self, BackendUrl::Memory { .. } | BackendUrl::File { .. })
    }

    /// Without credentials, for logs.
    pub fn describe(&self) -> String {
        let with_query = |base: String, query: &str| {
            if query.is_empty() {
                base
            } else {
                format!("{base}?{query}")
            }
        };
        match self {
            BackendUrl::Memory { query } => with_query("memory:".into(), query),
            BackendUrl::File { dir, query } => with_query(format!("file:{}", dir.display()), query),
            BackendUrl::Redis(url) => redact(url),
            BackendUrl::Kafka(url) => describe_kafka(url),
            BackendUrl::Sqs(url) => redact(url),
            BackendUrl::RabbitMq(url) => redact(url),
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

/// Opens the backend.
///
/// # Errors
/// The backend cannot be opened (bad options, data dir locked or corrupt, server unreachable,
/// feature not enabled).
pub async fn open(url: &BackendUrl) -> Result<Arc<dyn Log>, String> {
    match url {
        BackendUrl::Memory { query } => open_memory(query),
        BackendUrl::File { dir, query } => open_file(dir, query).await,
        BackendUrl::Redis(url) => open_redis(url).await,
        BackendUrl::Kafka(url) => open_kafka(url).await,
        BackendUrl::Sqs(url) => open_sqs(url).await,
        BackendUrl::RabbitMq(url) => open_rabbitmq(url).await,
    }
}

#[cfg(feature = "rabbitmq")]
async fn open_rabbitmq(url: &str) -> Result<Arc<dyn Log>, String> {
    let log = crate::rabbitmq::RabbitMqLog::connect(url)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(log))
}

#[cfg(not(feature = "rabbitmq"))]
async fn open_rabbitmq(_url: &str) -> Result<Arc<dyn Log>, String> {
    Err("the rabbitmq backend is not enabled in this build (cargo feature `rabbitmq`)".into())
}

#[cfg(feature = "sqs")]
async fn open_sqs(url: &str) -> Result<Arc<dyn Log>, String> {
    let log = crate::sqs::SqsLog::connect(url)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(log))
}

#[cfg(not(feature = "sqs"))]
async fn open_sqs(_url: &str) -> Result<Arc<dyn Log>, String> {
    Err("the sqs backend is not enabled in this build (cargo feature `sqs`)".into())
}

/// A Kafka URL without its query (client properties there may hold secrets).
fn describe_kafka(url: &str) -> String {
    let base = redact(url.split('?').next().unwrap_or(url));
    if url.contains('?') {
        format!("{base}?…")
    } else {
        base
    }
}

#[cfg(feature = "kafka")]
async fn open_kafka(url: &str) -> Result<Arc<dyn Log>, String> {
    let log = crate::kafka::KafkaLog::connect(url)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(log))
}

#[cfg(not(feature = "kafka"))]
async fn open_kafka(_url: &str) -> Result<Arc<dyn Log>, String> {
    Err("the kafka backend is not enabled in this build (cargo feature `kafka`)".into())
}

#[cfg(feature = "memory")]
fn open_memory(query: &str) -> Result<Arc<dyn Log>, String> {
    let options = crate::memory::MemoryLogOptions::from_query(query).map_err(|e| e.to_string())?;
    Ok(Arc::new(crate::memory::MemoryLog::with_options(options)))
}

#[cfg(not(feature = "memory"))]
fn open_memory(_query: &str) -> Result<Arc<dyn Log>, String> {
    Err("the memory backend is not enabled in this build (cargo feature `memory`)".into())
}

#[cfg(feature = "file")]
async fn open_file(dir: &Path, query: &str) -> Result<Arc<dyn Log>, String> {
    use crate::file::{FileLog, FileLogOptions};
    let options = FileLogOptions::from_query(query).map_err(|e| e.to_string())?;
    let dir = dir.to_path_buf();
    let log = tokio::task::spawn_blocking(move || FileLog::open(&dir, options))
        .await
        .map_err(|e| format!("opening the file log failed: {e}"))?
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(log))
}

#[cfg(not(feature = "file"))]
async fn open_file(_dir: &Path, _query: &str) -> Result<Arc<dyn Log>, String> {
    Err("the file backend is not enabled in this build (cargo feature `file`)".into())
}

#[cfg(feature = "redis")]
async fn open_redis(url: &str) -> Result<Arc<dyn Log>, String> {
    let log = crate::redis::RedisLog::connect(url)
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
            Ok(BackendUrl::File {
                dir: "/data/log".into(),
                query: String::new()
            })
        );
        assert_eq!(
            BackendUrl::parse("file:/x/y?fsync=always", data),
            Ok(BackendUrl::File {
                dir: "/x/y".into(),
                query: "fsync=always".into()
            })
        );
        assert_eq!(
            BackendUrl::parse("file:?keep-history=1h", data),
            Ok(BackendUrl::File {
                dir: "/data/log".into(),
                query: "keep-history=1h".into()
            })
        );
        assert_eq!(
            BackendUrl::parse("memory:", data),
            Ok(BackendUrl::Memory {
                query: String::new()
            })
        );
        assert!(BackendUrl::parse("memory:/x", data).is_err());
        assert!(matches!(
            BackendUrl::parse("redis://127.0.0.1:6379/0", data),
            Ok(BackendUrl::Redis(_))
        ));
        assert!(matches!(
            BackendUrl::parse("kafka://127.0.0.1:9092?topic=t", data),
            Ok(BackendUrl::Kafka(_))
        ));
        assert_eq!(
            BackendUrl::Kafka("kafka://h:1?sasl.password=secret".into()).describe(),
            "kafka://h:1?…"
        );
        assert!(matches!(
            BackendUrl::parse("sqs://?bucket=b&region=us-east-1", data),
            Ok(BackendUrl::Sqs(_))
        ));
        assert_eq!(
            BackendUrl::Sqs("sqs://AKID:secret@?bucket=b".into()).describe(),
            "sqs://***@?bucket=b"
        );
        assert!(matches!(
            BackendUrl::parse("rabbitmq-stream://u:p@127.0.0.1:5552/%2F", data),
            Ok(BackendUrl::RabbitMq(_))
        ));
        assert_eq!(
            BackendUrl::RabbitMq("rabbitmq-stream://u:secret@h:5552/%2F".into()).describe(),
            "rabbitmq-stream://***@h:5552/%2F"
        );
        assert!(
            BackendUrl::parse("amqp://u:p@h", data)
                .unwrap_err()
                .contains("rabbitmq-stream://")
        );
        assert!(
            BackendUrl::parse("amqp://x", data)
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
