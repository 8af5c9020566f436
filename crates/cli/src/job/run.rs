//! Running one job: its steps in order, each recorded, none stopping the
//! ones after it unless they depend on it.

use std::path::PathBuf;
use std::time::Instant;

use cairn_repo::{
    Backend, BackendOptions, FileOptions, GroupBy, InitOptions, OpenOptions, PathFilter, PruneOptions, RcloneOptions,
    Repository, S3Options, SftpOptions, SnapshotFilter, SnapshotId, SnapshotOptions,
};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::config::{Config, JobConfig, RepositoryConfig, SourceSpec, parse_every, parse_subset};
use super::state::StateDir;
use super::{EXIT_LOCKED, JobError};

/// The kinds of step, in the order a run takes them (`--only`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    /// Each source into `into`.
    Sources,
    /// Retention on `into`, then a prune.
    Retention,
    /// A copy to each `copy-to` repository.
    Copy,
    /// A check of `into`, when due (or always, with `only`).
    Check,
    /// A restore drill from `into`, when due (or always, with `only`).
    Drill,
    /// A `before` command (runs with the sources).
    Before,
    /// An `after` command (runs with the sources, whatever they did).
    After,
}

impl Step {
    /// Every step `--only` can name, in order.
    pub const ALL: [Step; 5] = [Step::Sources, Step::Retention, Step::Copy, Step::Check, Step::Drill];

    /// The step's name, as `--only` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Step::Sources => "sources",
            Step::Retention => "retention",
            Step::Copy => "copy",
            Step::Check => "check",
            Step::Drill => "drill",
            Step::Before => "before",
            Step::After => "after",
        }
    }

    /// The step named `name`.
    pub fn parse(name: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// How a run goes.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Only this step (a due-based step then runs even if not due).
    pub only: Option<Step>,
    /// Change nothing: snapshots are not written, retention and prune
    /// only plan, copies and checks are not run; nothing is recorded.
    pub dry_run: bool,
    /// How repositories are opened (cache, grace period).
    pub open: OpenOptions,
    /// Run only if the job's `schedule` (default `daily`) has come round
    /// since the last run that did not fail: an hourly cron line then
    /// behaves like the calendar and catches up after downtime.
    pub if_due: bool,
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// Not run (not due, not asked for, or what it needs failed).
    Skipped,
    /// Done.
    Ok,
    /// Done, with something to look at (files that could not be read).
    Warning,
    /// Not done.
    Failed,
}

/// One step's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// `sources`, `retention`, `copy` or `check`.
    pub step: Step,
    /// What it worked on: the source (`files /etc`), the repository.
    pub subject: String,
    /// How it ended.
    pub status: StepStatus,
    /// What happened, in one line.
    pub message: String,
    /// When it started.
    pub started: Timestamp,
    /// How long it took.
    pub seconds: f64,
    /// The snapshot a source wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotId>,
    /// Bytes a source added to the repository (or a copy to its target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_added: Option<u64>,
    /// How long a drill's restores took (the recovery time it measured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_seconds: Option<f64>,
    /// Bytes a check read from the repository (what it downloads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_read: Option<u64>,
}

impl StepReport {
    /// A step that took no time, starting now (for tests and messages
    /// that are not a step's, like `cairn notify test`).
    pub fn new(step: Step, subject: impl Into<String>, status: StepStatus, message: impl Into<String>) -> StepReport {
        StepReport {
            step,
            subject: subject.into(),
            status,
            message: message.into(),
            started: Timestamp::now(),
            seconds: 0.0,
            snapshot: None,
            bytes_added: None,
            restore_seconds: None,
            bytes_read: None,
        }
    }
}

/// A repository's size after a run, for status, growth, cost and plots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepositorySize {
    /// The repository's name in the config.
    pub repository: String,
    /// Snapshots in it.
    pub snapshots: u64,
    /// What a restore of every snapshot would write (0 when
    /// `from_copy_records`).
    pub logical_bytes: u64,
    /// The distinct data, uncompressed, after deduplication (0 when
    /// `from_copy_records`).
    pub raw_bytes: u64,
    /// What the storage holds (after deduplication and compression).
    pub stored_bytes: u64,
    /// Not read from the repository (a write-only one cannot be read) but
    /// summed from what this host's runs wrote into it (sources and copies).
    #[serde(default)]
    pub from_copy_records: bool,
}

/// One run of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// The job.
    pub job: String,
    /// When the run started.
    pub started: Timestamp,
    /// When it ended.
    pub finished: Timestamp,
    /// A dry run (changed nothing).
    #[serde(default)]
    pub dry_run: bool,
    /// The steps, in order.
    pub steps: Vec<StepReport>,
    /// What each notification did.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<super::Delivery>,
    /// The job's repositories' sizes after the run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sizes: Vec<RepositorySize>,
    /// With `if_due`, when the job is next due: nothing was run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_due_until: Option<Timestamp>,
}

