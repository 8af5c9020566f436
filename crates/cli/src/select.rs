//! Choosing snapshots: `latest`, id prefixes, and host/tag/path filters.

use std::path::Path;

use anyhow::{Result, bail};
use cairn_repo::{FileKind, Id, Repository, Snapshot};

use crate::args::SnapshotFilter;

impl SnapshotFilter {
    /// Whether `snapshot` passes every given filter.
    pub fn matches(&self, snapshot: &Snapshot) -> bool {
        let host_ok = self.hosts.is_empty() || self.hosts.contains(&snapshot.hostname);
        // Each --tag value is a comma-separated set that must be present in full; any one set suffices.
        let tags_ok = self.tags.is_empty()
            || self.tags.iter().any(|set| {
                set.split(',').map(str::trim).filter(|t| !t.is_empty()).all(|t| snapshot.tags.iter().any(|s| s == t))
            });
        let paths_ok = self.paths.iter().all(|p| {
            let wanted = absolute(p);
            snapshot.paths.iter().any(|s| Path::new(s) == wanted)
        });
        host_ok && tags_ok && paths_ok
    }
}

fn absolute(p: &Path) -> std::path::PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}

/// All snapshots passing `filter`, oldest first.
pub async fn filtered(repo: &Repository, filter: &SnapshotFilter) -> Result<Vec<(Id, Snapshot)>> {
    Ok(repo.list_snapshots().await?.into_iter().filter(|(_, s)| filter.matches(s)).collect())
}

/// One snapshot: `latest` (the newest passing `filter`) or an id prefix.
pub async fn one(repo: &Repository, arg: &str, filter: &SnapshotFilter) -> Result<(Id, Snapshot)> {
    if arg == "latest" {
        return match filtered(repo, filter).await?.pop() {
            Some(found) => Ok(found),
            None if *filter == SnapshotFilter::default() => bail!("the repository has no snapshots yet"),
            None => bail!("no snapshot matches the given --host/--tag/--path filters"),
        };
    }
    if arg.is_empty() || !arg.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("{arg:?} is not a snapshot id: give an id (or a unique prefix of one) or `latest`");
    }
    let id = repo.find_id(FileKind::Snapshot, arg).await?;
    Ok((id, repo.read_snapshot(&id).await?))
}

/// Several snapshots by argument; with none given, all passing `filter`.
pub async fn many(repo: &Repository, args: &[String], filter: &SnapshotFilter) -> Result<Vec<(Id, Snapshot)>> {
    if args.is_empty() {
        return filtered(repo, filter).await;
    }
    let mut out = Vec::new();
    for arg in args {
        let found = one(repo, arg, filter).await?;
        if !out.iter().any(|(id, _): &(Id, Snapshot)| *id == found.0) {
            out.push(found);
        }
    }
    Ok(out)
}

impl PartialEq for SnapshotFilter {
    fn eq(&self, other: &Self) -> bool {
        self.hosts == other.hosts && self.tags == other.tags && self.paths == other.paths
    }
}

/// Opens the repository and picks one snapshot (`latest` or an id prefix),
/// loading the index meanwhile; returns a tree loader over both.
pub async fn open_snapshot(
    global: &crate::args::GlobalArgs,
    arg: &str,
    filter: &SnapshotFilter,
) -> Result<(cairn_repo::TreeLoader, Id, Snapshot)> {
    let repo = crate::context::open(global).await?;
    let (index, (id, snapshot)) =
        tokio::try_join!(async { repo.load_index().await.map_err(anyhow::Error::from) }, one(&repo, arg, filter))?;
    let loader = cairn_repo::TreeLoader::new(&repo, std::sync::Arc::new(index), tokio::runtime::Handle::current());
    Ok((loader, id, snapshot))
}
