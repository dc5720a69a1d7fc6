//! Signing keys and token signing (feature `sign`): what the waitroom node needs.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::Signer as _;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _};
use zeroize::Zeroizing;

use crate::claims::AdmissionClaims;
use crate::jwk::{self, Jwk};
use crate::jws::{self, BASE64URL, SIGNATURE_LENGTH_BASE64_CHARS};
use crate::limits::KEY_PEM_LENGTH_MAX_BYTES;

/// The DER prefix of a PKCS#8 v1 Ed25519 private key (RFC 8410 §7): SEQUENCE { version 0,
/// AlgorithmIdentifier { id-Ed25519 }, OCTET STRING { OCTET STRING (32 bytes) } }. The 32-byte
/// seed follows.
const PKCS8_V1_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----\n";
const PEM_END: &str = "\n-----END PRIVATE KEY-----\n";
/// 48 DER bytes are 64 base64 characters: exactly one PEM line.
const PEM_LENGTH_BYTES: usize = PEM_BEGIN.len() + 64 + PEM_END.len();

/// An Ed25519 signing key with everything signing needs prepared once: the `kid` (RFC 7638
/// thumbprint) and the encoded protected header, so [`sign`](Self::sign) only serialises the
/// claims and signs.
///
/// The secret is wiped from memory when the key is dropped. `Debug` shows only the `kid`.
///
/// ```
/// use waitroom_token::{AdmissionClaims, Expectations, SigningKey, Verifier};
///
/// # let directory = tempfile::tempdir()?;
/// # let data_dir = directory.path();
/// let (key, created) = SigningKey::load_or_generate(&data_dir.join("token-key.pem"))?;
/// assert!(created);
/// let jwks = key.jwks_json(); // serve at GET /.well-known/jwks.json
///
/// let now_unix_s = 1_795_000_000;
/// let token = key.sign(&AdmissionClaims {
///     iss: "https://queue.example.com".into(),
///     aud: "eras-tour-2026-05-01".into(),
///     sub: "wr_2b7k4qexample".into(),
///     iat: now_unix_s,
///     nbf: now_unix_s,
///     exp: now_unix_s + 300,
///     jti: "tk_0001".into(),
/// });
///
/// let verifier = Verifier::from_jwks_json(&jwks)?;
/// let expected = Expectations::new("https://queue.example.com", "eras-tour-2026-05-01");
/// assert_eq!(verifier.verify(&token, &expected, now_unix_s)?.sub, "wr_2b7k4qexample");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct SigningKey {
    key: ed25519_dalek::SigningKey,
    kid: String,
    /// base64url of `{"alg":"EdDSA","typ":"JWT","kid":...}`.
    header: String,
}

impl SigningKey {
    fn from_dalek(key: ed25519_dalek::SigningKey) -> Self {
        let kid = jwk::thumbprint(key.verifying_key().as_bytes());
        let header = jws::encoded_header(&kid);
        Self { key, kid, header }
    }

    /// A new random key from the operating system's random number generator.
    ///
    /// # Errors
    /// [`SigningKeyError::Random`] if the operating system cannot provide random bytes.
    pub fn generate() -> Result<Self, SigningKeyError> {
        let mut seed = Zeroizing::new([0_u8; 32]);
        getrandom::fill(seed.as_mut_slice()).map_err(SigningKeyError::Random)?;
        Ok(Self::from_dalek(ed25519_dalek::SigningKey::from_bytes(
            &seed,
        )))
    }

