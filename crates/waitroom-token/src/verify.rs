//! Offline verification of admission tokens.

use std::fmt;

use base64::Engine as _;
use ed25519_dalek::{Signature, VerifyingKey};

use crate::claims::{AdmissionClaims, Expectations};
use crate::jwk::{self, KeySetError};
use crate::jws::{self, BASE64URL, Header, SIGNATURE_LENGTH_BASE64_CHARS, SIGNATURE_LENGTH_BYTES};
use crate::limits::{LEEWAY_MAX_S, TOKEN_LENGTH_MAX_BYTES};

/// Verifies admission tokens against a small set of Ed25519 public keys, picked by `kid`.
///
/// Build it once (from waitroom's JWK Set) and share it: verification takes `&self` and does
/// not allocate beyond decoding the token.
#[derive(Clone, Debug)]
pub struct Verifier {
    keys: Vec<(String, VerifyingKey)>,
}

impl Verifier {
    /// A verifier for the Ed25519 signature keys of a JWK Set (RFC 7517), such as the body of
    /// waitroom's `GET /.well-known/jwks.json`.
    ///
    /// Keys of other types (`RSA`, `EC`, other `OKP` curves) or marked for another `use` or
    /// `alg` are skipped, so a shared JWK Set works. A key without `kid` is known by its
    /// RFC 7638 thumbprint.
    ///
    /// # Errors
    /// [`KeySetError`] if the document is longer than
    /// [`JWKS_LENGTH_MAX_BYTES`](crate::limits::JWKS_LENGTH_MAX_BYTES), is not a JWK Set, holds
    /// an invalid Ed25519 key, private key material, duplicate or oversized `kid`s, more than
    /// [`VERIFIER_KEYS_MAX`](crate::limits::VERIFIER_KEYS_MAX) Ed25519 keys, or none at all.
    pub fn from_jwks_json(jwks_json: &str) -> Result<Self, KeySetError> {
        Ok(Self {
            keys: jwk::read_set(jwks_json)?,
        })
    }

    /// A verifier for one raw Ed25519 public key, known by its RFC 7638 thumbprint (the `kid`
    /// waitroom writes).
    ///
    /// # Errors
    /// [`KeySetError::InvalidKey`] if the bytes are not a curve point or are a weak
    /// (small-order) key.
    pub fn from_public_key_bytes(public_key: [u8; 32]) -> Result<Self, KeySetError> {
        let key = jwk::verifying_key(&public_key).ok_or(KeySetError::InvalidKey { index: 0 })?;
        Ok(Self {
            keys: vec![(jwk::thumbprint(&public_key), key)],
        })
    }

    /// A verifier for the public half of `signing_key`, as the waitroom node uses it.
    #[cfg(feature = "sign")]
    pub fn from_signing_key(signing_key: &crate::SigningKey) -> Self {
        Self {
            keys: vec![(signing_key.kid().to_owned(), signing_key.verifying_key())],
        }
    }

