//! `cairn mount` through real FUSE: the mounted snapshot is the restored
//! one (`diff -r`), with the recorded metadata, read-only, and the mount
//! ends cleanly on SIGTERM and on an unmount from outside.
//!
//! These tests need `/dev/fuse` (and root, or `fusermount3`). Where it is
//! missing they say so and pass; under `CI=true` a mount that fails where
//! `/dev/fuse` exists fails the test.

// This test uses a part of the PostgreSQL support only.
#[allow(dead_code)]
#[path = "support/pg.rs"]
mod pgsupport;
mod support;

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{Env, noise_file, ok, run, stderr};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn fuse_available() -> bool {
    if Path::new("/dev/fuse").exists() {
        return true;
    }
    eprintln!("skipping: no /dev/fuse on this machine (FUSE mount tests need it)");
    false
}

fn is_mounted(point: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let point = std::fs::canonicalize(point).unwrap_or(point.to_path_buf());
    mounts.lines().any(|l| l.split(' ').nth(4) == Some(s(&point)))
}

/// A running `cairn mount`: a test that fails midway must not leave it
/// serving (it would hold the mount for the rest of the machine's life).
struct Mounted {
    child: Option<Child>,
    point: std::path::PathBuf,
}

impl Mounted {
    fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.as_ref().map_or(0, |c| c.id() as i32))
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), signal).unwrap();
    }

    /// Waits for `cairn mount` to end and returns its stderr.
    fn finished(mut self) -> String {
        let out = self.child.take().unwrap().wait_with_output().unwrap();
        assert!(out.status.success(), "cairn mount: {:?}: {}", out.status, stderr(&out));
        stderr(&out)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::SIGKILL);
            let _ = child.wait();
            let _ = Command::new("umount").arg("-l").arg(&self.point).output();
        }
    }
}

