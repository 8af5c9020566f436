//! The walker stage: lists directories (two listers ahead of it), compares
//! each entry with the parent snapshot, and emits entries in depth-first
//! order to the assembler; changed and new files go to the readers.

use std::collections::{HashMap, HashSet};
use std::fs::Metadata;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crossbeam_channel::{Receiver, Sender, bounded};

use super::budget::Permit;
use super::reader::{FileJob, FileResult};
use super::{FileOptions, Shared, load_tree};
use crate::files::dircache::{self, DirCache, EarlyKey, Key, SubKey, Totals};
use crate::files::fsmeta::{self, Owners};
use crate::format::id::TreeId;
use crate::format::tree::{Extent, Node, NodeKind, Tree};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    New,
    Changed,
    Unchanged,
    /// Not a file.
    Other,
}

pub(super) enum Item {
    /// Opens a directory; its entries follow, then `DirEnd`.
    Dir(Node),
    /// Closes a directory, with what the directory cache needs to record
    /// it (none when it cannot be cached).
    DirEnd(Option<Draft>),
    /// A directory whose tree the directory cache supplied (`subtree` set),
    /// with its key and counts.
    Reused(Node, Key, Totals),
    /// A complete entry.
    Done(Node, Status),
    /// A file whose content a reader is producing.
    File(Node, Status, Receiver<FileResult>),
    /// A further hard link to a file met earlier in this backup.
    Link(Node, Status),
}

/// A walked directory's keys for the directory cache; the assembler adds
/// the tree id and the counts.
pub(super) struct Draft {
    pub(super) key: Key,
    pub(super) early: Key,
    pub(super) subs: Vec<Key>,
}

/// A directory found unchanged by the directory cache.
struct Probed {
    /// Its `lstat` after listing (what its node records).
    own: Metadata,
    key: Key,
    tree: TreeId,
    totals: Totals,
}

/// What a probe left for the walk (see [`Walker::probe`]).
enum Memo {
    /// Changed: walk it, with this listing.
    Dirty(Listing),
    /// Unchanged: take its tree.
    Clean(Probed),
}

/// The outcome of probing a directory.
enum Probe {
    Clean(Probed),
    /// Changed (or not cacheable): the listing back, for the walk.
    Dirty(Listing),
}

/// Threads listing directories ahead of the walker.
pub(super) const LISTERS: usize = 2;

/// Entries sent to the assembler in one message (per-message channel costs
/// dominated unchanged reruns of many small files).
const BATCH: usize = 256;

pub(super) struct Walker<'s, 'a> {
    shared: &'s Shared<'a>,
    options: &'s FileOptions,
    order: Sender<Vec<Item>>,
    batch: Vec<Item>,
    jobs: Sender<FileJob>,
    owners: Owners,
    /// (device, inode) of multiply linked files already emitted.
    hardlinks: HashSet<(u64, u64)>,
    root_device: u64,
    prefetch: &'s Prefetcher,
    /// Listings requested from the prefetcher, by directory.
    pending: HashMap<PathBuf, Receiver<Listing>>,
    /// The directory cache of the parent snapshot.
    cache: Option<&'s DirCache>,
    /// Subdirectories a failed probe already looked at, by path.
    memo: HashMap<PathBuf, Memo>,
}

/// What a visited entry means for its directory's directory-cache entry.
enum Seen {
    /// Not a directory.
    Entry,
    /// A directory, with what it adds to its parent's key.
    Dir(SubKey),
    /// Something the cache cannot vouch for (an unreadable directory, or
    /// extended attributes that could not be read).
    Uncacheable,
}

/// The walker stops when the assembler has gone (it failed).
struct Stop;

impl<'s, 'a> Walker<'s, 'a> {
    pub(super) fn new(
        shared: &'s Shared<'a>,
        options: &'s FileOptions,
        order: Sender<Vec<Item>>,
        jobs: Sender<FileJob>,
        prefetch: &'s Prefetcher,
        cache: Option<&'s DirCache>,
    ) -> Self {
        Walker {
            shared,
            options,
            order,
            batch: Vec::with_capacity(BATCH),
            jobs,
            owners: Owners::default(),
            hardlinks: HashSet::new(),
            root_device: 0,
            prefetch,
            pending: HashMap::new(),
            cache,
            memo: HashMap::new(),
        }
    }

