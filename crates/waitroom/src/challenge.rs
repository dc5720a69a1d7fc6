//! Join challenges: a proof of work a room can ask of every join (`challengeDifficultyBits` in
//! its configuration; docs/api.md, "Challenges").
//!
//! # The challenge
//! `POST /api/waiting-room/rooms/{roomId}/challenge` hands out 54 bytes as 72 base64url
//! characters: a format byte (1), the signing key's 8-byte tag, the room's 4-byte tag (as in
//! session ids), the expiry (ms since the epoch, 8 bytes big-endian), the difficulty (1 byte), a
//! 16-byte random nonce, and a 16-byte HMAC-SHA-256 of all that and the room id. The client finds
//! a `solution` whose SHA-256(challenge ‖ solution) starts with the room's difficulty in zero
//! bits (`waitroom_load::pow`) and joins with both.
//!
//! # Why an HMAC, and which key
//! Any node of the fleet must accept a challenge another node issued, and the check must cost
//! next to nothing (it runs before a join is written, under a flood). The nodes already share one
//! secret, the token signing key; the HMAC key is derived from it
//! (`SigningKey::derive_secret`), so nothing new is distributed. The whole check, HMAC and the
//! solution's SHA-256 included, costs about 0.6 µs (criterion: `benches/request.rs`, group
//! `join challenge`), where an Ed25519 verification costs tens of microseconds; and nobody but
//! the nodes need check a challenge.
//!
//! # Key rotation
//! The node signs challenges with the key it signs tokens with, and accepts those of that key and
//! of any `--next-signing-key` and `--retired-signing-key` given as a private key (PKCS#8 PEM): a
//! public key PEM says nothing of the HMAC key. So in a rolling restart give both keys as private
//! PEMs and every node accepts every challenge; else a challenge from a node on the other key is
//! refused (`challenge-invalid`) and the client gets a new one and solves again.
//!
//! # Replays
//! One solved challenge buys one place: the join's session id is derived from the challenge
//! (an HMAC of its nonce and room under its key), so a replay, on any node, names the session the
//! first join created, and the room answers it as a duplicate with that same session. The room
//! remembers a session while it lives and `SESSION_RETENTION_MS` after it ends, never less; a
//! challenge expires well before that (`CHALLENGE_LIFETIME_MS`, with a compile-time assertion),
//! so no replay can outlive the memory of its session. Nothing is tracked per challenge.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use waitroom_core::limits::CHALLENGE_DIFFICULTY_BITS_MAX;
use waitroom_core::{RoomId, SessionId};
use waitroom_token::SigningKey;

use crate::ids::room_tag;
pub use crate::limits::{CHALLENGE_CLOCK_ALLOWANCE_MS, CHALLENGE_LIFETIME_MS};
pub use waitroom_load::pow::SOLUTION_CHARS_MAX;

/// The label of the HMAC key derived from a signing key.
const KEY_LABEL: &str = "waitroom join challenge v1";
const FORMAT: u8 = 1;
const PAYLOAD_BYTES: usize = 1 + 8 + 4 + 8 + 1 + 16;
const MAC_BYTES: usize = 16;
const CHALLENGE_BYTES: usize = PAYLOAD_BYTES + MAC_BYTES;
/// The length of a challenge's text: 54 bytes in base64url without padding.
pub const CHALLENGE_CHARS: usize = 72;
const _: () =
    assert!(CHALLENGE_BYTES.is_multiple_of(3) && CHALLENGE_BYTES / 3 * 4 == CHALLENGE_CHARS);

type HmacSha256 = Hmac<Sha256>;

struct Key {
    tag: [u8; 8],
    /// Keyed once: each use clones the state instead of hashing the key again.
    mac: HmacSha256,
}

impl Key {
    fn new(signing_key: &SigningKey) -> Self {
        let secret = signing_key.derive_secret(KEY_LABEL);
        let mac = HmacSha256::new_from_slice(&secret[..]).expect("HMAC takes any key length");
        let mut tag = [0; 8];
        tag.copy_from_slice(&mac.clone().chain_update(b"key tag").finalize().into_bytes()[..8]);
        Self { tag, mac }
    }
}

/// A challenge as handed out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    pub challenge: String,
    pub expires_at_ms: u64,
}

/// Why a join's challenge was refused (each a `403` problem type, docs/api.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not a challenge of this service: malformed, forged, altered, or signed with a key this
    /// node does not hold.
    Invalid { unknown_key: bool },
    /// Issued for another room.
    WrongRoom,
    /// Past its expiry.
    Expired,
    /// The solution's work is below the room's difficulty.
    InsufficientWork { work_bits: u32, needed_bits: u8 },
}

/// The node's challenge keys: the first signs, all are accepted.
pub struct Challenges {
    keys: Vec<Key>,
}

