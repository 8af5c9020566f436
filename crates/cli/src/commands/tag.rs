//! `cairn tag`: rewrites snapshots with changed tags. The new snapshot
//! records the id of the one it replaces (`original`), which is then removed.

use anyhow::Result;

use crate::args::{GlobalArgs, TagArgs};
use crate::context;

pub async fn run(global: &GlobalArgs, args: TagArgs) -> Result<()> {
    if args.add.is_empty() && args.remove.is_empty() && args.set.is_empty() {
        crate::exit::usage!("nothing to do: give --add, --remove or --set");
    }
    if !args.set.is_empty() && (!args.add.is_empty() || !args.remove.is_empty()) {
        crate::exit::usage!("--set replaces all tags; it cannot be combined with --add or --remove");
    }
    let repo = context::open(global).await?;
    let snapshots = repo.find_snapshots(&args.snapshots, &args.filter.filter()).await?;
    let split = |v: &[String]| -> Vec<String> {
        v.iter().flat_map(|t| t.split(',')).map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()).collect()
    };
    let (add, remove, set) = (split(&args.add), split(&args.remove), split(&args.set));
    let mut changed = 0;
    for (id, snapshot) in snapshots {
        let mut tags = if args.set.is_empty() { snapshot.tags.clone() } else { set.clone() };
        tags.extend(add.iter().cloned());
        tags.retain(|t| !remove.contains(t));
        let Some((new_id, snapshot)) = repo.set_tags(&id, &snapshot, tags).await? else { continue };
        changed += 1;
        if global.json {
            context::print_json_line(&serde_json::json!({"old": id, "new": new_id, "tags": snapshot.tags}))?;
        } else if !global.quiet {
            println!("snapshot {} is now {} (tags: {})", id.short(), new_id.short(), snapshot.tags.join(","));
        }
    }
    if !global.json && !global.quiet {
        println!("{changed} snapshots changed");
    }
    Ok(())
}
