//! [`Writer`]: one writing session. It deduplicates blobs, seals them with the
//! session's data key, gathers them into packs, uploads packs in the
//! background, then publishes index files and finally a snapshot, in that
//! order (FORMAT.md, "Publishing").

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::error::{Error, Result};
use crate::format::blob::{self, BlobType, SealedBlob};
use crate::format::crypto::WriteSession;
use crate::format::envelope::{self, INDEX_MAGIC, SNAPSHOT_MAGIC};
use crate::format::id::{DataId, Id, PackId, SnapshotId, TreeId};
use crate::format::index::{Index, IndexFile, IndexedPack};
use crate::format::pack::PackBuilder;
use crate::format::snapshot::Snapshot;
use crate::repository::Repository;
use crate::storage::backend::FileKind;
use crate::writing::journal::Journal;
use crate::writing::profile::{Stage, StageClock, StageProfile};
use crate::writing::segments::SegmentPool;

/// Open packs per blob type. Each new blob goes to a random one of them.
/// One: every open pack costs a pack's worth of memory, and the order of
/// blobs inside a pack is hidden by the sealed header anyway.
const OPEN_PACKS: usize = 1;
/// Packs uploading at once, each held in memory until it is stored. Object
/// stores need two or more in flight to hide their latency; a local disk
/// keeps up with one (UPLOADS_LOCAL), which saves a pack's worth of memory
/// (measured on 2 GiB: same time, 98 instead of 108 MB peak). Their memory
/// is reused in segments (see `segments`).
const UPLOADS_IN_FLIGHT: usize = 2;
const UPLOADS_LOCAL: usize = 1;
/// An index file is written after this many packs, so an interrupted backup
/// leaves indexed packs that the next one reuses.
const PACKS_PER_INDEX_FILE: usize = 64;
/// Packs per index file when the whole index is rewritten.
const PACKS_PER_REPLACED_INDEX_FILE: usize = 2048;

/// What a session has written so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Blobs stored.
    pub blobs_added: u64,
    /// Blobs skipped because the repository or the session had them.
    pub blobs_deduplicated: u64,
    /// Plaintext bytes of the stored blobs.
    pub raw_bytes_added: u64,
    /// Bytes of the stored blobs after compression and sealing.
    pub stored_bytes_added: u64,
    /// Packs uploaded.
    pub packs_written: u64,
    /// Index files written.
    pub index_files_written: u64,
}

/// A writing session. Safe to share between tasks (`&self` methods).
pub struct Writer {
    repo: Repository,
    index: RwLock<Arc<Index>>,
    /// Count and seal, but upload and publish nothing.
    dry_run: bool,
    session: Arc<WriteSession>,
    state: Mutex<State>,
    uploads: Mutex<JoinSet<Result<IndexedPack>>>,
    upload_slots: Arc<Semaphore>,
    /// Data packs in existence (open or uploading).
    buffer_slots: Arc<Semaphore>,
    /// The packs' memory, reused.
    segments: Arc<SegmentPool>,
    /// When the session started, and the packs its snapshot depends on
    /// (those of the loaded index it reused blobs from, and its own): a
    /// session older than prune's minimum grace period checks at commit
    /// that they still exist (FORMAT.md §12.3).
    started: std::time::Instant,
    needed_packs: Mutex<HashSet<PackId>>,
    /// Where stored packs are noted until they are indexed (a snapshot
    /// session's; see `journal`).
    journal: Option<Arc<Journal>>,
    /// Where the session's time goes, stage by stage.
    clock: Arc<StageClock>,
}

#[derive(Default)]
struct State {
    added: HashSet<Id>,
    open: HashMap<BlobType, Vec<PackBuilder>>,
    uploaded: Vec<IndexedPack>,
    stats: WriterStats,
    /// The first failure. A session that failed never publishes anything
    /// again: blobs it counted as added may not have been stored.
    failed: Option<String>,
}

