//! An object's metadata, and how a snapshot keeps it: as extended
//! attributes of the file (FORMAT.md §15.3), which a restore into a bucket
//! turns back into headers and a restore into a directory sets on the file.

use std::collections::BTreeMap;

use object_store::{Attribute, AttributeValue, Attributes};

/// The prefix of every extended attribute a bucket snapshot uses.
pub const XATTR_PREFIX: &str = "user.cairn.";
const ETAG: &str = "user.cairn.etag";
const VERSION: &str = "user.cairn.version-id";
const USER_META: &str = "user.cairn.meta.";

/// The standard headers kept, with their attribute names.
const HEADERS: [(&str, Attribute); 6] = [
    ("user.cairn.content-type", Attribute::ContentType),
    ("user.cairn.content-encoding", Attribute::ContentEncoding),
    ("user.cairn.content-language", Attribute::ContentLanguage),
    ("user.cairn.content-disposition", Attribute::ContentDisposition),
    ("user.cairn.cache-control", Attribute::CacheControl),
    ("user.cairn.storage-class", Attribute::StorageClass),
];

/// The S3 header of each of [`HEADERS`], in the same order.
const S3_HEADERS: [&str; 6] = [
    "content-type",
    "content-encoding",
    "content-language",
    "content-disposition",
    "cache-control",
    "x-amz-storage-class",
];

/// What a listing says of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketObject {
    /// Its key, relative to the backed-up prefix.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last modified.
    pub last_modified: jiff::Timestamp,
    /// Its ETag, as the service gives it (quotes included).
    pub etag: Option<String>,
    /// Its version id, on a versioned bucket.
    pub version: Option<String>,
}

/// An object's headers: content type and the other standard ones, user
/// metadata, ETag and version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectHeaders {
    /// `Content-Type`, `Content-Encoding`, ..., by extended-attribute name.
    pub standard: BTreeMap<String, String>,
    /// User metadata (`x-amz-meta-NAME`, `x-ms-meta-NAME`), by name.
    pub user: BTreeMap<String, String>,
    /// The ETag the object had when it was read.
    pub etag: Option<String>,
    /// The version id it had.
    pub version: Option<String>,
}

impl ObjectHeaders {
    /// The headers object_store returned with a read.
    pub(crate) fn from_attributes(attributes: &Attributes, etag: Option<String>, version: Option<String>) -> Self {
        let mut headers = ObjectHeaders { etag, version, ..Default::default() };
        for (attribute, value) in attributes {
            if let Attribute::Metadata(name) = attribute {
                headers.user.insert(name.to_string(), value.to_string());
            } else if let Some((name, _)) = HEADERS.iter().find(|(_, a)| a == attribute) {
                headers.standard.insert((*name).to_owned(), value.to_string());
            }
        }
        headers
    }

    /// The attributes to write an object with.
    pub(crate) fn to_attributes(&self) -> Attributes {
        let mut attributes = Attributes::new();
        for (name, value) in &self.standard {
            if let Some((_, attribute)) = HEADERS.iter().find(|(n, _)| n == name) {
                attributes.insert(attribute.clone(), AttributeValue::from(value.clone()));
            }
        }
        for (name, value) in &self.user {
            attributes.insert(Attribute::Metadata(name.clone().into()), AttributeValue::from(value.clone()));
        }
        attributes
    }