    pub(super) fn run(mut self, sources: &[PathBuf], names: &[Vec<u8>], parent_root: Option<&Tree>) {
        for (path, name) in sources.iter().zip(names) {
            let meta = match std::fs::symlink_metadata(path) {
                Ok(m) => m,
                Err(e) => {
                    self.warn(path, &format!("cannot read: {e}"));
                    continue;
                }
            };
            self.root_device = meta.dev();
            let parent = parent_root.and_then(|t| t.get(name));
            if self.visit(path, name, &meta, parent).is_err() {
                return;
            }
        }
        let _ = self.flush();
    }

    fn flush(&mut self) -> Result<(), Stop> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        self.order.send(batch).map_err(|_| Stop)
    }

    /// Takes a share of the read-ahead for a file to bundle (see
    /// [`super::budget`]). When it must wait, it first sends the entries
    /// it holds, so that the assembler can reach the files it waits for.
    fn read_ahead(&mut self, bytes: u64) -> Result<Permit, Stop> {
        if let Some(permit) = self.shared.read_ahead.try_take(bytes) {
            return Ok(permit);
        }
        self.flush()?;
        self.shared.read_ahead.take(bytes, || self.shared.aborted()).ok_or(Stop)
    }

    fn warn(&self, path: &Path, message: &str) {
        self.shared.warn(path, message);
    }

    fn emit(&mut self, item: Item) -> Result<(), Stop> {
        if self.shared.aborted() {
            return Err(Stop);
        }
        self.batch.push(item);
        if self.batch.len() >= BATCH { self.flush() } else { Ok(()) }
    }

    /// Whether a parent's unchanged file can be reused as it is: every blob
    /// it points at is still indexed. (A put-only client has no index and
    /// trusts its local parent trees.)
    fn reusable(&self, parent: &Node) -> bool {
        self.shared.local_trees.is_some()
            || parent.content.iter().all(|e| match e {
                Extent::Blob { id, .. } => self.shared.store.writer().has_blob(id),
                Extent::Hole { .. } => true,
            })
    }

    /// Visits one entry, and says what it means for its directory's entry
    /// in the directory cache.
    fn visit(&mut self, path: &Path, name: &[u8], meta: &Metadata, parent: Option<&Node>) -> Result<Seen, Stop> {
        let mut node = fsmeta::node_from_metadata(name, meta, &self.owners);
        let status = match (node.kind, parent) {
            (NodeKind::File, None) => Status::New,
            (NodeKind::File, Some(p)) if p.kind != NodeKind::File => Status::New,
            (NodeKind::File, Some(p)) if fsmeta::unchanged(p, &node) && self.reusable(p) => Status::Unchanged,
            (NodeKind::File, Some(_)) => Status::Changed,
            _ => Status::Other,
        };
        if status == Status::Unchanged {
            // The parent's content and xattrs (xattr changes move ctime).
            let p = parent.expect("unchanged implies a parent");
            node.content = p.content.clone();
            node.xattrs = p.xattrs.clone();
            return self.emit(Item::Done(node, status)).map(|()| Seen::Entry);
        }
        let mut xattrs_read = true;
        match fsmeta::read_xattrs(path) {
            Ok(x) => node.xattrs = x,
            Err(e) => {
                self.warn(path, &format!("cannot read extended attributes: {e}"));
                xattrs_read = false;
            }
        }
        let done = match node.kind {
            NodeKind::Dir => {
                return self.visit_dir(path, node, parent).map(|key| match key {
                    Some(key) if xattrs_read => Seen::Dir(key),
                    _ => Seen::Uncacheable,
                });
            }
            NodeKind::File => {
                let key = (node.device, node.inode);
                if node.links > 1 && !self.hardlinks.insert(key) {
                    return self.emit(Item::Link(node, status)).map(|()| Seen::Entry);
                }
                let (tx, rx) = bounded(1);
                let size = node.size;
                // Hard links stay out of bundles: a later link takes the
                // first one's extents as soon as it is met.
                let bundle = self.shared.bundler.is_some() && size <= self.shared.bundle_file_max && node.links <= 1;
                let bundle = if bundle { Some(self.read_ahead(size)?) } else { None };
                self.emit(Item::File(node, status, rx))?;
                self.jobs.send(FileJob { path: path.to_owned(), size, bundle, result: tx }).map_err(|_| Stop)
            }
            NodeKind::Symlink => {
                match std::fs::read_link(path) {
                    Ok(target) => node.link_target = target.into_os_string().into_vec(),
                    Err(e) => {
                        self.warn(path, &format!("cannot read link: {e}"));
                        node.error = Some(format!("cannot read link: {e}"));
                    }
                }
                self.emit(Item::Done(node, status))
            }
            _ => self.emit(Item::Done(node, status)),
        };
        done.map(|()| if xattrs_read { Seen::Entry } else { Seen::Uncacheable })
    }

    /// Visits a directory: takes its tree from the directory cache when it
    /// is unchanged, else emits it entry by entry. Returns what it adds to
    /// its parent's key (`None`: not cacheable).
    fn visit_dir(&mut self, path: &Path, mut node: Node, parent: Option<&Node>) -> Result<Option<SubKey>, Stop> {
        let descend = !(self.options.one_file_system && node.device != self.root_device);
        let (mut listing, known_dirty) = match (descend, self.memo.remove(path)) {
            (false, _) => (Listing::default(), true),
            (true, Some(Memo::Clean(probed))) => return self.reuse(node, probed),
            (true, Some(Memo::Dirty(listing))) => (listing, true),
            (true, None) => (self.take_listing(path), false),
        };
        if listing.marked {
            return Ok(Some(SubKey::Marked));
        }
        if !known_dirty && self.cache.is_some() {
            match self.probe(path, listing) {
                Probe::Clean(probed) => return self.reuse(node, probed),
                Probe::Dirty(back) => listing = back,
            }
        }
        if let Some(own) = listing.own.as_ref().filter(|m| m.is_dir() && m.ino() == node.inode) {
            // What the directory looks like after listing it (its atime
            // moved), as the cache keys it.
            let xattrs = std::mem::take(&mut node.xattrs);
            node = fsmeta::node_from_metadata(&node.name, own, &self.owners);
            node.xattrs = xattrs;
        }
        if let Some(e) = &listing.error {
            self.warn(path, &format!("cannot list directory: {e}"));
            node.error = Some(format!("cannot list directory completely: {e}"));
        }
        let parent_tree = match (listing.parent_tree, parent.and_then(|p| p.subtree)) {
            (Some(loaded), _) => loaded,
            (None, Some(id)) => load_tree(self.shared.store, self.shared.local_trees, &id).ok(),
            (None, None) => None,
        };
        if parent.and_then(|p| p.subtree).is_some() && parent_tree.is_none() {
            // Not fatal: the directory is simply read in full.
            tracing::warn!("parent tree of {} unreadable, reading everything", path.display());
        }
        // List the subdirectories (and read their parent trees) while this
        // one is processed, unless a probe already did.
        let subdirs: Vec<(PathBuf, Option<TreeId>)> = listing
            .entries
            .iter()
            .filter(|(_, meta)| {
                meta.as_ref()
                    .is_ok_and(|m| m.is_dir() && !(self.options.one_file_system && m.dev() != self.root_device))
            })
            .map(|(name, _)| {
                let old = parent_tree.as_ref().and_then(|t| t.get(name.as_bytes()));
                (path.join(name), old.filter(|n| n.kind == NodeKind::Dir).and_then(|n| n.subtree))
            })
            .filter(|(dir, _)| !self.pending.contains_key(dir) && !self.memo.contains_key(dir))
            .collect();
        for (dir, ready) in self.prefetch.request(subdirs) {
            self.pending.insert(dir, ready);
        }
        // This directory's cache entry, if everything in it can be cached.
        let mut early = match (&listing.own, &listing.error, descend) {
            (Some(own), None, true) => Some(EarlyKey::new(own, &self.owners)),
            _ => None,
        };
        let mut subs: Vec<(Vec<u8>, SubKey)> = Vec::new();
        self.emit(Item::Dir(node))?;
        for (name, meta) in listing.entries {
            let child = path.join(&name);
            match meta {
                Ok(meta) => {
                    if let Some(early) = early.as_mut() {
                        early.entry(name.as_bytes(), &meta, &self.owners);
                    }
                    let parent_node = parent_tree.as_ref().and_then(|t| t.get(name.as_bytes()));
                    match self.visit(&child, name.as_bytes(), &meta, parent_node)? {
                        Seen::Entry => {}
                        Seen::Dir(key) => subs.push((name.into_vec(), key)),
                        Seen::Uncacheable => early = None,
                    }
                }
                Err(e) => {
                    self.warn(&child, &format!("cannot read metadata: {e}"));
                    early = None;
                }
            }
        }
        let draft = early.map(|early| {
            let early = early.finish();
            let key = dircache::full_key(&early, subs.iter().map(|(name, sub)| (name.as_slice(), *sub)));
            let subs = subs
                .iter()
                .filter_map(|(_, sub)| match sub {
                    SubKey::Dir(key) => Some(*key),
                    SubKey::Marked => None,
                })
                .collect();
            Draft { key, early, subs }
        });
        let key = draft.as_ref().map(|d| SubKey::Dir(d.key));
        self.emit(Item::DirEnd(draft))?;
        Ok(key)
    }

    /// Emits a directory whose tree the cache supplied.
    fn reuse(&mut self, mut node: Node, probed: Probed) -> Result<Option<SubKey>, Stop> {
        let xattrs = std::mem::take(&mut node.xattrs);
        node = fsmeta::node_from_metadata(&node.name, &probed.own, &self.owners);
        node.xattrs = xattrs;
        node.subtree = Some(probed.tree);
        self.emit(Item::Reused(node, probed.key, probed.totals))?;
        Ok(Some(SubKey::Dir(probed.key)))
    }

    /// A directory's listing: from the prefetcher if it was requested,
    /// else read now.
    fn take_listing(&mut self, path: &Path) -> Listing {
        match self.pending.remove(path) {
            // Listed ahead by the prefetcher (or now, if it has gone).
            Some(ready) => ready.recv().unwrap_or_else(|_| list_dir(path, self.options)),
            None => list_dir(path, self.options),
        }
    }

    /// Whether a directory is unchanged since the parent snapshot, by its
    /// listing and its subdirectories' listings alone (no trees are read).
    /// Stops at the first changed directory from the top; what it learned
    /// about the subdirectories it looked at stays in `memo` for the walk.
    fn probe(&mut self, path: &Path, listing: Listing) -> Probe {
        let Some(cache) = self.cache else { return Probe::Dirty(listing) };
        let (Some(own), None, false) = (&listing.own, &listing.error, listing.marked) else {
            return Probe::Dirty(listing);
        };
        let mut early = EarlyKey::new(own, &self.owners);
        let mut subdirs = Vec::new();
        for (name, meta) in &listing.entries {
            let Ok(meta) = meta else { return Probe::Dirty(listing) };
            early.entry(name.as_bytes(), meta, &self.owners);
            if meta.is_dir() {
                if self.options.one_file_system && meta.dev() != self.root_device {
                    return Probe::Dirty(listing);
                }
                subdirs.push(path.join(name));
            }
        }
        let early = early.finish();
        if !cache.has_early(&early) || self.shared.aborted() {
            return Probe::Dirty(listing);
        }
        let wanted: Vec<(PathBuf, Option<TreeId>)> =
            subdirs.iter().filter(|d| !self.pending.contains_key(*d)).map(|d| (d.clone(), None)).collect();
        for (dir, ready) in self.prefetch.request(wanted) {
            self.pending.insert(dir, ready);
        }
        let mut found: Vec<(PathBuf, SubKey, Option<Probed>)> = Vec::with_capacity(subdirs.len());
        for dir in subdirs {
            let sub_listing = self.take_listing(&dir);
            if sub_listing.marked {
                found.push((dir, SubKey::Marked, None));
                continue;
            }
            match self.probe(&dir, sub_listing) {
                Probe::Clean(probed) => found.push((dir, SubKey::Dir(probed.key), Some(probed))),
                Probe::Dirty(sub_listing) => {
                    self.memo.insert(dir, Memo::Dirty(sub_listing));
                    self.remember(found);
                    return Probe::Dirty(listing);
                }
            }
        }
        let key = dircache::full_key(
            &early,
            found.iter().map(|(dir, sub, _)| (dir.file_name().map_or(&b""[..], |n| n.as_bytes()), *sub)),
        );
        match cache.get(&key) {
            Some(entry) if self.shared.store.writer().has_blob(&entry.tree) => {
                Probe::Clean(Probed { own: own.clone(), key, tree: entry.tree, totals: entry.totals })
            }
            _ => {
                self.remember(found);
                Probe::Dirty(listing)
            }
        }
    }

    /// Keeps unchanged subdirectories a failed probe found, for the walk.
    fn remember(&mut self, found: Vec<(PathBuf, SubKey, Option<Probed>)>) {
        for (dir, _, probed) in found {
            if let Some(probed) = probed {
                self.memo.insert(dir, Memo::Clean(probed));
            }
        }
    }
}

