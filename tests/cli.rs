//! End-to-end tests of the `cairn` binary on a local repository.

mod support;

use std::path::Path;
use std::sync::Arc;

use cairn_repo::testing::Writer;

use cairn_repo::{Backend, BackendOptions, BlobType, OpenOptions, Repository, Snapshot};
use support::{Env, FAST_KDF, cairn, fails, ok, run};

#[test]
fn init_key_list_and_cat_config() {
    let env = Env::new();
    let out = env.init();
    assert!(out.contains("created cairn repository"), "{out}");
    let list = ok(run(&mut env.cmd(&["key", "list"])));
    assert_eq!(list.lines().count(), 2, "{list}");
    assert!(list.lines().nth(1).unwrap().starts_with('*'), "{list}");
    let config: serde_json::Value = serde_json::from_str(&ok(run(&mut env.cmd(&["cat", "config"])))).unwrap();
    assert_eq!(config["version"], 1);
    assert_eq!(config["chunker"]["avg_size"], 1024 * 1024);
    assert_eq!(config["pack_size"], 16 * 1024 * 1024);
    let keys: serde_json::Value = serde_json::from_str(&ok(run(&mut env.cmd(&["--json", "key", "list"])))).unwrap();
    assert_eq!(keys.as_array().unwrap().len(), 1);
    let id = keys[0]["id"].as_str().unwrap();
    let key: serde_json::Value = serde_json::from_str(&ok(run(&mut env.cmd(&["cat", "key", &id[..8]])))).unwrap();
    assert_eq!(key["kdf"]["algorithm"], "argon2id");
}

#[test]
fn password_sources() {
    let env = Env::new();
    env.init();
    let cache = env.dir.path().join("cache");
    let base = |c: &mut std::process::Command| {
        c.args(["-r", &env.repo(), "key", "list"]);
    };
    let mut c = cairn(&cache);
    base(&mut c);
    ok(run(c.env("CAIRN_PASSWORD", "correct horse")));
    let mut c = cairn(&cache);
    base(&mut c);
    ok(run(c.env("CAIRN_PASSWORD_COMMAND", "echo 'correct horse'")));
    let mut c = cairn(&cache);
    base(&mut c);
    ok(run(c.env("CAIRN_PASSWORD_FILE", env.pw())));
    let mut c = cairn(&cache);
    base(&mut c);
    fails(run(&mut c), 1, &["no password given", "CAIRN_PASSWORD_FILE"]);
    let mut c = cairn(&cache);
    base(&mut c);
    fails(run(c.env("CAIRN_PASSWORD_COMMAND", "false")), 1, &["password command", "failed"]);
}

#[test]
fn wrong_password_is_one_line_exit_1() {
    let env = Env::new();
    env.init();
    let mut c = cairn(&env.dir.path().join("cache"));
    c.args(["-r", &env.repo(), "key", "list"]).env("CAIRN_PASSWORD", "wrong");
    fails(run(&mut c), 1, &["wrong password"]);
}

#[test]
fn missing_repository_says_run_init_exit_10() {
    let env = Env::new();
    fails(run(&mut env.cmd(&["key", "list"])), 10, &["no repository at", "cairn init"]);
    let mut c = cairn(&env.dir.path().join("cache"));
    c.args(["key", "list"]);
    fails(run(&mut c), 1, &["no repository given", "CAIRN_REPOSITORY"]);
}

#[test]
fn init_refuses_an_existing_repository() {
    let env = Env::new();
    env.init();
    let config = std::fs::read(env.path("config")).unwrap();
    let keys = std::fs::read_dir(env.path("keys")).unwrap().count();
    let mut args = vec!["init"];
    args.extend(FAST_KDF);
    fails(run(&mut env.cmd(&args)), 1, &["already exists", "nothing was changed"]);
    assert_eq!(std::fs::read(env.path("config")).unwrap(), config);
    assert_eq!(std::fs::read_dir(env.path("keys")).unwrap().count(), keys);
}

