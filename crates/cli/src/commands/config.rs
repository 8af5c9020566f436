//! `cairn config check`: the config file, checked and printed with secrets
//! redacted.

use anyhow::Result;
use cairn::job::{Config, JobError};

use crate::args::{ConfigCheckArgs, ConfigCommand, GlobalArgs, NotifyCommand};
use crate::context;
use crate::exit;

pub async fn run(global: &GlobalArgs, command: ConfigCommand) -> Result<u8> {
    match command {
        ConfigCommand::Check(args) => check(global, args).await,
    }
}

async fn check(global: &GlobalArgs, args: ConfigCheckArgs) -> Result<u8> {
    let (path, config) = load(args.config.config.as_deref())?;
    let validation = config.validate();
    for warning in &validation.warnings {
        eprintln!("warning: {warning}");
    }
    for error in &validation.errors {
        eprintln!("error: {error}");
    }
    if !validation.errors.is_empty() {
        exit::usage!("{}: {} error(s) in the config; nothing was run", path.display(), validation.errors.len());
    }
    let mut unreachable = 0;
    if args.connect {
        for name in config.repository.keys() {
            match cairn::job::connect(&config, name, &context::open_options(global)).await {
                Ok(repo) => eprintln!("repository {name}: opened {} at {}", repo.id().short(), repo.location()),
                Err(e) => {
                    unreachable += 1;
                    eprintln!("error: repository {name}: {e}");
                }
            }
        }
    }
    if global.json {
        context::print_json(&config.redacted())?;
    } else if !global.quiet {
        println!("# {} (secrets redacted)", path.display());
        print!("{}", config.redacted().to_toml());
    }
    Ok(if unreachable > 0 {
        exit::FAILURE
    } else if validation.warnings.is_empty() {
        0
    } else {
        exit::INCOMPLETE
    })
}

/// `cairn notify test`: a test message to every target; exit 1 if one
/// was not delivered.
pub async fn notify(global: &GlobalArgs, command: NotifyCommand) -> Result<u8> {
    let NotifyCommand::Test(args) = command;
    let (path, config) = load(args.config.config.as_deref())?;
    let validation = config.validate();
    if !validation.errors.is_empty() {
        exit::usage!("{}: {}", path.display(), validation.errors.join("; "));
    }
    if config.notify.is_empty() {
        exit::usage!("{} has no [[notify]] target", path.display());
    }
    let deliveries = cairn::job::notify_test(&config.notify, &cairn_repo::hostname()).await;
    if global.json {
        context::print_json(&deliveries)?;
    }
    for d in &deliveries {
        if !global.json && !global.quiet {
            let status = if d.ok { "sent".to_owned() } else { format!("FAILED: {}", d.error) };
            println!("{}: {status}", d.target);
        }
    }
    Ok(if deliveries.iter().all(|d| d.ok) { 0 } else { exit::FAILURE })
}

/// Finds and parses the config file; a missing or malformed file is a
/// usage error (exit 2), as a bad command line is.
pub fn load(explicit: Option<&std::path::Path>) -> Result<(std::path::PathBuf, Config)> {
    match Config::find(explicit) {
        Ok(found) => Ok(found),
        Err(e @ (JobError::Config { .. } | JobError::NoConfig { .. })) => exit::usage!("{e}"),
        Err(e) => Err(e.into()),
    }
}

/// The job a command names, else the config's only job; naming none when
/// there are several is a usage error.
pub fn job_name(path: &std::path::Path, config: &Config, job: Option<&str>) -> Result<String> {
    match (job, config.job.len()) {
        (Some(name), _) => Ok(name.to_owned()),
        (None, 1) => Ok(config.job.keys().next().cloned().unwrap_or_default()),
        (None, _) => exit::usage!(
            "{} has {} jobs: name one ({})",
            path.display(),
            config.job.len(),
            config.job.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
    }
}
