//! Running a job on its `schedule`: systemd units (a oneshot service and
//! its timer, for the user's or the system's manager) or a cron line.
//!
//! [`files`] plans what to write, as a pure function of the job and the
//! target; [`install`], [`remove`] and [`status`] do the I/O. Before a
//! timer is enabled its units are checked with `systemd-analyze verify`
//! in a staging directory, so a unit systemd would reject (or load with a
//! setting ignored) never replaces a working one.
//!
//! The service runs `cairn run JOB`, whose exit code is the run's worst
//! step: 3 (warnings, such as unreadable files) is a failure to systemd as
//! much as 1, on purpose: `systemctl --failed` and `OnFailure=` then show
//! a night that needs a look, not only one that broke.
//!
//! Cron has no calendar and no catch-up, so the cron line runs hourly with
//! `--if-due`: the run happens at the first hourly tick after an
//! occurrence of `schedule` that the job has not run since.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Serialize;

use super::{Calendar, JobConfig, JobError, StateDir};

/// A job's schedule when it names none.
pub const DEFAULT_SCHEDULE: &str = "daily";
/// A job's spread when it names none.
pub const DEFAULT_SPREAD: &str = "30m";

/// Whose service manager (or crontab) runs the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The user's: `~/.config/systemd/user`, `systemctl --user`, the
    /// user's crontab. Runs while the user is logged in, or always with
    /// `loginctl enable-linger`.
    User,
    /// The system's: `/etc/systemd/system`, `/etc/cron.d` (as root).
    System,
}

/// What runs the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheduler {
    /// A systemd timer and service.
    Systemd,
    /// An hourly cron line with `--if-due`.
    Cron,
}

/// Where a job's schedule is installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleTarget {
    /// systemd or cron.
    pub scheduler: Scheduler,
    /// The user's or the system's.
    pub scope: Scope,
    /// Write the files here instead of the scheduler's own directory, and
    /// enable nothing (no `systemctl`, no `crontab`): for packaging, a look
    /// before installing, and tests.
    pub dir: Option<PathBuf>,
}

/// One file of a job's schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScheduleFile {
    /// Where it goes; `None` for a line of the user's crontab (which only
    /// the `crontab` command edits).
    pub path: Option<PathBuf>,
    /// Its text.
    pub text: String,
}

/// What [`install`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Installed {
    /// The files written (or, for the user's crontab, the line added).
    pub files: Vec<ScheduleFile>,
    /// `systemd-analyze verify` accepted the units (false when there is
    /// no systemd-analyze, or for cron).
    pub verified: bool,
    /// The timer was enabled and started, or the crontab updated.
    pub enabled: bool,
}

/// The last run of a job, from its state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastRun {
    /// When it started.
    pub started: Timestamp,
    /// When it ended.
    pub finished: Timestamp,
    /// Its exit code (0 ok, 3 warnings, 1 a failure).
    pub exit_code: u8,
}

/// What [`status`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScheduleStatus {
    /// The job.
    pub job: String,
    /// Its schedule (a systemd calendar).
    pub schedule: String,
    /// Whether the schedule's files are in place.
    pub installed: bool,
    /// The next run: the timer's next elapse as systemd reports it, else
    /// the calendar's next occurrence after the last run (before the
    /// spread; for cron, at the next hourly tick after it).
    pub next: Option<Timestamp>,
    /// Whether `next` is systemd's (`true`) or computed from the calendar.
    pub next_from_systemd: bool,
    /// The last run, if any.
    pub last_run: Option<LastRun>,
}

impl ScheduleTarget {
    /// The directory the files go in: the target's `dir`, else the
    /// scheduler's own; `None` for the user's crontab.
    pub fn directory(&self) -> Result<Option<PathBuf>, JobError> {
        if let Some(dir) = &self.dir {
            return Ok(Some(dir.clone()));
        }
        Ok(match (self.scheduler, self.scope) {
            (Scheduler::Systemd, Scope::System) => Some(PathBuf::from("/etc/systemd/system")),
            (Scheduler::Systemd, Scope::User) => {
                let config = dirs::config_dir().ok_or_else(|| JobError::File {
                    path: PathBuf::from("~/.config"),
                    message: "no user config directory: set HOME (or use --system)".into(),
                })?;
                Some(config.join("systemd").join("user"))
            }
            (Scheduler::Cron, Scope::System) => Some(PathBuf::from("/etc/cron.d")),
            (Scheduler::Cron, Scope::User) => None,
        })
    }

