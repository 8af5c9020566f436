//! Retention policies: which snapshots `forget` keeps.
//!
//! Snapshots are grouped (by host and paths unless told otherwise) and each
//! group is judged on its own, newest first. A snapshot is kept when any
//! rule keeps it, and each rule records itself as a reason:
//!
//! * `last N` keeps the N newest;
//! * `hourly/daily/weekly/monthly/yearly N` keep the newest snapshot of each
//!   of the N most recent hours/days/ISO weeks/months/years that have one;
//! * `within D` keeps everything newer than the group's newest snapshot
//!   minus D; `within-daily D` (and the others) keep the newest of each
//!   day (…) in that window;
//! * `tag T` keeps every snapshot carrying all tags of T (`forever`, say).
//!
//! Calendar periods are those of the given time zone (the system's local
//! zone in the CLI): a "day" ends at local midnight.

use std::collections::BTreeMap;

use jiff::tz::TimeZone;
use jiff::{Span, Timestamp, Zoned};

use crate::error::{Error, Result};
use crate::format::id::SnapshotId;
use crate::format::snapshot::Snapshot;

/// A calendar period a rule counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Period {
    /// Local hour.
    Hourly,
    /// Local day.
    Daily,
    /// ISO week (Monday to Sunday).
    Weekly,
    /// Calendar month.
    Monthly,
    /// Calendar year.
    Yearly,
}

impl Period {
    const ALL: [Period; 5] = [Period::Hourly, Period::Daily, Period::Weekly, Period::Monthly, Period::Yearly];

    fn name(self) -> &'static str {
        match self {
            Period::Hourly => "hourly",
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
            Period::Yearly => "yearly",
        }
    }

    /// The period a moment falls in, as a comparable key.
    fn bucket(self, t: &Zoned) -> (i32, i32, i32, i32) {
        let (y, m, d, h) = (t.year() as i32, t.month() as i32, t.day() as i32, t.hour() as i32);
        match self {
            Period::Hourly => (y, m, d, h),
            Period::Daily => (y, m, d, 0),
            Period::Weekly => {
                let week = t.date().iso_week_date();
                (week.year() as i32, week.week() as i32, 0, 0)
            }
            Period::Monthly => (y, m, 0, 0),
            Period::Yearly => (y, 0, 0, 0),
        }
    }
}

/// A retention policy.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Keep the newest N.
    pub last: u32,
    /// Keep the newest of the N most recent periods that have snapshots.
    pub periods: BTreeMap<Period, u32>,
    /// Keep everything within this span of the newest snapshot.
    pub within: Option<Span>,
    /// Keep the newest of each period within this span of the newest snapshot.
    pub within_periods: BTreeMap<Period, Span>,
    /// Keep snapshots carrying every tag of any of these sets.
    pub tags: Vec<Vec<String>>,
}

impl Policy {
    /// True when no rule is set (such a policy would remove everything).
    pub fn is_empty(&self) -> bool {
        self.last == 0
            && self.periods.values().all(|&n| n == 0)
            && self.within.is_none()
            && self.within_periods.is_empty()
            && self.tags.is_empty()
    }
}

/// The verdict on one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The snapshot.
    pub id: SnapshotId,
    /// Kept by at least one rule.
    pub keep: bool,
    /// The rules that keep it (`last`, `daily`, `within 30d`, `tag forever`, ...).
    pub reasons: Vec<String>,
}

