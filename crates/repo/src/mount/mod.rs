//! `cairn mount`: a repository's snapshots as a read-only file system.
//!
//! [`SnapshotFs`] holds the logic (inodes, the `snapshots/`, `hosts/`,
//! `tags/` and `ids/` directories, lazily read trees, file reads through a
//! bounded blob cache with read-ahead) and is usable without FUSE; with
//! the `mount` feature, [`mount`] serves it through the kernel.

mod content;
mod derived;
mod fs;
#[cfg(feature = "mount")]
mod fuse;
mod layout;

pub use derived::{DerivedDir, DerivedFile, DerivedFiles, LineConvert};
pub use fs::{Attr, DirEntry, FsError, FsResult, MountOptions, ROOT_INODE, SnapshotFs};
#[cfg(feature = "mount")]
pub use fuse::{Mount, mount};
