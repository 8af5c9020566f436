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

mod base;
mod restore;

pub use base::{
    BLOCK_SIZE_KEY, BaseBackupOptions, BaseBackupOutcome, BaseBackupSource, DEFAULT_BLOCK_SIZE, FROM_STANDBY_KEY,
    base_backup,
};
pub use restore::drill::{
    DRILL_METADATA_KEY, DRILL_TAG, PitrDrillOptions, PitrDrillReport, drill as pitr_drill, latest_reports, store_report,
};
pub use restore::{
    Archive, ArchivedSegment, BaseCandidate, Cluster, History, PitrRestoreOptions, PitrRestoreReport, Plan, PlanError,
    PlanInput, RecoveryEnd, RecoverySettings, RecoveryTarget, TargetAction, TimelineChoice, archive, plan,
    restore_and_configure, restore_command, restore_to_target,
};
