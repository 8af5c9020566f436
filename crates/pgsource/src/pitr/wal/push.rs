//! `wal-push`: archiving WAL files, batched and asynchronous.
//!
//! The **foreground** ([`push_foreground`]), run by PostgreSQL's
//! `archive_command` for each file, never opens the repository: it hashes
//! the file, asks the pusher for it through the [`Spool`], starts the pusher
//! if none runs, and waits for its `.ok` (whose hash must be the file's) or
//! `.error`.
//!
//! The **pusher** ([`run_pusher`]) holds the repository open. It takes the
//! requests and every `archive_status/*.ready` file (so the files
//! PostgreSQL will ask for next are pushed before it asks), checks each
//! file's name and page headers, and commits each batch as ONE `pg-wal`
//! snapshot; only then does it write the `.ok` files. A file whose name was
//! already pushed with the same content is acknowledged at once; with other
//! content it is refused, never overwritten.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};

use cairn_repo::{EntryMeta, Repository, SnapshotOptions, Source, SourceContext};

use super::super::catalog::WalCatalog;
use super::super::layout::{
    METADATA_KEY, PitrInfo, SegmentSize, WAL_TAG, WalBatchInfo, WalFile, WalFileEntry, wal_snapshot_path, wal_tree_path,
};
use super::header::{self, HeaderError};
use super::spool::Spool;
use crate::error::{Error, Result};

/// Whether `name` can be a WAL file name (`%f`): the pusher checks it fully
/// once the segment size is known; this only keeps odd names out of the spool.
pub fn is_plausible_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_hexdigit() || b.is_ascii_lowercase() || b == b'.')
        && !name.starts_with('.')
        && (name.len() == 24 || name.ends_with(".history") || name.ends_with(".backup") || name.ends_with(".partial"))
}

/// How the foreground waits.
#[derive(Debug, Clone)]
pub struct ForegroundOptions {
    /// The file PostgreSQL asks to archive (`%p`).
    pub path: PathBuf,
    /// The spool directory.
    pub spool: PathBuf,
    /// How long to wait for the pusher before failing (PostgreSQL retries).
    pub timeout: Duration,
}

/// What the foreground found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// The file is in the repository.
    Archived {
        /// Its BLAKE3 hash.
        blake3: String,
    },
}

