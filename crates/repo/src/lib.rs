//! # cairn-repo
//!
//! cairn's repository: an encrypted, deduplicated store of blobs, packs,
//! index files and snapshots on any object store. The on-disk format is
//! specified in `FORMAT.md` at the root of the cairn source tree.
//!
//! ```no_run
//! # async fn demo() -> cairn_repo::Result<()> {
//! use std::sync::Arc;
//! use cairn_repo::{Backend, BackendOptions, BlobType, InitOptions, OpenOptions, Repository, Snapshot, Writer};
//!
//! let backend = Backend::open("/srv/backups/repo", &BackendOptions { create: true, ..Default::default() })?;
//! let repo = Repository::init(backend, b"correct horse", InitOptions::default(), OpenOptions::default()).await?;
//! let writer = Writer::new(&repo, Arc::new(repo.load_index().await?))?;
//! let id = writer.add_blob(BlobType::Data, b"hello").await?;
//! let snapshot_id = writer.commit(&Snapshot::new(id, vec!["/greeting".into()])).await?;
//! # Ok(()) }
//! ```
//!
//! Modules, in the order data flows through them when writing:
//! [`crypto`] and [`keys`] (secrets), [`blob`] (sealing one blob),
//! [`pack`] (many blobs in one object), [`index`], [`snapshot`],
//! [`backend`] (object_store), [`cache`] (local metadata cache),
//! [`repository`] (opening, keys, reading) and [`writer`] (a writing session).

#![warn(missing_docs)]

pub mod archiver;
pub mod backend;
pub mod blob;
pub mod cache;
pub mod check;
mod compress;
pub mod config;
pub mod copy;
pub mod crypto;
pub mod error;
pub mod filter;
pub mod format;
mod fsmeta;
#[doc(hidden)]
pub mod fuzz;
pub mod id;
pub mod index;
pub mod keys;
pub mod lease;
pub mod localtrees;
pub mod pack;
pub mod prune;
pub mod repair;
pub mod repository;
pub mod restorer;
pub mod retention;
pub mod snapshot;
pub mod trash;
pub mod tree;
mod util;
pub mod view;
mod wire;
pub mod writer;

pub use backend::{Backend, BackendKind, BackendOptions, FileKind, ListedObject, RetryPolicy, S3Options, WriteOutcome};
pub use blob::BlobType;
pub use config::Config;
pub use error::{Error, Result};
pub use filter::PathFilter;
pub use format::FormatError;
pub use id::Id;
pub use index::{Index, IndexFile};
pub use keys::{KdfParams, KeyKind};
pub use pack::PackHeader;
pub use repository::{InitOptions, KeyInfo, KeyOptions, OpenOptions, Repository};
pub use snapshot::{Snapshot, SnapshotSummary};
pub use tree::{Extent, Node, NodeKind, Tree};
pub use util::{hostname, username};
pub use wire::WireError;
pub use writer::{Writer, WriterStats};
