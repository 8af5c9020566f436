//! The chunker benchmark CI runs (scripts/test.sh): cairn's chunker and the
//! `fastcdc` crate's v2020 FastCDC (normalisation level 1, the same min, avg
//! and max sizes) over the same data, 64 MiB of random bytes and 64 MiB of
//! log/CSV-like text, both from a fixed seed, in two modes:
//!
//! * `slice`: chunk boundaries of an in-memory buffer (`Chunker::chunks`
//!   against `FastCDC`);
//! * `stream`: owned chunks read from a `Read` (`Chunker::stream` over a
//!   `Cursor`, against `StreamCDC`), which adds each side's buffering and
//!   copying.
//!
//! cairn uses the scan kernel its CPU supports best (`Kernel::detect`); the
//! output names it, and also gives the slice throughput of every kernel the
//! CPU runs (`portable`, `avx2`, `avx512`), which must all cut alike.
//!
//! The verdict is the ratio of the two throughputs, not an absolute time: a
//! busy or slow CI machine slows both alike, while a regression in cairn's
//! chunker shows as a lower ratio. Times are the thread's CPU time on Linux
//! (other processes do not count), wall-clock time elsewhere. Runs are
//! interleaved (cairn, fastcdc, then fastcdc, cairn in the next round) and
//! each side keeps its best round, the run least disturbed by the rest of
//! the machine (which still shares caches and memory bandwidth), with up to
//! 30 rounds: CI runs this after the tests, alone.
//!
//! ```text
//! chunker-ci [--out FILE] [--rounds N] [--min-ratio R] [--commit SHA]
//! ```
//!
//! Prints a table, writes the figures as JSON to FILE (default
//! target/ci/chunker-bench.json) and exits 1 when cairn's throughput on any
//! data set, in either mode, is below `R` (default 1.0) times fastcdc's.

use std::hint::black_box;
use std::io::Cursor;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use cairn_chunker::{Chunker, ChunkerParams, GearTable, Kernel};
use fastcdc::v2020::{FastCDC, Normalization, StreamCDC};

const DATA_LEN: usize = 64 * 1024 * 1024;
const SEED: u64 = 0x00ca_1e55;
/// Stop adding rounds after this long, whatever `--rounds` says: the
/// benchmark must stay a short step of CI even on a slow machine.
const TIME_BUDGET: Duration = Duration::from_secs(24);

