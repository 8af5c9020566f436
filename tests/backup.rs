//! End-to-end tests of `cairn backup`, `restore` and the browsing commands
//! on a local repository.

mod support;

use support::fstree::{self, noise};
use support::{Env, backup, cairn, fails, noise_file, ok, run, s, stderr, stdout, summary};

#[test]
fn round_trip_keeps_every_kind_of_entry_and_metadata() {
    let env = Env::new();
    env.init();
    let src = env.root().join("src");
    let fixture = fstree::build(&src);
    eprintln!("xattrs: {}, devices: {}, owners: {}", fixture.xattrs, fixture.devices, fixture.owners);
    let first = backup(&env, &[s(&src)]);
    assert_eq!(first["errors"], 0, "{first}");
    assert!(first["files_new"].as_u64().unwrap() >= 15, "{first}");
    let target = env.root().join("restored");
    ok(run(&mut env.cmd(&["restore", "latest", "--target", s(&target), "--verify"])));
    fstree::assert_same_tree(&src, &target);

    // In batches of 3 files (hard links across batches included).
    let batched = env.root().join("batched");
    ok(run(&mut env.cmd(&["restore", "latest", "--target", s(&batched), "--batch-files", "3"])));
    fstree::assert_same_tree(&src, &batched);

    // Restoring again over the same target changes nothing.
    ok(run(&mut env.cmd(&["restore", "latest", "--target", s(&target), "--overwrite", "if-changed"])));
    fstree::assert_same_tree(&src, &target);
}

#[test]
fn restore_puts_a_directory_s_contents_into_the_target() {
    let env = Env::new();
    env.init();
    let src = env.root().join("opt/app/var/backups");
    std::fs::create_dir_all(src.join("db")).unwrap();
    std::fs::write(src.join("db/dump.sql"), "create table t();").unwrap();
    std::fs::write(src.join("top.txt"), "top").unwrap();
    let other = env.root().join("etc");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("hosts"), "127.0.0.1 localhost").unwrap();

    backup(&env, &[s(&src)]);
    let t = env.root().join("t1");
    // A dry run counts what the restore then writes.
    let dry = summary(&ok(run(&mut env.cmd(&["--json", "restore", "latest", "--target", s(&t), "--dry-run"]))));
    assert!(!t.exists());
    let done = summary(&ok(run(&mut env.cmd(&["--json", "restore", "latest", "--target", s(&t)]))));
    for field in ["files", "dirs", "bytes"] {
        assert_eq!(dry[field], done[field], "{field}: {dry} vs {done}");
    }
    assert_eq!(done["bytes"], 17 + 3);
    assert_eq!(std::fs::read_to_string(t.join("db/dump.sql")).unwrap(), "create table t();");
    assert_eq!(std::fs::read_to_string(t.join("top.txt")).unwrap(), "top");
    assert!(!t.join("opt").exists() && !t.join("backups").exists());

    // A path inside: relative to the backed-up directory, or its absolute path.
    let t2 = env.root().join("t2");
    ok(run(&mut env.cmd(&["restore", "latest:/db", "--target", s(&t2)])));
    assert!(t2.join("dump.sql").is_file());
    let t3 = env.root().join("t3");
    let absolute = format!("latest:{}", s(&src.join("db/dump.sql")));
    ok(run(&mut env.cmd(&["restore", &absolute, "--target", s(&t3)])));
    assert!(t3.join("dump.sql").is_file());
    let missing = run(&mut env.cmd(&["restore", "latest:/nope", "--target", s(&t3)]));
    fails(missing, 1, &["/nope is not in the snapshot"]);

    // Several paths: each under its base name.
    backup(&env, &[s(&src), s(&other)]);
    let t4 = env.root().join("t4");
    ok(run(&mut env.cmd(&["restore", "latest", "--target", s(&t4)])));
    assert!(t4.join("backups/db/dump.sql").is_file());
    assert!(t4.join("etc/hosts").is_file());

    // Include and exclude patterns.
    let t5 = env.root().join("t5");
    ok(run(&mut env.cmd(&["restore", "latest", "--target", s(&t5), "--include", "*.sql"])));
    assert!(t5.join("backups/db/dump.sql").is_file());
    assert!(!t5.join("backups/top.txt").exists() && !t5.join("etc").exists());
    let t6 = env.root().join("t6");
    ok(run(&mut env.cmd(&["restore", "latest", "--target", s(&t6), "--exclude", "/backups/db"])));
    assert!(!t6.join("backups/db").exists() && t6.join("backups/top.txt").is_file());
}