impl RunReport {
    /// An empty run of `job`, starting now.
    pub fn new(job: &str) -> RunReport {
        let now = Timestamp::now();
        RunReport {
            job: job.to_owned(),
            started: now,
            finished: now,
            dry_run: false,
            steps: Vec::new(),
            notifications: Vec::new(),
            sizes: Vec::new(),
            not_due_until: None,
        }
    }

    /// The worst step's status.
    pub fn status(&self) -> StepStatus {
        self.steps.iter().map(|s| s.status).max().unwrap_or(StepStatus::Skipped)
    }

    /// 0 when every step went well, 3 when one has warnings, 1 when one failed.
    pub fn exit_code(&self) -> u8 {
        match self.status() {
            StepStatus::Failed => 1,
            StepStatus::Warning => 3,
            StepStatus::Ok | StepStatus::Skipped => 0,
        }
    }
}

/// Hears about a run as it goes (the CLI prints each step).
pub trait JobEvents: Send + Sync {
    /// A step is starting.
    fn step_started(&self, _step: Step, _subject: &str) {}
    /// A step ended.
    fn step_finished(&self, _report: &StepReport) {}
}

/// Ignores every event.
pub struct NoJobEvents;

impl JobEvents for NoJobEvents {}

/// Runs job `name` of `config`, recording the run in `state` (not for a dry
/// run). Fails without running anything when the config does not validate
/// or another run holds the job's lock ([`JobError::Locked`], exit
/// [`EXIT_LOCKED`]); every later failure is a step's, in the report.
pub async fn run_job(
    config: &Config,
    name: &str,
    state: &StateDir,
    options: &RunOptions,
    events: &dyn JobEvents,
) -> Result<RunReport, JobError> {
    let validation = config.validate();
    if !validation.errors.is_empty() {
        return Err(JobError::Invalid(validation.errors.join("; ")));
    }
    let job = config.job(name)?;
    let _lock = state.lock(name)?;
    let previous = state.load(name)?;
    if options.if_due {
        let spec = job.schedule.as_deref().unwrap_or("daily");
        let calendar = super::Calendar::parse(spec).map_err(|e| JobError::Invalid(format!("schedule: {e}")))?;
        // The last run that saved a source: a run of `--only check`, or
        // one where only a later step (a check, a copy) failed, does not
        // move the schedule, nor does a failing step make every tick rerun.
        let saved = |r: &&RunReport| {
            !r.dry_run
                && r.steps
                    .iter()
                    .any(|s| s.step == Step::Sources && matches!(s.status, StepStatus::Ok | StepStatus::Warning))
        };
        let last = previous.runs.iter().rev().find(saved).map(|r| r.started);
        let tz = jiff::tz::TimeZone::system();
        if !super::is_due(&calendar, last, Timestamp::now(), &tz) {
            let mut report = RunReport::new(name);
            report.not_due_until = last.and_then(|t| calendar.next_after(t, &tz));
            return Ok(report);
        }
    }
    let host = job.host.clone().unwrap_or_else(cairn_repo::hostname);
    let notify = if options.dry_run { &[][..] } else { &config.notify[..] };
    let rid = run_id();
    let started = super::notify::started(notify, &rid).await;
    let mut run = Runner {
        config,
        name,
        job,
        options,
        events,
        report: RunReport::new(name),
        succeeded: Vec::new(),
        targets: Default::default(),
        copied: Default::default(),
    };
    run.report.dry_run = options.dry_run;
    run.run(&previous).await;
    let mut report = run.report;
    let mut written = previous.written.clone();
    for (target, bytes) in &run.copied {
        *written.entry(target.clone()).or_default() += bytes;
    }
    let write_only = |name: &str| config.repository(name).is_ok_and(|r| r.write_only);
    if write_only(&job.into) {
        let added: u64 = report.steps.iter().filter(|s| s.step == Step::Sources).filter_map(|s| s.bytes_added).sum();
        *written.entry(job.into.clone()).or_default() += added;
    }
    if !options.dry_run {
        // A write-only repository cannot be listed: its size is what this
        // host wrote into it.
        for target in std::iter::once(&job.into).chain(&job.copy_to) {
            if write_only(target) {
                report.sizes.push(super::RepositorySize {
                    repository: target.clone(),
                    snapshots: 0,
                    logical_bytes: 0,
                    raw_bytes: 0,
                    stored_bytes: written.get(target).copied().unwrap_or(0),
                    from_copy_records: true,
                });
            }
        }
    }
    report.finished = Timestamp::now();
    // Notifications never change the run's outcome; they are recorded.
    let previous_good = previous.runs.last().map(|r| r.exit_code() == 0);
    let event = super::Event::of(&report, previous_good);
    let log: String = report
        .steps
        .iter()
        .map(|s| format!("{:?} {} {}: {}\n", s.status, s.step.name(), s.subject, s.message))
        .collect();
    let finished = super::notify::finished(notify, &report, event, &host, &rid, &log).await;
    report.notifications = started.into_iter().chain(finished).collect();
    for delivery in report.notifications.iter().filter(|d| !d.ok) {
        tracing::warn!("notification to {} failed: {}", delivery.target, delivery.error);
    }
    if !options.dry_run {
        let mut next = previous;
        next.written = written;
        for (step, when) in &run.succeeded {
            next.last_success.insert(step.name().to_owned(), *when);
        }
        // Like a notification, a heartbeat never changes the run's outcome.
        let due = heartbeat_due(config, name, state, &next, &report, &host).unwrap_or_else(|e| {
            tracing::warn!("no heartbeat: {e}");
            None
        });
        if let Some(heartbeat) = due {
            let deliveries = super::notify::heartbeat(notify, &heartbeat).await;
            // Sent once one target has it; else tried again next run.
            if deliveries.iter().any(|d| d.ok) {
                next.last_success.insert(HEARTBEAT.to_owned(), heartbeat.status.generated);
            }
            for delivery in deliveries.iter().filter(|d| !d.ok) {
                tracing::warn!("heartbeat to {} failed: {}", delivery.target, delivery.error);
            }
            report.notifications.extend(deliveries);
        }
        state.record(name, next, report.clone())?;
        if let Some(metrics) = &config.metrics {
            // Like a notification, a metrics file that cannot be written is
            // logged and never changes the run's outcome.
            if let Err(e) = write_metrics(config, state, &metrics.textfile) {
                tracing::warn!("{e}");
            }
        }
    }
    Ok(report)
}

