//! `cairn schedule install|remove|status [JOB]`: a job's systemd timer (or
//! cron line), through the job library's `schedule` module.

use anyhow::{Context, Result};
use cairn::job::schedule::{self, ScheduleTarget, Scheduler, Scope};

use crate::args::{GlobalArgs, ScheduleCommand};
use crate::commands::config;
use crate::context;
use crate::exit;

pub fn run(global: &GlobalArgs, command: ScheduleCommand) -> Result<u8> {
    let (args, action) = match command {
        ScheduleCommand::Install(args) => (args, Action::Install),
        ScheduleCommand::Remove(args) => (args, Action::Remove),
        ScheduleCommand::Status(args) => (args, Action::Status),
    };
    let (path, config) = config::load(args.config.config.as_deref())?;
    let name = config::job_name(&path, &config, args.job.as_deref())?;
    let job = match config.job(&name) {
        Ok(job) => job,
        Err(e) => exit::usage!("{}: {e}", path.display()),
    };
    let scope =
        if args.system || (!args.user && nix::unistd::geteuid().is_root()) { Scope::System } else { Scope::User };
    let scheduler = if args.cron { Scheduler::Cron } else { Scheduler::Systemd };
    let target = ScheduleTarget { scheduler, scope, dir: args.dir.clone() };
    match action {
        Action::Install => {
            let validation = config.validate();
            if !validation.errors.is_empty() {
                exit::usage!("{}: {}", path.display(), validation.errors.join("; "));
            }
            // The unit runs from anywhere: both paths must be absolute.
            let config_path =
                path.canonicalize().with_context(|| format!("cannot resolve the config's path {}", path.display()))?;
            let exe = std::env::current_exe().context("cannot find this cairn's path")?;
            let files = schedule::files(&name, job, &exe, &config_path, &target)?;
            if args.print {
                for file in &files {
                    match &file.path {
                        Some(p) => println!("# {}", p.display()),
                        None => println!("# a line of the user's crontab (crontab -e)"),
                    }
                    println!("{}", file.text);
                }
                return Ok(0);
            }
            let installed = schedule::install(&name, &files, &target)?;
            if global.json {
                context::print_json(&installed)?;
            } else if !global.quiet {
                for file in &installed.files {
                    match &file.path {
                        Some(p) => eprintln!("wrote {}", p.display()),
                        None => eprintln!("added to the crontab: {}", file.text.trim()),
                    }
                }
                if installed.verified {
                    eprintln!("systemd-analyze verify: ok");
                }
                eprintln!("{}", next_steps(&name, &target, installed.enabled));
            }
            Ok(0)
        }
        Action::Remove => {
            let removed = schedule::remove(&name, &target)?;
            if global.json {
                context::print_json(&removed)?;
            } else if !global.quiet {
                for p in &removed {
                    eprintln!("deleted {}", p.display());
                }
                if removed.is_empty() && target.directory()?.is_some() {
                    eprintln!("job {name} had no schedule installed there");
                }
            }
            Ok(0)
        }
        Action::Status => {
            let state = crate::commands::run::state_dir(&args.state)?;
            let status =
                schedule::status(&name, job, &target, &state, jiff::Timestamp::now(), &jiff::tz::TimeZone::system())?;
            if global.json {
                context::print_json(&status)?;
                return Ok(0);
            }
            let tz = jiff::tz::TimeZone::system();
            let when = |t: jiff::Timestamp| t.to_zoned(tz.clone()).strftime("%Y-%m-%d %H:%M:%S %Z").to_string();
            println!("job:       {name}");
            println!("schedule:  {}", status.schedule);
            println!("installed: {}", if status.installed { "yes" } else { "no" });
            match status.next {
                Some(t) if status.next_from_systemd => println!("next run:  {} (systemd)", when(t)),
                Some(t) => println!("next run:  {} (from the calendar and the last run)", when(t)),
                None => println!("next run:  never (the calendar has no further date)"),
            }
            match &status.last_run {
                Some(r) => println!("last run:  {} exit {} ({})", when(r.started), r.exit_code, verdict(r.exit_code)),
                None => println!("last run:  none recorded in {}", state.path().display()),
            }
            Ok(0)
        }
    }
}

enum Action {
    Install,
    Remove,
    Status,
}

fn verdict(code: u8) -> &'static str {
    match code {
        0 => "ok",
        exit::INCOMPLETE => "warnings",
        _ => "failed",
    }
}

/// How to see that the schedule works.
fn next_steps(name: &str, target: &ScheduleTarget, enabled: bool) -> String {
    let user = if target.scope == Scope::User { "--user " } else { "" };
    match (target.scheduler, enabled) {
        (_, false) => "nothing was enabled (--dir)".to_owned(),
        (Scheduler::Systemd, true) => format!(
            "enabled cairn-{name}.timer: see `systemctl {user}list-timers cairn-{name}.timer` and \
             `journalctl {user}-u cairn-{name}`{}",
            if target.scope == Scope::User {
                "; `loginctl enable-linger` runs it while you are logged out"
            } else {
                ""
            }
        ),
        (Scheduler::Cron, true) => format!("cron runs `cairn run {name} --if-due` hourly"),
    }
}
