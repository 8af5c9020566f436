//! The directories a mount shows above the snapshots, as a pure function
//! of the snapshot list:
//!
//! ```text
//! snapshots/2026-12-05T02:00:00Z/…     each snapshot, named by its time (UTC)
//! snapshots/latest -> 2026-12-05T02:00:00Z
//! hosts/<host>/<time>/…, hosts/<host>/latest
//! tags/<tag>/<time>/…, tags/<tag>/latest
//! ids/<short id>/…
//! ```
//!
//! Two snapshots of the same second are told apart with `-2`, `-3`, … in
//! the order of their ids, so names stay stable while the list grows.

use std::collections::BTreeMap;

use crate::format::id::SnapshotId;
use crate::format::snapshot::Snapshot;

/// What a name in a virtual directory stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Another virtual directory, by its path (`["hosts", "db1"]`).
    Dir(Vec<String>),
    /// The root of snapshot number `n` of the list.
    Snapshot(usize),
    /// A symbolic link with this target.
    Link(String),
}

/// Every virtual directory, by path (the root is `[]`), with its entries
/// sorted by name.
pub type Layout = BTreeMap<Vec<String>, Vec<(String, Target)>>;

/// The layout of `snapshots` (any order).
pub fn plan(snapshots: &[(SnapshotId, Snapshot)]) -> Layout {
    let mut order: Vec<usize> = (0..snapshots.len()).collect();
    order.sort_by(|&a, &b| snapshots[a].1.time.cmp(&snapshots[b].1.time).then(snapshots[a].0.cmp(&snapshots[b].0)));
    // Names by time, oldest first, so `-2` goes to the later id.
    let mut names: Vec<String> = vec![String::new(); snapshots.len()];
    let mut taken: BTreeMap<String, usize> = BTreeMap::new();
    for &i in &order {
        let base = snapshots[i].1.time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        let count = taken.entry(base.clone()).or_insert(0);
        *count += 1;
        names[i] = if *count == 1 { base } else { format!("{base}-{count}") };
    }
    let top = |name: &str| vec![name.to_owned()];
    let mut layout = Layout::new();
    for name in ["snapshots", "hosts", "tags", "ids"] {
        layout.entry(vec![]).or_default().push((name.to_owned(), Target::Dir(top(name))));
        layout.insert(top(name), Vec::new());
    }
    let mut add = |dir: Vec<String>, name: String, target: Target| {
        layout.entry(dir).or_default().push((name, target));
    };
    let mut groups: BTreeMap<Vec<String>, Vec<usize>> = BTreeMap::new();
    for &i in &order {
        let (id, snapshot) = &snapshots[i];
        groups.entry(top("snapshots")).or_default().push(i);
        groups.entry(vec!["hosts".into(), safe_name(&snapshot.hostname)]).or_default().push(i);
        for tag in &snapshot.tags {
            groups.entry(vec!["tags".into(), safe_name(tag)]).or_default().push(i);
        }
        add(top("ids"), id.short(), Target::Snapshot(i));
    }
    for (dir, members) in groups {
        if dir.len() == 2 {
            add(top(&dir[0]), dir[1].clone(), Target::Dir(dir.clone()));
        }
        for &i in &members {
            add(dir.clone(), names[i].clone(), Target::Snapshot(i));
        }
        if let Some(&newest) = members.last() {
            add(dir, "latest".into(), Target::Link(names[newest].clone()));
        }
    }
    for entries in layout.values_mut() {
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        // Two hosts or tags that differ only in characters made safe: the
        // first keeps the name, as with `ls`, the rest are not shown.
        entries.dedup_by(|b, a| a.0 == b.0);
    }
    layout
}

