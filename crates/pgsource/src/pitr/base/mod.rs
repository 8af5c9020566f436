//! `cairn pg base-backup`: a physical base backup of a cluster, for
//! point-in-time recovery with the WAL that `wal-push` archives.
//!
//! ```text
//! one connection: pg_backup_start(label, fast) ───────────────────────────── pg_backup_stop(true)
//!                      │                                                          │ backup_label, tablespace_map
//!   list PGDATA (exclusions) and each tablespace                                  ▼ written byte for byte
//!   N readers: relation files ─► fixed 16 KiB blocks ─┐                 data/backup_label
//!              other files    ─► content-defined ─────┴─► the session ─► data/…, tablespaces/OID/…
//!   global/pg_control last
//! ```
//!
//! The connection stays open for the whole copy: a non-exclusive backup
//! ends when its session does. Files may change, grow, shrink or vanish
//! while they are read; WAL replay from the start LSN repairs every page,
//! and a file that vanished was dropped (its drop is in the WAL too).
//! Relation files are cut at fixed page-aligned blocks, so a day of
//! scattered updates re-stores only the blocks it touched.
//!
//! When the data directory cannot be read here, `from_tar` takes the same
//! backup from `pg_basebackup -Ft -D - -X none`'s stream.

mod exclude;
pub(crate) mod from_tar;
pub(crate) mod label;
mod server;
mod walk;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use cairn_repo::{Content, EntryMeta, Source, SourceContext};
use futures::StreamExt;

use crate::connect::ConnSpec;
use crate::error::{Error, Result};
use crate::pitr::{self as layout, BaseBackupInfo, Lsn, PitrInfo, SegmentSize, TablespaceEntry, TimelineId};

/// The default size of the blocks relation files are cut into: two 8 KiB
/// pages. `benches/pitr-compare.sh` (README): after a day of 0.2 % scattered
/// updates, day 2 stores 48 % of day 1 at 16 KiB, 40 % at 8 KiB and 76 % at
/// 64 KiB (1 MiB content-defined chunks: 98 %), where 39 % of the 8 KiB
/// pages changed. 8 KiB would double the blobs, and so the index's memory,
/// for a 17 % smaller day 2.
pub const DEFAULT_BLOCK_SIZE: usize = 16 * 1024;

/// The `pitr` metadata field (besides the contract's) with the block size
/// relation files were cut into.
pub const BLOCK_SIZE_KEY: &str = "block_size";
/// The `pitr` metadata field that says the source was a standby.
pub const FROM_STANDBY_KEY: &str = "from_standby";

/// How to take a base backup.
#[derive(Debug, Clone)]
pub struct BaseBackupOptions {
    /// The server (any database; a superuser, or a role with the backup
    /// functions and pg_read_all_settings).
    pub conn: ConnSpec,
    /// The data directory as this machine sees it; `None`: the server's
    /// `data_directory`.
    pub pgdata: Option<std::path::PathBuf>,
    /// An immediate checkpoint at the start instead of a spread one.
    pub fast: bool,
    /// The backup's label (in `backup_label`).
    pub label: String,
    /// Files read at once.
    pub jobs: usize,
    /// The block size relation files are cut into (a multiple of 8 KiB).
    pub block_size: usize,
    /// Take the backup although the server does not archive WAL (it then
    /// restores only with WAL from elsewhere).
    pub allow_no_archive: bool,
}

/// What a base backup did, besides the snapshot's `pitr` metadata.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BaseBackupOutcome {
    /// What the snapshot records.
    pub info: BaseBackupInfo,
    /// Files copied.
    pub files: u64,
    /// Bytes copied.
    pub bytes: u64,
    /// Paths that vanished during the copy (dropped while it ran).
    pub vanished: Vec<String>,
    /// Files of unlogged relations left out.
    pub unlogged_files: u64,
    /// Symbolic links left out (`path -> target`).
    pub skipped_links: Vec<String>,
}

/// A cluster as a source of a snapshot session: tag `pg-base`, path
/// `pg-base/<system identifier>`, metadata `pitr` (FORMAT.md).
pub struct BaseBackupSource {
    options: BaseBackupOptions,
    outcome: Option<BaseBackupOutcome>,
}

impl BaseBackupSource {
    /// A source that backs up the cluster `options` connect to.
    pub fn new(options: BaseBackupOptions) -> BaseBackupSource {
        BaseBackupSource { options, outcome: None }
    }