/// Applies `policy` to the snapshots of one group (any order); returns
/// verdicts newest first.
pub fn apply(policy: &Policy, group: &[(SnapshotId, Snapshot)], tz: &TimeZone) -> Result<Vec<Verdict>> {
    let mut sorted: Vec<&(SnapshotId, Snapshot)> = group.iter().collect();
    sorted.sort_by(|a, b| b.1.time.cmp(&a.1.time).then(b.0.cmp(&a.0)));
    let Some(newest) = sorted.first().map(|(_, s)| s.time.to_zoned(tz.clone())) else {
        return Ok(Vec::new());
    };
    let cutoff = |span: &Span| -> Result<Timestamp> {
        newest
            .checked_sub(*span)
            .map(|z| z.timestamp())
            .map_err(|e| Error::InvalidArgument(format!("retention window {span} out of range: {e}")))
    };
    let within = policy.within.as_ref().map(cutoff).transpose()?;
    let within_periods: Vec<(Period, Timestamp, String)> = policy
        .within_periods
        .iter()
        .map(|(p, span)| Ok((*p, cutoff(span)?, format!("within-{} {}", p.name(), span))))
        .collect::<Result<_>>()?;

    let mut remaining: BTreeMap<Period, u32> = policy.periods.clone();
    let mut last_bucket: BTreeMap<Period, (i32, i32, i32, i32)> = BTreeMap::new();
    let mut last_within_bucket: BTreeMap<Period, (i32, i32, i32, i32)> = BTreeMap::new();
    let mut verdicts = Vec::with_capacity(sorted.len());
    for (position, (id, snapshot)) in sorted.iter().enumerate() {
        let local = snapshot.time.to_zoned(tz.clone());
        let mut reasons = Vec::new();
        if (position as u32) < policy.last {
            reasons.push("last".to_owned());
        }
        for period in Period::ALL {
            let bucket = period.bucket(&local);
            if let Some(left) = remaining.get_mut(&period).filter(|n| **n > 0) {
                if last_bucket.get(&period) != Some(&bucket) {
                    *left -= 1;
                    last_bucket.insert(period, bucket);
                    reasons.push(period.name().to_owned());
                }
            }
        }
        if let (Some(cut), Some(span)) = (within, &policy.within) {
            if snapshot.time >= cut {
                reasons.push(format!("within {span}"));
            }
        }
        for (period, cut, reason) in &within_periods {
            let bucket = period.bucket(&local);
            if snapshot.time >= *cut && last_within_bucket.get(period) != Some(&bucket) {
                last_within_bucket.insert(*period, bucket);
                reasons.push(reason.clone());
            }
        }
        for set in &policy.tags {
            if set.iter().all(|t| snapshot.tags.contains(t)) {
                reasons.push(format!("tag {}", set.join(",")));
            }
        }
        verdicts.push(Verdict { id: *id, keep: !reasons.is_empty(), reasons });
    }
    Ok(verdicts)
}

