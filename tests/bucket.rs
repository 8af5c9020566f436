//! Buckets as a backup source and a restore target, against real servers:
//! SeaweedFS (S3) and Azurite (Azure Blob Storage).

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use support::{FAST_KDF, Kind, Service, cairn_on, fstree, ok, run, stdout};

/// A signed S3 request made with curl (as scripts/start-s3.sh does):
/// returns the status, the response headers (lower-case names) and body.
fn s3(s: &Service, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Response {
    let dir = tempfile::tempdir().unwrap();
    let (head, out, input) = (dir.path().join("h"), dir.path().join("b"), dir.path().join("in"));
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "--path-as-is", "--max-time", "60", "-o"]).arg(&out).arg("-D").arg(&head);
    cmd.args(["-w", "%{http_code}", "--aws-sigv4", "aws:amz:us-east-1:s3"]);
    cmd.args(["--user", &format!("{}:{}", s.var("AWS_ACCESS_KEY_ID"), s.var("AWS_SECRET_ACCESS_KEY"))]);
    cmd.args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"]);
    for (k, v) in headers {
        cmd.args(["-H", &format!("{k}: {v}")]);
    }
    if method == "HEAD" {
        cmd.arg("-I");
    } else {
        cmd.args(["-X", method]);
    }
    if let Some(body) = body {
        std::fs::write(&input, body).unwrap();
        cmd.arg("--data-binary").arg(format!("@{}", input.display()));
    }
    cmd.arg(format!("{}{path}", s.var("AWS_ENDPOINT_URL")));
    let o = cmd.stdin(Stdio::null()).output().expect("curl runs");
    let status: u16 = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap_or(0);
    let headers = std::fs::read_to_string(&head)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Response { status, headers, body: std::fs::read(&out).unwrap_or_default() }
}

struct Response {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

fn create_bucket(s: &Service, name: &str) {
    let r = s3(s, "PUT", &format!("/{name}"), &[], None);
    assert!(r.status == 200, "create bucket {name}: {} {}", r.status, String::from_utf8_lossy(&r.body));
}

fn put(s: &Service, bucket: &str, key: &str, body: &[u8], headers: &[(&str, &str)]) {
    let r = s3(s, "PUT", &format!("/{bucket}/{key}"), headers, Some(body));
    assert_eq!(r.status, 200, "put {key}: {}", String::from_utf8_lossy(&r.body));
}

/// An object as compared between buckets: bytes, content type, user metadata.
#[derive(Debug, PartialEq)]
struct Object {
    bytes: Vec<u8>,
    content_type: Option<String>,
    meta: BTreeMap<String, String>,
}

fn object(s: &Service, bucket: &str, key: &str) -> Object {
    let r = s3(s, "GET", &format!("/{bucket}/{key}"), &[], None);
    assert_eq!(r.status, 200, "get {bucket}/{key}");
    Object {
        content_type: r.headers.get("content-type").cloned(),
        meta: r
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("x-amz-meta-")?.to_owned(), v.clone())))
            .collect(),
        bytes: r.body,
    }
}

fn json(out: &str) -> serde_json::Value {
    let line = out.lines().rev().find(|l| l.contains("\"summary\"")).unwrap_or_else(|| panic!("no summary: {out}"));
    serde_json::from_str(line).unwrap()
}

/// The objects of the first bucket source in a backup's JSON summary.
fn bucket_counts(summary: &serde_json::Value) -> (u64, u64, u64) {
    let b = &summary["buckets"][0];
    (b["objects"].as_u64().unwrap(), b["downloaded"].as_u64().unwrap(), b["unchanged"].as_u64().unwrap())
}

