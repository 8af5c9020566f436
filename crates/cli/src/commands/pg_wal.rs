//! `cairn pg wal-push | wal-get | pitr-status | check | forget`: the WAL
//! side of point-in-time recovery (see `cairn_pgsource::pitr`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use cairn_pgsource::pitr::{
    self, BASE_TAG, DEFAULT_SPOOL_NAME, ForegroundOptions, GetOptions, GetOutcome, PusherOptions, Spool, WAL_TAG,
    WalCatalog,
};
use cairn_repo::{GroupBy, RetentionRules, SnapshotId};

use crate::args::{GlobalArgs, PgCheckArgs, PgForgetArgs, PgPitrStatusArgs, PgWalGetArgs, PgWalPushArgs};
use crate::context;

/// restore_command's exit status for "not archived": recovery ends there.
const ABSENT: u8 = 1;
/// restore_command's exit status for any other failure: above 125, so
/// PostgreSQL stops recovery instead of taking it for the end of the archive.
const GET_FAILED: u8 = 126;

/// The WAL file's directory (`pg_wal`), absolute.
fn wal_dir_of(path: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))?;
    Ok(abs.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/")))
}

pub async fn wal_push(global: &GlobalArgs, args: PgWalPushArgs) -> Result<u8> {
    let wal_dir = wal_dir_of(&args.path)?;
    let spool = args.spool.clone().unwrap_or_else(|| wal_dir.join(DEFAULT_SPOOL_NAME));
    if args.pusher {
        return run_pusher(global, &args, wal_dir, spool).await;
    }
    let options = ForegroundOptions { path: args.path.clone(), spool, timeout: Duration::from_secs(args.timeout) };
    // The foreground never opens the repository: it hands the file to the
    // pusher (this same program with --pusher) and waits for its answer.
    let outcome = tokio::task::spawn_blocking(move || pitr::push_foreground(&options, &mut start_pusher)).await??;
    let pitr::PushOutcome::Archived { blake3 } = outcome;
    tracing::info!("archived {} (BLAKE3 {blake3})", args.path.display());
    Ok(0)
}

/// Starts `cairn ... pg wal-push ... --pusher` in its own process group,
/// its output in the spool's log.
fn start_pusher(spool: &Spool) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    let log = std::fs::OpenOptions::new().append(true).create(true).open(spool.log_path())?;
    let program = std::env::current_exe()?;
    std::process::Command::new(program)
        .args(std::env::args_os().skip(1))
        .arg("--pusher")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .map(|_| ())
}

async fn run_pusher(global: &GlobalArgs, args: &PgWalPushArgs, wal_dir: PathBuf, spool_dir: PathBuf) -> Result<u8> {
    let spool = Spool::open(&spool_dir)?;
    let Some(_lock) = spool.try_lock()? else {
        return Ok(0); // another pusher runs
    };
    let pgdata = match &args.pgdata {
        Some(dir) => dir.clone(),
        None => wal_dir.parent().map(Path::to_path_buf).context("the WAL directory has no parent (give --pgdata)")?,
    };
    let started = jiff::Timestamp::now();
    eprintln!("{started} pusher {} started", std::process::id());
    let repo = context::open_writable(global).await?;
    let options = PusherOptions {
        spool: spool_dir,
        wal_dir,
        pgdata,
        max_files: args.batch_files.max(1),
        max_bytes: args.batch_size.max(1),
        idle_exit: Duration::from_secs(args.idle_exit),
        hostname: None,
    };
    let report = pitr::run_pusher(&repo, &options).await;
    match &report {
        Ok(r) => {
            let t = &r.timings;
            let ms = |d: Duration| d.as_millis();
            eprintln!(
                "{} pusher {} idle, exiting: {} batches, {} files ({} MiB) stored, {} already archived, {} refused; \
                 time: read+check {} ms (overlapped; {} ms waited for), store {} ms, commit {} ms, acknowledge {} ms",
                jiff::Timestamp::now(),
                std::process::id(),
                r.batches,
                r.stored,
                r.bytes >> 20,
                r.already,
                r.refused,
                ms(t.read_check),
                ms(t.wait_read),
                ms(t.store),
                ms(t.commit),
                ms(t.acknowledge)
            )
        }
        Err(e) => eprintln!("{} pusher {} failed: {e}", jiff::Timestamp::now(), std::process::id()),
    }
    report?;
    Ok(0)
}

