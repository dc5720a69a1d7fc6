//! JSON Web Keys (RFC 7517) for Ed25519 (RFC 8037), their thumbprints (RFC 7638) and the
//! reading of a JWK Set into verification keys.

use std::fmt;

use base64::Engine as _;
use ed25519_dalek::VerifyingKey;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::jws::{self, ALG_EDDSA, BASE64URL};
use crate::limits::{JWKS_LENGTH_MAX_BYTES, KID_LENGTH_MAX_BYTES, VERIFIER_KEYS_MAX};

/// One public Ed25519 key as a JWK (RFC 8037 §2), as waitroom publishes it in its JWK Set.
///
/// Field order is the order of the JSON: `kty`, `crv`, `x`, `kid`, `use`, `alg`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type: always `OKP`.
    pub kty: String,
    /// Curve: always `Ed25519`.
    pub crv: String,
    /// The 32-byte public key, base64url without padding.
    pub x: String,
    /// Key id: the RFC 7638 thumbprint of this key.
    pub kid: String,
    /// Public key use: always `sig`.
    #[serde(rename = "use")]
    pub key_use: String,
    /// Algorithm: always `EdDSA`.
    pub alg: String,
}

impl Jwk {
    /// The JWK of an Ed25519 public key, with its thumbprint as `kid`.
    pub fn from_public_key_bytes(public_key: &[u8; 32]) -> Self {
        Self {
            kty: "OKP".to_owned(),
            crv: "Ed25519".to_owned(),
            x: jws::encode(public_key),
            kid: thumbprint(public_key),
            key_use: "sig".to_owned(),
            alg: ALG_EDDSA.to_owned(),
        }
    }

    /// The JWK Set `{"keys":[...]}` holding `keys`, as JSON text (RFC 7517 §5).
    pub fn set_json(keys: &[Jwk]) -> String {
        #[derive(Serialize)]
        struct Set<'a> {
            keys: &'a [Jwk],
        }
        serde_json::to_string(&Set { keys }).expect("a struct of strings always serialises")
    }
}

/// The RFC 7638 JWK thumbprint of an Ed25519 public key, base64url (43 characters).
///
/// It is the SHA-256 of the key's required members in lexicographic order with no whitespace:
/// `{"crv":"Ed25519","kty":"OKP","x":"..."}` (RFC 8037 Appendix A.3). waitroom uses it as `kid`,
/// so a key's id follows from the key itself and cannot collide with another key's.
pub fn thumbprint(public_key: &[u8; 32]) -> String {
    let x = jws::encode(public_key);
    let mut hasher = Sha256::new();
    hasher.update(br#"{"crv":"Ed25519","kty":"OKP","x":""#);
    hasher.update(x.as_bytes());
    hasher.update(br#""}"#);
    jws::encode(&hasher.finalize())
}

/// Why a key set cannot be used for verification.
#[derive(Debug)]
#[non_exhaustive]
pub enum KeySetError {
    /// The JWK Set document is longer than [`JWKS_LENGTH_MAX_BYTES`].
    TooLong,
    /// The document is not a JWK Set (`{"keys":[...]}` with string members).
    Json(serde_json::Error),
    /// A key carries private key material (`d`): a JWK Set must be public.
    PrivateKeyMaterial {
        /// Position of the key in `keys`.
        index: usize,
    },
    /// An Ed25519 key's `x` is missing, not 32 bytes of base64url, not a curve point, or a
    /// weak (small-order) key.
    InvalidKey {
        /// Position of the key in `keys`, or 0 for a single key.
        index: usize,
    },
    /// A `kid` is empty or longer than [`KID_LENGTH_MAX_BYTES`].
    InvalidKid {
        /// Position of the key in `keys`.
        index: usize,
    },
    /// Two usable keys share a `kid`: a token naming it would be ambiguous.
    DuplicateKid {
        /// Position of the second key in `keys`.
        index: usize,
    },
    /// More than [`VERIFIER_KEYS_MAX`] usable keys.
    TooManyKeys,
    /// The set holds no Ed25519 signature key.
    NoUsableKey,
}

impl fmt::Display for KeySetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLong => {
                write!(
                    f,
                    "the JWK Set is longer than {JWKS_LENGTH_MAX_BYTES} bytes"
                )
            }
            Self::Json(error) => write!(f, "not a JWK Set: {error}"),
            Self::PrivateKeyMaterial { index } => {
                write!(
                    f,
                    "key {index} of the JWK Set contains private key material (\"d\")"
                )
            }
            Self::InvalidKey { index } => {
                write!(f, "key {index} is not a valid Ed25519 public key")
            }
            Self::InvalidKid { index } => write!(
                f,
                "key {index} has an empty kid or one longer than {KID_LENGTH_MAX_BYTES} bytes"
            ),
            Self::DuplicateKid { index } => {
                write!(f, "key {index} has the same kid as an earlier key")
            }
            Self::TooManyKeys => {
                write!(
                    f,
                    "the JWK Set has more than {VERIFIER_KEYS_MAX} Ed25519 keys"
                )
            }
            Self::NoUsableKey => write!(f, "the JWK Set has no Ed25519 signature key"),
        }
    }
}

