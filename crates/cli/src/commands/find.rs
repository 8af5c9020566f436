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
use crate::exit;

/// Searches every selected snapshot. A snapshot whose trees cannot be read
/// (damaged, or crafted to expand without end) is named in a warning and the
/// search goes on through the others; the exit code is then 3.
pub async fn run(global: &GlobalArgs, args: FindArgs) -> Result<u8> {
    let repo = context::open(global).await?;
    let pattern = PathFilter::new(&[args.pattern.as_str()])?;
    let filter = args.filter.filter();
    let (index, snapshots) = tokio::try_join!(repo.load_index(), repo.find_snapshots(&args.snapshots, &filter))?;
    let loader = TreeLoader::new(&repo, Arc::new(index), tokio::runtime::Handle::current());
    let json = global.json;
    let (found, unsearched) = tokio::task::spawn_blocking(move || -> Result<(u64, u64)> {
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let (mut found, mut unsearched) = (0, 0);
        for (id, snapshot) in &snapshots {
            let searched = loader.root(snapshot).map_err(anyhow::Error::from).and_then(|root| {
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
                })
            });
            match searched {
                Ok(()) => {}
                // The repository's fault: this snapshot is skipped, the others searched.
                Err(e) if e.downcast_ref::<cairn_repo::Error>().is_some() => {
                    unsearched += 1;
                    out.flush()?;
                    eprintln!("warning: snapshot {} was not searched: {}", id.short(), escape::human(&e.to_string()));
                }
                Err(e) => return Err(e),
            }
        }
        out.flush()?;
        Ok((found, unsearched))
    })
    .await
    .context("the search thread panicked")??;
    if found == 0 && !global.json && !global.quiet {
        eprintln!("no matches");
    }
    Ok(if unsearched > 0 { exit::INCOMPLETE } else { 0 })
}
