//! The archiver: backs up directory trees (or one stream) into a snapshot
//! session's [`Store`].
//!
//! A backup is a pipeline of threads connected by bounded channels, so every
//! stage applies backpressure to the one before it and memory does not grow
//! with the size of the input:
//!
//! ```text
//! walker ──entries, in order──────────────────────────────► assembler ─► trees
//!    └──file jobs──► readers (open, read, chunk, hash) ──┐      ▲
//!                        │  └─file results────────────────┼──────┘
//!                        └──new chunks──► Store's sealers (compress, encrypt) ─► Writer ─► packs
//! ```
//!
//! * Two **listers** read directories (`getdents`, `lstat`, sorted by name)
//!   and the matching parent-snapshot trees ahead of the walker
//!   ([`walker`]).
//! * The **walker** compares each entry with the parent snapshot and emits
//!   entries in depth-first order. A file whose size, mtime, ctime, inode
//!   and mode match the parent's is emitted complete, with the parent's
//!   content: it is not opened at all.
//! * **Readers** ([`reader`]; several, because small files are bound by
//!   system-call latency, not CPU) read changed and new files, cut them into
//!   chunks and hash each chunk. A chunk the repository already has is only
//!   referenced.
//! * The session's **sealers** (one per core, [`Store`]) compress and
//!   encrypt new chunks and hand them to the writer, which packs and
//!   uploads them. A large file thus keeps every core busy, not one.
//! * The **assembler** ([`assembler`], the calling thread) receives entries
//!   in walk order, waits for each file's chunk list, and writes each
//!   directory's tree when its last entry is in.

mod assembler;
mod budget;
mod bundle;
mod estimate;
mod reader;
mod walker;

use std::collections::HashSet;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crossbeam_channel::bounded;

pub(crate) use estimate::estimate;

use crate::error::{Error, Result};
use crate::files::dircache::DirCache;
use crate::files::filter::PathFilter;
use crate::files::fsmeta::Owners;
use crate::files::localtrees::LocalTrees;
use crate::format::id::TreeId;
use crate::format::snapshot::SnapshotSummary;
use crate::format::tree::{Node, NodeKind, Time, Tree};
use crate::writing::progress::{Progress, SessionEvents};
use crate::writing::store::{Store, available_cores};

