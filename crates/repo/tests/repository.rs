//! Repository-level tests: keys, writing and reading, corruption of every
//! object kind, publish order under failures, retries.

mod common;
mod faulty;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cairn_repo::testing::Writer;
use cairn_repo::{
    Backend, BackendKind, BackendOptions, BlobType, DataId, Error, FileKind, Id, KeyKind, KeyOptions, OpenOptions,
    Repository, RetryPolicy, Snapshot, SnapshotId, TreeId,
};
use common::{bytes, fast_init};
use faulty::{Fault, FaultyStore, Rule};
use object_store::memory::InMemory;

fn fast_key(kind: KeyKind) -> KeyOptions {
    KeyOptions { kind, kdf_memory_kib: 8 * 1024, kdf_iterations: 1, ..Default::default() }
}

fn no_cache() -> OpenOptions {
    OpenOptions::default()
}

/// Writes `n` blobs of `size` bytes and a snapshot; returns blob ids and data.
async fn write_sample(repo: &Repository, n: u64, size: usize) -> (SnapshotId, Vec<(Id, Vec<u8>)>) {
    let index = Arc::new(repo.load_index().await.unwrap());
    let writer = Writer::new(repo, index).unwrap();
    let mut blobs = Vec::new();
    for i in 0..n {
        let data = bytes(i, size);
        let id = writer.add_blob(if i % 5 == 0 { BlobType::Tree } else { BlobType::Data }, &data).await.unwrap();
        blobs.push((id, data));
    }
    let snapshot = Snapshot::new(TreeId(blobs[0].0), vec!["/sample".into()]);
    let snap_id = writer.commit(&snapshot).await.unwrap();
    (snap_id, blobs)
}

#[tokio::test]
async fn init_open_and_wrong_password() {
    let backend = Backend::memory();
    let repo = Repository::init(backend.clone(), b"pw", fast_init(), no_cache()).await.unwrap();
    let again = Repository::open(backend.clone(), b"pw", no_cache()).await.unwrap();
    assert_eq!(again.id(), repo.id());
    assert_eq!(again.config(), repo.config());
    let err = Repository::open(backend.clone(), b"nope", no_cache()).await.unwrap_err();
    assert!(matches!(err, Error::WrongPassword { tried: 1, .. }), "{err}");
    assert!(err.to_string().starts_with("wrong password"), "{err}");
}