/// The key under which the last heartbeat is recorded.
const HEARTBEAT: &str = "heartbeat";

/// The heartbeat to send after `run`, if one is due: an occurrence of the
/// `heartbeat` calendar (default `monthly`) has passed since the last one
/// (or since the job's first recorded run).
fn heartbeat_due(
    config: &Config,
    name: &str,
    state: &StateDir,
    next: &super::JobState,
    run: &RunReport,
    host: &str,
) -> Result<Option<super::notify::Heartbeat>, JobError> {
    let spec = config.heartbeat.as_deref().unwrap_or("monthly");
    let wanted =
        config.notify.iter().any(|t| t.kind != super::TargetType::Healthchecks && t.wants(super::Event::Heartbeat));
    if spec == "off" || !wanted {
        return Ok(None);
    }
    let calendar = super::Calendar::parse(spec).map_err(|e| JobError::Invalid(format!("heartbeat: {e}")))?;
    let since = next.last_success.get(HEARTBEAT).copied().or(next.runs.first().map(|r| r.started));
    let now = Timestamp::now();
    if !super::is_due(&calendar, Some(since.unwrap_or(run.started)), now, &jiff::tz::TimeZone::system()) {
        return Ok(None);
    }
    // The state as it will be recorded, with this run.
    let mut states = std::collections::BTreeMap::new();
    for job in config.job.keys() {
        states.insert(job.clone(), if job == name { next.clone() } else { state.load(job)? });
    }
    if let Some(mine) = states.get_mut(name) {
        mine.runs.push(run.clone());
    }
    let runs: Vec<&RunReport> =
        states[name].runs.iter().filter(|r| since.is_none_or(|s| r.started >= s) && !r.dry_run).collect();
    let status = super::assess(config, &[name.to_owned()], &states, &Default::default(), &Default::default(), now);
    Ok(Some(super::notify::Heartbeat {
        job: name.to_owned(),
        host: host.to_owned(),
        since,
        runs: runs.len(),
        failed: runs.iter().filter(|r| r.exit_code() == 1).count(),
        warnings: runs.iter().filter(|r| r.exit_code() == 3).count(),
        status,
    }))
}

/// Rewrites the textfile with every configured job's state.
fn write_metrics(config: &Config, state: &StateDir, path: &std::path::Path) -> Result<(), JobError> {
    let mut states = std::collections::BTreeMap::new();
    for job in config.job.keys() {
        states.insert(job.clone(), state.load(job)?);
    }
    super::metrics::write(path, &super::metrics::render(&states))
}

/// A random id pairing a run's start and end pings (a UUID, version 4).
fn run_id() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // Uniqueness is all that matters here: the clock will do.
        b = Timestamp::now().as_nanosecond().to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = |r: std::ops::Range<usize>| b[r].iter().map(|x| format!("{x:02x}")).collect::<String>();
    format!("{}-{}-{}-{}-{}", h(0..4), h(4..6), h(6..8), h(8..10), h(10..16))
}

/// `EXIT_LOCKED` is the code for [`JobError::Locked`]; other errors are 1
/// (a config error is the caller's to call a usage error).
impl JobError {
    /// The exit code this error deserves.
    pub fn exit_code(&self) -> u8 {
        match self {
            JobError::Locked { .. } => EXIT_LOCKED,
            _ => 1,
        }
    }
}

struct Runner<'a> {
    config: &'a Config,
    name: &'a str,
    job: &'a JobConfig,
    options: &'a RunOptions,
    events: &'a dyn JobEvents,
    report: RunReport,
    /// Due-based steps that succeeded in this run, and when.
    succeeded: Vec<(Step, Timestamp)>,
    /// Copy targets opened in this run.
    targets: std::collections::BTreeMap<String, Repository>,
    /// Bytes each copy wrote, by target.
    copied: std::collections::BTreeMap<String, u64>,
}

