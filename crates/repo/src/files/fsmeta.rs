//! File metadata between the filesystem and tree [`Node`]s: reading it when
//! backing up, applying it when restoring.
//!
//! Everything here works on the entry itself, never on a symlink's target
//! (`lstat`, `llistxattr`, `utimensat(AT_SYMLINK_NOFOLLOW)`, `lchown`).

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io;
use std::ops::Range;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use nix::sys::stat::UtimensatFlags;
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Group, Uid, User};

use crate::format::tree::{Node, NodeKind, Time};

/// User and group names by id and ids by name, looked up once each.
#[derive(Default)]
pub(crate) struct Owners {
    users: Mutex<HashMap<u32, String>>,
    groups: Mutex<HashMap<u32, String>>,
    uids: Mutex<HashMap<String, Option<u32>>>,
    gids: Mutex<HashMap<String, Option<u32>>>,
}

impl Owners {
    pub fn user(&self, uid: u32) -> String {
        let mut users = self.users.lock().expect("owner cache poisoned");
        users
            .entry(uid)
            .or_insert_with(|| User::from_uid(Uid::from_raw(uid)).ok().flatten().map(|u| u.name).unwrap_or_default())
            .clone()
    }

    pub fn group(&self, gid: u32) -> String {
        let mut groups = self.groups.lock().expect("owner cache poisoned");
        groups
            .entry(gid)
            .or_insert_with(|| Group::from_gid(Gid::from_raw(gid)).ok().flatten().map(|g| g.name).unwrap_or_default())
            .clone()
    }

    fn uid_of(&self, name: &str) -> Option<u32> {
        let mut uids = self.uids.lock().expect("owner cache poisoned");
        *uids.entry(name.to_owned()).or_insert_with(|| User::from_name(name).ok().flatten().map(|u| u.uid.as_raw()))
    }

    fn gid_of(&self, name: &str) -> Option<u32> {
        let mut gids = self.gids.lock().expect("owner cache poisoned");
        *gids.entry(name.to_owned()).or_insert_with(|| Group::from_name(name).ok().flatten().map(|g| g.gid.as_raw()))
    }

    /// The ids to restore `node` with: names first (the ids may differ on
    /// this machine), the stored ids when a name is unknown here or when
    /// `numeric` is set.
    pub fn ids_for(&self, node: &Node, numeric: bool) -> (u32, u32) {
        if numeric {
            return (node.uid, node.gid);
        }
        let uid = (!node.user.is_empty()).then(|| self.uid_of(&node.user)).flatten().unwrap_or(node.uid);
        let gid = (!node.group.is_empty()).then(|| self.gid_of(&node.group)).flatten().unwrap_or(node.gid);
        (uid, gid)
    }
}

pub(crate) fn kind_of(meta: &Metadata) -> NodeKind {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        NodeKind::Dir
    } else if t.is_symlink() {
        NodeKind::Symlink
    } else if t.is_fifo() {
        NodeKind::Fifo
    } else if t.is_char_device() {
        NodeKind::CharDevice
    } else if t.is_block_device() {
        NodeKind::BlockDevice
    } else if t.is_socket() {
        NodeKind::Socket
    } else {
        NodeKind::File
    }
}

fn time(secs: i64, nanos: i64) -> Time {
    Time { secs, nanos: nanos.clamp(0, 999_999_999) as u32 }
}

/// A node from `lstat` metadata: everything but content, subtree, link
/// target and extended attributes.
pub(crate) fn node_from_metadata(name: &[u8], meta: &Metadata, owners: &Owners) -> Node {
    let kind = kind_of(meta);
    let mut node = Node::new(name.to_vec(), kind);
    node.mode = meta.mode() & 0o7777;
    node.uid = meta.uid();
    node.gid = meta.gid();
    node.user = owners.user(meta.uid());
    node.group = owners.group(meta.gid());
    node.size = if kind == NodeKind::File { meta.size() } else { 0 };
    node.mtime = time(meta.mtime(), meta.mtime_nsec());
    node.atime = time(meta.atime(), meta.atime_nsec());
    node.ctime = time(meta.ctime(), meta.ctime_nsec());
    node.device = meta.dev();
    node.inode = meta.ino();
    node.links = meta.nlink().min(u32::MAX as u64) as u32;
    if matches!(kind, NodeKind::CharDevice | NodeKind::BlockDevice) {
        node.rdev = meta.rdev();
    }
    node
}