impl Writer {
    /// Starts a session that deduplicates against `index`.
    pub fn new(repo: &Repository, index: Arc<Index>) -> Result<Writer> {
        let uploads = match repo.backend().kind() {
            crate::storage::backend::BackendKind::Local => UPLOADS_LOCAL,
            _ => UPLOADS_IN_FLIGHT,
        };
        let session = WriteSession::new(&repo.keys().repository_public())
            .map_err(|e| Error::corrupt("config (repository public key)", e))?;
        Ok(Writer {
            repo: repo.clone(),
            index: RwLock::new(index),
            dry_run: false,
            session: Arc::new(session),
            state: Mutex::new(State::default()),
            uploads: Mutex::new(JoinSet::new()),
            upload_slots: Arc::new(Semaphore::new(uploads)),
            buffer_slots: Arc::new(Semaphore::new(OPEN_PACKS + uploads)),
            segments: Arc::new(SegmentPool::for_packs_of(repo.config().pack_size as usize)),
            started: std::time::Instant::now(),
            needed_packs: Mutex::new(HashSet::new()),
            journal: None,
            clock: Arc::new(StageClock::default()),
        })
    }

    /// A session that seals and counts like a real one but writes nothing:
    /// packs are dropped and [`commit`](Writer::commit) refuses.
    pub fn dry_run(repo: &Repository, index: Arc<Index>) -> Result<Writer> {
        let mut writer = Writer::new(repo, index)?;
        writer.dry_run = true;
        Ok(writer)
    }

    /// Notes every pack stored from now on in `journal`, so that a session
    /// that dies before indexing them leaves them to the next one.
    pub(crate) fn with_journal(mut self, journal: Arc<Journal>) -> Writer {
        self.journal = Some(journal);
        self
    }

    /// Replaces the index deduplicated against. A session may start with an
    /// empty index and receive the loaded one later, so a stream (stdin, a
    /// database dump) is consumed at once; blobs added before that are stored
    /// even if the repository had them (prune removes such duplicates).
    pub fn set_index(&self, index: Arc<Index>) {
        *self.index.write().expect("writer index poisoned") = index;
    }

    /// The repository written to.
    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    /// The index deduplicated against.
    pub fn index(&self) -> Arc<Index> {
        self.index.read().expect("writer index poisoned").clone()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("writer state poisoned")
    }

    fn check_failed(&self) -> Result<()> {
        match &self.state().failed {
            Some(reason) => Err(Error::WriteSessionFailed(reason.clone())),
            None => Ok(()),
        }
    }

    /// Records the first failure of the session and passes the result on.
    fn sticky<T>(&self, result: Result<T>) -> Result<T> {
        if let Err(e) = &result {
            let mut state = self.state();
            if state.failed.is_none() {
                state.failed = Some(e.to_string());
            }
        }
        result
    }

    /// Whether the repository or this session already has blob `id` (for
    /// deduplication: only entries of authenticated index files count).
    pub fn contains(&self, id: &Id) -> bool {
        self.reuse(id, true) || self.state().added.contains(id)
    }

    /// Whether blob `id` can be referenced as it is: listed by any index
    /// file, or added in this session. For content reused from a parent
    /// snapshot, which must not point at blobs the index has lost.
    pub fn has_blob(&self, id: &Id) -> bool {
        self.reuse(id, false) || self.state().added.contains(id)
    }

    /// Whether the loaded index lists `id` (from an authenticated file when
    /// `trusted_only`); if so, notes its pack as reused.
    fn reuse(&self, id: &Id, trusted_only: bool) -> bool {
        let index = self.index.read().expect("writer index poisoned");
        let Some((pack, location)) = index.get(id) else { return false };
        if trusted_only && !location.trusted {
            return false;
        }
        let mut reused = self.needed_packs.lock().expect("needed-pack set poisoned");
        if !reused.contains(&pack.id) {
            reused.insert(pack.id);
        }
        true
    }

