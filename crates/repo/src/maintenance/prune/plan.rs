//! Prune's decisions, as pure functions over what a run has read: which
//! index files are live, which marked packs to rescue, what a sweep may
//! delete and in which order, and which packs to keep, repack or mark.
//!
//! Nothing here does I/O or reads the clock; the caller passes the listings,
//! the used-blob set and `now`, and carries the plans out (FORMAT.md §12.3).
//! Keeping the decisions apart from the requests lets the tests below state
//! the rules as tables instead of staging repositories.

use std::collections::{HashMap, HashSet};

use crate::error::{Error, Result};
use crate::format::id::{Id, PackId};
use crate::format::index::{IndexFile, IndexedPack};
use crate::maintenance::trash::TrashRecord;
use crate::storage::backend::{FileKind, ListedObject};

use super::{COMPACT_INDEX_FILES, UnusedLimit};

/// A pack as prune sees it.
#[derive(Debug, Clone)]
pub(super) struct Pack {
    pub entry: IndexedPack,
    /// Listed by an authenticated index file.
    pub trusted: bool,
}

/// The index files of the first listing, sorted out.
#[derive(Debug, Default)]
pub(super) struct IndexState {
    /// Every pack a live file lists; a pack listed by an authenticated file
    /// is trusted even when an unauthenticated file lists it too.
    pub packs: HashMap<Id, Pack>,
    /// Files no authenticated file supersedes, in listing order.
    pub live: Vec<Id>,
    /// Superseded files (readable or not), to retire.
    pub retired: Vec<Id>,
    /// Every file of the listing: a later listing adds only the others.
    pub known_files: HashSet<Id>,
    /// What each file supersedes; empty for unauthenticated files, whose
    /// claims count for nothing.
    pub supersedes: HashMap<Id, Vec<Id>>,
}

/// Sorts the index files read into live and retired ones and collects the
/// packs the live ones list. `unreadable_superseded` are files that could
/// not be read but that an authenticated file supersedes.
pub(super) fn index_state(files: Vec<(Id, IndexFile)>, unreadable_superseded: Vec<Id>) -> IndexState {
    let superseded: HashSet<Id> =
        files.iter().filter(|(_, f)| f.authenticated).flat_map(|(_, f)| f.supersedes.iter().copied()).collect();
    let supersedes: HashMap<Id, Vec<Id>> =
        files.iter().map(|(id, f)| (*id, if f.authenticated { f.supersedes.clone() } else { vec![] })).collect();
    let mut known_files: HashSet<Id> = files.iter().map(|(id, _)| *id).collect();
    known_files.extend(unreadable_superseded.iter().copied());
    let mut state = IndexState { retired: unreadable_superseded, known_files, supersedes, ..IndexState::default() };
    for (id, file) in files {
        if superseded.contains(&id) {
            state.retired.push(id);
            continue;
        }
        state.live.push(id);
        for entry in file.packs {
            match state.packs.get(&entry.id) {
                Some(p) if p.trusted || !file.authenticated => {}
                _ => {
                    state.packs.insert(*entry.id, Pack { entry, trusted: file.authenticated });
                }
            }
        }
    }
    state
}

/// Whether `record`'s grace period is over.
pub(super) fn due(record: &TrashRecord, now: i64, grace: i64) -> bool {
    now - record.marked_at >= grace
}

/// What index files published after the first listing (by backups that were
/// running) add: their packs count as indexed, their blobs as listed.
#[derive(Debug, Default)]
pub(super) struct LateIndex {
    pub packs: HashSet<Id>,
    pub blobs: HashSet<Id>,
}

/// The marked packs to list again: those of `records` that hold a `used`
/// blob that no indexed pack (`current`, `late`) holds, and that are still
/// in storage (`present`). A pack rescued and marked again sits in two
/// records, and the older record's sweep may have deleted it. Once a pack
/// is rescued its blobs count as listed, so a blob in several marked packs
/// rescues only the first of them.
pub(super) fn rescue(
    records: &[(Id, TrashRecord)],
    current: &HashMap<Id, Pack>,
    late: &LateIndex,
    used: &HashSet<Id>,
    present: &HashSet<Id>,
) -> Vec<IndexedPack> {
    let mut listed: HashSet<Id> = current.values().flat_map(|p| p.entry.blobs.iter().map(|b| b.id)).collect();
    listed.extend(late.blobs.iter().copied());
    let mut rescue = Vec::new();
    for (_, record) in records {
        for pack in record.content.packs.iter().filter(|p| present.contains(&p.id)) {
            let needed = pack.blobs.iter().any(|b| used.contains(&b.id) && !listed.contains(&b.id));
            if needed && !current.contains_key(&pack.id) && !late.packs.contains(&pack.id) {
                listed.extend(pack.blobs.iter().map(|b| b.id));
                rescue.push(pack.clone());
            }
        }
    }
    rescue
}

/// What sweeping one deletion record deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RecordSweep {
    /// The record.
    pub record: Id,
    /// When it was marked.
    pub marked_at: i64,
    /// Its packs that no index lists now, with their sizes.
    pub packs: Vec<(Id, u64)>,
    /// Its retired index files that are no longer live.
    pub index_files: Vec<Id>,
    /// The same files, in batches to delete one after the other: a file
    /// goes only after the files it supersedes, so a superseded file can
    /// never become live again.
    pub index_batches: Vec<Vec<Id>>,
}

