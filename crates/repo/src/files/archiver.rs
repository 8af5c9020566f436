//! The archiver: backs up directory trees (or one stream) into a [`Writer`].
//!
//! A backup is a pipeline of threads connected by bounded channels, so every
//! stage applies backpressure to the one before it and memory does not grow
//! with the size of the input:
//!
//! ```text
//! walker ──entries, in order──────────────────────────────► assembler ─► trees
//!    └──file jobs──► readers (open, read, chunk, hash) ──┐      ▲
//!                        │  └─file results────────────────┼──────┘
//!                        └──new chunks──► sealers (compress, encrypt) ─► Writer ─► packs
//! ```
//!
//! * Two **listers** read directories (`getdents`, `lstat`, sorted by name)
//!   and the matching parent-snapshot trees ahead of the walker.
//! * The **walker** compares each entry with the parent snapshot and emits
//!   entries in depth-first order. A file
//!   whose size, mtime, ctime, inode and mode match the parent's is emitted
//!   complete, with the parent's content: it is not opened at all.
//! * **Readers** (several, because small files are bound by system-call
//!   latency, not CPU) read changed and new files, cut them into chunks and
//!   hash each chunk. A chunk the repository already has is only referenced.
//! * **Sealers** (one per core) compress and encrypt new chunks and hand them
//!   to the [`Writer`], which packs and uploads them. A large file thus keeps
//!   every core busy, not one.
//! * The **assembler** (the calling thread) receives entries in walk order,
//!   waits for each file's chunk list, and writes each directory's tree when
//!   its last entry is in.

use std::collections::{HashMap, HashSet};
use std::fs::{File, Metadata};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, bounded};
use tokio::runtime::Handle;

use crate::error::{Error, Result};
use crate::files::filter::PathFilter;
use crate::files::fsmeta::{self, Owners};
use crate::format::blob::{BlobType, SealedBlob};
use crate::format::id::Id;
use crate::format::snapshot::SnapshotSummary;
use crate::format::tree::{Extent, Node, NodeKind, Time, Tree};
use crate::writing::writer::Writer;

/// What to back up and how.
#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    /// Paths matching these are skipped (directories with everything below).
    pub excludes: PathFilter,
    /// A directory that contains an entry with one of these names is skipped.
    pub exclude_if_present: Vec<String>,
    /// Do not descend into directories on other filesystems (they are
    /// recorded, empty).
    pub one_file_system: bool,
    /// Reader threads; 0 chooses.
    pub readers: usize,
    /// Keep trees on the client and read parent trees from there (for
    /// put-only keys, which cannot read the repository).
    pub local_trees: Option<crate::files::localtrees::LocalTrees>,
}

/// Live counters of a running backup, for progress displays.
#[derive(Debug, Default)]
pub struct BackupProgress {
    /// Files finished (read or reused).
    pub files: AtomicU64,
    /// Directories finished.
    pub dirs: AtomicU64,
    /// Bytes of finished files, read or reused.
    pub bytes: AtomicU64,
    /// Bytes read from files so far.
    pub bytes_read: AtomicU64,
    /// Entries that could not be read.
    pub errors: AtomicU64,
}

/// Receives warnings as they happen.
pub trait BackupEvents: Send + Sync {
    /// Something at `path` could not be backed up completely; the backup goes on.
    fn warning(&self, path: &Path, message: &str);
}

/// What a backup produced.
#[derive(Debug, Clone, Default)]
pub struct BackupOutcome {
    /// The root tree, for the snapshot.
    pub tree: Id,
    /// The counts for the snapshot; the caller adds `bytes_added` and
    /// `duration_secs`, which depend on when it commits.
    pub summary: SnapshotSummary,
}

