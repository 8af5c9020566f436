//! The key hierarchy and key files.
//!
//! A repository has one random 32-byte **master secret**. Everything else is
//! derived from it with BLAKE3 `derive_key` (see FORMAT.md, "Keys"):
//!
//! | sub-key | context string | used for |
//! | --- | --- | --- |
//! | content-id key | `cairn v1 content id` | keyed BLAKE3 of blob plaintext |
//! | chunker secret | `cairn v1 chunker gear` | the gear table of the chunker |
//! | config key | `cairn v1 config` | sealing `config` |
//! | repository X25519 secret | `cairn v1 repository x25519` | opening session keys |
//!
//! Each password wraps a [`KeyMaterial`] in a key file with Argon2id and
//! XChaCha20-Poly1305. A *full* key file holds the master secret. A *put-only*
//! key file holds only what a writer needs (content-id key, chunker secret,
//! config key, repository public key): data is sealed with per-session keys
//! agreed with the repository public key, so such a writer cannot open
//! anything stored, not even what it wrote itself.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::format::crypto::{self, CryptoError, RepositoryKeyPair, SecretKey};
use crate::format::id::Id;

const CONTENT_ID_CONTEXT: &str = "cairn v1 content id";
const CHUNKER_CONTEXT: &str = "cairn v1 chunker gear";
const CONFIG_CONTEXT: &str = "cairn v1 config";
const REPOSITORY_X25519_CONTEXT: &str = "cairn v1 repository x25519";
const INDEX_AUTH_CONTEXT: &str = "cairn v1 index authentication";
/// Associated data of the sealed part of a key file.
const KEY_FILE_AAD: &[u8] = b"cairn key file v1";

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyKind {
    /// Reads and writes everything.
    Full,
    /// Adds data and snapshots; cannot decrypt anything stored.
    PutOnly,
}

impl std::fmt::Display for KeyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyKind::Full => "full",
            KeyKind::PutOnly => "put-only",
        })
    }
}

/// The secrets a client holds once a key file is unlocked.
#[derive(Clone)]
pub struct KeyMaterial {
    master: Option<SecretKey>,
    content_id_key: SecretKey,
    chunker_secret: SecretKey,
    config_key: SecretKey,
    repository_public: [u8; 32],
    repository_pair: Option<RepositoryKeyPair>,
}

impl KeyMaterial {
    /// Fresh material for a new repository.
    pub fn generate() -> Self {
        Self::from_master(SecretKey::random())
    }

    /// Full material derived from a master secret.
    pub fn from_master(master: SecretKey) -> Self {
        let pair = RepositoryKeyPair::from_secret(&master.derive(REPOSITORY_X25519_CONTEXT));
        KeyMaterial {
            content_id_key: master.derive(CONTENT_ID_CONTEXT),
            chunker_secret: master.derive(CHUNKER_CONTEXT),
            config_key: master.derive(CONFIG_CONTEXT),
            repository_public: pair.public(),
            repository_pair: Some(pair),
            master: Some(master),
        }
    }

    /// The put-only subset of this material: no master secret and no
    /// repository secret key.
    pub fn to_put_only(&self) -> Self {
        KeyMaterial { master: None, repository_pair: None, ..self.clone() }
    }

    /// Full or put-only.
    pub fn kind(&self) -> KeyKind {
        if self.master.is_some() { KeyKind::Full } else { KeyKind::PutOnly }
    }

    /// The content id of a blob: keyed BLAKE3 of its plaintext.
    pub fn content_id(&self, plaintext: &[u8]) -> Id {
        Id(*blake3::keyed_hash(self.content_id_key.expose(), plaintext).as_bytes())
    }

    /// The 32-byte secret the chunker's gear table is derived from.
    pub fn chunker_secret(&self) -> &[u8; 32] {
        self.chunker_secret.expose()
    }

    pub(crate) fn config_key(&self) -> &SecretKey {
        &self.config_key
    }

    /// The authenticator a full key appends to the index files it writes
    /// (keyed BLAKE3 under a key derived from the master secret); `None` for
    /// put-only keys, whose index files are therefore never trusted to
    /// supersede others or to deduplicate against.
    pub fn index_authenticator(&self, body: &[u8]) -> Option<[u8; 32]> {
        let key = self.master.as_ref()?.derive(INDEX_AUTH_CONTEXT);
        Some(*blake3::keyed_hash(key.expose(), body).as_bytes())
    }

