//! `cairn find`

use std::io::Write;
use std::sync::Arc;

use anyhow::{Context, Result};
use cairn_repo::PathFilter;
use cairn_repo::TreeLoader;

use crate::args::{FindArgs, GlobalArgs};
use crate::commands::ls::long_line;
use crate::context;
use crate::escape;

pub async fn run(global: &GlobalArgs, args: FindArgs) -> Result<()> {
    let repo = context::open(global).await?;
    let pattern = PathFilter::new(&[args.pattern.as_str()])?;
    let filter = args.filter.filter();
    let (index, snapshots) = tokio::try_join!(repo.load_index(), repo.find_snapshots(&args.snapshots, &filter))?;
    let loader = TreeLoader::new(&repo, Arc::new(index), tokio::runtime::Handle::current());
    let json = global.json;
    let found = tokio::task::spawn_blocking(move || -> Result<u64> {
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let mut found = 0;
        for (id, snapshot) in &snapshots {
            let root = loader.root(snapshot)?;
            loader.walk(&root, |rel, node| -> Result<bool> {
                if pattern.matches(rel) {
                    found += 1;
                    let path = String::from_utf8_lossy(rel);
                    if json {
                        let mut v = serde_json::to_value(node)?;
                        v["path"] = serde_json::json!(path);
                        v["snapshot"] = serde_json::json!(id);
                        writeln!(out, "{v}")?;
                    } else {
                        writeln!(out, "{} {}", id.short(), escape::human(&long_line(node, &path)))?;
                    }
                }
                Ok(true)
            })?;
        }
        out.flush()?;
        Ok(found)
    })
    .await
    .context("the search thread panicked")??;
    if found == 0 && !global.json && !global.quiet {
        eprintln!("no matches");
    }
    Ok(())
}
