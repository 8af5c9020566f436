//! `cairn stats`

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use anyhow::{Context, Result};
use cairn_repo::TreeLoader;
use cairn_repo::{Extent, Id, NodeKind, TreeId};
use indicatif::HumanBytes;

use crate::args::{GlobalArgs, StatsArgs};
use crate::context;

/// Files and bytes below one tree.
#[derive(Clone, Copy, Default)]
struct Totals {
    files: u64,
    /// Files' sizes, holes of sparse files included (what a restore shows).
    bytes: u64,
    /// Files' data, holes left out (what deduplication works on).
    data: u64,
}

pub async fn run(global: &GlobalArgs, args: StatsArgs) -> Result<()> {
    let repo = context::open(global).await?;
    let filter = args.filter.filter();
    let (index, snapshots) = tokio::try_join!(repo.load_index(), repo.find_snapshots(&args.snapshots, &filter))?;
    let index = Arc::new(index);
    let loader = TreeLoader::new(&repo, index.clone(), tokio::runtime::Handle::current());
    let count = snapshots.len();
    let (restore, blobs) = tokio::task::spawn_blocking(move || -> Result<(Totals, HashSet<Id>)> {
        // Each distinct tree is read once: its totals are remembered.
        let mut memo: HashMap<TreeId, Totals> = HashMap::new();
        let mut blobs: HashSet<Id> = HashSet::new();
        let mut restore = Totals::default();
        for (_, snapshot) in &snapshots {
            let mut stack = vec![(snapshot.tree, false)];
            while let Some((id, expanded)) = stack.pop() {
                if memo.contains_key(&id) {
                    continue;
                }
                let tree = loader.load(&id)?;
                let pending: Vec<TreeId> =
                    tree.nodes().iter().filter_map(|n| n.subtree).filter(|s| !memo.contains_key(s)).collect();
                if !expanded && !pending.is_empty() {
                    stack.push((id, true));
                    stack.extend(pending.into_iter().map(|s| (s, false)));
                    continue;
                }
                let mut totals = Totals::default();
                blobs.insert(*id);
                for node in tree.nodes() {
                    match node.kind {
                        NodeKind::Dir => {
                            let sub = node.subtree.and_then(|s| memo.get(&s)).copied().unwrap_or_default();
                            totals.files += sub.files;
                            totals.bytes += sub.bytes;
                            totals.data += sub.data;
                        }
                        NodeKind::File => {
                            totals.files += 1;
                            totals.bytes += node.size;
                            totals.data += node
                                .content
                                .iter()
                                .map(|e| match e {
                                    Extent::Blob { length, .. } => *length as u64,
                                    Extent::Hole { .. } => 0,
                                })
                                .sum::<u64>();
                            blobs.extend(node.content.iter().filter_map(|e| match e {
                                Extent::Blob { id, .. } => Some(**id),
                                Extent::Hole { .. } => None,
                            }));
                        }
                        _ => {}
                    }
                }
                memo.insert(id, totals);
            }
            let t = memo.get(&snapshot.tree).copied().unwrap_or_default();
            restore.files += t.files;
            restore.bytes += t.bytes;
            restore.data += t.data;
        }
        Ok((restore, blobs))
    })
    .await
    .context("the stats thread panicked")??;
    let (mut raw, mut stored, mut missing) = (0u64, 0u64, 0u64);
    for id in &blobs {
        match index.get(id) {
            Some((_, loc)) => {
                raw += loc.raw_length as u64;
                stored += loc.length as u64;
            }
            None => missing += 1,
        }
    }
    let repo_bytes: u64 = index.packs().iter().map(|p| p.size).sum();
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    if global.json {
        return context::print_json(&serde_json::json!({
            "snapshots": count,
            "restore_files": restore.files,
            "restore_bytes": restore.bytes,
            "restore_data_bytes": restore.data,
            "unique_blobs": blobs.len(),
            "unique_raw_bytes": raw,
            "unique_stored_bytes": stored,
            "dedup_ratio": ratio(restore.data, raw),
            "compression_ratio": ratio(raw, stored),
            "missing_blobs": missing,
            "repository_packs": index.packs().len(),
            "repository_bytes": repo_bytes,
        }));
    }
    println!("snapshots:            {count}");
    println!("restore size:         {} in {} files", HumanBytes(restore.bytes), restore.files);
    if restore.bytes > restore.data {
        println!("  of which holes:     {} (sparse files; not stored)", HumanBytes(restore.bytes - restore.data));
    }
    println!("referenced data:      {} in {} blobs (before compression)", HumanBytes(raw), blobs.len());
    println!("stored size:          {}", HumanBytes(stored));
    // Holes are not data: counting them made a sparse disk image look 1,000x deduplicated.
    println!("deduplication ratio:  {:.2}x", ratio(restore.data, raw));
    println!("compression ratio:    {:.2}x", ratio(raw, stored));
    println!("repository packs:     {} ({})", index.packs().len(), HumanBytes(repo_bytes));
    if missing > 0 {
        println!("warning: {missing} referenced blobs are not in the index; run `cairn check`");
    }
    Ok(())
}
