//! The text form of session ids, and the room tag that lets any node find a session's room.
//!
//! A session id is 128 random bits (`waitroom_core::SessionId`). Its text form carries a 32-bit
//! tag of the room in front: `wr_` + base64url(tag ‖ id), 30 characters. Any node can then find
//! the session's room from the id alone, without a node-wide session index (which would cost
//! memory per session on every node) and without asking every room.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use waitroom_core::{DrawSeed, RecordId, RoomId, SessionId};

const PREFIX: &str = "wr_";
const TAG_BYTES: usize = 4;
/// `wr_` + 27 base64url characters (20 bytes).
pub const SESSION_ID_TEXT_BYTES: usize = 30;
pub use crate::limits::PATH_ID_BYTES_MAX;

/// The room tag: CRC-32C of the room id. Every node computes the same tag.
pub fn room_tag(room: &RoomId) -> u32 {
    crc32c::crc32c(room.as_str().as_bytes())
}

/// A session id as clients see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PublicSessionId {
    pub tag: u32,
    pub session: SessionId,
}

/// Why a path id was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathIdError {
    /// Longer than 128 characters or outside `[A-Za-z0-9_-]`: a `400`.
    Malformed,
    /// Well-formed but not an id this service issues: a `404`.
    Unknown,
}

impl PublicSessionId {
    pub fn new(room: &RoomId, session: SessionId) -> Self {
        Self {
            tag: room_tag(room),
            session,
        }
    }

    /// A fresh session id for `room`: 128 bits from the operating system's CSPRNG (via the
    /// thread-local ChaCha generator of `rand`, seeded from it).
    pub fn generate(room: &RoomId) -> Self {
        Self::new(room, SessionId(rand::random()))
    }

    pub fn parse(text: &str) -> Result<Self, PathIdError> {
        let well_formed = !text.is_empty()
            && text.len() <= PATH_ID_BYTES_MAX
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !well_formed {
            return Err(PathIdError::Malformed);
        }
        let encoded = text.strip_prefix(PREFIX).ok_or(PathIdError::Unknown)?;
        if text.len() != SESSION_ID_TEXT_BYTES {
            return Err(PathIdError::Unknown);
        }
        let mut bytes = [0u8; TAG_BYTES + 16];
        match URL_SAFE_NO_PAD.decode_slice(encoded, &mut bytes) {
            Ok(n) if n == bytes.len() => {}
            _ => return Err(PathIdError::Unknown),
        }
        let (tag, session) = bytes.split_at(TAG_BYTES);
        Ok(Self {
            tag: u32::from_be_bytes(tag.try_into().expect("4 bytes")),
            session: SessionId(session.try_into().expect("16 bytes")),
        })
    }

    pub fn to_text(&self) -> String {
        let mut bytes = [0u8; TAG_BYTES + 16];
        bytes[..TAG_BYTES].copy_from_slice(&self.tag.to_be_bytes());
        bytes[TAG_BYTES..].copy_from_slice(&self.session.0);
        let mut text = String::with_capacity(SESSION_ID_TEXT_BYTES);
        text.push_str(PREFIX);
        URL_SAFE_NO_PAD.encode_string(bytes, &mut text);
        text
    }
}

/// A fresh record id (unique per record, so redeliveries are recognised).
pub fn new_record_id() -> RecordId {
    RecordId(rand::random())
}

/// A fresh secret seed for a room's pre-queue draw, for a configuration record
/// (`Command::ConfigureRoomSeeded`, `Command::ConfigureRoomFromFileSeeded`): 64 bits straight
/// from the operating system's randomness (or, should that fail, from the thread-local
/// generator `rand` seeds from it). The log carries it to every node; nothing serves it.
pub fn new_draw_seed() -> DrawSeed {
    use rand::TryRng as _;
    let bits = rand::rngs::SysRng
        .try_next_u64()
        .unwrap_or_else(|_| rand::random());
    DrawSeed::from_u64(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let room = RoomId::new("eras-tour").unwrap();
        for _ in 0..100 {
            let id = PublicSessionId::generate(&room);
            let text = id.to_text();
            assert_eq!(text.len(), SESSION_ID_TEXT_BYTES);
            assert!(text.starts_with("wr_"));
            assert_eq!(PublicSessionId::parse(&text), Ok(id));
            assert_eq!(id.tag, room_tag(&room));
        }
    }

    #[test]
    fn draw_seeds_are_fresh() {
        let seeds: std::collections::HashSet<u64> =
            (0..100).map(|_| new_draw_seed().to_u64()).collect();
        assert_eq!(seeds.len(), 100);
    }

    #[test]
    fn malformed_and_unknown() {
        assert_eq!(PublicSessionId::parse(""), Err(PathIdError::Malformed));
        assert_eq!(
            PublicSessionId::parse("wr_a.b"),
            Err(PathIdError::Malformed)
        );
        assert_eq!(
            PublicSessionId::parse("wr_a:heartbeat"),
            Err(PathIdError::Malformed)
        );
        assert_eq!(
            PublicSessionId::parse(&"a".repeat(129)),
            Err(PathIdError::Malformed)
        );
        assert_eq!(
            PublicSessionId::parse(&"a".repeat(128)),
            Err(PathIdError::Unknown)
        );
        assert_eq!(
            PublicSessionId::parse("wr_short"),
            Err(PathIdError::Unknown)
        );
        assert_eq!(
            PublicSessionId::parse("xx_AAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            Err(PathIdError::Unknown)
        );
        // 27 characters whose last one carries bits base64 cannot (non-canonical) is unknown, not a panic.
        assert_eq!(
            PublicSessionId::parse("wr____________________________"),
            Err(PathIdError::Unknown)
        );
    }
}
