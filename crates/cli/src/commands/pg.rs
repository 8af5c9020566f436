//! `cairn pg backup | restore | drill`: PostgreSQL databases (see the
//! cairn-pgsource crate for how each works).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result};
use cairn_pgsource::cluster::{ClusterBackupOptions, ClusterRestoreOptions, ClusterSource, Opened, OpenedCluster};
use cairn_pgsource::drill::DrillReport;
use cairn_pgsource::manifest::{CLUSTER_PATH, PATH_PREFIX, TAG};
use cairn_pgsource::{BackupOptions, ConnSpec, DrillOptions, RestoreOptions, RestoreReport, Tools};
use cairn_repo::{CommittedSnapshot, Snapshot, SnapshotId, SnapshotOptions, Source};
use indicatif::HumanBytes;

use crate::args::{
    FilterArgs, GlobalArgs, PgBackupArgs, PgCommand, PgConnArgs, PgDrillArgs, PgRestoreArgs, split_tags,
};
use crate::context;
use crate::exit;
use crate::progress::{self, Reporter, Status};
use crate::select;
use crate::summary;

pub async fn run(global: &GlobalArgs, command: PgCommand) -> Result<u8> {
    match command {
        PgCommand::Backup(args) => backup(global, args).await,
        PgCommand::Restore(args) => restore(global, args).await,
        PgCommand::Drill(args) => drill(global, args).await,
        PgCommand::BaseBackup(args) => super::pg_base::base_backup(global, args).await,
        PgCommand::WalPush(args) => crate::commands::pg_wal::wal_push(global, args).await,
        PgCommand::WalGet(args) => crate::commands::pg_wal::wal_get(global, args).await,
        PgCommand::PitrStatus(args) => crate::commands::pg_wal::pitr_status(global, args).await,
        PgCommand::Check(args) => crate::commands::pg_wal::check(global, args).await,
        PgCommand::Forget(args) => crate::commands::pg_wal::forget(global, args).await,
    }
}

fn tools(args: &PgConnArgs) -> Tools {
    Tools { bindir: args.pg_bindir.clone() }
}

async fn backup(global: &GlobalArgs, args: PgBackupArgs) -> Result<u8> {
    if args.all_databases {
        return backup_all(global, args).await;
    }
    // The connection string and patterns are checked before the repository is touched.
    let conn = conn_spec(args.dbname.as_deref())?;
    let options = BackupOptions {
        conn,
        jobs: args.conn.jobs.max(1),
        selection: cairn_pgsource::manifest::SelectionEntry {
            tables: args.tables.clone(),
            exclude_tables: args.exclude_tables.clone(),
            exclude_table_data: args.exclude_table_data.clone(),
        },
        tools: tools(&args.conn),
        row_order: row_order(&args),
    };
    for patterns in [&args.tables, &args.exclude_tables, &args.exclude_table_data] {
        if let Err(e) = cairn_pgsource::pattern::PatternSet::parse(patterns) {
            crate::exit::usage!("{e}");
        }
    }
    let mut source = cairn_pgsource::DatabaseSource::new(options);
    let committed = backup_source(global, &args, &mut source).await?;
    let Some(m) = source.manifest() else { anyhow::bail!("the backup stored no manifest") };
    let json = serde_json::json!({
        "database": m.database,
        "server_version": m.server_version,
        "snapshot_lsn": m.snapshot_lsn,
        "tables": m.tables.len(),
        "rows": m.total_rows(),
        "sequences": m.sequences.len(),
        "large_objects": m.large_objects.len(),
    });
    let line = format!(
        "database {} (PostgreSQL {}): {} tables, {} rows, {} sequences, {} large objects",
        m.database,
        m.server_version,
        m.tables.len(),
        m.total_rows(),
        m.sequences.len(),
        m.large_objects.len()
    );
    let details = summary::Details { json: json.as_object().cloned().unwrap_or_default(), lines: vec![line] };
    summary::print(global, &committed, details)?;
    Ok(0)
}

/// What both kinds of `pg backup` share: a snapshot session with one
/// PostgreSQL source, its progress line, and the commit.
async fn backup_source<S>(global: &GlobalArgs, args: &PgBackupArgs, source: &mut S) -> Result<CommittedSnapshot>
where
    S: Source<Error = cairn_pgsource::Error>,
{
    let reporter = Reporter::new(global, "backed up");
    let repo = context::open_or_init(global, args.init, &reporter).await?;
    let options = SnapshotOptions { hostname: args.host.clone(), tags: split_tags(&args.tags), ..Default::default() };
    let mut session = repo.begin_snapshot(options).await?;
    session.set_events(reporter.clone());
    let ticker = progress::tick_session(reporter.clone(), session.progress());
    session.add_source(source).await.context("the backup failed; no snapshot was written")?;
    let committed = session.commit().await?;
    drop(ticker);
    reporter.finish();
    Ok(committed)
}

