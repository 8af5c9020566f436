//! `cairn status`: is every job's data safe, and what does it cost?
//!
//! The newest snapshot of each source is read from the repository (a run
//! that reported success is not proof: a snapshot can be forgotten since),
//! and held against the job's recovery point objective. The last check
//! and drill come from the state file, with when each is due next. Each
//! repository's size is read from it (or, for a write-only one, summed
//! from what this host wrote), with its ratios, growth and estimated
//! monthly cost against its budget.
//!
//! [`assess`] is pure: it judges what [`status`] gathered.

use std::collections::BTreeMap;

use cairn_repo::{OpenOptions, Snapshot, SnapshotId};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::cost::{self, CostEstimate, MonthlyUse};
use super::run::{RepositorySize, Step, StepStatus};
use super::{Config, JobError, JobState, Level, StateDir, StatusRow, StatusTable};

/// Seconds in a day.
const DAY: f64 = 86_400.0;

/// The whole status: each job, and each repository they use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// When it was made.
    pub generated: Timestamp,
    /// Each job asked about.
    pub jobs: Vec<JobStatus>,
    /// Each repository those jobs use.
    pub repositories: Vec<RepositoryStatus>,
}

/// One job's status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    /// The job.
    pub job: String,
    /// The recovery point objective, in seconds.
    pub rpo_seconds: Option<u64>,
    /// Each source's newest snapshot.
    pub sources: Vec<SourceStatus>,
    /// The last run.
    pub last_run: Option<LastRun>,
    /// When the last run that failed started.
    pub last_failure: Option<Timestamp>,
    /// The due-based check.
    pub check: Option<DueStatus>,
    /// The due-based drill.
    pub drill: Option<DueStatus>,
    /// What is stale or failed (`status --check` fails).
    pub problems: Vec<String>,
    /// What is worth a look (over budget, a step overdue).
    pub warnings: Vec<String>,
}

/// A source's newest snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceStatus {
    /// The source, as run reports name it.
    pub source: String,
    /// Its newest snapshot.
    pub snapshot: Option<SnapshotId>,
    /// When that snapshot was taken.
    pub time: Option<Timestamp>,
    /// How old it is, in seconds.
    pub age_seconds: Option<i64>,
    /// Older than the RPO, or missing.
    pub stale: bool,
    /// Read from the repository (false: from this host's records, as a
    /// write-only repository cannot be read).
    pub verified: bool,
}

/// The last run of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastRun {
    /// When it started.
    pub started: Timestamp,
    /// How long it took.
    pub seconds: f64,
    /// Its exit code.
    pub exit_code: u8,
}

/// A due-based step (check, drill).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DueStatus {
    /// When it last succeeded.
    pub last_success: Option<Timestamp>,
    /// How its last attempt ended.
    pub last_status: Option<StepStatus>,
    /// What its last attempt said.
    pub last_message: Option<String>,
    /// A drill's restore time, in seconds (the last good drill's).
    pub restore_seconds: Option<f64>,
    /// When it is due next (now, if never done).
    pub next_due: Timestamp,
}

/// One repository's status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepositoryStatus {
    /// Its name in the config.
    pub repository: String,
    /// Where it is.
    pub location: String,
    /// Write-only credentials.
    pub write_only: bool,
    /// Its size (read now, or summed from what this host wrote).
    pub size: Option<RepositorySize>,
    /// Logical ÷ raw.
    pub dedup_ratio: Option<f64>,
    /// Raw ÷ stored.
    pub compression_ratio: Option<f64>,
    /// Stored bytes added a day, over the recorded history (needs a day of it).
    pub growth_bytes_per_day: Option<f64>,
    /// The estimated monthly cost.
    pub cost: Option<CostEstimate>,
    /// The budget, in USD a month.
    pub budget: Option<f64>,
    /// Why the size is unknown, if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What [`status`] gathers about a job before judging it.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The job's snapshots in `into` (`None` when it cannot be read).
    pub snapshots: Option<Vec<(SnapshotId, Snapshot)>>,
    /// Why they could not be read.
    pub error: Option<String>,
}

