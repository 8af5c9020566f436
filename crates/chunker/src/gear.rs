//! The keyed gear table.

use std::fmt;

/// Domain-separation string hashed after the key when deriving a table.
///
/// Changing it (or the derivation) changes every cut point of every
/// repository, so it carries a version.
const GEAR_CONTEXT: &[u8] = b"cairn chunker gear table v1";

/// The 256 random 64-bit values of the gear hash, one per byte value, plus
/// the same values shifted left by one bit (the "left-shifted twin" of the
/// FastCDC 2020 paper, section 3.7, which lets a scan roll several bytes per
/// shift; [`Chunker`](crate::Chunker) also derives the tables shifted by 2
/// and 3 bits).
///
/// Build one from the repository's chunker secret with
/// [`GearTable::from_secret`]. The table is as secret as the key it came from:
/// anyone who knows it can predict every cut point, so its [`Debug`] output
/// hides the entries.
#[derive(Clone, PartialEq, Eq, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
pub struct GearTable {
    pub(crate) gear: [u64; 256],
    pub(crate) gear_ls: [u64; 256],
}

impl GearTable {
    /// Derives the whole table from a 32-byte secret.
    ///
    /// The 2048 bytes of table are the first 2048 bytes of the BLAKE3 XOF
    /// output of the keyed hash (`secret` as key) of the ASCII string
    /// `cairn chunker gear table v1`; entry `i` is the little-endian `u64` at
    /// byte offset `8 * i`. Different secrets give independent tables.
    pub fn from_secret(secret: &[u8; 32]) -> GearTable {
        let mut hasher = blake3::Hasher::new_keyed(secret);
        hasher.update(GEAR_CONTEXT);
        let mut bytes = [0u8; 256 * 8];
        hasher.finalize_xof().fill(&mut bytes);
        let mut entries = [0u64; 256];
        for (entry, le) in entries.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut word = [0u8; 8];
            word.copy_from_slice(le);
            *entry = u64::from_le_bytes(word);
        }
        GearTable::from_entries(entries)
    }

    /// Builds a table from explicit entries.
    ///
    /// Meant for tests and compatibility checks, e.g. with the public table
    /// of the `fastcdc` crate (`fastcdc::v2020::get_gear_with_seed(0).0`),
    /// with which [`Chunker`](crate::Chunker) produces exactly the cut points
    /// of `fastcdc::v2020::FastCDC` at normalization level 1. Do not use a
    /// public table for a repository: see the [crate docs](crate).
    pub fn from_entries(entries: [u64; 256]) -> GearTable {
        GearTable { gear: entries, gear_ls: entries.map(|g| g << 1) }
    }

    /// The 256 gear values, indexed by byte value.
    pub fn entries(&self) -> &[u64; 256] {
        &self.gear
    }
}

impl fmt::Debug for GearTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The entries are key material; never print them.
        f.debug_struct("GearTable").finish_non_exhaustive()
    }
}
