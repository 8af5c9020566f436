//! Index files and the in-memory index.
//!
//! An index file is a sealed envelope (magic `cairnIX1`) whose payload is:
//!
//! ```text
//! supersedes count u32 | superseded index ids (32 each)
//! pack count u32
//! per pack: pack id (32) | pack size u64 | session public key (32) | blob count u32
//!           per blob: type u8 | 0 0 0 | offset u32 | length u32 | raw length u32 | id (32)
//! authenticator (32)
//! ```
//!
//! The authenticator is keyed BLAKE3 of everything before it
//! under a key only full keys hold, or 32 zero bytes from put-only writers.
//! Only authenticated index files may supersede others, and writers
//! deduplicate only against their entries, so a put-only host can neither
//! hide the index nor poison deduplication.
//!
//! The session public key is repeated here so a blob can be opened from a
//! ranged read of its pack without first reading the pack header.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::format::blob::BlobType;
use crate::format::id::{Id, PackId};
use crate::format::pack::{self, PackEntry};
use crate::format::wire::{Reader, WireError, invalid};

const PACK_FIXED_LEN: usize = 32 + 8 + 32 + 4;
const BLOB_LEN: usize = 4 + pack::ENTRY_LEN;

/// One pack as listed in an index file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IndexedPack {
    /// The pack's object id.
    pub id: PackId,
    /// The pack's size in bytes.
    pub size: u64,
    /// Public key of the session that sealed the pack.
    #[serde(serialize_with = "crate::format::pack::hex32")]
    pub session_public: [u8; 32],
    /// Its blobs.
    pub blobs: Vec<PackEntry>,
}

/// The decoded payload of one index file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IndexFile {
    /// Index files whose content this one replaces (written by prune); readers
    /// ignore superseded files even while they still exist.
    pub supersedes: Vec<Id>,
    /// Packs and their blobs.
    pub packs: Vec<IndexedPack>,
    /// Whether a full key wrote it (its authenticator verified). Not part of
    /// the encoded body; set by the reader.
    pub authenticated: bool,
}

/// Bytes of the authenticator behind an index file's body.
pub(crate) const AUTHENTICATOR_LEN: usize = 32;

/// Splits an index payload into its body and its authenticator.
pub(crate) fn split_authenticator(payload: &[u8]) -> Result<(&[u8], [u8; AUTHENTICATOR_LEN]), WireError> {
    if payload.len() < AUTHENTICATOR_LEN {
        return Err(WireError::Truncated { offset: payload.len(), needed: AUTHENTICATOR_LEN - payload.len() });
    }
    let (body, tag) = payload.split_at(payload.len() - AUTHENTICATOR_LEN);
    let mut out = [0u8; AUTHENTICATOR_LEN];
    out.copy_from_slice(tag);
    Ok((body, out))
}

impl IndexFile {
    /// Binary payload (before sealing).
    pub fn encode(&self) -> Vec<u8> {
        let blobs: usize = self.packs.iter().map(|p| p.blobs.len()).sum();
        let mut out =
            Vec::with_capacity(8 + 32 * self.supersedes.len() + PACK_FIXED_LEN * self.packs.len() + BLOB_LEN * blobs);
        out.extend_from_slice(&(self.supersedes.len() as u32).to_le_bytes());
        for id in &self.supersedes {
            out.extend_from_slice(&id.0);
        }
        out.extend_from_slice(&(self.packs.len() as u32).to_le_bytes());
        for p in &self.packs {
            out.extend_from_slice(p.id.as_bytes());
            out.extend_from_slice(&p.size.to_le_bytes());
            out.extend_from_slice(&p.session_public);
            out.extend_from_slice(&(p.blobs.len() as u32).to_le_bytes());
            for b in &p.blobs {
                out.push(b.blob_type.to_byte());
                out.extend_from_slice(&[0; 3]);
                out.extend_from_slice(&b.offset.to_le_bytes());
                out.extend_from_slice(&b.length.to_le_bytes());
                out.extend_from_slice(&b.raw_length.to_le_bytes());
                out.extend_from_slice(&b.id.0);
            }
        }
        out
    }

