//! Test scenarios that every object-store backend must pass; `tests/s3.rs`
//! and `tests/azure.rs` run them against their servers.

use std::sync::Arc;

use cairn_repo::testing::Writer;

use cairn_repo::{
    Backend, BackendOptions, BlobType, Error, FileKind, InitOptions, OpenOptions, Repository, Snapshot, WriteOutcome,
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
    let missing = service.missing_bucket_location().expect("a scenario for stores with buckets (S3, Azure)");
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
    let (location, overrides) = service.unreachable(port).expect("a scenario for stores with buckets (S3, Azure)");
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
    // A raw root (a data blob): this scenario exercises pack copies, not trees.
    let snap = writer.commit(&Snapshot::new(cairn_repo::TreeId(blobs[0].0), vec!["/data".into()])).await.unwrap();
    let cache = tempfile::tempdir().unwrap();
    let repo = Repository::open(
        backend.clone(),
        b"pw",
        OpenOptions { cache_dir: Some(cache.path().into()), ..OpenOptions::default() },
    )
    .await
    .unwrap();
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
    // On a network store the tree packs the backups wrote are in the cache
    // (`<cache>/<repository id>/data/`, where only tree packs go); a restore
    // with an empty cache reads them whole from the store and keeps them.
    let tree_packs = |cache: &std::path::Path| -> usize {
        std::fs::read_dir(cache)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|repo| std::fs::read_dir(repo.path().join("data")).ok())
            .map(|packs| packs.count())
            .sum()
    };
    assert!(tree_packs(&cache) >= 1, "the backups' tree packs are cached");
    let fresh = dir.path().join("fresh-cache");
    let target = dir.path().join("restored-fresh");
    ok(run(&mut cairn_on(service, &fresh, &location, &["restore", "latest", "--target", target.to_str().unwrap()])));
    fstree::assert_same_tree(&src, &target);
    assert!(tree_packs(&fresh) >= 1, "the restore cached the tree packs it read");
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

/// Path -> BLAKE3 of the content of every file under `root`.
fn contents(root: &std::path::Path) -> std::collections::BTreeMap<String, blake3::Hash> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(rel, blake3::hash(&std::fs::read(&path).unwrap()));
            }
        }
    }
    out
}

