//! Keyed content-defined chunking for cairn.
//!
//! # Algorithm
//!
//! Content-defined chunking cuts a byte stream where the *content* says so,
//! rather than every N bytes, so that inserting or deleting bytes only changes
//! the chunks around the edit and everything else still deduplicates.
//!
//! This crate implements FastCDC as published in 2020 (Wen Xia et al., "The
//! Design of Fast Content-Defined Chunking for Data Deduplication Based
//! Storage Systems", IEEE TPDS), with normalized chunking at level 1, and
//! produces exactly the cut points of the `fastcdc` crate's `v2020` module
//! for the same gear table:
//!
//! * A *gear hash* rolls over the bytes: `h = (h << 1) + G[byte]`, where `G`
//!   is a table of 256 random 64-bit values. Because each step shifts left by
//!   one, a byte's contribution leaves the 64-bit word after 64 steps: the
//!   hash only depends on the last 64 bytes.
//! * The search for a cut starts `min_size` bytes into the chunk (cut-point
//!   skipping) with `h = 0`. Position `i` is a cut point when `h & mask == 0`.
//! * Normalized chunking uses a mask with more bits (`mask_s`, one bit more
//!   than `log2(avg_size)`) before `avg_size` and one with fewer bits
//!   (`mask_l`, one bit less) from `avg_size` on, which makes chunks shorter
//!   than the average less likely and longer ones more likely, so sizes
//!   cluster around `avg_size`.
//! * If no cut point is found, the chunk ends at `max_size` (or at the end of
//!   the data).
//!
//! See [`Chunker::cut`] for the exact definition, including the `fastcdc`
//! crate's conventions (the chunk ends just *before* the byte whose hash
//! matched; the last byte of an odd-sized tail is never tested).
//!
//! # Why the whole table is keyed
//!
//! With a public gear table, cut points are a public function of the content.
//! Someone who can observe chunk sizes (stored object sizes, upload sizes and
//! timing, on an untrusted storage backend) can then test whether a repository
//! holds a known file: chunk the candidate file and compare the size sequence.
//! This *chunk-size fingerprinting* works even though chunk contents are
//! encrypted. The `fastcdc` crate's seeded constructors only XOR one 64-bit
//! seed into every entry of its public table: the entries keep their public
//! pairwise differences (`G[a] ^ G[b]` is the same for every seed), and since
//! carries only move upwards, bit `k` of the hash depends only on seed bits
//! `0..=k`: with masks below bit 48 at most 48 seed bits matter at all, and
//! they can be recovered incrementally, low bits first, by checking guesses
//! against the cut points of a known file (its observed chunk sizes). That
//! does not resist fingerprinting.
//!
//! Here [`GearTable::from_secret`] derives all 256 entries (16 384 bits)
//! from a 32-byte per-repository secret with keyed BLAKE3, so the table, and
//! with it every cut point, is unpredictable without the key. (Chunk sizes
//! still leak *something* — a keyed chunker only removes the offline,
//! precomputable fingerprint — so the repository layer should additionally pad
//! or pack chunks.)
//!
//! # Speed
//!
//! A gear hash is one shift and one add per byte, but each step depends on
//! the previous one, so a plain loop is bound by that latency (the `fastcdc`
//! crate, which rolls two bytes per step, runs at about 1.5 cycles per byte).
//! Since a hash depends only on the last 64 bytes, the scan splits its range
//! into *lanes*, consecutive parts that are hashed independently, each after
//! warming up on the bytes just before it; the first hit of the earliest
//! lane is the cut, exactly as in the sequential definition. Only the bytes
//! after `min_size` of each chunk are hashed at all. A [`Kernel`], chosen at
//! run time ([`Kernel::detect`]), does the scan:
//!
//! * **AVX-512** (x86-64 with AVX-512 F, BW and VBMI): 16 lanes, one per
//!   32-bit element of a 512-bit register. The low 32 bits of a gear hash
//!   depend only on the last 32 bytes and on the low 32 bits of the table,
//!   and a position whose low 32 bits have a bit of the mask set is no cut
//!   point; so the lanes compute just those 32 bits, as a filter, looking up
//!   the table as four 256-entry byte tables with `vpermt2b` (64 lookups per
//!   instruction pair), and the rare candidates (with the default 1 MiB
//!   average, one position in 2^12 below the average size and one in 2^10
//!   from there on) are checked with the full 64-bit hash. Each
//!   block of 16 lanes prefetches the next, since 16 streams are more than
//!   the hardware prefetcher follows. About 2 times the portable kernel.
//! * **AVX2**: the same filter with 8 lanes and `vpgatherdd` lookups. On AMD
//!   Zen 4 its gathers make it slower than the portable kernel, so
//!   [`Kernel::detect`] does not choose it; [`Chunker::with_kernel`] does.
//! * **Portable**: blocks of 5 lanes of 4 KiB whose hash chains are
//!   interleaved for the CPU to overlap them. Within a lane, four bytes share
//!   one shift by using the table pre-shifted by 3, 2, 1 and 0 bits (and the
//!   masks shifted to match), so a byte costs a byte load, a table add and a
//!   test-and-branch: about one byte per cycle.
//!
//! The filter needs enough mask bits below bit 32 to be selective; masks
//! with fewer than 9 use the portable kernel (the strict mask of average
//! sizes below 32 KiB, the relaxed one below 128 KiB).
//! Every kernel returns the same cut points; the tests check each one the
//! CPU runs against the sequential definition.
//!
//! The stream chunker reads in bites of at most 128 KiB, searches each
//! 256 KiB it reads while it is still in cache, and hands out chunks as
//! [`bytes::Bytes`] views into its read buffer, without copying.
//!
//! # Example
//!
//! ```
//! use cairn_chunker::{Chunker, ChunkerParams, GearTable};
//!
//! let params = ChunkerParams { min_size: 4096, avg_size: 16384, max_size: 65536 };
//! let chunker = Chunker::new(params, GearTable::from_secret(&[42; 32]))?;
//!
//! let data: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
//! let ranges: Vec<_> = chunker.chunks(&data).collect();
//! assert_eq!(ranges.first().map(|r| r.start), Some(0));
//! assert_eq!(ranges.last().map(|r| r.end), Some(data.len()));
//!
//! // Streaming gives the same chunks, as zero-copy `Bytes`.
//! let mut offset = 0;
//! for (chunk, range) in chunker.stream(&data[..]).zip(&ranges) {
//!     let chunk = chunk?;
//!     assert_eq!(chunk.offset, range.start as u64);
//!     assert_eq!(&chunk.data[..], &data[range.clone()]);
//!     offset += chunk.data.len();
//! }
//! assert_eq!(offset, data.len());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod chunker;
mod gear;
mod params;
mod scan;
mod stream;

pub use crate::chunker::{Chunker, Chunks, KernelUnavailable};
pub use crate::gear::GearTable;
pub use crate::params::{
    AVG_SIZE_LOWER, AVG_SIZE_UPPER, ChunkerParams, MAX_SIZE_LOWER, MAX_SIZE_UPPER, MIN_SIZE_LOWER, MIN_SIZE_UPPER,
    ParamsError, SizeField,
};
pub use crate::scan::Kernel;
pub use crate::stream::{Chunk, StreamChunker};
