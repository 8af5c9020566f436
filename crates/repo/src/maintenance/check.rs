//! `check`: verifies that a repository is complete and intact.
//!
//! Structure (always): every index entry's pack exists with the indexed
//! size; every snapshot decodes; every tree of every snapshot is indexed and
//! decodes; every data blob a file uses is indexed. With `read_data`, the
//! selected packs are downloaded whole: each must hash to its name and each
//! indexed blob in it must decrypt and hash to its id. Damaged blobs are then
//! traced to the files (per snapshot) that use them, so the report names the
//! packs, blobs, snapshots and files affected.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::blob::BlobType;
use crate::format::id::{Id, SnapshotId, TreeId};
use crate::format::index::{BlobLocation, Index};
use crate::format::tree::{Extent, Node, NodeKind, Tree};
use crate::repository::Repository;
use crate::storage::backend::FileKind;
use crate::view::{MAX_TREE_DEPTH, TreeLoader, expands_too_far};

/// Which packs `--read-data` reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Subset {
    /// Every pack.
    All,
    /// Group `n` of `m` (1-based): packs whose id's first 8 bytes, as a
    /// number, are `n - 1` modulo `m`. Deterministic: running `1/m` … `m/m`
    /// on successive days reads everything once.
    Part {
        /// Which group.
        n: u64,
        /// How many groups.
        m: u64,
    },
    /// A random selection of this percentage of the packs.
    Percent(f64),
    /// Random packs until this many bytes are selected.
    Bytes(u64),
}

impl Subset {
    /// Parses `n/m`, `P%` or a size such as `500MiB` (`parse_size` reads sizes).
    pub fn parse(text: &str, parse_size: impl Fn(&str) -> Option<u64>) -> Result<Subset> {
        let bad = || {
            Error::InvalidArgument(format!(
                "invalid subset {text:?}: use n/m (e.g. 1/7), a percentage (5%) or a size (500MiB)"
            ))
        };
        if let Some((n, m)) = text.split_once('/') {
            let (n, m): (u64, u64) = (n.trim().parse().map_err(|_| bad())?, m.trim().parse().map_err(|_| bad())?);
            return if m >= 1 && (1..=m).contains(&n) { Ok(Subset::Part { n, m }) } else { Err(bad()) };
        }
        if let Some(p) = text.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            return if p > 0.0 && p <= 100.0 { Ok(Subset::Percent(p)) } else { Err(bad()) };
        }
        parse_size(text).filter(|&b| b > 0).map(Subset::Bytes).ok_or_else(bad)
    }

    fn select(&self, packs: &[(Id, u64)]) -> Vec<Id> {
        use rand::seq::SliceRandom;
        match *self {
            Subset::All => packs.iter().map(|(id, _)| *id).collect(),
            Subset::Part { n, m } => packs
                .iter()
                .filter(|(id, _)| {
                    let head = u64::from_be_bytes(id.0[..8].try_into().expect("8 bytes"));
                    head % m == n - 1
                })
                .map(|(id, _)| *id)
                .collect(),
            Subset::Percent(p) => {
                let mut ids: Vec<Id> = packs.iter().map(|(id, _)| *id).collect();
                ids.shuffle(&mut rand::rng());
                let count = ((ids.len() as f64 * p / 100.0).ceil() as usize).min(ids.len());
                ids.truncate(count);
                ids
            }
            Subset::Bytes(limit) => {
                let mut shuffled = packs.to_vec();
                shuffled.shuffle(&mut rand::rng());
                let mut total = 0;
                shuffled
                    .into_iter()
                    .take_while(|(_, size)| {
                        let take = total < limit;
                        total += size;
                        take
                    })
                    .map(|(id, _)| id)
                    .collect()
            }
        }
    }
}

/// One thing found wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The object: `data/3f/3fa2…`, `blob 81c0…`, `snapshot 9d41…`, `snapshot 9d41… file /a/b`.
    pub object: String,
    /// What is wrong.
    pub message: String,
}

