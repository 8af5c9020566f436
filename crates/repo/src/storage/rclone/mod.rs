//! The `rclone:` backend: an [`ObjectStore`] that speaks restic's REST
//! protocol (v2) to a `rclone serve restic` that cairn starts for the
//! remote (see [`location`] for the syntax and `server` for the child).
//!
//! **Names.** cairn's object names are restic's REST paths except packs:
//! cairn's `data/<2 hex>/<id>` is sent as `data/<id>`, which rclone stores
//! as `data/<2 hex>/<id>` on the remote (so a local remote is laid out like
//! a local cairn repository) and lists, recursively, as `<id>`. `config`,
//! `keys/`, `index/`, `snapshots/`, `trash/` and `locks/prune` go as they
//! are (rclone accepts any name; rest-server would not, see FORMAT.md §2).
//!
//! **What rclone cannot promise, and what cairn does about it.**
//! - No conditional create: a POST overwrites. `put_opts(Create)` returns
//!   `NotImplemented`, so [`Backend`] checks, then writes (FORMAT.md §12.2),
//!   and verifies an object it finds against the bytes it would write.
//!   [`Backend::create_fallback_reason`] says so from the start and a
//!   warning is logged once per process.
//! - Partial objects: during an upload the object is visible, growing,
//!   under its final name, and a killed rclone can leave it torn. Readers
//!   check every object (BLAKE3 of whole objects, authenticated decryption
//!   of ranges), so a torn object fails cleanly instead of being trusted;
//!   a whole object that does not match its name is read again a few times
//!   first (it may still be arriving).
//! - No modification times: lists and HEAD give sizes only. Objects are
//!   reported as modified "now", so prune's grace rule never takes an
//!   unindexed pack for old (FORMAT.md §12.3); such packs are not removed
//!   through rclone.
//!
//! [`Backend`]: crate::Backend
//! [`Backend::create_fallback_reason`]: crate::Backend::create_fallback_reason

pub(crate) mod location;
mod server;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use reqwest::{Method, StatusCode};

use location::RcloneLocation;
use server::Server;

/// The store name in object_store errors.
const STORE: &str = "rclone";
/// The media type of REST v2 lists (with sizes); rclone refuses v1.
const V2: &str = "application/vnd.x.restic.rest.v2";
/// The repository's directories, for a listing of everything.
const DIRS: [&str; 6] = ["keys", "index", "snapshots", "data", "trash", "locks"];
/// Requests deleted at once.
const DELETE_PARALLEL: usize = 8;
/// Why creates are not atomic through rclone (shown to users).
pub(crate) const FALLBACK_REASON: &str = "rclone has no conditional create (a write replaces an existing object), \
     so cairn checks for an object before it writes one (FORMAT.md §12.2): do not run two `init`s at once";

