//! Admission tokens: issued on every ACTIVE view, checked on `:complete`, published as a JWKS.
//!
//! # Key rotation
//! A node signs with one key and publishes (and accepts on `:complete`) that key, the next one
//! (`--next-signing-key`, published before it signs so that every protected service has it
//! cached by then) and retired ones (`--retired-signing-key`, kept while tokens they signed may
//! still be presented: at most `TOKEN_LIFETIME_MAX_S`). Tokens name their key by `kid`, so
//! nodes signing with different keys in the middle of a rolling restart are all verified. The
//! steps are in docs/operations.md ("Rotating the signing key").

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use waitroom_token::{AdmissionClaims, Expectations, Jwk, SigningKey, Verifier};

use crate::challenge::Challenges;
use crate::limits::{RECENT_TOKENS_MAX, RETIRED_SIGNING_KEYS_MAX};
pub use crate::limits::{TOKEN_LEEWAY_S, TOKEN_LIFETIME_MAX_S};

pub struct Tokens {
    key: SigningKey,
    /// Join challenges, keyed from the same signing key (see `crate::challenge`).
    challenges: Challenges,
    verifier: Verifier,
    issuer: String,
    jwks_json: String,
    recent: Mutex<RecentTokens>,
}

/// The tokens issued during one second, by (session, `exp`).
#[derive(Default)]
struct RecentTokens {
    second: u64,
    tokens: HashMap<(String, u64), String>,
}

fn unix_now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The keys a node publishes besides the one it signs with (see "Key rotation" above).
#[derive(Clone, Debug, Default)]
pub struct OtherKeys {
    /// The key the fleet signs with next.
    pub next: Option<Jwk>,
    /// Keys the fleet signed with before, at most [`RETIRED_SIGNING_KEYS_MAX`].
    pub retired: Vec<Jwk>,
    /// The private keys among `next` and `retired` (those given as PKCS#8 PEM): join challenges
    /// signed by nodes holding them are accepted too (see `crate::challenge`, "Key rotation").
    pub challenge_keys: Vec<SigningKey>,
}

impl Tokens {
    /// Tokens signed with `key` alone.
    pub fn new(key: SigningKey, issuer: String) -> Self {
        Self::with_other_keys(key, &OtherKeys::default(), issuer)
            .expect("one key is always a valid set")
    }

