//! `cairn pg restore --to-time | --to-lsn | --to-xid | --to-name |
//! --to-latest`: a base backup restored into a directory, set up to
//! recover to the target from the archived WAL, and optionally started.
//!
//! ```text
//! snapshot list ─► bases + WAL batches (metadata only) + .history files
//!     └─► plan (pure): base, timeline, window; refuses targets before the base's end or past the archive
//! restore data/ ─► TARGET, tablespaces/OID/ ─► their locations (or --tablespace-map)
//! TARGET/postgresql.auto.conf += restore_command 'cairn … pg wal-get %f %p', recovery_target_*,
//!                                recovery_target_action, recovery_target_timeline, archive_mode = off
//! TARGET/recovery.signal ─► (optional) pg_ctl start, wait for the end of recovery
//! ```

pub mod drill;
mod plan;
mod server;
mod settings;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cairn_repo::{Node, NodeKind, Repository, RestoreEvents, Snapshot, SnapshotId, TreeLoader};

use crate::error::{Error, Result};
use crate::pitr::{
    BASE_DATA_DIR, BASE_TABLESPACES_DIR, BaseBackupInfo, PitrInfo, SegmentSize, WAL_DIR, WalFile, parse_history,
};
use crate::schema::Tools;

pub use plan::{ArchivedSegment, BaseCandidate, History, Plan, PlanError, PlanInput, TimelineChoice, plan};
pub use server::{Cluster, RecoveryEnd};
pub use settings::{RecoverySettings, RecoveryTarget, TargetAction, restore_command};

/// How to restore.
#[derive(Debug, Clone)]
pub struct PitrRestoreOptions {
    /// Where recovery stops.
    pub target: RecoveryTarget,
    /// Stop just before the target (`recovery_target_inclusive = off`).
    pub exclusive: bool,
    /// Along which timeline.
    pub timeline: TimelineChoice,
    /// A base backup chosen by the user (else the plan chooses).
    pub base: Option<SnapshotId>,
    /// Which cluster, when the repository holds several.
    pub system_identifier: Option<u64>,
    /// The new data directory (missing or empty).
    pub target_dir: PathBuf,
    /// Tablespaces restored elsewhere than their original location.
    pub tablespace_map: Vec<(u32, PathBuf)>,
    /// `restore_command` (see [`restore_command`]).
    pub restore_command: String,
    /// What recovery does at the target.
    pub action: TargetAction,
    /// The restored cluster's port (written to its settings).
    pub port: Option<u16>,
    /// Start the cluster and wait for the end of recovery (needs `port`).
    pub start: bool,
    /// Read every restored file back and compare it with the snapshot.
    pub verify: bool,
    /// Where the PostgreSQL programs are.
    pub tools: Tools,
}

/// What a restore did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PitrRestoreReport {
    /// The cluster's system identifier.
    pub system_identifier: u64,
    /// `server_version_num` of the base.
    pub pg_version_num: u32,
    /// The base backup restored.
    pub base: SnapshotId,
    /// When that base was consistent.
    pub base_stop_time: jiff::Timestamp,
    /// The timeline recovered along.
    pub timeline: u32,
    /// The recoverable window from that base (time).
    pub window: (jiff::Timestamp, jiff::Timestamp),
    /// Files restored.
    pub files: u64,
    /// Bytes restored.
    pub bytes: u64,
    /// Seconds to restore the files.
    pub restore_secs: f64,
    /// How recovery ended, when the cluster was started.
    pub recovery: Option<RecoveryEnd>,
    /// The data directory.
    pub target_dir: PathBuf,
    /// Notes (targets that could not be checked in advance).
    pub notes: Vec<String>,
}

/// One cluster's archive as the snapshot list shows it.
#[derive(Debug, Default)]
pub struct Archive {
    /// Base backups: snapshot, metadata, snapshot.
    pub bases: Vec<(SnapshotId, BaseBackupInfo, Snapshot)>,
    /// Archived files: name → the batch snapshot holding it, and a
    /// history file's text when the batch's metadata carries it.
    pub files: BTreeMap<String, (SnapshotId, Snapshot, Option<String>)>,
}