#[test]
fn incremental_backups_store_only_changes_and_unchanged_reruns_read_nothing() {
    let env = Env::new();
    env.init();
    let src = env.root().join("data");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    for i in 0..12u64 {
        std::fs::write(src.join(format!("sub/file-{i}")), noise(i, 2_000_000)).unwrap();
    }
    for i in 0..200u64 {
        std::fs::write(src.join(format!("small-{i}")), noise(100 + i, 300 + i as usize)).unwrap();
    }
    let first = backup(&env, &[s(&src)]);
    assert_eq!(first["files_new"], 212, "{first}");
    let total = first["bytes_added"].as_u64().unwrap();
    assert!(total > 24_000_000, "{first}");

    // Unchanged: no file is opened, nothing is added but the snapshot.
    let again = backup(&env, &[s(&src)]);
    assert_eq!(again["files_unchanged"], 212, "{again}");
    assert_eq!(again["bytes_read"], 0, "{again}");
    assert!(again["bytes_added"].as_u64().unwrap() < 20_000, "{again}");

    // Change 100 bytes in the middle of one big file, append to another,
    // add a small file: only the chunks around the changes are stored.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(src.join("sub/file-3")).unwrap();
        f.write_all_at(&[0xAB; 100], 1_000_000).unwrap();
        let mut g = std::fs::OpenOptions::new().append(true).open(src.join("sub/file-7")).unwrap();
        std::io::Write::write_all(&mut g, &noise(999, 50_000)).unwrap();
        std::fs::write(src.join("small-new"), "new").unwrap();
    }
    let third = backup(&env, &[s(&src)]);
    assert_eq!(third["files_changed"], 2, "{third}");
    assert_eq!(third["files_new"], 1, "{third}");
    assert_eq!(third["files_unchanged"], 210, "{third}");
    assert_eq!(third["bytes_read"], 2_000_000 + 2_050_000 + 3, "{third}");
    // At most two 2 MB files' worth (a changed file is a chunk or two here).
    let added = third["bytes_added"].as_u64().unwrap();
    assert!(added < 4_200_000, "added {added} for a 150 KB change: {third}");

    let target = env.root().join("restored");
    ok(run(&mut env.cmd(&["restore", "latest", "--target", s(&target)])));
    fstree::assert_same_tree(&src, &target);

    // --force reads everything again, storing nothing new but the blobs of
    // the small files' bundle that `small-new` joined (FORMAT.md §11.1): at
    // most one bundle blob here (≤ 256 KiB), against 24 MB read.
    let forced = backup(&env, &["--force", s(&src)]);
    assert_eq!(forced["files_unchanged"], 0, "{forced}");
    assert!(forced["bytes_added"].as_u64().unwrap() < 20_000 + 256 * 1024, "{forced}");
}

#[test]
fn stdin_and_command_output_are_backed_up_as_one_file() {
    let env = Env::new();
    env.init();
    let mut cmd = env.cmd(&["--json", "backup", "--stdin", "--stdin-filename", "dump.sql"]);
    let payload = noise(7, 1_500_000);
    let out = {
        use std::io::Write;
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&payload).unwrap();
        child.wait_with_output().unwrap()
    };
    let first = summary(&ok(out));
    assert_eq!(first["bytes_read"], 1_500_000, "{first}");
    let dumped = run(&mut env.cmd(&["dump", "latest", "/dump.sql"]));
    assert!(dumped.status.success(), "{}", stderr(&dumped));
    assert!(dumped.stdout == payload, "dump differs from what was piped in");
    let target = env.root().join("t");
    ok(run(&mut env.cmd(&["restore", "latest", "--target", s(&target)])));
    assert!(std::fs::read(target.join("dump.sql")).unwrap() == payload);

    // A command that succeeds: its stdout is the file.
    let good = backup(&env, &["--stdin-filename", "seq.txt", "--stdin-from-command", "--", "seq", "1", "5000"]);
    assert!(good["snapshot_id"].is_string(), "{good}");
    let seq = ok(run(&mut env.cmd(&["dump", "latest", "seq.txt"])));
    assert_eq!(seq.lines().count(), 5000);
    assert_eq!(env.snapshot_count(), 2);

    // A command that fails after writing: no snapshot.
    let bad = run(&mut env.cmd(&["backup", "--stdin-from-command", "--", "sh", "-c", "seq 1 100000; exit 3"]));
    fails(bad, 1, &["failed", "no snapshot was written"]);
    assert_eq!(env.snapshot_count(), 2);
    let missing = run(&mut env.cmd(&["backup", "--stdin-from-command", "--", "/no/such/program"]));
    fails(missing, 1, &["cannot run"]);
    assert_eq!(env.snapshot_count(), 2);
}