impl std::error::Error for KeySetError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Json(error) => Some(error),
            _ => None,
        }
    }
}

/// A key as read from a JWK Set: every member optional, so keys of other types parse too.
#[derive(Deserialize)]
struct JwkIn {
    kty: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    kid: Option<String>,
    #[serde(rename = "use")]
    key_use: Option<String>,
    alg: Option<String>,
    d: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct JwkSetIn {
    keys: Vec<JwkIn>,
}

/// Parses an Ed25519 public key, refusing invalid points and weak (small-order) keys.
pub(crate) fn verifying_key(public_key: &[u8; 32]) -> Option<VerifyingKey> {
    VerifyingKey::from_bytes(public_key)
        .ok()
        .filter(|key| !key.is_weak())
}

/// The `(kid, key)` pairs of the Ed25519 signature keys of a JWK Set.
///
/// Keys of another type or curve, or marked for another use or algorithm, are skipped. A key
/// without `kid` gets its thumbprint.
pub(crate) fn read_set(jwks_json: &str) -> Result<Vec<(String, VerifyingKey)>, KeySetError> {
    if jwks_json.len() > JWKS_LENGTH_MAX_BYTES {
        return Err(KeySetError::TooLong);
    }
    let set: JwkSetIn = serde_json::from_str(jwks_json).map_err(KeySetError::Json)?;
    let mut keys: Vec<(String, VerifyingKey)> = Vec::new();
    for (index, jwk) in set.keys.into_iter().enumerate() {
        if jwk.d.is_some() {
            return Err(KeySetError::PrivateKeyMaterial { index });
        }
        let is_ed25519 = jwk.kty.as_deref() == Some("OKP") && jwk.crv.as_deref() == Some("Ed25519");
        let for_signatures = jwk
            .key_use
            .as_deref()
            .is_none_or(|key_use| key_use == "sig");
        let for_eddsa = jwk.alg.as_deref().is_none_or(jws::is_ed25519_alg);
        if !(is_ed25519 && for_signatures && for_eddsa) {
            continue;
        }
        let mut public_key = [0_u8; 32];
        let decoded = jwk
            .x
            .as_deref()
            .and_then(|x| BASE64URL.decode_slice(x, &mut public_key).ok());
        let key = match decoded {
            Some(32) => verifying_key(&public_key),
            _ => None,
        }
        .ok_or(KeySetError::InvalidKey { index })?;
        let kid = match jwk.kid {
            Some(kid) if kid.is_empty() || kid.len() > KID_LENGTH_MAX_BYTES => {
                return Err(KeySetError::InvalidKid { index });
            }
            Some(kid) => kid,
            None => thumbprint(&public_key),
        };
        if keys.iter().any(|(known, _)| *known == kid) {
            return Err(KeySetError::DuplicateKid { index });
        }
        if keys.len() == VERIFIER_KEYS_MAX {
            return Err(KeySetError::TooManyKeys);
        }
        keys.push((kid, key));
    }
    if keys.is_empty() {
        return Err(KeySetError::NoUsableKey);
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Verifier;
    use crate::test_support::{NOW_UNIX_S, claims, expectations, key, kid, token};

    /// RFC 8037 Appendix A.2 public key and A.3 thumbprint.
    const RFC8037_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
    const RFC8037_THUMBPRINT: &str = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k";

    fn rfc8037_public_key() -> [u8; 32] {
        let mut public_key = [0; 32];
        assert_eq!(BASE64URL.decode_slice(RFC8037_X, &mut public_key), Ok(32));
        public_key
    }

    fn jwk_json(public_key: &[u8; 32], extra: &str) -> String {
        format!(
            r#"{{"kty":"OKP","crv":"Ed25519","x":"{}"{extra}}}"#,
            jws::encode(public_key)
        )
    }

    #[test]
    fn thumbprint_matches_rfc8037_appendix_a3() {
        assert_eq!(thumbprint(&rfc8037_public_key()), RFC8037_THUMBPRINT);
    }

    #[test]
    fn a_jwk_serialises_in_the_published_shape() {
        let jwk = Jwk::from_public_key_bytes(&rfc8037_public_key());
        assert_eq!(
            Jwk::set_json(&[jwk]),
            format!(
                r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{RFC8037_X}","kid":"{RFC8037_THUMBPRINT}","use":"sig","alg":"EdDSA"}}]}}"#
            )
        );
    }

    #[test]
    fn a_set_with_several_keys_picks_by_kid_and_skips_other_key_types() {
        let (one, two) = (key(1), key(2));
        let jwks = format!(
            r#"{{"keys":[
                {{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZpt","e":"AQAB","kid":"rsa","alg":"RS256"}},
                {{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}},
                {{"kty":"OKP","crv":"X25519","x":"hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo"}},
                {},
                {},
                {}
            ]}}"#,
            jwk_json(
                one.verifying_key().as_bytes(),
                r#","kid":"one","use":"sig","alg":"EdDSA""#
            ),
            jwk_json(two.verifying_key().as_bytes(), ""),
            jwk_json(key(3).verifying_key().as_bytes(), r#","use":"enc""#),
        );
        let verifier = Verifier::from_jwks_json(&jwks).expect("a usable set");
        assert_eq!(
            verifier.kids().collect::<Vec<_>>(),
            ["one", kid(&two).as_str()]
        );
        // Key two has no kid in the set: it is known by its thumbprint, which its tokens carry.
        assert_eq!(
            verifier.verify(&token(&two, &claims()), &expectations(), NOW_UNIX_S),
            Ok(claims())
        );
        // Key one is known as "one", so a token naming its thumbprint is unknown.
        let result = verifier.verify(&token(&one, &claims()), &expectations(), NOW_UNIX_S);
        assert_eq!(result, Err(crate::VerifyError::UnknownKey));
    }

    #[test]
    fn unusable_sets_are_refused() {
        let good = key(1);
        let x = jws::encode(good.verifying_key().as_bytes());
        let good_jwk = jwk_json(good.verifying_key().as_bytes(), "");
        // The identity point: a valid encoding, but a small-order (weak) key.
        let mut identity = [0_u8; 32];
        identity[0] = 1;
        let too_many: Vec<String> = (1..=17)
            .map(|seed| jwk_json(key(seed).verifying_key().as_bytes(), ""))
            .collect();
        let with = |extra: &str| {
            format!(
                r#"{{"keys":[{}]}}"#,
                jwk_json(good.verifying_key().as_bytes(), extra)
            )
        };
        let long_kid = format!(r#","kid":"{}""#, "k".repeat(KID_LENGTH_MAX_BYTES + 1));
        // Each set, and the start of the `Debug` text of the error it must produce.
        let cases = [
            ("[]".to_owned(), "Json"),
            (r#"{"keys":{}}"#.to_owned(), "Json"),
            (r#"{"keys":[]}"#.to_owned(), "NoUsableKey"),
            (
                r#"{"keys":[{"kty":"RSA","n":"x","e":"AQAB"}]}"#.to_owned(),
                "NoUsableKey",
            ),
            (with(r#","d":"secret""#), "PrivateKeyMaterial { index: 0 }"),
            (
                format!(
                    r#"{{"keys":[{good_jwk},{{"kty":"OKP","crv":"Ed25519","x":"{}"}}]}}"#,
                    &x[1..]
                ),
                "InvalidKey { index: 1 }",
            ),
            (
                r#"{"keys":[{"kty":"OKP","crv":"Ed25519"}]}"#.to_owned(),
                "InvalidKey { index: 0 }",
            ),
            (
                format!(r#"{{"keys":[{}]}}"#, jwk_json(&identity, "")),
                "InvalidKey { index: 0 }",
            ),
            (with(r#","kid":"""#), "InvalidKid { index: 0 }"),
            (with(&long_kid), "InvalidKid { index: 0 }"),
            (
                format!(r#"{{"keys":[{good_jwk},{good_jwk}]}}"#),
                "DuplicateKid { index: 1 }",
            ),
            (
                format!(r#"{{"keys":[{}]}}"#, too_many.join(",")),
                "TooManyKeys",
            ),
        ];
        for (jwks, expected) in cases {
            let error = Verifier::from_jwks_json(&jwks).expect_err(&jwks);
            assert!(
                format!("{error:?}").starts_with(expected),
                "{jwks}: {error:?}"
            );
        }
        let padded = format!(
            r#"{{"keys":[{good_jwk}],"pad":"{}"}}"#,
            " ".repeat(JWKS_LENGTH_MAX_BYTES)
        );
        assert!(matches!(
            Verifier::from_jwks_json(&padded),
            Err(KeySetError::TooLong)
        ));
        assert!(matches!(
            Verifier::from_public_key_bytes(identity),
            Err(KeySetError::InvalidKey { .. })
        ));
    }
}
