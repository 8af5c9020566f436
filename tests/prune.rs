//! `cairn prune` and `forget --prune` through the binary: backups and
//! prunes running at the same time on a local repository (the S3 run of the
//! same scenario is in `tests/s3.rs`), and what prune prints and refuses.

mod support;

use support::{Env, fails, ok, run, scenarios};

#[test]
fn backups_and_prunes_run_concurrently_on_a_local_repository() {
    let env = Env::new();
    scenarios::backup_and_prune_concurrently(&|args| env.cmd(args), &env.root().join("work"));
}

#[test]
fn prune_reports_marks_and_sweeps_and_refuses_short_grace() {
    let env = Env::new();
    env.init();
    let src = env.root().join("src");
    std::fs::create_dir_all(&src).unwrap();
    support::noise_file(&src.join("a"), 1, 300_000);
    ok(run(&mut env.cmd(&["backup", "-q", src.to_str().unwrap()])));
    support::noise_file(&src.join("a"), 2, 300_000);
    ok(run(&mut env.cmd(&["backup", "-q", src.to_str().unwrap()])));

    let err = fails(run(&mut env.cmd(&["prune", "--grace", "10m"])), 1, &["too short", "at least 3600s"]);
    assert!(!err.contains("panicked"), "{err}");

    let short = |args: &[&str]| {
        let mut c = env.cmd(args);
        c.env("CAIRN_TEST_MIN_GRACE_SECS", "0");
        c
    };
    let dry = ok(run(&mut short(&["forget", "--keep-last", "1", "--prune", "--dry-run", "--grace", "0s"])));
    assert!(dry.contains("dry run: nothing was changed"), "{dry}");
    let out = ok(run(&mut short(&["forget", "--keep-last", "1", "--prune", "--grace", "0s"])));
    assert!(out.contains("removed 1 snapshot(s); pruning"), "{out}");
    assert!(out.contains("2 packs (") && out.contains("marked for deletion"), "{out}");
    let json = ok(run(&mut short(&["--json", "prune", "--grace", "0s"])));
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["packs_deleted"], 2, "{report}");
    assert_eq!(report["records_swept"], 1, "{report}");
    let check = ok(run(&mut env.cmd(&["check", "--read-data"])));
    assert!(check.contains("no problems found"), "{check}");
    let target = env.root().join("restored");
    ok(run(&mut env.cmd(&["restore", "latest", "--target", target.to_str().unwrap()])));
    assert_eq!(std::fs::read(target.join("a")).unwrap(), std::fs::read(src.join("a")).unwrap());
}

#[test]
fn a_prune_killed_midway_does_not_block_the_next_one() {
    let env = Env::new();
    env.init();
    let src = env.root().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for round in 0..3u64 {
        for i in 0..200u64 {
            support::noise_file(&src.join(format!("f{i}")), round * 1000 + i, 3_000);
        }
        ok(run(&mut env.cmd(&["backup", "-q", src.to_str().unwrap()])));
    }
    let lease = env.path("locks/prune");
    // Kill a prune while it holds the lease (SIGKILL: it cannot release it).
    let mut caught = false;
    for _ in 0..20 {
        let mut child = env.cmd(&["prune"]).spawn().unwrap();
        while child.try_wait().unwrap().is_none() && !lease.exists() {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        if lease.exists() && child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            child.wait().unwrap();
            caught = lease.exists();
            if caught {
                break;
            }
        } else {
            child.wait().unwrap();
        }
    }
    assert!(caught, "could not kill a prune while it held the lease");
    let out = ok(run(&mut env.cmd(&["prune"])));
    assert!(out.contains("took over the prune lease"), "{out}");
    assert!(!lease.exists(), "released at the end");
    let check = ok(run(&mut env.cmd(&["check", "--read-data"])));
    assert!(check.contains("no problems found"), "{check}");
}