    /// The key ids this verifier knows.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(kid, _)| kid.as_str())
    }

    /// Verifies `token` at time `now_unix_s` and returns its claims.
    ///
    /// In order: length (at most [`TOKEN_LENGTH_MAX_BYTES`]), shape (three base64url parts),
    /// header (`alg` must be `EdDSA`, so `none`, `HS256` and every other algorithm are refused;
    /// no `crit`; `typ`, if present, is `JWT`), `kid` (must name a known key), the signature
    /// (strict Ed25519: canonical encodings only), and only then the claims: `exp` (invalid
    /// from `exp + leeway` on), `nbf` (invalid before `nbf - leeway`), `iss` and `aud`.
    ///
    /// # Errors
    /// The first [`VerifyError`] found. Never panics, whatever the input.
    pub fn verify(
        &self,
        token: &str,
        expected: &Expectations,
        now_unix_s: u64,
    ) -> Result<AdmissionClaims, VerifyError> {
        if token.len() > TOKEN_LENGTH_MAX_BYTES {
            return Err(VerifyError::TooLong);
        }
        let (signing_input, signature_text) = token
            .rsplit_once('.')
            .ok_or(VerifyError::Malformed(NOT_THREE_PARTS))?;
        let (header_text, payload_text) = signing_input
            .split_once('.')
            .ok_or(VerifyError::Malformed(NOT_THREE_PARTS))?;
        if payload_text.contains('.') {
            return Err(VerifyError::Malformed(NOT_THREE_PARTS));
        }

        let header_json = BASE64URL
            .decode(header_text)
            .map_err(|_| VerifyError::Malformed("the header is not base64url"))?;
        let header: Header = from_json_object(&header_json)
            .ok_or(VerifyError::Malformed("the header is not a JOSE header"))?;
        if !jws::is_ed25519_alg(&header.alg) {
            return Err(VerifyError::UnsupportedAlgorithm);
        }
        if header.crit.is_some() {
            return Err(VerifyError::Malformed("the header has critical extensions"));
        }
        if header
            .typ
            .as_deref()
            .is_some_and(|typ| !typ.eq_ignore_ascii_case("JWT"))
        {
            return Err(VerifyError::Malformed("the header's typ is not JWT"));
        }
        let kid = header.kid.ok_or(VerifyError::UnknownKey)?;
        let (_, key) = self
            .keys
            .iter()
            .find(|(known, _)| *known == kid)
            .ok_or(VerifyError::UnknownKey)?;

        let mut signature = [0_u8; SIGNATURE_LENGTH_BYTES];
        let signature_ok = signature_text.len() == SIGNATURE_LENGTH_BASE64_CHARS
            && matches!(
                BASE64URL.decode_slice(signature_text, &mut signature),
                Ok(SIGNATURE_LENGTH_BYTES)
            );
        if !signature_ok {
            return Err(VerifyError::Malformed(
                "the signature is not 64 bytes of base64url",
            ));
        }
        key.verify_strict(signing_input.as_bytes(), &Signature::from_bytes(&signature))
            .map_err(|_| VerifyError::BadSignature)?;

        // Authenticated from here on.
        let payload_json = BASE64URL
            .decode(payload_text)
            .map_err(|_| VerifyError::Malformed("the payload is not base64url"))?;
        let claims: AdmissionClaims = from_json_object(&payload_json).ok_or(
            VerifyError::Malformed("the claims are missing or of the wrong type"),
        )?;
        check_claims(&claims, expected, now_unix_s)?;
        Ok(claims)
    }
}

const NOT_THREE_PARTS: &str = "not three dot-separated parts";

/// Parses a JSON object into `T`. serde's derived structs also accept a JSON array (fields by
/// position); JOSE headers and JWT claims are objects only (RFC 7515 §4, RFC 7519 §7.2).
fn from_json_object<T: serde::de::DeserializeOwned>(json: &[u8]) -> Option<T> {
    if json.trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    serde_json::from_slice(json).ok()
}

fn check_claims(
    claims: &AdmissionClaims,
    expected: &Expectations,
    now_unix_s: u64,
) -> Result<(), VerifyError> {
    let leeway_s = expected.leeway_s.min(LEEWAY_MAX_S);
    // RFC 7519 §4.1.4: the token must not be accepted "on or after" `exp`.
    if now_unix_s >= claims.exp.saturating_add(leeway_s) {
        return Err(VerifyError::Expired);
    }
    if now_unix_s.saturating_add(leeway_s) < claims.nbf {
        return Err(VerifyError::NotYetValid);
    }
    if claims.iss != expected.issuer {
        return Err(VerifyError::WrongIssuer);
    }
    if expected
        .audience
        .as_ref()
        .is_some_and(|audience| claims.aud != *audience)
    {
        return Err(VerifyError::WrongAudience);
    }
    Ok(())
}