struct Options {
    out: PathBuf,
    /// The commit measured, recorded in the JSON for comparisons across runs.
    commit: Option<String>,
    rounds: usize,
    min_ratio: f64,
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(options) => options,
        Err(message) => {
            eprintln!(
                "chunker-ci: {message}\nusage: chunker-ci [--out FILE] [--rounds N] [--min-ratio R] [--commit SHA]"
            );
            return ExitCode::from(2);
        }
    };
    let params = ChunkerParams::default();
    let chunker = match Chunker::new(params, GearTable::from_secret(&[7; 32])) {
        Ok(chunker) => chunker,
        Err(e) => {
            eprintln!("chunker-ci: the default chunker parameters are invalid: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = Instant::now();
    let datasets = [("random", random_data(SEED)), ("text", text_data(SEED))];
    // Slice and stream per data set, plus a short look at each kernel.
    let budget = TIME_BUDGET / (2 * datasets.len() as u32 + 1);
    let mut results = Vec::new();
    for (name, data) in &datasets {
        for mode in [Mode::Slice, Mode::Stream] {
            results.push(measure(name, mode, data, &chunker, options.rounds, budget));
        }
    }
    let kernels: Vec<KernelResult> = Kernel::ALL
        .into_iter()
        .filter(|k| k.is_available())
        .filter_map(|k| chunker.clone().with_kernel(k).ok())
        .flat_map(|c| {
            let per_run = budget / (2 * Kernel::ALL.len() as u32);
            datasets.iter().map(move |(name, data)| measure_kernel(name, data, &c, per_run)).collect::<Vec<_>>()
        })
        .collect();

    println!(
        "chunker benchmark: {} MiB per data set, best of up to {} interleaved rounds, sizes {}/{}/{} bytes, \
         cairn kernel {}",
        DATA_LEN >> 20,
        options.rounds,
        params.min_size,
        params.avg_size,
        params.max_size,
        chunker.kernel()
    );
    println!(
        "{:<8} {:<7} {:>12} {:>12} {:>7} {:>7} {:>14} {:>14}",
        "data", "mode", "cairn GB/s", "fastcdc GB/s", "ratio", "rounds", "cairn chunks", "fastcdc chunks"
    );
    for r in &results {
        println!(
            "{:<8} {:<7} {:>12.3} {:>12.3} {:>7.2} {:>7} {:>14} {:>14}",
            r.name,
            r.mode.name(),
            r.cairn_gbps,
            r.fastcdc_gbps,
            r.ratio(),
            r.rounds,
            r.cairn_chunks,
            r.fastcdc_chunks
        );
    }
    println!("slices by kernel (the same chunks with each):");
    for k in &kernels {
        println!("{:<8} {:<9} {:>8.3} GB/s {:>7} chunks", k.name, k.kernel.name(), k.gbps, k.chunks);
    }
    if let Some(k) = kernels.iter().find(|k| {
        let reference = kernels.iter().find(|r| r.name == k.name && r.kernel == Kernel::Portable);
        reference.is_some_and(|r| r.lengths != k.lengths)
    }) {
        eprintln!(
            "chunker-ci: FAIL: the {} kernel cuts the {} data differently from the portable one",
            k.kernel, k.name
        );
        return ExitCode::FAILURE;
    }
    let worst = results.iter().map(DatasetResult::ratio).fold(f64::INFINITY, f64::min);
    let pass = worst >= options.min_ratio;
    let json = to_json(&results, &kernels, chunker.kernel(), &options, worst, pass, started.elapsed());
    if let Some(dir) = options.out.parent() {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("chunker-ci: cannot create {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    }
    if let Err(e) = std::fs::write(&options.out, &json) {
        eprintln!("chunker-ci: cannot write {}: {e}", options.out.display());
        return ExitCode::FAILURE;
    }
    println!("wrote {} ({:.1} s in all)", options.out.display(), started.elapsed().as_secs_f64());
    if pass {
        println!(
            "ok: cairn's chunker is at least {:.2} times as fast as fastcdc on slices and streams (worst ratio {worst:.2})",
            options.min_ratio
        );
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "chunker-ci: FAIL: cairn's chunker is slower than {:.2} times fastcdc's throughput (worst ratio {worst:.2})",
            options.min_ratio
        );
        ExitCode::FAILURE
    }
}

fn parse_args() -> Result<Options, String> {
    let mut options =
        Options { out: PathBuf::from("target/ci/chunker-bench.json"), commit: None, rounds: 30, min_ratio: 1.0 };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--out" => options.out = PathBuf::from(value()?),
            "--commit" => {
                let commit = value()?;
                if commit.is_empty() || !commit.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(format!("--commit: {commit:?} is not a commit id"));
                }
                options.commit = Some(commit);
            }
            "--rounds" => {
                options.rounds = value()?.parse().map_err(|e| format!("--rounds: {e}"))?;
                if options.rounds == 0 {
                    return Err("--rounds must be at least 1".into());
                }
            }
            "--min-ratio" => {
                options.min_ratio = value()?.parse().map_err(|e| format!("--min-ratio: {e}"))?;
                if !options.min_ratio.is_finite() || options.min_ratio <= 0.0 {
                    return Err("--min-ratio must be a positive number".into());
                }
            }
            _ => return Err(format!("unknown argument {arg}")),
        }
    }
    Ok(options)
}

/// How the data reaches the chunkers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// An in-memory slice; only the boundaries are produced.
    Slice,
    /// A `Read` (a `Cursor` over the data); owned chunks are produced.
    Stream,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Slice => "slice",
            Mode::Stream => "stream",
        }
    }
}

struct DatasetResult {
    name: &'static str,
    mode: Mode,
    cairn_gbps: f64,
    fastcdc_gbps: f64,
    cairn_chunks: usize,
    fastcdc_chunks: usize,
    rounds: usize,
}

impl DatasetResult {
    fn ratio(&self) -> f64 {
        self.cairn_gbps / self.fastcdc_gbps
    }
}

struct KernelResult {
    name: &'static str,
    kernel: Kernel,
    gbps: f64,
    chunks: usize,
    lengths: Vec<usize>,
}

fn gbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e9
}

