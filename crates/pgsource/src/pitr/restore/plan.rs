//! Choosing the base backup and the timeline for a point-in-time restore:
//! a pure function over the listings (bases, archived WAL segments,
//! timeline histories), table-tested.
//!
//! A target is reachable from base B when B ends (its stop LSN and stop
//! time) at or before the target, and every WAL segment from B's start up
//! to the target exists along the target timeline's history. PostgreSQL
//! itself does not refuse a target before the base's end: it stops at the
//! first commit after consistency and promotes, silently missing rows. So
//! this plan refuses it, and a target past the newest archived WAL.

use std::collections::{BTreeMap, HashSet};

use cairn_repo::SnapshotId;

use super::settings::RecoveryTarget;
use crate::pitr::Lsn;

/// A base backup as the plan sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseCandidate {
    /// Its snapshot.
    pub id: SnapshotId,
    /// The timeline it was taken on.
    pub timeline: u32,
    /// Where its WAL starts.
    pub start_lsn: u64,
    /// Where it is consistent.
    pub stop_lsn: u64,
    /// When it was consistent (at the latest).
    pub stop_time: jiff::Timestamp,
}

/// One archived WAL segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchivedSegment {
    /// Its timeline.
    pub timeline: u32,
    /// Its segment number (LSN / segment size).
    pub segno: u64,
    /// When it was archived (its batch snapshot's time).
    pub pushed: jiff::Timestamp,
}

/// A segment: (timeline, segment number).
pub type SegmentRef = (u32, u64);

/// A timeline's ancestry from its `.history` file: each ancestor and the
/// LSN where the next timeline branched off it, oldest first.
pub type History = Vec<(u32, u64)>;

/// Which timeline to recover along.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimelineChoice {
    /// The newest timeline in the archive.
    Latest,
    /// This one.
    Id(u32),
}

/// Everything the plan looks at.
#[derive(Debug, Clone)]
pub struct PlanInput<'a> {
    /// The cluster's base backups.
    pub bases: &'a [BaseCandidate],
    /// Its archived segments.
    pub segments: &'a [ArchivedSegment],
    /// The `.history` files by timeline.
    pub histories: &'a BTreeMap<u32, History>,
    /// The WAL segment size.
    pub segment_size: u64,
    /// Where to stop.
    pub target: &'a RecoveryTarget,
    /// Along which timeline.
    pub timeline: TimelineChoice,
    /// A base the user chose, else the plan chooses.
    pub base: Option<SnapshotId>,
}

/// The plan: which base, which timeline, what WAL it replays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The base backup to restore.
    pub base: SnapshotId,
    /// The timeline to recover along (`recovery_target_timeline`).
    pub timeline: u32,
    /// The first and last segments recovery can read: (timeline, segno).
    pub first_segment: SegmentRef,
    /// The last contiguous archived segment from the base on.
    pub last_segment: SegmentRef,
    /// The recoverable window from this base: from its stop time to the
    /// newest contiguous segment's archiving time.
    pub window: (jiff::Timestamp, jiff::Timestamp),
    /// The window in LSNs: the base's stop LSN to the end of the last segment.
    pub window_lsn: (u64, u64),
    /// Notes for the user (a target that cannot be checked in advance).
    pub notes: Vec<String>,
}

