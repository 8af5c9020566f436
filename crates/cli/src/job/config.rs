//! The config file: repositories and jobs, in TOML.
//!
//! ```toml
//! version = 1
//!
//! [repository.local]
//! location = "/srv/backup/cairn"
//! password-file = "/etc/cairn/password"
//! init = true                         # create it on first use
//!
//! [repository.offsite]
//! location = "s3:acme-backups/cairn"
//! s3-region = "eu-central-1"
//! env-file = "/etc/cairn/offsite.env" # AWS_ACCESS_KEY_ID=..., AWS_SECRET_ACCESS_KEY=...
//! password-command = "pass show cairn"
//! write-only = true                   # steps that read it (retention, check, copy from it) are refused
//!
//! [job.daily]
//! into = "local"
//! copy-to = ["offsite"]
//! retention = { keep-daily = 7, keep-weekly = 5, keep-monthly = 12, min-keep = 3 }
//! check = { every = "7d", read-data-subset = "5%" }
//!
//! [[job.daily.source]]
//! files = ["/etc", "/srv/app"]
//! exclude = ["*.tmp", "node_modules"]
//!
//! [[job.daily.source]]
//! postgres = "host=/run/postgresql dbname=app user=backup"
//!
//! [[job.daily.source]]
//! command = ["vault", "operator", "raft", "snapshot", "save", "/dev/stdout"]
//! filename = "vault.snap"
//! ```
//!
//! Unknown keys are errors (a typo must not silently drop a rule).
//! [`Config::validate`] checks what the types cannot: names that refer to
//! each other, durations and sizes, read steps against a write-only
//! repository, and secrets that others can read.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cairn_repo::{CheckSubset, RetentionRules};
use serde::{Deserialize, Serialize};

use super::JobError;

/// The whole config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// The config format's version: 1.
    pub version: u32,
    /// Repositories by name.
    #[serde(default)]
    pub repository: BTreeMap<String, RepositoryConfig>,
    /// Jobs by name.
    #[serde(default)]
    pub job: BTreeMap<String, JobConfig>,
    /// Where every job's notifications go.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<super::NotifyTarget>,
    /// Metrics written after every run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsConfig>,
    /// When the "still alive" summary goes to the notification targets:
    /// a systemd calendar (default `monthly`), or `off`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<String>,
}

/// Metrics for monitoring.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MetricsConfig {
    /// A Prometheus textfile (node_exporter's textfile collector reads
    /// `*.prom` in its directory), rewritten after every run with every
    /// job's last run.
    pub textfile: PathBuf,
}

