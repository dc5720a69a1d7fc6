//! The claims of an admission token and what a verifier expects of them.

use serde::{Deserialize, Serialize};

/// The claims of an admission token (the JWT payload).
///
/// Times are JWT NumericDates: whole seconds since the Unix epoch (RFC 7519 §2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdmissionClaims {
    /// Issuer: the waitroom service's configured issuer (e.g. `https://queue.example.com`).
    pub iss: String,
    /// Audience: the room id the session was admitted to.
    pub aud: String,
    /// Subject: the waiting-room session id.
    pub sub: String,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Not before, Unix seconds.
    pub nbf: u64,
    /// Expires at, Unix seconds: the token is invalid from this second on.
    pub exp: u64,
    /// Token id, unique per issued token.
    pub jti: String,
}

/// What [`Verifier::verify`](crate::Verifier::verify) requires of a token beyond its signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expectations {
    /// The exact `iss` the token must carry (waitroom's configured issuer).
    pub issuer: String,
    /// The exact `aud` (room id) the token must carry; `None` accepts any room, in which case
    /// the caller must check [`AdmissionClaims::aud`] itself if it serves several rooms.
    pub audience: Option<String>,
    /// Clock-skew allowance for `exp` and `nbf`, in seconds. Clamped to
    /// [`LEEWAY_MAX_S`](crate::limits::LEEWAY_MAX_S).
    pub leeway_s: u64,
}

impl Expectations {
    /// Expect tokens from `issuer` for the room `audience`, with no clock-skew allowance.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: Some(audience.into()),
            leeway_s: 0,
        }
    }

    /// The same expectations with a clock-skew allowance of `leeway_s` seconds.
    #[must_use]
    pub fn with_leeway_s(mut self, leeway_s: u64) -> Self {
        self.leeway_s = leeway_s;
        self
    }
}