/// The foreground of `wal-push`: returns once the pusher says the file is
/// in the repository; `start_pusher` starts a pusher (a process of its own)
/// when none holds the spool's lock.
pub fn push_foreground(
    options: &ForegroundOptions,
    start_pusher: &mut dyn FnMut(&Spool) -> std::io::Result<()>,
) -> Result<PushOutcome> {
    let name = options
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| Error::Invalid(format!("{} is not a file", options.path.display())))?;
    if !is_plausible_name(&name) {
        return Err(Error::Invalid(format!(
            "{name:?} is not a WAL file name (wal-push takes %p of archive_command: a segment, .history, .backup or .partial file)"
        )));
    }
    let bytes = std::fs::read(&options.path)
        .map_err(|e| Error::io(format!("cannot read the WAL file {}", options.path.display()), e))?;
    let blake3 = blake3::hash(&bytes).to_hex().to_string();
    drop(bytes);
    let path = std::path::absolute(&options.path)
        .map_err(|e| Error::io(format!("cannot resolve {}", options.path.display()), e))?;
    let spool = Spool::open(&options.spool)?;
    // A result left by an earlier try is stale unless it is an .ok for this content.
    match spool.read_ok(&name) {
        Some(h) if h == blake3 => {
            spool.clear(&name);
            return Ok(PushOutcome::Archived { blake3 });
        }
        _ => spool.clear(&name),
    }
    spool.request(&name, &path)?;
    let started = Instant::now();
    let mut last_start: Option<Instant> = None;
    loop {
        if let Some(h) = spool.read_ok(&name) {
            spool.clear(&name);
            if h == blake3 {
                return Ok(PushOutcome::Archived { blake3 });
            }
            return Err(Error::Mismatch(format!(
                "{name} changed while it was being archived (hash {blake3}, pushed {h}); PostgreSQL will try again"
            )));
        }
        if let Some(reason) = spool.read_error(&name) {
            spool.clear(&name);
            return Err(Error::Invalid(reason.trim().to_owned()));
        }
        if last_start.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) && !spool.pusher_running()? {
            start_pusher(&spool).map_err(|e| Error::io("cannot start the WAL pusher", e))?;
            last_start = Some(Instant::now());
        }
        if started.elapsed() > options.timeout {
            return Err(Error::Invalid(format!(
                "{name} was not archived within {} s: see the pusher's log {} (PostgreSQL will try again)",
                options.timeout.as_secs(),
                spool.log_path().display()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What the pusher decides for one file, given what is archived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not archived yet: store it.
    Store,
    /// Archived with the same content: acknowledge it.
    AlreadyArchived,
    /// Archived with other content: refuse it.
    Conflict {
        /// The archived content's hash.
        archived: String,
    },
}

/// The verdict for `name` with hash `blake3` (pure).
pub fn verdict(name: &str, blake3: &str, archived: &HashMap<String, String>) -> Verdict {
    match archived.get(name) {
        None => Verdict::Store,
        Some(h) if h == blake3 => Verdict::AlreadyArchived,
        Some(h) => Verdict::Conflict { archived: h.clone() },
    }
}

/// Which of the waiting files go into the next batch (pure): oldest name
/// first, at most `max_files` and `max_bytes` (but always at least one).
pub fn select_batch(mut waiting: Vec<(String, u64)>, max_files: usize, max_bytes: u64) -> Vec<String> {
    waiting.sort();
    waiting.dedup_by(|a, b| a.0 == b.0);
    let mut out = Vec::new();
    let mut bytes = 0u64;
    for (name, size) in waiting {
        if out.len() >= max_files.max(1) || (!out.is_empty() && bytes + size > max_bytes) {
            break;
        }
        bytes += size;
        out.push(name);
    }
    out
}

/// What the pusher is told about the cluster it serves.
#[derive(Debug, Clone)]
pub struct PusherOptions {
    /// The spool directory.
    pub spool: PathBuf,
    /// The cluster's WAL directory (`PGDATA/pg_wal`), scanned for `archive_status/*.ready`.
    pub wal_dir: PathBuf,
    /// The cluster's data directory: `global/pg_control` gives the system
    /// identifier every segment must carry, `PG_VERSION` the page magic.
    pub pgdata: PathBuf,
    /// Most files per snapshot.
    pub max_files: usize,
    /// Most bytes per snapshot (held in memory while the batch is written).
    pub max_bytes: u64,
    /// Exit after this long with nothing to do.
    pub idle_exit: Duration,
    /// Host name to record in snapshots (`None`: this machine's).
    pub hostname: Option<String>,
}

/// What a pusher did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PusherReport {
    /// Snapshots committed.
    pub batches: u64,
    /// Files stored.
    pub stored: u64,
    /// Bytes of the files stored.
    pub bytes: u64,
    /// Files acknowledged as already archived.
    pub already: u64,
    /// Files refused.
    pub refused: u64,
    /// Where the time went.
    pub timings: PushTimings,
}

/// Where a pusher's time went, summed over its batches. Reading runs on
/// blocking threads while the previous batch is stored and committed, so
/// `read_check` overlaps the rest; `wait_read` is the part it did not hide.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushTimings {
    /// Reading each file, hashing it and checking its page headers (summed
    /// over the reading threads).
    pub read_check: Duration,
    /// Waiting for a batch to be read and checked.
    pub wait_read: Duration,
    /// Storing the files: chunking, compressing, encrypting, writing packs.
    pub store: Duration,
    /// Committing each batch: the last pack, the index, the tree and the snapshot.
    pub commit: Duration,
    /// Recording what was pushed (`pushed.log`, synced) and writing the `.ok` files.
    pub acknowledge: Duration,
}

/// The cluster facts the pusher checks segments against.
#[derive(Debug, Clone, Copy)]
struct Cluster {
    system_identifier: u64,
    magic: Option<u16>,
}

/// Reads `global/pg_control`'s system identifier (its first 8 bytes) and
/// `PG_VERSION`.
fn read_cluster(pgdata: &Path) -> Result<Cluster> {
    let control = pgdata.join("global/pg_control");
    let bytes = std::fs::read(&control).map_err(|e| {
        Error::io(format!("cannot read {} (is the data directory {}?)", control.display(), pgdata.display()), e)
    })?;
    let first: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| Error::Invalid(format!("{} is too short to be pg_control", control.display())))?;
    let version = std::fs::read_to_string(pgdata.join("PG_VERSION")).unwrap_or_default();
    let magic = version.trim().parse::<u32>().ok().and_then(header::magic_of);
    Ok(Cluster { system_identifier: u64::from_le_bytes(first), magic })
}

