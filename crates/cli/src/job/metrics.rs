//! The Prometheus textfile: every job's last run as gauges, for
//! node_exporter's textfile collector. Written after each run, atomically
//! (a temporary file in the same directory, renamed), with every job of
//! the config in it, so one file serves them all.
//!
//! Names follow the Prometheus conventions: one `cairn_` prefix, base units
//! with their suffix, no snapshot ids as labels.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use super::JobError;
use super::run::{Step, StepStatus};
use super::state::JobState;

/// The textfile for the jobs' states (jobs that never ran are left out).
pub fn render(states: &BTreeMap<String, JobState>) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, samples: Vec<(String, f64)>| {
        if samples.is_empty() {
            return;
        }
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    };
    let escape = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
    let job_label = |job: &str| format!("job=\"{}\"", escape(job));
    let last = |state: &JobState| state.runs.last().cloned();
    let per_job = |f: &dyn Fn(&str, &JobState) -> Option<f64>| -> Vec<(String, f64)> {
        states.iter().filter_map(|(job, state)| f(job, state).map(|v| (job_label(job), v))).collect()
    };
    gauge(
        "cairn_job_last_run_timestamp_seconds",
        "When the job's last run ended.",
        per_job(&|_, s| last(s).map(|r| r.finished.as_second() as f64)),
    );
    gauge(
        "cairn_job_last_success_timestamp_seconds",
        "When the job last ended with exit code 0.",
        per_job(&|_, s| s.runs.iter().rev().find(|r| r.exit_code() == 0).map(|r| r.finished.as_second() as f64)),
    );
    gauge(
        "cairn_job_last_exit_code",
        "The exit code of the job's last run (0 ok, 3 warnings, 1 failed).",
        per_job(&|_, s| last(s).map(|r| r.exit_code() as f64)),
    );
    gauge(
        "cairn_job_duration_seconds",
        "How long the job's last run took.",
        per_job(&|_, s| last(s).map(|r| r.finished.duration_since(r.started).as_secs_f64())),
    );
    gauge(
        "cairn_check_last_success_timestamp_seconds",
        "When the job's repository last passed a check.",
        per_job(&|_, s| s.last_success.get(Step::Check.name()).map(|t| t.as_second() as f64)),
    );
    gauge(
        "cairn_drill_last_success_timestamp_seconds",
        "When the job's newest snapshots last restored in a drill.",
        per_job(&|_, s| s.last_success.get(Step::Drill.name()).map(|t| t.as_second() as f64)),
    );
    gauge(
        "cairn_drill_restore_duration_seconds",
        "How long the restores of the job's last good drill took.",
        per_job(&|_, s| {
            let drills = s.runs.iter().rev().flat_map(|r| r.steps.iter().rev()).filter(|x| x.step == Step::Drill);
            drills.filter(|x| x.status == StepStatus::Ok).find_map(|x| x.restore_seconds)
        }),
    );
    // Each repository's newest recorded size, whichever job recorded it.
    let mut sizes: BTreeMap<String, (jiff::Timestamp, u64)> = BTreeMap::new();
    for run in states.values().flat_map(|s| &s.runs) {
        for size in &run.sizes {
            let entry = sizes.entry(size.repository.clone()).or_insert((run.finished, size.stored_bytes));
            if run.finished >= entry.0 {
                *entry = (run.finished, size.stored_bytes);
            }
        }
    }
    gauge(
        "cairn_repository_size_bytes",
        "Bytes the repository stores (for a write-only one, what this host wrote into it).",
        sizes.iter().map(|(repo, (_, bytes))| (format!("repository=\"{}\"", escape(repo)), *bytes as f64)).collect(),
    );
    let mut added = Vec::new();
    for (job, state) in states {
        for step in last(state).iter().flat_map(|r| r.steps.clone()) {
            if let (Step::Sources, Some(bytes), StepStatus::Ok | StepStatus::Warning) =
                (step.step, step.bytes_added, step.status)
            {
                added.push((format!("{},source=\"{}\"", job_label(job), escape(&step.subject)), bytes as f64));
            }
        }
    }
    gauge("cairn_backup_added_bytes", "Bytes each source added to the repository in the job's last run.", added);
    gauge(
        "cairn_build_info",
        "The cairn that wrote this file.",
        vec![(format!("version=\"{}\"", env!("CARGO_PKG_VERSION")), 1.0)],
    );
    out
}

/// Writes `text` to `path` atomically: a temporary file beside it, renamed.
pub fn write(path: &Path, text: &str) -> Result<(), JobError> {
    super::write_atomically(path, text.as_bytes())
        .map_err(|e| JobError::File { path: path.to_owned(), message: format!("cannot write: {e}") })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::run::{RunReport, StepReport};

    #[test]
    fn gauges_of_the_last_runs() {
        let mut run = RunReport::new("nightly");
        run.steps.push(StepReport {
            seconds: 1.0,
            bytes_added: Some(4096),
            ..StepReport::new(Step::Sources, "files /etc", StepStatus::Ok, "")
        });
        let mut states = BTreeMap::new();
        states.insert("nightly".to_owned(), JobState { runs: vec![run], ..Default::default() });
        states.insert("never".to_owned(), JobState::default());
        let text = render(&states);
        assert!(text.contains("# TYPE cairn_job_last_exit_code gauge\ncairn_job_last_exit_code{job=\"nightly\"} 0\n"));
        assert!(text.contains("cairn_backup_added_bytes{job=\"nightly\",source=\"files /etc\"} 4096\n"), "{text}");
        assert!(!text.contains("never"), "a job that never ran has no samples");
        assert!(!text.contains("cairn_check_last_success"), "no check yet: no gauge");
        // Every sample line is NAME{LABELS} VALUE.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').unwrap();
            assert!(series.starts_with("cairn_") && series.ends_with('}'), "{line}");
            value.parse::<f64>().unwrap();
        }
    }

    #[test]
    fn written_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cairn.prom");
        write(&path, "a 1\n").unwrap();
        write(&path, "a 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a 2\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
    }
}
