//! `pitr-status`: per cluster and timeline, which WAL is archived, where
//! it has gaps, and from which base backup to which point a restore can
//! reach; the last push and the RPO now. Pure over a [`WalCatalog`].
//!
//! Timelines: a timeline T > 1 begins where its parent ended (its
//! `T.history` file lists every ancestor and where each ended). Recovery
//! onto T reads segment *n* from the newest timeline of T's chain that had
//! begun by *n*, as PostgreSQL does (`XLogFileReadAnyTLI`).

use std::collections::BTreeSet;

use cairn_repo::SnapshotId;
use serde::Serialize;

use super::catalog::{ClusterWal, WalCatalog};
use super::layout::{Lsn, SegmentSize, TimelineId, WalFile, WalSegment};

/// The timelines recovery onto `target` walks, oldest first, each with the
/// first segment it owns.
pub fn chain(cluster: &ClusterWal, target: TimelineId) -> Vec<(TimelineId, u64)> {
    let size = cluster.segment_size;
    let mut out = Vec::new();
    let mut begin = 0u64;
    if let Some(history) = cluster.histories.get(&target) {
        for entry in history {
            out.push((entry.timeline, begin));
            begin = entry.switch_lsn.0 / size.bytes();
        }
    }
    out.push((target, begin));
    out
}

/// The segment `segno` as recovery onto the chain's last timeline reads it.
pub fn segment_on_chain(chain: &[(TimelineId, u64)], segno: u64) -> WalSegment {
    let timeline = chain.iter().rev().find(|(_, begin)| *begin <= segno).map(|(t, _)| *t).unwrap_or(chain[0].0);
    WalSegment { timeline, segno }
}

/// The segment numbers archived on each timeline (segments and `.partial`s
/// count: recovery reads both).
fn present(cluster: &ClusterWal) -> BTreeSet<WalSegment> {
    let mut out = BTreeSet::new();
    for name in cluster.files.keys() {
        if let Ok(WalFile::Segment(s)) = WalFile::parse(name, cluster.segment_size) {
            out.insert(s);
        }
    }
    out
}

/// A run of missing segments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gap {
    /// The first missing segment's name.
    pub first: String,
    /// The last missing segment's name.
    pub last: String,
    /// How many are missing.
    pub segments: u64,
}

/// A stretch a restore can reach: from a base backup's end to the end of
/// the WAL that follows it without a gap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Window {
    /// The base backup it starts from.
    pub base: SnapshotId,
    /// The earliest target: the base's stop time.
    pub from_time: jiff::Timestamp,
    /// The base's stop position.
    pub from_lsn: Lsn,
    /// The last segment of the continuous WAL after the base.
    pub to_segment: String,
    /// The end of that segment: no target beyond it is reachable.
    pub to_lsn: Lsn,
    /// When that segment was archived (WAL written after it is not).
    pub to_time: jiff::Timestamp,
}

/// One timeline of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimelineStatus {
    /// The timeline.
    pub timeline: TimelineId,
    /// Whether a `.history` file is archived for it (needed for T > 1).
    pub history: bool,
    /// Segments archived on this timeline.
    pub segments: u64,
    /// The oldest and newest segment recovery onto this timeline reads.
    pub first_segment: Option<String>,
    /// See `first_segment`.
    pub last_segment: Option<String>,
    /// Missing segments between them.
    pub gaps: Vec<Gap>,
    /// What a restore onto this timeline can reach, one per base backup
    /// that starts a distinct stretch.
    pub windows: Vec<Window>,
}

/// One cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterStatus {
    /// Its system identifier.
    pub system_identifier: String,
    /// Its WAL segment size.
    pub wal_segment_size: u64,
    /// Archived files of every kind.
    pub files: u64,
    /// WAL batch snapshots.
    pub batches: u64,
    /// Base backups.
    pub bases: u64,
    /// The newest batch's time.
    pub last_push: Option<jiff::Timestamp>,
    /// Seconds from the last push to now: what a loss now would lose, at most.
    pub rpo_seconds: Option<i64>,
    /// Its timelines, oldest first.
    pub timelines: Vec<TimelineStatus>,
    /// Drill reports stored (`pg drill --pitr`).
    pub drills: u64,
    /// The newest drill report.
    pub last_drill: Option<DrillStatus>,
    /// When a drill last passed.
    pub last_passed_drill: Option<jiff::Timestamp>,
}

