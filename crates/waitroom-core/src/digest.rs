//! Deterministic hashing: state digests, the pre-queue draw, and the session index's hasher.
//!
//! Every replica must compute the same values on every platform and every build, so nothing here
//! may depend on `std`'s randomly keyed or unspecified hashers. The mixing function is the
//! 64×64→128-bit multiply-fold used by wyhash; it is fast and spreads bits well, which is all a
//! replica comparison and a lottery over server-chosen random ids need (neither is a defence
//! against an adversary who controls the inputs: session ids are random bits chosen by nodes).
//! What keeps the lottery from being predicted is its seed, a secret ([`DrawSeed`]), not the
//! hash.

use std::fmt;
use std::hash::{BuildHasher, Hasher};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const K0: u64 = 0xa076_1d64_78bd_642f;
const K1: u64 = 0xe703_7ed1_a0b4_28db;
const K2: u64 = 0x8ebc_6af0_9c88_c6e3;

/// Multiplies and folds the 128-bit product.
#[inline]
pub(crate) fn mix(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

/// A 128-bit digest built from two independently seeded 64-bit lanes.
#[derive(Clone, Debug)]
pub struct Digester {
    lanes: [u64; 2],
    words: u64,
}

impl Default for Digester {
    fn default() -> Self {
        Self {
            lanes: [K0, K1],
            words: 0,
        }
    }
}

impl Digester {
    pub fn u64(&mut self, word: u64) -> &mut Self {
        self.words += 1;
        self.lanes[0] = mix(self.lanes[0] ^ word, K1 ^ self.words);
        self.lanes[1] = mix(self.lanes[1] ^ word.rotate_left(29), K2 ^ self.words);
        self
    }

    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        self.u64(bytes.len() as u64);
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.u64(u64::from_le_bytes(word));
        }
        self
    }

    pub fn option_u64(&mut self, value: Option<u64>) -> &mut Self {
        match value {
            Some(v) => self.u64(1).u64(v),
            None => self.u64(0),
        }
    }

    pub fn finish(&self) -> [u8; 16] {
        let a = mix(self.lanes[0], K2 ^ self.words);
        let b = mix(self.lanes[1], K0 ^ self.words);
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&a.to_le_bytes());
        out[8..].copy_from_slice(&b.to_le_bytes());
        out
    }
}

/// The secret seed of a room's pre-queue draw (see `Room`, "Order").
///
/// A node draws it from the operating system's randomness for every configuration record it
/// writes (`Command::ConfigureRoomSeeded`, `Command::ConfigureRoomFromFileSeeded`), so it comes to
/// every replica through the log, and the room keeps it in its state and its snapshots. Nothing
/// else may carry it: whoever knows it computes every session's draw ticket before the draw, and
/// could rejoin until they hold a good one. So it has no `Display`, its `Debug` hides the value,
/// and it refuses to be written by human-readable serde formats (JSON and the like): only the
/// binary encoding of records (postcard) writes it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DrawSeed(u64);

impl DrawSeed {
    /// A seed of these 64 bits: a node passes random bits from the operating system.
    pub const fn from_u64(bits: u64) -> Self {
        Self(bits)
    }

    /// The secret bits: for the draw, and for tests that check nothing serves them.
    pub const fn to_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for DrawSeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DrawSeed(<secret>)")
    }
}

/// 8 bytes, little-endian, in binary formats; an error in human-readable ones.
impl Serialize for DrawSeed {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            return Err(serde::ser::Error::custom(
                "the draw seed is secret: it is written only in binary records",
            ));
        }
        self.0.to_le_bytes().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for DrawSeed {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        <[u8; 8]>::deserialize(deserializer).map(|bytes| Self(u64::from_le_bytes(bytes)))
    }
}