/// `pg backup --all-databases`: one snapshot of path `/pg` with the
/// globals and every database.
fn row_order(args: &PgBackupArgs) -> cairn_pgsource::RowOrder {
    match args.row_order {
        crate::args::PgRowOrder::Key => cairn_pgsource::RowOrder::Key,
        crate::args::PgRowOrder::Physical => cairn_pgsource::RowOrder::Physical,
    }
}

async fn backup_all(global: &GlobalArgs, args: PgBackupArgs) -> Result<u8> {
    // Like pg_dumpall: the maintenance database is `postgres` unless named.
    let conn = match args.dbname.as_deref() {
        Some(d) => conn_spec(Some(d))?,
        None => conn_spec(None)?.with_dbname("postgres"),
    };
    let options = ClusterBackupOptions {
        conn,
        jobs: args.conn.jobs.max(1),
        tools: tools(&args.conn),
        no_role_passwords: args.no_role_passwords,
        exclude_databases: args.exclude_databases.clone(),
        row_order: row_order(&args),
    };
    if let Err(e) = cairn_pgsource::pattern::PatternSet::parse_names(&args.exclude_databases) {
        crate::exit::usage!("{e}");
    }
    let mut source = ClusterSource::new(options);
    let committed = backup_source(global, &args, &mut source).await?;
    let Some(outcome) = source.outcome() else { anyhow::bail!("the backup stored no cluster manifest") };
    let rows: u64 = outcome.databases.iter().map(|m| m.total_rows()).sum();
    let tables: usize = outcome.databases.iter().map(|m| m.tables.len()).sum();
    let dbs: Vec<serde_json::Value> = outcome
        .databases
        .iter()
        .map(|m| {
            serde_json::json!({
                "database": m.database,
                "snapshot_lsn": m.snapshot_lsn,
                "tables": m.tables.len(),
                "rows": m.total_rows(),
                "sequences": m.sequences.len(),
                "large_objects": m.large_objects.len(),
            })
        })
        .collect();
    let json = serde_json::json!({
        "all_databases": true,
        "server_version": outcome.manifest.server_version,
        "databases": dbs,
        "tables": tables,
        "rows": rows,
    });
    let mut lines = vec![format!("globals (roles, tablespaces) from {}", outcome.manifest.pg_dumpall_version)];
    for m in &outcome.databases {
        lines.push(format!(
            "database {}: {} tables, {} rows, {} sequences, {} large objects",
            m.database,
            m.tables.len(),
            m.total_rows(),
            m.sequences.len(),
            m.large_objects.len()
        ));
    }
    let details = summary::Details { json: json.as_object().cloned().unwrap_or_default(), lines };
    summary::print(global, &committed, details)?;
    Ok(0)
}

/// Opens the snapshot and reads its manifest.
async fn open(
    global: &GlobalArgs,
    arg: &str,
    filter: &FilterArgs,
) -> Result<(cairn_repo::TreeLoader, SnapshotId, Snapshot, Arc<Opened>)> {
    let (loader, id, snapshot) = select::open_snapshot(global, arg, &filter.filter().requiring_tag(TAG)).await?;
    if !snapshot.paths.iter().any(|p| p.starts_with(PATH_PREFIX) || p == CLUSTER_PATH) {
        anyhow::bail!(
            "snapshot {} ({}) is not a PostgreSQL backup: pick one written by `cairn pg backup`",
            id.short(),
            snapshot.paths.join(", ")
        );
    }
    let opened = {
        let (loader, snapshot) = (loader.clone(), snapshot.clone());
        tokio::task::spawn_blocking(move || Opened::open(&loader, &snapshot))
            .await
            .context("reading the manifest panicked")??
    };
    Ok((loader, id, snapshot, Arc::new(opened)))
}

