//! The assembler stage (the calling thread): receives entries in walk
//! order, waits for each file's chunk list, and stores each directory's
//! tree when its last entry is in.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use crossbeam_channel::Receiver;

use bytes::Bytes;

use super::Shared;
use super::bundle::Bundle;
use super::walker::{Item, Status};
use crate::error::{Error, Result};
use crate::files::dircache::{Entry, Key, Totals};
use crate::format::id::TreeId;
use crate::format::snapshot::SnapshotSummary;
use crate::format::tree::{Extent, Node, NodeKind, Tree};
use crate::writing::profile::Stage;

struct Frame {
    node: Option<Node>,
    children: Vec<Node>,
    /// Counts of the subtree so far.
    totals: Totals,
    /// Something in the subtree was recorded with an error.
    errors: bool,
    /// The small files' bytes not yet cut into blobs.
    bundle: Bundle,
}

impl Frame {
    fn new(node: Option<Node>) -> Frame {
        Frame { node, children: Vec::new(), totals: Totals::default(), errors: false, bundle: Bundle::default() }
    }

    fn push(&mut self, node: Node) {
        if node.kind == NodeKind::File {
            self.totals.add(&Totals { files: 1, dirs: 0, bytes: node.size });
        }
        self.errors |= node.error.is_some();
        self.children.push(node);
    }
}

/// What the assembler hands back: the root's entries, the counts, and the
/// directory cache's new entries and reused keys.
pub(super) struct Assembled {
    pub(super) root: Vec<Node>,
    pub(super) summary: SnapshotSummary,
    pub(super) walked: Vec<(Key, Entry)>,
    pub(super) reused: Vec<Key>,
}

pub(super) struct Assembler<'s, 'a> {
    shared: &'s Shared<'a>,
    /// Content of multiply linked files by (device, inode).
    links: HashMap<(u64, u64), (Vec<Extent>, u64)>,
    summary: SnapshotSummary,
    walked: Vec<(Key, Entry)>,
    reused: Vec<Key>,
}

impl<'s, 'a> Assembler<'s, 'a> {
    pub(super) fn new(shared: &'s Shared<'a>) -> Self {
        Assembler {
            shared,
            links: HashMap::new(),
            summary: SnapshotSummary::default(),
            walked: Vec::new(),
            reused: Vec::new(),
        }
    }

    /// The root's entries and the counts, once every entry is in.
    pub(super) fn run(mut self, batches: Receiver<Vec<Item>>) -> Result<Assembled> {
        let progress = self.shared.progress;
        let mut frames = vec![Frame::new(None)];
        for item in batches.into_iter().flatten() {
            match item {
                Item::Dir(node) => frames.push(Frame::new(Some(node))),
                Item::DirEnd(draft) => {
                    let mut frame = frames.pop().filter(|_| !frames.is_empty());
                    if let Some(frame) = &mut frame {
                        self.finish_bundle(frame);
                    }
                    let Some(Frame { node: Some(mut node), children, mut totals, errors, .. }) = frame else {
                        return Err(Error::InvalidArgument("internal error: unbalanced directory walk".into()));
                    };
                    if node.error.is_some() {
                        self.summary.errors += 1;
                    }
                    let tree = self.store(children, &node.name)?;
                    node.subtree = Some(tree);
                    totals.dirs += 1;
                    if let Some(draft) = draft.filter(|_| !errors && node.error.is_none()) {
                        let entry = Entry { early: draft.early, tree, totals, subs: draft.subs };
                        self.walked.push((draft.key, entry));
                    }
                    self.summary.dirs += 1;
                    progress.dirs.fetch_add(1, Ordering::Relaxed);
                    let up = frames.last_mut().expect("root frame stays");
                    up.totals.add(&totals);
                    up.errors |= errors;
                    up.push(node);
                }
                Item::Reused(node, key, totals) => {
                    // Counted as if walked: every file unchanged.
                    self.summary.dirs += totals.dirs;
                    self.summary.dirs_reused += totals.dirs;
                    self.summary.files_unchanged += totals.files;
                    self.summary.total_bytes += totals.bytes;
                    progress.dirs.fetch_add(totals.dirs, Ordering::Relaxed);
                    progress.files.fetch_add(totals.files, Ordering::Relaxed);
                    progress.bytes.fetch_add(totals.bytes, Ordering::Relaxed);
                    self.reused.push(key);
                    let up = frames.last_mut().expect("root frame stays");
                    up.totals.add(&totals);
                    up.push(node);
                }
                Item::Done(node, status) => {
                    let node = self.file_done(node, status);
                    frames.last_mut().expect("root frame stays").push(node);
                }
                Item::File(mut node, status, result) => {
                    let Ok(result) = result.recv() else {
                        // The reader dropped the job: the backup is aborting.
                        return Err(self
                            .shared
                            .take_failure()
                            .unwrap_or(Error::WriteSessionFailed("the backup was aborted".into())));
                    };
                    node.content = result.content;
                    node.size = result.size;
                    node.error = result.error;
                    let node = self.file_done(node, status);
                    let frame = frames.last_mut().expect("root frame stays");
                    frame.push(node);
                    if let Some(bundled) = result.bundled {
                        self.add_to_bundle(frame, bundled.data);
                    }
                }
                Item::Link(mut node, status) => {
                    match self.links.get(&(node.device, node.inode)) {
                        Some((content, size)) => {
                            node.content = content.clone();
                            node.size = *size;
                        }
                        None => node.error = Some("hard link target could not be read".into()),
                    }
                    let node = self.file_done(node, status);
                    frames.last_mut().expect("root frame stays").push(node);
                }
            }
            if self.shared.aborted() {
                break;
            }
        }
        if let Some(e) = self.shared.take_failure() {
            return Err(e);
        }
        if frames.len() != 1 {
            return Err(Error::WriteSessionFailed("the directory walk stopped early".into()));
        }
        let mut root = frames.pop().expect("one frame");
        self.finish_bundle(&mut root);
        let root = root.children;
        Ok(Assembled { root, summary: self.summary, walked: self.walked, reused: self.reused })
    }