#[tokio::test]
async fn missing_repository_is_named() {
    let err = Repository::open(Backend::memory(), b"pw", no_cache()).await.unwrap_err();
    assert!(matches!(err, Error::RepositoryNotFound { .. }), "{err}");
    // The library knows no commands: `cairn init` is the CLI's hint (tests/cli.rs).
    assert!(err.to_string().starts_with("no repository at") && !err.to_string().contains("cairn"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here");
    let err = Backend::open(missing.to_str().unwrap(), &BackendOptions::default()).unwrap_err();
    assert!(matches!(err, Error::RepositoryNotFound { .. }), "{err}");
}

#[tokio::test]
async fn init_refuses_an_existing_repository_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let loc = dir.path().join("repo");
    let opts = BackendOptions { create: true, ..Default::default() };
    let backend = Backend::open(loc.to_str().unwrap(), &opts).unwrap();
    Repository::init(backend.clone(), b"pw", fast_init(), no_cache()).await.unwrap();
    let before = tree_listing(&loc);
    let err = Repository::init(backend.clone(), b"other", fast_init(), no_cache()).await.unwrap_err();
    assert!(matches!(err, Error::RepositoryExists { .. }), "{err}");
    assert_eq!(tree_listing(&loc), before);
    Repository::open(backend, b"pw", no_cache()).await.unwrap();
}

#[tokio::test]
async fn concurrent_inits_create_one_repository() {
    let backend = Backend::memory();
    let (a, b) = tokio::join!(
        Repository::init(backend.clone(), b"a", fast_init(), no_cache()),
        Repository::init(backend.clone(), b"b", fast_init(), no_cache())
    );
    assert!(a.is_ok() != b.is_ok(), "exactly one init must win");
    let winner: &[u8] = if a.is_ok() { b"a" } else { b"b" };
    let repo = Repository::open(backend.clone(), winner, no_cache()).await.unwrap();
    assert_eq!(repo.list_keys().await.unwrap().len(), 1, "the loser's key file was removed");
}

fn tree_listing(root: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.strip_prefix(root).unwrap().display().to_string(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn keys_add_list_remove_passwd() {
    let backend = Backend::memory();
    let repo = Repository::init(backend.clone(), b"first", fast_init(), no_cache()).await.unwrap();
    let second = repo.add_key(b"second", fast_key(KeyKind::Full)).await.unwrap();
    let put = repo.add_key(b"put", fast_key(KeyKind::PutOnly)).await.unwrap();
    let keys = repo.list_keys().await.unwrap();
    assert_eq!(keys.len(), 3);
    assert_eq!(keys.iter().filter(|k| k.current).count(), 1);
    assert_eq!(keys.iter().find(|k| k.id == put).unwrap().kind, Some(KeyKind::PutOnly));

    let via_second = Repository::open(backend.clone(), b"second", no_cache()).await.unwrap();
    assert_eq!(via_second.key_id(), second);
    // Removing the key in use is refused; removing another works.
    assert!(via_second.remove_key(&second).await.is_err());
    via_second.remove_key(&repo.key_id()).await.unwrap();
    assert!(matches!(Repository::open(backend.clone(), b"first", no_cache()).await, Err(Error::WrongPassword { .. })));
    // The last full key cannot be removed by a put-only session or at all.
    let via_put = Repository::open(backend.clone(), b"put", no_cache()).await.unwrap();
    assert!(via_put.remove_key(&second).await.is_err());
    assert!(via_put.add_key(b"x", fast_key(KeyKind::Full)).await.is_err(), "a put-only key cannot mint a full key");
    // passwd replaces the current key.
    let new_id = via_second.change_password(b"third", fast_key(KeyKind::Full)).await.unwrap();
    let via_third = Repository::open(backend.clone(), b"third", no_cache()).await.unwrap();
    assert_eq!(via_third.key_id(), new_id);
    assert!(Repository::open(backend.clone(), b"second", no_cache()).await.is_err());
    assert!(via_third.remove_key(&new_id).await.is_err(), "the last full key stays");
}

#[tokio::test]
async fn written_blobs_and_snapshots_read_back_and_deduplicate() {
    let dir = tempfile::tempdir().unwrap();
    let loc = dir.path().join("repo");
    let backend = Backend::open(loc.to_str().unwrap(), &BackendOptions { create: true, ..Default::default() }).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let open = OpenOptions { cache_dir: Some(cache.path().to_path_buf()), ..OpenOptions::default() };
    let repo = Repository::init(backend.clone(), b"pw", fast_init(), open.clone()).await.unwrap();
    // 40 blobs of 100 KiB: several 1 MiB packs.
    let (snap_id, blobs) = write_sample(&repo, 40, 100 * 1024).await;

    let repo = Repository::open(backend.clone(), b"pw", open.clone()).await.unwrap();
    let index = repo.load_index().await.unwrap();
    assert_eq!(index.blob_count(), 40);
    assert!(index.packs().len() >= 3, "{} packs", index.packs().len());
    for (id, data) in &blobs {
        assert_eq!(&repo.read_blob(&index, id).await.unwrap(), data);
    }
    // Pack headers agree with the index; data and tree blobs never share a pack.
    let listed: HashSet<Id> = backend.list(FileKind::Pack).await.unwrap().into_iter().map(|(id, _)| id).collect();
    for pack in index.packs() {
        assert!(listed.contains(&pack.id));
        let header = repo.read_pack_header(&pack.id).await.unwrap();
        let types: HashSet<BlobType> = header.entries.iter().map(|e| e.blob_type).collect();
        assert_eq!(types.len(), 1);
        for e in &header.entries {
            let (p, loc) = index.get(&e.id).unwrap();
            assert_eq!((p.id, loc.offset, loc.length), (pack.id, e.offset, e.length));
        }
    }
    let snaps = repo.list_snapshots().await.unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].0, snap_id);
    assert_eq!(*snaps[0].1.tree, blobs[0].0);
    // The cache now holds the index and snapshot; a second load reads it.
    assert!(std::fs::read_dir(repo.cache().unwrap().dir().join("index")).unwrap().count() >= 1);

    // A second session with the same data adds nothing but its snapshot.
    let writer = Writer::new(&repo, Arc::new(index)).unwrap();
    for (_, data) in &blobs {
        writer.add_blob(BlobType::Data, data).await.unwrap();
    }
    writer.commit(&Snapshot::new(TreeId(blobs[0].0), vec!["/sample".into()])).await.unwrap();
    let stats = writer.stats();
    assert_eq!((stats.blobs_added, stats.blobs_deduplicated, stats.packs_written), (0, 40, 0));
    assert_eq!(backend.list(FileKind::Pack).await.unwrap().len(), listed.len());
}

#[tokio::test]
async fn put_only_key_writes_but_cannot_read() {
    let backend = Backend::memory();
    let repo = Repository::init(backend.clone(), b"full", fast_init(), no_cache()).await.unwrap();
    let (first_snapshot, _) = write_sample(&repo, 3, 1000).await;
    repo.add_key(b"put", fast_key(KeyKind::PutOnly)).await.unwrap();

    let put = Repository::open(backend.clone(), b"put", no_cache()).await.unwrap();
    assert_eq!(put.keys().kind(), KeyKind::PutOnly);
    for err in [
        put.load_index().await.unwrap_err(),
        put.read_snapshot(&first_snapshot).await.unwrap_err(),
        put.list_snapshots().await.unwrap_err(),
    ] {
        assert!(matches!(err, Error::PutOnlyKey { .. }), "{err}");
    }
    // It writes with an empty index (its own local state is the file-backup issue's job).
    let writer = Writer::new(&put, Arc::new(Default::default())).unwrap();
    let data = bytes(99, 5000);
    let id = writer.add_blob(BlobType::Data, &data).await.unwrap();
    let snap = writer.commit(&Snapshot::new(TreeId(id), vec!["/put".into()])).await.unwrap();
    assert!(matches!(put.read_snapshot(&snap).await, Err(Error::PutOnlyKey { .. })), "not even its own snapshot");

    let full = Repository::open(backend.clone(), b"full", no_cache()).await.unwrap();
    let index = full.load_index().await.unwrap();
    assert_eq!(full.read_blob(&index, &id).await.unwrap(), data);
    assert_eq!(full.read_snapshot(&snap).await.unwrap().paths, vec!["/put".to_string()]);

    // Index files of put-only sessions are not authenticated: a full writer
    // does not trust them for deduplication and stores its own copy.
    let mut authenticated = Vec::new();
    for (file_id, _) in backend.list(FileKind::Index).await.unwrap() {
        authenticated.push(full.read_index_file(&file_id).await.unwrap().authenticated);
    }
    authenticated.sort();
    assert_eq!(authenticated, vec![false, true], "one file from the full session, one from the put-only one");
    assert!(index.contains(&id) && !index.contains_trusted(&id));
    let writer = Writer::new(&full, Arc::new(index)).unwrap();
    writer.add_blob(BlobType::Data, &data).await.unwrap();
    writer.flush().await.unwrap();
    assert_eq!(writer.stats().blobs_added, 1);
    let index = full.load_index().await.unwrap();
    assert!(index.contains_trusted(&id));
    assert_eq!(full.read_blob(&index, &id).await.unwrap(), data);
}

/// Flips bytes in every stored object of a local repository and checks
/// that reading reports the damaged object by name and never returns wrong
/// data or panics.
#[tokio::test]
async fn a_flipped_byte_in_any_object_is_reported_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let loc = dir.path().join("repo");
    let backend = Backend::open(loc.to_str().unwrap(), &BackendOptions { create: true, ..Default::default() }).unwrap();
    let repo = Repository::init(backend.clone(), b"pw", fast_init(), no_cache()).await.unwrap();
    let (_, blobs) = write_sample(&repo, 6, 3000).await;

    let files: Vec<String> = tree_listing(&loc).into_iter().map(|(name, _)| name).collect();
    assert!(files.iter().any(|f| f.starts_with("data/")) && files.iter().any(|f| f.starts_with("index/")));
    for file in files {
        let path = loc.join(&file);
        let original = std::fs::read(&path).unwrap();
        // Object names as errors show them (packs by their data/xx/id path).
        let object = if file == "config" { "config".to_string() } else { file.clone() };
        let positions: Vec<usize> = (0..original.len()).step_by((original.len() / 23).max(1)).collect();
        for pos in positions {
            let mut damaged = original.clone();
            damaged[pos] ^= 0x20;
            std::fs::write(&path, &damaged).unwrap();
            let outcome = read_everything(&backend, &blobs).await;
            let err = outcome.expect_err(&format!("flipped byte {pos} of {file} went unnoticed"));
            assert!(err.contains(&object), "flipped byte {pos} of {file}: error does not name it: {err}");
        }
        std::fs::write(&path, &original).unwrap();
    }
    read_everything(&backend, &blobs).await.unwrap();
}

