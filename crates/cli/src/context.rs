//! From global options to a backend and an open repository.
//!
//! With no repository configured (`-r` / `CAIRN_REPOSITORY`), commands use
//! the **default repository** `$XDG_DATA_HOME/cairn/repository` (usually
//! `~/.local/share/cairn/repository`) with the password in
//! `$XDG_CONFIG_HOME/cairn/password` (usually `~/.config/cairn/password`);
//! `cairn backup` creates both on first use.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use cairn_repo::{
    Backend, BackendOptions, Error, InitOptions, OpenOptions, RcloneOptions, Repository, S3Options, SftpOptions,
};

use crate::args::GlobalArgs;
use crate::password;
use crate::progress::Reporter;

/// Where the default repository and its password live.
pub struct DefaultRepository {
    /// The repository directory.
    pub location: PathBuf,
    /// The generated password's file.
    pub password_file: PathBuf,
}

/// The default repository's paths, if this user has a home.
pub fn default_repository() -> Result<DefaultRepository> {
    let data = dirs::data_dir().context("cannot find a data directory for the default repository (is HOME set?)")?;
    let config =
        dirs::config_dir().context("cannot find a config directory for the default repository (is HOME set?)")?;
    Ok(DefaultRepository {
        location: data.join("cairn").join("repository"),
        password_file: config.join("cairn").join("password"),
    })
}

/// True when no repository is configured, so the default one is used.
pub fn uses_default(global: &GlobalArgs) -> bool {
    global.repo.as_deref().is_none_or(|l| l.trim().is_empty())
}

/// The repository location: `-r`/`CAIRN_REPOSITORY`, else the default.
pub fn location(global: &GlobalArgs) -> Result<String> {
    if !uses_default(global) {
        return Ok(global.repo.clone().unwrap_or_default());
    }
    Ok(default_repository()?.location.to_string_lossy().into_owned())
}

/// Opens the storage backend.
pub fn backend(global: &GlobalArgs, create: bool) -> Result<Backend> {
    let options = BackendOptions {
        create,
        connections: global.connections,
        s3: S3Options {
            endpoint: global.s3_endpoint.clone(),
            region: global.s3_region.clone(),
            path_style: global.s3_path_style,
            access_key_id: None,
            secret_access_key: None,
        },
        sftp: SftpOptions { command: global.sftp_command.clone(), connections: global.sftp_connections },
        rclone: RcloneOptions { program: global.rclone_program.clone(), args: global.rclone_args.clone() },
        ..Default::default()
    };
    Ok(Backend::open(&location(global)?, &options)?)
}

/// Cache settings, and the minimum grace period (lowered only by tests).
pub fn open_options(global: &GlobalArgs) -> OpenOptions {
    let cache_dir =
        if global.no_cache { None } else { global.cache_dir.clone().or_else(cairn_repo::Cache::default_base) };
    let mut options = OpenOptions { cache_dir, ..OpenOptions::default() };
    if let Some(secs) = global.unsafe_minimum_grace {
        options.minimum_grace = std::time::Duration::from_secs(secs);
    }
    options
}

/// The password that opens the repository; for the default repository
/// without a configured password, its password file.
pub fn repository_password(global: &GlobalArgs) -> Result<password::Password> {
    if uses_default(global) && !password::is_configured(global) {
        let default = default_repository()?;
        if !default.password_file.exists() {
            bail!(
                "no repository given: use -r/--repo LOCATION or set CAIRN_REPOSITORY \
                 (or run `cairn backup PATH` once to create the default repository at {})",
                default.location.display()
            );
        }
        return password::from_file(&default.password_file);
    }
    password::repository_password(global)
}

/// Opens the repository for a command that reads it: write-only
/// credentials are refused with [`cairn_repo::Error::WriteOnly`] (exit 12).
pub async fn open(global: &GlobalArgs) -> Result<Repository> {
    let repo = open_writable(global).await?;
    if repo.write_only() {
        return Err(cairn_repo::Error::WriteOnly {
            location: repo.location().to_owned(),
            action: "this command".into(),
        }
        .into());
    }
    Ok(repo)
}

/// Opens the repository for a command that only adds to it (`backup`),
/// also with write-only credentials (from the cache of an earlier visit).
pub async fn open_writable(global: &GlobalArgs) -> Result<Repository> {
    let pw = repository_password(global)?;
    let backend = backend(global, false)?;
    Repository::open(backend, &pw, open_options(global)).await.map_err(anyhow::Error::from)
}

/// Opens another repository (`--from-repo`): same storage options; its own
/// password if given, else the same password as this repository.
pub async fn open_other(
    global: &GlobalArgs,
    location: &str,
    from: &crate::args::FromPasswordArgs,
) -> Result<Repository> {
    let pw = match (&from.from_password_file, &from.from_password_command) {
        (Some(file), _) => password::from_file(file)?,
        (None, Some(cmd)) => password::from_command(cmd)?,
        (None, None) => repository_password(global)?,
    };
    let other = GlobalArgs { repo: Some(location.to_owned()), ..global.clone() };
    let backend = backend(&other, false)?;
    Repository::open(backend, &pw, open_options(global)).await.map_err(anyhow::Error::from)
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    let s = serde_json::to_string_pretty(value).context("cannot format JSON")?;
    println!("{s}");
    Ok(())
}

/// Prints `value` as one JSON line on stdout (status and summary lines).
pub fn print_json_line<T: serde::Serialize>(value: &T) -> Result<()> {
    let s = serde_json::to_string(value).context("cannot format JSON")?;
    println!("{s}");
    Ok(())
}

/// Opens the repository; creates it when it is the default repository used
/// for the first time, or when `--init` is given.
pub(crate) async fn open_or_init(global: &GlobalArgs, init: bool, reporter: &Reporter) -> Result<Repository> {
    let default = uses_default(global) && !password::is_configured(global);
    if default {
        let paths = default_repository()?;
        if !paths.location.join("config").exists() {
            return init_default(global, &paths, reporter).await;
        }
    }
    match open_writable(global).await {
        Err(e) if init && matches!(e.downcast_ref::<Error>(), Some(Error::RepositoryNotFound { .. })) => {
            let pw = password::new_repository_password(global)?;
            let backend = backend(global, true)?;
            let repo = Repository::init(backend, &pw, InitOptions::default(), open_options(global)).await?;
            reporter.info(&format!("created cairn repository {} at {}", repo.id().short(), repo.location()));
            Ok(repo)
        }
        other => other,
    }
}

/// First use: a generated password in a 0600 file, a new repository.
async fn init_default(global: &GlobalArgs, paths: &DefaultRepository, reporter: &Reporter) -> Result<Repository> {
    // A generated password: its key opens without Argon2id (FORMAT.md §4.4).
    let pw = if paths.password_file.exists() {
        password::from_file(&paths.password_file)?
    } else {
        cairn::secret::generate_into(&paths.password_file)?
    };
    let backend = backend(global, true)?;
    let repo = Repository::init(backend, &pw, InitOptions::default(), open_options(global)).await?;
    let message = format!(
        "created the default cairn repository at {}\n\
         its password is in {} (mode 0600).\n\
         Keep a copy of that file somewhere safe: without it the backups cannot be read.",
        paths.location.display(),
        paths.password_file.display()
    );
    if global.json {
        print_json_line(&serde_json::json!({
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
