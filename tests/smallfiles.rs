//! Many small files: the directory cache that lets a rerun skip unchanged
//! directories by `lstat` alone, and what invalidates it.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use support::fstree;
use support::{Env, backup, ok, run, s};

/// Restores the latest snapshot and checks it equals `src`.
fn restores_as(env: &Env, src: &Path, n: usize) {
    let target = env.root().join(format!("restored-{n}"));
    ok(run(&mut env.cmd(&["restore", "latest", "--target", s(&target)])));
    fstree::assert_same_tree(src, &target);
}

fn reused(summary: &serde_json::Value) -> u64 {
    summary["dirs_reused"].as_u64().unwrap()
}

/// Rewrites a file with other bytes of the same length and puts its mtime
/// back: only its ctime tells.
fn rewrite_keeping_size_and_mtime(path: &Path, byte: u8) {
    let meta = std::fs::metadata(path).unwrap();
    let mtime = meta.modified().unwrap();
    std::fs::write(path, vec![byte; meta.len() as usize]).unwrap();
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(mtime).unwrap();
}

#[test]
fn unchanged_directories_are_reused_and_every_change_invalidates_up_the_path() {
    let env = Env::new();
    env.init();
    let src = env.root().join("src");
    for (path, text) in [("a/a1/f1", "one"), ("a/a1/f2", "two"), ("a/a2/g", "gee"), ("b/h", "aitch"), ("top", "t")] {
        std::fs::create_dir_all(src.join(path).parent().unwrap()).unwrap();
        std::fs::write(src.join(path), text).unwrap();
    }
    // src, a, a1, a2, b
    let first = backup(&env, &[s(&src)]);
    assert_eq!((first["dirs"].as_u64(), reused(&first)), (Some(5), 0), "{first}");

    // Unchanged: the whole tree is taken from the parent, counts intact.
    let again = backup(&env, &[s(&src)]);
    assert_eq!(reused(&again), 5, "{again}");
    assert_eq!(again["files_unchanged"], 5, "{again}");
    assert_eq!(again["dirs"], 5, "{again}");
    assert_eq!(again["total_bytes"], first["total_bytes"], "{again}");
    assert_eq!(again["bytes_read"], 0, "{again}");
    restores_as(&env, &src, 1);

    // A file whose ctime alone changed: a1, a and src are walked again.
    rewrite_keeping_size_and_mtime(&src.join("a/a1/f1"), b'X');
    let ctime = backup(&env, &[s(&src)]);
    assert_eq!(reused(&ctime), 2, "a2 and b only: {ctime}");
    assert_eq!(ctime["files_changed"], 1, "{ctime}");
    restores_as(&env, &src, 2);
    assert_eq!(ok(run(&mut env.cmd(&["dump", "latest", "/a/a1/f1"]))), "XXX");

    // An added entry, deep: a2 and its ancestors.
    std::fs::write(src.join("a/a2/new"), "new").unwrap();
    let added = backup(&env, &[s(&src)]);
    assert_eq!(reused(&added), 2, "a1 and b only: {added}");
    assert_eq!(added["files_new"], 1, "{added}");
    restores_as(&env, &src, 3);

    // A removed entry.
    std::fs::remove_file(src.join("b/h")).unwrap();
    let removed = backup(&env, &[s(&src)]);
    assert_eq!(reused(&removed), 3, "a, a1 and a2: {removed}");
    assert_eq!(removed["files_unchanged"], 5, "{removed}");
    restores_as(&env, &src, 4);

    // A subdirectory's own metadata (its tree is the same, its parent's is not).
    std::fs::set_permissions(src.join("a/a2"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let chmod = backup(&env, &[s(&src)]);
    assert_eq!(reused(&chmod), 2, "a1 and b: {chmod}");
    restores_as(&env, &src, 5);

    // A new subdirectory (empty) deep down.
    std::fs::create_dir(src.join("a/a1/deeper")).unwrap();
    let subdir = backup(&env, &[s(&src)]);
    assert_eq!((reused(&subdir), subdir["dirs"].as_u64()), (2, Some(6)), "a2 and b: {subdir}");
    restores_as(&env, &src, 6);
    let settled = backup(&env, &[s(&src)]);
    assert_eq!(reused(&settled), 6, "{settled}");
}

#[test]
fn options_parents_and_damage_keep_the_cache_out() {
    let env = Env::new();
    env.init();
    let src = env.root().join("src");
    for path in ["d/keep.txt", "d/drop.skip", "e/f.txt", "m/x.txt"] {
        std::fs::create_dir_all(src.join(path).parent().unwrap()).unwrap();
        std::fs::write(src.join(path), path).unwrap();
    }
    backup(&env, &[s(&src)]);
    let first_id = {
        let out = ok(run(&mut env.cmd(&["--json", "snapshots"])));
        let list: serde_json::Value = serde_json::from_str(&out).unwrap();
        list[0]["id"].as_str().unwrap().to_owned()
    };
    assert_eq!(reused(&backup(&env, &[s(&src)])), 4);

    // Exclusions change what a tree holds: a cache written without them
    // is not used with them, and the excluded file is gone.
    let excluded = backup(&env, &["--exclude", "*.skip", s(&src)]);
    assert_eq!(reused(&excluded), 0, "{excluded}");
    let listing = ok(run(&mut env.cmd(&["ls", "latest"])));
    assert!(listing.contains("keep.txt") && !listing.contains("drop.skip"), "{listing}");
    // With the same exclusions again, it is.
    assert_eq!(reused(&backup(&env, &["--exclude", "*.skip", s(&src)])), 4);

    // A marker file that appears skips its directory, cache or not.
    std::fs::write(src.join("m/.nobackup"), "").unwrap();
    let marked = backup(&env, &["--exclude", "*.skip", "--exclude-if-present", ".nobackup", s(&src)]);
    assert_eq!(reused(&marked), 0, "other options: {marked}");
    let listing = ok(run(&mut env.cmd(&["ls", "latest"])));
    assert!(!listing.contains("x.txt"), "{listing}");
    let marked = backup(&env, &["--exclude", "*.skip", "--exclude-if-present", ".nobackup", s(&src)]);
    assert_eq!(reused(&marked), 3, "src, d, e: {marked}");
    let listing = ok(run(&mut env.cmd(&["ls", "latest"])));
    assert!(!listing.contains("x.txt") && listing.contains("f.txt"), "{listing}");
    // The marker goes: m is walked again and back in the snapshot.
    std::fs::remove_file(src.join("m/.nobackup")).unwrap();
    let unmarked = backup(&env, &["--exclude", "*.skip", "--exclude-if-present", ".nobackup", s(&src)]);
    assert_eq!(reused(&unmarked), 2, "d and e: {unmarked}");
    let listing = ok(run(&mut env.cmd(&["ls", "latest"])));
    assert!(listing.contains("x.txt"), "{listing}");

    // The cache belongs to the latest snapshot: another parent does not use it.
    let other_parent = backup(&env, &["--parent", &first_id, s(&src)]);
    assert_eq!(reused(&other_parent), 0, "{other_parent}");
    assert_eq!(other_parent["files_unchanged"], 4, "the parent itself still saves reading: {other_parent}");
    // --force reads everything and writes a fresh cache.
    let forced = backup(&env, &["--force", s(&src)]);
    assert_eq!((reused(&forced), forced["files_new"].as_u64()), (0, Some(4)), "{forced}");
    assert_eq!(reused(&backup(&env, &[s(&src)])), 4);

    // A damaged cache file is ignored (and replaced).
    let dirs = env.root().join("cache");
    let files: Vec<_> = walk_files(&dirs).into_iter().filter(|p| p.parent().unwrap().ends_with("dirs")).collect();
    assert_eq!(files.len(), 1, "one cache file for one host and set of paths: {files:?}");
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&files[0], &bytes).unwrap();
    let damaged = backup(&env, &[s(&src)]);
    assert_eq!((reused(&damaged), damaged["files_unchanged"].as_u64()), (0, Some(4)), "{damaged}");
    assert_eq!(reused(&backup(&env, &[s(&src)])), 4);
    restores_as(&env, &src, 1);
}

fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            out.extend(walk_files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Small files share blobs (FORMAT.md §11.1): far fewer blobs than files,
/// every file back byte for byte (through restore `--verify`, `dump` and
/// `check --read-data`), and a changed file in a large directory costs about
/// its own size, not its directory's bundle.
#[test]
fn small_files_share_blobs_round_trip_and_a_change_costs_its_own_size() {
    let env = Env::new();
    env.init();
    let src = env.root().join("src");
    let mut files = 0;
    let mut bundle_bytes = 0;
    for d in 0..3u64 {
        for i in 0..300u64 {
            // Sizes from empty to just past the 64 KiB bundle limit; half
            // random, half repetitive text.
            let size = match i % 50 {
                0 => 0,
                1 => 64 * 1024,
                2 => 64 * 1024 + 1,
                n => (n * n * 23) as usize % 20_000 + 1,
            };
            let dir = src.join(format!("d{d}")).join(if i % 100 == 99 { format!("sub{i}") } else { String::new() });
            std::fs::create_dir_all(&dir).unwrap();
            let data = if i % 2 == 0 {
                support::fstree::noise(d * 1000 + i, size)
            } else {
                format!("line {i} of dir {d}\n").repeat(size / 16 + 1).into_bytes()[..size].to_vec()
            };
            std::fs::write(dir.join(format!("f{i:03}")), &data).unwrap();
            files += 1;
            bundle_bytes += data.len();
        }
    }
    // More bundled bytes than readers may hold ahead of the assembler
    // (8 MiB), so the walker waits for it.
    for i in 0..200u64 {
        let data = support::fstree::noise(5000 + i, 60_000);
        std::fs::create_dir_all(src.join("d3")).unwrap();
        std::fs::write(src.join("d3").join(format!("big{i:03}")), &data).unwrap();
        files += 1;
        bundle_bytes += data.len();
    }
    // Hard links stay out of bundles but round-trip as links.
    std::fs::write(src.join("d0/linked"), "linked content").unwrap();
    std::fs::hard_link(src.join("d0/linked"), src.join("d1/also-linked")).unwrap();

    let first = backup(&env, &[s(&src)]);
    assert_eq!(first["files_new"], files + 2, "{first}");
    let stats: serde_json::Value = serde_json::from_str(&ok(run(&mut env.cmd(&["--json", "stats"])))).unwrap();
    let blobs = stats["unique_blobs"].as_u64().unwrap();
    // ~64 KiB bundles of 10–60 KB files, and 18 files just past the limit
    // alone: a blob holds more than two files on average.
    assert!(blobs * 2 < files, "{blobs} blobs for {files} files ({bundle_bytes} bytes): {stats}");

    let target = env.root().join("restored");
    ok(run(&mut env.cmd(&["restore", "latest", "--verify", "--target", s(&target)])));
    fstree::assert_same_tree(&src, &target);
    assert_eq!(
        std::fs::metadata(target.join("d0/linked")).unwrap().ino(),
        std::fs::metadata(target.join("d1/also-linked")).unwrap().ino()
    );
    let dumped = run(&mut env.cmd(&["dump", "latest", "/d2/f049"]));
    assert_eq!(dumped.stdout, std::fs::read(src.join("d2/f049")).unwrap());
    ok(run(&mut env.cmd(&["check", "--read-data"])));

    // One file rewritten in a directory of ~2 MB of small files, one added
    // elsewhere: what is stored is those two files and the trees above them.
    std::fs::write(src.join("d1/f010"), support::fstree::noise(77, 9_000)).unwrap();
    std::fs::write(src.join("d2/new"), support::fstree::noise(78, 5_000)).unwrap();
    let changed = backup(&env, &[s(&src)]);
    assert_eq!((changed["files_changed"].as_u64(), changed["files_new"].as_u64()), (Some(1), Some(1)), "{changed}");
    let added = changed["bytes_added"].as_u64().unwrap();
    assert!(added < 14_000 + 40_000, "added {added} for 14 KB of changed files: {changed}");
    let target = env.root().join("restored-2");
    ok(run(&mut env.cmd(&["restore", "latest", "--verify", "--target", s(&target)])));
    fstree::assert_same_tree(&src, &target);
}
