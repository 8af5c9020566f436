//! Copying snapshots between repositories (a local repository to an
//! offsite bucket, say).
//!
//! Two ways, chosen by the keys:
//!
//! * **Verbatim**, when the destination was created from the source
//!   (`init --from-repo`: same master secret, same chunker): blob ids agree,
//!   so every source pack that holds a blob the destination lacks is copied
//!   as it is, without decrypting anything, and indexed in the destination.
//!   Packs may carry blobs the destination does not need (they are freed by
//!   prune); whoever holds the destination's password can read the source's
//!   data too, because the secret is shared.
//! * **Re-encrypted** otherwise: content ids are keyed per repository, so
//!   every blob is read, given the destination's id, and stored through a
//!   destination writing session; trees are rewritten with the new ids.
//!
//! Both are idempotent and resumable: a snapshot already in the destination
//! (recorded as `copied_from`) is skipped, and blobs or packs stored by an
//! interrupted run are reused.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::runtime::Handle;

use crate::error::{Error, Result};
use crate::format::id::{DataId, Id, PackId, SnapshotId, TreeId};
use crate::format::index::{Index, IndexedPack};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Extent, Node, NodeKind, Tree};
use crate::repository::Repository;
use crate::storage::backend::FileKind;
use crate::view::TreeLoader;
use crate::writing::writer::Writer;

/// What a copy did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CopyOutcome {
    /// Packs were copied without decryption.
    pub verbatim: bool,
    /// (source snapshot, new destination snapshot).
    pub copied: Vec<(SnapshotId, SnapshotId)>,
    /// Snapshots the destination already had.
    pub skipped: Vec<SnapshotId>,
    /// Packs copied (verbatim mode).
    pub packs: usize,
    /// Blobs stored in the destination (re-encrypted mode).
    pub blobs: u64,
    /// Bytes written to the destination.
    pub bytes: u64,
}

/// Whether `dst` shares `src`'s master secret and chunker, so packs can be
/// copied verbatim.
pub fn shares_secret(src: &Repository, dst: &Repository) -> bool {
    let same_master = match (src.keys().master(), dst.keys().master()) {
        (Some(a), Some(b)) => a.expose() == b.expose(),
        _ => false,
    };
    same_master && src.config().chunker == dst.config().chunker
}

/// The field a copied snapshot records its source snapshot's id in.
const COPIED_FROM: &str = "copied_from";

