//! [`BucketSource`]: a bucket backed up as files, one per object, through
//! the snapshot session's [`Source`] interface.

use std::collections::HashMap;
use std::sync::Mutex;

use futures::{StreamExt, TryStreamExt};

use crate::buckets::BucketError;
use crate::buckets::bucket::Bucket;
use crate::buckets::escape;
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

    /// The parent snapshot and its files below `name`, by path, read
    /// through `loader` (the session's index).
    async fn parent_files(
        &self,
        name: &str,
        loader: TreeLoader,
    ) -> Result<(Option<SnapshotId>, HashMap<String, Node>), BucketError> {
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

/// Objects up to this size are read whole into memory and stored from
/// there (no copy, no thread of their own); larger ones stream into the
/// repository batch by batch. Memory stays below this times the
/// downloads at once.
const BUFFERED: u64 = 1 << 20;

/// Downloads one object into the repository. `Ok(None)`: it vanished.
async fn download(
    bucket: &Bucket,
    into: &SourceContext,
    planned: &Planned,
    pinned: bool,
) -> Result<Option<(BucketObject, ObjectHeaders, Content)>, BucketError> {
    let version = planned.object.version.as_deref().filter(|_| pinned);
    let Some(mut download) = bucket.get(&planned.object.key, version).await? else { return Ok(None) };
    let content = if download.read.size <= BUFFERED {
        let mut whole = bytes::BytesMut::with_capacity(download.read.size as usize);
        let mut single = None;
        while let Some(batch) = download.body.next().await {
            let batch = batch?;
            // An object that arrives in one batch is stored as it came.
            if whole.is_empty() && single.is_none() {
                single = Some(batch);
                continue;
            }
            if let Some(first) = single.take() {
                whole.extend_from_slice(&first);
            }
            whole.extend_from_slice(&batch);
            if whole.len() as u64 > download.read.size {
                return Err(BucketError::Failed(format!(
                    "object {:?}: the service sends more than the {} bytes it announced",
                    planned.object.key, download.read.size
                )));
            }
        }
        into.store_buffer(single.unwrap_or_else(|| whole.freeze())).await?
    } else {
        let mut sink = into.stream()?;
        while let Some(batch) = download.body.next().await {
            sink.send(batch?).await?;
        }
        sink.finish().await?
    };
    if content.size != download.read.size {
        return Err(BucketError::Failed(format!(
            "object {:?}: read {} bytes, the service said {}",
            planned.object.key, content.size, download.read.size
        )));
    }
    Ok(Some((download.read, download.headers, content)))
}

/// An object that goes into the snapshot: as listed, as recorded (the
/// listing's time and ETag when the read found the version listed, else
/// the read's), its headers and its content.
struct Kept {
    planned: Planned,
    recorded: BucketObject,
    headers: ObjectHeaders,
    content: Content,
}

/// What the downloads found, gathered as they finish.
#[derive(Default)]
struct Gathered {
    kept: Vec<Kept>,
    drift: Vec<Drift>,
    downloaded: u64,
    downloaded_bytes: u64,
}

impl Gathered {
    /// Records a download's outcome (`Err` only for a failure that fails
    /// the backup).
    fn downloaded(
        &mut self,
        planned: Planned,
        outcome: Result<Option<(BucketObject, ObjectHeaders, Content)>, BucketError>,
    ) -> Result<(), BucketError> {
        let key = planned.object.key.clone();
        let outcome = match outcome {
            Err(BucketError::UnsupportedKey { reason, .. }) => {
                self.drift.push(Drift::Unreadable { key, reason });
                return Ok(());
            }
            other => other?,
        };
        let Some((read, mut headers, content)) = outcome else {
            self.drift.push(Drift::Vanished { key });
            return Ok(());
        };
        self.downloaded += 1;
        self.downloaded_bytes += read.size;
        let same = plan::same_version(&planned.object, &read);
        if !same {
            self.drift.push(Drift::Changed { key });
        }
        // The listing's time and ETag are what the next backup compares
        // with: keep those when the read found the version listed.
        let recorded = if same { planned.object.clone() } else { read };
        headers.etag = recorded.etag.clone();
        self.kept.push(Kept { planned, recorded, headers, content });
        Ok(())
    }
}

#[async_trait::async_trait]
impl Source for BucketSource {
    type Error = BucketError;

    async fn back_up(&mut self, into: &SourceContext) -> Result<(), BucketError> {
        let name = self.name();
        let (parent, parent_files) = self.parent_files(&name, into.tree_loader()).await?;
        let parent_files = plan::parent_by_key(parent_files);
        let pinned = self.options.versions_at.is_some();
        into.add_dir(&name, &EntryMeta::dir().at(jiff::Timestamp::now()))?;

        // The listing runs beside the downloads: the objects of a page are
        // read as soon as it arrives, not after the last page.
        let listing_started = jiff::Timestamp::now();
        let (pages_tx, mut pages_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<BucketObject>>();
        let listing = async {
            let (tx, mut listed, mut listed_bytes) = (pages_tx, 0u64, 0u64);
            let mut send = |page: Vec<BucketObject>| {
                listed += page.len() as u64;
                listed_bytes += page.iter().map(|o| o.size).sum::<u64>();
                // Closed only when the downloads failed: nobody waits.
                let _ = tx.send(page);
            };
            match self.options.versions_at {
                Some(at) => self.bucket.list_at(at).await.map(&mut send)?,
                None => self.bucket.list_pages(&mut send).await?,
            }
            drop(tx);
            let ended = jiff::Timestamp::now();
            into.events().note(&format!(
                "{listed} objects listed in {:.1}s ({listed_bytes} bytes)",
                (ended - listing_started).total(jiff::Unit::Second).unwrap_or(0.0),
            ));
            Ok::<_, BucketError>(ended)
        };
        let pages = futures::stream::poll_fn(move |cx| pages_rx.poll_recv(cx));

        let progress = into.progress();
        let gathered = Mutex::new(Gathered::default());
        let mut unchanged = 0u64;
        let to_fetch = pages
            .flat_map(|page| {
                progress.expect(page.len() as u64, page.iter().map(|o| o.size).sum());
                futures::stream::iter(page)
            })
            .filter_map(|object| {
                let planned = plan::plan(object, &parent_files);
                let fetch = match &planned.unchanged {
                    Some(node) => {
                        let kept = ObjectHeaders::from_xattrs(&node.xattrs).map(|headers| Kept {
                            recorded: planned.object.clone(),
                            headers,
                            content: Content { extents: node.content.clone(), size: node.size },
                            planned: planned.clone(),
                        });
                        match kept {
                            Ok(kept) => {
                                unchanged += 1;
                                progress.item_done();
                                gathered.lock().expect("gathered poisoned").kept.push(kept);
                                None
                            }
                            // A parent file with damaged attributes: read the object again.
                            Err(_) => Some(Planned { unchanged: None, ..planned }),
                        }
                    }
                    None => Some(planned),
                };
                futures::future::ready(fetch)
            });
        let bucket = &self.bucket;
        let downloads = to_fetch
            .map(|planned: Planned| async move {
                let outcome = download(bucket, into, &planned, pinned).await;
                (planned, outcome)
            })
            .buffer_unordered(self.options.downloads.max(1))
            .map(Ok::<_, BucketError>)
            .try_for_each(|(planned, outcome)| {
                progress.item_done();
                futures::future::ready(gathered.lock().expect("gathered poisoned").downloaded(planned, outcome))
            });
        // Either failing stops the other.
        let (listing_ended, ()) = futures::try_join!(listing, downloads)?;
        let gathered = gathered.into_inner().expect("gathered poisoned");
        into.events().note(&format!(
            "{} objects downloaded ({} bytes), {unchanged} unchanged since the parent",
            gathered.downloaded, gathered.downloaded_bytes,
        ));

        // Paths once every key is known (a key that is also a directory of
        // others is `KEY/%=`).
        let Gathered { mut kept, mut drift, downloaded, downloaded_bytes } = gathered;
        kept.sort_by(|a, b| a.planned.object.key.cmp(&b.planned.object.key));
        let paths = escape::layout(kept.iter().map(|k| k.planned.object.key.as_str()));
        let mut report = BucketReport {
            location: self.bucket.path().to_owned(),
            listing_started: Some(listing_started),
            listing_ended: Some(listing_ended),
            versions_at: self.options.versions_at,
            parent,
            downloaded,
            downloaded_bytes,
            unchanged,
            ..Default::default()
        };
        let (mut new, mut changed) = (0, 0);
        for (kept, path) in kept.into_iter().zip(paths) {
            report.objects += 1;
            report.bytes += kept.recorded.size;
            match (&kept.planned.unchanged, kept.planned.in_parent) {
                (Some(_), _) => {}
                (None, true) => changed += 1,
                (None, false) => new += 1,
            }
            into.add_file(&format!("{name}/{path}"), kept.content, &entry_meta(&kept.recorded, &kept.headers))?;
        }
        into.count_files(new, changed, unchanged);
        drift.sort_by(|a, b| drift_key(a).cmp(drift_key(b)));
        report.drift = drift;
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