#[test]
fn restore_overwrite_and_delete_policies() {
    let env = Env::new();
    env.init();
    let src = env.root().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), "snapshot a").unwrap();
    std::fs::write(src.join("b"), "snapshot b").unwrap();
    backup(&env, &[s(&src)]);
    let target = env.root().join("t");
    let prepare = || {
        let _ = std::fs::remove_dir_all(&target);
        ok(run(&mut env.cmd(&["restore", "latest", "--target", s(&target)])));
        std::fs::write(target.join("a"), "local change to a").unwrap();
        std::fs::write(target.join("extra"), "not in the snapshot").unwrap();
    };
    let restore = |args: &[&str]| {
        let mut all = vec!["--json", "restore", "latest", "--target", s(&target)];
        all.extend(args);
        summary(&ok(run(&mut env.cmd(&all))))
    };

    prepare();
    let never = restore(&["--overwrite", "never"]);
    assert_eq!(std::fs::read_to_string(target.join("a")).unwrap(), "local change to a");
    assert_eq!(never["skipped"], 2, "{never}");
    assert!(target.join("extra").exists());

    prepare();
    let changed = restore(&["--overwrite", "if-changed"]);
    assert_eq!(std::fs::read_to_string(target.join("a")).unwrap(), "snapshot a");
    assert_eq!(changed["skipped"], 1, "b was unchanged: {changed}");

    prepare();
    restore(&[]);
    assert_eq!(std::fs::read_to_string(target.join("a")).unwrap(), "snapshot a");
    assert!(target.join("extra").exists(), "without --delete nothing is removed");

    prepare();
    let dry = restore(&["--delete", "--dry-run"]);
    assert_eq!(dry["deleted"], 1, "{dry}");
    assert!(target.join("extra").exists() && std::fs::read_to_string(target.join("a")).unwrap().contains("local"));
    let deleted = restore(&["--delete"]);
    assert_eq!(deleted["deleted"], 1, "{deleted}");
    assert!(!target.join("extra").exists());
    fstree::assert_same_tree(&src, &target);
}

#[test]
fn unreadable_files_are_warnings_and_exit_3_missing_sources_are_errors() {
    let env = Env::new();
    env.init();
    let src = env.root().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("fine"), "fine").unwrap();

    let missing = run(&mut env.cmd(&["backup", s(&src), "/no/such/path"]));
    fails(missing, 1, &["/no/such/path does not exist"]);
    assert_eq!(env.snapshot_count(), 0);
    let packs = std::fs::read_dir(env.path("data")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(packs, 0, "nothing may be written");

    // /proc/self/mem is a regular file whose first page cannot be read (EIO),
    // even by root.
    let out = run(&mut env.cmd(&["--json", "backup", s(&src), "/proc/self/mem"]));
    assert_eq!(out.status.code(), Some(3), "{}\n{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("\"message_type\":\"warning\"") && text.contains("/proc/self/mem"), "{text}");
    assert_eq!(summary(&text)["errors"], 1);
    assert_eq!(env.snapshot_count(), 1, "the snapshot is written, with the error recorded");
    let listing = ok(run(&mut env.cmd(&["--json", "ls", "latest"])));
    let mem: serde_json::Value = listing
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["path"] == "/mem")
        .expect("the unreadable file is listed");
    assert!(mem["error"].is_string(), "{mem}");
    // Restoring it would create an empty file that passes for the real one.
    let target = env.root().join("restored");
    let restored = run(&mut env.cmd(&["restore", "latest", "--target", s(&target)]));
    assert_eq!(restored.status.code(), Some(3), "{}", stderr(&restored));
    assert!(stderr(&restored).contains("not restored: it could not be read when it was backed up"));
    assert!(!target.join("mem").exists(), "no fake file");
    assert_eq!(std::fs::read(target.join("src/fine")).unwrap(), b"fine");
}

