//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use cairn::units::{parse_size, parse_size_u32};

/// cairn: fast, encrypted, deduplicated backups to any object store.
#[derive(Debug, Parser)]
#[command(
    name = "cairn",
    version = crate::version::SHORT,
    long_version = crate::version::LONG,
    about,
    long_about = None,
    after_help = EXIT_CODES
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

const EXIT_CODES: &str = "Exit codes: 0 success, 1 failure (wrong password, corrupt object, storage error), \
2 invalid command line, 3 backup or restore finished but some files could not be read or written, \
10 repository does not exist, 12 skipped: the storage credentials are write-only, \
141 stopped because the output's reader went away (e.g. `| head`).";

/// Options every command takes (shown apart from each command's own).
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Repository location: a path, s3:BUCKET[/PREFIX], s3:https://HOST/BUCKET[/PREFIX], gs:BUCKET[/PREFIX], azure:CONTAINER[/PREFIX], sftp:[USER@]HOST[:PORT]:/PATH, rclone:REMOTE:PATH
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

    /// Command that starts an SFTP session for sftp: locations, replacing
    /// `ssh [-p PORT] [-l USER] HOST -s sftp` (e.g. "ssh -F ~/nas.conf nas -s sftp")
    #[arg(long, env = "CAIRN_SFTP_COMMAND", global = true, value_name = "CMD")]
    pub sftp_command: Option<String>,

    /// SFTP sessions (ssh processes) per sftp: repository [default: 5]
    #[arg(long, global = true, value_name = "N")]
    pub sftp_connections: Option<usize>,

    /// The rclone program for rclone: locations [default: rclone]
    #[arg(long, env = "CAIRN_RCLONE_PROGRAM", global = true, value_name = "PATH")]
    pub rclone_program: Option<String>,

    /// Extra arguments for `rclone serve restic`, added to cairn's own
    /// (e.g. "--config /etc/cairn/rclone.conf")
    #[arg(long, env = "CAIRN_RCLONE_ARGS", global = true, value_name = "ARGS", allow_hyphen_values = true)]
    pub rclone_args: Option<String>,

    /// More log output (-v, -vv, -vvv)
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Only errors
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Lower prune's minimum grace period to SECS (and the age at which
    /// backups check their reused packs). For tests only: on a real
    /// repository, prune could delete data that a running backup reuses.
    #[arg(long, env = "CAIRN_TEST_MIN_GRACE_SECS", global = true, hide = true, value_name = "SECS")]
    pub unsafe_minimum_grace: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new repository
    Init(InitArgs),
    /// Manage the repository's keys (passwords)
    #[command(subcommand)]
    Key(KeyCommand),
    /// Back up files and directories (or a stream)
    Backup(BackupArgs),
    /// Restore a snapshot (or a path in it) into a directory
    Restore(RestoreArgs),
    /// List snapshots
    Snapshots(SnapshotsArgs),
    /// List the files in a snapshot
    Ls(LsArgs),
    /// Find files by name pattern in snapshots
    Find(FindArgs),
    /// Show what changed between two snapshots
    Diff(DiffArgs),
    /// Show sizes: restore size, stored size, deduplication and compression
    Stats(StatsArgs),
    /// Add, remove or set tags of snapshots
    Tag(TagArgs),
    /// Remove snapshots by a retention policy (keep daily, weekly, ...) or by id
    Forget(ForgetArgs),
    /// Delete data no snapshot references and repack mostly-unused packs (safe while backups run)
    Prune(PruneArgs),
    /// Verify the repository: structure, and with --read-data the stored data
    Check(CheckArgs),
    /// Copy snapshots from another repository (--from-repo) into this one
    Copy(CopyArgs),
    /// Repair a damaged repository
    #[command(subcommand)]
    Repair(RepairCommand),
    /// Write one file of a snapshot to stdout (a directory as tar)
    Dump(DumpArgs),
    /// Browse the snapshots as a read-only file system (FUSE) until Ctrl-C
    Mount(MountArgs),
    /// Print a repository object, decrypted, as JSON (for debugging)
    Cat(CatArgs),
    /// PostgreSQL: back up, restore and drill databases
    #[command(subcommand)]
    Pg(PgCommand),
    /// Run a job of the config file: its sources, retention, copies and due checks
    Run(RunArgs),
    /// A report of the config's jobs: their runs plotted over time, as an HTML page
    Report(ReportArgs),
    /// The config file: check it and print it with secrets redacted
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Run a job on its schedule: install, remove or show its systemd timer (or cron line)
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Notifications of the config file
    #[command(subcommand)]
    Notify(NotifyCommand),
    /// Whether each job's data is safe: newest snapshots against the RPO, last check and drill, sizes and cost
    Status(StatusArgs),
    /// Print the shell completion script for SHELL (e.g. `cairn completions bash > /etc/bash_completion.d/cairn`)
    Completions(CompletionsArgs),
    /// Write the man pages, shell completions and example systemd units into DIR (for packaging)
    #[command(hide = true)]
    Dist(DistArgs),
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct DistArgs {
    /// Where to write man/, completions/ and systemd/ (created if missing)
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this job [default: every job of the config]
    #[arg(value_name = "JOB")]
    pub job: Option<String>,
    #[command(flatten)]
    pub config: ConfigFileArgs,
    /// Exit 1 when anything is stale or failed, 3 when something is worth a look (for monitoring probes)
    #[arg(long)]
    pub check: bool,
    #[command(flatten)]
    pub state: StateDirArgs,
}