    /// Whether installing enables the schedule (no `dir` was given).
    pub fn enables(&self) -> bool {
        self.dir.is_none()
    }
}

/// The files of job `name`'s schedule: for systemd `cairn-NAME.service` and
/// `cairn-NAME.timer`, for cron one line. `exe` is the `cairn` to run and
/// `config` the config file, both absolute.
pub fn files(
    name: &str,
    job: &JobConfig,
    exe: &Path,
    config: &Path,
    target: &ScheduleTarget,
) -> Result<Vec<ScheduleFile>, JobError> {
    let fail = |message: String| JobError::Schedule { job: name.to_owned(), message };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(fail(
            "only letters, digits, - and _ can name a systemd unit or a cron file: rename the job".into(),
        ));
    }
    for path in [exe, config] {
        if !path.is_absolute() || path.to_str().is_none_or(|p| p.chars().any(char::is_control)) {
            return Err(fail(format!("{} must be an absolute path of printable UTF-8", path.display())));
        }
    }
    let calendar = Calendar::parse(job.schedule.as_deref().unwrap_or(DEFAULT_SCHEDULE)).map_err(fail)?;
    let spread = crate::units::parse_duration(job.spread.as_deref().unwrap_or(DEFAULT_SPREAD)).map_err(fail)?;
    let dir = target.directory().map_err(|e| fail(e.to_string()))?;
    let at = |file: String| dir.as_ref().map(|d| d.join(file));
    Ok(match target.scheduler {
        Scheduler::Systemd => vec![
            ScheduleFile { path: at(unit(name, "service")), text: service_unit(name, exe, config, target.scope) },
            ScheduleFile { path: at(unit(name, "timer")), text: timer_unit(name, &calendar, spread) },
        ],
        Scheduler::Cron => {
            vec![ScheduleFile { path: at(format!("cairn-{name}")), text: cron_file(name, exe, config, target.scope) }]
        }
    })
}

/// `cairn-NAME.KIND`.
fn unit(name: &str, kind: &str) -> String {
    format!("cairn-{name}.{kind}")
}

fn service_unit(name: &str, exe: &Path, config: &Path, scope: Scope) -> String {
    let exec = [&exe.to_string_lossy(), "run", name, "--config", &config.to_string_lossy()]
        .iter()
        .map(|a| systemd_arg(a))
        .collect::<Vec<_>>()
        .join(" ");
    // A user manager cannot order against system units such as
    // network-online.target; the user's session is up by then anyway.
    let network = match scope {
        Scope::System => "Wants=network-online.target\nAfter=network-online.target\n",
        Scope::User => "",
    };
    // The user's state directory is where `cairn run` looks by default.
    let state = match scope {
        Scope::System => "StateDirectory=cairn\n",
        Scope::User => "",
    };
    format!(
        "# Written by `cairn schedule install`; `cairn schedule remove` deletes it.\n\
         # Exit 3 (warnings) fails the unit like exit 1: a night that needs a look.\n\
         [Unit]\n\
         Description=cairn backup job {name}\n\
         {network}\n\
         [Service]\n\
         Type=oneshot\n\
         ExecStart={exec}\n\
         Nice=19\n\
         CPUSchedulingPolicy=batch\n\
         IOSchedulingClass=best-effort\n\
         IOSchedulingPriority=7\n\
         TimeoutStartSec=12h\n\
         {state}"
    )
}

fn timer_unit(name: &str, calendar: &Calendar, spread: Duration) -> String {
    // The spec as written, on one line whatever whitespace it had.
    let on = calendar.spec().split_whitespace().collect::<Vec<_>>().join(" ");
    format!(
        "# Written by `cairn schedule install`; `cairn schedule remove` deletes it.\n\
         [Unit]\n\
         Description=cairn backup job {name}, on schedule\n\
         \n\
         [Timer]\n\
         OnCalendar={on}\n\
         # A run missed while the host was off starts at boot.\n\
         Persistent=true\n\
         # The same delay every time: runs stay a day apart.\n\
         RandomizedDelaySec={}\n\
         FixedRandomDelay=true\n\
         \n\
         [Install]\n\
         WantedBy=timers.target\n",
        spread.as_secs()
    )
}

