//! Forgetting snapshots by a retention policy: the rules as users write
//! them ([`RetentionRules`], shared by `cairn forget`'s `--keep-*` options
//! and a job's `retention` table), the plan of what each group keeps and
//! loses ([`plan_forget`], a pure function), and carrying it out
//! ([`ForgetPlan::execute`]). Only snapshot objects go; the data they alone
//! referenced stays until a prune.

use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::id::SnapshotId;
use crate::format::snapshot::Snapshot;
use crate::maintenance::retention::{self, Period, Policy, Verdict};
use crate::repository::Repository;
use crate::selection::{GroupBy, GroupKey, group_snapshots};

/// Retention as users write it. Every field is optional; `keep-tag`
/// entries are comma-separated tag sets (`"forever"`, `"db,monthly"`).
/// Durations are spans such as `30d` or `1y6m` (see [`parse_span`]).
///
/// [`parse_span`]: crate::parse_span
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RetentionRules {
    /// Keep the newest N.
    #[serde(skip_serializing_if = "is_zero")]
    pub keep_last: u32,
    /// Keep the newest of each of the N most recent hours that have snapshots.
    #[serde(skip_serializing_if = "is_zero")]
    pub keep_hourly: u32,
    /// The same, for days.
    #[serde(skip_serializing_if = "is_zero")]
    pub keep_daily: u32,
    /// The same, for ISO weeks.
    #[serde(skip_serializing_if = "is_zero")]
    pub keep_weekly: u32,
    /// The same, for months.
    #[serde(skip_serializing_if = "is_zero")]
    pub keep_monthly: u32,
    /// The same, for years.
    #[serde(skip_serializing_if = "is_zero")]
    pub keep_yearly: u32,
    /// Keep everything within this span of the group's newest snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_within: Option<String>,
    /// Keep the newest of each hour within this span.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_within_hourly: Option<String>,
    /// The same, for days.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_within_daily: Option<String>,
    /// The same, for ISO weeks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_within_weekly: Option<String>,
    /// The same, for months.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_within_monthly: Option<String>,
    /// The same, for years.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_within_yearly: Option<String>,
    /// Keep snapshots carrying every tag of any of these comma-separated sets.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keep_tag: Vec<String>,
    /// Refuse (and remove nothing) if a group would keep fewer than this
    /// many snapshots (all of them, if it has fewer).
    #[serde(skip_serializing_if = "is_zero")]
    pub min_keep: usize,
}

fn is_zero<T: Default + PartialEq>(n: &T) -> bool {
    *n == T::default()
}

impl RetentionRules {
    /// The policy these rules describe; an error names a malformed span.
    pub fn policy(&self) -> Result<Policy> {
        let mut policy = Policy { last: self.keep_last, ..Default::default() };
        for (period, n) in [
            (Period::Hourly, self.keep_hourly),
            (Period::Daily, self.keep_daily),
            (Period::Weekly, self.keep_weekly),
            (Period::Monthly, self.keep_monthly),
            (Period::Yearly, self.keep_yearly),
        ] {
            if n > 0 {
                policy.periods.insert(period, n);
            }
        }
        policy.within = self.keep_within.as_deref().map(retention::parse_span).transpose()?;
        for (period, span) in [
            (Period::Hourly, &self.keep_within_hourly),
            (Period::Daily, &self.keep_within_daily),
            (Period::Weekly, &self.keep_within_weekly),
            (Period::Monthly, &self.keep_within_monthly),
            (Period::Yearly, &self.keep_within_yearly),
        ] {
            if let Some(text) = span {
                policy.within_periods.insert(period, retention::parse_span(text)?);
            }
        }
        policy.tags = self
            .keep_tag
            .iter()
            .map(|set| set.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned).collect())
            .filter(|set: &Vec<String>| !set.is_empty())
            .collect();
        Ok(policy)
    }
}

/// What forgetting does to one group of snapshots.
#[derive(Debug, Clone)]
pub struct ForgetGroup {
    /// What the group's snapshots share.
    pub key: GroupKey,
    /// Each snapshot with its verdict, newest first.
    pub verdicts: Vec<(Verdict, Snapshot)>,
}

/// What forgetting keeps and removes, group by group.
#[derive(Debug, Clone, Default)]
pub struct ForgetPlan {
    /// The groups, in key order.
    pub groups: Vec<ForgetGroup>,
}

impl ForgetPlan {
    /// The snapshots the plan removes.
    pub fn removals(&self) -> impl Iterator<Item = &SnapshotId> {
        self.groups.iter().flat_map(|g| g.verdicts.iter()).filter(|(v, _)| !v.keep).map(|(v, _)| &v.id)
    }

    /// Removes the snapshots the plan does not keep; returns how many.
    pub async fn execute(&self, repo: &Repository) -> Result<usize> {
        let mut removed = 0;
        for id in self.removals() {
            repo.forget_snapshot(id).await?;
            removed += 1;
        }
        Ok(removed)
    }
}

