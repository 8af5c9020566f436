//! Point-in-time recovery against real PostgreSQL 15 clusters: WAL archived
//! by `cairn pg wal-push`, base backups by `cairn pg base-backup`,
//! `cairn pg restore --to-*` started and checked row by row, and
//! `cairn pg drill --pitr`.
//!
//! The server runs as its own OS user (the tests run as root), and so do
//! archive_command and restore_command: every cairn command here runs as
//! that user too, on a repository it owns.

// This test uses a part of the PostgreSQL support only.
#[allow(dead_code)]
#[path = "support/pg.rs"]
mod pgsupport;
mod support;

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pgsupport::Pg;
use support::{fails, ok, run};

const PGBIN: &str = "/usr/lib/postgresql/15/bin";

/// A cluster that archives into a cairn repository, and that repository.
struct Pitr {
    pg: Pg,
    /// Repository, password file, cache, restore targets (owned by the server's user).
    dir: PathBuf,
    owner: (u32, u32),
}

fn pgbin() -> PathBuf {
    std::env::var_os("PGBIN").map(PathBuf::from).unwrap_or_else(|| PGBIN.into())
}

impl Pitr {
    /// A new cluster with production-like WAL settings whose
    /// archive_command is `cairn pg wal-push %p`.
    fn start(prefix: &str) -> Option<Pitr> {
        let pg = Pg::separate(prefix)?;
        let meta = std::fs::metadata(pg.dir.join("data")).unwrap();
        let owner = (meta.uid(), meta.gid());
        let dir = tempfile::Builder::new().prefix("cpitr-t-").tempdir_in("/tmp").unwrap().keep();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(&dir, Some(owner.0), Some(owner.1)).unwrap();
        let pitr = Pitr { pg, dir, owner };
        std::fs::write(pitr.dir.join("pw"), "correct horse\n").unwrap();
        std::os::unix::fs::chown(pitr.dir.join("pw"), Some(owner.0), Some(owner.1)).unwrap();
        let mut init = vec!["init"];
        init.extend(support::FAST_KDF);
        ok(run(&mut pitr.cairn(&init)));
        let archive = format!("{} pg wal-push %p", pitr.cairn_words().join(" "));
        let conf = format!(
            "\nwal_level = replica\nfull_page_writes = on\narchive_mode = on\narchive_command = '{archive}'\n\
             max_wal_senders = 2\n"
        );
        let path = pitr.pg.dir.join("data/postgresql.conf");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(&conf);
        std::fs::write(&path, text).unwrap();
        pitr.pg.stop();
        pitr.pg.restart();
        Some(pitr)
    }

    /// The cairn program and its repository options.
    fn cairn_words(&self) -> Vec<String> {
        vec![
            env!("CARGO_BIN_EXE_cairn").to_owned(),
            "-r".into(),
            self.dir.join("repo").display().to_string(),
            "--password-file".into(),
            self.dir.join("pw").display().to_string(),
            "--cache-dir".into(),
            self.dir.join("cache").display().to_string(),
        ]
    }

    /// A cairn command run as the server's user, with no PG* or CAIRN_*
    /// settings inherited.
    fn cairn(&self, args: &[&str]) -> Command {
        let words = self.cairn_words();
        let mut c = Command::new(&words[0]);
        for (k, _) in std::env::vars() {
            if k.starts_with("PG") || k.starts_with("CAIRN_") {
                c.env_remove(k);
            }
        }
        c.args(&words[1..]).args(args).uid(self.owner.0).gid(self.owner.1).env("HOME", &self.dir);
        c.stdin(Stdio::null());
        c
    }

    fn conn(&self) -> String {
        self.pg.conn("postgres")
    }

    fn sql(&self, sql: &str) -> String {
        self.pg.psql("postgres", sql)
    }

