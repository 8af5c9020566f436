//! # cairn-repo
//!
//! cairn's repository: an encrypted, deduplicated store of blobs, packs,
//! index files and snapshots on any object store. The on-disk format is
//! specified in `FORMAT.md` at the root of the cairn source tree.
//!
//! A snapshot is written through a [`SnapshotSession`]: add directories,
//! streams, command output or a [`Source`] of your own, then commit. The
//! session picks the parent snapshot, deduplicates against the index, seals
//! on every core and publishes packs, index files and the snapshot in that
//! order.
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread")]
//! # async fn main() -> cairn_repo::Result<()> {
//! use cairn_repo::{Backend, BackendOptions, FileOptions, InitOptions, OpenOptions, Repository, SnapshotOptions};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let location = dir.path().join("repo");
//! let backend = Backend::open(location.to_str().unwrap(), &BackendOptions { create: true, ..Default::default() })?;
//! let fast = InitOptions { kdf_memory_kib: 8 * 1024, kdf_iterations: 1, ..Default::default() };
//! let repo = Repository::init(backend, b"correct horse", fast, OpenOptions::default()).await?;
//!
//! std::fs::write(dir.path().join("hello.txt"), b"hello").unwrap();
//! let mut session = repo.begin_snapshot(SnapshotOptions::default()).await?;
//! session.add_paths(&[dir.path().join("hello.txt")], &FileOptions::default()).await?;
//! let committed = session.commit().await?;
//! assert_eq!(committed.summary.files_new, 1);
//! assert_eq!(repo.list_snapshots().await?.len(), 1);
//! # Ok(()) }
//! ```
//!
//! The crate is organised by concern, one private folder each:
//!
//! | folder | what |
//! | --- | --- |
//! | `format` | ids, keys and encryption, blobs, packs, index files, trees, snapshots, config |
//! | `storage` | the object-store [`Backend`], the local metadata cache, the prune lease |
//! | `writing` | a writing session that packs blobs and publishes index files and snapshots |
//! | `files` | the file-system archiver and restorer, metadata, path filters |
//! | `maintenance` | [`check`], [`prune`], repair, [`copy_snapshots`], retention |
//! | `buckets` | [`BucketSource`] and [`restore_to_bucket`]: S3, GCS and Azure buckets backed up and restored |
//! | `mount` | [`SnapshotFs`]: snapshots as a read-only file system (served by FUSE with the `mount` feature) |
//!
//! This file is the public API: everything an embedding program needs is
//! re-exported here.

#![warn(missing_docs)]

mod buckets;
mod error;
mod files;
mod format;
#[doc(hidden)]
pub mod fuzz;
mod maintenance;
mod mount;
mod repository;
mod selection;
mod storage;
mod util;
mod view;
mod writing;

pub use error::{Error, Result, StorageError};
pub use util::{hostname, username};

// Opening a repository and reading it.
pub use repository::{
    IndexFiles, InitOptions, KeyInfo, KeyOptions, OpenOptions, PasswordKind, Repository, SnapshotListing,
};
pub use selection::{GroupBy, GroupKey, SnapshotFilter, group_snapshots, latest_per_group, split_snapshot_arg};
pub use view::{ContentReader, TreeLoader};

// Storage.
pub use storage::backend::{
    Backend, BackendKind, BackendOptions, FileKind, ListedObject, RcloneOptions, RetryPolicy, S3Options, SftpOptions,
    UploadLeftover, WriteOutcome,
};
pub use storage::cache::Cache;
pub use storage::lease::Lease;

// The format's types, as readers see them.
pub use format::blob::BlobType;
pub use format::config::Config;
pub use format::envelope::FormatError;
pub use format::id::{DataId, Id, PackId, SnapshotId, TreeId};
pub use format::index::{Index, IndexFile};
pub use format::keys::{KdfParams, KeyFile, KeyKind, generate_password, is_generated_password};
pub use format::pack::PackHeader;
pub use format::snapshot::{Snapshot, SnapshotSummary};
pub use format::tree::{Extent, Node, NodeKind, Time, Tree};
pub use format::wire::WireError;

// Writing a snapshot.
pub use files::archiver::FileOptions;
pub use writing::profile::{Stage, StageProfile, StageTime};
pub use writing::progress::{NoEvents, Progress, ProgressStatus, SessionEvents};
pub use writing::session::{CommittedSnapshot, ParentChoice, SnapshotOptions, SnapshotSession, Source, SourceContext};
pub use writing::store::{Content, StreamSink};
pub use writing::tree_builder::EntryMeta;

// Buckets: object stores as a backup source and a restore target.
pub use buckets::{
    Bucket, BucketBackupOptions, BucketError, BucketObject, BucketReport, BucketRestoreOptions, BucketRestoreOutcome,
    BucketSource, Drift as BucketDrift, ObjectHeaders, UnescapeError, is_bucket_location, key_to_path,
    layout as bucket_layout, path_to_key, restore_to_bucket,
};

// Files.
pub use files::filter::PathFilter;
pub use files::localtrees::{LocalParent, LocalTrees};
pub use files::restorer::{Overwrite, RestoreEvents, RestoreOptions, RestoreOutcome, RestoreProgress, restore};

// Browsing snapshots as a file system.
pub use mount::{
    Attr as MountAttr, DerivedDir, DerivedFile, DerivedFiles, DirEntry as MountDirEntry, FsError, FsResult,
    LineConvert, MountOptions, ROOT_INODE, SnapshotFs,
};
#[cfg(feature = "mount")]
pub use mount::{Mount, mount};

// Maintenance.
pub use maintenance::check::{CheckReport, Problem as CheckProblem, Subset as CheckSubset, check};
pub use maintenance::copy::{CopyOutcome, copy_snapshots, shares_secret};
pub use maintenance::forget::{ForgetGroup, ForgetPlan, RetentionRules, plan_forget, plan_forget_ids};
pub use maintenance::prune::{DEFAULT_GRACE, MINIMUM_GRACE, PruneOptions, PruneReport, UnusedLimit, prune};
pub use maintenance::repair::{
    IndexRebuild, SnapshotRepair, rebuild_index, remove_damaged_snapshots, repair_snapshots,
};
pub use maintenance::retention::{
    Period as RetentionPeriod, Policy as RetentionPolicy, Verdict as RetentionVerdict, apply as apply_retention,
    parse_span,
};
pub use maintenance::usage::Usage;

/// Raw writing, for tests that craft damaged or hostile repositories and
/// for benchmarks of the sealing path; only with the `testing` feature,
/// which only test and benchmark builds enable. Not part of the API:
/// nothing written this way is checked, so it can produce a snapshot the
/// format rejects. Programs write snapshots through [`SnapshotSession`].
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod testing {
    pub use crate::format::blob::{MAX_BLOB_SIZE, SealedBlob};
    pub use crate::format::index::IndexedPack;
    pub use crate::format::pack::PackEntry;
    pub use crate::writing::writer::{Writer, WriterStats};
}