#[test]
fn first_use_creates_the_default_repository_with_a_private_password_file() {
    use std::os::unix::fs::PermissionsExt;
    let home = tempfile::tempdir().unwrap();
    let src = home.path().join("documents");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("note.txt"), "remember").unwrap();
    let plain = |args: &[&str]| {
        let mut c = cairn(&home.path().join("cache"));
        c.env("HOME", home.path()).env_remove("XDG_DATA_HOME").env_remove("XDG_CONFIG_HOME").args(args);
        c
    };
    let none = run(&mut plain(&["snapshots"]));
    fails(none, 1, &["no repository given", "cairn backup"]);

    let first = run(&mut plain(&["backup", s(&src)]));
    assert!(first.status.success(), "{}", stderr(&first));
    let repo = home.path().join(".local/share/cairn/repository");
    let pw = home.path().join(".config/cairn/password");
    let told = stderr(&first);
    assert!(told.contains(s(&repo)) && told.contains(s(&pw)) && told.contains("safe"), "{told}");
    assert_eq!(std::fs::metadata(&pw).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(repo.join("config").is_file());
    // The generated password's key skips Argon2id (FORMAT.md §4.4).
    let generated = std::fs::read_to_string(&pw).unwrap();
    assert!(cairn_repo::is_generated_password(generated.trim_end().as_bytes()), "{generated}");
    assert_eq!(key_algorithms(&repo), ["generated-password"]);

    let second = ok(run(&mut plain(&["backup", s(&src)])));
    assert!(second.contains("0 new, 0 changed, 1 unchanged"), "{second}");
    let target = home.path().join("back");
    ok(run(&mut plain(&["restore", "latest", "--target", s(&target)])));
    assert_eq!(std::fs::read_to_string(target.join("note.txt")).unwrap(), "remember");

    // A configured repository that does not exist is an error without --init.
    let elsewhere = home.path().join("elsewhere");
    let mut cmd = plain(&["-r", s(&elsewhere), "backup", s(&src)]);
    cmd.env("CAIRN_PASSWORD", "pw");
    fails(run(&mut cmd), 10, &["no repository", "cairn init"]);
    let mut cmd = plain(&["-r", s(&elsewhere), "backup", "--init", s(&src)]);
    cmd.env("CAIRN_PASSWORD", "pw");
    ok(run(&mut cmd));
    // A typed password keeps Argon2id.
    assert_eq!(key_algorithms(&elsewhere), ["argon2id"]);
}

/// The `kdf.algorithm` of each key file of a local repository.
fn key_algorithms(repo: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(repo.join("keys")).unwrap() {
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(entry.unwrap().path()).unwrap()).unwrap();
        out.push(json["kdf"]["algorithm"].as_str().unwrap().to_owned());
    }
    out.sort();
    out
}

#[test]
fn init_and_key_add_generate_passwords_that_skip_argon2() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let dir = env.root().join("secrets");
    let repo = env.root().join("generated-repo");
    let first = dir.join("repo.password");
    let bare = |args: &[&str]| {
        let mut c = cairn(&env.root().join("cache"));
        c.args(args).env_remove("CAIRN_PASSWORD");
        c
    };
    let mut init = bare(&["-r", s(&repo), "init", "--generate-password", s(&first)]);
    let told = ok(run(&mut init));
    assert!(told.contains(s(&first)) && told.contains("safe"), "{told}");
    assert_eq!(std::fs::metadata(&first).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(key_algorithms(&repo), ["generated-password"]);

    // The file opens the repository; a second generated key and a typed one.
    let with_file = |args: &[&str]| bare(&[&["-r", s(&repo), "--password-file", s(&first)], args].concat());
    let second = dir.join("second.password");
    ok(run(&mut with_file(&["key", "add", "--generate-password", s(&second)])));
    let mut typed = with_file(&["key", "add", "--kdf-memory", "8MiB", "--kdf-iterations", "1"]);
    typed.env("CAIRN_NEW_PASSWORD", "a person's password");
    ok(run(&mut typed));
    assert_eq!(key_algorithms(&repo), ["argon2id", "generated-password", "generated-password"]);
    ok(run(&mut bare(&["-r", s(&repo), "--password-file", s(&second), "snapshots"])));

    // An existing file is never overwritten.
    let again = run(&mut with_file(&["key", "add", "--generate-password", s(&second)]));
    fails(again, 1, &["cannot create the password file", "exists"]);
}

