//! The mounted file system's logic, as a plain type: inode numbers, the
//! virtual directories above the snapshots, lazily loaded trees, and file
//! reads. The FUSE adapter ([`super::fuse`]) only translates calls; tests
//! call this type directly, with no `/dev/fuse` needed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;

use super::content::{self, BlobCache, FileLayout};
use super::derived::{Converted, DerivedDir, DerivedFiles, SourceReader};
use super::layout::{self, Layout, Target};
use crate::error::{Error, Result};
use crate::format::id::SnapshotId;
use crate::format::index::Index;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind, Time};
use crate::repository::Repository;
use crate::selection::SnapshotFilter;
use crate::view::TreeLoader;

/// The root directory's inode number (FUSE's).
pub const ROOT_INODE: u64 = 1;

/// How a mount behaves.
#[derive(Clone)]
pub struct MountOptions {
    /// Only snapshots that pass this filter are shown.
    pub filter: SnapshotFilter,
    /// The snapshot list (and index) is read again on a listing of a
    /// virtual directory at most this often.
    pub refresh: Duration,
    /// Bytes of decrypted blobs kept in memory.
    pub cache_bytes: usize,
    /// Views of snapshot files to show beside them (PostgreSQL tables as
    /// CSV), if any.
    pub derived: Option<Arc<dyn DerivedFiles>>,
}

impl Default for MountOptions {
    fn default() -> MountOptions {
        MountOptions {
            filter: SnapshotFilter::default(),
            refresh: Duration::from_secs(30),
            cache_bytes: 64 << 20,
            derived: None,
        }
    }
}

impl std::fmt::Debug for MountOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountOptions")
            .field("filter", &self.filter)
            .field("refresh", &self.refresh)
            .field("cache_bytes", &self.cache_bytes)
            .field("derived", &self.derived.is_some())
            .finish()
    }
}

/// What a file-system call found wrong, with the `errno` it answers.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// No such entry.
    #[error("no such file or directory")]
    NotFound,
    /// A directory operation on something else.
    #[error("not a directory")]
    NotADirectory,
    /// A file operation on a directory.
    #[error("is a directory")]
    IsADirectory,
    /// `readlink` of something that is not a link.
    #[error("not a symbolic link")]
    NotALink,
    /// No such extended attribute.
    #[error("no such extended attribute")]
    NoAttribute,
    /// The repository could not be read (a damaged object, a network
    /// error): the call fails with EIO and the error is logged.
    #[error(transparent)]
    Repository(#[from] Error),
}

impl FsError {
    /// The `errno` this error answers with.
    pub fn errno(&self) -> i32 {
        use nix::libc;
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::NotADirectory => libc::ENOTDIR,
            FsError::IsADirectory => libc::EISDIR,
            FsError::NotALink => libc::EINVAL,
            FsError::NoAttribute => libc::ENODATA,
            FsError::Repository(_) => libc::EIO,
        }
    }
}

/// A file-system call's answer.
pub type FsResult<T> = std::result::Result<T, FsError>;

/// An entry's attributes, as `stat` shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// The inode number (stable for the life of the mount).
    pub ino: u64,
    /// The entry's type.
    pub kind: NodeKind,
    /// Size in bytes (a file's length, a link's target length).
    pub size: u64,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Hard links (as recorded; 1 for directories: unknown, so `find` looks inside).
    pub nlink: u32,
    /// Access time.
    pub atime: Time,
    /// Modification time.
    pub mtime: Time,
    /// Status change time.
    pub ctime: Time,
    /// The device a device node stands for.
    pub rdev: u64,
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Its inode number.
    pub ino: u64,
    /// Its name.
    pub name: Vec<u8>,
    /// Its type.
    pub kind: NodeKind,
}

/// What an inode is.
enum Inode {
    /// A directory above the snapshots (`/`, `hosts/db1`, …).
    Virtual { path: Vec<String>, parent: u64 },
    /// A `latest` link in virtual directory `dir`: its target is read from
    /// the current list when asked, so it moves as snapshots arrive.
    Link { dir: Vec<String>, name: String },
    /// An entry of a snapshot (a snapshot's root included).
    Entry(Entry),
    /// A directory of derived files in a snapshot directory.
    DerivedDir { dir: Arc<DerivedDir>, parent: u64, loader: TreeLoader },
    /// File `number` of a derived directory, sized on first use (one pass
    /// over its source).
    Derived { dir: Arc<DerivedDir>, number: usize, loader: TreeLoader, converted: Mutex<Option<Arc<Converted>>> },
}