async fn restore(global: &GlobalArgs, args: PgRestoreArgs) -> Result<u8> {
    if args.pitr_target.given() {
        return super::pg_base::restore(global, &args.snapshot, &args.pitr_target, &args.pitr, tools(&args.conn)).await;
    }
    let Some(dbname) = args.dbname.as_deref() else {
        crate::exit::usage!(
            "give the target database with -d/--dbname (or a --to-* target for a point-in-time restore)"
        );
    };
    let conn = conn_spec(Some(dbname))?;
    let (loader, id, _, opened) = open(global, &args.snapshot, &args.filter).await?;
    let opened = match opened.as_ref() {
        Opened::Cluster(cluster) => return restore_all(global, args, conn, &loader, id, cluster).await,
        Opened::Database(db) => db,
    };
    if args.only_database.is_some() || args.no_globals {
        crate::exit::usage!(
            "--only-database and --no-globals apply to --all-databases snapshots; snapshot {} holds database {} only",
            id.short(),
            opened.manifest.database
        );
    }
    let reporter = Reporter::new(global, "restored");
    reporter.info(&format!(
        "restoring snapshot {} of database {} into {}",
        id.short(),
        opened.manifest.database,
        conn.display()
    ));
    let options = RestoreOptions {
        conn,
        create: args.create,
        clean: args.clean,
        jobs: args.conn.jobs.max(1),
        tables: args.tables.clone(),
        no_owner: args.no_owner,
        tools: tools(&args.conn),
    };
    let progress = Arc::new(cairn_pgsource::RestoreProgress::default());
    let ticker = restore_ticker(&reporter, &progress);
    let report = cairn_pgsource::restore(&loader, opened, &options, &progress).await;
    drop(ticker);
    reporter.finish();
    let report = report?;
    if global.json {
        print_json_summary(&report, &id)?;
    } else if !global.quiet {
        print_restore_report(&report);
    }
    Ok(0)
}

fn restore_ticker(reporter: &Arc<Reporter>, progress: &Arc<cairn_pgsource::RestoreProgress>) -> progress::TickGuard {
    let progress = progress.clone();
    progress::tick(reporter.clone(), move || Status {
        files: progress.items_done.load(Ordering::Relaxed),
        total_files: progress.items_total.load(Ordering::Relaxed),
        bytes: progress.bytes.load(Ordering::Relaxed),
        total_bytes: progress.bytes_total.load(Ordering::Relaxed),
        errors: 0,
    })
}

fn print_restore_report(report: &RestoreReport) {
    println!(
        "restored {} tables ({} rows, {}), {} sequences, {} large objects into {}",
        report.tables,
        report.rows,
        HumanBytes(report.bytes),
        report.sequences,
        report.large_objects,
        report.database
    );
    println!(
        "took {:.2}s: schema {:.2}s, data {:.2}s ({} indexes/keys built meanwhile), indexes/constraints/ANALYZE {:.2}s",
        report.duration_secs,
        report.phase_secs.pre_data,
        report.phase_secs.data,
        report.post_data_early,
        report.phase_secs.post_data
    );
}

/// `pg restore` of an `--all-databases` snapshot.
async fn restore_all(
    global: &GlobalArgs,
    args: PgRestoreArgs,
    conn: ConnSpec,
    loader: &cairn_repo::TreeLoader,
    id: SnapshotId,
    opened: &OpenedCluster,
) -> Result<u8> {
    if !args.tables.is_empty() {
        crate::exit::usage!(
            "--table cannot be used with an --all-databases snapshot; \
             restore the database with --only-database NAME, then tables from a single-database backup"
        );
    }
    let reporter = Reporter::new(global, "restored");
    reporter.info(&format!(
        "restoring snapshot {} ({} databases{}) on the server of {}",
        id.short(),
        opened.manifest.databases.len(),
        if args.no_globals { "" } else { " and the globals" },
        conn.display()
    ));
    let options = ClusterRestoreOptions {
        conn,
        only_database: args.only_database.clone(),
        globals: !args.no_globals,
        clean: args.clean,
        jobs: args.conn.jobs.max(1),
        no_owner: args.no_owner,
        tools: tools(&args.conn),
    };
    let progress = Arc::new(cairn_pgsource::RestoreProgress::default());
    let ticker = restore_ticker(&reporter, &progress);
    let report = cairn_pgsource::cluster::restore_cluster(loader, opened, &options, &progress, |name| {
        reporter.info(&format!("restoring database {name}"))
    })
    .await;
    drop(ticker);
    reporter.finish();
    let report = report?;
    if global.json {
        print_json_summary(&report, &id)?;
    } else if !global.quiet {
        if let Some(g) = &report.globals {
            println!("globals replayed ({} statements found their object already there)", g.tolerated.len());
            for line in &g.tolerated {
                println!("  {line}");
            }
        }
        for r in &report.databases {
            print_restore_report(r);
        }
        println!("{} databases restored in {:.2}s", report.databases.len(), report.duration_secs);
    }
    Ok(0)
}

