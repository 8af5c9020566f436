//! Snapshot files: forgetting one, and changing one's tags. A retagged
//! snapshot is rewritten (nothing is changed in place) with the id of the
//! one it replaces in `original`, then the old file is removed.

use std::sync::Arc;

use crate::error::Result;
use crate::format::id::SnapshotId;
use crate::format::index::Index;
use crate::format::snapshot::Snapshot;
use crate::repository::Repository;
use crate::storage::backend::FileKind;
use crate::writing::writer::Writer;

impl Repository {
    /// Removes snapshot `id` (only the snapshot file: its data stays until
    /// a prune finds nothing else uses it). Works on a damaged snapshot
    /// file too.
    pub async fn forget_snapshot(&self, id: &SnapshotId) -> Result<()> {
        self.backend().delete(FileKind::Snapshot, id).await
    }

    /// Gives snapshot `id` the tags `tags` (sorted, deduplicated, empty ones
    /// dropped). Returns the rewritten snapshot's id, or `None` when the
    /// tags were already those. The snapshot's trees are untouched.
    pub async fn set_tags(
        &self,
        id: &SnapshotId,
        snapshot: &Snapshot,
        mut tags: Vec<String>,
    ) -> Result<Option<(SnapshotId, Snapshot)>> {
        tags.retain(|t| !t.is_empty());
        tags.sort();
        tags.dedup();
        if tags == snapshot.tags {
            return Ok(None);
        }
        let mut rewritten = snapshot.clone();
        rewritten.tags = tags;
        rewritten.extra.entry("original").or_insert_with(|| serde_json::json!(id));
        // No blobs are added, so an empty index is enough.
        let writer = Writer::new(self, Arc::new(Index::default()))?;
        let new_id = writer.commit(&rewritten).await?;
        self.backend().delete(FileKind::Snapshot, id).await?;
        Ok(Some((new_id, rewritten)))
    }
}
