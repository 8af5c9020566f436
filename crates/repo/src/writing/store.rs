//! The one storing path: every byte stream that becomes file content (a
//! file being backed up, stdin, a command's output, a PostgreSQL table)
//! goes through a [`Store`].
//!
//! ```text
//! reader ─▶ content-defined chunker ─▶ keyed content id ─▶ in the index, or claimed
//!                                                            by this session? ─yes─▶ reference only
//!                                                             │no
//!                                                             ▼
//!                          bounded channel (2 per core) ─▶ one sealer per core:
//!                                                          compress + seal ─▶ Writer ─▶ packs
//! ```
//!
//! Chunking and hashing happen on the caller's thread (a backup has several
//! readers, a PostgreSQL backup one thread per table), sealing on one
//! thread per core, so a single large stream still keeps every core busy.
//! The channel is bounded: when sealing falls behind, the readers wait,
//! and memory stays at a few chunks per thread. Each chunk is claimed once
//! per session, so two streams that share content never seal it twice.

use std::collections::HashSet;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, bounded};
use tokio::runtime::Handle;

use crate::error::{Error, Result};
use crate::files::localtrees::LocalTrees;
use crate::format::blob::{BlobType, SealedBlob};
use crate::format::id::{DataId, Id, TreeId};
use crate::format::tree::{Extent, Tree};
use crate::writing::profile::{Stage, TimedRead};
use crate::writing::progress::Progress;
use crate::writing::writer::Writer;

/// Stored bytes: a file's content as the repository holds it (its chunks,
/// and holes). Made only by storing bytes in a snapshot session, so a
/// file can never point at data the repository does not have.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Content {
    pub(crate) extents: Vec<Extent>,
    pub(crate) size: u64,
}

impl Content {
    /// Length in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// The storing path of one session, shared by every thread that stores
/// content. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Store {
    inner: Arc<Inner>,
}

/// Dropped with the last [`Store`] handle: that closes the channel, so
/// sealers of an abandoned session end.
struct Inner {
    shared: Arc<Shared>,
    progress: Arc<Progress>,
    chunks_tx: Mutex<Option<Sender<(Id, Bytes)>>>,
    sealers: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Chunks handed to a sealer in this session (so none is sealed twice).
    claimed: Mutex<HashSet<Id>>,
    /// Where tree plaintexts are also kept (put-only clients).
    local_trees: Mutex<Option<LocalTrees>>,
}

/// What the sealers share with the rest of the session.
struct Shared {
    writer: Arc<Writer>,
    handle: Handle,
    aborted: AtomicBool,
    failure: Mutex<Option<Error>>,
}

/// Cores to seal on.
pub(crate) fn available_cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

impl Store {
    /// Starts the sealers of a session writing through `writer`; `handle`
    /// runs the writer's uploads.
    pub(crate) fn start(writer: Arc<Writer>, handle: Handle, progress: Arc<Progress>) -> Result<Store> {
        let (tx, rx) = bounded::<(Id, Bytes)>(available_cores() * 2);
        let shared = Arc::new(Shared { writer, handle, aborted: AtomicBool::new(false), failure: Mutex::new(None) });
        let mut sealers = Vec::new();
        for n in 0..available_cores() {
            let (shared, rx) = (shared.clone(), rx.clone());
            let thread = std::thread::Builder::new()
                .name(format!("cairn-seal-{n}"))
                .spawn(move || shared.seal_all(rx))
                .map_err(|e| Error::Io { context: "cannot start a sealing thread".into(), source: e })?;
            sealers.push(thread);
        }
        let inner = Inner {
            shared,
            progress,
            chunks_tx: Mutex::new(Some(tx)),
            sealers: Mutex::new(sealers),
            claimed: Mutex::new(HashSet::new()),
            local_trees: Mutex::new(None),
        };
        Ok(Store { inner: Arc::new(inner) })
    }

    pub(crate) fn writer(&self) -> &Arc<Writer> {
        &self.inner.shared.writer
    }

