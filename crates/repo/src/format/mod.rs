//! The on-disk format: ids, keys and encryption, blobs, packs, index files,
//! trees, snapshots and the repository config (FORMAT.md §2–§11). Pure
//! encoding and decoding: nothing here does I/O.

pub(crate) mod blob;
pub(crate) mod compress;
pub(crate) mod config;
pub(crate) mod crypto;
pub(crate) mod envelope;
pub(crate) mod id;
pub(crate) mod index;
pub(crate) mod keys;
pub(crate) mod pack;
pub(crate) mod snapshot;
pub(crate) mod tree;
pub(crate) mod wire;
