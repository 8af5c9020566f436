//! Storage: one [`Backend`] over `object_store` for every location.
//!
//! A location string picks the store:
//!
//! | location | store |
//! | --- | --- |
//! | `/path`, `./path`, `local:/path` | a local directory (files are fsynced before they appear) |
//! | `s3:BUCKET[/PREFIX]` | S3 or any S3-compatible service; endpoint, region and credentials from the `AWS_*` variables or [`S3Options`] |
//! | `s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX]` | an S3-compatible endpoint given inline (path-style requests) |
//! | `gs:BUCKET[/PREFIX]` | Google Cloud Storage, credentials from the `GOOGLE_*` variables |
//! | `azure:CONTAINER[/PREFIX]` | Azure Blob Storage, account and key from the `AZURE_*` variables |
//! | `sftp:[USER@]HOST[:PORT]:/PATH`, `sftp:HOST:RELATIVE`, `sftp://[USER@]HOST[:PORT]//PATH` | a directory on an SFTP server, reached through the user's own `ssh` (or [`SftpOptions::command`]); see the `sftp` module |
//! | `rclone:REMOTE:PATH`, `rclone:/PATH` | anything rclone reaches (Google Drive, OneDrive, Dropbox, …), through a `rclone serve restic` that cairn starts (see [`RcloneOptions`]); no conditional create, see the `rclone` module |
//! | `memory:` | an in-process store, for tests and embedding |
//!
//! Every write uses `PutMode::Create` (nothing is overwritten in place);
//! over SFTP that is a temporary file plus a hard link that refuses an
//! existing name, checked by a probe before the first write. rclone has no
//! conditional create, so `rclone:` writes check first, then write, and
//! compare an existing content-addressed object with their own bytes.
//! Transient failures are retried twice over: object_store's HTTP clients retry
//! 5xx, 429, timeouts and connection errors with exponential backoff, and this
//! layer retries what still looks transient (see [`RetryPolicy`]) for every
//! store, local ones included. Concurrency is bounded per backend.

use std::ops::Range;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::limit::LimitStore;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
};

use crate::error::{Error, Result, StorageError};
use crate::format::id::Id;
use crate::storage::rclone::{RcloneStore, location::RcloneLocation};
use crate::storage::sftp::{self, SftpStore, location::SftpLocation};

/// The kinds of objects in a repository and the directories they live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// `config`
    Config,
    /// `keys/<id>`
    Key,
    /// `index/<id>`
    Index,
    /// `snapshots/<id>`
    Snapshot,
    /// `data/<2 hex>/<id>`
    Pack,
    /// `trash/<id>`: prune's deletion records
    Trash,
}

impl FileKind {
    /// Directory name (empty for `config`).
    pub fn dir(self) -> &'static str {
        match self {
            FileKind::Config => "",
            FileKind::Key => "keys",
            FileKind::Index => "index",
            FileKind::Snapshot => "snapshots",
            FileKind::Pack => "data",
            FileKind::Trash => "trash",
        }
    }

    /// The object's path relative to the repository root.
    pub fn relative_path(self, id: &Id) -> String {
        match self {
            FileKind::Config => "config".into(),
            FileKind::Pack => format!("data/{}/{}", &id.to_hex()[..2], id),
            other => format!("{}/{}", other.dir(), id),
        }
    }
}

/// One object found by [`Backend::list_objects`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedObject {
    /// The id in its name.
    pub id: Id,
    /// Its size in bytes.
    pub size: u64,
    /// When the store last wrote it, in seconds since the Unix epoch.
    pub modified_unix: i64,
}

/// A temporary file of an upload that never finished.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UploadLeftover {
    /// Its path relative to the repository root, e.g. `data/3f/3fa2…#1`.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written, in seconds since the Unix epoch.
    pub modified_unix: i64,
}

