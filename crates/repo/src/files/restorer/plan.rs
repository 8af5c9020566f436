//! The restore's decisions, as pure functions: which entries are selected
//! by the include/exclude patterns, what to do about an entry that already
//! exists, where each blob of a file is written, and how the needed blobs
//! are read from their packs.
//!
//! The restorer gathers the inputs (the snapshot's nodes, the metadata of
//! what exists in the target, the index) and carries the decisions out; the
//! tests below state the rules as tables.

use std::collections::BTreeMap;

use crate::files::filter::PathFilter;
use crate::files::restorer::Overwrite;
use crate::format::blob::BlobType;
use crate::format::id::Id;
use crate::format::index::{BlobLocation, Index, PackInfo};
use crate::format::tree::{Extent, Node, NodeKind};

/// How the include and exclude patterns treat a path of the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Selection {
    /// Excluded, with everything below it.
    Excluded,
    /// Not included: nothing is restored here, but a directory is still
    /// walked, as entries below it may be included.
    NotIncluded,
    /// Restored (and, with `delete`, a target entry here may be removed).
    Included,
}

/// Applies the patterns to `rel` (an absolute path in the snapshot): an
/// exclude wins over an include, a pattern matching a directory applies to
/// everything below it, and no includes means everything is included.
pub(super) fn select(includes: &PathFilter, excludes: &PathFilter, rel: &[u8]) -> Selection {
    if excludes.matches_self_or_ancestor(rel) {
        Selection::Excluded
    } else if includes.is_empty() || includes.matches_self_or_ancestor(rel) {
        Selection::Included
    } else {
        Selection::NotIncluded
    }
}

/// An entry found in the target where a node is to be restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Existing {
    pub kind: NodeKind,
    pub size: u64,
    pub mtime_secs: i64,
    pub mtime_nanos: i64,
    /// A symlink's target, read only when the node is a symlink too.
    pub link_target: Option<Vec<u8>>,
}

/// What to do about an existing entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    /// Leave it alone, and restore nothing in its place.
    Keep,
    /// Remove it, then restore.
    Replace,
    /// Restore into it: an existing directory is merged, never replaced.
    Merge,
}

/// Whether `existing` already is what restoring `node` would make: a file
/// of the same size and modification time (to the nanosecond), or a
/// symlink with the same target. Other kinds are always restored again.
pub(super) fn unchanged(existing: &Existing, node: &Node) -> bool {
    existing.kind == node.kind
        && match node.kind {
            NodeKind::File => {
                existing.size == node.size
                    && existing.mtime_secs == node.mtime.secs
                    && existing.mtime_nanos == node.mtime.nanos as i64
            }
            NodeKind::Symlink => existing.link_target.as_deref() == Some(&node.link_target[..]),
            _ => false,
        }
}

/// The overwrite policy applied to `existing`, where `node` is to be
/// restored.
pub(super) fn overwrite(policy: Overwrite, existing: &Existing, node: &Node) -> Action {
    if existing.kind == NodeKind::Dir && node.kind == NodeKind::Dir {
        return Action::Merge;
    }
    match policy {
        Overwrite::Never => Action::Keep,
        Overwrite::IfChanged if unchanged(existing, node) => Action::Keep,
        Overwrite::IfChanged | Overwrite::Always => Action::Replace,
    }
}

/// The overwrite policy applied to an entry of kind `existing` where a
/// directory is needed (one being restored, or the parent of an included
/// entry): a directory is merged; anything else is in the way.
pub(super) fn overwrite_for_directory(policy: Overwrite, existing: NodeKind) -> Action {
    match (existing, policy) {
        (NodeKind::Dir, _) => Action::Merge,
        (_, Overwrite::Never) => Action::Keep,
        _ => Action::Replace,
    }
}

/// One place in a file where (part of) a blob goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BlobUse {
    pub id: Id,
    /// Where in the file.
    pub file_offset: u64,
    /// Which part of the blob's plaintext.
    pub blob_offset: u32,
    pub length: u32,
}

/// Where each blob extent of a file's `content` is written, in file order;
/// holes are skipped (the file is sparse there).
pub(super) fn blob_uses(content: &[Extent]) -> Vec<BlobUse> {
    let mut uses = Vec::new();
    let mut offset = 0u64;
    for extent in content {
        if let Extent::Blob { id, offset: blob_offset, length } = *extent {
            uses.push(BlobUse { id: *id, file_offset: offset, blob_offset, length });
        }
        offset += extent.len();
    }
    uses
}

