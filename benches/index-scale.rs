//! The in-memory index at scale: build an index of N synthetic blobs (10
//! million by default) the way `Repository::load_index` does, then report
//! its resident memory per blob and the cost of a lookup, hit and miss.
//!
//! ```sh
//! cargo bench -p cairn-benches --bench index-scale            # 10,000,000 blobs
//! cargo bench -p cairn-benches --bench index-scale -- 1000000 # another size
//! ```
//!
//! Memory is read from /proc/self/status (VmRSS, VmHWM), so the figures are
//! what the process holds, allocator overhead included.

use std::hint::black_box;
use std::time::Instant;

use cairn_repo::testing::{IndexedPack, PackEntry};
use cairn_repo::{BlobType, Id, Index, IndexFile, PackId};

/// Blobs per pack: a 16 MiB pack of 256 KiB average blobs.
const BLOBS_PER_PACK: usize = 64;
/// Packs per index file (cairn writes an index file per session or so).
const PACKS_PER_FILE: usize = 2_000;

fn main() {
    let blobs: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map(|a| a.parse().expect("BLOBS must be a number"))
        .unwrap_or(10_000_000);
    let baseline = rss_kib("VmRSS");
    let files = synthetic_files(blobs);
    let input = rss_kib("VmRSS") - baseline;

    let started = Instant::now();
    let index = Index::from_files(files);
    let build = started.elapsed();
    let held = rss_kib("VmRSS") - baseline;
    let peak = rss_kib("VmHWM") - baseline;
    assert_eq!(index.blob_count(), blobs);

    let lookups = 2_000_000usize.min(blobs * 4);
    let started = Instant::now();
    let mut found = 0usize;
    for i in 0..lookups {
        found += usize::from(index.contains_trusted(&blob_id((i * 7919) % blobs)));
    }
    let hit_ns = started.elapsed().as_nanos() as f64 / lookups as f64;
    assert_eq!(found, lookups);
    let started = Instant::now();
    for i in 0..lookups {
        found += usize::from(index.contains(&blob_id(blobs + i)));
    }
    let miss_ns = started.elapsed().as_nanos() as f64 / lookups as f64;
    assert_eq!(found, lookups);
    black_box(&index);

    let per_blob = |kib: u64| kib as f64 * 1024.0 / blobs as f64;
    println!("index of {blobs} blobs in {} packs", blobs.div_ceil(BLOBS_PER_PACK));
    println!("  blob table (allocated):  {:.1} bytes/blob", index.blob_table_bytes() as f64 / blobs as f64);
    println!("  resident after building: {:.1} bytes/blob ({} MiB)", per_blob(held), held / 1024);
    println!(
        "  peak while building:     {:.1} bytes/blob ({} MiB; the decoded index files were {} MiB)",
        per_blob(peak),
        peak / 1024,
        input / 1024
    );
    println!("  build: {:.2} s; lookup: {hit_ns:.0} ns hit, {miss_ns:.0} ns miss", build.as_secs_f64());
}

/// The id of synthetic blob `n`: BLAKE3-like spread, so sorting and
/// bisection see random ids.
fn blob_id(n: usize) -> Id {
    let mut x = (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xd1b5_4a32_d192_ed03;
    let mut id = [0u8; 32];
    for chunk in id.chunks_mut(8) {
        x ^= x >> 31;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 29;
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    Id(id)
}

fn synthetic_files(blobs: usize) -> Vec<(Id, IndexFile)> {
    let mut files = Vec::new();
    let mut packs = Vec::with_capacity(PACKS_PER_FILE);
    let mut n = 0;
    while n < blobs {
        let count = BLOBS_PER_PACK.min(blobs - n);
        let entries = (0..count)
            .map(|i| PackEntry {
                blob_type: if (n + i) % 50 == 0 { BlobType::Tree } else { BlobType::Data },
                id: blob_id(n + i),
                offset: (i * 262_144) as u32,
                length: 262_000,
                raw_length: 262_144,
            })
            .collect();
        let mut pack = [0u8; 32];
        pack[..8].copy_from_slice(&(n as u64).to_le_bytes());
        packs.push(IndexedPack { id: PackId(Id(pack)), size: 16 << 20, session_public: [7; 32], blobs: entries });
        n += count;
        if packs.len() == PACKS_PER_FILE || n == blobs {
            let mut file_id = [0u8; 32];
            file_id[..8].copy_from_slice(&(files.len() as u64).to_le_bytes());
            let file = IndexFile { supersedes: Vec::new(), packs: std::mem::take(&mut packs), authenticated: true };
            files.push((Id(file_id), file));
        }
    }
    files
}

fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|v| v.trim_start_matches(':').split_whitespace().next()))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
