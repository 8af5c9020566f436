//! With the `fastcdc` crate's gear table, the cut points are exactly those of
//! `fastcdc::v2020::FastCDC` at normalization level 1.

mod common;

use cairn_chunker::{Chunker, ChunkerParams, GearTable, Kernel};
use common::{params, random_bytes, text_bytes};
use fastcdc::v2020::{FastCDC, Normalization, get_gear_with_seed};

fn fastcdc_table(seed: u64) -> GearTable {
    let (gear, _) = get_gear_with_seed(seed);
    let entries: [u64; 256] = gear.as_ref().try_into().expect("256 entries");
    GearTable::from_entries(entries)
}

/// Checks the cuts of every scan kernel this CPU runs against fastcdc's.
fn assert_same_cuts(p: ChunkerParams, seed: u64, data: &[u8], what: &str) {
    let chunker = Chunker::new(p, fastcdc_table(seed)).expect("valid params");
    let theirs: Vec<(usize, usize)> = FastCDC::with_level_and_seed(
        data,
        p.min_size as usize,
        p.avg_size as usize,
        p.max_size as usize,
        Normalization::Level1,
        seed,
    )
    .map(|c| (c.offset, c.length))
    .collect();
    for kernel in Kernel::ALL.into_iter().filter(|k| k.is_available()) {
        let chunker = chunker.clone().with_kernel(kernel).expect("available");
        let ours: Vec<(usize, usize)> = chunker.chunks(data).map(|r| (r.start, r.end - r.start)).collect();
        assert_eq!(ours, theirs, "{what}, {kernel} kernel: {p:?}, seed {seed}, {} bytes", data.len());
    }
}

#[test]
fn default_params_random_and_text() {
    let p = ChunkerParams::default();
    let random = random_bytes(1, 6 * 1024 * 1024 + 3);
    let text = text_bytes(2, 6 * 1024 * 1024 + 1);
    assert_same_cuts(p, 0, &random, "random");
    assert_same_cuts(p, 0, &text, "text");
    let chunks = Chunker::new(p, fastcdc_table(0)).expect("valid").chunks(&random).count();
    assert!(chunks >= 3, "expected several chunks, got {chunks}");
}

#[test]
fn default_params_all_zero_hits_max() {
    let p = ChunkerParams::default();
    let zeros = vec![0u8; 2 * 8 * 1024 * 1024 + 12345];
    assert_same_cuts(p, 0, &zeros, "zeros");
    let chunker = Chunker::new(p, fastcdc_table(0)).expect("valid");
    let lens: Vec<usize> = chunker.chunks(&zeros).map(|r| r.len()).collect();
    assert_eq!(lens, [8 * 1024 * 1024, 8 * 1024 * 1024, 12345]);
}

#[test]
fn small_params_many_inputs() {
    let sets = [
        params(4096, 16384, 65536),
        params(2048, 8192, 32768),
        params(64, 256, 1024),
        params(8192, 10000, 12000),
        params(6000, 65536, 262144),
    ];
    for p in sets {
        for len in [
            0,
            1,
            63,
            p.min_size as usize - 1,
            p.min_size as usize,
            p.min_size as usize + 1,
            p.avg_size as usize - 1,
            p.avg_size as usize + 1,
            p.max_size as usize - 1,
            p.max_size as usize,
            p.max_size as usize + 1,
            300_001,
            1_000_000,
        ] {
            let seed = len as u64;
            assert_same_cuts(p, 0, &random_bytes(seed, len), "random");
            assert_same_cuts(p, 0, &text_bytes(seed, len), "text");
            assert_same_cuts(p, 0, &vec![0u8; len], "zeros");
            assert_same_cuts(p, 0, &vec![b'a'; len], "letters");
        }
    }
}

/// fastcdc's seeded tables are `GEAR ^ seed` (and `GEAR_LS ^ (seed << 1)`,
/// which is the same as shifting the seeded table).
#[test]
fn seeded_fastcdc_tables() {
    let p = params(4096, 16384, 65536);
    let data = random_bytes(7, 2_000_000);
    for seed in [1, 0xdead_beef, u64::MAX] {
        assert_same_cuts(p, seed, &data, "random");
    }
}

#[test]
fn masks_for_every_average_bucket() {
    // One average size per mask bucket, each rounded both ways.
    let data = text_bytes(9, 1_000_000);
    let rand = random_bytes(9, 1_000_000);
    for bits in 8..=22u32 {
        for avg in [(1u32 << bits) - (1 << bits) / 4, 1 << bits, (1 << bits) + (1 << bits) / 4] {
            let avg = (avg & !1).clamp(256, 4 * 1024 * 1024);
            let p = params((avg / 4).max(64) & !1, avg, (avg * 4).clamp(1024, 16 << 20));
            assert_same_cuts(p, 0, &data, "text");
            assert_same_cuts(p, 0, &rand, "random");
        }
    }
}
