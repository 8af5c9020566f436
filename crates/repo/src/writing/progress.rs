//! What a snapshot session reports while it runs: counters a progress
//! display polls, and events (warnings, notes) it receives as they happen.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters of a snapshot session, shared by every source in it.
/// Poll [`status`](Progress::status) from a display thread.
#[derive(Debug, Default)]
pub struct Progress {
    /// Files (or other items: tables, objects) finished.
    pub(crate) files: AtomicU64,
    /// Directories finished.
    pub(crate) dirs: AtomicU64,
    /// Bytes of finished files, read or reused.
    pub(crate) bytes: AtomicU64,
    /// Bytes read and chunked so far.
    pub(crate) bytes_read: AtomicU64,
    /// Entries that could not be read.
    pub(crate) errors: AtomicU64,
    /// Files expected in all (0 while unknown).
    pub(crate) total_files: AtomicU64,
    /// Bytes expected in all (0 while unknown; an estimate).
    pub(crate) total_bytes: AtomicU64,
}

/// A moment's reading of [`Progress`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProgressStatus {
    /// Files (or items) finished.
    pub files: u64,
    /// Files expected (0 while unknown).
    pub total_files: u64,
    /// Bytes done: of finished files, or read so far, whichever is more.
    pub bytes: u64,
    /// Bytes expected (0 while unknown).
    pub total_bytes: u64,
    /// Entries that could not be read.
    pub errors: u64,
}

impl Progress {
    /// The counters now.
    pub fn status(&self) -> ProgressStatus {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ProgressStatus {
            files: get(&self.files),
            total_files: get(&self.total_files),
            bytes: get(&self.bytes).max(get(&self.bytes_read)),
            total_bytes: get(&self.total_bytes),
            errors: get(&self.errors),
        }
    }

    /// A source announces work ahead: `files` more items of about `bytes`.
    pub fn expect(&self, files: u64, bytes: u64) {
        self.total_files.fetch_add(files, Ordering::Relaxed);
        self.total_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A source finished one item (a table, an object); its bytes were
    /// counted as they were stored.
    pub fn item_done(&self) {
        self.files.fetch_add(1, Ordering::Relaxed);
    }
}

/// Receives what a snapshot session reports as it happens.
pub trait SessionEvents: Send + Sync {
    /// Something at `path` could not be backed up completely; the backup
    /// goes on, and the snapshot records the entry with its error.
    fn warning(&self, path: &Path, message: &str);

    /// A step worth telling the user about ("using parent snapshot …",
    /// "backing up database …").
    fn note(&self, message: &str) {
        let _ = message;
    }
}

/// Events nobody listens to.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoEvents;

impl SessionEvents for NoEvents {
    fn warning(&self, _path: &Path, _message: &str) {}
}