    /// The repository public key that sessions are sealed to.
    pub fn repository_public(&self) -> [u8; 32] {
        self.repository_public
    }

    /// The master secret, for full keys (used to share it with a new
    /// repository, as `init --from-repo` will).
    pub fn master(&self) -> Option<&SecretKey> {
        self.master.as_ref()
    }

    /// The data key of the session with public key `session_public`; only a
    /// full key can compute it.
    pub fn session_key(&self, session_public: &[u8; 32]) -> Result<SecretKey, SessionKeyError> {
        let pair = self.repository_pair.as_ref().ok_or(SessionKeyError::PutOnly)?;
        pair.session_key(session_public).map_err(SessionKeyError::Crypto)
    }

    fn to_payload(&self) -> KeyPayload {
        match &self.master {
            Some(master) => KeyPayload::Master(B64.encode(master.expose())),
            None => KeyPayload::PutOnly {
                content_id_key: B64.encode(self.content_id_key.expose()),
                chunker_secret: B64.encode(self.chunker_secret.expose()),
                config_key: B64.encode(self.config_key.expose()),
                repository_public_key: B64.encode(self.repository_public),
            },
        }
    }

    /// Parses the (decrypted) JSON payload of a key file.
    pub(crate) fn from_payload_json(json: &[u8]) -> Result<Self, KeyFileError> {
        let payload: KeyPayload =
            serde_json::from_slice(json).map_err(|e| KeyFileError::Malformed(format!("sealed payload: {e}")))?;
        KeyMaterial::from_payload(&payload).map_err(KeyFileError::Malformed)
    }

    fn from_payload(payload: &KeyPayload) -> Result<Self, String> {
        fn key(field: &str, s: &str) -> Result<[u8; 32], String> {
            let bytes = Zeroizing::new(B64.decode(s).map_err(|e| format!("{field}: {e}"))?);
            bytes[..].try_into().map_err(|_| format!("{field}: expected 32 bytes, found {}", bytes.len()))
        }
        Ok(match payload {
            KeyPayload::Master(m) => Self::from_master(SecretKey::from_bytes(key("master", m)?)),
            KeyPayload::PutOnly { content_id_key, chunker_secret, config_key, repository_public_key } => KeyMaterial {
                master: None,
                repository_pair: None,
                content_id_key: SecretKey::from_bytes(key("content_id_key", content_id_key)?),
                chunker_secret: SecretKey::from_bytes(key("chunker_secret", chunker_secret)?),
                config_key: SecretKey::from_bytes(key("config_key", config_key)?),
                repository_public: key("repository_public_key", repository_public_key)?,
            },
        })
    }
}

/// Why a session key could not be computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionKeyError {
    /// Put-only keys hold no repository secret.
    #[error("a put-only key cannot decrypt repository data")]
    PutOnly,
    /// The stored session public key is invalid.
    #[error(transparent)]
    Crypto(CryptoError),
}

/// The sealed plaintext of a key file (JSON).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum KeyPayload {
    Master(String),
    PutOnly { content_id_key: String, chunker_secret: String, config_key: String, repository_public_key: String },
}

/// How a key file's wrapping key is derived from its password, stored in
/// each key file (`kdf`, tagged by `algorithm`).
///
/// A password a person chose gets Argon2id, which makes each guess cost
/// memory and time. A password cairn generated ([`generate_password`]: 256
/// random bits) cannot be guessed whatever the cost per guess, so stretching
/// it adds nothing but a fifth of a second and 64 MiB to every command; its
/// key files use one BLAKE3 derivation instead (FORMAT.md §4.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "algorithm", deny_unknown_fields)]
pub enum KdfParams {
    /// Argon2id (RFC 9106), for passwords people choose.
    #[serde(rename = "argon2id")]
    Argon2id {
        /// Argon2 version, 19 (0x13).
        version: u32,
        /// Memory in KiB.
        memory_kib: u32,
        /// Passes over memory.
        iterations: u32,
        /// Lanes.
        parallelism: u32,
        /// Random salt, base64.
        salt: String,
    },
    /// One BLAKE3 derivation, for a password made by [`generate_password`];
    /// refused for any other password when a key is created.
    #[serde(rename = "generated-password")]
    GeneratedPassword {
        /// Random salt, base64.
        salt: String,
    },
}

