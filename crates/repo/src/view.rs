//! Reading a snapshot's trees: its root as users see it, paths inside it,
//! and depth-first walks. Restore, `ls`, `find`, `diff`, `stats` and `dump`
//! all go through here, so they agree on what a path in a snapshot means.
//!
//! **The view of a snapshot.** A backup of one directory (`/opt/app/backups`)
//! is seen as that directory's contents: `/db/x.sql` names
//! `/opt/app/backups/db/x.sql`, and a restore puts `db/` directly into the
//! target. A backup of several paths, of one file, or of a stream is seen as
//! a directory holding each source under its base name. Inside a snapshot of
//! one directory, the original absolute path is accepted too.
//!
//! The functions here block (they read trees through a runtime handle): call
//! them from a blocking thread.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::runtime::Handle;

use crate::error::{Error, Result};
use crate::format::blob::BlobType;
use crate::format::id::{Id, TreeId};
use crate::format::index::Index;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind, Tree};
use crate::repository::Repository;

/// Directories nested deeper than this are refused: a path that deep would
/// be far beyond what any file system takes (4096 bytes at most).
pub const MAX_TREE_DEPTH: usize = 2048;

/// A walk that has visited more entries than this checks how far the
/// snapshot expands: trees that reference the same subtree again and again
/// (41 tree blobs can describe 2^40 entries) would otherwise keep `ls` or
/// `restore` busy for ever.
const EXPANSION_CHECKED_AFTER: u64 = 1_000_000;

/// The most entries a walk visits per distinct entry stored. Real snapshots
/// repeat subtrees (copies of the same directory deduplicate to one tree),
/// but not ten thousand times over on average.
const MAX_EXPANSION: u64 = 10_000;

/// Trees a walk keeps once read, and the most entries they may hold in
/// all (a few hundred MB at worst; typical trees are a few KB).
const RECENT_TREES: usize = 256;
const RECENT_ENTRIES: usize = 1_000_000;

/// Loads and decodes tree blobs.
#[derive(Clone)]
pub struct TreeLoader {
    repo: Repository,
    index: Arc<Index>,
    handle: Handle,
    /// The data blob read last: bundled small files (FORMAT.md §11.1) of one
    /// directory share blobs, so reading them in turn decrypts each once.
    last_blob: Arc<std::sync::Mutex<Option<LastBlob>>>,
}

/// A data blob's id and plaintext.
type LastBlob = (Id, Arc<Vec<u8>>);

impl TreeLoader {
    /// A loader reading through `index`; `handle` runs the reads.
    pub fn new(repo: &Repository, index: Arc<Index>, handle: Handle) -> TreeLoader {
        TreeLoader { repo: repo.clone(), index, handle, last_blob: Arc::default() }
    }

