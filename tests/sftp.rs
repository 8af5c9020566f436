//! End-to-end tests against a real OpenSSH server (a throwaway `sshd` on
//! 127.0.0.1, started once per test process by `scripts/start-sshd.sh`):
//! the scenarios every backend passes, and SFTP's own faults.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use cairn_repo::{Backend, BackendOptions, FileKind, Id, RetryPolicy, SftpOptions, WriteOutcome};
use support::{Kind, Service, cairn, cairn_on, fails, ok, run, scenarios};

fn sshd() -> Option<&'static Service> {
    Service::shared(Kind::Sftp)
}

/// The server-side directory of an `sftp:` location of this service.
fn server_dir(location: &str) -> PathBuf {
    PathBuf::from(location.rsplit_once(':').unwrap().1)
}

fn options(s: &Service) -> BackendOptions {
    BackendOptions {
        sftp: SftpOptions { command: Some(s.var("CAIRN_SFTP_COMMAND").to_owned()), connections: None },
        ..Default::default()
    }
}

/// Every file under `dir` (relative names).
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn cli_init_and_keys_on_sftp() {
    let Some(s) = sshd() else { return };
    scenarios::cli_init_and_keys(s);
}

#[tokio::test]
async fn conditional_create_lets_exactly_one_writer_win_on_sftp() {
    let Some(s) = sshd() else { return };
    scenarios::conditional_create_race(s).await;
}

