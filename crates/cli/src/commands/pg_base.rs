//! `cairn pg base-backup`, `cairn pg restore --to-*` and `cairn pg drill
//! --pitr`: the base-backup side of point-in-time recovery (see
//! cairn-pgsource's `pitr` module for how each works). Arguments are
//! parsed here; everything else is the library's.

use std::path::PathBuf;

use anyhow::{Context, Result};
use cairn_pgsource::pitr::{
    self, BaseBackupOptions, BaseBackupSource, PitrDrillOptions, PitrDrillReport, PitrRestoreOptions,
    PitrRestoreReport, RecoveryTarget, TarBaseOptions, TarBaseSource, TargetAction, TimelineChoice,
};
use cairn_pgsource::{ConnSpec, Tools};
use cairn_repo::{SnapshotFilter, SnapshotId, SnapshotOptions};
use clap::Args;
use indicatif::HumanBytes;

use crate::args::{GlobalArgs, split_tags};
use crate::context;
use crate::exit;
use crate::progress::{self, Reporter};

/// `cairn pg base-backup`.
#[derive(Debug, Args)]
pub struct PgBaseBackupArgs {
    /// The server: a URL or key=value pairs (any database; a superuser or a role with pg_backup_start and pg_read_all_settings) [default: PGHOST, PGPORT, PGUSER, ...]
    #[arg(short = 'd', long, value_name = "CONNINFO|URL")]
    pub dbname: Option<String>,
    /// The data directory as this machine sees it [default: the server's data_directory]
    #[arg(short = 'D', long, value_name = "DIR")]
    pub pgdata: Option<PathBuf>,
    /// Start with an immediate checkpoint instead of a spread one
    #[arg(long)]
    pub fast: bool,
    /// The backup label
    #[arg(long, default_value = "cairn base backup", value_name = "TEXT")]
    pub label: String,
    /// Files read at once
    #[arg(short = 'j', long, default_value_t = 4, value_name = "N")]
    pub jobs: usize,
    /// Block size relation files are cut into (a multiple of 8KiB)
    #[arg(long, default_value = "16KiB", value_parser = cairn::units::parse_size, value_name = "SIZE")]
    pub block_size: u64,
    /// Take the backup although the server does not archive WAL
    #[arg(long)]
    pub allow_no_archive: bool,
    /// Add a tag (besides `pg-base`; repeatable, or comma-separated)
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Host name to record [default: this machine's]
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Create the repository if it does not exist
    #[arg(long)]
    pub init: bool,
    /// Read the backup from `pg_basebackup -Ft -D - -X none` (`-`: standard input) instead of the data directory
    #[arg(long, value_name = "FILE|-", conflicts_with_all = ["pgdata", "fast", "allow_no_archive"])]
    pub from_tar: Option<PathBuf>,
}

/// The recovery target of `pg restore` and `pg drill --pitr`.
#[derive(Debug, Args, Clone, Default)]
pub struct PgPitrTargetArgs {
    /// Point-in-time restore up to this time (RFC 3339, or `YYYY-MM-DD HH:MM:SS[.ffffff]+TZ` as PostgreSQL prints now())
    #[arg(long, value_name = "TIME", group = "pitr_target")]
    pub to_time: Option<String>,
    /// Point-in-time restore up to this WAL position (X/Y)
    #[arg(long, value_name = "LSN", group = "pitr_target")]
    pub to_lsn: Option<String>,
    /// Point-in-time restore up to this transaction's commit
    #[arg(long, value_name = "XID", group = "pitr_target")]
    pub to_xid: Option<u64>,
    /// Point-in-time restore up to this restore point (pg_create_restore_point)
    #[arg(long, value_name = "NAME", group = "pitr_target")]
    pub to_name: Option<String>,
    /// Point-in-time restore replaying all archived WAL
    #[arg(long, group = "pitr_target")]
    pub to_latest: bool,
    /// Stop just before the target instead of just after it
    #[arg(long)]
    pub exclusive: bool,
    /// The timeline to recover along: a number or `latest`
    #[arg(long, default_value = "latest", value_name = "TLI")]
    pub timeline: String,
    /// The cluster (its system identifier), when the repository holds several
    #[arg(long, value_name = "ID")]
    pub system_id: Option<u64>,
}

impl PgPitrTargetArgs {
    /// Whether a point-in-time target was given.
    pub fn given(&self) -> bool {
        self.to_time.is_some()
            || self.to_lsn.is_some()
            || self.to_xid.is_some()
            || self.to_name.is_some()
            || self.to_latest
    }