/// The sweep of every deletion record.
#[derive(Debug, Default)]
pub(super) struct SweepPlan {
    /// The records whose grace period is over, in the order given (oldest
    /// first: a later record may retire the file that supersedes an
    /// earlier record's files).
    pub sweeps: Vec<RecordSweep>,
    /// Records still inside their grace period.
    pub pending: usize,
    /// Index files that some record (due or not) retires already.
    pub in_records: HashSet<Id>,
    /// Packs of pending records: marked already, not to be marked again.
    pub marked_elsewhere: HashSet<Id>,
}

/// Plans the sweep of `records` (oldest first). `indexed` are the packs some
/// index file lists now (never deleted), `live` the live index files (a
/// retired file that is still live was never superseded, because the
/// marking run stopped early, so it stays), `supersedes` what each file
/// supersedes.
pub(super) fn sweep(
    records: &[(Id, TrashRecord)],
    now: i64,
    grace: i64,
    indexed: &HashSet<Id>,
    live: &[Id],
    supersedes: &HashMap<Id, Vec<Id>>,
) -> SweepPlan {
    let live: HashSet<&Id> = live.iter().collect();
    let mut plan = SweepPlan::default();
    for (id, record) in records {
        plan.in_records.extend(record.content.supersedes.iter().copied());
        if !due(record, now, grace) {
            plan.pending += 1;
            plan.marked_elsewhere.extend(record.content.packs.iter().map(|p| *p.id));
            continue;
        }
        let packs: Vec<(Id, u64)> =
            record.content.packs.iter().filter(|p| !indexed.contains(&p.id)).map(|p| (*p.id, p.size)).collect();
        let index_files: Vec<Id> = record.content.supersedes.iter().filter(|f| !live.contains(f)).copied().collect();
        let index_batches = deletion_batches(&index_files, supersedes);
        plan.sweeps.push(RecordSweep { record: *id, marked_at: record.marked_at, packs, index_files, index_batches });
    }
    plan
}

/// Orders the deletion of `files`: each batch holds the files none of whose
/// superseded files is still to be deleted. Batches are sorted by id.
fn deletion_batches(files: &[Id], supersedes: &HashMap<Id, Vec<Id>>) -> Vec<Vec<Id>> {
    let mut remaining: HashSet<Id> = files.iter().copied().collect();
    let mut batches = Vec::new();
    while !remaining.is_empty() {
        let mut ready: Vec<Id> = remaining
            .iter()
            .filter(|f| supersedes.get(f).is_none_or(|subs| subs.iter().all(|s| !remaining.contains(s) || s == *f)))
            .copied()
            .collect();
        // A cycle cannot be built from content-addressed files; if one shows
        // up anyway, delete the rest together.
        if ready.is_empty() {
            ready = remaining.iter().copied().collect();
        }
        ready.sort();
        for f in &ready {
            remaining.remove(f);
        }
        batches.push(ready);
    }
    batches
}

/// Everything [`mark`] decides from.
pub(super) struct MarkInputs<'a> {
    /// The indexed packs (with rescued ones).
    pub current: HashMap<Id, Pack>,
    /// The packs in storage now.
    pub listed: &'a HashMap<Id, ListedObject>,
    /// The blobs the snapshots use.
    pub used: &'a HashSet<Id>,
    /// The live index files.
    pub live: &'a [Id],
    /// The superseded index files.
    pub retired: Vec<Id>,
    /// Index files some deletion record retires already.
    pub in_records: &'a HashSet<Id>,
    /// Packs of pending records and packs indexed since the first listing:
    /// never marked as unindexed.
    pub marked_elsewhere: &'a HashSet<Id>,
    /// Seconds since the Unix epoch.
    pub now: i64,
    /// The grace period in seconds.
    pub grace: i64,
    /// Unused data tolerated in kept packs.
    pub max_unused: UnusedLimit,
    /// At most this many bytes of used blobs copied by repacking.
    pub max_repack_bytes: Option<u64>,
}

/// A pack whose used blobs are copied into new packs.
#[derive(Debug, Clone)]
pub(super) struct Repack {
    pub pack: IndexedPack,
    /// Positions in `pack.blobs` of the blobs to copy.
    pub used: Vec<usize>,
}

