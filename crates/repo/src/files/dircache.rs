//! The directory cache: lets a backup take an unchanged directory's tree
//! from the parent snapshot by `lstat` alone, without reading the parent's
//! trees or encoding, hashing and storing new ones.
//!
//! For every directory of a snapshot the cache keeps two keys and the
//! directory's tree id:
//!
//! * the **early key**: BLAKE3 over the directory's own `lstat` (taken after
//!   listing it), the name and complete `lstat` of each non-directory entry
//!   (inode, size, mtime, ctime, mode, owner and its name, links, device),
//!   and the name of each subdirectory, in name order;
//! * the **key**: BLAKE3 over the early key and, for each subdirectory in
//!   name order, its name and its own key (or a marker when an
//!   `--exclude-if-present` file makes the walk skip it).
//!
//! So a key covers the whole subtree: any change below a directory (a
//! file's ctime, an added or removed entry, a changed subdirectory) changes
//! the key of every directory up the path. The early key lets the walk
//! stop looking at the first changed directory from the top.
//!
//! The cache is used only when the backup's parent snapshot is the one the
//! cache was written for (so every tree id in it belongs to a snapshot that
//! exists, and prune keeps it), only with the same exclusion options (their
//! fingerprint is part of the file), and each reused tree must still be in
//! the index. Directories whose tree records an error are not cached.
//!
//! The file (`<cache>/dirs/<host and paths hash>`, local, not part of the
//! repository format) is: the magic `CRNDIRC1`, the settings fingerprint
//! (32 bytes), the snapshot id (32), the entry count (u32 LE), then per
//! entry: key (32), early key (32), tree id (32), files, directories and
//! bytes of the subtree (3 × u64 LE), the count of subdirectory keys (u32
//! LE) and those keys (32 each); then BLAKE3 of everything before (32). A
//! file that does not decode is ignored: the backup walks everything.

use std::collections::{HashMap, HashSet};
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::files::archiver::FileOptions;
use crate::files::fsmeta::Owners;
use crate::format::id::{Id, SnapshotId, TreeId};

/// A directory key (see the module documentation).
pub(crate) type Key = [u8; 32];

/// The first bytes of a directory cache file.
pub(crate) const MAGIC: &[u8; 8] = b"CRNDIRC1";

/// Counts of a subtree, the directory itself included, so a reused
/// directory still counts its files in the snapshot's summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    /// Files (each hard link counts).
    pub files: u64,
    /// Directories, this one included.
    pub dirs: u64,
    /// Bytes of the files.
    pub bytes: u64,
}

impl Totals {
    pub(crate) fn add(&mut self, other: &Totals) {
        self.files += other.files;
        self.dirs += other.dirs;
        self.bytes += other.bytes;
    }
}

/// One directory of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub early: Key,
    pub tree: TreeId,
    pub totals: Totals,
    /// Keys of the subdirectories (to carry reused subtrees forward).
    pub subs: Vec<Key>,
}

/// The directories of one snapshot, by key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DirCache {
    entries: HashMap<Key, Entry>,
    early: HashSet<Key>,
}

/// Why a cache file was not used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum DecodeError {
    #[error("not a directory cache file (bad magic)")]
    Magic,
    #[error("truncated")]
    Truncated,
    #[error("checksum mismatch")]
    Checksum,
}

impl DirCache {
    /// A cache of `entries`.
    pub(crate) fn from_entries(entries: impl IntoIterator<Item = (Key, Entry)>) -> DirCache {
        let entries: HashMap<Key, Entry> = entries.into_iter().collect();
        let early = entries.values().map(|e| e.early).collect();
        DirCache { entries, early }
    }

    /// Whether some directory had this early key.
    pub(crate) fn has_early(&self, early: &Key) -> bool {
        self.early.contains(early)
    }

    /// The directory with this key.
    pub(crate) fn get(&self, key: &Key) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// Directories in the cache.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The cache for the snapshot just written (a plan: no I/O): the
    /// directories it walked (`new`), plus the directories it reused
    /// (`reused`, keys of `old`) with everything below them, taken from
    /// `old`. Subdirectory keys of new entries that are in neither are
    /// looked up in `old` too (a walked directory whose children were
    /// reused). Nothing else of `old` is kept.
    pub(crate) fn successor(old: Option<&DirCache>, new: Vec<(Key, Entry)>, reused: &[Key]) -> DirCache {
        let mut entries: HashMap<Key, Entry> = HashMap::with_capacity(new.len() + reused.len());
        let mut stack: Vec<Key> = reused.to_vec();
        for (key, entry) in new {
            stack.extend(entry.subs.iter().copied());
            entries.insert(key, entry);
        }
        if let Some(old) = old {
            while let Some(key) = stack.pop() {
                if entries.contains_key(&key) {
                    continue;
                }
                if let Some(entry) = old.entries.get(&key) {
                    stack.extend(entry.subs.iter().copied());
                    entries.insert(key, entry.clone());
                }
            }
        }
        DirCache::from_entries(entries)
    }