/// The prefix of a password made by [`generate_password`].
const GENERATED_PREFIX: &str = "cairn1-";
/// Its random bytes (hex after the prefix): 256 bits.
const GENERATED_BYTES: usize = 32;
/// BLAKE3 context of the wrapping key for generated passwords.
const GENERATED_WRAP_CONTEXT: &str = "cairn v1 generated password key file";

/// A new random password for a repository nobody types a password for:
/// `cairn1-` and 64 hex digits (256 bits from the operating system's
/// generator). Keys made with it and [`KdfParams::generated`] open without
/// Argon2id.
pub fn generate_password() -> Zeroizing<String> {
    let bytes = Zeroizing::new(crypto::random_array::<GENERATED_BYTES>());
    Zeroizing::new(format!("{GENERATED_PREFIX}{}", hex::encode(&bytes[..])))
}

/// Whether `password` has the form [`generate_password`] gives. The form is what is checked: it keeps a typed
/// password from being stored without Argon2id by mistake.
pub fn is_generated_password(password: &[u8]) -> bool {
    password.strip_prefix(GENERATED_PREFIX.as_bytes()).is_some_and(|hex| {
        hex.len() == 2 * GENERATED_BYTES && hex.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    })
}

impl KdfParams {
    /// Default cost: 64 MiB, 3 passes, 1 lane (about 0.2 s on one core here).
    pub const DEFAULT_MEMORY_KIB: u32 = 64 * 1024;
    /// Default passes.
    pub const DEFAULT_ITERATIONS: u32 = 3;
    /// Smallest memory accepted when creating a key (8 MiB).
    pub const MIN_MEMORY_KIB: u32 = 8 * 1024;
    /// Largest memory accepted when reading a key file (4 GiB), so a forged
    /// key file cannot make cairn allocate without bound.
    pub const MAX_MEMORY_KIB: u32 = 4 * 1024 * 1024;

    /// Fresh Argon2id parameters with a random 16-byte salt.
    pub fn new(memory_kib: u32, iterations: u32) -> Self {
        KdfParams::Argon2id {
            version: 0x13,
            memory_kib,
            iterations,
            parallelism: 1,
            salt: B64.encode(crypto::random_array::<16>()),
        }
    }

    /// Fresh parameters for a [generated password](generate_password), with
    /// a random 16-byte salt.
    pub fn generated() -> Self {
        KdfParams::GeneratedPassword { salt: B64.encode(crypto::random_array::<16>()) }
    }

    /// Argon2id's memory in KiB; `None` for generated passwords.
    pub fn memory_kib(&self) -> Option<u32> {
        match self {
            KdfParams::Argon2id { memory_kib, .. } => Some(*memory_kib),
            KdfParams::GeneratedPassword { .. } => None,
        }
    }

    /// Whether opening a key with these parameters costs little: no
    /// Argon2id, or Argon2id with at most `memory_kib` and `iterations`
    /// (fuzzing unlocks only such keys).
    pub fn is_cheaper_than(&self, memory_kib: u32, iterations: u32) -> bool {
        match self {
            KdfParams::Argon2id { memory_kib: m, iterations: t, .. } => *m <= memory_kib && *t <= iterations,
            KdfParams::GeneratedPassword { .. } => true,
        }
    }

    fn check(&self) -> Result<Vec<u8>, String> {
        let salt = match self {
            KdfParams::Argon2id { version, memory_kib, iterations, parallelism, salt } => {
                if *version != 0x13 {
                    return Err(format!("unsupported Argon2 version {version}"));
                }
                if !(8..=Self::MAX_MEMORY_KIB).contains(memory_kib)
                    || !(1..=64).contains(iterations)
                    || !(1..=64).contains(parallelism)
                    || *memory_kib < 8 * parallelism
                {
                    return Err(format!(
                        "KDF parameters out of range (memory {memory_kib} KiB, {iterations} iterations, {parallelism} lanes)"
                    ));
                }
                salt
            }
            KdfParams::GeneratedPassword { salt } => salt,
        };
        let salt = B64.decode(salt).map_err(|e| format!("salt: {e}"))?;
        if !(16..=64).contains(&salt.len()) {
            return Err(format!("salt of {} bytes (16 to 64 allowed)", salt.len()));
        }
        Ok(salt)
    }