    /// Reads a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`), v1 (as written by
    /// [`to_pkcs8_pem`](Self::to_pkcs8_pem) and `openssl genpkey -algorithm ed25519`) or v2 (with
    /// the public key, which must match). Surrounding whitespace is ignored, so the PEM may come
    /// from an environment variable.
    ///
    /// # Errors
    /// [`SigningKeyError::InvalidPem`] if it is longer than
    /// [`KEY_PEM_LENGTH_MAX_BYTES`](crate::limits::KEY_PEM_LENGTH_MAX_BYTES) or not an Ed25519
    /// PKCS#8 private key.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, SigningKeyError> {
        if pem.len() > KEY_PEM_LENGTH_MAX_BYTES {
            return Err(SigningKeyError::InvalidPem(format!(
                "longer than {KEY_PEM_LENGTH_MAX_BYTES} bytes"
            )));
        }
        let key = ed25519_dalek::SigningKey::from_pkcs8_pem(pem.trim())
            .map_err(|error| SigningKeyError::InvalidPem(error.to_string()))?;
        Ok(Self::from_dalek(key))
    }

    /// The key as PKCS#8 v1 PEM (RFC 8410 §10.3 format, readable by OpenSSL), in memory that is
    /// wiped when dropped.
    pub fn to_pkcs8_pem(&self) -> Zeroizing<String> {
        let mut der = Zeroizing::new([0_u8; 48]);
        der[..16].copy_from_slice(&PKCS8_V1_ED25519_PREFIX);
        der[16..].copy_from_slice(self.key.as_bytes());
        // Sized up front so the string never reallocates (a reallocation would leave an
        // unwiped copy of the secret behind).
        let mut pem = Zeroizing::new(String::with_capacity(PEM_LENGTH_BYTES));
        pem.push_str(PEM_BEGIN);
        STANDARD.encode_string(der.as_slice(), &mut pem);
        pem.push_str(PEM_END);
        debug_assert_eq!(pem.len(), PEM_LENGTH_BYTES);
        pem
    }

    /// Loads the key at `path`, or, if there is no file there, generates one and saves it as
    /// PKCS#8 PEM with mode `0600` (on Unix). Returns the key and whether it was created.
    ///
    /// The file appears atomically and complete: the key is written and synced under a
    /// temporary name in the same directory, then published under `path` with a hard link,
    /// which (unlike a rename) never replaces a file another process published meanwhile: if
    /// two nodes race on the same path, both end up with the first one's key. Where hard links
    /// are unsupported it falls back to a rename. The directory must exist.
    ///
    /// An existing file's permissions are left as they are (a mounted secret is often `0644`
    /// inside its container).
    ///
    /// # Errors
    /// [`SigningKeyError::Io`] if the file cannot be read or written,
    /// [`SigningKeyError::InvalidPem`] if it holds no valid key,
    /// [`SigningKeyError::Random`] if no random bytes are available.
    pub fn load_or_generate(path: &Path) -> Result<(Self, bool), SigningKeyError> {
        let io_error = |source| SigningKeyError::Io {
            path: path.to_owned(),
            source,
        };
        match read_key_file(path) {
            Ok(key) => return Ok((key, false)),
            Err(SigningKeyError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            }
            Err(error) => return Err(error),
        }
        let key = Self::generate()?;
        match write_new_file(path, key.to_pkcs8_pem().as_bytes()) {
            Ok(()) => Ok((key, true)),
            Err(source) if source.kind() == io::ErrorKind::AlreadyExists => {
                Ok((read_key_file(path)?, false))
            }
            Err(source) => Err(io_error(source)),
        }
    }

    /// The key id: the RFC 7638 thumbprint of the public key, base64url.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The 32-byte Ed25519 public key.
    pub fn public_key_bytes(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    pub(crate) fn verifying_key(&self) -> ed25519_dalek::VerifyingKey {
        self.key.verifying_key()
    }

    /// The public key as a JWK (`kty` `OKP`, `crv` `Ed25519`, `use` `sig`, `alg` `EdDSA`).
    pub fn public_jwk(&self) -> Jwk {
        Jwk::from_public_key_bytes(&self.public_key_bytes())
    }

    /// The JWK Set holding this key, as served at `GET /.well-known/jwks.json`. To publish
    /// several keys during a rotation, use [`Jwk::set_json`].
    pub fn jwks_json(&self) -> String {
        Jwk::set_json(&[self.public_jwk()])
    }

    /// A 32-byte secret for another use of the same key material, derived as SHA-256 over
    /// `"waitroom-token derived secret\0"`, `label`, a zero byte and the private key: one-way
    /// (it reveals nothing of the key) and different for every label. The waitroom node keys the
    /// HMAC of its join challenges with it, so every node that holds the signing key accepts the
    /// challenges any other issued, with no second secret to distribute.
    pub fn derive_secret(&self, label: &str) -> Zeroizing<[u8; 32]> {
        use sha2::Digest as _;
        let mut hasher = sha2::Sha256::new();
        hasher.update(b"waitroom-token derived secret\0");
        hasher.update(label.as_bytes());
        hasher.update([0]);
        hasher.update(self.key.as_bytes());
        let mut secret = Zeroizing::new([0_u8; 32]);
        secret.copy_from_slice(&hasher.finalize());
        secret
    }

    /// Signs `claims` into a compact JWT with header `{"alg":"EdDSA","typ":"JWT","kid":...}`.
    ///
    /// # Panics
    /// Never: serialising [`AdmissionClaims`] (strings and integers) cannot fail.
    pub fn sign(&self, claims: &AdmissionClaims) -> String {
        let payload = serde_json::to_vec(claims).expect("strings and integers always serialise");
        let payload_chars = payload.len().div_ceil(3) * 4;
        let mut token = String::with_capacity(
            self.header.len() + 1 + payload_chars + 1 + SIGNATURE_LENGTH_BASE64_CHARS,
        );
        token.push_str(&self.header);
        token.push('.');
        BASE64URL.encode_string(&payload, &mut token);
        let signature = self.key.sign(token.as_bytes());
        token.push('.');
        BASE64URL.encode_string(signature.to_bytes(), &mut token);
        token
    }
}

