//! `cairn restore`

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use cairn_repo::split_snapshot_arg;
use cairn_repo::{NodeKind, PathFilter};
use cairn_repo::{Overwrite, RestoreEvents, RestoreOptions, RestoreOutcome, RestoreProgress};
use indicatif::HumanBytes;

use crate::args::{GlobalArgs, OverwriteArg, RestoreArgs};
use crate::context;
use crate::escape;
use crate::exit;
use crate::progress::{self, Reporter};
use crate::select;

struct Events {
    reporter: Arc<Reporter>,
    /// Print each action (dry run with -v).
    list: bool,
}

impl RestoreEvents for Events {
    fn warning(&self, path: &Path, message: &str) {
        self.reporter.warning(path, message);
    }

    fn action(&self, path: &Path, action: &str) {
        if self.list {
            println!("{action:8} {}", escape::human(&path.to_string_lossy()));
        }
    }
}

pub async fn run(global: &GlobalArgs, args: RestoreArgs) -> Result<u8> {
    let started = std::time::Instant::now();
    if let Some(location) = args.target.to_str().filter(|t| cairn_repo::is_bucket_location(t) && !args.target.exists())
    {
        return restore_to_bucket(global, location.to_owned(), &args, started).await;
    }
    let options = RestoreOptions {
        includes: PathFilter::new(&args.includes)?,
        excludes: PathFilter::new(&args.excludes)?,
        overwrite: overwrite(&args.overwrite),
        delete: args.delete,
        verify: args.verify,
        dry_run: args.dry_run,
        numeric_owner: args.numeric_owner,
        strip_setuid: args.no_same_permissions,
        skip_devices: args.no_device,
        workers: 0,
        batch_files: args.batch_files,
    };
    let (snapshot_arg, subpath) = split_snapshot_arg(&args.snapshot);
    let (loader, id, snapshot) = select::open_snapshot(global, snapshot_arg, &args.filter.filter()).await?;
    let reporter = Reporter::new(global, "restored");
    let progress = Arc::new(RestoreProgress::default());
    let ticker = progress::tick_restore(reporter.clone(), progress.clone());
    let target = args.target.clone();
    let subpath = subpath.unwrap_or("").to_owned();
    let list = args.dry_run && (global.verbose > 0 || !global.quiet) && !global.json;
    let outcome = {
        let (progress, reporter) = (progress.clone(), reporter.clone());
        tokio::task::spawn_blocking(move || {
            let start = loader.resolve(&snapshot, &subpath)?;
            let events = Events { reporter, list };
            cairn_repo::restore(&loader, &start, &target, &options, &progress, &events).map(|o| (o, start.kind))
        })
        .await
        .context("the restore thread panicked")?
    };
    drop(ticker);
    reporter.finish();
    let (outcome, kind) = outcome?;
    print_summary(global, &outcome, &id.short(), &args, kind, started.elapsed().as_secs_f64())?;
    Ok(if outcome.errors > 0 { exit::INCOMPLETE } else { 0 })
}

