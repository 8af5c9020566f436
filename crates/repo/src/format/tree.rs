//! Trees: directory listings with full metadata, stored as blobs of type
//! [`BlobType::Tree`](crate::BlobType::Tree).
//!
//! A tree lists the entries of one directory, sorted by name (bytewise), each
//! with its type, permissions, owner, times, extended attributes and, for a
//! file, the extents that make up its content; a subdirectory points to its
//! own tree by id. Because a tree is a blob, an unchanged directory produces
//! the same bytes, the same id, and deduplicates like file data.
//!
//! Encoding (all integers little-endian; `bytes` = u32 length + bytes):
//!
//! ```text
//! version u8 (= 1) | node count u32 | nodes
//! node: name bytes | kind u8 | mode u32 | uid u32 | gid u32 | user bytes | group bytes
//!       | size u64 | mtime (i64 s, u32 ns) | atime | ctime
//!       | device u64 | inode u64 | links u32 | rdev u64
//!       | link target bytes | subtree flag u8 (0/1) [+ id 32]
//!       | extent count u32 | extents | xattr count u32 | (name bytes, value bytes)...
//!       | error bytes (UTF-8, empty when none)
//! extent: 0 u8 | blob id (32) | offset u32 | length u32     a slice of a data blob
//!       | 1 u8 | length u64                                 a hole (reads as zeros)
//! ```
//!
//! The decoder rejects anything a restore could be misled by: names that are
//! empty, `.`, `..`, or contain `/` or NUL (they could escape the restore
//! target); unsorted or repeated names; a directory without a subtree; a file
//! whose extents do not add up to its size.

use serde::Serialize;

use crate::format::id::{DataId, TreeId};
use crate::format::wire::{Reader, WireError, invalid, put_bytes};

/// The tree encoding version this build writes and reads.
pub const TREE_VERSION: u8 = 1;

/// The type of a directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A named pipe.
    Fifo,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A unix socket (recorded; restore skips it, a socket cannot be recreated).
    Socket,
}

impl NodeKind {
    fn to_byte(self) -> u8 {
        match self {
            NodeKind::File => 0,
            NodeKind::Dir => 1,
            NodeKind::Symlink => 2,
            NodeKind::Fifo => 3,
            NodeKind::CharDevice => 4,
            NodeKind::BlockDevice => 5,
            NodeKind::Socket => 6,
        }
    }

    fn from_byte(b: u8) -> Option<NodeKind> {
        Some(match b {
            0 => NodeKind::File,
            1 => NodeKind::Dir,
            2 => NodeKind::Symlink,
            3 => NodeKind::Fifo,
            4 => NodeKind::CharDevice,
            5 => NodeKind::BlockDevice,
            6 => NodeKind::Socket,
            _ => return None,
        })
    }

    /// The letter `ls -l` shows for this type.
    pub fn letter(self) -> char {
        match self {
            NodeKind::File => '-',
            NodeKind::Dir => 'd',
            NodeKind::Symlink => 'l',
            NodeKind::Fifo => 'p',
            NodeKind::CharDevice => 'c',
            NodeKind::BlockDevice => 'b',
            NodeKind::Socket => 's',
        }
    }
}

/// A point in time with nanosecond precision (seconds since the Unix epoch).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Time {
    /// Whole seconds (negative before 1970).
    pub secs: i64,
    /// Nanoseconds, below 1,000,000,000.
    pub nanos: u32,
}

/// A piece of a file's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Extent {
    /// `length` bytes of data blob `id`, starting at `offset` in its plaintext.
    Blob {
        /// The data blob.
        id: DataId,
        /// Where the slice starts in the blob.
        offset: u32,
        /// How many bytes.
        length: u32,
    },
    /// A hole: `length` zero bytes that occupy no storage on a sparse file.
    Hole {
        /// How many bytes.
        length: u64,
    },
}

impl Extent {
    /// The number of file bytes this extent covers.
    pub fn len(&self) -> u64 {
        match *self {
            Extent::Blob { length, .. } => length as u64,
            Extent::Hole { length } => length,
        }
    }