fn cron_file(name: &str, exe: &Path, config: &Path, scope: Scope) -> String {
    // A minute of its own for each job, so jobs (and hosts with the same
    // job name, less so) do not all start on the hour.
    let minute = blake3::hash(name.as_bytes()).as_bytes()[0] % 60;
    let user = match scope {
        Scope::System => " root",
        Scope::User => "",
    };
    let command = [&exe.to_string_lossy(), "run", name, "--config", &config.to_string_lossy(), "--if-due", "--quiet"]
        .iter()
        .map(|a| shell_arg(a))
        .collect::<Vec<_>>()
        .join(" ");
    let line = format!("{minute} * * * *{user} nice -n 19 ionice -c 2 -n 7 {command} # cairn-{name}\n");
    match scope {
        Scope::System => format!(
            "# Written by `cairn schedule install --cron`; `cairn schedule remove --cron` deletes it.\n\
             # Hourly: `--if-due` runs the job when its schedule has passed since its last run.\n\
             SHELL=/bin/sh\n\
             PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
             {line}"
        ),
        Scope::User => line,
    }
}

/// An argument of `ExecStart=`: quoted when needed, with systemd's
/// specifiers (`%`) and variables (`$`) made literal.
fn systemd_arg(arg: &str) -> String {
    let escaped = arg.replace('\\', "\\\\").replace('"', "\\\"").replace('%', "%%").replace('$', "$$");
    if escaped.is_empty() || escaped.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"' || c == '\\') {
        format!("\"{escaped}\"")
    } else {
        escaped
    }
}

/// An argument of a cron command: single-quoted for `sh` when needed, and
/// `%` (a newline to cron) escaped.
fn shell_arg(arg: &str) -> String {
    let plain = !arg.is_empty() && arg.chars().all(|c| c.is_ascii_alphanumeric() || "/._-=:,+@".contains(c));
    let quoted = if plain { arg.to_owned() } else { format!("'{}'", arg.replace('\'', r"'\''")) };
    quoted.replace('%', r"\%")
}

/// Writes job `name`'s schedule `files` (from [`files`]); for systemd,
/// verifies the units first and, when the target enables, reloads systemd
/// and enables and starts the timer.
pub fn install(name: &str, files: &[ScheduleFile], target: &ScheduleTarget) -> Result<Installed, JobError> {
    let fail = |message: String| JobError::Schedule { job: name.to_owned(), message };
    let mut installed = Installed { files: files.to_vec(), verified: false, enabled: false };
    if target.scheduler == Scheduler::Systemd {
        installed.verified = verify(name, files, target.scope)?;
    }
    for file in files {
        match &file.path {
            Some(path) => write_file(path, &file.text).map_err(fail)?,
            None if target.enables() => {
                let kept = crontab_without(name)?;
                crontab_set(name, &format!("{kept}{}", file.text))?;
            }
            None => {}
        }
    }
    if target.enables() {
        match target.scheduler {
            Scheduler::Systemd => {
                systemctl(name, target.scope, &["daemon-reload"])?;
                systemctl(name, target.scope, &["enable", "--now", &unit(name, "timer")])?;
            }
            // cron reads /etc/cron.d by itself; the crontab is set above.
            Scheduler::Cron => {}
        }
        installed.enabled = true;
    }
    Ok(installed)
}