/// Why no plan exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// No base backup of this cluster.
    #[error("the repository holds no base backup of this cluster: take one with `cairn pg base-backup` first")]
    NoBase,
    /// A timeline without its history file.
    #[error(
        "timeline {0} has no {0:08X}.history file in the archive, so its ancestry is unknown: check that wal-push \
         archived it, or recover along another timeline"
    )]
    NoHistory(u32),
    /// The chosen base does not exist or is not on the timeline's path.
    #[error("base backup {0} is not usable for this target: {1}")]
    BaseUnusable(String, String),
    /// No base is usable at all.
    #[error("no base backup can be recovered along timeline {timeline}: {why}")]
    NothingUsable {
        /// The timeline.
        timeline: u32,
        /// Why (each base's reason).
        why: String,
    },
    /// The target is before every usable base's end.
    #[error(
        "the target is before the end of the oldest usable base backup (consistent at {earliest}); PostgreSQL \
         would promote at that point with rows missing, so it is refused: choose a later target"
    )]
    BeforeBases {
        /// The earliest end (time or LSN).
        earliest: String,
    },
    /// The target is past the archived WAL.
    #[error(
        "the target is after the newest archived WAL ({newest}); recovery cannot reach it: wait for the next \
         segment to be archived (or run SELECT pg_switch_wal() on the server) and restore again"
    )]
    AfterArchive {
        /// The end of the archive (time or LSN).
        newest: String,
    },
}

/// An LSN's text (`X/Y`).
fn lsn_text(lsn: u64) -> String {
    Lsn(lsn).to_string()
}

/// The timelines of `tli`'s path with the LSN each begins at, oldest first.
fn path_of(tli: u32, histories: &BTreeMap<u32, History>) -> Result<Vec<(u32, u64, u64)>, PlanError> {
    let mut path = Vec::new();
    let mut begin = 0u64;
    if tli > 1 {
        let history = histories.get(&tli).ok_or(PlanError::NoHistory(tli))?;
        for &(parent, end) in history {
            path.push((parent, begin, end));
            begin = end;
        }
    }
    path.push((tli, begin, u64::MAX));
    Ok(path)
}

/// What a base can reach along `path`: its first and last contiguous
/// segments, or why it cannot be used.
fn reach(
    base: &BaseCandidate,
    path: &[(u32, u64, u64)],
    have: &HashSet<(u32, u64)>,
    size: u64,
) -> Result<(SegmentRef, SegmentRef), String> {
    let Some(&(_, _, end)) = path.iter().find(|(t, _, _)| *t == base.timeline) else {
        return Err(format!("it was taken on timeline {}, which is not on the recovery path", base.timeline));
    };
    if base.stop_lsn > end {
        return Err(format!(
            "it ends at {} on timeline {}, after that timeline branched off at {}",
            lsn_text(base.stop_lsn),
            base.timeline,
            lsn_text(end)
        ));
    }
    // PostgreSQL reads each segment from the newest timeline of the path
    // that begins at or before it.
    let tli_of = |segno: u64| path.iter().rev().find(|(_, begin, _)| begin / size <= segno).map(|p| p.0);
    let first = base.start_lsn / size;
    let mut segno = first;
    let mut last = None;
    while let Some(tli) = tli_of(segno) {
        if !have.contains(&(tli, segno)) {
            break;
        }
        last = Some((tli, segno));
        segno += 1;
    }
    let Some(last) = last else {
        return Err(format!("its first WAL segment (number {first:X}) is not archived"));
    };
    if last.1 < base.stop_lsn / size {
        return Err(format!(
            "WAL segment {:X} is missing, before the backup's end at {}",
            last.1 + 1,
            lsn_text(base.stop_lsn)
        ));
    }
    Ok(((tli_of(first).unwrap_or(base.timeline), first), last))
}