async fn read_everything(backend: &Backend, blobs: &[(Id, Vec<u8>)]) -> Result<(), String> {
    let repo = Repository::open(backend.clone(), b"pw", no_cache()).await.map_err(|e| e.to_string())?;
    let index = repo.load_index().await.map_err(|e| e.to_string())?;
    // A damaged snapshot is left out of listings, and named.
    let listing = repo.list_snapshots_with_damage().await.map_err(|e| e.to_string())?;
    if let Some((_, e)) = listing.damaged.first() {
        return Err(e.to_string());
    }
    for pack in index.packs() {
        repo.read_pack_header(&pack.id).await.map_err(|e| e.to_string())?;
    }
    for (id, data) in blobs {
        let got = repo.read_blob(&index, id).await.map_err(|e| e.to_string())?;
        assert_eq!(&got, data, "wrong plaintext returned for blob {id}");
    }
    Ok(())
}

fn faulty_backend() -> (Backend, Arc<FaultyStore>) {
    let store = Arc::new(FaultyStore::new(Arc::new(InMemory::new())));
    let backend = Backend::from_store(store.clone(), "faulty:", BackendKind::Custom).with_retry(RetryPolicy {
        max_retries: 3,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
    });
    (backend, store)
}

#[tokio::test]
async fn transient_errors_are_retried_and_denials_are_not() {
    let (backend, store) = faulty_backend();
    let repo = Repository::init(backend.clone(), b"pw", fast_init(), no_cache()).await.unwrap();
    store.add(Rule { op: "put", path_contains: "data/", fault: Fault::Transient, times: 2 });
    store.add(Rule { op: "get", path_contains: "index/", fault: Fault::Transient, times: 3 });
    let (_, blobs) = write_sample(&repo, 4, 2000).await;
    read_everything(&backend, &blobs).await.unwrap();

    store.clear();
    store.add(Rule { op: "get", path_contains: "config", fault: Fault::Denied, times: usize::MAX });
    let before = store.calls.load(Ordering::SeqCst);
    let err = Repository::open(backend.clone(), b"pw", no_cache()).await.unwrap_err();
    assert_eq!(store.calls.load(Ordering::SeqCst) - before, 1, "a denial must not be retried");
    assert!(matches!(err, Error::AccessDenied { .. }), "{err}");
    assert!(err.to_string().contains("access denied"), "{err}");

    store.clear();
    store.add(Rule { op: "get", path_contains: "config", fault: Fault::Transient, times: usize::MAX });
    let before = store.calls.load(Ordering::SeqCst);
    assert!(Repository::open(backend, b"pw", no_cache()).await.is_err());
    assert_eq!(store.calls.load(Ordering::SeqCst) - before, 4, "1 attempt + 3 retries");
}