/// The public key of a PEM that holds either an Ed25519 public key (SPKI,
/// `-----BEGIN PUBLIC KEY-----`, as written by `openssl pkey -pubout`) or a PKCS#8 private key
/// (whose public half is taken), as a JWK. This is how a node is given keys it publishes and
/// accepts but does not sign with (during a rotation: the next key, and retired ones), so the
/// private half of a retired key need not stay on the nodes.
///
/// # Errors
/// [`SigningKeyError::InvalidPem`] if it is longer than
/// [`KEY_PEM_LENGTH_MAX_BYTES`](crate::limits::KEY_PEM_LENGTH_MAX_BYTES) or holds neither.
pub fn public_jwk_from_pem(pem: &str) -> Result<Jwk, SigningKeyError> {
    if pem.len() > KEY_PEM_LENGTH_MAX_BYTES {
        return Err(SigningKeyError::InvalidPem(format!(
            "longer than {KEY_PEM_LENGTH_MAX_BYTES} bytes"
        )));
    }
    let pem = pem.trim();
    if pem.starts_with("-----BEGIN PUBLIC KEY-----") {
        let key = ed25519_dalek::VerifyingKey::from_public_key_pem(pem)
            .map_err(|error| SigningKeyError::InvalidPem(error.to_string()))?;
        if key.is_weak() {
            return Err(SigningKeyError::InvalidPem(
                "a weak (small-order) Ed25519 public key".to_owned(),
            ));
        }
        return Ok(Jwk::from_public_key_bytes(key.as_bytes()));
    }
    Ok(SigningKey::from_pkcs8_pem(pem)?.public_jwk())
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// Reads and parses a key file, reading at most one byte past the size limit.
fn read_key_file(path: &Path) -> Result<SigningKey, SigningKeyError> {
    let io_error = |source| SigningKeyError::Io {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(io_error)?;
    let limit = KEY_PEM_LENGTH_MAX_BYTES + 1;
    // Full capacity up front: no reallocation, so no unwiped copy of the secret.
    let mut bytes = Zeroizing::new(Vec::with_capacity(limit));
    file.take(limit as u64)
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    let pem = std::str::from_utf8(&bytes)
        .map_err(|_| SigningKeyError::InvalidPem("the key file is not UTF-8 text".to_owned()))?;
    SigningKey::from_pkcs8_pem(pem)
}

/// Creates `path` with `contents` (mode 0600), atomically, failing with `AlreadyExists` if it
/// exists.
fn write_new_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "the key path has no file name")
    })?;
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut suffix = [0_u8; 8];
    getrandom::fill(&mut suffix).map_err(io::Error::other)?;
    let mut temporary_name = std::ffi::OsString::from(".");
    temporary_name.push(file_name);
    temporary_name.push(format!(".{}.tmp", jws::encode(&suffix)));
    let temporary = directory.join(temporary_name);

    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&temporary).and_then(|mut file| {
        file.write_all(contents)?;
        file.sync_all()
    });
    let published = written.and_then(|()| publish(&temporary, path));
    // After a hard link the temporary name is redundant; after a rename or a failure to
    // create it, it is already gone.
    let _ = fs::remove_file(&temporary);
    published?;
    // Make the new directory entry durable too.
    #[cfg(unix)]
    File::open(directory)?.sync_all()?;
    Ok(())
}

