//! `cairn forget`: removes snapshots by a retention policy or by id. Only
//! the snapshot objects go; the data they referenced stays until a prune.

use anyhow::{Result, bail};
use cairn_repo::{FileKind, GroupBy, Snapshot, SnapshotId};
use cairn_repo::{RetentionPeriod as Period, RetentionPolicy as Policy, RetentionVerdict as Verdict};

use crate::args::{ForgetArgs, GlobalArgs};
use crate::context;

fn policy(args: &ForgetArgs) -> Result<Policy> {
    let mut policy = Policy { last: args.keep_last, ..Default::default() };
    for (period, n) in [
        (Period::Hourly, args.keep_hourly),
        (Period::Daily, args.keep_daily),
        (Period::Weekly, args.keep_weekly),
        (Period::Monthly, args.keep_monthly),
        (Period::Yearly, args.keep_yearly),
    ] {
        if n > 0 {
            policy.periods.insert(period, n);
        }
    }
    policy.within = args.keep_within.as_deref().map(cairn_repo::parse_span).transpose()?;
    for (period, span) in [
        (Period::Hourly, &args.keep_within_hourly),
        (Period::Daily, &args.keep_within_daily),
        (Period::Weekly, &args.keep_within_weekly),
        (Period::Monthly, &args.keep_within_monthly),
        (Period::Yearly, &args.keep_within_yearly),
    ] {
        if let Some(text) = span {
            policy.within_periods.insert(period, cairn_repo::parse_span(text)?);
        }
    }
    policy.tags = args
        .keep_tag
        .iter()
        .map(|set| set.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned).collect())
        .collect();
    Ok(policy)
}

/// Refuses a group's verdicts when the policy keeps fewer than `min_keep`
/// of its snapshots: a policy that removes almost everything is more likely
/// a mistake (a wrong `--group-by`, a typo in a tag) than a wish. The rule
/// is per group: a group with fewer snapshots than `min_keep` must keep all
/// of them (a new host's first backup does not block everyone's retention).
fn check_min_keep(label: &str, verdicts: &[Verdict], min_keep: usize) -> Result<()> {
    let kept = verdicts.iter().filter(|v| v.keep).count();
    if kept < min_keep.min(verdicts.len()) {
        bail!(
            "{label}: the policy would keep {kept} snapshot(s), fewer than --min-keep {min_keep}; nothing was removed"
        );
    }
    Ok(())
}

