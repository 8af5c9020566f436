//! The `sftp:` backend: an [`ObjectStore`] over SFTP, spoken through the
//! user's own `ssh` (see [`location`] for the location syntax).
//!
//! **Create-if-absent** (FORMAT.md §2) is built from what OpenSSH's server
//! offers: the body goes to a temporary file `<name>#<digits>` in the
//! object's directory (created on demand, `mkdir -p`), is fsynced
//! (`fsync@openssh.com`), and is published with `hardlink@openssh.com`
//! (`link(2)` on the server), which refuses an existing name; the temporary
//! name is then removed. A reader therefore never sees a partial object
//! under its final name, and of concurrent creators exactly one wins. A
//! writer killed mid-upload leaves only the temporary file, which prune
//! removes after the grace period like a local store's.
//!
//! Not every server keeps those promises (`rclone serve sftp` accepts the
//! link twice and then loses the file), so before the first write the
//! store **probes** the server in the repository directory: link a
//! temporary file to a new name twice (the second must be refused), remove
//! the temporary file, and read the linked name back. If anything is off,
//! conditional creates return `NotImplemented`, which makes [`Backend`]
//! fall back to the documented check-then-write rules (FORMAT.md §12.2),
//! and a warning is logged once. Reads never probe, so a read-only login
//! can restore.
//!
//! [`Backend`]: crate::Backend

mod conn;
pub(crate) mod location;

use std::fmt;
use std::io::SeekFrom;
use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};
use futures::stream::{BoxStream, FuturesUnordered};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use openssh_sftp_client::Error as SftpError;
use openssh_sftp_client::error::SftpErrorKind;
use tokio::io::AsyncSeekExt;

use conn::{Conn, Pool};
use location::SftpLocation;

/// The store name in object_store errors.
const STORE: &str = "SFTP";
/// Requests in flight per upload or download (each up to the server's
/// packet size, 255 KiB on OpenSSH): enough to fill a link's bandwidth
/// without waiting a round trip per packet.
const PIPELINE: usize = 16;
/// Directories listed at once during a recursive listing.
const LIST_PARALLEL: usize = 8;
/// Bytes per read or write request: OpenSSH's limit (256 KiB less 1 KiB
/// of header room). The client splits further for servers with smaller
/// limits (it knows them, but does not tell).
const PACKET: usize = 261_120;
/// The default number of ssh connections (restic's too).
pub(crate) const DEFAULT_CONNECTIONS: usize = 5;

/// What went wrong, in words that name the backend and the fix.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SftpFailure {
    #[error("the SFTP command is empty")]
    EmptyCommand,
    #[error(
        "cannot run the SFTP command `{command}`: {reason}. Install the OpenSSH client (ssh), or name another \
         command with --sftp-command"
    )]
    Spawn { command: String, reason: std::io::Error },
    #[error("`{command}` gave no SFTP session ({status}){}", if stderr.is_empty() { String::new() } else { format!(": {stderr}") })]
    Connect { command: String, status: String, stderr: String },
    #[error("{detail} (while {action} {path}: {cause})")]
    Broken { detail: String, action: &'static str, path: String, cause: String },
    #[error("the SFTP server refused {action} {path}: {message}")]
    Server { action: &'static str, path: String, message: String },
    #[error(
        "the SFTP server refused to write {path} ({message}); its disk is probably full or a quota is exceeded \
         ({free}). Free some space on the server and run the command again"
    )]
    WriteRefused { path: String, message: String, free: String },
    #[error("{path} is shorter than the range {range:?} read from it")]
    ShortRead { path: String, range: std::ops::Range<u64> },
}

impl SftpFailure {
    /// How the backend should see it: a connect failure is "unreachable"
    /// (an `io::Error` the backend recognises) unless ssh says the login
    /// was refused; a broken session is a transient `io::Error`, retried
    /// on a new connection.
    fn into_store_error(self) -> object_store::Error {
        use std::io::{Error as IoError, ErrorKind};
        match self {
            SftpFailure::Connect { ref stderr, .. } if login_refused(stderr) => {
                object_store::Error::PermissionDenied { path: String::new(), source: Box::new(self) }
            }
            SftpFailure::Connect { .. } => object_store::Error::Generic {
                store: STORE,
                source: Box::new(IoError::new(ErrorKind::ConnectionRefused, self)),
            },
            SftpFailure::Broken { .. } => object_store::Error::Generic {
                store: STORE,
                source: Box::new(IoError::new(ErrorKind::BrokenPipe, self)),
            },
            other => object_store::Error::Generic { store: STORE, source: Box::new(other) },
        }
    }
}