    /// True for an extent of no bytes (never stored).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// The name, as the bytes the filesystem returned (not necessarily UTF-8).
    #[serde(serialize_with = "serialize_lossy")]
    pub name: Vec<u8>,
    /// The entry's type.
    pub kind: NodeKind,
    /// Permission bits including setuid, setgid and sticky (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Owner user name, empty when the id has no name.
    pub user: String,
    /// Owner group name, empty when the id has no name.
    pub group: String,
    /// Content length for files; 0 otherwise.
    pub size: u64,
    /// Modification time.
    pub mtime: Time,
    /// Access time.
    pub atime: Time,
    /// Status change time (recorded for change detection; cannot be restored).
    pub ctime: Time,
    /// The filesystem's device number (`st_dev`).
    pub device: u64,
    /// The inode number.
    pub inode: u64,
    /// The hard link count.
    pub links: u32,
    /// The device a device node stands for (`st_rdev`).
    pub rdev: u64,
    /// A symlink's target, byte for byte.
    #[serde(serialize_with = "serialize_lossy")]
    pub link_target: Vec<u8>,
    /// A directory's tree.
    pub subtree: Option<TreeId>,
    /// A file's content.
    pub content: Vec<Extent>,
    /// Extended attributes, sorted by name.
    #[serde(skip)]
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Why the entry could not be read completely, if it could not.
    pub error: Option<String>,
}

fn serialize_lossy<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(bytes))
}

impl Node {
    /// An entry of `kind` with every other field zero or empty.
    pub fn new(name: impl Into<Vec<u8>>, kind: NodeKind) -> Node {
        Node {
            name: name.into(),
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            user: String::new(),
            group: String::new(),
            size: 0,
            mtime: Time::default(),
            atime: Time::default(),
            ctime: Time::default(),
            device: 0,
            inode: 0,
            links: 0,
            rdev: 0,
            link_target: Vec::new(),
            subtree: None,
            content: Vec::new(),
            xattrs: Vec::new(),
            error: None,
        }
    }

    /// The name for display (lossy for names that are not UTF-8).
    pub fn display_name(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.name)
    }

    /// Whether `name` may appear in a tree (see the module docs).
    pub fn valid_name(name: &[u8]) -> bool {
        !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
    }
}

/// The listing of one directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    nodes: Vec<Node>,
}

impl Tree {
    /// A tree of `nodes`, sorted by name. Fails on an invalid or repeated name.
    pub fn new(mut nodes: Vec<Node>) -> Result<Tree, WireError> {
        nodes.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        for pair in nodes.windows(2) {
            if pair[0].name == pair[1].name {
                return Err(invalid("tree", format!("two entries are named {:?}", pair[0].display_name())));
            }
        }
        for node in &nodes {
            validate(node)?;
        }
        Ok(Tree { nodes })
    }

    /// The entries, sorted by name.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Takes the entries out.
    pub fn into_nodes(self) -> Vec<Node> {
        self.nodes
    }

    /// The entry called `name`.
    pub fn get(&self, name: &[u8]) -> Option<&Node> {
        self.nodes.binary_search_by(|n| n.name.as_slice().cmp(name)).ok().map(|i| &self.nodes[i])
    }