    fn derive(&self, password: &[u8]) -> Result<SecretKey, String> {
        let salt = self.check()?;
        match self {
            KdfParams::Argon2id { memory_kib, iterations, parallelism, .. } => {
                let params = argon2::Params::new(*memory_kib, *iterations, *parallelism, Some(32))
                    .map_err(|e| format!("KDF parameters: {e}"))?;
                let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
                let mut out = Zeroizing::new([0u8; 32]);
                argon.hash_password_into(password, &salt, &mut out[..]).map_err(|e| format!("KDF: {e}"))?;
                Ok(SecretKey::from_bytes(*out))
            }
            KdfParams::GeneratedPassword { .. } => {
                // The salt's length is bounded (16..=64), so `salt || password`
                // parses back unambiguously; the key material is the secret.
                let mut hasher = blake3::Hasher::new_derive_key(GENERATED_WRAP_CONTEXT);
                hasher.update(&[salt.len() as u8]).update(&salt).update(password);
                Ok(SecretKey::from_bytes(*hasher.finalize().as_bytes()))
            }
        }
    }
}

/// A key file as stored under `keys/` (JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    /// Key file format version, 1.
    pub version: u32,
    /// What the key may do (informative; the sealed payload decides).
    pub kind: KeyKind,
    /// When the key was created.
    pub created: jiff::Timestamp,
    /// Host the key was created on.
    pub hostname: String,
    /// User who created the key.
    pub username: String,
    /// How the wrapping key is derived from the password.
    pub kdf: KdfParams,
    /// `nonce || ciphertext || tag` of the key payload, base64.
    pub data: String,
}

/// Why a key file could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFileError {
    /// The password does not open this key file.
    #[error("wrong password")]
    WrongPassword,
    /// The key file is not well formed.
    #[error("{0}")]
    Malformed(String),
}

impl KeyFile {
    /// Wraps `material` with `password`.
    pub fn create(
        material: &KeyMaterial,
        password: &[u8],
        kdf: KdfParams,
        hostname: String,
        username: String,
    ) -> Result<Self, KeyFileError> {
        if matches!(kdf, KdfParams::GeneratedPassword { .. }) && !is_generated_password(password) {
            return Err(KeyFileError::Malformed(
                "a password chosen by a person needs Argon2id; only a generated password (cairn1-…) may skip it".into(),
            ));
        }
        let wrapping = kdf.derive(password).map_err(KeyFileError::Malformed)?;
        let payload = Zeroizing::new(
            serde_json::to_vec(&material.to_payload()).map_err(|e| KeyFileError::Malformed(e.to_string()))?,
        );
        let sealed = crypto::seal(&wrapping, KEY_FILE_AAD, &payload);
        Ok(KeyFile {
            version: 1,
            kind: material.kind(),
            created: jiff::Timestamp::now(),
            hostname,
            username,
            kdf,
            data: B64.encode(sealed),
        })
    }