    fn file_done(&mut self, node: Node, status: Status) -> Node {
        if node.error.is_some() {
            self.summary.errors += 1;
        }
        if node.kind != NodeKind::File {
            return node;
        }
        if node.links > 1 && node.error.is_none() {
            self.links.entry((node.device, node.inode)).or_insert_with(|| (node.content.clone(), node.size));
        }
        match status {
            Status::New => self.summary.files_new += 1,
            Status::Changed => self.summary.files_changed += 1,
            Status::Unchanged => self.summary.files_unchanged += 1,
            Status::Other => {}
        }
        self.summary.total_bytes += node.size;
        let progress = self.shared.progress;
        progress.files.fetch_add(1, Ordering::Relaxed);
        progress.bytes.fetch_add(node.size, Ordering::Relaxed);
        node
    }

    /// Appends the frame's newest entry's bytes to its bundle (see
    /// [`super::bundle`]).
    fn add_to_bundle(&self, frame: &mut Frame, data: Bytes) {
        let slot = frame.children.len() - 1;
        self.with_bundle(frame, |bundle, chunker, store, place| bundle.add(slot, &data, chunker, store, place));
    }

    /// Cuts the rest of the frame's bundle: its directory is complete.
    fn finish_bundle(&self, frame: &mut Frame) {
        self.with_bundle(frame, |bundle, chunker, store, place| bundle.finish(chunker, store, place));
    }

    /// Runs a bundle step that stores blobs and places extents in the
    /// frame's entries; times the cutting as the chunk stage.
    fn with_bundle(
        &self,
        frame: &mut Frame,
        step: impl FnOnce(
            &mut Bundle,
            &cairn_chunker::Chunker,
            &mut dyn FnMut(Bytes) -> crate::format::id::DataId,
            &mut dyn FnMut(usize, Extent),
        ),
    ) {
        let Some(chunker) = &self.shared.bundler else { return };
        let store = self.shared.store;
        let start = std::time::Instant::now();
        let (mut storing, mut cut) = (std::time::Duration::ZERO, 0u64);
        let Frame { bundle, children, .. } = frame;
        step(
            bundle,
            chunker,
            &mut |data| {
                let began = std::time::Instant::now();
                cut += data.len() as u64;
                let id = store.store_chunk(data);
                storing += began.elapsed();
                id
            },
            &mut |slot, extent| {
                if let Some(node) = children.get_mut(slot) {
                    node.content.push(extent);
                }
            },
        );
        let chunking = start.elapsed().saturating_sub(storing);
        store.writer().clock().add(Stage::Chunk, chunking, cut);
    }

    fn store(&mut self, children: Vec<Node>, name: &[u8]) -> Result<TreeId> {
        let tree = Tree::new(children)
            .map_err(|e| Error::InvalidArgument(format!("directory {}: {e}", String::from_utf8_lossy(name))))?;
        let id = self.shared.store_tree(&tree);
        if let Err(e) = &id {
            self.shared.fail(Error::WriteSessionFailed(e.to_string()));
        }
        id
    }
}
