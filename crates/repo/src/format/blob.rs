//! Blobs: the unit of deduplication, and how one is sealed.
//!
//! A blob is a chunk of file data or a serialized tree. Its id is the keyed
//! BLAKE3 hash of its plaintext. Sealed, it is
//! `nonce (24) || XChaCha20-Poly1305(compression byte || payload) || tag (16)`
//! with associated data `type byte || id`, under the data key of the session
//! that wrote its pack.

use serde::{Deserialize, Serialize};

use crate::format::compress;
use crate::format::crypto::{self, SecretKey};
use crate::format::envelope::FormatError;
use crate::format::id::Id;
use crate::format::keys::KeyMaterial;

/// What a blob holds. Data and tree blobs go to separate packs, so metadata
/// can be read without touching file contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobType {
    /// File contents.
    Data,
    /// A directory listing (or other structured metadata).
    Tree,
}

impl std::fmt::Display for BlobType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BlobType::Data => "data",
            BlobType::Tree => "tree",
        })
    }
}

impl BlobType {
    /// The byte stored in pack headers and index files.
    pub fn to_byte(self) -> u8 {
        match self {
            BlobType::Data => 0,
            BlobType::Tree => 1,
        }
    }

    /// The inverse of [`BlobType::to_byte`].
    pub fn from_byte(b: u8) -> Option<BlobType> {
        match b {
            0 => Some(BlobType::Data),
            1 => Some(BlobType::Tree),
            _ => None,
        }
    }
}

/// Largest plaintext a blob may have (64 MiB): bounds decompression of forged
/// blobs. Chunks are at most 16 MiB; trees of huge directories stay below.
pub const MAX_BLOB_SIZE: usize = 64 * 1024 * 1024;

/// A blob ready to be put into a pack.
#[derive(Debug, Clone)]
pub struct SealedBlob {
    /// Data or tree.
    pub blob_type: BlobType,
    /// Content id.
    pub id: Id,
    /// Plaintext length.
    pub raw_length: u32,
    /// The sealed bytes.
    pub bytes: Vec<u8>,
}

fn aad(blob_type: BlobType, id: &Id) -> [u8; 33] {
    let mut aad = [0u8; 33];
    aad[0] = blob_type.to_byte();
    aad[1..].copy_from_slice(&id.0);
    aad
}

/// Compresses (when it pays) and seals a blob whose id is already known.
pub(crate) fn seal(key: &SecretKey, blob_type: BlobType, id: Id, plaintext: &[u8], level: i32) -> SealedBlob {
    let mut sealed = SealedBlob { blob_type, id, raw_length: 0, bytes: Vec::with_capacity(plaintext.len() + 64) };
    seal_into(key, blob_type, id, plaintext, level, &mut sealed);
    sealed
}

/// [`seal`] into an existing [`SealedBlob`], reusing its buffer. Returns
/// the time spent compressing (for the session's stage profile).
pub(crate) fn seal_into(
    key: &SecretKey,
    blob_type: BlobType,
    id: Id,
    plaintext: &[u8],
    level: i32,
    out: &mut SealedBlob,
) -> std::time::Duration {
    let mut compressing = std::time::Duration::ZERO;
    crypto::seal_into(key, &aad(blob_type, &id), &mut out.bytes, |buf| {
        let start = std::time::Instant::now();
        compress::encode(plaintext, level, buf);
        compressing = start.elapsed();
    });
    out.blob_type = blob_type;
    out.id = id;
    out.raw_length = plaintext.len() as u32;
    compressing
}

/// Reusable buffers for opening many blobs ([`Repository::open_blob_into`](crate::Repository::open_blob_into)).
#[derive(Debug, Default)]
pub struct BlobScratch {
    plain: Vec<u8>,
    data: Vec<u8>,
}

/// Like [`open`], with the plaintext in `scratch` (no allocation per blob
/// once the buffers have grown).
pub(crate) fn open_into<'s>(
    key: &SecretKey,
    keys: &KeyMaterial,
    blob_type: BlobType,
    id: &Id,
    raw_length: u32,
    sealed: &[u8],
    scratch: &'s mut BlobScratch,
) -> Result<&'s [u8], FormatError> {
    let raw = open_checked(key, keys, blob_type, id, raw_length, sealed, scratch)?;
    Ok(if raw { &scratch.plain[1..] } else { &scratch.data })
}

/// Opens a sealed blob and checks that its plaintext hashes to `id`.
pub(crate) fn open(
    key: &SecretKey,
    keys: &KeyMaterial,
    blob_type: BlobType,
    id: &Id,
    raw_length: u32,
    sealed: &[u8],
) -> Result<Vec<u8>, FormatError> {
    let mut scratch = BlobScratch::default();
    if open_checked(key, keys, blob_type, id, raw_length, sealed, &mut scratch)? {
        scratch.plain.drain(..1);
        Ok(scratch.plain)
    } else {
        Ok(scratch.data)
    }
}

/// Decrypts, decompresses and verifies into `scratch`; returns true when the
/// blob was stored raw (its data is `scratch.plain[1..]`), false when it was
/// decompressed into `scratch.data`.
fn open_checked(
    key: &SecretKey,
    keys: &KeyMaterial,
    blob_type: BlobType,
    id: &Id,
    raw_length: u32,
    sealed: &[u8],
    scratch: &mut BlobScratch,
) -> Result<bool, FormatError> {
    if raw_length as usize > MAX_BLOB_SIZE {
        return Err(FormatError::Mismatch(format!(
            "indexed length {raw_length} exceeds the {MAX_BLOB_SIZE}-byte blob limit"
        )));
    }
    crypto::open_into(key, &aad(blob_type, id), sealed, &mut scratch.plain)?;
    let raw = compress::decode_into(&scratch.plain, raw_length as usize, &mut scratch.data)
        .map_err(FormatError::Compression)?;
    let data: &[u8] = if raw { &scratch.plain[1..] } else { &scratch.data };
    if data.len() != raw_length as usize {
        return Err(FormatError::Mismatch(format!("length {} differs from the indexed {raw_length}", data.len())));
    }
    let actual = keys.content_id(data);
    if actual != *id {
        return Err(FormatError::Mismatch(format!("content hashes to {actual}, not to its id")));
    }
    Ok(raw)
}
