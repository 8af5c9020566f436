//! `cairn repair`

use std::sync::Arc;

use anyhow::{Context, Result};
use cairn_repo::TreeLoader;

use crate::args::{GlobalArgs, RepairCommand};
use crate::context;

pub async fn run(global: &GlobalArgs, command: RepairCommand) -> Result<()> {
    let repo = context::open(global).await?;
    match command {
        RepairCommand::Index => {
            let report = cairn_repo::rebuild_index(&repo).await?;
            if global.json {
                return context::print_json(&report);
            }
            if !global.quiet {
                println!(
                    "indexed {} blobs in {} packs; {} new index file(s) supersede the {} old one(s)",
                    report.blobs_indexed,
                    report.packs_indexed,
                    report.written.len(),
                    report.superseded
                );
            }
            if report.marked_left_out > 0 && !global.quiet {
                println!(
                    "{} packs marked for deletion by prune were left out (a later prune deletes them)",
                    report.marked_left_out
                );
            }
            for (pack, why) in &report.unreadable_packs {
                eprintln!("warning: pack {} has an unreadable header and was left out: {why}", pack.short());
            }
            if !report.unreadable_packs.is_empty() {
                eprintln!("run `cairn check` to see which snapshots and files that affects");
            }
        }
        RepairCommand::Snapshots { snapshots, dry_run, filter } => {
            let (index, chosen) =
                tokio::try_join!(async { repo.load_index().await.map_err(anyhow::Error::from) }, async {
                    Ok(repo.find_snapshots(&snapshots, &filter.filter()).await?)
                })?;
            let loader = TreeLoader::new(&repo, Arc::new(index), tokio::runtime::Handle::current());
            let results = tokio::task::spawn_blocking(move || cairn_repo::repair_snapshots(&loader, &chosen, dry_run))
                .await
                .context("the repair thread panicked")??;
            // Snapshot files that do not even decrypt cannot be repaired: remove them.
            let unreadable = if snapshots.is_empty() {
                cairn_repo::remove_damaged_snapshots(&repo, dry_run).await?
            } else {
                Vec::new()
            };
            if global.json {
                let removed: Vec<serde_json::Value> =
                    unreadable.iter().map(|(id, why)| serde_json::json!({"snapshot": id, "damaged": why})).collect();
                return context::print_json(&serde_json::json!({"repaired": results, "removed_damaged": removed}));
            }
            let mut damaged = 0;
            for r in &results {
                if r.removed.is_empty() {
                    continue;
                }
                damaged += 1;
                match (&r.repaired, dry_run) {
                    (Some(new), _) => println!(
                        "snapshot {}: {} entries left out; repaired copy {} (the original stays until forgotten)",
                        r.snapshot.short(),
                        r.removed.len(),
                        new.short()
                    ),
                    (None, true) => {
                        println!("snapshot {}: would leave out {} entries", r.snapshot.short(), r.removed.len())
                    }
                    (None, false) => {
                        println!("snapshot {}: its root tree is lost; nothing to copy", r.snapshot.short())
                    }
                }
                for (path, why) in &r.removed {
                    println!("  {path}: {why}");
                }
            }
            for (id, why) in &unreadable {
                let verb = if dry_run { "would remove" } else { "removed" };
                println!("snapshot {}: {verb} the damaged snapshot file ({why})", id.short());
            }
            if !global.quiet {
                println!(
                    "{} of {} snapshots needed repair",
                    damaged + unreadable.len(),
                    results.len() + unreadable.len()
                );
            }
        }
    }
    Ok(())
}