    /// Parses a payload, checking every blob lies inside its pack.
    pub fn decode(bytes: &[u8]) -> Result<IndexFile, WireError> {
        let mut r = Reader::new(bytes);
        let n = r.count("superseded index count", 32)?;
        let supersedes = (0..n).map(|_| r.id()).collect::<Result<Vec<_>, _>>()?;
        let n = r.count("pack count", PACK_FIXED_LEN)?;
        let mut packs = Vec::with_capacity(n);
        for _ in 0..n {
            let id = r.id()?;
            let size = r.u64()?;
            if size > pack::MAX_PACK_SIZE {
                return Err(invalid("pack size", format!("{size} for pack {id}")));
            }
            let session_public = r.array()?;
            let count = r.count("blob count", BLOB_LEN)?;
            let mut blobs = Vec::with_capacity(count);
            for _ in 0..count {
                let type_byte = r.u8()?;
                let blob_type =
                    BlobType::from_byte(type_byte).ok_or_else(|| invalid("blob type", type_byte.to_string()))?;
                if r.array::<3>()? != [0; 3] {
                    return Err(invalid("reserved bytes", "not zero"));
                }
                let offset = r.u32()?;
                let (length, raw_length) = (r.u32()?, r.u32()?);
                let blob_id = r.id()?;
                if offset as u64 + length as u64 > size
                    || (length as usize) <= crate::format::crypto::SEAL_OVERHEAD
                    || raw_length as usize > crate::format::blob::MAX_BLOB_SIZE
                {
                    return Err(invalid(
                        "blob location",
                        format!("blob {blob_id} at {offset}+{length} in pack {id} of {size} bytes"),
                    ));
                }
                blobs.push(PackEntry { blob_type, id: blob_id, offset, length, raw_length });
            }
            packs.push(IndexedPack { id: PackId(id), size, session_public, blobs });
        }
        r.finish()?;
        Ok(IndexFile { supersedes, packs, authenticated: false })
    }
}

/// Where a blob is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    /// Position of the pack in [`Index::packs`].
    pub pack: u32,
    /// Data or tree.
    pub blob_type: BlobType,
    /// Offset in the pack.
    pub offset: u32,
    /// Sealed length.
    pub length: u32,
    /// Plaintext length.
    pub raw_length: u32,
    /// Listed by an authenticated (full-key) index file.
    pub trusted: bool,
}

/// A pack known to the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackInfo {
    /// Object id.
    pub id: PackId,
    /// Size in bytes.
    pub size: u64,
    /// Session that sealed it.
    pub session_public: [u8; 32],
}

/// All blobs of a repository, by id: the union of every index file that no
/// other index file supersedes.
///
/// Memory is what bounds a repository's size, so blobs are kept compactly:
/// a sorted vector of (id, 16-byte location), 48 bytes per blob, with a
/// directory by leading id bits (half a byte per blob), plus a hash map for
/// blobs added since it was sorted, merged in when it grows past an eighth
/// of the vector (ARCHITECTURE.md, "Scale").
#[derive(Debug, Default, Clone)]
pub struct Index {
    blobs: BlobTable,
    packs: Vec<PackInfo>,
    pack_positions: HashMap<PackId, u32>,
    files: HashSet<Id>,
}

impl Index {
    /// Builds the index from index files. Files that an *authenticated* file
    /// supersedes are skipped; entries of authenticated files win over those
    /// of put-only writers.
    pub fn from_files(mut files: Vec<(Id, IndexFile)>) -> Index {
        let superseded: HashSet<Id> =
            files.iter().filter(|(_, f)| f.authenticated).flat_map(|(_, f)| f.supersedes.iter().copied()).collect();
        files.sort_by_key(|(id, f)| (!f.authenticated, *id));
        let mut index = Index::default();
        let mut entries = Vec::with_capacity(
            files
                .iter()
                .filter(|(id, _)| !superseded.contains(id))
                .flat_map(|(_, f)| &f.packs)
                .map(|p| p.blobs.len())
                .sum(),
        );
        let large = entries.capacity() >= TRIM_AFTER_BLOBS;
        let mut moved_since_trim = 0;
        for (id, file) in files {
            if superseded.contains(&id) {
                continue;
            }
            index.files.insert(id);
            for pack in file.packs {
                let position = index.pack_position(&pack);
                let trusted = file.authenticated;
                entries.extend(pack.blobs.iter().map(|b| (b.id, PackedLocation::new(position, b, trusted))));
                moved_since_trim += pack.blobs.len();
            }
            // The table grows as the decoded files shrink: hand their
            // memory back as it goes, or both stay resident at the peak.
            if large && moved_since_trim >= TRIM_AFTER_BLOBS * 8 {
                release_freed_memory();
                moved_since_trim = 0;
            }
        }
        index.blobs = BlobTable::from_entries(entries);
        if large {
            release_freed_memory();
        }
        index
    }

