//! The FUSE adapter: each kernel call becomes a call of [`SnapshotFs`],
//! its answer a reply. Nothing here decides anything.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner, MountOption,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyXattr, Request,
};

use super::fs::{Attr, FsError, SnapshotFs};
use crate::format::tree::{NodeKind, Time};

/// How long the kernel may keep attributes and names: snapshots never
/// change, but the virtual directories do when new snapshots arrive.
const TTL: Duration = Duration::from_secs(1);

/// A mounted file system, unmounted when dropped.
pub struct Mount {
    session: Option<fuser::BackgroundSession>,
}

impl Mount {
    /// Whether the file system is still mounted (someone may have run
    /// `fusermount3 -u` or `umount`).
    pub fn is_mounted(&self) -> bool {
        self.session.as_ref().is_some_and(|s| !s.guard.is_finished())
    }

    /// Unmounts and waits for the serving threads.
    pub fn unmount(mut self) -> std::io::Result<()> {
        match self.session.take() {
            Some(session) if !session.guard.is_finished() => session.umount_and_join(),
            Some(session) => session.join(),
            None => Ok(()),
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            let _ = session.umount_and_join();
        }
    }
}

/// Mounts `fs` read-only at `mountpoint`, served by a few threads, until
/// the returned [`Mount`] is dropped or unmounted. `allow_other` lets
/// other users in (it needs `user_allow_other` in `/etc/fuse.conf` unless
/// root mounts).
///
/// A mountpoint inside a local repository is refused: reading the mount
/// would read the repository through itself, which deadlocks.
pub fn mount(fs: SnapshotFs, mountpoint: &Path, allow_other: bool) -> crate::Result<Mount> {
    let refuse = |message: String| crate::Error::InvalidArgument(message);
    let meta = std::fs::metadata(mountpoint)
        .map_err(|e| refuse(format!("mountpoint {}: {e}; create an empty directory", mountpoint.display())))?;
    if !meta.is_dir() {
        return Err(refuse(format!("mountpoint {} is not a directory", mountpoint.display())));
    }
    if let Some(repo_dir) = fs.repository().backend().local_dir() {
        let (point, repo_dir) = (std::fs::canonicalize(mountpoint), std::fs::canonicalize(repo_dir));
        if let (Ok(point), Ok(repo_dir)) = (point, repo_dir) {
            if point.starts_with(&repo_dir) {
                return Err(refuse(format!(
                    "mountpoint {} is inside the repository {}: mount it elsewhere",
                    point.display(),
                    repo_dir.display()
                )));
            }
        }
    }
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::FSName("cairn".into()),
        MountOption::Subtype("cairn".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    if allow_other {
        config.acl = fuser::SessionACL::All;
    }
    // Reads block on the repository: a few threads keep the kernel's
    // read-ahead and a second reader going while one waits.
    config.n_threads = Some(4);
    let session = fuser::spawn_mount(Adapter { fs: Arc::new(fs) }, mountpoint, &config).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound || e.kind() == std::io::ErrorKind::PermissionDenied {
            " (FUSE needs /dev/fuse and, when not root, fusermount3: apt install fuse3)"
        } else {
            ""
        };
        refuse(format!("cannot mount at {}: {e}{hint}", mountpoint.display()))
    })?;
    Ok(Mount { session: Some(session) })
}

struct Adapter {
    fs: Arc<SnapshotFs>,
}

fn errno(e: &FsError) -> Errno {
    Errno::from_i32(e.errno())
}

fn file_type(kind: NodeKind) -> FileType {
    match kind {
        NodeKind::File => FileType::RegularFile,
        NodeKind::Dir => FileType::Directory,
        NodeKind::Symlink => FileType::Symlink,
        NodeKind::Fifo => FileType::NamedPipe,
        NodeKind::CharDevice => FileType::CharDevice,
        NodeKind::BlockDevice => FileType::BlockDevice,
        NodeKind::Socket => FileType::Socket,
    }
}

fn system_time(t: Time) -> SystemTime {
    let nanos = Duration::from_nanos(u64::from(t.nanos));
    if t.secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(t.secs as u64) + nanos
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(t.secs.unsigned_abs())).map_or(UNIX_EPOCH, |t| t + nanos)
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: system_time(a.atime),
        mtime: system_time(a.mtime),
        ctime: system_time(a.ctime),
        crtime: system_time(a.mtime),
        kind: file_type(a.kind),
        perm: (a.mode & 0o7777) as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev as u32,
        blksize: 4096,
        flags: 0,
    }
}

/// Answers an xattr request: the size when `size` is 0, else the bytes
/// if they fit.
fn reply_xattr(reply: ReplyXattr, size: u32, bytes: &[u8]) {
    if size == 0 {
        reply.size(bytes.len() as u32);
    } else if bytes.len() <= size as usize {
        reply.data(bytes);
    } else {
        reply.error(Errno::from_i32(nix::libc::ERANGE));
    }
}

impl Filesystem for Adapter {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.fs.lookup(parent.0, name.as_bytes()) {
            Ok(attr) => reply.entry(&TTL, &file_attr(&attr), Generation(0)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino.0) {
            Ok(attr) => reply.attr(&TTL, &file_attr(&attr)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fs.readlink(ino.0) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // Content never changes under an inode: the page cache may keep it.
        match self.fs.getattr(ino.0) {
            Ok(attr) if attr.kind == NodeKind::File => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Ok(_) => reply.error(Errno::from_i32(nix::libc::EACCES)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        // Nothing is ever written: nothing to flush.
        reply.ok();
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        // The reply is sent from inside: the bytes need not be copied out
        // of the blob cache first.
        let mut reply = Some(reply);
        let sent = self.fs.read_with(ino.0, offset, size, |bytes| {
            if let Some(reply) = reply.take() {
                reply.data(bytes);
            }
        });
        if let (Err(e), Some(reply)) = (sent, reply) {
            reply.error(errno(&e));
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let entries = match self.fs.readdir(ino.0) {
            Ok(entries) => entries,
            Err(e) => return reply.error(errno(&e)),
        };
        let parent = self.fs.parent(ino.0).unwrap_or(ino.0);
        let dots = [(ino.0, FileType::Directory, b".".as_slice()), (parent, FileType::Directory, b"..".as_slice())];
        let all = dots.into_iter().chain(entries.iter().map(|e| (e.ino, file_type(e.kind), e.name.as_slice())));
        // The offset the kernel sends back is the number of entries it has.
        for (i, (ino, kind, name)) in all.enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), i as u64 + 1, kind, OsStr::from_bytes(name)) {
                break;
            }
        }
        reply.ok();
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.fs.xattr(ino.0, name.as_bytes()) {
            Ok(value) => reply_xattr(reply, size, &value),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.fs.xattrs(ino.0) {
            Ok(list) => {
                let names: Vec<u8> = list.iter().flat_map(|(n, _)| n.iter().copied().chain([0])).collect();
                reply_xattr(reply, size, &names);
            }
            Err(e) => reply.error(errno(&e)),
        }
    }
}