/// Starts `cairn mount` and waits until the mount serves `snapshots/`.
fn start_mount(env: &Env, point: &Path, extra: &[&str]) -> Mounted {
    let mut args = vec!["mount", s(point)];
    args.extend(extra);
    let child = env.cmd(&args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut mounted = Mounted { child: Some(child), point: point.to_path_buf() };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !point.join("snapshots").exists() {
        let child = mounted.child.as_mut().unwrap();
        if let Ok(Some(status)) = child.try_wait() {
            let out = mounted.child.take().unwrap().wait_with_output().unwrap();
            panic!("cairn mount exited ({status}) before serving: {}", stderr(&out));
        }
        assert!(Instant::now() < deadline, "the mount did not come up in 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    mounted
}

#[test]
fn a_mounted_snapshot_is_the_restored_one() {
    if !fuse_available() {
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.root().join("src");
    std::fs::create_dir_all(src.join("docs/empty-dir")).unwrap();
    noise_file(&src.join("docs/big.bin"), 1, 12_000_000);
    std::fs::write(src.join("docs/readme.txt"), "hello cairn\n").unwrap();
    std::fs::write(src.join("docs/empty"), "").unwrap();
    std::fs::write(src.join(std::ffi::OsStr::from_bytes(b"docs/caf\xe9")), "latin-1 name").unwrap();
    std::os::unix::fs::symlink("readme.txt", src.join("docs/link")).unwrap();
    std::os::unix::fs::symlink("../nowhere", src.join("docs/dangling")).unwrap();
    std::fs::hard_link(src.join("docs/readme.txt"), src.join("hard")).unwrap();
    let xattrs = xattr::set(src.join("docs/readme.txt"), "user.note", b"kept").is_ok();
    ok(run(&mut env.cmd(&["backup", "--host", "db1", "--tag", "nightly", s(&src)])));
    std::fs::write(src.join("docs/readme.txt"), "changed\n").unwrap();
    ok(run(&mut env.cmd(&["backup", "--host", "web", s(&src)])));
    let restored = env.root().join("restored");
    ok(run(&mut env.cmd(&["restore", "latest", "--target", s(&restored)])));

    let point = env.root().join("mnt");
    std::fs::create_dir(&point).unwrap();
    let child = start_mount(&env, &point, &[]);
    let names = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    };
    assert_eq!(names(&point), ["hosts", "ids", "snapshots", "tags"]);
    assert_eq!(names(&point.join("hosts")), ["db1", "web"]);
    assert_eq!(names(&point.join("tags/nightly")).len(), 2, "one snapshot and latest");
    let latest = point.join("snapshots/latest");
    assert!(std::fs::symlink_metadata(&latest).unwrap().file_type().is_symlink());

    // The whole tree, content and links, as restored.
    // (The trailing slash follows the `latest` link; links below are compared as links.)
    let latest_dir = format!("{}/", s(&latest));
    let diff = Command::new("diff").args(["-r", "--no-dereference", s(&restored), &latest_dir]).output().unwrap();
    assert!(diff.status.success(), "diff -r: {}{}", String::from_utf8_lossy(&diff.stdout), stderr(&diff));
    let older = point.join("hosts/db1/latest/docs/readme.txt");
    assert_eq!(std::fs::read_to_string(older).unwrap(), "hello cairn\n");

    // Metadata as recorded.
    for rel in ["docs/big.bin", "docs/readme.txt", "docs", "hard"] {
        let (a, b) = (std::fs::metadata(src.join(rel)).unwrap(), std::fs::metadata(latest.join(rel)).unwrap());
        assert_eq!((a.mode(), a.uid(), a.gid(), a.mtime()), (b.mode(), b.uid(), b.gid(), b.mtime()), "{rel}");
        if a.is_file() {
            assert_eq!((a.len(), a.nlink()), (b.len(), b.nlink()), "{rel}");
        }
    }
    assert_eq!(std::fs::read_link(latest.join("docs/dangling")).unwrap(), Path::new("../nowhere"));
    if xattrs {
        let got = xattr::get(latest.join("docs/readme.txt"), "user.note").unwrap();
        assert_eq!(got.as_deref(), Some(&b"kept"[..]));
    }

    // Read-only.
    let write = std::fs::write(latest.join("docs/new"), "x").unwrap_err();
    assert_eq!(write.raw_os_error(), Some(nix::libc::EROFS), "{write}");

    // SIGTERM unmounts and ends the command.
    child.signal(nix::sys::signal::Signal::SIGTERM);
    let said = child.finished();
    assert!(said.contains("unmounted"), "{said}");
    assert!(!is_mounted(&point), "still mounted");

    // An unmount from outside ends it too.
    let child = start_mount(&env, &point, &["--host", "db1"]);
    assert_eq!(names(&point.join("hosts")), ["db1"], "the filter applies");
    let umount = Command::new("umount").arg(&point).output().unwrap();
    if umount.status.success() {
        child.finished();
    } else {
        // Not root: fusermount3 unmounts a user's FUSE mount.
        let fusermount = Command::new("fusermount3").arg("-u").arg(&point).output().unwrap();
        assert!(fusermount.status.success(), "{}{}", stderr(&umount), stderr(&fusermount));
        child.finished();
    }
    assert!(!is_mounted(&point));
}

#[test]
fn a_mountpoint_inside_the_repository_or_missing_is_refused() {
    if !fuse_available() {
        return;
    }
    let env = Env::new();
    env.init();
    let inside = env.path("keys");
    let out = run(&mut env.cmd(&["mount", s(&inside)]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("inside the repository"), "{}", stderr(&out));
    let missing = env.root().join("no-such-dir");
    let out = run(&mut env.cmd(&["mount", s(&missing)]));
    assert!(stderr(&out).contains("create an empty directory"), "{}", stderr(&out));
}

#[test]
fn a_postgresql_snapshot_shows_its_tables_as_csv() {
    if !fuse_available() {
        return;
    }
    let Some(pg) = pgsupport::Pg::shared() else { return };
    let db = pg.fresh_db("mnt");
    pg.psql(
        &db,
        "CREATE TABLE people (id int PRIMARY KEY, name text, note text);
         INSERT INTO people VALUES (1, 'alice', NULL), (2, '', 'a,b'), (3, 'say \"hi\"', E'two\nlines\tand \\ slash'),
                                   (4, E'\\.', 'café');
         CREATE SCHEMA \"odd/schema\";
         CREATE TABLE \"odd/schema\".\"t 1\" AS SELECT g AS n, repeat('x', g % 50) AS pad FROM generate_series(1, 20000) g;",
    );
    let env = Env::new();
    env.init();
    ok(run(&mut env.cmd(&["pg", "backup", "-d", &pg.conn(&db)])));
    let point = env.root().join("mnt");
    std::fs::create_dir(&point).unwrap();
    let child = start_mount(&env, &point, &[]);
    let latest = point.join("snapshots/latest");
    assert!(latest.join("manifest.json").is_file());
    let mut names: Vec<String> = std::fs::read_dir(latest.join("csv"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["odd%2Fschema.t 1.csv", "public.people.csv"]);
    for (file, table) in [("public.people.csv", "people"), ("odd%2Fschema.t 1.csv", "\"odd/schema\".\"t 1\"")] {
        let copy = format!("COPY (SELECT * FROM {table} ORDER BY 1) TO STDOUT WITH (FORMAT csv, HEADER)");
        let want = pg.tool("psql", &db).args(["-X", "-q", "-c", &copy]).output().unwrap();
        assert!(want.status.success(), "{}", stderr(&want));
        let got = std::fs::read(latest.join("csv").join(file)).unwrap();
        assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&want.stdout), "{file}");
        assert_eq!(std::fs::metadata(latest.join("csv").join(file)).unwrap().len(), got.len() as u64);
    }
    child.signal(nix::sys::signal::Signal::SIGINT);
    child.finished();
}