/// Stops and deletes job `name`'s schedule; returns the files deleted
/// (none when it was not installed).
pub fn remove(name: &str, target: &ScheduleTarget) -> Result<Vec<PathBuf>, JobError> {
    let fail = |message: String| JobError::Schedule { job: name.to_owned(), message };
    let paths = installed_paths(name, target)?;
    if target.enables() && target.scheduler == Scheduler::Systemd && !paths.is_empty() {
        systemctl(name, target.scope, &["disable", "--now", &unit(name, "timer")])?;
    }
    for path in &paths {
        std::fs::remove_file(path).map_err(|e| fail(format!("cannot delete {}: {e}", path.display())))?;
    }
    if target.enables() {
        match target.scheduler {
            Scheduler::Systemd if !paths.is_empty() => {
                systemctl(name, target.scope, &["daemon-reload"])?;
            }
            Scheduler::Cron if target.scope == Scope::User => {
                let kept = crontab_without(name)?;
                crontab_set(name, &kept)?;
            }
            _ => {}
        }
    }
    Ok(paths)
}

/// Job `name`'s schedule: whether it is installed, its next run and its
/// last run (from `state`).
pub fn status(
    name: &str,
    job: &JobConfig,
    target: &ScheduleTarget,
    state: &StateDir,
    now: Timestamp,
    tz: &TimeZone,
) -> Result<ScheduleStatus, JobError> {
    let schedule = job.schedule.clone().unwrap_or_else(|| DEFAULT_SCHEDULE.to_owned());
    let calendar =
        Calendar::parse(&schedule).map_err(|message| JobError::Schedule { job: name.to_owned(), message })?;
    let installed = if target.scheduler == Scheduler::Cron && target.directory()?.is_none() {
        crontab_get(name)?.lines().any(|l| is_ours(name, l))
    } else {
        !installed_paths(name, target)?.is_empty()
    };
    let last_run = state.load(name)?.runs.last().map(|r| LastRun {
        started: r.started,
        finished: r.finished,
        exit_code: r.exit_code(),
    });
    let from_systemd = if installed && target.enables() && target.scheduler == Scheduler::Systemd {
        next_elapse(name, target.scope)
    } else {
        None
    };
    let next_from_systemd = from_systemd.is_some();
    let next = from_systemd.or_else(|| calendar.next_after(last_run.as_ref().map_or(now, |r| r.started), tz));
    Ok(ScheduleStatus { job: name.to_owned(), schedule, installed, next, next_from_systemd, last_run })
}

/// The files of job `name`'s schedule that exist in the target's directory.
fn installed_paths(name: &str, target: &ScheduleTarget) -> Result<Vec<PathBuf>, JobError> {
    let Some(dir) = target.directory()? else {
        return Ok(Vec::new());
    };
    let names = match target.scheduler {
        Scheduler::Systemd => vec![unit(name, "timer"), unit(name, "service")],
        Scheduler::Cron => vec![format!("cairn-{name}")],
    };
    Ok(names.into_iter().map(|n| dir.join(n)).filter(|p| p.exists()).collect())
}

/// Writes `text` to `path` atomically, readable by all (units and cron
/// files hold no secret: the config file does).
fn write_file(path: &Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let temporary = path.with_extension("cairn-tmp");
    let write = || -> std::io::Result<()> {
        std::fs::write(&temporary, text)?;
        std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o644))?;
        std::fs::rename(&temporary, path)
    };
    write().map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Runs `systemd-analyze verify` on the units in a staging directory;
/// `Ok(false)` when there is no systemd-analyze. A unit it rejects, or
/// loads with a setting ignored, is an error with its output.
fn verify(name: &str, files: &[ScheduleFile], scope: Scope) -> Result<bool, JobError> {
    let fail = |message: String| JobError::Schedule { job: name.to_owned(), message };
    let nanos = Timestamp::now().as_nanosecond();
    let stage = std::env::temp_dir().join(format!("cairn-schedule-{}-{nanos}", std::process::id()));
    std::fs::create_dir(&stage).map_err(|e| fail(format!("cannot create {}: {e}", stage.display())))?;
    let result = (|| {
        let mut paths = Vec::new();
        for file in files {
            let Some(file_name) = file.path.as_ref().and_then(|p| p.file_name()) else { continue };
            let path = stage.join(file_name);
            write_file(&path, &file.text).map_err(fail)?;
            paths.push(path);
        }
        let mut command = Command::new("systemd-analyze");
        if scope == Scope::User {
            command.arg("--user");
            // The user manager's verify needs a runtime directory; a root
            // shell or cron job has none, and a private empty one will do.
            if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
                command.env("XDG_RUNTIME_DIR", &stage);
            }
        }
        command.arg("verify").args(&paths);
        let output = match run(&mut command, None) {
            Ok(output) => output,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(fail(format!("cannot run systemd-analyze: {e}"))),
        };
        let said = String::from_utf8_lossy(&output.stderr).into_owned() + &String::from_utf8_lossy(&output.stdout);
        let about_ours = said.lines().any(|l| paths.iter().any(|p| l.contains(&*p.to_string_lossy())));
        if !output.status.success() || about_ours {
            return Err(fail(format!(
                "systemd-analyze verify refused the units, nothing was enabled: {}",
                said.trim()
            )));
        }
        Ok(true)
    })();
    let _ = std::fs::remove_dir_all(&stage);
    result
}

