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

    /// `cairn pg restore ARGS` into the directory `name` on a free port,
    /// started and checked to be in production: the directory and port.
    fn restore_and_start(&self, name: &str, args: &[&str]) -> (PathBuf, u16) {
        let dst = self.target(name);
        let port = free_port();
        let mut all = vec!["pg", "restore"];
        all.extend(args);
        let port_arg = port.to_string();
        all.extend(["--target-dir", dst.to_str().unwrap(), "--port", &port_arg, "--start"]);
        let out = ok(run(&mut self.cairn(&all)));
        assert!(out.contains("cluster in production"), "{name}: {out}");
        (dst, port)
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

    let (dst, port) = p.restore_and_start("dst", &["--to-time", &target]);
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

impl Pitr {
    /// Starts a restored data directory with archiving into the repository
    /// switched on (as a restored cluster that becomes production is), its
    /// socket in the data directory, and waits until it is out of recovery.
    fn start_archiving(&self, target: &Path, port: u16) {
        let archive = format!("{} pg wal-push %p", self.cairn_words().join(" "));
        let conf = target.join("postgresql.auto.conf");
        let mut text = std::fs::read_to_string(&conf).unwrap();
        text.push_str(&format!(
            "\narchive_mode = on\narchive_command = '{archive}'\nunix_socket_directories = '{}'\n",
            target.display()
        ));
        std::fs::write(&conf, text).unwrap();
        let log = target.join("log");
        let out = self.pg_ctl(&["start", "-w", "-t", "180", "-l", log.to_str().unwrap()], target);
        let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
        assert!(out.status.success(), "the restored cluster did not start: {}", log_text());
        let deadline = Instant::now() + Duration::from_secs(180);
        while self.restored_sql(target, port, "SELECT pg_is_in_recovery()") != "f" {
            assert!(Instant::now() < deadline, "recovery did not end: {}", log_text());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// On a restored cluster: switches WAL and waits until the old segment is archived.
    fn restored_switch_and_wait(&self, target: &Path, port: u16) {
        let seg = self.restored_sql(target, port, "SELECT pg_walfile_name(pg_switch_wal())");
        let deadline = Instant::now() + Duration::from_secs(120);
        let done = format!("SELECT coalesce(last_archived_wal >= '{seg}', false) FROM pg_stat_archiver");
        while self.restored_sql(target, port, &done) != "t" {
            let failed = self.restored_sql(target, port, "SELECT coalesce(last_failed_wal, '') FROM pg_stat_archiver");
            assert!(Instant::now() < deadline, "segment {seg} was not archived (last failure: {failed})");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The life of a real PITR: production (timeline 1) is restored to a time
/// before a mistake and the restored cluster becomes production. On
/// promotion it archives `00000002.history` into the same repository, then
/// archives on timeline 2. A restore to a time on timeline 2 follows the
/// history chain: timeline 1's WAL up to the switch, timeline 2's after it.
/// A `.partial` segment pushed along is stored under its own name and never
/// stands in for the segment.
#[test]
fn a_promoted_restore_archives_a_new_timeline_and_a_later_restore_follows_it() {
    let Some(p) = Pitr::start("pitr-tli") else { return };
    p.sql("CREATE TABLE t (id int PRIMARY KEY, note text)");
    ok(run(&mut p.cairn(&["pg", "base-backup", "-d", &p.conn(), "--fast"])));
    p.sql("INSERT INTO t SELECT g, 'kept' FROM generate_series(1, 100) g");
    std::thread::sleep(Duration::from_millis(1100));
    let before_mistake = p.sql("SELECT now()");
    std::thread::sleep(Duration::from_millis(1100));
    p.sql("INSERT INTO t SELECT g, 'mistake' FROM generate_series(101, 200) g");
    p.switch_and_wait();

    // Restore to before the mistake; the restored cluster archives from its promotion on.
    let dst = p.target("tl2");
    let port = free_port();
    let (dst_text, port_text) = (dst.to_str().unwrap().to_owned(), port.to_string());
    ok(run(&mut p.cairn(&[
        "pg",
        "restore",
        "--to-time",
        &before_mistake,
        "--target-dir",
        &dst_text,
        "--port",
        &port_text,
    ])));
    p.start_archiving(&dst, port);
    assert_eq!(p.restored_sql(&dst, port, "SELECT count(*), max(id) FROM t"), "100|100");
    assert_eq!(p.restored_sql(&dst, port, "SELECT timeline_id FROM pg_control_checkpoint()"), "2");
    p.restored_sql(&dst, port, "INSERT INTO t SELECT g, 'timeline 2' FROM generate_series(1001, 1100) g");
    std::thread::sleep(Duration::from_millis(1100));
    let on_tl2 = p.restored_sql(&dst, port, "SELECT now()");
    std::thread::sleep(Duration::from_millis(1100));
    p.restored_sql(&dst, port, "INSERT INTO t SELECT g, 'later' FROM generate_series(1101, 1200) g");
    p.restored_switch_and_wait(&dst, port);
    p.restored_sql(&dst, port, "INSERT INTO t VALUES (5000, 'in the open segment')");
    let open = p.restored_sql(&dst, port, "SELECT pg_walfile_name(pg_current_wal_lsn())");

    // The segment being written, pushed as a .partial (as pg_receivewal
    // leaves it, or a standby's promotion archives it).
    let receiver = p.target("receiver");
    std::fs::create_dir_all(receiver.join("pg_wal")).unwrap();
    let partial = format!("{open}.partial");
    std::fs::copy(dst.join("pg_wal").join(&open), receiver.join("pg_wal").join(&partial)).unwrap();
    for d in [receiver.clone(), receiver.join("pg_wal"), receiver.join("pg_wal").join(&partial)] {
        std::os::unix::fs::chown(&d, Some(p.owner.0), Some(p.owner.1)).unwrap();
    }
    assert!(p.pg_ctl(&["stop", "-m", "fast", "-w"], &dst).status.success());
    let mut push = p.cairn(&["pg", "wal-push", &format!("pg_wal/{partial}"), "--pgdata", dst.to_str().unwrap()]);
    push.current_dir(&receiver);
    ok(run(&mut push));

    // The repository has timeline 2 with its history, and the .partial.
    let status: serde_json::Value =
        serde_json::from_str(&ok(run(&mut p.cairn(&["--json", "pg", "pitr-status"])))).unwrap();
    let timelines = status[0]["timelines"].as_array().unwrap();
    let tl2 = timelines.iter().find(|t| t["timeline"] == 2).unwrap_or_else(|| panic!("no timeline 2: {status}"));
    assert_eq!(tl2["history"], true, "{status}");
    assert!(tl2["segments"].as_u64().unwrap() >= 1, "{status}");
    assert!(tl2["gaps"].as_array().unwrap().is_empty(), "{status}");
    assert!(!tl2["windows"].as_array().unwrap().is_empty(), "a restore onto timeline 2 is possible: {status}");
    let snaps = ok(run(&mut p.cairn(&["--json", "snapshots", "--tag", "pg-wal"])));
    assert!(snaps.contains("00000002.history"), "{snaps}");
    assert!(snaps.contains(&format!("{partial}\"")), "the .partial is archived: {snaps}");
    // Both timelines check out, the .partial read back included.
    let out = ok(run(&mut p.cairn(&["pg", "check", "--read-data"])));
    assert!(out.contains("no problems"), "{out}");

    // A restore to the time on timeline 2 follows 00000002.history.
    let (again, port2) = p.restore_and_start("again", &["--to-time", &on_tl2]);
    assert_eq!(
        p.restored_sql(&again, port2, "SELECT note, count(*) FROM t GROUP BY note ORDER BY note"),
        "kept|100\ntimeline 2|100"
    );
    // It recovered along timeline 2 and promoted onto timeline 3.
    assert_eq!(p.restored_sql(&again, port2, "SELECT timeline_id FROM pg_control_checkpoint()"), "3");
    assert!(p.pg_ctl(&["stop", "-m", "fast", "-w"], &again).status.success());

    // The .partial comes back by its name (PostgreSQL never asks for one:
    // recovery reads the new timeline's copy of that segment; an operator
    // who wants the old timeline's last WAL fetches it so).
    let scratch = p.target("scratch");
    std::fs::create_dir(&scratch).unwrap();
    std::os::unix::fs::chown(&scratch, Some(p.owner.0), Some(p.owner.1)).unwrap();
    let mut get = p.cairn(&["pg", "wal-get", &partial, "got.partial", "--prefetch", "0"]);
    get.current_dir(&scratch);
    ok(run(&mut get));
    assert_eq!(std::fs::metadata(scratch.join("got.partial")).unwrap().len(), 16 << 20);
}

impl Pitr {
    /// A PostgreSQL program run as the server's user against the primary.
    fn pg_tool(&self, program: &str) -> Command {
        let mut c = Command::new(pgbin().join(program));
        c.env("PGHOST", &self.pg.dir)
            .env("PGPORT", self.pg.port.to_string())
            .env("PGUSER", "postgres")
            .env("PGDATABASE", "postgres")
            .uid(self.owner.0)
            .gid(self.owner.1)
            .stdin(Stdio::null());
        c
    }

    /// A streaming replica of the cluster (`pg_basebackup -R`), started on
    /// its own port with its socket in its data directory; waits until it streams.
    fn start_standby(&self, name: &str) -> (PathBuf, u16) {
        let dir = self.target(name);
        let out =
            self.pg_tool("pg_basebackup").args(["-R", "-X", "stream", "-c", "fast", "-D"]).arg(&dir).output().unwrap();
        assert!(out.status.success(), "pg_basebackup -R: {}", String::from_utf8_lossy(&out.stderr));
        let port = free_port();
        let conf = dir.join("postgresql.auto.conf");
        let mut text = std::fs::read_to_string(&conf).unwrap();
        text.push_str(&format!("\nport = {port}\nunix_socket_directories = '{}'\n", dir.display()));
        std::fs::write(&conf, text).unwrap();
        let log = dir.join("log");
        let out = self.pg_ctl(&["start", "-w", "-t", "120", "-l", log.to_str().unwrap()], &dir);
        assert!(
            out.status.success(),
            "the standby did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.restored_sql(&dir, port, "SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'")
            != "1"
        {
            assert!(
                Instant::now() < deadline,
                "the standby does not stream: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        (dir, port)
    }
}

/// Two ways to take a base backup without reading the primary's data
/// directory: from a streaming standby (`pg_backup_start` runs on the
/// standby, the primary archives the WAL), and from `pg_basebackup -Ft -D -
/// -X none` piped into `--from-tar -`. Each restores, with the primary's
/// archived WAL, to exactly the rows committed before the target.
#[test]
fn base_backups_from_a_standby_and_from_a_pg_basebackup_stream_restore() {
    let Some(p) = Pitr::start("pitr-stby") else { return };
    p.sql("CREATE TABLE t (id int PRIMARY KEY, note text)");
    p.sql("INSERT INTO t SELECT g, 'first' FROM generate_series(1, 1000) g");
    let (standby, sport) = p.start_standby("standby");
    let standby_conn = format!("host={} port={sport} user=postgres dbname=postgres", standby.display());
    assert_eq!(p.restored_sql(&standby, sport, "SELECT pg_is_in_recovery()"), "t");

    // From the standby.
    let out = ok(run(&mut p.cairn(&["--json", "pg", "base-backup", "-d", &standby_conn, "--fast"])));
    let summary = out.lines().find(|l| l.contains("\"message_type\":\"summary\"")).unwrap_or_else(|| panic!("{out}"));
    let from_standby: serde_json::Value = serde_json::from_str(summary).unwrap();
    let standby_id = from_standby["snapshot_id"].as_str().unwrap_or_else(|| panic!("{out}")).to_owned();
    let base = ok(run(&mut p.cairn(&["--json", "snapshots", "--tag", "pg-base"])));
    assert!(base.contains("\"from_standby\": true"), "{base}");
    assert!(base.contains("BACKUP FROM: standby"), "{base}");
    p.sql("INSERT INTO t SELECT g, 'second' FROM generate_series(1001, 2000) g");

    // From a pg_basebackup stream, as when the data directory is on another host.
    let script = format!(
        "set -o pipefail; {}/pg_basebackup -Ft -D - -X none -c fast | {} pg base-backup --from-tar - --json",
        pgbin().display(),
        p.cairn_words().join(" ")
    );
    let mut pipe = Command::new("bash");
    pipe.args(["-c", &script])
        .env("PGHOST", &p.pg.dir)
        .env("PGPORT", p.pg.port.to_string())
        .env("PGUSER", "postgres")
        .env("HOME", &p.dir)
        .uid(p.owner.0)
        .gid(p.owner.1)
        .stdin(Stdio::null());
    let out = ok(run(&mut pipe));
    let summary = out.lines().find(|l| l.contains("\"message_type\":\"summary\"")).unwrap_or_else(|| panic!("{out}"));
    let from_tar: serde_json::Value = serde_json::from_str(summary).unwrap();
    let tar_id = from_tar["snapshot_id"].as_str().unwrap_or_else(|| panic!("{out}")).to_owned();
    assert!(from_tar["files"].as_u64().unwrap() > 100, "{out}");
    p.sql("INSERT INTO t SELECT g, 'third' FROM generate_series(2001, 3000) g");
    std::thread::sleep(Duration::from_millis(1100));
    let target = p.sql("SELECT now()");
    std::thread::sleep(Duration::from_millis(1100));
    p.sql("INSERT INTO t SELECT g, 'after' FROM generate_series(3001, 4000) g");
    p.switch_and_wait();
    assert!(p.pg_ctl(&["stop", "-m", "fast", "-w"], &standby).status.success());

    for (name, base) in [("from-standby", &standby_id), ("from-tar", &tar_id)] {
        let (dst, port) = p.restore_and_start(name, &[base, "--to-time", &target]);
        assert_eq!(
            p.restored_sql(&dst, port, "SELECT note, count(*) FROM t GROUP BY note ORDER BY min(id)"),
            "first|1000\nsecond|1000\nthird|1000",
            "{name}"
        );
        assert!(p.pg_ctl(&["stop", "-m", "fast", "-w"], &dst).status.success());
    }

    // A stream without its manifest has no stop position: refused, nothing stored.
    let script = format!(
        "{}/pg_basebackup -Ft -D - -X none --no-manifest 2>/dev/null | {} pg base-backup --from-tar -",
        pgbin().display(),
        p.cairn_words().join(" ")
    );
    let mut pipe = Command::new("bash");
    pipe.args(["-c", &script])
        .env("PGHOST", &p.pg.dir)
        .env("PGPORT", p.pg.port.to_string())
        .env("PGUSER", "postgres")
        .env("HOME", &p.dir)
        .uid(p.owner.0)
        .gid(p.owner.1)
        .stdin(Stdio::null());
    fails(run(&mut pipe), 1, &["backup_manifest", "--no-manifest"]);
}