impl Challenges {
    /// Challenges signed with `signing_key`'s derived key; those of `others` are accepted too.
    pub fn new(signing_key: &SigningKey, others: &[SigningKey]) -> Self {
        let keys = std::iter::once(signing_key)
            .chain(others)
            .map(Key::new)
            .collect();
        Self { keys }
    }

    /// A new challenge for `room` at `difficulty_bits`, expiring `CHALLENGE_LIFETIME_MS` after
    /// `now_ms`.
    pub fn issue(&self, room: &RoomId, difficulty_bits: u8, now_ms: u64) -> Issued {
        let nonce: [u8; 16] = rand::random();
        self.issue_with_nonce(room, difficulty_bits, now_ms, nonce)
    }

    fn issue_with_nonce(
        &self,
        room: &RoomId,
        difficulty_bits: u8,
        now_ms: u64,
        nonce: [u8; 16],
    ) -> Issued {
        let key = &self.keys[0];
        let expires_at_ms = now_ms.saturating_add(CHALLENGE_LIFETIME_MS);
        let mut bytes = [0u8; CHALLENGE_BYTES];
        bytes[0] = FORMAT;
        bytes[1..9].copy_from_slice(&key.tag);
        bytes[9..13].copy_from_slice(&room_tag(room).to_be_bytes());
        bytes[13..21].copy_from_slice(&expires_at_ms.to_be_bytes());
        bytes[21] = difficulty_bits;
        bytes[22..38].copy_from_slice(&nonce);
        let mac = payload_mac(key, &bytes[..PAYLOAD_BYTES], room);
        bytes[PAYLOAD_BYTES..].copy_from_slice(&mac[..MAC_BYTES]);
        Issued {
            challenge: URL_SAFE_NO_PAD.encode(bytes),
            expires_at_ms,
        }
    }

    /// Checks a join's `challenge` and `solution` for `room`, whose difficulty is
    /// `needed_bits` (1..=`CHALLENGE_DIFFICULTY_BITS_MAX`), at `now_ms`: the session id the join
    /// takes (the same for every node and every replay), or why not.
    ///
    /// # Errors
    /// The [`Refusal`].
    pub fn check(
        &self,
        room: &RoomId,
        challenge: &str,
        solution: &str,
        needed_bits: u8,
        now_ms: u64,
    ) -> Result<SessionId, Refusal> {
        let invalid = Refusal::Invalid { unknown_key: false };
        if challenge.len() != CHALLENGE_CHARS {
            return Err(invalid);
        }
        let mut bytes = [0u8; CHALLENGE_BYTES];
        match URL_SAFE_NO_PAD.decode_slice(challenge, &mut bytes) {
            Ok(CHALLENGE_BYTES) => {}
            _ => return Err(invalid),
        }
        if bytes[0] != FORMAT {
            return Err(invalid);
        }
        let key = self
            .keys
            .iter()
            .find(|key| key.tag[..] == bytes[1..9])
            .ok_or(Refusal::Invalid { unknown_key: true })?;
        if bytes[9..13] != room_tag(room).to_be_bytes() {
            return Err(Refusal::WrongRoom);
        }
        let mut mac = key.mac.clone();
        mac.update(&bytes[..PAYLOAD_BYTES]);
        mac.update(room.as_str().as_bytes());
        // Constant time.
        mac.verify_truncated_left(&bytes[PAYLOAD_BYTES..])
            .map_err(|_| invalid)?;
        let expires_at_ms = u64::from_be_bytes(bytes[13..21].try_into().expect("8 bytes"));
        if now_ms >= expires_at_ms {
            return Err(Refusal::Expired);
        }
        let work_bits = waitroom_load::pow::work_bits(challenge, solution);
        if work_bits < u32::from(needed_bits) {
            return Err(Refusal::InsufficientWork {
                work_bits,
                needed_bits,
            });
        }
        let session = key
            .mac
            .clone()
            .chain_update(b"session\0")
            .chain_update(&bytes[22..38])
            .chain_update(room.as_str().as_bytes())
            .finalize()
            .into_bytes();
        Ok(SessionId(session[..16].try_into().expect("16 bytes")))
    }
}

fn payload_mac(key: &Key, payload: &[u8], room: &RoomId) -> [u8; 32] {
    key.mac
        .clone()
        .chain_update(payload)
        .chain_update(room.as_str().as_bytes())
        .finalize()
        .into_bytes()
        .into()
}

const _: () = assert!(CHALLENGE_DIFFICULTY_BITS_MAX as usize <= 256);

#[cfg(test)]
mod tests {
    use waitroom_load::pow::solve;

    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn room(id: &str) -> RoomId {
        RoomId::new(id).unwrap()
    }

