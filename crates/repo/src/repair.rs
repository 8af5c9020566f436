//! Repairs. `rebuild_index` recreates the index from the pack headers: for
//! a repository whose index files are lost or damaged, or that lists packs
//! that are gone.

use futures::StreamExt;

use crate::backend::FileKind;
use crate::error::Result;
use crate::id::Id;
use crate::index::{Index, IndexedPack};
use crate::repository::Repository;
use crate::writer::Writer;

/// What `rebuild_index` did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct IndexRebuild {
    /// Packs whose headers were read and indexed.
    pub packs_indexed: usize,
    /// Blobs in them.
    pub blobs_indexed: usize,
    /// Packs whose header could not be read, and why (their blobs are lost).
    pub unreadable_packs: Vec<(Id, String)>,
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
    let packs = backend.list(FileKind::Pack).await?;
    let headers: Vec<(Id, u64, Result<crate::pack::PackHeader>)> = futures::stream::iter(packs)
        .map(|(id, size)| async move { (id, size, repo.read_pack_header(&id).await) })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut report = IndexRebuild::default();
    let mut indexed = Vec::new();
    for (id, size, header) in headers {
        match header {
            Ok(h) => {
                report.blobs_indexed += h.entries.len();
                indexed.push(IndexedPack { id, size, session_public: h.session_public, blobs: h.entries });
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