    pub(crate) fn handle(&self) -> &Handle {
        &self.inner.shared.handle
    }

    pub(crate) fn progress(&self) -> &Progress {
        &self.inner.progress
    }

    /// Keeps the plaintext of every tree stored from now on in `local`.
    pub(crate) fn keep_trees_in(&self, local: Option<LocalTrees>) {
        *self.inner.local_trees.lock().expect("local trees poisoned") = local;
    }

    /// Whether the session is stopping after a failure.
    pub(crate) fn aborted(&self) -> bool {
        self.inner.shared.aborted.load(Ordering::Relaxed)
    }

    /// Stops the session's work: every stage checks [`aborted`](Store::aborted).
    pub(crate) fn abort(&self) {
        self.inner.shared.aborted.store(true, Ordering::Relaxed);
    }

    /// Records the session's first failure and stops its work.
    pub(crate) fn fail(&self, e: Error) {
        self.inner.shared.fail(e)
    }

    /// The first failure, if any. The session stays failed: later calls
    /// get a [`Error::WriteSessionFailed`] naming it, so nothing is
    /// published after a failure whoever saw it first.
    pub(crate) fn take_failure(&self) -> Option<Error> {
        let mut slot = self.inner.shared.failure.lock().expect("failure slot poisoned");
        let first = slot.take()?;
        *slot = Some(match &first {
            Error::WriteSessionFailed(why) => Error::WriteSessionFailed(why.clone()),
            other => Error::WriteSessionFailed(other.to_string()),
        });
        Some(first)
    }

    /// Hashes a chunk, hands it to the sealers unless the repository or
    /// this session already has it, and returns its extent.
    pub(crate) fn submit(&self, data: Bytes) -> Extent {
        let length = data.len() as u32;
        Extent::Blob { id: self.store_chunk(data), offset: 0, length }
    }

    /// Hashes a chunk and hands it to the sealers unless the repository or
    /// this session already has it; returns its id.
    pub(crate) fn store_chunk(&self, data: Bytes) -> DataId {
        let inner = &self.inner;
        let clock = inner.shared.writer.clock();
        let length = data.len() as u32;
        let start = std::time::Instant::now();
        let id = inner.shared.writer.repository().content_id(&data);
        let hashed = clock.since(Stage::Hash, start, length as u64);
        let new = !inner.shared.writer.contains(&id) && inner.claimed.lock().expect("claimed set poisoned").insert(id);
        let looked_up = clock.since(Stage::Dedup, hashed, length as u64);
        if new {
            let tx = inner.chunks_tx.lock().expect("chunk sender poisoned").clone();
            if let Some(tx) = tx {
                let _ = tx.send((id, data));
            }
            clock.since(Stage::Wait, looked_up, length as u64);
        }
        DataId(id)
    }

    /// Chunks everything `reader` yields, appending extents and counting
    /// bytes (in `size` and in the progress counters).
    pub(crate) fn chunk_stream(
        &self,
        reader: &mut dyn Read,
        content: &mut Vec<Extent>,
        size: &mut u64,
    ) -> io::Result<()> {
        let clock = self.writer().clock();
        let mut timed = TimedRead::new(reader, clock);
        let mut chunks = self.writer().repository().chunker().stream(&mut timed);
        // Time in `next_chunk` is reading plus cutting; the reads are
        // counted by `TimedRead`, so cutting is the rest.
        let (mut chunking, mut chunked) = (std::time::Duration::ZERO, 0);
        let result = loop {
            let start = std::time::Instant::now();
            let next = chunks.next_chunk();
            chunking += start.elapsed();
            let chunk = match next {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            };
            if self.aborted() {
                break Err(io::Error::other("the backup was aborted"));
            }
            let len = chunk.data.len() as u64;
            chunked += len;
            *size += len;
            self.inner.progress.bytes_read.fetch_add(len, Ordering::Relaxed);
            content.push(self.submit(chunk.data));
        };
        drop(chunks);
        clock.add(Stage::Chunk, chunking.saturating_sub(timed.spent), chunked);
        result
    }