/// Gathers and judges the status of `only` (or every job).
pub async fn status(
    config: &Config,
    only: Option<&str>,
    state: &StateDir,
    open: &OpenOptions,
) -> Result<StatusReport, JobError> {
    let names: Vec<String> = match only {
        Some(name) => {
            config.job(name)?;
            vec![name.to_owned()]
        }
        None => config.job.keys().cloned().collect(),
    };
    let mut states = BTreeMap::new();
    for name in config.job.keys() {
        states.insert(name.clone(), state.load(name)?);
    }
    let mut observed = BTreeMap::new();
    let mut used: Vec<String> = Vec::new();
    let mut opened: BTreeMap<String, Result<cairn_repo::Repository, String>> = BTreeMap::new();
    for name in &names {
        let job = config.job(name)?;
        for repo in std::iter::once(&job.into).chain(&job.copy_to) {
            if !used.contains(repo) {
                used.push(repo.clone());
            }
        }
        if !opened.contains_key(&job.into) && !config.repository(&job.into)?.write_only {
            let repo = super::connect(config, &job.into, open).await.map_err(|e| e.to_string());
            opened.insert(job.into.clone(), repo);
        }
        let seen = match opened.get(&job.into) {
            None => Observed::default(),
            Some(Err(e)) => Observed { snapshots: None, error: Some(e.clone()) },
            Some(Ok(repo)) => {
                let filter = cairn_repo::SnapshotFilter { tag_sets: vec![vec![name.clone()]], ..Default::default() };
                match repo.snapshots_matching(&filter).await {
                    Ok(list) => Observed { snapshots: Some(list), error: None },
                    Err(e) => Observed { snapshots: None, error: Some(e.to_string()) },
                }
            }
        };
        observed.insert(name.clone(), seen);
    }
    let mut measured = BTreeMap::new();
    for name in &used {
        let write_only = config.repository(name)?.write_only;
        if write_only {
            continue;
        }
        if !opened.contains_key(name) {
            let repo = super::connect(config, name, open).await.map_err(|e| e.to_string());
            opened.insert(name.clone(), repo);
        }
        let size = match &opened[name] {
            Err(e) => Err(e.clone()),
            Ok(repo) => super::run::measure(repo).await.map_err(|e| e.to_string()),
        };
        measured.insert(name.clone(), size);
    }
    Ok(assess(config, &names, &states, &observed, &measured, Timestamp::now()))
}

/// Judges the gathered facts (pure): `measured` holds the usage read from
/// each readable repository.
pub fn assess(
    config: &Config,
    names: &[String],
    states: &BTreeMap<String, JobState>,
    observed: &BTreeMap<String, Observed>,
    measured: &BTreeMap<String, Result<cairn_repo::Usage, String>>,
    now: Timestamp,
) -> StatusReport {
    let empty = JobState::default();
    let mut jobs = Vec::new();
    let mut used: Vec<String> = Vec::new();
    for name in names {
        let Ok(job) = config.job(name) else { continue };
        let state = states.get(name).unwrap_or(&empty);
        let seen = observed.get(name).cloned().unwrap_or_default();
        for repo in std::iter::once(&job.into).chain(&job.copy_to) {
            if !used.contains(repo) {
                used.push(repo.clone());
            }
        }
        jobs.push(assess_job(config, name, state, &seen, now));
    }
    let mut repositories: Vec<RepositoryStatus> =
        used.iter().map(|name| assess_repository(config, name, states, measured.get(name), now)).collect();
    // A repository over its budget is every job's warning that uses it.
    for repo in &mut repositories {
        if let (Some(cost), Some(budget)) = (&repo.cost, repo.budget)
            && cost.total > budget
        {
            let warning = format!(
                "repository {} costs an estimated ${:.2}/month, over its budget of ${budget:.2}",
                repo.repository, cost.total
            );
            for job in jobs.iter_mut() {
                let uses = config
                    .job(&job.job)
                    .is_ok_and(|j| j.into == repo.repository || j.copy_to.contains(&repo.repository));
                if uses {
                    job.warnings.push(warning.clone());
                }
            }
        }
        if let Some(e) = &repo.error {
            for job in jobs.iter_mut().filter(|j| config.job(&j.job).is_ok_and(|c| c.into == repo.repository)) {
                job.problems.push(format!("repository {} cannot be read: {e}", repo.repository));
            }
        }
    }
    StatusReport { generated: now, jobs, repositories }
}