#[tokio::test]
async fn a_failed_publish_never_leaves_a_snapshot_without_its_data() {
    let (backend, store) = faulty_backend();
    let repo = Repository::init(backend.clone(), b"pw", fast_init(), no_cache()).await.unwrap();
    let (_, first) = write_sample(&repo, 3, 2000).await;

    // Index writes fail: the commit fails and no snapshot appears.
    store.add(Rule { op: "put", path_contains: "index/", fault: Fault::Denied, times: usize::MAX });
    let writer = Writer::new(&repo, Arc::new(repo.load_index().await.unwrap())).unwrap();
    let id = writer.add_blob(BlobType::Data, &bytes(1000, 5000)).await.unwrap();
    assert!(writer.commit(&Snapshot::new(TreeId(id), vec!["/x".into()])).await.is_err());
    assert_eq!(backend.list(FileKind::Snapshot).await.unwrap().len(), 1);

    // Snapshot writes fail: packs and index are in place, and the earlier
    // snapshot still reads.
    store.clear();
    store.add(Rule { op: "put", path_contains: "snapshots/", fault: Fault::Denied, times: usize::MAX });
    let writer = Writer::new(&repo, Arc::new(repo.load_index().await.unwrap())).unwrap();
    let id = writer.add_blob(BlobType::Data, &bytes(2000, 5000)).await.unwrap();
    assert!(writer.commit(&Snapshot::new(TreeId(id), vec!["/y".into()])).await.is_err());
    store.clear();
    let index = repo.load_index().await.unwrap();
    assert!(index.contains(&id), "the blob was indexed before the snapshot was attempted");
    assert_eq!(repo.list_snapshots().await.unwrap().len(), 1);
    read_everything(&backend, &first).await.unwrap();
}