    /// The file's bytes.
    pub(crate) fn encode(&self, settings: &Key, snapshot: &SnapshotId) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 68 + self.entries.len() * 150);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(settings);
        out.extend_from_slice(snapshot.0.as_bytes());
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for (key, e) in &self.entries {
            out.extend_from_slice(key);
            out.extend_from_slice(&e.early);
            out.extend_from_slice(e.tree.0.as_bytes());
            for n in [e.totals.files, e.totals.dirs, e.totals.bytes] {
                out.extend_from_slice(&n.to_le_bytes());
            }
            out.extend_from_slice(&(e.subs.len() as u32).to_le_bytes());
            for sub in &e.subs {
                out.extend_from_slice(sub);
            }
        }
        let sum = blake3::hash(&out);
        out.extend_from_slice(sum.as_bytes());
        out
    }

    /// Decodes a file: its settings fingerprint, snapshot and directories.
    pub(crate) fn decode(bytes: &[u8]) -> Result<(Key, SnapshotId, DirCache), DecodeError> {
        if bytes.len() < MAGIC.len() + 32 || &bytes[..MAGIC.len()] != MAGIC {
            return Err(DecodeError::Magic);
        }
        let (body, sum) = bytes.split_at(bytes.len() - 32);
        if blake3::hash(body).as_bytes() != sum {
            return Err(DecodeError::Checksum);
        }
        let mut r = Reader(&body[MAGIC.len()..]);
        let settings = r.key()?;
        let snapshot = SnapshotId(Id(r.key()?));
        let count = r.u32()?;
        let mut entries = HashMap::new();
        for _ in 0..count {
            let key = r.key()?;
            let early = r.key()?;
            let tree = TreeId(Id(r.key()?));
            let totals = Totals { files: r.u64()?, dirs: r.u64()?, bytes: r.u64()? };
            let n = r.u32()? as usize;
            // Each key takes 32 bytes: a count beyond what is left is damage.
            if n > r.0.len() / 32 {
                return Err(DecodeError::Truncated);
            }
            let subs = (0..n).map(|_| r.key()).collect::<Result<Vec<_>, _>>()?;
            entries.insert(key, Entry { early, tree, totals, subs });
        }
        if !r.0.is_empty() {
            return Err(DecodeError::Truncated);
        }
        Ok((settings, snapshot, DirCache::from_entries(entries)))
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, rest) = self.0.split_first_chunk::<N>().ok_or(DecodeError::Truncated)?;
        self.0 = rest;
        Ok(*head)
    }
    fn key(&mut self) -> Result<Key, DecodeError> {
        self.take::<32>()
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.take::<4>().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        self.take::<8>().map(u64::from_le_bytes)
    }
}

/// The fingerprint of the options that change what a walk records: the
/// exclude patterns, the marker names and `--one-file-system`.
pub(crate) fn settings_key(options: &FileOptions) -> Key {
    let mut h = blake3::Hasher::new();
    h.update(b"cairn dircache settings v1\0");
    h.update(&options.excludes.fingerprint());
    for marker in &options.exclude_if_present {
        h.update(marker.as_bytes()).update(b"\0");
    }
    h.update(&[u8::from(options.one_file_system)]);
    *h.finalize().as_bytes()
}

/// Where the cache of one set of source paths on one host lives.
pub(crate) fn cache_path(cache_dir: &Path, hostname: &str, paths: &[String]) -> PathBuf {
    let mut paths = paths.to_vec();
    paths.sort();
    let key = blake3::hash(format!("{hostname}\0{}", paths.join("\0")).as_bytes());
    cache_dir.join("dirs").join(&key.to_hex()[..32])
}

/// The cache at `path`, if it decodes and was written with `settings`
/// for the snapshot `parent`.
pub(crate) fn load(path: &Path, settings: &Key, parent: &SnapshotId) -> Option<DirCache> {
    let bytes = std::fs::read(path).ok()?;
    match DirCache::decode(&bytes) {
        Ok((s, snapshot, cache)) if s == *settings && snapshot == *parent => {
            tracing::debug!("directory cache {}: {} directories", path.display(), cache.len());
            Some(cache)
        }
        Ok(_) => None,
        Err(e) => {
            tracing::warn!("ignoring the directory cache {}: {e}", path.display());
            None
        }
    }
}

