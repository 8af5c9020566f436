//! From `--host`, `--tag` and `--path` to the library's snapshot filter,
//! and opening one snapshot by argument.

use anyhow::Result;
use cairn_repo::{Snapshot, SnapshotFilter, SnapshotId, TreeLoader};

use crate::args::{FilterArgs, GlobalArgs};

impl FilterArgs {
    /// The library's filter: each `--tag` value is a comma-separated set
    /// that must be present in full (any one set suffices); `--path` values
    /// are made absolute, as backups record them.
    pub fn filter(&self) -> SnapshotFilter {
        SnapshotFilter {
            hosts: self.hosts.clone(),
            tag_sets: self
                .tags
                .iter()
                .map(|set| set.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned).collect())
                .collect(),
            paths: self
                .paths
                .iter()
                .map(|p| match p.to_str() {
                    // A bucket's snapshots record its location (`s3:uploads`), not a file path.
                    Some(location) if cairn_repo::is_bucket_location(location) && !p.exists() => location.to_owned(),
                    _ => std::path::absolute(p).unwrap_or_else(|_| p.clone()).to_string_lossy().into_owned(),
                })
                .collect(),
        }
    }
}

/// Opens the repository and one snapshot (`latest` or an id prefix) with a
/// loader for its trees.
pub async fn open_snapshot(
    global: &GlobalArgs,
    arg: &str,
    filter: &SnapshotFilter,
) -> Result<(TreeLoader, SnapshotId, Snapshot)> {
    let repo = crate::context::open(global).await?;
    Ok(repo.open_snapshot(arg, filter).await?)
}
