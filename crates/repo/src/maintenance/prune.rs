//! Prune: deletes data that no snapshot references and repacks mostly-unused
//! packs, safely while other hosts keep backing up (FORMAT.md §12.3).
//!
//! One run, under the prune lease ([`crate::storage::lease`]):
//!
//! 1. **Read** the snapshots, *then* the index files (so every listed
//!    snapshot's index files are listed too) and the deletion records, and
//!    walk every snapshot's trees: the set of used blobs. A snapshot that
//!    needs a blob no index lists stops the run before anything changes.
//! 2. **Rescue**: a pack marked by an earlier run that holds a used blob
//!    found nowhere else (a backup that started before the mark reused it)
//!    is listed again in a new index file.
//! 3. **Sweep** the deletion records older than the grace period: delete
//!    their packs (unless re-indexed or rescued), then the index files they
//!    retired, then the record.
//! 4. **Mark**: packs with no used blob, packs worth repacking (their used
//!    blobs are first copied into new packs) and packs no index has listed
//!    for longer than the grace period go into a new deletion record; then
//!    new index files list the packs that stay and supersede the old ones.
//!    Nothing is deleted in the run that marks it.
//!
//! Every step is idempotent, so an interrupted prune is finished by the next
//! one. Memory is bounded by the index: the used-blob set and one entry per
//! pack.
//!
//! What to rescue, sweep, keep, repack and mark is decided by the pure
//! functions of `plan` (tested there as tables); this module does the
//! reading, walking, writing and deleting around them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::id::{Id, SnapshotId, TreeId};
use crate::format::index::{BlobLocation, Index, IndexFile, IndexedPack, PackInfo};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Extent, Tree};
use crate::maintenance::trash::TrashRecord;
use crate::repository::Repository;
use crate::storage::backend::FileKind;
use crate::storage::lease::Lease;
use crate::writing::writer::Writer;

mod plan;

use plan::{LateIndex, MarkInputs, MarkPlan, Pack, RecordSweep};

/// The grace period when none is given: a day, so that any backup that
/// runs daily finishes well within it.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);

/// Live index files beyond which prune rewrites the index even when it has
/// nothing to delete (each backup adds at least one small file).
const COMPACT_INDEX_FILES: usize = 64;

/// Requests in flight when deleting or reading packs.
const PARALLEL_REQUESTS: usize = 16;

/// The default of [`OpenOptions::minimum_grace`](crate::OpenOptions::minimum_grace),
/// the shortest grace period prune accepts: one hour. A backup session older
/// than this checks, before it publishes its snapshot, that the packs it
/// reused still exist; a shorter grace period would let a sweep delete data
/// that a younger backup reused, without that backup noticing.
pub const MINIMUM_GRACE: Duration = Duration::from_secs(3600);

/// How much unused data prune tolerates in packs it keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UnusedLimit {
    /// A percentage of the size of the packs that stay.
    Percent(f64),
    /// An absolute number of bytes.
    Bytes(u64),
    /// Never repack.
    Unlimited,
}

impl UnusedLimit {
    /// Parses `5%`, `unlimited` or a size (with `parse_size`, e.g. `1G`).
    pub fn parse(text: &str, parse_size: impl Fn(&str) -> Option<u64>) -> Result<UnusedLimit> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("unlimited") {
            return Ok(UnusedLimit::Unlimited);
        }
        if let Some(p) = text.strip_suffix('%') {
            return match p.trim().parse::<f64>() {
                Ok(p) if (0.0..=100.0).contains(&p) => Ok(UnusedLimit::Percent(p)),
                _ => Err(Error::InvalidArgument(format!("{text:?}: a percentage is 0% to 100%"))),
            };
        }
        parse_size(text).map(UnusedLimit::Bytes).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{text:?} is not a limit: use a percentage (5%), a size (2G) or `unlimited`"
            ))
        })
    }

    fn bytes(self, total: u64) -> u64 {
        match self {
            UnusedLimit::Percent(p) => (total as f64 * p / 100.0) as u64,
            UnusedLimit::Bytes(b) => b,
            UnusedLimit::Unlimited => u64::MAX,
        }
    }
}