async fn drill(global: &GlobalArgs, args: PgDrillArgs) -> Result<u8> {
    if args.pitr.pitr {
        let tools = tools(&args.conn);
        return super::pg_base::drill(global, &args.snapshot, &args.pitr_target, &args.pitr, &args.checks, tools).await;
    }
    if args.pitr_target.given() {
        crate::exit::usage!(
            "--to-time, --to-lsn, --to-xid, --to-name and --to-latest drill a point-in-time restore: add --pitr"
        );
    }
    let Some(dbname) = args.dbname.as_deref() else {
        crate::exit::usage!("give a database of the server to drill on with -d/--dbname (or --pitr)");
    };
    let admin = conn_spec(Some(dbname))?;
    let (loader, id, _, opened) = open(global, &args.snapshot, &args.filter).await?;
    let options = DrillOptions {
        admin,
        checks: args.checks.clone(),
        jobs: args.conn.jobs.max(1),
        tools: tools(&args.conn),
        create_roles: !args.no_create_roles,
    };
    let reports = match opened.as_ref() {
        Opened::Database(db) => {
            if args.only_database.is_some() {
                anyhow::bail!(
                    "--only-database applies to --all-databases snapshots; snapshot {} holds database {} only",
                    id.short(),
                    db.manifest.database
                );
            }
            let report = cairn_pgsource::drill(&loader, db, &options).await?;
            if global.json {
                let mut value = serde_json::to_value(&report)?;
                value["snapshot_id"] = serde_json::to_value(id)?;
                context::print_json(&value)?;
            }
            vec![report]
        }
        Opened::Cluster(cluster) => {
            let reports =
                cairn_pgsource::cluster::drill_cluster(&loader, cluster, args.only_database.as_deref(), &options)
                    .await?;
            if global.json {
                context::print_json(&serde_json::json!({
                    "snapshot_id": id,
                    "ok": reports.iter().all(|r| r.ok),
                    "databases": reports,
                }))?;
            }
            reports
        }
    };
    if !global.json {
        for report in &reports {
            print_drill_report(&id, report);
        }
    }
    Ok(if reports.iter().all(|r| r.ok) { 0 } else { exit::FAILURE })
}

fn print_drill_report(id: &SnapshotId, report: &DrillReport) {
    println!(
        "drill of snapshot {} (database {}) in temporary database {}",
        id.short(),
        report.source_database,
        report.database
    );
    match (&report.restore, &report.restore_error) {
        (_, Some(e)) => println!("restore: FAILED after {:.2}s: {e}", report.restore_secs),
        (Some(r), None) => println!(
            "restore: ok in {:.2}s ({} tables, {} rows, {})",
            report.restore_secs,
            r.tables,
            r.rows,
            HumanBytes(r.bytes)
        ),
        (None, None) => {}
    }
    if !report.roles_created.is_empty() {
        println!("roles created for the drill (NOLOGIN): {}", report.roles_created.join(", "));
    }
    let bad: Vec<_> = report.tables.iter().filter(|t| !t.ok).collect();
    println!("row counts: {} of {} tables match the backup", report.tables.len() - bad.len(), report.tables.len());
    for t in bad {
        let actual = t.actual.map(|a| a.to_string()).unwrap_or_else(|| "missing".into());
        println!("  MISMATCH {}: backup {} rows, restored {actual}", t.table, t.expected);
    }
    for c in &report.checks {
        println!("check {}: {} ({})", if c.ok { "ok" } else { "FAILED" }, c.sql, c.detail);
    }
    println!("temporary database {}", if report.dropped { "dropped" } else { "NOT dropped: drop it by hand" });
    if !report.roles_not_dropped.is_empty() {
        println!("roles NOT dropped (drop them by hand): {}", report.roles_not_dropped.join(", "));
    }
    println!("drill {}", if report.ok { "passed" } else { "FAILED" });
}

/// A restore's report as the one JSON summary line.
fn print_json_summary(report: &impl serde::Serialize, id: &SnapshotId) -> Result<()> {
    let mut value = serde_json::to_value(report)?;
    value["message_type"] = "summary".into();
    value["snapshot_id"] = serde_json::to_value(id)?;
    context::print_json_line(&value)
}

/// A connection string or URL; a malformed one is a usage error (exit 2).
fn conn_spec(text: Option<&str>) -> Result<ConnSpec> {
    match ConnSpec::parse(text) {
        Ok(spec) => Ok(spec),
        Err(e @ cairn_pgsource::Error::BadConnString { .. }) => crate::exit::usage!("{e}"),
        Err(e) => Err(e.into()),
    }
}