/// What a step body returns: its status, message, and what a source wrote.
struct Done {
    status: StepStatus,
    message: String,
    snapshot: Option<SnapshotId>,
    bytes_added: Option<u64>,
    restore_seconds: Option<f64>,
    bytes_read: Option<u64>,
}

impl Done {
    fn ok(message: impl Into<String>) -> Done {
        Done {
            status: StepStatus::Ok,
            message: message.into(),
            snapshot: None,
            bytes_added: None,
            restore_seconds: None,
            bytes_read: None,
        }
    }

    fn skipped(message: impl Into<String>) -> Done {
        Done { status: StepStatus::Skipped, ..Done::ok(message) }
    }
}

impl Runner<'_> {
    fn wanted(&self, step: Step) -> bool {
        self.options.only.is_none_or(|only| only == step)
    }

    async fn run(&mut self, previous: &super::JobState) {
        let into = match self.open(&self.job.into, None).await {
            Ok(repo) => Some(repo),
            Err(e) => {
                self.record(Step::Sources, &format!("repository {}", self.job.into), Instant::now(), Err(e));
                None
            }
        };
        if self.wanted(Step::Sources) {
            let ready = self.before().await;
            for spec in self.job.source.iter().filter_map(|s| s.spec().ok()) {
                let subject = describe(&spec);
                let started = self.start(Step::Sources, &subject);
                let outcome = match (&into, ready) {
                    (Some(repo), true) => self.backup(repo, &spec).await,
                    (None, _) => Ok(Done::skipped("the repository could not be opened")),
                    (Some(_), false) => Ok(Done::skipped("a `before` command failed")),
                };
                self.record(Step::Sources, &subject, started, outcome);
            }
            self.after().await;
        }
        let Some(into) = into else { return };
        let subject = format!("repository {}", self.job.into);
        if self.wanted(Step::Retention) {
            if let Some(rules) = &self.job.retention {
                let started = self.start(Step::Retention, &subject);
                let outcome = self.retention(&into, rules).await;
                self.record(Step::Retention, &subject, started, outcome);
            }
        }
        if self.wanted(Step::Copy) {
            for target in &self.job.copy_to {
                let subject = format!("repository {target}");
                let started = self.start(Step::Copy, &subject);
                let outcome = self.copy(&into, target).await;
                self.record(Step::Copy, &subject, started, outcome);
            }
        }
        if self.wanted(Step::Check) {
            if let Some(check) = &self.job.check {
                let started = self.start(Step::Check, &subject);
                let outcome = match self.due(Step::Check, &check.every, previous) {
                    Ok(None) => self.check(&into, check).await,
                    Ok(Some(not_due)) => Ok(not_due),
                    Err(e) => Err(e),
                };
                self.record(Step::Check, &subject, started, outcome);
            }
        }
        if self.wanted(Step::Drill) {
            if let Some(drill) = &self.job.drill {
                let started = self.start(Step::Drill, &subject);
                let outcome = match self.due(Step::Drill, &drill.every, previous) {
                    Ok(None) => self.drill(&into, drill, previous).await,
                    Ok(Some(not_due)) => Ok(not_due),
                    Err(e) => Err(e),
                };
                self.record(Step::Drill, &subject, started, outcome);
            }
        }
        if !self.options.dry_run {
            self.measure(&into).await;
        }
    }

    /// Runs the `before` commands in order; false (and the rest not run)
    /// when one fails.
    async fn before(&mut self) -> bool {
        for command in &self.job.before {
            let started = self.start(Step::Before, command);
            if self.options.dry_run {
                self.record(Step::Before, command, started, Ok(Done::skipped("dry run: not run")));
                continue;
            }
            let outcome = run_hook(command, &[]).await;
            let failed = outcome.is_err();
            self.record(Step::Before, command, started, outcome.map(Done::ok));
            if failed {
                return false;
            }
        }
        true
    }

    /// Runs every `after` command, each whatever the others did, with the
    /// sources' outcome in `CAIRN_JOB_STATUS`.
    async fn after(&mut self) {
        let status = match self.report.status() {
            StepStatus::Failed => "failed",
            StepStatus::Warning => "warning",
            StepStatus::Ok | StepStatus::Skipped => "ok",
        };
        for command in &self.job.after {
            let started = self.start(Step::After, command);
            let outcome = if self.options.dry_run {
                Ok(Done::skipped("dry run: not run"))
            } else {
                run_hook(command, &[("CAIRN_JOB_STATUS", status)]).await.map(Done::ok)
            };
            self.record(Step::After, command, started, outcome);
        }
    }

    /// `None` when `step` (done every `every`) is due, else why it is
    /// skipped. Due when never done, or `every` after the last good one: a
    /// run missed while the host was down catches up at the next run.
    fn due(&self, step: Step, every: &str, previous: &super::JobState) -> Result<Option<Done>, JobError> {
        let every = parse_every(every).map_err(JobError::Invalid)?;
        let last = previous.last_success.get(step.name()).copied();
        let due_at = last.and_then(|t| t.checked_add(jiff::SignedDuration::try_from(every).ok()?).ok());
        let due = self.options.only == Some(step) || due_at.is_none_or(|at| at <= Timestamp::now());
        if !due {
            let at = due_at.map(|t| t.to_string()).unwrap_or_default();
            return Ok(Some(Done::skipped(format!("not due until {at}"))));
        }
        if self.options.dry_run {
            return Ok(Some(Done::skipped("dry run: due, not run")));
        }
        Ok(None)
    }

    /// Records the sizes of `into` and of each copy target opened in this
    /// run (a write-only target's comes from the copy records, later).
    async fn measure(&mut self, into: &Repository) {
        let mut repos = vec![(self.job.into.clone(), into.clone())];
        repos.extend(self.targets.iter().map(|(name, repo)| (name.clone(), repo.clone())));
        for (name, repo) in repos {
            if repo.write_only() {
                continue;
            }
            match measure(&repo).await {
                Ok(usage) => self.report.sizes.push(RepositorySize {
                    repository: name,
                    snapshots: usage.snapshots,
                    logical_bytes: usage.logical_bytes,
                    raw_bytes: usage.raw_bytes,
                    stored_bytes: usage.stored_bytes,
                    from_copy_records: false,
                }),
                // Sizes are for status and plots: a failure here is not the run's.
                Err(e) => tracing::warn!("cannot measure repository {name}: {e}"),
            }
        }
    }

    fn start(&self, step: Step, subject: &str) -> Instant {
        self.events.step_started(step, subject);
        Instant::now()
    }

    fn record(&mut self, step: Step, subject: &str, started: Instant, outcome: Result<Done, JobError>) {
        let done = outcome.unwrap_or_else(|e| Done { status: StepStatus::Failed, ..Done::ok(e.to_string()) });
        let elapsed = started.elapsed();
        let report = StepReport {
            step,
            subject: subject.to_owned(),
            status: done.status,
            message: done.message,
            started: Timestamp::now()
                .checked_sub(jiff::SignedDuration::try_from(elapsed).unwrap_or_default())
                .unwrap_or_else(|_| Timestamp::now()),
            seconds: elapsed.as_secs_f64(),
            snapshot: done.snapshot,
            bytes_added: done.bytes_added,
            restore_seconds: done.restore_seconds,
            bytes_read: done.bytes_read,
        };
        self.events.step_finished(&report);
        self.report.steps.push(report);
    }

    /// Opens repository `name`, creating it on first use if its config
    /// says `init`: a copy target is created like `like` (the same secret
    /// and chunker, so copies into it move packs verbatim).
    async fn open(&self, name: &str, like: Option<&Repository>) -> Result<Repository, JobError> {
        let config = self.config.repository(name)?;
        // A dry run creates nothing, not even a repository.
        let init = (config.init && !self.options.dry_run).then(|| match like {
            Some(source) => InitOptions::default().like(source),
            None => Ok(InitOptions::default()),
        });
        open_repository(config, init.transpose()?, &self.options.open).await
    }

    /// The filter that selects this job's snapshots: its name is a tag of each.
    fn own_snapshots(&self) -> SnapshotFilter {
        SnapshotFilter { tag_sets: vec![vec![self.name.to_owned()]], ..Default::default() }
    }

    async fn backup(&self, repo: &Repository, spec: &SourceSpec) -> Result<Done, JobError> {
        let mut tags = vec![self.name.to_owned()];
        tags.extend(self.job.tags.iter().cloned());
        let options = SnapshotOptions {
            hostname: self.job.host.clone(),
            tags,
            dry_run: self.options.dry_run,
            ..Default::default()
        };
        let mut session = repo.begin_snapshot(options).await?;
        match spec {
            SourceSpec::Files { paths, exclude, exclude_caches, one_file_system } => {
                let files = FileOptions {
                    excludes: PathFilter::new(exclude)?,
                    exclude_if_present: if *exclude_caches { vec!["CACHEDIR.TAG".into()] } else { Vec::new() },
                    one_file_system: *one_file_system,
                    ..Default::default()
                };
                session.add_paths(paths, &files).await?;
            }
            SourceSpec::Command { argv, filename } => session.add_command_output(filename, argv).await?,
            // Added below, where its report is kept.
            SourceSpec::Bucket { .. } => {}
            SourceSpec::Postgres { conninfo, all_databases, exclude_table_data, bindir } => {
                let conn = cairn_pgsource::ConnSpec::parse(Some(conninfo))?;
                let tools = cairn_pgsource::Tools { bindir: bindir.clone() };
                if *all_databases {
                    let options = cairn_pgsource::ClusterBackupOptions {
                        conn,
                        jobs: 2,
                        tools,
                        no_role_passwords: false,
                        exclude_databases: Vec::new(),
                        row_order: Default::default(),
                    };
                    session.add_source(&mut cairn_pgsource::ClusterSource::new(options)).await?;
                } else {
                    let options = cairn_pgsource::BackupOptions {
                        conn,
                        jobs: 2,
                        selection: cairn_pgsource::manifest::SelectionEntry {
                            exclude_table_data: exclude_table_data.clone(),
                            ..Default::default()
                        },
                        tools,
                        row_order: Default::default(),
                    };
                    session.add_source(&mut cairn_pgsource::DatabaseSource::new(options)).await?;
                }
            }
        }
        let mut drift = Vec::new();
        if let SourceSpec::Bucket { location, s3_endpoint, s3_region, s3_path_style, env_file } = spec {
            let mut s3 = S3Options {
                endpoint: s3_endpoint.clone(),
                region: s3_region.clone(),
                path_style: *s3_path_style,
                access_key_id: None,
                secret_access_key: None,
            };
            if let Some(file) = env_file {
                read_env_file(file, &mut s3)?;
            }
            let bucket = cairn_repo::Bucket::open(location, &BackendOptions { s3, ..Default::default() })?;
            let options = cairn_repo::BucketBackupOptions { hostname: self.job.host.clone(), ..Default::default() };
            let mut source = cairn_repo::BucketSource::new(bucket, repo, options);
            session.add_source(&mut source).await?;
            drift = source.report().drift.clone();
        }
        let committed = session.commit().await?;
        let s = &committed.summary;
        if !drift.is_empty() {
            let keys: Vec<String> = drift
                .iter()
                .map(|d| match d {
                    cairn_repo::BucketDrift::Changed { key } => format!("changed {key}"),
                    cairn_repo::BucketDrift::Vanished { key } => format!("vanished {key}"),
                    cairn_repo::BucketDrift::Unreadable { key, .. } => format!("unreadable {key}"),
                })
                .collect();
            let id = committed.id.map(|id| id.short()).unwrap_or_else(|| "(dry run)".into());
            return Ok(Done {
                status: StepStatus::Warning,
                snapshot: committed.id,
                bytes_added: Some(s.bytes_added),
                ..Done::ok(format!(
                    "snapshot {id}: {} objects changed or vanished while the bucket was read: {}",
                    keys.len(),
                    keys.join(", ")
                ))
            });
        }
        let what = format!(
            "{} new, {} changed, {} unchanged files; {} added",
            s.files_new,
            s.files_changed,
            s.files_unchanged,
            bytes(s.bytes_added)
        );
        let (status, message) = match (s.errors, committed.id) {
            (0, Some(id)) => (StepStatus::Ok, format!("snapshot {}: {what}", id.short())),
            (n, Some(id)) => (
                StepStatus::Warning,
                format!("snapshot {} is incomplete: {n} entries could not be read; {what}", id.short()),
            ),
            (_, None) => (StepStatus::Ok, format!("dry run: {what}")),
        };
        Ok(Done { status, snapshot: committed.id, bytes_added: Some(s.bytes_added), ..Done::ok(message) })
    }

    async fn retention(&self, repo: &Repository, rules: &cairn_repo::RetentionRules) -> Result<Done, JobError> {
        let policy = rules.policy()?;
        let snapshots = repo.snapshots_matching(&self.own_snapshots()).await?;
        let by = GroupBy::parse("host,paths").map_err(|e| JobError::Invalid(e.to_string()))?;
        let plan = cairn_repo::plan_forget(snapshots, &policy, by, rules.min_keep, &jiff::tz::TimeZone::system())?;
        let removals = plan.removals().count();
        let kept: usize = plan.groups.iter().map(|g| g.verdicts.len()).sum::<usize>() - removals;
        if self.options.dry_run {
            return Ok(Done::ok(format!("dry run: would keep {kept} and remove {removals} snapshot(s)")));
        }
        let removed = plan.execute(repo).await?;
        if removed == 0 {
            return Ok(Done::ok(format!("kept all {kept} snapshot(s); nothing to prune")));
        }
        let report = cairn_repo::prune(repo, &PruneOptions::default(), &|_| {}).await?;
        Ok(Done::ok(format!(
            "kept {kept}, removed {removed} snapshot(s); prune marked {} pack(s) ({}) and repacked {}",
            report.packs_marked,
            bytes(report.bytes_marked),
            bytes(report.bytes_repacked)
        )))
    }

    async fn copy(&mut self, from: &Repository, target: &str) -> Result<Done, JobError> {
        if self.options.dry_run {
            return Ok(Done::skipped("dry run: not copied"));
        }
        let to = self.open(target, Some(from)).await?;
        self.targets.insert(target.to_owned(), to.clone());
        let snapshots = from.snapshots_matching(&self.own_snapshots()).await?;
        let handle = tokio::runtime::Handle::current();
        let from = from.clone();
        let outcome = tokio::task::spawn_blocking(move || cairn_repo::copy_snapshots(&from, &to, &snapshots, &handle))
            .await
            .map_err(|e| JobError::Invalid(format!("the copy thread failed: {e}")))??;
        *self.copied.entry(target.to_owned()).or_default() += outcome.bytes;
        Ok(Done {
            bytes_added: Some(outcome.bytes),
            ..Done::ok(format!(
                "{} snapshot(s) copied, {} already there; {} written",
                outcome.copied.len(),
                outcome.skipped.len(),
                bytes(outcome.bytes)
            ))
        })
    }

    /// Drills the newest snapshot of each source: see [`super::drill`].
    async fn drill(
        &mut self,
        repo: &Repository,
        drill: &super::DrillConfig,
        previous: &super::JobState,
    ) -> Result<Done, JobError> {
        let budget = match &drill.sample_files {
            Some(size) => {
                crate::units::parse_size(size).map_err(|e| JobError::Invalid(format!("sample-files: {e}")))?
            }
            None => super::drill::DEFAULT_SAMPLE_BYTES,
        };
        let listing = repo.snapshots_matching(&self.own_snapshots()).await?;
        let now = Timestamp::now();
        let (mut ok, mut seconds, mut read, mut lines) = (true, 0.0, 0, Vec::new());
        for spec in self.job.source.iter().filter_map(|s| s.spec().ok()) {
            let subject = describe(&spec);
            // This run's snapshot of the source, else the newest earlier one
            // that is still in the repository.
            let tonight = self.report.steps.iter().rev().filter(|s| s.step == Step::Sources && s.subject == subject);
            let candidates = tonight.filter_map(|s| s.snapshot).chain(previous.snapshots_of(&subject));
            let found = candidates.into_iter().find_map(|id| listing.iter().find(|(i, _)| *i == id));
            let Some((id, snapshot)) = found else {
                ok = false;
                lines.push(format!("{subject}: no snapshot to restore"));
                continue;
            };
            let outcome = match &spec {
                SourceSpec::Postgres { conninfo, bindir, .. } => {
                    let admin = drill.postgres_admin.as_deref().unwrap_or(conninfo);
                    let admin = cairn_pgsource::ConnSpec::parse(Some(admin))?;
                    let tools = cairn_pgsource::Tools { bindir: bindir.clone() };
                    super::drill::drill_postgres(repo, *id, snapshot, admin, &drill.checks, tools).await
                }
                _ => super::drill::drill_files(repo, *id, snapshot, budget).await,
            };
            match outcome {
                Ok(outcome) => {
                    ok &= outcome.ok;
                    seconds += outcome.restore_seconds;
                    read += outcome.bytes_read;
                    lines.push(format!("{subject}: {}", outcome.message));
                }
                Err(e) => {
                    ok = false;
                    lines.push(format!("{subject}: {e}"));
                }
            }
        }
        if ok {
            self.succeeded.push((Step::Drill, now));
        }
        Ok(Done {
            status: if ok { StepStatus::Ok } else { StepStatus::Failed },
            restore_seconds: Some(seconds),
            bytes_read: Some(read),
            ..Done::ok(lines.join("; "))
        })
    }

    async fn check(&mut self, repo: &Repository, check: &super::CheckConfig) -> Result<Done, JobError> {
        let now = Timestamp::now();
        let subset = check.read_data_subset.as_deref().map(parse_subset).transpose()?;
        let report = cairn_repo::check(repo, subset).await?;
        if report.problems.is_empty() {
            self.succeeded.push((Step::Check, now));
            return Ok(Done {
                bytes_read: Some(report.bytes_read),
                ..Done::ok(format!(
                    "{} snapshot(s), {} pack(s); read {} pack(s), {}: no problems",
                    report.snapshots,
                    report.packs,
                    report.packs_read,
                    bytes(report.bytes_read)
                ))
            });
        }
        let first: Vec<String> =
            report.problems.iter().take(3).map(|p| format!("{}: {}", p.object, p.message)).collect();
        Ok(Done {
            status: StepStatus::Failed,
            bytes_read: Some(report.bytes_read),
            ..Done::ok(format!("{} problem(s): {}", report.problems.len(), first.join("; ")))
        })
    }
}