/// The system identifiers with PITR snapshots in the list.
fn clusters(snapshots: &[(SnapshotId, Snapshot)]) -> Vec<u64> {
    let mut ids: Vec<u64> = snapshots
        .iter()
        .filter_map(|(_, s)| PitrInfo::of(s).and_then(|r| r.ok()))
        .map(|i| i.system_identifier())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Reads one cluster's bases and archived files from the snapshot list
/// (no tree reads). `system_identifier`: which cluster, needed only when
/// the repository holds several.
pub async fn archive(repo: &Repository, system_identifier: Option<u64>) -> Result<(u64, Archive)> {
    let snapshots = repo.list_snapshots().await?;
    let sysid = match (system_identifier, clusters(&snapshots).as_slice()) {
        (Some(id), _) => id,
        (None, [only]) => *only,
        (None, []) => {
            return Err(Error::Invalid(
                "the repository holds no base backup or archived WAL: set archive_command = 'cairn pg wal-push %p' \
                 and take a base backup with `cairn pg base-backup`"
                    .into(),
            ));
        }
        (None, many) => {
            return Err(Error::Invalid(format!(
                "the repository holds several clusters (system identifiers {}): name one",
                many.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
            )));
        }
    };
    let mut archive = Archive::default();
    for (id, snapshot) in snapshots {
        let info = match PitrInfo::of(&snapshot) {
            None => continue,
            Some(Err(e)) => {
                tracing::warn!("snapshot {} has unreadable PITR metadata, left out: {e}", id.short());
                continue;
            }
            Some(Ok(info)) if info.system_identifier() != sysid => continue,
            Some(Ok(info)) => info,
        };
        match info {
            PitrInfo::Base(base) => archive.bases.push((id, base, snapshot)),
            PitrInfo::Wal(batch) => {
                for file in &batch.files {
                    // The first batch holding a name keeps it (a later push of
                    // the same name had the same content, or was refused).
                    let older = archive.files.get(&file.name).is_some_and(|(_, s, _)| s.time <= snapshot.time);
                    if !older {
                        archive.files.insert(file.name.clone(), (id, snapshot.clone(), file.history.clone()));
                    }
                }
            }
        }
    }
    archive.bases.sort_by_key(|(_, b, _)| b.stop_lsn);
    Ok((sysid, archive))
}

/// A tree loader over the repository's current index.
pub async fn loader(repo: &Repository) -> Result<TreeLoader> {
    Ok(TreeLoader::new(repo, Arc::new(repo.load_index().await?), tokio::runtime::Handle::current()))
}

/// The entry `name` of a snapshot's root tree (blocking).
fn top_entry(loader: &TreeLoader, snapshot: &Snapshot, name: &str) -> Result<Option<Node>> {
    let tree = loader.load(&snapshot.tree)?;
    Ok(tree.get(name.as_bytes()).cloned())
}

/// Reads an archived file's content from its batch (blocking).
fn read_archived(loader: &TreeLoader, snapshot: &Snapshot, name: &str) -> Result<Vec<u8>> {
    use std::io::Read;
    let missing = || Error::Manifest(format!("the WAL batch that lists {name} does not hold it"));
    let dir = top_entry(loader, snapshot, WAL_DIR)?.ok_or_else(missing)?;
    let subtree = dir.subtree.filter(|_| dir.kind == NodeKind::Dir).ok_or_else(missing)?;
    let node = loader.load(&subtree)?.get(name.as_bytes()).cloned().ok_or_else(missing)?;
    let mut out = Vec::new();
    loader
        .content(&node)
        .take(1 << 20)
        .read_to_end(&mut out)
        .map_err(|e| Error::io(format!("reading archived {name}"), e))?;
    Ok(out)
}

/// The plan's view of an archive: bases, segments and histories (history
/// files are read from their batches).
pub async fn plan_input_parts(
    loader: &TreeLoader,
    archive: &Archive,
) -> Result<(Vec<BaseCandidate>, Vec<ArchivedSegment>, BTreeMap<u32, History>, u64)> {
    let size = archive.bases.first().map(|(_, b, _)| b.wal_segment_size).unwrap_or(SegmentSize::DEFAULT);
    let bases = archive
        .bases
        .iter()
        .map(|(id, b, _)| BaseCandidate {
            id: *id,
            timeline: b.timeline.get(),
            start_lsn: b.start_lsn.0,
            stop_lsn: b.stop_lsn.0,
            stop_time: b.stop_time,
        })
        .collect();
    let mut segments = Vec::new();
    let mut history_files = Vec::new();
    for (name, (_, snapshot, text)) in &archive.files {
        match WalFile::parse(name, size) {
            Ok(WalFile::Segment(s)) => {
                segments.push(ArchivedSegment { timeline: s.timeline.get(), segno: s.segno, pushed: snapshot.time })
            }
            Ok(WalFile::History(t)) => history_files.push((t.get(), name.clone(), snapshot.clone(), text.clone())),
            _ => {}
        }
    }
    let loader = loader.clone();
    let histories = tokio::task::spawn_blocking(move || {
        let mut out = BTreeMap::new();
        for (tli, name, snapshot, text) in history_files {
            // The batch's metadata carries the text; older batches only the file.
            let text = match text {
                Some(text) => text,
                None => String::from_utf8_lossy(&read_archived(&loader, &snapshot, &name)?).into_owned(),
            };
            let entries = parse_history(&text)
                .map_err(|e| Error::Manifest(format!("timeline history file {name} is not valid: {e}")))?;
            if entries.iter().any(|e| e.timeline.get() >= tli) {
                return Err(Error::Manifest(format!(
                    "timeline history file {name} names a timeline at or after {tli} as an ancestor"
                )));
            }
            out.insert(tli, entries.iter().map(|e| (e.timeline.get(), e.switch_lsn.0)).collect::<History>());
        }
        Ok::<_, Error>(out)
    })
    .await
    .map_err(|e| Error::Invalid(format!("reading timeline histories failed: {e}")))??;
    Ok((bases, segments, histories, size.bytes()))
}

/// Collects a restore's warnings.
#[derive(Default)]
struct Warnings(Mutex<Vec<String>>);

impl RestoreEvents for Warnings {
    fn warning(&self, path: &Path, message: &str) {
        self.0.lock().expect("warnings").push(format!("{}: {message}", path.display()));
    }
}

/// Refuses a directory that exists and is not empty.
fn must_be_empty(dir: &Path, what: &str, fix: &str) -> Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::Invalid(format!("{what} {} is not empty: {fix}", dir.display())));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("cannot read {}", dir.display()), e)),
    }
}