#[test]
fn browsing_commands() {
    let env = Env::new();
    env.init();
    let src = env.root().join("site");
    std::fs::create_dir_all(src.join("logs")).unwrap();
    std::fs::write(src.join("index.html"), "<html>").unwrap();
    std::fs::write(src.join("logs/a.log"), "a").unwrap();
    backup(&env, &["--tag", "web,daily", "--host", "web1", s(&src)]);
    std::fs::write(src.join("logs/b.log"), "bb").unwrap();
    std::fs::write(src.join("index.html"), "<html><body>").unwrap();
    std::fs::remove_file(src.join("logs/a.log")).unwrap();
    backup(&env, &["--host", "web1", "--time", "2030-01-02 03:04:05", s(&src)]);

    let table = ok(run(&mut env.cmd(&["snapshots"])));
    assert!(table.contains("web1") && table.contains("daily,web") && table.contains("2030-01-02"), "{table}");
    let tagged: serde_json::Value =
        serde_json::from_str(&ok(run(&mut env.cmd(&["--json", "snapshots", "--tag", "web"])))).unwrap();
    assert_eq!(tagged.as_array().unwrap().len(), 1);
    let first_id = tagged[0]["short_id"].as_str().unwrap().to_owned();

    let ls = ok(run(&mut env.cmd(&["ls", "latest"])));
    assert_eq!(ls.lines().collect::<Vec<_>>(), ["/index.html", "/logs", "/logs/b.log"], "{ls}");
    let long = ok(run(&mut env.cmd(&["ls", "-l", &first_id, "/logs"])));
    assert!(long.contains("-rw-") && long.contains("/logs/a.log"), "{long}");
    // One form of path whatever was asked: from the snapshot's root.
    for asked in ["logs", "/logs", "logs/"] {
        let sub = ok(run(&mut env.cmd(&["ls", "latest", asked])));
        assert_eq!(sub.lines().collect::<Vec<_>>(), ["/logs/b.log"], "ls latest {asked}");
    }
    let file = ok(run(&mut env.cmd(&["ls", "latest", "logs/b.log"])));
    assert_eq!(file.trim(), "/logs/b.log");

    let found = ok(run(&mut env.cmd(&["find", "*.log"])));
    assert_eq!(found.lines().count(), 2, "{found}");
    assert!(found.contains("/logs/a.log") && found.contains("/logs/b.log"), "{found}");

    let diff = ok(run(&mut env.cmd(&["diff", &first_id, "latest"])));
    assert!(diff.contains("+  /logs/b.log"), "{diff}");
    assert!(diff.contains("-  /logs/a.log"), "{diff}");
    assert!(diff.contains("M  /index.html"), "{diff}");

    let stats: serde_json::Value = serde_json::from_str(&ok(run(&mut env.cmd(&["--json", "stats"])))).unwrap();
    assert_eq!(stats["snapshots"], 2);
    assert_eq!(stats["restore_files"], 4);
    assert_eq!(stats["restore_bytes"], 6 + 1 + 12 + 2);

    ok(run(&mut env.cmd(&["tag", &first_id, "--add", "keep", "--remove", "daily"])));
    let kept: serde_json::Value =
        serde_json::from_str(&ok(run(&mut env.cmd(&["--json", "snapshots", "--tag", "keep"])))).unwrap();
    assert_eq!(kept[0]["tags"], serde_json::json!(["keep", "web"]));
    assert_eq!(env.snapshot_count(), 2);

    let tar = run(&mut env.cmd(&["dump", "latest", "/"]));
    assert!(tar.status.success(), "{}", stderr(&tar));
    let unpacked = env.root().join("untar");
    std::fs::create_dir_all(&unpacked).unwrap();
    let mut untar = std::process::Command::new("tar")
        .args(["-x", "-C", s(&unpacked)])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(untar.stdin.as_mut().unwrap(), &tar.stdout).unwrap();
    drop(untar.stdin.take());
    assert!(untar.wait().unwrap().success());
    assert_eq!(std::fs::read_to_string(unpacked.join("logs/b.log")).unwrap(), "bb");
}

#[test]
fn exclude_options_and_dry_run() {
    let env = Env::new();
    env.init();
    let src = env.root().join("home");
    for dir in ["docs", "cache/tmp", "project/node_modules/pkg", "skipme"] {
        std::fs::create_dir_all(src.join(dir)).unwrap();
    }
    std::fs::write(src.join("docs/a.txt"), "keep").unwrap();
    std::fs::write(src.join("docs/b.tmp"), "drop by pattern").unwrap();
    std::fs::write(src.join("cache/tmp/x"), "drop by anchored pattern").unwrap();
    std::fs::write(src.join("project/node_modules/pkg/index.js"), "drop by file pattern").unwrap();
    std::fs::write(src.join("project/main.rs"), "keep").unwrap();
    std::fs::write(src.join("skipme/.nobackup"), "").unwrap();
    std::fs::create_dir_all(src.join("docs/.cache")).unwrap();
    std::fs::write(src.join("docs/.cache/CACHEDIR.TAG"), "Signature: 8a477f597d28d172789f06886806bc55\n").unwrap();
    std::fs::write(src.join("skipme/data"), "drop by marker").unwrap();
    let patterns = env.root().join("excludes");
    std::fs::write(&patterns, "# build output\nnode_modules\n\n").unwrap();
    let anchored = format!("{}/cache", s(&src));

    let dry = backup(&env, &["--dry-run", "-e", "*.tmp", s(&src)]);
    assert!(dry["snapshot_id"].is_null(), "{dry}");
    assert_eq!(env.snapshot_count(), 0, "a dry run writes no snapshot");

    let args = [
        "-e",
        "*.tmp",
        "-e",
        &anchored,
        "--exclude-file",
        s(&patterns),
        "--exclude-if-present",
        ".nobackup",
        "--exclude-caches",
        s(&src),
    ];
    let done = backup(&env, &args);
    assert_eq!(done["files_new"], 2, "{done}");
    let listing = ok(run(&mut env.cmd(&["ls", "latest"])));
    assert_eq!(listing.lines().collect::<Vec<_>>(), ["/docs", "/docs/a.txt", "/project", "/project/main.rs"]);
}

