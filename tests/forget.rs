//! `cairn forget`: retention policies against snapshots made with
//! `backup --time` across two years, compared with hand-computed answers.

mod support;

use support::{Env, fails, ok, run};

/// Snapshot times: the 1st of every month of 2024 and 2025 at 03:00, one
/// tagged `forever` on 2024-01-10, and every day from 2025-12-24 to
/// 2025-12-31 at 02:00 (all UTC; the tests run with TZ=UTC).
fn times() -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    for year in [2024, 2025] {
        for month in 1..=12 {
            out.push((format!("{year}-{month:02}-01T03:00:00Z"), ""));
        }
    }
    out.push(("2024-01-10T03:00:00Z".into(), "forever"));
    for day in 24..=31 {
        out.push((format!("2025-12-{day}T02:00:00Z"), ""));
    }
    out
}

fn cmd(env: &Env, args: &[&str]) -> std::process::Command {
    let mut c = env.cmd(args);
    c.env("TZ", "UTC");
    c
}

/// The times `forget --dry-run` keeps under `policy`, sorted.
fn kept(env: &Env, policy: &[&str]) -> Vec<String> {
    let mut args = vec!["--json", "forget", "--dry-run"];
    args.extend(policy);
    let out: serde_json::Value = serde_json::from_str(&ok(run(&mut cmd(env, &args)))).unwrap();
    let groups = out["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "one host and one path: one group");
    let mut times: Vec<String> =
        groups[0]["keep"].as_array().unwrap().iter().map(|k| k["time"].as_str().unwrap().to_owned()).collect();
    times.sort();
    times
}

#[test]
fn policies_keep_exactly_the_expected_snapshots() {
    let env = Env::new();
    env.init();
    let src = env.root().join("data");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), "x").unwrap();
    let all = times();
    for (time, tag) in &all {
        let mut args = vec!["backup", "-q", "--host", "h1", "--time", time.as_str()];
        if !tag.is_empty() {
            args.extend(["--tag", tag]);
        }
        args.push(src.to_str().unwrap());
        ok(run(&mut cmd(&env, &args)));
    }
    assert_eq!(env.snapshot_count(), all.len());

    let d = |day: u32| format!("2025-12-{day:02}T02:00:00Z");
    let m = |y: u32, month: u32| format!("{y}-{month:02}-01T03:00:00Z");
    let table: Vec<(&[&str], Vec<String>)> = vec![
        (&["--keep-last", "3"], vec![d(29), d(30), d(31)]),
        (&["--keep-daily", "5"], vec![d(27), d(28), d(29), d(30), d(31)]),
        // ISO weeks: 2026-W01 starts Monday 2025-12-29; 2025-W52 holds the
        // 24th..28th; 2025-12-01 is the Monday of 2025-W49.
        (&["--keep-weekly", "3"], vec![m(2025, 12), d(28), d(31)]),
        (&["--keep-monthly", "4"], vec![m(2025, 9), m(2025, 10), m(2025, 11), d(31)]),
        (&["--keep-yearly", "5"], vec![m(2024, 12), d(31)]),
        (&["--keep-within", "5d"], vec![d(26), d(27), d(28), d(29), d(30), d(31)]),
        (&["--keep-within-monthly", "3m"], vec![m(2025, 10), m(2025, 11), d(31)]),
        (&["--keep-tag", "forever", "--keep-monthly", "1"], vec!["2024-01-10T03:00:00Z".into(), d(31)]),
        (
            &["--keep-daily", "2", "--keep-monthly", "2", "--keep-yearly", "2"],
            vec![m(2024, 12), m(2025, 11), d(30), d(31)],
        ),
    ];
    for (policy, mut expected) in table {
        expected.sort();
        assert_eq!(kept(&env, policy), expected, "policy {policy:?}");
    }
    assert_eq!(env.snapshot_count(), all.len(), "dry runs remove nothing");

    // --min-keep refuses when a group would keep too few, removing nothing.
    let refused = run(&mut cmd(&env, &["forget", "--keep-last", "2", "--min-keep", "3"]));
    fails(refused, 1, &["fewer than the minimum of 3 (min-keep)", "nothing was removed"]);
    assert_eq!(env.snapshot_count(), all.len());
    fails(run(&mut cmd(&env, &["forget"])), 2, &["no policy given"]);

    // For real: the forever snapshot and the last five days survive.
    ok(run(&mut cmd(&env, &["forget", "--keep-daily", "5", "--keep-tag", "forever", "--min-keep", "3"])));
    assert_eq!(env.snapshot_count(), 6);
    let left = ok(run(&mut cmd(&env, &["snapshots"])));
    assert!(left.contains("forever") && left.contains("2025-12-31"), "{left}");
    // And by id.
    let list: serde_json::Value = serde_json::from_str(&ok(run(&mut cmd(&env, &["--json", "snapshots"])))).unwrap();
    let oldest = list[0]["short_id"].as_str().unwrap().to_owned();
    ok(run(&mut cmd(&env, &["forget", &oldest])));
    assert_eq!(env.snapshot_count(), 5);
}

/// `--min-keep` is per group: a group with fewer snapshots than N (a new
/// host) must keep them all, and does not block the others' retention.
#[test]
fn min_keep_applies_per_group() {
    let env = Env::new();
    env.init();
    let src = env.root().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    for day in 1..=5 {
        let time = format!("2026-03-0{day} 12:00:00");
        ok(run(&mut cmd(&env, &["backup", "-q", "--host", "old", "--time", &time, src.to_str().unwrap()])));
    }
    ok(run(&mut cmd(&env, &["backup", "-q", "--host", "new", "--time", "2026-03-05 13:00:00", src.to_str().unwrap()])));
    let out = ok(run(&mut cmd(&env, &["forget", "--keep-last", "3", "--min-keep", "3"])));
    assert!(out.contains("removed 2 snapshot(s)"), "{out}");
    assert_eq!(env.snapshot_count(), 4, "3 of host old, the 1 of host new");
}
