//! End-to-end tests of `rclone:` locations against the real rclone (a
//! local-directory remote standing in for Google Drive): the scenarios
//! every backend passes, the name mapping, and rclone's own faults.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_repo::{Backend, BackendOptions, FileKind, Id, WriteOutcome};
use support::{Kind, Service, cairn_on, fails, ok, run, scenarios};

fn rclone() -> Option<&'static Service> {
    Service::shared(Kind::Rclone)
}

/// The directory behind an `rclone:DIR` location.
fn dir_of(location: &str) -> PathBuf {
    PathBuf::from(location.strip_prefix("rclone:").unwrap())
}

/// Processes whose command line mentions `needle` (rclone children serving it).
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("serve restic") && cmdline.contains(needle) {
            out.push(pid);
        }
    }
    out
}

/// Waits (a little) until no rclone serves `dir`: children are killed when
/// their store is dropped, and die with the cairn process.
#[track_caller]
fn assert_no_rclone_left(dir: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_mentioning(dir).is_empty() {
        assert!(Instant::now() < deadline, "rclone left behind for {dir}: {:?}", processes_mentioning(dir));
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn cli_init_and_keys_on_rclone() {
    let Some(s) = rclone() else { return };
    scenarios::cli_init_and_keys(s);
    assert_no_rclone_left(&s.location("cli")["rclone:".len()..]);
}

#[tokio::test]
async fn blobs_and_snapshots_round_trip_on_rclone() {
    let Some(s) = rclone() else { return };
    scenarios::round_trip(s).await;
}

#[test]
fn file_backup_and_restore_round_trip_on_rclone() {
    let Some(s) = rclone() else { return };
    scenarios::file_round_trip(s);
}

#[test]
fn copy_offsite_to_rclone_and_restore_from_there() {
    let Some(s) = rclone() else { return };
    scenarios::copy_offsite(s);
}

#[test]
fn backups_and_prunes_run_concurrently_on_rclone() {
    let Some(s) = rclone() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let location = s.location("concurrent-prune");
    let cmd = |args: &[&str]| cairn_on(s, &cache, &location, args);
    scenarios::backup_and_prune_concurrently(&cmd, &dir.path().join("work"));
    assert_no_rclone_left(&location);
}

/// Every kind of object round-trips through `rclone serve restic` under
/// its own name: packs land in `data/<2 hex>/<id>` on the remote and are
/// listed recursively, other names as they are; HEAD, ranged reads and
/// deletes work; lists carry "now" (rclone gives no times); creates fall
/// back to check-then-write from the start; and dropping the backend
/// stops rclone.
#[tokio::test]
async fn names_and_operations_map_onto_the_rest_protocol() {
    let Some(s) = rclone() else { return };
    s.export();
    let location = s.location("names");
    let backend = Backend::open(&location, &BackendOptions::default()).unwrap();
    assert!(backend.create_fallback_reason().unwrap().contains("no conditional create"));
    let kinds = [FileKind::Key, FileKind::Index, FileKind::Snapshot, FileKind::Pack, FileKind::Trash];
    let mut ids = Vec::new();
    for (i, kind) in kinds.into_iter().enumerate() {
        let body = vec![i as u8 + 1; 1000 + i];
        let id = Id::of_object(&body);
        let parts = vec![Bytes::from(body[..300].to_vec()), Bytes::from(body[300..].to_vec())];
        assert_eq!(backend.write_new(kind, &id, parts.clone()).await.unwrap(), WriteOutcome::Created, "{kind:?}");
        assert_eq!(backend.write_new(kind, &id, parts).await.unwrap(), WriteOutcome::AlreadyExists, "{kind:?}");
        ids.push((kind, id, body));
    }
    assert_eq!(backend.write_config(b"config".to_vec()).await.unwrap(), WriteOutcome::Created);
    assert_eq!(backend.write_config(b"other".to_vec()).await.unwrap(), WriteOutcome::AlreadyExists);
    assert_eq!(&backend.read_config().await.unwrap()[..], b"config", "never overwritten");
    let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    for (kind, id, body) in &ids {
        let on_disk = dir_of(&location).join(kind.relative_path(id));
        assert_eq!(std::fs::read(&on_disk).unwrap(), *body, "{kind:?} stored at {}", on_disk.display());
        assert_eq!(backend.read(*kind, id).await.unwrap().to_vec(), *body);
        assert_eq!(backend.size(*kind, id).await.unwrap(), body.len() as u64);
        assert_eq!(backend.read_range(*kind, id, 10..20).await.unwrap().to_vec(), body[10..20].to_vec());
        let listed = backend.list_objects(*kind).await.unwrap();
        assert_eq!(listed.len(), 1, "{kind:?}: {listed:?}");
        assert_eq!((listed[0].id, listed[0].size), (*id, body.len() as u64));
        assert!((listed[0].modified_unix - started).abs() <= 5, "no mtimes through rclone: \"now\", never old");
    }
    // A second pack in another two-hex directory: data/ is listed recursively.
    let other = (0u32..)
        .map(|n| n.to_le_bytes().to_vec())
        .find(|b| Id::of_object(b).to_hex()[..2] != ids[3].1.to_hex()[..2])
        .unwrap();
    let other_id = Id::of_object(&other);
    backend.write_new(FileKind::Pack, &other_id, vec![Bytes::from(other)]).await.unwrap();
    let mut packs: Vec<Id> = backend.list(FileKind::Pack).await.unwrap().into_iter().map(|(id, _)| id).collect();
    packs.sort();
    let mut want = vec![ids[3].1, other_id];
    want.sort();
    assert_eq!(packs, want);
    // The prune lease's name is not an id; it round-trips too (through the lease).
    let lease = cairn_repo::Lease::acquire(&backend, "test").await.unwrap();
    assert!(dir_of(&location).join("locks/prune").is_file());
    lease.release().await;
    assert!(!dir_of(&location).join("locks/prune").exists());
    for (kind, id, _) in &ids {
        backend.delete(*kind, id).await.unwrap();
        assert!(!backend.exists(*kind, id).await.unwrap(), "{kind:?} deleted (no stale HEAD)");
        backend.delete(*kind, id).await.unwrap();
    }
    drop(backend);
    assert_no_rclone_left(&location);
}

/// An object torn by an interrupted upload (what a killed rclone leaves
/// under the final name) is not taken for the real one: the next writer of
/// that content compares and writes it again. (Readers check whole
/// objects against their BLAKE3 name and ranges by authenticated
/// decryption; `a_killed_rclone_fails_the_backup_cleanly` runs `check
/// --read-data` after a real torn upload.)
#[tokio::test]
async fn a_torn_object_is_detected_and_written_again() {
    let Some(s) = rclone() else { return };
    s.export();
    let location = s.location("torn");
    let backend = Backend::open(&location, &BackendOptions::default()).unwrap();
    let body = vec![7u8; 100_000];
    let id = Id::of_object(&body);
    let path = dir_of(&location).join(FileKind::Pack.relative_path(&id));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &body[..40_000]).unwrap();
    // Same size, other bytes: size alone proves nothing either.
    let mut same_size = body.clone();
    same_size[99_999] = 0;
    for torn in [&body[..40_000], &same_size[..]] {
        std::fs::write(&path, torn).unwrap();
        let outcome = backend.write_new(FileKind::Pack, &id, vec![Bytes::from(body.clone())]).await.unwrap();
        assert_eq!(outcome, WriteOutcome::Created);
        assert_eq!(std::fs::read(&path).unwrap(), body);
    }
    assert_eq!(backend.read(FileKind::Pack, &id).await.unwrap().to_vec(), body);
}

/// rclone killed in the middle of a backup's upload: the backup fails with
/// an error naming the backend and rclone, publishes no snapshot, and
/// leaves no rclone behind; whatever rclone left torn under a final name
/// is unindexed, and the next backup and `check --read-data` pass.
#[test]
fn a_killed_rclone_fails_the_backup_cleanly() {
    let Some(s) = rclone() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let location = s.location("killed");
    let cmd = |args: &[&str]| cairn_on(s, &cache, &location, args);
    // Small packs: several uploads per backup, so the kill lands mid-way.
    let mut init = vec!["init", "--pack-size", "4MiB"];
    init.extend(support::FAST_KDF);
    ok(run(&mut cmd(&init)));
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    support::noise_file(&src.join("big.bin"), 42, 32 << 20);
    let mut backup = cmd(&["backup", src.to_str().unwrap()]);
    backup.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let child = backup.spawn().unwrap();
    let data = dir_of(&location).join("data");
    let deadline = Instant::now() + Duration::from_secs(120);
    // Kill rclone once the first pack upload has begun.
    let killed = loop {
        assert!(Instant::now() < deadline, "no upload started");
        let uploading = std::fs::read_dir(&data).map(|d| d.count() > 0).unwrap_or(false);
        let pids = processes_mentioning(&location["rclone:".len()..]);
        if uploading && !pids.is_empty() {
            for pid in &pids {
                let _ =
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid as i32), nix::sys::signal::Signal::SIGKILL);
            }
            break pids;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(!killed.is_empty());
    let out = child.wait_with_output().unwrap();
    let err = support::stderr(&out);
    assert!(!out.status.success(), "the backup must fail: {err}");
    assert!(err.contains(&location) && err.contains("rclone stopped"), "{err}");
    assert_no_rclone_left(&location["rclone:".len()..]);
    assert_eq!(ok(run(&mut cmd(&["snapshots", "--json"]))).matches("\"id\"").count(), 0, "no snapshot published");
    // The next backup (a new rclone) completes, rewriting any torn pack it needs.
    ok(run(&mut cmd(&["backup", "-q", src.to_str().unwrap()])));
    ok(run(&mut cmd(&["check", "--read-data"])));
    let target = dir.path().join("restored");
    ok(run(&mut cmd(&["restore", "latest", "--target", target.to_str().unwrap()])));
    let restored = target.join(src.strip_prefix("/").unwrap()).join("big.bin");
    let restored = if restored.exists() { restored } else { target.join("big.bin") };
    assert_eq!(
        blake3::hash(&std::fs::read(restored).unwrap()),
        blake3::hash(&std::fs::read(src.join("big.bin")).unwrap())
    );
}

#[test]
fn an_unknown_remote_names_rclone_config() {
    let Some(s) = rclone() else { return };
    let cache = tempfile::tempdir().unwrap();
    let out = run(&mut cairn_on(s, cache.path(), "rclone:nosuchremote:backups", &["snapshots"]));
    fails(out, 1, &["rclone:nosuchremote:backups", "didn't find section in config file", "rclone config"]);
    assert_no_rclone_left("nosuchremote:");
}

#[test]
fn a_missing_rclone_program_says_to_install_it() {
    let Some(s) = rclone() else { return };
    let cache = tempfile::tempdir().unwrap();
    let mut c = cairn_on(s, cache.path(), &s.location("noprog"), &["snapshots"]);
    c.env("CAIRN_RCLONE_PROGRAM", "/nonexistent/rclone");
    fails(run(&mut c), 1, &["/nonexistent/rclone", "Install rclone", "--rclone-program"]);
}

/// A repository made through rclone is a plain local repository too (the
/// same layout), and `copy` works between the two in both directions.
#[test]
fn copy_between_rclone_and_local_both_ways() {
    let Some(s) = rclone() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let remote = s.location("both-ways");
    let local = dir.path().join("local").display().to_string();
    let on = |location: &str, args: &[&str]| cairn_on(s, &cache, location, args);
    let mut init = vec!["init"];
    init.extend(support::FAST_KDF);
    ok(run(&mut on(&remote, &init)));
    let src = dir.path().join("src");
    support::fstree::build(&src);
    ok(run(&mut on(&remote, &["backup", "-q", src.to_str().unwrap()])));
    let mut init_local = vec!["init", "--from-repo", remote.as_str()];
    init_local.extend(support::FAST_KDF);
    ok(run(&mut on(&local, &init_local)));
    ok(run(&mut on(&local, &["copy", "--from-repo", &remote])));
    ok(run(&mut on(&local, &["backup", "-q", "--host", "other", src.to_str().unwrap()])));
    let back = ok(run(&mut on(&remote, &["copy", "--from-repo", &local])));
    assert!(back.contains("1 snapshots copied"), "{back}");
    ok(run(&mut on(&remote, &["check", "--read-data"])));
    // The rclone directory opened directly as a local repository.
    ok(run(&mut on(dir_of(&remote).to_str().unwrap(), &["check"])));
    assert_no_rclone_left(&remote["rclone:".len()..]);
}

/// The README's NAS-plus-Drive walkthrough with stand-ins (a local
/// directory for the NAS, a local rclone remote for Drive): `init
/// --from-repo` onto rclone:, then `cairn run` backs up and copies to the
/// rclone repository, which restores; no rclone is left behind.
#[test]
fn the_nas_plus_drive_walkthrough_runs() {
    let Some(s) = rclone() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let nas = dir.path().join("nas").display().to_string();
    let drive = s.location("gdrive");
    let password = dir.path().join("password");
    std::fs::write(&password, "service password\n").unwrap();
    let src = dir.path().join("src");
    support::fstree::build(&src);
    let on = |location: &str, args: &[&str]| cairn_on(s, &cache, location, args);
    let mut init = vec!["init"];
    init.extend(support::FAST_KDF);
    ok(run(&mut on(&nas, &init)));
    let mut init_drive = vec!["init", "--from-repo", nas.as_str()];
    init_drive.extend(support::FAST_KDF);
    ok(run(&mut on(&drive, &init_drive)));
    let config = dir.path().join("cairn.toml");
    std::fs::write(
        &config,
        format!(
            r#"version = 1
[repository.nas]
location = "{nas}"
password-file = "{pw}"
[repository.gdrive]
location = "{drive}"
password-file = "{pw}"
rclone-args = "--config {rclone_config}"
[job.nightly]
into = "nas"
copy-to = ["gdrive"]
retention = {{ keep-daily = 7 }}
[[job.nightly.source]]
files = ["{src}"]
"#,
            pw = password.display(),
            rclone_config = s.var("RCLONE_CONFIG"),
            src = src.display()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let mut job = support::cairn(&cache);
    job.env("CAIRN_RCLONE_PROGRAM", s.var("CAIRN_RCLONE_PROGRAM"));
    ok(run(job.args(["run", "--config", config, "nightly"])));
    let target = dir.path().join("restored");
    ok(run(&mut on(&drive, &["restore", "latest", "--target", target.to_str().unwrap()])));
    support::fstree::assert_same_tree(&src, &target);
    assert_no_rclone_left(&drive["rclone:".len()..]);
}

/// A reader that lists an object still being uploaded (rclone shows it,
/// growing, under its final name) reads it again before calling it
/// corrupt: a snapshot that completes half a second later is read; one
/// that stays torn is left out with a warning naming it (what readers do
/// with any corrupt snapshot), never read.
#[test]
fn a_reader_waits_for_an_object_in_upload_and_rejects_a_torn_one() {
    let Some(s) = rclone() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let location = s.location("in-upload");
    let cmd = |args: &[&str]| cairn_on(s, &cache, &location, args);
    let mut init = vec!["init"];
    init.extend(support::FAST_KDF);
    ok(run(&mut cmd(&init)));
    let src = dir.path().join("src");
    support::fstree::build(&src);
    ok(run(&mut cmd(&["backup", "-q", src.to_str().unwrap()])));
    let snapshots = dir_of(&location).join("snapshots");
    let file = std::fs::read_dir(&snapshots).unwrap().next().unwrap().unwrap().path();
    let whole = std::fs::read(&file).unwrap();
    std::fs::write(&file, &whole[..whole.len() / 2]).unwrap();
    let finisher = {
        let (file, whole) = (file.clone(), whole.clone());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(600));
            std::fs::write(file, whole).unwrap();
        })
    };
    let listed = ok(run(&mut cmd(&["--no-cache", "snapshots"])));
    finisher.join().unwrap();
    assert!(listed.contains("1 snapshots"), "{listed}");
    std::fs::write(&file, &whole[..whole.len() / 2]).unwrap();
    let name = file.file_name().unwrap().to_str().unwrap();
    let out = run(&mut cmd(&["--no-cache", "snapshots"]));
    let err = support::stderr(&out);
    assert!(ok(out).contains("0 snapshots"), "a torn snapshot is left out, never read");
    assert!(err.contains(name) && err.contains("is corrupt") && err.contains("hashes to"), "{err}");
}

