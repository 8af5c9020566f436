//! `cairn status [JOB]`: each job's newest snapshots against its RPO, the
//! last check and drill, and each repository's size and cost.

use anyhow::Result;
use cairn::job::{DueStatus, JobError, StatusReport};
use indicatif::HumanBytes;

use crate::args::{GlobalArgs, StatusArgs};
use crate::context;
use crate::escape;
use crate::exit;

pub async fn run(global: &GlobalArgs, args: StatusArgs) -> Result<u8> {
    let (path, config) = crate::commands::config::load(args.config.config.as_deref())?;
    let state = crate::commands::run::state_dir(&args.state)?;
    let report = match cairn::job::status(&config, args.job.as_deref(), &state, &context::open_options(global)).await {
        Ok(report) => report,
        Err(e @ JobError::NoSuchJob { .. }) => exit::usage!("{}: {e}", path.display()),
        Err(e) => return Err(e.into()),
    };
    if global.json {
        context::print_json(&report)?;
    } else {
        print!("{}", escape::human(&render(&report)));
    }
    Ok(if args.check { report.exit_code() } else { 0 })
}

/// The report as people read it.
fn render(report: &StatusReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let ago = |t: jiff::Timestamp| cairn::job::human_age(report.generated.duration_since(t).as_secs());
    for job in &report.jobs {
        let _ = match &job.last_run {
            Some(run) => writeln!(
                out,
                "job {}: last run {} ago, exit {}, {:.1}s",
                job.job,
                ago(run.started),
                run.exit_code,
                run.seconds
            ),
            None => writeln!(out, "job {}: never run", job.job),
        };
        let rpo = job.rpo_seconds.map(|s| format!(" (RPO {})", cairn::job::human_age(s as i64))).unwrap_or_default();
        for source in &job.sources {
            let verdict = if source.stale { "STALE" } else { "ok" };
            let _ = match (source.snapshot, source.time) {
                (Some(id), Some(time)) => writeln!(
                    out,
                    "  {verdict:5} {}: snapshot {} taken {} ago{rpo}{}",
                    source.source,
                    id.short(),
                    ago(time),
                    if source.verified { "" } else { " (from this host's records)" }
                ),
                _ => writeln!(out, "  {verdict:5} {}: no snapshot", source.source),
            };
        }
        for (name, due) in [("check", &job.check), ("drill", &job.drill)] {
            if let Some(due) = due {
                let _ = writeln!(out, "  {name}: {}", due_line(due, report.generated));
            }
        }
        for problem in &job.problems {
            let _ = writeln!(out, "  problem: {problem}");
        }
        for warning in &job.warnings {
            let _ = writeln!(out, "  warning: {warning}");
        }
    }
    for repo in &report.repositories {
        let mut parts = Vec::new();
        match &repo.size {
            Some(size) if size.from_copy_records => {
                parts.push(format!("{} written by this host (write-only)", HumanBytes(size.stored_bytes)))
            }
            Some(size) => {
                parts.push(format!("{} stored, {} snapshots", HumanBytes(size.stored_bytes), size.snapshots));
                if let Some(r) = repo.dedup_ratio {
                    parts.push(format!("dedup {r:.2}x"));
                }
                if let Some(r) = repo.compression_ratio {
                    parts.push(format!("compression {r:.2}x"));
                }
            }
            None => parts.push("size unknown".into()),
        }
        if let Some(g) = repo.growth_bytes_per_day {
            let sign = if g < 0.0 { "-" } else { "+" };
            parts.push(format!("{sign}{}/day", HumanBytes(g.abs() as u64)));
        }
        if let Some(cost) = &repo.cost {
            let budget = repo.budget.map(|b| format!(" of a ${b:.2} budget")).unwrap_or_default();
            parts.push(format!("~${:.2}/month ({}){budget}", cost.total, cost.rates));
        }
        if let Some(e) = &repo.error {
            parts.push(format!("cannot be read: {e}"));
        }
        let _ = writeln!(out, "repository {} ({}): {}", repo.repository, repo.location, parts.join(", "));
    }
    out
}

fn due_line(due: &DueStatus, now: jiff::Timestamp) -> String {
    let last = match (due.last_success, due.last_status) {
        (Some(t), _) => format!("last good {} ago", cairn::job::human_age(now.duration_since(t).as_secs())),
        (None, Some(_)) => "never succeeded".to_owned(),
        (None, None) => "never run".to_owned(),
    };
    let failed = match due.last_status {
        Some(cairn::job::StepStatus::Failed) => {
            format!(", LAST ATTEMPT FAILED: {}", due.last_message.clone().unwrap_or_default())
        }
        _ => String::new(),
    };
    let restore = due.restore_seconds.map(|s| format!(", restore took {s:.1}s")).unwrap_or_default();
    let next = if due.next_due <= now {
        "due now".to_owned()
    } else {
        format!("next due in {}", cairn::job::human_age(due.next_due.duration_since(now).as_secs()))
    };
    format!("{last}{restore}{failed}; {next}")
}
