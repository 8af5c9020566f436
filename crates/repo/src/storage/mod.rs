//! Where repository objects live: the object-store backend (local disk, S3,
//! GCS, Azure, SFTP), the local metadata cache, and the prune lease.

pub(crate) mod backend;
pub(crate) mod cache;
pub(crate) mod lease;
pub(crate) mod rclone;
pub(crate) mod sftp;
mod store_kit;
pub(crate) mod tree_packs;
