//! The external join verifier (`--join-verifier-url`): a deployment's own bot check (an IP
//! reputation service, a fraud score, a CAPTCHA back end), asked before every new join.
//!
//! For each join without a pass that would take a new place (not a replay), the node POSTs JSON
//! to the URL:
//!
//! ```json
//! {"roomId": "eras-tour", "clientIp": "203.0.113.7", "userAgent": "Mozilla/5.0 …",
//!  "headers": {"accept-language": "en-GB,en;q=0.9", "origin": "https://tickets.example.com",
//!              "referer": null}}
//! ```
//!
//! and reads `{"allow": true}` or `{"allow": false, "reason": "…"}` from a `2xx` answer. A deny
//! is a `403` (`join-denied`). A timeout (`--join-verifier-timeout-ms`, bounded), a refused
//! connection, another status or an unreadable answer is a failure: with
//! `--join-verifier-fails open` (the default) the join goes on, with `closed` it is a `503`
//! (`join-verifier-unavailable`). Every outcome is counted
//! (`waitroom_join_verifier_total{result}`).
//!
//! `http://` or `https://`. Over TLS the node trusts the system's root certificates, or only those
//! of `--join-verifier-ca-file` (a private CA). Requests reuse pooled connections, so a TLS
//! handshake is paid once per connection, not per join; it counts within the join's timeout.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

use crate::limits::{
    JOIN_VERIFIER_ANSWER_BYTES_MAX, JOIN_VERIFIER_IN_FLIGHT_MAX, JOIN_VERIFIER_REASON_CHARS_MAX,
    JOIN_VERIFIER_TIMEOUT_MS_MAX,
};

/// The request headers passed on to the verifier (besides the user agent and the address).
pub const FORWARDED_HEADERS: [&str; 3] = ["accept-language", "origin", "referer"];

/// What a join becomes when the verifier cannot answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FailMode {
    /// The join goes on (the verifier is an extra check, not a gate).
    #[default]
    Open,
    /// The join is refused with a `503`.
    Closed,
}

/// What the verifier said of one join.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Denied, with the verifier's reason (at most `JOIN_VERIFIER_REASON_CHARS_MAX` characters).
    Deny(Option<String>),
    /// No usable answer: why.
    Failed(String),
}

/// The body the node sends.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifierRequest<'a> {
    pub room_id: &'a str,
    pub client_ip: Option<String>,
    pub user_agent: Option<&'a str>,
    pub headers: std::collections::BTreeMap<&'static str, Option<&'a str>>,
}

#[derive(Debug, Deserialize)]
struct Answer {
    allow: bool,
    #[serde(default)]
    reason: Option<String>,
}

pub struct JoinVerifier {
    url: http::Uri,
    timeout: Duration,
    fails: FailMode,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    in_flight: tokio::sync::Semaphore,
}

