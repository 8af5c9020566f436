//! A snapshot session: the one way to write a snapshot.
//!
//! ```text
//! repo.begin_snapshot(options) ─▶ SnapshotSession      (index loads in the background)
//!     .add_paths(dirs)      ─▶ archiver (walk, read, chunk) ─┐
//!     .add_stream(reader)   ─▶ chunk ─────────────────────────┼─▶ Store: dedup, seal on every core ─▶ Writer ─▶ packs
//!     .add_source(source)   ─▶ the source's files ──────────┘
//!     .commit()             ─▶ root tree ─▶ index files ─▶ snapshot
//! ```
//!
//! The session owns everything a correct snapshot needs: loading the index
//! (while a stream already flows), choosing the parent snapshot, keeping
//! trees locally for put-only keys, the snapshot's host, tags, paths and
//! time, progress, and the publish order. Sources contribute top-level
//! entries of the snapshot's root; they never write trees or snapshots
//! themselves, so a session cannot publish a snapshot the format rejects.

use crate::writing::profile::StageProfile;
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::files::archiver::{self, FileOptions};
use crate::files::dircache;
use crate::files::localtrees::{LocalParent, LocalTrees};
use crate::format::id::{SnapshotId, TreeId};
use crate::format::snapshot::{Snapshot, SnapshotSummary};
use crate::format::tree::{Node, NodeKind, Tree};
use crate::repository::Repository;
use crate::selection::{GroupBy, GroupKey, SnapshotFilter};
use crate::storage::backend::FileKind;
use crate::view::TreeLoader;
use crate::writing::journal::{self, Journal};
use crate::writing::progress::{NoEvents, Progress, SessionEvents};
use crate::writing::store::{Content, Store, StreamSink};
use crate::writing::tree_builder::{EntryMeta, TreeBuilder};
use crate::writing::writer::Writer;

/// Which snapshot a directory source is compared with. Files whose size,
/// times, inode and mode match the parent's are not read again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ParentChoice {
    /// The latest snapshot of the same host with the same paths (for a
    /// put-only key: the one this client wrote last for those paths).
    #[default]
    Latest,
    /// This snapshot (an id or a unique prefix of one).
    Snapshot(String),
    /// None: read every file.
    None,
}

/// How a snapshot is described and written.
#[derive(Debug, Clone, Default)]
pub struct SnapshotOptions {
    /// Host name to record; `None`: this machine's.
    pub hostname: Option<String>,
    /// Tags (sorted and deduplicated when the snapshot is written).
    pub tags: Vec<String>,
    /// The snapshot's time; `None`: when the session began.
    pub time: Option<jiff::Timestamp>,
    /// The parent snapshot of directory sources.
    pub parent: ParentChoice,
    /// Read, chunk, compress and count everything, write nothing:
    /// [`commit`](SnapshotSession::commit) returns no id.
    pub dry_run: bool,
}

/// A source an embedding program writes: anything that can lay out files
/// (a database, a bucket, an application's own state). It stores bytes and
/// adds files through the [`SourceContext`] it is given.
///
/// ```no_run
/// use cairn_repo::{EntryMeta, Source, SourceContext};
///
/// struct Greeting;
///
/// #[async_trait::async_trait]
/// impl Source for Greeting {
///     type Error = cairn_repo::Error;
///     async fn back_up(&mut self, into: &SourceContext) -> Result<(), Self::Error> {
///         let content = into.store_bytes(b"hello".to_vec()).await?;
///         into.add_file("greetings/hello.txt", content, &EntryMeta::file())?;
///         into.add_snapshot_path("/greetings");
///         Ok(())
///     }
/// }
/// ```
#[async_trait::async_trait]
pub trait Source: Send {
    /// The source's error; repository errors convert into it.
    type Error: From<Error> + std::fmt::Display + Send;

    /// Stores the source's content and adds its files. Nothing is
    /// published if this fails.
    async fn back_up(&mut self, into: &SourceContext) -> std::result::Result<(), Self::Error>;
}

