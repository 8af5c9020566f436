//! End-to-end tests against a real S3 server (SeaweedFS over HTTP), and the
//! configuration checks of the GCS backend.

mod support;

use cairn_repo::{Backend, BackendOptions, OpenOptions, Repository};
use support::{Kind, Service, scenarios};

#[test]
fn cli_init_and_keys_on_s3() {
    let Some(s) = Service::shared(Kind::S3) else { return };
    scenarios::cli_init_and_keys(s);
}

#[test]
fn s3_errors_name_their_cause() {
    let Some(s) = Service::shared(Kind::S3) else { return };
    scenarios::cli_errors_name_their_cause(s);
}

#[tokio::test]
async fn conditional_create_lets_exactly_one_writer_win_on_s3() {
    let Some(s) = Service::shared(Kind::S3) else { return };
    scenarios::conditional_create_race(s).await;
}

#[tokio::test]
async fn blobs_and_snapshots_round_trip_on_s3() {
    let Some(s) = Service::shared(Kind::S3) else { return };
    scenarios::round_trip(s).await;
}

/// GCS has no emulator that object_store's client works with: check the
/// location parsing here, and run a real round trip only when credentials
/// and a bucket are given (CAIRN_TEST_GCS_BUCKET plus the GOOGLE_* variables).
#[tokio::test]
async fn gcs_configuration_and_optional_real_bucket() {
    let err = Backend::open("gs:", &BackendOptions::default()).unwrap_err();
    assert!(err.to_string().contains("no bucket"), "{err}");
    let Ok(bucket) = std::env::var("CAIRN_TEST_GCS_BUCKET") else {
        eprintln!("skipping the real GCS round trip: CAIRN_TEST_GCS_BUCKET is not set");
        return;
    };
    let loc = format!("gs:{bucket}/cairn-test-{}", std::process::id());
    let backend = Backend::open(&loc, &BackendOptions::default()).unwrap();
    let opts = cairn_repo::InitOptions { kdf_memory_kib: 8192, kdf_iterations: 1, ..Default::default() };
    let repo = Repository::init(backend.clone(), b"pw", opts, OpenOptions::default()).await.unwrap();
    let again = Repository::open(backend, b"pw", OpenOptions::default()).await.unwrap();
    assert_eq!(again.id(), repo.id());
}

#[test]
fn file_backup_and_restore_round_trip_on_s3() {
    let Some(s) = Service::shared(Kind::S3) else { return };
    scenarios::file_round_trip(s);
}

#[test]
fn copy_offsite_to_s3_and_restore_from_there() {
    let Some(s) = Service::shared(Kind::S3) else { return };
    scenarios::copy_offsite(s);
}

#[test]
fn backups_and_prunes_run_concurrently_on_s3() {
    let Some(s) = Service::shared(Kind::S3) else { return };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let location = s.location("concurrent-prune");
    let cmd = |args: &[&str]| support::cairn_on(s, &cache, &location, args);
    scenarios::backup_and_prune_concurrently(&cmd, &dir.path().join("work"));
}

/// Adds a SeaweedFS identity whose only action is `Write` (put and delete;
/// no read, no list) and returns its access key and secret.
fn write_only_identity(s: &Service) -> (&'static str, &'static str) {
    let port: u32 = s.var("AWS_ENDPOINT_URL").rsplit(':').next().unwrap().parse().unwrap();
    let weed = std::env::var("S3_BIN").unwrap_or_else(|_| "weed".into());
    let script =
        "s3.configure -access_key=cairn-wo -secret_key=cairn-wo-secret -user=writer -actions=Write -apply\nexit\n";
    let mut child = std::process::Command::new(weed)
        .arg("shell")
        .arg(format!("-master=127.0.0.1:{}.{}", port + 1, port + 6))
        .arg(format!("-filer=127.0.0.1:{}.{}", port + 3, port + 8))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("weed shell");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("cairn-wo"), "{}", String::from_utf8_lossy(&out.stderr));
    ("cairn-wo", "cairn-wo-secret")
}

/// A real S3 identity that may only write: backups into it work (from what
/// `init` left in the local cache), and everything that reads says the
/// credentials are write-only (exit 12) — `restore` included.
#[test]
fn write_only_s3_credentials_back_up_and_refuse_to_read() {
    let Some(s) = Service::shared(Kind::S3) else { return };
    let (key, secret) = write_only_identity(s);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let location = s.location("write-only");
    let admin = |args: &[&str]| support::cairn_on(s, &cache, &location, args);
    let writer = |args: &[&str]| {
        let mut c = admin(args);
        c.env("AWS_ACCESS_KEY_ID", key).env("AWS_SECRET_ACCESS_KEY", secret);
        c
    };
    let mut init = vec!["init"];
    init.extend(support::FAST_KDF);
    support::ok(support::run(&mut admin(&init)));
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    support::noise_file(&src.join("a"), 7, 300_000);
    let src_arg = src.to_str().unwrap();
    // The new identity takes a moment to reach the S3 gateway.
    let mut attempt = 0;
    loop {
        let out = support::run(&mut writer(&["backup", src_arg]));
        if out.status.success() {
            break;
        }
        attempt += 1;
        assert!(attempt < 20, "write-only backup failed: {}", support::stderr(&out));
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    support::noise_file(&src.join("b"), 8, 100_000);
    support::ok(support::run(&mut writer(&["backup", src_arg])));
    for args in [&["snapshots"][..], &["check"], &["prune"], &["ls", "latest"]] {
        support::fails(support::run(&mut writer(args)), 12, &["write-only", "credentials that can read"]);
    }
    let target = dir.path().join("restored");
    let t = target.to_str().unwrap();
    support::fails(support::run(&mut writer(&["restore", "latest", "--target", t])), 12, &["needs read access"]);
    let listed = support::ok(support::run(&mut admin(&["snapshots"])));
    assert!(listed.contains("2 snapshots"), "{listed}");
    support::ok(support::run(&mut admin(&["restore", "latest", "--target", t])));
    assert_eq!(std::fs::read(target.join("b")).unwrap(), std::fs::read(src.join("b")).unwrap());
    assert_eq!(std::fs::read(target.join("a")).unwrap(), std::fs::read(src.join("a")).unwrap());
}
