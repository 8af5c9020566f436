//! `cairn check`: structure, `--read-data`, subsets, and reports that name
//! the damaged pack, blob and file.

mod support;

use support::{Env, fails, noise_file, ok, run};

fn pack_files(env: &Env) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for dir in std::fs::read_dir(env.path("data")).unwrap() {
        for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    out.sort();
    out
}

#[test]
fn check_finds_and_names_damage() {
    let env = Env::new();
    env.init();
    let src = env.root().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    for i in 0..6u64 {
        noise_file(&src.join(format!("sub/file-{i}")), i, 200_000);
    }
    ok(run(&mut env.cmd(&["backup", "-q", src.to_str().unwrap()])));
    let clean = ok(run(&mut env.cmd(&["check", "--read-data"])));
    assert!(clean.contains("no problems found"), "{clean}");

    // Find the data pack and the file that its first blob belongs to.
    let listing = ok(run(&mut env.cmd(&["--json", "ls", "latest"])));
    let files: Vec<serde_json::Value> = listing.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let (pack, entry, victim) = pack_files(&env)
        .into_iter()
        .find_map(|path| {
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            let header: serde_json::Value =
                serde_json::from_str(&ok(run(&mut env.cmd(&["cat", "pack", &name])))).unwrap();
            let entry = header["header"]["entries"].as_array().unwrap().iter().find(|e| e["type"] == "data")?.clone();
            let file = files
                .iter()
                .find(|f| f["content"].as_array().is_some_and(|c| c.iter().any(|x| x["id"] == entry["id"])))?;
            Some((path, entry, file["path"].as_str().unwrap().to_owned()))
        })
        .expect("a data pack whose first blob belongs to a file");

    // Flip one byte inside that blob.
    let mut bytes = std::fs::read(&pack).unwrap();
    let at = entry["offset"].as_u64().unwrap() as usize + 40;
    bytes[at] ^= 0x01;
    std::fs::write(&pack, &bytes).unwrap();

    // Structure alone does not read data: it passes.
    ok(run(&mut env.cmd(&["check"])));
    let full = run(&mut env.cmd(&["check", "--read-data"]));
    let text = support::stdout(&full);
    fails(full, 1, &["check found"]);
    let blob = entry["id"].as_str().unwrap();
    let pack_name = pack.file_name().unwrap().to_str().unwrap();
    assert!(text.contains(blob) && text.contains(pack_name), "names the blob and pack: {text}");
    assert!(text.contains(&format!("file {victim}")), "names the file {victim}: {text}");

    // 1/1 is a full read: the same report.
    let subset = run(&mut env.cmd(&["check", "--read-data-subset", "1/1"]));
    assert_eq!(support::stdout(&subset), text);

    // A missing pack is found without reading data.
    std::fs::remove_file(&pack).unwrap();
    let missing = run(&mut env.cmd(&["check"]));
    let text = support::stdout(&missing);
    fails(missing, 1, &["check found"]);
    assert!(text.contains(pack_name) && text.contains("missing"), "{text}");
    // A malformed value is a usage error, as every bad argument is (exit 2).
    let bad = run(&mut env.cmd(&["check", "--read-data-subset", "9/8"]));
    assert_eq!(bad.status.code(), Some(2), "{}", support::stderr(&bad));
    assert!(support::stderr(&bad).contains("invalid subset \"9/8\": use n/m"), "{}", support::stderr(&bad));
}

#[test]
fn repair_index_rebuilds_a_lost_or_damaged_index() {
    let env = Env::new();
    env.init();
    let src = env.root().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..4u64 {
        noise_file(&src.join(format!("f{i}")), i, 300_000);
    }
    ok(run(&mut env.cmd(&["backup", "-q", src.to_str().unwrap()])));
    // Damage the only index file: nothing can be read any more.
    let index_dir = env.path("index");
    let index_file = std::fs::read_dir(&index_dir).unwrap().next().unwrap().unwrap().path();
    let mut bytes = std::fs::read(&index_file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&index_file, &bytes).unwrap();
    let no_cache = |args: &[&str]| {
        let mut all = vec!["--no-cache"];
        all.extend(args);
        env.cmd(&all)
    };
    fails(run(&mut no_cache(&["check"])), 1, &["corrupt"]);

    let out = ok(run(&mut no_cache(&["repair", "index"])));
    assert!(out.contains("supersede the 1 old"), "{out}");
    let checked = ok(run(&mut no_cache(&["check", "--read-data"])));
    assert!(checked.contains("no problems found"), "{checked}");
    let target = env.root().join("restored");
    ok(run(&mut no_cache(&["restore", "latest", "--target", target.to_str().unwrap()])));
    for i in 0..4u64 {
        assert_eq!(std::fs::read(target.join(format!("f{i}"))).unwrap(), support::fstree::noise(i, 300_000));
    }
}