    /// Compresses and seals a blob (CPU only; call from worker threads).
    /// Blobs are at most [`MAX_BLOB_SIZE`](crate::format::blob::MAX_BLOB_SIZE) bytes.
    pub fn seal(&self, blob_type: BlobType, id: Id, plaintext: &[u8]) -> Result<SealedBlob> {
        if plaintext.len() > blob::MAX_BLOB_SIZE {
            return Err(Error::InvalidArgument(format!(
                "a blob of {} bytes exceeds the limit of {} bytes",
                plaintext.len(),
                blob::MAX_BLOB_SIZE
            )));
        }
        Ok(blob::seal(self.session.key(), blob_type, id, plaintext, self.repo.config().compression.level))
    }

    /// [`seal`](Writer::seal) into `out`, reusing its buffer: a caller that
    /// seals many blobs keeps one `SealedBlob` per thread and passes it to
    /// [`add_sealed_ref`](Writer::add_sealed_ref).
    pub fn seal_into(&self, blob_type: BlobType, id: Id, plaintext: &[u8], out: &mut SealedBlob) -> Result<()> {
        if plaintext.len() > blob::MAX_BLOB_SIZE {
            return Err(Error::InvalidArgument(format!(
                "a blob of {} bytes exceeds the limit of {} bytes",
                plaintext.len(),
                blob::MAX_BLOB_SIZE
            )));
        }
        let level = self.repo.config().compression.level;
        let start = std::time::Instant::now();
        let compressing = blob::seal_into(self.session.key(), blob_type, id, plaintext, level, out);
        let sealing = start.elapsed();
        self.clock.add(Stage::Compress, compressing, plaintext.len() as u64);
        self.clock.add(Stage::Encrypt, sealing.saturating_sub(compressing), out.bytes.len() as u64);
        Ok(())
    }

    /// Adds a sealed blob. Returns false (and drops it) when it is a duplicate.
    pub async fn add_sealed(&self, sealed: SealedBlob) -> Result<bool> {
        self.add_sealed_ref(&sealed).await
    }

    /// Adds a copy of a sealed blob (the pack copies it into its buffer).
    /// Returns false when it is a duplicate.
    pub async fn add_sealed_ref(&self, sealed: &SealedBlob) -> Result<bool> {
        let start = std::time::Instant::now();
        let added = self.add_sealed_untimed(sealed).await;
        self.clock.since(Stage::Pack, start, sealed.bytes.len() as u64);
        added
    }

    async fn add_sealed_untimed(&self, sealed: &SealedBlob) -> Result<bool> {
        enum Step {
            Duplicate,
            Added(Option<PackBuilder>),
            NeedBuffer,
        }
        self.check_failed()?;
        let mut permit = None;
        loop {
            let step = {
                let mut guard = self.state();
                let state = &mut *guard;
                let known = state.added.contains(&sealed.id) || self.reuse(&sealed.id, true);
                let slots = state
                    .open
                    .entry(sealed.blob_type)
                    .or_insert_with(|| (0..OPEN_PACKS).map(|_| PackBuilder::default()).collect());
                let slot = &mut slots[rand::random_range(0..OPEN_PACKS)];
                if known {
                    state.stats.blobs_deduplicated += 1;
                    Step::Duplicate
                } else if slot.is_empty()
                    && sealed.blob_type == BlobType::Data
                    && permit.is_none()
                    && self.buffer_slots.available_permits() == 0
                {
                    // A new data pack needs a buffer; there are at most as
                    // many as open packs plus uploads, which bounds memory.
                    Step::NeedBuffer
                } else {
                    if slot.is_empty() && sealed.blob_type == BlobType::Data {
                        let guard = permit.take().or_else(|| self.buffer_slots.clone().try_acquire_owned().ok());
                        *slot = PackBuilder::with_guard(guard);
                    }
                    slot.add(sealed, || self.segments.take());
                    let full = (slot.len() >= self.repo.config().pack_size as usize).then(|| std::mem::take(slot));
                    state.added.insert(sealed.id);
                    state.stats.blobs_added += 1;
                    state.stats.raw_bytes_added += sealed.raw_length as u64;
                    state.stats.stored_bytes_added += sealed.bytes.len() as u64;
                    Step::Added(full)
                }
            };
            match step {
                Step::Duplicate => return Ok(false),
                Step::NeedBuffer => {
                    let p = self.buffer_slots.clone().acquire_owned().await.expect("buffer semaphore is never closed");
                    permit = Some(p);
                }
                Step::Added(full_pack) => {
                    if let Some(pack) = full_pack {
                        self.sticky(self.upload(pack).await)?;
                    }
                    return Ok(true);
                }
            }
        }
    }

