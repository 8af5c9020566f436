//! `cairn backup`

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use cairn_repo::archiver::{self, BackupEvents, BackupOptions, BackupOutcome, BackupProgress};
use cairn_repo::{Error, FileKind, Id, Index, InitOptions, PathFilter, Repository, Snapshot, SnapshotSummary, Writer};
use cairn_repo::{LocalParent, LocalTrees};
use indicatif::HumanBytes;

use crate::args::{BackupArgs, GlobalArgs};
use crate::context;
use crate::exit;
use crate::progress::{self, Reporter, Status};
use crate::select;

struct Events(Arc<Reporter>);

impl BackupEvents for Events {
    fn warning(&self, path: &Path, message: &str) {
        self.0.warning(path, message);
    }
}

pub async fn run(global: &GlobalArgs, args: BackupArgs) -> Result<u8> {
    // Everything about the input is checked before the repository is touched.
    let sources =
        if args.stdin || args.stdin_from_command { Vec::new() } else { archiver::resolve_sources(&args.paths)? };
    let mut options = backup_options(&args)?;
    let time = args.time.as_deref().map(parse_time).transpose()?;
    let reporter = Reporter::new(global, "backed up");

    let repo = open_or_init(global, args.init, &reporter).await?;
    let mut snapshot = Snapshot::new(Id::default(), Vec::new());
    if let Some(t) = time {
        snapshot.time = t;
    }
    if let Some(h) = &args.host {
        snapshot.hostname = h.clone();
    }
    snapshot.tags = split_tags(&args.tags);

    let progress = Arc::new(BackupProgress::default());
    let mut local: Option<LocalTrees> = None;
    let (outcome, writer) = if args.stdin_from_command {
        let command: Vec<String> = args.paths.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        let name = args.stdin_filename.clone();
        snapshot.paths = vec![format!("/{name}")];
        backup_command(&repo, &command, &name, args.dry_run, &progress, &reporter).await?
    } else if args.stdin {
        let name = args.stdin_filename.clone();
        snapshot.paths = vec![format!("/{name}")];
        let stdin: Box<dyn Read + Send> = Box::new(std::io::stdin());
        backup_reader(&repo, stdin, &name, args.dry_run, &progress, &reporter).await?
    } else {
        snapshot.paths = sources.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        let parent = if put_only(&repo) {
            // A put-only key cannot read snapshots: its parent is the one it
            // wrote last, with trees kept on this machine.
            local = local_trees(&repo, &snapshot)?;
            options.local_trees = local.clone();
            match &local {
                Some(l) if !args.force => local_parent(&repo, l).await?,
                _ => None,
            }
        } else if args.force {
            None
        } else {
            find_parent(&repo, &args, &snapshot).await?.map(|(id, s)| (id, s.tree))
        };
        if let Some((id, _)) = &parent {
            reporter.info(&format!("using parent snapshot {}", id.short()));
        }
        snapshot.parent = parent.as_ref().map(|(id, _)| *id);
        let parent_tree = parent.map(|(_, tree)| tree);
        backup_tree(&repo, sources, parent_tree, options, args.dry_run, &progress, &reporter).await?
    };
    let stats = writer.stats();
    let duration = reporter.elapsed().as_secs_f64();
    snapshot.tree = outcome.tree;
    let mut summary =
        SnapshotSummary { bytes_added: stats.stored_bytes_added, duration_secs: duration, ..outcome.summary.clone() };
    let id = if args.dry_run {
        writer.flush().await?;
        None
    } else {
        snapshot.summary = Some(summary.clone());
        let id = writer.commit(&snapshot).await?;
        if let Some(local) = &local {
            local.set_parent(repo.keys(), &LocalParent { snapshot: id, tree: snapshot.tree })?;
        }
        Some(id)
    };
    reporter.finish();
    summary.bytes_added = writer.stats().stored_bytes_added;
    print_summary(global, &summary, id.as_ref(), args.dry_run)?;
    Ok(if outcome.summary.errors > 0 { exit::INCOMPLETE } else { 0 })
}