    /// Parses a key file's bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, KeyFileError> {
        let file: KeyFile =
            serde_json::from_slice(bytes).map_err(|e| KeyFileError::Malformed(format!("not a key file: {e}")))?;
        if file.version != 1 {
            return Err(KeyFileError::Malformed(format!("unsupported key file version {}", file.version)));
        }
        file.kdf.check().map_err(KeyFileError::Malformed)?;
        Ok(file)
    }

    /// The stored form (pretty JSON).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("key files serialize")
    }

    /// Opens the key file with `password`.
    pub fn unlock(&self, password: &[u8]) -> Result<KeyMaterial, KeyFileError> {
        let sealed = B64.decode(&self.data).map_err(|e| KeyFileError::Malformed(format!("data: {e}")))?;
        let wrapping = self.kdf.derive(password).map_err(KeyFileError::Malformed)?;
        let payload =
            Zeroizing::new(crypto::open(&wrapping, KEY_FILE_AAD, &sealed).map_err(|_| KeyFileError::WrongPassword)?);
        let material = KeyMaterial::from_payload_json(&payload)?;
        if material.kind() != self.kind {
            return Err(KeyFileError::Malformed(format!("declared {} but holds a {} key", self.kind, material.kind())));
        }
        Ok(material)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast_kdf() -> KdfParams {
        KdfParams::new(KdfParams::MIN_MEMORY_KIB, 1)
    }

    #[test]
    fn key_file_round_trip() {
        let material = KeyMaterial::generate();
        let file = KeyFile::create(&material, b"pw", fast_kdf(), "h".into(), "u".into()).unwrap();
        let decoded = KeyFile::decode(&file.encode()).unwrap();
        let opened = decoded.unlock(b"pw").unwrap();
        assert_eq!(opened.kind(), KeyKind::Full);
        assert_eq!(opened.content_id(b"x"), material.content_id(b"x"));
        assert_eq!(opened.repository_public(), material.repository_public());
        assert_eq!(decoded.unlock(b"wrong").err(), Some(KeyFileError::WrongPassword));
    }

    #[test]
    fn put_only_material_cannot_open_sessions() {
        let full = KeyMaterial::generate();
        let put = full.to_put_only();
        let file = KeyFile::create(&put, b"pw", fast_kdf(), "h".into(), "u".into()).unwrap();
        let opened = KeyFile::decode(&file.encode()).unwrap().unlock(b"pw").unwrap();
        assert_eq!(opened.kind(), KeyKind::PutOnly);
        assert!(opened.master().is_none());
        assert_eq!(opened.content_id(b"x"), full.content_id(b"x"));
        assert_eq!(opened.chunker_secret(), full.chunker_secret());
        let session = crypto::WriteSession::new(&opened.repository_public()).unwrap();
        assert_eq!(opened.session_key(&session.public()).err(), Some(SessionKeyError::PutOnly));
        assert_eq!(full.session_key(&session.public()).unwrap(), *session.key());
    }

    #[test]
    fn generated_passwords_open_without_argon2_and_typed_ones_cannot_skip_it() {
        let material = KeyMaterial::generate();
        let password = generate_password();
        assert!(is_generated_password(password.as_bytes()));
        let file =
            KeyFile::create(&material, password.as_bytes(), KdfParams::generated(), "h".into(), "u".into()).unwrap();
        let json = String::from_utf8(file.encode()).unwrap();
        assert!(json.contains("\"algorithm\": \"generated-password\""), "{json}");
        let decoded = KeyFile::decode(json.as_bytes()).unwrap();
        assert_eq!(decoded.kdf.memory_kib(), None);
        let opened = decoded.unlock(password.as_bytes()).unwrap();
        assert_eq!(opened.content_id(b"x"), material.content_id(b"x"));
        let other = generate_password();
        assert_ne!(*other, *password);
        assert_eq!(decoded.unlock(other.as_bytes()).err(), Some(KeyFileError::WrongPassword));

        for typed in [&b"correct horse battery staple"[..], b"cairn1-", b"cairn1-00", &[b'x'; 71][..]] {
            let err = KeyFile::create(&material, typed, KdfParams::generated(), "h".into(), "u".into()).unwrap_err();
            assert!(err.to_string().contains("needs Argon2id"), "{err}");
        }
        let upper = format!("cairn1-{}", "AB".repeat(32));
        assert!(!is_generated_password(upper.as_bytes()));
        assert!(!is_generated_password(format!("{}\n", password.as_str()).as_bytes()));
    }

    #[test]
    fn key_files_name_their_algorithm_and_reject_unknown_fields() {
        let material = KeyMaterial::generate();
        let file = KeyFile::create(&material, b"pw", fast_kdf(), "h".into(), "u".into()).unwrap();
        let json = String::from_utf8(file.encode()).unwrap();
        assert!(json.contains("\"algorithm\": \"argon2id\"") && json.contains("\"memory_kib\": 8192"), "{json}");
        for (from, to) in [
            ("\"algorithm\": \"argon2id\"", "\"algorithm\": \"scrypt\""),
            ("\"parallelism\": 1", "\"parallelism\": 1, \"extra\": 1"),
            ("\"algorithm\": \"argon2id\"", "\"algorithm\": \"generated-password\""),
        ] {
            let forged = json.replace(from, to);
            assert_ne!(forged, json);
            assert!(matches!(KeyFile::decode(forged.as_bytes()), Err(KeyFileError::Malformed(_))), "{forged}");
        }
    }

    #[test]
    fn forged_kdf_parameters_are_refused_before_use() {
        let material = KeyMaterial::generate();
        let mut file = KeyFile::create(&material, b"pw", fast_kdf(), "h".into(), "u".into()).unwrap();
        let KdfParams::Argon2id { memory_kib, .. } = &mut file.kdf else { panic!("argon2id") };
        *memory_kib = u32::MAX;
        assert!(matches!(KeyFile::decode(&file.encode()), Err(KeyFileError::Malformed(_))));
    }
}