fn assess_job(config: &Config, name: &str, state: &JobState, seen: &Observed, now: Timestamp) -> JobStatus {
    let job = config.job.get(name).cloned().unwrap_or_default();
    let rpo = job.rpo.as_deref().and_then(|r| crate::units::parse_duration(r).ok());
    let mut status = JobStatus {
        job: name.to_owned(),
        rpo_seconds: rpo.map(|d| d.as_secs()),
        sources: Vec::new(),
        last_run: state.runs.last().map(|r| LastRun {
            started: r.started,
            seconds: r.finished.duration_since(r.started).as_secs_f64(),
            exit_code: r.exit_code(),
        }),
        last_failure: state.runs.iter().rev().find(|r| r.exit_code() == 1).map(|r| r.started),
        check: None,
        drill: None,
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    if let Some(e) = &seen.error {
        status.problems.push(format!("the snapshots in repository {} cannot be read: {e}", job.into));
    }
    for spec in job.source.iter().filter_map(|s| s.spec().ok()) {
        let subject = super::run::describe(&spec);
        let newest = match &seen.snapshots {
            // Read from the repository: the newest recorded snapshot still there.
            Some(list) => {
                let mut recorded = state.snapshots_of(&subject);
                recorded.find_map(|id| list.iter().find(|(i, _)| *i == id)).map(|(id, s)| (*id, s.time, true))
            }
            // Write-only (or unreadable): this host's record of it.
            None => state.runs.iter().rev().flat_map(|r| r.steps.iter().rev()).find_map(|s| {
                (s.step == Step::Sources && s.subject == subject && s.status <= StepStatus::Warning)
                    .then_some(s.snapshot.map(|id| (id, s.started, false)))
                    .flatten()
            }),
        };
        let age = newest.map(|(_, time, _)| now.duration_since(time).as_secs());
        let stale = match (age, rpo) {
            (None, _) => true,
            (Some(age), Some(rpo)) => age > rpo.as_secs() as i64,
            (Some(_), None) => false,
        };
        if newest.is_none() {
            status.problems.push(format!("{subject}: no snapshot in repository {}", job.into));
        } else if stale {
            status.problems.push(format!(
                "{subject}: the newest snapshot is {} old, older than the RPO of {}",
                human_age(age.unwrap_or(0)),
                job.rpo.clone().unwrap_or_default()
            ));
        }
        status.sources.push(SourceStatus {
            source: subject,
            snapshot: newest.map(|n| n.0),
            time: newest.map(|n| n.1),
            age_seconds: age,
            stale,
            verified: newest.is_some_and(|n| n.2),
        });
    }
    if let Some(run) = state.runs.last()
        && run.exit_code() == 1
    {
        let failed: Vec<String> = run
            .steps
            .iter()
            .filter(|s| s.status == StepStatus::Failed)
            .map(|s| format!("{} {}: {}", s.step.name(), s.subject, s.message))
            .collect();
        status.problems.push(format!("the last run ({}) failed: {}", run.started, failed.join("; ")));
    }
    let due_steps = [
        (Step::Check, job.check.as_ref().map(|c| c.every.clone())),
        (Step::Drill, job.drill.as_ref().map(|d| d.every.clone())),
    ];
    for (step, every) in due_steps {
        let Some(every) = every.and_then(|e| super::parse_every(&e).ok()) else { continue };
        let due = due_status(state, step, every, now);
        if due.last_status == Some(StepStatus::Failed) {
            status.problems.push(format!(
                "the last {} failed: {}",
                step.name(),
                due.last_message.clone().unwrap_or_default()
            ));
        } else if now.duration_since(due.next_due).as_secs_f64() > DAY {
            status.warnings.push(format!("the {} is overdue since {}", step.name(), due.next_due));
        }
        match step {
            Step::Check => status.check = Some(due),
            _ => status.drill = Some(due),
        }
    }
    status
}

/// A due-based step's record in `state`.
fn due_status(state: &JobState, step: Step, every: std::time::Duration, now: Timestamp) -> DueStatus {
    let last_success = state.last_success.get(step.name()).copied();
    let attempts = || state.runs.iter().rev().flat_map(|r| r.steps.iter().rev()).filter(|s| s.step == step);
    let last = attempts().find(|s| s.status != StepStatus::Skipped);
    let good_drill = attempts().find(|s| s.status == StepStatus::Ok);
    let every = SignedDuration::try_from(every).unwrap_or(SignedDuration::MAX);
    DueStatus {
        last_success,
        last_status: last.map(|s| s.status),
        last_message: last.map(|s| s.message.clone()),
        restore_seconds: good_drill.and_then(|s| s.restore_seconds),
        next_due: last_success.and_then(|t| t.checked_add(every).ok()).unwrap_or(now),
    }
}

fn assess_repository(
    config: &Config,
    name: &str,
    states: &BTreeMap<String, JobState>,
    measured: Option<&Result<cairn_repo::Usage, String>>,
    now: Timestamp,
) -> RepositoryStatus {
    let repo = config.repository.get(name).cloned().unwrap_or_default();
    let history = size_history(name, repo.write_only, states);
    let (size, error) = match measured {
        Some(Ok(usage)) => (
            Some(RepositorySize {
                repository: name.to_owned(),
                snapshots: usage.snapshots,
                logical_bytes: usage.logical_bytes,
                raw_bytes: usage.raw_bytes,
                stored_bytes: usage.stored_bytes,
                from_copy_records: false,
            }),
            None,
        ),
        Some(Err(e)) => (history.last().map(|(_, z)| z.clone()), Some(e.clone())),
        None => (history.last().map(|(_, z)| z.clone()), None),
    };
    let usage = size.as_ref().map(|z| cairn_repo::Usage {
        snapshots: z.snapshots,
        logical_bytes: z.logical_bytes,
        raw_bytes: z.raw_bytes,
        stored_bytes: z.stored_bytes,
        packs: 0,
    });
    let growth = growth_per_day(&history.iter().map(|(t, z)| (*t, z.stored_bytes)).collect::<Vec<_>>());
    let cost = match (&repo.rates, &size) {
        (Some(rates), Some(size)) => cost::prices(rates).ok().map(|(card, prices)| {
            let monthly = monthly_use(config, name, states, size.stored_bytes, now);
            cost::estimate(&card, &prices, &monthly)
        }),
        _ => None,
    };
    RepositoryStatus {
        repository: name.to_owned(),
        location: repo.location.clone(),
        write_only: repo.write_only,
        dedup_ratio: usage.and_then(|u| u.dedup_ratio()),
        compression_ratio: usage.and_then(|u| u.compression_ratio()),
        size,
        growth_bytes_per_day: growth,
        cost,
        budget: repo.budget.as_deref().and_then(|b| cost::parse_budget(b).ok()),
        error,
    }
}

/// The sizes the runs recorded for repository `name`, oldest first. A
/// listed repository's record is the whole of it. A write-only one's is
/// what one job of this host wrote into it, so there each point is the
/// sum of every job's latest record at that time.
fn size_history(name: &str, write_only: bool, states: &BTreeMap<String, JobState>) -> Vec<(Timestamp, RepositorySize)> {
    let mut records: Vec<(Timestamp, &str, &RepositorySize)> = states
        .iter()
        .flat_map(|(job, s)| s.runs.iter().map(move |r| (job.as_str(), r)))
        .flat_map(|(job, r)| r.sizes.iter().filter(|z| z.repository == name).map(move |z| (r.finished, job, z)))
        .collect();
    records.sort_by_key(|(t, _, _)| *t);
    let mut latest: BTreeMap<&str, u64> = BTreeMap::new();
    records
        .into_iter()
        .map(|(t, job, z)| {
            if !write_only {
                return (t, z.clone());
            }
            latest.insert(job, z.stored_bytes);
            (t, RepositorySize { stored_bytes: latest.values().sum(), ..z.clone() })
        })
        .collect()
}

/// Stored bytes added a day between the first and last sample of the
/// last 30 days; `None` with less than a day of history (a few runs in a
/// row say nothing about a day).
pub fn growth_per_day(samples: &[(Timestamp, u64)]) -> Option<f64> {
    let last = samples.last()?;
    let since = last.0.checked_sub(SignedDuration::from_hours(24 * 30)).ok()?;
    let first = samples.iter().find(|(t, _)| *t >= since)?;
    let days = last.0.duration_since(first.0).as_secs_f64() / DAY;
    (days >= 1.0).then(|| (last.1 as f64 - first.1 as f64) / days)
}

/// What a month of this repository looks like, from the runs of the last
/// 30 days: the bytes the jobs wrote into it, the runs, and what checks,
/// drills and copies read from it, scaled to 30 days (history shorter than a day counts as
/// one day).
fn monthly_use(
    config: &Config,
    name: &str,
    states: &BTreeMap<String, JobState>,
    stored_bytes: u64,
    now: Timestamp,
) -> MonthlyUse {
    let since = now.checked_sub(SignedDuration::from_hours(24 * 30)).unwrap_or(now);
    let (mut written, mut read, mut runs) = (0.0, 0.0, 0.0);
    let mut oldest = now;
    for (job_name, state) in states {
        let Ok(job) = config.job(job_name) else { continue };
        let is_into = job.into == name;
        let is_target = job.copy_to.iter().any(|t| t == name);
        if !is_into && !is_target {
            continue;
        }
        for run in state.runs.iter().filter(|r| r.started >= since && !r.dry_run) {
            oldest = oldest.min(run.started);
            runs += 1.0;
            for step in &run.steps {
                let subject_is_this = step.subject == format!("repository {name}");
                match step.step {
                    Step::Sources if is_into => written += step.bytes_added.unwrap_or(0) as f64,
                    Step::Copy if subject_is_this => written += step.bytes_added.unwrap_or(0) as f64,
                    // What the check, the drill and the copies to other
                    // repositories download from this one.
                    Step::Check | Step::Drill if is_into => read += step.bytes_read.unwrap_or(0) as f64,
                    Step::Copy if is_into && !subject_is_this => read += step.bytes_added.unwrap_or(0) as f64,
                    _ => {}
                }
            }
        }
    }
    let days = (now.duration_since(oldest).as_secs_f64() / DAY).clamp(1.0, 30.0);
    let scale = 30.0 / days;
    MonthlyUse {
        stored_bytes,
        written_bytes: written * scale,
        runs: runs * scale,
        read_bytes: read * scale,
        pack_bytes: u64::from(cairn_repo::Config::DEFAULT_PACK_SIZE),
    }
}

/// `3d 4h`, `5h 2m`, `40s`.
pub fn human_age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

impl StatusReport {
    /// The exit code of `status --check`: 1 when something is stale or
    /// failed, 3 when something is worth a look, else 0.
    pub fn exit_code(&self) -> u8 {
        if self.jobs.iter().any(|j| !j.problems.is_empty()) {
            1
        } else if self.jobs.iter().any(|j| !j.warnings.is_empty()) {
            3
        } else {
            0
        }
    }
}

impl StatusReport {
    /// The report as people read it, one fact a line (`cairn status`, and
    /// the body of a heartbeat): each job's last run, its sources against
    /// the RPO, its check and drill, its problems and warnings; then each
    /// repository's size, growth and cost.
    pub fn lines(&self) -> Vec<String> {
        let now = self.generated;
        let ago = |t: Timestamp| human_age(now.duration_since(t).as_secs());
        let mut lines = Vec::new();
        for job in &self.jobs {
            lines.push(match &job.last_run {
                Some(run) => format!(
                    "job {}: last run {} ago, exit {}, {:.1}s",
                    job.job,
                    ago(run.started),
                    run.exit_code,
                    run.seconds
                ),
                None => format!("job {}: never run", job.job),
            });
            let rpo = job.rpo_seconds.map(|s| format!(" (RPO {})", human_age(s as i64))).unwrap_or_default();
            for source in &job.sources {
                let verdict = if source.stale { "STALE" } else { "ok" };
                lines.push(match (source.snapshot, source.time) {
                    (Some(id), Some(time)) => format!(
                        "  {verdict:5} {}: snapshot {} taken {} ago{rpo}{}",
                        source.source,
                        id.short(),
                        ago(time),
                        if source.verified { "" } else { " (from this host's records)" }
                    ),
                    _ => format!("  {verdict:5} {}: no snapshot", source.source),
                });
            }
            for (name, due) in [("check", &job.check), ("drill", &job.drill)] {
                if let Some(due) = due {
                    lines.push(format!("  {name}: {}", due.summary(now)));
                }
            }
            lines.extend(job.problems.iter().map(|p| format!("  problem: {p}")));
            lines.extend(job.warnings.iter().map(|w| format!("  warning: {w}")));
        }
        lines.extend(self.repositories.iter().map(RepositoryStatus::summary));
        lines
    }
}

impl DueStatus {
    /// `last good 2d 3h ago, restore took 4.1s; next due in 4d 20h`.
    pub fn summary(&self, now: Timestamp) -> String {
        let last = match (self.last_success, self.last_status) {
            (Some(t), _) => format!("last good {} ago", human_age(now.duration_since(t).as_secs())),
            (None, Some(_)) => "never succeeded".to_owned(),
            (None, None) => "never run".to_owned(),
        };
        let failed = match self.last_status {
            Some(StepStatus::Failed) => {
                format!(", LAST ATTEMPT FAILED: {}", self.last_message.clone().unwrap_or_default())
            }
            _ => String::new(),
        };
        let restore = self.restore_seconds.map(|s| format!(", restore took {s:.1}s")).unwrap_or_default();
        let next = if self.next_due <= now {
            "due now".to_owned()
        } else {
            format!("next due in {}", human_age(self.next_due.duration_since(now).as_secs()))
        };
        format!("{last}{restore}{failed}; {next}")
    }
}

impl RepositoryStatus {
    /// `repository offsite: 52 GB written by this host (write-only),
    /// +1 GB/day, ~$0.29/month (b2), budget $1.00; at s3:bucket/cairn`.
    pub fn summary(&self) -> String {
        let bytes = |n: u64| indicatif::HumanBytes(n).to_string();
        let mut parts = Vec::new();
        match &self.size {
            Some(size) if size.from_copy_records => {
                parts.push(format!("{} written by this host (write-only)", bytes(size.stored_bytes)))
            }
            Some(size) => {
                parts.push(format!("{} stored, {} snapshot(s)", bytes(size.stored_bytes), size.snapshots));
                parts.extend(self.dedup_ratio.map(|r| format!("dedup {r:.2}x")));
                parts.extend(self.compression_ratio.map(|r| format!("compression {r:.2}x")));
            }
            None => parts.push("size unknown".into()),
        }
        if let Some(g) = self.growth_bytes_per_day {
            let sign = if g < 0.0 { "-" } else { "+" };
            parts.push(format!("{sign}{}/day", bytes(g.abs() as u64)));
        }
        if let Some(cost) = &self.cost {
            parts.push(format!("~${:.2}/month ({})", cost.total, cost.rates));
        }
        parts.extend(self.budget.map(|b| format!("budget ${b:.2}")));
        if let Some(e) = &self.error {
            parts.push(format!("cannot be read: {e}"));
        }
        format!("repository {}: {}; at {}", self.repository, parts.join(", "), self.location)
    }
}

impl StatusReport {
    /// The report as tables (for the HTML page): the sources against the
    /// RPO, the due-based steps, and the repositories.
    pub fn tables(&self) -> Vec<StatusTable> {
        let now = self.generated;
        let age = |t: Timestamp| human_age(now.duration_since(t).as_secs());
        let mut sources = StatusTable {
            title: "Newest snapshots".into(),
            headers: ["job", "source", "snapshot", "age", "RPO", "state"].map(String::from).to_vec(),
            rows: Vec::new(),
        };
        let mut steps = StatusTable {
            title: "Checks and drills".into(),
            headers: ["job", "step", "last good", "restore time", "next due", "state"].map(String::from).to_vec(),
            rows: Vec::new(),
        };
        for job in &self.jobs {
            let rpo = job.rpo_seconds.map(|s| human_age(s as i64)).unwrap_or_else(|| "none".into());
            for source in &job.sources {
                sources.rows.push(StatusRow {
                    cells: vec![
                        job.job.clone(),
                        source.source.clone(),
                        source.snapshot.map(|id| id.short()).unwrap_or_else(|| "none".into()),
                        source.time.map(age).unwrap_or_default(),
                        rpo.clone(),
                        if source.stale { "stale" } else { "ok" }.into(),
                    ],
                    level: if source.stale { Level::Failed } else { Level::Ok },
                });
            }
            for (name, due) in [("check", &job.check), ("drill", &job.drill)] {
                let Some(due) = due else { continue };
                let failed = due.last_status == Some(StepStatus::Failed);
                let next = if due.next_due <= now {
                    "now".into()
                } else {
                    format!("in {}", human_age(due.next_due.duration_since(now).as_secs()))
                };
                steps.rows.push(StatusRow {
                    cells: vec![
                        job.job.clone(),
                        name.into(),
                        due.last_success.map(|t| format!("{} ago", age(t))).unwrap_or_else(|| "never".into()),
                        due.restore_seconds.map(|s| format!("{s:.1}s")).unwrap_or_default(),
                        next,
                        if failed { "last attempt failed" } else { "ok" }.into(),
                    ],
                    level: if failed { Level::Failed } else { Level::Ok },
                });
            }
        }
        let mut repositories = StatusTable {
            title: "Repositories".into(),
            headers: [
                "repository",
                "stored",
                "snapshots",
                "dedup",
                "compression",
                "growth a day",
                "cost a month",
                "budget",
            ]
            .map(String::from)
            .to_vec(),
            rows: Vec::new(),
        };
        for repo in &self.repositories {
            let bytes = |n: u64| indicatif::HumanBytes(n).to_string();
            let ratio = |r: Option<f64>| r.map(|r| format!("{r:.2}x")).unwrap_or_default();
            let over = matches!((&repo.cost, repo.budget), (Some(c), Some(b)) if c.total > b);
            repositories.rows.push(StatusRow {
                cells: vec![
                    repo.repository.clone(),
                    match &repo.size {
                        Some(z) if z.from_copy_records => format!("{} (written, write-only)", bytes(z.stored_bytes)),
                        Some(z) => bytes(z.stored_bytes),
                        None => "unknown".into(),
                    },
                    repo.size
                        .as_ref()
                        .filter(|z| !z.from_copy_records)
                        .map(|z| z.snapshots.to_string())
                        .unwrap_or_default(),
                    ratio(repo.dedup_ratio),
                    ratio(repo.compression_ratio),
                    repo.growth_bytes_per_day
                        .map(|g| format!("{}{}", if g < 0.0 { "-" } else { "+" }, bytes(g.abs() as u64)))
                        .unwrap_or_default(),
                    repo.cost.as_ref().map(|c| format!("${:.2} ({})", c.total, c.rates)).unwrap_or_default(),
                    repo.budget.map(|b| format!("${b:.2}")).unwrap_or_default(),
                ],
                level: if repo.error.is_some() {
                    Level::Failed
                } else if over {
                    Level::Warning
                } else {
                    Level::Ok
                },
            });
        }
        vec![sources, steps, repositories]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::run::{RunReport, StepReport};

    const CONFIG: &str = r#"
version = 1
[repository.local]
location = "/srv/cairn"
password-file = "/etc/cairn/password"
[repository.offsite]
location = "s3:bucket/cairn"
password-file = "/etc/cairn/password"
write-only = true
rates = "b2"
budget = "0.01"
[job.nightly]
into = "local"
copy-to = ["offsite"]
rpo = "26h"
check = { every = "7d" }
[[job.nightly.source]]
files = ["/etc"]
[[job.nightly.source]]
command = ["true"]
filename = "x"
"#;

    fn at(hours_ago: i64, now: Timestamp) -> Timestamp {
        now.checked_sub(SignedDuration::from_hours(hours_ago)).unwrap()
    }

    fn snapshot(id: u8, time: Timestamp) -> (SnapshotId, Snapshot) {
        let mut s = Snapshot::new(cairn_repo::TreeId::default(), vec!["/etc".into()]);
        s.time = time;
        (SnapshotId(cairn_repo::Id::of_object(&[id])), s)
    }

    /// One run `hours_ago`, backing up /etc into snapshot `id`, copying
    /// `copied` bytes offsite, with a check of `check` status.
    fn run(hours_ago: i64, id: u8, copied: u64, check: StepStatus, now: Timestamp) -> RunReport {
        let mut run = RunReport::new("nightly");
        run.started = at(hours_ago, now);
        run.finished = run.started;
        let mut source = StepReport::new(Step::Sources, "files /etc", StepStatus::Ok, "");
        source.snapshot = Some(snapshot(id, run.started).0);
        source.bytes_added = Some(copied);
        let mut copy = StepReport::new(Step::Copy, "repository offsite", StepStatus::Ok, "");
        copy.bytes_added = Some(copied);
        run.steps = vec![source, copy, StepReport::new(Step::Check, "repository local", check, "pack 1 is damaged")];
        run.sizes.push(RepositorySize {
            repository: "offsite".into(),
            snapshots: 0,
            logical_bytes: 0,
            raw_bytes: 0,
            stored_bytes: 50_000_000_000 + copied,
            from_copy_records: true,
        });
        run
    }

    #[test]
    fn judgements() {
        let config = Config::parse(CONFIG, std::path::Path::new("cairn.toml")).unwrap();
        assert!(config.validate().errors.is_empty(), "{:?}", config.validate());
        let now: Timestamp = "2026-12-05T12:00:00Z".parse().unwrap();
        let usage = cairn_repo::Usage { snapshots: 2, logical_bytes: 900, raw_bytes: 300, stored_bytes: 150, packs: 1 };
        // (name, newest snapshot's age in hours, whether it is still listed,
        //  last check, problems expected, warnings expected, exit code)
        type Case<'a> = (&'a str, i64, bool, StepStatus, &'a [&'a str], &'a [&'a str], u8);
        let table: &[Case] = &[
            ("fresh", 2, true, StepStatus::Ok, &["command output x: no snapshot"], &["over its budget"], 1),
            ("stale", 30, true, StepStatus::Ok, &["files /etc: the newest snapshot is 1d 6h old"], &[], 1),
            ("forgotten", 2, false, StepStatus::Ok, &["files /etc: no snapshot"], &[], 1),
            ("check failed", 2, true, StepStatus::Failed, &["the last check failed: pack 1 is damaged"], &[], 1),
        ];
        for (name, age, listed, check, problems, warnings, code) in table {
            let mut state = JobState::default();
            state.runs.push(run(age + 24, 1, 1_000_000_000, StepStatus::Ok, now));
            state.runs.push(run(*age, 2, 2_000_000_000, *check, now));
            let listing = if *listed { vec![snapshot(2, at(*age, now))] } else { vec![snapshot(9, now)] };
            let states = BTreeMap::from([("nightly".to_owned(), state)]);
            let observed = BTreeMap::from([("nightly".to_owned(), Observed { snapshots: Some(listing), error: None })]);
            let measured = BTreeMap::from([("local".to_owned(), Ok(usage))]);
            let report = assess(&config, &["nightly".to_owned()], &states, &observed, &measured, now);
            let job = &report.jobs[0];
            for expected in *problems {
                assert!(job.problems.iter().any(|p| p.contains(expected)), "{name}: {:?}", job.problems);
            }
            for expected in *warnings {
                assert!(job.warnings.iter().any(|w| w.contains(expected)), "{name}: {:?}", job.warnings);
            }
            assert_eq!(report.exit_code(), *code, "{name}");
            // What people read says the same.
            let lines = report.lines();
            let stale = lines.iter().any(|l| l.contains("STALE") && l.contains("files /etc"));
            assert_eq!(stale, matches!(*name, "stale" | "forgotten"), "{name}: {lines:#?}");
            for expected in problems.iter().chain(*warnings) {
                assert!(lines.iter().any(|l| l.contains(expected)), "{name}: {lines:#?}");
            }
            assert!(
                lines.iter().any(|l| l.starts_with("repository offsite: 48.43 GiB written by this host (write-only)")
                    && l.contains("budget $0.01; at s3:bucket/cairn")),
                "{name}: {lines:#?}"
            );
            // The local repository as measured; the write-only offsite as
            // this host wrote it, its cost from the b2 card.
            let local = &report.repositories[0];
            assert_eq!((local.dedup_ratio, local.compression_ratio), (Some(3.0), Some(2.0)), "{name}");
            let offsite = &report.repositories[1];
            let size = offsite.size.as_ref().unwrap();
            assert!(size.from_copy_records && size.stored_bytes == 52_000_000_000, "{name}: {size:?}");
            // 52 GB, 10 free, at $0.00695: $0.29 a month.
            let cost = offsite.cost.as_ref().unwrap();
            assert!((cost.total - 42.0 * 0.00695).abs() < 1e-9, "{name}: {cost:?}");
            assert_eq!(offsite.growth_bytes_per_day, Some(1e9), "{name}");
        }
    }

    #[test]
    fn a_write_only_size_sums_what_each_job_wrote() {
        let config = Config::parse(
            &format!(
                "{CONFIG}\n[job.db]\ninto = \"local\"\ncopy-to = [\"offsite\"]\n[[job.db.source]]\nfiles = [\"/srv\"]\n"
            ),
            std::path::Path::new("cairn.toml"),
        )
        .unwrap();
        let now: Timestamp = "2026-12-05T12:00:00Z".parse().unwrap();
        let written = |hours_ago: i64, bytes: u64| {
            let mut run = RunReport::new("x");
            run.finished = at(hours_ago, now);
            run.sizes.push(RepositorySize {
                repository: "offsite".into(),
                snapshots: 0,
                logical_bytes: 0,
                raw_bytes: 0,
                stored_bytes: bytes,
                from_copy_records: true,
            });
            run
        };
        // nightly wrote 10 GB then 12; db wrote 5 then 8 (cumulative, per job).
        let nightly =
            JobState { runs: vec![written(72, 10_000_000_000), written(24, 12_000_000_000)], ..Default::default() };
        let db = JobState { runs: vec![written(48, 5_000_000_000), written(0, 8_000_000_000)], ..Default::default() };
        let states = BTreeMap::from([("nightly".to_owned(), nightly), ("db".to_owned(), db)]);
        let history: Vec<u64> = size_history("offsite", true, &states).iter().map(|(_, z)| z.stored_bytes).collect();
        assert_eq!(history, [10, 15, 17, 20].map(|gb: u64| gb * 1_000_000_000));
        let status = assess_repository(&config, "offsite", &states, None, now);
        assert_eq!(status.size.unwrap().stored_bytes, 20_000_000_000);
        // 10 GB over three days.
        let growth = status.growth_bytes_per_day.unwrap();
        assert!((growth - 10e9 / 3.0).abs() < 1.0, "{growth}");
        // A listed repository's records are each the whole of it.
        let listed: Vec<u64> = size_history("offsite", false, &states).iter().map(|(_, z)| z.stored_bytes).collect();
        assert_eq!(listed, [10, 5, 12, 8].map(|gb: u64| gb * 1_000_000_000));
    }

    #[test]
    fn growth_needs_a_day_of_history() {
        let now: Timestamp = "2026-12-05T12:00:00Z".parse().unwrap();
        type Case<'a> = (&'a [(i64, u64)], Option<f64>);
        let table: &[Case] = &[
            (&[], None),
            (&[(0, 100)], None),
            (&[(5, 100), (0, 200)], None),
            (&[(48, 100), (0, 300)], Some(100.0)),
            // Samples older than 30 days are left out.
            (&[(24 * 40, 0), (48, 100), (0, 300)], Some(100.0)),
            (&[(24, 500), (0, 300)], Some(-200.0)),
        ];
        for (samples, growth) in table {
            let samples: Vec<(Timestamp, u64)> = samples.iter().map(|(h, b)| (at(*h, now), *b)).collect();
            assert_eq!(growth_per_day(&samples), *growth, "{samples:?}");
        }
    }
}