fn backup_options(args: &BackupArgs) -> Result<BackupOptions> {
    let mut patterns = args.excludes.clone();
    for file in &args.exclude_files {
        patterns.extend(PathFilter::read_pattern_file(file)?);
    }
    Ok(BackupOptions {
        excludes: PathFilter::new(&patterns)?,
        exclude_if_present: args
            .exclude_if_present
            .iter()
            .cloned()
            .chain(args.exclude_caches.then(|| "CACHEDIR.TAG".to_owned()))
            .collect(),
        one_file_system: args.one_file_system,
        readers: args.read_concurrency,
        local_trees: None,
    })
}

pub(crate) fn split_tags(tags: &[String]) -> Vec<String> {
    let mut out: Vec<String> =
        tags.iter().flat_map(|t| t.split(',')).map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()).collect();
    out.sort();
    out.dedup();
    out
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

/// Opens the repository; creates it when it is the default repository used
/// for the first time, or when `--init` is given.
pub(crate) async fn open_or_init(global: &GlobalArgs, init: bool, reporter: &Reporter) -> Result<Repository> {
    let default = context::uses_default(global) && !crate::password::is_configured(global);
    if default {
        let paths = context::default_repository()?;
        if !paths.location.join("config").exists() {
            return init_default(global, &paths, reporter).await;
        }
    }
    match context::open_writable(global).await {
        Err(e) if init && matches!(e.downcast_ref::<Error>(), Some(Error::RepositoryNotFound { .. })) => {
            let pw = crate::password::new_repository_password(global)?;
            let backend = context::backend(global, true)?;
            let repo = Repository::init(backend, &pw, InitOptions::default(), context::open_options(global)).await?;
            reporter.info(&format!("created cairn repository {} at {}", repo.id().short(), repo.location()));
            Ok(repo)
        }
        other => other,
    }
}

/// First use: a generated password in a 0600 file, a new repository.
async fn init_default(
    global: &GlobalArgs,
    paths: &context::DefaultRepository,
    reporter: &Reporter,
) -> Result<Repository> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let pw = if paths.password_file.exists() {
        crate::password::from_file(&paths.password_file)?
    } else {
        let mut secret = [0u8; 24];
        getrandom_fill(&mut secret)?;
        let text = zeroize::Zeroizing::new(hex_string(&secret));
        let dir = paths.password_file.parent().expect("the password file has a directory");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&paths.password_file)
            .with_context(|| format!("cannot create the password file {}", paths.password_file.display()))?;
        std::io::Write::write_all(&mut file, format!("{}\n", text.as_str()).as_bytes())?;
        file.sync_all()?;
        zeroize::Zeroizing::new(text.as_bytes().to_vec())
    };
    let backend = context::backend(global, true)?;
    let repo = Repository::init(backend, &pw, InitOptions::default(), context::open_options(global)).await?;
    let message = format!(
        "created the default cairn repository at {}\n\
         its password is in {} (mode 0600).\n\
         Keep a copy of that file somewhere safe: without it the backups cannot be read.",
        paths.location.display(),
        paths.password_file.display()
    );
    if global.json {
        context::print_json_line(&serde_json::json!({
            "message_type": "initialized",
            "id": repo.id(),
            "location": repo.location(),
            "password_file": paths.password_file,
        }))?;
    } else {
        // Printed even with --quiet: losing this file loses the backups.
        eprintln!("{message}");
    }
    let _ = reporter;
    Ok(repo)
}

