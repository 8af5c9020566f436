//! Writing: a [`session::SnapshotSession`] gathers sources into one
//! snapshot; every byte stream goes through the session's [`store::Store`]
//! (chunk, deduplicate, seal on every core); a [`writer::Writer`] packs the
//! sealed blobs and publishes index files and the snapshot, in that order.

pub(crate) mod journal;
pub(crate) mod profile;
pub(crate) mod progress;
pub(crate) mod segments;
pub(crate) mod session;
pub(crate) mod store;
pub(crate) mod tree_builder;
pub(crate) mod writer;