    /// Stores everything `reader` yields as one content (blocking).
    pub(crate) fn store_reader(&self, reader: &mut dyn Read) -> Result<Content> {
        let mut content = Content::default();
        let read = self.chunk_stream(reader, &mut content.extents, &mut content.size);
        if let Some(e) = self.take_failure() {
            return Err(e);
        }
        read.map_err(|e| Error::Io { context: "reading a stream to store".into(), source: e })?;
        Ok(content)
    }

    /// Stores bytes already in memory as one content (blocking: the
    /// sealers' queue may make it wait). The chunks are slices of `data`,
    /// not copies; the cuts are the same as [`store_reader`](Self::store_reader)'s
    /// over the same bytes.
    pub(crate) fn store_buffer(&self, data: Bytes) -> Result<Content> {
        let mut content = Content::default();
        for range in self.writer().repository().chunker().chunks(&data) {
            if self.aborted() {
                break;
            }
            let len = range.len() as u64;
            content.size += len;
            self.inner.progress.bytes_read.fetch_add(len, Ordering::Relaxed);
            content.extents.push(self.submit(data.slice(range)));
        }
        if let Some(e) = self.take_failure() {
            return Err(e);
        }
        if self.aborted() {
            return Err(Error::WriteSessionFailed("the backup was aborted".into()));
        }
        Ok(content)
    }

    /// Stores everything `reader` yields cut at fixed `block_size` offsets
    /// instead of content-defined points (blocking). Each full block is one
    /// chunk, the last may be shorter; an all-zero block becomes a hole
    /// (adjacent holes merge), so it needs no storage. For files rewritten
    /// in place at aligned offsets (database pages): a changed page changes
    /// only its block, where a content-defined chunk around it would be
    /// larger. Cut points are not recorded anywhere: tree extents allow any.
    pub(crate) fn store_blocks(&self, reader: &mut dyn Read, block_size: usize) -> Result<Content> {
        if block_size == 0 || block_size > crate::format::blob::MAX_BLOB_SIZE {
            return Err(Error::InvalidArgument(format!(
                "a block size of {block_size} bytes cannot be stored: give 1 byte to {} MiB",
                crate::format::blob::MAX_BLOB_SIZE >> 20
            )));
        }
        let mut content = Content::default();
        loop {
            if self.aborted() {
                break;
            }
            let mut block = vec![0u8; block_size];
            let n = read_full(&mut TimedRead::new(reader, self.writer().clock()), &mut block)
                .map_err(|e| Error::Io { context: "reading a stream to store".into(), source: e })?;
            if n == 0 {
                break;
            }
            block.truncate(n);
            content.size += n as u64;
            self.inner.progress.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
            if block.iter().all(|&b| b == 0) {
                match content.extents.last_mut() {
                    Some(Extent::Hole { length }) => *length += n as u64,
                    _ => content.extents.push(Extent::Hole { length: n as u64 }),
                }
            } else {
                content.extents.push(self.submit(Bytes::from(block)));
            }
            if n < block_size {
                break;
            }
        }
        if let Some(e) = self.take_failure() {
            return Err(e);
        }
        if self.aborted() {
            return Err(Error::WriteSessionFailed("the backup was aborted".into()));
        }
        Ok(content)
    }

    /// Stores a tree blob (blocking; not from inside the runtime).
    pub(crate) fn store_tree(&self, tree: &Tree) -> Result<TreeId> {
        self.handle().block_on(self.store_tree_async(tree))
    }

    /// Stores a tree blob from async code (also keeping its plaintext for
    /// a put-only client).
    pub(crate) async fn store_tree_async(&self, tree: &Tree) -> Result<TreeId> {
        let bytes = tree.encode();
        let id = self.writer().add_blob(BlobType::Tree, &bytes).await?;
        if let Some(local) = &*self.inner.local_trees.lock().expect("local trees poisoned") {
            local.save(&id, &bytes);
        }
        Ok(TreeId(id))
    }