/// Restores a base backup and sets it up to recover to `options.target`;
/// starts it and waits for the end of recovery with `options.start`.
pub async fn restore_to_target(repo: &Repository, options: &PitrRestoreOptions) -> Result<PitrRestoreReport> {
    if options.start && options.port.is_none() {
        return Err(Error::Invalid("starting the restored cluster needs a port for it".into()));
    }
    let mut report = restore_and_configure(repo, options).await?;
    if options.start {
        let cluster = Cluster::new(
            &options.tools,
            (report.pg_version_num / 10000) as i32,
            &options.target_dir,
            options.port.unwrap_or_default(),
            &options.target_dir,
        )
        .await?;
        cluster.start()?;
        report.recovery = Some(cluster.wait_for_recovery(options.action, Instant::now()).await?);
    }
    Ok(report)
}

/// Restores the files and writes the recovery settings; does not start
/// the cluster (whatever `options.start` says).
pub async fn restore_and_configure(repo: &Repository, options: &PitrRestoreOptions) -> Result<PitrRestoreReport> {
    let (sysid, archive) = archive(repo, options.system_identifier).await?;
    let loader = loader(repo).await?;
    let (bases, segments, histories, size) = plan_input_parts(&loader, &archive).await?;
    let chosen = plan(&PlanInput {
        bases: &bases,
        segments: &segments,
        histories: &histories,
        segment_size: size,
        target: &options.target,
        timeline: options.timeline,
        base: options.base,
    })
    .map_err(|e| Error::Invalid(e.to_string()))?;
    let Some((base_id, info, snapshot)) = archive.bases.iter().find(|(id, _, _)| *id == chosen.base).cloned() else {
        return Err(Error::Invalid("the planned base backup is not in the listing".into()));
    };

    // Where everything goes, checked before anything is written.
    must_be_empty(&options.target_dir, "the target directory", "give a new or empty directory")?;
    let mut locations = Vec::new();
    for ts in &info.tablespaces {
        let to = options
            .tablespace_map
            .iter()
            .find(|(oid, _)| *oid == ts.oid)
            .map(|(_, dir)| dir.clone())
            .unwrap_or_else(|| PathBuf::from(&ts.location));
        must_be_empty(
            &to,
            &format!("the location of tablespace {}", ts.oid),
            "it may be the source cluster's own; restore it elsewhere with a tablespace mapping OID=DIR",
        )?;
        locations.push((ts.oid, to, PathBuf::from(&ts.location)));
    }

    let started = Instant::now();
    let (files, bytes) = {
        let (loader, snapshot, target, locations, verify) =
            (loader.clone(), snapshot.clone(), options.target_dir.clone(), locations.clone(), options.verify);
        tokio::task::spawn_blocking(move || restore_files(&loader, &snapshot, &target, &locations, verify))
            .await
            .map_err(|e| Error::Invalid(format!("the restore thread failed: {e}")))??
    };
    configure(&options.target_dir, &info, &locations, options, chosen.timeline)?;
    let restore_secs = started.elapsed().as_secs_f64();

    Ok(PitrRestoreReport {
        system_identifier: sysid,
        pg_version_num: info.pg_version_num,
        base: base_id,
        base_stop_time: info.stop_time,
        timeline: chosen.timeline,
        window: chosen.window,
        files,
        bytes,
        restore_secs,
        recovery: None,
        target_dir: options.target_dir.clone(),
        notes: chosen.notes,
    })
}

