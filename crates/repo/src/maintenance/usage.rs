//! What a repository holds, in the three sizes that matter for a bill and
//! for the ratios people watch: what a restore of every snapshot would
//! write, the distinct data after deduplication, and what the storage
//! keeps after compression.

use serde::{Deserialize, Serialize};

use crate::format::blob::BlobType;
use crate::format::id::SnapshotId;
use crate::format::index::Index;
use crate::format::snapshot::Snapshot;

/// A repository's sizes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Snapshots.
    pub snapshots: u64,
    /// What restoring every snapshot would write (from their summaries; a
    /// snapshot without one counts as 0).
    pub logical_bytes: u64,
    /// The distinct data blobs, uncompressed.
    pub raw_bytes: u64,
    /// Every indexed pack (data and trees, compressed and encrypted).
    pub stored_bytes: u64,
    /// Indexed packs.
    pub packs: u64,
}

impl Usage {
    /// Measures from the index and the snapshot list (no pack is read).
    pub fn measure(index: &Index, snapshots: &[(SnapshotId, Snapshot)]) -> Usage {
        let raw_bytes = index
            .blobs()
            .filter(|(_, location)| location.blob_type == BlobType::Data)
            .map(|(_, location)| location.raw_length as u64)
            .sum();
        Usage {
            snapshots: snapshots.len() as u64,
            logical_bytes: snapshots.iter().filter_map(|(_, s)| s.summary.as_ref()).map(|s| s.total_bytes).sum(),
            raw_bytes,
            stored_bytes: index.packs().iter().map(|p| p.size).sum(),
            packs: index.packs().len() as u64,
        }
    }

    /// Logical ÷ raw: how many times deduplication shrank the snapshots.
    pub fn dedup_ratio(&self) -> Option<f64> {
        ratio(self.logical_bytes, self.raw_bytes)
    }

    /// Raw ÷ stored: what compression saved (below 1 when there is little
    /// to compress, as encryption and headers add a little).
    pub fn compression_ratio(&self) -> Option<f64> {
        ratio(self.raw_bytes, self.stored_bytes)
    }
}

fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}