/// What went wrong, in words that name the backend and the fix.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RcloneFailure {
    #[error(
        "cannot run the rclone program `{program}`: {reason}. Install rclone (https://rclone.org/install/, or \
         `apt install rclone`), or name the program with --rclone-program or CAIRN_RCLONE_PROGRAM"
    )]
    Spawn { program: String, reason: std::io::Error },
    #[error("`{command}` did not start serving the repository ({status}){}{}", detail(stderr), startup_hint(stderr))]
    Startup { command: String, status: String, stderr: String },
    #[error("rclone stopped ({status}) while {action} {path}{}", detail(stderr))]
    Died { status: String, action: &'static str, path: String, stderr: String },
    #[error("the connection to rclone broke while {action} {path}: {cause}")]
    Transport { action: &'static str, path: String, cause: String },
    #[error("rclone answered {action} {path} with status code: {status}{}", detail(body))]
    Status { action: &'static str, path: String, status: u16, body: String },
    #[error("rclone gave a malformed answer to {action} {path}: {detail}")]
    BadReply { action: &'static str, path: String, detail: String },
}

fn detail(text: &str) -> String {
    if text.is_empty() { String::new() } else { format!(": {text}") }
}

/// A fix for the usual startup failures, from rclone's own words.
fn startup_hint(stderr: &str) -> &'static str {
    if stderr.contains("didn't find section in config file") || stderr.contains("config file not found") {
        ". That remote is not in rclone's config: create it with `rclone config` (`rclone listremotes` shows \
         the names), or point rclone at another config with --rclone-args \"--config FILE\""
    } else if stderr.contains("unknown flag") || stderr.contains("unknown shorthand flag") {
        ". Check --rclone-args (CAIRN_RCLONE_ARGS); this rclone may be too old for a flag"
    } else if stderr.contains("address already in use") || stderr.contains("bind:") {
        ". rclone could not listen on 127.0.0.1"
    } else {
        ""
    }
}

/// The REST path of an object: packs go as `data/<id>` (rclone adds the
/// two-hex directory itself).
fn rest_path(location: &str) -> String {
    if let Some((sub, name)) = location.strip_prefix("data/").and_then(|rest| rest.split_once('/')) {
        if sub.len() == 2 && name.starts_with(sub) && !name.contains('/') {
            return format!("data/{name}");
        }
    }
    location.to_owned()
}

/// The cairn name of an entry `name` in the REST list of `dir`.
fn listed_path(dir: &str, name: &str) -> String {
    match (dir, name.get(..2)) {
        ("data", Some(sub)) => format!("data/{sub}/{name}"),
        _ => format!("{dir}/{name}"),
    }
}

/// An [`ObjectStore`] behind a `rclone serve restic` child.
pub(crate) struct RcloneStore {
    inner: Arc<Shared>,
}

struct Shared {
    shown: String,
    /// Program and arguments of the child, the remote last.
    command: Vec<String>,
    server: tokio::sync::OnceCell<Server>,
    client: reqwest::Client,
    fallback: Arc<OnceLock<String>>,
    warned: AtomicBool,
}

impl RcloneStore {
    /// A store for `location`; rclone is started on the first request.
    /// `program` is the rclone executable, `args` extra arguments for
    /// `rclone serve restic` (e.g. `--config FILE`).
    pub(crate) fn new(location: &RcloneLocation, program: String, args: Vec<String>) -> Result<Self, String> {
        let mut command = vec![program, "serve".into(), "restic".into()];
        // Loopback only, port from the kernel; `--cache-objects=false`
        // because rclone's object cache answers HEAD for deleted objects.
        command.extend(["--addr", "127.0.0.1:0", "--cache-objects=false"].map(String::from));
        command.extend(args);
        command.push(location.target.clone());
        let client = reqwest::Client::builder()
            // The child is on loopback: a proxy from the environment must not apply.
            .no_proxy()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let fallback = Arc::new(OnceLock::new());
        let _ = fallback.set(FALLBACK_REASON.to_owned());
        Ok(RcloneStore {
            inner: Arc::new(Shared {
                shown: location.to_string(),
                command,
                server: tokio::sync::OnceCell::new(),
                client,
                fallback,
                warned: AtomicBool::new(false),
            }),
        })
    }

    /// Why creates are not atomic here (set from the start).
    pub(crate) fn fallback_reason(&self) -> Arc<OnceLock<String>> {
        self.inner.fallback.clone()
    }
}

impl fmt::Debug for RcloneStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RcloneStore")
            .field("location", &self.inner.shown)
            .field("server", &self.inner.server.get())
            .finish()
    }
}

impl fmt::Display for RcloneStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RcloneStore({})", self.inner.shown)
    }
}

fn generic(e: RcloneFailure) -> object_store::Error {
    object_store::Error::Generic { store: STORE, source: Box::new(e) }
}

fn now() -> chrono::DateTime<chrono::Utc> {
    // No modification times through the REST protocol: "now" keeps prune
    // from taking an object for old (FORMAT.md §12.3).
    chrono::Utc::now()
}

fn meta(location: Path, size: u64) -> ObjectMeta {
    ObjectMeta { location, last_modified: now(), size, e_tag: None, version: None }
}

impl Shared {
    async fn server(&self) -> object_store::Result<&Server> {
        self.server.get_or_try_init(|| Server::start(self.command.clone())).await.map_err(generic)
    }