    /// Hashes, deduplicates, seals and adds a blob; returns its id.
    pub async fn add_blob(&self, blob_type: BlobType, plaintext: &[u8]) -> Result<Id> {
        self.check_failed()?;
        let id = self.repo.content_id(plaintext);
        if self.contains(&id) {
            self.state().stats.blobs_deduplicated += 1;
            return Ok(id);
        }
        let sealed = self.seal(blob_type, id, plaintext)?;
        self.add_sealed(sealed).await?;
        Ok(id)
    }

    /// Stores a tree blob; returns its id.
    pub async fn add_tree(&self, tree: &crate::format::tree::Tree) -> Result<TreeId> {
        self.add_blob(BlobType::Tree, &tree.encode()).await.map(TreeId)
    }

    /// Stores a data blob; returns its id.
    pub async fn add_data(&self, plaintext: &[u8]) -> Result<DataId> {
        self.add_blob(BlobType::Data, plaintext).await.map(DataId)
    }

    async fn upload(&self, pack: PackBuilder) -> Result<()> {
        let permit = self.upload_slots.clone().acquire_owned().await.expect("upload semaphore is never closed");
        let mut finished = pack.finish(&self.session, |segment| self.segments.wrap(segment));
        let buffer_guard = finished.guard.take();
        if self.dry_run {
            drop(permit);
            drop(buffer_guard);
            self.state().stats.packs_written += 1;
            return Ok(());
        }
        let backend = self.repo.backend().clone();
        let indexed = IndexedPack {
            id: finished.id,
            size: finished.size,
            session_public: finished.header.session_public,
            blobs: finished.header.entries,
        };
        let parts: Vec<Bytes> = finished.parts;
        let clock = self.clock.clone();
        // Noted before the upload starts: a process killed the moment the
        // pack lands must not leave it unnoted (recovery skips a pack that
        // never arrived).
        if let Some(journal) = &self.journal {
            journal.record(&indexed.id);
        }
        // A tree pack is kept in the local cache too (network stores): the
        // next backup reads its parent's trees from there.
        let tree_pack = indexed.blobs.first().is_some_and(|b| b.blob_type == BlobType::Tree);
        let keep = (tree_pack && self.repo.reads_tree_packs_whole()).then(|| (self.repo.clone(), parts.clone()));
        self.uploads.lock().expect("upload set poisoned").spawn(async move {
            let start = std::time::Instant::now();
            let written = backend.write_new(FileKind::Pack, &indexed.id, parts).await;
            clock.since(Stage::Write, start, indexed.size);
            drop(permit);
            drop(buffer_guard);
            written?;
            if let Some((repo, parts)) = keep {
                repo.keep_tree_pack(&indexed.id, &parts);
            }
            Ok(indexed)
        });
        self.collect_finished_uploads()?;
        if self.state().uploaded.len() >= PACKS_PER_INDEX_FILE {
            self.write_index().await?;
        }
        Ok(())
    }

