//! Identifiers: rooms, sessions, records, idempotency keys.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::limits::{IDEMPOTENCY_KEY_BYTES_MAX, ROOM_ID_BYTES_MAX};

/// A session: 128 random bits chosen by the node that accepted the join. The state machine only
/// compares them; their text form (`wr_…`) belongs to the HTTP layer.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionId(pub [u8; 16]);

/// A record: unique per record, so a redelivered record is recognised. Chosen by the appender.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RecordId(pub [u8; 16]);

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("S")?;
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("R")?;
        write_hex(f, &self.0)
    }
}

impl SessionId {
    /// A session id built from a number; for tests, simulations and benchmarks.
    pub fn from_u128(n: u128) -> Self {
        Self(n.to_le_bytes())
    }
}

impl RecordId {
    /// A record id built from a number; for tests, simulations and benchmarks.
    pub fn from_u128(n: u128) -> Self {
        Self(n.to_le_bytes())
    }
}

/// Why an identifier was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdError {
    /// Room ids match `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`.
    RoomId,
    /// Idempotency keys are 1..=128 printable ASCII characters.
    IdempotencyKey,
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdError::RoomId => f.write_str(
                "a room id is 1 to 64 characters of A-Z a-z 0-9 . _ - starting with a letter or digit",
            ),
            IdError::IdempotencyKey => {
                f.write_str("an idempotency key is 1 to 128 printable ASCII characters")
            }
        }
    }
}

impl std::error::Error for IdError {}

/// A room id, valid by construction: `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RoomId(String);

impl RoomId {
    pub fn new(id: impl Into<String>) -> Result<Self, IdError> {
        let id = id.into();
        let bytes = id.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= ROOM_ID_BYTES_MAX
            && bytes[0].is_ascii_alphanumeric()
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if valid {
            Ok(Self(id))
        } else {
            Err(IdError::RoomId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The empty id, which no room has: the id of a `SnapshotSpare`, which holds no room. It
    /// never leaves the crate.
    pub(crate) fn none() -> Self {
        Self(String::new())
    }
}

impl TryFrom<String> for RoomId {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<RoomId> for String {
    fn from(value: RoomId) -> Self {
        value.0
    }
}

impl fmt::Debug for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A client's `Idempotency-Key`: 1..=128 printable ASCII characters (0x20..=0x7E).
///
/// Shared, not owned: a room keeps each key twice (key → session, session → key) and copies
/// both maps whenever it is snapshotted, so a clone is a reference count, not an allocation.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdempotencyKey(Arc<str>);

impl IdempotencyKey {
    pub fn new(key: impl Into<String>) -> Result<Self, IdError> {
        let key = key.into();
        let valid = !key.is_empty()
            && key.len() <= IDEMPOTENCY_KEY_BYTES_MAX
            && key.bytes().all(|b| (0x20..=0x7e).contains(&b));
        if valid {
            Ok(Self(key.into()))
        } else {
            Err(IdError::IdempotencyKey)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IdempotencyKey {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<IdempotencyKey> for String {
    fn from(value: IdempotencyKey) -> Self {
        value.0.as_ref().into()
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_ids() {
        for ok in ["a", "eras-tour-2026-05-01", "A.b_c-9", &"x".repeat(64)] {
            assert!(RoomId::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", ".a", "a b", "a/b", "é", &"x".repeat(65)] {
            assert_eq!(RoomId::new(bad), Err(IdError::RoomId), "{bad}");
        }
    }

    #[test]
    fn idempotency_keys() {
        assert!(IdempotencyKey::new("k").is_ok());
        assert!(IdempotencyKey::new(" ~").is_ok());
        assert!(IdempotencyKey::new("k".repeat(128)).is_ok());
        for bad in [String::new(), "k".repeat(129), "a\nb".into(), "ä".into()] {
            assert_eq!(IdempotencyKey::new(bad), Err(IdError::IdempotencyKey));
        }
    }
}