    /// What the backup did, once it is done.
    pub fn outcome(&self) -> Option<&BaseBackupOutcome> {
        self.outcome.as_ref()
    }
}

#[async_trait::async_trait]
impl Source for BaseBackupSource {
    type Error = Error;

    async fn back_up(&mut self, into: &SourceContext) -> Result<()> {
        let outcome = base_backup(into, &self.options).await?;
        into.add_snapshot_path(layout::base_snapshot_path(outcome.info.system_identifier));
        into.add_tag(layout::BASE_TAG);
        into.set_metadata(layout::METADATA_KEY, PitrInfo::Base(outcome.info.clone()).to_value());
        self.outcome = Some(outcome);
        Ok(())
    }
}

/// Takes a base backup into `into`: `data/` and `tablespaces/OID/`.
pub async fn base_backup(into: &SourceContext, options: &BaseBackupOptions) -> Result<BaseBackupOutcome> {
    if options.block_size == 0 || options.block_size % 8192 != 0 || options.block_size > 1 << 20 {
        return Err(Error::Invalid(format!(
            "a block size of {} bytes does not fit PostgreSQL's 8 KiB pages: give a multiple of 8 KiB up to 1 MiB",
            options.block_size
        )));
    }
    let client = options.conn.connect().await?;
    let facts = server::facts(&client).await?;
    if facts.wal_level == "minimal" {
        return Err(Error::Invalid(
            "the server runs with wal_level = minimal, which cannot recover a base backup: set wal_level = replica \
             and restart it"
                .into(),
        ));
    }
    if facts.archive_mode == "off" && !options.allow_no_archive {
        return Err(Error::Invalid(
            "the server does not archive WAL (archive_mode = off), so this base backup could not be recovered: set \
             archive_mode = on and archive_command = 'cairn pg wal-push %p' (a restart), or take it anyway with the \
             option that allows it"
                .into(),
        ));
    }
    let pgdata = match (&options.pgdata, &facts.data_directory) {
        (Some(dir), _) => dir.clone(),
        (None, Some(dir)) => std::path::PathBuf::from(dir),
        (None, None) => {
            return Err(Error::Invalid(
                "the server does not say where its data directory is (the role lacks pg_read_all_settings): give it"
                    .into(),
            ));
        }
    };
    if !pgdata.join("PG_VERSION").is_file() {
        return Err(Error::Invalid(format!(
            "{} is not a PostgreSQL data directory readable here (no PG_VERSION): run the base backup on the \
             database host, as a user that can read it",
            pgdata.display()
        )));
    }

    let start_lsn = server::start(&client, facts.version_num, &options.label, options.fast).await?;
    let start_time = jiff::Timestamp::now();
    // Everything between start and stop: a failure still ends the backup
    // on the server (dropping the connection would too).
    let copied = copy_all(into, options, &pgdata, &facts).await;
    let stopped = server::stop(&client, facts.version_num).await;
    let (mut listing_out, files, bytes) = copied?;
    let stopped = stopped?;
    let stop_time = jiff::Timestamp::now();
    let label = label::parse(&stopped.backup_label)?;

    let (file_meta, data_meta) = (EntryMeta::file().at(stop_time), listing_out.data_meta.clone());
    let file_meta = EntryMeta { uid: data_meta.uid, gid: data_meta.gid, ..file_meta };
    let content = into.store_bytes(stopped.backup_label.clone().into_bytes()).await?;
    into.add_file("data/backup_label", content, &file_meta)?;
    if let Some(map) = &stopped.tablespace_map {
        let content = into.store_bytes(map.clone().into_bytes()).await?;
        into.add_file("data/tablespace_map", content, &file_meta)?;
    }
    let start: Lsn = parse_lsn(&start_lsn)?;
    let stop: Lsn = parse_lsn(&stopped.lsn)?;
    let bad = |e: layout::LayoutError| Error::Invalid(format!("the server's WAL facts are not understood: {e}"));
    let segment_size = SegmentSize::new(facts.wal_segment_size).map_err(bad)?;
    let mut extra = serde_json::Map::new();
    extra.insert(BLOCK_SIZE_KEY.into(), serde_json::json!(options.block_size));
    extra.insert(FROM_STANDBY_KEY.into(), serde_json::json!(facts.in_recovery || label.from == "standby"));
    let mut info = BaseBackupInfo {
        system_identifier: facts.system_identifier,
        pg_version_num: facts.version_num.max(0) as u32,
        wal_segment_size: segment_size,
        timeline: TimelineId::new(label.timeline).map_err(bad)?,
        start_lsn: start,
        stop_lsn: stop,
        start_wal: label.start_wal.clone(),
        stop_wal: String::new(),
        start_time,
        stop_time,
        backup_label: stopped.backup_label.clone(),
        tablespace_map: stopped.tablespace_map.clone(),
        tablespaces: facts
            .tablespaces
            .iter()
            .map(|(oid, location)| TablespaceEntry { oid: *oid, location: location.clone() })
            .collect(),
        label: options.label.clone(),
        extra,
    };
    info.stop_wal = info.stop_segment().name(segment_size);
    listing_out.vanished.sort();
    Ok(BaseBackupOutcome {
        info,
        files,
        bytes,
        vanished: listing_out.vanished,
        unlogged_files: listing_out.unlogged,
        skipped_links: listing_out.skipped_links,
    })
}

