//! The few S3 XML answers the bucket source reads (ListObjectsV2,
//! ListObjectVersions, errors), decoded by hand: flat, known elements, the
//! five predefined entities and character references, keys URL-encoded
//! (`encoding-type=url`). Everything is checked; nothing panics on bad input.

use std::collections::HashMap;

use crate::buckets::meta::BucketObject;

/// What kind of listing entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// An object (`Contents`) of a plain listing.
    Object,
    /// A version of an object (`Version`).
    Version,
    /// A delete marker (`DeleteMarker`): the object did not exist from then.
    DeleteMarker,
}

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Object, version or delete marker.
    pub kind: EntryKind,
    /// The key (decoded).
    pub key: String,
    /// The version id, in a version listing.
    pub version: Option<String>,
    /// When it was written.
    pub last_modified: jiff::Timestamp,
    /// Its ETag.
    pub etag: Option<String>,
    /// Its size (0 for a delete marker).
    pub size: u64,
}

impl Entry {
    /// The object this entry describes (`None` for a delete marker).
    pub fn into_object(self) -> Option<BucketObject> {
        (self.kind != EntryKind::DeleteMarker).then_some(BucketObject {
            key: self.key,
            size: self.size,
            last_modified: self.last_modified,
            etag: self.etag,
            version: self.version,
        })
    }
}

/// One page of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Its entries, in the server's order.
    pub objects: Vec<Entry>,
    /// More pages follow.
    pub truncated: bool,
    /// ListObjectsV2's token for the next page.
    pub next_token: Option<String>,
    /// ListObjectVersions' key marker for the next page (decoded).
    pub next_key_marker: Option<String>,
    /// ListObjectVersions' version marker for the next page.
    pub next_version_marker: Option<String>,
}

fn unescape(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let end = rest[i..].find(';').ok_or("an `&` without `;`")? + i;
        let entity = &rest[i + 1..end];
        let c = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x").or_else(|| entity.strip_prefix("#X")) {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(dec) = entity.strip_prefix('#') {
                    dec.parse().ok()
                } else {
                    None
                };
                code.and_then(char::from_u32).ok_or_else(|| format!("unknown entity &{entity};"))?
            }
        };
        out.push(c);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Decodes `encoding-type=url` text: `%XX` bytes and `+` for a space.
pub fn url_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = text.get(i + 1..i + 3).ok_or("a `%` without two hex digits")?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad escape %{hex}"))?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| "a key that is not UTF-8".into())
}

/// The elements of a document: each leaf's text by name, per record
/// (`Contents`, `Version`, `DeleteMarker`) and at the top.
type Fields = HashMap<String, String>;

fn elements(text: &str) -> Result<(Fields, Vec<(EntryKind, Fields)>), String> {
    let mut top = Fields::new();
    let mut records = Vec::new();
    let mut current: Option<(EntryKind, Fields)> = None;
    let mut stack: Vec<String> = Vec::new();
    let mut content = String::new();
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        content.push_str(&rest[..open]);
        rest = &rest[open + 1..];
        if let Some(after) = rest.strip_prefix("!--") {
            let end = after.find("-->").ok_or("an unterminated comment")?;
            rest = &after[end + 3..];
            continue;
        }
        let close = rest.find('>').ok_or("an unterminated tag")?;
        let tag = &rest[..close];
        rest = &rest[close + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        let leaf = |name: &str, value: String, top: &mut Fields, current: &mut Option<(EntryKind, Fields)>| {
            match current {
                Some((_, fields)) => fields.insert(name.to_owned(), value),
                None => top.insert(name.to_owned(), value),
            };
        };
        if let Some(name) = tag.strip_prefix('/') {
            let name = name.trim();
            if stack.pop().as_deref() != Some(name) {
                return Err(format!("a closing </{name}> that does not match"));
            }
            match (name, current.take()) {
                ("Contents" | "Version" | "DeleteMarker", Some(record)) => records.push(record),
                (_, record) => {
                    current = record;
                    let value = unescape(std::mem::take(&mut content).trim())?;
                    leaf(name, value, &mut top, &mut current);
                }
            }
            content.clear();
            continue;
        }
        let (tag, empty) = match tag.strip_suffix('/') {
            Some(t) => (t, true),
            None => (tag, false),
        };
        let name = tag.split_whitespace().next().ok_or("an empty tag")?;
        if empty {
            leaf(name, String::new(), &mut top, &mut current);
            continue;
        }
        let kind = match name {
            "Contents" => Some(EntryKind::Object),
            "Version" => Some(EntryKind::Version),
            "DeleteMarker" => Some(EntryKind::DeleteMarker),
            _ => None,
        };
        if let Some(kind) = kind {
            if current.is_some() {
                return Err(format!("<{name}> inside another entry"));
            }
            current = Some((kind, Fields::new()));
        }
        if stack.len() > 16 {
            return Err("elements nested too deep".into());
        }
        stack.push(name.to_owned());
        content.clear();
    }
    if !stack.is_empty() {
        return Err(format!("<{}> is not closed", stack.join("><")));
    }
    Ok((top, records))
}