/// What prune should do.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Unused data tolerated in kept packs before they are repacked.
    pub max_unused: UnusedLimit,
    /// At most this many bytes of used blobs are copied by repacking.
    pub max_repack_bytes: Option<u64>,
    /// How long marked packs wait before they are deleted.
    pub grace: Duration,
    /// Report what would be done; change nothing.
    pub dry_run: bool,
    /// Who holds the lease (shown to a prune that finds it held).
    pub owner: String,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            max_unused: UnusedLimit::Percent(5.0),
            max_repack_bytes: None,
            grace: DEFAULT_GRACE,
            dry_run: false,
            owner: format!("{} (pid {})", crate::util::hostname(), std::process::id()),
        }
    }
}

/// What a prune did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// Snapshots whose trees were walked.
    pub snapshots: usize,
    /// Distinct blobs they use.
    pub blobs_used: usize,
    /// Indexed packs, and their bytes.
    pub packs: usize,
    /// Bytes of the indexed packs.
    pub bytes: u64,
    /// Packs that stay.
    pub packs_kept: usize,
    /// Unused bytes left in packs that stay.
    pub unused_bytes_kept: u64,
    /// Packs marked for deletion in this run (unused, repacked or unindexed).
    pub packs_marked: usize,
    /// Their bytes.
    pub bytes_marked: u64,
    /// Of those, packs no index listed.
    pub unindexed_packs_marked: usize,
    /// Packs whose used blobs were copied into new packs.
    pub packs_repacked: usize,
    /// Bytes of used blobs copied.
    pub bytes_repacked: u64,
    /// Indexed packs that are missing from storage and hold nothing a
    /// snapshot needs (dropped from the index).
    pub missing_packs_dropped: usize,
    /// Index files written.
    pub index_files_written: usize,
    /// Deletion records still inside their grace period.
    pub records_pending: usize,
    /// Deletion records swept in this run.
    pub records_swept: usize,
    /// Marked packs listed again because a snapshot needs them.
    pub packs_rescued: usize,
    /// Packs deleted.
    pub packs_deleted: usize,
    /// Their bytes.
    pub bytes_deleted: u64,
    /// Index files deleted.
    pub index_files_deleted: usize,
    /// Deletion records that could not be read or are not authenticated
    /// (left alone).
    pub records_ignored: Vec<String>,
    /// Temporary files of uploads that never finished, older than the
    /// grace period, removed (a local store's `<name>#<n>` files).
    pub upload_leftovers_deleted: usize,
    /// Their bytes.
    pub upload_leftover_bytes_deleted: u64,
    /// Such files younger than the grace period (perhaps an upload still
    /// running), left for a later run.
    pub upload_leftovers_pending: usize,
    /// The holder of a prune lease this run took over because its process
    /// had ended on this machine (a prune killed mid-way).
    pub lease_taken_over_from: Option<String>,
    /// Snapshot files that could not be read (left out of the walk).
    pub snapshots_damaged: Vec<String>,
}

/// Prunes `repo` (see the module documentation). Needs a full key and
/// read, list and delete access to the storage.
pub async fn prune(repo: &Repository, options: &PruneOptions, progress: &(dyn Fn(&str) + Sync)) -> Result<PruneReport> {
    if repo.keys().index_authenticator(b"").is_none() {
        return Err(Error::PutOnlyKey { action: "prune" });
    }
    if options.grace < repo.minimum_grace() {
        return Err(Error::InvalidArgument(format!(
            "a grace period of {}s is too short: at least {}s (backups running longer than the grace period \
             could lose data they reused)",
            options.grace.as_secs(),
            repo.minimum_grace().as_secs()
        )));
    }
    let lease = if options.dry_run { None } else { Some(Lease::acquire(repo.backend(), &options.owner).await?) };
    let mut report = PruneReport::default();
    if let Some(owner) = lease.as_ref().and_then(Lease::took_over_from) {
        progress(&format!("took over the prune lease of {owner}: that prune is no longer running"));
        report.lease_taken_over_from = Some(owner.to_owned());
    }
    let mut run = Run { repo, options, lease: lease.as_ref(), progress, report };
    let result = run.execute().await;
    let report = run.report;
    if let Some(lease) = lease {
        lease.release().await;
    }
    result.map(|()| report)
}

struct Run<'a> {
    repo: &'a Repository,
    options: &'a PruneOptions,
    lease: Option<&'a Lease>,
    progress: &'a (dyn Fn(&str) + Sync),
    report: PruneReport,
}

fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl Run<'_> {
    fn ensure_lease(&self) -> Result<()> {
        self.lease.map_or(Ok(()), Lease::ensure)
    }

    async fn execute(&mut self) -> Result<()> {
        let repo = self.repo;
        self.report.dry_run = self.options.dry_run;

        // 1. Read. Snapshots before index files: a snapshot is written after
        //    its index files, so all of them are in the listing that follows.
        (self.progress)("reading snapshots, index and deletion records");
        // A damaged snapshot file cannot be walked: its data counts as
        // unused (nothing could restore it), and the report names it.
        let listing = repo.list_snapshots_with_damage().await?;
        self.report.snapshots_damaged =
            listing.damaged.iter().map(|(id, e)| format!("snapshot {}: {e}", id.short())).collect();
        let snapshots = listing.snapshots;
        let loaded = repo.load_index_files().await?;
        let records = self.load_records().await?;
        let plan::IndexState { packs: mut current, live, retired, known_files, supersedes } =
            plan::index_state(loaded.files, loaded.unreadable_superseded);

        (self.progress)(&format!("walking the trees of {} snapshots", snapshots.len()));
        let mut walk_index = Index::default();
        for pack in current.values() {
            walk_index.add_pack(&pack.entry, pack.trusted);
        }
        for (_, record) in &records {
            for pack in &record.content.packs {
                walk_index.add_pack(pack, false);
            }
        }
        self.report.snapshots = snapshots.len();
        let walked: HashSet<SnapshotId> = snapshots.iter().map(|(id, _)| *id).collect();
        let walk_index = Arc::new(walk_index);
        let mut used = used_blobs(repo, walk_index.clone(), snapshots, HashSet::new()).await?;

        // Before a sweep deletes anything, look once more for snapshots and
        // index files published since the listing (backups that were
        // running): their snapshots' blobs count as used and their packs
        // as indexed, so the window in which a backup could publish unseen
        // is the few requests between here and the deletions.
        let now = now_unix();
        let grace = self.options.grace.as_secs() as i64;
        let mut late_index = LateIndex::default();
        if records.iter().any(|(_, r)| plan::due(r, now, grace)) {
            let late = self.late_snapshots(&walked).await?;
            let mut index = Arc::try_unwrap(walk_index).unwrap_or_else(|shared| (*shared).clone());
            for id in repo.backend().list(FileKind::Index).await?.into_iter().map(|(id, _)| id) {
                if known_files.contains(&id) {
                    continue;
                }
                let file = repo.read_index_file(&id).await?;
                for pack in &file.packs {
                    index.add_pack(pack, file.authenticated);
                    late_index.packs.insert(*pack.id);
                    late_index.blobs.extend(pack.blobs.iter().map(|b| b.id));
                }
            }
            self.report.snapshots += late.len();
            used = used_blobs(repo, Arc::new(index), late, used).await?;
        }
        self.report.blobs_used = used.len();

        // 2. Rescue marked packs that a snapshot needs (only those still in
        //    storage can be).
        let present: HashSet<Id> = repo.backend().list(FileKind::Pack).await?.into_iter().map(|(id, _)| id).collect();
        let rescue = plan::rescue(&records, &current, &late_index, &used, &present);
        self.report.packs_rescued = rescue.len();
        if !rescue.is_empty() && !self.options.dry_run {
            (self.progress)(&format!("rescuing {} marked packs that snapshots need", rescue.len()));
            let writer = Writer::new(repo, Arc::new(Index::default()))?;
            self.report.index_files_written += writer.write_untrusted_index(rescue.clone()).await?.len();
        }
        for entry in rescue {
            current.insert(*entry.id, Pack { entry, trusted: false });
        }
        // Packs some index lists now: never deleted by a sweep.
        let indexed: HashSet<Id> = current.keys().chain(late_index.packs.iter()).copied().collect();

        // 3. Sweep deletion records older than the grace period, oldest
        //    first.
        let sweep = plan::sweep(&records, now, grace, &indexed, &live, &supersedes);
        self.report.records_pending = sweep.pending;
        for record in &sweep.sweeps {
            self.sweep(record).await?;
        }
        self.remove_upload_leftovers(now, grace).await?;

        // 4. Mark (packs indexed since the listing are left to the next run).
        let mut marked_elsewhere = sweep.marked_elsewhere;
        marked_elsewhere.extend(late_index.packs);
        let listed: HashMap<Id, crate::storage::backend::ListedObject> =
            repo.backend().list_objects(FileKind::Pack).await?.into_iter().map(|o| (o.id, o)).collect();
        let plan = plan::mark(MarkInputs {
            current,
            listed: &listed,
            used: &used,
            live: &live,
            retired,
            in_records: &sweep.in_records,
            marked_elsewhere: &marked_elsewhere,
            now: now_unix(),
            grace,
            max_unused: self.options.max_unused,
            max_repack_bytes: self.options.max_repack_bytes,
        })?;
        self.mark(plan, live).await
    }

    /// Snapshots listed now that the walk did not see (forgotten ones are
    /// skipped).
    async fn late_snapshots(&mut self, walked: &HashSet<SnapshotId>) -> Result<Vec<(SnapshotId, Snapshot)>> {
        let mut late = Vec::new();
        for (id, _) in self.repo.backend().list(FileKind::Snapshot).await? {
            let id = SnapshotId(id);
            if walked.contains(&id) {
                continue;
            }
            match self.repo.read_snapshot(&id).await {
                Ok(s) => late.push((id, s)),
                Err(Error::ObjectNotFound { .. }) => {}
                Err(e) if e.is_corruption() => {
                    self.report.snapshots_damaged.push(format!("snapshot {}: {e}", id.short()))
                }
                Err(e) => return Err(e),
            }
        }
        Ok(late)
    }

    /// Reads every deletion record, oldest first; unreadable and
    /// unauthenticated ones are reported and left alone.
    async fn load_records(&mut self) -> Result<Vec<(Id, TrashRecord)>> {
        let repo = self.repo;
        let ids = repo.backend().list(FileKind::Trash).await?;
        let results: Vec<(Id, Result<TrashRecord>)> = futures::stream::iter(ids)
            .map(|(id, _)| async move { (id, repo.read_trash_record(&id).await) })
            .buffer_unordered(PARALLEL_REQUESTS)
            .collect()
            .await;
        let mut records = Vec::new();
        for (id, result) in results {
            match result {
                Ok(r) if r.authenticated => records.push((id, r)),
                Ok(_) => self.report.records_ignored.push(format!(
                    "{}: not written by a full key (its authenticator does not verify)",
                    FileKind::Trash.relative_path(&id)
                )),
                Err(e) => self.report.records_ignored.push(e.to_string()),
            }
        }
        for why in &self.report.records_ignored {
            tracing::warn!("ignoring deletion record {why}");
        }
        records.sort_by_key(|(id, r)| (r.marked_at, *id));
        Ok(records)
    }

    /// Deletes what a record marked ([`plan::sweep`]): its packs no index
    /// lists any more, then the index files it retired that are no longer
    /// live (in dependency order), then the record itself.
    async fn sweep(&mut self, sweep: &RecordSweep) -> Result<()> {
        let pack_bytes = sweep.packs.iter().map(|p| p.1).sum::<u64>();
        self.report.records_swept += 1;
        if self.options.dry_run {
            self.report.packs_deleted += sweep.packs.len();
            self.report.bytes_deleted += pack_bytes;
            self.report.index_files_deleted += sweep.index_files.len();
            return Ok(());
        }
        (self.progress)(&format!("deleting {} packs marked {}s ago", sweep.packs.len(), now_unix() - sweep.marked_at));
        self.ensure_lease()?;
        let backend = self.repo.backend();
        let lease = self.lease;
        futures::stream::iter(sweep.packs.iter())
            .map(|(pack, _)| async move {
                lease.map_or(Ok(()), Lease::ensure)?;
                backend.delete(FileKind::Pack, pack).await
            })
            .buffer_unordered(PARALLEL_REQUESTS)
            .try_collect::<Vec<()>>()
            .await?;
        self.report.packs_deleted += sweep.packs.len();
        self.report.bytes_deleted += pack_bytes;
        for batch in &sweep.index_batches {
            self.ensure_lease()?;
            futures::stream::iter(batch.iter())
                .map(|f| backend.delete(FileKind::Index, f))
                .buffer_unordered(PARALLEL_REQUESTS)
                .try_collect::<Vec<()>>()
                .await?;
            self.report.index_files_deleted += batch.len();
        }
        backend.delete(FileKind::Trash, &sweep.record).await
    }

    /// Removes the temporary files of uploads that never finished, by the
    /// same rule as packs no index lists: once older than the grace period
    /// (a younger one may belong to an upload still running).
    async fn remove_upload_leftovers(&mut self, now: i64, grace: i64) -> Result<()> {
        let leftovers = self.repo.backend().list_upload_leftovers().await?;
        let (due, pending): (Vec<_>, Vec<_>) = leftovers.into_iter().partition(|l| now - l.modified_unix >= grace);
        self.report.upload_leftovers_pending = pending.len();
        self.report.upload_leftovers_deleted = due.len();
        self.report.upload_leftover_bytes_deleted = due.iter().map(|l| l.size).sum();
        if self.options.dry_run || due.is_empty() {
            return Ok(());
        }
        (self.progress)(&format!("removing {} temporary files of interrupted uploads", due.len()));
        self.ensure_lease()?;
        for leftover in &due {
            self.repo.backend().delete_upload_leftover(leftover).await?;
        }
        Ok(())
    }

    /// Carries out a [`plan::mark`]: reports it, and unless it is a dry run
    /// or there is nothing to write, copies the blobs of the packs to
    /// repack, writes the deletion record, then the index files of the
    /// packs that stay, superseding the `live` files.
    async fn mark(&mut self, plan: MarkPlan, live: Vec<Id>) -> Result<()> {
        let repo = self.repo;
        self.report.missing_packs_dropped = plan.missing_dropped;
        self.report.packs = plan.packs;
        self.report.bytes = plan.bytes;
        self.report.unused_bytes_kept = plan.unused_bytes_kept;
        self.report.unindexed_packs_marked = plan.unindexed.len();
        self.report.packs_repacked = plan.repack.len();
        self.report.bytes_repacked = plan.repack_bytes;
        self.report.packs_marked = plan.packs_marked();
        self.report.bytes_marked = plan.bytes_marked();
        self.report.packs_kept = plan.packs_kept();
        if !plan.rewrite || self.options.dry_run {
            return Ok(());
        }

        // Copy the used blobs of the packs to repack into new packs; the
        // writer indexes them (its own, ordinary index files).
        if !plan.repack.is_empty() {
            (self.progress)(&format!("repacking {} packs ({} bytes in use)", plan.repack.len(), plan.repack_bytes));
            let writer = Arc::new(Writer::new(repo, Arc::new(Index::default()))?);
            let lease = self.lease;
            // Opening and sealing is CPU work: one pack per core at a time.
            let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
            futures::stream::iter(plan.repack.iter())
                .map(|r| {
                    let writer = &writer;
                    async move {
                        lease.map_or(Ok(()), Lease::ensure)?;
                        copy_used_blobs(repo, writer, &r.pack, &r.used).await
                    }
                })
                .buffer_unordered(cores)
                .try_collect::<Vec<()>>()
                .await?;
            writer.flush().await?;
            self.report.index_files_written += writer.stats().index_files_written as usize;
        }

        // Record what is to go, then publish the index without it.
        let writer = Writer::new(repo, Arc::new(Index::default()))?;
        self.ensure_lease()?;
        let record = TrashRecord {
            marked_at: now_unix(),
            content: IndexFile { supersedes: plan.retire.clone(), packs: plan.marked(), authenticated: true },
            authenticated: true,
        };
        (self.progress)(&format!("marking {} packs for deletion", record.content.packs.len()));
        writer.write_trash_record(&record).await?;
        self.ensure_lease()?;
        self.report.index_files_written += writer.write_untrusted_index(plan.kept_untrusted).await?.len();
        self.report.index_files_written += writer.replace_index(plan.kept_trusted, live).await?.len();
        Ok(())
    }
}