    /// Waits until every chunk handed over so far is sealed and added to
    /// the writer, and stops the sealers. Returns the first failure.
    pub(crate) fn finish(&self) -> Result<()> {
        self.inner.chunks_tx.lock().expect("chunk sender poisoned").take();
        let sealers = std::mem::take(&mut *self.inner.sealers.lock().expect("sealer list poisoned"));
        for sealer in sealers {
            if sealer.join().is_err() {
                self.fail(Error::WriteSessionFailed("a sealing thread panicked".into()));
            }
        }
        match self.take_failure() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

impl Shared {
    fn fail(&self, e: Error) {
        let mut failure = self.failure.lock().expect("failure slot poisoned");
        if failure.is_none() {
            *failure = Some(e);
        }
        self.aborted.store(true, Ordering::Relaxed);
    }

    /// A sealer: compresses and seals chunks until the channel closes.
    fn seal_all(&self, rx: Receiver<(Id, Bytes)>) {
        // One buffer per sealer, reused for every blob.
        let mut sealed = SealedBlob { blob_type: BlobType::Data, id: Id::default(), raw_length: 0, bytes: Vec::new() };
        for (id, data) in rx {
            if self.aborted.load(Ordering::Relaxed) {
                continue; // keep draining so no sender blocks
            }
            let result = self
                .writer
                .seal_into(BlobType::Data, id, &data, &mut sealed)
                .and_then(|()| self.handle.block_on(self.writer.add_sealed_ref(&sealed)));
            if let Err(e) = result {
                self.fail(e);
            }
        }
    }
}

/// Batches of a stream in flight to its storing thread.
const STREAM_QUEUE: usize = 4;

/// A stream being stored from async code (a COPY, a download): send
/// batches, then [`finish`](StreamSink::finish). A thread of its own
/// chunks the batches as they come; the queue between them is short, so a
/// slow repository slows the producer instead of filling memory.
pub struct StreamSink {
    tx: Option<tokio::sync::mpsc::Sender<Bytes>>,
    thread: Option<std::thread::JoinHandle<Result<Content>>>,
}

impl StreamSink {
    pub(crate) fn start(store: Store) -> Result<StreamSink> {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(STREAM_QUEUE);
        let thread = std::thread::Builder::new()
            .name("cairn-stream".into())
            .spawn(move || store.store_reader(&mut ChannelReader { rx, current: Bytes::new() }))
            .map_err(|e| Error::Io { context: "cannot start a storing thread".into(), source: e })?;
        Ok(StreamSink { tx: Some(tx), thread: Some(thread) })
    }

    /// Hands over one batch (waits while the queue is full).
    pub async fn send(&mut self, batch: Bytes) -> Result<()> {
        let Some(tx) = self.tx.as_ref() else {
            return Err(Error::InvalidArgument("a batch was sent to a finished stream".into()));
        };
        if tx.send(batch).await.is_err() {
            // The thread stopped early: its error says why.
            return Err(self.join().await.err().unwrap_or_else(|| {
                Error::WriteSessionFailed("the storing thread stopped before the stream ended".into())
            }));
        }
        Ok(())
    }

    /// Ends the stream and returns its stored content.
    pub async fn finish(mut self) -> Result<Content> {
        self.join().await
    }

    async fn join(&mut self) -> Result<Content> {
        self.tx.take();
        let Some(thread) = self.thread.take() else {
            return Err(Error::InvalidArgument("a stream was finished twice".into()));
        };
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(|e| Error::WriteSessionFailed(format!("the storing thread failed: {e}")))?
            .map_err(|_| Error::WriteSessionFailed("the storing thread panicked".into()))?
    }
}

impl Drop for StreamSink {
    fn drop(&mut self) {
        // Closing the channel ends the thread; it is not waited for.
        self.tx.take();
    }
}

/// Reads batches from the channel as one continuous stream.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.current = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}