/// Parses a retention span: a sequence of numbers with units `y` (years),
/// `m` (months), `w` (weeks), `d` (days), `h` (hours), e.g. `1y6m`, `30d`.
pub fn parse_span(text: &str) -> Result<Span> {
    let bad = || {
        Error::InvalidArgument(format!("invalid duration {text:?}: use numbers with y, m, w, d, h, e.g. 1y6m or 30d"))
    };
    let mut span = Span::new();
    let mut digits = String::new();
    let mut any = false;
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: i64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        span = match c {
            'y' => span.try_years(n),
            'm' => span.try_months(n),
            'w' => span.try_weeks(n),
            'd' => span.try_days(n),
            'h' => span.try_hours(n),
            _ => return Err(bad()),
        }
        .map_err(|_| bad())?;
        any = true;
    }
    if !digits.is_empty() || !any {
        return Err(bad());
    }
    Ok(span)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::id::Id;

    fn snap(time: &str, tags: &[&str]) -> (SnapshotId, Snapshot) {
        let mut s = Snapshot::new(Default::default(), vec!["/srv".into()]);
        s.time = time.parse().unwrap();
        s.tags = tags.iter().map(|t| t.to_string()).collect();
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&s.time.as_second().to_be_bytes());
        (SnapshotId(Id(id)), s)
    }

    fn kept(policy: &Policy, group: &[(SnapshotId, Snapshot)]) -> Vec<String> {
        let mut out: Vec<String> = apply(policy, group, &TimeZone::UTC)
            .unwrap()
            .into_iter()
            .filter(|v| v.keep)
            .map(|v| group.iter().find(|(id, _)| *id == v.id).unwrap().1.time.to_string())
            .collect();
        out.sort();
        out
    }

    #[test]
    fn calendar_rules_keep_the_newest_of_each_period() {
        let group: Vec<_> = [
            "2025-01-01T10:00:00Z",
            "2025-01-01T22:00:00Z",
            "2025-01-02T09:00:00Z",
            "2025-01-09T09:00:00Z",
            "2025-02-15T09:00:00Z",
            "2025-12-31T23:00:00Z",
            "2026-01-01T01:00:00Z",
        ]
        .iter()
        .map(|t| snap(t, &[]))
        .collect();
        let daily = Policy { periods: [(Period::Daily, 3)].into(), ..Default::default() };
        assert_eq!(kept(&daily, &group), ["2025-02-15T09:00:00Z", "2025-12-31T23:00:00Z", "2026-01-01T01:00:00Z"]);
        let monthly = Policy { periods: [(Period::Monthly, 3)].into(), ..Default::default() };
        assert_eq!(kept(&monthly, &group), ["2025-02-15T09:00:00Z", "2025-12-31T23:00:00Z", "2026-01-01T01:00:00Z"]);
        let yearly = Policy { periods: [(Period::Yearly, 5)].into(), ..Default::default() };
        assert_eq!(kept(&yearly, &group), ["2025-12-31T23:00:00Z", "2026-01-01T01:00:00Z"]);
        // 2025-12-31 and 2026-01-01 are in the same ISO week (2026-W01).
        let weekly = Policy { periods: [(Period::Weekly, 3)].into(), ..Default::default() };
        assert_eq!(kept(&weekly, &group), ["2025-01-09T09:00:00Z", "2025-02-15T09:00:00Z", "2026-01-01T01:00:00Z"]);
        let last = Policy { last: 2, ..Default::default() };
        assert_eq!(kept(&last, &group), ["2025-12-31T23:00:00Z", "2026-01-01T01:00:00Z"]);
    }

    #[test]
    fn within_windows_and_tags() {
        let group: Vec<_> = [
            ("2025-01-01T00:00:00Z", &["forever"][..]),
            ("2025-06-01T00:00:00Z", &[][..]),
            ("2025-06-20T00:00:00Z", &[][..]),
            ("2025-06-20T12:00:00Z", &[][..]),
            ("2025-06-30T00:00:00Z", &[][..]),
        ]
        .iter()
        .map(|(t, tags)| snap(t, tags))
        .collect();
        let within = Policy { within: Some(parse_span("10d").unwrap()), ..Default::default() };
        assert_eq!(kept(&within, &group), ["2025-06-20T00:00:00Z", "2025-06-20T12:00:00Z", "2025-06-30T00:00:00Z"]);
        let within_daily =
            Policy { within_periods: [(Period::Daily, parse_span("1m").unwrap())].into(), ..Default::default() };
        assert_eq!(
            kept(&within_daily, &group),
            ["2025-06-01T00:00:00Z", "2025-06-20T12:00:00Z", "2025-06-30T00:00:00Z"]
        );
        let tags = Policy { tags: vec![vec!["forever".into()]], ..Default::default() };
        assert_eq!(kept(&tags, &group), ["2025-01-01T00:00:00Z"]);
        assert!(Policy::default().is_empty());
    }

    #[test]
    fn spans() {
        assert!(parse_span("1y6m2w3d4h").is_ok());
        for bad in ["", "5", "d", "3x", "1.5d", "-1d"] {
            assert!(parse_span(bad).is_err(), "{bad}");
        }
    }

    fn policy_with(f: impl FnOnce(&mut Policy)) -> Policy {
        let mut p = Policy::default();
        f(&mut p);
        p
    }

    /// Edge cases as a table: the group (time, tags), the policy, and the
    /// times of the snapshots kept.
    #[test]
    fn retention_table() {
        type Case = (&'static str, &'static [(&'static str, &'static [&'static str])], Policy, &'static [&'static str]);
        let three: &[(&str, &[&str])] =
            &[("2025-03-01T00:00:00Z", &[]), ("2025-03-02T00:00:00Z", &[]), ("2025-03-03T00:00:00Z", &[])];
        let cases: Vec<Case> = vec![
            ("an empty policy keeps nothing", three, Policy::default(), &[]),
            (
                "zero counts are no rules",
                three,
                policy_with(|p| {
                    p.periods.insert(Period::Daily, 0);
                }),
                &[],
            ),
            ("an empty group", &[], policy_with(|p| p.last = 3), &[]),
            (
                "keep-last beyond the group keeps all",
                three,
                policy_with(|p| p.last = 10),
                &["2025-03-01T00:00:00Z", "2025-03-02T00:00:00Z", "2025-03-03T00:00:00Z"],
            ),
            (
                // The window counts back from the newest snapshot, not from
                // now, and its start is included.
                "keep-within includes the window's start",
                three,
                policy_with(|p| p.within = Some(parse_span("1d").unwrap())),
                &["2025-03-02T00:00:00Z", "2025-03-03T00:00:00Z"],
            ),
            (
                "keep-within shorter than any gap keeps only the newest",
                three,
                policy_with(|p| p.within = Some(parse_span("1h").unwrap())),
                &["2025-03-03T00:00:00Z"],
            ),
            (
                "periods without snapshots do not count",
                &[("2025-01-15T00:00:00Z", &[]), ("2025-06-15T00:00:00Z", &[]), ("2025-06-16T00:00:00Z", &[])],
                policy_with(|p| {
                    p.periods.insert(Period::Monthly, 2);
                }),
                &["2025-01-15T00:00:00Z", "2025-06-16T00:00:00Z"],
            ),
            (
                "hourly keeps the newest of each hour",
                &[("2025-03-01T10:05:00Z", &[]), ("2025-03-01T10:55:00Z", &[]), ("2025-03-01T11:00:00Z", &[])],
                policy_with(|p| {
                    p.periods.insert(Period::Hourly, 5);
                }),
                &["2025-03-01T10:55:00Z", "2025-03-01T11:00:00Z"],
            ),
            (
                "a tag set needs all its tags; sets are alternatives",
                &[
                    ("2025-03-01T00:00:00Z", &["a"]),
                    ("2025-03-02T00:00:00Z", &["a", "b"]),
                    ("2025-03-03T00:00:00Z", &["c"]),
                    ("2025-03-04T00:00:00Z", &[]),
                ],
                policy_with(|p| p.tags = vec![vec!["a".into(), "b".into()], vec!["c".into()]]),
                &["2025-03-02T00:00:00Z", "2025-03-03T00:00:00Z"],
            ),
            (
                "rules add up",
                &[
                    ("2025-01-01T00:00:00Z", &["forever"]),
                    ("2025-02-01T00:00:00Z", &[]),
                    ("2025-03-01T00:00:00Z", &[]),
                    ("2025-03-02T00:00:00Z", &[]),
                ],
                policy_with(|p| {
                    p.last = 1;
                    p.periods.insert(Period::Monthly, 2);
                    p.tags = vec![vec!["forever".into()]];
                }),
                &["2025-01-01T00:00:00Z", "2025-02-01T00:00:00Z", "2025-03-02T00:00:00Z"],
            ),
        ];
        for (name, times, policy, expected) in cases {
            let group: Vec<_> = times.iter().map(|(t, tags)| snap(t, tags)).collect();
            assert_eq!(kept(&policy, &group), *expected, "{name}");
        }
    }

    fn snap_with_id(time: &str, id: u8) -> (SnapshotId, Snapshot) {
        let (_, s) = snap(time, &[]);
        (SnapshotId(Id([id; 32])), s)
    }

    #[test]
    fn ties_are_broken_by_id_whatever_the_input_order() {
        let a = snap_with_id("2025-03-01T00:00:00Z", 1);
        let b = snap_with_id("2025-03-01T00:00:00Z", 2);
        let older = snap_with_id("2025-02-01T00:00:00Z", 3);
        let last = Policy { last: 1, ..Default::default() };
        for group in [vec![a.clone(), b.clone(), older.clone()], vec![older.clone(), b.clone(), a.clone()]] {
            let verdicts = apply(&last, &group, &TimeZone::UTC).unwrap();
            let order: Vec<(SnapshotId, bool)> = verdicts.iter().map(|v| (v.id, v.keep)).collect();
            assert_eq!(order, vec![(b.0, true), (a.0, false), (older.0, false)], "newest first, then by id");
        }
        // Within one day, the snapshot judged first (the higher id) is the
        // day's representative.
        let daily = Policy { periods: [(Period::Daily, 1)].into(), ..Default::default() };
        let verdicts = apply(&daily, &[a.clone(), b.clone()], &TimeZone::UTC).unwrap();
        assert_eq!(verdicts.iter().filter(|v| v.keep).map(|v| v.id).collect::<Vec<_>>(), vec![b.0]);
    }

    #[test]
    fn reasons_name_every_rule_that_keeps() {
        let group = vec![snap("2025-03-02T00:00:00Z", &["x"]), snap("2025-03-01T00:00:00Z", &[])];
        let policy = Policy {
            last: 1,
            periods: [(Period::Daily, 1)].into(),
            within: Some(parse_span("2d").unwrap()),
            within_periods: [(Period::Weekly, parse_span("1w").unwrap())].into(),
            tags: vec![vec!["x".into()]],
        };
        let verdicts = apply(&policy, &group, &TimeZone::UTC).unwrap();
        // Spans are shown in their ISO 8601 form.
        assert_eq!(verdicts[0].reasons, ["last", "daily", "within P2D", "within-weekly P1W", "tag x"]);
        // 2025-03-01 and 03-02 are in the same ISO week: only the newer one
        // is the week's.
        assert_eq!(verdicts[1].reasons, ["within P2D"]);
        assert!(verdicts.iter().all(|v| v.keep));
    }

    #[test]
    fn calendar_periods_follow_the_time_zone() {
        // At UTC-5, 2025-03-02T03:00Z is still 1 March.
        let group = vec![snap("2025-03-02T03:00:00Z", &[]), snap("2025-03-01T20:00:00Z", &[])];
        let daily = Policy { periods: [(Period::Daily, 2)].into(), ..Default::default() };
        let keep = |tz: &TimeZone| apply(&daily, &group, tz).unwrap().iter().filter(|v| v.keep).count();
        assert_eq!(keep(&TimeZone::UTC), 2);
        assert_eq!(keep(&TimeZone::fixed(jiff::tz::offset(-5))), 1);
    }

    #[test]
    fn a_window_reaching_before_the_calendar_starts_is_an_error() {
        let group = vec![snap("2025-03-01T00:00:00Z", &[])];
        let policy = Policy { within: Some(Span::new().years(19_000)), ..Default::default() };
        assert!(matches!(apply(&policy, &group, &TimeZone::UTC), Err(Error::InvalidArgument(_))));
    }
}
