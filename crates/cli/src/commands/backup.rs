//! `cairn backup`: files and directories, standard input, or a command's
//! output, through the library's snapshot session.

use std::io::Read;

use anyhow::{Context, Result};
use cairn_repo::{FileOptions, ParentChoice, PathFilter, SnapshotOptions};

use crate::args::{BackupArgs, GlobalArgs, split_tags};
use crate::context;
use crate::exit;
use crate::progress::{self, Reporter};
use crate::summary;

pub async fn run(global: &GlobalArgs, args: BackupArgs) -> Result<u8> {
    // Everything about the input is checked before the repository is touched.
    let reporter = Reporter::new(global, "backed up");
    let files = file_options(&args, reporter.wants_totals())?;
    let time = match args.time.as_deref().map(parse_time).transpose() {
        Ok(time) => time,
        Err(e) => crate::exit::usage!("{e}"),
    };
    let repo = context::open_or_init(global, args.init, &reporter).await?;
    let options = SnapshotOptions {
        hostname: args.host.clone(),
        tags: split_tags(&args.tags),
        time,
        parent: match (&args.parent, args.force) {
            (_, true) => ParentChoice::None,
            (Some(id), false) => ParentChoice::Snapshot(id.clone()),
            (None, false) => ParentChoice::Latest,
        },
        dry_run: args.dry_run,
    };
    let mut session = repo.begin_snapshot(options).await?;
    session.set_events(reporter.clone());
    let ticker = progress::tick_session(reporter.clone(), session.progress());
    if args.stdin_from_command {
        let command: Vec<String> = args.paths.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        if command.is_empty() {
            crate::exit::usage!("--stdin-from-command needs a command after `--`");
        }
        session.add_command_output(&args.stdin_filename, &command).await?;
    } else if args.stdin {
        let stdin: Box<dyn Read + Send> = Box::new(std::io::stdin());
        session.add_stream(&args.stdin_filename, stdin).await?;
    } else {
        session.add_paths(&args.paths, &files).await?;
    }
    let committed = session.commit().await?;
    drop(ticker);
    reporter.finish();
    summary::print(global, &committed, summary::Details::default())?;
    Ok(if committed.summary.errors > 0 { exit::INCOMPLETE } else { 0 })
}

fn file_options(args: &BackupArgs, estimate_totals: bool) -> Result<FileOptions> {
    let mut patterns = args.excludes.clone();
    for file in &args.exclude_files {
        patterns.extend(PathFilter::read_pattern_file(file)?);
    }
    Ok(FileOptions {
        excludes: PathFilter::new(&patterns)?,
        exclude_if_present: args
            .exclude_if_present
            .iter()
            .cloned()
            .chain(args.exclude_caches.then(|| "CACHEDIR.TAG".to_owned()))
            .collect(),
        one_file_system: args.one_file_system,
        readers: args.read_concurrency,
        estimate_totals,
    })
}

/// `--time`: RFC 3339 (`2024-05-01T02:00:00Z`) or a local civil time
/// (`2024-05-01 02:00:00`, `2024-05-01`).
fn parse_time(s: &str) -> Result<jiff::Timestamp> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t);
    }
    let civil = s
        .parse::<jiff::civil::DateTime>()
        .or_else(|_| s.parse::<jiff::civil::Date>().map(|d| d.to_datetime(jiff::civil::Time::midnight())))
        .with_context(|| {
            format!("invalid --time {s:?}: use RFC 3339 (2024-05-01T02:00:00Z) or local \"2024-05-01 02:00:00\"")
        })?;
    Ok(civil.to_zoned(jiff::tz::TimeZone::system())?.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_tags() {
        assert_eq!(parse_time("2024-05-01T02:00:00Z").unwrap().as_second(), 1_714_528_800);
        assert!(parse_time("2024-05-01 02:00:00").is_ok());
        assert!(parse_time("2024-05-01").is_ok());
        assert!(parse_time("yesterday").is_err());
    }
}