#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// Send a test message to every notification target of the config
    Test(NotifyTestArgs),
}

#[derive(Debug, Args)]
pub struct NotifyTestArgs {
    #[command(flatten)]
    pub config: ConfigFileArgs,
}

/// Where the config file is.
#[derive(Debug, Args, Clone)]
pub struct ConfigFileArgs {
    /// The config file [default: ~/.config/cairn/cairn.toml, then /etc/cairn/cairn.toml]
    #[arg(long = "config", env = "CAIRN_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The job to run [default: the config's only job]
    #[arg(value_name = "JOB")]
    pub job: Option<String>,
    #[command(flatten)]
    pub config: ConfigFileArgs,
    /// Run only this step (a check or drill then runs even if it is not due)
    #[arg(long, value_name = "STEP", value_parser = ["sources", "retention", "copy", "check", "drill"])]
    pub only: Option<String>,
    /// Change nothing: write no snapshot, only plan retention, copy and check nothing, record nothing
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Run only if the job's schedule has come round since its last run that did not fail (for an hourly cron line)
    #[arg(long)]
    pub if_due: bool,
    #[command(flatten)]
    pub state: StateDirArgs,
}

/// Where the jobs' state is.
#[derive(Debug, Args, Clone)]
pub struct StateDirArgs {
    /// Where runs are recorded and jobs locked [default: $STATE_DIRECTORY, else /var/lib/cairn for root, else ~/.local/state/cairn]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Write a self-contained HTML page (plots of the jobs' runs, the status) to FILE
    #[arg(long, value_name = "FILE", required = true)]
    pub html: Option<PathBuf>,
    #[command(flatten)]
    pub config: ConfigFileArgs,
    #[command(flatten)]
    pub state: StateDirArgs,
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Write the job's systemd service and timer (or cron line), verify them and enable the timer
    Install(ScheduleArgs),
    /// Disable and delete the job's timer and service (or cron line)
    Remove(ScheduleArgs),
    /// Whether the job's schedule is installed, its next run and its last run's result
    Status(ScheduleArgs),
}

#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// The job [default: the config's only job]
    #[arg(value_name = "JOB")]
    pub job: Option<String>,
    #[command(flatten)]
    pub config: ConfigFileArgs,
    /// The user's systemd (~/.config/systemd/user) or crontab [default when not root]
    #[arg(long, conflicts_with = "system")]
    pub user: bool,
    /// The system's systemd (/etc/systemd/system) or /etc/cron.d [default as root]
    #[arg(long)]
    pub system: bool,
    /// An hourly cron line running `cairn run JOB --if-due` instead of a systemd timer
    #[arg(long)]
    pub cron: bool,
    /// Print what install would write, and change nothing
    #[arg(long)]
    pub print: bool,
    /// Write the files into DIR instead, and enable nothing (for packaging, or a look first)
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    #[command(flatten)]
    pub state: StateDirArgs,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check the config (unknown keys, references, durations, write-only repositories, readable secrets) and print it, secrets redacted
    Check(ConfigCheckArgs),
}

#[derive(Debug, Args)]
pub struct ConfigCheckArgs {
    #[command(flatten)]
    pub config: ConfigFileArgs,
    /// Also open every repository (with its password and credentials)
    #[arg(long)]
    pub connect: bool,
}

