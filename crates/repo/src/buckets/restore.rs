//! Restoring a snapshot's files into a bucket: each file becomes the object
//! its path is the escaped key of, with the content type and user metadata
//! kept in its extended attributes.

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures::StreamExt;

use crate::buckets::BucketError;
use crate::buckets::bucket::Bucket;
use crate::buckets::escape;
use crate::buckets::meta::{BucketObject, ObjectHeaders};
use crate::buckets::plan;
use crate::files::restorer::{Overwrite, RestoreProgress};
use crate::format::tree::{Node, NodeKind};
use crate::view::TreeLoader;

/// Objects up to this size are written in one request; larger ones in
/// parts of this size, read from the repository one part ahead.
const PART: usize = 8 * 1024 * 1024;

/// How a snapshot is restored into a bucket.
#[derive(Debug, Clone)]
pub struct BucketRestoreOptions {
    /// Count what would be written, write nothing.
    pub dry_run: bool,
    /// Read every object back and compare its bytes and headers.
    pub verify: bool,
    /// Objects written at once.
    pub uploads: usize,
    /// What happens to objects already in the bucket at a file's key:
    /// replaced ([`Overwrite::Always`]), kept when their size and ETag are
    /// the snapshot's ([`Overwrite::IfChanged`]), or kept
    /// ([`Overwrite::Never`]). Anything but `Always` lists the target first.
    pub overwrite: Overwrite,
}

impl Default for BucketRestoreOptions {
    fn default() -> Self {
        BucketRestoreOptions { dry_run: false, verify: false, uploads: 8, overwrite: Overwrite::Always }
    }
}

/// What a restore into a bucket did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct BucketRestoreOutcome {
    /// Objects written (or, in a dry run, that would be).
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Objects read back and found equal (`verify`).
    pub verified: u64,
    /// Objects already in the bucket and left as they were (see
    /// [`BucketRestoreOptions::overwrite`]).
    pub skipped: u64,
    /// Files that could not be restored: (path in the snapshot, why).
    pub failed: Vec<(String, String)>,
}

struct Planned {
    path: String,
    key: String,
    node: Node,
    headers: ObjectHeaders,
}

/// Restores the file or directory `start` of a snapshot into `bucket`:
/// a file at `dir/sub/name` below `start` becomes the object of the key
/// that path escapes (see [`path_to_key`](crate::buckets::path_to_key))
/// below the bucket's prefix. Files whose path is not an escaped key, and
/// objects that cannot be written, are listed in the outcome; the others
/// are restored.
pub async fn restore_to_bucket(
    loader: &TreeLoader,
    start: &Node,
    bucket: &Bucket,
    options: &BucketRestoreOptions,
    progress: &RestoreProgress,
) -> Result<BucketRestoreOutcome, BucketError> {
    let (walker, root) = (loader.clone(), start.clone());
    let files = tokio::task::spawn_blocking(move || -> Result<Vec<(String, Node)>, BucketError> {
        if root.kind == NodeKind::File {
            return Ok(vec![(String::from_utf8_lossy(&root.name).into_owned(), root)]);
        }
        let mut files = Vec::new();
        walker.walk::<BucketError>(&root, |path, node| {
            if node.kind == NodeKind::File {
                files.push((String::from_utf8_lossy(path).trim_start_matches('/').to_owned(), node.clone()));
            }
            Ok(true)
        })?;
        Ok(files)
    })
    .await
    .map_err(|e| BucketError::Failed(format!("reading the snapshot's trees failed: {e}")))??;

    let mut outcome = BucketRestoreOutcome::default();
    let mut planned = Vec::with_capacity(files.len());
    for (path, node) in files {
        let key = match escape::path_to_key(&path) {
            Ok(key) => key,
            Err(e) => {
                outcome.failed.push((path, e.to_string()));
                continue;
            }
        };
        match ObjectHeaders::from_xattrs(&node.xattrs) {
            Ok(headers) => planned.push(Planned { path, key, node, headers }),
            Err(e) => outcome.failed.push((path, e)),
        }
    }
    if options.overwrite != Overwrite::Always {
        let existing: HashMap<String, BucketObject> =
            bucket.list().await?.into_iter().map(|o| (o.key.clone(), o)).collect();
        let before = planned.len();
        planned.retain(|p| {
            !plan::keep_existing(p.node.size, p.headers.etag.as_deref(), existing.get(&p.key), options.overwrite)
        });
        outcome.skipped = (before - planned.len()) as u64;
    }
    progress.files_total.store(planned.len() as u64, Ordering::Relaxed);
    progress.bytes_total.store(planned.iter().map(|p| p.node.size).sum(), Ordering::Relaxed);
    if options.dry_run {
        outcome.objects = planned.len() as u64;
        outcome.bytes = planned.iter().map(|p| p.node.size).sum();
        return Ok(outcome);
    }
    let results: Vec<(Planned, Result<bool, BucketError>)> = futures::stream::iter(planned)
        .map(|p| async move {
            let result = restore_one(loader, bucket, &p, options.verify).await;
            if result.is_ok() {
                progress.files_done.fetch_add(1, Ordering::Relaxed);
                progress.bytes_done.fetch_add(p.node.size, Ordering::Relaxed);
            }
            (p, result)
        })
        .buffer_unordered(options.uploads.max(1))
        .collect()
        .await;
    for (p, result) in results {
        match result {
            Ok(verified) => {
                outcome.objects += 1;
                outcome.bytes += p.node.size;
                outcome.verified += u64::from(verified);
            }
            Err(e) => outcome.failed.push((p.path, e.to_string())),
        }
    }
    outcome.failed.sort();
    Ok(outcome)
}

