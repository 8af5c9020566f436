//! Whole tree packs, for repositories behind a network: a snapshot's trees
//! are read one small blob at a time (a walk, a restore, a backup's parent),
//! and each ranged read costs a round trip. A pack of tree blobs is instead
//! read once, whole, kept in the local cache ([`Cache`], named by its hash
//! like every pack, so it is verified when read back) and in memory while
//! the repository is open. Every other tree in it then costs no request.
//!
//! Tree packs hold tree blobs only (a writer keeps one pack per blob type
//! open), are small next to data packs, and are immutable: a cached copy is
//! the pack or is thrown away.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::OnceCell;

use crate::error::Result;
use crate::format::id::Id;
use crate::storage::backend::{Backend, FileKind};
use crate::storage::cache::Cache;

/// Tree packs kept in memory at most, in bytes, before the oldest are
/// dropped (they stay in the cache on disk).
const MEMORY: usize = 64 << 20;

/// The tree packs of one open repository.
#[derive(Default)]
pub(crate) struct TreePacks {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Each pack once read (or being read: callers wait for the one read).
    packs: HashMap<Id, Arc<OnceCell<Bytes>>>,
    /// Packs in the order they were first asked for, for dropping.
    order: VecDeque<(Id, usize)>,
    /// Bytes of the packs in `order`.
    bytes: usize,
}

impl TreePacks {
    /// Whether tree packs are read whole from `backend`: only from a
    /// network store (a local directory is read in place, memory has no
    /// latency), and only with a cache to keep them in.
    pub(crate) fn wanted(backend: &Backend, cache: Option<&Cache>) -> bool {
        use crate::storage::backend::BackendKind::*;
        cache.is_some() && !matches!(backend.kind(), Local | Memory) && backend.local_dir().is_none()
    }

    /// The bytes of pack `id` (a tree pack): from memory, else from the
    /// cache on disk, else read whole from `backend` and cached.
    pub(crate) async fn get(&self, backend: &Backend, cache: Option<&Cache>, id: &Id) -> Result<Bytes> {
        let cell = {
            let mut state = self.state.lock().expect("tree packs poisoned");
            state.packs.entry(*id).or_default().clone()
        };
        let bytes = cell
            .get_or_try_init(|| async {
                let bytes = match cache.and_then(|c| c.get(FileKind::Pack, id)) {
                    Some(bytes) => bytes,
                    None => {
                        let bytes = backend.read(FileKind::Pack, id).await?;
                        if Id::of_object(&bytes) != *id {
                            // Not cached: the caller's ranged read of the
                            // blob reports the damage with its context.
                            return Err(crate::error::Error::corrupt(
                                FileKind::Pack.relative_path(id),
                                crate::format::envelope::FormatError::Mismatch(
                                    "its content does not hash to its name".into(),
                                ),
                            ));
                        }
                        if let Some(c) = cache {
                            c.put(FileKind::Pack, id, &bytes);
                        }
                        bytes.to_vec()
                    }
                };
                Ok::<_, crate::error::Error>(Bytes::from(bytes))
            })
            .await?
            .clone();
        self.remember(*id, bytes.len());
        Ok(bytes)
    }

    /// Notes a pack read, dropping the oldest from memory past [`MEMORY`].
    fn remember(&self, id: Id, len: usize) {
        let mut state = self.state.lock().expect("tree packs poisoned");
        if state.order.iter().any(|(o, _)| *o == id) {
            return;
        }
        state.order.push_back((id, len));
        state.bytes += len;
        while state.bytes > MEMORY && state.order.len() > 1 {
            let Some((old, old_len)) = state.order.pop_front() else { break };
            state.bytes -= old_len;
            state.packs.remove(&old);
        }
    }

    /// Packs in memory now (for tests).
    #[cfg(test)]
    fn in_memory(&self) -> usize {
        self.state.lock().expect("tree packs poisoned").order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::backend::BackendOptions;

    #[tokio::test]
    async fn a_pack_is_read_once_then_from_the_cache_and_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        // (`get` works with any store; `wanted` decides who calls it.)
        let backend = Backend::memory();
        let cache = Cache::open(&dir.path().join("cache"), &Id::of_object(b"repo")).unwrap();
        let pack = b"tree pack bytes".to_vec();
        let id = Id::of_object(&pack);
        backend.write_new(FileKind::Pack, &id, vec![pack.clone().into()]).await.unwrap();

        let packs = TreePacks::default();
        assert_eq!(packs.get(&backend, Some(&cache), &id).await.unwrap(), pack);
        assert_eq!(cache.get(FileKind::Pack, &id), Some(pack.clone()), "kept in the cache");
        // Gone from the store: memory and then the cache still answer.
        backend.delete(FileKind::Pack, &id).await.unwrap();
        assert_eq!(packs.get(&backend, Some(&cache), &id).await.unwrap(), pack);
        assert_eq!(TreePacks::default().get(&backend, Some(&cache), &id).await.unwrap(), pack);
        assert_eq!(packs.in_memory(), 1);

        // A pack whose bytes do not hash to its name is neither returned nor cached.
        let bad = Id::of_object(b"another pack");
        backend.write_new(FileKind::Pack, &bad, vec![b"not that pack".to_vec().into()]).await.unwrap();
        assert!(packs.get(&backend, Some(&cache), &bad).await.unwrap_err().is_corruption());
        assert_eq!(cache.get(FileKind::Pack, &bad), None);
    }

    #[test]
    fn only_network_stores_with_a_cache_read_whole_packs() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), &Id::of_object(b"repo")).unwrap();
        std::fs::create_dir_all(dir.path().join("r")).unwrap();
        let local = Backend::open(dir.path().join("r").to_str().unwrap(), &BackendOptions::default()).unwrap();
        assert!(!TreePacks::wanted(&local, Some(&cache)));
        assert!(!TreePacks::wanted(&Backend::memory(), Some(&cache)));
    }
}
