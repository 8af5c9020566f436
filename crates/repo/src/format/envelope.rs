//! Errors of decoding repository objects, and the sealed-object envelope
//! shared by `config`, index files and snapshots.
//!
//! Envelope layout (FORMAT.md, "Sealed objects"):
//!
//! ```text
//! magic (8) | key reference (32) | nonce (24) | ciphertext | tag (16)
//! ```
//!
//! The associated data is `magic || key reference`; the plaintext is
//! `compression byte || payload`. The key reference is the repository id for
//! `config` (sealed with the config key) and the writing session's public key
//! for everything else.

use crate::format::compress;
use crate::format::crypto::{self, CryptoError, SecretKey};
use crate::format::wire::{Reader, WireError};

/// Object magics: the last character is the format version.
pub(crate) const CONFIG_MAGIC: [u8; 8] = *b"cairnCF1";
pub(crate) const INDEX_MAGIC: [u8; 8] = *b"cairnIX1";
pub(crate) const SNAPSHOT_MAGIC: [u8; 8] = *b"cairnSN1";
pub(crate) const TRASH_MAGIC: [u8; 8] = *b"cairnTR1";
pub(crate) const PACK_MAGIC: [u8; 8] = *b"cairnPK1";

/// Bytes in front of the sealed part of an envelope.
pub(crate) const ENVELOPE_PREFIX: usize = 8 + 32;

/// Largest decompressed payload of a sealed object (index files of very
/// large repositories stay well below it).
pub(crate) const MAX_OBJECT_PAYLOAD: usize = 1 << 30;

/// What is wrong with an object's bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The structure does not parse.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// Decryption did not authenticate.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The payload does not decompress.
    #[error("compression: {0}")]
    Compression(String),
    /// The JSON payload does not parse.
    #[error("content: {0}")]
    Json(String),
    /// The bytes do not hash to the object's name or the blob's id.
    #[error("{0}")]
    Mismatch(String),
    /// Written by a newer cairn (the last character of the magic).
    #[error("written in format version {found}, newer than this cairn reads (1); upgrade cairn")]
    NewerVersion {
        /// The version in the magic.
        found: u32,
    },
    /// Another object kind, or another format version.
    #[error("not a {expected} object (magic {found:?})")]
    Magic {
        /// The kind that was expected.
        expected: &'static str,
        /// The magic found.
        found: String,
    },
}

fn magic_name(magic: &[u8; 8]) -> &'static str {
    match magic {
        m if m == &CONFIG_MAGIC => "config",
        m if m == &INDEX_MAGIC => "index",
        m if m == &SNAPSHOT_MAGIC => "snapshot",
        m if m == &PACK_MAGIC => "pack",
        m if m == &TRASH_MAGIC => "deletion record",
        _ => "cairn",
    }
}

pub(crate) fn check_magic(found: &[u8; 8], expected: &[u8; 8]) -> Result<(), FormatError> {
    if found == expected {
        Ok(())
    } else if found[..7] == expected[..7] && found[7].is_ascii_digit() && found[7] > expected[7] {
        Err(FormatError::NewerVersion { found: (found[7] - b'0') as u32 })
    } else {
        Err(FormatError::Magic { expected: magic_name(expected), found: String::from_utf8_lossy(found).into_owned() })
    }
}

/// Seals `payload` into an envelope.
pub(crate) fn seal_object(magic: &[u8; 8], key_ref: &[u8; 32], key: &SecretKey, payload: &[u8], level: i32) -> Vec<u8> {
    let mut aad = [0u8; ENVELOPE_PREFIX];
    aad[..8].copy_from_slice(magic);
    aad[8..].copy_from_slice(key_ref);
    let sealed = crypto::seal_with(key, &aad, payload.len() + 1, |buf| compress::encode(payload, level, buf));
    let mut out = Vec::with_capacity(ENVELOPE_PREFIX + sealed.len());
    out.extend_from_slice(&aad);
    out.extend_from_slice(&sealed);
    out
}

/// The key reference of an envelope, read before its key is known.
pub(crate) fn key_ref(magic: &[u8; 8], bytes: &[u8]) -> Result<[u8; 32], FormatError> {
    let mut r = Reader::new(bytes);
    check_magic(&r.array()?, magic)?;
    Ok(r.array()?)
}

/// Opens an envelope with `key`, returning the decompressed payload.
pub(crate) fn open_object(magic: &[u8; 8], bytes: &[u8], key: &SecretKey) -> Result<Vec<u8>, FormatError> {
    key_ref(magic, bytes)?;
    let plain = crypto::open(key, &bytes[..ENVELOPE_PREFIX], &bytes[ENVELOPE_PREFIX..])?;
    compress::decode(&plain, MAX_OBJECT_PAYLOAD).map_err(FormatError::Compression)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trip_and_every_flipped_byte_fails() {
        let key = SecretKey::random();
        let bytes = seal_object(&INDEX_MAGIC, &[7; 32], &key, b"payload payload payload", 3);
        assert_eq!(key_ref(&INDEX_MAGIC, &bytes).unwrap(), [7; 32]);
        assert_eq!(open_object(&INDEX_MAGIC, &bytes, &key).unwrap(), b"payload payload payload");
        assert!(matches!(open_object(&SNAPSHOT_MAGIC, &bytes, &key), Err(FormatError::Magic { .. })));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(open_object(&INDEX_MAGIC, &bad, &key).is_err(), "flipped byte {i} went unnoticed");
        }
    }
}