/// What `check` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    /// Everything wrong, each named.
    pub problems: Vec<Problem>,
    /// Packs not listed by any index file (left by interrupted backups; not damage).
    pub unindexed_packs: Vec<Id>,
    /// Temporary files of uploads that never finished (a process killed
    /// mid-upload); prune removes them once older than its grace period.
    pub upload_leftovers: Vec<crate::storage::backend::UploadLeftover>,
    /// Packs that prune marked for deletion (no longer indexed; a later
    /// prune deletes them).
    pub marked_packs: usize,
    /// Packs listed by the index.
    pub packs: usize,
    /// Snapshots checked.
    pub snapshots: usize,
    /// Distinct trees checked.
    pub trees: usize,
    /// Packs downloaded and verified.
    pub packs_read: usize,
    /// Bytes downloaded for that.
    pub bytes_read: u64,
}

/// Checks `repo`; `read_data` selects packs to download and verify.
pub async fn check(repo: &Repository, read_data: Option<Subset>) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    let index = Arc::new(repo.load_index().await?);
    report.packs = index.packs().len();
    let backend = repo.backend();

    // Key files, read from the storage (a cached copy would hide damage):
    // each must hash to its name and decode. A damaged key no one uses
    // today is still a password that no longer opens the repository.
    for (id, _) in backend.list(FileKind::Key).await? {
        let name = FileKind::Key.relative_path(&id);
        let problem = match backend.read(FileKind::Key, &id).await {
            Ok(bytes) if Id::of_object(&bytes) != id => {
                Some("damaged: its content does not hash to its name".to_owned())
            }
            Ok(bytes) => crate::format::keys::KeyFile::decode(&bytes).err().map(|e| format!("damaged: {e}")),
            Err(Error::ObjectNotFound { .. }) => None,
            Err(e) => Some(e.to_string()),
        };
        if let Some(mut message) = problem {
            if id == repo.key_id() {
                message.push_str(" (the key this session opened with, from the cache)");
            }
            report.problems.push(Problem { object: name, message });
        }
    }

    // Packs: present, right size; packs nothing indexes.
    let listed: HashMap<Id, u64> = backend.list(FileKind::Pack).await?.into_iter().collect();
    let indexed: HashSet<Id> = index.packs().iter().map(|p| *p.id).collect();
    for pack in index.packs() {
        let name = FileKind::Pack.relative_path(&pack.id);
        match listed.get(&pack.id) {
            None => report.problems.push(Problem { object: name, message: "missing (listed in the index)".into() }),
            Some(&size) if size != pack.size => report
                .problems
                .push(Problem { object: name, message: format!("is {size} bytes, the index says {}", pack.size) }),
            Some(_) => {}
        }
    }
    let mut marked: HashSet<Id> = HashSet::new();
    for (id, _) in backend.list(FileKind::Trash).await? {
        match repo.read_trash_record(&id).await {
            Ok(record) if record.authenticated => marked.extend(record.content.packs.iter().map(|p| *p.id)),
            Ok(_) => report.problems.push(Problem {
                object: FileKind::Trash.relative_path(&id),
                message: "a deletion record not written by a full key (prune ignores it)".into(),
            }),
            Err(e) => {
                report.problems.push(Problem { object: FileKind::Trash.relative_path(&id), message: e.to_string() })
            }
        }
    }
    let unindexed: Vec<Id> = listed.keys().filter(|id| !indexed.contains(id)).copied().collect();
    report.marked_packs = unindexed.iter().filter(|id| marked.contains(id)).count();
    report.unindexed_packs = unindexed.into_iter().filter(|id| !marked.contains(id)).collect();
    report.unindexed_packs.sort();
    report.upload_leftovers = backend.list_upload_leftovers().await?;

    // Data: download the selected packs and open every indexed blob in them.
    let mut damaged: HashMap<Id, String> = HashMap::new();
    if let Some(subset) = read_data {
        let mut present: Vec<(Id, u64)> =
            index.packs().iter().filter(|p| listed.contains_key(&p.id)).map(|p| (*p.id, p.size)).collect();
        present.sort();
        let selected = subset.select(&present);
        let mut by_pack: HashMap<Id, Vec<(Id, BlobLocation)>> = HashMap::new();
        for (id, loc) in index.blobs() {
            by_pack.entry(*index.packs()[loc.pack as usize].id).or_default().push((*id, loc));
        }
        let results: Vec<(Id, Result<PackVerdict>)> = futures::stream::iter(selected)
            .map(|pack_id| {
                let blobs = by_pack.remove(&pack_id).unwrap_or_default();
                let index = index.clone();
                async move { (pack_id, verify_pack(repo, &index, pack_id, blobs).await) }
            })
            .buffer_unordered(4)
            .collect()
            .await;
        for (pack_id, result) in results {
            let name = FileKind::Pack.relative_path(&pack_id);
            match result {
                Ok(PackVerdict { bytes, bad_blobs }) => {
                    report.packs_read += 1;
                    report.bytes_read += bytes;
                    for (blob, why) in bad_blobs {
                        report
                            .problems
                            .push(Problem { object: format!("blob {blob} in pack {name}"), message: why.clone() });
                        damaged.insert(blob, why);
                    }
                }
                Err(e) => report.problems.push(Problem { object: name, message: e.to_string() }),
            }
        }
    }

    // Snapshots and trees, naming the files that use damaged or missing data.
    let ids: Vec<SnapshotId> =
        backend.list(FileKind::Snapshot).await?.into_iter().map(|(id, _)| SnapshotId(id)).collect();
    let mut snapshots = Vec::new();
    for id in ids {
        match repo.read_snapshot(&id).await {
            Ok(s) => snapshots.push((id, s)),
            Err(e) => {
                report.problems.push(Problem { object: format!("snapshot {}", id.short()), message: e.to_string() })
            }
        }
    }
    report.snapshots = snapshots.len();
    let loader = TreeLoader::new(repo, index.clone(), tokio::runtime::Handle::current());
    let (problems, trees) = tokio::task::spawn_blocking(move || {
        let mut walker = TreeCheck {
            loader: &loader,
            damaged: &damaged,
            clean: HashSet::new(),
            seen: HashSet::new(),
            expanded: HashMap::new(),
            problems: Vec::new(),
        };
        for (id, snapshot) in &snapshots {
            let name = format!("snapshot {}", id.short());
            // Paths as `ls` and `restore` show them (the snapshot's view).
            match loader.root(snapshot) {
                Ok(root) => walker.snapshot(&root.subtree.unwrap_or(snapshot.tree), &name),
                Err(e) => walker.problems.push(Problem { object: name, message: format!("root tree: {e}") }),
            }
        }
        (walker.problems, walker.seen.len())
    })
    .await
    .map_err(|e| Error::InvalidArgument(format!("the check thread failed: {e}")))?;
    report.problems.extend(problems);
    report.trees = trees;
    Ok(report)
}

