//! A directory tree with every kind of entry and metadata cairn must keep,
//! and a comparison of two trees by everything `lstat` and `llistxattr` see.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{Mode, SFlag, UtimensatFlags, mknod, utimensat};
use nix::sys::time::TimeSpec;

/// What the fixture could create on this machine.
pub struct Fixture {
    pub root: PathBuf,
    pub xattrs: bool,
    pub devices: bool,
    pub owners: bool,
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Deterministic pseudo-random bytes.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn set_times(path: &Path, atime: (i64, i64), mtime: (i64, i64)) {
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &TimeSpec::new(atime.0, atime.1),
        &TimeSpec::new(mtime.0, mtime.1),
        UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

/// Builds the fixture under `root` (which must not exist).
pub fn build(root: &Path) -> Fixture {
    let p = |rel: &str| root.join(rel);
    std::fs::create_dir_all(p("docs/empty-dir")).unwrap();
    std::fs::create_dir_all(p("bin")).unwrap();
    std::fs::write(p("docs/readme.txt"), "hello cairn\n").unwrap();
    std::fs::write(p("docs/empty"), "").unwrap();
    // Larger than the smallest chunk: several chunks.
    std::fs::write(p("docs/big.bin"), noise(1, 3_500_000)).unwrap();
    let text: String = (0..40_000).map(|i| format!("line {i} of a log with id {}\n", i * 7919 % 1000)).collect();
    std::fs::write(p("docs/log.txt"), text).unwrap();
    // Names that are not UTF-8, kept byte for byte.
    std::fs::write(root.join(OsStr::from_bytes(b"docs/caf\xe9-latin1.txt")), "latin-1 name").unwrap();
    std::fs::write(p("docs/spaces and\ttabs"), "odd name").unwrap();
    // Symlinks, one with a target that is not UTF-8 and dangles.
    std::os::unix::fs::symlink("readme.txt", p("docs/link")).unwrap();
    std::os::unix::fs::symlink(OsStr::from_bytes(b"../nowhere/\xff\xfe"), p("docs/dangling")).unwrap();
    // Hard links: three names for one file.
    std::fs::write(p("docs/hard-a"), noise(2, 10_000)).unwrap();
    std::fs::hard_link(p("docs/hard-a"), p("docs/hard-b")).unwrap();
    std::fs::hard_link(p("docs/hard-a"), p("bin/hard-c")).unwrap();
    // A FIFO.
    nix::unistd::mkfifo(&p("docs/pipe"), Mode::from_bits_truncate(0o640)).unwrap();
    // Modes with setuid, setgid and sticky.
    std::fs::write(p("bin/tool"), "#!/bin/sh\necho tool\n").unwrap();
    std::fs::set_permissions(p("bin/tool"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::write(p("bin/group-tool"), "x").unwrap();
    std::fs::set_permissions(p("bin/group-tool"), std::fs::Permissions::from_mode(0o2750)).unwrap();
    std::fs::create_dir(p("bin/sticky")).unwrap();
    std::fs::set_permissions(p("bin/sticky"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::write(p("bin/private"), "secret").unwrap();
    std::fs::set_permissions(p("bin/private"), std::fs::Permissions::from_mode(0o600)).unwrap();
    // A sparse file: 64 MiB with 4 KiB of data in the middle and at the end.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(p("docs/sparse.img")).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(&noise(3, 4096), 20 << 20).unwrap();
        f.write_all_at(&noise(4, 4096), (64 << 20) - 4096).unwrap();
        let g = std::fs::File::create(p("docs/sparse-tail")).unwrap();
        g.write_all_at(b"head", 0).unwrap();
        g.set_len(32 << 20).unwrap();
    }
    // A deep tree.
    let mut deep = p("deep");
    for i in 0..60 {
        deep.push(format!("level-{i}"));
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("bottom.txt"), "deep").unwrap();
    // Extended attributes (user.* may be unsupported on some filesystems).
    let xattrs = xattr::set(p("docs/readme.txt"), "user.comment", b"kept\0binary\xff").is_ok()
        && xattr::set(p("docs/empty-dir"), "user.dir", b"on a directory").is_ok();
    // Device nodes and foreign owners need root (and CAP_MKNOD).
    let devices = is_root()
        && mknod(&p("docs/null-dev"), SFlag::S_IFCHR, Mode::from_bits_truncate(0o666), nix::sys::stat::makedev(1, 3))
            .is_ok()
        && mknod(&p("docs/block-dev"), SFlag::S_IFBLK, Mode::from_bits_truncate(0o600), nix::sys::stat::makedev(7, 0))
            .is_ok();
    let owners = is_root()
        && std::os::unix::fs::lchown(p("docs/readme.txt"), Some(4321), Some(8765)).is_ok()
        && std::os::unix::fs::lchown(p("docs/link"), Some(4322), Some(8766)).is_ok();
    // Times to the nanosecond; atimes recent enough that reading does not
    // move them (relatime), mtimes old.
    let now = jiff::Timestamp::now().as_second();
    for rel in ["docs/readme.txt", "docs/big.bin", "docs/hard-a", "bin/tool", "docs/sparse.img", "docs/link"] {
        set_times(&p(rel), (now - 3600, 123_456_789), (981_173_106, 987_654_321));
    }
    // List every directory once, so listing again does not move their atimes.
    let _ = manifest(root);
    Fixture { root: root.to_owned(), xattrs, devices, owners }
}

/// Everything about one entry that a restore must reproduce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: (i64, i64),
    pub atime: Option<(i64, i64)>,
    pub rdev: u64,
    pub target: Vec<u8>,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Index of the hard-link group (files with more than one link).
    pub link_group: Option<usize>,
    pub blocks: u64,
}

/// Entries by path relative to `root`, from `lstat` only (directory atimes
/// are taken before the directory is listed).
pub fn manifest(root: &Path) -> BTreeMap<Vec<u8>, Entry> {
    let mut out = BTreeMap::new();
    let mut groups: HashMap<(u64, u64), usize> = HashMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let mut names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        for name in names {
            let rel_child = rel.join(&name);
            let path = root.join(&rel_child);
            let m = std::fs::symlink_metadata(&path).unwrap();
            let t = m.file_type();
            let kind = if t.is_dir() {
                "dir"
            } else if t.is_symlink() {
                "symlink"
            } else if t.is_fifo() {
                "fifo"
            } else if t.is_char_device() {
                "char"
            } else if t.is_block_device() {
                "block"
            } else {
                "file"
            };
            let link_group = (kind == "file" && m.nlink() > 1).then(|| {
                let n = groups.len();
                *groups.entry((m.dev(), m.ino())).or_insert(n)
            });
            let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = xattr::list(&path)
                .map(|names| {
                    names.filter_map(|n| Some((n.as_bytes().to_vec(), xattr::get(&path, &n).ok()??))).collect()
                })
                .unwrap_or_default();
            xattrs.sort();
            out.insert(
                rel_child.as_os_str().as_bytes().to_vec(),
                Entry {
                    kind,
                    mode: m.mode() & 0o7777,
                    uid: m.uid(),
                    gid: m.gid(),
                    size: if kind == "file" { m.size() } else { 0 },
                    mtime: (m.mtime(), m.mtime_nsec()),
                    // A symlink's atime moves whenever it is followed; not compared.
                    atime: (kind != "symlink").then_some((m.atime(), m.atime_nsec())),
                    rdev: m.rdev(),
                    target: if kind == "symlink" {
                        std::fs::read_link(&path).unwrap().into_os_string().into_vec_compat()
                    } else {
                        Vec::new()
                    },
                    xattrs,
                    link_group,
                    blocks: m.blocks(),
                },
            );
            if kind == "dir" {
                stack.push(rel_child);
            }
        }
    }
    out
}

/// Reads a file without moving its access time (the owner and root may).
fn read_noatime(path: &Path) -> Vec<u8> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOATIME)
        .open(path)
        .or_else(|_| std::fs::File::open(path))
        .unwrap();
    let mut out = Vec::new();
    f.read_to_end(&mut out).unwrap();
    out
}

trait IntoVecCompat {
    fn into_vec_compat(self) -> Vec<u8>;
}

impl IntoVecCompat for std::ffi::OsString {
    fn into_vec_compat(self) -> Vec<u8> {
        std::os::unix::ffi::OsStringExt::into_vec(self)
    }
}

/// Asserts that `restored` has exactly the entries of `source` with the same
/// metadata (sparse files may not take more space than in the source, plus
/// one block) and the same content.
pub fn assert_same_tree(source: &Path, restored: &Path) {
    let a = manifest(source);
    let b = manifest(restored);
    let names = |m: &BTreeMap<Vec<u8>, Entry>| -> Vec<String> {
        m.keys().map(|k| String::from_utf8_lossy(k).into_owned()).collect()
    };
    assert_eq!(names(&a), names(&b), "the restored tree has different entries");
    for (path, x) in &a {
        let y = &b[path];
        let shown = String::from_utf8_lossy(path);
        let (mut x, mut y) = (x.clone(), y.clone());
        assert!(y.blocks <= x.blocks + 8, "{shown}: {} blocks restored, {} in the source", y.blocks, x.blocks);
        x.blocks = 0;
        y.blocks = 0;
        assert_eq!(x, y, "{shown} differs");
    }
    // Content last: reading moves atimes.
    for (path, x) in &a {
        if x.kind == "file" {
            let rel = OsStr::from_bytes(path);
            let (p, q) = (read_noatime(&source.join(rel)), read_noatime(&restored.join(rel)));
            assert!(p == q, "{} has different content", String::from_utf8_lossy(path));
        }
    }
}
