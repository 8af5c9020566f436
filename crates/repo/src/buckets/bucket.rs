//! A bucket (or a prefix in one) as a source and a target: listing,
//! reading and writing objects through the repository's own storage layer,
//! so locations, options and credentials work as they do for repositories.

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore, PutMultipartOptions, PutOptions, PutPayload};

use crate::buckets::BucketError;
use crate::buckets::meta::{BucketObject, ObjectHeaders};
use crate::buckets::s3::S3Client;
use crate::storage::backend::{Backend, BackendKind, BackendOptions};

/// A bucket location: `s3:BUCKET[/PREFIX]`, `s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX]`,
/// `gs:BUCKET[/PREFIX]` or `azure:CONTAINER[/PREFIX]`, opened with the same
/// options and environment as a repository location ([`BackendOptions`]).
#[derive(Clone)]
pub struct Bucket {
    backend: Backend,
    store: Arc<dyn ObjectStore>,
    prefix: String,
    bucket: String,
    path: String,
    /// S3's own requests (listings with every key as stored, versions).
    s3: Option<Arc<S3Client>>,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket").field("location", &self.backend.location()).finish()
    }
}

/// The bucket's name and the location as recorded in a snapshot's paths
/// (`s3:BUCKET/PREFIX`, without an endpoint).
fn parse(location: &str) -> Result<(String, String), BucketError> {
    let (scheme, rest) = location.split_once(':').ok_or_else(|| not_a_bucket(location))?;
    if !matches!(scheme, "s3" | "gs" | "azure") {
        return Err(not_a_bucket(location));
    }
    let rest = match rest.strip_prefix("http://").or_else(|| rest.strip_prefix("https://")) {
        Some(after) => after.split_once('/').map(|(_, path)| path).unwrap_or(""),
        None => rest,
    };
    let rest = rest.trim_matches('/');
    let bucket = rest.split('/').next().unwrap_or("");
    if bucket.is_empty() || !crate::format::tree::Node::valid_name(bucket.as_bytes()) {
        return Err(BucketError::Location { location: location.into(), reason: "no bucket name".into() });
    }
    Ok((bucket.to_owned(), format!("{scheme}:{rest}")))
}

fn not_a_bucket(location: &str) -> BucketError {
    BucketError::Location {
        location: location.into(),
        reason: "not a bucket: use s3:BUCKET[/PREFIX], s3:https://HOST/BUCKET[/PREFIX], gs:BUCKET[/PREFIX] \
                 or azure:CONTAINER[/PREFIX]"
            .into(),
    }
}

/// Whether `location` names a bucket (`s3:`, `gs:` or `azure:`).
pub fn is_bucket_location(location: &str) -> bool {
    parse(location).is_ok()
}

impl Bucket {
    /// Opens `location` (nothing is requested yet).
    pub fn open(location: &str, options: &BackendOptions) -> Result<Bucket, BucketError> {
        let (bucket, path) = parse(location)?;
        let backend = Backend::open(location, options)?;
        if !matches!(backend.kind(), BackendKind::S3 | BackendKind::Gcs | BackendKind::Azure) {
            return Err(not_a_bucket(location));
        }
        let (store, prefix) = backend.store_and_prefix();
        let prefix = prefix.to_owned();
        let s3 = match (backend.kind(), location.strip_prefix("s3:")) {
            (BackendKind::S3, Some(rest)) => {
                let (builder, _, _) = Backend::s3_builder(location, rest, &options.s3)?;
                Some(Arc::new(S3Client::new(builder, &bucket)?))
            }
            _ => None,
        };
        Ok(Bucket { backend, store, prefix, bucket, path, s3 })
    }

    /// The bucket's (or container's) name.
    pub fn name(&self) -> &str {
        &self.bucket
    }

    /// The location without an endpoint (`s3:BUCKET/PREFIX`), as a
    /// snapshot's paths record it.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The location as shown to users.
    pub fn location(&self) -> &str {
        self.backend.location()
    }

    fn object_path(&self, key: &str) -> Result<Path, BucketError> {
        let full = format!("{}{key}", self.full_prefix());
        let path =
            Path::parse(&full).map_err(|e| BucketError::UnsupportedKey { key: key.into(), reason: e.to_string() })?;
        if path.as_ref() != full {
            // object_store drops a leading or trailing `/`: another object.
            return Err(BucketError::UnsupportedKey {
                key: key.into(),
                reason: "object_store paths cannot begin or end with `/`".into(),
            });
        }
        Ok(path)
    }