/// What the mark step does.
#[derive(Debug, Default)]
pub(super) struct MarkPlan {
    /// Indexed packs, and their bytes (including missing ones).
    pub packs: usize,
    pub bytes: u64,
    /// Indexed packs missing from storage that hold nothing needed: left
    /// out of the new index.
    pub missing_dropped: usize,
    /// Packs with no used blob, trusted first, then by id.
    pub unused: Vec<IndexedPack>,
    /// Packs to repack, in decreasing unused share.
    pub repack: Vec<Repack>,
    /// Used bytes the repacking copies.
    pub repack_bytes: u64,
    /// Packs in storage that no index lists, older than the grace period,
    /// by id.
    pub unindexed: Vec<IndexedPack>,
    /// Packs that stay, by id, for an authenticated index file and for an
    /// unauthenticated one (only unauthenticated files listed them).
    pub kept_trusted: Vec<IndexedPack>,
    pub kept_untrusted: Vec<IndexedPack>,
    /// Unused bytes left in the packs that stay.
    pub unused_bytes_kept: u64,
    /// The index files the deletion record retires: the live ones, then
    /// the superseded ones no record retires yet.
    pub retire: Vec<Id>,
    /// Whether to write anything: packs to mark, missing packs to drop,
    /// files to retire, or too many live index files.
    pub rewrite: bool,
}

impl MarkPlan {
    /// The packs of the new deletion record: unused, repacked, unindexed.
    pub fn marked(&self) -> Vec<IndexedPack> {
        let mut marked = self.unused.clone();
        marked.extend(self.repack.iter().map(|r| r.pack.clone()));
        marked.extend(self.unindexed.iter().cloned());
        marked
    }

    /// How many packs the record marks.
    pub fn packs_marked(&self) -> usize {
        self.unused.len() + self.repack.len() + self.unindexed.len()
    }

    /// Their bytes.
    pub fn bytes_marked(&self) -> u64 {
        self.unused.iter().chain(self.unindexed.iter()).map(|p| p.size).sum::<u64>()
            + self.repack.iter().map(|r| r.pack.size).sum::<u64>()
    }

    /// Packs that stay.
    pub fn packs_kept(&self) -> usize {
        self.kept_trusted.len() + self.kept_untrusted.len()
    }
}

/// A pack in storage and what of it is used.
struct Usage {
    pack: Pack,
    used_bytes: u64,
    unused_bytes: u64,
    used: Vec<usize>,
}