/// Which files and directories a backup of paths takes, and how it reads
/// them.
#[derive(Debug, Clone, Default)]
pub struct FileOptions {
    /// Paths matching these are skipped (directories with everything below).
    pub excludes: PathFilter,
    /// A directory that contains an entry with one of these names is skipped.
    pub exclude_if_present: Vec<String>,
    /// Do not descend into directories on other filesystems (they are
    /// recorded, empty).
    pub one_file_system: bool,
    /// Reader threads; 0 chooses.
    pub readers: usize,
    /// Count the files and bytes ahead of the backup, on a thread of its
    /// own, for progress totals.
    pub estimate_totals: bool,
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

/// Backs up `sources` (absolute, from [`resolve_sources`]) into `store` and
/// returns the entries of the snapshot's root, one per source, with the
/// counts and the directory cache for the new snapshot. `parent_tree` is
/// the root tree of the parent snapshot and `cache` its directory cache;
/// `local` holds a put-only client's own trees. Blocking: run it on a
/// blocking thread.
pub(crate) fn backup_paths(
    store: &Store,
    sources: &[PathBuf],
    parent_tree: Option<TreeId>,
    cache: Option<&DirCache>,
    options: &FileOptions,
    local: Option<&LocalTrees>,
    events: &dyn SessionEvents,
) -> Result<(Vec<Node>, SnapshotSummary, DirCache)> {
    let names = root_names(sources);
    // The parent only saves reading: if its root is unreadable (a prune
    // may have just removed a forgotten parent), read everything.
    let parent_root = parent_tree.and_then(|id| match load_tree(store, local, &id) {
        Ok(tree) => Some(tree),
        Err(e) => {
            tracing::warn!("parent snapshot's tree unreadable ({e}), reading every file");
            None
        }
    });
    let shared = Shared::new(store, events, local);
    let readers = if options.readers == 0 { 4 } else { options.readers };
    let (order_tx, order_rx) = bounded::<Vec<walker::Item>>(64);
    let (job_tx, job_rx) = bounded::<reader::FileJob>(64);

    let prefetcher = walker::Prefetcher::default();
    let prefetch = &prefetcher;
    let result = std::thread::scope(|scope| {
        let sink = &shared;
        for _ in 0..readers {
            let job_rx = job_rx.clone();
            scope.spawn(move || {
                for job in job_rx {
                    if sink.aborted() {
                        continue; // dropping the job tells the assembler
                    }
                    sink.read_file(job);
                }
            });
        }
        drop(job_rx);
        let walker = walker::Walker::new(sink, options, order_tx, job_tx, prefetch, cache);
        for _ in 0..walker::LISTERS {
            scope.spawn(move || prefetch.work(options, sink));
        }
        let parent_root = parent_root.as_ref();
        scope.spawn(move || {
            walker.run(sources, &names, parent_root);
            prefetch.close();
        });
        let assembled = assembler::Assembler::new(sink).run(order_rx);
        if assembled.is_err() {
            sink.abort();
        }
        assembled
    });
    match (result, store.take_failure()) {
        (_, Some(e)) => Err(e),
        (Err(e), None) => {
            // Fail the session too: nothing may be published from it.
            store.fail(Error::WriteSessionFailed(e.to_string()));
            Err(e)
        }
        (Ok(assembled), None) => {
            let mut summary = assembled.summary;
            summary.bytes_read = store.progress().bytes_read.load(Ordering::Relaxed);
            let next = DirCache::successor(cache, assembled.walked, &assembled.reused);
            Ok((assembled.root, summary, next))
        }
    }
}

/// Backs up one stream (stdin, a command's output) as the root entry
/// `name`. Reading starts at once. Blocking, like [`backup_paths`].
pub(crate) fn backup_stream(
    store: &Store,
    reader: &mut (dyn Read + Send),
    name: &[u8],
) -> Result<(Node, SnapshotSummary)> {
    if !Node::valid_name(name) {
        return Err(Error::InvalidArgument(format!(
            "{:?} cannot be a file name (no '/', not empty, not '.' or '..')",
            String::from_utf8_lossy(name)
        )));
    }
    let mut content = Vec::new();
    let mut size = 0;
    let read = store.chunk_stream(reader, &mut content, &mut size);
    if let Err(e) = read {
        let e = Error::Io { context: format!("reading the stream for {}", String::from_utf8_lossy(name)), source: e };
        store.fail(Error::WriteSessionFailed(e.to_string()));
        return Err(e);
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
    let progress = store.progress();
    progress.files.fetch_add(1, Ordering::Relaxed);
    progress.bytes.fetch_add(size, Ordering::Relaxed);
    let summary = SnapshotSummary { files_new: 1, total_bytes: size, bytes_read: size, ..Default::default() };
    Ok((node, summary))
}

/// Reads and decodes a tree blob (from the client's own trees for a
/// put-only key).
fn load_tree(store: &Store, local: Option<&LocalTrees>, id: &TreeId) -> Result<Tree> {
    let repo = store.writer().repository();
    if let Some(local) = local {
        return local.load(repo.keys(), id);
    }
    let bytes = repo.read_blob_blocking(store.handle(), &store.writer().index(), id)?;
    Tree::decode(&bytes).map_err(|e| Error::corrupt(format!("tree {id}"), e))
}

/// State every pipeline thread shares.
struct Shared<'a> {
    store: &'a Store,
    progress: &'a Progress,
    events: &'a dyn SessionEvents,
    min_chunk: usize,
    /// Cuts bundles of small files (none when the repository's chunks are
    /// already small).
    bundler: Option<cairn_chunker::Chunker>,
    /// Files up to this size go into bundles.
    bundle_file_max: u64,
    /// Bounds the small files held for bundles ahead of the assembler.
    read_ahead: Arc<budget::Budget>,
    /// Bounds the readers streaming a large file at once.
    streams: Arc<budget::Budget>,
    /// A put-only client's own trees: parents are read from there, and
    /// every parent file counts as reusable.
    local_trees: Option<&'a LocalTrees>,
}

impl<'a> Shared<'a> {
    fn new(store: &'a Store, events: &'a dyn SessionEvents, local_trees: Option<&'a LocalTrees>) -> Self {
        let chunker = store.writer().repository().chunker();
        let repo_params = chunker.params();
        let bundler = bundle::bundle_params(repo_params).and_then(|params| chunker.with_params(params).ok());
        let bundle_file_max = bundler.as_ref().map_or(0, |b| bundle::bundle_file_max(repo_params, b.params()));
        Shared {
            store,
            progress: store.progress(),
            events,
            min_chunk: repo_params.min_size as usize,
            bundler,
            bundle_file_max,
            read_ahead: budget::Budget::new(budget::READ_AHEAD_BYTES),
            streams: budget::Budget::new(available_cores() as u64),
            local_trees,
        }
    }

    fn aborted(&self) -> bool {
        self.store.aborted()
    }

    fn abort(&self) {
        self.store.abort()
    }

    fn fail(&self, e: Error) {
        self.store.fail(e)
    }

    fn take_failure(&self) -> Option<Error> {
        self.store.take_failure()
    }

    fn warn(&self, path: &Path, message: &str) {
        self.events.warning(path, message);
        self.progress.errors.fetch_add(1, Ordering::Relaxed);
    }

    fn store_tree(&self, tree: &Tree) -> Result<TreeId> {
        self.store.store_tree(tree)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_names_are_base_names_made_unique() {
        let cases: &[(&[&str], &[&str])] = &[
            (&["/srv/www"], &["www"]),
            (&["/srv/www", "/home/www", "/opt/www"], &["www", "www-1", "www-2"]),
            (&["/"], &["root"]),
            (&["/etc", "/"], &["etc", "root"]),
            (&["/a/b", "/c/b-1", "/d/b"], &["b", "b-1", "b-2"]),
        ];
        for (sources, expected) in cases {
            let paths: Vec<PathBuf> = sources.iter().map(PathBuf::from).collect();
            let names: Vec<String> =
                root_names(&paths).iter().map(|n| String::from_utf8_lossy(n).into_owned()).collect();
            assert_eq!(&names, expected, "{sources:?}");
        }
    }

    #[test]
    fn paths_are_normalized_lexically() {
        for (path, expected) in
            [("/a/b/../c", "/a/c"), ("/a/./b", "/a/b"), ("/a/b/..", "/a"), ("/..", "/"), ("/a//b/", "/a/b")]
        {
            assert_eq!(normalize(Path::new(path)), PathBuf::from(expected), "{path}");
        }
    }

    #[test]
    fn sources_must_exist_and_become_absolute() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let resolved = resolve_sources(&[dir.path().join("sub/../f")]).unwrap();
        assert_eq!(resolved, [dir.path().join("f")]);
        let missing = resolve_sources(&[dir.path().join("nope")]).unwrap_err();
        assert!(missing.to_string().contains("does not exist"), "{missing}");
        assert!(resolve_sources(&[]).unwrap_err().to_string().contains("at least one path"));
    }
}
