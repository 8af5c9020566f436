//! `wal-get`: PostgreSQL's `restore_command`. A file is found (written to
//! `%p`), absent (the repository's listing says no batch holds it), or an
//! error: the caller must tell PostgreSQL "absent" only for
//! [`GetOutcome::Absent`], since an absent file ends recovery.
//!
//! Only the file asked for is fetched before answering. The next segments
//! of its timeline are fetched into the spool (`get/<name>`) by
//! [`prefetch`], which the caller runs in the background (the CLI starts a
//! detached process), so that replay and fetching overlap and the
//! following calls are served from the spool without opening the
//! repository. One prefetcher runs at a time (`get/prefetch.lock`); each
//! request notes its name (`get/requested`), so that a prefetcher does not
//! spool a segment recovery has already passed.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_repo::{Repository, Snapshot, SnapshotId, TreeLoader};

use super::super::catalog::{ArchivedCopy, ClusterWal, WalCatalog};
use super::super::layout::{WAL_DIR, WalFile, WalSegment};
use super::header;
use crate::error::{Error, Result};

/// What `wal-get` is asked.
#[derive(Debug, Clone)]
pub struct GetOptions {
    /// The file name (`%f`).
    pub name: String,
    /// Where to write it (`%p`).
    pub dest: PathBuf,
    /// The spool directory for prefetched files.
    pub spool: PathBuf,
    /// How many following segments to fetch along.
    pub prefetch: usize,
    /// The cluster; `None`: the one whose `global/pg_control` is in
    /// `pgdata`, else the repository's only cluster.
    pub system_identifier: Option<u64>,
    /// The data directory being recovered (PostgreSQL runs the command there).
    pub pgdata: PathBuf,
}

/// What `wal-get` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GetOutcome {
    /// Written to the destination.
    Found {
        /// Whether it came from the spool (no repository opened).
        from_spool: bool,
    },
    /// The repository holds no such file.
    Absent,
}

/// What to fetch for one request (pure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchPlan {
    /// The file is not archived.
    Absent,
    /// Fetch it, and the following segments.
    Fetch {
        /// The copy to read.
        wanted: ArchivedCopy,
        /// Following segments of the same timeline: name and copy.
        ahead: Vec<(String, ArchivedCopy)>,
    },
}

/// Plans a request: refuses a name archived with different contents.
pub fn plan_fetch(cluster: &ClusterWal, name: &str, prefetch: usize) -> std::result::Result<FetchPlan, String> {
    let Some(copies) = cluster.files.get(name) else { return Ok(FetchPlan::Absent) };
    let unique = |name: &str, copies: &[ArchivedCopy]| -> std::result::Result<ArchivedCopy, String> {
        let hashes = cluster.hashes(name);
        if hashes.len() > 1 {
            return Err(format!(
                "{name} is archived with {} different contents (BLAKE3 {}): refusing to guess which is right; see `cairn pg check`",
                hashes.len(),
                hashes.join(", ")
            ));
        }
        copies.first().cloned().ok_or_else(|| format!("{name} has no copy"))
    };
    let wanted = unique(name, copies)?;
    let mut ahead = Vec::new();
    if let Ok(WalFile::Segment(seg)) = WalFile::parse(name, cluster.segment_size) {
        let mut next: WalSegment = seg;
        for _ in 0..prefetch {
            next = next.next();
            let next_name = next.name(cluster.segment_size);
            match cluster.files.get(&next_name) {
                Some(copies) => match unique(&next_name, copies) {
                    Ok(copy) => ahead.push((next_name, copy)),
                    Err(_) => break,
                },
                None => break,
            }
        }
    }
    Ok(FetchPlan::Fetch { wanted, ahead })
}

fn spool_path(spool: &Path, name: &str) -> PathBuf {
    spool.join("get").join(name)
}

fn requested_path(spool: &Path) -> PathBuf {
    spool.join("get").join("requested")
}

/// Serves `name` from the spool if it was fetched ahead: moves it to the
/// destination. No repository is opened. Notes the request either way (see
/// the module documentation).
pub fn get_from_spool(options: &GetOptions) -> Result<bool> {
    let dir = options.spool.join("get");
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    write_atomically(&requested_path(&options.spool), options.name.as_bytes())?;
    let path = spool_path(&options.spool, &options.name);
    if !path.exists() {
        return Ok(false);
    }
    std::fs::rename(&path, &options.dest)
        .map_err(|e| Error::io(format!("cannot move {} to {}", path.display(), options.dest.display()), e))?;
    Ok(true)
}