/// What a [`Source`] writes into. Shared: tasks of one source may store
/// and add files concurrently.
pub struct SourceContext {
    store: Store,
    tree: Mutex<TreeBuilder>,
    paths: Mutex<Vec<String>>,
    tags: Mutex<Vec<String>>,
    metadata: Mutex<serde_json::Map<String, serde_json::Value>>,
    events: Arc<dyn SessionEvents>,
    progress: Arc<Progress>,
    /// New, changed and unchanged files, when the source tells.
    counts: Mutex<Option<(u64, u64, u64)>>,
}

impl SourceContext {
    /// Stores everything `reader` yields (blocking: call it from a thread
    /// of your own or `spawn_blocking`, not from async code).
    pub fn store_reader(&self, reader: &mut dyn Read) -> Result<Content> {
        self.store.store_reader(reader)
    }

    /// Stores everything `reader` yields cut into fixed blocks of
    /// `block_size` bytes (the last may be shorter) instead of
    /// content-defined chunks; all-zero blocks become holes. For files
    /// updated in place at aligned offsets, such as database relation
    /// files (8 KiB pages): a changed page then re-stores only its block.
    /// Blocking, like [`store_reader`](Self::store_reader).
    pub fn store_blocks(&self, reader: &mut dyn Read, block_size: usize) -> Result<Content> {
        self.store.store_blocks(reader, block_size)
    }

    /// Stores `reader` on a blocking thread of the runtime, cut into fixed
    /// blocks of `block_size` bytes ([`store_blocks`](Self::store_blocks))
    /// or, with `None`, content-defined chunks
    /// ([`store_reader`](Self::store_reader)). Several such calls run in
    /// parallel: a source reads many files at once with it.
    pub async fn store_in_background<R: Read + Send + 'static>(
        &self,
        reader: R,
        block_size: Option<usize>,
    ) -> Result<Content> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let mut reader = reader;
            match block_size {
                Some(size) => store.store_blocks(&mut reader, size),
                None => store.store_reader(&mut reader),
            }
        })
        .await
        .map_err(|e| Error::WriteSessionFailed(format!("a storing thread failed: {e}")))?
    }

    /// Starts storing a stream fed from async code, batch by batch.
    pub fn stream(&self) -> Result<StreamSink> {
        StreamSink::start(self.store.clone())
    }

    /// Stores bytes already in memory.
    pub async fn store_bytes(&self, data: Vec<u8>) -> Result<Content> {
        self.store_buffer(bytes::Bytes::from(data)).await
    }

    /// Stores bytes already in memory, on a blocking thread of the runtime:
    /// the chunks are slices of `data`, not copies, and the cuts are the
    /// same as a stream's of the same bytes. Many small contents (objects
    /// downloaded whole) store faster this way than through
    /// [`stream`](Self::stream), which starts a thread per stream.
    pub async fn store_buffer(&self, data: bytes::Bytes) -> Result<Content> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.store_buffer(data))
            .await
            .map_err(|e| Error::WriteSessionFailed(format!("a storing thread failed: {e}")))?
    }

    /// A reader of trees through the session's index, which is loaded
    /// before [`Source::back_up`] is called: a source reads its parent
    /// snapshot with it without loading the index again. (A put-only key
    /// reads no trees: its index is empty.)
    pub fn tree_loader(&self) -> TreeLoader {
        let writer = self.store.writer();
        TreeLoader::new(writer.repository(), writer.index(), self.store.handle().clone())
    }

    /// Tells the snapshot's summary how the source's files compare with
    /// its parent: `new` files, `changed` ones (read again) and `unchanged`
    /// ones (taken from the parent). Without this call every file counts
    /// as new.
    pub fn count_files(&self, new: u64, changed: u64, unchanged: u64) {
        *self.counts.lock().expect("counts poisoned") = Some((new, changed, unchanged));
    }

    /// Adds a file at `path` (relative to the snapshot's root, `/`
    /// separated; missing directories are created with [`EntryMeta::dir`]).
    pub fn add_file(&self, path: &str, content: Content, meta: &EntryMeta) -> Result<()> {
        self.tree.lock().expect("tree builder poisoned").add_file(path, content, meta)
    }

    /// Adds a directory at `path`, or sets the metadata of one that files
    /// created.
    pub fn add_dir(&self, path: &str, meta: &EntryMeta) -> Result<()> {
        self.tree.lock().expect("tree builder poisoned").add_dir(path, meta)
    }

    /// Records a path in the snapshot's list of what it holds (`/pg/app`).
    pub fn add_snapshot_path(&self, path: impl Into<String>) {
        self.paths.lock().expect("paths poisoned").push(path.into());
    }

    /// Adds a tag to the snapshot.
    pub fn add_tag(&self, tag: impl Into<String>) {
        self.tags.lock().expect("tags poisoned").push(tag.into());
    }

    /// Sets a top-level field of the snapshot (e.g. `postgresql`), kept by
    /// every version of cairn that rewrites it.
    pub fn set_metadata(&self, key: &str, value: serde_json::Value) {
        self.metadata.lock().expect("metadata poisoned").insert(key.to_owned(), value);
    }

    /// The session's progress counters.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Where warnings and notes go.
    pub fn events(&self) -> &dyn SessionEvents {
        &*self.events
    }
}

