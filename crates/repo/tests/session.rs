//! Snapshot sessions: several kinds of sources in one snapshot, what a
//! commit refuses, failures that publish nothing, dry runs and parents.

mod common;

use std::path::Path;

use cairn_repo::{
    Backend, CheckSubset, EntryMeta, Error, FileKind, FileOptions, OpenOptions, ParentChoice, PruneOptions, Repository,
    SnapshotOptions, Source, SourceContext,
};
use common::{bytes, fast_init};

async fn repository() -> Repository {
    Repository::init(Backend::memory(), b"pw", fast_init(), OpenOptions::default()).await.unwrap()
}

/// A source that adds the given files, or fails after storing some bytes.
struct Files {
    files: Vec<(&'static str, Vec<u8>)>,
    fail: bool,
}

#[async_trait::async_trait]
impl Source for Files {
    type Error = Error;
    async fn back_up(&mut self, into: &SourceContext) -> Result<(), Error> {
        for (path, data) in &self.files {
            let content = into.store_bytes(data.clone()).await?;
            into.add_file(path, content, &EntryMeta::file())?;
        }
        if self.fail {
            return Err(Error::InvalidArgument("the source broke off".into()));
        }
        into.add_snapshot_path("/files");
        into.add_tag("custom");
        into.set_metadata("files", serde_json::json!(self.files.len()));
        Ok(())
    }
}

fn tree_with_files(dir: &Path) {
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("a.bin"), bytes(1, 300_000)).unwrap();
    std::fs::write(dir.join("sub/b.txt"), b"hello").unwrap();
}