/// An entry of a snapshot, with the loader of the index it was found
/// through. A snapshot's root is read when first needed (a listing of
/// `snapshots/` reads no tree).
struct Entry {
    parent: u64,
    loader: TreeLoader,
    node: OnceLock<Arc<Node>>,
    snapshot: Option<Box<Snapshot>>,
}

impl Entry {
    fn of_node(node: Node, parent: u64, loader: TreeLoader) -> Entry {
        Entry { parent, loader, node: OnceLock::from(Arc::new(node)), snapshot: None }
    }

    fn of_snapshot(snapshot: Snapshot, parent: u64, loader: TreeLoader) -> Entry {
        Entry { parent, loader, node: OnceLock::new(), snapshot: Some(Box::new(snapshot)) }
    }

    fn node(&self) -> Arc<Node> {
        self.node
            .get_or_init(|| {
                let snapshot = self.snapshot.as_deref();
                Arc::new(snapshot.map(|s| snapshot_root(&self.loader, s)).unwrap_or_else(empty_dir))
            })
            .clone()
    }
}

/// What a name in a virtual directory stands for, with what it needs.
enum Child {
    Dir(Vec<String>),
    Link,
    Snapshot(Box<Snapshot>, TreeLoader),
}

/// The snapshot list and index as last read.
struct View {
    snapshots: Vec<(SnapshotId, Snapshot)>,
    layout: Layout,
    loader: TreeLoader,
    read_at: Instant,
}

/// The file system over a repository's snapshots.
pub struct SnapshotFs {
    repo: Repository,
    handle: Handle,
    options: MountOptions,
    view: RwLock<View>,
    table: Mutex<Table>,
    cache: Arc<BlobCache>,
    /// The time shown on virtual directories: when the mount started.
    started: Time,
}

/// Inode numbers: `inodes[ino - 1]`, and `(parent, name) → ino` so a name
/// keeps its number for the life of the mount (numbers are never reused).
#[derive(Default)]
struct Table {
    inodes: Vec<Arc<Inode>>,
    names: HashMap<(u64, Vec<u8>), u64>,
    files: HashMap<u64, Arc<FileLayout>>,
}

impl Table {
    fn get(&self, ino: u64) -> Option<Arc<Inode>> {
        ino.checked_sub(1).and_then(|i| self.inodes.get(i as usize)).cloned()
    }

    /// The number of `name` in `parent`, made with `make` the first time.
    fn assign(&mut self, parent: u64, name: &[u8], make: impl FnOnce() -> Inode) -> u64 {
        if let Some(&ino) = self.names.get(&(parent, name.to_vec())) {
            return ino;
        }
        self.inodes.push(Arc::new(make()));
        let ino = self.inodes.len() as u64;
        self.names.insert((parent, name.to_vec()), ino);
        ino
    }
}

impl SnapshotFs {
    /// Reads the snapshot list and the index of `repo`. `handle` runs the
    /// reads of later (blocking) calls.
    pub async fn open(repo: &Repository, options: MountOptions, handle: Handle) -> Result<SnapshotFs> {
        let view = read_view(repo, &options.filter, &handle).await?;
        let mut table = Table::default();
        table.inodes.push(Arc::new(Inode::Virtual { path: Vec::new(), parent: ROOT_INODE }));
        let now = jiff::Timestamp::now();
        Ok(SnapshotFs {
            repo: repo.clone(),
            handle,
            cache: Arc::new(BlobCache::new(options.cache_bytes)),
            options,
            view: RwLock::new(view),
            table: Mutex::new(table),
            started: Time { secs: now.as_second(), nanos: 0 },
        })
    }

    /// The repository shown.
    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn inode(&self, ino: u64) -> FsResult<Arc<Inode>> {
        self.table().get(ino).ok_or(FsError::NotFound)
    }

