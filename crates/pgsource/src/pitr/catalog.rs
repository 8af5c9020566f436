//! What the repository holds for point-in-time recovery, from the snapshot
//! list alone (no tree reads): per cluster, every archived WAL file with
//! the batches that hold it, the timeline histories, the base backups and
//! the reports `pg drill --pitr` stored.
//! `wal-get`, `pitr-status`, `check` and `forget` all start here.

use std::collections::BTreeMap;

use cairn_repo::{Snapshot, SnapshotId};

use super::layout::{
    BASE_TAG, BaseBackupInfo, HistoryEntry, PitrInfo, SegmentSize, TimelineId, WAL_TAG, WalFile, base_snapshot_path,
    parse_history, wal_snapshot_path,
};
use super::restore::drill::{DRILL_TAG, PitrDrillReport};

/// One stored copy of a WAL file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedCopy {
    /// The batch snapshot holding it.
    pub snapshot: SnapshotId,
    /// When that batch was committed.
    pub time: jiff::Timestamp,
    /// The file's size.
    pub size: u64,
    /// The BLAKE3 hash of its content.
    pub blake3: String,
}

/// A WAL batch snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchEntry {
    /// Its id.
    pub id: SnapshotId,
    /// When it was committed.
    pub time: jiff::Timestamp,
    /// The files it holds.
    pub files: Vec<String>,
}

/// A base backup snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct BaseEntry {
    /// Its id.
    pub id: SnapshotId,
    /// The snapshot's time.
    pub time: jiff::Timestamp,
    /// What it records.
    pub info: BaseBackupInfo,
}

/// A stored `pg drill --pitr` report.
#[derive(Debug, Clone, PartialEq)]
pub struct DrillEntry {
    /// The report's snapshot.
    pub id: SnapshotId,
    /// The report.
    pub report: PitrDrillReport,
}

/// The archive of one cluster (one system identifier).
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterWal {
    /// The cluster's WAL segment size (from its batches or bases).
    pub segment_size: SegmentSize,
    /// Every archived file by name, with each copy (several copies with
    /// one hash are harmless; different hashes are a problem `check` reports).
    pub files: BTreeMap<String, Vec<ArchivedCopy>>,
    /// The batches, oldest first.
    pub batches: Vec<BatchEntry>,
    /// The base backups, oldest first.
    pub bases: Vec<BaseEntry>,
    /// Each timeline's ancestors, from its archived `.history` file.
    pub histories: BTreeMap<TimelineId, Vec<HistoryEntry>>,
    /// The drill reports stored for it, oldest first.
    pub drills: Vec<DrillEntry>,
}

/// What the snapshot list says about PITR, by cluster.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WalCatalog {
    /// Clusters by system identifier.
    pub clusters: BTreeMap<u64, ClusterWal>,
    /// `pg-wal`/`pg-base` snapshots whose metadata could not be read, and why.
    pub unreadable: Vec<(SnapshotId, String)>,
}

impl WalCatalog {
    /// Builds the catalog from a snapshot listing (oldest first, as
    /// [`Repository::list_snapshots`](cairn_repo::Repository::list_snapshots) gives it).
    pub fn from_snapshots(snapshots: &[(SnapshotId, Snapshot)]) -> WalCatalog {
        let mut catalog = WalCatalog::default();
        let mut drills = Vec::new();
        for (id, snapshot) in snapshots {
            if snapshot.tags.iter().any(|t| t == DRILL_TAG) {
                match PitrDrillReport::of(snapshot) {
                    Some(report) => drills.push(DrillEntry { id: *id, report }),
                    None => catalog.unreadable.push((*id, "its `pitr_drill` report is missing or unreadable".into())),
                }
                continue;
            }
            let tagged = snapshot.tags.iter().any(|t| t == WAL_TAG || t == BASE_TAG);
            let info = match PitrInfo::of(snapshot) {
                None if tagged => {
                    catalog.unreadable.push((*id, "it has no `pitr` metadata".into()));
                    continue;
                }
                None => continue,
                Some(Err(e)) => {
                    catalog.unreadable.push((*id, format!("its `pitr` metadata is unreadable: {e}")));
                    continue;
                }
                Some(Ok(info)) => info,
            };
            let expected = match &info {
                PitrInfo::Wal(w) => wal_snapshot_path(w.system_identifier),
                PitrInfo::Base(b) => base_snapshot_path(b.system_identifier),
            };
            if snapshot.paths != [expected.clone()] {
                catalog.unreadable.push((
                    *id,
                    format!(
                        "its paths {:?} do not name the cluster of its metadata ({expected}): written by something else, or edited",
                        snapshot.paths
                    ),
                ));
            }
            match info {
                PitrInfo::Wal(batch) => {
                    let mut bad_history = Vec::new();
                    let cluster = catalog.cluster_entry(batch.system_identifier, batch.wal_segment_size);
                    let mut names = Vec::new();
                    for f in batch.files {
                        if let Some(text) = &f.history {
                            if let Ok(WalFile::History(tli)) = WalFile::parse(&f.name, batch.wal_segment_size) {
                                match parse_history(text) {
                                    Ok(h) => {
                                        cluster.histories.insert(tli, h);
                                    }
                                    Err(e) => bad_history.push((*id, format!("{}: {e}", f.name))),
                                }
                            }
                        }
                        names.push(f.name.clone());
                        let copy = ArchivedCopy { snapshot: *id, time: snapshot.time, size: f.size, blake3: f.blake3 };
                        cluster.files.entry(f.name).or_default().push(copy);
                    }
                    cluster.batches.push(BatchEntry { id: *id, time: snapshot.time, files: names });
                    catalog.unreadable.extend(bad_history);
                }
                PitrInfo::Base(info) => {
                    let cluster = catalog.cluster_entry(info.system_identifier, info.wal_segment_size);
                    cluster.bases.push(BaseEntry { id: *id, time: snapshot.time, info });
                }
            }
        }
        // A report belongs to a cluster the repository archives (one of
        // another cluster's, if any, has nothing to show next to).
        for drill in drills {
            if let Some(cluster) =
                drill.report.system_identifier.parse::<u64>().ok().and_then(|s| catalog.clusters.get_mut(&s))
            {
                cluster.drills.push(drill);
            }
        }
        catalog
    }

