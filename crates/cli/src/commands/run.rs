//! `cairn run [JOB]`: one job of the config file, step by step.

use anyhow::Result;
use cairn::job::{JobError, JobEvents, RunOptions, StateDir, Step, StepReport, StepStatus};

use crate::args::{GlobalArgs, RunArgs, StateDirArgs};
use crate::context;
use crate::escape;
use crate::exit;

/// Prints each step as it ends.
struct Printer {
    quiet: bool,
}

impl JobEvents for Printer {
    fn step_finished(&self, r: &StepReport) {
        if self.quiet {
            return;
        }
        let status = match r.status {
            StepStatus::Ok => "ok",
            StepStatus::Warning => "WARNING",
            StepStatus::Failed => "FAILED",
            StepStatus::Skipped => "skipped",
        };
        let line = format!("{status:8}{:10}{}: {} ({:.1}s)", r.step.name(), r.subject, r.message, r.seconds);
        eprintln!("{}", escape::human(&line));
    }
}

pub async fn run(global: &GlobalArgs, args: RunArgs) -> Result<u8> {
    let (path, config) = crate::commands::config::load(args.config.config.as_deref())?;
    let name = crate::commands::config::job_name(&path, &config, args.job.as_deref())?;
    let state = state_dir(&args.state)?;
    let options = RunOptions {
        only: args.only.as_deref().and_then(Step::parse),
        dry_run: args.dry_run,
        open: context::open_options(global),
        if_due: args.if_due,
    };
    let printer = Printer { quiet: global.quiet || global.json };
    match cairn::job::run_job(&config, &name, &state, &options, &printer).await {
        Ok(report) if report.not_due_until.is_some() || (args.if_due && report.steps.is_empty()) => {
            if global.json {
                context::print_json(&report)?;
            } else if !global.quiet {
                let next = report.not_due_until.map(|t| format!(" until {t}")).unwrap_or_default();
                eprintln!("job {name} is not due{next}; nothing was run");
            }
            Ok(0)
        }
        Ok(report) => {
            if global.json {
                context::print_json(&report)?;
            } else if !global.quiet {
                let code = report.exit_code();
                let verdict = match code {
                    0 => "finished".to_owned(),
                    exit::INCOMPLETE => "finished with warnings".to_owned(),
                    _ => "failed".to_owned(),
                };
                let seconds = report.finished.duration_since(report.started).as_secs_f64();
                eprintln!("job {name} {verdict} in {seconds:.1}s");
            }
            Ok(report.exit_code())
        }
        Err(e @ (JobError::Invalid(_) | JobError::NoSuchJob { .. })) => exit::usage!("{}: {e}", path.display()),
        // The hourly `--if-due` tick of cron while last night's run still
        // goes: nothing is due, and an exit code would mail root every hour.
        // A run stuck for good shows as a stale RPO in `cairn status`.
        Err(e @ JobError::Locked { .. }) if args.if_due => {
            if !global.quiet {
                eprintln!("cairn: {e}; nothing was run");
            }
            Ok(0)
        }
        Err(e @ JobError::Locked { .. }) => {
            eprintln!("cairn: {e}; try again later");
            Ok(e.exit_code())
        }
        Err(e) => Err(e.into()),
    }
}

/// The state directory: `--state-dir`, else the default location.
pub fn state_dir(args: &StateDirArgs) -> Result<StateDir> {
    Ok(match &args.state_dir {
        Some(dir) => StateDir::new(dir),
        None => StateDir::default_location()?,
    })
}