#[test]
fn repair_snapshots_leaves_out_lost_files() {
    let env = Env::new();
    env.init();
    let src = env.root().join("src");
    std::fs::create_dir_all(&src).unwrap();
    // Two separate backups, so the second file lands in a pack of its own.
    noise_file(&src.join("keep"), 1, 100_000);
    ok(run(&mut env.cmd(&["backup", "-q", src.to_str().unwrap()])));
    let before = pack_files(&env);
    noise_file(&src.join("lose"), 2, 100_000);
    ok(run(&mut env.cmd(&["backup", "-q", src.to_str().unwrap()])));
    let lost: Vec<_> = pack_files(&env).into_iter().filter(|p| !before.contains(p)).collect();
    // The new packs hold the new data blob and the new trees: remove the data one.
    let data_pack = lost
        .iter()
        .find(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            ok(run(&mut env.cmd(&["cat", "pack", name]))).contains("\"data\"")
        })
        .unwrap();
    std::fs::remove_file(data_pack).unwrap();
    ok(run(&mut env.cmd(&["--no-cache", "repair", "index"])));

    let dry = ok(run(&mut env.cmd(&["--no-cache", "repair", "snapshots", "--dry-run"])));
    assert!(dry.contains("/lose") && dry.contains("1 of 2 snapshots"), "{dry}");
    let out = ok(run(&mut env.cmd(&["--no-cache", "repair", "snapshots"])));
    assert!(out.contains("repaired copy"), "{out}");
    let target = env.root().join("t");
    ok(run(&mut env.cmd(&[
        "--no-cache",
        "restore",
        "latest",
        "--tag",
        "repaired",
        "--target",
        target.to_str().unwrap(),
    ])));
    assert!(target.join("keep").is_file() && !target.join("lose").exists());
    // The original is still there (check names it) until it is forgotten.
    let damaged = run(&mut env.cmd(&["--no-cache", "check"]));
    assert!(support::stdout(&damaged).contains("file /lose"), "{}", support::stdout(&damaged));
    let list: serde_json::Value =
        serde_json::from_str(&ok(run(&mut env.cmd(&["--json", "--no-cache", "snapshots"])))).unwrap();
    let original = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["tags"].as_array().is_none_or(|t| t.is_empty()) && s["time"] == list[1]["time"])
        .map(|s| s["short_id"].as_str().unwrap().to_owned())
        .unwrap();
    ok(run(&mut env.cmd(&["--no-cache", "forget", &original])));
    let clean = ok(run(&mut env.cmd(&["--no-cache", "check"])));
    assert!(clean.contains("no problems found"), "{clean}");
}

#[test]
fn temporary_files_of_killed_uploads_are_reported_and_pruned_after_the_grace_period() {
    let env = Env::new();
    env.init();
    let src = env.root().join("src");
    std::fs::create_dir_all(&src).unwrap();
    noise_file(&src.join("f"), 1, 100_000);
    ok(run(&mut env.cmd(&["backup", "-q", src.to_str().unwrap()])));
    // What a process killed mid-upload leaves: `<id>#<n>` next to the packs.
    let dir = env.path("data/ab");
    std::fs::create_dir_all(&dir).unwrap();
    let old = dir.join(format!("{}#1", "ab".repeat(32)));
    let young = dir.join(format!("{}#2", "ab".repeat(32)));
    std::fs::write(&old, vec![1u8; 5000]).unwrap();
    std::fs::write(&young, vec![2u8; 7000]).unwrap();
    let two_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 24 * 3600);
    std::fs::File::options().write(true).open(&old).unwrap().set_modified(two_days_ago).unwrap();

    let report = ok(run(&mut env.cmd(&["check"])));
    assert!(report.contains("2 temporary files of interrupted uploads"), "{report}");
    assert!(report.contains("no problems found"), "not damage: {report}");
    let pruned = ok(run(&mut env.cmd(&["prune"])));
    assert!(pruned.contains("1 temporary files of interrupted uploads"), "{pruned}");
    assert!(pruned.contains("1 temporary files of uploads are younger than the grace period"), "{pruned}");
    assert!(!old.exists() && young.exists(), "only the one older than the grace period goes");
    let report = ok(run(&mut env.cmd(&["check", "--read-data"])));
    assert!(report.contains("1 temporary files of interrupted uploads"), "{report}");
}