pub async fn wal_get(global: &GlobalArgs, args: PgWalGetArgs) -> Result<u8> {
    let wal_dir = wal_dir_of(&args.path)?;
    let options = GetOptions {
        name: args.name.clone(),
        dest: args.path.clone(),
        spool: args.spool.clone().unwrap_or_else(|| wal_dir.join(DEFAULT_SPOOL_NAME)),
        prefetch: args.prefetch,
        system_identifier: args.system_identifier,
        pgdata: std::env::current_dir().context("cannot find the current directory")?,
    };
    if args.prefetch_only {
        let repo = context::open(global).await?;
        match pitr::prefetch(&repo, &options).await {
            Ok(n) => tracing::debug!("prefetched {n} WAL files after {}", args.name),
            Err(e) => tracing::warn!("prefetching after {}: {e}", args.name),
        }
        return Ok(0);
    }
    match pitr::get_from_spool(&options) {
        Ok(true) => {
            start_prefetch(&options);
            return Ok(0);
        }
        Ok(false) => {}
        Err(e) => tracing::warn!("the prefetched copy of {} is unusable: {e}", args.name),
    }
    let mut last = None;
    for attempt in 0..args.retries.max(1) {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
        }
        let result = async {
            let repo = context::open(global).await?;
            anyhow::Ok(pitr::get_from_repository(&repo, &options).await?)
        }
        .await;
        match result {
            Ok(GetOutcome::Found { .. }) => {
                start_prefetch(&options);
                return Ok(0);
            }
            Ok(GetOutcome::Absent) => return Ok(ABSENT),
            Err(e) => {
                tracing::warn!("wal-get {} (try {} of {}): {e:#}", args.name, attempt + 1, args.retries.max(1));
                last = Some(e);
            }
        }
    }
    if let Some(e) = last {
        eprintln!(
            "cairn: error: wal-get {}: {} (exit {GET_FAILED}: recovery stops here rather than end early; fix the repository and start the server again)",
            args.name,
            crate::exit::message(&e)
        );
    }
    Ok(GET_FAILED)
}

/// Starts this command again, with the same arguments, as a detached
/// background prefetcher (told so by `CAIRN_WAL_PREFETCHER`, which leaves
/// the arguments as they were) when the spool runs low, and returns at once:
/// PostgreSQL replays the file just served while the next ones are fetched.
/// Best effort: without a prefetcher, each file is fetched when asked for.
fn start_prefetch(options: &pitr::GetOptions) {
    use std::os::unix::process::CommandExt;
    match pitr::needs_prefetch(options) {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::warn!("not prefetching WAL: {e}");
            return;
        }
    }
    let spawned = std::env::current_exe().and_then(|exe| {
        std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env("CAIRN_WAL_PREFETCHER", "true")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            // Its own process group: a signal to the server's does not stop it halfway.
            .process_group(0)
            .spawn()
    });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the WAL prefetcher: {e}");
    }
}

async fn catalog(global: &GlobalArgs) -> Result<(cairn_repo::Repository, Vec<(SnapshotId, cairn_repo::Snapshot)>)> {
    let repo = context::open(global).await?;
    let listing = repo.list_snapshots().await?;
    Ok((repo, listing))
}

