//! Deletion records (`trash/<id>`): what a prune marked for deletion, kept
//! until a later prune sweeps it after the grace period (FORMAT.md §12.3).
//!
//! A record is a sealed object (magic `cairnTR1`) whose payload is
//!
//! ```text
//! marked_at i64 (seconds since the Unix epoch)
//! the body of an index file: superseded index files, then packs with their blobs
//! authenticator (32)
//! ```
//!
//! The index-file body is reused on purpose: the packs of a record keep
//! their blob lists, so a sweep can see which marked blobs a newer snapshot
//! needs and re-index (rescue) those packs without reading them. The
//! authenticator is the index authenticator of §9; a record that does not
//! authenticate (a put-only key cannot make one) is never acted on.

use crate::format::index::IndexFile;
use crate::format::wire::{Reader, WireError};

/// One deletion record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrashRecord {
    /// When the packs were marked, in seconds since the Unix epoch (the
    /// marking prune's clock).
    pub marked_at: i64,
    /// The packs to delete (with their blobs; packs that no index listed
    /// have none) in `packs`, and the index files to delete once
    /// superseded in `supersedes`.
    pub content: IndexFile,
    /// Whether a full key wrote it. Set by the reader.
    pub authenticated: bool,
}

impl TrashRecord {
    /// Binary payload before the authenticator.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.marked_at.to_le_bytes().to_vec();
        out.extend_from_slice(&self.content.encode());
        out
    }

    /// Parses a payload (without its authenticator).
    pub fn decode(bytes: &[u8]) -> Result<TrashRecord, WireError> {
        let mut r = Reader::new(bytes);
        let marked_at = r.u64()? as i64;
        let content = IndexFile::decode(r.take(r.remaining())?)?;
        Ok(TrashRecord { marked_at, content, authenticated: false })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::id::{Id, PackId};
    use crate::format::index::IndexedPack;

    #[test]
    fn round_trip() {
        let record = TrashRecord {
            marked_at: 1_764_000_000,
            content: IndexFile {
                supersedes: vec![Id([1; 32])],
                packs: vec![IndexedPack { id: PackId(Id([2; 32])), size: 100, session_public: [0; 32], blobs: vec![] }],
                authenticated: false,
            },
            authenticated: false,
        };
        assert_eq!(TrashRecord::decode(&record.encode()).unwrap(), record);
        assert!(TrashRecord::decode(&record.encode()[..7]).is_err());
    }
}