/// Key, size, content type, user metadata.
type Spec = (&'static str, usize, &'static str, &'static [(&'static str, &'static str)]);

const KEYS: &[Spec] = &[
    ("readme.txt", 1_000, "text/plain", &[("owner", "ann"), ("project", "cairn")]),
    ("photos/2024/img-1.jpg", 300_000, "image/jpeg", &[("camera", "x100")]),
    ("photos/2024/img-2.jpg", 250_000, "image/jpeg", &[]),
    ("empty.bin", 0, "application/octet-stream", &[]),
    ("photos/notes.md", 2_000, "text/markdown", &[("k", "v with spaces")]),
    ("deep/a/b/c/d/e/f.json", 10, "application/json", &[]),
    ("100%.txt", 5, "text/plain", &[]),
    ("big/archive.tar", 20 * 1024 * 1024 + 17, "application/x-tar", &[("size", "large")]),
];

#[test]
fn bucket_backup_is_incremental_and_restores_into_a_new_bucket() {
    let Some(s) = Service::shared(Kind::S3) else { return };
    let pid = std::process::id();
    let (src, dst) = (format!("src-{pid}"), format!("dst-{pid}"));
    create_bucket(s, &src);
    for (i, (key, len, ctype, meta)) in KEYS.iter().enumerate() {
        let mut headers = vec![("Content-Type", *ctype)];
        let meta: Vec<(String, &str)> = meta.iter().map(|(k, v)| (format!("x-amz-meta-{k}"), *v)).collect();
        headers.extend(meta.iter().map(|(k, v)| (k.as_str(), *v)));
        put(s, &src, &key.replace('%', "%25"), &fstree::noise(i as u64, *len), &headers);
    }
    let dir = tempfile::tempdir().unwrap();
    let (cache, repo) = (dir.path().join("cache"), dir.path().join("repo"));
    let repo = repo.to_str().unwrap();
    let cmd = |args: &[&str]| {
        let mut c = cairn_on(s, &cache, repo, args);
        // The source's endpoint is given as an option, not the environment.
        c.env_remove("AWS_ENDPOINT_URL");
        c
    };
    let mut init = vec!["init"];
    init.extend(FAST_KDF);
    ok(run(&mut cmd(&init)));
    let endpoint = s.var("AWS_ENDPOINT_URL");
    let source = format!("s3:{src}");
    let backup = |extra: &[&str]| {
        let mut args = vec!["--json", "backup", source.as_str(), "--source-endpoint", endpoint];
        args.extend(extra);
        json(&ok(run(&mut cmd(&args))))
    };

    // The summary's file counts, as for directories: new, changed, unchanged; bytes read.
    let files = |summary: &serde_json::Value| {
        let n = |field: &str| summary[field].as_u64().unwrap();
        (n("files_new"), n("files_changed"), n("files_unchanged"), n("bytes_read"))
    };
    let all_bytes: u64 = KEYS.iter().map(|k| k.1 as u64).sum();
    let first = backup(&[]);
    assert_eq!(bucket_counts(&first), (KEYS.len() as u64, KEYS.len() as u64, 0), "{first}");
    assert_eq!(files(&first), (KEYS.len() as u64, 0, 0, all_bytes), "{first}");
    // Unchanged: everything comes from the parent, nothing is downloaded.
    let second = backup(&[]);
    assert_eq!(bucket_counts(&second), (KEYS.len() as u64, 0, KEYS.len() as u64), "{second}");
    assert_eq!(second["buckets"][0]["downloaded_bytes"], 0);
    assert_eq!(files(&second), (0, 0, KEYS.len() as u64, 0), "{second}");
    // One object replaced, one added: those two are read.
    put(s, &src, "readme.txt", b"new text", &[("Content-Type", "text/plain"), ("x-amz-meta-owner", "bob")]);
    put(s, &src, "added.txt", b"added", &[]);
    let third = backup(&[]);
    assert_eq!(bucket_counts(&third), (KEYS.len() as u64 + 1, 2, KEYS.len() as u64 - 1), "{third}");
    assert_eq!(files(&third), (1, 1, KEYS.len() as u64 - 1, 8 + 5), "{third}");
    // --force reads everything again.
    assert_eq!(bucket_counts(&backup(&["--force"])).1, KEYS.len() as u64 + 1);

    // Into a new bucket (multipart for the large object), verified.
    create_bucket(s, &dst);
    let target = format!("s3:{dst}/restored");
    let restore = |extra: &[&str]| {
        let mut args = vec!["--json", "restore", "latest", "--target", target.as_str(), "--target-endpoint", endpoint];
        args.extend(extra);
        json(&ok(run(&mut cmd(&args))))
    };
    let dry = restore(&["--dry-run"]);
    assert_eq!(dry["objects"], KEYS.len() as u64 + 1, "{dry}");
    assert_eq!(s3(s, "HEAD", &format!("/{dst}/restored/added.txt"), &[], None).status, 404, "a dry run writes nothing");
    let restored = restore(&["--verify"]);
    assert_eq!((restored["objects"].as_u64(), restored["verified"].as_u64()), (Some(9), Some(9)), "{restored}");
    let mut keys: Vec<&str> = KEYS.iter().map(|k| k.0).collect();
    keys.push("added.txt");
    for key in keys {
        let key = key.replace('%', "%25");
        let (a, b) = (object(s, &src, &key), object(s, &dst, &format!("restored/{key}")));
        assert_eq!(a, b, "{key}");
    }
    assert_eq!(object(s, &dst, "restored/readme.txt").meta.get("owner").map(String::as_str), Some("bob"));

    // Into a directory: the files, with the headers as extended attributes.
    let local = dir.path().join("local");
    ok(run(&mut cmd(&["restore", "latest", "--target", local.to_str().unwrap()])));
    let old = cmd(&["--json", "snapshots"]).output().unwrap();
    let snapshots: serde_json::Value = serde_json::from_slice(&old.stdout).unwrap();
    let with_src = snapshots.as_array().unwrap().iter().filter(|s| s["paths"][0] == source.as_str()).count();
    assert_eq!(with_src, 4);
    let big = std::fs::read(local.join("big/archive.tar")).unwrap();
    assert_eq!(big, fstree::noise(7, 20 * 1024 * 1024 + 17));
    assert_eq!(std::fs::read(local.join("100%25.txt")).unwrap(), fstree::noise(6, 5), "the escaped name");
    if let Ok(Some(ctype)) = xattr::get(local.join("photos/notes.md"), "user.cairn.content-type") {
        assert_eq!(ctype, b"text/markdown");
    }

    // A bucket restored by cairn (a multipart object among them) backs up
    // the same: the restored copy's snapshot has the same files.
    let copy = format!("s3:{dst}/restored");
    let again = json(&ok(run(&mut cmd(&["--json", "backup", &copy, "--source-endpoint", endpoint]))));
    assert_eq!(bucket_counts(&again).0, KEYS.len() as u64 + 1);

    // Restoring again with --overwrite if-changed writes only what differs
    // in size or ETag from the snapshot's record: here the object edited in
    // the target (SeaweedFS gives the multipart copy of the large object
    // the whole content's MD5, so it stays). never writes nothing that is
    // there.
    put(s, &dst, "restored/readme.txt", b"edited", &[]);
    let if_changed = restore(&["--overwrite", "if-changed"]);
    assert_eq!((if_changed["objects"].as_u64(), if_changed["skipped"].as_u64()), (Some(1), Some(8)), "{if_changed}");
    assert_eq!(object(s, &dst, "restored/readme.txt"), object(s, &src, "readme.txt"));
    put(s, &dst, "restored/readme.txt", b"edited", &[]);
    let never = restore(&["--overwrite", "never"]);
    assert_eq!((never["objects"].as_u64(), never["skipped"].as_u64()), (Some(0), Some(9)), "{never}");
    assert_eq!(object(s, &dst, "restored/readme.txt").bytes, b"edited");
}

#[test]
fn objects_that_change_during_a_backup_are_reported_with_exit_3() {
    let Some(s) = Service::shared(Kind::S3) else { return };
    let bucket = format!("drift-{}", std::process::id());
    create_bucket(s, &bucket);
    // Many objects read one at a time before the last ones, which the
    // test changes as soon as the listing is done.
    for i in 0..40 {
        put(s, &bucket, &format!("a/{i:03}"), &fstree::noise(i, 512 * 1024), &[]);
    }
    put(s, &bucket, "z/changed", b"before", &[]);
    put(s, &bucket, "z/vanished", b"here", &[]);
    let dir = tempfile::tempdir().unwrap();
    let (cache, repo) = (dir.path().join("cache"), dir.path().join("repo"));
    let repo = repo.to_str().unwrap();
    let mut init = vec!["init"];
    init.extend(FAST_KDF);
    ok(run(&mut cairn_on(s, &cache, repo, &init)));
    let mut child = cairn_on(s, &cache, repo, &["-v", "backup", &format!("s3:{bucket}"), "--downloads", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut err, &mut line).unwrap() == 0 {
            panic!("the backup ended before it listed the bucket: {seen}");
        }
        seen.push_str(&line);
        if line.contains("objects listed") {
            break;
        }
    }
    put(s, &bucket, "z/changed", b"after, longer", &[]);
    assert_eq!(s3(s, "DELETE", &format!("/{bucket}/z/vanished"), &[], None).status, 204);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    let all = format!("{seen}{rest}");
    assert_eq!(out.status.code(), Some(3), "stdout: {}\nstderr: {all}", stdout(&out));
    assert!(all.contains("2 objects of s3:") && all.contains("changed  z/changed"), "{all}");
    assert!(all.contains("vanished z/vanished"), "{all}");
    // The snapshot holds what was read, and records the drift.
    let snaps = ok(run(&mut cairn_on(s, &cache, repo, &["--json", "snapshots"])));
    assert!(snaps.contains("\"listing_started\"") && snaps.contains("\"vanished\""), "{snaps}");
    let target = dir.path().join("out");
    ok(run(&mut cairn_on(s, &cache, repo, &["restore", "latest", "--target", target.to_str().unwrap()])));
    assert_eq!(std::fs::read(target.join("z/changed")).unwrap(), b"after, longer");
    assert!(!target.join("z/vanished").exists());
}

#[test]
fn not_a_bucket_and_mixed_sources_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let env = support::Env::new();
    env.init();
    let file = dir.path().join("f");
    std::fs::write(&file, b"x").unwrap();
    let o = run(&mut env.cmd(&["backup", "s3:b", file.to_str().unwrap()]));
    support::fails(o, 2, &["separate snapshots"]);
    let o = run(&mut env.cmd(&["backup", file.to_str().unwrap(), "--versions-at", "2024-01-01"]));
    support::fails(o, 2, &["--versions-at"]);
}