/// One repository: where it is and how to open it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RepositoryConfig {
    /// A path, `s3:BUCKET/PREFIX`, `gs:...`, `azure:...`, `sftp:...` or `rclone:...`.
    pub location: String,
    /// The password is the first line of this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// The password is what this command (run with `sh -c`) prints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_command: Option<String>,
    /// The storage credentials can only add objects: steps that read the
    /// repository (retention, check) are refused against it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub write_only: bool,
    /// Create the repository on first use.
    #[serde(default, skip_serializing_if = "is_false")]
    pub init: bool,
    /// An S3-compatible endpoint (MinIO, B2, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_endpoint: Option<String>,
    /// The S3 region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_region: Option<String>,
    /// Path-style S3 addressing (most self-hosted servers; the default
    /// with `s3-endpoint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_path_style: Option<bool>,
    /// For an `sftp:` location: the command that starts the SFTP session,
    /// replacing `ssh [-p PORT] [-l USER] HOST -s sftp` (like restic's
    /// `sftp.command`), e.g. `ssh -F /etc/cairn/ssh_config nas -s sftp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sftp_command: Option<String>,
    /// For an `sftp:` location: how many SFTP sessions to use (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sftp_connections: Option<usize>,
    /// The rclone program for an `rclone:` location (default `rclone`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rclone_program: Option<String>,
    /// Extra arguments for `rclone serve restic` (e.g. `--config FILE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rclone_args: Option<String>,
    /// `KEY=VALUE` lines with the storage credentials
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`), so each repository
    /// can have its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_file: Option<PathBuf>,
    /// What the storage costs, for the monthly estimate: a built-in rate
    /// card (`aws-s3-standard`, `aws-s3-standard:REGION`, `b2`, `local`)
    /// or a table of prices in USD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rates: Option<RatesConfig>,
    /// The monthly cost not to exceed, in USD (`"8"`, `"8 USD/month"`):
    /// status warns above it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<String>,
}

/// A repository's rates: a built-in card by name, or prices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RatesConfig {
    /// A built-in rate card.
    Named(String),
    /// Prices in USD.
    Prices(Prices),
}

/// Storage prices in USD.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Prices {
    /// Per GB (10^9 bytes) stored for a month.
    pub storage_per_gb_month: f64,
    /// Per 1,000 PUT, COPY, POST or LIST requests.
    #[serde(default)]
    pub put_per_1000: f64,
    /// Per 1,000 GET requests.
    #[serde(default)]
    pub get_per_1000: f64,
    /// Per GB downloaded.
    #[serde(default)]
    pub egress_per_gb: f64,
    /// GB stored free of charge.
    #[serde(default)]
    pub free_gb: f64,
    /// GB downloaded free of charge each month.
    #[serde(default)]
    pub free_egress_gb: f64,
}

/// One job: its sources, the repository they go into, and what follows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct JobConfig {
    /// The repository the sources are backed up into.
    pub into: String,
    /// Repositories each new snapshot of the job is copied to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copy_to: Vec<String>,
    /// When `cairn schedule install` runs the job: a systemd calendar
    /// (`daily`, `Mon..Fri 02:30`; default `daily`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// How much later than `schedule` the run may start, at random but the
    /// same each day (systemd's `RandomizedDelaySec=`; `30m` by default),
    /// so hosts that share a repository do not all start at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread: Option<String>,
    /// The host name recorded in snapshots (default: this host's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Extra tags for the job's snapshots (the job's name is always one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Retention on `into`, applied to this job's snapshots, then a prune.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionRules>,
    /// A check of `into` when one is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckConfig>,
    /// A restore drill from `into` when one is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<DrillConfig>,
    /// The recovery point objective: status reports the job stale when
    /// its newest snapshot is older than this (`26h`, `2d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo: Option<String>,
    /// Commands run (with `sh -c`) before the sources; if one fails, the
    /// sources are skipped and the run fails.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub before: Vec<String>,
    /// Commands run after the sources, whatever happened to them (to
    /// undo what `before` did); `CAIRN_JOB_STATUS` is `ok`, `warning` or
    /// `failed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// What to back up: each source is its own snapshot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source: Vec<SourceConfig>,
}

/// A due-based check.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CheckConfig {
    /// How long after the last good check another is due (`7d`, `12h`).
    pub every: String,
    /// Also read this part of the packs: `5%`, `2GiB`, `1/7`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_data_subset: Option<String>,
}

/// A due-based restore drill: the job's newest PostgreSQL snapshots are
/// restored into a temporary database and queried (`cairn pg drill`), and
/// a random sample of its newest files snapshots is restored and verified.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DrillConfig {
    /// How long after the last good drill another is due (`30d`).
    pub every: String,
    /// Where the temporary databases are created (a connection string to
    /// a server the drill may create and drop databases on; default: the
    /// source's own server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_admin: Option<String>,
    /// Queries run in each restored database; each must return true.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<String>,
    /// How much of the newest files snapshot to restore and verify, as a
    /// random sample of files (`200MiB`; default 100MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_files: Option<String>,
}

/// One source, as written: exactly one of `files`, `postgres`, `command` or `bucket`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SourceConfig {
    /// Files and directories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<PathBuf>>,
    /// Patterns to leave out (files only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// Leave out directories holding a `CACHEDIR.TAG` (files only).
    #[serde(default, skip_serializing_if = "is_false")]
    pub exclude_caches: bool,
    /// Stay on the file system of each path (files only).
    #[serde(default, skip_serializing_if = "is_false")]
    pub one_file_system: bool,
    /// A PostgreSQL connection string (`host=... dbname=...` or a URI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<String>,
    /// Every database of the server and its globals (roles, tablespaces).
    #[serde(default, skip_serializing_if = "is_false")]
    pub all_databases: bool,
    /// Tables whose rows are left out, their definitions kept (PostgreSQL only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_table_data: Vec<String>,
    /// Directory of pg_dump (PostgreSQL only; default: the newest
    /// `/usr/lib/postgresql/N/bin`, then `PATH`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg_bindir: Option<PathBuf>,
    /// A command whose standard output is stored as one file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// The file name for the command's output (command only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// A bucket: `s3:BUCKET[/PREFIX]`, `s3:https://HOST/BUCKET[/PREFIX]`,
    /// `gs:BUCKET[/PREFIX]` or `azure:CONTAINER[/PREFIX]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// The bucket's S3-compatible endpoint (MinIO, ...; bucket only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_endpoint: Option<String>,
    /// The bucket's S3 region (bucket only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_region: Option<String>,
    /// Path-style S3 addressing for the bucket (bucket only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_path_style: Option<bool>,
    /// `KEY=VALUE` lines with the bucket's credentials, as a repository's
    /// `env-file` (bucket only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_file: Option<PathBuf>,
}

