//! Chunking a [`Read`] stream into owned, zero-copy chunks.

use std::io::{self, ErrorKind, Read};

use bytes::{Bytes, BytesMut};

use crate::chunker::Chunker;

/// How many bytes past what has been searched are read before searching
/// again. Small enough that a piece is still in the L2 cache when the scan
/// reaches it, large enough to amortize the per-search overhead.
const PIECE: usize = 256 * 1024;

/// Largest single read request. Each read goes into freshly zeroed buffer
/// space (safe Rust cannot hand uninitialized memory to [`Read::read`]);
/// zeroing and then filling a cache-sized bite keeps both in cache.
const READ_BITE: usize = 128 * 1024;

/// Capacity of the first buffer; it doubles from there as needed.
const INITIAL_CAPACITY: usize = 64 * 1024;

/// One chunk of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Chunk {
    /// Position of the chunk's first byte in the stream.
    pub offset: u64,
    /// The chunk's bytes. This is a view into the chunker's read buffer (no
    /// copy); holding on to it keeps that buffer alive.
    pub data: Bytes,
}

/// Splits a [`Read`] stream into [`Chunk`]s with the cut points of
/// [`Chunker::cut`]/[`Chunker::chunks`] on the same bytes.
///
/// Create one with [`Chunker::stream`] or [`StreamChunker::new`], then call
/// [`next_chunk`](StreamChunker::next_chunk) or iterate. The cut points do not
/// depend on how the reader delivers the bytes (short or one-byte reads give
/// the same chunks); reads that fail with [`ErrorKind::Interrupted`] are
/// retried, and the first `Ok(0)` from the reader is taken as the end of the
/// stream.
///
/// Memory: the chunker reads ahead by at most a few hundred KiB past the
/// chunk being searched, so it holds at most about `max_size` bytes of data
/// plus that read-ahead. Its buffer is allocated lazily (an empty stream
/// allocates nothing), grows by doubling up to about twice `max_size`, and is
/// reused once every chunk handed out from it has been dropped; chunks that
/// are kept alive keep their part of an old buffer allocated.
pub struct StreamChunker<R> {
    chunker: Chunker,
    reader: R,
    /// `buf[..filled]` is stream data starting at the current chunk;
    /// `buf[filled..]` is zeroed scratch space to read into.
    buf: BytesMut,
    filled: usize,
    /// Positions `min_size..scanned` of the current chunk are known not to
    /// be cut points (0: nothing searched yet).
    scanned: usize,
    /// Stream offset of `buf[0]`.
    offset: u64,
    /// Capacity of the latest allocation of `buf`.
    allocated: usize,
    eof: bool,
}

impl<R: Read> StreamChunker<R> {
    /// Creates a stream chunker that reads from `reader`.
    pub fn new(chunker: Chunker, reader: R) -> StreamChunker<R> {
        StreamChunker {
            chunker,
            reader,
            buf: BytesMut::new(),
            filled: 0,
            scanned: 0,
            offset: 0,
            allocated: 0,
            eof: false,
        }
    }

    /// Returns the next chunk, or `Ok(None)` at the end of the stream.
    ///
    /// On an I/O error nothing is lost: calling again retries the read.
    pub fn next_chunk(&mut self) -> io::Result<Option<Chunk>> {
        let min = self.chunker.min();
        let max = self.chunker.max();
        if self.scanned == 0 && self.filled < self.buf.capacity() {
            // Start of a chunk. If every chunk handed out so far has been
            // dropped, move the few read-ahead bytes back to the start of the
            // buffer, so a consumer that drops chunks promptly keeps reusing
            // the same, cache-warm memory.
            self.buf.truncate(self.filled);
            let _ = self.buf.try_reclaim(self.allocated.saturating_sub(self.filled));
        }
        loop {
            if self.eof || self.filled >= max {
                // Everything the cut can depend on is here.
                let n = self.filled;
                if n == 0 {
                    return Ok(None);
                }
                let len = if n <= min {
                    n
                } else {
                    let remaining = n.min(max);
                    self.chunker.search(self.data(), self.scanned, remaining & !1).unwrap_or(remaining)
                };
                return Ok(Some(self.emit(len)));
            }
            // The stream holds at least `filled` more bytes, so whatever it
            // turns out to be, positions below `filled` rounded down to even
            // are tested (see `Chunker::cut`): search them now.
            let limit = self.filled & !1;
            if limit > self.scanned.max(min) {
                if let Some(len) = self.chunker.search(self.data(), self.scanned, limit) {
                    return Ok(Some(self.emit(len)));
                }
                self.scanned = limit;
            }
            let target = (self.scanned.max(min) + PIECE).min(max);
            self.fill(target)?;
        }
    }

    /// Returns the reader, dropping any bytes read from it but not yet
    /// returned as chunks.
    pub fn into_inner(self) -> R {
        self.reader
    }

    /// The buffered stream data, starting at the current chunk.
    fn data(&self) -> &[u8] {
        self.buf.get(..self.filled).unwrap_or_default()
    }

    /// Hands out the first `len` buffered bytes (`0 < len <= filled`).
    fn emit(&mut self, len: usize) -> Chunk {
        let data = self.buf.split_to(len).freeze();
        let chunk = Chunk { offset: self.offset, data };
        self.filled -= len;
        self.offset += len as u64;
        self.scanned = 0;
        chunk
    }

    /// Reads until `filled >= target` or the end of the stream.
    fn fill(&mut self, target: usize) -> io::Result<()> {
        while !self.eof && self.filled < target {
            if self.buf.len() <= self.filled {
                self.make_room((target - self.filled).min(READ_BITE));
            }
            let spare = self.buf.get_mut(self.filled..).unwrap_or_default();
            let room = spare.len();
            match self.reader.read(spare) {
                Ok(0) => self.eof = true,
                Ok(n) if n <= room => self.filled += n,
                Ok(n) => {
                    return Err(io::Error::new(
                        ErrorKind::InvalidData,
                        format!("reader claims to have read {n} bytes into a {room}-byte buffer"),
                    ));
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Makes `buf[filled..]` a zeroed scratch area of `want` bytes, reusing
    /// the current allocation when nothing else refers to it, else moving the
    /// buffered data to a new one.
    fn make_room(&mut self, want: usize) {
        self.buf.truncate(self.filled);
        if self.buf.capacity() - self.filled < want && !self.buf.try_reclaim(want) {
            let limit = 2 * self.chunker.max() + PIECE;
            let capacity = (2 * self.allocated).max(INITIAL_CAPACITY).min(limit).max(self.filled + want);
            self.allocated = capacity;
            let mut fresh = BytesMut::with_capacity(capacity);
            fresh.extend_from_slice(&self.buf);
            self.buf = fresh;
        }
        // Zeroing right before the read keeps these lines in cache for it.
        self.buf.resize(self.filled + want, 0);
    }
}

impl<R> std::fmt::Debug for StreamChunker<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the buffered bytes: they are user data and can be megabytes.
        f.debug_struct("StreamChunker")
            .field("chunker", &self.chunker)
            .field("offset", &self.offset)
            .field("buffered", &self.filled)
            .field("eof", &self.eof)
            .finish_non_exhaustive()
    }
}

/// After the end of the stream, `next` keeps returning `None`.
impl<R: Read> std::iter::FusedIterator for StreamChunker<R> {}

impl<R: Read> Iterator for StreamChunker<R> {
    type Item = io::Result<Chunk>;

    fn next(&mut self) -> Option<io::Result<Chunk>> {
        self.next_chunk().transpose()
    }
}
