//! WAL archiving for point-in-time recovery against real PostgreSQL 15
//! clusters (`archive_mode = on`, `archive_command = 'cairn pg wal-push
//! %p'`): archiving and listing, duplicates, a pusher killed mid-way, a
//! put-only key, `wal-get`'s exit codes, `pitr-status`, `pg check` and the
//! retention boundaries of `forget`.

#[path = "support/pg.rs"]
#[allow(dead_code)] // the helpers other PostgreSQL tests use
mod pgsupport;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pgsupport::Pg;
use support::{FAST_KDF, cairn, fails, ok, run};

/// A cluster archiving into a repository that its OS user can write.
struct Archiving {
    pg: Pg,
    dir: tempfile::TempDir,
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

impl Archiving {
    /// A new cluster archiving with `push_password` (the full key's when `None`).
    fn start(prefix: &str, put_only: bool) -> Option<Archiving> {
        let pg = Pg::separate(prefix)?;
        let dir = tempfile::Builder::new().prefix("cwal-").tempdir_in("/tmp").unwrap();
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        let a = Archiving { pg, dir };
        std::fs::write(a.pw(), "correct horse\n").unwrap();
        let mut init = vec!["init"];
        init.extend(FAST_KDF);
        ok(run(&mut a.cmd(&init)));
        let push_pw = if put_only {
            let put = a.dir.path().join("put-pw");
            std::fs::write(&put, "put only\n").unwrap();
            let mut add = vec!["key", "add", "--put-only", "--new-password-file", s(&put)];
            add.extend(FAST_KDF);
            ok(run(&mut a.cmd(&add)));
            put
        } else {
            a.pw()
        };
        // The server runs as another OS user: it must write the repository and its cache.
        let owner = std::fs::metadata(a.pg.dir.join("data")).map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap();
        let status = Command::new("chown").args(["-R", &owner.to_string(), s(a.dir.path())]).status().unwrap();
        assert!(status.success());
        let command = format!(
            "{} -r {} --password-file {} --cache-dir {} pg wal-push --idle-exit 5 %p",
            env!("CARGO_BIN_EXE_cairn"),
            a.repo(),
            s(&push_pw),
            s(&a.dir.path().join("push-cache"))
        );
        for setting in [
            "archive_mode = on".to_owned(),
            format!("archive_command = '{command}'"),
            "full_page_writes = on".to_owned(),
            "wal_level = replica".to_owned(),
        ] {
            a.pg.psql("postgres", &format!("ALTER SYSTEM SET {setting}"));
        }
        a.pg.stop();
        a.pg.restart();
        Some(a)
    }

    fn repo(&self) -> String {
        self.dir.path().join("repo").display().to_string()
    }

    fn pw(&self) -> PathBuf {
        self.dir.path().join("pw")
    }

    fn data(&self) -> PathBuf {
        self.pg.dir.join("data")
    }

    fn spool(&self) -> PathBuf {
        self.data().join("pg_wal/cairn_spool")
    }

    /// cairn with the full key, as root, with a cache of its own.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = cairn(&self.dir.path().join("root-cache"));
        c.args(["-r", &self.repo(), "--password-file", s(&self.pw())]).args(args);
        c
    }

    /// Writes some WAL and switches to a new segment; returns the name of the one switched from.
    fn switch(&self, rows: u32) -> String {
        self.pg.psql(
            "postgres",
            &format!("CREATE TABLE IF NOT EXISTS t(i int, s text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, {rows}) g"),
        );
        self.pg.psql("postgres", "SELECT pg_walfile_name(pg_switch_wal())")
    }