/// One file read and checked, ready to store.
#[derive(Debug)]
struct Prepared {
    name: String,
    bytes: Vec<u8>,
    blake3: String,
    segment_size: SegmentSize,
    mtime: Option<jiff::Timestamp>,
}

/// Checks a file's name and content against the cluster.
fn prepare(name: &str, path: &Path, cluster: &Cluster, size_hint: Option<SegmentSize>) -> Result<Prepared, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mtime =
        std::fs::metadata(path).ok().and_then(|m| m.modified().ok()).and_then(|t| jiff::Timestamp::try_from(t).ok());
    let blake3 = blake3::hash(&bytes).to_hex().to_string();
    let looks_like_segment = !name.contains('.') || name.ends_with(".partial");
    let segment_size = if looks_like_segment {
        let long = header::read_long_header(&bytes).map_err(|HeaderError(e)| format!("{name}: {e}"))?;
        if long.system_identifier != cluster.system_identifier {
            return Err(format!(
                "{name} belongs to the cluster with system identifier {}, the data directory's is {}: refusing to archive another cluster's WAL",
                long.system_identifier, cluster.system_identifier
            ));
        }
        if let Some(magic) = cluster.magic {
            if long.magic != magic {
                return Err(format!(
                    "{name} has WAL page magic {:#06X}, the server's version writes {magic:#06X}",
                    long.magic
                ));
            }
        }
        let file = WalFile::parse(name, long.segment_size).map_err(|e| e.to_string())?;
        let segment = file.segment().ok_or_else(|| format!("{name} is not a segment"))?;
        header::check_segment(&bytes, segment, &long, matches!(file, WalFile::Partial(_)))
            .map_err(|HeaderError(e)| format!("{name}: {e}"))?;
        long.segment_size
    } else {
        let size = size_hint.unwrap_or(SegmentSize::DEFAULT);
        let file = WalFile::parse(name, size).map_err(|e| e.to_string())?;
        if let WalFile::History(_) = file {
            let text = std::str::from_utf8(&bytes).map_err(|_| format!("{name} is not text"))?;
            super::super::layout::parse_history(text).map_err(|e| format!("{name}: {e}"))?;
        }
        size
    };
    Ok(Prepared { name: name.to_owned(), bytes, blake3, segment_size, mtime })
}

/// The files of one batch, as a snapshot source. Their bytes are handed
/// to the store (not copied); the entries stay.
struct Batch {
    files: Vec<Prepared>,
    system_identifier: u64,
    segment_size: SegmentSize,
}

#[async_trait::async_trait]
impl Source for Batch {
    type Error = Error;

    async fn back_up(&mut self, into: &SourceContext) -> Result<()> {
        // A few files at once: each stream chunks on a thread of its own,
        // and the session seals on every core.
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 4);
        let mut entries = Vec::with_capacity(self.files.len());
        let mut bodies = Vec::with_capacity(self.files.len());
        for f in &mut self.files {
            let bytes = std::mem::take(&mut f.bytes);
            let history = f.name.ends_with(".history").then(|| String::from_utf8_lossy(&bytes).into_owned());
            entries.push(WalFileEntry {
                name: f.name.clone(),
                size: bytes.len() as u64,
                blake3: f.blake3.clone(),
                history,
            });
            bodies.push(bytes);
        }
        let contents: Vec<_> = futures::stream::iter(bodies.into_iter().map(|bytes| into.store_bytes(bytes)))
            .buffered(parallel)
            .try_collect()
            .await?;
        for (f, content) in self.files.iter().zip(contents) {
            let mut meta = EntryMeta::file();
            meta.mtime = f.mtime;
            into.add_file(&wal_tree_path(&f.name), content, &meta)?;
        }
        into.add_snapshot_path(wal_snapshot_path(self.system_identifier));
        into.add_tag(WAL_TAG);
        let info = PitrInfo::Wal(WalBatchInfo {
            system_identifier: self.system_identifier,
            wal_segment_size: self.segment_size,
            files: entries,
            extra: Default::default(),
        });
        into.set_metadata(METADATA_KEY, info.to_value());
        Ok(())
    }
}