/// How many times, and how patiently, to retry transient failures.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts after the first.
    pub max_retries: u32,
    /// First delay; doubles per attempt, with full jitter.
    pub initial_backoff: Duration,
    /// Longest delay.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 4,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// S3 settings that override the `AWS_*` environment.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// Endpoint URL, e.g. `https://s3.us-west-004.backblazeb2.com` or `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    /// Region (default `us-east-1` when neither this nor `AWS_REGION` is set).
    pub region: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`); default true for custom endpoints.
    pub path_style: Option<bool>,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
}

/// SFTP settings (`sftp:` locations).
#[derive(Debug, Clone, Default)]
pub struct SftpOptions {
    /// The command that starts an SFTP session on its stdin and stdout,
    /// replacing `ssh [-p PORT] [-l USER] HOST -s sftp` (like restic's
    /// `sftp.command`), e.g. `ssh -F ~/.ssh/nas_config nas -s sftp`. Split
    /// into words like a shell would (quotes, backslashes), but not run
    /// through one. Default: the `CAIRN_SFTP_COMMAND` variable, else ssh.
    pub command: Option<String>,
    /// How many SFTP sessions (ssh processes) to spread requests over
    /// (default 5).
    pub connections: Option<usize>,
}

/// rclone settings (`rclone:` locations).
#[derive(Debug, Clone, Default)]
pub struct RcloneOptions {
    /// The rclone executable (like restic's `rclone.program`). Default:
    /// the `CAIRN_RCLONE_PROGRAM` variable, else `rclone` from `PATH`.
    pub program: Option<String>,
    /// Extra arguments for `rclone serve restic`, split like a shell would
    /// (e.g. `--config /etc/cairn/rclone.conf --drive-chunk-size 64M`).
    /// Unlike restic's `rclone.args` they are added to cairn's own
    /// (`serve restic --addr 127.0.0.1:0 --cache-objects=false`), which
    /// cairn needs. Default: the `CAIRN_RCLONE_ARGS` variable.
    pub args: Option<String>,
}

/// Options for [`Backend::open`].
#[derive(Debug, Clone, Default)]
pub struct BackendOptions {
    /// Create a missing local directory (for `init`).
    pub create: bool,
    /// Most requests in flight (default: 32 local, 16 remote).
    pub connections: Option<usize>,
    /// S3 overrides.
    pub s3: S3Options,
    /// SFTP settings.
    pub sftp: SftpOptions,
    /// rclone settings.
    pub rclone: RcloneOptions,
    /// Retry policy of the outer retry layer.
    pub retry: RetryPolicy,
}

/// Which service a backend talks to (for messages and capability checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// A local directory.
    Local,
    /// S3 or an S3-compatible service.
    S3,
    /// Google Cloud Storage.
    Gcs,
    /// Azure Blob Storage.
    Azure,
    /// A directory on an SFTP server.
    Sftp,
    /// A remote of rclone, through `rclone serve restic`.
    Rclone,
    /// In-process memory.
    Memory,
    /// A store given by an embedding program.
    Custom,
}

impl BackendKind {
    fn credentials_hint(self) -> &'static str {
        match self {
            BackendKind::S3 => "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY",
            BackendKind::Gcs => "GOOGLE_SERVICE_ACCOUNT / GOOGLE_APPLICATION_CREDENTIALS",
            BackendKind::Azure => "AZURE_STORAGE_ACCOUNT_NAME / AZURE_STORAGE_ACCOUNT_KEY",
            BackendKind::Local => "file permissions of the repository directory",
            BackendKind::Sftp => {
                "the ssh login: key, agent, known_hosts and ~/.ssh/config entry for the host; \
                 try `ssh HOST` by hand, or set --sftp-command"
            }
            BackendKind::Rclone => {
                "the rclone remote's configuration: try `rclone lsd REMOTE:` by hand, or `rclone config reconnect \
                 REMOTE:` for an expired login; with --append-only in --rclone-args rclone refuses every delete \
                 and overwrite (forget, prune)"
            }
            BackendKind::Memory | BackendKind::Custom => "the store's configuration",
        }
    }
}

/// What a create-only write found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The object was created.
    Created,
    /// An object already existed at that name (content-addressed names make
    /// this the same content).
    AlreadyExists,
}

/// A repository's storage location.
#[derive(Clone)]
pub struct Backend {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    location: String,
    kind: BackendKind,
    retry: RetryPolicy,
    /// The directory of a local repository, for blocking reads that skip
    /// the async store (and its hop to another thread per read).
    local_dir: Option<std::path::PathBuf>,
    /// Set, with the reason, when the store found it cannot create objects
    /// atomically (an SFTP server that fails the probe, rclone).
    create_fallback: Option<Arc<OnceLock<String>>>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend").field("location", &self.inner.location).finish()
    }
}

fn invalid(location: &str, reason: impl Into<String>) -> Error {
    Error::InvalidLocation { location: location.into(), reason: reason.into() }
}

/// Splits `BUCKET[/PREFIX]`.
fn bucket_and_prefix<'a>(location: &str, rest: &'a str) -> Result<(&'a str, &'a str)> {
    let rest = rest.trim_start_matches('/');
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(invalid(location, "no bucket or container name"));
    }
    Ok((bucket, prefix.trim_matches('/')))
}

fn client_options(allow_http: bool) -> ClientOptions {
    ClientOptions::new()
        .with_allow_http(allow_http)
        .with_connect_timeout(Duration::from_secs(10))
        .with_timeout(Duration::from_secs(300))
}

fn http_retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            base: 2.0,
        },
        max_retries: 5,
        retry_timeout: Duration::from_secs(120),
    }
}

impl Backend {
    /// Opens the location described by `location` (see the module docs).
    pub fn open(location: &str, options: &BackendOptions) -> Result<Backend> {
        let mut local_dir = None;
        let mut create_fallback = None;
        let (kind, store, prefix, shown): (BackendKind, Arc<dyn ObjectStore>, String, String) = if let Some(rest) =
            location.strip_prefix("s3:")
        {
            let (store, prefix, shown) = Self::s3(location, rest, &options.s3)?;
            (BackendKind::S3, store, prefix, shown)
        } else if let Some(rest) = location.strip_prefix("gs:") {
            let (bucket, prefix) = bucket_and_prefix(location, rest)?;
            let store = GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(bucket)
                .with_retry(http_retry())
                .with_client_options(client_options(false))
                .build()
                .map_err(|e| invalid(location, e.to_string()))?;
            (BackendKind::Gcs, Arc::new(store), prefix.into(), location.into())
        } else if let Some(rest) = location.strip_prefix("azure:") {
            let (container, prefix) = bucket_and_prefix(location, rest)?;
            let store = MicrosoftAzureBuilder::from_env()
                .with_container_name(container)
                .with_retry(http_retry())
                .with_client_options(client_options(
                    std::env::var("AZURE_ALLOW_HTTP").is_ok_and(|v| v == "true")
                        || std::env::var("AZURE_STORAGE_ENDPOINT").is_ok_and(|v| v.starts_with("http://")),
                ))
                .build()
                .map_err(|e| invalid(location, e.to_string()))?;
            let shown = match std::env::var("AZURE_STORAGE_ENDPOINT") {
                Ok(endpoint) => format!("{location} (at {endpoint})"),
                Err(_) => location.into(),
            };
            (BackendKind::Azure, Arc::new(store), prefix.into(), shown)
        } else if let Some(rest) = location.strip_prefix("sftp:") {
            let parsed = SftpLocation::parse(rest).map_err(|reason| invalid(location, reason))?;
            let command = match options.sftp.command.clone().or_else(|| std::env::var("CAIRN_SFTP_COMMAND").ok()) {
                Some(c) if !c.trim().is_empty() => {
                    sftp::location::split_command(&c).map_err(|reason| invalid(location, reason))?
                }
                _ => parsed.ssh_command(),
            };
            let connections = options.sftp.connections.unwrap_or(sftp::DEFAULT_CONNECTIONS).max(1);
            let store = SftpStore::new(&parsed, command, connections);
            create_fallback = Some(store.fallback_reason());
            (BackendKind::Sftp, Arc::new(store), String::new(), parsed.to_string())
        } else if let Some(rest) = location.strip_prefix("rclone:") {
            let parsed = RcloneLocation::parse(rest).map_err(|reason| invalid(location, reason))?;
            let program = options
                .rclone
                .program
                .clone()
                .or_else(|| std::env::var("CAIRN_RCLONE_PROGRAM").ok())
                .filter(|p| !p.trim().is_empty())
                .unwrap_or_else(|| "rclone".into());
            let args = match options.rclone.args.clone().or_else(|| std::env::var("CAIRN_RCLONE_ARGS").ok()) {
                Some(a) => sftp::location::split_command(&a).map_err(|reason| invalid(location, reason))?,
                None => Vec::new(),
            };
            let store = RcloneStore::new(&parsed, program, args).map_err(|reason| invalid(location, reason))?;
            create_fallback = Some(store.fallback_reason());
            (BackendKind::Rclone, Arc::new(store), String::new(), parsed.to_string())
        } else if location == "memory:" || location.starts_with("memory:") {
            (BackendKind::Memory, Arc::new(InMemory::new()), String::new(), location.into())
        } else {
            if let Some(scheme) = unknown_scheme(location) {
                return Err(invalid(location, scheme_hint(scheme)));
            }
            let path = location.strip_prefix("local:").unwrap_or(location);
            if path.is_empty() {
                return Err(invalid(location, "empty path"));
            }
            let dir = std::path::Path::new(path);
            if !dir.exists() {
                if !options.create {
                    return Err(Error::RepositoryNotFound { location: location.into() });
                }
                std::fs::create_dir_all(dir)
                    .map_err(|source| Error::Io { context: format!("cannot create {}", dir.display()), source })?;
            }
            if !dir.is_dir() {
                return Err(invalid(location, "not a directory"));
            }
            let store =
                LocalFileSystem::new_with_prefix(dir).map_err(|e| invalid(location, e.to_string()))?.with_fsync(true);
            local_dir = Some(dir.to_path_buf());
            (BackendKind::Local, Arc::new(store), String::new(), location.into())
        };
        let connections = options.connections.unwrap_or(match kind {
            BackendKind::Local | BackendKind::Memory => 32,
            _ => 16,
        });
        let store: Arc<dyn ObjectStore> = Arc::new(LimitStore::new(store, connections.max(1)));
        Ok(Backend {
            inner: Arc::new(Inner {
                store,
                prefix,
                location: shown,
                kind,
                retry: options.retry,
                local_dir,
                create_fallback,
            }),
        })
    }

    fn s3(location: &str, rest: &str, opts: &S3Options) -> Result<(Arc<dyn ObjectStore>, String, String)> {
        let (builder, prefix, shown) = Self::s3_builder(location, rest, opts)?;
        let store = builder.build().map_err(|e| invalid(location, e.to_string()))?;
        Ok((Arc::new(store), prefix, shown))
    }

    /// The S3 client settings of `s3:REST` (environment, then `opts`),
    /// the prefix, and the location as shown. The bucket source builds its
    /// own signed requests from the same settings.
    pub(crate) fn s3_builder(
        location: &str,
        rest: &str,
        opts: &S3Options,
    ) -> Result<(AmazonS3Builder, String, String)> {
        let mut builder = AmazonS3Builder::from_env();
        let mut endpoint = opts.endpoint.clone();
        let rest = if let Some(after) = rest.strip_prefix("http://").or_else(|| rest.strip_prefix("https://")) {
            let scheme = if rest.starts_with("https://") { "https" } else { "http" };
            let (host, path) =
                after.split_once('/').ok_or_else(|| invalid(location, "no bucket after the endpoint"))?;
            endpoint = Some(format!("{scheme}://{host}"));
            path.to_string()
        } else {
            rest.to_string()
        };
        let (bucket, prefix) = bucket_and_prefix(location, &rest)?;
        let env_endpoint = std::env::var("AWS_ENDPOINT_URL").or_else(|_| std::env::var("AWS_ENDPOINT")).ok();
        let effective_endpoint = endpoint.clone().or(env_endpoint);
        if let Some(e) = &endpoint {
            builder = builder.with_endpoint(e);
        }
        let custom = effective_endpoint.is_some();
        if let Some(e) = &effective_endpoint {
            if e.starts_with("http://") {
                builder = builder.with_allow_http(true);
            }
        }
        let region = opts
            .region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .unwrap_or_else(|| "us-east-1".into());
        builder = builder
            .with_region(region)
            .with_bucket_name(bucket)
            .with_virtual_hosted_style_request(!opts.path_style.unwrap_or(custom))
            .with_retry(http_retry())
            .with_client_options(client_options(
                effective_endpoint.as_deref().is_some_and(|e| e.starts_with("http://")),
            ));
        if let Some(k) = &opts.access_key_id {
            builder = builder.with_access_key_id(k);
        }
        if let Some(k) = &opts.secret_access_key {
            builder = builder.with_secret_access_key(k);
        }
        let shown = match &effective_endpoint {
            Some(e) => format!("s3:{e}/{bucket}{}{prefix}", if prefix.is_empty() { "" } else { "/" }),
            None => location.to_string(),
        };
        Ok((builder, prefix.to_string(), shown))
    }

    /// A fresh in-process store.
    pub fn memory() -> Backend {
        Self::from_store(Arc::new(InMemory::new()), "memory:", BackendKind::Memory)
    }

    /// Wraps any `ObjectStore` (an embedding program's own, or a test wrapper).
    pub fn from_store(store: Arc<dyn ObjectStore>, location: impl Into<String>, kind: BackendKind) -> Backend {
        Backend {
            inner: Arc::new(Inner {
                store,
                prefix: String::new(),
                location: location.into(),
                kind,
                retry: RetryPolicy::default(),
                local_dir: None,
                create_fallback: None,
            }),
        }
    }

    /// Replaces the retry policy.
    pub fn with_retry(self, retry: RetryPolicy) -> Backend {
        let inner = &self.inner;
        Backend {
            inner: Arc::new(Inner {
                store: inner.store.clone(),
                prefix: inner.prefix.clone(),
                location: inner.location.clone(),
                kind: inner.kind,
                retry,
                local_dir: inner.local_dir.clone(),
                create_fallback: inner.create_fallback.clone(),
            }),
        }
    }

    /// The location as shown to users.
    pub fn location(&self) -> &str {
        &self.inner.location
    }

    /// The kind of service.
    pub fn kind(&self) -> BackendKind {
        self.inner.kind
    }

    /// The directory of a local repository.
    pub fn local_dir(&self) -> Option<&std::path::Path> {
        self.inner.local_dir.as_deref()
    }

    /// Why this store cannot create objects atomically, once it found out
    /// (an SFTP server that failed the probe before the first write, e.g.
    /// `rclone serve sftp`; any `rclone:` location, from the start).
    /// Writes then check before they create
    /// (FORMAT.md §12.2), and a program may want to tell its user.
    pub fn create_fallback_reason(&self) -> Option<String> {
        self.inner.create_fallback.as_ref().and_then(|r| r.get().cloned())
    }

    fn path(&self, relative: &str) -> Path {
        if self.inner.prefix.is_empty() {
            Path::from(relative)
        } else {
            Path::from(format!("{}/{relative}", self.inner.prefix))
        }
    }

    /// The store under this location and the prefix of its objects (for
    /// the bucket source, which reads objects that are not a repository's).
    pub(crate) fn store_and_prefix(&self) -> (Arc<dyn ObjectStore>, &str) {
        (self.inner.store.clone(), &self.inner.prefix)
    }

    /// Maps an object_store error to a message that names the cause.
    pub(crate) fn map_error(&self, action: &str, object: &str, e: object_store::Error) -> Error {
        let location = self.inner.location.clone();
        match e {
            object_store::Error::NotFound { .. } => Error::ObjectNotFound { object: object.into(), location },
            object_store::Error::PermissionDenied { source, .. }
            | object_store::Error::Unauthenticated { source, .. } => Error::AccessDenied {
                location,
                detail: first_line(&source.to_string()),
                hint: self.inner.kind.credentials_hint(),
            },
            e if is_connect_error(&e) => Error::Unreachable { location, detail: root_cause(&e) },
            // Listing a missing bucket is not mapped to NotFound by object_store.
            e if chain(&e).any(|c| {
                let text = c.to_string();
                text.contains("NoSuchBucket") || text.contains("ContainerNotFound")
            }) =>
            {
                Error::BucketNotFound { location }
            }
            source => Error::Storage { location, action: format!("{action} {object}"), source: StorageError(source) },
        }
    }

    async fn retrying<T, F, Fut>(&self, action: &str, object: &str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = object_store::Result<T>>,
    {
        let policy = self.inner.retry;
        let mut attempt = 0;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if attempt < policy.max_retries && is_transient(&e) => {
                    let cap = policy.initial_backoff.saturating_mul(1 << attempt.min(16)).min(policy.max_backoff);
                    let delay = cap.mul_f64(rand::random::<f64>());
                    tracing::warn!("{action} {object} failed ({e}); retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(e) => return Err(self.map_error(action, object, e)),
            }
        }
    }

    /// Reads a whole object.
    pub async fn read(&self, kind: FileKind, id: &Id) -> Result<Bytes> {
        self.read_name(&kind.relative_path(id)).await
    }

    /// Reads `config`.
    pub async fn read_config(&self) -> Result<Bytes> {
        self.read_name("config").await
    }

    pub(crate) async fn read_name(&self, name: &str) -> Result<Bytes> {
        let path = self.path(name);
        self.retrying("reading", name, || async { self.inner.store.get(&path).await?.bytes().await }).await
    }

    /// [`read_range`](Backend::read_range) for blocking threads: a local
    /// repository is read directly with `pread`; other stores through
    /// `handle`.
    pub fn read_range_blocking(
        &self,
        handle: &tokio::runtime::Handle,
        kind: FileKind,
        id: &Id,
        range: Range<u64>,
    ) -> Result<Bytes> {
        if self.inner.local_dir.is_none() {
            return handle.block_on(self.read_range(kind, id, range));
        }
        let mut buf = Vec::new();
        self.read_range_into(handle, kind, id, range, &mut buf)?;
        Ok(Bytes::from(buf))
    }

    /// Like [`read_range_blocking`](Backend::read_range_blocking), into a
    /// buffer the caller reuses.
    pub fn read_range_into(
        &self,
        handle: &tokio::runtime::Handle,
        kind: FileKind,
        id: &Id,
        range: Range<u64>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let Some(dir) = &self.inner.local_dir else {
            let bytes = handle.block_on(self.read_range(kind, id, range))?;
            buf.clear();
            buf.extend_from_slice(&bytes);
            return Ok(());
        };
        let name = kind.relative_path(id);
        let short =
            |detail: String| Error::corrupt(name.clone(), crate::format::envelope::FormatError::Mismatch(detail));
        if range.start >= range.end {
            return Err(short(format!("empty read range {range:?}")));
        }
        let file = match std::fs::File::open(dir.join(&name)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::ObjectNotFound { object: name, location: self.inner.location.clone() });
            }
            Err(e) => return Err(Error::Io { context: format!("cannot open {name}"), source: e }),
        };
        buf.resize((range.end - range.start) as usize, 0);
        match file.read_exact_at(buf, range.start) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Err(short(format!("it is shorter than the range {range:?} read from it")))
            }
            Err(e) => Err(Error::Io { context: format!("cannot read {name}"), source: e }),
        }
    }

    /// Reads a byte range of an object.
    pub async fn read_range(&self, kind: FileKind, id: &Id, range: Range<u64>) -> Result<Bytes> {
        let name = kind.relative_path(id);
        let path = self.path(&name);
        if range.start >= range.end {
            return Err(Error::corrupt(
                name,
                crate::format::envelope::FormatError::Mismatch(format!("empty read range {range:?}")),
            ));
        }
        let expected = range.end - range.start;
        let bytes = match self.retrying("reading", &name, || self.inner.store.get_range(&path, range.clone())).await {
            // A range past the end: the object is shorter than the index or header says.
            Err(Error::Storage { source: StorageError(e @ object_store::Error::Generic { .. }), .. })
                if e.to_string().to_ascii_lowercase().contains("range") =>
            {
                return Err(Error::corrupt(
                    name,
                    crate::format::envelope::FormatError::Mismatch(format!(
                        "it is shorter than the range {range:?} read from it"
                    )),
                ));
            }
            other => other?,
        };
        if bytes.len() as u64 != expected {
            return Err(Error::corrupt(
                name,
                crate::format::envelope::FormatError::Mismatch(format!(
                    "a read of {expected} bytes returned {}",
                    bytes.len()
                )),
            ));
        }
        Ok(bytes)
    }

    /// Writes a new object from parts, never replacing an existing one.
    pub async fn write_new(&self, kind: FileKind, id: &Id, parts: Vec<Bytes>) -> Result<WriteOutcome> {
        self.create(&kind.relative_path(id), parts).await
    }

    /// Writes `config` unless one exists.
    pub async fn write_config(&self, bytes: Vec<u8>) -> Result<WriteOutcome> {
        self.create("config", vec![Bytes::from(bytes)]).await
    }

    /// Creates object `name` unless it exists (conditional create where
    /// the store has it).
    pub(crate) async fn create(&self, name: &str, parts: Vec<Bytes>) -> Result<WriteOutcome> {
        let path = self.path(name);
        let result = self
            .retrying("writing", name, || async {
                let payload = PutPayload::from_iter(parts.iter().cloned());
                let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
                match self.inner.store.put_opts(&path, payload, opts).await {
                    Ok(_) => Ok(WriteOutcome::Created),
                    Err(object_store::Error::AlreadyExists { .. }) => Ok(WriteOutcome::AlreadyExists),
                    Err(e) => Err(e),
                }
            })
            .await;
        match result {
            // Stores without conditional writes: check first, then write. Safe
            // for content-addressed objects; `config` creation races are
            // documented in FORMAT.md.
            Err(Error::Storage {
                source:
                    StorageError(object_store::Error::NotImplemented { .. } | object_store::Error::NotSupported { .. }),
                ..
            }) => {
                if self.exists_path(name).await? && !self.replaces_torn(name, &parts).await? {
                    return Ok(WriteOutcome::AlreadyExists);
                }
                self.retrying("writing", name, || {
                    self.inner.store.put(&path, PutPayload::from_iter(parts.iter().cloned()))
                })
                .await?;
                Ok(WriteOutcome::Created)
            }
            other => other,
        }
    }

    /// On a store without conditional create, whether an existing object
    /// `name` must be written again: it is content-addressed, our bytes
    /// hash to its id, and what is stored differs from them. Such a store
    /// may show an upload in progress, or one torn by a crash, under its
    /// final name (rclone does), so its presence (or its size) proves
    /// nothing about its content. Objects that are not content-addressed
    /// (`config`, `locks/prune`) are never replaced.
    async fn replaces_torn(&self, name: &str, parts: &[Bytes]) -> Result<bool> {
        let Some(id) = name.rsplit('/').next().and_then(|n| n.parse::<Id>().ok()) else { return Ok(false) };
        let ours: Vec<u8> = parts.concat();
        if Id::of_object(&ours) != id {
            return Ok(false);
        }
        let path = self.path(name);
        let stored = match self
            .retrying("checking", name, || async { self.inner.store.get(&path).await?.bytes().await })
            .await
        {
            Ok(stored) => stored,
            // Gone since the check (a writer's upload that failed): write it.
            Err(Error::ObjectNotFound { .. }) => return Ok(true),
            Err(e) => return Err(e),
        };
        if stored[..] == ours[..] {
            return Ok(false);
        }
        tracing::warn!(
            "{}: {name} is stored with other content ({} bytes, {} expected), probably an interrupted upload; \
             writing it again",
            self.inner.location,
            stored.len(),
            ours.len()
        );
        Ok(true)
    }

    async fn exists_path(&self, name: &str) -> Result<bool> {
        let path = self.path(name);
        match self.retrying("checking", name, || self.inner.store.head(&path)).await {
            Ok(_) => Ok(true),
            Err(Error::ObjectNotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether `config` exists.
    pub async fn config_exists(&self) -> Result<bool> {
        self.exists_path("config").await
    }

    /// The size of an object in bytes.
    pub async fn size(&self, kind: FileKind, id: &Id) -> Result<u64> {
        let name = kind.relative_path(id);
        let path = self.path(&name);
        Ok(self.retrying("checking", &name, || self.inner.store.head(&path)).await?.size)
    }

    /// Whether an object exists.
    pub async fn exists(&self, kind: FileKind, id: &Id) -> Result<bool> {
        self.exists_path(&kind.relative_path(id)).await
    }

    /// Deletes an object (prune and forget only). A missing object is not
    /// an error.
    pub async fn delete(&self, kind: FileKind, id: &Id) -> Result<()> {
        self.delete_name(&kind.relative_path(id)).await
    }

    /// Deletes object `name`; a missing object is not an error.
    pub(crate) async fn delete_name(&self, name: &str) -> Result<()> {
        let path = self.path(name);
        match self.retrying("deleting", name, || self.inner.store.delete(&path)).await {
            Ok(()) | Err(Error::ObjectNotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Lists the ids and sizes of all objects of a kind. Names that are not
    /// ids (temporary files of other tools) are skipped.
    pub async fn list(&self, kind: FileKind) -> Result<Vec<(Id, u64)>> {
        Ok(self.list_objects(kind).await?.into_iter().map(|o| (o.id, o.size)).collect())
    }

    /// Like [`list`](Backend::list), with each object's modification time
    /// as the store reports it.
    pub async fn list_objects(&self, kind: FileKind) -> Result<Vec<ListedObject>> {
        let dir = self.path(kind.dir());
        let name = format!("{}/", kind.dir());
        let metas: Vec<object_store::ObjectMeta> =
            self.retrying("listing", &name, || self.inner.store.list(Some(&dir)).try_collect()).await?;
        // Only exact `<dir>/<lowercase hex id>` names count (FORMAT.md §2).
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let id: Id = m.location.filename()?.parse().ok()?;
                (m.location == self.path(&kind.relative_path(&id))).then_some(ListedObject {
                    id,
                    size: m.size,
                    modified_unix: m.last_modified.timestamp(),
                })
            })
            .collect())
    }

    /// Temporary files of uploads that never finished: a local store and
    /// an SFTP one write `<name>#<n>` and link or rename it when complete,
    /// so a process killed mid-upload leaves it behind. Readers never see
    /// them (they are not object names); only prune removes them. Other
    /// stores write an object at once, or not at all: nothing to list there.
    pub async fn list_upload_leftovers(&self) -> Result<Vec<UploadLeftover>> {
        if self.inner.kind == BackendKind::Sftp {
            return self.list_remote_leftovers().await;
        }
        let Some(root) = &self.inner.local_dir else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        let mut dirs = vec![root.to_path_buf()];
        while let Some(dir) = dirs.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::Io { context: format!("cannot list {}", dir.display()), source: e }),
            };
            for entry in entries.flatten() {
                let Ok(meta) = entry.metadata() else { continue };
                if meta.is_dir() {
                    dirs.push(entry.path());
                    continue;
                }
                let name = entry.file_name();
                if !is_leftover_name(name.to_str().unwrap_or_default()) {
                    continue;
                }
                let modified_unix = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs() as i64);
                let path = entry.path();
                let relative = path.strip_prefix(root).unwrap_or(&path).display().to_string();
                out.push(UploadLeftover { path: relative, size: meta.len(), modified_unix });
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// [`list_upload_leftovers`](Backend::list_upload_leftovers) of a
    /// store that is listed through object_store (SFTP): one walk of the
    /// whole repository.
    async fn list_remote_leftovers(&self) -> Result<Vec<UploadLeftover>> {
        let root = if self.inner.prefix.is_empty() { None } else { Some(self.path("")) };
        let metas: Vec<object_store::ObjectMeta> =
            self.retrying("listing", "the repository", || self.inner.store.list(root.as_ref()).try_collect()).await?;
        let mut out: Vec<UploadLeftover> = metas
            .into_iter()
            .filter(|m| m.location.filename().is_some_and(is_leftover_name))
            .map(|m| {
                let path = m.location.as_ref();
                let relative = path.strip_prefix(&self.inner.prefix).unwrap_or(path).trim_start_matches('/');
                UploadLeftover { path: relative.to_owned(), size: m.size, modified_unix: m.last_modified.timestamp() }
            })
            .collect();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Removes an upload's leftover (see [`list_upload_leftovers`](Backend::list_upload_leftovers)).
    pub async fn delete_upload_leftover(&self, leftover: &UploadLeftover) -> Result<()> {
        if self.inner.kind == BackendKind::Sftp {
            // Path::parse keeps the '#' as it is (Path::from would escape it).
            let full = if self.inner.prefix.is_empty() {
                leftover.path.clone()
            } else {
                format!("{}/{}", self.inner.prefix, leftover.path)
            };
            let path = Path::parse(&full).map_err(|e| invalid(&self.inner.location, e.to_string()))?;
            return match self.retrying("deleting", &leftover.path, || self.inner.store.delete(&path)).await {
                Ok(()) | Err(Error::ObjectNotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            };
        }
        let Some(root) = &self.inner.local_dir else { return Ok(()) };
        let path = root.join(&leftover.path);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Io { context: format!("cannot remove {}", path.display()), source: e }),
        }
    }

    /// Lists the root of the location: fails with [`Error::BucketNotFound`],
    /// [`Error::AccessDenied`] or [`Error::Unreachable`] when the location
    /// itself is unusable. Used to explain a missing `config`.
    pub async fn probe(&self) -> Result<()> {
        let root = if self.inner.prefix.is_empty() { None } else { Some(self.path("")) };
        match self
            .retrying("listing", "the repository root", || self.inner.store.list_with_delimiter(root.as_ref()))
            .await
        {
            Ok(_) => Ok(()),
            Err(Error::ObjectNotFound { .. }) => Err(Error::BucketNotFound { location: self.inner.location.clone() }),
            Err(e) => Err(e),
        }
    }
}

