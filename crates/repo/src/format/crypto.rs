//! Cryptographic primitives: random bytes, key derivation, the AEAD seal, and
//! the per-session data keys sealed to the repository's X25519 public key.
//!
//! Every encrypted byte in a repository goes through [`seal`] / [`open`]:
//! XChaCha20-Poly1305 with a random 192-bit nonce, laid out as
//! `nonce (24) || ciphertext || tag (16)`.

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Bytes of nonce in front of every sealed message.
pub const NONCE_LEN: usize = 24;
/// Bytes of authentication tag behind every sealed message.
pub const TAG_LEN: usize = 16;
/// What sealing adds to a plaintext.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// A 256-bit secret, wiped from memory when dropped.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct SecretKey([u8; 32]);

impl SecretKey {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SecretKey(bytes)
    }

    /// A fresh random key.
    pub fn random() -> Self {
        SecretKey(random_array())
    }

    /// The raw bytes (for key files and derivations only).
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// BLAKE3 `derive_key` of this secret under a context string: how every
    /// sub-key is derived from the master secret.
    pub fn derive(&self, context: &str) -> SecretKey {
        SecretKey(blake3::derive_key(context, &self.0))
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// `N` bytes from the operating system's CSPRNG.
pub fn random_array<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    // getrandom only fails when the OS has no entropy source at all, in which
    // case no key can be made safely: stopping is the only correct outcome.
    getrandom::fill(&mut out).expect("the operating system's random number generator failed");
    out
}

/// A seal or open that did not authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// Too short to hold a nonce and a tag.
    #[error("too short to be sealed data ({0} bytes)")]
    TooShort(usize),
    /// The tag did not verify: the bytes were modified, or the key is wrong.
    #[error("authentication failed (the data was modified, or it was sealed with another key)")]
    Authentication,
    /// A session public key that yields no shared secret (a low-order point).
    #[error("invalid session public key")]
    InvalidSessionKey,
}

/// Seals a plaintext that `fill` appends to the buffer it is given. Writing the
/// plaintext straight into the output buffer saves a copy on the hot path
/// (compression writes its output there directly).
pub fn seal_with(key: &SecretKey, aad: &[u8], capacity: usize, fill: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::with_capacity(NONCE_LEN + capacity + TAG_LEN);
    seal_into(key, aad, &mut out, fill);
    out
}

/// Like [`seal_with`], but into `out` (cleared first), so a caller can reuse
/// one buffer for many seals.
pub fn seal_into(key: &SecretKey, aad: &[u8], out: &mut Vec<u8>, fill: impl FnOnce(&mut Vec<u8>)) {
    let nonce: [u8; NONCE_LEN] = random_array();
    out.clear();
    out.extend_from_slice(&nonce);
    fill(out);
    let cipher = XChaCha20Poly1305::new(&Key::from(*key.expose()));
    let tag = cipher
        .encrypt_inout_detached(&XNonce::from(nonce), aad, (&mut out[NONCE_LEN..]).into())
        // Only fails for messages longer than 2^38 bytes; ours are bounded far below.
        .expect("plaintext within XChaCha20-Poly1305 limits");
    out.extend_from_slice(tag.as_slice());
}

/// Seals `plaintext`: `nonce || ciphertext || tag`.
pub fn seal(key: &SecretKey, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    seal_with(key, aad, plaintext.len(), |buf| buf.extend_from_slice(plaintext))
}

/// Opens what [`seal`] produced, verifying the tag.
pub fn open(key: &SecretKey, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut out = Vec::new();
    open_into(key, aad, sealed, &mut out)?;
    Ok(out)
}

/// Like [`open`], into `out` (cleared first), so a caller can reuse one
/// buffer for many blobs.
pub fn open_into(key: &SecretKey, aad: &[u8], sealed: &[u8], out: &mut Vec<u8>) -> Result<(), CryptoError> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(CryptoError::TooShort(sealed.len()));
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| CryptoError::TooShort(sealed.len()))?;
    let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| CryptoError::TooShort(sealed.len()))?;
    out.clear();
    out.extend_from_slice(ciphertext);
    let cipher = XChaCha20Poly1305::new(&Key::from(*key.expose()));
    cipher
        .decrypt_inout_detached(&XNonce::from(nonce), aad, (&mut out[..]).into(), &Tag::from(tag))
        .map_err(|_| CryptoError::Authentication)
}