/// The name of each source in the root tree: its base name, made unique
/// with `-1`, `-2`, ... when two sources share one; `/` is called `root`.
pub fn root_names(sources: &[PathBuf]) -> Vec<Vec<u8>> {
    let mut used = HashSet::new();
    sources
        .iter()
        .map(|p| {
            let base = p.file_name().map(|n| n.as_bytes().to_vec()).unwrap_or_else(|| b"root".to_vec());
            let mut name = base.clone();
            let mut n = 1;
            while !used.insert(name.clone()) {
                name = [base.as_slice(), format!("-{n}").as_bytes()].concat();
                n += 1;
            }
            name
        })
        .collect()
}

/// Makes source paths absolute (without resolving symlinks) and checks that
/// each exists, before anything is written.
pub fn resolve_sources(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    if paths.is_empty() {
        return Err(Error::InvalidArgument("nothing to back up: give at least one path".into()));
    }
    paths
        .iter()
        .map(|p| {
            let abs = std::path::absolute(p)
                .map_err(|e| Error::Io { context: format!("cannot resolve {}", p.display()), source: e })?;
            match std::fs::symlink_metadata(&abs) {
                Ok(_) => Ok(normalize(&abs)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::InvalidArgument(format!(
                    "source path {} does not exist; nothing was backed up",
                    p.display()
                ))),
                Err(e) => Err(Error::Io { context: format!("cannot read {}", p.display()), source: e }),
            }
        })
        .collect()
}

/// Removes `.` and `..` components lexically (`/a/b/../c` → `/a/c`).
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Backs up `sources` (absolute, from [`resolve_sources`]) through `writer`
/// and returns the root tree. `parent_tree` is the root tree of the parent
/// snapshot. Blocking: run it on a blocking thread; `handle` runs the
/// writer's uploads.
pub fn backup_paths(
    writer: &Writer,
    handle: &Handle,
    sources: &[PathBuf],
    parent_tree: Option<Id>,
    options: &BackupOptions,
    progress: &BackupProgress,
    events: &dyn BackupEvents,
) -> Result<BackupOutcome> {
    let names = root_names(sources);
    let parent_root = match parent_tree {
        Some(id) => Some(load_tree(writer, handle, options.local_trees.as_ref(), &id)?),
        None => None,
    };
    let mut shared = Shared::new(writer, handle, progress, events);
    shared.local_trees = options.local_trees.clone();
    let readers = if options.readers == 0 { 4 } else { options.readers };
    let (order_tx, order_rx) = bounded::<Vec<Item>>(64);
    let (job_tx, job_rx) = bounded::<FileJob>(64);

    let prefetcher = Prefetcher::default();
    let prefetch = &prefetcher;
    let result = std::thread::scope(|scope| {
        let sink = &shared;
        let sealer_handles = sink.start_sealers(scope);
        for _ in 0..readers {
            let job_rx = job_rx.clone();
            scope.spawn(move || {
                for job in job_rx {
                    if sink.aborted() {
                        continue; // dropping the job tells the assembler
                    }
                    let result = sink.read_file(&job);
                    let _ = job.result.send(result);
                }
            });
        }
        drop(job_rx);
        let walker = Walker {
            shared: sink,
            options,
            order: order_tx,
            batch: Vec::with_capacity(BATCH),
            jobs: job_tx,
            owners: Owners::default(),
            hardlinks: HashSet::new(),
            root_device: 0,
            prefetch,
            pending: HashMap::new(),
        };
        for _ in 0..LISTERS {
            scope.spawn(move || prefetch.work(options, writer, handle));
        }
        let parent_root = parent_root.as_ref();
        scope.spawn(move || {
            walker.run(sources, &names, parent_root);
            prefetch.close();
        });
        let assembled = Assembler::new(sink).run(order_rx);
        if assembled.is_err() {
            sink.abort();
        }
        sink.stop_sealers(sealer_handles);
        assembled
    });
    match (result, shared.take_failure()) {
        (_, Some(e)) => Err(e),
        (Err(e), None) => Err(e),
        (Ok(mut outcome), None) => {
            outcome.summary.bytes_read = progress.bytes_read.load(Ordering::Relaxed);
            Ok(outcome)
        }
    }
}

