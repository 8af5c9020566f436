//! The summary every backup prints (files, directories, PostgreSQL): one
//! mapping from the library's [`CommittedSnapshot`] to text or JSON.

use anyhow::Result;
use cairn_repo::CommittedSnapshot;
use indicatif::HumanBytes;

use crate::args::GlobalArgs;
use crate::context;

/// What a kind of source adds to the summary.
#[derive(Default)]
pub struct Details {
    /// Fields added to the JSON document.
    pub json: serde_json::Map<String, serde_json::Value>,
    /// Lines that replace the file counts in the text (a database's tables
    /// and rows say more than its file count).
    pub lines: Vec<String>,
}

/// Prints `committed` with the source's `details`.
pub fn print(global: &GlobalArgs, committed: &CommittedSnapshot, details: Details) -> Result<()> {
    let s = &committed.summary;
    let dry_run = committed.id.is_none();
    let rate = s.bytes_read as f64 / s.duration_secs.max(0.001);
    if global.json {
        let mut doc = serde_json::json!({
            "message_type": "summary",
            "dry_run": dry_run,
            "files_new": s.files_new,
            "files_changed": s.files_changed,
            "files_unchanged": s.files_unchanged,
            "dirs": s.dirs,
            "dirs_reused": s.dirs_reused,
            "errors": s.errors,
            "total_bytes": s.total_bytes,
            "bytes_read": s.bytes_read,
            "bytes_added": s.bytes_added,
            "duration_secs": s.duration_secs,
            "bytes_read_per_sec": rate,
            "snapshot_id": committed.id,
            "stages": committed.profile.stages,
            "cpu_secs": cpu_secs(),
        });
        if let Some(map) = doc.as_object_mut() {
            map.extend(details.json);
        }
        return context::print_json_line(&doc);
    }
    if global.quiet {
        return Ok(());
    }
    for line in &details.lines {
        println!("{line}");
    }
    if details.lines.is_empty() {
        println!(
            "files: {} new, {} changed, {} unchanged; {} directories{}",
            s.files_new,
            s.files_changed,
            s.files_unchanged,
            s.dirs,
            if s.errors > 0 { format!("; {} could not be read (see the warnings)", s.errors) } else { String::new() }
        );
    }
    println!(
        "read {} of {} in {:.2}s ({}/s); added {} to the repository",
        HumanBytes(s.bytes_read),
        HumanBytes(s.total_bytes),
        s.duration_secs,
        HumanBytes(rate as u64),
        HumanBytes(s.bytes_added)
    );
    match &committed.id {
        Some(id) => println!("snapshot {} saved", id.short()),
        None => println!("dry run: nothing was written"),
    }
    Ok(())
}

/// With `--profile`, prints the session's stage profile to standard error
/// (under `--json` the summary already carries it as `stages`).
pub fn print_profile(global: &GlobalArgs, wanted: bool, committed: &CommittedSnapshot) {
    if !wanted || global.json {
        return;
    }
    let wall = committed.summary.duration_secs;
    eprintln!("{:<9} {:>9} {:>10} {:>11}", "stage", "busy s", "bytes", "rate");
    for stage in &committed.profile.stages {
        eprintln!(
            "{:<9} {:>9.3} {:>10} {:>9}/s",
            stage.stage.name(),
            stage.busy.as_secs_f64(),
            HumanBytes(stage.bytes).to_string(),
            HumanBytes(stage.rate() as u64).to_string()
        );
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    match cpu_secs() {
        Some(cpu) => eprintln!("wall {wall:.3} s on {cores} cores; process CPU {cpu:.3} s (user + system)"),
        None => eprintln!("wall {wall:.3} s on {cores} cores"),
    }
}

/// User plus system CPU seconds of this process so far.
fn cpu_secs() -> Option<f64> {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).ok()?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Some(secs(usage.user_time()) + secs(usage.system_time()))
}
