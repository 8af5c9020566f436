//! [`Repository`]: open or create a repository, manage its keys, read its
//! objects. Writing goes through a [`Writer`](crate::writing::writer::Writer).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_chunker::{Chunker, ChunkerParams, GearTable};
use futures::StreamExt;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::blob::{self, BlobType};
use crate::format::config::{CHUNKER_ALGORITHM, ChunkerConfig, CompressionConfig, Config};
use crate::format::crypto::SecretKey;
use crate::format::envelope::{self, FormatError, INDEX_MAGIC, SNAPSHOT_MAGIC};
use crate::format::id::{Id, SnapshotId};
use crate::format::index::{BlobLocation, Index, IndexFile, PackInfo};
use crate::format::keys::{
    KdfParams, KeyFile, KeyFileError, KeyKind, KeyMaterial, SessionKeyError, is_generated_password,
};
use crate::format::pack::{self, PackHeader};
use crate::format::snapshot::Snapshot;
use crate::storage::backend::{Backend, FileKind, WriteOutcome};
use crate::storage::cache::Cache;
use crate::storage::tree_packs::TreePacks;

/// Settings for [`Repository::init`].
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Chunk sizes.
    pub chunker: ChunkerParams,
    /// zstd level, 0 for none.
    pub compression_level: i32,
    /// Target pack size in bytes.
    pub pack_size: u32,
    /// Argon2id memory (KiB) and passes for the first key.
    pub kdf_memory_kib: u32,
    /// Argon2id passes.
    pub kdf_iterations: u32,
    /// Reuse this master secret instead of a random one (a repository meant
    /// to receive verbatim pack copies from another one).
    pub master: Option<SecretKey>,
    /// Who made the password: a person (Argon2id) or
    /// [`generate_password`](crate::generate_password) (no Argon2id); by
    /// default, decided by the password's form.
    pub password_kind: PasswordKind,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            chunker: ChunkerParams::default(),
            compression_level: Config::DEFAULT_COMPRESSION_LEVEL,
            pack_size: Config::DEFAULT_PACK_SIZE,
            kdf_memory_kib: KdfParams::DEFAULT_MEMORY_KIB,
            kdf_iterations: KdfParams::DEFAULT_ITERATIONS,
            master: None,
            password_kind: PasswordKind::ByForm,
        }
    }
}

impl InitOptions {
    /// These options with `source`'s master secret and chunker, so that
    /// copies from `source` into the new repository move packs verbatim
    /// (`init --from-repo`, or an offsite created on first use). Needs a
    /// full key of `source`.
    pub fn like(self, source: &Repository) -> Result<InitOptions> {
        let master = source.keys().master().ok_or(Error::PutOnlyKey { action: "creating a repository like it" })?;
        let c = &source.config().chunker;
        Ok(InitOptions {
            master: Some(master.clone()),
            chunker: ChunkerParams { min_size: c.min_size, avg_size: c.avg_size, max_size: c.max_size },
            ..self
        })
    }
}

/// Settings for [`Repository::open`].
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Base directory of the metadata cache; `None` disables caching.
    pub cache_dir: Option<PathBuf>,
    /// The shortest grace period [`prune`](crate::prune) accepts, and the
    /// session age after which a [snapshot session](crate::SnapshotSession) checks that the
    /// packs it reused still exist before publishing a snapshot. Both must
    /// be the same for every host using the repository;
    /// [`MINIMUM_GRACE`](crate::MINIMUM_GRACE) by default. Only tests should
    /// lower it: a shorter value lets prune delete data that a running
    /// backup reuses.
    pub minimum_grace: Duration,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions { cache_dir: None, minimum_grace: crate::maintenance::prune::MINIMUM_GRACE }
    }
}

/// Who made a key's password, which decides how it is stretched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PasswordKind {
    /// Decided by the password's form: a password of the form
    /// [`generate_password`](crate::generate_password) gives is
    /// [`Generated`](Self::Generated), anything else
    /// [`Chosen`](Self::Chosen).
    #[default]
    ByForm,
    /// A person chose it: Argon2id makes each guess cost memory and time.
    Chosen,
    /// [`generate_password`](crate::generate_password) made it (256 random
    /// bits): one BLAKE3 derivation, so opening costs nothing measurable.
    /// Creating a key refuses a password that is not of that form.
    Generated,
}

/// Settings for [`Repository::add_key`].
#[derive(Debug, Clone)]
pub struct KeyOptions {
    /// Full or put-only.
    pub kind: KeyKind,
    /// Argon2id memory in KiB.
    pub kdf_memory_kib: u32,
    /// Argon2id passes.
    pub kdf_iterations: u32,
    /// Who made the password (see [`InitOptions::password_kind`]).
    pub password_kind: PasswordKind,
    /// Host name recorded in the key file.
    pub hostname: String,
    /// User name recorded in the key file.
    pub username: String,
}

impl Default for KeyOptions {
    fn default() -> Self {
        KeyOptions {
            kind: KeyKind::Full,
            kdf_memory_kib: KdfParams::DEFAULT_MEMORY_KIB,
            kdf_iterations: KdfParams::DEFAULT_ITERATIONS,
            password_kind: PasswordKind::ByForm,
            hostname: crate::util::hostname(),
            username: crate::util::username(),
        }
    }
}