/// The repository's X25519 key pair: every session key is agreed with it.
#[derive(Clone)]
pub struct RepositoryKeyPair {
    secret: StaticSecret,
    public: [u8; 32],
}

impl RepositoryKeyPair {
    /// The key pair whose secret scalar is `secret` (derived from the master secret).
    pub fn from_secret(secret: &SecretKey) -> Self {
        let secret = StaticSecret::from(*secret.expose());
        let public = PublicKey::from(&secret).to_bytes();
        RepositoryKeyPair { secret, public }
    }

    /// The public half, stored in `config` and in put-only key files.
    pub fn public(&self) -> [u8; 32] {
        self.public
    }

    /// Recovers the data key of the session whose public key is `session_public`.
    pub fn session_key(&self, session_public: &[u8; 32]) -> Result<SecretKey, CryptoError> {
        let shared = self.secret.diffie_hellman(&PublicKey::from(*session_public));
        if !shared.was_contributory() {
            return Err(CryptoError::InvalidSessionKey);
        }
        Ok(session_key_from(shared.as_bytes(), session_public, &self.public))
    }
}

fn session_key_from(shared: &[u8; 32], session_public: &[u8; 32], repository_public: &[u8; 32]) -> SecretKey {
    let mut material = [0u8; 96];
    material[..32].copy_from_slice(shared);
    material[32..64].copy_from_slice(session_public);
    material[64..].copy_from_slice(repository_public);
    let key = SecretKey(blake3::derive_key(SESSION_KEY_CONTEXT, &material));
    material.zeroize();
    key
}

/// BLAKE3 `derive_key` context of session data keys.
pub const SESSION_KEY_CONTEXT: &str = "cairn v1 session data key";

/// The data key of one writing session: an ephemeral X25519 key agreed with
/// the repository public key. The ephemeral secret is dropped at once, so a
/// writer that holds only the public key (a put-only key) cannot decrypt what
/// it wrote once the session ends, nor anything else in the repository.
pub struct WriteSession {
    public: [u8; 32],
    key: SecretKey,
}

impl WriteSession {
    /// Starts a session sealed to `repository_public`.
    pub fn new(repository_public: &[u8; 32]) -> Result<Self, CryptoError> {
        let ephemeral = StaticSecret::from(random_array::<32>());
        let public = PublicKey::from(&ephemeral).to_bytes();
        let shared = ephemeral.diffie_hellman(&PublicKey::from(*repository_public));
        if !shared.was_contributory() {
            return Err(CryptoError::InvalidSessionKey);
        }
        let key = session_key_from(shared.as_bytes(), &public, repository_public);
        Ok(WriteSession { public, key })
    }

    /// The session public key, stored with every object the session writes.
    pub fn public(&self) -> [u8; 32] {
        self.public
    }

    /// The session's data key.
    pub fn key(&self) -> &SecretKey {
        &self.key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let key = SecretKey::random();
        let sealed = seal(&key, b"aad", b"secret message");
        assert_eq!(sealed.len(), 14 + SEAL_OVERHEAD);
        assert_eq!(open(&key, b"aad", &sealed).unwrap(), b"secret message");
        assert_eq!(open(&key, b"other", &sealed), Err(CryptoError::Authentication));
        assert_eq!(open(&SecretKey::random(), b"aad", &sealed), Err(CryptoError::Authentication));
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert_eq!(open(&key, b"aad", &bad), Err(CryptoError::Authentication), "byte {i}");
        }
        assert_eq!(open(&key, b"", &[0; 10]), Err(CryptoError::TooShort(10)));
    }

    #[test]
    fn session_key_agreement() {
        let pair = RepositoryKeyPair::from_secret(&SecretKey::random());
        let session = WriteSession::new(&pair.public()).unwrap();
        assert_eq!(pair.session_key(&session.public()).unwrap(), *session.key());
        let other = RepositoryKeyPair::from_secret(&SecretKey::random());
        assert_ne!(other.session_key(&session.public()).unwrap(), *session.key());
        // the identity point gives no shared secret
        assert_eq!(pair.session_key(&[0u8; 32]).err(), Some(CryptoError::InvalidSessionKey));
    }
}
