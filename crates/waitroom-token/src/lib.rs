//! # waitroom-token
//!
//! Admission tokens of [waitroom](https://github.com/waitroom/waitroom), a virtual waiting
//! room. When a person is admitted, waitroom hands their page a short-lived JWT signed with
//! Ed25519 (the session view's `admissionToken`); the protected service (seat selection,
//! checkout) checks it **offline** with this crate before letting the person in.
//!
//! A token's claims ([`AdmissionClaims`]): `iss` (waitroom's configured issuer), `aud` (the room
//! id), `sub` (the waiting-room session id), `iat`, `nbf`, `exp` (at most 5 minutes after issue,
//! never after the session's own expiry) and `jti`; its header is
//! `{"alg":"EdDSA","typ":"JWT","kid":...}`, `kid` being the RFC 7638 thumbprint of the key.
//!
//! # How a protected service verifies a token
//!
//! 1. **Fetch the keys once, cache them.** `GET https://<waitroom>/.well-known/jwks.json`
//!    returns a JWK Set; build a [`Verifier`] from it at start-up and share it. Keys change only
//!    when the operator rotates them: refresh it every few minutes, and keep the old one when
//!    a fetch fails (with the `tower` feature, `RequireAdmission::with_verifier_source` lets
//!    the layer see the refreshed one).
//!    Never fetch keys per request, and never take a key from the token itself.
//! 2. **Verify offline**, with waitroom's issuer, the room you serve as audience, and a few
//!    seconds of leeway for clock skew. [`Verifier::verify`] checks the length, that `alg` is
//!    `EdDSA` (so `none`/`HS256` tokens are refused), that `kid` names a known key, the
//!    signature, then `exp`, `nbf`, `iss` and `aud`. Answer `401` to anything else.
//! 3. **Exchange it for your own session.** The token proves "admitted to room `aud`, as
//!    session `sub`, right now". Once verified at the entrance of your flow, set your own
//!    session cookie (`HttpOnly`, `Secure`, `SameSite=Lax`), bound to `sub` and no longer-lived
//!    than you want an admission to last; remember seen `jti`s until their `exp` if a token must
//!    be used only once. Waitroom renews the token on every heartbeat of the waiting page, and
//!    an evicted or expired session stops getting new ones: require a fresh token again
//!    (rather than your own cookie) wherever that revocation must take effect.
//! 4. **Say when you are done.** `POST /api/waiting-room/sessions/{sub}:complete` with
//!    `Authorization: Bearer <token>` frees the slot for the next person in line.
//!
//! ```
//! use waitroom_token::{Expectations, Verifier, VerifyError};
//!
//! // The body of GET /.well-known/jwks.json (here: the RFC 8037 example key).
//! let jwks = r#"{"keys":[{"kty":"OKP","crv":"Ed25519",
//!     "x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
//!     "kid":"kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k","use":"sig","alg":"EdDSA"}]}"#;
//! let verifier = Verifier::from_jwks_json(jwks)?;
//! let expected = Expectations::new("https://queue.example.com", "eras-tour-2026-05-01")
//!     .with_leeway_s(5);
//!
//! // The token from `Authorization: Bearer ...` (or a query parameter, or a cookie).
//! let token = "eyJhbGciOiJFZERTQSIsInR5cCI6IkpXVCIsImtpZCI6ImtQcktfcW14VldhWVZBOXd3QkY2SXVvM3ZWeno3VHhIQ1R3WEJ5Z3JTNGsifQ.\
//!              eyJpc3MiOiJodHRwczovL3F1ZXVlLmV4YW1wbGUuY29tIiwiYXVkIjoiZXJhcy10b3VyLTIwMjYtMDUtMDEiLCJzdWIiOiJ3cl8yYjdrNHFleGFtcGxlIiwiaWF0IjoxNzk1MDAwMDAwLCJuYmYiOjE3OTUwMDAwMDAsImV4cCI6MTc5NTAwMDMwMCwianRpIjoidGtfMDAwMSJ9.\
//!              Nj2asgXS4DMazshqhX-H9PbySpc58JXlExxi3Yg57bRStqDW3fNKcr8bl-pTvZp4LNNM_x3iQpDowxuoFkMMCg";
//!
//! // Time is an argument: pass the system clock's Unix seconds in production.
//! let now_unix_s = 1_795_000_100;
//! let claims = verifier.verify(token, &expected, now_unix_s)?;
//! assert_eq!(claims.sub, "wr_2b7k4qexample"); // the waiting-room session id
//!
//! // Five minutes (and the leeway) later the same token is refused.
//! assert_eq!(verifier.verify(token, &expected, 1_795_000_305), Err(VerifyError::Expired));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Features
//! - *(always)* verification: [`Verifier`], [`Expectations`], [`AdmissionClaims`], [`Jwk`].
//! - `tower`: `RequireAdmission`, a tower layer that takes the token from
//!   `Authorization: Bearer`, the `waitroomToken` query parameter or a cookie, verifies it,
//!   puts the claims into the request extensions, and otherwise answers `401` with an
//!   `application/problem+json` body. Adds `http`, `tower-layer`, `tower-service`.
//! - `sign`: `SigningKey`: generation, PKCS#8 PEM loading and saving
//!   (`SigningKey::load_or_generate`), the JWKS, and signing. Used by the waitroom node; a
//!   protected service does not need it. Adds `getrandom`, `zeroize` and PKCS#8 support.
//!
//! # Why not a JWT library
//! Waitroom issues exactly one kind of token with exactly one algorithm, so this crate uses
//! `ed25519-dalek` directly and writes the ~40 lines of JWS compact serialisation itself. The
//! algorithm is fixed in code rather than chosen from the token, which rules out algorithm
//! confusion by construction, and the dependency tree stays small for the services that embed
//! it. `jsonwebtoken` 11 would need a crypto backend: `aws_lc_rs` (a C/assembly build) or
//! `rust_crypto`, which also compiles RSA, P-256, P-384 and HMAC that we never use.
//!
//! # Layout
//! - `claims`: [`AdmissionClaims`] and [`Expectations`].
//! - `jws`: the compact serialisation pieces: base64url, algorithm names, the header.
//! - `jwk`: [`Jwk`], RFC 7638 [`thumbprint`]s, reading a JWK Set ([`KeySetError`]).
//! - `verify`: [`Verifier`] and [`VerifyError`].
//! - `sign` (feature `sign`): `SigningKey`, key files (`SigningKeyError`).
//! - `layer` (feature `tower`): `RequireAdmission`.
//! - [`limits`]: every limit, with units.