pub async fn pitr_status(global: &GlobalArgs, args: PgPitrStatusArgs) -> Result<u8> {
    let (_, listing) = catalog(global).await?;
    let catalog = WalCatalog::from_snapshots(&listing);
    let mut statuses = pitr::status(&catalog, jiff::Timestamp::now());
    if let Some(id) = args.system_identifier {
        statuses.retain(|s| s.system_identifier == id.to_string());
    }
    if global.json {
        context::print_json(&statuses)?;
        return Ok(0);
    }
    if statuses.is_empty() {
        println!("no archived WAL or base backups (pg-wal / pg-base snapshots) in this repository");
    }
    for s in &statuses {
        println!(
            "cluster {} (WAL segments of {} MiB): {} files in {} batches, {} base backups",
            s.system_identifier,
            s.wal_segment_size >> 20,
            s.files,
            s.batches,
            s.bases
        );
        match (s.last_push, s.rpo_seconds) {
            (Some(t), Some(rpo)) => println!("  last push {t}, RPO now {rpo} s"),
            _ => println!("  nothing pushed yet"),
        }
        for t in &s.timelines {
            println!(
                "  timeline {}: {} segments, {} to {}{}",
                t.timeline,
                t.segments,
                t.first_segment.as_deref().unwrap_or("-"),
                t.last_segment.as_deref().unwrap_or("-"),
                if t.history { "" } else { " (no history file)" }
            );
            for g in &t.gaps {
                println!("    gap: {} segment(s) missing, {} to {}", g.segments, g.first, g.last);
            }
            for w in &t.windows {
                println!(
                    "    recoverable from {} ({}, base {}) to {} ({}, archived {})",
                    w.from_time,
                    w.from_lsn,
                    w.base.short(),
                    w.to_lsn,
                    w.to_segment,
                    w.to_time
                );
            }
            if t.windows.is_empty() {
                println!("    no recoverable window (no base backup with its WAL)");
            }
        }
        match &s.last_drill {
            Some(d) => {
                println!(
                    "  last drill {} ({}): {} to {}, ready in {:.1} s, {} of {} checks passed{}",
                    d.time,
                    d.snapshot.short(),
                    if d.ok { "passed" } else { "FAILED" },
                    d.target,
                    d.total_secs,
                    d.checks - d.failed_checks,
                    d.checks,
                    d.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
                );
                if !d.ok {
                    match s.last_passed_drill {
                        Some(t) => println!("  last passed drill {t}"),
                        None => println!("  no drill has passed"),
                    }
                }
            }
            None => println!("  no drill reports (run `cairn pg drill --pitr`)"),
        }
    }
    Ok(0)
}

pub async fn check(global: &GlobalArgs, args: PgCheckArgs) -> Result<u8> {
    let (repo, listing) = catalog(global).await?;
    let catalog = WalCatalog::from_snapshots(&listing);
    let statuses = pitr::status(&catalog, jiff::Timestamp::now());
    let mut findings = pitr::check(&catalog, &statuses);
    if args.read_data {
        findings.extend(pitr::verify_wal_data(&repo, &listing).await?);
    }
    let files: usize = catalog.clusters.values().map(|c| c.files.len()).sum();
    if global.json {
        context::print_json(&serde_json::json!({
            "clusters": catalog.clusters.keys().map(|k| k.to_string()).collect::<Vec<_>>(),
            "files": files,
            "read_data": args.read_data,
            "problems": findings,
        }))?;
    } else {
        for f in &findings {
            match &f.system_identifier {
                Some(id) => println!("cluster {id}: {}", f.message),
                None => println!("{}", f.message),
            }
        }
        println!(
            "checked {} cluster(s), {files} archived WAL files{}: {}",
            catalog.clusters.len(),
            if args.read_data { " (read back)" } else { "" },
            if findings.is_empty() { "no problems".to_owned() } else { format!("{} problem(s)", findings.len()) }
        );
    }
    Ok(if findings.is_empty() { 0 } else { crate::exit::FAILURE })
}

