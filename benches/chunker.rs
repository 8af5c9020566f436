//! Chunking throughput: cairn's keyed multi-lane FastCDC against the
//! `fastcdc` crate's `v2020` implementation, on 256 MiB of random bytes and
//! 256 MiB of log/CSV-like text, with the default 512 KiB / 1 MiB / 8 MiB
//! sizes, on slices and on streams. cairn runs the scan kernel its CPU
//! supports best (`Kernel::detect`, printed first); `cairn-<kernel>/slice`
//! measures each other kernel the CPU runs.
//!
//! `cargo bench --bench chunker`. Each variant runs 10 samples (criterion's
//! minimum) with flat sampling, so the whole run takes a couple of minutes.
//! Times are the benchmark thread's CPU time on Linux ([`CpuTime`]), so that
//! other processes on a shared machine do not count (they still share its
//! caches and memory bandwidth); wall-clock time elsewhere.

use std::hint::black_box;
use std::io::{Cursor, Write};
use std::time::{Duration, Instant};

use cairn_chunker::{Chunker, ChunkerParams, GearTable, Kernel};
use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use fastcdc::v2020::{FastCDC, Normalization, StreamCDC};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

const DATA_LEN: usize = 256 * 1024 * 1024;

/// Criterion measurement of the thread's CPU time, read from
/// `/proc/thread-self/schedstat` (nanoseconds on the CPU); wall-clock time
/// where that file is missing.
struct CpuTime;

/// Source of the duration formatter [`CpuTime`] shares with wall time.
static WALL_TIME: WallTime = WallTime;

fn thread_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(Duration::from_nanos(stat.split_whitespace().next()?.parse().ok()?))
}

impl Measurement for CpuTime {
    type Intermediate = (Option<Duration>, Instant);
    type Value = Duration;

    fn start(&self) -> Self::Intermediate {
        (thread_cpu_time(), Instant::now())
    }
    fn end(&self, (cpu, wall): Self::Intermediate) -> Duration {
        match (cpu, thread_cpu_time()) {
            (Some(before), Some(after)) if after >= before => after - before,
            _ => wall.elapsed(),
        }
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        WALL_TIME.formatter()
    }
}

fn random_data() -> Vec<u8> {
    let mut data = vec![0u8; DATA_LEN];
    StdRng::seed_from_u64(0x00ca_1e55).fill_bytes(&mut data);
    data
}

/// Log and CSV lines: timestamps, levels, ids, words, numbers and paths.
/// Lines share a lot of structure but are not identical.
fn text_data() -> Vec<u8> {
    const WORDS: [&str; 24] = [
        "alpha", "backup", "chunk", "delta", "error", "fetch", "gamma", "index", "journal", "kernel", "lookup",
        "manifest", "network", "object", "pack", "query", "restore", "snapshot", "tree", "upload", "verify", "worker",
        "yield", "zone",
    ];
    const LEVELS: [&str; 4] = ["INFO", "WARN", "DEBUG", "ERROR"];
    const USERS: [&str; 6] = ["alice", "bob", "carol", "dave", "erin", "frank"];
    let mut rng = StdRng::seed_from_u64(0x7e47);
    let mut out = Vec::with_capacity(DATA_LEN + 512);
    let mut t: u64 = 1_717_000_000_000;
    while out.len() < DATA_LEN {
        t += rng.random_range(0..2_000);
        let (secs, millis) = (t / 1000, t % 1000);
        let (h, m, s) = (secs / 3600 % 24, secs / 60 % 60, secs % 60);
        let user = USERS[rng.random_range(0..USERS.len())];
        let line = if rng.random_bool(0.7) {
            let level = LEVELS[rng.random_range(0..LEVELS.len())];
            let word = WORDS[rng.random_range(0..WORDS.len())];
            let other = WORDS[rng.random_range(0..WORDS.len())];
            writeln!(
                out,
                "2024-06-{:02}T{h:02}:{m:02}:{s:02}.{millis:03}Z {level} [{word}-{}] \
                 request_id={:016x} user={user} op={other} bytes={} latency_ms={}.{} \
                 path=/srv/{word}/{other}/{:05}.dat",
                1 + secs / 86_400 % 28,
                rng.random_range(0..16),
                rng.random::<u64>(),
                rng.random_range(0..10_000_000),
                rng.random_range(0..500),
                rng.random_range(0..10),
                rng.random_range(0..50_000),
            )
        } else {
            writeln!(
                out,
                "{secs},{user},{},{},{:.3},{}",
                WORDS[rng.random_range(0..WORDS.len())],
                rng.random_range(0..1_000_000),
                rng.random::<f64>() * 1000.0,
                rng.random_bool(0.9),
            )
        };
        line.expect("writing to a Vec cannot fail");
    }
    out.truncate(DATA_LEN);
    out
}

