//! Throughput of the repository's per-blob hot path on one core: content id
//! (keyed BLAKE3), sealing (zstd when it pays + XChaCha20-Poly1305) and
//! opening (decrypt + decompress + id check), on 1 MiB blobs of random and of
//! text-like data.
//!
//! `cargo bench --bench repo`

use std::hint::black_box;
use std::sync::Arc;

use cairn_repo::testing::Writer;

use cairn_repo::{Backend, BlobType, InitOptions, OpenOptions, Repository};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};

const BLOB: usize = 1 << 20;
const BLOBS: usize = 32;

fn random_data() -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut v = vec![0u8; BLOB * BLOBS];
    rng.fill(&mut v[..]);
    v
}

fn text_data() -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let words = ["GET", "POST", "/api/v1/orders", "/static/app.js", "200", "404", "user", "session", "timeout", "ok"];
    let mut out = Vec::with_capacity(BLOB * BLOBS + 256);
    let mut t: u64 = 1_700_000_000;
    while out.len() < BLOB * BLOBS {
        t += rng.random_range(0..3);
        let line = format!(
            "{t} host-{} {} {} {} {}ms id={:x}\n",
            rng.random_range(0..40),
            words[rng.random_range(0..words.len())],
            words[rng.random_range(0..words.len())],
            words[rng.random_range(0..words.len())],
            rng.random_range(1..900),
            rng.random::<u32>()
        );
        out.extend_from_slice(line.as_bytes());
    }
    out.truncate(BLOB * BLOBS);
    out
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let repo = rt.block_on(async {
        let options = InitOptions { kdf_memory_kib: 8192, kdf_iterations: 1, ..Default::default() };
        Repository::init(Backend::memory(), b"bench", options, OpenOptions::default()).await.expect("init")
    });
    let writer = Writer::new(&repo, Arc::new(Default::default())).expect("writer");
    let mut group = c.benchmark_group("blob");
    group.sample_size(10).warm_up_time(std::time::Duration::from_secs(1));
    group.measurement_time(std::time::Duration::from_secs(4));
    for (name, data) in [("random", random_data()), ("text", text_data())] {
        group.throughput(Throughput::Bytes(data.len() as u64));
        group.bench_with_input(BenchmarkId::new("content_id", name), &data, |b, data| {
            b.iter(|| {
                for chunk in data.chunks(BLOB) {
                    black_box(repo.content_id(chunk));
                }
            })
        });
        group.bench_with_input(BenchmarkId::new("id_and_seal", name), &data, |b, data| {
            b.iter(|| {
                for chunk in data.chunks(BLOB) {
                    black_box(writer.seal(BlobType::Data, repo.content_id(chunk), chunk).expect("seal"));
                }
            })
        });
        // Store once, then measure reading back through the index.
        let (index, ids) = rt.block_on(async {
            let w = Writer::new(&repo, Arc::new(Default::default())).expect("writer");
            let mut ids = Vec::new();
            for chunk in data.chunks(BLOB) {
                ids.push(w.add_blob(BlobType::Data, chunk).await.expect("add"));
            }
            w.flush().await.expect("flush");
            (repo.load_index().await.expect("index"), ids)
        });
        group.bench_with_input(BenchmarkId::new("read_blob", name), &ids, |b, ids| {
            b.iter(|| {
                rt.block_on(async {
                    for id in ids {
                        black_box(repo.read_blob(&index, id).await.expect("read"));
                    }
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