/// A source, checked: what it backs up.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    /// Files and directories.
    Files {
        /// The paths.
        paths: Vec<PathBuf>,
        /// Patterns to leave out.
        exclude: Vec<String>,
        /// Leave out directories with a `CACHEDIR.TAG`.
        exclude_caches: bool,
        /// Stay on each path's file system.
        one_file_system: bool,
    },
    /// One PostgreSQL database, or all of them with the globals.
    Postgres {
        /// The connection string.
        conninfo: String,
        /// The whole cluster.
        all_databases: bool,
        /// Tables stored without rows.
        exclude_table_data: Vec<String>,
        /// Where pg_dump is.
        bindir: Option<PathBuf>,
    },
    /// A command's output.
    Command {
        /// The program and its arguments.
        argv: Vec<String>,
        /// The stored file's name.
        filename: String,
    },
    /// A bucket's objects.
    Bucket {
        /// Its location.
        location: String,
        /// S3 endpoint.
        s3_endpoint: Option<String>,
        /// S3 region.
        s3_region: Option<String>,
        /// Path-style S3 addressing.
        s3_path_style: Option<bool>,
        /// Credentials file.
        env_file: Option<PathBuf>,
    },
}

impl SourceConfig {
    /// The source this entry describes, or what is wrong with it.
    pub fn spec(&self) -> Result<SourceSpec, String> {
        let kinds = [self.files.is_some(), self.postgres.is_some(), self.command.is_some(), self.bucket.is_some()];
        match kinds.iter().filter(|k| **k).count() {
            0 => return Err("has none of `files`, `postgres`, `command` or `bucket`: give one".into()),
            1 => {}
            _ => return Err("has more than one of `files`, `postgres`, `command` and `bucket`: one per source".into()),
        }
        let bucket_keys = self.s3_endpoint.is_some()
            || self.s3_region.is_some()
            || self.s3_path_style.is_some()
            || self.env_file.is_some();
        if let Some(location) = &self.bucket {
            if !cairn_repo::is_bucket_location(location) {
                return Err(format!(
                    "bucket {location:?} is not a bucket: use s3:BUCKET[/PREFIX], gs:BUCKET[/PREFIX] or \
                     azure:CONTAINER[/PREFIX]"
                ));
            }
        }
        let only = |set: bool, key: &str, kind: &str| -> Result<(), String> {
            if set { Err(format!("`{key}` belongs to a `{kind}` source")) } else { Ok(()) }
        };
        let files_keys = !self.exclude.is_empty() || self.exclude_caches || self.one_file_system;
        let pg_keys = self.all_databases || !self.exclude_table_data.is_empty() || self.pg_bindir.is_some();
        if let Some(location) = &self.bucket {
            only(files_keys, "exclude/exclude-caches/one-file-system", "files")?;
            only(pg_keys, "all-databases/exclude-table-data/pg-bindir", "postgres")?;
            only(self.filename.is_some(), "filename", "command")?;
            return Ok(SourceSpec::Bucket {
                location: location.clone(),
                s3_endpoint: self.s3_endpoint.clone(),
                s3_region: self.s3_region.clone(),
                s3_path_style: self.s3_path_style,
                env_file: self.env_file.clone(),
            });
        }
        only(bucket_keys, "s3-endpoint/s3-region/s3-path-style/env-file", "bucket")?;
        if let Some(paths) = &self.files {
            only(pg_keys, "all-databases/exclude-table-data/pg-bindir", "postgres")?;
            only(self.filename.is_some(), "filename", "command")?;
            if paths.is_empty() {
                return Err("`files` is empty".into());
            }
            if let Some(relative) = paths.iter().find(|p| p.is_relative()) {
                return Err(format!("{} is a relative path: a job runs from any directory", relative.display()));
            }
            cairn_repo::PathFilter::new(&self.exclude).map_err(|e| format!("exclude: {e}"))?;
            return Ok(SourceSpec::Files {
                paths: paths.clone(),
                exclude: self.exclude.clone(),
                exclude_caches: self.exclude_caches,
                one_file_system: self.one_file_system,
            });
        }
        if let Some(conninfo) = &self.postgres {
            only(files_keys, "exclude/exclude-caches/one-file-system", "files")?;
            only(self.filename.is_some(), "filename", "command")?;
            cairn_pgsource::ConnSpec::parse(Some(conninfo)).map_err(|e| e.to_string())?;
            cairn_pgsource::pattern::PatternSet::parse(&self.exclude_table_data)
                .map_err(|e| format!("exclude-table-data: {e}"))?;
            return Ok(SourceSpec::Postgres {
                conninfo: conninfo.clone(),
                all_databases: self.all_databases,
                exclude_table_data: self.exclude_table_data.clone(),
                bindir: self.pg_bindir.clone(),
            });
        }
        let argv = self.command.clone().unwrap_or_default();
        only(files_keys, "exclude/exclude-caches/one-file-system", "files")?;
        only(pg_keys, "all-databases/exclude-table-data/pg-bindir", "postgres")?;
        if argv.is_empty() {
            return Err("`command` is empty".into());
        }
        let filename = self.filename.clone().ok_or("a `command` source needs a `filename` for its output")?;
        if filename.is_empty() || filename.contains('/') {
            return Err(format!("filename {filename:?} must be one file name, without `/`"));
        }
        Ok(SourceSpec::Command { argv, filename })
    }
}