    fn storage_error(&self, action: &str, key: &str, e: object_store::Error) -> BucketError {
        BucketError::Repository(self.backend.map_error(action, key, e))
    }

    fn full_prefix(&self) -> String {
        if self.prefix.is_empty() { String::new() } else { format!("{}/", self.prefix) }
    }

    /// Keys relative to the prefix, sorted.
    fn relative(&self, objects: Vec<BucketObject>) -> Vec<BucketObject> {
        let strip = self.full_prefix();
        let mut objects: Vec<BucketObject> = objects
            .into_iter()
            .filter_map(|mut o| {
                o.key = o.key.strip_prefix(strip.as_str())?.to_owned();
                Some(o)
            })
            .collect();
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        objects
    }

    /// Every object below the prefix, keys relative to it, sorted by key.
    /// On S3 every key is listed as stored; through object_store (GCS,
    /// Azure) a key it cannot represent fails the listing.
    pub async fn list(&self) -> Result<Vec<BucketObject>, BucketError> {
        let mut objects = Vec::new();
        self.list_pages(&mut |page| objects.extend(page)).await?;
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    /// [`list`](Self::list), handing the objects to `page` as the listing
    /// arrives, a page at a time (each sorted by key): a backup reads the
    /// first objects while the rest are listed. Through object_store (GCS,
    /// Azure): one page at the end.
    pub(crate) async fn list_pages(&self, page: &mut (dyn FnMut(Vec<BucketObject>) + Send)) -> Result<(), BucketError> {
        if let Some(s3) = &self.s3 {
            return s3.list_pages(&self.full_prefix(), &mut |objects| page(self.relative(objects))).await;
        }
        let prefix = (!self.prefix.is_empty()).then(|| Path::from(self.prefix.as_str()));
        let metas: Vec<object_store::ObjectMeta> = self
            .store
            .list(prefix.as_ref())
            .try_collect()
            .await
            .map_err(|e| self.storage_error("listing", "the bucket", e))?;
        let objects = metas
            .into_iter()
            .map(|m| BucketObject {
                key: m.location.as_ref().to_owned(),
                size: m.size,
                last_modified: timestamp(m.last_modified),
                etag: m.e_tag,
                version: m.version,
            })
            .collect();
        page(self.relative(objects));
        Ok(())
    }

    /// The bucket as it was at `at`, from its object versions (S3 buckets
    /// with versioning): per key, the newest version or delete marker
    /// written at or before `at`.
    pub async fn list_at(&self, at: jiff::Timestamp) -> Result<Vec<BucketObject>, BucketError> {
        let Some(s3) = &self.s3 else {
            return Err(BucketError::Failed(format!(
                "{}: a point-in-time listing needs S3 object versions (ListObjectVersions); \
                 this service is read through object_store, which lists none",
                self.location()
            )));
        };
        let entries = s3.list_versions(&self.full_prefix()).await?;
        if entries.iter().all(|e| e.version.as_deref().is_none_or(|v| v == "null")) && !entries.is_empty() {
            return Err(BucketError::Failed(format!(
                "{}: the bucket keeps no versions (versioning is not enabled), so it cannot be read as it was \
                 at a time; back it up as it is instead",
                self.location()
            )));
        }
        Ok(self.relative(crate::buckets::plan::versions_at(entries, at)))
    }

    /// Starts reading an object (`version`: that version of it): what the
    /// read found (size, time, ETag), its headers, and its bytes as a
    /// stream. `None`: it is gone.
    pub(crate) async fn get(&self, key: &str, version: Option<&str>) -> Result<Option<Download>, BucketError> {
        let full = format!("{}{key}", self.full_prefix());
        if let Some(s3) = &self.s3 {
            let Some(response) = s3.get(&full, version).await? else { return Ok(None) };
            let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let size = match response.content_length() {
                Some(size) => size,
                None => return Err(BucketError::Failed(format!("reading {key:?}: the answer has no Content-Length"))),
            };
            let last_modified = header("last-modified")
                .and_then(|t| jiff::fmt::rfc2822::parse(&t).ok())
                .map(|z| z.timestamp())
                .ok_or_else(|| BucketError::Failed(format!("reading {key:?}: no valid Last-Modified")))?;
            let read = BucketObject {
                key: key.to_owned(),
                size,
                last_modified,
                etag: header("etag"),
                version: header("x-amz-version-id").filter(|v| v != "null"),
            };
            let headers = ObjectHeaders::from_s3_headers(
                response.headers().iter().filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?))),
                read.etag.clone(),
                read.version.clone(),
            );
            let key = key.to_owned();
            let body = futures::stream::try_unfold(response, move |mut response| {
                let key = key.clone();
                async move {
                    match response.chunk().await {
                        Ok(Some(chunk)) => Ok(Some((chunk, response))),
                        Ok(None) => Ok(None),
                        Err(e) => Err(BucketError::Failed(format!("reading {key:?}: {e}"))),
                    }
                }
            });
            return Ok(Some(Download { read, headers, body: Box::pin(body) }));
        }
        if version.is_some() {
            return Err(BucketError::Failed("object versions are read on S3 only".into()));
        }
        let path = self.object_path(key)?;
        let result = match self.store.get_opts(&path, GetOptions::default()).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.storage_error("reading", key, e)),
        };
        let read = BucketObject {
            key: key.to_owned(),
            size: result.meta.size,
            last_modified: timestamp(result.meta.last_modified),
            etag: result.meta.e_tag.clone(),
            version: result.meta.version.clone(),
        };
        let headers = ObjectHeaders::from_attributes(&result.attributes, read.etag.clone(), read.version.clone());
        let this = self.clone();
        let key = key.to_owned();
        let body = result.into_stream().map_err(move |e| this.storage_error("reading", &key, e));
        Ok(Some(Download { read, headers, body: Box::pin(body) }))
    }

    /// Whether `key` must be written in one request of cairn's own (an S3
    /// key object_store cannot name): its bytes are then held in memory.
    pub(crate) fn needs_raw_put(&self, key: &str) -> bool {
        self.s3.is_some() && self.object_path(key).is_err()
    }

    /// Writes an object in one request.
    pub(crate) async fn put(&self, key: &str, data: bytes::Bytes, headers: &ObjectHeaders) -> Result<(), BucketError> {
        if let Some(s3) = self.s3.as_ref().filter(|_| self.needs_raw_put(key)) {
            return s3.put(&format!("{}{key}", self.full_prefix()), data, &headers.to_s3_headers()).await;
        }
        let path = self.object_path(key)?;
        let options = PutOptions { attributes: headers.to_attributes(), ..Default::default() };
        self.store
            .put_opts(&path, PutPayload::from_bytes(data), options)
            .await
            .map_err(|e| self.storage_error("writing", key, e))?;
        Ok(())
    }

    /// Starts a multipart upload of an object.
    pub(crate) async fn put_multipart(
        &self,
        key: &str,
        headers: &ObjectHeaders,
    ) -> Result<Box<dyn object_store::MultipartUpload>, BucketError> {
        let path = self.object_path(key)?;
        let options = PutMultipartOptions { attributes: headers.to_attributes(), ..Default::default() };
        self.store.put_multipart_opts(&path, options).await.map_err(|e| self.storage_error("writing", key, e))
    }

    pub(crate) fn upload_error(&self, key: &str, e: object_store::Error) -> BucketError {
        self.storage_error("writing", key, e)
    }
}