/// A key as `key list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    /// Key file id.
    pub id: Id,
    /// Whether this session opened the repository with it.
    pub current: bool,
    /// Full or put-only (`None` if the file is damaged).
    pub kind: Option<KeyKind>,
    /// Creation time.
    pub created: Option<jiff::Timestamp>,
    /// Host it was created on.
    pub hostname: String,
    /// User who created it.
    pub username: String,
    /// Argon2id memory in KiB (`None` for a generated password's key, or
    /// a damaged file).
    pub kdf_memory_kib: Option<u32>,
    /// Why the file cannot be used, if it cannot.
    pub problem: Option<String>,
}

/// What [`Repository::list_snapshots_with_damage`] found.
#[derive(Debug, Default)]
pub struct SnapshotListing {
    /// The snapshots that read, oldest first.
    pub snapshots: Vec<(SnapshotId, Snapshot)>,
    /// Snapshot files that are damaged, with what is wrong.
    pub damaged: Vec<(SnapshotId, Error)>,
}

/// What [`Repository::load_index_files`] found.
#[derive(Debug, Default)]
pub struct IndexFiles {
    /// Every index file that decodes, with its id.
    pub files: Vec<(Id, IndexFile)>,
    /// Unreadable index files that an authenticated file supersedes.
    pub unreadable_superseded: Vec<Id>,
}

/// An open repository. Cheap to clone; clones share caches.
#[derive(Clone)]
pub struct Repository {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    config: Config,
    keys: KeyMaterial,
    key_id: Id,
    cache: Option<Cache>,
    chunker: Chunker,
    session_keys: Mutex<HashMap<[u8; 32], SecretKey>>,
    /// Opened from the cache because the storage refuses reads.
    write_only: bool,
    /// [`OpenOptions::minimum_grace`].
    minimum_grace: Duration,
    /// Tree packs read whole and cached (network stores with a cache).
    tree_packs: Option<TreePacks>,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository").field("location", &self.location()).field("id", &self.inner.config.id).finish()
    }
}

fn validate_kdf(kind: PasswordKind, password: &[u8], memory_kib: u32, iterations: u32) -> Result<KdfParams> {
    let generated = match kind {
        PasswordKind::ByForm => is_generated_password(password),
        PasswordKind::Chosen => false,
        PasswordKind::Generated => true,
    };
    if generated {
        return Ok(KdfParams::generated());
    }
    if !(KdfParams::MIN_MEMORY_KIB..=KdfParams::MAX_MEMORY_KIB).contains(&memory_kib) || !(1..=64).contains(&iterations)
    {
        return Err(Error::InvalidArgument(format!(
            "KDF settings out of range: memory {memory_kib} KiB (allowed {}..={}), {iterations} passes (allowed 1..=64)",
            KdfParams::MIN_MEMORY_KIB,
            KdfParams::MAX_MEMORY_KIB
        )));
    }
    Ok(KdfParams::new(memory_kib, iterations))
}

impl Repository {
    /// Creates a repository at `backend` protected by `password`. Refuses,
    /// changing nothing, when a repository already exists there.
    pub async fn init(
        backend: Backend,
        password: &[u8],
        options: InitOptions,
        open: OpenOptions,
    ) -> Result<Repository> {
        options.chunker.validate().map_err(|e| Error::InvalidArgument(format!("chunker: {e}")))?;
        let kdf = validate_kdf(options.password_kind, password, options.kdf_memory_kib, options.kdf_iterations)?;
        let material = match options.master {
            Some(master) => KeyMaterial::from_master(master),
            None => KeyMaterial::generate(),
        };
        let config = Config {
            version: 1,
            id: Id::random(),
            created: jiff::Timestamp::now(),
            chunker: ChunkerConfig {
                algorithm: CHUNKER_ALGORITHM.into(),
                min_size: options.chunker.min_size,
                avg_size: options.chunker.avg_size,
                max_size: options.chunker.max_size,
            },
            compression: CompressionConfig { algorithm: "zstd".into(), level: options.compression_level },
            pack_size: options.pack_size,
            repository_public_key: hex::encode(material.repository_public()),
        };
        config.validate().map_err(Error::InvalidArgument)?;

        // Some S3 servers create a missing bucket on the first write; cairn
        // never creates buckets, so check that the location exists first.
        backend.probe().await?;
        match backend.config_exists().await {
            Ok(true) => return Err(Error::RepositoryExists { location: backend.location().into() }),
            Ok(false) => {}
            Err(e) => return Err(explain_missing(&backend, e).await),
        }
        let key_file = KeyFile::create(&material, password, kdf, crate::util::hostname(), crate::util::username())
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let key_bytes = key_file.encode();
        let key_id = Id::of_object(&key_bytes);
        let key_bytes_for_cache = key_bytes.clone();
        // Key first, config last: a crash in between leaves no repository
        // (an orphan key file only), and `config` is the commit point.
        backend
            .write_new(FileKind::Key, &key_id, vec![key_bytes.into()])
            .await
            .map_err(|e| explain_write(&backend, e))?;
        let config_bytes = config.encode(&material);
        match backend.write_config(config_bytes.clone()).await {
            Ok(WriteOutcome::Created) => {}
            // A retried create whose first attempt landed finds its own config.
            Ok(WriteOutcome::AlreadyExists) if backend.read_config().await.is_ok_and(|b| b[..] == config_bytes[..]) => {
            }
            Ok(WriteOutcome::AlreadyExists) => {
                // Another `init` won the race: leave its repository untouched.
                let _ = backend.delete(FileKind::Key, &key_id).await;
                return Err(Error::RepositoryExists { location: backend.location().into() });
            }
            Err(e) => return Err(e),
        }
        let cache = open_cache(&open, &config.id);
        // Remember what a write-only client needs to open it later.
        if let (Some(base), Some(c)) = (&open.cache_dir, &cache) {
            Cache::remember_config(base, backend.location(), &config_bytes);
            c.put(FileKind::Key, &key_id, &key_bytes_for_cache);
            c.set_key_hint(&key_id);
        }
        Ok(Self::assemble(backend, config, material, key_id, cache, &open))
    }

