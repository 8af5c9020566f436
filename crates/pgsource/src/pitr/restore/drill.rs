//! `cairn pg drill --pitr`: a point-in-time restore into a scratch
//! directory, started on a scratch port with its socket there, recovered
//! to the target, checked with the operator's queries, stopped and
//! removed. The report is stored in the repository as a small snapshot
//! (tag `pg-drill`, path `pg-drill/<system identifier>`, metadata
//! `pitr_drill`), so status tools read it from the snapshot list alone.
//!
//! `pg_verifybackup` applies to a base with a `backup_manifest` (one made by
//! pg_basebackup); cairn's own copy writes none, so the drill reads every
//! restored file back against the snapshot instead, and says so.

use std::os::unix::fs::MetadataExt;
use std::time::Instant;

use cairn_repo::{EntryMeta, Repository, Snapshot, SnapshotId, SnapshotOptions, Source, SourceContext};
use serde::{Deserialize, Serialize};

use super::{Cluster, PitrRestoreOptions, RecoveryTarget, TargetAction, TimelineChoice, restore_and_configure};
use crate::drill::CheckOutcome;
use crate::error::{Error, Result};
use crate::schema::Tools;

/// The tag of drill report snapshots.
pub const DRILL_TAG: &str = "pg-drill";
/// The metadata key of a drill report.
pub const DRILL_METADATA_KEY: &str = "pitr_drill";

/// How to drill.
#[derive(Debug, Clone)]
pub struct PitrDrillOptions {
    /// Where recovery stops (default: the end of the archive).
    pub target: RecoveryTarget,
    /// Along which timeline.
    pub timeline: TimelineChoice,
    /// A chosen base backup.
    pub base: Option<SnapshotId>,
    /// Which cluster, when the repository holds several.
    pub system_identifier: Option<u64>,
    /// `restore_command` for the scratch cluster.
    pub restore_command: String,
    /// The scratch cluster's port (`None`: a free one).
    pub port: Option<u16>,
    /// Queries that must return true or at least one row.
    pub checks: Vec<String>,
    /// The role the checks run as (`None`: the data directory owner's name).
    pub user: Option<String>,
    /// The database the checks run in.
    pub dbname: String,
    /// Where the PostgreSQL programs are.
    pub tools: Tools,
    /// Where the scratch directory is made (`None`: /tmp).
    pub scratch_parent: Option<std::path::PathBuf>,
}

/// A drill's report, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PitrDrillReport {
    /// The cluster's system identifier (decimal).
    pub system_identifier: String,
    /// When the drill ran.
    pub time: jiff::Timestamp,
    /// The base backup restored, if the plan chose one.
    pub base: Option<SnapshotId>,
    /// The target, as given.
    pub target: String,
    /// The timeline recovered along.
    pub timeline: Option<u32>,
    /// Seconds to restore the files.
    pub restore_secs: f64,
    /// Seconds from start to the end of recovery.
    pub recovery_secs: f64,
    /// Seconds for everything until the cluster was ready (the recovery time).
    pub total_secs: f64,
    /// What `pg_verifybackup` (or the read-back) said.
    pub verify: String,
    /// The checks.
    pub checks: Vec<CheckOutcome>,
    /// Why the drill failed before its checks, if it did.
    pub error: Option<String>,
    /// Whether the scratch cluster was stopped and removed.
    pub cleaned_up: bool,
    /// Whether everything passed.
    pub ok: bool,
}

impl PitrDrillReport {
    /// The report a snapshot holds, if it is a drill report.
    pub fn of(snapshot: &Snapshot) -> Option<PitrDrillReport> {
        let value = snapshot.extra.get(DRILL_METADATA_KEY)?;
        serde_json::from_value(value.clone()).ok()
    }
}

fn target_text(t: &RecoveryTarget) -> String {
    match t {
        RecoveryTarget::Time(t) => format!("time {t}"),
        RecoveryTarget::Lsn(l) => format!("lsn {l}"),
        RecoveryTarget::Xid(x) => format!("xid {x}"),
        RecoveryTarget::Name(n) => format!("name {n}"),
        RecoveryTarget::Latest => "latest".into(),
    }
}

