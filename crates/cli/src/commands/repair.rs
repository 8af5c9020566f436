//! `cairn repair`

use anyhow::Result;
use cairn_repo::repair;

use crate::args::{GlobalArgs, RepairCommand};
use crate::context;

pub async fn run(global: &GlobalArgs, command: RepairCommand) -> Result<()> {
    let repo = context::open(global).await?;
    match command {
        RepairCommand::Index => {
            let report = repair::rebuild_index(&repo).await?;
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
            for (pack, why) in &report.unreadable_packs {
                eprintln!("warning: pack {} has an unreadable header and was left out: {why}", pack.short());
            }
            if !report.unreadable_packs.is_empty() {
                eprintln!("run `cairn check` to see which snapshots and files that affects");
            }
        }
    }
    Ok(())
}