/// Whether a file name is an upload's temporary file: `<id>#<digits>` or
/// `config#<digits>`.
fn is_leftover_name(name: &str) -> bool {
    let Some((object, suffix)) = name.split_once('#') else { return false };
    (object.parse::<Id>().is_ok() || object == "config")
        && !suffix.is_empty()
        && suffix.bytes().all(|b| b.is_ascii_digit())
}

/// The scheme of a location that looks like `scheme:...` but is none that
/// cairn knows (`local:`, `s3:`, `gs:`, `azure:`, `memory:`): it is an
/// error, never a local directory named `b2:bucket`. (A directory whose
/// name has a colon is reached as `./b2:x` or `local:b2:x`.)
fn unknown_scheme(location: &str) -> Option<&str> {
    let (scheme, _) = location.split_once(':')?;
    let looks_like_one = scheme.len() >= 2
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    let known = ["local", "s3", "gs", "azure", "sftp", "rclone", "memory"];
    (looks_like_one && !known.contains(&scheme)).then_some(scheme)
}

/// What to say about an unknown scheme: the ones there are, and the way to
/// the common stores that have no scheme of their own.
fn scheme_hint(scheme: &str) -> String {
    let supported = "supported: a local path (/srv/repo, local:/srv/repo), s3:BUCKET/PREFIX, \
                     gs:BUCKET/PREFIX, azure:CONTAINER/PREFIX, sftp:[USER@]HOST:/PATH, rclone:REMOTE:PATH";
    match scheme.to_ascii_lowercase().as_str() {
        "b2" => format!(
            "unknown scheme \"b2:\"; Backblaze B2 is reached through its S3 API: \
             s3:https://s3.REGION.backblazeb2.com/BUCKET/PREFIX with the application key in AWS_ACCESS_KEY_ID \
             and AWS_SECRET_ACCESS_KEY ({supported})"
        ),
        "r2" | "minio" | "wasabi" => {
            format!("unknown scheme \"{scheme}:\"; that store is reached through s3: with its endpoint ({supported})")
        }
        "rest" | "swift" | "http" | "https" => {
            format!("the {scheme}: backend is not supported yet ({supported})")
        }
        _ => format!("unknown scheme \"{scheme}:\" ({supported})"),
    }
}

