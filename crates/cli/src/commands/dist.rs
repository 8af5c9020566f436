//! `cairn completions SHELL` and the hidden `cairn dist --dir DIR`: what a
//! package ships besides the binary, generated from this binary's own clap
//! definitions and unit templates so that none of it is a hand-kept copy.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use cairn::job::JobConfig;
use cairn::job::schedule::{self, ScheduleTarget, Scheduler, Scope};
use clap::CommandFactory;
use clap_complete::Shell;

use crate::args::{Cli, CompletionsArgs, DistArgs, GlobalArgs};

/// The shells a package ships completions for (at the paths of
/// `[package.metadata.deb]` in crates/cli/Cargo.toml).
const PACKAGED_SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// The example job of the packaged systemd units: where a package puts the
/// binary and where `cairn` looks for the system's config.
const EXAMPLE_JOB: &str = "nightly";
const EXAMPLE_SCHEDULE: &str = "*-*-* 02:00:00";
const PACKAGED_EXE: &str = "/usr/bin/cairn";
const SYSTEM_CONFIG: &str = "/etc/cairn/cairn.toml";

pub fn completions(args: CompletionsArgs) -> Result<()> {
    let script = completion_script(args.shell);
    // Written in one go with the error returned: clap_complete panics on a
    // failed write, and `cairn completions bash | head` is no reason to.
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&script).and_then(|()| stdout.flush()).context("cannot write to stdout")
}

pub fn run(global: &GlobalArgs, args: DistArgs) -> Result<()> {
    let written = write_all(&args.dir)?;
    if !global.quiet {
        for path in written {
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(())
}

/// Writes `dir/man/*.1`, `dir/completions/*` and `dir/systemd/*`; returns
/// the files written.
fn write_all(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();

    let man = dir.join("man");
    create_dir(&man)?;
    // One page per command (cairn.1, cairn-backup.1, cairn-key-add.1, ...),
    // as git and cargo do: `man cairn-backup` is where a reader looks.
    clap_mangen::generate_to(Cli::command(), &man)
        .with_context(|| format!("cannot write the man pages into {}", man.display()))?;
    written.extend(files_in(&man)?);

    let completions = dir.join("completions");
    create_dir(&completions)?;
    for shell in PACKAGED_SHELLS {
        let path = completions.join(clap_complete::Generator::file_name(&shell, "cairn"));
        write(&path, &completion_script(shell))?;
        written.push(path);
    }

    let systemd = dir.join("systemd");
    create_dir(&systemd)?;
    for file in example_units(&systemd)? {
        let path = file.path.context("a systemd unit always has a path")?;
        write(&path, file.text.as_bytes())?;
        written.push(path);
    }
    Ok(written)
}

fn completion_script(shell: Shell) -> Vec<u8> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "cairn", &mut script);
    script
}

/// The units `cairn schedule install --system` writes for a job named
/// `nightly` of /etc/cairn/cairn.toml, from the same templates, with a
/// header saying how to use them.
fn example_units(dir: &Path) -> Result<Vec<schedule::ScheduleFile>> {
    let job = JobConfig { schedule: Some(EXAMPLE_SCHEDULE.to_owned()), ..JobConfig::default() };
    let target = ScheduleTarget { scheduler: Scheduler::Systemd, scope: Scope::System, dir: Some(dir.to_owned()) };
    let mut files = schedule::files(EXAMPLE_JOB, &job, Path::new(PACKAGED_EXE), Path::new(SYSTEM_CONFIG), &target)?;
    for file in &mut files {
        // Their first line says `cairn schedule install` wrote them, which
        // is not so for a packaged example.
        let body: String = file
            .text
            .lines()
            .filter(|l| !l.starts_with("# Written by `cairn schedule"))
            .map(|l| format!("{l}\n"))
            .collect();
        file.text = format!(
            "# Example: a job named `{EXAMPLE_JOB}` in {SYSTEM_CONFIG}, every night at 02:00 (plus up to\n\
             # 30 minutes of spread). `cairn schedule install JOB` writes units like these for\n\
             # your own jobs and schedules, and verifies them; or copy these two files to\n\
             # /etc/systemd/system/ and `systemctl enable --now cairn-{EXAMPLE_JOB}.timer`.\n{body}"
        );
    }
    Ok(files)
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

fn files_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut paths = std::fs::read_dir(dir)
        .and_then(|entries| entries.map(|e| e.map(|e| e.path())).collect::<std::io::Result<Vec<_>>>())
        .with_context(|| format!("cannot list {}", dir.display()))?;
    paths.sort();
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shell_gets_a_script_that_names_every_command() {
        for shell in PACKAGED_SHELLS {
            let script = String::from_utf8(completion_script(shell)).expect("completion scripts are UTF-8");
            for command in ["backup", "restore", "snapshots", "schedule", "completions"] {
                assert!(script.contains(command), "{shell}: no {command}");
            }
            // Each registers itself for the command named `cairn`.
            let registers = match shell {
                Shell::Bash => "complete -F _cairn",
                Shell::Zsh => "#compdef cairn",
                _ => "complete -c cairn",
            };
            assert!(script.contains(registers), "{shell}: no `{registers}`");
        }
    }

    #[test]
    fn dist_writes_a_page_per_command_completions_and_units() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let written = write_all(dir.path()).expect("dist");
        let names: Vec<String> = written
            .iter()
            .map(|p| p.strip_prefix(dir.path()).expect("under dir").to_string_lossy().into_owned())
            .collect();
        for expected in [
            "man/cairn.1",
            "man/cairn-backup.1",
            "man/cairn-key-add.1",
            "man/cairn-pg-backup.1",
            "completions/cairn.bash",
            "completions/_cairn",
            "completions/cairn.fish",
            "systemd/cairn-nightly.service",
            "systemd/cairn-nightly.timer",
        ] {
            assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
        }
        assert!(!names.iter().any(|n| n.contains("dist")), "a page for the hidden command: {names:?}");

        let page = std::fs::read_to_string(dir.path().join("man/cairn-backup.1")).expect("page");
        assert!(page.starts_with(".ie \\n(.g .ds Aq"), "not roff: {}", &page[..page.len().min(80)]);
        assert!(page.contains("CAIRN_REPOSITORY"), "the environment variables are documented");

        let service = std::fs::read_to_string(dir.path().join("systemd/cairn-nightly.service")).expect("service");
        assert!(service.contains("\nExecStart=/usr/bin/cairn run nightly --config /etc/cairn/cairn.toml\n"));
        let timer = std::fs::read_to_string(dir.path().join("systemd/cairn-nightly.timer")).expect("timer");
        assert!(timer.contains("\nOnCalendar=*-*-* 02:00:00\n"), "{timer}");
    }
}