/// What reading one pack found: its size, and the blobs that failed (with why).
struct PackVerdict {
    bytes: u64,
    bad_blobs: Vec<(Id, String)>,
}

/// Downloads a pack, checks its name, and opens each indexed blob in it.
async fn verify_pack(
    repo: &Repository,
    index: &Index,
    pack_id: Id,
    blobs: Vec<(Id, BlobLocation)>,
) -> Result<PackVerdict> {
    let bytes = repo.backend().read(FileKind::Pack, &pack_id).await?;
    let mut bad = Vec::new();
    let hash_ok = Id::of_object(&bytes) == pack_id;
    let info = &index.packs()[blobs.first().map(|(_, l)| l.pack as usize).unwrap_or(0)];
    for (id, loc) in blobs {
        let range = loc.offset as usize..loc.offset as usize + loc.length as usize;
        let outcome = match bytes.get(range) {
            None => Err("lies beyond the end of the pack".to_owned()),
            Some(sealed) => repo.open_blob(info, &loc, &id, sealed).map(drop).map_err(|e| match e {
                Error::Corrupt { source, .. } => source.to_string(),
                other => other.to_string(),
            }),
        };
        if let Err(why) = outcome {
            bad.push((id, why));
        }
    }
    if !hash_ok && bad.is_empty() {
        // Damage outside every blob (header or padding): still damage.
        return Err(Error::corrupt(
            FileKind::Pack.relative_path(&pack_id),
            crate::format::envelope::FormatError::Mismatch("its content does not hash to its name".into()),
        ));
    }
    Ok(PackVerdict { bytes: bytes.len() as u64, bad_blobs: bad })
}

