//! Every limit of the crate, in one place, each with its unit and the reason for its value.

/// Longest token accepted, in bytes, checked before any decoding.
///
/// A waitroom token is about 450 bytes: header ~110, claims ~250 (room id up to 64 characters,
/// session id up to 128), signature 86. 4 KiB leaves room for long issuers while keeping the
/// work a hostile input can cause (base64 and JSON before the signature check) to a few
/// microseconds. It is also the size browsers allow for one cookie.
pub const TOKEN_LENGTH_MAX_BYTES: usize = 4 * 1024;

/// Longest JWK Set document [`Verifier::from_jwks_json`](crate::Verifier::from_jwks_json)
/// accepts, in bytes. One Ed25519 JWK is about 150 bytes; a shared JWKS that also lists RSA
/// keys (~700 bytes each) still fits many times over.
pub const JWKS_LENGTH_MAX_BYTES: usize = 64 * 1024;

/// Most keys one [`Verifier`](crate::Verifier) holds. Key rotation needs two or three (old,
/// current, next); the `kid` lookup is a linear scan, so the set stays small on purpose.
pub const VERIFIER_KEYS_MAX: usize = 16;

/// Longest key id accepted from a JWKS, in bytes. A thumbprint `kid` is 43 bytes.
pub const KID_LENGTH_MAX_BYTES: usize = 256;

/// Largest clock-skew allowance honoured by [`Expectations`](crate::Expectations), in seconds.
///
/// Tokens live at most 5 minutes and are renewed on every heartbeat; a larger `leeway_s` is
/// clamped to this so that a configuration slip cannot keep expired tokens alive for long.
pub const LEEWAY_MAX_S: u64 = 60;

/// Longest PKCS#8 PEM private key accepted (as a string or as a key file), in bytes. An
/// Ed25519 key is 119 bytes (PKCS#8 v1) or ~180 bytes (v2, with the public key).
#[cfg(feature = "sign")]
pub const KEY_PEM_LENGTH_MAX_BYTES: usize = 8 * 1024;
