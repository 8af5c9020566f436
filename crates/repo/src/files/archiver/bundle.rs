//! Bundles: the small files of one directory share content-defined blobs.
//!
//! A file of a few kilobytes alone in a blob pays the blob's fixed costs
//! (a nonce and tag, a pack header entry, an index entry) and compresses
//! poorly, because zstd sees only that file. Instead, the assembler appends
//! the bytes of a directory's small files, in name order, to that
//! directory's bundle, and cuts the bundle with the repository's keyed
//! chunker at finer sizes than file contents. Each file's content then is one
//! extent, or a few, at offsets inside those blobs (FORMAT.md §10.1 and
//! §11.1): readers need nothing new.
//!
//! Only files that were read go into a bundle. An unchanged file keeps the
//! parent snapshot's extents and costs nothing; a changed file in an
//! otherwise unchanged directory lands in a bundle of its own, so a day's
//! change costs about its own size. A directory read in full (a first
//! backup, or one without a parent) gives the same bytes in the same order,
//! hence the same blobs, wherever it is: the bundle ends where the
//! directory ends.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use cairn_chunker::{Chunker, ChunkerParams};

use crate::format::id::DataId;
use crate::format::tree::Extent;

/// The bundle chunker's sizes, from the repository's: with the default
/// 512 KiB / 1 MiB / 8 MiB, 16 KiB / 64 KiB / 256 KiB. `None` when the
/// repository's sizes are already so small that bundles would not be
/// smaller than its chunks.
pub(super) fn bundle_params(repo: ChunkerParams) -> Option<ChunkerParams> {
    let params = ChunkerParams {
        min_size: (repo.min_size / 32).max(cairn_chunker::MIN_SIZE_LOWER),
        avg_size: (repo.avg_size / 16).max(cairn_chunker::AVG_SIZE_LOWER),
        max_size: (repo.max_size / 32).max(cairn_chunker::MAX_SIZE_LOWER),
    };
    (params.validate().is_ok() && params.max_size <= repo.min_size.max(repo.avg_size)).then_some(params)
}

/// The largest file that goes into a bundle: the bundle's average size, and
/// never more than a file that the repository's chunker would cut in one
/// piece anyway.
pub(super) fn bundle_file_max(repo: ChunkerParams, bundle: ChunkerParams) -> u64 {
    u64::from(bundle.avg_size.min(repo.min_size))
}

/// A file with bytes still waiting in a bundle.
#[derive(Debug)]
struct Member {
    /// Which file: the caller's index (the entry's position in its directory).
    slot: usize,
    /// Where its waiting bytes start in `pending`.
    start: usize,
    /// How many of its bytes are waiting.
    len: usize,
}

/// The bytes of one directory's small files not yet cut into blobs.
#[derive(Debug, Default)]
pub(super) struct Bundle {
    pending: BytesMut,
    members: VecDeque<Member>,
}

impl Bundle {
    /// Appends file `slot`'s bytes, and cuts every blob that is now certain:
    /// a cut needs `max_size` bytes ahead of it, or the end of the bundle.
    /// `store` stores a blob and returns its id; `place` receives each
    /// file's extents, in order.
    pub(super) fn add(
        &mut self,
        slot: usize,
        data: &[u8],
        chunker: &Chunker,
        store: &mut dyn FnMut(Bytes) -> DataId,
        place: &mut dyn FnMut(usize, Extent),
    ) {
        if data.is_empty() {
            return;
        }
        self.members.push_back(Member { slot, start: self.pending.len(), len: data.len() });
        self.pending.extend_from_slice(data);
        let max = chunker.params().max_size as usize;
        while self.pending.len() >= max {
            let cut = chunker.cut(&self.pending);
            self.emit(cut, store, place);
        }
    }

    /// Cuts the rest: the directory is complete.
    pub(super) fn finish(
        &mut self,
        chunker: &Chunker,
        store: &mut dyn FnMut(Bytes) -> DataId,
        place: &mut dyn FnMut(usize, Extent),
    ) {
        while !self.pending.is_empty() {
            let cut = chunker.cut(&self.pending);
            self.emit(cut, store, place);
        }
    }

