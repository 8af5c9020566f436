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

use super::reader::{FileJob, FileResult};
use super::{FileOptions, Shared, load_tree};
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
    DirEnd,
    /// A complete entry.
    Done(Node, Status),
    /// A file whose content a reader is producing.
    File(Node, Status, Receiver<FileResult>),
    /// A further hard link to a file met earlier in this backup.
    Link(Node, Status),
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

    fn visit(&mut self, path: &Path, name: &[u8], meta: &Metadata, parent: Option<&Node>) -> Result<(), Stop> {
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
            return self.emit(Item::Done(node, status));
        }
        match fsmeta::read_xattrs(path) {
            Ok(x) => node.xattrs = x,
            Err(e) => self.warn(path, &format!("cannot read extended attributes: {e}")),
        }
        match node.kind {
            NodeKind::Dir => self.visit_dir(path, node, parent),
            NodeKind::File => {
                let key = (node.device, node.inode);
                if node.links > 1 && !self.hardlinks.insert(key) {
                    return self.emit(Item::Link(node, status));
                }
                let (tx, rx) = bounded(1);
                let size = node.size;
                self.emit(Item::File(node, status, rx))?;
                self.jobs.send(FileJob { path: path.to_owned(), size, result: tx }).map_err(|_| Stop)
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
        }
    }

    fn visit_dir(&mut self, path: &Path, mut node: Node, parent: Option<&Node>) -> Result<(), Stop> {
        let descend = !(self.options.one_file_system && node.device != self.root_device);
        let listing = match (descend, self.pending.remove(path)) {
            (false, _) => Listing::default(),
            // Listed ahead by the prefetcher (or now, if it has gone).
            (true, Some(ready)) => ready.recv().unwrap_or_else(|_| list_dir(path, self.options)),
            (true, None) => list_dir(path, self.options),
        };
        if listing.marked {
            return Ok(());
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
        // one is processed.
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
            .collect();
        for (dir, ready) in self.prefetch.request(subdirs) {
            self.pending.insert(dir, ready);
        }
        self.emit(Item::Dir(node))?;
        for (name, meta) in listing.entries {
            let child = path.join(&name);
            match meta {
                Ok(meta) => {
                    let parent_node = parent_tree.as_ref().and_then(|t| t.get(name.as_bytes()));
                    self.visit(&child, name.as_bytes(), &meta, parent_node)?;
                }
                Err(e) => self.warn(&child, &format!("cannot read metadata: {e}")),
            }
        }
        self.emit(Item::DirEnd)
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
