//! Writing: a [`writer::Writer`] packs sealed blobs and publishes index files
//! and snapshots in order.

pub(crate) mod writer;