/// Reads a pack and adds its used blobs (positions `used` in its entry) to
/// `writer`, checking that each decrypts to the content its id names. The
/// decrypting, hashing and sealing run on a blocking thread.
async fn copy_used_blobs(repo: &Repository, writer: &Arc<Writer>, pack: &IndexedPack, used: &[usize]) -> Result<()> {
    let bytes = repo.backend().read(FileKind::Pack, &pack.id).await?;
    let sealed = {
        let (repo, writer, pack, used) = (repo.clone(), writer.clone(), pack.clone(), used.to_vec());
        tokio::task::spawn_blocking(move || reseal(&repo, &writer, &pack, &used, &bytes))
            .await
            .map_err(|e| Error::InvalidArgument(format!("a repacking thread failed: {e}")))??
    };
    for blob in sealed {
        writer.add_sealed(blob).await?;
    }
    Ok(())
}

/// Opens the `used` blobs of `pack` (its bytes) and seals them again for
/// `writer`'s session.
fn reseal(
    repo: &Repository,
    writer: &Writer,
    pack: &IndexedPack,
    used: &[usize],
    bytes: &[u8],
) -> Result<Vec<crate::format::blob::SealedBlob>> {
    let name = FileKind::Pack.relative_path(&pack.id);
    let info = PackInfo { id: pack.id, size: pack.size, session_public: pack.session_public };
    let mut out = Vec::with_capacity(used.len());
    for &i in used {
        let b = &pack.blobs[i];
        let location = BlobLocation {
            pack: 0,
            blob_type: b.blob_type,
            offset: b.offset,
            length: b.length,
            raw_length: b.raw_length,
            trusted: false,
        };
        let range = b.offset as usize..b.offset as usize + b.length as usize;
        let sealed = bytes.get(range).ok_or_else(|| {
            Error::DamagedForPrune(format!("{name} is shorter than its index entry for blob {}", b.id))
        })?;
        let plaintext = repo
            .open_blob(&info, &location, &b.id, sealed)
            .map_err(|e| Error::DamagedForPrune(format!("cannot repack blob {} from {name}: {e}", b.id)))?;
        let id = repo.content_id(&plaintext);
        if id != b.id {
            return Err(Error::DamagedForPrune(format!("blob {} in {name} decrypts to content with id {id}", b.id)));
        }
        out.push(writer.seal(b.blob_type, id, &plaintext)?);
    }
    Ok(out)
}