fn bench_dataset(c: &mut Criterion<CpuTime>, name: &str, data: &[u8]) {
    let params = ChunkerParams::default();
    let (min, avg, max) = (params.min_size as usize, params.avg_size as usize, params.max_size as usize);
    let chunker = Chunker::new(params, GearTable::from_secret(&[7; 32])).expect("valid params");

    // Sanity check outside the timings: both cairn paths agree, and the
    // chunk count tells how much of the data was actually hashed.
    let ranges: Vec<_> = chunker.chunks(data).collect();
    let streamed: Vec<usize> =
        chunker.stream(Cursor::new(data)).map(|chunk| chunk.expect("in-memory read").data.len()).collect();
    assert!(ranges.iter().map(|r| r.len()).eq(streamed.iter().copied()));
    let fastcdc_chunks = FastCDC::with_level(data, min, avg, max, Normalization::Level1).count();
    eprintln!(
        "{name}: {} bytes, cairn ({} kernel) {} chunks (mean {} bytes), fastcdc {fastcdc_chunks} chunks",
        data.len(),
        chunker.kernel(),
        ranges.len(),
        data.len() / ranges.len().max(1),
    );

    let mut group = c.benchmark_group(format!("chunker/{name}"));
    group
        .throughput(Throughput::Bytes(data.len() as u64))
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));

    group.bench_function("cairn/slice", |b| b.iter(|| chunker.chunks(black_box(data)).map(|r| r.len()).sum::<usize>()));
    group.bench_function("cairn/stream", |b| {
        b.iter(|| {
            chunker
                .stream(Cursor::new(black_box(data)))
                .map(|chunk| chunk.expect("in-memory read").data.len())
                .sum::<usize>()
        })
    });
    for kernel in Kernel::ALL.into_iter().filter(|&k| k != chunker.kernel()) {
        let Ok(other) = chunker.clone().with_kernel(kernel) else { continue };
        assert!(other.chunks(data).eq(ranges.iter().cloned()), "the {kernel} kernel cuts differently");
        group.bench_function(format!("cairn-{kernel}/slice"), |b| {
            b.iter(|| other.chunks(black_box(data)).map(|r| r.len()).sum::<usize>())
        });
    }
    group.bench_function("fastcdc/slice", |b| {
        b.iter(|| {
            FastCDC::with_level(black_box(data), min, avg, max, Normalization::Level1)
                .map(|chunk| chunk.length)
                .sum::<usize>()
        })
    });
    group.bench_function("fastcdc/stream", |b| {
        b.iter(|| {
            StreamCDC::with_level(Cursor::new(black_box(data)), min, avg, max, Normalization::Level1)
                .map(|chunk| chunk.expect("in-memory read").length)
                .sum::<usize>()
        })
    });
    group.finish();
}

fn chunker_benches(c: &mut Criterion<CpuTime>) {
    let random = random_data();
    bench_dataset(c, "random", &random);
    drop(random);
    let text = text_data();
    bench_dataset(c, "text", &text);
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(CpuTime);
    targets = chunker_benches
}
criterion_main!(benches);