impl JoinVerifier {
    /// `ca_file`: PEM certificates trusted for an `https://` URL instead of the system's roots.
    ///
    /// # Errors
    /// A URL that is not an absolute `http://` or `https://` URL, a timeout outside
    /// 1..=`JOIN_VERIFIER_TIMEOUT_MS_MAX`, a CA file that cannot be read or holds no certificate,
    /// or (for `https://` without a CA file) no usable root certificate on the system.
    pub fn new(
        url: &str,
        timeout_ms: u64,
        fails: FailMode,
        ca_file: Option<&Path>,
    ) -> Result<Self, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("--join-verifier-url {url}: {e}"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(format!(
                    "--join-verifier-url {url}: must be an absolute http:// or https:// URL"
                ));
            }
        };
        if uri.host().is_none() {
            return Err(format!(
                "--join-verifier-url {url}: must be an absolute http:// or https:// URL"
            ));
        }
        if !(1..=JOIN_VERIFIER_TIMEOUT_MS_MAX).contains(&timeout_ms) {
            return Err(format!(
                "--join-verifier-timeout-ms must be 1 to {JOIN_VERIFIER_TIMEOUT_MS_MAX}"
            ));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_millis(timeout_ms)));
        // The https connector also takes http:// URIs; the check above keeps to the one given.
        connector.enforce_http(false);
        // One crypto provider named here: the tree enables more than one of rustls's, and then
        // rustls has no process-wide default to fall back on.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = match (ca_file, https) {
            (Some(path), _) => HttpsConnectorBuilder::new().with_tls_config(
                rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| format!("TLS for the join verifier: {e}"))?
                    .with_root_certificates(read_roots(path)?)
                    .with_no_client_auth(),
            ),
            (None, true) => HttpsConnectorBuilder::new()
                .with_provider_and_native_roots(provider)
                .map_err(|e| {
                    format!(
                        "--join-verifier-url {url}: no usable root certificate on this system \
                         ({e}); give --join-verifier-ca-file"
                    )
                })?,
            // Plain http: the TLS configuration is never used, so no roots are loaded.
            (None, false) => HttpsConnectorBuilder::new().with_tls_config(
                rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| format!("TLS for the join verifier: {e}"))?
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            ),
        };
        let connector = builder
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        Ok(Self {
            url: uri,
            timeout: Duration::from_millis(timeout_ms),
            fails,
            client: Client::builder(TokioExecutor::new()).build(connector),
            in_flight: tokio::sync::Semaphore::new(JOIN_VERIFIER_IN_FLIGHT_MAX),
        })
    }

    pub fn fails(&self) -> FailMode {
        self.fails
    }

    /// Asks the verifier about one join, within the timeout.
    pub async fn verify(&self, request: &VerifierRequest<'_>) -> Verdict {
        let Ok(_permit) = self.in_flight.try_acquire() else {
            return Verdict::Failed(format!(
                "{JOIN_VERIFIER_IN_FLIGHT_MAX} joins already wait for the verifier"
            ));
        };
        match tokio::time::timeout(self.timeout, self.ask(request)).await {
            Ok(verdict) => verdict,
            Err(_) => Verdict::Failed(format!("no answer within {:?}", self.timeout)),
        }
    }

    async fn ask(&self, request: &VerifierRequest<'_>) -> Verdict {
        let body = match serde_json::to_vec(request) {
            Ok(body) => body,
            Err(e) => return Verdict::Failed(format!("could not write the request: {e}")),
        };
        let http_request = http::Request::post(self.url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(body)));
        let http_request = match http_request {
            Ok(r) => r,
            Err(e) => return Verdict::Failed(format!("could not build the request: {e}")),
        };
        let response = match self.client.request(http_request).await {
            Ok(response) => response,
            Err(e) => return Verdict::Failed(format!("request failed: {e}")),
        };
        let status = response.status();
        if !status.is_success() {
            return Verdict::Failed(format!("answered {status}"));
        }
        let bytes = match Limited::new(response.into_body(), JOIN_VERIFIER_ANSWER_BYTES_MAX)
            .collect()
            .await
        {
            Ok(collected) => collected.to_bytes(),
            Err(e) => return Verdict::Failed(format!("could not read the answer: {e}")),
        };
        match serde_json::from_slice::<Answer>(&bytes) {
            Ok(Answer { allow: true, .. }) => Verdict::Allow,
            Ok(Answer {
                allow: false,
                reason,
            }) => Verdict::Deny(reason.map(|reason| {
                reason
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(JOIN_VERIFIER_REASON_CHARS_MAX)
                    .collect()
            })),
            Err(e) => Verdict::Failed(format!("unreadable answer: {e}")),
        }
    }
}

/// The certificates of a PEM file, as the roots an `https://` verifier's certificate must chain to.
fn read_roots(path: &Path) -> Result<rustls::RootCertStore, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let what = || format!("--join-verifier-ca-file {}", path.display());
    let mut roots = rustls::RootCertStore::empty();
    for certificate in
        CertificateDer::pem_file_iter(path).map_err(|e| format!("{}: {e}", what()))?
    {
        let certificate = certificate.map_err(|e| format!("{}: {e}", what()))?;
        roots
            .add(certificate)
            .map_err(|e| format!("{}: {e}", what()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: holds no certificate", what()));
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_and_https_urls_and_bounded_timeouts() {
        assert!(JoinVerifier::new("http://127.0.0.1:9/verify", 100, FailMode::Open, None).is_ok());
        for url in ["/verify", "ftp://x/", "not a url", "https:/no-host"] {
            assert!(
                JoinVerifier::new(url, 100, FailMode::Open, None).is_err(),
                "{url}"
            );
        }
        for timeout_ms in [0, JOIN_VERIFIER_TIMEOUT_MS_MAX + 1] {
            assert!(
                JoinVerifier::new("http://127.0.0.1:9/", timeout_ms, FailMode::Open, None).is_err()
            );
        }
    }

    #[test]
    fn a_ca_file_must_hold_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let error = JoinVerifier::new("https://127.0.0.1:9/", 100, FailMode::Open, Some(&missing))
            .err()
            .unwrap();
        assert!(error.contains("--join-verifier-ca-file"), "{error}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let error = JoinVerifier::new("https://127.0.0.1:9/", 100, FailMode::Open, Some(&empty))
            .err()
            .unwrap();
        assert!(error.contains("holds no certificate"), "{error}");
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let good = dir.path().join("ca.pem");
        std::fs::write(&good, ca.cert.pem()).unwrap();
        assert!(
            JoinVerifier::new("https://127.0.0.1:9/", 100, FailMode::Open, Some(&good)).is_ok()
        );
    }
}