/// A free TCP port number (the scratch cluster listens only on its socket,
/// named after the port).
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io("cannot find a free port", e))?;
    Ok(listener.local_addr().map_err(|e| Error::io("cannot find a free port", e))?.port())
}

/// Runs a drill. The report says what failed; an `Err` means the drill
/// could not even be set up (no scratch directory).
pub async fn drill(repo: &Repository, options: &PitrDrillOptions) -> Result<PitrDrillReport> {
    let parent = options.scratch_parent.clone().unwrap_or_else(|| "/tmp".into());
    let scratch = tempfile::Builder::new()
        .prefix("cpitr-")
        .tempdir_in(&parent)
        .map_err(|e| Error::io(format!("cannot make a scratch directory in {}", parent.display()), e))?;
    // The server's user must reach the data directory and socket inside.
    std::fs::set_permissions(scratch.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .map_err(|e| Error::io("cannot open up the scratch directory", e))?;
    let port = match options.port {
        Some(p) => p,
        None => free_port()?,
    };
    let pgdata = scratch.path().join("data");
    let mut report = PitrDrillReport {
        system_identifier: options.system_identifier.map(|s| s.to_string()).unwrap_or_default(),
        time: jiff::Timestamp::now(),
        base: None,
        target: target_text(&options.target),
        timeline: None,
        restore_secs: 0.0,
        recovery_secs: 0.0,
        total_secs: 0.0,
        verify: String::new(),
        checks: Vec::new(),
        error: None,
        cleaned_up: false,
        ok: false,
    };
    let started = Instant::now();
    let restore = PitrRestoreOptions {
        target: options.target.clone(),
        exclusive: false,
        timeline: options.timeline,
        base: options.base,
        system_identifier: options.system_identifier,
        target_dir: pgdata.clone(),
        tablespace_map: Vec::new(),
        restore_command: options.restore_command.clone(),
        action: TargetAction::Promote,
        port: Some(port),
        start: false,
        verify: true,
        tools: options.tools.clone(),
    };
    let mut cluster = None;
    let outcome = async {
        let restored = restore_and_configure(
            repo,
            &PitrRestoreOptions {
                // Tablespaces go into the scratch directory, never their
                // original (production) locations.
                tablespace_map: tablespace_map_for(repo, options, scratch.path()).await?,
                ..restore
            },
        )
        .await?;
        report.system_identifier = restored.system_identifier.to_string();
        report.base = Some(restored.base);
        report.timeline = Some(restored.timeline);
        report.restore_secs = restored.restore_secs;
        report.verify = verify_text(&pgdata, &options.tools, restored.pg_version_num).await;
        let c = Cluster::new(&options.tools, (restored.pg_version_num / 10000) as i32, &pgdata, port, scratch.path())
            .await?;
        c.start()?;
        let c = cluster.insert(c);
        let recovering = Instant::now();
        let end = c.wait_for_recovery(TargetAction::Promote, recovering).await?;
        report.recovery_secs = end.seconds;
        report.total_secs = started.elapsed().as_secs_f64();
        let owner = std::fs::metadata(&pgdata).map(|m| m.uid()).unwrap_or(0);
        let user = match &options.user {
            Some(u) => u.clone(),
            None => nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(owner))
                .ok()
                .flatten()
                .map(|u| u.name)
                .unwrap_or_else(|| "postgres".into()),
        };
        let conn = crate::connect::ConnSpec::parse(Some(&c.conninfo(&user, &options.dbname)))?;
        let client = conn.connect().await?;
        for sql in &options.checks {
            report.checks.push(crate::drill::run_check(&client, sql).await);
        }
        Ok::<(), Error>(())
    }
    .await;
    if let Err(e) = outcome {
        report.error = Some(e.to_string());
    }
    let stopped = cluster.as_ref().map(Cluster::stop).unwrap_or(Ok(()));
    report.cleaned_up = stopped.is_ok() && scratch.close().is_ok();
    report.ok = report.error.is_none() && report.checks.iter().all(|c| c.ok);
    Ok(report)
}

