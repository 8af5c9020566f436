//! Building a snapshot's directory trees from paths: what a source that is
//! not a file system (a database, a bucket, an embedder's own data) uses to
//! lay out its files. It accepts only valid names and stored [`Content`],
//! so the trees it writes are always ones the format accepts.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::format::id::TreeId;
use crate::format::tree::{Node, NodeKind, Time, Tree};
use crate::writing::store::{Content, Store};

/// Owner, permissions and time of an entry a source adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryMeta {
    /// Permission bits (`0o600`, `0o755`, ...).
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Owner user name (empty: none).
    pub user: String,
    /// Owner group name (empty: none).
    pub group: String,
    /// Modification time; `None`: when the session started.
    pub mtime: Option<jiff::Timestamp>,
    /// Extended attributes (name, value), e.g. an object's headers
    /// (sorted by name when stored).
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl EntryMeta {
    /// A private file of this process's user (mode 0600).
    pub fn file() -> EntryMeta {
        EntryMeta::owned_by_process(0o600)
    }

    /// A private directory of this process's user (mode 0700).
    pub fn dir() -> EntryMeta {
        EntryMeta::owned_by_process(0o700)
    }

    fn owned_by_process(mode: u32) -> EntryMeta {
        let owners = crate::files::fsmeta::Owners::default();
        let (uid, gid) = (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw());
        EntryMeta { mode, uid, gid, user: owners.user(uid), group: owners.group(gid), mtime: None, xattrs: Vec::new() }
    }

    /// The same, with modification time `time`.
    pub fn at(mut self, time: jiff::Timestamp) -> EntryMeta {
        self.mtime = Some(time);
        self
    }
}

/// Counts of what a builder holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TreeCounts {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
}

enum Entry {
    File(Node),
    Dir { meta: Option<EntryMeta>, children: BTreeMap<Vec<u8>, Entry> },
}

/// Files and directories by path, turned into tree blobs at the end.
pub(crate) struct TreeBuilder {
    root: BTreeMap<Vec<u8>, Entry>,
    counts: TreeCounts,
    /// The time of entries without one.
    default_time: jiff::Timestamp,
}

fn time_of(t: jiff::Timestamp) -> Time {
    Time { secs: t.as_second(), nanos: t.subsec_nanosecond().max(0) as u32 }
}

/// Splits `a/b/c` into checked names.
fn components(path: &str) -> Result<Vec<&[u8]>> {
    let parts: Vec<&[u8]> = path.trim_matches('/').split('/').map(str::as_bytes).collect();
    if parts.iter().any(|p| !Node::valid_name(p)) {
        return Err(Error::InvalidArgument(format!(
            "{path:?} cannot be a path in a snapshot: each part must be a valid name (not empty, not '.' or '..', no NUL)"
        )));
    }
    Ok(parts)
}

impl TreeBuilder {
    pub(crate) fn new(default_time: jiff::Timestamp) -> TreeBuilder {
        TreeBuilder { root: BTreeMap::new(), counts: TreeCounts::default(), default_time }
    }

