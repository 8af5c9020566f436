//! Temporary tuning harness: interleaved rounds, best of N.
use cairn_chunker::{Chunker, ChunkerParams, GearTable};
use std::time::Instant;

fn main() {
    let n = 256 << 20;
    let mut x = 0x1234_5678_9abc_def1u64;
    let data: Vec<u8> = (0..n / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    let c = Chunker::new(ChunkerParams::default(), GearTable::from_secret(&[1; 32])).unwrap();
    let names = ["slice", "stream", "fastcdc", "fstream"];
    let mut best = [0f64; 4];
    let rounds: usize = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(5);
    for _ in 0..rounds {
        for (i, which) in names.iter().enumerate() {
            let t = Instant::now();
            let count = match *which {
                "stream" => c.stream(std::io::Cursor::new(&data)).map(|c| c.unwrap().data.len()).count(),
                "fastcdc" => fastcdc::v2020::FastCDC::new(&data, 512 << 10, 1 << 20, 8 << 20).count(),
                "fstream" => fastcdc::v2020::StreamCDC::new(std::io::Cursor::new(&data), 512 << 10, 1 << 20, 8 << 20).map(|c| c.unwrap().length).count(),
                _ => c.chunks(&data).count(),
            };
            assert!(count > 100);
            best[i] = best[i].max(n as f64 / t.elapsed().as_secs_f64() / 1e9);
        }
    }
    for (n, b) in names.iter().zip(best) {
        println!("{n:8} {b:.2} GB/s");
    }
}
