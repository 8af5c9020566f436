//! `pg check`: what would make a point-in-time restore fail or go wrong,
//! found from the snapshot list (pure over a [`WalCatalog`] and its
//! [`status`](super::status::status)): unreadable metadata, files archived
//! with different contents, gaps, timelines without their history file,
//! histories whose switch point lies beyond the parent's archived WAL, and
//! base backups no WAL makes consistent. [`verify_wal_data`] also reads
//! every archived file back.

use std::collections::HashMap;
use std::sync::Arc;

use cairn_repo::{Repository, Snapshot, SnapshotId, TreeLoader};
use serde::Serialize;

use super::catalog::WalCatalog;
use super::layout::{Lsn, WalFile, WalSegment};
use super::status::{ClusterStatus, segment_on_chain};
use super::wal::get::read_archived;
use super::wal::header;
use crate::error::Result;

/// One problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The cluster's system identifier, when the problem is in one.
    pub system_identifier: Option<String>,
    /// What is wrong and what follows from it.
    pub message: String,
}

/// Checks the catalog; `statuses` is [`status`](super::status::status) of it.
pub fn check(catalog: &WalCatalog, statuses: &[ClusterStatus]) -> Vec<Finding> {
    let mut out = Vec::new();
    for (id, why) in &catalog.unreadable {
        out.push(Finding { system_identifier: None, message: format!("snapshot {}: {why}", id.short()) });
    }
    for (sysid, cluster) in &catalog.clusters {
        let sys = Some(sysid.to_string());
        let finding = |message: String| Finding { system_identifier: sys.clone(), message };
        for name in cluster.files.keys() {
            if let Err(e) = WalFile::parse(name, cluster.segment_size) {
                out.push(finding(format!("{e}")));
            }
            let hashes = cluster.hashes(name);
            if hashes.len() > 1 {
                out.push(finding(format!(
                    "{name} is archived with {} different contents ({}): wal-get refuses it; find which is right and `cairn forget` the batch of the other",
                    hashes.len(),
                    hashes.join(", ")
                )));
            }
        }
        for (tli, history) in &cluster.histories {
            for entry in history {
                // The parent must be archived up to the switch point (its last byte before it).
                let last = Lsn(entry.switch_lsn.0.saturating_sub(1));
                let needed = WalSegment::containing(entry.timeline, last, cluster.segment_size);
                let newest_parent = cluster
                    .files
                    .keys()
                    .filter_map(|n| WalFile::parse(n, cluster.segment_size).ok())
                    .filter_map(|f| f.segment())
                    .filter(|s| s.timeline == entry.timeline)
                    .max();
                if let Some(newest) = newest_parent.filter(|s| *s < needed) {
                    out.push(finding(format!(
                        "timeline {tli} branches from timeline {} at {}, but that timeline's WAL is archived only up to {}: a restore onto timeline {tli} cannot get there",
                        entry.timeline,
                        entry.switch_lsn,
                        newest.name(cluster.segment_size)
                    )));
                }
            }
        }
        let Some(status) = statuses.iter().find(|s| s.system_identifier == sysid.to_string()) else { continue };
        for t in &status.timelines {
            if !t.history && t.segments > 0 {
                out.push(finding(format!(
                    "timeline {} has {} archived segments but no {:08X}.history: a restore cannot follow it from its parent",
                    t.timeline,
                    t.segments,
                    t.timeline.get()
                )));
            }
            for g in &t.gaps {
                out.push(finding(format!(
                    "timeline {}: {} segment(s) missing from {} to {}: no restore can cross them",
                    t.timeline, g.segments, g.first, g.last
                )));
            }
        }
        for b in &cluster.bases {
            let reachable = status.timelines.iter().any(|t| t.windows.iter().any(|w| w.base == b.id))
                || status.timelines.iter().flat_map(|t| &t.windows).any(|w| {
                    // An older base's window covering this one's start and stop also serves it.
                    w.from_lsn <= b.info.start_lsn && w.to_lsn >= b.info.stop_lsn
                });
            if !reachable {
                let chain = [(b.info.timeline, 0)];
                let start = segment_on_chain(&chain, b.info.start_segment().segno).name(cluster.segment_size);
                let stop = segment_on_chain(&chain, b.info.stop_segment().segno).name(cluster.segment_size);
                out.push(finding(format!(
                    "base backup {} ({}) cannot be restored: the WAL from {start} to {stop} is not all archived",
                    b.id.short(),
                    b.info.label
                )));
            }
        }
    }
    out
}

