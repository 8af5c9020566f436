//! What a bucket backup fetches: the listing compared with the parent
//! snapshot (pure), and what a read found compared with the listing.

use std::collections::HashMap;

use crate::buckets::escape;
use crate::buckets::meta::{BucketObject, ObjectHeaders};
use crate::buckets::xml::{Entry, EntryKind};
use crate::files::restorer::Overwrite;
use crate::format::tree::{Node, NodeKind, Time};

/// One listed object and whether it is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// The object as listed.
    pub object: BucketObject,
    /// The parent snapshot's file, when the object is unchanged since:
    /// its content and headers are kept, nothing is downloaded.
    pub unchanged: Option<Node>,
    /// Whether the parent snapshot has a file for the key (changed, if it
    /// is not `unchanged`), or the object is new.
    pub in_parent: bool,
}

/// A time as trees store it.
pub(crate) fn tree_time(t: jiff::Timestamp) -> Time {
    Time { secs: t.as_second(), nanos: t.subsec_nanosecond().max(0) as u32 }
}

/// Whether the parent's file `node` is the object `object` as listed now:
/// same size, same last-modified time and the same ETag (an object without
/// an ETag is always read again).
pub fn is_unchanged(object: &BucketObject, node: &Node) -> bool {
    if node.kind != NodeKind::File || node.error.is_some() || node.size != object.size {
        return false;
    }
    if node.mtime != tree_time(object.last_modified) {
        return false;
    }
    let Some(etag) = &object.etag else { return false };
    ObjectHeaders::from_xattrs(&node.xattrs).ok().and_then(|h| h.etag).as_ref() == Some(etag)
}

/// The parent snapshot's files below the bucket's directory (by path),
/// by the key each path escapes ([`escape::path_to_key`]): a listing is
/// compared key by key as it arrives, before every key (and so every
/// path) is known. Paths that are not escaped keys are left out.
pub fn parent_by_key(files: HashMap<String, Node>) -> HashMap<String, Node> {
    files.into_iter().filter_map(|(path, node)| Some((escape::path_to_key(&path).ok()?, node))).collect()
}

/// Plans one listed object against the parent's files by key: unchanged
/// (keep the parent's file) or read.
pub fn plan(object: BucketObject, parent: &HashMap<String, Node>) -> Planned {
    let in_parent = parent.get(&object.key);
    let unchanged = in_parent.filter(|node| is_unchanged(&object, node)).cloned();
    Planned { object, unchanged, in_parent: in_parent.is_some() }
}

/// The bucket as it was at `at`, from a listing of every version and
/// delete marker: per key, the newest entry written at or before `at`;
/// a key whose newest entry is a delete marker, or that has none yet, was
/// not there. Sorted by key; each object names its version.
pub fn versions_at(entries: Vec<Entry>, at: jiff::Timestamp) -> Vec<BucketObject> {
    let mut newest: HashMap<String, Entry> = HashMap::new();
    for entry in entries.into_iter().filter(|e| e.last_modified <= at) {
        match newest.get(&entry.key) {
            // Servers list a key's versions newest first: on a tie the
            // first listed stays.
            Some(seen) if seen.last_modified >= entry.last_modified => {}
            _ => {
                newest.insert(entry.key.clone(), entry);
            }
        }
    }
    let mut objects: Vec<BucketObject> =
        newest.into_values().filter(|e| e.kind != EntryKind::DeleteMarker).filter_map(Entry::into_object).collect();
    objects.sort_by(|a, b| a.key.cmp(&b.key));
    objects
}