/// Writes the cache for `snapshot` (failures only cost a full walk next time).
pub(crate) fn save(path: &Path, cache: &DirCache, settings: &Key, snapshot: &SnapshotId) {
    let bytes = cache.encode(settings, snapshot);
    let tmp = path.with_extension("tmp");
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&tmp, &bytes))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        tracing::warn!("cannot write the directory cache {}: {e}", path.display());
    }
}

/// Computes a directory's early key from its listing.
pub(crate) struct EarlyKey(blake3::Hasher);

impl EarlyKey {
    /// Starts with the directory's own metadata.
    pub(crate) fn new(own: &Metadata, owners: &Owners) -> EarlyKey {
        let mut h = blake3::Hasher::new();
        h.update(b"cairn dircache v1\0");
        hash_meta(&mut h, own, owners);
        EarlyKey(h)
    }

    /// Adds an entry: a subdirectory by name, anything else by name and
    /// metadata.
    pub(crate) fn entry(&mut self, name: &[u8], meta: &Metadata, owners: &Owners) {
        let h = &mut self.0;
        h.update(&(name.len() as u64).to_le_bytes()).update(name);
        if meta.is_dir() {
            h.update(b"d");
        } else {
            h.update(b"e");
            hash_meta(h, meta, owners);
        }
    }

    pub(crate) fn finish(self) -> Key {
        *self.0.finalize().as_bytes()
    }
}

/// What a subdirectory adds to its parent's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubKey {
    /// Walked (or reused) with this key.
    Dir(Key),
    /// Skipped for an `--exclude-if-present` marker.
    Marked,
}

/// A directory's key from its early key and its subdirectories' keys, in
/// name order.
pub(crate) fn full_key<'n>(early: &Key, subs: impl IntoIterator<Item = (&'n [u8], SubKey)>) -> Key {
    let mut h = blake3::Hasher::new();
    h.update(early);
    for (name, sub) in subs {
        h.update(&(name.len() as u64).to_le_bytes()).update(name);
        match sub {
            SubKey::Dir(key) => h.update(b"d").update(&key),
            SubKey::Marked => h.update(b"m"),
        };
    }
    *h.finalize().as_bytes()
}