/// Every tablespace of the bases mapped into the scratch directory.
async fn tablespace_map_for(
    repo: &Repository,
    options: &PitrDrillOptions,
    scratch: &std::path::Path,
) -> Result<Vec<(u32, std::path::PathBuf)>> {
    let (_, archive) = super::archive(repo, options.system_identifier).await?;
    let mut oids: Vec<u32> = archive.bases.iter().flat_map(|(_, b, _)| b.tablespaces.iter().map(|t| t.oid)).collect();
    oids.sort();
    oids.dedup();
    Ok(oids.into_iter().map(|oid| (oid, scratch.join(format!("tablespace-{oid}")))).collect())
}

/// Runs `pg_verifybackup` where it applies (a `backup_manifest` in the
/// restored directory), else says how the files were checked.
async fn verify_text(pgdata: &std::path::Path, tools: &Tools, version_num: u32) -> String {
    if !pgdata.join("backup_manifest").is_file() {
        return "pg_verifybackup does not apply (no backup_manifest: cairn copied the files itself); every restored \
                file was read back and matched the snapshot"
            .into();
    }
    let tool = match tools.find("pg_verifybackup", (version_num / 10000) as i32).await {
        Ok(t) => t,
        Err(e) => return format!("pg_verifybackup not run: {e}"),
    };
    match tokio::process::Command::new(&tool.path).arg("-n").arg(pgdata).output().await {
        Ok(out) if out.status.success() => "pg_verifybackup: ok".into(),
        Ok(out) => format!("pg_verifybackup FAILED: {}", String::from_utf8_lossy(&out.stderr).trim()),
        Err(e) => format!("pg_verifybackup not run: {e}"),
    }
}

/// A drill report as a source: the file `report.json`.
struct ReportSource<'a>(&'a PitrDrillReport);

#[async_trait::async_trait]
impl Source for ReportSource<'_> {
    type Error = Error;

    async fn back_up(&mut self, into: &SourceContext) -> Result<()> {
        let json = serde_json::to_vec_pretty(self.0).map_err(|e| Error::Invalid(format!("drill report: {e}")))?;
        let content = into.store_bytes(json).await?;
        into.add_file("report.json", content, &EntryMeta::file())?;
        into.add_snapshot_path(format!("{DRILL_TAG}/{}", self.0.system_identifier));
        into.add_tag(DRILL_TAG);
        into.set_metadata(
            DRILL_METADATA_KEY,
            serde_json::to_value(self.0).map_err(|e| Error::Invalid(format!("drill report: {e}")))?,
        );
        Ok(())
    }
}

/// Stores a drill report in the repository; returns its snapshot.
pub async fn store_report(repo: &Repository, report: &PitrDrillReport) -> Result<SnapshotId> {
    let mut session = repo.begin_snapshot(SnapshotOptions { time: Some(report.time), ..Default::default() }).await?;
    session.add_source(&mut ReportSource(report)).await?;
    let committed = session.commit().await?;
    committed.id.ok_or_else(|| Error::Invalid("the drill report was not stored".into()))
}

/// The newest drill report of each cluster, from a snapshot list.
pub fn latest_reports(snapshots: &[(SnapshotId, Snapshot)]) -> Vec<(SnapshotId, PitrDrillReport)> {
    let mut newest: std::collections::BTreeMap<String, (SnapshotId, PitrDrillReport)> = Default::default();
    for (id, snapshot) in snapshots {
        if !snapshot.tags.iter().any(|t| t == DRILL_TAG) {
            continue;
        }
        if let Some(report) = PitrDrillReport::of(snapshot) {
            let newer = newest.get(&report.system_identifier).is_none_or(|(_, r)| r.time < report.time);
            if newer {
                newest.insert(report.system_identifier.clone(), (*id, report));
            }
        }
    }
    newest.into_values().collect()
}