    /// Switches to a new WAL segment and waits until the old one is archived.
    fn switch_and_wait(&self) {
        let seg = self.sql("SELECT pg_walfile_name(pg_switch_wal())");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let done = self.sql(&format!("SELECT coalesce(last_archived_wal >= '{seg}', false) FROM pg_stat_archiver"));
            if done == "t" {
                return;
            }
            let failed = self.sql("SELECT coalesce(last_failed_wal, '') FROM pg_stat_archiver");
            assert!(Instant::now() < deadline, "segment {seg} was not archived (last failure: {failed})");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A directory for a restored cluster (not created).
    fn target(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// psql on a restored cluster (its socket is in its data directory).
    fn restored_sql(&self, target: &Path, port: u16, sql: &str) -> String {
        let out = Command::new("psql")
            .args(["-X", "-qAt", "-h"])
            .arg(target)
            .args(["-p", &port.to_string(), "-U", "postgres", "-d", "postgres", "-c", sql])
            .env_remove("PGHOST")
            .env_remove("PGPORT")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "psql on the restored cluster: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// pg_ctl as the server's user.
    fn pg_ctl(&self, args: &[&str], target: &Path) -> std::process::Output {
        Command::new(pgbin().join("pg_ctl"))
            .args(args)
            .arg("-D")
            .arg(target)
            .uid(self.owner.0)
            .gid(self.owner.1)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn control_state(&self, target: &Path) -> String {
        let out = Command::new(pgbin().join("pg_controldata")).arg(target).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find_map(|l| l.strip_prefix("Database cluster state:"))
            .map(|s| s.trim().to_owned())
            .unwrap_or(text)
    }
}

impl Drop for Pitr {
    fn drop(&mut self) {
        // Restored clusters the test left running, then the files.
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            if entry.path().join("PG_VERSION").exists() {
                let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w"], &entry.path());
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn pitr_end_to_end_restores_exactly_the_rows_before_the_time() {
    let Some(p) = Pitr::start("pitr-e2e") else { return };
    p.sql("CREATE TABLE t (id int PRIMARY KEY, note text)");
    let before_base = p.sql("SELECT now()");
    std::thread::sleep(Duration::from_millis(1100));
    let out = ok(run(&mut p.cairn(&["--json", "pg", "base-backup", "-d", &p.conn(), "--fast"])));
    assert!(out.contains("\"stop_lsn\""), "{out}");
    p.sql("INSERT INTO t SELECT g, 'before' FROM generate_series(1, 100) g");
    // The commits on either side of the target need distinct times.
    std::thread::sleep(Duration::from_millis(1100));
    let target = p.sql("SELECT now()");
    std::thread::sleep(Duration::from_millis(1100));
    p.sql("INSERT INTO t SELECT g, 'after' FROM generate_series(101, 200) g");
    p.switch_and_wait();

    // A target before the base backup's end is refused: PostgreSQL would
    // promote at the end of the backup with no error.
    let early = p.target("early");
    let line = fails(
        run(&mut p.cairn(&["pg", "restore", "--to-time", &before_base, "--target-dir", early.to_str().unwrap()])),
        1,
        &["before the end of the oldest usable base backup"],
    );
    assert!(!early.exists(), "nothing is written for a refused target: {line}");

    let dst = p.target("dst");
    let port = free_port();
    let out = ok(run(&mut p.cairn(&[
        "pg",
        "restore",
        "--to-time",
        &target,
        "--target-dir",
        dst.to_str().unwrap(),
        "--port",
        &port.to_string(),
        "--start",
    ])));
    assert!(out.contains("cluster in production"), "{out}");
    assert_eq!(p.restored_sql(&dst, port, "SELECT count(*), max(id), min(note) FROM t"), "100|100|before");
    assert_eq!(p.restored_sql(&dst, port, "SHOW archive_mode"), "off");
    assert_eq!(p.restored_sql(&dst, port, "SELECT pg_is_in_recovery()"), "f");
    let conf = std::fs::read_to_string(dst.join("postgresql.auto.conf")).unwrap();
    assert!(conf.contains("pg wal-get %f %p") && conf.contains("recovery_target_action = 'promote'"), "{conf}");
    assert!(p.pg_ctl(&["stop", "-m", "fast", "-w"], &dst).status.success());

    // The drill replays everything and stores its report.
    let out = ok(run(&mut p.cairn(&[
        "--json",
        "pg",
        "drill",
        "--pitr",
        "--to-latest",
        "--check",
        "SELECT count(*) = 200 FROM t",
        "--check",
        "SELECT NOT pg_is_in_recovery()",
    ])));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["ok"], true, "{out}");
    assert_eq!(report["cleaned_up"], true, "{out}");
    assert_eq!(report["checks"].as_array().unwrap().len(), 2);
    let snaps: serde_json::Value =
        serde_json::from_str(&ok(run(&mut p.cairn(&["--json", "snapshots", "--tag", "pg-drill"])))).unwrap();
    assert_eq!(snaps.as_array().unwrap().len(), 1);
    assert_eq!(snaps[0]["pitr_drill"]["ok"], true);
    // A failing check fails the drill (exit 1) and is stored as such.
    let out = run(&mut p.cairn(&["pg", "drill", "--pitr", "--to-latest", "--check", "SELECT count(*) = 7 FROM t"]));
    assert_eq!(out.status.code(), Some(1), "{}", support::stdout(&out));
    assert!(support::stdout(&out).contains("check FAILED"), "{}", support::stdout(&out));
}

#[test]
fn a_wal_get_failure_aborts_recovery_instead_of_promoting() {
    let Some(p) = Pitr::start("pitr-fault") else { return };
    p.sql("CREATE TABLE t (id int PRIMARY KEY)");
    ok(run(&mut p.cairn(&["pg", "base-backup", "-d", &p.conn(), "--fast"])));
    p.sql("INSERT INTO t SELECT generate_series(1, 1000)");
    p.switch_and_wait();
    p.sql("INSERT INTO t SELECT generate_series(1001, 2000)");
    p.switch_and_wait();

    let dst = p.target("dst");
    let port = free_port();
    ok(run(&mut p.cairn(&[
        "pg",
        "restore",
        "--to-latest",
        "--target-dir",
        dst.to_str().unwrap(),
        "--port",
        &port.to_string(),
    ])));
    // The repository becomes unreadable to the server's user: a transient
    // fault, not an absent segment. wal-get must not answer "absent".
    let repo = p.dir.join("repo");
    for sub in ["data", "snapshots", "index"] {
        std::fs::set_permissions(repo.join(sub), std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    }
    let cache = p.dir.join("cache");
    let _ = std::fs::remove_dir_all(&cache);
    // pg_ctl -w returns once the server accepts connections or has exited.
    let start = p.pg_ctl(&["start", "-w", "-t", "120", "-l", dst.join("log").to_str().unwrap()], &dst);
    let deadline = Instant::now() + Duration::from_secs(120);
    while p.pg_ctl(&["status"], &dst).status.success() {
        let log = std::fs::read_to_string(dst.join("log")).unwrap_or_default();
        assert!(Instant::now() < deadline, "the server kept running: {log}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!start.status.success(), "the server started: {}", String::from_utf8_lossy(&start.stdout));
    let log = std::fs::read_to_string(dst.join("log")).unwrap();
    // Recovery never ended: recovery.signal is still there, no new timeline.
    assert!(dst.join("recovery.signal").exists(), "recovery ended after a fault: {log}");
    assert!(!log.contains("selected new timeline ID") && !log.contains("archive recovery complete"), "{log}");
    assert!(log.contains("exit 126"), "{log}");
    assert!(log.contains("FATAL"), "{log}");
    assert_ne!(p.control_state(&dst), "shut down in recovery", "{log}");
    for sub in ["data", "snapshots", "index"] {
        std::fs::set_permissions(repo.join(sub), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
}

#[test]
fn a_base_backup_with_a_tablespace_restores_it_elsewhere() {
    let Some(p) = Pitr::start("pitr-tblspc") else { return };
    let ts = p.dir.join("ts-original");
    std::fs::create_dir(&ts).unwrap();
    std::os::unix::fs::chown(&ts, Some(p.owner.0), Some(p.owner.1)).unwrap();
    p.sql(&format!("CREATE TABLESPACE ts1 LOCATION '{}'", ts.display()));
    p.sql("CREATE TABLE moved (id int) TABLESPACE ts1");
    p.sql("INSERT INTO moved SELECT generate_series(1, 5000)");
    p.sql("CREATE UNLOGGED TABLE scratch (id int)");
    p.sql("INSERT INTO scratch SELECT generate_series(1, 100)");
    let oid = p.sql("SELECT oid FROM pg_tablespace WHERE spcname = 'ts1'");
    let out = ok(run(&mut p.cairn(&["--json", "pg", "base-backup", "-d", &p.conn(), "--fast"])));
    assert!(out.contains("\"tablespaces\":1"), "{out}");
    p.sql("INSERT INTO moved SELECT generate_series(5001, 6000)");
    p.switch_and_wait();

    let dst = p.target("dst");
    let port = free_port();
    let dst_text = dst.to_str().unwrap().to_owned();
    let port_text = port.to_string();
    let restore = |extra: &[&str]| {
        let mut args = vec!["pg", "restore", "--to-latest", "--target-dir", &dst_text, "--port", &port_text];
        args.extend(extra);
        run(&mut p.cairn(&args))
    };
    // The original location holds the source cluster's tablespace.
    fails(restore(&["--start"]), 1, &["tablespace", "is not empty"]);
    let elsewhere = p.dir.join("ts-restored");
    let map = format!("{oid}={}", elsewhere.display());
    let out = ok(restore(&["--tablespace-map", &map, "--start"]));
    assert!(out.contains("in production"), "{out}");
    assert_eq!(p.restored_sql(&dst, port, "SELECT count(*) FROM moved"), "6000");
    assert_eq!(
        p.restored_sql(&dst, port, "SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'ts1'"),
        elsewhere.display().to_string()
    );
    // An unlogged table comes back empty, as after a crash.
    assert_eq!(p.restored_sql(&dst, port, "SELECT count(*) FROM scratch"), "0");
    assert!(std::fs::read_dir(&elsewhere).unwrap().next().is_some());
    assert!(p.pg_ctl(&["stop", "-m", "fast", "-w"], &dst).status.success());
}
