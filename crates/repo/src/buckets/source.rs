//! [`BucketSource`]: a bucket backed up as files, one per object, through
//! the snapshot session's [`Source`] interface.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt};

use crate::buckets::BucketError;
use crate::buckets::bucket::Bucket;
use crate::buckets::meta::{BucketObject, ObjectHeaders};
use crate::buckets::plan::{self, Drift, Planned};
use crate::format::id::SnapshotId;
use crate::format::tree::{Node, NodeKind};
use crate::repository::Repository;
use crate::selection::SnapshotFilter;
use crate::view::TreeLoader;
use crate::writing::session::{ParentChoice, Source, SourceContext};
use crate::writing::store::Content;
use crate::writing::tree_builder::EntryMeta;

/// How a bucket is backed up.
#[derive(Debug, Clone)]
pub struct BucketBackupOptions {
    /// The directory in the snapshot's root that holds the objects;
    /// `None`: the bucket's name.
    pub name: Option<String>,
    /// Which snapshot's files unchanged objects are taken from.
    /// [`ParentChoice::Latest`]: the latest snapshot of `hostname` that
    /// holds this bucket location.
    pub parent: ParentChoice,
    /// The host whose snapshots are parents; `None`: this machine's.
    pub hostname: Option<String>,
    /// Objects downloaded at once (each streams into the repository, so
    /// memory stays bounded by this times a few batches).
    pub downloads: usize,
    /// Back the bucket up as it was at this time, from its object versions
    /// (S3 buckets with versioning); `None`: as it is.
    pub versions_at: Option<jiff::Timestamp>,
}

impl Default for BucketBackupOptions {
    fn default() -> Self {
        BucketBackupOptions {
            name: None,
            parent: ParentChoice::Latest,
            hostname: None,
            downloads: 16,
            versions_at: None,
        }
    }
}

/// What a bucket backup did, and what changed under it. Also recorded in
/// the snapshot as the field `bucket:NAME` (FORMAT.md §15.4).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct BucketReport {
    /// The location, as the snapshot's paths record it.
    pub location: String,
    /// The point in time backed up from object versions, if one was.
    pub versions_at: Option<jiff::Timestamp>,
    /// When the listing started.
    pub listing_started: Option<jiff::Timestamp>,
    /// When the listing ended: the snapshot holds the bucket as listed
    /// between these two times, except what `drift` lists.
    pub listing_ended: Option<jiff::Timestamp>,
    /// The parent snapshot unchanged objects were taken from.
    pub parent: Option<SnapshotId>,
    /// Objects in the snapshot.
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Objects downloaded (new or changed since the parent).
    pub downloaded: u64,
    /// Bytes downloaded.
    pub downloaded_bytes: u64,
    /// Objects taken from the parent snapshot without a download.
    pub unchanged: u64,
    /// Objects that changed or vanished between the listing and their
    /// read, or that could not be read by name.
    pub drift: Vec<Drift>,
}

/// A bucket as a snapshot source: every object below the prefix becomes a
/// file under `NAME/` at its escaped key (see [`key_to_path`](crate::buckets::key_to_path)),
/// with its last-modified time as the file's time and its headers as
/// extended attributes. Objects whose size, time and ETag match the parent
/// snapshot are not downloaded.
pub struct BucketSource {
    bucket: Bucket,
    repo: Repository,
    options: BucketBackupOptions,
    report: BucketReport,
}

impl BucketSource {
    /// A source reading `bucket`, its parent looked up in `repo`.
    pub fn new(bucket: Bucket, repo: &Repository, options: BucketBackupOptions) -> BucketSource {
        BucketSource { bucket, repo: repo.clone(), options, report: BucketReport::default() }
    }

    /// What the backup did (after [`Source::back_up`]).
    pub fn report(&self) -> &BucketReport {
        &self.report
    }

    fn name(&self) -> String {
        self.options.name.clone().unwrap_or_else(|| self.bucket.name().to_owned())
    }

    /// The parent snapshot and its files below `name`, by path.
    async fn parent_files(&self, name: &str) -> Result<(Option<SnapshotId>, HashMap<String, Node>), BucketError> {
        if !self.repo.can_read() {
            return Ok((None, HashMap::new()));
        }
        let (id, snapshot) = match &self.options.parent {
            ParentChoice::None => return Ok((None, HashMap::new())),
            ParentChoice::Snapshot(arg) => self.repo.find_snapshot(arg, &SnapshotFilter::default()).await?,
            ParentChoice::Latest => {
                let host = self.options.hostname.clone().unwrap_or_else(crate::util::hostname);
                let found = self
                    .repo
                    .list_snapshots()
                    .await?
                    .into_iter()
                    .rev()
                    .find(|(_, s)| s.hostname == host && s.paths.iter().any(|p| p == self.bucket.path()));
                match found {
                    Some(found) => found,
                    None => return Ok((None, HashMap::new())),
                }
            }
        };
        let index = Arc::new(self.repo.load_index().await?);
        let loader = TreeLoader::new(&self.repo, index, tokio::runtime::Handle::current());
        let name = name.as_bytes().to_vec();
        let files = tokio::task::spawn_blocking(move || -> Result<HashMap<String, Node>, BucketError> {
            let root = loader.load(&snapshot.tree)?;
            let Some(dir) = root.nodes().iter().find(|n| n.name == name && n.kind == NodeKind::Dir) else {
                return Ok(HashMap::new());
            };
            let mut files = HashMap::new();
            loader.walk::<BucketError>(dir, |path, node| {
                if node.kind == NodeKind::File
                    && let Ok(path) = std::str::from_utf8(path)
                {
                    files.insert(path.trim_start_matches('/').to_owned(), node.clone());
                }
                Ok(true)
            })?;
            Ok(files)
        })
        .await
        .map_err(|e| BucketError::Failed(format!("reading the parent snapshot failed: {e}")))??;
        Ok((Some(id), files))
    }
}