fn login_refused(stderr: &str) -> bool {
    ["Permission denied", "Too many authentication failures", "Host key verification failed", "no matching host key"]
        .iter()
        .any(|p| stderr.contains(p))
}

/// The result of the atomicity probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    Atomic,
    CheckThenWrite,
}

/// An [`ObjectStore`] on an SFTP server.
pub(crate) struct SftpStore {
    inner: Arc<Shared>,
}

struct Shared {
    shown: String,
    /// The repository directory on the server.
    root: String,
    pool: Pool,
    probe: tokio::sync::OnceCell<Probe>,
    /// Why creates are not atomic here, once the probe found out.
    fallback: Arc<OnceLock<String>>,
}

impl SftpStore {
    /// A store for `location`; nothing is contacted until the first request.
    pub(crate) fn new(location: &SftpLocation, command: Vec<String>, connections: usize) -> SftpStore {
        SftpStore {
            inner: Arc::new(Shared {
                shown: location.to_string(),
                root: location.path.clone(),
                pool: Pool::new(command, connections),
                probe: tokio::sync::OnceCell::new(),
                fallback: Arc::new(OnceLock::new()),
            }),
        }
    }

    /// Set (with the reason) once the probe found that creates cannot be atomic.
    pub(crate) fn fallback_reason(&self) -> Arc<OnceLock<String>> {
        self.inner.fallback.clone()
    }
}

impl fmt::Debug for SftpStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SftpStore").field("location", &self.inner.shown).field("pool", &self.inner.pool).finish()
    }
}

impl fmt::Display for SftpStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SftpStore({})", self.inner.shown)
    }
}

fn is_kind(e: &SftpError, kind: SftpErrorKind) -> bool {
    matches!(e, SftpError::SftpError(k, _) if std::mem::discriminant(k) == std::mem::discriminant(&kind))
}

fn server_message(e: &SftpError) -> String {
    match e {
        SftpError::SftpError(kind, msg) => match msg.get().0 {
            "" => format!("{kind:?}"),
            text => format!("{kind:?}: {text}"),
        },
        other => other.to_string(),
    }
}

/// The parent directory of a remote path, if it has one worth creating.
fn parent(path: &str) -> Option<&str> {
    match path.rsplit_once('/') {
        Some(("", _)) | None => None,
        Some((dir, _)) => Some(dir),
    }
}

fn mtime(attrs: &openssh_sftp_client::metadata::MetaData) -> chrono::DateTime<chrono::Utc> {
    // A server that gives no time: "now" keeps prune from taking the
    // object for old (its grace rule reads modification times).
    attrs
        .modified()
        .and_then(|t| chrono::DateTime::from_timestamp(i64::from(t.into_raw()), 0))
        .unwrap_or_else(chrono::Utc::now)
}

impl Shared {
    fn remote(&self, rel: &str) -> String {
        match (self.root.as_str(), rel) {
            (root, "") => root.to_owned(),
            ("/", rel) => format!("/{rel}"),
            (root, rel) => format!("{root}/{rel}"),
        }
    }

    /// Maps a client error: server statuses to object_store's kinds, and
    /// anything else (the transport) to a broken connection.
    fn error(&self, conn: &Conn, action: &'static str, path: &str, e: SftpError) -> object_store::Error {
        let source = |e: &SftpError| -> Box<dyn std::error::Error + Send + Sync> {
            Box::new(SftpFailure::Server { action, path: path.to_owned(), message: server_message(e) })
        };
        match &e {
            SftpError::SftpError(SftpErrorKind::NoSuchFile, _) => {
                object_store::Error::NotFound { path: path.to_owned(), source: source(&e) }
            }
            SftpError::SftpError(SftpErrorKind::PermDenied, _) => {
                object_store::Error::PermissionDenied { path: path.to_owned(), source: source(&e) }
            }
            SftpError::SftpError(SftpErrorKind::OpUnsupported, _) | SftpError::UnsupportedExtension(_) => {
                object_store::Error::NotSupported { source: source(&e) }
            }
            SftpError::SftpError(..) => object_store::Error::Generic { store: STORE, source: source(&e) },
            _ => SftpFailure::Broken { detail: conn.broken(), action, path: path.to_owned(), cause: e.to_string() }
                .into_store_error(),
        }
    }

