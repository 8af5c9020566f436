//! The error type of the repository library.
//!
//! Messages are written for the person running the command: each names what
//! went wrong (the object, the location) and, where there is one, the fix.

use crate::format::envelope::FormatError;
use crate::format::id::Id;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the repository library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No `config` object at the location.
    #[error("no repository at {location}")]
    RepositoryNotFound {
        /// Where we looked.
        location: String,
    },
    /// `init` found an existing repository.
    #[error("a repository already exists at {location}; refusing to initialise it again (nothing was changed)")]
    RepositoryExists {
        /// Where.
        location: String,
    },
    /// No key file opens with the password.
    #[error(
        "wrong password: none of the {tried} key(s) in {location} opens with it{}",
        if damaged.is_empty() { String::new() } else {
            format!("; {} key file(s) are damaged and could not be tried, and the password may be theirs: {}",
                damaged.len(), damaged.join("; "))
        }
    )]
    WrongPassword {
        /// Where.
        location: String,
        /// How many key files were tried.
        tried: usize,
        /// Key files that are damaged, with what is wrong (the password may
        /// belong to one of them).
        damaged: Vec<String>,
    },
    /// The repository has no key files.
    #[error("the repository at {location} has no keys left; it cannot be opened")]
    NoKeys {
        /// Where.
        location: String,
    },
    /// An object's bytes are damaged or forged.
    #[error("{object} is corrupt: {source}")]
    Corrupt {
        /// The object, e.g. `index/3fa2…` or `blob 81c0… in pack data/9d/9d41…`.
        object: String,
        /// What is wrong.
        source: FormatError,
    },
    /// The storage endpoint cannot be reached.
    #[error("cannot reach {location}: {detail}. Check the endpoint address and that the server is running")]
    Unreachable {
        /// Where.
        location: String,
        /// The transport error.
        detail: String,
    },
    /// The storage refused the credentials.
    #[error("access denied by {location}: {detail}. Check the credentials ({hint})")]
    AccessDenied {
        /// Where.
        location: String,
        /// What the server said.
        detail: String,
        /// Where credentials come from for this backend.
        hint: &'static str,
    },
    /// The bucket or container does not exist.
    #[error("{location}: the bucket or container does not exist; create it first (cairn does not create buckets)")]
    BucketNotFound {
        /// Where.
        location: String,
    },
    /// A named object is missing.
    #[error("{object} not found in {location}")]
    ObjectNotFound {
        /// The object.
        object: String,
        /// Where.
        location: String,
    },
    /// The location string cannot be used.
    #[error("invalid repository location {location:?}: {reason}")]
    InvalidLocation {
        /// What was given.
        location: String,
        /// Why it does not work.
        reason: String,
    },
    /// Any other storage failure.
    #[error("storage error at {location} while {action}: {source}")]
    Storage {
        /// Where.
        location: String,
        /// What we were doing.
        action: String,
        /// What the store said.
        source: StorageError,
    },
    /// A blob id that no index lists.
    #[error("blob {0} is not in the repository index")]
    BlobNotFound(Id),
    /// An id prefix that matches nothing, or more than one object.
    #[error("{0}")]
    NoSuchId(String),
    /// A newer repository format.
    #[error("the repository uses format version {found}; this cairn reads version 1. Upgrade cairn")]
    UnsupportedVersion {
        /// The version found.
        found: u32,
    },
    /// Put-only keys cannot read.
    #[error("this is a put-only key: it can add snapshots but cannot {action}. Use a full key")]
    PutOnlyKey {
        /// What was attempted.
        action: &'static str,
    },
    /// The storage credentials may create objects but not read or list them.
    #[error(
        "the credentials for {location} are write-only (they may create objects, not read or list them): {action} needs read access. Use credentials that can read"
    )]
    WriteOnly {
        /// Where.
        location: String,
        /// What needed reading.
        action: String,
    },
    /// A writing session failed earlier and refuses to publish anything.
    #[error("the write session failed earlier ({0}); nothing more is published from it: start a new session")]
    WriteSessionFailed(String),
    /// Another prune holds the prune lease.
    #[error(
        "another prune ({owner}) is running on this repository; its lease expires at {until} unless renewed. \
         Wait for it to finish: a crashed prune's lease simply expires, no unlock is needed"
    )]
    PruneRunning {
        /// Who holds the lease.
        owner: String,
        /// When the lease expires (RFC 3339).
        until: String,
    },
    /// This prune lost its lease (it could not renew it in time, or another
    /// prune took it over); it stopped before deleting anything more.
    #[error("prune lost its lease ({0}); it stopped before deleting anything more. Run prune again")]
    LeaseLost(String),
    /// Prune refuses to run on a repository whose snapshots need data that
    /// is not there.
    #[error("{0}. Prune changed nothing")]
    DamagedForPrune(String),
    /// A long backup reused data that a prune has deleted since.
    #[error(
        "this backup ran longer than prune's minimum grace period and reused {count} pack(s) that a prune has \
         deleted since (e.g. {example}); no snapshot was written. Run the backup again"
    )]
    ReusedDataPruned {
        /// How many reused packs are gone.
        count: usize,
        /// One of them.
        example: String,
    },
    /// A command whose output was being backed up failed.
    #[error("the command {command:?} failed ({status}); no snapshot was written")]
    CommandFailed {
        /// The program.
        command: String,
        /// How it ended.
        status: String,
    },
    /// No snapshot is `latest`: the repository has none, or none passes
    /// the filters.
    #[error("{}", if *filtered { "no snapshot matches the filters" } else { "the repository has no snapshots yet" })]
    NoSnapshot {
        /// Whether filters were given.
        filtered: bool,
    },
    /// A path that the snapshot does not hold.
    #[error("{0} is not in the snapshot")]
    PathNotInSnapshot(String),
    /// A caller-supplied value is not acceptable.
    #[error("{0}")]
    InvalidArgument(String),
    /// Local I/O (cache, local files).
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}

/// A storage failure that fits none of [`Error`]'s named cases, with the
/// store's own message. (The object-store library's error type stays an
/// implementation detail.)
#[derive(Debug)]
pub struct StorageError(pub(crate) object_store::Error);

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl Error {
    pub(crate) fn corrupt(object: impl Into<String>, source: impl Into<FormatError>) -> Self {
        Error::Corrupt { object: object.into(), source: source.into() }
    }

    /// True when the error says that stored data is damaged.
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corrupt { .. })
    }
}