    /// Tokens signed with `key`; the JWKS lists `key`, then `others.next`, then
    /// `others.retired`, and `:complete` accepts tokens of any of them.
    ///
    /// # Errors
    /// Two of the keys are the same key, or there are more than [`RETIRED_SIGNING_KEYS_MAX`]
    /// retired ones.
    pub fn with_other_keys(
        key: SigningKey,
        others: &OtherKeys,
        issuer: String,
    ) -> Result<Self, String> {
        if others.retired.len() > RETIRED_SIGNING_KEYS_MAX {
            return Err(format!(
                "at most {RETIRED_SIGNING_KEYS_MAX} retired signing keys, got {}",
                others.retired.len()
            ));
        }
        let mut published = vec![key.public_jwk()];
        let named = std::iter::once(("the next signing key", others.next.as_ref())).chain(
            others
                .retired
                .iter()
                .map(|jwk| ("a retired signing key", Some(jwk))),
        );
        for (name, jwk) in named {
            let Some(jwk) = jwk else { continue };
            if published.iter().any(|known| known.kid == jwk.kid) {
                return Err(format!(
                    "{name} (kid {}) is the signing key or another key given already",
                    jwk.kid
                ));
            }
            published.push(jwk.clone());
        }
        let jwks_json = Jwk::set_json(&published);
        let verifier = Verifier::from_jwks_json(&jwks_json)
            .map_err(|error| format!("the signing keys do not make a key set: {error}"))?;
        let challenges = Challenges::new(&key, &others.challenge_keys);
        Ok(Self {
            key,
            challenges,
            verifier,
            issuer,
            jwks_json,
            recent: Mutex::default(),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn kid(&self) -> &str {
        self.key.kid()
    }

    /// Join challenges (issued with the signing key's derived key).
    pub fn challenges(&self) -> &Challenges {
        &self.challenges
    }

    /// A token for an ACTIVE session: `exp` is the earlier of the session's `expiresAt` and
    /// five minutes from now.
    ///
    /// JWT times are whole seconds, so two tokens for one session issued within the same second
    /// carry the same claims but `jti`. Such a token is reused rather than signed again: an
    /// Ed25519 signature costs about 20 µs, several times a whole status poll, and an ACTIVE page
    /// may poll several times a second. A token returned twice is still exactly as fresh as the
    /// API promises (issued this second, `exp` from the current `expiresAt`).
    pub fn issue(&self, room: &str, session: &str, expires_at_ms: u64) -> String {
        let now = unix_now_s();
        let exp = (expires_at_ms / 1000).min(now + TOKEN_LIFETIME_MAX_S);
        let key = (session.to_string(), exp);
        {
            let mut recent = self.recent.lock();
            if recent.second != now {
                recent.second = now;
                recent.tokens.clear();
            }
            if let Some(token) = recent.tokens.get(&key) {
                return token.clone();
            }
        }
        let jti: [u8; 12] = rand::random();
        let claims = AdmissionClaims {
            iss: self.issuer.clone(),
            aud: room.to_string(),
            sub: session.to_string(),
            iat: now,
            nbf: now,
            exp,
            jti: jti.iter().map(|b| format!("{b:02x}")).collect(),
        };
        let token = self.key.sign(&claims);
        let mut recent = self.recent.lock();
        if recent.second == now && recent.tokens.len() < RECENT_TOKENS_MAX {
            recent.tokens.insert(key, token.clone());
        }
        token
    }

    /// Checks that `token` is a valid, unexpired token of this service for `session` in `room`.
    pub fn check(&self, token: &str, room: &str, session: &str) -> Result<(), String> {
        let expected = Expectations {
            issuer: self.issuer.clone(),
            audience: Some(room.to_string()),
            leeway_s: TOKEN_LEEWAY_S,
        };
        let claims = self
            .verifier
            .verify(token, &expected, unix_now_s())
            .map_err(|e| e.to_string())?;
        if claims.sub != session {
            return Err("the token belongs to another session".into());
        }
        Ok(())
    }

    pub fn jwks_json(&self) -> &str {
        &self.jwks_json
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_reused_within_a_second_only_for_the_same_claims() {
        let tokens = Tokens::new(SigningKey::generate().unwrap(), "waitroom".into());
        let far = (unix_now_s() + 3600) * 1000;
        let near = (unix_now_s() + 60) * 1000;
        // Retry across a second boundary, which empties the cache between the two calls.
        let (a, b) = loop {
            let second = unix_now_s();
            let pair = (
                tokens.issue("r", "wr_a", far),
                tokens.issue("r", "wr_a", far),
            );
            if unix_now_s() == second {
                break pair;
            }
        };
        assert_eq!(a, b);
        assert_ne!(tokens.issue("r", "wr_b", far), a, "another session");
        assert_ne!(tokens.issue("r", "wr_a", near), a, "another expiry");
        assert!(tokens.check(&a, "r", "wr_a").is_ok());
        assert!(tokens.check(&a, "r", "wr_b").is_err());
    }

    /// A rotation from `old` to `new`, step by step: every node's tokens verify everywhere.
    #[test]
    fn a_rotation_publishes_and_accepts_the_next_and_the_retired_key() {
        let (old, new) = (
            SigningKey::generate().unwrap(),
            SigningKey::generate().unwrap(),
        );
        let far = (unix_now_s() + 3600) * 1000;
        // Step 1: still signing with `old`, publishing `new` too.
        let before = Tokens::with_other_keys(
            old.clone(),
            &OtherKeys {
                next: Some(new.public_jwk()),
                retired: vec![],
                challenge_keys: vec![new.clone()],
            },
            "waitroom".into(),
        )
        .unwrap();
        // Step 2: signing with `new`, keeping `old` for tokens it signed.
        let after = Tokens::with_other_keys(
            new.clone(),
            &OtherKeys {
                next: None,
                retired: vec![old.public_jwk()],
                challenge_keys: vec![old.clone()],
            },
            "waitroom".into(),
        )
        .unwrap();
        let kids = |tokens: &Tokens| -> Vec<String> {
            let set: serde_json::Value = serde_json::from_str(tokens.jwks_json()).unwrap();
            set["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|key| key["kid"].as_str().unwrap().to_owned())
                .collect()
        };
        // Join challenges of either key pass on either side of the rotation, the private keys
        // given (see `crate::challenge`).
        let room = waitroom_core::RoomId::new("r").unwrap();
        let now_ms = 1_800_000_000_000;
        for (issuer, checker) in [(&before, &after), (&after, &before)] {
            let issued = issuer.challenges().issue(&room, 1, now_ms);
            let solution = waitroom_load::pow::solve(&issued.challenge, 1, 0, 1 << 20)
                .unwrap()
                .solution;
            assert!(
                checker
                    .challenges()
                    .check(&room, &issued.challenge, &solution, 1, now_ms)
                    .is_ok()
            );
        }
        assert_eq!(kids(&before), [old.kid(), new.kid()]);
        assert_eq!(kids(&after), [new.kid(), old.kid()]);
        let (signed_before, signed_after) = (
            before.issue("r", "wr_a", far),
            after.issue("r", "wr_a", far),
        );
        for tokens in [&before, &after] {
            assert!(tokens.check(&signed_before, "r", "wr_a").is_ok());
            assert!(tokens.check(&signed_after, "r", "wr_a").is_ok());
        }
        // Step 3: `old` dropped: its tokens are refused.
        let done = Tokens::new(new.clone(), "waitroom".into());
        assert!(done.check(&signed_after, "r", "wr_a").is_ok());
        assert!(done.check(&signed_before, "r", "wr_a").is_err());
    }

    #[test]
    fn a_key_given_twice_or_too_many_retired_keys_are_refused() {
        let key = SigningKey::generate().unwrap();
        let other = SigningKey::generate().unwrap();
        let twice = [
            OtherKeys {
                next: Some(key.public_jwk()),
                retired: vec![],
                challenge_keys: vec![],
            },
            OtherKeys {
                next: Some(other.public_jwk()),
                retired: vec![other.public_jwk()],
                challenge_keys: vec![],
            },
        ];
        for others in twice {
            let error = Tokens::with_other_keys(key.clone(), &others, "waitroom".into())
                .err()
                .unwrap();
            assert!(error.contains("given already"), "{error}");
        }
        let many = OtherKeys {
            next: None,
            retired: (0..=RETIRED_SIGNING_KEYS_MAX)
                .map(|_| SigningKey::generate().unwrap().public_jwk())
                .collect(),
            challenge_keys: vec![],
        };
        let error = Tokens::with_other_keys(key, &many, "waitroom".into())
            .err()
            .unwrap();
        assert!(error.contains("at most"), "{error}");
    }
}