    /// Reads the snapshot list again when it is older than the refresh
    /// interval (blocking).
    fn refresh(&self) -> Result<()> {
        let stale = self.view.read().map(|v| v.read_at.elapsed() >= self.options.refresh).unwrap_or(true);
        if !stale {
            return Ok(());
        }
        let view = self.handle.block_on(read_view(&self.repo, &self.options.filter, &self.handle))?;
        if let Ok(mut current) = self.view.write() {
            *current = view;
        }
        Ok(())
    }

    /// The entries of a virtual directory, with what each stands for.
    fn virtual_entries(&self, path: &[String]) -> Vec<(String, Child)> {
        let Ok(view) = self.view.read() else { return Vec::new() };
        let Some(entries) = view.layout.get(path) else { return Vec::new() };
        entries
            .iter()
            .filter_map(|(name, target)| {
                let child = match target {
                    Target::Dir(path) => Child::Dir(path.clone()),
                    Target::Link(_) => Child::Link,
                    Target::Snapshot(i) => {
                        let (_, snapshot) = view.snapshots.get(*i)?;
                        Child::Snapshot(Box::new(snapshot.clone()), view.loader.clone())
                    }
                };
                Some((name.clone(), child))
            })
            .collect()
    }

    /// The current target of link `name` in virtual directory `dir`.
    fn link_target(&self, dir: &[String], name: &str) -> FsResult<Vec<u8>> {
        let view = self.view.read().map_err(|_| FsError::NotFound)?;
        let entries = view.layout.get(dir).ok_or(FsError::NotFound)?;
        match entries.iter().find(|(n, _)| n == name) {
            Some((_, Target::Link(target))) => Ok(target.clone().into_bytes()),
            _ => Err(FsError::NotFound),
        }
    }