/// Which snapshots a command considers.
#[derive(Debug, Args, Clone, Default)]
pub struct FilterArgs {
    /// Only snapshots of this host (repeatable)
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Only snapshots with this tag (repeatable; comma-separated tags must all be present)
    #[arg(long = "tag", value_name = "TAG[,TAG]")]
    pub tags: Vec<String>,
    /// Only snapshots that include this path (repeatable)
    #[arg(long = "path", value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Files and directories to back up, or buckets (s3:BUCKET[/PREFIX], s3:https://HOST/BUCKET[/PREFIX],
    /// gs:BUCKET[/PREFIX], azure:CONTAINER[/PREFIX]); with --stdin-from-command: the command and its arguments
    #[arg(value_name = "PATH", required_unless_present = "stdin")]
    pub paths: Vec<PathBuf>,
    /// Exclude paths matching PATTERN (repeatable; see README for the pattern rules)
    #[arg(short = 'e', long = "exclude", value_name = "PATTERN")]
    pub excludes: Vec<String>,
    /// Read exclude patterns from FILE (one per line, # comments)
    #[arg(long = "exclude-file", value_name = "FILE")]
    pub exclude_files: Vec<PathBuf>,
    /// Skip directories that contain an entry called NAME (e.g. .nobackup, CACHEDIR.TAG)
    #[arg(long = "exclude-if-present", value_name = "NAME")]
    pub exclude_if_present: Vec<String>,
    /// Skip cache directories marked with a CACHEDIR.TAG file
    #[arg(long)]
    pub exclude_caches: bool,
    /// Do not cross filesystem boundaries
    #[arg(short = 'x', long)]
    pub one_file_system: bool,
    /// Tag the snapshot (repeatable, or comma-separated)
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Host name to record [default: this host's name]
    #[arg(long)]
    pub host: Option<String>,
    /// Snapshot time, for imports: RFC 3339 or "YYYY-MM-DD HH:MM:SS" in local time
    #[arg(long, value_name = "TIME")]
    pub time: Option<String>,
    /// Compare with this snapshot instead of the latest of this host and paths
    #[arg(long, value_name = "SNAPSHOT")]
    pub parent: Option<String>,
    /// Read every file, ignoring the parent snapshot
    #[arg(long)]
    pub force: bool,
    /// Read and count everything, write nothing
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// After the summary, print where the time went: busy seconds, bytes and
    /// rate of each stage (read, chunk, hash, dedup, wait, compress, encrypt,
    /// pack, write) and the process's CPU time
    #[arg(long)]
    pub profile: bool,
    /// Back up standard input as one file
    #[arg(long, conflicts_with = "paths")]
    pub stdin: bool,
    /// File name of the stdin stream in the snapshot
    #[arg(long, value_name = "NAME", default_value = "stdin")]
    pub stdin_filename: String,
    /// Run the command given after `--` and back up its standard output as
    /// one file; the snapshot is written only if the command exits with status 0
    #[arg(long, conflicts_with = "stdin")]
    pub stdin_from_command: bool,
    /// Create the repository if it does not exist
    #[arg(long)]
    pub init: bool,
    /// Reader threads
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    pub read_concurrency: usize,
    /// Objects downloaded at once (bucket sources: s3:, gs:, azure:)
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub downloads: usize,
    /// Back up each bucket as it was at TIME, from its object versions
    /// (S3 buckets with versioning; RFC 3339 or "YYYY-MM-DD HH:MM:SS" local)
    #[arg(long, value_name = "TIME")]
    pub versions_at: Option<String>,
    #[command(flatten)]
    pub source: SourceBucketArgs,
}

/// Where a bucket source is: the same settings as a repository's, for the
/// bucket read (the `AWS_*`, `GOOGLE_*` and `AZURE_*` variables apply to both).
#[derive(Debug, Args, Clone, Default)]
pub struct SourceBucketArgs {
    /// S3 endpoint of the bucket backed up (default: AWS_ENDPOINT_URL, else AWS)
    #[arg(long, value_name = "URL")]
    pub source_endpoint: Option<String>,
    /// S3 region of the bucket backed up (default: AWS_REGION, else us-east-1)
    #[arg(long, value_name = "REGION")]
    pub source_region: Option<String>,
    /// Path-style S3 requests to the bucket backed up (default for custom endpoints)
    #[arg(long, value_name = "BOOL")]
    pub source_path_style: Option<bool>,
    /// Access key id for the bucket backed up (default: AWS_ACCESS_KEY_ID)
    #[arg(long, env = "CAIRN_SOURCE_ACCESS_KEY_ID", value_name = "ID", hide_env_values = true)]
    pub source_access_key_id: Option<String>,
    /// Secret access key for the bucket backed up (only from the environment)
    #[arg(skip = std::env::var("CAIRN_SOURCE_SECRET_ACCESS_KEY").ok())]
    pub source_secret_access_key: Option<String>,
}

/// Where a bucket restored into is (see [`SourceBucketArgs`]).
#[derive(Debug, Args, Clone, Default)]
pub struct TargetBucketArgs {
    /// S3 endpoint of a bucket --target (default: AWS_ENDPOINT_URL, else AWS)
    #[arg(long, value_name = "URL")]
    pub target_endpoint: Option<String>,
    /// S3 region of a bucket --target (default: AWS_REGION, else us-east-1)
    #[arg(long, value_name = "REGION")]
    pub target_region: Option<String>,
    /// Path-style S3 requests to a bucket --target (default for custom endpoints)
    #[arg(long, value_name = "BOOL")]
    pub target_path_style: Option<bool>,
    /// Access key id for a bucket --target (default: AWS_ACCESS_KEY_ID)
    #[arg(long, env = "CAIRN_TARGET_ACCESS_KEY_ID", value_name = "ID", hide_env_values = true)]
    pub target_access_key_id: Option<String>,
    /// Secret access key for a bucket --target (only from the environment)
    #[arg(skip = std::env::var("CAIRN_TARGET_SECRET_ACCESS_KEY").ok())]
    pub target_secret_access_key: Option<String>,
    /// Objects written at once into a bucket --target
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub uploads: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OverwriteArg {
    Always,
    IfChanged,
    Never,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// SNAPSHOT[:PATH]: an id prefix or `latest`, optionally with a path inside it
    #[arg(value_name = "SNAPSHOT[:PATH]")]
    pub snapshot: String,
    /// Directory to restore into (created if missing), or a bucket:
    /// s3:BUCKET[/PREFIX], s3:https://HOST/BUCKET[/PREFIX], gs:BUCKET[/PREFIX], azure:CONTAINER[/PREFIX]
    #[arg(short, long, value_name = "DIR|BUCKET")]
    pub target: PathBuf,
    /// Restore only paths matching PATTERN (repeatable)
    #[arg(short = 'i', long = "include", value_name = "PATTERN")]
    pub includes: Vec<String>,
    /// Do not restore paths matching PATTERN (repeatable)
    #[arg(short = 'e', long = "exclude", value_name = "PATTERN")]
    pub excludes: Vec<String>,
    /// What to do with entries that exist in the target (in a bucket: if-changed keeps
    /// objects whose size and ETag are the snapshot's)
    #[arg(long, value_enum, default_value = "always")]
    pub overwrite: OverwriteArg,
    /// Delete entries in the target that are not in the snapshot
    #[arg(long)]
    pub delete: bool,
    /// Read restored files back and verify their content
    #[arg(long)]
    pub verify: bool,
    /// Show what would be done, change nothing
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Restore owners by numeric id, ignoring user and group names
    #[arg(long)]
    pub numeric_owner: bool,
    /// Clear the setuid and setgid bits of restored files and directories
    #[arg(long)]
    pub no_same_permissions: bool,
    /// Do not create device nodes
    #[arg(long)]
    pub no_device: bool,
    /// Files planned and written per batch (bounds memory on huge trees)
    #[arg(long, value_name = "N", default_value_t = 40_000)]
    pub batch_files: usize,
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub bucket: TargetBucketArgs,
}

#[derive(Debug, Args)]
pub struct MountArgs {
    /// An empty directory to mount on
    pub mountpoint: PathBuf,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Let other users in too (non-root mounts need `user_allow_other` in /etc/fuse.conf)
    #[arg(long)]
    pub allow_other: bool,
}

#[derive(Debug, Args)]
pub struct SnapshotsArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Only the latest N snapshots of each host and path set
    #[arg(long, value_name = "N")]
    pub latest: Option<usize>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// An id prefix or `latest`
    pub snapshot: String,
    /// Directory (or file) in the snapshot to list; default the root
    pub path: Option<String>,
    /// Long format: type, mode, owner, size, time
    #[arg(short, long)]
    pub long: bool,
    /// Only the entries directly in PATH
    #[arg(long)]
    pub no_recursive: bool,
    #[command(flatten)]
    pub filter: FilterArgs,
}

#[derive(Debug, Args)]
pub struct FindArgs {
    /// Glob pattern matched against names (or paths, when it contains '/')
    pub pattern: String,
    /// Search only these snapshots (id prefixes or `latest`; default all)
    #[arg(short, long = "snapshot", value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
    #[command(flatten)]
    pub filter: FilterArgs,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The older snapshot
    pub first: String,
    /// The newer snapshot
    pub second: String,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Snapshots to count (default all)
    pub snapshots: Vec<String>,
    #[command(flatten)]
    pub filter: FilterArgs,
}

#[derive(Debug, Args)]
pub struct TagArgs {
    /// Snapshots to change (id prefixes or `latest`; default all that match the filter)
    pub snapshots: Vec<String>,
    /// Add this tag (repeatable)
    #[arg(long = "add", value_name = "TAG")]
    pub add: Vec<String>,
    /// Remove this tag (repeatable)
    #[arg(long = "remove", value_name = "TAG")]
    pub remove: Vec<String>,
    /// Replace all tags with these (repeatable)
    #[arg(long = "set", value_name = "TAG")]
    pub set: Vec<String>,
    #[command(flatten)]
    pub filter: FilterArgs,
}

#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// Remove exactly these snapshots (instead of applying a policy)
    pub snapshots: Vec<String>,
    /// Keep the N newest snapshots
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    pub keep_last: u32,
    /// Keep the newest snapshot of each of the N most recent hours
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    pub keep_hourly: u32,
    /// Keep the newest snapshot of each of the N most recent days
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    pub keep_daily: u32,
    /// Keep the newest snapshot of each of the N most recent ISO weeks
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    pub keep_weekly: u32,
    /// Keep the newest snapshot of each of the N most recent months
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    pub keep_monthly: u32,
    /// Keep the newest snapshot of each of the N most recent years
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    pub keep_yearly: u32,
    /// Keep every snapshot within DURATION of the newest (e.g. 30d, 1y6m)
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,
    /// Keep the newest snapshot of each hour within DURATION of the newest
    #[arg(long, value_name = "DURATION")]
    pub keep_within_hourly: Option<String>,
    /// Keep the newest snapshot of each day within DURATION of the newest
    #[arg(long, value_name = "DURATION")]
    pub keep_within_daily: Option<String>,
    /// Keep the newest snapshot of each week within DURATION of the newest
    #[arg(long, value_name = "DURATION")]
    pub keep_within_weekly: Option<String>,
    /// Keep the newest snapshot of each month within DURATION of the newest
    #[arg(long, value_name = "DURATION")]
    pub keep_within_monthly: Option<String>,
    /// Keep the newest snapshot of each year within DURATION of the newest
    #[arg(long, value_name = "DURATION")]
    pub keep_within_yearly: Option<String>,
    /// Keep every snapshot with these tags (repeatable; comma-separated tags must all be present)
    #[arg(long, value_name = "TAG[,TAG]")]
    pub keep_tag: Vec<String>,
    /// Judge snapshots in groups by these fields: any of host, paths, tags; empty for one group
    #[arg(long, value_name = "FIELDS", default_value = "host,paths")]
    pub group_by: String,
    /// Refuse (and remove nothing) if any group would keep fewer than N snapshots
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    pub min_keep: usize,
    /// Show what would be kept and removed, and why; remove nothing
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Prune afterwards (with --dry-run: also show what prune would do now,
    /// before anything is removed)
    #[arg(long)]
    pub prune: bool,
    #[command(flatten)]
    pub prune_tuning: PruneTuning,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Also apply the policy to point-in-time recovery snapshots (tags pg-wal, pg-base), which can break the WAL chain; `cairn pg forget` keeps it whole
    #[arg(long)]
    pub include_pitr: bool,
}

/// How prune decides and how long it waits.
#[derive(Debug, Args, Clone)]
pub struct PruneTuning {
    /// Unused data tolerated in packs that stay, before they are repacked:
    /// a percentage of their size (5%), a size (2GiB) or `unlimited`
    #[arg(long, value_name = "LIMIT", default_value = "5%", value_parser = parse_unused_limit)]
    pub max_unused: cairn_repo::UnusedLimit,
    /// Copy at most this much used data when repacking (e.g. 10GiB)
    #[arg(long, value_name = "SIZE", value_parser = cairn::units::parse_size)]
    pub max_repack_size: Option<u64>,
    /// How long marked packs wait before a later prune deletes them: at
    /// least 1h; longer than your longest backup (s, m, h, d; e.g. 24h)
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = cairn::units::parse_duration)]
    pub grace: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Show what would be marked, repacked and deleted; change nothing
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub tuning: PruneTuning,
}