/// A drill report, summed up.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrillStatus {
    /// The report's snapshot.
    pub snapshot: SnapshotId,
    /// When the drill ran.
    pub time: jiff::Timestamp,
    /// Whether everything passed.
    pub ok: bool,
    /// The target it recovered to.
    pub target: String,
    /// Seconds until the restored cluster was ready.
    pub total_secs: f64,
    /// Checks run, and how many failed.
    pub checks: u64,
    /// See `checks`.
    pub failed_checks: u64,
    /// Why it failed before its checks, if it did.
    pub error: Option<String>,
}

/// The status of every cluster in the catalog at time `now`.
pub fn status(catalog: &WalCatalog, now: jiff::Timestamp) -> Vec<ClusterStatus> {
    catalog.clusters.iter().map(|(sysid, cluster)| cluster_status(*sysid, cluster, now)).collect()
}

fn cluster_status(sysid: u64, cluster: &ClusterWal, now: jiff::Timestamp) -> ClusterStatus {
    let size = cluster.segment_size;
    let present = present(cluster);
    let mut timelines: BTreeSet<TimelineId> = present.iter().map(|s| s.timeline).collect();
    timelines.extend(cluster.histories.keys().copied());
    timelines.extend(cluster.bases.iter().map(|b| b.info.timeline));
    let last_push = cluster.batches.iter().map(|b| b.time).max();
    ClusterStatus {
        system_identifier: sysid.to_string(),
        wal_segment_size: size.bytes(),
        files: cluster.files.len() as u64,
        batches: cluster.batches.len() as u64,
        bases: cluster.bases.len() as u64,
        last_push,
        rpo_seconds: last_push.map(|t| now.as_second() - t.as_second()),
        timelines: timelines.into_iter().map(|t| timeline_status(cluster, &present, t, size)).collect(),
        drills: cluster.drills.len() as u64,
        last_drill: cluster.drills.iter().max_by_key(|d| d.report.time).map(|d| DrillStatus {
            snapshot: d.id,
            time: d.report.time,
            ok: d.report.ok,
            target: d.report.target.clone(),
            total_secs: d.report.total_secs,
            checks: d.report.checks.len() as u64,
            failed_checks: d.report.checks.iter().filter(|c| !c.ok).count() as u64,
            error: d.report.error.clone(),
        }),
        last_passed_drill: cluster.drills.iter().filter(|d| d.report.ok).map(|d| d.report.time).max(),
    }
}