/// Runs `f` and returns how long it took and what it returned: the CPU time
/// of this thread where Linux tells it (`/proc/thread-self/schedstat`, in
/// nanoseconds), which other processes on the machine do not inflate; the
/// wall-clock time elsewhere.
fn time<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let (cpu, wall) = (thread_cpu_time(), Instant::now());
    let out = black_box(f());
    let elapsed = match (cpu, thread_cpu_time()) {
        (Some(before), Some(after)) if after > before => after - before,
        _ => wall.elapsed(),
    };
    (elapsed, out)
}

/// CPU time this thread has run so far, if the kernel reports it.
fn thread_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

fn measure(
    name: &'static str,
    mode: Mode,
    data: &[u8],
    chunker: &Chunker,
    rounds: usize,
    budget: Duration,
) -> DatasetResult {
    let params = chunker.params();
    let (min, avg, max) = (params.min_size as usize, params.avg_size as usize, params.max_size as usize);
    // Each returns (bytes, chunks).
    let cairn = || match mode {
        Mode::Slice => chunker.chunks(black_box(data)).fold((0, 0), |(b, c), r| (b + r.len(), c + 1)),
        Mode::Stream => chunker.stream(Cursor::new(black_box(data))).fold((0, 0), |(b, c), chunk| {
            let chunk = chunk.expect("reading from memory cannot fail");
            (b + chunk.data.len(), c + 1)
        }),
    };
    let fastcdc =
        || match mode {
            Mode::Slice => FastCDC::with_level(black_box(data), min, avg, max, Normalization::Level1)
                .fold((0, 0), |(b, c), chunk| (b + chunk.length, c + 1)),
            Mode::Stream => StreamCDC::with_level(Cursor::new(black_box(data)), min, avg, max, Normalization::Level1)
                .fold((0, 0), |(b, c), chunk| {
                    let chunk = chunk.expect("reading from memory cannot fail");
                    (b + chunk.data.len(), c + 1)
                }),
        };
    // One untimed pass each: pages faulted in, caches and branch predictors
    // warm, and a check that both chunk all of the data (a chunker that
    // stopped early would look fast).
    let (cairn_bytes, cairn_chunks) = cairn();
    let (fastcdc_bytes, fastcdc_chunks) = fastcdc();
    assert_eq!(cairn_bytes, data.len(), "cairn's chunks do not cover the {name} data");
    assert_eq!(fastcdc_bytes, data.len(), "fastcdc's chunks do not cover the {name} data");

    let (mut best_cairn, mut best_fastcdc) = (Duration::MAX, Duration::MAX);
    let started = Instant::now();
    let mut done = 0;
    // At least three rounds, so that one disturbed run never decides.
    while done < rounds && (done < 3 || started.elapsed() < budget) {
        let (c, f) = if done % 2 == 0 {
            let c = time(cairn).0;
            (c, time(fastcdc).0)
        } else {
            let f = time(fastcdc).0;
            (time(cairn).0, f)
        };
        best_cairn = best_cairn.min(c);
        best_fastcdc = best_fastcdc.min(f);
        done += 1;
    }
    DatasetResult {
        name,
        mode,
        cairn_gbps: gbps(data.len(), best_cairn),
        fastcdc_gbps: gbps(data.len(), best_fastcdc),
        cairn_chunks,
        fastcdc_chunks,
        rounds: done,
    }
}

/// Slice throughput of one kernel (best of at least three runs), and its
/// chunk lengths for the cross-check.
fn measure_kernel(name: &'static str, data: &[u8], chunker: &Chunker, budget: Duration) -> KernelResult {
    let lengths: Vec<usize> = chunker.chunks(data).map(|r| r.len()).collect();
    let started = Instant::now();
    let mut best = Duration::MAX;
    let mut done = 0;
    while done < 3 || started.elapsed() < budget {
        best = best.min(time(|| chunker.chunks(black_box(data)).map(|r| r.len()).sum::<usize>()).0);
        done += 1;
    }
    KernelResult { name, kernel: chunker.kernel(), gbps: gbps(data.len(), best), chunks: lengths.len(), lengths }
}