/// Decides which packs stay, which are repacked and which are marked.
///
/// Every used blob gets one home: the first pack in storage that holds it,
/// trusted packs first, then by pack id; other copies count as unused. A
/// pack with no used blob is unused. Packs with unused bytes are repacked in
/// order of decreasing unused share until the unused bytes left are within
/// `max_unused` (of the kept packs' size), skipping those whose used bytes
/// would take the copy past `max_repack_bytes`. Fails when an indexed pack
/// missing from storage holds a used blob that no other pack homes.
pub(super) fn mark(inputs: MarkInputs<'_>) -> Result<MarkPlan> {
    let MarkInputs { current, listed, used, live, retired, in_records, marked_elsewhere, now, grace, .. } = inputs;
    let mut plan =
        MarkPlan { packs: current.len(), bytes: current.values().map(|p| p.entry.size).sum(), ..MarkPlan::default() };

    // Packs with unindexed ids are checked before `current` is consumed.
    let mut unindexed: Vec<IndexedPack> = listed
        .values()
        .filter(|o| !current.contains_key(&o.id) && !marked_elsewhere.contains(&o.id))
        .filter(|o| now - o.modified_unix >= grace && o.size <= crate::format::pack::MAX_PACK_SIZE)
        .map(|o| IndexedPack { id: PackId(o.id), size: o.size, session_public: [0; 32], blobs: Vec::new() })
        .collect();
    unindexed.sort_by_key(|p| p.id);

    let (mut present, mut missing): (Vec<Pack>, Vec<Pack>) =
        current.into_values().partition(|p| listed.contains_key(&p.entry.id));
    present.sort_by_key(|p| (!p.trusted, p.entry.id));
    missing.sort_by_key(|p| p.entry.id);
    let mut homed: HashSet<Id> = HashSet::new();
    let mut usages: Vec<Usage> = Vec::with_capacity(present.len());
    for pack in present {
        let mut u = Usage { pack, used_bytes: 0, unused_bytes: 0, used: Vec::new() };
        for (i, b) in u.pack.entry.blobs.iter().enumerate() {
            if used.contains(&b.id) && homed.insert(b.id) {
                u.used_bytes += b.length as u64;
                u.used.push(i);
            } else {
                u.unused_bytes += b.length as u64;
            }
        }
        usages.push(u);
    }
    for pack in &missing {
        if let Some(b) = pack.entry.blobs.iter().find(|b| used.contains(&b.id) && !homed.contains(&b.id)) {
            return Err(Error::DamagedForPrune(format!(
                "pack {} is listed in the index but missing from storage, and snapshots need blob {}",
                FileKind::Pack.relative_path(&pack.entry.id),
                b.id
            )));
        }
        plan.missing_dropped += 1;
    }

    // Fully unused packs go; partly used ones may be repacked.
    let mut kept_bytes = 0u64;
    let mut partly: Vec<usize> = Vec::new();
    for (i, u) in usages.iter().enumerate() {
        if !u.used.is_empty() {
            kept_bytes += u.pack.entry.size;
            if u.unused_bytes > 0 {
                partly.push(i);
            }
        }
    }
    let mut unused_kept: u64 = partly.iter().map(|&i| usages[i].unused_bytes).sum();
    let limit = inputs.max_unused.bytes(kept_bytes);
    let share = |u: &Usage| u.unused_bytes as f64 / u.pack.entry.size.max(1) as f64;
    partly.sort_by(|&a, &b| {
        let (a, b) = (&usages[a], &usages[b]);
        share(b).total_cmp(&share(a)).then(a.pack.entry.id.cmp(&b.pack.entry.id))
    });
    let mut repack: Vec<usize> = Vec::new();
    for i in partly {
        if unused_kept <= limit {
            break;
        }
        let u = &usages[i];
        if inputs.max_repack_bytes.is_some_and(|max| plan.repack_bytes + u.used_bytes > max) {
            continue;
        }
        plan.repack_bytes += u.used_bytes;
        unused_kept -= u.unused_bytes;
        repack.push(i);
    }
    plan.unused_bytes_kept = unused_kept;

    // Hand the packs out: repacked ones in their chosen order, the others
    // in homing order (unused) or by id (kept; `usages` is sorted by trust
    // then id, so each class stays sorted by id).
    let mut slots: Vec<Option<Usage>> = usages.into_iter().map(Some).collect();
    for i in repack {
        if let Some(u) = slots[i].take() {
            plan.repack.push(Repack { pack: u.pack.entry, used: u.used });
        }
    }
    for u in slots.into_iter().flatten() {
        if u.used.is_empty() {
            plan.unused.push(u.pack.entry);
        } else if u.pack.trusted {
            plan.kept_trusted.push(u.pack.entry);
        } else {
            plan.kept_untrusted.push(u.pack.entry);
        }
    }
    plan.unindexed = unindexed;

    let retired: Vec<Id> = retired.into_iter().filter(|f| !in_records.contains(f)).collect();
    plan.rewrite =
        plan.packs_marked() > 0 || plan.missing_dropped > 0 || !retired.is_empty() || live.len() > COMPACT_INDEX_FILES;
    plan.retire = live.to_vec();
    plan.retire.extend(retired);
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::blob::BlobType;
    use crate::format::pack::PackEntry;

    fn id(n: u8) -> Id {
        Id([n; 32])
    }

    /// A pack `n` holding blobs `(blob, sealed length)`; its size is the
    /// sum of the lengths (headers do not matter to the plans).
    fn pack(n: u8, blobs: &[(u8, u32)]) -> IndexedPack {
        let mut offset = 0;
        let blobs = blobs
            .iter()
            .map(|&(b, length)| {
                let entry = PackEntry { blob_type: BlobType::Data, id: id(b), offset, length, raw_length: length };
                offset += length;
                entry
            })
            .collect::<Vec<_>>();
        IndexedPack { id: PackId(id(n)), size: offset as u64, session_public: [0; 32], blobs }
    }

    fn packs(list: &[(IndexedPack, bool)]) -> HashMap<Id, Pack> {
        list.iter().map(|(p, trusted)| (*p.id, Pack { entry: p.clone(), trusted: *trusted })).collect()
    }

    fn ids(list: &[u8]) -> HashSet<Id> {
        list.iter().map(|&n| id(n)).collect()
    }

    fn id_list(list: &[u8]) -> Vec<Id> {
        list.iter().map(|&n| id(n)).collect()
    }

    fn sorted_ids<'a>(list: impl IntoIterator<Item = &'a IndexedPack>) -> Vec<Id> {
        let mut v: Vec<Id> = list.into_iter().map(|p| *p.id).collect();
        v.sort();
        v
    }

    fn record(marked_at: i64, packs: Vec<IndexedPack>, supersedes: Vec<Id>) -> TrashRecord {
        TrashRecord { marked_at, content: IndexFile { supersedes, packs, authenticated: true }, authenticated: true }
    }

    /// Objects in storage: (pack, size, modified).
    fn storage(list: &[(u8, u64, i64)]) -> HashMap<Id, ListedObject> {
        list.iter().map(|&(n, size, modified_unix)| (id(n), ListedObject { id: id(n), size, modified_unix })).collect()
    }

    /// Runs [`mark`] with every pack of `current` in storage (written at 0)
    /// and no index files.
    fn mark_all(current: &[(IndexedPack, bool)], used: &[u8], max_unused: UnusedLimit, max: Option<u64>) -> MarkPlan {
        let listed = storage(&current.iter().map(|(p, _)| (p.id.0.0[0], p.size, 0)).collect::<Vec<_>>());
        mark(MarkInputs {
            current: packs(current),
            listed: &listed,
            used: &ids(used),
            live: &[],
            retired: vec![],
            in_records: &HashSet::new(),
            marked_elsewhere: &HashSet::new(),
            now: 10,
            grace: 100,
            max_unused,
            max_repack_bytes: max,
        })
        .expect("no pack is missing")
    }

    #[test]
    fn index_state_sorts_live_from_retired_and_trusts_authenticated_listings() {
        let auth = |supersedes: Vec<Id>, packs: Vec<IndexedPack>| IndexFile { supersedes, packs, authenticated: true };
        let files = vec![
            // An old file, superseded by file 3.
            (id(1), auth(vec![], vec![pack(10, &[(100, 5)])])),
            // Unauthenticated: its claim to supersede file 4 counts for nothing.
            (id(2), IndexFile { supersedes: vec![id(4)], packs: vec![pack(11, &[(101, 5)])], authenticated: false }),
            (id(3), auth(vec![id(1), id(9)], vec![pack(10, &[(100, 5)]), pack(11, &[(101, 5)])])),
            (id(4), auth(vec![], vec![pack(12, &[(102, 5)])])),
        ];
        let state = index_state(files, vec![id(9)]);
        assert_eq!(state.live, vec![id(2), id(3), id(4)]);
        assert_eq!(state.retired, vec![id(9), id(1)]);
        assert_eq!(state.known_files, ids(&[1, 2, 3, 4, 9]));
        assert_eq!(state.supersedes[&id(2)], vec![]);
        assert_eq!(state.supersedes[&id(3)], vec![id(1), id(9)]);
        let trusted: Vec<(Id, bool)> = {
            let mut v: Vec<_> = state.packs.values().map(|p| (*p.entry.id, p.trusted)).collect();
            v.sort();
            v
        };
        // Pack 11 is listed by files 2 and 3: the authenticated listing wins.
        assert_eq!(trusted, vec![(id(10), true), (id(11), true), (id(12), true)]);
    }

    /// One mark case: packs `(pack, trusted)`, used blobs, limits, and the
    /// expected unused, repacked (in order) and kept packs.
    struct MarkCase {
        name: &'static str,
        packs: Vec<(IndexedPack, bool)>,
        used: &'static [u8],
        max_unused: UnusedLimit,
        max_repack_bytes: Option<u64>,
        unused: &'static [u8],
        repack: &'static [u8],
        kept: &'static [u8],
        unused_bytes_kept: u64,
    }

    #[test]
    fn mark_table() {
        let cases = vec![
            MarkCase {
                name: "a fully used pack stays",
                packs: vec![(pack(1, &[(10, 100), (11, 100)]), true)],
                used: &[10, 11],
                max_unused: UnusedLimit::Percent(0.0),
                max_repack_bytes: None,
                unused: &[],
                repack: &[],
                kept: &[1],
                unused_bytes_kept: 0,
            },
            MarkCase {
                name: "a fully unused pack is marked",
                packs: vec![(pack(1, &[(10, 100)]), true), (pack(2, &[(20, 100), (21, 50)]), true)],
                used: &[10],
                max_unused: UnusedLimit::Percent(5.0),
                max_repack_bytes: None,
                unused: &[2],
                repack: &[],
                kept: &[1],
                unused_bytes_kept: 0,
            },
            MarkCase {
                name: "a half-used pack within --max-unused stays",
                packs: vec![(pack(1, &[(10, 100), (11, 100)]), true), (pack(2, &[(20, 1800)]), true)],
                used: &[10, 20],
                // 100 unused bytes of 2000 kept: 5 %.
                max_unused: UnusedLimit::Percent(5.0),
                max_repack_bytes: None,
                unused: &[],
                repack: &[],
                kept: &[1, 2],
                unused_bytes_kept: 100,
            },
            MarkCase {
                name: "a half-used pack beyond --max-unused is repacked",
                packs: vec![(pack(1, &[(10, 100), (11, 100)]), true), (pack(2, &[(20, 1800)]), true)],
                used: &[10, 20],
                max_unused: UnusedLimit::Percent(4.9),
                max_repack_bytes: None,
                unused: &[],
                repack: &[1],
                kept: &[2],
                unused_bytes_kept: 0,
            },
            MarkCase {
                name: "an absolute --max-unused",
                packs: vec![(pack(1, &[(10, 100), (11, 100)]), true)],
                used: &[10],
                max_unused: UnusedLimit::Bytes(99),
                max_repack_bytes: None,
                unused: &[],
                repack: &[1],
                kept: &[],
                unused_bytes_kept: 0,
            },
            MarkCase {
                name: "unlimited never repacks",
                packs: vec![(pack(1, &[(10, 1), (11, 1000)]), true)],
                used: &[10],
                max_unused: UnusedLimit::Unlimited,
                max_repack_bytes: None,
                unused: &[],
                repack: &[],
                kept: &[1],
                unused_bytes_kept: 1000,
            },
            MarkCase {
                name: "repacking stops once the unused bytes left are within the limit, largest share first",
                packs: vec![
                    // 90 % unused.
                    (pack(1, &[(10, 10), (11, 90)]), true),
                    // 50 % unused.
                    (pack(2, &[(20, 50), (21, 50)]), true),
                    // 20 % unused.
                    (pack(3, &[(30, 400), (31, 100)]), true),
                ],
                used: &[10, 20, 30],
                // 240 unused bytes of 700 kept; after pack 1, 150 > 140;
                // after pack 2, 100 <= 140.
                max_unused: UnusedLimit::Bytes(140),
                max_repack_bytes: None,
                unused: &[],
                repack: &[1, 2],
                kept: &[3],
                unused_bytes_kept: 100,
            },
            MarkCase {
                name: "--max-repack-size skips packs whose used bytes would exceed it",
                packs: vec![
                    // The largest share, but 600 used bytes: over the cap.
                    (pack(1, &[(10, 600), (11, 1400)]), true),
                    (pack(2, &[(20, 50), (21, 50)]), true),
                    (pack(3, &[(30, 60), (31, 40)]), true),
                ],
                used: &[10, 20, 30],
                max_unused: UnusedLimit::Bytes(0),
                max_repack_bytes: Some(100),
                // Pack 2 (50 used) fits, pack 3 (60 more) does not.
                unused: &[],
                repack: &[2],
                kept: &[1, 3],
                unused_bytes_kept: 1440,
            },
            MarkCase {
                name: "a blob in two packs is homed in the trusted one; the other copy is unused",
                packs: vec![(pack(1, &[(10, 100)]), false), (pack(2, &[(10, 100)]), true)],
                used: &[10],
                max_unused: UnusedLimit::Percent(5.0),
                max_repack_bytes: None,
                unused: &[1],
                repack: &[],
                kept: &[2],
                unused_bytes_kept: 0,
            },
            MarkCase {
                name: "a blob in two trusted packs is homed in the lower pack id",
                packs: vec![(pack(2, &[(10, 100)]), true), (pack(1, &[(10, 100), (11, 100)]), true)],
                used: &[10, 11],
                max_unused: UnusedLimit::Percent(0.0),
                max_repack_bytes: None,
                unused: &[2],
                repack: &[],
                kept: &[1],
                unused_bytes_kept: 0,
            },
            MarkCase {
                name: "a duplicate left in a kept pack counts as unused",
                packs: vec![(pack(1, &[(10, 100)]), true), (pack(2, &[(10, 100), (20, 100)]), true)],
                used: &[10, 20],
                max_unused: UnusedLimit::Percent(0.0),
                max_repack_bytes: None,
                unused: &[],
                repack: &[2],
                kept: &[1],
                unused_bytes_kept: 0,
            },
        ];
        for case in cases {
            let plan = mark_all(&case.packs, case.used, case.max_unused, case.max_repack_bytes);
            let name = case.name;
            assert_eq!(sorted_ids(&plan.unused), id_list(case.unused), "{name}: unused");
            let repack: Vec<Id> = plan.repack.iter().map(|r| *r.pack.id).collect();
            assert_eq!(repack, id_list(case.repack), "{name}: repacked (in order)");
            assert_eq!(
                sorted_ids(plan.kept_trusted.iter().chain(&plan.kept_untrusted)),
                id_list(case.kept),
                "{name}: kept"
            );
            assert_eq!(plan.unused_bytes_kept, case.unused_bytes_kept, "{name}: unused bytes kept");
            assert_eq!(plan.rewrite, !case.unused.is_empty() || !case.repack.is_empty(), "{name}: rewrite");
        }
    }

    #[test]
    fn mark_gives_the_repacked_blobs_positions_and_the_record_its_packs_in_order() {
        let plan = mark_all(
            &[
                (pack(1, &[(10, 100), (11, 100), (12, 100)]), true),
                (pack(2, &[(20, 100)]), true),
                (pack(3, &[(30, 100)]), false),
            ],
            &[10, 12, 30],
            UnusedLimit::Bytes(0),
            None,
        );
        assert_eq!(plan.repack.len(), 1);
        assert_eq!(plan.repack[0].used, vec![0, 2], "blobs 10 and 12 are copied");
        assert_eq!(plan.repack_bytes, 200);
        assert_eq!(sorted_ids(&plan.kept_untrusted), id_list(&[3]), "only an unauthenticated file listed it");
        assert!(plan.kept_trusted.is_empty());
        let marked: Vec<Id> = plan.marked().iter().map(|p| *p.id).collect();
        assert_eq!(marked, id_list(&[2, 1]), "unused first, then repacked");
        assert_eq!((plan.packs_marked(), plan.bytes_marked(), plan.packs_kept()), (2, 400, 1));
        assert_eq!((plan.packs, plan.bytes), (3, 500));
    }

    /// Runs [`mark`] over pack 1 (indexed, used) and the given storage.
    fn mark_with_storage(
        listed: &[(u8, u64, i64)],
        marked_elsewhere: &[u8],
        live: &[Id],
        retired: Vec<Id>,
        in_records: &[u8],
    ) -> Result<MarkPlan> {
        mark(MarkInputs {
            current: packs(&[(pack(1, &[(10, 100)]), true)]),
            listed: &storage(listed),
            used: &ids(&[10]),
            live,
            retired,
            in_records: &ids(in_records),
            marked_elsewhere: &ids(marked_elsewhere),
            now: 1000,
            grace: 100,
            max_unused: UnusedLimit::Percent(5.0),
            max_repack_bytes: None,
        })
    }

    #[test]
    fn mark_table_of_unindexed_packs() {
        /// (case, storage beside pack 1, packs marked elsewhere, unindexed packs marked)
        type Case = (&'static str, &'static [(u8, u64, i64)], &'static [u8], &'static [u8]);
        let cases: &[Case] = &[
            ("older than the grace period: marked", &[(2, 50, 900)], &[], &[2]),
            ("exactly the grace period old: marked", &[(2, 50, 900), (3, 50, 901)], &[], &[2]),
            ("younger (a running backup's): left", &[(2, 50, 950)], &[], &[]),
            ("in a pending record or indexed since the listing: left", &[(2, 50, 0)], &[2], &[]),
            (
                "larger than a pack can be: not a pack, left",
                &[(2, crate::format::pack::MAX_PACK_SIZE + 1, 0)],
                &[],
                &[],
            ),
        ];
        for (name, extra, elsewhere, expected) in cases {
            let mut listed = vec![(1, 100, 0)];
            listed.extend_from_slice(extra);
            let plan = mark_with_storage(&listed, elsewhere, &[], vec![], &[]).expect("nothing missing");
            assert_eq!(sorted_ids(&plan.unindexed), id_list(expected), "{name}");
            assert!(plan.unindexed.iter().all(|p| p.blobs.is_empty()), "{name}: no blobs are known");
            assert_eq!(plan.rewrite, !expected.is_empty(), "{name}: rewrite");
            assert_eq!(sorted_ids(&plan.kept_trusted), id_list(&[1]), "{name}: pack 1 stays");
        }
    }

    #[test]
    fn mark_drops_missing_packs_unless_they_hold_needed_blobs() {
        let with = |current: &[(IndexedPack, bool)], used: &[u8]| {
            mark(MarkInputs {
                current: packs(current),
                listed: &storage(&[(1, 100, 0)]),
                used: &ids(used),
                live: &[],
                retired: vec![],
                in_records: &HashSet::new(),
                marked_elsewhere: &HashSet::new(),
                now: 0,
                grace: 100,
                max_unused: UnusedLimit::Percent(5.0),
                max_repack_bytes: None,
            })
        };
        // Pack 2 is indexed but not in storage; its blob 10 has a home in pack 1.
        let plan = with(&[(pack(1, &[(10, 100)]), true), (pack(2, &[(10, 100), (20, 100)]), true)], &[10]).unwrap();
        assert_eq!(plan.missing_dropped, 1);
        assert!(plan.rewrite, "the new index leaves the missing pack out");
        assert_eq!((plan.packs, plan.packs_kept(), plan.packs_marked()), (2, 1, 0));
        // Blob 20 is needed and only pack 2 had it.
        let err = with(&[(pack(1, &[(10, 100)]), true), (pack(2, &[(10, 100), (20, 100)]), true)], &[10, 20])
            .expect_err("a needed blob is lost");
        assert!(matches!(&err, Error::DamagedForPrune(m) if m.contains(&id(20).to_string())), "{err}");
    }

    #[test]
    fn mark_retires_live_files_and_superseded_ones_no_record_retires_yet() {
        let live = [id(40), id(41)];
        let plan = mark_with_storage(&[(1, 100, 0)], &[], &live, vec![id(50), id(51)], &[50]).unwrap();
        assert_eq!(plan.retire, vec![id(40), id(41), id(51)]);
        assert!(plan.rewrite, "file 51 is retired by nobody yet");

        let plan = mark_with_storage(&[(1, 100, 0)], &[], &live, vec![id(50)], &[50]).unwrap();
        assert!(!plan.rewrite, "nothing to mark, retire or compact");

        let many: Vec<Id> = (0..=COMPACT_INDEX_FILES as u8).map(|n| Id([n; 32])).collect();
        assert!(mark_with_storage(&[(1, 100, 0)], &[], &many, vec![], &[]).unwrap().rewrite, "too many live files");
        let enough = &many[..COMPACT_INDEX_FILES];
        assert!(!mark_with_storage(&[(1, 100, 0)], &[], enough, vec![], &[]).unwrap().rewrite);
    }

    /// One rescue case: the records' packs, which are in storage, the
    /// indexed packs, what late index files list, the used blobs, and the
    /// packs expected to be rescued (in order).
    struct RescueCase {
        name: &'static str,
        records: Vec<Vec<IndexedPack>>,
        present: &'static [u8],
        current: Vec<IndexedPack>,
        late: LateIndex,
        used: &'static [u8],
        rescued: &'static [u8],
    }

    #[test]
    fn rescue_table() {
        let cases = vec![
            RescueCase {
                name: "a blob a concurrent backup reused from a marked pack rescues it",
                records: vec![vec![pack(2, &[(20, 10), (21, 10)])]],
                present: &[2],
                current: vec![pack(1, &[(10, 10)])],
                late: LateIndex::default(),
                used: &[10, 21],
                rescued: &[2],
            },
            RescueCase {
                name: "marked blobs nobody uses: nothing to rescue",
                records: vec![vec![pack(2, &[(20, 10)])]],
                present: &[2],
                current: vec![pack(1, &[(10, 10)])],
                late: LateIndex::default(),
                used: &[10],
                rescued: &[],
            },
            RescueCase {
                name: "a used blob that an indexed pack also holds (repacked): no rescue",
                records: vec![vec![pack(2, &[(10, 10)])]],
                present: &[2],
                current: vec![pack(1, &[(10, 10)])],
                late: LateIndex::default(),
                used: &[10],
                rescued: &[],
            },
            RescueCase {
                name: "a used blob listed by an index file written since the listing: no rescue",
                records: vec![vec![pack(2, &[(20, 10)])]],
                present: &[2],
                current: vec![],
                late: LateIndex { packs: ids(&[3]), blobs: ids(&[20]) },
                used: &[20],
                rescued: &[],
            },
            RescueCase {
                name: "a marked pack indexed again meanwhile is not listed a second time",
                records: vec![vec![pack(2, &[(20, 10)])]],
                present: &[2],
                current: vec![],
                late: LateIndex { packs: ids(&[2]), blobs: HashSet::new() },
                used: &[20],
                rescued: &[],
            },
            RescueCase {
                name: "a marked pack gone from storage (swept by an older record) cannot be rescued",
                records: vec![vec![pack(2, &[(20, 10)])], vec![pack(2, &[(20, 10)])]],
                present: &[],
                current: vec![],
                late: LateIndex::default(),
                used: &[20],
                rescued: &[],
            },
            RescueCase {
                name: "a blob in two marked packs rescues only the first",
                records: vec![vec![pack(2, &[(20, 10)])], vec![pack(3, &[(20, 10)])]],
                present: &[2, 3],
                current: vec![],
                late: LateIndex::default(),
                used: &[20],
                rescued: &[2],
            },
            RescueCase {
                name: "a pack in two records is rescued once",
                records: vec![vec![pack(2, &[(20, 10)])], vec![pack(2, &[(20, 10)])]],
                present: &[2],
                current: vec![],
                late: LateIndex::default(),
                used: &[20],
                rescued: &[2],
            },
        ];
        for case in cases {
            let records: Vec<(Id, TrashRecord)> = case
                .records
                .into_iter()
                .enumerate()
                .map(|(i, packs)| (id(200 + i as u8), record(i as i64, packs, vec![])))
                .collect();
            let current = packs(&case.current.into_iter().map(|p| (p, true)).collect::<Vec<_>>());
            let rescued = rescue(&records, &current, &case.late, &ids(case.used), &ids(case.present));
            let rescued: Vec<Id> = rescued.iter().map(|p| *p.id).collect();
            assert_eq!(rescued, id_list(case.rescued), "{}", case.name);
        }
    }

    #[test]
    fn sweep_deletes_due_records_only_and_spares_reindexed_packs_and_live_files() {
        let records = vec![
            // Marked 200 s ago with a 100 s grace period: due. Pack 2 was
            // indexed again (rescued or re-listed) since: it stays. Index
            // file 31 is still live (its marking run stopped early): it stays.
            (id(100), record(800, vec![pack(1, &[(10, 5)]), pack(2, &[(20, 7)])], vec![id(30), id(31)])),
            // Exactly the grace period old: due.
            (id(101), record(900, vec![pack(3, &[(30, 9)])], vec![id(32)])),
            // Younger than the grace period: pending.
            (id(102), record(901, vec![pack(4, &[(40, 11)])], vec![id(33)])),
        ];
        let plan = sweep(&records, 1000, 100, &ids(&[2]), &[id(31)], &HashMap::new());
        assert_eq!(
            plan.sweeps,
            vec![
                RecordSweep {
                    record: id(100),
                    marked_at: 800,
                    packs: vec![(id(1), 5)],
                    index_files: vec![id(30)],
                    index_batches: vec![vec![id(30)]],
                },
                RecordSweep {
                    record: id(101),
                    marked_at: 900,
                    packs: vec![(id(3), 9)],
                    index_files: vec![id(32)],
                    index_batches: vec![vec![id(32)]],
                },
            ]
        );
        assert_eq!(plan.pending, 1);
        assert_eq!(plan.marked_elsewhere, ids(&[4]), "a pending record's packs are not marked again");
        assert_eq!(plan.in_records, ids(&[30, 31, 32, 33]), "every record's files count, due or not");
        assert!(due(&records[0].1, 1000, 100) && !due(&records[2].1, 1000, 100));
    }

    #[test]
    fn sweep_deletes_index_files_after_the_files_they_supersede() {
        // 3 supersedes 2, which supersedes 1; 4 supersedes nothing; 5
        // supersedes a file that is not being deleted.
        let supersedes: HashMap<Id, Vec<Id>> =
            [(id(3), vec![id(2)]), (id(2), vec![id(1)]), (id(5), vec![id(9)])].into_iter().collect();
        let batches = deletion_batches(&[id(3), id(2), id(1), id(4), id(5)], &supersedes);
        assert_eq!(batches, vec![vec![id(1), id(4), id(5)], vec![id(2)], vec![id(3)]]);
        // A cycle (impossible with content-addressed names) is deleted in one batch.
        let cycle: HashMap<Id, Vec<Id>> = [(id(1), vec![id(2)]), (id(2), vec![id(1)])].into_iter().collect();
        assert_eq!(deletion_batches(&[id(1), id(2)], &cycle), vec![vec![id(1), id(2)]]);
        // A file listing itself does not wait for itself.
        let own: HashMap<Id, Vec<Id>> = [(id(1), vec![id(1)])].into_iter().collect();
        assert_eq!(deletion_batches(&[id(1)], &own), vec![vec![id(1)]]);
        assert!(deletion_batches(&[], &own).is_empty());
    }
}