/// Restores `data/` into `target` and each tablespace into its location
/// (blocking). Returns files and bytes.
fn restore_files(
    loader: &TreeLoader,
    snapshot: &Snapshot,
    target: &Path,
    locations: &[(u32, PathBuf, PathBuf)],
    verify: bool,
) -> Result<(u64, u64)> {
    let options = cairn_repo::RestoreOptions { numeric_owner: true, skip_devices: true, verify, ..Default::default() };
    let progress = cairn_repo::RestoreProgress::default();
    let warnings = Warnings::default();
    let data = top_entry(loader, snapshot, BASE_DATA_DIR)?
        .ok_or_else(|| Error::Manifest(format!("the base backup has no {BASE_DATA_DIR}/ directory")))?;
    let mut outcome = cairn_repo::restore(loader, &data, target, &options, &progress, &warnings)?;
    let mut files = outcome.files;
    let mut bytes = outcome.bytes;
    if !locations.is_empty() {
        let dir = top_entry(loader, snapshot, BASE_TABLESPACES_DIR)?
            .ok_or_else(|| Error::Manifest("the base backup lists tablespaces but holds none".into()))?;
        let tree = loader.load(&dir.subtree.unwrap_or_default())?;
        for (oid, to, _) in locations {
            let node = tree
                .get(oid.to_string().as_bytes())
                .cloned()
                .ok_or_else(|| Error::Manifest(format!("the base backup does not hold tablespace {oid}")))?;
            outcome = cairn_repo::restore(loader, &node, to, &options, &progress, &warnings)?;
            files += outcome.files;
            bytes += outcome.bytes;
        }
    }
    let warnings = warnings.0.into_inner().expect("warnings");
    if !warnings.is_empty() {
        return Err(Error::Mismatch(format!(
            "{} entries could not be restored, so the cluster would be incomplete: {}",
            warnings.len(),
            warnings.join("; ")
        )));
    }
    Ok((files, bytes))
}

/// Writes the recovery settings, `recovery.signal` and a remapped
/// `tablespace_map`; removes `standby.signal` (a standby's base).
fn configure(
    target: &Path,
    info: &BaseBackupInfo,
    locations: &[(u32, PathBuf, PathBuf)],
    options: &PitrRestoreOptions,
    timeline: u32,
) -> Result<()> {
    let meta = std::fs::metadata(target).map_err(|e| Error::io(format!("cannot read {}", target.display()), e))?;
    let owner = (meta.uid(), meta.gid());
    let write = |name: &str, text: &str, append: bool| -> Result<()> {
        use std::io::Write;
        let path = target.join(name);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(append)
            .write(true)
            .truncate(!append)
            .open(&path)
            .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
        file.write_all(text.as_bytes()).map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
        file.sync_all().map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
        // The server's user must own what it reads and rewrites.
        let _ = std::os::unix::fs::chown(&path, Some(owner.0), Some(owner.1));
        Ok(())
    };
    if locations.iter().any(|(_, to, from)| to != from) {
        let map: String = locations.iter().map(|(oid, to, _)| format!("{oid} {}\n", to.display())).collect();
        write("tablespace_map", &map, false)?;
    } else if info.tablespace_map.is_none() {
        let _ = std::fs::remove_file(target.join("tablespace_map"));
    }
    match std::fs::remove_file(target.join("standby.signal")) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("cannot remove standby.signal", e)),
    }
    let settings = RecoverySettings {
        restore_command: options.restore_command.clone(),
        target: options.target.clone(),
        exclusive: options.exclusive,
        timeline: Some(timeline),
        action: options.action,
        port: options.port,
    };
    write("postgresql.auto.conf", &settings::render(&settings), true)?;
    write("recovery.signal", "", false)?;
    Ok(())
}