#[derive(Debug, Subcommand)]
pub enum RepairCommand {
    /// Rebuild the index from the pack headers (lost or damaged index files)
    Index,
    /// Write copies of snapshots without the entries whose data is lost
    Snapshots {
        /// Snapshots to repair (default all that match the filter)
        snapshots: Vec<String>,
        /// Show what would be removed, write nothing
        #[arg(short = 'n', long)]
        dry_run: bool,
        #[command(flatten)]
        filter: FilterArgs,
    },
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Also download every pack and verify every blob
    #[arg(long)]
    pub read_data: bool,
    /// Download and verify only a subset: n/m (group n of m, deterministic),
    /// P% (random packs) or a size such as 500MiB (random packs up to it)
    #[arg(long, value_name = "SUBSET", conflicts_with = "read_data", value_parser = parse_subset)]
    pub read_data_subset: Option<cairn_repo::CheckSubset>,
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    /// An id prefix or `latest`
    pub snapshot: String,
    /// The file (or directory, written as tar) in the snapshot
    pub path: String,
    #[command(flatten)]
    pub filter: FilterArgs,
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
    #[arg(long, value_name = "LEVEL", default_value_t = 1, allow_negative_numbers = true)]
    pub compression: i32,
    /// Target pack size
    #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = parse_size_u32)]
    pub pack_size: u32,
    #[command(flatten)]
    pub kdf: KdfArgs,
    /// Generate a random password into FILE (new, mode 0600) instead of
    /// asking for one; its key opens without Argon2id
    #[arg(long, value_name = "FILE")]
    pub generate_password: Option<PathBuf>,
    /// Share this repository's master secret and chunker, so `copy` from it
    /// moves packs verbatim (see README: copy and offsite)
    #[arg(long, value_name = "LOCATION")]
    pub from_repo: Option<String>,
    #[command(flatten)]
    pub from: FromPasswordArgs,
}