    /// The repository.
    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    /// The index.
    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }

    /// The runtime handle.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Reads tree `id` (blocking).
    pub fn load(&self, id: &Id) -> Result<Tree> {
        let bytes = self.repo.read_blob_as_blocking(&self.handle, &self.index, id, BlobType::Tree)?;
        Tree::decode(&bytes).map_err(|e| Error::corrupt(format!("tree {id}"), e))
    }

    /// The snapshot's root as users see it (see the module docs): the one
    /// backed-up directory's node, or a directory node for the root tree.
    pub fn root(&self, snapshot: &Snapshot) -> Result<Node> {
        let tree = self.load(&snapshot.tree)?;
        if let [only] = tree.nodes() {
            if only.kind == NodeKind::Dir && snapshot.paths.len() <= 1 {
                return Ok(only.clone());
            }
        }
        let mut root = Node::new(b"/".to_vec(), NodeKind::Dir);
        root.mode = 0o755;
        root.subtree = Some(snapshot.tree);
        Ok(root)
    }

    /// The node at `path` in the snapshot's view (`""` or `/` is the root).
    pub fn resolve(&self, snapshot: &Snapshot, path: &str) -> Result<Node> {
        let mut node = self.root(snapshot)?;
        // Absolute source paths name entries only in the view of one directory.
        let one_directory = node.subtree != Some(snapshot.tree);
        let relative = if one_directory { relative_path(snapshot, path) } else { path };
        for component in relative.split('/').filter(|c| !c.is_empty() && *c != ".") {
            let Some(subtree) = node.subtree.filter(|_| node.kind == NodeKind::Dir) else {
                return Err(not_found(path));
            };
            let tree = self.load(&subtree)?;
            node = tree.get(component.as_bytes()).cloned().ok_or_else(|| not_found(path))?;
        }
        Ok(node)
    }

    /// Checks, before a walk, that the directory tree below `dir` stays
    /// within what walks accept, reading each distinct tree once: how many
    /// entries it expands to (a subtree referenced again counts again) and
    /// how deep it nests. A walk that writes as it goes (`restore`) calls
    /// this first, so a snapshot crafted to expand without end is refused
    /// before the first file is created, not a million files later.
    /// Returns the number of entries.
    pub fn measure(&self, dir: &Node) -> Result<u64> {
        let Some(root) = dir.subtree else { return Ok(0) };
        let bounds = WalkBounds::new(root);
        // Per distinct tree: entries below it, and its height.
        let mut measured: std::collections::HashMap<TreeId, (u64, usize)> = std::collections::HashMap::new();
        let mut distinct_entries = 0u64;
        // Post-order: a tree is measured once all its subtrees are.
        let mut stack: Vec<(TreeId, Tree, usize)> = Vec::new();
        let first = self.load(&root)?;
        distinct_entries += first.nodes().len() as u64;
        stack.push((root, first, 0));
        while let Some((_, tree, next)) = stack.last_mut() {
            let subtree = tree.nodes()[*next..]
                .iter()
                .position(|n| n.kind == NodeKind::Dir && n.subtree.is_some_and(|sub| !measured.contains_key(&sub)));
            if let Some(offset) = subtree {
                *next += offset + 1;
                let sub = tree.nodes()[*next - 1].subtree.expect("found as a directory with a subtree");
                // (A cycle would need a broken hash; it ends here too.)
                if stack.len() >= MAX_TREE_DEPTH {
                    return Err(bounds.refuse(format!("its directories nest deeper than {MAX_TREE_DEPTH}")));
                }
                let tree = self.load(&sub)?;
                distinct_entries += tree.nodes().len() as u64;
                stack.push((sub, tree, 0));
                continue;
            }
            let (id, tree, _) = stack.pop().expect("the loop holds a tree");
            let (mut entries, mut height) = (tree.nodes().len() as u64, 1);
            for sub in tree.nodes().iter().filter(|n| n.kind == NodeKind::Dir).filter_map(|n| n.subtree) {
                let (below, sub_height) = measured[&sub];
                entries = entries.saturating_add(below);
                height = height.max(sub_height + 1);
            }
            if height > MAX_TREE_DEPTH {
                return Err(bounds.refuse(format!("its directories nest deeper than {MAX_TREE_DEPTH}")));
            }
            if expands_too_far(entries, distinct_entries) {
                return Err(bounds.refuse(format!(
                    "its {distinct_entries} distinct entries expand to {entries} (each subtree is referenced \
                     over and over)"
                )));
            }
            measured.insert(id, (entries, height));
        }
        Ok(measured.get(&root).map(|m| m.0).unwrap_or(0))
    }

    /// Visits every entry below directory `dir` depth-first in name order,
    /// with its path relative to `dir` (`/a/b`). `visit` returns whether to
    /// descend into a directory.
    pub fn walk<E: From<Error>>(
        &self,
        dir: &Node,
        mut visit: impl FnMut(&[u8], &Node) -> std::result::Result<bool, E>,
    ) -> std::result::Result<(), E> {
        let Some(root) = dir.subtree else { return Ok(()) };
        let mut bounds = WalkBounds::new(root);
        // Subtrees repeat (copies of a directory deduplicate to one tree):
        // the last trees read are kept, not read and decrypted again.
        let mut recent: std::collections::HashMap<TreeId, Arc<Tree>> = std::collections::HashMap::new();
        let mut recent_entries = 0;
        let mut load = |id: &TreeId, bounds: &mut WalkBounds| -> Result<Arc<Tree>> {
            if let Some(tree) = recent.get(id) {
                return Ok(tree.clone());
            }
            let tree = Arc::new(self.load(id)?);
            bounds.loaded(id, &tree);
            if recent.len() >= RECENT_TREES || recent_entries + tree.nodes().len() > RECENT_ENTRIES {
                recent.clear();
                recent_entries = 0;
            }
            recent_entries += tree.nodes().len();
            recent.insert(*id, tree.clone());
            Ok(tree)
        };
        let mut stack: Vec<(Vec<u8>, Arc<Tree>, usize)> = vec![(Vec::new(), load(&root, &mut bounds)?, 0)];
        while let Some((prefix, tree, next)) = stack.last_mut() {
            let Some(node) = tree.nodes().get(*next) else {
                stack.pop();
                continue;
            };
            *next += 1;
            bounds.visited()?;
            let path = [prefix.as_slice(), b"/", &node.name].concat();
            if visit(&path, node)? && node.kind == NodeKind::Dir {
                if let Some(sub) = node.subtree {
                    if stack.len() >= MAX_TREE_DEPTH {
                        return Err(bounds.refuse(format!("its directories nest deeper than {MAX_TREE_DEPTH}")).into());
                    }
                    let tree = load(&sub, &mut bounds)?;
                    stack.push((path, tree, 0));
                }
            }
        }
        Ok(())
    }
}

