//! What `cairn --version` says: the version, the commit it was built from
//! (see build.rs) and what this build can talk to.

/// `cairn -V`: one line.
pub const SHORT: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("CAIRN_GIT_COMMIT"), ")");

/// `cairn --version`. Every backend is compiled into every build (the
/// object_store features are not optional), so the list is fixed; it
/// follows the location schemes `cairn_repo::storage::Backend::open` takes.
pub const LONG: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("CAIRN_GIT_COMMIT"),
    ")\nbackends: local, s3 (and S3-compatible services), gcs, azure, sftp, rclone\nsources: files, stdin, command output, postgresql\nmount: fuse (read-only)"
);
