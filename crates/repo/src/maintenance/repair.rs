//! Repairs. `rebuild_index` recreates the index from the pack headers: for
//! a repository whose index files are lost or damaged, or that lists packs
//! that are gone.

use futures::StreamExt;

use crate::error::Result;
use crate::format::id::{Id, PackId, SnapshotId, TreeId};
use crate::format::index::{Index, IndexedPack};
use crate::repository::Repository;
use crate::storage::backend::FileKind;
use crate::writing::writer::Writer;

/// What `rebuild_index` did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct IndexRebuild {
    /// Packs whose headers were read and indexed.
    pub packs_indexed: usize,
    /// Blobs in them.
    pub blobs_indexed: usize,
    /// Packs whose header could not be read, and why (their blobs are lost).
    pub unreadable_packs: Vec<(Id, String)>,
    /// Packs left out because a prune marked them for deletion (its
    /// deletion record; a later prune deletes them, or lists them again
    /// if a snapshot turns out to need them).
    pub marked_left_out: usize,
    /// Old index files now superseded.
    pub superseded: usize,
    /// New index files.
    pub written: Vec<Id>,
}

/// Reads the header of every pack and writes new index files listing them
/// all, superseding every existing index file. Safe while backups run: an
/// index file written meanwhile is not superseded, and a pack uploaded
/// meanwhile is either indexed here or by its own backup.
pub async fn rebuild_index(repo: &Repository) -> Result<IndexRebuild> {
    let backend = repo.backend();
    let old: Vec<Id> = backend.list(FileKind::Index).await?.into_iter().map(|(id, _)| id).collect();
    // Packs prune has marked stay out of the index, as prune left them:
    // indexing them again would hand them back to backups just before
    // their deletion.
    let mut marked = std::collections::HashSet::new();
    for (id, _) in backend.list(FileKind::Trash).await? {
        match repo.read_trash_record(&id).await {
            Ok(record) if record.authenticated => marked.extend(record.content.packs.iter().map(|p| *p.id)),
            Ok(_) => {}
            Err(e) => tracing::warn!("ignoring deletion record {}: {e}", id.short()),
        }
    }
    let mut packs = backend.list(FileKind::Pack).await?;
    let before = packs.len();
    packs.retain(|(id, _)| !marked.contains(id));
    let marked_left_out = before - packs.len();
    let headers: Vec<(Id, u64, Result<crate::format::pack::PackHeader>)> = futures::stream::iter(packs)
        .map(|(id, size)| async move { (id, size, repo.read_pack_header(&id).await) })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut report = IndexRebuild { marked_left_out, ..Default::default() };
    let mut indexed = Vec::new();
    for (id, size, header) in headers {
        match header {
            Ok(h) => {
                report.blobs_indexed += h.entries.len();
                indexed.push(IndexedPack { id: PackId(id), size, session_public: h.session_public, blobs: h.entries });
            }
            Err(e) => report.unreadable_packs.push((id, e.to_string())),
        }
    }
    indexed.sort_by_key(|p| p.id);
    report.packs_indexed = indexed.len();
    report.superseded = old.len();
    let writer = Writer::new(repo, std::sync::Arc::new(Index::default()))?;
    report.written = writer.replace_index(indexed, old).await?;
    Ok(report)
}

/// What `repair_snapshots` did to one snapshot.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SnapshotRepair {
    /// The snapshot examined.
    pub snapshot: SnapshotId,
    /// The repaired copy written (none when nothing was wrong, or in a dry run).
    pub repaired: Option<SnapshotId>,
    /// Entries left out of the copy, as paths inside the snapshot, with why.
    pub removed: Vec<(String, String)>,
}

/// Writes, for every snapshot that refers to data the index does not have
/// (or to trees that cannot be read), a new snapshot without those entries.
/// The original stays until forgotten; the copy carries `original` and the
/// tag `repaired`. Blocking (call from a blocking thread).
pub fn repair_snapshots(
    loader: &crate::view::TreeLoader,
    snapshots: &[(SnapshotId, crate::format::snapshot::Snapshot)],
    dry_run: bool,
) -> Result<Vec<SnapshotRepair>> {
    use std::collections::HashMap;
    let repo = loader.repository();
    let handle = loader.handle().clone();
    let writer = Writer::new(repo, loader.index().clone())?;
    let mut memo: HashMap<TreeId, Rewritten> = HashMap::new();
    let mut out = Vec::new();
    for (id, snapshot) in snapshots {
        let mut removed = Vec::new();
        let mut rewriter = Rewriter { loader, writer: &writer, handle: &handle, memo: &mut memo, dry_run };
        let root = rewriter.tree(&snapshot.tree, "", &mut removed)?;
        let repaired = match root {
            Rewritten::Same => None,
            Rewritten::New(_) | Rewritten::Lost(_) if dry_run => None,
            Rewritten::New(tree) => {
                let mut copy = snapshot.clone();
                copy.tree = tree;
                copy.extra.insert("original".into(), serde_json::json!(id));
                if !copy.tags.iter().any(|t| t == "repaired") {
                    copy.tags.push("repaired".into());
                    copy.tags.sort();
                }
                Some(handle.block_on(writer.commit(&copy))?)
            }
            Rewritten::Lost(why) => {
                removed.push(("/".into(), why));
                None
            }
        };
        out.push(SnapshotRepair { snapshot: *id, repaired, removed });
    }
    Ok(out)
}