/// The files waiting: requests first-come, then `.ready` files; name → path.
fn waiting(spool: &Spool, wal_dir: &Path) -> Result<Vec<(String, PathBuf, bool)>> {
    let mut out: Vec<(String, PathBuf, bool)> =
        spool.requests()?.into_iter().map(|(name, path)| (name, path, true)).collect();
    let status = wal_dir.join("archive_status");
    if let Ok(entries) = std::fs::read_dir(&status) {
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            if let Some(name) = file.strip_suffix(".ready") {
                if !out.iter().any(|(n, _, _)| n == name) && !spool.has_result(name) && is_plausible_name(name) {
                    out.push((name.to_owned(), wal_dir.join(name), false));
                }
            }
        }
    }
    Ok(out)
}

/// One batch read and checked: each chosen file with whether a foreground
/// asked for it (a `.ready` file that vanished was archived meanwhile).
struct ReadBatch {
    files: Vec<(String, bool, Result<Prepared, String>, bool)>,
    read_check: Duration,
}

/// Chooses the next batch among the waiting files (leaving out `in_flight`,
/// the batch being stored) and reads and checks its files, several at once
/// on blocking threads.
async fn read_batch(
    spool: Spool,
    wal_dir: PathBuf,
    cluster: Cluster,
    segment_size: Option<SegmentSize>,
    in_flight: HashSet<String>,
    (max_files, max_bytes): (usize, u64),
) -> Result<ReadBatch> {
    let mut all = waiting(&spool, &wal_dir)?;
    all.retain(|(name, _, _)| !in_flight.contains(name));
    let sizes: Vec<(String, u64)> =
        all.iter().map(|(n, p, _)| (n.clone(), std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))).collect();
    let chosen = select_batch(sizes, max_files, max_bytes);
    let parallel = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 4);
    let reads = chosen.into_iter().filter_map(|name| {
        let (_, path, requested) = all.iter().find(|(n, _, _)| *n == name)?.clone();
        Some(async move {
            let started = Instant::now();
            let (n, p) = (name.clone(), path.clone());
            let prepared = tokio::task::spawn_blocking(move || prepare(&n, &p, &cluster, segment_size))
                .await
                .map_err(|e| Error::Invalid(format!("a WAL check failed: {e}")))?;
            let vanished = prepared.is_err() && !requested && !path.exists();
            Ok::<_, Error>((name, requested, prepared, vanished, started.elapsed()))
        })
    });
    let done: Vec<_> = futures::stream::iter(reads).buffered(parallel).try_collect().await?;
    let read_check = done.iter().map(|d| d.4).sum();
    Ok(ReadBatch { files: done.into_iter().map(|(n, r, p, v, _)| (n, r, p, v)).collect(), read_check })
}

