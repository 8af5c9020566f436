//! `cairn prune` (and `forget --prune`): deletes unreferenced data in two
//! phases with a grace period, so it is safe while other hosts back up.

use anyhow::Result;
use cairn_repo::Repository;
use cairn_repo::{PruneOptions, PruneReport};
use indicatif::HumanBytes;

use crate::args::{GlobalArgs, PruneArgs, PruneTuning};
use crate::context;

pub async fn run(global: &GlobalArgs, args: PruneArgs) -> Result<()> {
    let repo = context::open(global).await?;
    let report = prune_repository(global, &repo, &args.tuning, args.dry_run).await?;
    if global.json {
        context::print_json(&report)?;
    }
    Ok(())
}

/// Prunes an open repository and prints the report unless `--json` is
/// given (then the caller prints it: `forget --prune` puts it into its own
/// JSON document).
pub async fn prune_repository(
    global: &GlobalArgs,
    repo: &Repository,
    tuning: &PruneTuning,
    dry_run: bool,
) -> Result<PruneReport> {
    let options = PruneOptions {
        max_unused: tuning.max_unused,
        max_repack_bytes: tuning.max_repack_size,
        grace: tuning.grace,
        dry_run,
        ..Default::default()
    };
    let quiet = global.quiet || global.json;
    let progress = move |line: &str| {
        if !quiet {
            eprintln!("prune: {line}");
        }
    };
    let report = cairn_repo::prune(repo, &options, &progress).await?;
    if !global.json && !global.quiet {
        print_report(&report, &options);
    }
    Ok(report)
}

fn print_report(r: &PruneReport, options: &PruneOptions) {
    let would = if r.dry_run { "would be " } else { "" };
    println!(
        "{} snapshots use {} blobs; {} packs ({}) in the index",
        r.snapshots,
        r.blobs_used,
        r.packs,
        HumanBytes(r.bytes)
    );
    if r.packs_rescued > 0 {
        println!("{} marked packs {}rescued: snapshots written since need them", r.packs_rescued, would);
    }
    if r.records_swept > 0 {
        println!(
            "deleted {}: {} packs ({}) and {} index files, marked at least {} ago",
            if r.dry_run { "(dry run, nothing)" } else { "now" },
            r.packs_deleted,
            HumanBytes(r.bytes_deleted),
            r.index_files_deleted,
            humanize(options.grace)
        );
    }
    println!(
        "{} packs ({}) {}marked for deletion ({} unused, {} repacked, {} left by interrupted backups); {} packs stay",
        r.packs_marked,
        HumanBytes(r.bytes_marked),
        would,
        r.packs_marked - r.packs_repacked - r.unindexed_packs_marked,
        r.packs_repacked,
        r.unindexed_packs_marked,
        r.packs_kept
    );
    if r.packs_repacked > 0 {
        println!("repacking {}copies {} of used data into new packs", would, HumanBytes(r.bytes_repacked));
    }
    println!("{} unused data remains in packs that stay", HumanBytes(r.unused_bytes_kept));
    if r.missing_packs_dropped > 0 {
        println!(
            "{} packs listed in the index were missing from storage and held nothing snapshots need: dropped from the index",
            r.missing_packs_dropped
        );
    }
    for damaged in &r.snapshots_damaged {
        println!("left out {damaged} (remove it with `cairn repair snapshots`)");
    }
    if let Some(owner) = &r.lease_taken_over_from {
        println!("took over the prune lease of {owner}, which had stopped (its process is gone); no wait was needed");
    }
    if r.upload_leftovers_deleted > 0 {
        println!(
            "{} temporary files of interrupted uploads ({}) {}removed",
            r.upload_leftovers_deleted,
            HumanBytes(r.upload_leftover_bytes_deleted),
            would
        );
    }
    if r.upload_leftovers_pending > 0 {
        println!(
            "{} temporary files of uploads are younger than the grace period (an upload may still run): left for now",
            r.upload_leftovers_pending
        );
    }
    for why in &r.records_ignored {
        println!("ignored deletion record {why}");
    }
    if r.records_pending > 0 || (r.packs_marked > 0 && !r.dry_run) {
        println!(
            "marked packs are deleted by a prune run at least {} after marking ({} record(s) waiting)",
            humanize(options.grace),
            r.records_pending + usize::from(r.packs_marked > 0)
        );
    }
    if r.dry_run {
        println!("dry run: nothing was changed");
    }
}

fn humanize(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 86_400 == 0 && s > 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 && s > 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 && s > 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