/// Judges `snapshots`, grouped `by`, with `policy` in time zone `tz`
/// (calendar periods end at its midnight). Refuses, removing nothing, when
/// the policy is empty (it would remove everything) or when a group would
/// keep fewer than `min_keep` of its snapshots: a policy that removes almost
/// everything is more likely a mistake (a wrong grouping, a typo in a tag)
/// than a wish. The rule is per group, and a group with fewer snapshots
/// than `min_keep` must keep all of them, so a new host's first backup does
/// not block everyone's retention.
pub fn plan_forget(
    snapshots: Vec<(SnapshotId, Snapshot)>,
    policy: &Policy,
    by: GroupBy,
    min_keep: usize,
    tz: &TimeZone,
) -> Result<ForgetPlan> {
    if policy.is_empty() {
        return Err(Error::InvalidArgument("no retention rule given: it would remove every snapshot".into()));
    }
    let mut plan = ForgetPlan::default();
    for (key, group) in group_snapshots(snapshots, by) {
        let verdicts = retention::apply(policy, &group, tz)?;
        let kept = verdicts.iter().filter(|v| v.keep).count();
        if kept < min_keep.min(verdicts.len()) {
            return Err(Error::InvalidArgument(format!(
                "{key}: the policy would keep {kept} snapshot(s), fewer than the minimum of {min_keep} \
                 (min-keep); nothing was removed"
            )));
        }
        plan.groups.push(ForgetGroup { key, verdicts: attach(verdicts, group) });
    }
    Ok(plan)
}

/// A plan that removes exactly `snapshots` (forget by id), grouped `by`.
pub fn plan_forget_ids(snapshots: Vec<(SnapshotId, Snapshot)>, by: GroupBy) -> ForgetPlan {
    let groups = group_snapshots(snapshots, by)
        .into_iter()
        .map(|(key, group)| {
            let verdicts = group.iter().map(|(id, _)| Verdict { id: *id, keep: false, reasons: Vec::new() }).collect();
            ForgetGroup { key, verdicts: attach(verdicts, group) }
        })
        .collect();
    ForgetPlan { groups }
}

/// Pairs each verdict with its snapshot (verdicts are of `group`'s
/// snapshots, one each).
fn attach(verdicts: Vec<Verdict>, group: Vec<(SnapshotId, Snapshot)>) -> Vec<(Verdict, Snapshot)> {
    let mut by_id: std::collections::HashMap<SnapshotId, Snapshot> = group.into_iter().collect();
    verdicts
        .into_iter()
        .filter_map(|v| {
            let snapshot = by_id.remove(&v.id)?;
            Some((v, snapshot))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::id::{Id, TreeId};

    fn snapshots(host: &str, days: &[i64]) -> Vec<(SnapshotId, Snapshot)> {
        days.iter()
            .map(|&day| {
                let mut s = Snapshot::new(TreeId::default(), vec!["/data".into()]);
                s.hostname = host.into();
                s.time = jiff::Timestamp::from_second(1_700_000_000 + day * 86_400).expect("in range");
                (SnapshotId(Id::of_object(format!("{host}{day}").as_bytes())), s)
            })
            .collect()
    }

    fn by_host() -> GroupBy {
        GroupBy::parse("host,paths").unwrap()
    }

    /// `--min-keep` is per group: (kept by policy per group, min-keep) → accepted.
    #[test]
    fn min_keep_table() {
        let cases: &[(&[i64], u32, usize, bool)] = &[
            // one host with 5 daily snapshots, keep-last N, min-keep M
            (&[1, 2, 3, 4, 5], 2, 3, false),
            (&[1, 2, 3, 4, 5], 3, 3, true),
            (&[1, 2, 3, 4, 5], 1, 0, true),
            // a group smaller than min-keep must keep all of it
            (&[1], 1, 3, true),
            (&[1, 2], 1, 3, false),
        ];
        for &(days, last, min_keep, accepted) in cases {
            let policy = RetentionRules { keep_last: last, ..Default::default() }.policy().unwrap();
            let result = plan_forget(snapshots("h", days), &policy, by_host(), min_keep, &TimeZone::UTC);
            assert_eq!(result.is_ok(), accepted, "{days:?} keep-last {last} min-keep {min_keep}: {result:?}");
        }
    }

    #[test]
    fn each_group_is_judged_on_its_own() {
        let mut all = snapshots("a", &[1, 2, 3]);
        all.extend(snapshots("b", &[1]));
        let policy = RetentionRules { keep_last: 1, ..Default::default() }.policy().unwrap();
        let plan = plan_forget(all, &policy, by_host(), 1, &TimeZone::UTC).unwrap();
        assert_eq!(plan.groups.len(), 2);
        assert_eq!(plan.removals().count(), 2);
        assert!(plan.groups.iter().all(|g| g.verdicts.iter().filter(|(v, _)| v.keep).count() == 1));
    }

    #[test]
    fn an_empty_policy_removes_nothing() {
        let err = plan_forget(snapshots("a", &[1]), &Policy::default(), by_host(), 0, &TimeZone::UTC);
        assert!(err.unwrap_err().to_string().contains("no retention rule"));
    }

    #[test]
    fn rules_read_from_toml_like_keys() {
        let rules: RetentionRules =
            serde_json::from_str(r#"{"keep-daily": 7, "keep-tag": ["forever", "db, monthly"], "min-keep": 3}"#)
                .unwrap();
        let policy = rules.policy().unwrap();
        assert_eq!(policy.periods.get(&Period::Daily), Some(&7));
        assert_eq!(policy.tags, vec![vec!["forever".to_owned()], vec!["db".to_owned(), "monthly".to_owned()]]);
        assert!(serde_json::from_str::<RetentionRules>(r#"{"keep-dayly": 7}"#).is_err());
    }
}
