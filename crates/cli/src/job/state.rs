//! What runs leave behind on the host: one state file per job (its recent
//! runs, and when each due-based step last succeeded) and one lock file
//! per job, in the state directory.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::JobError;
use super::run::RunReport;

/// Runs kept in a job's state file.
const RUNS_KEPT: usize = 100;

/// The directory of state files and locks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    path: PathBuf,
}

/// What a job's state file holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobState {
    /// The most recent runs, oldest first.
    #[serde(default)]
    pub runs: Vec<RunReport>,
    /// When each due-based step (`check`, `drill`) and the heartbeat last
    /// succeeded.
    #[serde(default)]
    pub last_success: BTreeMap<String, Timestamp>,
    /// Bytes this host's copies have written into each copy target, ever:
    /// the size of a write-only repository, which cannot be read.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub written: BTreeMap<String, u64>,
}

impl JobState {
    /// The snapshots the runs recorded for source `subject`, newest first.
    pub fn snapshots_of<'a>(&'a self, subject: &'a str) -> impl Iterator<Item = cairn_repo::SnapshotId> + 'a {
        self.runs
            .iter()
            .rev()
            .flat_map(|r| r.steps.iter().rev())
            .filter(move |s| s.step == super::Step::Sources && s.subject == subject)
            .filter_map(|s| s.snapshot)
    }
}

/// Where root's runs are recorded: systemd's `StateDirectory=cairn`.
pub const SYSTEM_STATE_DIR: &str = "/var/lib/cairn";

/// A job's host lock, held until dropped.
#[derive(Debug)]
pub struct JobLock {
    _lock: nix::fcntl::Flock<File>,
}

impl StateDir {
    /// A state directory at `path`.
    pub fn new(path: impl Into<PathBuf>) -> StateDir {
        StateDir { path: path.into() }
    }

    /// `$STATE_DIRECTORY` (systemd's `StateDirectory=`; the first of a
    /// list), else [`SYSTEM_STATE_DIR`] for root, else
    /// `$XDG_STATE_HOME/cairn` (`~/.local/state/cairn`).
    ///
    /// Root's default is the system unit's `StateDirectory=cairn`, so the
    /// system timer, root's cron line and an admin's `cairn status` all
    /// read and write the same records.
    pub fn default_location() -> Result<StateDir, JobError> {
        if let Some(dirs) = std::env::var_os("STATE_DIRECTORY").filter(|d| !d.is_empty()) {
            let first = dirs.to_string_lossy().split(':').next().unwrap_or_default().to_owned();
            return Ok(StateDir::new(first));
        }
        if nix::unistd::geteuid().is_root() {
            return Ok(StateDir::new(SYSTEM_STATE_DIR));
        }
        let base = dirs::state_dir().ok_or_else(|| JobError::State {
            path: PathBuf::from("~/.local/state"),
            message: "no state directory: set STATE_DIRECTORY or HOME".into(),
        })?;
        Ok(StateDir::new(base.join("cairn")))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn file(&self, job: &str, extension: &str) -> PathBuf {
        self.path.join(format!("{job}.{extension}"))
    }

    fn create(&self) -> Result<(), JobError> {
        std::fs::create_dir_all(&self.path)
            .map_err(|e| JobError::State { path: self.path.clone(), message: format!("cannot create it: {e}") })
    }

    /// Takes job `job`'s host lock, or fails at once with
    /// [`JobError::Locked`] if another run holds it. The lock is the
    /// kernel's (`flock`): it goes with its process, even on `kill -9`.
    pub fn lock(&self, job: &str) -> Result<JobLock, JobError> {
        self.create()?;
        let path = self.file(job, "lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| JobError::State { path: path.clone(), message: format!("cannot open the lock: {e}") })?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(JobLock { _lock: lock }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(JobError::Locked { job: job.to_owned(), path }),
            Err((_, e)) => Err(JobError::State { path, message: format!("cannot lock: {e}") }),
        }
    }

    /// Job `job`'s state; empty before its first run.
    pub fn load(&self, job: &str) -> Result<JobState, JobError> {
        let path = self.file(job, "json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| JobError::State {
                path,
                message: format!("cannot parse it ({e}): move it away to start afresh"),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(JobState::default()),
            Err(e) => Err(JobError::State { path, message: format!("cannot read it: {e}") }),
        }
    }

    /// Adds `run` to job `job`'s state (keeping the last runs) and writes
    /// it atomically (a temporary file renamed over the old one).
    pub fn record(&self, job: &str, mut state: JobState, run: RunReport) -> Result<JobState, JobError> {
        state.runs.push(run);
        let excess = state.runs.len().saturating_sub(RUNS_KEPT);
        state.runs.drain(..excess);
        self.create()?;
        let path = self.file(job, "json");
        let text = serde_json::to_vec_pretty(&state)
            .map_err(|e| JobError::State { path: path.clone(), message: format!("cannot format it: {e}") })?;
        super::write_atomically(&path, &text)
            .map_err(|e| JobError::State { path: path.clone(), message: format!("cannot write it: {e}") })?;
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_until_the_first_goes() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("state"));
        let first = state.lock("daily").unwrap();
        assert!(matches!(state.lock("daily"), Err(JobError::Locked { .. })));
        assert!(state.lock("weekly").is_ok(), "locks are per job");
        drop(first);
        assert!(state.lock("daily").is_ok());
    }

    #[test]
    fn state_round_trips_and_keeps_the_last_runs() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        assert_eq!(state.load("daily").unwrap(), JobState::default());
        let mut current = JobState::default();
        for _ in 0..RUNS_KEPT + 5 {
            current = state.record("daily", current, RunReport::new("daily")).unwrap();
        }
        let loaded = state.load("daily").unwrap();
        assert_eq!(loaded.runs.len(), RUNS_KEPT);
        assert_eq!(loaded, current);
        std::fs::write(dir.path().join("daily.json"), "{not json").unwrap();
        assert!(state.load("daily").unwrap_err().to_string().contains("move it away"));
    }
}
