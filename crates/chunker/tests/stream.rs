//! `StreamChunker` yields the same chunks as `Chunker::chunks`, however the
//! reader delivers the bytes.

mod common;

use std::io::{self, ErrorKind, Read};

use cairn_chunker::{Chunk, Chunker, ChunkerParams, StreamChunker};
use common::{Rng, keyed, params, random_bytes, text_bytes};
use proptest::prelude::*;

/// A reader that returns between 1 and `max_read` bytes per call, and now
/// and then fails with `Interrupted`.
struct ShortReads<'a> {
    data: &'a [u8],
    rng: Rng,
    max_read: usize,
    interrupt: bool,
}

impl Read for ShortReads<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let r = self.rng.next();
        if self.interrupt && r.is_multiple_of(7) {
            return Err(io::Error::from(ErrorKind::Interrupted));
        }
        let n = (1 + (r >> 8) as usize % self.max_read).min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fn expected(chunker: &Chunker, data: &[u8]) -> Vec<(u64, Vec<u8>)> {
    chunker.chunks(data).map(|r| (r.start as u64, data[r].to_vec())).collect()
}

fn collect<R: Read>(stream: StreamChunker<R>) -> Vec<(u64, Vec<u8>)> {
    stream
        .map(|c| {
            let c = c.expect("read ok");
            (c.offset, c.data.to_vec())
        })
        .collect()
}

fn check(chunker: &Chunker, data: &[u8], seed: u64, max_read: usize, interrupt: bool) {
    let reader = ShortReads { data, rng: Rng::new(seed), max_read, interrupt };
    let got = collect(chunker.stream(reader));
    let want = expected(chunker, data);
    assert_eq!(got.len(), want.len(), "chunk count");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.0, w.0, "offset of chunk {i}");
        assert!(g.1 == w.1, "bytes of chunk {i} (offset {})", w.0);
    }
    assert_eq!(got.concat_data(), data);
}

trait ConcatData {
    fn concat_data(&self) -> Vec<u8>;
}

impl ConcatData for Vec<(u64, Vec<u8>)> {
    fn concat_data(&self) -> Vec<u8> {
        self.iter().flat_map(|(_, d)| d.iter().copied()).collect()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn short_reads_give_same_chunks(
        min_half in 32u32..1024,
        avg_extra in 1u32..4096,
        max_extra in 1u32..8192,
        secret in any::<u8>(),
        data_seed in any::<u64>(),
        read_seed in any::<u64>(),
        len in 0usize..100_000,
        max_read in 1usize..5000,
        text in any::<bool>(),
        interrupt in any::<bool>(),
    ) {
        let min = min_half * 2;
        let avg = (min + 2 * avg_extra).max(256);
        let max = (avg + 2 * max_extra).max(1024);
        let chunker = keyed(params(min, avg, max), secret);
        let data = if text { text_bytes(data_seed, len) } else { random_bytes(data_seed, len) };
        check(&chunker, &data, read_seed, max_read, interrupt);
    }
}

#[test]
fn one_byte_reads() {
    let chunker = keyed(params(1024, 4096, 16384), 3);
    for len in [0, 1, 1023, 1024, 1025, 4097, 16383, 16384, 16385, 100_001] {
        check(&chunker, &random_bytes(len as u64, len), 1, 1, false);
        check(&chunker, &vec![0; len], 1, 1, true);
    }
}

#[test]
fn default_params_short_reads() {
    let chunker = keyed(ChunkerParams::default(), 4);
    let data = random_bytes(11, 5 * 1024 * 1024 + 17);
    check(&chunker, &data, 2, 300_000, true);
    let text = text_bytes(12, 5 * 1024 * 1024);
    check(&chunker, &text, 3, 70_000, false);
    let zeros = vec![0u8; 17 * 1024 * 1024 + 1];
    check(&chunker, &zeros, 4, 1 << 20, false);
}

#[test]
fn whole_reads_from_slice() {
    let chunker = keyed(ChunkerParams::default(), 5);
    let data = text_bytes(13, 3 * 1024 * 1024 + 5);
    let got = collect(chunker.stream(io::Cursor::new(&data)));
    assert_eq!(got, expected(&chunker, &data));
}

#[test]
fn chunks_are_views_that_outlive_the_stream() {
    let chunker = keyed(params(1024, 4096, 16384), 6);
    let data = random_bytes(14, 200_000);
    let mut stream = StreamChunker::new(chunker.clone(), &data[..]);
    let mut kept: Vec<Chunk> = Vec::new();
    while let Some(chunk) = stream.next_chunk().expect("read ok") {
        kept.push(chunk);
    }
    assert!(stream.next_chunk().expect("read ok").is_none());
    let rest: &[u8] = stream.into_inner();
    assert!(rest.is_empty());
    let joined: Vec<u8> = kept.iter().flat_map(|c| c.data.iter().copied()).collect();
    assert_eq!(joined, data);
    let mut offset = 0;
    for c in &kept {
        assert_eq!(c.offset, offset);
        offset += c.data.len() as u64;
    }
}

/// A reader that fails once with a real error: the error comes out, and
/// the next call picks up where it left off with nothing lost.
#[test]
fn errors_are_reported_and_recoverable() {
    struct FailOnce<'a> {
        data: &'a [u8],
        calls: usize,
    }
    impl Read for FailOnce<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls == 3 {
                return Err(io::Error::other("boom"));
            }
            let n = buf.len().min(self.data.len()).min(5000);
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }
    let chunker = keyed(params(4096, 16384, 65536), 8);
    let data = random_bytes(15, 300_000);
    let mut stream = chunker.stream(FailOnce { data: &data, calls: 0 });
    let mut got = Vec::new();
    let mut errors = 0;
    loop {
        match stream.next_chunk() {
            Ok(Some(c)) => got.push((c.offset, c.data.to_vec())),
            Ok(None) => break,
            Err(e) => {
                assert_eq!(e.to_string(), "boom");
                errors += 1;
            }
        }
    }
    assert_eq!(errors, 1);
    assert_eq!(got, expected(&chunker, &data));
}

/// A broken reader that claims more bytes than it was given gets an error,
/// not a panic.
#[test]
fn lying_reader_is_an_error() {
    struct Liar;
    impl Read for Liar {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            Ok(buf.len() + 1)
        }
    }
    let chunker = keyed(params(4096, 16384, 65536), 8);
    let err = chunker.stream(Liar).next_chunk().expect_err("must fail");
    assert_eq!(err.kind(), ErrorKind::InvalidData);
}

/// A consumer that keeps every chunk alive forces the stream chunker to
/// move to fresh buffers instead of reusing one; chunks stay intact.
#[test]
fn default_params_chunks_kept_alive() {
    let chunker = keyed(ChunkerParams::default(), 9);
    let data = text_bytes(16, 40 * 1024 * 1024 + 3);
    let kept: Vec<Chunk> = chunker
        .stream(ShortReads { data: &data, rng: Rng::new(5), max_read: 1 << 20, interrupt: false })
        .collect::<io::Result<_>>()
        .expect("read ok");
    let want: Vec<_> = chunker.chunks(&data).collect();
    assert_eq!(kept.len(), want.len());
    for (chunk, range) in kept.iter().zip(want) {
        assert_eq!(chunk.offset, range.start as u64);
        assert!(chunk.data[..] == data[range], "chunk at {}", chunk.offset);
    }
}