#[test]
fn a_put_only_key_backs_up_incrementally_but_cannot_read() {
    let env = Env::new();
    env.init();
    let put_pw = env.root().join("put-pw");
    std::fs::write(&put_pw, "put only\n").unwrap();
    let mut add = vec!["key", "add", "--put-only", "--new-password-file", s(&put_pw)];
    add.extend(support::FAST_KDF);
    ok(run(&mut env.cmd(&add)));
    let put = |args: &[&str]| {
        let mut c = cairn(&env.root().join("cache"));
        c.args(["-r", &env.repo(), "--password-file", s(&put_pw)]).args(args);
        c
    };
    let src = env.root().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("d/a"), noise(1, 700_000)).unwrap();
    std::fs::write(src.join("b"), "bee").unwrap();

    let first = summary(&ok(run(&mut put(&["--json", "backup", s(&src)]))));
    assert_eq!(first["files_new"], 2, "{first}");
    // The next run compares with the trees this machine kept: nothing is read.
    let second = summary(&ok(run(&mut put(&["--json", "backup", s(&src)]))));
    assert_eq!(second["files_unchanged"], 2, "{second}");
    assert_eq!(second["bytes_read"], 0, "{second}");
    std::fs::write(src.join("b"), "changed").unwrap();
    let third = summary(&ok(run(&mut put(&["--json", "backup", s(&src)]))));
    assert_eq!(third["files_changed"], 1, "{third}");
    assert_eq!(third["bytes_read"], 7, "{third}");

    // A full key reads what the put-only key wrote.
    let target = env.root().join("t");
    ok(run(&mut env.cmd(&["restore", "latest", "--target", s(&target)])));
    fstree::assert_same_tree(&src, &target);
    ok(run(&mut env.cmd(&["check", "--read-data"])));
    // The put-only key itself cannot read anything.
    for args in [&["restore", "latest", "--target", "/tmp/never"][..], &["snapshots"][..], &["ls", "latest"][..]] {
        fails(run(&mut put(args)), 1, &["put-only key"]);
    }
}