    /// The position of `pack` in [`Index::packs`], adding it if new.
    fn pack_position(&mut self, pack: &IndexedPack) -> u32 {
        match self.pack_positions.get(&pack.id) {
            Some(&p) => p,
            None => {
                let p = self.packs.len() as u32;
                self.packs.push(PackInfo { id: pack.id, size: pack.size, session_public: pack.session_public });
                self.pack_positions.insert(pack.id, p);
                p
            }
        }
    }

    /// Adds (or re-adds) a pack and its blobs; `trusted` when an
    /// authenticated index file lists it.
    pub fn add_pack(&mut self, pack: &IndexedPack, trusted: bool) {
        let position = self.pack_position(pack);
        for b in &pack.blobs {
            let location = PackedLocation::new(position, b, trusted);
            match self.blobs.get_mut(&b.id) {
                Some(existing) if trusted && !existing.trusted() => *existing = location,
                Some(_) => {}
                None => self.blobs.insert(b.id, location),
            }
        }
    }

    /// Where `id` is stored, if anywhere.
    pub fn get(&self, id: &Id) -> Option<(&PackInfo, BlobLocation)> {
        self.blobs.get(id).map(|loc| (&self.packs[loc.pack() as usize], loc.unpack()))
    }

    /// Whether some index file lists pack `id`.
    pub fn has_pack(&self, id: &PackId) -> bool {
        self.pack_positions.contains_key(id)
    }

    /// Whether the repository has blob `id` (listed by any index file).
    pub fn contains(&self, id: &Id) -> bool {
        self.blobs.get(id).is_some()
    }

    /// Whether an authenticated index file lists blob `id`: what a writer
    /// may deduplicate against without uploading the blob itself.
    pub fn contains_trusted(&self, id: &Id) -> bool {
        self.blobs.get(id).is_some_and(|l| l.trusted())
    }

    /// Every indexed blob with its location (in no particular order).
    pub fn blobs(&self) -> impl Iterator<Item = (&Id, BlobLocation)> {
        self.blobs.iter().map(|(id, loc)| (id, loc.unpack()))
    }

    /// Number of distinct blobs.
    pub fn blob_count(&self) -> usize {
        self.blobs.len()
    }

    /// All packs.
    pub fn packs(&self) -> &[PackInfo] {
        &self.packs
    }

    /// The index files this index was built from (superseded ones excluded).
    pub fn files(&self) -> &HashSet<Id> {
        &self.files
    }

    /// Bytes of memory the blob table holds (its allocated capacity), for
    /// the scale benchmark.
    pub fn blob_table_bytes(&self) -> usize {
        self.blobs.allocated_bytes()
    }
}

/// A [`BlobLocation`] in 16 bytes: the pack position shares its word with
/// the blob type and trust bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PackedLocation {
    /// Pack position (low 30 bits), [`Self::TREE`] and [`Self::TRUSTED`].
    pack_and_flags: u32,
    offset: u32,
    length: u32,
    raw_length: u32,
}

impl PackedLocation {
    const TREE: u32 = 1 << 31;
    const TRUSTED: u32 = 1 << 30;
    /// Packs an index can hold: 2^30, about 16 PiB of 16 MiB packs.
    const MAX_PACKS: u32 = 1 << 30;

