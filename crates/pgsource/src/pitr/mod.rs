//! Point-in-time recovery: continuous WAL archiving and physical base
//! backups in a cairn repository.
//!
//! The layout (module `layout`) is the storage contract every part shares:
//! WAL positions and file names, the tags and snapshot paths of `pg-wal`
//! batches and `pg-base` backups, and the metadata they carry (FORMAT.md,
//! "PostgreSQL point-in-time recovery").
//!
//! The WAL side: [`push_foreground`] and [`run_pusher`] (`wal-push`),
//! [`get_from_spool`] and [`get_from_repository`] (`wal-get`), the
//! [`WalCatalog`] of what the snapshot list says is archived, [`status`]
//! (`pitr-status`), [`check()`] and [`verify_wal_data`] (`pg check`), and
//! [`plan_wal_retention`] (`pg forget`).
//!
//! The base side: [`BaseBackupSource`] (`base-backup`), [`TarBaseSource`]
//! (`base-backup --from-tar`), [`plan`] and
//! [`restore_to_target`] (`pg restore --to-*`), [`pitr_drill`] and
//! [`store_report`] (`pg drill --pitr`).

mod base;
mod catalog;
mod check;
mod layout;
mod restore;
mod retention;
mod status;
mod wal;

pub use catalog::{ArchivedCopy, BaseEntry, BatchEntry, ClusterWal, DrillEntry, WalCatalog};
pub use check::{Finding, check, verify_wal_data};
pub use layout::{
    BASE_DATA_DIR, BASE_TABLESPACES_DIR, BASE_TAG, BaseBackupInfo, HistoryEntry, LayoutError, Lsn, METADATA_KEY,
    PitrInfo, SegmentSize, TablespaceEntry, TimelineId, WAL_DIR, WAL_TAG, WalBatchInfo, WalFile, WalFileEntry,
    WalSegment, base_snapshot_path, parse_history, wal_snapshot_path, wal_tree_path,
};

pub use base::from_tar::{TarBaseOptions, TarBaseSource};
pub(crate) use base::from_tar::{relative_path as tar_relative_path, stop_lsn_of as manifest_stop_lsn};
pub use base::label::{Label as BackupLabel, parse as parse_backup_label};
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
pub use retention::{WalVerdict, plan_wal_retention};
pub use status::{ClusterStatus, DrillStatus, Gap, TimelineStatus, Window, chain, segment_on_chain, status};
pub use wal::get::{
    FetchPlan, GetOptions, GetOutcome, choose_cluster, get_from_repository, get_from_spool, needs_prefetch, plan_fetch,
    prefetch,
};
pub use wal::header::{HeaderError, LongHeader, check_segment, magic_of, major_of, read_long_header};
pub use wal::push::{
    ForegroundOptions, PushOutcome, PushTimings, PusherOptions, PusherReport, Verdict, is_plausible_name,
    push_foreground, run_pusher, select_batch, verdict,
};
pub use wal::spool::{DEFAULT_SPOOL_NAME, PusherLock, Spool};
