//! Pack files: many sealed blobs behind one sealed header.
//!
//! ```text
//! magic "cairnPK1" (8) | session public key (32) | header length u32 LE
//! sealed header (header length bytes; AAD = the 44 bytes before it)
//! blob, blob, ...   (each sealed as in `blob`)
//! ```
//!
//! The header plaintext (after its compression byte) is `count u32` then per
//! blob: `type u8 | 0u8 0u8 0u8 | stored length u32 | raw length u32 | id (32)`.
//! Blobs follow the header in header order, so offsets are implicit. The
//! header comes first so one ranged read from offset 0 returns it.

use bytes::Bytes;
use serde::Serialize;

use crate::format::blob::{BlobType, SealedBlob};
use crate::format::compress;
use crate::format::crypto::{self, SecretKey, WriteSession};
use crate::format::envelope::{self, FormatError, PACK_MAGIC};
use crate::format::id::{Id, PackId};
use crate::format::wire::{Reader, WireError, invalid};

/// Bytes before the sealed header.
pub const PREAMBLE_LEN: usize = 8 + 32 + 4;
/// Bytes per header entry.
pub(crate) const ENTRY_LEN: usize = 1 + 3 + 4 + 4 + 32;
/// Largest pack accepted, 4 GiB (offsets are u32).
pub const MAX_PACK_SIZE: u64 = 1 << 32;

/// One blob inside a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PackEntry {
    /// Data or tree.
    #[serde(rename = "type")]
    pub blob_type: BlobType,
    /// Content id.
    pub id: Id,
    /// Offset of the sealed blob from the start of the pack.
    pub offset: u32,
    /// Length of the sealed blob.
    pub length: u32,
    /// Length of the plaintext.
    pub raw_length: u32,
}

/// A decoded pack header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackHeader {
    /// Public key of the session that wrote the pack (hex in JSON).
    #[serde(serialize_with = "crate::format::pack::hex32")]
    pub session_public: [u8; 32],
    /// The blobs, in stored order.
    pub entries: Vec<PackEntry>,
}

pub(crate) fn hex32<S: serde::Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(v))
}

/// The fixed preamble: session key and sealed header length.
pub(crate) fn decode_preamble(bytes: &[u8]) -> Result<([u8; 32], u32), FormatError> {
    let mut r = Reader::new(bytes);
    envelope::check_magic(&r.array()?, &PACK_MAGIC)?;
    Ok((r.array()?, r.u32()?))
}

/// Decodes the header given the first `PREAMBLE_LEN + header length` bytes of
/// a pack of `pack_size` bytes, checking that the blobs exactly fill the pack.
pub(crate) fn decode_header(prefix: &[u8], pack_size: u64, key: &SecretKey) -> Result<PackHeader, FormatError> {
    let (session_public, header_len) = decode_preamble(prefix)?;
    if pack_size > MAX_PACK_SIZE {
        return Err(invalid("pack size", format!("{pack_size} bytes is over the 4 GiB limit of the format")).into());
    }
    // u64 arithmetic: no wrap-around on 32-bit targets.
    let header_end = PREAMBLE_LEN as u64 + header_len as u64;
    if (prefix.len() as u64) < header_end {
        return Err(
            WireError::Truncated { offset: prefix.len(), needed: (header_end - prefix.len() as u64) as usize }.into()
        );
    }
    let header_end = header_end as usize;
    let plain = crypto::open(key, &prefix[..PREAMBLE_LEN], &prefix[PREAMBLE_LEN..header_end])?;
    let plain = compress::decode(&plain, envelope::MAX_OBJECT_PAYLOAD).map_err(FormatError::Compression)?;
    let mut r = Reader::new(&plain);
    let count = r.count("pack header entry count", ENTRY_LEN)?;
    let mut entries = Vec::with_capacity(count);
    let mut offset = header_end as u64;
    for _ in 0..count {
        let (blob_type, length, raw_length, id) = read_entry_fields(&mut r)?;
        if offset + length as u64 > pack_size {
            return Err(invalid("pack header", format!("blob {id} ends past the pack's {pack_size} bytes")).into());
        }
        entries.push(PackEntry { blob_type, id, offset: offset as u32, length, raw_length });
        offset += length as u64;
    }
    r.finish()?;
    if offset != pack_size {
        return Err(invalid("pack header", format!("blobs end at {offset} but the pack has {pack_size} bytes")).into());
    }
    Ok(PackHeader { session_public, entries })
}