/// Runs a command with `stdin`, capturing its output.
fn run(command: &mut Command, stdin: Option<&str>) -> std::io::Result<Output> {
    command.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn()?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        std::io::Write::write_all(&mut pipe, text.as_bytes())?;
    }
    child.wait_with_output()
}

/// `systemctl [--user] ARGS`: its stdout, or an error with its stderr.
/// The only place cairn talks to systemd's manager.
fn systemctl(name: &str, scope: Scope, args: &[&str]) -> Result<String, JobError> {
    let mut command = Command::new("systemctl");
    if scope == Scope::User {
        command.arg("--user");
    }
    command.args(args);
    let shown = format!("systemctl {}{}", if scope == Scope::User { "--user " } else { "" }, args.join(" "));
    let fail = |message: String| JobError::Schedule { job: name.to_owned(), message };
    let output = run(&mut command, None).map_err(|e| fail(format!("cannot run {shown}: {e}")))?;
    if !output.status.success() {
        return Err(fail(format!("{shown} failed: {}", String::from_utf8_lossy(&output.stderr).trim())));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The timer's next elapse as systemd reports it; `None` when it has none
/// or cannot be asked.
fn next_elapse(name: &str, scope: Scope) -> Option<Timestamp> {
    let timer = unit(name, "timer");
    let out = systemctl(name, scope, &["show", &timer, "-p", "NextElapseUSecRealtime", "--timestamp=unix"]).ok()?;
    let value = out.trim().strip_prefix("NextElapseUSecRealtime=")?;
    let seconds: i64 = value.strip_prefix('@')?.trim().parse().ok()?;
    Timestamp::from_second(seconds).ok()
}

/// Whether a crontab line is job `name`'s (marked `# cairn-NAME`).
fn is_ours(name: &str, line: &str) -> bool {
    line.trim_end().ends_with(&format!("# cairn-{name}"))
}

/// The user's crontab (empty when there is none).
fn crontab_get(name: &str) -> Result<String, JobError> {
    let fail = |message: String| JobError::Schedule { job: name.to_owned(), message };
    let output = run(Command::new("crontab").arg("-l"), None).map_err(|e| fail(format!("cannot run crontab: {e}")))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else if stderr.contains("no crontab for") {
        Ok(String::new())
    } else {
        // Anything else (no permission, a broken spool) must not pass for
        // an empty crontab: setting one from it would drop the user's lines.
        Err(fail(format!("crontab -l failed: {}", stderr.trim())))
    }
}

/// The user's crontab without job `name`'s line.
fn crontab_without(name: &str) -> Result<String, JobError> {
    Ok(crontab_get(name)?.lines().filter(|l| !is_ours(name, l)).map(|l| format!("{l}\n")).collect())
}

fn crontab_set(name: &str, text: &str) -> Result<(), JobError> {
    let fail = |message: String| JobError::Schedule { job: name.to_owned(), message };
    let output =
        run(Command::new("crontab").arg("-"), Some(text)).map_err(|e| fail(format!("cannot run crontab: {e}")))?;
    if !output.status.success() {
        return Err(fail(format!("crontab - failed: {}", String::from_utf8_lossy(&output.stderr).trim())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(schedule: Option<&str>, spread: Option<&str>) -> JobConfig {
        JobConfig {
            into: "local".into(),
            schedule: schedule.map(str::to_owned),
            spread: spread.map(str::to_owned),
            ..JobConfig::default()
        }
    }

    fn target(scheduler: Scheduler, scope: Scope) -> ScheduleTarget {
        ScheduleTarget { scheduler, scope, dir: None }
    }

    fn render(name: &str, job: &JobConfig, target: &ScheduleTarget) -> Vec<ScheduleFile> {
        files(name, job, Path::new("/usr/bin/cairn"), Path::new("/etc/cairn/cairn.toml"), target).unwrap()
    }

    #[test]
    fn system_units() {
        let files =
            render("nightly", &job(Some("Mon..Fri  02:30"), Some("1h")), &target(Scheduler::Systemd, Scope::System));
        assert_eq!(files[0].path.as_deref(), Some(Path::new("/etc/systemd/system/cairn-nightly.service")));
        assert_eq!(
            files[0].text,
            "# Written by `cairn schedule install`; `cairn schedule remove` deletes it.
# Exit 3 (warnings) fails the unit like exit 1: a night that needs a look.
[Unit]
Description=cairn backup job nightly
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
ExecStart=/usr/bin/cairn run nightly --config /etc/cairn/cairn.toml
Nice=19
CPUSchedulingPolicy=batch
IOSchedulingClass=best-effort
IOSchedulingPriority=7
TimeoutStartSec=12h
StateDirectory=cairn
"
        );
        assert_eq!(files[1].path.as_deref(), Some(Path::new("/etc/systemd/system/cairn-nightly.timer")));
        assert_eq!(
            files[1].text,
            "# Written by `cairn schedule install`; `cairn schedule remove` deletes it.
[Unit]
Description=cairn backup job nightly, on schedule

[Timer]
OnCalendar=Mon..Fri 02:30
# A run missed while the host was off starts at boot.
Persistent=true
# The same delay every time: runs stay a day apart.
RandomizedDelaySec=3600
FixedRandomDelay=true

[Install]
WantedBy=timers.target
"
        );
    }

    #[test]
    fn user_units_and_defaults() {
        let t = ScheduleTarget { dir: Some("/tmp/units".into()), ..target(Scheduler::Systemd, Scope::User) };
        let files = render("db_1", &job(None, None), &t);
        assert_eq!(files[0].path.as_deref(), Some(Path::new("/tmp/units/cairn-db_1.service")));
        assert_eq!(
            files[0].text,
            "# Written by `cairn schedule install`; `cairn schedule remove` deletes it.
# Exit 3 (warnings) fails the unit like exit 1: a night that needs a look.
[Unit]
Description=cairn backup job db_1

[Service]
Type=oneshot
ExecStart=/usr/bin/cairn run db_1 --config /etc/cairn/cairn.toml
Nice=19
CPUSchedulingPolicy=batch
IOSchedulingClass=best-effort
IOSchedulingPriority=7
TimeoutStartSec=12h
"
        );
        assert!(files[1].text.contains("OnCalendar=daily\n") && files[1].text.contains("RandomizedDelaySec=1800\n"));
    }

    #[test]
    fn cron_lines() {
        let files = render("nightly", &job(None, None), &target(Scheduler::Cron, Scope::System));
        assert_eq!(files[0].path.as_deref(), Some(Path::new("/etc/cron.d/cairn-nightly")));
        let minute = blake3::hash(b"nightly").as_bytes()[0] % 60;
        assert_eq!(
            files[0].text,
            format!(
                "# Written by `cairn schedule install --cron`; `cairn schedule remove --cron` deletes it.
# Hourly: `--if-due` runs the job when its schedule has passed since its last run.
SHELL=/bin/sh
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
{minute} * * * * root nice -n 19 ionice -c 2 -n 7 /usr/bin/cairn run nightly --config /etc/cairn/cairn.toml --if-due --quiet # cairn-nightly
"
            )
        );
        let user = render("nightly", &job(None, None), &target(Scheduler::Cron, Scope::User));
        assert_eq!(user[0].path, None, "a line of the user's crontab");
        assert!(user[0].text.starts_with(&format!("{minute} * * * * nice ")), "{}", user[0].text);
        assert!(is_ours("nightly", &user[0].text) && !is_ours("night", &user[0].text));
    }

    #[test]
    fn awkward_paths_are_quoted() {
        let exe = Path::new("/opt/my tools/cairn");
        let config = Path::new("/etc/cairn/100%$HOME's.toml");
        let t = target(Scheduler::Systemd, Scope::System);
        let service = &files("x", &job(None, None), exe, config, &t).unwrap()[0].text;
        assert!(
            service.contains(r#"ExecStart="/opt/my tools/cairn" run x --config "/etc/cairn/100%%$$HOME's.toml""#),
            "{service}"
        );
        let t = target(Scheduler::Cron, Scope::User);
        let line = &files("x", &job(None, None), exe, config, &t).unwrap()[0].text;
        assert!(line.contains(r#"'/opt/my tools/cairn' run x --config '/etc/cairn/100\%$HOME'\''s.toml'"#), "{line}");
    }

    #[test]
    fn what_cannot_be_scheduled() {
        let t = target(Scheduler::Systemd, Scope::System);
        let (exe, config) = (Path::new("/usr/bin/cairn"), Path::new("/etc/cairn.toml"));
        let table: &[(&str, JobConfig, &Path, &str)] = &[
            ("a.b", job(None, None), config, "rename the job"),
            ("x", job(Some("25:00"), None), config, "hour 25"),
            ("x", job(None, Some("soon")), config, "not a duration"),
            ("x", job(None, None), Path::new("cairn.toml"), "absolute"),
            ("x", job(None, None), Path::new("/etc/a\nb.toml"), "printable"),
        ];
        for (name, job, config, expected) in table {
            let err = files(name, job, exe, config, &t).unwrap_err().to_string();
            assert!(err.contains(expected) && err.contains(&format!("{name:?}")), "{err}");
        }
    }

    #[test]
    fn install_into_a_directory_verifies_and_status_and_remove_follow() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(state_dir.path());
        let exe = std::env::current_exe().unwrap();
        let config = dir.path().join("cairn.toml");
        let job = job(Some("02:30"), None);
        for scope in [Scope::System, Scope::User] {
            let units = dir.path().join(format!("{scope:?}"));
            let t = ScheduleTarget { scheduler: Scheduler::Systemd, scope, dir: Some(units.clone()) };
            let planned = files("nightly", &job, &exe, &config, &t).unwrap();
            let installed = install("nightly", &planned, &t).unwrap();
            assert!(!installed.enabled);
            let have_systemd = Command::new("systemd-analyze").arg("--version").output().is_ok();
            assert_eq!(installed.verified, have_systemd, "{scope:?}");
            assert!(units.join("cairn-nightly.timer").exists() && units.join("cairn-nightly.service").exists());
            let now: Timestamp = "2024-01-15T12:00:00Z".parse().unwrap();
            let s = status("nightly", &job, &t, &state, now, &TimeZone::UTC).unwrap();
            assert!(s.installed && !s.next_from_systemd && s.last_run.is_none());
            assert_eq!(s.next, Some("2024-01-16T02:30:00Z".parse().unwrap()));
            assert_eq!(remove("nightly", &t).unwrap().len(), 2);
            assert!(!status("nightly", &job, &t, &state, now, &TimeZone::UTC).unwrap().installed);
            assert!(remove("nightly", &t).unwrap().is_empty());
        }
    }

    #[test]
    fn a_unit_systemd_refuses_is_not_installed() {
        if Command::new("systemd-analyze").arg("--version").output().is_err() {
            eprintln!("note: no systemd-analyze here; not verifying");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let t = ScheduleTarget { scheduler: Scheduler::Systemd, scope: Scope::System, dir: Some(dir.path().into()) };
        let exe = std::env::current_exe().unwrap();
        let mut planned = files("x", &job(None, None), &exe, &dir.path().join("c.toml"), &t).unwrap();
        planned[0].text = planned[0].text.replace("Type=oneshot", "Type=oneshoot");
        let err = install("x", &planned, &t).unwrap_err().to_string();
        assert!(err.contains("systemd-analyze verify refused") && err.contains("oneshoot"), "{err}");
        assert!(!dir.path().join("cairn-x.service").exists());
    }
}