fn to_json(
    results: &[DatasetResult],
    kernels: &[KernelResult],
    kernel: Kernel,
    options: &Options,
    worst: f64,
    pass: bool,
    elapsed: Duration,
) -> String {
    // A handful of numbers and fixed names: formatted here rather than
    // adding a JSON library to a benchmark.
    let sets: Vec<String> = results
        .iter()
        .map(|r| {
            format!(
                "    {{\"data\": \"{}\", \"mode\": \"{}\", \"bytes\": {}, \"rounds\": {}, \"cairn_gbps\": {:.4}, \
                 \"fastcdc_gbps\": {:.4}, \"ratio\": {:.4}, \"cairn_chunks\": {}, \"fastcdc_chunks\": {}}}",
                r.name,
                r.mode.name(),
                DATA_LEN,
                r.rounds,
                r.cairn_gbps,
                r.fastcdc_gbps,
                r.ratio(),
                r.cairn_chunks,
                r.fastcdc_chunks
            )
        })
        .collect();
    let by_kernel: Vec<String> = kernels
        .iter()
        .map(|k| {
            format!(
                "    {{\"data\": \"{}\", \"kernel\": \"{}\", \"slice_gbps\": {:.4}, \"chunks\": {}}}",
                k.name, k.kernel, k.gbps, k.chunks
            )
        })
        .collect();
    format!(
        "{{\n  \"benchmark\": \"chunker\",\n  \"commit\": {},\n  \"seed\": {SEED},\n  \"kernel\": \"{kernel}\",\n  \
         \"min_ratio\": {},\n  \"worst_ratio\": {worst:.4},\n  \"pass\": {pass},\n  \"seconds\": {:.2},\n  \
         \"results\": [\n{}\n  ],\n  \"kernels\": [\n{}\n  ]\n}}\n",
        options.commit.as_ref().map_or("null".to_owned(), |c| format!("\"{c}\"")),
        options.min_ratio,
        elapsed.as_secs_f64(),
        sets.join(",\n"),
        by_kernel.join(",\n")
    )
}

/// splitmix64: a fixed, dependency-free stream of pseudo-random numbers,
/// the same on every machine and every run.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

fn random_data(seed: u64) -> Vec<u8> {
    let mut rng = SplitMix(seed);
    let mut data = Vec::with_capacity(DATA_LEN);
    while data.len() < DATA_LEN {
        data.extend_from_slice(&rng.next().to_le_bytes());
    }
    data.truncate(DATA_LEN);
    data
}

/// Log and CSV lines (timestamps, levels, ids, words, numbers, paths), as
/// in benches/chunker.rs: lines share structure but are not identical, the
/// kind of text where a chunker's hash sees little entropy per byte.
fn text_data(seed: u64) -> Vec<u8> {
    use std::fmt::Write;
    const WORDS: [&str; 24] = [
        "alpha", "backup", "chunk", "delta", "error", "fetch", "gamma", "index", "journal", "kernel", "lookup",
        "manifest", "network", "object", "pack", "query", "restore", "snapshot", "tree", "upload", "verify", "worker",
        "yield", "zone",
    ];
    const LEVELS: [&str; 4] = ["INFO", "WARN", "DEBUG", "ERROR"];
    const USERS: [&str; 6] = ["alice", "bob", "carol", "dave", "erin", "frank"];
    let mut rng = SplitMix(seed ^ 0x7e47);
    let mut out = String::with_capacity(DATA_LEN + 512);
    let mut t: u64 = 1_717_000_000_000;
    while out.len() < DATA_LEN {
        t += rng.below(2_000);
        let (secs, millis) = (t / 1000, t % 1000);
        let (h, m, s) = (secs / 3600 % 24, secs / 60 % 60, secs % 60);
        let user = rng.pick(&USERS);
        // Writing to a String cannot fail.
        let _ = if rng.below(10) < 7 {
            let (level, word, other) = (rng.pick(&LEVELS), rng.pick(&WORDS), rng.pick(&WORDS));
            writeln!(
                out,
                "2024-06-{:02}T{h:02}:{m:02}:{s:02}.{millis:03}Z {level} [{word}-{}] request_id={:016x} user={user} \
                 op={other} bytes={} latency_ms={}.{} path=/srv/{word}/{other}/{:05}.dat",
                1 + secs / 86_400 % 28,
                rng.below(16),
                rng.next(),
                rng.below(10_000_000),
                rng.below(500),
                rng.below(10),
                rng.below(50_000),
            )
        } else {
            let word = rng.pick(&WORDS);
            writeln!(
                out,
                "{secs},{user},{word},{},{}.{:03},{}",
                rng.below(1_000_000),
                rng.below(1000),
                rng.below(1000),
                rng.below(10) < 9
            )
        };
    }
    let mut data = out.into_bytes();
    data.truncate(DATA_LEN);
    data
}
