//! `cairn report --html FILE`: every configured job's recorded runs as one
//! self-contained HTML page.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use crate::args::{GlobalArgs, ReportArgs};
use crate::escape;

pub fn run(global: &GlobalArgs, args: ReportArgs) -> Result<()> {
    let (_, config) = crate::commands::config::load(args.config.config.as_deref())?;
    let state = crate::commands::run::state_dir(&args.state)?;
    let mut jobs = BTreeMap::new();
    for name in config.job.keys() {
        jobs.insert(name.clone(), state.load(name)?);
    }
    // The status tables: `cairn status` turns its report into `StatusTable`s here.
    let tables = [];
    let html = cairn::job::render_html(jiff::Timestamp::now(), &jobs, &tables);
    // clap makes --html required; it is an Option so a --json can join it.
    let path = args.html.context("--html FILE is required")?;
    write_atomically(&path, html.as_bytes())?;
    if !global.quiet {
        println!("{}", escape::human(&path.display().to_string()));
    }
    Ok(())
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over
/// `path`: a reader (a web server) sees the old page or the new, never half.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().with_context(|| format!("{}: not a file name", path.display()))?;
    let temporary = path.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    };
    write().with_context(|| format!("cannot write {}", path.display()))
}