    /// Stores the first `len` pending bytes as one blob and gives every file
    /// with bytes in it the extent it covers.
    fn emit(&mut self, len: usize, store: &mut dyn FnMut(Bytes) -> DataId, place: &mut dyn FnMut(usize, Extent)) {
        let len = len.clamp(1, self.pending.len());
        let id = store(self.pending.split_to(len).freeze());
        while let Some(member) = self.members.front_mut() {
            if member.start >= len {
                break;
            }
            let take = member.len.min(len - member.start);
            // Blobs are at most 16 MiB (the chunker's limit), so offsets fit.
            place(member.slot, Extent::Blob { id, offset: member.start as u32, length: take as u32 });
            if take == member.len {
                self.members.pop_front();
            } else {
                member.len -= take;
                member.start = 0;
                break;
            }
        }
        for member in self.members.iter_mut().filter(|m| m.start >= len) {
            member.start -= len;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::format::id::Id;
    use cairn_chunker::GearTable;

    fn chunker() -> Chunker {
        let params = ChunkerParams { min_size: 1024, avg_size: 4096, max_size: 16384 };
        Chunker::new(params, GearTable::from_secret(&[9; 32])).expect("valid params")
    }

    /// Deterministic pseudo-random bytes.
    fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0; len];
        blake3::Hasher::new().update(&seed.to_le_bytes()).finalize_xof().fill(&mut out);
        out
    }

    /// The blobs in order, each file's extents, and the files.
    type Bundled = (Vec<Bytes>, HashMap<usize, Vec<Extent>>, Vec<Vec<u8>>);

    /// Bundles files of these sizes.
    fn bundle(sizes: &[usize]) -> Bundled {
        let chunker = chunker();
        let files: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &n)| bytes(i as u64, n)).collect();
        let mut blobs = Vec::new();
        let mut placed: HashMap<usize, Vec<Extent>> = HashMap::new();
        let mut store = |b: Bytes| {
            blobs.push(b);
            DataId(Id([blobs.len() as u8; 32]))
        };
        let mut place = |slot, e| placed.entry(slot).or_default().push(e);
        let mut bundle = Bundle::default();
        for (slot, data) in files.iter().enumerate() {
            bundle.add(slot, data, &chunker, &mut store, &mut place);
        }
        bundle.finish(&chunker, &mut store, &mut place);
        (blobs, placed, files)
    }

    #[test]
    fn every_file_reads_back_from_its_extents() {
        let cases: &[&[usize]] = &[
            &[],
            &[0],
            &[1],
            &[100, 0, 3000, 5],
            &[20_000],
            &[16384, 16384, 1],
            &[50_000, 7, 40_000],
            &[500; 200],
            &[0, 0, 0, 9000, 0],
        ];
        for sizes in cases {
            let (blobs, placed, files) = bundle(sizes);
            for (slot, data) in files.iter().enumerate() {
                let mut back = Vec::new();
                for extent in placed.get(&slot).map(Vec::as_slice).unwrap_or_default() {
                    let Extent::Blob { id, offset, length } = *extent else { panic!("a hole in a bundle") };
                    let blob = &blobs[id.0.0[0] as usize - 1];
                    back.extend_from_slice(&blob[offset as usize..(offset + length) as usize]);
                }
                assert_eq!(&back, data, "{sizes:?}: file {slot}");
            }
            assert!(!placed.contains_key(&sizes.len()), "{sizes:?}");
            // Empty files have no extents at all.
            for (slot, _) in sizes.iter().enumerate().filter(|(_, n)| **n == 0) {
                assert!(!placed.contains_key(&slot), "{sizes:?}: empty file {slot}");
            }
        }
    }

    #[test]
    fn blobs_are_the_chunks_of_the_files_concatenated() {
        // So a directory read in full always gives the same blobs, however
        // its files arrived.
        let sizes = [3000, 12_000, 1, 40_000, 700, 16384, 9, 25_000];
        let (blobs, _, files) = bundle(&sizes);
        let all = files.concat();
        let expected: Vec<&[u8]> = chunker().chunks(&all).map(|r| &all[r]).collect();
        let got: Vec<&[u8]> = blobs.iter().map(|b| b.as_ref()).collect();
        assert_eq!(got, expected);
        assert!(blobs.len() > 2, "the case should cut more than once");
    }

    #[test]
    fn default_repository_sizes_give_16k_64k_256k_bundles_of_files_up_to_64k() {
        let repo = ChunkerParams { min_size: 512 << 10, avg_size: 1 << 20, max_size: 8 << 20 };
        let params = bundle_params(repo).expect("bundles");
        assert_eq!((params.min_size, params.avg_size, params.max_size), (16 << 10, 64 << 10, 256 << 10));
        assert_eq!(bundle_file_max(repo, params), 64 << 10);
        // Tiny test chunkers: bundles would be no finer, so none.
        let tiny = ChunkerParams { min_size: 64, avg_size: 256, max_size: 1024 };
        assert_eq!(bundle_params(tiny), None);
    }
}