/// A published (or, in a dry run, counted) snapshot.
#[derive(Debug, Clone)]
pub struct CommittedSnapshot {
    /// Its id; `None` for a dry run.
    pub id: Option<SnapshotId>,
    /// The snapshot as written.
    pub snapshot: Snapshot,
    /// What the session counted; `bytes_added` includes the snapshot's own
    /// index files and trees.
    pub summary: SnapshotSummary,
    /// Where the session's time went, stage by stage (not stored).
    pub profile: StageProfile,
}

/// One snapshot being written. Add sources, then [`commit`](Self::commit).
/// Dropping a session publishes nothing (packs it stored are removed by a
/// later prune, or reused by the next backup).
pub struct SnapshotSession {
    repo: Repository,
    options: SnapshotOptions,
    writer: Arc<Writer>,
    store: Store,
    progress: Arc<Progress>,
    events: Arc<dyn SessionEvents>,
    /// Loads the index and hands it to the writer; says how many packs of
    /// an interrupted session it indexed again.
    index_task: Option<tokio::task::JoinHandle<Result<usize>>>,
    started: std::time::Instant,
    time: jiff::Timestamp,
    hostname: String,
    root: Vec<Node>,
    paths: Vec<String>,
    tags: Vec<String>,
    extra: serde_json::Map<String, serde_json::Value>,
    parent: Option<SnapshotId>,
    summary: SnapshotSummary,
    /// A put-only client's local trees, whose parent is updated on commit.
    local_trees: Option<LocalTrees>,
    /// Directory caches to write for this snapshot once it is committed:
    /// file, settings fingerprint, directories.
    dir_caches: Vec<(PathBuf, dircache::Key, dircache::DirCache)>,
    /// Removed once the snapshot is committed (see `journal`).
    journal: Option<Arc<Journal>>,
}

