//! The nightly job: a config file ([`Config`]), the state each run leaves
//! ([`StateDir`], [`JobState`]) and the runner ([`run_job`]).
//!
//! A run takes the job's host lock, then runs its steps in order:
//! each source into the `into` repository (one snapshot per source; a
//! failed source does not stop the others), retention with a prune, a
//! copy to each `copy-to` repository, and a check when one is due. Each
//! step's outcome is recorded in the job's state file, and the run's exit
//! code is its worst step's: 0 ok, 3 warnings, 1 a failure.

mod atomic;
pub mod calendar;
mod config;
mod cost;
mod drill;
mod metrics;
mod notify;
mod report;
mod run;
pub mod schedule;
mod state;
mod status;

pub use atomic::write_atomically;
pub use calendar::{Calendar, is_due};
pub use config::{
    CheckConfig, Config, DrillConfig, JobConfig, Prices, RatesConfig, RepositoryConfig, SourceConfig, SourceSpec,
    Validation, parse_every,
};
pub use cost::CostEstimate;
pub use drill::{Candidate, DrillOutcome, choose_sample};
pub use notify::{
    Delivery, Event, Heartbeat, NotifyTarget, TargetType, heartbeat_payload, payload, test as notify_test,
};
pub use report::{Level, StatusRow, StatusTable, render_html};
pub use run::{
    JobEvents, NoJobEvents, RepositorySize, RunOptions, RunReport, Step, StepReport, StepStatus, connect, run_job,
};
pub use state::{JobLock, JobState, SYSTEM_STATE_DIR, StateDir};
pub use status::{
    DueStatus, JobStatus, LastRun, Observed, RepositoryStatus, SourceStatus, StatusReport, assess, human_age, status,
};

use std::path::PathBuf;

/// Exit code of a run that found another run of the job holding its lock
/// (`EX_TEMPFAIL`: try again later).
pub const EXIT_LOCKED: u8 = 75;

/// What can go wrong around a job (its steps' own failures are recorded
/// in the [`RunReport`], not returned).
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The config file does not parse or cannot be read.
    #[error("{}: {message}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line for a syntax error.
        message: String,
    },
    /// No config file was found.
    #[error("no config file: looked for {}", searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    NoConfig {
        /// The places looked at.
        searched: Vec<PathBuf>,
    },
    /// The config has no job of this name.
    #[error("no job named {name:?} in the config (jobs: {})", if known.is_empty() { "none".to_owned() } else { known.join(", ") })]
    NoSuchJob {
        /// The name asked for.
        name: String,
        /// The jobs there are.
        known: Vec<String>,
    },
    /// A job names a repository the config does not have.
    #[error("no repository named {name:?} in the config")]
    NoSuchRepository {
        /// The name.
        name: String,
    },
    /// The config does not validate.
    #[error("the config is not valid: {0}")]
    Invalid(String),
    /// Another run of the job holds its lock.
    #[error("job {job:?} is already running (lock {} is held)", path.display())]
    Locked {
        /// The job.
        job: String,
        /// The lock file.
        path: PathBuf,
    },
    /// The state directory or file cannot be used.
    #[error("state {}: {message}", path.display())]
    State {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A file the config names (an env file, the metrics textfile) cannot
    /// be read or written.
    #[error("{}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A job's schedule cannot be planned, installed or removed.
    #[error("cannot schedule job {job:?}: {message}")]
    Schedule {
        /// The job.
        job: String,
        /// What went wrong.
        message: String,
    },
    /// From the repository.
    #[error(transparent)]
    Repository(#[from] cairn_repo::Error),
    /// From PostgreSQL.
    #[error(transparent)]
    Postgres(#[from] cairn_pgsource::Error),
    /// From a bucket source.
    #[error(transparent)]
    Bucket(#[from] cairn_repo::BucketError),
    /// A password could not be had.
    #[error(transparent)]
    Secret(#[from] crate::secret::SecretError),
}