/// Every blob the snapshots use: their trees and the data blobs in them,
/// added to `used` (trees already in it are not walked again). The walk
/// goes level by level and reads each level's trees
/// [`PARALLEL_REQUESTS`] at a time: on object storage, one tree at a time
/// would cost a round trip each.
async fn used_blobs(
    repo: &Repository,
    index: Arc<Index>,
    snapshots: Vec<(SnapshotId, Snapshot)>,
    mut used: HashSet<Id>,
) -> Result<HashSet<Id>> {
    let missing = |snapshot: &SnapshotId, what: String| {
        Error::DamagedForPrune(format!("snapshot {} needs {what}, which no index lists", snapshot.short()))
    };
    let mut level: Vec<(TreeId, SnapshotId)> = Vec::new();
    for (id, snapshot) in &snapshots {
        if used.insert(*snapshot.tree) {
            level.push((snapshot.tree, *id));
        }
    }
    while !level.is_empty() {
        if let Some((tree, snapshot)) = level.iter().find(|(tree, _)| !index.contains(tree)) {
            return Err(missing(snapshot, format!("tree {tree}")));
        }
        let index = &index;
        let mut trees = futures::stream::iter(level)
            .map(|(tree_id, snapshot)| async move {
                let tree = repo
                    .read_blob(index, &tree_id)
                    .await
                    .and_then(|bytes| Tree::decode(&bytes).map_err(|e| Error::corrupt(format!("tree {tree_id}"), e)))
                    .map_err(|e| {
                        Error::DamagedForPrune(format!(
                            "snapshot {}: cannot read tree {tree_id}: {e}",
                            snapshot.short()
                        ))
                    })?;
                Ok::<_, Error>((tree, snapshot))
            })
            .buffer_unordered(PARALLEL_REQUESTS);
        let mut next = Vec::new();
        while let Some(result) = trees.next().await {
            let (tree, snapshot) = result?;
            for node in tree.nodes() {
                if let Some(sub) = node.subtree {
                    if used.insert(*sub) {
                        next.push((sub, snapshot));
                    }
                }
                for extent in &node.content {
                    if let Extent::Blob { id, .. } = extent {
                        if used.insert(**id) && !index.contains(id) {
                            return Err(missing(&snapshot, format!("data blob {id}")));
                        }
                    }
                }
            }
        }
        level = next;
    }
    Ok(used)
}