/// How an object read during the backup differed from its listing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase", tag = "change")]
pub enum Drift {
    /// It was replaced after it was listed: the snapshot holds the version read.
    Changed {
        /// The key.
        key: String,
    },
    /// It was deleted after it was listed: the snapshot does not hold it.
    Vanished {
        /// The key.
        key: String,
    },
    /// It cannot be read by name (a `.` or `..` segment, which HTTP
    /// resolves): the snapshot does not hold it.
    Unreadable {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
}

/// An ETag without its quotes and weak marker (services differ in
/// whether a listing and a read quote it).
fn bare_etag(etag: &str) -> &str {
    etag.trim_start_matches("W/").trim_matches('"')
}

/// Whether what a read returned is the object listed: the same size, and
/// the same ETag where both sides have one, else the same last-modified
/// second (listings and reads differ in sub-second precision).
pub fn same_version(listed: &BucketObject, read: &BucketObject) -> bool {
    if listed.size != read.size {
        return false;
    }
    match (&listed.etag, &read.etag) {
        (Some(a), Some(b)) => bare_etag(a) == bare_etag(b),
        _ => listed.last_modified.as_second() == read.last_modified.as_second(),
    }
}

/// Whether a restore into a bucket leaves the object `existing` (the
/// target's listing entry at the file's key, if any) as it is, instead of
/// writing the snapshot's file of `size` bytes whose recorded ETag is
/// `etag`: never with [`Overwrite::Always`]; whenever there is one with
/// [`Overwrite::Never`]; with [`Overwrite::IfChanged`] when its size and
/// ETag are the recorded ones (an object restored earlier from the same
/// snapshot, or the original; a multipart object's ETag depends on its
/// part size, so such an object may be written again).
pub fn keep_existing(size: u64, etag: Option<&str>, existing: Option<&BucketObject>, overwrite: Overwrite) -> bool {
    let Some(existing) = existing else { return false };
    match overwrite {
        Overwrite::Always => false,
        Overwrite::Never => true,
        Overwrite::IfChanged => existing.size == size && etag.is_some() && existing.etag.as_deref() == etag,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(key: &str, size: u64, secs: i64, etag: Option<&str>) -> BucketObject {
        BucketObject {
            key: key.into(),
            size,
            last_modified: jiff::Timestamp::from_second(secs).unwrap(),
            etag: etag.map(Into::into),
            version: None,
        }
    }

    fn node(size: u64, secs: i64, etag: Option<&str>) -> Node {
        let mut n = Node::new(b"x".to_vec(), NodeKind::File);
        n.size = size;
        n.mtime = Time { secs, nanos: 0 };
        n.xattrs = ObjectHeaders { etag: etag.map(Into::into), ..Default::default() }.to_xattrs();
        n
    }

    #[test]
    fn restore_keeps_existing_objects_by_policy() {
        use Overwrite::*;
        let there = listed("k", 10, 100, Some("\"e\""));
        let no_etag = listed("k", 10, 100, None);
        // File size, recorded ETag, the object there, policy, kept?, what.
        type Case<'a> = (u64, Option<&'a str>, Option<&'a BucketObject>, Overwrite, bool, &'a str);
        let cases: &[Case] = &[
            (10, Some("\"e\""), None, Never, false, "nothing there: written"),
            (10, Some("\"e\""), None, IfChanged, false, "nothing there, if changed"),
            (10, Some("\"e\""), Some(&there), Always, false, "always overwrites"),
            (99, Some("\"f\""), Some(&there), Never, true, "never touches"),
            (10, Some("\"e\""), Some(&there), IfChanged, true, "same size and etag"),
            (11, Some("\"e\""), Some(&there), IfChanged, false, "other size"),
            (10, Some("\"f\""), Some(&there), IfChanged, false, "other etag"),
            (10, None, Some(&there), IfChanged, false, "no recorded etag"),
            (10, None, Some(&no_etag), IfChanged, false, "neither has an etag"),
        ];
        for &(size, etag, existing, overwrite, keep, what) in cases {
            assert_eq!(keep_existing(size, etag, existing, overwrite), keep, "{what}");
        }
    }

    #[test]
    fn unchanged_needs_size_time_and_etag() {
        let base = listed("k", 10, 100, Some("\"e\""));
        let cases: &[(Node, bool, &str)] = &[
            (node(10, 100, Some("\"e\"")), true, "all equal"),
            (node(11, 100, Some("\"e\"")), false, "size"),
            (node(10, 101, Some("\"e\"")), false, "time"),
            (node(10, 100, Some("\"f\"")), false, "etag"),
            (node(10, 100, None), false, "parent without etag"),
            (Node::new(b"x".to_vec(), NodeKind::Dir), false, "a directory"),
            (
                {
                    let mut n = node(10, 100, Some("\"e\""));
                    n.error = Some("x".into());
                    n
                },
                false,
                "read error",
            ),
        ];
        for (n, expected, what) in cases {
            assert_eq!(is_unchanged(&base, n), *expected, "{what}");
        }
        assert!(!is_unchanged(&listed("k", 10, 100, None), &node(10, 100, None)), "no etag: read again");
    }

    #[test]
    fn plan_reuses_only_unchanged_objects_by_key() {
        let parent: HashMap<String, Node> = [
            ("a".to_owned(), node(1, 1, Some("1"))),
            // The key `d`, also a directory of others in the parent.
            ("d/%=".to_owned(), node(2, 2, Some("2"))),
            ("gone".to_owned(), node(3, 3, Some("3"))),
            ("b".to_owned(), node(5, 5, Some("5"))),
            ("100%25".to_owned(), node(6, 6, Some("6"))),
            ("not%an escape".to_owned(), node(9, 9, Some("9"))),
        ]
        .into();
        let by_key = parent_by_key(parent);
        let mut keys: Vec<&str> = by_key.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["100%", "a", "b", "d", "gone"]);
        let listing = vec![
            listed("100%", 6, 6, Some("6")),
            listed("a", 1, 1, Some("1")),
            listed("b", 5, 5, Some("6")),
            listed("d", 2, 2, Some("2")),
            listed("d/x", 4, 4, Some("4")),
            listed("new", 7, 7, Some("7")),
        ];
        let got: Vec<(String, bool, bool)> = listing
            .into_iter()
            .map(|o| plan(o, &by_key))
            .map(|p| (p.object.key, p.unchanged.is_some(), p.in_parent))
            .collect();
        let want = [
            ("100%", true, true),
            ("a", true, true),
            ("b", false, true),
            ("d", true, true),
            ("d/x", false, false),
            ("new", false, false),
        ];
        assert_eq!(got, want.map(|(k, u, p)| (k.to_owned(), u, p)));
    }

