//! The groups' history in S3: one object per stamped batch, under the key of its first sequence
//! number written newest first, so that `ListObjectsV2 MaxKeys=1` names a group's newest batch and
//! a listing from the start names the batches after a position and stops there. Also the S3
//! requests every other part uses (listing, conditional puts, deleting).

use std::sync::Arc;

use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use super::clients::{Clients, Request, code, unavailable};
use super::format::Object;
use super::settings::{Names, S3_KEYS_PER_REQUEST_MAX, position_of};
use crate::LogError;

/// One key of a listing.
#[derive(Clone, Debug)]
pub(crate) struct Listed {
    pub(crate) key: String,
    /// S3's `LastModified`, in milliseconds since the Unix epoch (0 when S3 gives none).
    pub(crate) modified_ms: u64,
    pub(crate) size: u64,
}

/// S3 for one log: its clients and its names.
pub(crate) struct Store {
    pub(crate) clients: Arc<Clients>,
    pub(crate) names: Arc<Names>,
}

impl Store {
    /// The keys under `prefix`, in S3's (ascending) order, until `stop` says a key is the last
    /// one wanted (it is included) or `max_keys` keys were read.
    pub(crate) async fn list(
        &self,
        prefix: &str,
        max_keys: Option<usize>,
        mut stop: impl FnMut(&str) -> bool,
    ) -> Result<Vec<Listed>, LogError> {
        let mut listed = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let want = max_keys.map_or(S3_KEYS_PER_REQUEST_MAX, |max| {
                (max - listed.len()).min(S3_KEYS_PER_REQUEST_MAX)
            });
            self.clients.counters.count(Request::S3List);
            let page = self
                .clients
                .s3
                .list_objects_v2()
                .bucket(&self.clients.bucket)
                .prefix(prefix)
                .max_keys(want as i32)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|error| unavailable(&format!("listing S3 keys under {prefix}"), &error))?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                listed.push(Listed {
                    key: key.to_owned(),
                    modified_ms: object
                        .last_modified()
                        .and_then(|time| time.to_millis().ok())
                        .map_or(0, |ms| ms.max(0) as u64),
                    size: object.size().map_or(0, |size| size.max(0) as u64),
                });
                if stop(key) || max_keys.is_some_and(|max| listed.len() >= max) {
                    return Ok(listed);
                }
            }
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_owned()),
                _ => return Ok(listed),
            }
        }
    }

    /// The bytes of `key`, `None` if there is no such object.
    pub(crate) async fn get(&self, key: &str) -> Result<Option<Bytes>, LogError> {
        self.clients.counters.count(Request::S3Get);
        let result = self
            .clients
            .s3
            .get_object()
            .bucket(&self.clients.bucket)
            .key(key)
            .send()
            .await;
        let output = match result {
            Ok(output) => output,
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|service| service.is_no_such_key()) =>
            {
                return Ok(None);
            }
            Err(error) => return Err(unavailable(&format!("reading S3 object {key}"), &error)),
        };
        let bytes =
            output.body.collect().await.map_err(|error| {
                LogError::Unavailable(format!("reading S3 object {key}: {error}"))
            })?;
        Ok(Some(bytes.into_bytes()))
    }

    /// Puts `bytes` at `key`; with `only_if_new`, only if no object is there (`If-None-Match:
    /// *`): answers whether it was put.
    pub(crate) async fn put(
        &self,
        key: &str,
        bytes: Bytes,
        only_if_new: bool,
    ) -> Result<bool, LogError> {
        self.clients.counters.count(Request::S3Put);
        let mut request = self
            .clients
            .s3
            .put_object()
            .bucket(&self.clients.bucket)
            .key(key)
            .body(ByteStream::from(bytes));
        if only_if_new {
            request = request.if_none_match("*");
        }
        match request.send().await {
            Ok(_) => Ok(true),
            // 412: the key is taken. 409: another conditional write of the key is in flight
            // (AWS); whoever wins, this one did not.
            Err(error)
                if only_if_new
                    && (matches!(
                        code(&error),
                        Some("PreconditionFailed" | "ConditionalRequestConflict")
                    ) || error
                        .raw_response()
                        .is_some_and(|raw| matches!(raw.status().as_u16(), 412 | 409))) =>
            {
                Ok(false)
            }
            Err(error) => Err(unavailable(&format!("writing S3 object {key}"), &error)),
        }
    }

    /// Deletes `keys` (`DeleteObjects`, up to 1 000 per request); missing keys are fine.
    pub(crate) async fn delete(&self, keys: Vec<String>) -> Result<(), LogError> {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        for chunk in keys.chunks(S3_KEYS_PER_REQUEST_MAX) {
            let objects = chunk
                .iter()
                .map(|key| ObjectIdentifier::builder().key(key).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|error| LogError::Rejected(format!("an S3 key: {error}")))?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|error| LogError::Rejected(format!("an S3 delete: {error}")))?;
            self.clients.counters.count(Request::S3Delete);
            let output = self
                .clients
                .s3
                .delete_objects()
                .bucket(&self.clients.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|error| unavailable("deleting S3 objects", &error))?;
            if let Some(failed) = output.errors().first() {
                return Err(LogError::Unavailable(format!(
                    "deleting S3 object {}: {}",
                    failed.key().unwrap_or("?"),
                    failed.message().unwrap_or("failed")
                )));
            }
        }
        Ok(())
    }

    /// The first sequence number of the history object at `key` (from the key).
    pub(crate) fn first_of(&self, key: &str) -> Option<u64> {
        position_of(key.rsplit('/').next()?)
    }

    /// The history object at `key`, `None` if it is gone.
    ///
    /// # Errors
    /// [`LogError::Corrupt`] for an object that does not decode or is not where it should be.
    pub(crate) async fn object(&self, group: u32, key: &str) -> Result<Option<Object>, LogError> {
        let Some(bytes) = self.get(key).await? else {
            return Ok(None);
        };
        let object = Object::decode(&bytes).map_err(|damage| {
            LogError::Corrupt(format!("S3 history object {key} does not decode: {damage}"))
        })?;
        if object.group != group || self.first_of(key) != Some(object.first) {
            return Err(LogError::Corrupt(format!(
                "S3 history object {key} holds group {} from {}",
                object.group, object.first
            )));
        }
        Ok(Some(object))
    }

    /// The first sequence numbers of `group`'s history objects holding anything after `after`,
    /// oldest first: every object that starts after it, and the one that holds `after + 1` if it
    /// is still there (then it comes first and starts at or before `after + 1`; if the first one
    /// starts later, what lies between was trimmed).
    pub(crate) async fn objects_after(&self, group: u32, after: u64) -> Result<Vec<u64>, LogError> {
        let listed = self
            .list(&self.names.history_dir(group), None, |key| {
                self.first_of(key).is_some_and(|first| first <= after + 1)
            })
            .await?;
        let mut firsts: Vec<u64> = listed
            .iter()
            .filter_map(|item| self.first_of(&item.key))
            .collect();
        firsts.reverse();
        Ok(firsts)
    }
}