/// Runs the pusher until it has been idle for `idle_exit`. The caller holds
/// the spool's lock (see [`Spool::try_lock`]).
///
/// Batches are pipelined: while one batch is stored and committed (one
/// snapshot), the next is chosen, read and checked.
pub async fn run_pusher(repo: &Repository, options: &PusherOptions) -> Result<PusherReport> {
    let spool = Spool::open(&options.spool)?;
    let cluster = read_cluster(&options.pgdata)?;
    spool.claim_system_identifier(cluster.system_identifier)?;
    // What is archived: this host's record, and with a key that can read,
    // the repository's listing (another host may have pushed too).
    let mut archived = spool.pushed()?;
    let mut segment_size: Option<SegmentSize> = None;
    if repo.can_read() {
        let catalog = WalCatalog::from_snapshots(&repo.list_snapshots().await?);
        if let Some(cluster_files) = catalog.cluster(cluster.system_identifier) {
            segment_size = Some(cluster_files.segment_size);
            for (name, copies) in &cluster_files.files {
                if let Some(first) = copies.first() {
                    archived.entry(name.clone()).or_insert_with(|| first.blake3.clone());
                }
            }
        }
    }
    let limits = (options.max_files, options.max_bytes);
    let mut report = PusherReport::default();
    let mut idle_since = Instant::now();
    let mut next: Option<tokio::task::JoinHandle<Result<ReadBatch>>> = None;
    loop {
        let waited = Instant::now();
        let batch = match next.take() {
            Some(task) => task.await.map_err(|e| Error::Invalid(format!("reading WAL files failed: {e}")))??,
            None => {
                read_batch(spool.clone(), options.wal_dir.clone(), cluster, segment_size, HashSet::new(), limits)
                    .await?
            }
        };
        if batch.files.is_empty() {
            if idle_since.elapsed() > options.idle_exit {
                return Ok(report);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        report.timings.wait_read += waited.elapsed();
        report.timings.read_check += batch.read_check;
        // The next batch is read while this one is stored.
        let in_flight: HashSet<String> = batch.files.iter().map(|f| f.0.clone()).collect();
        next = Some(tokio::spawn(read_batch(
            spool.clone(),
            options.wal_dir.clone(),
            cluster,
            segment_size,
            in_flight,
            limits,
        )));
        let mut store: Vec<Prepared> = Vec::new();
        let mut acks: Vec<(String, String)> = Vec::new();
        let mut refusals: Vec<(String, String)> = Vec::new();
        for (name, _requested, prepared, vanished) in batch.files {
            let prepared = match prepared {
                Ok(p) => p,
                Err(reason) if vanished => {
                    // PostgreSQL archived and removed it meanwhile.
                    tracing::debug!("{name}: {reason}");
                    continue;
                }
                Err(reason) => {
                    refusals.push((name, reason));
                    continue;
                }
            };
            if prepared.name.len() == 24 || prepared.name.ends_with(".partial") {
                segment_size.get_or_insert(prepared.segment_size);
            }
            // A name twice in one batch (a request and its .ready) counts once.
            if store.iter().any(|p| p.name == prepared.name) {
                continue;
            }
            match verdict(&prepared.name, &prepared.blake3, &archived) {
                Verdict::Store => store.push(prepared),
                Verdict::AlreadyArchived => acks.push((prepared.name.clone(), prepared.blake3.clone())),
                Verdict::Conflict { archived } => refusals.push((
                    prepared.name.clone(),
                    format!(
                        "{} is already archived with other content (BLAKE3 {archived}, this file's is {}): refusing to overwrite it; find out why the cluster wrote it twice (`cairn pg check`)",
                        prepared.name, prepared.blake3
                    ),
                )),
            }
        }
        report.already += acks.len() as u64;
        if !store.is_empty() {
            let size = segment_size.unwrap_or(SegmentSize::DEFAULT);
            let pushed: Vec<(String, String)> = store.iter().map(|p| (p.name.clone(), p.blake3.clone())).collect();
            let bytes: u64 = store.iter().map(|p| p.bytes.len() as u64).sum();
            let files = store.len();
            let mut batch = Batch { files: store, system_identifier: cluster.system_identifier, segment_size: size };
            let snapshot_options = SnapshotOptions { hostname: options.hostname.clone(), ..Default::default() };
            let started = Instant::now();
            let mut session = repo.begin_snapshot(snapshot_options).await?;
            session.add_source(&mut batch).await?;
            let stored = started.elapsed();
            session.commit().await?;
            let committed = started.elapsed();
            report.timings.store += stored;
            report.timings.commit += committed - stored;
            report.batches += 1;
            report.stored += files as u64;
            report.bytes += bytes;
            let acked = Instant::now();
            spool.record_pushed(&pushed)?;
            report.timings.acknowledge += acked.elapsed();
            tracing::debug!(
                "batch of {files} files ({} MiB): stored in {:.0} ms, committed in {:.0} ms",
                bytes >> 20,
                stored.as_secs_f64() * 1e3,
                (committed - stored).as_secs_f64() * 1e3
            );
            for (name, hash) in pushed {
                archived.insert(name.clone(), hash.clone());
                acks.push((name, hash));
            }
        }
        let acked = Instant::now();
        for (name, hash) in &acks {
            spool.write_ok(name, hash)?;
            spool.done(name);
        }
        report.refused += refusals.len() as u64;
        for (name, reason) in &refusals {
            tracing::warn!("{reason}");
            spool.write_error(name, reason)?;
            spool.done(name);
        }
        report.timings.acknowledge += acked.elapsed();
        idle_since = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plausible_names() {
        for (name, ok) in [
            ("000000010000000000000003", true),
            ("00000002.history", true),
            ("000000010000000000000002.00000028.backup", true),
            ("000000010000000000000003.partial", true),
            ("RECOVERYXLOG", false),
            ("../etc/passwd", false),
            ("0000000100000000000003", false),
            (".history", false),
            ("", false),
        ] {
            assert_eq!(is_plausible_name(name), ok, "{name}");
        }
    }

    #[test]
    fn verdicts() {
        let archived: HashMap<String, String> = [("a".to_owned(), "h1".to_owned())].into();
        assert_eq!(verdict("b", "h1", &archived), Verdict::Store);
        assert_eq!(verdict("a", "h1", &archived), Verdict::AlreadyArchived);
        assert_eq!(verdict("a", "h2", &archived), Verdict::Conflict { archived: "h1".into() });
    }

    #[test]
    fn batches() {
        let w = |v: &[(&str, u64)]| v.iter().map(|(n, s)| (n.to_string(), *s)).collect::<Vec<_>>();
        for (waiting, files, bytes, expect) in [
            (w(&[("c", 1), ("a", 1), ("b", 1)]), 2, 100, vec!["a", "b"]),
            (w(&[("a", 60), ("b", 60)]), 10, 100, vec!["a"]),
            (w(&[("a", 200)]), 10, 100, vec!["a"]),
            (w(&[("a", 1), ("a", 1)]), 10, 100, vec!["a"]),
            (w(&[]), 10, 100, vec![]),
            (w(&[("a", 1), ("b", 1)]), 0, 100, vec!["a"]),
        ] {
            assert_eq!(select_batch(waiting.clone(), files, bytes), expect, "{waiting:?} {files} {bytes}");
        }
    }

    #[test]
    fn prepare_checks_segments_and_history() {
        use super::super::super::layout::{TimelineId, WalSegment};
        let dir = tempfile::tempdir().unwrap();
        let size = SegmentSize::new(1 << 20).unwrap();
        let cluster = Cluster { system_identifier: 7, magic: Some(0xD110) };
        let seg = WalSegment { timeline: TimelineId::new(1).unwrap(), segno: 3 };
        let name = seg.name(size);
        let path = dir.path().join(&name);
        std::fs::write(&path, header::tests::segment_bytes(7, seg, size, 10)).unwrap();
        let p = prepare(&name, &path, &cluster, None).unwrap();
        assert_eq!(p.segment_size, size);
        let other = Cluster { system_identifier: 8, magic: Some(0xD110) };
        assert!(prepare(&name, &path, &other, None).unwrap_err().contains("system identifier 7"));
        let v16 = Cluster { system_identifier: 7, magic: Some(0xD113) };
        assert!(prepare(&name, &path, &v16, None).unwrap_err().contains("magic"));
        let renamed = dir.path().join(seg.next().name(size));
        std::fs::copy(&path, &renamed).unwrap();
        assert!(prepare(&seg.next().name(size), &renamed, &cluster, None).unwrap_err().contains("file name says"));
        let history = dir.path().join("00000002.history");
        std::fs::write(&history, "1\t0/300000\tno recovery target specified\n").unwrap();
        prepare("00000002.history", &history, &cluster, Some(size)).unwrap();
        std::fs::write(&history, "garbage").unwrap();
        assert!(prepare("00000002.history", &history, &cluster, Some(size)).is_err());
    }
}