/// Whether a file's metadata says it has not changed since `old` was
/// recorded, so its content can be taken from `old` without reading it.
pub(crate) fn unchanged(old: &Node, new: &Node) -> bool {
    old.kind == NodeKind::File
        && new.kind == NodeKind::File
        && old.error.is_none()
        && old.size == new.size
        && old.mtime == new.mtime
        && old.ctime == new.ctime
        && old.inode == new.inode
        && old.mode == new.mode
}

/// The extended attributes of `path` (not following a symlink), sorted.
/// A filesystem without xattr support has none.
pub(crate) fn read_xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    use std::os::unix::ffi::OsStrExt;
    let names = match xattr::list(path) {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in names {
        // An attribute removed between list and get is simply gone.
        if let Some(value) = xattr::get(path, &name)? {
            out.push((name.as_bytes().to_vec(), value));
        }
    }
    out.sort();
    Ok(out)
}

/// The ranges of `file` that hold data, when it has holes; `None` for a
/// file without holes (the common case, detected from its block count) or
/// a filesystem that cannot tell.
pub(crate) fn data_ranges(file: &File, meta: &Metadata) -> Option<Vec<Range<u64>>> {
    use nix::unistd::{Whence, lseek};
    let size = meta.size();
    if size == 0 || meta.blocks().saturating_mul(512) >= size {
        return None;
    }
    let mut ranges = Vec::new();
    let mut pos: u64 = 0;
    while pos < size {
        let start = match lseek(file, pos as i64, Whence::SeekData) {
            Ok(p) => p as u64,
            Err(nix::errno::Errno::ENXIO) => break, // only a hole remains
            Err(_) => return None,
        };
        if start >= size {
            break;
        }
        let end = match lseek(file, start as i64, Whence::SeekHole) {
            Ok(p) => (p as u64).min(size),
            Err(_) => return None,
        };
        if end <= start {
            return None;
        }
        ranges.push(start..end);
        pos = end;
    }
    Some(ranges)
}

/// How a restore applies ownership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OwnerPolicy {
    /// Change owners at all (only root may).
    pub restore: bool,
    /// Use stored ids, ignoring names.
    pub numeric: bool,
    /// Clear the setuid and setgid bits.
    pub strip_setuid: bool,
}

fn system_time(t: Time) -> SystemTime {
    let nanos = Duration::from_nanos(t.nanos as u64);
    if t.secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(t.secs as u64) + nanos
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(t.secs.unsigned_abs()) + nanos
    }
}

/// The metadata a restore applies to one entry, with owners already
/// resolved to ids (kept small: a restore holds one per pending file).
#[derive(Debug, Clone)]
pub(crate) struct Attrs {
    pub kind: NodeKind,
    pub mode: u32,
    /// (uid, gid) to set, when owners are restored.
    pub owner: Option<(u32, u32)>,
    pub atime: Time,
    pub mtime: Time,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Attrs {
    pub fn of(node: &Node, owners: &Owners, policy: OwnerPolicy) -> Attrs {
        Attrs {
            kind: node.kind,
            mode: if policy.strip_setuid { node.mode & !0o6000 } else { node.mode },
            owner: policy.restore.then(|| owners.ids_for(node, policy.numeric)),
            atime: node.atime,
            mtime: node.mtime,
            xattrs: node.xattrs.clone(),
        }
    }
}

/// Applies owner, mode, xattrs and times to an open regular file, in the
/// order that keeps each: owner first (chown clears setuid), times last.
pub(crate) fn apply_to_file(file: &File, attrs: &Attrs) -> Vec<String> {
    use xattr::FileExt;
    let mut problems = Vec::new();
    if let Some((uid, gid)) = attrs.owner {
        if let Err(e) = std::os::unix::fs::fchown(file, Some(uid), Some(gid)) {
            problems.push(format!("cannot set owner {uid}:{gid}: {e}"));
        }
    }
    if let Err(e) = file.set_permissions(std::fs::Permissions::from_mode(attrs.mode)) {
        problems.push(format!("cannot set mode {:o}: {e}", attrs.mode));
    }
    for (name, value) in &attrs.xattrs {
        if let Err(e) = file.set_xattr(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name), value) {
            problems.push(format!("cannot set extended attribute {}: {e}", String::from_utf8_lossy(name)));
        }
    }
    let times = std::fs::FileTimes::new().set_accessed(system_time(attrs.atime)).set_modified(system_time(attrs.mtime));
    if let Err(e) = file.set_times(times) {
        problems.push(format!("cannot set times: {e}"));
    }
    problems
}

