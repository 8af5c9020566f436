//! Temporary tuning harness.
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
    let which = std::env::args().nth(1).unwrap_or_default();
    for _ in 0..5 {
        let t = Instant::now();
        let count = match which.as_str() {
            "stream" => c.stream(std::io::Cursor::new(&data)).map(|c| c.unwrap().data.len()).count(),
            "fastcdc" => fastcdc::v2020::FastCDC::new(&data, 512 << 10, 1 << 20, 8 << 20).count(),
            "fstream" => fastcdc::v2020::StreamCDC::new(std::io::Cursor::new(&data), 512 << 10, 1 << 20, 8 << 20).map(|c| c.unwrap().length).count(),
            _ => c.chunks(&data).count(),
        };
        let s = t.elapsed().as_secs_f64();
        println!("{which:8} {count} chunks {:.2} GB/s", n as f64 / s / 1e9);
    }
}