/// The sizes of a readable repository, from its index and snapshot list.
pub(super) async fn measure(repo: &Repository) -> Result<cairn_repo::Usage, JobError> {
    let (index, snapshots) = tokio::try_join!(repo.load_index(), repo.list_snapshots())?;
    Ok(cairn_repo::Usage::measure(&index, &snapshots))
}

/// Runs a `before`/`after` command with `sh -c`; its output goes to the
/// run's own (the journal, under systemd). `Err` says how it failed.
async fn run_hook(command: &str, env: &[(&str, &str)]) -> Result<String, JobError> {
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        // Its output goes to stderr: stdout is for `--json`.
        .stdout(hook_output())
        .kill_on_drop(true)
        .status()
        .await
        .map_err(|e| JobError::Invalid(format!("cannot run sh: {e}")))?;
    if status.success() { Ok("done".into()) } else { Err(JobError::Invalid(format!("the command failed ({status})"))) }
}

/// Where a hook's standard output goes: cairn's standard error.
fn hook_output() -> std::process::Stdio {
    use std::os::fd::AsFd;
    match std::io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => std::process::Stdio::from(fd),
        Err(_) => std::process::Stdio::null(),
    }
}

/// A source in a few words, for reports.
pub(super) fn describe(spec: &SourceSpec) -> String {
    match spec {
        SourceSpec::Files { paths, .. } => {
            format!("files {}", paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" "))
        }
        SourceSpec::Postgres { conninfo, all_databases: true, .. } => {
            format!("postgres (all databases) {}", super::config::redact_conninfo(conninfo))
        }
        SourceSpec::Postgres { conninfo, .. } => format!("postgres {}", super::config::redact_conninfo(conninfo)),
        SourceSpec::Command { filename, .. } => format!("command output {filename}"),
        SourceSpec::Bucket { location, .. } => format!("bucket {location}"),
    }
}