    /// Opens the repository at `backend` with `password`.
    pub async fn open(backend: Backend, password: &[u8], options: OpenOptions) -> Result<Repository> {
        let config_bytes = match backend.read_config().await {
            Ok(b) => b,
            Err(denied @ Error::AccessDenied { .. }) => {
                // Perhaps write-only credentials: open from what the cache
                // remembers of an earlier, readable visit.
                return match Self::open_remembered(&backend, password, &options)? {
                    Some(repo) => Ok(repo),
                    None => Err(denied),
                };
            }
            Err(e) => return Err(explain_missing(&backend, e).await),
        };
        if let Some(base) = &options.cache_dir {
            Cache::remember_config(base, backend.location(), &config_bytes);
        }
        let repo_id = Config::peek_id(&config_bytes)?;
        let cache = open_cache(&options, &repo_id);
        let mut key_ids: Vec<Id> = backend.list(FileKind::Key).await?.into_iter().map(|(id, _)| id).collect();
        if key_ids.is_empty() {
            return Err(Error::NoKeys { location: backend.location().into() });
        }
        // Each try costs an Argon2id run: start with the key that opened last time.
        if let Some(hint) = cache.as_ref().and_then(Cache::key_hint) {
            key_ids.sort_by_key(|id| *id != hint);
        }
        let mut damaged: Vec<Error> = Vec::new();
        for key_id in &key_ids {
            let bytes = match read_verified(&backend, cache.as_ref(), FileKind::Key, key_id).await {
                Ok(b) => b,
                Err(e) if e.is_corruption() => {
                    damaged.push(e);
                    continue;
                }
                // Removed since the listing (another host's `key passwd`).
                Err(Error::ObjectNotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            let file = match KeyFile::decode(&bytes) {
                Ok(f) => f,
                Err(e) => {
                    damaged.push(Error::corrupt(format!("keys/{key_id}"), FormatError::Json(e.to_string())));
                    continue;
                }
            };
            match file.unlock(password) {
                Ok(material) => {
                    let config = Config::decode(&config_bytes, &material).map_err(|e| match e {
                        Error::Corrupt { source: FormatError::Crypto(_) | FormatError::Mismatch(_), .. } => Error::corrupt(
                            "config",
                            FormatError::Mismatch(format!(
                                "it does not open with key keys/{key_id} (damaged, or that key belongs to another repository)"
                            )),
                        ),
                        other => other,
                    })?;
                    if let Some(c) = &cache {
                        c.retain(FileKind::Key, &key_ids.iter().copied().collect());
                        c.set_key_hint(key_id);
                    }
                    return Ok(Self::assemble(backend, config, material, *key_id, cache, &options));
                }
                Err(KeyFileError::WrongPassword) => {}
                Err(KeyFileError::Malformed(m)) => {
                    damaged.push(Error::corrupt(format!("keys/{key_id}"), FormatError::Json(m)))
                }
            }
        }
        if damaged.len() == key_ids.len() {
            // Every key file is damaged: say which, rather than blame the password.
            return Err(damaged.remove(0));
        }
        Err(Error::WrongPassword {
            location: backend.location().into(),
            tried: key_ids.len() - damaged.len(),
            damaged: damaged.iter().map(ToString::to_string).collect(),
        })
    }

    /// Opens a repository whose storage refuses reads, from the config and
    /// key file cached by an earlier visit. Such a repository is
    /// [`write_only`](Repository::write_only). `None` when nothing is cached.
    fn open_remembered(backend: &Backend, password: &[u8], options: &OpenOptions) -> Result<Option<Repository>> {
        let Some(base) = &options.cache_dir else { return Ok(None) };
        let Some(config_bytes) = Cache::remembered_config(base, backend.location()) else { return Ok(None) };
        let repo_id = Config::peek_id(&config_bytes)?;
        let Some(cache) = open_cache(options, &repo_id) else { return Ok(None) };
        let Some(key_id) = cache.key_hint() else { return Ok(None) };
        let Some(bytes) = cache.get(FileKind::Key, &key_id) else { return Ok(None) };
        let file = KeyFile::decode(&bytes)
            .map_err(|e| Error::corrupt(format!("cached keys/{key_id}"), FormatError::Json(e.to_string())))?;
        let material = match file.unlock(password) {
            Ok(m) => m,
            Err(KeyFileError::WrongPassword) => {
                return Err(Error::WrongPassword {
                    location: backend.location().into(),
                    tried: 1,
                    damaged: Vec::new(),
                });
            }
            Err(KeyFileError::Malformed(m)) => {
                return Err(Error::corrupt(format!("cached keys/{key_id}"), FormatError::Json(m)));
            }
        };
        let config = Config::decode(&config_bytes, &material)?;
        let mut repo = Self::assemble(backend.clone(), config, material, key_id, Some(cache), options);
        Arc::get_mut(&mut repo.inner).expect("just built").write_only = true;
        Ok(Some(repo))
    }

    /// Opens the repository at `backend`, or creates it with `init` when
    /// there is none yet: a repository initialised on first use.
    pub async fn open_or_init(
        backend: Backend,
        password: &[u8],
        init: InitOptions,
        open: OpenOptions,
    ) -> Result<Repository> {
        match Repository::open(backend.clone(), password, open.clone()).await {
            Err(Error::RepositoryNotFound { .. }) => Repository::init(backend, password, init, open).await,
            other => other,
        }
    }

    /// Whether this client can read the repository: false for a put-only
    /// key and for write-only storage credentials (such a client backs up
    /// from local state and never deduplicates against the index).
    pub fn can_read(&self) -> bool {
        self.inner.keys.master().is_some() && !self.inner.write_only
    }

    /// True when the storage refused reads and the repository was opened
    /// from the cache: it can take new backups but nothing can be read.
    pub fn write_only(&self) -> bool {
        self.inner.write_only
    }

    fn assemble(
        backend: Backend,
        config: Config,
        keys: KeyMaterial,
        key_id: Id,
        cache: Option<Cache>,
        options: &OpenOptions,
    ) -> Repository {
        let chunker = Chunker::new(config.chunker_params(), GearTable::from_secret(keys.chunker_secret()))
            .expect("config validation checked the chunker parameters");
        Repository {
            inner: Arc::new(Inner {
                config,
                keys,
                key_id,
                chunker,
                session_keys: Mutex::new(HashMap::new()),
                write_only: false,
                minimum_grace: options.minimum_grace,
                tree_packs: TreePacks::wanted(&backend, cache.as_ref()).then(TreePacks::default),
                backend,
                cache,
            }),
        }
    }

    /// The storage backend.
    pub fn backend(&self) -> &Backend {
        &self.inner.backend
    }

    /// Where the repository is, as shown to users.
    pub fn location(&self) -> &str {
        self.inner.backend.location()
    }

    /// The repository configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The repository id.
    pub fn id(&self) -> Id {
        self.inner.config.id
    }

    /// The key file this session was opened with.
    pub fn key_id(&self) -> Id {
        self.inner.key_id
    }

    /// The secrets of the key in use.
    pub fn keys(&self) -> &KeyMaterial {
        &self.inner.keys
    }

    /// The repository's chunker (keyed with its secret gear table).
    pub fn chunker(&self) -> &Chunker {
        &self.inner.chunker
    }

    /// The shortest grace period prune accepts, and the session age after
    /// which writers check their reused packs ([`OpenOptions::minimum_grace`]).
    pub fn minimum_grace(&self) -> Duration {
        self.inner.minimum_grace
    }

    /// The metadata cache, when enabled.
    pub fn cache(&self) -> Option<&Cache> {
        self.inner.cache.as_ref()
    }

    /// The content id of a blob.
    pub fn content_id(&self, plaintext: &[u8]) -> Id {
        self.inner.keys.content_id(plaintext)
    }

    /// The data key of a session, computed once and cached.
    pub(crate) fn session_key(&self, session_public: &[u8; 32], object: &str) -> Result<SecretKey> {
        if let Some(k) = self.inner.session_keys.lock().expect("session key cache poisoned").get(session_public) {
            return Ok(k.clone());
        }
        let key = self.inner.keys.session_key(session_public).map_err(|e| match e {
            SessionKeyError::PutOnly => Error::PutOnlyKey { action: "read repository data" },
            SessionKeyError::Crypto(c) => Error::corrupt(object.to_string(), c),
        })?;
        self.inner.session_keys.lock().expect("session key cache poisoned").insert(*session_public, key.clone());
        Ok(key)
    }

    // ----- keys -----

    /// Lists the key files.
    pub async fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        let backend = &self.inner.backend;
        let ids = backend.list(FileKind::Key).await?;
        let mut out = Vec::with_capacity(ids.len());
        for (id, _) in ids {
            let current = id == self.inner.key_id;
            // From the storage, not the cache: a cached copy would hide damage.
            let file = read_verified(backend, None, FileKind::Key, &id).await.and_then(|b| {
                KeyFile::decode(&b).map_err(|e| Error::corrupt(format!("keys/{id}"), FormatError::Json(e.to_string())))
            });
            out.push(match file {
                Ok(f) => KeyInfo {
                    id,
                    current,
                    kind: Some(f.kind),
                    created: Some(f.created),
                    hostname: f.hostname,
                    username: f.username,
                    kdf_memory_kib: f.kdf.memory_kib(),
                    problem: None,
                },
                Err(e) => KeyInfo {
                    id,
                    current,
                    kind: None,
                    created: None,
                    hostname: String::new(),
                    username: String::new(),
                    kdf_memory_kib: None,
                    problem: Some(e.to_string()),
                },
            });
        }
        out.sort_by_key(|k| (k.created, k.id));
        Ok(out)
    }

    /// Adds a key for `password`. A put-only key can be made from a full key
    /// only; a full key cannot be made from a put-only one.
    pub async fn add_key(&self, password: &[u8], options: KeyOptions) -> Result<Id> {
        let material = match (options.kind, self.inner.keys.kind()) {
            (KeyKind::Full, KeyKind::Full) => self.inner.keys.clone(),
            (KeyKind::PutOnly, _) => self.inner.keys.to_put_only(),
            (KeyKind::Full, KeyKind::PutOnly) => return Err(Error::PutOnlyKey { action: "add a full key" }),
        };
        let kdf = validate_kdf(options.password_kind, password, options.kdf_memory_kib, options.kdf_iterations)?;
        let file = KeyFile::create(&material, password, kdf, options.hostname, options.username)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let bytes = file.encode();
        let id = Id::of_object(&bytes);
        self.inner.backend.write_new(FileKind::Key, &id, vec![bytes.into()]).await?;
        Ok(id)
    }

    /// Removes a key file. Refuses to remove the key in use (use
    /// [`Repository::change_password`]) or the last full key.
    pub async fn remove_key(&self, id: &Id) -> Result<()> {
        if *id == self.inner.key_id {
            return Err(Error::InvalidArgument(format!(
                "key {} is the one this command was opened with; open with another key to remove it (or use `key passwd`)",
                id.short()
            )));
        }
        let keys = self.list_keys().await?;
        let target = keys.iter().find(|k| k.id == *id).ok_or_else(|| Error::NoSuchId(format!("no key {id}")))?;
        let full_left = keys.iter().filter(|k| k.id != *id && k.kind == Some(KeyKind::Full)).count();
        if target.kind == Some(KeyKind::Full) && full_left == 0 {
            return Err(Error::InvalidArgument(
                "refusing to remove the last full key: the repository could never be read again".into(),
            ));
        }
        if self.inner.keys.kind() == KeyKind::PutOnly {
            return Err(Error::PutOnlyKey { action: "remove keys" });
        }
        self.inner.backend.delete(FileKind::Key, id).await
    }

    /// Replaces the current key with one for `new_password`: the new key file
    /// is written before the old one is removed, so a crash leaves both. It
    /// keeps the old key's kind and label (host and user).
    pub async fn change_password(&self, new_password: &[u8], options: KeyOptions) -> Result<Id> {
        // The new key file keeps the old one's label (host and user it
        // was made for, e.g. a put-only key's `--host web1`).
        let old = read_verified(&self.inner.backend, self.cache(), FileKind::Key, &self.inner.key_id)
            .await
            .ok()
            .and_then(|bytes| KeyFile::decode(&bytes).ok());
        let (hostname, username) = match old {
            Some(file) => (file.hostname, file.username),
            None => (options.hostname.clone(), options.username.clone()),
        };
        let options = KeyOptions { kind: self.inner.keys.kind(), hostname, username, ..options };
        let new_id = self.add_key(new_password, options).await?;
        self.inner.backend.delete(FileKind::Key, &self.inner.key_id).await?;
        Ok(new_id)
    }

    // ----- reading -----

    /// Resolves a hex prefix (or full id) of an object of `kind`.
    pub async fn find_id(&self, kind: FileKind, prefix: &str) -> Result<Id> {
        if let Ok(id) = prefix.parse::<Id>() {
            return Ok(id);
        }
        let what = kind.dir();
        if prefix.is_empty() || !prefix.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::NoSuchId(format!("{prefix:?} is not an id or id prefix (hex digits)")));
        }
        let matches: Vec<Id> = self
            .inner
            .backend
            .list(kind)
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| id.has_hex_prefix(prefix))
            .collect();
        match matches.as_slice() {
            [one] => Ok(*one),
            [] => Err(Error::NoSuchId(format!("no object in {what}/ starts with {prefix}"))),
            many => Err(Error::NoSuchId(format!(
                "{prefix} is ambiguous: {} objects in {what}/ start with it; give more digits",
                many.len()
            ))),
        }
    }

    /// Reads a sealed object (index file or snapshot) and returns its payload.
    async fn read_sealed(&self, kind: FileKind, magic: &[u8; 8], id: &Id) -> Result<Vec<u8>> {
        let name = kind.relative_path(id);
        let bytes = read_verified(&self.inner.backend, self.cache(), kind, id).await?;
        let session = envelope::key_ref(magic, &bytes).map_err(|e| Error::corrupt(&name, e))?;
        let key = self.session_key(&session, &name)?;
        envelope::open_object(magic, &bytes, &key).map_err(|e| Error::corrupt(name, e))
    }

    /// Reads and decodes one index file.
    pub async fn read_index_file(&self, id: &Id) -> Result<IndexFile> {
        let name = FileKind::Index.relative_path(id);
        let payload = self.read_sealed(FileKind::Index, &INDEX_MAGIC, id).await?;
        let (body, authenticator) =
            crate::format::index::split_authenticator(&payload).map_err(|e| Error::corrupt(&name, e))?;
        let mut file = IndexFile::decode(body).map_err(|e| Error::corrupt(&name, e))?;
        file.authenticated =
            authenticator != [0; 32] && self.inner.keys.index_authenticator(body) == Some(authenticator);
        if authenticator != [0; 32] && !file.authenticated {
            // Storage damage cannot cause this (the payload is sealed): only a
            // writer with the session key forging a full key's authenticator.
            tracing::warn!(
                "{name} claims to be written by a full key but its authenticator does not verify; not trusted"
            );
        }
        Ok(file)
    }

    /// Loads every index file (in parallel, from the cache where possible).
    /// An unreadable index file is an error unless an authenticated file
    /// supersedes it (as `repair index` writes).
    pub async fn load_index(&self) -> Result<Index> {
        let index = Index::from_files(self.load_index_files().await?.files);
        if let (Some(_), Some(cache)) = (&self.inner.tree_packs, self.cache()) {
            // Cached tree packs that prune deleted go too.
            cache.retain(FileKind::Pack, &index.packs().iter().map(|p| *p.id).collect());
        }
        Ok(index)
    }

    /// Reads every index file: the ones that decode (superseded or not), and
    /// the ids of unreadable ones that an authenticated file supersedes
    /// (any other unreadable file is an error).
    ///
    /// A listing is not a snapshot of the store: one taken while a prune
    /// writes new files and then a file superseding the old ones may show
    /// the superseding file but miss one written just before it. So the
    /// directory is listed twice: everything created before the first
    /// listing ended is in the second.
    pub async fn load_index_files(&self) -> Result<IndexFiles> {
        let list = || async {
            Ok::<Vec<Id>, Error>(
                self.inner.backend.list(FileKind::Index).await?.into_iter().map(|(id, _)| id).collect(),
            )
        };
        let read = |ids: Vec<Id>| async move {
            futures::stream::iter(ids)
                .map(|id| async move { (id, self.read_index_file(&id).await) })
                .buffer_unordered(16)
                .collect::<Vec<(Id, Result<IndexFile>)>>()
                .await
        };
        let mut ids: Vec<Id> = list().await?;
        let mut results = read(ids.clone()).await;
        let seen: HashSet<Id> = ids.iter().copied().collect();
        let late: Vec<Id> = list().await?.into_iter().filter(|id| !seen.contains(id)).collect();
        ids.extend(late.iter().copied());
        results.extend(read(late).await);
        // A file deleted since the listing was superseded (only prune
        // deletes index files, and only superseded ones).
        results.retain(|(id, r)| match r {
            Err(Error::ObjectNotFound { .. }) => {
                tracing::debug!("index file {} was deleted while loading", id.short());
                false
            }
            _ => true,
        });
        let superseded: HashSet<Id> = results
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok())
            .filter(|f| f.authenticated)
            .flat_map(|f| f.supersedes.iter().copied())
            .collect();
        let mut out = IndexFiles::default();
        for (id, result) in results {
            match result {
                Ok(file) => out.files.push((id, file)),
                Err(e) if superseded.contains(&id) => {
                    tracing::debug!("ignoring superseded index file {}: {e}", id.short());
                    out.unreadable_superseded.push(id);
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(c) = self.cache() {
            c.retain(FileKind::Index, &ids.into_iter().collect());
        }
        Ok(out)
    }

    /// Reads one deletion record (`trash/<id>`, written by prune).
    pub async fn read_trash_record(&self, id: &Id) -> Result<crate::maintenance::trash::TrashRecord> {
        let name = FileKind::Trash.relative_path(id);
        let payload = self.read_sealed(FileKind::Trash, &crate::format::envelope::TRASH_MAGIC, id).await?;
        let (body, authenticator) =
            crate::format::index::split_authenticator(&payload).map_err(|e| Error::corrupt(&name, e))?;
        let mut record = crate::maintenance::trash::TrashRecord::decode(body).map_err(|e| Error::corrupt(&name, e))?;
        record.authenticated =
            authenticator != [0; 32] && self.inner.keys.index_authenticator(body) == Some(authenticator);
        Ok(record)
    }

    /// Reads one snapshot.
    pub async fn read_snapshot(&self, id: &SnapshotId) -> Result<Snapshot> {
        let payload = self.read_sealed(FileKind::Snapshot, &SNAPSHOT_MAGIC, id).await?;
        serde_json::from_slice(&payload)
            .map_err(|e| Error::corrupt(FileKind::Snapshot.relative_path(id), FormatError::Json(e.to_string())))
    }

    /// All snapshots that can be read, oldest first. A damaged snapshot
    /// file is left out with a warning (see
    /// [`list_snapshots_with_damage`](Repository::list_snapshots_with_damage)):
    /// one bad file must not hide every other snapshot. Any other failure
    /// (the storage, the network) fails the listing: a snapshot that could
    /// not be read is never taken for one that does not exist.
    pub async fn list_snapshots(&self) -> Result<Vec<(SnapshotId, Snapshot)>> {
        let listing = self.list_snapshots_with_damage().await?;
        for (id, e) in &listing.damaged {
            tracing::warn!("snapshot {} is left out: {e}", id.short());
        }
        Ok(listing.snapshots)
    }

    /// Every snapshot, oldest first, and separately the snapshot files
    /// that are damaged (they do not decrypt or decode).
    pub async fn list_snapshots_with_damage(&self) -> Result<SnapshotListing> {
        let ids: Vec<Id> = self.inner.backend.list(FileKind::Snapshot).await?.into_iter().map(|(id, _)| id).collect();
        let results: Vec<(SnapshotId, Result<Snapshot>)> = futures::stream::iter(ids.iter().copied())
            .map(|id| async move { (SnapshotId(id), self.read_snapshot(&SnapshotId(id)).await) })
            .buffer_unordered(16)
            .collect()
            .await;
        let mut listing = SnapshotListing::default();
        for (id, result) in results {
            match result {
                Ok(snapshot) => listing.snapshots.push((id, snapshot)),
                Err(e) if e.is_corruption() => listing.damaged.push((id, e)),
                // Removed since the listing (forget, repair): not damage.
                Err(Error::ObjectNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(c) = self.cache() {
            c.retain(FileKind::Snapshot, &ids.into_iter().collect::<HashSet<_>>());
        }
        listing.snapshots.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        listing.damaged.sort_by_key(|(id, _)| *id);
        Ok(listing)
    }

    /// Reads and decrypts the header of a pack.
    pub async fn read_pack_header(&self, id: &Id) -> Result<PackHeader> {
        let backend = &self.inner.backend;
        let name = FileKind::Pack.relative_path(id);
        let size = backend.size(FileKind::Pack, id).await?;
        // One read usually covers the header: 64 KiB holds ~1,500 entries.
        let first = backend.read_range(FileKind::Pack, id, 0..size.min(64 * 1024)).await?;
        let (session, header_len) = pack::decode_preamble(&first).map_err(|e| Error::corrupt(&name, e))?;
        let header_end = (pack::PREAMBLE_LEN as u64 + header_len as u64).min(size);
        let prefix = if header_end as usize <= first.len() {
            first
        } else {
            backend.read_range(FileKind::Pack, id, 0..header_end).await?
        };
        let key = self.session_key(&session, &name)?;
        pack::decode_header(&prefix, size, &key).map_err(|e| Error::corrupt(name, e))
    }

    /// Reads, decrypts and verifies one blob.
    pub async fn read_blob(&self, index: &Index, id: &Id) -> Result<Vec<u8>> {
        let (pack, loc) = index.get(id).ok_or(Error::BlobNotFound(*id))?;
        if let Some(packs) = self.tree_packs_for(&loc) {
            let whole = packs.get(&self.inner.backend, self.cache(), &pack.id).await?;
            return self.open_blob(pack, &loc, id, blob_in(&whole, pack, &loc)?);
        }
        let sealed = self
            .inner
            .backend
            .read_range(FileKind::Pack, &pack.id, loc.offset as u64..loc.offset as u64 + loc.length as u64)
            .await?;
        self.open_blob(pack, &loc, id, &sealed)
    }

    /// [`read_blob`](Repository::read_blob) for blocking threads (a local
    /// repository is read without going through the runtime).
    pub fn read_blob_blocking(&self, handle: &tokio::runtime::Handle, index: &Index, id: &Id) -> Result<Vec<u8>> {
        let (pack, loc) = index.get(id).ok_or(Error::BlobNotFound(*id))?;
        if let Some(packs) = self.tree_packs_for(&loc) {
            let whole = handle.block_on(packs.get(&self.inner.backend, self.cache(), &pack.id))?;
            return self.open_blob(pack, &loc, id, blob_in(&whole, pack, &loc)?);
        }
        let range = loc.offset as u64..loc.offset as u64 + loc.length as u64;
        let sealed = self.inner.backend.read_range_blocking(handle, FileKind::Pack, &pack.id, range)?;
        self.open_blob(pack, &loc, id, &sealed)
    }

    /// Whether tree packs are read whole and kept in the local cache (a
    /// network store with a cache; see [`TreePacks`]).
    pub(crate) fn reads_tree_packs_whole(&self) -> bool {
        self.inner.tree_packs.is_some()
    }

    /// Keeps a tree pack this process uploaded in the local cache.
    pub(crate) fn keep_tree_pack(&self, id: &Id, parts: &[bytes::Bytes]) {
        if let (Some(_), Some(cache)) = (&self.inner.tree_packs, self.cache()) {
            cache.put(FileKind::Pack, id, &parts.concat());
        }
    }

    /// Where a tree blob at `loc` is read whole-pack (see
    /// [`TreePacks`]): a network store with a cache.
    fn tree_packs_for(&self, loc: &BlobLocation) -> Option<&TreePacks> {
        self.inner.tree_packs.as_ref().filter(|_| loc.blob_type == BlobType::Tree)
    }

    /// [`read_blob_blocking`](Repository::read_blob_blocking) of a blob
    /// that must be of type `expected`: a snapshot that names a data blob
    /// where a tree belongs (or the reverse) is refused before any byte is
    /// read, rather than decoded as something it is not.
    pub(crate) fn read_blob_as_blocking(
        &self,
        handle: &tokio::runtime::Handle,
        index: &Index,
        id: &Id,
        expected: BlobType,
    ) -> Result<Vec<u8>> {
        if let Some((_, loc)) = index.get(id) {
            if loc.blob_type != expected {
                return Err(Error::corrupt(format!("blob {id}"), wrong_blob_type(loc.blob_type, expected)));
            }
        }
        self.read_blob_blocking(handle, index, id)
    }

    /// Like [`open_blob`](Repository::open_blob), with the plaintext in
    /// `scratch` (reused across blobs by callers that open many).
    pub fn open_blob_into<'s>(
        &self,
        pack: &PackInfo,
        loc: &BlobLocation,
        id: &Id,
        sealed: &[u8],
        scratch: &'s mut crate::format::blob::BlobScratch,
    ) -> Result<&'s [u8]> {
        let object = || format!("blob {} in pack {}", id, FileKind::Pack.relative_path(&pack.id));
        let key = self.session_key(&pack.session_public, &object())?;
        blob::open_into(&key, &self.inner.keys, loc.blob_type, id, loc.raw_length, sealed, scratch)
            .map_err(|e| Error::corrupt(object(), e))
    }

    /// Decrypts and verifies blob `id` from its sealed bytes, read from
    /// `pack` at `loc` (for callers that fetch ranges of packs themselves).
    pub fn open_blob(&self, pack: &PackInfo, loc: &BlobLocation, id: &Id, sealed: &[u8]) -> Result<Vec<u8>> {
        let object = || format!("blob {} in pack {}", id, FileKind::Pack.relative_path(&pack.id));
        let key = self.session_key(&pack.session_public, &object())?;
        blob::open(&key, &self.inner.keys, loc.blob_type, id, loc.raw_length, sealed)
            .map_err(|e| Error::corrupt(object(), e))
    }
}

/// Why a blob of type `found` cannot stand where a `expected` blob belongs.
pub(crate) fn wrong_blob_type(found: BlobType, expected: BlobType) -> FormatError {
    FormatError::Mismatch(format!(
        "it is a {found} blob where the snapshot needs a {expected} blob: a damaged or crafted snapshot"
    ))
}

fn open_cache(options: &OpenOptions, id: &Id) -> Option<Cache> {
    let base = options.cache_dir.as_ref()?;
    match Cache::open(base, id) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!("metadata cache disabled: cannot create it under {}: {e}", base.display());
            None
        }
    }
}