/// An object being read.
pub(crate) struct Download {
    /// What the read found.
    pub read: BucketObject,
    /// Its headers.
    pub headers: ObjectHeaders,
    /// Its bytes.
    pub body: futures::stream::BoxStream<'static, Result<bytes::Bytes, BucketError>>,
}

fn timestamp(t: chrono::DateTime<chrono::Utc>) -> jiff::Timestamp {
    jiff::Timestamp::new(t.timestamp(), t.timestamp_subsec_nanos() as i32).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_locations() {
        let ok = |l: &str| parse(l).unwrap();
        assert_eq!(ok("s3:photos"), ("photos".into(), "s3:photos".into()));
        assert_eq!(ok("s3:photos/2024/"), ("photos".into(), "s3:photos/2024".into()));
        assert_eq!(ok("s3:http://127.0.0.1:9000/b/p"), ("b".into(), "s3:b/p".into()));
        assert_eq!(ok("azure:c/x"), ("c".into(), "azure:c/x".into()));
        assert_eq!(ok("gs:g"), ("g".into(), "gs:g".into()));
        for bad in ["/srv/data", "sftp:h:/x", "s3:", "s3:http://host", "rclone:r:x", "memory:"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(is_bucket_location("s3:b") && !is_bucket_location("./s3:b"));
    }
}