/// Backs up one stream (stdin, a command's output) as the file `name` in
/// the snapshot's root. Reading starts at once. Blocking, like
/// [`backup_paths`].
pub fn backup_stream(
    writer: &Writer,
    handle: &Handle,
    reader: &mut (dyn Read + Send),
    name: &[u8],
    progress: &BackupProgress,
    events: &dyn BackupEvents,
) -> Result<BackupOutcome> {
    if !Node::valid_name(name) {
        return Err(Error::InvalidArgument(format!(
            "{:?} cannot be a file name (no '/', not empty, not '.' or '..')",
            String::from_utf8_lossy(name)
        )));
    }
    let shared = Shared::new(writer, handle, progress, events);
    let (content, size, read_error) = std::thread::scope(|scope| {
        let sealers = shared.start_sealers(scope);
        let mut content = Vec::new();
        let mut size = 0;
        let read = shared.chunk_stream(reader, &mut content, &mut size);
        shared.stop_sealers(sealers);
        (content, size, read.err())
    });
    if let Some(e) = shared.take_failure() {
        return Err(e);
    }
    if let Some(e) = read_error {
        return Err(Error::Io {
            context: format!("reading the stream for {}", String::from_utf8_lossy(name)),
            source: e,
        });
    }
    let owners = Owners::default();
    let mut node = Node::new(name.to_vec(), NodeKind::File);
    let now = jiff::Timestamp::now();
    let time = Time { secs: now.as_second(), nanos: now.subsec_nanosecond().max(0) as u32 };
    node.mode = 0o600;
    node.uid = nix::unistd::geteuid().as_raw();
    node.gid = nix::unistd::getegid().as_raw();
    node.user = owners.user(node.uid);
    node.group = owners.group(node.gid);
    node.size = size;
    node.mtime = time;
    node.atime = time;
    node.ctime = time;
    node.links = 1;
    node.content = content;
    let root = Tree::new(vec![node]).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let tree = shared.store_tree(&root)?;
    progress.files.fetch_add(1, Ordering::Relaxed);
    progress.bytes.fetch_add(size, Ordering::Relaxed);
    let summary = SnapshotSummary { files_new: 1, total_bytes: size, bytes_read: size, ..Default::default() };
    Ok(BackupOutcome { tree, summary })
}

/// Reads and decodes a tree blob.
pub(crate) fn load_tree(
    writer: &Writer,
    handle: &Handle,
    local: Option<&crate::files::localtrees::LocalTrees>,
    id: &Id,
) -> Result<Tree> {
    let repo = writer.repository();
    if let Some(local) = local {
        return local.load(repo.keys(), id);
    }
    let bytes = repo.read_blob_blocking(handle, &writer.index(), id)?;
    Tree::decode(&bytes).map_err(|e| Error::corrupt(format!("tree {id}"), e))
}

/// State every pipeline thread shares.
struct Shared<'a> {
    writer: &'a Writer,
    handle: &'a Handle,
    progress: &'a BackupProgress,
    events: &'a dyn BackupEvents,
    min_chunk: usize,
    chunks_tx: Mutex<Option<Sender<(Id, Bytes)>>>,
    chunks_rx: Receiver<(Id, Bytes)>,
    /// Chunks handed to a sealer by this session (so none is sealed twice).
    claimed: Mutex<HashSet<Id>>,
    aborted: AtomicBool,
    failure: Mutex<Option<Error>>,
    /// Tokens for streaming a large file (see `read_file`).
    stream_tokens: (Sender<()>, Receiver<()>),
    /// Where trees are also kept (put-only clients).
    local_trees: Option<crate::files::localtrees::LocalTrees>,
}

/// A token from a pool, returned when dropped.
struct StreamToken<'t>(&'t Sender<()>);