struct TreeCheck<'a> {
    loader: &'a TreeLoader,
    damaged: &'a HashMap<Id, String>,
    /// Trees checked and found clean (skipped when met again).
    clean: HashSet<Id>,
    /// Every tree visited.
    seen: HashSet<Id>,
    /// Entries under each tree walked, counting repeated subtrees each
    /// time (what `ls` or `restore` would visit).
    expanded: HashMap<Id, u64>,
    problems: Vec<Problem>,
}

/// One directory being checked: its tree, the next entry to look at, and
/// whether everything under it so far is clean.
struct Frame {
    id: Id,
    tree: Tree,
    next: usize,
    clean: bool,
    path: String,
    /// Entries under it so far, repeated subtrees counted each time.
    entries: u64,
}

impl TreeCheck<'_> {
    /// Checks the directory tree under `root` in `snapshot`, naming each
    /// file that uses damaged or missing data.
    ///
    /// The walk keeps its own stack instead of recursing, so a snapshot
    /// crafted to nest without end costs a problem, not the thread's stack:
    /// directories deeper than [`MAX_TREE_DEPTH`] are reported and not
    /// entered. A tree already found unclean in this snapshot is not walked
    /// again at its other paths (its problems are named once), so trees
    /// that reference one subtree over and over cannot make the walk
    /// exponential; clean trees are skipped everywhere. A snapshot that
    /// expands further than walks accept (see [`expands_too_far`]) is
    /// reported: `ls` and `restore` would refuse it.
    fn snapshot(&mut self, root: &Id, snapshot: &str) {
        let mut unclean_here: HashSet<Id> = HashSet::new();
        let mut stack: Vec<Frame> = Vec::new();
        if let Some(frame) = self.enter(root, String::new(), snapshot) {
            stack.push(frame);
        }
        loop {
            let depth = stack.len();
            let Some(top) = stack.last_mut() else { break };
            let Some(node) = top.tree.nodes().get(top.next) else {
                let done = stack.pop().expect("the loop holds a frame");
                if done.clean {
                    self.clean.insert(done.id);
                } else {
                    unclean_here.insert(done.id);
                }
                self.expanded.insert(done.id, done.entries);
                match stack.last_mut() {
                    Some(parent) => {
                        parent.clean &= done.clean;
                        parent.entries = parent.entries.saturating_add(done.entries);
                    }
                    None => self.check_expansion(&done.id, done.entries, snapshot),
                }
                continue;
            };
            top.next += 1;
            let child = format!("{}/{}", top.path, node.display_name());
            let sub = match (node.kind, node.subtree) {
                (NodeKind::Dir, Some(sub)) => *sub,
                (NodeKind::File, _) => {
                    if let Some(message) = self.extent_problem(node) {
                        self.problems.push(Problem { object: format!("{snapshot} file {child}"), message });
                        top.clean = false;
                    }
                    continue;
                }
                _ => continue,
            };
            if self.clean.contains(&sub) || unclean_here.contains(&sub) {
                top.clean &= self.clean.contains(&sub);
                top.entries = top.entries.saturating_add(self.expanded.get(&sub).copied().unwrap_or(0));
                continue;
            }
            if depth >= MAX_TREE_DEPTH {
                top.clean = false;
                self.problems.push(Problem {
                    object: format!("{snapshot} directory {child}"),
                    message: format!(
                        "tree {sub} nests deeper than {MAX_TREE_DEPTH} directories: a damaged or crafted snapshot \
                         (not checked further down)"
                    ),
                });
                continue;
            }
            match self.enter(&sub, child, snapshot) {
                Some(frame) => stack.push(frame),
                None => {
                    unclean_here.insert(sub);
                    if let Some(top) = stack.last_mut() {
                        top.clean = false;
                    }
                }
            }
        }
    }

    /// Loads tree `id` at `path` to be walked; `None` (with the problem
    /// noted) when it cannot be read.
    fn enter(&mut self, id: &Id, path: String, snapshot: &str) -> Option<Frame> {
        self.seen.insert(*id);
        match self.loader.load(id) {
            Ok(tree) => Some(Frame { id: *id, entries: tree.nodes().len() as u64, tree, next: 0, clean: true, path }),
            Err(e) => {
                let message = match self.damaged.get(id) {
                    Some(why) => format!("tree {id} is damaged: {why}"),
                    None => e.to_string(),
                };
                let shown = if path.is_empty() { "/" } else { &path };
                self.problems.push(Problem { object: format!("{snapshot} directory {shown}"), message });
                None
            }
        }
    }

    /// Reports snapshot `root` if its `entries` (repeated subtrees counted
    /// each time) expand further than walks accept: `ls` and `restore`
    /// would refuse it. Only a snapshot past the threshold is measured
    /// (which reads its distinct trees once more).
    fn check_expansion(&mut self, root: &Id, entries: u64, snapshot: &str) {
        // Not too far even from a single distinct entry: nothing to measure.
        if !expands_too_far(entries, 1) {
            return;
        }
        let mut dir = Node::new("/", NodeKind::Dir);
        dir.subtree = Some(TreeId(*root));
        if let Err(e) = self.loader.measure(&dir) {
            self.problems.push(Problem { object: snapshot.to_owned(), message: e.to_string() });
        }
    }

    /// What is wrong with a file's content, if anything: a damaged blob, a
    /// blob no index lists, a blob that is not data, or a slice past the
    /// blob's end.
    fn extent_problem(&self, node: &Node) -> Option<String> {
        for extent in &node.content {
            let Extent::Blob { id: blob, offset, length } = *extent else { continue };
            let entry = self.loader.index().get(&blob);
            let why = match (self.damaged.get(&*blob), entry) {
                (Some(why), _) => Some(format!("uses damaged blob {blob}: {why}")),
                (None, None) => Some(format!("uses blob {blob}, which no index lists")),
                (None, Some((_, loc))) if loc.blob_type != BlobType::Data => {
                    Some(format!("uses blob {blob} as data, but it is a tree blob"))
                }
                // A slice past the blob's end: a reader would fail or read short.
                (None, Some((_, loc))) if offset as u64 + length as u64 > loc.raw_length as u64 => Some(format!(
                    "uses bytes {offset}..{} of blob {blob}, which has only {}",
                    offset as u64 + length as u64,
                    loc.raw_length
                )),
                (None, Some(_)) => None,
            };
            if why.is_some() {
                return why;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(s: &str) -> Option<u64> {
        s.strip_suffix("MiB").and_then(|n| n.parse::<u64>().ok()).map(|n| n << 20)
    }

    #[test]
    fn subsets() {
        assert_eq!(Subset::parse("2/7", size).unwrap(), Subset::Part { n: 2, m: 7 });
        assert_eq!(Subset::parse("5%", size).unwrap(), Subset::Percent(5.0));
        assert_eq!(Subset::parse("3MiB", size).unwrap(), Subset::Bytes(3 << 20));
        for bad in ["0/7", "8/7", "1/0", "0%", "101%", "x", "0MiB"] {
            assert!(Subset::parse(bad, size).is_err(), "{bad}");
        }
        let packs: Vec<(Id, u64)> = (0..40u8).map(|i| (Id([i.wrapping_mul(37); 32]), 10)).collect();
        let parts: Vec<usize> = (1..=4).map(|n| Subset::Part { n, m: 4 }.select(&packs).len()).collect();
        assert_eq!(parts.iter().sum::<usize>(), 40, "n/m groups partition the packs");
        assert_eq!(Subset::Part { n: 1, m: 1 }.select(&packs).len(), 40);
        assert_eq!(Subset::Percent(25.0).select(&packs).len(), 10);
        assert_eq!(Subset::Bytes(35).select(&packs).len(), 4);
    }
}