fn parse_lsn(text: &str) -> Result<Lsn> {
    text.parse().map_err(|_| Error::Invalid(format!("the server reported WAL location {text:?}, not an LSN")))
}

/// What the copy found besides the files.
struct Copied {
    vanished: Vec<String>,
    unlogged: u64,
    skipped_links: Vec<String>,
    data_meta: EntryMeta,
}

/// Lists and copies the data directory and every tablespace.
async fn copy_all(
    into: &SourceContext,
    options: &BaseBackupOptions,
    pgdata: &std::path::Path,
    facts: &server::ServerFacts,
) -> Result<(Copied, u64, u64)> {
    let listings = list_all(pgdata, &facts.tablespaces).await?;
    copy_listed(into, listings, options.jobs, options.block_size).await
}

/// Lists the data directory (`data/`) and each tablespace (`tablespaces/OID/`).
async fn list_all(pgdata: &std::path::Path, tablespaces: &[(u32, String)]) -> Result<Vec<walk::Listing>> {
    let mut roots = vec![(pgdata.to_path_buf(), "data".to_owned(), true)];
    for (oid, location) in tablespaces {
        roots.push((location.into(), format!("tablespaces/{oid}"), false));
    }
    tokio::task::spawn_blocking(move || {
        roots.iter().map(|(dir, prefix, pgdata)| walk::list(dir, prefix, *pgdata)).collect::<Result<Vec<_>>>()
    })
    .await
    .map_err(|e| Error::Invalid(format!("listing the data directory failed: {e}")))?
}

/// Copies what the listings hold, `jobs` files at once, `global/pg_control` last.
async fn copy_listed(
    into: &SourceContext,
    listings: Vec<walk::Listing>,
    jobs: usize,
    block_size: usize,
) -> Result<(Copied, u64, u64)> {
    let Some(data_meta) = listings.first().and_then(|l| l.dirs.first()).map(|d| d.meta.clone()) else {
        return Err(Error::Invalid("the data directory listing is empty".into()));
    };
    let mut copied = Copied { vanished: Vec::new(), unlogged: 0, skipped_links: Vec::new(), data_meta };
    let mut files = Vec::new();
    let mut control = None;
    for listing in listings {
        for dir in &listing.dirs {
            into.add_dir(&dir.path, &dir.meta)?;
        }
        copied.vanished.extend(listing.vanished);
        copied.unlogged += listing.unlogged;
        copied.skipped_links.extend(listing.skipped_links);
        for file in listing.files {
            if file.path == "data/global/pg_control" {
                control = Some(file);
            } else {
                files.push(file);
            }
        }
    }
    let Some(control) = control else {
        return Err(Error::Invalid("the data directory has no global/pg_control: it is not a data directory".into()));
    };
    // Largest first, so the last file read is a small one.
    files.sort_by_key(|f| std::cmp::Reverse(f.size));
    into.progress().expect(files.len() as u64 + 1, files.iter().map(|f| f.size).sum::<u64>() + control.size);
    let vanished = Mutex::new(Vec::new());
    let (count, bytes) = (AtomicU64::new(0), AtomicU64::new(0));
    let copy_one = |file: walk::Entry| {
        let (vanished, count, bytes) = (&vanished, &count, &bytes);
        async move {
            let block = exclude::is_relation_file(&file.path).then_some(block_size);
            match copy_file(into, &file, block).await? {
                Some(content) => {
                    count.fetch_add(1, Ordering::Relaxed);
                    bytes.fetch_add(content.size(), Ordering::Relaxed);
                    into.add_file(&file.path, content, &file.meta)?;
                }
                None => vanished.lock().expect("vanished list").push(file.path.clone()),
            }
            into.progress().item_done();
            Ok::<(), Error>(())
        }
    };
    let mut running = futures::stream::iter(files).map(copy_one).buffer_unordered(jobs.max(1));
    while let Some(result) = running.next().await {
        result?;
    }
    drop(running);
    // pg_control last, as pg_basebackup sends it.
    copy_one(control).await?;
    copied.vanished.extend(vanished.into_inner().expect("vanished list"));
    Ok((copied, count.into_inner(), bytes.into_inner()))
}