/// Reads a file's content part by part on a blocking thread; each part is
/// sent as soon as it is read (at most two wait), with the content's hash
/// at the end.
fn read_parts(loader: TreeLoader, node: Node) -> tokio::sync::mpsc::Receiver<Result<Part, BucketError>> {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::task::spawn_blocking(move || {
        let mut reader = loader.content(&node);
        let mut hasher = blake3::Hasher::new();
        loop {
            let mut part = Vec::with_capacity(PART.min(node.size as usize).max(1));
            let read = (&mut reader).take(PART as u64).read_to_end(&mut part);
            match read {
                Err(e) => {
                    let _ = tx.blocking_send(Err(BucketError::Failed(format!("reading from the repository: {e}"))));
                    return;
                }
                Ok(0) => {
                    let _ = tx.blocking_send(Ok(Part::End(hasher.finalize())));
                    return;
                }
                Ok(_) => {
                    hasher.update(&part);
                    if tx.blocking_send(Ok(Part::Data(Bytes::from(part)))).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

enum Part {
    Data(Bytes),
    End(blake3::Hash),
}

/// Writes one object; returns whether it was read back and verified.
async fn restore_one(loader: &TreeLoader, bucket: &Bucket, p: &Planned, verify: bool) -> Result<bool, BucketError> {
    let mut parts = read_parts(loader.clone(), p.node.clone());
    let unexpected_end = || BucketError::Failed("the repository reader stopped early".into());
    let hash = if p.node.size as usize <= PART || bucket.needs_raw_put(&p.key) {
        let mut data = Vec::new();
        let hash = loop {
            match parts.recv().await.ok_or_else(unexpected_end)?? {
                Part::Data(d) => data.extend_from_slice(&d),
                Part::End(hash) => break hash,
            }
        };
        bucket.put(&p.key, data.into(), &p.headers).await?;
        hash
    } else {
        let mut upload = bucket.put_multipart(&p.key, &p.headers).await?;
        let hash = async {
            loop {
                match parts.recv().await.ok_or_else(unexpected_end)?? {
                    Part::Data(d) => upload.put_part(d.into()).await.map_err(|e| bucket.upload_error(&p.key, e))?,
                    Part::End(hash) => break Ok::<_, BucketError>(hash),
                }
            }
        }
        .await;
        match hash {
            Ok(hash) => {
                upload.complete().await.map_err(|e| bucket.upload_error(&p.key, e))?;
                hash
            }
            Err(e) => {
                let _ = upload.abort().await;
                return Err(e);
            }
        }
    };
    if !verify {
        return Ok(false);
    }
    let Some(mut download) = bucket.get(&p.key, None).await? else {
        return Err(BucketError::Failed("verify: the object written is not there".into()));
    };
    let mut hasher = blake3::Hasher::new();
    while let Some(batch) = download.body.next().await {
        hasher.update(&batch?);
    }
    if hasher.finalize() != hash {
        return Err(BucketError::Failed("verify: the object's bytes differ from the snapshot's".into()));
    }
    let (wanted, got) = (p.headers.to_attributes(), download.headers.to_attributes());
    if let Some((attribute, _)) = wanted.iter().find(|(a, v)| got.get(a) != Some(v)) {
        return Err(BucketError::Failed(format!("verify: the object's {attribute:?} differs from the snapshot's")));
    }
    Ok(true)
}