#[tokio::test]
async fn a_session_that_failed_never_publishes() {
    let (backend, store) = faulty_backend();
    let repo = Repository::init(backend.clone(), b"pw", fast_init(), no_cache()).await.unwrap();
    // Pack uploads are denied: the first commit fails, and so does every
    // later one from the same session, even once storage works again.
    store.add(Rule { op: "put", path_contains: "data/", fault: Fault::Denied, times: usize::MAX });
    let writer = Writer::new(&repo, Arc::new(Default::default())).unwrap();
    let id = writer.add_blob(BlobType::Data, &bytes(5, 4000)).await.unwrap();
    assert!(writer.commit(&Snapshot::new(TreeId(id), vec!["/a".into()])).await.is_err());
    store.clear();
    let err = writer.commit(&Snapshot::new(TreeId(id), vec!["/a".into()])).await.unwrap_err();
    assert!(matches!(err, Error::WriteSessionFailed(_)), "{err}");
    assert!(writer.add_blob(BlobType::Data, b"more").await.is_err());
    assert!(backend.list(FileKind::Snapshot).await.unwrap().is_empty());

    // A failed index write fails the session for good too.
    store.add(Rule { op: "put", path_contains: "index/", fault: Fault::Denied, times: 1 });
    let writer = Writer::new(&repo, Arc::new(Default::default())).unwrap();
    let id = writer.add_blob(BlobType::Data, &bytes(6, 4000)).await.unwrap();
    assert!(writer.commit(&Snapshot::new(TreeId(id), vec!["/b".into()])).await.is_err());
    assert!(writer.commit(&Snapshot::new(TreeId(id), vec!["/b".into()])).await.is_err());
    assert!(backend.list(FileKind::Snapshot).await.unwrap().is_empty());
}

#[tokio::test]
async fn blobs_over_the_size_limit_are_refused_when_written() {
    let repo = Repository::init(Backend::memory(), b"pw", fast_init(), no_cache()).await.unwrap();
    let writer = Writer::new(&repo, Arc::new(Default::default())).unwrap();
    let big = vec![0u8; cairn_repo::testing::MAX_BLOB_SIZE + 1];
    let err = writer.add_blob(BlobType::Tree, &big).await.unwrap_err();
    assert!(err.to_string().contains("exceeds the limit"), "{err}");
}

#[tokio::test]
async fn init_whose_config_write_landed_but_reply_was_lost_succeeds() {
    let (backend, store) = faulty_backend();
    store.add(Rule { op: "put", path_contains: "config", fault: Fault::LandedButLost, times: 1 });
    let repo = Repository::init(backend.clone(), b"pw", fast_init(), no_cache()).await.unwrap();
    let again = Repository::open(backend, b"pw", no_cache()).await.unwrap();
    assert_eq!(again.id(), repo.id());
}

#[tokio::test]
async fn a_newer_format_version_asks_for_an_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let loc = dir.path().join("repo");
    let backend = Backend::open(loc.to_str().unwrap(), &BackendOptions { create: true, ..Default::default() }).unwrap();
    Repository::init(backend.clone(), b"pw", fast_init(), no_cache()).await.unwrap();
    let path = loc.join("config");
    let mut config = std::fs::read(&path).unwrap();
    config[7] = b'2';
    std::fs::write(&path, config).unwrap();
    let err = Repository::open(backend, b"pw", no_cache()).await.unwrap_err();
    assert!(matches!(err, Error::UnsupportedVersion { found: 2 }), "{err}");
    assert!(err.to_string().contains("Upgrade cairn"), "{err}");
}

