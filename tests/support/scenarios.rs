//! Test scenarios that every object-store backend must pass; `tests/s3.rs`
//! and `tests/azure.rs` run them against their servers.

use std::sync::Arc;

use cairn_repo::{
    Backend, BackendOptions, BlobType, Error, FileKind, InitOptions, OpenOptions, Repository, Snapshot, WriteOutcome,
    Writer,
};

use super::{FAST_KDF, Service, cairn_on, fails, ok, run};

fn fast_init() -> InitOptions {
    InitOptions { kdf_memory_kib: 8192, kdf_iterations: 1, pack_size: 1 << 20, ..Default::default() }
}

/// `init`, `key add`, `key list`, `cat config`, a refused second `init`, a
/// wrong password and a missing repository, through the binary.
pub fn cli_init_and_keys(service: &Service) {
    let cache = tempfile::tempdir().unwrap();
    let loc = service.location("cli");
    let cmd = |args: &[&str]| cairn_on(service, cache.path(), &loc, args);
    let mut init = vec!["init"];
    init.extend(FAST_KDF);
    let out = ok(run(&mut cmd(&init)));
    assert!(out.contains("created cairn repository"), "{out}");
    let mut add = vec!["key", "add"];
    add.extend(FAST_KDF);
    ok(run(cmd(&add).env("CAIRN_NEW_PASSWORD", "second")));
    let list = ok(run(&mut cmd(&["key", "list"])));
    assert_eq!(list.lines().count(), 3, "{list}");
    let config: serde_json::Value = serde_json::from_str(&ok(run(&mut cmd(&["cat", "config"])))).unwrap();
    assert_eq!(config["version"], 1);
    fails(run(&mut cmd(&init)), 1, &["already exists"]);
    fails(run(cmd(&["key", "list"]).env("CAIRN_PASSWORD", "nope")), 1, &["wrong password"]);
    let empty = service.location("empty");
    fails(run(&mut cairn_on(service, cache.path(), &empty, &["key", "list"])), 10, &["cairn init"]);
}

/// A missing bucket/container, a wrong secret and an unreachable endpoint
/// each give one line that names the cause.
pub fn cli_errors_name_their_cause(service: &Service) {
    let cache = tempfile::tempdir().unwrap();
    let missing = service.missing_bucket_location();
    let mut init = vec!["init"];
    init.extend(FAST_KDF);
    for args in [&["key", "list"][..], &init[..]] {
        fails(run(&mut cairn_on(service, cache.path(), &missing, args)), 1, &["bucket or container does not exist"]);
    }
    let mut c = cairn_on(service, cache.path(), &service.location("creds"), &["key", "list"]);
    // A different secret of the same (valid base64) shape.
    let wrong = "bm90LXRoZS1zZWNyZXQtbm90LXRoZS1zZWNyZXQtbm90LXRoZS1zZWNyZXQtbm90LXRoZS1zZWNyZXQ=";
    fails(run(c.env(service.secret_var(), wrong)), 1, &["access denied", service.secret_var()]);

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let (location, overrides) = service.unreachable(port);
    let mut c = cairn_on(service, cache.path(), &location, &["key", "list"]);
    c.envs(overrides);
    fails(run(&mut c), 1, &["cannot reach", &port.to_string()]);
}

