//! Test data generators shared by the integration tests.

#![allow(dead_code)]

use cairn_chunker::{Chunker, ChunkerParams, GearTable};

/// Deterministic pseudo-random bytes (xorshift64).
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Log-like text: timestamps, levels, words and numbers, every line
/// different, lots of repeated substrings.
pub fn text_bytes(seed: u64, len: usize) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "request", "user", "backup", "chunk", "error", "timeout", "cache", "index", "upload", "pack", "snapshot",
        "tree", "blob", "retry", "ok", "done",
    ];
    const LEVELS: [&str; 4] = ["INFO", "WARN", "DEBUG", "ERROR"];
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(len + 256);
    let mut t = 1_700_000_000u64;
    while out.len() < len {
        t += rng.next() % 5;
        let r = rng.next();
        out.extend_from_slice(
            format!("{t}.{:03} {} [{}] ", r % 1000, LEVELS[(r >> 10) as usize % 4], (r >> 12) % 64).as_bytes(),
        );
        for _ in 0..(r >> 20) % 8 + 2 {
            let w = rng.next();
            out.extend_from_slice(WORDS[w as usize % 16].as_bytes());
            out.extend_from_slice(format!("={},", (w >> 8) % 100_000).as_bytes());
        }
        out.push(b'\n');
    }
    out.truncate(len);
    out
}

/// xorshift64*.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

pub fn params(min_size: u32, avg_size: u32, max_size: u32) -> ChunkerParams {
    ChunkerParams { min_size, avg_size, max_size }
}

pub fn keyed(params: ChunkerParams, secret: u8) -> Chunker {
    Chunker::new(params, GearTable::from_secret(&[secret; 32])).expect("valid params")
}
