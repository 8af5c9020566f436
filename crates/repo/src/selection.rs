//! Choosing snapshots: filters (host, tags, paths), groups (host, paths,
//! tags), `latest` and id prefixes. Every command that takes snapshots, and
//! the snapshot session's choice of a parent, go through here.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::id::SnapshotId;
use crate::format::snapshot::Snapshot;
use crate::repository::Repository;
use crate::storage::backend::FileKind;
use crate::view::TreeLoader;

/// Which snapshots to consider. Empty fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotFilter {
    /// Snapshots of one of these hosts.
    pub hosts: Vec<String>,
    /// Snapshots that carry every tag of at least one of these sets.
    pub tag_sets: Vec<Vec<String>>,
    /// Snapshots that include every one of these paths (as recorded).
    pub paths: Vec<String>,
}

impl SnapshotFilter {
    /// Whether `snapshot` passes every given filter.
    pub fn matches(&self, snapshot: &Snapshot) -> bool {
        let host_ok = self.hosts.is_empty() || self.hosts.contains(&snapshot.hostname);
        let tags_ok =
            self.tag_sets.is_empty() || self.tag_sets.iter().any(|set| set.iter().all(|t| snapshot.tags.contains(t)));
        let paths_ok = self.paths.iter().all(|p| snapshot.paths.contains(p));
        host_ok && tags_ok && paths_ok
    }

    /// Whether it lets every snapshot through.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.tag_sets.is_empty() && self.paths.is_empty()
    }

    /// The same filter, also requiring `tag` (added to every tag set).
    pub fn requiring_tag(mut self, tag: &str) -> SnapshotFilter {
        if self.tag_sets.is_empty() {
            self.tag_sets.push(Vec::new());
        }
        for set in &mut self.tag_sets {
            set.push(tag.to_owned());
        }
        self
    }
}

/// The fields snapshots are grouped by (for retention, `snapshots
/// --latest`, and a backup's parent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupBy {
    /// By host name.
    pub host: bool,
    /// By the set of backed-up paths.
    pub paths: bool,
    /// By the set of tags.
    pub tags: bool,
}

impl GroupBy {
    /// Host and paths: what makes two backups "the same backup" taken at
    /// different times.
    pub const HOST_AND_PATHS: GroupBy = GroupBy { host: true, paths: true, tags: false };

    /// Parses a comma-separated list of `host`, `paths`, `tags` (empty: one
    /// group of everything).
    pub fn parse(spec: &str) -> Result<GroupBy> {
        let mut by = GroupBy::default();
        for field in spec.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            match field {
                "host" => by.host = true,
                "paths" => by.paths = true,
                "tags" => by.tags = true,
                other => {
                    return Err(Error::InvalidArgument(format!(
                        "unknown grouping field {other:?}: use host, paths and tags, comma-separated"
                    )));
                }
            }
        }
        Ok(by)
    }
}

/// What a group's snapshots share: the fields grouped by (`None` for the
/// others). Paths and tags are sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupKey {
    /// The host, when grouped by host.
    pub host: Option<String>,
    /// The sorted paths, when grouped by paths.
    pub paths: Option<Vec<String>>,
    /// The sorted tags, when grouped by tags.
    pub tags: Option<Vec<String>>,
}

impl GroupKey {
    /// The key of `snapshot` when grouping `by`.
    pub fn of(snapshot: &Snapshot, by: GroupBy) -> GroupKey {
        let sorted = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v
        };
        GroupKey {
            host: by.host.then(|| snapshot.hostname.clone()),
            paths: by.paths.then(|| sorted(&snapshot.paths)),
            tags: by.tags.then(|| sorted(&snapshot.tags)),
        }
    }
}

impl std::fmt::Display for GroupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(host) = &self.host {
            parts.push(format!("host {host}"));
        }
        if let Some(paths) = &self.paths {
            parts.push(format!("paths {}", paths.join(" ")));
        }
        if let Some(tags) = &self.tags {
            parts.push(format!("tags {}", tags.join(",")));
        }
        if parts.is_empty() { f.write_str("all snapshots") } else { f.write_str(&parts.join(", ")) }
    }
}