impl<'t> StreamToken<'t> {
    fn take(pool: &'t (Sender<()>, Receiver<()>)) -> StreamToken<'t> {
        // The pool is never closed while readers run.
        let _ = pool.1.recv();
        StreamToken(&pool.0)
    }
}

impl Drop for StreamToken<'_> {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

impl<'a> Shared<'a> {
    fn new(writer: &'a Writer, handle: &'a Handle, progress: &'a BackupProgress, events: &'a dyn BackupEvents) -> Self {
        let (tx, rx) = bounded(available_cores() * 2);
        let stream_tokens = bounded(available_cores());
        for _ in 0..available_cores() {
            let _ = stream_tokens.0.send(());
        }
        Shared {
            stream_tokens,
            local_trees: None,
            writer,
            handle,
            progress,
            events,
            min_chunk: writer.repository().chunker().params().min_size as usize,
            chunks_tx: Mutex::new(Some(tx)),
            chunks_rx: rx,
            claimed: Mutex::new(HashSet::new()),
            aborted: AtomicBool::new(false),
            failure: Mutex::new(None),
        }
    }

    fn aborted(&self) -> bool {
        self.aborted.load(Ordering::Relaxed)
    }

    fn abort(&self) {
        self.aborted.store(true, Ordering::Relaxed);
    }

    fn fail(&self, e: Error) {
        let mut failure = self.failure.lock().expect("failure slot poisoned");
        if failure.is_none() {
            *failure = Some(e);
        }
        self.abort();
    }

    fn take_failure(&self) -> Option<Error> {
        self.failure.lock().expect("failure slot poisoned").take()
    }