#[test]
fn key_add_remove_and_passwd() {
    let env = Env::new();
    env.init();
    let new_pw = env.dir.path().join("pw2");
    std::fs::write(&new_pw, "second password").unwrap();
    let new_pw = new_pw.display().to_string();
    let mut add = vec!["key", "add", "--new-password-file", &new_pw];
    add.extend(FAST_KDF);
    let out = ok(run(&mut env.cmd(&add)));
    assert!(out.starts_with("added full key"), "{out}");
    let mut put = vec!["--json", "key", "add", "--put-only", "--host", "web1"];
    put.extend(FAST_KDF);
    let out = ok(run(env.cmd(&put).env("CAIRN_NEW_PASSWORD", "put only")));
    let put_id = serde_json::from_str::<serde_json::Value>(&out).unwrap()["id"].as_str().unwrap().to_string();
    let list = ok(run(&mut env.cmd(&["key", "list"])));
    assert_eq!(list.lines().count(), 4, "{list}");
    assert!(list.contains("put-only") && list.contains("web1"), "{list}");

    ok(run(&mut env.cmd(&["key", "remove", &put_id[..12]])));
    fails(run(&mut env.cmd(&["key", "remove", "zz"])), 1, &["not an id"]);

    let mut passwd = vec!["key", "passwd", "--new-password-file", &new_pw];
    passwd.extend(FAST_KDF);
    // passwd replaces the key that "correct horse" opened.
    ok(run(&mut env.cmd(&passwd)));
    fails(run(&mut env.cmd(&["key", "list"])), 1, &["wrong password"]);
    let mut c = cairn(&env.dir.path().join("cache"));
    c.args(["-r", &env.repo(), "--password-file", &new_pw, "key", "list"]);
    let list = ok(run(&mut c));
    assert_eq!(list.lines().count(), 3, "{list}");
}

#[test]
fn corrupt_config_and_key_files_are_named() {
    let env = Env::new();
    env.init();
    let flip = |path: &Path, pos: usize| {
        let mut b = std::fs::read(path).unwrap();
        b[pos] ^= 1;
        std::fs::write(path, b).unwrap();
    };
    let config = env.path("config");
    flip(&config, 60);
    fails(run(&mut env.cmd(&["cat", "config"])), 1, &["config is corrupt"]);
    flip(&config, 60);
    let key = std::fs::read_dir(env.path("keys")).unwrap().next().unwrap().unwrap().path();
    let name = key.file_name().unwrap().to_str().unwrap().to_string();
    flip(&key, 40);
    fails(run(&mut env.cmd(&["--no-cache", "key", "list"])), 1, &[&format!("keys/{name} is corrupt")]);
}

#[test]
fn cat_index_snapshot_and_pack_show_decrypted_json() {
    let env = Env::new();
    env.init();
    // Data comes from the library: the CLI's backup command arrives later.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let snap_id = rt.block_on(async {
        let backend = Backend::open(&env.repo(), &BackendOptions::default()).unwrap();
        let repo = Repository::open(backend, b"correct horse", OpenOptions::default()).await.unwrap();
        let writer = Writer::new(&repo, Arc::new(repo.load_index().await.unwrap())).unwrap();
        let id = writer.add_blob(BlobType::Tree, b"{\"nodes\":[]}").await.unwrap();
        writer.commit(&Snapshot::new(cairn_repo::TreeId(id), vec!["/etc".into()])).await.unwrap()
    });
    let snap: serde_json::Value =
        serde_json::from_str(&ok(run(&mut env.cmd(&["cat", "snapshot", &snap_id.to_hex()[..10]])))).unwrap();
    assert_eq!(snap["paths"][0], "/etc");
    let index_name = std::fs::read_dir(env.path("index")).unwrap().next().unwrap().unwrap().file_name();
    let index: serde_json::Value =
        serde_json::from_str(&ok(run(&mut env.cmd(&["cat", "index", index_name.to_str().unwrap()])))).unwrap();
    let pack_id = index["packs"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(index["packs"][0]["blobs"][0]["type"], "tree");
    let pack: serde_json::Value = serde_json::from_str(&ok(run(&mut env.cmd(&["cat", "pack", &pack_id])))).unwrap();
    assert_eq!(pack["header"]["entries"][0]["raw_length"], 12);
    fails(run(&mut env.cmd(&["cat", "snapshot", "ffffffff"])), 1, &["no object in snapshots/"]);
}

#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let env = Env::new();
    env.init();
    let src = env.root().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    for _ in 0..3 {
        ok(run(&mut env.cmd(&["backup", "-q", "--force", src.to_str().unwrap()])));
    }
    for args in [&["snapshots"][..], &["forget", "-n", "--keep-last", "1"], &["ls", "latest"]] {
        // `cairn snapshots | head -0`: the reader is gone before cairn writes.
        let mut child =
            env.cmd(args).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked") && err.trim().is_empty(), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(141), "{args:?}: the status of a process stopped by SIGPIPE");
    }
}