/// Whether `content` ends with a hole: writing the blobs does not make the
/// file long enough, so its length is set explicitly.
pub(super) fn ends_with_hole(content: &[Extent]) -> bool {
    matches!(content.last(), Some(Extent::Hole { .. }))
}

/// Unneeded bytes between two needed blobs that are still read rather
/// than starting a new request.
pub(super) const MAX_GAP: u64 = 1 << 20;
/// Longest single read (a worker holds one at a time).
pub(super) const MAX_RUN: u64 = 4 << 20;

/// One range of one pack to read, with the needed blobs in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ReadRun {
    pub pack: PackInfo,
    pub start: u64,
    pub end: u64,
    /// In offset order.
    pub blobs: Vec<(Id, BlobLocation)>,
}

/// How the needed blobs are read.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct ReadPlan {
    /// By the pack's position in the index, then offset.
    pub runs: Vec<ReadRun>,
    /// Needed blobs the index does not list, by id.
    pub missing: Vec<Id>,
    /// Needed as file data but indexed as tree blobs (a damaged or crafted
    /// snapshot), by id: never read as file content.
    pub not_data: Vec<Id>,
}

/// Groups the `needed` blobs by the pack `index` places them in, and each
/// pack's blobs, in offset order, into runs: a blob joins the run before it
/// when the gap between them is at most [`MAX_GAP`] (reading through a
/// small gap is cheaper than another request) and the run stays within
/// [`MAX_RUN`] bytes (it is held in memory). A blob larger than that is a
/// run of its own.
pub(super) fn plan_reads<'a>(needed: impl IntoIterator<Item = &'a Id>, index: &Index) -> ReadPlan {
    let mut plan = ReadPlan::default();
    type Located = Vec<(Id, BlobLocation)>;
    let mut by_pack: BTreeMap<u32, (&PackInfo, Located)> = BTreeMap::new();
    for id in needed {
        match index.get(id) {
            Some((_, loc)) if loc.blob_type != BlobType::Data => plan.not_data.push(*id),
            Some((pack, loc)) => by_pack.entry(loc.pack).or_insert_with(|| (pack, Vec::new())).1.push((*id, loc)),
            None => plan.missing.push(*id),
        }
    }
    plan.missing.sort();
    plan.not_data.sort();
    for (_, (pack, mut blobs)) in by_pack {
        blobs.sort_by_key(|(id, loc)| (loc.offset, *id));
        let mut run: Option<ReadRun> = None;
        for (id, loc) in blobs {
            let (start, end) = (loc.offset as u64, loc.offset as u64 + loc.length as u64);
            match &mut run {
                Some(r) if start <= r.end + MAX_GAP && end - r.start <= MAX_RUN => {
                    r.end = r.end.max(end);
                    r.blobs.push((id, loc));
                }
                _ => {
                    plan.runs.extend(run.take());
                    run = Some(ReadRun { pack: pack.clone(), start, end, blobs: vec![(id, loc)] });
                }
            }
        }
        plan.runs.extend(run);
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::id::{DataId, PackId};
    use crate::format::index::IndexedPack;
    use crate::format::pack::PackEntry;
    use crate::format::tree::Time;

    fn id(n: u8) -> Id {
        Id([n; 32])
    }

    #[test]
    fn selection_table() {
        // (includes, excludes, path, selection)
        let cases: &[(&[&str], &[&str], &str, Selection)] = &[
            (&[], &[], "/a/b", Selection::Included),
            (&[], &["*.tmp"], "/a/x.tmp", Selection::Excluded),
            (&[], &["/a"], "/a/b/c", Selection::Excluded),
            (&[], &["/a"], "/ab", Selection::Included),
            (&["/a/b"], &[], "/a", Selection::NotIncluded),
            (&["/a/b"], &[], "/a/b", Selection::Included),
            (&["/a/b"], &[], "/a/b/c/d", Selection::Included),
            (&["/a/b"], &[], "/a/c", Selection::NotIncluded),
            (&["/a"], &["/a/b"], "/a/b/c", Selection::Excluded),
            (&["/a"], &["/a/b"], "/a/c", Selection::Included),
            (&["*.txt"], &[], "/deep/dir/x.txt", Selection::Included),
            (&["*.txt"], &[], "/deep/dir", Selection::NotIncluded),
        ];
        for &(includes, excludes, path, expected) in cases {
            let (inc, exc) = (PathFilter::new(includes).unwrap(), PathFilter::new(excludes).unwrap());
            assert_eq!(select(&inc, &exc, path.as_bytes()), expected, "{includes:?} {excludes:?} {path}");
        }
    }

    fn file(size: u64, secs: i64, nanos: u32) -> Node {
        let mut n = Node::new("f", NodeKind::File);
        n.size = size;
        n.mtime = Time { secs, nanos };
        n
    }

    fn symlink(target: &str) -> Node {
        let mut n = Node::new("l", NodeKind::Symlink);
        n.link_target = target.as_bytes().to_vec();
        n
    }

    fn existing(kind: NodeKind, size: u64, secs: i64, nanos: i64, link: Option<&str>) -> Existing {
        Existing { kind, size, mtime_secs: secs, mtime_nanos: nanos, link_target: link.map(|l| l.as_bytes().to_vec()) }
    }

    #[test]
    fn overwrite_table() {
        use Action::*;
        use NodeKind as K;
        let f = file(10, 100, 5);
        let fifo = Node::new("p", K::Fifo);
        let link = symlink("t");
        // (case, existing, node, [Always, IfChanged, Never])
        let cases: Vec<(&str, Existing, &Node, [Action; 3])> = vec![
            ("same file", existing(K::File, 10, 100, 5, None), &f, [Replace, Keep, Keep]),
            ("other size", existing(K::File, 11, 100, 5, None), &f, [Replace, Replace, Keep]),
            ("other second", existing(K::File, 10, 101, 5, None), &f, [Replace, Replace, Keep]),
            ("other nanosecond", existing(K::File, 10, 100, 6, None), &f, [Replace, Replace, Keep]),
            ("a directory where a file goes", existing(K::Dir, 10, 100, 5, None), &f, [Replace, Replace, Keep]),
            ("a symlink where a file goes", existing(K::Symlink, 10, 100, 5, Some("x")), &f, [Replace, Replace, Keep]),
            ("same symlink", existing(K::Symlink, 1, 0, 0, Some("t")), &link, [Replace, Keep, Keep]),
            ("other target", existing(K::Symlink, 1, 0, 0, Some("u")), &link, [Replace, Replace, Keep]),
            ("unreadable target", existing(K::Symlink, 1, 0, 0, None), &link, [Replace, Replace, Keep]),
            ("a FIFO is never unchanged", existing(K::Fifo, 0, 0, 0, None), &fifo, [Replace, Replace, Keep]),
        ];
        for (name, existing, node, expected) in cases {
            for (policy, want) in [Overwrite::Always, Overwrite::IfChanged, Overwrite::Never].into_iter().zip(expected)
            {
                assert_eq!(overwrite(policy, &existing, node), want, "{name}, {policy:?}");
            }
        }
        let dir = Node::new("d", K::Dir);
        for policy in [Overwrite::Always, Overwrite::IfChanged, Overwrite::Never] {
            assert_eq!(overwrite(policy, &existing(K::Dir, 0, 0, 0, None), &dir), Merge, "{policy:?}");
            assert_eq!(overwrite_for_directory(policy, K::Dir), Merge, "{policy:?}");
            let in_the_way = if policy == Overwrite::Never { Keep } else { Replace };
            assert_eq!(overwrite_for_directory(policy, K::File), in_the_way, "{policy:?}");
            assert_eq!(overwrite_for_directory(policy, K::Symlink), in_the_way, "{policy:?}");
        }
    }

    #[test]
    fn blob_uses_skip_holes_and_keep_slices() {
        let content = [
            Extent::Hole { length: 4096 },
            Extent::Blob { id: DataId(id(1)), offset: 0, length: 100 },
            Extent::Blob { id: DataId(id(2)), offset: 50, length: 10 },
            Extent::Hole { length: 1000 },
            Extent::Blob { id: DataId(id(1)), offset: 0, length: 100 },
        ];
        assert_eq!(
            blob_uses(&content),
            vec![
                BlobUse { id: id(1), file_offset: 4096, blob_offset: 0, length: 100 },
                BlobUse { id: id(2), file_offset: 4196, blob_offset: 50, length: 10 },
                BlobUse { id: id(1), file_offset: 5206, blob_offset: 0, length: 100 },
            ]
        );
        assert!(!ends_with_hole(&content));
        assert!(ends_with_hole(&content[..4]));
        assert!(blob_uses(&[]).is_empty() && !ends_with_hole(&[]));
        assert!(blob_uses(&[Extent::Hole { length: 7 }]).is_empty());
    }

    /// A pack's blobs: (blob, offset, length).
    type Blobs<'a> = &'a [(u8, u32, u32)];

    /// An index of packs `(pack, blobs)`, added in order (so the first pack
    /// is at position 0).
    fn index(packs: &[(u8, Blobs<'_>)]) -> Index {
        let mut index = Index::default();
        for &(pack, blobs) in packs {
            let blobs: Vec<PackEntry> = blobs
                .iter()
                .map(|&(b, offset, length)| PackEntry {
                    blob_type: BlobType::Data,
                    id: id(b),
                    offset,
                    length,
                    raw_length: length,
                })
                .collect();
            index.add_pack(&IndexedPack { id: PackId(id(pack)), size: 1 << 30, session_public: [0; 32], blobs }, true);
        }
        index
    }

    #[test]
    fn read_runs_table() {
        const MIB: u32 = 1 << 20;
        // (case, pack 0's blobs (id, offset, length), needed ids, runs as
        // (start, end, ids))
        type Case = (&'static str, Vec<(u8, u32, u32)>, Vec<u8>, Vec<(u64, u64, Vec<u8>)>);
        let cases: Vec<Case> = vec![
            ("adjacent blobs: one read", vec![(1, 0, 10), (2, 10, 10)], vec![2, 1], vec![(0, 20, vec![1, 2])]),
            (
                "only the needed blobs, from the first to the last",
                vec![(1, 0, 10), (2, 10, 10), (3, 20, 10)],
                vec![3, 1],
                vec![(0, 30, vec![1, 3])],
            ),
            (
                "a gap of exactly 1 MiB is read through",
                vec![(1, 0, 10), (2, 10 + MIB, 10)],
                vec![1, 2],
                vec![(0, 20 + MIB as u64, vec![1, 2])],
            ),
            (
                "a larger gap starts a new read",
                vec![(1, 0, 10), (2, 11 + MIB, 10)],
                vec![1, 2],
                vec![(0, 10, vec![1]), (11 + MIB as u64, 21 + MIB as u64, vec![2])],
            ),
            (
                "a run reaching exactly 4 MiB stays one",
                vec![(1, 0, 2 * MIB), (2, 2 * MIB, 2 * MIB)],
                vec![1, 2],
                vec![(0, 4 * MIB as u64, vec![1, 2])],
            ),
            (
                "a run would pass 4 MiB: split",
                vec![(1, 0, 2 * MIB), (2, 2 * MIB, 2 * MIB + 1)],
                vec![1, 2],
                vec![(0, 2 * MIB as u64, vec![1]), (2 * MIB as u64, 4 * MIB as u64 + 1, vec![2])],
            ),
            (
                "a blob larger than 4 MiB is read alone",
                vec![(1, 0, 10), (2, 10, 5 * MIB), (3, 10 + 5 * MIB, 10)],
                vec![1, 2, 3],
                vec![
                    (0, 10, vec![1]),
                    (10, 10 + 5 * MIB as u64, vec![2]),
                    (10 + 5 * MIB as u64, 20 + 5 * MIB as u64, vec![3]),
                ],
            ),
        ];
        for (name, blobs, needed, expected) in cases {
            let index = index(&[(9, &blobs)]);
            let plan = plan_reads(&needed.iter().map(|&n| id(n)).collect::<Vec<_>>(), &index);
            let runs: Vec<(u64, u64, Vec<u8>)> = plan
                .runs
                .iter()
                .map(|r| {
                    assert_eq!(*r.pack.id, id(9), "{name}");
                    (r.start, r.end, r.blobs.iter().map(|(id, _)| id.0[0]).collect())
                })
                .collect();
            assert_eq!(runs, expected, "{name}");
            assert!(plan.missing.is_empty(), "{name}");
        }
    }

    #[test]
    fn reads_are_grouped_by_pack_and_unknown_blobs_reported() {
        let index = index(&[(7, &[(1, 0, 10), (2, 10, 10)]), (8, &[(3, 0, 10)])]);
        let plan = plan_reads(&[id(3), id(9), id(1), id(5)], &index);
        let runs: Vec<(Id, Vec<Id>)> =
            plan.runs.iter().map(|r| (*r.pack.id, r.blobs.iter().map(|(id, _)| *id).collect())).collect();
        assert_eq!(runs, vec![(id(7), vec![id(1)]), (id(8), vec![id(3)])]);
        assert_eq!(plan.missing, vec![id(5), id(9)]);
        assert_eq!(plan_reads(&[], &index), ReadPlan::default());
    }
}
