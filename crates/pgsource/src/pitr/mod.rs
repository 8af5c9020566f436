//! Point-in-time recovery: continuous WAL archiving and physical base
//! backups in a cairn repository.
//!
//! The layout (module `layout`) is the storage contract every part shares: WAL positions and
//! file names, the tags and snapshot paths of `pg-wal` batches and
//! `pg-base` backups, and the metadata they carry (FORMAT.md, "PostgreSQL
//! point-in-time recovery").

mod layout;

pub use layout::{
    BASE_DATA_DIR, BASE_TABLESPACES_DIR, BASE_TAG, BaseBackupInfo, HistoryEntry, LayoutError, Lsn, METADATA_KEY,
    PitrInfo, SegmentSize, TablespaceEntry, TimelineId, WAL_DIR, WAL_TAG, WalBatchInfo, WalFile, WalFileEntry,
    WalSegment, base_snapshot_path, parse_history, wal_snapshot_path, wal_tree_path,
};