/// Reads `type | 3 zero bytes | length | raw length | id` (shared with index files).
pub(crate) fn read_entry_fields(r: &mut Reader<'_>) -> Result<(BlobType, u32, u32, Id), WireError> {
    let type_byte = r.u8()?;
    let blob_type = BlobType::from_byte(type_byte).ok_or_else(|| invalid("blob type", type_byte.to_string()))?;
    if r.array::<3>()? != [0; 3] {
        return Err(invalid("reserved bytes", "not zero"));
    }
    let length = r.u32()?;
    let raw_length = r.u32()?;
    if (length as usize) < crypto::SEAL_OVERHEAD + 1 {
        return Err(invalid("blob length", format!("{length} is shorter than a sealed blob")));
    }
    if raw_length as usize > crate::format::blob::MAX_BLOB_SIZE {
        return Err(invalid("blob raw length", format!("{raw_length} exceeds the blob size limit")));
    }
    Ok((blob_type, length, raw_length, r.id()?))
}

pub(crate) fn write_entry_fields(out: &mut Vec<u8>, blob_type: BlobType, length: u32, raw_length: u32, id: &Id) {
    out.push(blob_type.to_byte());
    out.extend_from_slice(&[0; 3]);
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&raw_length.to_le_bytes());
    out.extend_from_slice(&id.0);
}

/// Collects sealed blobs until the pack is big enough. The blobs are copied
/// into segments of one size that the caller supplies (and usually reuses,
/// see `writing::segments`), instead of thousands of blob-sized allocations
/// that fragment the heap (small files made the peak memory twice as large).
#[derive(Default)]
pub(crate) struct PackBuilder {
    segments: Vec<Vec<u8>>,
    len: usize,
    blobs: Vec<(BlobType, Id, u32, u32)>,
    /// Held while the pack's memory exists (the writer bounds data packs).
    guard: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// A finished pack, ready to upload.
pub(crate) struct FinishedPack {
    /// Released when the upload is done with the memory.
    pub guard: Option<tokio::sync::OwnedSemaphorePermit>,
    pub id: PackId,
    pub size: u64,
    /// Header and blob segments, uploaded as one object without
    /// concatenating them.
    pub parts: Vec<Bytes>,
    pub header: PackHeader,
}

impl PackBuilder {
    /// An empty builder holding `guard` until the finished pack is dropped.
    pub fn with_guard(guard: Option<tokio::sync::OwnedSemaphorePermit>) -> PackBuilder {
        PackBuilder { guard, ..PackBuilder::default() }
    }

    /// Bytes of blobs added.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Appends a blob, continuing in a segment from `new_segment` (empty,
    /// with the capacity every segment has) whenever the last one is full.
    pub fn add(&mut self, blob: &SealedBlob, mut new_segment: impl FnMut() -> Vec<u8>) {
        let mut rest = &blob.bytes[..];
        while !rest.is_empty() {
            if self.segments.last().is_none_or(|s| s.len() == s.capacity()) {
                let segment = new_segment();
                assert!(segment.is_empty() && segment.capacity() > 0, "a new segment must be empty, with room");
                self.segments.push(segment);
            }
            let segment = self.segments.last_mut().expect("a segment with room was just ensured");
            let (now, later) = rest.split_at((segment.capacity() - segment.len()).min(rest.len()));
            segment.extend_from_slice(now);
            rest = later;
        }
        self.len += blob.bytes.len();
        self.blobs.push((blob.blob_type, blob.id, blob.bytes.len() as u32, blob.raw_length));
    }