pub async fn run(global: &GlobalArgs, args: ForgetArgs) -> Result<()> {
    let by = match GroupBy::parse(&args.group_by) {
        Ok(by) => by,
        Err(e) => crate::exit::usage!("--group-by: {e}"),
    };
    let policy = policy(&args)?;
    let repo = context::open(global).await?;
    let explicit = !args.snapshots.is_empty();
    if explicit && !policy.is_empty() {
        crate::exit::usage!("give snapshot ids or --keep-* options, not both");
    }
    if !explicit && policy.is_empty() {
        crate::exit::usage!(
            "no policy given: use --keep-last, --keep-daily, --keep-within, --keep-tag, ... (or snapshot ids); nothing was removed"
        );
    }
    // A damaged snapshot file cannot be read, but it can be removed by id.
    let mut damaged: Vec<SnapshotId> = Vec::new();
    let snapshots = if explicit {
        let mut found = Vec::new();
        for arg in &args.snapshots {
            match repo.find_snapshot(arg, &args.filter.filter()).await {
                Ok(one) => found.push(one),
                Err(e) if e.is_corruption() => {
                    let id = SnapshotId(repo.find_id(FileKind::Snapshot, arg).await?);
                    if !global.json && !global.quiet {
                        println!("remove snapshot {}: it is damaged ({e})", id.short());
                    }
                    damaged.push(id);
                }
                Err(e) => return Err(e.into()),
            }
        }
        found.dedup_by_key(|(id, _)| *id);
        found
    } else {
        repo.snapshots_matching(&args.filter.filter()).await?
    };

    // Group, judge each group, and check --min-keep before removing anything.
    let groups = cairn_repo::group_snapshots(snapshots, by);
    let tz = jiff::tz::TimeZone::system();
    let mut judged: Vec<(String, Vec<(Verdict, Snapshot)>)> = Vec::new();
    for (key, group) in &groups {
        let verdicts = if explicit {
            group.iter().map(|(id, _)| Verdict { id: *id, keep: false, reasons: Vec::new() }).collect()
        } else {
            cairn_repo::apply_retention(&policy, group, &tz)?
        };
        if !explicit {
            check_min_keep(&key.to_string(), &verdicts, args.min_keep)?;
        }
        // Verdicts are of this group's snapshots, one each.
        let by_id: std::collections::HashMap<SnapshotId, &Snapshot> = group.iter().map(|(id, s)| (*id, s)).collect();
        let with_snapshots = verdicts
            .into_iter()
            .map(|v| {
                let s = by_id[&v.id].clone();
                (v, s)
            })
            .collect();
        judged.push((key.to_string(), with_snapshots));
    }

    let tz_fmt = |s: &Snapshot| s.time.to_zoned(tz.clone()).strftime("%Y-%m-%d %H:%M:%S").to_string();
    let mut removed = 0;
    let mut json_groups = Vec::new();
    for (label, verdicts) in &judged {
        if global.json {
            let list = |keep: bool| -> Vec<serde_json::Value> {
                verdicts
                    .iter()
                    .filter(|(v, _)| v.keep == keep)
                    .map(|(v, s)| serde_json::json!({"id": v.id, "time": s.time, "tags": s.tags, "reasons": v.reasons}))
                    .collect()
            };
            json_groups.push(serde_json::json!({"group": label, "keep": list(true), "remove": list(false)}));
        } else if !global.quiet {
            println!("{label}:");
            for (v, s) in verdicts {
                let action = if v.keep { "keep" } else { "remove" };
                println!(
                    "  {action:6} {} {} {:<16} {}",
                    v.id.short(),
                    tz_fmt(s),
                    s.tags.join(","),
                    v.reasons.join(", ")
                );
            }
        }
        if !args.dry_run {
            for (v, _) in verdicts.iter().filter(|(v, _)| !v.keep) {
                repo.forget_snapshot(&v.id).await?;
                removed += 1;
            }
        }
    }
    if !args.dry_run {
        for id in &damaged {
            repo.forget_snapshot(id).await?;
            removed += 1;
        }
    }
    if !global.json && !global.quiet {
        if args.dry_run {
            println!("dry run: nothing was removed");
        } else if args.prune {
            println!("removed {removed} snapshot(s); pruning");
        } else {
            println!("removed {removed} snapshot(s); the data they alone referenced stays until `cairn prune`");
        }
    }
    let pruned = if args.prune {
        Some(crate::commands::prune::prune_repository(global, &repo, &args.prune_tuning, args.dry_run).await?)
    } else {
        None
    };
    if global.json {
        let mut doc = serde_json::json!({"dry_run": args.dry_run, "groups": json_groups, "removed": removed});
        if let Some(report) = pruned {
            doc["prune"] = serde_json::to_value(report)?;
        }
        context::print_json(&doc)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_keep_table() {
        let verdicts = |keep: &[bool]| -> Vec<Verdict> {
            keep.iter()
                .enumerate()
                .map(|(i, &keep)| Verdict { id: SnapshotId(cairn_repo::Id([i as u8; 32])), keep, reasons: Vec::new() })
                .collect()
        };
        // (kept flags, --min-keep, accepted)
        let cases: &[(&[bool], usize, bool)] = &[
            (&[false, false], 0, true),
            (&[], 0, true),
            (&[], 1, true),
            (&[true], 3, true),
            (&[false], 3, false),
            (&[true, false, false], 1, true),
            (&[true, false, true], 2, true),
            (&[true, false, false], 2, false),
            (&[true, true], 3, true),
            (&[true, false], 3, false),
        ];
        for &(keep, min_keep, accepted) in cases {
            let result = check_min_keep("host h", &verdicts(keep), min_keep);
            assert_eq!(result.is_ok(), accepted, "{keep:?} with --min-keep {min_keep}");
            if let Err(e) = result {
                assert!(e.to_string().starts_with("host h: the policy would keep"), "{e}");
            }
        }
    }
}