    fn collect_finished_uploads(&self) -> Result<()> {
        let mut uploads = self.uploads.lock().expect("upload set poisoned");
        while let Some(done) = uploads.try_join_next() {
            let pack = done.map_err(|e| Error::WriteSessionFailed(format!("a pack upload task failed: {e}")))??;
            let mut state = self.state();
            state.stats.packs_written += 1;
            state.uploaded.push(pack);
        }
        Ok(())
    }

    async fn write_index(&self) -> Result<Option<Id>> {
        let packs = std::mem::take(&mut self.state().uploaded);
        if packs.is_empty() {
            return Ok(None);
        }
        // The snapshot depends on these as much as on reused ones: a prune
        // may mark a pack nothing indexed for longer than its grace period.
        self.needed_packs.lock().expect("needed-pack set poisoned").extend(packs.iter().map(|p| p.id));
        let file = IndexFile { supersedes: Vec::new(), packs, authenticated: false };
        match self.write_index_file(&file).await {
            Ok(id) => Ok(Some(id)),
            Err(e) => {
                // Keep the packs: they are durable and still need an index entry.
                self.state().uploaded.extend(file.packs);
                Err(e)
            }
        }
    }

    /// Seals and stores one index file (authenticated when a full key
    /// writes it).
    async fn write_index_file(&self, file: &IndexFile) -> Result<Id> {
        self.write_index_payload(file.encode(), true).await
    }

    /// Seals and stores an index-file body with its authenticator (32 zero
    /// bytes when `authenticate` is false or the key is put-only).
    async fn write_index_payload(&self, mut payload: Vec<u8>, authenticate: bool) -> Result<Id> {
        let authenticator =
            if authenticate { self.repo.keys().index_authenticator(&payload) } else { None }.unwrap_or([0; 32]);
        payload.extend_from_slice(&authenticator);
        let id = self.store_sealed(FileKind::Index, &INDEX_MAGIC, &payload).await?;
        self.state().stats.index_files_written += 1;
        Ok(id)
    }

    /// Seals `payload` as an object of `kind` and stores it under its id.
    async fn store_sealed(&self, kind: FileKind, magic: &[u8; 8], payload: &[u8]) -> Result<Id> {
        let level = self.repo.config().compression.level;
        let bytes = envelope::seal_object(magic, &self.session.public(), self.session.key(), payload, level);
        let id = Id::of_object(&bytes);
        self.repo.backend().write_new(kind, &id, vec![bytes.into()]).await?;
        Ok(id)
    }

    /// Lists `packs` in index files without an authenticator: readers use
    /// them, writers do not deduplicate against them. Prune keeps packs
    /// that only put-only sessions (or rescues) indexed at that trust level.
    pub(crate) async fn write_untrusted_index(&self, packs: Vec<IndexedPack>) -> Result<Vec<Id>> {
        let mut written = Vec::new();
        let mut packs = packs.into_iter().peekable();
        while packs.peek().is_some() {
            let chunk: Vec<IndexedPack> = packs.by_ref().take(PACKS_PER_REPLACED_INDEX_FILE).collect();
            let file = IndexFile { supersedes: Vec::new(), packs: chunk, authenticated: false };
            written.push(self.write_index_payload(file.encode(), false).await?);
        }
        Ok(written)
    }

    /// Stores a deletion record (full keys only: an unauthenticated record
    /// is never acted on).
    pub(crate) async fn write_trash_record(&self, record: &crate::maintenance::trash::TrashRecord) -> Result<Id> {
        let mut payload = record.encode();
        let authenticator =
            self.repo.keys().index_authenticator(&payload).ok_or(Error::PutOnlyKey { action: "prune" })?;
        payload.extend_from_slice(&authenticator);
        self.store_sealed(FileKind::Trash, &crate::format::envelope::TRASH_MAGIC, &payload).await
    }