/// Every `lstat` field a tree node records (and some it does not), with
/// the owner names.
fn hash_meta(h: &mut blake3::Hasher, meta: &Metadata, owners: &Owners) {
    for n in
        [meta.dev(), meta.ino(), u64::from(meta.mode()), meta.nlink(), u64::from(meta.uid()), u64::from(meta.gid())]
    {
        h.update(&n.to_le_bytes());
    }
    for n in [meta.rdev(), meta.size()] {
        h.update(&n.to_le_bytes());
    }
    for t in [meta.mtime(), meta.mtime_nsec(), meta.atime(), meta.atime_nsec(), meta.ctime(), meta.ctime_nsec()] {
        h.update(&t.to_le_bytes());
    }
    let (user, group) = (owners.user(meta.uid()), owners.group(meta.gid()));
    h.update(&(user.len() as u64).to_le_bytes()).update(user.as_bytes());
    h.update(&(group.len() as u64).to_le_bytes()).update(group.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> Key {
        [n; 32]
    }

    fn entry(n: u8, subs: &[u8]) -> (Key, Entry) {
        let e = Entry {
            early: [n ^ 0x80; 32],
            tree: TreeId(Id([n; 32])),
            totals: Totals { files: n as u64, dirs: 1, bytes: 10 * n as u64 },
            subs: subs.iter().map(|&s| key(s)).collect(),
        };
        (key(n), e)
    }

    fn keys(cache: &DirCache) -> Vec<u8> {
        let mut k: Vec<u8> = cache.entries.keys().map(|k| k[0]).collect();
        k.sort();
        k
    }

    #[test]
    fn successor_keeps_what_the_new_snapshot_holds() {
        // Old snapshot: 1 ─┬─ 2 ─ 3
        //                  └─ 4
        // plus 9, a directory of some older snapshot.
        let old =
            DirCache::from_entries([entry(1, &[2, 4]), entry(2, &[3]), entry(3, &[]), entry(4, &[]), entry(9, &[])]);
        // (new entries with their subdirectories, reused keys, expected keys)
        type Case<'a> = (&'a [(u8, &'a [u8])], &'a [u8], &'a [u8]);
        let cases: &[Case] = &[
            // Unchanged rerun: the root was reused, everything below it is kept.
            (&[], &[1], &[1, 2, 3, 4]),
            // 4 changed (now 5): the root was walked (now 6), 2 reused.
            (&[(6, &[2, 5]), (5, &[])], &[2], &[2, 3, 5, 6]),
            // A walked directory whose child was reused inside a probe.
            (&[(7, &[4])], &[], &[4, 7]),
            // Nothing reused, nothing kept from old.
            (&[(8, &[])], &[], &[8]),
            // A reused key the old cache lacks is ignored.
            (&[], &[42], &[]),
        ];
        for (new, reused, expected) in cases {
            let new: Vec<(Key, Entry)> = new.iter().map(|(n, subs)| entry(*n, subs)).collect();
            let reused: Vec<Key> = reused.iter().map(|&n| key(n)).collect();
            let next = DirCache::successor(Some(&old), new, &reused);
            assert_eq!(keys(&next), *expected, "reused {reused:?}");
        }
        let first = DirCache::successor(None, vec![entry(1, &[2])], &[key(2)]);
        assert_eq!(keys(&first), [1]);
    }

    #[test]
    fn files_round_trip_and_damage_is_detected() {
        let cache = DirCache::from_entries([entry(1, &[2, 4]), entry(2, &[]), entry(4, &[])]);
        let snapshot = SnapshotId(Id([7; 32]));
        let bytes = cache.encode(&key(5), &snapshot);
        let (settings, snap, back) = DirCache::decode(&bytes).unwrap();
        assert_eq!((settings, snap), (key(5), snapshot));
        assert_eq!(back, cache);
        assert!(back.has_early(&[1 ^ 0x80; 32]) && !back.has_early(&key(1)));
        assert_eq!(back.get(&key(2)).unwrap().tree, TreeId(Id([2; 32])));
        let mut flipped = bytes.clone();
        flipped[50] ^= 1;
        assert_eq!(DirCache::decode(&flipped), Err(DecodeError::Checksum));
        assert_eq!(DirCache::decode(&bytes[..bytes.len() - 1]), Err(DecodeError::Checksum));
        assert_eq!(DirCache::decode(b"CRNDIRC0 and more bytes than a checksum needs......"), Err(DecodeError::Magic));
        // A body that checksums but lies about its counts.
        let mut body = bytes[..bytes.len() - 32].to_vec();
        body.truncate(body.len() - 1);
        let sum = blake3::hash(&body);
        body.extend_from_slice(sum.as_bytes());
        assert_eq!(DirCache::decode(&body), Err(DecodeError::Truncated));
    }

    #[test]
    fn keys_change_with_every_part() {
        let early = key(1);
        let base = full_key(&early, [(&b"a"[..], SubKey::Dir(key(2)))]);
        assert_ne!(base, full_key(&key(3), [(&b"a"[..], SubKey::Dir(key(2)))]));
        assert_ne!(base, full_key(&early, [(&b"b"[..], SubKey::Dir(key(2)))]));
        assert_ne!(base, full_key(&early, [(&b"a"[..], SubKey::Dir(key(3)))]));
        assert_ne!(base, full_key(&early, [(&b"a"[..], SubKey::Marked)]));
        assert_ne!(base, full_key(&early, []));
        assert_eq!(base, full_key(&early, [(&b"a"[..], SubKey::Dir(key(2)))]));
    }

    #[test]
    fn early_keys_see_metadata_names_and_entries() {
        let dir = tempfile::tempdir().unwrap();
        let owners = Owners::default();
        std::fs::write(dir.path().join("f"), b"one").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let early = |names: &[&str]| {
            let own = std::fs::symlink_metadata(dir.path()).unwrap();
            let mut k = EarlyKey::new(&own, &owners);
            for name in names {
                let meta = std::fs::symlink_metadata(dir.path().join(name)).unwrap();
                k.entry(name.as_bytes(), &meta, &owners);
            }
            k.finish()
        };
        let before = early(&["f", "sub"]);
        assert_eq!(before, early(&["f", "sub"]));
        assert_ne!(before, early(&["f"]));
        // A subdirectory's own metadata is not part of its parent's early key.
        std::fs::write(dir.path().join("sub/x"), b"x").unwrap();
        assert_eq!(before, early(&["f", "sub"]));
        // A file's ctime is (same size, same mtime, new permissions).
        std::fs::set_permissions(dir.path().join("f"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        assert_ne!(before, early(&["f", "sub"]));
    }
}