fn timeline_status(
    cluster: &ClusterWal,
    present: &BTreeSet<WalSegment>,
    timeline: TimelineId,
    size: SegmentSize,
) -> TimelineStatus {
    let chain = chain(cluster, timeline);
    let on_chain = |segno: u64| present.contains(&segment_on_chain(&chain, segno));
    let tlis: Vec<TimelineId> = chain.iter().map(|(t, _)| *t).collect();
    // The segments recovery onto this timeline would read that exist.
    let readable: Vec<u64> = present.iter().filter(|s| tlis.contains(&s.timeline)).map(|s| s.segno).collect();
    let readable: Vec<u64> =
        readable.into_iter().filter(|&n| on_chain(n)).collect::<BTreeSet<_>>().into_iter().collect();
    let own = present.iter().filter(|s| s.timeline == timeline).count() as u64;
    let (first, last) = (readable.first().copied(), readable.last().copied());
    // The holes between consecutive readable segments (linear in what is archived).
    let gaps: Vec<Gap> = readable
        .windows(2)
        .filter(|pair| pair[1] > pair[0] + 1)
        .map(|pair| Gap {
            first: segment_on_chain(&chain, pair[0] + 1).name(size),
            last: segment_on_chain(&chain, pair[1] - 1).name(size),
            segments: pair[1] - pair[0] - 1,
        })
        .collect();
    let mut windows: Vec<Window> = Vec::new();
    let mut bases: Vec<_> = cluster.bases.iter().filter(|b| tlis.contains(&b.info.timeline)).collect();
    bases.sort_by_key(|b| (b.info.start_lsn, b.time));
    for b in bases {
        let start = b.info.start_segment().segno;
        let stop = b.info.stop_segment().segno;
        if !on_chain(start) {
            continue;
        }
        let mut end = start;
        while on_chain(end + 1) {
            end += 1;
        }
        if end < stop {
            continue; // the base never becomes consistent
        }
        if windows.last().is_some_and(|w: &Window| w.to_lsn == WalSegment { timeline, segno: end }.end_lsn(size)) {
            continue; // an older base already reaches as far
        }
        let seg = segment_on_chain(&chain, end);
        let name = seg.name(size);
        let to_time = cluster.files.get(&name).and_then(|c| c.iter().map(|c| c.time).min()).unwrap_or(b.time);
        windows.push(Window {
            base: b.id,
            from_time: b.info.stop_time,
            from_lsn: b.info.stop_lsn,
            to_segment: name,
            to_lsn: seg.end_lsn(size),
            to_time,
        });
    }
    TimelineStatus {
        timeline,
        history: timeline.get() == 1 || cluster.histories.contains_key(&timeline),
        segments: own,
        first_segment: first.map(|n| segment_on_chain(&chain, n).name(size)),
        last_segment: last.map(|n| segment_on_chain(&chain, n).name(size)),
        gaps,
        windows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pitr::catalog::tests::{at, base, batch};

    fn seg(tli: u32, n: u64) -> String {
        WalSegment { timeline: TimelineId::new(tli).unwrap(), segno: n }.name(SegmentSize::DEFAULT)
    }

    fn names(v: &[(u32, u64)]) -> Vec<String> {
        v.iter().map(|(t, n)| seg(*t, *n)).collect()
    }

    fn catalog(batches: &[Vec<String>], bases: &[(u32, &str, &str)], history: Option<&str>) -> WalCatalog {
        let mut list = Vec::new();
        for (i, b) in batches.iter().enumerate() {
            let files: Vec<(&str, &str)> = b.iter().map(|n| (n.as_str(), "h")).collect();
            list.push(batch(i as u8 + 1, 100 * (i as i64 + 1), 7, &files));
        }
        for (i, (tli, start, stop)) in bases.iter().enumerate() {
            list.push(base(50 + i as u8, 10 * (i as i64 + 1), 7, *tli, start, stop));
        }
        if let Some(h) = history {
            list.push(batch(90, 1000, 7, &[("00000002.history", h)]));
        }
        list.sort_by_key(|(_, s)| s.time);
        WalCatalog::from_snapshots(&list)
    }

    #[test]
    fn continuous_wal_gives_one_window() {
        let c = catalog(&[names(&[(1, 1), (1, 2)]), names(&[(1, 3), (1, 4)])], &[(1, "0/1000028", "0/1000100")], None);
        let s = &status(&c, at(500))[0];
        assert_eq!((s.files, s.batches, s.bases, s.rpo_seconds), (4, 2, 1, Some(300)));
        let t = &s.timelines[0];
        assert_eq!((t.segments, t.gaps.len()), (4, 0));
        assert_eq!(t.windows.len(), 1);
        assert_eq!(t.windows[0].to_segment, seg(1, 4));
        assert_eq!(t.windows[0].to_lsn.to_string(), "0/5000000");
        assert_eq!(t.windows[0].to_time, at(200));
    }

    #[test]
    fn a_gap_splits_the_windows() {
        // Bases at segments 1 and 5; segment 3 is missing.
        let c = catalog(
            &[names(&[(1, 1), (1, 2), (1, 4), (1, 5), (1, 6)])],
            &[(1, "0/1000028", "0/1000100"), (1, "0/5000028", "0/5000100"), (1, "0/6000028", "0/6000100")],
            None,
        );
        let t = &status(&c, at(500))[0].timelines[0];
        assert_eq!(t.gaps, vec![Gap { first: seg(1, 3), last: seg(1, 3), segments: 1 }]);
        assert_eq!(t.windows.len(), 2, "{:?}", t.windows);
        assert_eq!(t.windows[0].to_segment, seg(1, 2));
        assert_eq!(t.windows[1].to_segment, seg(1, 6));
        assert_eq!(t.windows[1].from_lsn.to_string(), "0/5000100");
    }

    #[test]
    fn a_base_without_its_wal_has_no_window() {
        let c = catalog(&[names(&[(1, 3)])], &[(1, "0/1000028", "0/1000100")], None);
        assert!(status(&c, at(500))[0].timelines[0].windows.is_empty());
        // Nor one whose WAL stops before its stop position.
        let c = catalog(&[names(&[(1, 1)])], &[(1, "0/1000028", "0/2000100")], None);
        assert!(status(&c, at(500))[0].timelines[0].windows.is_empty());
    }

    #[test]
    fn timelines_follow_the_history() {
        // Timeline 2 began at 0/3000100 (in segment 3); segments 1-3 of TLI 1, 3-4 of TLI 2.
        let c = catalog(
            &[names(&[(1, 1), (1, 2), (1, 3), (2, 3), (2, 4)])],
            &[(1, "0/1000028", "0/1000100")],
            Some("1\t0/3000100\tno recovery target specified\n"),
        );
        let s = &status(&c, at(2000))[0];
        assert_eq!(s.timelines.len(), 2);
        let t2 = &s.timelines[1];
        assert!(t2.history);
        assert_eq!(t2.segments, 2);
        assert_eq!((t2.first_segment.clone(), t2.last_segment.clone()), (Some(seg(1, 1)), Some(seg(2, 4))));
        assert!(t2.gaps.is_empty());
        assert_eq!(t2.windows[0].to_segment, seg(2, 4));
        // Timeline 1 alone ends at its segment 3.
        assert_eq!(s.timelines[0].windows[0].to_segment, seg(1, 3));
        // Without TLI 2's copy of segment 3, timeline 2 has a gap there.
        let c = catalog(
            &[names(&[(1, 1), (1, 2), (1, 3), (2, 4)])],
            &[(1, "0/1000028", "0/1000100")],
            Some("1\t0/3000100\tx\n"),
        );
        let t2 = &status(&c, at(2000))[0].timelines[1];
        assert_eq!(t2.gaps, vec![Gap { first: seg(2, 3), last: seg(2, 3), segments: 1 }]);
    }

    /// A `pg-drill` snapshot of cluster `sysid` at `secs`.
    fn drill(n: u8, secs: i64, sysid: &str, ok: bool) -> (SnapshotId, cairn_repo::Snapshot) {
        use crate::pitr::{DRILL_METADATA_KEY, DRILL_TAG};
        let mut s = cairn_repo::Snapshot::new(Default::default(), vec![format!("/pg-drill/{sysid}")]);
        s.time = at(secs);
        s.tags = vec![DRILL_TAG.into()];
        let report = serde_json::json!({"system_identifier": sysid, "time": at(secs), "base": null,
            "target": "latest", "timeline": 1, "restore_secs": 1.0, "recovery_secs": 2.0, "total_secs": 3.5,
            "verify": "", "checks": [{"sql": "SELECT 1", "ok": ok, "detail": ""}, {"sql": "SELECT 2", "ok": true, "detail": ""}],
            "error": null, "cleaned_up": true, "ok": ok});
        s.extra.insert(DRILL_METADATA_KEY.into(), report);
        (crate::pitr::catalog::tests::id(n), s)
    }

    #[test]
    fn drill_reports_show_the_newest_and_the_last_passed() {
        let mut list = vec![batch(1, 100, 7, &[(seg(1, 1).as_str(), "h")])];
        list.push(drill(2, 200, "7", true));
        list.push(drill(3, 300, "7", false));
        list.push(drill(4, 400, "8", true)); // another cluster's, not archived here: left out
        let mut broken = drill(5, 500, "7", true);
        broken.1.extra.clear();
        list.push(broken);
        let c = WalCatalog::from_snapshots(&list);
        assert_eq!(c.unreadable.len(), 1, "{:?}", c.unreadable);
        let s = &status(&c, at(600))[0];
        assert_eq!(s.drills, 2);
        let last = s.last_drill.as_ref().unwrap();
        assert_eq!((last.ok, last.time, last.checks, last.failed_checks), (false, at(300), 2, 1));
        assert_eq!(last.snapshot, crate::pitr::catalog::tests::id(3));
        assert_eq!(s.last_passed_drill, Some(at(200)));
        let none = &status(&catalog(&[names(&[(1, 1)])], &[], None), at(600))[0];
        assert_eq!((none.drills, none.last_drill.is_none(), none.last_passed_drill), (0, true, None));
    }

    #[test]
    fn chains() {
        let c = catalog(&[], &[], Some("1\t0/3000100\tx\n"));
        let cl = c.cluster(7).unwrap();
        let ch = chain(cl, TimelineId::new(2).unwrap());
        assert_eq!(ch, vec![(TimelineId::new(1).unwrap(), 0), (TimelineId::new(2).unwrap(), 3)]);
        assert_eq!(segment_on_chain(&ch, 2).timeline.get(), 1);
        assert_eq!(segment_on_chain(&ch, 3).timeline.get(), 2);
        assert_eq!(chain(cl, TimelineId::new(5).unwrap()), vec![(TimelineId::new(5).unwrap(), 0)]);
    }
}