fn bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

/// Opens repository `name` of `config` with its password and credentials
/// (never creating it): what `cairn config check --connect` does for each.
pub async fn connect(config: &Config, name: &str, open: &OpenOptions) -> Result<Repository, JobError> {
    open_repository(config.repository(name)?, None, open).await
}

/// Opens a configured repository; with `init`, creates it on first use
/// with those options.
async fn open_repository(
    config: &RepositoryConfig,
    init: Option<InitOptions>,
    open: &OpenOptions,
) -> Result<Repository, JobError> {
    let password = match (&config.password_file, &config.password_command) {
        (Some(file), _) => crate::secret::from_file(file)?,
        (None, Some(command)) => crate::secret::from_command(command)?,
        (None, None) => return Err(JobError::Invalid(format!("{}: no password source", config.location))),
    };
    let mut s3 = S3Options {
        endpoint: config.s3_endpoint.clone(),
        region: config.s3_region.clone(),
        path_style: config.s3_path_style,
        access_key_id: None,
        secret_access_key: None,
    };
    if let Some(file) = &config.env_file {
        read_env_file(file, &mut s3)?;
    }
    let create = init.is_some();
    let sftp = SftpOptions { command: config.sftp_command.clone(), connections: config.sftp_connections };
    let rclone = RcloneOptions { program: config.rclone_program.clone(), args: config.rclone_args.clone() };
    let options = BackendOptions { create, s3, sftp, rclone, ..Default::default() };
    let backend = Backend::open(&config.location, &options)?;
    let repo = match init {
        Some(options) => Repository::open_or_init(backend, &password, options, open.clone()).await?,
        None => Repository::open(backend, &password, open.clone()).await?,
    };
    Ok(repo)
}