    /// Seals the header and turns each segment into a part of the upload
    /// with `wrap`.
    pub fn finish(self, session: &WriteSession, wrap: impl FnMut(Vec<u8>) -> Bytes) -> FinishedPack {
        let mut plain = Vec::with_capacity(4 + ENTRY_LEN * self.blobs.len());
        plain.extend_from_slice(&(self.blobs.len() as u32).to_le_bytes());
        for &(blob_type, id, length, raw_length) in &self.blobs {
            write_entry_fields(&mut plain, blob_type, length, raw_length, &id);
        }
        let header_len = (crypto::SEAL_OVERHEAD + 1 + plain.len()) as u32;
        let mut preamble = Vec::with_capacity(PREAMBLE_LEN);
        preamble.extend_from_slice(&PACK_MAGIC);
        preamble.extend_from_slice(&session.public());
        preamble.extend_from_slice(&header_len.to_le_bytes());
        // Ids are random-looking: compressing the header would not pay.
        let sealed =
            crypto::seal_with(session.key(), &preamble, plain.len() + 1, |buf| compress::encode(&plain, 0, buf));
        debug_assert_eq!(sealed.len(), header_len as usize);

        let mut hasher = blake3::Hasher::new();
        let mut head = preamble;
        head.extend_from_slice(&sealed);
        hasher.update(&head);
        for segment in &self.segments {
            hasher.update(segment);
        }
        let mut offset = head.len() as u64;
        let mut entries = Vec::with_capacity(self.blobs.len());
        for (blob_type, id, length, raw_length) in self.blobs {
            entries.push(PackEntry { blob_type, id, offset: offset as u32, length, raw_length });
            offset += length as u64;
        }
        FinishedPack {
            guard: self.guard,
            id: PackId(Id(*hasher.finalize().as_bytes())),
            size: offset,
            parts: std::iter::once(Bytes::from(head)).chain(self.segments.into_iter().map(wrap)).collect(),
            header: PackHeader { session_public: session.public(), entries },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::blob;
    use crate::format::keys::KeyMaterial;

    #[test]
    fn pack_round_trip_and_corruption() {
        let keys = KeyMaterial::generate();
        let session = WriteSession::new(&keys.repository_public()).unwrap();
        let mut builder = PackBuilder::default();
        let datas: Vec<Vec<u8>> = vec![b"first blob".to_vec(), vec![7u8; 5000], b"third".to_vec()];
        for (i, d) in datas.iter().enumerate() {
            let t = if i == 1 { BlobType::Tree } else { BlobType::Data };
            // Small segments: blobs span several of them.
            builder.add(&blob::seal(session.key(), t, keys.content_id(d), d, 3), || Vec::with_capacity(16));
        }
        let pack = builder.finish(&session, Bytes::from);
        assert!(pack.parts.len() > 5, "{} parts", pack.parts.len());
        let bytes: Vec<u8> = pack.parts.iter().flat_map(|p| p.iter().copied()).collect();
        assert_eq!(bytes.len() as u64, pack.size);
        assert_eq!(Id::of_object(&bytes), *pack.id);
        let key = keys.session_key(&pack.header.session_public).unwrap();
        let header = decode_header(&bytes, pack.size, &key).unwrap();
        assert_eq!(header, pack.header);
        for (e, d) in header.entries.iter().zip(&datas) {
            let sealed = &bytes[e.offset as usize..(e.offset + e.length) as usize];
            assert_eq!(&blob::open(&key, &keys, e.blob_type, &e.id, e.raw_length, sealed).unwrap(), d);
            // the type is authenticated too
            let other = if e.blob_type == BlobType::Data { BlobType::Tree } else { BlobType::Data };
            assert!(blob::open(&key, &keys, other, &e.id, e.raw_length, sealed).is_err());
        }
        let header_end = header.entries[0].offset as usize;
        for i in 0..header_end {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            let key = match decode_preamble(&bad) {
                Ok((pk, _)) => keys.session_key(&pk).unwrap_or_else(|_| key.clone()),
                Err(_) => continue,
            };
            assert!(decode_header(&bad, pack.size, &key).is_err(), "flipped header byte {i} went unnoticed");
        }
        assert!(decode_header(&bytes, pack.size + 1, &key).is_err());
        assert!(decode_header(&bytes, MAX_PACK_SIZE + 1, &key).is_err(), "offsets are u32: larger packs are refused");
    }
}