/// Storage credentials that may only create objects: the repository opens
/// from the cache of an earlier readable visit, a session writes a snapshot
/// with puts alone, and every read is refused.
#[tokio::test]
async fn write_only_credentials_can_back_up_from_the_cache() {
    let (backend, store) = faulty_backend();
    let cache = tempfile::tempdir().unwrap();
    let with_cache = || OpenOptions { cache_dir: Some(cache.path().to_path_buf()), ..OpenOptions::default() };
    // `init` fills the cache with what a write-only client needs.
    Repository::init(backend.clone(), b"pw", fast_init(), with_cache()).await.unwrap();

    for op in ["get", "list", "delete"] {
        store.add(Rule { op, path_contains: "", fault: Fault::Denied, times: usize::MAX });
    }
    // Without the cache, write-only credentials cannot open the repository.
    let denied = Repository::open(backend.clone(), b"pw", no_cache()).await.unwrap_err();
    assert!(matches!(denied, Error::AccessDenied { .. }), "{denied}");
    let wrong = Repository::open(backend.clone(), b"nope", with_cache()).await.unwrap_err();
    assert!(matches!(wrong, Error::WrongPassword { .. }), "{wrong}");

    let repo = Repository::open(backend.clone(), b"pw", with_cache()).await.unwrap();
    assert!(repo.write_only());
    let writer = Writer::new(&repo, Arc::new(Default::default())).unwrap();
    let data = b"written with put permission only".to_vec();
    let blob = writer.add_blob(BlobType::Data, &data).await.unwrap();
    let snapshot = writer.commit(&Snapshot::new(TreeId(blob), vec!["/w".into()])).await.unwrap();
    assert!(matches!(repo.list_snapshots().await.unwrap_err(), Error::AccessDenied { .. }));
    assert!(repo.load_index().await.is_err());

    // With read access again, everything is there.
    store.clear();
    let repo = Repository::open(backend, b"pw", no_cache()).await.unwrap();
    assert!(!repo.write_only());
    let index = repo.load_index().await.unwrap();
    assert_eq!(repo.read_blob(&index, &blob).await.unwrap(), data);
    assert_eq!(repo.list_snapshots().await.unwrap()[0].0, snapshot);
}

/// `copy` into an offsite repository made from the source, through
/// write-only credentials: what was copied is remembered locally.
#[tokio::test(flavor = "multi_thread")]
async fn copy_into_a_write_only_destination() {
    let src_backend = Backend::memory();
    let src = Repository::init(src_backend, b"pw", fast_init(), no_cache()).await.unwrap();
    let (backend, store) = faulty_backend();
    let cache = tempfile::tempdir().unwrap();
    let with_cache = || OpenOptions { cache_dir: Some(cache.path().to_path_buf()), ..OpenOptions::default() };
    let mut from = fast_init();
    from.master = src.keys().master().cloned();
    from.chunker = src.config().chunker_params();
    Repository::init(backend.clone(), b"pw", from, with_cache()).await.unwrap();

    // A real snapshot: a tree of files, each one data blob.
    let writer = Writer::new(&src, Arc::new(Default::default())).unwrap();
    let (mut nodes, mut blobs) = (Vec::new(), Vec::new());
    for i in 0..8u64 {
        let data = bytes(i, 200_000);
        let id = writer.add_blob(BlobType::Data, &data).await.unwrap();
        let mut node = cairn_repo::Node::new(format!("f{i}"), cairn_repo::NodeKind::File);
        node.size = data.len() as u64;
        node.content = vec![cairn_repo::Extent::Blob { id: DataId(id), offset: 0, length: data.len() as u32 }];
        nodes.push(node);
        blobs.push((id, data));
    }
    let tree = cairn_repo::Tree::new(nodes).unwrap();
    let tree_id = writer.add_tree(&tree).await.unwrap();
    writer.commit(&Snapshot::new(tree_id, vec!["/x".into()])).await.unwrap();
    let snapshots = src.list_snapshots().await.unwrap();
    for op in ["get", "list", "delete"] {
        store.add(Rule { op, path_contains: "", fault: Fault::Denied, times: usize::MAX });
    }
    let dst = Repository::open(backend.clone(), b"pw", with_cache()).await.unwrap();
    assert!(dst.write_only());
    let handle = tokio::runtime::Handle::current();
    let (s, d, snaps, h) = (src.clone(), dst.clone(), snapshots.clone(), handle.clone());
    let first =
        tokio::task::spawn_blocking(move || cairn_repo::copy_snapshots(&s, &d, &snaps, &h)).await.unwrap().unwrap();
    assert!(first.verbatim && first.packs >= 1 && first.copied.len() == snapshots.len(), "{first:?}");
    let (s, d, snaps, h) = (src.clone(), dst.clone(), snapshots.clone(), handle.clone());
    let again =
        tokio::task::spawn_blocking(move || cairn_repo::copy_snapshots(&s, &d, &snaps, &h)).await.unwrap().unwrap();
    assert!(again.copied.is_empty() && again.skipped.len() == snapshots.len(), "{again:?}");

    store.clear();
    let dst = Repository::open(backend, b"pw", no_cache()).await.unwrap();
    let index = dst.load_index().await.unwrap();
    for (id, data) in &blobs {
        assert_eq!(&dst.read_blob(&index, id).await.unwrap(), data);
    }
    assert_eq!(dst.list_snapshots().await.unwrap().len(), snapshots.len());
}