/// Azure (Azurite): a directory restored into a container, that container
/// backed up as a bucket, and restored into a directory again.
#[test]
fn azure_container_round_trip() {
    let Some(s) = Service::shared(Kind::Azure) else { return };
    let dir = tempfile::tempdir().unwrap();
    let (cache, repo) = (dir.path().join("cache"), dir.path().join("repo"));
    let repo = repo.to_str().unwrap();
    let cmd = |args: &[&str]| cairn_on(s, &cache, repo, args);
    let mut init = vec!["init"];
    init.extend(FAST_KDF);
    ok(run(&mut cmd(&init)));
    let src = dir.path().join("src");
    for (i, (path, len)) in
        [("a.txt", 10), ("d/e/f.bin", 200_000), ("empty", 0), ("big.bin", 9 * 1024 * 1024)].iter().enumerate()
    {
        let p = src.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, fstree::noise(i as u64, *len)).unwrap();
    }
    ok(run(&mut cmd(&["backup", src.to_str().unwrap()])));
    let container = format!("azure:{}/bucket-{}", s.var("AZURE_CONTAINER"), std::process::id());
    let restored = ok(run(&mut cmd(&["restore", "latest", "--target", &container, "--verify"])));
    assert!(restored.contains("4 objects") && restored.contains("4 objects verified"), "{restored}");
    let first = json(&ok(run(&mut cmd(&["--json", "backup", &container]))));
    assert_eq!(bucket_counts(&first), (4, 4, 0), "{first}");
    let second = json(&ok(run(&mut cmd(&["--json", "backup", &container]))));
    assert_eq!(bucket_counts(&second), (4, 0, 4), "{second}");
    let out = dir.path().join("out");
    ok(run(&mut cmd(&["restore", "latest", "--target", out.to_str().unwrap()])));
    assert_same_files(&src, &out);
}

