//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::units::{parse_size, parse_size_u32};

/// cairn: fast, encrypted, deduplicated backups to any object store.
#[derive(Debug, Parser)]
#[command(name = "cairn", version, about, long_about = None, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

const EXIT_CODES: &str = "Exit codes: 0 success, 1 failure (wrong password, corrupt object, storage error), \
2 invalid command line, 10 repository does not exist.";

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Repository location: a path, s3:BUCKET[/PREFIX], s3:https://HOST/BUCKET[/PREFIX], gs:BUCKET[/PREFIX], azure:CONTAINER[/PREFIX]
    #[arg(short = 'r', long = "repo", env = "CAIRN_REPOSITORY", global = true, value_name = "LOCATION")]
    pub repo: Option<String>,

    /// Read the password from the first line of FILE
    #[arg(long, env = "CAIRN_PASSWORD_FILE", global = true, value_name = "FILE")]
    pub password_file: Option<PathBuf>,

    /// Run CMD (with sh -c) and use its output as the password
    #[arg(long, env = "CAIRN_PASSWORD_COMMAND", global = true, value_name = "CMD")]
    pub password_command: Option<String>,

    /// Metadata cache directory [default: ~/.cache/cairn]
    #[arg(long, env = "CAIRN_CACHE_DIR", global = true, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Do not use the local metadata cache
    #[arg(long, global = true)]
    pub no_cache: bool,

    /// Print machine-readable JSON
    #[arg(long, global = true)]
    pub json: bool,

    /// S3 endpoint URL (default: AWS_ENDPOINT_URL, else AWS)
    #[arg(long, global = true, value_name = "URL")]
    pub s3_endpoint: Option<String>,

    /// S3 region (default: AWS_REGION, else us-east-1)
    #[arg(long, global = true, value_name = "REGION")]
    pub s3_region: Option<String>,

    /// Use path-style S3 requests (default for custom endpoints)
    #[arg(long, global = true, value_name = "BOOL")]
    pub s3_path_style: Option<bool>,

    /// Most storage requests in flight
    #[arg(long, global = true, value_name = "N")]
    pub connections: Option<usize>,

    /// More log output (-v, -vv, -vvv)
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Only errors
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new repository
    Init(InitArgs),
    /// Manage the repository's keys (passwords)
    #[command(subcommand)]
    Key(KeyCommand),
    /// Print a repository object, decrypted, as JSON (for debugging)
    Cat(CatArgs),
}

/// Argon2id cost of a new key.
#[derive(Debug, Args, Clone)]
pub struct KdfArgs {
    /// Argon2id memory for the new key
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_size)]
    pub kdf_memory: u64,

    /// Argon2id passes for the new key
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub kdf_iterations: u32,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Smallest chunk
    #[arg(long, value_name = "SIZE", default_value = "512KiB", value_parser = parse_size_u32)]
    pub chunk_min: u32,
    /// Average chunk
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = parse_size_u32)]
    pub chunk_avg: u32,
    /// Largest chunk
    #[arg(long, value_name = "SIZE", default_value = "8MiB", value_parser = parse_size_u32)]
    pub chunk_max: u32,
    /// zstd level (0 = no compression, 1 fastest .. 22 smallest)
    #[arg(long, value_name = "LEVEL", default_value_t = 3, allow_negative_numbers = true)]
    pub compression: i32,
    /// Target pack size
    #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = parse_size_u32)]
    pub pack_size: u32,
    #[command(flatten)]
    pub kdf: KdfArgs,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// List keys
    List,
    /// Add a key with a new password
    Add(KeyAddArgs),
    /// Remove a key
    Remove {
        /// Key id (or unique prefix)
        id: String,
    },
    /// Change the password of the key in use
    Passwd(NewPasswordArgs),
}

#[derive(Debug, Args)]
pub struct NewPasswordArgs {
    /// Read the new password from FILE (else CAIRN_NEW_PASSWORD, else a prompt)
    #[arg(long, value_name = "FILE")]
    pub new_password_file: Option<PathBuf>,
    #[command(flatten)]
    pub kdf: KdfArgs,
}

#[derive(Debug, Args)]
pub struct KeyAddArgs {
    #[command(flatten)]
    pub password: NewPasswordArgs,
    /// The key can add backups but not read anything (see README, put-only keys)
    #[arg(long)]
    pub put_only: bool,
    /// Host name recorded in the key
    #[arg(long)]
    pub host: Option<String>,
    /// User name recorded in the key
    #[arg(long)]
    pub user: Option<String>,
}

#[derive(Debug, Args)]
pub struct CatArgs {
    #[command(subcommand)]
    pub what: CatWhat,
}

#[derive(Debug, Subcommand)]
pub enum CatWhat {
    /// The repository config
    Config,
    /// A key file (public fields only)
    Key { id: String },
    /// An index file
    Index { id: String },
    /// A snapshot
    Snapshot { id: String },
    /// A pack's header
    Pack { id: String },
}
