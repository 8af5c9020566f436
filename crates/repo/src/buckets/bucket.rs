//! A bucket (or a prefix in one) as a source and a target: listing,
//! reading and writing objects through the repository's own storage layer,
//! so locations, options and credentials work as they do for repositories.

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore, PutMultipartOptions, PutOptions, PutPayload};

use crate::buckets::BucketError;
use crate::buckets::meta::{BucketObject, ObjectHeaders};
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
        Ok(Bucket { backend, store, prefix, bucket, path })
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
        let full = if self.prefix.is_empty() { key.to_owned() } else { format!("{}/{key}", self.prefix) };
        Path::parse(&full).map_err(|e| BucketError::UnsupportedKey { key: key.into(), reason: e.to_string() })
    }

    fn storage_error(&self, action: &str, key: &str, e: object_store::Error) -> BucketError {
        BucketError::Repository(self.backend.map_error(action, key, e))
    }

    /// Every object below the prefix, keys relative to it, sorted by key.
    pub async fn list(&self) -> Result<Vec<BucketObject>, BucketError> {
        let prefix = (!self.prefix.is_empty()).then(|| Path::from(self.prefix.as_str()));
        let metas: Vec<object_store::ObjectMeta> = self
            .store
            .list(prefix.as_ref())
            .try_collect()
            .await
            .map_err(|e| self.storage_error("listing", "the bucket", e))?;
        let strip = if self.prefix.is_empty() { String::new() } else { format!("{}/", self.prefix) };
        let mut objects: Vec<BucketObject> = metas
            .into_iter()
            .filter_map(|m| {
                let key = m.location.as_ref().strip_prefix(strip.as_str())?.to_owned();
                Some(BucketObject {
                    key,
                    size: m.size,
                    last_modified: timestamp(m.last_modified),
                    etag: m.e_tag,
                    version: m.version,
                })
            })
            .collect();
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    /// Starts reading an object: what the read found (size, time, ETag),
    /// its headers, and its bytes as a stream. `None`: it is gone.
    pub(crate) async fn get(&self, key: &str) -> Result<Option<Download>, BucketError> {
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
        Ok(Some(Download { read, headers, body: result.into_stream() }))
    }

    /// Writes an object in one request.
    pub(crate) async fn put(&self, key: &str, data: bytes::Bytes, headers: &ObjectHeaders) -> Result<(), BucketError> {
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

    pub(crate) fn read_error(&self, key: &str, e: object_store::Error) -> BucketError {
        self.storage_error("reading", key, e)
    }
}

/// An object being read.
pub(crate) struct Download {
    /// What the read found.
    pub read: BucketObject,
    /// Its headers.
    pub headers: ObjectHeaders,
    /// Its bytes.
    pub body: futures::stream::BoxStream<'static, object_store::Result<bytes::Bytes>>,
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
