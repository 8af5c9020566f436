//! `cairn backup`: files and directories, standard input, a command's
//! output, or buckets, through the library's snapshot session.

use std::io::Read;

use anyhow::{Context, Result};
use cairn_repo::{
    BackendOptions, Bucket, BucketBackupOptions, BucketDrift, BucketReport, BucketSource, FileOptions, ParentChoice,
    PathFilter, S3Options, SnapshotOptions,
};

use crate::args::{BackupArgs, GlobalArgs, SourceBucketArgs, split_tags};
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
    let buckets = bucket_sources(global, &args)?;
    let versions_at = match args.versions_at.as_deref().map(parse_time).transpose() {
        Ok(time) => time,
        Err(e) => crate::exit::usage!("{}", e.to_string().replace("--time", "--versions-at")),
    };
    let repo = context::open_or_init(global, args.init, &reporter).await?;
    let parent = match (&args.parent, args.force) {
        (_, true) => ParentChoice::None,
        (Some(id), false) => ParentChoice::Snapshot(id.clone()),
        (None, false) => ParentChoice::Latest,
    };
    let options = SnapshotOptions {
        hostname: args.host.clone(),
        tags: split_tags(&args.tags),
        time,
        parent: parent.clone(),
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
    } else if !buckets.is_empty() {
        let mut reports = Vec::new();
        for bucket in buckets {
            let options = BucketBackupOptions {
                name: None,
                parent: parent.clone(),
                hostname: args.host.clone(),
                downloads: args.downloads,
                versions_at,
            };
            let mut source = BucketSource::new(bucket, &repo, options);
            session.add_source(&mut source).await?;
            reports.push(source.report().clone());
        }
        let committed = session.commit().await?;
        drop(ticker);
        reporter.finish();
        summary::print(global, &committed, bucket_details(&reports))?;
        summary::print_profile(global, args.profile, &committed);
        return Ok(if report_drift(&reports) { exit::INCOMPLETE } else { 0 });
    } else {
        session.add_paths(&args.paths, &files).await?;
    }
    let committed = session.commit().await?;
    drop(ticker);
    reporter.finish();
    summary::print(global, &committed, summary::Details::default())?;
    summary::print_profile(global, args.profile, &committed);
    Ok(if committed.summary.errors > 0 { exit::INCOMPLETE } else { 0 })
}

/// The storage options of a bucket source or target: the repository's
/// defaults (connections, retries), with its own S3 endpoint and keys.
pub fn bucket_backend_options(
    global: &GlobalArgs,
    endpoint: &Option<String>,
    region: &Option<String>,
    path_style: Option<bool>,
    access_key_id: &Option<String>,
    secret_access_key: &Option<String>,
) -> BackendOptions {
    BackendOptions {
        connections: global.connections,
        s3: S3Options {
            endpoint: endpoint.clone(),
            region: region.clone(),
            path_style,
            access_key_id: access_key_id.clone(),
            secret_access_key: secret_access_key.clone(),
        },
        ..Default::default()
    }
}

/// The buckets among the arguments (`s3:`, `gs:`, `azure:`, and not an
/// existing local path); all or none of them must be buckets.
fn bucket_sources(global: &GlobalArgs, args: &BackupArgs) -> Result<Vec<Bucket>> {
    if args.stdin || args.stdin_from_command {
        return Ok(Vec::new());
    }
    let is_bucket = |p: &std::path::PathBuf| !p.exists() && p.to_str().is_some_and(cairn_repo::is_bucket_location);
    let count = args.paths.iter().filter(|p| is_bucket(p)).count();
    if count == 0 {
        if args.versions_at.is_some() {
            crate::exit::usage!("--versions-at applies to buckets (s3:BUCKET[/PREFIX]), not to files");
        }
        return Ok(Vec::new());
    }
    if count != args.paths.len() {
        crate::exit::usage!("back up buckets and files in separate snapshots (or in one job with several sources)");
    }
    let SourceBucketArgs {
        source_endpoint,
        source_region,
        source_path_style,
        source_access_key_id,
        source_secret_access_key,
    } = &args.source;
    let options = bucket_backend_options(
        global,
        source_endpoint,
        source_region,
        *source_path_style,
        source_access_key_id,
        source_secret_access_key,
    );
    let mut buckets = Vec::new();
    for path in &args.paths {
        let location = path.to_string_lossy();
        buckets.push(Bucket::open(&location, &options)?);
    }
    Ok(buckets)
}

/// What the bucket sources add to the summary.
pub fn bucket_details(reports: &[BucketReport]) -> summary::Details {
    let mut details = summary::Details::default();
    details.json.insert("buckets".into(), serde_json::to_value(reports).unwrap_or_default());
    for r in reports {
        details.lines.push(format!(
            "bucket {}: {} objects ({} bytes); {} downloaded ({} bytes), {} unchanged",
            r.location, r.objects, r.bytes, r.downloaded, r.downloaded_bytes, r.unchanged
        ));
    }
    details
}

/// Prints the objects that changed or vanished during the backup (on
/// stderr, even with --quiet); true when there were any.
pub fn report_drift(reports: &[BucketReport]) -> bool {
    let mut any = false;
    for r in reports {
        if r.drift.is_empty() {
            continue;
        }
        any = true;
        eprintln!(
            "warning: {} objects of {} changed or vanished while it was backed up (listed {} to {}); \
             the snapshot holds what was read:",
            r.drift.len(),
            r.location,
            r.listing_started.map(|t| t.to_string()).unwrap_or_default(),
            r.listing_ended.map(|t| t.to_string()).unwrap_or_default()
        );
        for d in &r.drift {
            match d {
                BucketDrift::Changed { key } => eprintln!("  changed  {}", crate::escape::human(key)),
                BucketDrift::Vanished { key } => eprintln!("  vanished {}", crate::escape::human(key)),
                BucketDrift::Unreadable { key, reason } => {
                    eprintln!("  unreadable {}: {reason}", crate::escape::human(key))
                }
            }
        }
    }
    any
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