    fn target(&self) -> Result<RecoveryTarget> {
        Ok(if let Some(t) = &self.to_time {
            RecoveryTarget::Time(parse_time(t)?)
        } else if let Some(l) = &self.to_lsn {
            if l.trim().parse::<pitr::Lsn>().is_err() {
                exit::usage!(
                    "--to-lsn {l:?} is not a WAL position: give X/Y in hexadecimal, as pg_current_wal_lsn() prints it"
                );
            }
            RecoveryTarget::Lsn(l.trim().to_owned())
        } else if let Some(x) = self.to_xid {
            RecoveryTarget::Xid(x)
        } else if let Some(n) = &self.to_name {
            RecoveryTarget::Name(n.clone())
        } else {
            RecoveryTarget::Latest
        })
    }

    fn timeline(&self) -> Result<TimelineChoice> {
        if self.timeline == "latest" {
            return Ok(TimelineChoice::Latest);
        }
        match self.timeline.parse::<u32>() {
            Ok(t) if t > 0 => Ok(TimelineChoice::Id(t)),
            _ => exit::usage!("--timeline {:?} is not a timeline: give a number from 1, or latest", self.timeline),
        }
    }
}

/// `pg restore`'s point-in-time options.
#[derive(Debug, Args, Clone, Default)]
pub struct PgPitrRestoreArgs {
    /// Point-in-time restore: the new data directory (missing or empty)
    #[arg(long, value_name = "DIR")]
    pub target_dir: Option<PathBuf>,
    /// Restore tablespace OID into DIR instead of its original location (repeatable)
    #[arg(long = "tablespace-map", value_name = "OID=DIR")]
    pub tablespace_map: Vec<String>,
    /// What recovery does at the target: promote, pause or shutdown
    #[arg(long, default_value = "promote", value_name = "ACTION")]
    pub action: String,
    /// The restored cluster's port (written to its settings)
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// Start the restored cluster (its socket in the data directory) and wait for the end of recovery
    #[arg(long, requires = "port")]
    pub start: bool,
}

/// `pg drill --pitr`'s options.
#[derive(Debug, Args, Clone, Default)]
pub struct PgPitrDrillArgs {
    /// Drill a point-in-time restore: restore a base backup into a scratch directory, recover (to --to-* or the end of the archive), run the checks, remove it
    #[arg(long)]
    pub pitr: bool,
    /// --pitr: the scratch cluster's port [default: a free one]
    #[arg(long, value_name = "PORT", requires = "pitr")]
    pub port: Option<u16>,
    /// --pitr: the role the checks run as [default: the data directory owner's name]
    #[arg(long, value_name = "ROLE", requires = "pitr")]
    pub user: Option<String>,
    /// --pitr: do not store the report in the repository
    #[arg(long, requires = "pitr")]
    pub no_store: bool,
}

/// `--to-time`: RFC 3339, or PostgreSQL's `2026-12-06 01:40:00.123456+00`.
fn parse_time(text: &str) -> Result<jiff::Timestamp> {
    let t = text.trim();
    if let Ok(ts) = t.parse::<jiff::Timestamp>() {
        return Ok(ts);
    }
    // PostgreSQL prints the offset as +HH or +HH:MM.
    let with_minutes = match t.rfind(['+', '-']) {
        Some(i) if i > 10 && t[i + 1..].len() == 2 => format!("{t}:00"),
        _ => t.to_owned(),
    };
    match with_minutes.parse::<jiff::Timestamp>() {
        Ok(ts) => Ok(ts),
        Err(_) => exit::usage!(
            "--to-time {text:?} is not a time with a zone: give e.g. 2026-12-06T01:40:00Z or \
             '2026-12-06 01:40:00.123+00' (as SELECT now() prints it)"
        ),
    }
}

fn conn_spec(text: Option<&str>) -> Result<ConnSpec> {
    match ConnSpec::parse(text) {
        Ok(spec) => Ok(spec),
        Err(e @ cairn_pgsource::Error::BadConnString { .. }) => exit::usage!("{e}"),
        Err(e) => Err(e.into()),
    }
}

pub async fn base_backup(global: &GlobalArgs, args: PgBaseBackupArgs) -> Result<u8> {
    let conn = conn_spec(args.dbname.as_deref())?;
    let options = BaseBackupOptions {
        conn,
        pgdata: args.pgdata.clone(),
        fast: args.fast,
        label: args.label.clone(),
        jobs: args.jobs.max(1),
        block_size: usize::try_from(args.block_size).unwrap_or(usize::MAX),
        allow_no_archive: args.allow_no_archive,
    };
    let reporter = Reporter::new(global, "backed up");
    let repo = context::open_or_init(global, args.init, &reporter).await?;
    let snapshot_options =
        SnapshotOptions { hostname: args.host.clone(), tags: split_tags(&args.tags), ..Default::default() };
    let mut session = repo.begin_snapshot(snapshot_options).await?;
    session.set_events(reporter.clone());
    let ticker = progress::tick_session(reporter.clone(), session.progress());
    let failed = "the base backup failed; no snapshot was written";
    let outcome = match &args.from_tar {
        None => {
            let mut source = BaseBackupSource::new(options);
            session.add_source(&mut source).await.context(failed)?;
            source.outcome().cloned()
        }
        Some(path) => {
            let tar_options = TarBaseOptions { block_size: options.block_size, label: options.label.clone() };
            let reader: Box<dyn std::io::Read + Send> = if path.as_os_str() == "-" {
                Box::new(std::io::stdin())
            } else {
                Box::new(std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?)
            };
            let mut source = TarBaseSource::new(std::io::BufReader::with_capacity(1 << 20, reader), tar_options);
            session.add_source(&mut source).await.context(failed)?;
            source.outcome().cloned()
        }
    };
    let committed = session.commit().await?;
    drop(ticker);
    reporter.finish();
    let Some(outcome) = outcome else { anyhow::bail!("the base backup recorded nothing") };
    let info = &outcome.info;
    let json = serde_json::json!({
        "system_identifier": info.system_identifier.to_string(),
        "timeline": info.timeline.get(),
        "start_lsn": info.start_lsn.to_string(),
        "stop_lsn": info.stop_lsn.to_string(),
        "start_wal": info.start_wal,
        "stop_wal": info.stop_wal,
        "files": outcome.files,
        "bytes": outcome.bytes,
        "vanished": outcome.vanished,
        "unlogged_files": outcome.unlogged_files,
        "tablespaces": info.tablespaces.len(),
    });
    let mut lines = vec![format!(
        "base backup of cluster {} (timeline {}): WAL {} to {} ({} to {}), {} files, {}",
        info.system_identifier,
        info.timeline.get(),
        info.start_lsn,
        info.stop_lsn,
        info.start_wal,
        info.stop_wal,
        outcome.files,
        HumanBytes(outcome.bytes)
    )];
    if !info.tablespaces.is_empty() {
        lines.push(format!("{} tablespace(s)", info.tablespaces.len()));
    }
    if !outcome.vanished.is_empty() {
        lines.push(format!(
            "{} file(s) vanished during the copy (dropped; WAL replay removes them too)",
            outcome.vanished.len()
        ));
    }
    for link in &outcome.skipped_links {
        lines.push(format!("symbolic link left out: {link}"));
    }
    let details = crate::summary::Details { json: json.as_object().cloned().unwrap_or_default(), lines };
    crate::summary::print(global, &committed, details)?;
    Ok(0)
}

/// The global options that let `cairn pg wal-get` reach the same
/// repository unattended (PostgreSQL runs it, with no terminal).
fn repository_args(global: &GlobalArgs) -> Result<Vec<String>> {
    let absolute = |p: &std::path::Path| -> String {
        std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()).display().to_string()
    };
    let mut args = Vec::new();
    let location = context::location(global)?;
    let local = !location.contains(':') || location.starts_with('/');
    args.push("-r".to_owned());
    args.push(if local { absolute(std::path::Path::new(&location)) } else { location });
    if let Some(file) = &global.password_file {
        args.extend(["--password-file".to_owned(), absolute(file)]);
    } else if let Some(command) = &global.password_command {
        args.extend(["--password-command".to_owned(), command.clone()]);
    } else if context::uses_default(global) {
        args.extend(["--password-file".to_owned(), absolute(&context::default_repository()?.password_file)]);
    } else {
        exit::usage!(
            "PostgreSQL runs restore_command unattended, so the repository password must come from a file or a \
             command: give --password-file or --password-command (CAIRN_PASSWORD is not passed on)"
        );
    }
    if let Some(dir) = &global.cache_dir {
        args.extend(["--cache-dir".to_owned(), absolute(dir)]);
    }
    if global.no_cache {
        args.push("--no-cache".to_owned());
    }
    for (flag, value) in [
        ("--s3-endpoint", global.s3_endpoint.clone()),
        ("--s3-region", global.s3_region.clone()),
        ("--s3-path-style", global.s3_path_style.map(|b| b.to_string())),
        ("--sftp-command", global.sftp_command.clone()),
        ("--rclone-program", global.rclone_program.clone()),
        ("--rclone-args", global.rclone_args.clone()),
    ] {
        if let Some(value) = value {
            args.extend([flag.to_owned(), value]);
        }
    }
    Ok(args)
}