/// Applies owner, mode, xattrs and times to the entry at `path` (a
/// directory, symlink or special file; a symlink's own metadata).
pub(crate) fn apply_to_path(path: &Path, attrs: &Attrs) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some((uid, gid)) = attrs.owner {
        if let Err(e) = std::os::unix::fs::lchown(path, Some(uid), Some(gid)) {
            problems.push(format!("cannot set owner {uid}:{gid}: {e}"));
        }
    }
    if attrs.kind != NodeKind::Symlink {
        if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(attrs.mode)) {
            problems.push(format!("cannot set mode {:o}: {e}", attrs.mode));
        }
    }
    for (name, value) in &attrs.xattrs {
        if let Err(e) = xattr::set(path, <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name), value) {
            problems.push(format!("cannot set extended attribute {}: {e}", String::from_utf8_lossy(name)));
        }
    }
    let atime = TimeSpec::new(attrs.atime.secs, attrs.atime.nanos as i64);
    let mtime = TimeSpec::new(attrs.mtime.secs, attrs.mtime.nanos as i64);
    if let Err(e) =
        nix::sys::stat::utimensat(nix::fcntl::AT_FDCWD, path, &atime, &mtime, UtimensatFlags::NoFollowSymlink)
    {
        problems.push(format!("cannot set times: {e}"));
    }
    problems
}

/// Creates a FIFO or device node at `path`.
pub(crate) fn make_special(path: &Path, node: &Node) -> io::Result<()> {
    use nix::sys::stat::{Mode, SFlag, mknod};
    let kind = match node.kind {
        NodeKind::Fifo => SFlag::S_IFIFO,
        NodeKind::CharDevice => SFlag::S_IFCHR,
        NodeKind::BlockDevice => SFlag::S_IFBLK,
        _ => return Err(io::Error::other(format!("cannot create a {:?} node", node.kind))),
    };
    mknod(path, kind, Mode::from_bits_truncate(node.mode & 0o777), node.rdev).map_err(io::Error::from)
}

/// Whether this process may change file owners.
pub(crate) fn can_chown() -> bool {
    nix::unistd::geteuid().is_root()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_convert_in_both_directions_of_the_epoch() {
        assert_eq!(system_time(Time { secs: 1, nanos: 5 }), SystemTime::UNIX_EPOCH + Duration::new(1, 5));
        assert_eq!(
            system_time(Time { secs: -2, nanos: 500 }),
            SystemTime::UNIX_EPOCH - Duration::from_secs(2) + Duration::from_nanos(500)
        );
    }

    #[test]
    fn holes_are_found() {
        use std::io::{Seek, SeekFrom, Write};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sparse");
        let mut f = File::create(&path).unwrap();
        f.seek(SeekFrom::Start(8 << 20)).unwrap();
        f.write_all(&[1; 4096]).unwrap();
        f.set_len(16 << 20).unwrap();
        let f = File::open(&path).unwrap();
        let meta = f.metadata().unwrap();
        match data_ranges(&f, &meta) {
            // Filesystems report data at block granularity.
            Some(ranges) => assert_eq!(ranges, vec![(8 << 20)..(8 << 20) + 4096]),
            None => eprintln!("this filesystem does not report holes"),
        }
    }
}