    /// Sends a request; the status is checked by the caller. A broken
    /// connection is reported as rclone's death when the child has exited
    /// (not retried), else as a transient I/O error.
    async fn send(
        &self,
        method: Method,
        rel: &str,
        action: &'static str,
        build: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> object_store::Result<reqwest::Response> {
        let server = self.server().await?;
        let url = format!("{}{}", server.url, rel);
        let request = build(self.client.request(method, url).basic_auth(&server.user, Some(&server.pass)));
        match request.send().await {
            Ok(response) => Ok(response),
            Err(e) => Err(self.transport(server, action, rel, &e).await),
        }
    }

    async fn transport(
        &self,
        server: &Server,
        action: &'static str,
        rel: &str,
        e: &reqwest::Error,
    ) -> object_store::Error {
        if let Some(status) = server.exited_within(Duration::from_millis(500)).await {
            return generic(RcloneFailure::Died { status, action, path: rel.to_owned(), stderr: server.stderr_text() });
        }
        let cause = chain_text(e);
        let kind = if e.is_timeout() { std::io::ErrorKind::TimedOut } else { std::io::ErrorKind::ConnectionReset };
        object_store::Error::Generic {
            store: STORE,
            source: Box::new(std::io::Error::new(
                kind,
                RcloneFailure::Transport { action, path: rel.to_owned(), cause },
            )),
        }
    }

    /// Maps a non-success status to object_store's kinds.
    async fn status_error(&self, action: &'static str, rel: &str, response: reqwest::Response) -> object_store::Error {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        let body = body.lines().next().unwrap_or_default().chars().take(300).collect::<String>();
        let failure = RcloneFailure::Status { action, path: rel.to_owned(), status: status.as_u16(), body };
        match status {
            StatusCode::NOT_FOUND => object_store::Error::NotFound { path: rel.to_owned(), source: Box::new(failure) },
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                object_store::Error::PermissionDenied { path: rel.to_owned(), source: Box::new(failure) }
            }
            _ => generic(failure),
        }
    }

    async fn head(&self, location: &Path) -> object_store::Result<ObjectMeta> {
        let rel = rest_path(location.as_ref());
        let response = self.send(Method::HEAD, &rel, "checking", |r| r).await?;
        if !response.status().is_success() {
            return Err(self.status_error("checking", &rel, response).await);
        }
        // Read the header itself: a HEAD answer has no body to measure.
        let size = response
            .headers()
            .get(reqwest::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| {
                generic(RcloneFailure::BadReply {
                    action: "checking",
                    path: rel.clone(),
                    detail: "no Content-Length".into(),
                })
            })?;
        Ok(meta(location.clone(), size))
    }

