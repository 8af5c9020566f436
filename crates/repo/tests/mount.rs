//! The mount's file system, called directly (no `/dev/fuse`): the
//! directories above the snapshots, lookups, attributes, links, xattrs,
//! reads at any offset, new snapshots appearing, and a crafted tree.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use cairn_repo::{
    Backend, FileOptions, FsError, MountOptions, OpenOptions, ROOT_INODE, Repository, SnapshotFs, SnapshotOptions,
};
use common::{bytes, fast_init};

async fn repository() -> Repository {
    Repository::init(Backend::memory(), b"pw", fast_init(), OpenOptions::default()).await.unwrap()
}

async fn back_up(repo: &Repository, dir: &Path, host: &str, tags: &[&str], time: &str) {
    let options = SnapshotOptions {
        hostname: Some(host.into()),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        time: Some(time.parse().unwrap()),
        ..Default::default()
    };
    let mut session = repo.begin_snapshot(options).await.unwrap();
    session.add_paths(&[dir.to_path_buf()], &FileOptions::default()).await.unwrap();
    session.commit().await.unwrap();
}

fn names(fs: &SnapshotFs, ino: u64) -> Vec<String> {
    fs.readdir(ino).unwrap().into_iter().map(|e| String::from_utf8(e.name).unwrap()).collect()
}

/// The inode at `path` (`a/b/c`) below `ino`.
fn walk(fs: &SnapshotFs, mut ino: u64, path: &str) -> Result<u64, FsError> {
    for name in path.split('/').filter(|n| !n.is_empty()) {
        ino = fs.lookup(ino, name.as_bytes())?.ino;
    }
    Ok(ino)
}

