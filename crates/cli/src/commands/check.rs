//! `cairn check`

use anyhow::{Result, bail};
use cairn_repo::CheckSubset as Subset;
use indicatif::HumanBytes;

use crate::args::{CheckArgs, GlobalArgs};
use crate::context;

pub async fn run(global: &GlobalArgs, args: CheckArgs) -> Result<()> {
    let subset = match (args.read_data_subset, args.read_data) {
        (Some(subset), _) => Some(subset),
        (None, true) => Some(Subset::All),
        (None, false) => None,
    };
    let repo = context::open(global).await?;
    let report = cairn_repo::check(&repo, subset).await?;
    if global.json {
        context::print_json(&report)?;
    } else if !global.quiet || !report.problems.is_empty() {
        println!("checked {} snapshots, {} trees, {} packs in the index", report.snapshots, report.trees, report.packs);
        if subset.is_some() {
            println!("read and verified {} packs ({})", report.packs_read, HumanBytes(report.bytes_read));
        }
        if report.marked_packs > 0 {
            println!("{} packs are marked for deletion by prune (a later prune deletes them)", report.marked_packs);
        }
        if !report.unindexed_packs.is_empty() {
            println!(
                "{} packs are not in any index (left by interrupted backups; not damage)",
                report.unindexed_packs.len()
            );
        }
        if !report.upload_leftovers.is_empty() {
            let bytes: u64 = report.upload_leftovers.iter().map(|l| l.size).sum();
            println!(
                "{} temporary files of interrupted uploads ({}); prune removes them once older than its grace period",
                report.upload_leftovers.len(),
                HumanBytes(bytes)
            );
        }
        for p in &report.problems {
            println!("damaged: {}: {}", p.object, p.message);
        }
        if report.problems.is_empty() {
            println!("no problems found");
        }
    }
    if !report.problems.is_empty() {
        let missing = report.problems.iter().any(|p| p.message.starts_with("missing (listed in the index)"));
        let hint = if missing {
            ": run `cairn repair index` (the index then lists only the packs there are), \
             then `cairn repair snapshots` for snapshots that needed the missing data"
        } else {
            ""
        };
        bail!("check found {} problem(s); see the list above{hint}", report.problems.len());
    }
    Ok(())
}