/// Reads an object (from the cache if there) and checks it hashes to its name.
/// A blob's sealed bytes inside its whole pack.
fn blob_in<'a>(pack_bytes: &'a [u8], pack: &PackInfo, loc: &BlobLocation) -> Result<&'a [u8]> {
    let (start, end) = (loc.offset as usize, loc.offset as usize + loc.length as usize);
    pack_bytes.get(start..end).ok_or_else(|| {
        Error::corrupt(
            FileKind::Pack.relative_path(&pack.id),
            FormatError::Mismatch(format!("a blob at {start}..{end} lies past its end ({} bytes)", pack_bytes.len())),
        )
    })
}

async fn read_verified(backend: &Backend, cache: Option<&Cache>, kind: FileKind, id: &Id) -> Result<Vec<u8>> {
    if let Some(bytes) = cache.and_then(|c| c.get(kind, id)) {
        return Ok(bytes);
    }
    let mut bytes = backend.read(kind, id).await?;
    let mut actual = Id::of_object(&bytes);
    // A store without atomic create (rclone) shows an upload in progress
    // under its final name: a listed index file or snapshot may still be
    // arriving. Read it again a few times before calling it corrupt.
    if actual != *id && backend.create_fallback_reason().is_some() {
        for wait_ms in [250, 1000, 3000] {
            tokio::time::sleep(std::time::Duration::from_millis(wait_ms)).await;
            bytes = backend.read(kind, id).await?;
            actual = Id::of_object(&bytes);
            if actual == *id {
                break;
            }
        }
    }
    if actual != *id {
        return Err(Error::corrupt(
            kind.relative_path(id),
            FormatError::Mismatch(format!("its content hashes to {}, not to its name", actual.short())),
        ));
    }
    // Deletion records are read once per prune and then deleted: not cached.
    if let Some(c) = cache.filter(|_| kind != FileKind::Trash) {
        c.put(kind, id, &bytes);
    }
    Ok(bytes.to_vec())
}

/// Turns "config not found" into the precise reason: no bucket, no access,
/// no server, or no repository.
async fn explain_missing(backend: &Backend, e: Error) -> Error {
    match e {
        Error::ObjectNotFound { .. } => match backend.probe().await {
            Ok(()) => Error::RepositoryNotFound { location: backend.location().into() },
            Err(probe) => probe,
        },
        other => other,
    }
}

fn explain_write(backend: &Backend, e: Error) -> Error {
    match e {
        Error::ObjectNotFound { .. } => Error::BucketNotFound { location: backend.location().into() },
        other => other,
    }
}