    /// Publishes `packs` in new index files that supersede the index files
    /// `supersedes` (used by `repair index`, later by prune). The
    /// superseding list goes into the last file written, so the old files
    /// are set aside only once every new one exists. Needs a full key: a
    /// put-only key's index files cannot supersede anything.
    pub async fn replace_index(&self, packs: Vec<IndexedPack>, supersedes: Vec<Id>) -> Result<Vec<Id>> {
        if self.repo.keys().index_authenticator(b"").is_none() {
            return Err(Error::PutOnlyKey { action: "rewrite the index" });
        }
        let mut chunks: Vec<Vec<IndexedPack>> = Vec::new();
        let mut packs = packs.into_iter().peekable();
        while packs.peek().is_some() {
            chunks.push(packs.by_ref().take(PACKS_PER_REPLACED_INDEX_FILE).collect());
        }
        if chunks.is_empty() {
            chunks.push(Vec::new());
        }
        let last = chunks.len() - 1;
        let mut written = Vec::new();
        for (i, chunk) in chunks.into_iter().enumerate() {
            let file = IndexFile {
                supersedes: if i == last { supersedes.clone() } else { Vec::new() },
                packs: chunk,
                authenticated: true,
            };
            written.push(self.write_index_file(&file).await?);
        }
        Ok(written)
    }

    /// Uploads every open pack, waits for all uploads, and writes an index
    /// file for them. After `flush`, every blob added so far is durable and
    /// indexed.
    pub async fn flush(&self) -> Result<()> {
        self.check_failed()?;
        let result = self.flush_inner().await;
        self.sticky(result)
    }

    async fn flush_inner(&self) -> Result<()> {
        let open: Vec<PackBuilder> = {
            let mut state = self.state();
            state
                .open
                .values_mut()
                .flat_map(|slots| slots.iter_mut().map(std::mem::take))
                .filter(|p| !p.is_empty())
                .collect()
        };
        for pack in open {
            self.upload(pack).await?;
        }
        loop {
            let next = {
                let mut uploads = self.uploads.lock().expect("upload set poisoned");
                if uploads.is_empty() {
                    break;
                }
                // Wait outside the lock: take the set, join one, put it back.
                std::mem::take(&mut *uploads)
            };
            let mut set = next;
            while let Some(done) = set.join_next().await {
                let pack = done.map_err(|e| Error::WriteSessionFailed(format!("a pack upload task failed: {e}")))??;
                let mut state = self.state();
                state.stats.packs_written += 1;
                state.uploaded.push(pack);
            }
        }
        self.write_index().await?;
        Ok(())
    }

    /// Flushes, then publishes `snapshot`: the snapshot is written only after
    /// every pack and index file it depends on. A session older than
    /// prune's minimum grace period first checks that the packs it reused
    /// still exist (a prune may have deleted them meanwhile).
    pub async fn commit(&self, snapshot: &Snapshot) -> Result<SnapshotId> {
        if self.dry_run {
            return Err(Error::InvalidArgument("a dry-run session cannot publish a snapshot".into()));
        }
        self.flush().await?;
        if self.started.elapsed() >= self.repo.minimum_grace() {
            self.check_needed_packs().await?;
        }
        let json = serde_json::to_vec(snapshot).expect("snapshots serialize");
        let id = self.store_sealed(FileKind::Snapshot, &SNAPSHOT_MAGIC, &json).await?;
        Ok(SnapshotId(id))
    }

