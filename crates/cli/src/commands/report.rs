//! `cairn report --html FILE`: every configured job's recorded runs as one
//! self-contained HTML page.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use crate::args::{GlobalArgs, ReportArgs};
use crate::escape;

pub async fn run(global: &GlobalArgs, args: ReportArgs) -> Result<()> {
    let (_, config) = crate::commands::config::load(args.config.config.as_deref())?;
    let state = crate::commands::run::state_dir(&args.state)?;
    let mut jobs = BTreeMap::new();
    for name in config.job.keys() {
        jobs.insert(name.clone(), state.load(name)?);
    }
    let status = cairn::job::status(&config, None, &state, &crate::context::open_options(global)).await?;
    let html = cairn::job::render_html(status.generated, &jobs, &status.tables());
    // clap makes --html required; it is an Option so a --json can join it.
    let path = args.html.context("--html FILE is required")?;
    cairn::job::write_atomically(&path, html.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    if !global.quiet {
        println!("{}", escape::human(&path.display().to_string()));
    }
    Ok(())
}