/// The password of the other repository (default: the same as this one's).
#[derive(Debug, Args, Clone, Default)]
pub struct FromPasswordArgs {
    /// Read the other repository's password from FILE
    #[arg(long, value_name = "FILE")]
    pub from_password_file: Option<PathBuf>,
    /// Run CMD for the other repository's password
    #[arg(long, value_name = "CMD")]
    pub from_password_command: Option<String>,
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The repository to copy from
    #[arg(long, value_name = "LOCATION")]
    pub from_repo: String,
    #[command(flatten)]
    pub from: FromPasswordArgs,
    /// Snapshots to copy (default all that match the filter)
    pub snapshots: Vec<String>,
    #[command(flatten)]
    pub filter: FilterArgs,
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
    #[arg(long, value_name = "FILE", conflicts_with = "generate_password")]
    pub new_password_file: Option<PathBuf>,
    /// Generate a random password into FILE (new, mode 0600) and use it;
    /// its key opens without Argon2id
    #[arg(long, value_name = "FILE")]
    pub generate_password: Option<PathBuf>,
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
    /// A snapshot: an id (or a unique prefix) or `latest`
    Snapshot { id: String },
    /// A pack's header
    Pack { id: String },
}

// PostgreSQL (`cairn pg ...`).

/// PostgreSQL subcommands.
#[derive(Debug, Subcommand)]
pub enum PgCommand {
    /// Back up a database: a consistent snapshot, tables copied in parallel
    Backup(PgBackupArgs),
    /// Restore a database snapshot into a database
    Restore(PgRestoreArgs),
    /// Restore into a temporary database, compare row counts, run checks, drop it
    Drill(PgDrillArgs),
    /// A physical base backup of a cluster, for point-in-time recovery with the WAL that wal-push archives
    BaseBackup(crate::commands::pg_base::PgBaseBackupArgs),
    /// archive_command: archive a WAL file (%p) in a batch; exit 0 once it is in the repository
    WalPush(PgWalPushArgs),
    /// restore_command: fetch a WAL file (%f) into %p; exit 0 found, 1 absent, 126 on any other error
    WalGet(PgWalGetArgs),
    /// Point-in-time recovery status: per cluster and timeline, the recoverable windows, gaps, last push and RPO
    PitrStatus(PgPitrStatusArgs),
    /// Check the archived WAL: continuity, timeline histories, system ids, duplicates (--read-data: read it back)
    Check(PgCheckArgs),
    /// Retention for point-in-time recovery: base backups by policy, and the WAL they need (plus a window)
    Forget(PgForgetArgs),
}

