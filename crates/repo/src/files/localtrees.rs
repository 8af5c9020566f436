//! Trees kept on the client, for hosts with a put-only key.
//!
//! A put-only key can write but not read the repository, so it cannot load
//! its parent snapshot's trees to see which files changed. Instead, each
//! backup keeps the plaintext of the trees it writes in a local directory,
//! and the next backup compares against those. The trees are checked
//! against their (keyed) ids when read back, and the parent is used only
//! while its snapshot still exists in the repository (so prune keeps every
//! blob it references).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::id::{Id, SnapshotId, TreeId};
use crate::format::keys::KeyMaterial;
use crate::format::tree::Tree;

/// A directory of tree plaintexts plus the last snapshot written from it.
#[derive(Debug, Clone)]
pub struct LocalTrees {
    dir: PathBuf,
}

/// The snapshot a put-only client wrote last for one set of paths.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LocalParent {
    /// The snapshot.
    pub snapshot: SnapshotId,
    /// Its root tree.
    pub tree: TreeId,
}

impl LocalTrees {
    /// The state under `dir` (created if missing).
    pub fn open(dir: &Path) -> Result<LocalTrees> {
        std::fs::create_dir_all(dir.join("trees"))
            .map_err(|e| Error::Io { context: format!("cannot create {}", dir.display()), source: e })?;
        Ok(LocalTrees { dir: dir.to_owned() })
    }

    /// Keeps a tree's plaintext (failures only cost a full read next time).
    pub fn save(&self, id: &Id, plaintext: &[u8]) {
        let path = self.dir.join("trees").join(id.to_hex());
        if !path.exists() {
            let tmp = path.with_extension("tmp");
            if std::fs::write(&tmp, plaintext).and_then(|()| std::fs::rename(&tmp, &path)).is_err() {
                tracing::debug!("cannot keep tree {} locally", id.short());
            }
        }
    }

    /// A kept tree, if present and intact.
    pub fn load(&self, keys: &KeyMaterial, id: &Id) -> Result<Tree> {
        let path = self.dir.join("trees").join(id.to_hex());
        let bytes = std::fs::read(&path)
            .map_err(|e| Error::Io { context: format!("local tree {} is missing", id.short()), source: e })?;
        if keys.content_id(&bytes) != *id {
            return Err(Error::corrupt(
                path.display().to_string(),
                crate::format::envelope::FormatError::Mismatch("its content does not match its id".into()),
            ));
        }
        Tree::decode(&bytes).map_err(|e| Error::corrupt(path.display().to_string(), e))
    }

    /// The last snapshot written from this state.
    pub fn parent(&self) -> Option<LocalParent> {
        let text = std::fs::read(self.dir.join("parent.json")).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Records the snapshot just written, and forgets trees it does not use.
    pub fn set_parent(&self, keys: &KeyMaterial, parent: &LocalParent) -> Result<()> {
        let json = serde_json::to_vec(parent).expect("parents serialize");
        let tmp = self.dir.join("parent.json.tmp");
        std::fs::write(&tmp, json).and_then(|()| std::fs::rename(&tmp, self.dir.join("parent.json"))).map_err(|e| {
            Error::Io { context: format!("cannot record the parent in {}", self.dir.display()), source: e }
        })?;
        // Keep exactly the trees reachable from the new root.
        let mut keep = std::collections::HashSet::new();
        let mut stack = vec![parent.tree];
        while let Some(id) = stack.pop() {
            if keep.insert(id) {
                if let Ok(tree) = self.load(keys, &id) {
                    stack.extend(tree.nodes().iter().filter_map(|n| n.subtree));
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir(self.dir.join("trees")) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let known = name.to_str().and_then(|n| n.parse::<TreeId>().ok()).is_some_and(|id| keep.contains(&id));
                if !known {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(())
    }
}