    /// Looks `name` up in directory `parent`.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> FsResult<Attr> {
        let entries = self.children(parent)?;
        let ino = entries.iter().find(|e| e.name == name).map(|e| e.ino).ok_or(FsError::NotFound)?;
        self.getattr(ino)
    }

    /// The attributes of inode `ino`.
    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        let inode = self.inode(ino)?;
        let virtual_attr = |kind, size| Attr {
            ino,
            kind,
            size,
            mode: if kind == NodeKind::Dir { 0o555 } else { 0o777 },
            uid: 0,
            gid: 0,
            nlink: 1,
            atime: self.started,
            mtime: self.started,
            ctime: self.started,
            rdev: 0,
        };
        Ok(match &*inode {
            Inode::Virtual { .. } | Inode::DerivedDir { .. } => virtual_attr(NodeKind::Dir, 0),
            Inode::Derived { dir, number, .. } => {
                let size = self.converted(&inode)?.size();
                Attr { size, mode: 0o444, nlink: 1, ..self.node_attr(ino, &dir.files[*number].source) }
            }
            Inode::Link { dir, name } => virtual_attr(NodeKind::Symlink, self.link_target(dir, name)?.len() as u64),
            Inode::Entry(entry) => self.node_attr(ino, &entry.node()),
        })
    }

    fn node_attr(&self, ino: u64, node: &Node) -> Attr {
        let size = match node.kind {
            NodeKind::File => self.layout_of(ino, node).size(),
            NodeKind::Symlink => node.link_target.len() as u64,
            _ => 0,
        };
        Attr {
            ino,
            kind: node.kind,
            size,
            mode: node.mode & 0o7777,
            uid: node.uid,
            gid: node.gid,
            nlink: if node.kind == NodeKind::Dir { 1 } else { node.links.max(1) },
            atime: node.atime,
            mtime: node.mtime,
            ctime: node.ctime,
            rdev: node.rdev,
        }
    }

    /// A derived file's conversion, sized on first use.
    fn converted(&self, inode: &Inode) -> FsResult<Arc<Converted>> {
        let Inode::Derived { dir, number, loader, converted } = inode else { return Err(FsError::NotFound) };
        let mut slot = converted.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(done) = &*slot {
            return Ok(done.clone());
        }
        let reader = SourceReader { loader, handle: &self.handle, cache: &self.cache };
        let done = Arc::new(Converted::measure(&dir.files[*number], &reader)?);
        *slot = Some(done.clone());
        Ok(done)
    }

    /// The entries of directory `ino` (without `.` and `..`).
    pub fn readdir(&self, ino: u64) -> FsResult<Vec<DirEntry>> {
        self.children(ino)
    }

    /// The parent of directory `ino` (for `..`).
    pub fn parent(&self, ino: u64) -> FsResult<u64> {
        match &*self.inode(ino)? {
            Inode::Virtual { parent, .. } | Inode::Entry(Entry { parent, .. }) | Inode::DerivedDir { parent, .. } => {
                Ok(*parent)
            }
            Inode::Link { .. } | Inode::Derived { .. } => Err(FsError::NotADirectory),
        }
    }

    fn children(&self, ino: u64) -> FsResult<Vec<DirEntry>> {
        match &*self.inode(ino)? {
            Inode::Virtual { path, .. } => {
                self.refresh()?;
                let entries = self.virtual_entries(path);
                let mut table = self.table();
                Ok(entries
                    .into_iter()
                    .map(|(name, child)| {
                        let kind = if matches!(child, Child::Link) { NodeKind::Symlink } else { NodeKind::Dir };
                        let link = (path.clone(), name.clone());
                        let make = move || match child {
                            Child::Dir(path) => Inode::Virtual { path, parent: ino },
                            Child::Link => Inode::Link { dir: link.0, name: link.1 },
                            Child::Snapshot(snapshot, loader) => {
                                Inode::Entry(Entry::of_snapshot(*snapshot, ino, loader))
                            }
                        };
                        DirEntry { ino: table.assign(ino, name.as_bytes(), make), name: name.into_bytes(), kind }
                    })
                    .collect())
            }
            Inode::Entry(entry) => {
                let node = entry.node();
                if node.kind != NodeKind::Dir {
                    return Err(FsError::NotADirectory);
                }
                let Some(subtree) = node.subtree else { return Ok(Vec::new()) };
                let tree = entry.loader.load(&subtree)?;
                let derived = self.options.derived.as_ref().and_then(|d| d.derive(&tree, &entry.loader));
                let mut table = self.table();
                let mut entries: Vec<DirEntry> = tree
                    .nodes()
                    .iter()
                    .filter(|child| is_plain_name(&child.name))
                    .map(|child| {
                        let make = || Inode::Entry(Entry::of_node(child.clone(), ino, entry.loader.clone()));
                        DirEntry {
                            ino: table.assign(ino, &child.name, make),
                            name: child.name.clone(),
                            kind: child.kind,
                        }
                    })
                    .collect();
                // Never in place of an entry of the snapshot.
                if let Some(dir) = derived.filter(|d| is_plain_name(&d.name) && tree.get(&d.name).is_none()) {
                    let name = dir.name.clone();
                    let loader = entry.loader.clone();
                    let make = || Inode::DerivedDir { dir: Arc::new(dir), parent: ino, loader };
                    entries.push(DirEntry { ino: table.assign(ino, &name, make), name, kind: NodeKind::Dir });
                }
                Ok(entries)
            }
            Inode::DerivedDir { dir, loader, .. } => {
                let mut table = self.table();
                Ok(dir
                    .files
                    .iter()
                    .enumerate()
                    .filter(|(_, file)| is_plain_name(&file.name))
                    .map(|(number, file)| {
                        let make = || Inode::Derived {
                            dir: dir.clone(),
                            number,
                            loader: loader.clone(),
                            converted: Mutex::new(None),
                        };
                        DirEntry {
                            ino: table.assign(ino, &file.name, make),
                            name: file.name.clone(),
                            kind: NodeKind::File,
                        }
                    })
                    .collect())
            }
            Inode::Link { .. } | Inode::Derived { .. } => Err(FsError::NotADirectory),
        }
    }

    /// A symbolic link's target.
    pub fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        match &*self.inode(ino)? {
            Inode::Link { dir, name } => self.link_target(dir, name),
            Inode::Entry(entry) if entry.node().kind == NodeKind::Symlink => Ok(entry.node().link_target.clone()),
            _ => Err(FsError::NotALink),
        }
    }

    /// Up to `len` bytes of file `ino` at `offset` (fewer at its end).
    pub fn read(&self, ino: u64, offset: u64, len: u32) -> FsResult<Vec<u8>> {
        self.read_with(ino, offset, len, <[u8]>::to_vec)
    }

    /// [`read`](SnapshotFs::read), handing the bytes to `with` (without
    /// copying them when they lie in one cached blob).
    pub fn read_with<R>(&self, ino: u64, offset: u64, len: u32, with: impl FnOnce(&[u8]) -> R) -> FsResult<R> {
        let inode = self.inode(ino)?;
        if let Inode::Derived { loader, .. } = &*inode {
            let converted = self.converted(&inode)?;
            let reader = SourceReader { loader, handle: &self.handle, cache: &self.cache };
            return Ok(with(&converted.read(&reader, offset, u64::from(len))?));
        }
        let Inode::Entry(entry) = &*inode else { return Err(FsError::IsADirectory) };
        let node = entry.node();
        match node.kind {
            NodeKind::File => {}
            NodeKind::Dir => return Err(FsError::IsADirectory),
            _ => return Err(FsError::NotFound),
        }
        let layout = self.layout_of(ino, &node);
        let (repo, index) = (&self.repo, entry.loader.index());
        let bytes = content::read_with(repo, index, &self.handle, &self.cache, &layout, offset, u64::from(len), with);
        bytes.map_err(|e| {
            tracing::warn!("reading {}: {e}", String::from_utf8_lossy(&node.name));
            FsError::from(e)
        })
    }

    /// The extended attributes of `ino`, sorted by name.
    pub fn xattrs(&self, ino: u64) -> FsResult<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(match &*self.inode(ino)? {
            Inode::Entry(entry) => entry.node().xattrs.clone(),
            _ => Vec::new(),
        })
    }

    /// One extended attribute of `ino`.
    pub fn xattr(&self, ino: u64, name: &[u8]) -> FsResult<Vec<u8>> {
        self.xattrs(ino)?.into_iter().find(|(n, _)| n == name).map(|(_, v)| v).ok_or(FsError::NoAttribute)
    }

    fn layout_of(&self, ino: u64, node: &Node) -> Arc<FileLayout> {
        self.table().files.entry(ino).or_insert_with(|| Arc::new(FileLayout::of(node))).clone()
    }
}