    fn new(pack: u32, blob: &PackEntry, trusted: bool) -> Self {
        assert!(pack < Self::MAX_PACKS, "more than 2^30 packs in one index");
        let tree = if blob.blob_type == BlobType::Tree { Self::TREE } else { 0 };
        let trust = if trusted { Self::TRUSTED } else { 0 };
        PackedLocation {
            pack_and_flags: pack | tree | trust,
            offset: blob.offset,
            length: blob.length,
            raw_length: blob.raw_length,
        }
    }

    fn pack(&self) -> u32 {
        self.pack_and_flags & (Self::MAX_PACKS - 1)
    }

    fn trusted(&self) -> bool {
        self.pack_and_flags & Self::TRUSTED != 0
    }

    fn unpack(&self) -> BlobLocation {
        BlobLocation {
            pack: self.pack(),
            blob_type: if self.pack_and_flags & Self::TREE != 0 { BlobType::Tree } else { BlobType::Data },
            offset: self.offset,
            length: self.length,
            raw_length: self.raw_length,
            trusted: self.trusted(),
        }
    }
}

/// Blob id → location: a sorted vector, and a hash map for recent
/// additions. An id is in at most one of the two.
///
/// Ids are keyed hashes, so they spread evenly: a directory of the vector's
/// start positions by the ids' leading bits (one `u32` per 8 blobs) narrows
/// a lookup to about 8 neighbouring entries, one or two cache misses where
/// bisecting 10 million entries took 24. Ids crafted to share leading bits
/// only make their own range longer, and bisection still bounds it.
#[derive(Debug, Default, Clone)]
struct BlobTable {
    sorted: Vec<(Id, PackedLocation)>,
    /// `directory[b]` is the first position in `sorted` whose id's leading
    /// `bits` bits are ≥ `b`; one more entry closes the last range.
    directory: Vec<u32>,
    bits: u32,
    recent: HashMap<Id, PackedLocation>,
}

impl BlobTable {
    /// A table of `entries`, where for an id listed more than once a trusted
    /// entry wins over an untrusted one, and otherwise the first listed.
    fn from_entries(mut entries: Vec<(Id, PackedLocation)>) -> Self {
        // Among equal ids: trusted first, then the pack listed first (packs
        // are numbered in listing order), which a stable sort would also
        // give; an unstable sort needs no scratch copy of the table.
        entries.sort_unstable_by_key(|(id, loc)| (*id, !loc.trusted(), loc.pack()));
        entries.dedup_by_key(|(id, _)| *id);
        entries.shrink_to_fit();
        let mut table = BlobTable { sorted: entries, ..BlobTable::default() };
        table.build_directory();
        table
    }

    /// The leading 64 bits of an id, as a number.
    fn prefix(id: &Id) -> u64 {
        u64::from_be_bytes(id.0[..8].try_into().expect("ids are 32 bytes"))
    }

    fn bucket(&self, id: &Id) -> usize {
        if self.bits == 0 { 0 } else { (Self::prefix(id) >> (64 - self.bits)) as usize }
    }

    /// Rebuilds the directory for the current vector: 2^bits ≈ len / 8.
    fn build_directory(&mut self) {
        let n = self.sorted.len();
        self.bits = if n < 64 { 0 } else { (n / 8).ilog2().min(32) };
        let buckets = 1usize << self.bits;
        let mut directory = Vec::with_capacity(buckets + 1);
        let mut position = 0usize;
        for b in 0..buckets {
            while position < n && self.bucket(&self.sorted[position].0) < b {
                position += 1;
            }
            directory.push(position as u32);
        }
        directory.push(n as u32);
        self.directory = directory;
    }

    fn position(&self, id: &Id) -> Option<usize> {
        if self.sorted.is_empty() {
            return None;
        }
        let b = self.bucket(id);
        let (start, end) = (self.directory[b] as usize, self.directory[b + 1] as usize);
        self.sorted[start..end].binary_search_by(|(probe, _)| probe.cmp(id)).ok().map(|i| start + i)
    }

    fn get(&self, id: &Id) -> Option<PackedLocation> {
        match self.position(id) {
            Some(i) => Some(self.sorted[i].1),
            None => self.recent.get(id).copied(),
        }
    }