/// Copies `snapshots` of `src` into `dst`. Blocking (call from a blocking
/// thread; `handle` runs the storage requests).
pub fn copy_snapshots(
    src: &Repository,
    dst: &Repository,
    snapshots: &[(SnapshotId, Snapshot)],
    handle: &Handle,
) -> Result<CopyOutcome> {
    if dst.keys().master().is_none() {
        return Err(Error::PutOnlyKey { action: "be the destination of a copy (it must write index files)" });
    }
    let verbatim = shares_secret(src, dst);
    if dst.write_only() && !verbatim {
        return Err(Error::WriteOnly {
            location: dst.location().into(),
            action: "copying into a repository not made with `init --from-repo` (re-encrypting reads its index)".into(),
        });
    }
    // A write-only destination cannot be read: what it holds is what this
    // client copied there before, as recorded in the cache.
    let mut record = match (dst.write_only(), dst.cache()) {
        (false, _) => None,
        (true, Some(cache)) => Some(CopyRecord::load(cache.dir())),
        (true, None) => {
            return Err(Error::WriteOnly {
                location: dst.location().into(),
                action: "copying without a cache directory (the cache records what was copied)".into(),
            });
        }
    };
    let src_index = Arc::new(handle.block_on(src.load_index())?);
    let (dst_index, existing) = match &record {
        Some(_) => (Arc::new(Index::default()), Vec::new()),
        None => (Arc::new(handle.block_on(dst.load_index())?), handle.block_on(dst.list_snapshots())?),
    };
    let mut already: HashSet<String> = existing
        .iter()
        .filter_map(|(_, s)| s.extra.get(COPIED_FROM).and_then(|v| v.as_str()).map(str::to_owned))
        .collect();
    if let Some(r) = &record {
        already.extend(r.snapshots.iter().map(|id| id.to_hex()));
    }
    let mut outcome = CopyOutcome { verbatim, ..Default::default() };
    let todo: Vec<&(SnapshotId, Snapshot)> = snapshots
        .iter()
        .filter(|(id, s)| {
            let copied = already.contains(&id.to_hex())
                || (outcome.verbatim
                    && existing.iter().any(|(_, d)| d.tree == s.tree && d.time == s.time && d.hostname == s.hostname));
            if copied {
                outcome.skipped.push(*id);
            }
            !copied
        })
        .collect();
    let loader = TreeLoader::new(src, src_index.clone(), handle.clone());
    let writer = Writer::new(dst, dst_index.clone())?;
    let trees: Vec<TreeId> = if outcome.verbatim {
        let copied_before: HashSet<Id> = record.iter().flat_map(|r| r.packs.iter().copied()).collect();
        let has = |blob: &Id| {
            dst_index.contains(blob) || src_index.get(blob).is_some_and(|(pack, _)| copied_before.contains(&pack.id))
        };
        let packs = copy_packs(&loader, dst, &has, &writer, &todo, handle, &mut outcome)?;
        if let (Some(r), Some(cache)) = (&mut record, dst.cache()) {
            // Recorded before the snapshots are written: a pack recorded but
            // not referenced is harmless; the reverse would lose data.
            r.packs.extend(packs);
            r.save(cache.dir())?;
        }
        todo.iter().map(|(_, s)| s.tree).collect()
    } else {
        let mut rewriter =
            Rewriter { loader: &loader, writer: &writer, handle, trees: HashMap::new(), blobs: HashMap::new() };
        let trees = todo.iter().map(|(_, s)| rewriter.tree(&s.tree)).collect::<Result<Vec<_>>>()?;
        let stats = writer.stats();
        outcome.blobs = stats.blobs_added;
        outcome.bytes = stats.stored_bytes_added;
        trees
    };
    // Snapshots last, after the data and index they need.
    for ((id, snapshot), tree) in todo.into_iter().zip(trees) {
        let mut copy = snapshot.clone();
        copy.tree = tree;
        copy.extra.insert(COPIED_FROM.into(), serde_json::json!(id));
        let new_id = handle.block_on(writer.commit(&copy))?;
        outcome.copied.push((*id, new_id));
        if let (Some(r), Some(cache)) = (&mut record, dst.cache()) {
            r.snapshots.push(*id);
            r.save(cache.dir())?;
        }
    }
    Ok(outcome)
}

/// What this client copied into a write-only destination (in the
/// destination's cache directory).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct CopyRecord {
    /// Packs stored there.
    packs: Vec<Id>,
    /// Source snapshots copied there.
    snapshots: Vec<SnapshotId>,
}