    #[test]
    fn the_bucket_at_a_time_from_its_versions() {
        let e = |kind, key: &str, version: &str, secs| Entry {
            kind,
            key: key.into(),
            version: Some(version.into()),
            last_modified: jiff::Timestamp::from_second(secs).unwrap(),
            etag: Some(format!("\"{version}\"")),
            size: 1,
        };
        use EntryKind::{DeleteMarker as D, Version as V};
        let entries = vec![
            e(V, "a", "a3", 30),
            e(V, "a", "a2", 20),
            e(V, "a", "a1", 10),
            e(D, "b", "b2", 25),
            e(V, "b", "b1", 5),
            e(V, "c", "c1", 40),
            e(V, "d", "d2", 20),
            e(V, "d", "d1", 20),
        ];
        let at = |secs| -> Vec<(String, String)> {
            versions_at(entries.clone(), jiff::Timestamp::from_second(secs).unwrap())
                .into_iter()
                .map(|o| (o.key, o.version.unwrap()))
                .collect()
        };
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        assert_eq!(at(4), pairs(&[]));
        assert_eq!(at(10), pairs(&[("a", "a1"), ("b", "b1")]));
        assert_eq!(at(24), pairs(&[("a", "a2"), ("b", "b1"), ("d", "d2")]));
        assert_eq!(at(25), pairs(&[("a", "a2"), ("d", "d2")]), "deleted at 25");
        assert_eq!(at(100), pairs(&[("a", "a3"), ("c", "c1"), ("d", "d2")]));
    }

    #[test]
    fn versions_read_against_listed() {
        let l = listed("k", 3, 9, Some("\"a\""));
        assert!(same_version(&l, &l));
        assert!(same_version(&l, &listed("k", 3, 9, None)), "no etag on one side: the time");
        assert!(!same_version(&l, &listed("k", 3, 10, None)), "no etag on one side: the time");
        assert!(same_version(&l, &listed("k", 3, 10, Some("a"))), "the etag decides, quoted or not");
        assert!(!same_version(&l, &listed("k", 4, 9, Some("\"a\""))));
        assert!(!same_version(&l, &listed("k", 3, 9, Some("\"b\""))));
    }
}