/// Asserts that every file below `a` has the same bytes below `b`, and no more files.
fn assert_same_files(a: &Path, b: &Path) {
    fn files(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files(root, &path, out);
            } else {
                out.insert(path.strip_prefix(root).unwrap().display().to_string(), std::fs::read(&path).unwrap());
            }
        }
    }
    let (mut x, mut y) = (BTreeMap::new(), BTreeMap::new());
    files(a, a, &mut x);
    files(b, b, &mut y);
    assert_eq!(x.keys().collect::<Vec<_>>(), y.keys().collect::<Vec<_>>());
    assert!(x == y, "contents differ");
}

/// A job with a bucket source beside files: `cairn run` backs the bucket up
/// (its credentials from an env file, as a repository's), then restores it.
#[test]
fn a_job_backs_up_a_bucket_beside_files() {
    let Some(s) = Service::shared(Kind::S3) else { return };
    let bucket = format!("job-{}", std::process::id());
    create_bucket(s, &bucket);
    put(s, &bucket, "uploads/avatar.png", &fstree::noise(1, 5_000), &[("Content-Type", "image/png")]);
    put(s, &bucket, "uploads/doc.pdf", &fstree::noise(2, 70_000), &[("x-amz-meta-user", "42")]);
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let data = home.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("app.conf"), b"x=1").unwrap();
    std::fs::write(home.join("password"), "job password\n").unwrap();
    let env_file = home.join("bucket.env");
    std::fs::write(
        &env_file,
        format!(
            "AWS_ACCESS_KEY_ID={}\nAWS_SECRET_ACCESS_KEY={}\n",
            s.var("AWS_ACCESS_KEY_ID"),
            s.var("AWS_SECRET_ACCESS_KEY")
        ),
    )
    .unwrap();
    let mut perms = std::fs::metadata(&env_file).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
    std::fs::set_permissions(&env_file, perms.clone()).unwrap();
    std::fs::set_permissions(home.join("password"), perms).unwrap();
    let config = home.join("cairn.toml");
    std::fs::write(
        &config,
        format!(
            r#"version = 1
heartbeat = "off"
[repository.local]
location = "{repo}"
password-file = "{password}"
init = true

[job.nightly]
into = "local"

[[job.nightly.source]]
files = ["{data}"]

[[job.nightly.source]]
bucket = "s3:{bucket}/uploads"
s3-endpoint = "{endpoint}"
env-file = "{env_file}"
"#,
            repo = home.join("repo").display(),
            password = home.join("password").display(),
            data = data.display(),
            endpoint = s.var("AWS_ENDPOINT_URL"),
            env_file = env_file.display(),
        ),
    )
    .unwrap();
    // No AWS_* variables: the env file and the config say everything.
    let cmd = |args: &[&str]| {
        let mut c = support::cairn(&home.join("cache"));
        c.env("HOME", home).env("CAIRN_CONFIG", &config).args(args);
        c
    };
    let out = run(&mut cmd(&["run", "nightly"]));
    assert!(out.status.success(), "{}\n{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    let mut restore = cmd(&["--json", "snapshots"]);
    restore.env("CAIRN_REPOSITORY", home.join("repo")).env("CAIRN_PASSWORD_FILE", home.join("password"));
    let snapshots: serde_json::Value = serde_json::from_str(&ok(run(&mut restore))).unwrap();
    let location = format!("s3:{bucket}/uploads");
    assert!(snapshots.as_array().unwrap().iter().any(|s| s["paths"][0] == location.as_str()), "{snapshots}");
    // `--path` selects a bucket's snapshots by its location.
    let target = home.join("out");
    let mut restore = cmd(&["restore", "latest", "--path", &location, "--target"]);
    restore.arg(&target).env("CAIRN_REPOSITORY", home.join("repo")).env("CAIRN_PASSWORD_FILE", home.join("password"));
    ok(run(&mut restore));
    assert_eq!(std::fs::read(target.join("doc.pdf")).unwrap(), fstree::noise(2, 70_000));
}

