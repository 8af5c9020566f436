//! Object-store buckets as a backup source and a restore target.
//!
//! | module | what |
//! | --- | --- |
//! | `escape` | keys ↔ snapshot paths, a reversible escaping (pure) |
//! | `meta` | an object's listing entry and headers; headers ↔ extended attributes (pure) |
//! | `plan` | the listing against the parent snapshot: what to download; drift between listing and read (pure) |
//! | `xml` | the S3 listing answers, decoded (fuzzed) |
//! | `s3` | S3 requests object_store does not make: listings with every key as stored, object versions; signed with object_store's signer |
//! | `bucket` | [`Bucket`]: a location opened like a repository's, listed, read and written through `object_store` |
//! | `source` | [`BucketSource`]: the [`Source`](crate::Source) that backs a bucket up, downloads in parallel |
//! | `restore` | [`restore_to_bucket`]: a snapshot's files written back as objects |
//!
//! The snapshot layout, the escaping and the attributes are specified in
//! FORMAT.md §15.

mod bucket;
mod escape;
mod meta;
pub(crate) mod plan;
mod restore;
mod s3;
mod source;
pub(crate) mod xml;

pub use bucket::{Bucket, is_bucket_location};
pub use escape::{UnescapeError, key_to_path, layout, path_to_key};
pub use meta::{BucketObject, ObjectHeaders};
pub use plan::Drift;
pub use restore::{BucketRestoreOptions, BucketRestoreOutcome, restore_to_bucket};
pub use source::{BucketBackupOptions, BucketReport, BucketSource};

/// What can go wrong backing up or restoring a bucket.
#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    /// The repository or the storage layer failed (the message names the
    /// object and the fix).
    #[error(transparent)]
    Repository(#[from] crate::error::Error),
    /// The location is not a bucket.
    #[error("{location}: {reason}")]
    Location {
        /// The location given.
        location: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A key object_store cannot address (an empty segment, `.` or `..`,
    /// a control character).
    #[error("object key {key:?} cannot be read or written through this service's client: {reason}")]
    UnsupportedKey {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
    /// Anything else, with what happened.
    #[error("{0}")]
    Failed(String),
}