/// Reads every archived WAL file back, checking its hash (and a segment's
/// first page header); returns the problems.
pub async fn verify_wal_data(repo: &Repository, listing: &[(SnapshotId, Snapshot)]) -> Result<Vec<Finding>> {
    let catalog = WalCatalog::from_snapshots(listing);
    let snapshots: HashMap<SnapshotId, Snapshot> = listing.iter().cloned().collect();
    let index = Arc::new(repo.load_index().await?);
    let loader = TreeLoader::new(repo, index, tokio::runtime::Handle::current());
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for (sysid, cluster) in &catalog.clusters {
            for (name, copies) in &cluster.files {
                for copy in copies {
                    let Some(snapshot) = snapshots.get(&copy.snapshot) else { continue };
                    let problem = match read_archived(&loader, snapshot, name, &copy.blake3) {
                        Ok(bytes) if !name.contains('.') => header::read_long_header(&bytes)
                            .err()
                            .map(|e| e.to_string())
                            .or_else(|| (bytes.len() as u64 != copy.size).then(|| "size differs".to_owned())),
                        Ok(_) => None,
                        Err(e) => Some(e.to_string()),
                    };
                    if let Some(p) = problem {
                        out.push(Finding {
                            system_identifier: Some(sysid.to_string()),
                            message: format!("{name} in batch {}: {p}", copy.snapshot.short()),
                        });
                    }
                }
            }
        }
        out
    })
    .await
    .map_err(|e| crate::error::Error::Invalid(format!("reading the WAL back failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pitr::catalog::tests::{at, base, batch};
    use crate::pitr::status::status;

    fn findings(list: Vec<(SnapshotId, Snapshot)>) -> Vec<String> {
        let c = WalCatalog::from_snapshots(&list);
        check(&c, &status(&c, at(1000))).into_iter().map(|f| f.message).collect()
    }

    #[test]
    fn a_healthy_archive_has_no_findings() {
        let f = findings(vec![
            base(1, 5, 7, 1, "0/1000028", "0/1000100"),
            batch(2, 10, 7, &[("000000010000000000000001", "a"), ("000000010000000000000002", "b")]),
            batch(3, 20, 7, &[("000000010000000000000002", "b")]), // pushed twice, same content
        ]);
        assert!(f.is_empty(), "{f:?}");
    }

    #[test]
    fn problems_are_found() {
        for (list, expect) in [
            (
                vec![
                    batch(2, 10, 7, &[("000000010000000000000001", "a")]),
                    batch(3, 20, 7, &[("000000010000000000000001", "b")]),
                ],
                "2 different contents",
            ),
            (
                vec![batch(2, 10, 7, &[("000000010000000000000001", "a"), ("000000010000000000000003", "c")])],
                "1 segment(s) missing from 000000010000000000000002 to 000000010000000000000002",
            ),
            (vec![batch(2, 10, 7, &[("000000020000000000000003", "a")])], "no 00000002.history"),
            (
                vec![base(1, 5, 7, 1, "0/1000028", "0/2000100"), batch(2, 10, 7, &[("000000010000000000000001", "a")])],
                "cannot be restored",
            ),
            (
                vec![batch(2, 10, 7, &[("000000010000000000000001", "a"), ("00000002.history", "1\t0/5000000\tx\n")])],
                "archived only up to 000000010000000000000001",
            ),
        ] {
            let f = findings(list);
            assert!(f.iter().any(|m| m.contains(expect)), "{expect}: {f:?}");
        }
    }
}