/// Whether `entries` visited from `distinct_entries` stored ones is more
/// expansion than a real snapshot has: the rule walks refuse by, and that
/// `check` reports.
pub(crate) fn expands_too_far(entries: u64, distinct_entries: u64) -> bool {
    entries > EXPANSION_CHECKED_AFTER && entries > MAX_EXPANSION.saturating_mul(distinct_entries.max(1))
}

/// What a walk has seen, to refuse a snapshot that expands without end.
struct WalkBounds {
    root: TreeId,
    visited: u64,
    distinct_trees: HashSet<TreeId>,
    distinct_entries: u64,
}

impl WalkBounds {
    fn new(root: TreeId) -> WalkBounds {
        WalkBounds { root, visited: 0, distinct_trees: HashSet::new(), distinct_entries: 0 }
    }

    fn loaded(&mut self, id: &TreeId, tree: &Tree) {
        if self.distinct_trees.insert(*id) {
            self.distinct_entries += tree.nodes().len() as u64;
        }
    }

    fn visited(&mut self) -> Result<()> {
        self.visited += 1;
        if expands_too_far(self.visited, self.distinct_entries) {
            return Err(self.refuse(format!(
                "its {} distinct entries expand to more than {} (each subtree is referenced over and over)",
                self.distinct_entries, self.visited
            )));
        }
        Ok(())
    }

    fn refuse(&self, why: String) -> Error {
        Error::corrupt(
            format!("tree {}", self.root),
            crate::format::envelope::FormatError::Mismatch(format!(
                "{why}: a damaged or crafted snapshot; refusing to walk it"
            )),
        )
    }
}

impl TreeLoader {
    /// A reader of a file node's content (blobs fetched one at a time;
    /// holes read as zeros).
    pub fn content(&self, node: &Node) -> ContentReader<'_> {
        ContentReader {
            loader: self,
            extents: node.content.clone().into_iter(),
            current: Arc::default(),
            pos: 0,
            end: 0,
            hole: 0,
        }
    }

    /// A data blob's plaintext, from the one-blob cache or the repository.
    fn data_blob(&self, id: &Id) -> Result<Arc<Vec<u8>>> {
        let cached = self.last_blob.lock().ok().and_then(|last| last.clone());
        if let Some((_, blob)) = cached.filter(|(last, _)| last == id) {
            return Ok(blob);
        }
        let blob = Arc::new(self.repo.read_blob_as_blocking(&self.handle, &self.index, id, BlobType::Data)?);
        if let Ok(mut last) = self.last_blob.lock() {
            *last = Some((*id, Arc::clone(&blob)));
        }
        Ok(blob)
    }
}

/// Reads a file's content from the repository, blob by blob.
pub struct ContentReader<'a> {
    loader: &'a TreeLoader,
    extents: std::vec::IntoIter<crate::format::tree::Extent>,
    /// The current extent's blob, and the range of it still to read.
    current: Arc<Vec<u8>>,
    pos: usize,
    end: usize,
    hole: u64,
}

impl std::io::Read for ContentReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use crate::format::tree::Extent;
        loop {
            if self.hole > 0 {
                let n = (buf.len() as u64).min(self.hole) as usize;
                buf[..n].fill(0);
                self.hole -= n as u64;
                return Ok(n);
            }
            if self.pos < self.end {
                let n = buf.len().min(self.end - self.pos);
                buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            match self.extents.next() {
                None => return Ok(0),
                Some(Extent::Hole { length }) => self.hole = length,
                Some(Extent::Blob { id, offset, length }) => {
                    let blob = self.loader.data_blob(&id).map_err(std::io::Error::other)?;
                    let (start, end) = (offset as usize, offset as usize + length as usize);
                    if end > blob.len() {
                        return Err(std::io::Error::other(format!("the snapshot refers past the end of blob {id}")));
                    }
                    self.current = blob;
                    (self.pos, self.end) = (start, end);
                }
            }
        }
    }
}

fn not_found(path: &str) -> Error {
    Error::PathNotInSnapshot(path.to_owned())
}

/// `path` relative to the snapshot's view: an absolute source path of a
/// one-directory snapshot loses that prefix.
fn relative_path<'p>(snapshot: &Snapshot, path: &'p str) -> &'p str {
    if let [source] = snapshot.paths.as_slice() {
        let source = source.trim_end_matches('/');
        if !source.is_empty() {
            if let Some(rest) = path.strip_prefix(source) {
                if rest.is_empty() || rest.starts_with('/') {
                    return rest;
                }
            }
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_source_paths_are_stripped() {
        let snap = Snapshot::new(Default::default(), vec!["/opt/app/backups".into()]);
        assert_eq!(relative_path(&snap, "/opt/app/backups/db/x"), "/db/x");
        assert_eq!(relative_path(&snap, "/opt/app/backups"), "");
        assert_eq!(relative_path(&snap, "/opt/app/backupsX"), "/opt/app/backupsX");
        assert_eq!(relative_path(&snap, "/db"), "/db");
    }
}
