//! `pg forget`: retention that cannot break the chain. The base backups
//! to keep are chosen by the ordinary policy (`--keep-daily` ...); then a
//! WAL batch is removed only if every file in it lies before the oldest
//! kept base backup's start, none is a `.history` file, and it is older
//! than the WAL window. With no base backup kept, all WAL is kept. Pure:
//! [`plan_wal_retention`] decides, the caller forgets.

use std::collections::BTreeSet;

use cairn_repo::SnapshotId;
use serde::Serialize;

use super::catalog::ClusterWal;
use super::layout::WalFile;

/// The verdict on one WAL batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalVerdict {
    /// The batch snapshot.
    pub id: SnapshotId,
    /// Kept or removed.
    pub keep: bool,
    /// Why.
    pub reason: String,
}

/// Decides which WAL batches of `cluster` to keep, given the base backups
/// kept (`kept_bases`) and the WAL window (batches committed after
/// `keep_since` are kept whatever they hold).
pub fn plan_wal_retention(
    cluster: &ClusterWal,
    kept_bases: &BTreeSet<SnapshotId>,
    keep_since: Option<jiff::Timestamp>,
) -> Vec<WalVerdict> {
    let oldest_start = cluster.bases.iter().filter(|b| kept_bases.contains(&b.id)).map(|b| b.info.start_lsn).min();
    let boundary = oldest_start.map(|lsn| lsn.0 / cluster.segment_size.bytes());
    cluster
        .batches
        .iter()
        .map(|batch| {
            let verdict = |keep: bool, reason: &str| WalVerdict { id: batch.id, keep, reason: reason.to_owned() };
            let Some(boundary) = boundary else {
                return verdict(true, "no base backup is kept: all WAL is kept");
            };
            if keep_since.is_some_and(|since| batch.time >= since) {
                return verdict(true, "within the WAL window");
            }
            let mut needed = false;
            for name in &batch.files {
                match WalFile::parse(name, cluster.segment_size) {
                    Ok(WalFile::History(_)) => return verdict(true, "holds a timeline history file"),
                    Ok(f) => needed |= f.segment().is_none_or(|s| s.segno >= boundary),
                    Err(_) => return verdict(true, "holds a file whose name is not understood"),
                }
            }
            if needed {
                verdict(true, "holds WAL from the oldest kept base backup's start on")
            } else {
                verdict(false, "all its WAL precedes the oldest kept base backup")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pitr::catalog::WalCatalog;
    use crate::pitr::catalog::tests::{at, base, batch, id};

    #[test]
    fn plans() {
        let list = vec![
            batch(1, 10, 7, &[("000000010000000000000001", "a"), ("000000010000000000000002", "b")]),
            batch(2, 20, 7, &[("000000010000000000000003", "c"), ("000000010000000000000004", "d")]),
            batch(3, 30, 7, &[("00000002.history", "1\t0/1000000\tx\n")]),
            batch(4, 40, 7, &[("000000010000000000000004.00000028.backup", "e")]),
            base(10, 5, 7, 1, "0/1000028", "0/1000100"),
            base(11, 25, 7, 1, "0/4000028", "0/4000100"),
        ];
        let c = WalCatalog::from_snapshots(&list);
        let cluster = c.cluster(7).unwrap();
        let keeps = |bases: &[u8], since: Option<i64>| -> Vec<bool> {
            let kept: BTreeSet<SnapshotId> = bases.iter().map(|n| id(*n)).collect();
            plan_wal_retention(cluster, &kept, since.map(at)).iter().map(|v| v.keep).collect()
        };
        for (bases, since, expect) in [
            (vec![10, 11], None, vec![true, true, true, true]),
            (vec![11], None, vec![false, true, true, true]),
            (vec![11], Some(5), vec![true, true, true, true]),
            (vec![11], Some(15), vec![false, true, true, true]),
            (vec![], None, vec![true, true, true, true]),
        ] {
            assert_eq!(keeps(&bases, since), expect, "{bases:?} {since:?}");
        }
        // A base starting in segment 5 leaves batch 2 (segments 3, 4) behind too.
        let list2 = [list.clone(), vec![base(12, 50, 7, 1, "0/5000028", "0/5000100")]].concat();
        let c2 = WalCatalog::from_snapshots(&list2);
        let kept: BTreeSet<SnapshotId> = [id(12)].into();
        let v: Vec<bool> = plan_wal_retention(c2.cluster(7).unwrap(), &kept, None).iter().map(|v| v.keep).collect();
        assert_eq!(v, vec![false, false, true, false]);
    }
}
