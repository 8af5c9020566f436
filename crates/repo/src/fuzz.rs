//! Entry points for the cargo-fuzz targets in `fuzz/` (not a stable API).
//!
//! Each function feeds arbitrary bytes to one decoder the way the
//! repository reads stored objects, and must never panic. Sealed formats are
//! fuzzed twice: the raw bytes as the stored object (exercising the outer
//! structure and authentication), and the bytes as the *plaintext* sealed
//! with a known key (so the inner parser is reached past the AEAD).

use std::sync::OnceLock;

use crate::format::blob::{self, BlobType};
use crate::format::config::Config;
use crate::format::crypto::WriteSession;
use crate::format::envelope::{self, INDEX_MAGIC, SNAPSHOT_MAGIC};
use crate::format::id::Id;
use crate::format::index::IndexFile;
use crate::format::keys::{KdfParams, KeyFile, KeyMaterial};
use crate::format::pack;
use crate::format::snapshot::Snapshot;
use crate::format::tree::Tree;

struct Fixture {
    keys: KeyMaterial,
    session: WriteSession,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let keys = KeyMaterial::from_master(crate::format::crypto::SecretKey::from_bytes([42; 32]));
        let session = WriteSession::new(&keys.repository_public()).expect("valid public key");
        Fixture { keys, session }
    })
}

/// A key file: JSON parsing and parameter checks. Unlocking runs only for
/// cheap KDF parameters, so the fuzzer is not stuck in Argon2.
pub fn key_file(data: &[u8]) {
    if let Ok(file) = KeyFile::decode(data) {
        if file.kdf.is_cheaper_than(64, 2) {
            let _ = file.unlock(b"password");
        }
    }
    // The sealed payload never authenticates under fuzzing: parse the bytes
    // as the decrypted payload too, and check that what parses round-trips.
    if let Ok(material) = KeyMaterial::from_payload_json(data) {
        let file = KeyFile::create(&material, b"pw", cheap_kdf(), String::new(), String::new()).expect("key file");
        let again = file.unlock(b"pw").expect("a fresh key file opens");
        assert_eq!(again.content_id(b"x"), material.content_id(b"x"));
        assert_eq!(again.kind(), material.kind());
    }
}

fn cheap_kdf() -> KdfParams {
    match KdfParams::new(KdfParams::MIN_MEMORY_KIB, 1) {
        KdfParams::Argon2id { version, parallelism, salt, .. } => {
            KdfParams::Argon2id { version, memory_kib: 8, iterations: 1, parallelism, salt }
        }
        generated => generated,
    }
}

/// `config`: the stored bytes, and the bytes as its sealed JSON.
pub fn config(data: &[u8]) {
    let f = fixture();
    let _ = Config::decode(data, &f.keys);
    let sealed = envelope::seal_object(&envelope::CONFIG_MAGIC, &[0; 32], f.keys.config_key(), data, 0);
    let _ = Config::decode(&sealed, &f.keys);
}

/// A pack: the bytes as a whole pack, and as the header plaintext.
pub fn pack_header(data: &[u8]) {
    let f = fixture();
    if let Ok((session, _)) = pack::decode_preamble(data) {
        if let Ok(key) = f.keys.session_key(&session) {
            let _ = pack::decode_header(data, data.len() as u64, &key);
        }
    }
    let _ = pack::decode_header(data, data.len() as u64, f.session.key());
    // The bytes as the header inside a well-formed pack, twice: as a raw
    // header, and as `compression byte || body` (reaching zstd headers too).
    let mut raw = vec![0u8];
    raw.extend_from_slice(data);
    for plain in [&raw[..], data] {
        let mut preamble = Vec::new();
        preamble.extend_from_slice(&envelope::PACK_MAGIC);
        preamble.extend_from_slice(&f.session.public());
        preamble.extend_from_slice(&((crate::format::crypto::SEAL_OVERHEAD + plain.len()) as u32).to_le_bytes());
        let mut packed = preamble.clone();
        packed.extend_from_slice(&crate::format::crypto::seal(f.session.key(), &preamble, plain));
        let size = packed.len() as u64;
        let _ = pack::decode_header(&packed, size, f.session.key());
        let _ = pack::decode_header(&packed, size + 4096, f.session.key());
    }
}

/// An index file: the stored bytes, and the bytes as its payload.
pub fn index(data: &[u8]) {
    let f = fixture();
    if let Ok(payload) = envelope::open_object(&INDEX_MAGIC, data, f.session.key()) {
        if let Ok((body, _)) = crate::format::index::split_authenticator(&payload) {
            let _ = IndexFile::decode(body);
        }
    }
    if let Ok((body, authenticator)) = crate::format::index::split_authenticator(data) {
        let _ = f.keys.index_authenticator(body) == Some(authenticator);
    }
    if let Ok(file) = IndexFile::decode(data) {
        // Whatever decodes must encode back to the same bytes.
        assert_eq!(file.encode(), data, "index file encoding is not canonical");
        let _ = crate::format::index::Index::from_files(vec![(Id([0; 32]), file)]);
    }
}