    /// `mkdir -p dir` (directories that exist are fine, also when a
    /// concurrent writer just made them).
    async fn mkdir_p(&self, conn: &Conn, dir: &str) -> Result<(), object_store::Error> {
        let mut fs = conn.sftp.fs();
        let mut missing = Vec::new();
        let mut current = Some(dir);
        while let Some(d) = current {
            match fs.create_dir(d).await {
                Ok(()) => break,
                Err(e) if is_kind(&e, SftpErrorKind::NoSuchFile) => {
                    missing.push(d);
                    current = parent(d);
                }
                Err(e @ SftpError::SftpError(..)) => {
                    if fs.metadata(d).await.is_ok_and(|m| m.file_type().is_some_and(|t| t.is_dir())) {
                        break;
                    }
                    return Err(self.error(conn, "creating directory", d, e));
                }
                Err(e) => return Err(self.error(conn, "creating directory", d, e)),
            }
        }
        for d in missing.into_iter().rev() {
            if let Err(e) = fs.create_dir(d).await {
                if !fs.metadata(d).await.is_ok_and(|m| m.file_type().is_some_and(|t| t.is_dir())) {
                    return Err(self.error(conn, "creating directory", d, e));
                }
            }
        }
        Ok(())
    }

    /// Writes `payload` to a new file `path` (which must not exist),
    /// creating its directory if needed; the file is fsynced when the
    /// server can. On failure the file is removed if the connection still
    /// works (else it stays behind as an upload leftover).
    async fn upload(&self, conn: &Conn, path: &str, payload: &PutPayload) -> Result<(), object_store::Error> {
        let open = || async { conn.sftp.options().write(true).create_new(true).open(path).await };
        let file = match open().await {
            Err(e) if is_kind(&e, SftpErrorKind::NoSuchFile) => match parent(path) {
                Some(dir) => {
                    self.mkdir_p(conn, dir).await?;
                    open().await
                }
                None => Err(e),
            },
            other => other,
        }
        .map_err(|e| self.error(conn, "creating", path, e))?;
        let written = self.write_all(conn, file, path, payload).await;
        if written.is_err() && !conn.is_dead() {
            let _ = conn.sftp.fs().remove_file(path).await;
        }
        written
    }