    fn get_mut(&mut self, id: &Id) -> Option<&mut PackedLocation> {
        match self.position(id) {
            Some(i) => Some(&mut self.sorted[i].1),
            None => self.recent.get_mut(id),
        }
    }

    /// Inserts an id that is not in the table.
    fn insert(&mut self, id: Id, location: PackedLocation) {
        self.recent.insert(id, location);
        // Merging costs a sort of the whole table, so it happens when the
        // map has grown by a fraction of the vector: amortised O(log n).
        if self.recent.len() > (self.sorted.len() / 8).max(1 << 14) {
            self.sorted.extend(self.recent.drain());
            self.sorted.sort_unstable_by_key(|(id, _)| *id);
            self.recent = HashMap::new();
            self.build_directory();
        }
    }

    fn iter(&self) -> impl Iterator<Item = (&Id, &PackedLocation)> {
        self.sorted.iter().map(|(id, loc)| (id, loc)).chain(self.recent.iter())
    }

    fn len(&self) -> usize {
        self.sorted.len() + self.recent.len()
    }

    fn allocated_bytes(&self) -> usize {
        self.sorted.capacity() * std::mem::size_of::<(Id, PackedLocation)>()
            + self.directory.capacity() * std::mem::size_of::<u32>()
            + self.recent.capacity() * (std::mem::size_of::<(Id, PackedLocation)>() + 1)
    }
}

/// Indexes at least this large hand the memory of their decoded files back
/// to the system while they are built (see [`release_freed_memory`]).
const TRIM_AFTER_BLOBS: usize = 100_000;

