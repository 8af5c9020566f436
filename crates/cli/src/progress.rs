//! Progress and warnings for long commands (backup, restore): a progress bar
//! on a terminal, a plain log line every few seconds otherwise (systemd,
//! cron), JSON status lines with `--json`, nothing with `--quiet`.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::args::GlobalArgs;

/// Counters at one moment: the library's reading of a session's progress
/// (restores fill in the same fields).
pub use cairn_repo::ProgressStatus as Status;

enum Style {
    Bar(ProgressBar),
    Log,
    Json,
    Quiet,
}

/// Shows progress and warnings of one command.
pub struct Reporter {
    style: Style,
    started: Instant,
    verb: &'static str,
}

impl Reporter {
    /// A reporter for `verb` ("backed up", "restored") chosen from the
    /// global options and whether stderr is a terminal.
    pub fn new(global: &GlobalArgs, verb: &'static str) -> Arc<Reporter> {
        let style = if global.json {
            Style::Json
        } else if global.quiet {
            Style::Quiet
        } else if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr_with_hz(10));
            bar.set_style(
                ProgressStyle::with_template(
                    "{elapsed_precise} [{wide_bar:.cyan/blue}] {binary_bytes}/{binary_total_bytes} \
                     {binary_bytes_per_sec} ETA {eta} {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            Style::Bar(bar)
        } else {
            Style::Log
        };
        Arc::new(Reporter { style, started: Instant::now(), verb })
    }

    /// Whether totals are worth a second walk of the input: for the bar's
    /// ETA and JSON's percentage, not for log lines or quiet runs.
    pub fn wants_totals(&self) -> bool {
        matches!(self.style, Style::Bar(_) | Style::Json)
    }

    /// How often [`update`](Reporter::update) is worth calling.
    pub fn interval(&self) -> Duration {
        match self.style {
            Style::Bar(_) => Duration::from_millis(100),
            Style::Json => Duration::from_secs(1),
            Style::Log => Duration::from_secs(10),
            Style::Quiet => Duration::from_secs(3600),
        }
    }

    /// A warning about one path: printed at once, above the bar.
    pub fn warning(&self, path: &Path, message: &str) {
        match &self.style {
            Style::Json => {
                let line = serde_json::json!({
                    "message_type": "warning",
                    "path": path.to_string_lossy(),
                    "message": message,
                });
                println!("{line}");
            }
            Style::Bar(bar) => bar.suspend(|| eprintln!("{}", warning_line(path, message))),
            _ => eprintln!("{}", warning_line(path, message)),
        }
    }

    /// An informational line (not in JSON or quiet mode).
    pub fn info(&self, line: &str) {
        match &self.style {
            Style::Bar(bar) => bar.suspend(|| eprintln!("{line}")),
            Style::Log => eprintln!("{line}"),
            _ => {}
        }
    }

    /// Shows the current counters.
    pub fn update(&self, s: Status) {
        let elapsed = self.started.elapsed().as_secs_f64();
        match &self.style {
            Style::Bar(bar) => {
                bar.set_length(s.total_bytes.max(s.bytes));
                bar.set_position(s.bytes);
                let files = if s.total_files > 0 {
                    format!("{}/{} files", s.files, s.total_files.max(s.files))
                } else {
                    format!("{} files", s.files)
                };
                let errors = if s.errors > 0 { format!(", {} errors", s.errors) } else { String::new() };
                bar.set_message(format!("{files}{errors}"));
            }
            Style::Log => {
                let rate = s.bytes as f64 / elapsed.max(0.001);
                let percent = if s.total_bytes > 0 {
                    format!(" ({:.1}%)", 100.0 * s.bytes as f64 / s.total_bytes as f64)
                } else {
                    String::new()
                };
                eprintln!(
                    "[{:.0}s] {} {} files, {}{percent} at {}/s, {} errors",
                    elapsed,
                    self.verb,
                    s.files,
                    HumanBytes(s.bytes),
                    HumanBytes(rate as u64),
                    s.errors
                );
            }
            Style::Json => {
                let percent = if s.total_bytes > 0 { s.bytes as f64 / s.total_bytes as f64 } else { 0.0 };
                let line = serde_json::json!({
                    "message_type": "status",
                    "seconds_elapsed": elapsed,
                    "percent_done": percent.min(1.0),
                    "files_done": s.files,
                    "total_files": s.total_files,
                    "bytes_done": s.bytes,
                    "total_bytes": s.total_bytes,
                    "errors": s.errors,
                });
                println!("{line}");
            }
            Style::Quiet => {}
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Style::Bar(bar) = &self.style {
            bar.finish_and_clear();
        }
    }
}

/// A warning for people, control characters escaped (see `escape`).
fn warning_line(path: &Path, message: &str) -> String {
    format!("warning: {}: {}", crate::escape::human(&path.to_string_lossy()), crate::escape::human(message))
}

/// A snapshot session's warnings and notes go to the reporter.
impl cairn_repo::SessionEvents for Reporter {
    fn warning(&self, path: &Path, message: &str) {
        Reporter::warning(self, path, message);
    }

    fn note(&self, message: &str) {
        self.info(message);
    }
}

/// Shows a snapshot session's progress until the returned guard is dropped.
pub fn tick_session(reporter: Arc<Reporter>, progress: Arc<cairn_repo::Progress>) -> TickGuard {
    tick(reporter, move || progress.status())
}

/// Progress lines for a restore (into a directory or a bucket).
pub fn tick_restore(reporter: Arc<Reporter>, progress: Arc<cairn_repo::RestoreProgress>) -> TickGuard {
    use std::sync::atomic::Ordering::Relaxed;
    tick(reporter, move || Status {
        files: progress.files_done.load(Relaxed),
        total_files: progress.files_total.load(Relaxed),
        bytes: progress.bytes_done.load(Relaxed),
        total_bytes: progress.bytes_total.load(Relaxed),
        errors: 0,
    })
}

/// Calls `reporter.update(status())` periodically until the returned guard
/// is dropped.
pub fn tick(reporter: Arc<Reporter>, status: impl Fn() -> Status + Send + 'static) -> TickGuard {
    let interval = reporter.interval();
    let task = tokio::spawn(async move {
        let mut timer = tokio::time::interval(interval);
        timer.tick().await;
        loop {
            timer.tick().await;
            reporter.update(status());
        }
    });
    TickGuard(task)
}

/// Stops the periodic updates when dropped.
pub struct TickGuard(tokio::task::JoinHandle<()>);

impl Drop for TickGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}