async fn check_clean(repo: &Repository) {
    let report = cairn_repo::check(repo, Some(CheckSubset::All)).await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_snapshot_of_paths_a_stream_and_a_source() {
    let repo = repository().await;
    let dir = tempfile::tempdir().unwrap();
    tree_with_files(&dir.path().join("tree"));
    let options = SnapshotOptions { tags: vec!["b".into(), "a".into(), "a".into()], ..Default::default() };
    let mut session = repo.begin_snapshot(options).await.unwrap();
    session.add_paths(&[dir.path().join("tree")], &FileOptions::default()).await.unwrap();
    session.add_stream("dump.sql", Box::new(std::io::Cursor::new(bytes(2, 500_000)))).await.unwrap();
    let shared = bytes(3, 200_000);
    let mut source = Files { files: vec![("files/x/y.bin", shared), ("files/z.txt", b"zzz".to_vec())], fail: false };
    session.add_source(&mut source).await.unwrap();
    let committed = session.commit().await.unwrap();

    let id = committed.id.expect("an id");
    let snapshot = repo.read_snapshot(&id).await.unwrap();
    assert_eq!(snapshot, committed.snapshot);
    assert_eq!(snapshot.tags, ["a", "b", "custom"]);
    let tree_path = dir.path().join("tree").display().to_string();
    assert_eq!(snapshot.paths, [tree_path.as_str(), "/dump.sql", "/files"]);
    assert_eq!(snapshot.extra["files"], 2);
    let s = &committed.summary;
    assert_eq!((s.files_new, s.dirs), (2 + 1 + 2, 2 + 2), "{s:?}");
    assert_eq!(s.total_bytes, 300_000 + 5 + 500_000 + 200_000 + 3);
    check_clean(&repo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_source_publishes_nothing() {
    let repo = repository().await;
    let mut session = repo.begin_snapshot(SnapshotOptions::default()).await.unwrap();
    let mut source = Files { files: vec![("f", bytes(4, 100_000))], fail: true };
    let err = session.add_source(&mut source).await.unwrap_err();
    assert!(err.to_string().contains("broke off"), "{err}");
    let err = session.commit().await.unwrap_err();
    assert!(matches!(err, Error::WriteSessionFailed(_)), "{err}");
    assert!(repo.list_snapshots().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_refuses_an_empty_snapshot_and_clashing_names() {
    let repo = repository().await;
    let session = repo.begin_snapshot(SnapshotOptions::default()).await.unwrap();
    let err = session.commit().await.unwrap_err();
    assert!(err.to_string().contains("nothing was added"), "{err}");

    let mut session = repo.begin_snapshot(SnapshotOptions::default()).await.unwrap();
    session.add_stream("same", Box::new(std::io::Cursor::new(b"one".to_vec()))).await.unwrap();
    session.add_stream("same", Box::new(std::io::Cursor::new(b"two".to_vec()))).await.unwrap();
    let err = session.commit().await.unwrap_err();
    assert!(err.to_string().contains("clash") && err.to_string().contains("same"), "{err}");
    assert!(repo.list_snapshots().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_cannot_add_invalid_paths_or_a_file_twice() {
    let repo = repository().await;
    for (files, expected) in [
        (vec![("../escape", b"x".to_vec())], "cannot be a path"),
        (vec![("a//b", b"x".to_vec())], "cannot be a path"),
        (vec![("a", b"x".to_vec()), ("a", b"y".to_vec())], "added twice"),
        (vec![("a", b"x".to_vec()), ("a/b", b"y".to_vec())], "is a file"),
    ] {
        let mut session = repo.begin_snapshot(SnapshotOptions::default()).await.unwrap();
        let err = session.add_source(&mut Files { files, fail: false }).await.unwrap_err();
        assert!(err.to_string().contains(expected), "{err} lacks {expected:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_counts_and_writes_nothing() {
    let repo = repository().await;
    let options = SnapshotOptions { dry_run: true, ..Default::default() };
    let mut session = repo.begin_snapshot(options).await.unwrap();
    session.add_stream("s", Box::new(std::io::Cursor::new(bytes(5, 400_000)))).await.unwrap();
    let committed = session.commit().await.unwrap();
    assert_eq!(committed.id, None);
    assert!(committed.summary.bytes_added > 0);
    assert!(repo.list_snapshots().await.unwrap().is_empty());
    assert_eq!(repo.load_index().await.unwrap().blob_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_parent_is_the_latest_of_the_same_paths_unless_told_otherwise() {
    let repo = repository().await;
    let dir = tempfile::tempdir().unwrap();
    tree_with_files(dir.path());
    let backup = |parent: ParentChoice| {
        let (repo, path) = (repo.clone(), dir.path().to_owned());
        async move {
            let mut session = repo.begin_snapshot(SnapshotOptions { parent, ..Default::default() }).await.unwrap();
            session.add_paths(&[path], &FileOptions::default()).await.unwrap();
            session.commit().await.unwrap()
        }
    };
    let first = backup(ParentChoice::Latest).await;
    assert_eq!((first.snapshot.parent, first.summary.files_new), (None, 2));
    let second = backup(ParentChoice::Latest).await;
    assert_eq!(second.snapshot.parent, first.id);
    assert_eq!((second.summary.files_unchanged, second.summary.bytes_read), (2, 0));
    let forced = backup(ParentChoice::None).await;
    assert_eq!((forced.snapshot.parent, forced.summary.files_new), (None, 2));
    let prefix = first.id.unwrap().to_hex()[..8].to_owned();
    let named = backup(ParentChoice::Snapshot(prefix)).await;
    assert_eq!(named.snapshot.parent, first.id);
    check_clean(&repo).await;
}

/// A parent snapshot can be forgotten and pruned between the moment a
/// backup lists it and the moment it reads its trees (a prune running
/// beside the nightly job). The parent only saves reading: the backup
/// reads every file and publishes a complete snapshot without a parent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_whose_trees_were_pruned_is_read_in_full() {
    let options = OpenOptions { minimum_grace: std::time::Duration::ZERO, ..Default::default() };
    let repo = Repository::init(Backend::memory(), b"pw", fast_init(), options).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    tree_with_files(dir.path());
    let backup = || {
        let (repo, path) = (repo.clone(), dir.path().to_owned());
        async move {
            let mut session = repo.begin_snapshot(SnapshotOptions::default()).await.unwrap();
            session.add_paths(&[path], &FileOptions::default()).await.unwrap();
            session.commit().await.unwrap()
        }
    };
    let first = backup().await;
    let id = first.id.unwrap();
    // The snapshot file as it was listed, then forgotten and pruned.
    let listed = repo.backend().read(FileKind::Snapshot, &id).await.unwrap();
    repo.forget_snapshot(&id).await.unwrap();
    let prune_now = PruneOptions { grace: std::time::Duration::ZERO, ..Default::default() };
    let report = cairn_repo::prune(&repo, &prune_now, &|_| {}).await.unwrap();
    assert!(report.packs_marked > 0, "{report:?}");
    // What the backup still sees: a listed snapshot whose trees are gone.
    repo.backend().write_new(FileKind::Snapshot, &id, vec![listed]).await.unwrap();

    let second = backup().await;
    assert_eq!((second.snapshot.parent, second.summary.files_new, second.summary.files_unchanged), (None, 2, 0));
    repo.forget_snapshot(&id).await.unwrap();
    check_clean(&repo).await;
}

/// Stores `data` as `blocks/f` cut into fixed 16 KiB blocks.
struct Blocks {
    data: Vec<u8>,
}

#[async_trait::async_trait]
impl Source for Blocks {
    type Error = Error;
    async fn back_up(&mut self, into: &SourceContext) -> Result<(), Error> {
        let content = into.store_in_background(std::io::Cursor::new(self.data.clone()), Some(16384)).await?;
        into.add_file("blocks/f", content, &EntryMeta::file())?;
        into.add_snapshot_path("/blocks");
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_blocks_store_a_changed_page_alone_and_zero_blocks_as_holes() {
    use std::io::Read;
    let repo = repository().await;
    // 10 blocks of noise, 3 zero blocks, then a short tail.
    let mut data = bytes(7, 10 * 16384);
    data.extend(vec![0u8; 3 * 16384]);
    data.extend(bytes(8, 1000));
    let mut session = repo.begin_snapshot(SnapshotOptions::default()).await.unwrap();
    session.add_source(&mut Blocks { data: data.clone() }).await.unwrap();
    let first = session.commit().await.unwrap();

    let loader = cairn_repo::TreeLoader::new(
        &repo,
        std::sync::Arc::new(repo.load_index().await.unwrap()),
        tokio::runtime::Handle::current(),
    );
    let node = tokio::task::block_in_place(|| loader.resolve(&first.snapshot, "/blocks/f")).unwrap();
    let lengths: Vec<(bool, u64)> =
        node.content.iter().map(|e| (matches!(e, cairn_repo::Extent::Hole { .. }), e.len())).collect();
    let mut expected = vec![(false, 16384); 10];
    expected.push((true, 3 * 16384));
    expected.push((false, 1000));
    assert_eq!(lengths, expected);
    let mut back = Vec::new();
    tokio::task::block_in_place(|| loader.content(&node).read_to_end(&mut back)).unwrap();
    assert_eq!(back, data);

    // One 8 KiB page rewritten in place: one new block is stored.
    let mut changed = data.clone();
    changed[5 * 16384 + 8192..5 * 16384 + 16384].copy_from_slice(&bytes(9, 8192));
    let mut session = repo.begin_snapshot(SnapshotOptions::default()).await.unwrap();
    session.add_source(&mut Blocks { data: changed }).await.unwrap();
    let second = session.commit().await.unwrap();
    let added = second.summary.bytes_added;
    assert!(added < 16384 + 4096, "one changed page stored {added} bytes");
    check_clean(&repo).await;
}

/// Stores the same bytes twice: from memory (`store_buffer`) and as a
/// stream (`store_in_background`), and tells the summary its counts.
struct Twice {
    data: Vec<u8>,
}

#[async_trait::async_trait]
impl Source for Twice {
    type Error = Error;
    async fn back_up(&mut self, into: &SourceContext) -> Result<(), Error> {
        let buffered = into.store_buffer(bytes::Bytes::from(self.data.clone())).await?;
        let streamed = into.store_in_background(std::io::Cursor::new(self.data.clone()), None).await?;
        into.add_file("twice/buffered", buffered, &EntryMeta::file())?;
        into.add_file("twice/streamed", streamed, &EntryMeta::file())?;
        into.count_files(1, 0, 1);
        into.add_snapshot_path("/twice");
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_in_memory_are_cut_as_a_stream_and_sources_set_their_counts() {
    let repo = repository().await;
    let data = bytes(11, 5_000_000);
    let mut session = repo.begin_snapshot(SnapshotOptions::default()).await.unwrap();
    session.add_source(&mut Twice { data: data.clone() }).await.unwrap();
    let committed = session.commit().await.unwrap();
    let s = &committed.summary;
    assert_eq!((s.files_new, s.files_changed, s.files_unchanged), (1, 0, 1));
    // Both copies were read and chunked; only one was stored.
    assert_eq!(s.bytes_read, 2 * data.len() as u64);
    assert!(s.bytes_added < data.len() as u64 * 11 / 10, "{}", s.bytes_added);

    let loader = cairn_repo::TreeLoader::new(
        &repo,
        std::sync::Arc::new(repo.load_index().await.unwrap()),
        tokio::runtime::Handle::current(),
    );
    let node = |path: &str| tokio::task::block_in_place(|| loader.resolve(&committed.snapshot, path)).unwrap();
    let (buffered, streamed) = (node("/twice/buffered"), node("/twice/streamed"));
    assert!(buffered.content.len() > 2, "several chunks: {}", buffered.content.len());
    assert_eq!(buffered.content, streamed.content);
    check_clean(&repo).await;
}
