//! Reading a file of a snapshot at any offset: the extents' offsets are
//! searched, blobs come through a cache bounded in bytes, and the blobs
//! after a read are fetched ahead of time, in parallel, so a sequential
//! `cp` keeps several blob reads in flight.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use tokio::runtime::Handle;

use crate::error::{Error, Result};
use crate::format::blob::BlobType;
use crate::format::id::Id;
use crate::format::index::Index;
use crate::format::tree::{Extent, Node};
use crate::repository::Repository;

/// A file's extents with where each starts in the file.
#[derive(Debug)]
pub struct FileLayout {
    extents: Vec<Extent>,
    starts: Vec<u64>,
    size: u64,
}

impl FileLayout {
    /// The layout of a file node's content.
    pub fn of(node: &Node) -> FileLayout {
        let mut starts = Vec::with_capacity(node.content.len());
        let mut at = 0u64;
        for extent in &node.content {
            starts.push(at);
            at = at.saturating_add(extent_length(extent));
        }
        FileLayout { extents: node.content.clone(), starts, size: at }
    }

    /// The content's length (the sum of the extents).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The extents that cover `offset..offset + len`, each with the range
    /// of it to copy: `(extent number, start in the extent, bytes)`.
    fn pieces(&self, offset: u64, len: u64) -> Vec<(usize, u64, u64)> {
        let end = offset.saturating_add(len).min(self.size);
        let mut pieces = Vec::new();
        if offset >= end {
            return pieces;
        }
        // The last extent starting at or before `offset`.
        let mut i = self.starts.partition_point(|&s| s <= offset).saturating_sub(1);
        let mut at = offset;
        while at < end && i < self.extents.len() {
            let start = self.starts[i];
            let length = extent_length(&self.extents[i]);
            let within = at - start;
            let take = (length - within).min(end - at);
            if take > 0 {
                pieces.push((i, within, take));
            }
            at += take;
            i += 1;
        }
        pieces
    }
}

fn extent_length(extent: &Extent) -> u64 {
    match extent {
        Extent::Blob { length, .. } => u64::from(*length),
        Extent::Hole { length } => *length,
    }
}

/// Decrypted data blobs, the least recently used dropped past a budget in
/// bytes; and the blobs being read, so two readers of one blob wait for one
/// read rather than both downloading it.
pub struct BlobCache {
    state: Mutex<CacheState>,
    ready: Condvar,
    budget: usize,
}

#[derive(Default)]
struct CacheState {
    blobs: HashMap<Id, (Arc<Vec<u8>>, u64)>,
    bytes: usize,
    tick: u64,
    loading: HashSet<Id>,
}

impl CacheState {
    fn take(&mut self, id: &Id) -> Option<Arc<Vec<u8>>> {
        self.tick += 1;
        let tick = self.tick;
        self.blobs.get_mut(id).map(|(blob, used)| {
            *used = tick;
            blob.clone()
        })
    }

    fn insert(&mut self, id: Id, blob: Arc<Vec<u8>>, budget: usize) {
        self.tick += 1;
        self.bytes += blob.len();
        if let Some((old, _)) = self.blobs.insert(id, (blob, self.tick)) {
            self.bytes -= old.len();
        }
        while self.bytes > budget && self.blobs.len() > 1 {
            // A few hundred blobs at most: a scan is cheaper than keeping order.
            let Some(oldest) = self.blobs.iter().min_by_key(|(_, (_, used))| *used).map(|(id, _)| *id) else { break };
            if let Some((old, _)) = self.blobs.remove(&oldest) {
                self.bytes -= old.len();
            }
        }
    }
}

impl BlobCache {
    /// A cache of at most about `budget` bytes.
    pub fn new(budget: usize) -> BlobCache {
        BlobCache { state: Mutex::new(CacheState::default()), ready: Condvar::new(), budget }
    }