/// Two hosts back up, round after round, while a third process forgets and
/// prunes (with repacking and a short grace period) as fast as it can. Old
/// content keeps coming back, so backups deduplicate against data a prune
/// has just marked. Afterwards `check --read-data` passes and every
/// surviving snapshot restores byte for byte.
///
/// `cmd` builds a cairn command against the repository.
pub fn backup_and_prune_concurrently(cmd: &(dyn Fn(&[&str]) -> std::process::Command + Sync), root: &std::path::Path) {
    use std::collections::{BTreeMap, HashMap};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    const ROUNDS: u64 = 10;
    // Long enough that backups finish within it even on a loaded machine
    // (the safety condition of FORMAT.md §12.3), short enough for a test.
    const GRACE: &str = "3s";
    let with_grace = |args: &[&str]| {
        let mut c = cmd(args);
        c.env("CAIRN_TEST_MIN_GRACE_SECS", "3");
        c
    };
    let mut init = vec!["init"];
    init.extend(FAST_KDF);
    ok(run(&mut with_grace(&init)));

    let expected: Mutex<HashMap<String, BTreeMap<String, blake3::Hash>>> = Mutex::new(HashMap::new());
    let backups_done = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let (prunes, deleted, rescued) = (AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0));
    std::thread::scope(|s| {
        for (h, host) in ["h1", "h2"].into_iter().enumerate() {
            let (expected, backups_done, deleted, with_grace) = (&expected, &backups_done, &deleted, &with_grace);
            s.spawn(move || {
                // Counts this host as done even if it panics, so the prune
                // loop stops and the panic is reported.
                struct Done<'a>(&'a AtomicUsize);
                impl Drop for Done<'_> {
                    fn drop(&mut self) {
                        self.0.fetch_add(1, Ordering::SeqCst);
                    }
                }
                let _done = Done(backups_done);
                let src = root.join(host);
                std::fs::create_dir_all(&src).unwrap();
                super::noise_file(&src.join("constant.bin"), 1000 + h as u64, 300_000);
                // At least ROUNDS rounds, and on until prunes have deleted
                // data while backups were running.
                let mut next = 0;
                while next < ROUNDS || (deleted.load(Ordering::SeqCst) == 0 && next < 4 * ROUNDS) {
                    let round = next;
                    next += 1;
                    // Content that returns every third round, after prune
                    // has had the chance to mark it.
                    super::noise_file(&src.join("cycle.bin"), 2000 + 10 * h as u64 + round % 3, 400_000);
                    super::noise_file(&src.join(format!("round-{round}.bin")), 3000 + 100 * h as u64 + round, 150_000);
                    if round >= 2 {
                        std::fs::remove_file(src.join(format!("round-{}.bin", round - 2))).unwrap();
                    }
                    let out = run(&mut with_grace(&["--json", "backup", "--host", host, src.to_str().unwrap()]));
                    if !out.status.success() {
                        // The one failure allowed: a backup that outlived the
                        // grace period and lost reused data refuses to publish.
                        let err = super::stderr(&out);
                        assert!(err.contains("Run the backup again"), "backup failed: {err}");
                        continue;
                    }
                    let summary: serde_json::Value =
                        serde_json::from_str(super::stdout(&out).lines().last().unwrap()).unwrap();
                    let id = summary["snapshot_id"].as_str().unwrap().to_owned();
                    expected.lock().unwrap().insert(id, contents(&src));
                    // Let prunes interleave with the backups.
                    std::thread::sleep(std::time::Duration::from_millis(250));
                }
            });
        }
        let (stop, prunes, deleted, rescued, with_grace) = (&stop, &prunes, &deleted, &rescued, &with_grace);
        s.spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                ok(run(&mut with_grace(&["forget", "--keep-last", "2"])));
                let out = ok(run(&mut with_grace(&["--json", "prune", "--grace", GRACE, "--max-unused", "0%"])));
                let report: serde_json::Value = serde_json::from_str(&out).unwrap();
                deleted.fetch_add(report["packs_deleted"].as_u64().unwrap() as usize, Ordering::SeqCst);
                rescued.fetch_add(report["packs_rescued"].as_u64().unwrap() as usize, Ordering::SeqCst);
                prunes.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        });
        while backups_done.load(Ordering::SeqCst) < 2 {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        stop.store(true, Ordering::SeqCst);
    });
    let (prunes, deleted) = (prunes.load(Ordering::SeqCst), deleted.load(Ordering::SeqCst));
    eprintln!("{prunes} prunes ran during the backups: {deleted} packs deleted, {rescued:?} rescued");
    assert!(prunes >= 3 && deleted > 0, "prunes deleted data while the backups ran");

    // Forget down to the policy, let the last marks age and sweep them
    // until nothing is left to do, then verify everything.
    let final_prune = ["--json", "forget", "--keep-last", "2", "--prune", "--grace", GRACE, "--max-unused", "0%"];
    let forgotten: serde_json::Value = serde_json::from_str(&ok(run(&mut with_grace(&final_prune)))).unwrap();
    assert!(forgotten["prune"]["blobs_used"].as_u64().unwrap() > 0, "forget --prune --json: {forgotten}");
    for round in 0.. {
        assert!(round < 5, "prune keeps finding work");
        std::thread::sleep(std::time::Duration::from_millis(3100));
        let out = ok(run(&mut with_grace(&["--json", "prune", "--grace", GRACE, "--max-unused", "0%"])));
        let report: serde_json::Value = serde_json::from_str(&out).unwrap();
        if report["packs_marked"] == 0 && report["records_pending"] == 0 && report["records_swept"] == 0 {
            break;
        }
    }
    let report = ok(run(&mut with_grace(&["check", "--read-data"])));
    assert!(report.contains("no problems found"), "{report}");
    assert!(!report.contains("not in any index") && !report.contains("marked for deletion"), "{report}");
    let listed: serde_json::Value = serde_json::from_str(&ok(run(&mut with_grace(&["--json", "snapshots"])))).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 4, "two per host survive: {listed:?}");
    let expected = expected.into_inner().unwrap();
    for snap in listed {
        let id = snap["id"].as_str().unwrap();
        let target = root.join(format!("restore-{id}"));
        ok(run(&mut with_grace(&["restore", id, "--target", target.to_str().unwrap()])));
        assert_eq!(contents(&target), expected[id], "snapshot {id} restores byte for byte");
    }
}