    fn start_sealers<'scope>(
        &'scope self,
        scope: &'scope std::thread::Scope<'scope, '_>,
    ) -> Vec<std::thread::ScopedJoinHandle<'scope, ()>> {
        (0..available_cores())
            .map(|_| {
                let rx = self.chunks_rx.clone();
                scope.spawn(move || {
                    // One buffer per sealer, reused for every blob.
                    let mut sealed =
                        SealedBlob { blob_type: BlobType::Data, id: Id::default(), raw_length: 0, bytes: Vec::new() };
                    for (id, data) in rx {
                        if self.aborted() {
                            continue; // keep draining so no sender blocks
                        }
                        let result = self
                            .writer
                            .seal_into(BlobType::Data, id, &data, &mut sealed)
                            .and_then(|()| self.handle.block_on(self.writer.add_sealed_ref(&sealed)));
                        if let Err(e) = result {
                            self.fail(e);
                        }
                    }
                })
            })
            .collect()
    }

    fn stop_sealers(&self, handles: Vec<std::thread::ScopedJoinHandle<'_, ()>>) {
        self.chunks_tx.lock().expect("chunk sender poisoned").take();
        for h in handles {
            if h.join().is_err() {
                self.fail(Error::WriteSessionFailed("a sealing thread panicked".into()));
            }
        }
    }

    /// Hashes a chunk, sends it to the sealers unless the repository or this
    /// session already has it, and returns its extent.
    fn submit(&self, data: Bytes) -> Extent {
        let id = self.writer.repository().content_id(&data);
        let length = data.len() as u32;
        if !self.writer.contains(&id) && self.claimed.lock().expect("claimed set poisoned").insert(id) {
            let tx = self.chunks_tx.lock().expect("chunk sender poisoned").clone();
            if let Some(tx) = tx {
                let _ = tx.send((id, data));
            }
        }
        Extent::Blob { id, offset: 0, length }
    }

    /// Chunks everything `reader` yields, appending extents and counting bytes.
    fn chunk_stream(&self, reader: &mut dyn Read, content: &mut Vec<Extent>, size: &mut u64) -> io::Result<()> {
        let mut chunks = self.writer.repository().chunker().stream(reader);
        while let Some(chunk) = chunks.next_chunk()? {
            if self.aborted() {
                return Err(io::Error::other("backup aborted"));
            }
            let len = chunk.data.len() as u64;
            *size += len;
            self.progress.bytes_read.fetch_add(len, Ordering::Relaxed);
            content.push(self.submit(chunk.data));
        }
        Ok(())
    }

    /// Chunks a file's content: small files in one read, holes of sparse
    /// files as [`Extent::Hole`].
    fn chunk_file(
        &self,
        file: &mut File,
        meta: &Metadata,
        content: &mut Vec<Extent>,
        size: &mut u64,
    ) -> io::Result<()> {
        if meta.size() <= self.min_chunk as u64 {
            // One chunk: skip the stream chunker's buffering.
            let mut buf = Vec::with_capacity(meta.size() as usize + 1);
            file.take(self.min_chunk as u64 + 1).read_to_end(&mut buf)?;
            if buf.len() <= self.min_chunk {
                *size += buf.len() as u64;
                self.progress.bytes_read.fetch_add(buf.len() as u64, Ordering::Relaxed);
                if !buf.is_empty() {
                    content.push(self.submit(Bytes::from(buf)));
                }
                return Ok(());
            }
            // It grew while we looked: chunk what we have and the rest.
            let mut rest = io::Cursor::new(buf).chain(file);
            return self.chunk_stream(&mut rest, content, size);
        }
        match fsmeta::data_ranges(file, meta) {
            None => self.chunk_stream(file, content, size),
            Some(ranges) => {
                let mut pos = 0;
                for range in ranges {
                    if range.start > pos {
                        content.push(Extent::Hole { length: range.start - pos });
                        *size += range.start - pos;
                    }
                    file.seek(SeekFrom::Start(range.start))?;
                    self.chunk_stream(&mut file.take(range.end - range.start), content, size)?;
                    pos = range.end;
                }
                if meta.size() > pos {
                    content.push(Extent::Hole { length: meta.size() - pos });
                    *size += meta.size() - pos;
                }
                Ok(())
            }
        }
    }

    fn read_file(&self, job: &FileJob) -> FileResult {
        let mut content = Vec::new();
        let mut size = 0;
        // Large files go through the stream chunker, whose buffer holds up to
        // two maximal chunks: only one reader per core streams at a time.
        let _token = (job.size > self.min_chunk as u64).then(|| StreamToken::take(&self.stream_tokens));
        let opened = open_for_backup(&job.path);
        let outcome = opened.and_then(|mut file| {
            let meta = file.metadata()?;
            self.chunk_file(&mut file, &meta, &mut content, &mut size)?;
            let after = file.metadata()?;
            Ok(after.mtime() != meta.mtime()
                || after.mtime_nsec() != meta.mtime_nsec()
                || after.ctime() != meta.ctime()
                || after.ctime_nsec() != meta.ctime_nsec()
                || after.size() != size
                || meta.size() != job.size)
        });
        let error = match outcome {
            Ok(changed) => {
                if changed {
                    self.events.warning(&job.path, "file changed while it was read; the snapshot has what was read");
                }
                None
            }
            Err(e) => {
                let message = if size > 0 { format!("read failed after {size} bytes: {e}") } else { e.to_string() };
                self.events.warning(&job.path, &message);
                self.progress.errors.fetch_add(1, Ordering::Relaxed);
                Some(message)
            }
        };
        FileResult { content, size, error }
    }

    fn store_tree(&self, tree: &Tree) -> Result<Id> {
        let bytes = tree.encode();
        let id = self.handle.block_on(self.writer.add_blob(BlobType::Tree, &bytes))?;
        if let Some(local) = &self.local_trees {
            local.save(&id, &bytes);
        }
        Ok(id)
    }
}

fn available_cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