    fn lock(&self) -> MutexGuard<'_, CacheState> {
        // A panic elsewhere cannot leave the map inconsistent: use it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Blob `id`, from the cache or read now (blocking).
    fn get(&self, id: &Id, read: impl FnOnce() -> Result<Vec<u8>>) -> Result<Arc<Vec<u8>>> {
        let mut state = self.lock();
        loop {
            if let Some(blob) = state.take(id) {
                return Ok(blob);
            }
            if !state.loading.contains(id) {
                break;
            }
            state = self.ready.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.loading.insert(*id);
        drop(state);
        let result = read().map(Arc::new);
        let mut state = self.lock();
        state.loading.remove(id);
        if let Ok(blob) = &result {
            state.insert(*id, blob.clone(), self.budget);
        }
        drop(state);
        self.ready.notify_all();
        result
    }

    /// Starts reading blob `id` in the background unless it is cached or
    /// on its way. A failed read is dropped: the reader that needs the blob
    /// reads it again and reports the error.
    fn prefetch(self: &Arc<Self>, id: Id, repo: &Repository, index: &Arc<Index>, handle: &Handle) {
        {
            let mut state = self.lock();
            if state.blobs.contains_key(&id) || !state.loading.insert(id) {
                return;
            }
        }
        let (cache, repo, index) = (self.clone(), repo.clone(), index.clone());
        handle.spawn(async move {
            let result = repo.read_blob(&index, &id).await;
            let mut state = cache.lock();
            state.loading.remove(&id);
            if let Ok(blob) = result {
                state.insert(id, Arc::new(blob), cache.budget);
            }
            drop(state);
            cache.ready.notify_all();
        });
    }
}

/// How many blobs past a read are fetched ahead.
const READ_AHEAD_BLOBS: usize = 8;

/// Reads `len` bytes at `offset` of a file (fewer at its end), hands
/// them to `with`, and starts fetching the blobs that follow. A read
/// within one blob (most are: the kernel asks for 128–256 KiB, blobs are
/// about a MiB) is handed over as a slice of the cached blob, not copied.
#[allow(clippy::too_many_arguments)]
pub fn read_with<R>(
    repo: &Repository,
    index: &Arc<Index>,
    handle: &Handle,
    cache: &Arc<BlobCache>,
    file: &FileLayout,
    offset: u64,
    len: u64,
    with: impl FnOnce(&[u8]) -> R,
) -> Result<R> {
    let pieces = file.pieces(offset, len);
    // Each piece: its blob (None for a hole) and the range of it to take.
    type Part = (Option<Arc<Vec<u8>>>, std::ops::Range<usize>);
    let mut parts: Vec<Part> = Vec::with_capacity(pieces.len());
    for &(i, within, take) in &pieces {
        match &file.extents[i] {
            Extent::Hole { .. } => parts.push((None, 0..take as usize)),
            Extent::Blob { id, offset, length } => {
                let blob = cache.get(id, || repo.read_blob_as_blocking(handle, index, id, BlobType::Data))?;
                let start = u64::from(*offset) + within;
                let range = usize::try_from(start)
                    .ok()
                    .map(|s| s..s + take as usize)
                    .filter(|r| r.end <= blob.len() && u64::from(*offset) + u64::from(*length) <= blob.len() as u64)
                    .ok_or_else(|| {
                        Error::corrupt(
                            format!("blob {id}"),
                            crate::format::envelope::FormatError::Mismatch(
                                "the snapshot refers past the end of the blob".into(),
                            ),
                        )
                    })?;
                parts.push((Some(blob), range));
            }
        }
    }
    if let Some(&(last, _, _)) = pieces.last() {
        let ahead = file.extents[last + 1..].iter().filter_map(|e| match e {
            Extent::Blob { id, .. } => Some(id.0),
            Extent::Hole { .. } => None,
        });
        for id in ahead.take(READ_AHEAD_BLOBS) {
            // Only data blobs: a crafted snapshot naming a tree here is
            // refused by the read above when it gets there.
            if index.get(&id).is_some_and(|(_, loc)| loc.blob_type == BlobType::Data) {
                cache.prefetch(id, repo, index, handle);
            }
        }
    }
    if let [(Some(blob), range)] = parts.as_slice() {
        return Ok(with(&blob[range.clone()]));
    }
    let mut out = Vec::with_capacity(parts.iter().map(|(_, r)| r.len()).sum());
    for (blob, range) in &parts {
        match blob {
            Some(blob) => out.extend_from_slice(&blob[range.clone()]),
            None => out.resize(out.len() + range.len(), 0),
        }
    }
    Ok(with(&out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::tree::NodeKind;

    fn layout(lengths: &[(bool, u64)]) -> FileLayout {
        let mut node = Node::new(b"f".to_vec(), NodeKind::File);
        node.content = lengths
            .iter()
            .enumerate()
            .map(|(i, &(blob, length))| {
                if blob {
                    Extent::Blob {
                        id: crate::format::id::DataId(Id::of_object(&[i as u8])),
                        offset: 0,
                        length: length as u32,
                    }
                } else {
                    Extent::Hole { length }
                }
            })
            .collect();
        FileLayout::of(&node)
    }

    #[test]
    fn pieces_cover_exactly_the_range() {
        let file = layout(&[(true, 10), (false, 5), (true, 10)]);
        assert_eq!(file.size(), 25);
        // (offset, len, pieces)
        type Piece = (usize, u64, u64);
        let table: &[(u64, u64, &[Piece])] = &[
            (0, 4, &[(0, 0, 4)]),
            (8, 4, &[(0, 8, 2), (1, 0, 2)]),
            (10, 5, &[(1, 0, 5)]),
            (9, 100, &[(0, 9, 1), (1, 0, 5), (2, 0, 10)]),
            (24, 10, &[(2, 9, 1)]),
            (25, 10, &[]),
            (1000, 10, &[]),
            (3, 0, &[]),
        ];
        for (offset, len, expected) in table {
            assert_eq!(file.pieces(*offset, *len), *expected, "{offset}+{len}");
        }
    }

    #[test]
    fn an_empty_file_has_no_pieces() {
        let file = layout(&[]);
        assert_eq!(file.size(), 0);
        assert!(file.pieces(0, 4096).is_empty());
    }

    #[test]
    fn the_cache_keeps_the_recently_used_within_its_budget() {
        let cache = BlobCache::new(250);
        let ids: Vec<Id> = (0..4u8).map(|i| Id::of_object(&[i])).collect();
        let mut reads = 0;
        for id in &ids[..2] {
            cache
                .get(id, || {
                    reads += 1;
                    Ok(vec![0; 100])
                })
                .unwrap();
        }
        // Touch the first, then add a third: the second goes.
        cache.get(&ids[0], || unreachable!("cached")).unwrap();
        cache.get(&ids[2], || Ok(vec![0; 100])).unwrap();
        let state = cache.lock();
        assert!(state.blobs.contains_key(&ids[0]) && state.blobs.contains_key(&ids[2]));
        assert!(!state.blobs.contains_key(&ids[1]));
        assert_eq!((state.bytes, reads), (200, 2));
        drop(state);
        // A failed read is not cached, and the next reader tries again.
        assert!(cache.get(&ids[3], || Err(Error::BlobNotFound(ids[3]))).is_err());
        assert_eq!(cache.get(&ids[3], || Ok(vec![1])).unwrap().as_slice(), [1]);
    }
}