fn getrandom_fill(buf: &mut [u8]) -> Result<()> {
    let mut f = std::fs::File::open("/dev/urandom").context("cannot open /dev/urandom")?;
    f.read_exact(buf).context("cannot read /dev/urandom")?;
    Ok(())
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether this client cannot read the repository (a put-only key, or
/// write-only storage credentials): it then works from local state.
pub(crate) fn put_only(repo: &Repository) -> bool {
    repo.keys().master().is_none() || repo.write_only()
}

/// A put-only client's local state for this host and set of paths (none
/// without a cache directory: then every backup reads everything).
fn local_trees(repo: &Repository, snapshot: &Snapshot) -> Result<Option<LocalTrees>> {
    let Some(cache) = repo.cache() else { return Ok(None) };
    let mut paths = snapshot.paths.clone();
    paths.sort();
    let key = blake3::hash(format!("{}\0{}", snapshot.hostname, paths.join("\0")).as_bytes());
    let dir = cache.dir().join("put-only").join(repo.key_id().to_hex()).join(&key.to_hex()[..16]);
    Ok(Some(LocalTrees::open(&dir)?))
}

/// The snapshot this put-only client wrote last, while it still exists
/// (prune keeps everything a snapshot references).
async fn local_parent(repo: &Repository, local: &LocalTrees) -> Result<Option<(Id, Id)>> {
    let Some(parent) = local.parent() else { return Ok(None) };
    if repo.write_only() {
        // Cannot look: trust that retention keeps each host's latest
        // snapshot (README: write-only credentials).
        return Ok(Some((parent.snapshot, parent.tree)));
    }
    Ok(repo.backend().exists(FileKind::Snapshot, &parent.snapshot).await?.then_some((parent.snapshot, parent.tree)))
}

/// The latest snapshot of the same host and the same paths, or `--parent`.
async fn find_parent(repo: &Repository, args: &BackupArgs, snapshot: &Snapshot) -> Result<Option<(Id, Snapshot)>> {
    if let Some(arg) = &args.parent {
        return Ok(Some(select::one(repo, arg, &Default::default()).await?));
    }
    let mut wanted = snapshot.paths.clone();
    wanted.sort();
    let parent = repo.list_snapshots().await?.into_iter().rev().find(|(_, s)| {
        let mut paths = s.paths.clone();
        paths.sort();
        s.hostname == snapshot.hostname && paths == wanted
    });
    Ok(parent)
}

fn status_of(progress: &BackupProgress, estimate: Option<&BackupProgress>) -> Status {
    Status {
        files: progress.files.load(Ordering::Relaxed),
        bytes: progress.bytes.load(Ordering::Relaxed).max(progress.bytes_read.load(Ordering::Relaxed)),
        total_files: estimate.map(|e| e.files.load(Ordering::Relaxed)).unwrap_or(0),
        total_bytes: estimate.map(|e| e.bytes.load(Ordering::Relaxed)).unwrap_or(0),
        errors: progress.errors.load(Ordering::Relaxed),
    }
}

async fn backup_tree(
    repo: &Repository,
    sources: Vec<PathBuf>,
    parent_tree: Option<Id>,
    options: BackupOptions,
    dry_run: bool,
    progress: &Arc<BackupProgress>,
    reporter: &Arc<Reporter>,
) -> Result<(BackupOutcome, Arc<Writer>)> {
    // A put-only key cannot read the index: it stores what it has not stored
    // in this session (the repository deduplicates again at prune).
    let index = Arc::new(if put_only(repo) { Index::default() } else { repo.load_index().await? });
    let writer = Arc::new(if dry_run { Writer::dry_run(repo, index)? } else { Writer::new(repo, index)? });
    let estimate = Arc::new(BackupProgress::default());
    let stop = Arc::new(AtomicBool::new(false));
    let options = Arc::new(options);
    let sources = Arc::new(sources);
    if reporter.wants_totals() {
        let (estimate, stop, options, sources) = (estimate.clone(), stop.clone(), options.clone(), sources.clone());
        std::thread::spawn(move || archiver::estimate(&sources, &options, &estimate, &stop));
    }
    let ticker = {
        let (progress, estimate) = (progress.clone(), estimate.clone());
        progress::tick(reporter.clone(), move || status_of(&progress, Some(&estimate)))
    };
    let handle = tokio::runtime::Handle::current();
    let outcome = {
        let (writer, progress, reporter) = (writer.clone(), progress.clone(), reporter.clone());
        tokio::task::spawn_blocking(move || {
            let events = Events(reporter);
            archiver::backup_paths(&writer, &handle, &sources, parent_tree, &options, &progress, &events)
        })
        .await
        .context("the backup thread panicked")?
    };
    stop.store(true, Ordering::Relaxed);
    drop(ticker);
    Ok((outcome?, writer))
}

async fn backup_reader(
    repo: &Repository,
    reader: Box<dyn Read + Send>,
    name: &str,
    dry_run: bool,
    progress: &Arc<BackupProgress>,
    reporter: &Arc<Reporter>,
) -> Result<(BackupOutcome, Arc<Writer>)> {
    // Start consuming the stream at once; the index arrives while it flows.
    let empty = Arc::new(Index::default());
    let writer = Arc::new(if dry_run { Writer::dry_run(repo, empty)? } else { Writer::new(repo, empty)? });
    let index_task = {
        let (repo, writer) = (repo.clone(), writer.clone());
        tokio::spawn(async move {
            if put_only(&repo) {
                return Ok(());
            }
            let index = repo.load_index().await?;
            writer.set_index(Arc::new(index));
            Ok::<(), Error>(())
        })
    };
    let ticker = {
        let progress = progress.clone();
        progress::tick(reporter.clone(), move || status_of(&progress, None))
    };
    let handle = tokio::runtime::Handle::current();
    let outcome = {
        let (writer, progress, reporter, name) = (writer.clone(), progress.clone(), reporter.clone(), name.to_owned());
        tokio::task::spawn_blocking(move || {
            let mut reader = reader;
            let events = Events(reporter);
            archiver::backup_stream(&writer, &handle, &mut reader, name.as_bytes(), &progress, &events)
        })
        .await
        .context("the backup thread panicked")?
    };
    drop(ticker);
    index_task.await.context("the index loading task panicked")??;
    Ok((outcome?, writer))
}

async fn backup_command(
    repo: &Repository,
    command: &[String],
    name: &str,
    dry_run: bool,
    progress: &Arc<BackupProgress>,
    reporter: &Arc<Reporter>,
) -> Result<(BackupOutcome, Arc<Writer>)> {
    let Some((program, args)) = command.split_first() else {
        bail!("--stdin-from-command needs a command after `--`");
    };
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot run {program:?}"))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let result = backup_reader(repo, Box::new(stdout), name, dry_run, progress, reporter).await;
    if result.is_err() {
        let _ = child.kill();
    }
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .context("waiting for the command panicked")?
        .with_context(|| format!("cannot wait for {program:?}"))?;
    let outcome = result?;
    if !status.success() {
        bail!("the command {program:?} failed ({status}); no snapshot was written");
    }
    Ok(outcome)
}

fn print_summary(global: &GlobalArgs, s: &SnapshotSummary, id: Option<&Id>, dry_run: bool) -> Result<()> {
    let rate = s.bytes_read as f64 / s.duration_secs.max(0.001);
    if global.json {
        return context::print_json_line(&serde_json::json!({
            "message_type": "summary",
            "dry_run": dry_run,
            "files_new": s.files_new,
            "files_changed": s.files_changed,
            "files_unchanged": s.files_unchanged,
            "dirs": s.dirs,
            "errors": s.errors,
            "total_bytes": s.total_bytes,
            "bytes_read": s.bytes_read,
            "bytes_added": s.bytes_added,
            "duration_secs": s.duration_secs,
            "bytes_read_per_sec": rate,
            "snapshot_id": id,
        }));
    }
    if global.quiet {
        return Ok(());
    }
    println!(
        "files: {} new, {} changed, {} unchanged; {} directories{}",
        s.files_new,
        s.files_changed,
        s.files_unchanged,
        s.dirs,
        if s.errors > 0 { format!("; {} could not be read (see the warnings)", s.errors) } else { String::new() }
    );
    println!(
        "read {} of {} in {:.2}s ({}/s); added {} to the repository",
        HumanBytes(s.bytes_read),
        HumanBytes(s.total_bytes),
        s.duration_secs,
        HumanBytes(rate as u64),
        HumanBytes(s.bytes_added)
    );
    match id {
        Some(id) => println!("snapshot {} saved", id.short()),
        None => println!("dry run: nothing was written"),
    }
    Ok(())
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
        assert_eq!(split_tags(&["b,a".into(), "a".into(), " ".into()]), vec!["a", "b"]);
    }
}
