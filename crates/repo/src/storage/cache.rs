//! A local cache of metadata objects (keys, index files, snapshots).
//!
//! Objects are immutable and named by the BLAKE3 hash of their bytes, so the
//! cache needs no invalidation: an entry is either the object or is ignored
//! (and deleted) when its bytes do not hash to its name. The cache lives in
//! `<base>/<repository id>/<kind>/<id>`; entries whose objects are no longer
//! listed in the repository are removed after each listing.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::format::id::Id;
use crate::storage::backend::FileKind;

/// A per-repository cache directory.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// The default base directory: `$XDG_CACHE_HOME/cairn` or `~/.cache/cairn`.
    pub fn default_base() -> Option<PathBuf> {
        dirs::cache_dir().map(|d| d.join("cairn"))
    }

    /// Opens (creating) the cache of repository `id` under `base`.
    pub fn open(base: &Path, id: &Id) -> std::io::Result<Cache> {
        let dir = base.join(id.to_hex());
        std::fs::create_dir_all(&dir)?;
        let tag = base.join("CACHEDIR.TAG");
        if !tag.exists() {
            // Tells backup tools (cairn included) to skip the cache.
            let _ = std::fs::write(tag, "Signature: 8a477f597d28d172789f06886806bc55\n# cairn metadata cache\n");
        }
        Ok(Cache { dir })
    }

    /// The cache's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, kind: FileKind, id: &Id) -> PathBuf {
        self.dir.join(kind.dir()).join(id.to_hex())
    }

    /// The cached bytes of an object, if present and intact.
    pub fn get(&self, kind: FileKind, id: &Id) -> Option<Vec<u8>> {
        let path = self.path(kind, id);
        let bytes = std::fs::read(&path).ok()?;
        if Id::of_object(&bytes) == *id {
            Some(bytes)
        } else {
            tracing::warn!("removing damaged cache entry {}", path.display());
            let _ = std::fs::remove_file(&path);
            None
        }
    }

    /// Stores an object. Failures only cost a later download, so they are
    /// logged, not returned.
    pub fn put(&self, kind: FileKind, id: &Id, bytes: &[u8]) {
        let path = self.path(kind, id);
        let result = (|| {
            std::fs::create_dir_all(path.parent().expect("cache paths have a parent"))?;
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, &path)
        })();
        if let Err(e) = result {
            tracing::debug!("cannot cache {}: {e}", path.display());
        }
    }

    /// Remembers the `config` object of the repository at `location`, so a
    /// client with write-only credentials can open it without reading it
    /// (the config is sealed: a tampered copy does not open).
    pub fn remember_config(base: &Path, location: &str, config: &[u8]) {
        let dir = base.join("locations");
        let path = dir.join(blake3::hash(location.as_bytes()).to_hex().as_str());
        let tmp = path.with_extension("tmp");
        let result = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&tmp, config))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = result {
            tracing::debug!("cannot remember the config of {location}: {e}");
        }
    }

    /// The remembered `config` of the repository at `location`.
    pub fn remembered_config(base: &Path, location: &str) -> Option<Vec<u8>> {
        std::fs::read(base.join("locations").join(blake3::hash(location.as_bytes()).to_hex().as_str())).ok()
    }

    /// The key file that opened the repository last time, if recorded.
    pub fn key_hint(&self) -> Option<Id> {
        std::fs::read_to_string(self.dir.join("last-key")).ok()?.trim().parse().ok()
    }

    /// Records the key file that opened the repository.
    pub fn set_key_hint(&self, id: &Id) {
        if self.key_hint().as_ref() != Some(id) {
            let _ = std::fs::write(self.dir.join("last-key"), id.to_hex());
        }
    }

    /// Removes entries of `kind` that are not in `live`.
    pub fn retain(&self, kind: FileKind, live: &HashSet<Id>) {
        let Ok(entries) = std::fs::read_dir(self.dir.join(kind.dir())) else { return };
        for entry in entries.flatten() {
            let keep =
                entry.file_name().to_str().and_then(|n| n.parse::<Id>().ok()).is_some_and(|id| live.contains(&id));
            if !keep {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_verifies_and_retains() {
        let base = tempfile::tempdir().unwrap();
        let cache = Cache::open(base.path(), &Id([1; 32])).unwrap();
        let id = Id::of_object(b"index bytes");
        assert!(cache.get(FileKind::Index, &id).is_none());
        cache.put(FileKind::Index, &id, b"index bytes");
        assert_eq!(cache.get(FileKind::Index, &id).unwrap(), b"index bytes");
        std::fs::write(cache.path(FileKind::Index, &id), b"tampered").unwrap();
        assert!(cache.get(FileKind::Index, &id).is_none());
        cache.put(FileKind::Index, &id, b"index bytes");
        cache.retain(FileKind::Index, &HashSet::new());
        assert!(cache.get(FileKind::Index, &id).is_none());
        assert_eq!(cache.key_hint(), None);
        cache.set_key_hint(&id);
        assert_eq!(cache.key_hint(), Some(id));
    }
}