/// Keys that are not path names: stored under their escaped names,
/// restored into a new bucket under the same keys. (SeaweedFS itself folds
/// `a//b` into `a/b`, keeps no bytes for a `dir/` marker and refuses names
/// over 255 bytes; the escaping's own tests cover those.)
#[test]
fn odd_keys_round_trip_through_their_escaped_names() {
    let Some(s) = Service::shared(Kind::S3) else { return };
    let pid = std::process::id();
    let (src, dst) = (format!("odd-{pid}"), format!("odd-copy-{pid}"));
    create_bucket(s, &src);
    create_bucket(s, &dst);
    let long = "L".repeat(240);
    // (key, URL-encoded key)
    let keys: Vec<(String, String)> = vec![
        ("dir/".into(), "dir/".into()),
        ("dir/x".into(), "dir/x".into()),
        ("plain".into(), "plain".into()),
        ("plain/child".into(), "plain/child".into()),
        ("tab\there".into(), "tab%09here".into()),
        ("ctrl\u{1}".into(), "ctrl%01".into()),
        ("space and+plus".into(), "space%20and%2Bplus".into()),
        ("100%".into(), "100%25".into()),
        (format!("long/{long}"), format!("long/{long}")),
    ];
    for (i, (_, url)) in keys.iter().enumerate() {
        let body = if url.ends_with('/') { Vec::new() } else { fstree::noise(i as u64, 100 + i) };
        put(s, &src, url, &body, &[("Content-Type", "text/x-odd"), ("x-amz-meta-i", &i.to_string())]);
    }
    let dir = tempfile::tempdir().unwrap();
    let (cache, repo) = (dir.path().join("cache"), dir.path().join("repo"));
    let repo = repo.to_str().unwrap();
    let cmd = |args: &[&str]| cairn_on(s, &cache, repo, args);
    let mut init = vec!["init"];
    init.extend(FAST_KDF);
    ok(run(&mut cmd(&init)));
    let first = json(&ok(run(&mut cmd(&["--json", "backup", &format!("s3:{src}")]))));
    assert_eq!(bucket_counts(&first), (keys.len() as u64, keys.len() as u64, 0), "{first}");
    let names = ok(run(&mut cmd(&["ls", "latest"])));
    for name in [
        "/dir/%",
        "/plain/%=",
        "/plain/child",
        "/tab%09here",
        "/ctrl%01",
        "/100%25",
        &format!("/long/{}%+", "L".repeat(200)),
    ] {
        assert!(names.lines().any(|l| l == name), "{name} missing in:\n{names}");
    }
    let again = json(&ok(run(&mut cmd(&["--json", "backup", &format!("s3:{src}")]))));
    assert_eq!(bucket_counts(&again).1, 0, "nothing downloaded again: {again}");
    let restored =
        json(&ok(run(&mut cmd(&["--json", "restore", "latest", "--target", &format!("s3:{dst}"), "--verify"]))));
    assert_eq!(restored["verified"], keys.len() as u64, "{restored}");
    for (key, url) in &keys {
        assert_eq!(object(s, &src, url), object(s, &dst, url), "{key:?}");
    }
}

