//! Helpers for tests that need real servers (and for other crates' tests, with the
//! `test-support` feature).
#![cfg(any(test, feature = "test-support"))]

/// The URL of the Redis that backend tests use, from `WAITROOM_TEST_REDIS_URL`
/// (e.g. `redis://127.0.0.1:6390`), or `None` when it is not set: the caller then returns
/// early, and the skip is printed loudly so nobody mistakes it for a pass.
///
/// # Panics
/// When the variable is unset and `CI` is `true`: backend tests must never skip in CI.
pub fn redis_url_or_skip(test: &str) -> Option<String> {
    match std::env::var("WAITROOM_TEST_REDIS_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url.trim().to_owned()),
        _ => {
            if std::env::var("CI").is_ok_and(|ci| ci == "true") {
                panic!(
                    "{test}: WAITROOM_TEST_REDIS_URL is not set, and backend tests must not skip \
                     in CI (set it to redis://127.0.0.1:PORT of a throwaway redis-server)"
                );
            }
            eprintln!(
                "SKIPPED {test}: set WAITROOM_TEST_REDIS_URL=redis://127.0.0.1:PORT to run it (CI sets it)"
            );
            None
        }
    }
}