/// A cairn killed outright (SIGKILL: no destructor runs) takes its rclone
/// with it: the child is spawned with the parent-death signal set.
#[test]
fn rclone_dies_with_a_killed_cairn() {
    let Some(s) = rclone() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let location = s.location("cairn-killed");
    let served = &location["rclone:".len()..];
    let cmd = |args: &[&str]| cairn_on(s, &cache, &location, args);
    let mut init = vec!["init", "--pack-size", "4MiB"];
    init.extend(support::FAST_KDF);
    ok(run(&mut cmd(&init)));
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    support::noise_file(&src.join("big.bin"), 7, 16 << 20);
    let mut backup = cmd(&["backup", src.to_str().unwrap()]);
    backup.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let mut child = backup.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while processes_mentioning(served).is_empty() {
        assert!(Instant::now() < deadline, "rclone never started");
        assert!(child.try_wait().unwrap().is_none(), "the backup ended before rclone was seen");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_no_rclone_left(served);
}

/// `--rclone-args --append-only` (rclone refuses deletes and overwrites):
/// backups work, forget is refused with a message that names the flag.
#[test]
fn append_only_rclone_takes_backups_and_refuses_forget() {
    let Some(s) = rclone() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let location = s.location("append-only");
    let cmd = |args: &[&str]| {
        let mut c = cairn_on(s, &cache, &location, args);
        c.env("CAIRN_RCLONE_ARGS", "--append-only");
        c
    };
    let mut init = vec!["init"];
    init.extend(support::FAST_KDF);
    ok(run(&mut cmd(&init)));
    let src = dir.path().join("src");
    support::fstree::build(&src);
    ok(run(&mut cmd(&["backup", "-q", src.to_str().unwrap()])));
    std::fs::write(src.join("new-file"), b"more").unwrap();
    ok(run(&mut cmd(&["backup", "-q", src.to_str().unwrap()])));
    ok(run(&mut cmd(&["check"])));
    fails(run(&mut cmd(&["forget", "--keep-last", "1"])), 1, &["access denied", "403", "--append-only"]);
}

/// Prune without modification times: through rclone every object looks
/// modified "now", so an unindexed pack (an interrupted backup's, or one
/// still uploading) is never marked, however old; opened as a local
/// directory, where the file's mtime is real, the same pack is marked.
#[test]
fn prune_through_rclone_never_marks_an_unindexed_pack() {
    let Some(s) = rclone() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let location = s.location("prune-grace");
    let local = dir_of(&location).display().to_string();
    let on = |location: &str, args: &[&str]| {
        let mut c = cairn_on(s, &cache, location, args);
        c.env("CAIRN_TEST_MIN_GRACE_SECS", "1");
        c
    };
    let mut init = vec!["init"];
    init.extend(support::FAST_KDF);
    ok(run(&mut on(&location, &init)));
    let src = dir.path().join("src");
    support::fstree::build(&src);
    ok(run(&mut on(&location, &["backup", "-q", src.to_str().unwrap()])));
    // An unindexed pack, two hours old on disk.
    let body = b"an interrupted upload".to_vec();
    let id = Id::of_object(&body);
    let pack = dir_of(&location).join(FileKind::Pack.relative_path(&id));
    std::fs::create_dir_all(pack.parent().unwrap()).unwrap();
    std::fs::write(&pack, &body).unwrap();
    let old = std::time::SystemTime::now() - Duration::from_secs(7200);
    std::fs::File::options().write(true).open(&pack).unwrap().set_modified(old).unwrap();
    for _ in 0..2 {
        ok(run(&mut on(&location, &["prune", "--grace", "1s"])));
        std::thread::sleep(Duration::from_millis(1100));
    }
    assert!(pack.exists(), "never collected through rclone");
    let trash = dir_of(&location).join("trash");
    let records = || std::fs::read_dir(&trash).map(|d| d.count()).unwrap_or(0);
    assert_eq!(records(), 0, "nothing was marked through rclone");
    ok(run(&mut on(&local, &["prune", "--grace", "1s"])));
    assert_eq!(records(), 1, "the same pack is marked when its mtime is known");
}
