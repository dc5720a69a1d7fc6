//! Verifying and signing one admission token: verification runs on every request to a
//! protected service, signing on every status poll of an ACTIVE session.
//!
//! `cargo bench -p waitroom-token --all-features` (without `--features sign`, only `verify`).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use waitroom_token::{Expectations, Verifier};

/// The RFC 8037 example key, as waitroom publishes it.
const JWKS: &str = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k","use":"sig","alg":"EdDSA"}]}"#;
/// A token signed with it (the crate-level example), valid from `NOW_UNIX_S` for 5 minutes.
const TOKEN: &str = "eyJhbGciOiJFZERTQSIsInR5cCI6IkpXVCIsImtpZCI6ImtQcktfcW14VldhWVZBOXd3QkY2SXVvM3ZWeno3VHhIQ1R3WEJ5Z3JTNGsifQ.eyJpc3MiOiJodHRwczovL3F1ZXVlLmV4YW1wbGUuY29tIiwiYXVkIjoiZXJhcy10b3VyLTIwMjYtMDUtMDEiLCJzdWIiOiJ3cl8yYjdrNHFleGFtcGxlIiwiaWF0IjoxNzk1MDAwMDAwLCJuYmYiOjE3OTUwMDAwMDAsImV4cCI6MTc5NTAwMDMwMCwianRpIjoidGtfMDAwMSJ9.Nj2asgXS4DMazshqhX-H9PbySpc58JXlExxi3Yg57bRStqDW3fNKcr8bl-pTvZp4LNNM_x3iQpDowxuoFkMMCg";
const NOW_UNIX_S: u64 = 1_795_000_000;
const ISSUER: &str = "https://queue.example.com";
const ROOM: &str = "eras-tour-2026-05-01";

fn verify(c: &mut Criterion) {
    let verifier = Verifier::from_jwks_json(JWKS).expect("a usable key set");
    let expected = Expectations::new(ISSUER, ROOM);
    c.bench_function("verify", |b| {
        b.iter(|| {
            verifier
                .verify(black_box(TOKEN), &expected, NOW_UNIX_S)
                .expect("valid")
        })
    });
    let forged = TOKEN.replacen("Nj2a", "Nj2b", 1);
    c.bench_function("verify_bad_signature", |b| {
        b.iter(|| {
            verifier
                .verify(black_box(&forged), &expected, NOW_UNIX_S)
                .expect_err("forged")
        })
    });
}

#[cfg(feature = "sign")]
fn sign(c: &mut Criterion) {
    use waitroom_token::{AdmissionClaims, SigningKey};

    let key = SigningKey::generate().expect("random bytes");
    let claims = AdmissionClaims {
        iss: ISSUER.to_owned(),
        aud: ROOM.to_owned(),
        // Ids as the node makes them: 128 random bits, base64url.
        sub: "wr_2b7k4qZ0cXhY1mN3pL8sVw".to_owned(),
        iat: NOW_UNIX_S,
        nbf: NOW_UNIX_S,
        exp: NOW_UNIX_S + 300,
        jti: "tk_9fJx2LqP0aZrT6uWmE4bNg".to_owned(),
    };
    c.bench_function("sign", |b| b.iter(|| key.sign(black_box(&claims))));
}

/// The bare Ed25519 operations on a message of a token's size, to tell this crate's overhead
/// (JSON, base64url, checks) from the cryptography, whatever the machine's load.
fn baseline(c: &mut Criterion) {
    use ed25519_dalek::Signer as _;

    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let (signing_input, _) = TOKEN.rsplit_once('.').expect("three parts");
    let signature = key.sign(signing_input.as_bytes());
    let public = key.verifying_key();
    c.bench_function("ed25519_sign_baseline", |b| {
        b.iter(|| key.sign(black_box(signing_input.as_bytes())))
    });
    c.bench_function("ed25519_verify_strict_baseline", |b| {
        b.iter(|| public.verify_strict(black_box(signing_input.as_bytes()), &signature))
    });
}

#[cfg(not(feature = "sign"))]
fn sign(_: &mut Criterion) {
    eprintln!("`sign` not benchmarked: run with `--features sign`");
}

criterion_group!(benches, sign, verify, baseline);
criterion_main!(benches);