mod claims;
mod jwk;
mod jws;
pub mod limits;
mod verify;

#[cfg(feature = "tower")]
mod layer;
#[cfg(feature = "sign")]
mod sign;

pub use claims::{AdmissionClaims, Expectations};
pub use jwk::{Jwk, KeySetError, thumbprint};
pub use verify::{Verifier, VerifyError};

#[cfg(feature = "tower")]
pub use layer::{RequireAdmission, RequireAdmissionService, ResponseFuture, TOKEN_PARAMETER_NAME};
#[cfg(feature = "sign")]
pub use sign::{SigningKey, SigningKeyError, public_jwk_from_pem};

/// Helpers shared by the unit tests: keys, hand-made tokens (any header, any payload) and
/// typical claims, without needing the `sign` feature.
#[cfg(test)]
pub(crate) mod test_support {
    use ed25519_dalek::Signer as _;

    use crate::{AdmissionClaims, Expectations, Jwk, Verifier};

    pub(crate) const ISSUER: &str = "https://queue.example.com";
    pub(crate) const ROOM: &str = "eras-tour-2026-05-01";
    pub(crate) const NOW_UNIX_S: u64 = 1_795_000_000;

    /// A fixed key per `seed`.
    pub(crate) fn key(seed: u8) -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
    }

    pub(crate) fn kid(key: &ed25519_dalek::SigningKey) -> String {
        crate::thumbprint(key.verifying_key().as_bytes())
    }

    pub(crate) fn verifier(key: &ed25519_dalek::SigningKey) -> Verifier {
        let jwks = Jwk::set_json(&[Jwk::from_public_key_bytes(key.verifying_key().as_bytes())]);
        Verifier::from_jwks_json(&jwks).expect("a valid key set")
    }

    pub(crate) fn expectations() -> Expectations {
        Expectations::new(ISSUER, ROOM)
    }

    /// Claims valid from `NOW_UNIX_S` for 5 minutes.
    pub(crate) fn claims() -> AdmissionClaims {
        AdmissionClaims {
            iss: ISSUER.to_owned(),
            aud: ROOM.to_owned(),
            sub: "wr_2b7k4qexample".to_owned(),
            iat: NOW_UNIX_S,
            nbf: NOW_UNIX_S,
            exp: NOW_UNIX_S + 300,
            jti: "tk_0001".to_owned(),
        }
    }

    /// `base64url(header).base64url(payload).base64url(signature)`, signed with `key`.
    pub(crate) fn raw_token(
        key: &ed25519_dalek::SigningKey,
        header: &str,
        payload: &str,
    ) -> String {
        let signing_input = format!(
            "{}.{}",
            crate::jws::encode(header.as_bytes()),
            crate::jws::encode(payload.as_bytes())
        );
        let signature = key.sign(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            crate::jws::encode(&signature.to_bytes())
        )
    }

    /// The header waitroom writes, for `key`.
    pub(crate) fn header(key: &ed25519_dalek::SigningKey) -> String {
        format!(r#"{{"alg":"EdDSA","typ":"JWT","kid":"{}"}}"#, kid(key))
    }

    /// A valid token for `claims`, signed with `key`.
    pub(crate) fn token(key: &ed25519_dalek::SigningKey, claims: &AdmissionClaims) -> String {
        let payload = serde_json::to_string(claims).expect("claims serialise");
        raw_token(key, &header(key), &payload)
    }
}