/// A file whose extent runs past the end of its blob: a reader would fail
/// or read short, so check names it.
#[tokio::test]
async fn check_finds_an_extent_past_the_end_of_its_blob() {
    use cairn_repo::{Extent, Index, Node, NodeKind, Tree};
    let repo = Repository::init(Backend::memory(), b"pw", fast_init(), no_cache()).await.unwrap();
    let writer = Writer::new(&repo, Arc::new(Index::default())).unwrap();
    let id = writer.add_data(&bytes(1, 1000)).await.unwrap();
    let mut node = Node::new("f", NodeKind::File);
    node.size = 1000;
    node.content = vec![Extent::Blob { id, offset: 500, length: 1000 }];
    let tree = writer.add_tree(&Tree::new(vec![node]).unwrap()).await.unwrap();
    writer.commit(&Snapshot::new(tree, vec!["/f".into()])).await.unwrap();
    let report = cairn_repo::check(&repo, None).await.unwrap();
    assert!(
        report.problems.iter().any(|p| p.message.contains("uses bytes 500..1500 of blob") && p.object.ends_with("/f")),
        "{:?}",
        report.problems
    );
}

/// Trees crafted with the real key to expand without end (each level
/// references the one below twice: 41 blobs, 2^40 entries) or to nest
/// deeper than any file system: walks (ls, find, restore, dump) refuse them
/// quickly, naming the tree, instead of running for ever; `restore` refuses
/// before it creates anything; `check` reports both without overflowing
/// its stack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crafted_trees_that_expand_or_nest_without_end_are_refused() {
    use cairn_repo::{Index, Node, NodeKind, RestoreOptions, RestoreProgress, Tree, TreeLoader};
    let repo = Repository::init(Backend::memory(), b"pw", fast_init(), no_cache()).await.unwrap();
    let writer = Writer::new(&repo, Arc::new(Index::default())).unwrap();
    let dir = |name: &str, subtree| {
        let mut node = Node::new(name, NodeKind::Dir);
        node.mode = 0o755;
        node.subtree = Some(subtree);
        node
    };
    let leaf = writer.add_tree(&Tree::new(vec![Node::new("f", NodeKind::File)]).unwrap()).await.unwrap();
    let mut wide = leaf;
    for _ in 0..40 {
        wide = writer.add_tree(&Tree::new(vec![dir("a", wide), dir("b", wide)]).unwrap()).await.unwrap();
    }
    let mut deep = leaf;
    for _ in 0..2100 {
        deep = writer.add_tree(&Tree::new(vec![dir("d", deep)]).unwrap()).await.unwrap();
    }
    for root in [wide, deep] {
        writer.commit(&Snapshot::new(root, vec!["/crafted".into()])).await.unwrap();
    }
    writer.flush().await.unwrap();
    let loader = TreeLoader::new(&repo, Arc::new(repo.load_index().await.unwrap()), tokio::runtime::Handle::current());
    for (root, expected) in [(wide, "expand to"), (deep, "nest deeper than 2048")] {
        let loader = loader.clone();
        let (walked, restored, target) = tokio::task::spawn_blocking(move || {
            let mut visited = 0u64;
            let walked = loader.walk(&dir("root", root), |_, _| -> cairn_repo::Result<bool> {
                visited += 1;
                Ok(true)
            });
            let target = tempfile::tempdir().unwrap();
            let restored = cairn_repo::restore(
                &loader,
                &dir("root", root),
                &target.path().join("out"),
                &RestoreOptions::default(),
                &RestoreProgress::default(),
                &NoWarnings,
            );
            (walked, restored, target)
        })
        .await
        .unwrap();
        for text in [walked.unwrap_err().to_string(), restored.unwrap_err().to_string()] {
            assert!(text.contains(&root.to_hex()) && text.contains(expected) && text.contains("crafted"), "{text}");
        }
        let written: Vec<_> = std::fs::read_dir(target.path().join("out")).map(|d| d.count()).into_iter().collect();
        assert!(written.iter().all(|n| *n == 0), "restore wrote before refusing: {written:?}");
    }
    let report = cairn_repo::check(&repo, None).await.unwrap();
    let messages: Vec<&str> = report.problems.iter().map(|p| p.message.as_str()).collect();
    assert!(messages.iter().any(|m| m.contains("expand to") && m.contains("crafted")), "{messages:?}");
    assert!(messages.iter().any(|m| m.contains("nests deeper than 2048")), "{messages:?}");
}