fn entry_meta(object: &BucketObject, headers: &ObjectHeaders) -> EntryMeta {
    let mut meta = EntryMeta::file().at(object.last_modified);
    meta.mode = 0o644;
    meta.xattrs = headers.to_xattrs();
    meta
}

/// Downloads one object into the repository. `Ok(None)`: it vanished.
async fn download(
    bucket: &Bucket,
    into: &SourceContext,
    planned: &Planned,
    pinned: bool,
) -> Result<Option<(BucketObject, ObjectHeaders, Content)>, BucketError> {
    let version = planned.object.version.as_deref().filter(|_| pinned);
    let Some(mut download) = bucket.get(&planned.object.key, version).await? else { return Ok(None) };
    let mut sink = into.stream()?;
    while let Some(batch) = download.body.next().await {
        sink.send(batch?).await?;
    }
    let content = sink.finish().await?;
    if content.size != download.read.size {
        return Err(BucketError::Failed(format!(
            "object {:?}: read {} bytes, the service said {}",
            planned.object.key, content.size, download.read.size
        )));
    }
    Ok(Some((download.read, download.headers, content)))
}

#[async_trait::async_trait]
impl Source for BucketSource {
    type Error = BucketError;

    async fn back_up(&mut self, into: &SourceContext) -> Result<(), BucketError> {
        let name = self.name();
        let (parent, parent_files) = self.parent_files(&name).await?;
        let listing_started = jiff::Timestamp::now();
        let listing = match self.options.versions_at {
            Some(at) => self.bucket.list_at(at).await?,
            None => self.bucket.list().await?,
        };
        let pinned = self.options.versions_at.is_some();
        let listing_ended = jiff::Timestamp::now();
        let plan = plan::plan(listing, &parent_files);
        drop(parent_files);
        let (fetching, fetch_bytes) = plan.to_fetch();
        into.events().note(&format!(
            "{} objects listed in {:.1}s: {fetching} to download ({fetch_bytes} bytes), {} unchanged since the parent",
            plan.objects.len(),
            (listing_ended - listing_started).total(jiff::Unit::Second).unwrap_or(0.0),
            plan.objects.len() as u64 - fetching
        ));
        let total_bytes: u64 = plan.objects.iter().map(|p| p.object.size).sum();
        into.progress().expect(plan.objects.len() as u64, total_bytes);
        into.add_dir(&name, &EntryMeta::dir().at(listing_started))?;
        let report = Mutex::new(BucketReport {
            location: self.bucket.path().to_owned(),
            listing_started: Some(listing_started),
            listing_ended: Some(listing_ended),
            versions_at: self.options.versions_at,
            parent,
            ..Default::default()
        });
        let add = |planned: &Planned, read: &BucketObject, headers: &ObjectHeaders, content: Content| {
            let mut report = report.lock().expect("report poisoned");
            report.objects += 1;
            report.bytes += read.size;
            drop(report);
            into.progress().item_done();
            into.add_file(&format!("{name}/{}", planned.path), content, &entry_meta(read, headers))
        };
        let mut fetch = Vec::new();
        for planned in plan.objects {
            match &planned.unchanged {
                Some(node) => {
                    let headers = ObjectHeaders::from_xattrs(&node.xattrs).map_err(BucketError::Failed)?;
                    let content = Content { extents: node.content.clone(), size: node.size };
                    add(&planned, &planned.object, &headers, content)?;
                    report.lock().expect("report poisoned").unchanged += 1;
                }
                None => fetch.push(planned),
            }
        }
        let bucket = &self.bucket;
        futures::stream::iter(fetch)
            .map(|planned: Planned| async move {
                let outcome = download(bucket, into, &planned, pinned).await;
                (planned, outcome)
            })
            .buffer_unordered(self.options.downloads.max(1))
            .map(Ok::<_, BucketError>)
            .try_for_each(|(planned, outcome)| {
                let result = (|| {
                    let key = planned.object.key.clone();
                    let outcome = match outcome {
                        Err(BucketError::UnsupportedKey { reason, .. }) => {
                            report.lock().expect("report poisoned").drift.push(Drift::Unreadable { key, reason });
                            return Ok(());
                        }
                        other => other?,
                    };
                    match outcome {
                        None => report.lock().expect("report poisoned").drift.push(Drift::Vanished { key }),
                        Some((read, mut headers, content)) => {
                            let same = plan::same_version(&planned.object, &read);
                            {
                                let mut report = report.lock().expect("report poisoned");
                                report.downloaded += 1;
                                report.downloaded_bytes += read.size;
                                if !same {
                                    report.drift.push(Drift::Changed { key });
                                }
                            }
                            // The listing's time and ETag are what the next
                            // backup compares with: keep those when the read
                            // found the version listed.
                            let recorded = if same { &planned.object } else { &read };
                            headers.etag = recorded.etag.clone();
                            add(&planned, recorded, &headers, content)?;
                        }
                    }
                    Ok(())
                })();
                futures::future::ready(result)
            })
            .await?;
        let mut report = report.into_inner().expect("report poisoned");
        report.drift.sort_by(|a, b| drift_key(a).cmp(drift_key(b)));
        into.add_snapshot_path(self.bucket.path());
        into.set_metadata(&format!("bucket:{name}"), serde_json::to_value(&report).unwrap_or_default());
        self.report = report;
        Ok(())
    }
}

fn drift_key(d: &Drift) -> &str {
    match d {
        Drift::Changed { key } | Drift::Vanished { key } | Drift::Unreadable { key, .. } => key,
    }
}
