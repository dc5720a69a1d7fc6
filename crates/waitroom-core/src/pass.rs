//! Passes: single-use codes an operator issues for a room (see `Room`, "Passes").
//!
//! The room holds only the hash of each code (`PassHash`: the node hashes a code with the room
//! id, `waitroom::passes`), so neither the log nor a snapshot holds a usable code. Each pass has
//! an expiry time; a pass is forgotten when it is used or expires, so memory is bounded by the
//! passes outstanding (`PASSES_PER_ROOM_MAX`).

use std::collections::{BTreeMap, BTreeSet};

/// What the log carries of a pass: a 16-byte hash of its code and the room id.
pub type PassHash = [u8; 16];

/// A room's outstanding passes: by hash, and by expiry (so expiring them is O(log n) each).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Passes {
    by_hash: BTreeMap<PassHash, u64>,
    by_expiry: BTreeSet<(u64, PassHash)>,
}

impl Passes {
    pub(crate) fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// Adds a pass (an already known hash keeps its first expiry).
    pub(crate) fn insert(&mut self, hash: PassHash, expires_at_ms: u64) -> bool {
        if self.by_hash.contains_key(&hash) {
            return false;
        }
        self.by_hash.insert(hash, expires_at_ms);
        self.by_expiry.insert((expires_at_ms, hash));
        true
    }

    /// Uses the pass: true if it was outstanding (it is then forgotten).
    pub(crate) fn take(&mut self, hash: &PassHash) -> bool {
        match self.by_hash.remove(hash) {
            Some(expires_at_ms) => {
                self.by_expiry.remove(&(expires_at_ms, *hash));
                true
            }
            None => false,
        }
    }

    pub(crate) fn contains(&self, hash: &PassHash) -> bool {
        self.by_hash.contains_key(hash)
    }

    /// Forgets every pass whose expiry is `now_ms` or earlier (a pass expiring exactly now has
    /// expired, like a session's deadline).
    pub(crate) fn expire(&mut self, now_ms: u64) {
        while let Some(&(at_ms, hash)) = self.by_expiry.first() {
            if at_ms > now_ms {
                break;
            }
            self.by_expiry.pop_first();
            self.by_hash.remove(&hash);
        }
    }

    pub(crate) fn clear(&mut self) {
        self.by_hash.clear();
        self.by_expiry.clear();
    }

    /// `(expiry, hash)` in expiry order (then hash order): the order of digests and snapshots.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, PassHash)> + '_ {
        self.by_expiry.iter().copied()
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        // B-tree entries with about a third of node overhead.
        self.len() * (size_of::<(PassHash, u64)>() + size_of::<(u64, PassHash)>()) * 4 / 3
    }
}