impl CopyRecord {
    fn load(dir: &std::path::Path) -> CopyRecord {
        std::fs::read(dir.join("copied.json")).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    fn save(&self, dir: &std::path::Path) -> Result<()> {
        let tmp = dir.join("copied.json.tmp");
        let json = serde_json::to_vec(self).expect("records serialize");
        std::fs::write(&tmp, json)
            .and_then(|()| std::fs::rename(&tmp, dir.join("copied.json")))
            .map_err(|e| Error::Io { context: format!("cannot record the copy in {}", dir.display()), source: e })
    }
}

/// Verbatim mode: copies the source packs holding blobs the destination
/// lacks, then indexes them in the destination.
/// Returns the packs it stored.
fn copy_packs(
    loader: &TreeLoader,
    dst: &Repository,
    has: &dyn Fn(&Id) -> bool,
    writer: &Writer,
    todo: &[&(SnapshotId, Snapshot)],
    handle: &Handle,
    outcome: &mut CopyOutcome,
) -> Result<Vec<Id>> {
    let src = loader.repository();
    let src_index = loader.index();
    // Every blob the snapshots reach that the destination lacks.
    let mut needed_packs: HashSet<Id> = HashSet::new();
    let mut seen: HashSet<TreeId> = HashSet::new();
    let mut stack: Vec<TreeId> = todo.iter().map(|(_, s)| s.tree).collect();
    let need = |id: &Id, packs: &mut HashSet<Id>| -> Result<()> {
        if !has(id) {
            let (pack, _) = src_index.get(id).ok_or(Error::BlobNotFound(*id))?;
            packs.insert(*pack.id);
        }
        Ok(())
    };
    while let Some(tree_id) = stack.pop() {
        if !seen.insert(tree_id) {
            continue;
        }
        need(&tree_id, &mut needed_packs)?;
        let tree = loader.load(&tree_id)?;
        for node in tree.nodes() {
            if let Some(sub) = node.subtree {
                stack.push(sub);
            }
            for extent in &node.content {
                if let Extent::Blob { id, .. } = extent {
                    need(id, &mut needed_packs)?;
                }
            }
        }
    }
    let mut packs: Vec<Id> = needed_packs.into_iter().collect();
    packs.sort();
    let mut indexed = Vec::with_capacity(packs.len());
    for pack in packs {
        let header = handle.block_on(src.read_pack_header(&pack))?;
        // A write-only destination cannot be asked; creating is idempotent.
        let stored = !dst.write_only() && handle.block_on(dst.backend().exists(FileKind::Pack, &pack))?;
        if !stored {
            let bytes = handle.block_on(src.backend().read(FileKind::Pack, &pack))?;
            if Id::of_object(&bytes) != pack {
                return Err(Error::corrupt(
                    FileKind::Pack.relative_path(&pack),
                    crate::format::envelope::FormatError::Mismatch("its content does not hash to its name".into()),
                ));
            }
            outcome.bytes += bytes.len() as u64;
            handle.block_on(dst.backend().write_new(FileKind::Pack, &pack, vec![bytes.clone()]))?;
            outcome.packs += 1;
            indexed.push(IndexedPack {
                id: PackId(pack),
                size: bytes.len() as u64,
                session_public: header.session_public,
                blobs: header.entries,
            });
        } else {
            let size = handle.block_on(dst.backend().size(FileKind::Pack, &pack))?;
            indexed.push(IndexedPack {
                id: PackId(pack),
                size,
                session_public: header.session_public,
                blobs: header.entries,
            });
        }
    }
    let ids: Vec<Id> = indexed.iter().map(|p| *p.id).collect();
    if !indexed.is_empty() {
        handle.block_on(writer.replace_index(indexed, Vec::new()))?;
    }
    Ok(ids)
}

/// Re-encrypted mode: rebuilds trees with the destination's ids, storing
/// each blob through the destination's writer.
struct Rewriter<'a> {
    loader: &'a TreeLoader,
    writer: &'a Writer,
    handle: &'a Handle,
    /// Source tree id → destination tree id.
    trees: HashMap<TreeId, TreeId>,
    /// Source data blob id → destination id.
    blobs: HashMap<DataId, DataId>,
}

impl Rewriter<'_> {
    fn tree(&mut self, id: &TreeId) -> Result<TreeId> {
        if let Some(done) = self.trees.get(id) {
            return Ok(*done);
        }
        let tree = self.loader.load(id)?;
        let mut nodes: Vec<Node> = Vec::with_capacity(tree.nodes().len());
        for node in tree.nodes() {
            let mut node = node.clone();
            if node.kind == NodeKind::Dir {
                if let Some(sub) = node.subtree {
                    node.subtree = Some(self.tree(&sub)?);
                }
            }
            for extent in node.content.iter_mut() {
                if let Extent::Blob { id, .. } = extent {
                    *id = self.blob(id)?;
                }
            }
            nodes.push(node);
        }
        let tree = Tree::new(nodes).map_err(|e| Error::corrupt(format!("tree {id}"), e))?;
        let new_id = self.handle.block_on(self.writer.add_tree(&tree))?;
        self.trees.insert(*id, new_id);
        Ok(new_id)
    }

    fn blob(&mut self, id: &DataId) -> Result<DataId> {
        if let Some(done) = self.blobs.get(id) {
            return Ok(*done);
        }
        let repo = self.loader.repository();
        let data = repo.read_blob_blocking(self.handle, self.loader.index(), id)?;
        let new_id = self.handle.block_on(self.writer.add_data(&data))?;
        self.blobs.insert(*id, new_id);
        Ok(new_id)
    }
}