    /// The directory at `parts`, created (without metadata) where missing.
    fn dir_mut<'a>(&'a mut self, parts: &[&[u8]], path: &str) -> Result<&'a mut BTreeMap<Vec<u8>, Entry>> {
        let mut dir = &mut self.root;
        for part in parts {
            let entry = dir.entry(part.to_vec()).or_insert_with(|| {
                self.counts.dirs += 1;
                Entry::Dir { meta: None, children: BTreeMap::new() }
            });
            dir = match entry {
                Entry::Dir { children, .. } => children,
                Entry::File(_) => {
                    return Err(Error::InvalidArgument(format!(
                        "{path:?}: {:?} is a file, not a directory",
                        String::from_utf8_lossy(part)
                    )));
                }
            };
        }
        Ok(dir)
    }

    /// Adds a file at `path` (`dir/sub/name`; missing directories are
    /// created). A path can be added once.
    pub(crate) fn add_file(&mut self, path: &str, content: Content, meta: &EntryMeta) -> Result<()> {
        let parts = components(path)?;
        let (name, parents) = parts.split_last().expect("split gives at least one part");
        let mut node = Node::new(name.to_vec(), NodeKind::File);
        self.apply(&mut node, meta);
        node.size = content.size;
        node.content = content.extents;
        node.links = 1;
        let size = node.size;
        let dir = self.dir_mut(parents, path)?;
        if dir.contains_key(*name) {
            return Err(Error::InvalidArgument(format!("{path:?} was added twice to the snapshot")));
        }
        dir.insert(name.to_vec(), Entry::File(node));
        self.counts.files += 1;
        self.counts.bytes += size;
        Ok(())
    }

    /// Sets a directory's metadata (creating it where missing).
    pub(crate) fn add_dir(&mut self, path: &str, meta: &EntryMeta) -> Result<()> {
        let parts = components(path)?;
        let (name, parents) = parts.split_last().expect("split gives at least one part");
        let dir = self.dir_mut(parents, path)?;
        let entry = dir.entry(name.to_vec()).or_insert_with(|| Entry::Dir { meta: None, children: BTreeMap::new() });
        match entry {
            Entry::Dir { meta: slot, children } => {
                let new = slot.is_none() && children.is_empty();
                *slot = Some(meta.clone());
                if new {
                    self.counts.dirs += 1;
                }
                Ok(())
            }
            Entry::File(_) => Err(Error::InvalidArgument(format!("{path:?} is already a file in the snapshot"))),
        }
    }

    fn apply(&self, node: &mut Node, meta: &EntryMeta) {
        node.mode = meta.mode & 0o7777;
        node.uid = meta.uid;
        node.gid = meta.gid;
        node.user = meta.user.clone();
        node.group = meta.group.clone();
        node.mtime = time_of(meta.mtime.unwrap_or(self.default_time));
        node.atime = node.mtime;
        node.ctime = node.mtime;
        node.xattrs = meta.xattrs.clone();
        node.xattrs.sort();
    }

    pub(crate) fn counts(&self) -> TreeCounts {
        self.counts
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.root.is_empty()
    }

    /// Stores every directory's tree, deepest first, and returns the
    /// top-level entries (for the snapshot's root). Blocking.
    pub(crate) fn finish(mut self, store: &Store) -> Result<Vec<Node>> {
        let default_dir = EntryMeta::dir();
        let root = std::mem::take(&mut self.root);
        let mut out = Vec::with_capacity(root.len());
        for (name, entry) in root {
            out.push(self.finish_entry(store, name, entry, &default_dir)?);
        }
        Ok(out)
    }

    fn finish_entry(&self, store: &Store, name: Vec<u8>, entry: Entry, default_dir: &EntryMeta) -> Result<Node> {
        match entry {
            Entry::File(node) => Ok(node),
            Entry::Dir { meta, children } => {
                let mut nodes = Vec::with_capacity(children.len());
                for (child, entry) in children {
                    nodes.push(self.finish_entry(store, child, entry, default_dir)?);
                }
                let subtree: TreeId = store.store_tree(&Tree::new(nodes).map_err(|e| {
                    Error::InvalidArgument(format!("directory {}: {e}", String::from_utf8_lossy(&name)))
                })?)?;
                let mut node = Node::new(name, NodeKind::Dir);
                self.apply(&mut node, meta.as_ref().unwrap_or(default_dir));
                node.subtree = Some(subtree);
                node.links = 2;
                Ok(node)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(size: u64) -> Content {
        Content { extents: Vec::new(), size }
    }

    fn meta(mode: u32) -> EntryMeta {
        EntryMeta { mode, uid: 7, gid: 8, user: "u".into(), group: "g".into(), mtime: None, xattrs: Vec::new() }
    }

    #[test]
    fn paths_make_nested_directories_and_counts() {
        let mut b = TreeBuilder::new(jiff::Timestamp::from_second(1_000).unwrap());
        b.add_file("db/data/public/t1", content(10), &meta(0o600)).unwrap();
        b.add_file("db/data/public/t2", content(5), &meta(0o600)).unwrap();
        b.add_file("db/manifest.json", content(3), &meta(0o644)).unwrap();
        b.add_dir("db", &meta(0o750)).unwrap();
        b.add_dir("empty", &meta(0o700)).unwrap();
        assert_eq!(b.counts(), TreeCounts { files: 3, dirs: 4, bytes: 18 });
        let Entry::Dir { meta: db_meta, children } = &b.root[b"db".as_slice()] else { panic!("db is a directory") };
        assert_eq!(db_meta.as_ref().map(|m| m.mode), Some(0o750));
        assert!(matches!(children[b"data".as_slice()], Entry::Dir { meta: None, .. }), "created on the way");
        let Entry::File(file) = &children[b"manifest.json".as_slice()] else { panic!("a file") };
        assert_eq!((file.mode, file.uid, file.size, file.mtime.secs), (0o644, 7, 3, 1_000));
    }

    #[test]
    fn bad_paths_and_clashes_are_refused() {
        let cases: &[(&[&str], &str, &str)] = &[
            (&[], "../x", "cannot be a path"),
            (&[], "a/./b", "cannot be a path"),
            (&[], "a//b", "cannot be a path"),
            (&[], "", "cannot be a path"),
            (&["a"], "a", "added twice"),
            (&["a"], "a/b", "is a file"),
        ];
        for (before, path, expected) in cases {
            let mut b = TreeBuilder::new(jiff::Timestamp::now());
            for p in *before {
                b.add_file(p, content(1), &EntryMeta::file()).unwrap();
            }
            let err = b.add_file(path, content(1), &EntryMeta::file()).unwrap_err();
            assert!(err.to_string().contains(expected), "{path:?}: {err}");
        }
        let mut b = TreeBuilder::new(jiff::Timestamp::now());
        b.add_file("f", content(1), &EntryMeta::file()).unwrap();
        assert!(b.add_dir("f", &EntryMeta::dir()).unwrap_err().to_string().contains("already a file"));
        // Leading and trailing slashes are tolerated.
        b.add_file("/d/g/", content(1), &EntryMeta::file()).unwrap();
    }
}