    async fn check_needed_packs(&self) -> Result<()> {
        let reused: Vec<PackId> = self.needed_packs.lock().expect("needed-pack set poisoned").iter().copied().collect();
        if reused.is_empty() {
            return Ok(());
        }
        let present: HashSet<Id> = match self.repo.backend().list(FileKind::Pack).await {
            Ok(listed) => listed.into_iter().map(|(id, _)| id).collect(),
            // Write-only credentials cannot list: such a repository is
            // pruned by another host, whose grace period has to cover this.
            Err(Error::AccessDenied { .. }) | Err(Error::WriteOnly { .. }) => {
                tracing::warn!("cannot list data/ to check for pruned packs: the credentials are write-only");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let gone: Vec<&PackId> = reused.iter().filter(|id| !present.contains(id)).collect();
        match gone.first() {
            None => Ok(()),
            Some(first) => {
                let example = FileKind::Pack.relative_path(first);
                self.sticky(Err(Error::ReusedDataPruned { count: gone.len(), example }))
            }
        }
    }

    /// What the session has written.
    pub fn stats(&self) -> WriterStats {
        self.state().stats
    }

    /// Where the session's time went so far, stage by stage.
    pub fn profile(&self) -> StageProfile {
        self.clock.profile()
    }

    /// The session's stage clock, for the stages before sealing.
    pub(crate) fn clock(&self) -> &StageClock {
        &self.clock
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::{InitOptions, OpenOptions};
    use crate::storage::backend::Backend;

    async fn repository(pack_size: u32) -> Repository {
        let init = InitOptions { kdf_memory_kib: 8 * 1024, kdf_iterations: 1, pack_size, ..Default::default() };
        Repository::init(Backend::memory(), b"pw", init, OpenOptions::default()).await.unwrap()
    }

    fn noise(seed: u8, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        blake3::Hasher::new().update(&[seed]).finalize_xof().fill(&mut out);
        out
    }

    #[tokio::test]
    async fn duplicates_are_counted_not_stored() {
        let repo = repository(1 << 20).await;
        let writer = Writer::new(&repo, Arc::new(Index::default())).unwrap();
        let a = writer.add_data(&noise(1, 1000)).await.unwrap();
        assert_eq!(writer.add_data(&noise(1, 1000)).await.unwrap(), a);
        assert!(writer.contains(&a));
        let stats = writer.stats();
        assert_eq!((stats.blobs_added, stats.blobs_deduplicated, stats.raw_bytes_added), (1, 1, 1000));
    }

    #[tokio::test]
    async fn full_packs_upload_and_flush_indexes_everything() {
        let repo = repository(1 << 20).await;
        let writer = Writer::new(&repo, Arc::new(Index::default())).unwrap();
        let mut ids = Vec::new();
        for seed in 0..10 {
            ids.push(writer.add_data(&noise(seed, 300_000)).await.unwrap());
        }
        writer.flush().await.unwrap();
        let stats = writer.stats();
        assert!(stats.packs_written >= 2, "3 MB of noise in 1 MiB packs: {stats:?}");
        assert_eq!(stats.index_files_written, 1);
        let index = repo.load_index().await.unwrap();
        for (seed, id) in ids.iter().enumerate() {
            assert_eq!(repo.read_blob(&index, id).await.unwrap(), noise(seed as u8, 300_000));
        }
        assert!(repo.list_snapshots().await.unwrap().is_empty(), "flush publishes no snapshot");
    }

    #[tokio::test]
    async fn a_dry_run_writes_nothing_and_cannot_commit() {
        let repo = repository(1 << 20).await;
        let writer = Writer::dry_run(&repo, Arc::new(Index::default())).unwrap();
        writer.add_data(&noise(3, 5000)).await.unwrap();
        writer.flush().await.unwrap();
        assert_eq!(writer.stats().packs_written, 1);
        assert!(repo.backend().list(FileKind::Pack).await.unwrap().is_empty());
        let snapshot = Snapshot::new(TreeId::default(), vec!["/x".into()]);
        assert!(writer.commit(&snapshot).await.unwrap_err().to_string().contains("dry-run"));
    }

    #[tokio::test]
    async fn oversized_blobs_are_refused_before_sealing() {
        let repo = repository(1 << 20).await;
        let writer = Writer::new(&repo, Arc::new(Index::default())).unwrap();
        let big = vec![0u8; blob::MAX_BLOB_SIZE + 1];
        assert!(writer.seal(BlobType::Data, Id::default(), &big).unwrap_err().to_string().contains("exceeds"));
    }
}
