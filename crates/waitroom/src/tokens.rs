//! Admission tokens: issued on every ACTIVE view, checked on `:complete`, published as a JWKS.

use std::time::{SystemTime, UNIX_EPOCH};

use waitroom_token::{AdmissionClaims, Expectations, SigningKey, Verifier};

/// Longest lifetime of a token (the API: `exp` ≤ 5 minutes after issue).
pub const TOKEN_LIFETIME_MAX_S: u64 = 300;
/// Clock skew tolerated when checking a token on `:complete`.
pub const TOKEN_LEEWAY_S: u64 = 5;

pub struct Tokens {
    key: SigningKey,
    verifier: Verifier,
    issuer: String,
    jwks_json: String,
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
    pub fn issue(&self, room: &str, session: &str, expires_at_ms: u64) -> String {
        let now = unix_now_s();
        let jti: [u8; 12] = rand::random();
        let claims = AdmissionClaims {
            iss: self.issuer.clone(),
            aud: room.to_string(),
            sub: session.to_string(),
            iat: now,
            nbf: now,
            exp: (expires_at_ms / 1000).min(now + TOKEN_LIFETIME_MAX_S),
            jti: jti.iter().map(|b| format!("{b:02x}")).collect(),
        };
        self.key.sign(&claims)
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