    fn cluster_entry(&mut self, sysid: u64, size: SegmentSize) -> &mut ClusterWal {
        self.clusters.entry(sysid).or_insert_with(|| ClusterWal {
            segment_size: size,
            files: BTreeMap::new(),
            batches: Vec::new(),
            bases: Vec::new(),
            histories: BTreeMap::new(),
            drills: Vec::new(),
        })
    }

    /// The archive of cluster `sysid`.
    pub fn cluster(&self, sysid: u64) -> Option<&ClusterWal> {
        self.clusters.get(&sysid)
    }
}

impl ClusterWal {
    /// The content hashes a name is stored with, distinct.
    pub fn hashes(&self, name: &str) -> Vec<&str> {
        let mut out: Vec<&str> =
            self.files.get(name).map(|c| c.iter().map(|c| c.blake3.as_str()).collect()).unwrap_or_default();
        out.sort();
        out.dedup();
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::pitr::layout::{METADATA_KEY, WalBatchInfo, WalFileEntry};

    pub(crate) fn id(n: u8) -> SnapshotId {
        SnapshotId(cairn_repo::Id([n; 32]))
    }

    pub(crate) fn at(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_790_000_000 + secs).unwrap()
    }

    /// A `pg-wal` snapshot of `files` (name, hash; history text for .history).
    pub(crate) fn batch(n: u8, secs: i64, sysid: u64, files: &[(&str, &str)]) -> (SnapshotId, Snapshot) {
        let mut s = Snapshot::new(Default::default(), vec![format!("/pg-wal/{sysid}")]);
        s.time = at(secs);
        s.tags = vec![WAL_TAG.into()];
        let files = files
            .iter()
            .map(|(name, h)| WalFileEntry {
                name: name.to_string(),
                size: 16 << 20,
                blake3: if name.ends_with(".history") { "hh".into() } else { h.to_string() },
                history: name.ends_with(".history").then(|| h.to_string()),
            })
            .collect();
        let info = PitrInfo::Wal(WalBatchInfo {
            system_identifier: sysid,
            wal_segment_size: SegmentSize::DEFAULT,
            files,
            extra: Default::default(),
        });
        s.extra.insert(METADATA_KEY.into(), info.to_value());
        (id(n), s)
    }

    /// A `pg-base` snapshot starting at `start` and stopping at `stop` (LSNs) on timeline `tli`.
    pub(crate) fn base(n: u8, secs: i64, sysid: u64, tli: u32, start: &str, stop: &str) -> (SnapshotId, Snapshot) {
        let mut s = Snapshot::new(Default::default(), vec![format!("/pg-base/{sysid}")]);
        s.time = at(secs);
        s.tags = vec![BASE_TAG.into()];
        let info = serde_json::json!({"kind":"base","system_identifier":sysid.to_string(),"pg_version_num":150020,
            "wal_segment_size":16777216,"timeline":tli,"start_lsn":start,"stop_lsn":stop,
            "start_wal":"","stop_wal":"","start_time":at(secs - 5),"stop_time":at(secs),
            "backup_label":"","tablespace_map":null,"tablespaces":[],"label":"t"});
        s.extra.insert(METADATA_KEY.into(), info);
        (id(n), s)
    }

    #[test]
    fn catalog_from_listing() {
        let mut untagged = Snapshot::new(Default::default(), vec!["/srv".into()]);
        untagged.time = at(0);
        let mut broken = Snapshot::new(Default::default(), vec!["/pg-wal/7".into()]);
        broken.tags = vec![WAL_TAG.into()];
        let list = vec![
            (id(1), untagged),
            batch(2, 10, 7, &[("000000010000000000000001", "a"), ("000000010000000000000002", "b")]),
            batch(3, 20, 7, &[("000000010000000000000002", "c"), ("00000002.history", "1\t0/2800000\tx\n")]),
            base(4, 30, 7, 1, "0/1000028", "0/1000100"),
            batch(5, 40, 9, &[("000000010000000000000001", "z")]),
            (id(6), broken),
            {
                let (i, mut s) = batch(7, 50, 7, &[("000000010000000000000009", "x")]);
                s.paths = vec!["/pg-wal/8".into()];
                (i, s)
            },
        ];
        let c = WalCatalog::from_snapshots(&list);
        assert_eq!(c.clusters.len(), 2);
        assert_eq!(c.unreadable.len(), 2, "{:?}", c.unreadable);
        assert!(c.unreadable[1].1.contains("do not name the cluster"));
        let seven = c.cluster(7).unwrap();
        assert_eq!(seven.files.len(), 4);
        assert_eq!(seven.hashes("000000010000000000000002"), vec!["b", "c"]);
        assert_eq!(seven.batches.len(), 3);
        assert_eq!(seven.bases.len(), 1);
        assert_eq!(seven.histories[&TimelineId::new(2).unwrap()][0].switch_lsn.to_string(), "0/2800000");
    }
}