/// A deletion record (`trash/<id>`): the stored bytes, and the bytes as its
/// payload (marking time + index-file body).
pub fn trash_record(data: &[u8]) {
    let f = fixture();
    if let Ok(payload) = envelope::open_object(&crate::format::envelope::TRASH_MAGIC, data, f.session.key()) {
        if let Ok((body, _)) = crate::format::index::split_authenticator(&payload) {
            let _ = crate::maintenance::trash::TrashRecord::decode(body);
        }
    }
    if let Ok(record) = crate::maintenance::trash::TrashRecord::decode(data) {
        assert_eq!(record.encode(), data, "deletion record encoding is not canonical");
    }
}

/// A sealed blob: raw, and as the plaintext (compression byte + payload).
pub fn blob(data: &[u8]) {
    let f = fixture();
    let id = f.keys.content_id(data);
    let _ = blob::open(f.session.key(), &f.keys, BlobType::Data, &id, data.len() as u32, data);
    let plain = crate::format::crypto::seal(f.session.key(), &blob_aad(&id), data);
    let _ = blob::open(f.session.key(), &f.keys, BlobType::Data, &id, u32::MAX, &plain);
    if let Some((_, rest)) = data.split_first() {
        let _ = blob::open(f.session.key(), &f.keys, BlobType::Data, &id, rest.len() as u32, &plain);
    }
    let sealed = blob::seal(f.session.key(), BlobType::Tree, id, data, 3);
    let opened = blob::open(f.session.key(), &f.keys, BlobType::Tree, &id, sealed.raw_length, &sealed.bytes);
    assert_eq!(opened.as_deref().ok(), Some(data), "a sealed blob must open to its plaintext");
}

fn blob_aad(id: &Id) -> [u8; 33] {
    let mut aad = [0u8; 33];
    aad[1..].copy_from_slice(&id.0);
    aad
}

/// A snapshot: the stored bytes, and the bytes as its JSON payload.
pub fn snapshot(data: &[u8]) {
    let f = fixture();
    if let Ok(payload) = envelope::open_object(&SNAPSHOT_MAGIC, data, f.session.key()) {
        let _ = serde_json::from_slice::<Snapshot>(&payload);
    }
    if let Ok(s) = serde_json::from_slice::<Snapshot>(data) {
        let again = serde_json::to_vec(&s).expect("snapshots serialize");
        let parsed = serde_json::from_slice::<Snapshot>(&again).expect("a serialized snapshot parses");
        assert_eq!(
            serde_json::to_vec(&parsed).expect("snapshots serialize"),
            again,
            "a snapshot changed in a round trip"
        );
    }
}

/// A tree blob's plaintext. Decoding is canonical: whatever decodes must
/// encode to exactly the same bytes.
pub fn tree(data: &[u8]) {
    if let Ok(tree) = Tree::decode(data) {
        assert_eq!(tree.encode(), data, "a decoded tree encodes differently");
    }
}

/// The bucket source's decoders: S3 listing answers, escaped paths back to
/// keys (and every key through the escaping and back), object headers from
/// extended attributes.
pub fn bucket(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(listing) = crate::buckets::xml::parse_listing(&text) {
        let _ = crate::buckets::plan::versions_at(listing.objects, jiff::Timestamp::UNIX_EPOCH);
    }
    let _ = crate::buckets::xml::error_code(&text);
    let _ = crate::buckets::xml::url_decode(&text);
    if let Ok(key) = crate::buckets::path_to_key(&text) {
        assert_eq!(crate::buckets::path_to_key(&crate::buckets::key_to_path(&key)).as_deref(), Ok(key.as_str()));
    }
    let path = crate::buckets::key_to_path(&text);
    assert_eq!(crate::buckets::path_to_key(&path).as_deref(), Ok(text.as_ref()));
    let xattrs: Vec<(Vec<u8>, Vec<u8>)> = data
        .split(|b| *b == 0)
        .collect::<Vec<_>>()
        .chunks(2)
        .map(|pair| (pair[0].to_vec(), pair.get(1).map(|v| v.to_vec()).unwrap_or_default()))
        .collect();
    if let Ok(headers) = crate::buckets::ObjectHeaders::from_xattrs(&xattrs) {
        assert_eq!(crate::buckets::ObjectHeaders::from_xattrs(&headers.to_xattrs()), Ok(headers));
    }
}

/// A local directory cache file (the `dirs/` files of the cache directory).
/// The bytes are decoded as the file, and again as its body with a valid
/// checksum appended, so the parser is reached past the checksum; what
/// decodes must decode the same after encoding again.
pub fn dir_cache(data: &[u8]) {
    use crate::files::dircache::{DirCache, MAGIC};
    let _ = DirCache::decode(data);
    let mut file = MAGIC.to_vec();
    file.extend_from_slice(data);
    let sum = blake3::hash(&file);
    file.extend_from_slice(sum.as_bytes());
    if let Ok((settings, snapshot, cache)) = DirCache::decode(&file) {
        let again = DirCache::decode(&cache.encode(&settings, &snapshot)).expect("an encoded cache decodes");
        assert_eq!(again, (settings, snapshot, cache));
    }
}