/// `restore_command` for this repository: this program's absolute path,
/// the repository options, `pg wal-get %f %p`.
fn restore_command(global: &GlobalArgs) -> Result<String> {
    let program = std::env::current_exe().context("cannot find this program's path for restore_command")?;
    Ok(pitr::restore_command(&program.display().to_string(), &repository_args(global)?))
}

/// The base named on the command line (`latest`: none, the plan chooses).
async fn chosen_base(global: &GlobalArgs, arg: &str) -> Result<Option<SnapshotId>> {
    if arg == "latest" {
        return Ok(None);
    }
    let repo = context::open(global).await?;
    let filter = SnapshotFilter::default().requiring_tag(pitr::BASE_TAG);
    let (id, _) = repo.find_snapshot(arg, &filter).await?;
    Ok(Some(id))
}

/// `cairn pg restore [BASE] --to-…`: a point-in-time restore.
pub async fn restore(
    global: &GlobalArgs,
    snapshot: &str,
    target: &PgPitrTargetArgs,
    args: &PgPitrRestoreArgs,
    tools: Tools,
) -> Result<u8> {
    let Some(target_dir) = args.target_dir.clone() else {
        exit::usage!("a point-in-time restore needs --target-dir DIR: the new data directory");
    };
    let action = match args.action.as_str() {
        "promote" => TargetAction::Promote,
        "pause" => TargetAction::Pause,
        "shutdown" => TargetAction::Shutdown,
        other => exit::usage!("--action {other:?}: give promote, pause or shutdown"),
    };
    let mut tablespace_map = Vec::new();
    for m in &args.tablespace_map {
        let Some((oid, dir)) = m.split_once('=').and_then(|(o, d)| Some((o.parse::<u32>().ok()?, d))) else {
            exit::usage!("--tablespace-map {m:?}: give OID=DIR, e.g. 16390=/srv/restore/ts1");
        };
        tablespace_map.push((oid, std::path::absolute(dir).unwrap_or_else(|_| dir.into())));
    }
    let options = PitrRestoreOptions {
        target: target.target()?,
        exclusive: target.exclusive,
        timeline: target.timeline()?,
        base: chosen_base(global, snapshot).await?,
        system_identifier: target.system_id,
        target_dir: std::path::absolute(&target_dir).unwrap_or(target_dir),
        tablespace_map,
        restore_command: restore_command(global)?,
        action,
        port: args.port,
        start: args.start,
        verify: false,
        tools,
    };
    let repo = context::open(global).await?;
    let report = pitr::restore_to_target(&repo, &options).await?;
    if global.json {
        let mut value = serde_json::to_value(&report)?;
        value["message_type"] = "summary".into();
        context::print_json_line(&value)?;
    } else if !global.quiet {
        print_restore(&report, options.start);
    }
    Ok(0)
}