    /// The headers of an S3 answer (`Content-Type`, ..., `x-amz-meta-*`).
    pub(crate) fn from_s3_headers<'a>(
        headers: impl Iterator<Item = (&'a str, &'a str)>,
        etag: Option<String>,
        version: Option<String>,
    ) -> Self {
        let mut out = ObjectHeaders { etag, version, ..Default::default() };
        for (name, value) in headers {
            let name = name.to_ascii_lowercase();
            if let Some(user) = name.strip_prefix("x-amz-meta-") {
                out.user.insert(user.to_owned(), value.to_owned());
            } else if let Some(i) = S3_HEADERS.iter().position(|h| *h == name) {
                out.standard.insert(HEADERS[i].0.to_owned(), value.to_owned());
            }
        }
        out
    }

    /// The headers to write an object with over S3.
    pub(crate) fn to_s3_headers(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (name, value) in &self.standard {
            if let Some(i) = HEADERS.iter().position(|(n, _)| n == name) {
                out.push((S3_HEADERS[i].to_owned(), value.clone()));
            }
        }
        for (name, value) in &self.user {
            out.push((format!("x-amz-meta-{name}"), value.clone()));
        }
        out
    }

    /// The content type, if the object had one.
    pub fn content_type(&self) -> Option<&str> {
        self.standard.get(HEADERS[0].0).map(String::as_str)
    }

    /// The extended attributes of the file, sorted by name.
    pub fn to_xattrs(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for (name, value) in &self.standard {
            out.push((name.clone().into_bytes(), value.clone().into_bytes()));
        }
        for (name, value) in &self.user {
            out.push((format!("{USER_META}{name}").into_bytes(), value.clone().into_bytes()));
        }
        if let Some(etag) = &self.etag {
            out.push((ETAG.as_bytes().to_vec(), etag.clone().into_bytes()));
        }
        if let Some(version) = &self.version {
            out.push((VERSION.as_bytes().to_vec(), version.clone().into_bytes()));
        }
        out.sort();
        out
    }

    /// Reads them back from a file's extended attributes; attributes
    /// outside `user.cairn.` (a file backed up from a disk) are ignored, and
    /// names or values that are not UTF-8 are an error naming them.
    pub fn from_xattrs(xattrs: &[(Vec<u8>, Vec<u8>)]) -> Result<ObjectHeaders, String> {
        let mut headers = ObjectHeaders::default();
        for (name, value) in xattrs {
            let Ok(name) = std::str::from_utf8(name) else { continue };
            if !name.starts_with(XATTR_PREFIX) {
                continue;
            }
            let value = String::from_utf8(value.clone())
                .map_err(|_| format!("extended attribute {name} is not UTF-8, so it cannot be a header"))?;
            if name == ETAG {
                headers.etag = Some(value);
            } else if name == VERSION {
                headers.version = Some(value);
            } else if let Some(user) = name.strip_prefix(USER_META) {
                if user.is_empty() {
                    return Err(format!("extended attribute {name} names no metadata field"));
                }
                headers.user.insert(user.to_owned(), value);
            } else if HEADERS.iter().any(|(n, _)| *n == name) {
                headers.standard.insert(name.to_owned(), value);
            }
        }
        Ok(headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_through_xattrs_and_attributes() {
        let mut attributes = Attributes::new();
        attributes.insert(Attribute::ContentType, "image/png".into());
        attributes.insert(Attribute::CacheControl, "max-age=60".into());
        attributes.insert(Attribute::Metadata("owner".into()), "ann".into());
        attributes.insert(Attribute::Metadata("empty".into()), "".into());
        let headers = ObjectHeaders::from_attributes(&attributes, Some("\"abc\"".into()), None);
        assert_eq!(headers.content_type(), Some("image/png"));
        let xattrs = headers.to_xattrs();
        let names: Vec<&str> = xattrs.iter().map(|(n, _)| std::str::from_utf8(n).unwrap()).collect();
        assert_eq!(
            names,
            [
                "user.cairn.cache-control",
                "user.cairn.content-type",
                "user.cairn.etag",
                "user.cairn.meta.empty",
                "user.cairn.meta.owner"
            ]
        );
        let back = ObjectHeaders::from_xattrs(&xattrs).unwrap();
        assert_eq!(back, headers);
        assert_eq!(back.to_attributes(), attributes);
    }

    #[test]
    fn foreign_and_bad_xattrs() {
        let x = |n: &str, v: &[u8]| (n.as_bytes().to_vec(), v.to_vec());
        let ok = ObjectHeaders::from_xattrs(&[
            x("user.other", b"v"),
            x("security.selinux", b"\xff"),
            x("user.cairn.unknown", b"v"),
        ]);
        assert_eq!(ok, Ok(ObjectHeaders::default()));
        assert!(ObjectHeaders::from_xattrs(&[x("user.cairn.meta.a", b"\xff")]).unwrap_err().contains("not UTF-8"));
        assert!(ObjectHeaders::from_xattrs(&[x("user.cairn.meta.", b"v")]).unwrap_err().contains("names no"));
    }
}