/// Snapshots by group, each group in the order given (oldest first when
/// they come from [`Repository::snapshots_matching`]).
pub fn group_snapshots(
    snapshots: Vec<(SnapshotId, Snapshot)>,
    by: GroupBy,
) -> BTreeMap<GroupKey, Vec<(SnapshotId, Snapshot)>> {
    let mut groups: BTreeMap<GroupKey, Vec<(SnapshotId, Snapshot)>> = BTreeMap::new();
    for (id, s) in snapshots {
        groups.entry(GroupKey::of(&s, by)).or_default().push((id, s));
    }
    groups
}

/// The newest `n` snapshots of each group, in the order given (which must
/// be oldest first).
pub fn latest_per_group(snapshots: Vec<(SnapshotId, Snapshot)>, by: GroupBy, n: usize) -> Vec<(SnapshotId, Snapshot)> {
    let mut seen: BTreeMap<GroupKey, usize> = BTreeMap::new();
    let mut kept: Vec<(SnapshotId, Snapshot)> = snapshots
        .into_iter()
        .rev()
        .filter(|(_, s)| {
            let count = seen.entry(GroupKey::of(s, by)).or_default();
            *count += 1;
            *count <= n
        })
        .collect();
    kept.reverse();
    kept
}

/// Splits `ID:path` (restore and dump take a path inside the snapshot);
/// a plain id or `latest` has no path.
pub fn split_snapshot_arg(arg: &str) -> (&str, Option<&str>) {
    match arg.split_once(':') {
        Some((id, path)) => (id, Some(path)),
        None => (arg, None),
    }
}

impl Repository {
    /// Every snapshot passing `filter`, oldest first.
    pub async fn snapshots_matching(&self, filter: &SnapshotFilter) -> Result<Vec<(SnapshotId, Snapshot)>> {
        Ok(self.list_snapshots().await?.into_iter().filter(|(_, s)| filter.matches(s)).collect())
    }

