//! Helpers shared by the library's integration tests.

#![allow(dead_code)]

use cairn_chunker::ChunkerParams;
use cairn_repo::InitOptions;

/// A repository that opens fast (a cheap KDF) and cuts small chunks and
/// packs, so a few hundred kilobytes make several of each.
pub fn fast_init() -> InitOptions {
    InitOptions {
        kdf_memory_kib: 8 * 1024,
        kdf_iterations: 1,
        pack_size: 1024 * 1024,
        chunker: ChunkerParams { min_size: 16 * 1024, avg_size: 64 * 1024, max_size: 256 * 1024 },
        ..Default::default()
    }
}

/// Pseudo-random but deterministic bytes (incompressible).
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut hasher = blake3::Hasher::new();
    hasher.update(&seed.to_le_bytes());
    hasher.finalize_xof().fill(&mut out);
    out
}