#[test]
fn unknown_schemes_are_errors_not_local_directories() {
    let env = Env::new();
    for (location, needle) in [
        ("b2:bucket/x", "Backblaze B2 is reached through its S3 API"),
        ("swift:container/x", "the swift: backend is not supported yet"),
        ("ftp://host/x", "unknown scheme \"ftp:\""),
    ] {
        let mut cmd = cairn(&env.root().join("cache"));
        cmd.current_dir(env.root()).args(["-r", location, "--password-file", &env.pw(), "init"]);
        fails(run(&mut cmd), 1, &[location, needle, "supported: a local path"]);
    }
    let created: Vec<_> = std::fs::read_dir(env.root()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(created.iter().all(|n| !n.to_string_lossy().contains(':')), "{created:?}");
}

/// Key damage is named as damage: by `key list` (exit 1), by `check`, and
/// when the damaged key's password is given; a cached copy hides nothing.
#[test]
fn damaged_key_files_are_named_as_damage() {
    let env = Env::new();
    env.init();
    let second = env.dir.path().join("pw2");
    std::fs::write(&second, "second password").unwrap();
    let second = second.display().to_string();
    let mut add = vec!["--json", "key", "add", "--new-password-file", &second];
    add.extend(FAST_KDF);
    let out = ok(run(&mut env.cmd(&add)));
    let id = serde_json::from_str::<serde_json::Value>(&out).unwrap()["id"].as_str().unwrap().to_string();
    // Cache both key files, then damage the second one in the repository.
    let opened_with_second = |args: &[&str]| {
        let mut c = cairn(&env.dir.path().join("cache"));
        c.args(["-r", &env.repo(), "--password-file", &second]).args(args);
        c
    };
    ok(run(&mut opened_with_second(&["key", "list"])));
    let path = env.path(&format!("keys/{id}"));
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();

    let listed = run(&mut env.cmd(&["key", "list"]));
    assert_eq!(listed.status.code(), Some(1), "{}", support::stderr(&listed));
    assert!(support::stdout(&listed).contains("damaged"), "{}", support::stdout(&listed));
    assert!(support::stderr(&listed).contains("1 key file(s) are damaged"), "{}", support::stderr(&listed));
    let checked = run(&mut env.cmd(&["check"]));
    assert_eq!(checked.status.code(), Some(1));
    assert!(
        support::stdout(&checked).contains(&format!("damaged: keys/{id}: damaged")),
        "{}",
        support::stdout(&checked)
    );
    let refused = run(&mut opened_with_second(&["--no-cache", "snapshots"]));
    assert!(
        support::stderr(&refused).contains("1 key file(s) are damaged and could not be tried"),
        "{}",
        support::stderr(&refused)
    );
}

/// `key passwd` keeps the key's label (the host and user it was made for).
#[test]
fn key_passwd_keeps_the_label() {
    let env = Env::new();
    env.init();
    let labelled = env.dir.path().join("pw2");
    std::fs::write(&labelled, "web password").unwrap();
    let labelled = labelled.display().to_string();
    let mut add = vec!["key", "add", "--new-password-file", &labelled, "--host", "web1", "--user", "deploy"];
    add.extend(FAST_KDF);
    ok(run(&mut env.cmd(&add)));
    let third = env.dir.path().join("pw3");
    std::fs::write(&third, "newer web password").unwrap();
    let third = third.display().to_string();
    // Change the labelled key's password (opened with its own password).
    let mut cmd = cairn(&env.dir.path().join("cache"));
    cmd.args(["-r", &env.repo(), "--password-file", &labelled, "key", "passwd", "--new-password-file", &third]);
    ok(run(cmd.args(FAST_KDF)));
    let keys = ok(run(&mut env.cmd(&["--json", "key", "list"])));
    let keys: serde_json::Value = serde_json::from_str(&keys).unwrap();
    let web: Vec<_> = keys.as_array().unwrap().iter().filter(|k| k["hostname"] == "web1").collect();
    assert_eq!(web.len(), 1, "{keys}");
    assert_eq!(web[0]["username"], "deploy", "{keys}");
}