/// Reads storage credentials from a `KEY=VALUE` file (comments and blank
/// lines allowed, values optionally quoted).
fn read_env_file(path: &PathBuf, s3: &mut S3Options) -> Result<(), JobError> {
    let bad = |message: String| JobError::File { path: path.clone(), message };
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read the env file: {e}")))?;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            return Err(bad(format!("line {}: not KEY=VALUE", n + 1)));
        };
        let value = value.trim().trim_matches('"').trim_matches('\'').to_owned();
        match key.trim() {
            "AWS_ACCESS_KEY_ID" => s3.access_key_id = Some(value),
            "AWS_SECRET_ACCESS_KEY" => s3.secret_access_key = Some(value),
            "AWS_REGION" | "AWS_DEFAULT_REGION" => {
                s3.region.get_or_insert(value);
            }
            "AWS_ENDPOINT_URL" | "AWS_ENDPOINT_URL_S3" => {
                s3.endpoint.get_or_insert(value);
            }
            other => {
                return Err(bad(format!(
                    "line {}: unknown key {other}: cairn reads AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, \
                     AWS_REGION and AWS_ENDPOINT_URL",
                    n + 1
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(status: StepStatus) -> StepReport {
        StepReport::new(Step::Sources, "", status, "")
    }

    /// The exit code is the worst step's.
    #[test]
    fn exit_codes() {
        let table: &[(&[StepStatus], u8)] = &[
            (&[], 0),
            (&[StepStatus::Ok, StepStatus::Skipped], 0),
            (&[StepStatus::Ok, StepStatus::Warning], 3),
            (&[StepStatus::Failed, StepStatus::Warning, StepStatus::Ok], 1),
        ];
        for (statuses, code) in table {
            let mut run = RunReport::new("j");
            run.steps = statuses.iter().map(|s| step(*s)).collect();
            assert_eq!(run.exit_code(), *code, "{statuses:?}");
        }
    }

    #[test]
    fn env_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("env");
        std::fs::write(&path, "# offsite\nexport AWS_ACCESS_KEY_ID=abc\nAWS_SECRET_ACCESS_KEY=\"s3cret\"\n\n").unwrap();
        let mut s3 = S3Options::default();
        read_env_file(&path, &mut s3).unwrap();
        assert_eq!((s3.access_key_id.as_deref(), s3.secret_access_key.as_deref()), (Some("abc"), Some("s3cret")));
        std::fs::write(&path, "AWS_SECRET_KEY=x\n").unwrap();
        assert!(read_env_file(&path, &mut s3).unwrap_err().to_string().contains("unknown key AWS_SECRET_KEY"));
    }
}