    async fn write_all(
        &self,
        conn: &Conn,
        file: openssh_sftp_client::file::File,
        path: &str,
        payload: &PutPayload,
    ) -> Result<(), object_store::Error> {
        // Cut the payload into packets (slices of its parts, no copies)
        // and keep PIPELINE of them in flight.
        let max = PACKET;
        let mut packets: Vec<(u64, Vec<Bytes>)> = Vec::new();
        let (mut offset, mut current, mut current_len) = (0u64, Vec::new(), 0usize);
        for part in payload.iter() {
            let mut part = part.clone();
            while !part.is_empty() {
                let take = part.len().min(max - current_len);
                current.push(part.split_to(take));
                current_len += take;
                if current_len == max {
                    packets.push((offset, std::mem::take(&mut current)));
                    offset += current_len as u64;
                    current_len = 0;
                }
            }
        }
        if current_len > 0 {
            packets.push((offset, current));
        }
        let writes = futures::stream::iter(packets).map(|(at, mut bufs)| {
            let mut file = file.clone();
            async move {
                file.seek(SeekFrom::Start(at)).await.map_err(SftpError::from)?;
                file.write_all_zero_copy(&mut bufs).await
            }
        });
        let result: Result<Vec<()>, SftpError> = writes.buffer_unordered(PIPELINE).try_collect().await;
        let mut file = file;
        let result = match result {
            Ok(_) if conn.sftp.support_fsync() => file.sync_all().await,
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        let result = match result {
            Ok(()) => file.close().await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => Ok(()),
            // OpenSSH answers ENOSPC and EDQUOT with a bare FAILURE: say
            // what it most likely is, with the free space if the server tells.
            Err(e) if is_kind(&e, SftpErrorKind::Failure) => {
                let free = match conn.sftp.support_statvfs() {
                    true => match conn.sftp.fs().statvfs(&self.root).await {
                        Ok(v) => format!("{} bytes free there", v.bavail.saturating_mul(v.frsize)),
                        Err(_) => "free space unknown".into(),
                    },
                    false => "free space unknown".into(),
                };
                // The object's name, without the temporary suffix.
                let object = path.rsplit_once('#').map_or(path, |(name, _)| name).to_owned();
                Err(SftpFailure::WriteRefused { path: object, message: server_message(&e), free }.into_store_error())
            }
            Err(e) => Err(self.error(conn, "writing", path, e)),
        }
    }

    /// Creates `path` unless it exists: temporary file, then a hard link
    /// that the server refuses onto an existing name.
    async fn create(&self, location: &Path, payload: &PutPayload) -> Result<PutResult, object_store::Error> {
        let conn = self.pool.get().await?;
        let target = self.remote(location.as_ref());
        let temp = temp_name(&target);
        self.upload(&conn, &temp, payload).await?;
        let mut fs = conn.sftp.fs();
        let linked = fs.hard_link(&temp, &target).await;
        if let Err(e) = fs.remove_file(&temp).await {
            // Harmless: prune removes leftovers after the grace period.
            tracing::debug!("cannot remove {temp} on {}: {e}", self.shown);
        }
        match linked {
            Ok(()) => Ok(put_result()),
            // OpenSSH refuses a link onto an existing name with a generic
            // FAILURE: a stat tells "exists" from other failures.
            Err(e @ SftpError::SftpError(..)) => match fs.metadata(&target).await {
                Ok(_) => Err(object_store::Error::AlreadyExists {
                    path: location.to_string(),
                    source: format!("{target} exists on {}", self.shown).into(),
                }),
                Err(_) => Err(self.error(&conn, "publishing", location.as_ref(), e)),
            },
            Err(e) => Err(self.error(&conn, "publishing", location.as_ref(), e)),
        }
    }

    /// Writes or replaces `path`: temporary file, then a rename over it
    /// (`posix-rename@openssh.com` where offered).
    async fn replace(&self, location: &Path, payload: &PutPayload) -> Result<PutResult, object_store::Error> {
        let conn = self.pool.get().await?;
        let target = self.remote(location.as_ref());
        let temp = temp_name(&target);
        self.upload(&conn, &temp, payload).await?;
        let mut fs = conn.sftp.fs();
        let mut renamed = fs.rename(&temp, &target).await;
        if renamed.is_err() && !conn.sftp.support_posix_rename() && fs.metadata(&target).await.is_ok() {
            // A plain SFTP rename refuses an existing target.
            let _ = fs.remove_file(&target).await;
            renamed = fs.rename(&temp, &target).await;
        }
        match renamed {
            Ok(()) => Ok(put_result()),
            Err(e) => {
                let _ = fs.remove_file(&temp).await;
                Err(self.error(&conn, "publishing", location.as_ref(), e))
            }
        }
    }

    async fn probe(&self) -> Result<Probe, object_store::Error> {
        self.probe.get_or_try_init(|| self.run_probe()).await.copied()
    }

    /// Tests, in the repository directory, that a hard link refuses an
    /// existing name and survives the removal of its source.
    async fn run_probe(&self) -> Result<Probe, object_store::Error> {
        let conn = self.pool.get().await?;
        self.mkdir_p(&conn, &self.root).await?;
        let verdict = if conn.sftp.support_hardlink() {
            self.probe_links(&conn).await?
        } else {
            Err("the server does not offer hardlink@openssh.com".to_owned())
        };
        match verdict {
            Ok(()) => Ok(Probe::Atomic),
            Err(reason) => {
                tracing::warn!(
                    "{}: this SFTP server cannot create files atomically ({reason}); cairn checks before it writes \
                     instead (FORMAT.md §12.2): never run two `cairn init` at once on this repository",
                    self.shown
                );
                let _ = self.fallback.set(reason);
                Ok(Probe::CheckThenWrite)
            }
        }
    }

    /// `Ok(Err(reason))` when the server failed the test.
    async fn probe_links(&self, conn: &Conn) -> Result<Result<(), String>, object_store::Error> {
        let tag = hex::encode(rand::random::<[u8; 8]>());
        let name = self.remote(&format!(".cairn-probe-{tag}"));
        let temp = format!("{name}.tmp");
        let content = Bytes::from(format!("cairn atomicity probe {tag}\n"));
        self.upload(conn, &temp, &PutPayload::from(content.clone())).await?;
        let mut fs = conn.sftp.fs();
        let verdict = async {
            if let Err(e) = fs.hard_link(&temp, &name).await {
                return Ok(Err(format!("linking a new name failed: {}", server_message(&e))));
            }
            if fs.hard_link(&temp, &name).await.is_ok() {
                return Ok(Err("a link onto an existing name succeeded; it must be refused".to_owned()));
            }
            fs.remove_file(&temp).await.map_err(|e| self.error(conn, "removing", &temp, e))?;
            match fs.read(&name).await {
                Ok(read) if read[..] == content[..] => Ok(Ok(())),
                Ok(_) => Ok(Err("a linked name changed content once its source was removed".to_owned())),
                Err(e) => {
                    Ok(Err(format!("a linked name vanished once its source was removed ({})", server_message(&e))))
                }
            }
        }
        .await;
        let _ = fs.remove_file(&temp).await;
        let _ = fs.remove_file(&name).await;
        verdict
    }

    async fn get(&self, location: &Path, options: GetOptions) -> Result<GetResult, object_store::Error> {
        let conn = self.pool.get().await?;
        let path = self.remote(location.as_ref());
        let rel = location.as_ref();
        if options.head && options.range.is_none() {
            let attrs = conn.sftp.fs().metadata(&path).await.map_err(|e| self.error(&conn, "checking", rel, e))?;
            let meta = object_meta(location.clone(), &attrs);
            options.check_preconditions(&meta)?;
            return Ok(get_result(meta, 0..0, Bytes::new()));
        }
        let mut file = conn.sftp.open(&path).await.map_err(|e| self.error(&conn, "reading", rel, e))?;
        let attrs = file.metadata().await.map_err(|e| self.error(&conn, "reading", rel, e))?;
        let meta = object_meta(location.clone(), &attrs);
        options.check_preconditions(&meta)?;
        let range = match &options.range {
            Some(r) => {
                r.as_range(meta.size).map_err(|e| object_store::Error::Generic { store: STORE, source: Box::new(e) })?
            }
            None => 0..meta.size,
        };
        if options.head {
            return Ok(get_result(meta, range, Bytes::new()));
        }
        let data = self.read_range(&conn, &file, rel, range.clone()).await?;
        Ok(get_result(meta, range, data))
    }

    async fn read_range(
        &self,
        conn: &Conn,
        file: &openssh_sftp_client::file::File,
        rel: &str,
        range: std::ops::Range<u64>,
    ) -> Result<Bytes, object_store::Error> {
        let max = PACKET as u64;
        let chunks = (range.start..range.end).step_by(max as usize).map(|at| (at, (range.end - at).min(max) as u32));
        let reads = futures::stream::iter(chunks).map(|(at, len)| {
            let mut file = file.clone();
            async move {
                file.seek(SeekFrom::Start(at)).await.map_err(SftpError::from)?;
                let mut out = BytesMut::with_capacity(len as usize);
                while out.len() < len as usize {
                    let want = len - out.len() as u32;
                    match file.read(want, BytesMut::with_capacity(want as usize)).await? {
                        Some(got) if !got.is_empty() => out.extend_from_slice(&got),
                        _ => return Ok(None),
                    }
                }
                Ok::<_, SftpError>(Some(out))
            }
        });
        let parts: Vec<Option<BytesMut>> =
            reads.buffered(PIPELINE).try_collect().await.map_err(|e| self.error(conn, "reading", rel, e))?;
        let mut data = BytesMut::with_capacity((range.end - range.start) as usize);
        for part in parts {
            match part {
                Some(p) => data.extend_from_slice(&p),
                // The file shrank after its size was read.
                None => {
                    return Err(SftpFailure::ShortRead { path: rel.to_owned(), range }.into_store_error());
                }
            }
        }
        Ok(data.freeze())
    }

    async fn delete(&self, location: &Path) -> Result<(), object_store::Error> {
        let conn = self.pool.get().await?;
        let path = self.remote(location.as_ref());
        conn.sftp.fs().remove_file(&path).await.map_err(|e| self.error(&conn, "deleting", location.as_ref(), e))
    }

    /// The entries of one directory (`rel` relative to the root): files
    /// and subdirectories. A missing directory is empty, as a prefix with
    /// no objects is on an object store.
    async fn read_dir(&self, rel: &str) -> Result<(Vec<ObjectMeta>, Vec<String>), object_store::Error> {
        let conn = self.pool.get().await?;
        let path = self.remote(rel);
        let mut fs = conn.sftp.fs();
        let dir = match fs.open_dir(&path).await {
            Ok(dir) => dir,
            Err(e) if is_kind(&e, SftpErrorKind::NoSuchFile) => return Ok((Vec::new(), Vec::new())),
            Err(e) => return Err(self.error(&conn, "listing", rel, e)),
        };
        let entries: Vec<_> = dir.read_dir().try_collect().await.map_err(|e| self.error(&conn, "listing", rel, e))?;
        let (mut files, mut dirs) = (Vec::new(), Vec::new());
        for entry in entries {
            let Some(name) = entry.filename().to_str() else { continue };
            if name == "." || name == ".." || name.is_empty() {
                continue;
            }
            let child = if rel.is_empty() { name.to_owned() } else { format!("{rel}/{name}") };
            let attrs = entry.metadata();
            match attrs.file_type() {
                Some(t) if t.is_dir() => dirs.push(child),
                // Path::parse keeps names as they are (Path::from would
                // escape a temporary file's '#', and then not find it).
                Some(t) if t.is_file() => match Path::parse(&child) {
                    Ok(path) => files.push(object_meta(path, &attrs)),
                    Err(_) => continue,
                },
                // Symlinks, devices: not objects.
                _ => {}
            }
        }
        Ok((files, dirs))
    }

    /// Every file under `rel`, a few directories at a time.
    async fn walk(self: Arc<Self>, rel: String) -> Result<Vec<ObjectMeta>, object_store::Error> {
        let mut out = Vec::new();
        let mut pending = vec![rel];
        let mut running = FuturesUnordered::new();
        loop {
            while running.len() < LIST_PARALLEL {
                let Some(dir) = pending.pop() else { break };
                let this = self.clone();
                running.push(async move { this.read_dir(&dir).await });
            }
            match running.next().await {
                Some(result) => {
                    let (files, dirs) = result?;
                    out.extend(files);
                    pending.extend(dirs);
                }
                None => break,
            }
        }
        Ok(out)
    }
}

/// The temporary name of an upload to `target`: `<target>#<digits>`, the
/// shape the local store uses, so check and prune recognise leftovers.
fn temp_name(target: &str) -> String {
    format!("{target}#{}", rand::random::<u32>())
}

fn put_result() -> PutResult {
    PutResult { e_tag: None, version: None, extensions: Default::default() }
}

fn object_meta(location: Path, attrs: &openssh_sftp_client::metadata::MetaData) -> ObjectMeta {
    ObjectMeta { location, last_modified: mtime(attrs), size: attrs.len().unwrap_or(0), e_tag: None, version: None }
}

fn get_result(meta: ObjectMeta, range: std::ops::Range<u64>, data: Bytes) -> GetResult {
    GetResult {
        payload: GetResultPayload::Stream(futures::stream::once(async move { Ok(data) }).boxed()),
        meta,
        range,
        attributes: Default::default(),
        extensions: Default::default(),
    }
}

fn not_implemented(operation: &str) -> object_store::Error {
    super::store_kit::not_implemented("SftpStore", operation)
}

#[async_trait::async_trait]
impl ObjectStore for SftpStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        match opts.mode {
            PutMode::Create => match self.inner.probe().await? {
                Probe::Atomic => self.inner.create(location, &payload).await,
                // Backend then checks and writes with an overwriting put.
                Probe::CheckThenWrite => Err(not_implemented("atomic create on this SFTP server")),
            },
            PutMode::Overwrite => {
                self.inner.probe().await?;
                self.inner.replace(location, &payload).await
            }
            PutMode::Update(_) => Err(not_implemented("conditional update over SFTP")),
        }
    }

    async fn put_multipart_opts(
        &self,
        _location: &Path,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        Err(not_implemented("multipart upload over SFTP"))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        self.inner.get(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let shared = self.inner.clone();
        super::store_kit::delete_each(locations, PIPELINE, move |location| {
            let shared = shared.clone();
            async move { shared.delete(&location).await }
        })
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let rel = prefix.map(|p| p.as_ref().to_owned()).unwrap_or_default();
        let walk = self.inner.clone().walk(rel);
        futures::stream::once(walk)
            .map(|result| match result {
                Ok(metas) => futures::stream::iter(metas.into_iter().map(Ok)).boxed(),
                Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
            })
            .flatten()
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let rel = prefix.map(|p| p.as_ref().to_owned()).unwrap_or_default();
        let (objects, dirs) = self.inner.read_dir(&rel).await?;
        Ok(ListResult {
            common_prefixes: dirs.iter().filter_map(|d| Path::parse(d).ok()).collect(),
            objects,
            extensions: Default::default(),
        })
    }

    async fn copy_opts(&self, _from: &Path, _to: &Path, _options: CopyOptions) -> object_store::Result<()> {
        Err(not_implemented("server-side copy over SFTP"))
    }
}
