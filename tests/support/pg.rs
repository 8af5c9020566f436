//! A throwaway PostgreSQL cluster for the tests of one test binary
//! (scripts/start-postgres.sh), started on first use and stopped when the
//! test process exits, plus psql/pg_dump helpers. Each test uses its own
//! database ([`Pg::fresh_db`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::support::root;

/// A running cluster.
pub struct Pg {
    /// The cluster directory (socket, data, log).
    pub dir: PathBuf,
    /// Its port.
    pub port: u16,
}

/// A role that logs in with a password over TCP (scram-sha-256).
pub const PASSWORD_ROLE: &str = "cairn_pw_user";
/// Its password.
pub const PASSWORD: &str = "right-password";

impl Pg {
    /// The cluster shared by this test process. `None` (skip, with a
    /// message) when PostgreSQL is not installed and we are not under CI;
    /// under `CI=true` a cluster that cannot start fails the test.
    pub fn shared() -> Option<&'static Pg> {
        static CELL: OnceLock<Result<Pg, String>> = OnceLock::new();
        match CELL.get_or_init(|| Pg::start("cpg")) {
            Ok(pg) => Some(pg),
            Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => panic!("PostgreSQL unavailable under CI: {e}"),
            Err(e) => {
                eprintln!("skipping: PostgreSQL unavailable: {e} (install with: apt-get install postgresql)");
                None
            }
        }
    }

    /// A cluster of its own for one test (one whose databases or roles
    /// other tests must not see, or a second server to restore into);
    /// `None` and CI rules as [`Pg::shared`]. Give each a prefix of its own
    /// length: the first port tried depends on it.
    pub fn separate(prefix: &str) -> Option<Pg> {
        match Pg::start(prefix) {
            Ok(pg) => Some(pg),
            Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => panic!("PostgreSQL unavailable under CI: {e}"),
            Err(e) => {
                eprintln!("skipping: PostgreSQL unavailable: {e} (install with: apt-get install postgresql)");
                None
            }
        }
    }

    /// `pg_dumpall --globals-only` (roles, memberships, settings,
    /// tablespaces) without the random `\restrict` keys.
    pub fn globals(&self) -> String {
        let out = self.tool("pg_dumpall", "postgres").arg("--globals-only").output().expect("cannot run pg_dumpall");
        assert!(out.status.success(), "pg_dumpall failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Starts a new cluster (also for tests that kill theirs), stopped and
    /// removed when this process exits.
    pub fn start(prefix: &str) -> Result<Pg, String> {
        let script = root().join("scripts/start-postgres.sh");
        let stop = root().join("scripts/stop-postgres.sh");
        let mut last = String::new();
        for attempt in 0..6u32 {
            // Short paths: a unix socket path must stay under ~107 bytes.
            let dir = tempfile::Builder::new()
                .prefix(&format!("{prefix}-"))
                .tempdir_in("/tmp")
                .map_err(|e| e.to_string())?
                .keep();
            let _ = std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755));
            let port = 30000 + ((std::process::id() * 53 + attempt * 1013 + prefix.len() as u32 * 7) % 20000) as u16;
            let out = Command::new("bash")
                .arg(&script)
                .arg(&dir)
                .arg(port.to_string())
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
            if out.status.success() {
                crate::support::stop_when_this_process_exits(&stop, &dir)?;
                let pg = Pg { dir, port };
                pg.allow_password_role()?;
                return Ok(pg);
            }
            last = String::from_utf8_lossy(&out.stderr).into_owned();
            let _ = std::fs::remove_dir_all(&dir);
            if last.contains("cannot find initdb") {
                break;
            }
        }
        Err(last.trim().to_string())
    }

    /// Creates [`PASSWORD_ROLE`] and makes TCP logins of it ask for its
    /// password (the cluster otherwise trusts everyone).
    fn allow_password_role(&self) -> Result<(), String> {
        let hba = self.dir.join("data/pg_hba.conf");
        let old = std::fs::read_to_string(&hba).map_err(|e| e.to_string())?;
        let line = format!("host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n");
        std::fs::write(&hba, format!("{line}{old}")).map_err(|e| e.to_string())?;
        self.try_psql(
            "postgres",
            &format!("CREATE ROLE {PASSWORD_ROLE} LOGIN SUPERUSER PASSWORD '{PASSWORD}'; SELECT pg_reload_conf();"),
        )
        .map(|_| ())
    }

    /// key=value connection string of database `db` (unix socket, superuser).
    pub fn conn(&self, db: &str) -> String {
        format!("host={} port={} user=postgres dbname={db}", self.dir.display(), self.port)
    }

    /// A TCP URL of database `db` for `user[:password]`.
    pub fn url(&self, user: &str, db: &str) -> String {
        format!("postgresql://{user}@127.0.0.1:{}/{db}?sslmode=disable", self.port)
    }

    /// A new empty database with a unique name.
    pub fn fresh_db(&self, prefix: &str) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!("{prefix}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        name
    }

    /// A libpq program (psql, pg_dump) aimed at this cluster.
    pub fn tool(&self, program: &str, db: &str) -> Command {
        let mut c = Command::new(program);
        c.env("PGHOST", &self.dir)
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", "postgres")
            .env("PGDATABASE", db)
            .env_remove("PGPASSWORD")
            .stdin(Stdio::null());
        c
    }

    /// Runs SQL with psql; returns its unaligned output or the error.
    pub fn try_psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = self
            .tool("psql", db)
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .map_err(|e| format!("cannot run psql: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Runs SQL; panics on failure.
    #[track_caller]
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.try_psql(db, sql).unwrap_or_else(|e| panic!("psql failed on {sql:?}: {e}"))
    }

    /// Runs a SQL file.
    #[track_caller]
    pub fn psql_file(&self, db: &str, file: &Path) {
        let out = self
            .tool("psql", db)
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f"])
            .arg(file)
            .stdout(Stdio::null())
            .output()
            .expect("cannot run psql");
        assert!(out.status.success(), "psql -f {} failed: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    }

    /// `pg_dump` of `db` as plain SQL, with what differs between two
    /// identical databases removed: the random `\restrict` keys of recent
    /// pg_dump versions, and the database's name.
    pub fn dump(&self, db: &str) -> String {
        let out = self.tool("pg_dump", db).output().expect("cannot run pg_dump");
        assert!(out.status.success(), "pg_dump failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
            .map(|l| l.replace(db, "DBNAME"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Starts the cluster again after [`Pg::stop`], on the same port.
    #[allow(dead_code)] // not every test binary restarts its cluster
    pub fn restart(&self) {
        let out = Command::new("bash")
            .arg(root().join("scripts/start-postgres.sh"))
            .arg(&self.dir)
            .arg(self.port.to_string())
            .stdin(Stdio::null())
            .output()
            .expect("cannot run start-postgres.sh");
        assert!(out.status.success(), "restart failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Stops the cluster (fast shutdown: sessions are terminated).
    pub fn stop(&self) {
        let _ = Command::new("bash")
            .arg(root().join("scripts/stop-postgres.sh"))
            .arg(&self.dir)
            .stdin(Stdio::null())
            .output();
    }
}
