//! Where repository objects live: the object-store backend (local disk, S3,
//! GCS, Azure), the local metadata cache, and the prune lease.

pub(crate) mod backend;
pub(crate) mod cache;
pub(crate) mod lease;