#[derive(Debug, Clone)]
enum Rewritten {
    /// Nothing below was damaged.
    Same,
    /// Damaged entries were left out of this new tree.
    New(TreeId),
    /// The tree itself cannot be read.
    Lost(String),
}

struct Rewriter<'a> {
    loader: &'a crate::view::TreeLoader,
    writer: &'a Writer,
    handle: &'a tokio::runtime::Handle,
    memo: &'a mut std::collections::HashMap<TreeId, Rewritten>,
    dry_run: bool,
}

impl Rewriter<'_> {
    fn tree(&mut self, id: &TreeId, path: &str, removed: &mut Vec<(String, String)>) -> Result<Rewritten> {
        use crate::format::tree::{Extent, NodeKind, Tree};
        if let Some(done) = self.memo.get(id).cloned() {
            if !matches!(done, Rewritten::Same) {
                // Report the damage for this snapshot too.
                self.report_again(id, path, removed)?;
            }
            return Ok(done);
        }
        let tree = match self.loader.load(id) {
            Ok(t) => t,
            Err(e) => {
                let lost = Rewritten::Lost(e.to_string());
                self.memo.insert(*id, lost.clone());
                return Ok(lost);
            }
        };
        let mut changed = false;
        let mut nodes = Vec::with_capacity(tree.nodes().len());
        for node in tree.nodes() {
            let child = format!("{path}/{}", node.display_name());
            let mut node = node.clone();
            match (node.kind, node.subtree) {
                (NodeKind::Dir, Some(sub)) => match self.tree(&sub, &child, removed)? {
                    Rewritten::Same => {}
                    Rewritten::New(new) => {
                        node.subtree = Some(new);
                        changed = true;
                    }
                    Rewritten::Lost(why) => {
                        removed.push((child, format!("directory listing unreadable: {why}")));
                        changed = true;
                        continue;
                    }
                },
                (NodeKind::File, _) => {
                    let missing = node.content.iter().find_map(|e| match e {
                        Extent::Blob { id, .. } if !self.loader.index().contains(id) => Some(*id),
                        _ => None,
                    });
                    if let Some(blob) = missing {
                        removed.push((child, format!("uses blob {blob}, which no index lists")));
                        changed = true;
                        continue;
                    }
                }
                _ => {}
            }
            nodes.push(node);
        }
        let result = if !changed {
            Rewritten::Same
        } else {
            let tree = Tree::new(nodes).map_err(|e| crate::error::Error::corrupt(format!("tree {id}"), e))?;
            let bytes = tree.encode();
            let new_id = if self.dry_run {
                TreeId(self.loader.repository().content_id(&bytes))
            } else {
                self.handle.block_on(self.writer.add_tree(&tree))?
            };
            Rewritten::New(new_id)
        };
        self.memo.insert(*id, result.clone());
        Ok(result)
    }

    /// Lists the removed entries of an already rewritten tree again, under
    /// `path`, for another snapshot that shares it.
    fn report_again(&mut self, id: &TreeId, path: &str, removed: &mut Vec<(String, String)>) -> Result<()> {
        let mut fresh = std::collections::HashMap::new();
        std::mem::swap(self.memo, &mut fresh);
        let mut again =
            Rewriter { loader: self.loader, writer: self.writer, handle: self.handle, memo: &mut fresh, dry_run: true };
        let result = again.tree(id, path, removed);
        std::mem::swap(self.memo, &mut fresh);
        result.map(drop)
    }
}

/// Removes snapshot files that are damaged (they do not decrypt or
/// decode): nothing can be restored from them, and they would otherwise be
/// reported by every listing. Returns each with what was wrong; with
/// `dry_run`, removes nothing.
pub async fn remove_damaged_snapshots(repo: &Repository, dry_run: bool) -> Result<Vec<(SnapshotId, String)>> {
    let listing = repo.list_snapshots_with_damage().await?;
    let mut removed = Vec::new();
    for (id, e) in listing.damaged {
        if !dry_run {
            repo.forget_snapshot(&id).await?;
        }
        removed.push((id, e.to_string()));
    }
    Ok(removed)
}