impl Repository {
    /// Begins a snapshot. The index loads in the background; a stream
    /// source starts at once, the others wait for it.
    pub async fn begin_snapshot(&self, options: SnapshotOptions) -> Result<SnapshotSession> {
        let empty = Arc::new(crate::format::index::Index::default());
        // Packs are journaled until indexed, so that a session that dies
        // leaves them to the next (writing/journal.rs). A put-only client
        // could not read them back, and a dry run stores nothing.
        let journal = match self.cache() {
            Some(cache) if !options.dry_run && self.can_read() => match Journal::create(cache.dir()) {
                Ok(journal) => Some(Arc::new(journal)),
                Err(e) => {
                    tracing::warn!("an interrupted backup will not be resumed: {e}");
                    None
                }
            },
            _ => None,
        };
        let writer = match (&journal, options.dry_run) {
            (_, true) => Writer::dry_run(self, empty)?,
            (Some(journal), false) => Writer::new(self, empty)?.with_journal(journal.clone()),
            (None, false) => Writer::new(self, empty)?,
        };
        let writer = Arc::new(writer);
        // A put-only client cannot read the index: it stores what it has not
        // stored in this session (prune deduplicates the repository later).
        // The packs of a session that died are indexed first, so this one
        // deduplicates against them (resuming the interrupted backup).
        let index_task = self.can_read().then(|| {
            let (repo, writer) = (self.clone(), writer.clone());
            tokio::spawn(async move {
                let mut index = repo.load_index().await?;
                let resumed = journal::recover(&repo, &mut index).await.unwrap_or_else(|e| {
                    tracing::warn!("could not resume an interrupted backup: {e}");
                    0
                });
                writer.set_index(Arc::new(index));
                Ok(resumed)
            })
        });
        let progress = Arc::new(Progress::default());
        let store = Store::start(writer.clone(), tokio::runtime::Handle::current(), progress.clone())?;
        let time = options.time.unwrap_or_else(jiff::Timestamp::now);
        Ok(SnapshotSession {
            repo: self.clone(),
            hostname: options.hostname.clone().unwrap_or_else(crate::util::hostname),
            tags: options.tags.clone(),
            options,
            writer,
            store,
            progress,
            events: Arc::new(NoEvents),
            index_task,
            started: std::time::Instant::now(),
            journal,
            time,
            root: Vec::new(),
            paths: Vec::new(),
            extra: serde_json::Map::new(),
            parent: None,
            dir_caches: Vec::new(),
            summary: SnapshotSummary::default(),
            local_trees: None,
        })
    }
}

impl SnapshotSession {
    /// Sends warnings and notes to `events` from now on.
    pub fn set_events(&mut self, events: Arc<dyn SessionEvents>) {
        self.events = events;
    }

    /// The live counters, for a progress display.
    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    /// The repository written to.
    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    async fn index_loaded(&mut self) -> Result<()> {
        if let Some(task) = self.index_task.take() {
            let resumed =
                task.await.map_err(|e| Error::WriteSessionFailed(format!("loading the index failed: {e}")))??;
            if resumed > 0 {
                self.events.note(&format!(
                    "resuming an interrupted backup: the {resumed} pack(s) it stored are reused, not uploaded again"
                ));
            }
        }
        Ok(())
    }