/// Bytes of complete packs under `data/` (an upload cut short leaves a
/// temporary `<id>#n` file, which is not a pack).
fn pack_bytes(env: &Env) -> u64 {
    let mut total = 0;
    for dir in std::fs::read_dir(env.path("data")).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(dir.path()).into_iter().flatten().flatten() {
            if !f.file_name().to_string_lossy().contains('#') {
                total += f.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    total
}

#[test]
fn a_backup_killed_midway_is_resumed_not_uploaded_again() {
    let env = Env::new();
    env.init();
    let src = env.root().join("src");
    std::fs::create_dir_all(&src).unwrap();
    // 120 MB that does not compress or deduplicate: 7 packs of 16 MiB.
    for i in 0..30u64 {
        noise_file(&src.join(format!("f{i:02}")), 1000 + i, 4_000_000);
    }
    let mut child = env.cmd(&["backup", "-q", src.to_str().unwrap()]).spawn().unwrap();
    // Kill it once a good part of the data is stored, before it indexes
    // anything (it would write its first index file after 64 packs).
    let started = std::time::Instant::now();
    while pack_bytes(&env) < 50_000_000 {
        assert!(child.try_wait().unwrap().is_none(), "the backup finished before it could be killed");
        assert!(started.elapsed().as_secs() < 300, "the backup stored too little in 5 minutes");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let stored = pack_bytes(&env);
    let index_files = std::fs::read_dir(env.path("index")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(index_files, 0, "killed before it wrote any index file");

    let rerun = ok(run(&mut env.cmd(&["--json", "backup", src.to_str().unwrap()])));
    let added = summary(&rerun)["bytes_added"].as_u64().unwrap();
    // The data, stored once, is 120 MB plus a little sealing overhead (the
    // noise does not compress); whatever the repository holds beyond that
    // was uploaded twice.
    let total = pack_bytes(&env);
    let uploaded_twice = total.saturating_sub(120_000_000 + 1_200_000);
    eprintln!(
        "killed run stored {stored} bytes; the rerun added {added}; uploaded twice: {uploaded_twice} ({:.1}%)",
        100.0 * uploaded_twice as f64 / stored as f64
    );
    assert!(uploaded_twice * 10 <= stored, "uploaded twice {uploaded_twice} bytes of the {stored} already stored");
    let check = ok(run(&mut env.cmd(&["check", "--read-data"])));
    assert!(check.contains("no problems found"), "{check}");
    let target = env.root().join("restored");
    ok(run(&mut env.cmd(&["restore", "latest", "--target", target.to_str().unwrap()])));
    for i in [0u64, 29] {
        assert_eq!(
            std::fs::read(target.join(format!("f{i:02}"))).unwrap(),
            support::fstree::noise(1000 + i, 4_000_000)
        );
    }
}

#[test]
fn names_with_control_characters_are_escaped_for_people_and_exact_in_json() {
    let env = Env::new();
    env.init();
    let src = env.root().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let hostile = "\u{1b}[2J\u{1b}[31mowned\nfake line";
    std::fs::write(src.join(hostile), b"x").unwrap();
    ok(run(&mut env.cmd(&["backup", "-q", s(&src)])));
    for args in [&["ls", "latest"][..], &["ls", "-l", "latest"], &["find", "*owned*"]] {
        let out = ok(run(&mut env.cmd(args)));
        assert!(!out.contains('\u{1b}') && out.contains("\\x1b[2J\\x1b[31mowned\\nfake line"), "{args:?}: {out:?}");
    }
    let json = ok(run(&mut env.cmd(&["--json", "ls", "latest"])));
    assert!(json.contains("\\u001b[2J\\u001b[31mowned\\nfake line"), "JSON stays exact: {json}");
    let target = env.root().join("restored");
    ok(run(&mut env.cmd(&["restore", "latest", "--target", s(&target)])));
    assert_eq!(std::fs::read(target.join(hostile)).unwrap_or_default(), b"x", "the file itself keeps its name");
}

#[test]
fn restore_can_refuse_setuid_bits_and_device_nodes_and_warns_about_them() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let env = Env::new();
    env.init();
    let src = env.root().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("suid"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(src.join("suid"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    // Device nodes need root (CAP_MKNOD): the tests run as root here and in CI.
    let root = nix::unistd::geteuid().is_root();
    if root {
        let null = nix::sys::stat::makedev(1, 3);
        nix::sys::stat::mknod(
            &src.join("dev"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            null,
        )
        .unwrap();
    }
    ok(run(&mut env.cmd(&["backup", "-q", s(&src)])));

    let plain = env.root().join("plain");
    let out = run(&mut env.cmd(&["restore", "latest", "--target", s(&plain)]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("1 setuid or setgid files and directories were restored"), "{}", stderr(&out));
    assert_eq!(std::fs::metadata(plain.join("suid")).unwrap().permissions().mode() & 0o7777, 0o4755);
    if root {
        assert!(stderr(&out).contains("1 device nodes were restored"), "{}", stderr(&out));
        assert!(std::fs::symlink_metadata(plain.join("dev")).unwrap().file_type().is_char_device());
    }

    let careful = env.root().join("careful");
    let out =
        run(&mut env.cmd(&["restore", "latest", "--target", s(&careful), "--no-same-permissions", "--no-device"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    assert_eq!(std::fs::metadata(careful.join("suid")).unwrap().permissions().mode() & 0o7777, 0o755);
    assert!(!careful.join("dev").exists(), "no device node");
}

/// Holes of sparse files are not data: they count in the restore size but
/// not in the deduplication ratio (a sparse image once read 1871x).
#[test]
fn stats_leave_sparse_holes_out_of_the_deduplication_ratio() {
    let env = Env::new();
    env.init();
    let src = env.root().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let file = std::fs::File::create(src.join("image")).unwrap();
    file.set_len(200 << 20).unwrap();
    std::os::unix::fs::FileExt::write_at(&file, &support::fstree::noise(7, 100_000), 50 << 20).unwrap();
    drop(file);
    ok(run(&mut env.cmd(&["backup", "-q", s(&src)])));
    let stats: serde_json::Value = serde_json::from_str(&ok(run(&mut env.cmd(&["--json", "stats"])))).unwrap();
    assert_eq!(stats["restore_bytes"], 200 << 20);
    let data = stats["restore_data_bytes"].as_u64().unwrap();
    assert!((100_000..=2 << 20).contains(&data), "only the written part (and what the filesystem rounds up): {data}");
    let ratio = stats["dedup_ratio"].as_f64().unwrap();
    assert!((0.9..=1.1).contains(&ratio), "nothing is deduplicated here: {ratio}");
}

/// Restoring into `--target` gives the target the restored directory's own
/// mode and times (as `cp -a` and `rsync -a` do), and a hard link between
/// two symlinks stays one.
#[test]
fn the_target_gets_the_directory_s_metadata_and_linked_symlinks_stay_linked() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let env = Env::new();
    env.init();
    let src = env.root().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    std::os::unix::fs::symlink("f", src.join("l1")).unwrap();
    std::fs::hard_link(src.join("l1"), src.join("l2")).unwrap();
    assert!(std::fs::symlink_metadata(src.join("l2")).unwrap().file_type().is_symlink());
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o750)).unwrap();
    let then = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    std::fs::File::open(&src).unwrap().set_modified(then).unwrap();
    ok(run(&mut env.cmd(&["backup", "-q", s(&src)])));

    let target = env.root().join("restored");
    ok(run(&mut env.cmd(&["restore", "latest", "--target", s(&target)])));
    let meta = std::fs::metadata(&target).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o750);
    assert_eq!(meta.modified().unwrap(), then);
    let (l1, l2) =
        (std::fs::symlink_metadata(target.join("l1")).unwrap(), std::fs::symlink_metadata(target.join("l2")).unwrap());
    assert!(l1.file_type().is_symlink() && l2.file_type().is_symlink());
    assert_eq!(l1.ino(), l2.ino(), "one symlink, two names");
    assert_eq!(std::fs::read_link(target.join("l2")).unwrap(), std::path::Path::new("f"));
}

/// `--profile` (and the JSON summary's `stages`) account for every byte at
/// each stage: what was read was chunked, hashed and looked up; only new
/// chunks were compressed; every pack written was counted.
#[test]
fn the_stage_profile_accounts_for_every_byte() {
    let env = Env::new();
    env.init();
    let src = env.root().join("data");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..4u64 {
        std::fs::write(src.join(format!("big-{i}")), noise(i, 3_000_000)).unwrap();
    }
    // A copy: read and hashed again, but neither compressed nor written.
    std::fs::write(src.join("copy-of-big-0"), noise(0, 3_000_000)).unwrap();
    std::fs::write(src.join("small"), b"a small file").unwrap();
    let first = backup(&env, &[s(&src)]);
    let stage = |name: &str| -> (f64, u64) {
        let entry = first["stages"].as_array().unwrap().iter().find(|s| s["stage"] == name).unwrap();
        (entry["busy"].as_f64().unwrap(), entry["bytes"].as_u64().unwrap())
    };
    let read = first["bytes_read"].as_u64().unwrap();
    assert_eq!(read, 15_000_012, "{first}");
    assert_eq!(stage("read").1, read);
    assert_eq!(stage("hash").1, read);
    assert_eq!(stage("dedup").1, read);
    // The small file is read whole into its directory's bundle, which is
    // cut too (FORMAT.md §11.1).
    assert_eq!(stage("chunk").1, read);
    // The copy's chunks were found in the session: not compressed again.
    let compressed = stage("compress").1;
    assert!((12_000_000..=12_000_012 + 200_000).contains(&compressed), "{first}");
    // Packs are their blobs plus a sealed header each.
    let (packed, written) = (stage("pack").1, stage("write").1);
    assert_eq!(packed, first["bytes_added"].as_u64().unwrap(), "{first}");
    assert!(written > packed && written < packed + 64 * 1024, "{first}");
    for name in ["read", "chunk", "hash", "compress", "encrypt", "write"] {
        assert!(stage(name).0 > 0.0, "{name} took no time: {first}");
    }
    assert!(first["cpu_secs"].as_f64().unwrap() > 0.0, "{first}");

    std::fs::write(src.join("new"), noise(9, 1_000_000)).unwrap();
    let out = ok(run(&mut env.cmd(&["backup", "--profile", s(&src)])));
    assert!(out.contains("snapshot"), "{out}");
    let profiled = stderr(&run(&mut env.cmd(&["backup", "--profile", "--force", s(&src)])));
    for name in
        ["stage", "read", "chunk", "hash", "dedup", "wait", "compress", "encrypt", "pack", "write", "process CPU"]
    {
        assert!(profiled.contains(name), "no {name} in: {profiled}");
    }
}