/// Why a token was refused. The `Display` text is safe to send as the `detail` of a `401`
/// problem: it never contains any part of the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyError {
    /// Longer than [`TOKEN_LENGTH_MAX_BYTES`]; nothing was decoded.
    TooLong,
    /// Not a compact JWS with a usable header and claims; says which part is wrong.
    Malformed(&'static str),
    /// The header's `alg` is not `EdDSA` (`none`, `HS256`, `RS256`, ...).
    UnsupportedAlgorithm,
    /// The header has no `kid`, or names a key the verifier does not know.
    UnknownKey,
    /// The signature does not match the header and claims under the named key.
    BadSignature,
    /// The time is at or after `exp` (plus leeway).
    Expired,
    /// The time is before `nbf` (minus leeway).
    NotYetValid,
    /// `iss` is not the expected issuer.
    WrongIssuer,
    /// `aud` is not the expected room.
    WrongAudience,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLong => write!(
                f,
                "the admission token is longer than {TOKEN_LENGTH_MAX_BYTES} bytes"
            ),
            Self::Malformed(what) => write!(f, "the admission token is malformed: {what}"),
            Self::UnsupportedAlgorithm => {
                write!(f, "the admission token is not signed with EdDSA (Ed25519)")
            }
            Self::UnknownKey => {
                write!(
                    f,
                    "the admission token's key id (kid) is missing or unknown"
                )
            }
            Self::BadSignature => write!(f, "the admission token's signature is invalid"),
            Self::Expired => write!(f, "the admission token has expired"),
            Self::NotYetValid => write!(f, "the admission token is not valid yet"),
            Self::WrongIssuer => write!(f, "the admission token was issued by another issuer"),
            Self::WrongAudience => write!(f, "the admission token is for another room"),
        }
    }
}