    /// The encoded bytes (the blob plaintext).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.nodes.len() * 160);
        out.push(TREE_VERSION);
        out.extend_from_slice(&(self.nodes.len() as u32).to_le_bytes());
        for n in &self.nodes {
            put_bytes(&mut out, &n.name);
            out.push(n.kind.to_byte());
            for v in [n.mode, n.uid, n.gid] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            put_bytes(&mut out, n.user.as_bytes());
            put_bytes(&mut out, n.group.as_bytes());
            out.extend_from_slice(&n.size.to_le_bytes());
            for t in [n.mtime, n.atime, n.ctime] {
                out.extend_from_slice(&t.secs.to_le_bytes());
                out.extend_from_slice(&t.nanos.to_le_bytes());
            }
            out.extend_from_slice(&n.device.to_le_bytes());
            out.extend_from_slice(&n.inode.to_le_bytes());
            out.extend_from_slice(&n.links.to_le_bytes());
            out.extend_from_slice(&n.rdev.to_le_bytes());
            put_bytes(&mut out, &n.link_target);
            match &n.subtree {
                Some(id) => {
                    out.push(1);
                    out.extend_from_slice(id.as_bytes());
                }
                None => out.push(0),
            }
            out.extend_from_slice(&(n.content.len() as u32).to_le_bytes());
            for e in &n.content {
                match *e {
                    Extent::Blob { id, offset, length } => {
                        out.push(0);
                        out.extend_from_slice(id.as_bytes());
                        out.extend_from_slice(&offset.to_le_bytes());
                        out.extend_from_slice(&length.to_le_bytes());
                    }
                    Extent::Hole { length } => {
                        out.push(1);
                        out.extend_from_slice(&length.to_le_bytes());
                    }
                }
            }
            out.extend_from_slice(&(n.xattrs.len() as u32).to_le_bytes());
            for (name, value) in &n.xattrs {
                put_bytes(&mut out, name);
                put_bytes(&mut out, value);
            }
            put_bytes(&mut out, n.error.as_deref().unwrap_or("").as_bytes());
        }
        out
    }

    /// Decodes and validates a tree.
    pub fn decode(bytes: &[u8]) -> Result<Tree, WireError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != TREE_VERSION {
            return Err(invalid("tree version", format!("{version} (this cairn reads {TREE_VERSION})")));
        }
        // The smallest node encodes to well over 64 bytes.
        let count = r.count("node count", 64)?;
        let mut nodes = Vec::with_capacity(count);
        for _ in 0..count {
            let name = r.bytes()?.to_vec();
            let kind = NodeKind::from_byte(r.u8()?).ok_or_else(|| invalid("node kind", "unknown type"))?;
            let mut node = Node::new(name, kind);
            node.mode = r.u32()?;
            node.uid = r.u32()?;
            node.gid = r.u32()?;
            node.user = utf8(r.bytes()?, "user name")?;
            node.group = utf8(r.bytes()?, "group name")?;
            node.size = r.u64()?;
            node.mtime = time(&mut r)?;
            node.atime = time(&mut r)?;
            node.ctime = time(&mut r)?;
            node.device = r.u64()?;
            node.inode = r.u64()?;
            node.links = r.u32()?;
            node.rdev = r.u64()?;
            node.link_target = r.bytes()?.to_vec();
            node.subtree = match r.u8()? {
                0 => None,
                1 => Some(TreeId(r.id()?)),
                _ => return Err(invalid("subtree flag", "neither 0 nor 1")),
            };
            let extents = r.count("extent count", 9)?;
            node.content.reserve(extents);
            for _ in 0..extents {
                node.content.push(match r.u8()? {
                    0 => Extent::Blob { id: DataId(r.id()?), offset: r.u32()?, length: r.u32()? },
                    1 => Extent::Hole { length: r.u64()? },
                    _ => return Err(invalid("extent", "unknown extent type")),
                });
            }
            let xattrs = r.count("xattr count", 8)?;
            node.xattrs.reserve(xattrs);
            for _ in 0..xattrs {
                let name = r.bytes()?.to_vec();
                let value = r.bytes()?.to_vec();
                node.xattrs.push((name, value));
            }
            let error = utf8(r.bytes()?, "error")?;
            node.error = (!error.is_empty()).then_some(error);
            validate(&node)?;
            if let Some(prev) = nodes.last().map(|p: &Node| &p.name) {
                if prev >= &node.name {
                    return Err(invalid("tree", "entries are not sorted by name or a name repeats"));
                }
            }
            nodes.push(node);
        }
        r.finish()?;
        Ok(Tree { nodes })
    }
}

fn utf8(bytes: &[u8], field: &'static str) -> Result<String, WireError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| invalid(field, "not UTF-8"))
}