/// The snapshot list (filtered) and a loader over a fresh index.
async fn read_view(repo: &Repository, filter: &SnapshotFilter, handle: &Handle) -> Result<View> {
    let snapshots: Vec<(SnapshotId, Snapshot)> =
        repo.list_snapshots().await?.into_iter().filter(|(_, s)| filter.matches(s)).collect();
    let index: Arc<Index> = Arc::new(repo.load_index().await?);
    Ok(View {
        layout: layout::plan(&snapshots),
        snapshots,
        loader: TreeLoader::new(repo, index, handle.clone()),
        read_at: Instant::now(),
    })
}

/// A snapshot's directory: its view root (see [`TreeLoader::root`]). A
/// root that cannot be read is an empty directory, and the error is logged.
fn snapshot_root(loader: &TreeLoader, snapshot: &Snapshot) -> Node {
    let mut root = loader.root(snapshot).unwrap_or_else(|e| {
        tracing::warn!("snapshot of {}: its root cannot be read: {e}", snapshot.time);
        empty_dir()
    });
    // A root made up for several paths has no times: the snapshot's.
    if root.mtime == Time::default() {
        let time = Time { secs: snapshot.time.as_second(), nanos: snapshot.time.subsec_nanosecond().max(0) as u32 };
        (root.mtime, root.atime, root.ctime) = (time, time, time);
    }
    root
}

fn empty_dir() -> Node {
    let mut empty = Node::new(b"/".to_vec(), NodeKind::Dir);
    empty.mode = 0o555;
    empty
}

/// A name a directory can hold: a crafted tree may hold `..`, `a/b` or an
/// empty name, which a file system must never show.
fn is_plain_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_are_shown() {
        for name in [&b"a"[..], b"..a", b"a b", b"\xff\xfe"] {
            assert!(is_plain_name(name), "{name:?}");
        }
        for name in [&b""[..], b".", b"..", b"a/b", b"/", b"a\0b"] {
            assert!(!is_plain_name(name), "{name:?}");
        }
    }
}