/// Whether `a` is a segment of the same timeline as `b` that comes before
/// it (or is it). Segment names are 24 hex digits, timeline first, so one
/// timeline's names sort in WAL order.
fn at_or_before(a: &str, b: &str) -> bool {
    is_segment_name(a) && is_segment_name(b) && a[..8] == b[..8] && a <= b
}

fn is_segment_name(name: &str) -> bool {
    name.len() == 24 && name.bytes().all(|c| c.is_ascii_hexdigit())
}

/// After serving `options.name`: removes spooled segments of its timeline
/// that recovery has passed, and says whether a background [`prefetch`]
/// should start: fewer than half of `options.prefetch` segments wait ahead
/// of it, and no prefetcher runs.
pub fn needs_prefetch(options: &GetOptions) -> Result<bool> {
    if options.prefetch == 0 || !is_segment_name(&options.name) {
        return Ok(false);
    }
    let dir = options.spool.join("get");
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(Error::io(format!("cannot list {}", dir.display()), e)),
    };
    let mut ahead = 0;
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str() else { continue };
        if at_or_before(name, &options.name) {
            // Best effort: a file left behind costs space, not correctness.
            let _ = std::fs::remove_file(entry.path());
        } else if at_or_before(&options.name, name) {
            ahead += 1;
        }
    }
    if ahead * 2 >= options.prefetch {
        return Ok(false);
    }
    Ok(super::spool::try_lock_file(&dir.join("prefetch.lock"))?.is_some())
}

/// The cluster to read: the one given, else the data directory's, else the
/// repository's only one.
pub fn choose_cluster(catalog: &WalCatalog, options: &GetOptions) -> Result<u64> {
    if let Some(id) = options.system_identifier {
        return Ok(id);
    }
    if let Ok(bytes) = std::fs::read(options.pgdata.join("global/pg_control")) {
        if let Some(first) = bytes.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
            return Ok(u64::from_le_bytes(first));
        }
    }
    match catalog.clusters.keys().collect::<Vec<_>>().as_slice() {
        [only] => Ok(**only),
        [] => Err(Error::Invalid("the repository holds no archived WAL (no pg-wal snapshots)".into())),
        many => Err(Error::Invalid(format!(
            "the repository holds WAL of {} clusters ({}) and {} has no pg_control to tell which: give the system identifier",
            many.len(),
            many.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", "),
            options.pgdata.display()
        ))),
    }
}

/// Reads a WAL file's content from its batch snapshot and checks its hash.
pub fn read_archived(loader: &TreeLoader, snapshot: &Snapshot, name: &str, blake3: &str) -> Result<Vec<u8>> {
    let root = loader.load(&snapshot.tree)?;
    let missing =
        || Error::Manifest(format!("the WAL batch's tree lacks {WAL_DIR}/{name} although its metadata lists it"));
    let dir = root.get(WAL_DIR.as_bytes()).and_then(|n| n.subtree).ok_or_else(missing)?;
    let dir = loader.load(&dir)?;
    let node = dir.get(name.as_bytes()).ok_or_else(missing)?;
    let mut bytes = Vec::new();
    loader.content(node).read_to_end(&mut bytes).map_err(|e| Error::io(format!("cannot read {name}"), e))?;
    let actual = blake3::hash(&bytes).to_hex().to_string();
    if actual != blake3 {
        return Err(Error::Mismatch(format!(
            "{name} read back with BLAKE3 {actual}, its batch recorded {blake3}: the repository is damaged (run `cairn check --read-data`)"
        )));
    }
    if !name.contains('.') {
        header::read_long_header(&bytes).map_err(|e| Error::Mismatch(format!("{name}: {e}")))?;
    }
    Ok(bytes)
}

/// Not durably: a file lost in a crash is fetched again.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    super::spool::replace_file(path, bytes, false)
}

