//! Snapshots: the root of one backup.
//!
//! A snapshot file is a sealed envelope (magic `cairnSN1`) whose payload is
//! JSON. Fields this version does not know are kept in [`Snapshot::extra`],
//! so rewriting a snapshot (tags, repair) never drops what a newer cairn wrote.

use serde::{Deserialize, Serialize};

use crate::format::id::{SnapshotId, TreeId};

/// One backup: what was saved, when, from where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// When the backup was taken (or the time given with `--time`).
    pub time: jiff::Timestamp,
    /// Root tree blob.
    pub tree: TreeId,
    /// The paths that were backed up, as given.
    pub paths: Vec<String>,
    /// Host name.
    pub hostname: String,
    /// User name.
    #[serde(default)]
    pub username: String,
    /// Tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The snapshot this one was compared against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<SnapshotId>,
    /// Program that wrote it, e.g. `cairn 0.1.0`.
    pub program_version: String,
    /// What the backup that wrote it counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<SnapshotSummary>,
    /// Fields written by other versions, preserved as they are.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Snapshot {
    /// A snapshot of `paths` with root `tree`, taken now on this host.
    pub fn new(tree: TreeId, paths: Vec<String>) -> Snapshot {
        Snapshot {
            time: jiff::Timestamp::now(),
            tree,
            paths,
            hostname: crate::util::hostname(),
            username: crate::util::username(),
            tags: Vec::new(),
            parent: None,
            program_version: format!("cairn {}", env!("CARGO_PKG_VERSION")),
            summary: None,
            extra: serde_json::Map::new(),
        }
    }
}

/// Counts a backup records in its snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotSummary {
    /// Files not in the parent snapshot.
    pub files_new: u64,
    /// Files whose metadata differed from the parent's, so they were read.
    pub files_changed: u64,
    /// Files taken from the parent without reading them.
    pub files_unchanged: u64,
    /// Directories.
    pub dirs: u64,
    /// Directories whose tree was taken from the parent snapshot as it was,
    /// found unchanged by the local directory cache without walking into
    /// them (counted in `dirs` too; absent when 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dirs_reused: u64,
    /// Entries that could not be read (recorded with an error in their tree).
    pub errors: u64,
    /// Bytes of all files in the snapshot.
    pub total_bytes: u64,
    /// Bytes read from files.
    pub bytes_read: u64,
    /// Bytes the backup added to the repository (after dedup, compression, encryption).
    pub bytes_added: u64,
    /// Wall-clock duration of the backup in seconds.
    pub duration_secs: f64,
    /// Fields written by other versions, preserved as they are.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_survive_a_round_trip() {
        let json = r#"{"time":"2026-01-02T03:04:05.123456789Z","tree":"0101010101010101010101010101010101010101010101010101010101010101",
            "paths":["/srv"],"hostname":"h","program_version":"cairn 9","future_field":{"a":1}}"#;
        let s: Snapshot = serde_json::from_str(json).unwrap();
        assert_eq!(s.extra["future_field"]["a"], 1);
        let again: Snapshot = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
        assert_eq!(again, s);
    }

    /// Found by the snapshot fuzzer: without serde_json's `float_roundtrip`,
    /// a float in an unknown field changed in its last digit on every rewrite.
    #[test]
    fn floats_in_unknown_fields_are_preserved_exactly() {
        let json = r#"{"time":"2026-01-02T03:04:05Z","tree":"0101010101010101010101010101010101010101010101010101010101010101",
            "paths":[],"hostname":"h","program_version":"x","future":{"a":[0,-1.0101010100505052e+21,3.5]}}"#;
        let first = serde_json::to_vec(&serde_json::from_str::<Snapshot>(json).unwrap()).unwrap();
        let second = serde_json::to_vec(&serde_json::from_slice::<Snapshot>(&first).unwrap()).unwrap();
        assert_eq!(first, second);
    }
}