/// Eight backends (eight separate ssh sessions each) create one name at
/// once: exactly one wins, the others see it exists, the content is the
/// winner's, and no temporary file is left.
#[tokio::test]
async fn eight_sessions_racing_to_create_one_name_give_one_winner() {
    let Some(s) = sshd() else { return };
    let location = s.location("race8");
    let id = Id::of_object(b"race");
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let backend = Backend::open(&location, &options(s)).unwrap();
        tasks.push(tokio::spawn(async move {
            let body = vec![Bytes::from(vec![i; 300_000])];
            (i, backend.write_new(FileKind::Index, &id, body).await.unwrap())
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (i, outcome) = t.await.unwrap();
        if outcome == WriteOutcome::Created {
            winners.push(i);
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let backend = Backend::open(&location, &options(s)).unwrap();
    assert_eq!(backend.read(FileKind::Index, &id).await.unwrap().to_vec(), vec![winners[0]; 300_000]);
    assert_eq!(backend.create_fallback_reason(), None, "OpenSSH passes the probe");
    assert_eq!(files(&server_dir(&location)), vec![format!("index/{id}")], "no temporary files left");
}

#[tokio::test]
async fn blobs_and_snapshots_round_trip_on_sftp() {
    let Some(s) = sshd() else { return };
    scenarios::round_trip(s).await;
}

#[test]
fn file_backup_and_restore_round_trip_on_sftp() {
    let Some(s) = sshd() else { return };
    scenarios::file_round_trip(s);
}

#[test]
fn copy_offsite_to_sftp_and_restore_from_there() {
    let Some(s) = sshd() else { return };
    scenarios::copy_offsite(s);
}

#[test]
fn backups_and_prunes_run_concurrently_on_sftp() {
    let Some(s) = sshd() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let location = s.location("concurrent-prune");
    let cmd = |args: &[&str]| cairn_on(s, &cache, &location, args);
    scenarios::backup_and_prune_concurrently(&cmd, &dir.path().join("work"));
}

/// sftp → S3 → sftp: `copy` between an SFTP repository and an S3 one, in
/// both directions, and restores from each.
#[test]
fn copy_between_sftp_and_s3() {
    let Some(sftp) = sshd() else { return };
    let Some(s3) = Service::shared(Kind::S3) else { return };
    use support::fstree;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let on = |location: &str, args: &[&str]| {
        let mut c = cairn(&cache);
        c.envs(sftp.env.iter().chain(&s3.env).map(|(k, v)| (k.as_str(), v.as_str())));
        c.env("CAIRN_PASSWORD", "pw").args(["-r", location]).args(args);
        c
    };
    let (nas, offsite, back) = (sftp.location("to-s3"), s3.location("from-sftp"), sftp.location("from-s3"));
    let mut init = vec!["init"];
    init.extend(support::FAST_KDF);
    ok(run(&mut on(&nas, &init)));
    let src = dir.path().join("src");
    fstree::build(&src);
    ok(run(&mut on(&nas, &["backup", "-q", src.to_str().unwrap()])));
    for (from, to) in [(&nas, &offsite), (&offsite, &back)] {
        let mut init = vec!["init", "--from-repo", from.as_str()];
        init.extend(support::FAST_KDF);
        ok(run(&mut on(to, &init)));
        let copied = ok(run(&mut on(to, &["copy", "--from-repo", from])));
        assert!(copied.contains("1 snapshots copied"), "{copied}");
        let target = dir.path().join(format!("restored-{}", to.len()));
        ok(run(&mut on(to, &["restore", "latest", "--target", target.to_str().unwrap()])));
        fstree::assert_same_tree(&src, &target);
        let report = ok(run(&mut on(to, &["check", "--read-data"])));
        assert!(report.contains("no problems found"), "{report}");
    }
}

/// The default command (`ssh -p PORT -l USER HOST -s sftp`) through a
/// PATH shim that only adds the test's keys: init, backup, restore,
/// forget, prune and check through the binary.
#[test]
fn default_ssh_command_with_port_and_user() {
    let Some(s) = sshd() else { return };
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let shim = bin.join("ssh");
    std::fs::write(
        &shim,
        format!("#!/bin/sh\nexec /usr/bin/ssh -F {} \"$@\"\n", anyhost_config(s, dir.path()).display()),
    )
    .unwrap();
    std::fs::set_permissions(&shim, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let location = format!("sftp://{user}@127.0.0.1:{}/{}/shim", s.var("SFTP_TEST_PORT"), s.var("SFTP_TEST_DIR"));
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let cache = dir.path().join("cache");
    let cmd = |args: &[&str]| {
        let mut c = cairn(&cache);
        c.env("PATH", &path).env("CAIRN_PASSWORD", "pw").args(["-r", &location]).args(args);
        c
    };
    let mut init = vec!["init"];
    init.extend(support::FAST_KDF);
    let out = ok(run(&mut cmd(&init)));
    assert!(out.contains(&format!("sftp:{user}@127.0.0.1:{}:/", s.var("SFTP_TEST_PORT"))), "{out}");
    let src = dir.path().join("src");
    support::fstree::build(&src);
    ok(run(&mut cmd(&["backup", "-q", src.to_str().unwrap()])));
    support::noise_file(&src.join("more"), 5, 2_000_000);
    ok(run(&mut cmd(&["backup", "-q", src.to_str().unwrap()])));
    ok(run(&mut cmd(&["forget", "--keep-last", "1", "--prune"])));
    let report = ok(run(&mut cmd(&["check", "--read-data"])));
    assert!(report.contains("no problems found"), "{report}");
    let target = dir.path().join("restored");
    ok(run(&mut cmd(&["restore", "latest", "--target", target.to_str().unwrap()])));
    support::fstree::assert_same_tree(&src, &target);
}

/// An ssh_config for any host with the test's user key (and a second,
/// unauthorised key where asked).
fn anyhost_config(s: &Service, dir: &Path) -> PathBuf {
    config_with_key(s, dir, &Path::new(s.var("SFTP_TEST_ROOT")).join("userkey"), "ConnectTimeout 3")
}

fn config_with_key(_s: &Service, dir: &Path, key: &Path, extra: &str) -> PathBuf {
    let path = dir.join(format!("ssh_config-{}", key.file_name().unwrap().to_string_lossy()));
    std::fs::write(
        &path,
        format!(
            "Host *\n  IdentityFile {}\n  IdentitiesOnly yes\n  StrictHostKeyChecking no\n  \
             UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  BatchMode yes\n  {extra}\n",
            key.display()
        ),
    )
    .unwrap();
    path
}

/// A host that refuses connections, one that accepts but never answers,
/// a key the server does not accept, a missing repository directory and a
/// missing ssh: each is one error line that names the backend and the fix.
#[test]
fn sftp_errors_name_their_cause() {
    let Some(s) = sshd() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let good = anyhost_config(s, dir.path());
    let with = |config: &Path, location: &str, args: &[&str]| {
        let mut c = cairn(&cache);
        c.env("CAIRN_PASSWORD", "pw")
            .env(
                "CAIRN_SFTP_COMMAND",
                format!("ssh -F {} -p {} 127.0.0.1 -s sftp", config.display(), { location.split(':').nth(2).unwrap() }),
            )
            .args(["-r", location])
            .args(args);
        c
    };
    // Nothing listens on the port.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let dead = format!("sftp:127.0.0.1:{port}:/x");
    let line = fails(run(&mut with(&good, &dead, &["snapshots"])), 1, &["cannot reach", &dead, "Connection refused"]);
    assert!(line.contains("ssh"), "names the command: {line}");

    // A host that accepts and then says nothing (ConnectTimeout 3 in the config).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let hold = std::thread::spawn(move || {
        let conns: Vec<_> = silent.incoming().take(1).collect();
        std::thread::sleep(Duration::from_secs(8));
        drop(conns);
    });
    let mute = format!("sftp:127.0.0.1:{silent_port}:/x");
    fails(run(&mut with(&good, &mute, &["snapshots"])), 1, &["cannot reach", &mute, "timed out"]);
    drop(hold);

    // A key the server does not know.
    let other = dir.path().join("otherkey");
    let made = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(made.success());
    let refused = config_with_key(s, dir.path(), &other, "");
    let repo = format!("sftp:127.0.0.1:{}:{}/refused", s.var("SFTP_TEST_PORT"), s.var("SFTP_TEST_DIR"));
    fails(run(&mut with(&refused, &repo, &["snapshots"])), 1, &["access denied", "Permission denied", "ssh"]);

    // A directory that does not exist: open says so; init creates it (and its parents).
    let missing = format!("sftp:127.0.0.1:{}:{}/not/yet/there", s.var("SFTP_TEST_PORT"), s.var("SFTP_TEST_DIR"));
    fails(run(&mut with(&good, &missing, &["snapshots"])), 10, &["no repository at", &missing, "cairn init"]);
    let mut init = vec!["init"];
    init.extend(support::FAST_KDF);
    ok(run(&mut with(&good, &missing, &init)));
    ok(run(&mut with(&good, &missing, &["snapshots"])));

    // No such program.
    let mut c = cairn(&cache);
    c.env("CAIRN_PASSWORD", "pw").args(["-r", &missing, "--sftp-command", "/nonexistent/ssh x -s sftp", "snapshots"]);
    fails(run(&mut c), 1, &["cannot run the SFTP command", "/nonexistent/ssh", "--sftp-command"]);
}

/// Writes a pid file for each session the wrapper starts, so a test can
/// kill the ssh of an upload.
fn pid_wrapper(s: &Service, dir: &Path) -> (String, PathBuf) {
    let pids = dir.join("pids");
    let wrapper = dir.join("ssh-pid");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\necho $$ >> {}\nexec {} \"$@\"\n", pids.display(), s.var("SFTP_TEST_SSH")),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    (format!("{} {} -s sftp", wrapper.display(), s.var("SFTP_TEST_HOST")), pids)
}

fn kill_all(pids: &Path) {
    for pid in std::fs::read_to_string(pids).unwrap_or_default().lines() {
        if let Ok(pid) = pid.trim().parse::<i32>() {
            let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

/// Kills the ssh process while a 48 MB object is being uploaded. Without
/// retries the write fails with an error that says the SFTP command ended,
/// and nothing is under the object's name (at most a temporary file that
/// check reports and prune removes); with the default retries the write
/// goes through on a new connection, byte for byte.
#[tokio::test]
async fn killed_ssh_mid_upload_leaves_no_partial_object() {
    let Some(s) = sshd() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (command, pids) = pid_wrapper(s, dir.path());
    let location = s.location("kill");
    let server = server_dir(&location);
    let body: Vec<u8> = (0..48u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
    let id = Id::of_object(&body);
    for retries in [0, 4] {
        let _ = std::fs::remove_file(&pids);
        let opts = BackendOptions {
            sftp: SftpOptions { command: Some(command.clone()), connections: Some(1) },
            retry: RetryPolicy { max_retries: retries, ..Default::default() },
            ..Default::default()
        };
        let backend = Backend::open(&location, &opts).unwrap();
        backend.write_config(b"probe first".to_vec()).await.unwrap_or(WriteOutcome::AlreadyExists);
        let upload = tokio::spawn({
            let (backend, body) = (backend.clone(), Bytes::from(body.clone()));
            async move { backend.write_new(FileKind::Pack, &id, vec![body]).await }
        });
        // Kill once the temporary file has some bytes, not all.
        let data_dir = server.join("data").join(&id.to_hex()[..2]);
        let started = std::time::Instant::now();
        loop {
            let partial = files(&data_dir)
                .iter()
                .filter(|n| n.contains('#'))
                .any(|n| std::fs::metadata(data_dir.join(n)).is_ok_and(|m| m.len() > 1 << 20));
            if partial {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "the upload never started");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        kill_all(&pids);
        let result = upload.await.unwrap();
        let final_path = data_dir.join(id.to_hex());
        match retries {
            0 => {
                let err = result.unwrap_err().to_string();
                assert!(err.contains("SFTP") && err.contains("ended"), "{err}");
                assert!(!final_path.exists(), "no object under its final name after a failed upload");
                // The temporary file stays (its session died with it): check
                // and prune see it as an upload leftover, and prune can remove it.
                let leftovers = backend.list_upload_leftovers().await.unwrap();
                assert_eq!(leftovers.len(), 1, "{leftovers:?}");
                assert!(leftovers[0].path.starts_with(&format!("data/{}/{id}#", &id.to_hex()[..2])), "{leftovers:?}");
                backend.delete_upload_leftover(&leftovers[0]).await.unwrap();
                assert!(backend.list_upload_leftovers().await.unwrap().is_empty());
            }
            _ => {
                assert_eq!(result.unwrap(), WriteOutcome::Created);
                assert_eq!(std::fs::read(&final_path).unwrap(), body, "the retried upload is whole");
            }
        }
        // What is listed is never partial.
        for (listed, size) in backend.list(FileKind::Pack).await.unwrap() {
            assert_eq!((listed, size), (id, body.len() as u64));
        }
    }
}

/// A tmpfs of 1 MiB as the repository's disk: a pack that does not fit
/// gives an error that says the server's disk is probably full, and leaves
/// nothing behind.
#[tokio::test]
async fn full_disk_is_named_and_leaves_nothing() {
    let Some(s) = sshd() else { return };
    let location = s.location("full");
    let server = server_dir(&location);
    std::fs::create_dir_all(&server).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&server)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipping: cannot mount a small tmpfs here (needs root)");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(server.clone());
    let backend = Backend::open(&location, &options(s)).unwrap();
    let body = vec![7u8; 3 << 20];
    let id = Id::of_object(&body);
    let err = backend.write_new(FileKind::Pack, &id, vec![Bytes::from(body)]).await.unwrap_err().to_string();
    assert!(err.contains("disk is probably full") && err.contains("bytes free"), "{err}");
    assert!(files(&server).is_empty(), "nothing left: {:?}", files(&server));
}

/// `rclone serve sftp` claims hardlink@openssh.com but loses linked files:
/// the probe notices, the backend says why once, and falls back to
/// check-then-write, with which a repository still works.
#[tokio::test]
async fn probe_flags_rclone_serve_sftp_and_falls_back() {
    let Some(s) = sshd() else { return };
    if std::process::Command::new("rclone").arg("version").output().is_err() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "rclone is missing under CI (apt-get install rclone)");
        eprintln!("skipping: rclone is not installed (apt-get install rclone)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let served = dir.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let rclone = std::process::Command::new("rclone")
        .args(["serve", "sftp", "--no-auth", "--addr", &format!("127.0.0.1:{port}")])
        .arg(&served)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _rclone = Kill(rclone);
    let config = anyhost_config(s, dir.path());
    let command = format!("ssh -F {} -p {port} 127.0.0.1 -s sftp", config.display());
    let opts = BackendOptions { sftp: SftpOptions { command: Some(command), connections: None }, ..Default::default() };
    let backend = Backend::open("sftp:rclone:/repo", &opts).unwrap();
    let mut waited = 0;
    let first = loop {
        match backend.write_config(b"config".to_vec()).await {
            Ok(outcome) => break outcome,
            Err(e) if waited < 50 => {
                waited += 1;
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("rclone serve sftp never answered: {e}"),
        }
    };
    assert_eq!(first, WriteOutcome::Created);
    let reason = backend.create_fallback_reason().expect("the probe flags rclone");
    assert!(reason.contains("link"), "{reason}");
    assert_eq!(backend.write_config(b"other".to_vec()).await.unwrap(), WriteOutcome::AlreadyExists);
    assert_eq!(&backend.read_config().await.unwrap()[..], b"config");
    let id = Id::of_object(b"pack");
    assert_eq!(
        backend.write_new(FileKind::Pack, &id, vec![Bytes::from_static(b"pack")]).await.unwrap(),
        WriteOutcome::Created
    );
    assert_eq!(backend.list(FileKind::Pack).await.unwrap(), vec![(id, 4)]);
}