/// Fetches the file asked for from the repository (the following segments
/// are [`prefetch`]'s).
pub async fn get_from_repository(repo: &Repository, options: &GetOptions) -> Result<GetOutcome> {
    let Some((plan, snapshots)) = plan_from_repository(repo, options, 0).await? else {
        return Ok(GetOutcome::Absent);
    };
    let FetchPlan::Fetch { wanted, .. } = plan else { return Ok(GetOutcome::Absent) };
    let index = Arc::new(repo.load_index().await?);
    let loader = TreeLoader::new(repo, index, tokio::runtime::Handle::current());
    let (name, dest) = (options.name.clone(), options.dest.clone());
    tokio::task::spawn_blocking(move || write_atomically(&dest, &read_copy(&loader, &snapshots, &wanted, &name)?))
        .await
        .map_err(|e| Error::Invalid(format!("wal-get failed: {e}")))??;
    Ok(GetOutcome::Found { from_spool: false })
}

/// Fetches up to `options.prefetch` segments that follow `options.name` on
/// its timeline into the spool, in order, skipping those already there and
/// those recovery has passed meanwhile. Returns how many it wrote; 0 at once
/// if another prefetcher runs. Failures end it quietly (logged): the file is
/// fetched again when it is asked for.
pub async fn prefetch(repo: &Repository, options: &GetOptions) -> Result<usize> {
    let dir = options.spool.join("get");
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    let Some(lock) = super::spool::try_lock_file(&dir.join("prefetch.lock"))? else { return Ok(0) };
    let Some((FetchPlan::Fetch { ahead, .. }, snapshots)) =
        plan_from_repository(repo, options, options.prefetch).await?
    else {
        return Ok(0);
    };
    if ahead.is_empty() {
        return Ok(0);
    }
    let index = Arc::new(repo.load_index().await?);
    let loader = TreeLoader::new(repo, index, tokio::runtime::Handle::current());
    let spool = options.spool.clone();
    let written = tokio::task::spawn_blocking(move || {
        let _lock = lock;
        let mut written = 0;
        for (next, copy) in &ahead {
            let path = spool_path(&spool, next);
            let passed = std::fs::read_to_string(requested_path(&spool)).is_ok_and(|r| at_or_before(next, r.trim()));
            if passed || path.exists() {
                continue;
            }
            match read_copy(&loader, &snapshots, copy, next).and_then(|b| write_atomically(&path, &b)) {
                Ok(()) => written += 1,
                Err(e) => {
                    tracing::warn!("prefetching {next}: {e}");
                    break;
                }
            }
        }
        written
    })
    .await
    .map_err(|e| Error::Invalid(format!("prefetching failed: {e}")))?;
    Ok(written)
}

type Snapshots = HashMap<SnapshotId, Snapshot>;

/// Lists the repository's WAL and plans the request (`None`: the cluster
/// has no WAL there).
async fn plan_from_repository(
    repo: &Repository,
    options: &GetOptions,
    prefetch: usize,
) -> Result<Option<(FetchPlan, Snapshots)>> {
    let listing = repo.list_snapshots().await?;
    let catalog = WalCatalog::from_snapshots(&listing);
    let sysid = choose_cluster(&catalog, options)?;
    let Some(cluster) = catalog.cluster(sysid) else { return Ok(None) };
    let plan = plan_fetch(cluster, &options.name, prefetch).map_err(Error::Mismatch)?;
    Ok(Some((plan, listing.into_iter().collect())))
}