fn time(r: &mut Reader<'_>) -> Result<Time, WireError> {
    let secs = r.i64()?;
    let nanos = r.u32()?;
    if nanos >= 1_000_000_000 {
        return Err(invalid("time", format!("{nanos} nanoseconds")));
    }
    Ok(Time { secs, nanos })
}

fn validate(node: &Node) -> Result<(), WireError> {
    if !Node::valid_name(&node.name) {
        return Err(invalid("entry name", format!("{:?} is not a valid file name", node.display_name())));
    }
    if (node.kind == NodeKind::Dir) != node.subtree.is_some() {
        return Err(invalid("subtree", "a directory needs a subtree and nothing else may have one"));
    }
    if node.kind != NodeKind::Symlink && !node.link_target.is_empty() {
        return Err(invalid("link target", "only a symlink has one"));
    }
    if node.kind != NodeKind::File && (!node.content.is_empty() || node.size != 0) {
        return Err(invalid("content", "only a file has content"));
    }
    let mut total: u64 = 0;
    for extent in &node.content {
        if extent.is_empty() {
            return Err(invalid("extent", "an extent of zero bytes"));
        }
        if let Extent::Blob { offset, length, .. } = *extent {
            if offset.checked_add(length).is_none() {
                return Err(invalid("extent", "offset + length overflows"));
            }
        }
        total = total.checked_add(extent.len()).ok_or_else(|| invalid("extent", "lengths overflow"))?;
    }
    if total != node.size {
        return Err(invalid("content", format!("extents cover {total} bytes but the size is {}", node.size)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::id::Id;

    fn sample() -> Tree {
        let mut file = Node::new(b"caf\xe9.txt".to_vec(), NodeKind::File);
        file.mode = 0o4755;
        file.uid = 1000;
        file.user = "alice".into();
        file.size = 10 + 4096;
        file.mtime = Time { secs: -5, nanos: 999_999_999 };
        file.content =
            vec![Extent::Blob { id: DataId(Id([7; 32])), offset: 3, length: 10 }, Extent::Hole { length: 4096 }];
        file.xattrs = vec![(b"user.k".to_vec(), b"v\0v".to_vec())];
        let mut dir = Node::new("sub", NodeKind::Dir);
        dir.subtree = Some(TreeId(Id([9; 32])));
        let mut link = Node::new("link", NodeKind::Symlink);
        link.link_target = b"../x\xff".to_vec();
        let mut bad = Node::new("unreadable", NodeKind::File);
        bad.error = Some("permission denied".into());
        Tree::new(vec![file, dir, link, bad]).unwrap()
    }

    #[test]
    fn round_trip() {
        let tree = sample();
        let decoded = Tree::decode(&tree.encode()).unwrap();
        assert_eq!(decoded, tree);
        assert_eq!(decoded.get(b"sub").unwrap().subtree, Some(TreeId(Id([9; 32]))));
        assert!(decoded.get(b"nope").is_none());
    }

    #[test]
    fn rejects_names_that_escape() {
        for name in [&b".."[..], b".", b"a/b", b"", b"a\0"] {
            let mut tree = Tree::new(vec![]).unwrap();
            tree.nodes.push(Node::new(name.to_vec(), NodeKind::Fifo));
            assert!(Tree::decode(&tree.encode()).is_err(), "{name:?}");
        }
    }

    #[test]
    fn rejects_inconsistent_entries() {
        let mut tree = sample();
        tree.nodes[0].size += 1;
        assert!(Tree::decode(&tree.encode()).is_err());
        let mut tree = sample();
        tree.nodes.swap(0, 1);
        assert!(Tree::decode(&tree.encode()).is_err());
        let mut tree = sample();
        tree.nodes[3].subtree = None;
        tree.nodes[3].kind = NodeKind::Dir;
        assert!(Tree::decode(&tree.encode()).is_err());
        assert!(Tree::new(vec![Node::new("a", NodeKind::Fifo), Node::new("a", NodeKind::Fifo)]).is_err());
    }

    #[test]
    fn truncations_are_errors() {
        let bytes = sample().encode();
        for len in 0..bytes.len() {
            assert!(Tree::decode(&bytes[..len]).is_err());
        }
    }
}