/// Concurrent conditional creates: exactly one writer wins, and of two
/// concurrent `init`s one succeeds and the other reports an existing repository.
pub async fn conditional_create_race(service: &Service) {
    service.export();
    let backend = Backend::open(&service.location("race"), &BackendOptions::default()).unwrap();
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let b = backend.clone();
        tasks.push(tokio::spawn(async move { (i, b.write_config(vec![i; 100]).await.unwrap()) }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (i, outcome) = t.await.unwrap();
        if outcome == WriteOutcome::Created {
            winners.push(i);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one conditional create may win: {winners:?}");
    assert_eq!(backend.read_config().await.unwrap().to_vec(), vec![winners[0]; 100]);

    let b = Backend::open(&service.location("init-race"), &BackendOptions::default()).unwrap();
    let (x, y) = tokio::join!(
        Repository::init(b.clone(), b"x", fast_init(), OpenOptions::default()),
        Repository::init(b.clone(), b"y", fast_init(), OpenOptions::default())
    );
    let loser = match (x, y) {
        (Ok(_), Err(e)) | (Err(e), Ok(_)) => e,
        (x, y) => panic!("exactly one init must win: {:?} / {:?}", x.err(), y.err()),
    };
    assert!(matches!(loser, Error::RepositoryExists { .. }), "{loser}");
}

/// Blobs in several packs, a snapshot, ranged reads, listing under a prefix.
pub async fn round_trip(service: &Service) {
    service.export();
    let backend = Backend::open(&service.location("data"), &BackendOptions::default()).unwrap();
    // Uncompressed, so 3.6 MB of blobs fill several 1 MiB packs.
    let options = InitOptions { compression_level: 0, ..fast_init() };
    let repo = Repository::init(backend.clone(), b"pw", options, OpenOptions::default()).await.unwrap();
    let writer = Writer::new(&repo, Arc::new(Default::default())).unwrap();
    let mut blobs = Vec::new();
    for i in 0..24u32 {
        let data: Vec<u8> =
            (0..150_000u32).map(|j| (j.wrapping_mul(2654435761).wrapping_add(i * 7919) >> 13) as u8).collect();
        blobs.push((writer.add_blob(BlobType::Data, &data).await.unwrap(), data));
    }
    let snap = writer.commit(&Snapshot::new(blobs[0].0, vec!["/data".into()])).await.unwrap();
    let cache = tempfile::tempdir().unwrap();
    let repo =
        Repository::open(backend.clone(), b"pw", OpenOptions { cache_dir: Some(cache.path().into()) }).await.unwrap();
    let index = repo.load_index().await.unwrap();
    assert!(index.packs().len() >= 2);
    for (id, data) in &blobs {
        assert_eq!(&repo.read_blob(&index, id).await.unwrap(), data);
    }
    for p in index.packs() {
        let in_pack = blobs.iter().filter(|(id, _)| index.get(id).is_some_and(|(q, _)| q.id == p.id)).count();
        assert_eq!(repo.read_pack_header(&p.id).await.unwrap().entries.len(), in_pack);
        assert_eq!(backend.size(FileKind::Pack, &p.id).await.unwrap(), p.size);
    }
    assert_eq!(repo.list_snapshots().await.unwrap()[0].0, snap);
}

/// `cairn backup` of the every-case fixture into the service and
/// `cairn restore` back, compared entry by entry; then an unchanged rerun
/// that reads nothing.
pub fn file_round_trip(service: &Service) {
    use super::fstree;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let location = service.location("files");
    let cmd = |args: &[&str]| cairn_on(service, &cache, &location, args);
    let mut init = vec!["init"];
    init.extend(FAST_KDF);
    ok(run(&mut cmd(&init)));
    let src = dir.path().join("src");
    fstree::build(&src);
    let src_arg = src.to_str().unwrap();
    ok(run(&mut cmd(&["backup", src_arg])));
    let target = dir.path().join("restored");
    ok(run(&mut cmd(&["restore", "latest", "--target", target.to_str().unwrap()])));
    fstree::assert_same_tree(&src, &target);
    let again = ok(run(&mut cmd(&["--json", "backup", src_arg])));
    assert!(again.contains("\"bytes_read\":0"), "{again}");
}

/// A local repository copied offsite into the service, verbatim (`init
/// --from-repo`), then restored from there.
pub fn copy_offsite(service: &Service) {
    use super::fstree;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let local = dir.path().join("local").to_str().unwrap().to_owned();
    let offsite = service.location("offsite");
    let on = |location: &str, args: &[&str]| cairn_on(service, &cache, location, args);
    let mut init = vec!["init"];
    init.extend(FAST_KDF);
    ok(run(&mut on(&local, &init)));
    let src = dir.path().join("src");
    fstree::build(&src);
    ok(run(&mut on(&local, &["backup", "-q", src.to_str().unwrap()])));
    let mut init = vec!["init", "--from-repo", local.as_str()];
    init.extend(FAST_KDF);
    ok(run(&mut on(&offsite, &init)));
    let copied = ok(run(&mut on(&offsite, &["copy", "--from-repo", &local])));
    assert!(copied.contains("1 snapshots copied") && copied.contains("verbatim"), "{copied}");
    let target = dir.path().join("restored");
    ok(run(&mut on(&offsite, &["restore", "latest", "--target", target.to_str().unwrap()])));
    fstree::assert_same_tree(&src, &target);
    let again = ok(run(&mut on(&offsite, &["copy", "--from-repo", &local])));
    assert!(again.contains("0 snapshots copied, 1 already there"), "{again}");
}