    #[test]
    fn a_solved_challenge_passes_on_any_node_with_the_key_and_names_one_session() {
        let key = SigningKey::generate().unwrap();
        let a = Challenges::new(&key, &[]);
        let b = Challenges::new(&key, &[]);
        let issued = a.issue(&room("r"), 8, NOW);
        assert_eq!(issued.challenge.len(), CHALLENGE_CHARS);
        assert_eq!(issued.expires_at_ms, NOW + CHALLENGE_LIFETIME_MS);
        let solved = solve(&issued.challenge, 8, 0, 1 << 24).unwrap();
        let first = a.check(&room("r"), &issued.challenge, &solved.solution, 8, NOW + 1);
        let second = b.check(&room("r"), &issued.challenge, &solved.solution, 8, NOW + 2);
        assert!(first.is_ok());
        assert_eq!(first, second, "a replay names the same session");
        // Another solution of the same challenge: still that one session.
        let other = solve(&issued.challenge, 8, solved.tries, 1 << 24).unwrap();
        assert_eq!(
            a.check(&room("r"), &issued.challenge, &other.solution, 8, NOW),
            first
        );
        // Another challenge: another session.
        let again = a.issue(&room("r"), 8, NOW);
        let solved_again = solve(&again.challenge, 8, 0, 1 << 24).unwrap();
        assert_ne!(
            a.check(&room("r"), &again.challenge, &solved_again.solution, 8, NOW),
            first
        );
    }

    #[test]
    fn refusals() {
        let key = SigningKey::generate().unwrap();
        let challenges = Challenges::new(&key, &[]);
        let issued = challenges.issue(&room("r"), 4, NOW);
        let solution = solve(&issued.challenge, 12, 0, 1 << 24).unwrap().solution;
        let check = |challenge: &str, room_id: &str, bits: u8, now: u64| {
            challenges.check(&room(room_id), challenge, &solution, bits, now)
        };
        let invalid = Err(Refusal::Invalid { unknown_key: false });
        assert!(check(&issued.challenge, "r", 12, NOW).is_ok());
        assert_eq!(
            check(&issued.challenge, "s", 12, NOW),
            Err(Refusal::WrongRoom)
        );
        assert_eq!(
            check(&issued.challenge, "r", 12, issued.expires_at_ms),
            Err(Refusal::Expired)
        );
        assert!(check(&issued.challenge, "r", 12, issued.expires_at_ms - 1).is_ok());
        let work = waitroom_load::pow::work_bits(&issued.challenge, &solution);
        assert!(matches!(
            check(&issued.challenge, "r", 28, NOW),
            Err(Refusal::InsufficientWork { needed_bits: 28, work_bits }) if work_bits == work
        ));
        assert_eq!(check("", "r", 12, NOW), invalid);
        assert_eq!(check(&"A".repeat(CHALLENGE_CHARS), "r", 12, NOW), invalid);
        assert_eq!(
            check(&format!("{}=", &issued.challenge[1..]), "r", 12, NOW),
            invalid
        );
        // Every altered character (the expiry, the difficulty, the nonce, the MAC...) is caught.
        let bytes = URL_SAFE_NO_PAD.decode(&issued.challenge).unwrap();
        for at in 0..bytes.len() {
            let mut altered = bytes.clone();
            altered[at] ^= 1;
            let text = URL_SAFE_NO_PAD.encode(&altered);
            let refusal = check(&text, "r", 0, NOW).unwrap_err();
            match at {
                1..=8 => assert_eq!(refusal, Refusal::Invalid { unknown_key: true }),
                9..=12 => assert_eq!(refusal, Refusal::WrongRoom),
                _ => assert_eq!(
                    refusal,
                    Refusal::Invalid { unknown_key: false },
                    "byte {at}"
                ),
            }
        }
        // Another fleet's key (or one rotated away): not accepted; accepted once given.
        let other = SigningKey::generate().unwrap();
        let theirs = Challenges::new(&other, &[]).issue(&room("r"), 1, NOW);
        let solution = solve(&theirs.challenge, 1, 0, 1 << 20).unwrap().solution;
        assert_eq!(
            challenges.check(&room("r"), &theirs.challenge, &solution, 1, NOW),
            Err(Refusal::Invalid { unknown_key: true })
        );
        let rotating = Challenges::new(&key, &[other]);
        assert!(
            rotating
                .check(&room("r"), &theirs.challenge, &solution, 1, NOW)
                .is_ok()
        );
    }

    /// Pins the format: an all-zero nonce at a fixed time gives these bytes but the key-dependent
    /// tag and MAC.
    #[test]
    fn the_format_is_stable() {
        let key = SigningKey::generate().unwrap();
        let issued = Challenges::new(&key, &[]).issue_with_nonce(&room("r"), 20, NOW, [7; 16]);
        let bytes = URL_SAFE_NO_PAD.decode(&issued.challenge).unwrap();
        assert_eq!(bytes[0], 1);
        assert_eq!(bytes[9..13], room_tag(&room("r")).to_be_bytes());
        assert_eq!(bytes[13..21], (NOW + CHALLENGE_LIFETIME_MS).to_be_bytes());
        assert_eq!(bytes[21], 20);
        assert_eq!(bytes[22..38], [7; 16]);
    }
}