/// Chooses the base backup and timeline for `input.target`, or says why
/// none fits.
pub fn plan(input: &PlanInput<'_>) -> Result<Plan, PlanError> {
    if input.bases.is_empty() {
        return Err(PlanError::NoBase);
    }
    let size = input.segment_size.max(1);
    let timeline = match input.timeline {
        TimelineChoice::Id(t) => t,
        TimelineChoice::Latest => input
            .segments
            .iter()
            .map(|s| s.timeline)
            .chain(input.histories.keys().copied())
            .chain(input.bases.iter().map(|b| b.timeline))
            .max()
            .unwrap_or(1),
    };
    let path = path_of(timeline, input.histories)?;
    let have: HashSet<(u32, u64)> = input.segments.iter().map(|s| (s.timeline, s.segno)).collect();
    let pushed: BTreeMap<(u32, u64), jiff::Timestamp> =
        input.segments.iter().map(|s| ((s.timeline, s.segno), s.pushed)).collect();

    let mut usable = Vec::new();
    let mut reasons = Vec::new();
    for base in input.bases {
        if input.base.is_some_and(|id| id != base.id) {
            continue;
        }
        match reach(base, &path, &have, size) {
            Ok((first, last)) => usable.push((base, first, last)),
            Err(why) => reasons.push((base.id, why)),
        }
    }
    if let Some(id) = input.base {
        if let Some((_, why)) = reasons.first() {
            return Err(PlanError::BaseUnusable(id.short(), why.clone()));
        }
        if usable.is_empty() {
            return Err(PlanError::BaseUnusable(id.short(), "no such base backup of this cluster".into()));
        }
    }
    if usable.is_empty() {
        let why = reasons.iter().map(|(id, why)| format!("{}: {why}", id.short())).collect::<Vec<_>>().join("; ");
        return Err(PlanError::NothingUsable { timeline, why });
    }
    usable.sort_by_key(|(b, _, _)| (b.stop_lsn, b.stop_time));
    let end_lsn = |last: (u32, u64)| (last.1 + 1).saturating_mul(size);
    let end_time = |last: (u32, u64)| pushed.get(&last).copied().unwrap_or_default();
    let mut notes = Vec::new();
    let chosen = match input.target {
        RecoveryTarget::Time(t) => {
            let Some(chosen) = usable.iter().rev().find(|(b, _, _)| b.stop_time <= *t) else {
                return Err(PlanError::BeforeBases { earliest: usable[0].0.stop_time.to_string() });
            };
            if *t > end_time(chosen.2) {
                return Err(PlanError::AfterArchive { newest: format!("archived at {}", end_time(chosen.2)) });
            }
            chosen
        }
        RecoveryTarget::Lsn(text) => {
            let l = parse_lsn(text).ok_or_else(|| PlanError::BeforeBases { earliest: format!("{text:?}") })?;
            let Some(chosen) = usable.iter().rev().find(|(b, _, _)| b.stop_lsn <= l) else {
                return Err(PlanError::BeforeBases { earliest: lsn_text(usable[0].0.stop_lsn) });
            };
            if l > end_lsn(chosen.2) {
                return Err(PlanError::AfterArchive { newest: format!("up to {}", lsn_text(end_lsn(chosen.2))) });
            }
            chosen
        }
        RecoveryTarget::Xid(_) | RecoveryTarget::Name(_) => {
            // Where a transaction or restore point lies is not known before
            // replay: the oldest base replays the most WAL, so it is before
            // any target still in the archive.
            notes.push(
                "a transaction id or restore point cannot be placed before replay: using the oldest usable base \
                 backup (choose another with --base)"
                    .into(),
            );
            if input.base.is_some() { &usable[usable.len() - 1] } else { &usable[0] }
        }
        RecoveryTarget::Latest => &usable[usable.len() - 1],
    };
    let (base, first, last) = *chosen;
    Ok(Plan {
        base: base.id,
        timeline,
        first_segment: first,
        last_segment: last,
        window: (base.stop_time, end_time(last)),
        window_lsn: (base.stop_lsn, end_lsn(last)),
        notes,
    })
}