fn print_restore(report: &PitrRestoreReport, started: bool) {
    println!(
        "restored base backup {} (consistent at {}) into {}: {} files, {} in {:.2}s",
        report.base.short(),
        report.base_stop_time,
        report.target_dir.display(),
        report.files,
        HumanBytes(report.bytes),
        report.restore_secs
    );
    println!(
        "recovery along timeline {}; recoverable window from this base: {} to {}",
        report.timeline, report.window.0, report.window.1
    );
    for note in &report.notes {
        println!("note: {note}");
    }
    match &report.recovery {
        Some(end) => println!("recovery ended after {:.2}s: cluster {}", end.seconds, end.state),
        None if !started => println!(
            "start it with: pg_ctl -D {} start (as the data directory's owner); recovery.signal is in place",
            report.target_dir.display()
        ),
        None => {}
    }
}

/// `cairn pg drill --pitr`.
pub async fn drill(
    global: &GlobalArgs,
    snapshot: &str,
    target: &PgPitrTargetArgs,
    args: &PgPitrDrillArgs,
    checks: &[String],
    tools: Tools,
) -> Result<u8> {
    let options = PitrDrillOptions {
        target: target.target()?,
        timeline: target.timeline()?,
        base: chosen_base(global, snapshot).await?,
        system_identifier: target.system_id,
        restore_command: restore_command(global)?,
        port: args.port,
        checks: checks.to_vec(),
        user: args.user.clone(),
        dbname: "postgres".into(),
        tools,
        scratch_parent: None,
    };
    let repo = context::open(global).await?;
    let report = pitr::pitr_drill(&repo, &options).await?;
    let stored = if args.no_store { None } else { Some(pitr::store_report(&repo, &report).await?) };
    if global.json {
        let mut value = serde_json::to_value(&report)?;
        value["report_snapshot"] = serde_json::to_value(stored)?;
        context::print_json(&value)?;
    } else {
        print_drill(&report, stored);
    }
    Ok(if report.ok { 0 } else { exit::FAILURE })
}

fn print_drill(report: &PitrDrillReport, stored: Option<SnapshotId>) {
    let base = report.base.map(|b| b.short()).unwrap_or_else(|| "none".into());
    println!("point-in-time drill of cluster {} to {} from base {base}", report.system_identifier, report.target);
    match &report.error {
        Some(e) => println!("restore/recovery: FAILED: {e}"),
        None => println!(
            "restore {:.2}s + recovery {:.2}s: ready after {:.2}s (timeline {})",
            report.restore_secs,
            report.recovery_secs,
            report.total_secs,
            report.timeline.unwrap_or_default()
        ),
    }
    if !report.verify.is_empty() {
        println!("{}", report.verify);
    }
    for c in &report.checks {
        println!("check {}: {} ({})", if c.ok { "ok" } else { "FAILED" }, c.sql, c.detail);
    }
    println!("scratch cluster {}", if report.cleaned_up { "stopped and removed" } else { "NOT removed" });
    if let Some(id) = stored {
        println!("report stored as snapshot {} (tag {})", id.short(), pitr::DRILL_TAG);
    }
    println!("drill {}", if report.ok { "passed" } else { "FAILED" });
}
