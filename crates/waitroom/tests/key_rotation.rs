//! Rotating the signing key without downtime, as docs/operations.md tells an operator to: a node
//! restarted at each step of the rotation keeps every token it issued verifiable, by itself
//! (`:complete`) and by a protected service holding the JWKS it fetched at the first step.

mod common;

use std::path::Path;

use common::{TestServer, id};
use serde_json::{Value, json};
use waitroom::ServeOptions;
use waitroom_token::{Expectations, Jwk, SigningKey, Verifier};

/// A verifier knowing `keys` alone: a token it accepts was signed with one of them.
fn verifier_of(keys: &[&SigningKey]) -> Verifier {
    let set: Vec<Jwk> = keys.iter().map(|key| key.public_jwk()).collect();
    Verifier::from_jwks_json(&Jwk::set_json(&set)).unwrap()
}

fn expectations() -> Expectations {
    Expectations::new(waitroom::server::defaults::ISSUER, "r").with_leeway_s(5)
}

fn now_unix_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Starts a node on the file log in `dir`, configured by `keys`.
async fn node(dir: &Path, keys: impl FnOnce(&mut ServeOptions)) -> TestServer {
    let dir = dir.to_path_buf();
    TestServer::start_with(move |options| {
        options.data_dir = dir;
        keys(options);
    })
    .await
}

/// The JWKS a node serves, and its `Cache-Control`.
async fn jwks(server: &TestServer) -> (String, Vec<String>, String) {
    let response = server
        .client
        .get(server.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cache_control = response.headers()["cache-control"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = response.text().await.unwrap();
    let set: Value = serde_json::from_str(&body).unwrap();
    let kids = set["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["kid"].as_str().unwrap().to_owned())
        .collect();
    (body, kids, cache_control)
}

fn token(view: &Value) -> String {
    view["admissionToken"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {view}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_step_by_step_keeps_every_token_verifiable() {
    let data = tempfile::tempdir().unwrap();
    let (old, new) = (
        SigningKey::generate().unwrap(),
        SigningKey::generate().unwrap(),
    );
    let new_key_file = data.path().join("next-key.pem");
    std::fs::write(&new_key_file, new.to_pkcs8_pem().as_bytes()).unwrap();
    let old_pem = old.to_pkcs8_pem().to_string();
    let new_path = new_key_file.to_string_lossy().into_owned();

    // Step 1: the fleet signs with `old` and publishes `new` as the next key.
    let step1 = {
        let (old_pem, new_path) = (old_pem.clone(), new_path.clone());
        node(data.path(), move |options| {
            options.signing_key = Some(old_pem);
            options.next_signing_key = Some(new_path);
        })
        .await
    };
    step1
        .put_room(
            "r",
            json!({ "capacity": 2, "targetUrl": "https://tickets.example.com/select" }),
        )
        .await;
    let (status, first) = step1.join("r").await;
    assert_eq!((status, first["status"].as_str()), (201, Some("ACTIVE")));
    let (status, second) = step1.join("r").await;
    assert_eq!((status, second["status"].as_str()), (201, Some("ACTIVE")));
    let (first_old_token, second_old_token) = (token(&first), token(&second));
    let (cached_jwks, kids, cache_control) = jwks(&step1).await;
    assert_eq!(kids, [old.kid(), new.kid()]);
    assert_eq!(cache_control, "public, max-age=300");
    for signed in [&first_old_token, &second_old_token] {
        assert!(
            verifier_of(&[&old])
                .verify(signed, &expectations(), now_unix_s())
                .is_ok(),
            "step 1 signs with the current key"
        );
    }
    // A protected service caches this JWKS, and keeps it past the switch below.
    let service = Verifier::from_jwks_json(&cached_jwks).unwrap();
    step1.stop().await;

    // Step 2: the fleet signs with `new` and keeps `old` as a retired key.
    let step2 = {
        let (old_pem, new_path) = (old_pem.clone(), new_path.clone());
        node(data.path(), move |options| {
            options.signing_key = Some(new_path);
            options.retired_signing_keys = vec![old_pem];
        })
        .await
    };
    let (_, kids, _) = jwks(&step2).await;
    assert_eq!(kids, [new.kid(), old.kid()]);
    for session in [&first, &second] {
        let (status, now) = step2.session(&id(session)).await;
        assert_eq!((status, now["status"].as_str()), (200, Some("ACTIVE")));
        let renewed = token(&now);
        assert!(
            verifier_of(&[&new])
                .verify(&renewed, &expectations(), now_unix_s())
                .is_ok(),
            "step 2 signs with the new key"
        );
        assert!(
            service
                .verify(&renewed, &expectations(), now_unix_s())
                .is_ok(),
            "the service's JWKS of step 1 already had the new key"
        );
    }
    // A token signed before the switch still completes its session.
    let (status, done) = step2
        .post_action(&id(&first), "complete", Some(&first_old_token))
        .await;
    assert_eq!(
        (status, done["expiredReason"].as_str()),
        (200, Some("completed"))
    );
    step2.stop().await;

    // Step 3: `old` dropped once its tokens expired: its tokens are refused.
    let step3 = {
        let new_path = new_path.clone();
        node(data.path(), move |options| {
            options.signing_key = Some(new_path);
        })
        .await
    };
    let (_, kids, _) = jwks(&step3).await;
    assert_eq!(kids, [new.kid()]);
    let (status, problem) = step3
        .post_action(&id(&second), "complete", Some(&second_old_token))
        .await;
    assert_eq!(status, 401, "a token of the dropped key: {problem}");
    let (_, now) = step3.session(&id(&second)).await;
    let (status, done) = step3
        .post_action(&id(&second), "complete", Some(&token(&now)))
        .await;
    assert_eq!(
        (status, done["expiredReason"].as_str()),
        (200, Some("completed"))
    );
    step3.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_next_key_that_is_the_signing_key_or_no_key_stops_the_start() {
    let data = tempfile::tempdir().unwrap();
    let key = SigningKey::generate().unwrap().to_pkcs8_pem().to_string();
    let cases: [(Option<String>, Vec<String>, &str); 3] = [
        (Some(key.clone()), vec![], "given already"),
        (
            None,
            vec!["-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----".into()],
            "--retired-signing-key",
        ),
        (
            Some(
                data.path()
                    .join("missing.pem")
                    .to_string_lossy()
                    .into_owned(),
            ),
            vec![],
            "cannot read --next-signing-key",
        ),
    ];
    for (next, retired, expected) in cases {
        let mut options = common::options(data.path());
        options.signing_key = Some(key.clone());
        options.next_signing_key = next;
        options.retired_signing_keys = retired;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let error = waitroom::server::run(listener, std::future::pending(), options)
            .await
            .expect_err("the node must not start");
        assert!(error.contains(expected), "{expected:?} not in {error:?}");
    }
}