/// Decodes a ListObjectsV2 or ListObjectVersions answer.
pub fn parse_listing(text: &str) -> Result<Listing, String> {
    let (top, records) = elements(text)?;
    let encoded = top.get("EncodingType").is_some_and(|e| e.eq_ignore_ascii_case("url"));
    let decode = |s: &str| if encoded { url_decode(s) } else { Ok(s.to_owned()) };
    let mut objects = Vec::with_capacity(records.len());
    for (kind, fields) in records {
        let key = decode(fields.get("Key").ok_or("an entry without a Key")?)?;
        let time = fields.get("LastModified").ok_or_else(|| format!("{key:?} has no LastModified"))?;
        let last_modified: jiff::Timestamp =
            time.parse().map_err(|e| format!("{key:?}: LastModified {time:?}: {e}"))?;
        let size = match (kind, fields.get("Size")) {
            (EntryKind::DeleteMarker, _) => 0,
            (_, Some(size)) => size.parse().map_err(|_| format!("{key:?}: Size {size:?} is not a number"))?,
            (_, None) => return Err(format!("{key:?} has no Size")),
        };
        let version = fields.get("VersionId").filter(|v| !v.is_empty()).cloned();
        if kind != EntryKind::Object && version.is_none() {
            return Err(format!("{key:?}: a version without a VersionId"));
        }
        let etag = fields.get("ETag").filter(|e| !e.is_empty()).cloned();
        objects.push(Entry { kind, key, version, last_modified, etag, size });
    }
    Ok(Listing {
        objects,
        truncated: top.get("IsTruncated").is_some_and(|t| t == "true"),
        next_token: top.get("NextContinuationToken").filter(|t| !t.is_empty()).cloned(),
        next_key_marker: top.get("NextKeyMarker").filter(|t| !t.is_empty()).map(|k| decode(k)).transpose()?,
        next_version_marker: top.get("NextVersionIdMarker").filter(|t| !t.is_empty()).cloned(),
    })
}

/// The `Code` of an S3 error answer.
pub fn error_code(text: &str) -> Option<String> {
    elements(text).ok()?.0.remove("Code")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_v2_listing_with_encoded_keys() {
        let page = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix>p%2F</Prefix>
<EncodingType>url</EncodingType><IsTruncated>true</IsTruncated><NextContinuationToken>t&amp;1</NextContinuationToken>
<Contents><Key>p/a+b%2Bc%0A</Key><LastModified>2024-05-01T02:00:00.123Z</LastModified><ETag>&quot;e1&quot;</ETag><Size>12</Size><StorageClass>STANDARD</StorageClass></Contents>
<Contents><Key>p/dir/</Key><LastModified>2024-05-01T02:00:00Z</LastModified><ETag>"e2"</ETag><Size>0</Size><Owner><ID>x</ID></Owner></Contents>
<!-- a comment --></ListBucketResult>"#;
        let l = parse_listing(page).unwrap();
        assert!(l.truncated);
        assert_eq!(l.next_token.as_deref(), Some("t&1"));
        let keys: Vec<&str> = l.objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, ["p/a b+c\n", "p/dir/"]);
        assert_eq!((l.objects[0].size, l.objects[0].etag.as_deref()), (12, Some("\"e1\"")));
        assert_eq!(l.objects[0].last_modified.subsec_millisecond(), 123);
    }

    #[test]
    fn a_version_listing() {
        let page = "<ListVersionsResult><EncodingType>url</EncodingType><IsTruncated>false</IsTruncated>\
            <Version><Key>k</Key><VersionId>v2</VersionId><IsLatest>true</IsLatest><LastModified>2024-01-02T00:00:00Z</LastModified><ETag>\"b\"</ETag><Size>3</Size></Version>\
            <DeleteMarker><Key>gone</Key><VersionId>d1</VersionId><IsLatest>true</IsLatest><LastModified>2024-01-03T00:00:00Z</LastModified></DeleteMarker>\
            <Version><Key>k</Key><VersionId>v1</VersionId><IsLatest/><LastModified>2024-01-01T00:00:00Z</LastModified><ETag>\"a\"</ETag><Size>1</Size></Version>\
            </ListVersionsResult>";
        let l = parse_listing(page).unwrap();
        let got: Vec<(EntryKind, &str, &str)> =
            l.objects.iter().map(|e| (e.kind, e.key.as_str(), e.version.as_deref().unwrap())).collect();
        assert_eq!(
            got,
            [(EntryKind::Version, "k", "v2"), (EntryKind::DeleteMarker, "gone", "d1"), (EntryKind::Version, "k", "v1")]
        );
        assert!(!l.truncated && l.objects[1].clone().into_object().is_none());
    }

    #[test]
    fn bad_documents_are_errors() {
        for bad in [
            "<a><b></a>",
            "<a>",
            "<L><Contents><Key>k</Key></Contents></L>",
            "<L><Contents><Key>k</Key><LastModified>yesterday</LastModified><Size>1</Size></Contents></L>",
            "<L><Contents><Key>k</Key><LastModified>2024-01-01T00:00:00Z</LastModified><Size>-1</Size></Contents></L>",
            "<L><EncodingType>url</EncodingType><Contents><Key>%zz</Key></Contents></L>",
            "<L><Contents><Contents>",
            "<L>&bogus;</L>",
            "<L",
        ] {
            assert!(parse_listing(bad).is_err(), "{bad}");
        }
        assert_eq!(error_code("<Error><Code>NoSuchBucket</Code></Error>").as_deref(), Some("NoSuchBucket"));
    }

    #[test]
    fn the_fuzz_target_holds_on_odd_inputs() {
        for input in [
            &b"<L><Contents><Key>k</Key><LastModified>2024-01-01T00:00:00Z</LastModified><Size>1</Size></Contents></L>"
                [..],
            b"dir/%/x%09y/%2E%2E/%=",
            b"user.cairn.meta.a\0v\0user.cairn.etag\0\"e\"\0user.cairn.content-type",
            b"\xff\xfe%%+/%=",
            b"",
        ] {
            crate::fuzz::bucket(input);
        }
    }
}