/// The public seed of the pre-queue draw of a room that holds no [`DrawSeed`]: derived from the
/// room id and the opening instant. Only rooms configured by records written before seeds were
/// secret (`Command::ConfigureRoom`, `Command::ConfigureRoomFromFile`) draw with it, so that
/// their logs and snapshots replay to the same order. Both inputs are public, so anyone can
/// compute the draw of such a room: nodes of this build never write those records.
pub fn legacy_draw_seed(room: &str, opens_at_ms: u64) -> u64 {
    let digest = Digester::default()
        .bytes(room.as_bytes())
        .u64(opens_at_ms)
        .finish();
    u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// The seed of a pre-queue draw at `draw_at_ms` in a room with scheduled events: a stream of
/// the room's seed of its own for every draw (a room with events draws once per event, all with
/// the seed of one configuration), so the order one draw reveals says nothing of the next.
/// Every replica draws at the same record, so at the same time, and with the same seed.
pub fn event_draw_seed(seed: u64, draw_at_ms: u64) -> u64 {
    mix(
        mix(seed ^ K1, draw_at_ms ^ K2) ^ seed.rotate_left(17),
        K0 ^ draw_at_ms,
    )
}

/// A session's ticket in the pre-queue draw: sessions are placed in increasing ticket order
/// (ties, which need a 64-bit collision, broken by session id). Session ids are 128 random bits
/// chosen by the server, so tickets are uniformly random and independent of join order; the
/// seed makes them differ between rooms and openings, and, being secret (a [`DrawSeed`]), keeps
/// anyone from computing a session's ticket before the draw.
pub fn draw_ticket(seed: u64, session: &[u8; 16]) -> u64 {
    let lo = u64::from_le_bytes(session[..8].try_into().expect("8 bytes"));
    let hi = u64::from_le_bytes(session[8..].try_into().expect("8 bytes"));
    mix(mix(lo ^ seed, K0) ^ hi, K1 ^ seed)
}

/// The draw of a `random` room (`QueueingMethod::Random`): which of the `waiting` people in the
/// line (0-based, in join order) is admitted as the room's admission number `admitted` (its
/// `admitted_total` before this admission). A separate stream of the room's secret seed from the
/// pre-queue's tickets (another key), so neither reveals anything of the other; deterministic in
/// the seed and the log, so every replica admits the same person; uniform over the line (a
/// 64-bit hash scaled by multiplication: the bias is below `waiting / 2^64`). `waiting` must not
/// be 0.
pub fn admission_draw(seed: u64, admitted: u64, waiting: u32) -> u32 {
    debug_assert!(waiting > 0);
    let hash = mix(
        mix(admitted ^ K2, seed ^ K0) ^ seed.rotate_left(32),
        K1 ^ admitted,
    );
    ((u128::from(hash) * u128::from(waiting)) >> 64) as u32
}

/// Hasher for the session index: session ids are already random, so one fold is enough, and a
/// fixed key keeps iteration order identical on every replica.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SessionHasherBuilder;

#[derive(Default)]
pub(crate) struct SessionHasher {
    state: u64,
}

impl BuildHasher for SessionHasherBuilder {
    type Hasher = SessionHasher;
    fn build_hasher(&self) -> SessionHasher {
        SessionHasher { state: K2 }
    }
}

impl Hasher for SessionHasher {
    fn finish(&self) -> u64 {
        self.state
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.state = mix(self.state ^ word, K0);
    }

    fn write_usize(&mut self, word: usize) {
        self.write_u64(word as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_stable_and_sensitive() {
        let a = Digester::default().u64(1).u64(2).finish();
        assert_eq!(a, Digester::default().u64(1).u64(2).finish());
        assert_ne!(a, Digester::default().u64(2).u64(1).finish());
        assert_ne!(a, Digester::default().u64(1).u64(2).u64(0).finish());
        assert_ne!(
            Digester::default().bytes(b"ab").finish(),
            Digester::default().bytes(b"ab\0").finish()
        );
    }

    /// Pinned values: replicas on other platforms or builds must draw the same pre-queue order.
    #[test]
    fn draw_is_pinned() {
        let seed = legacy_draw_seed("eras-tour", 1_790_000_000_000);
        assert_eq!(seed, legacy_draw_seed("eras-tour", 1_790_000_000_000));
        assert_ne!(seed, legacy_draw_seed("eras-tour", 1_790_000_000_001));
        assert_ne!(seed, legacy_draw_seed("eras-tour2", 1_790_000_000_000));
        let ticket = draw_ticket(seed, &[7; 16]);
        assert_eq!(ticket, draw_ticket(seed, &[7; 16]));
        assert_eq!((seed, ticket), (PINNED_SEED, PINNED_TICKET));
    }

    const PINNED_SEED: u64 = 8_028_241_234_136_401_709;
    const PINNED_TICKET: u64 = 1_221_015_898_485_080_948;

    /// Pinned: replicas on other platforms or builds must admit the same people.
    #[test]
    fn admission_draw_is_pinned_and_spreads() {
        let draws: Vec<u32> = (0..8).map(|n| admission_draw(0x5eed, n, 1000)).collect();
        assert_eq!(draws, PINNED_ADMISSION_DRAWS);
        let mut buckets = [0u32; 16];
        for n in 0..16_000 {
            let k = admission_draw(0x5eed, n, 16);
            buckets[k as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&b| (800..1200).contains(&b)),
            "{buckets:?}"
        );
        assert_eq!(admission_draw(7, 3, 1), 0);
        assert!(admission_draw(7, 3, u32::MAX) < u32::MAX);
    }

    const PINNED_ADMISSION_DRAWS: [u32; 8] = [315, 672, 784, 866, 935, 673, 469, 673];

    /// A seed is 8 bytes in records (postcard), never JSON, and its `Debug` hides it.
    #[test]
    fn seeds_stay_out_of_text() {
        let seed = DrawSeed::from_u64(0x0123_4567_89ab_cdef);
        let bytes = postcard::to_allocvec(&seed).unwrap();
        assert_eq!(bytes, 0x0123_4567_89ab_cdef_u64.to_le_bytes());
        assert_eq!(postcard::from_bytes::<DrawSeed>(&bytes), Ok(seed));
        assert_eq!(format!("{seed:?}"), "DrawSeed(<secret>)");
        assert!(
            serde_json::to_string(&seed).is_err(),
            "a human-readable format wrote the seed"
        );
    }

    /// Tickets of sequential ids must still look uniform: each of 16 buckets gets about 1/16.
    #[test]
    fn tickets_spread() {
        let seed = legacy_draw_seed("r", 0);
        let mut buckets = [0u32; 16];
        for n in 0u128..16_000 {
            buckets[(draw_ticket(seed, &n.to_le_bytes()) >> 60) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&b| (800..1200).contains(&b)),
            "{buckets:?}"
        );
    }
}