/// Parses `X/Y` (hex).
fn parse_lsn(text: &str) -> Option<u64> {
    text.trim().parse::<Lsn>().ok().map(|l| l.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 16 << 20;

    fn id(n: u8) -> SnapshotId {
        SnapshotId(cairn_repo::Id([n; 32]))
    }

    fn at(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn base(n: u8, tli: u32, start_seg: u64, stop_seg: u64, stop_time: i64) -> BaseCandidate {
        BaseCandidate {
            id: id(n),
            timeline: tli,
            start_lsn: start_seg * SEG + 40,
            stop_lsn: stop_seg * SEG + 312,
            stop_time: at(stop_time),
        }
    }

    /// Segments `from..=to` of `tli`, segment k archived at time 10·k.
    fn segs(tli: u32, from: u64, to: u64) -> Vec<ArchivedSegment> {
        (from..=to).map(|k| ArchivedSegment { timeline: tli, segno: k, pushed: at(10 * k as i64) }).collect()
    }

    struct Case {
        name: &'static str,
        bases: Vec<BaseCandidate>,
        segments: Vec<ArchivedSegment>,
        histories: BTreeMap<u32, History>,
        target: RecoveryTarget,
        timeline: TimelineChoice,
        base: Option<SnapshotId>,
        want: Result<(u8, u32, SegmentRef, SegmentRef), &'static str>,
    }

    fn case(
        name: &'static str,
        bases: Vec<BaseCandidate>,
        segments: Vec<ArchivedSegment>,
        target: RecoveryTarget,
    ) -> Case {
        Case {
            name,
            bases,
            segments,
            histories: BTreeMap::new(),
            target,
            timeline: TimelineChoice::Latest,
            base: None,
            want: Err(""),
        }
    }

    #[test]
    fn plans_choose_the_newest_base_before_the_target_and_refuse_the_rest() {
        let two_bases = || vec![base(1, 1, 2, 3, 35), base(2, 1, 6, 6, 65)];
        let mut cases = vec![
            Case {
                want: Ok((2, 1, (1, 6), (1, 9))),
                ..case("latest: newest base", two_bases(), segs(1, 2, 9), RecoveryTarget::Latest)
            },
            Case {
                want: Ok((1, 1, (1, 2), (1, 9))),
                ..case("time between the bases", two_bases(), segs(1, 2, 9), RecoveryTarget::Time(at(50)))
            },
            Case {
                want: Ok((2, 1, (1, 6), (1, 9))),
                ..case("time after both", two_bases(), segs(1, 2, 9), RecoveryTarget::Time(at(80)))
            },
            Case {
                want: Ok((2, 1, (1, 6), (1, 9))),
                ..case("time exactly at a base's end", two_bases(), segs(1, 2, 9), RecoveryTarget::Time(at(65)))
            },
            Case {
                want: Err("before the end"),
                ..case("time before every base's end", two_bases(), segs(1, 2, 9), RecoveryTarget::Time(at(30)))
            },
            Case {
                want: Err("after the newest archived"),
                ..case("time after the archive", two_bases(), segs(1, 2, 9), RecoveryTarget::Time(at(91)))
            },
            Case {
                want: Ok((1, 1, (1, 2), (1, 9))),
                ..case("lsn between", two_bases(), segs(1, 2, 9), RecoveryTarget::Lsn("0/5000000".into()))
            },
            Case {
                want: Err("before the end"),
                ..case("lsn inside the first base", two_bases(), segs(1, 2, 9), RecoveryTarget::Lsn("0/3000000".into()))
            },
            Case {
                want: Err("after the newest archived"),
                ..case("lsn past the archive", two_bases(), segs(1, 2, 9), RecoveryTarget::Lsn("0/A000001".into()))
            },
            Case {
                want: Ok((1, 1, (1, 2), (1, 9))),
                ..case("xid: the oldest base", two_bases(), segs(1, 2, 9), RecoveryTarget::Xid(900))
            },
            Case {
                want: Ok((1, 1, (1, 2), (1, 9))),
                ..case("name: the oldest base", two_bases(), segs(1, 2, 9), RecoveryTarget::Name("x".into()))
            },
            // A gap at segment 5: the first base reaches 4 only, the second
            // starts after it.
            Case {
                want: Ok((1, 1, (1, 2), (1, 4))),
                ..case(
                    "a gap ends the first base's window",
                    two_bases(),
                    [segs(1, 2, 4), segs(1, 6, 9)].concat(),
                    RecoveryTarget::Time(at(40)),
                )
            },
            Case {
                want: Err("after the newest archived"),
                ..case(
                    "a target past the gap",
                    vec![base(1, 1, 2, 3, 35)],
                    [segs(1, 2, 4), segs(1, 6, 9)].concat(),
                    RecoveryTarget::Time(at(80)),
                )
            },
            Case {
                want: Err("is not archived"),
                ..case(
                    "the base's first segment is missing",
                    vec![base(1, 1, 2, 3, 35)],
                    segs(1, 3, 9),
                    RecoveryTarget::Latest,
                )
            },
            Case {
                want: Err("before the backup's end"),
                ..case(
                    "the base's end is not archived yet",
                    vec![base(1, 1, 2, 3, 35)],
                    segs(1, 2, 2),
                    RecoveryTarget::Latest,
                )
            },
            Case { want: Err("no base backup"), ..case("no bases", vec![], segs(1, 2, 9), RecoveryTarget::Latest) },
        ];
        // Timelines: 2 branched off 1 at segment 5 (LSN 0/5000100).
        let branched = || BTreeMap::from([(2u32, vec![(1u32, 5 * SEG + 0x100)])]);
        let tl_segments = || [segs(1, 2, 6), segs(2, 5, 8)].concat();
        cases.push(Case {
            histories: branched(),
            want: Ok((1, 2, (1, 2), (2, 8))),
            ..case(
                "a base on the parent timeline follows the history",
                vec![base(1, 1, 2, 3, 35)],
                tl_segments(),
                RecoveryTarget::Latest,
            )
        });
        cases.push(Case {
            histories: branched(),
            want: Err("branched off"),
            ..case(
                "a base after the branch point of its timeline",
                vec![base(1, 1, 6, 6, 65)],
                tl_segments(),
                RecoveryTarget::Latest,
            )
        });
        cases.push(Case {
            histories: branched(),
            timeline: TimelineChoice::Id(1),
            want: Ok((1, 1, (1, 6), (1, 6))),
            ..case("the old timeline when asked", vec![base(1, 1, 6, 6, 65)], tl_segments(), RecoveryTarget::Latest)
        });
        cases.push(Case {
            want: Err("no 00000002.history"),
            ..case("a timeline without history", vec![base(1, 1, 2, 3, 35)], tl_segments(), RecoveryTarget::Latest)
        });
        cases.push(Case {
            base: Some(id(2)),
            want: Ok((2, 1, (1, 6), (1, 9))),
            ..case("a chosen base", two_bases(), segs(1, 2, 9), RecoveryTarget::Latest)
        });
        cases.push(Case {
            base: Some(id(2)),
            want: Err("before the end"),
            ..case("a chosen base after the target", two_bases(), segs(1, 2, 9), RecoveryTarget::Time(at(50)))
        });
        cases.push(Case {
            base: Some(id(9)),
            want: Err("no such base"),
            ..case("an unknown chosen base", two_bases(), segs(1, 2, 9), RecoveryTarget::Latest)
        });
        for c in cases {
            let input = PlanInput {
                bases: &c.bases,
                segments: &c.segments,
                histories: &c.histories,
                segment_size: SEG,
                target: &c.target,
                timeline: c.timeline,
                base: c.base,
            };
            let got = plan(&input);
            match (&c.want, got) {
                (Ok((b, tli, first, last)), Ok(p)) => {
                    assert_eq!(
                        (p.base, p.timeline, p.first_segment, p.last_segment),
                        (id(*b), *tli, *first, *last),
                        "{}",
                        c.name
                    )
                }
                (Err(needle), Err(e)) => assert!(e.to_string().contains(needle), "{}: {e}", c.name),
                (want, got) => panic!("{}: wanted {want:?}, got {got:?}", c.name),
            }
        }
    }
}