fn first_line(s: &str) -> String {
    let s = s.lines().next().unwrap_or_default();
    if s.chars().count() > 300 { format!("{}…", s.chars().take(300).collect::<String>()) } else { s.to_string() }
}

fn chain<'a>(e: &'a (dyn std::error::Error + 'static)) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |e| e.source())
}

fn root_cause(e: &object_store::Error) -> String {
    chain(e).last().map(|c| first_line(&c.to_string())).unwrap_or_default()
}

fn is_connect_error(e: &object_store::Error) -> bool {
    chain(e).any(|c| {
        c.downcast_ref::<object_store::client::HttpError>()
            .is_some_and(|h| h.kind() == object_store::client::HttpErrorKind::Connect)
            || c.downcast_ref::<std::io::Error>().is_some_and(|io| {
                matches!(
                    io.kind(),
                    std::io::ErrorKind::ConnectionRefused
                        | std::io::ErrorKind::HostUnreachable
                        | std::io::ErrorKind::NetworkUnreachable
                )
            })
    })
}

/// Whether an error is worth retrying: transport hiccups and server-side
/// failures, never "not found", "exists", "denied" or malformed requests.
pub(crate) fn is_transient(e: &object_store::Error) -> bool {
    use object_store::client::HttpErrorKind;
    if !matches!(e, object_store::Error::Generic { .. }) {
        return false;
    }
    chain(e).any(|c| {
        if let Some(h) = c.downcast_ref::<object_store::client::HttpError>() {
            return matches!(h.kind(), HttpErrorKind::Request | HttpErrorKind::Timeout | HttpErrorKind::Interrupted);
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            return matches!(
                io.kind(),
                TimedOut | ConnectionReset | ConnectionAborted | BrokenPipe | Interrupted | UnexpectedEof | WouldBlock
            );
        }
        let text = c.to_string();
        // object_store's HTTP retry error: a 5xx or 429 that outlived its own retries.
        ["status code: 5", "status code: 429", "Server returned non-2xx status code: 5"]
            .iter()
            .any(|p| text.contains(p))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_paths() {
        let id = Id([0xab; 32]);
        let hex = id.to_hex();
        for (kind, expected) in [
            (FileKind::Config, "config".to_owned()),
            (FileKind::Key, format!("keys/{hex}")),
            (FileKind::Index, format!("index/{hex}")),
            (FileKind::Snapshot, format!("snapshots/{hex}")),
            (FileKind::Pack, format!("data/ab/{hex}")),
            (FileKind::Trash, format!("trash/{hex}")),
        ] {
            assert_eq!(kind.relative_path(&id), expected, "{kind:?}");
        }
    }

    #[test]
    fn locations() {
        let dir = tempfile::tempdir().unwrap();
        let existing = dir.path().display().to_string();
        let missing = dir.path().join("new").display().to_string();
        let open =
            |location: &str, create: bool| Backend::open(location, &BackendOptions { create, ..Default::default() });
        // (location, create, expected kind or error text)
        let cases: Vec<(String, bool, Result<BackendKind, &str>)> = vec![
            (existing.clone(), false, Ok(BackendKind::Local)),
            (format!("local:{existing}"), false, Ok(BackendKind::Local)),
            ("memory:".into(), false, Ok(BackendKind::Memory)),
            ("s3:bucket/prefix".into(), false, Ok(BackendKind::S3)),
            (missing.clone(), false, Err("no repository at")),
            (missing.clone(), true, Ok(BackendKind::Local)),
            ("".into(), false, Err("empty path")),
            ("local:".into(), false, Err("empty path")),
            ("ftp://host/x".into(), false, Err("unknown scheme \"ftp:\"")),
            ("b2:bucket/x".into(), true, Err("Backblaze B2 is reached through its S3 API")),
            // sftp: connects on first use, so opening only parses.
            ("sftp:host:/path".into(), false, Ok(BackendKind::Sftp)),
            ("sftp://user@host:2222//srv".into(), false, Ok(BackendKind::Sftp)),
            ("sftp:host".into(), false, Err("no ':' and path after the host")),
            ("sftp:host:".into(), false, Err("no path after the host")),
            // rclone: starts rclone on first use, so opening only parses.
            ("rclone:remote:x".into(), false, Ok(BackendKind::Rclone)),
            ("rclone:/srv/x".into(), false, Ok(BackendKind::Rclone)),
            ("rclone:".into(), false, Err("no remote after rclone:")),
            ("rest:http://host/".into(), false, Err("the rest: backend is not supported yet")),
            (format!("local:{existing}/b2:x"), true, Ok(BackendKind::Local)),
            (format!("{existing}/file"), true, Err("not a directory")),
        ];
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        for (location, create, expected) in cases {
            match (open(&location, create), expected) {
                (Ok(backend), Ok(kind)) => assert_eq!(backend.kind(), kind, "{location}"),
                (Err(e), Err(text)) => assert!(e.to_string().contains(text), "{location}: {e}"),
                (Ok(b), Err(text)) => panic!("{location}: opened ({:?}), expected an error with {text:?}", b.kind()),
                (Err(e), Ok(kind)) => panic!("{location}: {e}, expected a {kind:?} backend"),
            }
        }
        assert!(std::path::Path::new(&missing).is_dir(), "created on request");
    }

    #[tokio::test]
    async fn objects_are_created_once_and_listed() {
        let backend = Backend::memory();
        let id = Id::of_object(b"payload");
        let first = backend.write_new(FileKind::Index, &id, vec![Bytes::from_static(b"payload")]).await.unwrap();
        let again = backend.write_new(FileKind::Index, &id, vec![Bytes::from_static(b"other")]).await.unwrap();
        assert_eq!((first, again), (WriteOutcome::Created, WriteOutcome::AlreadyExists));
        assert_eq!(&backend.read(FileKind::Index, &id).await.unwrap()[..], b"payload", "never overwritten");
        assert_eq!(backend.list(FileKind::Index).await.unwrap(), vec![(id, 7)]);
        assert!(backend.list(FileKind::Snapshot).await.unwrap().is_empty());
        backend.delete(FileKind::Index, &id).await.unwrap();
        assert!(!backend.exists(FileKind::Index, &id).await.unwrap());
    }
}
