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