    async fn get(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        let rel = rest_path(location.as_ref());
        if options.head {
            let meta = self.head(location).await?;
            options.check_preconditions(&meta)?;
            let range = match &options.range {
                Some(r) => r.as_range(meta.size).map_err(|e| generic_io(e.to_string()))?,
                None => 0..meta.size,
            };
            return Ok(get_result(meta, range, Bytes::new()));
        }
        let header = match &options.range {
            None => None,
            // An empty range cannot be asked for over HTTP (416).
            Some(GetRange::Bounded(r)) if r.start >= r.end => {
                let meta = self.head(location).await?;
                let range = GetRange::Bounded(r.clone()).as_range(meta.size).map_err(|e| generic_io(e.to_string()))?;
                return Ok(get_result(meta, range, Bytes::new()));
            }
            Some(GetRange::Bounded(r)) => Some(format!("bytes={}-{}", r.start, r.end - 1)),
            Some(GetRange::Offset(o)) => Some(format!("bytes={o}-")),
            Some(GetRange::Suffix(n)) => Some(format!("bytes=-{n}")),
        };
        let response = self
            .send(Method::GET, &rel, "reading", |r| match &header {
                Some(h) => r.header(reqwest::header::RANGE, h),
                None => r,
            })
            .await?;
        let status = response.status();
        if !status.is_success() {
            return Err(self.status_error("reading", &rel, response).await);
        }
        let content_range =
            response.headers().get(reqwest::header::CONTENT_RANGE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(e) => {
                let server = self.server().await?;
                return Err(self.transport(server, "reading", &rel, &e).await);
            }
        };
        let bad = |detail: String| generic(RcloneFailure::BadReply { action: "reading", path: rel.clone(), detail });
        let (size, range, data) = if status == StatusCode::PARTIAL_CONTENT {
            // `bytes START-END/TOTAL`
            let (start, total) = content_range
                .as_deref()
                .and_then(|v| v.strip_prefix("bytes "))
                .and_then(|v| v.split_once('/'))
                .and_then(|(span, total)| {
                    Some((span.split_once('-')?.0.parse::<u64>().ok()?, total.parse::<u64>().ok()?))
                })
                .ok_or_else(|| bad(format!("a partial answer with Content-Range {content_range:?}")))?;
            (total, start..start + body.len() as u64, body)
        } else {
            // The whole object (no range asked, or the range was ignored).
            let size = body.len() as u64;
            let range = match &options.range {
                Some(r) => r.as_range(size).map_err(|e| generic_io(e.to_string()))?,
                None => 0..size,
            };
            let data = body.slice(range.start as usize..range.end as usize);
            (size, range, data)
        };
        let meta = meta(location.clone(), size);
        options.check_preconditions(&meta)?;
        if let Some(wanted) = &options.range {
            let wanted = wanted.as_range(size).map_err(|e| generic_io(e.to_string()))?;
            if range != wanted {
                return Err(bad(format!("asked for bytes {wanted:?} of {size}, got {range:?}")));
            }
        }
        Ok(get_result(meta, range, data))
    }

    async fn put(&self, location: &Path, payload: PutPayload) -> object_store::Result<PutResult> {
        let rel = rest_path(location.as_ref());
        let body = Bytes::from(payload);
        let response = self
            .send(Method::POST, &rel, "writing", |r| {
                r.header(reqwest::header::CONTENT_TYPE, "application/octet-stream").body(body)
            })
            .await?;
        if !response.status().is_success() {
            return Err(self.status_error("writing", &rel, response).await);
        }
        Ok(PutResult { e_tag: None, version: None, extensions: Default::default() })
    }

    async fn delete(&self, location: &Path) -> object_store::Result<()> {
        let rel = rest_path(location.as_ref());
        let response = self.send(Method::DELETE, &rel, "deleting", |r| r).await?;
        if !response.status().is_success() {
            return Err(self.status_error("deleting", &rel, response).await);
        }
        Ok(())
    }

    /// The REST v2 list of a directory (packs are listed recursively).
    async fn list_dir(&self, dir: &str) -> object_store::Result<Vec<ObjectMeta>> {
        let rel = format!("{dir}/");
        let response = self.send(Method::GET, &rel, "listing", |r| r.header(reqwest::header::ACCEPT, V2)).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        if !response.status().is_success() {
            return Err(self.status_error("listing", &rel, response).await);
        }
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(e) => {
                let server = self.server().await?;
                return Err(self.transport(server, "listing", &rel, &e).await);
            }
        };
        #[derive(serde::Deserialize)]
        struct Entry {
            name: String,
            size: u64,
        }
        let entries: Vec<Entry> = serde_json::from_slice(&body).map_err(|e| {
            generic(RcloneFailure::BadReply { action: "listing", path: rel.clone(), detail: e.to_string() })
        })?;
        Ok(entries
            .into_iter()
            // A name rclone lists but object_store cannot hold is not a
            // cairn object; skipping it is what readers do with strays.
            .filter_map(|e| Path::parse(listed_path(dir, &e.name)).ok().map(|p| meta(p, e.size)))
            .collect())
    }

    /// Every object under `prefix` (all of them for none).
    async fn list(&self, prefix: &str) -> object_store::Result<Vec<ObjectMeta>> {
        let prefix = prefix.trim_matches('/');
        let mut out = Vec::new();
        if prefix.is_empty() {
            for dir in DIRS {
                out.extend(self.list_dir(dir).await?);
            }
            match self.head(&Path::from("config")).await {
                Ok(m) => out.push(m),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
            return Ok(out);
        }
        let dir = prefix.split('/').next().unwrap_or(prefix);
        let within = format!("{prefix}/");
        Ok(self.list_dir(dir).await?.into_iter().filter(|m| m.location.as_ref().starts_with(&within)).collect())
    }
}