/// Returns memory freed to the allocator to the system. The decoded index
/// files are freed in many small pieces after the table is built, and glibc
/// keeps such pieces mapped: 10 million blobs stayed at 68 bytes each
/// resident, against the table's 48 (benches/index-scale.rs).
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator's own
    // heaps; it touches no live allocation.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> IndexFile {
        let blob = |n: u8, offset| PackEntry {
            blob_type: BlobType::Data,
            id: Id([n; 32]),
            offset,
            length: 100,
            raw_length: 80,
        };
        IndexFile {
            supersedes: vec![Id([9; 32])],
            packs: vec![IndexedPack {
                id: PackId(Id([1; 32])),
                size: 300,
                session_public: [2; 32],
                blobs: vec![blob(3, 44), blob(4, 144)],
            }],
            authenticated: false,
        }
    }

    #[test]
    fn index_file_round_trip() {
        let f = sample();
        assert_eq!(IndexFile::decode(&f.encode()).unwrap(), f);
        let bytes = f.encode();
        for cut in 0..bytes.len() {
            assert!(IndexFile::decode(&bytes[..cut]).is_err(), "truncated at {cut}");
        }
        let mut bad = f.clone();
        bad.packs[0].blobs[1].offset = 250;
        assert!(IndexFile::decode(&bad.encode()).is_err());
    }

    #[test]
    fn only_authenticated_files_supersede() {
        let old = IndexFile { authenticated: true, ..sample() };
        let mut newer = IndexFile { supersedes: vec![Id([5; 32])], packs: vec![], authenticated: false };
        newer.packs.push(IndexedPack { id: PackId(Id([7; 32])), size: 200, session_public: [2; 32], blobs: vec![] });
        // A put-only writer's file cannot hide others...
        let index = Index::from_files(vec![(Id([5; 32]), old.clone()), (Id([6; 32]), newer.clone())]);
        assert!(index.contains_trusted(&Id([3; 32])));
        assert_eq!(index.packs().len(), 2);
        // ...a full key's can.
        let newer = IndexFile { authenticated: true, ..newer };
        let index = Index::from_files(vec![(Id([5; 32]), old), (Id([6; 32]), newer)]);
        assert!(!index.contains(&Id([3; 32])));
        assert_eq!(index.packs().len(), 1);
        assert!(index.files().contains(&Id([6; 32])));
    }

    #[test]
    fn trusted_entries_win_and_untrusted_ones_are_not_deduplicated_against() {
        let untrusted = sample();
        let mut trusted = IndexFile { supersedes: vec![], authenticated: true, ..sample() };
        trusted.packs[0].id = PackId(Id([8; 32]));
        trusted.packs[0].blobs.truncate(1);
        // Whatever order the files arrive in, blob 3 resolves to the trusted pack.
        for files in [
            vec![(Id([1; 32]), untrusted.clone()), (Id([2; 32]), trusted.clone())],
            vec![(Id([2; 32]), trusted.clone()), (Id([1; 32]), untrusted.clone())],
        ] {
            let index = Index::from_files(files);
            assert_eq!(*index.get(&Id([3; 32])).unwrap().0.id, Id([8; 32]));
            assert!(index.contains_trusted(&Id([3; 32])));
            assert!(index.contains(&Id([4; 32])) && !index.contains_trusted(&Id([4; 32])));
        }
    }

    #[test]
    fn among_trusted_duplicates_the_first_listed_file_wins_whatever_the_arrival_order() {
        // The same blob 3 in two trusted files, in different packs: the file
        // with the smaller id is listed first, and its pack wins.
        let file = |pack: u8| {
            let mut f = IndexFile { supersedes: vec![], authenticated: true, ..sample() };
            f.packs[0].id = PackId(Id([pack; 32]));
            f
        };
        for files in [
            vec![(Id([1; 32]), file(20)), (Id([2; 32]), file(10))],
            vec![(Id([2; 32]), file(10)), (Id([1; 32]), file(20))],
        ] {
            let index = Index::from_files(files);
            assert_eq!(*index.get(&Id([3; 32])).unwrap().0.id, Id([20; 32]));
            assert_eq!(index.blob_count(), 2);
        }
    }

    /// The compact table answers exactly as a plain map would, across many
    /// merges of recent additions into the sorted vector, with trusted
    /// entries replacing untrusted ones wherever they live.
    #[test]
    fn blob_table_matches_a_map_across_merges() {
        let mut index = Index::default();
        let mut reference: HashMap<Id, BlobLocation> = HashMap::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..40u32 {
            let trusted = round % 3 != 1;
            let blobs: Vec<PackEntry> = (0..2_000)
                .map(|i| {
                    // Some ids repeat across rounds (re-listed or repacked blobs).
                    let n = if i % 10 == 0 { next() % 500 } else { next() };
                    let mut id = [0u8; 32];
                    id[..8].copy_from_slice(&n.to_le_bytes());
                    PackEntry {
                        blob_type: if n % 4 == 0 { BlobType::Tree } else { BlobType::Data },
                        id: Id(id),
                        offset: i * 10,
                        length: 10,
                        raw_length: n as u32 % 1000,
                    }
                })
                .collect();
            let mut pack_id = [0xee; 32];
            pack_id[..4].copy_from_slice(&round.to_le_bytes());
            let pack = IndexedPack { id: PackId(Id(pack_id)), size: 1 << 20, session_public: [0; 32], blobs };
            index.add_pack(&pack, trusted);
            for b in &pack.blobs {
                let location = BlobLocation {
                    pack: round,
                    blob_type: b.blob_type,
                    offset: b.offset,
                    length: b.length,
                    raw_length: b.raw_length,
                    trusted,
                };
                match reference.get_mut(&b.id) {
                    Some(existing) if trusted && !existing.trusted => *existing = location,
                    Some(_) => {}
                    None => {
                        reference.insert(b.id, location);
                    }
                }
            }
        }
        assert!(!index.blobs.sorted.is_empty(), "the test must cross a merge");
        assert_eq!(index.blob_count(), reference.len());
        for (id, location) in &reference {
            assert_eq!(index.get(id).map(|(_, l)| l), Some(*location));
            assert_eq!(index.contains_trusted(id), location.trusted);
        }
        let listed: HashMap<Id, BlobLocation> = index.blobs().map(|(id, l)| (*id, l)).collect();
        assert_eq!(listed, reference);
        assert!(!index.contains(&Id([0xab; 32])));
        assert_eq!(std::mem::size_of::<(Id, PackedLocation)>(), 48);
    }
}