/// What [`Config::validate`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validation {
    /// Problems that stop the config from being used.
    pub errors: Vec<String>,
    /// Problems worth fixing that do not stop it.
    pub warnings: Vec<String>,
}

impl Config {
    /// Parses a config file's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, JobError> {
        toml::from_str(text).map_err(|e| JobError::Config { path: origin.to_owned(), message: e.to_string() })
    }

    /// Reads and parses the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, JobError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| JobError::Config { path: path.to_owned(), message: format!("cannot read it: {e}") })?;
        Config::parse(&text, path)
    }

    /// The places a config file is looked for, in order: `explicit`
    /// (`--config`), `$CAIRN_CONFIG`, `~/.config/cairn/cairn.toml`,
    /// `/etc/cairn/cairn.toml`.
    pub fn search_path(explicit: Option<&Path>) -> Vec<PathBuf> {
        if let Some(path) = explicit {
            return vec![path.to_owned()];
        }
        if let Some(path) = std::env::var_os("CAIRN_CONFIG").filter(|p| !p.is_empty()) {
            return vec![PathBuf::from(path)];
        }
        let mut places: Vec<PathBuf> =
            dirs::config_dir().map(|d| d.join("cairn").join("cairn.toml")).into_iter().collect();
        places.push(PathBuf::from("/etc/cairn/cairn.toml"));
        places
    }

    /// Loads the first config file of [`Config::search_path`] that exists.
    pub fn find(explicit: Option<&Path>) -> Result<(PathBuf, Config), JobError> {
        let places = Config::search_path(explicit);
        let found = if explicit.is_some() || std::env::var_os("CAIRN_CONFIG").is_some_and(|p| !p.is_empty()) {
            places.first().cloned()
        } else {
            places.iter().find(|p| p.exists()).cloned()
        };
        let Some(path) = found else {
            return Err(JobError::NoConfig { searched: places });
        };
        let config = Config::load(&path)?;
        Ok((path, config))
    }

    /// The job named `name`, or an error that lists the jobs there are.
    pub fn job(&self, name: &str) -> Result<&JobConfig, JobError> {
        self.job
            .get(name)
            .ok_or_else(|| JobError::NoSuchJob { name: name.to_owned(), known: self.job.keys().cloned().collect() })
    }

    /// The repository named `name`.
    pub fn repository(&self, name: &str) -> Result<&RepositoryConfig, JobError> {
        self.repository.get(name).ok_or_else(|| JobError::NoSuchRepository { name: name.to_owned() })
    }

    /// Checks what the types cannot: see the module docs.
    pub fn validate(&self) -> Validation {
        let mut v = Validation::default();
        if self.version != 1 {
            v.errors.push(format!("version {} is not one this cairn reads: use version = 1", self.version));
        }
        for (name, repo) in &self.repository {
            let at = format!("repository.{name}");
            if repo.location.trim().is_empty() {
                v.errors.push(format!("{at}: `location` is empty"));
            }
            match (&repo.password_file, &repo.password_command) {
                (None, None) => v.errors.push(format!("{at}: give `password-file` or `password-command`")),
                (Some(_), Some(_)) => {
                    v.errors.push(format!("{at}: give one of `password-file` and `password-command`, not both"))
                }
                _ => {}
            }
            if let Some(rates) = &repo.rates {
                if let Err(e) = super::cost::prices(rates) {
                    v.errors.push(format!("{at}: rates: {e}"));
                }
            }
            if let Some(budget) = &repo.budget {
                if let Err(e) = super::cost::parse_budget(budget) {
                    v.errors.push(format!("{at}: {e}"));
                }
                if repo.rates.is_none() {
                    v.warnings.push(format!(
                        "{at}: a budget without `rates` is never checked: add rates = \"aws-s3-standard\", \"b2\" or a table"
                    ));
                }
            }
            for secret in repo.password_file.iter().chain(&repo.env_file) {
                if let Some(warning) = readable_by_others(secret) {
                    v.warnings.push(format!("{at}: {warning}"));
                }
            }
        }
        for (i, target) in self.notify.iter().enumerate() {
            if let Some(problem) = target.problem() {
                v.errors.push(format!("notify[{}]: {problem}", i + 1));
            }
            for secret in target.url_file.iter().chain(&target.token_file) {
                if let Some(warning) = readable_by_others(secret) {
                    v.warnings.push(format!("notify[{}]: {warning}", i + 1));
                }
            }
        }
        if let Some(heartbeat) = self.heartbeat.as_deref().filter(|h| *h != "off") {
            if let Err(e) = super::Calendar::parse(heartbeat) {
                v.errors.push(format!("heartbeat: {e} (or \"off\")"));
            }
        }
        if let Some(metrics) = &self.metrics {
            if metrics.textfile.extension().is_none_or(|e| e != "prom") {
                v.warnings.push(format!(
                    "metrics.textfile {}: node_exporter reads only files ending in .prom",
                    metrics.textfile.display()
                ));
            }
        }
        if self.job.is_empty() {
            v.errors.push("no job: add a [job.NAME] table with `into` and a [[job.NAME.source]]".into());
        }
        for (name, job) in &self.job {
            let at = format!("job.{name}");
            if name.is_empty() || name.starts_with('-') || name.contains(['/', ' ']) {
                v.errors.push(format!("{at}: a job's name must not be empty, start with `-`, or hold `/` or spaces"));
            }
            let into = self.repository.get(&job.into);
            if into.is_none() {
                v.errors.push(format!("{at}: `into` names repository {:?}, which is not configured", job.into));
            }
            for target in &job.copy_to {
                if target == &job.into {
                    v.errors.push(format!("{at}: `copy-to` names {target:?}, the repository the job writes into"));
                } else if !self.repository.contains_key(target) {
                    v.errors.push(format!("{at}: `copy-to` names repository {target:?}, which is not configured"));
                }
            }
            if let Some(schedule) = &job.schedule {
                if let Err(e) = super::Calendar::parse(schedule) {
                    v.errors.push(format!("{at}.schedule: {e}"));
                }
            }
            if let Some(spread) = &job.spread {
                if let Err(e) = crate::units::parse_duration(spread) {
                    v.errors.push(format!("{at}.spread: {e}"));
                }
            }
            if let Some(rules) = &job.retention {
                match rules.policy() {
                    Ok(policy) if policy.is_empty() => v.errors.push(format!(
                        "{at}.retention: no keep-* rule: it would remove every snapshot (give keep-daily, keep-last, ...)"
                    )),
                    Ok(_) => {}
                    Err(e) => v.errors.push(format!("{at}.retention: {e}")),
                }
            }
            if let Some(check) = &job.check {
                if let Err(e) = parse_every(&check.every) {
                    v.errors.push(format!("{at}.check: every: {e}"));
                }
                if let Some(subset) = &check.read_data_subset {
                    if let Err(e) = CheckSubset::parse(subset, subset_size) {
                        v.errors.push(format!("{at}.check: read-data-subset: {e}"));
                    }
                }
            }
            if let Some(drill) = &job.drill {
                if let Err(e) = parse_every(&drill.every) {
                    v.errors.push(format!("{at}.drill: every: {e}"));
                }
                if let Some(size) = &drill.sample_files {
                    if let Err(e) = crate::units::parse_size(size) {
                        v.errors.push(format!("{at}.drill: sample-files: {e}"));
                    }
                }
                if let Some(admin) = &drill.postgres_admin {
                    if let Err(e) = cairn_pgsource::ConnSpec::parse(Some(admin)) {
                        v.errors.push(format!("{at}.drill: postgres-admin: {e}"));
                    }
                }
                if drill.checks.iter().any(|c| c.trim().is_empty()) {
                    v.errors.push(format!("{at}.drill: a check is empty: give a query that returns true"));
                }
            }
            if let Some(rpo) = &job.rpo {
                if let Err(e) = parse_every(rpo) {
                    v.errors.push(format!("{at}: rpo: {e}"));
                }
            }
            for (key, commands) in [("before", &job.before), ("after", &job.after)] {
                if commands.iter().any(|c| c.trim().is_empty()) {
                    v.errors.push(format!("{at}: `{key}` has an empty command"));
                }
            }
            if into.is_some_and(|r| r.write_only) {
                let steps = [
                    ("retention", job.retention.is_some()),
                    ("check", job.check.is_some()),
                    ("drill", job.drill.is_some()),
                    // A copy reads the snapshots it copies.
                    ("copy-to", !job.copy_to.is_empty()),
                ];
                for (step, present) in steps {
                    if present {
                        v.errors.push(format!(
                            "{at}: `{step}` reads repository {:?}, which is write-only: run it from a host \
                             with read access",
                            job.into
                        ));
                    }
                }
            }
            if job.source.is_empty() {
                v.errors.push(format!("{at}: no source: add a [[{at}.source]] with files, postgres or command"));
            }
            for (i, source) in job.source.iter().enumerate() {
                if let Err(e) = source.spec() {
                    v.errors.push(format!("{at}.source[{}]: {e}", i + 1));
                }
            }
            for tag in &job.tags {
                if tag.is_empty() || tag.contains(',') {
                    v.errors.push(format!("{at}: tag {tag:?} must be non-empty and without commas"));
                }
            }
        }
        v
    }

    /// The config as it would be printed: PostgreSQL passwords written into
    /// connection strings and the paths of notification URLs (where their
    /// tokens are) are replaced by `REDACTED` (file paths and commands are
    /// shown; the secrets they lead to are never read here).
    pub fn redacted(&self) -> Config {
        let mut copy = self.clone();
        copy.notify = self.notify.iter().map(super::NotifyTarget::redacted).collect();
        for job in copy.job.values_mut() {
            for source in &mut job.source {
                if let Some(conninfo) = &mut source.postgres {
                    *conninfo = redact_conninfo(conninfo);
                }
            }
        }
        copy
    }

    /// The config as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot print the config: {e}\n"))
    }
}