    /// Backs up files and directories (each becomes an entry of the root
    /// named after its last component). Compares with the parent snapshot
    /// chosen by [`SnapshotOptions::parent`]. Unreadable entries are
    /// recorded with their error, reported to the events and counted in
    /// the summary's `errors`; the backup goes on.
    pub async fn add_paths(&mut self, paths: &[PathBuf], options: &FileOptions) -> Result<()> {
        let sources = archiver::resolve_sources(paths)?;
        self.index_loaded().await?;
        let source_paths: Vec<String> = sources.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        let local = if self.repo.can_read() { None } else { self.local_trees_for(&source_paths)? };
        let mut parent = self.find_parent(&source_paths, local.as_ref()).await?;
        if let Some((id, tree)) = parent
            && local.is_none()
            && !self.writer.has_blob(&tree)
        {
            // The parent was published after the index loaded (another
            // host's backup): its index files are there now, since a
            // snapshot is written after them. Load the index again.
            self.writer.set_index(Arc::new(self.repo.load_index().await?));
            if !self.writer.has_blob(&tree) {
                // Or it was forgotten and pruned since it was listed. The
                // parent only saves reading, so go on without one.
                self.events.note(&format!(
                    "parent snapshot {} was removed while this backup started; reading every file",
                    id.short()
                ));
                parent = None;
            }
        }
        if let Some((id, _)) = &parent {
            self.events.note(&format!("using parent snapshot {}", id.short()));
        }
        self.store.keep_trees_in(local.clone());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        if options.estimate_totals {
            let (sources, options, progress, stop) =
                (sources.clone(), options.clone(), self.progress.clone(), stop.clone());
            std::thread::spawn(move || archiver::estimate(&sources, &options, &progress, &stop));
        }
        let (store, events, options, local_for_walk) =
            (self.store.clone(), self.events.clone(), options.clone(), local.clone());
        let parent_tree = parent.as_ref().map(|(_, tree)| *tree);
        // The directory cache (not for put-only clients, which have no index
        // to check reused trees against): used only when it was written for
        // this very parent with the same options.
        let settings = dircache::settings_key(&options);
        let cache_file = match (self.repo.cache(), &local) {
            (Some(cache), None) => Some(dircache::cache_path(cache.dir(), &self.hostname, &source_paths)),
            _ => None,
        };
        let old_cache = match (&cache_file, &parent) {
            (Some(file), Some((id, _))) => {
                let (file, settings, id) = (file.clone(), settings, *id);
                tokio::task::spawn_blocking(move || dircache::load(&file, &settings, &id)).await.ok().flatten()
            }
            _ => None,
        };
        let outcome = tokio::task::spawn_blocking(move || {
            archiver::backup_paths(
                &store,
                &sources,
                parent_tree,
                old_cache.as_ref(),
                &options,
                local_for_walk.as_ref(),
                &*events,
            )
        })
        .await
        .map_err(|e| Error::WriteSessionFailed(format!("the backup thread failed: {e}")));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (nodes, summary, next_cache) = outcome??;
        if let Some(file) = cache_file {
            self.dir_caches.push((file, settings, next_cache));
        }
        self.root.extend(nodes);
        self.paths.extend(source_paths);
        add_counts(&mut self.summary, &summary);
        if self.parent.is_none() {
            self.parent = parent.map(|(id, _)| id);
        }
        if local.is_some() {
            self.local_trees = local;
        }
        Ok(())
    }

    /// Backs up a stream (stdin, a download) as the file `name` in the root.
    /// Reading starts at once, while the index still loads.
    pub async fn add_stream(&mut self, name: &str, reader: Box<dyn Read + Send>) -> Result<()> {
        let (store, name_owned) = (self.store.clone(), name.to_owned());
        let (node, summary) = tokio::task::spawn_blocking(move || {
            let mut reader = reader;
            archiver::backup_stream(&store, &mut reader, name_owned.as_bytes())
        })
        .await
        .map_err(|e| Error::WriteSessionFailed(format!("the backup thread failed: {e}")))??;
        self.root.push(node);
        self.paths.push(format!("/{name}"));
        add_counts(&mut self.summary, &summary);
        Ok(())
    }

    /// Backs up a command's standard output as the file `name`. Its
    /// standard error goes to this process's; a command that fails makes
    /// the session fail (no snapshot of a half output).
    pub async fn add_command_output(&mut self, name: &str, command: &[String]) -> Result<()> {
        let Some((program, args)) = command.split_first() else {
            return Err(Error::InvalidArgument("no command was given to back up the output of".into()));
        };
        let mut child = std::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .map_err(|e| Error::Io { context: format!("cannot run {program:?}"), source: e })?;
        let Some(stdout) = child.stdout.take() else {
            return Err(Error::WriteSessionFailed("the command's output was not captured".into()));
        };
        let result = self.add_stream(name, Box::new(stdout)).await;
        if result.is_err() {
            let _ = child.kill();
        }
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .map_err(|e| Error::WriteSessionFailed(format!("waiting for the command failed: {e}")))?
            .map_err(|e| Error::Io { context: format!("cannot wait for {program:?}"), source: e })?;
        result?;
        if !status.success() {
            self.store.fail(Error::CommandFailed { command: program.clone(), status: status.to_string() });
            return Err(Error::CommandFailed { command: program.clone(), status: status.to_string() });
        }
        Ok(())
    }