    /// Waits until PostgreSQL reports `segment` archived (panics after 2 minutes, with the logs).
    fn wait_archived(&self, segment: &str) {
        let start = Instant::now();
        loop {
            let done = self.pg.psql(
                "postgres",
                &format!("SELECT coalesce(last_archived_wal >= '{segment}', false) FROM pg_stat_archiver"),
            );
            if done == "t" {
                return;
            }
            if start.elapsed() > Duration::from_secs(120) {
                let log = std::fs::read_to_string(self.spool().join("pusher.log")).unwrap_or_default();
                let pglog = std::fs::read_to_string(self.pg.dir.join("postgres.log")).unwrap_or_default();
                let tail: Vec<&str> = pglog.lines().rev().take(30).collect();
                panic!(
                    "{segment} was not archived; pusher log:\n{log}\nserver log (newest first):\n{}",
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn status(&self) -> serde_json::Value {
        serde_json::from_str(&ok(run(&mut self.cmd(&["--json", "pg", "pitr-status"])))).unwrap()
    }

    /// Names of every archived file, from the snapshots' metadata, with repeats.
    fn archived_names(&self) -> Vec<String> {
        let out = ok(run(&mut self.cmd(&["--json", "snapshots", "--tag", "pg-wal"])));
        let list: serde_json::Value = serde_json::from_str(&out).unwrap();
        let mut names = Vec::new();
        for snap in list.as_array().unwrap() {
            for f in snap["pitr"]["files"].as_array().unwrap() {
                names.push(f["name"].as_str().unwrap().to_owned());
            }
        }
        names
    }
}

#[test]
fn segments_archive_in_batches_and_duplicates_are_judged_by_content() {
    let Some(a) = Archiving::start("pwa", false) else { return };
    let mut last = String::new();
    for _ in 0..4 {
        last = a.switch(20_000);
    }
    a.wait_archived(&last);
    let names = a.archived_names();
    assert!(names.contains(&last), "{names:?}");
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "a file was stored twice: {names:?}");
    // Every snapshot is tagged and pathed by the contract.
    let out = ok(run(&mut a.cmd(&["--json", "snapshots", "--tag", "pg-wal"])));
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let sysid = a.pg.psql("postgres", "SELECT system_identifier FROM pg_control_system()");
    for snap in list.as_array().unwrap() {
        assert_eq!(snap["paths"][0], format!("/pg-wal/{sysid}"));
        assert_eq!(snap["pitr"]["kind"], "wal");
        assert_eq!(snap["pitr"]["system_identifier"], sysid);
    }

    // pitr-status: one cluster, timeline 1, no gaps, a recent push.
    let status = a.status();
    let cluster = &status[0];
    assert_eq!(cluster["system_identifier"], sysid);
    assert_eq!(cluster["timelines"][0]["timeline"], 1);
    assert_eq!(cluster["timelines"][0]["last_segment"], last.as_str());
    assert!(cluster["timelines"][0]["gaps"].as_array().unwrap().is_empty(), "{status}");
    assert!(cluster["rpo_seconds"].as_i64().unwrap() >= 0);
    let text = ok(run(&mut a.cmd(&["pg", "pitr-status"])));
    assert!(text.contains(&format!("cluster {sysid}")) && text.contains("RPO now"), "{text}");
    let check = ok(run(&mut a.cmd(&["pg", "check", "--read-data"])));
    assert!(check.contains("no problems"), "{check}");

    // The same file again: 0, and nothing new stored.
    let before = a.archived_names().len();
    let first = format!("{}/pg_wal/{last}", s(&a.data()));
    let mut again = a.cmd(&["pg", "wal-push", &first]);
    again.current_dir(a.data());
    ok(run(&mut again));
    assert_eq!(a.archived_names().len(), before);

    // Other content under an archived name: refused, nothing overwritten.
    let fake = a.dir.path().join("fake");
    std::fs::create_dir_all(fake.join("global")).unwrap();
    std::fs::create_dir_all(fake.join("pg_wal")).unwrap();
    std::fs::copy(a.data().join("global/pg_control"), fake.join("global/pg_control")).unwrap();
    std::fs::copy(a.data().join("PG_VERSION"), fake.join("PG_VERSION")).unwrap();
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[5000] ^= 0xFF; // inside the first page's records, not its header
    std::fs::write(fake.join("pg_wal").join(&last), bytes).unwrap();
    let mut other = a.cmd(&["pg", "wal-push", &format!("pg_wal/{last}")]);
    other.current_dir(&fake);
    fails(run(&mut other), 1, &[&last, "already archived with other content"]);
    assert_eq!(a.archived_names().len(), before);

    // Not WAL at all: refused by the header check.
    std::fs::write(fake.join("pg_wal/000000010000000000000099"), vec![7u8; 16 << 20]).unwrap();
    let mut junk = a.cmd(&["pg", "wal-push", "pg_wal/000000010000000000000099"]);
    junk.current_dir(&fake);
    fails(run(&mut junk), 1, &["000000010000000000000099", "magic"]);

    // wal-get: byte-equal, and 1 for what is not archived.
    let restore = a.dir.path().join("restore");
    std::fs::create_dir_all(restore.join("pg_wal")).unwrap();
    let mut get = a.cmd(&["pg", "wal-get", &last, "pg_wal/RECOVERYXLOG", "--system-identifier", &sysid]);
    get.current_dir(&restore);
    ok(run(&mut get));
    assert_eq!(std::fs::read(restore.join("pg_wal/RECOVERYXLOG")).unwrap(), std::fs::read(&first).unwrap());
    let mut absent = a.cmd(&["pg", "wal-get", "00000009.history", "pg_wal/RECOVERYHISTORY"]);
    absent.current_dir(&restore);
    assert_eq!(run(&mut absent).status.code(), Some(1));
}

#[test]
fn a_pusher_killed_mid_way_is_retried_with_no_gap_and_no_duplicate() {
    let Some(a) = Archiving::start("pwkill", false) else { return };
    let first = a.switch(1_000);
    a.wait_archived(&first);
    // Make many segments at once, then kill the pusher while it works on them.
    let mut last = String::new();
    for _ in 0..6 {
        last = a.switch(60_000);
    }
    let log = std::fs::read_to_string(a.spool().join("pusher.log")).unwrap();
    let pids: Vec<i32> =
        log.lines().filter_map(|l| l.split("pusher ").nth(1)?.split(' ').next()?.parse().ok()).collect();
    let killed = pids
        .iter()
        .any(|&pid| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).is_ok());
    assert!(killed, "no pusher was running to kill: {log}");
    a.wait_archived(&last);
    let names = a.archived_names();
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "a file was stored twice: {names:?}");
    let status = a.status();
    assert!(status[0]["timelines"][0]["gaps"].as_array().unwrap().is_empty(), "{status}");
    let check = ok(run(&mut a.cmd(&["pg", "check"])));
    assert!(check.contains("no problems"), "{check}");
    let log = std::fs::read_to_string(a.spool().join("pusher.log")).unwrap();
    assert!(log.matches(" started").count() >= 2, "no second pusher started: {log}");
}

#[test]
fn a_put_only_key_archives_and_the_full_key_reads() {
    let Some(a) = Archiving::start("pwput", true) else { return };
    let mut last = String::new();
    for _ in 0..2 {
        last = a.switch(10_000);
    }
    a.wait_archived(&last);
    let sysid = a.pg.psql("postgres", "SELECT system_identifier FROM pg_control_system()");
    let restore = a.dir.path().join("restore");
    std::fs::create_dir_all(restore.join("pg_wal")).unwrap();
    let mut get = a.cmd(&["pg", "wal-get", &last, "pg_wal/RECOVERYXLOG", "--system-identifier", &sysid]);
    get.current_dir(&restore);
    ok(run(&mut get));
    let original = a.data().join("pg_wal").join(&last);
    if original.exists() {
        assert_eq!(std::fs::read(restore.join("pg_wal/RECOVERYXLOG")).unwrap(), std::fs::read(&original).unwrap());
    }
    // The pusher kept its own record: a repeat is recognised without reading the repository.
    let pushed = std::fs::read_to_string(a.spool().join("pushed.log")).unwrap();
    assert!(pushed.contains(&last), "{pushed}");
    let check = ok(run(&mut a.cmd(&["pg", "check", "--read-data"])));
    assert!(check.contains("no problems"), "{check}");
}

#[test]
fn wal_get_exit_codes_and_retention_boundaries() {
    let Some(a) = Archiving::start("pwgetx", false) else { return };
    let last = a.switch(10_000);
    a.wait_archived(&last);
    let sysid = a.pg.psql("postgres", "SELECT system_identifier FROM pg_control_system()");
    let restore = a.dir.path().join("restore");
    std::fs::create_dir_all(restore.join("pg_wal")).unwrap();
    let get = |name: &str, extra: &[&str]| {
        let mut args =
            vec!["pg", "wal-get", name, "pg_wal/RECOVERYXLOG", "--system-identifier", &sysid, "--prefetch", "0"];
        args.extend(extra);
        let mut c = a.cmd(&args);
        c.current_dir(&restore);
        run(&mut c)
    };
    assert_eq!(get(&last, &[]).status.code(), Some(0));
    assert_eq!(get("000000010000000000000077", &[]).status.code(), Some(1));

    // Plain forget leaves the WAL alone; pg forget keeps it while no base backup is kept.
    let before = a.archived_names().len();
    let mut all = a.cmd(&["forget", "--keep-last", "1"]);
    let out = ok(run(&mut all));
    assert!(out.contains("left out"), "{out}");
    assert_eq!(a.archived_names().len(), before);
    let plan = ok(run(&mut a.cmd(&["pg", "forget", "--keep-last", "1", "--dry-run"])));
    assert!(plan.contains("no base backup is kept: all WAL is kept"), "{plan}");

    // An unreachable repository: 126, never 1.
    let mut gone = cairn(&a.dir.path().join("root-cache"));
    gone.args(["-r", "/nonexistent/repository", "--password-file", s(&a.pw())]);
    gone.args(["pg", "wal-get", &last, "pg_wal/RECOVERYXLOG", "--retries", "1"]).current_dir(&restore);
    assert_eq!(run(&mut gone).status.code(), Some(126));
    // A damaged pack: 126 after the retries.
    let data = std::path::Path::new(&a.repo()).join("data");
    for entry in walk(&data) {
        let mut bytes = std::fs::read(&entry).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xFF;
        std::fs::write(&entry, bytes).unwrap();
    }
    let out = get(&last, &["--retries", "2"]);
    assert_eq!(out.status.code(), Some(126), "{}", support::stderr(&out));
    assert!(support::stderr(&out).contains("recovery stops here"), "{}", support::stderr(&out));
}

#[test]
fn wal_get_prefetches_in_the_background_and_serves_the_next_segments_from_the_spool() {
    let Some(a) = Archiving::start("pwgetp", false) else { return };
    let mut switched = Vec::new();
    for _ in 0..4 {
        switched.push(a.switch(1_000));
    }
    a.wait_archived(switched.last().unwrap());
    let mut names: Vec<String> = a.archived_names().into_iter().filter(|n| n.len() == 24).collect();
    names.sort();
    names.dedup();
    assert!(names.len() >= 4, "{names:?}");
    let sysid = a.pg.psql("postgres", "SELECT system_identifier FROM pg_control_system()");
    let restore = a.dir.path().join("restore");
    std::fs::create_dir_all(restore.join("pg_wal")).unwrap();
    let get = |repo: &str, name: &str| {
        let mut c = cairn(&a.dir.path().join("root-cache"));
        c.args(["-r", repo, "--password-file", s(&a.pw())]);
        c.args(["pg", "wal-get", name, "pg_wal/RECOVERYXLOG", "--system-identifier", &sysid, "--prefetch", "2"]);
        c.args(["--retries", "1"]).current_dir(&restore);
        run(&mut c)
    };
    // The first file is fetched; the next two follow in the background.
    ok(get(&a.repo(), &names[0]));
    let spool = restore.join("pg_wal/cairn_spool/get");
    let start = Instant::now();
    while !(spool.join(&names[1]).exists() && spool.join(&names[2]).exists()) {
        assert!(start.elapsed() < Duration::from_secs(60), "no prefetch into {}", spool.display());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!spool.join(&names[3]).exists(), "at most --prefetch files ahead");
    // Served from the spool: no repository is opened.
    let served = get("/nonexistent/repository", &names[1]);
    assert_eq!(served.status.code(), Some(0), "{}", support::stderr(&served));
    let original = a.data().join("pg_wal").join(&names[1]);
    if original.exists() {
        assert_eq!(std::fs::read(restore.join("pg_wal/RECOVERYXLOG")).unwrap(), std::fs::read(&original).unwrap());
    }
    assert!(!spool.join(&names[1]).exists(), "moved out of the spool");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
