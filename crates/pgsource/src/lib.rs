//! # cairn-pgsource
//!
//! cairn's PostgreSQL source: consistent, parallel, deduplicated backups of
//! a database into a cairn repository, restores, and restore drills.
//!
//! A backup exports one snapshot (`pg_export_snapshot()`) and streams every
//! table through `COPY ... TO STDOUT` on several connections that share it,
//! straight into the repository's chunker: no dump file on disk. Each table
//! is its own file in the snapshot's tree, so an unchanged table adds
//! nothing to the repository the next day and an append-only table adds
//! about its growth. The schema comes from `pg_dump` against the same
//! snapshot. The layout is specified in FORMAT.md ("PostgreSQL snapshots").
//!
//! Modules, in the order a backup uses them: [`connect`] (connection
//! strings, TLS), [`catalog`] (what to copy), [`pattern`] (`--table`),
//! [`schema`] (pg_dump, pg_restore), [`copy`] (COPY both ways, streams into the
//! repository through a snapshot session), [`manifest`] (what the snapshot records),
//! [`backup`](mod@backup); then [`restore`](mod@restore) and [`drill`](mod@drill). [`cluster`] does all of
//! them for every database of a server (`--all-databases`), with the globals
//! and each database's own settings, privileges and comment ([`dbprops`]).
//! [`pitr`] is point-in-time recovery: WAL archiving and physical base backups.

#![warn(missing_docs)]

pub mod backup;
pub mod catalog;
pub mod cluster;
pub mod connect;
pub mod copy;
pub mod csv;
pub mod dbprops;
pub mod drill;
pub mod error;
#[doc(hidden)]
pub mod fuzz;
pub mod manifest;
pub mod pattern;
pub mod pitr;
pub mod restore;
pub mod schema;

pub use backup::{BackupOptions, DatabaseSource, RowOrder, backup};
pub use cluster::{ClusterBackupOptions, ClusterSource};
pub use connect::ConnSpec;
pub use csv::TablesAsCsv;
pub use drill::{DrillOptions, DrillReport, drill};
pub use error::{Error, Result};
pub use manifest::Manifest;
pub use restore::{OpenedSnapshot, RestoreOptions, RestoreProgress, RestoreReport, restore};
pub use schema::Tools;