    /// Backs up a source of the caller's (see [`Source`]). If it fails, the
    /// session fails too: [`commit`](Self::commit) refuses.
    pub async fn add_source<S: Source>(&mut self, source: &mut S) -> std::result::Result<(), S::Error> {
        self.index_loaded().await?;
        let context = SourceContext {
            store: self.store.clone(),
            tree: Mutex::new(TreeBuilder::new(self.time)),
            paths: Mutex::new(Vec::new()),
            tags: Mutex::new(Vec::new()),
            metadata: Mutex::new(serde_json::Map::new()),
            events: self.events.clone(),
            progress: self.progress.clone(),
            counts: Mutex::new(None),
        };
        let read_before = self.progress.bytes_read.load(std::sync::atomic::Ordering::Relaxed);
        if let Err(e) = source.back_up(&context).await {
            // What the source stored may be half a stream: the session
            // publishes nothing after this.
            self.store.fail(Error::WriteSessionFailed(format!("a source failed: {e}")));
            return Err(e);
        }
        let bytes_read =
            self.progress.bytes_read.load(std::sync::atomic::Ordering::Relaxed).saturating_sub(read_before);
        let SourceContext { store, tree, paths, tags, metadata, counts: file_counts, .. } = context;
        let tree = tree.into_inner().expect("tree builder poisoned");
        let counts = tree.counts();
        let (files_new, files_changed, files_unchanged) =
            file_counts.into_inner().expect("counts poisoned").unwrap_or((counts.files, 0, 0));
        if tree.is_empty() {
            return Err(Error::InvalidArgument("the source added no files or directories".into()).into());
        }
        let nodes = tokio::task::spawn_blocking(move || tree.finish(&store))
            .await
            .map_err(|e| Error::WriteSessionFailed(format!("storing the trees failed: {e}")))??;
        self.root.extend(nodes);
        self.paths.extend(paths.into_inner().expect("paths poisoned"));
        self.tags.extend(tags.into_inner().expect("tags poisoned"));
        self.extra.extend(metadata.into_inner().expect("metadata poisoned"));
        let summary = SnapshotSummary {
            files_new,
            files_changed,
            files_unchanged,
            dirs: counts.dirs,
            total_bytes: counts.bytes,
            bytes_read,
            ..Default::default()
        };
        add_counts(&mut self.summary, &summary);
        Ok(())
    }

