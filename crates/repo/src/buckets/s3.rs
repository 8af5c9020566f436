//! S3 requests that object_store does not make: listings that return every
//! key as it is (`encoding-type=url`: empty segments, a trailing `/` and
//! control characters survive; object_store's paths refuse or drop them),
//! object versions (`ListObjectVersions`, for a point-in-time backup), and reads
//! and writes of such keys. Signed with object_store's own SigV4 signer and
//! credential providers, from the settings a repository location uses.

use std::time::Duration;

use bytes::Bytes;
use object_store::aws::{AmazonS3ConfigKey, AwsAuthorizer, AwsCredentialProvider};

use crate::buckets::BucketError;
use crate::buckets::meta::BucketObject;
use crate::buckets::xml::{self, Listing};

/// A signed-request client for one bucket.
#[derive(Clone)]
pub(crate) struct S3Client {
    http: reqwest::Client,
    /// `scheme://host[:port]/bucket` (path style) or `scheme://bucket.host`.
    base: String,
    region: String,
    credentials: AwsCredentialProvider,
}

impl std::fmt::Debug for S3Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Client").field("base", &self.base).finish()
    }
}

/// `text` with every byte but `A-Z a-z 0-9 - . _ ~` (and `/` when
/// `keep_slash`) percent-encoded, as SigV4 wants it.
pub(crate) fn uri_encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn failed(what: &str, detail: impl std::fmt::Display) -> BucketError {
    BucketError::Failed(format!("{what}: {detail}"))
}

