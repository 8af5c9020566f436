//! `cairn forget`: removes snapshots by a retention policy or by id. Only
//! the snapshot objects go; the data they referenced stays until a prune.

use anyhow::Result;
use cairn_repo::{FileKind, GroupBy, RetentionRules, Snapshot, SnapshotId};

use crate::args::{ForgetArgs, GlobalArgs};
use crate::context;

/// The `--keep-*` options as the library's retention rules (the same rules
/// a job's `retention` table gives).
fn rules(args: &ForgetArgs) -> RetentionRules {
    RetentionRules {
        keep_last: args.keep_last,
        keep_hourly: args.keep_hourly,
        keep_daily: args.keep_daily,
        keep_weekly: args.keep_weekly,
        keep_monthly: args.keep_monthly,
        keep_yearly: args.keep_yearly,
        keep_within: args.keep_within.clone(),
        keep_within_hourly: args.keep_within_hourly.clone(),
        keep_within_daily: args.keep_within_daily.clone(),
        keep_within_weekly: args.keep_within_weekly.clone(),
        keep_within_monthly: args.keep_within_monthly.clone(),
        keep_within_yearly: args.keep_within_yearly.clone(),
        keep_tag: args.keep_tag.clone(),
        min_keep: args.min_keep,
    }
}

pub async fn run(global: &GlobalArgs, args: ForgetArgs) -> Result<()> {
    let by = match GroupBy::parse(&args.group_by) {
        Ok(by) => by,
        Err(e) => crate::exit::usage!("--group-by: {e}"),
    };
    let rules = rules(&args);
    let policy = rules.policy()?;
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
        // Point-in-time recovery snapshots are `cairn pg forget`'s: a
        // policy here would cut the WAL chain, unless asked for.
        let named = args.filter.tags.iter().flat_map(|t| t.split(',')).any(|t| {
            let t = t.trim();
            t == cairn_pgsource::pitr::WAL_TAG || t == cairn_pgsource::pitr::BASE_TAG
        });
        let mut all = repo.snapshots_matching(&args.filter.filter()).await?;
        if !args.include_pitr && !named {
            let before = all.len();
            all.retain(|(_, s)| !crate::commands::pg_wal::is_pitr(s));
            if all.len() < before && !global.json && !global.quiet {
                println!(
                    "left out {} point-in-time recovery snapshot(s) (tags pg-wal, pg-base): `cairn pg forget` keeps their chain whole (or give --include-pitr)",
                    before - all.len()
                );
            }
        }
        all
    };

    // Group, judge each group, and check --min-keep before removing anything.
    let tz = jiff::tz::TimeZone::system();
    let plan = if explicit {
        cairn_repo::plan_forget_ids(snapshots, by)
    } else {
        cairn_repo::plan_forget(snapshots, &policy, by, rules.min_keep, &tz)?
    };

    let tz_fmt = |s: &Snapshot| s.time.to_zoned(tz.clone()).strftime("%Y-%m-%d %H:%M:%S").to_string();
    let mut removed = 0;
    let mut json_groups = Vec::new();
    for group in &plan.groups {
        let (label, verdicts) = (group.key.to_string(), &group.verdicts);
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
    }
    if !args.dry_run {
        removed += plan.execute(&repo).await?;
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