/// Copies one file; `None` if it vanished before it could be opened.
async fn copy_file(into: &SourceContext, file: &walk::Entry, block: Option<usize>) -> Result<Option<Content>> {
    let handle = match std::fs::File::open(&file.source) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("cannot read {}", file.source.display()), e)),
    };
    Ok(Some(into.store_in_background(handle, block).await?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_repo::{Backend, InitOptions, OpenOptions, Repository, SnapshotOptions};

    /// Lists a directory laid out like a data directory, removes two files
    /// (one dropped table, one whole database directory) before the copy,
    /// and copies: the vanished files are reported, everything else is
    /// stored, relation files in fixed blocks, pg_control too.
    struct VanishingSource {
        dir: std::path::PathBuf,
        copied: Option<(Copied, u64, u64)>,
    }

    #[async_trait::async_trait]
    impl Source for VanishingSource {
        type Error = Error;
        async fn back_up(&mut self, into: &SourceContext) -> Result<()> {
            let listings = list_all(&self.dir, &[]).await?;
            std::fs::remove_file(self.dir.join("base/5/16384")).unwrap();
            std::fs::remove_dir_all(self.dir.join("base/6")).unwrap();
            self.copied = Some(copy_listed(into, listings, 2, DEFAULT_BLOCK_SIZE).await?);
            into.add_snapshot_path("/pg-base/test");
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn files_that_vanish_during_the_copy_are_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in ["global", "base/5", "base/6", "pg_wal/archive_status", "pg_stat_tmp"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::fs::write(d.join("PG_VERSION"), "15\n").unwrap();
        std::fs::write(d.join("postmaster.pid"), "123\n").unwrap();
        std::fs::write(d.join("global/pg_control"), vec![7u8; 8192]).unwrap();
        std::fs::write(d.join("base/5/16384"), vec![1u8; 5 * 8192]).unwrap();
        std::fs::write(d.join("base/5/16390"), vec![2u8; 3 * 8192]).unwrap();
        std::fs::write(d.join("base/5/16400"), vec![3u8; 8192]).unwrap();
        std::fs::write(d.join("base/5/16400_init"), vec![0u8; 8192]).unwrap();
        std::fs::write(d.join("base/6/16500"), vec![4u8; 8192]).unwrap();
        std::fs::write(d.join("pg_wal/000000010000000000000001"), vec![5u8; 8192]).unwrap();
        std::fs::write(d.join("pg_stat_tmp/global.stat"), b"x").unwrap();

        let init = InitOptions { kdf_memory_kib: 8 * 1024, kdf_iterations: 1, ..Default::default() };
        let repo = Repository::init(Backend::memory(), b"pw", init, OpenOptions::default()).await.unwrap();
        let mut session = repo.begin_snapshot(SnapshotOptions::default()).await.unwrap();
        let mut source = VanishingSource { dir: d.to_path_buf(), copied: None };
        session.add_source(&mut source).await.unwrap();
        session.commit().await.unwrap();
        let (copied, files, bytes) = source.copied.unwrap();
        let mut vanished = copied.vanished.clone();
        vanished.sort();
        assert_eq!(vanished, ["data/base/5/16384", "data/base/6/16500"]);
        // PG_VERSION, pg_control, 16390 and the init fork; not the unlogged
        // main fork, WAL, statistics or postmaster.pid.
        assert_eq!((files, bytes), (4, 3 + 8192 + 3 * 8192 + 8192));
        assert_eq!(copied.unlogged, 1);
    }
}