fn publish(temporary: &Path, path: &Path) -> io::Result<()> {
    match fs::hard_link(temporary, path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Err(error),
        Err(_) if fs::exists(path)? => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the key file exists",
        )),
        Err(_) => fs::rename(temporary, path),
    }
}

/// Why a signing key could not be generated, read or saved.
#[derive(Debug)]
#[non_exhaustive]
pub enum SigningKeyError {
    /// Reading or writing the key file failed.
    Io {
        /// The key file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Not an Ed25519 PEM key: a PKCS#8 private key, or for [`public_jwk_from_pem`] also an SPKI
    /// public key (the reason never includes key material).
    InvalidPem(String),
    /// The operating system's random number generator failed.
    Random(getrandom::Error),
}

impl fmt::Display for SigningKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, source } => write!(f, "key file {}: {source}", path.display()),
            Self::InvalidPem(reason) => {
                write!(f, "not an Ed25519 PEM key: {reason}")
            }
            Self::Random(error) => write!(f, "no random bytes for a new key: {error}"),
        }
    }
}

impl std::error::Error for SigningKeyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            Self::Random(error) => Some(error),
            Self::InvalidPem(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;
    use crate::Verifier;
    use crate::test_support::{NOW_UNIX_S, ROOM, claims, expectations};

    /// RFC 8410 §10.3: an Ed25519 private key in PKCS#8 v1 PEM.
    const RFC8410_PEM: &str = "-----BEGIN PRIVATE KEY-----\n\
        MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n\
        -----END PRIVATE KEY-----\n";
    /// RFC 8037 Appendix A.1's private key `d`, as PKCS#8 v1 PEM.
    const RFC8037_PEM: &str = "-----BEGIN PRIVATE KEY-----\n\
        MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n\
        -----END PRIVATE KEY-----\n";

    fn decode_part(token: &str, index: usize) -> serde_json::Value {
        let part = token.split('.').nth(index).expect("three parts");
        let json = BASE64URL.decode(part).expect("base64url");
        serde_json::from_slice(&json).expect("JSON")
    }

    /// Derived secrets depend on the key and the label only, and are not the key.
    #[test]
    fn derived_secrets_differ_by_key_and_label() {
        let a = SigningKey::from_pkcs8_pem(RFC8410_PEM).unwrap();
        let b = SigningKey::from_pkcs8_pem(RFC8037_PEM).unwrap();
        let again = SigningKey::from_pkcs8_pem(RFC8410_PEM).unwrap();
        assert_eq!(*a.derive_secret("x"), *again.derive_secret("x"));
        assert_ne!(*a.derive_secret("x"), *a.derive_secret("y"));
        assert_ne!(*a.derive_secret("x"), *b.derive_secret("x"));
        assert_ne!(&a.derive_secret("x")[..], a.key.as_bytes());
    }

    #[test]
    fn signed_tokens_verify_with_every_kind_of_verifier() {
        let key = SigningKey::generate().expect("random bytes");
        let token = key.sign(&claims());
        let verifiers = [
            Verifier::from_signing_key(&key),
            Verifier::from_jwks_json(&key.jwks_json()).expect("a usable set"),
            Verifier::from_public_key_bytes(key.public_key_bytes()).expect("a valid key"),
        ];
        for verifier in verifiers {
            assert_eq!(
                verifier.verify(&token, &expectations(), NOW_UNIX_S),
                Ok(claims())
            );
        }
        let other = SigningKey::generate().expect("random bytes");
        let result = Verifier::from_signing_key(&other).verify(&token, &expectations(), NOW_UNIX_S);
        assert_eq!(result, Err(crate::VerifyError::UnknownKey));
    }

    #[test]
    fn tokens_have_the_documented_header_and_claims() {
        let key = SigningKey::from_pkcs8_pem(RFC8037_PEM).expect("a valid key");
        let token = key.sign(&claims());
        assert_eq!(
            decode_part(&token, 0),
            serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": key.kid()})
        );
        let payload = decode_part(&token, 1);
        assert_eq!(payload["aud"], ROOM);
        assert_eq!(payload["exp"], NOW_UNIX_S + 300);
        // The header is the first member so the JSON text starts exactly as specified.
        let header = BASE64URL
            .decode(token.split('.').next().expect("a part"))
            .expect("base64url");
        assert!(header.starts_with(br#"{"alg":"EdDSA","typ":"JWT","kid":""#));
    }

    #[test]
    fn the_kid_is_the_rfc7638_thumbprint() {
        let key = SigningKey::from_pkcs8_pem(RFC8037_PEM).expect("a valid key");
        assert_eq!(key.kid(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
        let jwk = key.public_jwk();
        assert_eq!(jwk.x, "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo");
        assert_eq!((jwk.kty.as_str(), jwk.crv.as_str()), ("OKP", "Ed25519"));
        assert_eq!((jwk.key_use.as_str(), jwk.alg.as_str()), ("sig", "EdDSA"));
        let jwks: serde_json::Value = serde_json::from_str(&key.jwks_json()).expect("JSON");
        assert_eq!(jwks["keys"][0]["kid"], key.kid());
    }

    #[test]
    fn pem_round_trips() {
        let key = SigningKey::from_pkcs8_pem(RFC8410_PEM).expect("a valid key");
        assert_eq!(key.to_pkcs8_pem().as_str(), RFC8410_PEM);
        let generated = SigningKey::generate().expect("random bytes");
        let reloaded = SigningKey::from_pkcs8_pem(&generated.to_pkcs8_pem()).expect("a valid key");
        assert_eq!(reloaded.kid(), generated.kid());
        // Ed25519 signatures are deterministic: same key, same token.
        assert_eq!(reloaded.sign(&claims()), generated.sign(&claims()));
    }

    #[test]
    fn pem_v2_and_surrounding_whitespace_are_accepted() {
        use ed25519_dalek::pkcs8::EncodePrivateKey as _;
        let key = SigningKey::generate().expect("random bytes");
        let v2 = key.key.to_pkcs8_pem(Default::default()).expect("encodes");
        assert_ne!(v2.as_str(), key.to_pkcs8_pem().as_str());
        let from_v2 = SigningKey::from_pkcs8_pem(&v2).expect("a valid v2 key");
        assert_eq!(from_v2.kid(), key.kid());
        let padded = format!("\n  {}  \n\n", key.to_pkcs8_pem().as_str());
        assert_eq!(
            SigningKey::from_pkcs8_pem(&padded)
                .expect("a valid key")
                .kid(),
            key.kid()
        );
    }

    #[test]
    fn invalid_pem_is_refused() {
        let public_only = "-----BEGIN PUBLIC KEY-----\n\
            MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n\
            -----END PUBLIC KEY-----\n";
        let truncated = &RFC8410_PEM[..RFC8410_PEM.len() - 10];
        let long = format!("{RFC8410_PEM}{}", " ".repeat(KEY_PEM_LENGTH_MAX_BYTES));
        for pem in ["", "garbage", public_only, truncated, &long] {
            let error = SigningKey::from_pkcs8_pem(pem).expect_err(pem);
            assert!(matches!(error, SigningKeyError::InvalidPem(_)), "{error}");
        }
    }

    #[test]
    fn a_public_jwk_comes_from_a_public_or_a_private_pem() {
        use ed25519_dalek::pkcs8::EncodePublicKey as _;
        let key = SigningKey::generate().expect("random bytes");
        let public_pem = key
            .verifying_key()
            .to_public_key_pem(Default::default())
            .expect("encodes");
        assert!(public_pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        for pem in [public_pem.as_str(), key.to_pkcs8_pem().as_str()] {
            let jwk = public_jwk_from_pem(&format!("\n {pem} \n")).expect("a valid key");
            assert_eq!(jwk, key.public_jwk());
        }
        // A token of the key verifies with the JWK read from its public PEM alone.
        let jwk = public_jwk_from_pem(&public_pem).expect("a valid key");
        let verifier = Verifier::from_jwks_json(&Jwk::set_json(&[jwk])).expect("a valid set");
        let token = key.sign(&claims());
        assert!(verifier.verify(&token, &expectations(), NOW_UNIX_S).is_ok());
        let truncated = &public_pem[..public_pem.len() - 12];
        let long = format!("{public_pem}{}", " ".repeat(KEY_PEM_LENGTH_MAX_BYTES));
        for pem in ["", "garbage", truncated, &long] {
            let error = public_jwk_from_pem(pem).expect_err(pem);
            assert!(matches!(error, SigningKeyError::InvalidPem(_)), "{error}");
        }
    }

    #[test]
    fn debug_does_not_show_the_secret() {
        let key = SigningKey::from_pkcs8_pem(RFC8410_PEM).expect("a valid key");
        let debug = format!("{key:?}");
        assert!(debug.contains(key.kid()));
        assert!(!debug.contains("MC4CAQAw"));
        assert!(!debug.contains("212"), "{debug}"); // first secret byte, 0xd4
    }

    #[test]
    fn load_or_generate_creates_a_private_file_once_and_reloads_it() {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let path = directory.path().join("token-key.pem");
        let (created, was_created) = SigningKey::load_or_generate(&path).expect("a new key");
        assert!(was_created);
        let metadata = fs::metadata(&path).expect("the key file exists");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
        }
        assert!(metadata.is_file());
        let (loaded, was_created) = SigningKey::load_or_generate(&path).expect("the same key");
        assert!(!was_created);
        assert_eq!(loaded.kid(), created.kid());
        let contents = fs::read_to_string(&path).expect("readable");
        assert_eq!(contents, created.to_pkcs8_pem().as_str());
        // Only the key file: the temporary file is gone.
        let names: Vec<_> = fs::read_dir(directory.path())
            .expect("listable")
            .map(|entry| entry.expect("an entry").file_name())
            .collect();
        assert_eq!(names, ["token-key.pem"]);
    }

    #[test]
    fn load_or_generate_reads_an_existing_key_and_refuses_a_bad_one() {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let path = directory.path().join("shared.pem");
        fs::write(&path, RFC8410_PEM).expect("writable");
        let (key, created) = SigningKey::load_or_generate(&path).expect("the existing key");
        assert!(!created);
        assert_eq!(key.to_pkcs8_pem().as_str(), RFC8410_PEM);

        fs::write(&path, "not a key").expect("writable");
        let error = SigningKey::load_or_generate(&path).expect_err("an invalid key");
        assert!(matches!(error, SigningKeyError::InvalidPem(_)), "{error}");
        assert_eq!(fs::read_to_string(&path).expect("readable"), "not a key"); // untouched

        fs::write(&path, vec![b' '; KEY_PEM_LENGTH_MAX_BYTES + 10]).expect("writable");
        let error = SigningKey::load_or_generate(&path).expect_err("too large");
        assert!(matches!(error, SigningKeyError::InvalidPem(_)), "{error}");

        let missing_directory = directory.path().join("missing").join("key.pem");
        let error = SigningKey::load_or_generate(&missing_directory).expect_err("no directory");
        assert!(matches!(error, SigningKeyError::Io { .. }), "{error}");
        assert!(error.to_string().contains("missing"), "{error}");
    }

    #[test]
    fn a_new_key_file_never_replaces_an_existing_one() {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let path = directory.path().join("key.pem");
        fs::write(&path, RFC8410_PEM).expect("writable");
        let error = write_new_file(&path, b"other").expect_err("exists");
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read_to_string(&path).expect("readable"), RFC8410_PEM);
        assert_eq!(fs::read_dir(directory.path()).expect("listable").count(), 1);
    }

    #[test]
    fn a_token_with_the_longest_ids_fits_the_token_limit() {
        let key = SigningKey::generate().expect("random bytes");
        let longest = AdmissionClaims {
            iss: format!("https://{}.example.com", "q".repeat(200)),
            aud: "r".repeat(64),  // room ids: at most 64 characters
            sub: "s".repeat(128), // session ids: at most 128 characters
            iat: u64::MAX,
            nbf: u64::MAX,
            exp: u64::MAX,
            jti: "j".repeat(64),
        };
        let length = key.sign(&longest).len();
        assert!(
            length * 4 < crate::limits::TOKEN_LENGTH_MAX_BYTES * 3,
            "{length} bytes"
        );
    }
}
