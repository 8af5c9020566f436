//! Storing a byte stream (one table's COPY output, one large object, the
//! schema archive) as a file's content in the repository.
//!
//! The producer is async (a COPY stream); chunking, hashing, compressing and
//! encrypting are CPU work. Each stream therefore gets a thread that reads
//! batches from a small bounded channel, cuts them with the repository's
//! content-defined chunker, and hands every chunk the repository does not
//! have yet to the [`Writer`]. The channel bounds memory (a few batches per
//! stream) and applies backpressure to the COPY, so a slow repository slows
//! the server down instead of filling memory. Content-defined chunks make
//! an unchanged table produce the same blobs tomorrow (nothing is stored)
//! and an appended table produce new blobs only near its end.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use cairn_repo::SealedBlob;
use cairn_repo::{BlobType, Extent, Id, Writer};
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use crate::error::{Error, Result};

/// Batches in flight per stream.
const QUEUE: usize = 4;

/// A stored stream: its extents and length.
#[derive(Debug, Clone, Default)]
pub struct StoredContent {
    /// The file's content.
    pub extents: Vec<Extent>,
    /// Its length in bytes.
    pub size: u64,
}

/// A stream being stored. Send batches, then [`finish`](StreamSink::finish).
pub struct StreamSink {
    tx: Option<mpsc::Sender<Bytes>>,
    thread: Option<std::thread::JoinHandle<Result<StoredContent>>>,
}

impl StreamSink {
    /// Starts storing a stream through `writer`; `counter` counts the bytes
    /// as they are chunked (for progress).
    pub fn start(writer: Arc<Writer>, counter: Arc<AtomicU64>) -> StreamSink {
        let (tx, rx) = mpsc::channel::<Bytes>(QUEUE);
        let handle = Handle::current();
        let thread = std::thread::Builder::new()
            .name("cairn-pg-store".into())
            .spawn(move || store(&writer, &handle, rx, &counter))
            .expect("cannot start a thread");
        StreamSink { tx: Some(tx), thread: Some(thread) }
    }

    /// Hands over one batch (waits while the queue is full).
    pub async fn send(&mut self, batch: Bytes) -> Result<()> {
        let tx = self.tx.as_ref().expect("send after finish");
        if tx.send(batch).await.is_err() {
            // The thread stopped early: its error says why.
            return Err(self
                .join()
                .await
                .err()
                .unwrap_or_else(|| Error::Invalid("the storing thread stopped before the end of the stream".into())));
        }
        Ok(())
    }

    /// Ends the stream and returns what was stored.
    pub async fn finish(mut self) -> Result<StoredContent> {
        self.tx.take();
        self.join().await
    }

    async fn join(&mut self) -> Result<StoredContent> {
        self.tx.take();
        let thread = self.thread.take().expect("joined once");
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(|e| Error::Invalid(format!("the storing thread failed: {e}")))?
            .map_err(|_| Error::Invalid("the storing thread panicked".into()))?
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
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
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

fn store(writer: &Writer, handle: &Handle, rx: mpsc::Receiver<Bytes>, counter: &AtomicU64) -> Result<StoredContent> {
    let repo = writer.repository();
    let mut reader = ChannelReader { rx, current: Bytes::new() };
    let mut chunks = repo.chunker().stream(&mut reader);
    let mut out = StoredContent::default();
    // One sealing buffer, reused for every chunk of the stream.
    let mut sealed = SealedBlob { blob_type: BlobType::Data, id: Id::default(), raw_length: 0, bytes: Vec::new() };
    while let Some(chunk) = chunks.next_chunk().map_err(|e| Error::io("reading a stream to store", e))? {
        let id = repo.content_id(&chunk.data);
        if !writer.contains(&id) {
            writer.seal_into(BlobType::Data, id, &chunk.data, &mut sealed)?;
            handle.block_on(writer.add_sealed_ref(&sealed))?;
        }
        let length = chunk.data.len() as u32;
        out.extents.push(Extent::Blob { id, offset: 0, length });
        out.size += length as u64;
        counter.fetch_add(length as u64, Ordering::Relaxed);
    }
    Ok(out)
}

/// Stores bytes already in memory (the manifest, the schema archive).
pub async fn store_bytes(writer: &Arc<Writer>, data: Vec<u8>) -> Result<StoredContent> {
    let mut sink = StreamSink::start(writer.clone(), Arc::new(AtomicU64::new(0)));
    if !data.is_empty() {
        sink.send(Bytes::from(data)).await?;
    }
    sink.finish().await
}