pub async fn forget(global: &GlobalArgs, args: PgForgetArgs) -> Result<u8> {
    let rules = RetentionRules {
        keep_last: args.keep_last,
        keep_daily: args.keep_daily,
        keep_weekly: args.keep_weekly,
        keep_monthly: args.keep_monthly,
        keep_within: args.keep_within.clone(),
        ..RetentionRules::default()
    };
    let policy = rules.policy()?;
    if policy.is_empty() {
        crate::exit::usage!("no policy for the base backups given: use --keep-last, --keep-daily, --keep-within, ...");
    }
    let (repo, listing) = catalog(global).await?;
    let bases: Vec<_> = listing.iter().filter(|(_, s)| s.tags.iter().any(|t| t == BASE_TAG)).cloned().collect();
    let tz = jiff::tz::TimeZone::system();
    let plan = cairn_repo::plan_forget(bases, &policy, GroupBy::parse("host,paths")?, 0, &tz)?;
    let kept: BTreeSet<SnapshotId> =
        plan.groups.iter().flat_map(|g| &g.verdicts).filter(|(v, _)| v.keep).map(|(v, _)| v.id).collect();
    let removed_bases: Vec<SnapshotId> =
        plan.groups.iter().flat_map(|g| &g.verdicts).filter(|(v, _)| !v.keep).map(|(v, _)| v.id).collect();
    let now = jiff::Timestamp::now();
    let since = match args.wal_window {
        Some(d) => Some(now.checked_sub(jiff::SignedDuration::try_from(d)?)?),
        None => None,
    };
    let catalog = WalCatalog::from_snapshots(&listing);
    let mut wal_removed = Vec::new();
    let mut report = Vec::new();
    for (sysid, cluster) in &catalog.clusters {
        let verdicts = pitr::plan_wal_retention(cluster, &kept, since);
        for v in &verdicts {
            if !v.keep {
                wal_removed.push(v.id);
            }
        }
        let bases: Vec<serde_json::Value> = cluster
            .bases
            .iter()
            .map(|b| serde_json::json!({"id": b.id, "keep": kept.contains(&b.id), "start_lsn": b.info.start_lsn, "label": b.info.label}))
            .collect();
        if !global.json && !global.quiet {
            println!("cluster {sysid}:");
            for b in &cluster.bases {
                let action = if kept.contains(&b.id) { "keep" } else { "remove" };
                println!("  {action:6} base {} {} start {}", b.id.short(), b.time, b.info.start_lsn);
            }
            for v in &verdicts {
                let action = if v.keep { "keep" } else { "remove" };
                println!("  {action:6} wal  {} {}", v.id.short(), v.reason);
            }
        }
        report.push(serde_json::json!({"system_identifier": sysid.to_string(), "bases": bases, "wal": verdicts}));
    }
    let mut removed = 0;
    if !args.dry_run {
        for id in removed_bases.iter().chain(&wal_removed) {
            repo.forget_snapshot(id).await?;
            removed += 1;
        }
    }
    let pruned = if args.prune {
        Some(crate::commands::prune::prune_repository(global, &repo, &args.prune_tuning, args.dry_run).await?)
    } else {
        None
    };
    if global.json {
        let mut doc = serde_json::json!({"dry_run": args.dry_run, "clusters": report, "removed": removed});
        if let Some(p) = pruned {
            doc["prune"] = serde_json::to_value(p)?;
        }
        context::print_json(&doc)?;
    } else if !global.quiet {
        if args.dry_run {
            println!("dry run: nothing was removed");
        } else {
            println!("removed {removed} snapshot(s)");
        }
    }
    Ok(0)
}

/// Whether plain `forget` leaves this snapshot alone: PITR snapshots are
/// judged by `cairn pg forget`, unless `--include-pitr` or a `--tag`
/// filter names them.
pub fn is_pitr(snapshot: &cairn_repo::Snapshot) -> bool {
    snapshot.tags.iter().any(|t| t == WAL_TAG || t == BASE_TAG)
}