/// One directory's entries, sorted by name, excluded ones removed, each with
/// its `lstat` metadata.
#[derive(Default)]
struct Listing {
    /// It holds an `--exclude-if-present` marker: skip it.
    marked: bool,
    entries: Vec<(std::ffi::OsString, io::Result<Metadata>)>,
    /// The listing failed or stopped early.
    error: Option<io::Error>,
    /// The directory's tree in the parent snapshot, when the prefetcher read
    /// it (`Some(None)`: it could not be read).
    parent_tree: Option<Option<Tree>>,
    /// The directory's own `lstat`, taken after listing it.
    own: Option<Metadata>,
}

fn list_dir(path: &Path, options: &FileOptions) -> Listing {
    let mut listing = Listing::default();
    if options.exclude_if_present.iter().any(|marker| path.join(marker).symlink_metadata().is_ok()) {
        listing.marked = true;
        return listing;
    }
    let dir = match std::fs::read_dir(path) {
        Ok(d) => d,
        Err(e) => {
            listing.error = Some(e);
            return listing;
        }
    };
    let mut entries = Vec::new();
    for entry in dir {
        match entry {
            Ok(e) => {
                let name = e.file_name();
                let excluded = {
                    let full = path.join(&name);
                    options.excludes.matches(full.as_os_str().as_bytes())
                };
                if !excluded {
                    entries.push((name, e));
                }
            }
            Err(e) => {
                listing.error = Some(e);
                break;
            }
        }
    }
    entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    listing.entries = entries.into_iter().map(|(name, e)| (name, e.metadata())).collect();
    listing.own = std::fs::symlink_metadata(path).ok();
    listing
}