fn read_all(fs: &SnapshotFs, ino: u64, chunk: u32) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let got = fs.read(ino, out.len() as u64, chunk).unwrap();
        if got.is_empty() {
            return out;
        }
        out.extend(got);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_hosts_tags_files_links_and_xattrs() {
    let repo = repository().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    let big = bytes(7, 1_500_000); // many chunks
    std::fs::write(data.join("big.bin"), &big).unwrap();
    std::fs::write(data.join("sub/small.txt"), b"hello\n").unwrap();
    std::fs::write(data.join("empty"), b"").unwrap();
    std::fs::set_permissions(data.join("sub/small.txt"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::symlink("sub/small.txt", data.join("link")).unwrap();
    std::fs::hard_link(data.join("sub/small.txt"), data.join("hard")).unwrap();
    let xattrs = xattr::set(data.join("big.bin"), "user.origin", b"camera").is_ok();
    back_up(&repo, &data, "db1", &["nightly"], "2026-12-04T02:00:00Z").await;
    std::fs::write(data.join("sub/small.txt"), b"changed\n").unwrap();
    back_up(&repo, &data, "web", &[], "2026-12-05T02:00:00Z").await;

    let options = MountOptions { refresh: Duration::ZERO, ..Default::default() };
    let handle = tokio::runtime::Handle::current();
    let fs = SnapshotFs::open(&repo, options, handle).await.unwrap();
    let source = data.clone();
    let fs = tokio::task::spawn_blocking(move || {
        let data = source;
        assert_eq!(names(&fs, ROOT_INODE), ["hosts", "ids", "snapshots", "tags"]);
        let snapshots = walk(&fs, ROOT_INODE, "snapshots").unwrap();
        assert_eq!(names(&fs, snapshots), ["2026-12-04T02:00:00Z", "2026-12-05T02:00:00Z", "latest"]);
        let latest = walk(&fs, snapshots, "latest").unwrap();
        assert_eq!(fs.readlink(latest).unwrap(), b"2026-12-05T02:00:00Z");
        assert_eq!(names(&fs, walk(&fs, ROOT_INODE, "hosts").unwrap()), ["db1", "web"]);
        let tagged = walk(&fs, ROOT_INODE, "tags/nightly").unwrap();
        assert_eq!(names(&fs, tagged), ["2026-12-04T02:00:00Z", "latest"]);
        assert_eq!(fs.parent(tagged).unwrap(), walk(&fs, ROOT_INODE, "tags").unwrap());

        // A snapshot of one directory shows its contents.
        let old = walk(&fs, snapshots, "2026-12-04T02:00:00Z").unwrap();
        let new = walk(&fs, snapshots, "2026-12-05T02:00:00Z").unwrap();
        assert_eq!(names(&fs, new), ["big.bin", "empty", "hard", "link", "sub"]);
        let small_old = walk(&fs, old, "sub/small.txt").unwrap();
        assert_eq!(read_all(&fs, small_old, 4096), b"hello\n");
        assert_eq!(read_all(&fs, walk(&fs, new, "sub/small.txt").unwrap(), 3), b"changed\n");
        // The same name keeps its number; the same path elsewhere has its own.
        assert_eq!(walk(&fs, old, "sub/small.txt").unwrap(), small_old);
        let by_host = walk(&fs, ROOT_INODE, "hosts/db1/2026-12-04T02:00:00Z/sub/small.txt").unwrap();
        assert_ne!(by_host, small_old);
        assert_eq!(read_all(&fs, by_host, 4096), b"hello\n");

        // Attributes as recorded.
        let source = std::fs::metadata(data.join("big.bin")).unwrap();
        let big_ino = walk(&fs, new, "big.bin").unwrap();
        let attr = fs.getattr(big_ino).unwrap();
        assert_eq!((attr.size, attr.mode, attr.uid), (big.len() as u64, source.mode() & 0o7777, source.uid()));
        assert_eq!(attr.mtime.secs, source.mtime());
        assert_eq!(fs.getattr(walk(&fs, old, "sub/small.txt").unwrap()).unwrap().mode, 0o640);
        assert_eq!(fs.getattr(walk(&fs, new, "hard").unwrap()).unwrap().nlink, 2);
        let link = walk(&fs, new, "link").unwrap();
        assert_eq!(fs.readlink(link).unwrap(), b"sub/small.txt");
        assert_eq!(fs.getattr(link).unwrap().size, "sub/small.txt".len() as u64);
        if xattrs {
            assert_eq!(fs.xattr(big_ino, b"user.origin").unwrap(), b"camera");
            assert!(matches!(fs.xattr(big_ino, b"user.none"), Err(FsError::NoAttribute)));
        }

        // Reads at odd offsets and sizes, across chunk boundaries.
        assert_eq!(read_all(&fs, big_ino, 131_072), big);
        for (offset, len) in [(0u64, 1u32), (65_535, 70_000), (1_499_990, 100), (1_500_000, 10), (9_999_999, 1)] {
            let got = fs.read(big_ino, offset, len).unwrap();
            let start = (offset as usize).min(big.len());
            let end = (offset as usize + len as usize).min(big.len());
            assert_eq!(got, big[start..end], "{offset}+{len}");
        }
        assert!(fs.read(walk(&fs, new, "empty").unwrap(), 0, 10).unwrap().is_empty());

        // What is not there, or not that kind of thing.
        assert!(matches!(fs.lookup(new, b"nope"), Err(FsError::NotFound)));
        assert!(matches!(fs.readdir(big_ino), Err(FsError::NotADirectory)));
        assert!(matches!(fs.read(new, 0, 10), Err(FsError::IsADirectory)));
        assert!(matches!(fs.readlink(big_ino), Err(FsError::NotALink)));
        assert!(matches!(fs.getattr(1 << 40), Err(FsError::NotFound)));
        fs
    })
    .await
    .unwrap();

    // A snapshot taken while mounted appears on the next listing.
    back_up(&repo, &data, "web", &["new"], "2026-12-06T02:00:00Z").await;
    tokio::task::spawn_blocking(move || {
        let snapshots = walk(&fs, ROOT_INODE, "snapshots").unwrap();
        assert_eq!(names(&fs, snapshots).len(), 4);
        assert_eq!(fs.readlink(walk(&fs, snapshots, "latest").unwrap()).unwrap(), b"2026-12-06T02:00:00Z");
        let file = walk(&fs, snapshots, "2026-12-06T02:00:00Z/sub/small.txt").unwrap();
        assert_eq!(read_all(&fs, file, 4096), b"changed\n");
        assert_eq!(names(&fs, walk(&fs, ROOT_INODE, "tags").unwrap()), ["new", "nightly"]);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_shows_only_matching_snapshots() {
    let repo = repository().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), b"x").unwrap();
    back_up(&repo, dir.path(), "db1", &[], "2026-12-04T02:00:00Z").await;
    back_up(&repo, dir.path(), "web", &[], "2026-12-05T02:00:00Z").await;
    let filter = cairn_repo::SnapshotFilter { hosts: vec!["web".into()], ..Default::default() };
    let options = MountOptions { filter, ..Default::default() };
    let fs = SnapshotFs::open(&repo, options, tokio::runtime::Handle::current()).await.unwrap();
    tokio::task::spawn_blocking(move || {
        assert_eq!(names(&fs, walk(&fs, ROOT_INODE, "hosts").unwrap()), ["web"]);
        assert_eq!(names(&fs, walk(&fs, ROOT_INODE, "snapshots").unwrap()), ["2026-12-05T02:00:00Z", "latest"]);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_pack_is_an_io_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let location = dir.path().join("repo");
    let options = cairn_repo::BackendOptions { create: true, ..Default::default() };
    let backend = Backend::open(location.to_str().unwrap(), &options).unwrap();
    let repo = Repository::init(backend, b"pw", fast_init(), OpenOptions::default()).await.unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("file"), bytes(3, 200_000)).unwrap();
    back_up(&repo, &data, "h", &[], "2026-12-05T02:00:00Z").await;
    let fs = SnapshotFs::open(&repo, MountOptions::default(), tokio::runtime::Handle::current()).await.unwrap();
    // The file is looked up first (its tree read); then every pack gets a
    // flipped byte in its middle.
    let (fs, file) = tokio::task::spawn_blocking(move || {
        let file = walk(&fs, ROOT_INODE, "snapshots/2026-12-05T02:00:00Z/file").unwrap();
        (fs, file)
    })
    .await
    .unwrap();
    for entry in walk_files(&location.join("data")) {
        let mut bytes = std::fs::read(&entry).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x55;
        std::fs::write(&entry, bytes).unwrap();
    }
    tokio::task::spawn_blocking(move || {
        let err = fs.read(file, 0, 200_000).unwrap_err();
        assert!(matches!(err, FsError::Repository(_)), "{err}");
        assert_eq!(err.errno(), nix::libc::EIO);
    })
    .await
    .unwrap();
}

fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { out.extend(walk_files(&path)) } else { out.push(path) }
    }
    out
}

/// Shows `upper/<file>` for each file of a directory: its lines in
/// capitals, after a header.
struct Upper;

impl cairn_repo::LineConvert for Upper {
    fn prefix(&self) -> Vec<u8> {
        b"HEADER\n".to_vec()
    }
    fn line(&self, line: &[u8], out: &mut Vec<u8>) {
        out.extend(line.to_ascii_uppercase());
        out.push(b'\n');
    }
}

impl cairn_repo::DerivedFiles for Upper {
    fn derive(&self, dir: &cairn_repo::Tree, _: &cairn_repo::TreeLoader) -> Option<cairn_repo::DerivedDir> {
        let files: Vec<cairn_repo::DerivedFile> = dir
            .nodes()
            .iter()
            .filter(|n| n.kind == cairn_repo::NodeKind::File)
            .map(|n| cairn_repo::DerivedFile {
                name: n.name.clone(),
                source: n.clone(),
                convert: std::sync::Arc::new(Upper),
            })
            .collect();
        (!files.is_empty()).then(|| cairn_repo::DerivedDir { name: b"upper".to_vec(), files })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derived_files_read_the_same_at_any_offset() {
    let repo = repository().await;
    let dir = tempfile::tempdir().unwrap();
    // Over two checkpoints' worth of lines of varied length, the last
    // without a newline.
    let text: String = (0..60_000).map(|i| format!("line {i} {}\n", "ab".repeat(i % 37))).collect::<String>() + "tail";
    std::fs::write(dir.path().join("log.txt"), &text).unwrap();
    back_up(&repo, dir.path(), "h", &[], "2026-12-05T02:00:00Z").await;
    let expected = format!("HEADER\n{}\n", text.to_ascii_uppercase()).into_bytes();
    let options = MountOptions { derived: Some(std::sync::Arc::new(Upper)), ..Default::default() };
    let fs = SnapshotFs::open(&repo, options, tokio::runtime::Handle::current()).await.unwrap();
    tokio::task::spawn_blocking(move || {
        let snapshot = walk(&fs, ROOT_INODE, "snapshots/2026-12-05T02:00:00Z").unwrap();
        assert_eq!(names(&fs, snapshot), ["log.txt", "upper"]);
        let file = walk(&fs, snapshot, "upper/log.txt").unwrap();
        let attr = fs.getattr(file).unwrap();
        assert_eq!((attr.size, attr.mode), (expected.len() as u64, 0o444));
        assert_eq!(read_all(&fs, file, 131_072), expected);
        let n = expected.len() as u64;
        for (offset, len) in [(0, 3), (5, 10), (1 << 20, 4096), (n - 3, 100), (n / 2, 2 << 20), (n, 5)] {
            let got = fs.read(file, offset, len as u32).unwrap();
            let (start, end) = (offset.min(n) as usize, (offset + len).min(n) as usize);
            assert_eq!(got, &expected[start..end], "{offset}+{len}");
        }
    })
    .await
    .unwrap();
}