fn read_copy(loader: &TreeLoader, snapshots: &Snapshots, copy: &ArchivedCopy, name: &str) -> Result<Vec<u8>> {
    let snapshot = snapshots
        .get(&copy.snapshot)
        .ok_or_else(|| Error::Manifest(format!("snapshot {} vanished", copy.snapshot.short())))?;
    read_archived(loader, snapshot, name, &copy.blake3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pitr::catalog::tests::batch;

    #[test]
    fn plans() {
        let list = vec![
            batch(1, 10, 7, &[("000000010000000000000001", "a"), ("000000010000000000000002", "b")]),
            batch(2, 20, 7, &[("000000010000000000000003", "c"), ("000000010000000000000005", "e")]),
            batch(3, 30, 7, &[("000000010000000000000003", "c"), ("000000010000000000000006", "f")]),
            batch(4, 40, 7, &[("000000010000000000000006", "g")]),
        ];
        let c = WalCatalog::from_snapshots(&list);
        let cluster = c.cluster(7).unwrap();
        let names = |p: &FetchPlan| match p {
            FetchPlan::Fetch { ahead, .. } => ahead.iter().map(|(n, _)| n[16..].to_owned()).collect::<Vec<_>>(),
            FetchPlan::Absent => vec!["absent".into()],
        };
        for (name, prefetch, expect) in [
            ("000000010000000000000001", 8, vec!["00000002", "00000003"]),
            ("000000010000000000000001", 1, vec!["00000002"]),
            ("000000010000000000000001", 0, vec![]),
            ("000000010000000000000004", 8, vec!["absent"]),
            ("00000002.history", 8, vec!["absent"]),
            ("000000010000000000000005", 8, vec![]), // 6 has two contents: not prefetched
        ] {
            assert_eq!(names(&plan_fetch(cluster, name, prefetch).unwrap()), expect, "{name} {prefetch}");
        }
        assert!(plan_fetch(cluster, "000000010000000000000006", 8).unwrap_err().contains("2 different contents"));
        // The same content twice is fine.
        assert!(plan_fetch(cluster, "000000010000000000000003", 8).is_ok());
    }

    #[test]
    fn clusters() {
        let dir = tempfile::tempdir().unwrap();
        let options = |sysid| GetOptions {
            name: "x".into(),
            dest: dir.path().join("d"),
            spool: dir.path().join("s"),
            prefetch: 0,
            system_identifier: sysid,
            pgdata: dir.path().to_owned(),
        };
        let one = WalCatalog::from_snapshots(&[batch(1, 10, 7, &[("000000010000000000000001", "a")])]);
        assert_eq!(choose_cluster(&one, &options(None)).unwrap(), 7);
        assert_eq!(choose_cluster(&one, &options(Some(9))).unwrap(), 9);
        let two = WalCatalog::from_snapshots(&[
            batch(1, 10, 7, &[("000000010000000000000001", "a")]),
            batch(2, 10, 8, &[("000000010000000000000001", "a")]),
        ]);
        assert!(choose_cluster(&two, &options(None)).unwrap_err().to_string().contains("2 clusters"));
        std::fs::create_dir(dir.path().join("global")).unwrap();
        std::fs::write(dir.path().join("global/pg_control"), 8u64.to_le_bytes()).unwrap();
        assert_eq!(choose_cluster(&two, &options(None)).unwrap(), 8);
        assert!(!get_from_spool(&options(None)).unwrap());
        std::fs::create_dir_all(dir.path().join("s/get")).unwrap();
        std::fs::write(dir.path().join("s/get/x"), b"wal").unwrap();
        assert!(get_from_spool(&options(None)).unwrap());
        assert_eq!(std::fs::read(dir.path().join("d")).unwrap(), b"wal");
        assert_eq!(std::fs::read_to_string(dir.path().join("s/get/requested")).unwrap(), "x");
    }

    #[test]
    fn a_prefetch_starts_when_the_spool_runs_low_and_none_runs() {
        let dir = tempfile::tempdir().unwrap();
        let get = dir.path().join("get");
        std::fs::create_dir_all(&get).unwrap();
        let options = |name: &str, prefetch| GetOptions {
            name: name.into(),
            dest: dir.path().join("d"),
            spool: dir.path().to_owned(),
            prefetch,
            system_identifier: None,
            pgdata: dir.path().to_owned(),
        };
        for n in 1..=6 {
            std::fs::write(get.join(format!("0000000100000000000000{n:02X}")), b"wal").unwrap();
        }
        std::fs::write(get.join("000000020000000000000001"), b"other timeline").unwrap();
        // At 02: 03..06 wait ahead (4 of 8: enough); 01 and 02 are passed.
        assert!(!needs_prefetch(&options("000000010000000000000002", 8)).unwrap());
        assert!(!get.join("000000010000000000000001").exists());
        assert!(!get.join("000000010000000000000002").exists());
        assert!(get.join("000000020000000000000001").exists(), "another timeline is left alone");
        // At 04: two wait ahead, fewer than half of 8.
        assert!(needs_prefetch(&options("000000010000000000000004", 8)).unwrap());
        assert!(!needs_prefetch(&options("000000010000000000000004", 0)).unwrap(), "prefetch off");
        assert!(!needs_prefetch(&options("00000002.history", 8)).unwrap(), "not a segment");
        // Not while a prefetcher holds the lock.
        let lock = super::super::spool::try_lock_file(&get.join("prefetch.lock")).unwrap().unwrap();
        assert!(!needs_prefetch(&options("000000010000000000000004", 8)).unwrap());
        drop(lock);
        assert!(needs_prefetch(&options("000000010000000000000004", 8)).unwrap());
    }
}