impl S3Client {
    /// A client with the settings of `builder` (endpoint, region, addressing, credentials).
    pub(crate) fn new(builder: object_store::aws::AmazonS3Builder, bucket: &str) -> Result<S3Client, BucketError> {
        let region = builder.get_config_value(&AmazonS3ConfigKey::Region).unwrap_or_else(|| "us-east-1".into());
        let endpoint = builder.get_config_value(&AmazonS3ConfigKey::Endpoint);
        let virtual_hosted =
            builder.get_config_value(&AmazonS3ConfigKey::VirtualHostedStyleRequest).is_some_and(|v| v == "true");
        let base = match (endpoint, virtual_hosted) {
            (Some(e), false) => format!("{}/{bucket}", e.trim_end_matches('/')),
            // object_store's rule: a custom endpoint with virtual-hosted
            // requests already names the bucket.
            (Some(e), true) => e.trim_end_matches('/').to_owned(),
            (None, _) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
        };
        let store = builder.build().map_err(|e| failed("S3 settings", e))?;
        let credentials = store.credentials().clone();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // No total timeout: a large object may take hours; a stalled one does not.
            .read_timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| failed("HTTP client", e))?;
        Ok(S3Client { http, base, region, credentials })
    }

    /// Sends a signed request; retries connection failures and 5xx answers.
    async fn send(
        &self,
        method: http::Method,
        url: &str,
        body: Bytes,
        headers: &[(String, String)],
    ) -> Result<reqwest::Response, BucketError> {
        let mut attempt = 0u32;
        loop {
            let credential = self.credentials.get_credential().await.map_err(|e| failed("S3 credentials", e))?;
            let mut builder = http::Request::builder().method(method.clone()).uri(url);
            for (k, v) in headers {
                builder = builder.header(k.as_str(), v.as_str());
            }
            let mut request: object_store::client::HttpRequest =
                builder.body(body.clone().into()).map_err(|e| failed("S3 request", e))?;
            AwsAuthorizer::new(&credential, "s3", &self.region)
                .with_sign_payload(false)
                .try_authorize(&mut request, None)
                .map_err(|e| failed("signing an S3 request", e))?;
            let mut outgoing = self.http.request(method.clone(), url).body(body.clone());
            for (name, value) in request.headers() {
                outgoing = outgoing.header(name, value);
            }
            let result = outgoing.send().await;
            let retry = match &result {
                Ok(r) => r.status().is_server_error() || r.status() == reqwest::StatusCode::TOO_MANY_REQUESTS,
                Err(e) => e.is_connect() || e.is_timeout() || e.is_request(),
            };
            if retry && attempt < 4 {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(200 * (1 << attempt))).await;
                continue;
            }
            return result.map_err(|e| failed(&format!("S3 request to {}", self.base), e));
        }
    }

    async fn checked(&self, response: reqwest::Response, what: &str) -> Result<reqwest::Response, BucketError> {
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let code = xml::error_code(&text).unwrap_or_default();
        let hint = match status.as_u16() {
            403 => {
                ": check the access key and secret (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) and the bucket policy"
            }
            404 if code == "NoSuchBucket" => ": the bucket does not exist (check its name and the endpoint)",
            _ => "",
        };
        Err(BucketError::Failed(format!("{what} at {}: {status} {code}{hint}", self.base)))
    }

    /// Every object below `prefix` (full keys, as stored), handed to
    /// `page` one listing page at a time.
    pub(crate) async fn list_pages(
        &self,
        prefix: &str,
        page: &mut (dyn FnMut(Vec<BucketObject>) + Send),
    ) -> Result<(), BucketError> {
        let mut token: Option<String> = None;
        loop {
            let mut url = format!("{}/?encoding-type=url&list-type=2&prefix={}", self.base, uri_encode(prefix, false));
            if let Some(t) = &token {
                url.push_str(&format!("&continuation-token={}", uri_encode(t, false)));
            }
            let response = self.send(http::Method::GET, &url, Bytes::new(), &[]).await?;
            let text =
                self.checked(response, "listing the bucket").await?.text().await.map_err(|e| failed("listing", e))?;
            let listing = xml::parse_listing(&text).map_err(|e| failed("a listing the server sent", e))?;
            let Listing { objects: page_objects, next_token, truncated, .. } = listing;
            page(page_objects.into_iter().filter_map(|e| e.into_object()).collect());
            match (truncated, next_token) {
                (true, Some(next)) => token = Some(next),
                (true, None) => {
                    return Err(failed("listing the bucket", "a truncated page without a continuation token"));
                }
                (false, _) => return Ok(()),
            }
        }
    }

    /// Every version and delete marker below `prefix`.
    pub(crate) async fn list_versions(&self, prefix: &str) -> Result<Vec<xml::Entry>, BucketError> {
        let mut entries = Vec::new();
        let mut markers: Option<(String, String)> = None;
        loop {
            let mut url = format!("{}/?encoding-type=url&prefix={}&versions=", self.base, uri_encode(prefix, false));
            if let Some((key, version)) = &markers {
                url.push_str(&format!(
                    "&key-marker={}&version-id-marker={}",
                    uri_encode(key, false),
                    uri_encode(version, false)
                ));
            }
            let response = self.send(http::Method::GET, &url, Bytes::new(), &[]).await?;
            let text = self
                .checked(response, "listing object versions")
                .await?
                .text()
                .await
                .map_err(|e| failed("listing", e))?;
            let page = xml::parse_listing(&text).map_err(|e| failed("a version listing the server sent", e))?;
            entries.extend(page.objects);
            match (page.truncated, page.next_key_marker) {
                (true, Some(key)) => markers = Some((key, page.next_version_marker.unwrap_or_default())),
                (true, None) => return Err(failed("listing object versions", "a truncated page without a key marker")),
                (false, _) => return Ok(entries),
            }
        }
    }

    fn object_url(&self, key: &str, version: Option<&str>) -> String {
        let mut url = format!("{}/{}", self.base, uri_encode(key, true));
        if let Some(v) = version {
            url.push_str(&format!("?versionId={}", uri_encode(v, false)));
        }
        url
    }

    /// Reads an object (a version of it). `None`: it is gone.
    pub(crate) async fn get(&self, key: &str, version: Option<&str>) -> Result<Option<reqwest::Response>, BucketError> {
        check_addressable(key)?;
        let response = self.send(http::Method::GET, &self.object_url(key, version), Bytes::new(), &[]).await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(Some(self.checked(response, &format!("reading {key:?}")).await?))
    }

    /// Writes an object in one request, with `headers` (`Content-Type`, `x-amz-meta-*`, ...).
    pub(crate) async fn put(&self, key: &str, data: Bytes, headers: &[(String, String)]) -> Result<(), BucketError> {
        check_addressable(key)?;
        let response = self.send(http::Method::PUT, &self.object_url(key, None), data, headers).await?;
        self.checked(response, &format!("writing {key:?}")).await?;
        Ok(())
    }
}

/// URLs cannot hold `.` or `..` path segments (clients and servers resolve
/// them), so such keys cannot be read or written by name.
fn check_addressable(key: &str) -> Result<(), BucketError> {
    if key.split('/').any(|s| s == "." || s == "..") {
        return Err(BucketError::UnsupportedKey {
            key: key.into(),
            reason: "a `.` or `..` segment cannot be sent in a URL (HTTP clients and servers resolve it)".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_for_sigv4() {
        assert_eq!(uri_encode("a b/c+d%~", true), "a%20b/c%2Bd%25~");
        assert_eq!(uri_encode("a/b", false), "a%2Fb");
        assert_eq!(uri_encode("é\n", true), "%C3%A9%0A");
        assert!(check_addressable("a//b/").is_ok());
        assert!(check_addressable("a/../b").is_err() && check_addressable(".").is_err());
    }
}