fn generic_io(text: String) -> object_store::Error {
    generic(RcloneFailure::BadReply { action: "reading", path: String::new(), detail: text })
}

fn chain_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    parts.join(": ")
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
    super::store_kit::not_implemented("RcloneStore", operation)
}

#[async_trait::async_trait]
impl ObjectStore for RcloneStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        match opts.mode {
            PutMode::Create => {
                if !self.inner.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!("{}: {FALLBACK_REASON}", self.inner.shown);
                }
                // Backend then checks and writes with an overwriting put.
                Err(not_implemented("conditional create through rclone"))
            }
            PutMode::Overwrite => self.inner.put(location, payload).await,
            PutMode::Update(_) => Err(not_implemented("conditional update through rclone")),
        }
    }

    async fn put_multipart_opts(
        &self,
        _location: &Path,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        Err(not_implemented("multipart upload through rclone"))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        self.inner.get(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let shared = self.inner.clone();
        super::store_kit::delete_each(locations, DELETE_PARALLEL, move |location| {
            let shared = shared.clone();
            async move { shared.delete(&location).await }
        })
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let prefix = prefix.map(|p| p.as_ref().to_owned()).unwrap_or_default();
        let shared = self.inner.clone();
        futures::stream::once(async move { shared.list(&prefix).await })
            .map(|result| match result {
                Ok(metas) => futures::stream::iter(metas.into_iter().map(Ok)).boxed(),
                Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
            })
            .flatten()
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let prefix = prefix.map(|p| p.as_ref().to_owned()).unwrap_or_default();
        let prefix = prefix.trim_matches('/');
        let (mut objects, mut common_prefixes) = (Vec::new(), Vec::new());
        for m in self.inner.list(prefix).await? {
            let rel = m.location.as_ref();
            let rest =
                if prefix.is_empty() { rel } else { rel.strip_prefix(prefix).unwrap_or(rel).trim_start_matches('/') };
            match rest.split_once('/') {
                Some((first, _)) => {
                    let dir = if prefix.is_empty() { first.to_owned() } else { format!("{prefix}/{first}") };
                    if let Ok(p) = Path::parse(dir) {
                        if !common_prefixes.contains(&p) {
                            common_prefixes.push(p);
                        }
                    }
                }
                None => objects.push(m),
            }
        }
        Ok(ListResult { common_prefixes, objects, extensions: Default::default() })
    }

    async fn copy_opts(&self, _from: &Path, _to: &Path, _options: CopyOptions) -> object_store::Result<()> {
        Err(not_implemented("server-side copy through rclone"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let id = "ab".to_owned() + &"0".repeat(62);
        // (cairn name, REST path)
        let cases = [
            ("config".to_owned(), "config".to_owned()),
            (format!("keys/{id}"), format!("keys/{id}")),
            (format!("index/{id}"), format!("index/{id}")),
            (format!("snapshots/{id}"), format!("snapshots/{id}")),
            (format!("trash/{id}"), format!("trash/{id}")),
            ("locks/prune".to_owned(), "locks/prune".to_owned()),
            (format!("data/ab/{id}"), format!("data/{id}")),
            // Not a pack path: as it is.
            (format!("data/cd/{id}"), format!("data/cd/{id}")),
        ];
        for (name, rest) in cases {
            assert_eq!(rest_path(&name), rest, "{name}");
        }
        assert_eq!(listed_path("data", &id), format!("data/ab/{id}"));
        assert_eq!(listed_path("index", &id), format!("index/{id}"));
        assert_eq!(listed_path("locks", "prune"), "locks/prune");
        assert_eq!(listed_path("data", "x"), "data/x");
    }

    #[test]
    fn hints() {
        assert!(
            startup_hint("CRITICAL: Failed to create file system for \"nope:x\": didn't find section in config file")
                .contains("rclone config")
        );
        assert_eq!(startup_hint("something else"), "");
    }
}
