//! The pieces of the JWS compact serialisation (RFC 7515 §7.1) shared by signing and
//! verification: the base64url engine, the algorithm names and the protected header.

use base64::Engine as _;
use base64::engine::GeneralPurpose;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde::de::IgnoredAny;

/// base64url without padding (RFC 7515 §2). Decoding is strict: padding and non-zero trailing
/// bits are rejected, so every token has exactly one spelling.
pub(crate) const BASE64URL: GeneralPurpose = URL_SAFE_NO_PAD;

/// The JOSE algorithm name of Ed25519 signatures (RFC 8037 §3.1), written in every header.
pub(crate) const ALG_EDDSA: &str = "EdDSA";

/// The fully-specified name for the same algorithm (RFC 9864). Accepted on input, never written:
/// it names exactly the same Ed25519 signature, so accepting it opens no algorithm confusion.
pub(crate) const ALG_ED25519: &str = "Ed25519";

/// Length of an Ed25519 signature, in bytes, and of its base64url text, in characters.
pub(crate) const SIGNATURE_LENGTH_BYTES: usize = 64;
pub(crate) const SIGNATURE_LENGTH_BASE64_CHARS: usize = 86;

/// Whether `alg` names Ed25519 signatures.
pub(crate) fn is_ed25519_alg(alg: &str) -> bool {
    alg == ALG_EDDSA || alg == ALG_ED25519
}

/// The protected header as read from a token. Only what verification looks at; other
/// parameters (`jku`, `jwk`, `x5u`, ...) are ignored: keys come from the verifier, never from
/// the token. Duplicate parameters are a JSON error (serde rejects duplicate fields).
#[derive(Deserialize)]
pub(crate) struct Header {
    pub(crate) alg: String,
    #[serde(default)]
    pub(crate) kid: Option<String>,
    #[serde(default)]
    pub(crate) typ: Option<String>,
    /// Present only to be refused: we understand no extension (RFC 7515 §4.1.11).
    #[serde(default)]
    pub(crate) crit: Option<IgnoredAny>,
}

/// base64url-encodes `bytes` (no padding).
pub(crate) fn encode(bytes: &[u8]) -> String {
    BASE64URL.encode(bytes)
}

/// The base64url text of the protected header `{"alg":"EdDSA","typ":"JWT","kid":...}`.
#[cfg(feature = "sign")]
pub(crate) fn encoded_header(kid: &str) -> String {
    #[derive(serde::Serialize)]
    struct HeaderOut<'a> {
        alg: &'a str,
        typ: &'a str,
        kid: &'a str,
    }
    let json = serde_json::to_vec(&HeaderOut {
        alg: ALG_EDDSA,
        typ: "JWT",
        kid,
    })
    .expect("a struct of strings always serialises");
    encode(&json)
}