/// `--versions-at`: a versioned bucket backed up as it was at two times.
#[test]
fn versions_at_backs_up_the_bucket_as_it_was() {
    let Some(s) = Service::shared(Kind::S3) else { return };
    let bucket = format!("versioned-{}", std::process::id());
    create_bucket(s, &bucket);
    let config = "<VersioningConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
                  <Status>Enabled</Status></VersioningConfiguration>";
    let r = s3(s, "PUT", &format!("/{bucket}?versioning="), &[], Some(config.as_bytes()));
    assert_eq!(r.status, 200, "enable versioning: {}", String::from_utf8_lossy(&r.body));
    let pause = || std::thread::sleep(std::time::Duration::from_millis(1_100));
    put(s, &bucket, "k", b"one", &[]);
    pause();
    let t1 = jiff::Timestamp::now();
    pause();
    put(s, &bucket, "k", b"two!", &[]);
    put(s, &bucket, "g", b"short-lived", &[]);
    pause();
    let t2 = jiff::Timestamp::now();
    pause();
    assert_eq!(s3(s, "DELETE", &format!("/{bucket}/g"), &[], None).status, 204);
    let dir = tempfile::tempdir().unwrap();
    let (cache, repo) = (dir.path().join("cache"), dir.path().join("repo"));
    let repo = repo.to_str().unwrap();
    let cmd = |args: &[&str]| cairn_on(s, &cache, repo, args);
    let mut init = vec!["init"];
    init.extend(FAST_KDF);
    ok(run(&mut cmd(&init)));
    let location = format!("s3:{bucket}");
    let files_at = |at: Option<jiff::Timestamp>| -> BTreeMap<String, Vec<u8>> {
        let mut args = vec!["backup".to_owned(), location.clone()];
        if let Some(at) = at {
            args.extend(["--versions-at".to_owned(), at.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(run(&mut cmd(&args)));
        let out = dir.path().join(format!("out-{}", at.map(|t| t.as_second()).unwrap_or(0)));
        ok(run(&mut cmd(&["restore", "latest", "--target", out.to_str().unwrap()])));
        std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
            .collect()
    };
    let map = |v: &[(&str, &[u8])]| v.iter().map(|(k, b)| (k.to_string(), b.to_vec())).collect::<BTreeMap<_, _>>();
    assert_eq!(files_at(Some(t1)), map(&[("k", b"one")]));
    assert_eq!(files_at(Some(t2)), map(&[("g", b"short-lived"), ("k", b"two!")]));
    assert_eq!(files_at(None), map(&[("k", b"two!")]));
}
