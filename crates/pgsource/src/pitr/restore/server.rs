//! Starting a restored cluster and following its recovery: `pg_ctl` run
//! as the data directory's owner (PostgreSQL refuses root), the cluster
//! state from `pg_controldata`, and the server log when recovery fails.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::schema::Tools;

use super::settings::TargetAction;

/// A restored cluster being started.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// Its data directory.
    pub pgdata: PathBuf,
    /// Its port.
    pub port: u16,
    /// The directory of its unix socket.
    pub socket_dir: PathBuf,
    /// Its server log.
    pub log: PathBuf,
    pg_ctl: PathBuf,
    pg_controldata: PathBuf,
    owner: (u32, u32),
}

/// How recovery ended.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RecoveryEnd {
    /// `pg_controldata`'s "Database cluster state" at the end.
    pub state: String,
    /// Seconds from start to the end of recovery.
    pub seconds: f64,
}

/// The cluster state `pg_controldata` prints.
pub fn cluster_state(controldata: &str) -> Option<&str> {
    controldata.lines().find_map(|l| l.strip_prefix("Database cluster state:")).map(str::trim)
}

/// The last `n` lines of a log, for an error message.
fn log_tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Cluster {
    /// A cluster in `pgdata`, to run on `port` with its socket in
    /// `socket_dir`, using the PostgreSQL programs of major `major`.
    pub async fn new(tools: &Tools, major: i32, pgdata: &Path, port: u16, socket_dir: &Path) -> Result<Cluster> {
        for dir in [pgdata, socket_dir] {
            let text = dir.display().to_string();
            if text.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"' || c == '\\') {
                return Err(Error::Invalid(format!(
                    "{text} cannot be given to pg_ctl: choose a directory without spaces, quotes or backslashes"
                )));
            }
        }
        if socket_dir.join(format!(".s.PGSQL.{port}")).display().to_string().len() > 100 {
            return Err(Error::Invalid(format!(
                "a unix socket in {} would have too long a path: choose a shorter directory",
                socket_dir.display()
            )));
        }
        let meta = std::fs::metadata(pgdata).map_err(|e| Error::io(format!("cannot read {}", pgdata.display()), e))?;
        Ok(Cluster {
            pgdata: pgdata.to_path_buf(),
            port,
            socket_dir: socket_dir.to_path_buf(),
            log: pgdata.join("cairn-recovery.log"),
            pg_ctl: tools.find("pg_ctl", major).await?.path,
            pg_controldata: tools.find("pg_controldata", major).await?.path,
            owner: (meta.uid(), meta.gid()),
        })
    }

    /// A command run as the data directory's owner when this process is
    /// root (PostgreSQL refuses to run as root).
    fn as_owner(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        if nix::unistd::geteuid().is_root() && self.owner.0 != 0 {
            c.uid(self.owner.0).gid(self.owner.1);
            if let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(self.owner.0)) {
                c.env("HOME", user.dir).env("USER", &user.name).env("LOGNAME", &user.name);
            }
        }
        c.stdin(std::process::Stdio::null());
        c
    }

    /// Starts the server (not waiting for it).
    pub fn start(&self) -> Result<()> {
        let options = format!(
            "-p {} -c unix_socket_directories='{}' -c listen_addresses=''",
            self.port,
            self.socket_dir.display()
        );
        let out = self
            .as_owner(&self.pg_ctl)
            .arg("start")
            .arg("-W")
            .arg("-D")
            .arg(&self.pgdata)
            .arg("-l")
            .arg(&self.log)
            .arg("-o")
            .arg(options)
            .output()
            .map_err(|e| Error::Tool(format!("cannot run {}: {e}", self.pg_ctl.display())))?;
        if !out.status.success() {
            return Err(Error::Tool(format!(
                "pg_ctl start failed: {}{}",
                String::from_utf8_lossy(&out.stderr).trim(),
                log_tail(&self.log, 5)
            )));
        }
        Ok(())
    }

    /// Whether the server runs (`pg_ctl status`).
    pub fn running(&self) -> bool {
        self.as_owner(&self.pg_ctl)
            .arg("status")
            .arg("-D")
            .arg(&self.pgdata)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// The cluster state from `pg_controldata`.
    pub fn state(&self) -> Result<String> {
        let out = Command::new(&self.pg_controldata)
            .arg("-D")
            .arg(&self.pgdata)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| Error::Tool(format!("cannot run {}: {e}", self.pg_controldata.display())))?;
        let text = String::from_utf8_lossy(&out.stdout);
        cluster_state(&text).map(str::to_owned).ok_or_else(|| {
            Error::Tool(format!("pg_controldata printed no cluster state: {}", String::from_utf8_lossy(&out.stderr)))
        })
    }

    /// Waits until recovery ends as `action` says: promoted (`in
    /// production`), paused at the target, or shut down. A server that
    /// stops otherwise is an error quoting its log: recovery failed (a
    /// `restore_command` error aborts it, as it must).
    pub async fn wait_for_recovery(&self, action: TargetAction, started: Instant) -> Result<RecoveryEnd> {
        // The restored pg_control still says what the source's said ("in
        // production"): recovery has ended only once the server removed
        // recovery.signal. The server may take a moment to appear.
        let mut seen_running = false;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let running = self.running();
            seen_running |= running;
            let state = self.state()?;
            let signal_gone = !self.pgdata.join("recovery.signal").exists();
            let done = match action {
                TargetAction::Promote => running && signal_gone && state == "in production",
                TargetAction::Pause => {
                    let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                    running && (log.contains("pausing at the end of recovery") || log.contains("recovery has paused"))
                }
                TargetAction::Shutdown => seen_running && !running && state == "shut down in recovery",
            };
            if done {
                return Ok(RecoveryEnd { state, seconds: started.elapsed().as_secs_f64() });
            }
            let gave_up = !running && (seen_running || started.elapsed() > Duration::from_secs(30));
            if gave_up {
                return Err(Error::Mismatch(format!(
                    "recovery failed: the restored server stopped (cluster state: {state}); its log {} ends with:\n{}",
                    self.log.display(),
                    log_tail(&self.log, 8)
                )));
            }
        }
    }

    /// Stops the server (fast).
    pub fn stop(&self) -> Result<()> {
        if !self.running() {
            return Ok(());
        }
        let out = self
            .as_owner(&self.pg_ctl)
            .args(["stop", "-m", "fast", "-w", "-D"])
            .arg(&self.pgdata)
            .output()
            .map_err(|e| Error::Tool(format!("cannot run {}: {e}", self.pg_ctl.display())))?;
        if !out.status.success() {
            return Err(Error::Tool(format!("pg_ctl stop failed: {}", String::from_utf8_lossy(&out.stderr).trim())));
        }
        Ok(())
    }

    /// A connection string for the restored server, as `user`.
    pub fn conninfo(&self, user: &str, dbname: &str) -> String {
        format!("host={} port={} user={user} dbname={dbname}", self.socket_dir.display(), self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_state_is_read_from_pg_controldata() {
        let text =
            "pg_control version number:            1300\nDatabase cluster state:               in archive recovery\n";
        assert_eq!(cluster_state(text), Some("in archive recovery"));
        assert_eq!(cluster_state("nothing"), None);
    }
}