struct NoWarnings;

impl cairn_repo::RestoreEvents for NoWarnings {
    fn warning(&self, path: &std::path::Path, message: &str) {
        panic!("unexpected warning for {}: {message}", path.display());
    }
}

/// A snapshot that names a data blob where a tree belongs, or a tree blob as
/// a file's data, is refused by name, never decoded as what it is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_of_the_wrong_type_are_refused() {
    use cairn_repo::{DataId, Extent, Index, Node, NodeKind, Tree, TreeId, TreeLoader};
    let repo = Repository::init(Backend::memory(), b"pw", fast_init(), no_cache()).await.unwrap();
    let writer = Writer::new(&repo, Arc::new(Index::default())).unwrap();
    let data = writer.add_data(b"file bytes").await.unwrap();
    let leaf = writer.add_tree(&Tree::new(vec![Node::new("f", NodeKind::File)]).unwrap()).await.unwrap();
    let mut confused = Node::new("confused", NodeKind::File);
    confused.size = 16;
    confused.content = vec![Extent::Blob { id: DataId(*leaf), offset: 0, length: 16 }];
    let tree = writer.add_tree(&Tree::new(vec![confused]).unwrap()).await.unwrap();
    writer.commit(&Snapshot::new(tree, vec!["/a".into()])).await.unwrap();
    writer.commit(&Snapshot::new(TreeId(*data), vec!["/b".into()])).await.unwrap();
    writer.flush().await.unwrap();

    let report = cairn_repo::check(&repo, None).await.unwrap();
    let messages: Vec<String> = report.problems.iter().map(|p| format!("{}: {}", p.object, p.message)).collect();
    assert!(
        messages.iter().any(|m| m.contains("/confused: uses blob") && m.contains("but it is a tree blob")),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.contains("it is a data blob where the snapshot needs a tree blob")),
        "{messages:?}"
    );

    let loader = TreeLoader::new(&repo, Arc::new(repo.load_index().await.unwrap()), tokio::runtime::Handle::current());
    let read = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let node = loader.load(&tree).unwrap().nodes()[0].clone();
        let mut bytes = Vec::new();
        let content = loader.content(&node).read_to_end(&mut bytes).map_err(|e| e.to_string());
        (content, loader.load(&data).map_err(|e| e.to_string()))
    })
    .await
    .unwrap();
    assert!(read.0.unwrap_err().contains("tree blob where the snapshot needs a data blob"));
    assert!(read.1.unwrap_err().contains("data blob where the snapshot needs a tree blob"));
}