    /// Publishes the snapshot: waits for every blob to be sealed, writes
    /// the root tree, uploads the last packs, writes the index files, then
    /// the snapshot. A dry run stops before anything is published.
    pub async fn commit(mut self) -> Result<CommittedSnapshot> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.finish())
            .await
            .map_err(|e| Error::WriteSessionFailed(format!("the sealing threads failed: {e}")))??;
        self.index_loaded().await?;
        if self.root.is_empty() {
            return Err(Error::InvalidArgument("nothing was added to the snapshot".into()));
        }
        let root = std::mem::take(&mut self.root);
        for node in &root {
            // Every directory must be a tree this session wrote or the index
            // lists (a source can only add what it stored).
            if let (NodeKind::Dir, Some(id)) = (node.kind, &node.subtree)
                && !self.writer.has_blob(id)
            {
                return Err(Error::InvalidArgument(format!(
                    "the root entry {:?} points at tree {id}, which the repository does not have",
                    node.display_name()
                )));
            }
        }
        let root = Tree::new(root).map_err(|e| Error::InvalidArgument(format!("the snapshot's sources clash: {e}")))?;
        let tree = self.store.store_tree_async(&root).await?;

        let mut snapshot = Snapshot::new(tree, std::mem::take(&mut self.paths));
        snapshot.time = self.time;
        snapshot.hostname = self.hostname.clone();
        let mut tags = std::mem::take(&mut self.tags);
        tags.retain(|t| !t.is_empty());
        tags.sort();
        tags.dedup();
        snapshot.tags = tags;
        snapshot.parent = self.parent;
        snapshot.extra = std::mem::take(&mut self.extra);
        let mut summary = self.summary.clone();
        summary.bytes_added = self.writer.stats().stored_bytes_added;
        summary.duration_secs = self.started.elapsed().as_secs_f64();
        let id = if self.options.dry_run {
            self.writer.flush().await?;
            None
        } else {
            snapshot.summary = Some(summary.clone());
            let id = self.writer.commit(&snapshot).await?;
            if let Some(journal) = &self.journal {
                journal.remove();
            }
            if let Some(local) = &self.local_trees {
                local.set_parent(self.repo.keys(), &LocalParent { snapshot: id, tree })?;
            }
            let caches = std::mem::take(&mut self.dir_caches);
            let _ = tokio::task::spawn_blocking(move || {
                for (file, settings, cache) in caches {
                    dircache::save(&file, &cache, &settings, &id);
                }
            })
            .await;
            Some(id)
        };
        summary.bytes_added = self.writer.stats().stored_bytes_added;
        Ok(CommittedSnapshot { id, snapshot, summary, profile: self.writer.profile() })
    }

    /// A put-only client's local state for this host and set of paths
    /// (none without a cache directory: then every backup reads everything).
    fn local_trees_for(&self, paths: &[String]) -> Result<Option<LocalTrees>> {
        let Some(cache) = self.repo.cache() else { return Ok(None) };
        let mut paths = paths.to_vec();
        paths.sort();
        let key = blake3::hash(format!("{}\0{}", self.hostname, paths.join("\0")).as_bytes());
        let dir = cache.dir().join("put-only").join(self.repo.key_id().to_hex()).join(&key.to_hex()[..16]);
        Ok(Some(LocalTrees::open(&dir)?))
    }

    /// The parent snapshot and its root tree.
    async fn find_parent(&self, paths: &[String], local: Option<&LocalTrees>) -> Result<Option<(SnapshotId, TreeId)>> {
        if let Some(local) = local {
            // A put-only key cannot read snapshots: its parent is the one it
            // wrote last, while that still exists (prune keeps everything a
            // snapshot references).
            if self.options.parent == ParentChoice::None {
                return Ok(None);
            }
            let Some(parent) = local.parent() else { return Ok(None) };
            if self.repo.write_only() {
                // Cannot look: retention keeps each host's latest snapshot.
                return Ok(Some((parent.snapshot, parent.tree)));
            }
            let exists = self.repo.backend().exists(FileKind::Snapshot, &parent.snapshot).await?;
            return Ok(exists.then_some((parent.snapshot, parent.tree)));
        }
        match &self.options.parent {
            ParentChoice::None => Ok(None),
            ParentChoice::Snapshot(arg) => {
                let (id, parent) = self.repo.find_snapshot(arg, &SnapshotFilter::default()).await?;
                Ok(Some((id, parent.tree)))
            }
            ParentChoice::Latest => {
                // The latest snapshot of the same backup: same host, same paths.
                let mut this = Snapshot::new(TreeId::default(), paths.to_vec());
                this.hostname = self.hostname.clone();
                let wanted = GroupKey::of(&this, GroupBy::HOST_AND_PATHS);
                let snapshots = self.repo.list_snapshots().await?;
                let parent =
                    snapshots.into_iter().rev().find(|(_, s)| GroupKey::of(s, GroupBy::HOST_AND_PATHS) == wanted);
                Ok(parent.map(|(id, s)| (id, s.tree)))
            }
        }
    }
}

impl Drop for SnapshotSession {
    fn drop(&mut self) {
        if let Some(task) = self.index_task.take() {
            task.abort();
        }
    }
}

fn add_counts(total: &mut SnapshotSummary, more: &SnapshotSummary) {
    total.files_new += more.files_new;
    total.files_changed += more.files_changed;
    total.files_unchanged += more.files_unchanged;
    total.dirs += more.dirs;
    total.dirs_reused += more.dirs_reused;
    total.errors += more.errors;
    total.total_bytes += more.total_bytes;
    total.bytes_read += more.bytes_read;
}