impl std::error::Error for VerifyError {}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::jws::encode;
    use crate::test_support::{
        ISSUER, NOW_UNIX_S, ROOM, claims, expectations, header, key, kid, raw_token, token,
        verifier,
    };

    fn verify_at(token: &str, now_unix_s: u64) -> Result<AdmissionClaims, VerifyError> {
        verifier(&key(1)).verify(token, &expectations(), now_unix_s)
    }

    fn verify(token: &str) -> Result<AdmissionClaims, VerifyError> {
        verify_at(token, NOW_UNIX_S + 1)
    }

    /// Replaces the `index`-th dot-separated part of `token`.
    fn with_part(token: &str, index: usize, part: &str) -> String {
        let mut parts: Vec<&str> = token.split('.').collect();
        parts[index] = part;
        parts.join(".")
    }

    #[test]
    fn a_valid_token_round_trips() {
        assert_eq!(verify(&token(&key(1), &claims())), Ok(claims()));
    }

    #[test]
    fn a_key_from_raw_bytes_is_known_by_its_thumbprint() {
        let signing = key(1);
        let verifier = Verifier::from_public_key_bytes(signing.verifying_key().to_bytes())
            .expect("a valid key");
        assert_eq!(verifier.kids().collect::<Vec<_>>(), [kid(&signing)]);
        let verified = verifier.verify(&token(&signing, &claims()), &expectations(), NOW_UNIX_S);
        assert_eq!(verified, Ok(claims()));
    }

    #[test]
    fn another_key_is_refused() {
        // Signed by key 2 but claiming key 1's kid: the signature does not match.
        let payload = serde_json::to_string(&claims()).expect("claims serialise");
        let forged = raw_token(&key(2), &header(&key(1)), &payload);
        assert_eq!(verify(&forged), Err(VerifyError::BadSignature));
        // Signed by key 2 under its own kid: unknown to this verifier.
        assert_eq!(
            verify(&token(&key(2), &claims())),
            Err(VerifyError::UnknownKey)
        );
    }

    #[test]
    fn a_tampered_payload_is_refused() {
        let valid = token(&key(1), &claims());
        let mut changed = claims();
        changed.exp += 3600;
        let payload = encode(
            serde_json::to_string(&changed)
                .expect("serialises")
                .as_bytes(),
        );
        assert_eq!(
            verify(&with_part(&valid, 1, &payload)),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn a_tampered_header_is_refused() {
        let valid = token(&key(1), &claims());
        let header = format!(r#"{{"alg":"EdDSA","kid":"{}","typ":"JWT"}}"#, kid(&key(1)));
        let tampered = with_part(&valid, 0, &encode(header.as_bytes()));
        assert_eq!(verify(&tampered), Err(VerifyError::BadSignature));
    }

    #[test]
    fn a_tampered_signature_is_refused() {
        let valid = token(&key(1), &claims());
        let signature = valid.rsplit('.').next().expect("three parts");
        let mut flipped = signature.to_owned().into_bytes();
        flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).expect("ASCII");
        assert_eq!(
            verify(&with_part(&valid, 2, &flipped)),
            Err(VerifyError::BadSignature)
        );
        // All zeros: a non-canonical R, refused by the strict check.
        let zeros = encode(&[0; 64]);
        assert_eq!(
            verify(&with_part(&valid, 2, &zeros)),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn other_algorithms_are_refused() {
        let payload = encode(
            serde_json::to_string(&claims())
                .expect("serialises")
                .as_bytes(),
        );
        for alg in [
            "none", "HS256", "HS512", "RS256", "ES256", "PS256", "eddsa", "EDDSA", "",
        ] {
            let header = format!(r#"{{"alg":"{alg}","typ":"JWT","kid":"{}"}}"#, kid(&key(1)));
            let header = encode(header.as_bytes());
            // `none`: an empty signature. HS256 "signed" with the public key as the HMAC
            // secret (the classic confusion) looks just like this 32-byte signature.
            for signature in [String::new(), encode(&[7; 32]), encode(&[7; 64])] {
                let forged = format!("{header}.{payload}.{signature}");
                assert_eq!(
                    verify(&forged),
                    Err(VerifyError::UnsupportedAlgorithm),
                    "{alg}"
                );
            }
        }
        let no_alg = encode(format!(r#"{{"kid":"{}"}}"#, kid(&key(1))).as_bytes());
        let forged = format!("{no_alg}.{payload}.{}", encode(&[7; 64]));
        assert!(matches!(verify(&forged), Err(VerifyError::Malformed(_))));
    }

    #[test]
    fn the_fully_specified_ed25519_alg_is_accepted() {
        let header = format!(r#"{{"alg":"Ed25519","kid":"{}"}}"#, kid(&key(1)));
        let payload = serde_json::to_string(&claims()).expect("serialises");
        assert_eq!(verify(&raw_token(&key(1), &header, &payload)), Ok(claims()));
    }

    #[test]
    fn expiry_is_strict_at_exp() {
        let valid = token(&key(1), &claims());
        let exp = claims().exp;
        assert!(verify_at(&valid, exp - 1).is_ok());
        assert_eq!(verify_at(&valid, exp), Err(VerifyError::Expired));
        assert_eq!(verify_at(&valid, u64::MAX), Err(VerifyError::Expired));
    }

    #[test]
    fn leeway_extends_exp_and_nbf_and_is_capped() {
        let valid = token(&key(1), &claims());
        let exp = claims().exp;
        let lenient = expectations().with_leeway_s(5);
        let verifier = verifier(&key(1));
        assert!(verifier.verify(&valid, &lenient, exp + 4).is_ok());
        assert_eq!(
            verifier.verify(&valid, &lenient, exp + 5),
            Err(VerifyError::Expired)
        );
        assert!(verifier.verify(&valid, &lenient, NOW_UNIX_S - 5).is_ok());
        assert_eq!(
            verifier.verify(&valid, &lenient, NOW_UNIX_S - 6),
            Err(VerifyError::NotYetValid)
        );

        let huge = expectations().with_leeway_s(u64::MAX);
        assert!(
            verifier
                .verify(&valid, &huge, exp + LEEWAY_MAX_S - 1)
                .is_ok()
        );
        assert_eq!(
            verifier.verify(&valid, &huge, exp + LEEWAY_MAX_S),
            Err(VerifyError::Expired)
        );
    }

    #[test]
    fn a_token_before_nbf_is_refused() {
        let mut future = claims();
        future.nbf = NOW_UNIX_S + 60;
        let valid = token(&key(1), &future);
        assert_eq!(verify_at(&valid, NOW_UNIX_S), Err(VerifyError::NotYetValid));
        assert_eq!(
            verify_at(&valid, NOW_UNIX_S + 59),
            Err(VerifyError::NotYetValid)
        );
        assert!(verify_at(&valid, NOW_UNIX_S + 60).is_ok());
    }

    #[test]
    fn issuer_and_audience_must_match() {
        let valid = token(&key(1), &claims());
        let verifier = verifier(&key(1));
        let other_issuer = Expectations::new("https://evil.example.com", ROOM);
        assert_eq!(
            verifier.verify(&valid, &other_issuer, NOW_UNIX_S),
            Err(VerifyError::WrongIssuer)
        );
        let other_room = Expectations::new(ISSUER, "another-room");
        assert_eq!(
            verifier.verify(&valid, &other_room, NOW_UNIX_S),
            Err(VerifyError::WrongAudience)
        );
        let any_room = Expectations {
            audience: None,
            ..expectations()
        };
        assert_eq!(verifier.verify(&valid, &any_room, NOW_UNIX_S), Ok(claims()));
    }

    #[test]
    fn a_missing_or_unknown_kid_is_refused() {
        let payload = serde_json::to_string(&claims()).expect("serialises");
        let no_kid = raw_token(&key(1), r#"{"alg":"EdDSA","typ":"JWT"}"#, &payload);
        assert_eq!(verify(&no_kid), Err(VerifyError::UnknownKey));
        let unknown = raw_token(&key(1), r#"{"alg":"EdDSA","kid":"someone-else"}"#, &payload);
        assert_eq!(verify(&unknown), Err(VerifyError::UnknownKey));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let valid = token(&key(1), &claims());
        let (header_part, rest) = valid.split_once('.').expect("three parts");
        let (payload_part, signature_part) = rest.split_once('.').expect("three parts");
        let payload = serde_json::to_string(&claims()).expect("serialises");
        let cases = [
            String::new(),
            "....".to_owned(),
            header_part.to_owned(),
            format!("{header_part}.{payload_part}"),
            format!("{valid}.{signature_part}"),
            format!("{header_part}.{payload_part}.{signature_part}="),
            format!("{header_part}=.{payload_part}.{signature_part}"),
            format!("{header_part}.{payload_part}.{}", &signature_part[1..]),
            format!("{header_part}.{payload_part}.{signature_part}AAAA"),
            format!(
                "{header_part}.{payload_part}.{}",
                signature_part.replace('A', "+")
            ),
            format!("!!.{payload_part}.{signature_part}"),
            format!("{}.{payload_part}.{signature_part}", encode(b"not json")),
            format!("{}.{payload_part}.{signature_part}", encode(b"[\"EdDSA\"]")),
            format!(
                "{}.{payload_part}.{signature_part}",
                encode(format!("[\"EdDSA\",\"{}\"]", kid(&key(1))).as_bytes())
            ),
            format!(
                "{}.{payload_part}.{signature_part}",
                encode(&[0xff, 0xfe, 0x00])
            ),
            // Signed, but the payload is not base64url, not JSON, or misses claims.
            raw_token(&key(1), &header(&key(1)), "not json"),
            raw_token(&key(1), &header(&key(1)), r#"{"iss":"x"}"#),
            raw_token(
                &key(1),
                &header(&key(1)),
                r#"["i","a","s",1,1,9999999999,"j"]"#,
            ),
            raw_token(
                &key(1),
                &header(&key(1)),
                &payload.replace("300,", "300.5,"),
            ),
            raw_token(
                &key(1),
                &header(&key(1)),
                &payload.replace("1795000300", "-1"),
            ),
            "é.é.é".to_owned(),
        ];
        for case in cases {
            let result = verify(&case);
            let is_malformed = matches!(result, Err(VerifyError::Malformed(_)));
            // Some corruptions are caught as a bad signature; none may pass.
            assert!(
                is_malformed || result == Err(VerifyError::BadSignature),
                "{case}: {result:?}"
            );
        }
    }

    #[test]
    fn a_payload_that_is_not_base64url_is_malformed_even_when_signed() {
        let header = encode(header(&key(1)).as_bytes());
        let signing_input = format!("{header}.***");
        let signature = ed25519_dalek::Signer::sign(&key(1), signing_input.as_bytes());
        let forged = format!("{signing_input}.{}", encode(&signature.to_bytes()));
        assert_eq!(
            verify(&forged),
            Err(VerifyError::Malformed("the payload is not base64url"))
        );
    }

    #[test]
    fn unsupported_header_parameters_are_refused() {
        let payload = serde_json::to_string(&claims()).expect("serialises");
        let kid = kid(&key(1));
        for header in [
            format!(r#"{{"alg":"EdDSA","kid":"{kid}","crit":["exp"],"exp":1}}"#),
            format!(r#"{{"alg":"EdDSA","kid":"{kid}","typ":"at+jwt"}}"#),
            format!(r#"{{"alg":"EdDSA","alg":"EdDSA","kid":"{kid}"}}"#),
            format!(r#"{{"alg":"EdDSA","kid":"{kid}","typ":7}}"#),
        ] {
            let result = verify(&raw_token(&key(1), &header, &payload));
            assert!(
                matches!(result, Err(VerifyError::Malformed(_))),
                "{header}: {result:?}"
            );
        }
        // Unknown, non-critical parameters are ignored, and `typ` is case-insensitive.
        let header = format!(r#"{{"alg":"EdDSA","kid":"{kid}","typ":"jwt","x-note":"hi"}}"#);
        assert_eq!(verify(&raw_token(&key(1), &header, &payload)), Ok(claims()));
    }

    #[test]
    fn an_oversized_token_is_refused_before_decoding() {
        let mut big = claims();
        big.jti = "j".repeat(TOKEN_LENGTH_MAX_BYTES);
        assert_eq!(verify(&token(&key(1), &big)), Err(VerifyError::TooLong));
        assert_eq!(
            verify(&"a".repeat(TOKEN_LENGTH_MAX_BYTES + 1)),
            Err(VerifyError::TooLong)
        );
        assert_eq!(
            verify(&".".repeat(10 * 1024 * 1024)),
            Err(VerifyError::TooLong)
        );
    }

    #[test]
    fn unknown_claims_are_ignored() {
        let payload = serde_json::to_string(&claims()).expect("serialises");
        let payload = payload.replacen('{', r#"{"scope":["seats"],"#, 1);
        assert_eq!(
            verify(&raw_token(&key(1), &header(&key(1)), &payload)),
            Ok(claims())
        );
    }

    #[test]
    fn error_messages_never_echo_the_token() {
        let valid = token(&key(1), &claims());
        let (header_part, rest) = valid.split_once('.').expect("three parts");
        let wrong = Expectations::new("other", "other");
        let errors = [
            verify(&format!("{header_part}.!!!.{rest}")),
            verify(&format!("{header_part}.{rest}.x")),
            verify(&format!("{header_part}x.{rest}")),
            verifier(&key(1)).verify(&valid, &wrong, NOW_UNIX_S),
            verify_at(&valid, u64::MAX),
        ];
        for error in errors {
            let message = error.expect_err("refused").to_string();
            assert!(!message.contains(header_part), "{message}");
            assert!(!message.contains(ISSUER), "{message}");
            assert!(!message.contains("wr_"), "{message}");
        }
    }

    proptest! {
        /// Whatever the input, `verify` answers (and never accepts junk).
        #[test]
        fn arbitrary_strings_never_panic(input in ".{0,600}") {
            prop_assert!(verify(&input).is_err());
        }

        /// Any single-byte change to a valid token is refused (the signature covers every
        /// byte, and the encoding has a single spelling).
        #[test]
        fn every_mutation_is_refused(index in 0_usize..1_000, byte in 0x21_u8..0x7f) {
            let valid = token(&key(1), &claims());
            let index = index % valid.len();
            prop_assume!(valid.as_bytes()[index] != byte);
            let mut mutated = valid.into_bytes();
            mutated[index] = byte;
            let mutated = String::from_utf8(mutated).expect("ASCII");
            prop_assert!(verify(&mutated).is_err());
        }
    }
}