    /// One snapshot: `latest` (the newest passing `filter`) or an id (or a
    /// unique prefix of one).
    pub async fn find_snapshot(&self, arg: &str, filter: &SnapshotFilter) -> Result<(SnapshotId, Snapshot)> {
        if arg == "latest" {
            return self
                .snapshots_matching(filter)
                .await?
                .pop()
                .ok_or(Error::NoSnapshot { filtered: !filter.is_empty() });
        }
        if arg.is_empty() || !arg.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::InvalidArgument(format!(
                "{arg:?} is not a snapshot id: give an id (or a unique prefix of one) or `latest`"
            )));
        }
        let id = SnapshotId(self.find_id(FileKind::Snapshot, arg).await?);
        Ok((id, self.read_snapshot(&id).await?))
    }

    /// Several snapshots by id (each once); with none given, every one
    /// passing `filter`.
    pub async fn find_snapshots(
        &self,
        args: &[String],
        filter: &SnapshotFilter,
    ) -> Result<Vec<(SnapshotId, Snapshot)>> {
        if args.is_empty() {
            return self.snapshots_matching(filter).await;
        }
        let mut out: Vec<(SnapshotId, Snapshot)> = Vec::new();
        for arg in args {
            let found = self.find_snapshot(arg, filter).await?;
            if !out.iter().any(|(id, _)| *id == found.0) {
                out.push(found);
            }
        }
        Ok(out)
    }

    /// One snapshot ([`find_snapshot`](Repository::find_snapshot)) with a
    /// loader for its trees; the index loads meanwhile.
    pub async fn open_snapshot(
        &self,
        arg: &str,
        filter: &SnapshotFilter,
    ) -> Result<(TreeLoader, SnapshotId, Snapshot)> {
        let (index, (id, snapshot)) = tokio::try_join!(self.load_index(), self.find_snapshot(arg, filter))?;
        let loader = TreeLoader::new(self, Arc::new(index), tokio::runtime::Handle::current());
        Ok((loader, id, snapshot))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::id::Id;

    fn snap(host: &str, paths: &[&str], tags: &[&str]) -> Snapshot {
        let mut s = Snapshot::new(Default::default(), paths.iter().map(|p| p.to_string()).collect());
        s.hostname = host.into();
        s.tags = tags.iter().map(|t| t.to_string()).collect();
        s
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn filters() {
        let s = snap("web", &["/srv", "/etc"], &["daily", "pg"]);
        let cases: &[(&str, SnapshotFilter, bool)] = &[
            ("empty", SnapshotFilter::default(), true),
            ("host", SnapshotFilter { hosts: strings(&["db", "web"]), ..Default::default() }, true),
            ("other host", SnapshotFilter { hosts: strings(&["db"]), ..Default::default() }, false),
            (
                "one set, all present",
                SnapshotFilter { tag_sets: vec![strings(&["pg", "daily"])], ..Default::default() },
                true,
            ),
            (
                "one set, one missing",
                SnapshotFilter { tag_sets: vec![strings(&["pg", "weekly"])], ..Default::default() },
                false,
            ),
            (
                "any set suffices",
                SnapshotFilter { tag_sets: vec![strings(&["weekly"]), strings(&["daily"])], ..Default::default() },
                true,
            ),
            ("paths all included", SnapshotFilter { paths: strings(&["/etc", "/srv"]), ..Default::default() }, true),
            ("a path missing", SnapshotFilter { paths: strings(&["/home"]), ..Default::default() }, false),
            ("pg tag required", SnapshotFilter::default().requiring_tag("pg"), true),
            (
                "required tag joins every set",
                SnapshotFilter { tag_sets: vec![strings(&["weekly"])], ..Default::default() }.requiring_tag("pg"),
                false,
            ),
        ];
        for (name, filter, expected) in cases {
            assert_eq!(filter.matches(&s), *expected, "{name}");
        }
    }

    #[test]
    fn grouping() {
        assert_eq!(GroupBy::parse("host, paths").unwrap(), GroupBy::HOST_AND_PATHS);
        assert_eq!(GroupBy::parse("").unwrap(), GroupBy::default());
        assert!(GroupBy::parse("host,colour").unwrap_err().to_string().contains("\"colour\""));

        let a = snap("web", &["/b", "/a"], &["x"]);
        let b = snap("web", &["/a", "/b"], &["y"]);
        let c = snap("db", &["/a", "/b"], &["x"]);
        assert_eq!(GroupKey::of(&a, GroupBy::HOST_AND_PATHS), GroupKey::of(&b, GroupBy::HOST_AND_PATHS));
        assert_ne!(GroupKey::of(&a, GroupBy::HOST_AND_PATHS), GroupKey::of(&c, GroupBy::HOST_AND_PATHS));
        let by_tags = GroupBy { tags: true, ..Default::default() };
        assert_eq!(GroupKey::of(&a, by_tags), GroupKey::of(&c, by_tags));
        assert_eq!(GroupKey::of(&a, GroupBy::HOST_AND_PATHS).to_string(), "host web, paths /a /b");
        assert_eq!(GroupKey::of(&a, GroupBy::default()).to_string(), "all snapshots");

        let id = |n: u8| SnapshotId(Id([n; 32]));
        let list = vec![(id(1), a.clone()), (id(2), c.clone()), (id(3), b.clone()), (id(4), a.clone())];
        let groups = group_snapshots(list.clone(), GroupBy::HOST_AND_PATHS);
        let sizes: Vec<usize> = groups.values().map(Vec::len).collect();
        assert_eq!(sizes, [1, 3], "db first (sorted keys), then web");
        let latest: Vec<SnapshotId> =
            latest_per_group(list, GroupBy::HOST_AND_PATHS, 2).into_iter().map(|(i, _)| i).collect();
        assert_eq!(latest, [id(2), id(3), id(4)], "the newest two of web, db's one, in the given order");
    }

    #[test]
    fn snapshot_arguments() {
        assert_eq!(split_snapshot_arg("latest"), ("latest", None));
        assert_eq!(split_snapshot_arg("3fa2:/etc/hosts"), ("3fa2", Some("/etc/hosts")));
    }
}
