//! Where a snapshot session's time goes: busy time and bytes per stage of
//! the storing path (read, chunk, hash, dedup, compress, encrypt, pack,
//! write), summed over every thread that did the work.
//!
//! The clock is always on: it takes two `Instant::now()` calls (a vDSO read,
//! ~25 ns) per read call, chunk, blob and pack, which is lost in the noise
//! next to hashing a chunk of 1 MiB. Comparing the sum of the CPU stages
//! with wall time × cores shows how well the stages overlap; comparing each
//! stage's rate with what its building block does alone (benches/) shows
//! which one to work on.

use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A stage of the storing path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Reading the source: `read` calls on files, or waiting for a stream's
    /// producer (a COPY, a download).
    Read,
    /// Finding the content-defined cut points (or fixed blocks).
    Chunk,
    /// The keyed BLAKE3 content id of each chunk.
    Hash,
    /// Looking a chunk up in the index and in the session's claimed set.
    Dedup,
    /// Readers blocked because every sealer was busy (back-pressure: the
    /// sealing stages are the bottleneck while this grows).
    Wait,
    /// zstd compression of new blobs.
    Compress,
    /// XChaCha20-Poly1305 sealing of new blobs.
    Encrypt,
    /// Copying sealed blobs into packs, including waiting for a pack buffer
    /// while earlier packs upload (back-pressure from the write stage).
    Pack,
    /// Writing finished packs to the backend (for a local repository this
    /// includes each file's fsync).
    Write,
}

impl Stage {
    /// Every stage, in pipeline order.
    pub const ALL: [Stage; 9] = [
        Stage::Read,
        Stage::Chunk,
        Stage::Hash,
        Stage::Dedup,
        Stage::Wait,
        Stage::Compress,
        Stage::Encrypt,
        Stage::Pack,
        Stage::Write,
    ];

    /// Its name, as printed and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Read => "read",
            Stage::Chunk => "chunk",
            Stage::Hash => "hash",
            Stage::Dedup => "dedup",
            Stage::Wait => "wait",
            Stage::Compress => "compress",
            Stage::Encrypt => "encrypt",
            Stage::Pack => "pack",
            Stage::Write => "write",
        }
    }
}

/// One stage's share of a session.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct StageTime {
    /// The stage.
    pub stage: Stage,
    /// Time spent in it, summed over threads.
    #[serde(serialize_with = "as_secs")]
    pub busy: Duration,
    /// Bytes that went through it (the stage's input: plaintext for
    /// read/chunk/hash/dedup/compress, compressed bytes for encrypt, sealed
    /// bytes for pack and write).
    pub bytes: u64,
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl StageTime {
    /// Bytes per busy second (0 when the stage took no measurable time).
    pub fn rate(&self) -> f64 {
        let secs = self.busy.as_secs_f64();
        if secs > 0.0 { self.bytes as f64 / secs } else { 0.0 }
    }
}

/// Every stage of a finished session, in pipeline order.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct StageProfile {
    /// The stages' times and bytes.
    pub stages: Vec<StageTime>,
}

impl StageProfile {
    /// The entry of `stage`.
    pub fn get(&self, stage: Stage) -> Option<&StageTime> {
        self.stages.iter().find(|s| s.stage == stage)
    }
}

const STAGES: usize = Stage::ALL.len();

/// The session's accumulating clock (shared by every thread).
#[derive(Debug, Default)]
pub(crate) struct StageClock {
    nanos: [AtomicU64; STAGES],
    bytes: [AtomicU64; STAGES],
}

impl StageClock {
    /// Adds `elapsed` and `bytes` to `stage`.
    pub(crate) fn add(&self, stage: Stage, elapsed: Duration, bytes: u64) {
        let i = stage as usize;
        self.nanos[i].fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
        self.bytes[i].fetch_add(bytes, Ordering::Relaxed);
    }

    /// Adds the time since `start` and `bytes` to `stage`; returns now, so
    /// consecutive stages can share one clock reading.
    pub(crate) fn since(&self, stage: Stage, start: Instant, bytes: u64) -> Instant {
        let now = Instant::now();
        self.add(stage, now.saturating_duration_since(start), bytes);
        now
    }

    /// The stages so far.
    pub(crate) fn profile(&self) -> StageProfile {
        let stages = Stage::ALL
            .iter()
            .map(|&stage| StageTime {
                stage,
                busy: Duration::from_nanos(self.nanos[stage as usize].load(Ordering::Relaxed)),
                bytes: self.bytes[stage as usize].load(Ordering::Relaxed),
            })
            .collect();
        StageProfile { stages }
    }
}

/// A reader whose `read` calls count as [`Stage::Read`], so that a stream
/// chunker's time splits into reading and cutting.
pub(crate) struct TimedRead<'a, R: ?Sized> {
    pub(crate) inner: &'a mut R,
    pub(crate) clock: &'a StageClock,
    /// Time spent in `read` so far (the caller subtracts it from its own).
    pub(crate) spent: Duration,
}

impl<'a, R: Read + ?Sized> TimedRead<'a, R> {
    pub(crate) fn new(inner: &'a mut R, clock: &'a StageClock) -> Self {
        TimedRead { inner, clock, spent: Duration::ZERO }
    }
}

impl<R: Read + ?Sized> Read for TimedRead<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let start = Instant::now();
        let result = self.inner.read(buf);
        let elapsed = start.elapsed();
        self.spent += elapsed;
        self.clock.add(Stage::Read, elapsed, *result.as_ref().unwrap_or(&0) as u64);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_accumulate_per_stage_and_keep_pipeline_order() {
        let clock = StageClock::default();
        clock.add(Stage::Hash, Duration::from_millis(3), 100);
        clock.add(Stage::Hash, Duration::from_millis(2), 50);
        clock.add(Stage::Write, Duration::from_millis(7), 10);
        let profile = clock.profile();
        let order: Vec<Stage> = profile.stages.iter().map(|s| s.stage).collect();
        assert_eq!(order, Stage::ALL);
        let hash = profile.get(Stage::Hash).unwrap();
        assert_eq!((hash.busy, hash.bytes), (Duration::from_millis(5), 150));
        assert_eq!(hash.rate(), 30_000.0);
        assert_eq!(profile.get(Stage::Chunk).unwrap().rate(), 0.0);
    }

    #[test]
    fn a_timed_reader_counts_what_it_read() {
        let clock = StageClock::default();
        let data = vec![7u8; 10_000];
        let mut source = &data[..];
        let mut timed = TimedRead::new(&mut source, &clock);
        let mut out = Vec::new();
        timed.read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
        assert_eq!(clock.profile().get(Stage::Read).unwrap().bytes, 10_000);
    }

    #[test]
    fn the_profile_serializes_with_seconds_and_kebab_names() {
        let clock = StageClock::default();
        clock.add(Stage::Compress, Duration::from_millis(1500), 42);
        let json = serde_json::to_value(clock.profile()).unwrap();
        assert_eq!(json["stages"][5]["stage"], "compress");
        assert_eq!(json["stages"][5]["busy"], 1.5);
        assert_eq!(json["stages"][5]["bytes"], 42);
    }
}