fn is_false(b: &bool) -> bool {
    !b
}

/// `every`: a duration such as `7d`, `12h` or `1h30m`, not zero.
pub fn parse_every(text: &str) -> Result<std::time::Duration, String> {
    let every = crate::units::parse_duration(text)?;
    if every.is_zero() {
        return Err(format!("{text:?} is zero: give e.g. 1d"));
    }
    Ok(every)
}

/// A size for a subset (`2GiB`).
fn subset_size(s: &str) -> Option<u64> {
    crate::units::parse_size(s).ok()
}

/// Parses a check subset as the config writes it.
pub(crate) fn parse_subset(text: &str) -> Result<CheckSubset, JobError> {
    CheckSubset::parse(text, subset_size).map_err(|e| JobError::Invalid(format!("read-data-subset: {e}")))
}

/// A warning when a secret file can be read by users other than its owner.
fn readable_by_others(path: &Path) -> Option<String> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o044 != 0).then(|| {
        format!(
            "{} holds a secret and can be read by other users (mode {:o}): chmod 600 it",
            path.display(),
            mode & 0o777
        )
    })
}

/// A connection string with its password replaced by `REDACTED`, in both
/// forms: `password=secret` and `postgresql://user:secret@host/db`.
pub(crate) fn redact_conninfo(conninfo: &str) -> String {
    if let Some(rest) = conninfo.strip_prefix("postgresql://").or_else(|| conninfo.strip_prefix("postgres://")) {
        let scheme = &conninfo[..conninfo.len() - rest.len()];
        if let Some(at) = rest.find('@') {
            let (userinfo, host) = rest.split_at(at);
            if let Some(colon) = userinfo.find(':') {
                return format!("{scheme}{}:REDACTED{host}", &userinfo[..colon]);
            }
        }
        return conninfo.to_owned();
    }
    conninfo
        .split_whitespace()
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.trim() == "password" => "password=REDACTED".to_owned(),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
version = 1
[repository.local]
location = "/srv/backup"
password-file = "/nonexistent/password"
[repository.offsite]
location = "s3:bucket/cairn"
password-command = "echo pw"
write-only = true
[job.daily]
into = "local"
copy-to = ["offsite"]
schedule = "Mon..Fri 02:30"
spread = "1h"
retention = { keep-daily = 7, min-keep = 3 }
check = { every = "7d", read-data-subset = "5%" }
[[job.daily.source]]
files = ["/etc"]
exclude = ["*.tmp"]
[[job.daily.source]]
postgres = "host=/run/postgresql dbname=app password=hunter2"
[[job.daily.source]]
command = ["echo", "hi"]
filename = "hi.txt"
"#;

    fn parse(text: &str) -> Result<Config, JobError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn a_good_config_validates() {
        let config = parse(GOOD).unwrap();
        assert_eq!(config.validate(), Validation::default());
        let job = config.job("daily").unwrap();
        assert_eq!(job.source.len(), 3);
        assert!(matches!(job.source[2].spec(), Ok(SourceSpec::Command { .. })));
    }

    #[test]
    fn an_sftp_repository_takes_its_ssh_command() {
        let text = GOOD.replace(
            "location = \"/srv/backup\"",
            "location = \"sftp:nas:/volume1/cairn\"\nsftp-command = \"ssh -F /etc/cairn/ssh_config nas -s sftp\"\nsftp-connections = 3",
        );
        let config = parse(&text).unwrap();
        assert_eq!(config.validate(), Validation::default());
        let local = config.repository("local").unwrap();
        assert_eq!(local.sftp_command.as_deref(), Some("ssh -F /etc/cairn/ssh_config nas -s sftp"));
        assert_eq!(local.sftp_connections, Some(3));
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let err = parse(&GOOD.replace("copy-to", "copy_to")).unwrap_err().to_string();
        assert!(err.contains("copy_to") && err.contains("test.toml"), "{err}");
        let err = parse(&GOOD.replace("keep-daily", "keep-dayly")).unwrap_err().to_string();
        assert!(err.contains("keep-dayly"), "{err}");
    }

    /// Each mistake, and the words its error must contain.
    #[test]
    fn mistakes_are_named() {
        let table: &[(&str, &str, &str)] = &[
            ("version = 1", "version = 2", "version 2"),
            ("into = \"local\"", "into = \"nas\"", "\"nas\", which is not configured"),
            ("copy-to = [\"offsite\"]", "copy-to = [\"local\"]", "the repository the job writes into"),
            ("into = \"local\"", "into = \"offsite\"", "which is write-only"),
            (
                "into = \"local\"\ncopy-to = [\"offsite\"]",
                "into = \"offsite\"\ncopy-to = [\"local\"]",
                "`copy-to` reads repository \"offsite\"",
            ),
            ("every = \"7d\"", "every = \"weekly\"", "is not a duration"),
            ("\"5%\"", "\"120%\"", "read-data-subset"),
            ("keep-daily = 7, ", "", "no keep-* rule"),
            ("filename = \"hi.txt\"", "", "needs a `filename`"),
            ("files = [\"/etc\"]", "files = [\"etc\"]", "relative path"),
            ("files = [\"/etc\"]", "files = [\"/etc\"]\npostgres = \"dbname=x\"", "more than one"),
            ("password-command = \"echo pw\"", "", "give `password-file` or `password-command`"),
            ("\"Mon..Fri 02:30\"", "\"Mon..Fri 25:30\"", "job.daily.schedule: calendar \"Mon..Fri 25:30\": hour 25"),
            ("spread = \"1h\"", "spread = \"soon\"", "job.daily.spread: \"soon\" is not a duration"),
        ];
        for (from, to, expected) in table {
            assert!(GOOD.contains(from), "{from}");
            let config = parse(&GOOD.replacen(from, to, 1)).unwrap();
            let errors = config.validate().errors.join("\n");
            assert!(errors.contains(expected), "{from} -> {to}: {errors}");
        }
    }

    #[test]
    fn secrets_are_redacted() {
        let printed = parse(GOOD).unwrap().redacted().to_toml();
        assert!(!printed.contains("hunter2") && printed.contains("password=REDACTED"), "{printed}");
        assert_eq!(redact_conninfo("postgresql://app:s3cret@db/app"), "postgresql://app:REDACTED@db/app");
        assert_eq!(redact_conninfo("postgresql://app@db/app"), "postgresql://app@db/app");
        // What is printed parses back to the same config, secrets aside.
        assert_eq!(parse(&printed).unwrap(), parse(GOOD).unwrap().redacted());
    }

    #[test]
    fn world_readable_secrets_are_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "pw\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let config = parse(&GOOD.replace("/nonexistent/password", &file.display().to_string())).unwrap();
        let v = config.validate();
        assert!(v.errors.is_empty(), "{:?}", v.errors);
        assert!(v.warnings.iter().any(|w| w.contains("chmod 600")), "{:?}", v.warnings);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(config.validate().warnings.is_empty());
    }

    /// The README's example config parses and validates.
    #[test]
    fn the_readme_example_checks() {
        let readme = include_str!("../../../../README.md");
        let section = &readme[readme.find("### `cairn run [JOB]`").expect("the README section")..];
        let start = section.find("```toml\n").expect("a toml block") + "```toml\n".len();
        let end = start + section[start..].find("```").expect("the block's end");
        let config = parse(&section[start..end]).unwrap();
        assert_eq!(config.validate().errors, Vec::<String>::new());
    }

    /// The NAS-plus-Google-Drive walkthrough's config parses and validates,
    /// with its repositories on sftp: and rclone:.
    #[test]
    fn the_readme_nas_and_drive_walkthrough_checks() {
        let readme = include_str!("../../../../README.md");
        let section = &readme[readme.find("### A NAS plus Google Drive").expect("the walkthrough")..];
        let start = section.find("```toml\n").expect("a toml block") + "```toml\n".len();
        let end = start + section[start..].find("```").expect("the block's end");
        let config = parse(&section[start..end]).unwrap();
        assert_eq!(config.validate().errors, Vec::<String>::new());
        assert!(config.repository("nas").unwrap().location.starts_with("sftp:"));
        assert!(config.repository("gdrive").unwrap().location.starts_with("rclone:"));
        assert_eq!(config.job("nightly").unwrap().copy_to, vec!["gdrive".to_owned()]);
        let with_args = section[start..end].replace("# rclone-args", "rclone-args");
        assert!(parse(&with_args).unwrap().repository("gdrive").unwrap().rclone_args.is_some());
    }

    /// Every recipe's config parses and validates.
    #[test]
    fn the_readme_recipes_check() {
        let readme = include_str!("../../../../README.md");
        let from = readme.find("### Recipes").expect("the recipes section");
        let to = from + 4 + readme[from + 4..].find("\n### ").expect("the next section");
        let blocks: Vec<&str> =
            readme[from..to].split("```toml\n").skip(1).map(|b| &b[..b.find("```").unwrap()]).collect();
        assert_eq!(blocks.len(), 4, "four recipes");
        for block in blocks {
            let config = parse(block).unwrap();
            assert_eq!(config.validate().errors, Vec::<String>::new(), "{block}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_every("7d").unwrap().as_secs(), 7 * 86_400);
        assert_eq!(parse_every("12h").unwrap().as_secs(), 12 * 3600);
        assert!(parse_every("0d").is_err());
        assert!(parse_every("weekly").is_err());
    }
}