/// Opens a file for reading without updating its access time where the
/// kernel allows that (`O_NOATIME` needs ownership or CAP_FOWNER).
fn open_for_backup(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let noatime = std::fs::OpenOptions::new().read(true).custom_flags(nix::libc::O_NOATIME).open(path);
    match noatime {
        Err(e) if e.raw_os_error() == Some(nix::libc::EPERM) => File::open(path),
        other => other,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    New,
    Changed,
    Unchanged,
    /// Not a file.
    Other,
}

enum Item {
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

struct FileJob {
    path: PathBuf,
    size: u64,
    result: Sender<FileResult>,
}

struct FileResult {
    content: Vec<Extent>,
    size: u64,
    error: Option<String>,
}

/// Threads listing directories ahead of the walker.
const LISTERS: usize = 2;

/// Entries sent to the assembler in one message (per-message channel costs
/// dominated unchanged reruns of many small files).
const BATCH: usize = 256;

struct Walker<'s, 'a> {
    shared: &'s Shared<'a>,
    options: &'s BackupOptions,
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

impl Walker<'_, '_> {
    fn run(mut self, sources: &[PathBuf], names: &[Vec<u8>], parent_root: Option<&Tree>) {
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
        self.shared.events.warning(path, message);
        self.shared.progress.errors.fetch_add(1, Ordering::Relaxed);
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
        self.options.local_trees.is_some()
            || parent.content.iter().all(|e| match e {
                Extent::Blob { id, .. } => self.shared.writer.has_blob(id),
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
            (None, Some(id)) => {
                load_tree(self.shared.writer, self.shared.handle, self.options.local_trees.as_ref(), &id).ok()
            }
            (None, None) => None,
        };
        if parent.and_then(|p| p.subtree).is_some() && parent_tree.is_none() {
            // Not fatal: the directory is simply read in full.
            tracing::warn!("parent tree of {} unreadable, reading everything", path.display());
        }
        // List the subdirectories (and read their parent trees) while this
        // one is processed.
        let subdirs: Vec<(PathBuf, Option<Id>)> = listing
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

fn list_dir(path: &Path, options: &BackupOptions) -> Listing {
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
struct Prefetcher {
    queue: Mutex<PrefetchQueue>,
    ready: std::sync::Condvar,
}

/// Directories to list (each with its tree in the parent snapshot, and where
/// to send the listing), and whether the walker has finished.
type PrefetchQueue = (std::collections::VecDeque<(PathBuf, Option<Id>, Sender<Listing>)>, bool);

impl Prefetcher {
    /// Queues `dirs` (each with its tree in the parent snapshot, if any).
    fn request(&self, dirs: Vec<(PathBuf, Option<Id>)>) -> Vec<(PathBuf, Receiver<Listing>)> {
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
    fn close(&self) {
        let mut queue = self.queue.lock().expect("prefetch queue poisoned");
        queue.0.clear();
        queue.1 = true;
        drop(queue);
        self.ready.notify_all();
    }

    fn work(&self, options: &BackupOptions, writer: &Writer, handle: &Handle) {
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
                listing.parent_tree = Some(load_tree(writer, handle, options.local_trees.as_ref(), &id).ok());
            }
            // The walker may have stopped and dropped the receiver.
            let _ = reply.send(listing);
        }
    }
}

struct Frame {
    node: Option<Node>,
    children: Vec<Node>,
}

struct Assembler<'s, 'a> {
    shared: &'s Shared<'a>,
    /// Content of multiply linked files by (device, inode).
    links: HashMap<(u64, u64), (Vec<Extent>, u64)>,
    outcome: BackupOutcome,
}

impl<'s, 'a> Assembler<'s, 'a> {
    fn new(shared: &'s Shared<'a>) -> Self {
        Assembler { shared, links: HashMap::new(), outcome: BackupOutcome::default() }
    }

    fn run(mut self, batches: Receiver<Vec<Item>>) -> Result<BackupOutcome> {
        let progress = self.shared.progress;
        let mut frames = vec![Frame { node: None, children: Vec::new() }];
        for item in batches.into_iter().flatten() {
            match item {
                Item::Dir(node) => frames.push(Frame { node: Some(node), children: Vec::new() }),
                Item::DirEnd => {
                    let frame = frames.pop().filter(|_| !frames.is_empty());
                    let Some(Frame { node: Some(mut node), children }) = frame else {
                        return Err(Error::InvalidArgument("internal error: unbalanced directory walk".into()));
                    };
                    if node.error.is_some() {
                        self.outcome.summary.errors += 1;
                    }
                    node.subtree = Some(self.store(children, &node.name)?);
                    self.outcome.summary.dirs += 1;
                    progress.dirs.fetch_add(1, Ordering::Relaxed);
                    frames.last_mut().expect("root frame stays").children.push(node);
                }
                Item::Done(node, status) => {
                    let node = self.file_done(node, status);
                    frames.last_mut().expect("root frame stays").children.push(node);
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
                    frames.last_mut().expect("root frame stays").children.push(node);
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
                    frames.last_mut().expect("root frame stays").children.push(node);
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
        let root = frames.pop().expect("one frame").children;
        self.outcome.tree = self.store(root, b"/")?;
        Ok(self.outcome)
    }

    fn file_done(&mut self, node: Node, status: Status) -> Node {
        if node.error.is_some() {
            self.outcome.summary.errors += 1;
        }
        if node.kind != NodeKind::File {
            return node;
        }
        if node.links > 1 && node.error.is_none() {
            self.links.entry((node.device, node.inode)).or_insert_with(|| (node.content.clone(), node.size));
        }
        match status {
            Status::New => self.outcome.summary.files_new += 1,
            Status::Changed => self.outcome.summary.files_changed += 1,
            Status::Unchanged => self.outcome.summary.files_unchanged += 1,
            Status::Other => {}
        }
        self.outcome.summary.total_bytes += node.size;
        let progress = self.shared.progress;
        progress.files.fetch_add(1, Ordering::Relaxed);
        progress.bytes.fetch_add(node.size, Ordering::Relaxed);
        node
    }

    fn store(&mut self, children: Vec<Node>, name: &[u8]) -> Result<Id> {
        let tree = Tree::new(children)
            .map_err(|e| Error::InvalidArgument(format!("directory {}: {e}", String::from_utf8_lossy(name))))?;
        let id = self.shared.store_tree(&tree);
        if let Err(e) = &id {
            self.shared.fail(Error::WriteSessionFailed(e.to_string()));
        }
        id
    }
}

/// Counts the files and bytes a backup of `sources` would visit (for a
/// progress estimate); runs alongside the backup and ignores errors.
pub fn estimate(sources: &[PathBuf], options: &BackupOptions, progress: &BackupProgress, stop: &AtomicBool) {
    fn walk(path: &Path, options: &BackupOptions, progress: &BackupProgress, stop: &AtomicBool, root_dev: u64) {
        let Ok(meta) = std::fs::symlink_metadata(path) else { return };
        if meta.is_file() {
            progress.files.fetch_add(1, Ordering::Relaxed);
            progress.bytes.fetch_add(meta.size(), Ordering::Relaxed);
            return;
        }
        if !meta.is_dir() || (options.one_file_system && meta.dev() != root_dev) {
            return;
        }
        if options.exclude_if_present.iter().any(|m| path.join(m).symlink_metadata().is_ok()) {
            return;
        }
        progress.dirs.fetch_add(1, Ordering::Relaxed);
        let Ok(dir) = std::fs::read_dir(path) else { return };
        for entry in dir.flatten() {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let child = entry.path();
            if !options.excludes.matches(child.as_os_str().as_bytes()) {
                walk(&child, options, progress, stop, root_dev);
            }
        }
    }
    for source in sources {
        let dev = std::fs::symlink_metadata(source).map(|m| m.dev()).unwrap_or(0);
        walk(source, options, progress, stop, dev);
    }
}