/// A host or tag as a directory name: never empty, `.`, `..`, or with a
/// `/` or NUL in it.
fn safe_name(name: &str) -> String {
    let cleaned: String = name.chars().map(|c| if c == '/' || c == '\0' { '_' } else { c }).collect();
    match cleaned.as_str() {
        "" => "_".into(),
        "." | ".." => cleaned.replace('.', "_"),
        _ => cleaned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::id::{Id, TreeId};

    fn snapshot(id: u8, time: &str, host: &str, tags: &[&str]) -> (SnapshotId, Snapshot) {
        let mut s = Snapshot::new(TreeId::default(), vec!["/data".into()]);
        s.time = time.parse().unwrap();
        s.hostname = host.into();
        s.tags = tags.iter().map(|t| t.to_string()).collect();
        (SnapshotId(Id::of_object(&[id])), s)
    }

    fn names(layout: &Layout, dir: &[&str]) -> Vec<String> {
        let dir: Vec<String> = dir.iter().map(|d| d.to_string()).collect();
        layout.get(&dir).map(|e| e.iter().map(|(n, _)| n.clone()).collect()).unwrap_or_default()
    }

    #[test]
    fn an_empty_repository_shows_the_top_directories() {
        let layout = plan(&[]);
        assert_eq!(names(&layout, &[]), ["hosts", "ids", "snapshots", "tags"]);
        assert!(names(&layout, &["snapshots"]).is_empty());
    }

    #[test]
    fn snapshots_hosts_tags_and_latest() {
        let list = [
            snapshot(1, "2026-12-05T02:00:00Z", "db1", &["nightly"]),
            snapshot(2, "2026-12-04T02:00:00Z", "db1", &[]),
            snapshot(3, "2026-12-05T03:00:00Z", "web/1", &["nightly", "."]),
        ];
        let layout = plan(&list);
        assert_eq!(
            names(&layout, &["snapshots"]),
            ["2026-12-04T02:00:00Z", "2026-12-05T02:00:00Z", "2026-12-05T03:00:00Z", "latest"]
        );
        let latest = |dir: &[&str]| {
            let dir: Vec<String> = dir.iter().map(|d| d.to_string()).collect();
            layout[&dir].iter().find(|(n, _)| n == "latest").map(|(_, t)| t.clone())
        };
        assert_eq!(latest(&["snapshots"]), Some(Target::Link("2026-12-05T03:00:00Z".into())));
        assert_eq!(names(&layout, &["hosts"]), ["db1", "web_1"]);
        assert_eq!(latest(&["hosts", "db1"]), Some(Target::Link("2026-12-05T02:00:00Z".into())));
        assert_eq!(names(&layout, &["tags"]), ["_", "nightly"]);
        assert_eq!(names(&layout, &["tags", "nightly"]), ["2026-12-05T02:00:00Z", "2026-12-05T03:00:00Z", "latest"]);
        assert_eq!(names(&layout, &["ids"]).len(), 3);
        let first = &layout[&vec!["snapshots".to_string()]][0];
        assert_eq!(first.1, Target::Snapshot(1), "the oldest is list entry 1");
    }

    #[test]
    fn snapshots_of_the_same_second_are_numbered() {
        let list = [
            snapshot(1, "2026-12-05T02:00:00.5Z", "h", &[]),
            snapshot(2, "2026-12-05T02:00:00.1Z", "h", &[]),
            snapshot(3, "2026-12-05T02:00:00.9Z", "h", &[]),
        ];
        let layout = plan(&list);
        let entries = &layout[&vec!["snapshots".to_string()]];
        let named: Vec<(&str, &Target)> = entries.iter().map(|(n, t)| (n.as_str(), t)).collect();
        assert_eq!(
            named,
            [
                ("2026-12-05T02:00:00Z", &Target::Snapshot(1)),
                ("2026-12-05T02:00:00Z-2", &Target::Snapshot(0)),
                ("2026-12-05T02:00:00Z-3", &Target::Snapshot(2)),
                ("latest", &Target::Link("2026-12-05T02:00:00Z-3".into())),
            ]
        );
    }
}