#[derive(Debug, Args)]
pub struct PgWalPushArgs {
    /// The WAL file to archive (archive_command's %p, relative to the data directory)
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// The spool directory shared with the background pusher [default: cairn_spool next to the WAL file]
    #[arg(long, value_name = "DIR")]
    pub spool: Option<PathBuf>,
    /// The cluster's data directory [default: the parent of the WAL file's directory]
    #[arg(long, value_name = "DIR")]
    pub pgdata: Option<PathBuf>,
    /// Fail (PostgreSQL retries) if the file is not archived within SECS
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub timeout: u64,
    /// Most WAL files per snapshot
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub batch_files: usize,
    /// Most bytes per snapshot (held in memory)
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = parse_size)]
    pub batch_size: u64,
    /// The pusher exits after SECS with nothing to push
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub idle_exit: u64,
    /// Run as the background pusher (started by wal-push itself)
    #[arg(long, hide = true)]
    pub pusher: bool,
}

#[derive(Debug, Args)]
pub struct PgWalGetArgs {
    /// The WAL file's name (restore_command's %f)
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Where to write it (restore_command's %p)
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// Fetch this many following segments into the spool along with it
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub prefetch: usize,
    /// Where prefetched files wait [default: cairn_spool next to PATH]
    #[arg(long, value_name = "DIR")]
    pub spool: Option<PathBuf>,
    /// The cluster whose WAL to read [default: the one in the data directory's pg_control, else the repository's only one]
    #[arg(long, value_name = "ID")]
    pub system_identifier: Option<u64>,
    /// Tries before giving up on a repository error (then exit 126, so that recovery stops instead of ending early)
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub retries: u32,
    /// Internal: run as the background prefetcher that an earlier call started
    #[arg(long, hide = true, env = "CAIRN_WAL_PREFETCHER")]
    pub prefetch_only: bool,
}

#[derive(Debug, Args)]
pub struct PgPitrStatusArgs {
    /// Only this cluster (system identifier)
    #[arg(long, value_name = "ID")]
    pub system_identifier: Option<u64>,
}

#[derive(Debug, Args)]
pub struct PgCheckArgs {
    /// Also read every archived WAL file back and check its hash and header
    #[arg(long)]
    pub read_data: bool,
}

#[derive(Debug, Args)]
pub struct PgForgetArgs {
    /// Keep the N newest base backups (per cluster)
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    pub keep_last: u32,
    /// Keep the newest base backup of each of the N most recent days
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    pub keep_daily: u32,
    /// Keep the newest base backup of each of the N most recent ISO weeks
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    pub keep_weekly: u32,
    /// Keep the newest base backup of each of the N most recent months
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    pub keep_monthly: u32,
    /// Keep every base backup within DURATION of the newest (e.g. 30d)
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,
    /// Also keep all WAL archived within DURATION of now (e.g. 7d), whatever the base backups
    #[arg(long, value_name = "DURATION", value_parser = cairn::units::parse_duration)]
    pub wal_window: Option<std::time::Duration>,
    /// Show what would be kept and removed, and why; remove nothing
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Prune afterwards
    #[arg(long)]
    pub prune: bool,
    #[command(flatten)]
    pub prune_tuning: PruneTuning,
}

/// Where the server is and where its client programs are.
#[derive(Debug, Args, Clone)]
pub struct PgConnArgs {
    /// Directory of pg_dump and pg_restore [default: the newest /usr/lib/postgresql/N/bin, then PATH]
    #[arg(long, env = "CAIRN_PG_BINDIR", value_name = "DIR")]
    pub pg_bindir: Option<PathBuf>,
    /// Loading or copying connections at once
    #[arg(short = 'j', long, default_value_t = 2, value_name = "N")]
    pub jobs: usize,
}

#[derive(Debug, Args)]
pub struct PgBackupArgs {
    /// The database: a URL (postgresql://user@host/db), key=value pairs ("host=/run/postgresql dbname=app") or a name [default: PGHOST, PGPORT, PGUSER, PGDATABASE, ...]
    #[arg(short = 'd', long, value_name = "CONNINFO|URL")]
    pub dbname: Option<String>,
    #[command(flatten)]
    pub conn: PgConnArgs,
    /// Only tables (and sequences, views) matching PATTERN, as pg_dump -t (repeatable)
    #[arg(short = 't', long = "table", value_name = "PATTERN")]
    pub tables: Vec<String>,
    /// Leave out tables matching PATTERN, definition and data (repeatable)
    #[arg(short = 'T', long = "exclude-table", value_name = "PATTERN")]
    pub exclude_tables: Vec<String>,
    /// Keep the definition of tables matching PATTERN but not their rows (repeatable)
    #[arg(long = "exclude-table-data", value_name = "PATTERN")]
    pub exclude_table_data: Vec<String>,
    /// Add a tag (besides `pg`; repeatable, or comma-separated)
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Host name to record [default: this machine's]
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Create the repository if it does not exist
    #[arg(long)]
    pub init: bool,
    /// Every database of the server (not template0/template1) plus the globals (roles, tablespaces) from pg_dumpall --globals-only; --dbname is the maintenance database [default: postgres]
    #[arg(long, conflicts_with_all = ["tables", "exclude_tables", "exclude_table_data"])]
    pub all_databases: bool,
    /// With --all-databases: leave role passwords out of the globals (pg_dumpall --no-role-passwords; needed when not a superuser)
    #[arg(long, requires = "all_databases")]
    pub no_role_passwords: bool,
    /// The order rows are copied in: `key` sorts tables that have a primary key (or a unique index over NOT NULL columns) by it, which keeps the next day's files aligned after updates and VACUUM; `physical` is heap order, as pg_dump
    #[arg(long, value_enum, value_name = "ORDER", default_value = "physical")]
    pub row_order: PgRowOrder,
    /// With --all-databases: leave out databases matching PATTERN (`*`, `?`; as --table without a schema; repeatable)
    #[arg(long = "exclude-database", value_name = "PATTERN", requires = "all_databases")]
    pub exclude_databases: Vec<String>,
}

/// `--row-order`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PgRowOrder {
    /// By the table's key when it has one
    Key,
    /// Heap order
    Physical,
}

#[derive(Debug, Args)]
pub struct PgRestoreArgs {
    /// The snapshot: an id (or unique prefix) or `latest` (of the PostgreSQL snapshots passing the filters)
    #[arg(default_value = "latest", value_name = "SNAPSHOT")]
    pub snapshot: String,
    /// The target database (URL, key=value pairs or a name); with --create, the one to create. For an --all-databases snapshot: the target server's maintenance database (each database is restored under its own name)
    #[arg(short = 'd', long, value_name = "CONNINFO|URL", required_unless_present = "pitr_target")]
    pub dbname: Option<String>,
    /// --all-databases snapshots: restore only this database (created if missing)
    #[arg(long, value_name = "NAME")]
    pub only_database: Option<String>,
    /// --all-databases snapshots: do not replay the globals (roles, tablespaces)
    #[arg(long)]
    pub no_globals: bool,
    /// Create the target database (from template0, with the source's encoding)
    #[arg(short = 'C', long)]
    pub create: bool,
    /// Drop the snapshot's objects in the target before recreating them
    #[arg(short = 'c', long)]
    pub clean: bool,
    /// Only these tables, definition and data, like pg_restore -t (repeatable)
    #[arg(short = 't', long = "table", value_name = "PATTERN")]
    pub tables: Vec<String>,
    /// Do not restore object owners: everything belongs to the restoring role
    #[arg(short = 'O', long)]
    pub no_owner: bool,
    #[command(flatten)]
    pub conn: PgConnArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub pitr_target: crate::commands::pg_base::PgPitrTargetArgs,
    #[command(flatten)]
    pub pitr: crate::commands::pg_base::PgPitrRestoreArgs,
}

#[derive(Debug, Args)]
pub struct PgDrillArgs {
    /// The snapshot: an id (or unique prefix) or `latest`
    #[arg(default_value = "latest", value_name = "SNAPSHOT")]
    pub snapshot: String,
    /// A database of the server to drill on, with a role that may create databases
    #[arg(short = 'd', long, value_name = "CONNINFO|URL", required_unless_present = "pitr")]
    pub dbname: Option<String>,
    /// A query that must return true, or at least one row (repeatable; run in every drilled database)
    #[arg(long = "check", value_name = "SQL")]
    pub checks: Vec<String>,
    /// --all-databases snapshots: drill only this database [default: every one]
    #[arg(long, value_name = "NAME")]
    pub only_database: Option<String>,
    /// Stop with the list of roles the snapshot needs that the server lacks, instead of creating them NOLOGIN for the drill (and dropping them after)
    #[arg(long)]
    pub no_create_roles: bool,
    #[command(flatten)]
    pub conn: PgConnArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub pitr: crate::commands::pg_base::PgPitrDrillArgs,
    #[command(flatten)]
    pub pitr_target: crate::commands::pg_base::PgPitrTargetArgs,
}

/// `--read-data-subset`: a malformed value is a usage error (exit 2).
fn parse_subset(text: &str) -> Result<cairn_repo::CheckSubset, String> {
    cairn_repo::CheckSubset::parse(text, |s| parse_size(s).ok()).map_err(|e| e.to_string())
}

/// `--max-unused`, likewise.
fn parse_unused_limit(text: &str) -> Result<cairn_repo::UnusedLimit, String> {
    cairn_repo::UnusedLimit::parse(text, |s| parse_size(s).ok()).map_err(|e| e.to_string())
}

/// `--tag` values: repeatable and comma-separated, trimmed, sorted, unique.
pub fn split_tags(tags: &[String]) -> Vec<String> {
    let mut out: Vec<String> =
        tags.iter().flat_map(|t| t.split(',')).map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()).collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