/// `--target s3:BUCKET/PREFIX`: the snapshot's files written as objects.
async fn restore_to_bucket(
    global: &GlobalArgs,
    location: String,
    args: &RestoreArgs,
    started: std::time::Instant,
) -> Result<u8> {
    if !args.includes.is_empty() || !args.excludes.is_empty() || args.delete {
        crate::exit::usage!(
            "--include, --exclude and --delete apply to directories; restore a path inside the \
             snapshot (SNAPSHOT:PATH) into a bucket instead"
        );
    }
    let b = &args.bucket;
    let backend = crate::commands::backup::bucket_backend_options(
        global,
        &b.target_endpoint,
        &b.target_region,
        b.target_path_style,
        &b.target_access_key_id,
        &b.target_secret_access_key,
    );
    let bucket = cairn_repo::Bucket::open(&location, &backend)?;
    let (snapshot_arg, subpath) = split_snapshot_arg(&args.snapshot);
    let (loader, id, snapshot) = select::open_snapshot(global, snapshot_arg, &args.filter.filter()).await?;
    let subpath = subpath.unwrap_or("").to_owned();
    let start = {
        let (loader, snapshot) = (loader.clone(), snapshot.clone());
        tokio::task::spawn_blocking(move || loader.resolve(&snapshot, &subpath))
            .await
            .context("the restore thread panicked")??
    };
    let reporter = Reporter::new(global, "restored");
    let progress = Arc::new(RestoreProgress::default());
    let ticker = progress::tick_restore(reporter.clone(), progress.clone());
    let options = cairn_repo::BucketRestoreOptions {
        dry_run: args.dry_run,
        verify: args.verify,
        uploads: b.uploads,
        overwrite: overwrite(&args.overwrite),
    };
    let outcome = cairn_repo::restore_to_bucket(&loader, &start, &bucket, &options, &progress).await;
    drop(ticker);
    reporter.finish();
    let outcome = outcome?;
    for (path, why) in &outcome.failed {
        eprintln!("warning: {}: {why}", escape::human(path));
    }
    let secs = started.elapsed().as_secs_f64();
    if global.json {
        context::print_json_line(&serde_json::json!({
            "message_type": "summary",
            "dry_run": args.dry_run,
            "snapshot": id.short(),
            "target": bucket.location(),
            "objects": outcome.objects,
            "bytes": outcome.bytes,
            "verified": outcome.verified,
            "skipped": outcome.skipped,
            "errors": outcome.failed.len(),
            "duration_secs": secs,
        }))?;
    } else if !global.quiet {
        let verb = if args.dry_run { "would restore" } else { "restored" };
        println!(
            "{verb} snapshot {} into {}: {} objects ({})",
            id.short(),
            bucket.location(),
            outcome.objects,
            HumanBytes(outcome.bytes)
        );
        if outcome.verified > 0 {
            println!("{} objects verified", outcome.verified);
        }
        if outcome.skipped > 0 {
            println!("{} objects already there and left as they were (--overwrite)", outcome.skipped);
        }
        if !outcome.failed.is_empty() {
            println!("{} files could not be restored (see the warnings)", outcome.failed.len());
        }
        println!("took {secs:.2}s");
    }
    Ok(if outcome.failed.is_empty() { 0 } else { exit::INCOMPLETE })
}

fn overwrite(arg: &OverwriteArg) -> Overwrite {
    match arg {
        OverwriteArg::Always => Overwrite::Always,
        OverwriteArg::IfChanged => Overwrite::IfChanged,
        OverwriteArg::Never => Overwrite::Never,
    }
}

fn print_summary(
    global: &GlobalArgs,
    o: &RestoreOutcome,
    snapshot: &str,
    args: &RestoreArgs,
    kind: NodeKind,
    secs: f64,
) -> Result<()> {
    let (target, dry_run) = (&args.target, args.dry_run);
    let (stripped, skipped_devices) = (args.no_same_permissions, args.no_device);
    if global.json {
        return context::print_json_line(&serde_json::json!({
            "message_type": "summary",
            "dry_run": dry_run,
            "snapshot": snapshot,
            "target": target,
            "files": o.files,
            "dirs": o.dirs,
            "specials": o.specials,
            "hardlinks": o.hardlinks,
            "skipped": o.skipped,
            "deleted": o.deleted,
            "bytes": o.bytes,
            "verified": o.verified,
            "errors": o.errors,
            "setuid_entries": o.setuid_entries,
            "device_entries": o.device_entries,
            "duration_secs": secs,
        }));
    }
    // Said even with --quiet: what a snapshot plants on a system matters.
    if o.setuid_entries > 0 && !stripped {
        eprintln!(
            "warning: {} setuid or setgid files and directories were restored with those bits \
             (--no-same-permissions clears them)",
            o.setuid_entries
        );
    }
    if o.device_entries > 0 && !skipped_devices {
        eprintln!("warning: {} device nodes were restored (--no-device skips them)", o.device_entries);
    }
    if global.quiet {
        return Ok(());
    }
    let what = if kind == NodeKind::Dir { "into" } else { "under" };
    let verb = if dry_run { "would restore" } else { "restored" };
    println!(
        "{verb} snapshot {snapshot} {what} {}: {} files ({}), {} directories, {} links and special files, {} hard links",
        target.display(),
        o.files,
        HumanBytes(o.bytes),
        o.dirs,
        o.specials,
        o.hardlinks
    );
    if o.skipped > 0 || o.deleted > 0 {
        println!("{} entries left as they were, {} deleted", o.skipped, o.deleted);
    }
    if o.verified > 0 {
        println!("{} files verified", o.verified);
    }
    if o.errors > 0 {
        println!("{} entries could not be restored (see the warnings)", o.errors);
    }
    println!("took {secs:.2}s");
    Ok(())
}