/// Lists directories ahead of the walker on other threads, so the
/// `getdents` and `lstat` calls of a large tree (most of an unchanged
/// rerun) run in parallel with the walker's own work. Requests go to the
/// front of the queue: the walker needs the subdirectories of the directory
/// it just entered first (depth-first order).
#[derive(Default)]
pub(super) struct Prefetcher {
    queue: Mutex<PrefetchQueue>,
    ready: std::sync::Condvar,
}

/// Directories to list (each with its tree in the parent snapshot, and where
/// to send the listing), and whether the walker has finished.
type PrefetchQueue = (std::collections::VecDeque<(PathBuf, Option<TreeId>, Sender<Listing>)>, bool);

impl Prefetcher {
    /// Queues `dirs` (each with its tree in the parent snapshot, if any).
    fn request(&self, dirs: Vec<(PathBuf, Option<TreeId>)>) -> Vec<(PathBuf, Receiver<Listing>)> {
        let mut out = Vec::with_capacity(dirs.len());
        let mut queue = self.queue.lock().expect("prefetch queue poisoned");
        for (dir, parent) in dirs.into_iter().rev() {
            let (tx, rx) = bounded(1);
            queue.0.push_front((dir.clone(), parent, tx));
            out.push((dir, rx));
        }
        drop(queue);
        self.ready.notify_all();
        out
    }

    /// Stops the workers; requests not yet started are dropped.
    pub(super) fn close(&self) {
        let mut queue = self.queue.lock().expect("prefetch queue poisoned");
        queue.0.clear();
        queue.1 = true;
        drop(queue);
        self.ready.notify_all();
    }

    pub(super) fn work(&self, options: &FileOptions, shared: &Shared<'_>) {
        loop {
            let next = {
                let mut queue = self.queue.lock().expect("prefetch queue poisoned");
                loop {
                    if let Some(job) = queue.0.pop_front() {
                        break Some(job);
                    }
                    if queue.1 {
                        break None;
                    }
                    queue = self.ready.wait(queue).expect("prefetch queue poisoned");
                }
            };
            let Some((dir, parent, reply)) = next else { return };
            let mut listing = list_dir(&dir, options);
            if let Some(id) = parent {
                listing.parent_tree = Some(load_tree(shared.store, shared.local_trees, &id).ok());
            }
            // The walker may have stopped and dropped the receiver.
            let _ = reply.send(listing);
        }
    }
}
