//! `cairn status [JOB]`: each job's newest snapshots against its RPO, the
//! last check and drill, and each repository's size and cost.

use anyhow::Result;
use cairn::job::JobError;

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
        for line in report.lines() {
            println!("{}", escape::human(&line));
        }
    }
    Ok(if args.check { report.exit_code() } else { 0 })
}
