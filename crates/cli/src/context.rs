//! From global options to a backend and an open repository.

use anyhow::{Context, Result, bail};
use cairn_repo::{Backend, BackendOptions, OpenOptions, Repository, S3Options};

use crate::args::GlobalArgs;
use crate::password;

/// The repository location given by `-r` or `CAIRN_REPOSITORY`.
pub fn location(global: &GlobalArgs) -> Result<&str> {
    match global.repo.as_deref() {
        Some(l) if !l.trim().is_empty() => Ok(l),
        _ => bail!("no repository given: use -r/--repo LOCATION or set CAIRN_REPOSITORY"),
    }
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
        ..Default::default()
    };
    Ok(Backend::open(location(global)?, &options)?)
}

/// Cache settings.
pub fn open_options(global: &GlobalArgs) -> OpenOptions {
    let cache_dir =
        if global.no_cache { None } else { global.cache_dir.clone().or_else(cairn_repo::cache::Cache::default_base) };
    OpenOptions { cache_dir }
}

/// Opens the repository with the configured password.
pub async fn open(global: &GlobalArgs) -> Result<Repository> {
    let backend = backend(global, false)?;
    let pw = password::repository_password(global)?;
    Repository::open(backend, &pw, open_options(global)).await.map_err(anyhow::Error::from)
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    let s = serde_json::to_string_pretty(value).context("cannot format JSON")?;
    println!("{s}");
    Ok(())
}