/// Flips one byte in the middle of `path`.
fn flip_byte(path: &std::path::Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn one_damaged_snapshot_file_does_not_take_the_repository_down() {
    let env = Env::new();
    env.init();
    let src = env.root().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for (i, time) in ["2026-01-01 10:00:00", "2026-01-02 10:00:00", "2026-01-03 10:00:00"].iter().enumerate() {
        noise_file(&src.join("f"), i as u64, 50_000);
        ok(run(&mut env.cmd(&["backup", "-q", "--time", time, src.to_str().unwrap()])));
    }
    let list = |args: &[&str]| -> Vec<String> {
        let out = ok(run(&mut env.cmd(&[&["--no-cache", "--json", "snapshots"], args].concat())));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_owned()).collect()
    };
    let ids = list(&[]);
    assert_eq!(ids.len(), 3);
    // Damage the two oldest snapshot files.
    flip_byte(&env.path(&format!("snapshots/{}", ids[0])));
    flip_byte(&env.path(&format!("snapshots/{}", ids[1])));

    let listed = run(&mut env.cmd(&["--no-cache", "snapshots"]));
    assert!(listed.status.success(), "{}", support::stderr(&listed));
    assert!(support::stderr(&listed).contains(&format!("snapshot {} is left out", &ids[0][..8])));
    assert_eq!(list(&[]), [ids[2].clone()], "the readable one is listed");
    ok(run(&mut env.cmd(&["--no-cache", "find", "f"])));
    let target = env.root().join("restored");
    ok(run(&mut env.cmd(&["--no-cache", "restore", "latest", "--target", target.to_str().unwrap()])));
    assert_eq!(std::fs::read(target.join("f")).unwrap(), support::fstree::noise(2, 50_000));
    ok(run(&mut env.cmd(&["--no-cache", "backup", "-q", src.to_str().unwrap()])));
    let pruned = ok(run(&mut env.cmd(&["--no-cache", "prune"])));
    assert!(pruned.contains(&format!("left out snapshot {}", &ids[0][..8])), "{pruned}");

    // `forget ID` removes a damaged snapshot; `repair snapshots` the others.
    let forgot = ok(run(&mut env.cmd(&["--no-cache", "forget", &ids[0][..10]])));
    assert!(forgot.contains("it is damaged") && forgot.contains("removed 1 snapshot"), "{forgot}");
    let repaired = ok(run(&mut env.cmd(&["--no-cache", "repair", "snapshots"])));
    assert!(repaired.contains(&format!("snapshot {}: removed the damaged snapshot file", &ids[1][..8])), "{repaired}");
    let clean = run(&mut env.cmd(&["--no-cache", "snapshots"]));
    assert!(!support::stderr(&clean).contains("left out"), "{}", support::stderr(&clean));
    assert_eq!(list(&[]).len(), 2);
    let check = ok(run(&mut env.cmd(&["--no-cache", "check"])));
    assert!(check.contains("no problems found"), "{check}");
}

/// `dump` of a file whose data is damaged blames the repository, not stdout.
#[test]
fn dump_blames_a_damaged_blob_not_stdout() {
    let env = Env::new();
    env.init();
    let src = env.root().join("src");
    std::fs::create_dir_all(&src).unwrap();
    noise_file(&src.join("f"), 3, 200_000);
    ok(run(&mut env.cmd(&["backup", "-q", src.to_str().unwrap()])));
    // The data pack (the largest): the trees stay readable.
    let data = pack_files(&env).into_iter().max_by_key(|p| std::fs::metadata(p).unwrap().len()).unwrap();
    flip_byte(&data);
    for args in [&["dump", "latest", "/f"][..], &["dump", "latest", "/"]] {
        let out = run(&mut env.cmd(&[&["--no-cache"], args].concat()));
        let err = support::stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("cannot read") && err.contains("from the repository"), "{args:?}: {err}");
        assert!(!err.contains("stdout"), "{args:?}: {err}");
    }
}
