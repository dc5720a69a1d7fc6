//! Admission tokens: issued on every ACTIVE view, checked on `:complete`, published as a JWKS.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use waitroom_token::{AdmissionClaims, Expectations, SigningKey, Verifier};

use crate::limits::RECENT_TOKENS_MAX;
pub use crate::limits::{TOKEN_LEEWAY_S, TOKEN_LIFETIME_MAX_S};

pub struct Tokens {
    key: SigningKey,
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

impl Tokens {
    pub fn new(key: SigningKey, issuer: String) -> Self {
        let verifier = Verifier::from_signing_key(&key);
        let jwks_json = key.jwks_json();
        Self {
            key,
            verifier,
            issuer,
            jwks_json,
            recent: Mutex::default(),
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn kid(&self) -> &str {
        self.key.kid()
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
}
