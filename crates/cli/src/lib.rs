//! cairn's nightly job, as a library: one config file describes the
//! repositories and the jobs (sources, retention, a copy offsite, a check
//! when due); [`job::run_job`] runs one job in order, records each step in a
//! state file and returns the exit code the worst step deserves.
//!
//! The `cairn` binary in this crate is the first user: `cairn config check`
//! and `cairn run` are thin commands on top. The engine underneath is
//! `cairn-repo` (repositories, snapshots, maintenance) and `cairn-pgsource`
//! (PostgreSQL sources).
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! let (path, config) = cairn::job::Config::find(None)?;
//! let report = config.validate();
//! assert!(report.errors.is_empty(), "{path:?}: {:?}", report.errors);
//! let state = cairn::job::StateDir::default_location()?;
//! let options = cairn::job::RunOptions::default();
//! let run = cairn::job::run_job(&config, "daily", &state, &options, &cairn::job::NoJobEvents).await?;
//! std::process::exit(run.exit_code().into());
//! # }
//! ```

pub mod job;
pub mod secret;
pub mod units;
